//! A small typed layer over cgroupfs (cgroup v2), without cgroups-rs.
//!
//! The layout rampart sets up under the cgroup2 mount (`/sys/fs/cgroup` in PID 1):
//!
//! ```text
//! <root>/                      cgroup.subtree_control = +cpu +memory +pids +io
//! <root>/init/                 PID 1 (a leaf)
//! <root>/services/             cgroup.subtree_control = +cpu +memory +pids +io
//! <root>/services/<name>/      one per service
//! ```
//!
//! The root cgroup is exempt from the no-internal-process rule, but PID 1 still moves into the
//! leaf `init` first, so the hierarchy below the root only ever has processes in leaves.
//!
//! A host running kubelet ([`plan_with`]) also gets `+cpuset +hugetlb` at the root and the
//! empty top-level cgroup `kubepods`, which kubelet manages: enabling `cpuset` moves every
//! process below the root into new cpusets, which the kernel allows only to a writer with
//! `CAP_SYS_NICE` and every capability of those processes (PID 1 at boot), and the root
//! folder is mode 0555 (creating a cgroup there needs `CAP_DAC_OVERRIDE`).
//! [`plan`] returns the steps as data ([`CgroupOp`]) and [`apply`] performs them; tests run the
//! plan against a temporary directory holding fake cgroupfs files.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// The controllers rampart enables for services, in the order written.
pub const CONTROLLERS: &[&str] = &["cpu", "memory", "pids", "io"];

/// The leaf cgroup PID 1 lives in.
pub const INIT_CGROUP: &str = "init";

/// The parent cgroup of every service cgroup.
pub const SERVICES_CGROUP: &str = "services";

/// One step of the cgroup setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupOp {
    /// Check that `cgroup.controllers` at `path` lists every controller.
    Require {
        /// The `cgroup.controllers` file.
        path: PathBuf,
        /// The controllers that must be listed.
        controllers: Vec<String>,
    },
    /// Create a cgroup directory (an existing one is fine).
    Mkdir(PathBuf),
    /// Write a value to an existing cgroupfs file.
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
    },
}

/// The `cgroup.subtree_control` value that enables [`CONTROLLERS`].
#[must_use]
pub fn enable_value() -> String {
    CONTROLLERS
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cgroup of a service: `<root>/services/<name>`.
#[must_use]
pub fn service_cgroup(cgroup_root: &Path, service: &str) -> PathBuf {
    cgroup_root.join(SERVICES_CGROUP).join(service)
}

/// The setup plan for the cgroup2 mount at `root`, moving process `pid` (PID 1) into the leaf.
#[must_use]
pub fn plan(root: &Path, pid: u32) -> Vec<CgroupOp> {
    plan_with(root, pid, &[], &[])
}

/// [`plan`], with `extra` controllers required and enabled at the root (after
/// [`CONTROLLERS`], services still get only those) and the empty top-level cgroups `delegated`
/// created last, for a manager such as kubelet.
#[must_use]
pub fn plan_with(root: &Path, pid: u32, extra: &[&str], delegated: &[&str]) -> Vec<CgroupOp> {
    let init = root.join(INIT_CGROUP);
    let services = root.join(SERVICES_CGROUP);
    let all: Vec<String> = CONTROLLERS
        .iter()
        .chain(extra.iter().filter(|c| !CONTROLLERS.contains(c)))
        .map(|c| (*c).to_owned())
        .collect();
    let root_value = all
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut ops = vec![
        CgroupOp::Require {
            path: root.join("cgroup.controllers"),
            controllers: all,
        },
        CgroupOp::Mkdir(init.clone()),
        CgroupOp::Write {
            path: init.join("cgroup.procs"),
            value: pid.to_string(),
        },
        CgroupOp::Write {
            path: root.join("cgroup.subtree_control"),
            value: root_value,
        },
        CgroupOp::Mkdir(services.clone()),
        CgroupOp::Write {
            path: services.join("cgroup.subtree_control"),
            value: enable_value(),
        },
    ];
    ops.extend(delegated.iter().map(|d| CgroupOp::Mkdir(root.join(d))));
    ops
}

/// Errors of the cgroup layer; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `cgroup.controllers` could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// A required controller is not available.
    #[error("controller {controller} is not available (not listed in {})", path.display())]
    MissingController {
        /// The controller.
        controller: String,
        /// The `cgroup.controllers` file.
        path: PathBuf,
    },
    /// A cgroup could not be created.
    #[error("create cgroup {}: {source}", path.display())]
    Mkdir {
        /// The cgroup directory.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// A cgroupfs file could not be written.
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The errno.
        source: Errno,
    },
}

fn errno_of(err: &io::Error) -> Errno {
    err.raw_os_error()
        .map_or(Errno::UnknownErrno, Errno::from_raw)
}

/// Performs the plan, in order.
///
/// # Errors
/// The first step that fails; a missing controller names it.
pub fn apply(plan: &[CgroupOp]) -> Result<(), CgroupError> {
    for op in plan {
        apply_op(op)?;
    }
    Ok(())
}

fn apply_op(op: &CgroupOp) -> Result<(), CgroupError> {
    match op {
        CgroupOp::Require { path, controllers } => {
            let text = std::fs::read_to_string(path).map_err(|err| CgroupError::Read {
                path: path.clone(),
                source: errno_of(&err),
            })?;
            let available: Vec<&str> = text.split_whitespace().collect();
            if let Some(missing) = controllers
                .iter()
                .find(|c| !available.contains(&c.as_str()))
            {
                return Err(CgroupError::MissingController {
                    controller: missing.clone(),
                    path: path.clone(),
                });
            }
            Ok(())
        }
        CgroupOp::Mkdir(path) => mkdir(path),
        CgroupOp::Write { path, value } => {
            // No O_CREAT and no O_TRUNC: cgroupfs files always exist.
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| f.write_all(value.as_bytes()))
                .map_err(|err| CgroupError::Write {
                    path: path.clone(),
                    value: value.clone(),
                    source: errno_of(&err),
                })
        }
    }
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(CgroupError::Mkdir {
            path: path.to_path_buf(),
            source: errno_of(&err),
        }),
    }
}

/// Creates the cgroup of a service (see [`service_cgroup`]) and returns its path.
///
/// # Errors
/// The directory cannot be created.
pub fn create_service_cgroup(cgroup_root: &Path, service: &str) -> Result<PathBuf, CgroupError> {
    let path = service_cgroup(cgroup_root, service);
    mkdir(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_data_in_the_right_order() {
        let root = Path::new("/sys/fs/cgroup");
        let want = vec![
            CgroupOp::Require {
                path: PathBuf::from("/sys/fs/cgroup/cgroup.controllers"),
                controllers: vec!["cpu".into(), "memory".into(), "pids".into(), "io".into()],
            },
            CgroupOp::Mkdir(PathBuf::from("/sys/fs/cgroup/init")),
            CgroupOp::Write {
                path: PathBuf::from("/sys/fs/cgroup/init/cgroup.procs"),
                value: "1".into(),
            },
            CgroupOp::Write {
                path: PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control"),
                value: "+cpu +memory +pids +io".into(),
            },
            CgroupOp::Mkdir(PathBuf::from("/sys/fs/cgroup/services")),
            CgroupOp::Write {
                path: PathBuf::from("/sys/fs/cgroup/services/cgroup.subtree_control"),
                value: "+cpu +memory +pids +io".into(),
            },
        ];
        assert_eq!(plan(root, 1), want);
    }

    #[test]
    fn kubelet_controllers_and_cgroup() {
        let root = Path::new("/sys/fs/cgroup");
        let p = plan_with(root, 1, &["cpuset", "hugetlb", "cpu"], &["kubepods"]);
        assert_eq!(
            p[0],
            CgroupOp::Require {
                path: PathBuf::from("/sys/fs/cgroup/cgroup.controllers"),
                controllers: ["cpu", "memory", "pids", "io", "cpuset", "hugetlb"]
                    .map(String::from)
                    .to_vec(),
            }
        );
        assert_eq!(
            p[3],
            CgroupOp::Write {
                path: PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control"),
                value: "+cpu +memory +pids +io +cpuset +hugetlb".into(),
            }
        );
        // Services keep the base controllers; the delegated cgroup comes last.
        assert_eq!(
            p[5],
            CgroupOp::Write {
                path: PathBuf::from("/sys/fs/cgroup/services/cgroup.subtree_control"),
                value: "+cpu +memory +pids +io".into(),
            }
        );
        assert_eq!(
            p.last(),
            Some(&CgroupOp::Mkdir(PathBuf::from("/sys/fs/cgroup/kubepods")))
        );
        assert_eq!(p.len(), plan(root, 1).len() + 1);
        // Without cpuset the host cannot run kubelet: the plan names it before any write.
        let dir = fake_cgroupfs("cpu io memory hugetlb pids\n");
        let err = apply(&plan_with(dir.path(), 1, &["cpuset"], &["kubepods"])).unwrap_err();
        assert!(err.to_string().contains("controller cpuset"), "{err}");
        let dir = fake_cgroupfs("cpuset cpu io memory hugetlb pids\n");
        apply(&plan_with(
            dir.path(),
            1,
            &["cpuset", "hugetlb"],
            &["kubepods"],
        ))
        .unwrap();
        assert!(dir.path().join("kubepods").is_dir());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids +io +cpuset +hugetlb"
        );
    }

    #[test]
    fn service_cgroups_live_under_services() {
        assert_eq!(
            service_cgroup(Path::new("/sys/fs/cgroup"), "sshd"),
            PathBuf::from("/sys/fs/cgroup/services/sshd")
        );
    }

    /// A fake cgroupfs: the files the kernel would provide, empty.
    fn fake_cgroupfs(controllers: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        for child in [INIT_CGROUP, SERVICES_CGROUP] {
            std::fs::create_dir(root.join(child)).unwrap();
            std::fs::write(root.join(child).join("cgroup.procs"), "").unwrap();
            std::fs::write(root.join(child).join("cgroup.subtree_control"), "").unwrap();
        }
        dir
    }

    #[test]
    fn apply_writes_the_expected_files() {
        let dir = fake_cgroupfs("cpuset cpu io memory hugetlb pids rdma misc\n");
        let root = dir.path();
        apply(&plan(root, 1)).unwrap();
        let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap();
        assert_eq!(read("init/cgroup.procs"), "1");
        assert_eq!(read("cgroup.subtree_control"), "+cpu +memory +pids +io");
        assert_eq!(
            read("services/cgroup.subtree_control"),
            "+cpu +memory +pids +io"
        );
        let svc = create_service_cgroup(root, "web").unwrap();
        assert!(svc.is_dir());
        assert_eq!(svc, root.join("services/web"));
        // Creating it again is fine (a restarted service).
        create_service_cgroup(root, "web").unwrap();
    }

    #[test]
    fn a_missing_controller_is_named() {
        let dir = fake_cgroupfs("cpuset cpu memory pids\n");
        let err = apply(&plan(dir.path(), 1)).unwrap_err();
        assert!(
            matches!(&err, CgroupError::MissingController { controller, .. } if controller == "io"),
            "{err:?}"
        );
        assert!(err.to_string().contains("controller io"), "{err}");
        // Nothing was written before the check failed.
        let control = std::fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(control, "");
    }

    #[test]
    fn a_write_error_names_the_file() {
        let dir = fake_cgroupfs("cpu io memory pids");
        std::fs::remove_file(dir.path().join("init/cgroup.procs")).unwrap();
        let err = apply(&plan(dir.path(), 1)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("init/cgroup.procs"), "{text}");
        assert!(text.contains("ENOENT"), "{text}");
    }
}
