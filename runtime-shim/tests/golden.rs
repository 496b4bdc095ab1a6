//! The policy as a table of input specs and expected output specs or refusals.
//!
//! Each folder under `tests/golden/` is one case: `input.json` (a bundle's `config.json`),
//! optionally `policy.toml` (a host file with a `[container_policy]` section; the defaults
//! otherwise) and `facts.json` (`canonical` symlink targets and `host_namespace_paths`, as
//! `rampart_runc::facts::gather` would find them, and `bundle`). The expected results are
//! `decisions.txt` (every decision, one per line, as the audit log has them), and either
//! `expected.json` (the spec as it is written back) or `refusal.txt` (the message the `ctr` user
//! sees); for a pod (a spec with CRI annotations), also `audit.jsonl`, the audit log lines of its
//! `create` with the verdict. The bundle is `/run/containerd/io.containerd.runtime.v2.task/default/c1`,
//! where containerd puts it for `ctr`, unless `facts.json` names another (the CRI plugin's are
//! under `k8s.io/`). Run with `UPDATE_GOLDEN=1` to rewrite the expected files, then review the
//! diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use rampart_runc::audit::Record;
use rampart_runc::policy::{HostFacts, Policy};

const BUNDLE: &str = "/run/containerd/io.containerd.runtime.v2.task/default/c1";

fn facts(dir: &Path) -> HostFacts {
    let mut f = HostFacts {
        bundle: PathBuf::from(BUNDLE),
        canonical: BTreeMap::new(),
        host_namespace_paths: BTreeSet::new(),
    };
    if let Ok(text) = fs::read_to_string(dir.join("facts.json")) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(c) = v.get("canonical").and_then(|c| c.as_object()) {
            for (k, v) in c {
                f.canonical
                    .insert(PathBuf::from(k), PathBuf::from(v.as_str().unwrap()));
            }
        }
        if let Some(h) = v.get("host_namespace_paths").and_then(|h| h.as_array()) {
            f.host_namespace_paths = h.iter().map(|p| p.as_str().unwrap().to_owned()).collect();
        }
        if let Some(b) = v.get("bundle").and_then(|b| b.as_str()) {
            f.bundle = PathBuf::from(b);
        }
    }
    f
}

fn policy(dir: &Path) -> Policy {
    let path = dir.join("policy.toml");
    let config = match fs::read_to_string(&path) {
        Ok(text) => {
            rampart_config::parse(&text, &path)
                .unwrap_or_else(|e| panic!("{e}"))
                .container_policy
        }
        Err(_) => rampart_config::ContainerPolicy::default(),
    };
    Policy::new(&config)
}

/// Compares `got` with the file, or writes it under `UPDATE_GOLDEN`; returns a failure text.
fn compare(path: &Path, got: Option<&str>, update: bool) -> Option<String> {
    let want = fs::read_to_string(path).ok();
    if update {
        match got {
            Some(g) => fs::write(path, g).unwrap(),
            None => {
                let _ = fs::remove_file(path);
            }
        }
        return None;
    }
    (want.as_deref() != got).then(|| {
        format!(
            "{}:\n--- want\n{}\n--- got\n{}\n",
            path.display(),
            want.as_deref().unwrap_or("(no file)"),
            got.unwrap_or("(no file)")
        )
    })
}

#[test]
fn golden_specs() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.json").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 30, "golden cases are missing");
    let mut failures = Vec::new();
    for dir in &dirs {
        let input: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("input.json")).unwrap()).unwrap();
        let facts = facts(dir);
        let checked = policy(dir).check_spec(&input, &facts);
        let decisions: String = checked.decisions.iter().map(|d| format!("{d}\n")).collect();
        let audit = rampart_runc::policy::identify(&input)
            .ok()
            .flatten()
            .map(|pod| {
                let mut all = checked.decisions.clone();
                all.push(rampart_runc::verdict(&all));
                let container = facts.bundle.file_name().unwrap().to_string_lossy();
                all.iter()
                    .map(|decision| {
                        rampart_runc::audit::line(&Record {
                            time: "2026-11-28T12:00:00.000000000Z",
                            container: &container,
                            command: "create",
                            decision,
                            pod: Some(&pod),
                        })
                    })
                    .collect::<String>()
            });
        let (expected, refusal) = if checked.is_refused() {
            (
                None,
                Some(format!(
                    "{}\n",
                    rampart_runc::refusal_reasons(&checked.decisions)
                )),
            )
        } else {
            let mut text = serde_json::to_string_pretty(&checked.value).unwrap();
            text.push('\n');
            (Some(text), None)
        };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        // The case name says what must happen.
        if name.ends_with("-refused") != checked.is_refused() {
            failures.push(format!("{name}: refused = {}", checked.is_refused()));
        }
        failures.extend(compare(
            &dir.join("decisions.txt"),
            Some(&decisions),
            update,
        ));
        failures.extend(compare(
            &dir.join("expected.json"),
            expected.as_deref(),
            update,
        ));
        failures.extend(compare(
            &dir.join("refusal.txt"),
            refusal.as_deref(),
            update,
        ));
        failures.extend(compare(&dir.join("audit.jsonl"), audit.as_deref(), update));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
