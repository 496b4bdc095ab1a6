//! DHCP messages (encoded and decoded with the `dhcproto` crate) and the IPv4 and UDP headers
//! around them for the packet socket (built and checked here: before it has an address, the
//! client sends and receives whole IP packets).

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::machine::{Incoming, Kind, Lease, Outgoing};

/// The server port.
pub const SERVER_PORT: u16 = 67;
/// The client port.
pub const CLIENT_PORT: u16 = 68;

/// The DHCP payload of `out` from the client with hardware address `mac`.
pub fn encode(out: &Outgoing, mac: [u8; 6]) -> Result<Vec<u8>, String> {
    let ciaddr = out.ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut msg = v4::Message::new_with_id(
        out.xid,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    msg.set_opcode(Opcode::BootRequest);
    // Ask for broadcast replies while the client has no address yet.
    if out.ciaddr.is_none() {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let ty = match out.kind {
        Kind::Discover => MessageType::Discover,
        Kind::Request => MessageType::Request,
        Kind::Release => MessageType::Release,
    };
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(ty));
    let mut id = vec![1u8];
    id.extend_from_slice(&mac);
    opts.insert(DhcpOption::ClientIdentifier(id));
    if let Some(a) = out.requested {
        opts.insert(DhcpOption::RequestedIpAddress(a));
    }
    if let Some(s) = out.server_id {
        opts.insert(DhcpOption::ServerIdentifier(s));
    }
    if out.kind != Kind::Release {
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::DomainName,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
    }
    msg.to_vec().map_err(|e| e.to_string())
}

fn prefix_of(mask: Ipv4Addr) -> u8 {
    u8::try_from(u32::from(mask).leading_ones()).unwrap_or(32)
}

/// Decodes a server's DHCP payload; `None` unless it is an OFFER, ACK or NAK for `mac`.
pub fn decode(payload: &[u8], mac: [u8; 6]) -> Option<Incoming> {
    let msg = v4::Message::decode(&mut Decoder::new(payload)).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.chaddr().get(..6) != Some(&mac[..]) {
        return None;
    }
    let opts = msg.opts();
    let xid = msg.xid();
    let ty = opts.msg_type()?;
    if ty == MessageType::Nak {
        return Some(Incoming::Nak { xid });
    }
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => return None,
    };
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => prefix_of(*m),
        _ => 24,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => rampart_config::network::domain_name(d).ok(),
        _ => None,
    };
    let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 3600,
    };
    let t1 = match opts.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => Some(*t),
        _ => None,
    };
    let t2 = match opts.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) => Some(*t),
        _ => None,
    };
    let (t1_secs, t2_secs) = Lease::timers(lease_secs, t1, t2);
    let lease = Lease {
        addr: msg.yiaddr(),
        prefix,
        router,
        dns,
        domain,
        server,
        lease_secs,
        t1_secs,
        t2_secs,
    };
    match ty {
        MessageType::Offer => Some(Incoming::Offer { xid, lease }),
        MessageType::Ack => Some(Incoming::Ack { xid, lease }),
        _ => None,
    }
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ]));
    }
    if let Some(last) = chunks.remainder().first() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet holding a UDP datagram from `src:68` to `dst:67` with `payload`.
pub fn ip_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    let total = udp_len.saturating_add(20);
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0x10]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]); // id, frag, ttl, udp, checksum
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = checksum(p.get(..20).unwrap_or(&[]), 0);
    if let Some(c) = p.get_mut(10..12) {
        c.copy_from_slice(&ip_sum.to_be_bytes());
    }
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    udp.extend_from_slice(&SERVER_PORT.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    // Pseudo-header: source, destination, zero, protocol, UDP length.
    let mut pseudo = 0u32;
    for w in [src.octets(), dst.octets()] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 17 + u32::from(udp_len);
    let mut sum = checksum(&udp, pseudo);
    if sum == 0 {
        sum = 0xffff;
    }
    if let Some(c) = udp.get_mut(6..8) {
        c.copy_from_slice(&sum.to_be_bytes());
    }
    p.extend_from_slice(&udp);
    p
}

/// The UDP payload of an IPv4 packet sent to port 68, if it is one.
pub fn udp_to_client(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 || packet.get(9) != Some(&17) {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    let udp = packet.get(ihl..total.min(packet.len()))?;
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if dport != CLIENT_PORT || len < 8 {
        return None;
    }
    udp.get(8..len.min(udp.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn reply(ty: MessageType, xid: u32, mac: [u8; 6]) -> Vec<u8> {
        let mut m = v4::Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            [10, 0, 2, 15].into(),
            [10, 0, 2, 2].into(),
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(ty));
        o.insert(DhcpOption::ServerIdentifier([10, 0, 2, 2].into()));
        o.insert(DhcpOption::SubnetMask([255, 255, 255, 0].into()));
        o.insert(DhcpOption::Router(vec![[10, 0, 2, 2].into()]));
        o.insert(DhcpOption::DomainNameServer(vec![[10, 0, 2, 3].into()]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        m.to_vec().unwrap()
    }

    #[test]
    fn requests_carry_the_right_options() {
        let out = Outgoing {
            kind: Kind::Request,
            xid: 9,
            ciaddr: None,
            requested: Some([10, 0, 2, 15].into()),
            server_id: Some([10, 0, 2, 2].into()),
            unicast: None,
        };
        let bytes = encode(&out, MAC).unwrap();
        let m = v4::Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(m.xid(), 9);
        assert!(m.flags().broadcast());
        assert_eq!(m.chaddr(), MAC);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress([10, 0, 2, 15].into()))
        );
        let renew = Outgoing {
            ciaddr: Some([10, 0, 2, 15].into()),
            requested: None,
            server_id: None,
            ..out
        };
        let m = v4::Message::decode(&mut Decoder::new(&encode(&renew, MAC).unwrap())).unwrap();
        assert!(!m.flags().broadcast());
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
    }

    #[test]
    fn replies_decode_to_leases() {
        let cases: &[(MessageType, [u8; 6], Option<&str>)] = &[
            (MessageType::Offer, MAC, Some("offer")),
            (MessageType::Ack, MAC, Some("ack")),
            (MessageType::Nak, MAC, Some("nak")),
            (MessageType::Ack, [2, 0, 0, 0, 0, 1], None),
            (MessageType::Inform, MAC, None),
        ];
        for (ty, mac, want) in cases {
            let got = decode(&reply(*ty, 5, *mac), MAC);
            let name = got.as_ref().map(|g| match g {
                Incoming::Offer { .. } => "offer",
                Incoming::Ack { .. } => "ack",
                Incoming::Nak { .. } => "nak",
            });
            assert_eq!(name, *want, "{ty:?}");
        }
        let Some(Incoming::Ack { xid, lease }) = decode(&reply(MessageType::Ack, 5, MAC), MAC)
        else {
            panic!("no ack")
        };
        assert_eq!(xid, 5);
        assert_eq!(lease.addr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(lease.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!((lease.t1_secs, lease.t2_secs), (43200, 75600));
        assert_eq!(decode(b"garbage", MAC), None);
    }

    #[test]
    fn ip_and_udp_headers() {
        let p = ip_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, b"abc");
        assert_eq!(p.len(), 31);
        assert_eq!(&p[..4], &[0x45, 0x10, 0, 31]);
        // A correct header sums to zero.
        assert_eq!(checksum(&p[..20], 0), 0);
        assert_eq!(&p[20..26], &[0, 68, 0, 67, 0, 11]);
        // Turn it into a reply to port 68 and read the payload back.
        let mut r = p.clone();
        r[22..24].copy_from_slice(&68u16.to_be_bytes());
        assert_eq!(udp_to_client(&r), Some(&b"abc"[..]));
        assert_eq!(udp_to_client(&p), None, "sent to 67");
        assert_eq!(udp_to_client(&r[..10]), None);
        assert_eq!(udp_to_client(&[]), None);
    }
}
