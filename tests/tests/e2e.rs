//! End-to-end tests: build images from the default host (`examples/host.toml`, with the checker
//! as its service) and boot them in QEMU, then judge the guest from the checker's report.
//!
//! Two boots in all: the default image (shared by every test that reads the report) and a
//! fail-closed image. Boots are serialised by the harness. Without `qemu-system-x86_64` the boot
//! tests print a skip reason, except when `CI` is set, where that is a failure.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rampart_tests::expect::{check_mounts, check_sysctls, mount_at, planned_sysctls};
use rampart_tests::harness::{self, scratch, test_env as env, Boot, TestService};
use rampart_tests::report::{find_report, Report};

/// The default image, booted once.
struct MainBoot {
    cfg: rampart_config::HostConfig,
    boot: Boot,
    report: Result<Report, String>,
}

/// Writes a host derived from the example with `services` and `sysctl`, and builds it.
fn build_image(
    name: &str,
    services: &[TestService],
    sysctl: &[(&str, &str)],
) -> (PathBuf, PathBuf) {
    let env = env();
    let dir = scratch(name);
    let text =
        harness::host_from_example(&env.example, &env.rampart_check(), services, sysctl).unwrap();
    let config = harness::write_host(&dir, &text).unwrap();
    let out = dir.join("image");
    let built = harness::build(env, &config, &out).unwrap();
    assert!(
        built.status.success(),
        "rampart-image build {} failed ({}):\n{}",
        config.display(),
        built.status,
        built.combined()
    );
    eprintln!("built {name} in {:.1}s", built.elapsed.as_secs_f64());
    (config, out)
}

/// The default image with the checker, booted once; `None` when QEMU tests are skipped.
fn main_boot(test: &str) -> Option<&'static MainBoot> {
    if !harness::qemu_or_skip(test).unwrap() {
        return None;
    }
    static BOOT: OnceLock<MainBoot> = OnceLock::new();
    Some(BOOT.get_or_init(|| {
        let (config, image) = build_image("default", &[TestService::checker(&["report"])], &[]);
        let cfg = rampart_config::load(&config).unwrap();
        let boot = harness::boot(env(), &image, "default").unwrap();
        let report = find_report(&boot.console()).map_err(|e| e.to_string());
        MainBoot { cfg, boot, report }
    }))
}

impl MainBoot {
    fn report(&self) -> &Report {
        match &self.report {
            Ok(r) => {
                if !r.errors.is_empty() {
                    eprintln!("the checker could not read everything: {:#?}", r.errors);
                }
                r
            }
            Err(e) => panic!("{e}\n{}", self.boot.tail(60)),
        }
    }
}

#[test]
fn guest_powers_off_cleanly_after_its_service() {
    let Some(m) = main_boot("guest_powers_off_cleanly_after_its_service") else {
        return;
    };
    let console = m.boot.console();
    assert!(
        m.boot.output.status.success(),
        "rampart-image boot exited with {}\n{}",
        m.boot.output.status,
        m.boot.tail(60)
    );
    for line in [
        "rampart-init: services started at ",
        "rampart-init: poweroff",
    ] {
        assert!(
            console.contains(line),
            "no `{line}` on the console\n{}",
            m.boot.tail(60)
        );
    }
    assert!(
        !console.contains("rampart-init: fatal"),
        "{}",
        m.boot.tail(60)
    );
    let started = console.find("rampart-init: services started at ").unwrap();
    let report = console.find("RAMPART-CHECK ").unwrap_or(usize::MAX);
    let poweroff = console.rfind("rampart-init: poweroff").unwrap();
    assert!(
        started < report && report < poweroff,
        "the console is out of order\n{}",
        m.boot.tail(60)
    );
}

#[test]
fn every_planned_mount_has_its_exact_flags() {
    let Some(m) = main_boot("every_planned_mount_has_its_exact_flags") else {
        return;
    };
    let report = m.report();
    let plan = rampart_init::mount::plan(&m.cfg);
    assert!(!plan.is_empty());
    let problems = check_mounts(&plan, &report.mounts);
    assert!(
        problems.is_empty(),
        "mounts differ from the plan:\n  {}\nguest mountinfo:\n{:#?}",
        problems.join("\n  "),
        report.mounts
    );
    // Nothing is mounted beyond the plan, the root and the network step's read-only binds of the
    // generated /etc/hosts and /etc/resolv.conf (no debugfs, no tracefs).
    let binds = [
        rampart_init::network::files::ETC_HOSTS,
        rampart_init::network::files::ETC_RESOLV,
    ];
    for target in binds {
        let m = mount_at(&report.mounts, target).unwrap();
        assert!(m.options.iter().any(|o| o == "ro"), "{m:?}");
    }
    let planned: Vec<String> = plan
        .iter()
        .map(|s| s.target.to_string_lossy().into_owned())
        .chain(binds.iter().map(|b| (*b).to_owned()))
        .collect();
    let extra: Vec<&str> = report
        .mounts
        .iter()
        .map(|m| m.target.as_str())
        .filter(|t| *t != "/" && !planned.iter().any(|p| p == t))
        .collect();
    assert!(extra.is_empty(), "mounts outside the plan: {extra:?}");
    let cgroup = mount_at(&report.mounts, "/sys/fs/cgroup").unwrap();
    for opt in ["nsdelegate", "memory_recursiveprot"] {
        assert!(cgroup.super_options.iter().any(|o| o == opt), "{cgroup:?}");
    }
}

#[test]
fn root_is_read_only() {
    let Some(m) = main_boot("root_is_read_only") else {
        return;
    };
    let report = m.report();
    let root = mount_at(&report.mounts, "/").expect("no / in mountinfo");
    assert!(root.has_option("ro"), "/ is mounted {:?}", root.options);
    assert!(report.root_read_only, "statvfs(/) is not read-only");
    assert_ne!(
        root.fstype, "rootfs",
        "/ is still the initramfs: runc cannot pivot_root from it"
    );
}

#[test]
fn cgroup_controllers_are_enabled_and_services_have_their_own_cgroup() {
    let Some(m) = main_boot("cgroup_controllers_are_enabled_and_services_have_their_own_cgroup")
    else {
        return;
    };
    let report = m.report();
    let enabled: Vec<&str> = report.cgroup_subtree_control.split_whitespace().collect();
    for c in ["cpu", "memory", "pids", "io"] {
        assert!(
            enabled.contains(&c),
            "{c} not in subtree_control {enabled:?}"
        );
    }
    let own = report
        .self_cgroup
        .strip_prefix("0::")
        .unwrap_or(&report.self_cgroup);
    let pid1 = report
        .pid1_cgroup
        .strip_prefix("0::")
        .unwrap_or(&report.pid1_cgroup);
    assert_ne!(own, "/", "the service runs in the root cgroup");
    assert_ne!(pid1, "/", "PID 1 stays in the root cgroup");
    assert_ne!(own, pid1, "the service shares PID 1's cgroup");
    let expected = rampart_init::cgroup::service_cgroup(Path::new("/"), "check");
    assert_eq!(
        Path::new(own),
        expected,
        "the service is not in its planned cgroup"
    );
}

#[test]
fn every_baseline_sysctl_is_at_its_value() {
    let Some(m) = main_boot("every_baseline_sysctl_is_at_its_value") else {
        return;
    };
    let report = m.report();
    let planned = planned_sysctls(&m.cfg);
    assert!(planned.len() > 30, "the plan is too small: {planned:?}");
    let c = check_sysctls(&planned, &report.sysctls);
    if !c.missing.is_empty() {
        eprintln!("skipped (not on this kernel): {}", c.missing.join(", "));
    }
    assert!(
        c.problems.is_empty(),
        "sysctls differ:\n  {}\nchecker errors: {:#?}",
        c.problems.join("\n  "),
        report.errors
    );
    assert!(c.matched.len() + c.missing.len() == planned.len());
    assert!(c.matched.iter().any(|k| k == "kernel.kptr_restrict"));
}

#[test]
fn a_thousand_orphans_leave_no_zombie() {
    let Some(m) = main_boot("a_thousand_orphans_leave_no_zombie") else {
        return;
    };
    let o = &m.report().orphans;
    eprintln!(
        "orphans: {} spawned, adopted by {:?}, gone after {} ms, {} zombies after",
        o.spawned,
        o.adopted_by,
        o.waited_ms,
        o.zombies_after.len()
    );
    assert!(o.child_ok, "the orphaning child failed");
    assert!(
        o.adopted_by.iter().all(|p| *p == 1),
        "the orphans were adopted by {:?}, not PID 1",
        o.adopted_by
    );
    assert_eq!(o.spawned, 1000, "not every orphan could be forked");
    assert!(
        o.remaining.is_empty(),
        "orphans left after {} ms: {:?}",
        o.waited_ms,
        o.remaining
    );
    assert!(o.zombies_after.is_empty(), "zombies: {:?}", o.zombies_after);
    assert!(
        m.report().zombies_before.is_empty(),
        "zombies before: {:?}",
        m.report().zombies_before
    );
}

#[test]
fn a_required_sysctl_that_cannot_be_set_fails_closed() {
    if !harness::qemu_or_skip("a_required_sysctl_that_cannot_be_set_fails_closed").unwrap() {
        return;
    }
    // The kernel refuses kptr_restrict > 2 with EINVAL.
    let (_, image) = build_image(
        "fail-closed",
        &[TestService::checker(&["report"])],
        &[("kernel.kptr_restrict", "5")],
    );
    let boot = harness::boot(env(), &image, "fail-closed").unwrap();
    let console = boot.console();
    let fatal = console
        .lines()
        .find(|l| l.contains("rampart-init: fatal: "))
        .unwrap_or_else(|| panic!("no fatal line\n{}", boot.tail(60)));
    assert!(
        fatal.contains("kernel.kptr_restrict"),
        "the fatal line does not name the key: {fatal}"
    );
    assert!(
        console.contains("rampart-init: no service started"),
        "{}",
        boot.tail(60)
    );
    assert!(
        !console.contains("RAMPART-CHECK "),
        "the checker ran\n{}",
        boot.tail(60)
    );
    assert!(
        !console.contains("rampart-init: services started"),
        "{}",
        boot.tail(60)
    );
    assert!(
        boot.output.status.success(),
        "the guest did not power off cleanly ({})\n{}",
        boot.output.status,
        boot.tail(60)
    );
}

/// (name, file text, the key the error must name, its line, a word of the reason)
const BROKEN: &[(&str, &str, &str, usize, &str)] = &[
    (
        "unknown-key",
        "[host]\nhostname = \"broken\"\ncolour = \"blue\"\n",
        "host.colour",
        3,
        "unknown field",
    ),
    (
        "bad-value",
        "[host]\nhostname = \"broken\"\n\n[mounts]\nrun_size = \"lots\"\n",
        "mounts.run_size",
        5,
        "unit",
    ),
    (
        "bad-action",
        "[[service]]\nname = \"x\"\nexec = [\"/bin/true\"]\non_exit = \"explode\"\n",
        "service[0].on_exit",
        4,
        "explode",
    ),
];

#[test]
fn a_broken_config_is_refused_by_build_with_key_and_line() {
    let env = env();
    for (name, text, key, line, reason) in BROKEN {
        let dir = scratch(&format!("broken-{name}"));
        let config = harness::write_host(&dir, text).unwrap();
        let out = dir.join("image");
        let built = harness::build(env, &config, &out).unwrap();
        let output = built.combined();
        assert!(
            !built.status.success(),
            "{name}: build accepted it:\n{output}"
        );
        assert!(
            output.contains(key),
            "{name}: the output does not name `{key}`:\n{output}"
        );
        let at = format!("host.toml:{line}:");
        assert!(
            output.contains(&at),
            "{name}: the output does not give `{at}`:\n{output}"
        );
        assert!(
            output.contains(reason),
            "{name}: the output does not say `{reason}`:\n{output}"
        );
        assert!(
            !out.join("initrd").exists(),
            "{name}: an initrd was written anyway"
        );
    }
}

#[test]
fn two_builds_of_the_same_input_are_byte_identical() {
    let env = env();
    let dir = scratch("reproducible");
    let text = harness::host_from_example(
        &env.example,
        &env.rampart_check(),
        &[TestService::checker(&["report"])],
        &[],
    )
    .unwrap();
    let config = harness::write_host(&dir, &text).unwrap();
    let mut outputs = Vec::new();
    for n in ["a", "b"] {
        let out = dir.join(n);
        let built = harness::build(env, &config, &out).unwrap();
        assert!(
            built.status.success(),
            "build {n} failed:\n{}",
            built.combined()
        );
        outputs.push(out);
    }
    for file in ["initrd", "manifest.json", "cmdline", "kernel"] {
        let a = std::fs::read(outputs[0].join(file)).unwrap();
        let b = std::fs::read(outputs[1].join(file)).unwrap();
        assert!(!a.is_empty(), "{file} is empty");
        assert!(
            a == b,
            "{file} differs between two builds of the same input"
        );
    }
}
