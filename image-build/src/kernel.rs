//! Turn Debian's compressed `vmlinuz` (a bzImage) into the uncompressed ELF `vmlinux` that
//! QEMU boots directly through its PVH entry point, which halves boot time under TCG.
//!
//! The bzImage carries the kernel ELF as one XZ stream (magic `FD 37 7A 58 5A 00`, with the
//! x86 BCJ filter, which liblzma handles). We decompress the first stream that decodes, and
//! accept the result only if it is an ELF with a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY` = 18,
//! owner "Xen"). Anything else falls back to the bzImage itself, with a warning.

use std::path::{Path, PathBuf};

use goblin::elf::Elf;

/// The XZ stream header magic.
pub const XZ_MAGIC: &[u8; 6] = b"\xFD7zXZ\x00";
/// ELF note type of the PVH 32-bit entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Upper bound on the decompressed size (the 6.1 vmlinux is about 60 MiB).
const MAX_OUTPUT: usize = 512 << 20;
/// How many candidate magics to try before giving up.
const MAX_CANDIDATES: usize = 16;

/// Errors while preparing the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The kernel file cannot be read.
    #[error("cannot read kernel {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No XZ stream in the image.
    #[error("no XZ stream found in the kernel image")]
    NoXzStream,
    /// The XZ stream did not decode.
    #[error("cannot decompress the XZ stream at offset {offset}: {reason}")]
    Decompress {
        /// Offset of the magic.
        offset: usize,
        /// What failed.
        reason: String,
    },
    /// The decompressed payload is not an ELF.
    #[error("the decompressed payload is not an ELF: {reason}")]
    NotElf {
        /// goblin's message.
        reason: String,
    },
    /// The ELF has no PVH note.
    #[error("the decompressed ELF has no PVH entry note (Xen note type 18)")]
    NoPvhNote,
}

/// Which form of the kernel the image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelKind {
    /// Uncompressed ELF with a PVH note.
    Elf,
    /// The compressed bzImage as shipped.
    Bzimage,
}

impl std::fmt::Display for KernelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelKind::Elf => "elf",
            KernelKind::Bzimage => "bzimage",
        })
    }
}

/// Whether `bytes` is an ELF carrying a PVH entry note.
pub fn check_pvh(bytes: &[u8]) -> Result<(), KernelError> {
    let elf = Elf::parse(bytes).map_err(|e| KernelError::NotElf {
        reason: e.to_string(),
    })?;
    let found = elf
        .iter_note_headers(bytes)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|n| n.n_type == XEN_ELFNOTE_PHYS32_ENTRY && n.name == "Xen");
    if found {
        Ok(())
    } else {
        Err(KernelError::NoPvhNote)
    }
}

/// Decompress one XZ stream starting at the beginning of `input`, stopping at its end
/// (trailing bytes are ignored).
pub fn decompress_xz(input: &[u8]) -> Result<Vec<u8>, String> {
    use liblzma::stream::{Action, Status, Stream};
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| e.to_string())?;
    let mut out: Vec<u8> = Vec::with_capacity(input.len().saturating_mul(4));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= MAX_OUTPUT {
                return Err(format!("output larger than {MAX_OUTPUT} bytes"));
            }
            out.reserve(out.len().max(1 << 20));
        }
        let consumed = usize::try_from(stream.total_in()).map_err(|e| e.to_string())?;
        let rest = input.get(consumed..).unwrap_or(&[]);
        let before = (stream.total_in(), stream.total_out());
        let status = stream
            .process_vec(rest, &mut out, Action::Run)
            .map_err(|e| e.to_string())?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if (stream.total_in(), stream.total_out()) == before && out.len() < out.capacity() {
            return Err("truncated stream".to_string());
        }
    }
}

/// Extract the PVH-capable ELF from a bzImage.
pub fn extract_elf(vmlinuz: &[u8]) -> Result<Vec<u8>, KernelError> {
    let mut last = KernelError::NoXzStream;
    let offsets = vmlinuz
        .windows(XZ_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == XZ_MAGIC)
        .map(|(i, _)| i)
        .take(MAX_CANDIDATES);
    for offset in offsets {
        let input = vmlinuz.get(offset..).unwrap_or(&[]);
        match decompress_xz(input) {
            Ok(elf) => match check_pvh(&elf) {
                Ok(()) => return Ok(elf),
                Err(e) => last = e,
            },
            Err(reason) => last = KernelError::Decompress { offset, reason },
        }
    }
    Err(last)
}

/// Read the kernel at `path` and return the bytes to boot and their kind: the file itself
/// if it already is a PVH ELF, else the extracted ELF, else (with a warning) the file.
pub fn prepare(path: &Path) -> Result<(Vec<u8>, KernelKind), KernelError> {
    let raw = std::fs::read(path).map_err(|source| KernelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if check_pvh(&raw).is_ok() {
        return Ok((raw, KernelKind::Elf));
    }
    match extract_elf(&raw) {
        Ok(elf) => Ok((elf, KernelKind::Elf)),
        Err(e) => {
            tracing::warn!(kernel = %path.display(), error = %e, "cannot extract the ELF kernel, using the compressed image (slower boot)");
            Ok((raw, KernelKind::Bzimage))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmlinuz() -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/kernel/vmlinuz");
        if p.exists() {
            Some(p)
        } else {
            eprintln!("skip: no kernel cache at {}", p.display());
            None
        }
    }

    #[test]
    fn real_vmlinuz_gives_pvh_elf() {
        let Some(p) = vmlinuz() else { return };
        let (bytes, kind) = prepare(&p).unwrap();
        assert_eq!(kind, KernelKind::Elf);
        assert_eq!(&bytes[..4], b"\x7fELF");
        check_pvh(&bytes).unwrap();
        // Idempotent: an ELF input is kept as is.
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("vmlinux");
        std::fs::write(&elf, &bytes).unwrap();
        let (again, kind) = prepare(&elf).unwrap();
        assert_eq!(kind, KernelKind::Elf);
        assert_eq!(again.len(), bytes.len());
    }

    #[test]
    fn garbage_falls_back_to_bzimage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinuz");
        let mut data = b"MZ not a kernel".to_vec();
        data.extend_from_slice(XZ_MAGIC);
        data.extend_from_slice(b"junk after the magic");
        std::fs::write(&p, &data).unwrap();
        let (bytes, kind) = prepare(&p).unwrap();
        assert_eq!(kind, KernelKind::Bzimage);
        assert_eq!(bytes, data);
        assert!(matches!(
            extract_elf(&data).unwrap_err(),
            KernelError::Decompress { offset: 15, .. }
        ));
        assert!(matches!(
            extract_elf(b"nothing").unwrap_err(),
            KernelError::NoXzStream
        ));
    }

    #[test]
    fn missing_kernel_is_an_error() {
        let err = prepare(Path::new("/nonexistent/vmlinuz")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
    }

    #[test]
    fn xz_round_trip_with_trailing_bytes() {
        use std::io::Write;
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(&b"hello kernel ".repeat(1000)).unwrap();
        let mut stream = enc.finish().unwrap();
        stream.extend_from_slice(b"\x01\x02\x03\x04");
        assert_eq!(
            decompress_xz(&stream).unwrap(),
            b"hello kernel ".repeat(1000)
        );
        assert!(decompress_xz(&stream[..stream.len() / 2]).is_err());
        // A non-ELF payload is refused.
        assert!(matches!(
            check_pvh(b"hello").unwrap_err(),
            KernelError::NotElf { .. }
        ));
    }
}
