//! `[container_policy]`: the policy `rampart-runc` holds every container to.
//!
//! The defaults are least privilege; every key here only widens them, one explicit entry at a
//! time, or says where things live. The rules themselves (which capabilities, namespaces,
//! devices and mounts are allowed without an entry) live in `rampart-runc`; this module only
//! validates what the host file says. Every key is documented in `docs/config.md`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::Validator;

/// Where the real runc lives in an image when `real_runc` is not given.
pub const DEFAULT_REAL_RUNC: &str = "/usr/lib/rampart/runc";
/// Where the audit log is appended when `audit_log` is not given.
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/rampart/audit.log";

/// Every Linux capability name up to `CAP_CHECKPOINT_RESTORE` (41 in all), in kernel order:
/// the same table the services use.
pub const ALL_CAPABILITIES: &[&str] = &crate::service::CAPABILITIES;

/// `[container_policy]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// The real runc that `rampart-runc` execs after the policy passed.
    pub real_runc: PathBuf,
    /// The append-only audit log.
    pub audit_log: PathBuf,
    /// Capabilities a container may keep beyond the default set, sorted, deduplicated.
    pub allow_capabilities: Vec<Capability>,
    /// Host namespaces a container may share, sorted, deduplicated.
    pub allow_host_namespaces: Vec<HostNamespace>,
    /// Sensitive host paths that may still be bind-mounted (the path and everything below it).
    pub allow_mounts: Vec<PathBuf>,
    /// File system types a container may mount beyond the built-in safe ones.
    pub allow_mount_types: Vec<String>,
    /// Devices a container may use beyond the default ones.
    pub allow_devices: Vec<DeviceRule>,
    /// Programs that may run as OCI hooks (hooks run as root on the host).
    pub allow_hooks: Vec<PathBuf>,
    /// Whether containers must run in a user namespace.
    pub user_namespaces: UserNamespaces,
    /// Keep a spec's own seccomp profile when it denies by default (otherwise every container
    /// gets rampart's default profile; a profile that allows by default is always replaced).
    pub keep_spec_seccomp: bool,
    /// The lowest `oom_score_adj` a container process may have; also the value set when a spec
    /// has none (so containers do not inherit containerd's protected score).
    pub min_oom_score_adj: i32,
    /// `linux.resources.pids.limit` of every container: set when the spec has none or a higher
    /// one, so a fork bomb stops at the container's `pids.max`.
    pub default_pids_limit: u32,
    /// `linux.resources.memory.limit` (bytes) of every container without a lower one; `None`
    /// leaves the spec's own (or none).
    pub default_memory_limit: Option<u64>,
    /// The AppArmor profile (`process.apparmorProfile`) of every container whose spec names
    /// none; `None` (written `apparmor_profile = ""`) leaves such specs unconfined.
    pub apparmor_profile: Option<String>,
    /// What the pods of one Kubernetes namespace may do beyond the defaults
    /// (`[[container_policy.kubernetes_namespace]]`), sorted by name, one per name.
    pub kubernetes_namespaces: Vec<KubernetesNamespace>,
}

impl ContainerPolicy {
    /// The table of Kubernetes namespace `name`, if the host file has one.
    pub fn kubernetes_namespace(&self, name: &str) -> Option<&KubernetesNamespace> {
        self.kubernetes_namespaces
            .iter()
            .find(|n| n.name.as_str() == name)
    }
}

/// The name of a Kubernetes namespace: a DNS-1123 label (1 to 63 lowercase letters, digits and
/// `-`, starting and ending with a letter or digit), as the API server requires.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespaceName(String);

impl NamespaceName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for NamespaceName {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = (1..=63).contains(&s.len())
            && s.chars().all(|c| alnum(c) || c == '-')
            && s.starts_with(alnum)
            && s.ends_with(alnum);
        if ok {
            Ok(NamespaceName(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not a Kubernetes namespace name (a DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit)"
            ))
        }
    }
}

/// `[[container_policy.kubernetes_namespace]]`, validated: what the pods of one Kubernetes
/// namespace may do beyond what every pod may (rampart-runc tells pods from plain containers
/// by the annotations containerd's CRI plugin writes into their specs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesNamespace {
    /// The namespace.
    pub name: NamespaceName,
    /// Privileged pods (`privileged: true`: every host device, `CAP_SYS_ADMIN`) may run.
    pub allow_privileged: bool,
    /// Sensitive host paths that pods may bind-mount (each covers itself and everything below
    /// it, except `/`, which covers only `/`), sorted, deduplicated.
    pub allow_host_paths: Vec<PathBuf>,
    /// Pods with `hostNetwork: true` may run.
    pub allow_host_network: bool,
}

/// `apparmor_profile` when the host file does not say: the profile the image compiles from
/// `image-build/apparmor/rampart-default`.
pub const DEFAULT_APPARMOR_PROFILE: &str = "rampart-default";

/// `default_pids_limit` when the host file does not say.
pub const DEFAULT_PIDS_LIMIT: u32 = 1024;

impl Default for ContainerPolicy {
    fn default() -> Self {
        ContainerPolicy {
            real_runc: PathBuf::from(DEFAULT_REAL_RUNC),
            audit_log: PathBuf::from(DEFAULT_AUDIT_LOG),
            allow_capabilities: Vec::new(),
            allow_host_namespaces: Vec::new(),
            allow_mounts: Vec::new(),
            allow_mount_types: Vec::new(),
            allow_devices: Vec::new(),
            allow_hooks: Vec::new(),
            user_namespaces: UserNamespaces::Optional,
            keep_spec_seccomp: false,
            min_oom_score_adj: 0,
            default_pids_limit: DEFAULT_PIDS_LIMIT,
            default_memory_limit: None,
            apparmor_profile: Some(DEFAULT_APPARMOR_PROFILE.to_owned()),
            kubernetes_namespaces: Vec::new(),
        }
    }
}

/// A capability name in the form runc uses (`CAP_NET_RAW`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(String);

impl Capability {
    /// The name with its `CAP_` prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for Capability {
    type Error = String;
    /// Accepts `NET_RAW`, `CAP_NET_RAW` or `cap_net_raw`.
    fn try_from(s: &str) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase();
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if ALL_CAPABILITIES.contains(&name.as_str()) {
            Ok(Capability(name))
        } else {
            Err(format!("`{s}` is not a Linux capability"))
        }
    }
}

/// A namespace a container normally gets its own of, and may be allowed to share with the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostNamespace {
    /// `pid`.
    Pid,
    /// `network`.
    Network,
    /// `ipc`.
    Ipc,
    /// `uts`.
    Uts,
    /// `mount`.
    Mount,
}

impl HostNamespace {
    /// Every namespace a container must have its own of unless allowed, in OCI spec order.
    pub const ALL: [HostNamespace; 5] = [
        HostNamespace::Pid,
        HostNamespace::Network,
        HostNamespace::Ipc,
        HostNamespace::Uts,
        HostNamespace::Mount,
    ];

    /// The OCI `linux.namespaces[].type` name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostNamespace::Pid => "pid",
            HostNamespace::Network => "network",
            HostNamespace::Ipc => "ipc",
            HostNamespace::Uts => "uts",
            HostNamespace::Mount => "mount",
        }
    }

    /// The name of the namespace's file under `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            HostNamespace::Network => "net",
            HostNamespace::Mount => "mnt",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for HostNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for HostNamespace {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        HostNamespace::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a namespace that can be shared (pid, network, ipc, uts, mount)"
                )
            })
    }
}

/// Whether containers must run in a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserNamespaces {
    /// A spec may or may not ask for a user namespace.
    Optional,
    /// A spec without a user namespace that maps container root to a non-root host user is
    /// refused.
    Required,
}

impl fmt::Display for UserNamespaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UserNamespaces::Optional => "optional",
            UserNamespaces::Required => "required",
        })
    }
}

/// A device type in a device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKind {
    /// `c`: a character device.
    Char,
    /// `b`: a block device.
    Block,
}

impl DeviceKind {
    /// The one-letter name used in OCI specs and cgroup rules.
    pub fn letter(self) -> &'static str {
        match self {
            DeviceKind::Char => "c",
            DeviceKind::Block => "b",
        }
    }
}

/// A device (or a range of devices) written `c 10:229`, `b 8:*` or `c *:*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceRule {
    /// Character or block.
    pub kind: DeviceKind,
    /// The major number; `None` is `*` (any).
    pub major: Option<u32>,
    /// The minor number; `None` is `*` (any).
    pub minor: Option<u32>,
}

impl DeviceRule {
    /// Whether this rule covers every device that `other` names (a `*` covers any number).
    pub fn covers(&self, other: &DeviceRule) -> bool {
        let num = |mine: Option<u32>, theirs: Option<u32>| match (mine, theirs) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        self.kind == other.kind && num(self.major, other.major) && num(self.minor, other.minor)
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or_else(|| "*".to_owned(), |v| v.to_string());
        write!(
            f,
            "{} {}:{}",
            self.kind.letter(),
            n(self.major),
            n(self.minor)
        )
    }
}

impl TryFrom<&str> for DeviceRule {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not a device rule (write `c MAJOR:MINOR` or `b MAJOR:MINOR`; `*` for any number)")
        };
        let mut parts = s.split_whitespace();
        let (Some(kind), Some(nums), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let kind = match kind {
            "c" => DeviceKind::Char,
            "b" => DeviceKind::Block,
            _ => return Err(bad()),
        };
        let (major, minor) = nums.split_once(':').ok_or_else(bad)?;
        let num = |t: &str| -> Result<Option<u32>, String> {
            if t == "*" {
                Ok(None)
            } else {
                t.parse::<u32>().map(Some).map_err(|_| bad())
            }
        };
        Ok(DeviceRule {
            kind,
            major: num(major)?,
            minor: num(minor)?,
        })
    }
}

/// `[container_policy]` as serde sees it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContainerPolicy {
    pub real_runc: Option<Spanned<String>>,
    pub audit_log: Option<Spanned<String>>,
    #[serde(default)]
    pub allow_capabilities: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_host_namespaces: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_mounts: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_mount_types: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_devices: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_hooks: Vec<Spanned<String>>,
    pub user_namespaces: Option<Spanned<String>>,
    pub keep_spec_seccomp: Option<bool>,
    pub min_oom_score_adj: Option<Spanned<i64>>,
    pub default_pids_limit: Option<Spanned<i64>>,
    pub default_memory_limit: Option<Spanned<crate::raw::RawSize>>,
    pub apparmor_profile: Option<Spanned<String>>,
    #[serde(default)]
    pub kubernetes_namespace: Vec<RawKubernetesNamespace>,
}

/// `[[container_policy.kubernetes_namespace]]` as serde sees it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubernetesNamespace {
    pub name: Spanned<String>,
    pub allow_privileged: Option<bool>,
    #[serde(default)]
    pub allow_host_paths: Vec<Spanned<String>>,
    pub allow_host_network: Option<bool>,
}

/// Checks an absolute, normalised host path (`/` itself allowed).
fn host_path(s: &str) -> Result<PathBuf, String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` is not an absolute path"));
    }
    if s == "/" {
        return Ok(PathBuf::from(s));
    }
    if s.ends_with('/') || s.contains("//") || s.contains('\0') {
        return Err(format!(
            "`{s}` is not a normalised path (no `//` or trailing `/`)"
        ));
    }
    if s.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("`{s}` must not contain `.` or `..`"));
    }
    Ok(PathBuf::from(s))
}

fn mount_type(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` is not a file system type name"))
    }
}

impl Validator<'_> {
    /// Validates a list, reporting bad and repeated entries, and returns the good ones sorted.
    fn policy_list<T: Ord + Clone + fmt::Display>(
        &mut self,
        key: &str,
        items: &[Spanned<String>],
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out: Vec<T> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let k = format!("{key}[{i}]");
            if let Some(v) = self.check(&k, item, &f) {
                if out.contains(&v) {
                    self.report(k, item.span(), format!("`{v}` is listed twice"));
                } else {
                    out.push(v);
                }
            }
        }
        out.sort();
        out
    }

    pub(crate) fn container_policy(&mut self, raw: RawContainerPolicy) -> ContainerPolicy {
        let d = ContainerPolicy::default();
        let path = |me: &mut Self, key: &str, v: &Option<Spanned<String>>, default: PathBuf| {
            v.as_ref()
                .and_then(|v| {
                    me.check(key, v, |s| {
                        host_path(s).and_then(|p| {
                            if s == "/" {
                                Err("must name a file, not `/`".to_owned())
                            } else {
                                Ok(p)
                            }
                        })
                    })
                })
                .unwrap_or(default)
        };
        let real_runc = path(
            self,
            "container_policy.real_runc",
            &raw.real_runc,
            d.real_runc,
        );
        let audit_log = path(
            self,
            "container_policy.audit_log",
            &raw.audit_log,
            d.audit_log,
        );
        let allow_capabilities = self.policy_list(
            "container_policy.allow_capabilities",
            &raw.allow_capabilities,
            |s| Capability::try_from(s),
        );
        let allow_host_namespaces = self.policy_list(
            "container_policy.allow_host_namespaces",
            &raw.allow_host_namespaces,
            |s| HostNamespace::try_from(s),
        );
        let allow_mounts: Vec<PathBuf> = self
            .policy_list("container_policy.allow_mounts", &raw.allow_mounts, |s| {
                host_path(s).map(|p| p.to_string_lossy().into_owned())
            })
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let allow_mount_types = self.policy_list(
            "container_policy.allow_mount_types",
            &raw.allow_mount_types,
            mount_type,
        );
        let allow_devices =
            self.policy_list("container_policy.allow_devices", &raw.allow_devices, |s| {
                DeviceRule::try_from(s)
            });
        let allow_hooks: Vec<PathBuf> = self
            .policy_list("container_policy.allow_hooks", &raw.allow_hooks, |s| {
                host_path(s).and_then(|p| {
                    if s == "/" {
                        Err("must name a program, not `/`".to_owned())
                    } else {
                        Ok(p.to_string_lossy().into_owned())
                    }
                })
            })
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let user_namespaces = raw
            .user_namespaces
            .as_ref()
            .and_then(|v| {
                self.check("container_policy.user_namespaces", v, |s| match s {
                    "optional" => Ok(UserNamespaces::Optional),
                    "required" => Ok(UserNamespaces::Required),
                    _ => Err(format!("`{s}` is not one of \"optional\", \"required\"")),
                })
            })
            .unwrap_or(d.user_namespaces);
        let min_oom_score_adj = match raw.min_oom_score_adj {
            None => d.min_oom_score_adj,
            Some(v) => match i32::try_from(*v.get_ref()) {
                Ok(n @ -1000..=1000) => n,
                _ => {
                    self.report(
                        "container_policy.min_oom_score_adj",
                        v.span(),
                        "must be an integer from -1000 to 1000",
                    );
                    d.min_oom_score_adj
                }
            },
        };
        let default_pids_limit = match raw.default_pids_limit {
            None => d.default_pids_limit,
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n @ 1..=4_194_304) => n,
                _ => {
                    self.report(
                        "container_policy.default_pids_limit",
                        v.span(),
                        "must be an integer from 1 to 4194304",
                    );
                    d.default_pids_limit
                }
            },
        };
        let default_memory_limit = raw.default_memory_limit.and_then(|v| {
            let span = v.span();
            let parsed = match v.into_inner() {
                crate::raw::RawSize::Bytes(n) => u64::try_from(n)
                    .map_err(|_| format!("{n} is not a size"))
                    .and_then(crate::Size::from_bytes),
                crate::raw::RawSize::Text(s) => crate::Size::parse(&s),
            };
            match parsed {
                Ok(size) => Some(size.bytes()),
                Err(msg) => {
                    self.report("container_policy.default_memory_limit", span, msg);
                    None
                }
            }
        });
        let apparmor_profile = match &raw.apparmor_profile {
            None => d.apparmor_profile.clone(),
            Some(v) if v.get_ref().is_empty() => None,
            Some(v) => self.check("container_policy.apparmor_profile", v, |p| {
                crate::hardening::check_profile_name(p).map(|()| p.to_owned())
            }),
        };
        let kubernetes_namespaces = self.kubernetes_namespaces(raw.kubernetes_namespace);
        ContainerPolicy {
            real_runc,
            audit_log,
            allow_capabilities,
            allow_host_namespaces,
            allow_mounts,
            allow_mount_types,
            allow_devices,
            allow_hooks,
            user_namespaces,
            keep_spec_seccomp: raw.keep_spec_seccomp.unwrap_or(d.keep_spec_seccomp),
            min_oom_score_adj,
            default_pids_limit,
            default_memory_limit,
            apparmor_profile,
            kubernetes_namespaces,
        }
    }

    /// Validates the `[[container_policy.kubernetes_namespace]]` tables: one per name.
    fn kubernetes_namespaces(
        &mut self,
        raw: Vec<RawKubernetesNamespace>,
    ) -> Vec<KubernetesNamespace> {
        let mut out: Vec<KubernetesNamespace> = Vec::new();
        for (i, t) in raw.into_iter().enumerate() {
            let key = format!("container_policy.kubernetes_namespace[{i}]");
            let name = self.check(&format!("{key}.name"), &t.name, |s| {
                NamespaceName::try_from(s)
            });
            let allow_host_paths: Vec<PathBuf> = self
                .policy_list(
                    &format!("{key}.allow_host_paths"),
                    &t.allow_host_paths,
                    |s| host_path(s).map(|p| p.to_string_lossy().into_owned()),
                )
                .into_iter()
                .map(PathBuf::from)
                .collect();
            let Some(name) = name else { continue };
            if out.iter().any(|n| n.name == name) {
                self.report(
                    format!("{key}.name"),
                    t.name.span(),
                    format!("namespace `{name}` already has a table"),
                );
                continue;
            }
            out.push(KubernetesNamespace {
                name,
                allow_privileged: t.allow_privileged.unwrap_or(false),
                allow_host_paths,
                allow_host_network: t.allow_host_network.unwrap_or(false),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Problem};
    use std::path::Path;

    fn policy(text: &str) -> ContainerPolicy {
        match parse(text, Path::new("/cfg/host.toml")) {
            Ok(c) => c.container_policy,
            Err(e) => panic!("unexpected error:\n{e}"),
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text, Path::new("/cfg/host.toml")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[test]
    fn absent_section_is_least_privilege() {
        assert_eq!(policy(""), ContainerPolicy::default());
        assert_eq!(policy("[container_policy]\n"), ContainerPolicy::default());
        let d = ContainerPolicy::default();
        assert_eq!(d.real_runc, PathBuf::from("/usr/lib/rampart/runc"));
        assert_eq!(d.audit_log, PathBuf::from("/var/log/rampart/audit.log"));
        assert_eq!(d.user_namespaces, UserNamespaces::Optional);
        assert!(!d.keep_spec_seccomp);
        assert_eq!(d.min_oom_score_adj, 0);
        assert_eq!(d.default_pids_limit, 1024);
        assert_eq!(d.default_memory_limit, None);
    }

    #[test]
    fn full_section() {
        let p = policy(
            r#"
[container_policy]
real_runc = "/opt/runc"
audit_log = "/var/log/audit.jsonl"
allow_capabilities = ["net_raw", "CAP_SYS_PTRACE"]
allow_host_namespaces = ["network", "pid"]
allow_mounts = ["/var/data", "/"]
allow_mount_types = ["fuse.sshfs"]
allow_devices = ["c 10:229", "b 8:*"]
allow_hooks = ["/usr/bin/nerdctl"]
user_namespaces = "required"
keep_spec_seccomp = true
min_oom_score_adj = -500
default_pids_limit = 200
default_memory_limit = "512M"
"#,
        );
        assert_eq!(p.real_runc, PathBuf::from("/opt/runc"));
        assert_eq!(p.audit_log, PathBuf::from("/var/log/audit.jsonl"));
        let caps: Vec<&str> = p
            .allow_capabilities
            .iter()
            .map(Capability::as_str)
            .collect();
        assert_eq!(caps, ["CAP_NET_RAW", "CAP_SYS_PTRACE"]);
        assert_eq!(
            p.allow_host_namespaces,
            [HostNamespace::Pid, HostNamespace::Network]
        );
        assert_eq!(
            p.allow_mounts,
            [PathBuf::from("/"), PathBuf::from("/var/data")]
        );
        assert_eq!(p.allow_mount_types, ["fuse.sshfs"]);
        let devs: Vec<String> = p.allow_devices.iter().map(ToString::to_string).collect();
        assert_eq!(devs, ["c 10:229", "b 8:*"]);
        assert_eq!(p.allow_hooks, [PathBuf::from("/usr/bin/nerdctl")]);
        assert_eq!(p.user_namespaces, UserNamespaces::Required);
        assert!(p.keep_spec_seccomp);
        assert_eq!(p.min_oom_score_adj, -500);
        assert_eq!(p.default_pids_limit, 200);
        assert_eq!(p.default_memory_limit, Some(512 << 20));
    }

    /// Each bad input and the (key, line, column, part of the message) it must produce.
    #[test]
    fn every_error_names_key_line_and_reason() {
        let h = "[container_policy]\n";
        let cases: &[(&str, &str, usize, usize, &str)] = &[
            (
                "bogus = 1\n",
                "container_policy.bogus",
                2,
                1,
                "unknown field",
            ),
            (
                "allow_capabilities = [\"FLY\"]\n",
                "container_policy.allow_capabilities[0]",
                2,
                23,
                "not a Linux capability",
            ),
            (
                "allow_capabilities = [\"NET_RAW\", \"cap_net_raw\"]\n",
                "container_policy.allow_capabilities[1]",
                2,
                34,
                "listed twice",
            ),
            (
                "allow_host_namespaces = [\"user\"]\n",
                "container_policy.allow_host_namespaces[0]",
                2,
                26,
                "not a namespace that can be shared",
            ),
            (
                "allow_mounts = [\"var/data\"]\n",
                "container_policy.allow_mounts[0]",
                2,
                17,
                "absolute",
            ),
            (
                "allow_mounts = [\"/var/data/\"]\n",
                "container_policy.allow_mounts[0]",
                2,
                17,
                "normalised",
            ),
            (
                "allow_mounts = [\"/var/../etc\"]\n",
                "container_policy.allow_mounts[0]",
                2,
                17,
                "`..`",
            ),
            (
                "allow_mount_types = [\"Ext4\"]\n",
                "container_policy.allow_mount_types[0]",
                2,
                22,
                "file system type",
            ),
            (
                "allow_devices = [\"a *:* rwm\"]\n",
                "container_policy.allow_devices[0]",
                2,
                18,
                "device rule",
            ),
            (
                "allow_devices = [\"c 10\"]\n",
                "container_policy.allow_devices[0]",
                2,
                18,
                "device rule",
            ),
            (
                "allow_devices = [\"c x:1\"]\n",
                "container_policy.allow_devices[0]",
                2,
                18,
                "device rule",
            ),
            (
                "allow_hooks = [\"/\"]\n",
                "container_policy.allow_hooks[0]",
                2,
                16,
                "program",
            ),
            (
                "real_runc = \"runc\"\n",
                "container_policy.real_runc",
                2,
                13,
                "absolute",
            ),
            (
                "audit_log = \"/\"\n",
                "container_policy.audit_log",
                2,
                13,
                "not `/`",
            ),
            (
                "user_namespaces = \"maybe\"\n",
                "container_policy.user_namespaces",
                2,
                19,
                "not one of",
            ),
            (
                "min_oom_score_adj = -1001\n",
                "container_policy.min_oom_score_adj",
                2,
                21,
                "-1000 to 1000",
            ),
            (
                "default_pids_limit = 0\n",
                "container_policy.default_pids_limit",
                2,
                22,
                "1 to 4194304",
            ),
            (
                "default_memory_limit = \"10x\"\n",
                "container_policy.default_memory_limit",
                2,
                24,
                "",
            ),
            (
                "keep_spec_seccomp = \"yes\"\n",
                "container_policy.keep_spec_seccomp",
                2,
                21,
                "invalid type",
            ),
        ];
        for (body, key, line, column, msg) in cases {
            let text = format!("{h}{body}");
            let ps = problems(&text);
            let p = &ps[0];
            assert_eq!(
                (p.key.as_str(), p.line, p.column),
                (*key, *line, *column),
                "for input:\n{text}\ngot {p:?}"
            );
            assert!(
                p.message.contains(msg),
                "for input:\n{text}\nmessage {:?} lacks {msg:?}",
                p.message
            );
        }
    }

    #[test]
    fn kubernetes_namespace_tables() {
        let p = policy(
            r#"
[container_policy]
allow_mounts = ["/var/data"]

[[container_policy.kubernetes_namespace]]
name = "kube-system"
allow_privileged = false
allow_host_paths = ["/var/log", "/", "/etc/kubernetes"]
allow_host_network = true

[[container_policy.kubernetes_namespace]]
name = "monitoring-2"
allow_privileged = true
"#,
        );
        assert_eq!(p.allow_mounts, [PathBuf::from("/var/data")]);
        let names: Vec<&str> = p
            .kubernetes_namespaces
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["kube-system", "monitoring-2"]);
        let ks = p.kubernetes_namespace("kube-system").unwrap();
        assert!(!ks.allow_privileged && ks.allow_host_network);
        assert_eq!(
            ks.allow_host_paths,
            [
                PathBuf::from("/"),
                PathBuf::from("/etc/kubernetes"),
                PathBuf::from("/var/log")
            ]
        );
        let m = p.kubernetes_namespace("monitoring-2").unwrap();
        assert!(m.allow_privileged && !m.allow_host_network);
        assert!(m.allow_host_paths.is_empty());
        assert!(p.kubernetes_namespace("default").is_none());
        assert!(policy("").kubernetes_namespaces.is_empty());
    }

    #[test]
    fn namespace_names_are_dns_labels() {
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        let cases: &[(&str, bool)] = &[
            ("default", true),
            ("kube-system", true),
            ("a", true),
            ("0ns", true),
            ("ns-9", true),
            (&long, true),
            (&too_long, false),
            ("", false),
            ("Kube-System", false),
            ("-ns", false),
            ("ns-", false),
            ("my.ns", false),
            ("my_ns", false),
            ("n s", false),
            ("ns\u{e9}", false),
        ];
        for (name, ok) in cases {
            assert_eq!(NamespaceName::try_from(*name).is_ok(), *ok, "{name:?}");
        }
    }

    /// Each bad table and the (key, line, column, part of the message) it must produce.
    #[test]
    fn kubernetes_namespace_errors_name_key_line_and_reason() {
        let h = "[container_policy]\n[[container_policy.kubernetes_namespace]]\n";
        let k = "container_policy.kubernetes_namespace[0]";
        let cases: &[(&str, String, usize, usize, &str)] = &[
            (
                "name = \"Kube_System\"\n",
                format!("{k}.name"),
                3,
                8,
                "DNS-1123 label",
            ),
            ("name = \"\"\n", format!("{k}.name"), 3, 8, "DNS-1123 label"),
            (
                "name = \"x\"\nallow_host_paths = [\"var/log\"]\n",
                format!("{k}.allow_host_paths[0]"),
                4,
                21,
                "absolute",
            ),
            (
                "name = \"x\"\nallow_host_paths = [\"/var/log/\"]\n",
                format!("{k}.allow_host_paths[0]"),
                4,
                21,
                "normalised",
            ),
            (
                "name = \"x\"\nallow_host_paths = [\"/var/./log\"]\n",
                format!("{k}.allow_host_paths[0]"),
                4,
                21,
                "`.` or `..`",
            ),
            (
                "name = \"x\"\nallow_host_paths = [\"/var/log\", \"/var/log\"]\n",
                format!("{k}.allow_host_paths[1]"),
                4,
                33,
                "listed twice",
            ),
            (
                "name = \"x\"\nallow_hostnetwork = true\n",
                format!("{k}.allow_hostnetwork"),
                4,
                1,
                "unknown field",
            ),
            (
                "name = \"x\"\nallow_privileged = \"yes\"\n",
                format!("{k}.allow_privileged"),
                4,
                20,
                "invalid type",
            ),
            (
                "allow_privileged = true\n",
                k.to_owned(),
                2,
                1,
                "missing field `name`",
            ),
            (
                "name = \"x\"\n[[container_policy.kubernetes_namespace]]\nname = \"x\"\n",
                "container_policy.kubernetes_namespace[1].name".to_owned(),
                5,
                8,
                "already has a table",
            ),
        ];
        for (body, key, line, column, msg) in cases {
            let text = format!("{h}{body}");
            let ps = problems(&text);
            let p = &ps[0];
            assert_eq!(
                (p.key.as_str(), p.line, p.column),
                (key.as_str(), *line, *column),
                "for input:\n{text}\ngot {p:?}"
            );
            assert!(
                p.message.contains(msg),
                "for input:\n{text}\nmessage {:?} lacks {msg:?}",
                p.message
            );
        }
    }

    #[test]
    fn device_rules_cover() {
        let r = |s: &str| DeviceRule::try_from(s).unwrap();
        let cases: &[(&str, &str, bool)] = &[
            ("c 10:229", "c 10:229", true),
            ("c 10:*", "c 10:229", true),
            ("c *:*", "c 10:229", true),
            ("c 10:229", "c 10:*", false),
            ("c 10:229", "b 10:229", false),
            ("b 8:*", "b 8:0", true),
        ];
        for (rule, dev, want) in cases {
            assert_eq!(r(rule).covers(&r(dev)), *want, "{rule} covers {dev}");
        }
    }

    #[test]
    fn namespace_names() {
        for n in HostNamespace::ALL {
            assert_eq!(HostNamespace::try_from(n.as_str()), Ok(n));
        }
        assert_eq!(HostNamespace::Network.proc_name(), "net");
        assert_eq!(HostNamespace::Mount.proc_name(), "mnt");
        assert_eq!(HostNamespace::Pid.proc_name(), "pid");
        assert_eq!(ALL_CAPABILITIES.len(), 41);
    }
}
