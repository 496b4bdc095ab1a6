//! The least-privilege launch plan of one service, as plain data.
//!
//! [`plan`] turns a validated [`Service`] into a [`Launch`]: which namespaces to create, the
//! mount operations of its mount namespace, its ids, the capabilities it keeps and the ones
//! dropped from the bounding set, `no_new_privs`, Landlock and seccomp, and the cgroup limit
//! writes done before the fork. `spawn.rs` prepares it for the child and applies it between
//! `fork` and `exec`, in the order of [`CHILD_STEPS`].

use std::path::{Path, PathBuf};

use rampart_config::{Landlock, Namespace, SeccompProfile, Service};

use crate::cgroup::CgroupOp;

/// The highest capability number the bounding-set drop walks to (the kernel's `CAP_LAST_CAP`
/// is 40 on Linux 6.1; numbers it does not know are refused with `EINVAL` and skipped).
pub const CAP_LAST: u8 = 63;

/// What the child does between `fork` and `exec`, in order (documentation and tests).
pub const CHILD_STEPS: &[&str] = &[
    "clone with the namespace flags (the parent)",
    "stdout and stderr to the log pipe (so every later failure is logged), stdin /dev/null",
    "join the cgroup",
    "setsid",
    "oom_score_adj (before the mounts: a read-only /proc refuses it)",
    "AppArmor: `exec PROFILE` to /proc/self/attr/apparmor/exec (or attr/exec), applied at execve",
    "mount namespace: / rslave, read-only, writable binds, private /tmp, /proc for a pid namespace",
    "network namespace: bring up lo",
    "drop the bounding set",
    "keep capabilities across the id change, setgroups, setgid, setuid",
    "capset effective, inheritable, permitted; raise ambient",
    "no_new_privs",
    "chdir workdir",
    "landlock",
    "reset signal dispositions and mask",
    "seccomp",
    "execve",
];

/// One operation in the service's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// `mount(NULL, "/", NULL, MS_REC | MS_SLAVE)`: host mounts still propagate in, nothing
    /// propagates out.
    SlaveRoot,
    /// `mount_setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY)`: every mount read-only.
    ReadOnlyRoot,
    /// Bind `path` onto itself recursively, then clear the read-only flag beneath it.
    Writable(PathBuf),
    /// Clear the read-only flag of the mount at `path` and beneath it, with no new mount: a
    /// shared mount of the host (`shared_paths`) that stays a peer of the host's.
    WritableInPlace(PathBuf),
    /// A fresh tmpfs (nosuid, nodev) at `path` with these options.
    Tmpfs {
        /// Where.
        path: PathBuf,
        /// `mode=1777,size=...`.
        data: String,
    },
    /// A fresh procfs (nosuid, nodev, noexec) at `/proc`, for a pid namespace.
    Proc(PathBuf),
}

/// Which ids the service runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// The uid.
    pub uid: u32,
    /// The gid.
    pub gid: u32,
    /// The supplementary groups (set with `setgroups`, possibly empty).
    pub groups: Vec<u32>,
}

/// The launch plan of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The namespaces created with `clone`.
    pub namespaces: Vec<Namespace>,
    /// The mount namespace set-up, in order (empty without a mount namespace).
    pub mounts: Vec<MountOp>,
    /// Written to `/proc/self/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// The AppArmor profile entered at `execve` (`apparmor_profile`).
    pub apparmor_profile: Option<String>,
    /// The ids.
    pub ids: Ids,
    /// Capability numbers kept in every set (sorted).
    pub keep: Vec<u8>,
    /// Capability numbers dropped from the bounding set: 0 to [`CAP_LAST`] minus `keep`.
    pub drop_bounding: Vec<u8>,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// The working directory.
    pub workdir: PathBuf,
    /// The Landlock ruleset.
    pub landlock: Option<Landlock>,
    /// The seccomp profile.
    pub seccomp: Option<SeccompProfile>,
}

/// The launch plan of `service`; `tmp_size` is the size of its private `/tmp` in bytes.
pub fn plan(service: &Service, tmp_size: u64) -> Launch {
    let has = |ns| service.namespaces.contains(&ns);
    let mut mounts = Vec::new();
    if has(Namespace::Mount) {
        // A service with shared paths keeps the host's propagation: its copies of the host's
        // mounts are private but for the shared ones (PID 1 shares nothing else), which stay
        // peers so that its mounts beneath them propagate out.
        if service.shared_paths.is_empty() {
            mounts.push(MountOp::SlaveRoot);
        }
        if service.read_only_root {
            mounts.push(MountOp::ReadOnlyRoot);
        }
        mounts.extend(
            service
                .writable_paths
                .iter()
                .cloned()
                .map(MountOp::Writable),
        );
        mounts.extend(
            service
                .shared_paths
                .iter()
                .cloned()
                .map(MountOp::WritableInPlace),
        );
        mounts.push(MountOp::Tmpfs {
            path: PathBuf::from("/tmp"),
            data: format!("mode=1777,size={tmp_size}"),
        });
        if has(Namespace::Pid) {
            mounts.push(MountOp::Proc(PathBuf::from("/proc")));
        }
    }
    let keep: Vec<u8> = service.capabilities.iter().map(|c| c.number()).collect();
    let drop_bounding = (0..=CAP_LAST).filter(|n| !keep.contains(n)).collect();
    let uid = service.user.unwrap_or(0);
    Launch {
        namespaces: service.namespaces.clone(),
        mounts,
        oom_score_adj: service.oom_score_adj,
        apparmor_profile: service.apparmor_profile.clone(),
        ids: Ids {
            uid,
            gid: service.group.unwrap_or(uid),
            groups: service.supplementary_groups.clone(),
        },
        keep,
        drop_bounding,
        no_new_privs: service.no_new_privs,
        workdir: service.workdir.clone(),
        landlock: service.landlock.clone(),
        seccomp: service.seccomp,
    }
}

/// The cgroup limit writes for `service` in its cgroup `dir`, done before every start.
pub fn cgroup_limits(service: &Service, dir: &Path) -> Vec<CgroupOp> {
    let l = &service.limits;
    let values = [
        ("memory.high", l.memory_high.map(|s| s.bytes().to_string())),
        ("memory.max", l.memory_max.map(|s| s.bytes().to_string())),
        ("pids.max", l.pids_max.map(|n| n.to_string())),
        ("cpu.weight", l.cpu_weight.map(|n| n.to_string())),
        ("cpu.max", l.cpu_max.clone()),
        ("io.weight", l.io_weight.map(|n| format!("default {n}"))),
    ];
    values
        .into_iter()
        .filter_map(|(file, value)| {
            value.map(|value| CgroupOp::Write {
                path: dir.join(file),
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_config::{Capability, ServiceName, Size};

    fn base() -> Service {
        Service::new(
            ServiceName::try_from("svc").unwrap(),
            vec!["/bin/true".into()],
        )
    }

    #[test]
    fn defaults_plan_least_privilege() {
        let l = plan(&base(), 1 << 20);
        assert_eq!(l.namespaces, [Namespace::Mount]);
        assert_eq!(
            l.mounts,
            [
                MountOp::SlaveRoot,
                MountOp::ReadOnlyRoot,
                MountOp::Tmpfs {
                    path: PathBuf::from("/tmp"),
                    data: "mode=1777,size=1048576".into()
                }
            ]
        );
        assert_eq!(
            l.ids,
            Ids {
                uid: 0,
                gid: 0,
                groups: vec![]
            }
        );
        assert!(l.keep.is_empty());
        assert_eq!(l.drop_bounding, (0..=CAP_LAST).collect::<Vec<_>>());
        assert!(l.no_new_privs);
        assert_eq!(l.workdir, PathBuf::from("/"));
        assert_eq!(l.oom_score_adj, None);
        assert_eq!(l.landlock, None);
        assert_eq!(l.seccomp, None);
    }

    /// Each case edits the default service and checks one part of the plan.
    #[test]
    fn every_option_reaches_the_plan() {
        type Case = (&'static str, fn(&mut Service), fn(&Launch) -> bool);
        let cases: &[Case] = &[
            (
                "no mount namespace: no mount op",
                |s| {
                    s.namespaces = vec![Namespace::Net];
                    s.read_only_root = false;
                },
                |l| l.mounts.is_empty() && l.namespaces == [Namespace::Net],
            ),
            (
                "read_only_root = false keeps a private /tmp",
                |s| s.read_only_root = false,
                |l| {
                    l.mounts.len() == 2
                        && l.mounts.first() == Some(&MountOp::SlaveRoot)
                        && matches!(l.mounts.get(1), Some(MountOp::Tmpfs { .. }))
                },
            ),
            (
                "writable paths after the read-only pass, before /tmp",
                |s| s.writable_paths = vec!["/run/a".into(), "/var/b".into()],
                |l| {
                    l.mounts.get(1) == Some(&MountOp::ReadOnlyRoot)
                        && l.mounts.get(2) == Some(&MountOp::Writable("/run/a".into()))
                        && l.mounts.get(3) == Some(&MountOp::Writable("/var/b".into()))
                        && matches!(l.mounts.get(4), Some(MountOp::Tmpfs { .. }))
                },
            ),
            (
                "shared paths: no slave pass, writable in place after the bind mounts",
                |s| {
                    s.writable_paths = vec!["/var/log".into()];
                    s.shared_paths = vec!["/var/lib/kubelet".into()];
                },
                |l| {
                    l.mounts.first() == Some(&MountOp::ReadOnlyRoot)
                        && l.mounts.get(1) == Some(&MountOp::Writable("/var/log".into()))
                        && l.mounts.get(2)
                            == Some(&MountOp::WritableInPlace("/var/lib/kubelet".into()))
                        && matches!(l.mounts.get(3), Some(MountOp::Tmpfs { .. }))
                        && !l.mounts.contains(&MountOp::SlaveRoot)
                },
            ),
            (
                "pid namespace mounts /proc last",
                |s| s.namespaces = vec![Namespace::Mount, Namespace::Pid],
                |l| l.mounts.last() == Some(&MountOp::Proc("/proc".into())),
            ),
            (
                "user alone: group follows",
                |s| s.user = Some(1000),
                |l| l.ids.uid == 1000 && l.ids.gid == 1000,
            ),
            (
                "user, group and supplementary groups",
                |s| {
                    s.user = Some(1000);
                    s.group = Some(50);
                    s.supplementary_groups = vec![7, 8];
                },
                |l| {
                    l.ids
                        == Ids {
                            uid: 1000,
                            gid: 50,
                            groups: vec![7, 8],
                        }
                },
            ),
            (
                "group alone: uid stays root",
                |s| s.group = Some(5),
                |l| l.ids.uid == 0 && l.ids.gid == 5,
            ),
            (
                "capabilities kept are not dropped from the bounding set",
                |s| {
                    s.capabilities = vec![
                        Capability::try_from("CAP_NET_BIND_SERVICE").unwrap(),
                        Capability::try_from("CAP_NET_ADMIN").unwrap(),
                    ]
                },
                |l| {
                    l.keep == [10, 12]
                        && !l.drop_bounding.contains(&10)
                        && !l.drop_bounding.contains(&12)
                        && l.drop_bounding.len() == usize::from(CAP_LAST) + 1 - 2
                        && l.drop_bounding.contains(&16)
                },
            ),
            (
                "no_new_privs off",
                |s| s.no_new_privs = false,
                |l| !l.no_new_privs,
            ),
            (
                "oom_score_adj",
                |s| s.oom_score_adj = Some(-900),
                |l| l.oom_score_adj == Some(-900),
            ),
            (
                "workdir",
                |s| s.workdir = "/srv".into(),
                |l| l.workdir == Path::new("/srv"),
            ),
            (
                "seccomp",
                |s| s.seccomp = Some(SeccompProfile::Default),
                |l| l.seccomp == Some(SeccompProfile::Default),
            ),
            (
                "landlock",
                |s| {
                    s.landlock = Some(Landlock {
                        read_only: vec!["/usr".into()],
                        read_write: vec!["/tmp".into()],
                    })
                },
                |l| {
                    l.landlock.as_ref().is_some_and(|ll| {
                        ll.read_only == [PathBuf::from("/usr")]
                            && ll.read_write == [PathBuf::from("/tmp")]
                    })
                },
            ),
        ];
        for (what, edit, check) in cases {
            let mut s = base();
            edit(&mut s);
            let l = plan(&s, 1 << 20);
            assert!(check(&l), "{what}: {l:#?}");
        }
    }

    #[test]
    fn cgroup_limits_table() {
        let dir = Path::new("/cg/services/svc");
        assert!(cgroup_limits(&base(), dir).is_empty());
        let mut s = base();
        s.limits.memory_max = Some(Size::from_mib(256));
        s.limits.memory_high = Some(Size::from_mib(128));
        s.limits.pids_max = Some(64);
        s.limits.cpu_weight = Some(200);
        s.limits.cpu_max = Some("50000 100000".into());
        s.limits.io_weight = Some(50);
        let got: Vec<(String, String)> = cgroup_limits(&s, dir)
            .into_iter()
            .map(|op| match op {
                CgroupOp::Write { path, value } => {
                    (path.strip_prefix(dir).unwrap().display().to_string(), value)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("memory.high", "134217728"),
            ("memory.max", "268435456"),
            ("pids.max", "64"),
            ("cpu.weight", "200"),
            ("cpu.max", "50000 100000"),
            ("io.weight", "default 50"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }
}
