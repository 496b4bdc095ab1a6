//! The build-host tools a disk image needs, run with fixed times, UUIDs and seeds so their
//! output is reproducible: `mksquashfs` (root), `mkfs.fat` + `mtools` (ESP), `mkfs.ext4`
//! (state). Each returns a [`ToolError`] naming the program and its error output.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of the external tools.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started.
    #[error("cannot run {program}: {source} (install it: {package})")]
    Spawn {
        /// The program.
        program: String,
        /// The Debian package providing it.
        package: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The program failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// Its error output.
        stderr: String,
    },
    /// A scratch file could not be prepared.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether `program` is found in `PATH` (or `/usr/sbin`, `/sbin`).
pub fn have(program: &str) -> bool {
    find(program).is_some()
}

/// `program` in `PATH`, `/usr/sbin` or `/sbin`.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A command for `program`, found in `PATH` or the sbin directories.
fn tool(program: &str) -> Command {
    Command::new(find(program).unwrap_or_else(|| PathBuf::from(program)))
}

fn run(mut cmd: Command, program: &str, package: &'static str) -> Result<String, ToolError> {
    tracing::debug!("running {cmd:?}");
    let out = cmd.output().map_err(|source| ToolError::Spawn {
        program: program.to_string(),
        package,
        source,
    })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            program: program.to_string(),
            status: out.status.to_string(),
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `mksquashfs DIR OUT` with zstd (level 3), root ownership, every time set to `mtime`, no xattrs,
/// and `pseudo` definitions (device nodes), e.g. `dev/console c 0600 0 0 5 1`.
pub fn mksquashfs(dir: &Path, out: &Path, mtime: u32, pseudo: &[String]) -> Result<(), ToolError> {
    let _ = std::fs::remove_file(out);
    let mut cmd = tool("mksquashfs");
    cmd.arg(dir).arg(out).args([
        "-noappend",
        "-all-root",
        "-no-xattrs",
        "-comp",
        "zstd",
        // Level 3: a tenth of a second per 10 MB; the default (15) is 30 times slower for
        // a root 13% smaller.
        "-Xcompression-level",
        "3",
        "-b",
        "131072",
        "-quiet",
        "-no-progress",
    ]);
    cmd.args([
        "-mkfs-time",
        &mtime.to_string(),
        "-all-time",
        &mtime.to_string(),
    ]);
    for p in pseudo {
        cmd.arg("-p").arg(p);
    }
    cmd.env_remove("SOURCE_DATE_EPOCH");
    run(cmd, "mksquashfs", "squashfs-tools").map(|_| ())
}

/// A FAT32 ESP of `size` bytes at `out` holding `files` (image path, host file), every
/// timestamp `mtime`, volume id `volume_id`.
pub fn make_esp(
    out: &Path,
    size: u64,
    volume_id: u32,
    files: &[(&str, &Path)],
    mtime: u32,
) -> Result<(), ToolError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ToolError::Io { path, source }
    };
    let _ = std::fs::remove_file(out);
    let f = std::fs::File::create(out).map_err(io(out))?;
    f.set_len(size).map_err(io(out))?;
    drop(f);
    let mut cmd = tool("mkfs.fat");
    cmd.args([
        "-F",
        "32",
        "-S",
        "512",
        "-s",
        "1",
        "-n",
        "ESP",
        "--invariant",
    ])
    .args(["-i", &format!("{volume_id:08X}")])
    .arg(out);
    run(cmd, "mkfs.fat", "dosfstools")?;
    let epoch = mtime.max(315_532_800).to_string(); // FAT cannot go before 1980
    let mut dirs: Vec<String> = Vec::new();
    for (image, _) in files {
        let mut acc = String::new();
        let parts: Vec<&str> = image.trim_start_matches('/').split('/').collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            acc.push('/');
            acc.push_str(part);
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
            }
        }
    }
    for d in &dirs {
        let mut cmd = tool("mmd");
        cmd.env("SOURCE_DATE_EPOCH", &epoch)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(out)
            .arg(format!("::{d}"));
        run(cmd, "mmd", "mtools")?;
    }
    for (image, host) in files {
        let t = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(epoch.parse().unwrap_or(315_532_800));
        std::fs::File::options()
            .write(true)
            .open(host)
            .and_then(|f| f.set_modified(t))
            .map_err(io(host))?;
        let mut cmd = tool("mcopy");
        cmd.env("SOURCE_DATE_EPOCH", &epoch)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-m")
            .arg("-i")
            .arg(out)
            .arg(host)
            .arg(format!("::{image}"));
        run(cmd, "mcopy", "mtools")?;
    }
    Ok(())
}

/// An empty ext4 file system of `size` bytes at `out`, with a fixed UUID and directory hash
/// seed, root-owned, its times `mtime` (`E2FSPROGS_FAKE_TIME`), inode tables and journal
/// written out now (no lazy init, which would make the first boot write them).
pub fn make_ext4(
    out: &Path,
    size: u64,
    uuid: &str,
    label: &str,
    mtime: u32,
) -> Result<(), ToolError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ToolError::Io { path, source }
    };
    let _ = std::fs::remove_file(out);
    let f = std::fs::File::create(out).map_err(io(out))?;
    f.set_len(size).map_err(io(out))?;
    drop(f);
    let mut cmd = tool("mkfs.ext4");
    cmd.env("E2FSPROGS_FAKE_TIME", mtime.max(1).to_string())
        .env("MKE2FS_CONFIG", "/etc/mke2fs.conf")
        .args(["-q", "-F", "-L", label, "-U", uuid, "-b", "4096"])
        .arg("-E")
        .arg(format!(
            "root_owner=0:0,hash_seed={uuid},lazy_itable_init=0,lazy_journal_init=0,nodiscard"
        ))
        .arg(out);
    run(cmd, "mkfs.ext4", "e2fsprogs").map(|_| ())
}

/// `qemu-img convert -f raw -O qcow2 RAW QCOW2`.
pub fn qcow2(raw: &Path, out: &Path) -> Result<(), ToolError> {
    let mut cmd = tool("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out);
    run(cmd, "qemu-img", "qemu-utils").map(|_| ())
}
