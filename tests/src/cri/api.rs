//! The CRI calls the test suite makes, on the `runtime.v1` API (Kubernetes' `api.proto`; field
//! numbers from it): request messages built with [`Writer`], the fields the tests need read
//! back from the responses. [`Cri`] wraps a [`Client`] of containerd's socket.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::grpc::{Client, GrpcError};
use super::proto::{Message, ProtoError, Writer};

/// The runtime service of CRI v1.
pub const RUNTIME_V1: &str = "runtime.v1.RuntimeService";
/// The image service of CRI v1.
pub const IMAGE_V1: &str = "runtime.v1.ImageService";
/// The runtime service of CRI v1alpha2 (what kubelet 1.20 speaks).
pub const RUNTIME_V1ALPHA2: &str = "runtime.v1alpha2.RuntimeService";

/// `NamespaceMode.NODE`: the host's namespace.
pub const NAMESPACE_NODE: u64 = 2;

/// Errors of a CRI call.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The call failed.
    #[error("{method}: {source}")]
    Call {
        /// The method.
        method: String,
        /// The error.
        source: GrpcError,
    },
    /// The response is not the message it should be.
    #[error("{method}: bad response: {source}")]
    Decode {
        /// The method.
        method: String,
        /// The error.
        source: ProtoError,
    },
}

impl CriError {
    /// The runtime's own message for a call it refused (the gRPC status message).
    pub fn runtime_message(&self) -> Option<&str> {
        match self {
            CriError::Call { source, .. } => source.status_message(),
            CriError::Decode { .. } => None,
        }
    }
}

/// A pod to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// Its name.
    pub name: String,
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
    /// `hostNetwork: true`.
    pub host_network: bool,
    /// `privileged: true` on the sandbox (needed for a privileged container).
    pub privileged: bool,
    /// The folder of its containers' logs.
    pub log_directory: String,
    /// Its cgroup parent (cgroupfs path).
    pub cgroup_parent: String,
    /// The CRI runtime handler (containerd's runtime name); empty for the default.
    pub runtime_handler: String,
}

/// A container to create in a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The command (the image's entrypoint when empty).
    pub command: Vec<String>,
    /// The arguments.
    pub args: Vec<String>,
    /// Its log file, relative to the pod's log folder.
    pub log_path: String,
    /// `privileged: true`.
    pub privileged: bool,
    /// Bind mounts: (container path, host path, read-only).
    pub mounts: Vec<(String, String, bool)>,
}

/// `PodSandboxConfig` for `p`.
pub fn pod_sandbox_config(p: &Pod) -> Vec<u8> {
    let mut labels = BTreeMap::new();
    labels.insert("rampart.test/pod".to_owned(), p.name.clone());
    let mut w = Writer::new();
    w.message(1, |m| {
        // PodSandboxMetadata: name 1, uid 2, namespace 3, attempt 4.
        m.string(1, &p.name)
            .string(2, &p.uid)
            .string(3, &p.namespace)
            .varint(4, 0);
    })
    // The kubelet sets a hostname only for pods with their own UTS namespace: runc refuses
    // one for a host-network pod, which shares the host's.
    .string(2, if p.host_network { "" } else { &p.name })
    .string(3, &p.log_directory)
    .map(6, &labels)
    .message(8, |linux| {
        // LinuxPodSandboxConfig: cgroup_parent 1, security_context 2.
        linux.string(1, &p.cgroup_parent).message(2, |sc| {
            // LinuxSandboxSecurityContext: namespace_options 1, privileged 6.
            sc.message(1, |ns| {
                // NamespaceOption: network 1, pid 2, ipc 3 (POD = 0, NODE = 2).
                if p.host_network {
                    ns.varint(1, NAMESPACE_NODE);
                }
            })
            .bool(6, p.privileged);
        });
    });
    w.finish()
}

/// `ContainerConfig` for `c`.
pub fn container_config(c: &ContainerSpec) -> Vec<u8> {
    let mut w = Writer::new();
    w.message(1, |m| {
        // ContainerMetadata: name 1, attempt 2.
        m.string(1, &c.name).varint(2, 0);
    })
    .message(2, |i| {
        // ImageSpec: image 1.
        i.string(1, &c.image);
    })
    .strings(3, &c.command)
    .strings(4, &c.args);
    for (container_path, host_path, readonly) in &c.mounts {
        // Mount: container_path 1, host_path 2, readonly 3.
        w.message(7, |m| {
            m.string(1, container_path)
                .string(2, host_path)
                .bool(3, *readonly);
        });
    }
    w.string(11, &c.log_path).message(15, |linux| {
        // LinuxContainerConfig: security_context 2; LinuxContainerSecurityContext: privileged 2.
        linux.message(2, |sc| {
            sc.bool(2, c.privileged);
        });
    });
    w.finish()
}

/// What `Version` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    /// The API version the runtime speaks.
    pub version: String,
    /// The runtime's name.
    pub runtime_name: String,
    /// The runtime's version.
    pub runtime_version: String,
    /// The runtime API version.
    pub runtime_api_version: String,
}

/// What `PodSandboxStatus` says, in part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxStatus {
    /// `SANDBOX_READY` (0) or `SANDBOX_NOTREADY` (1).
    pub state: u64,
    /// The pod's IP address (empty for host-network pods).
    pub ip: String,
    /// The network namespace mode (`POD` 0, `NODE` 2).
    pub network_mode: u64,
    /// The pause process's pid (from the verbose info).
    pub pid: Option<u32>,
}

/// What `ContainerStatus` says, in part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStatus {
    /// `CONTAINER_CREATED` 0, `RUNNING` 1, `EXITED` 2, `UNKNOWN` 3.
    pub state: u64,
    /// Its exit code.
    pub exit_code: i64,
    /// Why it is in that state.
    pub reason: String,
    /// More about it.
    pub message: String,
    /// Its log file.
    pub log_path: String,
}

/// One entry of `ListContainers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEntry {
    /// Its id.
    pub id: String,
    /// Its pod's sandbox id.
    pub sandbox_id: String,
    /// Its name.
    pub name: String,
    /// Its state (see [`ContainerStatus::state`]).
    pub state: u64,
}

/// The name of a container state.
pub fn container_state_name(state: u64) -> &'static str {
    match state {
        0 => "CREATED",
        1 => "RUNNING",
        2 => "EXITED",
        _ => "UNKNOWN",
    }
}

/// A varint that is a two's-complement 32-bit integer (`int32` fields).
fn int32(v: u64) -> i64 {
    i64::from(v as u32 as i32)
}

/// The pid in the JSON of a verbose status's `info` entry.
pub fn info_pid(info: &BTreeMap<String, String>) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    v.get("pid")?.as_u64().and_then(|p| u32::try_from(p).ok())
}

/// A CRI client of containerd.
#[derive(Debug, Clone)]
pub struct Cri {
    client: Client,
}

impl Cri {
    /// A client of the CRI plugin on `socket`.
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        Self {
            client: Client::new(socket, timeout),
        }
    }

    fn call(&self, service: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, CriError> {
        self.client
            .call(&format!("/{service}/{method}"), request)
            .map_err(|source| CriError::Call {
                method: method.to_owned(),
                source,
            })
    }

    fn decode<'a>(method: &str, bytes: &'a [u8]) -> Result<Message<'a>, CriError> {
        Message::parse(bytes).map_err(|source| CriError::Decode {
            method: method.to_owned(),
            source,
        })
    }

    fn nested<'a>(
        method: &str,
        r: Result<Option<Message<'a>>, ProtoError>,
    ) -> Result<Message<'a>, CriError> {
        r.map(Option::unwrap_or_default)
            .map_err(|source| CriError::Decode {
                method: method.to_owned(),
                source,
            })
    }

    /// `Version` of `service` ([`RUNTIME_V1`] or [`RUNTIME_V1ALPHA2`]).
    pub fn version(&self, service: &str) -> Result<Version, CriError> {
        let mut w = Writer::new();
        w.string(1, "v1");
        let bytes = self.call(service, "Version", &w.finish())?;
        let m = Self::decode("Version", &bytes)?;
        Ok(Version {
            version: m.string(1),
            runtime_name: m.string(2),
            runtime_version: m.string(3),
            runtime_api_version: m.string(4),
        })
    }

    /// `ImageStatus`: the image's id, or `None` when the runtime does not have it.
    pub fn image_status(&self, image: &str) -> Result<Option<String>, CriError> {
        let mut w = Writer::new();
        w.message(1, |i| {
            i.string(1, image);
        });
        let bytes = self.call(IMAGE_V1, "ImageStatus", &w.finish())?;
        let m = Self::decode("ImageStatus", &bytes)?;
        let img = Self::nested("ImageStatus", m.message(1))?;
        let id = img.string(1);
        Ok((!id.is_empty()).then_some(id))
    }

    /// `RunPodSandbox`: the sandbox id.
    pub fn run_pod_sandbox(&self, pod: &Pod) -> Result<String, CriError> {
        let mut w = Writer::new();
        // RunPodSandboxRequest: config 1, runtime_handler 2 (left out when empty).
        w.bytes(1, &pod_sandbox_config(pod))
            .string(2, &pod.runtime_handler);
        let bytes = self.call(RUNTIME_V1, "RunPodSandbox", &w.finish())?;
        Ok(Self::decode("RunPodSandbox", &bytes)?.string(1))
    }

    /// `PodSandboxStatus` (verbose, for the pause process's pid).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<SandboxStatus, CriError> {
        const M: &str = "PodSandboxStatus";
        let mut w = Writer::new();
        w.string(1, id).bool(2, true);
        let bytes = self.call(RUNTIME_V1, M, &w.finish())?;
        let m = Self::decode(M, &bytes)?;
        let status = Self::nested(M, m.message(1))?;
        let network = Self::nested(M, status.message(5))?;
        let linux = Self::nested(M, status.message(6))?;
        let namespaces = Self::nested(M, linux.message(1))?;
        let options = Self::nested(M, namespaces.message(2))?;
        let info = m.map(2).map_err(|source| CriError::Decode {
            method: M.to_owned(),
            source,
        })?;
        Ok(SandboxStatus {
            state: status.varint(3),
            ip: network.string(1),
            network_mode: options.varint(1),
            pid: info_pid(&info),
        })
    }

    /// `CreateContainer` in the sandbox `sandbox_id` of `pod`: the container id.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        c: &ContainerSpec,
        pod: &Pod,
    ) -> Result<String, CriError> {
        let mut w = Writer::new();
        w.string(1, sandbox_id)
            .bytes(2, &container_config(c))
            .bytes(3, &pod_sandbox_config(pod));
        let bytes = self.call(RUNTIME_V1, "CreateContainer", &w.finish())?;
        Ok(Self::decode("CreateContainer", &bytes)?.string(1))
    }

    /// `StartContainer`.
    pub fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut w = Writer::new();
        w.string(1, id);
        self.call(RUNTIME_V1, "StartContainer", &w.finish())
            .map(drop)
    }

    /// `ContainerStatus`.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, CriError> {
        const M: &str = "ContainerStatus";
        let mut w = Writer::new();
        w.string(1, id);
        let bytes = self.call(RUNTIME_V1, M, &w.finish())?;
        let m = Self::decode(M, &bytes)?;
        let s = Self::nested(M, m.message(1))?;
        Ok(ContainerStatus {
            state: s.varint(3),
            exit_code: int32(s.varint(7)),
            reason: s.string(10),
            message: s.string(11),
            log_path: s.string(15),
        })
    }

    /// `ListContainers`, of one sandbox or of all.
    pub fn list_containers(
        &self,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<ContainerEntry>, CriError> {
        const M: &str = "ListContainers";
        let mut w = Writer::new();
        w.message(1, |f| {
            // ContainerFilter: pod_sandbox_id 3.
            f.string(3, sandbox_id.unwrap_or_default());
        });
        let bytes = self.call(RUNTIME_V1, M, &w.finish())?;
        let m = Self::decode(M, &bytes)?;
        let items = m.messages(1).map_err(|source| CriError::Decode {
            method: M.to_owned(),
            source,
        })?;
        Ok(items
            .iter()
            .map(|c| ContainerEntry {
                id: c.string(1),
                sandbox_id: c.string(2),
                name: c
                    .message(3)
                    .ok()
                    .flatten()
                    .map(|md| md.string(1))
                    .unwrap_or_default(),
                state: c.varint(6),
            })
            .collect())
    }

    /// `StopPodSandbox`.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut w = Writer::new();
        w.string(1, id);
        self.call(RUNTIME_V1, "StopPodSandbox", &w.finish())
            .map(drop)
    }

    /// `RemovePodSandbox`.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut w = Writer::new();
        w.string(1, id);
        self.call(RUNTIME_V1, "RemovePodSandbox", &w.finish())
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_config_fields() {
        let pod = Pod {
            name: "web".into(),
            namespace: "shop".into(),
            uid: "u-1".into(),
            host_network: true,
            privileged: true,
            log_directory: "/var/log/pods/shop_web_u-1".into(),
            cgroup_parent: "/kubepods/podu-1".into(),
            runtime_handler: String::new(),
        };
        let bytes = pod_sandbox_config(&pod);
        let m = Message::parse(&bytes).unwrap();
        let md = m.message(1).unwrap().unwrap();
        assert_eq!(
            (md.string(1), md.string(2), md.string(3)),
            ("web".into(), "u-1".into(), "shop".into())
        );
        assert_eq!(m.string(2), "", "no hostname for a host-network pod");
        assert_eq!(m.string(3), "/var/log/pods/shop_web_u-1");
        assert_eq!(m.map(6).unwrap()["rampart.test/pod"], "web");
        let linux = m.message(8).unwrap().unwrap();
        assert_eq!(linux.string(1), "/kubepods/podu-1");
        let sc = linux.message(2).unwrap().unwrap();
        assert_eq!(sc.varint(6), 1);
        assert_eq!(sc.message(1).unwrap().unwrap().varint(1), NAMESPACE_NODE);
        // A pod network pod leaves the mode at POD (0, absent).
        let plain = pod_sandbox_config(&Pod::default());
        let sc = Message::parse(&plain)
            .unwrap()
            .message(8)
            .unwrap()
            .unwrap()
            .message(2)
            .unwrap()
            .unwrap();
        assert_eq!(sc.message(1).unwrap().unwrap().varint(1), 0);
        assert_eq!(sc.varint(6), 0);
    }

    #[test]
    fn container_config_fields() {
        let c = ContainerSpec {
            name: "probe".into(),
            image: "rampart.test/probe:latest".into(),
            command: vec!["/rampart-probe".into()],
            args: vec!["status".into()],
            log_path: "probe/0.log".into(),
            privileged: true,
            mounts: vec![("/host".into(), "/".into(), true)],
        };
        let bytes = container_config(&c);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.message(1).unwrap().unwrap().string(1), "probe");
        assert_eq!(
            m.message(2).unwrap().unwrap().string(1),
            "rampart.test/probe:latest"
        );
        assert_eq!(m.strings(3), ["/rampart-probe"]);
        assert_eq!(m.strings(4), ["status"]);
        let mount = &m.messages(7).unwrap()[0];
        assert_eq!(
            (mount.string(1), mount.string(2), mount.varint(3)),
            ("/host".into(), "/".into(), 1)
        );
        assert_eq!(m.string(11), "probe/0.log");
        let sc = m.message(15).unwrap().unwrap().message(2).unwrap().unwrap();
        assert_eq!(sc.varint(2), 1);
    }

    #[test]
    fn small_readers() {
        assert_eq!(int32(u64::MAX), -1);
        assert_eq!(int32(137), 137);
        let mut info = BTreeMap::new();
        assert_eq!(info_pid(&info), None);
        info.insert(
            "info".to_owned(),
            r#"{"pid": 4242, "image": "x"}"#.to_owned(),
        );
        assert_eq!(info_pid(&info), Some(4242));
        assert_eq!(container_state_name(2), "EXITED");
        assert_eq!(container_state_name(9), "UNKNOWN");
    }
}
