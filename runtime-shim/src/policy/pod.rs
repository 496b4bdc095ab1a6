//! Pods: specs that containerd's CRI plugin wrote for the kubelet, told apart by their
//! annotations, and the rules that depend on the pod's Kubernetes namespace.
//!
//! The CRI plugin (containerd 1.6) annotates every spec it writes: `io.kubernetes.cri.container-type`
//! (`sandbox` for the pause container that holds the pod's namespaces, `container` for the
//! pod's own containers), the sandbox id, the pod's name, namespace and uid, and for containers
//! the container and image names. A spec with a `container-type` annotation is a pod; its
//! namespace picks the `[[container_policy.kubernetes_namespace]]` table whose entries lift
//! three refusals for that namespace only: privileged pods (`allow_privileged`), bind mounts
//! of sensitive host paths (`allow_host_paths`) and `hostNetwork` (`allow_host_network`).
//! Every other rule (seccomp, no_new_privs, capabilities, ...) holds pods exactly as it holds
//! plain containers.
//!
//! Bind mounts of the files the CRI plugin keeps for the pod's own sandbox (`hosts`,
//! `hostname`, `resolv.conf`, the `shm` folder) and of the kubelet's folder for the pod's own
//! uid (its volumes, `etc-hosts`, termination logs) are the pod's own, not host paths.
//!
//! The annotations are trusted as written: anyone who may talk to containerd could write them
//! too (`ctr -n k8s.io run --annotation ...`), so a namespace table grants what any such client
//! could then get.

use std::fmt;
use std::path::{Path, PathBuf};

use rampart_config::containerd::{ROOT_DIR, STATE_DIR};
use rampart_config::policy::{KubernetesNamespace, NamespaceName};
use serde_json::{Map, Value};

use super::{strings, Ctx, HostFacts, Policy, Rule};

/// `sandbox` or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The id of the pod's sandbox (the pause container's containerd id).
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The pod's name.
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// The pod's Kubernetes namespace.
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// The pod's uid (containerd 1.6 writes it; older ones did not).
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
/// The container's name in the pod (containers only).
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// The image the container runs (containers only).
pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// The CRI plugin's folder under containerd's root and state folders.
pub const CRI_PLUGIN_DIR: &str = "io.containerd.grpc.v1.cri";
/// The files the CRI plugin keeps for a sandbox under `ROOT/io.containerd.grpc.v1.cri/sandboxes/ID/`.
pub const CRI_SANDBOX_FILES: &[&str] = &["hosts", "hostname", "resolv.conf"];
/// The folders it keeps under `STATE/io.containerd.grpc.v1.cri/sandboxes/ID/` (the pod's `/dev/shm`).
pub const CRI_SANDBOX_STATE_FILES: &[&str] = &["shm"];
/// The kubelet's root folder (its credentials, and every pod's volumes under `pods/UID/`).
pub const KUBELET_ROOT: &str = "/var/lib/kubelet";

/// What the CRI plugin says a spec is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerType {
    /// The pod's sandbox (pause) container, which holds its namespaces.
    Sandbox,
    /// One of the pod's containers.
    Container,
}

impl ContainerType {
    /// The annotation's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerType::Sandbox => "sandbox",
            ContainerType::Container => "container",
        }
    }
}

impl fmt::Display for ContainerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a pod spec belongs to, from its CRI annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// Sandbox or container.
    pub kind: ContainerType,
    /// The sandbox id (a containerd id).
    pub sandbox_id: String,
    /// The pod's name.
    pub name: String,
    /// The pod's Kubernetes namespace.
    pub namespace: NamespaceName,
    /// The pod's uid, when the annotation is there.
    pub uid: Option<String>,
    /// The container's name (containers only).
    pub container: Option<String>,
    /// The image (containers only, when the annotation is there).
    pub image: Option<String>,
}

impl fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pod {}/{}", self.namespace, self.name)?;
        match (&self.kind, &self.container) {
            (ContainerType::Container, Some(c)) => write!(f, " container {c}"),
            _ => write!(f, " {}", self.kind),
        }
    }
}

/// A containerd id: letters and digits, separated by single `.`, `_` or `-`, at most 76.
fn containerd_id(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=76).contains(&s.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && !bytes
            .windows(2)
            .any(|w| w.iter().all(|b| !b.is_ascii_alphanumeric()))
}

/// A pod uid: a UUID, or the hex hash the kubelet gives static pods.
fn pod_uid(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Reads the CRI annotations of a spec: `Ok(None)` for a plain container (no
/// `io.kubernetes.cri.container-type`), `Err` naming what is wrong when a pod spec's
/// annotations are incomplete or malformed (the pod's namespace rules could not be found).
pub fn identify(spec: &Value) -> Result<Option<PodIdentity>, String> {
    let Some(a) = spec.get("annotations").and_then(Value::as_object) else {
        return Ok(None);
    };
    let text = |key: &str| -> Result<Option<&str>, String> {
        match a.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("annotation {key} is not a string")),
        }
    };
    let required = |key: &str| -> Result<&str, String> {
        text(key)?.ok_or_else(|| format!("the pod spec has no {key} annotation"))
    };
    let kind = match text(CONTAINER_TYPE)? {
        None => return Ok(None),
        Some("sandbox") => ContainerType::Sandbox,
        Some("container") => ContainerType::Container,
        Some(other) => {
            return Err(format!(
                "annotation {CONTAINER_TYPE} is `{other}`, not `sandbox` or `container`"
            ))
        }
    };
    let sandbox_id = required(SANDBOX_ID)?;
    if !containerd_id(sandbox_id) {
        return Err(format!(
            "annotation {SANDBOX_ID} `{sandbox_id}` is not a containerd id"
        ));
    }
    let namespace = NamespaceName::try_from(required(SANDBOX_NAMESPACE)?)
        .map_err(|e| format!("annotation {SANDBOX_NAMESPACE}: {e}"))?;
    let name = required(SANDBOX_NAME)?;
    if name.len() > 253 || name.chars().any(char::is_control) {
        return Err(format!("annotation {SANDBOX_NAME} is not a pod name"));
    }
    let uid = match text(SANDBOX_UID)? {
        Some(u) if !pod_uid(u) => {
            return Err(format!("annotation {SANDBOX_UID} `{u}` is not a pod uid"))
        }
        u => u.map(str::to_owned),
    };
    let (container, image) = match kind {
        ContainerType::Sandbox => (None, None),
        ContainerType::Container => {
            let c = required(CONTAINER_NAME)?;
            if c.len() > 253 || c.chars().any(char::is_control) {
                return Err(format!(
                    "annotation {CONTAINER_NAME} is not a container name"
                ));
            }
            (Some(c.to_owned()), text(IMAGE_NAME)?.map(str::to_owned))
        }
    };
    Ok(Some(PodIdentity {
        kind,
        sandbox_id: sandbox_id.to_owned(),
        name: name.to_owned(),
        namespace,
        uid,
        container,
        image,
    }))
}

/// The folders whose content is the pod's own, not the host's: the CRI plugin's files for its
/// sandbox, and the kubelet's folder for its uid (when the spec names the uid).
pub fn own_paths(pod: &PodIdentity) -> Vec<PathBuf> {
    let sandboxes = |base: &str| {
        Path::new(base)
            .join(CRI_PLUGIN_DIR)
            .join("sandboxes")
            .join(&pod.sandbox_id)
    };
    let mut out: Vec<PathBuf> = CRI_SANDBOX_FILES
        .iter()
        .map(|f| sandboxes(ROOT_DIR).join(f))
        .chain(
            CRI_SANDBOX_STATE_FILES
                .iter()
                .map(|f| sandboxes(STATE_DIR).join(f)),
        )
        .collect();
    if let Some(uid) = &pod.uid {
        out.push(Path::new(KUBELET_ROOT).join("pods").join(uid));
    }
    out
}

/// What a pod may do by its namespace, for the rules that run after it is known.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Scope<'a> {
    /// The pod, when the spec is one.
    pub pod: Option<&'a PodIdentity>,
    /// Its namespace's table, when the host file has one.
    pub ns: Option<&'a KubernetesNamespace>,
    /// A privileged pod that its namespace allows: capabilities, devices, masked and read-only
    /// paths and read-only kernel file systems are left as the spec has them.
    pub privileged: bool,
}

impl Scope<'_> {
    /// The key that let a privileged pod through, for audit lines.
    pub fn privileged_reason(&self) -> String {
        let ns = self.pod.map_or("?", |p| p.namespace.as_str());
        format!("allow_privileged of Kubernetes namespace {ns}")
    }
}

/// How to write the namespace table that would allow something, in messages.
fn table_hint(ns: &NamespaceName) -> String {
    format!("in [[container_policy.kubernetes_namespace]] name = \"{ns}\"")
}

impl Policy {
    /// Identifies the pod (a malformed identity refuses the spec) and runs the privileged rule.
    pub(super) fn scope<'a>(
        &'a self,
        pod: Option<&'a PodIdentity>,
        obj: &Map<String, Value>,
        cx: &mut Ctx,
    ) -> Scope<'a> {
        let Some(pod) = pod else {
            return Scope::default();
        };
        let ns = self.config.kubernetes_namespace(pod.namespace.as_str());
        let mut scope = Scope {
            pod: Some(pod),
            ns,
            privileged: false,
        };
        let signs = self.privileged_signs(obj);
        if signs.is_empty() {
            return scope;
        }
        let signs = signs.join(" and ");
        if ns.is_some_and(|n| n.allow_privileged) {
            scope.privileged = true;
            cx.allow(
                Rule::Privileged,
                format!(
                    "{pod} runs privileged: {signs} ({}); it keeps the capabilities and devices its spec lists, writable kernel file systems and no added masked or read-only paths",
                    scope.privileged_reason()
                ),
            );
        } else {
            cx.refuse(
                Rule::Privileged,
                format!(
                    "{pod} is privileged: {signs}; allow it with allow_privileged = true {}",
                    table_hint(&pod.namespace)
                ),
            );
        }
        scope
    }

    /// The signs of `privileged: true` in a spec: an allow-all device rule, `CAP_SYS_ADMIN`
    /// (unless `allow_capabilities` grants it to every container).
    pub(super) fn privileged_signs(&self, obj: &Map<String, Value>) -> Vec<String> {
        let mut signs = Vec::new();
        let rules = obj
            .get("linux")
            .and_then(|l| l.get("resources"))
            .and_then(|r| r.get("devices"))
            .and_then(Value::as_array);
        let any = |v: Option<&Value>| match v {
            None | Some(Value::Null) => true,
            Some(v) => v.as_i64() == Some(-1),
        };
        let all_devices = rules.into_iter().flatten().any(|r| {
            let access = r.get("access").and_then(Value::as_str).unwrap_or("rwm");
            r.get("allow") == Some(&Value::Bool(true))
                && matches!(
                    r.get("type").and_then(Value::as_str).unwrap_or("a"),
                    "a" | ""
                )
                && any(r.get("major"))
                && any(r.get("minor"))
                && (access.is_empty() || access.contains(['r', 'w']))
        });
        if all_devices {
            signs.push(
                "it may use every host device (an allow-all rule in linux.resources.devices)"
                    .to_owned(),
            );
        }
        let caps = obj
            .get("process")
            .and_then(|p| p.get("capabilities"))
            .and_then(Value::as_object);
        let sys_admin = caps.is_some_and(|c| {
            c.values().any(|set| {
                strings(Some(set), "")
                    .unwrap_or_default()
                    .iter()
                    .any(|n| n == "CAP_SYS_ADMIN")
            })
        });
        if sys_admin && !self.allowed_caps.contains("CAP_SYS_ADMIN") {
            signs.push("it asks for CAP_SYS_ADMIN".to_owned());
        }
        signs
    }

    /// Whether `p` (lexical) is the pod's own (see [`own_paths`]), and stays so once symlinks
    /// are followed.
    pub(super) fn pod_own_path(p: &Path, facts: &HostFacts, pod: &PodIdentity) -> bool {
        let own = own_paths(pod);
        let inside = |q: &Path| {
            own.iter()
                .any(|o| q == o || (o.starts_with(KUBELET_ROOT) && q.starts_with(o)))
        };
        inside(p) && facts.canonical.get(p).is_none_or(|c| inside(c))
    }

    /// The namespace entry in `allow_host_paths` that covers `p`, if any (`/` covers only `/`).
    pub(super) fn host_path_allowed(scope: &Scope<'_>, p: &Path) -> bool {
        scope.ns.is_some_and(|n| {
            n.allow_host_paths
                .iter()
                .any(|e| p == e || (e != Path::new("/") && p.starts_with(e)))
        })
    }

    /// The `hostNetwork` rule: a pod without its own network namespace (`why`), and with it
    /// the host's uts namespace when `uts` (hostNetwork implies both).
    pub(super) fn host_network(
        pod: &PodIdentity,
        scope: &Scope<'_>,
        why: &str,
        uts: bool,
        cx: &mut Ctx,
    ) {
        let and_uts = if uts {
            " and uts namespaces"
        } else {
            " namespace"
        };
        if scope.ns.is_some_and(|n| n.allow_host_network) {
            cx.allow(
                Rule::HostNetwork,
                format!(
                    "{pod} shares the host's network{and_uts} (hostNetwork; allow_host_network of Kubernetes namespace {})",
                    pod.namespace
                ),
            );
        } else {
            cx.refuse(
                Rule::HostNetwork,
                format!(
                    "{pod} {why}: it asks for hostNetwork; allow it with allow_host_network = true {}",
                    table_hint(&pod.namespace)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
