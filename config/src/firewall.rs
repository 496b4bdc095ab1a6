//! `[firewall]`: the host's nftables policy.
//!
//! The firewall is always on and drops by default; this section only says what it lets through
//! on top of the fixed baseline (loopback, established traffic, rate-limited ICMP, neighbour
//! discovery): DHCP and DNS, a container bridge with masquerade, and user rules. `rampart-init`
//! turns the validated [`Firewall`] into an nftables ruleset (`init/src/firewall`).
//!
//! A rule that can never match (an IPv4 source with an IPv6 destination, `icmp` towards IPv6
//! addresses, a rule whose every match an earlier rule already decides) or that contradicts an
//! earlier one (the same match with the opposite action) is a config error.

use crate::Validator;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use toml::Spanned;

/// ICMP and ICMPv6 packets accepted per second when `icmp_rate` is not given.
pub const DEFAULT_ICMP_RATE: u32 = 10;
/// Dropped packets logged per minute when `log_rate` is not given.
pub const DEFAULT_LOG_RATE: u32 = 10;
/// A rule expands to at most this many nftables rules (sources x destinations x ports).
pub const MAX_RULE_EXPANSION: usize = 4096;
/// The longest rule comment (nft's own limit).
pub const MAX_COMMENT_LEN: usize = 128;

/// A validated `[firewall]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    /// ICMP (and, separately, ICMPv6) packets accepted per second in `input` and `output`.
    pub icmp_rate: u32,
    /// Whether dropped packets are logged (`log prefix "rampart-drop: "`).
    pub log_drops: bool,
    /// Dropped packets logged per minute and chain when `log_drops` is on.
    pub log_rate: u32,
    /// Whether DHCPv4 client traffic (udp 68 to 67 out, 67 to 68 in) is allowed.
    pub dhcp_client: bool,
    /// Resolvers the host may send DNS queries to (udp and tcp port 53).
    pub dns: Vec<IpAddr>,
    /// Bridged container networking, when configured.
    pub containers: Option<Containers>,
    /// User rules, in file order.
    pub rules: Vec<Rule>,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall {
            icmp_rate: DEFAULT_ICMP_RATE,
            log_drops: false,
            log_rate: DEFAULT_LOG_RATE,
            dhcp_client: false,
            dns: Vec::new(),
            containers: None,
            rules: Vec::new(),
        }
    }
}

/// `[firewall.containers]`: forwarding from a container bridge out, with masquerade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containers {
    /// The bridge the containers are attached to.
    pub bridge: InterfaceName,
    /// The containers' IPv4 subnet.
    pub subnet: Cidr,
    /// The containers' IPv6 subnet, if any.
    pub subnet6: Option<Cidr>,
}

/// Which base chain a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Packets to the host (`input`).
    In,
    /// Packets from the host (`output`).
    Out,
    /// Packets routed through the host (`forward`).
    Forward,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Forward => "forward",
        })
    }
}

/// The layer 4 protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// Every protocol.
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (IPv4 only).
    Icmp,
    /// ICMPv6 (IPv6 only).
    Icmpv6,
}

impl Protocol {
    /// Whether the protocol has ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
        })
    }
}

/// What a rule does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Let them through.
    Accept,
    /// Drop them silently.
    Drop,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        })
    }
}

/// A TCP or UDP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(u16);

impl Port {
    /// The port number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// A port from a non-zero number: always valid (for defaults).
    pub const fn new(n: std::num::NonZeroU16) -> Self {
        Port(n.get())
    }
}

impl TryFrom<i64> for Port {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match u16::try_from(n) {
            Ok(p @ 1..=u16::MAX) => Ok(Port(p)),
            _ => Err(format!("{n} is not a port (1 to 65535)")),
        }
    }
}

impl TryFrom<&str> for Port {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        let n: i64 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a port (1 to 65535)"))?;
        Port::try_from(n)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An inclusive port range; a single port is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    first: Port,
    last: Port,
}

impl PortRange {
    /// A range of one port.
    pub fn single(p: Port) -> Self {
        PortRange { first: p, last: p }
    }

    /// The first port.
    pub fn first(self) -> Port {
        self.first
    }

    /// The last port (equal to the first for a single port).
    pub fn last(self) -> Port {
        self.last
    }

    /// Whether the range holds one port.
    pub fn is_single(self) -> bool {
        self.first == self.last
    }
}

impl TryFrom<&str> for PortRange {
    type Error = String;
    /// `"22"` or `"8000-8080"`.
    fn try_from(s: &str) -> Result<Self, String> {
        match s.split_once('-') {
            None => Port::try_from(s).map(PortRange::single),
            Some((a, b)) => {
                let first = Port::try_from(a)
                    .map_err(|_| format!("`{s}` is not a port range (write `1000-2000`)"))?;
                let last = Port::try_from(b)
                    .map_err(|_| format!("`{s}` is not a port range (write `1000-2000`)"))?;
                if first > last {
                    return Err(format!(
                        "`{s}` is an empty port range (the first port is above the last)"
                    ));
                }
                Ok(PortRange { first, last })
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The address family of a [`Cidr`] or address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An IPv4 or IPv6 network: an address with no bits set past the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cidr {
    /// An IPv4 network, prefix 0 to 32.
    V4(Ipv4Addr, u8),
    /// An IPv6 network, prefix 0 to 128.
    V6(Ipv6Addr, u8),
}

impl Cidr {
    /// The family.
    pub fn family(self) -> Family {
        match self {
            Cidr::V4(..) => Family::V4,
            Cidr::V6(..) => Family::V6,
        }
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        match self {
            Cidr::V4(_, p) | Cidr::V6(_, p) => p,
        }
    }

    /// The network address in network byte order (4 or 16 bytes).
    pub fn octets(self) -> Vec<u8> {
        match self {
            Cidr::V4(a, _) => a.octets().to_vec(),
            Cidr::V6(a, _) => a.octets().to_vec(),
        }
    }

    /// The network of one address (a /32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Cidr::V4(a, 32),
            IpAddr::V6(a) => Cidr::V6(a, 128),
        }
    }

    /// Whether this is a single address.
    pub fn is_host(self) -> bool {
        match self {
            Cidr::V4(_, p) => p == 32,
            Cidr::V6(_, p) => p == 128,
        }
    }
}

impl TryFrom<&str> for Cidr {
    type Error = String;
    /// `"10.0.0.0/8"`, `"2001:db8::/32"`, or a bare address (a /32 or /128).
    fn try_from(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not an IPv4 or IPv6 address or network (write `10.0.0.0/8` or `2001:db8::/32`)")
        };
        let (addr, prefix) = match s.split_once('/') {
            None => (s, None),
            Some((a, p)) => (a, Some(p)),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("`{s}` has a prefix length outside 0 to {max}")),
            },
        };
        let bits = u32::from(max - prefix);
        let cidr = match addr {
            IpAddr::V4(a) => {
                let host = u32::from(a) & u32::MAX.checked_shr(32 - bits).unwrap_or(0);
                if bits == 0 || host == 0 {
                    Cidr::V4(a, prefix)
                } else {
                    return Err(host_bits(
                        s,
                        Cidr::V4(Ipv4Addr::from(u32::from(a) & !host), prefix),
                    ));
                }
            }
            IpAddr::V6(a) => {
                let host = u128::from(a) & u128::MAX.checked_shr(128 - bits).unwrap_or(0);
                if bits == 0 || host == 0 {
                    Cidr::V6(a, prefix)
                } else {
                    return Err(host_bits(
                        s,
                        Cidr::V6(Ipv6Addr::from(u128::from(a) & !host), prefix),
                    ));
                }
            }
        };
        Ok(cidr)
    }
}

fn host_bits(s: &str, net: Cidr) -> String {
    format!("`{s}` has bits set past its prefix length (did you mean `{net}`?)")
}

impl fmt::Display for Cidr {
    /// Like nft prints it: a bare address for a single host, `net/len` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4(a, 32) => write!(f, "{a}"),
            Cidr::V6(a, 128) => write!(f, "{a}"),
            Cidr::V4(a, p) => write!(f, "{a}/{p}"),
            Cidr::V6(a, p) => write!(f, "{a}/{p}"),
        }
    }
}

/// A network interface name as the kernel accepts it: 1 to 15 bytes, not `.` or `..`, no `/`,
/// `:`, whitespace, control characters or `"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for InterfaceName {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 15 || s == "." || s == ".." {
            return Err(format!(
                "`{s}` is not an interface name (1 to 15 bytes, not `.` or `..`)"
            ));
        }
        if s.chars().any(|c| {
            c == '/' || c == ':' || c == '"' || c == '\\' || c.is_whitespace() || c.is_control()
        }) {
            return Err(format!(
                "`{s}` is not an interface name (no `/`, `:`, quotes, backslashes, spaces or control characters)"
            ));
        }
        Ok(InterfaceName(s.to_owned()))
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `[[firewall.rule]]`: lists are alternatives (a packet matches when it matches one entry
/// of every list that is given); see [`Rule::matches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain.
    pub direction: Direction,
    /// The protocol.
    pub protocol: Protocol,
    /// Destination ports (tcp and udp only); empty matches every port.
    pub ports: Vec<PortRange>,
    /// Source ports (tcp and udp only); empty matches every port.
    pub source_ports: Vec<PortRange>,
    /// Source networks; empty matches every source.
    pub source: Vec<Cidr>,
    /// Destination networks; empty matches every destination.
    pub destination: Vec<Cidr>,
    /// The interface the packet arrives on (`in` and `forward`).
    pub in_interface: Option<InterfaceName>,
    /// The interface the packet leaves on (`out` and `forward`).
    pub out_interface: Option<InterfaceName>,
    /// What happens to matching packets.
    pub action: Verdict,
    /// A comment carried into the ruleset.
    pub comment: Option<String>,
}

/// One combination of a rule's alternatives: one nftables rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleMatch {
    /// The source network.
    pub source: Option<Cidr>,
    /// The destination network.
    pub destination: Option<Cidr>,
    /// The source port range.
    pub source_port: Option<PortRange>,
    /// The destination port range.
    pub port: Option<PortRange>,
}

impl Rule {
    /// Every combination of source, destination, source port and port that can match, in a
    /// stable order; combinations mixing IPv4 and IPv6 (or ICMP with IPv6, ICMPv6 with IPv4)
    /// are left out because no packet has them.
    pub fn matches(&self) -> Vec<RuleMatch> {
        fn opt<T: Copy>(v: &[T]) -> Vec<Option<T>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().copied().map(Some).collect()
            }
        }
        let proto_family = match self.protocol {
            Protocol::Icmp => Some(Family::V4),
            Protocol::Icmpv6 => Some(Family::V6),
            _ => None,
        };
        let mut out = Vec::new();
        for source in opt(&self.source) {
            for destination in opt(&self.destination) {
                let families = [source, destination]
                    .into_iter()
                    .flatten()
                    .map(Cidr::family);
                let mut fam = proto_family;
                let mut possible = true;
                for f in families {
                    match fam {
                        Some(g) if g != f => possible = false,
                        _ => fam = Some(f),
                    }
                }
                if !possible {
                    continue;
                }
                for source_port in opt(&self.source_ports) {
                    for port in opt(&self.ports) {
                        out.push(RuleMatch {
                            source,
                            destination,
                            source_port,
                            port,
                        });
                    }
                }
            }
        }
        out
    }

    /// Everything that decides which packets the rule matches, for comparing rules.
    fn key(
        &self,
    ) -> (
        Direction,
        Protocol,
        Option<&InterfaceName>,
        Option<&InterfaceName>,
    ) {
        (
            self.direction,
            self.protocol,
            self.in_interface.as_ref(),
            self.out_interface.as_ref(),
        )
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFirewall {
    pub icmp_rate: Option<Spanned<i64>>,
    pub log_drops: Option<bool>,
    pub log_rate: Option<Spanned<i64>>,
    pub dhcp_client: Option<bool>,
    pub dns: Option<Vec<Spanned<String>>>,
    pub containers: Option<RawContainers>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContainers {
    pub bridge: Spanned<String>,
    pub subnet: Spanned<String>,
    pub subnet6: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawDirection {
    In,
    Out,
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProtocol {
    Any,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawVerdict {
    Accept,
    Drop,
}

/// A port written as a TOML integer or a string (`"8000-8080"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPort {
    Int(i64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub direction: Spanned<RawDirection>,
    pub protocol: Option<Spanned<RawProtocol>>,
    pub ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    pub source_ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    pub source: Option<Spanned<Vec<Spanned<String>>>>,
    pub destination: Option<Spanned<Vec<Spanned<String>>>>,
    pub in_interface: Option<Spanned<String>>,
    pub out_interface: Option<Spanned<String>>,
    pub action: Spanned<RawVerdict>,
    pub comment: Option<Spanned<String>>,
}

impl Validator<'_> {
    fn rate(&mut self, key: &str, raw: Option<Spanned<i64>>, default: u32) -> u32 {
        let Some(raw) = raw else { return default };
        match u32::try_from(*raw.get_ref()) {
            Ok(n @ 1..=10_000) => n,
            _ => {
                self.report(key, raw.span(), "must be a whole number from 1 to 10000");
                default
            }
        }
    }

    /// Validates `[firewall]`.
    pub(crate) fn firewall(&mut self, raw: RawFirewall) -> Firewall {
        let icmp_rate = self.rate("firewall.icmp_rate", raw.icmp_rate, DEFAULT_ICMP_RATE);
        let log_rate = self.rate("firewall.log_rate", raw.log_rate, DEFAULT_LOG_RATE);
        let mut dns = Vec::new();
        for (i, d) in raw.dns.unwrap_or_default().iter().enumerate() {
            let key = format!("firewall.dns[{i}]");
            if let Some(a) = self.check(&key, d, |s| {
                s.parse::<IpAddr>()
                    .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address"))
            }) {
                if dns.contains(&a) {
                    self.report(key, d.span(), format!("resolver {a} is listed twice"));
                } else {
                    dns.push(a);
                }
            }
        }
        let containers = raw.containers.and_then(|c| self.containers(c));
        let mut rules: Vec<(Rule, std::ops::Range<usize>)> = Vec::new();
        // Every match decided so far, per rule key: which rule decides it, and how.
        let mut decided: BTreeMap<String, (usize, Verdict)> = BTreeMap::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let action_span = r.action.span();
            let Some(rule) = self.rule(i, r) else {
                continue;
            };
            let prefix = format!("firewall.rule[{i}]");
            let matches = rule.matches();
            if matches.len() > MAX_RULE_EXPANSION {
                self.report(
                    prefix,
                    action_span,
                    format!(
                        "expands to {} nftables rules (sources x destinations x source ports x ports); at most {MAX_RULE_EXPANSION}",
                        matches.len()
                    ),
                );
                continue;
            }
            let keys: Vec<String> = matches
                .iter()
                .map(|m| format!("{:?}/{m:?}", rule.key()))
                .collect();
            let contradiction = keys.iter().find_map(|k| {
                decided
                    .get(k)
                    .filter(|(_, v)| *v != rule.action)
                    .map(|(j, _)| *j)
            });
            if let Some(j) = contradiction {
                self.report(
                    format!("{prefix}.action"),
                    action_span,
                    format!(
                        "contradicts firewall.rule[{j}]: the same packets with the opposite action"
                    ),
                );
                continue;
            }
            let all_decided: Option<usize> = keys
                .iter()
                .map(|k| decided.get(k).map(|(j, _)| *j))
                .collect::<Option<Vec<usize>>>()
                .and_then(|js| js.into_iter().max());
            if let Some(j) = all_decided {
                self.report(
                    prefix,
                    action_span,
                    format!("can never match: firewall.rule[{j}] (and any before it) already matches all of its packets"),
                );
                continue;
            }
            for k in keys {
                decided.entry(k).or_insert((i, rule.action));
            }
            rules.push((rule, action_span));
        }
        Firewall {
            icmp_rate,
            log_drops: raw.log_drops.unwrap_or(false),
            log_rate,
            dhcp_client: raw.dhcp_client.unwrap_or(false),
            dns,
            containers,
            rules: rules.into_iter().map(|(r, _)| r).collect(),
        }
    }

    fn containers(&mut self, raw: RawContainers) -> Option<Containers> {
        let bridge = self.check("firewall.containers.bridge", &raw.bridge, |s| {
            if s == "lo" {
                Err("the container bridge cannot be the loopback interface".to_owned())
            } else {
                InterfaceName::try_from(s)
            }
        });
        let family = |want: Family| {
            move |s: &str| {
                let c = Cidr::try_from(s)?;
                if c.family() == want {
                    Ok(c)
                } else {
                    Err(format!("`{s}` is not an {want} network"))
                }
            }
        };
        let subnet = self.check(
            "firewall.containers.subnet",
            &raw.subnet,
            family(Family::V4),
        );
        let subnet6 = match &raw.subnet6 {
            None => Some(None),
            Some(s) => self
                .check("firewall.containers.subnet6", s, family(Family::V6))
                .map(Some),
        };
        Some(Containers {
            bridge: bridge?,
            subnet: subnet?,
            subnet6: subnet6?,
        })
    }

    fn port_list(
        &mut self,
        key: &str,
        raw: Option<Spanned<Vec<Spanned<RawPort>>>>,
        ok: &mut bool,
    ) -> Vec<PortRange> {
        let Some(raw) = raw else { return Vec::new() };
        if raw.get_ref().is_empty() {
            self.report(
                key,
                raw.span(),
                "must not be empty (leave the key out to match every port)",
            );
            *ok = false;
        }
        let mut out = Vec::new();
        for (i, p) in raw.into_inner().into_iter().enumerate() {
            let span = p.span();
            let parsed = match p.into_inner() {
                RawPort::Int(n) => Port::try_from(n).map(PortRange::single),
                RawPort::Str(s) => PortRange::try_from(s.as_str()),
            };
            match parsed {
                Ok(r) if !out.contains(&r) => out.push(r),
                Ok(r) => {
                    self.report(
                        format!("{key}[{i}]"),
                        span,
                        format!("port {r} is listed twice"),
                    );
                    *ok = false;
                }
                Err(msg) => {
                    self.report(format!("{key}[{i}]"), span, msg);
                    *ok = false;
                }
            }
        }
        out
    }

    fn cidr_list(
        &mut self,
        key: &str,
        raw: Option<Spanned<Vec<Spanned<String>>>>,
        ok: &mut bool,
    ) -> Vec<Cidr> {
        let Some(raw) = raw else { return Vec::new() };
        if raw.get_ref().is_empty() {
            self.report(
                key,
                raw.span(),
                "must not be empty (leave the key out to match every address)",
            );
            *ok = false;
        }
        let mut out = Vec::new();
        for (i, c) in raw.get_ref().iter().enumerate() {
            let k = format!("{key}[{i}]");
            match self.check(&k, c, |s| Cidr::try_from(s)) {
                Some(net) if !out.contains(&net) => out.push(net),
                Some(net) => {
                    self.report(k, c.span(), format!("{net} is listed twice"));
                    *ok = false;
                }
                None => *ok = false,
            }
        }
        out
    }

    fn rule(&mut self, i: usize, r: RawRule) -> Option<Rule> {
        let prefix = format!("firewall.rule[{i}]");
        let mut ok = true;
        let direction = match r.direction.get_ref() {
            RawDirection::In => Direction::In,
            RawDirection::Out => Direction::Out,
            RawDirection::Forward => Direction::Forward,
        };
        let (protocol, protocol_span) = match &r.protocol {
            None => (Protocol::Any, r.direction.span()),
            Some(p) => (
                match p.get_ref() {
                    RawProtocol::Any => Protocol::Any,
                    RawProtocol::Tcp => Protocol::Tcp,
                    RawProtocol::Udp => Protocol::Udp,
                    RawProtocol::Icmp => Protocol::Icmp,
                    RawProtocol::Icmpv6 => Protocol::Icmpv6,
                },
                p.span(),
            ),
        };
        for (name, list) in [("ports", &r.ports), ("source_ports", &r.source_ports)] {
            if let Some(list) = list {
                if !protocol.has_ports() {
                    self.report(
                        format!("{prefix}.{name}"),
                        list.span(),
                        format!("ports need protocol \"tcp\" or \"udp\" (the rule's protocol is \"{protocol}\")"),
                    );
                    ok = false;
                }
            }
        }
        let ports = self.port_list(&format!("{prefix}.ports"), r.ports, &mut ok);
        let source_ports =
            self.port_list(&format!("{prefix}.source_ports"), r.source_ports, &mut ok);
        let source_span = r.source.as_ref().map(Spanned::span);
        let source = self.cidr_list(&format!("{prefix}.source"), r.source, &mut ok);
        let destination = self.cidr_list(&format!("{prefix}.destination"), r.destination, &mut ok);
        let mut iface = |key: &str, v: &Option<Spanned<String>>, allowed: bool, me: &mut Self| {
            let v = v.as_ref()?;
            if !allowed {
                me.report(
                    format!("{prefix}.{key}"),
                    v.span(),
                    format!(
                        "a rule with direction \"{direction}\" has no {}",
                        key.replace('_', " ")
                    ),
                );
                ok = false;
                return None;
            }
            let name = me.check(&format!("{prefix}.{key}"), v, |s| {
                InterfaceName::try_from(s)
            });
            if name.is_none() {
                ok = false;
            }
            name
        };
        let in_interface = iface(
            "in_interface",
            &r.in_interface,
            direction != Direction::Out,
            self,
        );
        let out_interface = iface(
            "out_interface",
            &r.out_interface,
            direction != Direction::In,
            self,
        );
        let comment = match &r.comment {
            None => None,
            Some(c) => {
                let s = c.get_ref();
                if s.is_empty()
                    || s.len() > MAX_COMMENT_LEN
                    || s.chars()
                        .any(|ch| ch.is_control() || ch == '"' || ch == '\\')
                {
                    self.report(
                        format!("{prefix}.comment"),
                        c.span(),
                        format!("a comment is 1 to {MAX_COMMENT_LEN} bytes of printable text without `\"` or `\\`"),
                    );
                    ok = false;
                    None
                } else {
                    Some(s.clone())
                }
            }
        };
        let action = match r.action.get_ref() {
            RawVerdict::Accept => Verdict::Accept,
            RawVerdict::Drop => Verdict::Drop,
        };
        if !ok {
            return None;
        }
        let rule = Rule {
            direction,
            protocol,
            ports,
            source_ports,
            source,
            destination,
            in_interface,
            out_interface,
            action,
            comment,
        };
        if rule.matches().is_empty() {
            let families = |v: &[Cidr]| {
                let mut f: Vec<Family> = v.iter().map(|c| c.family()).collect();
                f.sort();
                f.dedup();
                f
            };
            let (src, dst) = (families(&rule.source), families(&rule.destination));
            let why = match (protocol, src.as_slice(), dst.as_slice()) {
                (Protocol::Icmp, _, _) => {
                    "protocol \"icmp\" is IPv4 only, and the addresses are IPv6".to_owned()
                }
                (Protocol::Icmpv6, _, _) => {
                    "protocol \"icmpv6\" is IPv6 only, and the addresses are IPv4".to_owned()
                }
                (_, [s], [d]) => format!("the sources are {s} only and the destinations {d} only"),
                _ => "no source and destination share an address family".to_owned(),
            };
            self.report(
                prefix,
                source_span.unwrap_or(protocol_span),
                format!("can never match: {why}"),
            );
            return None;
        }
        Some(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Problem};
    use std::path::Path;

    fn fw(text: &str) -> Firewall {
        match parse(text, Path::new("/cfg/host.toml")) {
            Ok(c) => c.firewall,
            Err(e) => panic!("unexpected error:\n{e}"),
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text, Path::new("/cfg/host.toml")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[test]
    fn defaults() {
        let f = fw("");
        assert_eq!(f, Firewall::default());
        assert_eq!(f.icmp_rate, 10);
        assert!(!f.log_drops);
        assert!(f.rules.is_empty());
    }

    #[test]
    fn full_section() {
        let f = fw(r#"
[firewall]
icmp_rate = 20
log_drops = true
log_rate = 30
dhcp_client = true
dns = ["192.0.2.53", "2001:db8::53"]

[firewall.containers]
bridge = "rampart0"
subnet = "10.88.0.0/16"
subnet6 = "fd00:88::/64"

[[firewall.rule]]
direction = "in"
protocol = "tcp"
ports = [22, "8000-8080"]
source = ["10.0.0.0/8", "2001:db8::/32"]
in_interface = "eth0"
action = "accept"
comment = "ssh and web"

[[firewall.rule]]
direction = "out"
protocol = "udp"
destination = ["198.51.100.7"]
ports = [123]
out_interface = "eth0"
action = "accept"

[[firewall.rule]]
direction = "forward"
protocol = "icmp"
in_interface = "eth1"
out_interface = "eth0"
action = "drop"
"#);
        assert_eq!(f.icmp_rate, 20);
        assert!(f.log_drops);
        assert_eq!(f.log_rate, 30);
        assert!(f.dhcp_client);
        assert_eq!(f.dns.len(), 2);
        let c = f.containers.as_ref().unwrap();
        assert_eq!(c.bridge.as_str(), "rampart0");
        assert_eq!(c.subnet.to_string(), "10.88.0.0/16");
        assert_eq!(c.subnet6.unwrap().to_string(), "fd00:88::/64");
        assert_eq!(f.rules.len(), 3);
        let r = &f.rules[0];
        assert_eq!(r.direction, Direction::In);
        assert_eq!(r.protocol, Protocol::Tcp);
        assert_eq!(
            r.ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["22", "8000-8080"]
        );
        assert_eq!(r.matches().len(), 4);
        assert_eq!(r.comment.as_deref(), Some("ssh and web"));
        assert_eq!(f.rules[1].destination[0].to_string(), "198.51.100.7");
        assert_eq!(f.rules[2].action, Verdict::Drop);
    }

    #[test]
    fn cidrs() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.1.2.3", Some("10.1.2.3")),
            ("10.1.2.3/32", Some("10.1.2.3")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("172.16.0.0/12", Some("172.16.0.0/12")),
            ("2001:db8::/32", Some("2001:db8::/32")),
            ("::1", Some("::1")),
            ("::/0", Some("::/0")),
            ("10.0.0.1/8", None),
            ("10.0.0.0/33", None),
            ("10.0.0.0/+8", None),
            ("2001:db8::1/32", None),
            ("2001:db8::/129", None),
            ("10.0.0", None),
            ("", None),
            ("eth0", None),
        ];
        for (s, want) in cases {
            let got = Cidr::try_from(*s).map(|c| c.to_string());
            assert_eq!(got.as_deref().ok(), *want, "{s}: {got:?}");
        }
        let e = Cidr::try_from("10.0.0.1/8").unwrap_err();
        assert!(e.contains("did you mean `10.0.0.0/8`"), "{e}");
    }

    #[test]
    fn ports_and_names() {
        assert_eq!(Port::try_from(22).unwrap().get(), 22);
        for bad in [0, -1, 65536] {
            assert!(Port::try_from(bad).is_err(), "{bad}");
        }
        let r = PortRange::try_from("1000-2000").unwrap();
        assert_eq!((r.first().get(), r.last().get()), (1000, 2000));
        assert!(PortRange::try_from("22").unwrap().is_single());
        for bad in ["2000-1000", "a-b", "0-5", "1-", "-", "70000"] {
            assert!(PortRange::try_from(bad).is_err(), "{bad}");
        }
        assert!(InterfaceName::try_from("eth0").is_ok());
        assert!(InterfaceName::try_from("enp0s3.100").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "0123456789abcdef",
            "a\"b",
        ] {
            assert!(InterfaceName::try_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn family_filtering() {
        let f = fw(r#"
[[firewall.rule]]
direction = "in"
source = ["10.0.0.0/8", "2001:db8::/32"]
destination = ["192.0.2.1"]
action = "accept"
"#);
        let m = f.rules[0].matches();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].source.unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn errors() {
        let rule = |body: &str| format!("[[firewall.rule]]\n{body}\n");
        let cases: &[(String, &str, &str)] = &[
            ("[firewall]\nicmp_rate = 0\n".into(), "firewall.icmp_rate", "1 to 10000"),
            ("[firewall]\nlog_rate = 100000\n".into(), "firewall.log_rate", "1 to 10000"),
            ("[firewall]\ndns = [\"8.8.8\"]\n".into(), "firewall.dns[0]", "not an IPv4"),
            ("[firewall]\ndns = [\"9.9.9.9\", \"9.9.9.9\"]\n".into(), "firewall.dns[1]", "twice"),
            (
                "[firewall.containers]\nbridge = \"lo\"\nsubnet = \"10.88.0.0/16\"\n".into(),
                "firewall.containers.bridge",
                "loopback",
            ),
            (
                "[firewall.containers]\nbridge = \"br0\"\nsubnet = \"fd00::/64\"\n".into(),
                "firewall.containers.subnet",
                "not an IPv4 network",
            ),
            (
                "[firewall.containers]\nbridge = \"br0\"\nsubnet = \"10.88.0.0/16\"\nsubnet6 = \"10.89.0.0/16\"\n".into(),
                "firewall.containers.subnet6",
                "not an IPv6 network",
            ),
            (
                rule("direction = \"in\"\nports = [22]\naction = \"accept\""),
                "firewall.rule[0].ports",
                "need protocol",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"icmp\"\nsource_ports = [22]\naction = \"accept\""),
                "firewall.rule[0].source_ports",
                "need protocol",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"tcp\"\nports = []\naction = \"accept\""),
                "firewall.rule[0].ports",
                "must not be empty",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"tcp\"\nports = [\"90-80\"]\naction = \"accept\""),
                "firewall.rule[0].ports[0]",
                "empty port range",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"tcp\"\nports = [0]\naction = \"accept\""),
                "firewall.rule[0].ports[0]",
                "not a port",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"tcp\"\nports = [22, 22]\naction = \"accept\""),
                "firewall.rule[0].ports[1]",
                "twice",
            ),
            (
                rule("direction = \"in\"\nsource = [\"10.0.0.1/8\"]\naction = \"accept\""),
                "firewall.rule[0].source[0]",
                "bits set past",
            ),
            (
                rule("direction = \"in\"\nsource = []\naction = \"accept\""),
                "firewall.rule[0].source",
                "must not be empty",
            ),
            (
                rule("direction = \"in\"\nout_interface = \"eth0\"\naction = \"accept\""),
                "firewall.rule[0].out_interface",
                "has no out interface",
            ),
            (
                rule("direction = \"out\"\nin_interface = \"eth0\"\naction = \"accept\""),
                "firewall.rule[0].in_interface",
                "has no in interface",
            ),
            (
                rule("direction = \"in\"\nin_interface = \"a/b\"\naction = \"accept\""),
                "firewall.rule[0].in_interface",
                "not an interface name",
            ),
            (
                rule("direction = \"in\"\nsource = [\"10.0.0.0/8\"]\ndestination = [\"2001:db8::1\"]\naction = \"accept\""),
                "firewall.rule[0]",
                "can never match: the sources are IPv4 only and the destinations IPv6 only",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"icmp\"\nsource = [\"2001:db8::/32\"]\naction = \"accept\""),
                "firewall.rule[0]",
                "can never match: protocol \"icmp\" is IPv4 only",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"icmpv6\"\ndestination = [\"10.0.0.1\"]\naction = \"accept\""),
                "firewall.rule[0]",
                "can never match: protocol \"icmpv6\"",
            ),
            (
                rule("direction = \"in\"\naction = \"accept\"\ncomment = \"a \\\"quote\\\"\""),
                "firewall.rule[0].comment",
                "printable text",
            ),
            (
                rule("direction = \"sideways\"\naction = \"accept\""),
                "firewall.rule[0].direction",
                "unknown variant",
            ),
            (
                rule("direction = \"in\"\naction = \"accept\"\nport = [22]"),
                "firewall.rule[0].port",
                "unknown field",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"tcp\"\nports = [22]\naction = \"accept\"")
                    + &rule("direction = \"in\"\nprotocol = \"tcp\"\nports = [22, 80]\naction = \"drop\""),
                "firewall.rule[1].action",
                "contradicts firewall.rule[0]",
            ),
            (
                rule("direction = \"in\"\nprotocol = \"tcp\"\nports = [22, 80]\naction = \"accept\"")
                    + &rule("direction = \"in\"\nprotocol = \"tcp\"\nports = [80]\naction = \"accept\""),
                "firewall.rule[1]",
                "can never match: firewall.rule[0]",
            ),
        ];
        for (text, key, msg) in cases {
            let ps = problems(text);
            assert!(
                ps.iter()
                    .any(|p| p.key == *key && p.message.contains(msg) && p.line > 0),
                "{text}\nwant {key}: {msg}\ngot {ps:?}"
            );
        }
    }

    #[test]
    fn same_match_different_scope_is_not_a_contradiction() {
        let f = fw(r#"
[[firewall.rule]]
direction = "in"
protocol = "tcp"
ports = [22]
action = "accept"

[[firewall.rule]]
direction = "out"
protocol = "tcp"
ports = [22]
action = "drop"

[[firewall.rule]]
direction = "in"
protocol = "tcp"
ports = [22]
in_interface = "eth1"
action = "drop"
"#);
        assert_eq!(f.rules.len(), 3);
    }

    #[test]
    fn line_numbers() {
        let ps = problems("[firewall]\n\n[[firewall.rule]]\ndirection = \"in\"\nsource = [\"10.0.0.0/8\", \"bad\"]\naction = \"accept\"\n");
        let p = ps
            .iter()
            .find(|p| p.key == "firewall.rule[0].source[1]")
            .unwrap();
        assert_eq!((p.line, p.column), (5, 25));
    }
}
