//! rampart-runc: an OCI runtime wrapper that holds every container to the host's policy.
//!
//! containerd's runc shim calls this program as its runc binary (`BinaryName`). It reads
//! runc's command line ([`args`]), and for `create`, `run` and `restore` checks the bundle's
//! `config.json`, for `exec` the `--process` file or the flags, against `[container_policy]`
//! from the host file ([`policy`]). What can be made safe is changed in place (the file is
//! replaced atomically, [`bundle`]); what cannot is refused with a message on stderr and in
//! runc's own log, where containerd finds it ([`runlog`]). Every decision is one line in the
//! audit log ([`audit`]). Then it execs the real runc with the same argv (`argv[0]` = `runc`),
//! so exit codes and signals pass through unchanged; it runs a sealed in-memory copy of the
//! real runc, which has no execute bit in the image ([`memexec`]). Every other subcommand passes straight
//! through.

pub mod args;
pub mod audit;
pub mod bundle;
pub mod facts;
pub mod memexec;
pub mod policy;
pub mod runlog;
pub mod seccomp;
pub mod time;

use std::convert::Infallible;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rampart_config::{ConfigError, ContainerPolicy};

use args::{Invocation, Subcommand};
use audit::{AuditError, Record};
use bundle::BundleError;
use policy::{Action, Decision, PodIdentity, Policy, Rule};

/// Environment variable naming the host file (default `/etc/rampart/host.toml`).
pub const ENV_CONFIG: &str = "RAMPART_CONFIG";
/// Environment variable overriding `real_runc` (for tests).
pub const ENV_REAL_RUNC: &str = "RAMPART_REAL_RUNC";
/// Environment variable overriding `audit_log` (for tests).
pub const ENV_AUDIT_LOG: &str = "RAMPART_AUDIT_LOG";
/// Environment variable that turns on `tracing` output on stderr at a level (`info`, `debug`).
pub const ENV_TRACE: &str = "RAMPART_RUNC_TRACE";

/// Where things are: from the environment, parameters for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The host file holding `[container_policy]`. A missing file means the default policy.
    pub config_path: PathBuf,
    /// Overrides `real_runc`.
    pub real_runc: Option<PathBuf>,
    /// Overrides `audit_log`.
    pub audit_log: Option<PathBuf>,
    /// `/proc`.
    pub proc_root: PathBuf,
    /// The current folder (bundle and process paths are relative to it).
    pub cwd: PathBuf,
}

impl Settings {
    /// Reads [`ENV_CONFIG`], [`ENV_REAL_RUNC`], [`ENV_AUDIT_LOG`] and the current folder.
    pub fn from_env() -> Settings {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Settings {
            config_path: var(ENV_CONFIG)
                .unwrap_or_else(|| PathBuf::from(rampart_config::IMAGE_CONFIG_PATH)),
            real_runc: var(ENV_REAL_RUNC),
            audit_log: var(ENV_AUDIT_LOG),
            proc_root: PathBuf::from("/proc"),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }
}

/// Why rampart-runc did not exec the real runc.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The host file exists but is not valid.
    #[error("cannot load the container policy: {source}")]
    Config {
        /// The configuration error (it names the file).
        source: ConfigError,
    },
    /// A spec or process file could not be read, parsed or replaced.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The policy refused the container.
    #[error("container {container} refused by the host's container policy: {reasons}")]
    Refused {
        /// The container id.
        container: String,
        /// Each refusal as `RULE: DETAIL`, joined with `; `.
        reasons: String,
    },
    /// The audit log could not be written (fail closed).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The real runc could not be executed.
    #[error("cannot run the real runc {path}: {source}")]
    Exec {
        /// The program.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ShimError {
    /// The exit status for this error: 127 when the real runc cannot be run, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ShimError::Exec { .. } => 127,
            _ => 1,
        }
    }
}

/// What to exec once the policy passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The real runc.
    pub program: PathBuf,
    /// Its argv, `argv[0]` = `runc`.
    pub argv: Vec<OsString>,
}

/// Reads the policy: the default when the host file does not exist.
fn load_policy(path: &Path) -> Result<ContainerPolicy, ConfigError> {
    match rampart_config::load(path) {
        Ok(c) => Ok(c.container_policy),
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(ContainerPolicy::default())
        }
        Err(e) => Err(e),
    }
}

/// The line that sums up one checked spec or process.
pub fn verdict(decisions: &[Decision]) -> Decision {
    let count = |a: Action| decisions.iter().filter(|d| d.action == a).count();
    let (refused, clamped) = (count(Action::Refused), count(Action::Clamped));
    if refused > 0 {
        Decision {
            action: Action::Refused,
            rule: Rule::Policy,
            detail: format!("{refused} rule(s) refused the container"),
        }
    } else {
        Decision {
            action: Action::Allowed,
            rule: Rule::Policy,
            detail: format!("allowed with {clamped} change(s)"),
        }
    }
}

/// The refusals as one message.
pub fn refusal_reasons(decisions: &[Decision]) -> String {
    decisions
        .iter()
        .filter(|d| d.action == Action::Refused && d.rule != Rule::Policy)
        .map(|d| format!("{}: {}", d.rule, d.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes the decisions (and their verdict) to the audit log.
fn record(
    audit_log: &Path,
    inv: &Invocation,
    pod: Option<&PodIdentity>,
    decisions: &mut Vec<Decision>,
) -> Result<(), AuditError> {
    decisions.push(verdict(decisions));
    let time = time::rfc3339(SystemTime::now());
    let container = inv.container_id().unwrap_or("?");
    let command = inv.subcommand_name.as_deref().unwrap_or("?");
    let records: Vec<Record<'_>> = decisions
        .iter()
        .map(|decision| Record {
            time: &time,
            container,
            command,
            decision,
            pod,
        })
        .collect();
    audit::append(audit_log, &records)
}

/// Reads a spec or process file; a file that cannot be read or parsed is an audited refusal.
fn read_audited(
    path: &Path,
    audit_log: &Path,
    inv: &Invocation,
    pod: Option<&PodIdentity>,
) -> Result<serde_json::Value, ShimError> {
    bundle::read_json(path).or_else(|e| {
        let mut d = vec![Decision {
            action: Action::Refused,
            rule: Rule::Spec,
            detail: e.to_string(),
        }];
        record(audit_log, inv, pod, &mut d)?;
        Err(e.into())
    })
}

/// The pod an `exec` runs in, for its audit lines: containerd's shim runs runc in the
/// container's bundle folder (named after the container), whose `config.json` holds the CRI
/// annotations. Anything else (another folder, no file, no annotations) is no pod.
fn exec_pod(cwd: &Path, container: Option<&str>) -> Option<PodIdentity> {
    let named_after = cwd
        .file_name()
        .is_some_and(|n| Some(n.to_string_lossy().as_ref()) == container);
    if !named_after {
        return None;
    }
    let spec = bundle::read_json(&cwd.join("config.json")).ok()?;
    policy::identify(&spec).ok().flatten()
}

/// Checks the command line against the policy, applies what must change (spec or process file,
/// dropped exec flags) and returns what to exec. Nothing is changed when it fails.
pub fn prepare(argv: &[OsString], settings: &Settings) -> Result<Plan, ShimError> {
    let text: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let inv = args::parse(&text);
    let sub = inv.subcommand;
    let needs_policy = sub.is_some_and(Subcommand::uses_bundle) || sub == Some(Subcommand::Exec);
    let config = match load_policy(&settings.config_path) {
        Ok(c) => c,
        Err(source) if needs_policy => return Err(ShimError::Config { source }),
        Err(e) => {
            tracing::warn!("using the default container policy: {e}");
            ContainerPolicy::default()
        }
    };
    let program = settings
        .real_runc
        .clone()
        .unwrap_or_else(|| config.real_runc.clone());
    let audit_log = settings
        .audit_log
        .clone()
        .unwrap_or_else(|| config.audit_log.clone());
    let policy = Policy::new(&config);
    let mut keep: Vec<usize> = (0..argv.len()).collect();
    let container = inv.container_id().unwrap_or("?").to_owned();
    let refuse = |decisions: &[Decision]| ShimError::Refused {
        container: container.clone(),
        reasons: refusal_reasons(decisions),
    };
    match sub {
        Some(s) if s.uses_bundle() => {
            let bundle_dir = inv.bundle(&settings.cwd);
            let bundle = policy::lexical(Path::new("/"), &bundle_dir.to_string_lossy());
            let path = bundle_dir.join("config.json");
            let spec = read_audited(&path, &audit_log, &inv, None)?;
            let pod = policy::identify(&spec).ok().flatten();
            let facts = facts::gather(&spec, &bundle, &settings.proc_root);
            let mut checked = policy.check_spec(&spec, &facts);
            record(&audit_log, &inv, pod.as_ref(), &mut checked.decisions)?;
            if checked.is_refused() {
                return Err(refuse(&checked.decisions));
            }
            if checked.is_changed() {
                bundle::write_atomic(&path, &checked.value)?;
            }
        }
        Some(Subcommand::Exec) => match inv.process_file(&settings.cwd) {
            Some(path) => {
                let pod = exec_pod(&settings.cwd, inv.container_id());
                let process = read_audited(&path, &audit_log, &inv, pod.as_ref())?;
                let mut checked = policy.check_process(&process);
                record(&audit_log, &inv, pod.as_ref(), &mut checked.decisions)?;
                if checked.is_refused() {
                    return Err(refuse(&checked.decisions));
                }
                if checked.is_changed() {
                    bundle::write_atomic(&path, &checked.value)?;
                }
            }
            None => {
                let pod = exec_pod(&settings.cwd, inv.container_id());
                let (mut decisions, drop) = policy.check_exec_flags(&inv);
                record(&audit_log, &inv, pod.as_ref(), &mut decisions)?;
                keep = inv.without(&drop);
            }
        },
        _ => {}
    }
    let mut out: Vec<OsString> = keep
        .into_iter()
        .filter_map(|i| argv.get(i).cloned())
        .collect();
    if let Some(first) = out.first_mut() {
        *first = OsString::from("runc");
    } else {
        out.push(OsString::from("runc"));
    }
    Ok(Plan { program, argv: out })
}

/// Runs rampart-runc: [`prepare`], then exec the real runc. Returns only on failure, after
/// writing the error to runc's `--log` file (in its `--log-format`) when one was given.
pub fn run(argv: &[OsString], settings: &Settings) -> Result<Infallible, ShimError> {
    let result: Result<Infallible, ShimError> = prepare(argv, settings).and_then(|plan| {
        // A sealed in-memory copy: the real runc has no execute bit (see `memexec`).
        let e = memexec::exec(&plan.program, &plan.argv);
        Err(ShimError::Exec {
            path: plan.program,
            source: match e {
                Ok(never) => match never {},
                Err(e) => e.into_io(),
            },
        })
    });
    let Err(e) = result;
    let text: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let inv = args::parse(&text);
    if let Some(log) = inv.log_file() {
        let log = settings.cwd.join(log);
        let line = runlog::error_line(
            inv.log_json(),
            &time::rfc3339(SystemTime::now()),
            &format!("rampart-runc: {e}"),
        );
        if let Err(le) = runlog::append(&log, &line) {
            tracing::warn!("{le}");
        }
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings {
            config_path: dir.join("host.toml"),
            real_runc: None,
            audit_log: Some(dir.join("audit.log")),
            proc_root: PathBuf::from("/proc"),
            cwd: dir.to_path_buf(),
        }
    }

    #[test]
    fn plan_keeps_argv_and_names_runc() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        // (argv, expected program, expected argv)
        let cases: &[(&[&str], &str, &[&str])] = &[
            (
                &["/usr/bin/rampart-runc", "state", "c1"],
                "/usr/lib/rampart/runc",
                &["runc", "state", "c1"],
            ),
            (
                &["runc", "--root", "/r", "kill", "c1", "9"],
                "/usr/lib/rampart/runc",
                &["runc", "--root", "/r", "kill", "c1", "9"],
            ),
            (&[], "/usr/lib/rampart/runc", &["runc"]),
        ];
        for (argv, program, want) in cases {
            let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
            let plan = prepare(&argv, &s).unwrap();
            assert_eq!(plan.program, PathBuf::from(program));
            let got: Vec<&str> = plan.argv.iter().map(|a| a.to_str().unwrap()).collect();
            assert_eq!(got, *want);
        }
        std::fs::write(
            dir.path().join("host.toml"),
            "[container_policy]\nreal_runc = \"/opt/runc\"\n",
        )
        .unwrap();
        let plan = prepare(&[OsString::from("x"), OsString::from("list")], &s).unwrap();
        assert_eq!(plan.program, PathBuf::from("/opt/runc"));
        let s = Settings {
            real_runc: Some(PathBuf::from("/env/runc")),
            ..s
        };
        let plan = prepare(&[OsString::from("x"), OsString::from("list")], &s).unwrap();
        assert_eq!(plan.program, PathBuf::from("/env/runc"));
    }

    /// A pod's `create` and `exec` write the pod into every audit line; a privileged pod is
    /// refused with the rule named.
    #[test]
    fn pod_audit_lines_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let id = "9a8b7c6d5e4f";
        let bundle = dir.path().join(id);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let annotations = serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "nginx",
            "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25",
            "io.kubernetes.cri.sandbox-id": "3f4d5e6a7b8c",
            "io.kubernetes.cri.sandbox-name": "web-0",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.sandbox-uid": "7c1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"
        });
        let spec = serde_json::json!({
            "ociVersion": "1.0.2-dev",
            "process": {"args": ["nginx"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "annotations": annotations,
            "linux": {"namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network", "path": "/var/run/netns/cni-none"}
            ]}
        });
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        let argv = |args: &[&str]| -> Vec<OsString> { args.iter().map(OsString::from).collect() };
        let bundle_arg = bundle.to_string_lossy().into_owned();
        prepare(&argv(&["runc", "create", "--bundle", &bundle_arg, id]), &s).unwrap();
        std::fs::write(dir.path().join("p.json"), r#"{"args": ["sh"]}"#).unwrap();
        let in_bundle = Settings {
            cwd: bundle.clone(),
            ..s.clone()
        };
        let process = dir.path().join("p.json").to_string_lossy().into_owned();
        prepare(
            &argv(&["runc", "exec", "--process", &process, id]),
            &in_bundle,
        )
        .unwrap();
        // Elsewhere (a folder not named after the container) an exec is no pod's.
        prepare(&argv(&["runc", "exec", "--process", &process, id]), &s).unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("audit.log"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (pods, plain): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l.get("pod").is_some());
        assert!(pods.iter().any(|l| l["command"] == "create"));
        assert!(pods.iter().any(|l| l["command"] == "exec"));
        for l in &pods {
            assert_eq!(
                (
                    &l["pod"],
                    &l["pod_namespace"],
                    &l["container_name"],
                    &l["container_type"]
                ),
                (
                    &serde_json::json!("web-0"),
                    &serde_json::json!("shop"),
                    &serde_json::json!("nginx"),
                    &serde_json::json!("container")
                ),
                "{l}"
            );
        }
        assert!(!plain.is_empty() && plain.iter().all(|l| l["command"] == "exec"));
        let written = bundle::read_json(&bundle.join("config.json")).unwrap();
        assert_eq!(
            written["process"]["noNewPrivileges"],
            serde_json::json!(true)
        );
        assert_eq!(
            written["linux"]["seccomp"]["defaultAction"],
            serde_json::json!("SCMP_ACT_ERRNO")
        );
        // A privileged container of the same pod.
        let mut privileged = spec.clone();
        privileged["process"]["capabilities"] = serde_json::json!({"bounding": ["CAP_SYS_ADMIN"]});
        std::fs::write(bundle.join("config.json"), privileged.to_string()).unwrap();
        let e = prepare(&argv(&["runc", "create", "--bundle", &bundle_arg, id]), &s).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("container {id} refused by the host's container policy: privileged: pod shop/web-0 container nginx is privileged: it asks for CAP_SYS_ADMIN; allow it with allow_privileged = true in [[container_policy.kubernetes_namespace]] name = \"shop\"")),
            "{msg}"
        );
    }

    #[test]
    fn verdict_and_reasons() {
        let d = |action, rule, detail: &str| Decision {
            action,
            rule,
            detail: detail.into(),
        };
        let ds = vec![
            d(Action::Clamped, Rule::Seccomp, "added"),
            d(Action::Refused, Rule::Devices, "a"),
            d(Action::Refused, Rule::Mounts, "b"),
        ];
        assert_eq!(refusal_reasons(&ds), "devices: a; mounts: b");
        assert_eq!(
            verdict(&ds).to_string(),
            "refused policy: 2 rule(s) refused the container"
        );
        assert_eq!(
            verdict(&ds[..1]).to_string(),
            "allowed policy: allowed with 1 change(s)"
        );
    }
}
