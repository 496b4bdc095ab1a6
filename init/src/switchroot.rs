//! Stage 0: move off the initramfs onto a read-only tmpfs root, then exec stage 1.
//!
//! The kernel unpacks the initramfs into `rootfs` and runs `/init` there. `rootfs` cannot be
//! unmounted or pivoted away from, and runc's `pivot_root` fails while the root is `rootfs`
//! (`pivot_root .: invalid argument`), so PID 1 needs a real mount as its root. Stage 0
//! ([`stage0`]) does what `switch_root` does, with one twist:
//!
//! 1. mount a tmpfs at `/sysroot`;
//! 2. move every file of the initramfs into it ([`move_tree`]): copy directories, regular
//!    files, symlinks, device nodes and FIFOs with their mode and owner, unlinking each
//!    original right after its copy so memory use is not doubled; `/sysroot` itself is
//!    skipped;
//! 3. remount the tmpfs `ro,nosuid,nodev`;
//! 4. `MS_MOVE` it onto `/`, `chroot` into it and `chdir("/")`;
//! 5. `execve("/sbin/init")`: stage 1, still PID 1, on a read-only root.
//!
//! Why copy into a tmpfs rather than mount a squashfs or erofs image shipped inside the
//! initramfs: a tmpfs needs no kernel module (squashfs, erofs and loop are modules on Debian's
//! kernel, and they would have to be loaded before the root exists), no image format and no
//! extra build tool, and the image stays one plain cpio archive. The price is one copy of the
//! image at boot (memory is not doubled, since originals are unlinked as we go) and a root that
//! lives in RAM, bounded by the tmpfs default of half of it.

use std::convert::Infallible;
use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag};

/// Where stage 0 mounts the new root.
pub const SYSROOT: &str = "/sysroot";

/// The stage 1 binary, exec'd on the new root.
pub const STAGE1: &CStr = c"/sbin/init";

/// Errors of stage 0; each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    /// A directory could not be created.
    #[error("create directory {}: {source}", path.display())]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A directory could not be listed.
    #[error("read directory {}: {source}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file could not be copied.
    #[error("copy {} to {}: {source}", from.display(), to.display())]
    Copy {
        /// The original.
        from: PathBuf,
        /// The copy.
        to: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An original could not be unlinked after its copy.
    #[error("remove {}: {source}", path.display())]
    Remove {
        /// The original.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The tmpfs could not be mounted.
    #[error("mount tmpfs on {}: {source}", target.display())]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// The new root could not be remounted read-only.
    #[error("remount {} ro,nosuid,nodev: {source}", target.display())]
    Remount {
        /// The mount point.
        target: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// The new root could not be moved onto `/`.
    #[error("move {} onto /: {source}", target.display())]
    Move {
        /// The new root.
        target: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// `chdir` failed.
    #[error("chdir {}: {source}", path.display())]
    Chdir {
        /// The directory.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// `chroot` failed.
    #[error("chroot into {}: {source}", path.display())]
    Chroot {
        /// The new root.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// `execve` of stage 1 failed.
    #[error("exec {}: {source}", path.display())]
    Exec {
        /// The binary.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
}

/// What [`move_tree`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveStats {
    /// Directories created.
    pub dirs: u64,
    /// Regular files copied.
    pub files: u64,
    /// Bytes of regular files copied.
    pub bytes: u64,
    /// Symbolic links recreated.
    pub symlinks: u64,
    /// Device nodes and FIFOs recreated.
    pub nodes: u64,
    /// Entries left in place: sockets, and the contents of other file systems mounted below
    /// the source (their mount point is recreated empty).
    pub skipped: Vec<PathBuf>,
}

/// Moves the tree under `src` into `dst`: copies every entry with its mode and owner and
/// unlinks each original after its copy. Hard links are copied as separate files and
/// timestamps and extended attributes are not kept (a newc initramfs carries neither
/// meaningful times nor xattrs). `dst` may lie inside `src`: it is skipped. Other
/// file systems mounted below `src` are not entered. `src` itself stays (empty but for `dst`).
///
/// # Errors
/// The first entry that cannot be read, copied or unlinked.
pub fn move_tree(src: &Path, dst: &Path) -> Result<MoveStats, SwitchRootError> {
    let dst_meta = fs::symlink_metadata(dst).map_err(|source| SwitchRootError::ReadDir {
        path: dst.to_path_buf(),
        source,
    })?;
    let src_meta = fs::symlink_metadata(src).map_err(|source| SwitchRootError::ReadDir {
        path: src.to_path_buf(),
        source,
    })?;
    let mover = Mover {
        skip: (dst_meta.dev(), dst_meta.ino()),
        device: src_meta.dev(),
    };
    let mut stats = MoveStats::default();
    mover.move_dir_contents(src, dst, &mut stats)?;
    Ok(stats)
}

struct Mover {
    /// (device, inode) of the destination, never copied into itself.
    skip: (u64, u64),
    /// The device of the source file system; other file systems are not entered.
    device: u64,
}

impl Mover {
    fn move_dir_contents(
        &self,
        src: &Path,
        dst: &Path,
        stats: &mut MoveStats,
    ) -> Result<(), SwitchRootError> {
        let read_err = |source| SwitchRootError::ReadDir {
            path: src.to_path_buf(),
            source,
        };
        // Collect the names first: the directory is modified while we go.
        let mut names = Vec::new();
        for entry in fs::read_dir(src).map_err(read_err)? {
            names.push(entry.map_err(read_err)?.file_name());
        }
        names.sort();
        for name in names {
            self.move_entry(&src.join(&name), &dst.join(&name), stats)?;
        }
        Ok(())
    }

    fn move_entry(
        &self,
        from: &Path,
        to: &Path,
        stats: &mut MoveStats,
    ) -> Result<(), SwitchRootError> {
        let copy_err = |source| SwitchRootError::Copy {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        };
        let meta = fs::symlink_metadata(from).map_err(copy_err)?;
        if (meta.dev(), meta.ino()) == self.skip {
            return Ok(());
        }
        let file_type = meta.file_type();
        let mode = meta.mode() & 0o7777;
        if file_type.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(to)
                .map_err(|source| SwitchRootError::Mkdir {
                    path: to.to_path_buf(),
                    source,
                })?;
            stats.dirs += 1;
            if meta.dev() == self.device {
                self.move_dir_contents(from, to, stats)?;
            } else {
                stats.skipped.push(from.to_path_buf());
            }
            set_owner_and_mode(to, &meta, mode).map_err(copy_err)?;
            // Best effort: a directory still holding a skipped entry or a mount point stays.
            if let Err(err) = fs::remove_dir(from) {
                tracing::debug!("left {} in place: {err}", from.display());
            }
            return Ok(());
        }
        if file_type.is_file() {
            stats.bytes += copy_file(from, to, &meta, mode).map_err(copy_err)?;
            stats.files += 1;
        } else if file_type.is_symlink() {
            let target = fs::read_link(from).map_err(copy_err)?;
            std::os::unix::fs::symlink(&target, to).map_err(copy_err)?;
            std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(copy_err)?;
            stats.symlinks += 1;
        } else if file_type.is_char_device() || file_type.is_block_device() || file_type.is_fifo() {
            let kind = if file_type.is_char_device() {
                SFlag::S_IFCHR
            } else if file_type.is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            nix::sys::stat::mknod(to, kind, Mode::from_bits_truncate(mode), meta.rdev())
                .map_err(|errno| copy_err(io::Error::from(errno)))?;
            set_owner_and_mode(to, &meta, mode).map_err(copy_err)?;
            stats.nodes += 1;
        } else {
            // A socket: meaningless once its owner is gone.
            stats.skipped.push(from.to_path_buf());
            return Ok(());
        }
        fs::remove_file(from).map_err(|source| SwitchRootError::Remove {
            path: from.to_path_buf(),
            source,
        })
    }
}

/// Copies a regular file, owner first and mode last (a `chown` clears set-user-ID bits).
fn copy_file(from: &Path, to: &Path, meta: &fs::Metadata, mode: u32) -> io::Result<u64> {
    let mut input = fs::File::open(from)?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let bytes = io::copy(&mut input, &mut output)?;
    std::os::unix::fs::fchown(&output, Some(meta.uid()), Some(meta.gid()))?;
    output.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(bytes)
}

fn set_owner_and_mode(path: &Path, meta: &fs::Metadata, mode: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Stage 0: builds the read-only tmpfs root at [`SYSROOT`], switches to it and execs
/// [`STAGE1`]. Returns only on error.
///
/// # Errors
/// The step that failed; the caller prints it and powers off.
pub fn stage0() -> Result<Infallible, SwitchRootError> {
    let sysroot = Path::new(SYSROOT);
    fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(sysroot)
        .map_err(|source| SwitchRootError::Mkdir {
            path: sysroot.to_path_buf(),
            source,
        })?;
    nix::mount::mount(
        Some("sysroot"),
        sysroot,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|source| SwitchRootError::Mount {
        target: sysroot.to_path_buf(),
        source,
    })?;
    let stats = move_tree(Path::new("/"), sysroot)?;
    tracing::debug!(
        "moved the initramfs: {} files ({} bytes), {} dirs, {} symlinks, {} nodes",
        stats.files,
        stats.bytes,
        stats.dirs,
        stats.symlinks,
        stats.nodes
    );
    nix::mount::mount::<str, Path, str, str>(
        None,
        sysroot,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )
    .map_err(|source| SwitchRootError::Remount {
        target: sysroot.to_path_buf(),
        source,
    })?;
    nix::unistd::chdir(sysroot).map_err(|source| SwitchRootError::Chdir {
        path: sysroot.to_path_buf(),
        source,
    })?;
    nix::mount::mount::<str, str, str, str>(Some("."), "/", None, MsFlags::MS_MOVE, None).map_err(
        |source| SwitchRootError::Move {
            target: sysroot.to_path_buf(),
            source,
        },
    )?;
    nix::unistd::chroot(".").map_err(|source| SwitchRootError::Chroot {
        path: sysroot.to_path_buf(),
        source,
    })?;
    nix::unistd::chdir("/").map_err(|source| SwitchRootError::Chdir {
        path: PathBuf::from("/"),
        source,
    })?;
    let no_env: [&CStr; 0] = [];
    let errno = match nix::unistd::execve(STAGE1, &[STAGE1], &no_env) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    Err(SwitchRootError::Exec {
        path: PathBuf::from("/sbin/init"),
        source: errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn move_tree_moves_everything_but_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = src.join("sysroot");
        fs::create_dir_all(src.join("sbin")).unwrap();
        fs::create_dir_all(src.join("etc/rampart")).unwrap();
        fs::create_dir_all(src.join("empty")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(src.join("sbin/init"), b"\x7fELF binary").unwrap();
        fs::set_permissions(src.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("etc/rampart/host.toml"), "[host]\n").unwrap();
        fs::set_permissions(
            src.join("etc/rampart/host.toml"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        fs::set_permissions(src.join("empty"), fs::Permissions::from_mode(0o711)).unwrap();
        std::os::unix::fs::symlink("sbin/init", src.join("init")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o620)).unwrap();
        fs::set_permissions(src.join("fifo"), fs::Permissions::from_mode(0o620)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            fs::create_dir(src.join("dev")).unwrap();
            nix::sys::stat::mknod(
                &src.join("dev/console"),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(5, 1),
            )
            .unwrap();
            fs::write(src.join("sbin/suid"), b"x").unwrap();
            std::os::unix::fs::chown(src.join("sbin/suid"), Some(0), Some(5)).unwrap();
            fs::set_permissions(src.join("sbin/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
        } else {
            eprintln!("not root: device node and set-user-ID cases skipped");
        }

        let stats = move_tree(&src, &dst).unwrap();

        let left: Vec<_> = fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("sysroot")]);
        assert_eq!(fs::read(dst.join("sbin/init")).unwrap(), b"\x7fELF binary");
        assert_eq!(mode_of(&dst.join("sbin/init")), 0o755);
        assert_eq!(
            fs::read_to_string(dst.join("etc/rampart/host.toml")).unwrap(),
            "[host]\n"
        );
        assert_eq!(mode_of(&dst.join("etc/rampart/host.toml")), 0o640);
        assert_eq!(mode_of(&dst.join("empty")), 0o711);
        assert_eq!(
            fs::read_link(dst.join("init")).unwrap(),
            PathBuf::from("sbin/init")
        );
        assert!(fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(mode_of(&dst.join("fifo")), 0o620);
        assert!(!dst.join("sysroot").exists());
        assert_eq!(stats.symlinks, 1);
        assert!(stats.skipped.is_empty());
        if root {
            let console = fs::symlink_metadata(dst.join("dev/console")).unwrap();
            assert!(console.file_type().is_char_device());
            assert_eq!(console.rdev(), nix::sys::stat::makedev(5, 1));
            assert_eq!(console.mode() & 0o7777, 0o600);
            let suid = fs::symlink_metadata(dst.join("sbin/suid")).unwrap();
            assert_eq!(suid.mode() & 0o7777, 0o4755);
            assert_eq!((suid.uid(), suid.gid()), (0, 5));
            assert_eq!(stats.nodes, 2);
            assert_eq!(stats.files, 3);
            assert_eq!(stats.dirs, 5);
        } else {
            assert_eq!(stats.nodes, 1);
            assert_eq!(stats.files, 2);
            assert_eq!(stats.dirs, 4);
        }
    }

    #[test]
    fn move_tree_names_a_missing_destination() {
        let dir = tempfile::tempdir().unwrap();
        let err = move_tree(dir.path(), &dir.path().join("absent")).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
