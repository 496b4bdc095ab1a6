//! `[[image.oci]]`: one-file OCI image archives built at image-build time, for `ctr image
//! import` on the host without any registry.
//!
//! [`archive`] is pure: from a static binary's bytes it makes an uncompressed OCI image
//! layout in a ustar archive (`oci-layout`, `index.json`, and under `blobs/sha256/` one layer
//! holding the binary at `/NAME`, the image config with its entrypoint, and the manifest),
//! every digest a sha256 of its blob. Entries are sorted, owned by 0:0 and dated 0, and
//! JSON keys are written in sorted order, so the same binary always gives the same bytes.
//! [`image_files`] adds a binary named by a bare name (taken from beside `rampart-image`,
//! like `rampart-dhcp`) to the image at `/usr/bin/NAME`; [`add_to_archive`] puts each
//! archive in the initrd.

use std::path::{Path, PathBuf};

use rampart_config::oci::{OciBinary, OciImage};
use rampart_config::{HostConfig, ImageFile};

use crate::cpio::{Archive, CpioError, FileData};
use crate::manifest::sha256_hex;

/// Media type of an uncompressed layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of an image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Where a bare-name binary goes in the image, so that a service can run it.
pub const BIN_DIR: &str = "/usr/bin";

/// Errors of building an OCI archive.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The host file could not be read again.
    #[error("{source}")]
    Config {
        /// The config error.
        #[from]
        source: rampart_config::ConfigError,
    },
    /// The binary cannot be read.
    #[error("oci image {name}: cannot read {path}: {source}")]
    Read {
        /// The image name.
        name: String,
        /// The binary.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The binary is not a static ELF.
    #[error("oci image {name}: {path} is not a static ELF binary ({reason})")]
    NotStatic {
        /// The image name.
        name: String,
        /// The binary.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An entry name does not fit a ustar header.
    #[error("oci archive entry {entry} is longer than 99 bytes")]
    NameTooLong {
        /// The entry name.
        entry: String,
    },
    /// The archive could not be added to the initrd.
    #[error("initrd: {source}")]
    Archive {
        /// The underlying error.
        #[from]
        source: CpioError,
    },
}

/// One entry of a ustar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEntry {
    /// A folder (its name ends with `/`).
    Dir(String),
    /// A regular file with its mode and content.
    File(String, u32, Vec<u8>),
}

impl TarEntry {
    fn name(&self) -> &str {
        match self {
            TarEntry::Dir(n) | TarEntry::File(n, _, _) => n,
        }
    }
}

fn octal(field: &mut [u8], value: u64) {
    // width-1 octal digits, zero padded, then NUL.
    let width = field.len().saturating_sub(1);
    let text = format!("{value:0width$o}");
    for (dst, src) in field.iter_mut().zip(text.bytes()) {
        *dst = src;
    }
    if let Some(last) = field.last_mut() {
        *last = 0;
    }
}

fn put(block: &mut [u8; 512], at: usize, len: usize, bytes: &[u8]) {
    if let Some(field) = block.get_mut(at..at + len) {
        for (dst, src) in field.iter_mut().zip(bytes) {
            *dst = *src;
        }
    }
}

fn header(name: &str, mode: u32, size: u64, typeflag: u8) -> Result<[u8; 512], OciError> {
    if name.len() > 99 {
        return Err(OciError::NameTooLong {
            entry: name.to_owned(),
        });
    }
    let mut h = [0u8; 512];
    put(&mut h, 0, 100, name.as_bytes());
    let fields: [(usize, usize, u64); 5] = [
        (100, 8, u64::from(mode)),
        (108, 8, 0),
        (116, 8, 0),
        (124, 12, size),
        (136, 12, 0),
    ];
    for (at, len, value) in fields {
        if let Some(f) = h.get_mut(at..at + len) {
            octal(f, value);
        }
    }
    put(&mut h, 148, 8, b"        ");
    put(&mut h, 156, 1, &[typeflag]);
    put(&mut h, 257, 8, b"ustar\x0000");
    put(&mut h, 265, 32, b"root");
    put(&mut h, 297, 32, b"root");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    put(&mut h, 148, 8, text.as_bytes());
    Ok(h)
}

/// A ustar archive of `entries`, sorted by name, owned by 0:0, dated 0, ending with two
/// zero blocks.
pub fn tar(mut entries: Vec<TarEntry>) -> Result<Vec<u8>, OciError> {
    entries.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    for e in &entries {
        match e {
            TarEntry::Dir(name) => out.extend_from_slice(&header(name, 0o755, 0, b'5')?),
            TarEntry::File(name, mode, data) => {
                out.extend_from_slice(&header(name, *mode, data.len() as u64, b'0')?);
                out.extend_from_slice(data);
                let pad = (512 - data.len() % 512) % 512;
                out.resize(out.len() + pad, 0);
            }
        }
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// A blob's descriptor as JSON (keys sorted).
fn descriptor(media_type: &str, blob: &[u8], annotations: Option<serde_json::Value>) -> String {
    let mut d = String::from("{");
    if let Some(a) = annotations {
        d.push_str(&format!("\"annotations\":{a},"));
    }
    d.push_str(&format!(
        "\"digest\":\"sha256:{}\",\"mediaType\":\"{media_type}\",\"size\":{}}}",
        sha256_hex(blob),
        blob.len()
    ));
    d
}

/// A JSON string.
fn js(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The OCI image layout archive of `image`, whose only file is `binary` (its bytes) at
/// `/NAME`, mode 0755, with the entrypoint `["/NAME", args...]`.
pub fn archive(image: &OciImage, binary: &[u8]) -> Result<Vec<u8>, OciError> {
    let name = image.binary_name();
    let layer = tar(vec![TarEntry::File(name.clone(), 0o755, binary.to_vec())])?;
    let entrypoint: Vec<String> = std::iter::once(format!("/{name}"))
        .chain(image.args.iter().cloned())
        .map(|s| js(&s))
        .collect();
    let config = format!(
        "{{\"architecture\":\"amd64\",\"config\":{{\"Entrypoint\":[{}],\"Env\":[\"PATH=/\"]}},\
         \"os\":\"linux\",\"rootfs\":{{\"diff_ids\":[\"sha256:{}\"],\"type\":\"layers\"}}}}",
        entrypoint.join(","),
        sha256_hex(&layer)
    );
    let manifest = format!(
        "{{\"config\":{},\"layers\":[{}],\"mediaType\":\"{MANIFEST_MEDIA_TYPE}\",\"schemaVersion\":2}}",
        descriptor(CONFIG_MEDIA_TYPE, config.as_bytes(), None),
        descriptor(LAYER_MEDIA_TYPE, &layer, None),
    );
    // ctr names the image after io.containerd.image.name; other tools read the tag.
    let annotations = serde_json::json!({
        "io.containerd.image.name": image.name,
        "org.opencontainers.image.ref.name": image.tag(),
    });
    let index = format!(
        "{{\"manifests\":[{}],\"schemaVersion\":2}}",
        descriptor(MANIFEST_MEDIA_TYPE, manifest.as_bytes(), Some(annotations))
    );
    let blob = |bytes: Vec<u8>| {
        TarEntry::File(format!("blobs/sha256/{}", sha256_hex(&bytes)), 0o644, bytes)
    };
    tar(vec![
        TarEntry::Dir("blobs/".into()),
        TarEntry::Dir("blobs/sha256/".into()),
        blob(layer),
        blob(config.into_bytes()),
        blob(manifest.into_bytes()),
        TarEntry::File("index.json".into(), 0o644, index.into_bytes()),
        TarEntry::File(
            "oci-layout".into(),
            0o644,
            b"{\"imageLayoutVersion\":\"1.0.0\"}".to_vec(),
        ),
    ])
}

/// The build-machine path of `image`'s binary; `init` is the init binary, beside which a
/// bare name is looked for.
pub fn binary_path(image: &OciImage, init: &Path) -> PathBuf {
    match &image.binary {
        OciBinary::Path(p) => p.clone(),
        OciBinary::Beside(n) => init
            .parent()
            .map_or_else(|| PathBuf::from(n), |d| d.join(n)),
    }
}

/// `files` plus, for each `[[image.oci]]` binary given by a bare name, that binary at
/// `/usr/bin/NAME` (mode 0755) unless an entry already provides it.
pub fn image_files(cfg: &HostConfig, files: &[ImageFile], init: &Path) -> Vec<ImageFile> {
    let mut out = files.to_vec();
    for image in &cfg.image.oci {
        if let OciBinary::Beside(n) = &image.binary {
            let target = Path::new(BIN_DIR).join(n);
            if !out.iter().any(|f| f.target == target) {
                out.push(ImageFile {
                    source: binary_path(image, init),
                    target,
                    mode: Some(0o755),
                });
            }
        }
    }
    out
}

/// Builds every `[[image.oci]]` archive of the host file `config` and adds it to `a`.
pub fn add_to_archive(a: &mut Archive, config: &Path, init: &Path) -> Result<(), OciError> {
    let cfg = rampart_config::load(config)?;
    for image in &cfg.image.oci {
        let path = binary_path(image, init);
        let bytes = std::fs::read(&path).map_err(|source| OciError::Read {
            name: image.name.clone(),
            path: path.clone(),
            source,
        })?;
        let not_static = |reason: String| OciError::NotStatic {
            name: image.name.clone(),
            path: path.clone(),
            reason,
        };
        let dynamic = crate::elf::parse_dynamic(&bytes).map_err(not_static)?;
        if !dynamic.is_static() {
            return Err(not_static(
                "it needs an interpreter or shared libraries".into(),
            ));
        }
        let tar = archive(image, &bytes)?;
        tracing::info!(image = %image.name, target = %image.target.display(), bytes = tar.len(), "oci archive built");
        a.add_file(&image.target, 0o644, FileData::Bytes(tar))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn image() -> OciImage {
        OciImage {
            name: "rampart.demo/hello:latest".into(),
            binary: OciBinary::Beside("rampart-demo".into()),
            args: vec!["inside".into()],
            target: PathBuf::from("/usr/share/rampart/demo.oci.tar"),
        }
    }

    /// The (name, content) of each file of a ustar archive, read back by hand.
    fn files(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 512 <= tar.len() {
            let h = &tar[at..at + 512];
            if h.iter().all(|b| *b == 0) {
                break;
            }
            let name =
                String::from_utf8(h[..100].iter().take_while(|b| **b != 0).copied().collect())
                    .unwrap();
            let size = u64::from_str_radix(std::str::from_utf8(&h[124..135]).unwrap(), 8).unwrap()
                as usize;
            at += 512;
            if h[156] == b'0' {
                out.push((name, tar[at..at + size].to_vec()));
            }
            at += size.div_ceil(512) * 512;
        }
        out
    }

    #[test]
    fn archive_is_reproducible_and_listed_by_tar() {
        let bin = b"\x7fELF not really".repeat(100);
        let a = archive(&image(), &bin).unwrap();
        assert_eq!(a, archive(&image(), &bin).unwrap());
        assert_eq!(a.len() % 512, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.oci.tar");
        std::fs::write(&path, &a).unwrap();
        let out = Command::new("tar").arg("-tvf").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert_eq!(names.len(), 7, "{listing}");
        assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
        assert!(names[2..5]
            .iter()
            .all(|n| n.starts_with("blobs/sha256/") && n.len() == 77));
        assert_eq!(&names[5..], ["index.json", "oci-layout"]);
        assert!(
            listing
                .lines()
                .all(|l| l.contains("root/root") && l.contains("1970-01-01")),
            "{listing}"
        );
        // The layer, read back by tar, holds the binary at /rampart-demo.
        let files = files(&a);
        let layer = files
            .iter()
            .find(|(_, c)| c.len() > 1024 && c.len() % 512 == 0)
            .unwrap();
        let lpath = dir.path().join("layer.tar");
        std::fs::write(&lpath, &layer.1).unwrap();
        let out = Command::new("tar")
            .arg("-tvf")
            .arg(&lpath)
            .output()
            .unwrap();
        let l = String::from_utf8(out.stdout).unwrap();
        assert!(
            l.starts_with("-rwxr-xr-x root/root") && l.trim_end().ends_with(" rampart-demo"),
            "{l}"
        );
        assert_eq!(
            self::files(&layer.1),
            [("rampart-demo".to_owned(), bin.clone())]
        );
    }

    #[test]
    fn digests_match_blobs() {
        let bin = b"binary".to_vec();
        let files = files(&archive(&image(), &bin).unwrap());
        let get = |n: &str| {
            files
                .iter()
                .find(|(f, _)| f == n)
                .map(|(_, c)| c.clone())
                .unwrap()
        };
        for (name, content) in &files {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(hex, sha256_hex(content));
            }
        }
        let blob = |d: &serde_json::Value| {
            let hex = d["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap()
                .to_owned();
            let c = get(&format!("blobs/sha256/{hex}"));
            assert_eq!(d["size"].as_u64().unwrap(), c.len() as u64);
            c
        };
        let index: serde_json::Value = serde_json::from_slice(&get("index.json")).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "rampart.demo/hello:latest"
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        let manifest: serde_json::Value = serde_json::from_slice(&blob(m)).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&blob(&manifest["config"])).unwrap();
        let layer = blob(&manifest["layers"][0]);
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/rampart-demo", "inside"])
        );
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&layer))
        );
        let oci_layout: serde_json::Value = serde_json::from_slice(&get("oci-layout")).unwrap();
        assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    }

    #[test]
    fn long_names_are_refused() {
        let long = "x".repeat(100);
        assert!(matches!(
            tar(vec![TarEntry::Dir(long)]),
            Err(OciError::NameTooLong { .. })
        ));
    }

    #[test]
    fn bare_names_come_from_beside_init() {
        let cfg = rampart_config::parse(
            "[[image.oci]]\nname = \"a/b:c\"\nbinary = \"rampart-demo\"\ntarget = \"/t.tar\"\n\
             [[image.oci]]\nname = \"d:e\"\nbinary = \"/x/y\"\ntarget = \"/u.tar\"\n",
            Path::new("/cfg/host.toml"),
        )
        .unwrap();
        let init = Path::new("/build/rampart-init");
        let f = image_files(&cfg, &[], init);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].source, Path::new("/build/rampart-demo"));
        assert_eq!(f[0].target, Path::new("/usr/bin/rampart-demo"));
        assert_eq!(image_files(&cfg, &f, init).len(), 1);
        assert_eq!(binary_path(&cfg.image.oci[1], init), Path::new("/x/y"));
    }
}
