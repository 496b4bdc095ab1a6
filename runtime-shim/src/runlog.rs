//! Lines for runc's own log (`--log FILE`, `--log-format text|json`).
//!
//! containerd's runc shim reads that file when runc fails and shows the last `error` entry to
//! the user (`ctr: failed to create shim task: OCI runtime create failed: <msg>`), so a refusal
//! is written there in runc's own (logrus) format: with `--log-format json`,
//! `{"level":"error","msg":"...","time":"..."}`; otherwise `time="..." level=error msg="..."`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Why the runc log could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RunLogError {
    /// The log could not be opened or written.
    #[error("cannot write runc log {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One error line in runc's log format (with its newline).
pub fn error_line(json_format: bool, time: &str, msg: &str) -> String {
    if json_format {
        format!(
            "{}\n",
            json!({ "level": "error", "msg": msg, "time": time })
        )
    } else {
        let quote = |s: &str| Value::String(s.to_owned()).to_string();
        format!("time={} level=error msg={}\n", quote(time), quote(msg))
    }
}

/// Appends a line to runc's log, creating it (0644, as runc does) when missing.
pub fn append(path: &Path, line: &str) -> Result<(), RunLogError> {
    let err = |source| RunLogError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(err)?;
    f.write_all(line.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let cases: &[(bool, &str)] = &[
            (
                true,
                "{\"level\":\"error\",\"msg\":\"refused \\\"x\\\"\",\"time\":\"T\"}\n",
            ),
            (false, "time=\"T\" level=error msg=\"refused \\\"x\\\"\"\n"),
        ];
        for (json_format, want) in cases {
            assert_eq!(error_line(*json_format, "T", "refused \"x\""), *want);
        }
    }

    #[test]
    fn appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        append(&p, "a\n").unwrap();
        append(&p, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
    }
}
