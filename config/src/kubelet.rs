//! `[kubelet]`: Kubernetes' node agent as a supervised service of a CRI host.
//!
//! The section names a kubelet binary on the build machine, the static pod manifests and
//! (to join a control plane) a kubeconfig; `rampart-image` carries them with a generated
//! `KubeletConfiguration` (see `image-build/src/kubelet.rs`), and [`kubelet_services`] adds
//! the service [`SERVICE`] that runs it, after containerd, with the least it needs:
//!
//! - **capabilities** ([`CAPABILITIES`]): `CAP_SYS_ADMIN` (kubelet makes its root folder a
//!   shared bind mount at start and mounts pod volumes), `CAP_SYSLOG` (its OOM watcher reads
//!   `/dev/kmsg`, which `kernel.dmesg_restrict = 1` keeps from root without it). Nothing
//!   else: pods are created by containerd through rampart-runc, not by kubelet.
//! - **writable paths** ([`WRITABLE_PATHS`], [`SHARED_PATHS`]): its root folder
//!   [`ROOT_DIR`], which PID 1 makes a shared mount of the host at boot so that the pod volumes
//!   kubelet mounts there (secret, configMap, downwardAPI, projected: tmpfs) reach
//!   containerd's mount namespace, the pod logs
//!   [`POD_LOG_DIR`] and their links [`CONTAINER_LOG_DIR`], and the cgroup tree (it creates
//!   and sizes the pods' cgroups under [`CGROUP`]). PID 1 creates the folders before the
//!   service starts ([`DIRECTORIES`]), and the cgroup [`CGROUP`] with the extra controllers
//!   [`CGROUP_CONTROLLERS`] enabled at the root ([`cgroup_controllers`], [`cgroups`]):
//!   enabling `cpuset` moves every process of the host into new cpusets, which the kernel
//!   allows only to a writer holding `CAP_SYS_NICE` and every capability of those processes,
//!   that is PID 1 at boot; the root cgroup folder is mode 0555, so creating [`CGROUP`]
//!   would need `CAP_DAC_OVERRIDE`.
//! - **the seccomp filter `DefaultWithMount`** (the default deny list but `mount` and
//!   `umount2`, which it and `rampart-mount` need), `no_new_privs`, its own
//!   mount namespace with a read-only root, `oom_score_adj = -999` set by PID 1 (kubelet's
//!   own default, which it cannot write itself: `/proc` is read-only in its namespace).
//!
//! **Sysctls**: the generated configuration sets `protectKernelDefaults: true`, so kubelet
//! never writes a sysctl; it checks [`KERNEL_DEFAULTS`] instead and refuses to start when
//! one differs. [`merge_kernel_defaults`] adds those values to `[kernel.sysctl]` (PID 1 sets
//! them at boot with the baseline), and validation refuses a `[kernel.sysctl]` that sets one
//! of them to anything else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::containerd::{Containerd, SOCKET};
use crate::operate::CONTAINERD_SERVICE;
use crate::raw::RawSize;
use crate::service::{Capability, Namespace, Readiness, SeccompProfile, Service};
use crate::types::{Restart, ServiceName, Size, SysctlKey, SysctlValue};
use crate::{HostConfig, ImageFile, Kernel, Validator};

/// The service's name (and its cgroup's, `/sys/fs/cgroup/services/kubelet`).
pub const SERVICE: &str = "kubelet";
/// Where the binary goes in the image.
pub const BINARY: &str = "/usr/bin/kubelet";
/// kubelet's folder of configuration in the image.
pub const CONFIG_DIR: &str = "/etc/kubernetes";
/// The generated `KubeletConfiguration`.
pub const CONFIG_FILE: &str = "/etc/kubernetes/kubelet.yaml";
/// The static pod manifests (`staticPodPath`).
pub const STATIC_POD_DIR: &str = "/etc/kubernetes/manifests";
/// Where `kubeconfig` goes in the image.
pub const KUBECONFIG_FILE: &str = "/etc/kubernetes/kubelet.kubeconfig";
/// The folder of the programs kubelet executes, first on its `PATH`: `mount` and `umount`
/// (both `rampart-mount`, from beside `rampart-init`), which it runs to mount pod volumes.
pub const TOOLS_DIR: &str = "/usr/libexec/rampart/kubelet";
/// The program `rampart-image` installs under [`TOOLS_DIR`] as `mount` and `umount`.
pub const MOUNT_TOOL: &str = "rampart-mount";
/// Where `client_ca` goes in the image (`authentication.x509.clientCAFile`).
pub const CLIENT_CA_FILE: &str = "/etc/kubernetes/pki/ca.crt";
/// kubelet's root folder (`--root-dir`'s default): pods, volumes, plugins, its certificate.
pub const ROOT_DIR: &str = "/var/lib/kubelet";
/// The pods' log folders, one per pod, written by containerd.
pub const POD_LOG_DIR: &str = "/var/log/pods";
/// kubelet's links to the containers' log files.
pub const CONTAINER_LOG_DIR: &str = "/var/log/containers";
/// Where kubelet looks for FlexVolume drivers (`volumePluginDir`); the default, under
/// `/usr/libexec`, is read-only on a rampart host.
pub const VOLUME_PLUGIN_DIR: &str = "/var/lib/kubelet/volume-plugins";
/// The cgroup kubelet puts pods in (`cgroupsPerQOS` under the root `/`).
pub const CGROUP: &str = "kubepods";
/// The controllers kubelet needs at the cgroup root on top of the ones rampart always
/// enables (cpu, memory, pids, io): it checks that `cpuset` and `hugetlb` reach its pods.
pub const CGROUP_CONTROLLERS: &[&str] = &["cpuset", "hugetlb"];
/// The sysctls kubelet checks with `protectKernelDefaults` (its `setupKernelTunables`),
/// with the value it requires.
pub const KERNEL_DEFAULTS: &[(&str, &str)] = &[
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];
/// The capabilities the service keeps, and why.
pub const CAPABILITIES: &[(&str, &str)] = &[
    (
        "CAP_SYS_ADMIN",
        "mount(2): the shared bind mount of its root folder at start, pod volumes",
    ),
    (
        "CAP_SYSLOG",
        "its OOM watcher reads /dev/kmsg (kernel.dmesg_restrict = 1)",
    ),
];
/// What the service may write, and why (the folders are created by PID 1 at boot).
pub const WRITABLE_PATHS: &[(&str, &str)] = &[
    (
        POD_LOG_DIR,
        "one folder per pod, where containerd writes the logs",
    ),
    (CONTAINER_LOG_DIR, "a link per container to its log file"),
    (
        "/sys/fs/cgroup",
        "the pods' cgroups under /sys/fs/cgroup/kubepods and their limits",
    ),
];
/// The folders PID 1 makes shared mounts of the host before the services start, and why
/// (the service's `shared_paths`: writable, and its mounts beneath them propagate).
pub const SHARED_PATHS: &[(&str, &str)] = &[(
    ROOT_DIR,
    "pods, volumes (the tmpfs of secret, configMap, downwardAPI and projected volumes must reach containerd's mount namespace), plugin sockets, its serving certificate",
)];
/// The folders PID 1 creates before the services start, with their modes.
pub const DIRECTORIES: &[(&str, u32)] = &[
    (ROOT_DIR, 0o750),
    (POD_LOG_DIR, 0o755),
    (CONTAINER_LOG_DIR, 0o755),
];
/// kubelet flags rampart sets (or whose rampart value the rest depends on): `args` may not
/// give them.
pub const RESERVED_FLAGS: &[&str] = &[
    "--config",
    "--container-runtime",
    "--container-runtime-endpoint",
    "--kubeconfig",
    "--root-dir",
    "--pod-manifest-path",
    "--cgroup-driver",
    "--cgroup-root",
    "--cgroups-per-qos",
    "--protect-kernel-defaults",
    "--client-ca-file",
];
/// The socket of kubelet's pod resources API, which it opens once it runs: the service is
/// ready when it accepts a connection.
pub const READY_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// How long kubelet may take to open [`READY_SOCKET`] (a 100 MB Go program, maybe emulated).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The default `memory_max` of the service (kubelet itself; pods are in [`CGROUP`]).
pub const DEFAULT_MEMORY_MAX: Size = Size::from_mib(512);
/// The service's `pids_max` (a Go program's threads, and what it runs).
pub const PIDS_MAX: u64 = 1024;

/// `[kubelet]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubelet {
    /// Whether the image runs kubelet.
    pub enable: bool,
    /// The kubelet binary on the build machine (absolute), carried to [`BINARY`].
    pub binary: PathBuf,
    /// Static pod manifests on the build machine (absolute), carried to
    /// [`STATIC_POD_DIR`] under their file names.
    pub static_pods: Vec<PathBuf>,
    /// A kubeconfig on the build machine (absolute), carried to [`KUBECONFIG_FILE`]: kubelet
    /// then registers with that control plane. `None`: standalone (static pods only).
    pub kubeconfig: Option<PathBuf>,
    /// The CA certificate (PEM) on the build machine (absolute) that signs the client
    /// certificates kubelet accepts (the API server's, for logs and exec), carried to
    /// [`CLIENT_CA_FILE`]. Only with `kubeconfig`.
    pub client_ca: Option<PathBuf>,
    /// Services that must be ready before kubelet starts (besides containerd).
    pub after: Vec<ServiceName>,
    /// Extra command-line flags, each one `--name` or `--name=value` item.
    pub args: Vec<String>,
    /// The service's `memory_max`.
    pub memory_max: Size,
}

impl Default for Kubelet {
    /// No `[kubelet]` section: no kubelet.
    fn default() -> Self {
        Kubelet {
            enable: false,
            binary: PathBuf::new(),
            static_pods: Vec::new(),
            kubeconfig: None,
            client_ca: None,
            after: Vec::new(),
            args: Vec::new(),
            memory_max: DEFAULT_MEMORY_MAX,
        }
    }
}

impl Kubelet {
    /// Whether kubelet runs standalone (no kubeconfig: no API server, static pods only).
    pub fn standalone(&self) -> bool {
        self.kubeconfig.is_none()
    }

    /// The image files `[kubelet]` adds (binary, manifests, kubeconfig; the generated
    /// configuration is written by `rampart-image` itself).
    pub fn image_files(&self) -> Vec<ImageFile> {
        if !self.enable {
            return Vec::new();
        }
        let mut out = vec![ImageFile {
            source: self.binary.clone(),
            target: PathBuf::from(BINARY),
            mode: Some(0o755),
        }];
        for p in &self.static_pods {
            if let Some(name) = p.file_name() {
                out.push(ImageFile {
                    source: p.clone(),
                    target: Path::new(STATIC_POD_DIR).join(name),
                    mode: Some(0o644),
                });
            }
        }
        if let Some(k) = &self.kubeconfig {
            out.push(ImageFile {
                source: k.clone(),
                target: PathBuf::from(KUBECONFIG_FILE),
                // Credentials: root only.
                mode: Some(0o600),
            });
        }
        if let Some(ca) = &self.client_ca {
            out.push(ImageFile {
                source: ca.clone(),
                target: PathBuf::from(CLIENT_CA_FILE),
                // A certificate, public.
                mode: Some(0o644),
            });
        }
        out
    }

    /// kubelet's command line.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![
            BINARY.to_owned(),
            format!("--config={CONFIG_FILE}"),
            "--container-runtime=remote".to_owned(),
            format!("--container-runtime-endpoint=unix://{SOCKET}"),
        ];
        if self.kubeconfig.is_some() {
            argv.push(format!("--kubeconfig={KUBECONFIG_FILE}"));
        }
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// `[kubelet]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubelet {
    pub enable: Option<bool>,
    pub binary: Option<Spanned<String>>,
    pub static_pods: Option<Vec<Spanned<String>>>,
    pub kubeconfig: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
    pub after: Option<Vec<Spanned<String>>>,
    pub args: Option<Vec<Spanned<String>>>,
    pub memory_max: Option<Spanned<RawSize>>,
}

/// The cgroup controllers PID 1 enables at the root on top of its own for `cfg` (none
/// without kubelet).
pub fn cgroup_controllers(cfg: &HostConfig) -> &'static [&'static str] {
    if cfg.kubelet.enable {
        CGROUP_CONTROLLERS
    } else {
        &[]
    }
}

/// The top-level cgroups PID 1 creates for kubelet (none without it).
pub fn cgroups(cfg: &HostConfig) -> &'static [&'static str] {
    if cfg.kubelet.enable {
        &[CGROUP]
    } else {
        &[]
    }
}

/// The folders PID 1 creates for kubelet before the services start (none without it).
pub fn directories(cfg: &HostConfig) -> &'static [(&'static str, u32)] {
    if cfg.kubelet.enable {
        DIRECTORIES
    } else {
        &[]
    }
}

/// The folders PID 1 makes shared mounts for kubelet before the services start (none
/// without it).
pub fn shared_paths(cfg: &HostConfig) -> &'static [(&'static str, &'static str)] {
    if cfg.kubelet.enable {
        SHARED_PATHS
    } else {
        &[]
    }
}

/// Adds [`KERNEL_DEFAULTS`] to the sysctls (each one the file does not set; validation
/// refused a different value) when kubelet runs.
pub fn merge_kernel_defaults(k: &Kubelet, kernel: &mut Kernel) {
    if !k.enable {
        return;
    }
    for (key, value) in KERNEL_DEFAULTS {
        if kernel.sysctl.iter().any(|(k, _)| k.as_str() == *key) {
            continue;
        }
        if let (Ok(k), Ok(v)) = (SysctlKey::try_from(*key), SysctlValue::try_from(*value)) {
            kernel.sysctl.push((k, v));
        }
    }
    kernel.sysctl.sort_by(|a, b| a.0.cmp(&b.0));
}

/// The service rampart adds for `[kubelet]`, ready to append to `cfg.services` (boot does,
/// with the operate and CRI services): [`SERVICE`] when kubelet is enabled and a service
/// named `containerd` exists (started after it and after `after`), restarted always.
pub fn kubelet_services(cfg: &HostConfig) -> Vec<Service> {
    let k = &cfg.kubelet;
    let containerd = cfg
        .services
        .iter()
        .find(|s| s.name.as_str() == CONTAINERD_SERVICE);
    let (true, Some(containerd)) = (k.enable, containerd) else {
        return Vec::new();
    };
    let Ok(name) = ServiceName::try_from(SERVICE) else {
        return Vec::new();
    };
    let mut s = Service::new(name, k.argv());
    s.restart = Restart::Always;
    s.ready = Some(Readiness::UnixSocket(PathBuf::from(READY_SOCKET)));
    s.ready_timeout = READY_TIMEOUT;
    s.after = vec![containerd.name.clone()];
    s.after.extend(k.after.iter().cloned());
    s.capabilities = CAPABILITIES
        .iter()
        .filter_map(|(c, _)| Capability::try_from(*c).ok())
        .collect();
    s.capabilities.sort();
    s.no_new_privs = true;
    s.namespaces = vec![Namespace::Mount];
    s.read_only_root = true;
    s.writable_paths = WRITABLE_PATHS
        .iter()
        .map(|(p, _)| PathBuf::from(p))
        .collect();
    s.shared_paths = SHARED_PATHS.iter().map(|(p, _)| PathBuf::from(p)).collect();
    // The default deny list, but mount(2) and umount2(2): kubelet and rampart-mount mount.
    s.seccomp = Some(SeccompProfile::DefaultWithMount);
    s.oom_score_adj = Some(-999);
    // `mount` and `umount` for the pod volumes come first.
    s.env.insert(
        "PATH".to_owned(),
        format!("{TOOLS_DIR}:/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    s.limits.memory_max = Some(k.memory_max);
    s.limits.pids_max = Some(PIDS_MAX);
    vec![s]
}

/// The binary [`kubelet_services`] runs (image path), for `rampart-image`.
pub fn service_binaries(cfg: &HostConfig) -> Vec<PathBuf> {
    kubelet_services(cfg)
        .iter()
        .filter_map(|s| s.exec.first())
        .map(PathBuf::from)
        .collect()
}

/// The flag name of a `--name[=value]` item.
fn flag_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
}

/// One `args` item: `--name` or `--name=value`, printable, no spaces, not a flag rampart sets.
fn kubelet_arg(s: &str) -> Result<String, String> {
    let name = flag_name(s);
    let name_ok = name.len() > 2
        && name.starts_with("--")
        && name
            .chars()
            .skip(2)
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !name_ok || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{s}` is not one kubelet flag (`--name` or `--name=value`, no spaces)"
        ));
    }
    if RESERVED_FLAGS.contains(&name) {
        return Err(format!(
            "`{name}` is set by rampart (see docs/config.md, [kubelet])"
        ));
    }
    Ok(s.to_owned())
}

impl Validator<'_> {
    /// Validates `[kubelet]` (absent: disabled; present: enabled unless `enable = false`)
    /// against the validated `[containerd]`, services, sysctls and image files; relative
    /// paths are resolved against `base`.
    pub(crate) fn kubelet(
        &mut self,
        raw: Option<Spanned<RawKubelet>>,
        base: &Path,
        containerd: &Containerd,
        services: &[Service],
        kernel: &Kernel,
        image_files: &[ImageFile],
    ) -> Kubelet {
        let Some(raw) = raw else {
            return Kubelet::default();
        };
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.enable == Some(false) {
            return Kubelet::default();
        }
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let file = |me: &mut Self, key: &str, v: &Spanned<String>| -> Option<PathBuf> {
            if v.get_ref().is_empty() || v.get_ref().ends_with('/') {
                me.report(key, v.span(), "must name a file");
                None
            } else {
                Some(resolve(v.get_ref()))
            }
        };
        let binary = match &raw.binary {
            Some(b) => file(self, "kubelet.binary", b),
            None => {
                self.report(
                    "kubelet",
                    span.clone(),
                    "binary is missing: the kubelet program on the build machine (scripts/build-kubernetes.sh builds one)",
                );
                None
            }
        };
        let mut static_pods: Vec<PathBuf> = Vec::new();
        for (i, p) in raw.static_pods.iter().flatten().enumerate() {
            let key = format!("kubelet.static_pods[{i}]");
            let Some(path) = file(self, &key, p) else {
                continue;
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                self.report(
                    key,
                    p.span(),
                    format!("`{name}` starts with a dot: kubelet ignores such manifests"),
                );
            } else if static_pods
                .iter()
                .any(|q| q.file_name() == path.file_name())
            {
                self.report(
                    key,
                    p.span(),
                    format!(
                        "another manifest is also named `{name}` (they share {STATIC_POD_DIR})"
                    ),
                );
            } else {
                static_pods.push(path);
            }
        }
        let kubeconfig = raw
            .kubeconfig
            .as_ref()
            .and_then(|k| file(self, "kubelet.kubeconfig", k));
        let client_ca = match &raw.client_ca {
            Some(ca) if kubeconfig.is_none() && raw.kubeconfig.is_none() => {
                self.report(
                    "kubelet.client_ca",
                    ca.span(),
                    "needs kubeconfig: a standalone kubelet listens on loopback only and authenticates nobody",
                );
                None
            }
            Some(ca) => file(self, "kubelet.client_ca", ca),
            None => None,
        };
        let mut after = Vec::new();
        for (i, a) in raw.after.iter().flatten().enumerate() {
            let key = format!("kubelet.after[{i}]");
            let Some(name) = self.check(&key, a, |s| ServiceName::try_from(s)) else {
                continue;
            };
            if name.as_str() == SERVICE {
                self.report(key, a.span(), "kubelet cannot wait for itself");
            } else if !services.iter().any(|s| s.name == name) {
                self.report(
                    key,
                    a.span(),
                    format!("no [[service]] is named `{}`", name.as_str()),
                );
            } else if !after.contains(&name) {
                after.push(name);
            }
        }
        let mut args = Vec::new();
        for (i, a) in raw.args.iter().flatten().enumerate() {
            if let Some(arg) = self.check(&format!("kubelet.args[{i}]"), a, kubelet_arg) {
                args.push(arg);
            }
        }
        let memory_max = self.size(
            "kubelet.memory_max",
            raw.memory_max,
            DEFAULT_MEMORY_MAX.bytes(),
        );
        self.kubelet_conflicts(&span, containerd, services, kernel, image_files);
        Kubelet {
            enable: true,
            binary: binary.unwrap_or_default(),
            static_pods,
            kubeconfig,
            client_ca,
            after,
            args,
            memory_max,
        }
    }

    /// What an enabled `[kubelet]` (at `span`) needs from the rest of the file: containerd's
    /// CRI plugin and a `containerd` service, no `[[service]]` of its name, no
    /// `[kernel.sysctl]` value other than [`KERNEL_DEFAULTS`]'s, no `[[image.files]]` target
    /// that rampart writes for it.
    fn kubelet_conflicts(
        &mut self,
        span: &std::ops::Range<usize>,
        containerd: &Containerd,
        services: &[Service],
        kernel: &Kernel,
        image_files: &[ImageFile],
    ) {
        if !(containerd.enable && containerd.cri) {
            self.report(
                "kubelet",
                span.clone(),
                "kubelet runs pods through containerd's CRI plugin: set [containerd] cri = true",
            );
        }
        if !services
            .iter()
            .any(|s| s.name.as_str() == CONTAINERD_SERVICE)
        {
            self.report(
                "kubelet",
                span.clone(),
                format!("kubelet needs a [[service]] named `{CONTAINERD_SERVICE}`"),
            );
        }
        if services.iter().any(|s| s.name.as_str() == SERVICE) {
            self.report(
                "kubelet",
                span.clone(),
                format!("a [[service]] is named `{SERVICE}`, the name of the service [kubelet] adds: rename or remove it"),
            );
        }
        for (key, value) in &kernel.sysctl {
            let want = KERNEL_DEFAULTS.iter().find(|(k, _)| *k == key.as_str());
            if let Some((_, want)) = want.filter(|(_, w)| *w != value.as_str()) {
                self.report(
                    "kubelet",
                    span.clone(),
                    format!(
                        "[kernel.sysctl] sets {} to `{}`: kubelet checks it (protectKernelDefaults) and does not start unless it is {want} (leave it out: [kubelet] sets it)",
                        key.as_str(),
                        value.as_str()
                    ),
                );
            }
        }
        for f in image_files {
            let t = f.target.as_path();
            let own = [BINARY, CONFIG_FILE, KUBECONFIG_FILE, CLIENT_CA_FILE]
                .iter()
                .any(|p| t == Path::new(p))
                || t.starts_with(STATIC_POD_DIR);
            if own {
                self.report(
                    "kubelet",
                    span.clone(),
                    format!(
                        "[[image.files]] writes {}, which [kubelet] writes (its binary, configuration, kubeconfig and client CA; manifests go in static_pods, the CA is client_ca)",
                        t.display()
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

    const BASE: &str = "[containerd]\ncri = true\n\
                        [[service]]\nname = \"containerd\"\nexec = [\"/usr/bin/containerd\"]\n\
                        [[service]]\nname = \"prep\"\nexec = [\"/bin/prep\"]\n";

    fn cfg(text: &str) -> Result<HostConfig, String> {
        parse(text, Path::new("/cfg/host.toml")).map_err(|e| e.to_string())
    }

    fn with_kubelet(kubelet: &str) -> String {
        format!("{BASE}[kubelet]\nbinary = \"k8s/kubelet\"\n{kubelet}")
    }

    #[test]
    fn absent_or_disabled() {
        for text in [
            BASE.to_owned(),
            format!("{BASE}[kubelet]\nenable = false\n"),
        ] {
            let c = cfg(&text).unwrap();
            assert!(!c.kubelet.enable);
            assert!(kubelet_services(&c).is_empty());
            assert!(cgroup_controllers(&c).is_empty());
            assert!(cgroups(&c).is_empty());
            assert!(directories(&c).is_empty());
            assert!(c.kubelet.image_files().is_empty());
            assert!(!c
                .kernel
                .sysctl
                .iter()
                .any(|(k, _)| k.as_str() == "vm.overcommit_memory"));
        }
    }

    #[test]
    fn standalone_service() {
        let c = cfg(&with_kubelet(
            "static_pods = [\"pods/web.yaml\", \"/srv/db.json\"]\nafter = [\"prep\"]\n\
             args = [\"--v=2\", \"--node-ip=10.0.2.15\"]\n",
        ))
        .unwrap();
        let k = &c.kubelet;
        assert!(k.enable && k.standalone());
        assert_eq!(k.binary, PathBuf::from("/cfg/k8s/kubelet"));
        let s = kubelet_services(&c);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.name.as_str(), SERVICE);
        assert_eq!(
            s.exec.join(" "),
            "/usr/bin/kubelet --config=/etc/kubernetes/kubelet.yaml --container-runtime=remote \
             --container-runtime-endpoint=unix:///run/containerd/containerd.sock --v=2 --node-ip=10.0.2.15"
        );
        let after: Vec<&str> = s.after.iter().map(ServiceName::as_str).collect();
        assert_eq!(after, ["containerd", "prep"]);
        let caps: Vec<&str> = s.capabilities.iter().map(|c| c.name()).collect();
        assert_eq!(caps, ["CAP_SYS_ADMIN", "CAP_SYSLOG"]);
        assert!(s.no_new_privs && s.read_only_root);
        assert_eq!(s.seccomp, Some(SeccompProfile::DefaultWithMount));
        assert_eq!(s.namespaces, [Namespace::Mount]);
        let paths: Vec<String> = s
            .writable_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            paths,
            ["/var/log/pods", "/var/log/containers", "/sys/fs/cgroup"]
        );
        assert_eq!(s.shared_paths, [PathBuf::from("/var/lib/kubelet")]);
        assert_eq!(shared_paths(&c), SHARED_PATHS);
        assert_eq!(s.oom_score_adj, Some(-999));
        assert_eq!(s.restart, Restart::Always);
        assert_eq!(
            s.ready,
            Some(Readiness::UnixSocket(PathBuf::from(READY_SOCKET)))
        );
        assert!(Path::new(READY_SOCKET).starts_with(ROOT_DIR));
        assert_eq!(s.limits.memory_max, Some(DEFAULT_MEMORY_MAX));
        assert_eq!(service_binaries(&c), [PathBuf::from(BINARY)]);
        // Every folder PID 1 creates is one the service may write.
        for (d, _) in directories(&c) {
            let mut writable = s.writable_paths.iter().chain(&s.shared_paths);
            assert!(writable.any(|p| p == Path::new(d)), "{d}");
        }
        let files: Vec<(String, String, Option<u32>)> = k
            .image_files()
            .iter()
            .map(|f| {
                (
                    f.source.display().to_string(),
                    f.target.display().to_string(),
                    f.mode,
                )
            })
            .collect();
        assert_eq!(
            files,
            [
                (
                    "/cfg/k8s/kubelet".to_owned(),
                    BINARY.to_owned(),
                    Some(0o755)
                ),
                (
                    "/cfg/pods/web.yaml".to_owned(),
                    "/etc/kubernetes/manifests/web.yaml".to_owned(),
                    Some(0o644)
                ),
                (
                    "/srv/db.json".to_owned(),
                    "/etc/kubernetes/manifests/db.json".to_owned(),
                    Some(0o644)
                ),
            ]
        );
        assert_eq!(cgroup_controllers(&c), ["cpuset", "hugetlb"]);
        assert_eq!(cgroups(&c), ["kubepods"]);
    }

    #[test]
    fn kubeconfig_joins() {
        let c = cfg(&with_kubelet(
            "kubeconfig = \"node.kubeconfig\"\nmemory_max = \"1G\"\n",
        ))
        .unwrap();
        assert!(!c.kubelet.standalone());
        let s = &kubelet_services(&c)[0];
        assert!(s
            .exec
            .contains(&"--kubeconfig=/etc/kubernetes/kubelet.kubeconfig".to_owned()));
        assert_eq!(s.limits.memory_max, Some(Size::from_mib(1024)));
        let f = c.kubelet.image_files();
        let kc = f.last().unwrap();
        assert_eq!(kc.source, PathBuf::from("/cfg/node.kubeconfig"));
        assert_eq!(kc.target, PathBuf::from(KUBECONFIG_FILE));
        assert_eq!(kc.mode, Some(0o600));
        assert_eq!(c.kubelet.client_ca, None);
    }

    #[test]
    fn client_ca_is_carried() {
        let c = cfg(&with_kubelet(
            "kubeconfig = \"node.kubeconfig\"\nclient_ca = \"pki/ca.crt\"\n",
        ))
        .unwrap();
        assert_eq!(c.kubelet.client_ca, Some(PathBuf::from("/cfg/pki/ca.crt")));
        let f = c.kubelet.image_files();
        let ca = f.last().unwrap();
        assert_eq!(
            (ca.source.as_path(), ca.target.as_path(), ca.mode),
            (
                Path::new("/cfg/pki/ca.crt"),
                Path::new(CLIENT_CA_FILE),
                Some(0o644)
            )
        );
        // kubelet's command line does not name it: the generated configuration does.
        assert!(!kubelet_services(&c)[0]
            .exec
            .iter()
            .any(|a| a.contains("client-ca")));
    }

    #[test]
    fn kernel_defaults_are_merged() {
        let c = cfg(&with_kubelet("")).unwrap();
        for (key, value) in KERNEL_DEFAULTS {
            assert!(
                c.kernel
                    .sysctl
                    .iter()
                    .any(|(k, v)| k.as_str() == *key && v.as_str() == *value),
                "{key}"
            );
        }
        let keys: Vec<&str> = c.kernel.sysctl.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        // The same value written out is accepted, and kept once.
        let c = cfg(&format!(
            "{}[kernel.sysctl]\n\"kernel.panic\" = 10\n",
            with_kubelet("")
        ))
        .unwrap();
        let n = c
            .kernel
            .sysctl
            .iter()
            .filter(|(k, _)| k.as_str() == "kernel.panic")
            .count();
        assert_eq!(n, 1);
    }

    #[test]
    fn problems_are_reported() {
        // (text, expected fragment)
        let cases = [
            (
                "[containerd]\ncri = true\n[[service]]\nname = \"containerd\"\nexec = [\"/c\"]\n[kubelet]\nenable = true\n".to_owned(),
                "kubelet: binary is missing",
            ),
            (
                "[[service]]\nname = \"containerd\"\nexec = [\"/c\"]\n[kubelet]\nbinary = \"/k\"\n".to_owned(),
                "set [containerd] cri = true",
            ),
            (
                "[containerd]\ncri = true\n[kubelet]\nbinary = \"/k\"\n".to_owned(),
                "kubelet needs a [[service]] named `containerd`",
            ),
            (
                format!("{BASE}[[service]]\nname = \"kubelet\"\nexec = [\"/k\"]\n[kubelet]\nbinary = \"/k\"\n"),
                "a [[service]] is named `kubelet`",
            ),
            (
                format!("{}[kernel.sysctl]\n\"vm.overcommit_memory\" = 0\n", with_kubelet("")),
                "sets vm.overcommit_memory to `0`: kubelet checks it",
            ),
            (
                with_kubelet("after = [\"nope\"]\n"),
                "kubelet.after[0]: no [[service]] is named `nope`",
            ),
            (
                with_kubelet("args = [\"--config=/x\"]\n"),
                "kubelet.args[0]: `--config` is set by rampart",
            ),
            (
                with_kubelet("args = [\"-v\"]\n"),
                "kubelet.args[0]: `-v` is not one kubelet flag",
            ),
            (
                with_kubelet("args = [\"--node-ip 1.2.3.4\"]\n"),
                "is not one kubelet flag",
            ),
            (
                with_kubelet("static_pods = [\"a/web.yaml\", \"b/web.yaml\"]\n"),
                "kubelet.static_pods[1]: another manifest is also named `web.yaml`",
            ),
            (
                with_kubelet("static_pods = [\".hidden.yaml\"]\n"),
                "starts with a dot",
            ),
            (
                with_kubelet("kubeconfig = \"\"\n"),
                "kubelet.kubeconfig: must name a file",
            ),
            (
                format!(
                    "[[image.files]]\nsource = \"/x\"\ntarget = \"/etc/kubernetes/manifests/x.yaml\"\n{}",
                    with_kubelet("")
                ),
                "[[image.files]] writes /etc/kubernetes/manifests/x.yaml",
            ),
            (
                with_kubelet("client_ca = \"ca.crt\"\n"),
                "kubelet.client_ca: needs kubeconfig",
            ),
            (
                with_kubelet("kubeconfig = \"k\"\nclient_ca = \"\"\n"),
                "kubelet.client_ca: must name a file",
            ),
            (
                with_kubelet("args = [\"--client-ca-file=/ca.crt\"]\n"),
                "`--client-ca-file` is set by rampart",
            ),
            (
                format!(
                    "[[image.files]]\nsource = \"/x\"\ntarget = \"/etc/kubernetes/pki/ca.crt\"\n{}",
                    with_kubelet("")
                ),
                "the CA is client_ca",
            ),
            (
                with_kubelet("memory_max = \"lots\"\n"),
                "kubelet.memory_max",
            ),
            (with_kubelet("bogus = 1\n"), "unknown field `bogus`"),
        ];
        for (text, want) in cases {
            let err = cfg(&text).unwrap_err();
            assert!(err.contains(want), "{text}\n{err}");
        }
    }

    #[test]
    fn flag_items() {
        // (item, accepted)
        let cases = [
            ("--v=2", true),
            ("--node-ip=10.0.2.15", true),
            ("--register-node", true),
            ("--node-labels=a=b,c=d", true),
            ("--", false),
            ("v=2", false),
            ("--a b", false),
            ("--cgroup-root=/x", false),
            ("--kubeconfig", false),
        ];
        for (item, ok) in cases {
            assert_eq!(kubelet_arg(item).is_ok(), ok, "{item}");
        }
    }
}
