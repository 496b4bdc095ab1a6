//! The figures in the Prometheus text exposition format 0.0.4: per service from PID 1's
//! `status` reply, per host from `/proc`. Pure functions, except [`read_host`].

use std::fmt::Write as _;
use std::path::Path;

use crate::control::proto::StatusReply;
use crate::procfs::{parse_loadavg, parse_meminfo, parse_uptime, read_small};

/// The states a service can be in, as `status` names them; `rampart_service_state` has one
/// series per state (1 for the current one), so a series never disappears.
pub const STATES: [&str; 9] = [
    "pending", "starting", "running", "backoff", "stopping", "stopped", "exited", "failed",
    "blocked",
];

/// The host's figures from `/proc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFigures {
    /// `MemTotal`, bytes.
    pub memory_total_bytes: Option<u64>,
    /// `MemAvailable`, bytes.
    pub memory_available_bytes: Option<u64>,
    /// The 1, 5 and 15 minute load averages, as `/proc/loadavg` prints them.
    pub load: Option<[String; 3]>,
    /// Seconds since boot, as `/proc/uptime` prints them.
    pub uptime_seconds: Option<String>,
}

/// Reads the host's figures under `proc` (normally `/proc`); a file that cannot be read
/// leaves its figures out.
#[must_use]
pub fn read_host(proc: &Path) -> HostFigures {
    let read = |name: &str| read_small(&proc.join(name));
    let (memory_total_bytes, memory_available_bytes) =
        read("meminfo").map_or((None, None), |t| parse_meminfo(&t));
    HostFigures {
        memory_total_bytes,
        memory_available_bytes,
        load: read("loadavg").and_then(|t| parse_loadavg(&t)),
        uptime_seconds: read("uptime").and_then(|t| parse_uptime(&t)),
    }
}

/// A label value escaped for the text format: `\` as `\\`, `"` as `\"`, newline as `\n`.
#[must_use]
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Microseconds as seconds with six decimals, exact.
#[must_use]
pub fn usec_as_seconds(usec: u64) -> String {
    format!("{}.{:06}", usec / 1_000_000, usec % 1_000_000)
}

/// One metric family: its HELP and TYPE lines and its samples (left out when it has none).
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
    samples: Vec<(String, String)>,
}

impl<'a> Family<'a> {
    fn new(name: &'a str, kind: &'a str, help: &'a str) -> Self {
        Self {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with these labels (names are fixed identifiers, values are escaped).
    fn add(&mut self, labels: &[(&str, &str)], value: String) {
        let labels = if labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        self.samples.push((labels, value));
    }

    fn write(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            let _ = writeln!(out, "{}{labels} {value}", self.name);
        }
    }
}

/// The exposition text: `status` is PID 1's reply (`None` when the control socket did not
/// answer: `rampart_control_up 0` and no service figures).
#[must_use]
pub fn render(status: Option<&StatusReply>, host: &HostFigures) -> String {
    let mut control = Family::new(
        "rampart_control_up",
        "gauge",
        "Whether PID 1 answered the status request of this scrape.",
    );
    control.add(&[], u8::from(status.is_some()).to_string());
    let mut up = Family::new(
        "rampart_service_up",
        "gauge",
        "Whether the service is running, and ready if it has a readiness check (1), or not (0).",
    );
    let mut state = Family::new(
        "rampart_service_state",
        "gauge",
        "The service's state: 1 for the current state, 0 for the others.",
    );
    let mut restarts = Family::new(
        "rampart_service_restarts_total",
        "counter",
        "Times PID 1 restarted the service since boot.",
    );
    let mut cpu = Family::new(
        "rampart_service_cpu_seconds_total",
        "counter",
        "CPU time used by the service's cgroup (cpu.stat usage_usec), in seconds.",
    );
    let mut memory = Family::new(
        "rampart_service_memory_bytes",
        "gauge",
        "Memory used by the service's cgroup (memory.current), in bytes.",
    );
    let mut pids = Family::new(
        "rampart_service_pids",
        "gauge",
        "Tasks in the service's cgroup (pids.current).",
    );
    for s in status.map(|s| s.services.as_slice()).unwrap_or_default() {
        let name = s.name.as_str();
        up.add(
            &[("service", name)],
            u8::from(s.state == "running").to_string(),
        );
        for st in STATES {
            state.add(
                &[("service", name), ("state", st)],
                u8::from(s.state == st).to_string(),
            );
        }
        if !STATES.contains(&s.state.as_str()) {
            state.add(&[("service", name), ("state", &s.state)], "1".into());
        }
        restarts.add(&[("service", name)], s.restarts.to_string());
        if let Some(usec) = s.cpu_usec {
            cpu.add(&[("service", name)], usec_as_seconds(usec));
        }
        if let Some(b) = s.memory_bytes {
            memory.add(&[("service", name)], b.to_string());
        }
        if let Some(p) = s.pids {
            pids.add(&[("service", name)], p.to_string());
        }
    }
    let mut mem_total = Family::new(
        "rampart_host_memory_total_bytes",
        "gauge",
        "The host's memory (MemTotal), in bytes.",
    );
    let mut mem_avail = Family::new(
        "rampart_host_memory_available_bytes",
        "gauge",
        "Memory available for new work without swapping (MemAvailable), in bytes.",
    );
    let mut loads = [
        Family::new("rampart_host_load1", "gauge", "The 1 minute load average."),
        Family::new("rampart_host_load5", "gauge", "The 5 minute load average."),
        Family::new(
            "rampart_host_load15",
            "gauge",
            "The 15 minute load average.",
        ),
    ];
    let mut uptime = Family::new(
        "rampart_host_uptime_seconds",
        "gauge",
        "Seconds since the host booted.",
    );
    if let Some(v) = host.memory_total_bytes {
        mem_total.add(&[], v.to_string());
    }
    if let Some(v) = host.memory_available_bytes {
        mem_avail.add(&[], v.to_string());
    }
    if let Some(l) = &host.load {
        for (family, value) in loads.iter_mut().zip(l.iter()) {
            family.add(&[], value.clone());
        }
    }
    if let Some(u) = &host.uptime_seconds {
        uptime.add(&[], u.clone());
    }
    let mut out = String::new();
    let [load1, load5, load15] = &loads;
    for f in [
        &control, &up, &state, &restarts, &cpu, &memory, &pids, &mem_total, &mem_avail, load1,
        load5, load15, &uptime,
    ] {
        f.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::HostStatus;
    use crate::control::testing::service_status as service;

    fn status() -> StatusReply {
        let mut containerd = service("containerd", "running");
        containerd.pid = Some(120);
        containerd.restarts = 2;
        containerd.memory_bytes = Some(41_943_040);
        containerd.pids = Some(14);
        containerd.cpu_usec = Some(3_250_001);
        let mut odd = service("we\"ird\\na\nme", "failed");
        odd.restarts = 5;
        StatusReply {
            host: HostStatus {
                hostname: "node-1".into(),
                uptime_ms: 1,
                memory_total_bytes: None,
                memory_available_bytes: None,
                load: None,
                orphans_reaped: 0,
                log_entries_evicted: 0,
            },
            services: vec![containerd, odd],
        }
    }

    fn host() -> HostFigures {
        HostFigures {
            memory_total_bytes: Some(1_073_741_824),
            memory_available_bytes: Some(805_306_368),
            load: Some(["0.15".into(), "0.10".into(), "0.05".into()]),
            uptime_seconds: Some("123.45".into()),
        }
    }

    #[test]
    fn golden() {
        let want = r#"# HELP rampart_control_up Whether PID 1 answered the status request of this scrape.
# TYPE rampart_control_up gauge
rampart_control_up 1
# HELP rampart_service_up Whether the service is running, and ready if it has a readiness check (1), or not (0).
# TYPE rampart_service_up gauge
rampart_service_up{service="containerd"} 1
rampart_service_up{service="we\"ird\\na\nme"} 0
# HELP rampart_service_state The service's state: 1 for the current state, 0 for the others.
# TYPE rampart_service_state gauge
rampart_service_state{service="containerd",state="pending"} 0
rampart_service_state{service="containerd",state="starting"} 0
rampart_service_state{service="containerd",state="running"} 1
rampart_service_state{service="containerd",state="backoff"} 0
rampart_service_state{service="containerd",state="stopping"} 0
rampart_service_state{service="containerd",state="stopped"} 0
rampart_service_state{service="containerd",state="exited"} 0
rampart_service_state{service="containerd",state="failed"} 0
rampart_service_state{service="containerd",state="blocked"} 0
rampart_service_state{service="we\"ird\\na\nme",state="pending"} 0
rampart_service_state{service="we\"ird\\na\nme",state="starting"} 0
rampart_service_state{service="we\"ird\\na\nme",state="running"} 0
rampart_service_state{service="we\"ird\\na\nme",state="backoff"} 0
rampart_service_state{service="we\"ird\\na\nme",state="stopping"} 0
rampart_service_state{service="we\"ird\\na\nme",state="stopped"} 0
rampart_service_state{service="we\"ird\\na\nme",state="exited"} 0
rampart_service_state{service="we\"ird\\na\nme",state="failed"} 1
rampart_service_state{service="we\"ird\\na\nme",state="blocked"} 0
# HELP rampart_service_restarts_total Times PID 1 restarted the service since boot.
# TYPE rampart_service_restarts_total counter
rampart_service_restarts_total{service="containerd"} 2
rampart_service_restarts_total{service="we\"ird\\na\nme"} 5
# HELP rampart_service_cpu_seconds_total CPU time used by the service's cgroup (cpu.stat usage_usec), in seconds.
# TYPE rampart_service_cpu_seconds_total counter
rampart_service_cpu_seconds_total{service="containerd"} 3.250001
# HELP rampart_service_memory_bytes Memory used by the service's cgroup (memory.current), in bytes.
# TYPE rampart_service_memory_bytes gauge
rampart_service_memory_bytes{service="containerd"} 41943040
# HELP rampart_service_pids Tasks in the service's cgroup (pids.current).
# TYPE rampart_service_pids gauge
rampart_service_pids{service="containerd"} 14
# HELP rampart_host_memory_total_bytes The host's memory (MemTotal), in bytes.
# TYPE rampart_host_memory_total_bytes gauge
rampart_host_memory_total_bytes 1073741824
# HELP rampart_host_memory_available_bytes Memory available for new work without swapping (MemAvailable), in bytes.
# TYPE rampart_host_memory_available_bytes gauge
rampart_host_memory_available_bytes 805306368
# HELP rampart_host_load1 The 1 minute load average.
# TYPE rampart_host_load1 gauge
rampart_host_load1 0.15
# HELP rampart_host_load5 The 5 minute load average.
# TYPE rampart_host_load5 gauge
rampart_host_load5 0.10
# HELP rampart_host_load15 The 15 minute load average.
# TYPE rampart_host_load15 gauge
rampart_host_load15 0.05
# HELP rampart_host_uptime_seconds Seconds since the host booted.
# TYPE rampart_host_uptime_seconds gauge
rampart_host_uptime_seconds 123.45
"#;
        assert_eq!(render(Some(&status()), &host()), want);
    }

    #[test]
    fn without_control_only_host_figures() {
        let text = render(None, &host());
        assert!(text.starts_with("# HELP rampart_control_up"));
        assert!(text.contains("\nrampart_control_up 0\n"));
        assert!(!text.contains("rampart_service_"));
        assert!(text.contains("\nrampart_host_uptime_seconds 123.45\n"));
        // Nothing known at all: the control gauge alone.
        let text = render(None, &HostFigures::default());
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn unknown_state_gets_its_own_series() {
        let s = StatusReply {
            services: vec![service("a", "paused")],
            ..status()
        };
        let text = render(Some(&s), &HostFigures::default());
        assert!(text.contains("rampart_service_state{service=\"a\",state=\"paused\"} 1\n"));
        assert!(text.contains("rampart_service_state{service=\"a\",state=\"running\"} 0\n"));
    }

    #[test]
    fn label_escaping() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("a\"b", "a\\\"b"),
            ("a\\b", "a\\\\b"),
            ("a\nb", "a\\nb"),
            ("é}", "é}"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape_label(raw), *want);
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(usec_as_seconds(0), "0.000000");
        assert_eq!(usec_as_seconds(12_000_345), "12.000345");
    }

    #[test]
    fn reads_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal: 2048 kB\nMemAvailable: 1024 kB\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("loadavg"), "1.00 2.00 3.00 1/1 1\n").unwrap();
        let h = read_host(dir.path());
        assert_eq!(h.memory_total_bytes, Some(2_097_152));
        assert_eq!(h.memory_available_bytes, Some(1_048_576));
        assert_eq!(h.load.as_ref().map(|l| l[2].as_str()), Some("3.00"));
        assert_eq!(h.uptime_seconds, None);
        // The real /proc parses.
        let real = read_host(Path::new("/proc"));
        assert!(real.memory_total_bytes.is_some() && real.uptime_seconds.is_some());
    }
}
