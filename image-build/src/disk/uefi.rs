//! Booting a disk image under UEFI: OVMF's code as a read-only pflash, a fresh copy of its
//! variable store, the disk as a virtio drive. [`uefi_args`] is the pure argv builder;
//! [`boot`] runs it with [`crate::qemu::run`].
//!
//! The kernel command line lives in the UKI, so `--append` does not apply to a disk image.

use std::path::{Path, PathBuf};

use crate::manifest::Manifest;
use crate::qemu::{self, Accel, BootOptions, Outcome, QemuError};

/// OVMF's firmware code (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
/// OVMF's variable store template.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// The disk image file name in an image directory.
pub const DISK: &str = "disk.raw";
/// The per-boot copy of the variable store, in the image directory.
pub const VARS_COPY: &str = "efivars.fd";

/// `DIR/disk.raw` when `DIR` holds a disk image (its manifest says so).
pub fn disk_image(dir: &Path) -> Option<PathBuf> {
    let disk = dir.join(DISK);
    let m = Manifest::read(&dir.join("manifest.json")).ok()?;
    (m.disk.is_some() && disk.is_file()).then_some(disk)
}

/// The argv after the program name for a UEFI boot of `disk` with variable store `vars`.
pub fn uefi_args(opts: &BootOptions, accel: Accel, disk: &Path, vars: &Path) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-machine", "q35", "-nodefaults", "-no-user-config"]);
    match accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg | Accel::Auto => push(&["-accel", "tcg,thread=multi", "-cpu", "max"]),
    }
    push(&[
        "-m",
        &opts.memory_mib.to_string(),
        "-smp",
        &opts.cpus.to_string(),
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        "-monitor",
        "none",
    ]);
    push(&[
        "-drive",
        &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
        "-drive",
        &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
        "-drive",
        &format!("file={},if=virtio,format=raw", disk.display()),
    ]);
    for arg in qemu::device_args(opts) {
        push(&[&arg]);
    }
    for d in &opts.disks {
        push(&[
            "-drive",
            &format!("file={},if=virtio,format=raw", d.display()),
        ]);
    }
    a
}

/// Boot `disk` under OVMF.
pub fn boot(opts: &BootOptions, disk: &Path) -> Result<Outcome, QemuError> {
    for p in [OVMF_CODE, OVMF_VARS] {
        std::fs::metadata(p).map_err(|source| QemuError::ReadImage {
            path: PathBuf::from(p),
            source,
        })?;
    }
    let vars = opts.dir.join(VARS_COPY);
    std::fs::copy(OVMF_VARS, &vars).map_err(|source| QemuError::ReadImage {
        path: vars.clone(),
        source,
    })?;
    if opts.append.is_some() {
        tracing::warn!("--append is ignored for a disk image: its command line is in the UKI");
    }
    // A disk image has no separate kernel to probe KVM with: auto means TCG unless asked.
    let accel = match opts.accel {
        Accel::Auto => Accel::Tcg,
        other => qemu::resolve_accel(other, Path::new("/nonexistent"))?,
    };
    let args = uefi_args(opts, accel, disk, &vars);
    tracing::info!("running {} {}", qemu::QEMU, args.join(" "));
    Ok(qemu::run(qemu::QEMU, &args, opts.timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn args_for_a_uefi_disk_boot() {
        let mut o = BootOptions::new("/img".into());
        o.disks = vec!["/d/extra.img".into()];
        o.forwards = vec!["8080:80".parse().unwrap()];
        let a = uefi_args(
            &o,
            Accel::Tcg,
            Path::new("/img/disk.raw"),
            Path::new("/img/efivars.fd"),
        );
        assert!(has_pair(&a, "-accel", "tcg,thread=multi"));
        assert!(has_pair(
            &a,
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd"
        ));
        assert!(has_pair(
            &a,
            "-drive",
            "if=pflash,format=raw,unit=1,file=/img/efivars.fd"
        ));
        assert!(has_pair(
            &a,
            "-drive",
            "file=/img/disk.raw,if=virtio,format=raw"
        ));
        assert!(has_pair(
            &a,
            "-drive",
            "file=/d/extra.img,if=virtio,format=raw"
        ));
        assert!(has_pair(&a, "-device", "virtio-net-pci,netdev=net0"));
        // --hostfwd and --control reach a disk boot too.
        let mut o2 = o.clone();
        o2.hostfwds = vec!["tcp:19100-:9100".parse().unwrap()];
        o2.control = Some("/tmp/c.sock".into());
        let b = uefi_args(
            &o2,
            Accel::Tcg,
            Path::new("/img/disk.raw"),
            Path::new("/img/efivars.fd"),
        );
        assert!(has_pair(
            &b,
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:19100-:9100"
        ));
        assert!(has_pair(
            &b,
            "-device",
            "virtserialport,chardev=rampartctl,name=org.rampart.control"
        ));
        assert!(!a
            .iter()
            .any(|x| x == "-kernel" || x == "-initrd" || x == "-append"));
        // The image's disk comes before extra disks (it is vda).
        let pos = |s: &str| a.iter().position(|x| x.contains(s)).unwrap();
        assert!(pos("disk.raw") < pos("extra.img"));
    }

    #[test]
    fn only_directories_with_a_disk_manifest_are_disk_images() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(disk_image(dir.path()), None);
        std::fs::write(dir.path().join(DISK), b"x").unwrap();
        assert_eq!(disk_image(dir.path()), None, "no manifest");
    }
}
