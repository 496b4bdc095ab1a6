//! The network plan as plain data: per interface, the ordered operations boot performs.
//!
//! Loopback comes first (up; the kernel gives it 127.0.0.1/8 and ::1). Then, for each
//! configured interface, in config order: the IPv6 sysctls that follow `slaac` (before the
//! link is up, so no router advertisement is taken early), the MTU, the static addresses, the
//! link up, and the routes (which need the link up). An interface with `up = false` is set
//! down and nothing else. DHCP is not an operation here: its client is a service.

use std::path::PathBuf;

use rampart_config::firewall::Cidr;
use rampart_config::network::{Interface, InterfaceAddress, Network, Route};

/// One operation on a resolved interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write a sysctl below `/proc/sys` (skipped when the kernel has no such key).
    Sysctl {
        /// Relative to `/proc/sys`, e.g. `net/ipv6/conf/eth0/accept_ra`.
        path: PathBuf,
        /// The value.
        value: &'static str,
    },
    /// Set the MTU.
    Mtu(u32),
    /// Add a static address.
    Address(InterfaceAddress),
    /// Set the link up (`true`) or down.
    Link(bool),
    /// Add a static route.
    Route(Route),
}

impl Op {
    /// What the operation does, for logs.
    pub fn describe(&self) -> String {
        match self {
            Op::Sysctl { path, value } => format!("set {}={value}", path.display()),
            Op::Mtu(m) => format!("set mtu {m}"),
            Op::Address(a) => format!("add address {a}"),
            Op::Link(true) => "set link up".to_owned(),
            Op::Link(false) => "set link down".to_owned(),
            Op::Route(r) => format!("add route {r}"),
        }
    }
}

/// The whole plan: the configured interfaces, in config order (an interface chosen by MAC is
/// resolved to its name at boot, then [`ops`] gives its operations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// The interfaces.
    pub interfaces: Vec<Interface>,
}

/// Plans the network of a host.
pub fn plan(net: &Network) -> NetPlan {
    NetPlan {
        interfaces: net.interfaces.clone(),
    }
}

/// The operations of loopback.
pub fn loopback_ops() -> Vec<Op> {
    vec![Op::Link(true)]
}

/// The operations of `iface` once it is known as `name`, in order.
pub fn ops(iface: &Interface, name: &str) -> Vec<Op> {
    if !iface.up {
        return vec![Op::Link(false)];
    }
    let mut out = Vec::new();
    let ra = if iface.slaac { "1" } else { "0" };
    for key in ["accept_ra", "autoconf"] {
        out.push(Op::Sysctl {
            path: PathBuf::from(format!("net/ipv6/conf/{name}/{key}")),
            value: ra,
        });
    }
    if let Some(m) = iface.mtu {
        out.push(Op::Mtu(m));
    }
    out.extend(iface.addresses.iter().copied().map(Op::Address));
    out.push(Op::Link(true));
    // Default routes last: a gateway reached through a static route of its own comes first.
    let (defaults, others): (Vec<Route>, Vec<Route>) = iface
        .routes
        .iter()
        .partition(|r| matches!(r.destination, Cidr::V4(_, 0) | Cidr::V6(_, 0)));
    out.extend(others.into_iter().map(Op::Route));
    out.extend(defaults.into_iter().map(Op::Route));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn network(toml: &str) -> Network {
        match rampart_config::parse(toml, Path::new("host.toml")) {
            Ok(c) => c.network,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ops_in_order() {
        let n = network(
            r#"
[[network.interface]]
name = "eth0"
mtu = 1400
addresses = ["10.0.2.15/24", "fd00::2/64"]
gateway = "10.0.2.2"
routes = [{ destination = "192.168.0.0/16", gateway = "10.0.2.9" }]
slaac = true

[[network.interface]]
mac = "52:54:00:12:34:57"
up = false

[[network.interface]]
name = "eth2"
dhcp = true
"#,
        );
        let p = plan(&n);
        assert_eq!(p.interfaces.len(), 3);
        let text = |ops: Vec<Op>| ops.iter().map(Op::describe).collect::<Vec<_>>();
        assert_eq!(
            text(ops(&p.interfaces[0], "eth0")),
            [
                "set net/ipv6/conf/eth0/accept_ra=1",
                "set net/ipv6/conf/eth0/autoconf=1",
                "set mtu 1400",
                "add address 10.0.2.15/24",
                "add address fd00::2/64",
                "set link up",
                "add route 192.168.0.0/16 via 10.0.2.9",
                "add route 0.0.0.0/0 via 10.0.2.2",
            ]
        );
        assert_eq!(text(ops(&p.interfaces[1], "eth1")), ["set link down"]);
        assert_eq!(
            text(ops(&p.interfaces[2], "eth2")),
            [
                "set net/ipv6/conf/eth2/accept_ra=0",
                "set net/ipv6/conf/eth2/autoconf=0",
                "set link up",
            ]
        );
        assert!(p.interfaces[2].dhcp);
        assert_eq!(text(loopback_ops()), ["set link up"]);
    }
}
