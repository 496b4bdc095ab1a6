//! What `[firewall]` and `[network]` add to an image: the firewall's kernel modules (added to
//! the module list automatically), the DHCP client `rampart-dhcp` (when an interface has
//! `dhcp = true`, taken from beside the init binary), and empty `/etc/hosts` and
//! `/etc/resolv.conf` files for PID 1 to bind its generated files onto.

use std::path::{Path, PathBuf};

use rampart_config::network::DHCP_CLIENT_PATH;
use rampart_config::{HostConfig, ImageFile};

use crate::cpio::{Archive, CpioError, FileData};

/// The DHCP client's file name beside the init binary.
pub const DHCP_BINARY: &str = "rampart-dhcp";

/// The empty files PID 1 binds its generated files onto.
pub const BIND_TARGETS: &[&str] = &["/etc/hosts", "/etc/resolv.conf"];

/// The modules the firewall needs that `already` does not list, in load order.
pub fn firewall_modules(cfg: &HostConfig, already: &[String]) -> Vec<String> {
    let rs = rampart_init::firewall::plan(cfg);
    rampart_init::firewall::required_modules(&rs)
        .into_iter()
        .filter(|m| !already.iter().any(|a| a == m))
        .map(str::to_owned)
        .collect()
}

/// `files` plus the DHCP client when the config runs one and the image does not already get
/// a file at its path; `init` is the init binary, beside which the client is looked for.
pub fn image_files(cfg: &HostConfig, files: &[ImageFile], init: &Path) -> Vec<ImageFile> {
    let mut out = files.to_vec();
    let target = PathBuf::from(DHCP_CLIENT_PATH);
    if cfg.network.any_dhcp() && !out.iter().any(|f| f.target == target) {
        let source = init
            .parent()
            .map_or_else(|| PathBuf::from(DHCP_BINARY), |d| d.join(DHCP_BINARY));
        out.push(ImageFile {
            source,
            target,
            mode: Some(0o755),
        });
    }
    out
}

/// Adds the empty bind targets the image does not already hold.
pub fn add_bind_targets(a: &mut Archive) -> Result<(), CpioError> {
    for t in BIND_TARGETS {
        let p = Path::new(t);
        if a.get(p).is_none() {
            a.add_file(p, 0o644, FileData::Bytes(Vec::new()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> HostConfig {
        rampart_config::parse(text, Path::new("/cfg/host.toml")).unwrap()
    }

    #[test]
    fn firewall_modules_are_added_once() {
        let c = cfg("");
        assert_eq!(
            firewall_modules(&c, &["nf_tables".into()]),
            ["nft_ct", "nft_limit"]
        );
        let c = cfg("[firewall]\nlog_drops = true\n");
        assert_eq!(
            firewall_modules(&c, &[]),
            [
                "nf_tables",
                "nft_ct",
                "nft_limit",
                "nft_log",
                "nf_log_syslog"
            ]
        );
    }

    #[test]
    fn dhcp_client_only_when_used() {
        let init = Path::new("/build/rampart-init");
        assert!(image_files(&cfg(""), &[], init).is_empty());
        let c = cfg("[[network.interface]]\nname = \"eth0\"\ndhcp = true\n");
        let f = image_files(&c, &[], init);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].source, Path::new("/build/rampart-dhcp"));
        assert_eq!(f[0].target, Path::new("/sbin/rampart-dhcp"));
        assert_eq!(f[0].mode, Some(0o755));
        assert_eq!(image_files(&c, &f, init).len(), 1);
    }

    #[test]
    fn bind_targets_are_empty_files() {
        let mut a = Archive::new();
        a.add_dir(Path::new("/etc"), 0o755).unwrap();
        a.add_file(
            Path::new("/etc/hosts"),
            0o644,
            FileData::Bytes(b"x".to_vec()),
        )
        .unwrap();
        add_bind_targets(&mut a).unwrap();
        assert!(a.get(Path::new("/etc/resolv.conf")).is_some());
        assert!(a.get(Path::new("/etc/hosts")).is_some());
    }
}
