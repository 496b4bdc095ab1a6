//! The endpoint end to end on loopback: a fake control server on a unix socket answering
//! `status`, a temp proc tree, and real HTTP requests over TCP.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use super::*;
use crate::control::proto::{encode_reply, HostStatus, ServiceStatus};
use crate::control::testing::read_request;

fn status() -> StatusReply {
    StatusReply {
        host: HostStatus {
            hostname: "node-1".into(),
            uptime_ms: 5000,
            memory_total_bytes: None,
            memory_available_bytes: None,
            load: None,
            orphans_reaped: 0,
            log_entries_evicted: 0,
        },
        services: vec![ServiceStatus {
            name: "containerd".into(),
            state: "running".into(),
            pid: Some(99),
            uptime_ms: Some(4000),
            restarts: 1,
            last_exit: None,
            ready: Some(true),
            memory_bytes: Some(30 << 20),
            pids: Some(12),
            cpu_usec: Some(1_500_000),
        }],
    }
}

/// Answers every `status` request with [`status`].
fn fake_control(listener: UnixListener) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let req = read_request(&mut s).unwrap_or(Request::Audit {});
            if req == (Request::Status {}) {
                let _ = s.write_all(&encode_reply(&Reply::Status(status())).unwrap());
            }
        }
    });
}

fn request(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_metrics_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    fake_control(UnixListener::bind(&sock).unwrap());
    let proc = dir.path().join("proc");
    std::fs::create_dir(&proc).unwrap();
    std::fs::write(
        proc.join("meminfo"),
        "MemTotal: 1000 kB\nMemAvailable: 500 kB\n",
    )
    .unwrap();
    std::fs::write(proc.join("loadavg"), "0.50 0.25 0.10 2/99 300\n").unwrap();
    std::fs::write(proc.join("uptime"), "42.00 80.00\n").unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let plan = Plan {
        listen: addr,
        allow: Vec::new(),
        socket: sock.clone(),
        proc: proc.clone(),
    };
    std::thread::spawn(move || serve(&listener, &plan));

    let r = request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
    for line in [
        "rampart_control_up 1",
        "rampart_service_up{service=\"containerd\"} 1",
        "rampart_service_state{service=\"containerd\",state=\"running\"} 1",
        "rampart_service_restarts_total{service=\"containerd\"} 1",
        "rampart_service_cpu_seconds_total{service=\"containerd\"} 1.500000",
        "rampart_service_memory_bytes{service=\"containerd\"} 31457280",
        "rampart_service_pids{service=\"containerd\"} 12",
        "rampart_host_memory_total_bytes 1024000",
        "rampart_host_memory_available_bytes 512000",
        "rampart_host_load1 0.50",
        "rampart_host_load5 0.25",
        "rampart_host_load15 0.10",
        "rampart_host_uptime_seconds 42.00",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line} in\n{body}");
    }

    let r = request(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    let r = request(addr, b"GET /other HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    let r = request(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    let r = request(addr, b"\x00\x01garbage\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
    let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let r = request(addr, big.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

    // A client that sends nothing holds one slot for at most the read timeout; the others
    // are still served meanwhile.
    let idle = TcpStream::connect(addr).unwrap();
    let r = request(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
    drop(idle);

    // Without PID 1, host figures only.
    std::fs::remove_file(&sock).unwrap();
    let r = request(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(r.contains("\nrampart_control_up 0\n"), "{r}");
    assert!(!r.contains("rampart_service_up"));
    assert!(r.contains("\nrampart_host_load1 0.50\n"));
}

#[test]
fn allow_list() {
    let v4 = |s: &str| IpAddr::V4(s.parse::<Ipv4Addr>().unwrap());
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
    let net = |s: &str| Cidr::try_from(s).unwrap();
    let cases: &[(&str, IpAddr, bool)] = &[
        ("10.0.0.0/8", v4("10.1.2.3"), true),
        ("10.0.0.0/8", v4("11.0.0.1"), false),
        ("10.0.2.0/23", v4("10.0.3.255"), true),
        ("10.0.2.0/23", v4("10.0.4.0"), false),
        ("192.168.1.7", v4("192.168.1.7"), true),
        ("192.168.1.7", v4("192.168.1.8"), false),
        ("0.0.0.0/0", v4("1.2.3.4"), true),
        ("10.0.0.0/8", v6("::ffff:10.9.9.9"), true),
        ("10.0.0.0/8", v6("fd00::1"), false),
        ("fd00::/8", v6("fd12::1"), true),
        ("fd00::/16", v6("fd01::1"), false),
        ("fd00::/8", v4("10.0.0.1"), false),
    ];
    for (n, addr, want) in cases {
        assert_eq!(cidr_contains(net(n), *addr), *want, "{n} {addr}");
    }
    assert!(allowed(&[], v4("8.8.8.8")));
    assert!(!allowed(&[net("10.0.0.0/8")], v4("8.8.8.8")));
    assert!(allowed(
        &[net("10.0.0.0/8"), net("8.8.8.0/24")],
        v4("8.8.8.8")
    ));
}

#[test]
fn arguments_and_plan() {
    let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let o = parse_args(&args(&["--config", "c", "--proc", "/p"])).unwrap();
    assert_eq!(o.proc, PathBuf::from("/p"));
    assert_eq!(o.socket, PathBuf::from("/run/rampart/control.sock"));
    assert!(parse_args(&args(&["--proc", "/p"])).is_err());
    assert!(parse_args(&args(&["--config"])).is_err());

    let text = "[host]\nhostname = \"h\"\n\n[metrics]\nenabled = true\naddress = \"10.0.2.15\"\nport = 9200\nallow = [\"10.0.2.0/24\"]\n\n[[service]]\nname = \"demo\"\nexec = [\"/bin/demo\"]\n";
    let cfg = match rampart_config::parse(text, Path::new("/etc/rampart/host.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let p = plan(&cfg, Path::new("/s"), Path::new("/proc")).unwrap();
    assert_eq!(p.listen, "10.0.2.15:9200".parse().unwrap());
    assert_eq!(p.allow, vec![Cidr::try_from("10.0.2.0/24").unwrap()]);
    let off = rampart_config::parse(
        "[host]\nhostname = \"h\"\n\n[[service]]\nname = \"demo\"\nexec = [\"/bin/demo\"]\n",
        Path::new("/x"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(plan(&off, Path::new("/s"), Path::new("/proc")).is_none());
}
