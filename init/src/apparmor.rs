//! Boot step `apparmor`: load the image's compiled AppArmor profiles through securityfs.
//!
//! `rampart-image` compiles the profiles for the guest kernel and puts them at
//! `/etc/rampart/apparmor/NAME.bin` ([`rampart_config::hardening::IMAGE_APPARMOR_DIR`]).
//! When `apparmor` is in `[hardening] lsm`, [`step`] writes each blob, in one `write`, to
//! `SYS/kernel/security/apparmor/.replace` (load or replace), then reads
//! `SYS/kernel/security/apparmor/profiles` and checks that every profile is listed in
//! `enforce` mode. Under `hardening.mode.apparmor = "enforce"` (the default) any failure stops
//! the boot; under `warn` it is logged. Services name a profile with `apparmor_profile`
//! (applied in the child, see [`exec_attr_paths`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rampart_config::hardening::{Hardening, Mode};

/// One compiled profile of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The profile name (the file name without `.bin`).
    pub name: String,
    /// The file.
    pub path: PathBuf,
}

/// Errors of the `apparmor` step.
#[derive(Debug, thiserror::Error)]
pub enum AppArmorError {
    /// The profile folder cannot be listed.
    #[error("list {}: {source}", path.display())]
    List {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// AppArmor is required but the image carries no compiled profile.
    #[error("no compiled profile in {} (the image was built without apparmor in [hardening] lsm)", path.display())]
    NoProfiles {
        /// The folder.
        path: PathBuf,
    },
    /// A compiled profile cannot be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The kernel refused a profile.
    #[error("load {} into {}: {source}", profile.display(), path.display())]
    Load {
        /// The compiled profile.
        profile: PathBuf,
        /// The securityfs file written.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The loaded profiles cannot be read back.
    #[error("read {}: {source}", path.display())]
    ReadProfiles {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Profiles are missing from the kernel's list (or not in enforce mode).
    #[error("profiles not loaded in enforce mode: {} ({})", missing.join(", "), path.display())]
    NotLoaded {
        /// The file read.
        path: PathBuf,
        /// The names missing or not enforced.
        missing: Vec<String>,
    },
}

/// The AppArmor folder of securityfs under `sys` (`/sys`).
pub fn securityfs_dir(sys: &Path) -> PathBuf {
    sys.join("kernel/security/apparmor")
}

/// The files a child writes `exec NAME` to, in order of preference: the per-LSM file
/// (Linux 5.1 and later, present on 6.1) and the shared one of older kernels.
pub fn exec_attr_paths() -> [&'static std::ffi::CStr; 2] {
    [c"/proc/self/attr/apparmor/exec", c"/proc/self/attr/exec"]
}

/// What a child writes to the exec attribute to start `profile` at `execve`.
pub fn exec_attr_value(profile: &str) -> Vec<u8> {
    format!("exec {profile}").into_bytes()
}

/// The compiled profiles in `dir`, sorted by name; an absent folder is none.
pub fn read_dir(dir: &Path) -> Result<Vec<Blob>, AppArmorError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AppArmorError::List {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| AppArmorError::List {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bin"))
            .map(str::to_owned);
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            out.push(Blob { name, path });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The names in `wanted` that the kernel's `profiles` text does not list as `NAME (enforce)`.
pub fn not_enforced(profiles: &str, wanted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| {
            !profiles
                .lines()
                .any(|l| l.trim() == format!("{w} (enforce)"))
        })
        .cloned()
        .collect()
}

/// Writes one compiled profile to `.replace` in a single `write`.
fn load_one(blob: &Blob, replace: &Path) -> Result<(), AppArmorError> {
    let bytes = std::fs::read(&blob.path).map_err(|source| AppArmorError::Read {
        path: blob.path.clone(),
        source,
    })?;
    let load = |source| AppArmorError::Load {
        profile: blob.path.clone(),
        path: replace.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(replace)
        .map_err(load)?;
    let n = f.write(&bytes).map_err(load)?;
    if n != bytes.len() {
        return Err(load(std::io::Error::other(format!(
            "short write: {n} of {} bytes",
            bytes.len()
        ))));
    }
    Ok(())
}

/// Loads every profile of `dir` into the kernel through securityfs under `sys` and checks
/// that each is listed in enforce mode; returns the names loaded.
pub fn load(dir: &Path, sys: &Path) -> Result<Vec<String>, AppArmorError> {
    let blobs = read_dir(dir)?;
    if blobs.is_empty() {
        return Err(AppArmorError::NoProfiles {
            path: dir.to_path_buf(),
        });
    }
    let fs = securityfs_dir(sys);
    let replace = fs.join(".replace");
    for blob in &blobs {
        load_one(blob, &replace)?;
    }
    let list = fs.join("profiles");
    let text = std::fs::read_to_string(&list).map_err(|source| AppArmorError::ReadProfiles {
        path: list.clone(),
        source,
    })?;
    let names: Vec<String> = blobs.into_iter().map(|b| b.name).collect();
    let missing = not_enforced(&text, &names);
    if !missing.is_empty() {
        return Err(AppArmorError::NotLoaded {
            path: list,
            missing,
        });
    }
    Ok(names)
}

/// Boot step `apparmor`: when `apparmor` is a required LSM, [`load`] under
/// `hardening.mode.apparmor`.
pub fn step(h: &Hardening, dir: &Path, sys: &Path) -> Result<(), AppArmorError> {
    if !h.lsm.iter().any(|l| l == "apparmor") {
        return Ok(());
    }
    match (load(dir, sys), h.mode.apparmor) {
        (Ok(names), _) => {
            tracing::info!("apparmor: loaded {} (enforce)", names.join(", "));
            Ok(())
        }
        (Err(e), Mode::Enforce) => Err(e),
        (Err(e), Mode::Warn) => {
            tracing::warn!("apparmor: {e} (hardening.mode: warn, boot goes on)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(profiles: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("etc/rampart/apparmor");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rampart-default.bin"), b"blob-a").unwrap();
        std::fs::write(dir.join("rampart-containerd.bin"), b"blob-b").unwrap();
        std::fs::write(dir.join("README"), b"not a profile").unwrap();
        let sys = t.path().join("sys");
        let fs = securityfs_dir(&sys);
        std::fs::create_dir_all(&fs).unwrap();
        std::fs::write(fs.join(".replace"), b"").unwrap();
        std::fs::write(fs.join("profiles"), profiles).unwrap();
        (t, dir, sys)
    }

    #[test]
    fn lists_and_checks() {
        let (_t, dir, _) = fake("");
        let names: Vec<String> = read_dir(&dir)
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(names, ["rampart-containerd", "rampart-default"]);
        assert!(read_dir(Path::new("/nonexistent/rampart"))
            .unwrap()
            .is_empty());
        let wanted = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let cases = [
            ("a (enforce)\nb (enforce)\nc (enforce)\n", vec![]),
            ("a (enforce)\nb (complain)\n", vec!["b", "c"]),
            ("ab (enforce)\n", vec!["a", "b", "c"]),
        ];
        for (text, want) in cases {
            assert_eq!(not_enforced(text, &wanted), want, "{text:?}");
        }
        assert_eq!(
            exec_attr_value("rampart-containerd"),
            b"exec rampart-containerd"
        );
    }

    #[test]
    fn load_writes_every_blob_and_reads_back() {
        let (_t, dir, sys) = fake("rampart-default (enforce)\nrampart-containerd (enforce)\n");
        assert_eq!(
            load(&dir, &sys).unwrap(),
            ["rampart-containerd", "rampart-default"]
        );
        // The last write wins in the fake file.
        let written = std::fs::read(securityfs_dir(&sys).join(".replace")).unwrap();
        assert_eq!(written, b"blob-a");
    }

    #[test]
    fn modes() {
        let (_t, dir, sys) = fake("rampart-default (enforce)\n");
        let mut h = Hardening::default();
        let err = step(&h, &dir, &sys).unwrap_err();
        assert!(err.to_string().contains("rampart-containerd"), "{err}");
        h.mode.apparmor = Mode::Warn;
        step(&h, &dir, &sys).unwrap();
        h.mode.apparmor = Mode::Enforce;
        h.lsm.retain(|l| l != "apparmor");
        step(&h, &dir, &sys).unwrap();
        let empty = tempfile::tempdir().unwrap();
        h.lsm.push("apparmor".into());
        let err = step(&h, empty.path(), &sys).unwrap_err();
        assert!(matches!(err, AppArmorError::NoProfiles { .. }), "{err}");
    }
}
