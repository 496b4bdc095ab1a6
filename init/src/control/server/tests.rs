//! The control server driven in a thread (its poll loop) against the blocking client, over a
//! socket in a temp dir, with a fake supervisor: every op, the streams, the limits, a flood
//! of malformed connections, and (as root) a non-root peer refused.

use super::*;
use crate::control::client::{Client, ClientError};
use crate::control::proto::{EntryKind, LogEntry};
use crate::control::testing::{serve, write_cgroup, Fake};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

struct Harness {
    dir: tempfile::TempDir,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Vec<Action>, Fake)>>,
}

impl Harness {
    fn new(fake: Fake, tune: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("control.sock");
        let mut fake = fake;
        fake.cgroup = dir.path().join("cg");
        write_cgroup(&fake.cgroup, 1_048_576, 3, None);
        let mut settings = Settings {
            socket: path.clone(),
            timeout: Duration::from_secs(5),
            ..Settings::default()
        };
        tune(&mut settings);
        let audit: AuditFn = Box::new(|| AuditReply {
            passed: 1,
            failed: 0,
            skipped: 0,
            items: vec![AuditItem {
                result: "pass".into(),
                item: "sysctl kernel.kptr_restrict".into(),
                reference: "KSPP".into(),
                detail: "expected 2, actual 2".into(),
            }],
        });
        let server = Server::bind(settings, Some(audit)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = serve(server, fake, Arc::clone(&stop));
        Harness {
            dir,
            path,
            stop,
            thread: Some(thread),
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.path, Some(Duration::from_secs(10))).unwrap()
    }

    fn call(&self, request: Request) -> Reply {
        self.client().call(&request).unwrap()
    }

    fn finish(mut self) -> (Vec<Action>, Fake) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn error_code(reply: &Reply) -> Option<ErrorCode> {
    match reply {
        Reply::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// Every entry until `end` (or the connection closing).
fn entries(client: &mut Client) -> (Vec<LogEntry>, bool) {
    let mut out = Vec::new();
    loop {
        match client.recv().unwrap() {
            Some(Reply::Entry(e)) => out.push(e),
            Some(Reply::End) => return (out, true),
            Some(other) => panic!("{other:?}"),
            None => return (out, false),
        }
    }
}

#[test]
fn socket_is_private_and_a_stale_one_is_replaced() {
    let h = Harness::new(Fake::with(&["a"]), |_| {});
    let mode = std::fs::metadata(&h.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(h.path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    // A second bind on the same path replaces the (stale to it) socket.
    let again = Server::bind(
        Settings {
            socket: h.path.clone(),
            ..Settings::default()
        },
        None,
    );
    assert!(again.is_ok());
    // Something that is not a socket is never removed.
    let file = h.dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = Server::bind(
        Settings {
            socket: file.clone(),
            ..Settings::default()
        },
        None,
    )
    .unwrap_err();
    assert!(matches!(err, ServerError::NotASocket { .. }), "{err}");
    assert!(file.exists());
}

#[test]
fn status_reports_services_cgroups_and_host() {
    let h = Harness::new(Fake::with(&["containerd", "web"]), |_| {});
    let Reply::Status(status) = h.call(Request::Status {}) else {
        panic!("not a status");
    };
    let names: Vec<&str> = status.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["containerd", "web"]);
    let c = &status.services[0];
    assert_eq!(
        (c.state.as_str(), c.pid, c.memory_bytes, c.pids, c.cpu_usec),
        ("running", Some(42), Some(1 << 20), Some(3), None)
    );
    assert_eq!(status.host.orphans_reaped, 7);
    assert!(status.host.memory_total_bytes.is_some());
    assert!(status.host.load.is_some());
    assert!(status.host.uptime_ms > 0);
    // The request was audited.
    let audited = ring::with_ring(|r| {
        let mut cursor = r.first_seq();
        let mut found = false;
        r.read(&mut cursor, None, &Filter::default(), |e| {
            found |= e.kind == EntryKind::Audit
                && e.message.starts_with("control op=status")
                && e.message
                    .contains(&format!("peer_pid={}", std::process::id()))
                && e.message.contains("result=ok");
            true
        });
        found
    });
    assert!(audited);
}

#[test]
fn operations_and_their_errors() {
    let h = Harness::new(Fake::with(&["web"]), |_| {});
    let done = |r: Reply| match r {
        Reply::Done { message } => message,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        done(h.call(Request::Stop {
            service: "web".into()
        })),
        "stopping web"
    );
    assert_eq!(
        error_code(&h.call(Request::Stop {
            service: "web".into()
        })),
        Some(ErrorCode::InvalidState)
    );
    assert_eq!(
        done(h.call(Request::Start {
            service: "web".into()
        })),
        "started web"
    );
    assert_eq!(
        done(h.call(Request::Restart {
            service: "web".into()
        })),
        "restarting web"
    );
    for request in [
        Request::Restart {
            service: "ghost".into(),
        },
        Request::Logs {
            service: Some("ghost".into()),
            since_ms: None,
            tail: None,
            follow: false,
        },
    ] {
        assert_eq!(
            error_code(&h.call(request)),
            Some(ErrorCode::UnknownService)
        );
    }
    let Reply::Audit(audit) = h.call(Request::Audit {}) else {
        panic!("not an audit");
    };
    assert_eq!((audit.passed, audit.items.len()), (1, 1));
    assert_eq!(
        h.call(Request::Poweroff {}),
        Reply::Done {
            message: "powering off".into()
        }
    );
    // Refused from now on; the action comes after the grace that lets the reply travel.
    assert_eq!(
        error_code(&h.call(Request::Status {})),
        Some(ErrorCode::ShuttingDown)
    );
    std::thread::sleep(super::SHUTDOWN_GRACE + std::time::Duration::from_millis(500));
    let (actions, fake) = h.finish();
    assert_eq!(actions, [Action::Poweroff]);
    assert_eq!(fake.services[0].1, "running");
}

#[test]
fn shutting_down_refuses_every_request() {
    let mut fake = Fake::with(&["web"]);
    fake.shutting_down = true;
    let h = Harness::new(fake, |_| {});
    for request in [
        Request::Status {},
        Request::Stop {
            service: "web".into(),
        },
        Request::Reboot {},
    ] {
        assert_eq!(error_code(&h.call(request)), Some(ErrorCode::ShuttingDown));
    }
    let (actions, _) = h.finish();
    assert!(actions.is_empty());
}

#[test]
fn logs_with_tail_then_end() {
    let h = Harness::new(Fake::with(&["logs-tail-svc"]), |_| {});
    for i in 0..5 {
        ring::record("logs-tail-svc", EntryKind::Log, 6, &format!("line {i}"));
    }
    let mut c = h.client();
    c.send(&Request::Logs {
        service: Some("logs-tail-svc".into()),
        since_ms: None,
        tail: Some(2),
        follow: false,
    })
    .unwrap();
    let (got, ended) = entries(&mut c);
    assert!(ended);
    let messages: Vec<&str> = got.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["line 3", "line 4"]);
    assert!(got.iter().all(|e| e.source == "logs-tail-svc"));
    // Then the server closes.
    assert_eq!(c.recv().unwrap(), None);
}

#[test]
fn logs_follow_receives_new_lines() {
    let h = Harness::new(Fake::with(&["follow-svc"]), |_| {});
    ring::record("follow-svc", EntryKind::Log, 6, "old line");
    let mut c = h.client();
    c.send(&Request::Logs {
        service: Some("follow-svc".into()),
        since_ms: None,
        tail: Some(1),
        follow: true,
    })
    .unwrap();
    let first = c.recv().unwrap();
    assert!(
        matches!(&first, Some(Reply::Entry(e)) if e.message == "old line"),
        "{first:?}"
    );
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(30));
        ring::record("follow-svc", EntryKind::Log, 6, &format!("new line {i}"));
        ring::record("other-svc", EntryKind::Log, 6, "not for this follower");
    }
    for i in 0..3 {
        let got = c.recv().unwrap();
        assert!(
            matches!(&got, Some(Reply::Entry(e)) if e.message == format!("new line {i}")),
            "{got:?}"
        );
    }
}

#[test]
fn events_are_events_and_audit_entries_only() {
    let h = Harness::new(Fake::with(&["ev-svc"]), |_| {});
    let since = ring::now_ms();
    ring::record("ev-svc", EntryKind::Log, 6, "a log line");
    ring::record("ev-svc", EntryKind::Event, 6, "started pid=1");
    let mut c = h.client();
    c.send(&Request::Events {
        since_ms: Some(since),
        follow: false,
    })
    .unwrap();
    let (got, ended) = entries(&mut c);
    assert!(ended);
    assert!(got.iter().all(|e| e.kind != EntryKind::Log));
    assert!(got
        .iter()
        .any(|e| e.source == "ev-svc" && e.message == "started pid=1"));
}

fn raw(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The first reply frame on a raw stream, if any, reading until the server closes.
fn first_reply(s: &mut UnixStream) -> Option<Reply> {
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let mut r = proto::FrameReader::new(proto::MAX_REPLY);
    r.push(&bytes);
    r.next_frame()
        .ok()
        .flatten()
        .and_then(|b| proto::decode_reply(&b).ok())
}

#[test]
fn a_flood_of_garbage_leaves_the_server_serving() {
    let h = Harness::new(Fake::with(&["web"]), |_| {});
    let frame = |body: &[u8]| {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    };
    let mut seed = 0x2545_f491_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut bad_request = 0;
    for i in 0..1000 {
        let mut s = raw(&h.path);
        let want = match i % 8 {
            0 => None,
            1 => {
                let _ = s.write_all(&[0, 0, 0, 0]);
                Some(ErrorCode::BadRequest)
            }
            2 => {
                let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff]);
                Some(ErrorCode::BadRequest)
            }
            3 => {
                let _ = s.write_all(&((proto::MAX_REQUEST + 1) as u32).to_be_bytes());
                Some(ErrorCode::BadRequest)
            }
            4 => {
                let _ = s.write_all(&frame(b"{\"version\":1,\"request\":{\"op\":\"rm -rf\"}}"));
                Some(ErrorCode::BadRequest)
            }
            5 => {
                let _ = s.write_all(&frame(b"{\"version\":99,\"request\":{\"op\":\"status\"}}"));
                Some(ErrorCode::Version)
            }
            6 => {
                let len = (random() % 4096) as usize;
                let junk: Vec<u8> = (0..len).map(|_| random() as u8).collect();
                let _ = s.write_all(&junk);
                let _ = s.shutdown(std::net::Shutdown::Write);
                None
            }
            _ => {
                // A whole maximum-size body of junk, then more junk.
                let mut v = (proto::MAX_REQUEST as u32).to_be_bytes().to_vec();
                v.extend(std::iter::repeat_n(b'x', proto::MAX_REQUEST + 50_000));
                let _ = s.write_all(&v);
                Some(ErrorCode::BadRequest)
            }
        };
        match want {
            Some(code) => {
                let got = first_reply(&mut s);
                assert_eq!(got.as_ref().and_then(error_code), Some(code), "case {i}");
                bad_request += 1;
            }
            None => drop(s),
        }
    }
    assert!(bad_request > 700);
    assert!(matches!(h.call(Request::Status {}), Reply::Status(_)));
}

#[test]
fn max_clients_is_enforced() {
    let h = Harness::new(Fake::with(&["web"]), |s| s.max_clients = 3);
    let idle: Vec<UnixStream> = (0..3).map(|_| raw(&h.path)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = raw(&h.path);
    assert_eq!(
        first_reply(&mut fourth).as_ref().and_then(error_code),
        Some(ErrorCode::Busy)
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(h.call(Request::Status {}), Reply::Status(_)));
}

#[test]
fn a_silent_client_is_closed_at_the_timeout() {
    let h = Harness::new(Fake::with(&["web"]), |s| {
        s.timeout = Duration::from_millis(300);
    });
    let start = Instant::now();
    let mut silent = raw(&h.path);
    // Half a request is still silence.
    silent.write_all(&[0, 0]).unwrap();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap();
    let waited = start.elapsed();
    assert_eq!(n, 0, "closed without a reply");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // A follower waiting for new entries is not idle.
    let mut c = h.client();
    c.send(&Request::Logs {
        service: Some("web".into()),
        since_ms: None,
        tail: Some(0),
        follow: true,
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    ring::record("web", EntryKind::Log, 6, "still here");
    let got = c.recv().unwrap();
    assert!(
        matches!(&got, Some(Reply::Entry(e)) if e.message == "still here"),
        "{got:?}"
    );
}

#[test]
fn a_client_that_closes_its_side_still_gets_its_reply() {
    let h = Harness::new(Fake::with(&["web"]), |_| {});
    let mut s = raw(&h.path);
    s.write_all(&proto::encode_request(&Request::Status {}).unwrap())
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(matches!(first_reply(&mut s), Some(Reply::Status(_))));
}

#[test]
fn warnings_are_rate_limited() {
    let t0 = Instant::now();
    let mut limit = RateLimit::new();
    let allowed = (0..WARN_BURST + 5)
        .filter(|_| limit.allow(t0).is_some())
        .count();
    assert_eq!(allowed, WARN_BURST as usize);
    assert_eq!(limit.allow(t0 + WARN_WINDOW), Some(5));
    assert_eq!(limit.allow(t0 + WARN_WINDOW), Some(0));
}

#[test]
fn codes_and_audit_items_map() {
    let cases = [
        (
            OpError::UnknownService {
                service: "x".into(),
            },
            ErrorCode::UnknownService,
        ),
        (
            OpError::InvalidState {
                op: "stop",
                service: "x".into(),
                state: "stopped",
            },
            ErrorCode::InvalidState,
        ),
        (OpError::ShuttingDown, ErrorCode::ShuttingDown),
        (
            OpError::StartFailed {
                service: "x".into(),
                reason: "y".into(),
            },
            ErrorCode::Internal,
        ),
    ];
    for (error, code) in cases {
        assert_eq!(op_error_code(&error), code);
    }
    assert_eq!(code_name(ErrorCode::UnknownService), "unknown-service");
    let audit = crate::audit::Audit {
        items: vec![crate::audit::Item {
            item: "mount /tmp".into(),
            expected: "nosuid".into(),
            actual: "suid".into(),
            status: crate::audit::Status::Fail,
            reference: "CIS 1.1.3".into(),
            mode: rampart_config::hardening::Mode::Enforce,
        }],
    };
    let reply = audit_reply(&audit);
    assert_eq!((reply.passed, reply.failed, reply.skipped), (0, 1, 0));
    assert_eq!(
        reply.items[0],
        AuditItem {
            result: "fail".into(),
            item: "mount /tmp".into(),
            reference: "CIS 1.1.3".into(),
            detail: "expected nosuid, actual suid".into(),
        }
    );
}

/// Runs `body` in a forked child as uid/gid 65534; its exit code is `body`'s.
fn as_nobody(body: impl FnOnce() -> i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, setgid, setgroups, setuid, ForkResult, Gid, Uid};
    // SAFETY: the child drops privileges, connects and leaves with `_exit`; glibc's malloc is
    // fork-safe.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let dropped = setgroups(&[])
                .and_then(|()| setgid(Gid::from_raw(65534)))
                .and_then(|()| setuid(Uid::from_raw(65534)));
            let code = if dropped.is_ok() { body() } else { 90 };
            // SAFETY: leave without running the test harness's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        },
    }
}

#[test]
fn a_peer_that_is_not_root_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to become another user)");
        return;
    }
    let h = Harness::new(Fake::with(&["web"]), |_| {});
    let open = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(h.dir.path(), 0o711);
    open(h.path.parent().unwrap(), 0o711);
    let path = h.path.clone();
    // Mode 0600: the kernel refuses the connect itself.
    let code = as_nobody(
        || match Client::connect(&path, Some(Duration::from_secs(5))) {
            Err(ClientError::Denied { .. }) => 0,
            Err(_) => 2,
            Ok(_) => 3,
        },
    );
    assert_eq!(code, 0, "connect to a 0600 socket as nobody");
    // With the mode opened up, SO_PEERCRED still refuses.
    open(&h.path, 0o666);
    let code = as_nobody(|| {
        match Client::connect(&path, Some(Duration::from_secs(5)))
            .and_then(|mut c| c.call(&Request::Status {}))
        {
            Ok(Reply::Error {
                code: ErrorCode::Denied,
                ..
            }) => 0,
            Ok(_) => 4,
            Err(_) => 5,
        }
    });
    assert_eq!(code, 0, "SO_PEERCRED refusal");
    std::thread::sleep(Duration::from_millis(50));
    let audited = ring::with_ring(|r| {
        let mut cursor = r.first_seq();
        let mut found = false;
        r.read(&mut cursor, None, &Filter::default(), |e| {
            found |= e.kind == EntryKind::Audit
                && e.message.starts_with("control refused")
                && e.message.contains("peer_uid=65534");
            true
        });
        found
    });
    assert!(audited, "the refusal is audited");
    // The server still serves root.
    assert!(matches!(h.call(Request::Status {}), Reply::Status(_)));
}

#[test]
fn settings_come_from_control_and_logs() {
    let parse = |text: &str| rampart_config::parse(text, Path::new("/cfg/host.toml")).unwrap();
    let defaults = settings(&parse(""));
    assert_eq!(defaults, Settings::default());
    assert_eq!(defaults.socket, PathBuf::from("/run/rampart/control.sock"));
    let tuned = settings(&parse(
        "[control]\nmax_clients = 3\ntimeout = \"2s\"\n[logs]\nbuffer = \"128K\"\n",
    ));
    assert_eq!(
        (tuned.max_clients, tuned.timeout, tuned.log_buffer),
        (3, Duration::from_secs(2), 128 << 10)
    );
}
