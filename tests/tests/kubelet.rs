//! kubelet on a rampart host, end to end, in one QEMU boot (tier 2 of the Kubernetes node
//! work): the CRI test host with `[kubelet]` (the kubelet that `scripts/build-kubernetes.sh`
//! builds, two static pods), standalone (no API server):
//!
//! - a test service imports the probe's OCI image into containerd's `k8s.io` namespace, then
//!   lets kubelet start (`[kubelet] after` it, through its ready file);
//! - the static pod `probe` (an init container running `rampart-probe status`, then the
//!   probe sleeping) reaches Running, as containerd's CRI says (`rampart-cri kubelet`:
//!   `ListPodSandbox`, `ListContainers`); the init container's log under
//!   `/var/log/pods/default_probe-rampart_<uid>/status/0.log` shows `Seccomp: 2` and
//!   `NoNewPrivs: 1`, added by rampart-runc; a second init container prints the pod's name
//!   from a downwardAPI volume: a tmpfs kubelet mounts in its own mount namespace, which
//!   reaches containerd's (and so the container) through the shared mount PID 1 made of
//!   `/var/lib/kubelet`;
//! - the static pod `privileged` is refused: kubelet's log names rampart-runc's rule
//!   (`privileged:`), the audit log has the refusal, and its container never runs;
//! - `rampart status` shows kubelet running and ready (its pod resources socket is up);
//!   kubelet keeps `CAP_SYS_ADMIN` and `CAP_SYSLOG` only, with `no_new_privs`, in its own
//!   cgroup; PID 1 enabled `cpuset` and `hugetlb` and made `kubepods`, where kubelet put the
//!   pods; the sysctls kubelet checks have its values.
//!
//! Skips, printing why, when `.cache/k8s/bin/kubelet` is absent.

use std::time::Instant;

use rampart_tests::containerd::{self as ctd, PROBE_ARCHIVE_IN_IMAGE};
use rampart_tests::cri::CRI_IN_IMAGE;
use rampart_tests::harness::{self, scratch, test_env as env};
use rampart_tests::kubelet::{
    self as kt, KubeletHost, KUBELET_IN_CACHE, MAIN_CONTAINER, NAMESPACE, PRIVILEGED_POD,
    PROBE_POD, STATUS_CONTAINER, VOLUME_CONTAINER,
};

/// The test service's name.
const SERVICE: &str = "kubelettest";
/// The file the test service creates once the probe image is imported (its ready file).
const READY_FILE: &str = "/run/containerd/kubelet-test-images";
/// What rampart-runc's refusals say.
const REFUSAL: &str = "refused by the host's container policy: ";

/// The guest side (busybox sh): import the probe image, let kubelet start, wait through CRI
/// for the probe pod to run, then report. Every result is a `KUBELET-TEST KEY=VALUE` line.
fn script() -> String {
    let pod = kt::static_pod_name(PROBE_POD);
    let privileged = kt::static_pod_name(PRIVILEGED_POD);
    format!(
        r#"
B=/bin/busybox; C=/usr/bin/ctr; A=/var/log/rampart/audit.log; L=/run/rampart/log/kubelet.log
say() {{ echo "KUBELET-TEST $*"; }}
up() {{ $B cut -d' ' -f1 /proc/uptime; }}
say containerd_ready_uptime=$(up)
$C -n k8s.io image import {PROBE_ARCHIVE_IN_IMAGE} >/dev/null 2>&1; say probe_import=$?
$B touch {READY_FILE}
say kubelet_allowed_uptime=$(up)
{CRI_IN_IMAGE} kubelet --pod {pod} --container {MAIN_CONTAINER} --wait 400
say cri_exit=$?
say running_uptime=$(up)
i=0
while [ $i -lt 120 ] && ! $B grep -q "{REFUSAL}privileged:" $L; do $B sleep 1; i=$((i+1)); done
say refusal_waited_s=$i
say refusals=$($B grep -c "{REFUSAL}privileged:" $L)
say refusal=$($B grep -o "{REFUSAL}privileged: [^\"]*" $L | $B head -n 1)
say audit_privileged=$($B grep '"rule":"privileged"' $A | $B grep '"action":"refused"' | $B grep -c '"pod":"{privileged}"')
for f in /var/log/pods/{NAMESPACE}_{pod}_*/{STATUS_CONTAINER}/0.log; do say status_log_path=$f; say status_log=$($B grep -o 'RAMPART-PROBE .*' $f); done
for f in /var/log/pods/{NAMESPACE}_{pod}_*/{VOLUME_CONTAINER}/0.log; do say volume_log=$($B grep -o 'RAMPART-PROBE .*' $f); done
# The container runs before containerd has copied its first line to the log file.
i=0
while [ $i -lt 60 ] && ! $B cat /var/log/pods/{NAMESPACE}_{pod}_*/{MAIN_CONTAINER}/0.log 2>/dev/null | $B grep -q RAMPART-PROBE; do $B sleep 1; i=$((i+1)); done
for f in /var/log/pods/{NAMESPACE}_{pod}_*/{MAIN_CONTAINER}/0.log; do say probe_log_path=$f; say probe_log=$($B grep -o 'RAMPART-PROBE .*' $f); done
say privileged_log_bytes=$($B cat /var/log/pods/{NAMESPACE}_{privileged}_*/{MAIN_CONTAINER}/*.log 2>/dev/null | $B wc -c)
say container_links=$($B ls /var/log/containers | $B tr '\n' ',')
{CRI_IN_IMAGE} kubelet --pod {pod} --container {MAIN_CONTAINER} --wait 30 | $B grep -v 'running'
say healthz=$($B wget -O - http://127.0.0.1:10248/healthz 2>/dev/null)
say status_line=$(/usr/bin/rampart status | $B grep '^kubelet ')
say status_json=$(/usr/bin/rampart --json status | $B grep -o '{{"name":"kubelet",[^}}]*}}')
p=$($B pidof kubelet)
say kubelet_cgroup=$($B cat /proc/$p/cgroup)
say kubelet_capeff=$($B grep '^CapEff:' /proc/$p/status | $B cut -f2)
say kubelet_nnp=$($B grep '^NoNewPrivs:' /proc/$p/status | $B cut -f2)
say kubelet_seccomp=$($B grep '^Seccomp:' /proc/$p/status | $B cut -f2)
say cgroup_root=$($B cat /sys/fs/cgroup/cgroup.subtree_control)
say kubepods=$($B ls /sys/fs/cgroup/kubepods | $B grep -v '^cgroup\.\|\.' | $B tr '\n' ',')
say pod_cgroups=$($B find /sys/fs/cgroup/kubepods -maxdepth 2 -name 'pod*' -type d | $B wc -l)
for k in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
  say sysctl_$k=$($B cat /proc/sys/$(echo $k | $B tr . /))
done
say done=1
"#
    )
}

/// The capability mask of `names` (`/proc/PID/status` `CapEff`, hex).
fn cap_mask(names: &[&str]) -> String {
    let mask = names
        .iter()
        .map(|n| {
            rampart_config::Capability::try_from(*n)
                .unwrap_or_else(|e| panic!("{e}"))
                .number()
        })
        .fold(0u64, |m, bit| m | (1u64 << bit));
    format!("{mask:016x}")
}

#[test]
fn kubelet_tier2() {
    if !harness::qemu_or_skip("kubelet_tier2").unwrap() {
        return;
    }
    let env = env();
    let Some(binary) = kt::kubelet_binary(env) else {
        eprintln!(
            "SKIP kubelet_tier2: no kubelet at {}/{KUBELET_IN_CACHE} (run scripts/build-kubernetes.sh)",
            env.root.display()
        );
        return;
    };
    let dir = scratch("kubelet");
    let archive = ctd::probe_archive(&env.bin_dir.join("rampart-probe"), &dir.join("oci")).unwrap();
    let static_pods = kt::write_manifests(&dir.join("manifests")).unwrap();
    let mut script = ctd::script_service(SERVICE, &script());
    let mut ready = toml::Table::new();
    ready.insert("file".into(), READY_FILE.into());
    script.insert("ready".into(), toml::Value::Table(ready));
    script.insert("ready_timeout".into(), "180s".into());
    let text = kt::host_for_kubelet(
        env,
        &KubeletHost {
            binary,
            services: vec![script],
            files: vec![
                (archive, PROBE_ARCHIVE_IN_IMAGE.to_owned(), 0o644),
                (
                    env.bin_dir.join("rampart-cri"),
                    CRI_IN_IMAGE.to_owned(),
                    0o755,
                ),
            ],
            static_pods,
            after: vec![SERVICE.to_owned()],
            ..KubeletHost::default()
        },
    )
    .unwrap();
    let built = harness::build_host(env, &dir, &text).unwrap_or_else(|e| panic!("{e}"));
    let (image, build_secs) = (built.image, built.secs);
    let t = Instant::now();
    let boot = harness::boot_with(
        env,
        &image,
        "kubelet",
        kt::MEMORY_MIB,
        harness::boot_timeout().max(900),
    )
    .unwrap();
    let boot_secs = t.elapsed().as_secs_f64();
    // The image is about 300 MB (kubelet is 100 MB): the console is what is kept.
    let _ = std::fs::remove_dir_all(&image);
    let console = boot.console();
    let tail = || boot.tail(150);
    let r = kt::results(&console);
    let get = |k: &str| r.get(k).map_or("", String::as_str);
    assert_eq!(
        get("done"),
        "1",
        "the guest script did not finish\n{}",
        tail()
    );
    assert_eq!(get("probe_import"), "0", "{}", tail());

    // The static pod runs, seen through CRI.
    let pod = kt::static_pod_name(PROBE_POD);
    assert_eq!(get("running"), "true", "{}", tail());
    assert_eq!(get("cri_exit"), "0", "{}", tail());
    let pods = get("pods");
    assert!(pods.contains(&format!("{pod}:READY")), "{pods}");
    let containers = get("containers");
    assert!(
        containers.contains(&format!("{pod}/{MAIN_CONTAINER}:RUNNING")),
        "{containers}"
    );
    assert!(
        containers.contains(&format!("{pod}/{STATUS_CONTAINER}:EXITED")),
        "{containers}"
    );
    // Its output under /var/log/pods, with the policy's seccomp filter and no_new_privs.
    let prefix = format!("/var/log/pods/{NAMESPACE}_{pod}_");
    assert!(
        get("status_log_path").starts_with(&prefix)
            && get("status_log_path").ends_with(&format!("/{STATUS_CONTAINER}/0.log")),
        "{}",
        get("status_log_path")
    );
    let status: serde_json::Value = serde_json::from_str(
        get("status_log")
            .strip_prefix("RAMPART-PROBE ")
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("no probe status in the pod log ({e})\n{}", tail()));
    assert_eq!(status["status"]["Seccomp"], "2", "{status}");
    assert_eq!(status["status"]["NoNewPrivs"], "1", "{status}");
    // The downwardAPI volume: a tmpfs kubelet mounted in its namespace, seen by the container.
    let volume: serde_json::Value = serde_json::from_str(
        get("volume_log")
            .strip_prefix("RAMPART-PROBE ")
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("no volume line in the pod log ({e})\n{}", tail()));
    assert_eq!(volume["cat"]["text"], pod, "{volume}");
    assert!(
        get("probe_log").contains("\"sleep\""),
        "{}",
        get("probe_log")
    );
    assert!(
        get("container_links").contains(&format!("{pod}_{NAMESPACE}_{MAIN_CONTAINER}-")),
        "{}",
        get("container_links")
    );

    // The privileged pod: refused by rampart-runc's rule, never running.
    let privileged = kt::static_pod_name(PRIVILEGED_POD);
    assert_ne!(get("refusals"), "0", "{}", tail());
    assert!(
        get("refusal").contains(&format!(
            "privileged: pod {NAMESPACE}/{privileged} container {MAIN_CONTAINER} is privileged"
        )),
        "{}",
        get("refusal")
    );
    assert_ne!(get("audit_privileged"), "0", "{}", tail());
    assert!(
        !containers.contains(&format!("{privileged}/{MAIN_CONTAINER}:RUNNING")),
        "{containers}"
    );
    for (k, v) in r
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("status_{privileged}_")))
    {
        assert!(
            v.contains("privileged:") || v.starts_with("CREATED"),
            "{k}={v}"
        );
    }
    assert_eq!(get("privileged_log_bytes"), "0", "{}", tail());

    // The operator's view and the service's privileges.
    let line = get("status_line");
    assert!(
        line.starts_with("kubelet ") && line.contains(" running ") && !line.contains("not ready"),
        "{line}\n{}",
        tail()
    );
    let status: serde_json::Value = serde_json::from_str(get("status_json"))
        .unwrap_or_else(|e| panic!("status json ({e}): {}", get("status_json")));
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(get("healthz"), "ok", "{}", tail());
    assert_eq!(get("kubelet_cgroup"), "0::/services/kubelet");
    assert_eq!(
        get("kubelet_capeff"),
        cap_mask(&["CAP_SYS_ADMIN", "CAP_SYSLOG"])
    );
    assert_eq!(get("kubelet_nnp"), "1");
    // Its seccomp filter: the default deny list but mount and umount2.
    assert_eq!(get("kubelet_seccomp"), "2");
    // PID 1's cgroup side: cpuset and hugetlb at the root, kubepods with the QoS classes.
    let root: Vec<&str> = get("cgroup_root").split_whitespace().collect();
    for c in ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"] {
        assert!(root.contains(&c), "{c} not in {root:?}");
    }
    assert!(
        get("kubepods").contains("besteffort,burstable"),
        "{}",
        get("kubepods")
    );
    assert_ne!(get("pod_cgroups"), "0");
    // The sysctls kubelet checks (protectKernelDefaults), set by PID 1.
    for (key, value) in rampart_config::kubelet::KERNEL_DEFAULTS {
        assert_eq!(get(&format!("sysctl_{key}")), *value, "{key}");
    }
    assert!(console.contains("rampart-init: poweroff"), "{}", tail());

    eprintln!(
        "kubelet: image built in {build_secs:.1}s, boot {boot_secs:.1}s (QEMU start to power-off); \
         containerd ready at {}s, kubelet allowed to start at {}s, static pod running at {}s \
         (uptime, from the kernel's start; {}ms of waiting through CRI), privileged refusal \
         logged {}s later",
        get("containerd_ready_uptime"),
        get("kubelet_allowed_uptime"),
        get("running_uptime"),
        get("running_ms"),
        get("refusal_waited_s"),
    );
}
