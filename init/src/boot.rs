//! The boot sequence of PID 1.
//!
//! [`run`] is the whole program. Started as `/init` (the kernel's argv[0] for an initramfs)
//! it is stage 0 ([`crate::switchroot`]), which moves to a read-only tmpfs root and execs
//! `/sbin/init`: stage 1, which runs the steps of [`STAGE1`] in order and then serves events
//! forever. The sequence is data, so it is documented and tested as such:
//!
//! | step | what it does |
//! |---|---|
//! | `signals` | block the signals PID 1 handles (before any fork) |
//! | `sanitise` | close every fd above 2, clear the environment, `PATH`, umask 022, `chdir /` |
//! | `config` | load `/etc/rampart/host.toml` |
//! | `mount` | mount the base table ([`crate::mount`]) |
//! | `logging` | make fds 0-2 valid, log to `/dev/kmsg` too (best effort, never fatal) |
//! | `lsm` | every required LSM is active ([`crate::security`]) |
//! | `cmdline` | `/proc/cmdline` has what the image asked for (`/etc/rampart/cmdline`) |
//! | `modules` | load `/etc/rampart/modules` with `finit_module` ([`crate::kmod`]) |
//! | `sysctl` | apply the sysctl baseline and overrides ([`crate::sysctl`]) |
//! | `lock-modules` | `kernel.modules_disabled=1` when `kernel.lock_modules` |
//! | `lockdown` | raise the lockdown level through securityfs and read it back |
//! | `apparmor` | load `/etc/rampart/apparmor/*.bin` through securityfs, check they enforce ([`crate::apparmor`]) |
//! | `hostname` | `sethostname` |
//! | `firewall` | apply the nftables ruleset ([`crate::firewall`]), write `/run/rampart/firewall.nft` |
//! | `network` | loopback, links, addresses, routes, `/etc/hosts`, `/etc/resolv.conf` ([`crate::network`]); never fatal |
//! | `cgroups` | enable controllers, move PID 1 into a leaf ([`crate::cgroup`]) |
//! | `service-cgroups` | create one cgroup per service; with `[kubelet]`, its folders and the shared mount of `/var/lib/kubelet` ([`crate::kubelet`]) |
//! | `services` | serve the control socket ([`crate::control::server`]; never fatal), start every service, print `rampart-init: services started at <s>s` |
//! | `audit` | the compliance self-check ([`crate::audit`]), print `rampart-init: audit: N passed, M failed` |
//!
//! The config is loaded before mounting because the tmpfs sizes come from it; it is a plain
//! file on the read-only root, so reading it needs no mount. Every failure ends in
//! [`shutdown::fatal`] with the step's name: boot fails closed, no service starts, and the
//! failure action is the config's (`poweroff` until the config is loaded).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use rampart_config::{Action, ConfigError, HostConfig};

use crate::cgroup::{self, CgroupError};
use crate::event::{self, EventError};
use crate::firewall::{self, FirewallError};
use crate::kmod::{self, KmodError};
use crate::log;
use crate::mount::{self, MountError};
use crate::network;
use crate::shutdown::{self, ShutdownContext};
use crate::supervisor::{self, Supervisor, SupervisorError};
use crate::switchroot;
use crate::sysctl::{self, SysctlError};

/// The host config inside the image.
pub const CONFIG_PATH: &str = rampart_config::IMAGE_CONFIG_PATH;
/// The ordered boot module list inside the image.
pub const MODULES_PATH: &str = rampart_config::IMAGE_MODULES_PATH;
/// Where sysctls live.
pub const PROC_SYS: &str = "/proc/sys";
/// Where PID 1 writes its generated files (`firewall.nft`, `hosts`, `resolv.conf`).
pub const RUN_DIR: &str = "/run/rampart";
/// The cgroup2 mount of the base table.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The root the base table is mounted under.
pub const ROOT: &str = "/";
/// `PATH` of PID 1 itself.
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The umask of PID 1.
pub const UMASK: u32 = 0o022;
/// The argv[0] the kernel gives the initramfs's init: stage 0.
pub const STAGE0_ARGV0: &str = "/init";
/// The failure action until the config is loaded.
pub const EARLY_FAILURE_ACTION: Action = Action::Poweroff;
/// The shutdown timeout until the config is loaded.
pub const EARLY_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// One step of stage 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Block the signals PID 1 handles.
    Signals,
    /// Close stray fds, reset the environment, umask and working directory.
    Sanitise,
    /// Load the host config.
    Config,
    /// Mount the base table.
    Mount,
    /// Console fds and kmsg logging.
    Logging,
    /// Check the required LSMs.
    Lsm,
    /// Check the running kernel command line.
    Cmdline,
    /// Load the boot modules.
    Modules,
    /// Apply the sysctls.
    Sysctl,
    /// Disable module loading when configured.
    LockModules,
    /// Raise the lockdown level.
    Lockdown,
    /// Load the image's AppArmor profiles.
    AppArmor,
    /// Set the host name.
    Hostname,
    /// Apply the firewall.
    Firewall,
    /// Configure the network.
    Network,
    /// Set up the cgroup hierarchy.
    Cgroups,
    /// Create one cgroup per service.
    ServiceCgroups,
    /// Start the services.
    Services,
    /// Run the compliance self-check.
    Audit,
}

impl Step {
    /// The step's name as printed in `rampart-init: fatal: <step>: <error>`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Step::Signals => "signals",
            Step::Sanitise => "sanitise",
            Step::Config => "config",
            Step::Mount => "mount",
            Step::Logging => "logging",
            Step::Lsm => "lsm",
            Step::Cmdline => "cmdline",
            Step::Modules => "modules",
            Step::Sysctl => "sysctl",
            Step::LockModules => "lock-modules",
            Step::Lockdown => "lockdown",
            Step::AppArmor => "apparmor",
            Step::Hostname => "hostname",
            Step::Firewall => "firewall",
            Step::Network => "network",
            Step::Cgroups => "cgroups",
            Step::ServiceCgroups => "service-cgroups",
            Step::Services => "services",
            Step::Audit => "audit",
        }
    }
}

/// The stage 1 sequence, in order.
pub const STAGE1: &[Step] = &[
    Step::Signals,
    Step::Sanitise,
    Step::Config,
    Step::Mount,
    Step::Logging,
    Step::Lsm,
    Step::Cmdline,
    Step::Modules,
    Step::Sysctl,
    Step::LockModules,
    Step::Lockdown,
    Step::AppArmor,
    Step::Hostname,
    Step::Firewall,
    Step::Network,
    Step::Cgroups,
    Step::ServiceCgroups,
    Step::Services,
    Step::Audit,
];

/// Errors of the boot steps; the step itself is named by [`Step::name`].
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Blocking signals failed.
    #[error(transparent)]
    Signals(#[from] EventError),
    /// Closing inherited descriptors failed.
    #[error("close inherited descriptors: {source}")]
    CloseFds {
        /// The errno of `close_range`.
        source: Errno,
    },
    /// `chdir` failed.
    #[error("chdir {}: {source}", path.display())]
    Chdir {
        /// The directory.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// The host config is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A step that needs the config ran before it was loaded (a bug in [`STAGE1`]).
    #[error("the host config is not loaded yet")]
    NoConfig,
    /// Mounting the base table failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Loading a module failed.
    #[error(transparent)]
    Modules(#[from] KmodError),
    /// Setting a sysctl failed.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// `sethostname` failed.
    #[error("set hostname {name:?}: {source}")]
    Hostname {
        /// The host name.
        name: String,
        /// The errno.
        source: Errno,
    },
    /// The firewall could not be applied.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// A hardening check (LSMs, command line, lockdown) failed under `enforce`.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// The AppArmor profiles could not be loaded under `enforce`.
    #[error(transparent)]
    AppArmor(#[from] crate::apparmor::AppArmorError),
    /// The compliance self-check found drift under `enforce`.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The cgroup setup failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Preparing kubelet's folders or its shared mount failed.
    #[error(transparent)]
    Kubelet(#[from] crate::kubelet::KubeletError),
    /// Starting a service failed.
    #[error(transparent)]
    Services(#[from] SupervisorError),
    /// The sequence ended without a supervisor (a bug in [`STAGE1`]).
    #[error("the sequence ended before the services step")]
    NotStarted,
}

/// Whether argv[0] makes this stage 0.
#[must_use]
pub fn is_stage0(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0.is_some_and(|a| a == STAGE0_ARGV0)
}

/// The console line printed once every service was spawned, from `CLOCK_BOOTTIME`:
/// `services started at 2.345s` (without the `rampart-init: ` prefix).
#[must_use]
pub fn services_started_line(boottime: TimeSpec) -> String {
    let millis = boottime.tv_nsec() / 1_000_000;
    format!("services started at {}.{millis:03}s", boottime.tv_sec())
}

/// The shutdown context before the config is loaded: nothing mounted, power off on failure.
#[must_use]
pub fn early_context() -> ShutdownContext {
    ShutdownContext {
        mounts: Vec::new(),
        root: PathBuf::from(ROOT),
        timeout: EARLY_SHUTDOWN_TIMEOUT,
        failure_action: EARLY_FAILURE_ACTION,
    }
}

/// The whole program: stage 0 or stage 1 depending on argv[0]. Never returns.
pub fn run() -> ! {
    if nix::unistd::getpid().as_raw() != 1 {
        // Acceptable only because this process is NOT PID 1: exiting PID 1 panics the kernel,
        // and nothing below this check ever exits.
        eprintln!(
            "usage: rampart-init is the init (PID 1) of a rampart image; the kernel starts it \
             as /init from the initramfs. It takes no arguments and cannot run as pid {}.",
            nix::unistd::getpid()
        );
        std::process::exit(2);
    }
    let argv0 = std::env::args_os().next();
    if is_stage0(argv0.as_deref()) {
        // A disk image's command line names a verity root: set it up and exec stage 1 there.
        if let Err(err) = crate::disk::stage0() {
            shutdown::fatal("disk", &err, &early_context());
        }
        let err = match switchroot::stage0() {
            Ok(never) => match never {},
            Err(err) => err,
        };
        shutdown::fatal("switchroot", &err, &early_context());
    }
    stage1()
}

/// The state carried from one stage 1 step to the next.
struct Boot {
    cfg: Option<HostConfig>,
    ctx: ShutdownContext,
    sup: Option<Supervisor>,
    control: Option<crate::control::server::Server>,
}

fn stage1() -> ! {
    let mut boot = Boot {
        cfg: None,
        ctx: early_context(),
        sup: None,
        control: None,
    };
    for step in STAGE1 {
        if let Err(err) = boot.execute(*step) {
            boot.fail(*step, &err);
        }
    }
    match boot.sup {
        Some(sup) => event::serve(sup, boot.ctx, boot.control),
        None => shutdown::fatal(Step::Services.name(), &BootError::NotStarted, &boot.ctx),
    }
}

impl Boot {
    fn fail(&mut self, step: Step, err: &BootError) -> ! {
        match self.sup.as_mut() {
            Some(sup) => shutdown::fatal_after_start(step.name(), err, &self.ctx, sup),
            None => shutdown::fatal(step.name(), err, &self.ctx),
        }
    }

    fn cfg(&self) -> Result<&HostConfig, BootError> {
        self.cfg.as_ref().ok_or(BootError::NoConfig)
    }

    fn execute(&mut self, step: Step) -> Result<(), BootError> {
        match step {
            Step::Signals => event::block_signals()?,
            Step::Sanitise => sanitise()?,
            Step::Config => {
                let mut cfg = rampart_config::load(Path::new(CONFIG_PATH))?;
                network::add_dhcp_services(&mut cfg, Path::new(CONFIG_PATH), Path::new(RUN_DIR));
                let operate = rampart_config::operate::operate_services(&cfg);
                cfg.services.extend(operate);
                let cri = rampart_config::cri::cri_services(&cfg);
                cfg.services.extend(cri);
                let kubelet = rampart_config::kubelet::kubelet_services(&cfg);
                cfg.services.extend(kubelet);
                self.ctx.failure_action = cfg.boot.failure_action;
                self.ctx.timeout = cfg.boot.shutdown_timeout;
                self.cfg = Some(cfg);
            }
            Step::Mount => {
                let state = crate::disk::state_from_args(std::env::args_os());
                let cfg = self.cfg()?;
                let plan = crate::disk::with_state(
                    mount::plan(cfg),
                    state.as_deref(),
                    crate::disk::containerd_on_state(cfg),
                );
                // Recorded before mounting, so a failure half-way unmounts what was mounted.
                self.ctx.mounts = plan.clone();
                mount::apply(&plan, Path::new(ROOT))?;
            }
            Step::Logging => open_logging(),
            Step::Lsm => crate::security::lsm_step(&self.cfg()?.hardening, Path::new("/sys"))?,
            Step::Cmdline => crate::security::cmdline_step(
                &self.cfg()?.hardening,
                Path::new(rampart_config::IMAGE_CMDLINE_PATH),
                Path::new("/proc"),
            )?,
            Step::Modules => {
                let modules = kmod::read_list(Path::new(MODULES_PATH))?;
                if modules.is_empty() && !self.cfg()?.kernel.modules.is_empty() {
                    tracing::warn!("the config names modules but {MODULES_PATH} lists none");
                }
                let report = kmod::load_all(&modules)?;
                tracing::info!(
                    "modules: {} loaded, {} already present",
                    report.loaded.len(),
                    report.present.len()
                );
            }
            Step::Sysctl => {
                let plan = sysctl::plan(self.cfg()?);
                let mode = self.cfg()?.hardening.mode.sysctl;
                let report = crate::security::apply_sysctls(&plan, Path::new(PROC_SYS), mode)?;
                tracing::info!(
                    "sysctl: {} set, {} missing on this kernel",
                    report.applied.len(),
                    report.missing.len()
                );
            }
            Step::LockModules => {
                let cfg = self.cfg()?;
                if cfg.kernel.lock_modules {
                    crate::security::lock_modules_step(&cfg.hardening, Path::new(PROC_SYS))?;
                }
            }
            Step::Lockdown => {
                crate::security::lockdown_step(&self.cfg()?.hardening, Path::new("/sys"))?;
            }
            Step::AppArmor => crate::apparmor::step(
                &self.cfg()?.hardening,
                Path::new(rampart_config::hardening::IMAGE_APPARMOR_DIR),
                Path::new("/sys"),
            )?,
            Step::Hostname => {
                let name = &self.cfg()?.host.hostname;
                nix::unistd::sethostname(name).map_err(|source| BootError::Hostname {
                    name: name.clone(),
                    source,
                })?;
            }
            Step::Firewall => firewall_step(self.cfg()?)?,
            Step::Network => network_step(self.cfg()?),
            Step::Cgroups => {
                let cfg = self.cfg()?;
                let plan = cgroup::plan_with(
                    Path::new(CGROUP_ROOT),
                    std::process::id(),
                    rampart_config::kubelet::cgroup_controllers(cfg),
                    rampart_config::kubelet::cgroups(cfg),
                );
                cgroup::apply(&plan)?;
            }
            Step::ServiceCgroups => {
                for service in &self.cfg()?.services {
                    cgroup::create_service_cgroup(Path::new(CGROUP_ROOT), service.name.as_str())?;
                }
                crate::kubelet::apply(&crate::kubelet::plan(self.cfg()?), Path::new(ROOT))?;
                crate::kubelet::share(&crate::kubelet::shared_plan(self.cfg()?), Path::new(ROOT))?;
            }
            Step::Services => {
                let plans = supervisor::plan(self.cfg()?, Path::new(CGROUP_ROOT));
                // Before the services start, so they can connect at once.
                self.control = crate::control::server::boot_step(self.cfg()?);
                let sup = self.sup.insert(Supervisor::new(plans));
                sup.set_stop_timeout(self.ctx.timeout);
                sup.start_all()?;
                let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
                    .unwrap_or_else(|_| TimeSpec::new(0, 0));
                log::console(&services_started_line(now));
            }
            Step::Audit => {
                crate::audit::boot_step(self.cfg()?)?;
            }
        }
        Ok(())
    }
}

/// Applies the firewall (fatal on failure: interfaces then stay down) and writes its rendering.
fn firewall_step(cfg: &HostConfig) -> Result<(), BootError> {
    let rs = firewall::plan(cfg);
    let started = std::time::Instant::now();
    firewall::apply(&rs)?;
    let micros = started.elapsed().as_micros();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .unwrap_or_else(|_| TimeSpec::new(0, 0));
    log::console(&firewall_line(rs.rule_count(), micros, now));
    let run = Path::new(RUN_DIR);
    let written = std::fs::create_dir_all(run)
        .map_err(|source| FirewallError::Write {
            path: run.to_path_buf(),
            source,
        })
        .and_then(|()| firewall::write_rendering(&rs, run));
    if let Err(err) = written {
        tracing::warn!("{err}");
    }
    Ok(())
}

/// `firewall applied (27 rules) in 0.412 ms at 1.234s` (without the `rampart-init: ` prefix).
#[must_use]
pub fn firewall_line(rules: usize, micros: u128, boottime: TimeSpec) -> String {
    format!(
        "firewall applied ({rules} rules) in {}.{:03} ms at {}.{:03}s",
        micros / 1000,
        micros % 1000,
        boottime.tv_sec(),
        boottime.tv_nsec() / 1_000_000
    )
}

/// Brings up loopback and the configured interfaces and installs `/etc/hosts` and
/// `/etc/resolv.conf`. Never fatal: failures are printed with the interface and the operation,
/// and the host stays behind its firewall.
fn network_step(cfg: &HostConfig) {
    let run = Path::new(RUN_DIR);
    if let Err(err) = network::install_files(run, &cfg.host.hostname, &cfg.network, true) {
        log::console(&format!("network: error: {err}"));
    }
    let paths = network::Paths {
        sys_class_net: PathBuf::from(network::SYS_CLASS_NET),
        proc_sys: PathBuf::from(PROC_SYS),
    };
    let report = network::configure(
        &network::plan(&cfg.network),
        &paths,
        network::APPEAR_TIMEOUT,
    );
    for line in network::report_lines(&report) {
        log::console(&line);
    }
}

/// Closes every descriptor above 2, resets the environment to `PATH` only, sets umask 022
/// and changes to `/`.
fn sanitise() -> Result<(), BootError> {
    close_fds_above_stderr()?;
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    std::env::set_var("PATH", PATH);
    nix::sys::stat::umask(Mode::from_bits_truncate(UMASK));
    nix::unistd::chdir(ROOT).map_err(|source| BootError::Chdir {
        path: PathBuf::from(ROOT),
        source,
    })
}

fn close_fds_above_stderr() -> Result<(), BootError> {
    // SAFETY: close_range takes no pointers. It closes descriptors 3 and up, none of which is
    // owned by a Rust object at this point: this runs first thing in PID 1, before it opens
    // anything (stage 0 opens nothing that survives its execve).
    let result = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    if result == 0 {
        return Ok(());
    }
    match Errno::last() {
        // Kernels before 5.9: close them one by one.
        Errno::ENOSYS => {
            for fd in 3..65_536 {
                // SAFETY: as above; closing an unused descriptor only returns EBADF.
                unsafe { libc::close(fd) };
            }
            Ok(())
        }
        source => Err(BootError::CloseFds { source }),
    }
}

/// Makes fds 0-2 valid (on the fresh `/dev`) and adds `/dev/kmsg` to logging. Never fatal.
fn open_logging() {
    if let Err(err) = log::ensure_std_fds(Path::new(log::CONSOLE)) {
        tracing::warn!("open {}: {err}", log::CONSOLE);
    }
    if let Err(err) = log::attach_kmsg(Path::new(log::KMSG)) {
        tracing::warn!("open {}: {err}; logging to the console only", log::KMSG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn position(step: Step) -> usize {
        STAGE1.iter().position(|s| *s == step).unwrap()
    }

    #[test]
    fn every_step_runs_once() {
        let all = [
            Step::Signals,
            Step::Sanitise,
            Step::Config,
            Step::Mount,
            Step::Logging,
            Step::Lsm,
            Step::Cmdline,
            Step::Modules,
            Step::Sysctl,
            Step::LockModules,
            Step::Lockdown,
            Step::AppArmor,
            Step::Hostname,
            Step::Firewall,
            Step::Network,
            Step::Cgroups,
            Step::ServiceCgroups,
            Step::Services,
            Step::Audit,
        ];
        assert_eq!(STAGE1.len(), all.len());
        for step in all {
            assert_eq!(STAGE1.iter().filter(|s| **s == step).count(), 1, "{step:?}");
        }
        let mut names: Vec<&str> = STAGE1.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STAGE1.len());
    }

    #[test]
    fn ordering_constraints() {
        // (earlier, later, why)
        let constraints = [
            (
                Step::Signals,
                Step::Sanitise,
                "signals are blocked first of all",
            ),
            (
                Step::Config,
                Step::Mount,
                "tmpfs sizes come from the config",
            ),
            (Step::Mount, Step::Logging, "/dev/kmsg is on devtmpfs"),
            (Step::Mount, Step::Modules, "modules need /proc and /sys"),
            (Step::Modules, Step::Sysctl, "modules add sysctl keys"),
            (
                Step::Sysctl,
                Step::LockModules,
                "modules_disabled is the final kernel step",
            ),
            (Step::Modules, Step::LockModules, "lock only after loading"),
            (Step::Mount, Step::Cgroups, "cgroup2 is in the base table"),
            (
                Step::Cgroups,
                Step::ServiceCgroups,
                "services/ is created by the cgroup setup",
            ),
            (
                Step::ServiceCgroups,
                Step::Services,
                "services start in their cgroup",
            ),
            (Step::Modules, Step::Firewall, "nf_tables is a module"),
            (
                Step::Firewall,
                Step::Network,
                "no interface is up before the firewall",
            ),
            (
                Step::Mount,
                Step::Network,
                "hosts and resolv.conf go to /run",
            ),
            (
                Step::Network,
                Step::Services,
                "services start with a network",
            ),
            (Step::Mount, Step::Lsm, "securityfs is in the base table"),
            (
                Step::Lsm,
                Step::Services,
                "no service without the required LSMs",
            ),
            (
                Step::LockModules,
                Step::Lockdown,
                "lockdown after the last kernel step",
            ),
            (Step::Lockdown, Step::Services, "no service before lockdown"),
            (
                Step::Lockdown,
                Step::AppArmor,
                "profiles load after the lockdown level is set",
            ),
            (
                Step::AppArmor,
                Step::Services,
                "services start under their AppArmor profiles",
            ),
            (
                Step::Lockdown,
                Step::Network,
                "a failed check stops before any interface is up",
            ),
            (
                Step::Services,
                Step::Audit,
                "the audit checks running services",
            ),
        ];
        for (earlier, later, why) in constraints {
            assert!(position(earlier) < position(later), "{why}");
        }
        assert_eq!(STAGE1.first(), Some(&Step::Signals));
        assert_eq!(STAGE1.last(), Some(&Step::Audit));
    }

    #[test]
    fn stage0_is_recognised_by_argv0() {
        let cases = [
            (Some("/init"), true),
            (Some("/sbin/init"), false),
            (Some("init"), false),
            (None, false),
        ];
        for (argv0, want) in cases {
            assert_eq!(is_stage0(argv0.map(OsStr::new)), want, "{argv0:?}");
        }
    }

    #[test]
    fn services_started_line_has_three_decimals() {
        let cases = [
            (TimeSpec::new(2, 345_678_901), "services started at 2.345s"),
            (TimeSpec::new(0, 5_000_000), "services started at 0.005s"),
            (TimeSpec::new(12, 0), "services started at 12.000s"),
        ];
        for (ts, want) in cases {
            assert_eq!(services_started_line(ts), want);
        }
        assert_eq!(
            log::console_record(&services_started_line(TimeSpec::new(3, 100_000_000))),
            "rampart-init: services started at 3.100s\n"
        );
    }

    #[test]
    fn firewall_line_shows_rules_duration_and_time() {
        assert_eq!(
            firewall_line(27, 412, TimeSpec::new(1, 234_000_000)),
            "firewall applied (27 rules) in 0.412 ms at 1.234s"
        );
        assert_eq!(
            firewall_line(1000, 28_400, TimeSpec::new(0, 5_000_000)),
            "firewall applied (1000 rules) in 28.400 ms at 0.005s"
        );
    }

    #[test]
    fn early_failures_power_off() {
        let ctx = early_context();
        assert_eq!(ctx.failure_action, Action::Poweroff);
        assert!(ctx.mounts.is_empty());
        assert_eq!(ctx.root, PathBuf::from("/"));
    }

    #[test]
    fn step_errors_keep_the_inner_message() {
        let err = BootError::from(SysctlError::Write {
            key: "kernel.kptr_restrict".into(),
            value: "2".into(),
            path: PathBuf::from("/proc/sys/kernel/kptr_restrict"),
            source: Errno::EPERM,
        });
        assert_eq!(
            err.to_string(),
            "set kernel.kptr_restrict=2: EPERM: Operation not permitted"
        );
    }
}
