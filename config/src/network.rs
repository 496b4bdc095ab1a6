//! `[network]`: interfaces, addresses, routes, DHCP, SLAAC, resolvers and `/etc/hosts`.
//!
//! Interfaces are chosen by name or by MAC address. Each gets a fixed set of addresses, static
//! routes and default gateways, and optionally a DHCPv4 client (`rampart-dhcp`, started by
//! `rampart-init` as a supervised service) and IPv6 SLAAC. `rampart-init` applies the section
//! over rtnetlink (`init/src/network`) after the firewall is in place.
//!
//! The firewall follows from this section, so the operator writes resolvers once: the
//! effective [`crate::Firewall`] allows DNS to every resolver of [`Network::dns`] (on top of
//! `[firewall] dns`), DHCP client traffic when an interface has `dhcp = true` (on top of
//! `[firewall] dhcp_client`), and DNS to any address out of an interface whose DHCP lease
//! supplies the resolvers (`dhcp_dns`, on by default). See [`merge_into_firewall`].

use crate::firewall::{
    Cidr, Direction, Family, Firewall, InterfaceName, Port, PortRange, Protocol, Rule, Verdict,
};
use crate::Validator;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use toml::Spanned;

/// `resolv.conf` holds at most this many name servers (glibc's `MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;
/// `resolv.conf` holds at most this many search domains.
pub const MAX_SEARCH: usize = 6;
/// The smallest MTU accepted (IPv4's minimum).
pub const MIN_MTU: u32 = 68;
/// The smallest MTU of an interface with IPv6 (addresses or SLAAC).
pub const MIN_MTU_V6: u32 = 1280;
/// The largest MTU accepted.
pub const MAX_MTU: u32 = 65535;
/// Where the DHCP client is installed in an image.
pub const DHCP_CLIENT_PATH: &str = "/sbin/rampart-dhcp";
/// The prefix of the service name of an interface's DHCP client.
pub const DHCP_SERVICE_PREFIX: &str = "dhcp-";

/// A validated `[network]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    /// `[[network.interface]]`, in file order.
    pub interfaces: Vec<Interface>,
    /// Static name servers, in order (at most [`MAX_NAMESERVERS`]).
    pub dns: Vec<IpAddr>,
    /// Search domains, in order (at most [`MAX_SEARCH`]).
    pub search: Vec<String>,
    /// `[[network.hosts]]`: extra `/etc/hosts` lines.
    pub hosts: Vec<HostsEntry>,
}

impl Network {
    /// Whether any interface runs a DHCP client.
    pub fn any_dhcp(&self) -> bool {
        self.interfaces.iter().any(|i| i.dhcp)
    }
}

/// How an interface is found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// By its kernel name.
    Name(InterfaceName),
    /// By its hardware address.
    Mac(MacAddr),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(n) => write!(f, "{n}"),
            Selector::Mac(m) => write!(f, "mac {m}"),
        }
    }
}

/// One `[[network.interface]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Which interface.
    pub selector: Selector,
    /// Whether the link is brought up (`false` leaves it down and configures nothing else).
    pub up: bool,
    /// The MTU to set, if any.
    pub mtu: Option<u32>,
    /// Static addresses with their prefix length.
    pub addresses: Vec<InterfaceAddress>,
    /// Static routes (default gateways included, as `0.0.0.0/0` and `::/0`).
    pub routes: Vec<Route>,
    /// Whether a DHCPv4 client runs on it.
    pub dhcp: bool,
    /// Whether the resolvers of its DHCP lease are used (and DNS out of it allowed).
    pub dhcp_dns: bool,
    /// Whether IPv6 router advertisements are accepted (SLAAC; the `accept_ra` sysctl).
    pub slaac: bool,
}

impl Interface {
    /// The name of the service running this interface's DHCP client (`dhcp-eth0`,
    /// `dhcp-525400123456`).
    pub fn dhcp_service_name(&self) -> String {
        let tail: String = match &self.selector {
            Selector::Name(n) => n
                .as_str()
                .chars()
                .map(|c| {
                    let c = c.to_ascii_lowercase();
                    if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect(),
            Selector::Mac(m) => m.to_string().replace(':', ""),
        };
        format!("{DHCP_SERVICE_PREFIX}{tail}")
    }
}

/// An address assigned to an interface: `10.0.2.15/24` (host bits allowed, unlike [`Cidr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceAddress {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length of its network.
    pub prefix: u8,
}

impl InterfaceAddress {
    /// The family.
    pub fn family(self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The network the address is in.
    pub fn network(self) -> Cidr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                Cidr::V4(Ipv4Addr::from(u32::from(a) & mask), self.prefix)
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                Cidr::V6(Ipv6Addr::from(u128::from(a) & mask), self.prefix)
            }
        }
    }
}

/// Whether `addr` is inside `net`.
pub fn contains(net: Cidr, addr: IpAddr) -> bool {
    match (net, addr) {
        (Cidr::V4(n, p), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n)
        }
        (Cidr::V6(n, p), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n)
        }
        _ => false,
    }
}

impl TryFrom<&str> for InterfaceAddress {
    type Error = String;
    /// `"10.0.2.15/24"` or `"fd00::2/64"`; the prefix length is required.
    fn try_from(s: &str) -> Result<Self, String> {
        let Some((a, p)) = s.split_once('/') else {
            return Err(format!(
                "`{s}` needs a prefix length (write `10.0.2.15/24` or `fd00::2/64`)"
            ));
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address with a prefix length"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p.parse::<u8>() {
            Ok(n) if (1..=max).contains(&n) && !p.starts_with('+') => n,
            _ => return Err(format!("`{s}` has a prefix length outside 1 to {max}")),
        };
        if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
            return Err(format!(
                "`{s}` is not a unicast address an interface can have"
            ));
        }
        if let IpAddr::V4(v4) = addr {
            if v4.is_broadcast() {
                return Err(format!("`{s}` is the broadcast address"));
            }
            if prefix < 31 {
                let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                let host = u32::from(v4) & host_bits;
                if host == 0 {
                    return Err(format!(
                        "`{s}` is the network address of its subnet, not a host address"
                    ));
                }
                if host == host_bits {
                    return Err(format!(
                        "`{s}` is the broadcast address of its subnet, not a host address"
                    ));
                }
            }
        }
        Ok(InterfaceAddress { addr, prefix })
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An Ethernet hardware address, stored as six bytes and printed lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl TryFrom<&str> for MacAddr {
    type Error = String;
    /// `"52:54:00:12:34:56"` (or with `-`); not all zero, not multicast.
    fn try_from(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a MAC address (write `52:54:00:12:34:56`)");
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if out == [0; 6] {
            return Err(format!("`{s}` is the all-zero MAC address"));
        }
        if out[0] & 1 == 1 {
            return Err(format!(
                "`{s}` is a multicast MAC address, which no interface has"
            ));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A static route out of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The destination network (`0.0.0.0/0` or `::/0` for a default route).
    pub destination: Cidr,
    /// The next hop; `None` for an on-link route.
    pub gateway: Option<IpAddr>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway {
            Some(g) => write!(f, "{} via {g}", self.destination),
            None => write!(f, "{} on-link", self.destination),
        }
    }
}

/// One `[[network.hosts]]` entry: an `/etc/hosts` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsEntry {
    /// The address.
    pub address: IpAddr,
    /// Its names (at least one), lowercase.
    pub names: Vec<String>,
}

/// Checks a DNS name (`example.com`, a search domain or a hosts name): dot-separated labels of
/// letters, digits and inner `-` (and `_`), 1 to 253 characters; returned lowercase.
pub fn domain_name(s: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let t = s.strip_suffix('.').unwrap_or(s);
    if t.is_empty() || t.len() > 253 || !t.split('.').all(label_ok) {
        return Err(format!(
            "`{s}` is not a domain name (dot-separated labels of letters, digits and inner `-`)"
        ));
    }
    Ok(t.to_ascii_lowercase())
}

/// Makes `fw` follow `net`: adds `net.dns` to the allowed resolvers, allows DHCP client
/// traffic when an interface has `dhcp`, and allows DNS (udp and tcp 53) to any address out of
/// each interface whose DHCP lease supplies the resolvers (`dhcp_dns`; interfaces chosen by
/// MAC get the rule without an interface match, as their name is only known at boot).
pub fn merge_into_firewall(net: &Network, fw: &mut Firewall) {
    for a in &net.dns {
        if !fw.dns.contains(a) {
            fw.dns.push(*a);
        }
    }
    if net.any_dhcp() {
        fw.dhcp_client = true;
    }
    let dns_port = Port::try_from(53).map(PortRange::single).ok();
    let mut seen = Vec::new();
    for i in net.interfaces.iter().filter(|i| i.dhcp && i.dhcp_dns) {
        let out_interface = match &i.selector {
            Selector::Name(n) => Some(n.clone()),
            Selector::Mac(_) => None,
        };
        if seen.contains(&out_interface) {
            continue;
        }
        seen.push(out_interface.clone());
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            fw.rules.push(Rule {
                direction: Direction::Out,
                protocol,
                ports: dns_port.into_iter().collect(),
                source_ports: Vec::new(),
                source: Vec::new(),
                destination: Vec::new(),
                in_interface: None,
                out_interface: out_interface.clone(),
                action: Verdict::Accept,
                comment: Some(format!("dns from the dhcp lease of {}", i.selector)),
            });
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<RawInterface>,
    pub dns: Option<Spanned<Vec<Spanned<String>>>>,
    pub search: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub hosts: Vec<RawHosts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInterface {
    pub name: Option<Spanned<String>>,
    pub mac: Option<Spanned<String>>,
    pub up: Option<bool>,
    pub mtu: Option<Spanned<i64>>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    pub gateway: Option<Spanned<String>>,
    pub gateway6: Option<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub dhcp: Option<bool>,
    pub dhcp_dns: Option<bool>,
    pub slaac: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub destination: Spanned<String>,
    pub gateway: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHosts {
    pub address: Spanned<String>,
    pub names: Spanned<Vec<Spanned<String>>>,
}

fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address"))
}

impl Validator<'_> {
    /// Validates `[network]`; `services` are the `[[service]]` names, which a DHCP client's
    /// generated service name must not collide with.
    pub(crate) fn network(&mut self, raw: RawNetwork, services: &[String]) -> Network {
        let mut interfaces: Vec<Interface> = Vec::new();
        for (i, r) in raw.interfaces.into_iter().enumerate() {
            if let Some(iface) = self.interface(i, r, &interfaces, services) {
                interfaces.push(iface);
            }
        }
        let mut dns = Vec::new();
        if let Some(list) = &raw.dns {
            for (i, d) in list.get_ref().iter().enumerate() {
                let key = format!("network.dns[{i}]");
                if let Some(a) = self.check(&key, d, ip) {
                    if dns.contains(&a) {
                        self.report(key, d.span(), format!("resolver {a} is listed twice"));
                    } else if dns.len() == MAX_NAMESERVERS {
                        self.report(
                            key,
                            d.span(),
                            format!("resolv.conf holds at most {MAX_NAMESERVERS} name servers"),
                        );
                    } else {
                        dns.push(a);
                    }
                }
            }
        }
        let mut search = Vec::new();
        if let Some(list) = &raw.search {
            for (i, d) in list.get_ref().iter().enumerate() {
                let key = format!("network.search[{i}]");
                if let Some(n) = self.check(&key, d, domain_name) {
                    if search.contains(&n) {
                        self.report(key, d.span(), format!("domain {n} is listed twice"));
                    } else if search.len() == MAX_SEARCH {
                        self.report(
                            key,
                            d.span(),
                            format!("resolv.conf holds at most {MAX_SEARCH} search domains"),
                        );
                    } else {
                        search.push(n);
                    }
                }
            }
        }
        let mut hosts = Vec::new();
        for (i, h) in raw.hosts.iter().enumerate() {
            let prefix = format!("network.hosts[{i}]");
            let address = self.check(&format!("{prefix}.address"), &h.address, ip);
            if h.names.get_ref().is_empty() {
                self.report(
                    format!("{prefix}.names"),
                    h.names.span(),
                    "must name at least one host",
                );
            }
            let mut names = Vec::new();
            for (j, n) in h.names.get_ref().iter().enumerate() {
                if let Some(n) = self.check(&format!("{prefix}.names[{j}]"), n, domain_name) {
                    names.push(n);
                }
            }
            if let Some(address) = address {
                if !names.is_empty() && names.len() == h.names.get_ref().len() {
                    hosts.push(HostsEntry { address, names });
                }
            }
        }
        Network {
            interfaces,
            dns,
            search,
            hosts,
        }
    }

    fn interface(
        &mut self,
        i: usize,
        r: RawInterface,
        earlier: &[Interface],
        services: &[String],
    ) -> Option<Interface> {
        let prefix = format!("network.interface[{i}]");
        let mut ok = true;
        let selector = match (&r.name, &r.mac) {
            (Some(n), None) => self
                .check(&format!("{prefix}.name"), n, |s| {
                    if s == "lo" {
                        Err("the loopback interface is always up with 127.0.0.1/8 and ::1; it cannot be configured".to_owned())
                    } else {
                        InterfaceName::try_from(s)
                    }
                })
                .map(Selector::Name)
                .map(|s| (s, n.span())),
            (None, Some(m)) => self
                .check(&format!("{prefix}.mac"), m, |s| MacAddr::try_from(s))
                .map(Selector::Mac)
                .map(|s| (s, m.span())),
            (Some(_), Some(m)) => {
                self.report(
                    format!("{prefix}.mac"),
                    m.span(),
                    "give either name or mac, not both",
                );
                None
            }
            (None, None) => {
                let span = self.table_span("network.interface", i);
                self.report(prefix.clone(), span, "needs name or mac");
                None
            }
        };
        let selector = match selector {
            Some((s, span)) => {
                if earlier.iter().any(|e| e.selector == s) {
                    self.report(
                        prefix.clone(),
                        span.clone(),
                        format!("interface {s} is configured twice"),
                    );
                    ok = false;
                }
                Some((s, span))
            }
            None => {
                ok = false;
                None
            }
        };
        let dhcp = r.dhcp.unwrap_or(false);
        let slaac = r.slaac.unwrap_or(false);
        let mut addresses: Vec<InterfaceAddress> = Vec::new();
        for (j, a) in r.addresses.iter().enumerate() {
            let key = format!("{prefix}.addresses[{j}]");
            match self.check(&key, a, |s| InterfaceAddress::try_from(s)) {
                Some(addr) => {
                    let dup_here = addresses.iter().any(|x| x.addr == addr.addr);
                    let dup_elsewhere = earlier
                        .iter()
                        .any(|e| e.addresses.iter().any(|x| x.addr == addr.addr));
                    if dup_here || dup_elsewhere {
                        self.report(
                            key,
                            a.span(),
                            format!("address {} is assigned twice", addr.addr),
                        );
                        ok = false;
                    } else {
                        addresses.push(addr);
                    }
                }
                None => ok = false,
            }
        }
        let has_v6 = slaac || addresses.iter().any(|a| a.family() == Family::V6);
        let mtu = match &r.mtu {
            None => None,
            Some(m) => {
                let min = if has_v6 { MIN_MTU_V6 } else { MIN_MTU };
                match u32::try_from(*m.get_ref()) {
                    Ok(n) if (min..=MAX_MTU).contains(&n) => Some(n),
                    _ => {
                        let why = if has_v6 {
                            " (IPv6 needs at least 1280)"
                        } else {
                            ""
                        };
                        self.report(
                            format!("{prefix}.mtu"),
                            m.span(),
                            format!("must be from {min} to {MAX_MTU}{why}"),
                        );
                        ok = false;
                        None
                    }
                }
            }
        };
        // On-link check of a gateway: inside a static network of the interface, or (IPv4)
        // learned by DHCP, or (IPv6) link-local or with SLAAC.
        let reachable = |g: IpAddr| -> bool {
            addresses.iter().any(|a| contains(a.network(), g))
                || match g {
                    IpAddr::V4(_) => dhcp,
                    IpAddr::V6(v6) => slaac || (v6.segments()[0] & 0xffc0) == 0xfe80,
                }
        };
        let mut routes: Vec<Route> = Vec::new();
        let mut add_route = |me: &mut Self, key: String, span, route: Route| {
            if routes.iter().any(|x| x.destination == route.destination) {
                me.report(
                    key,
                    span,
                    format!("a route to {} is already configured", route.destination),
                );
                return false;
            }
            routes.push(route);
            true
        };
        for (key, g, fam) in [
            ("gateway", &r.gateway, Family::V4),
            ("gateway6", &r.gateway6, Family::V6),
        ] {
            let Some(g) = g else { continue };
            let key = format!("{prefix}.{key}");
            let gw = self.check(&key, g, |s| {
                let a = ip(s)?;
                let f = if a.is_ipv4() { Family::V4 } else { Family::V6 };
                if f != fam {
                    return Err(format!("`{s}` is not an {fam} address"));
                }
                if !reachable(a) {
                    return Err(format!(
                        "gateway {a} is not on a network of this interface (add an address in its subnet{})",
                        if fam == Family::V4 { " or dhcp = true" } else { ", use a link-local address or slaac = true" }
                    ));
                }
                Ok(a)
            });
            match gw {
                Some(a) => {
                    let destination = match fam {
                        Family::V4 => Cidr::V4(Ipv4Addr::UNSPECIFIED, 0),
                        Family::V6 => Cidr::V6(Ipv6Addr::UNSPECIFIED, 0),
                    };
                    ok &= add_route(
                        self,
                        key,
                        g.span(),
                        Route {
                            destination,
                            gateway: Some(a),
                        },
                    );
                }
                None => ok = false,
            }
        }
        for (j, rr) in r.routes.iter().enumerate() {
            let rkey = format!("{prefix}.routes[{j}]");
            let dest = self.check(&format!("{rkey}.destination"), &rr.destination, |s| {
                Cidr::try_from(s)
            });
            let gw = match &rr.gateway {
                None => Some(None),
                Some(g) => self
                    .check(&format!("{rkey}.gateway"), g, |s| {
                        let a = ip(s)?;
                        if let Some(d) = dest {
                            let f = if a.is_ipv4() { Family::V4 } else { Family::V6 };
                            if f != d.family() {
                                return Err(format!(
                                    "gateway {a} is not of the destination's family ({})",
                                    d.family()
                                ));
                            }
                        }
                        if !reachable(a) {
                            return Err(format!(
                                "gateway {a} is not on a network of this interface"
                            ));
                        }
                        Ok(a)
                    })
                    .map(Some),
            };
            match (dest, gw) {
                (Some(destination), Some(gateway)) => {
                    let fam = destination.family();
                    let has_family = addresses.iter().any(|a| a.family() == fam)
                        || (dhcp && fam == Family::V4)
                        || (slaac && fam == Family::V6);
                    if gateway.is_none() && !has_family {
                        self.report(
                            format!("{rkey}.gateway"),
                            rr.destination.span(),
                            format!(
                                "an on-link route to {destination} needs an {} address on the interface (or give a gateway)",
                                destination.family()
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    ok &= add_route(
                        self,
                        format!("{rkey}.destination"),
                        rr.destination.span(),
                        Route {
                            destination,
                            gateway,
                        },
                    );
                }
                _ => ok = false,
            }
        }
        let up = r.up.unwrap_or(true);
        let dhcp_dns = r.dhcp_dns.unwrap_or(true);
        if let Some((s, span)) = &selector {
            if !up && (dhcp || slaac || !addresses.is_empty() || !routes.is_empty()) {
                self.report(
                    format!("{prefix}.up"),
                    span.clone(),
                    format!("interface {s} is down (up = false) but has addresses, routes, dhcp or slaac"),
                );
                ok = false;
            }
        }
        let iface = Interface {
            selector: selector.map(|(s, _)| s)?,
            up,
            mtu,
            addresses,
            routes,
            dhcp,
            dhcp_dns,
            slaac,
        };
        if dhcp {
            let name = iface.dhcp_service_name();
            let clash = services.contains(&name)
                || earlier
                    .iter()
                    .any(|e| e.dhcp && e.dhcp_service_name() == name);
            if clash {
                let span = self.table_span("network.interface", i);
                self.report(
                    format!("{prefix}.dhcp"),
                    span,
                    format!("the DHCP client service of this interface would be named `{name}`, which is taken"),
                );
                ok = false;
            }
        }
        ok.then_some(iface)
    }

    /// The span of the `n`th `[[name]]` header, for problems of a whole table.
    fn table_span(&self, name: &str, n: usize) -> std::ops::Range<usize> {
        let header = format!("[[{name}]]");
        let at = self
            .text
            .match_indices(&header)
            .nth(n)
            .map_or(0, |(at, _)| at);
        at..at + header.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Problem};
    use std::path::Path;

    fn net(text: &str) -> crate::HostConfig {
        match parse(text, Path::new("/cfg/host.toml")) {
            Ok(c) => c,
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
        let c = net("");
        assert_eq!(c.network, Network::default());
        assert!(!c.firewall.dhcp_client);
    }

    #[test]
    fn full_section() {
        let c = net(r#"
[network]
dns = ["10.0.2.3", "2001:db8::53"]
search = ["Example.COM", "lab.example.com."]

[[network.interface]]
name = "eth0"
mtu = 1500
addresses = ["10.0.2.15/24", "fd00::2/64"]
gateway = "10.0.2.2"
gateway6 = "fe80::1"
routes = [{ destination = "192.168.0.0/16", gateway = "10.0.2.9" }, { destination = "10.9.0.0/16" }]
slaac = true

[[network.interface]]
mac = "52:54:00:AB:cd:01"
dhcp = true

[[network.hosts]]
address = "10.0.2.2"
names = ["gateway", "gw.example.com"]
"#);
        let n = &c.network;
        assert_eq!(n.dns.len(), 2);
        assert_eq!(n.search, ["example.com", "lab.example.com"]);
        assert_eq!(n.interfaces.len(), 2);
        let e = &n.interfaces[0];
        assert_eq!(e.selector.to_string(), "eth0");
        assert_eq!(e.mtu, Some(1500));
        assert!(e.up && e.slaac && !e.dhcp);
        assert_eq!(
            e.addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.2.15/24", "fd00::2/64"]
        );
        assert_eq!(
            e.routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "0.0.0.0/0 via 10.0.2.2",
                "::/0 via fe80::1",
                "192.168.0.0/16 via 10.0.2.9",
                "10.9.0.0/16 on-link"
            ]
        );
        let m = &n.interfaces[1];
        assert_eq!(m.selector.to_string(), "mac 52:54:00:ab:cd:01");
        assert!(m.dhcp && m.dhcp_dns && !m.slaac);
        assert_eq!(m.dhcp_service_name(), "dhcp-525400abcd01");
        assert_eq!(n.hosts[0].names, ["gateway", "gw.example.com"]);
        // The firewall follows.
        assert!(c.firewall.dhcp_client);
        assert_eq!(c.firewall.dns, n.dns);
        assert_eq!(c.firewall.rules.len(), 2);
        assert!(c.firewall.rules.iter().all(|r| r.out_interface.is_none()
            && r.direction == Direction::Out
            && r.ports.len() == 1));
    }

    #[test]
    fn firewall_union() {
        let c = net(r#"
[firewall]
dns = ["192.0.2.53", "10.0.2.3"]

[network]
dns = ["10.0.2.3", "192.0.2.54"]

[[network.interface]]
name = "eth0"
dhcp = true
dhcp_dns = false
"#);
        assert_eq!(
            c.firewall
                .dns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["192.0.2.53", "10.0.2.3", "192.0.2.54"]
        );
        assert!(c.firewall.dhcp_client);
        assert!(c.firewall.rules.is_empty());
        assert_eq!(c.network.interfaces[0].dhcp_service_name(), "dhcp-eth0");
    }

    #[test]
    fn addresses_and_macs() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.0.2.15/24", Some("10.0.2.15/24")),
            ("10.0.2.1/31", Some("10.0.2.1/31")),
            ("10.0.2.1/32", Some("10.0.2.1/32")),
            ("fd00::2/64", Some("fd00::2/64")),
            ("10.0.2.15", None),
            ("10.0.2.0/24", None),
            ("10.0.2.255/24", None),
            ("10.0.2.15/33", None),
            ("10.0.2.15/0", None),
            ("127.0.0.2/8", None),
            ("224.0.0.1/4", None),
            ("::/64", None),
            ("fd00::2/129", None),
            ("eth0/24", None),
        ];
        for (s, want) in cases {
            let got = InterfaceAddress::try_from(*s).map(|a| a.to_string());
            assert_eq!(got.as_deref().ok(), *want, "{s}: {got:?}");
        }
        let a = InterfaceAddress::try_from("10.0.2.15/24").unwrap();
        assert_eq!(a.network().to_string(), "10.0.2.0/24");
        let m = MacAddr::try_from("52-54-00-12-34-56").unwrap();
        assert_eq!(m.to_string(), "52:54:00:12:34:56");
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5g",
            "00:00:00:00:00:00",
            "01:00:5e:00:00:01",
            "525400123456",
            "5:54:00:12:34:567",
        ] {
            assert!(MacAddr::try_from(bad).is_err(), "{bad}");
        }
        assert!(domain_name("a-b.example").is_ok());
        for bad in ["", "-a", "a..b", "a b", "a/b"] {
            assert!(domain_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors() {
        let iface = |body: &str| format!("[[network.interface]]\n{body}\n");
        let cases: &[(String, &str, &str)] = &[
            (iface("mtu = 1500"), "network.interface[0]", "needs name or mac"),
            (
                iface("name = \"eth0\"\nmac = \"52:54:00:12:34:56\""),
                "network.interface[0].mac",
                "either name or mac",
            ),
            (iface("name = \"lo\""), "network.interface[0].name", "loopback"),
            (iface("name = \"a/b\""), "network.interface[0].name", "not an interface name"),
            (iface("mac = \"52:54:00:12:34\""), "network.interface[0].mac", "not a MAC address"),
            (
                iface("name = \"eth0\"") + &iface("name = \"eth0\""),
                "network.interface[1]",
                "configured twice",
            ),
            (
                iface("name = \"eth0\"\naddresses = [\"10.0.2.0/24\"]"),
                "network.interface[0].addresses[0]",
                "network address",
            ),
            (
                iface("name = \"eth0\"\naddresses = [\"10.0.2.15\"]"),
                "network.interface[0].addresses[0]",
                "needs a prefix length",
            ),
            (
                iface("name = \"eth0\"\naddresses = [\"10.0.2.15/24\", \"10.0.2.15/16\"]"),
                "network.interface[0].addresses[1]",
                "assigned twice",
            ),
            (
                iface("name = \"eth0\"\nmtu = 40"),
                "network.interface[0].mtu",
                "from 68 to 65535",
            ),
            (
                iface("name = \"eth0\"\nslaac = true\nmtu = 1000"),
                "network.interface[0].mtu",
                "IPv6 needs at least 1280",
            ),
            (
                iface("name = \"eth0\"\naddresses = [\"10.0.2.15/24\"]\ngateway = \"10.0.3.1\""),
                "network.interface[0].gateway",
                "not on a network of this interface",
            ),
            (
                iface("name = \"eth0\"\naddresses = [\"10.0.2.15/24\"]\ngateway = \"fe80::1\""),
                "network.interface[0].gateway",
                "not an IPv4 address",
            ),
            (
                iface("name = \"eth0\"\ngateway6 = \"2001:db8::1\""),
                "network.interface[0].gateway6",
                "not on a network",
            ),
            (
                iface("name = \"eth0\"\naddresses = [\"10.0.2.15/24\"]\nroutes = [{ destination = \"10.1.0.1/16\", gateway = \"10.0.2.2\" }]"),
                "network.interface[0].routes[0].destination",
                "bits set past",
            ),
            (
                iface("name = \"eth0\"\naddresses = [\"10.0.2.15/24\"]\nroutes = [{ destination = \"10.1.0.0/16\", gateway = \"fd00::1\" }]"),
                "network.interface[0].routes[0].gateway",
                "family",
            ),
            (
                iface("name = \"eth0\"\naddresses = [\"10.0.2.15/24\"]\ngateway = \"10.0.2.2\"\nroutes = [{ destination = \"0.0.0.0/0\", gateway = \"10.0.2.3\" }]"),
                "network.interface[0].routes[0].destination",
                "already configured",
            ),
            (
                iface("name = \"eth0\"\nroutes = [{ destination = \"fd01::/64\" }]"),
                "network.interface[0].routes[0].gateway",
                "needs an IPv6 address",
            ),
            (
                iface("name = \"eth0\"\nup = false\ndhcp = true"),
                "network.interface[0].up",
                "is down",
            ),
            (
                "[[service]]\nname = \"dhcp-eth0\"\nexec = [\"/bin/true\"]\n".to_owned()
                    + &iface("name = \"eth0\"\ndhcp = true"),
                "network.interface[0].dhcp",
                "taken",
            ),
            ("[network]\ndns = [\"10.0.2\"]\n".into(), "network.dns[0]", "not an IPv4"),
            (
                "[network]\ndns = [\"1.1.1.1\", \"1.1.1.2\", \"1.1.1.3\", \"1.1.1.4\"]\n".into(),
                "network.dns[3]",
                "at most 3",
            ),
            ("[network]\nsearch = [\"a..b\"]\n".into(), "network.search[0]", "not a domain"),
            (
                "[[network.hosts]]\naddress = \"10.0.0.1\"\nnames = []\n".into(),
                "network.hosts[0].names",
                "at least one",
            ),
            (
                "[[network.hosts]]\naddress = \"10.0.0.256\"\nnames = [\"x\"]\n".into(),
                "network.hosts[0].address",
                "not an IPv4",
            ),
            (iface("name = \"eth0\"\nipv6 = true"), "network.interface[0].ipv6", "unknown field"),
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
    fn line_numbers() {
        let ps = problems(
            "[network]\n\n[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.0.2.15/24\", \"bad\"]\n",
        );
        let p = ps
            .iter()
            .find(|p| p.key == "network.interface[0].addresses[1]")
            .unwrap();
        assert_eq!((p.line, p.column), (5, 30));
    }
}
