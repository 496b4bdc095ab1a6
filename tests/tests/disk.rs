//! End-to-end tests of disk images (`rampart-image build --format disk`): two builds of the
//! same input give the same `disk.raw`; the image boots under UEFI (OVMF) to services started
//! with `/` on the dm-verity device, read-only, and the state partition at `/var`; a file
//! written under `/var/lib` (not synced: the clean shutdown must flush it) is there on the next
//! boot of the same disk; a byte flipped in the root partition makes the boot fail visibly.
//!
//! Three boots in all, in one test (they depend on each other): first boot, second boot of
//! the same disk, boot of a corrupted copy. Without QEMU, OVMF or the disk build tools the test
//! prints why and returns (in CI a missing QEMU fails, as in e2e.rs).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rampart_tests::expect::{check_mounts, mount_at};
use rampart_tests::harness::{self, scratch, test_env as env, Output, TestService};
use rampart_tests::report::find_report;

const MARKER_DIR: &str = "/var/lib/rampart-disk-test";
const EPOCH: &str = "1700000000";

/// What the disk build needs on the build host, or why it cannot run.
fn missing_tools() -> Option<String> {
    let need = [
        (
            "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
            "systemd-boot-efi",
        ),
        ("/usr/share/OVMF/OVMF_CODE.fd", "ovmf"),
    ];
    for (path, pkg) in need {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (apt-get install {pkg})"));
        }
    }
    for (prog, pkg) in [
        ("mksquashfs", "squashfs-tools"),
        ("mkfs.fat", "dosfstools"),
        ("mcopy", "mtools"),
        ("objcopy", "binutils"),
    ] {
        if !harness::in_path(prog) {
            return Some(format!("{prog} is missing (apt-get install {pkg})"));
        }
    }
    if !harness::in_path("mkfs.ext4") && !Path::new("/usr/sbin/mkfs.ext4").exists() {
        return Some("mkfs.ext4 is missing (apt-get install e2fsprogs)".into());
    }
    None
}

/// The test host: the example with one service that writes (first boot) or reads (later
/// boots) a marker under /var/lib, then runs the checker, whose exit powers off.
fn host_text() -> String {
    let env = env();
    let script = format!(
        "B=/bin/busybox; M={MARKER_DIR}/marker; \
         if [ -f $M ]; then echo \"DISK-MARKER found $($B cat $M)\"; \
         else $B mkdir -p {MARKER_DIR} && echo persisted-before-poweroff > $M && echo DISK-MARKER written; fi; \
         exec /usr/bin/rampart-check report"
    );
    let service = TestService {
        name: "check".to_owned(),
        exec: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script],
        on_exit: Some("poweroff".to_owned()),
        capabilities: vec!["CAP_SYS_ADMIN".to_owned()],
    };
    let text =
        harness::host_from_example(&env.example, &env.rampart_check(), &[service], &[]).unwrap();
    // The service may write /var/lib (its mount namespace is read-only otherwise).
    let mut doc: toml::Table = text.parse().unwrap();
    let services = doc.get_mut("service").unwrap().as_array_mut().unwrap();
    services[0].as_table_mut().unwrap().insert(
        "writable_paths".into(),
        toml::Value::Array(vec![toml::Value::String("/var/lib".into())]),
    );
    // containerd's root on the state partition (the bind mount with exec).
    if let Some(c) = doc
        .get_mut("containerd")
        .and_then(toml::Value::as_table_mut)
    {
        c.insert("state".into(), toml::Value::String("disk".into()));
    }
    // The example's containerd service runs too, and the checker waits until it is ready, so
    // the boot shows a UEFI disk reaching containerd ready.
    let example: toml::Table = std::fs::read_to_string(&env.example)
        .unwrap()
        .parse()
        .unwrap();
    let containerd = example
        .get("service")
        .and_then(toml::Value::as_array)
        .and_then(|s| {
            s.iter()
                .find(|t| t.get("name").and_then(toml::Value::as_str) == Some("containerd"))
        })
        .cloned();
    if let Some(containerd) = containerd {
        let services = doc.get_mut("service").unwrap().as_array_mut().unwrap();
        services[0].as_table_mut().unwrap().insert(
            "after".into(),
            toml::Value::Array(vec![toml::Value::String("containerd".into())]),
        );
        services.insert(0, containerd);
    }
    toml::to_string(&doc).unwrap()
}

fn build_disk(config: &Path, out: &Path) -> Output {
    let out = harness::run(
        Command::new(env().rampart_image())
            .args(["build", "--format", "disk", "--config"])
            .arg(config)
            .arg("--out")
            .arg(out)
            .env("SOURCE_DATE_EPOCH", EPOCH),
        Duration::from_secs(900),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "rampart-image build --format disk failed ({}):\n{}",
        out.status,
        out.combined()
    );
    out
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn copy_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["disk.raw", "manifest.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn disk_image_builds_reproducibly_boots_verified_and_keeps_state() {
    if !harness::qemu_or_skip("disk_image_builds_reproducibly_boots_verified_and_keeps_state")
        .unwrap()
    {
        return;
    }
    if let Some(why) = missing_tools() {
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("SKIP disk image test: {why}");
        return;
    }
    let env = env();
    let dir = scratch("disk");
    let config = harness::write_host(&dir, &host_text()).unwrap();

    // Two builds, same bytes.
    let one = dir.join("one");
    let two = dir.join("two");
    let b1 = build_disk(&config, &one);
    let b2 = build_disk(&config, &two);
    eprintln!(
        "disk builds: {:.1}s and {:.1}s",
        b1.elapsed.as_secs_f64(),
        b2.elapsed.as_secs_f64()
    );
    let (h1, h2) = (sha256(&one.join("disk.raw")), sha256(&two.join("disk.raw")));
    assert_eq!(h1, h2, "two builds of the same input differ");
    assert_eq!(
        std::fs::read(one.join("manifest.json")).unwrap(),
        std::fs::read(two.join("manifest.json")).unwrap()
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(one.join("manifest.json")).unwrap()).unwrap();
    let disk = &manifest["disk"];
    assert_eq!(
        disk["disk"]["sha256"].as_str(),
        Some(h1.as_str()),
        "manifest.json records another disk.raw"
    );
    eprintln!(
        "disk.raw {} bytes, UKI {} bytes, initrd {} bytes, root hash {}",
        disk["disk"]["size"],
        disk["uki"]["size"],
        manifest["initrd"]["size"],
        disk["verity_root_hash"]
    );

    // Boot 1 and 2 on a copy of the built disk: the second sees the first's file.
    let run = dir.join("run");
    copy_image(&one, &run);
    let first = rampart_tests::containerd::boot(env, &run, "disk-first").unwrap();
    let console = first.console();
    assert!(
        first.output.status.success(),
        "the disk did not boot to a clean power-off ({})\n{}",
        first.output.status,
        first.tail(80)
    );
    for line in [
        "rampart-init: services started at ",
        "DISK-MARKER written",
        "rampart-init: service ready service=containerd",
        "rampart-init: poweroff",
    ] {
        assert!(console.contains(line), "no `{line}`\n{}", first.tail(80));
    }
    let report = find_report(&console).unwrap_or_else(|e| panic!("{e}\n{}", first.tail(80)));
    let root = mount_at(&report.mounts, "/").expect("no / in mountinfo");
    assert_eq!(
        root.source, "/dev/mapper/root",
        "/ is not the verity device: {root:?}"
    );
    assert_eq!(root.fstype, "squashfs", "{root:?}");
    assert!(root.has_option("ro"), "/ is mounted {:?}", root.options);
    let cfg = rampart_config::load(&config).unwrap();
    let var_source = mount_at(&report.mounts, "/var").map(|m| m.source.clone());
    let plan = rampart_init::disk::with_state(
        rampart_init::mount::plan(&cfg),
        var_source.as_deref().map(Path::new),
        rampart_init::disk::containerd_on_state(&cfg),
    );
    let problems = check_mounts(&plan, &report.mounts);
    assert!(
        problems.is_empty(),
        "mounts differ from the disk plan:\n  {}\n{:#?}",
        problems.join("\n  "),
        report.mounts
    );
    let var = mount_at(&report.mounts, "/var").unwrap();
    assert_eq!(var.fstype, "ext4");
    assert!(var.source.starts_with("/dev/vd"), "{var:?}");
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(var.has_option(opt), "/var lacks {opt}: {var:?}");
    }
    let containerd = mount_at(&report.mounts, "/var/lib/containerd").unwrap();
    if rampart_init::disk::containerd_on_state(&cfg) {
        assert_eq!(containerd.fstype, "ext4", "{containerd:?}");
    }
    assert!(!containerd.has_option("noexec"), "{containerd:?}");
    assert!(containerd.has_option("nosuid") && containerd.has_option("nodev"));

    let second = rampart_tests::containerd::boot(env, &run, "disk-second").unwrap();
    assert!(
        second.output.status.success(),
        "second boot failed ({})\n{}",
        second.output.status,
        second.tail(80)
    );
    assert!(
        second
            .console()
            .contains("DISK-MARKER found persisted-before-poweroff"),
        "the file written before the power-off is gone\n{}",
        second.tail(80)
    );

    // Boot 3: a byte flipped in the root partition (its first block: the squashfs superblock,
    // read when the root is mounted).
    let bad = dir.join("corrupt");
    copy_image(&one, &bad);
    let first_lba = disk["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == "rampart-root")
        .and_then(|p| p["first_lba"].as_u64())
        .expect("no root partition in the manifest");
    let offset = first_lba * 512 + 40;
    let mut bytes = std::fs::read(bad.join("disk.raw")).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(bad.join("disk.raw"), &bytes).unwrap();
    drop(bytes);
    let third = harness::boot(env, &bad, "disk-corrupt").unwrap();
    let console = third.console();
    assert!(
        !third.output.status.success(),
        "a corrupted root booted cleanly\n{}",
        third.tail(60)
    );
    assert!(
        !console.contains("rampart-init: services started"),
        "services started on a corrupted root\n{}",
        third.tail(60)
    );
    assert!(
        console.contains("verity") && console.contains("corrupted"),
        "no dm-verity corruption message on the console\n{}",
        third.tail(60)
    );
}
