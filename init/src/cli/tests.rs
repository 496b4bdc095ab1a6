//! The CLI end to end against a fake server: a thread on a temporary socket that checks each
//! request and answers with canned replies.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use super::*;
use crate::control::proto::{
    encode_reply, AuditItem, AuditReply, EntryKind, HostStatus, LogEntry, ServiceStatus,
    StatusReply,
};
use crate::control::testing::read_request;

/// What the fake server does with one connection.
enum Script {
    /// Answer with these replies, then close.
    Reply(Vec<Reply>),
    /// Read the request, then say nothing until the client goes away.
    Silent,
}

/// Serves one connection per script entry, in order; returns the requests it received.
fn serve(path: &Path, scripts: Vec<Script>) -> JoinHandle<Vec<Request>> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for script in scripts {
            let (mut conn, _) = listener.accept().unwrap();
            let request = read_request(&mut conn).expect("client closed before a whole request");
            seen.push(request);
            let mut buf = [0u8; 4096];
            match script {
                Script::Reply(replies) => {
                    for r in replies {
                        // A client that went away (a timeout test) is not an error here.
                        if conn.write_all(&encode_reply(&r).unwrap()).is_err() {
                            break;
                        }
                    }
                }
                Script::Silent => {
                    // Wait for the client to close.
                    while conn.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
                }
            }
        }
        seen
    })
}

/// What one run of the CLI returned and printed.
pub(super) struct Ran {
    pub code: i32,
    pub out: String,
    pub err: String,
    pub follows: Vec<Option<RawFd>>,
}

/// Runs the CLI with `--socket SOCKET` and the words of `line`.
pub(super) fn run_cli(socket: &Path, line: &str) -> Ran {
    let mut args: Vec<String> = vec!["--socket".into(), socket.display().to_string()];
    args.extend(line.split_whitespace().map(str::to_owned));
    run_args(&args, None)
}

fn run_args(args: &[String], env: Option<&str>) -> Ran {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut follows = Vec::new();
    let mut hook = |fd: Option<RawFd>| follows.push(fd);
    let code = run(
        args,
        env,
        &mut Io {
            out: &mut out,
            err: &mut err,
            on_follow: &mut hook,
        },
    );
    Ran {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
        follows,
    }
}

fn sock() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    (dir, path)
}

fn status_reply() -> Reply {
    Reply::Status(StatusReply {
        host: HostStatus {
            hostname: "vm".into(),
            uptime_ms: 61_000,
            memory_total_bytes: Some(1 << 30),
            memory_available_bytes: Some(512 << 20),
            load: Some(["0.10".into(), "0.20".into(), "0.30".into()]),
            orphans_reaped: 0,
            log_entries_evicted: 0,
        },
        services: vec![ServiceStatus {
            name: "containerd".into(),
            state: "running".into(),
            pid: Some(99),
            uptime_ms: Some(60_000),
            restarts: 0,
            last_exit: None,
            ready: Some(true),
            memory_bytes: Some(30 << 20),
            pids: Some(11),
            cpu_usec: Some(1_500_000),
        }],
    })
}

fn entry(seq: u64, source: &str, message: &str) -> Reply {
    Reply::Entry(LogEntry {
        seq,
        time_ms: 1_795_888_800_000 + i64::try_from(seq).unwrap() * 1000,
        source: source.into(),
        kind: EntryKind::Log,
        severity: 6,
        message: message.into(),
    })
}

#[test]
fn status_human_and_json() {
    let (_dir, path) = sock();
    let server = serve(
        &path,
        vec![
            Script::Reply(vec![status_reply()]),
            Script::Reply(vec![status_reply()]),
        ],
    );
    let ran = run_cli(&path, "status");
    assert_eq!(ran.code, EXIT_OK, "{}", ran.err);
    assert_eq!(
        ran.out,
        "\
NAME        STATE    PID  UPTIME  RESTARTS  LAST-EXIT  MEMORY  PIDS  CPU
containerd  running  99   1m00s   0         -          30.0M   11    1.50s
host vm: up 1m01s, memory 512M available of 1.0G, load 0.10 0.20 0.30
"
    );
    assert_eq!(ran.err, "");
    let ran = run_cli(&path, "--json status");
    assert_eq!(ran.code, EXIT_OK);
    assert_eq!(ran.out.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(ran.out.trim()).unwrap();
    assert_eq!(v["type"], "status");
    assert_eq!(v["services"][0]["name"], "containerd");
    assert_eq!(v["host"]["hostname"], "vm");
    assert_eq!(
        server.join().unwrap(),
        vec![Request::Status {}, Request::Status {}]
    );
}

#[test]
fn logs_stream_with_a_drop_note() {
    let (_dir, path) = sock();
    let server = serve(
        &path,
        vec![
            Script::Reply(vec![
                entry(1, "containerd", "starting"),
                Reply::Dropped { count: 3 },
                entry(5, "containerd", "serving"),
                Reply::End,
            ]),
            Script::Reply(vec![entry(1, "containerd", "starting"), Reply::End]),
        ],
    );
    let ran = run_cli(&path, "logs containerd --tail 2 --since 5m");
    assert_eq!(ran.code, EXIT_OK, "{}", ran.err);
    assert_eq!(
        ran.out,
        "2026-11-28T18:00:01.000Z containerd[log]: starting\n\
         2026-11-28T18:00:05.000Z containerd[log]: serving\n"
    );
    assert_eq!(
        ran.err,
        "rampart: the host skipped 3 entries (this client read too slowly)\n"
    );
    assert!(ran.follows.is_empty());

    let ran = run_cli(&path, "logs --json");
    assert_eq!(ran.code, EXIT_OK);
    let lines: Vec<&str> = ran.out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with(r#"{"type":"entry","seq":1,"#),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], r#"{"type":"end"}"#);

    let seen = server.join().unwrap();
    let Request::Logs {
        service,
        since_ms,
        tail,
        follow,
    } = &seen[0]
    else {
        panic!("{seen:?}")
    };
    assert_eq!(service.as_deref(), Some("containerd"));
    assert_eq!(*tail, Some(2));
    assert!(!follow);
    let want = now_ms() - 300_000;
    assert!((since_ms.unwrap() - want).abs() < 60_000, "{since_ms:?}");
    assert_eq!(
        seen[1],
        Request::Logs {
            service: None,
            since_ms: None,
            tail: None,
            follow: false
        }
    );
}

#[test]
fn follow_ends_cleanly_when_the_stream_ends() {
    let (_dir, path) = sock();
    let server = serve(
        &path,
        vec![Script::Reply(vec![
            entry(1, "rampart-init", "containerd started"),
            entry(2, "rampart-init", "web started"),
        ])],
    );
    let ran = run_cli(&path, "events --follow --since 2026-11-28T18:00:00Z");
    assert_eq!(ran.code, EXIT_OK, "{}", ran.err);
    assert_eq!(ran.out.lines().count(), 2);
    // The hook saw the socket while following, then the end.
    assert_eq!(ran.follows.len(), 2);
    assert!(ran.follows[0].is_some_and(|fd| fd >= 0));
    assert_eq!(ran.follows[1], None);
    assert_eq!(
        server.join().unwrap(),
        vec![Request::Events {
            since_ms: Some(1_795_888_800_000),
            follow: true
        }]
    );
}

#[test]
fn a_closed_non_following_stream_is_a_failure() {
    let (_dir, path) = sock();
    let server = serve(&path, vec![Script::Reply(vec![entry(1, "a", "x")])]);
    let ran = run_cli(&path, "logs");
    assert_eq!(ran.code, EXIT_UNREACHABLE);
    assert!(
        ran.err.contains("closed the connection without a reply"),
        "{}",
        ran.err
    );
    server.join().unwrap();
}

#[test]
fn actions_and_their_errors() {
    let (_dir, path) = sock();
    let server = serve(
        &path,
        vec![
            Script::Reply(vec![Reply::Done {
                message: "restarted containerd".into(),
            }]),
            Script::Reply(vec![Reply::Error {
                code: ErrorCode::UnknownService,
                message: "no service named nope".into(),
            }]),
            Script::Reply(vec![Reply::Done {
                message: "stopped web".into(),
            }]),
            Script::Reply(vec![Reply::Done {
                message: "started web".into(),
            }]),
            Script::Reply(vec![Reply::Done {
                message: "rebooting".into(),
            }]),
            Script::Reply(vec![Reply::Done {
                message: "powering off".into(),
            }]),
            Script::Reply(vec![Reply::Error {
                code: ErrorCode::Denied,
                message: "uid 1000 is not root".into(),
            }]),
            Script::Reply(vec![Reply::Error {
                code: ErrorCode::Busy,
                message: "too many clients".into(),
            }]),
            Script::Reply(vec![Reply::End]),
        ],
    );
    let cases: &[(&str, i32, &str, &str)] = &[
        ("restart containerd", 0, "restarted containerd\n", ""),
        ("restart nope", 1, "", "rampart: no service named nope\n"),
        ("stop web", 0, "stopped web\n", ""),
        ("start web", 0, "started web\n", ""),
        ("reboot", 0, "rebooting\n", ""),
        ("poweroff", 0, "powering off\n", ""),
        (
            "status",
            3,
            "",
            "permission denied on SOCK: uid 1000 is not root (the control socket is root only)",
        ),
        (
            "--json status",
            1,
            "{\"type\":\"error\",\"code\":\"busy\",\"message\":\"too many clients\"}\n",
            "rampart: too many clients\n",
        ),
        (
            "audit",
            1,
            "",
            "rampart: unexpected `end` reply to `audit`\n",
        ),
    ];
    let sock = path.display().to_string();
    for (line, code, out, err) in cases {
        let ran = run_cli(&path, line);
        assert_eq!(ran.code, *code, "{line}: {}", ran.err);
        assert_eq!(ran.out, *out, "{line}");
        assert!(
            ran.err.contains(&err.replace("SOCK", &sock)),
            "{line}: {}",
            ran.err
        );
    }
    let seen = server.join().unwrap();
    assert_eq!(
        seen.iter().map(Request::op).collect::<Vec<_>>(),
        [
            "restart", "restart", "stop", "start", "reboot", "poweroff", "status", "status",
            "audit"
        ]
    );
    assert_eq!(
        seen[1],
        Request::Restart {
            service: "nope".into()
        }
    );
}

#[test]
fn audit_report_and_exit_status() {
    let (_dir, path) = sock();
    let item = |result: &str| AuditItem {
        result: result.into(),
        item: "kernel.kptr_restrict".into(),
        reference: "KSPP".into(),
        detail: "2".into(),
    };
    let passing = AuditReply {
        passed: 1,
        failed: 0,
        skipped: 0,
        items: vec![item("pass")],
    };
    let failing = AuditReply {
        passed: 0,
        failed: 1,
        skipped: 0,
        items: vec![item("fail")],
    };
    let server = serve(
        &path,
        vec![
            Script::Reply(vec![Reply::Audit(passing)]),
            Script::Reply(vec![Reply::Audit(failing.clone())]),
            Script::Reply(vec![Reply::Audit(failing)]),
        ],
    );
    let ran = run_cli(&path, "audit");
    assert_eq!(ran.code, EXIT_OK);
    assert_eq!(
        ran.out,
        "PASS  kernel.kptr_restrict  KSPP  2\n1 passed, 0 failed, 0 skipped\n"
    );
    let ran = run_cli(&path, "audit");
    assert_eq!(ran.code, EXIT_FAILED);
    assert!(ran.out.starts_with("FAIL  "));
    let ran = run_cli(&path, "audit --json");
    assert_eq!(ran.code, EXIT_FAILED);
    assert!(ran
        .out
        .starts_with(r#"{"type":"audit","passed":0,"failed":1"#));
    server.join().unwrap();
}

#[test]
fn unreachable_sockets() {
    let (dir, path) = sock();
    // Absent.
    let ran = run_cli(&path, "status");
    assert_eq!(ran.code, EXIT_UNREACHABLE);
    assert_eq!(
        ran.err,
        format!(
            "rampart: no control socket at {} (is this a rampart host?)\n",
            path.display()
        )
    );
    assert_eq!(ran.out, "");
    // The socket from the environment when no --socket is given.
    let env_path = dir.path().join("env.sock");
    let ran = run_args(&["status".into()], env_path.to_str());
    assert_eq!(ran.code, EXIT_UNREACHABLE);
    assert!(
        ran.err.contains(&env_path.display().to_string()),
        "{}",
        ran.err
    );
    // A socket file nobody listens on.
    drop(UnixListener::bind(&path).unwrap());
    let ran = run_cli(&path, "status");
    assert_eq!(ran.code, EXIT_UNREACHABLE);
    assert!(
        ran.err.starts_with("rampart: cannot connect to "),
        "{}",
        ran.err
    );
    assert!(ran.err.contains("is PID 1 serving it?"), "{}", ran.err);
}

#[test]
fn a_silent_host_times_out() {
    let (_dir, path) = sock();
    let server = serve(&path, vec![Script::Silent]);
    let started = std::time::Instant::now();
    let ran = run_cli(&path, "--timeout 0.3 status");
    assert_eq!(ran.code, EXIT_UNREACHABLE);
    assert_eq!(
        ran.err,
        format!("rampart: no reply from {} within 0.3s\n", path.display())
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    server.join().unwrap();
}

#[test]
fn usage_help_and_version() {
    let ran = run_args(&["bogus".into()], None);
    assert_eq!(ran.code, EXIT_USAGE);
    assert!(ran
        .err
        .starts_with("rampart: unknown command `bogus`\n\nusage: rampart "));
    assert!(ran.err.ends_with("connection failed.\n"), "{}", ran.err);
    assert_eq!(ran.out, "");
    let ran = run_args(&[], None);
    assert_eq!(ran.code, EXIT_USAGE);
    assert!(ran.err.starts_with("rampart: no command given\n"));
    for help in ["help", "--help", "-h"] {
        let ran = run_args(&[help.into()], None);
        assert_eq!(ran.code, EXIT_OK);
        assert_eq!(ran.out, USAGE);
    }
    let ran = run_args(&["--version".into()], None);
    assert_eq!(ran.code, EXIT_OK);
    assert_eq!(ran.out, format!("rampart {}\n", env!("CARGO_PKG_VERSION")));
}

/// A writer whose reader went away.
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let (_dir, path) = sock();
    let server = serve(
        &path,
        vec![Script::Reply(vec![entry(1, "a", "x"), entry(2, "a", "y")])],
    );
    let mut err = Vec::new();
    let mut hook = |_: Option<RawFd>| {};
    let code = run(
        &[
            "--socket".into(),
            path.display().to_string(),
            "logs".into(),
            "-f".into(),
        ],
        None,
        &mut Io {
            out: &mut ClosedPipe,
            err: &mut err,
            on_follow: &mut hook,
        },
    );
    assert_eq!(code, EXIT_OK);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    server.join().unwrap();
}

#[test]
fn exit_codes() {
    use std::path::PathBuf;
    let p = PathBuf::from("/s");
    let cases: Vec<(CliError, i32)> = vec![
        (CliError::Usage { reason: "x".into() }, 2),
        (
            CliError::Control {
                path: p.clone(),
                source: ClientError::Absent { path: p.clone() },
            },
            3,
        ),
        (
            CliError::Control {
                path: p.clone(),
                source: ClientError::Denied { path: p.clone() },
            },
            3,
        ),
        (
            CliError::Control {
                path: p.clone(),
                source: ClientError::Closed,
            },
            3,
        ),
        (
            CliError::Timeout {
                path: p.clone(),
                timeout: Duration::from_secs(1),
            },
            3,
        ),
        (
            CliError::Refused {
                path: p.clone(),
                message: "no".into(),
            },
            3,
        ),
        (
            CliError::Output {
                source: io::Error::from(io::ErrorKind::BrokenPipe),
            },
            0,
        ),
        (
            CliError::Output {
                source: io::Error::from(io::ErrorKind::StorageFull),
            },
            1,
        ),
    ];
    for (e, code) in cases {
        assert_eq!(e.exit_code(), code, "{e}");
    }
    assert_eq!(exit_code_for(ErrorCode::Denied), 3);
    for c in [
        ErrorCode::BadRequest,
        ErrorCode::Version,
        ErrorCode::UnknownService,
        ErrorCode::InvalidState,
        ErrorCode::Busy,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ] {
        assert_eq!(exit_code_for(c), 1, "{c:?}");
    }
    assert_eq!(
        CliError::Control {
            path: p.clone(),
            source: ClientError::Denied { path: p },
        }
        .to_string(),
        "permission denied on /s: the control socket is root only"
    );
}
