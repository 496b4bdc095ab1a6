//! `[[service]]`: what PID 1 runs, how it restarts, when it starts and with which privileges.
//!
//! [`RawService`] is what serde reads (unknown keys refused, spans kept); the validator turns
//! each into a [`Service`] whose fields can only hold checked values, with the safe defaults
//! documented in `docs/config.md`: no capabilities, `no_new_privs`, its own mount namespace with
//! a read-only root and a private `/tmp`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::raw::{RawAction, RawRestart, RawSize};
use crate::types::{self, Action, Restart, ServiceName, Size};
use crate::Validator;

/// Default of `restart_delay`: the first restart waits this long.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(1);
/// Default of `restart_delay_max`: the backoff never waits longer.
pub const DEFAULT_RESTART_DELAY_MAX: Duration = Duration::from_secs(60);
/// Default of `stable_after`: a run this long resets the backoff.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(30);
/// Default of `crash_loop.restarts`.
pub const DEFAULT_CRASH_LOOP_RESTARTS: u32 = 5;
/// Default of `crash_loop.window`.
pub const DEFAULT_CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// Default of `ready_timeout`.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The most entries a path list (`writable_paths`, `landlock.*`) may hold.
pub const MAX_PATHS: usize = 64;
/// The most supplementary groups a service may have (the kernel allows 65536; keep it small).
pub const MAX_GROUPS: usize = 64;

/// The capability names the kernel knows (Linux 6.1), by number: `CAPABILITIES[n]` is
/// capability `n`.
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A capability the service keeps, e.g. `CAP_NET_ADMIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(u8);

impl Capability {
    /// The kernel's number of the capability.
    pub fn number(self) -> u8 {
        self.0
    }

    /// Its name, e.g. `CAP_NET_ADMIN`.
    pub fn name(self) -> &'static str {
        CAPABILITIES.get(usize::from(self.0)).copied().unwrap_or("")
    }
}

impl TryFrom<&str> for Capability {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase();
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        CAPABILITIES
            .iter()
            .position(|c| *c == name)
            .and_then(|n| u8::try_from(n).ok())
            .map(Capability)
            .ok_or_else(|| format!("`{s}` is not a capability (e.g. CAP_NET_ADMIN)"))
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A namespace a service gets for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    /// Its own mount table (read-only root, private `/tmp`, writable paths).
    Mount,
    /// Its own System V IPC and POSIX message queues.
    Ipc,
    /// Its own host name.
    Uts,
    /// Its own network stack (only a loopback interface).
    Net,
    /// Its own pid numbers: the service is pid 1 in it, with its own `/proc`.
    Pid,
}

impl Namespace {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Mount => "mount",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Net => "net",
            Namespace::Pid => "pid",
        }
    }
}

impl TryFrom<&str> for Namespace {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        [
            Namespace::Mount,
            Namespace::Ipc,
            Namespace::Uts,
            Namespace::Net,
            Namespace::Pid,
        ]
        .into_iter()
        .find(|n| n.name() == s)
        .ok_or_else(|| format!("`{s}` is not a namespace (one of mount, ipc, uts, net, pid)"))
    }
}

/// When a service counts as ready (so services `after` it may start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// A unix stream socket at this path accepts a connection.
    UnixSocket(PathBuf),
    /// A file appears at this path.
    File(PathBuf),
}

/// A seccomp profile (`seccomp = "default"` in the host file; the others are rampart's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompProfile {
    /// A deny list: kexec, module loading, reboot, swap, mount and friends fail with `EPERM`.
    Default,
    /// [`SeccompProfile::Default`] but `mount(2)` and `umount2(2)`, for a service that mounts
    /// with the classic calls (kubelet and the `rampart-mount` it runs); the new mount API,
    /// `pivot_root` and the rest stay refused.
    DefaultWithMount,
}

/// A Landlock ruleset: only these paths are reachable (beneath them), all else is denied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Landlock {
    /// Readable (and executable) beneath these paths.
    pub read_only: Vec<PathBuf>,
    /// Fully accessible beneath these paths.
    pub read_write: Vec<PathBuf>,
}

/// Restart backoff: exponential from `initial` to `max`, reset after `stable_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first delay.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub stable_after: Duration,
    /// This many restarts within `crash_loop_window` is a crash loop.
    pub crash_loop_restarts: u32,
    /// The window of the crash-loop count.
    pub crash_loop_window: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: DEFAULT_RESTART_DELAY,
            max: DEFAULT_RESTART_DELAY_MAX,
            stable_after: DEFAULT_STABLE_AFTER,
            crash_loop_restarts: DEFAULT_CRASH_LOOP_RESTARTS,
            crash_loop_window: DEFAULT_CRASH_LOOP_WINDOW,
        }
    }
}

/// cgroup v2 limits of the service's own cgroup; `None` leaves the kernel's default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// `memory.max`.
    pub memory_max: Option<Size>,
    /// `memory.high`.
    pub memory_high: Option<Size>,
    /// `pids.max`.
    pub pids_max: Option<u64>,
    /// `cpu.weight` (1 to 10000).
    pub cpu_weight: Option<u32>,
    /// `cpu.max`: `"max"` or `"QUOTA PERIOD"` in microseconds, normalised.
    pub cpu_max: Option<String>,
    /// `io.weight` (1 to 10000).
    pub io_weight: Option<u32>,
}

/// One `[[service]]`.
#[derive(Debug, Clone)]
pub struct Service {
    /// Unique name; also the name of its cgroup.
    pub name: ServiceName,
    /// The argv; `exec[0]` is an absolute path.
    pub exec: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Restart policy.
    pub restart: Restart,
    /// The action PID 1 takes when this service exits.
    pub on_exit: Option<Action>,
    /// Numeric user id; `None` = root (0).
    pub user: Option<u32>,
    /// Numeric group id; `None` = the user id's number.
    pub group: Option<u32>,
    /// Numeric supplementary groups (replacing PID 1's, which are none).
    pub supplementary_groups: Vec<u32>,
    /// The working directory (absolute).
    pub workdir: PathBuf,
    /// Restart delays and crash-loop detection.
    pub backoff: BackoffConfig,
    /// Services that must be ready before this one starts.
    pub after: Vec<ServiceName>,
    /// When this service counts as ready; `None` = as soon as it is started.
    pub ready: Option<Readiness>,
    /// How long `ready` may take.
    pub ready_timeout: Duration,
    /// The capabilities kept (sorted, unique); every other one is dropped from every set.
    pub capabilities: Vec<Capability>,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// The namespaces it gets (sorted, unique).
    pub namespaces: Vec<Namespace>,
    /// Whether its mount namespace sees the whole tree read-only (but `writable_paths`).
    pub read_only_root: bool,
    /// Paths bind-mounted writable in its mount namespace.
    pub writable_paths: Vec<PathBuf>,
    /// Folders PID 1 made shared mounts of the host before the services started. In the
    /// service's mount namespace they stay peers of the host's (the namespace is not made a
    /// slave) and writable, so what the service mounts beneath them reaches the host and every
    /// other service's namespace: kubelet's pod volumes, which containerd must see. Set by
    /// rampart (`[kubelet]`), not by the host file.
    pub shared_paths: Vec<PathBuf>,
    /// The seccomp filter.
    pub seccomp: Option<SeccompProfile>,
    /// The Landlock ruleset.
    pub landlock: Option<Landlock>,
    /// `/proc/self/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// The AppArmor profile it is started under (`exec NAME` written to
    /// `/proc/self/attr/apparmor/exec` before `execve`); `None`: unconfined.
    pub apparmor_profile: Option<String>,
    /// Its cgroup's limits.
    pub limits: Limits,
}

impl Service {
    /// A service with every optional key at its default (used by tests and tools).
    pub fn new(name: ServiceName, exec: Vec<String>) -> Self {
        Self {
            name,
            exec,
            env: BTreeMap::new(),
            restart: Restart::Never,
            on_exit: None,
            user: None,
            group: None,
            supplementary_groups: Vec::new(),
            workdir: PathBuf::from("/"),
            backoff: BackoffConfig::default(),
            after: Vec::new(),
            ready: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            capabilities: Vec::new(),
            no_new_privs: true,
            namespaces: vec![Namespace::Mount],
            read_only_root: true,
            writable_paths: Vec::new(),
            shared_paths: Vec::new(),
            seccomp: None,
            landlock: None,
            oom_score_adj: None,
            apparmor_profile: None,
            limits: Limits::default(),
        }
    }
}

/// A duration: a number of seconds, or a string such as `"500ms"`, `"2s"`, `"5m"`, `"1h"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawDuration {
    Secs(i64),
    Text(String),
}

/// Parses a [`RawDuration`].
pub fn parse_duration(raw: &RawDurationRef<'_>) -> Result<Duration, String> {
    match raw {
        RawDurationRef::Secs(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| format!("{n} is not a duration (seconds, or e.g. \"500ms\", \"2s\")")),
        RawDurationRef::Text(s) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (digits, unit) = t.split_at(split);
            let n: u64 = digits
                .parse()
                .map_err(|_| format!("`{s}` is not a duration (e.g. \"500ms\", \"2s\", \"5m\")"))?;
            let ms = match unit {
                "ms" => Some(n),
                "s" | "" => n.checked_mul(1000),
                "m" => n.checked_mul(60_000),
                "h" => n.checked_mul(3_600_000),
                _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m or h)")),
            };
            ms.map(Duration::from_millis)
                .ok_or_else(|| format!("`{s}` is too long"))
        }
    }
}

/// A borrowed view of a [`RawDuration`] (so the parser is public without the serde type).
#[derive(Debug, Clone, Copy)]
pub enum RawDurationRef<'a> {
    /// A number of seconds.
    Secs(i64),
    /// A string with a unit.
    Text(&'a str),
}

impl RawDuration {
    fn as_ref(&self) -> RawDurationRef<'_> {
        match self {
            RawDuration::Secs(n) => RawDurationRef::Secs(*n),
            RawDuration::Text(s) => RawDurationRef::Text(s),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCrashLoop {
    pub restarts: Option<Spanned<i64>>,
    pub window: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReady {
    pub unix_socket: Option<Spanned<String>>,
    pub file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLandlock {
    #[serde(default)]
    pub read_only: Vec<Spanned<String>>,
    #[serde(default)]
    pub read_write: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Spanned<String>,
    pub exec: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    pub restart: Option<RawRestart>,
    pub on_exit: Option<RawAction>,
    pub user: Option<Spanned<i64>>,
    pub group: Option<Spanned<i64>>,
    pub supplementary_groups: Option<Vec<Spanned<i64>>>,
    pub workdir: Option<Spanned<String>>,
    pub restart_delay: Option<Spanned<RawDuration>>,
    pub restart_delay_max: Option<Spanned<RawDuration>>,
    pub stable_after: Option<Spanned<RawDuration>>,
    pub crash_loop: Option<RawCrashLoop>,
    pub after: Option<Vec<Spanned<String>>>,
    pub ready: Option<Spanned<RawReady>>,
    pub ready_timeout: Option<Spanned<RawDuration>>,
    pub capabilities: Option<Vec<Spanned<String>>>,
    pub no_new_privs: Option<Spanned<bool>>,
    pub namespaces: Option<Vec<Spanned<String>>>,
    pub read_only_root: Option<Spanned<bool>>,
    pub writable_paths: Option<Vec<Spanned<String>>>,
    pub seccomp: Option<Spanned<String>>,
    pub landlock: Option<Spanned<RawLandlock>>,
    pub oom_score_adj: Option<Spanned<i64>>,
    pub apparmor_profile: Option<Spanned<String>>,
    pub memory_max: Option<Spanned<RawSize>>,
    pub memory_high: Option<Spanned<RawSize>>,
    pub pids_max: Option<Spanned<i64>>,
    pub cpu_weight: Option<Spanned<i64>>,
    pub cpu_max: Option<Spanned<String>>,
    pub io_weight: Option<Spanned<i64>>,
}

/// Checks a `cpu.max` value: `"max"`, `"max PERIOD"` or `"QUOTA PERIOD"`; returns it normalised.
pub fn parse_cpu_max(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{s}` is not a cpu.max value (\"max\" or \"QUOTA PERIOD\" in microseconds, quota >= 1000, period 1000 to 1000000)"
        )
    };
    let words: Vec<&str> = s.split_whitespace().collect();
    let (quota, period) = match words.as_slice() {
        [q] => (*q, "100000"),
        [q, p] => (*q, *p),
        _ => return Err(bad()),
    };
    let period: u64 = period.parse().map_err(|_| bad())?;
    if !(1000..=1_000_000).contains(&period) {
        return Err(bad());
    }
    if quota == "max" {
        return Ok(format!("max {period}"));
    }
    let quota: u64 = quota.parse().map_err(|_| bad())?;
    if quota < 1000 {
        return Err(bad());
    }
    Ok(format!("{quota} {period}"))
}

/// A path a service names: absolute and normalised (`/` allowed where `allow_root`).
fn service_path(s: &str, allow_root: bool) -> Result<PathBuf, String> {
    if allow_root && s == "/" {
        return Ok(PathBuf::from("/"));
    }
    types::image_path(s)
}

impl Validator<'_> {
    /// Validates every `[[service]]`, then the `after` graph across them.
    pub(crate) fn services(&mut self, raw: Vec<RawService>) -> Vec<Service> {
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        let mut after_spans = Vec::new();
        for (i, s) in raw.into_iter().enumerate() {
            let prefix = format!("service[{i}]");
            let name = self
                .check(&format!("{prefix}.name"), &s.name, |v| {
                    ServiceName::try_from(v)
                })
                .and_then(|n| {
                    if names.insert(n.clone()) {
                        Some(n)
                    } else {
                        self.report(
                            format!("{prefix}.name"),
                            s.name.span(),
                            format!("service `{n}` is defined twice"),
                        );
                        None
                    }
                });
            let spans: Vec<(String, std::ops::Range<usize>)> = s
                .after
                .iter()
                .flatten()
                .map(|a| (a.get_ref().clone(), a.span()))
                .collect();
            if let Some(service) = self.service(&prefix, s, name) {
                after_spans.push((i, spans));
                out.push(service);
            }
        }
        self.check_after(&out, &after_spans);
        out
    }

    fn service(
        &mut self,
        prefix: &str,
        s: RawService,
        name: Option<ServiceName>,
    ) -> Option<Service> {
        let exec_ok = self.check_exec(prefix, &s);
        let env = self.env(prefix, &s);
        let name = name?;
        let mut svc = Service::new(name, Vec::new());
        svc.exec = s
            .exec
            .get_ref()
            .iter()
            .map(|a| a.get_ref().clone())
            .collect();
        svc.env = env;
        svc.restart = match s.restart {
            None | Some(RawRestart::Never) => Restart::Never,
            Some(RawRestart::OnFailure) => Restart::OnFailure,
            Some(RawRestart::Always) => Restart::Always,
        };
        svc.on_exit = s.on_exit.map(crate::action);
        svc.user = s
            .user
            .as_ref()
            .and_then(|v| self.id(&format!("{prefix}.user"), v));
        svc.group = s
            .group
            .as_ref()
            .and_then(|v| self.id(&format!("{prefix}.group"), v));
        if let Some(groups) = &s.supplementary_groups {
            if groups.len() > MAX_GROUPS {
                if let Some(first) = groups.first() {
                    self.report(
                        format!("{prefix}.supplementary_groups"),
                        first.span(),
                        format!("at most {MAX_GROUPS} groups"),
                    );
                }
            }
            for (j, g) in groups.iter().enumerate() {
                if let Some(id) = self.id(&format!("{prefix}.supplementary_groups[{j}]"), g) {
                    if !svc.supplementary_groups.contains(&id) {
                        svc.supplementary_groups.push(id);
                    }
                }
            }
        }
        if let Some(w) = &s.workdir {
            if let Some(p) = self.check(&format!("{prefix}.workdir"), w, |v| service_path(v, true))
            {
                svc.workdir = p;
            }
        }
        self.backoff(prefix, &s, &mut svc.backoff);
        svc.after = self.after_names(prefix, &s);
        svc.ready = s.ready.as_ref().and_then(|r| self.ready(prefix, r));
        if let Some(t) = &s.ready_timeout {
            if let Some(d) = self.duration(&format!("{prefix}.ready_timeout"), t) {
                if d.is_zero() {
                    self.report(
                        format!("{prefix}.ready_timeout"),
                        t.span(),
                        "must be more than 0",
                    );
                } else {
                    svc.ready_timeout = d;
                }
            }
            if svc.ready.is_none() {
                self.report(
                    format!("{prefix}.ready_timeout"),
                    t.span(),
                    "needs a `ready` condition",
                );
            }
        }
        self.privileges(prefix, &s, &mut svc);
        self.limits(prefix, &s, &mut svc.limits);
        exec_ok.then_some(svc)
    }

    fn check_exec(&mut self, prefix: &str, s: &RawService) -> bool {
        let mut ok = true;
        match s.exec.get_ref().first() {
            None => {
                self.report(
                    format!("{prefix}.exec"),
                    s.exec.span(),
                    "must name a program (a non-empty list)",
                );
                ok = false;
            }
            Some(first) if !first.get_ref().starts_with('/') => {
                self.report(
                    format!("{prefix}.exec[0]"),
                    first.span(),
                    format!(
                        "`{}` must be an absolute path (PID 1 searches no PATH)",
                        first.get_ref()
                    ),
                );
                ok = false;
            }
            Some(_) => {}
        }
        for (j, a) in s.exec.get_ref().iter().enumerate() {
            if a.get_ref().contains('\0') {
                self.report(
                    format!("{prefix}.exec[{j}]"),
                    a.span(),
                    "must not contain a NUL byte",
                );
                ok = false;
            }
        }
        ok
    }

    fn env(&mut self, prefix: &str, s: &RawService) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (k, v) in &s.env {
            let key = format!("{prefix}.env.{}", k.get_ref());
            let kname = k.get_ref();
            let valid = kname
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && kname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.report(
                    &key,
                    k.span(),
                    format!("`{kname}` is not an environment variable name"),
                );
            } else if v.get_ref().contains('\0') {
                self.report(&key, v.span(), "must not contain a NUL byte");
            } else {
                env.insert(kname.clone(), v.get_ref().clone());
            }
        }
        env
    }

    /// A numeric user or group id (no names: PID 1 has no NSS).
    fn id(&mut self, key: &str, v: &Spanned<i64>) -> Option<u32> {
        match u32::try_from(*v.get_ref()) {
            Ok(id) if id != u32::MAX => Some(id),
            _ => {
                self.report(
                    key,
                    v.span(),
                    "must be a numeric id from 0 to 4294967294 (no names: PID 1 has no user database)",
                );
                None
            }
        }
    }

    fn duration(&mut self, key: &str, v: &Spanned<RawDuration>) -> Option<Duration> {
        match parse_duration(&v.get_ref().as_ref()) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.report(key, v.span(), msg);
                None
            }
        }
    }

    fn backoff(&mut self, prefix: &str, s: &RawService, b: &mut BackoffConfig) {
        let positive = |me: &mut Self, key: &str, v: &Option<Spanned<RawDuration>>| {
            let v = v.as_ref()?;
            let d = me.duration(&format!("{prefix}.{key}"), v)?;
            if d.is_zero() {
                me.report(format!("{prefix}.{key}"), v.span(), "must be more than 0");
                return None;
            }
            Some(d)
        };
        if let Some(d) = positive(self, "restart_delay", &s.restart_delay) {
            b.initial = d;
        }
        if let Some(d) = positive(self, "restart_delay_max", &s.restart_delay_max) {
            b.max = d;
        }
        if let Some(d) = positive(self, "stable_after", &s.stable_after) {
            b.stable_after = d;
        }
        if b.max < b.initial {
            let span = s
                .restart_delay_max
                .as_ref()
                .or(s.restart_delay.as_ref())
                .map(Spanned::span)
                .unwrap_or_default();
            self.report(
                format!("{prefix}.restart_delay_max"),
                span,
                format!(
                    "must not be less than restart_delay ({:?} < {:?})",
                    b.max, b.initial
                ),
            );
        }
        if let Some(c) = &s.crash_loop {
            if let Some(r) = &c.restarts {
                match u32::try_from(*r.get_ref()) {
                    Ok(n @ 1..=1000) => b.crash_loop_restarts = n,
                    _ => self.report(
                        format!("{prefix}.crash_loop.restarts"),
                        r.span(),
                        "must be a number from 1 to 1000",
                    ),
                }
            }
            if let Some(w) = positive(self, "crash_loop.window", &c.window) {
                b.crash_loop_window = w;
            }
        }
    }

    fn after_names(&mut self, prefix: &str, s: &RawService) -> Vec<ServiceName> {
        let mut out = Vec::new();
        for (j, a) in s.after.iter().flatten().enumerate() {
            let key = format!("{prefix}.after[{j}]");
            if let Some(n) = self.check(&key, a, |v| ServiceName::try_from(v)) {
                if a.get_ref() == s.name.get_ref() {
                    self.report(key, a.span(), "a service cannot start after itself");
                } else if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Every `after` entry names a defined service, and the graph has no cycle.
    fn check_after(&mut self, services: &[Service], spans: &[AfterSpans]) {
        let defined: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
        for (svc, (i, entries)) in services.iter().zip(spans) {
            for (j, (name, span)) in entries.iter().enumerate() {
                if ServiceName::try_from(name.as_str()).is_ok()
                    && name != svc.name.as_str()
                    && !defined.contains(name.as_str())
                {
                    self.report(
                        format!("service[{i}].after[{j}]"),
                        span.clone(),
                        format!("`{name}` is not a defined service"),
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(services) {
            let at = services
                .iter()
                .position(|s| cycle.first().is_some_and(|c| c == s.name.as_str()));
            let (i, span) = at
                .and_then(|p| spans.get(p))
                .map(|(i, e)| (*i, e.first().map(|(_, sp)| sp.clone()).unwrap_or_default()))
                .unwrap_or_default();
            self.report(
                format!("service[{i}].after"),
                span,
                format!("`after` forms a cycle: {}", cycle.join(" -> ")),
            );
        }
    }

    fn ready(&mut self, prefix: &str, r: &Spanned<RawReady>) -> Option<Readiness> {
        let key = format!("{prefix}.ready");
        match (&r.get_ref().unix_socket, &r.get_ref().file) {
            (Some(p), None) => self
                .check(&format!("{key}.unix_socket"), p, |v| service_path(v, false))
                .map(Readiness::UnixSocket),
            (None, Some(p)) => self
                .check(&format!("{key}.file"), p, |v| service_path(v, false))
                .map(Readiness::File),
            _ => {
                self.report(
                    key,
                    r.span(),
                    "must be exactly one of { unix_socket = \"PATH\" } or { file = \"PATH\" }",
                );
                None
            }
        }
    }

    fn path_list(&mut self, key: &str, list: &[Spanned<String>]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if list.len() > MAX_PATHS {
            if let Some(first) = list.first() {
                self.report(key, first.span(), format!("at most {MAX_PATHS} paths"));
            }
        }
        for (j, p) in list.iter().enumerate() {
            if let Some(path) = self.check(&format!("{key}[{j}]"), p, |v| service_path(v, true)) {
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
        out
    }

    fn privileges(&mut self, prefix: &str, s: &RawService, svc: &mut Service) {
        let mut caps = BTreeSet::new();
        for (j, c) in s.capabilities.iter().flatten().enumerate() {
            if let Some(cap) = self.check(&format!("{prefix}.capabilities[{j}]"), c, |v| {
                Capability::try_from(v)
            }) {
                caps.insert(cap);
            }
        }
        svc.capabilities = caps.into_iter().collect();
        svc.no_new_privs = s.no_new_privs.as_ref().is_none_or(|v| *v.get_ref());
        if let Some(list) = &s.namespaces {
            let mut set = BTreeSet::new();
            for (j, n) in list.iter().enumerate() {
                if let Some(ns) = self.check(&format!("{prefix}.namespaces[{j}]"), n, |v| {
                    Namespace::try_from(v)
                }) {
                    set.insert(ns);
                }
            }
            svc.namespaces = set.into_iter().collect();
        }
        let has_mount = svc.namespaces.contains(&Namespace::Mount);
        let need_mount = |me: &mut Self, key: &str, span: std::ops::Range<usize>| {
            if !has_mount {
                me.report(
                    format!("{prefix}.{key}"),
                    span,
                    "needs the mount namespace (add \"mount\" to namespaces)",
                );
            }
        };
        match &s.read_only_root {
            Some(v) => {
                svc.read_only_root = *v.get_ref();
                if svc.read_only_root {
                    need_mount(self, "read_only_root", v.span());
                }
            }
            None => svc.read_only_root = has_mount,
        }
        if let Some(list) = &s.writable_paths {
            svc.writable_paths = self.path_list(&format!("{prefix}.writable_paths"), list);
            if let Some(first) = list.first() {
                need_mount(self, "writable_paths", first.span());
            }
        }
        if svc.namespaces.contains(&Namespace::Pid) {
            if let Some(n) = s.namespaces.iter().flatten().find(|n| n.get_ref() == "pid") {
                need_mount(self, "namespaces", n.span());
            }
        }
        let no_nnp = |me: &mut Self, key: &str, span: std::ops::Range<usize>, nnp: bool| {
            if !nnp {
                me.report(
                    format!("{prefix}.{key}"),
                    span,
                    "needs no_new_privs = true (the kernel requires it for unprivileged filters)",
                );
            }
        };
        if let Some(v) = &s.seccomp {
            if v.get_ref() == "default" {
                svc.seccomp = Some(SeccompProfile::Default);
                no_nnp(self, "seccomp", v.span(), svc.no_new_privs);
            } else {
                self.report(
                    format!("{prefix}.seccomp"),
                    v.span(),
                    format!(
                        "`{}` is not a seccomp profile (only \"default\")",
                        v.get_ref()
                    ),
                );
            }
        }
        if let Some(l) = &s.landlock {
            let read_only = self.path_list(
                &format!("{prefix}.landlock.read_only"),
                &l.get_ref().read_only,
            );
            let read_write = self.path_list(
                &format!("{prefix}.landlock.read_write"),
                &l.get_ref().read_write,
            );
            no_nnp(self, "landlock", l.span(), svc.no_new_privs);
            svc.landlock = Some(Landlock {
                read_only,
                read_write,
            });
        }
        if let Some(v) = &s.apparmor_profile {
            svc.apparmor_profile = self.check(&format!("{prefix}.apparmor_profile"), v, |p| {
                crate::hardening::check_profile_name(p).map(|()| p.to_owned())
            });
        }
        if let Some(v) = &s.oom_score_adj {
            match i32::try_from(*v.get_ref()) {
                Ok(n @ -1000..=1000) => svc.oom_score_adj = Some(n),
                _ => self.report(
                    format!("{prefix}.oom_score_adj"),
                    v.span(),
                    "must be a number from -1000 to 1000",
                ),
            }
        }
    }

    fn limits(&mut self, prefix: &str, s: &RawService, l: &mut Limits) {
        let size = |me: &mut Self, key: &str, raw: &Option<Spanned<RawSize>>| {
            let raw = raw.as_ref()?;
            let parsed = match raw.get_ref() {
                RawSize::Bytes(n) => u64::try_from(*n)
                    .map_err(|_| format!("{n} is not a size"))
                    .and_then(Size::from_bytes),
                RawSize::Text(t) => Size::parse(t),
            };
            match parsed {
                Ok(v) => Some(v),
                Err(msg) => {
                    me.report(format!("{prefix}.{key}"), raw.span(), msg);
                    None
                }
            }
        };
        l.memory_max = size(self, "memory_max", &s.memory_max);
        l.memory_high = size(self, "memory_high", &s.memory_high);
        if let Some(v) = &s.pids_max {
            match u64::try_from(*v.get_ref()) {
                Ok(n) if n >= 1 => l.pids_max = Some(n),
                _ => self.report(format!("{prefix}.pids_max"), v.span(), "must be at least 1"),
            }
        }
        let weight = |me: &mut Self, key: &str, v: &Option<Spanned<i64>>| {
            let v = v.as_ref()?;
            match u32::try_from(*v.get_ref()) {
                Ok(n @ 1..=10000) => Some(n),
                _ => {
                    me.report(
                        format!("{prefix}.{key}"),
                        v.span(),
                        "must be a number from 1 to 10000",
                    );
                    None
                }
            }
        };
        l.cpu_weight = weight(self, "cpu_weight", &s.cpu_weight);
        l.io_weight = weight(self, "io_weight", &s.io_weight);
        l.cpu_max = s
            .cpu_max
            .as_ref()
            .and_then(|v| self.check(&format!("{prefix}.cpu_max"), v, parse_cpu_max));
    }
}

/// Where each `after` entry of service number `.0` sits in the file.
type AfterSpans = (usize, Vec<(String, std::ops::Range<usize>)>);

/// A cycle in the `after` graph, as service names (first repeated at the end), if any.
fn find_cycle(services: &[Service]) -> Option<Vec<String>> {
    let edges: BTreeMap<&str, Vec<&str>> = services
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.after.iter().map(ServiceName::as_str).collect(),
            )
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    for start in edges.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(start, &edges, &mut state, &mut path) {
            return Some(c);
        }
    }
    None
}

fn visit<'a>(
    node: &'a str,
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    state: &mut BTreeMap<&'a str, u8>,
    path: &mut Vec<&'a str>,
) -> Option<Vec<String>> {
    match state.get(node) {
        Some(2) => return None,
        Some(1) => {
            let from = path.iter().position(|n| *n == node).unwrap_or(0);
            let mut cycle: Vec<String> = path.iter().skip(from).map(|s| (*s).to_owned()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        _ => {}
    }
    state.insert(node, 1);
    path.push(node);
    for next in edges.get(node).into_iter().flatten() {
        if edges.contains_key(next) {
            if let Some(c) = visit(next, edges, state, path) {
                return Some(c);
            }
        }
    }
    path.pop();
    state.insert(node, 2);
    None
}

#[cfg(test)]
mod tests;
