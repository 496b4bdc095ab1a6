//! Command-line behaviour of `rampart-image`: `check` and the errors of `build`.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart-image"))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = "[host]\nhostname = \"t\"\n[kernel]\nmodules = []\n";
const BAD: &str = "[host]\nhostname = \"t\"\n[boot]\nfailure_action = \"explode\"\n";

#[test]
fn check_ok_and_problems() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", GOOD);
    let out = bin().arg("check").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let bad = write(dir.path(), "bad.toml", BAD);
    let out = bin().arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.toml:4:"), "{text}");
    assert!(text.contains("failure_action"), "{text}");
}

#[test]
fn build_refuses_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.toml", BAD);
    let out = bin()
        .args(["build", "--config"])
        .arg(&bad)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bad.toml:4:"), "{text}");
    assert!(text.contains("failure_action"), "{text}");
    assert!(!dir.path().join("out/initrd").exists());
}

#[test]
fn build_names_a_missing_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "host.toml", GOOD);
    let out = bin()
        .args(["build", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--kernel")
        .arg(dir.path().join("no-vmlinuz"))
        .arg("--init")
        .arg("/bin/busybox")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("kernel") && text.contains("no-vmlinuz"),
        "{text}"
    );

    let out = bin()
        .args(["build", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no kernel: pass --kernel"), "{text}");
}

#[test]
fn boot_of_a_missing_image_is_a_qemu_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("boot")
        .arg(dir.path().join("nothing"))
        .args(["--accel", "tcg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("nothing/kernel"), "{text}");
}
