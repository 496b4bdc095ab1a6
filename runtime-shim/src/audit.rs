//! The audit trail: one JSON line per decision, appended to a file only root can read, and the
//! same through `tracing`. A pod's lines also name the pod, its Kubernetes namespace, the
//! container and whether it is the sandbox.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::policy::{Action, Decision, PodIdentity};

/// Why the audit log could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Its folder could not be created.
    #[error("cannot create audit log folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It could not be opened.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It could not be written.
    #[error("cannot write audit log {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// RFC 3339 time stamp.
    pub time: &'a str,
    /// The container id (`?` when the command line has none).
    pub container: &'a str,
    /// The runc subcommand.
    pub command: &'a str,
    /// The decision.
    pub decision: &'a Decision,
    /// The pod, when the container is a pod's (from its CRI annotations).
    pub pod: Option<&'a PodIdentity>,
}

/// Formats a record as one JSON line (with its newline).
pub fn line(r: &Record<'_>) -> String {
    let mut v = json!({
        "time": r.time,
        "container": r.container,
        "command": r.command,
        "action": r.decision.action.to_string(),
        "rule": r.decision.rule.as_str(),
        "detail": r.decision.detail,
    });
    if let (Some(pod), Some(obj)) = (r.pod, v.as_object_mut()) {
        obj.insert("pod".into(), json!(pod.name));
        obj.insert("pod_namespace".into(), json!(pod.namespace.as_str()));
        obj.insert("container_name".into(), json!(pod.container));
        obj.insert("container_type".into(), json!(pod.kind.as_str()));
        obj.insert("sandbox_id".into(), json!(pod.sandbox_id));
        if let Some(image) = &pod.image {
            obj.insert("image".into(), json!(image));
        }
    }
    format!("{v}\n")
}

/// Appends lines to the audit log (created 0600 in a 0700 folder when missing) in one write,
/// and logs each decision through `tracing`.
pub fn append(path: &Path, records: &[Record<'_>]) -> Result<(), AuditError> {
    for r in records {
        let d = r.decision;
        let pod = r.pod.map(ToString::to_string);
        let pod = pod.as_deref().unwrap_or("");
        match d.action {
            Action::Refused => tracing::warn!(
                container = r.container,
                command = r.command,
                rule = d.rule.as_str(),
                pod = pod,
                "refused: {}",
                d.detail
            ),
            Action::Clamped => tracing::info!(
                container = r.container,
                command = r.command,
                rule = d.rule.as_str(),
                pod = pod,
                "clamped: {}",
                d.detail
            ),
            Action::Allowed => tracing::info!(
                container = r.container,
                command = r.command,
                rule = d.rule.as_str(),
                pod = pod,
                "allowed: {}",
                d.detail
            ),
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| AuditError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let text: String = records.iter().map(line).collect();
    f.write_all(text.as_bytes())
        .map_err(|source| AuditError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rule;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn one_json_line_per_decision() {
        let d = Decision {
            action: Action::Refused,
            rule: Rule::Mounts,
            detail: "bind mount onto /x: / is \"the host's root\"".into(),
        };
        let r = Record {
            time: "2025-01-01T00:00:00.000000000Z",
            container: "c1",
            command: "create",
            decision: &d,
            pod: None,
        };
        assert_eq!(
            line(&r),
            "{\"time\":\"2025-01-01T00:00:00.000000000Z\",\"container\":\"c1\",\"command\":\"create\",\"action\":\"refused\",\"rule\":\"mounts\",\"detail\":\"bind mount onto /x: / is \\\"the host's root\\\"\"}\n"
        );
    }

    #[test]
    fn pod_lines_name_the_pod() {
        let d = Decision {
            action: Action::Refused,
            rule: Rule::Privileged,
            detail: "x".into(),
        };
        let spec = |kind: &str, extra: serde_json::Value| {
            let mut a = json!({
                "io.kubernetes.cri.container-type": kind,
                "io.kubernetes.cri.sandbox-id": "5e1f",
                "io.kubernetes.cri.sandbox-name": "web-0",
                "io.kubernetes.cri.sandbox-namespace": "shop",
            });
            a.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({ "annotations": a })
        };
        // (spec, the pod fields of the line)
        let cases = [
            (
                spec(
                    "container",
                    json!({
                        "io.kubernetes.cri.container-name": "nginx",
                        "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25"
                    }),
                ),
                ",\"pod\":\"web-0\",\"pod_namespace\":\"shop\",\"container_name\":\"nginx\",\"container_type\":\"container\",\"sandbox_id\":\"5e1f\",\"image\":\"docker.io/library/nginx:1.25\"}\n",
            ),
            (
                spec("sandbox", json!({})),
                ",\"pod\":\"web-0\",\"pod_namespace\":\"shop\",\"container_name\":null,\"container_type\":\"sandbox\",\"sandbox_id\":\"5e1f\"}\n",
            ),
        ];
        for (spec, tail) in cases {
            let pod = crate::policy::identify(&spec).unwrap().unwrap();
            let r = Record {
                time: "t",
                container: "c",
                command: "create",
                decision: &d,
                pod: Some(&pod),
            };
            let l = line(&r);
            assert!(
                l.starts_with("{\"time\":\"t\",\"container\":\"c\",\"command\":\"create\",\"action\":\"refused\",\"rule\":\"privileged\",\"detail\":\"x\""),
                "{l}"
            );
            assert!(l.ends_with(tail), "{l}");
        }
    }

    #[test]
    fn appends_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        let d = Decision {
            action: Action::Clamped,
            rule: Rule::Seccomp,
            detail: "added".into(),
        };
        let r = Record {
            time: "t",
            container: "c",
            command: "create",
            decision: &d,
            pod: None,
        };
        append(&path, std::slice::from_ref(&r)).unwrap();
        append(&path, &[r.clone(), r]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
    }
}
