//! `[control]`, `[logs]` and `[metrics]`: operating a host without a shell.
//!
//! PID 1 always serves its control API on [`CONTROL_SOCKET`] (root only); `[control]` bounds it
//! and says whether a virtio-serial port named [`HOST_CHANNEL_NAME`] is relayed to it, so the
//! `rampart` CLI can run on the machine that boots the guest. `[logs]` sizes PID 1's log ring
//! and lists remote collectors; `[metrics]` opens a Prometheus endpoint. Nothing that talks to
//! the network runs inside PID 1: [`operate_services`] synthesizes the small supervised
//! services that do (`rampart-relay`, `rampart-logd`, `rampart-metrics`, and
//! `rampart-events` for containerd's audit trail), each with no capability unless it needs
//! one, and [`merge_into_firewall`] opens the firewall for exactly the listed collectors and
//! the enabled metrics port. Service names starting with [`RESERVED_SERVICE_PREFIX`] are
//! refused in `[[service]]`. Every key is documented in `docs/config.md`.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::firewall::{
    Cidr, Direction, Family, Firewall, Port, PortRange, Protocol, Rule, Verdict,
};
use crate::raw::RawSize;
use crate::service::{
    parse_duration, Capability, Namespace, RawDuration, RawDurationRef, RawService, SeccompProfile,
    Service,
};
use crate::types::{Restart, ServiceName, Size};
use crate::{HostConfig, Validator, IMAGE_CONFIG_PATH};

/// PID 1's control socket (mode 0600, root only).
pub const CONTROL_SOCKET: &str = "/run/rampart/control.sock";
/// The name of the virtio-serial port relayed to the control socket.
pub const HOST_CHANNEL_NAME: &str = "org.rampart.control";
/// Where the `rampart` CLI is installed in every image.
pub const CLI_PATH: &str = "/usr/bin/rampart";
/// The host-channel relay (service [`RELAY_SERVICE`]).
pub const RELAY_PATH: &str = "/sbin/rampart-relay";
/// The log forwarder (service [`LOGD_SERVICE`]).
pub const LOGD_PATH: &str = "/sbin/rampart-logd";
/// The metrics endpoint (service [`METRICS_SERVICE`]).
pub const METRICS_PATH: &str = "/sbin/rampart-metrics";
/// The container audit trail (service [`EVENTS_SERVICE`]).
pub const EVENTS_PATH: &str = "/sbin/rampart-events";
/// The service name of the host-channel relay.
pub const RELAY_SERVICE: &str = "rampart-relay";
/// The service name of the log forwarder.
pub const LOGD_SERVICE: &str = "rampart-logd";
/// The service name of the metrics endpoint.
pub const METRICS_SERVICE: &str = "rampart-metrics";
/// The service name of the container audit trail.
pub const EVENTS_SERVICE: &str = "rampart-events";
/// Service names with this prefix are rampart's own: `[[service]]` may not use them.
pub const RESERVED_SERVICE_PREFIX: &str = "rampart-";
/// containerd's command-line client, which `rampart-events` runs (`ctr events`).
pub const CTR_PATH: &str = "/usr/bin/ctr";
/// The service `rampart-events` follows.
pub const CONTAINERD_SERVICE: &str = "containerd";

/// Default of `[control] max_clients`.
pub const DEFAULT_MAX_CLIENTS: u32 = 8;
/// The most concurrent control connections that may be allowed.
pub const MAX_CLIENTS_LIMIT: u32 = 64;
/// Default of `[control] timeout`.
pub const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest `[control] timeout`.
pub const MIN_CONTROL_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `[control] timeout`.
pub const MAX_CONTROL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default of `[logs] buffer`: 1 MiB.
pub const DEFAULT_LOG_BUFFER: Size = Size::from_mib(1);
/// The smallest `[logs] buffer` in bytes.
pub const MIN_LOG_BUFFER: u64 = 64 << 10;
/// The largest `[logs] buffer` in bytes.
pub const MAX_LOG_BUFFER: u64 = 64 << 20;
/// Default of `[logs] queue`.
pub const DEFAULT_LOG_QUEUE: u32 = 10_000;
/// The smallest `[logs] queue`.
pub const MIN_LOG_QUEUE: u32 = 100;
/// The largest `[logs] queue`.
pub const MAX_LOG_QUEUE: u32 = 1_000_000;
/// The most `[[logs.forward]]` collectors.
pub const MAX_COLLECTORS: usize = 8;
/// Default of `[metrics] port`: 9100, node_exporter's.
pub const DEFAULT_METRICS_PORT: Port = Port::new(match NonZeroU16::new(9100) {
    Some(n) => n,
    None => NonZeroU16::MIN,
});
/// The most `[metrics] allow` networks.
pub const MAX_METRICS_ALLOW: usize = 64;

/// `[control]`: the control socket's bounds and the host channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Whether the virtio-serial port [`HOST_CHANNEL_NAME`] is relayed to the control socket.
    pub host_channel: bool,
    /// Concurrent control connections (1 to [`MAX_CLIENTS_LIMIT`]); more are refused.
    pub max_clients: u32,
    /// Idle timeout of one connection (1 s to 1 h).
    pub timeout: Duration,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            host_channel: false,
            max_clients: DEFAULT_MAX_CLIENTS,
            timeout: DEFAULT_CONTROL_TIMEOUT,
        }
    }
}

/// `[logs]`: PID 1's log ring and the remote collectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logs {
    /// The size of PID 1's in-memory log ring (64 KiB to 64 MiB).
    pub buffer: Size,
    /// Lines the forwarder queues per collector before it drops (100 to 1,000,000).
    pub queue: u32,
    /// `[[logs.forward]]`, in file order (at most [`MAX_COLLECTORS`], none twice).
    pub forward: Vec<Collector>,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            buffer: DEFAULT_LOG_BUFFER,
            queue: DEFAULT_LOG_QUEUE,
            forward: Vec::new(),
        }
    }
}

/// One `[[logs.forward]]`: a remote log collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Collector {
    /// The wire format and transport.
    pub protocol: LogProtocol,
    /// The collector's address (no names: there is no DNS at boot).
    pub address: IpAddr,
    /// The collector's port.
    pub port: Port,
}

/// How lines are sent to a collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogProtocol {
    /// RFC 5424 syslog, one message per UDP datagram (RFC 5426).
    SyslogUdp,
    /// RFC 5424 syslog over TCP with octet-counting framing (RFC 6587).
    SyslogTcp,
    /// One JSON object per line over TCP.
    JsonTcp,
}

impl LogProtocol {
    /// Every protocol, in documentation order.
    pub const ALL: [LogProtocol; 3] = [
        LogProtocol::SyslogUdp,
        LogProtocol::SyslogTcp,
        LogProtocol::JsonTcp,
    ];

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogProtocol::SyslogUdp => "syslog-udp",
            LogProtocol::SyslogTcp => "syslog-tcp",
            LogProtocol::JsonTcp => "json-tcp",
        }
    }

    /// The transport, as the firewall matches it.
    pub fn transport(self) -> Protocol {
        match self {
            LogProtocol::SyslogUdp => Protocol::Udp,
            LogProtocol::SyslogTcp | LogProtocol::JsonTcp => Protocol::Tcp,
        }
    }
}

impl fmt::Display for LogProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for LogProtocol {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        LogProtocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not one of \"syslog-udp\", \"syslog-tcp\", \"json-tcp\"")
            })
    }
}

/// `[metrics]`: the Prometheus text endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Whether `rampart-metrics` runs and its port is opened.
    pub enabled: bool,
    /// The listen address (`0.0.0.0`: every IPv4 address; `::`: every address).
    pub address: IpAddr,
    /// The listen port.
    pub port: Port,
    /// Source networks the firewall lets in; empty: any.
    pub allow: Vec<Cidr>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: false,
            address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_METRICS_PORT,
            allow: Vec::new(),
        }
    }
}

/// The memory limit of `rampart-logd`: 32 MiB plus 1 KiB per line it may queue.
pub fn logd_memory_max(logs: &Logs) -> Size {
    let collectors = u64::try_from(logs.forward.len()).unwrap_or(u64::MAX);
    let queued_kib = u64::from(logs.queue).saturating_mul(collectors);
    let mib = 32u64.saturating_add(queued_kib.div_ceil(1024));
    Size::from_mib(mib)
}

/// A least-privilege service of rampart's own: restarted always, no capabilities,
/// no_new_privs, its own mount namespace with a read-only root, the default seccomp filter.
fn own_service(name: &str, exec: Vec<String>, memory_max: Size, pids_max: u64) -> Option<Service> {
    let name = ServiceName::try_from(name).ok()?;
    let mut s = Service::new(name, exec);
    s.restart = Restart::Always;
    s.capabilities = Vec::new();
    s.no_new_privs = true;
    s.namespaces = vec![Namespace::Mount];
    s.read_only_root = true;
    s.writable_paths = Vec::new();
    s.seccomp = Some(SeccompProfile::Default);
    s.limits.memory_max = Some(memory_max);
    s.limits.pids_max = Some(pids_max);
    Some(s)
}

/// The services rampart adds for `[control]`, `[logs]`, `[metrics]` and
/// `[containerd] events`, ready to append to `cfg.services` (boot does, right after loading
/// the config; `rampart-image` puts their binaries in the image):
///
/// - `rampart-relay` when `control.host_channel`;
/// - `rampart-logd` when `logs.forward` is not empty;
/// - `rampart-metrics` when `metrics.enabled` (`CAP_NET_BIND_SERVICE` only for a port
///   below 1024);
/// - `rampart-events` when `containerd.events` and a service named `containerd` exists
///   (started after it).
pub fn operate_services(cfg: &HostConfig) -> Vec<Service> {
    let config = IMAGE_CONFIG_PATH.to_owned();
    let mut out = Vec::new();
    if cfg.control.host_channel {
        out.extend(own_service(
            RELAY_SERVICE,
            vec![
                RELAY_PATH.to_owned(),
                "--port-name".to_owned(),
                HOST_CHANNEL_NAME.to_owned(),
                "--socket".to_owned(),
                CONTROL_SOCKET.to_owned(),
            ],
            Size::from_mib(16),
            8,
        ));
    }
    if !cfg.logs.forward.is_empty() {
        out.extend(own_service(
            LOGD_SERVICE,
            vec![LOGD_PATH.to_owned(), "--config".to_owned(), config.clone()],
            logd_memory_max(&cfg.logs),
            16,
        ));
    }
    if cfg.metrics.enabled {
        let svc = own_service(
            METRICS_SERVICE,
            vec![METRICS_PATH.to_owned(), "--config".to_owned(), config],
            Size::from_mib(32),
            16,
        );
        out.extend(svc.map(|mut s| {
            if cfg.metrics.port.get() < 1024 {
                s.capabilities = Capability::try_from("CAP_NET_BIND_SERVICE")
                    .into_iter()
                    .collect();
            }
            s
        }));
    }
    let containerd = cfg
        .services
        .iter()
        .find(|s| s.name.as_str() == CONTAINERD_SERVICE);
    if let (true, Some(containerd)) = (cfg.containerd.events, containerd) {
        let svc = own_service(
            EVENTS_SERVICE,
            vec![
                EVENTS_PATH.to_owned(),
                "--ctr".to_owned(),
                CTR_PATH.to_owned(),
                "--audit-log".to_owned(),
                cfg.container_policy.audit_log.display().to_string(),
            ],
            // `ctr` is a Go program: room for its runtime's threads and heap.
            Size::from_mib(128),
            64,
        );
        out.extend(svc.map(|mut s| {
            s.after = vec![containerd.name.clone()];
            s
        }));
    }
    out
}

/// The binaries [`operate_services`] runs (image path), for `rampart-image`.
pub fn service_binaries(cfg: &HostConfig) -> Vec<PathBuf> {
    operate_services(cfg)
        .iter()
        .filter_map(|s| s.exec.first())
        .map(PathBuf::from)
        .collect()
}

/// Opens the firewall for `logs` and `metrics`: an output rule per collector (udp or tcp to
/// its address and port) and, when metrics are enabled, an input tcp rule to the metrics port
/// from `allow` (any source when empty) to the listen address (any when unspecified).
/// Nothing otherwise.
pub fn merge_into_firewall(logs: &Logs, metrics: &Metrics, fw: &mut Firewall) {
    let mut added: Vec<Rule> = Vec::new();
    for c in &logs.forward {
        let rule = Rule {
            direction: Direction::Out,
            protocol: c.protocol.transport(),
            ports: vec![PortRange::single(c.port)],
            source_ports: Vec::new(),
            source: Vec::new(),
            destination: vec![Cidr::host(c.address)],
            in_interface: None,
            out_interface: None,
            action: Verdict::Accept,
            comment: Some(format!(
                "log collector {} {} port {}",
                c.protocol, c.address, c.port
            )),
        };
        // Two collectors on one transport, address and port need one rule.
        let same = |r: &Rule| {
            r.protocol == rule.protocol
                && r.ports == rule.ports
                && r.destination == rule.destination
        };
        if !added.iter().any(same) {
            added.push(rule);
        }
    }
    if metrics.enabled {
        let destination = if metrics.address.is_unspecified() {
            Vec::new()
        } else {
            vec![Cidr::host(metrics.address)]
        };
        added.push(Rule {
            direction: Direction::In,
            protocol: Protocol::Tcp,
            ports: vec![PortRange::single(metrics.port)],
            source_ports: Vec::new(),
            source: metrics.allow.clone(),
            destination,
            in_interface: None,
            out_interface: None,
            action: Verdict::Accept,
            comment: Some(format!("rampart-metrics port {}", metrics.port)),
        });
    }
    fw.rules.extend(added);
}

/// `[control]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub host_channel: Option<bool>,
    pub max_clients: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<RawDuration>>,
}

/// `[logs]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogs {
    pub buffer: Option<Spanned<RawSize>>,
    pub queue: Option<Spanned<i64>>,
    #[serde(default)]
    pub forward: Vec<RawCollector>,
}

/// `[[logs.forward]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCollector {
    pub protocol: Spanned<String>,
    pub address: Spanned<String>,
    pub port: Spanned<i64>,
}

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub enabled: Option<bool>,
    pub address: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub allow: Option<Vec<Spanned<String>>>,
}

fn family(a: IpAddr) -> Family {
    if a.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// A collector's address: an IP address a packet can be sent to.
fn collector_address(s: &str) -> Result<IpAddr, String> {
    let a: IpAddr = s.parse().map_err(|_| {
        format!("`{s}` is not an IPv4 or IPv6 address (no host names: there is no DNS at boot)")
    })?;
    let broadcast = matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
    if a.is_unspecified() || a.is_multicast() || broadcast {
        return Err(format!("`{s}` is not a unicast address"));
    }
    Ok(a)
}

/// The metrics listen address: unspecified (every address) or a unicast address.
fn listen_address(s: &str) -> Result<IpAddr, String> {
    let a: IpAddr = s
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address"))?;
    let broadcast = matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
    if a.is_multicast() || broadcast {
        return Err(format!("`{s}` is not an address a server can listen on"));
    }
    Ok(a)
}

impl Validator<'_> {
    /// Refuses `[[service]]` names with the reserved `rampart-` prefix.
    pub(crate) fn reserved_service_names(&mut self, raw: &[RawService]) {
        for (i, s) in raw.iter().enumerate() {
            if s.name.get_ref().starts_with(RESERVED_SERVICE_PREFIX) {
                self.report(
                    format!("service[{i}].name"),
                    s.name.span(),
                    format!(
                        "`{}` starts with `{RESERVED_SERVICE_PREFIX}`, which is reserved for rampart's own services",
                        s.name.get_ref()
                    ),
                );
            }
        }
    }

    /// Validates `[control]`.
    pub(crate) fn control(&mut self, raw: RawControl) -> Control {
        let d = Control::default();
        let max_clients = match &raw.max_clients {
            None => d.max_clients,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v @ 1..=MAX_CLIENTS_LIMIT) => v,
                _ => {
                    self.report(
                        "control.max_clients",
                        n.span(),
                        format!("must be a whole number from 1 to {MAX_CLIENTS_LIMIT}"),
                    );
                    d.max_clients
                }
            },
        };
        let timeout = match &raw.timeout {
            None => d.timeout,
            Some(t) => {
                let r = match t.get_ref() {
                    RawDuration::Secs(n) => RawDurationRef::Secs(*n),
                    RawDuration::Text(s) => RawDurationRef::Text(s),
                };
                let parsed = parse_duration(&r).and_then(|v| {
                    if (MIN_CONTROL_TIMEOUT..=MAX_CONTROL_TIMEOUT).contains(&v) {
                        Ok(v)
                    } else {
                        Err("must be from 1s to 1h".to_owned())
                    }
                });
                parsed.unwrap_or_else(|msg| {
                    self.report("control.timeout", t.span(), msg);
                    d.timeout
                })
            }
        };
        Control {
            host_channel: raw.host_channel.unwrap_or(false),
            max_clients,
            timeout,
        }
    }

    /// Validates `[logs]` and its collectors.
    pub(crate) fn logs(&mut self, raw: RawLogs) -> Logs {
        let d = Logs::default();
        let buffer = match raw.buffer {
            None => d.buffer,
            Some(b) => {
                let span = b.span();
                let parsed = match b.into_inner() {
                    RawSize::Bytes(n) => u64::try_from(n)
                        .map_err(|_| format!("{n} is not a size"))
                        .and_then(Size::from_bytes),
                    RawSize::Text(s) => Size::parse(&s),
                }
                .and_then(|s| {
                    if (MIN_LOG_BUFFER..=MAX_LOG_BUFFER).contains(&s.bytes()) {
                        Ok(s)
                    } else {
                        Err(format!("{} bytes is outside 64K to 64M", s.bytes()))
                    }
                });
                parsed.unwrap_or_else(|msg| {
                    self.report("logs.buffer", span, msg);
                    d.buffer
                })
            }
        };
        let queue = match &raw.queue {
            None => d.queue,
            Some(q) => match u32::try_from(*q.get_ref()) {
                Ok(v @ MIN_LOG_QUEUE..=MAX_LOG_QUEUE) => v,
                _ => {
                    self.report(
                        "logs.queue",
                        q.span(),
                        format!("must be a whole number from {MIN_LOG_QUEUE} to {MAX_LOG_QUEUE}"),
                    );
                    d.queue
                }
            },
        };
        let mut forward: Vec<Collector> = Vec::new();
        for (i, c) in raw.forward.iter().enumerate() {
            let prefix = format!("logs.forward[{i}]");
            let protocol = self.check(&format!("{prefix}.protocol"), &c.protocol, |s| {
                LogProtocol::try_from(s)
            });
            let address = self.check(&format!("{prefix}.address"), &c.address, collector_address);
            let port = match Port::try_from(*c.port.get_ref()) {
                Ok(p) => Some(p),
                Err(msg) => {
                    self.report(format!("{prefix}.port"), c.port.span(), msg);
                    None
                }
            };
            if i == MAX_COLLECTORS {
                self.report(
                    prefix.clone(),
                    c.protocol.span(),
                    format!("at most {MAX_COLLECTORS} collectors"),
                );
            }
            if let (Some(protocol), Some(address), Some(port)) = (protocol, address, port) {
                let collector = Collector {
                    protocol,
                    address,
                    port,
                };
                if forward.contains(&collector) {
                    self.report(
                        prefix,
                        c.protocol.span(),
                        format!("collector {protocol} {address} port {port} is listed twice"),
                    );
                } else if i < MAX_COLLECTORS {
                    forward.push(collector);
                }
            }
        }
        Logs {
            buffer,
            queue,
            forward,
        }
    }

    /// Validates `[metrics]` (also when it is not enabled).
    pub(crate) fn metrics(&mut self, raw: RawMetrics) -> Metrics {
        let d = Metrics::default();
        let address = raw
            .address
            .as_ref()
            .and_then(|a| self.check("metrics.address", a, listen_address))
            .unwrap_or(d.address);
        let port = match &raw.port {
            None => d.port,
            Some(p) => Port::try_from(*p.get_ref()).unwrap_or_else(|msg| {
                self.report("metrics.port", p.span(), msg);
                d.port
            }),
        };
        let mut allow = Vec::new();
        let list = raw.allow.unwrap_or_default();
        for (i, c) in list.iter().enumerate() {
            let key = format!("metrics.allow[{i}]");
            let Some(net) = self.check(&key, c, |s| Cidr::try_from(s)) else {
                continue;
            };
            // A dual-stack `::` listener sees both families; any other address only its own.
            let reachable =
                (address.is_ipv6() && address.is_unspecified()) || net.family() == family(address);
            if allow.contains(&net) {
                self.report(key, c.span(), format!("{net} is listed twice"));
            } else if !reachable {
                self.report(
                    key,
                    c.span(),
                    format!(
                        "{net} is an {} network but the endpoint listens on {address} ({})",
                        net.family(),
                        family(address)
                    ),
                );
            } else if i == MAX_METRICS_ALLOW {
                self.report(
                    key,
                    c.span(),
                    format!("at most {MAX_METRICS_ALLOW} networks"),
                );
            } else if i < MAX_METRICS_ALLOW {
                allow.push(net);
            }
        }
        Metrics {
            enabled: raw.enabled.unwrap_or(false),
            address,
            port,
            allow,
        }
    }
}

#[cfg(test)]
mod tests;
