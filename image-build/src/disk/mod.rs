//! `rampart-image build --format disk`: a GPT disk image that boots under UEFI.
//!
//! Layout (docs/disk-image.md): an EFI system partition holding the unified kernel image at
//! `EFI/BOOT/BOOTX64.EFI` ([`uki`]), a squashfs root partition made from the same root tree
//! the initramfs format carries, its dm-verity hash partition ([`verity`], computed here) and
//! an ext4 state partition mounted at `/var`. The GPT ([`gpt`]) is ours; the file systems are
//! made by the build host's tools with fixed times and ids ([`tools`]). The UKI's small initrd
//! holds rampart-init, the storage/dm modules ([`DISK_MODULES`]) and the host config; its
//! command line carries the verity root hash, so signing the UKI covers the whole root.
//!
//! Partition GUIDs are content-derived: root and verity take the two halves of the root hash
//! (as systemd does), the ESP and state take digests of their content; the disk GUID is a
//! digest of those. Two builds from the same inputs give the same `disk.raw`.

pub mod gpt;
pub mod tools;
pub mod uefi;
pub mod uki;
pub mod verity;

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rampart_config::{Action, IMAGE_CONFIG_PATH, IMAGE_MODULES_PATH};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::build::{self, BuildError, BuildRequest, Inputs, MOUNT_POINTS};
use crate::cpio::{hex, Archive, CpioError, EntryKind, FileData};
use crate::kmod::{KmodError, ModuleTree};
use crate::manifest::{self, Blob, FileEntry, Manifest, ManifestError, Source};
use gpt::{Guid, PartitionSpec};

/// Modules the small initrd loads to find and mount the root and the state partition
/// (with their dependencies, resolved from the modules' `.modinfo`).
pub const DISK_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "dm_verity",
    "squashfs",
    "crc32c_generic",
    "ext4",
];

/// Partition labels (init finds partitions by type GUID and label).
pub mod labels {
    /// The EFI system partition.
    pub const ESP: &str = "esp";
    /// The root file system.
    pub const ROOT: &str = "rampart-root";
    /// Its verity hash tree.
    pub const VERITY: &str = "rampart-root-verity";
    /// The state partition, mounted at `/var`.
    pub const STATE: &str = "rampart-state";
}

/// Default size of the state partition.
pub const DEFAULT_STATE_SIZE: u64 = 256 << 20;
/// Smallest ESP (FAT32 with 512-byte clusters needs 65525 clusters).
pub const MIN_ESP_SIZE: u64 = 64 << 20;

/// Errors of a disk build.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Resolving or planning the image failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// No modules directory is known (the small initrd needs storage modules).
    #[error(
        "a disk image needs kernel modules: pass --modules or set [image] modules in {config}"
    )]
    NoModulesDir {
        /// The host file.
        config: PathBuf,
    },
    /// The kernel is not a bzImage (a UKI needs one).
    #[error("kernel {path} is not a bzImage (a UKI needs the vmlinuz, not an ELF vmlinux)")]
    NotBzimage {
        /// The kernel.
        path: PathBuf,
    },
    /// Resolving the initrd modules failed.
    #[error("initrd modules: {source}")]
    Modules {
        /// The error.
        #[from]
        source: KmodError,
    },
    /// Writing the initrd failed.
    #[error("initrd: {source}")]
    Archive {
        /// The error.
        #[from]
        source: CpioError,
    },
    /// A build tool failed.
    #[error(transparent)]
    Tool(#[from] tools::ToolError),
    /// The verity tree could not be computed.
    #[error("verity: {source}")]
    Verity {
        /// The error.
        #[from]
        source: verity::VerityError,
    },
    /// The UKI could not be built.
    #[error("uki: {source}")]
    Uki {
        /// The error.
        #[from]
        source: uki::UkiError,
    },
    /// The partition table could not be planned.
    #[error("gpt: {source}")]
    Gpt {
        /// The error.
        #[from]
        source: gpt::GptError,
    },
    /// The manifest could not be written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of a disk build.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Also write `disk.qcow2`.
    pub qcow2: bool,
    /// Size of the state partition in bytes.
    pub state_size: u64,
    /// The EFI stub.
    pub stub: PathBuf,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            qcow2: false,
            state_size: DEFAULT_STATE_SIZE,
            stub: PathBuf::from(uki::STUB),
        }
    }
}

/// One partition in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Label.
    pub label: String,
    /// Type GUID.
    #[serde(rename = "type")]
    pub type_guid: String,
    /// Unique GUID.
    pub guid: String,
    /// First sector.
    pub first_lba: u64,
    /// Last sector.
    pub last_lba: u64,
    /// The content written (before padding to the partition size).
    pub content: Blob,
}

/// The disk part of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// The EFI stub input.
    pub stub: Source,
    /// Versions of the build tools used.
    pub tools: Vec<String>,
    /// The kernel command line inside the UKI.
    pub uki_cmdline: String,
    /// The UKI.
    pub uki: Blob,
    /// The small initrd's modules in load order.
    pub initrd_modules: Vec<String>,
    /// The root file system type.
    pub root_fs: String,
    /// Hex verity root hash.
    pub verity_root_hash: String,
    /// Hex verity salt.
    pub verity_salt: String,
    /// Verity data blocks.
    pub verity_data_blocks: u64,
    /// The disk GUID.
    pub disk_guid: String,
    /// The partitions in table order.
    pub partitions: Vec<PartitionInfo>,
    /// `disk.raw`.
    pub disk: Blob,
    /// `disk.qcow2`, when written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub qcow2: Option<Blob>,
}

/// The verity error mode for a failure action: `restart` reboots on corruption, the others
/// panic (`panic=-1` then restarts, or QEMU's `-no-reboot` stops).
pub fn verity_error_mode(action: Action) -> &'static str {
    match action {
        Action::Reboot => "restart",
        Action::Poweroff | Action::Halt => "panic",
    }
}

/// The UKI command line: the configured one plus the verity parameters init reads.
pub fn uki_cmdline(base: &str, v: &verity::Verity, error_mode: &str) -> String {
    format!(
        "{} rampart.verity_root_hash={} rampart.verity_salt={} rampart.verity_data_blocks={} rampart.verity_error={error_mode}",
        base.trim(),
        hex(&v.root_hash),
        hex(&v.salt),
        v.data_blocks
    )
}

/// The `.osrel` of the UKI.
pub fn os_release() -> String {
    format!(
        "ID=rampart\nNAME=rampart\nPRETTY_NAME=\"rampart {v}\"\nVERSION_ID={v}\n",
        v = env!("CARGO_PKG_VERSION")
    )
}

/// Build a disk image for `req` into `req.out`.
pub fn build(req: &BuildRequest, opts: &DiskOptions) -> Result<Manifest, DiskError> {
    let cfg = rampart_config::load(&req.config).map_err(BuildError::from)?;
    let inputs = build::resolve_inputs(&cfg, req, build::default_init())?;
    let modules_dir = req
        .modules
        .clone()
        .or_else(|| cfg.image.modules.clone())
        .ok_or_else(|| DiskError::NoModulesDir {
            config: req.config.clone(),
        })?;
    build_inputs(
        &inputs,
        &modules_dir,
        verity_error_mode(cfg.boot.failure_action),
        &req.out,
        req.mtime,
        opts,
    )
}

/// Materialise the root tree of `archive` under `dir`; returns mksquashfs pseudo definitions
/// for the device nodes.
pub fn stage_tree(archive: &Archive, dir: &Path) -> Result<Vec<String>, DiskError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io(dir))?;
    let mut pseudo = Vec::new();
    let mut dirs = Vec::new();
    for (path, entry) in archive.iter() {
        let target = dir.join(path);
        match &entry.kind {
            EntryKind::Dir => {
                std::fs::create_dir_all(&target).map_err(io(&target))?;
                dirs.push((target, entry.mode));
            }
            EntryKind::File(data) => {
                match data {
                    FileData::Bytes(b) => std::fs::write(&target, b).map_err(io(&target))?,
                    FileData::Host(h) => {
                        std::fs::copy(h, &target).map_err(io(h))?;
                    }
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(entry.mode))
                    .map_err(io(&target))?;
            }
            EntryKind::Symlink(t) => std::os::unix::fs::symlink(t, &target).map_err(io(&target))?,
            EntryKind::CharDev { major, minor } => {
                pseudo.push(format!("{path} c {:04o} 0 0 {major} {minor}", entry.mode));
            }
        }
    }
    // Directory modes last (a 0555 directory could not be filled).
    for (d, mode) in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(*mode)).map_err(io(d))?;
    }
    Ok(pseudo)
}

/// The small initrd: the layout skeleton, rampart-init, the config and the disk modules.
pub fn plan_initrd(
    inputs: &Inputs,
    tree: &ModuleTree,
) -> Result<(Archive, Vec<String>), DiskError> {
    let mut a = Archive::new();
    for (dir, mode) in MOUNT_POINTS {
        a.add_dir(Path::new(dir), *mode)?;
    }
    a.add_dir(Path::new("/sysroot"), 0o755)?;
    a.add_char_device(Path::new("/dev/console"), 0o600, 5, 1)?;
    a.add_symlink(Path::new("/init"), "sbin/init")?;
    a.add_file(
        Path::new("/sbin/init"),
        0o755,
        FileData::Host(inputs.init.clone()),
    )?;
    let config = std::fs::read(&inputs.config).map_err(io(&inputs.config))?;
    a.add_file(Path::new(IMAGE_CONFIG_PATH), 0o644, FileData::Bytes(config))?;
    let names: Vec<String> = DISK_MODULES.iter().map(|s| (*s).to_string()).collect();
    let mut modules = Vec::new();
    for m in tree.resolve(&names)? {
        a.add_file(&m.image, 0o644, FileData::Host(m.host.clone()))?;
        modules.push(m.image.to_string_lossy().into_owned());
    }
    let list: String = modules.iter().map(|m| format!("{m}\n")).collect();
    a.add_file(
        Path::new(IMAGE_MODULES_PATH),
        0o644,
        FileData::Bytes(list.into_bytes()),
    )?;
    Ok((a, modules))
}

/// Whether `bytes` is a bzImage (`HdrS` at 0x202).
pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.get(0x202..0x206) == Some(b"HdrS")
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn tool_version(program: &str, arg: &str) -> String {
    let Some(p) = tools::find(program) else {
        return format!("{program}: not found");
    };
    std::process::Command::new(p)
        .arg(arg)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            format!("{program}: {}", line.trim())
        })
        .unwrap_or_else(|e| format!("{program}: {e}"))
}

/// Hash a file without holding it in memory.
fn file_blob(path: &Path) -> Result<Blob, DiskError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or(&[]));
        size += n as u64;
    }
    Ok(Blob {
        size,
        sha256: hex(&h.finalize()),
    })
}

/// Build from resolved inputs.
pub fn build_inputs(
    inputs: &Inputs,
    modules_dir: &Path,
    error_mode: &str,
    out: &Path,
    mtime: u32,
    opts: &DiskOptions,
) -> Result<Manifest, DiskError> {
    if !inputs.kernel.exists() {
        return Err(BuildError::MissingKernel {
            path: inputs.kernel.clone(),
        }
        .into());
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let work = out.join(".disk-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(&work))?;

    // 1. The root tree: the same plan as the initramfs format.
    let plan = build::plan_image(inputs)?;
    let written = plan.archive.write_to(&mut std::io::sink(), mtime)?;
    let staging = work.join("root");
    let pseudo = stage_tree(&plan.archive, &staging)?;
    let root_img = work.join("root.squashfs");
    tracing::info!(entries = plan.archive.len(), "making the squashfs root");
    tools::mksquashfs(&staging, &root_img, mtime, &pseudo)?;
    let _ = std::fs::remove_dir_all(&staging);
    let mut root = std::fs::read(&root_img).map_err(io(&root_img))?;
    root.resize(root.len().div_ceil(verity::BLOCK) * verity::BLOCK, 0);

    // 2. Verity.
    let salt = verity::content_salt(&root);
    let uuid = Guid::from_digest(&digest(&[b"rampart verity uuid", &salt])).0;
    let v = verity::compute(&root, &salt, uuid)?;
    tracing::info!(root_hash = %hex(&v.root_hash), data_blocks = v.data_blocks, "verity tree computed");

    // 3. The small initrd and the UKI.
    let kernel = std::fs::read(&inputs.kernel).map_err(io(&inputs.kernel))?;
    if !is_bzimage(&kernel) {
        return Err(DiskError::NotBzimage {
            path: inputs.kernel.clone(),
        });
    }
    let tree = ModuleTree::open(modules_dir)?;
    let (initrd_archive, initrd_modules) = plan_initrd(inputs, &tree)?;
    let initrd_path = work.join("initrd");
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(&initrd_path).map_err(io(&initrd_path))?);
    initrd_archive.write_to(&mut f, mtime)?;
    f.flush().map_err(io(&initrd_path))?;
    drop(f);
    let initrd_blob = file_blob(&initrd_path)?;
    let cmdline = uki_cmdline(&inputs.cmdline, &v, error_mode);
    let uki_path = work.join("BOOTX64.EFI");
    uki::build(
        &uki::UkiInputs {
            stub: opts.stub.clone(),
            osrel: os_release().into_bytes(),
            cmdline: cmdline.clone().into_bytes(),
            linux: inputs.kernel.clone(),
            initrd: initrd_path.clone(),
        },
        &work,
        &uki_path,
        mtime,
    )?;
    let uki_blob = file_blob(&uki_path)?;

    // 4. ESP and state.
    let esp_size = MIN_ESP_SIZE.max((uki_blob.size + (16 << 20)).div_ceil(gpt::ALIGN) * gpt::ALIGN);
    let esp_path = work.join("esp.img");
    let uki_digest = digest(&[uki_blob.sha256.as_bytes()]);
    let volume_id =
        u32::from_le_bytes([uki_digest[0], uki_digest[1], uki_digest[2], uki_digest[3]]);
    tools::make_esp(
        &esp_path,
        esp_size,
        volume_id,
        &[("/EFI/BOOT/BOOTX64.EFI", &uki_path)],
        mtime,
    )?;
    let esp = std::fs::read(&esp_path).map_err(io(&esp_path))?;
    let state_guid = Guid::from_digest(&digest(&[b"rampart state", &v.root_hash]));
    let state_path = work.join("state.img");
    tools::make_ext4(
        &state_path,
        opts.state_size,
        &state_guid.to_string(),
        labels::STATE,
        mtime,
    )?;
    let state = std::fs::read(&state_path).map_err(io(&state_path))?;

    // 5. The GPT and the disk.
    // Each partition's content hashed once (for the manifest and the content-derived GUIDs).
    let blobs = [
        Blob::of(&esp),
        Blob::of(&root),
        Blob::of(&v.hash_device),
        Blob::of(&state),
    ];
    let esp_guid = Guid::from_digest(&digest(&[b"rampart esp", blobs[0].sha256.as_bytes()]));
    let root_guid = Guid::from_digest(v.root_hash.get(..16).unwrap_or(&[]));
    let verity_guid = Guid::from_digest(v.root_hash.get(16..).unwrap_or(&[]));
    let ty = |t: &str| Guid::parse(t);
    let specs = vec![
        PartitionSpec {
            type_guid: ty(gpt::types::ESP)?,
            guid: esp_guid,
            label: labels::ESP.into(),
            size: esp.len() as u64,
        },
        PartitionSpec {
            type_guid: ty(gpt::types::ROOT_X86_64)?,
            guid: root_guid,
            label: labels::ROOT.into(),
            size: root.len() as u64,
        },
        PartitionSpec {
            type_guid: ty(gpt::types::ROOT_VERITY_X86_64)?,
            guid: verity_guid,
            label: labels::VERITY.into(),
            size: v.hash_device.len() as u64,
        },
        PartitionSpec {
            type_guid: ty(gpt::types::VAR)?,
            guid: state_guid,
            label: labels::STATE.into(),
            size: state.len() as u64,
        },
    ];
    let mut all_guids = Vec::new();
    for s in &specs {
        all_guids.extend_from_slice(&s.guid.0);
    }
    let disk_guid = Guid::from_digest(&digest(&[b"rampart disk", &all_guids]));
    let layout = gpt::plan(disk_guid, &specs)?;
    let contents: [&[u8]; 4] = [&esp, &root, &v.hash_device, &state];
    let disk_path = out.join("disk.raw");
    let tmp = out.join("disk.raw.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.set_len(layout.disk_size()).map_err(io(&tmp))?;
        // The file starts as zeros (set_len): zero runs are skipped, so disk.raw is sparse.
        let mut put = |offset: u64, bytes: &[u8]| -> Result<(), DiskError> {
            for (i, chunk) in bytes.chunks(64 << 10).enumerate() {
                if chunk.iter().all(|b| *b == 0) {
                    continue;
                }
                f.seek(SeekFrom::Start(offset + (i as u64) * (64 << 10)))
                    .map_err(io(&tmp))?;
                f.write_all(chunk).map_err(io(&tmp))?;
            }
            Ok(())
        };
        put(0, &layout.primary())?;
        for (p, c) in layout.partitions.iter().zip(contents) {
            put(p.offset(), c)?;
        }
        put(layout.backup_offset(), &layout.backup())?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &disk_path).map_err(io(&disk_path))?;
    let disk_blob = file_blob(&disk_path)?;
    let qcow2 = if opts.qcow2 {
        let q = out.join("disk.qcow2");
        let _ = std::fs::remove_file(&q);
        tools::qcow2(&disk_path, &q)?;
        Some(file_blob(&q)?)
    } else {
        None
    };

    // 6. The manifest.
    let partitions = layout
        .partitions
        .iter()
        .zip(blobs)
        .map(|(p, content)| PartitionInfo {
            label: p.spec.label.clone(),
            type_guid: p.spec.type_guid.to_string(),
            guid: p.spec.guid.to_string(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            content,
        })
        .collect();
    let stub = std::fs::read(&opts.stub).map_err(io(&opts.stub))?;
    let config_bytes = std::fs::read(&inputs.config).map_err(io(&inputs.config))?;
    let init_bytes = std::fs::read(&inputs.init).map_err(io(&inputs.init))?;
    let kernel_blob = Blob::of(&kernel);
    let manifest = Manifest {
        format: manifest::FORMAT,
        inputs: manifest::Inputs {
            config: Source {
                path: inputs.config.clone(),
                sha256: manifest::sha256_hex(&config_bytes),
            },
            kernel: manifest::KernelInput {
                path: inputs.kernel.clone(),
                sha256: kernel_blob.sha256.clone(),
                kind: "bzimage".into(),
                output: kernel_blob,
            },
            init: Source {
                path: inputs.init.clone(),
                sha256: manifest::sha256_hex(&init_bytes),
            },
            modules_release: Some(tree.release().to_string()),
        },
        cmdline: cmdline.clone(),
        modules: plan.modules.clone(),
        initrd: initrd_blob,
        files: written.iter().map(FileEntry::from).collect(),
        disk: Some(DiskInfo {
            stub: Source {
                path: opts.stub.clone(),
                sha256: manifest::sha256_hex(&stub),
            },
            tools: vec![
                tool_version("mksquashfs", "-version"),
                tool_version("mkfs.fat", "--help"),
                tool_version("mcopy", "--version"),
                tool_version("mkfs.ext4", "-V"),
                tool_version("objcopy", "--version"),
            ],
            uki_cmdline: cmdline,
            uki: uki_blob,
            initrd_modules,
            root_fs: "squashfs".into(),
            verity_root_hash: hex(&v.root_hash),
            verity_salt: hex(&v.salt),
            verity_data_blocks: v.data_blocks,
            disk_guid: disk_guid.to_string(),
            partitions,
            disk: disk_blob,
            qcow2,
        }),
    };
    let json = manifest.to_json()?;
    let mpath = out.join("manifest.json");
    std::fs::write(&mpath, json).map_err(io(&mpath))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(manifest)
}

/// The `build --format disk` command (called by main.rs).
pub mod cli {
    use super::*;

    /// Build the disk image and print a summary line; exit status 0.
    pub fn run(
        req: &BuildRequest,
        qcow2: bool,
        state_size_mib: u64,
        started: std::time::Instant,
    ) -> anyhow::Result<std::process::ExitCode> {
        use anyhow::Context as _;
        let opts = DiskOptions {
            qcow2,
            state_size: state_size_mib << 20,
            ..DiskOptions::default()
        };
        let m =
            build(req, &opts).with_context(|| format!("cannot build {}", req.config.display()))?;
        let size = m.disk.as_ref().map_or(0, |d| d.disk.size);
        eprintln!(
            "rampart-image: built {}/disk.raw ({} bytes, initrd {} bytes, {} root files) in {:.2}s",
            req.out.display(),
            size,
            m.initrd.size,
            m.files.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(std::process::ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn staged_tree_keeps_modes_and_turns_devices_into_pseudo_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Archive::new();
        a.add_dir(Path::new("/tmp"), 0o1777).unwrap();
        a.add_dir(Path::new("/ro"), 0o555).unwrap();
        a.add_file(Path::new("/ro/f"), 0o600, FileData::Bytes(b"x".to_vec()))
            .unwrap();
        a.add_symlink(Path::new("/init"), "sbin/init").unwrap();
        a.add_char_device(Path::new("/dev/console"), 0o600, 5, 1)
            .unwrap();
        let root = dir.path().join("root");
        let pseudo = stage_tree(&a, &root).unwrap();
        assert_eq!(pseudo, vec!["dev/console c 0600 0 0 5 1".to_string()]);
        let mode = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("ro"), 0o555);
        assert_eq!(mode("ro/f"), 0o600);
        assert_eq!(
            std::fs::read_link(root.join("init")).unwrap(),
            PathBuf::from("sbin/init")
        );
        assert!(!root.join("dev/console").exists());
        std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn command_line_and_error_modes() {
        let v = verity::compute(&[0u8; verity::BLOCK], &[0xab], [0; 16]).unwrap();
        let line = uki_cmdline(" console=ttyS0 ", &v, verity_error_mode(Action::Reboot));
        assert!(
            line.starts_with("console=ttyS0 rampart.verity_root_hash="),
            "{line}"
        );
        assert!(line.contains(" rampart.verity_salt=ab "), "{line}");
        assert!(line.contains(" rampart.verity_data_blocks=1 "), "{line}");
        assert!(line.ends_with(" rampart.verity_error=restart"), "{line}");
        assert_eq!(verity_error_mode(Action::Poweroff), "panic");
        assert_eq!(verity_error_mode(Action::Halt), "panic");
        assert!(is_bzimage(&[&[0u8; 0x202][..], b"HdrS"].concat()));
        assert!(!is_bzimage(b"\x7fELF"));
        assert!(os_release().starts_with("ID=rampart\n"));
    }
}
