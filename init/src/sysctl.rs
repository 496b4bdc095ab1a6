//! The sysctl baseline (KSPP and CIS Debian 12) and the layer that writes it to `/proc/sys`.
//!
//! [`BASELINE`] is data: every key with its value and where it comes from. [`plan`] merges it
//! with the `[kernel] sysctl` overrides of the host config (an override replaces the baseline
//! value in place, a new key is appended). [`apply`] writes each value under a `/proc/sys`
//! root given as a parameter: a key this kernel does not have is reported (returned and
//! logged as a warning), a key that exists but cannot be set is an error, and boot fails
//! closed on it.
//!
//! `kernel.modules_disabled=1` is not in the table: boot applies it separately, after the boot
//! modules are loaded, when `kernel.lock_modules` is set ([`lock_modules_setting`]).
//! `user.max_user_namespaces` stays at the kernel default (a later container policy decides).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use rampart_config::HostConfig;

/// One baseline sysctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaselineSysctl {
    /// The dotted key, e.g. `kernel.kptr_restrict`.
    pub key: &'static str,
    /// The value to write.
    pub value: &'static str,
    /// Where the setting comes from (`KSPP`, `CIS 3.3.2`, `rampart`).
    pub reference: &'static str,
}

const fn s(key: &'static str, value: &'static str, reference: &'static str) -> BaselineSysctl {
    BaselineSysctl {
        key,
        value,
        reference,
    }
}

/// The default rampart sysctl baseline, applied in this order.
///
/// `dev.tty.legacy_tiocsti` (Linux 6.2+) and `kernel.io_uring_disabled` (6.6+) do not exist on
/// Debian 12's 6.1 kernel: they are reported as missing there and applied on newer kernels.
/// CIS numbers follow the CIS Debian Linux 12 benchmark, section 3.3 (network parameters).
pub const BASELINE: &[BaselineSysctl] = &[
    // KSPP (kernel self protection project recommendations).
    s("dev.tty.ldisc_autoload", "0", "KSPP"),
    s("dev.tty.legacy_tiocsti", "0", "KSPP"),
    s("fs.protected_symlinks", "1", "KSPP"),
    s("fs.protected_hardlinks", "1", "KSPP"),
    s("fs.protected_fifos", "2", "KSPP"),
    s("fs.protected_regular", "2", "KSPP"),
    s("fs.suid_dumpable", "0", "KSPP"),
    s("kernel.kptr_restrict", "2", "KSPP"),
    s("kernel.dmesg_restrict", "1", "KSPP"),
    s("kernel.perf_event_paranoid", "3", "KSPP"),
    s("kernel.randomize_va_space", "2", "KSPP"),
    s("kernel.yama.ptrace_scope", "2", "KSPP"),
    s("kernel.unprivileged_bpf_disabled", "1", "KSPP"),
    s("net.core.bpf_jit_harden", "2", "KSPP"),
    s("vm.unprivileged_userfaultfd", "0", "KSPP"),
    s("kernel.kexec_load_disabled", "1", "KSPP"),
    s("kernel.sysrq", "0", "KSPP"),
    s("kernel.io_uring_disabled", "2", "KSPP"),
    s("vm.mmap_min_addr", "65536", "KSPP"),
    // rampart: ctrl-alt-del sends SIGINT to PID 1, which shuts down cleanly.
    s("kernel.ctrl-alt-del", "0", "rampart"),
    // CIS Debian 12, 3.3 network parameters.
    s("net.ipv4.conf.all.send_redirects", "0", "CIS 3.3.2"),
    s("net.ipv4.conf.default.send_redirects", "0", "CIS 3.3.2"),
    s(
        "net.ipv4.icmp_ignore_bogus_error_responses",
        "1",
        "CIS 3.3.3",
    ),
    s("net.ipv4.icmp_echo_ignore_broadcasts", "1", "CIS 3.3.4"),
    s("net.ipv4.conf.all.accept_redirects", "0", "CIS 3.3.5"),
    s("net.ipv4.conf.default.accept_redirects", "0", "CIS 3.3.5"),
    s("net.ipv6.conf.all.accept_redirects", "0", "CIS 3.3.5"),
    s("net.ipv6.conf.default.accept_redirects", "0", "CIS 3.3.5"),
    s("net.ipv4.conf.all.secure_redirects", "0", "CIS 3.3.6"),
    s("net.ipv4.conf.default.secure_redirects", "0", "CIS 3.3.6"),
    s("net.ipv4.conf.all.rp_filter", "1", "CIS 3.3.7"),
    s("net.ipv4.conf.default.rp_filter", "1", "CIS 3.3.7"),
    s("net.ipv4.conf.all.accept_source_route", "0", "CIS 3.3.8"),
    s(
        "net.ipv4.conf.default.accept_source_route",
        "0",
        "CIS 3.3.8",
    ),
    s("net.ipv6.conf.all.accept_source_route", "0", "CIS 3.3.8"),
    s(
        "net.ipv6.conf.default.accept_source_route",
        "0",
        "CIS 3.3.8",
    ),
    s("net.ipv4.conf.all.log_martians", "1", "CIS 3.3.9"),
    s("net.ipv4.conf.default.log_martians", "1", "CIS 3.3.9"),
    s("net.ipv4.tcp_syncookies", "1", "CIS 3.3.10"),
    s("net.ipv6.conf.all.accept_ra", "0", "CIS 3.3.11"),
    s("net.ipv6.conf.default.accept_ra", "0", "CIS 3.3.11"),
];

/// The reference of a setting that comes from the host config.
pub const CONFIG_REFERENCE: &str = "config";

/// One sysctl to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlSetting {
    /// The dotted key.
    pub key: String,
    /// The file under the `/proc/sys` root (`kernel/kptr_restrict`).
    pub path: PathBuf,
    /// The value to write.
    pub value: String,
    /// Where it comes from: a baseline reference or [`CONFIG_REFERENCE`].
    pub reference: String,
    /// For a config override of a baseline key: the baseline value it replaced.
    pub overrides: Option<String>,
}

impl SysctlSetting {
    fn from_baseline(entry: &BaselineSysctl) -> Self {
        Self {
            key: entry.key.to_owned(),
            path: key_path(entry.key),
            value: entry.value.to_owned(),
            reference: entry.reference.to_owned(),
            overrides: None,
        }
    }
}

/// The file of a dotted key relative to `/proc/sys` (`kernel.yama.ptrace_scope` ->
/// `kernel/yama/ptrace_scope`).
#[must_use]
pub fn key_path(key: &str) -> PathBuf {
    PathBuf::from(key.replace('.', "/"))
}

/// The setting that locks module loading (`kernel.modules_disabled=1`), applied by boot after
/// the boot modules are loaded.
#[must_use]
pub fn lock_modules_setting() -> SysctlSetting {
    SysctlSetting {
        key: "kernel.modules_disabled".to_owned(),
        path: key_path("kernel.modules_disabled"),
        value: "1".to_owned(),
        reference: "KSPP".to_owned(),
        overrides: None,
    }
}

/// The sysctl plan of a host config: the baseline (if `kernel.sysctl_baseline`) with the
/// `kernel.sysctl` overrides applied.
#[must_use]
pub fn plan(cfg: &HostConfig) -> Vec<SysctlSetting> {
    let overrides: Vec<(String, PathBuf, String)> = cfg
        .kernel
        .sysctl
        .iter()
        .map(|(key, value)| {
            (
                key.as_str().to_owned(),
                key.proc_path(),
                value.as_str().to_owned(),
            )
        })
        .collect();
    let mut plan = plan_from(cfg.kernel.sysctl_baseline, &overrides);
    crate::security::hardening_sysctls(&mut plan, &cfg.hardening);
    plan
}

/// The plan for explicit inputs: `overrides` are (key, path under `/proc/sys`, value).
#[must_use]
pub fn plan_from(baseline: bool, overrides: &[(String, PathBuf, String)]) -> Vec<SysctlSetting> {
    let mut plan: Vec<SysctlSetting> = if baseline {
        BASELINE.iter().map(SysctlSetting::from_baseline).collect()
    } else {
        Vec::new()
    };
    for (key, path, value) in overrides {
        if let Some(existing) = plan.iter_mut().find(|s| &s.key == key) {
            let previous = std::mem::replace(&mut existing.value, value.clone());
            if existing.reference != CONFIG_REFERENCE {
                existing.overrides = Some(previous);
                existing.reference =
                    format!("{CONFIG_REFERENCE} (overrides {})", existing.reference);
            }
        } else {
            plan.push(SysctlSetting {
                key: key.clone(),
                path: path.clone(),
                value: value.clone(),
                reference: CONFIG_REFERENCE.to_owned(),
                overrides: None,
            });
        }
    }
    plan
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysctlReport {
    /// Keys written.
    pub applied: Vec<String>,
    /// Keys this kernel does not have (their file does not exist).
    pub missing: Vec<String>,
}

/// Errors of the sysctl layer; each names the key, the value and the errno.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The key exists but could not be opened for writing or written.
    #[error("set {key}={value}: {source}")]
    Write {
        /// The dotted key.
        key: String,
        /// The value.
        value: String,
        /// The file.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// The value was written but reads back different (the kernel ignored or clamped it).
    #[error("set {key}={value}: reads back {actual:?}")]
    Verify {
        /// The dotted key.
        key: String,
        /// The value written.
        value: String,
        /// The file.
        path: PathBuf,
        /// The value read back.
        actual: String,
    },
}

fn errno_of(err: &io::Error) -> Errno {
    err.raw_os_error()
        .map_or(Errno::UnknownErrno, Errno::from_raw)
}

/// Writes each setting under `proc_sys` (`/proc/sys` in PID 1), in order, and reads it back.
///
/// # Errors
/// The first key that exists but cannot be opened, written or does not read back the value
/// written; boot stops on it. A key whose file does not exist is not an error: it is listed in
/// [`SysctlReport::missing`] and logged as a warning.
pub fn apply(plan: &[SysctlSetting], proc_sys: &Path) -> Result<SysctlReport, SysctlError> {
    let mut report = SysctlReport::default();
    for setting in plan {
        let path = proc_sys.join(&setting.path);
        let write_error = |err: &io::Error| SysctlError::Write {
            key: setting.key.clone(),
            value: setting.value.clone(),
            path: path.clone(),
            source: errno_of(err),
        };
        let mut file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(
                    "sysctl {} ({}) does not exist on this kernel, not set",
                    setting.key,
                    setting.reference
                );
                report.missing.push(setting.key.clone());
                continue;
            }
            Err(err) => return Err(write_error(&err)),
        };
        if let Some(previous) = &setting.overrides {
            tracing::info!(
                "sysctl {}={} overrides the baseline value {previous}",
                setting.key,
                setting.value
            );
        }
        file.write_all(setting.value.as_bytes())
            .map_err(|err| write_error(&err))?;
        drop(file);
        let mut actual = String::new();
        match std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut actual)) {
            Ok(_) => {}
            // A write-only key (e.g. vm.drop_caches) cannot be verified.
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                report.applied.push(setting.key.clone());
                continue;
            }
            Err(err) => return Err(write_error(&err)),
        }
        if !same_value(&actual, &setting.value) {
            return Err(SysctlError::Verify {
                key: setting.key.clone(),
                value: setting.value.clone(),
                path,
                actual: actual.trim().to_owned(),
            });
        }
        report.applied.push(setting.key.clone());
    }
    Ok(report)
}

/// Compares a read-back value with the written one, ignoring whitespace differences (the
/// kernel shows vectors separated by tabs and ends with a newline).
fn same_value(actual: &str, written: &str) -> bool {
    actual.split_whitespace().eq(written.split_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ov(key: &str, value: &str) -> (String, PathBuf, String) {
        (key.to_owned(), key_path(key), value.to_owned())
    }

    #[test]
    fn baseline_table_is_well_formed() {
        let mut keys = BTreeSet::new();
        for entry in BASELINE {
            assert!(keys.insert(entry.key), "duplicate {}", entry.key);
            assert!(!entry.value.is_empty());
            assert!(
                entry.reference == "KSPP"
                    || entry.reference == "rampart"
                    || entry.reference.starts_with("CIS 3.3."),
                "{}",
                entry.reference
            );
        }
        assert!(!keys.contains("kernel.modules_disabled"));
        assert!(!keys.contains("user.max_user_namespaces"));
        assert!(keys.contains("kernel.ctrl-alt-del"));
    }

    #[test]
    fn baseline_values_spot_checks() {
        let plan = plan_from(true, &[]);
        let get = |key: &str| plan.iter().find(|s| s.key == key).map(|s| s.value.as_str());
        let cases = [
            ("kernel.kptr_restrict", "2"),
            ("kernel.yama.ptrace_scope", "2"),
            ("kernel.ctrl-alt-del", "0"),
            ("vm.mmap_min_addr", "65536"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
            ("net.ipv4.tcp_syncookies", "1"),
        ];
        for (key, value) in cases {
            assert_eq!(get(key), Some(value), "{key}");
        }
        assert_eq!(plan.len(), BASELINE.len());
        let cad = plan
            .iter()
            .find(|s| s.key == "kernel.ctrl-alt-del")
            .unwrap();
        assert_eq!(cad.path, PathBuf::from("kernel/ctrl-alt-del"));
    }

    #[test]
    fn plan_with_overrides() {
        let overrides = [
            ov("kernel.kptr_restrict", "1"),
            ov("net.ipv4.ip_forward", "1"),
        ];
        let plan = plan_from(true, &overrides);
        assert_eq!(plan.len(), BASELINE.len() + 1);
        let pos = BASELINE
            .iter()
            .position(|b| b.key == "kernel.kptr_restrict")
            .unwrap();
        let replaced = &plan[pos];
        assert_eq!(replaced.value, "1");
        assert_eq!(replaced.overrides.as_deref(), Some("2"));
        assert_eq!(replaced.reference, "config (overrides KSPP)");
        let appended = plan.last().unwrap();
        assert_eq!(
            appended,
            &SysctlSetting {
                key: "net.ipv4.ip_forward".into(),
                path: PathBuf::from("net/ipv4/ip_forward"),
                value: "1".into(),
                reference: CONFIG_REFERENCE.into(),
                overrides: None,
            }
        );
    }

    #[test]
    fn plan_without_baseline_is_only_the_overrides() {
        let plan = plan_from(
            false,
            &[ov("vm.swappiness", "10"), ov("vm.swappiness", "20")],
        );
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].key, "vm.swappiness");
        assert_eq!(plan[0].value, "20");
        assert_eq!(plan[0].overrides, None);
        assert!(plan_from(false, &[]).is_empty());
    }

    #[test]
    fn lock_modules_is_a_separate_setting() {
        let lock = lock_modules_setting();
        assert_eq!(lock.key, "kernel.modules_disabled");
        assert_eq!(lock.path, PathBuf::from("kernel/modules_disabled"));
        assert_eq!(lock.value, "1");
    }

    fn fake_proc_sys(keys: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for key in keys {
            let path = dir.path().join(key_path(key));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "").unwrap();
        }
        dir
    }

    #[test]
    fn apply_writes_values_and_reports_missing_keys() {
        let dir = fake_proc_sys(&["kernel.kptr_restrict", "kernel.yama.ptrace_scope"]);
        let plan = plan_from(
            false,
            &[
                ov("kernel.kptr_restrict", "2"),
                ov("dev.tty.legacy_tiocsti", "0"),
                ov("kernel.yama.ptrace_scope", "2"),
            ],
        );
        let report = apply(&plan, dir.path()).unwrap();
        assert_eq!(
            report,
            SysctlReport {
                applied: vec![
                    "kernel.kptr_restrict".into(),
                    "kernel.yama.ptrace_scope".into()
                ],
                missing: vec!["dev.tty.legacy_tiocsti".into()],
            }
        );
        let read = |rel: &str| std::fs::read_to_string(dir.path().join(rel)).unwrap();
        assert_eq!(read("kernel/kptr_restrict"), "2");
        assert_eq!(read("kernel/yama/ptrace_scope"), "2");
    }

    #[test]
    fn apply_fails_on_a_key_that_cannot_be_written() {
        let dir = fake_proc_sys(&["kernel.kptr_restrict"]);
        // A directory where the file should be: it exists, but cannot be opened for writing.
        std::fs::create_dir_all(dir.path().join("kernel/dmesg_restrict")).unwrap();
        let plan = plan_from(
            false,
            &[
                ov("kernel.kptr_restrict", "2"),
                ov("kernel.dmesg_restrict", "1"),
                ov("kernel.sysrq", "0"),
            ],
        );
        let err = apply(&plan, dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SysctlError::Write { .. }), "{err:?}");
        assert!(text.contains("kernel.dmesg_restrict=1"), "{text}");
        assert!(text.contains("EISDIR"), "{text}");
    }

    #[test]
    fn read_back_comparison_ignores_whitespace() {
        assert!(same_value("2\n", "2"));
        assert!(same_value("4\t4\t1\t7\n", "4 4 1 7"));
        assert!(!same_value("1\n", "2"));
    }
}
