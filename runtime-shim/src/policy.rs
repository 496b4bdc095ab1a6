//! The container policy as pure functions: a spec (or an exec process) and what the host looks
//! like go in, the spec as it may run and one [`Decision`] per thing allowed, clamped or
//! refused come out.
//!
//! Clamp what can be made safe (capabilities, `noNewPrivileges`, `oomScoreAdj`, seccomp,
//! masked and read-only paths, read-only `sysfs` and cgroup mounts); refuse what cannot (host
//! namespaces, devices, sensitive bind mounts and root file systems, unknown mount types,
//! hooks, a missing user namespace when one is required). Every refusal can be lifted only by
//! an explicit entry in `[container_policy]`. The JSON is edited as [`serde_json::Value`], so
//! every field the policy does not know is kept as it was.
//!
//! Pods (specs the CRI plugin annotated, see [`pod`]) pass the same rules, plus three of their
//! own that their Kubernetes namespace's table can lift: `privileged`, `host-paths` (sensitive
//! bind mounts) and `host-network`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use rampart_config::policy::{
    ContainerPolicy, DeviceKind, DeviceRule, HostNamespace, UserNamespaces,
};
use serde_json::{json, Map, Value};

use crate::args::{Flag, Invocation};
use crate::seccomp;

pub mod pod;

use pod::Scope;
pub use pod::{identify, ContainerType, PodIdentity};

/// Docker's default capability set minus `CAP_NET_RAW` and `CAP_MKNOD`: what a container may
/// keep without an `allow_capabilities` entry.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The capability sets of an OCI process.
const CAPABILITY_SETS: &[&str] = &[
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

/// Paths every container gets masked (`linux.maskedPaths`).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths every container gets read-only (`linux.readonlyPaths`).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host paths no bind mount or root file system may expose. `/` means exactly the root; every
/// other entry covers itself and everything below it, and a path above one (such as `/run`,
/// which holds `/run/containerd`) exposes it too. The folders of the audit log and of the real
/// runc are added from the configuration.
pub const SENSITIVE_PATHS: &[&str] = &[
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/run/containerd",
    "/var/run/containerd",
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/etc/rampart",
];

/// Mount types a container may use without an `allow_mount_types` entry (bind mounts are checked
/// by their source instead).
pub const SAFE_MOUNT_TYPES: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// Mount types whose mount is forced read-only.
const READ_ONLY_MOUNT_TYPES: &[&str] = &["sysfs", "cgroup", "cgroup2"];

/// Seccomp default actions that deny.
const DENYING_ACTIONS: &[&str] = &[
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
];

/// Character devices every container may use (runc creates most of them itself): null, zero,
/// full, random, urandom, tty, console, ptmx and the pseudo-terminals.
pub const DEFAULT_DEVICES: &[(u32, Option<u32>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
];

/// What happened to one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allowed, because an allow-list entry or the spec's own safe setting says so.
    Allowed,
    /// Changed to fit the policy.
    Clamped,
    /// Cannot be made safe: the container does not start.
    Refused,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allowed => "allowed",
            Action::Clamped => "clamped",
            Action::Refused => "refused",
        })
    }
}

/// The rules, named as in audit lines and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The JSON does not have the shape of an OCI spec.
    Spec,
    /// `process.capabilities`.
    Capabilities,
    /// `process.noNewPrivileges`.
    NoNewPrivileges,
    /// `process.oomScoreAdj`.
    OomScoreAdj,
    /// `linux.seccomp`.
    Seccomp,
    /// `linux.maskedPaths`.
    MaskedPaths,
    /// `linux.readonlyPaths`.
    ReadonlyPaths,
    /// `linux.namespaces` against the host's.
    HostNamespaces,
    /// `linux.namespaces` `user` and the id mappings.
    UserNamespaces,
    /// `linux.devices` and `linux.resources.devices`.
    Devices,
    /// Bind mounts and read-only kernel file systems.
    Mounts,
    /// File system types.
    MountTypes,
    /// `root.path`.
    Rootfs,
    /// `hooks`.
    Hooks,
    /// `linux.resources` limits (`pids.limit`, `memory.limit`).
    Resources,
    /// `process.apparmorProfile`.
    AppArmor,
    /// A pod's CRI annotations.
    Pod,
    /// A pod with the signs of `privileged: true`.
    Privileged,
    /// A pod's bind mounts of sensitive host paths (`hostPath` volumes).
    HostPaths,
    /// A pod without its own network namespace (`hostNetwork: true`).
    HostNetwork,
    /// The verdict for a whole spec or process.
    Policy,
}

impl Rule {
    /// The rule's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Spec => "spec",
            Rule::Capabilities => "capabilities",
            Rule::NoNewPrivileges => "no-new-privileges",
            Rule::OomScoreAdj => "oom-score-adj",
            Rule::Seccomp => "seccomp",
            Rule::MaskedPaths => "masked-paths",
            Rule::ReadonlyPaths => "readonly-paths",
            Rule::HostNamespaces => "host-namespaces",
            Rule::UserNamespaces => "user-namespaces",
            Rule::Devices => "devices",
            Rule::Mounts => "mounts",
            Rule::MountTypes => "mount-types",
            Rule::Rootfs => "rootfs",
            Rule::Hooks => "hooks",
            Rule::Resources => "resources",
            Rule::AppArmor => "apparmor",
            Rule::Pod => "pod",
            Rule::Privileged => "privileged",
            Rule::HostPaths => "host-paths",
            Rule::HostNetwork => "host-network",
            Rule::Policy => "policy",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision: one audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed, clamped or refused.
    pub action: Action,
    /// Which rule.
    pub rule: Rule,
    /// What was changed, kept or refused, and how to allow it.
    pub detail: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.action, self.rule, self.detail)
    }
}

/// The result of checking a spec or a process.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The JSON as it may run (meaningless when refused).
    pub value: Value,
    /// Every decision, in the order the rules ran.
    pub decisions: Vec<Decision>,
}

impl Checked {
    /// The refusals.
    pub fn refusals(&self) -> impl Iterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(|d| d.action == Action::Refused)
    }

    /// Whether anything was refused.
    pub fn is_refused(&self) -> bool {
        self.refusals().next().is_some()
    }

    /// Whether the JSON was changed.
    pub fn is_changed(&self) -> bool {
        self.decisions.iter().any(|d| d.action == Action::Clamped)
    }
}

/// What the policy needs to know about the host, gathered by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The bundle directory (absolute).
    pub bundle: PathBuf,
    /// The symlink-free form of host paths the spec names (see [`host_paths`]), for those that
    /// exist.
    pub canonical: BTreeMap<PathBuf, PathBuf>,
    /// Namespace paths in the spec (see [`namespace_paths`]) that are the host's namespace.
    pub host_namespace_paths: BTreeSet<String>,
}

/// The validated policy, ready to check specs.
#[derive(Debug, Clone)]
pub struct Policy {
    config: ContainerPolicy,
    allowed_caps: BTreeSet<String>,
    sensitive: Vec<PathBuf>,
}

/// Collects decisions while the rules run.
#[derive(Default)]
struct Ctx {
    decisions: Vec<Decision>,
}

impl Ctx {
    fn push(&mut self, action: Action, rule: Rule, detail: impl Into<String>) {
        self.decisions.push(Decision {
            action,
            rule,
            detail: detail.into(),
        });
    }
    fn allow(&mut self, rule: Rule, detail: impl Into<String>) {
        self.push(Action::Allowed, rule, detail);
    }
    fn clamp(&mut self, rule: Rule, detail: impl Into<String>) {
        self.push(Action::Clamped, rule, detail);
    }
    fn refuse(&mut self, rule: Rule, detail: impl Into<String>) {
        self.push(Action::Refused, rule, detail);
    }
}

/// Joins at most `max` items, then says how many more there are.
fn list(items: &[String], max: usize) -> String {
    let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    let mut s = shown.join(", ");
    if items.len() > max {
        s.push_str(&format!(" and {} more", items.len() - max));
    }
    s
}

/// Resolves `p` against `base` and removes `.` and `..` without touching the file system.
pub fn lexical(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Reads an optional array of strings; `Err` names what is wrong.
fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{what} holds something that is not a string"))
            })
            .collect(),
        Some(_) => Err(format!("{what} is not a list")),
    }
}

/// A namespace entry: its type and optional path.
fn namespace_entries(linux: Option<&Value>) -> Result<Vec<(String, Option<String>)>, String> {
    let Some(list) = linux.and_then(|l| l.get("namespaces")) else {
        return Ok(Vec::new());
    };
    match list {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|e| {
                let t = e
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or("linux.namespaces has an entry without a type")?;
                let p = match e.get("path") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(p)) if p.is_empty() => None,
                    Some(Value::String(p)) => Some(p.clone()),
                    Some(_) => {
                        return Err("linux.namespaces has a path that is not a string".into())
                    }
                };
                Ok((t.to_owned(), p))
            })
            .collect(),
        _ => Err("linux.namespaces is not a list".into()),
    }
}

/// The namespace paths a spec joins, with the kind of namespace, for [`HostFacts`].
pub fn namespace_paths(spec: &Value) -> Vec<(HostNamespace, String)> {
    namespace_entries(spec.get("linux"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(t, p)| Some((HostNamespace::try_from(t.as_str()).ok()?, p?)))
        .collect()
}

fn is_bind(typ: &str, options: &[String]) -> bool {
    typ == "bind" || typ == "rbind" || options.iter().any(|o| o == "bind" || o == "rbind")
}

/// The host paths a spec exposes (the bundle, `root.path`, bind mount sources), resolved
/// lexically against the bundle, for [`HostFacts::canonical`].
pub fn host_paths(spec: &Value, bundle: &Path) -> Vec<PathBuf> {
    let mut out = vec![bundle.to_path_buf()];
    if let Some(root) = spec.pointer("/root/path").and_then(Value::as_str) {
        out.push(lexical(bundle, root));
    }
    for m in spec
        .get("mounts")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let typ = m.get("type").and_then(Value::as_str).unwrap_or("");
        let options = strings(m.get("options"), "").unwrap_or_default();
        if let (true, Some(src)) = (
            is_bind(typ, &options),
            m.get("source").and_then(Value::as_str),
        ) {
            out.push(lexical(bundle, src));
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Policy {
    /// Builds the policy from `[container_policy]`.
    pub fn new(config: &ContainerPolicy) -> Policy {
        let mut allowed_caps: BTreeSet<String> = DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        allowed_caps.extend(
            config
                .allow_capabilities
                .iter()
                .map(|c| c.as_str().to_owned()),
        );
        let mut sensitive: Vec<PathBuf> = SENSITIVE_PATHS.iter().map(PathBuf::from).collect();
        for file in [&config.audit_log, &config.real_runc] {
            if let Some(dir) = file.parent().filter(|d| *d != Path::new("/")) {
                sensitive.push(dir.to_path_buf());
            }
        }
        sensitive.sort();
        sensitive.dedup();
        Policy {
            config: config.clone(),
            allowed_caps,
            sensitive,
        }
    }

    /// The configuration this policy was built from.
    pub fn config(&self) -> &ContainerPolicy {
        &self.config
    }

    /// Checks a bundle's `config.json`.
    pub fn check_spec(&self, spec: &Value, facts: &HostFacts) -> Checked {
        let mut value = spec.clone();
        let mut cx = Ctx::default();
        let pod = match identify(spec) {
            Ok(p) => p,
            Err(e) => {
                cx.refuse(Rule::Pod, e);
                None
            }
        };
        let Some(obj) = value.as_object_mut() else {
            cx.refuse(Rule::Spec, "config.json is not a JSON object");
            return Checked {
                value,
                decisions: cx.decisions,
            };
        };
        let scope = self.scope(pod.as_ref(), obj, &mut cx);
        match obj.get_mut("process") {
            None | Some(Value::Null) => {}
            Some(p) => self.process(p, &scope, &mut cx),
        }
        self.root(obj, facts, &scope, &mut cx);
        self.mounts(obj, facts, &scope, &mut cx);
        self.hooks(obj, &mut cx);
        let linux = obj.entry("linux").or_insert_with(|| json!({}));
        if linux.is_null() {
            *linux = json!({});
        }
        match linux.as_object_mut() {
            None => cx.refuse(Rule::Spec, "linux is not an object"),
            Some(l) => {
                self.namespaces(l, facts, &scope, &mut cx);
                self.user_namespaces(l, &mut cx);
                self.devices(l, &scope, &mut cx);
                self.seccomp(l, &mut cx);
                self.resources(l, &mut cx);
                if scope.privileged {
                    for rule in [Rule::MaskedPaths, Rule::ReadonlyPaths] {
                        cx.allow(
                            rule,
                            format!(
                                "left as the spec has them: privileged pod ({})",
                                scope.privileged_reason()
                            ),
                        );
                    }
                } else {
                    ensure_paths(l, "maskedPaths", MASKED_PATHS, Rule::MaskedPaths, &mut cx);
                    ensure_paths(
                        l,
                        "readonlyPaths",
                        READONLY_PATHS,
                        Rule::ReadonlyPaths,
                        &mut cx,
                    );
                }
            }
        }
        Checked {
            value,
            decisions: cx.decisions,
        }
    }

    /// Checks an `exec --process` file (an OCI process object).
    pub fn check_process(&self, process: &Value) -> Checked {
        let mut value = process.clone();
        let mut cx = Ctx::default();
        self.process(&mut value, &Scope::default(), &mut cx);
        Checked {
            value,
            decisions: cx.decisions,
        }
    }

    /// Checks `exec` flags (without `--process`, runc builds the process from the bundle's
    /// checked `config.json` plus these flags). Returns the decisions and the flags to drop:
    /// `--cap` beyond the allowed set and `--no-new-privs=false`.
    pub fn check_exec_flags<'a>(&self, inv: &'a Invocation) -> (Vec<Decision>, Vec<&'a Flag>) {
        let mut cx = Ctx::default();
        let mut drop = Vec::new();
        if inv.flag("process").is_some() {
            // runc ignores these flags when a process file is given.
            return (cx.decisions, drop);
        }
        for f in inv.flag_values("cap") {
            let cap = f.value.as_deref().unwrap_or("");
            if !self.allowed_caps.contains(cap) {
                cx.clamp(
                    Rule::Capabilities,
                    format!("dropped `--cap {cap}`; allow it with allow_capabilities"),
                );
                drop.push(f);
            } else if !DEFAULT_CAPABILITIES.contains(&cap) {
                cx.allow(
                    Rule::Capabilities,
                    format!("kept `--cap {cap}` (allow_capabilities)"),
                );
            }
        }
        for f in inv.flag_values("no-new-privs") {
            if !f.is_true() {
                cx.clamp(
                    Rule::NoNewPrivileges,
                    "dropped `--no-new-privs=false`: no_new_privs is always set",
                );
                drop.push(f);
            }
        }
        (cx.decisions, drop)
    }

    fn process(&self, p: &mut Value, scope: &Scope<'_>, cx: &mut Ctx) {
        let Some(p) = p.as_object_mut() else {
            cx.refuse(Rule::Spec, "process is not an object");
            return;
        };
        self.capabilities(p, scope, cx);
        if p.get("noNewPrivileges") != Some(&Value::Bool(true)) {
            let was = p
                .get("noNewPrivileges")
                .map_or_else(|| "unset".to_owned(), ToString::to_string);
            p.insert("noNewPrivileges".into(), Value::Bool(true));
            cx.clamp(
                Rule::NoNewPrivileges,
                format!("set noNewPrivileges to true (was {was})"),
            );
        }
        let min = i64::from(self.config.min_oom_score_adj);
        match p.get("oomScoreAdj") {
            None | Some(Value::Null) => {
                p.insert("oomScoreAdj".into(), json!(min));
                cx.clamp(
                    Rule::OomScoreAdj,
                    format!("set oomScoreAdj to {min} (was unset: the container would inherit containerd's)"),
                );
            }
            Some(v) => match v.as_i64() {
                Some(n) if n >= min => {}
                Some(n) => {
                    p.insert("oomScoreAdj".into(), json!(min));
                    cx.clamp(
                        Rule::OomScoreAdj,
                        format!("raised oomScoreAdj from {n} to {min} (min_oom_score_adj)"),
                    );
                }
                None => cx.refuse(Rule::Spec, "process.oomScoreAdj is not an integer"),
            },
        }
        self.apparmor(p, cx);
    }

    /// A process without `apparmorProfile` gets `[container_policy] apparmor_profile`
    /// (`rampart-default`); a profile the spec names is kept (the runtime's own profile only
    /// lets it change to `rampart-*` profiles).
    fn apparmor(&self, p: &mut Map<String, Value>, cx: &mut Ctx) {
        let Some(profile) = &self.config.apparmor_profile else {
            return;
        };
        match p.get("apparmorProfile") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(_)) => return,
            Some(_) => {
                cx.refuse(Rule::Spec, "process.apparmorProfile is not a string");
                return;
            }
        }
        p.insert("apparmorProfile".into(), json!(profile));
        cx.clamp(
            Rule::AppArmor,
            format!("set apparmorProfile to {profile} (was unset: the container would run under the runtime's profile)"),
        );
    }

    fn capabilities(&self, p: &mut Map<String, Value>, scope: &Scope<'_>, cx: &mut Ctx) {
        let caps = match p.get_mut("capabilities") {
            None | Some(Value::Null) => return,
            Some(Value::Object(c)) => c,
            Some(_) => {
                cx.refuse(Rule::Spec, "process.capabilities is not an object");
                return;
            }
        };
        let mut removed: BTreeSet<String> = BTreeSet::new();
        let mut sets: Vec<&str> = Vec::new();
        let mut extra: BTreeSet<String> = BTreeSet::new();
        for set in CAPABILITY_SETS {
            let what = format!("process.capabilities.{set}");
            let names = match strings(caps.get(*set), &what) {
                Ok(n) => n,
                Err(e) => {
                    cx.refuse(Rule::Spec, e);
                    continue;
                }
            };
            if names.is_empty() {
                continue;
            }
            let (keep, drop): (Vec<String>, Vec<String>) = names
                .into_iter()
                .partition(|c| scope.privileged || self.allowed_caps.contains(c));
            extra.extend(
                keep.iter()
                    .filter(|c| !DEFAULT_CAPABILITIES.contains(&c.as_str()))
                    .cloned(),
            );
            if !drop.is_empty() {
                sets.push(set);
                removed.extend(drop);
                caps.insert((*set).to_owned(), json!(keep));
            }
        }
        if !removed.is_empty() {
            let removed: Vec<String> = removed.into_iter().collect();
            cx.clamp(
                Rule::Capabilities,
                format!(
                    "dropped {} from {}; allow one with allow_capabilities",
                    list(&removed, 8),
                    sets.join(", ")
                ),
            );
        }
        if !extra.is_empty() {
            let extra: Vec<String> = extra.into_iter().collect();
            if scope.privileged {
                cx.allow(
                    Rule::Capabilities,
                    format!(
                        "kept {}: privileged pod ({})",
                        list(&extra, 8),
                        scope.privileged_reason()
                    ),
                );
            } else {
                cx.allow(
                    Rule::Capabilities,
                    format!("kept {} (allow_capabilities)", extra.join(", ")),
                );
            }
        }
    }

    /// Whether an `allow_mounts` entry covers `p` (`/` covers only itself).
    fn mount_allowed(&self, p: &Path) -> bool {
        self.config
            .allow_mounts
            .iter()
            .any(|e| p == e || (e != Path::new("/") && p.starts_with(e)))
    }

    /// How `p` touches a sensitive path, if it does.
    fn sensitive_hit(&self, p: &Path) -> Option<String> {
        self.sensitive.iter().find_map(|s| {
            if s == Path::new("/") {
                (p == s).then(|| "is the host's root".to_owned())
            } else if p == s {
                Some(format!("is {}", s.display()))
            } else if p.starts_with(s) {
                Some(format!("is under {}", s.display()))
            } else if s.starts_with(p) {
                Some(format!("contains {}", s.display()))
            } else {
                None
            }
        })
    }

    /// Whether the bundle can vouch for paths inside it: it is not `/` and holds no sensitive
    /// path.
    fn bundle_is_private(&self, bundle: &Path) -> bool {
        bundle != Path::new("/") && !self.sensitive.iter().any(|s| s.starts_with(bundle))
    }

    /// Why exposing host path `p` (lexical) is refused, and the path an `allow_mounts` (or, for
    /// a pod, `allow_host_paths`) entry would have to cover, if it is refused; `Ok(Some(key))`
    /// when it is sensitive but allowed by that key.
    fn exposes(
        &self,
        p: &Path,
        facts: &HostFacts,
        scope: &Scope<'_>,
    ) -> Result<Option<AllowedBy>, (String, PathBuf)> {
        let canonical = facts.canonical.get(p);
        let bundle = &facts.bundle;
        let canonical_bundle = facts.canonical.get(bundle).unwrap_or(bundle);
        let inside_bundle = self.bundle_is_private(bundle)
            && p.starts_with(bundle)
            && p != bundle
            && canonical.is_none_or(|c| c.starts_with(canonical_bundle) && c != canonical_bundle);
        if inside_bundle {
            return Ok(None);
        }
        let mut allowed = None;
        for form in std::iter::once(p).chain(canonical.map(PathBuf::as_path)) {
            if let Some(hit) = self.sensitive_hit(form) {
                if self.mount_allowed(form) {
                    allowed = Some(AllowedBy::Mounts);
                } else if Self::host_path_allowed(scope, form) {
                    allowed = Some(AllowedBy::HostPaths);
                } else {
                    let via = if form == p {
                        String::new()
                    } else {
                        format!(" (through a symlink to {})", form.display())
                    };
                    return Err((format!("{}{via} {hit}", p.display()), form.to_path_buf()));
                }
            }
        }
        Ok(allowed)
    }

    fn root(&self, obj: &Map<String, Value>, facts: &HostFacts, scope: &Scope<'_>, cx: &mut Ctx) {
        let path = match obj.get("root").map(|r| r.get("path")) {
            None | Some(None) => return,
            Some(Some(Value::String(p))) => p,
            Some(Some(_)) => {
                cx.refuse(Rule::Spec, "root.path is not a string");
                return;
            }
        };
        let p = lexical(&facts.bundle, path);
        match self.exposes(&p, facts, scope) {
            Ok(None) => {}
            Ok(Some(by)) => cx.allow(
                Rule::Rootfs,
                format!("root file system {} ({})", p.display(), by.key(scope)),
            ),
            Err((why, form)) => cx.refuse(
                Rule::Rootfs,
                format!(
                    "the root file system {why}; allow it with allow_mounts = [\"{}\"]",
                    form.display()
                ),
            ),
        }
    }

    fn mounts(
        &self,
        obj: &mut Map<String, Value>,
        facts: &HostFacts,
        scope: &Scope<'_>,
        cx: &mut Ctx,
    ) {
        let mounts = match obj.get_mut("mounts") {
            None | Some(Value::Null) => return,
            Some(Value::Array(m)) => m,
            Some(_) => {
                cx.refuse(Rule::Spec, "mounts is not a list");
                return;
            }
        };
        let mut own: Vec<String> = Vec::new();
        for (i, m) in mounts.iter_mut().enumerate() {
            let Some(m) = m.as_object_mut() else {
                cx.refuse(Rule::Spec, format!("mounts[{i}] is not an object"));
                continue;
            };
            let typ = match m.get("type") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(t)) => t.clone(),
                Some(_) => {
                    cx.refuse(Rule::Spec, format!("mounts[{i}].type is not a string"));
                    continue;
                }
            };
            let options = match strings(m.get("options"), &format!("mounts[{i}].options")) {
                Ok(o) => o,
                Err(e) => {
                    cx.refuse(Rule::Spec, e);
                    continue;
                }
            };
            let dest = m
                .get("destination")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            if is_bind(&typ, &options) {
                let Some(src) = m.get("source").and_then(Value::as_str) else {
                    cx.refuse(Rule::Spec, format!("bind mount mounts[{i}] has no source"));
                    continue;
                };
                let p = lexical(&facts.bundle, src);
                if let Some(pod) = scope.pod {
                    if Self::pod_own_path(&p, facts, pod) {
                        own.push(dest);
                        continue;
                    }
                }
                match (self.exposes(&p, facts, scope), scope.pod) {
                    (Ok(None), _) => {}
                    (Ok(Some(AllowedBy::Mounts)), _) => cx.allow(
                        Rule::Mounts,
                        format!("bind mount of {} onto {dest} (allow_mounts)", p.display()),
                    ),
                    (Ok(Some(AllowedBy::HostPaths)), _) => cx.allow(
                        Rule::HostPaths,
                        format!(
                            "{}bind mount of {} onto {dest} ({})",
                            pod_prefix(scope),
                            p.display(),
                            AllowedBy::HostPaths.key(scope)
                        ),
                    ),
                    (Err((why, form)), None) => cx.refuse(
                        Rule::Mounts,
                        format!(
                            "bind mount onto {dest}: {why}; allow it with allow_mounts = [\"{}\"]",
                            form.display()
                        ),
                    ),
                    (Err((why, form)), Some(pod)) => cx.refuse(
                        Rule::HostPaths,
                        format!(
                            "{pod}: bind mount onto {dest}: {why}; allow it with allow_host_paths = [\"{}\"] in [[container_policy.kubernetes_namespace]] name = \"{}\"",
                            form.display(),
                            pod.namespace
                        ),
                    ),
                }
                continue;
            }
            if READ_ONLY_MOUNT_TYPES.contains(&typ.as_str()) {
                let writable =
                    !options.iter().any(|o| o == "ro") || options.iter().any(|o| o == "rw");
                if writable && scope.privileged {
                    cx.allow(
                        Rule::Mounts,
                        format!(
                            "the {typ} mount on {dest} stays writable: privileged pod ({})",
                            scope.privileged_reason()
                        ),
                    );
                } else if writable {
                    let mut new: Vec<String> = options.into_iter().filter(|o| o != "rw").collect();
                    if !new.iter().any(|o| o == "ro") {
                        new.push("ro".into());
                    }
                    m.insert("options".into(), json!(new));
                    cx.clamp(
                        Rule::Mounts,
                        format!("made the {typ} mount on {dest} read-only"),
                    );
                }
            } else if SAFE_MOUNT_TYPES.contains(&typ.as_str()) {
            } else if self.config.allow_mount_types.contains(&typ) {
                cx.allow(
                    Rule::MountTypes,
                    format!("{typ} mount on {dest} (allow_mount_types)"),
                );
            } else {
                let shown = if typ.is_empty() {
                    "(none)"
                } else {
                    typ.as_str()
                };
                cx.refuse(
                    Rule::MountTypes,
                    format!(
                        "mount of type {shown} on {dest} is not allowed; allow it with allow_mount_types = [\"{typ}\"]"
                    ),
                );
            }
        }
        if let (false, Some(pod)) = (own.is_empty(), scope.pod) {
            let uid = pod.uid.as_ref().map_or_else(String::new, |u| {
                format!(" and the kubelet's for pod uid {u}")
            });
            cx.allow(
                Rule::Mounts,
                format!(
                    "{pod}: bind mounts of its own files onto {} (from the CRI plugin's folders for sandbox {}{uid})",
                    list(&own, 8),
                    pod.sandbox_id
                ),
            );
        }
    }

    fn hooks(&self, obj: &Map<String, Value>, cx: &mut Ctx) {
        let hooks = match obj.get("hooks") {
            None | Some(Value::Null) => return,
            Some(Value::Object(h)) => h,
            Some(_) => {
                cx.refuse(Rule::Spec, "hooks is not an object");
                return;
            }
        };
        for (kind, list) in hooks {
            let items = match list {
                Value::Null => continue,
                Value::Array(items) => items,
                _ => {
                    cx.refuse(Rule::Spec, format!("hooks.{kind} is not a list"));
                    continue;
                }
            };
            for h in items {
                let Some(path) = h.get("path").and_then(Value::as_str) else {
                    cx.refuse(
                        Rule::Spec,
                        format!("hooks.{kind} has an entry without a path"),
                    );
                    continue;
                };
                if self.config.allow_hooks.iter().any(|a| a == Path::new(path)) {
                    cx.allow(Rule::Hooks, format!("{kind} hook {path} (allow_hooks)"));
                } else {
                    cx.refuse(
                        Rule::Hooks,
                        format!(
                            "{kind} hook {path} would run as root on the host; allow it with allow_hooks = [\"{path}\"]"
                        ),
                    );
                }
            }
        }
    }

    fn namespaces(
        &self,
        l: &Map<String, Value>,
        facts: &HostFacts,
        scope: &Scope<'_>,
        cx: &mut Ctx,
    ) {
        let linux = Value::Object(l.clone());
        let entries = match namespace_entries(Some(&linux)) {
            Ok(e) => e,
            Err(e) => {
                cx.refuse(Rule::Spec, e);
                return;
            }
        };
        let shared: Vec<(HostNamespace, Option<String>)> = HostNamespace::ALL
            .into_iter()
            .map(|ns| {
                let why = match entries.iter().find(|(t, _)| t == ns.as_str()) {
                    None => Some(format!("has no {ns} namespace")),
                    Some((_, Some(p))) if facts.host_namespace_paths.contains(p) => {
                        Some(format!("joins the host's {ns} namespace ({p})"))
                    }
                    Some(_) => None,
                };
                (ns, why)
            })
            .collect();
        let host_network = shared
            .iter()
            .find(|(ns, why)| *ns == HostNamespace::Network && why.is_some())
            .and_then(|(_, why)| why.clone());
        for (ns, why) in shared {
            let Some(why) = why else { continue };
            // A pod's hostNetwork (which takes the host's uts namespace along) has its own rule.
            if let (Some(pod), Some(net_why)) = (scope.pod, &host_network) {
                match ns {
                    HostNamespace::Network => {
                        let uts = entries
                            .iter()
                            .find(|(t, _)| t == HostNamespace::Uts.as_str())
                            .is_none_or(|(_, p)| {
                                p.as_ref()
                                    .is_some_and(|p| facts.host_namespace_paths.contains(p))
                            });
                        Self::host_network(pod, scope, net_why, uts, cx);
                        continue;
                    }
                    HostNamespace::Uts => continue,
                    _ => {}
                }
            }
            if self.config.allow_host_namespaces.contains(&ns) {
                cx.allow(
                    Rule::HostNamespaces,
                    format!("shares the host's {ns} namespace (allow_host_namespaces)"),
                );
            } else {
                cx.refuse(
                    Rule::HostNamespaces,
                    format!(
                        "the container {why}, so it would share the host's; allow it with allow_host_namespaces = [\"{ns}\"]"
                    ),
                );
            }
        }
    }

    fn user_namespaces(&self, l: &Map<String, Value>, cx: &mut Ctx) {
        if self.config.user_namespaces != UserNamespaces::Required {
            return;
        }
        let linux = Value::Object(l.clone());
        let entries = namespace_entries(Some(&linux)).unwrap_or_default();
        let why = match entries.iter().find(|(t, _)| t == "user") {
            None => Some("the container has no user namespace".to_owned()),
            Some((_, Some(p))) => Some(format!(
                "the container joins user namespace {p}, whose mappings cannot be checked"
            )),
            Some((_, None)) => ["uidMappings", "gidMappings"].iter().find_map(|key| {
                let maps = l.get(*key).and_then(Value::as_array);
                let ranges: Vec<(i64, i64)> = maps
                    .map(|m| {
                        m.iter()
                            .map(|r| {
                                (
                                    r.get("hostID").and_then(Value::as_i64).unwrap_or(0),
                                    r.get("size").and_then(Value::as_i64).unwrap_or(0),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if ranges.is_empty() {
                    Some(format!("linux.{key} is empty"))
                } else if ranges
                    .iter()
                    .any(|(host, size)| *host <= 0 && 0 < host.saturating_add(*size))
                {
                    Some(format!("linux.{key} maps the host's root"))
                } else {
                    None
                }
            }),
        };
        if let Some(why) = why {
            cx.refuse(
                Rule::UserNamespaces,
                format!("{why} (user_namespaces = \"required\")"),
            );
        }
    }

    /// Whether a device is allowed without an entry, or with one.
    fn device_ok(&self, d: &DeviceRule) -> Result<bool, ()> {
        let default = d.kind == DeviceKind::Char
            && DEFAULT_DEVICES.iter().any(|(major, minor)| {
                DeviceRule {
                    kind: DeviceKind::Char,
                    major: Some(*major),
                    minor: *minor,
                }
                .covers(d)
            });
        if default {
            Ok(false)
        } else if self.config.allow_devices.iter().any(|a| a.covers(d)) {
            Ok(true)
        } else {
            Err(())
        }
    }

    fn devices(&self, l: &Map<String, Value>, scope: &Scope<'_>, cx: &mut Ctx) {
        let mut refused: Vec<String> = Vec::new();
        let mut allowed: Vec<String> = Vec::new();
        let mut everything = false;
        let number = |v: Option<&Value>| -> Result<Option<u32>, ()> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(-1) => Ok(None),
                    Some(n) => u32::try_from(n).map(Some).map_err(|_| ()),
                    None => Err(()),
                },
            }
        };
        let rules = l.get("resources").and_then(|r| r.get("devices"));
        match rules {
            None | Some(Value::Null) => {}
            Some(Value::Array(rules)) => {
                for (i, r) in rules.iter().enumerate() {
                    if r.get("allow") != Some(&Value::Bool(true)) {
                        continue;
                    }
                    let access = r.get("access").and_then(Value::as_str).unwrap_or("rwm");
                    if !access.is_empty() && access.chars().all(|c| c == 'm') {
                        // mknod alone: CAP_MKNOD decides, and it is not in the default set.
                        continue;
                    }
                    let typ = r.get("type").and_then(Value::as_str).unwrap_or("a");
                    let (Ok(major), Ok(minor)) = (number(r.get("major")), number(r.get("minor")))
                    else {
                        cx.refuse(
                            Rule::Spec,
                            format!("linux.resources.devices[{i}] has a bad major or minor"),
                        );
                        continue;
                    };
                    let kinds: &[DeviceKind] = match typ {
                        "a" | "" => &[DeviceKind::Char, DeviceKind::Block],
                        "c" => &[DeviceKind::Char],
                        "b" => &[DeviceKind::Block],
                        _ => {
                            cx.refuse(
                                Rule::Spec,
                                format!("linux.resources.devices[{i}] has type {typ}"),
                            );
                            continue;
                        }
                    };
                    for kind in kinds {
                        let d = DeviceRule {
                            kind: *kind,
                            major,
                            minor,
                        };
                        match self.device_ok(&d) {
                            Ok(false) => {}
                            Ok(true) => allowed.push(format!("{d} {access}")),
                            Err(()) => {
                                if major.is_none() && minor.is_none() {
                                    everything = true;
                                }
                                refused.push(format!("{d} {access}"));
                            }
                        }
                    }
                }
            }
            Some(_) => cx.refuse(Rule::Spec, "linux.resources.devices is not a list"),
        }
        match l.get("devices") {
            None | Some(Value::Null) => {}
            Some(Value::Array(devs)) => {
                for (i, dev) in devs.iter().enumerate() {
                    let path = dev.get("path").and_then(Value::as_str).unwrap_or("?");
                    let kind = match dev.get("type").and_then(Value::as_str) {
                        Some("p") => continue,
                        Some("c" | "u") => DeviceKind::Char,
                        Some("b") => DeviceKind::Block,
                        _ => {
                            cx.refuse(
                                Rule::Spec,
                                format!("linux.devices[{i}] ({path}) has no valid type"),
                            );
                            continue;
                        }
                    };
                    let (Ok(Some(major)), Ok(Some(minor))) =
                        (number(dev.get("major")), number(dev.get("minor")))
                    else {
                        cx.refuse(
                            Rule::Spec,
                            format!("linux.devices[{i}] ({path}) has a bad major or minor"),
                        );
                        continue;
                    };
                    let d = DeviceRule {
                        kind,
                        major: Some(major),
                        minor: Some(minor),
                    };
                    match self.device_ok(&d) {
                        Ok(false) => {}
                        Ok(true) => allowed.push(format!("{path} ({d})")),
                        Err(()) => refused.push(format!("{path} ({d})")),
                    }
                }
            }
            Some(_) => cx.refuse(Rule::Spec, "linux.devices is not a list"),
        }
        if !allowed.is_empty() {
            cx.allow(
                Rule::Devices,
                format!("{} (allow_devices)", list(&allowed, 8)),
            );
        }
        if !refused.is_empty() && scope.privileged {
            cx.allow(
                Rule::Devices,
                format!(
                    "{}: privileged pod ({})",
                    list(&refused, 6),
                    scope.privileged_reason()
                ),
            );
        } else if !refused.is_empty() {
            let privileged = if everything {
                "the container may use every host device, as a privileged container does: "
            } else {
                "the container may use host devices beyond the defaults: "
            };
            cx.refuse(
                Rule::Devices,
                format!(
                    "{privileged}{}; allow a device with allow_devices = [\"c MAJOR:MINOR\"]",
                    list(&refused, 6)
                ),
            );
        }
    }

    fn seccomp(&self, l: &mut Map<String, Value>, cx: &mut Ctx) {
        let replace = match l.get("seccomp") {
            None | Some(Value::Null) => {
                Some("added the default profile (the spec had none)".to_owned())
            }
            Some(Value::Object(s)) => {
                let action = s
                    .get("defaultAction")
                    .and_then(Value::as_str)
                    .unwrap_or("(none)");
                if !DENYING_ACTIONS.contains(&action) {
                    Some(format!(
                        "replaced the spec's profile, which allows by default ({action}), with the default profile"
                    ))
                } else if !self.config.keep_spec_seccomp {
                    Some("replaced the spec's profile with the default profile (keep_spec_seccomp is off)".to_owned())
                } else {
                    cx.allow(
                        Rule::Seccomp,
                        format!("kept the spec's own profile, default action {action} (keep_spec_seccomp)"),
                    );
                    None
                }
            }
            Some(_) => {
                cx.refuse(Rule::Spec, "linux.seccomp is not an object");
                None
            }
        };
        if let Some(detail) = replace {
            l.insert("seccomp".into(), seccomp::default_profile());
            cx.clamp(Rule::Seccomp, detail);
        }
    }
}

impl Policy {
    /// Caps `linux.resources.pids.limit` at `default_pids_limit` (set when absent, zero or
    /// negative, which mean no limit) and, with `default_memory_limit`, `memory.limit` the
    /// same way.
    fn resources(&self, l: &mut Map<String, Value>, cx: &mut Ctx) {
        let resources = l.entry("resources").or_insert_with(|| json!({}));
        if resources.is_null() {
            *resources = json!({});
        }
        let Some(r) = resources.as_object_mut() else {
            cx.refuse(Rule::Spec, "linux.resources is not an object");
            return;
        };
        let limits = [
            (
                "pids",
                Some(i64::from(self.config.default_pids_limit)),
                "default_pids_limit",
            ),
            (
                "memory",
                self.config
                    .default_memory_limit
                    .and_then(|m| i64::try_from(m).ok()),
                "default_memory_limit",
            ),
        ];
        for (controller, max, key) in limits {
            let Some(max) = max else { continue };
            let entry = r.entry(controller).or_insert_with(|| json!({}));
            if entry.is_null() {
                *entry = json!({});
            }
            let Some(obj) = entry.as_object_mut() else {
                cx.refuse(
                    Rule::Spec,
                    format!("linux.resources.{controller} is not an object"),
                );
                continue;
            };
            let current = obj.get("limit");
            let was = match current {
                None | Some(Value::Null) => "none".to_owned(),
                Some(v) => match v.as_i64() {
                    Some(n) if n > 0 && n <= max => continue,
                    Some(n) if n > 0 => n.to_string(),
                    Some(n) => format!("{n} (no limit)"),
                    None => {
                        cx.refuse(
                            Rule::Spec,
                            format!("linux.resources.{controller}.limit is not an integer"),
                        );
                        continue;
                    }
                },
            };
            obj.insert("limit".to_owned(), json!(max));
            cx.clamp(
                Rule::Resources,
                format!("{controller}.limit set to {max} (was {was}); raise it with {key}"),
            );
        }
    }
}

/// Which key let a sensitive host path through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AllowedBy {
    /// `allow_mounts`, for every container.
    Mounts,
    /// `allow_host_paths` of the pod's Kubernetes namespace.
    HostPaths,
}

impl AllowedBy {
    /// The key, as audit lines name it.
    fn key(self, scope: &Scope<'_>) -> String {
        match self {
            AllowedBy::Mounts => "allow_mounts".to_owned(),
            AllowedBy::HostPaths => format!(
                "allow_host_paths of Kubernetes namespace {}",
                scope.pod.map_or("?", |p| p.namespace.as_str())
            ),
        }
    }
}

/// `POD: ` for a pod's decisions, nothing for a plain container.
fn pod_prefix(scope: &Scope<'_>) -> String {
    scope.pod.map_or_else(String::new, |p| format!("{p}: "))
}

/// Adds every `required` path missing from `linux.KEY`.
fn ensure_paths(
    l: &mut Map<String, Value>,
    key: &str,
    required: &[&str],
    rule: Rule,
    cx: &mut Ctx,
) {
    let present = match strings(l.get(key), &format!("linux.{key}")) {
        Ok(p) => p,
        Err(e) => {
            cx.refuse(Rule::Spec, e);
            return;
        }
    };
    let missing: Vec<String> = required
        .iter()
        .filter(|r| !present.iter().any(|p| p == *r))
        .map(|r| (*r).to_owned())
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut all = present;
    all.extend(missing.iter().cloned());
    l.insert(key.to_owned(), json!(all));
    cx.clamp(rule, format!("added {}", missing.join(", ")));
}

#[cfg(test)]
mod tests;
