//! A deterministic newc ("070701") cpio writer for initramfs images.
//!
//! Entries are kept sorted by path, parent directories are created implicitly, every entry
//! gets the same mtime, uid/gid 0 and an inode number that is its position in the sorted
//! order, so the same input always gives the same bytes. Supported entry kinds: regular
//! files (bytes in memory or read from a host path at write time), directories, symbolic
//! links and character device nodes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// File type bits of `st_mode`.
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Mode of directories created implicitly as parents.
pub const IMPLIED_DIR_MODE: u32 = 0o755;

/// The newc magic.
const MAGIC: &[u8; 6] = b"070701";
/// Name of the last entry.
const TRAILER: &str = "TRAILER!!!";

/// Errors of the cpio writer.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// The in-archive path is empty, relative with `..`, or otherwise unusable.
    #[error("invalid archive path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two different entries were added at the same path.
    #[error("conflicting entries for {path}: {existing} already present, cannot add {new}")]
    Conflict {
        /// The archive path.
        path: String,
        /// The kind already present.
        existing: &'static str,
        /// The kind that was added.
        new: &'static str,
    },
    /// A path's parent is not a directory in the archive.
    #[error("parent {parent} of {path} is a {kind}, not a directory")]
    ParentNotDir {
        /// The entry being added.
        path: String,
        /// Its parent.
        parent: String,
        /// The parent's kind.
        kind: &'static str,
    },
    /// A host file could not be read while writing the archive.
    #[error("cannot read {path}: {source}")]
    ReadSource {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file does not fit in the 32-bit size field of newc.
    #[error("{path} is too large for a newc archive ({size} bytes)")]
    TooLarge {
        /// The archive path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// Writing the archive failed.
    #[error("cannot write the archive: {source}")]
    Write {
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Where a regular file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileData {
    /// Bytes held in memory.
    Bytes(Vec<u8>),
    /// A host file read when the archive is written.
    Host(PathBuf),
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File(FileData),
    /// A directory.
    Dir,
    /// A symbolic link with its target (stored verbatim).
    Symlink(String),
    /// A character device node.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

impl EntryKind {
    /// A short name for messages and the manifest.
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::File(_) => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink(_) => "symlink",
            EntryKind::CharDev { .. } => "chardev",
        }
    }

    fn type_bits(&self) -> u32 {
        match self {
            EntryKind::File(_) => S_IFREG,
            EntryKind::Dir => S_IFDIR,
            EntryKind::Symlink(_) => S_IFLNK,
            EntryKind::CharDev { .. } => S_IFCHR,
        }
    }
}

/// One archive entry: permission bits and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits (`0o7777` at most); the type bits come from the kind.
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
}

/// What was written for one entry (used for the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Absolute in-image path (`/sbin/init`).
    pub path: String,
    /// Kind name (`file`, `dir`, `symlink`, `chardev`).
    pub kind: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Size of the data written (file content or link target).
    pub size: u64,
    /// Hex sha256 of the file content or link target; `None` for dirs and devices.
    pub sha256: Option<String>,
    /// Link target for symlinks.
    pub target: Option<String>,
}

/// A set of entries to write as a newc archive.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Turn `/a/b/../c`-free absolute or relative paths into the archive form `a/b`.
pub fn archive_path(path: &Path) -> Result<String, CpioError> {
    let invalid = |reason| CpioError::InvalidPath {
        path: path.to_path_buf(),
        reason,
    };
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => {
                let s = p.to_str().ok_or_else(|| invalid("not valid UTF-8"))?;
                parts.push(s);
            }
            Component::ParentDir => return Err(invalid("contains '..'")),
            Component::Prefix(_) => return Err(invalid("has a prefix")),
        }
    }
    if parts.is_empty() {
        return Err(invalid("is empty or the root"));
    }
    Ok(parts.join("/"))
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries (implied directories included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &Path) -> Option<&Entry> {
        archive_path(path).ok().and_then(|p| self.entries.get(&p))
    }

    /// Iterate over entries in archive order, with their archive paths.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Add a regular file.
    pub fn add_file(&mut self, path: &Path, mode: u32, data: FileData) -> Result<(), CpioError> {
        self.add(path, mode, EntryKind::File(data))
    }

    /// Add a directory (adding an existing directory again is a no-op that keeps its mode).
    pub fn add_dir(&mut self, path: &Path, mode: u32) -> Result<(), CpioError> {
        self.add(path, mode, EntryKind::Dir)
    }

    /// Add a symbolic link.
    pub fn add_symlink(&mut self, path: &Path, target: &str) -> Result<(), CpioError> {
        self.add(path, 0o777, EntryKind::Symlink(target.to_string()))
    }

    /// Add a character device node.
    pub fn add_char_device(
        &mut self,
        path: &Path,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.add(path, mode, EntryKind::CharDev { major, minor })
    }

    /// Add an entry, creating missing parent directories with [`IMPLIED_DIR_MODE`].
    ///
    /// Adding the same entry twice is accepted; a different entry at the same path is a
    /// conflict, except that an explicit directory updates the mode of an implied one.
    pub fn add(&mut self, path: &Path, mode: u32, kind: EntryKind) -> Result<(), CpioError> {
        let name = archive_path(path)?;
        let mut parent = String::new();
        let components: Vec<&str> = name.split('/').collect();
        let (_, dirs) = components.split_last().unwrap_or((&"", &[]));
        for part in dirs {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            mode: IMPLIED_DIR_MODE,
                            kind: EntryKind::Dir,
                        },
                    );
                }
                Some(Entry {
                    kind: EntryKind::Dir,
                    ..
                }) => {}
                Some(other) => {
                    return Err(CpioError::ParentNotDir {
                        path: name,
                        parent,
                        kind: other.kind.name(),
                    })
                }
            }
        }
        let entry = Entry {
            mode: mode & 0o7777,
            kind,
        };
        match self.entries.get_mut(&name) {
            None => {
                self.entries.insert(name, entry);
                Ok(())
            }
            Some(existing) if *existing == entry => Ok(()),
            Some(existing) if existing.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => {
                existing.mode = entry.mode;
                Ok(())
            }
            Some(existing) => Err(CpioError::Conflict {
                path: name,
                existing: existing.kind.name(),
                new: entry.kind.name(),
            }),
        }
    }

    /// Write the archive (entries in path order, then the trailer) with every mtime set to
    /// `mtime`. Returns what was written, in order.
    pub fn write_to<W: Write>(&self, out: &mut W, mtime: u32) -> Result<Vec<Written>, CpioError> {
        let mut offset: u64 = 0;
        let mut written = Vec::with_capacity(self.entries.len());
        for (index, (name, entry)) in self.entries.iter().enumerate() {
            // Inode numbers start at 1 and follow the sorted order.
            let ino = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let (data, target): (std::borrow::Cow<'_, [u8]>, Option<String>) = match &entry.kind {
                EntryKind::File(FileData::Bytes(b)) => (b.as_slice().into(), None),
                EntryKind::File(FileData::Host(p)) => (
                    std::fs::read(p)
                        .map_err(|source| CpioError::ReadSource {
                            path: p.clone(),
                            source,
                        })?
                        .into(),
                    None,
                ),
                EntryKind::Symlink(t) => (t.as_bytes().into(), Some(t.clone())),
                EntryKind::Dir | EntryKind::CharDev { .. } => (Vec::new().into(), None),
            };
            let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
                path: name.clone(),
                size: data.len() as u64,
            })?;
            let (rmaj, rmin) = match entry.kind {
                EntryKind::CharDev { major, minor } => (major, minor),
                _ => (0, 0),
            };
            let header = Header {
                ino,
                mode: entry.kind.type_bits() | entry.mode,
                nlink: if entry.kind == EntryKind::Dir { 2 } else { 1 },
                mtime,
                filesize: size,
                rdevmajor: rmaj,
                rdevminor: rmin,
            };
            offset += write_entry(out, &header, name, &data)?;
            let sha256 = match entry.kind {
                EntryKind::File(_) | EntryKind::Symlink(_) => Some(hex(&Sha256::digest(&data))),
                _ => None,
            };
            written.push(Written {
                path: format!("/{name}"),
                kind: entry.kind.name(),
                mode: entry.mode,
                size: u64::from(size),
                sha256,
                target,
            });
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
        };
        offset += write_entry(out, &trailer, TRAILER, &[])?;
        tracing::debug!(
            bytes = offset,
            entries = written.len(),
            "wrote cpio archive"
        );
        Ok(written)
    }
}

/// The variable fields of a newc header (the others are always 0).
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

/// Bytes of padding that bring `len` to a multiple of 4.
pub fn pad4(len: u64) -> u64 {
    (4 - len % 4) % 4
}

/// Write one header, name and data with their padding; returns the bytes written.
fn write_entry<W: Write>(
    out: &mut W,
    h: &Header,
    name: &str,
    data: &[u8],
) -> Result<u64, CpioError> {
    let namesize = name.len() + 1;
    let mut head = Vec::with_capacity(110 + namesize + 3);
    head.extend_from_slice(MAGIC);
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        h.mtime,
        h.filesize,
        0, // devmajor
        0, // devminor
        h.rdevmajor,
        h.rdevminor,
        u32::try_from(namesize).unwrap_or(u32::MAX),
        0, // check
    ];
    for f in fields {
        head.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    head.extend_from_slice(name.as_bytes());
    head.push(0);
    let pad = pad4(head.len() as u64) as usize;
    head.extend(std::iter::repeat_n(0u8, pad));
    let w = |e| CpioError::Write { source: e };
    out.write_all(&head).map_err(w)?;
    out.write_all(data).map_err(w)?;
    let dpad = pad4(data.len() as u64) as usize;
    out.write_all(&[0u8; 3][..dpad]).map_err(w)?;
    Ok((head.len() + data.len() + dpad) as u64)
}

/// Lowercase hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add_file(
            Path::new("/sbin/init"),
            0o755,
            FileData::Bytes(b"#!/bin/sh\n".to_vec()),
        )
        .unwrap();
        a.add_symlink(Path::new("/init"), "sbin/init").unwrap();
        a.add_char_device(Path::new("/dev/console"), 0o600, 5, 1)
            .unwrap();
        a.add_dir(Path::new("/proc"), 0o555).unwrap();
        a.add_file(
            Path::new("/etc/rampart/host.toml"),
            0o644,
            FileData::Bytes(b"[host]\n".to_vec()),
        )
        .unwrap();
        for len in 0..9 {
            a.add_file(
                Path::new(&format!("/pad/{}", "n".repeat(len + 1))),
                0o600,
                FileData::Bytes(vec![b'x'; len]),
            )
            .unwrap();
        }
        a
    }

    fn bytes(a: &Archive, mtime: u32) -> Vec<u8> {
        let mut v = Vec::new();
        a.write_to(&mut v, mtime).unwrap();
        v
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn paths_are_normalised_and_validated() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/a/b", Some("a/b")),
            ("a/./b", Some("a/b")),
            ("//a//b/", Some("a/b")),
            ("/", None),
            ("", None),
            ("/a/../b", None),
        ];
        for (input, want) in cases {
            let got = archive_path(Path::new(input)).ok();
            assert_eq!(got.as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn parents_are_implied_and_sorted() {
        let a = sample();
        let names: Vec<&str> = a.iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"etc"));
        assert!(names.contains(&"etc/rampart"));
        assert_eq!(a.get(Path::new("/etc")).unwrap().mode, IMPLIED_DIR_MODE);
        assert_eq!(a.get(Path::new("/proc")).unwrap().mode, 0o555);
    }

    #[test]
    fn conflicts_are_refused_and_duplicates_accepted() {
        let mut a = sample();
        a.add_symlink(Path::new("/init"), "sbin/init").unwrap();
        let err = a.add_symlink(Path::new("/init"), "other").unwrap_err();
        assert!(matches!(err, CpioError::Conflict { .. }), "{err}");
        let err = a
            .add_file(Path::new("/init/x"), 0o644, FileData::Bytes(vec![]))
            .unwrap_err();
        assert!(matches!(err, CpioError::ParentNotDir { .. }), "{err}");
        // An explicit dir over an implied one sets its mode.
        a.add_dir(Path::new("/etc"), 0o700).unwrap();
        assert_eq!(a.get(Path::new("/etc")).unwrap().mode, 0o700);
    }

    #[test]
    fn header_layout_and_padding() {
        let mut a = Archive::new();
        a.add_file(Path::new("ab"), 0o644, FileData::Bytes(b"xyz".to_vec()))
            .unwrap();
        let v = bytes(&a, 7);
        // header 110 + "ab\0" 3 = 113 -> pad to 116; data 3 -> pad to 4.
        assert_eq!(&v[..6], b"070701");
        assert_eq!(&v[6..14], b"00000001"); // ino
        assert_eq!(&v[14..22], b"000081A4"); // mode
        assert_eq!(&v[46..54], b"00000007"); // mtime
        assert_eq!(&v[54..62], b"00000003"); // filesize
        assert_eq!(&v[94..102], b"00000003"); // namesize
        assert_eq!(&v[110..116], b"ab\0\0\0\0");
        assert_eq!(&v[116..120], b"xyz\0");
        assert_eq!(&v[120..126], b"070701");
        assert_eq!(v.len() % 4, 0);
        let trailer_name = &v[120 + 110..120 + 110 + 11];
        assert_eq!(trailer_name, b"TRAILER!!!\0");
    }

    #[test]
    fn pad4_table() {
        for (len, pad) in [(0, 0), (1, 3), (2, 2), (3, 1), (4, 0), (113, 3), (116, 0)] {
            assert_eq!(pad4(len), pad, "{len}");
        }
    }

    #[test]
    fn reproducible() {
        let one = bytes(&sample(), 0);
        let two = bytes(&sample(), 0);
        assert_eq!(one, two);
        assert_ne!(one, bytes(&sample(), 1));
        // Insertion order does not matter.
        let mut rev = Archive::new();
        let entries: Vec<(String, Entry)> = sample()
            .iter()
            .map(|(n, e)| (n.to_string(), e.clone()))
            .collect();
        for (n, e) in entries.into_iter().rev() {
            rev.add(Path::new(&n), e.mode, e.kind).unwrap();
        }
        assert_eq!(one, bytes(&rev, 0));
    }

    #[test]
    fn host_file_missing_is_an_error() {
        let mut a = Archive::new();
        a.add_file(
            Path::new("x"),
            0o644,
            FileData::Host("/nonexistent/rampart".into()),
        )
        .unwrap();
        let err = a.write_to(&mut Vec::new(), 0).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rampart"), "{err}");
    }

    #[test]
    fn round_trip_through_cpio_t() {
        let a = sample();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("initrd");
        std::fs::write(&file, bytes(&a, 0)).unwrap();
        let out = Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let listed: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let want: Vec<String> = a.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(listed, want);
    }

    #[test]
    fn round_trip_through_cpio_extract() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let mut a = sample();
        let host = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(host.path(), b"from the host\n").unwrap();
        a.add_file(
            Path::new("/usr/bin/tool"),
            0o750,
            FileData::Host(host.path().into()),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("initrd");
        std::fs::write(&file, bytes(&a, 1_700_000_000)).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let out = Command::new("cpio")
            .args(["-idv", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&file)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let read = |p: &str| std::fs::read(root.join(p)).unwrap();
        assert_eq!(read("sbin/init"), b"#!/bin/sh\n");
        assert_eq!(read("usr/bin/tool"), b"from the host\n");
        assert_eq!(read("pad/nnnnnnnnn"), vec![b'x'; 8]);
        let meta = std::fs::symlink_metadata(root.join("usr/bin/tool")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
        assert_eq!(
            std::fs::read_link(root.join("init")).unwrap(),
            Path::new("sbin/init")
        );
        let proc_meta = std::fs::metadata(root.join("proc")).unwrap();
        assert_eq!(proc_meta.permissions().mode() & 0o7777, 0o555);
        if is_root() {
            let dev = std::fs::symlink_metadata(root.join("dev/console")).unwrap();
            assert!(dev.file_type().is_char_device());
        } else {
            eprintln!("skip: not root, /dev/console not checked");
        }
    }
}
