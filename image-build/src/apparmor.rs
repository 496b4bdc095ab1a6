//! AppArmor profiles compiled at image build time.
//!
//! The profiles are data in `image-build/apparmor/` (embedded in this binary):
//! `rampart-default` (every container that names no profile) and `rampart-containerd` (the
//! containerd service, its shims and runc). When `apparmor` is in `[hardening] lsm`,
//! [`add_to_archive`] runs Debian's `apparmor_parser` (package `apparmor`) on the build
//! machine, compiling for the guest kernel's feature set (`features-debian-6.1`, captured
//! from `/sys/kernel/security/apparmor/features` of Debian's 6.1 kernel booted by rampart),
//! not the build machine's, and puts each binary policy at
//! `/etc/rampart/apparmor/NAME.bin`; `rampart-init` loads them at boot through securityfs.
//! The parser never runs on the host at run time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rampart_config::hardening::IMAGE_APPARMOR_DIR;
use rampart_config::HostConfig;

use crate::build::BuildError;
use crate::cpio::{Archive, FileData};

/// The profiles: (name, source text). The name is the profile's name inside the source.
pub const PROFILES: &[(&str, &str)] = &[
    (
        "rampart-default",
        include_str!("../apparmor/rampart-default"),
    ),
    (
        "rampart-containerd",
        include_str!("../apparmor/rampart-containerd"),
    ),
];

/// The AppArmor feature set of the guest kernel (Debian's 6.1), in the flattened format of
/// `apparmor_parser --kernel-features`.
pub const GUEST_FEATURES: &str = include_str!("../apparmor/features-debian-6.1");

/// The environment variable naming the parser (default: `apparmor_parser` in `/usr/sbin`,
/// `/sbin` or `PATH`).
pub const PARSER_ENV: &str = "RAMPART_APPARMOR_PARSER";

/// Errors of compiling the profiles.
#[derive(Debug, thiserror::Error)]
pub enum AppArmorError {
    /// No `apparmor_parser` on the build machine.
    #[error("apparmor_parser not found (apt-get install apparmor, set {PARSER_ENV}, or remove apparmor from [hardening] lsm)")]
    NoParser,
    /// The scratch folder could not be written.
    #[error("write {}: {source}", path.display())]
    Scratch {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The parser could not be run.
    #[error("run {}: {source}", path.display())]
    Spawn {
        /// The parser.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The parser rejected a profile.
    #[error("apparmor_parser failed on profile {profile} ({status}): {stderr}")]
    Compile {
        /// The profile.
        profile: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
}

/// Whether the image carries AppArmor profiles: `apparmor` is a required LSM.
pub fn wanted(cfg: &HostConfig) -> bool {
    cfg.hardening.lsm.iter().any(|l| l == "apparmor")
}

/// Where profile `name` goes in the image.
pub fn image_path(name: &str) -> PathBuf {
    Path::new(IMAGE_APPARMOR_DIR).join(format!("{name}.bin"))
}

/// The parser: `$RAMPART_APPARMOR_PARSER`, else the first `apparmor_parser` found.
pub fn find_parser() -> Result<PathBuf, AppArmorError> {
    if let Some(p) = std::env::var_os(PARSER_ENV) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join("apparmor_parser"))
        .find(|p| p.is_file())
        .ok_or(AppArmorError::NoParser)
}

/// The parser's arguments to compile one profile read from stdin to stdout, for the
/// feature set in `features`, without touching the build machine's kernel or cache.
pub fn parser_args(features: &Path) -> Vec<String> {
    let f = features.to_string_lossy().into_owned();
    vec![
        "--skip-kernel-load".into(),
        "--skip-cache".into(),
        "--quiet".into(),
        format!("--kernel-features={f}"),
        format!("--policy-features={f}"),
        "--stdout".into(),
    ]
}

/// Compiles `source` (profile `name`) with `parser` for the feature set in `features`.
pub fn compile(
    parser: &Path,
    features: &Path,
    name: &str,
    source: &str,
) -> Result<Vec<u8>, AppArmorError> {
    use std::io::Write as _;
    let spawn = |source| AppArmorError::Spawn {
        path: parser.to_path_buf(),
        source,
    };
    let mut child = Command::new(parser)
        .args(parser_args(features))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(source.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(AppArmorError::Compile {
            profile: name.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// Compiles every profile of [`PROFILES`] for the guest kernel: (name, binary policy).
pub fn compile_all() -> Result<Vec<(String, Vec<u8>)>, AppArmorError> {
    let parser = find_parser()?;
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rampart-apparmor-{}-{seq}", std::process::id()));
    let scratch = |source| AppArmorError::Scratch {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(scratch)?;
    let features = dir.join("features");
    let result = std::fs::write(&features, GUEST_FEATURES)
        .map_err(scratch)
        .and_then(|()| {
            PROFILES
                .iter()
                .map(|(name, text)| {
                    Ok(((*name).to_owned(), compile(&parser, &features, name, text)?))
                })
                .collect()
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Adds `/etc/rampart/apparmor/NAME.bin` for every profile when the host file at `config`
/// requires AppArmor.
pub fn add_to_archive(a: &mut Archive, config: &Path) -> Result<(), BuildError> {
    let cfg = rampart_config::load(config)?;
    if !wanted(&cfg) {
        return Ok(());
    }
    let compiled = compile_all()?;
    tracing::info!(profiles = compiled.len(), "apparmor profiles compiled");
    for (name, blob) in compiled {
        a.add_file(&image_path(&name), 0o644, FileData::Bytes(blob))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_name_themselves() {
        for (name, text) in PROFILES {
            assert!(
                text.contains(&format!("profile {name} ")),
                "{name} is not declared in its source"
            );
        }
        assert!(GUEST_FEATURES.contains("domain {"));
        assert_eq!(
            image_path("rampart-default"),
            Path::new("/etc/rampart/apparmor/rampart-default.bin")
        );
    }

    #[test]
    fn default_profile_denies_what_the_issue_lists() {
        let (_, text) = PROFILES[0];
        for rule in [
            "deny /proc/sys/** w",
            "deny /sys/** w",
            "deny mount,",
            "deny umount,",
            "deny pivot_root,",
            "deny ptrace (trace),",
            "deny network inet raw,",
            "deny network packet,",
        ] {
            assert!(text.contains(rule), "rampart-default lacks {rule:?}");
        }
    }

    #[test]
    fn compiles_with_the_parser_when_present() {
        if find_parser().is_err() {
            eprintln!("skipped: no apparmor_parser (apt-get install apparmor)");
            return;
        }
        let all = compile_all().unwrap();
        assert_eq!(all.len(), PROFILES.len());
        for (name, blob) in &all {
            assert!(blob.len() > 100, "{name}: {} bytes", blob.len());
        }
    }
}
