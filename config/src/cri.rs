//! containerd's CRI plugin on a rampart host (`[containerd] cri = true`): the pause image, the
//! service that imports it, and the pod network (`[containerd] pod_subnet`).
//!
//! - The pause image [`PAUSE_IMAGE`] is a one-file OCI archive that `rampart-image` builds from
//!   the static `rampart-pause` and puts at [`PAUSE_ARCHIVE`]; unless `sandbox_image` names
//!   another image, the CRI plugin uses it. containerd has no way to load a local archive by
//!   itself, so [`cri_services`] adds the oneshot service [`IMPORT_SERVICE`]: `ctr image import`
//!   into containerd's [`K8S_NAMESPACE`] namespace once containerd is ready (no capability,
//!   restarted on failure). Until it has run, the CRI plugin would try to pull the image.
//! - `pod_subnet` gives pods a CNI bridge network: a conflist at [`CNI_CONF_FILE`] (`bridge` on
//!   [`POD_BRIDGE`] with `host-local` addresses, then `loopback`), the plugins from
//!   [`CNI_PLUGIN_DIR`], and, through [`merge_pod_network`], the firewall's
//!   `[firewall.containers]` for that bridge and subnet plus `net.ipv4.ip_forward = 1`.
//!   [`Validator::check_pod_network`] refuses a host file where they would disagree.

use std::path::{Path, PathBuf};

use crate::containerd::{Containerd, SOCKET};
use crate::firewall::{Cidr, Containers, Firewall, InterfaceName};
use crate::operate::{CONTAINERD_SERVICE, CTR_PATH};
use crate::service::{Namespace, SeccompProfile, Service};
use crate::types::{Restart, ServiceName, Size, SysctlKey, SysctlValue};
use crate::{HostConfig, Kernel, Validator};

/// The pause image `rampart-image` builds (the CRI plugin's `sandbox_image` by default).
pub const PAUSE_IMAGE: &str = "rampart.local/pause:1";
/// The pause program's file name beside `rampart-image`.
pub const PAUSE_BINARY: &str = "rampart-pause";
/// Where the pause image's OCI archive goes in the image.
pub const PAUSE_ARCHIVE: &str = "/usr/share/rampart/pause.oci.tar";
/// containerd's namespace for the CRI plugin's images and containers.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The oneshot service that imports the pause image.
pub const IMPORT_SERVICE: &str = "rampart-cri-import";
/// The bridge pods are attached to.
pub const POD_BRIDGE: &str = "cni0";
/// The CNI network's name.
pub const POD_NETWORK: &str = "rampart-pods";
/// The CRI plugin's CNI configuration folder.
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// The generated CNI network list.
pub const CNI_CONF_FILE: &str = "/etc/cni/net.d/10-rampart-pods.conflist";
/// Where the CNI plugins are, in the image and on the build machine (Debian's
/// `containernetworking-plugins`). Under `/usr`, where the `rampart-containerd` AppArmor
/// profile lets containerd execute programs.
pub const CNI_PLUGIN_DIR: &str = "/usr/lib/cni";
/// The CNI plugins the pod network runs.
pub const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback"];
/// Where libcni keeps its cache and `host-local` its leases: containerd must be able to
/// create it (the `containerd` service's `writable_paths` must cover it).
pub const CNI_STATE_DIR: &str = "/var/lib/cni";
/// The sysctl pods need to reach beyond the host.
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";
/// The shortest and longest prefix of `pod_subnet`.
pub const POD_PREFIX_RANGE: (u8, u8) = (8, 28);

impl Containerd {
    /// The image the CRI plugin runs sandboxes from.
    pub fn sandbox_image(&self) -> &str {
        self.sandbox_image.as_deref().unwrap_or(PAUSE_IMAGE)
    }

    /// Whether the image carries rampart's pause image and imports it: CRI is on and the
    /// sandbox image is [`PAUSE_IMAGE`].
    pub fn own_pause_image(&self) -> bool {
        self.enable && self.cri && self.sandbox_image() == PAUSE_IMAGE
    }

    /// The kernel modules the pod network needs (`bridge`, `veth`), none without `pod_subnet`.
    pub fn pod_network_modules(&self) -> Vec<&'static str> {
        if self.enable && self.cri && self.pod_subnet.is_some() {
            vec!["bridge", "veth"]
        } else {
            Vec::new()
        }
    }
}

/// `[firewall.containers]` for the pod network.
fn pod_containers(subnet: Cidr) -> Option<Containers> {
    let bridge = InterfaceName::try_from(POD_BRIDGE).ok()?;
    Some(Containers {
        bridge,
        subnet,
        subnet6: None,
    })
}

/// With `pod_subnet`: sets `[firewall.containers]` to the pod bridge and subnet (when the file
/// has none; [`Validator::check_pod_network`] refused a different one) and adds
/// `net.ipv4.ip_forward = 1` to the sysctls (when the file does not set it).
pub fn merge_pod_network(c: &Containerd, fw: &mut Firewall, kernel: &mut Kernel) {
    let Some(subnet) = c.pod_subnet.filter(|_| c.enable && c.cri) else {
        return;
    };
    if fw.containers.is_none() {
        fw.containers = pod_containers(subnet);
    }
    if !kernel.sysctl.iter().any(|(k, _)| k.as_str() == IP_FORWARD) {
        if let (Ok(k), Ok(v)) = (SysctlKey::try_from(IP_FORWARD), SysctlValue::try_from("1")) {
            kernel.sysctl.push((k, v));
            kernel.sysctl.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
}

/// The services rampart adds for CRI, ready to append to `cfg.services` (boot does, with the
/// operate services): [`IMPORT_SERVICE`] when the image carries its own pause image and a
/// service named `containerd` exists (started after it). It runs `ctr image import` with no
/// capability (containerd's socket is root's), in its own mount namespace with a read-only
/// root, and is restarted when it fails (containerd restarting under it).
pub fn cri_services(cfg: &HostConfig) -> Vec<Service> {
    let c = &cfg.containerd;
    let containerd = cfg
        .services
        .iter()
        .find(|s| s.name.as_str() == CONTAINERD_SERVICE);
    let (true, Some(containerd)) = (c.own_pause_image(), containerd) else {
        return Vec::new();
    };
    let Ok(name) = ServiceName::try_from(IMPORT_SERVICE) else {
        return Vec::new();
    };
    let exec = [
        CTR_PATH,
        "--address",
        SOCKET,
        "--namespace",
        K8S_NAMESPACE,
        "image",
        "import",
        "--snapshotter",
        c.snapshotter.as_str(),
        PAUSE_ARCHIVE,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut s = Service::new(name, exec);
    s.restart = Restart::OnFailure;
    s.after = vec![containerd.name.clone()];
    s.capabilities = Vec::new();
    s.no_new_privs = true;
    s.namespaces = vec![Namespace::Mount];
    s.read_only_root = true;
    s.seccomp = Some(SeccompProfile::Default);
    // `ctr` is a Go program: room for its runtime's threads and heap.
    s.limits.memory_max = Some(Size::from_mib(128));
    s.limits.pids_max = Some(64);
    vec![s]
}

/// The binaries [`cri_services`] runs (image paths), for `rampart-image`.
pub fn service_binaries(cfg: &HostConfig) -> Vec<PathBuf> {
    cri_services(cfg)
        .iter()
        .filter_map(|s| s.exec.first())
        .map(PathBuf::from)
        .collect()
}

/// Whether `paths` (a service's `writable_paths`) let it create `dir`.
fn covers(paths: &[PathBuf], dir: &Path) -> bool {
    paths.iter().any(|p| dir.starts_with(p))
}

impl Validator<'_> {
    /// The checks of `containerd.pod_subnet` (at `span`) against the rest of the file:
    /// `cri = true`, a `[firewall.containers]` (if any) for the same bridge and subnet, no
    /// `net.ipv4.ip_forward` other than `1`, and a `containerd` service that can create
    /// [`CNI_STATE_DIR`].
    pub(crate) fn check_pod_network(
        &mut self,
        c: &Containerd,
        span: std::ops::Range<usize>,
        firewall: &Firewall,
        kernel: &Kernel,
        services: &[Service],
    ) {
        const KEY: &str = "containerd.pod_subnet";
        let Some(subnet) = c.pod_subnet else { return };
        if !c.enable || !c.cri {
            self.report(
                KEY,
                span,
                "a pod network needs the CRI plugin: set cri = true (and keep enable = true)",
            );
            return;
        }
        if let Some(fc) = &firewall.containers {
            if fc.bridge.as_str() != POD_BRIDGE || fc.subnet != subnet {
                self.report(
                    KEY,
                    span.clone(),
                    format!(
                        "[firewall.containers] (bridge `{}`, subnet `{}`) does not match the pod network (bridge `{POD_BRIDGE}`, subnet `{subnet}`): remove it, it is generated from pod_subnet",
                        fc.bridge.as_str(),
                        fc.subnet
                    ),
                );
            }
        }
        if let Some((_, v)) = kernel.sysctl.iter().find(|(k, _)| k.as_str() == IP_FORWARD) {
            if v.as_str() != "1" {
                self.report(
                    KEY,
                    span.clone(),
                    format!(
                        "pods are routed through the host: [kernel.sysctl] sets {IP_FORWARD} to `{}`, it must be 1 (or be left out: pod_subnet sets it)",
                        v.as_str()
                    ),
                );
            }
        }
        let containerd = services
            .iter()
            .find(|s| s.name.as_str() == CONTAINERD_SERVICE);
        if let Some(s) = containerd {
            let confined = s.namespaces.contains(&Namespace::Mount) && s.read_only_root;
            if confined && !covers(&s.writable_paths, Path::new(CNI_STATE_DIR)) {
                self.report(
                    KEY,
                    span,
                    format!(
                        "the CNI plugins that containerd runs keep their state in {CNI_STATE_DIR}, which the containerd service cannot create: add \"/var/lib\" to its writable_paths"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    const CONTAINERD: &str =
        "[[service]]\nname = \"containerd\"\nexec = [\"/usr/bin/containerd\"]\n\
                              writable_paths = [\"/run\", \"/var/lib\", \"/var/lib/containerd\"]\n";

    fn cfg(text: &str) -> Result<HostConfig, String> {
        parse(text, Path::new("/cfg/host.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn pod_network_fills_firewall_and_sysctl() {
        let c = cfg(&format!(
            "[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n{CONTAINERD}"
        ))
        .unwrap();
        let fc = c.firewall.containers.as_ref().unwrap();
        assert_eq!(fc.bridge.as_str(), POD_BRIDGE);
        assert_eq!(fc.subnet.to_string(), "10.88.0.0/16");
        assert!(c
            .kernel
            .sysctl
            .iter()
            .any(|(k, v)| k.as_str() == IP_FORWARD && v.as_str() == "1"));
        let keys: Vec<&str> = c.kernel.sysctl.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert_eq!(c.containerd.pod_network_modules(), ["bridge", "veth"]);
        // The same table and the same sysctl, written out, are accepted.
        let c2 = cfg(&format!(
            "[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n\
             [firewall.containers]\nbridge = \"cni0\"\nsubnet = \"10.88.0.0/16\"\n\
             [kernel.sysctl]\n\"net.ipv4.ip_forward\" = \"1\"\n{CONTAINERD}"
        ))
        .unwrap();
        assert_eq!(c2.firewall.containers, c.firewall.containers);
        // No pod network: nothing added.
        let c3 = cfg("[containerd]\ncri = true\n").unwrap();
        assert!(c3.firewall.containers.is_none());
        assert!(c3.containerd.pod_network_modules().is_empty());
        assert!(!c3
            .kernel
            .sysctl
            .iter()
            .any(|(k, _)| k.as_str() == IP_FORWARD));
    }

    #[test]
    fn pod_network_conflicts_are_reported() {
        // (text, expected fragment)
        let cases = [
            (
                "[containerd]\npod_subnet = \"10.88.0.0/16\"\n".to_owned(),
                "host.toml:2:14: containerd.pod_subnet: a pod network needs the CRI plugin",
            ),
            (
                format!("[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n[firewall.containers]\nbridge = \"br0\"\nsubnet = \"10.88.0.0/16\"\n{CONTAINERD}"),
                "does not match the pod network (bridge `cni0`, subnet `10.88.0.0/16`)",
            ),
            (
                format!("[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n[kernel.sysctl]\n\"net.ipv4.ip_forward\" = \"0\"\n{CONTAINERD}"),
                "sets net.ipv4.ip_forward to `0`, it must be 1",
            ),
            (
                "[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n[[service]]\nname = \"containerd\"\nexec = [\"/usr/bin/containerd\"]\nwritable_paths = [\"/run\", \"/var/lib/containerd\"]\n".to_owned(),
                "cannot create: add \"/var/lib\" to its writable_paths",
            ),
            (
                "[containerd]\ncri = true\npod_subnet = \"10.88.0.1/16\"\n".to_owned(),
                "containerd.pod_subnet: `10.88.0.1/16` has bits set past its prefix length",
            ),
            (
                "[containerd]\ncri = true\npod_subnet = \"fd00::/64\"\n".to_owned(),
                "containerd.pod_subnet: `fd00::/64` is not an IPv4 network",
            ),
            (
                "[containerd]\ncri = true\npod_subnet = \"10.88.0.0/30\"\n".to_owned(),
                "containerd.pod_subnet: `10.88.0.0/30` has a prefix length outside 8 to 28",
            ),
        ];
        for (text, want) in cases {
            let err = cfg(&text).unwrap_err();
            assert!(err.contains(want), "{text}\n{err}");
        }
    }

    #[test]
    fn import_service() {
        let c = cfg(&format!("[containerd]\ncri = true\n{CONTAINERD}")).unwrap();
        let s = cri_services(&c);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.name.as_str(), IMPORT_SERVICE);
        assert_eq!(s.exec[0], CTR_PATH);
        assert_eq!(
            s.exec[1..].join(" "),
            "--address /run/containerd/containerd.sock --namespace k8s.io image import --snapshotter overlayfs /usr/share/rampart/pause.oci.tar"
        );
        assert_eq!(s.after[0].as_str(), "containerd");
        assert_eq!(s.restart, Restart::OnFailure);
        assert!(s.capabilities.is_empty() && s.no_new_privs && s.read_only_root);
        assert_eq!(service_binaries(&c), [PathBuf::from(CTR_PATH)]);
        assert!(c.containerd.own_pause_image());
        assert_eq!(c.containerd.sandbox_image(), PAUSE_IMAGE);
        // Another sandbox image, no CRI, or no containerd service: no import.
        for text in [
            format!("[containerd]\ncri = true\nsandbox_image = \"registry.k8s.io/pause:3.6\"\n{CONTAINERD}"),
            format!("[containerd]\ncri = false\n{CONTAINERD}"),
            "[containerd]\ncri = true\n".to_owned(),
        ] {
            assert!(cri_services(&cfg(&text).unwrap()).is_empty(), "{text}");
        }
    }

    #[test]
    fn writable_paths_cover() {
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        let dir = Path::new(CNI_STATE_DIR);
        // (writable paths, covered)
        let cases: [(&[&str], bool); 5] = [
            (&["/var/lib"], true),
            (&["/var"], true),
            (&["/var/lib/cni"], true),
            (&["/var/lib/containerd", "/run"], false),
            (&[], false),
        ];
        for (paths, want) in cases {
            assert_eq!(covers(&p(paths), dir), want, "{paths:?}");
        }
    }
}
