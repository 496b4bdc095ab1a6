//! The CLI against PID 1's real control server (driven in a thread the way its own tests
//! drive it, with a stand-in supervisor), directly and through the relay: the CLI connects to
//! a socket standing in for QEMU's host end of the virtio-serial channel, a thread runs
//! [`crate::relay::relay_session`] on each accepted connection, and the relay talks to the
//! server.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::tests::run_cli as cli;
use super::*;
use crate::control::proto::{AuditItem, AuditReply, EntryKind};
use crate::control::ring;
use crate::control::server::{AuditFn, Server, Settings};
use crate::control::testing::{serve, write_cgroup, Fake};
use rampart_config::Action;

struct Live {
    _dir: tempfile::TempDir,
    control: PathBuf,
    host: PathBuf,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<(Vec<Action>, Fake)>>,
    relay: Option<JoinHandle<()>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the relay's accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.host);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        if let Some(t) = self.relay.take() {
            let _ = t.join();
        }
    }
}

fn live(services: &[&str], failing_audit: bool) -> Live {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("run").join("control.sock");
    let host = dir.path().join("host.sock");
    let cgroup = dir.path().join("cg");
    write_cgroup(&cgroup, 44_040_192, 9, Some(2_310_000));
    let fake = Fake {
        cgroup,
        pid: 4242,
        uptime_ms: 65_000,
        orphans: 0,
        ..Fake::with(services)
    };
    let audit: AuditFn = Box::new(move || AuditReply {
        passed: 1,
        failed: u32::from(failing_audit),
        skipped: 0,
        items: vec![AuditItem {
            result: if failing_audit { "fail" } else { "pass" }.into(),
            item: "sysctl kernel.kptr_restrict".into(),
            reference: "KSPP".into(),
            detail: "expected 2".into(),
        }],
    });
    let settings = Settings {
        socket: control.clone(),
        timeout: Duration::from_secs(5),
        ..Settings::default()
    };
    let server = Server::bind(settings, Some(audit)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server_thread = serve(server, fake, Arc::clone(&stop));
    // The host end of the channel: one relay session per CLI connection, in turn.
    let listener = UnixListener::bind(&host).unwrap();
    let flag = stop.clone();
    let relay_control = control.clone();
    let relay_thread = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            let port = conn.unwrap();
            port.set_nonblocking(true).unwrap();
            let mut connect = || UnixStream::connect(&relay_control);
            // One CLI per connection here: a short grace lets the next one in at once.
            let timing = crate::relay::Timing {
                grace: Duration::from_millis(10),
                ..crate::relay::TIMING
            };
            crate::relay::relay_session(&port, &mut connect, None, timing).unwrap();
        }
    });
    Live {
        _dir: dir,
        control,
        host,
        stop,
        server: Some(server_thread),
        relay: Some(relay_thread),
    }
}

#[test]
fn the_cli_against_the_real_server_directly_and_through_the_relay() {
    let l = live(&["live-cli-svc", "live-cli-web"], false);
    ring::record("live-cli-svc", EntryKind::Log, 6, "hello from the service");
    for socket in [l.control.clone(), l.host.clone()] {
        let ran = cli(&socket, "status");
        assert_eq!(ran.code, EXIT_OK, "{socket:?}: {}", ran.err);
        let lines: Vec<&str> = ran.out.lines().collect();
        assert!(lines[0].starts_with("NAME "), "{}", ran.out);
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "live-cli-svc",
                "running",
                "4242",
                "1m05s",
                "0",
                "-",
                "42.0M",
                "9",
                "2.31s"
            ],
            "{}",
            ran.out
        );
        assert!(lines[3].starts_with("host "), "{}", ran.out);

        let ran = cli(&socket, "--json status");
        assert_eq!(ran.code, EXIT_OK);
        let v: serde_json::Value = serde_json::from_str(ran.out.trim()).unwrap();
        assert_eq!(v["services"][1]["name"], "live-cli-web");

        let ran = cli(&socket, "logs live-cli-svc --tail 5");
        assert_eq!(ran.code, EXIT_OK, "{}", ran.err);
        assert!(
            ran.out
                .lines()
                .any(|l| l.ends_with(" live-cli-svc[log]: hello from the service")),
            "{}",
            ran.out
        );

        let ran = cli(&socket, "events --since 1h");
        assert_eq!(ran.code, EXIT_OK, "{}", ran.err);

        let ran = cli(&socket, "restart live-cli-web");
        assert_eq!(
            (ran.code, ran.out.as_str()),
            (0, "restarting live-cli-web\n")
        );
        let ran = cli(&socket, "stop live-cli-web");
        assert_eq!((ran.code, ran.out.as_str()), (0, "stopping live-cli-web\n"));
        let ran = cli(&socket, "start live-cli-web");
        assert_eq!((ran.code, ran.out.as_str()), (0, "started live-cli-web\n"));

        let ran = cli(&socket, "restart no-such-svc");
        assert_eq!(ran.code, EXIT_FAILED);
        assert!(ran.err.contains("no-such-svc"), "{}", ran.err);

        let ran = cli(&socket, "audit");
        assert_eq!(ran.code, EXIT_OK, "{}", ran.err);
        assert!(
            ran.out.ends_with("1 passed, 0 failed, 0 skipped\n"),
            "{}",
            ran.out
        );
    }
}

#[test]
fn a_failed_audit_and_a_follow_through_the_relay() {
    let l = live(&["live-follow-svc"], true);
    let ran = cli(&l.host, "audit");
    assert_eq!(ran.code, EXIT_FAILED);
    assert!(
        ran.out.starts_with("FAIL  sysctl kernel.kptr_restrict"),
        "{}",
        ran.out
    );

    // Follow through the relay; the stream is ended from outside (as the SIGINT handler
    // does) by shutting the CLI's socket down once the new line has arrived.
    ring::record("live-follow-svc", EntryKind::Log, 6, "before");
    let host = l.host.clone();
    let (tx, rx) = std::sync::mpsc::channel::<RawFd>();
    let follower = std::thread::spawn(move || {
        let mut args: Vec<String> = vec!["--socket".into(), host.display().to_string()];
        args.extend(["logs", "live-follow-svc", "-f", "--tail", "1"].map(str::to_owned));
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut hook = |fd: Option<RawFd>| {
            if let Some(fd) = fd {
                tx.send(fd).unwrap();
            }
        };
        let code = run(
            &args,
            None,
            &mut Io {
                out: &mut out,
                err: &mut err,
                on_follow: &mut hook,
            },
        );
        (code, String::from_utf8(out).unwrap())
    });
    let fd = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ring::record("live-follow-svc", EntryKind::Log, 6, "after");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: `fd` is the follower's open socket (it stays open until `run` returns, which
    // waits for this shutdown).
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
    let (code, out) = follower.join().unwrap();
    assert_eq!(code, EXIT_OK);
    let messages: Vec<&str> = out.lines().map(|l| l.split_once(": ").unwrap().1).collect();
    assert_eq!(messages, ["before", "after"]);
}
