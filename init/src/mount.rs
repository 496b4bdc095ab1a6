//! The base mount table of a rampart host, and the thin layer that mounts and unmounts it.
//!
//! The table is data: [`BASE_TABLE`] lists every mount of the hardening baseline in mount
//! order with its flags, and [`plan`] adds the tmpfs size limits from `[mounts]` in the host
//! config. [`apply`] creates missing mount points (`mkdir -p`, because some of them live on a
//! tmpfs mounted just before) and mounts each entry under a root directory, which is `/` in
//! PID 1 and a temporary directory in tests. [`unmount_all`] undoes it at shutdown.
//!
//! Not mounted on purpose: `/sys/kernel/tracing` and `/sys/kernel/debug` (the image's kernel
//! command line also says `debugfs=off`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use rampart_config::HostConfig;

/// Per-mount flags as rampart uses them: a small bitset of `ro`, `nosuid`, `nodev`, `noexec`.
///
/// Everything else stays at the kernel default (`rw`, `relatime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct MountFlags(u8);

impl MountFlags {
    /// No flag: a read-write mount with every kernel default.
    pub const EMPTY: Self = Self(0);
    /// `ro`: read-only.
    pub const RDONLY: Self = Self(1);
    /// `nosuid`: set-user-ID and set-group-ID bits and file capabilities are ignored.
    pub const NOSUID: Self = Self(1 << 1);
    /// `nodev`: device nodes cannot be opened.
    pub const NODEV: Self = Self(1 << 2);
    /// `noexec`: files cannot be executed.
    pub const NOEXEC: Self = Self(1 << 3);
    /// `bind`: bind-mount `source` (a path under the root), then remount it with the other
    /// flags (the kernel ignores them on the bind itself). Used for the state partition's
    /// `/var/lib/containerd` ([`crate::disk::with_state`]).
    pub const BIND: Self = Self(1 << 4);

    /// The union of two flag sets (usable in `const` tables).
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every flag of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The `mount(2)` flags for these mount flags.
    #[must_use]
    pub fn ms_flags(self) -> MsFlags {
        let mut flags = MsFlags::empty();
        for (ours, theirs) in [
            (Self::RDONLY, MsFlags::MS_RDONLY),
            (Self::NOSUID, MsFlags::MS_NOSUID),
            (Self::NODEV, MsFlags::MS_NODEV),
            (Self::NOEXEC, MsFlags::MS_NOEXEC),
            (Self::BIND, MsFlags::MS_BIND),
        ] {
            if self.contains(ours) {
                flags |= theirs;
            }
        }
        flags
    }

    /// The per-mount options as the kernel shows them in field 6 of `/proc/self/mountinfo`,
    /// e.g. `rw,nosuid,nodev,noexec,relatime` (`relatime` is the kernel default atime mode and
    /// rampart never changes it).
    #[must_use]
    pub fn mountinfo_options(self) -> String {
        let mut out = String::from(if self.contains(Self::RDONLY) {
            "ro"
        } else {
            "rw"
        });
        for (flag, name) in [
            (Self::NOSUID, "nosuid"),
            (Self::NODEV, "nodev"),
            (Self::NOEXEC, "noexec"),
        ] {
            if self.contains(flag) {
                out.push(',');
                out.push_str(name);
            }
        }
        out.push_str(",relatime");
        out
    }
}

impl std::ops::BitOr for MountFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl fmt::Display for MountFlags {
    /// Renders the flags that are set, comma-separated (`nosuid,nodev,noexec`; empty if none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (flag, name) in [
            (Self::RDONLY, "ro"),
            (Self::NOSUID, "nosuid"),
            (Self::NODEV, "nodev"),
            (Self::NOEXEC, "noexec"),
        ] {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

const NOSUID_NODEV: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV);
const NOSUID_NODEV_NOEXEC: MountFlags = NOSUID_NODEV.union(MountFlags::NOEXEC);
const NOSUID_NOEXEC: MountFlags = MountFlags::NOSUID.union(MountFlags::NOEXEC);

/// Which `[mounts]` size limit of the host config bounds a tmpfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLimit {
    /// No `size=` option: the kernel default (half of RAM for a tmpfs).
    None,
    /// `mounts.run_size`.
    Run,
    /// `mounts.tmp_size`.
    Tmp,
    /// `mounts.var_size`.
    Var,
}

/// One row of the base mount table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseMount {
    /// The mount source (the file system's name for pseudo file systems).
    pub source: &'static str,
    /// The absolute mount point.
    pub target: &'static str,
    /// The file system type.
    pub fstype: &'static str,
    /// Per-mount flags.
    pub flags: MountFlags,
    /// File-system-specific options, without the size.
    pub data: &'static str,
    /// The size limit appended to `data` as `size=<bytes>`.
    pub size: SizeLimit,
}

const fn row(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MountFlags,
    data: &'static str,
    size: SizeLimit,
) -> BaseMount {
    BaseMount {
        source,
        target,
        fstype,
        flags,
        data,
        size,
    }
}

/// The base mount table of the hardening baseline, in mount order (a parent before its
/// children). `/var/lib/containerd` keeps exec (container root file systems live there);
/// `/var` keeps exec for the same reason, every other writable mount is `noexec`.
pub const BASE_TABLE: &[BaseMount] = &[
    row(
        "proc",
        "/proc",
        "proc",
        NOSUID_NODEV_NOEXEC,
        "",
        SizeLimit::None,
    ),
    row(
        "sysfs",
        "/sys",
        "sysfs",
        NOSUID_NODEV_NOEXEC,
        "",
        SizeLimit::None,
    ),
    row(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        NOSUID_NOEXEC,
        "mode=0755",
        SizeLimit::None,
    ),
    row(
        "devpts",
        "/dev/pts",
        "devpts",
        NOSUID_NOEXEC,
        "ptmxmode=000,mode=620,gid=5",
        SizeLimit::None,
    ),
    row(
        "shm",
        "/dev/shm",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=1777",
        SizeLimit::Tmp,
    ),
    row(
        "run",
        "/run",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=0755",
        SizeLimit::Run,
    ),
    row(
        "tmp",
        "/tmp",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=1777",
        SizeLimit::Tmp,
    ),
    row(
        "var",
        "/var",
        "tmpfs",
        NOSUID_NODEV,
        "mode=0755",
        SizeLimit::Var,
    ),
    row(
        "vartmp",
        "/var/tmp",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=1777",
        SizeLimit::Tmp,
    ),
    row(
        "varlog",
        "/var/log",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=0755",
        SizeLimit::Var,
    ),
    row(
        "containerd",
        "/var/lib/containerd",
        "tmpfs",
        NOSUID_NODEV,
        "mode=0711",
        SizeLimit::Var,
    ),
    row(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        "nsdelegate,memory_recursiveprot",
        SizeLimit::None,
    ),
    row(
        "securityfs",
        "/sys/kernel/security",
        "securityfs",
        NOSUID_NODEV_NOEXEC,
        "",
        SizeLimit::None,
    ),
    row(
        "bpf",
        "/sys/fs/bpf",
        "bpf",
        NOSUID_NODEV_NOEXEC,
        "",
        SizeLimit::None,
    ),
];

/// One mount to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The mount source.
    pub source: String,
    /// The absolute mount point (relative to the root given to [`apply`]).
    pub target: PathBuf,
    /// The file system type.
    pub fstype: String,
    /// Per-mount flags.
    pub flags: MountFlags,
    /// File-system-specific options (`mode=0755,size=67108864`), possibly empty.
    pub data: String,
}

impl MountSpec {
    /// The mount point under `root` (`root` + `target` without its leading `/`).
    #[must_use]
    pub fn target_under(&self, root: &Path) -> PathBuf {
        under_root(root, &self.target)
    }
}

/// Joins an absolute path under `root`: `under_root("/tmp/x", "/run")` is `/tmp/x/run`.
#[must_use]
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(relative) => root.join(relative),
        Err(_) => root.join(path),
    }
}

/// The sizes of the size-limited tmpfs mounts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// `/run`.
    pub run: u64,
    /// `/tmp` and `/var/tmp`.
    pub tmp: u64,
    /// `/var`, `/var/log`, `/var/lib/containerd` (each its own tmpfs, each bounded by it).
    pub var: u64,
}

/// The mount plan for a host config: the base table with its size limits, in mount order.
#[must_use]
pub fn plan(cfg: &HostConfig) -> Vec<MountSpec> {
    plan_with_sizes(Sizes {
        run: cfg.mounts.run_size.bytes(),
        tmp: cfg.mounts.tmp_size.bytes(),
        var: cfg.mounts.var_size.bytes(),
    })
}

/// The mount plan for explicit sizes (what [`plan`] uses).
#[must_use]
pub fn plan_with_sizes(sizes: Sizes) -> Vec<MountSpec> {
    BASE_TABLE
        .iter()
        .map(|row| {
            let size = match row.size {
                SizeLimit::None => None,
                SizeLimit::Run => Some(sizes.run),
                SizeLimit::Tmp => Some(sizes.tmp),
                SizeLimit::Var => Some(sizes.var),
            };
            let mut data = String::from(row.data);
            if let Some(bytes) = size {
                if !data.is_empty() {
                    data.push(',');
                }
                data.push_str(&format!("size={bytes}"));
            }
            MountSpec {
                source: row.source.to_owned(),
                target: PathBuf::from(row.target),
                fstype: row.fstype.to_owned(),
                flags: row.flags,
                data,
            }
        })
        .collect()
}

/// Errors of the mount layer; each names the mount point.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount point could not be created.
    #[error("create mount point {}: {source}", target.display())]
    Mkdir {
        /// The mount point (under the root).
        target: PathBuf,
        /// The error of `mkdir`.
        source: io::Error,
    },
    /// `mount(2)` failed.
    #[error("mount {fstype} on {}: {source}", target.display())]
    Mount {
        /// The mount point (under the root).
        target: PathBuf,
        /// The file system type.
        fstype: String,
        /// The errno of `mount(2)`.
        source: Errno,
    },
    /// `umount2(2)` failed, even detached.
    #[error("unmount {}: {source}", target.display())]
    Unmount {
        /// The mount point (under the root).
        target: PathBuf,
        /// The errno of `umount2(2)`.
        source: Errno,
    },
    /// A busy mount could not be remounted read-only.
    #[error("remount {} read-only: {source}", target.display())]
    RemountReadOnly {
        /// The mount point (under the root).
        target: PathBuf,
        /// The errno of `mount(2)`.
        source: Errno,
    },
}

/// Mounts every entry of `plan` under `root`, in order, creating missing mount points.
///
/// # Errors
/// The first mount point that cannot be created or mounted, naming the target, the file
/// system type and the errno.
pub fn apply(plan: &[MountSpec], root: &Path) -> Result<(), MountError> {
    for spec in plan {
        mount_one(spec, root)?;
    }
    Ok(())
}

/// Mounts one entry under `root`, creating its mount point first.
///
/// # Errors
/// See [`apply`].
pub fn mount_one(spec: &MountSpec, root: &Path) -> Result<(), MountError> {
    let target = spec.target_under(root);
    std::fs::create_dir_all(&target).map_err(|source| MountError::Mkdir {
        target: target.clone(),
        source,
    })?;
    let data = (!spec.data.is_empty()).then_some(spec.data.as_str());
    let bind = spec.flags.contains(MountFlags::BIND);
    let source_path = if bind {
        under_root(root, Path::new(&spec.source))
    } else {
        PathBuf::from(&spec.source)
    };
    nix::mount::mount(
        Some(source_path.as_path()),
        &target,
        Some(spec.fstype.as_str()),
        spec.flags.ms_flags(),
        data,
    )
    .map_err(|source| MountError::Mount {
        target: target.clone(),
        fstype: spec.fstype.clone(),
        source,
    })?;
    if bind {
        // The flags of a bind mount take effect only on a remount.
        nix::mount::mount::<str, Path, str, str>(
            None,
            &target,
            None,
            MsFlags::MS_REMOUNT | spec.flags.ms_flags(),
            None,
        )
        .map_err(|source| MountError::Mount {
            target: target.clone(),
            fstype: spec.fstype.clone(),
            source,
        })?;
    }
    tracing::debug!(
        "mounted {} on {} ({}{}{})",
        spec.fstype,
        target.display(),
        spec.flags,
        if spec.data.is_empty() { "" } else { ";" },
        spec.data
    );
    Ok(())
}

/// Unmounts every entry of `plan` under `root`, in reverse order, for shutdown.
///
/// A busy mount is remounted read-only (so its data is consistent) and then detached
/// (`MNT_DETACH`). A mount point that is not mounted (`EINVAL`) or absent (`ENOENT`) is
/// skipped. The root itself is not touched: it is read-only already. Returns every error met;
/// it never stops early.
#[must_use]
pub fn unmount_all(plan: &[MountSpec], root: &Path) -> Vec<MountError> {
    let mut errors = Vec::new();
    for spec in plan.iter().rev() {
        let target = spec.target_under(root);
        match nix::mount::umount2(&target, MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(Errno::EBUSY) => {
                let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | spec.flags.ms_flags();
                if let Err(source) =
                    nix::mount::mount::<str, Path, str, str>(None, &target, None, flags, None)
                {
                    errors.push(MountError::RemountReadOnly {
                        target: target.clone(),
                        source,
                    });
                }
                if let Err(source) = nix::mount::umount2(&target, MntFlags::MNT_DETACH) {
                    errors.push(MountError::Unmount { target, source });
                }
            }
            Err(source) => errors.push(MountError::Unmount { target, source }),
        }
    }
    errors
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SIZES: Sizes = Sizes {
        run: 64 << 20,
        tmp: 128 << 20,
        var: 1 << 30,
    };

    /// The golden table: (target, fstype, mountinfo per-mount options, data).
    const GOLDEN: &[(&str, &str, &str, &str)] = &[
        ("/proc", "proc", "rw,nosuid,nodev,noexec,relatime", ""),
        ("/sys", "sysfs", "rw,nosuid,nodev,noexec,relatime", ""),
        ("/dev", "devtmpfs", "rw,nosuid,noexec,relatime", "mode=0755"),
        (
            "/dev/pts",
            "devpts",
            "rw,nosuid,noexec,relatime",
            "ptmxmode=000,mode=620,gid=5",
        ),
        (
            "/dev/shm",
            "tmpfs",
            "rw,nosuid,nodev,noexec,relatime",
            "mode=1777,size=134217728",
        ),
        (
            "/run",
            "tmpfs",
            "rw,nosuid,nodev,noexec,relatime",
            "mode=0755,size=67108864",
        ),
        (
            "/tmp",
            "tmpfs",
            "rw,nosuid,nodev,noexec,relatime",
            "mode=1777,size=134217728",
        ),
        (
            "/var",
            "tmpfs",
            "rw,nosuid,nodev,relatime",
            "mode=0755,size=1073741824",
        ),
        (
            "/var/tmp",
            "tmpfs",
            "rw,nosuid,nodev,noexec,relatime",
            "mode=1777,size=134217728",
        ),
        (
            "/var/log",
            "tmpfs",
            "rw,nosuid,nodev,noexec,relatime",
            "mode=0755,size=1073741824",
        ),
        (
            "/var/lib/containerd",
            "tmpfs",
            "rw,nosuid,nodev,relatime",
            "mode=0711,size=1073741824",
        ),
        (
            "/sys/fs/cgroup",
            "cgroup2",
            "rw,nosuid,nodev,noexec,relatime",
            "nsdelegate,memory_recursiveprot",
        ),
        (
            "/sys/kernel/security",
            "securityfs",
            "rw,nosuid,nodev,noexec,relatime",
            "",
        ),
        ("/sys/fs/bpf", "bpf", "rw,nosuid,nodev,noexec,relatime", ""),
    ];

    #[test]
    fn plan_matches_golden_table() {
        let plan = plan_with_sizes(SIZES);
        let got: Vec<(String, String, String, String)> = plan
            .iter()
            .map(|m| {
                (
                    m.target.display().to_string(),
                    m.fstype.clone(),
                    m.flags.mountinfo_options(),
                    m.data.clone(),
                )
            })
            .collect();
        let want: Vec<(String, String, String, String)> = GOLDEN
            .iter()
            .map(|(t, f, o, d)| (t.to_string(), f.to_string(), o.to_string(), d.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn parents_are_mounted_before_children_and_targets_are_absolute() {
        let plan = plan_with_sizes(SIZES);
        for (i, spec) in plan.iter().enumerate() {
            assert!(spec.target.is_absolute(), "{}", spec.target.display());
            for later in &plan[i + 1..] {
                assert!(
                    !spec.target.starts_with(&later.target),
                    "{} is mounted before its parent {}",
                    spec.target.display(),
                    later.target.display()
                );
            }
        }
    }

    #[test]
    fn tracing_and_debugfs_are_not_mounted() {
        for spec in plan_with_sizes(SIZES) {
            assert!(!["tracefs", "debugfs"].contains(&spec.fstype.as_str()));
            assert!(!spec.target.starts_with("/sys/kernel/debug"));
            assert!(!spec.target.starts_with("/sys/kernel/tracing"));
        }
    }

    #[test]
    fn writable_mounts_are_noexec_except_var_and_containerd() {
        for spec in plan_with_sizes(SIZES) {
            assert!(
                spec.flags.contains(MountFlags::NOSUID),
                "{}",
                spec.target.display()
            );
            let exec_allowed = ["/var", "/var/lib/containerd"]
                .iter()
                .any(|p| spec.target == Path::new(p));
            assert_eq!(
                spec.flags.contains(MountFlags::NOEXEC),
                !exec_allowed,
                "{}",
                spec.target.display()
            );
        }
    }

    #[test]
    fn flags_render_like_mountinfo() {
        let cases = [
            (MountFlags::EMPTY, "rw,relatime", "", MsFlags::empty()),
            (
                MountFlags::RDONLY | MountFlags::NODEV,
                "ro,nodev,relatime",
                "ro,nodev",
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
            ),
            (
                NOSUID_NODEV_NOEXEC,
                "rw,nosuid,nodev,noexec,relatime",
                "nosuid,nodev,noexec",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            ),
            (
                NOSUID_NOEXEC,
                "rw,nosuid,noexec,relatime",
                "nosuid,noexec",
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            ),
        ];
        for (flags, mountinfo, display, ms) in cases {
            assert_eq!(flags.mountinfo_options(), mountinfo);
            assert_eq!(flags.to_string(), display);
            assert_eq!(flags.ms_flags(), ms);
        }
    }

    #[test]
    fn under_root_joins_absolute_paths() {
        assert_eq!(
            under_root(Path::new("/tmp/x"), Path::new("/var/log")),
            PathBuf::from("/tmp/x/var/log")
        );
        assert_eq!(
            under_root(Path::new("/"), Path::new("/run")),
            PathBuf::from("/run")
        );
    }

    #[test]
    fn mount_error_names_target_fstype_and_errno() {
        let err = MountError::Mount {
            target: PathBuf::from("/sys/fs/bpf"),
            fstype: "bpf".into(),
            source: Errno::ENODEV,
        };
        let text = err.to_string();
        assert!(text.contains("/sys/fs/bpf"), "{text}");
        assert!(text.contains("bpf"), "{text}");
        assert!(text.contains("ENODEV"), "{text}");
    }

    /// One mountinfo line: (mount point, per-mount options, fstype, super options).
    fn mountinfo_entry(mountinfo: &str, mount_point: &Path) -> Option<(String, String, String)> {
        mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            if Path::new(fields.get(4)?) != mount_point {
                return None;
            }
            let right: Vec<&str> = right.split(' ').collect();
            Some((
                fields.get(5)?.to_string(),
                right.first()?.to_string(),
                right.get(2)?.to_string(),
            ))
        })
    }

    /// Runs `f` in a thread with its own private mount namespace. `unshare(CLONE_NEWNS)`
    /// implies `CLONE_FS`, which only affects the calling thread, so the test harness and the
    /// host are untouched; the namespace (and every mount in it) goes away with the thread.
    /// The thread's mounts are in `/proc/thread-self/mountinfo` (`/proc/self` is the main
    /// thread's).
    pub(crate) fn in_private_mount_namespace<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            nix::mount::mount::<str, str, str, str>(
                None,
                "/",
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn apply_and_unmount_tmpfs_in_a_private_mount_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let result = in_private_mount_namespace(move || -> Result<(), String> {
            let plan: Vec<MountSpec> = plan_with_sizes(SIZES)
                .into_iter()
                .filter(|m| {
                    ["/var", "/var/tmp", "/run"]
                        .iter()
                        .any(|t| m.target == Path::new(t))
                })
                .collect();
            assert_eq!(plan.len(), 3);
            apply(&plan, &root).map_err(|e| e.to_string())?;
            assert!(root.join("var/tmp").is_dir(), "nested mount point created");

            let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            let want = [
                (
                    "run",
                    "rw,nosuid,nodev,noexec,relatime",
                    "size=65536k,mode=755",
                ),
                ("var", "rw,nosuid,nodev,relatime", "size=1048576k,mode=755"),
                ("var/tmp", "rw,nosuid,nodev,noexec,relatime", "size=131072k"),
            ];
            for (target, options, super_options) in want {
                let (opts, fstype, sopts) = mountinfo_entry(&info, &root.join(target))
                    .ok_or(format!("{target} not in mountinfo:\n{info}"))?;
                assert_eq!(opts, options, "{target}");
                assert_eq!(fstype, "tmpfs", "{target}");
                assert!(sopts.contains(super_options), "{target}: {sopts}");
            }

            let errors = unmount_all(&plan, &root);
            assert!(errors.is_empty(), "{errors:?}");
            let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            for target in ["run", "var", "var/tmp"] {
                assert!(
                    mountinfo_entry(&info, &root.join(target)).is_none(),
                    "{target}"
                );
            }
            Ok(())
        });
        result.unwrap();
    }

    #[test]
    fn apply_reports_the_failing_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let bogus = MountSpec {
            source: "none".into(),
            target: PathBuf::from("/x"),
            fstype: "no-such-fs".into(),
            flags: MountFlags::EMPTY,
            data: String::new(),
        };
        let err =
            in_private_mount_namespace(move || apply(&[bogus], &root).unwrap_err().to_string());
        assert!(err.contains("no-such-fs"), "{err}");
        assert!(err.contains("/x"), "{err}");
        assert!(err.contains("ENODEV"), "{err}");
    }
}
