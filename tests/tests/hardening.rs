//! End-to-end hardening tests: one image built from the default host with a root test service,
//! booted twice in QEMU.
//!
//! Boot 1 (the image's own command line): PID 1's boot audit passes every item; the service
//! reads `/sys/kernel/security/lockdown` (`[integrity]`), tries `finit_module` with
//! `CAP_SYS_MODULE` after boot (EPERM: modules are locked), runs `rampart-init audit --json`
//! (exit 0, no failed item), changes `kernel.dmesg_restrict` by hand, and runs the audit
//! again (exit 1, that sysctl reported as drift).
//!
//! Boot 2 (the same image with `--append lsm=landlock,lockdown,yama`, which drops AppArmor):
//! no service starts and the console names the missing LSM.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rampart_tests::hardening::{boot_audit_summary, boot_with_append, find_finit};
use rampart_tests::harness::{self, test_env as env, Boot, Env, TestService, CHECKER_IN_IMAGE};

/// What the test service runs (busybox sh): each result on its own console line.
const SCRIPT: &str = "\
B=/bin/busybox; \
echo HARD-LOCKDOWN $($B cat /sys/kernel/security/lockdown); \
CHECKER finit-module $($B head -n 1 /etc/rampart/modules); \
/sbin/init audit --json > /tmp/audit1; echo HARD-AUDIT1-EXIT=$?; \
$B grep -v '\"result\":\"pass\"' /tmp/audit1 | $B sed 's/^/HARD-AUDIT1 /'; \
$B sleep 2; \
echo 0 > /proc/sys/kernel/dmesg_restrict; echo HARD-DMESG-SET=$?; \
/sbin/init audit --json > /tmp/audit2; echo HARD-AUDIT2-EXIT=$?; \
$B grep -v '\"result\":\"pass\"' /tmp/audit2 | $B sed 's/^/HARD-AUDIT2 /'";

/// The host: the default one, its service replaced by the test script as root with the
/// capabilities it needs (sysctl writes and `bpf_jit_harden` reads: SYS_ADMIN; the module
/// probe: SYS_MODULE; reading the ruleset back: NET_ADMIN), in the host's mount namespace.
fn host_text(env: &Env) -> String {
    let script = SCRIPT.replace("CHECKER", CHECKER_IN_IMAGE);
    let service = TestService {
        name: "hardening".to_owned(),
        exec: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script],
        on_exit: Some("poweroff".to_owned()),
        capabilities: vec![
            "CAP_SYS_ADMIN".into(),
            "CAP_SYS_MODULE".into(),
            "CAP_NET_ADMIN".into(),
        ],
    };
    let text =
        harness::host_from_example(&env.example, &env.rampart_check(), &[service], &[]).unwrap();
    let mut doc: toml::Table = text.parse().unwrap();
    let services = doc.get_mut("service").unwrap().as_array_mut().unwrap();
    let svc = services[0].as_table_mut().unwrap();
    svc.insert("namespaces".into(), toml::Value::Array(Vec::new()));
    toml::to_string(&doc).unwrap()
}

struct Built {
    image: PathBuf,
}

/// The image, built once.
fn image() -> &'static Built {
    static IMAGE: OnceLock<Built> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let env = env();
        let dir = env.out_dir.join("hardening");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = harness::write_host(&dir, &host_text(env)).unwrap();
        let image = dir.join("image");
        let built = harness::build(env, &config, &image).unwrap();
        assert!(
            built.status.success(),
            "rampart-image build failed:\n{}",
            built.combined()
        );
        let cmdline = std::fs::read_to_string(image.join("cmdline")).unwrap();
        for item in [
            "init_on_free=1",
            "lockdown=integrity",
            "module.sig_enforce=1",
            "lsm=landlock,lockdown,yama,apparmor",
        ] {
            assert!(
                cmdline.split_whitespace().any(|i| i == item),
                "{item} not in {cmdline}"
            );
        }
        Built { image }
    })
}

fn console_lines<'a>(console: &'a str, prefix: &str) -> Vec<&'a str> {
    console
        .lines()
        .filter_map(|l| l.find(prefix).and_then(|at| l.get(at + prefix.len()..)))
        .map(str::trim)
        .collect()
}

fn value<'a>(console: &'a str, prefix: &str) -> Option<&'a str> {
    console_lines(console, prefix).first().copied()
}

#[test]
fn hardened_boot_audits_clean_locks_down_and_reports_drift() {
    if !harness::qemu_or_skip("hardened_boot_audits_clean_locks_down_and_reports_drift").unwrap() {
        return;
    }
    let built = image();
    let boot: Boot = harness::boot(env(), &built.image, "hardening").unwrap();
    let c = boot.console();
    assert!(
        boot.output.status.success(),
        "boot failed:\n{}",
        boot.tail(60)
    );

    // PID 1's own audit, the last boot step: every item passes.
    let (passed, failed) = boot_audit_summary(&c)
        .unwrap_or_else(|| panic!("no audit summary line:\n{}", boot.tail(60)));
    assert_eq!(failed, 0, "boot audit drift:\n{}", boot.tail(80));
    assert!(passed > 60, "only {passed} items audited");
    let started = c.find("services started at").unwrap();
    let audited = c.find("rampart-init: audit: ").unwrap();
    assert!(
        started < audited,
        "the audit runs after the services started"
    );

    // Lockdown.
    assert_eq!(
        value(&c, "HARD-LOCKDOWN "),
        Some("none [integrity] confidentiality"),
        "{}",
        boot.tail(60)
    );
    // Modules are locked: finit_module fails with EPERM even with CAP_SYS_MODULE.
    assert_eq!(
        find_finit(&c).as_deref(),
        Some("errno=EPERM"),
        "{}",
        boot.tail(60)
    );
    // The audit command on the live host: clean, then drift after a sysctl changed by hand.
    assert_eq!(
        value(&c, "HARD-AUDIT1-EXIT="),
        Some("0"),
        "{}",
        boot.tail(80)
    );
    let first = console_lines(&c, "HARD-AUDIT1 ");
    assert!(
        first.iter().all(|l| !l.contains("\"result\":\"fail\"")),
        "clean audit has failures: {first:#?}"
    );
    assert!(first
        .iter()
        .any(|l| l.contains("\"summary\"") && l.contains("\"failed\":0")));
    assert_eq!(value(&c, "HARD-DMESG-SET="), Some("0"), "{}", boot.tail(60));
    assert_eq!(
        value(&c, "HARD-AUDIT2-EXIT="),
        Some("1"),
        "{}",
        boot.tail(80)
    );
    let second = console_lines(&c, "HARD-AUDIT2 ");
    let drift: Vec<&&str> = second
        .iter()
        .filter(|l| l.contains("\"result\":\"fail\""))
        .collect();
    assert_eq!(drift.len(), 1, "{second:#?}");
    assert!(
        drift[0].contains("\"item\":\"sysctl kernel.dmesg_restrict\"")
            && drift[0].contains("\"expected\":\"1\"")
            && drift[0].contains("\"actual\":\"0\"")
            && drift[0].contains("\"reference\":\"KSPP\""),
        "{}",
        drift[0]
    );
}

#[test]
fn a_command_line_without_a_required_lsm_starts_no_service() {
    if !harness::qemu_or_skip("a_command_line_without_a_required_lsm_starts_no_service").unwrap() {
        return;
    }
    let built = image();
    let boot = boot_with_append(
        env(),
        Path::new(&built.image),
        "hardening-no-apparmor",
        "lsm=landlock,lockdown,yama",
    )
    .unwrap();
    let c = boot.console();
    assert!(
        c.contains("rampart-init: fatal: lsm: required LSM apparmor not active"),
        "{}",
        boot.tail(40)
    );
    assert!(
        c.contains("rampart-init: no service started"),
        "{}",
        boot.tail(40)
    );
    assert!(!c.contains("services started at"), "{}", boot.tail(40));
    assert!(!c.contains("HARD-"), "the service ran:\n{}", boot.tail(40));
    assert!(!c.contains("firewall applied"), "{}", boot.tail(40));
    assert!(c.contains("rampart-init: poweroff"), "{}", boot.tail(40));
}
