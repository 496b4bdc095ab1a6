//! Runs the real runc from a sealed in-memory copy instead of by path.
//!
//! The real runc lives in the image without any execute bit (mode 0400), so nobody, root
//! included, can `execve` it by path: `ctr run --runc-binary /usr/lib/rampart/runc` fails with
//! permission denied. rampart-runc reads it, copies it into a `memfd` (`MFD_ALLOW_SEALING`),
//! seals the copy (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`: nothing can
//! change it any more) and executes the file descriptor with `fexecve` (`execveat` with
//! `AT_EMPTY_PATH`). The seals are exactly the ones runc 1.1 puts on its own cloned binary, so
//! runc sees itself as already cloned and its `runc init` re-exec of `/proc/self/exe` runs the
//! same sealed copy.
//!
//! An ELF copy is close-on-exec (the fd does not leak into runc). A `#!` script (the fake runcs
//! of the tests) must stay open across the exec, since its interpreter opens `/dev/fd/N`.

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// The seals put on the copy (runc 1.1's `RUNC_MEMFD_SEALS`).
pub fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// Why the sealed copy could not be made or run.
#[derive(Debug, thiserror::Error)]
pub enum MemexecError {
    /// The program could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The program.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `memfd_create` failed.
    #[error("cannot create a memfd for {path}: {source}")]
    Create {
        /// The program.
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// Copying into the memfd failed.
    #[error("cannot copy {path} into a memfd: {source}")]
    Copy {
        /// The program.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Adding the seals failed.
    #[error("cannot seal the copy of {path}: {source}")]
    Seal {
        /// The program.
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// An argument or environment entry holds a NUL byte.
    #[error("argument or environment entry with a NUL byte for {path}")]
    Nul {
        /// The program.
        path: PathBuf,
    },
    /// `fexecve` failed.
    #[error("cannot execute the sealed copy of {path}: {source}")]
    Exec {
        /// The program.
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
}

impl MemexecError {
    /// The error as an `io::Error` (for the caller's error type).
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            MemexecError::Read { source, .. } | MemexecError::Copy { source, .. } => source.kind(),
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, self.to_string())
    }
}

/// A sealed in-memory copy of `path`, and whether it is a `#!` script.
pub fn sealed_copy(path: &Path) -> Result<(OwnedFd, bool), MemexecError> {
    let read = |source| MemexecError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut src = File::open(path).map_err(read)?;
    let mut magic = [0u8; 2];
    let script = match src.read_exact(&mut magic) {
        Ok(()) => &magic == b"#!",
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(read(e)),
    };
    src.seek(SeekFrom::Start(0)).map_err(read)?;
    let mut flags = MFdFlags::MFD_ALLOW_SEALING;
    if !script {
        flags |= MFdFlags::MFD_CLOEXEC;
    }
    let fd = memfd_create(c"runc", flags).map_err(|source| MemexecError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    let mut dst = File::from(fd);
    std::io::copy(&mut src, &mut dst).map_err(|source| MemexecError::Copy {
        path: path.to_path_buf(),
        source,
    })?;
    let fd = OwnedFd::from(dst);
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals())).map_err(|source| MemexecError::Seal {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((fd, script))
}

fn cstrings(
    items: impl Iterator<Item = OsString>,
    path: &Path,
) -> Result<Vec<CString>, MemexecError> {
    items
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| MemexecError::Nul {
                path: path.to_path_buf(),
            })
        })
        .collect()
}

/// Executes a sealed copy of `path` with `argv` and the current environment. Returns only on
/// failure.
pub fn exec(path: &Path, argv: &[OsString]) -> Result<Infallible, MemexecError> {
    let (fd, _script) = sealed_copy(path)?;
    let args = cstrings(argv.iter().cloned(), path)?;
    let env = cstrings(
        std::env::vars_os().map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        }),
        path,
    )?;
    nix::unistd::fexecve(&fd, &args, &env).map_err(|source| MemexecError::Exec {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copy_is_sealed_and_identical() {
        let dir = tempfile::tempdir().unwrap();
        // (content, is a script)
        let cases: &[(&[u8], bool)] = &[
            (b"\x7fELF not really", false),
            (b"#!/bin/sh\necho hi\n", true),
            (b"", false),
            (b"#", false),
        ];
        for (content, script) in cases {
            let p = dir.path().join("prog");
            std::fs::write(&p, content).unwrap();
            // No execute bit at all: reading is all that is needed.
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
            let (fd, is_script) = sealed_copy(&p).unwrap();
            assert_eq!(is_script, *script);
            let got = fcntl(&fd, FcntlArg::F_GET_SEALS).unwrap();
            assert_eq!(SealFlag::from_bits_truncate(got), seals());
            let mut f = File::from(fd);
            assert!(f.write_all(b"x").is_err(), "a sealed copy is not writable");
            f.seek(SeekFrom::Start(0)).unwrap();
            let mut back = Vec::new();
            f.read_to_end(&mut back).unwrap();
            assert_eq!(back, *content);
            std::fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn missing_program_is_a_read_error() {
        let err = sealed_copy(Path::new("/nonexistent/runc")).unwrap_err();
        assert!(matches!(err, MemexecError::Read { .. }), "{err}");
        assert_eq!(err.into_io().kind(), std::io::ErrorKind::NotFound);
    }
}
