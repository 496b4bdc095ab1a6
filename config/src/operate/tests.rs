//! `[control]`, `[logs]`, `[metrics]`: defaults, every error path, the synthesized services
//! and the firewall rules, table-driven.

use std::path::Path;

use super::*;
use crate::{parse, Problem};

fn ok(text: &str) -> HostConfig {
    match parse(text, Path::new("/cfg/host.toml")) {
        Ok(c) => c,
        Err(e) => panic!("unexpected error:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, Path::new("/cfg/host.toml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

fn port(n: u16) -> Port {
    Port::try_from(i64::from(n)).unwrap()
}

const CONTAINERD: &str =
    "[[service]]\nname = \"containerd\"\nexec = [\"/usr/bin/containerd\"]\nrestart = \"always\"\n";

#[test]
fn defaults() {
    let c = ok("");
    assert_eq!(c.control, Control::default());
    assert!(!c.control.host_channel);
    assert_eq!(c.control.max_clients, 8);
    assert_eq!(c.control.timeout, Duration::from_secs(10));
    assert_eq!(c.logs, Logs::default());
    assert_eq!(c.logs.buffer.bytes(), 1 << 20);
    assert_eq!(c.logs.queue, 10_000);
    assert!(c.logs.forward.is_empty());
    assert_eq!(c.metrics, Metrics::default());
    assert!(!c.metrics.enabled);
    assert_eq!(c.metrics.address.to_string(), "0.0.0.0");
    assert_eq!(c.metrics.port.get(), 9100);
    assert!(c.metrics.allow.is_empty());
    assert!(c.containerd.events);
    // Nothing is synthesized, nothing is opened.
    assert!(operate_services(&c).is_empty());
    assert!(c.firewall.rules.is_empty());
    // Empty sections are the defaults too.
    let c = ok("[control]\n[logs]\n[metrics]\n");
    assert_eq!(c.control, Control::default());
    assert_eq!(c.logs, Logs::default());
    assert_eq!(c.metrics, Metrics::default());
}

#[test]
fn full_sections() {
    let c = ok(r#"
[control]
host_channel = true
max_clients = 64
timeout = "1h"

[logs]
buffer = "64K"
queue = 100
[[logs.forward]]
protocol = "syslog-udp"
address = "10.0.2.2"
port = 5514
[[logs.forward]]
protocol = "syslog-tcp"
address = "fd00::2"
port = 6514
[[logs.forward]]
protocol = "json-tcp"
address = "10.0.2.2"
port = 5515

[metrics]
enabled = true
address = "10.0.2.15"
port = 80
allow = ["10.0.2.0/24", "192.0.2.7"]
"#);
    assert_eq!(
        c.control,
        Control {
            host_channel: true,
            max_clients: 64,
            timeout: Duration::from_secs(3600),
        }
    );
    assert_eq!(c.logs.buffer.bytes(), 64 << 10);
    assert_eq!(c.logs.queue, 100);
    let f: Vec<String> = c
        .logs
        .forward
        .iter()
        .map(|c| format!("{} {} {}", c.protocol, c.address, c.port))
        .collect();
    assert_eq!(
        f,
        [
            "syslog-udp 10.0.2.2 5514",
            "syslog-tcp fd00::2 6514",
            "json-tcp 10.0.2.2 5515"
        ]
    );
    assert!(c.metrics.enabled);
    assert_eq!(c.metrics.address.to_string(), "10.0.2.15");
    assert_eq!(c.metrics.port, port(80));
    assert_eq!(
        c.metrics
            .allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.2.0/24", "192.0.2.7"]
    );
}

#[test]
fn durations_sizes_and_bounds() {
    // (text, expected control timeout in ms, buffer bytes, queue, max_clients)
    let cases: &[(&str, u64, u64, u32, u32)] = &[
        ("[control]\ntimeout = 1\n", 1000, 1 << 20, 10_000, 8),
        (
            "[control]\ntimeout = \"1000ms\"\n",
            1000,
            1 << 20,
            10_000,
            8,
        ),
        (
            "[control]\ntimeout = \"60m\"\nmax_clients = 1\n",
            3_600_000,
            1 << 20,
            10_000,
            1,
        ),
        (
            "[logs]\nbuffer = 65536\nqueue = 1000000\n",
            10_000,
            65536,
            1_000_000,
            8,
        ),
        ("[logs]\nbuffer = \"64M\"\n", 10_000, 64 << 20, 10_000, 8),
    ];
    for (text, ms, buffer, queue, clients) in cases {
        let c = ok(text);
        assert_eq!(c.control.timeout, Duration::from_millis(*ms), "{text}");
        assert_eq!(c.logs.buffer.bytes(), *buffer, "{text}");
        assert_eq!(c.logs.queue, *queue, "{text}");
        assert_eq!(c.control.max_clients, *clients, "{text}");
    }
}

#[test]
fn protocols() {
    for p in LogProtocol::ALL {
        assert_eq!(LogProtocol::try_from(p.to_string().as_str()), Ok(p));
    }
    assert_eq!(LogProtocol::SyslogUdp.transport(), Protocol::Udp);
    assert_eq!(LogProtocol::SyslogTcp.transport(), Protocol::Tcp);
    assert_eq!(LogProtocol::JsonTcp.transport(), Protocol::Tcp);
    assert!(LogProtocol::try_from("syslog").is_err());
}

#[test]
fn errors() {
    let collector = |body: &str| format!("[[logs.forward]]\n{body}\n");
    let good = "protocol = \"syslog-udp\"\naddress = \"10.0.2.2\"\nport = 514";
    let nine: String = (0..9)
        .map(|i| {
            collector(&format!(
                "protocol = \"syslog-udp\"\naddress = \"10.0.2.{}\"\nport = 514",
                i + 2
            ))
        })
        .collect();
    // (text, key, fragment of the message)
    let cases: Vec<(String, &str, &str)> = vec![
        ("[control]\nmax_clients = 0\n".into(), "control.max_clients", "from 1 to 64"),
        ("[control]\nmax_clients = 65\n".into(), "control.max_clients", "from 1 to 64"),
        ("[control]\nmax_clients = -1\n".into(), "control.max_clients", "from 1 to 64"),
        ("[control]\ntimeout = \"500ms\"\n".into(), "control.timeout", "from 1s to 1h"),
        ("[control]\ntimeout = \"2h\"\n".into(), "control.timeout", "from 1s to 1h"),
        ("[control]\ntimeout = 0\n".into(), "control.timeout", "from 1s to 1h"),
        ("[control]\ntimeout = \"10x\"\n".into(), "control.timeout", "unknown unit"),
        ("[control]\ntimeout = -5\n".into(), "control.timeout", "not a duration"),
        ("[control]\nhost_channel = \"yes\"\n".into(), "control.host_channel", "invalid type"),
        ("[control]\nsocket = \"/x\"\n".into(), "control.socket", "unknown field"),
        ("[logs]\nbuffer = \"32K\"\n".into(), "logs.buffer", "outside 64K to 64M"),
        ("[logs]\nbuffer = \"65M\"\n".into(), "logs.buffer", "outside 64K to 64M"),
        ("[logs]\nbuffer = \"1T\"\n".into(), "logs.buffer", "unknown unit"),
        ("[logs]\nbuffer = 12\n".into(), "logs.buffer", "less than one page"),
        ("[logs]\nbuffer = -1\n".into(), "logs.buffer", "not a size"),
        ("[logs]\nqueue = 99\n".into(), "logs.queue", "from 100 to 1000000"),
        ("[logs]\nqueue = 1000001\n".into(), "logs.queue", "from 100 to 1000000"),
        ("[logs]\nlevel = \"info\"\n".into(), "logs.level", "unknown field"),
        (
            collector("protocol = \"gelf\"\naddress = \"10.0.2.2\"\nport = 514"),
            "logs.forward[0].protocol",
            "is not one of",
        ),
        (
            collector("protocol = \"syslog-udp\"\naddress = \"logs.example.com\"\nport = 514"),
            "logs.forward[0].address",
            "no host names",
        ),
        (
            collector("protocol = \"syslog-udp\"\naddress = \"10.0.2.0/24\"\nport = 514"),
            "logs.forward[0].address",
            "not an IPv4 or IPv6 address",
        ),
        (
            collector("protocol = \"syslog-udp\"\naddress = \"0.0.0.0\"\nport = 514"),
            "logs.forward[0].address",
            "not a unicast address",
        ),
        (
            collector("protocol = \"syslog-udp\"\naddress = \"255.255.255.255\"\nport = 514"),
            "logs.forward[0].address",
            "not a unicast address",
        ),
        (
            collector("protocol = \"syslog-tcp\"\naddress = \"ff02::1\"\nport = 514"),
            "logs.forward[0].address",
            "not a unicast address",
        ),
        (
            collector("protocol = \"syslog-udp\"\naddress = \"10.0.2.2\"\nport = 0"),
            "logs.forward[0].port",
            "not a port",
        ),
        (
            collector("protocol = \"syslog-udp\"\naddress = \"10.0.2.2\"\nport = 65536"),
            "logs.forward[0].port",
            "not a port",
        ),
        (
            collector("protocol = \"syslog-udp\"\naddress = \"10.0.2.2\""),
            "logs.forward[0]",
            "missing field `port`",
        ),
        (
            collector(&format!("{good}\ntls = true")),
            "logs.forward[0].tls",
            "unknown field",
        ),
        (
            collector(good) + &collector(good),
            "logs.forward[1]",
            "listed twice",
        ),
        (nine, "logs.forward[8]", "at most 8 collectors"),
        ("[metrics]\naddress = \"localhost\"\n".into(), "metrics.address", "not an IPv4 or IPv6"),
        ("[metrics]\naddress = \"224.0.0.1\"\n".into(), "metrics.address", "not an address a server can listen on"),
        ("[metrics]\nport = 0\n".into(), "metrics.port", "not a port"),
        ("[metrics]\nport = 70000\n".into(), "metrics.port", "not a port"),
        ("[metrics]\nallow = [\"10.0.0.1/8\"]\n".into(), "metrics.allow[0]", "bits set past"),
        (
            "[metrics]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n".into(),
            "metrics.allow[1]",
            "listed twice",
        ),
        (
            "[metrics]\nallow = [\"fd00::/8\"]\n".into(),
            "metrics.allow[0]",
            "listens on 0.0.0.0",
        ),
        (
            "[metrics]\naddress = \"fd00::1\"\nallow = [\"10.0.0.0/8\"]\n".into(),
            "metrics.allow[0]",
            "IPv4 network",
        ),
        ("[metrics]\nenabled = 1\n".into(), "metrics.enabled", "invalid type"),
        ("[metrics]\npath = \"/metrics\"\n".into(), "metrics.path", "unknown field"),
        (
            "[[service]]\nname = \"rampart-logd\"\nexec = [\"/x\"]\n".into(),
            "service[0].name",
            "reserved for rampart's own services",
        ),
        (
            "[[service]]\nname = \"a\"\nexec = [\"/x\"]\n[[service]]\nname = \"rampart-x\"\nexec = [\"/x\"]\n".into(),
            "service[1].name",
            "starts with `rampart-`",
        ),
    ];
    for (text, key, msg) in cases {
        let ps = problems(&text);
        assert!(
            ps.iter()
                .any(|p| p.key == key && p.message.contains(msg) && p.line > 0),
            "{text}\nwant {key}: {msg}\ngot {ps:?}"
        );
    }
}

#[test]
fn line_numbers() {
    let ps = problems("[logs]\nqueue = 100\n\n[[logs.forward]]\nprotocol = \"syslog-udp\"\naddress = \"10.0.2.2\"\nport = 0\n");
    let p = ps.iter().find(|p| p.key == "logs.forward[0].port").unwrap();
    assert_eq!((p.line, p.column), (7, 8));
    let ps = problems("[metrics]\nenabled = true\nallow = [\"10.0.0.0/8\", \"x\"]\n");
    let p = ps.iter().find(|p| p.key == "metrics.allow[1]").unwrap();
    assert_eq!((p.line, p.column), (3, 24));
}

#[test]
fn a_dual_stack_listener_takes_both_families() {
    let c =
        ok("[metrics]\nenabled = true\naddress = \"::\"\nallow = [\"10.0.0.0/8\", \"fd00::/8\"]\n");
    assert_eq!(c.metrics.allow.len(), 2);
    // No destination match for an unspecified listen address.
    let r = c.firewall.rules.last().unwrap();
    assert!(r.destination.is_empty());
    assert_eq!(r.source.len(), 2);
}

fn names(services: &[Service]) -> Vec<&str> {
    services.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn services_exactly_when_configured() {
    let fwd = "[[logs.forward]]\nprotocol = \"syslog-udp\"\naddress = \"10.0.2.2\"\nport = 514\n";
    // (text, expected service names)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (String::new(), vec![]),
        ("[control]\nhost_channel = false\n".into(), vec![]),
        (
            "[control]\nhost_channel = true\n".into(),
            vec!["rampart-relay"],
        ),
        ("[logs]\nqueue = 100\n".into(), vec![]),
        (fwd.into(), vec!["rampart-logd"]),
        ("[metrics]\nport = 9200\n".into(), vec![]),
        (
            "[metrics]\nenabled = true\n".into(),
            vec!["rampart-metrics"],
        ),
        // No containerd service: no events, whatever [containerd] says.
        ("[containerd]\nevents = true\n".into(), vec![]),
        (CONTAINERD.into(), vec!["rampart-events"]),
        (
            format!("[containerd]\n{CONTAINERD}"),
            vec!["rampart-events"],
        ),
        (
            format!("[containerd]\nevents = false\n{CONTAINERD}"),
            vec![],
        ),
        (
            format!("[control]\nhost_channel = true\n[metrics]\nenabled = true\n{fwd}{CONTAINERD}"),
            vec![
                "rampart-relay",
                "rampart-logd",
                "rampart-metrics",
                "rampart-events",
            ],
        ),
    ];
    for (text, want) in cases {
        let c = ok(&text);
        let got = operate_services(&c);
        assert_eq!(names(&got), want, "{text}");
        let bins: Vec<PathBuf> = got.iter().map(|s| PathBuf::from(&s.exec[0])).collect();
        assert_eq!(service_binaries(&c), bins, "{text}");
    }
}

/// (name, exec, memory_max MiB, pids_max, after)
type Expected = (&'static str, Vec<&'static str>, u64, u64, Vec<&'static str>);

#[test]
fn services_are_least_privilege() {
    let c = ok(&format!(
        "[control]\nhost_channel = true\n[metrics]\nenabled = true\n\
         [[logs.forward]]\nprotocol = \"json-tcp\"\naddress = \"10.0.2.2\"\nport = 5000\n\
         [container_policy]\naudit_log = \"/var/log/audit.jsonl\"\n{CONTAINERD}"
    ));
    let s = operate_services(&c);
    let want: [Expected; 4] = [
        (
            "rampart-relay",
            vec![
                "/sbin/rampart-relay",
                "--port-name",
                "org.rampart.control",
                "--socket",
                "/run/rampart/control.sock",
            ],
            16,
            8,
            vec![],
        ),
        (
            "rampart-logd",
            vec!["/sbin/rampart-logd", "--config", "/etc/rampart/host.toml"],
            // 32 MiB + 10000 lines x 1 collector x 1 KiB.
            42,
            16,
            vec![],
        ),
        (
            "rampart-metrics",
            vec![
                "/sbin/rampart-metrics",
                "--config",
                "/etc/rampart/host.toml",
            ],
            32,
            16,
            vec![],
        ),
        (
            "rampart-events",
            vec![
                "/sbin/rampart-events",
                "--ctr",
                "/usr/bin/ctr",
                "--audit-log",
                "/var/log/audit.jsonl",
            ],
            128,
            64,
            vec!["containerd"],
        ),
    ];
    assert_eq!(s.len(), want.len());
    for (svc, (name, exec, mem, pids, after)) in s.iter().zip(want) {
        assert_eq!(svc.name.as_str(), name);
        assert_eq!(svc.exec, exec, "{name}");
        assert!(svc.capabilities.is_empty(), "{name}");
        assert!(svc.no_new_privs, "{name}");
        assert_eq!(svc.namespaces, [Namespace::Mount], "{name}");
        assert!(svc.read_only_root, "{name}");
        assert!(svc.writable_paths.is_empty(), "{name}");
        assert_eq!(svc.seccomp, Some(SeccompProfile::Default), "{name}");
        assert_eq!(svc.restart, Restart::Always, "{name}");
        assert_eq!(svc.user, None, "{name}");
        assert_eq!(svc.limits.memory_max, Some(Size::from_mib(mem)), "{name}");
        assert_eq!(svc.limits.pids_max, Some(pids), "{name}");
        let a: Vec<&str> = svc.after.iter().map(ServiceName::as_str).collect();
        assert_eq!(a, after, "{name}");
    }
    // The default audit log.
    let c = ok(CONTAINERD);
    assert_eq!(
        operate_services(&c)[0].exec.last().map(String::as_str),
        Some("/var/log/rampart/audit.log")
    );
}

#[test]
fn metrics_binds_a_low_port_with_one_capability() {
    // (port, capabilities)
    let cases: &[(u16, &[&str])] = &[
        (9100, &[]),
        (1024, &[]),
        (1023, &["CAP_NET_BIND_SERVICE"]),
        (80, &["CAP_NET_BIND_SERVICE"]),
    ];
    for (p, caps) in cases {
        let c = ok(&format!("[metrics]\nenabled = true\nport = {p}\n"));
        let s = operate_services(&c);
        let got: Vec<&str> = s[0].capabilities.iter().map(|c| c.name()).collect();
        assert_eq!(got, *caps, "port {p}");
    }
}

#[test]
fn logd_memory_follows_the_queues() {
    // (queue, collectors, MiB)
    let cases: &[(u32, usize, u64)] = &[
        (100, 1, 33),
        (10_000, 1, 42),
        (10_000, 8, 111),
        (1_000_000, 8, 32 + 7813),
    ];
    for (queue, n, mib) in cases {
        let collector = Collector {
            protocol: LogProtocol::SyslogUdp,
            address: "10.0.2.2".parse().unwrap(),
            port: port(514),
        };
        let logs = Logs {
            queue: *queue,
            forward: vec![collector; *n],
            ..Logs::default()
        };
        assert_eq!(
            logd_memory_max(&logs),
            Size::from_mib(*mib),
            "{queue} x {n}"
        );
    }
}

/// The rules as `direction protocol source -> destination:ports comment`.
fn rules(c: &HostConfig) -> Vec<String> {
    let list = |v: &[Cidr]| {
        if v.is_empty() {
            "any".to_owned()
        } else {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    c.firewall
        .rules
        .iter()
        .map(|r| {
            format!(
                "{} {} {} -> {}:{} {} ({})",
                r.direction,
                r.protocol,
                list(&r.source),
                list(&r.destination),
                r.ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                r.action,
                r.comment.as_deref().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn firewall_opens_only_what_is_configured() {
    let collectors = "\
[[logs.forward]]\nprotocol = \"syslog-udp\"\naddress = \"10.0.2.2\"\nport = 5514\n\
[[logs.forward]]\nprotocol = \"syslog-tcp\"\naddress = \"fd00::2\"\nport = 6514\n\
[[logs.forward]]\nprotocol = \"json-tcp\"\naddress = \"fd00::2\"\nport = 6514\n";
    // (text, expected rules)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (String::new(), vec![]),
        ("[control]\nhost_channel = true\n".into(), vec![]),
        ("[metrics]\nenabled = false\nport = 80\n".into(), vec![]),
        (
            collectors.into(),
            vec![
                "out udp any -> 10.0.2.2:5514 accept (log collector syslog-udp 10.0.2.2 port 5514)",
                // json-tcp to the same address and port shares the syslog-tcp rule.
                "out tcp any -> fd00::2:6514 accept (log collector syslog-tcp fd00::2 port 6514)",
            ],
        ),
        (
            "[metrics]\nenabled = true\n".into(),
            vec!["in tcp any -> any:9100 accept (rampart-metrics port 9100)"],
        ),
        (
            "[metrics]\nenabled = true\naddress = \"10.0.2.15\"\nport = 9200\nallow = [\"10.0.2.0/24\"]\n".into(),
            vec!["in tcp 10.0.2.0/24 -> 10.0.2.15:9200 accept (rampart-metrics port 9200)"],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(rules(&ok(&text)), want, "{text}");
    }
}

#[test]
fn firewall_rules_follow_user_rules_and_network() {
    let c = ok(r#"
[[firewall.rule]]
direction = "in"
protocol = "tcp"
ports = [22]
action = "accept"

[network]
dns = ["10.0.2.3"]

[[logs.forward]]
protocol = "syslog-udp"
address = "10.0.2.2"
port = 514

[metrics]
enabled = true
"#);
    let r = rules(&c);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(r[0].starts_with("in tcp any -> any:22"));
    assert!(r[1].starts_with("out udp any -> 10.0.2.2:514"));
    assert!(r[2].starts_with("in tcp any -> any:9100"));
    assert_eq!(c.firewall.dns.len(), 1);
    // Every rule keeps within the firewall's own limits.
    for rule in &c.firewall.rules {
        let comment = rule.comment.as_deref().unwrap_or("");
        assert!(comment.len() <= crate::firewall::MAX_COMMENT_LEN);
        assert!(!comment.contains('"') && !comment.contains('\\'));
        assert_eq!(rule.matches().len(), 1);
    }
}
