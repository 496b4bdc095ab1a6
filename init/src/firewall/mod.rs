//! The host firewall: a default-deny nftables ruleset, planned from `[firewall]`, rendered as
//! `nft` text, and applied over nf_tables netlink as one atomic batch (no `nft` binary).
//!
//! Boot calls [`plan`] then [`apply`] before any interface other than loopback is up, and
//! writes [`render`]'s text to `/run/rampart/firewall.nft` ([`write_rendering`]). A failing
//! [`apply`] leaves whatever ruleset was there before (on a fresh boot: none, so boot must treat
//! it as fatal and keep interfaces down).

pub mod netlink;
#[cfg(test)]
mod netns_tests;
pub mod plan;
pub mod readback;
pub mod render;

pub use netlink::NetlinkError;
pub use plan::{required_modules, Ruleset};

use rampart_config::HostConfig;
use std::path::{Path, PathBuf};

/// The rendering's file name under the run directory (`/run/rampart`).
pub const RENDERING_FILE: &str = "firewall.nft";

/// Why the firewall could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The kernel refused the ruleset, or netlink failed.
    #[error("apply firewall: {0}")]
    Apply(#[from] NetlinkError),
    /// The rendering could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Plans the ruleset of a host.
pub fn plan(cfg: &HostConfig) -> Ruleset {
    plan::plan(&cfg.firewall)
}

/// Renders a ruleset as `nft` text (what `nft list ruleset` prints once it is applied).
pub fn render(rs: &Ruleset) -> String {
    render::render(rs)
}

/// Applies a ruleset in the calling thread's network namespace, replacing the `rampart` table
/// atomically.
pub fn apply(rs: &Ruleset) -> Result<(), FirewallError> {
    let started = std::time::Instant::now();
    netlink::apply(rs)?;
    tracing::info!(
        rules = rs.rule_count(),
        micros = started.elapsed().as_micros() as u64,
        "firewall applied"
    );
    Ok(())
}

/// Writes the rendering to `run_dir/firewall.nft` (mode 0644) and returns the path.
pub fn write_rendering(rs: &Ruleset, run_dir: &Path) -> Result<PathBuf, FirewallError> {
    let path = run_dir.join(RENDERING_FILE);
    std::fs::write(&path, render(rs)).map_err(|source| FirewallError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rendering() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = rampart_config::parse("", Path::new("host.toml")).unwrap();
        let rs = plan(&cfg);
        let p = write_rendering(&rs, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(p).unwrap(), render(&rs));
        let e = write_rendering(&rs, &dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().starts_with("write "), "{e}");
    }
}
