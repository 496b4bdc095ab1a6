//! rtnetlink messages, hand-encoded, and a synchronous `NETLINK_ROUTE` socket.
//!
//! Only what rampart needs: set a link up or down and its MTU (`RTM_NEWLINK`), add and delete
//! addresses (`RTM_NEWADDR`, `RTM_DELADDR`) and routes (`RTM_NEWROUTE`, `RTM_DELROUTE`) in the
//! main table. Every request asks for an acknowledgement; a refusal comes back as the errno
//! plus the kernel's extended-ack message. Attribute integers are in host byte order,
//! addresses in network byte order. The layouts are covered by byte-for-byte unit tests.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use rampart_config::firewall::Cidr;
use rampart_config::network::InterfaceAddress;

use crate::firewall::netlink::parse_replies;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_NEWADDR`.
pub const RTM_NEWADDR: u16 = 20;
/// `RTM_DELADDR`.
pub const RTM_DELADDR: u16 = 21;
/// `RTM_NEWROUTE`.
pub const RTM_NEWROUTE: u16 = 24;
/// `RTM_DELROUTE`.
pub const RTM_DELROUTE: u16 = 25;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

const IFF_UP: u32 = 0x1;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Who installed a route (`rtm_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOrigin {
    /// `RTPROT_STATIC`: from the host config.
    Static,
    /// `RTPROT_DHCP`: from a DHCP lease.
    Dhcp,
}

impl RouteOrigin {
    fn number(self) -> u8 {
        match self {
            RouteOrigin::Static => 4,
            RouteOrigin::Dhcp => 16,
        }
    }
}

/// One rtnetlink request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Set the link up or down.
    Link {
        /// The interface index.
        index: u32,
        /// Up or down.
        up: bool,
    },
    /// Set the MTU.
    Mtu {
        /// The interface index.
        index: u32,
        /// The MTU.
        mtu: u32,
    },
    /// Add (or replace) an address.
    AddAddress {
        /// The interface index.
        index: u32,
        /// The address.
        addr: InterfaceAddress,
    },
    /// Delete an address.
    DelAddress {
        /// The interface index.
        index: u32,
        /// The address.
        addr: InterfaceAddress,
    },
    /// Add (or replace) a route in the main table.
    AddRoute {
        /// The interface index.
        index: u32,
        /// The destination.
        destination: Cidr,
        /// The next hop, if any.
        gateway: Option<IpAddr>,
        /// Who installs it.
        origin: RouteOrigin,
        /// The route metric, if any.
        metric: Option<u32>,
    },
    /// Delete a route from the main table.
    DelRoute {
        /// The interface index.
        index: u32,
        /// The destination.
        destination: Cidr,
        /// The next hop, if any.
        gateway: Option<IpAddr>,
    },
}

fn family_of(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn broadcast(addr: InterfaceAddress) -> Option<[u8; 4]> {
    match addr.addr {
        IpAddr::V4(v) if addr.prefix < 31 => {
            let host = u32::MAX.checked_shr(u32::from(addr.prefix)).unwrap_or(0);
            Some((u32::from(v) | host).to_be_bytes())
        }
        _ => None,
    }
}

/// A message being built.
struct Msg {
    bytes: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16, seq: u32) -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&ty.to_ne_bytes());
        bytes.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        Msg { bytes }
    }

    fn raw(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    fn pad(&mut self) {
        let n = (self.bytes.len() + 3) & !3;
        self.bytes.resize(n, 0);
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        self.pad();
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.pad();
    }

    fn finish(mut self) -> Vec<u8> {
        self.pad();
        let len = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        if let Some(dst) = self.bytes.get_mut(0..4) {
            dst.copy_from_slice(&len.to_ne_bytes());
        }
        self.bytes
    }
}

fn ifinfomsg(m: &mut Msg, index: u32, flags: u32, change: u32) {
    m.raw(&[0, 0]); // AF_UNSPEC, pad
    m.raw(&0u16.to_ne_bytes()); // ifi_type
    m.raw(&index.to_ne_bytes());
    m.raw(&flags.to_ne_bytes());
    m.raw(&change.to_ne_bytes());
}

fn ifaddrmsg(m: &mut Msg, addr: InterfaceAddress, index: u32) {
    m.raw(&[family_of(addr.addr), addr.prefix, 0, RT_SCOPE_UNIVERSE]);
    m.raw(&index.to_ne_bytes());
    let bytes = ip_bytes(addr.addr);
    if addr.addr.is_ipv4() {
        m.attr(IFA_LOCAL, &bytes);
    }
    m.attr(IFA_ADDRESS, &bytes);
    if let Some(b) = broadcast(addr) {
        m.attr(IFA_BROADCAST, &b);
    }
}

fn rtmsg(m: &mut Msg, destination: Cidr, gateway: Option<IpAddr>, protocol: u8, index: u32) {
    let family = match destination {
        Cidr::V4(..) => AF_INET,
        Cidr::V6(..) => AF_INET6,
    };
    let scope = if gateway.is_some() {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    m.raw(&[
        family,
        destination.prefix(),
        0, // src_len
        0, // tos
        RT_TABLE_MAIN,
        protocol,
        scope,
        RTN_UNICAST,
    ]);
    m.raw(&0u32.to_ne_bytes()); // rtm_flags
    if destination.prefix() > 0 {
        m.attr(RTA_DST, &destination.octets());
    }
    if let Some(g) = gateway {
        m.attr(RTA_GATEWAY, &ip_bytes(g));
    }
    m.attr(RTA_OIF, &index.to_ne_bytes());
}

impl Request {
    /// The message, with sequence number `seq`.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        match self {
            Request::Link { index, up } => {
                let mut m = Msg::new(RTM_NEWLINK, 0, seq);
                ifinfomsg(&mut m, *index, if *up { IFF_UP } else { 0 }, IFF_UP);
                m.finish()
            }
            Request::Mtu { index, mtu } => {
                let mut m = Msg::new(RTM_NEWLINK, 0, seq);
                ifinfomsg(&mut m, *index, 0, 0);
                m.attr(IFLA_MTU, &mtu.to_ne_bytes());
                m.finish()
            }
            Request::AddAddress { index, addr } => {
                let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq);
                ifaddrmsg(&mut m, *addr, *index);
                m.finish()
            }
            Request::DelAddress { index, addr } => {
                let mut m = Msg::new(RTM_DELADDR, 0, seq);
                ifaddrmsg(&mut m, *addr, *index);
                m.finish()
            }
            Request::AddRoute {
                index,
                destination,
                gateway,
                origin,
                metric,
            } => {
                let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq);
                rtmsg(&mut m, *destination, *gateway, origin.number(), *index);
                if let Some(p) = metric {
                    m.attr(RTA_PRIORITY, &p.to_ne_bytes());
                }
                m.finish()
            }
            Request::DelRoute {
                index,
                destination,
                gateway,
            } => {
                let mut m = Msg::new(RTM_DELROUTE, 0, seq);
                rtmsg(&mut m, *destination, *gateway, 0, *index);
                m.finish()
            }
        }
    }

    /// What the request does, for messages: `add address 10.0.2.15/24`.
    pub fn describe(&self) -> String {
        match self {
            Request::Link { up: true, .. } => "set link up".to_owned(),
            Request::Link { up: false, .. } => "set link down".to_owned(),
            Request::Mtu { mtu, .. } => format!("set mtu {mtu}"),
            Request::AddAddress { addr, .. } => format!("add address {addr}"),
            Request::DelAddress { addr, .. } => format!("delete address {addr}"),
            Request::AddRoute {
                destination,
                gateway,
                ..
            } => match gateway {
                Some(g) => format!("add route {destination} via {g}"),
                None => format!("add route {destination}"),
            },
            Request::DelRoute {
                destination,
                gateway,
                ..
            } => match gateway {
                Some(g) => format!("delete route {destination} via {g}"),
                None => format!("delete route {destination}"),
            },
        }
    }
}

/// Why an rtnetlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The socket could not be opened.
    #[error("open rtnetlink socket: {step}: {source}")]
    Socket {
        /// The failing call.
        step: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Sending or receiving failed.
    #[error("{op}: {source}")]
    Io {
        /// The request.
        op: String,
        /// The error.
        source: io::Error,
    },
    /// The kernel refused the request.
    #[error("{op}: {source}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// The request.
        op: String,
        /// The errno.
        source: io::Error,
        /// The extended ack message.
        detail: Option<String>,
    },
}

impl RtnlError {
    /// The errno of a refusal, if it is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A `NETLINK_ROUTE` socket that sends one request at a time and waits for its ack.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens and binds the socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, RtnlError> {
        let fd = crate::netlink::open(
            libc::NETLINK_ROUTE,
            crate::netlink::Options {
                bind: true,
                cap_ack: Some(false),
                ext_ack: true,
                recv_timeout: std::time::Duration::from_secs(5),
            },
        )
        .map_err(|(step, source)| RtnlError::Socket { step, source })?;
        Ok(Socket { fd, seq: 1 })
    }

    /// Sends one request and waits for its acknowledgement.
    pub fn request(&mut self, req: &Request) -> Result<(), RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = req.encode(seq);
        let io_err = |source| RtnlError::Io {
            op: req.describe(),
            source,
        };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (pid 0: the kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `bytes` and `kernel` are valid for the given lengths during the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: `buf` is valid for writes of its length during the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_err(e));
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "empty reply",
                )));
            }
            let replies = parse_replies(buf.get(..n).unwrap_or(&[]))
                .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
            for r in replies {
                if r.seq != seq {
                    continue;
                }
                if r.errno == 0 {
                    return Ok(());
                }
                return Err(RtnlError::Refused {
                    op: req.describe(),
                    source: io::Error::from_raw_os_error(r.errno.saturating_abs()),
                    detail: r.message,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn link_up_and_mtu() {
        let mut want = hdr(32, RTM_NEWLINK, 0x5, 7);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&3u32.to_ne_bytes());
        want.extend_from_slice(&1u32.to_ne_bytes());
        want.extend_from_slice(&1u32.to_ne_bytes());
        assert_eq!(Request::Link { index: 3, up: true }.encode(7), want);

        let mut want = hdr(40, RTM_NEWLINK, 0x5, 8);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&3u32.to_ne_bytes());
        want.extend_from_slice(&[0; 8]);
        want.extend(attr(IFLA_MTU, &1400u32.to_ne_bytes()));
        assert_eq!(
            Request::Mtu {
                index: 3,
                mtu: 1400
            }
            .encode(8),
            want
        );
    }

    #[test]
    fn addresses() {
        let a = InterfaceAddress::try_from("10.0.2.15/24").unwrap();
        let mut want = hdr(48, RTM_NEWADDR, 0x505, 1);
        want.extend_from_slice(&[2, 24, 0, 0]);
        want.extend_from_slice(&2u32.to_ne_bytes());
        want.extend(attr(IFA_LOCAL, &[10, 0, 2, 15]));
        want.extend(attr(IFA_ADDRESS, &[10, 0, 2, 15]));
        want.extend(attr(IFA_BROADCAST, &[10, 0, 2, 255]));
        assert_eq!(Request::AddAddress { index: 2, addr: a }.encode(1), want);

        let a6 = InterfaceAddress::try_from("fd00::2/64").unwrap();
        let mut want = hdr(44, RTM_DELADDR, 0x5, 2);
        want.extend_from_slice(&[10, 64, 0, 0]);
        want.extend_from_slice(&2u32.to_ne_bytes());
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[15] = 2;
        want.extend(attr(IFA_ADDRESS, &b));
        assert_eq!(Request::DelAddress { index: 2, addr: a6 }.encode(2), want);
    }

    #[test]
    fn routes() {
        let default = Cidr::try_from("0.0.0.0/0").unwrap();
        let r = Request::AddRoute {
            index: 2,
            destination: default,
            gateway: Some("10.0.2.2".parse().unwrap()),
            origin: RouteOrigin::Dhcp,
            metric: None,
        };
        let mut want = hdr(44, RTM_NEWROUTE, 0x505, 3);
        want.extend_from_slice(&[2, 0, 0, 0, 254, 16, 0, 1]);
        want.extend_from_slice(&[0; 4]);
        want.extend(attr(RTA_GATEWAY, &[10, 0, 2, 2]));
        want.extend(attr(RTA_OIF, &2u32.to_ne_bytes()));
        assert_eq!(r.encode(3), want);
        assert_eq!(r.describe(), "add route 0.0.0.0/0 via 10.0.2.2");

        let onlink = Request::DelRoute {
            index: 2,
            destination: Cidr::try_from("192.168.0.0/16").unwrap(),
            gateway: None,
        };
        let mut want = hdr(44, RTM_DELROUTE, 0x5, 4);
        want.extend_from_slice(&[2, 16, 0, 0, 254, 0, 253, 1]);
        want.extend_from_slice(&[0; 4]);
        want.extend(attr(RTA_DST, &[192, 168, 0, 0]));
        want.extend(attr(RTA_OIF, &2u32.to_ne_bytes()));
        assert_eq!(onlink.encode(4), want);
    }
}
