//! Host side of the containerd end-to-end tests: an OCI image archive made from the static
//! `rampart-probe` (no registry: a tar layer, a config, a manifest, an index and their sha256
//! digests, in the OCI image layout that `ctr image import` reads), host files derived from
//! the default host (its containerd service kept, the test services added), a 2 GiB boot, and
//! the parsers for what the guest script prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{self, Boot, Env, HarnessError, Output};

/// The name the test image is imported under.
pub const PROBE_IMAGE: &str = "rampart.test/probe:latest";
/// Where the probe's OCI archive goes in the test image.
pub const PROBE_ARCHIVE_IN_IMAGE: &str = "/usr/share/rampart-test/probe.tar";
/// Where the probe sits inside its container image.
pub const PROBE_IN_CONTAINER: &str = "/rampart-probe";
/// The prefix of the lines the guest script prints.
pub const LINE_PREFIX: &str = "CTD-TEST ";
/// Guest memory for a containerd image (MiB).
pub const MEMORY_MIB: u32 = 2048;

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> HarnessError + 'a {
    move |source| HarnessError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn command(cmd: &mut Command) -> Result<Output, HarnessError> {
    let out = harness::run(cmd, Duration::from_secs(120))?;
    if !out.status.success() {
        return Err(HarnessError::Spawn {
            program: format!("{cmd:?}"),
            source: std::io::Error::other(out.combined()),
        });
    }
    Ok(out)
}

/// `sha256sum FILE` as (hex, size).
fn digest(path: &Path) -> Result<(String, u64), HarnessError> {
    let out = command(Command::new("sha256sum").arg(path))?;
    let hex = out
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let size = std::fs::metadata(path).map_err(io("stat", path))?.len();
    Ok((hex, size))
}

/// Moves `file` into `layout/blobs/sha256/` under its digest and returns its descriptor.
fn blob(layout: &Path, file: &Path, media_type: &str) -> Result<serde_json::Value, HarnessError> {
    let (hex, size) = digest(file)?;
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let to = dir.join(&hex);
    std::fs::rename(file, &to).map_err(io("move", file))?;
    Ok(
        serde_json::json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size }),
    )
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), HarnessError> {
    std::fs::write(path, v.to_string()).map_err(io("write", path))
}

/// Builds `<dir>/probe.tar`: an OCI image layout archive holding one layer with `probe` at
/// `/rampart-probe`, named [`PROBE_IMAGE`].
pub fn probe_archive(probe: &Path, dir: &Path) -> Result<PathBuf, HarnessError> {
    let rootfs = dir.join("rootfs");
    let layout = dir.join("layout");
    for d in [&rootfs, &layout] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).map_err(io("create", d))?;
    }
    let target = rootfs.join("rampart-probe");
    std::fs::copy(probe, &target).map_err(io("copy", probe))?;
    let layer = dir.join("layer.tar");
    command(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args([
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-cf",
            ])
            .arg(&layer)
            .arg("rampart-probe"),
    )?;
    let (layer_hex, _) = digest(&layer)?;
    let layer_desc = blob(&layout, &layer, "application/vnd.oci.image.layer.v1.tar")?;
    let config = dir.join("config.json");
    write_json(
        &config,
        &serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Entrypoint": [PROBE_IN_CONTAINER], "Cmd": ["status"], "Env": ["PATH=/"] },
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_hex}")] },
        }),
    )?;
    let config_desc = blob(&layout, &config, "application/vnd.oci.image.config.v1+json")?;
    let manifest = dir.join("manifest.json");
    write_json(
        &manifest,
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }),
    )?;
    let mut manifest_desc = blob(
        &layout,
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    )?;
    if let Some(obj) = manifest_desc.as_object_mut() {
        obj.insert(
            "annotations".into(),
            serde_json::json!({
                "io.containerd.image.name": PROBE_IMAGE,
                "org.opencontainers.image.ref.name": "latest",
            }),
        );
    }
    write_json(
        &layout.join("index.json"),
        &serde_json::json!({ "schemaVersion": 2, "manifests": [manifest_desc] }),
    )?;
    write_json(
        &layout.join("oci-layout"),
        &serde_json::json!({ "imageLayoutVersion": "1.0.0" }),
    )?;
    let archive = dir.join("probe.tar");
    command(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"]),
    )?;
    Ok(archive)
}

/// A service table for [`host_with_containerd`].
pub type ServiceTable = toml::Table;

/// The default host (`example`) with absolute image paths, its `containerd` service kept and
/// every other service replaced by `services`, and `files` (source, target, mode) added to
/// `[[image.files]]`. Returns TOML text.
pub fn host_with_containerd(
    env: &Env,
    services: Vec<ServiceTable>,
    files: &[(PathBuf, &str, u32)],
) -> Result<String, HarnessError> {
    use toml::Value;
    let bad = |reason: String| HarnessError::Example {
        path: env.example.clone(),
        reason,
    };
    let example = std::fs::read_to_string(&env.example).map_err(io("read", &env.example))?;
    let example: toml::Table = example
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let containerd = example
        .get("service")
        .and_then(Value::as_array)
        .and_then(|s| {
            s.iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("containerd"))
        })
        .cloned()
        .ok_or_else(|| bad("no [[service]] named containerd".into()))?;
    let text = harness::host_from_example(&env.example, &env.rampart_check(), &[], &[])?;
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let mut all = vec![containerd];
    all.extend(services.into_iter().map(Value::Table));
    doc.insert("service".into(), Value::Array(all));
    if let Some(list) = doc
        .get_mut("image")
        .and_then(|i| i.get_mut("files"))
        .and_then(Value::as_array_mut)
    {
        for (source, target, mode) in files {
            let mut t = toml::Table::new();
            t.insert(
                "source".into(),
                Value::String(source.to_string_lossy().into_owned()),
            );
            t.insert("target".into(), Value::String((*target).to_owned()));
            t.insert("mode".into(), Value::Integer(i64::from(*mode)));
            list.push(Value::Table(t));
        }
    }
    Ok(format!(
        "# Generated by the rampart containerd tests from {}\n{}",
        env.example.display(),
        toml::to_string(&doc).map_err(|e| bad(e.to_string()))?
    ))
}

/// A busybox shell service running `script`, started once containerd is ready, powering the
/// host off when it ends. It may write `/run/containerd` (ctr's stdio fifos live there) and
/// `/var/lib/containerd` (the overlay upper dir of that temporary mount), and
/// keeps `CAP_SYS_ADMIN` and the file-permission capabilities, as an operator shell would.
pub fn script_service(name: &str, script: &str) -> ServiceTable {
    use toml::Value;
    let strings =
        |v: &[&str]| Value::Array(v.iter().map(|s| Value::String((*s).to_owned())).collect());
    let mut t = toml::Table::new();
    t.insert("name".into(), Value::String(name.to_owned()));
    t.insert(
        "exec".into(),
        strings(&["/bin/busybox", "sh", "-c", script]),
    );
    t.insert("after".into(), strings(&["containerd"]));
    t.insert("on_exit".into(), Value::String("poweroff".into()));
    t.insert(
        "writable_paths".into(),
        strings(&["/run/containerd", "/var/lib/containerd"]),
    );
    // `ctr run` mounts the image's root file system in its own (private) /tmp to read
    // /etc/group: the client needs CAP_SYS_ADMIN (and to reach the snapshot folders).
    t.insert(
        "capabilities".into(),
        strings(&[
            "CAP_SYS_ADMIN",
            "CAP_DAC_OVERRIDE",
            "CAP_DAC_READ_SEARCH",
            "CAP_FOWNER",
        ]),
    );
    t
}

/// `rampart-image boot IMAGE` with [`MEMORY_MIB`] and 2 vCPUs; the console is saved as
/// `<out_dir>/<name>.console.log`.
pub fn boot(env: &Env, image: &Path, name: &str) -> Result<Boot, HarnessError> {
    harness::boot_with(
        env,
        image,
        name,
        MEMORY_MIB,
        harness::boot_timeout().max(600),
    )
}

/// The `KEY=VALUE` pairs of the console's `CTD-TEST` lines (a service's lines are prefixed
/// with its name), the last value winning.
pub fn results(console: &str) -> BTreeMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.split_once(LINE_PREFIX).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The JSON values of the console's `RAMPART-PROBE {"MODE": ...}` lines for `mode`, in order.
pub fn probe_lines(console: &str, mode: &str) -> Vec<serde_json::Value> {
    console
        .lines()
        .filter_map(|l| l.split_once("RAMPART-PROBE ").map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j.trim()).ok())
        .filter_map(|v| v.get(mode).cloned())
        .collect()
}

/// The median of `xs` (0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
        n => {
            (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0)) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        let console = "ctdtest: CTD-TEST a=1\nx\nctdtest: CTD-TEST b = two words\nctdtest: CTD-TEST a=3\n\
                       c1: RAMPART-PROBE {\"status\":{\"Seccomp\":\"2\"}}\nRAMPART-PROBE {\"sleep\":{}}\n";
        let r = results(console);
        assert_eq!(r["a"], "3");
        assert_eq!(r["b"], "two words");
        let s = probe_lines(console, "status");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["Seccomp"], "2");
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn script_service_shape() {
        let t = script_service("t", "echo hi");
        assert_eq!(t["name"].as_str(), Some("t"));
        assert_eq!(t["exec"].as_array().unwrap().len(), 4);
        assert_eq!(
            t["after"].as_array().unwrap()[0].as_str(),
            Some("containerd")
        );
    }
}
