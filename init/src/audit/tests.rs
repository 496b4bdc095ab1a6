//! The audit over fixture trees: a fake `/proc`, `/sys` and cgroup root in a temp dir that
//! match the plan, then one drift at a time.

use std::path::Path;

use rampart_config::hardening::Mode;
use rampart_config::HostConfig;

use super::checks::{cap_mask, parse_status};
use super::*;
use crate::firewall::readback;

const HOST: &str = r#"
[[service]]
name = "web"
exec = ["/bin/web"]
capabilities = ["CAP_NET_BIND_SERVICE"]

[[service]]
name = "batch"
exec = ["/bin/batch"]
"#;

const WEB_PID: u32 = 321;

fn cfg(text: &str) -> HostConfig {
    rampart_config::parse(text, Path::new("/cfg/host.toml")).unwrap()
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn mountinfo_line(
    id: usize,
    target: &str,
    fstype: &str,
    flags: crate::mount::MountFlags,
) -> String {
    format!(
        "{id} 1 0:{id} / {target} {} shared:{id} - {fstype} {fstype} rw\n",
        flags.mountinfo_options()
    )
}

/// A tree where everything matches the plan of `cfg`; returns (dir, paths, firewall).
fn matching_tree(cfg: &HostConfig) -> (tempfile::TempDir, Paths, LiveFirewall) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let paths = Paths {
        proc: root.join("proc"),
        sys: root.join("sys"),
        cgroup_root: root.join("cgroup"),
        expected_cmdline: root.join("etc/rampart/cmdline"),
    };
    // Mounts: a read-only root, then the plan.
    use crate::mount::MountFlags;
    let mut mi = mountinfo_line(
        1,
        "/",
        "tmpfs",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
    );
    for (i, m) in crate::mount::plan(cfg).iter().enumerate() {
        mi.push_str(&mountinfo_line(
            i + 2,
            &m.target.to_string_lossy(),
            &m.fstype,
            m.flags,
        ));
    }
    write(root, "proc/1/mountinfo", &mi);
    // Sysctls: every planned one but the two a 6.1 kernel lacks.
    for s in crate::sysctl::plan(cfg) {
        if s.key == "dev.tty.legacy_tiocsti" || s.key == "kernel.io_uring_disabled" {
            continue;
        }
        write(
            root,
            &format!("proc/sys/{}", s.path.display()),
            &format!("{}\n", s.value),
        );
    }
    write(root, "proc/sys/kernel/modules_disabled", "1\n");
    write(root, "sys/module/module/parameters/sig_enforce", "Y\n");
    write(
        root,
        "sys/kernel/security/lsm",
        "lockdown,capability,landlock,yama,apparmor",
    );
    write(
        root,
        "sys/kernel/security/lockdown",
        "none [integrity] confidentiality\n",
    );
    write(
        root,
        "etc/rampart/cmdline",
        "console=ttyS0\npti=on\nlsm=landlock,lockdown,yama,apparmor\n",
    );
    write(
        root,
        "proc/cmdline",
        "console=ttyS0 pti=on lsm=landlock,lockdown,yama,apparmor\n",
    );
    // Services: web runs (one process), batch has exited (empty cgroup).
    for svc in &cfg.services {
        let name = svc.name.as_str();
        let procs = if name == "web" {
            format!("{WEB_PID}\n")
        } else {
            String::new()
        };
        write(
            root,
            &format!("cgroup/services/{name}/cgroup.procs"),
            &procs,
        );
        if name == "web" {
            let mask = cap_mask(svc.capabilities.iter().map(|c| c.number()));
            write(
                root,
                &format!("proc/{WEB_PID}/status"),
                &format!(
                    "Name:\tweb\nCapInh:\t0000000000000000\nCapPrm:\t{mask:016x}\nCapEff:\t{mask:016x}\nCapBnd:\t{mask:016x}\nNoNewPrivs:\t{}\nSeccomp:\t{}\n",
                    u8::from(svc.no_new_privs),
                    if svc.seccomp.is_some() { 2 } else { 0 }
                ),
            );
            write(
                root,
                &format!("proc/{WEB_PID}/cgroup"),
                "0::/services/web\n",
            );
        }
    }
    let fw = LiveFirewall::Table(readback::expected(&crate::firewall::plan(cfg)));
    (dir, paths, fw)
}

fn failed(a: &Audit) -> Vec<String> {
    a.items
        .iter()
        .filter(|i| i.status == Status::Fail)
        .map(|i| i.item.clone())
        .collect()
}

#[test]
fn a_matching_system_passes_every_item() {
    let c = cfg(HOST);
    let (_dir, paths, fw) = matching_tree(&c);
    let a = run(&c, &paths, &fw);
    assert_eq!(failed(&a), Vec::<String>::new(), "{}", a.human());
    // Skipped: two sysctls this kernel lacks, and the exited service.
    let skipped: Vec<&str> = a
        .items
        .iter()
        .filter(|i| i.status == Status::Skip)
        .map(|i| i.item.as_str())
        .collect();
    assert_eq!(
        skipped,
        [
            "sysctl dev.tty.legacy_tiocsti",
            "sysctl kernel.io_uring_disabled",
            "service batch process"
        ]
    );
    let mounts = crate::mount::plan(&c).len();
    let sysctls = crate::sysctl::plan(&c).len();
    let firewall = 1 + crate::firewall::plan(&c).chains.len();
    // mounts + / + 2 unwanted, sysctls, module lock + signatures, 4 LSMs, lockdown,
    // 3 cmdline items, firewall, web (cgroup + 4) and batch (cgroup + process).
    let want = mounts + 3 + sysctls + 2 + 4 + 1 + 3 + firewall + 5 + 2;
    assert_eq!(a.items.len(), want, "{}", a.human());
    assert_eq!(
        a.summary(),
        format!("{} passed, 0 failed, 3 skipped", want - 3)
    );
    assert!(a.enforced_failures().is_empty());
    let item = |name: &str| a.items.iter().find(|i| i.item == name).unwrap().clone();
    assert_eq!(item("mount /tmp").reference, "CIS 1.1.2.1");
    assert_eq!(item("mount /tmp").expected, "tmpfs rw,nosuid,nodev,noexec");
    assert_eq!(item("sysctl kernel.kptr_restrict").reference, "KSPP");
    assert_eq!(item("lockdown").actual, "integrity");
    assert_eq!(item("cmdline pti").reference, "KSPP");
    assert_eq!(item("cmdline console").reference, "");
}

/// One drift each: (what to change, the item that must fail, and only it).
#[test]
fn each_drift_is_reported() {
    type Edit = fn(&Path, &mut LiveFirewall);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "a sysctl changed by hand",
            |r, _| write(r, "proc/sys/kernel/dmesg_restrict", "0\n"),
            &["sysctl kernel.dmesg_restrict"],
        ),
        (
            "modules unlocked",
            |r, _| write(r, "proc/sys/kernel/modules_disabled", "0\n"),
            &["sysctl kernel.modules_disabled"],
        ),
        (
            "apparmor missing",
            |r, _| {
                write(
                    r,
                    "sys/kernel/security/lsm",
                    "lockdown,capability,landlock,yama",
                )
            },
            &["lsm apparmor"],
        ),
        (
            "lockdown off",
            |r, _| {
                write(
                    r,
                    "sys/kernel/security/lockdown",
                    "[none] integrity confidentiality",
                )
            },
            &["lockdown"],
        ),
        (
            "signatures not enforced",
            |r, _| write(r, "sys/module/module/parameters/sig_enforce", "N\n"),
            &["module signature enforcement"],
        ),
        (
            "lsm overridden on the command line",
            |r, _| {
                write(
                    r,
                    "proc/cmdline",
                    "console=ttyS0 pti=on lsm=landlock,lockdown,yama,apparmor lsm=yama\n",
                )
            },
            &["cmdline lsm"],
        ),
        (
            "a mount lost noexec",
            |r, _| {
                let p = r.join("proc/1/mountinfo");
                let mut t = std::fs::read_to_string(&p).unwrap();
                t.push_str("99 1 0:99 / /tmp rw,nosuid,nodev,relatime - tmpfs tmp rw\n");
                std::fs::write(p, t).unwrap();
            },
            &["mount /tmp"],
        ),
        (
            "debugfs mounted",
            |r, _| {
                let p = r.join("proc/1/mountinfo");
                let mut t = std::fs::read_to_string(&p).unwrap();
                t.push_str("98 1 0:98 / /sys/kernel/debug rw,relatime - debugfs debugfs rw\n");
                std::fs::write(p, t).unwrap();
            },
            &["mount /sys/kernel/debug"],
        ),
        (
            "the service gained a capability and lost no_new_privs",
            |r, _| {
                write(
                    r,
                    &format!("proc/{WEB_PID}/status"),
                    "CapEff:\t0000000000200400\nCapBnd:\t0000000000200400\nNoNewPrivs:\t0\nSeccomp:\t0\n",
                )
            },
            &["service web capabilities", "service web no_new_privs"],
        ),
        (
            "the service process sits in another cgroup",
            |r, _| write(r, &format!("proc/{WEB_PID}/cgroup"), "0::/init\n"),
            &["service web cgroup membership"],
        ),
        (
            "a service cgroup is gone",
            |r, _| std::fs::remove_dir_all(r.join("cgroup/services/batch")).unwrap(),
            &["service batch cgroup"],
        ),
        (
            "the firewall table is gone",
            |_, fw| *fw = LiveFirewall::Absent,
            &["firewall table inet rampart"],
        ),
        (
            "a rule was deleted and a chain added",
            |_, fw| {
                if let LiveFirewall::Table(chains) = fw {
                    chains[0].rules -= 1;
                    let mut extra = chains[0].clone();
                    extra.name = "sneaky".into();
                    chains.push(extra);
                }
            },
            &["firewall chain input", "firewall chain sneaky"],
        ),
    ];
    let c = cfg(HOST);
    for (what, edit, want) in cases {
        let (dir, paths, mut fw) = matching_tree(&c);
        edit(dir.path(), &mut fw);
        let a = run(&c, &paths, &fw);
        assert_eq!(failed(&a), *want, "{what}:\n{}", a.human());
        assert_eq!(a.failed(), want.len(), "{what}");
        assert!(a.summary().contains(&format!("{} failed", want.len())));
    }
}

#[test]
fn warn_mode_failures_do_not_stop_the_boot() {
    let c = cfg(&format!("{HOST}\n[hardening.mode]\nlsm = \"warn\"\n"));
    let (dir, paths, fw) = matching_tree(&c);
    write(dir.path(), "sys/kernel/security/lsm", "capability,yama");
    let a = run(&c, &paths, &fw);
    assert_eq!(a.failed(), 3);
    assert!(a.enforced_failures().is_empty());
    let item = a.items.iter().find(|i| i.item == "lsm apparmor").unwrap();
    assert_eq!(item.mode, Mode::Warn);
    assert!(a.human().contains("FAIL  lsm apparmor: expected active, actual not active (active: capability,yama) [KSPP] (mode warn)"));
    // The same drift under enforce stops it.
    let c = cfg(HOST);
    let a = run(&c, &paths, &fw);
    assert_eq!(a.enforced_failures().len(), 3);
}

#[test]
fn missing_trees_fail_rather_than_pass() {
    let c = cfg(HOST);
    let paths = Paths {
        proc: "/nonexistent/proc".into(),
        sys: "/nonexistent/sys".into(),
        cgroup_root: "/nonexistent/cgroup".into(),
        expected_cmdline: "/nonexistent/cmdline".into(),
    };
    let a = run(&c, &paths, &LiveFirewall::Unreadable("EPERM".into()));
    assert_eq!(a.passed(), 0, "{}", a.human());
    assert!(a.failed() > 5);
}

#[test]
fn reports() {
    let a = Audit {
        items: vec![
            Item {
                item: "sysctl kernel.kptr_restrict".into(),
                expected: "2".into(),
                actual: "1".into(),
                status: Status::Fail,
                reference: "KSPP".into(),
                mode: Mode::Enforce,
            },
            Item {
                item: "mount \"/x\"".into(),
                expected: "tmpfs\tro".into(),
                actual: "tmpfs ro".into(),
                status: Status::Pass,
                reference: String::new(),
                mode: Mode::Enforce,
            },
        ],
    };
    assert_eq!(
        a.json_lines(),
        [
            r#"{"item":"sysctl kernel.kptr_restrict","expected":"2","actual":"1","result":"fail","reference":"KSPP","mode":"enforce"}"#,
            r#"{"item":"mount \"/x\"","expected":"tmpfs\tro","actual":"tmpfs ro","result":"pass","reference":null,"mode":"enforce"}"#,
            r#"{"summary":{"passed":1,"failed":1,"skipped":0}}"#,
        ]
    );
    assert_eq!(
        a.human(),
        "FAIL  sysctl kernel.kptr_restrict: expected 2, actual 1 [KSPP]\nPASS  mount \"/x\": expected tmpfs\tro, actual tmpfs ro\naudit: 1 passed, 1 failed\n"
    );
    assert_eq!(json_string("a\u{1}b"), "\"a\\u0001b\"");
    let s = parse_status(
        "CapEff:\t0000000000000400\nCapBnd:\t000001ffffffffff\nNoNewPrivs:\t1\nSeccomp:\t2\n",
    );
    assert_eq!(s.cap_eff, 0x400);
    assert_eq!(s.cap_bnd, 0x1ff_ffff_ffff);
    assert_eq!((s.no_new_privs, s.seccomp), (Some(1), Some(2)));
    assert_eq!(cap_mask([10, 21]), 0x200400);
}

#[test]
fn only_service_items_are_rechecked() {
    for (item, want) in [
        ("service rampart-relay seccomp", true),
        ("service containerd cgroup", true),
        ("sysctl kernel.kptr_restrict", false),
        ("mount /run", false),
    ] {
        assert_eq!(super::service_item(item), want, "{item}");
    }
}
