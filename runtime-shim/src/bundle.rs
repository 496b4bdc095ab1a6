//! Reading a spec or process file as JSON and replacing it atomically.
//!
//! The new content goes to a temporary file in the same folder (same mode as the old file),
//! which is flushed to disk and renamed over the old one; then the folder is flushed too. A
//! reader sees the old file or the new one, never a mix; on any error the old file stays.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why a JSON file could not be read or replaced.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{path} is not valid JSON: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The temporary file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The temporary file could not be renamed over the original.
    #[error("cannot replace {path}: {source}")]
    Rename {
        /// The original file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Value, BundleError> {
    let text = fs::read(path).map_err(|source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| BundleError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// The temporary file used to replace `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(
        || "config.json".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    path.with_file_name(format!(".{name}.rampart-{}.tmp", std::process::id()))
}

/// Replaces `path` with `value` (pretty-printed) atomically.
pub fn write_atomic(path: &Path, value: &Value) -> Result<(), BundleError> {
    let tmp = temp_path(path);
    let werr = |source| BundleError::Write {
        path: tmp.clone(),
        source,
    };
    let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| werr(e.into()))?;
    text.push(b'\n');
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(&text)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(werr(e));
    }
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(BundleError::Rename {
            path: path.to_path_buf(),
            source,
        });
    }
    // Flush the rename itself; the file is already in place, so a failure here is not fatal.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!("cannot flush folder {}: {e}", dir.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replaces_atomically_keeping_mode_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        fs::write(&p, "{\"z\": 1, \"a\": {\"unknown\": true}}").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let mut v = read_json(&p).unwrap();
        v["m"] = json!(2);
        write_atomic(&p, &v).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "{\n  \"z\": 1,\n  \"a\": {\n    \"unknown\": true\n  },\n  \"m\": 2\n}\n"
        );
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("config.json")]);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let e = read_json(&p).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}", p.display())),
            "{e}"
        );
        fs::write(&p, "{not json").unwrap();
        let e = read_json(&p).unwrap_err();
        assert!(e.to_string().contains("is not valid JSON"), "{e}");
        let missing = dir.path().join("nodir/config.json");
        let e = write_atomic(&missing, &json!({})).unwrap_err();
        assert!(e.to_string().starts_with("cannot write "), "{e}");
    }
}
