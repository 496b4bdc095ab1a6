//! The supervisor: plans and pure policies as tables, then the whole machine (spawn, reap,
//! restart with backoff, readiness, ordering, output) driven in a forked child like PID 1.

use super::*;
use crate::event::{self, reap_children, Events};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::TimerSetTimeFlags;
use rampart_config::{ServiceName, Size};
use std::io::Read;
use std::os::unix::net::UnixListener;

fn service(name: &str, exec: &[&str]) -> Service {
    Service::new(
        ServiceName::try_from(name).unwrap(),
        exec.iter().map(|s| s.to_string()).collect(),
    )
}

fn cstrings(strings: &[&str]) -> Vec<CString> {
    strings.iter().map(|s| CString::new(*s).unwrap()).collect()
}

#[test]
fn plan_converts_argv_env_cgroup_and_limits() {
    let root = Path::new("/tmp/cg");
    let default_path = format!("PATH={DEFAULT_PATH}");
    let mut b = service("b", &["/bin/sh", "-c", "echo hi"]);
    b.env.insert("FOO".into(), "bar".into());
    b.env.insert("A".into(), "1".into());
    let mut c = service("c", &["/bin/x"]);
    c.env.insert("PATH".into(), "/opt/bin".into());
    c.env.insert("EMPTY".into(), String::new());
    c.limits.pids_max = Some(10);
    c.limits.memory_max = Some(Size::from_mib(1));
    let cases: Vec<(Service, Vec<&str>, Vec<&str>, usize)> = vec![
        (
            service("a", &["/bin/true"]),
            vec!["/bin/true"],
            vec![default_path.as_str()],
            0,
        ),
        (
            b,
            vec!["/bin/sh", "-c", "echo hi"],
            vec!["A=1", "FOO=bar", default_path.as_str()],
            0,
        ),
        (c, vec!["/bin/x"], vec!["EMPTY=", "PATH=/opt/bin"], 2),
    ];
    for (svc, argv, env, limits) in cases {
        let name = svc.name.as_str().to_owned();
        let p = plan_service(&svc, root, 4096);
        assert_eq!(p.name, name);
        assert_eq!(p.argv, cstrings(&argv), "{name}");
        assert_eq!(p.env, cstrings(&env), "{name}");
        assert_eq!(p.cgroup, cgroup::service_cgroup(root, &name), "{name}");
        assert_eq!(p.cgroup_limits.len(), limits, "{name}");
        assert_eq!(p.launch, launch::plan(&svc, 4096), "{name}");
        assert_eq!(p.backoff, svc.backoff);
    }
}

#[test]
fn plan_keeps_restart_on_exit_after_and_ready() {
    let mut s = service("s", &["/bin/true"]);
    s.restart = Restart::OnFailure;
    s.on_exit = Some(Action::Reboot);
    s.after = vec![ServiceName::try_from("db").unwrap()];
    s.ready = Some(Readiness::File("/run/s.ready".into()));
    s.ready_timeout = Duration::from_secs(7);
    let p = plan_service(&s, Path::new("/cg"), 4096);
    assert_eq!(p.restart, Restart::OnFailure);
    assert_eq!(p.on_exit, Some(Action::Reboot));
    assert_eq!(p.after, ["db"]);
    assert_eq!(p.ready, Some(Readiness::File("/run/s.ready".into())));
    assert_eq!(p.ready_timeout, Duration::from_secs(7));
}

#[test]
fn start_order_respects_after_and_keeps_config_order() {
    let with_after = |name: &str, after: &[&str]| {
        let mut s = service(name, &["/x"]);
        s.after = after
            .iter()
            .map(|a| ServiceName::try_from(*a).unwrap())
            .collect();
        s
    };
    let cases: Vec<(Vec<Service>, Vec<usize>)> = vec![
        (vec![], vec![]),
        (vec![with_after("a", &[]), with_after("b", &[])], vec![0, 1]),
        (
            vec![with_after("web", &["db"]), with_after("db", &[])],
            vec![1, 0],
        ),
        (
            vec![
                with_after("c", &["a", "b"]),
                with_after("b", &["a"]),
                with_after("z", &[]),
                with_after("a", &[]),
            ],
            vec![2, 3, 1, 0],
        ),
        // A cycle (refused by the config; appended in config order here).
        (
            vec![
                with_after("x", &["y"]),
                with_after("y", &["x"]),
                with_after("f", &[]),
            ],
            vec![2, 0, 1],
        ),
        // An unknown dependency does not hold a service back.
        (vec![with_after("x", &["ghost"])], vec![0]),
    ];
    for (services, want) in cases {
        assert_eq!(start_order(&services), want);
    }
}

#[test]
fn plan_with_nul_byte_is_refused_at_start() {
    let mut bad_env = service("n2", &["/bin/true"]);
    bad_env.env.insert("K".into(), "v\0".into());
    for svc in [service("n1", &["/bin/a\0b"]), bad_env] {
        let p = plan_service(&svc, Path::new("/cg"), 4096);
        assert!(p.argv.is_empty());
        let mut sup = Supervisor::new(vec![p]);
        let err = sup.start_all().unwrap_err();
        assert!(
            matches!(err, SupervisorError::InvalidCommand { .. }),
            "{err}"
        );
    }
}

#[test]
fn exit_status_decoding_and_display() {
    let cases = [
        (0x0000, ExitStatus::Code(0), "exit code 0"),
        (0x0300, ExitStatus::Code(3), "exit code 3"),
        (0x0009, ExitStatus::Signal(9), "killed by SIGKILL"),
        (0x000f, ExitStatus::Signal(15), "killed by SIGTERM"),
        (0x0022, ExitStatus::Signal(34), "killed by signal 34"),
        (0x137f, ExitStatus::Other(0x137f), "wait status 0x137f"),
    ];
    for (raw, want, text) in cases {
        let got = ExitStatus::from_raw(raw);
        assert_eq!(got, want, "{raw:#x}");
        assert_eq!(got.to_string(), text);
    }
    assert!(ExitStatus::Code(0).success());
    assert!(!ExitStatus::Code(1).success());
    assert!(!ExitStatus::Signal(9).success());
}

#[test]
fn exit_decision_table() {
    use Restart::*;
    let ok = ExitStatus::Code(0);
    let bad = ExitStatus::Code(2);
    let killed = ExitStatus::Signal(9);
    let cases = [
        (Never, None, ok, false, Decision::None),
        (Never, None, bad, false, Decision::None),
        (OnFailure, None, ok, false, Decision::None),
        (OnFailure, None, bad, false, Decision::Restart),
        (OnFailure, None, killed, false, Decision::Restart),
        (Always, None, ok, false, Decision::Restart),
        (Always, None, killed, false, Decision::Restart),
        (
            Always,
            Some(Action::Halt),
            ok,
            false,
            Decision::Shutdown(Action::Halt),
        ),
        (
            Never,
            Some(Action::Poweroff),
            bad,
            false,
            Decision::Shutdown(Action::Poweroff),
        ),
        (Always, None, killed, true, Decision::None),
        (Never, Some(Action::Reboot), ok, true, Decision::None),
    ];
    for (restart, on_exit, status, stopping, want) in cases {
        assert_eq!(
            exit_decision(restart, on_exit, status, stopping),
            want,
            "{restart} {on_exit:?} {status} {stopping}"
        );
    }
}

#[test]
fn decision_or_keeps_the_first_shutdown() {
    let cases = [
        (Decision::None, Decision::None, Decision::None),
        (
            Decision::None,
            Decision::Shutdown(Action::Halt),
            Decision::Shutdown(Action::Halt),
        ),
        (Decision::Restart, Decision::None, Decision::None),
        (
            Decision::Shutdown(Action::Reboot),
            Decision::Shutdown(Action::Halt),
            Decision::Shutdown(Action::Reboot),
        ),
        (
            Decision::Shutdown(Action::Reboot),
            Decision::None,
            Decision::Shutdown(Action::Reboot),
        ),
    ];
    for (a, b, want) in cases {
        assert_eq!(a.or(b), want);
    }
}

#[test]
fn dependency_rules() {
    let now = Instant::now();
    let pid = Pid::from_raw(5);
    let waiting = ReadyState::Waiting {
        deadline: now,
        next_check: now,
        attempt: 0,
    };
    let cases = [
        (
            ServiceState::Running { pid },
            ReadyState::Ready,
            DepStatus::Ready,
        ),
        (
            ServiceState::Exited {
                status: ExitStatus::Code(0),
            },
            ReadyState::Ready,
            DepStatus::Ready,
        ),
        (ServiceState::Running { pid }, waiting, DepStatus::Waiting),
        (
            ServiceState::Pending,
            ReadyState::NotRunning,
            DepStatus::Waiting,
        ),
        (
            ServiceState::Restarting {
                at: now,
                crash_loop: false,
            },
            ReadyState::NotRunning,
            DepStatus::Waiting,
        ),
        (
            ServiceState::Running { pid },
            ReadyState::TimedOut,
            DepStatus::Failed("did not become ready within its ready_timeout"),
        ),
        (
            ServiceState::Exited {
                status: ExitStatus::Code(1),
            },
            ReadyState::NotRunning,
            DepStatus::Failed("exited before it was ready"),
        ),
        (
            ServiceState::Blocked,
            ReadyState::NotRunning,
            DepStatus::Failed("was not started itself"),
        ),
    ];
    for (state, ready, want) in cases {
        assert_eq!(dep_status(state, ready), want, "{state:?} {ready:?}");
    }
    let verdicts = [
        (vec![], Verdict::Start),
        (vec![("a", DepStatus::Ready)], Verdict::Start),
        (
            vec![("a", DepStatus::Ready), ("b", DepStatus::Waiting)],
            Verdict::Wait,
        ),
        (
            vec![("a", DepStatus::Waiting), ("b", DepStatus::Failed("x"))],
            Verdict::Block("b".into(), "x"),
        ),
    ];
    for (deps, want) in verdicts {
        assert_eq!(dependency_verdict(deps.clone()), want, "{deps:?}");
    }
}

#[test]
fn orphans_and_stopping_without_fds() {
    let mut sup = Supervisor::new(vec![plan_service(
        &service("x", &["/bin/true"]),
        Path::new("/cg"),
        4096,
    )]);
    assert_eq!(
        sup.on_exit(Pid::from_raw(555), ExitStatus::Code(0)),
        Decision::None
    );
    assert_eq!(sup.orphans_reaped(), 1);
    assert_eq!(sup.state("x"), Some(ServiceState::Pending));
    assert_eq!(sup.state("missing"), None);
    assert!(sup.poll_fd().is_none());
    sup.begin_shutdown();
    assert!(sup.stopping());
    sup.start_all().unwrap();
    assert_eq!(sup.state("x"), Some(ServiceState::Pending));
    assert_eq!(sup.running(), 0);
}

// ---- The whole machine, in a forked child that plays PID 1 ----

/// Runs `body` in a forked, single-threaded child with the handled signals blocked (as in
/// PID 1), so `waitpid(-1)` only sees the children it makes; panics with the child's error.
fn in_child(body: impl FnOnce() -> Result<(), String>) {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    // SAFETY: the child runs the body and leaves with `_exit`; glibc's malloc is fork-safe.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(read_end);
            let result = event::block_signals()
                .map_err(|e| e.to_string())
                .and_then(|()| body());
            let code = match result {
                Ok(()) => 0,
                Err(message) => {
                    let _ = nix::unistd::write(&write_end, message.as_bytes());
                    1
                }
            };
            // SAFETY: leave without running the test harness's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut message = String::new();
            std::fs::File::from(read_end)
                .read_to_string(&mut message)
                .unwrap();
            match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, 0) => {}
                other => panic!("child: {other:?}: {message}"),
            }
        }
    }
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root");
    false
}

/// A plan without namespaces in a fake cgroup under `dir`.
fn test_plan(dir: &Path, s: &mut Service) -> ServicePlan {
    s.namespaces.clear();
    s.read_only_root = false;
    let cg = dir.join("cg").join(s.name.as_str());
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::write(cg.join("cgroup.procs"), b"").unwrap();
    let mut p = plan_service(s, &dir.join("unused"), 1 << 20);
    p.cgroup = cg;
    p
}

/// One turn of PID 1's loop for the supervisor: its fd, then signals (reap).
fn turn(sup: &mut Supervisor, events: &Events, ready: &event::Ready) -> Result<(), String> {
    if ready.supervisor {
        sup.on_poll();
    }
    if ready.signals {
        events.drain_signals(|_| {}).map_err(|e| e.to_string())?;
        reap_children(|pid, status| {
            sup.on_exit(pid, status);
        });
    }
    Ok(())
}

/// PID 1's loop in miniature: signals (reap) and the supervisor's fd, until `done` or `limit`.
fn drive(
    sup: &mut Supervisor,
    limit: Duration,
    mut done: impl FnMut(&Supervisor) -> bool,
) -> Result<(), String> {
    let events = Events::new(Some(limit)).map_err(|e| e.to_string())?;
    if let Some(fd) = sup.poll_fd() {
        events.watch_supervisor(fd).map_err(|e| e.to_string())?;
    }
    loop {
        if done(sup) {
            return Ok(());
        }
        let ready = events.wait().map_err(|e| e.to_string())?;
        turn(sup, &events, &ready)?;
        if ready.timer {
            return if done(sup) {
                Ok(())
            } else {
                Err("time limit reached".into())
            };
        }
    }
}

fn log_text(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("log").join(format!("{name}.log"))).unwrap_or_default()
}

fn quiet(plans: Vec<ServicePlan>, dir: &Path) -> Supervisor {
    let mut sup = Supervisor::with_log_dir(plans, &dir.join("log"));
    sup.set_console(false);
    sup
}

#[test]
fn failing_service_backs_off_into_a_crash_loop() {
    if !root() {
        return;
    }
    in_child(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut s = service("flaky", &["/bin/sh", "-c", "echo run; exit 3"]);
        s.restart = Restart::OnFailure;
        s.backoff = BackoffConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            stable_after: Duration::from_secs(30),
            crash_loop_restarts: 4,
            crash_loop_window: Duration::from_secs(30),
        };
        let mut sup = quiet(vec![test_plan(dir.path(), &mut s)], dir.path());
        sup.start_all().map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut crash_loop_seen = false;
        let _ = drive(&mut sup, Duration::from_millis(1200), |sup| {
            crash_loop_seen |= matches!(
                sup.state("flaky"),
                Some(ServiceState::Restarting {
                    crash_loop: true,
                    ..
                })
            );
            false
        });
        let runs = log_text(dir.path(), "flaky")
            .matches("flaky: run\n")
            .count();
        // 20 + 40 + 80 + 200 (crash loop: cap) + 200 ... within 1.2 s: about 6 runs.
        if !(4..=9).contains(&runs) {
            return Err(format!("{runs} runs in {:?}", started.elapsed()));
        }
        if !crash_loop_seen {
            return Err("no crash loop state".into());
        }
        Ok(())
    });
}

#[test]
fn sigkilled_always_service_is_restarted_and_oneshots_stay_down() {
    if !root() {
        return;
    }
    in_child(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut daemon = service("daemon", &["/bin/sleep", "30"]);
        daemon.restart = Restart::Always;
        daemon.backoff.initial = Duration::from_millis(10);
        let mut oneshot = service("oneshot", &["/bin/true"]);
        let mut sup = quiet(
            vec![
                test_plan(dir.path(), &mut daemon),
                test_plan(dir.path(), &mut oneshot),
            ],
            dir.path(),
        );
        sup.start_all().map_err(|e| e.to_string())?;
        let Some(ServiceState::Running { pid: first }) = sup.state("daemon") else {
            return Err(format!("{:?}", sup.state("daemon")));
        };
        nix::sys::signal::kill(first, nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| e.to_string())?;
        drive(&mut sup, Duration::from_secs(5), |sup| {
            matches!(sup.state("daemon"), Some(ServiceState::Running { pid }) if pid != first)
                && matches!(sup.state("oneshot"), Some(ServiceState::Exited { .. }))
        })?;
        if sup.state("oneshot")
            != Some(ServiceState::Exited {
                status: ExitStatus::Code(0),
            })
        {
            return Err(format!("{:?}", sup.state("oneshot")));
        }
        // Leave no sleeper behind.
        if let Some(ServiceState::Running { pid }) = sup.state("daemon") {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        Ok(())
    });
}

#[test]
fn after_waits_for_a_ready_file_and_a_socket() {
    if !root() {
        return;
    }
    in_child(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().display().to_string();
        let ready_file = dir.path().join("db.ready");
        let sock = dir.path().join("api.sock");
        let mut db = service(
            "db",
            &[
                "/bin/sh",
                "-c",
                &format!("sleep 0.3; touch {d}/db.ready; exec sleep 30"),
            ],
        );
        db.ready = Some(Readiness::File(ready_file.clone()));
        db.ready_timeout = Duration::from_secs(5);
        let mut api = service("api", &["/bin/sleep", "30"]);
        api.after = vec![ServiceName::try_from("db").unwrap()];
        api.ready = Some(Readiness::UnixSocket(sock.clone()));
        api.ready_timeout = Duration::from_secs(5);
        let mut web = service(
            "web",
            &[
                "/bin/sh",
                "-c",
                &format!("[ -e {d}/db.ready ] && echo db-was-ready"),
            ],
        );
        web.after = vec![
            ServiceName::try_from("api").unwrap(),
            ServiceName::try_from("db").unwrap(),
        ];
        // A stale ready file from an earlier boot must not count.
        std::fs::write(&ready_file, b"stale").map_err(|e| e.to_string())?;
        let plans = vec![
            test_plan(dir.path(), &mut db),
            test_plan(dir.path(), &mut api),
            test_plan(dir.path(), &mut web),
        ];
        let mut sup = quiet(plans, dir.path());
        sup.start_all().map_err(|e| e.to_string())?;
        if sup.state("api") != Some(ServiceState::Pending) || ready_file.exists() {
            return Err(format!("api {:?} before db is ready", sup.state("api")));
        }
        drive(&mut sup, Duration::from_secs(5), |sup| {
            matches!(sup.state("api"), Some(ServiceState::Running { .. }))
        })?;
        if sup.state("web") != Some(ServiceState::Pending) {
            return Err(format!("web {:?} before the api socket", sup.state("web")));
        }
        // The "api" socket appears 100 ms later (bound by this process: readiness only needs
        // a listener).
        std::thread::sleep(Duration::from_millis(100));
        let _listener = UnixListener::bind(&sock).map_err(|e| e.to_string())?;
        drive(&mut sup, Duration::from_secs(5), |sup| {
            matches!(sup.state("web"), Some(ServiceState::Exited { .. }))
        })?;
        let log = log_text(dir.path(), "web");
        if log != "web: db-was-ready\n" {
            return Err(format!("web log: {log:?}"));
        }
        for name in ["db", "api"] {
            if let Some(ServiceState::Running { pid }) = sup.state(name) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        Ok(())
    });
}

#[test]
fn a_dependency_that_never_gets_ready_blocks_its_dependents() {
    if !root() {
        return;
    }
    in_child(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut db = service("db", &["/bin/sleep", "30"]);
        db.ready = Some(Readiness::File(dir.path().join("never")));
        db.ready_timeout = Duration::from_millis(300);
        let mut web = service("web", &["/bin/true"]);
        web.after = vec![ServiceName::try_from("db").unwrap()];
        let mut worker = service("worker", &["/bin/true"]);
        worker.after = vec![ServiceName::try_from("web").unwrap()];
        let plans = vec![
            test_plan(dir.path(), &mut db),
            test_plan(dir.path(), &mut web),
            test_plan(dir.path(), &mut worker),
        ];
        let mut sup = quiet(plans, dir.path());
        sup.start_all().map_err(|e| e.to_string())?;
        let start = Instant::now();
        drive(&mut sup, Duration::from_secs(5), |sup| {
            sup.state("worker") == Some(ServiceState::Blocked)
        })?;
        let waited = start.elapsed();
        if waited < Duration::from_millis(250) {
            return Err(format!("blocked after {waited:?}"));
        }
        if sup.state("web") != Some(ServiceState::Blocked)
            || sup.ready_state("db") != Some(ReadyState::TimedOut)
        {
            return Err(format!(
                "{:?} {:?}",
                sup.state("web"),
                sup.ready_state("db")
            ));
        }
        if let Some(ServiceState::Running { pid }) = sup.state("db") {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        Ok(())
    });
}

#[test]
fn output_is_prefixed_cut_and_logged() {
    if !root() {
        return;
    }
    in_child(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let script =
            "echo hello; echo oops >&2; head -c 10000 /dev/zero | tr '\\0' x; echo; printf tail";
        let mut s = service("chatty", &["/bin/sh", "-c", script]);
        let mut sup = quiet(vec![test_plan(dir.path(), &mut s)], dir.path());
        sup.start_all().map_err(|e| e.to_string())?;
        drive(&mut sup, Duration::from_secs(5), |sup| {
            matches!(sup.state("chatty"), Some(ServiceState::Exited { .. }))
                && log_text(dir.path(), "chatty").ends_with("chatty: tail\n")
        })?;
        let log = log_text(dir.path(), "chatty");
        let lines: Vec<&str> = log.lines().collect();
        let long = format!("chatty: {} [cut]", "x".repeat(output::MAX_LINE));
        let want = [
            "chatty: hello",
            "chatty: oops",
            long.as_str(),
            "chatty: tail",
        ];
        if lines != want {
            return Err(format!(
                "{:?}",
                lines
                    .iter()
                    .map(|l| &l[..l.len().min(40)])
                    .collect::<Vec<_>>()
            ));
        }
        Ok(())
    });
}

#[test]
fn a_start_failure_goes_through_the_exit_policy() {
    if !root() {
        return;
    }
    in_child(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut s = service("limited", &["/bin/true"]);
        s.on_exit = Some(Action::Halt);
        let mut p = test_plan(dir.path(), &mut s);
        // A limit file that does not exist: the start fails before the fork.
        p.cgroup_limits = vec![CgroupOp::Write {
            path: dir.path().join("absent/pids.max"),
            value: "1".into(),
        }];
        let mut sup = quiet(vec![p], dir.path());
        sup.start_all().map_err(|e| e.to_string())?;
        if sup.take_deferred() != Decision::Shutdown(Action::Halt) {
            return Err("no deferred shutdown".into());
        }
        if sup.state("limited")
            != Some(ServiceState::Exited {
                status: ExitStatus::Code(EXEC_FAILED),
            })
        {
            return Err(format!("{:?}", sup.state("limited")));
        }
        Ok(())
    });
}

// ---- The control socket against the real supervisor ----

/// PID 1's loop with the control server too, until `done` or `limit`.
fn drive_serving(
    sup: &mut Supervisor,
    server: &mut crate::control::server::Server,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let events = Events::new(Some(limit)).map_err(|e| e.to_string())?;
    if let Some(fd) = sup.poll_fd() {
        events.watch_supervisor(fd).map_err(|e| e.to_string())?;
    }
    events
        .watch_control(server.poll_fd())
        .map_err(|e| e.to_string())?;
    // The client thread does not wake this loop when it finishes: a short tick does.
    let tick = nix::sys::timerfd::TimerFd::new(
        nix::sys::timerfd::ClockId::CLOCK_MONOTONIC,
        nix::sys::timerfd::TimerFlags::TFD_NONBLOCK,
    )
    .map_err(|e| e.to_string())?;
    tick.set(
        nix::sys::timerfd::Expiration::Interval(TimeSpec::from_duration(Duration::from_millis(50))),
        TimerSetTimeFlags::empty(),
    )
    .map_err(|e| e.to_string())?;
    events
        .watch_supervisor(tick.as_fd())
        .map_err(|e| e.to_string())?;
    loop {
        if done() {
            return Ok(());
        }
        let ready = events.wait().map_err(|e| e.to_string())?;
        let _ = tick.wait();
        turn(sup, &events, &ready)?;
        if ready.control {
            server.on_poll(sup);
        }
        server.pump();
        if ready.timer {
            return Err("time limit reached".into());
        }
    }
}

/// The operator's side: status, restart, stop, start and logs over the socket.
fn control_script(path: &Path) -> Result<(), String> {
    use crate::control::client::Client;
    use crate::control::proto::{EntryKind, ErrorCode, Reply, Request, ServiceStatus};
    let call = |request: Request| -> Result<Reply, String> {
        Client::connect(path, Some(Duration::from_secs(10)))
            .and_then(|mut c| c.call(&request))
            .map_err(|e| e.to_string())
    };
    let status = |name: &str| -> Result<ServiceStatus, String> {
        match call(Request::Status {})? {
            Reply::Status(s) => s
                .services
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| format!("{name} not in status")),
            other => Err(format!("{other:?}")),
        }
    };
    let wait_for = |name: &str, what: &str, ok: &dyn Fn(&ServiceStatus) -> bool| {
        let start = Instant::now();
        loop {
            let s = status(name)?;
            if ok(&s) {
                return Ok::<_, String>((s, start.elapsed()));
            }
            if start.elapsed() > Duration::from_secs(5) {
                return Err(format!("{name}: never {what}: {s:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let done = |reply: Reply| match reply {
        Reply::Done { message } => Ok(message),
        other => Err(format!("{other:?}")),
    };
    let logs = |name: &str| -> Result<Vec<(EntryKind, String)>, String> {
        let mut c =
            Client::connect(path, Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        c.send(&Request::Logs {
            service: Some(name.into()),
            since_ms: None,
            tail: None,
            follow: false,
        })
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        loop {
            match c.recv().map_err(|e| e.to_string())? {
                Some(Reply::Entry(e)) => out.push((e.kind, e.message)),
                Some(Reply::End) => return Ok(out),
                other => return Err(format!("{other:?}")),
            }
        }
    };

    let (first, _) = wait_for("sleeper", "running", &|s| s.state == "running")?;
    let first_pid = first.pid.ok_or("no pid")?;
    done(call(Request::Restart {
        service: "sleeper".into(),
    })?)?;
    let (again, _) = wait_for("sleeper", "restarted", &|s| {
        s.state == "running" && s.pid.is_some_and(|p| p != first_pid)
    })?;
    if again.restarts != 1 || again.last_exit.as_deref() != Some("killed by SIGTERM") {
        return Err(format!("after restart: {again:?}"));
    }
    done(call(Request::Stop {
        service: "sleeper".into(),
    })?)?;
    wait_for("sleeper", "stopped", &|s| {
        s.state == "stopped" && s.pid.is_none()
    })?;
    // Its policy (always) does not bring it back.
    std::thread::sleep(Duration::from_millis(300));
    let still = status("sleeper")?;
    if still.state != "stopped" {
        return Err(format!("restarted by its policy: {still:?}"));
    }
    match call(Request::Stop {
        service: "sleeper".into(),
    })? {
        Reply::Error {
            code: ErrorCode::InvalidState,
            ..
        } => {}
        other => return Err(format!("second stop: {other:?}")),
    }
    let started = done(call(Request::Start {
        service: "sleeper".into(),
    })?)?;
    if !started.starts_with("started sleeper") {
        return Err(started);
    }
    wait_for("sleeper", "running again", &|s| s.state == "running")?;

    // A service that ignores SIGTERM is killed after the stop timeout.
    let armed = Instant::now();
    while !logs("stubborn")?.iter().any(|(_, m)| m == "armed") {
        if armed.elapsed() > Duration::from_secs(5) {
            return Err("stubborn never armed its trap".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done(call(Request::Stop {
        service: "stubborn".into(),
    })?)?;
    let (killed, took) = wait_for("stubborn", "killed", &|s| s.state == "stopped")?;
    if killed.last_exit.as_deref() != Some("killed by SIGKILL") || took < Duration::from_millis(200)
    {
        return Err(format!("stubborn after {took:?}: {killed:?}"));
    }

    let events: Vec<String> = logs("sleeper")?
        .into_iter()
        .filter(|(k, _)| *k == EntryKind::Event)
        .map(|(_, m)| m.split(' ').next().unwrap_or_default().to_owned())
        .collect();
    let want = [
        "started",
        "ready",
        "stop-requested",
        "stopped",
        "started",
        "ready",
        "stop-requested",
        "stopped",
        "started",
        "ready",
    ];
    if events != want {
        return Err(format!("sleeper events: {events:?}"));
    }
    let stubborn: Vec<String> = logs("stubborn")?
        .into_iter()
        .filter(|(k, _)| *k == EntryKind::Event)
        .map(|(_, m)| m)
        .collect();
    if !stubborn.iter().any(|m| m.starts_with("killed pid=")) {
        return Err(format!("stubborn events: {stubborn:?}"));
    }
    match call(Request::Restart {
        service: "ghost".into(),
    })? {
        Reply::Error {
            code: ErrorCode::UnknownService,
            ..
        } => Ok(()),
        other => Err(format!("ghost: {other:?}")),
    }
}

#[test]
fn control_socket_restarts_stops_and_starts_real_services() {
    if !root() {
        return;
    }
    in_child(|| {
        use crate::control::server::{Server, Settings};
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut sleeper = service("sleeper", &["/bin/sleep", "30"]);
        sleeper.restart = Restart::Always;
        sleeper.backoff.initial = Duration::from_millis(10);
        let mut stubborn = service(
            "stubborn",
            &[
                "/bin/sh",
                "-c",
                "trap '' TERM; echo armed; while :; do sleep 0.05; done",
            ],
        );
        let plans = vec![
            test_plan(dir.path(), &mut sleeper),
            test_plan(dir.path(), &mut stubborn),
        ];
        let mut sup = quiet(plans, dir.path());
        sup.set_stop_timeout(Duration::from_millis(300));
        sup.start_all().map_err(|e| e.to_string())?;
        let path = dir.path().join("control.sock");
        let mut server = Server::bind(
            Settings {
                socket: path.clone(),
                ..Settings::default()
            },
            None,
        )
        .map_err(|e| e.to_string())?;
        let client = std::thread::spawn(move || control_script(&path));
        let driven = drive_serving(&mut sup, &mut server, Duration::from_secs(30), || {
            client.is_finished()
        });
        let scripted = client
            .join()
            .map_err(|_| "client thread panicked".to_string())?;
        for name in ["sleeper", "stubborn"] {
            if let Some(ServiceState::Running { pid } | ServiceState::Stopping { pid, .. }) =
                sup.state(name)
            {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        driven?;
        scripted
    });
}
