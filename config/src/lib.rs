//! rampart-config: the host TOML schema and its validation.
//!
//! One TOML file describes a rampart host. It is read in two steps: serde structs that refuse
//! unknown keys ([`raw`]), then validation into types that cannot hold a bad value
//! ([`types`]). Every problem names the key, the line and column, and the reason; validation
//! collects all problems it can find in one pass. Both `rampart-init` and `rampart-image`
//! read hosts through this crate. Every key is documented in `docs/config.md`.

pub mod containerd;
pub mod cri;
mod error;
pub mod firewall;
pub mod hardening;
pub mod kubelet;
pub mod network;
pub mod oci;
pub mod operate;
pub mod policy;
mod raw;
pub mod service;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use containerd::Containerd;
pub use error::{ConfigError, Problem};
pub use firewall::Firewall;
pub use hardening::{Hardening, IMAGE_CMDLINE_PATH};
pub use kubelet::Kubelet;
pub use network::Network;
pub use operate::{Control, Logs, Metrics};
pub use policy::ContainerPolicy;
pub use service::{
    BackoffConfig, Capability, Landlock, Limits, Namespace, Readiness, SeccompProfile, Service,
};
pub use types::{Action, Hostname, ModuleName, Restart, ServiceName, Size, SysctlKey, SysctlValue};

use error::LineIndex;
use raw::{RawAction, RawSize, RawSysctlValue};
use toml::Spanned;

/// The kernel command line used when `[boot] cmdline` is not given.
pub const DEFAULT_CMDLINE: &[&str] = &["console=ttyS0", "panic=-1", "loglevel=4"];
/// Where the host file lives inside an image.
pub const IMAGE_CONFIG_PATH: &str = "/etc/rampart/host.toml";
/// Where the ordered list of boot modules lives inside an image.
pub const IMAGE_MODULES_PATH: &str = "/etc/rampart/modules";

/// A validated host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// `[host]`.
    pub host: Host,
    /// `[boot]`.
    pub boot: Boot,
    /// `[kernel]`.
    pub kernel: Kernel,
    /// `[mounts]`.
    pub mounts: Mounts,
    /// `[image]`.
    pub image: Image,
    /// `[[service]]`, in file order.
    pub services: Vec<Service>,
    /// `[firewall]`: the nftables policy.
    pub firewall: Firewall,
    /// `[container_policy]`: what `rampart-runc` holds every container to.
    pub container_policy: ContainerPolicy,
    /// `[network]`: interfaces, routes, resolvers (the firewall above already follows it).
    pub network: Network,
    /// `[hardening]`: LSMs, lockdown, the hardened command line, enforce or warn.
    pub hardening: Hardening,
    /// `[containerd]`: containerd's runtime pieces and generated config in the image.
    pub containerd: Containerd,
    /// `[control]`: the control socket's bounds and the host channel.
    pub control: Control,
    /// `[logs]`: PID 1's log ring and the remote collectors (the firewall above opens them).
    pub logs: Logs,
    /// `[metrics]`: the Prometheus endpoint (the firewall above opens it when enabled).
    pub metrics: Metrics,
    /// `[kubelet]`: kubelet as a supervised service (its sysctls are in `kernel` above).
    pub kubelet: Kubelet,
}

/// `[host]`: identity.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host name set with sethostname(2).
    pub hostname: String,
}

/// `[boot]`: boot and shutdown behaviour.
#[derive(Debug, Clone)]
pub struct Boot {
    /// What PID 1 does when a boot step fails.
    pub failure_action: Action,
    /// How long services get between SIGTERM and SIGKILL at shutdown.
    pub shutdown_timeout: Duration,
    /// The kernel command line baked into the image, one item per entry.
    pub cmdline: Vec<String>,
}

/// `[kernel]`: modules and sysctls.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Modules loaded at boot (with their dependencies), in the order given.
    pub modules: Vec<ModuleName>,
    /// Whether the built-in KSPP and CIS sysctl baseline is applied.
    pub sysctl_baseline: bool,
    /// Sysctls set on top of the baseline (overriding the same key), sorted by key.
    pub sysctl: Vec<(SysctlKey, SysctlValue)>,
    /// Whether module loading is disabled (`kernel.modules_disabled=1`) once boot modules are in.
    pub lock_modules: bool,
}

/// `[mounts]`: size limits of the writable tmpfs mounts.
#[derive(Debug, Clone)]
pub struct Mounts {
    /// `/run`.
    pub run_size: Size,
    /// `/tmp` and `/var/tmp`.
    pub tmp_size: Size,
    /// `/var` and the tmpfs mounts below it.
    pub var_size: Size,
}

/// `[image]`: what `rampart-image` puts into the image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel (`vmlinuz`), resolved relative to the host file.
    pub kernel: Option<PathBuf>,
    /// The kernel's modules directory (`lib/modules/RELEASE`), resolved relative to the host file.
    pub modules: Option<PathBuf>,
    /// Extra files.
    pub files: Vec<ImageFile>,
    /// `[[image.oci]]`: OCI image archives built from one static binary each.
    pub oci: Vec<oci::OciImage>,
}

/// One `[[image.files]]` entry.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Where the file comes from on the build machine (absolute).
    pub source: PathBuf,
    /// Where it goes in the image (absolute, normalised).
    pub target: PathBuf,
    /// Its mode in the image; the source's mode when absent.
    pub mode: Option<u32>,
}

/// Reads and validates a host file. Relative paths in `[image]` are resolved against its folder.
pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates host TOML text. `origin` names the file in messages; its parent folder is the base
/// for relative paths in `[image]`.
pub fn parse(text: &str, origin: &Path) -> Result<HostConfig, ConfigError> {
    let index = LineIndex::new(text);
    let invalid = |problems| ConfigError::Invalid {
        path: origin.to_path_buf(),
        problems,
    };
    let raw: raw::RawHost = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span();
            let (line, column) = span
                .as_ref()
                .map_or((0, 0), |s| index.position(text, s.start));
            let key = span
                .as_ref()
                .map_or_else(|| "(file)".to_owned(), |s| key_at(text, s.clone()));
            let message = e.message().trim().replace('\n', " ");
            return Err(invalid(vec![Problem {
                key,
                line,
                column,
                message,
            }]));
        }
    };
    let base = origin
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut v = Validator {
        text,
        index: &index,
        problems: Vec::new(),
    };
    let cfg = v.host(raw, &base);
    if v.problems.is_empty() {
        Ok(cfg)
    } else {
        Err(invalid(v.problems))
    }
}

struct Validator<'a> {
    text: &'a str,
    index: &'a LineIndex,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn report(&mut self, key: impl Into<String>, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.index.position(self.text, span.start);
        self.problems.push(Problem {
            key: key.into(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Runs a `TryFrom`-style check on a spanned value, reporting a failure.
    fn check<T>(
        &mut self,
        key: &str,
        value: &Spanned<String>,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(value.get_ref()) {
            Ok(t) => Some(t),
            Err(msg) => {
                self.report(key, value.span(), msg);
                None
            }
        }
    }

    fn host(&mut self, raw: raw::RawHost, base: &Path) -> HostConfig {
        let cross = hardening::CrossCheck::capture(&raw);
        let hostname = raw
            .host
            .hostname
            .as_ref()
            .and_then(|h| self.check("host.hostname", h, |s| Hostname::try_from(s)))
            .map_or_else(|| "rampart".to_owned(), |h| h.as_str().to_owned());
        let boot = self.boot(raw.boot);
        let mut kernel = self.kernel(raw.kernel);
        let mounts = self.mounts(raw.mounts);
        let image = self.image(raw.image, base);
        self.reserved_service_names(&raw.services);
        let services = self.services(raw.services);
        let firewall = self.firewall(raw.firewall);
        let container_policy = self.container_policy(raw.container_policy);
        let containerd = self.containerd(raw.containerd, &firewall, &kernel, &services);
        let kubelet = self.kubelet(
            raw.kubelet,
            base,
            &containerd,
            &services,
            &kernel,
            &image.files,
        );
        let hardening = self.hardening(raw.hardening, &cross, &container_policy);
        let service_names: Vec<String> = services
            .iter()
            .map(|s| s.name.as_str().to_owned())
            .collect();
        let network = self.network(raw.network, &service_names);
        let mut firewall = firewall;
        network::merge_into_firewall(&network, &mut firewall);
        cri::merge_pod_network(&containerd, &mut firewall, &mut kernel);
        let control = self.control(raw.control);
        let logs = self.logs(raw.logs);
        let metrics = self.metrics(raw.metrics);
        operate::merge_into_firewall(&logs, &metrics, &mut firewall);
        kubelet::merge_kernel_defaults(&kubelet, &mut kernel);
        HostConfig {
            host: Host { hostname },
            boot,
            kernel,
            mounts,
            image,
            services,
            firewall,
            container_policy,
            network,
            hardening,
            containerd,
            control,
            logs,
            metrics,
            kubelet,
        }
    }

    fn boot(&mut self, raw: raw::RawBoot) -> Boot {
        let shutdown_timeout = match raw.shutdown_timeout {
            None => Duration::from_secs(10),
            Some(t) => match u64::try_from(*t.get_ref()) {
                Ok(secs @ 1..=600) => Duration::from_secs(secs),
                _ => {
                    self.report(
                        "boot.shutdown_timeout",
                        t.span(),
                        "must be a number of seconds from 1 to 600",
                    );
                    Duration::from_secs(10)
                }
            },
        };
        let cmdline = match raw.cmdline {
            None => DEFAULT_CMDLINE.iter().map(|s| (*s).to_owned()).collect(),
            Some(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let s = item.get_ref();
                    if s.is_empty()
                        || s.chars()
                            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
                    {
                        self.report(
                            format!("boot.cmdline[{i}]"),
                            item.span(),
                            format!("`{s}` is not one command-line item (no spaces, quotes or control characters)"),
                        );
                    } else {
                        out.push(s.clone());
                    }
                }
                out
            }
        };
        Boot {
            failure_action: raw.failure_action.map_or(Action::Poweroff, action),
            shutdown_timeout,
            cmdline,
        }
    }

    fn kernel(&mut self, raw: raw::RawKernel) -> Kernel {
        let mut modules = Vec::new();
        for (i, m) in raw.modules.unwrap_or_default().iter().enumerate() {
            let key = format!("kernel.modules[{i}]");
            if let Some(name) = self.check(&key, m, |s| ModuleName::try_from(s)) {
                if modules.contains(&name) {
                    self.report(key, m.span(), format!("module `{name}` is listed twice"));
                } else {
                    modules.push(name);
                }
            }
        }
        let mut sysctl = Vec::new();
        for (k, v) in raw.sysctl.unwrap_or_default() {
            let key_name = format!("kernel.sysctl.\"{}\"", k.get_ref());
            let key = self.check(&key_name, &k, |s| SysctlKey::try_from(s));
            let span = v.span();
            let text = match v.into_inner() {
                RawSysctlValue::Int(n) => n.to_string(),
                RawSysctlValue::Str(s) => s,
            };
            let value = match SysctlValue::try_from(text.as_str()) {
                Ok(v) => Some(v),
                Err(msg) => {
                    self.report(&key_name, span, msg);
                    None
                }
            };
            if let (Some(k), Some(v)) = (key, value) {
                sysctl.push((k, v));
            }
        }
        Kernel {
            modules,
            sysctl_baseline: raw.sysctl_baseline.unwrap_or(true),
            sysctl,
            lock_modules: raw.lock_modules.unwrap_or(true),
        }
    }

    fn size(&mut self, key: &str, raw: Option<Spanned<RawSize>>, default: u64) -> Size {
        let fallback = Size::from_mib(default >> 20);
        let Some(raw) = raw else { return fallback };
        let span = raw.span();
        let parsed = match raw.into_inner() {
            RawSize::Bytes(n) => u64::try_from(n)
                .map_err(|_| format!("{n} is not a size"))
                .and_then(Size::from_bytes),
            RawSize::Text(s) => Size::parse(&s),
        };
        parsed.unwrap_or_else(|msg| {
            self.report(key, span, msg);
            fallback
        })
    }

    fn mounts(&mut self, raw: raw::RawMounts) -> Mounts {
        Mounts {
            run_size: self.size("mounts.run_size", raw.run_size, 64 << 20),
            tmp_size: self.size("mounts.tmp_size", raw.tmp_size, 256 << 20),
            var_size: self.size("mounts.var_size", raw.var_size, 1 << 30),
        }
    }

    fn image(&mut self, raw: raw::RawImage, base: &Path) -> Image {
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let nonempty = |key: &str, v: &Spanned<String>, me: &mut Self| -> Option<PathBuf> {
            if v.get_ref().is_empty() {
                me.report(key, v.span(), "must not be empty");
                None
            } else {
                Some(resolve(v.get_ref()))
            }
        };
        let kernel = raw
            .kernel
            .as_ref()
            .and_then(|k| nonempty("image.kernel", k, self));
        let modules = raw
            .modules
            .as_ref()
            .and_then(|m| nonempty("image.modules", m, self));
        let reserved: BTreeSet<&str> = [
            "/init",
            "/sbin/init",
            IMAGE_CONFIG_PATH,
            IMAGE_MODULES_PATH,
            IMAGE_CMDLINE_PATH,
            "/dev/console",
        ]
        .into_iter()
        .collect();
        let mut targets = BTreeSet::new();
        let mut files = Vec::new();
        for (i, f) in raw.files.iter().enumerate() {
            let source = nonempty(&format!("image.files[{i}].source"), &f.source, self);
            let tkey = format!("image.files[{i}].target");
            let target = self
                .check(&tkey, &f.target, types::image_path)
                .and_then(|t| {
                    let s = t.to_string_lossy().into_owned();
                    if reserved.contains(s.as_str()) {
                        self.report(
                            &tkey,
                            f.target.span(),
                            format!("`{s}` is written by rampart-image itself"),
                        );
                        None
                    } else if !targets.insert(s.clone()) {
                        self.report(
                            &tkey,
                            f.target.span(),
                            format!("`{s}` is the target of another entry"),
                        );
                        None
                    } else {
                        Some(t)
                    }
                });
            let mode = match &f.mode {
                None => None,
                Some(m) => match u32::try_from(*m.get_ref()) {
                    Ok(mode) if mode <= 0o7777 => Some(mode),
                    _ => {
                        self.report(
                            format!("image.files[{i}].mode"),
                            m.span(),
                            "must be a file mode from 0 to 0o7777 (write it as 0o755)",
                        );
                        None
                    }
                },
            };
            if let (Some(source), Some(target)) = (source, target) {
                files.push(ImageFile {
                    source,
                    target,
                    mode,
                });
            }
        }
        let oci = self.oci(&raw.oci, base);
        Image {
            kernel,
            modules,
            files,
            oci,
        }
    }
}

fn action(a: RawAction) -> Action {
    match a {
        RawAction::Poweroff => Action::Poweroff,
        RawAction::Reboot => Action::Reboot,
        RawAction::Halt => Action::Halt,
    }
}

/// Names the key at `span` for a serde error: the enclosing table header plus the key text.
fn key_at(text: &str, span: Range<usize>) -> String {
    let at_header = text.get(span.start..).is_some_and(|t| t.starts_with('['));
    if at_header {
        // A whole table is blamed (e.g. a missing field): name the table itself.
        let end = text
            .get(span.start..)
            .and_then(|t| t.find('\n'))
            .map_or(text.len(), |i| span.start + i);
        return key_at(text, end..end);
    }
    let before = text.get(..span.start).unwrap_or("");
    let mut table = String::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in before.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
        }
    }
    let here = text.get(span).unwrap_or("").trim();
    let looks_like_key = !here.is_empty()
        && here.len() < 80
        && here
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '"');
    // A span that starts a line inside a table is a key; otherwise it is a value: name the
    // key of that line.
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_prefix = text.get(line_start..).unwrap_or("");
    let line_key = line_prefix
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.starts_with('['))
        .unwrap_or("");
    let key = if looks_like_key && !before.get(line_start..).unwrap_or("").contains('=') {
        here
    } else {
        line_key
    };
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(file)".to_owned(),
        (true, false) => key.to_owned(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests;
