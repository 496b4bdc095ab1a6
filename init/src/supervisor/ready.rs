//! Readiness conditions: a file that appears, or a unix socket that accepts a connection.
//!
//! The supervisor checks a condition right after the start, whenever inotify reports a change
//! in the directory of the path, and on a bounded retry schedule ([`retry_interval`]: 10 ms
//! doubling to 1 s) until `ready_timeout`. Nothing busy-polls: each retry is the one timerfd
//! of the supervisor.

use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use rampart_config::Readiness;

/// The first retry interval.
pub const FIRST_RETRY: Duration = Duration::from_millis(10);
/// The longest retry interval.
pub const MAX_RETRY: Duration = Duration::from_secs(1);

/// The wait before retry number `attempt` (0-based): 10 ms doubling, capped at 1 s.
pub fn retry_interval(attempt: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX_RETRY)
}

/// The path a condition watches.
pub fn path(r: &Readiness) -> &Path {
    match r {
        Readiness::UnixSocket(p) | Readiness::File(p) => p,
    }
}

/// True when the condition holds now.
pub fn check(r: &Readiness) -> bool {
    match r {
        Readiness::File(p) => p.symlink_metadata().is_ok(),
        Readiness::UnixSocket(p) => socket_accepts(p),
    }
}

/// A non-blocking connect: accepted, or queued on a full backlog (someone listens).
fn socket_accepts(p: &Path) -> bool {
    let Ok(addr) = UnixAddr::new(p) else {
        return false;
    };
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    matches!(
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr),
        Ok(()) | Err(Errno::EAGAIN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn retry_schedule() {
        let got: Vec<u64> = (0..10)
            .map(|a| retry_interval(a).as_millis() as u64)
            .collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(retry_interval(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn file_and_socket_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let file = Readiness::File(dir.path().join("ready"));
        assert!(!check(&file));
        std::fs::write(dir.path().join("ready"), b"").unwrap();
        assert!(check(&file));
        let sock_path = dir.path().join("s.sock");
        let sock = Readiness::UnixSocket(sock_path.clone());
        assert_eq!(path(&sock), sock_path);
        assert!(!check(&sock));
        let listener = UnixListener::bind(&sock_path).unwrap();
        assert!(check(&sock));
        drop(listener);
        // The socket file stays but nobody listens: refused.
        assert!(!check(&sock));
    }
}
