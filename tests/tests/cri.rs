//! containerd's CRI on a rampart host, end to end, in one QEMU boot (tier 1 of the Kubernetes
//! node work): the default host made a CRI host (`[containerd] cri = true`, `pod_subnet`, a
//! Kubernetes namespace `infra` that may use the host's network), the probe's OCI image
//! imported into the `k8s.io` namespace, and the test suite's own CRI client (`rampart-cri`, no
//! gRPC crate) running `Version`, `ImageStatus`, `RunPodSandbox`, `CreateContainer`,
//! `StartContainer`, `ContainerStatus`, `ListContainers`, `StopPodSandbox` and
//! `RemovePodSandbox` against containerd's CRI plugin, whose sandboxes and containers all go
//! through rampart-runc:
//!
//! - the pause image `rampart.local/pause:1` was imported at boot (`rampart-cri-import`);
//! - a host-network pod in `infra` and a pod on the CNI bridge both run the probe, which
//!   reports `Seccomp: 2` and `NoNewPrivs: 1` from its log file; the CNI pod has an address
//!   in the pod subnet and a network namespace of its own, the host-network pod shares the
//!   host's (and the audit log says `allow_host_network` of `infra` allowed it);
//! - a host-network pod in `default`, a privileged pod and a pod mounting `/` are refused, the
//!   rule (`host-network`, `privileged`, `host-paths`) named in the CRI error the client gets;
//! - the modules `bridge` and `veth` are loaded, the firewall forwards the pod subnet and
//!   `net.ipv4.ip_forward` is 1.
//!
//! A second boot, `cri_pod_benchmark` (ignored; `scripts/bench-cri.sh` runs it), measures a
//! pod's start latency through rampart-runc against plain runc.

use std::path::PathBuf;
use std::time::Instant;

use rampart_tests::containerd::{self as ctd, PROBE_ARCHIVE_IN_IMAGE};
use rampart_tests::cri::{
    self, bench, BENCH_CONTAINERD_CONFIG, CRI_IN_IMAGE, HOST_NETWORK_NAMESPACE, PLAIN_HANDLER,
    PLAIN_RUNC_IN_IMAGE, POD_SUBNET,
};
use rampart_tests::harness::{self, scratch, test_env as env};

/// The guest side (busybox sh): import the probe image for CRI, run the client, then report
/// what the host looks like. Every result is a `CRI-TEST KEY=VALUE` line.
fn script() -> String {
    format!(
        r#"
B=/bin/busybox; C=/usr/bin/ctr; A=/var/log/rampart/audit.log
say() {{ echo "CRI-TEST $*"; }}
up() {{ $B cut -d' ' -f1 /proc/uptime; }}
say ready_uptime=$(up)
$C -n k8s.io image import {PROBE_ARCHIVE_IN_IMAGE} >/dev/null 2>&1; say probe_import=$?
{CRI_IN_IMAGE} tier1 --image {image} --pod-subnet {POD_SUBNET} --host-network-namespace {HOST_NETWORK_NAMESPACE} --namespace default --wait 240
say cri_exit=$?
say cri_uptime=$(up)
say modules=$($B grep -oE '^(bridge|veth) ' /proc/modules | $B tr -d ' ' | $B sort | $B tr '\n' ',')
say nft_pod_forward=$($B grep -c 'iifname "cni0" ip saddr {POD_SUBNET} accept' /run/rampart/firewall.nft)
say nft_pod_masquerade=$($B grep -c 'ip saddr {POD_SUBNET} masquerade' /run/rampart/firewall.nft)
say ip_forward=$($B cat /proc/sys/net/ipv4/ip_forward)
hn=$($B grep '"rule":"host-network"' $A)
say audit_hostnet_allowed=$(echo "$hn" | $B grep '"action":"allowed"' | $B grep -c '"pod_namespace":"{HOST_NETWORK_NAMESPACE}"')
say audit_hostnet_refused=$(echo "$hn" | $B grep '"action":"refused"' | $B grep -c '"pod_namespace":"default"')
say audit_pod_lines=$($B grep -c '"pod_namespace"' $A)
say done=1
"#,
        image = ctd::PROBE_IMAGE,
    )
}

#[test]
fn cri_tier1() {
    if !harness::qemu_or_skip("cri_tier1").unwrap() {
        return;
    }
    let env = env();
    let dir = scratch("cri");
    let archive = ctd::probe_archive(&env.bin_dir.join("rampart-probe"), &dir.join("oci")).unwrap();
    let mut script = ctd::script_service("critest", &script());
    // Reading /proc/PID/ns/net of a pod's pause process needs ptrace read access to it; the
    // client creates the pods' log folders under /var/log.
    let push = |t: &mut toml::Table, key: &str, v: &str| {
        if let Some(list) = t.get_mut(key).and_then(toml::Value::as_array_mut) {
            list.push(v.into());
        }
    };
    push(&mut script, "capabilities", "CAP_SYS_PTRACE");
    push(&mut script, "writable_paths", "/var/log");
    let text = cri::host_for_cri(
        env,
        vec![script],
        &[
            (archive, PROBE_ARCHIVE_IN_IMAGE, 0o644),
            (env.bin_dir.join("rampart-cri"), CRI_IN_IMAGE, 0o755),
        ],
    )
    .unwrap();
    let built = harness::build_host(env, &dir, &text).unwrap_or_else(|e| panic!("{e}"));
    let (image, build_secs) = (built.image, built.secs);
    let t = Instant::now();
    let boot = ctd::boot(env, &image, "cri").unwrap();
    let boot_secs = t.elapsed().as_secs_f64();
    let console = boot.console();
    let tail = || boot.tail(120);
    let r = cri::results(&console);
    let get = |k: &str| r.get(k).map_or("", String::as_str);
    assert_eq!(
        get("done"),
        "1",
        "the guest script did not finish\n{}",
        tail()
    );
    assert_eq!(get("probe_import"), "0", "{}", tail());

    // Version (v1 and v1alpha2) and the images.
    assert_eq!(get("version_runtime"), "containerd", "{}", tail());
    assert_eq!(get("version_api"), "v1", "{}", tail());
    assert!(
        get("version_v1alpha2").starts_with("v1alpha2"),
        "{}",
        tail()
    );
    assert!(
        get("pause_image").starts_with("sha256:"),
        "pause image not imported\n{}",
        tail()
    );
    assert!(get("probe_image").starts_with("sha256:"), "{}", tail());

    // Both pods ran the probe to its end, with the policy's seccomp filter and no_new_privs.
    for pod in ["hostnet", "cni"] {
        assert_eq!(get(&format!("{pod}_stage")), "started", "{pod}\n{}", tail());
        assert_eq!(get(&format!("{pod}_exit")), "0", "{pod}\n{}", tail());
        let status: serde_json::Value = serde_json::from_str(get(&format!("{pod}_status")))
            .unwrap_or_else(|e| panic!("{pod}: no probe status ({e})\n{}", tail()));
        assert_eq!(status["Seccomp"], "2", "{pod}: {status}");
        assert_eq!(status["NoNewPrivs"], "1", "{pod}: {status}");
        assert!(
            get(&format!("{pod}_list")).contains("probe:"),
            "{pod}: {}",
            get(&format!("{pod}_list"))
        );
        assert_eq!(get(&format!("{pod}_stopped")), "ok", "{pod}\n{}", tail());
        assert_eq!(get(&format!("{pod}_removed")), "ok", "{pod}\n{}", tail());
    }
    // The CNI pod: an address in the pod subnet, its own network namespace.
    assert_eq!(
        get("cni_ip_in_subnet"),
        "true",
        "cni_ip={}\n{}",
        get("cni_ip"),
        tail()
    );
    assert_eq!(get("cni_host_netns"), "false", "{}", tail());
    // The host-network pod: the host's network namespace, allowed by its namespace's table.
    assert_eq!(get("hostnet_network_mode"), "2", "{}", tail());
    assert_eq!(get("hostnet_host_netns"), "true", "{}", tail());
    assert_ne!(get("audit_hostnet_allowed"), "0", "{}", tail());
    let all = get("list_all");
    assert_eq!(all.matches("probe:").count(), 2, "{all}");

    // Refusals, with the rule named in what the CRI client gets.
    let refused = |label: &str, rule: &str| {
        let stage = get(&format!("{label}_stage"));
        let err = get(&format!("{label}_error"));
        assert_ne!(stage, "started", "{label} was not refused\n{}", tail());
        assert!(
            err.contains("refused by the host's container policy"),
            "{label} ({stage}): {err}"
        );
        assert!(
            err.contains(&format!("{rule}:")),
            "{label} ({stage}): {err}"
        );
        eprintln!("{label}: refused at {stage}: {err}");
    };
    refused("hostnet_refused", "host-network");
    refused("privileged", "privileged");
    refused("rootmount", "host-paths");
    assert_ne!(get("audit_hostnet_refused"), "0", "{}", tail());
    assert_eq!(get("containers_after"), "0", "{}", tail());
    assert_eq!(get("failures"), "0", "{}", tail());
    assert_eq!(get("cri_exit"), "0", "{}", tail());

    // The pod network's kernel and firewall side.
    assert_eq!(get("modules"), "bridge,veth,", "{}", tail());
    assert_eq!(get("nft_pod_forward"), "1", "{}", tail());
    assert_eq!(get("nft_pod_masquerade"), "1", "{}", tail());
    assert_eq!(get("ip_forward"), "1", "{}", tail());
    assert!(console.contains("rampart-init: poweroff"), "{}", tail());

    eprintln!(
        "cri: image built in {build_secs:.1}s, boot {boot_secs:.1}s (QEMU start to power-off); \
         containerd ready at {}s, pause image waited {}ms, scenario done at {}s (uptime); \
         RunPodSandbox hostnet {}ms, cni {}ms; scenario total {}ms",
        get("ready_uptime"),
        get("pause_wait_ms"),
        get("cri_uptime"),
        get("hostnet_run_ms"),
        get("cni_run_ms"),
        get("total_ms"),
    );
}

/// One figure of a pod's [`bench::PodTimes`].
type Pick = fn(&bench::PodTimes) -> u128;

/// Rounds of the pod benchmark (one pod of each kind per round).
const BENCH_RUNS: u32 = 8;
/// A stand-in for the real runc that does nothing, for timing rampart-runc alone.
const TRUE_IN_IMAGE: &str = "/usr/lib/rampart-test/true";

/// The pod benchmark's guest script: import the probe for CRI, then `rampart-cri bench`.
fn bench_script() -> String {
    format!(
        r#"
B=/bin/busybox; C=/usr/bin/ctr
say() {{ echo "CRI-TEST $*"; }}
say ready_uptime=$($B cut -d' ' -f1 /proc/uptime)
$C -n k8s.io image import {PROBE_ARCHIVE_IN_IMAGE} >/dev/null 2>&1; say probe_import=$?
{CRI_IN_IMAGE} bench --image {image} --plain-handler {PLAIN_HANDLER} --runs {BENCH_RUNS} --wait 240
say bench_exit=$?
# One runc invocation's cost on each path: `runc --version`, 20 times each, in centiseconds.
cs() {{ $B cut -d' ' -f1 /proc/uptime | $B tr -d .; }}
for kind in wrapped:/usr/bin/runc plain:{PLAIN_RUNC_IN_IMAGE} shim_only:/usr/bin/runc; do
  name=${{kind%%:*}}; bin=${{kind#*:}}
  # shim_only: rampart-runc with a 20-byte `#!/bin/busybox true` as the real runc.
  [ $name = shim_only ] && export RAMPART_REAL_RUNC={TRUE_IN_IMAGE}
  t0=$(cs); i=0
  while [ $i -lt 20 ]; do $bin --version >/dev/null 2>&1; i=$((i+1)); done
  t1=$(cs); say version_${{name}}_cs=$((t1-t0))
done
"#,
        image = ctd::PROBE_IMAGE,
    )
}

/// A pod's start latency through rampart-runc against plain runc: one QEMU boot of the CRI
/// host whose containerd also has the benchmark-only runtime handler `plain` (an executable
/// copy of runc that only this image carries); `rampart-cri bench` runs one pod of each kind
/// per round, interleaved. Prints `BENCH` lines; `scripts/bench-cri.sh` runs it.
#[test]
#[ignore = "a benchmark boot: scripts/bench-cri.sh"]
fn cri_pod_benchmark() {
    if !harness::qemu_or_skip("cri_pod_benchmark").unwrap() {
        return;
    }
    let env = env();
    let dir = scratch("cri-bench");
    let archive = ctd::probe_archive(&env.bin_dir.join("rampart-probe"), &dir.join("oci")).unwrap();
    let mut script = ctd::script_service("bench", &bench_script());
    if let Some(list) = script
        .get_mut("writable_paths")
        .and_then(toml::Value::as_array_mut)
    {
        list.push("/var/log".into());
    }
    let bench_config = dir.join("containerd-bench.toml");
    let true_script = dir.join("true");
    std::fs::write(&true_script, "#!/bin/busybox true\n").unwrap();
    let text = cri::host_for_cri(
        env,
        vec![script],
        &[
            (archive, PROBE_ARCHIVE_IN_IMAGE, 0o644),
            (env.bin_dir.join("rampart-cri"), CRI_IN_IMAGE, 0o755),
            (
                PathBuf::from(rampart_image::containerd::HOST_RUNC),
                PLAIN_RUNC_IN_IMAGE,
                0o755,
            ),
            (bench_config.clone(), BENCH_CONTAINERD_CONFIG, 0o644),
            (true_script, TRUE_IN_IMAGE, 0o400),
        ],
    )
    .unwrap();
    let text = cri::with_containerd_config(&text, BENCH_CONTAINERD_CONFIG).unwrap();
    std::fs::write(
        &bench_config,
        cri::bench_containerd_config(&text, &dir.join("host.toml")).unwrap(),
    )
    .unwrap();
    let image = harness::build_host(env, &dir, &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .image;
    let boot = ctd::boot(env, &image, "cri-bench").unwrap();
    let console = boot.console();
    let r = cri::results(&console);
    let get = |k: &str| r.get(k).map_or("", String::as_str);
    assert_eq!(get("done"), "1", "{}", boot.tail(80));
    assert_eq!(get("probe_import"), "0", "{}", boot.tail(80));
    assert_eq!(get("failures"), "0", "{r:?}\n{}", boot.tail(80));
    let series = |kind: &str| -> Vec<bench::PodTimes> {
        (1..=BENCH_RUNS)
            .filter_map(|i| bench::parse_value(get(&format!("{kind}_{i}"))))
            .collect()
    };
    let (w, p) = (series("wrapped"), series("plain"));
    assert_eq!(w.len(), BENCH_RUNS as usize, "{r:?}");
    assert_eq!(p.len(), BENCH_RUNS as usize, "{r:?}");
    let secs = |v: &[bench::PodTimes], f: Pick| -> Vec<f64> {
        v.iter().map(|t| f(t) as f64 / 1000.0).collect()
    };
    println!(
        "BENCH containerd ready (bench service started) at {}s",
        get("ready_uptime")
    );
    println!(
        "BENCH warm-up: wrapped {}, plain {}",
        get("wrapped_warm"),
        get("plain_warm")
    );
    let per_call = |name: &str| {
        get(&format!("version_{name}_cs"))
            .parse::<f64>()
            .map_or_else(
                |_| "?".to_owned(),
                |cs| format!("{:.0} ms", cs * 10.0 / 20.0),
            )
    };
    println!(
        "BENCH one `runc --version`: via rampart-runc {}, plain runc {}, rampart-runc with a no-op real runc {}",
        per_call("wrapped"),
        per_call("plain"),
        per_call("shim_only")
    );
    let figures: [(&str, Pick); 3] = [
        (
            "RunPodSandbox to StartContainer returned (pod start)",
            |t| t.started,
        ),
        ("RunPodSandbox to container exited", |t| t.exited),
        (
            "RunPodSandbox to RemovePodSandbox returned (whole pod)",
            |t| t.removed,
        ),
    ];
    for (what, f) in figures {
        let (ws, ps) = (secs(&w, f), secs(&p, f));
        let (mw, mp) = (ctd::median(&ws), ctd::median(&ps));
        println!("BENCH {what}:");
        println!("BENCH   via rampart-runc: {ws:?} median {mw:.2}s");
        println!("BENCH   via plain runc:   {ps:?} median {mp:.2}s");
        println!("BENCH   ratio rampart-runc / plain runc: {:.3}", mw / mp);
    }
}
