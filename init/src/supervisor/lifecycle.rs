//! Service lifecycle events: what the supervisor records in PID 1's log ring (as entries of
//! kind `event`, source = the service's name) when a service starts, exits, is scheduled for a
//! restart, enters a crash loop, is stopped by request, is killed after its stop timeout,
//! becomes ready or fails to, or is blocked by a dependency.
//!
//! The message is `<event> key=value ...` ([`Lifecycle::message`], pure): the first word names
//! the event, so a machine can dispatch on it. `docs/control.md` lists them.

use std::time::Duration;

use crate::control::proto::EntryKind;
use crate::control::ring;

use super::ExitStatus;

/// One lifecycle event of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// It started as this pid.
    Started {
        /// Its pid.
        pid: i32,
    },
    /// Its main process ended on its own.
    Exited {
        /// How.
        status: ExitStatus,
        /// How long it ran.
        ran_for: Duration,
    },
    /// It starts again after this delay.
    RestartScheduled {
        /// The backoff delay.
        delay: Duration,
    },
    /// It restarts too often: restarts happen at the backoff cap until a stable run.
    CrashLoop {
        /// Restarts within the crash-loop window.
        restarts: usize,
        /// The delay (the cap).
        delay: Duration,
    },
    /// It could not be started.
    StartFailed {
        /// Why.
        error: String,
    },
    /// A control request asked it to stop: `SIGTERM` sent.
    StopRequested {
        /// The pid signalled.
        pid: i32,
        /// It will start again once stopped (a restart request).
        restart: bool,
    },
    /// It ended after a stop request (and stays stopped unless restarting).
    Stopped {
        /// How.
        status: ExitStatus,
    },
    /// It did not stop within the timeout: `SIGKILL` sent.
    Killed {
        /// The pid killed.
        pid: i32,
        /// The timeout that passed.
        after: Duration,
    },
    /// Its readiness condition holds (or it has none).
    Ready,
    /// Its readiness condition did not hold within its `ready_timeout`.
    ReadyTimeout {
        /// The timeout.
        timeout: Duration,
    },
    /// Not started: a dependency failed.
    Blocked {
        /// The dependency.
        dependency: String,
        /// Why it failed.
        why: &'static str,
    },
}

/// Seconds with up to three decimals: `1.5s`, `0.02s`, `30s`.
fn secs(d: Duration) -> String {
    let millis = d.as_millis();
    let whole = millis / 1000;
    let frac = millis % 1000;
    if frac == 0 {
        format!("{whole}s")
    } else {
        let text = format!("{whole}.{frac:03}");
        format!("{}s", text.trim_end_matches('0'))
    }
}

impl Lifecycle {
    /// The event's name, the first word of its message.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Lifecycle::Started { .. } => "started",
            Lifecycle::Exited { .. } => "exited",
            Lifecycle::RestartScheduled { .. } => "restart-scheduled",
            Lifecycle::CrashLoop { .. } => "crash-loop",
            Lifecycle::StartFailed { .. } => "start-failed",
            Lifecycle::StopRequested { .. } => "stop-requested",
            Lifecycle::Stopped { .. } => "stopped",
            Lifecycle::Killed { .. } => "killed",
            Lifecycle::Ready => "ready",
            Lifecycle::ReadyTimeout { .. } => "ready-timeout",
            Lifecycle::Blocked { .. } => "blocked",
        }
    }

    /// Syslog severity: errors 3, warnings 4, notices 5, the rest informational 6.
    #[must_use]
    pub fn severity(&self) -> u8 {
        match self {
            Lifecycle::CrashLoop { .. }
            | Lifecycle::StartFailed { .. }
            | Lifecycle::ReadyTimeout { .. }
            | Lifecycle::Blocked { .. } => 3,
            Lifecycle::Killed { .. } => 4,
            Lifecycle::Exited { status, .. } if !status.success() => 4,
            Lifecycle::Exited { .. }
            | Lifecycle::StopRequested { .. }
            | Lifecycle::Stopped { .. } => 5,
            Lifecycle::Started { .. } | Lifecycle::RestartScheduled { .. } | Lifecycle::Ready => 6,
        }
    }

    /// `<event> key=value ...`.
    #[must_use]
    pub fn message(&self) -> String {
        let name = self.name();
        match self {
            Lifecycle::Started { pid } => format!("{name} pid={pid}"),
            Lifecycle::Exited { status, ran_for } => {
                format!("{name} status=\"{status}\" ran_for={}", secs(*ran_for))
            }
            Lifecycle::RestartScheduled { delay } => format!("{name} delay={}", secs(*delay)),
            Lifecycle::CrashLoop { restarts, delay } => {
                format!("{name} restarts={restarts} delay={}", secs(*delay))
            }
            Lifecycle::StartFailed { error } => format!("{name} error=\"{error}\""),
            Lifecycle::StopRequested { pid, restart } => {
                format!("{name} pid={pid} signal=SIGTERM restart={restart}")
            }
            Lifecycle::Stopped { status } => format!("{name} status=\"{status}\""),
            Lifecycle::Killed { pid, after } => {
                format!("{name} pid={pid} signal=SIGKILL after={}", secs(*after))
            }
            Lifecycle::Ready => name.to_owned(),
            Lifecycle::ReadyTimeout { timeout } => format!("{name} timeout={}", secs(*timeout)),
            Lifecycle::Blocked { dependency, why } => {
                format!("{name} dependency={dependency} why=\"{why}\"")
            }
        }
    }
}

/// Records `event` of `service` in PID 1's log ring.
pub fn record(service: &str, event: &Lifecycle) {
    ring::record(
        service,
        EntryKind::Event,
        event.severity(),
        &event.message(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_severities() {
        let ms = Duration::from_millis;
        let cases = [
            (Lifecycle::Started { pid: 42 }, "started pid=42", 6),
            (
                Lifecycle::Exited {
                    status: ExitStatus::Code(3),
                    ran_for: ms(1500),
                },
                "exited status=\"exit code 3\" ran_for=1.5s",
                4,
            ),
            (
                Lifecycle::Exited {
                    status: ExitStatus::Code(0),
                    ran_for: ms(20),
                },
                "exited status=\"exit code 0\" ran_for=0.02s",
                5,
            ),
            (
                Lifecycle::RestartScheduled { delay: ms(2000) },
                "restart-scheduled delay=2s",
                6,
            ),
            (
                Lifecycle::CrashLoop {
                    restarts: 5,
                    delay: ms(60_000),
                },
                "crash-loop restarts=5 delay=60s",
                3,
            ),
            (
                Lifecycle::StartFailed {
                    error: "fork: EAGAIN".into(),
                },
                "start-failed error=\"fork: EAGAIN\"",
                3,
            ),
            (
                Lifecycle::StopRequested {
                    pid: 7,
                    restart: true,
                },
                "stop-requested pid=7 signal=SIGTERM restart=true",
                5,
            ),
            (
                Lifecycle::Stopped {
                    status: ExitStatus::Signal(15),
                },
                "stopped status=\"killed by SIGTERM\"",
                5,
            ),
            (
                Lifecycle::Killed {
                    pid: 7,
                    after: ms(10_000),
                },
                "killed pid=7 signal=SIGKILL after=10s",
                4,
            ),
            (Lifecycle::Ready, "ready", 6),
            (
                Lifecycle::ReadyTimeout { timeout: ms(300) },
                "ready-timeout timeout=0.3s",
                3,
            ),
            (
                Lifecycle::Blocked {
                    dependency: "db".into(),
                    why: "exited before it was ready",
                },
                "blocked dependency=db why=\"exited before it was ready\"",
                3,
            ),
        ];
        for (event, message, severity) in cases {
            assert_eq!(event.message(), message);
            assert!(message.starts_with(event.name()));
            assert_eq!(event.severity(), severity, "{message}");
        }
    }
}
