//! `[[service]]` parsing, defaults and every validation error, table-driven.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::{parse, Problem};

fn services(text: &str) -> Vec<Service> {
    match parse(text, Path::new("/cfg/host.toml")) {
        Ok(c) => c.services,
        Err(e) => panic!("unexpected error:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, Path::new("/cfg/host.toml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

const HEAD: &str = "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n";

#[test]
fn defaults_are_least_privilege() {
    let s = services(HEAD).remove(0);
    assert_eq!(s.user, None);
    assert_eq!(s.group, None);
    assert!(s.supplementary_groups.is_empty());
    assert_eq!(s.workdir, PathBuf::from("/"));
    assert_eq!(s.backoff, BackoffConfig::default());
    assert_eq!(s.backoff.initial, Duration::from_secs(1));
    assert_eq!(s.backoff.max, Duration::from_secs(60));
    assert_eq!(s.backoff.stable_after, Duration::from_secs(30));
    assert!(s.after.is_empty());
    assert_eq!(s.ready, None);
    assert_eq!(s.ready_timeout, DEFAULT_READY_TIMEOUT);
    assert!(s.capabilities.is_empty());
    assert!(s.no_new_privs);
    assert_eq!(s.namespaces, [Namespace::Mount]);
    assert!(s.read_only_root);
    assert!(s.writable_paths.is_empty());
    assert_eq!(s.seccomp, None);
    assert_eq!(s.landlock, None);
    assert_eq!(s.oom_score_adj, None);
    assert_eq!(s.limits, Limits::default());
}

#[test]
fn every_key_parses() {
    let text = r#"
[[service]]
name = "db"
exec = ["/bin/db"]
ready = { unix_socket = "/run/db.sock" }
ready_timeout = "1500ms"

[[service]]
name = "web"
exec = ["/bin/web", "--port", "80"]
restart = "always"
user = 1000
group = 100
supplementary_groups = [10, 20, 10]
workdir = "/var/lib/web"
restart_delay = "250ms"
restart_delay_max = "2m"
stable_after = 10
crash_loop = { restarts = 3, window = "30s" }
after = ["db"]
ready = { file = "/run/web.ready" }
capabilities = ["CAP_NET_BIND_SERVICE", "net_admin", "CAP_NET_ADMIN"]
no_new_privs = true
namespaces = ["pid", "mount", "net", "ipc", "uts"]
read_only_root = true
writable_paths = ["/var/lib/web", "/run/web"]
seccomp = "default"
landlock = { read_only = ["/usr", "/etc"], read_write = ["/var/lib/web"] }
oom_score_adj = -500
memory_max = "256M"
memory_high = 134217728
pids_max = 100
cpu_weight = 200
cpu_max = "50000 100000"
io_weight = 50
"#;
    let all = services(text);
    let db = &all[0];
    assert_eq!(
        db.ready,
        Some(Readiness::UnixSocket(PathBuf::from("/run/db.sock")))
    );
    assert_eq!(db.ready_timeout, Duration::from_millis(1500));
    let s = &all[1];
    assert_eq!(s.restart, crate::Restart::Always);
    assert_eq!((s.user, s.group), (Some(1000), Some(100)));
    assert_eq!(s.supplementary_groups, [10, 20]);
    assert_eq!(s.workdir, PathBuf::from("/var/lib/web"));
    assert_eq!(
        s.backoff,
        BackoffConfig {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(120),
            stable_after: Duration::from_secs(10),
            crash_loop_restarts: 3,
            crash_loop_window: Duration::from_secs(30),
        }
    );
    assert_eq!(s.after.len(), 1);
    assert_eq!(s.after[0].as_str(), "db");
    assert_eq!(
        s.ready,
        Some(Readiness::File(PathBuf::from("/run/web.ready")))
    );
    let caps: Vec<&str> = s.capabilities.iter().map(|c| c.name()).collect();
    assert_eq!(caps, ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]);
    assert_eq!(
        s.namespaces,
        [
            Namespace::Mount,
            Namespace::Ipc,
            Namespace::Uts,
            Namespace::Net,
            Namespace::Pid
        ]
    );
    assert!(s.read_only_root && s.no_new_privs);
    assert_eq!(
        s.writable_paths,
        [PathBuf::from("/var/lib/web"), PathBuf::from("/run/web")]
    );
    assert_eq!(s.seccomp, Some(SeccompProfile::Default));
    assert_eq!(
        s.landlock,
        Some(Landlock {
            read_only: vec![PathBuf::from("/usr"), PathBuf::from("/etc")],
            read_write: vec![PathBuf::from("/var/lib/web")],
        })
    );
    assert_eq!(s.oom_score_adj, Some(-500));
    assert_eq!(s.limits.memory_max.map(|m| m.bytes()), Some(256 << 20));
    assert_eq!(s.limits.memory_high.map(|m| m.bytes()), Some(128 << 20));
    assert_eq!(s.limits.pids_max, Some(100));
    assert_eq!(s.limits.cpu_weight, Some(200));
    assert_eq!(s.limits.cpu_max.as_deref(), Some("50000 100000"));
    assert_eq!(s.limits.io_weight, Some(50));
}

#[test]
fn no_mount_namespace_means_no_read_only_root() {
    let s = services(&format!("{HEAD}namespaces = []\n")).remove(0);
    assert!(s.namespaces.is_empty());
    assert!(!s.read_only_root);
    let s = services(&format!("{HEAD}read_only_root = false\n")).remove(0);
    assert_eq!(s.namespaces, [Namespace::Mount]);
    assert!(!s.read_only_root);
}

#[test]
fn capability_names() {
    assert_eq!(CAPABILITIES.len(), 41);
    for (n, name) in CAPABILITIES.iter().enumerate() {
        let cap = Capability::try_from(*name).unwrap();
        assert_eq!(usize::from(cap.number()), n);
        assert_eq!(cap.name(), *name);
        assert_eq!(cap.to_string(), *name);
    }
    assert_eq!(Capability::try_from("sys_admin").unwrap().number(), 21);
    assert!(Capability::try_from("CAP_NOPE").is_err());
    assert!(Capability::try_from("").is_err());
}

#[test]
fn durations_and_cpu_max() {
    let d = |s: &str| parse_duration(&RawDurationRef::Text(s));
    let cases: &[(&str, Option<Duration>)] = &[
        ("500ms", Some(Duration::from_millis(500))),
        ("2s", Some(Duration::from_secs(2))),
        ("3", Some(Duration::from_secs(3))),
        ("5m", Some(Duration::from_secs(300))),
        ("1h", Some(Duration::from_secs(3600))),
        ("1d", None),
        ("s", None),
        ("-1s", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(d(text).ok(), *want, "{text}");
    }
    assert_eq!(
        parse_duration(&RawDurationRef::Secs(7)).ok(),
        Some(Duration::from_secs(7))
    );
    assert!(parse_duration(&RawDurationRef::Secs(-1)).is_err());
    let cases: &[(&str, Option<&str>)] = &[
        ("max", Some("max 100000")),
        ("max 50000", Some("max 50000")),
        ("50000 100000", Some("50000 100000")),
        ("  20000   100000 ", Some("20000 100000")),
        ("50000", Some("50000 100000")),
        ("999 100000", None),
        ("50000 999", None),
        ("50000 2000000", None),
        ("a b", None),
        ("1 2 3", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_cpu_max(text).ok().as_deref(), *want, "{text}");
    }
}

/// Each bad service and the (key, line, column, part of the message) it must produce.
#[test]
fn every_error_names_key_line_and_reason() {
    let two = "[[service]]\nname = \"b\"\nexec = [\"/b\"]\n";
    let cases: Vec<(String, &str, usize, usize, &str)> = vec![
        (
            format!("{HEAD}user = -1\n"),
            "service[0].user",
            4,
            8,
            "numeric id",
        ),
        (
            format!("{HEAD}user = 4294967295\n"),
            "service[0].user",
            4,
            8,
            "numeric id",
        ),
        (
            format!("{HEAD}user = \"root\"\n"),
            "service[0].user",
            4,
            8,
            "invalid type",
        ),
        (
            format!("{HEAD}group = 5000000000\n"),
            "service[0].group",
            4,
            9,
            "numeric id",
        ),
        (
            format!("{HEAD}supplementary_groups = [1, -2]\n"),
            "service[0].supplementary_groups[1]",
            4,
            28,
            "numeric id",
        ),
        (
            format!("{HEAD}workdir = \"rel\"\n"),
            "service[0].workdir",
            4,
            11,
            "absolute path",
        ),
        (
            format!("{HEAD}workdir = \"/a/../b\"\n"),
            "service[0].workdir",
            4,
            11,
            "must not contain",
        ),
        (
            format!("{HEAD}restart_delay = \"1x\"\n"),
            "service[0].restart_delay",
            4,
            17,
            "unknown unit",
        ),
        (
            format!("{HEAD}restart_delay = 0\n"),
            "service[0].restart_delay",
            4,
            17,
            "more than 0",
        ),
        (
            format!("{HEAD}restart_delay = 10\nrestart_delay_max = 5\n"),
            "service[0].restart_delay_max",
            5,
            21,
            "must not be less",
        ),
        (
            format!("{HEAD}stable_after = \"-\"\n"),
            "service[0].stable_after",
            4,
            16,
            "not a duration",
        ),
        (
            format!("{HEAD}crash_loop = {{ restarts = 0 }}\n"),
            "service[0].crash_loop.restarts",
            4,
            27,
            "1 to 1000",
        ),
        (
            format!("{HEAD}crash_loop = {{ window = \"0s\" }}\n"),
            "service[0].crash_loop.window",
            4,
            25,
            "more than 0",
        ),
        (
            format!("{HEAD}crash_loop = {{ times = 1 }}\n"),
            "service[0].crash_loop",
            4,
            16,
            "unknown field",
        ),
        (
            format!("{HEAD}after = [\"zz\"]\n"),
            "service[0].after[0]",
            4,
            10,
            "not a defined service",
        ),
        (
            format!("{HEAD}after = [\"a\"]\n"),
            "service[0].after[0]",
            4,
            10,
            "after itself",
        ),
        (
            format!("{HEAD}after = [\"B\"]\n"),
            "service[0].after[0]",
            4,
            10,
            "not a service name",
        ),
        (
            format!("{HEAD}after = [\"b\"]\n{two}after = [\"a\"]\n"),
            "service[0].after",
            4,
            10,
            "cycle: a -> b -> a",
        ),
        (
            format!("{HEAD}ready = {{ }}\n"),
            "service[0].ready",
            4,
            9,
            "exactly one",
        ),
        (
            format!("{HEAD}ready = {{ file = \"/x\", unix_socket = \"/y\" }}\n"),
            "service[0].ready",
            4,
            9,
            "exactly one",
        ),
        (
            format!("{HEAD}ready = {{ file = \"x\" }}\n"),
            "service[0].ready.file",
            4,
            18,
            "absolute path",
        ),
        (
            format!("{HEAD}ready = {{ tcp = \"x\" }}\n"),
            "service[0].ready",
            4,
            11,
            "unknown field",
        ),
        (
            format!("{HEAD}ready_timeout = 5\n"),
            "service[0].ready_timeout",
            4,
            17,
            "needs a `ready`",
        ),
        (
            format!("{HEAD}ready = {{ file = \"/x\" }}\nready_timeout = 0\n"),
            "service[0].ready_timeout",
            5,
            17,
            "more than 0",
        ),
        (
            format!("{HEAD}capabilities = [\"CAP_FLY\"]\n"),
            "service[0].capabilities[0]",
            4,
            17,
            "not a capability",
        ),
        (
            format!("{HEAD}namespaces = [\"user\"]\n"),
            "service[0].namespaces[0]",
            4,
            15,
            "not a namespace",
        ),
        (
            format!("{HEAD}namespaces = [\"pid\"]\nread_only_root = false\n"),
            "service[0].namespaces",
            4,
            15,
            "needs the mount namespace",
        ),
        (
            format!("{HEAD}namespaces = []\nread_only_root = true\n"),
            "service[0].read_only_root",
            5,
            18,
            "needs the mount namespace",
        ),
        (
            format!("{HEAD}namespaces = []\nread_only_root = false\nwritable_paths = [\"/x\"]\n"),
            "service[0].writable_paths",
            6,
            19,
            "needs the mount namespace",
        ),
        (
            format!("{HEAD}writable_paths = [\"x\"]\n"),
            "service[0].writable_paths[0]",
            4,
            19,
            "absolute path",
        ),
        (
            format!("{HEAD}seccomp = \"strict\"\n"),
            "service[0].seccomp",
            4,
            11,
            "not a seccomp profile",
        ),
        (
            format!("{HEAD}seccomp = \"default\"\nno_new_privs = false\n"),
            "service[0].seccomp",
            4,
            11,
            "needs no_new_privs",
        ),
        (
            format!("{HEAD}no_new_privs = false\nlandlock = {{ read_only = [\"/usr\"] }}\n"),
            "service[0].landlock",
            5,
            12,
            "needs no_new_privs",
        ),
        (
            format!("{HEAD}landlock = {{ read_only = [\"usr\"] }}\n"),
            "service[0].landlock.read_only[0]",
            4,
            27,
            "absolute path",
        ),
        (
            format!("{HEAD}oom_score_adj = -1001\n"),
            "service[0].oom_score_adj",
            4,
            17,
            "-1000 to 1000",
        ),
        (
            format!("{HEAD}memory_max = \"12Q\"\n"),
            "service[0].memory_max",
            4,
            14,
            "unknown unit",
        ),
        (
            format!("{HEAD}memory_high = 100\n"),
            "service[0].memory_high",
            4,
            15,
            "less than one page",
        ),
        (
            format!("{HEAD}pids_max = 0\n"),
            "service[0].pids_max",
            4,
            12,
            "at least 1",
        ),
        (
            format!("{HEAD}cpu_weight = 0\n"),
            "service[0].cpu_weight",
            4,
            14,
            "1 to 10000",
        ),
        (
            format!("{HEAD}io_weight = 10001\n"),
            "service[0].io_weight",
            4,
            13,
            "1 to 10000",
        ),
        (
            format!("{HEAD}cpu_max = \"lots\"\n"),
            "service[0].cpu_max",
            4,
            11,
            "not a cpu.max value",
        ),
        (
            format!("{HEAD}usr = 1\n"),
            "service[0].usr",
            4,
            1,
            "unknown field",
        ),
    ];
    for (text, key, line, column, part) in &cases {
        let ps = problems(text);
        let p = ps
            .iter()
            .find(|p| p.key == *key)
            .unwrap_or_else(|| panic!("{key}: not among {ps:#?}\n{text}"));
        assert_eq!((p.line, p.column), (*line, *column), "{key}: {p:?}\n{text}");
        assert!(p.message.contains(part), "{key}: {}", p.message);
    }
}

#[test]
fn longer_cycles_and_valid_graphs() {
    let svc = |name: &str, after: &str| {
        format!("[[service]]\nname = \"{name}\"\nexec = [\"/x\"]\nafter = [{after}]\n")
    };
    let chain = [svc("a", ""), svc("b", "\"a\""), svc("c", "\"a\", \"b\"")].concat();
    let all = services(&chain);
    assert_eq!(all.len(), 3);
    let cyc = [svc("a", "\"c\""), svc("b", "\"a\""), svc("c", "\"b\"")].concat();
    let ps = problems(&cyc);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(
        ps[0].message.contains("cycle: a -> c -> b -> a"),
        "{}",
        ps[0].message
    );
}
