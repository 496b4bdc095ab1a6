//! Stage 0 of a disk image: find the partitions, set up the dm-verity root and switch to it.
//!
//! A disk image's UKI boots the kernel with a small initrd (rampart-init, the storage and dm
//! modules, the config) and a command line carrying `rampart.verity_root_hash=`,
//! `rampart.verity_salt=`, `rampart.verity_data_blocks=` and `rampart.verity_error=`. When
//! stage 0 sees them ([`parse_cmdline`]) it, instead of copying the initramfs ([`stage0`]):
//!
//! 1. mounts `/proc`, `/sys` and `/dev` (devtmpfs) and loads `/etc/rampart/modules`;
//! 2. reads the GPT of every disk and finds the root, root-verity and state partitions by type
//!    GUID and label ([`find_partitions`]; the root and verity GUIDs must also match the two
//!    halves of the root hash when several candidates exist), waiting for them to appear;
//! 3. creates `/dev/mapper/root`, a read-only `verity` target ([`verity_target`]) through the
//!    device-mapper ioctls ([`crate::dm`]), with `panic_on_corruption` (or
//!    `restart_on_corruption`, or none: I/O errors) so a corrupted block is never read
//!    silently;
//! 4. mounts it read-only (squashfs, `ro,nosuid,nodev`) at `/sysroot`, unmounts `/proc`,
//!    `/sys` and `/dev`, removes the initramfs files, `MS_MOVE`s `/sysroot` onto `/`, chroots
//!    and execs `/sbin/init rampart.state=/dev/<state>`.
//!
//! Stage 1 reads that argument ([`state_from_args`]) and mounts the state partition at `/var`
//! in place of the `/var` tmpfs rows of the base table ([`with_state`]; `/var/lib/containerd`
//! too with `[containerd] state = "disk"`), so the state mounts are in the mount plan and
//! shutdown unmounts them.

use std::ffi::{CStr, CString, OsString};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use crate::dm::{self, Control, DmError, Target};
use crate::kmod::{self, KmodError};
use crate::mount::{MountFlags, MountSpec};

/// Where the verified root is mounted before the switch.
pub const SYSROOT: &str = "/sysroot";
/// The device-mapper name of the root.
pub const DM_NAME: &str = "root";
/// The root's device node.
pub const ROOT_DEVICE: &str = "/dev/mapper/root";
/// The root file system type.
pub const ROOT_FSTYPE: &str = "squashfs";
/// The state file system type.
pub const STATE_FSTYPE: &str = "ext4";
/// The stage 1 argument naming the state device.
pub const STATE_ARG: &str = "rampart.state=";
/// How long to wait for the partitions to appear.
pub const WAIT: Duration = Duration::from_secs(30);
/// Verity data and hash block size.
pub const VERITY_BLOCK: u64 = 4096;

/// Partition type GUIDs (Discoverable Partitions Specification) and labels.
pub mod kinds {
    /// Root, x86-64.
    pub const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    /// Root verity, x86-64.
    pub const VERITY_TYPE: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
    /// Variable data (`/var`).
    pub const STATE_TYPE: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
    /// Root label.
    pub const ROOT_LABEL: &str = "rampart-root";
    /// Verity label.
    pub const VERITY_LABEL: &str = "rampart-root-verity";
    /// State label.
    pub const STATE_LABEL: &str = "rampart-state";
}

/// Errors of the disk stage 0; each names what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A command line parameter is malformed.
    #[error("kernel command line: {key}={value:?}: {reason}")]
    Param {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A parameter is missing.
    #[error("kernel command line: {key} is missing")]
    MissingParam {
        /// The key.
        key: &'static str,
    },
    /// Reading a file failed.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A GPT is not valid.
    #[error("gpt of {}: {reason}", path.display())]
    Gpt {
        /// The device.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A partition was not found in time.
    #[error("no {what} partition found after {secs}s")]
    NotFound {
        /// Which.
        what: &'static str,
        /// How long we waited.
        secs: u64,
    },
    /// Several partitions match.
    #[error("{count} {what} partitions match; cannot choose")]
    Ambiguous {
        /// Which.
        what: &'static str,
        /// How many.
        count: usize,
    },
    /// Mounting failed.
    #[error("mount {fstype} on {}: {source}", target.display())]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The file system type.
        fstype: &'static str,
        /// The errno.
        source: Errno,
    },
    /// Creating a node or directory failed.
    #[error("create {}: {source}", path.display())]
    Create {
        /// The path.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// Loading the modules failed.
    #[error(transparent)]
    Modules(#[from] KmodError),
    /// Device-mapper failed.
    #[error("dm-verity: {0}")]
    Dm(#[from] DmError),
    /// Switching to the new root failed.
    #[error("switch root: {step} {}: {source}", path.display())]
    Switch {
        /// The step (`chdir`, `move`, `chroot`).
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// `execve` of stage 1 failed.
    #[error("exec /sbin/init: {source}")]
    Exec {
        /// The errno.
        source: Errno,
    },
}

/// What a verity error does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    /// Kernel panic (`panic_on_corruption`).
    Panic,
    /// Restart (`restart_on_corruption`).
    Restart,
    /// I/O error to the reader (no option: the dm-verity default).
    Eio,
}

/// The verity parameters of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    /// Hex root hash (64 digits).
    pub root_hash: String,
    /// Hex salt.
    pub salt: String,
    /// Number of 4096-byte data blocks.
    pub data_blocks: u64,
    /// What a corrupted block does.
    pub error: ErrorMode,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The verity parameters of `/proc/cmdline`, `None` when it has no
/// `rampart.verity_root_hash` (an initramfs boot).
///
/// # Errors
/// A parameter is missing or malformed.
pub fn parse_cmdline(cmdline: &str) -> Result<Option<VerityParams>, DiskError> {
    let get = |key: &str| {
        cmdline
            .split_whitespace()
            .filter_map(|item| item.strip_prefix(key)?.strip_prefix('='))
            .next_back()
    };
    let Some(root_hash) = get("rampart.verity_root_hash") else {
        return Ok(None);
    };
    if root_hash.len() != 64 || !is_hex(root_hash) {
        return Err(DiskError::Param {
            key: "rampart.verity_root_hash",
            value: root_hash.to_owned(),
            reason: "not 64 hex digits",
        });
    }
    let salt = get("rampart.verity_salt").ok_or(DiskError::MissingParam {
        key: "rampart.verity_salt",
    })?;
    if !is_hex(salt) || salt.len() > 512 {
        return Err(DiskError::Param {
            key: "rampart.verity_salt",
            value: salt.to_owned(),
            reason: "not hex (at most 256 bytes)",
        });
    }
    let blocks = get("rampart.verity_data_blocks").ok_or(DiskError::MissingParam {
        key: "rampart.verity_data_blocks",
    })?;
    let data_blocks = blocks
        .parse::<u64>()
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| DiskError::Param {
            key: "rampart.verity_data_blocks",
            value: blocks.to_owned(),
            reason: "not a positive number",
        })?;
    let error = match get("rampart.verity_error") {
        None | Some("panic") => ErrorMode::Panic,
        Some("restart") => ErrorMode::Restart,
        Some("eio") => ErrorMode::Eio,
        Some(other) => {
            return Err(DiskError::Param {
                key: "rampart.verity_error",
                value: other.to_owned(),
                reason: "expected panic, restart or eio",
            })
        }
    };
    Ok(Some(VerityParams {
        root_hash: root_hash.to_ascii_lowercase(),
        salt: salt.to_ascii_lowercase(),
        data_blocks,
        error,
    }))
}

/// A block device: its kernel name and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// `vda2`.
    pub name: String,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
}

impl BlockDev {
    /// `major:minor`, as dm tables name devices.
    #[must_use]
    pub fn number(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }
}

/// The `verity` target for the root.
#[must_use]
pub fn verity_target(p: &VerityParams, data: &BlockDev, hash: &BlockDev) -> Target {
    let mut params = format!(
        "1 {} {} {VERITY_BLOCK} {VERITY_BLOCK} {} 1 sha256 {} {}",
        data.number(),
        hash.number(),
        p.data_blocks,
        p.root_hash,
        p.salt
    );
    match p.error {
        ErrorMode::Panic => params.push_str(" 1 panic_on_corruption"),
        ErrorMode::Restart => params.push_str(" 1 restart_on_corruption"),
        ErrorMode::Eio => {}
    }
    Target {
        start: 0,
        length: p.data_blocks * (VERITY_BLOCK / 512),
        kind: "verity".to_owned(),
        params,
    }
}

/// A GUID in its textual byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// From the GPT's mixed-endian encoding.
    #[must_use]
    pub fn from_disk(d: [u8; 16]) -> Self {
        let mut g = d;
        g.swap(0, 3);
        g.swap(1, 2);
        g.swap(4, 5);
        g.swap(6, 7);
        Self(g)
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (`None` when malformed).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 || text.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
            let s = std::str::from_utf8(pair).ok()?;
            *o = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Self(out))
    }

    /// The GUID the image builder derives from 16 bytes of a digest (version 4 bits set).
    #[must_use]
    pub fn from_digest_hex(hex32: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        let bytes = hex32.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        for (o, pair) in out.iter_mut().zip(bytes.chunks(2)) {
            *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        if let Some(b) = out.get_mut(6) {
            *b = (*b & 0x0f) | 0x40;
        }
        if let Some(b) = out.get_mut(8) {
            *b = (*b & 0x3f) | 0x80;
        }
        Some(Self(out))
    }
}

/// One used GPT entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    /// 1-based partition number.
    pub number: u32,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub guid: Guid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector.
    pub last_lba: u64,
    /// Label.
    pub label: String,
}

/// CRC32 (IEEE), as the GPT uses.
#[must_use]
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let raw = b
        .get(at..at + 16)
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .unwrap_or([0; 16]);
    Guid::from_disk(raw)
}

/// Reads the primary GPT of the disk (or image file) at `path` with `sector`-byte sectors,
/// checking both CRCs; returns the used entries.
///
/// # Errors
/// The device cannot be read or holds no valid GPT.
pub fn read_gpt(path: &Path, sector: u64) -> Result<Vec<GptEntry>, DiskError> {
    let read_err = |source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bad = |reason| DiskError::Gpt {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = fs::File::open(path).map_err(read_err)?;
    let mut header = vec![0u8; usize::try_from(sector).map_err(|_| bad("sector size"))?];
    f.seek(SeekFrom::Start(sector)).map_err(read_err)?;
    f.read_exact(&mut header).map_err(read_err)?;
    if header.get(..8) != Some(b"EFI PART") {
        return Err(bad("no EFI PART signature"));
    }
    let size = le32(&header, 12) as usize;
    if !(92..=header.len()).contains(&size) {
        return Err(bad("bad header size"));
    }
    let mut check = header.get(..size).ok_or(bad("bad header size"))?.to_vec();
    if let Some(c) = check.get_mut(16..20) {
        c.fill(0);
    }
    if crc32(&check) != le32(&header, 16) {
        return Err(bad("header crc mismatch"));
    }
    let entries_lba = le64(&header, 72);
    let count = le32(&header, 80) as usize;
    let entry_size = le32(&header, 84) as usize;
    if entry_size < 128 || count > 1024 {
        return Err(bad("bad entry array geometry"));
    }
    let mut entries = vec![0u8; count * entry_size];
    f.seek(SeekFrom::Start(entries_lba.saturating_mul(sector)))
        .map_err(read_err)?;
    f.read_exact(&mut entries).map_err(read_err)?;
    if crc32(&entries) != le32(&header, 88) {
        return Err(bad("entry array crc mismatch"));
    }
    let mut out = Vec::new();
    for (i, e) in entries.chunks_exact(entry_size).enumerate() {
        let type_guid = guid_at(e, 0);
        if type_guid.0 == [0; 16] {
            continue;
        }
        let units: Vec<u16> = e
            .get(56..128)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|u| *u != 0)
            .collect();
        out.push(GptEntry {
            number: u32::try_from(i + 1).unwrap_or(u32::MAX),
            type_guid,
            guid: guid_at(e, 16),
            first_lba: le64(e, 32),
            last_lba: le64(e, 40),
            label: String::from_utf16_lossy(&units),
        });
    }
    Ok(out)
}

/// The partitions a disk boot needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The root (verity data device).
    pub root: BlockDev,
    /// The verity hash device.
    pub verity: BlockDev,
    /// The state partition, if the disk has one.
    pub state: Option<BlockDev>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn dev_number(dir: &Path) -> Option<(u64, u64)> {
    let text = read_trimmed(&dir.join("dev"))?;
    let (ma, mi) = text.split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

/// A candidate partition: its GPT entry and its block device.
type Candidate = (GptEntry, BlockDev);

/// Every GPT partition of every disk under `class_block` (`/sys/class/block`), the disks read
/// through `dev` (`/dev`). Disks without a readable GPT are skipped.
#[must_use]
pub fn scan(class_block: &Path, dev: &Path) -> Vec<Candidate> {
    let mut names: Vec<String> = fs::read_dir(class_block)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for disk in names {
        let dir = class_block.join(&disk);
        if dir.join("partition").exists() {
            continue;
        }
        let sector = read_trimmed(&dir.join("queue/logical_block_size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(512);
        let entries = match read_gpt(&dev.join(&disk), sector) {
            Ok(e) => e,
            Err(err) => {
                tracing::debug!("{disk}: {err}");
                continue;
            }
        };
        // The partitions are subdirectories of the disk's directory with a `partition` file.
        let mut parts: Vec<(u32, BlockDev)> = Vec::new();
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.filter_map(Result::ok) {
                let p = e.path();
                let Some(number) = read_trimmed(&p.join("partition")).and_then(|s| s.parse().ok())
                else {
                    continue;
                };
                let Some((major, minor)) = dev_number(&p) else {
                    continue;
                };
                parts.push((
                    number,
                    BlockDev {
                        name: e.file_name().to_string_lossy().into_owned(),
                        major,
                        minor,
                    },
                ));
            }
        }
        for entry in entries {
            if let Some((_, b)) = parts.iter().find(|(n, _)| *n == entry.number) {
                out.push((entry, b.clone()));
            }
        }
    }
    out
}

fn pick(
    candidates: &[Candidate],
    type_guid: &str,
    label: &str,
    guid: Option<Guid>,
    what: &'static str,
) -> Result<Option<BlockDev>, DiskError> {
    let ty = Guid::parse(type_guid);
    let matching: Vec<&Candidate> = candidates
        .iter()
        .filter(|(e, _)| Some(e.type_guid) == ty && e.label == label)
        .collect();
    match matching.as_slice() {
        [] => Ok(None),
        [(_, b)] => Ok(Some(b.clone())),
        more => {
            let by_guid: Vec<&&Candidate> = more
                .iter()
                .filter(|(e, _)| guid.is_some() && Some(e.guid) == guid)
                .collect();
            match by_guid.as_slice() {
                [(_, b)] => Ok(Some(b.clone())),
                _ => Err(DiskError::Ambiguous {
                    what,
                    count: more.len(),
                }),
            }
        }
    }
}

/// Chooses the root, verity and state partitions among `candidates` by type GUID and label;
/// when several match, the root and verity partitions whose GUIDs are the two halves of
/// `root_hash` (how the image builder names them). `Ok(None)` while root or verity is missing.
///
/// # Errors
/// Several partitions match and none is singled out.
pub fn choose(candidates: &[Candidate], root_hash: &str) -> Result<Option<Found>, DiskError> {
    let root_guid = root_hash.get(..32).and_then(Guid::from_digest_hex);
    let verity_guid = root_hash.get(32..).and_then(Guid::from_digest_hex);
    let root = pick(
        candidates,
        kinds::ROOT_TYPE,
        kinds::ROOT_LABEL,
        root_guid,
        "root",
    )?;
    let verity = pick(
        candidates,
        kinds::VERITY_TYPE,
        kinds::VERITY_LABEL,
        verity_guid,
        "root verity",
    )?;
    let state = pick(
        candidates,
        kinds::STATE_TYPE,
        kinds::STATE_LABEL,
        None,
        "state",
    )?;
    Ok(match (root, verity) {
        (Some(root), Some(verity)) => Some(Found {
            root,
            verity,
            state,
        }),
        _ => None,
    })
}

/// Scans until the root and verity partitions are there (or `wait` passes).
///
/// # Errors
/// Not found in time, or ambiguous.
pub fn find_partitions(
    class_block: &Path,
    dev: &Path,
    root_hash: &str,
    wait: Duration,
) -> Result<Found, DiskError> {
    let started = Instant::now();
    loop {
        let candidates = scan(class_block, dev);
        if let Some(found) = choose(&candidates, root_hash)? {
            return Ok(found);
        }
        if started.elapsed() >= wait {
            let has_root = candidates.iter().any(|(e, _)| e.label == kinds::ROOT_LABEL);
            return Err(DiskError::NotFound {
                what: if has_root { "root verity" } else { "root" },
                secs: wait.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The state device named by stage 0 in stage 1's arguments.
pub fn state_from_args(args: impl Iterator<Item = OsString>) -> Option<PathBuf> {
    args.skip(1)
        .filter_map(|a| a.into_string().ok())
        .find_map(|a| a.strip_prefix(STATE_ARG).map(PathBuf::from))
        .filter(|p| p.starts_with("/dev/"))
}

/// The mount plan with the state partition at `/var`, when there is one: `/var` becomes the
/// ext4 state (`nosuid,nodev,noexec`); `/var/log` a bind mount of the directory on it (same
/// flags, so services may name it in `writable_paths`); `/var/lib/containerd`, when
/// `containerd_on_state` (`[containerd] state = "disk"`), a bind mount of the directory on it
/// remounted `nosuid,nodev` with exec (container root file systems run from there), else its
/// tmpfs row stays. `/var/tmp` stays a tmpfs.
#[must_use]
pub fn with_state(
    plan: Vec<MountSpec>,
    state: Option<&Path>,
    containerd_on_state: bool,
) -> Vec<MountSpec> {
    let Some(device) = state else {
        return plan;
    };
    let nosuid_nodev = MountFlags::NOSUID.union(MountFlags::NODEV);
    let bind = |spec: MountSpec, flags: MountFlags| MountSpec {
        source: spec.target.to_string_lossy().into_owned(),
        target: spec.target,
        // Ignored by a bind mount; what /proc/self/mountinfo shows for it.
        fstype: STATE_FSTYPE.to_owned(),
        flags: flags.union(MountFlags::BIND),
        data: String::new(),
    };
    plan.into_iter()
        .map(|spec| match spec.target.to_str() {
            Some("/var") => MountSpec {
                source: device.to_string_lossy().into_owned(),
                target: spec.target,
                fstype: STATE_FSTYPE.to_owned(),
                flags: nosuid_nodev.union(MountFlags::NOEXEC),
                data: "errors=remount-ro".to_owned(),
            },
            Some("/var/log") => bind(spec, nosuid_nodev.union(MountFlags::NOEXEC)),
            Some("/var/lib/containerd") if containerd_on_state => bind(spec, nosuid_nodev),
            _ => spec,
        })
        .collect()
}

/// The mount plan of the running boot as an observer (the audit) sees it: the base plan,
/// with the state rows of [`with_state`] when `<proc>/cmdline` names a verity root (a disk
/// boot, which always has a state partition: stage 0 refuses to boot without one). Only the
/// state device's name is unknown here; the audit compares types and flags.
#[must_use]
pub fn expected_plan(cfg: &rampart_config::HostConfig, proc: &Path) -> Vec<MountSpec> {
    let disk = fs::read_to_string(proc.join("cmdline"))
        .ok()
        .and_then(|c| parse_cmdline(&c).ok().flatten())
        .is_some();
    with_state(
        crate::mount::plan(cfg),
        disk.then_some(Path::new("/dev/state")),
        containerd_on_state(cfg),
    )
}

/// Whether `/var/lib/containerd` goes on the state partition (`[containerd] state = "disk"`).
#[must_use]
pub fn containerd_on_state(cfg: &rampart_config::HostConfig) -> bool {
    cfg.containerd.state == rampart_config::containerd::StateStorage::Disk
}

fn mount(
    source: &str,
    target: &str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), DiskError> {
    let _ = fs::create_dir_all(target);
    nix::mount::mount(Some(source), target, Some(fstype), flags, data).map_err(|source| {
        DiskError::Mount {
            target: PathBuf::from(target),
            fstype,
            source,
        }
    })
}

fn read_cmdline() -> Result<String, DiskError> {
    let path = Path::new("/proc/cmdline");
    fs::read_to_string(path).map_err(|source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn mknod_block(path: &Path, major: u64, minor: u64, kind: SFlag) -> Result<(), DiskError> {
    if let Some(parent) = path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    match nix::sys::stat::mknod(
        path,
        kind,
        Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major, minor),
    ) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(source) => Err(DiskError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Opens `/dev/mapper/control`, waiting briefly for devtmpfs and creating the node if needed.
fn control() -> Result<Control, DiskError> {
    let path = Path::new(dm::CONTROL);
    for _ in 0..40 {
        if path.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    if !path.exists() {
        mknod_block(path, dm::CONTROL_DEV.0, dm::CONTROL_DEV.1, SFlag::S_IFCHR)?;
    }
    Ok(Control::open(path)?)
}

/// Sets up `/dev/mapper/root` and returns its (major, minor).
///
/// # Errors
/// A device-mapper call fails (the kernel log says why).
pub fn setup_verity(p: &VerityParams, found: &Found) -> Result<(u64, u64), DiskError> {
    let ctl = control()?;
    let number = ctl.create(DM_NAME)?;
    let target = verity_target(p, &found.root, &found.verity);
    tracing::info!(
        "dm-verity table: {} {} verity {}",
        target.start,
        target.length,
        target.params
    );
    let activated = ctl
        .load(DM_NAME, &[target], true)
        .and_then(|()| ctl.resume(DM_NAME));
    if let Err(err) = activated {
        let _ = ctl.remove(DM_NAME);
        return Err(err.into());
    }
    mknod_block(Path::new(ROOT_DEVICE), number.0, number.1, SFlag::S_IFBLK)?;
    Ok(number)
}

/// Removes what is left of the initramfs under `dir` (files on the same device as `dir`,
/// not entering other mounts), as `switch_root` does, to free its memory. Best effort.
fn remove_initramfs(dir: &Path, device: u64) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.dev() != device {
            continue;
        }
        if meta.is_dir() {
            remove_initramfs(&p, device);
            let _ = fs::remove_dir(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
}

/// The disk variant of stage 0. `Ok(())` when the command line asks for no verity root (an
/// initramfs boot: the caller goes on with [`crate::switchroot::stage0`]); otherwise it execs
/// stage 1 on the verified root and returns only on error.
///
/// # Errors
/// The step that failed; the caller prints it and runs the failure action.
pub fn stage0() -> Result<(), DiskError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount("proc", "/proc", "proc", nosuid_nodev_noexec, None)?;
    let Some(params) = parse_cmdline(&read_cmdline()?)? else {
        let _ = nix::mount::umount2("/proc", MntFlags::MNT_DETACH);
        return Ok(());
    };
    mount("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None)?;
    mount(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )?;
    let modules = kmod::read_list(Path::new(rampart_config::IMAGE_MODULES_PATH))?;
    let report = kmod::load_all(&modules)?;
    tracing::info!(
        "disk: {} modules loaded, {} already present",
        report.loaded.len(),
        report.present.len()
    );
    let found = find_partitions(
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        &params.root_hash,
        WAIT,
    )?;
    tracing::info!(
        "disk: root {} verity {} state {}",
        found.root.name,
        found.verity.name,
        found.state.as_ref().map_or("none", |s| s.name.as_str())
    );
    let Some(state) = found.state.clone() else {
        return Err(DiskError::NotFound {
            what: "state",
            secs: 0,
        });
    };
    setup_verity(&params, &found)?;
    mount(
        ROOT_DEVICE,
        SYSROOT,
        ROOT_FSTYPE,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    for m in ["/dev", "/sys", "/proc"] {
        if let Err(err) = nix::mount::umount2(m, MntFlags::MNT_DETACH) {
            tracing::debug!("unmount {m}: {err}");
        }
    }
    if let Ok(meta) = fs::symlink_metadata("/") {
        remove_initramfs(Path::new("/"), meta.dev());
    }
    let switch = |step, path: &str| {
        let path = PathBuf::from(path);
        move |source| DiskError::Switch { step, path, source }
    };
    nix::unistd::chdir(SYSROOT).map_err(switch("chdir", SYSROOT))?;
    nix::mount::mount::<str, str, str, str>(Some("."), "/", None, MsFlags::MS_MOVE, None)
        .map_err(switch("move", SYSROOT))?;
    nix::unistd::chroot(".").map_err(switch("chroot", SYSROOT))?;
    nix::unistd::chdir("/").map_err(switch("chdir", "/"))?;
    let init: &CStr = crate::switchroot::STAGE1;
    let mut argv: Vec<CString> = vec![init.to_owned()];
    if let Ok(arg) = CString::new(format!("{STATE_ARG}/dev/{}", state.name)) {
        argv.push(arg);
    }
    let no_env: [&CStr; 0] = [];
    let errno = match nix::unistd::execve(init, &argv, &no_env) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    Err(DiskError::Exec { source: errno })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "a829f4beb084daf1dd8e499e3d0fb0bcc81c575f6371cc8e8ce186fe8ff22743";

    #[test]
    fn cmdline_table() {
        let base = format!(
            "console=ttyS0 rampart.verity_root_hash={HASH} rampart.verity_salt=c7ce rampart.verity_data_blocks=2357"
        );
        let p = parse_cmdline(&base).unwrap().unwrap();
        assert_eq!(p.root_hash, HASH);
        assert_eq!(p.salt, "c7ce");
        assert_eq!(p.data_blocks, 2357);
        assert_eq!(p.error, ErrorMode::Panic);
        let cases: &[(&str, Option<ErrorMode>)] = &[
            (" rampart.verity_error=restart", Some(ErrorMode::Restart)),
            (" rampart.verity_error=eio", Some(ErrorMode::Eio)),
            (" rampart.verity_error=panic", Some(ErrorMode::Panic)),
            (" rampart.verity_error=ignore", None),
        ];
        for (extra, want) in cases {
            let got = parse_cmdline(&format!("{base}{extra}"));
            match want {
                Some(mode) => assert_eq!(got.unwrap().unwrap().error, *mode, "{extra}"),
                None => assert!(got.is_err(), "{extra}"),
            }
        }
        assert_eq!(parse_cmdline("console=ttyS0 panic=-1").unwrap(), None);
        for bad in [
            "rampart.verity_root_hash=xyz rampart.verity_salt=00 rampart.verity_data_blocks=1",
            &format!("rampart.verity_root_hash={HASH} rampart.verity_data_blocks=1"),
            &format!("rampart.verity_root_hash={HASH} rampart.verity_salt=0 rampart.verity_data_blocks=1"),
            &format!("rampart.verity_root_hash={HASH} rampart.verity_salt=00 rampart.verity_data_blocks=0"),
            &format!("rampart.verity_root_hash={HASH} rampart.verity_salt=00"),
        ] {
            assert!(parse_cmdline(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verity_table_line() {
        let p = parse_cmdline(&format!(
            "rampart.verity_root_hash={HASH} rampart.verity_salt=00ff rampart.verity_data_blocks=3"
        ))
        .unwrap()
        .unwrap();
        let dev = |name: &str, minor| BlockDev {
            name: name.into(),
            major: 254,
            minor,
        };
        let t = verity_target(&p, &dev("vda2", 2), &dev("vda3", 3));
        assert_eq!(t.length, 24);
        assert_eq!(t.kind, "verity");
        assert_eq!(
            t.params,
            format!("1 254:2 254:3 4096 4096 3 1 sha256 {HASH} 00ff 1 panic_on_corruption")
        );
        let eio = VerityParams {
            error: ErrorMode::Eio,
            ..p.clone()
        };
        assert!(verity_target(&eio, &dev("a", 1), &dev("b", 2))
            .params
            .ends_with("00ff"));
        let restart = VerityParams {
            error: ErrorMode::Restart,
            ..p
        };
        assert!(verity_target(&restart, &dev("a", 1), &dev("b", 2))
            .params
            .ends_with(" 1 restart_on_corruption"));
    }

    /// A minimal GPT image written by hand (the image builder's writer lives in another
    /// crate): entries (type, guid, label) at 1 MiB steps.
    fn gpt_image(path: &Path, parts: &[(&str, Guid, &str)]) {
        let mut entries = vec![0u8; 128 * 128];
        for (i, (ty, guid, label)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            let to_disk = |g: Guid| {
                let mut d = g.0;
                d.swap(0, 3);
                d.swap(1, 2);
                d.swap(4, 5);
                d.swap(6, 7);
                d
            };
            e[0..16].copy_from_slice(&to_disk(Guid::parse(ty).unwrap()));
            e[16..32].copy_from_slice(&to_disk(*guid));
            e[32..40].copy_from_slice(&(2048u64 * (i as u64 + 1)).to_le_bytes());
            e[40..48].copy_from_slice(&(2048u64 * (i as u64 + 2) - 1).to_le_bytes());
            for (j, u) in label.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let mut h = vec![0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        let mut img = vec![0u8; 512];
        img.extend(h);
        img.extend(entries);
        fs::write(path, img).unwrap();
    }

    fn fake_sys(root: &Path, disk: &str, parts: &[(u32, &str, u64)]) {
        let d = root.join("class/block").join(disk);
        fs::create_dir_all(d.join("queue")).unwrap();
        fs::write(d.join("queue/logical_block_size"), "512\n").unwrap();
        fs::write(d.join("dev"), "254:0\n").unwrap();
        for (n, name, minor) in parts {
            fs::create_dir_all(d.join(name)).unwrap();
            fs::write(d.join(name).join("partition"), format!("{n}\n")).unwrap();
            fs::write(d.join(name).join("dev"), format!("254:{minor}\n")).unwrap();
            std::os::unix::fs::symlink(d.join(name), root.join("class/block").join(name)).unwrap();
        }
    }

    #[test]
    fn partitions_are_found_by_type_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        fs::create_dir_all(&dev).unwrap();
        let root_guid = Guid::from_digest_hex(&HASH[..32]).unwrap();
        let verity_guid = Guid::from_digest_hex(&HASH[32..]).unwrap();
        let other = Guid([7; 16]);
        gpt_image(
            &dev.join("vda"),
            &[
                ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", other, "esp"),
                (kinds::ROOT_TYPE, root_guid, kinds::ROOT_LABEL),
                (kinds::VERITY_TYPE, verity_guid, kinds::VERITY_LABEL),
                (kinds::STATE_TYPE, other, kinds::STATE_LABEL),
            ],
        );
        let sys = dir.path().join("sys");
        fake_sys(
            &sys,
            "vda",
            &[
                (1, "vda1", 1),
                (2, "vda2", 2),
                (3, "vda3", 3),
                (4, "vda4", 4),
            ],
        );
        let entries = read_gpt(&dev.join("vda"), 512).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].label, kinds::ROOT_LABEL);
        assert_eq!(entries[1].guid, root_guid);
        assert_eq!(entries[1].first_lba, 4096);
        let found = find_partitions(&sys.join("class/block"), &dev, HASH, Duration::ZERO).unwrap();
        assert_eq!(found.root.name, "vda2");
        assert_eq!(found.root.number(), "254:2");
        assert_eq!(found.verity.name, "vda3");
        assert_eq!(found.state.unwrap().name, "vda4");

        // A second disk with another root: the GUID from the root hash decides.
        gpt_image(
            &dev.join("vdb"),
            &[
                (kinds::ROOT_TYPE, other, kinds::ROOT_LABEL),
                (kinds::VERITY_TYPE, other, kinds::VERITY_LABEL),
            ],
        );
        fake_sys(&sys, "vdb", &[(1, "vdb1", 17), (2, "vdb2", 18)]);
        let found = find_partitions(&sys.join("class/block"), &dev, HASH, Duration::ZERO).unwrap();
        assert_eq!(found.root.name, "vda2");
        // A wrong label is not a root; nothing found is an error naming what is missing.
        let err = find_partitions(
            &sys.join("class/block"),
            &dev,
            &"0".repeat(64),
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(err, DiskError::Ambiguous { .. }), "{err}");
        fs::remove_file(dev.join("vdb")).unwrap();
        fs::remove_file(dev.join("vda")).unwrap();
        let err =
            find_partitions(&sys.join("class/block"), &dev, HASH, Duration::ZERO).unwrap_err();
        assert!(
            matches!(err, DiskError::NotFound { what: "root", .. }),
            "{err}"
        );
    }

    #[test]
    fn gpt_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        fs::write(&p, vec![0u8; 4096]).unwrap();
        assert!(read_gpt(&p, 512)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        gpt_image(&p, &[(kinds::ROOT_TYPE, Guid([1; 16]), "x")]);
        let mut bytes = fs::read(&p).unwrap();
        bytes[1024 + 60] ^= 1;
        fs::write(&p, &bytes).unwrap();
        assert!(read_gpt(&p, 512)
            .unwrap_err()
            .to_string()
            .contains("entry array crc"));
        assert!(read_gpt(&dir.path().join("absent"), 512).is_err());
    }

    #[test]
    fn guid_helpers() {
        let g = Guid::parse(kinds::ROOT_TYPE).unwrap();
        assert_eq!(g.0[0], 0x4f);
        assert!(Guid::parse("4f68bce3e8cd4db196e7fbcaf984b709").is_none());
        // The same derivation as the image builder: version 4, RFC 4122 variant.
        let d = Guid::from_digest_hex(&HASH[..32]).unwrap();
        assert_eq!(d.0[6] >> 4, 4);
        assert_eq!(d.0[8] >> 6, 2);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn observers_expect_the_state_rows_on_a_disk_boot() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = rampart_config::parse("", Path::new("/x/host.toml")).unwrap();
        fs::write(dir.path().join("cmdline"), "console=ttyS0\n").unwrap();
        assert_eq!(expected_plan(&cfg, dir.path()), crate::mount::plan(&cfg));
        fs::write(
            dir.path().join("cmdline"),
            format!("rampart.verity_root_hash={HASH} rampart.verity_salt=00 rampart.verity_data_blocks=1\n"),
        )
        .unwrap();
        let p = expected_plan(&cfg, dir.path());
        let var = p.iter().find(|m| m.target == Path::new("/var")).unwrap();
        assert_eq!(var.fstype, "ext4");
    }

    #[test]
    fn state_argument_and_plan() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        assert_eq!(
            state_from_args(args(&["/sbin/init", "rampart.state=/dev/vda4"])),
            Some(PathBuf::from("/dev/vda4"))
        );
        assert_eq!(state_from_args(args(&["/sbin/init"])), None);
        assert_eq!(state_from_args(args(&["rampart.state=/dev/vda4"])), None);
        assert_eq!(
            state_from_args(args(&["/sbin/init", "rampart.state=/etc/x"])),
            None
        );

        let plan = crate::mount::plan_with_sizes(crate::mount::Sizes {
            run: 1 << 20,
            tmp: 1 << 20,
            var: 1 << 20,
        });
        assert_eq!(with_state(plan.clone(), None, true), plan);
        let s = with_state(plan.clone(), Some(Path::new("/dev/vda4")), true);
        let at = |s: &[MountSpec], t: &str| s.iter().find(|m| m.target == Path::new(t)).cloned();
        let var = at(&s, "/var").unwrap();
        assert_eq!(
            (var.source.as_str(), var.fstype.as_str()),
            ("/dev/vda4", "ext4")
        );
        assert_eq!(
            var.flags.mountinfo_options(),
            "rw,nosuid,nodev,noexec,relatime"
        );
        let log = at(&s, "/var/log").unwrap();
        assert!(log.flags.contains(MountFlags::BIND));
        assert_eq!(
            log.flags.mountinfo_options(),
            "rw,nosuid,nodev,noexec,relatime"
        );
        let c = at(&s, "/var/lib/containerd").unwrap();
        assert!(c.flags.contains(MountFlags::BIND));
        assert_eq!(c.source, "/var/lib/containerd");
        assert_eq!(c.flags.mountinfo_options(), "rw,nosuid,nodev,relatime");
        assert_eq!(at(&s, "/var/tmp").unwrap().fstype, "tmpfs");
        // Order kept: /var before what is below it.
        let pos = |t: &str| s.iter().position(|m| m.target == Path::new(t)).unwrap();
        assert!(pos("/var") < pos("/var/tmp") && pos("/var") < pos("/var/lib/containerd"));
        assert_eq!(s.len(), plan.len());
        // containerd on its tmpfs: that row stays.
        let t = with_state(plan.clone(), Some(Path::new("/dev/vda4")), false);
        assert_eq!(
            at(&t, "/var/lib/containerd"),
            at(&plan, "/var/lib/containerd")
        );
    }
}
