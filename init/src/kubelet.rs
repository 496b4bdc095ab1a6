//! What PID 1 prepares for kubelet (`[kubelet]`, see `rampart_config::kubelet`) before the
//! services start: the folders kubelet writes, which its mount namespace can only make
//! writable if they exist ([`rampart_config::kubelet::DIRECTORIES`]), and its root folder as
//! a shared mount of the host ([`rampart_config::kubelet::SHARED_PATHS`]): containerd's mount
//! namespace, made a slave of the host's when it starts, then receives the volumes kubelet
//! mounts there from its own namespace, where the folder stays a peer. Its cgroup side
//! (`cpuset`, `hugetlb`, `kubepods`) is in [`crate::cgroup::plan_with`].
//!
//! [`plan`] and [`shared_plan`] are data; [`apply`] creates the folders and [`share`] makes the
//! shared mounts, under a root given as a parameter.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rampart_config::HostConfig;

/// One folder to create, with its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// The absolute path in the running system.
    pub path: PathBuf,
    /// Its mode.
    pub mode: u32,
}

/// Errors of the kubelet preparation; each names the folder.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// A folder could not be created.
    #[error("create {}: {source}", path.display())]
    Mkdir {
        /// The folder (under the root).
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bind mount of a shared folder onto itself failed.
    #[error("bind mount {} onto itself: {source}", path.display())]
    Bind {
        /// The folder (under the root).
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// The bind mount could not be made shared.
    #[error("make {} a shared mount: {source}", path.display())]
    Share {
        /// The folder (under the root).
        path: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// A folder's mode could not be set.
    #[error("chmod {mode:o} {}: {source}", path.display())]
    Chmod {
        /// The folder (under the root).
        path: PathBuf,
        /// The mode.
        mode: u32,
        /// The error.
        source: std::io::Error,
    },
}

/// The folders to create for `cfg` (none without kubelet).
#[must_use]
pub fn plan(cfg: &HostConfig) -> Vec<Directory> {
    rampart_config::kubelet::directories(cfg)
        .iter()
        .map(|(p, mode)| Directory {
            path: PathBuf::from(p),
            mode: *mode,
        })
        .collect()
}

/// The folders to make shared mounts for `cfg` (none without kubelet).
#[must_use]
pub fn shared_plan(cfg: &HostConfig) -> Vec<PathBuf> {
    rampart_config::kubelet::shared_paths(cfg)
        .iter()
        .map(|(p, _)| PathBuf::from(p))
        .collect()
}

/// Makes every folder of `plan` under `root` (it exists: [`apply`] created it) a bind mount
/// of itself, then a shared mount with a peer group of its own.
///
/// # Errors
/// The first folder that cannot be bound or shared.
pub fn share(plan: &[PathBuf], root: &Path) -> Result<(), KubeletError> {
    use nix::mount::{mount, MsFlags};
    for p in plan {
        let path = root.join(p.strip_prefix("/").unwrap_or(p));
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| KubeletError::Bind {
            path: path.clone(),
            source,
        })?;
        mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .map_err(|source| KubeletError::Share {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), "shared mount for kubelet's volumes");
    }
    Ok(())
}

/// Creates every folder of `plan` under `root` (with its parents) and sets its mode.
///
/// # Errors
/// The first folder that cannot be created or given its mode.
pub fn apply(plan: &[Directory], root: &Path) -> Result<(), KubeletError> {
    for d in plan {
        let path = root.join(d.path.strip_prefix("/").unwrap_or(&d.path));
        std::fs::create_dir_all(&path).map_err(|source| KubeletError::Mkdir {
            path: path.clone(),
            source,
        })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(d.mode)).map_err(
            |source| KubeletError::Chmod {
                path: path.clone(),
                mode: d.mode,
                source,
            },
        )?;
    }
    if !plan.is_empty() {
        tracing::info!(folders = plan.len(), "kubelet folders created");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> HostConfig {
        rampart_config::parse(text, Path::new("/cfg/host.toml")).unwrap()
    }

    const KUBELET: &str = "[containerd]\ncri = true\n\
        [[service]]\nname = \"containerd\"\nexec = [\"/usr/bin/containerd\"]\n\
        [kubelet]\nbinary = \"/k8s/kubelet\"\n";

    #[test]
    fn folders_for_kubelet_only() {
        assert!(plan(&cfg("")).is_empty());
        let p = plan(&cfg(KUBELET));
        let got: Vec<(String, u32)> = p
            .iter()
            .map(|d| (d.path.display().to_string(), d.mode))
            .collect();
        assert_eq!(
            got,
            [
                ("/var/lib/kubelet".to_owned(), 0o750),
                ("/var/log/pods".to_owned(), 0o755),
                ("/var/log/containers".to_owned(), 0o755),
            ]
        );
    }

    #[test]
    fn apply_creates_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(&cfg(KUBELET));
        apply(&p, dir.path()).unwrap();
        for d in &p {
            let at = dir.path().join(d.path.strip_prefix("/").unwrap());
            let meta = std::fs::metadata(&at).unwrap();
            assert!(meta.is_dir(), "{}", at.display());
            assert_eq!(meta.permissions().mode() & 0o7777, d.mode);
        }
        // Again (a folder already there) is fine.
        apply(&p, dir.path()).unwrap();
    }

    #[test]
    fn shared_root_folder_for_kubelet_only() {
        assert!(shared_plan(&cfg("")).is_empty());
        assert_eq!(
            shared_plan(&cfg(KUBELET)),
            [PathBuf::from("/var/lib/kubelet")]
        );
    }

    /// As root, in a thread with a private mount namespace of its own: the folder becomes a
    /// mount of its own, shared (`shared:N` in mountinfo); a missing folder is an error naming it.
    #[test]
    fn share_makes_a_shared_bind_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped share_makes_a_shared_bind_mount: needs root (mount namespaces)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (mountinfo, missing) = crate::mount::tests::in_private_mount_namespace(move || {
            let p = plan(&cfg(KUBELET));
            apply(&p, &root).unwrap();
            share(&shared_plan(&cfg(KUBELET)), &root).unwrap();
            let missing = share(&[PathBuf::from("/nope")], &root).unwrap_err();
            (
                std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap(),
                missing.to_string(),
            )
        });
        let target = dir.path().join("var/lib/kubelet");
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
            .unwrap_or_else(|| panic!("{} not mounted:\n{mountinfo}", target.display()));
        assert!(line.contains(" shared:"), "{line}");
        assert!(
            missing.contains("nope") && missing.starts_with("bind mount"),
            "{missing}"
        );
    }

    #[test]
    fn errors_name_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("var"), "a file").unwrap();
        let err = apply(&plan(&cfg(KUBELET)), dir.path()).unwrap_err();
        assert!(err.to_string().contains("var/lib/kubelet"), "{err}");
    }
}
