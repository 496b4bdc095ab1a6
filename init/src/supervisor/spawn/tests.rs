//! The apply layer, run for real: each case spawns a child with a launch plan and reads what it
//! printed (mostly `/proc/self/status`). Cases that need root skip without it.

use super::*;
use crate::supervisor::launch;
use nix::sys::wait::{waitpid, WaitStatus};
use rampart_config::{Capability, Restart, SeccompProfile, Service, ServiceName};
use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

#[test]
fn decimal_formatting() {
    let cases = [
        (0, "0"),
        (7, "7"),
        (42, "42"),
        (1000, "1000"),
        (u32::MAX, "4294967295"),
    ];
    for (n, want) in cases {
        let mut buf = [0u8; 10];
        assert_eq!(format_decimal(n, &mut buf), want.as_bytes());
    }
}

#[test]
fn clone_flags_table() {
    let sig = libc::c_long::from(libc::SIGCHLD);
    let cases: &[(&[Namespace], libc::c_int)] = &[
        (&[], 0),
        (&[Namespace::Mount], libc::CLONE_NEWNS),
        (
            &[Namespace::Net, Namespace::Ipc],
            libc::CLONE_NEWNET | libc::CLONE_NEWIPC,
        ),
        (
            &[
                Namespace::Mount,
                Namespace::Ipc,
                Namespace::Uts,
                Namespace::Net,
                Namespace::Pid,
            ],
            libc::CLONE_NEWNS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWPID,
        ),
    ];
    for (ns, flags) in cases {
        assert_eq!(clone_flags(ns), sig | libc::c_long::from(*flags), "{ns:?}");
    }
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root");
    false
}

/// A service whose "cgroup" is a temp dir holding a plain `cgroup.procs` file.
fn service(argv: &[&str]) -> Service {
    Service::new(
        ServiceName::try_from("test").unwrap(),
        argv.iter().map(|s| s.to_string()).collect(),
    )
}

fn plan_of(service: &Service, cgroup: &std::path::Path) -> ServicePlan {
    std::fs::write(cgroup.join("cgroup.procs"), b"").unwrap();
    ServicePlan {
        name: service.name.as_str().to_owned(),
        argv: service
            .exec
            .iter()
            .map(|s| CString::new(s.as_str()).unwrap())
            .collect(),
        env: vec![
            CString::new("PATH=/usr/bin:/bin").unwrap(),
            CString::new("FOO=bar").unwrap(),
        ],
        cgroup: cgroup.to_path_buf(),
        restart: Restart::Never,
        on_exit: None,
        launch: launch::plan(service, 1 << 20),
        cgroup_limits: Vec::new(),
        backoff: service.backoff,
        after: Vec::new(),
        ready: None,
        ready_timeout: Duration::from_secs(1),
    }
}

/// Spawns the plan, returns (exit code or -signal, everything it wrote to stdout/stderr).
fn run(plan: &ServicePlan) -> (i32, String) {
    let stdin = std::fs::File::open("/dev/null").unwrap();
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let pid = spawn(plan, stdin.as_fd(), write_end.as_fd()).unwrap();
    drop(write_end);
    let mut out = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut out)
        .unwrap();
    let code = match waitpid(pid, None).unwrap() {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => -(sig as i32),
        other => panic!("{other:?}"),
    };
    (code, out)
}

/// The value of `Key:` in a `/proc/self/status` dump.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

fn no_namespaces(s: &mut Service) {
    s.namespaces.clear();
    s.read_only_root = false;
}

#[test]
fn basic_child_state() {
    if !root() {
        return;
    }
    let cases: &[(&str, &[&str], i32)] = &[
        ("true", &["/bin/true"], 0),
        ("false", &["/bin/false"], 1),
        (
            "env",
            &[
                "/bin/sh",
                "-c",
                "[ \"$FOO\" = bar ] && [ \"$PATH\" = /usr/bin:/bin ]",
            ],
            0,
        ),
        (
            "argv",
            &[
                "/bin/sh",
                "-c",
                "[ \"$0\" = zero ] && [ \"$1\" = one ]",
                "zero",
                "one",
            ],
            0,
        ),
        (
            "stdin",
            &[
                "/bin/sh",
                "-c",
                "[ \"$(readlink /proc/self/fd/0)\" = /dev/null ]",
            ],
            0,
        ),
        (
            "session leader",
            &[
                "/bin/sh",
                "-c",
                "read -r pid comm st pp pg sid rest < /proc/self/stat; [ \"$pid\" = \"$sid\" ]",
            ],
            0,
        ),
        (
            "no blocked signal",
            &[
                "/bin/grep",
                "-q",
                "^SigBlk:[[:space:]]*0*$",
                "/proc/self/status",
            ],
            0,
        ),
        (
            "no ignored signal",
            &[
                "/bin/grep",
                "-q",
                "^SigIgn:[[:space:]]*0*$",
                "/proc/self/status",
            ],
            0,
        ),
        (
            "no fd beyond 2",
            &["/bin/sh", "-c", "[ \"$(ls /proc/self/fd | wc -l)\" -le 4 ]"],
            0,
        ),
        ("exec failure", &["/nonexistent/binary"], EXEC_FAILED),
    ];
    for (what, argv, code) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut s = service(argv);
        no_namespaces(&mut s);
        let (got, out) = run(&plan_of(&s, dir.path()));
        assert_eq!(got, *code, "{what}: {out}");
        let procs = std::fs::read_to_string(dir.path().join("cgroup.procs")).unwrap();
        assert_eq!(procs, "0", "{what}");
    }
}

#[test]
fn failures_name_the_step_on_the_output() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = service(&["/nonexistent/binary"]);
    no_namespaces(&mut s);
    let (code, out) = run(&plan_of(&s, dir.path()));
    assert_eq!(code, EXEC_FAILED);
    assert_eq!(out, "rampart-init: service test: execve: errno 2\n");
    // A missing cgroup fails the child before anything else.
    let mut plan = plan_of(&s, dir.path());
    plan.cgroup = dir.path().join("absent");
    let (code, out) = run(&plan);
    assert_eq!(code, EXEC_FAILED);
    assert!(out.contains("open cgroup.procs: errno 2"), "{out}");
}

#[test]
fn empty_argv_is_refused_before_fork() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_of(&service(&[]), dir.path());
    let stdin = std::fs::File::open("/dev/null").unwrap();
    let err = spawn(&plan, stdin.as_fd(), stdin.as_fd()).unwrap_err();
    assert!(
        matches!(err, SupervisorError::InvalidCommand { .. }),
        "{err}"
    );
}

/// The capability and privilege lines of `/proc/self/status` for each launch.
#[test]
fn credentials_capabilities_and_filters() {
    if !root() {
        return;
    }
    let all_caps_but = |kept: u64| format!("{kept:016x}");
    type Edit = fn(&mut Service);
    type Case = (&'static str, Edit, Vec<(&'static str, String)>);
    let cases: Vec<Case> = vec![
        (
            "defaults: nothing kept even as root",
            |_| {},
            vec![
                ("Uid", "0\t0\t0\t0".into()),
                ("CapInh", all_caps_but(0)),
                ("CapPrm", all_caps_but(0)),
                ("CapEff", all_caps_but(0)),
                ("CapBnd", all_caps_but(0)),
                ("CapAmb", all_caps_but(0)),
                ("NoNewPrivs", "1".into()),
                ("Seccomp", "0".into()),
            ],
        ),
        (
            "root keeping CAP_NET_ADMIN",
            |s| s.capabilities = vec![Capability::try_from("CAP_NET_ADMIN").unwrap()],
            vec![
                ("CapPrm", all_caps_but(1 << 12)),
                ("CapEff", all_caps_but(1 << 12)),
                ("CapBnd", all_caps_but(1 << 12)),
                ("CapAmb", all_caps_but(1 << 12)),
            ],
        ),
        (
            "user 1000 keeping two capabilities through ambient",
            |s| {
                s.user = Some(1000);
                s.group = Some(1001);
                s.supplementary_groups = vec![5, 6];
                s.capabilities = vec![
                    Capability::try_from("CAP_NET_BIND_SERVICE").unwrap(),
                    Capability::try_from("CAP_NET_ADMIN").unwrap(),
                ];
            },
            vec![
                ("Uid", "1000\t1000\t1000\t1000".into()),
                ("Gid", "1001\t1001\t1001\t1001".into()),
                ("Groups", "5 6".into()),
                ("CapInh", all_caps_but((1 << 12) | (1 << 10))),
                ("CapPrm", all_caps_but((1 << 12) | (1 << 10))),
                ("CapEff", all_caps_but((1 << 12) | (1 << 10))),
                ("CapBnd", all_caps_but((1 << 12) | (1 << 10))),
                ("CapAmb", all_caps_but((1 << 12) | (1 << 10))),
            ],
        ),
        (
            "user without capabilities",
            |s| s.user = Some(65534),
            vec![
                ("Uid", "65534\t65534\t65534\t65534".into()),
                ("Gid", "65534\t65534\t65534\t65534".into()),
                ("CapEff", all_caps_but(0)),
            ],
        ),
        (
            "no_new_privs off",
            |s| s.no_new_privs = false,
            vec![("NoNewPrivs", "0".into())],
        ),
        (
            "seccomp default",
            |s| s.seccomp = Some(SeccompProfile::Default),
            vec![("Seccomp", "2".into()), ("NoNewPrivs", "1".into())],
        ),
    ];
    for (what, edit, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut s = service(&["/bin/cat", "/proc/self/status"]);
        no_namespaces(&mut s);
        edit(&mut s);
        let (code, out) = run(&plan_of(&s, dir.path()));
        assert_eq!(code, 0, "{what}: {out}");
        for (key, value) in want {
            assert_eq!(
                status_field(&out, key),
                Some(value.as_str()),
                "{what}: {key}\n{out}"
            );
        }
    }
}

#[test]
fn seccomp_default_refuses_the_listed_calls() {
    if !root() {
        return;
    }
    // `swapoff` of a path that is no swap: EINVAL without the filter, EPERM with it. busybox
    // is static and has swapoff; skip if it is missing.
    let busybox = "/bin/busybox";
    if !std::path::Path::new(busybox).exists() {
        eprintln!("skipped: no {busybox}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = service(&[busybox, "swapoff", "/etc/hostname"]);
    no_namespaces(&mut s);
    s.capabilities = vec![Capability::try_from("CAP_SYS_ADMIN").unwrap()];
    s.seccomp = Some(SeccompProfile::Default);
    let (code, out) = run(&plan_of(&s, dir.path()));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not permitted"), "{out}");
    s.seccomp = None;
    let (code, out) = run(&plan_of(&s, dir.path()));
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("not permitted"), "{out}");
}

#[test]
fn mount_namespace_read_only_root_private_tmp_and_writable_paths() {
    if !root() {
        return;
    }
    let cg = tempfile::tempdir().unwrap();
    let writable = tempfile::tempdir_in("/var/tmp").unwrap();
    let w = writable.path().display().to_string();
    let host_marker = "/var/tmp/rampart-spawn-test-must-not-exist";
    let _ = std::fs::remove_file(host_marker);
    let script = format!(
        "touch {host_marker} 2>/dev/null && echo host-writable; \
         touch {w}/ok && echo writable-ok; \
         touch /tmp/private && echo tmp-ok; \
         [ \"$(ls -A /tmp)\" = private ] && echo tmp-empty; \
         awk '$5 == \"/\" && $6 ~ /^ro(,|$)/ {{ f = 1 }} END {{ exit !f }}' /proc/self/mountinfo && echo root-ro; \
         pwd"
    );
    let mut s = service(&["/bin/sh", "-c", &script]);
    s.writable_paths = vec![writable.path().to_path_buf()];
    s.workdir = writable.path().to_path_buf();
    let (code, out) = run(&plan_of(&s, cg.path()));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["writable-ok", "tmp-ok", "tmp-empty", "root-ro", w.as_str()],
        "{out}"
    );
    assert!(!std::path::Path::new(host_marker).exists());
    assert!(writable.path().join("ok").exists());
    // The host's /tmp did not get the file.
    assert!(!std::path::Path::new("/tmp/private").exists());
}

#[test]
fn pid_and_other_namespaces() {
    if !root() {
        return;
    }
    let cg = tempfile::tempdir().unwrap();
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let script = "echo $$; ls /proc | grep -c '^[0-9]'; readlink /proc/self/ns/uts /proc/self/ns/net /proc/self/ns/ipc";
    let mut s = service(&["/bin/sh", "-c", script]);
    s.namespaces = vec![
        Namespace::Mount,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
        Namespace::Pid,
    ];
    let (code, out) = run(&plan_of(&s, cg.path()));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"1"), "{out}");
    // Its /proc shows its own namespace: the shell and the `ls` (and maybe grep).
    let visible: u32 = lines.get(1).unwrap().parse().unwrap();
    assert!(visible <= 3, "{out}");
    for (line, host) in lines.iter().skip(2).zip([host_uts, host_net, host_ipc]) {
        assert_ne!(*line, host.display().to_string(), "{out}");
    }
}

#[test]
fn network_namespace_has_lo_up() {
    if !root() {
        return;
    }
    let busybox = "/bin/busybox";
    if !std::path::Path::new(busybox).exists() {
        eprintln!("skipped: no {busybox}");
        return;
    }
    let cg = tempfile::tempdir().unwrap();
    let mut s = service(&[busybox, "ip", "-o", "link", "show"]);
    s.namespaces = vec![Namespace::Net];
    s.read_only_root = false;
    let (code, out) = run(&plan_of(&s, cg.path()));
    assert_eq!(code, 0, "{out}");
    // Only lo, and it is up.
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("lo:") && out.contains(",UP"), "{out}");
}

#[test]
fn oom_score_adj_is_written() {
    if !root() {
        return;
    }
    let cg = tempfile::tempdir().unwrap();
    // With the default read-only mount namespace (its /proc is read-only too).
    let mut s = service(&["/bin/cat", "/proc/self/oom_score_adj"]);
    // Raising needs no capability; lowering needs CAP_SYS_RESOURCE, which PID 1 has (a test
    // sandbox may not).
    s.oom_score_adj = Some(500);
    let (code, out) = run(&plan_of(&s, cg.path()));
    assert_eq!((code, out.trim()), (0, "500"));
}

#[test]
fn landlock_limits_the_paths() {
    if !root() {
        return;
    }
    let cg = tempfile::tempdir().unwrap();
    let mut s = service(&[
        "/bin/sh",
        "-c",
        "ls /usr >/dev/null && echo usr-ok; cat /etc/hostname >/dev/null 2>&1 || echo etc-denied",
    ]);
    no_namespaces(&mut s);
    s.landlock = Some(rampart_config::Landlock {
        read_only: ["/usr", "/bin", "/lib", "/lib64"]
            .iter()
            .filter(|p| std::path::Path::new(p).exists())
            .map(std::path::PathBuf::from)
            .collect(),
        read_write: vec!["/dev/null".into()],
    });
    let (code, out) = run(&plan_of(&s, cg.path()));
    if out.contains("landlock is not supported") {
        eprintln!("skipped: this kernel has no landlock");
        return;
    }
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "usr-ok\netc-denied\n");
}
