//! `[containerd]`: what `rampart-image` puts into an image for containerd, and the
//! `/etc/containerd/config.toml` it generates.
//!
//! containerd itself runs as an ordinary `[[service]]` (its privileges are declared there);
//! this section only says whether the image carries the container runtime (the runc shim,
//! `rampart-runc` as the only `runc`, the real runc without any execute bit) and how
//! containerd is configured. With `cri = true`, [`crate::cri`] adds the pause image, its import
//! and the pod network (`pod_subnet`). Every key is documented in `docs/config.md`.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use crate::cri::POD_PREFIX_RANGE;
use crate::firewall::{Cidr, Family, Firewall};
use crate::service::Service;
use crate::{Kernel, Validator};

/// containerd's persistent root (content store, snapshots, metadata).
pub const ROOT_DIR: &str = "/var/lib/containerd";
/// containerd's state folder (sockets, task bundles, runc state).
pub const STATE_DIR: &str = "/run/containerd";
/// containerd's gRPC socket.
pub const SOCKET: &str = "/run/containerd/containerd.sock";
/// Where the generated config goes in the image.
pub const CONFIG_PATH: &str = "/etc/containerd/config.toml";

/// The snapshotter containerd unpacks images with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Snapshotter {
    /// `overlayfs`: needs the `overlay` kernel module.
    Overlayfs,
    /// `native`: plain copies, no kernel support needed (slower, more space).
    Native,
}

impl Snapshotter {
    /// The name containerd uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Snapshotter::Overlayfs => "overlayfs",
            Snapshotter::Native => "native",
        }
    }
}

impl fmt::Display for Snapshotter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where containerd's root ([`ROOT_DIR`]) lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateStorage {
    /// The `/var/lib/containerd` tmpfs: images and containers are gone after a reboot.
    Tmpfs,
    /// The state partition of a disk image (`rampart-image disk`), which init mounts at
    /// `/var` with `/var/lib/containerd` on it; the path stays the same.
    Disk,
}

impl fmt::Display for StateStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateStorage::Tmpfs => "tmpfs",
            StateStorage::Disk => "disk",
        })
    }
}

/// `[containerd]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerd {
    /// Whether the image carries containerd's runtime pieces and config.
    pub enable: bool,
    /// Whether the CRI plugin (Kubernetes' kubelet API) is enabled.
    pub cri: bool,
    /// The snapshotter.
    pub snapshotter: Snapshotter,
    /// Where containerd's root lives.
    pub state: StateStorage,
    /// The CRI pause image (used only with `cri = true`); `None` is rampart's own,
    /// [`crate::cri::PAUSE_IMAGE`].
    pub sandbox_image: Option<String>,
    /// The pods' IPv4 subnet on the CNI bridge (only with `cri = true`); `None`: no pod
    /// network (host-network pods only).
    pub pod_subnet: Option<Cidr>,
    /// Whether `rampart-events` records containerd's container and task events and
    /// `rampart-runc`'s decisions as audit lines (when a `containerd` service exists).
    pub events: bool,
}

impl Default for Containerd {
    /// No `[containerd]` section: no containerd pieces in the image.
    fn default() -> Self {
        Containerd {
            enable: false,
            cri: false,
            snapshotter: Snapshotter::Overlayfs,
            state: StateStorage::Tmpfs,
            sandbox_image: None,
            pod_subnet: None,
            events: true,
        }
    }
}

impl Containerd {
    /// The kernel modules this configuration needs (`overlay` for the overlayfs snapshotter,
    /// `bridge` and `veth` for a pod network).
    pub fn required_modules(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.enable && self.snapshotter == Snapshotter::Overlayfs {
            out.push("overlay");
        }
        out.extend(self.pod_network_modules());
        out
    }
}

/// `[containerd]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContainerd {
    pub enable: Option<bool>,
    pub cri: Option<bool>,
    pub snapshotter: Option<Spanned<String>>,
    pub state: Option<Spanned<String>>,
    pub sandbox_image: Option<Spanned<String>>,
    pub pod_subnet: Option<Spanned<String>>,
    pub events: Option<bool>,
}

/// An image reference: printable, no spaces or quotes.
fn image_reference(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '\'');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not an image reference (1 to 255 printable characters, no quotes or backslashes)"
        ))
    }
}

/// `pod_subnet`: an IPv4 network with a prefix in [`POD_PREFIX_RANGE`].
fn pod_subnet(s: &str) -> Result<Cidr, String> {
    let c = Cidr::try_from(s)?;
    let (min, max) = POD_PREFIX_RANGE;
    if c.family() != Family::V4 {
        Err(format!("`{s}` is not an IPv4 network"))
    } else if !(min..=max).contains(&c.prefix()) {
        Err(format!(
            "`{s}` has a prefix length outside {min} to {max} (room for the gateway and the pods)"
        ))
    } else {
        Ok(c)
    }
}

impl Validator<'_> {
    /// Validates `[containerd]`; an absent section is [`Containerd::default`] (disabled), a
    /// present one is enabled unless `enable = false`. `pod_subnet` is checked against the
    /// already validated `firewall`, `kernel` and `services` ([`Validator::check_pod_network`]).
    pub(crate) fn containerd(
        &mut self,
        raw: Option<RawContainerd>,
        firewall: &Firewall,
        kernel: &Kernel,
        services: &[Service],
    ) -> Containerd {
        let d = Containerd::default();
        let Some(raw) = raw else { return d };
        let snapshotter = raw
            .snapshotter
            .as_ref()
            .and_then(|v| {
                self.check("containerd.snapshotter", v, |s| match s {
                    "overlayfs" => Ok(Snapshotter::Overlayfs),
                    "native" => Ok(Snapshotter::Native),
                    _ => Err(format!("`{s}` is not one of \"overlayfs\", \"native\"")),
                })
            })
            .unwrap_or(d.snapshotter);
        let state = raw
            .state
            .as_ref()
            .and_then(|v| {
                self.check("containerd.state", v, |s| match s {
                    "tmpfs" => Ok(StateStorage::Tmpfs),
                    "disk" => Ok(StateStorage::Disk),
                    _ => Err(format!("`{s}` is not one of \"tmpfs\", \"disk\"")),
                })
            })
            .unwrap_or(d.state);
        let sandbox_image = raw
            .sandbox_image
            .as_ref()
            .and_then(|v| self.check("containerd.sandbox_image", v, image_reference));
        let pod_subnet = raw
            .pod_subnet
            .as_ref()
            .and_then(|v| self.check("containerd.pod_subnet", v, pod_subnet));
        let c = Containerd {
            enable: raw.enable.unwrap_or(true),
            cri: raw.cri.unwrap_or(false),
            snapshotter,
            state,
            sandbox_image,
            pod_subnet,
            events: raw.events.unwrap_or(true),
        };
        if let Some(span) = raw.pod_subnet.as_ref().map(Spanned::span) {
            self.check_pod_network(&c, span, firewall, kernel, services);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use std::path::Path;

    fn containerd(text: &str) -> Result<Containerd, String> {
        parse(text, Path::new("/cfg/host.toml"))
            .map(|c| c.containerd)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sections() {
        let on = Containerd {
            enable: true,
            ..Containerd::default()
        };
        // (text, expected)
        let cases: Vec<(&str, Containerd)> = vec![
            ("", Containerd::default()),
            ("[containerd]\n", on.clone()),
            (
                "[containerd]\nenable = false\n",
                Containerd::default(),
            ),
            (
                "[containerd]\nevents = false\n",
                Containerd {
                    events: false,
                    ..on.clone()
                },
            ),
            (
                "[containerd]\ncri = true\nsnapshotter = \"native\"\nstate = \"disk\"\nsandbox_image = \"registry.k8s.io/pause:3.6\"\n",
                Containerd {
                    cri: true,
                    snapshotter: Snapshotter::Native,
                    state: StateStorage::Disk,
                    sandbox_image: Some("registry.k8s.io/pause:3.6".into()),
                    ..on.clone()
                },
            ),
            (
                "[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n",
                Containerd {
                    cri: true,
                    pod_subnet: Cidr::try_from("10.88.0.0/16").ok(),
                    ..on.clone()
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(containerd(text).unwrap(), want, "{text}");
        }
        let pods = containerd("[containerd]\ncri = true\npod_subnet = \"10.88.0.0/16\"\n").unwrap();
        assert_eq!(pods.required_modules(), ["overlay", "bridge", "veth"]);
        assert_eq!(on.required_modules(), ["overlay"]);
        assert!(Containerd::default().required_modules().is_empty());
    }

    #[test]
    fn bad_values_are_reported() {
        // (text, expected fragment of the message)
        let cases = [
            (
                "[containerd]\nsnapshotter = \"zfs\"\n",
                "host.toml:2:15: containerd.snapshotter: `zfs` is not one of",
            ),
            (
                "[containerd]\nstate = \"nfs\"\n",
                "host.toml:2:9: containerd.state: `nfs` is not one of",
            ),
            (
                "[containerd]\nsandbox_image = \"a b\"\n",
                "containerd.sandbox_image: `a b` is not an image reference",
            ),
            ("[containerd]\nfoo = 1\n", "unknown field `foo`"),
            ("[containerd]\nevents = \"yes\"\n", "containerd.events"),
        ];
        for (text, want) in cases {
            let err = containerd(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
