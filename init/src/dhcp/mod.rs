//! `rampart-dhcp`: the DHCPv4 client of one interface. PID 1 never calls this module: it runs
//! as its own binary, started by init as a supervised service with only `CAP_NET_ADMIN` and
//! `CAP_NET_RAW` (see [`crate::network::dhcp_service`]), so PID 1 parses no packet from the
//! network.
//!
//! The client talks through a packet socket (it has no address to receive on at first, and
//! the packet socket is not subject to `rp_filter`), except for renewals, which go unicast to
//! the server from the leased address. It applies leases itself over rtnetlink (address and
//! default route, `proto dhcp`), writes `<run>/dhcp/<service>.lease` (for people and tests)
//! and `<run>/dhcp/<service>.dns`, and recomposes `<run>/resolv.conf` in place; it logs every
//! change on stdout (the supervisor's log). On SIGTERM it releases the lease and removes the
//! address before exiting. The protocol logic is the pure [`machine`].

pub mod machine;
pub mod packet;

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rampart_config::firewall::{Cidr, InterfaceName};
use rampart_config::network::{InterfaceAddress, MacAddr, Network, Selector};

use crate::network::files::{self, DynamicDns};
use crate::network::rtnl::{Request, RouteOrigin, Socket as Rtnl};
use machine::{Action, Lease, Machine, Outgoing};

/// How long the client waits for its interface to appear.
pub const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// Bad command line.
    #[error("usage: {0}")]
    Usage(String),
    /// The host config could not be read.
    #[error(transparent)]
    Config(#[from] rampart_config::ConfigError),
    /// The interface is not there.
    #[error(transparent)]
    Interface(#[from] crate::network::NetworkError),
    /// The interface's MAC address could not be read.
    #[error("read {path}: {reason}")]
    Mac {
        /// The sysfs file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A socket call failed.
    #[error("{step}: {source}")]
    Socket {
        /// The call.
        step: &'static str,
        /// The error.
        source: io::Error,
    },
    /// rtnetlink could not be opened.
    #[error(transparent)]
    Rtnl(#[from] crate::network::rtnl::RtnlError),
}

/// The command line: `--interface NAME | --mac MAC`, `--config FILE`, `--run-dir DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Which interface.
    pub selector: Selector,
    /// The host config (for the static resolvers and `dhcp_dns`).
    pub config: PathBuf,
    /// The run directory (`/run/rampart`).
    pub run_dir: PathBuf,
}

/// Parses the arguments after argv[0].
pub fn parse_args(args: &[String]) -> Result<Options, DhcpError> {
    let usage = "rampart-dhcp (--interface NAME | --mac MAC) [--config FILE] [--run-dir DIR]";
    let mut selector = None;
    let mut config = PathBuf::from(rampart_config::IMAGE_CONFIG_PATH);
    let mut run_dir = PathBuf::from("/run/rampart");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| DhcpError::Usage(format!("{a} needs a value; {usage}")))?;
        match a.as_str() {
            "--interface" => {
                selector = Some(Selector::Name(
                    InterfaceName::try_from(value.as_str()).map_err(DhcpError::Usage)?,
                ));
            }
            "--mac" => {
                selector = Some(Selector::Mac(
                    MacAddr::try_from(value.as_str()).map_err(DhcpError::Usage)?,
                ));
            }
            "--config" => config = PathBuf::from(value),
            "--run-dir" => run_dir = PathBuf::from(value),
            other => {
                return Err(DhcpError::Usage(format!(
                    "unknown argument {other}; {usage}"
                )))
            }
        }
    }
    Ok(Options {
        selector: selector.ok_or_else(|| DhcpError::Usage(usage.to_owned()))?,
        config,
        run_dir,
    })
}

/// The `.lease` file text.
pub fn lease_text(iface: &str, lease: &Lease) -> String {
    let dns: Vec<String> = lease.dns.iter().map(ToString::to_string).collect();
    format!(
        "interface {iface}\naddress {}/{}\nrouter {}\ndns {}\nserver {}\nlease {}\nt1 {}\nt2 {}\n",
        lease.addr,
        lease.prefix,
        lease
            .router
            .map_or_else(|| "none".to_owned(), |r| r.to_string()),
        dns.join(" "),
        lease.server,
        lease.lease_secs,
        lease.t1_secs,
        lease.t2_secs
    )
}

fn last_os(step: &'static str) -> DhcpError {
    DhcpError::Socket {
        step,
        source: io::Error::last_os_error(),
    }
}

/// The client's sockets and files.
struct Client {
    name: String,
    index: u32,
    mac: [u8; 6],
    packet: OwnedFd,
    rtnl: Rtnl,
    run_dir: PathBuf,
    service: String,
    network: Network,
    use_dns: bool,
}

fn read_mac(sys_class_net: &Path, name: &str) -> Result<[u8; 6], DhcpError> {
    let path = sys_class_net.join(name).join("address");
    let text = std::fs::read_to_string(&path).map_err(|e| DhcpError::Mac {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    MacAddr::try_from(text.trim())
        .map(|m| m.0)
        .map_err(|reason| DhcpError::Mac { path, reason })
}

fn packet_socket(index: u32) -> Result<OwnedFd, DhcpError> {
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::c_int::from(proto),
        )
    };
    if raw < 0 {
        return Err(last_os("packet socket"));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = i32::try_from(index).unwrap_or(0);
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_os("bind packet socket"));
    }
    Ok(fd)
}

impl Client {
    fn log(&self, msg: &str) {
        println!("rampart-dhcp: {}: {msg}", self.name);
    }

    fn send_broadcast(&self, src: Ipv4Addr, payload: &[u8]) -> Result<(), DhcpError> {
        let frame = packet::ip_udp(src, Ipv4Addr::BROADCAST, payload);
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sll.sll_ifindex = i32::try_from(self.index).unwrap_or(0);
        sll.sll_halen = 6;
        sll.sll_addr = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0];
        // SAFETY: `frame` and `sll` are valid for the given lengths during the call.
        let n = unsafe {
            libc::sendto(
                self.packet.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(last_os("send broadcast"));
        }
        Ok(())
    }

    /// Sends to the server from the leased address through a raw IP socket (`CAP_NET_RAW`;
    /// a UDP socket on port 68 would need `CAP_NET_BIND_SERVICE`), routed by the kernel and
    /// seen by the firewall's output chain.
    fn send_unicast(&self, from: Ipv4Addr, to: Ipv4Addr, payload: &[u8]) -> Result<(), DhcpError> {
        let frame = packet::ip_udp(from, to, payload);
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if raw < 0 {
            return Err(last_os("raw socket"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes(to.octets());
        // SAFETY: `frame` and `sin` are valid for the given lengths during the call.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(last_os("send unicast"));
        }
        Ok(())
    }

    fn send(&self, out: &Outgoing) {
        let payload = match packet::encode(out, self.mac) {
            Ok(p) => p,
            Err(e) => return self.log(&format!("encode {:?}: {e}", out.kind)),
        };
        let sent = match (out.unicast, out.ciaddr) {
            (Some(server), Some(from)) => self.send_unicast(from, server, &payload),
            _ => self.send_broadcast(out.ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED), &payload),
        };
        if let Err(e) = sent {
            self.log(&format!("send {:?}: {e}", out.kind));
        }
    }

    fn request(&mut self, req: &Request) {
        if let Err(e) = self.rtnl.request(req) {
            // Deleting what is already gone is fine.
            if !(matches!(req, Request::DelAddress { .. } | Request::DelRoute { .. })
                && matches!(e.errno(), Some(libc::EADDRNOTAVAIL | libc::ESRCH)))
            {
                self.log(&format!("error: {e}"));
            }
        }
    }

    fn files(&self, lease: Option<&Lease>) {
        let dir = self.run_dir.join(files::DHCP_DIR);
        let lease_path = dir.join(format!("{}.lease", self.service));
        let dns_path = dir.join(format!("{}.dns", self.service));
        let result = match lease {
            Some(l) => {
                let dns = DynamicDns {
                    servers: l.dns.iter().copied().map(IpAddr::V4).collect(),
                    search: l.domain.iter().cloned().collect(),
                };
                std::fs::write(&lease_path, lease_text(&self.name, l)).and_then(|()| {
                    if self.use_dns {
                        std::fs::write(&dns_path, dns.to_text())
                    } else {
                        Ok(())
                    }
                })
            }
            None => {
                let _ = std::fs::remove_file(&dns_path);
                std::fs::remove_file(&lease_path).or_else(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
            }
        };
        if let Err(e) = result {
            self.log(&format!("error: write {}: {e}", dir.display()));
        }
        let resolv = self.run_dir.join(files::RESOLV_FILE);
        let text = files::compose_resolv(&self.network, &files::read_leases(&self.run_dir));
        if let Err(e) = files::write_in_place(&resolv, &text) {
            self.log(&format!("error: {e}"));
        }
    }

    fn addr(lease: &Lease) -> InterfaceAddress {
        InterfaceAddress {
            addr: IpAddr::V4(lease.addr),
            prefix: lease.prefix,
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        let index = self.index;
        for a in actions {
            match a {
                Action::Send(out) => self.send(&out),
                Action::Apply(lease) => {
                    self.request(&Request::AddAddress {
                        index,
                        addr: Self::addr(&lease),
                    });
                    if let Some(r) = lease.router {
                        self.request(&Request::AddRoute {
                            index,
                            destination: Cidr::V4(Ipv4Addr::UNSPECIFIED, 0),
                            gateway: Some(IpAddr::V4(r)),
                            origin: RouteOrigin::Dhcp,
                            metric: None,
                        });
                    }
                    self.files(Some(&lease));
                    self.log(&format!(
                        "bound {}/{} via {} dns {:?} lease {}s (renew at {}s)",
                        lease.addr,
                        lease.prefix,
                        lease
                            .router
                            .map_or_else(|| "none".to_owned(), |r| r.to_string()),
                        lease.dns,
                        lease.lease_secs,
                        lease.t1_secs
                    ));
                }
                Action::Remove(lease) => {
                    if let Some(r) = lease.router {
                        self.request(&Request::DelRoute {
                            index,
                            destination: Cidr::V4(Ipv4Addr::UNSPECIFIED, 0),
                            gateway: Some(IpAddr::V4(r)),
                        });
                    }
                    self.request(&Request::DelAddress {
                        index,
                        addr: Self::addr(&lease),
                    });
                    self.files(None);
                    self.log(&format!("released {}/{}", lease.addr, lease.prefix));
                }
            }
        }
    }

    fn receive(&self, buf: &mut [u8]) -> Option<machine::Incoming> {
        // SAFETY: `buf` is valid for writes of its length during the call.
        let n = unsafe {
            libc::recv(
                self.packet.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let n = usize::try_from(n).ok()?;
        let payload = packet::udp_to_client(buf.get(..n)?)?;
        packet::decode(payload, self.mac)
    }
}

fn random_xid() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: `b` is valid for writes of its length during the call.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        std::process::id().wrapping_mul(2_654_435_761)
    }
}

/// Runs the client until SIGTERM (or SIGINT), then releases the lease.
pub fn run(opts: &Options, sys_class_net: &Path) -> Result<(), DhcpError> {
    let cfg = rampart_config::load(&opts.config)?;
    let configured = cfg
        .network
        .interfaces
        .iter()
        .find(|i| i.selector == opts.selector);
    let use_dns = configured.is_none_or(|i| i.dhcp_dns);
    let resolved = crate::network::resolve(&opts.selector, sys_class_net, APPEAR_TIMEOUT)?;
    let service = configured.map_or_else(
        || format!("dhcp-{}", resolved.name),
        |i| i.dhcp_service_name(),
    );
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(|e| DhcpError::Socket {
        step: "block signals",
        source: io::Error::from(e),
    })?;
    let sfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| DhcpError::Socket {
            step: "signalfd",
            source: io::Error::from(e),
        })?;
    let mut client = Client {
        mac: read_mac(sys_class_net, &resolved.name)?,
        packet: packet_socket(resolved.index)?,
        rtnl: Rtnl::open()?,
        name: resolved.name,
        index: resolved.index,
        run_dir: opts.run_dir.clone(),
        service,
        network: cfg.network.clone(),
        use_dns,
    };
    client.log("starting");
    let started = Instant::now();
    let mut m = Machine::new(random_xid());
    let actions = m.start(started.elapsed());
    client.perform(actions);
    let mut buf = vec![0u8; 2048];
    loop {
        let wait = m.deadline().saturating_sub(started.elapsed());
        let timeout = libc::c_int::try_from(wait.as_millis().saturating_add(1)).unwrap_or(60_000);
        let mut fds = [
            libc::pollfd {
                fd: client.packet.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(DhcpError::Socket {
                step: "poll",
                source: e,
            });
        }
        if fds.get(1).is_some_and(|f| f.revents != 0) {
            client.log("stopping");
            let actions = m.release();
            client.perform(actions);
            return Ok(());
        }
        if fds.first().is_some_and(|f| f.revents != 0) {
            while let Some(p) = client.receive(&mut buf) {
                let actions = m.on_packet(started.elapsed(), p);
                client.perform(actions);
            }
            // Drain packets that are not for us.
            // SAFETY: `buf` is valid for writes of its length during the call.
            while unsafe {
                libc::recv(
                    client.packet.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            } > 0
            {}
        }
        let actions = m.on_timeout(started.elapsed());
        client.perform(actions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_line() {
        let o = parse_args(&args(&["--interface", "eth0", "--run-dir", "/tmp/r"])).unwrap();
        assert_eq!(o.selector.to_string(), "eth0");
        assert_eq!(o.run_dir, PathBuf::from("/tmp/r"));
        assert_eq!(o.config, PathBuf::from("/etc/rampart/host.toml"));
        let o = parse_args(&args(&["--mac", "52:54:00:12:34:56"])).unwrap();
        assert_eq!(o.selector.to_string(), "mac 52:54:00:12:34:56");
        for bad in [
            &[][..],
            &["--interface"][..],
            &["--interface", "a/b"][..],
            &["--mac", "zz"][..],
            &["--bogus", "x"][..],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lease_file() {
        let l = Lease {
            addr: [10, 0, 2, 15].into(),
            prefix: 24,
            router: Some([10, 0, 2, 2].into()),
            dns: vec![[10, 0, 2, 3].into()],
            domain: None,
            server: [10, 0, 2, 2].into(),
            lease_secs: 86400,
            t1_secs: 43200,
            t2_secs: 75600,
        };
        assert_eq!(
            lease_text("eth0", &l),
            "interface eth0\naddress 10.0.2.15/24\nrouter 10.0.2.2\ndns 10.0.2.3\nserver 10.0.2.2\nlease 86400\nt1 43200\nt2 75600\n"
        );
    }
}
