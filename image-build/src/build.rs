//! Image assembly: from a validated host config to `DIR/kernel`, `DIR/initrd`,
//! `DIR/cmdline` and `DIR/manifest.json`.
//!
//! Three steps: [`resolve_inputs`] (pure: flags and config to [`Inputs`]), [`plan_image`]
//! (reads the build host, writes nothing: the initrd as a [`cpio::Archive`] plus the module
//! order) and [`build`] (writes the output files, each through a temporary file and a
//! rename). The initrd follows the image layout contract shared with `rampart-init`.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rampart_config::{HostConfig, ImageFile, IMAGE_CONFIG_PATH, IMAGE_MODULES_PATH};

use crate::cpio::{Archive, CpioError, FileData};
use crate::elf::{self, ElfError, Item};
use crate::kernel::{self, KernelError, KernelKind};
use crate::kmod::{KmodError, ModuleTree};
use crate::manifest::{self, Blob, FileEntry, Manifest, ManifestError, Source};

/// Name of the init binary looked up next to the running `rampart-image`.
pub const INIT_BINARY: &str = "rampart-init";

/// Empty mount-point directories of the image, with their modes.
pub const MOUNT_POINTS: &[(&str, u32)] = &[
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/dev", 0o755),
    ("/run", 0o755),
    ("/tmp", 0o1777),
    ("/var", 0o755),
    ("/etc", 0o755),
];

/// Errors of an image build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The host file is unreadable or invalid.
    #[error("{source}")]
    Config {
        /// The config error (its Display lists every problem).
        #[from]
        source: rampart_config::ConfigError,
    },
    /// No kernel given.
    #[error("no kernel: pass --kernel or set [image] kernel in {config}")]
    NoKernel {
        /// The host file.
        config: PathBuf,
    },
    /// The kernel file is missing.
    #[error("kernel {path} not found (run scripts/fetch-kernel.sh?)")]
    MissingKernel {
        /// The path.
        path: PathBuf,
    },
    /// Modules are listed but no modules directory is known.
    #[error("[kernel] modules lists {count} modules but there is no modules directory: pass --modules or set [image] modules in {config}")]
    NoModulesDir {
        /// Number of modules listed.
        count: usize,
        /// The host file.
        config: PathBuf,
    },
    /// The init binary is missing.
    #[error("init binary {path} not found: build rampart-init or pass --init")]
    MissingInit {
        /// The path.
        path: PathBuf,
    },
    /// `SOURCE_DATE_EPOCH` is not a 32-bit number of seconds.
    #[error("SOURCE_DATE_EPOCH={value:?} is not a number of seconds that fits in 32 bits")]
    SourceDateEpoch {
        /// The value.
        value: String,
    },
    /// Preparing the kernel failed.
    #[error("kernel {path}: {source}")]
    Kernel {
        /// The kernel file.
        path: PathBuf,
        /// The underlying error.
        source: KernelError,
    },
    /// Resolving modules failed.
    #[error("{source}")]
    Modules {
        /// The underlying error.
        #[from]
        source: KmodError,
    },
    /// A binary or its libraries could not be collected.
    #[error("{what}: {source}")]
    Binary {
        /// What the binary is for (`service hello`, `init`, `image file`).
        what: String,
        /// Its path.
        path: PathBuf,
        /// The underlying error.
        source: ElfError,
    },
    /// A file to put in the image cannot be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An `[[image.files]]` source is not a regular file.
    #[error("image file {path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Adding to or writing the archive failed.
    #[error("initrd: {source}")]
    Archive {
        /// The underlying error.
        #[from]
        source: CpioError,
    },
    /// An `[[image.oci]]` archive could not be built.
    #[error("{source}")]
    Oci {
        /// The underlying error.
        #[from]
        source: crate::oci::OciError,
    },
    /// The AppArmor profiles could not be compiled.
    #[error("apparmor: {source}")]
    AppArmor {
        /// The underlying error.
        #[from]
        source: crate::apparmor::AppArmorError,
    },
    /// The manifest could not be produced.
    #[error("{source}")]
    Manifest {
        /// The underlying error.
        #[from]
        source: ManifestError,
    },
    /// The output directory cannot be created.
    #[error("cannot create output directory {path}: {source}")]
    CreateOut {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An output file cannot be written.
    #[error("cannot write {path}: {source}")]
    WriteOut {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What the user asked for (command-line flags).
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The host file.
    pub config: PathBuf,
    /// The output directory.
    pub out: PathBuf,
    /// `--kernel`, overriding `[image] kernel`.
    pub kernel: Option<PathBuf>,
    /// `--modules`, overriding `[image] modules`.
    pub modules: Option<PathBuf>,
    /// `--init`; defaults to `rampart-init` next to the running executable.
    pub init: Option<PathBuf>,
    /// mtime of every initrd entry (`SOURCE_DATE_EPOCH` or 0).
    pub mtime: u32,
}

/// Everything a build reads, resolved from the flags and the config.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The host file (copied to `/etc/rampart/host.toml`).
    pub config: PathBuf,
    /// The kernel file.
    pub kernel: PathBuf,
    /// The modules directory, when modules are needed.
    pub modules_dir: Option<PathBuf>,
    /// The init binary.
    pub init: PathBuf,
    /// Module names in config order.
    pub modules: Vec<String>,
    /// Service binaries to take from the build host, with the service that needs them.
    pub host_binaries: Vec<(String, PathBuf)>,
    /// `[[image.files]]`.
    pub files: Vec<ImageFile>,
    /// The kernel command line.
    pub cmdline: String,
}

/// `SOURCE_DATE_EPOCH` from `value` (unset or empty: 0).
pub fn mtime_from_epoch(value: Option<&str>) -> Result<u32, BuildError> {
    match value.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v.parse().map_err(|_| BuildError::SourceDateEpoch {
            value: v.to_string(),
        }),
    }
}

/// `rampart-init` next to the running executable, if that can be known.
pub fn default_init() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(INIT_BINARY)))
}

/// Resolve flags against the config (flags win), pure.
pub fn resolve_inputs(
    cfg: &HostConfig,
    req: &BuildRequest,
    default_init: Option<PathBuf>,
) -> Result<Inputs, BuildError> {
    let kernel = req
        .kernel
        .clone()
        .or_else(|| cfg.image.kernel.clone())
        .ok_or_else(|| BuildError::NoKernel {
            config: req.config.clone(),
        })?;
    let mut modules: Vec<String> = cfg
        .kernel
        .modules
        .iter()
        .map(|m| m.as_str().to_string())
        .collect();
    let modules_dir = req.modules.clone().or_else(|| cfg.image.modules.clone());
    if modules_dir.is_some() {
        // A modular kernel: the firewall's modules go in without being listed.
        let extra = crate::network::firewall_modules(cfg, &modules);
        modules.extend(extra);
        let extra = crate::containerd::modules(cfg, &modules);
        modules.extend(extra);
        let extra = crate::operate::modules(cfg, &modules);
        modules.extend(extra);
    }
    if !modules.is_empty() && modules_dir.is_none() {
        return Err(BuildError::NoModulesDir {
            count: modules.len(),
            config: req.config.clone(),
        });
    }
    let init = req
        .init
        .clone()
        .or(default_init)
        .unwrap_or_else(|| PathBuf::from(INIT_BINARY));
    let provided = |p: &Path| cfg.image.files.iter().any(|f| f.target == p);
    let mut host_binaries: Vec<(String, PathBuf)> = Vec::new();
    for s in &cfg.services {
        let Some(exec0) = s.exec.first() else {
            continue;
        };
        let p = elf::normalize(Path::new(exec0));
        if !provided(&p) && !host_binaries.iter().any(|(_, b)| *b == p) {
            host_binaries.push((format!("service {}", s.name.as_str()), p));
        }
    }
    let files = crate::network::image_files(cfg, &cfg.image.files, &init);
    let files = crate::containerd::image_files(cfg, &files, &init);
    let files = crate::cri::image_files(cfg, &files);
    let files = crate::kubelet::image_files(cfg, &files, &init);
    let files = crate::oci::image_files(cfg, &files, &init);
    let files = crate::operate::image_files(cfg, &files, &init);
    host_binaries.retain(|(_, b)| !files.iter().any(|f| f.target == *b));
    Ok(Inputs {
        config: req.config.clone(),
        kernel,
        modules_dir: if modules.is_empty() {
            None
        } else {
            modules_dir
        },
        init,
        modules,
        host_binaries,
        files,
        cmdline: crate::cmdline::build(cfg),
    })
}

/// The initrd and module order, planned from the build host's files.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The initrd content.
    pub archive: Archive,
    /// In-image module paths in load order.
    pub modules: Vec<String>,
    /// The modules tree's kernel release.
    pub modules_release: Option<String>,
}

fn mode_of(path: &Path) -> Result<u32, BuildError> {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|source| BuildError::ReadFile {
            path: path.to_path_buf(),
            source,
        })
}

/// Add an ELF's interpreter and libraries.
fn add_libraries(
    archive: &mut Archive,
    what: &str,
    binary: &Path,
    image_path: &Path,
) -> Result<(), BuildError> {
    let items = elf::collect(binary).map_err(|source| BuildError::Binary {
        what: what.to_string(),
        path: binary.to_path_buf(),
        source,
    })?;
    if !items.is_empty() {
        tracing::debug!(binary = %image_path.display(), count = items.len(), "collected libraries");
    }
    for item in items {
        add_item(archive, item)?;
    }
    Ok(())
}

fn add_item(archive: &mut Archive, item: Item) -> Result<(), BuildError> {
    match item {
        Item::File { image, host } => {
            let mode = mode_of(&host)?;
            archive.add_file(&image, mode, FileData::Host(host))?;
        }
        Item::Symlink { image, target } => {
            archive.add_symlink(&image, &target.to_string_lossy())?;
        }
    }
    Ok(())
}

/// Plan the initrd: layout skeleton, init, config, modules, service binaries, image files.
pub fn plan_image(inputs: &Inputs) -> Result<Plan, BuildError> {
    let mut a = Archive::new();
    for (dir, mode) in MOUNT_POINTS {
        a.add_dir(Path::new(dir), *mode)?;
    }
    a.add_char_device(Path::new("/dev/console"), 0o600, 5, 1)?;
    a.add_symlink(Path::new("/init"), "sbin/init")?;

    // The init.
    if !inputs.init.is_file() {
        return Err(BuildError::MissingInit {
            path: inputs.init.clone(),
        });
    }
    elf::read_dynamic(&inputs.init).map_err(|source| BuildError::Binary {
        what: "init".into(),
        path: inputs.init.clone(),
        source,
    })?;
    a.add_file(
        Path::new("/sbin/init"),
        0o755,
        FileData::Host(inputs.init.clone()),
    )?;
    add_libraries(&mut a, "init", &inputs.init, Path::new("/sbin/init"))?;

    // The config, read now so an unreadable file fails the plan.
    let config = std::fs::read(&inputs.config).map_err(|source| BuildError::ReadFile {
        path: inputs.config.clone(),
        source,
    })?;
    a.add_file(Path::new(IMAGE_CONFIG_PATH), 0o644, FileData::Bytes(config))?;
    // The command line the image asks for, which rampart-init checks at boot.
    let expected = crate::cmdline::expected_file(&inputs.cmdline).into_bytes();
    a.add_file(
        Path::new(rampart_config::IMAGE_CMDLINE_PATH),
        0o644,
        FileData::Bytes(expected),
    )?;

    // Modules.
    let mut modules = Vec::new();
    let mut modules_release = None;
    if let Some(dir) = &inputs.modules_dir {
        tracing::info!(dir = %dir.display(), "resolving kernel modules");
        let tree = ModuleTree::open(dir)?;
        let resolved = tree.resolve(&inputs.modules)?;
        tracing::info!(
            release = tree.release(),
            requested = inputs.modules.len(),
            with_dependencies = resolved.len(),
            "kernel modules resolved"
        );
        for m in &resolved {
            a.add_file(&m.image, 0o644, FileData::Host(m.host.clone()))?;
            modules.push(m.image.to_string_lossy().into_owned());
        }
        modules_release = Some(tree.release().to_string());
    }
    let list: String = modules.iter().map(|m| format!("{m}\n")).collect();
    a.add_file(
        Path::new(IMAGE_MODULES_PATH),
        0o644,
        FileData::Bytes(list.into_bytes()),
    )?;

    // [[image.files]].
    if !inputs.files.is_empty() || !inputs.host_binaries.is_empty() {
        tracing::info!(
            files = inputs.files.len(),
            binaries = inputs.host_binaries.len(),
            "collecting files and their libraries"
        );
    }
    for f in &inputs.files {
        let meta = std::fs::metadata(&f.source).map_err(|source| BuildError::ReadFile {
            path: f.source.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(BuildError::NotAFile {
                path: f.source.clone(),
            });
        }
        // Fail now on an unreadable file rather than while writing.
        std::fs::File::open(&f.source).map_err(|source| BuildError::ReadFile {
            path: f.source.clone(),
            source,
        })?;
        let mode = f.mode.unwrap_or(meta.permissions().mode() & 0o7777);
        a.add_file(&f.target, mode, FileData::Host(f.source.clone()))?;
        if elf::is_elf(&f.source) {
            add_libraries(&mut a, "image file", &f.source, &f.target)?;
        }
    }

    // Service binaries from the build host, at the same path.
    for (what, bin) in &inputs.host_binaries {
        let chain = elf::link_chain(bin).map_err(|source| BuildError::Binary {
            what: what.clone(),
            path: bin.clone(),
            source,
        })?;
        let real = chain
            .iter()
            .find_map(|i| match i {
                Item::File { host, .. } => Some(host.clone()),
                Item::Symlink { .. } => None,
            })
            .unwrap_or_else(|| bin.clone());
        elf::read_dynamic(&real).map_err(|source| BuildError::Binary {
            what: what.clone(),
            path: bin.clone(),
            source,
        })?;
        for item in chain {
            add_item(&mut a, item)?;
        }
        add_libraries(&mut a, what, &real, bin)?;
    }
    crate::network::add_bind_targets(&mut a)?;
    crate::containerd::add_to_archive(&mut a, &inputs.config)?;
    crate::cri::add_to_archive(&mut a, &inputs.config, &inputs.init)?;
    crate::kubelet::add_to_archive(&mut a, &inputs.config)?;
    crate::oci::add_to_archive(&mut a, &inputs.config, &inputs.init)?;
    crate::apparmor::add_to_archive(&mut a, &inputs.config)?;
    Ok(Plan {
        archive: a,
        modules,
        modules_release,
    })
}

/// A writer that hashes and counts what goes through it.
struct HashWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: std::io::Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        use sha2::Digest;
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            len: 0,
        }
    }

    fn finish(self) -> (W, Blob) {
        use sha2::Digest;
        let blob = Blob {
            size: self.len,
            sha256: crate::cpio::hex(&self.hasher.finalize()),
        };
        (self.inner, blob)
    }
}

impl<W: std::io::Write> std::io::Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or(buf));
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write `bytes` to `path` through a temporary file in the same directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let err = |source| BuildError::WriteOut {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The kernel to write: reuse `out/kernel` when the previous manifest says it came from
/// the same input, else extract it.
fn kernel_output(
    kernel: &Path,
    input_sha: &str,
    out: &Path,
) -> Result<(Vec<u8>, KernelKind), BuildError> {
    if let Ok(old) = Manifest::read(&out.join("manifest.json")) {
        if old.inputs.kernel.sha256 == input_sha {
            if let Ok(bytes) = std::fs::read(out.join("kernel")) {
                let kind = match old.inputs.kernel.kind.as_str() {
                    "elf" => Some(KernelKind::Elf),
                    "bzimage" => Some(KernelKind::Bzimage),
                    _ => None,
                };
                if let Some(kind) = kind {
                    if Blob::of(&bytes) == old.inputs.kernel.output {
                        tracing::info!(
                            "kernel unchanged, reusing {}",
                            out.join("kernel").display()
                        );
                        return Ok((bytes, kind));
                    }
                }
            }
        }
    }
    tracing::info!(kernel = %kernel.display(), "extracting the ELF kernel");
    let started = std::time::Instant::now();
    let (bytes, kind) = kernel::prepare(kernel).map_err(|source| BuildError::Kernel {
        path: kernel.to_path_buf(),
        source,
    })?;
    tracing::info!(
        kind = %kind,
        bytes = bytes.len(),
        ms = started.elapsed().as_millis() as u64,
        "kernel ready"
    );
    Ok((bytes, kind))
}

/// Build the image described by `req` into `req.out`; returns the manifest written.
pub fn build(req: &BuildRequest) -> Result<Manifest, BuildError> {
    let cfg = rampart_config::load(&req.config)?;
    let inputs = resolve_inputs(&cfg, req, default_init())?;
    build_inputs(&inputs, &req.out, req.mtime)
}

/// Build from resolved inputs.
pub fn build_inputs(inputs: &Inputs, out: &Path, mtime: u32) -> Result<Manifest, BuildError> {
    if !inputs.kernel.exists() {
        return Err(BuildError::MissingKernel {
            path: inputs.kernel.clone(),
        });
    }
    std::fs::create_dir_all(out).map_err(|source| BuildError::CreateOut {
        path: out.to_path_buf(),
        source,
    })?;
    let plan = plan_image(inputs)?;

    let kernel_in = read(&inputs.kernel)?;
    let kernel_sha = manifest::sha256_hex(&kernel_in);
    drop(kernel_in);
    let (kernel_bytes, kind) = kernel_output(&inputs.kernel, &kernel_sha, out)?;

    tracing::info!(entries = plan.archive.len(), "writing the initrd");
    let initrd_path = out.join("initrd");
    let initrd_tmp = initrd_path.with_extension("tmp");
    let write_err = |source| BuildError::WriteOut {
        path: initrd_path.clone(),
        source,
    };
    let file = std::fs::File::create(&initrd_tmp).map_err(write_err)?;
    let mut hw = HashWriter::new(std::io::BufWriter::new(file));
    let written = plan.archive.write_to(&mut hw, mtime)?;
    let (buffered, initrd) = hw.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    drop(file);

    let config_bytes = read(&inputs.config)?;
    let init_bytes = read(&inputs.init)?;
    let manifest = Manifest {
        format: manifest::FORMAT,
        inputs: manifest::Inputs {
            config: Source {
                path: inputs.config.clone(),
                sha256: manifest::sha256_hex(&config_bytes),
            },
            kernel: manifest::KernelInput {
                path: inputs.kernel.clone(),
                sha256: kernel_sha,
                kind: kind.to_string(),
                output: Blob::of(&kernel_bytes),
            },
            init: Source {
                path: inputs.init.clone(),
                sha256: manifest::sha256_hex(&init_bytes),
            },
            modules_release: plan.modules_release.clone(),
        },
        cmdline: inputs.cmdline.clone(),
        modules: plan.modules.clone(),
        initrd: initrd.clone(),
        files: written.iter().map(FileEntry::from).collect(),
        disk: None,
    };
    let json = manifest.to_json()?;

    write_atomic(&out.join("kernel"), &kernel_bytes)?;
    std::fs::rename(&initrd_tmp, &initrd_path).map_err(write_err)?;
    write_atomic(
        &out.join("cmdline"),
        format!("{}\n", inputs.cmdline).as_bytes(),
    )?;
    write_atomic(&out.join("manifest.json"), json.as_bytes())?;
    tracing::info!(
        out = %out.display(),
        kernel = %kind,
        initrd_bytes = initrd.size,
        files = written.len(),
        "image written"
    );
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio;

    fn cfg(text: &str, dir: &Path) -> HostConfig {
        let path = dir.join("host.toml");
        std::fs::write(&path, text).unwrap();
        rampart_config::load(&path).unwrap()
    }

    fn req(dir: &Path) -> BuildRequest {
        BuildRequest {
            config: dir.join("host.toml"),
            out: dir.join("out"),
            ..Default::default()
        }
    }

    const BASE: &str = r#"
[host]
hostname = "t"
[kernel]
modules = []
[[service]]
name = "one"
exec = ["/bin/busybox", "true"]
"#;

    #[test]
    fn epoch_table() {
        assert_eq!(mtime_from_epoch(None).unwrap(), 0);
        assert_eq!(mtime_from_epoch(Some("")).unwrap(), 0);
        assert_eq!(mtime_from_epoch(Some("1700000000")).unwrap(), 1_700_000_000);
        assert!(mtime_from_epoch(Some("-1")).is_err());
        assert!(mtime_from_epoch(Some("99999999999")).is_err());
    }

    #[test]
    fn inputs_flags_override_config() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{BASE}[image]\nkernel = \"k\"\nmodules = \"m\"\n[[image.files]]\nsource = \"/bin/busybox\"\ntarget = \"/bin/busybox\"\n"
        );
        let c = cfg(&text, dir.path());
        let mut r = req(dir.path());
        let i = resolve_inputs(&c, &r, Some("/x/rampart-init".into())).unwrap();
        assert_eq!(i.kernel, dir.path().join("k"));
        assert_eq!(i.init, PathBuf::from("/x/rampart-init"));
        assert_eq!(
            i.modules,
            ["nf_tables", "nft_ct", "nft_limit"],
            "a modules dir brings the firewall's modules in unlisted"
        );
        assert!(i.host_binaries.is_empty(), "busybox comes from image.files");
        r.kernel = Some("/other/vmlinuz".into());
        r.init = Some("/y/init".into());
        let i = resolve_inputs(&c, &r, Some("/x/rampart-init".into())).unwrap();
        assert_eq!(i.kernel, PathBuf::from("/other/vmlinuz"));
        assert_eq!(i.init, PathBuf::from("/y/init"));
    }

    #[test]
    fn inputs_errors() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(BASE, dir.path());
        let err = resolve_inputs(&c, &req(dir.path()), None).unwrap_err();
        assert!(matches!(err, BuildError::NoKernel { .. }), "{err}");
        let text = BASE.replace("modules = []", "modules = [\"overlay\"]");
        let c = cfg(&text, dir.path());
        let mut r = req(dir.path());
        r.kernel = Some("/k".into());
        let err = resolve_inputs(&c, &r, None).unwrap_err();
        assert!(matches!(err, BuildError::NoModulesDir { .. }), "{err}");
        // A service binary not in image.files comes from the host.
        let c = cfg(BASE, dir.path());
        let i = resolve_inputs(&c, &r, None).unwrap();
        assert_eq!(
            i.host_binaries,
            vec![("service one".to_string(), PathBuf::from("/bin/busybox"))]
        );
    }

    fn fake_init(dir: &Path) -> PathBuf {
        // Any static ELF will do for the layout tests.
        let p = dir.join("rampart-init");
        std::fs::copy("/bin/busybox", &p).unwrap();
        p
    }

    fn inputs(dir: &Path) -> Inputs {
        std::fs::write(dir.join("host.toml"), BASE).unwrap();
        Inputs {
            config: dir.join("host.toml"),
            kernel: dir.join("vmlinuz"),
            modules_dir: None,
            init: fake_init(dir),
            modules: vec![],
            host_binaries: vec![("service one".into(), "/usr/bin/containerd".into())],
            files: vec![ImageFile {
                source: dir.join("host.toml"),
                target: "/etc/extra.toml".into(),
                mode: Some(0o600),
            }],
            cmdline: "console=ttyS0 panic=-1".into(),
        }
    }

    #[test]
    fn plan_follows_the_layout_contract() {
        if !Path::new("/usr/bin/containerd").exists() || !Path::new("/bin/busybox").exists() {
            eprintln!("skip: containerd or busybox not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_image(&inputs(dir.path())).unwrap();
        let a = &plan.archive;
        let kind = |p: &str| a.get(Path::new(p)).map(|e| e.kind.clone());
        assert_eq!(
            kind("/init"),
            Some(cpio::EntryKind::Symlink("sbin/init".into()))
        );
        assert!(matches!(kind("/sbin/init"), Some(cpio::EntryKind::File(_))));
        assert_eq!(
            kind("/dev/console"),
            Some(cpio::EntryKind::CharDev { major: 5, minor: 1 })
        );
        for (d, _) in MOUNT_POINTS {
            assert_eq!(kind(d), Some(cpio::EntryKind::Dir), "{d}");
        }
        assert!(kind(IMAGE_CONFIG_PATH).is_some());
        assert_eq!(
            kind(IMAGE_MODULES_PATH),
            Some(cpio::EntryKind::File(FileData::Bytes(vec![])))
        );
        assert_eq!(a.get(Path::new("/etc/extra.toml")).unwrap().mode, 0o600);
        assert!(kind("/usr/bin/containerd").is_some());
        assert!(kind("/lib64/ld-linux-x86-64.so.2").is_some());
        assert!(kind("/lib/x86_64-linux-gnu/libc.so.6").is_some());
        assert!(kind("/sysroot").is_none());
    }

    #[test]
    fn plan_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = inputs(dir.path());
        i.host_binaries = vec![("service s".into(), dir.path().join("host.toml"))];
        let err = plan_image(&i).unwrap_err();
        assert!(err.to_string().contains("is not an ELF binary"), "{err}");
        assert!(err.to_string().starts_with("service s: "), "{err}");
        let mut i = inputs(dir.path());
        i.host_binaries.clear();
        i.files[0].source = dir.path().join("missing");
        let err = plan_image(&i).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        let mut i = inputs(dir.path());
        i.init = dir.path().join("no-init");
        assert!(matches!(
            plan_image(&i).unwrap_err(),
            BuildError::MissingInit { .. }
        ));
    }

    #[test]
    fn build_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = inputs(dir.path());
        i.host_binaries.clear();
        // A fake "kernel": the fallback path keeps it as a bzImage.
        std::fs::write(&i.kernel, b"not really a kernel").unwrap();
        let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/kernel/modules");
        if modules.exists() {
            i.modules_dir = Some(modules);
            i.modules = vec!["nf_tables".into()];
        }
        let one = dir.path().join("one");
        let two = dir.path().join("two");
        let m1 = build_inputs(&i, &one, 0).unwrap();
        let m2 = build_inputs(&i, &two, 0).unwrap();
        assert_eq!(m1, m2);
        for f in ["kernel", "initrd", "cmdline", "manifest.json"] {
            assert_eq!(
                std::fs::read(one.join(f)).unwrap(),
                std::fs::read(two.join(f)).unwrap(),
                "{f}"
            );
        }
        assert_eq!(m1.inputs.kernel.kind, "bzimage");
        assert_eq!(
            std::fs::read_to_string(one.join("cmdline")).unwrap(),
            "console=ttyS0 panic=-1\n"
        );
        // A rebuild into the same directory reuses the kernel and gives the same bytes.
        let m3 = build_inputs(&i, &one, 0).unwrap();
        assert_eq!(m1, m3);
        if !i.modules.is_empty() {
            let list = m1.modules.join("\n");
            assert!(
                list.ends_with("kernel/net/netfilter/nf_tables.ko"),
                "{list}"
            );
            assert!(m1.files.iter().any(|f| f.path.ends_with("nfnetlink.ko")));
        }
        assert!(m1.files.iter().all(|f| f.path.starts_with('/')));
        i.kernel = dir.path().join("absent");
        assert!(matches!(
            build_inputs(&i, &one, 0).unwrap_err(),
            BuildError::MissingKernel { .. }
        ));
    }
}
