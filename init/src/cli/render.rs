//! The human output of the `rampart` CLI: pure functions from reply payloads to text.
//!
//! Text that came from services (log messages, exit descriptions, audit details) has its
//! control characters escaped, so a service cannot drive the operator's terminal.

use std::fmt::Write as _;

use crate::control::proto::{AuditReply, EntryKind, HostStatus, LogEntry, StatusReply};

use super::when::format_rfc3339_ms;

/// Escapes control characters (other than tab) as `\xNN` and `\u{NNNN}`.
#[must_use]
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\t' || !c.is_control() {
            out.push(c);
        } else if u32::from(c) < 0x100 {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        }
    }
    out
}

/// A size in bytes with binary units: `512B`, `1.5K`, `41.2M`, `512M`, `1.9G`.
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = "K";
    for u in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    // Round first, so 1023.96K does not print as 1024.0K.
    if (value * 10.0).round() / 10.0 < 100.0 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.0}{unit}")
    }
}

/// A duration for a human: `0s`, `45s`, `3m12s`, `2h05m`, `3d04h`.
#[must_use]
pub fn human_duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// CPU time used: `0.42s` under a minute, else like [`human_duration_ms`].
#[must_use]
pub fn human_cpu_usec(usec: u64) -> String {
    if usec < 60_000_000 {
        format!("{:.2}s", usec as f64 / 1_000_000.0)
    } else {
        human_duration_ms(usec / 1000)
    }
}

fn or_dash<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// Lays out rows as columns two spaces apart, with no trailing spaces.
fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<w$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The host line of `rampart status`.
#[must_use]
pub fn host_line(host: &HostStatus) -> String {
    let load = host
        .load
        .as_ref()
        .map_or_else(|| "-".to_owned(), |l| sanitize(&l.join(" ")));
    format!(
        "host {}: up {}, memory {} available of {}, load {}",
        sanitize(&host.hostname),
        human_duration_ms(host.uptime_ms),
        or_dash(host.memory_available_bytes, human_bytes),
        or_dash(host.memory_total_bytes, human_bytes),
        load
    )
}

/// `rampart status`: a table of every service, then the host line.
#[must_use]
pub fn status(reply: &StatusReply) -> String {
    let mut rows = vec![[
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST-EXIT",
        "MEMORY",
        "PIDS",
        "CPU",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect::<Vec<_>>()];
    for s in &reply.services {
        let state = match s.ready {
            Some(false) if s.state == "running" => "running (not ready)".to_owned(),
            _ => sanitize(&s.state),
        };
        rows.push(vec![
            sanitize(&s.name),
            state,
            or_dash(s.pid, |p| p.to_string()),
            or_dash(s.uptime_ms, human_duration_ms),
            s.restarts.to_string(),
            or_dash(s.last_exit.as_deref(), sanitize),
            or_dash(s.memory_bytes, human_bytes),
            or_dash(s.pids, |p| p.to_string()),
            or_dash(s.cpu_usec, human_cpu_usec),
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&host_line(&reply.host));
    out.push('\n');
    out
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Log => "log",
        EntryKind::Event => "event",
        EntryKind::Audit => "audit",
    }
}

/// One log entry: `TIME SOURCE[KIND]: MESSAGE`.
#[must_use]
pub fn entry(e: &LogEntry) -> String {
    format!(
        "{} {}[{}]: {}",
        format_rfc3339_ms(e.time_ms),
        sanitize(&e.source),
        kind_name(e.kind),
        sanitize(&e.message)
    )
}

/// The stderr note for a `Dropped` frame.
#[must_use]
pub fn dropped(count: u64) -> String {
    let s = if count == 1 { "entry" } else { "entries" };
    format!("rampart: the host skipped {count} {s} (this client read too slowly)")
}

/// `rampart audit`: one line per item (result, item, reference, detail), then the summary.
#[must_use]
pub fn audit(reply: &AuditReply) -> String {
    let rows: Vec<Vec<String>> = reply
        .items
        .iter()
        .map(|i| {
            vec![
                sanitize(&i.result.to_uppercase()),
                sanitize(&i.item),
                sanitize(&i.reference),
                sanitize(&i.detail),
            ]
        })
        .collect();
    let mut out = table(&rows);
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        reply.passed, reply.failed, reply.skipped
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{AuditItem, ServiceStatus};
    use crate::control::testing::service_status as service;

    #[test]
    fn sizes() {
        for (b, want) in [
            (0, "0B"),
            (1023, "1023B"),
            (1024, "1.0K"),
            (1536, "1.5K"),
            (102_400, "100K"),
            (1_048_575, "1024K"),
            (1_048_576, "1.0M"),
            (43_200_000, "41.2M"),
            (536_870_912, "512M"),
            (2_040_109_465, "1.9G"),
            (u64::MAX, "16.0E"),
        ] {
            assert_eq!(human_bytes(b), want, "{b}");
        }
    }

    #[test]
    fn durations() {
        for (ms, want) in [
            (0, "0s"),
            (999, "0s"),
            (45_000, "45s"),
            (192_000, "3m12s"),
            (3_600_000, "1h00m"),
            (7_500_000, "2h05m"),
            (86_400_000, "1d00h"),
            (273_600_000, "3d04h"),
        ] {
            assert_eq!(human_duration_ms(ms), want, "{ms}");
        }
        for (us, want) in [
            (0, "0.00s"),
            (420_000, "0.42s"),
            (2_310_000, "2.31s"),
            (65_000_000, "1m05s"),
        ] {
            assert_eq!(human_cpu_usec(us), want, "{us}");
        }
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(sanitize("plain\ttab é"), "plain\ttab é");
        assert_eq!(sanitize("\x1b[31mred\r\n"), "\\x1b[31mred\\x0d\\x0a");
        assert_eq!(sanitize("\u{7f}\u{85}"), "\\x7f\\x85");
    }

    #[test]
    fn status_golden() {
        let reply = StatusReply {
            host: HostStatus {
                hostname: "node-1".into(),
                uptime_ms: 312_000,
                memory_total_bytes: Some(2_147_483_648),
                memory_available_bytes: Some(1_288_490_189),
                load: Some(["0.00".into(), "0.01".into(), "0.05".into()]),
                orphans_reaped: 2,
                log_entries_evicted: 0,
            },
            services: vec![
                ServiceStatus {
                    pid: Some(412),
                    uptime_ms: Some(192_000),
                    restarts: 1,
                    last_exit: Some("killed by SIGKILL".into()),
                    ready: Some(true),
                    memory_bytes: Some(43_200_000),
                    pids: Some(12),
                    cpu_usec: Some(2_310_000),
                    ..service("containerd", "running")
                },
                ServiceStatus {
                    restarts: 3,
                    last_exit: Some("exit status 1".into()),
                    ..service("rampart-logd", "backoff")
                },
                ServiceStatus {
                    pid: Some(7),
                    ready: Some(false),
                    ..service("web", "running")
                },
            ],
        };
        let want = "\
NAME          STATE                PID  UPTIME  RESTARTS  LAST-EXIT          MEMORY  PIDS  CPU
containerd    running              412  3m12s   1         killed by SIGKILL  41.2M   12    2.31s
rampart-logd  backoff              -    -       3         exit status 1      -       -     -
web           running (not ready)  7    -       0         -                  -       -     -
host node-1: up 5m12s, memory 1.2G available of 2.0G, load 0.00 0.01 0.05
";
        assert_eq!(status(&reply), want);

        let empty = StatusReply {
            host: HostStatus {
                hostname: "h".into(),
                uptime_ms: 0,
                memory_total_bytes: None,
                memory_available_bytes: None,
                load: None,
                orphans_reaped: 0,
                log_entries_evicted: 0,
            },
            services: vec![],
        };
        assert_eq!(
            status(&empty),
            "NAME  STATE  PID  UPTIME  RESTARTS  LAST-EXIT  MEMORY  PIDS  CPU\n\
             host h: up 0s, memory - available of -, load -\n"
        );
    }

    #[test]
    fn entries_golden() {
        let e = LogEntry {
            seq: 1,
            time_ms: 1_795_888_800_123,
            source: "containerd".into(),
            kind: EntryKind::Log,
            severity: 6,
            message: "level=info msg=\"serving\"\x1b[0m".into(),
        };
        assert_eq!(
            entry(&e),
            "2026-11-28T18:00:00.123Z containerd[log]: level=info msg=\"serving\"\\x1b[0m"
        );
        let e = LogEntry {
            kind: EntryKind::Event,
            source: "rampart-init".into(),
            message: "containerd exited: exit status 1".into(),
            ..e
        };
        assert_eq!(
            entry(&e),
            "2026-11-28T18:00:00.123Z rampart-init[event]: containerd exited: exit status 1"
        );
        let e = LogEntry {
            kind: EntryKind::Audit,
            ..e
        };
        assert!(entry(&e).contains(" rampart-init[audit]: "));
        assert_eq!(
            dropped(1),
            "rampart: the host skipped 1 entry (this client read too slowly)"
        );
        assert_eq!(
            dropped(12),
            "rampart: the host skipped 12 entries (this client read too slowly)"
        );
    }

    #[test]
    fn audit_golden() {
        let item = |result: &str, item: &str, reference: &str, detail: &str| AuditItem {
            result: result.into(),
            item: item.into(),
            reference: reference.into(),
            detail: detail.into(),
        };
        let reply = AuditReply {
            passed: 1,
            failed: 1,
            skipped: 1,
            items: vec![
                item("pass", "sysctl kernel.kptr_restrict", "KSPP", "2"),
                item(
                    "fail",
                    "root filesystem read-only",
                    "CIS 1.1.1",
                    "mounted rw",
                ),
                item("skip", "apparmor", "CIS 1.6.1", "not enabled in the config"),
            ],
        };
        let want = "\
PASS  sysctl kernel.kptr_restrict  KSPP       2
FAIL  root filesystem read-only    CIS 1.1.1  mounted rw
SKIP  apparmor                     CIS 1.6.1  not enabled in the config
1 passed, 1 failed, 1 skipped
";
        assert_eq!(audit(&reply), want);
    }
}
