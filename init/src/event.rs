//! The event loop of PID 1: signals through a signalfd, multiplexed with epoll.
//!
//! [`block_signals`] blocks every signal PID 1 handles, so none is ever delivered
//! asynchronously: they queue up and [`serve`] reads them from a signalfd in an epoll loop that
//! waits with an infinite timeout (no polling timer). `SIGCHLD` reaps every exited child with
//! `waitpid(-1, WNOHANG)` and hands it to the supervisor; the shutdown signals map to an
//! action through the pure [`response`] table. The supervisor's own epoll fd (its one restart
//! and readiness timer, its inotify fd, the services' output pipes) is watched in the same loop
//! and handed to [`Supervisor::on_poll`] when ready. The control server's epoll fd (its
//! listener, connections and one timerfd) is watched the same way and handed to
//! [`Server::on_poll`]; after every iteration [`Server::pump`] sends new log ring entries to
//! the followers. The loop never returns: it ends in [`shutdown::shutdown_serving`], which
//! never returns either.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::unistd::Pid;
use rampart_config::Action;

use crate::control::server::Server;
use crate::shutdown::{self, ShutdownContext};
use crate::supervisor::{Decision, ExitStatus, Supervisor};

/// The signals PID 1 blocks and reads from its signalfd.
pub const HANDLED_SIGNALS: [Signal; 9] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPWR,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
];

/// Consecutive event-loop errors tolerated before PID 1 gives up and shuts down.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 10;

/// Pause between two attempts after an event-loop error (so a broken fd never spins).
pub const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Errors of the event machinery.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// `sigprocmask` failed.
    #[error("block signals: {source}")]
    Block {
        /// The kernel's error.
        source: Errno,
    },
    /// `signalfd` failed.
    #[error("create signalfd: {source}")]
    SignalFd {
        /// The kernel's error.
        source: Errno,
    },
    /// `timerfd_create` or `timerfd_settime` failed.
    #[error("create timerfd: {source}")]
    TimerFd {
        /// The kernel's error.
        source: Errno,
    },
    /// `epoll_create1` failed.
    #[error("create epoll instance: {source}")]
    Epoll {
        /// The kernel's error.
        source: Errno,
    },
    /// `epoll_ctl(EPOLL_CTL_ADD)` failed.
    #[error("add {what} to epoll: {source}")]
    EpollAdd {
        /// Which fd.
        what: &'static str,
        /// The kernel's error.
        source: Errno,
    },
    /// `epoll_wait` failed.
    #[error("wait for events: {source}")]
    Wait {
        /// The kernel's error.
        source: Errno,
    },
    /// Reading the signalfd failed.
    #[error("read signalfd: {source}")]
    ReadSignal {
        /// The kernel's error.
        source: Errno,
    },
}

/// The set of [`HANDLED_SIGNALS`].
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED_SIGNALS {
        set.add(signal);
    }
    set
}

/// Blocks [`HANDLED_SIGNALS`] in the calling thread (PID 1 has only one). Call it before any
/// fork; idempotent. Children reset their mask before exec.
pub fn block_signals() -> Result<(), EventError> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None)
        .map_err(|source| EventError::Block { source })
}

/// What PID 1 does with a signal it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Reap exited children.
    Reap,
    /// Shut the host down with this action.
    Shutdown(Action),
    /// Log it and carry on.
    Ignore,
}

/// The signal table of PID 1.
///
/// `SIGTERM` reboots, `SIGUSR2` powers off and `SIGUSR1` halts (the busybox/sysvinit
/// convention); `SIGINT` is ctrl-alt-del (the kernel sends it once CAD is disabled) and
/// reboots; `SIGPWR` (a power failure, or `lxc-stop`) powers off. The rest is logged only.
pub fn response(signal: Signal) -> Response {
    match signal {
        Signal::SIGCHLD => Response::Reap,
        Signal::SIGTERM | Signal::SIGINT => Response::Shutdown(Action::Reboot),
        Signal::SIGUSR2 | Signal::SIGPWR => Response::Shutdown(Action::Poweroff),
        Signal::SIGUSR1 => Response::Shutdown(Action::Halt),
        _ => Response::Ignore,
    }
}

/// A bounded budget of consecutive errors: the loop retries, pausing between attempts, and
/// gives up after [`MAX_CONSECUTIVE_ERRORS`] in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorBudget {
    consecutive: u32,
    max: u32,
}

impl ErrorBudget {
    /// A budget allowing `max` consecutive errors.
    pub fn new(max: u32) -> Self {
        Self {
            consecutive: 0,
            max,
        }
    }

    /// Records an error; true when the budget is exhausted.
    pub fn failed(&mut self) -> bool {
        self.consecutive = self.consecutive.saturating_add(1);
        self.consecutive >= self.max
    }

    /// Records a success: the count starts again.
    pub fn succeeded(&mut self) {
        self.consecutive = 0;
    }
}

/// What one round of reaping found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reaped {
    /// Children reaped.
    pub count: u64,
    /// `waitpid` said `ECHILD`: PID 1 has no child left.
    pub no_children: bool,
}

/// Reaps every exited child with `waitpid(-1, WNOHANG | __WALL)`, calling `on_exit` for each.
pub fn reap_children(on_exit: impl FnMut(Pid, ExitStatus)) -> Reaped {
    reap_with(wait_any, on_exit)
}

/// One non-blocking `waitpid(-1)`: `Ok(None)` when children exist but none has exited.
///
/// It decodes the raw status itself: nix's `waitpid` errors out (after reaping!) on a child
/// killed by a real-time signal.
fn wait_any() -> Result<Option<(Pid, ExitStatus)>, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable int for the duration of the call.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
    match pid {
        0 => Ok(None),
        p if p > 0 => Ok(Some((Pid::from_raw(p), ExitStatus::from_raw(status)))),
        _ => Err(Errno::last()),
    }
}

/// The reaping loop over an injectable `wait` (tests feed it a script).
fn reap_with(
    mut wait: impl FnMut() -> Result<Option<(Pid, ExitStatus)>, Errno>,
    mut on_exit: impl FnMut(Pid, ExitStatus),
) -> Reaped {
    let mut reaped = Reaped::default();
    let mut interrupted = 0u32;
    loop {
        match wait() {
            Ok(Some((pid, status))) => {
                reaped.count = reaped.count.saturating_add(1);
                on_exit(pid, status);
            }
            Ok(None) => return reaped,
            Err(Errno::ECHILD) => {
                reaped.no_children = true;
                return reaped;
            }
            Err(Errno::EINTR) if interrupted < MAX_CONSECUTIVE_ERRORS => interrupted += 1,
            Err(error) => {
                tracing::warn!(%error, "waitpid failed");
                return reaped;
            }
        }
    }
}

const SIGNAL_TOKEN: u64 = 1;
const TIMER_TOKEN: u64 = 2;
const SUPERVISOR_TOKEN: u64 = 3;
const CONTROL_TOKEN: u64 = 4;

/// Which of the event sources are ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Ready {
    pub(crate) signals: bool,
    pub(crate) timer: bool,
    /// The supervisor's own epoll fd (output, readiness, restart timer).
    pub(crate) supervisor: bool,
    /// The control server's epoll fd (listener, connections, its timer).
    pub(crate) control: bool,
}

/// A signalfd for [`HANDLED_SIGNALS`] (non-blocking), an optional one-shot timer, and the
/// epoll instance watching both.
#[derive(Debug)]
pub(crate) struct Events {
    epoll: Epoll,
    signals: SignalFd,
    /// Kept open for epoll to watch; never read (readiness is all that matters).
    _timer: Option<TimerFd>,
}

impl Events {
    /// The sources; with `deadline`, a monotonic timer that fires once after it.
    pub(crate) fn new(deadline: Option<Duration>) -> Result<Self, EventError> {
        let signals = SignalFd::with_flags(
            &handled_signals(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .map_err(|source| EventError::SignalFd { source })?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|source| EventError::Epoll { source })?;
        epoll
            .add(
                signals.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN),
            )
            .map_err(|source| EventError::EpollAdd {
                what: "signalfd",
                source,
            })?;
        let timer = match deadline {
            None => None,
            Some(after) => {
                let timer = TimerFd::new(
                    ClockId::CLOCK_MONOTONIC,
                    TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
                )
                .map_err(|source| EventError::TimerFd { source })?;
                // A zero expiration would disarm the timer: make it at least 1 ns.
                let after = after.max(Duration::from_nanos(1));
                timer
                    .set(
                        Expiration::OneShot(TimeSpec::from_duration(after)),
                        TimerSetTimeFlags::empty(),
                    )
                    .map_err(|source| EventError::TimerFd { source })?;
                epoll
                    .add(
                        timer.as_fd(),
                        EpollEvent::new(EpollFlags::EPOLLIN, TIMER_TOKEN),
                    )
                    .map_err(|source| EventError::EpollAdd {
                        what: "timerfd",
                        source,
                    })?;
                Some(timer)
            }
        };
        Ok(Self {
            epoll,
            signals,
            _timer: timer,
        })
    }

    /// Also watches `fd` (the supervisor's epoll instance) for input.
    pub(crate) fn watch_supervisor(&self, fd: BorrowedFd<'_>) -> Result<(), EventError> {
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, SUPERVISOR_TOKEN))
            .map_err(|source| EventError::EpollAdd {
                what: "supervisor",
                source,
            })
    }

    /// Also watches `fd` (the control server's epoll instance) for input.
    pub(crate) fn watch_control(&self, fd: BorrowedFd<'_>) -> Result<(), EventError> {
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, CONTROL_TOKEN))
            .map_err(|source| EventError::EpollAdd {
                what: "control server",
                source,
            })
    }

    /// Blocks (no timeout) until a source is ready; `EINTR` is retried.
    pub(crate) fn wait(&self) -> Result<Ready, EventError> {
        let mut events = [EpollEvent::empty(); 8];
        let n = loop {
            match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(source) => return Err(EventError::Wait { source }),
            }
        };
        let mut ready = Ready::default();
        for event in events.iter().take(n) {
            match event.data() {
                SIGNAL_TOKEN => ready.signals = true,
                TIMER_TOKEN => ready.timer = true,
                SUPERVISOR_TOKEN => ready.supervisor = true,
                CONTROL_TOKEN => ready.control = true,
                _ => {}
            }
        }
        Ok(ready)
    }

    /// Reads every queued signal (so the signalfd stops being ready) and passes each on.
    /// Signal numbers nix does not know are skipped.
    pub(crate) fn drain_signals(&self, mut each: impl FnMut(Signal)) -> Result<(), EventError> {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let number = i32::try_from(info.ssi_signo).unwrap_or(0);
                    match Signal::try_from(number) {
                        Ok(signal) => each(signal),
                        Err(_) => tracing::debug!(number, "unknown signal read"),
                    }
                }
                Ok(None) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(source) => return Err(EventError::ReadSignal { source }),
            }
        }
    }
}

/// A one-shot monotonic timerfd in a component's epoll instance, armed to the earliest of its
/// deadlines: how the supervisor and the control server wake for restarts, readiness checks and
/// connection timeouts without a polling timer.
#[derive(Debug)]
pub struct DeadlineTimer {
    timer: TimerFd,
    armed: Option<std::time::Instant>,
}

impl DeadlineTimer {
    /// A disarmed timer, added to `epoll` under `key` (readable when it fires). The error
    /// names the step that failed.
    pub fn new(epoll: &Epoll, key: u64) -> Result<Self, (&'static str, Errno)> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|e| ("timerfd", e))?;
        epoll
            .add(timer.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, key))
            .map_err(|e| ("epoll add timerfd", e))?;
        Ok(Self { timer, armed: None })
    }

    /// Clears a (possibly stale) expiration after the timer was reported readable.
    pub fn acknowledge(&mut self) {
        // Reading clears the expiration; it may be stale (EAGAIN): fine.
        let _ = self.timer.wait();
        self.armed = None;
    }

    /// Arms the timer to fire once at `next` (at least 1 ms after `now`: a zero expiration
    /// would disarm it), or disarms it; no syscall when it is already armed so.
    pub fn rearm(
        &mut self,
        next: Option<std::time::Instant>,
        now: std::time::Instant,
    ) -> Result<(), Errno> {
        if next == self.armed {
            return Ok(());
        }
        match next {
            None => self.timer.unset()?,
            Some(at) => {
                let after = at
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(after)),
                    TimerSetTimeFlags::empty(),
                )?;
            }
        }
        self.armed = next;
        Ok(())
    }
}

/// Runs PID 1's event loop with the started services and, when it could be created, the
/// control server; never returns.
pub fn serve(mut sup: Supervisor, ctx: ShutdownContext, mut server: Option<Server>) -> ! {
    let mut budget = ErrorBudget::new(MAX_CONSECUTIVE_ERRORS);
    let events = loop {
        let created = Events::new(None).and_then(|events| {
            if let Some(fd) = sup.poll_fd() {
                events.watch_supervisor(fd)?;
            }
            let watched = server.as_ref().map(|s| events.watch_control(s.poll_fd()));
            if let Some(Err(error)) = watched {
                // Not a protection: PID 1 runs on without its control socket.
                tracing::error!(%error, "control socket not served");
                crate::log::console(&format!(
                    "control: error: {error}; running without the control socket"
                ));
                server = None;
            }
            Ok(events)
        });
        match created {
            Ok(events) => break events,
            Err(error) => {
                tracing::error!(%error, "event loop setup failed");
                if budget.failed() {
                    shutdown::fatal_after_start("event loop", &error, &ctx, &mut sup);
                }
                std::thread::sleep(ERROR_PAUSE);
            }
        }
    };
    budget.succeeded();
    tracing::info!(services = sup.running(), "serving");
    loop {
        if let Decision::Shutdown(action) = sup.take_deferred() {
            tracing::info!(%action, "a service with on_exit could not start");
            shutdown::shutdown_serving(action, &ctx, Some(&mut sup), server.as_mut());
        }
        let step = events.wait().and_then(|ready| {
            let mut action = None;
            if ready.supervisor {
                if let Decision::Shutdown(wanted) = sup.on_poll() {
                    tracing::info!(action = %wanted, "a service with on_exit ended");
                    action = Some(wanted);
                }
            }
            if ready.signals {
                events.drain_signals(|signal| {
                    let wanted = handle_signal(signal, &mut sup);
                    action = action.or(wanted);
                })?;
            }
            if ready.control {
                if let Some(server) = server.as_mut() {
                    if let Some(wanted) = server.on_poll(&mut sup) {
                        tracing::info!(action = %wanted, "shutdown requested on the control socket");
                        action = action.or(Some(wanted));
                    }
                }
            }
            Ok(action)
        });
        // New log entries of this iteration go out to the followers.
        if let Some(server) = server.as_mut() {
            server.pump();
        }
        match step {
            Ok(Some(action)) => {
                shutdown::shutdown_serving(action, &ctx, Some(&mut sup), server.as_mut())
            }
            Ok(None) => budget.succeeded(),
            Err(error) => {
                tracing::error!(%error, "event loop error");
                if budget.failed() {
                    shutdown::fatal_after_start("event loop", &error, &ctx, &mut sup);
                }
                std::thread::sleep(ERROR_PAUSE);
            }
        }
    }
}

/// Acts on one signal; returns the shutdown action it asks for, if any.
fn handle_signal(signal: Signal, sup: &mut Supervisor) -> Option<Action> {
    match response(signal) {
        Response::Reap => {
            let mut decision = Decision::None;
            let reaped = reap_children(|pid, status| {
                decision = decision.or(sup.on_exit(pid, status));
            });
            tracing::debug!(
                reaped = reaped.count,
                orphans_total = sup.orphans_reaped(),
                running = sup.running(),
                "children reaped"
            );
            match decision {
                Decision::Shutdown(action) => {
                    tracing::info!(%action, "a service with on_exit ended");
                    Some(action)
                }
                Decision::None | Decision::Restart => None,
            }
        }
        Response::Shutdown(action) => {
            tracing::info!(signal = signal.as_str(), %action, "shutdown requested");
            Some(action)
        }
        Response::Ignore => {
            tracing::info!(signal = signal.as_str(), "signal ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_table() {
        let cases = [
            (Signal::SIGCHLD, Response::Reap),
            (Signal::SIGTERM, Response::Shutdown(Action::Reboot)),
            (Signal::SIGINT, Response::Shutdown(Action::Reboot)),
            (Signal::SIGUSR2, Response::Shutdown(Action::Poweroff)),
            (Signal::SIGPWR, Response::Shutdown(Action::Poweroff)),
            (Signal::SIGUSR1, Response::Shutdown(Action::Halt)),
            (Signal::SIGHUP, Response::Ignore),
            (Signal::SIGQUIT, Response::Ignore),
            (Signal::SIGWINCH, Response::Ignore),
            (Signal::SIGPIPE, Response::Ignore),
        ];
        for (signal, want) in cases {
            assert_eq!(response(signal), want, "{signal}");
        }
    }

    #[test]
    fn every_handled_signal_is_blocked_and_every_meaningful_one_is_handled() {
        let set = handled_signals();
        for signal in HANDLED_SIGNALS {
            assert!(set.contains(signal), "{signal}");
        }
        for signal in Signal::iterator() {
            if response(signal) != Response::Ignore {
                assert!(
                    set.contains(signal),
                    "{signal} has a response but is not blocked"
                );
            }
        }
    }

    #[test]
    fn error_budget_is_bounded_and_resets() {
        let mut budget = ErrorBudget::new(3);
        assert!(!budget.failed());
        assert!(!budget.failed());
        budget.succeeded();
        assert!(!budget.failed());
        assert!(!budget.failed());
        assert!(budget.failed());
        assert!(budget.failed());
    }

    type Step = Result<Option<(Pid, ExitStatus)>, Errno>;

    fn exited(pid: i32, code: i32) -> Step {
        Ok(Some((Pid::from_raw(pid), ExitStatus::Code(code))))
    }

    #[test]
    fn reap_loop_table() {
        let cases: Vec<(&str, Vec<Step>, Reaped, usize)> = vec![
            (
                "nothing exited",
                vec![Ok(None)],
                Reaped {
                    count: 0,
                    no_children: false,
                },
                1,
            ),
            (
                "no child",
                vec![Err(Errno::ECHILD)],
                Reaped {
                    count: 0,
                    no_children: true,
                },
                1,
            ),
            (
                "two then alive",
                vec![exited(10, 0), exited(11, 1), Ok(None)],
                Reaped {
                    count: 2,
                    no_children: false,
                },
                3,
            ),
            (
                "three then none left",
                vec![
                    exited(10, 0),
                    exited(11, 0),
                    exited(12, 0),
                    Err(Errno::ECHILD),
                ],
                Reaped {
                    count: 3,
                    no_children: true,
                },
                4,
            ),
            (
                "interrupted then reaped",
                vec![Err(Errno::EINTR), exited(5, 0), Ok(None)],
                Reaped {
                    count: 1,
                    no_children: false,
                },
                3,
            ),
            (
                "other error stops",
                vec![Err(Errno::EINVAL), exited(5, 0)],
                Reaped::default(),
                1,
            ),
        ];
        for (what, script, want, calls_wanted) in cases {
            let mut script = script.into_iter();
            let mut calls = 0;
            let mut seen = Vec::new();
            let got = reap_with(
                || {
                    calls += 1;
                    script.next().unwrap_or(Ok(None))
                },
                |pid, status| seen.push((pid, status)),
            );
            assert_eq!(got, want, "{what}");
            assert_eq!(calls, calls_wanted, "{what}");
            assert_eq!(seen.len() as u64, want.count, "{what}");
        }
    }

    #[test]
    fn endless_eintr_is_bounded() {
        let mut calls = 0u32;
        let got = reap_with(
            || {
                calls += 1;
                Err(Errno::EINTR)
            },
            |_, _| {},
        );
        assert_eq!(got, Reaped::default());
        assert_eq!(calls, MAX_CONSECUTIVE_ERRORS + 1);
    }

    #[test]
    fn shutdown_signal_wins_over_reaping_in_handle_signal() {
        use crate::supervisor::{ServicePlan, Supervisor};
        let mut sup = Supervisor::new(Vec::<ServicePlan>::new());
        assert_eq!(
            handle_signal(Signal::SIGUSR2, &mut sup),
            Some(Action::Poweroff)
        );
        assert_eq!(handle_signal(Signal::SIGHUP, &mut sup), None);
    }

    #[test]
    fn the_control_fd_is_reported_as_control() {
        let events = Events::new(None).unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        events.watch_control(read_end.as_fd()).unwrap();
        nix::unistd::write(&write_end, b"x").unwrap();
        let ready = events.wait().unwrap();
        assert!(ready.control);
        assert!(!ready.supervisor && !ready.timer && !ready.signals);
    }

    #[test]
    fn timer_fires_through_epoll() {
        let events = Events::new(Some(Duration::from_millis(20))).unwrap();
        let start = std::time::Instant::now();
        let ready = events.wait().unwrap();
        assert!(ready.timer);
        assert!(start.elapsed() >= Duration::from_millis(15));
    }
}
