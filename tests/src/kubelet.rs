//! kubelet on a rampart host (tier 2 of the Kubernetes node work): the host side of
//! `tests/tests/kubelet.rs` and what `rampart-cri kubelet` runs in the guest.
//!
//! Host side: [`host_for_kubelet`] turns the CRI test host ([`crate::cri::host_for_cri`]) into
//! a kubelet host (`[kubelet]` with the binary `scripts/build-kubernetes.sh` builds, static
//! pods, services to wait for, a kubeconfig and flags); [`kubelet_binary`] finds that binary
//! (tests skip without it); [`write_manifests`] writes the test's static pods; [`results`]
//! reads the guest's `KUBELET-TEST` lines.
//!
//! Guest side: [`guest_main`] (`rampart-cri kubelet ...`) waits through CRI
//! (`ListPodSandbox`, `ListContainers`, `ContainerStatus`, no kubelet API) until a static
//! pod's container runs, then reports every pod and container kubelet made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::containerd::{ServiceTable, PROBE_IMAGE};
use crate::cri::api::{container_state_name, Cri, RUNTIME_V1};
use crate::cri::grpc::Client;
use crate::cri::proto::{Message, Writer};
use crate::harness::{Env, HarnessError};

/// Where `scripts/build-kubernetes.sh` leaves the kubelet, relative to the workspace.
pub const KUBELET_IN_CACHE: &str = ".cache/k8s/bin/kubelet";
/// The prefix of every result line.
pub const LINE_PREFIX: &str = "KUBELET-TEST ";
/// The node's name: the test host's host name (kubelet's default).
pub const NODE_NAME: &str = "rampart";
/// The static pods' namespace.
pub const NAMESPACE: &str = "default";
/// The static pod that must run: an init container `status` runs `rampart-probe status`,
/// then the container `probe` sleeps.
pub const PROBE_POD: &str = "probe";
/// The privileged static pod that must be refused.
pub const PRIVILEGED_POD: &str = "privileged";
/// The probe pod's init container.
pub const STATUS_CONTAINER: &str = "status";
/// The probe pod's second init container: it prints the file [`VOLUME_FILE`] of the pod's
/// downwardAPI volume (a tmpfs kubelet mounts, which must reach containerd's namespace).
pub const VOLUME_CONTAINER: &str = "volume";
/// The downwardAPI volume's file in the container: the pod's name.
pub const VOLUME_FILE: &str = "/podinfo/name";
/// The container of both pods that must run (probe) or never run (privileged).
pub const MAIN_CONTAINER: &str = "probe";
/// Guest memory for a kubelet image (MiB): the initramfs (about 230 MB) lives in RAM twice
/// while it unpacks, containerd and kubelet take about 80 MB more.
pub const MEMORY_MIB: u32 = 2048;

/// The name kubelet gives a static pod: `NAME-NODE`.
pub fn static_pod_name(name: &str) -> String {
    format!("{name}-{NODE_NAME}")
}

/// `.cache/k8s/bin/kubelet` of the workspace, when `scripts/build-kubernetes.sh` built it.
pub fn kubelet_binary(env: &Env) -> Option<PathBuf> {
    let p = env.root.join(KUBELET_IN_CACHE);
    p.is_file().then_some(p)
}

/// What [`host_for_kubelet`] adds to the CRI test host.
#[derive(Debug, Clone, Default)]
pub struct KubeletHost {
    /// The kubelet binary on this machine (`[kubelet] binary`).
    pub binary: PathBuf,
    /// Services besides containerd (as for [`crate::cri::host_for_cri`]).
    pub services: Vec<ServiceTable>,
    /// Extra `[[image.files]]`: (source, target, mode).
    pub files: Vec<(PathBuf, String, u32)>,
    /// Static pod manifests (`[kubelet] static_pods`).
    pub static_pods: Vec<PathBuf>,
    /// Services kubelet starts after (`[kubelet] after`), e.g. one that imports images.
    pub after: Vec<String>,
    /// A kubeconfig (`[kubelet] kubeconfig`): kubelet joins that control plane.
    pub kubeconfig: Option<PathBuf>,
    /// The CA of the clients kubelet accepts (`[kubelet] client_ca`).
    pub client_ca: Option<PathBuf>,
    /// Extra kubelet flags (`[kubelet] args`).
    pub args: Vec<String>,
}

/// The CRI test host (see [`crate::cri::host_for_cri`]: `cri = true`, the pod subnet, the
/// `infra` namespace, no host channel) with a `[kubelet]` table from `k`. Returns TOML text.
pub fn host_for_kubelet(env: &Env, k: &KubeletHost) -> Result<String, HarnessError> {
    use toml::{Table, Value};
    let bad = |reason: &str| HarnessError::Example {
        path: env.example.clone(),
        reason: reason.to_owned(),
    };
    let files: Vec<(PathBuf, &str, u32)> = k
        .files
        .iter()
        .map(|(s, t, m)| (s.clone(), t.as_str(), *m))
        .collect();
    let text = crate::cri::host_for_cri(env, k.services.clone(), &files)?;
    let mut doc: Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(&e.to_string()))?;
    let path = |p: &Path| Value::String(p.to_string_lossy().into_owned());
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let mut t = Table::new();
    t.insert("binary".into(), path(&k.binary));
    t.insert(
        "static_pods".into(),
        Value::Array(k.static_pods.iter().map(|p| path(p)).collect()),
    );
    t.insert("after".into(), strings(&k.after));
    if let Some(kc) = &k.kubeconfig {
        t.insert("kubeconfig".into(), path(kc));
    }
    if let Some(ca) = &k.client_ca {
        t.insert("client_ca".into(), path(ca));
    }
    t.insert("args".into(), strings(&k.args));
    doc.insert("kubelet".into(), Value::Table(t));
    let out = toml::to_string(&doc).map_err(|e| bad(&e.to_string()))?;
    Ok(format!(
        "# Generated by the rampart kubelet tests from {}\n{out}",
        env.example.display()
    ))
}

/// The probe pod's manifest: the probe image (never pulled), the init containers
/// [`STATUS_CONTAINER`] printing `/proc/self/status` and [`VOLUME_CONTAINER`] printing
/// [`VOLUME_FILE`] from a downwardAPI volume, then [`MAIN_CONTAINER`] sleeping.
pub fn probe_manifest() -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {PROBE_POD}\n  namespace: {NAMESPACE}\n\
         spec:\n  volumes:\n  - name: podinfo\n    downwardAPI:\n      items:\n\
         \x20     - path: name\n        fieldRef:\n          fieldPath: metadata.name\n\
         \x20 initContainers:\n  - name: {STATUS_CONTAINER}\n    image: {PROBE_IMAGE}\n\
         \x20   imagePullPolicy: Never\n    args: [\"status\"]\n\
         \x20 - name: {VOLUME_CONTAINER}\n    image: {PROBE_IMAGE}\n\
         \x20   imagePullPolicy: Never\n    args: [\"cat\", \"{VOLUME_FILE}\"]\n\
         \x20   volumeMounts:\n    - name: podinfo\n      mountPath: /podinfo\n      readOnly: true\n\
         \x20 containers:\n\
         \x20 - name: {MAIN_CONTAINER}\n    image: {PROBE_IMAGE}\n    imagePullPolicy: Never\n\
         \x20   args: [\"sleep\", \"3600\"]\n"
    )
}

/// The privileged pod's manifest: [`MAIN_CONTAINER`] with `privileged: true`.
pub fn privileged_manifest() -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {PRIVILEGED_POD}\n  namespace: {NAMESPACE}\n\
         spec:\n  containers:\n  - name: {MAIN_CONTAINER}\n    image: {PROBE_IMAGE}\n\
         \x20   imagePullPolicy: Never\n    args: [\"sleep\", \"3600\"]\n\
         \x20   securityContext:\n      privileged: true\n"
    )
}

/// Writes [`probe_manifest`] and [`privileged_manifest`] into `dir` and returns their paths.
pub fn write_manifests(dir: &Path) -> Result<Vec<PathBuf>, HarnessError> {
    std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (name, text) in [
        (PROBE_POD, probe_manifest()),
        (PRIVILEGED_POD, privileged_manifest()),
    ] {
        let p = dir.join(format!("{name}.yaml"));
        std::fs::write(&p, text).map_err(|source| HarnessError::Io {
            action: "write",
            path: p.clone(),
            source,
        })?;
        out.push(p);
    }
    Ok(out)
}

/// The `KEY=VALUE` pairs of the console's `KUBELET-TEST` lines (a service's lines are
/// prefixed with its name), the last value winning.
pub fn results(console: &str) -> BTreeMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.split_once(LINE_PREFIX).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// One result line: `KUBELET-TEST KEY=VALUE`, the value on one line.
pub fn line(key: &str, value: &str) -> String {
    crate::guest::result_line(LINE_PREFIX, key, value)
}

fn say(key: &str, value: impl AsRef<str>) {
    crate::guest::say(LINE_PREFIX, key, value.as_ref());
}

/// One pod sandbox of `ListPodSandbox`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Its id.
    pub id: String,
    /// Its pod's name.
    pub name: String,
    /// Its pod's namespace.
    pub namespace: String,
    /// `SANDBOX_READY` 0, `SANDBOX_NOTREADY` 1.
    pub state: u64,
}

/// The name of a sandbox state.
pub fn sandbox_state_name(state: u64) -> &'static str {
    match state {
        0 => "READY",
        1 => "NOTREADY",
        _ => "UNKNOWN",
    }
}

/// The `ListPodSandbox` response's sandboxes.
pub fn parse_sandboxes(bytes: &[u8]) -> Result<Vec<Sandbox>, String> {
    let m = Message::parse(bytes).map_err(|e| e.to_string())?;
    let items = m.messages(1).map_err(|e| e.to_string())?;
    Ok(items
        .iter()
        .map(|p| {
            // PodSandbox: id 1, metadata 2 (name 1, uid 2, namespace 3), state 3.
            let md = p.message(2).ok().flatten().unwrap_or_default();
            Sandbox {
                id: p.string(1),
                name: md.string(1),
                namespace: md.string(3),
                state: p.varint(3),
            }
        })
        .collect())
}

/// `ListPodSandbox` (no filter) on containerd's CRI v1.
pub fn list_sandboxes(socket: &Path, timeout: Duration) -> Result<Vec<Sandbox>, String> {
    let mut w = Writer::new();
    w.message(1, |_| {});
    let bytes = Client::new(socket, timeout)
        .call(&format!("/{RUNTIME_V1}/ListPodSandbox"), &w.finish())
        .map_err(|e| format!("ListPodSandbox: {e}"))?;
    parse_sandboxes(&bytes)
}

/// What `rampart-cri kubelet` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOptions {
    /// containerd's socket.
    pub socket: PathBuf,
    /// The pod (kubelet's name, `NAME-NODE`) whose container must run.
    pub pod: String,
    /// That container.
    pub container: String,
    /// How long to wait for it.
    pub wait: Duration,
}

impl GuestOptions {
    /// Parses `--socket PATH --pod NAME --container NAME --wait SECS`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self {
            socket: PathBuf::from(crate::cri::scenario::DEFAULT_SOCKET),
            pod: static_pod_name(PROBE_POD),
            container: MAIN_CONTAINER.to_owned(),
            wait: Duration::from_secs(300),
        };
        for (flag, value) in crate::guest::flag_pairs(args)? {
            match flag {
                "--socket" => o.socket = PathBuf::from(value),
                "--pod" => o.pod = value.to_owned(),
                "--container" => o.container = value.to_owned(),
                "--wait" => o.wait = crate::guest::seconds(flag, value)?,
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(o)
    }
}

/// `rampart-cri kubelet [OPTIONS]`: waits until `o.pod`'s sandbox is ready and its container
/// `o.container` runs (`running=true`, `running_ms` since the start), then reports every pod
/// (`pods=NAME:STATE,...`) and container (`containers=POD/NAME:STATE,...`), and for every
/// container that is not running its reason and message (`status_POD_NAME=...`). Returns
/// the exit status: 0 when the container ran.
pub fn guest_main(o: &GuestOptions) -> u8 {
    let start = Instant::now();
    let timeout = Duration::from_secs(30);
    let cri = Cri::new(&o.socket, timeout);
    let mut running = false;
    let mut last_error = String::new();
    while start.elapsed() < o.wait {
        match running_in(&o.socket, &cri, &o.pod, &o.container) {
            Ok(true) => {
                running = true;
                break;
            }
            Ok(false) => {}
            Err(e) => last_error = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    say("running", running.to_string());
    say("running_ms", start.elapsed().as_millis().to_string());
    if !last_error.is_empty() {
        say("last_error", &last_error);
    }
    report(&o.socket, &cri);
    u8::from(!running)
}

/// Whether `pod`'s sandbox is ready with `container` running in it.
fn running_in(socket: &Path, cri: &Cri, pod: &str, container: &str) -> Result<bool, String> {
    let sandboxes = list_sandboxes(socket, Duration::from_secs(30))?;
    let Some(sb) = sandboxes.iter().find(|s| s.name == pod && s.state == 0) else {
        return Ok(false);
    };
    let containers = cri
        .list_containers(Some(&sb.id))
        .map_err(|e| e.to_string())?;
    Ok(containers
        .iter()
        .any(|c| c.name == container && c.state == 1))
}

/// Prints every pod and container, and why each container that does not run is not running.
fn report(socket: &Path, cri: &Cri) {
    let sandboxes = match list_sandboxes(socket, Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => {
            say("report_error", e);
            return;
        }
    };
    let pods: Vec<String> = sandboxes
        .iter()
        .map(|s| format!("{}:{}", s.name, sandbox_state_name(s.state)))
        .collect();
    say("pods", pods.join(","));
    let containers = match cri.list_containers(None) {
        Ok(c) => c,
        Err(e) => {
            say("report_error", e.to_string());
            return;
        }
    };
    let pod_of = |id: &str| {
        sandboxes
            .iter()
            .find(|s| s.id == id)
            .map_or("?", |s| s.name.as_str())
    };
    let list: Vec<String> = containers
        .iter()
        .map(|c| {
            format!(
                "{}/{}:{}",
                pod_of(&c.sandbox_id),
                c.name,
                container_state_name(c.state)
            )
        })
        .collect();
    say("containers", list.join(","));
    for c in containers.iter().filter(|c| c.state != 1) {
        let key = format!("status_{}_{}", pod_of(&c.sandbox_id), c.name);
        match cri.container_status(&c.id) {
            Ok(s) => say(
                &key,
                format!(
                    "{} exit={} reason={} message={}",
                    container_state_name(s.state),
                    s.exit_code,
                    s.reason,
                    s.message
                ),
            ),
            Err(e) => say(&key, format!("error {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines() {
        let console = "kt: KUBELET-TEST a=1\nnoise\nkt: KUBELET-TEST b=x=y z\nKUBELET-TEST a=2\n";
        let r = results(console);
        assert_eq!(r["a"], "2");
        assert_eq!(r["b"], "x=y z");
        assert_eq!(line("k", "v\nw"), "KUBELET-TEST k=v w");
    }

    #[test]
    fn manifests_name_the_pods() {
        let p = probe_manifest();
        assert!(p.contains("name: probe\n") && p.contains("initContainers:"));
        assert!(p.contains("imagePullPolicy: Never") && p.contains(PROBE_IMAGE));
        let q = privileged_manifest();
        assert!(q.contains("privileged: true"));
        assert_eq!(static_pod_name(PROBE_POD), "probe-rampart");
        let dir = tempfile::tempdir().unwrap();
        let files = write_manifests(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), p);
    }

    #[test]
    fn sandboxes_from_the_wire() {
        // ListPodSandboxResponse { items: [PodSandbox { id, metadata { name, uid, ns }, state }] }
        let mut w = Writer::new();
        for (id, name, state) in [("s1", "probe-rampart", 0), ("s2", "privileged-rampart", 1)] {
            w.message(1, |p| {
                p.string(1, id)
                    .message(2, |md| {
                        md.string(1, name).string(2, "uid").string(3, "default");
                    })
                    .varint(3, state);
            });
        }
        let s = parse_sandboxes(&w.finish()).unwrap();
        assert_eq!(
            s,
            [
                Sandbox {
                    id: "s1".into(),
                    name: "probe-rampart".into(),
                    namespace: "default".into(),
                    state: 0
                },
                Sandbox {
                    id: "s2".into(),
                    name: "privileged-rampart".into(),
                    namespace: "default".into(),
                    state: 1
                },
            ]
        );
        assert_eq!(sandbox_state_name(0), "READY");
        assert!(parse_sandboxes(&[0xff]).is_err());
    }

    #[test]
    fn guest_options() {
        let o = GuestOptions::parse(&[]).unwrap();
        assert_eq!(o.pod, "probe-rampart");
        assert_eq!(o.container, "probe");
        let args: Vec<String> = ["--pod", "x", "--wait", "5", "--socket", "/s"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let o = GuestOptions::parse(&args).unwrap();
        assert_eq!(
            (o.pod.as_str(), o.wait, o.socket),
            ("x", Duration::from_secs(5), PathBuf::from("/s"))
        );
        assert!(GuestOptions::parse(&["--wait".to_owned()]).is_err());
        assert!(GuestOptions::parse(&["--nope".to_owned(), "1".to_owned()]).is_err());
    }
}
