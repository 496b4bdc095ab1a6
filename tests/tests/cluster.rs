//! Tier 3 of the Kubernetes node work: a real control plane on the build machine
//! (docs/kubernetes.md, "Tier 3: joining a real cluster").
//!
//! - `control_plane` (no QEMU, about 7 s): etcd and kube-apiserver 1.20.2 in a network
//!   namespace of their own (see `rampart_tests::cluster`); kubectl as the admin lists the
//!   default namespaces and the server's version; the node's credentials (a static token of
//!   `system:node:rampart` in `system:nodes`) create the Node `rampart` but not another node
//!   (the Node authorizer and `NodeRestriction`), and cannot list secrets; dropping the
//!   cluster removes the namespace.
//! - `cluster_tier3` (one QEMU boot, about 2 minutes): the guest's kubelet (`[kubelet]` with
//!   the node's kubeconfig) joins that control plane through QEMU's user network, `kubectl
//!   get nodes` shows `rampart` Ready with its InternalIP, kubelet and containerd versions; a
//!   pod bound to it runs `rampart-probe status` to completion through runtime-shim, its log
//!   (read back with `kubectl logs`: apiserver to kubelet through QEMU's forward) showing
//!   `Seccomp: 2` and `NoNewPrivs: 1`; a pod with a secret volume prints the secret (kubelet
//!   mounts the volume's tmpfs in its own mount namespace, containerd sees it through the
//!   shared mount of `/var/lib/kubelet`); a privileged pod bound to it is admitted by the
//!   apiserver and refused by the node's container policy, the rule in the pod's status.
//!
//! Both need root (network namespaces), `ip`, `openssl` and the binaries of
//! `scripts/build-kubernetes.sh`, and print a skip reason without them.
//! `RAMPART_TEST_CLUSTER=1` makes a missing prerequisite a failure, `RAMPART_TEST_CLUSTER=0`
//! skips both.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rampart_tests::cluster::{self, Binaries, Cluster, Mode, NODE_IP, NODE_NAME};
use rampart_tests::containerd::{
    self as ctd, PROBE_ARCHIVE_IN_IMAGE, PROBE_IMAGE, PROBE_IN_CONTAINER,
};
use rampart_tests::harness;
use rampart_tests::kubelet::{self as kt, KubeletHost};
use serde_json::Value;

fn root() -> PathBuf {
    harness::workspace_root()
}

/// `Some(binaries)` when the cluster tests run here (see [`Mode`]); prints why not otherwise,
/// and fails when `RAMPART_TEST_CLUSTER=1` asked for them.
fn ready_or_skip(test: &str) -> Option<Binaries> {
    let mode = Mode::from_env();
    if mode == Mode::Off {
        eprintln!("SKIP {test}: {}=0", cluster::FLAG);
        return None;
    }
    let why = if !nix_is_root() {
        "needs root (network namespaces)".to_owned()
    } else if !harness::in_path("ip") || !harness::in_path("openssl") {
        "needs `ip` (iproute2) and `openssl`".to_owned()
    } else {
        let bins = Binaries::of_workspace(&root());
        match bins.missing() {
            Some(p) => format!(
                "{} is missing (run scripts/build-kubernetes.sh)",
                p.display()
            ),
            None => return Some(bins),
        }
    };
    assert!(
        mode != Mode::Required,
        "{test}: {}=1 but it {why}",
        cluster::FLAG
    );
    eprintln!("SKIP {test}: {why}");
    None
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn scratch(name: &str) -> PathBuf {
    // Cargo's folder for integration tests' scratch files (known when the test is compiled).
    option_env!("CARGO_TARGET_TMPDIR")
        .map_or_else(|| std::env::temp_dir().join("rampart-tests"), PathBuf::from)
        .join(name)
}

#[test]
fn control_plane() {
    let Some(bins) = ready_or_skip("control_plane") else {
        return;
    };
    let t = Instant::now();
    let c = Cluster::start(&scratch("cluster-control-plane"), bins)
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let started = t.elapsed();

    let ns = c.kubectl_ok(&["get", "namespaces", "-o", "name"]).unwrap();
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            ns.stdout.lines().any(|l| l == format!("namespace/{want}")),
            "{want} missing:\n{}",
            ns.stdout
        );
    }
    let version = c.kubectl_ok(&["version", "-o", "json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&version.stdout).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.20.2", "{v}");

    // The node's own credentials: its Node object, not another's.
    let node_cfg = c.layout().node_host_kubeconfig();
    let created = c
        .create_with(&node_cfg, "node", &cluster::node_object(NODE_NAME))
        .unwrap();
    assert!(
        created.status.success(),
        "the node could not create its Node object:\n{}",
        created.combined()
    );
    let other = c
        .create_with(&node_cfg, "other-node", &cluster::node_object("elsewhere"))
        .unwrap();
    assert!(
        !other.status.success(),
        "the node created another node's object"
    );
    assert!(other.stderr.contains("Forbidden") || other.stderr.contains("forbidden"));
    let secrets = c
        .kubectl_with(&node_cfg, &["get", "secrets", "-A"])
        .unwrap();
    assert!(!secrets.status.success(), "the node listed every secret");
    let nodes = c.kubectl_ok(&["get", "nodes", "-o", "name"]).unwrap();
    assert_eq!(nodes.stdout.trim(), format!("node/{NODE_NAME}"));
    let node = c.get_json(&["get", "node", NODE_NAME]).unwrap().unwrap();
    assert_eq!(cluster::node_ready(&node), None, "no kubelet reported yet");
    eprintln!(
        "control_plane: namespace and PKI {:.1}s, etcd + apiserver to /readyz {:.1}s, start {:.1}s, whole test {:.1}s",
        c.times.setup.as_secs_f64(),
        c.times.ready.as_secs_f64(),
        started.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let netns = c.netns().to_owned();
    drop(c);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&netns),
        "{netns} left behind"
    );
}

/// The prefix of the guest script's result lines.
const LINE: &str = "CLUSTER-TEST ";
/// The value of the secret the secret-volume pod prints.
const SECRET_WORD: &str = "rampart-secret-volume-ok";
/// Where the import service says it is done (containerd's writable `/run/containerd`).
const IMPORTED: &str = "/run/containerd/probe-imported";

/// The guest's import service: puts the probe image into containerd's `k8s.io` namespace
/// (the pod never pulls), marks itself ready for kubelet, then keeps the guest up until the
/// host is done (it powers off after 20 minutes at the latest).
fn import_script() -> String {
    format!(
        r#"
B=/bin/busybox
say() {{ echo "{LINE}$*"; }}
say containerd_uptime=$($B cut -d' ' -f1 /proc/uptime)
/usr/bin/ctr -n k8s.io image import {PROBE_ARCHIVE_IN_IMAGE} >/dev/null 2>&1; say probe_import=$?
$B touch {IMPORTED}
say imported_uptime=$($B cut -d' ' -f1 /proc/uptime)
$B sleep 1200
"#
    )
}

fn results(console: &str) -> std::collections::BTreeMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.split_once(LINE).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

#[test]
fn cluster_tier3() {
    let Some(bins) = ready_or_skip("cluster_tier3") else {
        return;
    };
    if !harness::qemu_or_skip("cluster_tier3").unwrap() {
        assert!(
            Mode::from_env() != Mode::Required,
            "{}=1 but QEMU is missing",
            cluster::FLAG
        );
        return;
    }
    let test_start = Instant::now();
    let env = harness::env().unwrap_or_else(|e| panic!("harness setup failed: {e}"));
    let env_secs = test_start.elapsed().as_secs_f64();
    let dir = env.out_dir.join("cluster");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The control plane first: the node's kubeconfig and the CA go into the image.
    let t = Instant::now();
    let mut c = Cluster::start(&dir.join("control-plane"), bins.clone())
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let plane_secs = t.elapsed().as_secs_f64();

    let archive = ctd::probe_archive(&env.bin_dir.join("rampart-probe"), &dir.join("oci")).unwrap();
    let mut import = ctd::script_service("import", &import_script());
    let mut ready = toml::Table::new();
    ready.insert("file".into(), IMPORTED.into());
    import.insert("ready".into(), toml::Value::Table(ready));
    import.insert("ready_timeout".into(), "120s".into());
    let host = KubeletHost {
        binary: bins.kubelet.clone(),
        services: vec![import],
        files: vec![(archive, PROBE_ARCHIVE_IN_IMAGE.to_owned(), 0o644)],
        static_pods: Vec::new(),
        after: vec!["import".to_owned()],
        kubeconfig: Some(c.layout().node_kubeconfig()),
        client_ca: Some(c.layout().ca()),
        args: cluster::kubelet_args(),
    };
    let text = kt::host_for_kubelet(env, &host).unwrap();
    let text = cluster::join_host(&text).unwrap();
    let built = harness::build_host(env, &dir, &text).unwrap_or_else(|e| panic!("{e}"));
    let (image, build_secs) = (built.image, built.secs);

    // Boot inside the namespace; wait for the node.
    let boot_start = Instant::now();
    let guest = c
        .boot(env, &image, "cluster", kt::MEMORY_MIB, 1500, &[])
        .unwrap_or_else(|e| panic!("boot: {e}"));
    let console = |g: &rampart_tests::live::LiveBoot| g.console();
    let ready = c
        .wait_node_ready(NODE_NAME, boot_start, Duration::from_secs(900), || {
            let text = console(&guest);
            if text.contains("rampart-init: poweroff") {
                Err(format!("the guest powered off:\n{}", tail(&text, 80)))
            } else {
                Ok(())
            }
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}\n--- node ---\n{}",
                tail(&console(&guest), 80),
                c.kubectl(&["describe", "node", NODE_NAME])
                    .map(|o| o.combined())
                    .unwrap_or_default()
            )
        });
    let node = &ready.object;
    let ready_secs = ready.ready.as_secs_f64();
    let r = results(&console(&guest));
    assert_eq!(
        r.get("probe_import").map(String::as_str),
        Some("0"),
        "{r:?}"
    );

    // kubectl get nodes: the rampart node, Ready.
    let nodes = c.kubectl_ok(&["get", "nodes", "-o", "wide"]).unwrap();
    eprintln!("{}", nodes.stdout);
    let line = nodes
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(NODE_NAME))
        .unwrap_or_else(|| panic!("no {NODE_NAME} in:\n{}", nodes.stdout));
    assert_eq!(line.split_whitespace().nth(1), Some("Ready"), "{line}");
    let addresses = node
        .pointer("/status/addresses")
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        addresses.as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["type"] == "InternalIP" && x["address"] == NODE_IP)),
        "{addresses}"
    );
    assert_eq!(
        node.pointer("/status/nodeInfo/kubeletVersion")
            .and_then(Value::as_str),
        Some("v1.20.2")
    );
    let runtime = node
        .pointer("/status/nodeInfo/containerRuntimeVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    assert!(runtime.starts_with("containerd://"), "{runtime}");

    // A pod bound to the node runs the probe to completion.
    let pod = cluster::probe_pod("probe", NODE_NAME, PROBE_IMAGE, PROBE_IN_CONTAINER);
    let admin = c.layout().admin_kubeconfig();
    let t = Instant::now();
    let created = c.create_with(&admin, "probe-pod", &pod).unwrap();
    assert!(created.status.success(), "{}", created.combined());
    let done = c
        .wait_pod_phase("probe", &["Succeeded", "Failed"], Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&console(&guest), 60)));
    let pod_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        cluster::pod_phase(&done),
        "Succeeded",
        "{}\n{}",
        done["status"],
        tail(&console(&guest), 60)
    );
    let terminated = done
        .pointer("/status/containerStatuses/0/state/terminated")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(terminated["exitCode"], 0, "{terminated}");
    let logs = c
        .kubectl_ok(&["logs", "probe"])
        .unwrap_or_else(|e| panic!("kubectl logs: {e}"));
    let status = cluster::probe_status(&logs.stdout)
        .unwrap_or_else(|| panic!("no probe status in the pod's log:\n{}", logs.combined()));
    assert_eq!(status["Seccomp"], "2", "{status}");
    assert_eq!(status["NoNewPrivs"], "1", "{status}");

    // A secret volume: kubelet fetches the secret (the Node authorizer lets it, the pod being
    // bound to it), mounts a tmpfs in its own mount namespace, and the container sees it
    // through the shared mount PID 1 made of /var/lib/kubelet.
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": "probe-secret", "namespace": "default" },
        "stringData": { "word": SECRET_WORD },
    });
    let created = c.create_with(&admin, "probe-secret", &secret).unwrap();
    assert!(created.status.success(), "{}", created.combined());
    let mut with_secret = cluster::probe_pod("secret", NODE_NAME, PROBE_IMAGE, PROBE_IN_CONTAINER);
    with_secret["spec"]["volumes"] =
        serde_json::json!([{ "name": "s", "secret": { "secretName": "probe-secret" } }]);
    with_secret["spec"]["containers"][0]["command"] =
        serde_json::json!([PROBE_IN_CONTAINER, "cat", "/secret/word"]);
    with_secret["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{ "name": "s", "mountPath": "/secret", "readOnly": true }]);
    let created = c.create_with(&admin, "secret-pod", &with_secret).unwrap();
    assert!(created.status.success(), "{}", created.combined());
    let t = Instant::now();
    let done = c
        .wait_pod_phase("secret", &["Succeeded", "Failed"], Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&console(&guest), 60)));
    let secret_secs = t.elapsed().as_secs_f64();
    assert_eq!(cluster::pod_phase(&done), "Succeeded", "{}", done["status"]);
    let logs = c
        .kubectl_ok(&["logs", "secret"])
        .unwrap_or_else(|e| panic!("kubectl logs secret: {e}"));
    assert!(
        logs.stdout.contains(&format!("\"text\":\"{SECRET_WORD}\"")),
        "the secret volume did not reach the container:\n{}",
        logs.combined()
    );
    eprintln!("cluster: secret pod created to Succeeded in {secret_secs:.1}s");

    // A privileged pod bound to the node: the apiserver admits it, rampart's policy refuses
    // its container, and kubelet reports the rule.
    let mut privileged =
        cluster::probe_pod("privileged", NODE_NAME, PROBE_IMAGE, PROBE_IN_CONTAINER);
    privileged["spec"]["containers"][0]["securityContext"] =
        serde_json::json!({ "privileged": true });
    let created = c
        .create_with(&admin, "privileged-pod", &privileged)
        .unwrap();
    assert!(created.status.success(), "{}", created.combined());
    let refused = {
        let start = Instant::now();
        loop {
            let p = c
                .get_json(&["get", "pod", "privileged"])
                .unwrap()
                .unwrap_or(Value::Null);
            // Refused at create: with restartPolicy Never the container ends "terminated"
            // (reason StartError) and the pod Failed; a retrying pod shows it "waiting".
            let state = p
                .pointer("/status/containerStatuses/0/state")
                .cloned()
                .unwrap_or(Value::Null);
            let msg = ["waiting", "terminated"]
                .iter()
                .find_map(|k| state.get(*k)?.get("message")?.as_str())
                .unwrap_or_default()
                .to_owned();
            if msg.contains("refused") {
                break msg;
            }
            assert_ne!(
                cluster::pod_phase(&p),
                "Succeeded",
                "the privileged pod ran"
            );
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "privileged pod not refused: {}\n{}",
                p["status"],
                tail(&console(&guest), 40)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    assert!(
        refused.contains("refused by the host's container policy: privileged:"),
        "{refused}"
    );
    let refused_short: String = refused
        .split_once("rampart-runc: ")
        .map_or(refused.as_str(), |(_, r)| r)
        .chars()
        .take(160)
        .collect();

    eprintln!(
        "cluster_tier3: workspace build check {env_secs:.1}s; control plane ready in {plane_secs:.1}s (etcd + apiserver {:.1}s); image built in {build_secs:.1}s; \
         QEMU start to node registered {:.1}s (Ready then: {}), to node Ready {ready_secs:.1}s (guest: containerd ready at {}s, probe imported at {}s uptime); \
         pod created to Succeeded {pod_secs:.1}s (created {}, kubelet: pod start {}, container started {} finished {}); privileged pod refused: {refused_short}...; whole test {:.1}s",
        c.times.ready.as_secs_f64(),
        ready.registered.as_secs_f64(),
        ready.first_ready,
        r.get("containerd_uptime").map_or("?", String::as_str),
        r.get("imported_uptime").map_or("?", String::as_str),
        done.pointer("/metadata/creationTimestamp")
            .unwrap_or(&Value::Null),
        done.pointer("/status/startTime").unwrap_or(&Value::Null),
        terminated["startedAt"],
        terminated["finishedAt"],
        test_start.elapsed().as_secs_f64(),
    );
    drop(guest);
}
