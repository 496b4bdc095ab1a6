//! Orderly shutdown of the host, and the fatal-error path.
//!
//! [`steps`] is the plan (plain data): `SIGTERM` to every process, a bounded wait while
//! reaping (a timerfd deadline in the signalfd + epoll style, ended early once PID 1 has no
//! child), `SIGKILL`, a short wait, sync, unmount, sync, and the console line. [`shutdown`]
//! runs it and ends in [`reboot_now`], which calls `reboot(2)` and, should that fail, sleeps
//! forever: PID 1 never returns and never exits.
//!
//! With [`shutdown_serving`], the control server keeps being served during the waits: new
//! requests get `shutting-down`, `logs --follow` clients see the services stop.

use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::time::TimeSpec;
use nix::unistd::{pause, sync, Pid};
use rampart_config::{Action, HostConfig};

use crate::control::server::{Server, ShuttingDown};
use crate::event::{self, handled_signals, reap_children, Events};
use crate::mount::{self, MountSpec};
use crate::supervisor::{ExitStatus, Supervisor};

/// How long PID 1 waits for the processes it `SIGKILL`ed to be reaped.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// What the shutdown path needs, prepared by boot.
#[derive(Debug, Clone)]
pub struct ShutdownContext {
    /// The mounts made at boot (unmounted in reverse order).
    pub mounts: Vec<MountSpec>,
    /// The root the mount targets are relative to ("/" in PID 1).
    pub root: PathBuf,
    /// How long processes get between `SIGTERM` and `SIGKILL`.
    pub timeout: Duration,
    /// The action after a fatal error.
    pub failure_action: Action,
}

impl ShutdownContext {
    /// The context for `cfg` with these mounts under `root`.
    pub fn from_config(cfg: &HostConfig, mounts: Vec<MountSpec>, root: PathBuf) -> Self {
        Self {
            mounts,
            root,
            timeout: cfg.boot.shutdown_timeout,
            failure_action: cfg.boot.failure_action,
        }
    }
}

/// One step of the shutdown plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `kill(-1, signal)`: every process but PID 1.
    SignalAll(Signal),
    /// Reap until no child is left or the time is up.
    Wait(Duration),
    /// `sync(2)`.
    Sync,
    /// Unmount the boot mounts (errors are logged and skipped).
    Unmount,
    /// Print `rampart-init: <action>` on the console.
    Announce(Action),
}

/// The shutdown plan for `action` with `timeout` between `SIGTERM` and `SIGKILL`;
/// [`reboot_now`] follows it.
pub fn steps(action: Action, timeout: Duration) -> Vec<Step> {
    let mut plan = vec![Step::SignalAll(Signal::SIGTERM)];
    if !timeout.is_zero() {
        plan.push(Step::Wait(timeout));
    }
    plan.extend([
        Step::SignalAll(Signal::SIGKILL),
        Step::Wait(KILL_GRACE),
        Step::Sync,
        Step::Unmount,
        Step::Sync,
        Step::Announce(action),
    ]);
    plan
}

/// The `reboot(2)` command for an action.
pub fn reboot_mode(action: Action) -> RebootMode {
    match action {
        Action::Poweroff => RebootMode::RB_POWER_OFF,
        Action::Reboot => RebootMode::RB_AUTOBOOT,
        Action::Halt => RebootMode::RB_HALT_SYSTEM,
    }
}

/// The console line printed just before `reboot(2)`.
pub fn announce_line(action: Action) -> String {
    format!("rampart-init: {action}")
}

/// The console lines of a fatal boot error.
pub fn fatal_lines(step: &str, err: &dyn fmt::Display) -> [String; 2] {
    [
        format!("rampart-init: fatal: {step}: {err}"),
        "rampart-init: no service started".to_string(),
    ]
}

/// Writes one line to the console (stderr), ignoring errors: `eprintln!` would panic.
fn console(line: &str) {
    let mut text = String::with_capacity(line.len().saturating_add(1));
    text.push_str(line);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// How a wait for children ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// PID 1 has no child left.
    NoChildren,
    /// The time ran out first.
    TimedOut,
    /// The wait machinery failed; the wait ended early.
    Failed,
}

/// Shuts the host down with `action`; never returns.
pub fn shutdown(action: Action, ctx: &ShutdownContext, sup: Option<&mut Supervisor>) -> ! {
    shutdown_serving(action, ctx, sup, None)
}

/// Shuts the host down with `action`, serving the control socket while it waits for the
/// services to end; never returns.
pub fn shutdown_serving(
    action: Action,
    ctx: &ShutdownContext,
    mut sup: Option<&mut Supervisor>,
    mut server: Option<&mut Server>,
) -> ! {
    tracing::info!(%action, timeout = ?ctx.timeout, "shutting down");
    if let Some(sup) = sup.as_deref_mut() {
        sup.begin_shutdown();
    }
    // Normally done at boot already; needed for the signalfd if that failed.
    if let Err(error) = event::block_signals() {
        tracing::warn!(%error, "blocking signals for shutdown failed");
    }
    for step in steps(action, ctx.timeout) {
        run_step(step, ctx, &mut sup, &mut server);
    }
    reboot_now(action)
}

fn run_step(
    step: Step,
    ctx: &ShutdownContext,
    sup: &mut Option<&mut Supervisor>,
    server: &mut Option<&mut Server>,
) {
    match step {
        Step::SignalAll(signal) => match kill(Pid::from_raw(-1), signal) {
            Ok(()) => tracing::info!(signal = signal.as_str(), "signalled every process"),
            Err(Errno::ESRCH) => tracing::info!(signal = signal.as_str(), "no process to signal"),
            Err(error) => tracing::warn!(signal = signal.as_str(), %error, "kill(-1) failed"),
        },
        Step::Wait(timeout) => {
            let start = Instant::now();
            let mut reaped = 0u64;
            // Service output keeps flowing while services stop (a full pipe would block a
            // service that logs on its way out): the supervisor's fd joins the wait.
            let output = sup.as_deref().and_then(Supervisor::poll_raw_fd);
            let control = server.as_deref().map(|s| s.poll_fd().as_raw_fd());
            let outcome = wait_children(timeout, output, control, |event| {
                match event {
                    WaitEvent::Exited(pid, status) => {
                        reaped = reaped.saturating_add(1);
                        if let Some(sup) = sup.as_deref_mut() {
                            sup.on_exit(pid, status);
                        }
                    }
                    WaitEvent::Output => {
                        if let Some(sup) = sup.as_deref_mut() {
                            sup.drain_output();
                        }
                    }
                    WaitEvent::Control => {
                        if let Some(server) = server.as_deref_mut() {
                            // Every request is refused now; a reboot asked again changes nothing.
                            let _ = match sup.as_deref_mut() {
                                Some(sup) => server.on_poll(sup),
                                None => server.on_poll(&mut ShuttingDown),
                            };
                        }
                    }
                }
                if let Some(server) = server.as_deref_mut() {
                    server.pump();
                }
            });
            tracing::info!(?outcome, reaped, waited = ?start.elapsed(), "wait for children ended");
        }
        Step::Sync => sync(),
        Step::Unmount => {
            for error in mount::unmount_all(&ctx.mounts, &ctx.root) {
                tracing::warn!(%error, "unmount failed");
            }
        }
        Step::Announce(action) => console(&announce_line(action)),
    }
}

/// What [`wait_children`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEvent {
    /// A child was reaped.
    Exited(Pid, ExitStatus),
    /// The extra fd (the supervisor's) is readable: drain service output.
    Output,
    /// The control server's fd is readable: serve it.
    Control,
}

/// Reaps children until none is left or `timeout` has passed, whichever comes first.
///
/// The signals must be blocked. The deadline is a timerfd watched with the signalfd (and the
/// optional `extra` fd, reported as [`WaitEvent::Output`], and `control` fd, reported as
/// [`WaitEvent::Control`]) through epoll; should those fds fail, `sigtimedwait` against the
/// same deadline takes over.
pub fn wait_children(
    timeout: Duration,
    extra: Option<RawFd>,
    control: Option<RawFd>,
    mut on_event: impl FnMut(WaitEvent),
) -> WaitOutcome {
    if reap_children(|pid, status| on_event(WaitEvent::Exited(pid, status))).no_children {
        return WaitOutcome::NoChildren;
    }
    if timeout.is_zero() {
        return WaitOutcome::TimedOut;
    }
    let deadline = Instant::now().checked_add(timeout);
    let fallback = |mut on_event: Box<dyn FnMut(WaitEvent) + '_>| {
        tracing::warn!("shutdown wait falls back to sigtimedwait");
        wait_without_fds(deadline, |pid, status| {
            on_event(WaitEvent::Exited(pid, status))
        })
    };
    let events = Events::new(Some(timeout)).and_then(|events| {
        if let Some(fd) = extra {
            // SAFETY: the caller keeps `fd` open for this call (the supervisor owns it).
            events.watch_supervisor(unsafe { BorrowedFd::borrow_raw(fd) })?;
        }
        if let Some(fd) = control {
            // SAFETY: the caller keeps `fd` open for this call (the control server owns it).
            let watched = events.watch_control(unsafe { BorrowedFd::borrow_raw(fd) });
            if let Err(error) = watched {
                // Waiting matters more than serving: carry on without the control socket.
                tracing::warn!(%error, "control socket not served while shutting down");
            }
        }
        Ok(events)
    });
    let events = match events {
        Ok(events) => events,
        Err(error) => {
            tracing::warn!(%error, "shutdown wait events");
            return fallback(Box::new(on_event));
        }
    };
    loop {
        let ready = match events.wait() {
            Ok(ready) => ready,
            Err(error) => {
                tracing::warn!(%error, "shutdown wait");
                return fallback(Box::new(on_event));
            }
        };
        if ready.signals {
            let drained = events.drain_signals(|signal| {
                if signal != Signal::SIGCHLD {
                    tracing::info!(signal = signal.as_str(), "already shutting down: ignored");
                }
            });
            if let Err(error) = drained {
                tracing::warn!(%error, "shutdown wait signals");
                return fallback(Box::new(on_event));
            }
        }
        if ready.supervisor {
            on_event(WaitEvent::Output);
        }
        if ready.control {
            on_event(WaitEvent::Control);
        }
        if reap_children(|pid, status| on_event(WaitEvent::Exited(pid, status))).no_children {
            return WaitOutcome::NoChildren;
        }
        if ready.timer {
            return WaitOutcome::TimedOut;
        }
    }
}

/// The fallback wait: `sigtimedwait` on the handled signals until `deadline` (no fd needed).
fn wait_without_fds(
    deadline: Option<Instant>,
    mut on_exit: impl FnMut(Pid, ExitStatus),
) -> WaitOutcome {
    let set = handled_signals();
    let mut interrupted = 0u32;
    loop {
        if reap_children(&mut on_exit).no_children {
            return WaitOutcome::NoChildren;
        }
        // No representable deadline (absurd timeout): wait for children only.
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            return WaitOutcome::TimedOut;
        }
        let timeout = remaining.map(TimeSpec::from_duration);
        let timeout_ptr = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| std::ptr::from_ref(t.as_ref()));
        // SAFETY: `set` and `timeout` outlive the call; a null siginfo pointer is allowed, and
        // a null timeout means "no timeout".
        let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), timeout_ptr) };
        if r < 0 {
            match Errno::last() {
                Errno::EAGAIN => {}
                Errno::EINTR if interrupted < event::MAX_CONSECUTIVE_ERRORS => interrupted += 1,
                error => {
                    tracing::warn!(%error, "sigtimedwait failed");
                    return WaitOutcome::Failed;
                }
            }
        }
    }
}

/// A fatal boot error before any service started: says so on the console, then shuts down
/// with the failure action.
pub fn fatal(step: &str, err: &dyn fmt::Display, ctx: &ShutdownContext) -> ! {
    tracing::error!(step, error = %err, "fatal");
    for line in fatal_lines(step, err) {
        console(&line);
    }
    shutdown(ctx.failure_action, ctx, None)
}

/// A fatal error once services run (the event loop broke): says so on the console, then shuts
/// down with the failure action, terminating the services.
pub fn fatal_after_start(
    step: &str,
    err: &dyn fmt::Display,
    ctx: &ShutdownContext,
    sup: &mut Supervisor,
) -> ! {
    tracing::error!(step, error = %err, "fatal");
    let [first, _] = fatal_lines(step, err);
    console(&first);
    shutdown(ctx.failure_action, ctx, Some(sup))
}

/// `sync` then `reboot(2)`; if the kernel refuses (not PID 1, no `CAP_SYS_BOOT`), logs it and
/// sleeps forever: never returns, never exits, never spins.
pub fn reboot_now(action: Action) -> ! {
    sync();
    let error = match reboot(reboot_mode(action)) {
        Ok(never) => match never {},
        Err(error) => error,
    };
    tracing::error!(%action, %error, "reboot(2) failed; sleeping forever");
    console(&format!("rampart-init: {action} failed: {error}"));
    loop {
        // Every handled signal is blocked and the rest cannot kill PID 1: this sleeps.
        pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_plan_table() {
        use Step::*;
        let term = SignalAll(Signal::SIGTERM);
        let kill = SignalAll(Signal::SIGKILL);
        let tail = |action| {
            [
                kill,
                Wait(KILL_GRACE),
                Sync,
                Unmount,
                Sync,
                Announce(action),
            ]
        };
        let cases = [
            (Action::Poweroff, Duration::from_secs(5)),
            (Action::Reboot, Duration::from_millis(1500)),
            (Action::Halt, Duration::from_secs(30)),
        ];
        for (action, timeout) in cases {
            let mut want = vec![term, Wait(timeout)];
            want.extend(tail(action));
            assert_eq!(steps(action, timeout), want);
        }
        // No grace period: straight from TERM to KILL.
        let mut want = vec![term];
        want.extend(tail(Action::Reboot));
        assert_eq!(steps(Action::Reboot, Duration::ZERO), want);
    }

    #[test]
    fn reboot_modes_and_console_lines() {
        let cases = [
            (
                Action::Poweroff,
                RebootMode::RB_POWER_OFF,
                "rampart-init: poweroff",
            ),
            (
                Action::Reboot,
                RebootMode::RB_AUTOBOOT,
                "rampart-init: reboot",
            ),
            (
                Action::Halt,
                RebootMode::RB_HALT_SYSTEM,
                "rampart-init: halt",
            ),
        ];
        for (action, mode, line) in cases {
            assert_eq!(reboot_mode(action), mode);
            assert_eq!(announce_line(action), line);
        }
    }

    #[test]
    fn fatal_console_lines() {
        let [first, second] = fatal_lines("sysctl", &"kernel.kptr_restrict: permission denied");
        assert_eq!(
            first,
            "rampart-init: fatal: sysctl: kernel.kptr_restrict: permission denied"
        );
        assert_eq!(second, "rampart-init: no service started");
    }

    /// Runs `body` in a forked, single-threaded child with the handled signals blocked (as in
    /// PID 1) so `waitpid(-1)` only sees the children it makes; the child's exit code is
    /// `body`'s result.
    fn in_child(body: fn() -> i32) -> i32 {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        // SAFETY: the child only blocks signals, forks and execs helpers and waits; glibc's
        // malloc is fork-safe, and the child leaves with `_exit`.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = if event::block_signals().is_ok() {
                    body()
                } else {
                    100
                };
                // SAFETY: leave without running the test harness's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, code) => code,
                other => panic!("{other:?}"),
            },
        }
    }

    fn sleeper(secs: &str) -> Option<std::process::Child> {
        std::process::Command::new("/bin/sleep")
            .arg(secs)
            .spawn()
            .ok()
    }

    #[test]
    fn wait_returns_as_soon_as_no_child_is_left() {
        let code = in_child(|| {
            let Some(child) = sleeper("0.1") else {
                return 101;
            };
            let start = Instant::now();
            let mut seen = Vec::new();
            let outcome = wait_children(Duration::from_secs(20), None, None, |event| {
                if let WaitEvent::Exited(pid, status) = event {
                    seen.push((pid, status))
                }
            });
            let expected = vec![(Pid::from_raw(child.id() as i32), ExitStatus::Code(0))];
            match (
                outcome,
                start.elapsed() < Duration::from_secs(10),
                seen == expected,
            ) {
                (WaitOutcome::NoChildren, true, true) => 0,
                (WaitOutcome::NoChildren, _, true) => 102,
                (WaitOutcome::NoChildren, _, false) => 103,
                _ => 104,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn wait_serves_the_control_fd() {
        let code = in_child(|| {
            let Ok((read_end, write_end)) = nix::unistd::pipe() else {
                return 101;
            };
            if nix::unistd::write(&write_end, b"x").is_err() {
                return 101;
            }
            let Some(_child) = sleeper("0.2") else {
                return 101;
            };
            let mut control = 0u32;
            let outcome = wait_children(
                Duration::from_secs(20),
                None,
                Some(read_end.as_raw_fd()),
                |event| {
                    if event == WaitEvent::Control {
                        control += 1;
                        // Served: the "request" is consumed.
                        let mut buf = [0u8; 8];
                        let _ = nix::unistd::read(&read_end, &mut buf);
                    }
                },
            );
            match (outcome, control) {
                (WaitOutcome::NoChildren, 1) => 0,
                (WaitOutcome::NoChildren, _) => 102,
                _ => 103,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn wait_stops_at_the_deadline() {
        let code = in_child(|| {
            let Some(mut child) = sleeper("30") else {
                return 101;
            };
            let start = Instant::now();
            let outcome = wait_children(Duration::from_millis(300), None, None, |_| {});
            let waited = start.elapsed();
            let _ = child.kill();
            let _ = child.wait();
            match outcome {
                WaitOutcome::TimedOut
                    if waited >= Duration::from_millis(250) && waited < Duration::from_secs(10) =>
                {
                    0
                }
                WaitOutcome::TimedOut => 102,
                _ => 103,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn fallback_wait_honours_deadline_and_no_children() {
        let code = in_child(|| {
            let Some(mut child) = sleeper("30") else {
                return 101;
            };
            let start = Instant::now();
            let outcome = wait_without_fds(
                Instant::now().checked_add(Duration::from_millis(200)),
                |_, _| {},
            );
            let waited = start.elapsed();
            let _ = child.kill();
            let _ = child.wait();
            if outcome != WaitOutcome::TimedOut || waited < Duration::from_millis(150) {
                return 102;
            }
            let Some(_quick) = sleeper("0.1") else {
                return 101;
            };
            let outcome = wait_without_fds(
                Instant::now().checked_add(Duration::from_secs(20)),
                |_, _| {},
            );
            if outcome != WaitOutcome::NoChildren || start.elapsed() > Duration::from_secs(10) {
                return 103;
            }
            0
        });
        assert_eq!(code, 0);
    }
}
