//! What `[control]`, `[logs]`, `[metrics]` and `[containerd] events` add to an image.
//!
//! Every image gets the static `rampart` CLI at [`CLI_PATH`]; each service that
//! [`rampart_config::operate::operate_services`] synthesizes gets its binary
//! (`rampart-relay`, `rampart-logd`, `rampart-metrics`, `rampart-events`), all taken from beside
//! the init binary like `rampart-dhcp`. With `rampart-events`, containerd's client `ctr` comes
//! from the build machine's [`CTR_PATH`] unless `[[image.files]]` already provides it. The
//! host channel needs the `virtio_console` driver and, on Debian's modular kernel, the
//! `virtio_pci` transport its `virtio-serial-pci` device sits on: both join the module list
//! ([`modules`]). An `[[image.files]]` entry with the same target replaces any of these files.
//!
//! For `rampart-image boot`: [`control_args`] (`--control PATH`, the build machine's end of
//! the host channel) and [`HostFwd`] (`--hostfwd tcp:HOSTPORT-:GUESTPORT`).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rampart_config::operate::{self, CLI_PATH, CTR_PATH, HOST_CHANNEL_NAME};
use rampart_config::{HostConfig, ImageFile};

use crate::qemu::QemuError;

/// The CLI's file name beside the init binary.
pub const CLI_BINARY: &str = "rampart";
/// The kernel modules of the host channel, in load order: the PCI transport, then the driver
/// of the virtio-serial port.
pub const HOST_CHANNEL_MODULES: &[&str] = &["virtio_pci", "virtio_console"];

/// The file beside `init` named like the last component of `image_path`.
fn beside(init: &Path, image_path: &Path) -> PathBuf {
    let name = image_path
        .file_name()
        .map_or_else(|| PathBuf::from(CLI_BINARY), PathBuf::from);
    init.parent()
        .map_or_else(|| name.clone(), |d| d.join(&name))
}

/// `files` plus the CLI, the binaries of the synthesized services and (for `rampart-events`)
/// `ctr`, each unless an entry already provides its target; `init` is the init binary, beside
/// which rampart's own binaries are looked for.
pub fn image_files(cfg: &HostConfig, files: &[ImageFile], init: &Path) -> Vec<ImageFile> {
    let mut out = files.to_vec();
    let mut wanted: Vec<(PathBuf, PathBuf)> = Vec::new();
    let cli = PathBuf::from(CLI_PATH);
    wanted.push((beside(init, &cli), cli));
    for bin in operate::service_binaries(cfg) {
        wanted.push((beside(init, &bin), bin));
    }
    let events = operate::operate_services(cfg)
        .iter()
        .any(|s| s.name.as_str() == operate::EVENTS_SERVICE);
    if events {
        wanted.push((PathBuf::from(CTR_PATH), PathBuf::from(CTR_PATH)));
    }
    for (source, target) in wanted {
        if !out.iter().any(|f| f.target == target) {
            out.push(ImageFile {
                source,
                target,
                mode: Some(0o755),
            });
        }
    }
    out
}

/// The host channel's modules that `already` does not list (none without `host_channel`).
pub fn modules(cfg: &HostConfig, already: &[String]) -> Vec<String> {
    if !cfg.control.host_channel {
        return Vec::new();
    }
    HOST_CHANNEL_MODULES
        .iter()
        .filter(|m| !already.iter().any(|a| a == *m))
        .map(|m| (*m).to_owned())
        .collect()
}

/// The QEMU chardev id of the control channel.
pub const CONTROL_CHARDEV: &str = "rampartctl";

/// QEMU's arguments for `rampart-image boot --control PATH`: a virtio-serial controller, a
/// unix socket server at `path` (created by QEMU, not waited on) and a port named
/// [`HOST_CHANNEL_NAME`] backed by it, which `rampart-relay` connects to the guest's control
/// socket. `rampart --socket PATH` then talks to the guest from the build machine.
pub fn control_args(path: &Path) -> Vec<String> {
    // QEMU's option syntax escapes a comma by doubling it.
    let path = path.to_string_lossy().replace(',', ",,");
    vec![
        "-device".into(),
        "virtio-serial-pci".into(),
        "-chardev".into(),
        format!("socket,id={CONTROL_CHARDEV},path={path},server=on,wait=off"),
        "-device".into(),
        format!("virtserialport,chardev={CONTROL_CHARDEV},name={HOST_CHANNEL_NAME}"),
    ]
}

/// The transport of a [`HostFwd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwdProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One `--hostfwd`: QEMU user networking forwards `host_addr:host_port` on the build machine
/// to `guest_port` in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwd {
    /// TCP or UDP.
    pub protocol: FwdProtocol,
    /// The build machine's address to listen on; `127.0.0.1` unless given.
    pub host_addr: Ipv4Addr,
    /// The build machine's port.
    pub host_port: u16,
    /// The guest address; QEMU's default (the first DHCP address, `10.0.2.15`) when absent.
    pub guest_addr: Option<Ipv4Addr>,
    /// The guest port.
    pub guest_port: u16,
}

impl std::str::FromStr for HostFwd {
    type Err = QemuError;
    /// `tcp:HOSTPORT-:GUESTPORT`, `udp:HOSTPORT-:GUESTPORT`, or QEMU's own
    /// `tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`.
    fn from_str(s: &str) -> Result<Self, QemuError> {
        let bad = || QemuError::BadHostFwd {
            value: s.to_string(),
        };
        let (proto, rest) = s.split_once(':').ok_or_else(bad)?;
        let protocol = match proto {
            "tcp" => FwdProtocol::Tcp,
            "udp" => FwdProtocol::Udp,
            _ => return Err(bad()),
        };
        let (host, guest) = rest.split_once('-').ok_or_else(bad)?;
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => Ok(n),
            _ => Err(bad()),
        };
        let addr = |a: &str| -> Result<Option<Ipv4Addr>, QemuError> {
            if a.is_empty() {
                Ok(None)
            } else {
                a.parse().map(Some).map_err(|_| bad())
            }
        };
        let (host_addr, host_port) = match host.rsplit_once(':') {
            Some((a, p)) => (addr(a)?, port(p)?),
            None => (None, port(host)?),
        };
        let (guest_addr, guest_port) = guest.rsplit_once(':').ok_or_else(bad)?;
        Ok(HostFwd {
            protocol,
            host_addr: host_addr.unwrap_or(Ipv4Addr::LOCALHOST),
            host_port,
            guest_addr: addr(guest_addr)?,
            guest_port: port(guest_port)?,
        })
    }
}

impl fmt::Display for HostFwd {
    /// QEMU's `hostfwd=` value: `tcp:127.0.0.1:8080-:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            FwdProtocol::Tcp => "tcp",
            FwdProtocol::Udp => "udp",
        };
        let guest = self.guest_addr.map(|a| a.to_string()).unwrap_or_default();
        write!(
            f,
            "{proto}:{}:{}-{guest}:{}",
            self.host_addr, self.host_port, self.guest_port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> HostConfig {
        rampart_config::parse(text, Path::new("/cfg/host.toml")).unwrap()
    }

    const CONTAINERD: &str =
        "[[service]]\nname = \"containerd\"\nexec = [\"/usr/bin/containerd\"]\n";
    const FORWARD: &str =
        "[[logs.forward]]\nprotocol = \"syslog-udp\"\naddress = \"10.0.2.2\"\nport = 514\n";

    /// `target <- source` for each added file.
    fn added(text: &str) -> Vec<String> {
        image_files(&cfg(text), &[], Path::new("/build/rampart-init"))
            .iter()
            .map(|f| {
                assert_eq!(f.mode, Some(0o755));
                format!("{} <- {}", f.target.display(), f.source.display())
            })
            .collect()
    }

    #[test]
    fn files_exactly_when_configured() {
        let cli = "/usr/bin/rampart <- /build/rampart";
        // (config, files added)
        let cases: Vec<(String, Vec<&str>)> = vec![
            (String::new(), vec![cli]),
            ("[control]\nhost_channel = false\n".into(), vec![cli]),
            (
                "[control]\nhost_channel = true\n".into(),
                vec![cli, "/sbin/rampart-relay <- /build/rampart-relay"],
            ),
            ("[logs]\nqueue = 100\n".into(), vec![cli]),
            (
                FORWARD.into(),
                vec![cli, "/sbin/rampart-logd <- /build/rampart-logd"],
            ),
            ("[metrics]\nenabled = false\n".into(), vec![cli]),
            (
                "[metrics]\nenabled = true\n".into(),
                vec![cli, "/sbin/rampart-metrics <- /build/rampart-metrics"],
            ),
            ("[containerd]\n".into(), vec![cli]),
            (
                CONTAINERD.into(),
                vec![
                    cli,
                    "/sbin/rampart-events <- /build/rampart-events",
                    "/usr/bin/ctr <- /usr/bin/ctr",
                ],
            ),
            (format!("[containerd]\nevents = false\n{CONTAINERD}"), vec![cli]),
            (
                format!("[control]\nhost_channel = true\n[metrics]\nenabled = true\n{FORWARD}{CONTAINERD}"),
                vec![
                    cli,
                    "/sbin/rampart-relay <- /build/rampart-relay",
                    "/sbin/rampart-logd <- /build/rampart-logd",
                    "/sbin/rampart-metrics <- /build/rampart-metrics",
                    "/sbin/rampart-events <- /build/rampart-events",
                    "/usr/bin/ctr <- /usr/bin/ctr",
                ],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(added(&text), want, "{text}");
        }
    }

    #[test]
    fn image_files_entries_win() {
        let c = cfg(&format!(
            "[[image.files]]\nsource = \"/opt/ctr\"\ntarget = \"/usr/bin/ctr\"\n\
             [[image.files]]\nsource = \"/opt/rampart\"\ntarget = \"/usr/bin/rampart\"\n{CONTAINERD}"
        ));
        let f = image_files(&c, &c.image.files, Path::new("/build/rampart-init"));
        let got: Vec<String> = f
            .iter()
            .map(|f| format!("{} <- {}", f.target.display(), f.source.display()))
            .collect();
        assert_eq!(
            got,
            [
                "/usr/bin/ctr <- /opt/ctr",
                "/usr/bin/rampart <- /opt/rampart",
                "/sbin/rampart-events <- /build/rampart-events"
            ]
        );
        // Adding twice adds nothing more.
        assert_eq!(
            image_files(&c, &f, Path::new("/build/rampart-init")).len(),
            f.len()
        );
    }

    #[test]
    fn build_inputs_carry_them() {
        use crate::build::{resolve_inputs, BuildRequest};
        let req = BuildRequest {
            config: "/cfg/host.toml".into(),
            kernel: Some("/k/vmlinuz".into()),
            modules: Some("/k/modules".into()),
            ..Default::default()
        };
        let init = Some(PathBuf::from("/build/rampart-init"));
        let c = cfg(&format!("[control]\nhost_channel = true\n{CONTAINERD}"));
        let i = resolve_inputs(&c, &req, init.clone()).unwrap();
        let mods: Vec<&str> = i.modules.iter().map(String::as_str).collect();
        assert_eq!(
            mods.get(mods.len() - 2..),
            Some(&["virtio_pci", "virtio_console"][..])
        );
        let targets: Vec<String> = i
            .files
            .iter()
            .map(|f| f.target.display().to_string())
            .collect();
        for t in [
            "/usr/bin/rampart",
            "/sbin/rampart-relay",
            "/sbin/rampart-events",
            "/usr/bin/ctr",
        ] {
            assert!(targets.iter().any(|x| x == t), "{t}: {targets:?}");
        }
        // The synthesized services are not service binaries taken from the build host.
        let hosts: Vec<&PathBuf> = i.host_binaries.iter().map(|(_, p)| p).collect();
        assert_eq!(hosts, [Path::new("/usr/bin/containerd")]);
        // Without the host channel, no virtio modules; the CLI is still there.
        let c = cfg("");
        let i = resolve_inputs(&c, &req, init).unwrap();
        assert!(!i.modules.iter().any(|m| m.starts_with("virtio")));
        assert!(i.files.iter().any(|f| f.target == Path::new(CLI_PATH)));
    }

    #[test]
    fn control_channel_args() {
        assert_eq!(
            control_args(Path::new("/tmp/ctl.sock")),
            [
                "-device",
                "virtio-serial-pci",
                "-chardev",
                "socket,id=rampartctl,path=/tmp/ctl.sock,server=on,wait=off",
                "-device",
                "virtserialport,chardev=rampartctl,name=org.rampart.control"
            ]
        );
        assert_eq!(
            control_args(Path::new("/tmp/a,b.sock"))[3],
            "socket,id=rampartctl,path=/tmp/a,,b.sock,server=on,wait=off"
        );
    }

    #[test]
    fn hostfwd_table() {
        // (argument, QEMU's hostfwd value or None when refused)
        let cases: &[(&str, Option<&str>)] = &[
            ("tcp:19100-:9100", Some("tcp:127.0.0.1:19100-:9100")),
            ("udp:5514-:514", Some("udp:127.0.0.1:5514-:514")),
            ("tcp::8080-:80", Some("tcp:127.0.0.1:8080-:80")),
            ("tcp:0.0.0.0:8080-:80", Some("tcp:0.0.0.0:8080-:80")),
            (
                "tcp:127.0.0.2:8080-10.0.2.15:80",
                Some("tcp:127.0.0.2:8080-10.0.2.15:80"),
            ),
            ("tcp:8080-80", None),
            ("tcp:8080:80", None),
            ("sctp:1-:2", None),
            ("tcp:0-:80", None),
            ("tcp:8080-:0", None),
            ("tcp:70000-:80", None),
            ("tcp:+1-:80", None),
            ("tcp:localhost:1-:2", None),
            ("tcp:1-fd00::1:2", None),
            ("", None),
            ("tcp", None),
        ];
        for (arg, want) in cases {
            let got = arg.parse::<HostFwd>().map(|h| h.to_string()).ok();
            assert_eq!(got.as_deref(), *want, "{arg}");
        }
        let err = "x".parse::<HostFwd>().unwrap_err().to_string();
        assert!(err.contains("tcp:HOSTPORT-:GUESTPORT"), "{err}");
    }

    #[test]
    fn host_channel_modules() {
        assert!(modules(&cfg(""), &[]).is_empty());
        let c = cfg("[control]\nhost_channel = true\n");
        assert_eq!(modules(&c, &[]), ["virtio_pci", "virtio_console"]);
        assert_eq!(modules(&c, &["virtio_pci".into()]), ["virtio_console"]);
        assert!(modules(&c, &["virtio_console".into(), "virtio_pci".into()]).is_empty());
    }
}
