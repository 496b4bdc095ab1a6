//! The audit's checks, one function per area; each appends its items to the [`Audit`].

use std::path::Path;

use rampart_config::hardening::{cmdline_key, Lockdown, Mode, HARDENED_CMDLINE, MANAGED_KEYS};
use rampart_config::HostConfig;

use super::mountinfo::{self, MountEntry};
use super::{Audit, Item, LiveFirewall, Paths, Status};
use crate::firewall::readback;
use crate::mount::MountFlags;
use crate::security;

impl Audit {
    fn push(
        &mut self,
        item: String,
        expected: String,
        actual: String,
        status: Status,
        reference: &str,
        mode: Mode,
    ) {
        self.items.push(Item {
            item,
            expected,
            actual,
            status,
            reference: reference.to_owned(),
            mode,
        });
    }

    fn compare(
        &mut self,
        item: String,
        expected: String,
        actual: String,
        reference: &str,
        mode: Mode,
    ) {
        let status = if expected == actual {
            Status::Pass
        } else {
            Status::Fail
        };
        self.push(item, expected, actual, status, reference, mode);
    }
}

fn pass_fail(ok: bool) -> Status {
    if ok {
        Status::Pass
    } else {
        Status::Fail
    }
}

/// The CIS Debian Linux 12 section (1.1.2.x) of a mount point, where there is one.
pub fn mount_reference(target: &str) -> &'static str {
    match target {
        "/tmp" => "CIS 1.1.2.1",
        "/dev/shm" => "CIS 1.1.2.2",
        "/var" => "CIS 1.1.2.4",
        "/var/tmp" => "CIS 1.1.2.5",
        "/var/log" => "CIS 1.1.2.6",
        _ => "",
    }
}

/// The flags of a mountinfo entry as a [`MountFlags`].
fn flags_of(e: &MountEntry) -> MountFlags {
    [
        ("ro", MountFlags::RDONLY),
        ("nosuid", MountFlags::NOSUID),
        ("nodev", MountFlags::NODEV),
        ("noexec", MountFlags::NOEXEC),
    ]
    .into_iter()
    .filter(|(name, _)| e.has(name))
    .fold(MountFlags::EMPTY, |acc, (_, f)| acc | f)
}

fn describe(fstype: &str, flags: MountFlags) -> String {
    let f = flags.to_string();
    if f.is_empty() {
        format!("{fstype} rw")
    } else if flags.contains(MountFlags::RDONLY) {
        format!("{fstype} {f}")
    } else {
        format!("{fstype} rw,{f}")
    }
}

/// Reads PID 1's mount table (the host's view even from a service with its own mount
/// namespace); falls back to the caller's own.
fn read_mountinfo(proc: &Path) -> Result<String, String> {
    std::fs::read_to_string(proc.join("1/mountinfo"))
        .or_else(|_| std::fs::read_to_string(proc.join("self/mountinfo")))
        .map_err(|e| format!("unreadable: {e}"))
}

/// Every planned mount with its type and flags, and the read-only root.
pub fn mounts(a: &mut Audit, cfg: &HostConfig, paths: &Paths) {
    let mode = cfg.hardening.mode.audit;
    let entries = match read_mountinfo(&paths.proc) {
        Ok(t) => mountinfo::parse(&t),
        Err(e) => {
            a.push(
                "mounts".to_owned(),
                "readable mount table".to_owned(),
                e,
                Status::Fail,
                "",
                mode,
            );
            return;
        }
    };
    let root_ok = mountinfo::visible(&entries, "/").map(|e| (e.has("ro"), flags_of(e)));
    a.push(
        "mount /".to_owned(),
        "ro".to_owned(),
        root_ok.map_or_else(|| "absent".to_owned(), |(_, f)| f.to_string()),
        pass_fail(root_ok.is_some_and(|(ro, _)| ro)),
        "",
        mode,
    );
    for spec in crate::disk::expected_plan(cfg, &paths.proc) {
        let target = spec.target.to_string_lossy().into_owned();
        let expected = describe(&spec.fstype, spec.flags);
        let actual = mountinfo::visible(&entries, &target).map_or_else(
            || "not mounted".to_owned(),
            |e| describe(&e.fstype, flags_of(e)),
        );
        a.compare(
            format!("mount {target}"),
            expected,
            actual,
            mount_reference(&target),
            mode,
        );
    }
    for unwanted in ["/sys/kernel/debug", "/sys/kernel/tracing"] {
        let m = mountinfo::visible(&entries, unwanted);
        a.push(
            format!("mount {unwanted}"),
            "not mounted".to_owned(),
            m.map_or_else(
                || "not mounted".to_owned(),
                |e| describe(&e.fstype, flags_of(e)),
            ),
            pass_fail(m.is_none()),
            "KSPP",
            mode,
        );
    }
}

/// Reads a sysctl under `proc/sys`; `Ok(None)` when this kernel lacks it.
fn read_sysctl(proc: &Path, rel: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(proc.join("sys").join(rel)) {
        Ok(v) => Ok(Some(v.split_whitespace().collect::<Vec<_>>().join(" "))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("unreadable: {e}")),
    }
}

fn sysctl_item(
    a: &mut Audit,
    proc: &Path,
    key: &str,
    rel: &Path,
    want: &str,
    reference: &str,
    mode: Mode,
) {
    let want = want.split_whitespace().collect::<Vec<_>>().join(" ");
    match read_sysctl(proc, rel) {
        Ok(Some(v)) => a.compare(format!("sysctl {key}"), want, v, reference, mode),
        Ok(None) => a.push(
            format!("sysctl {key}"),
            want,
            "absent on this kernel".to_owned(),
            Status::Skip,
            reference,
            mode,
        ),
        Err(e) => a.push(
            format!("sysctl {key}"),
            want,
            e,
            Status::Fail,
            reference,
            mode,
        ),
    }
}

/// Every planned sysctl.
pub fn sysctls(a: &mut Audit, cfg: &HostConfig, paths: &Paths) {
    let mode = cfg.hardening.mode.sysctl;
    for s in crate::sysctl::plan(cfg) {
        sysctl_item(
            a,
            &paths.proc,
            &s.key,
            &s.path,
            &s.value,
            &s.reference,
            mode,
        );
    }
}

/// The module lock and signature enforcement.
pub fn modules(a: &mut Audit, cfg: &HostConfig, paths: &Paths) {
    let mode = cfg.hardening.mode.lock_modules;
    if cfg.kernel.lock_modules {
        let s = crate::sysctl::lock_modules_setting();
        sysctl_item(a, &paths.proc, &s.key, &s.path, &s.value, "KSPP", mode);
    }
    if cfg.hardening.module_sig_enforce {
        let actual = std::fs::read_to_string(paths.sys.join(security::SIG_ENFORCE_FILE))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        a.compare(
            "module signature enforcement".to_owned(),
            "Y".to_owned(),
            actual,
            "KSPP",
            mode,
        );
    }
}

/// Every required LSM.
pub fn lsms(a: &mut Audit, cfg: &HostConfig, paths: &Paths) {
    let mode = cfg.hardening.mode.lsm;
    if cfg.hardening.lsm.is_empty() {
        return;
    }
    let active = security::active_lsms(&paths.sys);
    for l in &cfg.hardening.lsm {
        let (actual, ok) = match &active {
            Ok(list) if list.contains(l) => ("active".to_owned(), true),
            Ok(list) => (format!("not active (active: {})", list.join(",")), false),
            Err(e) => (e.to_string(), false),
        };
        a.push(
            format!("lsm {l}"),
            "active".to_owned(),
            actual,
            pass_fail(ok),
            "KSPP",
            mode,
        );
    }
}

/// The lockdown level (at least the configured one).
pub fn lockdown(a: &mut Audit, cfg: &HostConfig, paths: &Paths) {
    let want = cfg.hardening.lockdown;
    if want == Lockdown::None {
        return;
    }
    let (actual, ok) = match security::read_lockdown(&paths.sys) {
        Ok(l) => (l.to_string(), l >= want),
        Err(e) => (e.to_string(), false),
    };
    let expected = if want == Lockdown::Confidentiality {
        want.to_string()
    } else {
        format!("{want} or stricter")
    };
    a.push(
        "lockdown".to_owned(),
        expected,
        actual,
        pass_fail(ok),
        "KSPP",
        cfg.hardening.mode.lockdown,
    );
}

fn cmdline_reference(item: &str) -> &'static str {
    let key = cmdline_key(item);
    let hardened = HARDENED_CMDLINE.iter().any(|i| cmdline_key(i.item) == key)
        || MANAGED_KEYS.iter().any(|(k, _)| *k == key);
    if hardened {
        "KSPP"
    } else {
        ""
    }
}

/// Each item of the image's command line against the running one.
pub fn cmdline(a: &mut Audit, cfg: &HostConfig, paths: &Paths) {
    let mode = cfg.hardening.mode.cmdline;
    let expected = match security::read_expected_cmdline(&paths.expected_cmdline) {
        Ok(Some(e)) => e,
        Ok(None) => {
            a.push(
                "cmdline".to_owned(),
                format!("the items of {}", paths.expected_cmdline.display()),
                "no such file".to_owned(),
                Status::Skip,
                "",
                mode,
            );
            return;
        }
        Err(e) => {
            a.push(
                "cmdline".to_owned(),
                "readable".to_owned(),
                e.to_string(),
                Status::Fail,
                "",
                mode,
            );
            return;
        }
    };
    let running = match security::read_running_cmdline(&paths.proc) {
        Ok(r) => r,
        Err(e) => {
            a.push(
                "cmdline".to_owned(),
                expected.join(" "),
                e.to_string(),
                Status::Fail,
                "",
                mode,
            );
            return;
        }
    };
    for c in security::compare_cmdline(&expected, &running) {
        let ok = c.ok();
        a.push(
            format!("cmdline {}", cmdline_key(&c.expected)),
            c.expected.clone(),
            c.actual.unwrap_or_else(|| "absent".to_owned()),
            pass_fail(ok),
            cmdline_reference(&c.expected),
            mode,
        );
    }
}

/// The live rampart table against the planned one: each chain's type, hook, priority, policy
/// and rule count, and no chain the plan lacks.
pub fn firewall(a: &mut Audit, cfg: &HostConfig, live: &LiveFirewall) {
    let mode = cfg.hardening.mode.audit;
    let plan = crate::firewall::plan(cfg);
    let table = format!("firewall table inet {}", plan.table);
    let chains = match live {
        LiveFirewall::Table(c) => {
            a.push(
                table,
                "present".to_owned(),
                "present".to_owned(),
                Status::Pass,
                "CIS 4.3",
                mode,
            );
            c
        }
        LiveFirewall::Absent => {
            a.push(
                table,
                "present".to_owned(),
                "absent".to_owned(),
                Status::Fail,
                "CIS 4.3",
                mode,
            );
            return;
        }
        LiveFirewall::Unreadable(e) => {
            a.push(
                table,
                "present".to_owned(),
                format!("unreadable: {e}"),
                Status::Fail,
                "CIS 4.3",
                mode,
            );
            return;
        }
    };
    let want = readback::expected(&plan);
    for w in &want {
        let actual = chains
            .iter()
            .find(|c| c.name == w.name)
            .map_or_else(|| "absent".to_owned(), readback::ChainSummary::describe);
        a.compare(
            format!("firewall chain {}", w.name),
            w.describe(),
            actual,
            "CIS 4.3",
            mode,
        );
    }
    for extra in chains
        .iter()
        .filter(|c| !want.iter().any(|w| w.name == c.name))
    {
        a.push(
            format!("firewall chain {}", extra.name),
            "absent".to_owned(),
            extra.describe(),
            Status::Fail,
            "CIS 4.3",
            mode,
        );
    }
}

/// The fields of `/proc/PID/status` the audit reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// `CapEff`.
    pub cap_eff: u64,
    /// `CapBnd`.
    pub cap_bnd: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: Option<u8>,
    /// `Seccomp` (0 none, 1 strict, 2 filter).
    pub seccomp: Option<u8>,
}

/// Parses `/proc/PID/status`.
pub fn parse_status(text: &str) -> ProcStatus {
    let mut s = ProcStatus::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "CapEff" => s.cap_eff = u64::from_str_radix(v, 16).unwrap_or(u64::MAX),
            "CapBnd" => s.cap_bnd = u64::from_str_radix(v, 16).unwrap_or(u64::MAX),
            "NoNewPrivs" => s.no_new_privs = v.parse().ok(),
            "Seccomp" => s.seccomp = v.parse().ok(),
            _ => {}
        }
    }
    s
}

/// The capability mask of a list of capability numbers.
pub fn cap_mask(numbers: impl IntoIterator<Item = u8>) -> u64 {
    numbers
        .into_iter()
        .filter(|n| *n < 64)
        .fold(0u64, |m, n| m | (1u64 << n))
}

fn seccomp_name(mode: Option<u8>) -> String {
    match mode {
        Some(0) => "0 (none)".to_owned(),
        Some(1) => "1 (strict)".to_owned(),
        Some(2) => "2 (filter)".to_owned(),
        Some(n) => n.to_string(),
        None => "unknown".to_owned(),
    }
}

/// Each service: its cgroup exists, and every process in it has the planned bounding set
/// (and no effective capability outside it), no_new_privs and seccomp mode, and lives in it.
pub fn services(a: &mut Audit, cfg: &HostConfig, paths: &Paths) {
    let mode = cfg.hardening.mode.audit;
    for svc in &cfg.services {
        let name = svc.name.as_str();
        let dir = crate::cgroup::service_cgroup(&paths.cgroup_root, name);
        let exists = dir.is_dir();
        a.push(
            format!("service {name} cgroup"),
            dir.display().to_string(),
            if exists { "present" } else { "absent" }.to_owned(),
            pass_fail(exists),
            "",
            mode,
        );
        if !exists {
            continue;
        }
        let pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            a.push(
                format!("service {name} process"),
                "running".to_owned(),
                "not running".to_owned(),
                Status::Skip,
                "",
                mode,
            );
            continue;
        }
        let want_caps = cap_mask(svc.capabilities.iter().map(|c| c.number()));
        let want_nnp = u8::from(svc.no_new_privs);
        let want_seccomp = if svc.seccomp.is_some() { 2 } else { 0 };
        let cg_path = format!("/{}/{name}", crate::cgroup::SERVICES_CGROUP);
        let mut statuses = Vec::new();
        for pid in &pids {
            let base = paths.proc.join(pid.to_string());
            // A process that exited between the two reads is not drift.
            let Ok(status) = std::fs::read_to_string(base.join("status")) else {
                continue;
            };
            let cgroup = std::fs::read_to_string(base.join("cgroup")).unwrap_or_default();
            statuses.push((*pid, parse_status(&status), cgroup));
        }
        let caps_bad: Vec<String> = statuses
            .iter()
            .filter(|(_, s, _)| s.cap_bnd != want_caps || s.cap_eff & !want_caps != 0)
            .map(|(p, s, _)| {
                format!(
                    "pid {p} CapBnd {:016x} CapEff {:016x}",
                    s.cap_bnd, s.cap_eff
                )
            })
            .collect();
        let nnp_bad: Vec<String> = statuses
            .iter()
            .filter(|(_, s, _)| s.no_new_privs != Some(want_nnp))
            .map(|(p, s, _)| {
                format!(
                    "pid {p} NoNewPrivs {}",
                    s.no_new_privs.map_or("?".to_owned(), |v| v.to_string())
                )
            })
            .collect();
        let seccomp_bad: Vec<String> = statuses
            .iter()
            .filter(|(_, s, _)| s.seccomp != Some(want_seccomp))
            .map(|(p, s, _)| format!("pid {p} Seccomp {}", seccomp_name(s.seccomp)))
            .collect();
        let cgroup_bad: Vec<String> = statuses
            .iter()
            .filter(|(_, _, cg)| {
                !cg.lines().any(|l| {
                    l.strip_prefix("0::")
                        .is_some_and(|p| p == cg_path || p.starts_with(&format!("{cg_path}/")))
                })
            })
            .map(|(p, _, cg)| format!("pid {p} in {}", cg.trim()))
            .collect();
        let n = statuses.len();
        let mut item = |what: &str, expected: String, bad: Vec<String>, reference: &str| {
            let ok = bad.is_empty();
            a.push(
                format!("service {name} {what}"),
                expected,
                if ok {
                    format!("as expected in {n} process(es)")
                } else {
                    bad.join("; ")
                },
                pass_fail(ok),
                reference,
                mode,
            );
        };
        item(
            "capabilities",
            format!("CapBnd {want_caps:016x}"),
            caps_bad,
            "",
        );
        item(
            "no_new_privs",
            format!("NoNewPrivs {want_nnp}"),
            nnp_bad,
            "",
        );
        item(
            "seccomp",
            format!("Seccomp {}", seccomp_name(Some(want_seccomp))),
            seccomp_bad,
            "",
        );
        item("cgroup membership", format!("0::{cg_path}"), cgroup_bad, "");
    }
}
