//! The forwarder end to end on loopback: a fake control server on a unix socket serving canned
//! entries, and UDP and TCP collectors listening on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rampart_config::operate::LogProtocol;

use super::*;
use crate::control::proto::{
    decode_request, encode_reply, EntryKind, FrameReader, LogEntry, Reply, Request, MAX_REQUEST,
};

const T0: i64 = 1_795_888_800_000;

fn entry(seq: u64) -> LogEntry {
    let kind = match seq % 3 {
        0 => EntryKind::Audit,
        1 => EntryKind::Log,
        _ => EntryKind::Event,
    };
    LogEntry {
        seq,
        time_ms: T0 + i64::try_from(seq).unwrap() * 1000,
        source: if seq == 1 {
            "rampart-init".into()
        } else {
            "containerd".into()
        },
        kind,
        severity: 6,
        message: format!("line {seq} é"),
    }
}

fn read_request(stream: &mut UnixStream) -> Request {
    let mut r = FrameReader::new(MAX_REQUEST);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(f) = r.next_frame().unwrap() {
            return decode_request(&f).unwrap();
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "client closed before its request");
        r.push(&buf[..n]);
    }
}

/// Serves one connection per script item: reads the request, writes the replies, then closes
/// (or, for the last item when `hold` is set, keeps the connection open until `release`).
fn fake_control(
    listener: UnixListener,
    scripts: Vec<Vec<Reply>>,
    hold: Arc<AtomicBool>,
) -> JoinHandle<Vec<Request>> {
    std::thread::spawn(move || {
        let mut requests = Vec::new();
        let count = scripts.len();
        for (i, replies) in scripts.into_iter().enumerate() {
            let (mut s, _) = listener.accept().unwrap();
            requests.push(read_request(&mut s));
            for r in &replies {
                s.write_all(&encode_reply(r).unwrap()).unwrap();
            }
            if i + 1 == count {
                while hold.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        requests
    })
}

/// Reads RFC 6587 octet-counted frames from a stream.
fn read_octet_counted(stream: TcpStream, want: usize) -> Vec<String> {
    let mut r = BufReader::new(stream);
    let mut out = Vec::new();
    while out.len() < want {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).unwrap() == 0 {
            break;
        }
        len.pop();
        let n: usize = std::str::from_utf8(&len).unwrap().parse().unwrap();
        let mut msg = vec![0u8; n];
        r.read_exact(&mut msg).unwrap();
        out.push(String::from_utf8(msg).unwrap());
    }
    out
}

#[test]
fn forwards_to_udp_and_tcp_collectors_and_resumes_after_the_last_seq() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let listener = UnixListener::bind(&sock).unwrap();

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let syslog_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let json_tcp = TcpListener::bind("127.0.0.1:0").unwrap();

    let plan = Plan {
        socket: sock.clone(),
        hostname: "node-1".into(),
        queue: 100,
        targets: vec![
            Target {
                protocol: LogProtocol::SyslogUdp,
                address: udp.local_addr().unwrap(),
            },
            Target {
                protocol: LogProtocol::SyslogTcp,
                address: syslog_tcp.local_addr().unwrap(),
            },
            Target {
                protocol: LogProtocol::JsonTcp,
                address: json_tcp.local_addr().unwrap(),
            },
        ],
    };

    // First connection: entries 1 to 3, then the server goes away. Second: it repeats 3 (the
    // forwarder asked from entry 3's time) and goes on with 4 and 5, and a `dropped` notice.
    let hold = Arc::new(AtomicBool::new(true));
    let server = fake_control(
        listener,
        vec![
            (1..=3).map(|s| Reply::Entry(entry(s))).collect(),
            vec![
                Reply::Entry(entry(3)),
                Reply::Entry(entry(4)),
                Reply::Dropped { count: 7 },
                Reply::Entry(entry(5)),
            ],
        ],
        Arc::clone(&hold),
    );

    let forwarder = Forwarder::start(&plan).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let follower = {
        let stop = Arc::clone(&stop);
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut stats = ControlStats::default();
            follow(
                &sock,
                &forwarder,
                &stop,
                Duration::from_millis(100),
                &mut stats,
            );
            tx.send(()).unwrap();
            (stats, forwarder.shutdown(Duration::from_secs(5)))
        })
    };

    let mut datagrams = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..5 {
        let n = udp.recv(&mut buf).unwrap();
        datagrams.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    let (s, _) = syslog_tcp.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let framed = read_octet_counted(s, 5);
    let (s, _) = json_tcp.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut lines = BufReader::new(s).lines();
    let json: Vec<String> = (0..5).map(|_| lines.next().unwrap().unwrap()).collect();

    stop.store(true, Ordering::Relaxed);
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    hold.store(false, Ordering::Relaxed);
    let (stats, senders) = follower.join().unwrap();
    let requests = server.join().unwrap();

    let want: Vec<String> = (1..=5)
        .map(|s| render::syslog(&entry(s), "node-1"))
        .collect();
    assert_eq!(datagrams, want);
    assert_eq!(framed, want);
    assert_eq!(
        want[0],
        "<30>1 2026-11-28T18:00:01.000Z node-1 rampart-init - log [rampart@32473 seq=\"1\" kind=\"log\"] line 1 é"
    );
    assert!(want[2].starts_with("<86>1 2026-11-28T18:00:03.000Z node-1 containerd - audit "));
    let seqs: Vec<u64> = json
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        json[1],
        "{\"time\":\"2026-11-28T18:00:02.000Z\",\"host\":\"node-1\",\"source\":\"containerd\",\"kind\":\"event\",\"severity\":6,\"seq\":2,\"message\":\"line 2 é\"}"
    );

    // The resume request starts at the last entry's time.
    assert_eq!(
        requests,
        vec![
            Request::Logs {
                service: None,
                since_ms: None,
                tail: None,
                follow: true
            },
            Request::Logs {
                service: None,
                since_ms: Some(T0 + 3000),
                tail: None,
                follow: true
            },
        ]
    );
    assert_eq!(stats.entries, 5);
    assert_eq!(stats.repeated, 1);
    assert_eq!(stats.server_dropped, 7);
    assert_eq!(stats.connects, 2);
    for s in senders {
        assert_eq!((s.sent, s.dropped, s.failed, s.queued), (5, 0, 0, 0), "{s}");
    }
}

#[test]
fn a_tcp_collector_that_comes_late_gets_the_queued_lines_and_a_full_queue_counts_drops() {
    // Reserve a port, then close it: the first connects are refused.
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let target = Target {
        protocol: LogProtocol::SyslogTcp,
        address: addr,
    };
    let c = sender::Collector::start(target, "h", 3).unwrap();
    // The sender takes line 1, fails to connect and pauses 1 s; meanwhile 2, 3 and 4 fill
    // the queue and 5 is dropped.
    c.push(Arc::new(entry(1)));
    std::thread::sleep(Duration::from_millis(300));
    for s in 2..=5 {
        c.push(Arc::new(entry(s)));
    }
    let st = c.stats();
    assert_eq!((st.dropped, st.queued, st.sent), (1, 3, 0), "{st}");
    let listener = TcpListener::bind(addr).unwrap();
    let (s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let got = read_octet_counted(s, 4);
    let want: Vec<String> = (1..=4).map(|s| render::syslog(&entry(s), "h")).collect();
    assert_eq!(got, want);
    c.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = c.stats();
    assert_eq!(
        (st.sent, st.dropped, st.failed, st.connects),
        (4, 1, 0, 1),
        "{st}"
    );
}

#[test]
fn cursor_skips_what_was_seen() {
    let mut c = Cursor::default();
    assert_eq!(
        c.request(),
        Request::Logs {
            service: None,
            since_ms: None,
            tail: None,
            follow: true
        }
    );
    assert!(c.accept(&entry(4)));
    assert!(!c.accept(&entry(4)));
    assert!(!c.accept(&entry(2)));
    assert!(c.accept(&entry(5)));
    assert_eq!(c.last_seq(), Some(5));
    assert!(matches!(
        c.request(),
        Request::Logs { since_ms: Some(t), follow: true, .. } if t == T0 + 5000
    ));
}

#[test]
fn arguments() {
    let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let o = parse_args(&args(&["--config", "/etc/rampart/host.toml"])).unwrap();
    assert_eq!(o.config, PathBuf::from("/etc/rampart/host.toml"));
    assert_eq!(o.socket, PathBuf::from("/run/rampart/control.sock"));
    let o = parse_args(&args(&["--socket", "/tmp/s", "--config", "c"])).unwrap();
    assert_eq!(o.socket, PathBuf::from("/tmp/s"));
    for bad in [&[][..], &["--config"][..], &["--bogus", "x"][..]] {
        assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn plan_from_config() {
    let text = r#"
[host]
hostname = "node-1"

[logs]
queue = 500

[[logs.forward]]
protocol = "syslog-udp"
address = "10.0.2.2"
port = 514

[[logs.forward]]
protocol = "json-tcp"
address = "fd00::2"
port = 5170

[[service]]
name = "demo"
exec = ["/bin/demo"]
"#;
    let cfg = match rampart_config::parse(text, Path::new("/etc/rampart/host.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let p = plan(&cfg, Path::new("/run/rampart/control.sock"));
    assert_eq!(p.hostname, "node-1");
    assert_eq!(p.queue, 500);
    let targets: Vec<String> = p.targets.iter().map(ToString::to_string).collect();
    assert_eq!(
        targets,
        vec!["10.0.2.2:514 (syslog-udp)", "[fd00::2]:5170 (json-tcp)"]
    );
}

/// One benchmark run: the figures of [`throughput`].
struct BenchRun {
    ingest: Duration,
    delivered: u64,
    deliver_time: Duration,
    fast_dropped: u64,
    stalled_sent: u64,
    stalled_dropped: u64,
}

fn bench_run(n: u64, queue: usize) -> BenchRun {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // The whole stream, encoded before the clock starts.
    let mut stream = Vec::new();
    for seq in 1..=n {
        let mut e = entry(seq);
        e.message = format!(
            "time=\"2026-11-28T18:00:00.000000000Z\" level=info msg=\"a typical line of a service, about a hundred bytes\" n={seq}"
        );
        stream.extend_from_slice(&encode_reply(&Reply::Entry(e)).unwrap());
    }
    let hold = Arc::new(AtomicBool::new(true));
    let server = {
        let hold = Arc::clone(&hold);
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = read_request(&mut s);
            s.write_all(&stream).unwrap();
            while hold.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let fast = TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let plan = Plan {
        socket: sock.clone(),
        hostname: "node-1".into(),
        queue,
        targets: vec![
            Target {
                protocol: LogProtocol::SyslogTcp,
                address: fast.local_addr().unwrap(),
            },
            Target {
                protocol: LogProtocol::SyslogTcp,
                address: stalled.local_addr().unwrap(),
            },
        ],
    };
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let (s, _) = fast.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut r = BufReader::with_capacity(1 << 20, s);
        let (mut len, mut msg) = (Vec::new(), Vec::new());
        let mut got = 0u64;
        let mut last = Instant::now();
        while got < n {
            len.clear();
            match r.read_until(b' ', &mut len) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            len.pop();
            let k: usize = std::str::from_utf8(&len).unwrap().parse().unwrap();
            msg.resize(k, 0);
            if r.read_exact(&mut msg).is_err() {
                break;
            }
            got += 1;
            last = Instant::now();
        }
        (got, last)
    });
    let stalled_conn = std::thread::spawn(move || {
        let (s, _) = stalled.accept().unwrap();
        std::thread::sleep(Duration::from_secs(30));
        drop(s);
    });
    let forwarder = Forwarder::start(&plan).unwrap();
    let stop = AtomicBool::new(false);
    let mut cursor = Cursor::default();
    let mut cstats = ControlStats::default();
    let mut count = 0u64;
    let mut ingest = Duration::ZERO;
    let end = follow_once(
        &sock,
        &mut cursor,
        &mut cstats,
        &stop,
        Duration::from_millis(100),
        |e| {
            forwarder.push(e);
            count += 1;
            if count == n {
                ingest = start.elapsed();
                stop.store(true, Ordering::Relaxed);
            }
        },
    );
    assert!(matches!(end, StreamEnd::Stopped), "{end}");
    let (delivered, last) = reader.join().unwrap();
    let stats = forwarder.shutdown(Duration::ZERO);
    hold.store(false, Ordering::Relaxed);
    server.join().unwrap();
    drop(stalled_conn);
    BenchRun {
        ingest,
        delivered,
        deliver_time: last.duration_since(start),
        fast_dropped: stats[0].dropped,
        stalled_sent: stats[1].sent,
        stalled_dropped: stats[1].dropped,
    }
}

/// Measures the pipeline: entries streamed as fast as a fake control server can write them,
/// through the control client, the queues and the sender threads, to a local TCP collector
/// that reads as fast as it can and to one that never reads. Run with
/// `cargo test --release -p rampart-init --lib logfwd::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn throughput() {
    const N: u64 = 200_000;
    for (queue, label) in [
        (usize::try_from(N).unwrap(), "queue of N (no drop possible)"),
        (10_000, "default queue of 10,000"),
    ] {
        let r = bench_run(N, queue);
        let rate = |lines: u64, d: Duration| lines as f64 / d.as_secs_f64();
        println!(
            "{label}: {N} entries read from the control socket in {:.3} s ({:.0}/s); \
             fast collector received {} in {:.3} s ({:.0} lines/s), dropped {}; \
             stalled collector: {} written before it filled the socket buffers, {} dropped",
            r.ingest.as_secs_f64(),
            rate(N, r.ingest),
            r.delivered,
            r.deliver_time.as_secs_f64(),
            rate(r.delivered, r.deliver_time),
            r.fast_dropped,
            r.stalled_sent,
            r.stalled_dropped,
        );
        assert_eq!(r.delivered + r.fast_dropped, N);
    }
    // The senders alone: entries pushed straight into the forwarder (no control socket).
    for protocol in [LogProtocol::SyslogTcp, LogProtocol::JsonTcp] {
        let fast = TcpListener::bind("127.0.0.1:0").unwrap();
        let plan = Plan {
            socket: PathBuf::from("/nonexistent"),
            hostname: "node-1".into(),
            queue: usize::try_from(N).unwrap(),
            targets: vec![Target {
                protocol,
                address: fast.local_addr().unwrap(),
            }],
        };
        let entries: Vec<LogEntry> = (1..=N)
            .map(|seq| {
                let mut e = entry(seq);
                e.message = format!(
                    "time=\"2026-11-28T18:00:00.000000000Z\" level=info msg=\"a typical line of a service, about a hundred bytes\" n={seq}"
                );
                e
            })
            .collect();
        let forwarder = Forwarder::start(&plan).unwrap();
        let start = Instant::now();
        // The sender connects when it has a first line to send.
        let reader = std::thread::spawn(move || {
            let (s, _) = fast.accept().unwrap();
            let mut r = BufReader::with_capacity(1 << 20, s);
            let mut buf = Vec::new();
            let mut lines = 0u64;
            // Count records: newlines for JSON, octet-counted frames for syslog.
            while lines < N {
                buf.clear();
                match protocol {
                    LogProtocol::JsonTcp => {
                        if r.read_until(b'\n', &mut buf).unwrap() == 0 {
                            break;
                        }
                    }
                    _ => {
                        if r.read_until(b' ', &mut buf).unwrap() == 0 {
                            break;
                        }
                        buf.pop();
                        let k: usize = std::str::from_utf8(&buf).unwrap().parse().unwrap();
                        let mut msg = vec![0u8; k];
                        r.read_exact(&mut msg).unwrap();
                    }
                }
                lines += 1;
            }
            lines
        });
        for e in entries {
            forwarder.push(e);
        }
        let pushed = start.elapsed();
        let lines = reader.join().unwrap();
        let elapsed = start.elapsed();
        let stats = forwarder.shutdown(Duration::ZERO);
        println!(
            "senders alone, {protocol}: {N} entries pushed in {:.3} s, {lines} received in {:.3} s ({:.0} lines/s), dropped {}",
            pushed.as_secs_f64(),
            elapsed.as_secs_f64(),
            lines as f64 / elapsed.as_secs_f64(),
            stats[0].dropped
        );
        assert_eq!(lines, N);
    }
}
