//! `rampart-image firewall --config FILE`: the host's nftables ruleset as `nft` text, exactly
//! as the running init writes it to `/run/rampart/firewall.nft`.

use std::path::Path;

use rampart_config::ConfigError;

/// Loads the host file and renders its ruleset (which follows `[network]` too).
pub fn render(config: &Path) -> Result<String, ConfigError> {
    let cfg = rampart_config::load(config)?;
    Ok(rampart_init::firewall::render(
        &rampart_init::firewall::plan(&cfg),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_default_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("host.toml");
        std::fs::write(
            &p,
            "[network]\ndns = [\"10.0.2.3\"]\n[[firewall.rule]]\ndirection = \"in\"\nprotocol = \"tcp\"\nports = [8080]\naction = \"accept\"\n",
        )
        .unwrap();
        let text = render(&p).unwrap();
        assert!(text.starts_with("table inet rampart {"), "{text}");
        assert!(text.contains("tcp dport 8080 accept"), "{text}");
        assert!(text.contains("10.0.2.3"), "{text}");
        std::fs::write(&p, "[network]\ndns = [\"nope\"]\n").unwrap();
        let e = render(&p).unwrap_err().to_string();
        assert!(e.contains("network.dns[0]"), "{e}");
    }
}
