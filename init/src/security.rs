//! Kernel hardening steps of the boot: required LSMs, lockdown, the running command line, and
//! the enforce-or-warn policy of `[hardening.mode]`.
//!
//! - [`check_lsms`] reads `/sys/kernel/security/lsm` (securityfs is in the base mount table)
//!   and fails when a required LSM is not active, naming it.
//! - [`set_lockdown`] raises the lockdown level through `/sys/kernel/security/lockdown` and
//!   reads it back (`none [integrity] confidentiality`). The kernel refuses to write the
//!   current level or a lower one, so a level already reached (from `lockdown=` on the command
//!   line) is not written again, and a stricter one is kept.
//! - [`check_cmdline`] compares `/proc/cmdline` with the items the image asked for
//!   (`/etc/rampart/cmdline`, written by `rampart-image`): for each key, the last occurrence
//!   on the running line is the one the kernel uses, and it must be the expected item.
//! - [`under`] applies a step's mode: under `enforce` an error stops the boot (no service
//!   starts), under `warn` it is logged and the boot goes on.
//! - [`apply_sysctls`] is the sysctl step under its mode, and [`hardening_sysctls`] puts
//!   `ptrace_scope` and `max_user_namespaces` into the sysctl plan.
//!
//! All paths are parameters (the sysfs root, the proc root) so tests use temporary trees.

use std::io;
use std::path::{Path, PathBuf};

use rampart_config::hardening::{cmdline_key, Hardening, Lockdown, Mode};

use crate::sysctl::{self, SysctlError, SysctlReport, SysctlSetting};

/// The active LSMs, relative to the sysfs root.
pub const LSM_FILE: &str = "kernel/security/lsm";
/// The lockdown state, relative to the sysfs root.
pub const LOCKDOWN_FILE: &str = "kernel/security/lockdown";
/// Module signature enforcement, relative to the sysfs root (`Y` or `N`).
pub const SIG_ENFORCE_FILE: &str = "module/module/parameters/sig_enforce";
/// The running command line, relative to the proc root.
pub const PROC_CMDLINE: &str = "cmdline";

/// Errors of the hardening steps; each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The list of active LSMs cannot be read.
    #[error("read {}: {source}", path.display())]
    ReadLsm {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Required LSMs are not active.
    #[error("required LSM {} not active (active: {active}; boot with lsm= listing it)", missing.join(", "))]
    MissingLsm {
        /// The file read.
        path: PathBuf,
        /// The missing LSMs, in config order.
        missing: Vec<String>,
        /// What the kernel reported.
        active: String,
    },
    /// The lockdown state cannot be read.
    #[error("read {}: {source}", path.display())]
    ReadLockdown {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The lockdown state does not parse.
    #[error("{}: no current level in {text:?}", path.display())]
    ParseLockdown {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
    },
    /// Writing the lockdown level failed.
    #[error("set lockdown {level} in {}: {source}", path.display())]
    WriteLockdown {
        /// The file.
        path: PathBuf,
        /// The level.
        level: Lockdown,
        /// The error.
        source: io::Error,
    },
    /// The level reads back lower than the one written.
    #[error("set lockdown {level} in {}: reads back {actual}", path.display())]
    VerifyLockdown {
        /// The file.
        path: PathBuf,
        /// The level written.
        level: Lockdown,
        /// The level read back.
        actual: Lockdown,
    },
    /// `/proc/cmdline` cannot be read.
    #[error("read {}: {source}", path.display())]
    ReadCmdline {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The running command line lacks items the image asked for.
    #[error("the running kernel command line lacks {} (asked for by {})", missing.join(" "), expected.display())]
    CmdlineDrift {
        /// The image's list.
        expected: PathBuf,
        /// Expected items whose key is absent or has another value.
        missing: Vec<String>,
    },
}

/// Splits a comma-separated LSM list (`lockdown,capability,landlock,yama,apparmor`).
pub fn parse_lsm_list(text: &str) -> Vec<String> {
    text.trim()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The required LSMs that are not in `active`, in the order required.
pub fn missing_lsms(required: &[String], active: &[String]) -> Vec<String> {
    required
        .iter()
        .filter(|r| !active.contains(r))
        .cloned()
        .collect()
}

/// Reads the active LSMs under `sys` (`/sys` in PID 1).
pub fn active_lsms(sys: &Path) -> Result<Vec<String>, SecurityError> {
    let path = sys.join(LSM_FILE);
    std::fs::read_to_string(&path)
        .map(|t| parse_lsm_list(&t))
        .map_err(|source| SecurityError::ReadLsm { path, source })
}

/// Fails unless every required LSM is active; returns the active list.
pub fn check_lsms(required: &[String], sys: &Path) -> Result<Vec<String>, SecurityError> {
    if required.is_empty() {
        return Ok(Vec::new());
    }
    let active = active_lsms(sys)?;
    let missing = missing_lsms(required, &active);
    if missing.is_empty() {
        Ok(active)
    } else {
        Err(SecurityError::MissingLsm {
            path: sys.join(LSM_FILE),
            missing,
            active: active.join(","),
        })
    }
}

/// The current level in a securityfs lockdown file (`none [integrity] confidentiality`).
pub fn parse_lockdown(text: &str) -> Option<Lockdown> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .and_then(Lockdown::parse)
}

/// Reads the current lockdown level under `sys`.
pub fn read_lockdown(sys: &Path) -> Result<Lockdown, SecurityError> {
    let path = sys.join(LOCKDOWN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| SecurityError::ReadLockdown {
        path: path.clone(),
        source,
    })?;
    parse_lockdown(&text).ok_or_else(|| SecurityError::ParseLockdown {
        path,
        text: text.trim().to_owned(),
    })
}

/// What [`set_lockdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockdownOutcome {
    /// The level was at least the one asked for already (from the command line).
    Already(Lockdown),
    /// The level was raised to the one asked for.
    Raised {
        /// The level before.
        from: Lockdown,
    },
}

/// Raises the lockdown level under `sys` to `level` (nothing to do for `none`).
pub fn set_lockdown(level: Lockdown, sys: &Path) -> Result<LockdownOutcome, SecurityError> {
    if level == Lockdown::None {
        return Ok(LockdownOutcome::Already(Lockdown::None));
    }
    let current = read_lockdown(sys)?;
    if current >= level {
        return Ok(LockdownOutcome::Already(current));
    }
    let path = sys.join(LOCKDOWN_FILE);
    std::fs::write(&path, level.as_str()).map_err(|source| SecurityError::WriteLockdown {
        path: path.clone(),
        level,
        source,
    })?;
    let actual = read_lockdown(sys)?;
    if actual < level {
        return Err(SecurityError::VerifyLockdown {
            path,
            level,
            actual,
        });
    }
    Ok(LockdownOutcome::Raised { from: current })
}

/// The items of a command line (`/proc/cmdline` or the image's one-per-line list).
pub fn parse_cmdline(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// One expected item and what the running line has for its key (the last occurrence, the
/// one the kernel uses); `None` when the key is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineCheck {
    /// The expected item.
    pub expected: String,
    /// The running item with the same key.
    pub actual: Option<String>,
}

impl CmdlineCheck {
    /// Whether the running line has the item.
    pub fn ok(&self) -> bool {
        self.actual.as_deref() == Some(self.expected.as_str())
    }
}

/// Compares each expected item with the running line.
pub fn compare_cmdline(expected: &[String], running: &[String]) -> Vec<CmdlineCheck> {
    expected
        .iter()
        .map(|e| {
            let key = cmdline_key(e);
            let actual = running
                .iter()
                .rev()
                .find(|r| cmdline_key(r) == key)
                .cloned();
            CmdlineCheck {
                expected: e.clone(),
                actual,
            }
        })
        .collect()
}

/// Reads the image's expected list; `Ok(None)` when the image has none.
pub fn read_expected_cmdline(path: &Path) -> Result<Option<Vec<String>>, SecurityError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(parse_cmdline(&t))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecurityError::ReadCmdline {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads `/proc/cmdline` under `proc`.
pub fn read_running_cmdline(proc: &Path) -> Result<Vec<String>, SecurityError> {
    let path = proc.join(PROC_CMDLINE);
    std::fs::read_to_string(&path)
        .map(|t| parse_cmdline(&t))
        .map_err(|source| SecurityError::ReadCmdline { path, source })
}

/// Fails when the running command line lacks an item of the image's list at `expected`
/// (an image without the list has nothing to check). Returns the number of items checked.
pub fn check_cmdline(expected: &Path, proc: &Path) -> Result<usize, SecurityError> {
    let Some(want) = read_expected_cmdline(expected)? else {
        tracing::warn!(
            "{} is absent: the running command line is not checked",
            expected.display()
        );
        return Ok(0);
    };
    let running = read_running_cmdline(proc)?;
    let missing: Vec<String> = compare_cmdline(&want, &running)
        .into_iter()
        .filter(|c| !c.ok())
        .map(|c| c.expected)
        .collect();
    if missing.is_empty() {
        Ok(want.len())
    } else {
        Err(SecurityError::CmdlineDrift {
            expected: expected.to_path_buf(),
            missing,
        })
    }
}

/// Applies a step's mode to its result: `enforce` passes the error on (the boot stops),
/// `warn` logs it as a warning naming the step and returns `Ok(None)`.
pub fn under<T, E: std::fmt::Display>(
    mode: Mode,
    step: &str,
    result: Result<T, E>,
) -> Result<Option<T>, E> {
    match (result, mode) {
        (Ok(v), _) => Ok(Some(v)),
        (Err(e), Mode::Enforce) => Err(e),
        (Err(e), Mode::Warn) => {
            tracing::warn!("{step}: {e} (hardening.mode: warn, boot goes on)");
            Ok(None)
        }
    }
}

/// The sysctl step under its mode: `enforce` stops at the first key that cannot be set,
/// `warn` logs every such key and sets the others.
pub fn apply_sysctls(
    plan: &[SysctlSetting],
    proc_sys: &Path,
    mode: Mode,
) -> Result<SysctlReport, SysctlError> {
    match mode {
        Mode::Enforce => sysctl::apply(plan, proc_sys),
        Mode::Warn => {
            let mut report = SysctlReport::default();
            for setting in plan {
                match sysctl::apply(std::slice::from_ref(setting), proc_sys) {
                    Ok(r) => {
                        report.applied.extend(r.applied);
                        report.missing.extend(r.missing);
                    }
                    Err(e) => {
                        tracing::warn!("sysctl: {e} (hardening.mode.sysctl = warn, boot goes on)");
                    }
                }
            }
            Ok(report)
        }
    }
}

/// The sysfs root in PID 1.
pub const SYS: &str = "/sys";
/// The proc root in PID 1.
pub const PROC: &str = "/proc";

/// Boot step `lsm`: every required LSM is active (under `hardening.mode.lsm`).
pub fn lsm_step(h: &Hardening, sys: &Path) -> Result<(), SecurityError> {
    if let Some(active) = under(h.mode.lsm, "lsm", check_lsms(&h.lsm, sys))? {
        if !h.lsm.is_empty() {
            tracing::info!("lsm: {} active", active.join(","));
        }
    }
    Ok(())
}

/// Boot step `cmdline`: the running command line has what the image asked for (under
/// `hardening.mode.cmdline`).
pub fn cmdline_step(h: &Hardening, expected: &Path, proc: &Path) -> Result<(), SecurityError> {
    under(h.mode.cmdline, "cmdline", check_cmdline(expected, proc))?;
    Ok(())
}

/// Boot step `lockdown`: raise the lockdown level (under `hardening.mode.lockdown`).
pub fn lockdown_step(h: &Hardening, sys: &Path) -> Result<(), SecurityError> {
    match under(h.mode.lockdown, "lockdown", set_lockdown(h.lockdown, sys))? {
        Some(LockdownOutcome::Raised { from }) => {
            tracing::info!("lockdown: {} (was {from})", h.lockdown);
        }
        Some(LockdownOutcome::Already(level)) if h.lockdown != Lockdown::None => {
            tracing::info!("lockdown: {level}");
        }
        _ => {}
    }
    Ok(())
}

/// Boot step `lock-modules`: `kernel.modules_disabled=1` (under
/// `hardening.mode.lock_modules`).
pub fn lock_modules_step(h: &Hardening, proc_sys: &Path) -> Result<(), SysctlError> {
    let lock = sysctl::lock_modules_setting();
    if under(
        h.mode.lock_modules,
        "lock-modules",
        sysctl::apply(std::slice::from_ref(&lock), proc_sys),
    )?
    .is_some()
    {
        tracing::info!("module loading disabled");
    }
    Ok(())
}

/// The reference of the sysctls that `[hardening]` owns.
pub const HARDENING_REFERENCE: &str = "hardening";

/// Puts `kernel.yama.ptrace_scope` and `user.max_user_namespaces` of `[hardening]` into a
/// sysctl plan: the baseline entry's value is replaced in place (or the entry appended when
/// the baseline is off), and `max_user_namespaces`, when set, is appended.
pub fn hardening_sysctls(plan: &mut Vec<SysctlSetting>, h: &Hardening) {
    let mut put = |key: &str, value: String, reference: &str| {
        if let Some(s) = plan.iter_mut().find(|s| s.key == key) {
            if s.value != value {
                let previous = std::mem::replace(&mut s.value, value);
                s.overrides = Some(previous);
                s.reference = format!("{HARDENING_REFERENCE} (overrides {})", s.reference);
            }
        } else {
            plan.push(SysctlSetting {
                key: key.to_owned(),
                path: sysctl::key_path(key),
                value,
                reference: reference.to_owned(),
                overrides: None,
            });
        }
    };
    put(
        "kernel.yama.ptrace_scope",
        h.ptrace_scope.to_string(),
        "KSPP",
    );
    if let Some(n) = h.max_user_namespaces {
        put(
            "user.max_user_namespaces",
            n.to_string(),
            HARDENING_REFERENCE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (p, content) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    #[test]
    fn lsm_lists() {
        let active = parse_lsm_list("lockdown,capability,landlock,yama,apparmor\n");
        assert_eq!(
            active,
            ["lockdown", "capability", "landlock", "yama", "apparmor"]
        );
        let cases: &[(&[&str], &[&str])] = &[
            (&["landlock", "lockdown", "yama", "apparmor"], &[]),
            (&["selinux", "yama", "tomoyo"], &["selinux", "tomoyo"]),
            (&[], &[]),
        ];
        for (required, missing) in cases {
            assert_eq!(missing_lsms(&strings(required), &active), strings(missing));
        }
    }

    #[test]
    fn lsm_check_names_the_missing_one() {
        let sys = tree(&[(LSM_FILE, "lockdown,capability,landlock,yama")]);
        let req = strings(&["landlock", "lockdown", "yama", "apparmor"]);
        let e = check_lsms(&req, sys.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "required LSM apparmor not active (active: lockdown,capability,landlock,yama; boot with lsm= listing it)"
        );
        assert!(check_lsms(&req[..3], sys.path()).is_ok());
        assert!(check_lsms(&[], Path::new("/nonexistent")).is_ok());
        let e = check_lsms(&req, Path::new("/nonexistent")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("read /nonexistent/kernel/security/lsm: "));
    }

    #[test]
    fn lockdown_parsing() {
        let cases = [
            ("[none] integrity confidentiality\n", Some(Lockdown::None)),
            (
                "none [integrity] confidentiality\n",
                Some(Lockdown::Integrity),
            ),
            (
                "none integrity [confidentiality]",
                Some(Lockdown::Confidentiality),
            ),
            ("none integrity confidentiality", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_lockdown(text), want, "{text:?}");
        }
    }

    #[test]
    fn lockdown_already_at_level_is_not_written() {
        let sys = tree(&[(LOCKDOWN_FILE, "none [integrity] confidentiality\n")]);
        assert_eq!(
            set_lockdown(Lockdown::Integrity, sys.path()).unwrap(),
            LockdownOutcome::Already(Lockdown::Integrity)
        );
        // The file is untouched (a regular file would have been overwritten).
        assert_eq!(
            std::fs::read_to_string(sys.path().join(LOCKDOWN_FILE)).unwrap(),
            "none [integrity] confidentiality\n"
        );
        assert_eq!(
            set_lockdown(Lockdown::None, Path::new("/nonexistent")).unwrap(),
            LockdownOutcome::Already(Lockdown::None)
        );
    }

    #[test]
    fn lockdown_write_is_verified() {
        // A plain file holds what is written: "integrity" has no brackets, so it does not parse.
        let sys = tree(&[(LOCKDOWN_FILE, "[none] integrity confidentiality\n")]);
        let e = set_lockdown(Lockdown::Integrity, sys.path()).unwrap_err();
        assert!(matches!(e, SecurityError::ParseLockdown { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(sys.path().join(LOCKDOWN_FILE)).unwrap(),
            "integrity"
        );
        let e = set_lockdown(Lockdown::Integrity, Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(e, SecurityError::ReadLockdown { .. }), "{e}");
    }

    #[test]
    fn cmdline_comparison_uses_the_last_occurrence() {
        let expected = strings(&[
            "slab_nomerge",
            "init_on_free=1",
            "lsm=landlock,lockdown,yama,apparmor",
            "pti=on",
        ]);
        let running = parse_cmdline(
            "console=ttyS0 slab_nomerge init_on_free=1 lsm=landlock,lockdown,yama,apparmor lsm=landlock,lockdown,yama\n",
        );
        let checks = compare_cmdline(&expected, &running);
        let bad: Vec<(&str, Option<&str>)> = checks
            .iter()
            .filter(|c| !c.ok())
            .map(|c| (c.expected.as_str(), c.actual.as_deref()))
            .collect();
        assert_eq!(
            bad,
            [
                (
                    "lsm=landlock,lockdown,yama,apparmor",
                    Some("lsm=landlock,lockdown,yama")
                ),
                ("pti=on", None)
            ]
        );
    }

    #[test]
    fn cmdline_check_over_files() {
        let root = tree(&[
            ("etc/cmdline", "console=ttyS0\npti=on\n"),
            ("proc/cmdline", "console=ttyS0 pti=on quiet\n"),
            ("proc2/cmdline", "console=ttyS0\n"),
        ]);
        let p = root.path();
        assert_eq!(
            check_cmdline(&p.join("etc/cmdline"), &p.join("proc")).unwrap(),
            2
        );
        let e = check_cmdline(&p.join("etc/cmdline"), &p.join("proc2")).unwrap_err();
        assert!(e.to_string().contains("lacks pti=on"), "{e}");
        assert_eq!(
            check_cmdline(&p.join("etc/none"), &p.join("proc2")).unwrap(),
            0
        );
    }

    #[test]
    fn modes() {
        let err: Result<u8, String> = Err("boom".into());
        assert_eq!(under(Mode::Warn, "lsm", err.clone()), Ok(None));
        assert_eq!(under(Mode::Enforce, "lsm", err), Err("boom".to_owned()));
        assert_eq!(
            under::<u8, String>(Mode::Enforce, "lsm", Ok(3)),
            Ok(Some(3))
        );
    }

    #[test]
    fn sysctls_under_warn_go_on() {
        let root = tree(&[("kernel/a", "0\n")]);
        let plan = crate::sysctl::plan_from(
            false,
            &[
                ("kernel.b".into(), "kernel/b/c".into(), "1".into()),
                ("kernel.a".into(), "kernel/a".into(), "1".into()),
            ],
        );
        // kernel/b/c is missing (reported), kernel/a is set: nothing fails either way here.
        let r = apply_sysctls(&plan, root.path(), Mode::Warn).unwrap();
        assert_eq!(r.applied, ["kernel.a"]);
        assert_eq!(r.missing, ["kernel.b"]);
        // A directory where a file should be cannot be written: enforce fails, warn goes on.
        std::fs::create_dir_all(root.path().join("kernel/d")).unwrap();
        let plan = crate::sysctl::plan_from(
            false,
            &[
                ("kernel.d".into(), "kernel/d".into(), "1".into()),
                ("kernel.a".into(), "kernel/a".into(), "2".into()),
            ],
        );
        assert!(apply_sysctls(&plan, root.path(), Mode::Enforce).is_err());
        let r = apply_sysctls(&plan, root.path(), Mode::Warn).unwrap();
        assert_eq!(r.applied, ["kernel.a"]);
    }

    #[test]
    fn hardening_keys_enter_the_sysctl_plan() {
        let h = Hardening::default();
        let mut plan = crate::sysctl::plan_from(true, &[]);
        let n = plan.len();
        hardening_sysctls(&mut plan, &h);
        assert_eq!(plan.len(), n + 1);
        let get = |p: &[SysctlSetting], k: &str| p.iter().find(|s| s.key == k).cloned();
        let ptrace = get(&plan, "kernel.yama.ptrace_scope").unwrap();
        assert_eq!(
            (ptrace.value.as_str(), ptrace.reference.as_str()),
            ("2", "KSPP")
        );
        let userns = get(&plan, "user.max_user_namespaces").unwrap();
        assert_eq!(userns.value, "0");
        assert_eq!(userns.path, PathBuf::from("user/max_user_namespaces"));

        let h = Hardening {
            ptrace_scope: 3,
            max_user_namespaces: None,
            ..Hardening::default()
        };
        let mut plan = crate::sysctl::plan_from(true, &[]);
        hardening_sysctls(&mut plan, &h);
        assert_eq!(plan.len(), n);
        let ptrace = get(&plan, "kernel.yama.ptrace_scope").unwrap();
        assert_eq!(ptrace.value, "3");
        assert_eq!(ptrace.overrides.as_deref(), Some("2"));
        assert_eq!(ptrace.reference, "hardening (overrides KSPP)");

        let mut plan = crate::sysctl::plan_from(false, &[]);
        hardening_sysctls(&mut plan, &h);
        assert_eq!(plan.len(), 1);
    }
}
