//! `rampart-pause`: the process of a pod's sandbox container (the "pause" container of the
//! CRI), which holds the pod's namespaces and does nothing else.
//!
//! `rampart-image` packs the static `rampart-pause` as the OCI image
//! `rampart.local/pause:1` when `[containerd] cri = true`, and the host imports it into
//! containerd's `k8s.io` namespace at boot, so no registry is needed. The process blocks every
//! signal and waits for three: `SIGCHLD` reaps whatever exited (it is PID 1 of a pod that
//! shares its PID namespace), `SIGTERM` and `SIGINT` reap and exit 0. Every other signal stays
//! blocked (and pending) and so has no effect; `SIGKILL` ends it as it ends anything.

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// Errors of the pause process.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// sigprocmask(2) failed.
    #[error("block signals: {source}")]
    Block {
        /// The underlying error.
        source: nix::Error,
    },
    /// sigwait(3) failed.
    #[error("wait for a signal: {source}")]
    Wait {
        /// The underlying error.
        source: nix::Error,
    },
}

/// What the pause process does on a signal it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reap every child that has exited.
    Reap,
    /// Reap, then exit 0.
    Exit,
    /// Nothing.
    Ignore,
}

/// The signals the pause process waits for; all others stay blocked.
pub const WAITED: [Signal; 3] = [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT];

/// What to do on `sig` (pure).
pub fn action(sig: Signal) -> Action {
    match sig {
        Signal::SIGTERM | Signal::SIGINT => Action::Exit,
        Signal::SIGCHLD => Action::Reap,
        _ => Action::Ignore,
    }
}

/// Reaps every exited child without blocking; returns how many.
fn reap() -> usize {
    let mut n = 0;
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
        n += 1;
    }
    n
}

/// Blocks every signal, then waits for [`WAITED`] until `SIGTERM` or `SIGINT`; returns then.
pub fn run() -> Result<(), PauseError> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None)
        .map_err(|source| PauseError::Block { source })?;
    let mut waited = SigSet::empty();
    for s in WAITED {
        waited.add(s);
    }
    loop {
        let sig = waited
            .wait()
            .map_err(|source| PauseError::Wait { source })?;
        match action(sig) {
            Action::Reap => {
                reap();
            }
            Action::Exit => {
                reap();
                return Ok(());
            }
            Action::Ignore => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        // (signal, action)
        let cases = [
            (Signal::SIGTERM, Action::Exit),
            (Signal::SIGINT, Action::Exit),
            (Signal::SIGCHLD, Action::Reap),
            (Signal::SIGHUP, Action::Ignore),
            (Signal::SIGUSR1, Action::Ignore),
            (Signal::SIGWINCH, Action::Ignore),
        ];
        for (sig, want) in cases {
            assert_eq!(action(sig), want, "{sig}");
        }
        for s in WAITED {
            assert_ne!(action(s), Action::Ignore, "{s}");
        }
    }
}
