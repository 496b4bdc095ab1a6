//! The kernel command line of an image, built from the host config (pure).
//!
//! The line is `[boot] cmdline` (console, panic, log level), then the hardened items of
//! `[hardening]` (the KSPP items that boot on Debian's 6.1 kernel under QEMU, minus
//! `cmdline_remove`, then `lockdown=`, `module.sig_enforce=1` and `lsm=` from their own keys),
//! then `hardening.cmdline_add`. Config validation already refuses a `[boot] cmdline` or
//! `cmdline_add` item that sets a key of the hardened part, so no key appears twice.
//! [`build`] writes the line to `DIR/cmdline`; [`expected_file`] is the same list, one item
//! per line, written to `/etc/rampart/cmdline` in the image, where `rampart-init` compares it
//! with `/proc/cmdline` at boot.

use rampart_config::hardening::hardened_cmdline;
use rampart_config::HostConfig;

/// The command line items, in order.
pub fn items(cfg: &HostConfig) -> Vec<String> {
    let mut out: Vec<String> = cfg.boot.cmdline.clone();
    out.extend(hardened_cmdline(&cfg.hardening).into_iter().map(|i| i.item));
    out.extend(cfg.hardening.cmdline_add.iter().cloned());
    out
}

/// The command line as one string (what `DIR/cmdline` holds, without the newline).
pub fn build(cfg: &HostConfig) -> String {
    items(cfg).join(" ")
}

/// The content of `/etc/rampart/cmdline`: one item per line.
pub fn expected_file(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .map(|i| format!("{i}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> HostConfig {
        rampart_config::parse(text, Path::new("/cfg/host.toml")).unwrap()
    }

    #[test]
    fn default_line() {
        assert_eq!(
            build(&cfg("")),
            "console=ttyS0 panic=-1 loglevel=4 slab_nomerge init_on_alloc=1 init_on_free=1 \
             page_alloc.shuffle=1 pti=on randomize_kstack_offset=on vsyscall=none debugfs=off \
             oops=panic lockdown=integrity module.sig_enforce=1 \
             lsm=landlock,lockdown,yama,apparmor"
        );
    }

    /// (host file, items that must be there, items that must not).
    #[test]
    fn table() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "[hardening]\ncmdline_remove = [\"init_on_free\", \"oops=panic\"]\n",
                &["init_on_alloc=1", "slab_nomerge"],
                &["init_on_free=1", "oops=panic"],
            ),
            (
                "[hardening]\ncmdline_add = [\"iommu=force\"]\n",
                &["iommu=force"],
                &[],
            ),
            (
                "[hardening]\nlockdown = \"confidentiality\"\nlsm = [\"yama\"]\n",
                &["lockdown=confidentiality", "lsm=yama"],
                &["lockdown=integrity", "lsm=landlock,lockdown,yama,apparmor"],
            ),
            (
                "[hardening]\nlockdown = \"none\"\nlsm = []\nmodule_sig_enforce = false\n",
                &["pti=on"],
                &[
                    "lockdown=integrity",
                    "module.sig_enforce=1",
                    "lsm=landlock,lockdown,yama,apparmor",
                ],
            ),
            (
                "[boot]\ncmdline = [\"console=hvc0\"]\n",
                &["console=hvc0", "pti=on"],
                &["console=ttyS0", "panic=-1"],
            ),
        ];
        for (text, with, without) in cases {
            let it = items(&cfg(text));
            for w in *with {
                assert!(it.iter().any(|i| i == w), "{text}: {w} missing from {it:?}");
            }
            for w in *without {
                assert!(!it.iter().any(|i| i == w), "{text}: {w} in {it:?}");
            }
        }
    }

    #[test]
    fn order_is_boot_then_hardened_then_added() {
        let it = items(&cfg(
            "[boot]\ncmdline = [\"console=ttyS0\"]\n[hardening]\ncmdline_add = [\"quiet\"]\n",
        ));
        assert_eq!(it.first().map(String::as_str), Some("console=ttyS0"));
        assert_eq!(it.get(1).map(String::as_str), Some("slab_nomerge"));
        assert_eq!(it.last().map(String::as_str), Some("quiet"));
        let mut keys: Vec<&str> = it
            .iter()
            .map(|i| rampart_config::hardening::cmdline_key(i))
            .collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key appears twice: {it:?}");
    }

    #[test]
    fn expected_file_has_one_item_per_line() {
        assert_eq!(expected_file("a=1 b  c\n"), "a=1\nb\nc\n");
        assert_eq!(expected_file(""), "");
    }
}
