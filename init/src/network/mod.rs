//! The host network, from `[network]`: loopback, links, MTU, static addresses and routes over
//! rtnetlink (no `ip` binary), the `accept_ra` sysctls that follow `slaac`, the generated
//! `/etc/hosts` and `/etc/resolv.conf`, and one supervised DHCP client service per interface
//! with `dhcp = true`.
//!
//! Boot runs this after the firewall is in place ([`crate::boot`]), so no interface is up
//! before the policy is. Failing to configure an interface is not fatal: the error is logged
//! with the interface and the operation, the other interfaces are still configured, and the
//! host stays firewalled (default deny) whatever state the interface is left in.

pub mod files;
pub mod plan;
pub mod rtnl;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rampart_config::network::{Interface, Network, Selector, DHCP_CLIENT_PATH};
use rampart_config::{
    Capability, HostConfig, Namespace, Restart, SeccompProfile, Service, ServiceName,
};

pub use plan::{ops, plan, NetPlan, Op};
use rtnl::{Request, RouteOrigin, RtnlError, Socket};

/// How long boot waits for a configured interface to appear (drivers probe asynchronously).
pub const APPEAR_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the kernel lists interfaces, in PID 1.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// Why an interface could not be (fully) configured.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No interface matches the selector.
    #[error("{selector}: no such interface (waited {waited_ms} ms)")]
    NotFound {
        /// The selector, e.g. `eth0` or `mac 52:54:00:12:34:56`.
        selector: String,
        /// How long boot waited for it.
        waited_ms: u128,
    },
    /// The interface's index could not be read.
    #[error("{iface}: read {path}: {source}")]
    Index {
        /// The interface.
        iface: String,
        /// The sysfs file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The rtnetlink socket could not be opened.
    #[error("rtnetlink: {0}")]
    Socket(RtnlError),
    /// A netlink operation failed.
    #[error("{iface}: {source}")]
    Netlink {
        /// The interface.
        iface: String,
        /// The failed request (its message names the operation).
        source: RtnlError,
    },
    /// A sysctl could not be written.
    #[error("{iface}: set {path}={value}: {source}")]
    Sysctl {
        /// The interface.
        iface: String,
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Where the kernel's files are (parameters, so tests can use a temp tree).
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/sys/class/net`.
    pub sys_class_net: PathBuf,
    /// `/proc/sys`.
    pub proc_sys: PathBuf,
}

/// An interface found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
}

fn read_index(sys_class_net: &Path, name: &str) -> Result<u32, NetworkError> {
    let path = sys_class_net.join(name).join("ifindex");
    let text = std::fs::read_to_string(&path).map_err(|source| NetworkError::Index {
        iface: name.to_owned(),
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| NetworkError::Index {
        iface: name.to_owned(),
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
    })
}

/// Finds the interface a selector names, now (no waiting).
pub fn find(selector: &Selector, sys_class_net: &Path) -> Option<String> {
    match selector {
        Selector::Name(n) => sys_class_net
            .join(n.as_str())
            .exists()
            .then(|| n.as_str().to_owned()),
        Selector::Mac(mac) => {
            let want = mac.to_string();
            let mut names: Vec<String> = std::fs::read_dir(sys_class_net)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.into_iter().find(|n| {
                std::fs::read_to_string(sys_class_net.join(n).join("address"))
                    .is_ok_and(|a| a.trim().eq_ignore_ascii_case(&want))
            })
        }
    }
}

/// Finds the interface a selector names, waiting up to `wait` for it to appear.
pub fn resolve(
    selector: &Selector,
    sys_class_net: &Path,
    wait: Duration,
) -> Result<Resolved, NetworkError> {
    let started = Instant::now();
    loop {
        if let Some(name) = find(selector, sys_class_net) {
            let index = read_index(sys_class_net, &name)?;
            return Ok(Resolved { name, index });
        }
        if started.elapsed() >= wait {
            return Err(NetworkError::NotFound {
                selector: selector.to_string(),
                waited_ms: started.elapsed().as_millis(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What [`configure`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Interfaces fully configured (name, addresses as text), loopback first.
    pub up: Vec<(String, Vec<String>)>,
    /// Interfaces deliberately left down.
    pub down: Vec<String>,
    /// Every failure; the interface concerned may be partly configured.
    pub failures: Vec<NetworkError>,
}

fn run_ops(
    sock: &mut Socket,
    iface: &Resolved,
    ops: &[Op],
    proc_sys: &Path,
) -> Result<(), NetworkError> {
    let index = iface.index;
    for op in ops {
        let req = match op {
            Op::Sysctl { path, value } => {
                let file = proc_sys.join(path);
                match std::fs::write(&file, value) {
                    Ok(()) => {}
                    // A kernel without IPv6 has no such key: nothing to turn off.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(NetworkError::Sysctl {
                            iface: iface.name.clone(),
                            path: file,
                            value: (*value).to_owned(),
                            source,
                        })
                    }
                }
                continue;
            }
            Op::Mtu(mtu) => Request::Mtu { index, mtu: *mtu },
            Op::Address(addr) => Request::AddAddress { index, addr: *addr },
            Op::Link(up) => Request::Link { index, up: *up },
            Op::Route(r) => Request::AddRoute {
                index,
                destination: r.destination,
                gateway: r.gateway,
                origin: RouteOrigin::Static,
                metric: None,
            },
        };
        sock.request(&req).map_err(|source| NetworkError::Netlink {
            iface: iface.name.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Brings loopback up and configures every interface of `plan`, in order. Never fails as a
/// whole: failures are collected in the report (the caller logs them).
pub fn configure(plan: &NetPlan, paths: &Paths, wait: Duration) -> Report {
    let mut report = Report::default();
    let mut sock = match Socket::open() {
        Ok(s) => s,
        Err(e) => {
            report.failures.push(NetworkError::Socket(e));
            return report;
        }
    };
    let lo = resolve(
        &Selector::Name(
            match rampart_config::firewall::InterfaceName::try_from("lo") {
                Ok(n) => n,
                Err(_) => return report,
            },
        ),
        &paths.sys_class_net,
        Duration::ZERO,
    );
    match lo.and_then(|lo| {
        run_ops(&mut sock, &lo, &plan::loopback_ops(), &paths.proc_sys)?;
        Ok(lo)
    }) {
        Ok(lo) => report
            .up
            .push((lo.name, vec!["127.0.0.1/8".into(), "::1/128".into()])),
        Err(e) => report.failures.push(e),
    }
    let started = Instant::now();
    for iface in &plan.interfaces {
        // One shared wait budget: a missing interface does not delay the others much.
        let left = wait.saturating_sub(started.elapsed());
        let resolved = match resolve(&iface.selector, &paths.sys_class_net, left) {
            Ok(r) => r,
            Err(e) => {
                report.failures.push(e);
                continue;
            }
        };
        let ops = plan::ops(iface, &resolved.name);
        match run_ops(&mut sock, &resolved, &ops, &paths.proc_sys) {
            Ok(()) if iface.up => report.up.push((
                resolved.name,
                iface.addresses.iter().map(ToString::to_string).collect(),
            )),
            Ok(()) => report.down.push(resolved.name),
            Err(e) => report.failures.push(e),
        }
    }
    report
}

/// The console lines of a report: `network: eth0 up (10.0.2.15/24)`, and one per failure.
pub fn report_lines(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for (name, addrs) in &report.up {
        if addrs.is_empty() {
            out.push(format!("network: {name} up"));
        } else {
            out.push(format!("network: {name} up ({})", addrs.join(", ")));
        }
    }
    for name in &report.down {
        out.push(format!("network: {name} down"));
    }
    for e in &report.failures {
        out.push(format!("network: error: {e}"));
    }
    out
}

/// The DHCP client service of `iface`: `rampart-dhcp` with only `CAP_NET_ADMIN` and
/// `CAP_NET_RAW`, `no_new_privs`, its own mount namespace (read-only but for its lease folder
/// and `resolv.conf`), the default seccomp filter, restarted always.
pub fn dhcp_service(iface: &Interface, config: &Path, run_dir: &Path) -> Option<Service> {
    let name = ServiceName::try_from(iface.dhcp_service_name().as_str()).ok()?;
    let selector = match &iface.selector {
        Selector::Name(n) => vec!["--interface".to_owned(), n.as_str().to_owned()],
        Selector::Mac(m) => vec!["--mac".to_owned(), m.to_string()],
    };
    let mut exec = vec![DHCP_CLIENT_PATH.to_owned()];
    exec.extend(selector);
    exec.extend([
        "--config".to_owned(),
        config.display().to_string(),
        "--run-dir".to_owned(),
        run_dir.display().to_string(),
    ]);
    let mut s = Service::new(name, exec);
    s.restart = Restart::Always;
    s.capabilities = ["CAP_NET_ADMIN", "CAP_NET_RAW"]
        .into_iter()
        .filter_map(|c| Capability::try_from(c).ok())
        .collect();
    s.no_new_privs = true;
    s.namespaces = vec![Namespace::Mount];
    s.read_only_root = true;
    s.writable_paths = vec![
        run_dir.join(files::DHCP_DIR),
        run_dir.join(files::RESOLV_FILE),
    ];
    s.seccomp = Some(SeccompProfile::Default);
    Some(s)
}

/// Appends the DHCP client services of `cfg`'s interfaces to its services (boot does this right
/// after loading the config, so they get cgroups and start like any service).
pub fn add_dhcp_services(cfg: &mut HostConfig, config: &Path, run_dir: &Path) {
    let extra: Vec<Service> = cfg
        .network
        .interfaces
        .iter()
        .filter(|i| i.dhcp)
        .filter_map(|i| dhcp_service(i, config, run_dir))
        .collect();
    cfg.services.extend(extra);
}

/// Writes `hosts` and `resolv.conf` into `run_dir` and binds them over `/etc` (when `bind`).
pub fn install_files(
    run_dir: &Path,
    hostname: &str,
    net: &Network,
    bind: bool,
) -> Result<(), files::FilesError> {
    let (hosts, resolv) = files::write(run_dir, hostname, net)?;
    if bind {
        files::bind_read_only(&hosts, Path::new(files::ETC_HOSTS))?;
        files::bind_read_only(&resolv, Path::new(files::ETC_RESOLV))?;
    }
    Ok(())
}

#[cfg(test)]
mod netns_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml: &str) -> HostConfig {
        match rampart_config::parse(toml, Path::new("host.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn finds_by_name_and_mac() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mac, index) in [
            ("lo", "00:00:00:00:00:00", 1),
            ("eth0", "52:54:00:12:34:56", 2),
            ("eth1", "52:54:00:12:34:57", 3),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
            std::fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
        }
        let c = cfg(r#"
[[network.interface]]
mac = "52:54:00:12:34:57"
[[network.interface]]
name = "eth0"
[[network.interface]]
name = "eth9"
[[network.interface]]
mac = "52:54:00:12:34:99"
"#);
        let sel: Vec<&Selector> = c.network.interfaces.iter().map(|i| &i.selector).collect();
        let r = |s: &Selector| resolve(s, dir.path(), Duration::ZERO);
        assert_eq!(
            r(sel[0]).unwrap(),
            Resolved {
                name: "eth1".into(),
                index: 3
            }
        );
        assert_eq!(r(sel[1]).unwrap().index, 2);
        let e = r(sel[2]).unwrap_err().to_string();
        assert!(e.starts_with("eth9: no such interface"), "{e}");
        let e = r(sel[3]).unwrap_err().to_string();
        assert!(e.starts_with("mac 52:54:00:12:34:99: no such"), "{e}");
    }

    #[test]
    fn dhcp_services_are_least_privilege() {
        let mut c = cfg(r#"
[[network.interface]]
name = "eth0"
dhcp = true
[[network.interface]]
mac = "52:54:00:12:34:57"
dhcp = true
[[network.interface]]
name = "eth2"
addresses = ["10.1.0.2/24"]
"#);
        add_dhcp_services(
            &mut c,
            Path::new("/etc/rampart/host.toml"),
            Path::new("/run/rampart"),
        );
        assert_eq!(c.services.len(), 2);
        let s = &c.services[0];
        assert_eq!(s.name.as_str(), "dhcp-eth0");
        assert_eq!(
            s.exec,
            [
                "/sbin/rampart-dhcp",
                "--interface",
                "eth0",
                "--config",
                "/etc/rampart/host.toml",
                "--run-dir",
                "/run/rampart"
            ]
        );
        let caps: Vec<&str> = s.capabilities.iter().map(|c| c.name()).collect();
        assert_eq!(caps, ["CAP_NET_ADMIN", "CAP_NET_RAW"]);
        assert!(s.no_new_privs && s.read_only_root);
        assert_eq!(s.namespaces, [Namespace::Mount]);
        assert_eq!(s.seccomp, Some(SeccompProfile::Default));
        assert_eq!(s.restart, Restart::Always);
        assert_eq!(
            s.writable_paths,
            [
                PathBuf::from("/run/rampart/dhcp"),
                PathBuf::from("/run/rampart/resolv.conf")
            ]
        );
        assert_eq!(c.services[1].name.as_str(), "dhcp-525400123457");
        assert_eq!(c.services[1].exec[1..3], ["--mac", "52:54:00:12:34:57"]);
    }

    #[test]
    fn report_lines_name_interface_and_operation() {
        let report = Report {
            up: vec![
                ("lo".into(), vec![]),
                ("eth0".into(), vec!["10.0.2.15/24".into()]),
            ],
            down: vec!["eth1".into()],
            failures: vec![NetworkError::Netlink {
                iface: "eth2".into(),
                source: RtnlError::Refused {
                    op: "add address 10.0.2.15/24".into(),
                    source: std::io::Error::from_raw_os_error(libc::EEXIST),
                    detail: None,
                },
            }],
        };
        assert_eq!(
            report_lines(&report),
            [
                "network: lo up",
                "network: eth0 up (10.0.2.15/24)",
                "network: eth1 down",
                "network: error: eth2: add address 10.0.2.15/24: File exists (os error 17)",
            ]
        );
    }
}
