//! The figures of a `status` reply: each service's cgroup usage (`memory.current`,
//! `pids.current`, `cpu.stat` `usage_usec`) and the host's (host name, `CLOCK_BOOTTIME`
//! uptime, `MemTotal` / `MemAvailable` from `/proc/meminfo`, `/proc/loadavg`).
//!
//! The parsers are pure; the readers take their directories as parameters (a temp tree in
//! tests). Every figure is optional: a file that is missing or does not parse leaves it out
//! rather than failing the reply.

use std::path::Path;

use super::proto::{HostStatus, ServiceStatus};
use crate::procfs::{parse_loadavg, parse_meminfo, read_small};
use crate::supervisor::ServiceSnapshot;

/// `usage_usec` of a cgroup's `cpu.stat`.
#[must_use]
pub fn parse_cpu_usage(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("usage_usec"), Some(v)) => v.parse().ok(),
            _ => None,
        }
    })
}

/// A file holding one unsigned number (`memory.current`, `pids.current`).
fn read_number(path: &Path) -> Option<u64> {
    read_small(path)?.trim().parse().ok()
}

/// The cgroup figures of the cgroup at `dir`: memory bytes, pids, CPU microseconds.
#[must_use]
pub fn cgroup_usage(dir: &Path) -> (Option<u64>, Option<u64>, Option<u64>) {
    (
        read_number(&dir.join("memory.current")),
        read_number(&dir.join("pids.current")),
        read_small(&dir.join("cpu.stat"))
            .as_deref()
            .and_then(parse_cpu_usage),
    )
}

/// A service's status: its snapshot plus its cgroup's figures.
#[must_use]
pub fn service_status(snapshot: &ServiceSnapshot) -> ServiceStatus {
    let (memory_bytes, pids, cpu_usec) = cgroup_usage(&snapshot.cgroup);
    ServiceStatus {
        name: snapshot.name.clone(),
        state: snapshot.state.to_owned(),
        pid: snapshot.pid,
        uptime_ms: snapshot.uptime_ms,
        restarts: snapshot.restarts,
        last_exit: snapshot.last_exit.clone(),
        ready: snapshot.ready,
        memory_bytes,
        pids,
        cpu_usec,
    }
}

/// Milliseconds since boot (`CLOCK_BOOTTIME`), 0 if the clock cannot be read.
#[must_use]
pub fn boot_uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
        let millis = u64::try_from(t.tv_nsec() / 1_000_000).unwrap_or(0);
        secs.saturating_mul(1000).saturating_add(millis)
    })
}

/// The host's figures, reading `meminfo` and `loadavg` under `proc`.
#[must_use]
pub fn host_status(proc: &Path, orphans_reaped: u64, log_entries_evicted: u64) -> HostStatus {
    let (memory_total_bytes, memory_available_bytes) =
        read_small(&proc.join("meminfo")).map_or((None, None), |t| parse_meminfo(&t));
    HostStatus {
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        uptime_ms: boot_uptime_ms(),
        memory_total_bytes,
        memory_available_bytes,
        load: read_small(&proc.join("loadavg"))
            .as_deref()
            .and_then(parse_loadavg),
        orphans_reaped,
        log_entries_evicted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn cpu_stat() {
        let text = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(parse_cpu_usage(text), Some(123_456));
        assert_eq!(parse_cpu_usage("user_usec 1\n"), None);
    }

    #[test]
    fn service_figures_come_from_its_cgroup_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.path().join("pids.current"), "3\n").unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 77\n").unwrap();
        let snap = ServiceSnapshot {
            name: "web".into(),
            state: "running",
            pid: Some(9),
            uptime_ms: Some(5),
            restarts: 2,
            last_exit: Some("exit code 1".into()),
            ready: Some(true),
            cgroup: dir.path().to_path_buf(),
        };
        let s = service_status(&snap);
        assert_eq!(
            (s.memory_bytes, s.pids, s.cpu_usec),
            (Some(4096), Some(3), Some(77))
        );
        assert_eq!(
            (s.name.as_str(), s.state.as_str(), s.restarts),
            ("web", "running", 2)
        );
        let missing = ServiceSnapshot {
            cgroup: PathBuf::from("/nonexistent/cg"),
            ..snap
        };
        let s = service_status(&missing);
        assert_eq!((s.memory_bytes, s.pids, s.cpu_usec), (None, None, None));
    }

    #[test]
    fn host_figures_from_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal: 100 kB\nMemAvailable: 50 kB\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("loadavg"), "1.00 2.00 3.00 1/1 1\n").unwrap();
        let h = host_status(dir.path(), 4, 5);
        assert_eq!(h.memory_total_bytes, Some(102_400));
        assert_eq!(h.memory_available_bytes, Some(51_200));
        assert_eq!(h.load, Some(["1.00".into(), "2.00".into(), "3.00".into()]));
        assert_eq!((h.orphans_reaped, h.log_entries_evicted), (4, 5));
        assert!(h.uptime_ms > 0);
        assert!(!h.hostname.is_empty());
    }
}
