//! The unified kernel image: systemd's EFI stub (`linuxx64.efi.stub` from Debian's
//! `systemd-boot-efi`) with `.osrel`, `.cmdline`, `.linux` (the bzImage) and `.initrd`
//! sections added by `objcopy`, placed after the stub's last section on 4 KiB boundaries.
//!
//! `objcopy` stamps PE images with the current time, so [`normalize`] sets the COFF
//! `TimeDateStamp` to a fixed value and recomputes the PE checksum: the same inputs give the
//! same bytes. The image is an ordinary PE file that `sbsign` can sign (docs/disk-image.md).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `systemd-boot-efi` installs the stub.
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Alignment of the added sections' virtual addresses.
pub const SECTION_ALIGN: u64 = 0x1000;

/// Errors of the UKI assembly.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    /// A file is not a PE image we understand.
    #[error("{path}: not a PE32+ image: {reason}")]
    NotPe {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// objcopy failed.
    #[error("objcopy failed ({status}): {stderr}")]
    Objcopy {
        /// Its exit status.
        status: String,
        /// Its error output.
        stderr: String,
    },
}

/// A PE section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its name.
    pub name: String,
    /// Virtual size.
    pub virtual_size: u32,
    /// Virtual address (relative to the image base).
    pub virtual_address: u32,
}

/// Offset of the PE signature, from the DOS header.
fn pe_offset(bytes: &[u8]) -> Option<usize> {
    let off = u32::from_le_bytes(bytes.get(0x3c..0x40)?.try_into().ok()?) as usize;
    (bytes.get(off..off + 4)? == b"PE\0\0").then_some(off)
}

/// The section headers of a PE image.
pub fn sections(bytes: &[u8]) -> Result<Vec<Section>, &'static str> {
    let pe = pe_offset(bytes).ok_or("no PE signature")?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or("truncated header")
    };
    let count = u16_at(pe + 6)? as usize;
    let opt = u16_at(pe + 20)? as usize;
    if u16_at(pe + 24)? != 0x20b {
        return Err("not PE32+");
    }
    let table = pe + 24 + opt;
    (0..count)
        .map(|i| {
            let h = bytes
                .get(table + 40 * i..table + 40 * (i + 1))
                .ok_or("truncated section table")?;
            let name = String::from_utf8_lossy(&h[..8])
                .trim_end_matches('\0')
                .to_string();
            Ok(Section {
                name,
                virtual_size: u32::from_le_bytes(h[8..12].try_into().map_err(|_| "bad")?),
                virtual_address: u32::from_le_bytes(h[12..16].try_into().map_err(|_| "bad")?),
            })
        })
        .collect()
}

/// Virtual addresses for sections of `sizes`, in order, after `end` (the end of the stub's
/// last section), each aligned to [`SECTION_ALIGN`].
pub fn place(end: u64, sizes: &[u64]) -> Vec<u64> {
    let mut next = end.div_ceil(SECTION_ALIGN) * SECTION_ALIGN;
    sizes
        .iter()
        .map(|s| {
            let at = next;
            next = (at + s).div_ceil(SECTION_ALIGN) * SECTION_ALIGN;
            at
        })
        .collect()
}

/// The PE checksum (the algorithm of `imagehlp`'s `CheckSumMappedFile`), skipping the
/// checksum field at `field`.
pub fn pe_checksum(bytes: &[u8], field: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in bytes.chunks(2).enumerate() {
        if i * 2 == field || i * 2 == field + 2 {
            continue;
        }
        let w = u64::from(chunk[0]) | chunk.get(1).map_or(0, |b| u64::from(*b) << 8);
        sum += w;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

/// Set the COFF timestamp to `timestamp` and recompute the checksum (when the image has one).
pub fn normalize(bytes: &mut [u8], timestamp: u32) -> Result<(), &'static str> {
    let pe = pe_offset(bytes).ok_or("no PE signature")?;
    bytes
        .get_mut(pe + 8..pe + 12)
        .ok_or("truncated header")?
        .copy_from_slice(&timestamp.to_le_bytes());
    let field = pe + 24 + 64;
    let old = bytes.get(field..field + 4).ok_or("truncated header")?;
    if old != [0, 0, 0, 0] {
        let sum = pe_checksum(bytes, field);
        bytes[field..field + 4].copy_from_slice(&sum.to_le_bytes());
    }
    Ok(())
}

/// The inputs of a UKI.
#[derive(Debug, Clone)]
pub struct UkiInputs {
    /// The EFI stub.
    pub stub: PathBuf,
    /// `.osrel` content.
    pub osrel: Vec<u8>,
    /// `.cmdline` content.
    pub cmdline: Vec<u8>,
    /// The bzImage.
    pub linux: PathBuf,
    /// The initrd.
    pub initrd: PathBuf,
}

/// Build the UKI at `out` (a scratch directory `work` holds the small section files).
pub fn build(inputs: &UkiInputs, work: &Path, out: &Path, timestamp: u32) -> Result<(), UkiError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UkiError::Io { path, source }
    };
    let stub = std::fs::read(&inputs.stub).map_err(io(&inputs.stub))?;
    let not_pe = |reason| UkiError::NotPe {
        path: inputs.stub.clone(),
        reason,
    };
    let secs = sections(&stub).map_err(not_pe)?;
    let end = secs
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
        .max()
        .ok_or_else(|| not_pe("no sections"))?;
    let osrel = work.join("osrel");
    let cmdline = work.join("cmdline");
    std::fs::write(&osrel, &inputs.osrel).map_err(io(&osrel))?;
    std::fs::write(&cmdline, &inputs.cmdline).map_err(io(&cmdline))?;
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io(p));
    let parts: [(&str, &Path); 4] = [
        (".osrel", &osrel),
        (".cmdline", &cmdline),
        (".linux", &inputs.linux),
        (".initrd", &inputs.initrd),
    ];
    let sizes = parts
        .iter()
        .map(|(_, p)| len(p))
        .collect::<Result<Vec<_>, _>>()?;
    let vmas = place(end, &sizes);
    let mut cmd = Command::new("objcopy");
    for ((name, path), vma) in parts.iter().zip(&vmas) {
        cmd.arg("--add-section")
            .arg(format!("{name}={}", path.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
    }
    let tmp = out.with_extension("tmp");
    cmd.arg(&inputs.stub).arg(&tmp);
    tracing::debug!("running {cmd:?}");
    let output = cmd.output().map_err(io(Path::new("objcopy")))?;
    if !output.status.success() {
        return Err(UkiError::Objcopy {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let mut bytes = std::fs::read(&tmp).map_err(io(&tmp))?;
    normalize(&mut bytes, timestamp).map_err(|reason| UkiError::NotPe {
        path: tmp.clone(),
        reason,
    })?;
    std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_placed_after_the_stub_aligned() {
        assert_eq!(
            place(0x19134, &[11, 14, 0x7d_d7c0, 5]),
            vec![0x1a000, 0x1b000, 0x1c000, 0x7fa000]
        );
        assert_eq!(place(0x2000, &[0x1000, 1]), vec![0x2000, 0x3000]);
    }

    #[test]
    fn checksum_skips_its_field_and_adds_the_length() {
        let bytes = [1u8, 0, 2, 0, 0xff, 0xff, 0xff, 0xff, 3];
        // Words: 1, 2, (the 4-byte field skipped), 3 -> 6, plus the length 9.
        assert_eq!(pe_checksum(&bytes, 4), 15);
        // The Debian stub's own checksum (written by its linker) is what we compute.
        if let Ok(stub) = std::fs::read(STUB) {
            let field = pe_offset(&stub).unwrap() + 24 + 64;
            let stored = u32::from_le_bytes(stub[field..field + 4].try_into().unwrap());
            assert_eq!(pe_checksum(&stub, field), stored);
        }
    }

    #[test]
    fn uki_layout_from_the_debian_stub() {
        let stub = Path::new(STUB);
        if !stub.exists() || !crate::disk::tools::have("objcopy") {
            eprintln!(
                "skip: {STUB} or objcopy missing (apt-get install systemd-boot-efi binutils)"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let linux = dir.path().join("linux");
        let initrd = dir.path().join("initrd");
        std::fs::write(&linux, vec![0xAB; 10_000]).unwrap();
        std::fs::write(&initrd, b"initrd").unwrap();
        let inputs = UkiInputs {
            stub: stub.into(),
            osrel: b"ID=rampart\n".to_vec(),
            cmdline: b"console=ttyS0 rampart.verity_root_hash=00".to_vec(),
            linux,
            initrd,
        };
        let one = dir.path().join("one.efi");
        let two = dir.path().join("two.efi");
        build(&inputs, dir.path(), &one, 1_700_000_000).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        build(&inputs, dir.path(), &two, 1_700_000_000).unwrap();
        let a = std::fs::read(&one).unwrap();
        assert_eq!(a, std::fs::read(&two).unwrap(), "not reproducible");
        let secs = sections(&a).unwrap();
        let names: Vec<&str> = secs.iter().map(|s| s.name.as_str()).collect();
        let n = names.len();
        assert_eq!(
            &names[n - 4..],
            &[".osrel", ".cmdline", ".linux", ".initrd"]
        );
        for w in secs.windows(2) {
            assert!(
                w[0].virtual_address + w[0].virtual_size <= w[1].virtual_address,
                "{w:?}"
            );
        }
        for s in &secs[n - 4..] {
            assert_eq!(u64::from(s.virtual_address) % SECTION_ALIGN, 0);
        }
        assert_eq!(secs[n - 2].virtual_size, 10_000);
        let pe = pe_offset(&a).unwrap();
        assert_eq!(
            u32::from_le_bytes(a[pe + 8..pe + 12].try_into().unwrap()),
            1_700_000_000
        );
        let field = pe + 24 + 64;
        assert_eq!(
            u32::from_le_bytes(a[field..field + 4].try_into().unwrap()),
            pe_checksum(&a, field)
        );
    }
}
