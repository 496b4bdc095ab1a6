//! Unit tests of the individual rules; whole specs are in `tests/golden/`.

use super::*;
use crate::args;
use rampart_config::policy::Capability;

fn policy() -> Policy {
    Policy::new(&ContainerPolicy::default())
}

fn facts(bundle: &str) -> HostFacts {
    HostFacts {
        bundle: PathBuf::from(bundle),
        ..HostFacts::default()
    }
}

#[test]
fn lexical_paths() {
    let cases: &[(&str, &str, &str)] = &[
        ("/b", "rootfs", "/b/rootfs"),
        ("/b", "/abs", "/abs"),
        ("/b", "../../../etc", "/etc"),
        ("/b", "./x/./y/..", "/b/x"),
        ("/b", "/", "/"),
        ("/b", "/etc//ssl/", "/etc/ssl"),
        ("/", "..", "/"),
    ];
    for (base, p, want) in cases {
        assert_eq!(
            lexical(Path::new(base), p),
            PathBuf::from(want),
            "{base} + {p}"
        );
    }
}

#[test]
fn sensitive_paths() {
    let p = policy();
    // (path, expected hit)
    let cases: &[(&str, Option<&str>)] = &[
        ("/", Some("is the host's root")),
        ("/etc", Some("is /etc")),
        ("/etc/ssl/certs", Some("is under /etc")),
        ("/etcetera", None),
        ("/run", Some("contains /run/containerd")),
        (
            "/run/containerd/containerd.sock",
            Some("is under /run/containerd"),
        ),
        ("/run/user/1000", None),
        ("/var", Some("contains /var/lib/containerd")),
        ("/var/lib", Some("contains /var/lib/containerd")),
        ("/var/lib/docker", None),
        ("/var/data", None),
        ("/var/log", Some("contains /var/log/rampart")),
        (
            "/var/log/rampart/audit.log",
            Some("is under /var/log/rampart"),
        ),
        ("/usr/lib/rampart", Some("is /usr/lib/rampart")),
        ("/usr/lib", Some("contains /usr/lib/rampart")),
        ("/usr/share", None),
        ("/home/me", None),
        ("/proc/1/root", Some("is under /proc")),
        ("/sys", Some("is /sys")),
        ("/dev/sda", Some("is under /dev")),
        ("/boot/efi", Some("is under /boot")),
        ("/tmp/x", None),
    ];
    for (path, want) in cases {
        assert_eq!(p.sensitive_hit(Path::new(path)).as_deref(), *want, "{path}");
    }
}

#[test]
fn allow_mounts_cover_paths_below_them() {
    let cfg = ContainerPolicy {
        allow_mounts: vec![PathBuf::from("/etc/ssl"), PathBuf::from("/")],
        ..ContainerPolicy::default()
    };
    let p = Policy::new(&cfg);
    let cases: &[(&str, bool)] = &[
        ("/etc/ssl", true),
        ("/etc/ssl/certs", true),
        ("/etc/ssl2", false),
        ("/etc", false),
        ("/", true),
        ("/proc", false),
    ];
    for (path, want) in cases {
        assert_eq!(p.mount_allowed(Path::new(path)), *want, "{path}");
    }
}

#[test]
fn paths_inside_a_private_bundle_are_not_host_paths() {
    let p = policy();
    let bundle = "/run/containerd/io.containerd.runtime.v2.task/default/c1";
    // (bundle, path, canonical, refused)
    let cases: &[(&str, &str, Option<&str>, bool)] = &[
        (
            bundle,
            "/run/containerd/io.containerd.runtime.v2.task/default/c1/rootfs",
            None,
            false,
        ),
        (
            bundle,
            "/run/containerd/io.containerd.runtime.v2.task/default/c1",
            None,
            true,
        ),
        (
            bundle,
            "/run/containerd/io.containerd.runtime.v2.task/default/c2/rootfs",
            None,
            true,
        ),
        // A symlink inside the bundle that leads out of it.
        (
            bundle,
            "/run/containerd/io.containerd.runtime.v2.task/default/c1/rootfs",
            Some("/etc"),
            true,
        ),
        // A bundle that is `/` or holds a sensitive path vouches for nothing.
        ("/", "/etc", None, true),
        ("/run", "/run/containerd", None, true),
        ("/srv/bundle", "/srv/bundle/rootfs", None, false),
    ];
    for (b, path, canonical, refused) in cases {
        let mut f = facts(b);
        if let Some(c) = canonical {
            f.canonical.insert(PathBuf::from(path), PathBuf::from(c));
        }
        assert_eq!(
            p.exposes(Path::new(path), &f, &Scope::default()).is_err(),
            *refused,
            "{b} {path} {canonical:?}"
        );
    }
}

#[test]
fn exec_flags_are_clamped() {
    let cfg = ContainerPolicy {
        allow_capabilities: vec![Capability::try_from("NET_RAW").unwrap()],
        ..ContainerPolicy::default()
    };
    let p = Policy::new(&cfg);
    // (argv, argv left, decisions)
    let cases: &[(&str, &str, &[&str])] = &[
        ("exec id ls", "exec id ls", &[]),
        (
            "exec --cap CAP_SYS_ADMIN -c CAP_KILL id ls",
            "exec -c CAP_KILL id ls",
            &["clamped capabilities: dropped `--cap CAP_SYS_ADMIN`; allow it with allow_capabilities"],
        ),
        (
            "exec --cap=CAP_NET_RAW id ls",
            "exec --cap=CAP_NET_RAW id ls",
            &["allowed capabilities: kept `--cap CAP_NET_RAW` (allow_capabilities)"],
        ),
        (
            "exec --no-new-privs=false --tty id ls",
            "exec --tty id ls",
            &["clamped no-new-privileges: dropped `--no-new-privs=false`: no_new_privs is always set"],
        ),
        ("exec --no-new-privs id ls", "exec --no-new-privs id ls", &[]),
        // The command's own arguments are not runc flags.
        ("exec id sh --cap CAP_SYS_ADMIN", "exec id sh --cap CAP_SYS_ADMIN", &[]),
        // With a process file, runc ignores the flags: the file is checked instead.
        ("exec -p /p.json --cap CAP_SYS_ADMIN id", "exec -p /p.json --cap CAP_SYS_ADMIN id", &[]),
    ];
    for (line, want, decisions) in cases {
        let argv: Vec<String> = std::iter::once("runc")
            .chain(line.split_whitespace())
            .map(str::to_owned)
            .collect();
        let inv = args::parse(&argv);
        let (d, drop) = p.check_exec_flags(&inv);
        let left: Vec<&str> = inv
            .without(&drop)
            .into_iter()
            .skip(1)
            .map(|i| inv.argv[i].as_str())
            .collect();
        assert_eq!(left.join(" "), *want, "{line}");
        let d: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(d, *decisions, "{line}");
    }
}

#[test]
fn process_files_are_clamped() {
    let p = policy();
    let cases: &[(Value, Value, bool)] = &[
        (
            json!({"args": ["sh"], "capabilities": {"bounding": ["CAP_KILL", "CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"]}, "noNewPrivileges": false, "oomScoreAdj": 5, "x-unknown": 1}),
            json!({"args": ["sh"], "apparmorProfile": "rampart-default", "capabilities": {"bounding": ["CAP_KILL"], "effective": []}, "noNewPrivileges": true, "oomScoreAdj": 5, "x-unknown": 1}),
            false,
        ),
        (
            json!({"args": ["sh"], "noNewPrivileges": true, "oomScoreAdj": 0}),
            json!({"args": ["sh"], "apparmorProfile": "rampart-default", "noNewPrivileges": true, "oomScoreAdj": 0}),
            false,
        ),
        (
            json!({"args": ["sh"], "apparmorProfile": "rampart-custom", "noNewPrivileges": true, "oomScoreAdj": 0}),
            json!({"args": ["sh"], "apparmorProfile": "rampart-custom", "noNewPrivileges": true, "oomScoreAdj": 0}),
            false,
        ),
        (json!("not a process"), json!("not a process"), true),
        (
            json!({"oomScoreAdj": "low", "noNewPrivileges": true, "apparmorProfile": "rampart-x"}),
            json!({"oomScoreAdj": "low", "noNewPrivileges": true, "apparmorProfile": "rampart-x"}),
            true,
        ),
    ];
    for (input, want, refused) in cases {
        let c = p.check_process(input);
        assert_eq!(c.is_refused(), *refused, "{input}");
        assert_eq!(&c.value, want, "{input}");
        let same =
            serde_json::to_string(&c.value).unwrap() == serde_json::to_string(input).unwrap();
        assert_eq!(c.is_changed(), !same && !refused, "{input}");
    }
}

#[test]
fn collected_host_paths_and_namespace_paths() {
    let spec = json!({
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/a", "type": "bind", "source": "/var/a"},
            {"destination": "/b", "type": "none", "source": "rel", "options": ["rbind"]},
            {"destination": "/proc", "type": "proc", "source": "proc"}
        ],
        "linux": {"namespaces": [
            {"type": "network", "path": "/proc/9/ns/net"},
            {"type": "pid"},
            {"type": "user", "path": "/proc/9/ns/user"}
        ]}
    });
    let paths = host_paths(&spec, Path::new("/b"));
    assert_eq!(
        paths,
        [
            PathBuf::from("/b"),
            PathBuf::from("/b/rel"),
            PathBuf::from("/b/rootfs"),
            PathBuf::from("/var/a")
        ]
    );
    assert_eq!(
        namespace_paths(&spec),
        [(HostNamespace::Network, "/proc/9/ns/net".to_owned())]
    );
}

#[test]
fn checked_summaries() {
    let c = Checked {
        value: json!({}),
        decisions: vec![Decision {
            action: Action::Allowed,
            rule: Rule::Hooks,
            detail: "x".into(),
        }],
    };
    assert!(!c.is_refused() && !c.is_changed());
    assert_eq!(c.decisions[0].to_string(), "allowed hooks: x");
    assert_eq!(
        list(&["a".into(), "b".into(), "c".into()], 2),
        "a, b and 1 more"
    );
}
