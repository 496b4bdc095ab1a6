//! `manifest.json`: every file of an image with its type, mode, size and sha256, plus the
//! inputs it was built from. The JSON is deterministic (no timestamps, stable order).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cpio::{hex, Written};

/// Version of the manifest layout.
pub const FORMAT: u32 = 1;

/// Errors of manifest I/O.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Serialising failed.
    #[error("cannot serialise the manifest: {source}")]
    Serialize {
        /// The underlying error.
        source: serde_json::Error,
    },
    /// Reading an existing manifest failed.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An existing manifest is not valid JSON of this layout.
    #[error("cannot parse manifest {path}: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// What the image was built from.
    pub inputs: Inputs,
    /// The kernel command line written to `cmdline`.
    pub cmdline: String,
    /// The boot modules in load order (in-image paths).
    pub modules: Vec<String>,
    /// The initrd file.
    pub initrd: Blob,
    /// Every entry of the initrd, in archive order (of the root tree, for a disk image).
    pub files: Vec<FileEntry>,
    /// The disk image, for `--format disk` (its inputs, partitions and digests).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub disk: Option<crate::disk::DiskInfo>,
}

/// The inputs of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The host file.
    pub config: Source,
    /// The kernel as given and what was written to `kernel`.
    pub kernel: KernelInput,
    /// The init binary.
    pub init: Source,
    /// Kernel release of the modules tree, if modules were used.
    pub modules_release: Option<String>,
}

/// An input file and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Where it was read.
    pub path: PathBuf,
    /// Hex sha256 of its content.
    pub sha256: String,
}

/// The kernel input and output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInput {
    /// The kernel file given (`vmlinuz`).
    pub path: PathBuf,
    /// Hex sha256 of the given file.
    pub sha256: String,
    /// `elf` (extracted, PVH) or `bzimage` (as given).
    pub kind: String,
    /// The file written to `kernel`.
    pub output: Blob,
}

/// Size and digest of an output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// Bytes.
    pub size: u64,
    /// Hex sha256.
    pub sha256: String,
}

impl Blob {
    /// Size and digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

/// One entry of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Absolute in-image path.
    pub path: String,
    /// `file`, `dir`, `symlink` or `chardev`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits in octal (`"0755"`).
    pub mode: String,
    /// Size of the content (link target length for symlinks, 0 for dirs and devices).
    pub size: u64,
    /// Hex sha256 of the content (of the link target for symlinks).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Link target.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
}

impl From<&Written> for FileEntry {
    fn from(w: &Written) -> Self {
        Self {
            path: w.path.clone(),
            kind: w.kind.to_string(),
            mode: format!("{:04o}", w.mode),
            size: w.size,
            sha256: w.sha256.clone(),
            target: w.target.clone(),
        }
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl Manifest {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> Result<String, ManifestError> {
        let mut s = serde_json::to_string_pretty(self)
            .map_err(|source| ManifestError::Serialize { source })?;
        s.push('\n');
        Ok(s)
    }

    /// Read a manifest written earlier.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ManifestError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            inputs: Inputs {
                config: Source {
                    path: "/h.toml".into(),
                    sha256: sha256_hex(b"x"),
                },
                kernel: KernelInput {
                    path: "/vmlinuz".into(),
                    sha256: sha256_hex(b"k"),
                    kind: "elf".into(),
                    output: Blob::of(b"kk"),
                },
                init: Source {
                    path: "/init".into(),
                    sha256: sha256_hex(b"i"),
                },
                modules_release: None,
            },
            cmdline: "console=ttyS0".into(),
            modules: vec![],
            initrd: Blob::of(b""),
            files: vec![FileEntry::from(&Written {
                path: "/init".into(),
                kind: "symlink",
                mode: 0o777,
                size: 9,
                sha256: Some(sha256_hex(b"sbin/init")),
                target: Some("sbin/init".into()),
            })],
            disk: None,
        }
    }

    #[test]
    fn json_round_trip_and_field_names() {
        let m = sample();
        let json = m.to_json().unwrap();
        assert!(json.contains("\"type\": \"symlink\""), "{json}");
        assert!(json.contains("\"mode\": \"0777\""), "{json}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        std::fs::write(&p, &json).unwrap();
        assert_eq!(Manifest::read(&p).unwrap(), m);
    }

    #[test]
    fn sha256_known_value() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
