//! What the control socket asks of the supervisor: a snapshot of every service, and the
//! `stop`, `start` and `restart` operations.
//!
//! Which operation a state allows is the pure [`allowed`] table. A stop sends `SIGTERM` to the
//! service's main process and marks it [`ServiceState::Stopping`]; the supervisor's one timer
//! (armed for the earliest deadline, as for restarts) sends `SIGKILL` once the stop timeout
//! passed, to the main process and, when the kernel has `cgroup.kill`, to the rest of its
//! cgroup. A service that ends while stopping is [`ServiceState::Stopped`]: its restart policy
//! and `on_exit` do not apply until a `start` or `restart` request. A restart resets the
//! backoff.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::backoff::Backoff;
use super::lifecycle::{self, Lifecycle};
use super::{ReadyState, ServiceState, Supervisor};

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// No service has that name.
    #[error("no service named {service:?}")]
    UnknownService {
        /// The name asked for.
        service: String,
    },
    /// The service's state does not allow the operation.
    #[error("cannot {op} {service}: it is {state}")]
    InvalidState {
        /// The operation.
        op: &'static str,
        /// The service.
        service: String,
        /// Its state ([`state_name`]).
        state: &'static str,
    },
    /// The host is shutting down.
    #[error("the host is shutting down")]
    ShuttingDown,
    /// Starting it failed (its restart policy then applies).
    #[error("start {service}: {reason}")]
    StartFailed {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
}

/// One service as the control socket reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// Its name.
    pub name: String,
    /// [`state_name`].
    pub state: &'static str,
    /// Its main process, while it runs.
    pub pid: Option<i32>,
    /// Since its last start, while it runs.
    pub uptime_ms: Option<u64>,
    /// Starts after the first.
    pub restarts: u32,
    /// How its last run ended.
    pub last_exit: Option<String>,
    /// Whether its readiness condition holds, when it has one.
    pub ready: Option<bool>,
    /// Its cgroup directory.
    pub cgroup: PathBuf,
}

/// The state's name on the wire: `pending`, `starting` (running, not ready yet), `running`,
/// `backoff`, `stopping`, `stopped`, `exited` (status 0), `failed` (any other end) or
/// `blocked` (a dependency failed).
#[must_use]
pub fn state_name(state: ServiceState, ready: ReadyState) -> &'static str {
    match state {
        ServiceState::Pending => "pending",
        ServiceState::Running { .. } if matches!(ready, ReadyState::Waiting { .. }) => "starting",
        ServiceState::Running { .. } => "running",
        ServiceState::Restarting { .. } => "backoff",
        ServiceState::Stopping { .. } => "stopping",
        ServiceState::Stopped => "stopped",
        ServiceState::Exited { status } if status.success() => "exited",
        ServiceState::Exited { .. } => "failed",
        ServiceState::Blocked => "blocked",
    }
}

/// A control operation on one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stop it and keep it stopped.
    Stop,
    /// Start it.
    Start,
    /// Stop it if running, then start it.
    Restart,
}

impl Op {
    /// `stop`, `start`, `restart`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Op::Stop => "stop",
            Op::Start => "start",
            Op::Restart => "restart",
        }
    }
}

/// What an allowed operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `SIGTERM` the running process; start again afterwards when `restart`.
    Terminate {
        /// Start again once it ended.
        restart: bool,
    },
    /// It is stopping already: only whether it starts again changes.
    Redirect {
        /// Start again once it ended.
        restart: bool,
    },
    /// Not running: start it now (fresh backoff).
    StartNow,
    /// Not running and must not start: mark it stopped.
    MarkStopped,
}

/// The pure table: what `op` does to a service in `state`, or `None` when the state does not
/// allow it. A pending service (waiting for its dependencies) can only be stopped; a running
/// or stopping one cannot be started; one that is not running cannot be stopped, except a
/// pending one or one waiting to restart.
#[must_use]
pub fn allowed(op: Op, state: ServiceState) -> Option<Effect> {
    use ServiceState as S;
    match (op, state) {
        (Op::Stop, S::Running { .. }) => Some(Effect::Terminate { restart: false }),
        (Op::Restart, S::Running { .. }) => Some(Effect::Terminate { restart: true }),
        (Op::Stop, S::Stopping { .. }) => Some(Effect::Redirect { restart: false }),
        (Op::Restart, S::Stopping { .. }) => Some(Effect::Redirect { restart: true }),
        (Op::Stop, S::Pending | S::Restarting { .. }) => Some(Effect::MarkStopped),
        (
            Op::Start | Op::Restart,
            S::Restarting { .. } | S::Stopped | S::Exited { .. } | S::Blocked,
        ) => Some(Effect::StartNow),
        (Op::Stop, S::Stopped | S::Exited { .. } | S::Blocked)
        | (Op::Start, S::Running { .. } | S::Stopping { .. })
        | (Op::Start | Op::Restart, S::Pending) => None,
    }
}

impl Supervisor {
    /// Every service, in start order, at `now`.
    pub fn snapshot(&self, now: Instant) -> Vec<ServiceSnapshot> {
        self.services
            .iter()
            .map(|t| {
                let pid = match t.state {
                    ServiceState::Running { pid } | ServiceState::Stopping { pid, .. } => {
                        Some(pid.as_raw())
                    }
                    _ => None,
                };
                let uptime_ms = pid.and(t.started).map(|s| {
                    u64::try_from(now.saturating_duration_since(s).as_millis()).unwrap_or(u64::MAX)
                });
                ServiceSnapshot {
                    name: t.plan.name.clone(),
                    state: state_name(t.state, t.ready),
                    pid,
                    uptime_ms,
                    restarts: t.restarts,
                    last_exit: t.last_exit.map(|s| s.to_string()),
                    ready: t.plan.ready.as_ref().map(|_| t.ready == ReadyState::Ready),
                    cgroup: t.plan.cgroup.clone(),
                }
            })
            .collect()
    }

    /// Stops the service: `SIGTERM` now, `SIGKILL` after the stop timeout; it stays stopped.
    /// Returns what was done, for a human.
    pub fn stop_service(&mut self, name: &str) -> Result<String, OpError> {
        self.operate(Op::Stop, name, Instant::now())
    }

    /// Starts a service that is not running, now, with a fresh backoff.
    pub fn start_service(&mut self, name: &str) -> Result<String, OpError> {
        self.operate(Op::Start, name, Instant::now())
    }

    /// Restarts the service: stops it if it runs, then starts it with a fresh backoff.
    pub fn restart_service(&mut self, name: &str) -> Result<String, OpError> {
        self.operate(Op::Restart, name, Instant::now())
    }

    fn operate(&mut self, op: Op, name: &str, now: Instant) -> Result<String, OpError> {
        if self.stopping {
            return Err(OpError::ShuttingDown);
        }
        let Some(index) = self.services.iter().position(|t| t.plan.name == name) else {
            return Err(OpError::UnknownService {
                service: name.to_owned(),
            });
        };
        let stop_timeout = self.stop_timeout;
        let Some(t) = self.services.get_mut(index) else {
            return Err(OpError::UnknownService {
                service: name.to_owned(),
            });
        };
        let Some(effect) = allowed(op, t.state) else {
            return Err(OpError::InvalidState {
                op: op.name(),
                service: name.to_owned(),
                state: state_name(t.state, t.ready),
            });
        };
        let done = match (effect, t.state) {
            (Effect::Terminate { restart }, ServiceState::Running { pid }) => {
                if let Err(error) = kill(pid, Signal::SIGTERM) {
                    // It exited already (not reaped yet): the exit is handled as a stop.
                    tracing::debug!(service = %name, %error, "SIGTERM");
                }
                t.state = ServiceState::Stopping {
                    pid,
                    kill_at: now.checked_add(stop_timeout).unwrap_or(now),
                    killed: false,
                    restart,
                };
                lifecycle::record(
                    name,
                    &Lifecycle::StopRequested {
                        pid: pid.as_raw(),
                        restart,
                    },
                );
                tracing::info!(service = %name, pid = pid.as_raw(), restart, "stopping service by request");
                let verb = if restart { "restarting" } else { "stopping" };
                format!("{verb} {name} (SIGTERM to pid {pid})")
            }
            (
                Effect::Redirect { restart },
                ServiceState::Stopping {
                    pid,
                    kill_at,
                    killed,
                    ..
                },
            ) => {
                t.state = ServiceState::Stopping {
                    pid,
                    kill_at,
                    killed,
                    restart,
                };
                let then = if restart {
                    "starts again"
                } else {
                    "stays stopped"
                };
                format!("{name} is stopping already; it {then} once it ended")
            }
            (Effect::MarkStopped, _) => {
                t.state = ServiceState::Stopped;
                tracing::info!(service = %name, "service stopped by request before it ran");
                format!("{name} stopped (it was not running)")
            }
            (Effect::StartNow, _) => {
                t.backoff = Backoff::new(t.plan.backoff);
                t.state = ServiceState::Restarting {
                    at: now,
                    crash_loop: false,
                };
                tracing::info!(service = %name, op = op.name(), "starting service by request");
                let decision = self.settle(now);
                self.deferred = self.deferred.or(decision);
                return match self.services.get(index).map(|t| t.state) {
                    Some(ServiceState::Running { pid }) => {
                        Ok(format!("started {name} (pid {pid})"))
                    }
                    other => Err(OpError::StartFailed {
                        service: name.to_owned(),
                        reason: match other {
                            Some(state) => format!(
                                "the start failed and it is now {} (see `rampart logs {name}`)",
                                state_name(state, ReadyState::NotRunning)
                            ),
                            None => "it is gone".to_owned(),
                        },
                    }),
                };
            }
            // `allowed` gives Terminate and Redirect only for these states.
            (Effect::Terminate { .. } | Effect::Redirect { .. }, _) => {
                return Err(OpError::InvalidState {
                    op: op.name(),
                    service: name.to_owned(),
                    state: state_name(t.state, t.ready),
                })
            }
        };
        self.rearm(now);
        Ok(done)
    }

    /// The stop timeout of a service passed: `SIGKILL` to its main process and, through
    /// `cgroup.kill` when the kernel has it, to everything else in its cgroup.
    pub(super) fn kill_stopping(&self, name: &str, pid: Pid, cgroup: &Path) {
        lifecycle::record(
            name,
            &Lifecycle::Killed {
                pid: pid.as_raw(),
                after: self.stop_timeout,
            },
        );
        tracing::warn!(service = %name, pid = pid.as_raw(), timeout = ?self.stop_timeout, "service did not stop in time: SIGKILL");
        if let Err(error) = kill(pid, Signal::SIGKILL) {
            tracing::debug!(service = %name, %error, "SIGKILL");
        }
        let file = cgroup.join("cgroup.kill");
        // Only an existing cgroup.kill (cgroupfs, Linux 5.14+): never create a file.
        if file.exists() {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"));
            if let Err(error) = written {
                tracing::debug!(service = %name, path = %file.display(), %error, "cgroup.kill");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ExitStatus;
    use super::*;

    #[test]
    fn state_names() {
        let now = Instant::now();
        let pid = Pid::from_raw(5);
        let waiting = ReadyState::Waiting {
            deadline: now,
            next_check: now,
            attempt: 0,
        };
        let cases = [
            (ServiceState::Pending, ReadyState::NotRunning, "pending"),
            (ServiceState::Running { pid }, waiting, "starting"),
            (ServiceState::Running { pid }, ReadyState::Ready, "running"),
            (
                ServiceState::Running { pid },
                ReadyState::TimedOut,
                "running",
            ),
            (
                ServiceState::Restarting {
                    at: now,
                    crash_loop: true,
                },
                ReadyState::NotRunning,
                "backoff",
            ),
            (
                ServiceState::Stopping {
                    pid,
                    kill_at: now,
                    killed: false,
                    restart: false,
                },
                ReadyState::Ready,
                "stopping",
            ),
            (ServiceState::Stopped, ReadyState::Ready, "stopped"),
            (
                ServiceState::Exited {
                    status: ExitStatus::Code(0),
                },
                ReadyState::Ready,
                "exited",
            ),
            (
                ServiceState::Exited {
                    status: ExitStatus::Signal(9),
                },
                ReadyState::Ready,
                "failed",
            ),
            (ServiceState::Blocked, ReadyState::NotRunning, "blocked"),
        ];
        for (state, ready, want) in cases {
            assert_eq!(state_name(state, ready), want, "{state:?}");
        }
    }

    #[test]
    fn operation_table() {
        let now = Instant::now();
        let pid = Pid::from_raw(5);
        let running = ServiceState::Running { pid };
        let stopping = ServiceState::Stopping {
            pid,
            kill_at: now,
            killed: false,
            restart: false,
        };
        let backoff = ServiceState::Restarting {
            at: now,
            crash_loop: false,
        };
        let exited = ServiceState::Exited {
            status: ExitStatus::Code(1),
        };
        let term = |restart| Some(Effect::Terminate { restart });
        let redirect = |restart| Some(Effect::Redirect { restart });
        let start = Some(Effect::StartNow);
        let mark = Some(Effect::MarkStopped);
        // (state, stop, start, restart)
        let cases = [
            (ServiceState::Pending, mark, None, None),
            (running, term(false), None, term(true)),
            (stopping, redirect(false), None, redirect(true)),
            (backoff, mark, start, start),
            (ServiceState::Stopped, None, start, start),
            (exited, None, start, start),
            (ServiceState::Blocked, None, start, start),
        ];
        for (state, stop, start_, restart) in cases {
            assert_eq!(allowed(Op::Stop, state), stop, "stop {state:?}");
            assert_eq!(allowed(Op::Start, state), start_, "start {state:?}");
            assert_eq!(allowed(Op::Restart, state), restart, "restart {state:?}");
        }
    }
}
