//! The compliance self-check: `rampart-init audit [--json]`, and the last boot step.
//!
//! [`run`] compares the running system with the plan the host config gives (the same plans
//! boot applied): the mounts and their flags in PID 1's `/proc/1/mountinfo` against
//! [`crate::mount::plan`], every sysctl against [`crate::sysctl::plan`] (with
//! `kernel.modules_disabled`), the required LSMs and the lockdown level, module signature
//! enforcement, the running command line against the image's `/etc/rampart/cmdline`, the live
//! nf_tables ruleset (read back over netlink by [`crate::firewall::readback`]) against
//! [`crate::firewall::plan`], and each running service's cgroup, capabilities, no_new_privs
//! and seccomp mode from `/proc/PID/status` (its pids from `cgroup.procs` of its cgroup).
//!
//! Every check is one [`Item`]: what, expected, actual, pass / fail / skip, the CIS or KSPP
//! reference where there is one, and the `[hardening.mode]` that governs it. The report is
//! printed for humans ([`Audit::human`]) or as one JSON object per line ([`Audit::json_lines`]).
//! The command exits non-zero on any failed item; at boot, a failed item under `enforce`
//! stops the host ([`Audit::enforced_failures`]). Every path is a parameter ([`Paths`]): the
//! unit tests run over fixture trees.

mod checks;
pub mod cli;
pub mod mountinfo;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::path::PathBuf;

use rampart_config::hardening::Mode;
use rampart_config::HostConfig;

use crate::firewall::readback::ChainSummary;

/// Where the audit reads the running system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The proc root (`/proc`).
    pub proc: PathBuf,
    /// The sysfs root (`/sys`).
    pub sys: PathBuf,
    /// The cgroup2 root (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The image's expected command line (`/etc/rampart/cmdline`).
    pub expected_cmdline: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            cgroup_root: PathBuf::from(crate::boot::CGROUP_ROOT),
            expected_cmdline: PathBuf::from(rampart_config::IMAGE_CMDLINE_PATH),
        }
    }
}

/// The live firewall as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveFirewall {
    /// The table's chains.
    Table(Vec<ChainSummary>),
    /// There is no such table.
    Absent,
    /// It could not be read.
    Unreadable(String),
}

/// Reads the live rampart table over netlink.
pub fn read_live_firewall() -> LiveFirewall {
    match crate::firewall::readback::read_table(crate::firewall::plan::TABLE) {
        Ok(Some(chains)) => LiveFirewall::Table(chains),
        Ok(None) => LiveFirewall::Absent,
        Err(e) => LiveFirewall::Unreadable(e.to_string()),
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The running system matches the plan.
    Pass,
    /// Drift.
    Fail,
    /// Not applicable here (a sysctl this kernel lacks, a service not running).
    Skip,
}

impl Status {
    /// `pass`, `fail` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What is checked: `mount /tmp`, `sysctl kernel.kptr_restrict`, `lsm apparmor`, ...
    pub item: String,
    /// What the plan says.
    pub expected: String,
    /// What the system has.
    pub actual: String,
    /// Pass, fail or skip.
    pub status: Status,
    /// The CIS or KSPP item it satisfies (empty when none).
    pub reference: String,
    /// The mode that governs it at boot.
    pub mode: Mode,
}

/// Every checked item, in check order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// The items.
    pub items: Vec<Item>,
}

impl Audit {
    fn count(&self, s: Status) -> usize {
        self.items.iter().filter(|i| i.status == s).count()
    }

    /// Items that pass.
    pub fn passed(&self) -> usize {
        self.count(Status::Pass)
    }

    /// Items that fail (drift).
    pub fn failed(&self) -> usize {
        self.count(Status::Fail)
    }

    /// Items skipped.
    pub fn skipped(&self) -> usize {
        self.count(Status::Skip)
    }

    /// Failed items whose mode is `enforce`.
    pub fn enforced_failures(&self) -> Vec<&Item> {
        self.items
            .iter()
            .filter(|i| i.status == Status::Fail && i.mode == Mode::Enforce)
            .collect()
    }

    /// `57 passed, 0 failed` (`, 2 skipped` when some were).
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.skipped() > 0 {
            let _ = write!(s, ", {} skipped", self.skipped());
        }
        s
    }

    /// The human report: one line per item, then the summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for i in &self.items {
            let _ = write!(
                out,
                "{:<4}  {}: expected {}, actual {}",
                i.status.as_str().to_uppercase(),
                i.item,
                i.expected,
                i.actual
            );
            if !i.reference.is_empty() {
                let _ = write!(out, " [{}]", i.reference);
            }
            if i.status == Status::Fail && i.mode == Mode::Warn {
                out.push_str(" (mode warn)");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "audit: {}", self.summary());
        out
    }

    /// One JSON object per item, then a summary object.
    pub fn json_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .items
            .iter()
            .map(|i| {
                format!(
                    "{{\"item\":{},\"expected\":{},\"actual\":{},\"result\":\"{}\",\"reference\":{},\"mode\":\"{}\"}}",
                    json_string(&i.item),
                    json_string(&i.expected),
                    json_string(&i.actual),
                    i.status.as_str(),
                    if i.reference.is_empty() {
                        "null".to_owned()
                    } else {
                        json_string(&i.reference)
                    },
                    i.mode
                )
            })
            .collect();
        out.push(format!(
            "{{\"summary\":{{\"passed\":{},\"failed\":{},\"skipped\":{}}}}}",
            self.passed(),
            self.failed(),
            self.skipped()
        ));
        out
    }
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs every check against the system under `paths`, with the live firewall given.
pub fn run(cfg: &HostConfig, paths: &Paths, firewall: &LiveFirewall) -> Audit {
    let mut a = Audit::default();
    checks::mounts(&mut a, cfg, paths);
    checks::sysctls(&mut a, cfg, paths);
    checks::modules(&mut a, cfg, paths);
    checks::lsms(&mut a, cfg, paths);
    checks::lockdown(&mut a, cfg, paths);
    checks::cmdline(&mut a, cfg, paths);
    checks::firewall(&mut a, cfg, firewall);
    checks::services(&mut a, cfg, paths);
    a
}

/// The drift that stops a boot under `enforce`.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Items under `enforce` failed.
    #[error("{count} item(s) drifted from the plan: {}", items.join("; "))]
    Drift {
        /// How many.
        count: usize,
        /// `item: expected X, actual Y` for each.
        items: Vec<String>,
    },
}

/// How many times failing service items are checked again at boot.
pub const SERVICE_RECHECKS: u32 = 20;
/// The pause between two of those checks.
pub const SERVICE_RECHECK_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether an item is about a running service (`service NAME ...`).
#[must_use]
pub fn service_item(item: &str) -> bool {
    item.starts_with("service ")
}

/// The boot step: runs the audit on the live system, prints each failed item and the summary
/// line on the console (`rampart-init: audit: 57 passed, 0 failed`), and returns the drift
/// under `enforce`.
pub fn boot_step(cfg: &HostConfig) -> Result<Audit, AuditError> {
    let mut audit = run(cfg, &Paths::default(), &read_live_firewall());
    // A service forked just before this step may not have reached its exec yet (its filter,
    // no_new_privs and capabilities are applied between fork and exec): service items that
    // fail are checked again, a few times, before they count as drift.
    for _ in 0..SERVICE_RECHECKS {
        if !audit
            .enforced_failures()
            .iter()
            .any(|i| service_item(&i.item))
        {
            break;
        }
        std::thread::sleep(SERVICE_RECHECK_PAUSE);
        audit = run(cfg, &Paths::default(), &read_live_firewall());
    }
    for i in audit.items.iter().filter(|i| i.status == Status::Fail) {
        tracing::warn!(
            "audit: {} drifted: expected {}, actual {} (mode {})",
            i.item,
            i.expected,
            i.actual,
            i.mode
        );
    }
    crate::log::console(&format!("audit: {}", audit.summary()));
    let failures = audit.enforced_failures();
    if failures.is_empty() {
        Ok(audit)
    } else {
        Err(AuditError::Drift {
            count: failures.len(),
            items: failures
                .iter()
                .map(|i| format!("{}: expected {}, actual {}", i.item, i.expected, i.actual))
                .collect(),
        })
    }
}
