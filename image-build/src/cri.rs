//! What `[containerd] cri = true` adds to an image (see [`rampart_config::cri`]):
//!
//! - the CRI plugin's keys in the generated containerd config ([`plugin_keys`], [`cni_table`]):
//!   the sandbox image, `disable_apparmor` (rampart-runc gives every container the
//!   `rampart-default` profile; the plugin would otherwise ask for its own profile, which this
//!   host never loads), network namespaces pinned under containerd's state folder (its mount
//!   namespace cannot write `/var/run`), CNI plugins from [`CNI_PLUGIN_DIR`];
//! - the pause image: the static `rampart-pause` (from beside `rampart-init`) packed by
//!   [`crate::oci::archive`] as [`PAUSE_IMAGE`] at [`PAUSE_ARCHIVE`], and `ctr` for the
//!   service that imports it ([`image_files`]);
//! - the CNI configuration folder, and with `pod_subnet` the network list
//!   ([`cni_conflist`]) and the plugins (from the build machine's [`CNI_PLUGIN_DIR`], Debian's
//!   `containernetworking-plugins`). The `bridge` and `veth` modules come through
//!   [`rampart_config::Containerd::required_modules`], the firewall's forwarding through
//!   `[firewall.containers]`, which the config fills from `pod_subnet`.

use std::path::{Path, PathBuf};

use rampart_config::containerd::Containerd;
use rampart_config::cri::{
    self, CNI_CONF_DIR, CNI_CONF_FILE, CNI_PLUGINS, CNI_PLUGIN_DIR, PAUSE_ARCHIVE, PAUSE_BINARY,
    PAUSE_IMAGE, POD_BRIDGE, POD_NETWORK,
};
use rampart_config::firewall::Cidr;
use rampart_config::oci::{OciBinary, OciImage};
use rampart_config::{HostConfig, ImageFile};

use crate::build::BuildError;
use crate::cpio::{Archive, FileData};
use crate::oci::OciError;

/// The keys of the CRI plugin's own table for `c` (indented like the rest of the table).
pub fn plugin_keys(c: &Containerd) -> String {
    format!(
        "    sandbox_image = \"{image}\"\n\
         \x20   # rampart-runc puts every container under the rampart-default AppArmor profile;\n\
         \x20   # the plugin would otherwise ask for a profile of its own that is never loaded.\n\
         \x20   disable_apparmor = true\n\
         \x20   # Pod network namespaces are pinned under the state folder, not /var/run/netns.\n\
         \x20   netns_mounts_under_state_dir = true\n",
        image = c.sandbox_image()
    )
}

/// The CRI plugin's `cni` table.
pub fn cni_table() -> String {
    format!(
        "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
         \x20   # Under /usr, where the rampart-containerd AppArmor profile lets containerd execute.\n\
         \x20   bin_dir = \"{CNI_PLUGIN_DIR}\"\n\
         \x20   conf_dir = \"{CNI_CONF_DIR}\"\n\
         \x20   max_conf_num = 1\n"
    )
}

/// The CNI network list for `subnet` (CNI 0.4.0): the `bridge` plugin on [`POD_BRIDGE`] as the
/// pods' gateway (no `ipMasq`: the firewall masquerades; hairpin on), `host-local` addresses
/// from `subnet` with a default route, then `loopback`. No `portmap`: it needs iptables, which
/// a rampart host does not carry, so `hostPort` is not supported.
pub fn cni_conflist(subnet: Cidr) -> String {
    let v = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": POD_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": POD_BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "loopback" },
        ],
    });
    let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
    text.push('\n');
    text
}

/// The pause image's `[[image.oci]]`-like description.
pub fn pause_image() -> OciImage {
    OciImage {
        name: PAUSE_IMAGE.to_owned(),
        binary: OciBinary::Beside(PAUSE_BINARY.to_owned()),
        args: Vec::new(),
        target: PathBuf::from(PAUSE_ARCHIVE),
    }
}

/// `files` plus, with CRI on, the CNI plugins (with `pod_subnet`) and `ctr` (for the pause
/// image's import service), each unless an entry already provides its target.
pub fn image_files(cfg: &HostConfig, files: &[ImageFile]) -> Vec<ImageFile> {
    let mut out = files.to_vec();
    let c = &cfg.containerd;
    if !(c.enable && c.cri) {
        return out;
    }
    let mut wanted: Vec<PathBuf> = cri::service_binaries(cfg);
    if c.pod_subnet.is_some() {
        wanted.extend(
            CNI_PLUGINS
                .iter()
                .map(|p| Path::new(CNI_PLUGIN_DIR).join(p)),
        );
    }
    for path in wanted {
        if !out.iter().any(|f| f.target == path) {
            out.push(ImageFile {
                source: path.clone(),
                target: path,
                mode: Some(0o755),
            });
        }
    }
    out
}

/// The pause image's OCI archive from the bytes of `rampart-pause` at `path`, which must be a
/// static ELF binary.
pub fn pause_archive(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, OciError> {
    let not_static = |reason: String| OciError::NotStatic {
        name: PAUSE_IMAGE.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    let dynamic = crate::elf::parse_dynamic(bytes).map_err(not_static)?;
    if !dynamic.is_static() {
        return Err(not_static(
            "it needs an interpreter or shared libraries".into(),
        ));
    }
    crate::oci::archive(&pause_image(), bytes)
}

/// With CRI on in the host file at `config`: the CNI configuration folder, the network list
/// (with `pod_subnet`) and the pause image's archive (when it is the sandbox image), built
/// from `rampart-pause` beside `init`.
pub fn add_to_archive(a: &mut Archive, config: &Path, init: &Path) -> Result<(), BuildError> {
    let cfg = rampart_config::load(config)?;
    let c = &cfg.containerd;
    if !(c.enable && c.cri) {
        return Ok(());
    }
    // The CRI plugin watches this folder and creates it when missing, which a read-only
    // root does not allow: it is always there.
    a.add_dir(Path::new(CNI_CONF_DIR), 0o755)?;
    if let Some(subnet) = c.pod_subnet {
        a.add_file(
            Path::new(CNI_CONF_FILE),
            0o644,
            FileData::Bytes(cni_conflist(subnet).into_bytes()),
        )?;
    }
    if c.own_pause_image() {
        let path = crate::oci::binary_path(&pause_image(), init);
        let bytes = std::fs::read(&path).map_err(|source| OciError::Read {
            name: PAUSE_IMAGE.to_owned(),
            path: path.clone(),
            source,
        })?;
        let tar = pause_archive(&path, &bytes)?;
        tracing::info!(
            image = PAUSE_IMAGE,
            target = PAUSE_ARCHIVE,
            bytes = tar.len(),
            "pause image built"
        );
        a.add_file(Path::new(PAUSE_ARCHIVE), 0o644, FileData::Bytes(tar))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_config::operate::CTR_PATH;

    const CONTAINERD: &str =
        "[[service]]\nname = \"containerd\"\nexec = [\"/usr/bin/containerd\"]\n\
                              writable_paths = [\"/run\", \"/var/lib\", \"/var/lib/containerd\"]\n";

    fn cfg(text: &str) -> HostConfig {
        rampart_config::parse(text, Path::new("/cfg/host.toml")).unwrap()
    }

    #[test]
    fn conflist() {
        let text = cni_conflist(Cidr::try_from("10.88.0.0/16").unwrap());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["name"], POD_NETWORK);
        let plugins = v["plugins"].as_array().unwrap();
        let types: Vec<&str> = plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "loopback"]);
        assert_eq!(plugins[0]["bridge"], POD_BRIDGE);
        assert_eq!(plugins[0]["isGateway"], true);
        assert_eq!(plugins[0]["ipMasq"], false);
        assert_eq!(plugins[0]["ipam"]["type"], "host-local");
        assert_eq!(plugins[0]["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
        // Every plugin the list runs is one the image carries.
        for t in types.into_iter().chain(["host-local"]) {
            assert!(CNI_PLUGINS.contains(&t), "{t}");
        }
    }

    #[test]
    fn files_for_cri() {
        let targets = |c: &HostConfig| -> Vec<String> {
            image_files(c, &[])
                .iter()
                .map(|f| {
                    assert_eq!(f.source, f.target);
                    f.target.display().to_string()
                })
                .collect()
        };
        assert!(targets(&cfg("[containerd]\n")).is_empty());
        assert_eq!(
            targets(&cfg(&format!("[containerd]\ncri = true\n{CONTAINERD}"))),
            [CTR_PATH]
        );
        assert_eq!(
            targets(&cfg(&format!(
                "[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n{CONTAINERD}"
            ))),
            [
                CTR_PATH,
                "/usr/lib/cni/bridge",
                "/usr/lib/cni/host-local",
                "/usr/lib/cni/loopback"
            ]
        );
        // Another sandbox image: no import, so no ctr from here.
        assert!(targets(&cfg(&format!(
            "[containerd]\ncri = true\nsandbox_image = \"registry.k8s.io/pause:3.6\"\n{CONTAINERD}"
        )))
        .is_empty());
        // An entry for a target wins.
        let mine = ImageFile {
            source: PathBuf::from("/opt/ctr"),
            target: PathBuf::from(CTR_PATH),
            mode: Some(0o755),
        };
        let c = cfg(&format!("[containerd]\ncri = true\n{CONTAINERD}"));
        let files = image_files(&c, std::slice::from_ref(&mine));
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].source, mine.source);
        // bridge and veth join the module list with a pod network.
        let c = cfg(&format!(
            "[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n{CONTAINERD}"
        ));
        assert_eq!(
            crate::containerd::modules(&c, &["overlay".into()]),
            ["bridge", "veth"]
        );
    }

    #[test]
    fn pause_archive_needs_a_static_binary() {
        let err = pause_archive(Path::new("/x/rampart-pause"), b"not an elf").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "oci image rampart.local/pause:1: /x/rampart-pause is not a static ELF binary"
            ),
            "{err}"
        );
        // busybox-static is a static binary on the build machine (scripts/setup.sh).
        let busybox = Path::new("/bin/busybox");
        let Ok(bytes) = std::fs::read(busybox) else {
            eprintln!("skipped: no /bin/busybox");
            return;
        };
        if crate::elf::parse_dynamic(&bytes).is_ok_and(|d| d.is_static()) {
            let tar = pause_archive(busybox, &bytes).unwrap();
            assert_eq!(tar, crate::oci::archive(&pause_image(), &bytes).unwrap());
        }
    }

    #[test]
    fn add_to_archive_lays_out_cri() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("host.toml");
        std::fs::write(
            &config,
            format!("[containerd]\ncri = true\nsandbox_image = \"registry.k8s.io/pause:3.6\"\npod_subnet = \"10.88.0.0/16\"\n{CONTAINERD}"),
        )
        .unwrap();
        let mut a = Archive::new();
        add_to_archive(&mut a, &config, &dir.path().join("rampart-init")).unwrap();
        assert!(a.get(Path::new(CNI_CONF_DIR)).is_some());
        assert!(a.get(Path::new(CNI_CONF_FILE)).is_some());
        assert!(a.get(Path::new(PAUSE_ARCHIVE)).is_none());
        // Its own pause image, but no rampart-pause beside init: the error names it.
        std::fs::write(&config, format!("[containerd]\ncri = true\n{CONTAINERD}")).unwrap();
        let mut a = Archive::new();
        let err = add_to_archive(&mut a, &config, &dir.path().join("rampart-init")).unwrap_err();
        assert!(err.to_string().contains("rampart-pause"), "{err}");
        assert!(a.get(Path::new(CNI_CONF_FILE)).is_none());
    }
}
