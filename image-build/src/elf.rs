//! Collect what a dynamic ELF binary needs at run time: its interpreter (`PT_INTERP`) and
//! its shared libraries (`DT_NEEDED`, recursively), found like the glibc loader finds them
//! (`DT_RPATH`/`DT_RUNPATH` with `$ORIGIN`, then the default multiarch directories), read
//! with goblin, never with `ldd`.
//!
//! Symbolic links: the image gets every path the loader asks for. When the last component
//! of such a path is a symlink on the build host (`/lib64/ld-linux-x86-64.so.2 ->
//! /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`), the symlink is reproduced in the image and
//! its target followed in turn, so the chain stays as on the host. Directory symlinks
//! (Debian's merged `/usr`: `/lib -> usr/lib`, `/lib64 -> usr/lib64`) are *not*
//! reproduced: the file is put under the directory path the loader asked for, and `/lib`,
//! `/lib64` are real directories in the image. That keeps `/lib/modules/...` and the
//! libraries in one plain tree.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use goblin::elf::Elf;

/// The loader's default search path on Debian x86_64, in its order.
pub const DEFAULT_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/usr/lib",
    "/lib",
];

/// Maximum number of symlinks followed for one path.
const MAX_LINKS: usize = 40;

/// Errors while collecting a binary's dependencies.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not an ELF object.
    #[error("{path} is not an ELF binary: {reason}")]
    NotElf {
        /// The path.
        path: PathBuf,
        /// What goblin said.
        reason: String,
    },
    /// A needed library was not found in any search directory.
    #[error("{library} needed by {needed_by} not found in {searched}")]
    LibraryNotFound {
        /// The `DT_NEEDED` name.
        library: String,
        /// The object that needs it.
        needed_by: PathBuf,
        /// The directories searched, joined by ':'.
        searched: String,
    },
    /// A symlink could not be read.
    #[error("cannot read symlink {path}: {source}")]
    ReadLink {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A symlink chain is too long or loops.
    #[error("too many levels of symbolic links at {path}")]
    SymlinkLoop {
        /// The path.
        path: PathBuf,
    },
    /// A path the loader asks for is not absolute.
    #[error("{path} is not an absolute path")]
    NotAbsolute {
        /// The path.
        path: PathBuf,
    },
}

/// One thing to put in the image so a path resolves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    /// A regular file at `image` copied from `host`.
    File {
        /// In-image absolute path.
        image: PathBuf,
        /// Host path to read.
        host: PathBuf,
    },
    /// A symlink at `image` whose content is `target` (verbatim).
    Symlink {
        /// In-image absolute path.
        image: PathBuf,
        /// Link content.
        target: PathBuf,
    },
}

/// What the ELF headers of one object say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dynamic {
    /// `PT_INTERP`, if any.
    pub interpreter: Option<PathBuf>,
    /// `DT_NEEDED` names in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` entries (already split on ':').
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` entries (already split on ':').
    pub runpath: Vec<String>,
    /// ELF machine (`e_machine`).
    pub machine: u16,
    /// 64-bit object.
    pub is_64: bool,
}

impl Dynamic {
    /// Whether the object needs nothing at run time (static binary).
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

/// Parse the ELF file at `path`.
pub fn read_dynamic(path: &Path) -> Result<Dynamic, ElfError> {
    let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_dynamic(&bytes).map_err(|reason| ElfError::NotElf {
        path: path.to_path_buf(),
        reason,
    })
}

/// Whether the file at `path` starts with the ELF magic (false for unreadable files).
pub fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// Parse ELF bytes into [`Dynamic`]; the error is goblin's message.
pub fn parse_dynamic(bytes: &[u8]) -> Result<Dynamic, String> {
    let elf = Elf::parse(bytes).map_err(|e| e.to_string())?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(Dynamic {
        interpreter: elf.interpreter.map(PathBuf::from),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        machine: elf.header.e_machine,
        is_64: elf.is_64,
    })
}

/// Expand `$ORIGIN` / `${ORIGIN}` in a search path entry.
fn expand_origin(entry: &str, origin: &Path) -> PathBuf {
    let o = origin.to_string_lossy();
    PathBuf::from(entry.replace("${ORIGIN}", &o).replace("$ORIGIN", &o))
}

/// The absolute paths the loader opens for `binary`: the interpreter first, then each
/// library in breadth-first `DT_NEEDED` order, without duplicates. Empty for static
/// binaries. `binary` itself is not included.
pub fn needed_paths(binary: &Path) -> Result<Vec<PathBuf>, ElfError> {
    let top = read_dynamic(binary)?;
    let mut out: Vec<PathBuf> = Vec::new();
    if let Some(interp) = &top.interpreter {
        out.push(interp.clone());
    }
    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<(PathBuf, Dynamic)> = VecDeque::new();
    queue.push_back((binary.to_path_buf(), top.clone()));
    while let Some((path, dynamic)) = queue.pop_front() {
        let origin = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        // DT_RPATH is used only when there is no DT_RUNPATH (glibc semantics); the
        // executable's DT_RPATH also applies to its libraries.
        let mut dirs: Vec<PathBuf> = Vec::new();
        if dynamic.runpath.is_empty() {
            dirs.extend(dynamic.rpath.iter().map(|e| expand_origin(e, &origin)));
            if path != binary && top.runpath.is_empty() {
                let top_origin = binary.parent().unwrap_or(Path::new("/"));
                dirs.extend(top.rpath.iter().map(|e| expand_origin(e, top_origin)));
            }
        }
        dirs.extend(dynamic.runpath.iter().map(|e| expand_origin(e, &origin)));
        dirs.extend(DEFAULT_LIB_DIRS.iter().map(PathBuf::from));
        for name in &dynamic.needed {
            if !seen_names.insert(name.clone()) {
                continue;
            }
            let found = if name.contains('/') {
                Some((PathBuf::from(name), read_dynamic(Path::new(name))?))
            } else {
                find_library(name, &dirs, &top)
            };
            let Some((lib_path, lib_dyn)) = found else {
                return Err(ElfError::LibraryNotFound {
                    library: name.clone(),
                    needed_by: path.clone(),
                    searched: dirs
                        .iter()
                        .map(|d| d.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(":"),
                });
            };
            if !out.contains(&lib_path) {
                out.push(lib_path.clone());
            }
            queue.push_back((lib_path, lib_dyn));
        }
    }
    Ok(out)
}

/// First `dir/name` that is an ELF object of the same class and machine as `top`.
fn find_library(name: &str, dirs: &[PathBuf], top: &Dynamic) -> Option<(PathBuf, Dynamic)> {
    dirs.iter().find_map(|d| {
        let candidate = d.join(name);
        if !candidate.is_file() {
            return None;
        }
        let dynamic = read_dynamic(&candidate).ok()?;
        (dynamic.machine == top.machine && dynamic.is_64 == top.is_64)
            .then_some((candidate, dynamic))
    })
}

/// Lexically normalise an absolute path (`.` dropped, `..` pops).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The items that make the absolute `path` resolve in the image as it does on the host:
/// each symlink of the chain at the last component, then the regular file.
pub fn link_chain(path: &Path) -> Result<Vec<Item>, ElfError> {
    if !path.is_absolute() {
        return Err(ElfError::NotAbsolute {
            path: path.to_path_buf(),
        });
    }
    let mut items = Vec::new();
    let mut current = normalize(path);
    for _ in 0..MAX_LINKS {
        let meta = std::fs::symlink_metadata(&current).map_err(|source| ElfError::Read {
            path: current.clone(),
            source,
        })?;
        if !meta.file_type().is_symlink() {
            items.push(Item::File {
                image: current.clone(),
                host: current,
            });
            return Ok(items);
        }
        let target = std::fs::read_link(&current).map_err(|source| ElfError::ReadLink {
            path: current.clone(),
            source,
        })?;
        let next = if target.is_absolute() {
            normalize(&target)
        } else {
            normalize(&current.parent().unwrap_or(Path::new("/")).join(&target))
        };
        items.push(Item::Symlink {
            image: current,
            target,
        });
        current = next;
    }
    Err(ElfError::SymlinkLoop {
        path: path.to_path_buf(),
    })
}

/// Everything `binary` needs in the image besides itself: interpreter and libraries with
/// their symlink chains, sorted and without duplicates.
pub fn collect(binary: &Path) -> Result<Vec<Item>, ElfError> {
    let mut items = BTreeSet::new();
    for p in needed_paths(binary)? {
        items.extend(link_chain(&p)?);
    }
    Ok(items.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_needs_libc_and_the_loader() {
        let bin = Path::new("/usr/bin/containerd");
        if !bin.exists() {
            eprintln!("skip: {} not installed", bin.display());
            return;
        }
        let paths = needed_paths(bin).unwrap();
        assert_eq!(
            paths.first().map(PathBuf::as_path),
            Some(Path::new("/lib64/ld-linux-x86-64.so.2"))
        );
        assert!(
            paths.contains(&PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")),
            "{paths:?}"
        );
        let items = collect(bin).unwrap();
        // The interpreter path exists in the image, as a symlink or a file.
        let has = |p: &str| {
            items.iter().any(|i| match i {
                Item::File { image, .. } | Item::Symlink { image, .. } => image == Path::new(p),
            })
        };
        assert!(has("/lib64/ld-linux-x86-64.so.2"), "{items:?}");
        assert!(has("/lib/x86_64-linux-gnu/libc.so.6"), "{items:?}");
        // Every symlink's target is itself in the image.
        for item in &items {
            if let Item::Symlink { image, target } = item {
                let resolved = if target.is_absolute() {
                    normalize(target)
                } else {
                    normalize(&image.parent().unwrap().join(target))
                };
                assert!(has(resolved.to_str().unwrap()), "{resolved:?} in {items:?}");
            }
        }
        // Each regular file's host copy is a real ELF.
        for item in &items {
            if let Item::File { host, .. } = item {
                assert!(is_elf(host), "{host:?}");
            }
        }
    }

    #[test]
    fn busybox_is_static() {
        let bin = Path::new("/bin/busybox");
        if !bin.exists() {
            eprintln!("skip: {} not installed", bin.display());
            return;
        }
        assert!(read_dynamic(bin).unwrap().is_static());
        assert!(collect(bin).unwrap().is_empty());
    }

    #[test]
    fn text_file_is_not_elf() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "#!/bin/sh\necho hi\n").unwrap();
        let err = collect(f.path()).unwrap_err();
        assert!(matches!(err, ElfError::NotElf { .. }), "{err}");
        assert!(err.to_string().contains("is not an ELF binary"), "{err}");
        assert!(!is_elf(f.path()));
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = collect(Path::new("/nonexistent/bin")).unwrap_err();
        assert!(matches!(err, ElfError::Read { .. }), "{err}");
    }

    #[test]
    fn symlink_chain_is_reproduced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("real", d.join("mid")).unwrap();
        std::os::unix::fs::symlink(d.join("mid"), d.join("top")).unwrap();
        let items = link_chain(&d.join("top")).unwrap();
        assert_eq!(
            items,
            vec![
                Item::Symlink {
                    image: d.join("top"),
                    target: d.join("mid")
                },
                Item::Symlink {
                    image: d.join("mid"),
                    target: "real".into()
                },
                Item::File {
                    image: d.join("real"),
                    host: d.join("real")
                },
            ]
        );
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        assert!(matches!(
            link_chain(&d.join("loop")).unwrap_err(),
            ElfError::SymlinkLoop { .. }
        ));
    }

    #[test]
    fn origin_expansion_and_normalize() {
        let o = Path::new("/opt/app/bin");
        assert_eq!(
            expand_origin("$ORIGIN/../lib", o),
            PathBuf::from("/opt/app/bin/../lib")
        );
        assert_eq!(
            expand_origin("${ORIGIN}/x", o),
            PathBuf::from("/opt/app/bin/x")
        );
        assert_eq!(
            normalize(Path::new("/opt/app/bin/../lib/./x")),
            PathBuf::from("/opt/app/lib/x")
        );
    }
}
