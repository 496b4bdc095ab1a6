//! Host side of the end-to-end tests: finds (and builds) the binaries, finds (or fetches) the
//! kernel, writes test host files derived from `examples/host.toml`, builds images with
//! `rampart-image build` and boots them with `rampart-image boot`, capturing the console.
//!
//! Boots are serialised by a process-wide lock (each QEMU uses both cores under TCG), and every
//! console is saved under `<target>/rampart-tests/` for post-mortems.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A failure of the harness itself (not of the system under test).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The path of the running test binary says nothing about the target directory.
    #[error("cannot locate the target directory from {exe}")]
    Locate {
        /// The test executable.
        exe: PathBuf,
    },
    /// `cargo build` of the binaries under test failed.
    #[error("cargo build of the binaries failed ({status}):\n{output}")]
    CargoBuild {
        /// Its exit status.
        status: ExitStatus,
        /// Its output.
        output: String,
    },
    /// A binary is still missing after the build.
    #[error("binary {path} is missing (run `cargo build --workspace` with the same profile)")]
    MissingBinary {
        /// Where it should be.
        path: PathBuf,
    },
    /// `scripts/fetch-kernel.sh` failed or left no kernel.
    #[error("no kernel at {path} after scripts/fetch-kernel.sh: {output}")]
    Kernel {
        /// The expected kernel.
        path: PathBuf,
        /// The script's output.
        output: String,
    },
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The example host file is not a TOML table the harness can edit.
    #[error("cannot edit {path}: {reason}")]
    Example {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `rampart-image build` of a host file failed.
    #[error("rampart-image build of {config} failed:\n{output}")]
    ImageBuild {
        /// The host file.
        config: PathBuf,
        /// What the build printed.
        output: String,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> HarnessError + 'a {
    move |source| HarnessError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Where everything is.
#[derive(Debug, Clone)]
pub struct Env {
    /// The workspace root.
    pub root: PathBuf,
    /// `<target>/x86_64-unknown-linux-gnu/<profile>`, holding the binaries.
    pub bin_dir: PathBuf,
    /// Where consoles and scratch images go: `<target>/rampart-tests`.
    pub out_dir: PathBuf,
    /// The default host file, `examples/host.toml`.
    pub example: PathBuf,
}

impl Env {
    /// `rampart-image`.
    pub fn rampart_image(&self) -> PathBuf {
        self.bin_dir.join("rampart-image")
    }

    /// `rampart-init`.
    pub fn rampart_init(&self) -> PathBuf {
        self.bin_dir.join("rampart-init")
    }

    /// `rampart-check`.
    pub fn rampart_check(&self) -> PathBuf {
        self.bin_dir.join("rampart-check")
    }

    /// The kernel the example host points at (`.cache/kernel/vmlinuz`).
    pub fn kernel(&self) -> PathBuf {
        self.root.join(".cache/kernel/vmlinuz")
    }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map_or(here.clone(), Path::to_path_buf)
}

/// [`env`] for a test: panics with the reason when the harness cannot be set up.
pub fn test_env() -> &'static Env {
    match env() {
        Ok(env) => env,
        Err(e) => panic!("harness setup failed: {e}"),
    }
}

/// A fresh scratch directory `<out_dir>/<name>` (emptied first, kept afterwards for
/// post-mortems).
pub fn scratch(name: &str) -> PathBuf {
    let dir = test_env().out_dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("create scratch directory {}: {e}", dir.display());
    }
    dir
}

/// Builds (once per process) the workspace with the profile and target directory of the running
/// test (`cargo build --workspace`), and fetches the kernel if it is absent. Set `RAMPART_TEST_NO_BUILD=1` to skip the build.
pub fn env() -> Result<&'static Env, String> {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    ENV.get_or_init(|| setup().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

fn setup() -> Result<Env, HarnessError> {
    let exe = std::env::current_exe().map_err(io("locate", Path::new("current_exe")))?;
    // <target>/<triple>/<profile>/deps/<test>-<hash>
    let bin_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .ok_or_else(|| HarnessError::Locate { exe: exe.clone() })?
        .to_path_buf();
    let target_dir = bin_dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| HarnessError::Locate { exe: exe.clone() })?
        .to_path_buf();
    let root = workspace_root();
    let env = Env {
        root: root.clone(),
        bin_dir: bin_dir.clone(),
        out_dir: target_dir.join("rampart-tests"),
        example: root.join("examples/host.toml"),
    };
    std::fs::create_dir_all(&env.out_dir).map_err(io("create", &env.out_dir))?;
    if std::env::var_os("RAMPART_TEST_NO_BUILD").is_none() {
        let profile = bin_dir
            .file_name()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .env("CARGO_TARGET_DIR", &target_dir)
            // The same selection as scripts/setup.sh, so that features unify the same way
            // and this is a no-op after it.
            .args(["build", "--workspace"]);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        eprintln!("harness: building the binaries ({profile})");
        let out = cmd.output().map_err(|source| HarnessError::Spawn {
            program: cargo.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(HarnessError::CargoBuild {
                status: out.status,
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    for bin in [env.rampart_image(), env.rampart_init(), env.rampart_check()] {
        if !bin.is_file() {
            return Err(HarnessError::MissingBinary { path: bin });
        }
    }
    if !env.kernel().exists() {
        eprintln!("harness: no kernel in .cache/kernel, running scripts/fetch-kernel.sh");
        let script = root.join("scripts/fetch-kernel.sh");
        let out = Command::new(&script)
            .output()
            .map_err(|source| HarnessError::Spawn {
                program: script.display().to_string(),
                source,
            })?;
        if !out.status.success() || !env.kernel().exists() {
            return Err(HarnessError::Kernel {
                path: env.kernel(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
    }
    Ok(env)
}

/// Whether `program` is an executable file in `$PATH`.
pub fn in_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(program);
            std::fs::metadata(&p).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

/// Whether QEMU tests can run. Without `qemu-system-x86_64`: prints the skip reason and returns
/// false, unless `CI` is set, where a missing QEMU is an error.
pub fn qemu_or_skip(test: &str) -> Result<bool, String> {
    if in_path("qemu-system-x86_64") {
        return Ok(true);
    }
    if std::env::var_os("CI").is_some() {
        return Err("qemu-system-x86_64 is not installed and CI is set: QEMU tests must run in CI (scripts/setup.sh installs it)".to_owned());
    }
    eprintln!("SKIP {test}: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    Ok(false)
}

/// A service for [`host_from_example`].
#[derive(Debug, Clone)]
pub struct TestService {
    /// Its name.
    pub name: String,
    /// Its argv.
    pub exec: Vec<String>,
    /// `on_exit`, e.g. `"poweroff"`.
    pub on_exit: Option<String>,
    /// `capabilities` it keeps (a service gets none by default).
    pub capabilities: Vec<String>,
}

/// Where the checker goes in test images.
pub const CHECKER_IN_IMAGE: &str = "/usr/bin/rampart-check";

impl TestService {
    /// The checker as a service: `rampart-check ARGS...`, powering off when it exits. It keeps
    /// `CAP_SYS_ADMIN`, without which the kernel refuses to let it read
    /// `net.core.bpf_jit_harden`; every other setting of the service sandbox is the default.
    pub fn checker(args: &[&str]) -> Self {
        let mut exec = vec![CHECKER_IN_IMAGE.to_owned()];
        exec.extend(args.iter().map(|a| (*a).to_owned()));
        Self {
            name: "check".to_owned(),
            exec,
            on_exit: Some("poweroff".to_owned()),
            capabilities: vec!["CAP_SYS_ADMIN".to_owned()],
        }
    }
}

/// The default host (`example`) with absolute image paths, the checker added to its files, its
/// services replaced by `services`, and `sysctl` overrides added. Returns TOML text.
pub fn host_from_example(
    example: &Path,
    checker: &Path,
    services: &[TestService],
    sysctl: &[(&str, &str)],
) -> Result<String, HarnessError> {
    use toml::{Table, Value};
    let bad = |reason: &str| HarnessError::Example {
        path: example.to_path_buf(),
        reason: reason.to_owned(),
    };
    let text = std::fs::read_to_string(example).map_err(io("read", example))?;
    let mut doc: Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(&e.to_string()))?;
    let example_abs = std::path::absolute(example).map_err(io("resolve", example))?;
    let base = example_abs.parent().unwrap_or(Path::new("/"));
    let absolute = |v: &Value| -> Option<Value> {
        let p = Path::new(v.as_str()?);
        Some(Value::String(base.join(p).to_string_lossy().into_owned()))
    };
    let image = doc
        .entry("image")
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| bad("[image] is not a table"))?;
    for key in ["kernel", "modules"] {
        if let Some(v) = image.get(key).and_then(absolute) {
            image.insert(key.to_owned(), v);
        }
    }
    let files = image
        .entry("files")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| bad("image.files is not an array"))?;
    for f in files.iter_mut() {
        if let Some(t) = f.as_table_mut() {
            if let Some(v) = t.get("source").and_then(absolute) {
                t.insert("source".to_owned(), v);
            }
        }
    }
    let mut checker_file = Table::new();
    checker_file.insert(
        "source".into(),
        Value::String(checker.to_string_lossy().into_owned()),
    );
    checker_file.insert("target".into(), Value::String(CHECKER_IN_IMAGE.into()));
    checker_file.insert("mode".into(), Value::Integer(0o755));
    files.push(Value::Table(checker_file));

    if !sysctl.is_empty() {
        let kernel = doc
            .entry("kernel")
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| bad("[kernel] is not a table"))?;
        let table = kernel
            .entry("sysctl")
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| bad("kernel.sysctl is not a table"))?;
        for (k, v) in sysctl {
            table.insert((*k).to_owned(), Value::String((*v).to_owned()));
        }
    }
    let services: Vec<Value> = services
        .iter()
        .map(|s| {
            let mut t = Table::new();
            t.insert("name".into(), Value::String(s.name.clone()));
            t.insert(
                "exec".into(),
                Value::Array(s.exec.iter().cloned().map(Value::String).collect()),
            );
            t.insert("restart".into(), Value::String("never".into()));
            if let Some(a) = &s.on_exit {
                t.insert("on_exit".into(), Value::String(a.clone()));
            }
            if !s.capabilities.is_empty() {
                t.insert(
                    "capabilities".into(),
                    Value::Array(s.capabilities.iter().cloned().map(Value::String).collect()),
                );
            }
            Value::Table(t)
        })
        .collect();
    doc.insert("service".into(), Value::Array(services));
    Ok(format!(
        "# Generated by the rampart end-to-end tests from {}\n{}",
        example.display(),
        toml::to_string(&doc).map_err(|e| bad(&e.to_string()))?
    ))
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Output {
    /// stdout then stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd`, capturing stdout and stderr, killing it after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Result<Output, HarnessError> {
    let program = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HarnessError::Spawn {
            program: program.clone(),
            source,
        })?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                eprintln!("harness: {program} ran over {limit:?}, killing it");
                let _ = child.kill();
                break child.wait().map_err(|source| HarnessError::Spawn {
                    program: program.clone(),
                    source,
                })?;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(source) => return Err(HarnessError::Spawn { program, source }),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    })
}

/// Writes `text` as `<dir>/host.toml` and returns its path.
pub fn write_host(dir: &Path, text: &str) -> Result<PathBuf, HarnessError> {
    let path = dir.join("host.toml");
    std::fs::write(&path, text).map_err(io("write", &path))?;
    Ok(path)
}

/// A host file written and built by [`build_host`].
#[derive(Debug, Clone)]
pub struct BuiltHost {
    /// `DIR/host.toml`.
    pub config: PathBuf,
    /// `DIR/image`, the built image.
    pub image: PathBuf,
    /// How long the build took, in seconds.
    pub secs: f64,
}

/// Writes `text` as `DIR/host.toml` and builds it into `DIR/image`; a build that fails is an
/// error with its output.
pub fn build_host(env: &Env, dir: &Path, text: &str) -> Result<BuiltHost, HarnessError> {
    let config = write_host(dir, text)?;
    let image = dir.join("image");
    let start = Instant::now();
    let built = build(env, &config, &image)?;
    if !built.status.success() {
        return Err(HarnessError::ImageBuild {
            config,
            output: built.combined(),
        });
    }
    Ok(BuiltHost {
        config,
        image,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// `rampart-image build --config CONFIG --out OUT`.
pub fn build(env: &Env, config: &Path, out: &Path) -> Result<Output, HarnessError> {
    run(
        Command::new(env.rampart_image())
            .arg("build")
            .arg("--config")
            .arg(config)
            .arg("--out")
            .arg(out),
        Duration::from_secs(600),
    )
}

/// A finished boot.
#[derive(Debug, Clone)]
pub struct Boot {
    /// What `rampart-image boot` returned; `stdout` is the serial console.
    pub output: Output,
    /// Where the console was saved.
    pub log: PathBuf,
}

impl Boot {
    /// The console with `\r` removed.
    pub fn console(&self) -> String {
        self.output.stdout.replace('\r', "")
    }

    /// The last `lines` lines of console and stderr, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        let all = format!("{}\n--- stderr ---\n{}", self.console(), self.output.stderr);
        let v: Vec<&str> = all.lines().collect();
        let from = v.len().saturating_sub(lines);
        format!(
            "(full log: {})\n{}",
            self.log.display(),
            v.get(from..).unwrap_or(&[]).join("\n")
        )
    }
}

/// The guest timeout given to `rampart-image boot` (seconds); `RAMPART_TEST_BOOT_TIMEOUT`
/// overrides it.
pub fn boot_timeout() -> u64 {
    std::env::var("RAMPART_TEST_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// `rampart-image boot IMAGE` with 1 GiB and 2 vCPUs (`RAMPART_TEST_ACCEL`, default `auto`,
/// picks the accelerator); saves the console as `<out_dir>/<name>.console.log`.
pub fn boot(env: &Env, image: &Path, name: &str) -> Result<Boot, HarnessError> {
    boot_with(env, image, name, 1024, boot_timeout())
}

/// Held while a QEMU guest runs: boots run one at a time (each uses both cores under TCG).
pub(crate) static BOOT_LOCK: Mutex<()> = Mutex::new(());

/// [`boot`] with `memory_mib` of guest memory and a timeout of `timeout` seconds; boots run one
/// at a time.
pub fn boot_with(
    env: &Env,
    image: &Path,
    name: &str,
    memory_mib: u32,
    timeout: u64,
) -> Result<Boot, HarnessError> {
    let _guard = BOOT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let accel = std::env::var("RAMPART_TEST_ACCEL").unwrap_or_else(|_| "auto".to_owned());
    eprintln!("harness: booting {name} ({})", image.display());
    let output = run(
        Command::new(env.rampart_image())
            .arg("boot")
            .arg(image)
            .args(["--memory", &memory_mib.to_string()])
            .args(["--cpus", "2", "--accel", &accel])
            .args(["--timeout", &timeout.to_string()]),
        Duration::from_secs(timeout + 60),
    )?;
    let log = env.out_dir.join(format!("{name}.console.log"));
    let text = format!(
        "{}\n--- stderr ({}, {:.1}s) ---\n{}",
        output.stdout,
        output.status,
        output.elapsed.as_secs_f64(),
        output.stderr
    );
    std::fs::write(&log, text).map_err(io("write", &log))?;
    eprintln!(
        "harness: {name} finished in {:.1}s with {} (console: {})",
        output.elapsed.as_secs_f64(),
        output.status,
        log.display()
    );
    Ok(Boot { output, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_rewritten_for_tests() {
        let dir = tempfile::tempdir().unwrap();
        let example = dir.path().join("examples/host.toml");
        std::fs::create_dir_all(example.parent().unwrap()).unwrap();
        std::fs::write(
            &example,
            "[kernel]\nmodules = [\"overlay\"]\n\n[image]\nkernel = \"../k/vmlinuz\"\n\n[[image.files]]\nsource = \"bin/x\"\ntarget = \"/bin/x\"\n\n[[service]]\nname = \"hello\"\nexec = [\"/bin/x\"]\n",
        )
        .unwrap();
        let text = host_from_example(
            &example,
            Path::new("/abs/rampart-check"),
            &[TestService::checker(&["report"])],
            &[("kernel.kptr_restrict", "5")],
        )
        .unwrap();
        let cfg = rampart_config::parse(&text, &dir.path().join("elsewhere/host.toml")).unwrap();
        let base = dir.path().join("examples");
        assert_eq!(cfg.image.kernel, Some(base.join("../k/vmlinuz")));
        assert_eq!(cfg.image.files.len(), 2);
        assert_eq!(cfg.image.files[0].source, base.join("bin/x"));
        assert_eq!(cfg.image.files[1].target, Path::new(CHECKER_IN_IMAGE));
        assert_eq!(cfg.image.files[1].mode, Some(0o755));
        assert_eq!(cfg.services.len(), 1);
        assert_eq!(cfg.services[0].exec, [CHECKER_IN_IMAGE, "report"]);
        assert_eq!(cfg.kernel.modules.len(), 1);
        assert_eq!(cfg.kernel.sysctl.len(), 1);
        assert_eq!(cfg.kernel.sysctl[0].0.as_str(), "kernel.kptr_restrict");
    }

    #[test]
    fn run_captures_and_times_out() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        let slow = run(Command::new("sleep").arg("30"), Duration::from_millis(300)).unwrap();
        assert!(!slow.status.success());
        assert!(slow.elapsed < Duration::from_secs(10));
    }
}
