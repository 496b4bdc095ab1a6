//! Find kernel modules by name in an unpacked modules tree and compute their load order.
//!
//! Debian's kernel package ships no `modules.dep`, so dependencies come from each `.ko`'s
//! `.modinfo` section: `depends=a,b` (hard) and `softdep=pre: x y` (soft; a soft
//! dependency `x` is looked up as `x`, then `x_generic`, and skipped with a warning if
//! neither exists: `libcrc32c` needs a crc32c implementation before it, and the kernel
//! cannot request one when no modprobe exists). Names built into the kernel
//! (`modules.builtin`) need no loading and are dropped. The order is pure data:
//! [`load_order`] puts every dependency before its users and otherwise keeps the order
//! the config lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

/// Errors while resolving modules.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    /// The modules directory cannot be resolved.
    #[error("cannot open modules directory {path}: {source}")]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Walking the tree failed.
    #[error("cannot list {path}: {source}")]
    Walk {
        /// The directory being listed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A module name is not in the tree.
    #[error("kernel module {name} not found under {dir}{}", suggestion(.close))]
    NotFound {
        /// The normalised name.
        name: String,
        /// The modules directory.
        dir: PathBuf,
        /// Close names, if any.
        close: Vec<String>,
    },
    /// A `.ko` file could not be read.
    #[error("cannot read module {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `.ko` file is not an ELF object with a `.modinfo` section.
    #[error("cannot read .modinfo of {path}: {reason}")]
    Modinfo {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A dependency cycle.
    #[error("module dependency cycle: {}", .cycle.join(" -> "))]
    Cycle {
        /// The modules on the cycle, first repeated at the end.
        cycle: Vec<String>,
    },
    /// A dependency named in `.modinfo` is not in the graph.
    #[error("module {module} depends on {dependency}, which is unknown")]
    UnknownDependency {
        /// The user.
        module: String,
        /// The missing dependency.
        dependency: String,
    },
}

fn suggestion(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", close.join(", "))
    }
}

/// Normalise a module name: `-` becomes `_`.
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// What `.modinfo` says about dependencies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModInfo {
    /// `depends=` entries, normalised.
    pub depends: Vec<String>,
    /// `softdep=pre:` entries, normalised.
    pub softdep_pre: Vec<String>,
}

/// Parse the NUL-separated `key=value` records of a `.modinfo` section.
pub fn parse_modinfo(bytes: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for record in bytes.split(|b| *b == 0) {
        let text = String::from_utf8_lossy(record);
        if let Some(v) = text.strip_prefix("depends=") {
            info.depends.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(normalize_name),
            );
        } else if let Some(v) = text.strip_prefix("softdep=") {
            let mut in_pre = false;
            for word in v.split_whitespace() {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    w if in_pre => info.softdep_pre.push(normalize_name(w)),
                    _ => {}
                }
            }
        }
    }
    info
}

/// Read the `.modinfo` section of a `.ko` file.
pub fn read_modinfo(path: &Path) -> Result<ModInfo, KmodError> {
    let bytes = std::fs::read(path).map_err(|source| KmodError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| KmodError::Modinfo {
        path: path.to_path_buf(),
        reason,
    };
    let elf = Elf::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    let section = elf
        .section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".modinfo"))
        .ok_or_else(|| bad("no .modinfo section".to_string()))?;
    let start = usize::try_from(section.sh_offset).map_err(|e| bad(e.to_string()))?;
    let len = usize::try_from(section.sh_size).map_err(|e| bad(e.to_string()))?;
    let data = bytes
        .get(start..start.saturating_add(len))
        .ok_or_else(|| bad("section out of bounds".to_string()))?;
    Ok(parse_modinfo(data))
}

/// A dependency graph: module -> its dependencies in listed order.
pub type Graph = BTreeMap<String, Vec<String>>;

/// Load order for `requested` over `graph`: a depth-first post-order, so every dependency
/// precedes its users and the requested order is kept otherwise. Each module appears once.
pub fn load_order(requested: &[String], graph: &Graph) -> Result<Vec<String>, KmodError> {
    fn visit(
        name: &str,
        user: Option<&str>,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), KmodError> {
        if done.contains(name) {
            return Ok(());
        }
        if let Some(pos) = stack.iter().position(|s| s == name) {
            let mut cycle: Vec<String> = stack.iter().skip(pos).cloned().collect();
            cycle.push(name.to_string());
            return Err(KmodError::Cycle { cycle });
        }
        let deps = graph
            .get(name)
            .ok_or_else(|| KmodError::UnknownDependency {
                module: user.unwrap_or("config").to_string(),
                dependency: name.to_string(),
            })?;
        stack.push(name.to_string());
        for d in deps {
            visit(d, Some(name), graph, stack, done, out)?;
        }
        stack.pop();
        done.insert(name.to_string());
        out.push(name.to_string());
        Ok(())
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    let mut stack = Vec::new();
    for r in requested {
        visit(r, None, graph, &mut stack, &mut done, &mut out)?;
    }
    Ok(out)
}

/// Levenshtein distance (for "did you mean").
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// A module resolved to its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Normalised name.
    pub name: String,
    /// Host path of the `.ko`.
    pub host: PathBuf,
    /// In-image path `/lib/modules/<release>/kernel/...ko`.
    pub image: PathBuf,
}

/// An indexed modules tree (`/lib/modules/<release>`).
#[derive(Debug, Clone)]
pub struct ModuleTree {
    root: PathBuf,
    release: String,
    index: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

impl ModuleTree {
    /// Index `dir` (canonicalised; its file name is the kernel release): every `.ko` under
    /// `kernel/`, and the names in `modules.builtin` if present.
    pub fn open(dir: &Path) -> Result<Self, KmodError> {
        let root = dir.canonicalize().map_err(|source| KmodError::OpenDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let release = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = Vec::new();
        walk(&root.join("kernel"), &mut files)?;
        files.sort();
        let mut index = BTreeMap::new();
        for f in files {
            let Some(name) = module_name(&f) else {
                continue;
            };
            let rel = f.strip_prefix(&root).unwrap_or(&f).to_path_buf();
            if let Some(prev) = index.get(&name) {
                tracing::warn!(module = %name, kept = ?prev, ignored = ?rel, "duplicate module name");
                continue;
            }
            index.insert(name, rel);
        }
        let builtin = std::fs::read_to_string(root.join("modules.builtin"))
            .map(|t| {
                t.lines()
                    .filter_map(|l| module_name(Path::new(l)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            root,
            release,
            index,
            builtin,
        })
    }

    /// The kernel release (the canonical directory's name).
    pub fn release(&self) -> &str {
        &self.release
    }

    /// Number of indexed modules.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the tree has no modules.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn not_found(&self, name: &str) -> KmodError {
        let mut close: Vec<(usize, &String)> = self
            .index
            .keys()
            .filter_map(|k| {
                let d = distance(name, k);
                (d <= 2 || (name.len() >= 3 && k.contains(name))).then_some((d, k))
            })
            .collect();
        close.sort();
        KmodError::NotFound {
            name: name.to_string(),
            dir: self.root.clone(),
            close: close.into_iter().take(3).map(|(_, k)| k.clone()).collect(),
        }
    }

    fn resolved(&self, name: &str) -> Option<Resolved> {
        self.index.get(name).map(|rel| Resolved {
            name: name.to_string(),
            host: self.root.join(rel),
            image: Path::new("/lib/modules").join(&self.release).join(rel),
        })
    }

    /// Resolve `names` (normalised here) with all their dependencies, in load order.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<Resolved>, KmodError> {
        let mut requested = Vec::new();
        for n in names.iter().map(|n| normalize_name(n)) {
            if self.index.contains_key(&n) {
                requested.push(n);
            } else if self.builtin.contains(&n) {
                tracing::info!(module = %n, "module is built into the kernel, nothing to load");
            } else {
                return Err(self.not_found(&n));
            }
        }
        let mut graph = Graph::new();
        let mut todo: Vec<String> = requested.clone();
        while let Some(name) = todo.pop() {
            if graph.contains_key(&name) {
                continue;
            }
            let host = self
                .root
                .join(self.index.get(&name).cloned().unwrap_or_default());
            let info = read_modinfo(&host)?;
            let mut deps = Vec::new();
            for s in &info.softdep_pre {
                let generic = format!("{s}_generic");
                if self.index.contains_key(s) {
                    deps.push(s.clone());
                } else if self.index.contains_key(&generic) {
                    deps.push(generic);
                } else if !self.builtin.contains(s) {
                    tracing::warn!(module = %name, softdep = %s, "soft dependency not found, skipped");
                }
            }
            for d in &info.depends {
                if self.index.contains_key(d) {
                    deps.push(d.clone());
                } else if !self.builtin.contains(d) {
                    return Err(KmodError::UnknownDependency {
                        module: name.clone(),
                        dependency: d.clone(),
                    });
                }
            }
            todo.extend(deps.iter().cloned());
            graph.insert(name, deps);
        }
        load_order(&requested, &graph)?
            .iter()
            .map(|n| self.resolved(n).ok_or_else(|| self.not_found(n)))
            .collect()
    }
}

/// Module name of a `.ko` path (`nf-foo.ko` -> `nf_foo`).
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    file.strip_suffix(".ko").map(normalize_name)
}

/// Collect every `.ko` file under `dir` (not following symlinks).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), KmodError> {
    let entries = std::fs::read_dir(dir).map_err(|source| KmodError::Walk {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| KmodError::Walk {
            path: dir.to_path_buf(),
            source,
        })?;
        let ft = entry.file_type().map_err(|source| KmodError::Walk {
            path: entry.path(),
            source,
        })?;
        let path = entry.path();
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file() && path.extension().is_some_and(|e| e == "ko") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn order_table() {
        let g = graph(&[
            ("nf_tables", &["nfnetlink", "libcrc32c"]),
            ("nfnetlink", &[]),
            ("libcrc32c", &["crc32c_generic"]),
            ("crc32c_generic", &[]),
            ("nft_ct", &["nf_tables", "nf_conntrack"]),
            (
                "nf_conntrack",
                &["nf_defrag_ipv4", "nf_defrag_ipv6", "libcrc32c"],
            ),
            ("nf_defrag_ipv4", &[]),
            ("nf_defrag_ipv6", &[]),
            ("overlay", &[]),
        ]);
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["overlay"], &["overlay"]),
            (
                &["nf_tables"],
                &["nfnetlink", "crc32c_generic", "libcrc32c", "nf_tables"],
            ),
            (
                &["overlay", "nft_ct", "nf_tables"],
                &[
                    "overlay",
                    "nfnetlink",
                    "crc32c_generic",
                    "libcrc32c",
                    "nf_tables",
                    "nf_defrag_ipv4",
                    "nf_defrag_ipv6",
                    "nf_conntrack",
                    "nft_ct",
                ],
            ),
            (&["nfnetlink", "nfnetlink"], &["nfnetlink"]),
        ];
        for (req, want) in cases {
            let got = load_order(&names(req), &g).unwrap();
            assert_eq!(got, names(want), "{req:?}");
            // Every dependency precedes its users.
            for (i, m) in got.iter().enumerate() {
                for d in &g[m] {
                    assert!(got[..i].contains(d), "{d} before {m}");
                }
            }
        }
    }

    #[test]
    fn cycles_are_detected() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        let err = load_order(&names(&["a"]), &g).unwrap_err();
        assert_eq!(err.to_string(), "module dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn unknown_dependency() {
        let g = graph(&[("a", &["zz"])]);
        let err = load_order(&names(&["a"]), &g).unwrap_err();
        assert!(matches!(err, KmodError::UnknownDependency { .. }), "{err}");
    }

    #[test]
    fn modinfo_parsing() {
        let raw = b"softdep=pre: crc32c post: foo\0license=GPL\0depends=nf-conntrack,nfnetlink\0name=x\0\0";
        let info = parse_modinfo(raw);
        assert_eq!(info.depends, names(&["nf_conntrack", "nfnetlink"]));
        assert_eq!(info.softdep_pre, names(&["crc32c"]));
        assert_eq!(parse_modinfo(b"depends=\0"), ModInfo::default());
    }

    #[test]
    fn distance_table() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "abc", 0),
            ("abc", "abd", 1),
            ("nf_table", "nf_tables", 1),
            ("x", "", 1),
        ] {
            assert_eq!(distance(a, b), d, "{a} {b}");
        }
    }

    fn real_tree() -> Option<ModuleTree> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/kernel/modules");
        if !dir.exists() {
            eprintln!("skip: no kernel cache at {}", dir.display());
            return None;
        }
        Some(ModuleTree::open(&dir).unwrap())
    }

    #[test]
    fn real_tree_nf_tables() {
        let Some(tree) = real_tree() else { return };
        assert!(tree.len() > 1000);
        let got = tree.resolve(&names(&["nf-tables"])).unwrap();
        let order: Vec<&str> = got.iter().map(|r| r.name.as_str()).collect();
        let pos = |n: &str| order.iter().position(|o| *o == n).unwrap();
        assert!(pos("nfnetlink") < pos("nf_tables"), "{order:?}");
        assert!(pos("libcrc32c") < pos("nf_tables"), "{order:?}");
        assert!(pos("crc32c_generic") < pos("libcrc32c"), "{order:?}");
        assert_eq!(order.last(), Some(&"nf_tables"));
        let last = got.last().unwrap();
        assert_eq!(
            last.image,
            Path::new("/lib/modules")
                .join(tree.release())
                .join("kernel/net/netfilter/nf_tables.ko")
        );
        assert!(last.host.is_file());
    }

    #[test]
    fn real_tree_missing_module_suggests() {
        let Some(tree) = real_tree() else { return };
        let err = tree.resolve(&names(&["nf_table"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("kernel module nf_table not found"), "{msg}");
        assert!(msg.contains("nf_tables"), "{msg}");
    }
}
