//! `[hardening]`: the kernel hardening a host proves at every boot.
//!
//! Required LSMs, the lockdown level, the hardened kernel command line (KSPP items that boot on
//! Debian's 6.1 kernel, each removable, plus additions), module signature enforcement, Yama's
//! `ptrace_scope`, `user.max_user_namespaces`, and per-step `enforce` / `warn` modes. The
//! final kernel command line is `[boot] cmdline`, then the hardened items ([`hardened_cmdline`])
//! minus `cmdline_remove`, then `cmdline_add`; `rampart-image` writes it (`DIR/cmdline` and
//! `/etc/rampart/cmdline` in the image), and `rampart-init` checks it at boot. Every key is
//! documented in `docs/config.md` and `docs/hardening.md`.
//!
//! Cross-section rules checked here: `max_user_namespaces = 0` with
//! `[container_policy] user_namespaces = "required"` is an error; `kernel.yama.ptrace_scope`
//! and `user.max_user_namespaces` belong to this section, not to `[kernel.sysctl]`; a
//! `[boot] cmdline` or `cmdline_add` item must not set a key the hardened line already sets.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{ContainerPolicy, UserNamespaces};
use crate::Validator;

/// Where the expected kernel command line lives inside an image, one item per line.
pub const IMAGE_CMDLINE_PATH: &str = "/etc/rampart/cmdline";

/// Where the compiled AppArmor profiles live inside an image (`NAME.bin`, loaded at boot
/// when `apparmor` is in `lsm`).
pub const IMAGE_APPARMOR_DIR: &str = "/etc/rampart/apparmor";

/// Checks an AppArmor profile name (`[[service]] apparmor_profile`,
/// `[container_policy] apparmor_profile`): 1 to 64 characters out of letters, digits, `-`,
/// `_` and `.`, not starting with `.` or `-`.
pub fn check_profile_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with(['.', '-']) {
        return Err(format!(
            "`{name}` is not an AppArmor profile name (1 to 64 letters, digits, `-`, `_`, `.`)"
        ));
    }
    Ok(())
}

/// The LSMs required when `lsm` is not given.
pub const DEFAULT_LSMS: &[&str] = &["landlock", "lockdown", "yama", "apparmor"];

/// LSM names the kernel knows (as in `/sys/kernel/security/lsm`).
pub const KNOWN_LSMS: &[&str] = &[
    "capability",
    "landlock",
    "lockdown",
    "yama",
    "apparmor",
    "selinux",
    "smack",
    "tomoyo",
    "bpf",
    "loadpin",
    "safesetid",
    "integrity",
    "ipe",
];

/// One fixed item of the hardened command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdlineItem {
    /// The item as written on the command line.
    pub item: &'static str,
    /// Where it comes from.
    pub reference: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

const fn c(item: &'static str, reference: &'static str, meaning: &'static str) -> CmdlineItem {
    CmdlineItem {
        item,
        reference,
        meaning,
    }
}

/// The fixed KSPP items of the hardened command line, in order. `lockdown=`,
/// `module.sig_enforce=1` and `lsm=` follow them, from their own keys. `iommu=force` is
/// not here: it is for metal (add it with `cmdline_add`).
pub const HARDENED_CMDLINE: &[CmdlineItem] = &[
    c(
        "slab_nomerge",
        "KSPP",
        "no slab cache merging (heap overflows stay in their cache)",
    ),
    c(
        "init_on_alloc=1",
        "KSPP",
        "zero pages and heap objects on allocation",
    ),
    c(
        "init_on_free=1",
        "KSPP",
        "zero pages and heap objects when freed",
    ),
    c(
        "page_alloc.shuffle=1",
        "KSPP",
        "randomise the page allocator free lists",
    ),
    c("pti=on", "KSPP", "kernel page-table isolation (Meltdown)"),
    c(
        "randomize_kstack_offset=on",
        "KSPP",
        "random kernel stack offset per system call",
    ),
    c(
        "vsyscall=none",
        "KSPP",
        "no legacy vsyscall page at a fixed address",
    ),
    c("debugfs=off", "KSPP", "no debugfs"),
    c(
        "oops=panic",
        "KSPP",
        "an oops panics instead of continuing in a bad state",
    ),
];

/// The key of a command-line item: the text before the first `=` (`init_on_free` for
/// `init_on_free=1`, `slab_nomerge` for `slab_nomerge`).
pub fn cmdline_key(item: &str) -> &str {
    item.split_once('=').map_or(item, |(k, _)| k)
}

/// Keys set by their own `[hardening]` key, not removable with `cmdline_remove`.
pub const MANAGED_KEYS: &[(&str, &str)] = &[
    ("lsm", "hardening.lsm"),
    ("lockdown", "hardening.lockdown"),
    ("module.sig_enforce", "hardening.module_sig_enforce"),
];

/// The kernel lockdown level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lockdown {
    /// No lockdown.
    None,
    /// Integrity: nothing may modify the running kernel (unsigned modules, /dev/mem, kexec of
    /// unsigned images, ...).
    Integrity,
    /// Confidentiality: integrity, and nothing may read kernel memory (breaks eBPF tracing).
    Confidentiality,
}

impl Lockdown {
    /// The name used in the config, on the command line and in securityfs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lockdown::None => "none",
            Lockdown::Integrity => "integrity",
            Lockdown::Confidentiality => "confidentiality",
        }
    }

    /// Parses a level name.
    pub fn parse(s: &str) -> Option<Lockdown> {
        match s {
            "none" => Some(Lockdown::None),
            "integrity" => Some(Lockdown::Integrity),
            "confidentiality" => Some(Lockdown::Confidentiality),
            _ => None,
        }
    }
}

impl fmt::Display for Lockdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hardening step does when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Fail closed: no service starts, the host takes its failure action.
    Enforce,
    /// Log a warning on the console and go on.
    Warn,
}

impl Mode {
    /// `enforce` or `warn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[hardening.mode]`: one mode per hardening step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// The required-LSM check.
    pub lsm: Mode,
    /// Setting and checking the lockdown level.
    pub lockdown: Mode,
    /// Checking that the running command line has every item the image asked for (the one
    /// step that defaults to `warn`: a boot loader may legitimately add to the line).
    pub cmdline: Mode,
    /// The sysctls (baseline, overrides, `ptrace_scope`, `max_user_namespaces`;
    /// `kernel.kexec_load_disabled` is one of them).
    pub sysctl: Mode,
    /// `kernel.modules_disabled=1` after the boot modules.
    pub lock_modules: Mode,
    /// The compliance self-check run as the last boot step.
    pub audit: Mode,
    /// Loading the image's AppArmor profiles (when `apparmor` is in `lsm`).
    pub apparmor: Mode,
}

impl Default for Modes {
    fn default() -> Self {
        Modes {
            lsm: Mode::Enforce,
            lockdown: Mode::Enforce,
            cmdline: Mode::Warn,
            sysctl: Mode::Enforce,
            lock_modules: Mode::Enforce,
            audit: Mode::Enforce,
            apparmor: Mode::Enforce,
        }
    }
}

/// `[hardening]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// LSMs that must be active (in `/sys/kernel/security/lsm`); also the `lsm=` item, in
    /// this order. Empty: no check and no `lsm=` item.
    pub lsm: Vec<String>,
    /// The lockdown level set at boot (and `lockdown=` on the command line unless `none`).
    pub lockdown: Lockdown,
    /// Whether `module.sig_enforce=1` is on the command line (only signed modules load).
    pub module_sig_enforce: bool,
    /// `kernel.yama.ptrace_scope` (0 to 3).
    pub ptrace_scope: u8,
    /// `user.max_user_namespaces`; `None` leaves the kernel default.
    pub max_user_namespaces: Option<u64>,
    /// Keys of [`HARDENED_CMDLINE`] items left out of the command line.
    pub cmdline_remove: Vec<String>,
    /// Items appended to the command line.
    pub cmdline_add: Vec<String>,
    /// Enforce or warn, per step.
    pub mode: Modes,
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            lsm: DEFAULT_LSMS.iter().map(|s| (*s).to_owned()).collect(),
            lockdown: Lockdown::Integrity,
            module_sig_enforce: true,
            ptrace_scope: 2,
            max_user_namespaces: Some(0),
            cmdline_remove: Vec::new(),
            cmdline_add: Vec::new(),
            mode: Modes::default(),
        }
    }
}

/// One item of the hardened part of the command line with its reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardenedItem {
    /// The item.
    pub item: String,
    /// Where it comes from (`KSPP`, ...).
    pub reference: String,
}

/// The hardened items for `h`: the fixed KSPP items not removed, then `lockdown=LEVEL`
/// (unless `none`), `module.sig_enforce=1` (when on) and `lsm=A,B,...` (when LSMs are
/// required), in that order. `cmdline_add` is not included.
pub fn hardened_cmdline(h: &Hardening) -> Vec<HardenedItem> {
    let mut out: Vec<HardenedItem> = HARDENED_CMDLINE
        .iter()
        .filter(|i| !h.cmdline_remove.iter().any(|r| r == cmdline_key(i.item)))
        .map(|i| HardenedItem {
            item: i.item.to_owned(),
            reference: i.reference.to_owned(),
        })
        .collect();
    if h.lockdown != Lockdown::None {
        out.push(HardenedItem {
            item: format!("lockdown={}", h.lockdown),
            reference: "KSPP".to_owned(),
        });
    }
    if h.module_sig_enforce {
        out.push(HardenedItem {
            item: "module.sig_enforce=1".to_owned(),
            reference: "KSPP".to_owned(),
        });
    }
    if !h.lsm.is_empty() {
        out.push(HardenedItem {
            item: format!("lsm={}", h.lsm.join(",")),
            reference: "KSPP".to_owned(),
        });
    }
    out
}

/// `[hardening]` as serde sees it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHardening {
    pub lsm: Option<Vec<Spanned<String>>>,
    pub lockdown: Option<Spanned<String>>,
    pub module_sig_enforce: Option<bool>,
    pub ptrace_scope: Option<Spanned<i64>>,
    pub max_user_namespaces: Option<Spanned<i64>>,
    #[serde(default)]
    pub cmdline_remove: Vec<Spanned<String>>,
    #[serde(default)]
    pub cmdline_add: Vec<Spanned<String>>,
    #[serde(default)]
    pub mode: RawModes,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModes {
    pub lsm: Option<Spanned<String>>,
    pub lockdown: Option<Spanned<String>>,
    pub cmdline: Option<Spanned<String>>,
    pub sysctl: Option<Spanned<String>>,
    pub lock_modules: Option<Spanned<String>>,
    pub audit: Option<Spanned<String>>,
    pub apparmor: Option<Spanned<String>>,
}

/// What other sections said that `[hardening]` must agree with, taken from the raw file
/// before the other sections are validated (the spans point at the offending entries).
#[derive(Debug, Default)]
pub(crate) struct CrossCheck {
    boot_cmdline: Vec<Spanned<String>>,
    /// `[kernel.sysctl]` entries for the keys this section owns: (key, value text, value span).
    sysctls: Vec<(Spanned<String>, String, std::ops::Range<usize>)>,
}

/// The sysctls this section sets, with the `[hardening]` key that sets each.
const OWNED_SYSCTLS: &[(&str, &str)] = &[
    ("kernel.yama.ptrace_scope", "hardening.ptrace_scope"),
    ("user.max_user_namespaces", "hardening.max_user_namespaces"),
];

impl CrossCheck {
    /// Copies the `[boot] cmdline` items and the `[kernel.sysctl]` keys.
    pub(crate) fn capture(raw: &crate::raw::RawHost) -> Self {
        CrossCheck {
            boot_cmdline: raw.boot.cmdline.clone().unwrap_or_default(),
            sysctls: raw
                .kernel
                .sysctl
                .iter()
                .flatten()
                .filter(|(k, _)| OWNED_SYSCTLS.iter().any(|(o, _)| o == k.get_ref()))
                .map(|(k, v)| {
                    let text = match v.get_ref() {
                        crate::raw::RawSysctlValue::Int(n) => n.to_string(),
                        crate::raw::RawSysctlValue::Str(s) => s.trim().to_owned(),
                    };
                    (k.clone(), text, v.span())
                })
                .collect(),
        }
    }
}

/// Whether `s` is one command-line item (the same rule as `[boot] cmdline`).
fn is_cmdline_item(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
}

/// Keys of the hardened line for `h` (fixed items kept, plus the managed ones in use).
fn hardened_keys(h: &Hardening) -> Vec<String> {
    hardened_cmdline(h)
        .iter()
        .map(|i| cmdline_key(&i.item).to_owned())
        .collect()
}

impl Validator<'_> {
    fn mode(&mut self, key: &str, v: &Option<Spanned<String>>, default: Mode) -> Mode {
        v.as_ref()
            .and_then(|v| {
                self.check(key, v, |s| match s {
                    "enforce" => Ok(Mode::Enforce),
                    "warn" => Ok(Mode::Warn),
                    _ => Err(format!("`{s}` is not one of \"enforce\", \"warn\"")),
                })
            })
            .unwrap_or(default)
    }

    pub(crate) fn hardening(
        &mut self,
        raw: RawHardening,
        cross: &CrossCheck,
        policy: &ContainerPolicy,
    ) -> Hardening {
        let d = Hardening::default();
        let lsm = match &raw.lsm {
            None => d.lsm.clone(),
            Some(items) => {
                let mut out: Vec<String> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key = format!("hardening.lsm[{i}]");
                    let s = item.get_ref();
                    if !KNOWN_LSMS.contains(&s.as_str()) {
                        self.report(
                            key,
                            item.span(),
                            format!("`{s}` is not an LSM (one of {})", KNOWN_LSMS.join(", ")),
                        );
                    } else if out.contains(s) {
                        self.report(key, item.span(), format!("`{s}` is listed twice"));
                    } else {
                        out.push(s.clone());
                    }
                }
                out
            }
        };
        let lockdown = raw
            .lockdown
            .as_ref()
            .and_then(|v| {
                self.check("hardening.lockdown", v, |s| {
                    Lockdown::parse(s).ok_or_else(|| {
                        format!("`{s}` is not one of \"none\", \"integrity\", \"confidentiality\"")
                    })
                })
            })
            .unwrap_or(d.lockdown);
        let from_sysctl = |name: &str| {
            cross
                .sysctls
                .iter()
                .find(|(k, _, _)| k.get_ref() == name)
                .map(|(k, v, span)| (k.get_ref().clone(), v.clone(), span.clone()))
        };
        let sysctl_ptrace = from_sysctl("kernel.yama.ptrace_scope");
        let sysctl_userns = from_sysctl("user.max_user_namespaces");
        let ptrace_scope = match &raw.ptrace_scope {
            // `[kernel.sysctl]` may set it too (its value then is this key's value).
            None => sysctl_ptrace
                .as_ref()
                .and_then(|(_, v, _)| v.parse::<u8>().ok())
                .filter(|n| *n <= 3)
                .unwrap_or(d.ptrace_scope),
            Some(v) => match u8::try_from(*v.get_ref()) {
                Ok(n @ 0..=3) => n,
                _ => {
                    self.report(
                        "hardening.ptrace_scope",
                        v.span(),
                        "must be 0, 1, 2 or 3 (Yama: 2 = only CAP_SYS_PTRACE may attach, 3 = no attach at all)",
                    );
                    d.ptrace_scope
                }
            },
        };
        let max_user_namespaces = match &raw.max_user_namespaces {
            None => match (&sysctl_userns, policy.user_namespaces) {
                (Some((key, v, span)), _) => match v.parse::<u64>() {
                    Ok(0) if policy.user_namespaces == UserNamespaces::Required => {
                        self.report(
                            format!("kernel.sysctl.\"{key}\""),
                            span.clone(),
                            "0 forbids user namespaces, but [container_policy] user_namespaces = \"required\" runs every container in one",
                        );
                        Some(0)
                    }
                    Ok(n) => Some(n),
                    Err(_) => None,
                },
                (None, UserNamespaces::Optional) => Some(0),
                (None, UserNamespaces::Required) => None,
            },
            Some(v) => match u64::try_from(*v.get_ref()) {
                Ok(n) if n <= i32::MAX as u64 => {
                    if n == 0 && policy.user_namespaces == UserNamespaces::Required {
                        self.report(
                            "hardening.max_user_namespaces",
                            v.span(),
                            "0 forbids user namespaces, but [container_policy] user_namespaces = \"required\" runs every container in one: raise it or make user namespaces optional",
                        );
                    }
                    Some(n)
                }
                _ => {
                    self.report(
                        "hardening.max_user_namespaces",
                        v.span(),
                        "must be an integer from 0 to 2147483647",
                    );
                    Some(0)
                }
            },
        };
        let fixed: Vec<&str> = HARDENED_CMDLINE
            .iter()
            .map(|i| cmdline_key(i.item))
            .collect();
        let mut cmdline_remove: Vec<String> = Vec::new();
        for (i, item) in raw.cmdline_remove.iter().enumerate() {
            let key = format!("hardening.cmdline_remove[{i}]");
            let k = cmdline_key(item.get_ref());
            if let Some((_, own)) = MANAGED_KEYS.iter().find(|(m, _)| *m == k) {
                self.report(
                    key,
                    item.span(),
                    format!("`{k}=` is set by `{own}`: change that key instead"),
                );
            } else if !fixed.contains(&k) {
                self.report(
                    key,
                    item.span(),
                    format!(
                        "`{}` is not a hardened default item (one of {})",
                        item.get_ref(),
                        fixed.join(", ")
                    ),
                );
            } else if cmdline_remove.iter().any(|r| r == k) {
                self.report(key, item.span(), format!("`{k}` is listed twice"));
            } else {
                cmdline_remove.push(k.to_owned());
            }
        }
        let mut h = Hardening {
            lsm,
            lockdown,
            module_sig_enforce: raw.module_sig_enforce.unwrap_or(d.module_sig_enforce),
            ptrace_scope,
            max_user_namespaces,
            cmdline_remove,
            cmdline_add: Vec::new(),
            mode: Modes {
                lsm: self.mode("hardening.mode.lsm", &raw.mode.lsm, Mode::Enforce),
                lockdown: self.mode("hardening.mode.lockdown", &raw.mode.lockdown, Mode::Enforce),
                cmdline: self.mode("hardening.mode.cmdline", &raw.mode.cmdline, Mode::Warn),
                sysctl: self.mode("hardening.mode.sysctl", &raw.mode.sysctl, Mode::Enforce),
                lock_modules: self.mode(
                    "hardening.mode.lock_modules",
                    &raw.mode.lock_modules,
                    Mode::Enforce,
                ),
                audit: self.mode("hardening.mode.audit", &raw.mode.audit, Mode::Enforce),
                apparmor: self.mode("hardening.mode.apparmor", &raw.mode.apparmor, Mode::Enforce),
            },
        };
        let taken = hardened_keys(&h);
        let clash = |k: &str| -> Option<String> {
            if let Some((_, own)) = MANAGED_KEYS.iter().find(|(m, _)| *m == k) {
                Some(format!("`{k}=` is set by `{own}`: change that key instead"))
            } else if taken.iter().any(|t| t == k) {
                Some(format!(
                    "`{k}` is a hardened default item: list it in hardening.cmdline_remove to replace it"
                ))
            } else {
                None
            }
        };
        let mut added: Vec<String> = Vec::new();
        for (i, item) in raw.cmdline_add.iter().enumerate() {
            let key = format!("hardening.cmdline_add[{i}]");
            let s = item.get_ref();
            if !is_cmdline_item(s) {
                self.report(
                    key,
                    item.span(),
                    format!("`{s}` is not one command-line item (no spaces, quotes or control characters)"),
                );
            } else if let Some(msg) = clash(cmdline_key(s)) {
                self.report(key, item.span(), msg);
            } else if added.iter().any(|a| cmdline_key(a) == cmdline_key(s)) {
                self.report(
                    key,
                    item.span(),
                    format!("`{}` is added twice", cmdline_key(s)),
                );
            } else {
                added.push(s.clone());
            }
        }
        for (i, item) in cross.boot_cmdline.iter().enumerate() {
            if let Some(msg) = clash(cmdline_key(item.get_ref())) {
                self.report(format!("boot.cmdline[{i}]"), item.span(), msg);
            }
        }
        // Both places set: they must agree.
        let explicit = [
            (
                sysctl_ptrace,
                raw.ptrace_scope.as_ref().map(|v| v.get_ref().to_string()),
            ),
            (
                sysctl_userns,
                raw.max_user_namespaces
                    .as_ref()
                    .map(|v| v.get_ref().to_string()),
            ),
        ];
        for (from_sysctl, own_value) in explicit {
            if let (Some((key, v, span)), Some(own_value)) = (from_sysctl, own_value) {
                if v != own_value {
                    let own = OWNED_SYSCTLS
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or("[hardening]", |(_, o)| *o);
                    self.report(
                        format!("kernel.sysctl.\"{key}\""),
                        span,
                        format!("{v} contradicts `{own} = {own_value}`: set it in one place"),
                    );
                }
            }
        }
        h.cmdline_add = added;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Problem};
    use std::path::Path;

    fn hardening(text: &str) -> Hardening {
        match parse(text, Path::new("/cfg/host.toml")) {
            Ok(c) => c.hardening,
            Err(e) => panic!("unexpected error:\n{e}"),
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text, Path::new("/cfg/host.toml")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.problems().to_vec(),
        }
    }

    fn items(h: &Hardening) -> Vec<String> {
        hardened_cmdline(h).into_iter().map(|i| i.item).collect()
    }

    #[test]
    fn defaults() {
        let h = hardening("");
        assert_eq!(h, Hardening::default());
        assert_eq!(h.lsm, ["landlock", "lockdown", "yama", "apparmor"]);
        assert_eq!(h.lockdown, Lockdown::Integrity);
        assert!(h.module_sig_enforce);
        assert_eq!(h.ptrace_scope, 2);
        assert_eq!(h.max_user_namespaces, Some(0));
        assert_eq!(h.mode, Modes::default());
        assert_eq!(
            items(&h).join(" "),
            "slab_nomerge init_on_alloc=1 init_on_free=1 page_alloc.shuffle=1 pti=on \
             randomize_kstack_offset=on vsyscall=none debugfs=off oops=panic \
             lockdown=integrity module.sig_enforce=1 lsm=landlock,lockdown,yama,apparmor"
        );
    }

    #[test]
    fn full_section() {
        let h = hardening(
            r#"
[hardening]
lsm = ["landlock", "yama"]
lockdown = "confidentiality"
module_sig_enforce = false
ptrace_scope = 3
max_user_namespaces = 100
cmdline_remove = ["init_on_free=1", "oops"]
cmdline_add = ["iommu=force", "mitigations=auto,nosmt"]

[hardening.mode]
lsm = "warn"
audit = "warn"
"#,
        );
        assert_eq!(h.lsm, ["landlock", "yama"]);
        assert_eq!(h.lockdown, Lockdown::Confidentiality);
        assert!(!h.module_sig_enforce);
        assert_eq!(h.ptrace_scope, 3);
        assert_eq!(h.max_user_namespaces, Some(100));
        assert_eq!(h.cmdline_remove, ["init_on_free", "oops"]);
        assert_eq!(h.cmdline_add, ["iommu=force", "mitigations=auto,nosmt"]);
        assert_eq!(h.mode.lsm, Mode::Warn);
        assert_eq!(h.mode.audit, Mode::Warn);
        assert_eq!(h.mode.lockdown, Mode::Enforce);
        let it = items(&h);
        assert!(!it.iter().any(|i| i.starts_with("init_on_free")));
        assert!(!it.iter().any(|i| i == "oops=panic"));
        assert!(!it.iter().any(|i| i.starts_with("module.sig_enforce")));
        assert!(it.contains(&"lockdown=confidentiality".to_owned()));
        assert_eq!(it.last().map(String::as_str), Some("lsm=landlock,yama"));
    }

    #[test]
    fn none_and_empty_drop_their_items() {
        let h = hardening("[hardening]\nlsm = []\nlockdown = \"none\"\n");
        let it = items(&h);
        assert!(!it
            .iter()
            .any(|i| i.starts_with("lsm=") || i.starts_with("lockdown=")));
        assert_eq!(it.len(), HARDENED_CMDLINE.len() + 1);
    }

    #[test]
    fn every_fixed_item_can_be_removed() {
        let all: Vec<String> = HARDENED_CMDLINE
            .iter()
            .map(|i| format!("\"{}\"", cmdline_key(i.item)))
            .collect();
        let h = hardening(&format!(
            "[hardening]\ncmdline_remove = [{}]\nlsm = []\nlockdown = \"none\"\nmodule_sig_enforce = false\n",
            all.join(", ")
        ));
        assert!(items(&h).is_empty());
        // A removed item may then be replaced.
        let h = hardening(
            "[hardening]\ncmdline_remove = [\"init_on_free\"]\ncmdline_add = [\"init_on_free=0\"]\n",
        );
        assert_eq!(h.cmdline_add, ["init_on_free=0"]);
        let h = hardening(
            "[boot]\ncmdline = [\"console=ttyS0\", \"pti=auto\"]\n[hardening]\ncmdline_remove = [\"pti\"]\n",
        );
        assert!(!items(&h).contains(&"pti=on".to_owned()));
    }

    #[test]
    fn user_namespaces_follow_the_container_policy() {
        let h = hardening("[container_policy]\nuser_namespaces = \"required\"\n");
        assert_eq!(h.max_user_namespaces, None);
        let h = hardening(
            "[container_policy]\nuser_namespaces = \"required\"\n[hardening]\nmax_user_namespaces = 1000\n",
        );
        assert_eq!(h.max_user_namespaces, Some(1000));
        let h = hardening("[container_policy]\nuser_namespaces = \"optional\"\n");
        assert_eq!(h.max_user_namespaces, Some(0));
    }

    /// Each bad input and the (key, line, column, part of the message) it must produce.
    #[test]
    fn every_error_names_key_line_and_reason() {
        let cases: &[(&str, &str, usize, usize, &str)] = &[
            (
                "[hardening]\nbogus = 1\n",
                "hardening.bogus",
                2,
                1,
                "unknown field",
            ),
            (
                "[hardening]\nlsm = [\"apparmour\"]\n",
                "hardening.lsm[0]",
                2,
                8,
                "not an LSM",
            ),
            (
                "[hardening]\nlsm = [\"yama\", \"yama\"]\n",
                "hardening.lsm[1]",
                2,
                16,
                "listed twice",
            ),
            (
                "[hardening]\nlockdown = \"full\"\n",
                "hardening.lockdown",
                2,
                12,
                "not one of",
            ),
            (
                "[hardening]\nptrace_scope = 4\n",
                "hardening.ptrace_scope",
                2,
                16,
                "0, 1, 2 or 3",
            ),
            (
                "[hardening]\nmax_user_namespaces = -1\n",
                "hardening.max_user_namespaces",
                2,
                23,
                "0 to 2147483647",
            ),
            (
                "[container_policy]\nuser_namespaces = \"required\"\n[hardening]\nmax_user_namespaces = 0\n",
                "hardening.max_user_namespaces",
                4,
                23,
                "user_namespaces = \"required\"",
            ),
            (
                "[hardening]\ncmdline_remove = [\"quiet\"]\n",
                "hardening.cmdline_remove[0]",
                2,
                19,
                "not a hardened default item",
            ),
            (
                "[hardening]\ncmdline_remove = [\"lsm\"]\n",
                "hardening.cmdline_remove[0]",
                2,
                19,
                "hardening.lsm",
            ),
            (
                "[hardening]\ncmdline_remove = [\"pti\", \"pti=on\"]\n",
                "hardening.cmdline_remove[1]",
                2,
                26,
                "listed twice",
            ),
            (
                "[hardening]\ncmdline_add = [\"a b\"]\n",
                "hardening.cmdline_add[0]",
                2,
                16,
                "not one command-line item",
            ),
            (
                "[hardening]\ncmdline_add = [\"init_on_free=0\"]\n",
                "hardening.cmdline_add[0]",
                2,
                16,
                "cmdline_remove",
            ),
            (
                "[hardening]\ncmdline_add = [\"lockdown=none\"]\n",
                "hardening.cmdline_add[0]",
                2,
                16,
                "hardening.lockdown",
            ),
            (
                "[hardening]\ncmdline_add = [\"iommu=force\", \"iommu=pt\"]\n",
                "hardening.cmdline_add[1]",
                2,
                31,
                "added twice",
            ),
            (
                "[boot]\ncmdline = [\"console=ttyS0\", \"lsm=yama\"]\n",
                "boot.cmdline[1]",
                2,
                29,
                "hardening.lsm",
            ),
            (
                "[kernel.sysctl]\n\"kernel.yama.ptrace_scope\" = 3\n[hardening]\nptrace_scope = 1\n",
                "kernel.sysctl.\"kernel.yama.ptrace_scope\"",
                2,
                30,
                "hardening.ptrace_scope = 1",
            ),
            (
                "[kernel.sysctl]\n\"user.max_user_namespaces\" = \"0\"\n[container_policy]\nuser_namespaces = \"required\"\n",
                "kernel.sysctl.\"user.max_user_namespaces\"",
                2,
                30,
                "required",
            ),
            (
                "[hardening.mode]\nlsm = \"audit\"\n",
                "hardening.mode.lsm",
                2,
                7,
                "not one of",
            ),
            (
                "[hardening.mode]\nfirewall = \"warn\"\n",
                "hardening.mode.firewall",
                2,
                1,
                "unknown field",
            ),
        ];
        for (text, key, line, column, msg) in cases {
            let ps = problems(text);
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
    fn kernel_sysctl_may_set_the_same_values() {
        let h = hardening("[kernel.sysctl]\n\"kernel.yama.ptrace_scope\" = 3\n");
        assert_eq!(h.ptrace_scope, 3);
        let h = hardening(
            "[kernel.sysctl]\n\"kernel.yama.ptrace_scope\" = \"1\"\n[hardening]\nptrace_scope = 1\n",
        );
        assert_eq!(h.ptrace_scope, 1);
        let h = hardening("[kernel.sysctl]\n\"user.max_user_namespaces\" = 50\n");
        assert_eq!(h.max_user_namespaces, Some(50));
    }

    #[test]
    fn apparmor_keys() {
        assert_eq!(Hardening::default().mode.apparmor, Mode::Enforce);
        let h = hardening("[hardening.mode]\napparmor = \"warn\"\n");
        assert_eq!(h.mode.apparmor, Mode::Warn);
        let text = "[[service]]\nname = \"a\"\nexec = [\"/bin/a\"]\napparmor_profile = \"rampart-containerd\"\n";
        let cfg = parse(text, Path::new("/cfg/host.toml")).unwrap();
        assert_eq!(
            cfg.services[0].apparmor_profile.as_deref(),
            Some("rampart-containerd")
        );
        assert_eq!(
            cfg.container_policy.apparmor_profile.as_deref(),
            Some("rampart-default")
        );
        let cfg = parse(
            "[container_policy]\napparmor_profile = \"\"\n",
            Path::new("/cfg/host.toml"),
        )
        .unwrap();
        assert_eq!(cfg.container_policy.apparmor_profile, None);
        for (text, key) in [
            (
                "[[service]]\nname = \"a\"\nexec = [\"/bin/a\"]\napparmor_profile = \"a b\"\n",
                "service[0].apparmor_profile",
            ),
            (
                "[container_policy]\napparmor_profile = \"-x\"\n",
                "container_policy.apparmor_profile",
            ),
        ] {
            let ps = problems(text);
            assert!(
                ps.iter()
                    .any(|p| p.key == key && p.message.contains("AppArmor")),
                "{text}: {ps:?}"
            );
        }
        for name in ["rampart-default", "a.b_c", "x"] {
            assert!(check_profile_name(name).is_ok(), "{name}");
        }
        for name in ["", ".x", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_profile_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn keys_and_levels() {
        assert_eq!(cmdline_key("init_on_free=1"), "init_on_free");
        assert_eq!(cmdline_key("slab_nomerge"), "slab_nomerge");
        assert_eq!(cmdline_key("lsm=a,b=c"), "lsm");
        for l in [
            Lockdown::None,
            Lockdown::Integrity,
            Lockdown::Confidentiality,
        ] {
            assert_eq!(Lockdown::parse(l.as_str()), Some(l));
        }
        assert!(Lockdown::Confidentiality > Lockdown::Integrity);
        assert!(Lockdown::Integrity > Lockdown::None);
    }
}
