//! The thin layer that looks at the host for the policy: which paths a spec names really
//! point to, and which of its namespace paths are the host's own namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::policy::{host_paths, namespace_paths, HostFacts};

/// Device and inode of a file, following symlinks.
fn identity(p: &Path) -> Option<(u64, u64)> {
    fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Gathers [`HostFacts`] for `spec` in `bundle` (absolute, normalised). `proc_root` is `/proc`
/// (a parameter for tests): a namespace path is the host's when it is the same namespace as
/// PID 1's or our own (containerd's, which runs in the host's namespaces).
pub fn gather(spec: &Value, bundle: &Path, proc_root: &Path) -> HostFacts {
    let canonical: BTreeMap<_, _> = host_paths(spec, bundle)
        .into_iter()
        .filter_map(|p| fs::canonicalize(&p).ok().map(|c| (p, c)))
        .collect();
    let mut host_namespace_paths = BTreeSet::new();
    for (kind, path) in namespace_paths(spec) {
        let Some(target) = identity(Path::new(&path)) else {
            continue;
        };
        let is_host = ["1", "self"].iter().any(|pid| {
            identity(&proc_root.join(pid).join("ns").join(kind.proc_name())) == Some(target)
        });
        if is_host {
            host_namespace_paths.insert(path);
        }
    }
    HostFacts {
        bundle: bundle.to_path_buf(),
        canonical,
        host_namespace_paths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    #[test]
    fn resolves_symlinks_and_host_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        // A fake /proc whose PID 1 network namespace is a file we can point at.
        let proc_root = dir.path().join("proc");
        fs::create_dir_all(proc_root.join("1/ns")).unwrap();
        fs::create_dir_all(proc_root.join("self/ns")).unwrap();
        fs::write(proc_root.join("1/ns/net"), "").unwrap();
        let host_net = proc_root.join("1/ns/net").to_string_lossy().into_owned();
        let other = dir.path().join("other-net");
        fs::write(&other, "").unwrap();
        let other = other.to_string_lossy().into_owned();
        let link = dir.path().join("link").to_string_lossy().into_owned();
        let spec = json!({
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/x", "type": "bind", "source": link, "options": ["rbind"]},
                {"destination": "/proc", "type": "proc", "source": "proc"}
            ],
            "linux": {"namespaces": [
                {"type": "network", "path": host_net},
                {"type": "ipc", "path": other},
                {"type": "pid"}
            ]}
        });
        let facts = gather(&spec, &bundle, &proc_root);
        assert_eq!(
            facts.canonical.get(Path::new(&link)),
            Some(&PathBuf::from("/etc"))
        );
        assert_eq!(
            facts.canonical.get(&bundle.join("rootfs")),
            Some(&fs::canonicalize(bundle.join("rootfs")).unwrap())
        );
        assert_eq!(
            facts.host_namespace_paths.iter().collect::<Vec<_>>(),
            [&host_net]
        );
    }
}
