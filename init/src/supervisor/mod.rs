//! Services: plan, start in `after` order, watch readiness, capture output, restart with
//! backoff.
//!
//! [`plan`] turns every `[[service]]` of the host config into a [`ServicePlan`], plain data:
//! argv and environment as C strings, the least-privilege [`launch::Launch`] plan, the cgroup
//! limit writes, the backoff settings and the readiness condition, in a start order that
//! respects `after` ([`start_order`]). The [`Supervisor`] starts them (see `spawn.rs`), tracks
//! each service's [`ServiceState`] and [`ReadyState`], and decides, as pure logic in
//! [`exit_decision`], [`backoff::Backoff`] and [`dependency_verdict`], what happens when a child
//! exits, a restart is due, or a dependency fails.
//!
//! The supervisor has its own epoll instance (watched by PID 1's event loop through
//! [`Supervisor::poll_fd`]) holding ONE timerfd, armed for the earliest deadline (a restart, a
//! readiness retry or timeout), an inotify fd for readiness paths, and the read end of every
//! service's output pipe.
//!
//! Every output line also goes to PID 1's log ring ([`crate::control::ring`]), and every
//! lifecycle change is recorded there as an event ([`lifecycle`]). The control socket reads a
//! [`Supervisor::snapshot`] and stops, starts and restarts services (`ops.rs`): a service
//! stopped by request gets `SIGTERM`, then `SIGKILL` when the same timer reaches its stop
//! timeout, and stays [`ServiceState::Stopped`] whatever its restart policy.

pub mod backoff;
pub mod launch;
pub mod lifecycle;
pub mod ops;
pub mod output;
pub mod ready;
pub mod seccomp;
mod spawn;

pub use ops::{OpError, ServiceSnapshot};
pub use spawn::EXEC_FAILED;

use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{pipe2, Pid};
use rampart_config::{Action, BackoffConfig, HostConfig, Readiness, Restart, Service};

use crate::cgroup::{self, CgroupOp};
use crate::event::DeadlineTimer;
use backoff::Backoff;
use lifecycle::Lifecycle;
use output::{LineSplitter, LogFile};

/// `PATH` given to a service whose `env` does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every service gets as its standard input.
pub const STDIN_PATH: &str = "/dev/null";

/// Bytes read from one output pipe per wake-up at most (fairness between chatty services).
pub const READ_BUDGET: usize = 64 * 1024;

/// How long a service stopped by request gets between `SIGTERM` and `SIGKILL` until
/// [`Supervisor::set_stop_timeout`] says otherwise (boot sets the config's shutdown timeout).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The restart policy.
    pub restart: Restart,
    /// What PID 1 does when this service exits, whatever its status.
    pub on_exit: Option<Action>,
    /// The least-privilege launch plan applied between fork and exec.
    pub launch: launch::Launch,
    /// The cgroup limit writes, done before every start.
    pub cgroup_limits: Vec<CgroupOp>,
    /// Restart delays and crash-loop detection.
    pub backoff: BackoffConfig,
    /// Services that must be ready first.
    pub after: Vec<String>,
    /// The readiness condition; `None` = ready once started.
    pub ready: Option<Readiness>,
    /// How long readiness may take.
    pub ready_timeout: Duration,
}

/// Turns the config's services into plans, in start order (see [`start_order`]).
pub fn plan(cfg: &HostConfig, cgroup_root: &Path) -> Vec<ServicePlan> {
    let tmp = cfg.mounts.tmp_size.bytes();
    start_order(&cfg.services)
        .into_iter()
        .filter_map(|i| cfg.services.get(i))
        .map(|service| plan_service(service, cgroup_root, tmp))
        .collect()
}

/// The order services start in: config order, except that a service comes after every
/// service it names in `after` (a stable topological sort; the config has no cycles, but
/// should one slip through, its members are appended in config order).
pub fn start_order(services: &[Service]) -> Vec<usize> {
    let mut placed: Vec<usize> = Vec::with_capacity(services.len());
    let mut done = vec![false; services.len()];
    loop {
        let next = services.iter().enumerate().position(|(i, s)| {
            !done.get(i).copied().unwrap_or(true)
                && s.after.iter().all(|dep| {
                    services
                        .iter()
                        .position(|o| o.name == *dep)
                        .is_none_or(|j| done.get(j).copied().unwrap_or(true))
                })
        });
        match next {
            Some(i) => {
                if let Some(d) = done.get_mut(i) {
                    *d = true;
                }
                placed.push(i);
            }
            None => break,
        }
    }
    placed.extend((0..services.len()).filter(|i| !done.get(*i).copied().unwrap_or(true)));
    placed
}

fn plan_service(service: &Service, cgroup_root: &Path, tmp_size: u64) -> ServicePlan {
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
    let dir = cgroup::service_cgroup(cgroup_root, &name);
    ServicePlan {
        cgroup_limits: launch::cgroup_limits(service, &dir),
        cgroup: dir,
        name,
        argv,
        env,
        restart: service.restart,
        on_exit: service.on_exit,
        launch: launch::plan(service, tmp_size),
        backoff: service.backoff,
        after: service
            .after
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect(),
        ready: service.ready.clone(),
        ready_timeout: service.ready_timeout,
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
    /// A path or option of the plan cannot be passed to the kernel.
    #[error("service {service}: {what} contains a NUL byte")]
    NulByte {
        /// The service.
        service: String,
        /// Which value.
        what: &'static str,
    },
    /// A kept capability is unknown to the capability library.
    #[error("service {service}: unknown capability number {number}")]
    UnknownCapability {
        /// The service.
        service: String,
        /// Its number.
        number: u8,
    },
    /// The Landlock ruleset could not be built.
    #[error("service {service}: landlock ruleset: {reason}")]
    Landlock {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// The seccomp filter could not be compiled.
    #[error("service {service}: seccomp filter: {reason}")]
    Seccomp {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// Writing a cgroup limit failed.
    #[error("service {service}: cgroup limits: {source}")]
    Limits {
        /// The service.
        service: String,
        /// The cgroup error.
        source: cgroup::CgroupError,
    },
    /// The output pipe could not be created.
    #[error("service {service}: output pipe: {source}")]
    Pipe {
        /// The service.
        service: String,
        /// The kernel's error.
        source: Errno,
    },
    /// Opening the services' standard input failed.
    #[error("open {path}: {source}")]
    OpenStdin {
        /// The file opened.
        path: PathBuf,
        /// The kernel's error.
        source: Errno,
    },
    /// Creating the supervisor's epoll instance, timerfd or inotify fd failed.
    #[error("supervisor {what}: {source}")]
    Setup {
        /// Which fd.
        what: &'static str,
        /// The kernel's error.
        source: Errno,
    },
    /// `clone` failed.
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
    /// Not started yet (waiting for its `after` dependencies).
    Pending,
    /// Running as this pid.
    Running {
        /// Its pid.
        pid: Pid,
    },
    /// Exited; starts again at `at`.
    Restarting {
        /// When.
        at: Instant,
        /// It is in a crash loop (the delay is the cap).
        crash_loop: bool,
    },
    /// It exited and stays down.
    Exited {
        /// How it ended.
        status: ExitStatus,
    },
    /// Never started: a dependency failed.
    Blocked,
    /// A control request stopped it: `SIGTERM` was sent to `pid`, `SIGKILL` follows at
    /// `kill_at`.
    Stopping {
        /// Its pid.
        pid: Pid,
        /// When `SIGKILL` follows.
        kill_at: Instant,
        /// `SIGKILL` was sent.
        killed: bool,
        /// Start it again once it ended (a restart request).
        restart: bool,
    },
    /// Stopped by a control request; its restart policy does not apply until a `start` or
    /// `restart` request.
    Stopped,
}

/// Whether a service is ready (for the services `after` it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    /// Not started, or exited before it was ready.
    NotRunning,
    /// Started; its condition is checked at `next_check` and at inotify events.
    Waiting {
        /// The condition must hold before this.
        deadline: Instant,
        /// The next timed check.
        next_check: Instant,
        /// Checks so far (for the retry interval).
        attempt: u32,
    },
    /// Ready (stays so until the next start).
    Ready,
    /// The condition did not hold within `ready_timeout`.
    TimedOut,
}

/// What PID 1 must do after a child exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: keep serving.
    None,
    /// Shut the host down with this action.
    Shutdown(Action),
    /// Restart the service (after its backoff delay).
    Restart,
}

impl Decision {
    /// Keeps the first shutdown of two decisions (`self` first); otherwise `later`.
    pub fn or(self, later: Decision) -> Decision {
        match self {
            Decision::Shutdown(_) => self,
            Decision::None | Decision::Restart => later,
        }
    }
}

/// The pure exit policy: what to do when a service with this policy exited.
///
/// While the host is `stopping`, nothing. Otherwise `on_exit` wins whatever the status; then
/// `always` restarts, `on-failure` restarts unless it was `exit(0)`, `never` stays down.
pub fn exit_decision(
    restart: Restart,
    on_exit: Option<Action>,
    status: ExitStatus,
    stopping: bool,
) -> Decision {
    if stopping {
        return Decision::None;
    }
    match (on_exit, restart) {
        (Some(action), _) => Decision::Shutdown(action),
        (None, Restart::Never) => Decision::None,
        (None, Restart::OnFailure) if status.success() => Decision::None,
        (None, Restart::OnFailure | Restart::Always) => Decision::Restart,
    }
}

/// How a dependency stands, for a service waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepStatus {
    /// Ready.
    Ready,
    /// Not yet, but it may still become ready.
    Waiting,
    /// It never will (this run): why.
    Failed(&'static str),
}

/// What a pending service does given its dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every dependency is ready: start.
    Start,
    /// Keep waiting.
    Wait,
    /// Do not start: this dependency failed, for this reason.
    Block(String, &'static str),
}

/// The status of a dependency from its state.
pub fn dep_status(state: ServiceState, ready: ReadyState) -> DepStatus {
    if ready == ReadyState::Ready {
        return DepStatus::Ready;
    }
    match (state, ready) {
        (_, ReadyState::TimedOut) => {
            DepStatus::Failed("did not become ready within its ready_timeout")
        }
        (ServiceState::Exited { .. }, _) => DepStatus::Failed("exited before it was ready"),
        (ServiceState::Blocked, _) => DepStatus::Failed("was not started itself"),
        _ => DepStatus::Waiting,
    }
}

/// The pure ordering rule: start when all dependencies are ready, block on the first failed.
pub fn dependency_verdict<'a>(deps: impl IntoIterator<Item = (&'a str, DepStatus)>) -> Verdict {
    let mut all_ready = true;
    for (name, status) in deps {
        match status {
            DepStatus::Ready => {}
            DepStatus::Waiting => all_ready = false,
            DepStatus::Failed(why) => return Verdict::Block(name.to_owned(), why),
        }
    }
    if all_ready {
        Verdict::Start
    } else {
        Verdict::Wait
    }
}

/// One tracked service.
#[derive(Debug)]
struct Tracked {
    plan: ServicePlan,
    state: ServiceState,
    ready: ReadyState,
    started: Option<Instant>,
    backoff: Backoff,
    log: LogFile,
    /// Starts after the first.
    restarts: u32,
    /// How the last run ended.
    last_exit: Option<ExitStatus>,
}

/// The read end of one output pipe (a service instance's stdout and stderr).
#[derive(Debug)]
struct OutputPipe {
    key: u64,
    service: usize,
    fd: OwnedFd,
    splitter: LineSplitter,
}

const TIMER_KEY: u64 = 0;
const INOTIFY_KEY: u64 = 1;
const FIRST_PIPE_KEY: u64 = 16;

/// The supervisor's fds, created by [`Supervisor::start_all`].
#[derive(Debug)]
struct Runtime {
    epoll: Epoll,
    timer: DeadlineTimer,
    inotify: Option<Inotify>,
    watched: Vec<PathBuf>,
    pipes: Vec<OutputPipe>,
    next_key: u64,
    stdin: OwnedFd,
}

/// The services PID 1 runs and the state of each.
#[derive(Debug)]
pub struct Supervisor {
    services: Vec<Tracked>,
    orphans_reaped: u64,
    stopping: bool,
    log_dir: PathBuf,
    console: bool,
    runtime: Option<Runtime>,
    deferred: Decision,
    stop_timeout: Duration,
}

impl Supervisor {
    /// Tracks these plans, all pending; logs go to [`output::LOG_DIR`].
    pub fn new(plans: Vec<ServicePlan>) -> Self {
        Self::with_log_dir(plans, Path::new(output::LOG_DIR))
    }

    /// Tracks these plans with the per-service logs in `log_dir`.
    pub fn with_log_dir(plans: Vec<ServicePlan>, log_dir: &Path) -> Self {
        Self {
            services: plans
                .into_iter()
                .map(|plan| Tracked {
                    log: LogFile::new(log_dir, &plan.name, output::LOG_MAX),
                    backoff: Backoff::new(plan.backoff),
                    plan,
                    state: ServiceState::Pending,
                    ready: ReadyState::NotRunning,
                    started: None,
                    restarts: 0,
                    last_exit: None,
                })
                .collect(),
            orphans_reaped: 0,
            stopping: false,
            log_dir: log_dir.to_path_buf(),
            console: true,
            runtime: None,
            deferred: Decision::None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }

    /// How long a service stopped by a control request gets between `SIGTERM` and `SIGKILL`.
    pub fn set_stop_timeout(&mut self, timeout: Duration) {
        self.stop_timeout = timeout;
    }

    /// Whether service lines are also written to the console (stderr); on by default.
    pub fn set_console(&mut self, on: bool) {
        self.console = on;
    }

    /// Creates the supervisor's fds and starts every service whose dependencies allow it
    /// (the others start as their dependencies become ready).
    ///
    /// A plan without a command is refused here, before anything starts. A service that fails
    /// to start is handled like one that exited with status 127 (its restart policy applies).
    pub fn start_all(&mut self) -> Result<(), SupervisorError> {
        if self.stopping {
            return Ok(());
        }
        if let Some(bad) = self.services.iter().find(|t| t.plan.argv.is_empty()) {
            return Err(SupervisorError::InvalidCommand {
                service: bad.plan.name.clone(),
            });
        }
        if self.runtime.is_none() {
            self.runtime = Some(self.create_runtime()?);
        }
        if let Err(error) = std::fs::create_dir_all(&self.log_dir) {
            tracing::warn!(dir = %self.log_dir.display(), %error, "service log directory; logging to the console only");
        }
        let decision = self.settle(Instant::now());
        self.deferred = self.deferred.or(decision);
        Ok(())
    }

    fn create_runtime(&self) -> Result<Runtime, SupervisorError> {
        let setup = |what| move |source| SupervisorError::Setup { what, source };
        let stdin = open(
            STDIN_PATH,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|source| SupervisorError::OpenStdin {
            path: PathBuf::from(STDIN_PATH),
            source,
        })?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(setup("epoll"))?;
        let timer = DeadlineTimer::new(&epoll, TIMER_KEY)
            .map_err(|(what, source)| SupervisorError::Setup { what, source })?;
        let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(inotify) => match epoll.add(
                inotify.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, INOTIFY_KEY),
            ) {
                Ok(()) => Some(inotify),
                Err(error) => {
                    tracing::warn!(%error, "inotify not watched; readiness uses timed checks only");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "no inotify; readiness uses timed checks only");
                None
            }
        };
        Ok(Runtime {
            epoll,
            timer,
            inotify,
            watched: Vec::new(),
            pipes: Vec::new(),
            next_key: FIRST_PIPE_KEY,
            stdin,
        })
    }

    /// A decision taken while starting (a service with `on_exit` failed to start), once.
    pub fn take_deferred(&mut self) -> Decision {
        std::mem::replace(&mut self.deferred, Decision::None)
    }

    /// The supervisor's epoll fd, for PID 1's event loop (after [`Supervisor::start_all`]).
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.runtime.as_ref().map(|r| r.epoll.0.as_fd())
    }

    /// Handles whatever is ready on [`Supervisor::poll_fd`]: output, inotify, the timer.
    pub fn on_poll(&mut self) -> Decision {
        let mut events = [EpollEvent::empty(); 32];
        let n = match self.runtime.as_ref() {
            Some(rt) => match rt.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(%error, "supervisor epoll wait");
                    0
                }
            },
            None => 0,
        };
        let now = Instant::now();
        for event in events.iter().take(n) {
            match event.data() {
                TIMER_KEY => {
                    if let Some(rt) = self.runtime.as_mut() {
                        // Reading clears the expiration; it may be stale (EAGAIN): fine.
                        rt.timer.acknowledge();
                    }
                }
                INOTIFY_KEY => {
                    if let Some(inotify) = self.runtime.as_ref().and_then(|r| r.inotify.as_ref()) {
                        while matches!(inotify.read_events(), Ok(ev) if !ev.is_empty()) {}
                    }
                    for t in &mut self.services {
                        if let ReadyState::Waiting { next_check, .. } = &mut t.ready {
                            *next_check = now;
                        }
                    }
                }
                key => self.read_pipe(key),
            }
        }
        self.settle(now)
    }

    /// Drains every output pipe that has data (used while shutting down).
    pub fn drain_output(&mut self) {
        let keys: Vec<u64> = self
            .runtime
            .as_ref()
            .map(|r| r.pipes.iter().map(|p| p.key).collect())
            .unwrap_or_default();
        for key in keys {
            self.read_pipe(key);
        }
    }

    fn read_pipe(&mut self, key: u64) {
        let console = self.console;
        let Some(rt) = self.runtime.as_mut() else {
            return;
        };
        let Some(pos) = rt.pipes.iter().position(|p| p.key == key) else {
            return;
        };
        let Some(pipe) = rt.pipes.get_mut(pos) else {
            return;
        };
        let mut tracked = self.services.get_mut(pipe.service);
        // Lines go out as they are split: nothing but the splitter's one line is buffered.
        let mut emit = |line: &[u8], cut: bool| {
            if let Some(t) = tracked.as_deref_mut() {
                crate::control::ring::record_service_line(&t.plan.name, line, cut);
                let text = output::format_line(&t.plan.name, line, cut);
                if console {
                    let _ = std::io::stderr().lock().write_all(&text);
                }
                if let Err(error) = t.log.write(&text) {
                    tracing::debug!(service = %t.plan.name, %error, "service log write");
                }
            }
        };
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0usize;
        let mut eof = false;
        while total < READ_BUDGET {
            match nix::unistd::read(&pipe.fd, &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    total = total.saturating_add(n);
                    pipe.splitter
                        .feed(buf.get(..n).unwrap_or_default(), &mut emit);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(error) => {
                    tracing::warn!(%error, "read service output");
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            pipe.splitter.finish(&mut emit);
            let pipe = rt.pipes.swap_remove(pos);
            if let Err(error) = rt.epoll.delete(pipe.fd.as_fd()) {
                tracing::debug!(%error, "epoll delete of an output pipe");
            }
        }
    }

    /// Records that `pid` was reaped with `status` and says what PID 1 must do.
    ///
    /// A pid that is no running service is an orphan re-parented to PID 1: it is only counted.
    pub fn on_exit(&mut self, pid: Pid, status: ExitStatus) -> Decision {
        let Some(index) = self.services.iter().position(|t| match t.state {
            ServiceState::Running { pid: p } | ServiceState::Stopping { pid: p, .. } => p == pid,
            _ => false,
        }) else {
            self.orphans_reaped = self.orphans_reaped.saturating_add(1);
            tracing::trace!(pid = pid.as_raw(), %status, "orphan reaped");
            return Decision::None;
        };
        let now = Instant::now();
        let decision = self.exited(index, status, now);
        decision.or(self.settle(now))
    }

    /// A service instance ended (or failed to start): apply its exit policy.
    fn exited(&mut self, index: usize, status: ExitStatus, now: Instant) -> Decision {
        let stopping = self.stopping;
        let Some(t) = self.services.get_mut(index) else {
            return Decision::None;
        };
        let ran_for = t
            .started
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        if matches!(t.ready, ReadyState::Waiting { .. }) {
            t.ready = ReadyState::NotRunning;
        }
        t.last_exit = Some(status);
        let name = t.plan.name.as_str();
        if let ServiceState::Stopping { restart, .. } = t.state {
            // Stopped by request: neither `on_exit` nor the restart policy applies.
            lifecycle::record(name, &Lifecycle::Stopped { status });
            tracing::info!(service = %name, %status, restart, "service stopped by request");
            t.state = if restart && !stopping {
                t.backoff = Backoff::new(t.plan.backoff);
                ServiceState::Restarting {
                    at: now,
                    crash_loop: false,
                }
            } else {
                ServiceState::Stopped
            };
            return Decision::None;
        }
        lifecycle::record(name, &Lifecycle::Exited { status, ran_for });
        let decision = exit_decision(t.plan.restart, t.plan.on_exit, status, stopping);
        match decision {
            Decision::Restart => {
                let next = t.backoff.on_exit(now, ran_for);
                let at = now.checked_add(next.delay).unwrap_or(now);
                t.state = ServiceState::Restarting {
                    at,
                    crash_loop: next.crash_loop,
                };
                lifecycle::record(
                    name,
                    &if next.crash_loop {
                        Lifecycle::CrashLoop {
                            restarts: next.recent,
                            delay: next.delay,
                        }
                    } else {
                        Lifecycle::RestartScheduled { delay: next.delay }
                    },
                );
                if next.crash_loop {
                    tracing::warn!(
                        service = %name, %status, ran_for = ?ran_for, restarts = next.recent,
                        window = ?t.plan.backoff.crash_loop_window, delay = ?next.delay,
                        "service is in a crash loop (CrashLoop): restarting at the backoff cap"
                    );
                } else {
                    tracing::info!(service = %name, %status, ran_for = ?ran_for, delay = ?next.delay, "service exited; restarting");
                }
                Decision::None
            }
            other => {
                t.state = ServiceState::Exited { status };
                tracing::info!(service = %name, %status, ran_for = ?ran_for, decision = ?other, "service exited");
                other
            }
        }
    }

    /// Starts service `index` now; a failure is handled as an exit with status 127.
    fn start(&mut self, index: usize, now: Instant) -> Decision {
        match self.try_start(index, now) {
            Ok(()) => Decision::None,
            Err(error) => {
                if let Some(t) = self.services.get(index) {
                    let error = error.to_string();
                    lifecycle::record(&t.plan.name, &Lifecycle::StartFailed { error });
                }
                tracing::error!(%error, "service start failed");
                self.exited(index, ExitStatus::Code(EXEC_FAILED), now)
            }
        }
    }

    fn try_start(&mut self, index: usize, now: Instant) -> Result<(), SupervisorError> {
        let Some(rt) = self.runtime.as_mut() else {
            return Ok(());
        };
        let Some(t) = self.services.get_mut(index) else {
            return Ok(());
        };
        let name = t.plan.name.clone();
        cgroup::apply(&t.plan.cgroup_limits).map_err(|source| SupervisorError::Limits {
            service: name.clone(),
            source,
        })?;
        if let Some(Readiness::File(path)) = &t.plan.ready {
            // A stale file from an earlier run must not make this run look ready.
            if let Err(error) = std::fs::remove_file(path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(service = %name, path = %path.display(), %error, "remove stale ready file");
                }
            }
        }
        let pipe_err = |source| SupervisorError::Pipe {
            service: name.clone(),
            source,
        };
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).map_err(pipe_err)?;
        let flags = fcntl(&read_end, FcntlArg::F_GETFL).map_err(pipe_err)?;
        fcntl(
            &read_end,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(pipe_err)?;
        let pid = spawn::spawn(&t.plan, rt.stdin.as_fd(), write_end.as_fd())?;
        drop(write_end);
        let key = rt.next_key;
        rt.next_key = rt.next_key.saturating_add(1);
        match rt
            .epoll
            .add(read_end.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, key))
        {
            Ok(()) => rt.pipes.push(OutputPipe {
                key,
                service: index,
                fd: read_end,
                splitter: LineSplitter::default(),
            }),
            // The service still runs; it gets EPIPE (SIGPIPE) if it writes.
            Err(error) => tracing::warn!(service = %name, %error, "output pipe not watched"),
        }
        t.state = ServiceState::Running { pid };
        if t.started.is_some() {
            t.restarts = t.restarts.saturating_add(1);
        }
        t.started = Some(now);
        t.ready = match &t.plan.ready {
            None => ReadyState::Ready,
            Some(condition) => {
                if let (Some(inotify), Some(dir)) = (&rt.inotify, ready::path(condition).parent()) {
                    if !rt.watched.iter().any(|w| w == dir) {
                        let mask = AddWatchFlags::IN_CREATE
                            | AddWatchFlags::IN_MOVED_TO
                            | AddWatchFlags::IN_ATTRIB
                            | AddWatchFlags::IN_CLOSE_WRITE;
                        match inotify.add_watch(dir, mask) {
                            Ok(_) => rt.watched.push(dir.to_path_buf()),
                            Err(error) => {
                                tracing::debug!(service = %name, dir = %dir.display(), %error, "no inotify watch; timed checks only")
                            }
                        }
                    }
                }
                ReadyState::Waiting {
                    deadline: now.checked_add(t.plan.ready_timeout).unwrap_or(now),
                    next_check: now,
                    attempt: 0,
                }
            }
        };
        tracing::info!(service = %name, pid = pid.as_raw(), "service started");
        lifecycle::record(&name, &Lifecycle::Started { pid: pid.as_raw() });
        if t.ready == ReadyState::Ready {
            tracing::debug!(service = %name, "service ready (no condition)");
            lifecycle::record(&name, &Lifecycle::Ready);
        }
        Ok(())
    }

    /// Does everything due at `now` (restarts, readiness checks and timeouts, dependents that
    /// may start or must give up), then arms the timer for the earliest next deadline.
    fn settle(&mut self, now: Instant) -> Decision {
        let mut decision = Decision::None;
        if self.stopping {
            return decision;
        }
        // Each pass can only move services forward; bound the passes anyway.
        for _ in 0..self.services.len().saturating_mul(3).saturating_add(2) {
            let mut changed = false;
            for index in 0..self.services.len() {
                let Some(t) = self.services.get_mut(index) else {
                    continue;
                };
                match (t.state, t.ready) {
                    (ServiceState::Restarting { at, .. }, _) if at <= now => {
                        decision = decision.or(self.start(index, now));
                        changed = true;
                    }
                    (
                        ServiceState::Stopping {
                            pid,
                            kill_at,
                            killed: false,
                            restart,
                        },
                        _,
                    ) if kill_at <= now => {
                        t.state = ServiceState::Stopping {
                            pid,
                            kill_at,
                            killed: true,
                            restart,
                        };
                        let (name, cgroup) = (t.plan.name.clone(), t.plan.cgroup.clone());
                        self.kill_stopping(&name, pid, &cgroup);
                    }
                    (
                        ServiceState::Running { .. },
                        ReadyState::Waiting {
                            deadline,
                            next_check,
                            attempt,
                        },
                    ) if next_check <= now => {
                        let condition = t.plan.ready.as_ref();
                        if condition.is_some_and(ready::check) {
                            t.ready = ReadyState::Ready;
                            tracing::info!(service = %t.plan.name, "service ready");
                            lifecycle::record(&t.plan.name, &Lifecycle::Ready);
                            changed = true;
                        } else if now >= deadline {
                            t.ready = ReadyState::TimedOut;
                            lifecycle::record(
                                &t.plan.name,
                                &Lifecycle::ReadyTimeout {
                                    timeout: t.plan.ready_timeout,
                                },
                            );
                            tracing::error!(
                                service = %t.plan.name, timeout = ?t.plan.ready_timeout,
                                "service did not become ready in time; services after it will not start"
                            );
                            changed = true;
                        } else {
                            let attempt = attempt.saturating_add(1);
                            let retry = now
                                .checked_add(ready::retry_interval(attempt))
                                .unwrap_or(deadline);
                            t.ready = ReadyState::Waiting {
                                deadline,
                                next_check: retry.min(deadline),
                                attempt,
                            };
                        }
                    }
                    (ServiceState::Pending, _) => match self.verdict(index) {
                        Verdict::Start => {
                            decision = decision.or(self.start(index, now));
                            changed = true;
                        }
                        Verdict::Wait => {}
                        Verdict::Block(dep, why) => {
                            if let Some(t) = self.services.get_mut(index) {
                                t.state = ServiceState::Blocked;
                                lifecycle::record(
                                    &t.plan.name,
                                    &Lifecycle::Blocked {
                                        dependency: dep.clone(),
                                        why,
                                    },
                                );
                                tracing::error!(
                                    service = %t.plan.name, dependency = %dep,
                                    "service not started: its dependency {dep} {why}"
                                );
                            }
                            changed = true;
                        }
                    },
                    _ => {}
                }
            }
            if !changed {
                break;
            }
        }
        self.rearm(now);
        decision
    }

    fn verdict(&self, index: usize) -> Verdict {
        let Some(t) = self.services.get(index) else {
            return Verdict::Wait;
        };
        dependency_verdict(t.plan.after.iter().map(|dep| {
            let status = self
                .services
                .iter()
                .find(|o| o.plan.name == *dep)
                .map_or(DepStatus::Failed("is not defined"), |o| {
                    dep_status(o.state, o.ready)
                });
            (dep.as_str(), status)
        }))
    }

    /// The earliest deadline of any service, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services
            .iter()
            .filter_map(|t| match (t.state, t.ready) {
                (ServiceState::Restarting { at, .. }, _) => Some(at),
                (
                    ServiceState::Stopping {
                        kill_at,
                        killed: false,
                        ..
                    },
                    _,
                ) => Some(kill_at),
                (
                    ServiceState::Running { .. },
                    ReadyState::Waiting {
                        deadline,
                        next_check,
                        ..
                    },
                ) => Some(next_check.min(deadline)),
                _ => None,
            })
            .min()
    }

    fn rearm(&mut self, now: Instant) {
        let next = if self.stopping {
            None
        } else {
            self.next_deadline()
        };
        let Some(rt) = self.runtime.as_mut() else {
            return;
        };
        if let Err(error) = rt.timer.rearm(next, now) {
            tracing::error!(%error, "supervisor timer");
        }
    }

    /// Marks the host as shutting down: exits no longer lead to any decision or restart.
    pub fn begin_shutdown(&mut self) {
        self.stopping = true;
        self.rearm(Instant::now());
    }

    /// True once [`Supervisor::begin_shutdown`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// How many reaped children were not services.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans_reaped
    }

    /// How many services are running (stopping ones included).
    pub fn running(&self) -> usize {
        self.services
            .iter()
            .filter(|t| {
                matches!(
                    t.state,
                    ServiceState::Running { .. } | ServiceState::Stopping { .. }
                )
            })
            .count()
    }

    /// The state of the service named `name`.
    pub fn state(&self, name: &str) -> Option<ServiceState> {
        self.services
            .iter()
            .find(|t| t.plan.name == name)
            .map(|t| t.state)
    }

    /// The readiness of the service named `name`.
    pub fn ready_state(&self, name: &str) -> Option<ReadyState> {
        self.services
            .iter()
            .find(|t| t.plan.name == name)
            .map(|t| t.ready)
    }

    /// The raw fd of the supervisor's epoll instance (for logs and tests).
    pub fn poll_raw_fd(&self) -> Option<i32> {
        self.runtime.as_ref().map(|r| r.epoll.0.as_fd().as_raw_fd())
    }
}

#[cfg(test)]
mod tests;
