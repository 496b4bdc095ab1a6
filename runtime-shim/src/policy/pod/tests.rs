//! Pod rules, table-driven over small CRI-style specs (as containerd 1.6's CRI plugin writes
//! them); whole specs are in `tests/golden/pod-*`.

use super::*;
use crate::policy::{Action, Checked, Decision};
use serde_json::json;

const SANDBOX: &str = "3f4d5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80";
const UID: &str = "7c1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6";
const CRI_ROOT: &str = "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes";
const CRI_STATE: &str = "/run/containerd/io.containerd.grpc.v1.cri/sandboxes";
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn annotations(kind: &str, ns: &str) -> Value {
    let mut a = json!({
        "io.kubernetes.cri.container-type": kind,
        "io.kubernetes.cri.sandbox-id": SANDBOX,
        "io.kubernetes.cri.sandbox-name": "web-0",
        "io.kubernetes.cri.sandbox-namespace": ns,
        "io.kubernetes.cri.sandbox-uid": UID,
    });
    if kind == "container" {
        a["io.kubernetes.cri.container-name"] = json!("nginx");
        a["io.kubernetes.cri.image-name"] = json!("docker.io/library/nginx:1.25");
    } else {
        a["io.kubernetes.cri.sandbox-log-directory"] =
            json!(format!("/var/log/pods/{ns}_web-0_{UID}"));
    }
    a
}

fn bind(dest: &str, src: &str) -> Value {
    json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", "rw"]})
}

/// The pause container of a pod with CNI networking (no seccomp, no no_new_privs).
fn sandbox(ns: &str) -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 65535, "gid": 65535},
            "args": ["/pause"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "oomScoreAdj": -998
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            bind("/dev/shm", &format!("{CRI_STATE}/{SANDBOX}/shm")),
            bind("/etc/resolv.conf", &format!("{CRI_ROOT}/{SANDBOX}/resolv.conf"))
        ],
        "annotations": annotations("sandbox", ns),
        "linux": {
            "cgroupsPath": format!("/kubepods/besteffort/pod{UID}/{SANDBOX}"),
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network", "path": "/var/run/netns/cni-0b9d1c3e"}
            ]
        }
    })
}

/// The same sandbox with `hostNetwork: true`: no network and no uts namespace.
fn host_network_sandbox(ns: &str) -> Value {
    let mut s = sandbox(ns);
    s["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]);
    s
}

/// A container of the sandbox above: joins its namespaces by `/proc/PID/ns/*` paths.
fn container(ns: &str) -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["nginx", "-g", "daemon off;"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "oomScoreAdj": 1000
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            bind("/etc/hosts", &format!("/var/lib/kubelet/pods/{UID}/etc-hosts")),
            bind("/etc/hostname", &format!("{CRI_ROOT}/{SANDBOX}/hostname")),
            bind("/etc/resolv.conf", &format!("{CRI_ROOT}/{SANDBOX}/resolv.conf")),
            bind("/dev/shm", &format!("{CRI_STATE}/{SANDBOX}/shm")),
            bind("/var/run/secrets/kubernetes.io/serviceaccount", &format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/kube-api-access-x7k2p"))
        ],
        "annotations": annotations("container", ns),
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "cgroupsPath": format!("/kubepods/besteffort/pod{UID}/9a8b7c6d"),
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc", "path": "/proc/4242/ns/ipc"},
                {"type": "uts", "path": "/proc/4242/ns/uts"},
                {"type": "mount"},
                {"type": "network", "path": "/proc/4242/ns/net"}
            ],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    })
}

/// A container with `privileged: true`: every capability, every device, writable kernel file
/// systems, no masked or read-only paths.
fn privileged(ns: &str) -> Value {
    let mut c = container(ns);
    let all: Vec<&str> = rampart_config::policy::ALL_CAPABILITIES.to_vec();
    c["process"]["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
    c["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    c["linux"]["devices"] = json!([{"path": "/dev/vda", "type": "b", "major": 254, "minor": 0}]);
    let l = c["linux"].as_object_mut().unwrap();
    l.remove("maskedPaths");
    l.remove("readonlyPaths");
    c["mounts"][1]["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
    c["mounts"][2]["options"] = json!(["nosuid", "noexec", "nodev", "relatime", "rw"]);
    c
}

fn with_mount(mut spec: Value, dest: &str, src: &str) -> Value {
    spec["mounts"].as_array_mut().unwrap().push(bind(dest, src));
    spec
}

fn policy(toml: &str) -> Policy {
    let cfg = rampart_config::parse(toml, Path::new("/host.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .container_policy;
    Policy::new(&cfg)
}

const KUBE_SYSTEM: &str = r#"
[container_policy]

[[container_policy.kubernetes_namespace]]
name = "kube-system"
allow_privileged = false
allow_host_paths = ["/var/log"]
allow_host_network = true

[[container_policy.kubernetes_namespace]]
name = "storage"
allow_privileged = true
"#;

fn facts(host_namespaces: &[&str]) -> HostFacts {
    HostFacts {
        bundle: PathBuf::from("/run/containerd/io.containerd.runtime.v2.task/k8s.io/9a8b7c6d"),
        host_namespace_paths: host_namespaces.iter().map(|s| (*s).to_owned()).collect(),
        ..HostFacts::default()
    }
}

fn rules(c: &Checked, action: Action) -> Vec<&'static str> {
    c.decisions
        .iter()
        .filter(|d| d.action == action)
        .map(|d| d.rule.as_str())
        .collect()
}

fn find(c: &Checked, action: Action, rule: Rule) -> Option<&Decision> {
    c.decisions
        .iter()
        .find(|d| d.action == action && d.rule == rule)
}

#[test]
fn identities_from_annotations() {
    let full = annotations("container", "shop");
    let with = |key: &str, v: Value| {
        let mut a = full.clone();
        a[key] = v;
        json!({ "annotations": a })
    };
    let without = |key: &str| {
        let mut a = full.clone();
        a.as_object_mut().unwrap().remove(key);
        json!({ "annotations": a })
    };
    // (spec, Ok(Display of the identity) or Err(part of the message)); `Ok("")` is no pod.
    let cases: Vec<(Value, Result<&str, &str>)> = vec![
        (json!({}), Ok("")),
        (json!({"annotations": null}), Ok("")),
        (json!({"annotations": {"io.example/x": "y"}}), Ok("")),
        (without(CONTAINER_TYPE), Ok("")),
        (
            json!({ "annotations": full }),
            Ok("pod shop/web-0 container nginx"),
        ),
        (
            json!({ "annotations": annotations("sandbox", "kube-system") }),
            Ok("pod kube-system/web-0 sandbox"),
        ),
        (
            with(CONTAINER_TYPE, json!("vm")),
            Err("not `sandbox` or `container`"),
        ),
        (with(CONTAINER_TYPE, json!(1)), Err("is not a string")),
        (
            without(SANDBOX_NAMESPACE),
            Err("no io.kubernetes.cri.sandbox-namespace"),
        ),
        (
            with(SANDBOX_NAMESPACE, json!("Kube_System")),
            Err("DNS-1123 label"),
        ),
        (
            without(SANDBOX_NAME),
            Err("no io.kubernetes.cri.sandbox-name"),
        ),
        (with(SANDBOX_NAME, json!("a\nb")), Err("not a pod name")),
        (without(SANDBOX_ID), Err("no io.kubernetes.cri.sandbox-id")),
        (
            with(SANDBOX_ID, json!("../../etc")),
            Err("not a containerd id"),
        ),
        (with(SANDBOX_UID, json!("../x")), Err("not a pod uid")),
        (
            without(CONTAINER_NAME),
            Err("no io.kubernetes.cri.container-name"),
        ),
        // The uid and the image are optional (older containerd has no uid annotation).
        (without(SANDBOX_UID), Ok("pod shop/web-0 container nginx")),
        (without(IMAGE_NAME), Ok("pod shop/web-0 container nginx")),
    ];
    for (spec, want) in cases {
        let got = identify(&spec).map(|p| p.map_or_else(String::new, |p| p.to_string()));
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{spec}"),
            (Err(g), Err(w)) => assert!(g.contains(w), "{spec}: {g}"),
            (g, w) => panic!("{spec}: got {g:?}, want {w:?}"),
        }
    }
    let p = identify(&json!({ "annotations": full })).unwrap().unwrap();
    assert_eq!(p.kind, ContainerType::Container);
    assert_eq!(p.sandbox_id, SANDBOX);
    assert_eq!(p.uid.as_deref(), Some(UID));
    assert_eq!(p.image.as_deref(), Some("docker.io/library/nginx:1.25"));
    let s = identify(&sandbox("x")).unwrap().unwrap();
    assert_eq!(
        (s.kind, s.container, s.image),
        (ContainerType::Sandbox, None, None)
    );
}

#[test]
fn containerd_ids_and_uids() {
    let ids: &[(&str, bool)] = &[
        (SANDBOX, true),
        ("c1", true),
        ("my-ctr.v2_x", true),
        ("", false),
        ("-x", false),
        ("x-", false),
        ("a..b", false),
        ("a/b", false),
        ("..", false),
        (&"a".repeat(77), false),
    ];
    for (id, ok) in ids {
        assert_eq!(containerd_id(id), *ok, "{id}");
    }
    let uids: &[(&str, bool)] = &[
        (UID, true),
        ("2b7a9c3d8e1f4a6b9c0d1e2f3a4b5c6d", true),
        ("", false),
        ("a/b", false),
        ("..", false),
    ];
    for (uid, ok) in uids {
        assert_eq!(pod_uid(uid), *ok, "{uid}");
    }
}

#[test]
fn own_paths_are_the_pods_sandbox_files_and_kubelet_folder() {
    let pod = identify(&container("shop")).unwrap().unwrap();
    let other = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";
    // (path, its canonical form when it differs, the pod's own)
    let inside = format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/y");
    let cases: Vec<(String, Option<&str>, bool)> = vec![
        (format!("{CRI_ROOT}/{SANDBOX}/hosts"), None, true),
        (format!("{CRI_ROOT}/{SANDBOX}/hostname"), None, true),
        (format!("{CRI_ROOT}/{SANDBOX}/resolv.conf"), None, true),
        (format!("{CRI_STATE}/{SANDBOX}/shm"), None, true),
        (
            format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/cache"),
            None,
            true,
        ),
        (format!("/var/lib/kubelet/pods/{UID}"), None, true),
        // Not one of the files, or not this pod's.
        (format!("{CRI_ROOT}/{SANDBOX}"), None, false),
        (format!("{CRI_ROOT}/{SANDBOX}/shm"), None, false),
        (format!("{CRI_STATE}/{SANDBOX}/hosts"), None, false),
        (format!("{CRI_ROOT}/{other}/hosts"), None, false),
        ("/var/lib/kubelet/pods".to_owned(), None, false),
        (
            "/var/lib/kubelet/pods/0d9e8f7a-6b5c-4d3e-9f21-0a1b2c3d4e5f/volumes".to_owned(),
            None,
            false,
        ),
        ("/var/lib/kubelet/pki".to_owned(), None, false),
        // A symlink that leads out of the pod's folder.
        (
            format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/x"),
            Some("/etc"),
            false,
        ),
        (
            format!("{CRI_ROOT}/{SANDBOX}/hosts"),
            Some("/etc/hosts"),
            false,
        ),
        // One that stays inside.
        (
            format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/x"),
            Some(inside.as_str()),
            true,
        ),
    ];
    for (path, canonical, want) in cases {
        let mut f = facts(&[]);
        if let Some(c) = canonical {
            f.canonical.insert(PathBuf::from(&path), PathBuf::from(c));
        }
        assert_eq!(
            Policy::pod_own_path(Path::new(&path), &f, &pod),
            want,
            "{path} -> {canonical:?}"
        );
    }
    // Without a uid annotation, the kubelet's folders are nobody's own.
    let mut no_uid = pod.clone();
    no_uid.uid = None;
    assert!(!Policy::pod_own_path(
        Path::new(&format!("/var/lib/kubelet/pods/{UID}/etc-hosts")),
        &facts(&[]),
        &no_uid
    ));
}

#[test]
fn privileged_signs() {
    let plain = policy("");
    let sys_admin_allowed = policy("[container_policy]\nallow_capabilities = [\"SYS_ADMIN\"]\n");
    let mut sys_admin = container("shop");
    sys_admin["process"]["capabilities"]["bounding"] = json!(["CAP_KILL", "CAP_SYS_ADMIN"]);
    let mut devices = container("shop");
    devices["linux"]["resources"]["devices"] =
        json!([{"allow": true, "type": "a", "major": -1, "minor": -1, "access": "rwm"}]);
    let mut mknod_only = container("shop");
    mknod_only["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "m"}]);
    let mut one_device = container("shop");
    one_device["linux"]["resources"]["devices"] =
        json!([{"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}]);
    // (policy, spec, number of signs)
    let cases: Vec<(&Policy, Value, usize)> = vec![
        (&plain, container("shop"), 0),
        (&plain, sandbox("shop"), 0),
        (&plain, privileged("shop"), 2),
        (&plain, sys_admin.clone(), 1),
        (&sys_admin_allowed, sys_admin, 0),
        (&sys_admin_allowed, privileged("shop"), 1),
        (&plain, devices, 1),
        (&plain, mknod_only, 0),
        (&plain, one_device, 0),
    ];
    for (p, spec, want) in cases {
        let signs = p.privileged_signs(spec.as_object().unwrap());
        assert_eq!(signs.len(), want, "{signs:?}");
    }
}

#[test]
fn host_paths_of_a_namespace_cover_paths_below_them() {
    let p = policy(
        "[container_policy]\n[[container_policy.kubernetes_namespace]]\nname = \"ops\"\nallow_host_paths = [\"/var/log\", \"/\"]\n",
    );
    let pod = identify(&container("ops")).unwrap().unwrap();
    let scope = Scope {
        pod: Some(&pod),
        ns: p.config().kubernetes_namespace("ops"),
        privileged: false,
    };
    let cases: &[(&str, bool)] = &[
        ("/var/log", true),
        ("/var/log/pods", true),
        ("/var/logs", false),
        ("/var", false),
        ("/", true),
        ("/etc", false),
    ];
    for (path, want) in cases {
        assert_eq!(
            Policy::host_path_allowed(&scope, Path::new(path)),
            *want,
            "{path}"
        );
    }
    assert!(!Policy::host_path_allowed(
        &Scope::default(),
        Path::new("/var/log")
    ));
}

/// Every rule with pod specs: (what, policy, spec, host namespace paths, refused rules,
/// allowed rules that must be there).
#[test]
fn pod_rules() {
    let default = policy("");
    let ks = policy(KUBE_SYSTEM);
    let host_ns: &[&str] = &["/proc/4242/ns/net", "/proc/4242/ns/uts"];
    let root = with_mount(container("shop"), "/host", "/");
    let var_log = |ns| with_mount(container(ns), "/var/log", "/var/log");
    let mut host_pid = container("kube-system");
    host_pid["linux"]["namespaces"][0] = json!({"type": "pid", "path": "/proc/1/ns/pid"});
    type Case<'a> = (
        &'a str,
        &'a Policy,
        Value,
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: Vec<Case<'_>> = vec![
        ("sandbox", &default, sandbox("shop"), &[], &[], &["mounts"]),
        (
            "container",
            &default,
            container("shop"),
            &[],
            &[],
            &["mounts"],
        ),
        (
            "hostNetwork sandbox",
            &default,
            host_network_sandbox("kube-system"),
            &[],
            &["host-network"],
            &[],
        ),
        (
            "hostNetwork sandbox, allowed",
            &ks,
            host_network_sandbox("kube-system"),
            &[],
            &[],
            &["host-network"],
        ),
        (
            "hostNetwork sandbox, other namespace",
            &ks,
            host_network_sandbox("shop"),
            &[],
            &["host-network"],
            &[],
        ),
        (
            "hostNetwork container",
            &default,
            container("kube-system"),
            host_ns,
            &["host-network"],
            &[],
        ),
        (
            "hostNetwork container, allowed",
            &ks,
            container("kube-system"),
            host_ns,
            &[],
            &["host-network"],
        ),
        // hostPID stays with the host-namespaces rule, whatever the namespace's table says.
        (
            "hostPID container",
            &ks,
            host_pid,
            &["/proc/1/ns/pid"],
            &["host-namespaces"],
            &[],
        ),
        (
            "privileged",
            &default,
            privileged("storage"),
            &[],
            &["privileged", "devices"],
            &[],
        ),
        (
            "privileged, other namespace",
            &ks,
            privileged("kube-system"),
            &[],
            &["privileged", "devices"],
            &[],
        ),
        (
            "privileged, allowed",
            &ks,
            privileged("storage"),
            &[],
            &[],
            &[
                "privileged",
                "capabilities",
                "devices",
                "masked-paths",
                "readonly-paths",
            ],
        ),
        ("hostPath /", &ks, root, &[], &["host-paths"], &[]),
        (
            "hostPath /var/log, allowed",
            &ks,
            var_log("kube-system"),
            &[],
            &[],
            &["host-paths"],
        ),
        (
            "hostPath /var/log, other namespace",
            &ks,
            var_log("shop"),
            &[],
            &["host-paths"],
            &[],
        ),
        (
            "hostPath /var/data (not sensitive)",
            &default,
            with_mount(container("shop"), "/data", "/var/data"),
            &[],
            &[],
            &[],
        ),
        (
            "hostPath of the containerd socket",
            &ks,
            with_mount(
                container("kube-system"),
                "/run/containerd/containerd.sock",
                "/run/containerd/containerd.sock",
            ),
            &[],
            &["host-paths"],
            &[],
        ),
        (
            "hostPath of the kubelet's folder",
            &ks,
            with_mount(
                container("kube-system"),
                "/var/lib/kubelet",
                "/var/lib/kubelet",
            ),
            &[],
            &["host-paths"],
            &[],
        ),
        (
            "hostPath of /proc",
            &ks,
            with_mount(container("kube-system"), "/host/proc", "/proc"),
            &[],
            &["host-paths"],
            &[],
        ),
    ];
    for (what, p, spec, host, refused, allowed) in cases {
        let c = p.check_spec(&spec, &facts(host));
        assert_eq!(
            rules(&c, Action::Refused),
            refused,
            "{what}: {:#?}",
            c.decisions
        );
        let got = rules(&c, Action::Allowed);
        for a in allowed {
            assert!(
                got.contains(a),
                "{what}: no allowed {a} in {:#?}",
                c.decisions
            );
        }
        if !c.is_refused() {
            // Every pod that runs has rampart's seccomp filter and no_new_privs.
            assert_eq!(c.value["process"]["noNewPrivileges"], json!(true), "{what}");
            assert_eq!(
                c.value["linux"]["seccomp"]["defaultAction"],
                json!("SCMP_ACT_ERRNO"),
                "{what}"
            );
        }
    }
}

#[test]
fn refusals_name_the_pod_and_the_key() {
    let default = policy("");
    // (spec, host namespace paths, rule, the refusal's detail)
    let cases: Vec<(Value, &[&str], Rule, String)> = vec![
        (
            host_network_sandbox("kube-system"),
            &[],
            Rule::HostNetwork,
            "pod kube-system/web-0 sandbox has no network namespace: it asks for hostNetwork; allow it with allow_host_network = true in [[container_policy.kubernetes_namespace]] name = \"kube-system\"".into(),
        ),
        (
            container("shop"),
            &["/proc/4242/ns/net", "/proc/4242/ns/uts"],
            Rule::HostNetwork,
            "pod shop/web-0 container nginx joins the host's network namespace (/proc/4242/ns/net): it asks for hostNetwork; allow it with allow_host_network = true in [[container_policy.kubernetes_namespace]] name = \"shop\"".into(),
        ),
        (
            privileged("shop"),
            &[],
            Rule::Privileged,
            "pod shop/web-0 container nginx is privileged: it may use every host device (an allow-all rule in linux.resources.devices) and it asks for CAP_SYS_ADMIN; allow it with allow_privileged = true in [[container_policy.kubernetes_namespace]] name = \"shop\"".into(),
        ),
        (
            with_mount(container("shop"), "/host", "/"),
            &[],
            Rule::HostPaths,
            "pod shop/web-0 container nginx: bind mount onto /host: / is the host's root; allow it with allow_host_paths = [\"/\"] in [[container_policy.kubernetes_namespace]] name = \"shop\"".into(),
        ),
        (
            with_mount(container("shop"), "/etc/kubernetes", "/etc/kubernetes/pki"),
            &[],
            Rule::HostPaths,
            "pod shop/web-0 container nginx: bind mount onto /etc/kubernetes: /etc/kubernetes/pki is under /etc; allow it with allow_host_paths = [\"/etc/kubernetes/pki\"] in [[container_policy.kubernetes_namespace]] name = \"shop\"".into(),
        ),
    ];
    for (spec, host, rule, want) in cases {
        let c = default.check_spec(&spec, &facts(host));
        let got = find(&c, Action::Refused, rule).map(|d| d.detail.clone());
        assert_eq!(got.as_deref(), Some(want.as_str()), "{:#?}", c.decisions);
    }
}

#[test]
fn allowed_privileged_pods_keep_what_privileged_means() {
    let ks = policy(KUBE_SYSTEM);
    let spec = privileged("storage");
    let c = ks.check_spec(&spec, &facts(&[]));
    assert!(!c.is_refused(), "{:#?}", c.decisions);
    // Every capability and device, writable sysfs and cgroupfs, no masked paths.
    assert_eq!(
        c.value["process"]["capabilities"],
        spec["process"]["capabilities"]
    );
    assert_eq!(
        c.value["linux"]["resources"]["devices"],
        spec["linux"]["resources"]["devices"]
    );
    assert_eq!(c.value["mounts"][1], spec["mounts"][1]);
    assert_eq!(c.value["mounts"][2], spec["mounts"][2]);
    assert!(c.value["linux"].get("maskedPaths").is_none());
    // But still no_new_privs, the seccomp filter, the AppArmor profile, the pids limit.
    assert_eq!(c.value["process"]["noNewPrivileges"], json!(true));
    assert_eq!(
        c.value["linux"]["seccomp"]["defaultAction"],
        json!("SCMP_ACT_ERRNO")
    );
    assert_eq!(
        c.value["process"]["apparmorProfile"],
        json!("rampart-default")
    );
    assert_eq!(c.value["linux"]["resources"]["pids"]["limit"], json!(1024));
    // The same spec as a plain container (no annotations) is held as before: its devices are
    // refused (and the CRI plugin's files are host paths to it).
    let mut plain = spec.clone();
    plain.as_object_mut().unwrap().remove("annotations");
    let c = ks.check_spec(&plain, &facts(&[]));
    let refused = rules(&c, Action::Refused);
    assert!(
        refused.contains(&"devices") && !refused.contains(&"privileged"),
        "{refused:?}"
    );
}

#[test]
fn plain_containers_keep_their_rules() {
    // The pod keys do nothing for a spec without CRI annotations.
    let ks = policy(KUBE_SYSTEM);
    let mut plain = with_mount(host_network_sandbox("kube-system"), "/var/log", "/var/log");
    plain.as_object_mut().unwrap().remove("annotations");
    let c = ks.check_spec(&plain, &facts(&[]));
    assert_eq!(
        rules(&c, Action::Refused),
        [
            "mounts",
            "mounts",
            "mounts",
            "host-namespaces",
            "host-namespaces"
        ],
        "{:#?}",
        c.decisions
    );
    // And a bad annotation refuses the spec, with the pod rule named.
    let mut bad = container("shop");
    bad["annotations"][CONTAINER_TYPE] = json!("vm");
    let c = ks.check_spec(&bad, &facts(&[]));
    assert_eq!(c.decisions[0].rule, Rule::Pod);
    assert_eq!(c.decisions[0].action, Action::Refused);
}

#[test]
fn global_allow_lists_still_apply_to_pods() {
    let p = policy(
        "[container_policy]\nallow_mounts = [\"/var/log\"]\nallow_capabilities = [\"NET_RAW\"]\n",
    );
    let c = p.check_spec(
        &with_mount(container("shop"), "/var/log", "/var/log"),
        &facts(&[]),
    );
    assert!(!c.is_refused(), "{:#?}", c.decisions);
    assert!(find(&c, Action::Allowed, Rule::Mounts)
        .is_some_and(|d| d.detail.contains("(allow_mounts)")));
    assert!(c.value["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_NET_RAW")));
}
