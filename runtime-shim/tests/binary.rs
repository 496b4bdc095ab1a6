//! Runs the built `rampart-runc` with a fake real runc (a shell script that records its
//! arguments and PID) on temporary bundles: pass-through, atomic replacement, refusals that
//! reach stderr and runc's log, and the audit log.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("runc");
        fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho $$ > {d}/pid\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {d}/argv\nexit 7\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dir.path().join("bundle/rootfs")).unwrap();
        Env { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn bundle(&self) -> PathBuf {
        self.path("bundle")
    }

    fn write_spec(&self, spec: &str) -> PathBuf {
        let p = self.bundle().join("config.json");
        fs::write(&p, spec).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rampart-runc"))
            .args(args)
            .current_dir(self.bundle())
            .env("RAMPART_REAL_RUNC", self.path("runc"))
            .env("RAMPART_AUDIT_LOG", self.path("audit/audit.log"))
            .env("RAMPART_CONFIG", self.path("host.toml"))
            .output()
            .unwrap()
    }

    /// The arguments the fake runc got, or `None` when it did not run.
    fn argv(&self) -> Option<Vec<String>> {
        fs::read_to_string(self.path("argv"))
            .ok()
            .map(|t| t.lines().map(str::to_owned).collect())
    }

    fn audit(&self) -> Vec<Value> {
        fs::read_to_string(self.path("audit/audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn ctr_spec() -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_MKNOD", "CAP_NET_RAW", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_MKNOD", "CAP_NET_RAW", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_MKNOD", "CAP_NET_RAW", "CAP_KILL"]
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "x-unknown": {"kept": [1, 2]},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]
        }
    })
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn create_clamps_the_spec_atomically_and_passes_argv_through() {
    let e = Env::new();
    let original = serde_json::to_string_pretty(&ctr_spec()).unwrap();
    let config = e.write_spec(&original);
    let inode_before = fs::metadata(&config).unwrap().ino();
    let bundle = e.bundle().to_string_lossy().into_owned();
    let log = e.bundle().join("log.json").to_string_lossy().into_owned();
    let args = [
        "--root",
        "/run/containerd/runc/default",
        "--log",
        &log,
        "--log-format",
        "json",
        "--systemd-cgroup",
        "create",
        "--bundle",
        &bundle,
        "--pid-file",
        "init.pid",
        "c1",
    ];
    let out = e.run(&args);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(e.argv(), Some(strings(&args)));
    // Replaced by rename (new inode), same mode, no temporary file left.
    let meta = fs::metadata(&config).unwrap();
    assert_ne!(meta.ino(), inode_before);
    assert_eq!(meta.mode() & 0o777, 0o640);
    let names: Vec<String> = fs::read_dir(e.bundle())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    let spec: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        spec["process"]["capabilities"]["bounding"],
        json!(["CAP_CHOWN", "CAP_KILL"])
    );
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(spec["x-unknown"], json!({"kept": [1, 2]}));
    let keys: Vec<&str> = spec
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "ociVersion",
            "process",
            "root",
            "mounts",
            "x-unknown",
            "linux"
        ]
    );
    // The audit log has one line per decision, plus the verdict.
    let audit = e.audit();
    assert!(audit
        .iter()
        .all(|a| a["container"] == "c1" && a["command"] == "create"));
    let rules: Vec<&str> = audit.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        [
            "capabilities",
            "oom-score-adj",
            "apparmor",
            "seccomp",
            "resources",
            "masked-paths",
            "readonly-paths",
            "policy"
        ]
    );
    assert_eq!(audit.last().unwrap()["action"], "allowed");
    let mode = fs::metadata(e.path("audit/audit.log")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Nothing written to runc's log on success.
    assert!(!Path::new(&log).exists());
}

#[test]
fn refusal_reaches_stderr_and_runc_log_and_leaves_the_bundle() {
    let e = Env::new();
    let mut spec = ctr_spec();
    spec["linux"]["resources"] = json!({"devices": [{"allow": true, "access": "rwm"}]});
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind"]}));
    let original = serde_json::to_string_pretty(&spec).unwrap();
    let config = e.write_spec(&original);
    for (format, json_log) in [("json", true), ("text", false)] {
        let log = e.bundle().join(format!("log.{format}"));
        let log_s = log.to_string_lossy().into_owned();
        let out = e.run(&["--log", &log_s, "--log-format", format, "run", "-d", "c2"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("rampart-runc: container c2 refused by the host's container policy: mounts: bind mount onto /host: / is the host's root"),
            "{stderr}"
        );
        assert!(
            stderr.contains("; devices: the container may use every host device"),
            "{stderr}"
        );
        let line = fs::read_to_string(&log).unwrap();
        assert_eq!(line.lines().count(), 1);
        if json_log {
            let v: Value = serde_json::from_str(line.trim()).unwrap();
            assert_eq!(v["level"], "error");
            assert_eq!(v["msg"].as_str().unwrap(), stderr.trim_end());
            assert!(v["time"].as_str().unwrap().ends_with('Z'));
        } else {
            assert!(
                line.contains(" level=error msg=\"rampart-runc: container c2 refused"),
                "{line}"
            );
        }
        assert_eq!(fs::read_to_string(&config).unwrap(), original);
        assert_eq!(e.argv(), None, "the real runc must not run");
    }
    let audit = e.audit();
    let refused: Vec<&str> = audit
        .iter()
        .filter(|a| a["action"] == "refused")
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        refused,
        ["mounts", "devices", "policy", "mounts", "devices", "policy"]
    );
}

#[test]
fn bad_json_is_refused_with_the_file_named() {
    let e = Env::new();
    let config = e.write_spec("{\"ociVersion\": ");
    let out = e.run(&["create", "c3"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "rampart-runc: {} is not valid JSON",
            config.display()
        )),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), "{\"ociVersion\": ");
    assert_eq!(e.argv(), None);
    assert_eq!(e.audit()[0]["rule"], "spec");
}

#[test]
fn other_subcommands_pass_through_and_exec_replaces_the_process() {
    let e = Env::new();
    let cases: &[&[&str]] = &[
        &["--root", "/r", "state", "c1"],
        &["kill", "--all", "c1", "KILL"],
        &["delete", "--force", "c1"],
        &["features"],
        &["--version"],
        &["--future-flag", "frobnicate", "--x", "c1"],
    ];
    for args in cases {
        let _ = fs::remove_file(e.path("argv"));
        let child = Command::new(env!("CARGO_BIN_EXE_rampart-runc"))
            .args(*args)
            .env("RAMPART_REAL_RUNC", e.path("runc"))
            .env("RAMPART_AUDIT_LOG", e.path("audit/audit.log"))
            .env("RAMPART_CONFIG", e.path("host.toml"))
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(7), "{args:?}");
        assert_eq!(e.argv(), Some(strings(args)), "{args:?}");
        let fake_pid: u32 = fs::read_to_string(e.path("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(fake_pid, pid, "exec must replace rampart-runc, not fork");
    }
    assert!(
        e.audit().is_empty(),
        "no decision for pass-through commands"
    );
}

#[test]
fn exec_process_file_and_flags_are_clamped() {
    let e = Env::new();
    let process = e.path("process.json");
    fs::write(
        &process,
        r#"{"args":["sh"],"capabilities":{"bounding":["CAP_SYS_ADMIN","CAP_KILL"]},"noNewPrivileges":false,"oomScoreAdj":3}"#,
    )
    .unwrap();
    let p = process.to_string_lossy().into_owned();
    let out = e.run(&["exec", "--process", &p, "--detach", "c1"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        e.argv(),
        Some(strings(&["exec", "--process", &p, "--detach", "c1"]))
    );
    let v: Value = serde_json::from_str(&fs::read_to_string(&process).unwrap()).unwrap();
    assert_eq!(
        v,
        json!({"args":["sh"],"apparmorProfile":"rampart-default","capabilities":{"bounding":["CAP_KILL"]},"noNewPrivileges":true,"oomScoreAdj":3})
    );
    let out = e.run(&[
        "exec",
        "--cap",
        "CAP_SYS_ADMIN",
        "-t",
        "c1",
        "sh",
        "--cap",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        e.argv(),
        Some(strings(&["exec", "-t", "c1", "sh", "--cap", "x"]))
    );
    let clamped: Vec<String> = e
        .audit()
        .iter()
        .filter(|a| a["action"] == "clamped")
        .map(|a| a["detail"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        clamped
            .iter()
            .any(|d| d.contains("dropped `--cap CAP_SYS_ADMIN`")),
        "{clamped:?}"
    );
}

#[test]
fn host_toml_allow_lists_and_bad_host_toml() {
    let e = Env::new();
    let mut spec = ctr_spec();
    spec["linux"]["namespaces"] =
        json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    e.write_spec(&spec.to_string());
    let out = e.run(&["create", "c4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("host-namespaces: the container has no network namespace"));
    fs::write(
        e.path("host.toml"),
        "[container_policy]\nallow_host_namespaces = [\"network\"]\n",
    )
    .unwrap();
    let out = e.run(&["create", "c4"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A broken host file fails closed for create, but state still works.
    fs::write(
        e.path("host.toml"),
        "[container_policy]\nallow_everything = true\n",
    )
    .unwrap();
    let out = e.run(&["create", "c4"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot load the container policy"),
        "{stderr}"
    );
    assert!(
        stderr.contains("container_policy.allow_everything: unknown field"),
        "{stderr}"
    );
    let out = e.run(&["state", "c4"]);
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn missing_real_runc_is_exit_127() {
    let e = Env::new();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart-runc"))
        .args(["state", "c1"])
        .env("RAMPART_REAL_RUNC", e.path("nonexistent"))
        .env("RAMPART_CONFIG", e.path("host.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run the real runc"));
}
