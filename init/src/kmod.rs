//! Loading the boot kernel modules with `finit_module(2)`.
//!
//! The image builder resolves the modules the host config names and their dependencies and
//! writes them, in load order, to `/etc/rampart/modules` ([`MODULES_LIST`]): one absolute
//! in-image path of a `.ko` per line; `#` starts a comment, blank lines are ignored, a missing
//! file means no module. [`parse_list`] turns that text into the plan; [`load_all`] loads each
//! module in order. `EEXIST` (already loaded, or built into the kernel) is fine; any other
//! error stops the boot.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::ModuleInitFlags;

/// Where the image keeps the ordered module list.
pub const MODULES_LIST: &str = "/etc/rampart/modules";

/// Errors of the module loader; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    /// The module list could not be read.
    #[error("read {}: {source}", path.display())]
    ReadList {
        /// The list file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A line of the module list is not an absolute path.
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        /// The list file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A module file could not be opened.
    #[error("open module {}: {source}", path.display())]
    Open {
        /// The module file.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// `finit_module(2)` failed.
    #[error("load module {}: {source}", path.display())]
    Load {
        /// The module file.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
}

/// Parses a module list (`origin` names the file in errors).
///
/// # Errors
/// A line that is not an absolute path.
pub fn parse_list(text: &str, origin: &Path) -> Result<Vec<PathBuf>, KmodError> {
    let mut modules = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let path = PathBuf::from(line);
        if !path.is_absolute() {
            return Err(KmodError::Parse {
                path: origin.to_path_buf(),
                line: index + 1,
                reason: format!("module path {line:?} is not absolute"),
            });
        }
        modules.push(path);
    }
    Ok(modules)
}

/// Reads and parses the module list at `path`; a missing file is an empty list.
///
/// # Errors
/// The file exists but cannot be read, or does not parse.
pub fn read_list(path: &Path) -> Result<Vec<PathBuf>, KmodError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_list(&text, path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(KmodError::ReadList {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What [`load_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmodReport {
    /// Modules loaded now.
    pub loaded: Vec<PathBuf>,
    /// Modules that were already loaded or are built in (`EEXIST`).
    pub present: Vec<PathBuf>,
}

/// Loads each module with `finit_module(2)` (no parameters, no flags), in order.
///
/// # Errors
/// The first module that cannot be opened or loaded (except `EEXIST`).
pub fn load_all(modules: &[PathBuf]) -> Result<KmodReport, KmodError> {
    let mut report = KmodReport::default();
    for path in modules {
        let file = std::fs::File::open(path).map_err(|err| KmodError::Open {
            path: path.clone(),
            source: err
                .raw_os_error()
                .map_or(Errno::UnknownErrno, Errno::from_raw),
        })?;
        match nix::kmod::finit_module(file.as_fd(), c"", ModuleInitFlags::empty()) {
            Ok(()) => {
                tracing::debug!("loaded module {}", path.display());
                report.loaded.push(path.clone());
            }
            Err(Errno::EEXIST) => report.present.push(path.clone()),
            Err(source) => {
                return Err(KmodError::Load {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_list_cases() {
        let origin = Path::new("/etc/rampart/modules");
        let ok: &[(&str, &[&str])] = &[
            ("", &[]),
            ("\n\n   \n", &[]),
            ("# only a comment\n", &[]),
            (
                "/lib/modules/6.1.0-56-amd64/kernel/net/netfilter/nfnetlink.ko\n",
                &["/lib/modules/6.1.0-56-amd64/kernel/net/netfilter/nfnetlink.ko"],
            ),
            (
                "# order matters\n/a/crc32c_generic.ko\n\n  /a/libcrc32c.ko  # needs crc32c\n/a/nf_tables.ko",
                &["/a/crc32c_generic.ko", "/a/libcrc32c.ko", "/a/nf_tables.ko"],
            ),
        ];
        for (text, want) in ok {
            let got = parse_list(text, origin).unwrap();
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn relative_paths_are_rejected_with_the_line() {
        let err = parse_list(
            "/a/x.ko\n\nkernel/y.ko\n",
            Path::new("/etc/rampart/modules"),
        )
        .unwrap_err();
        assert!(matches!(&err, KmodError::Parse { line: 3, .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("/etc/rampart/modules:3: "), "{text}");
        assert!(text.contains("kernel/y.ko"), "{text}");
    }

    #[test]
    fn a_missing_list_means_no_modules() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_list(&dir.path().join("modules")).unwrap().is_empty());
        std::fs::write(dir.path().join("modules"), "/m/a.ko\n").unwrap();
        assert_eq!(
            read_list(&dir.path().join("modules")).unwrap(),
            vec![PathBuf::from("/m/a.ko")]
        );
    }

    #[test]
    fn a_missing_module_file_is_named() {
        let err = load_all(&[PathBuf::from("/nonexistent/rampart-test.ko")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/rampart-test.ko"), "{text}");
        assert!(text.contains("ENOENT"), "{text}");
    }

    #[test]
    fn an_empty_plan_loads_nothing() {
        assert_eq!(load_all(&[]).unwrap(), KmodReport::default());
    }
}
