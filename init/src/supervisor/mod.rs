//! Services: plan, spawn and track them.
//!
//! [`plan`] turns every `[[service]]` table of the host config into a [`ServicePlan`], plain data
//! with the argv and environment already converted to C strings, so spawning needs no
//! allocation after `fork`. The [`Supervisor`] spawns the plans (see `spawn.rs`), records each
//! service's state and decides, as pure logic in [`Supervisor::on_exit`] and [`exit_decision`],
//! what PID 1 does when a child exits.
//!
//! Only `restart = "never"` is acted on for now: the other policies are recorded and a service
//! that exits stays down. A later issue adds restarts with backoff as a new [`Decision`] variant.

mod spawn;

use std::ffi::CString;
use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use rampart_config::{Action, HostConfig, Restart, Service};

use crate::cgroup;

/// `PATH` given to a service whose `env` does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every service gets as its standard input.
pub const STDIN_PATH: &str = "/dev/null";

/// Everything needed to start one service, prepared before any fork.
#[derive(Debug, Clone)]
pub struct ServicePlan {
    /// The service's name from the config.
    pub name: String,
    /// `exec` from the config; `argv[0]` is the absolute path that is executed. Empty when the
    /// config's `exec` or `env` held a NUL byte: [`Supervisor::start_all`] then refuses to start.
    pub argv: Vec<CString>,
    /// `KEY=value` pairs: the service's `env` plus `PATH` when it sets none.
    pub env: Vec<CString>,
    /// The service's own cgroup directory (from [`cgroup::service_cgroup`]).
    pub cgroup: PathBuf,
    /// The restart policy (recorded; only `never` is acted on for now).
    pub restart: Restart,
    /// What PID 1 does when this service exits, whatever its status.
    pub on_exit: Option<Action>,
}

/// Turns the config's services into plans, in config order.
pub fn plan(cfg: &HostConfig, cgroup_root: &Path) -> Vec<ServicePlan> {
    cfg.services
        .iter()
        .map(|service| plan_service(service, cgroup_root))
        .collect()
}

fn plan_service(service: &Service, cgroup_root: &Path) -> ServicePlan {
    let name = service.name.as_str().to_owned();
    let argv = to_cstrings(service.exec.iter().cloned());
    let mut vars: Vec<String> = service
        .env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if !service.env.contains_key("PATH") {
        vars.push(format!("PATH={DEFAULT_PATH}"));
    }
    let env = to_cstrings(vars);
    let (argv, env) = match (argv, env) {
        (Some(argv), Some(env)) => (argv, env),
        _ => {
            tracing::error!(service = %name, "exec or env contains a NUL byte");
            (Vec::new(), Vec::new())
        }
    };
    ServicePlan {
        cgroup: cgroup::service_cgroup(cgroup_root, &name),
        name,
        argv,
        env,
        restart: service.restart,
        on_exit: service.on_exit,
    }
}

/// Converts every string, or gives `None` if one holds a NUL byte.
fn to_cstrings(strings: impl IntoIterator<Item = String>) -> Option<Vec<CString>> {
    strings.into_iter().map(|s| CString::new(s).ok()).collect()
}

/// Errors while starting services.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The plan has no argv (empty `exec`, or a NUL byte in `exec` or `env`).
    #[error("service {service}: exec is empty or exec/env contains a NUL byte")]
    InvalidCommand {
        /// The service.
        service: String,
    },
    /// The cgroup path cannot be passed to the kernel.
    #[error("service {service}: cgroup path {path} contains a NUL byte")]
    CgroupPath {
        /// The service.
        service: String,
        /// The offending path.
        path: PathBuf,
    },
    /// Opening the services' standard input failed.
    #[error("open {path}: {source}")]
    OpenStdin {
        /// The file opened.
        path: PathBuf,
        /// The kernel's error.
        source: Errno,
    },
    /// `fork` failed.
    #[error("service {service}: fork: {source}")]
    Fork {
        /// The service.
        service: String,
        /// The kernel's error.
        source: Errno,
    },
}

/// How a child ended, decoded from a raw `waitpid` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Code(i32),
    /// A signal (number) killed it.
    Signal(i32),
    /// Any other raw status (not expected without `WUNTRACED`/`WCONTINUED`).
    Other(i32),
}

impl ExitStatus {
    /// Decodes a raw wait status.
    pub fn from_raw(status: i32) -> Self {
        if libc::WIFEXITED(status) {
            Self::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Self::Signal(libc::WTERMSIG(status))
        } else {
            Self::Other(status)
        }
    }

    /// True for `exit(0)`.
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(number) => match Signal::try_from(number) {
                Ok(signal) => write!(f, "killed by {}", signal.as_str()),
                Err(_) => write!(f, "killed by signal {number}"),
            },
            Self::Other(raw) => write!(f, "wait status {raw:#x}"),
        }
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Not started yet.
    Pending,
    /// Running as this pid.
    Running {
        /// Its pid.
        pid: Pid,
    },
    /// It exited and stays down.
    Exited {
        /// How it ended.
        status: ExitStatus,
    },
}

/// What PID 1 must do after a child exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: keep serving.
    None,
    /// Shut the host down with this action.
    Shutdown(Action),
    // A later issue: `Restart { service, after }` for `on-failure` and `always`.
}

impl Decision {
    /// Keeps the first shutdown of two decisions (`self` first).
    pub fn or(self, later: Decision) -> Decision {
        match self {
            Decision::Shutdown(_) => self,
            Decision::None => later,
        }
    }
}

/// The pure exit policy: what to do when a service with this policy exited.
///
/// While the host is `stopping`, nothing (no restart, no second shutdown). Otherwise `on_exit`
/// wins whatever the status; without it the service stays down: `never` is final and the other
/// restart policies are not implemented yet.
pub fn exit_decision(
    restart: Restart,
    on_exit: Option<Action>,
    _status: ExitStatus,
    stopping: bool,
) -> Decision {
    if stopping {
        return Decision::None;
    }
    match (on_exit, restart) {
        (Some(action), _) => Decision::Shutdown(action),
        (None, Restart::Never) => Decision::None,
        // Restarting (with backoff) comes with the full supervisor; until then the service
        // stays down, and `on_exit` above keeps its meaning.
        (None, Restart::OnFailure | Restart::Always) => Decision::None,
    }
}

/// One tracked service.
#[derive(Debug)]
struct Tracked {
    plan: ServicePlan,
    state: ServiceState,
    started: Option<Instant>,
}

/// The services PID 1 runs and the state of each.
#[derive(Debug)]
pub struct Supervisor {
    services: Vec<Tracked>,
    orphans_reaped: u64,
    stopping: bool,
}

impl Supervisor {
    /// Tracks these plans, all pending.
    pub fn new(plans: Vec<ServicePlan>) -> Self {
        Self {
            services: plans
                .into_iter()
                .map(|plan| Tracked {
                    plan,
                    state: ServiceState::Pending,
                    started: None,
                })
                .collect(),
            orphans_reaped: 0,
            stopping: false,
        }
    }

    /// Spawns every pending service, in order, each into its cgroup (which must exist).
    ///
    /// Stops at the first failure; services already started keep running (the caller shuts the
    /// host down, which terminates them).
    pub fn start_all(&mut self) -> Result<(), SupervisorError> {
        if self.stopping {
            return Ok(());
        }
        let stdin = open(
            STDIN_PATH,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|source| SupervisorError::OpenStdin {
            path: PathBuf::from(STDIN_PATH),
            source,
        })?;
        for tracked in &mut self.services {
            if tracked.state != ServiceState::Pending {
                continue;
            }
            let pid = spawn::spawn(&tracked.plan, stdin.as_fd())?;
            tracked.state = ServiceState::Running { pid };
            tracked.started = Some(Instant::now());
            tracing::info!(service = %tracked.plan.name, pid = pid.as_raw(), "service started");
        }
        Ok(())
    }

    /// Records that `pid` was reaped with `status` and says what PID 1 must do.
    ///
    /// A pid that is no running service is an orphan re-parented to PID 1: it is only counted.
    pub fn on_exit(&mut self, pid: Pid, status: ExitStatus) -> Decision {
        let stopping = self.stopping;
        let Some(tracked) = self
            .services
            .iter_mut()
            .find(|t| t.state == ServiceState::Running { pid })
        else {
            self.orphans_reaped = self.orphans_reaped.saturating_add(1);
            tracing::trace!(pid = pid.as_raw(), %status, "orphan reaped");
            return Decision::None;
        };
        tracked.state = ServiceState::Exited { status };
        let ran_for = tracked.started.map(|t| t.elapsed()).unwrap_or_default();
        let decision = exit_decision(tracked.plan.restart, tracked.plan.on_exit, status, stopping);
        tracing::info!(
            service = %tracked.plan.name,
            pid = pid.as_raw(),
            %status,
            ran_for = ?ran_for,
            ?decision,
            "service exited"
        );
        if !stopping && !matches!(tracked.plan.restart, Restart::Never) {
            tracing::warn!(
                service = %tracked.plan.name,
                "restart policies other than never are not implemented yet; the service stays down"
            );
        }
        decision
    }

    /// Marks the host as shutting down: exits no longer lead to any decision.
    pub fn begin_shutdown(&mut self) {
        self.stopping = true;
    }

    /// True once [`Supervisor::begin_shutdown`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// How many reaped children were not services.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans_reaped
    }

    /// How many services are running.
    pub fn running(&self) -> usize {
        self.services
            .iter()
            .filter(|t| matches!(t.state, ServiceState::Running { .. }))
            .count()
    }

    /// The state of the service named `name`.
    pub fn state(&self, name: &str) -> Option<ServiceState> {
        self.services
            .iter()
            .find(|t| t.plan.name == name)
            .map(|t| t.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn service(name: &str, exec: &[&str], env: &[(&str, &str)]) -> Service {
        Service {
            name: rampart_config::ServiceName::try_from(name).unwrap(),
            exec: exec.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            restart: Restart::Never,
            on_exit: None,
        }
    }

    fn cstrings(strings: &[&str]) -> Vec<CString> {
        strings.iter().map(|s| CString::new(*s).unwrap()).collect()
    }

    fn sample_plan(name: &str, restart: Restart, on_exit: Option<Action>) -> ServicePlan {
        ServicePlan {
            name: name.to_string(),
            argv: cstrings(&["/bin/true"]),
            env: cstrings(&["PATH=/bin"]),
            cgroup: PathBuf::from("/sys/fs/cgroup/services").join(name),
            restart,
            on_exit,
        }
    }

    #[test]
    fn plan_converts_argv_env_and_cgroup() {
        let root = Path::new("/tmp/cg");
        let default_path = format!("PATH={DEFAULT_PATH}");
        let cases: Vec<(Service, Vec<&str>, Vec<&str>)> = vec![
            (
                service("a", &["/bin/true"], &[]),
                vec!["/bin/true"],
                vec![default_path.as_str()],
            ),
            (
                service(
                    "b",
                    &["/bin/sh", "-c", "echo hi"],
                    &[("FOO", "bar"), ("A", "1")],
                ),
                vec!["/bin/sh", "-c", "echo hi"],
                vec!["A=1", "FOO=bar", default_path.as_str()],
            ),
            (
                service("c", &["/bin/x"], &[("PATH", "/opt/bin"), ("EMPTY", "")]),
                vec!["/bin/x"],
                vec!["EMPTY=", "PATH=/opt/bin"],
            ),
        ];
        for (svc, argv, env) in cases {
            let name = svc.name.as_str().to_owned();
            let p = plan_service(&svc, root);
            assert_eq!(p.name, name);
            assert_eq!(p.argv, cstrings(&argv), "{name}");
            assert_eq!(p.env, cstrings(&env), "{name}");
            assert_eq!(p.cgroup, cgroup::service_cgroup(root, &name), "{name}");
        }
    }

    #[test]
    fn plan_keeps_restart_and_on_exit() {
        let cases = [
            (Restart::Never, None),
            (Restart::OnFailure, Some(Action::Reboot)),
            (Restart::Always, Some(Action::Halt)),
            (Restart::Never, Some(Action::Poweroff)),
        ];
        for (restart, on_exit) in cases {
            let mut svc = service("s", &["/bin/true"], &[]);
            svc.restart = restart;
            svc.on_exit = on_exit;
            let p = plan_service(&svc, Path::new("/cg"));
            assert_eq!(p.restart, restart);
            assert_eq!(p.on_exit, on_exit);
        }
    }

    #[test]
    fn plan_keeps_config_order() {
        let mut cfg_services = Vec::new();
        for name in ["zeta", "alpha", "mid"] {
            cfg_services.push(service(name, &["/bin/true"], &[]));
        }
        let names: Vec<String> = cfg_services
            .iter()
            .map(|s| plan_service(s, Path::new("/cg")).name)
            .collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn plan_with_nul_byte_is_refused_at_start() {
        let cases = [
            service("n1", &["/bin/a\0b"], &[]),
            service("n2", &["/bin/true"], &[("K", "v\0")]),
        ];
        for svc in cases {
            let p = plan_service(&svc, Path::new("/cg"));
            assert!(p.argv.is_empty());
            let mut sup = Supervisor::new(vec![p]);
            let err = sup.start_all().unwrap_err();
            assert!(
                matches!(err, SupervisorError::InvalidCommand { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn exit_status_decoding() {
        let cases = [
            (0x0000, ExitStatus::Code(0), "exit code 0"),
            (0x0100, ExitStatus::Code(1), "exit code 1"),
            (0x7f00, ExitStatus::Code(127), "exit code 127"),
            (0x0009, ExitStatus::Signal(9), "killed by SIGKILL"),
            (0x008f, ExitStatus::Signal(15), "killed by SIGTERM"),
            (0x0022, ExitStatus::Signal(34), "killed by signal 34"),
            (0x137f, ExitStatus::Other(0x137f), "wait status 0x137f"),
        ];
        for (raw, status, text) in cases {
            assert_eq!(ExitStatus::from_raw(raw), status, "{raw:#x}");
            assert_eq!(status.to_string(), text);
        }
        assert!(ExitStatus::Code(0).success());
        assert!(!ExitStatus::Code(1).success());
        assert!(!ExitStatus::Signal(9).success());
    }

    #[test]
    fn exit_decision_table() {
        use Action::*;
        let ok = ExitStatus::Code(0);
        let bad = ExitStatus::Signal(9);
        let cases = [
            (Restart::Never, None, ok, false, Decision::None),
            (Restart::Never, None, bad, false, Decision::None),
            (
                Restart::Never,
                Some(Poweroff),
                ok,
                false,
                Decision::Shutdown(Poweroff),
            ),
            (
                Restart::Never,
                Some(Reboot),
                bad,
                false,
                Decision::Shutdown(Reboot),
            ),
            (
                Restart::Never,
                Some(Halt),
                ok,
                false,
                Decision::Shutdown(Halt),
            ),
            (Restart::OnFailure, None, bad, false, Decision::None),
            (Restart::Always, None, ok, false, Decision::None),
            (
                Restart::Always,
                Some(Reboot),
                ok,
                false,
                Decision::Shutdown(Reboot),
            ),
            (Restart::Never, Some(Poweroff), ok, true, Decision::None),
            (Restart::Always, None, bad, true, Decision::None),
        ];
        for (restart, on_exit, status, stopping, want) in cases {
            assert_eq!(
                exit_decision(restart, on_exit, status, stopping),
                want,
                "{restart:?} {on_exit:?} {status} stopping={stopping}"
            );
        }
    }

    #[test]
    fn decision_or_keeps_the_first_shutdown() {
        use Decision::Shutdown;
        let cases = [
            (Decision::None, Decision::None, Decision::None),
            (
                Decision::None,
                Shutdown(Action::Halt),
                Shutdown(Action::Halt),
            ),
            (
                Shutdown(Action::Reboot),
                Shutdown(Action::Halt),
                Shutdown(Action::Reboot),
            ),
            (
                Shutdown(Action::Reboot),
                Decision::None,
                Shutdown(Action::Reboot),
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.or(b), want);
        }
    }

    fn running(sup: &mut Supervisor, name: &str, pid: i32) {
        let tracked = sup
            .services
            .iter_mut()
            .find(|t| t.plan.name == name)
            .unwrap();
        tracked.state = ServiceState::Running {
            pid: Pid::from_raw(pid),
        };
        tracked.started = Some(Instant::now());
    }

    #[test]
    fn on_exit_state_machine() {
        let mut sup = Supervisor::new(vec![
            sample_plan("oneshot", Restart::Never, None),
            sample_plan("main", Restart::Never, Some(Action::Poweroff)),
            sample_plan("later", Restart::Never, None),
        ]);
        assert_eq!(sup.state("oneshot"), Some(ServiceState::Pending));
        assert_eq!(sup.state("missing"), None);
        running(&mut sup, "oneshot", 100);
        running(&mut sup, "main", 101);
        assert_eq!(sup.running(), 2);

        // An orphan: counted, nothing else.
        assert_eq!(
            sup.on_exit(Pid::from_raw(555), ExitStatus::Code(0)),
            Decision::None
        );
        assert_eq!(sup.orphans_reaped(), 1);
        assert_eq!(sup.running(), 2);

        // The oneshot exits and stays down.
        assert_eq!(
            sup.on_exit(Pid::from_raw(100), ExitStatus::Code(3)),
            Decision::None
        );
        assert_eq!(
            sup.state("oneshot"),
            Some(ServiceState::Exited {
                status: ExitStatus::Code(3)
            })
        );
        // The same pid again (reused by an orphan) is no longer the service.
        assert_eq!(
            sup.on_exit(Pid::from_raw(100), ExitStatus::Code(0)),
            Decision::None
        );
        assert_eq!(sup.orphans_reaped(), 2);

        // The on_exit service decides the shutdown, whatever its status.
        assert_eq!(
            sup.on_exit(Pid::from_raw(101), ExitStatus::Signal(9)),
            Decision::Shutdown(Action::Poweroff)
        );
        assert_eq!(sup.running(), 0);
        assert_eq!(sup.state("later"), Some(ServiceState::Pending));
    }

    #[test]
    fn no_decision_while_stopping() {
        let mut sup = Supervisor::new(vec![sample_plan(
            "main",
            Restart::Never,
            Some(Action::Reboot),
        )]);
        running(&mut sup, "main", 42);
        sup.begin_shutdown();
        assert!(sup.stopping());
        assert_eq!(
            sup.on_exit(Pid::from_raw(42), ExitStatus::Signal(15)),
            Decision::None
        );
        assert_eq!(
            sup.state("main"),
            Some(ServiceState::Exited {
                status: ExitStatus::Signal(15)
            })
        );
        // Nothing is started once stopping.
        let mut sup = Supervisor::new(vec![sample_plan("x", Restart::Never, None)]);
        sup.begin_shutdown();
        sup.start_all().unwrap();
        assert_eq!(sup.state("x"), Some(ServiceState::Pending));
    }
}
