//! Opening the netlink sockets PID 1 talks to the kernel through: nf_tables (the firewall and
//! its read-back) and rtnetlink (the network). One place for the socket options, so every
//! conversation gets the same timeouts and acknowledgement handling.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How a netlink socket is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `bind` to the kernel-assigned port id (needed to receive acknowledgements of batches).
    pub bind: bool,
    /// `NETLINK_CAP_ACK`: errors carry only the failing header. `Some(true)`: required,
    /// `Some(false)`: best effort, `None`: not set.
    pub cap_ack: Option<bool>,
    /// `NETLINK_EXT_ACK` (best effort: older kernels lack extended acknowledgements).
    pub ext_ack: bool,
    /// `SO_RCVTIMEO`: a kernel that never answers cannot hang PID 1.
    pub recv_timeout: Duration,
}

/// A failed step of [`open`] and its error; callers wrap it in their own error type.
pub type OpenError = (&'static str, io::Error);

/// Sets an integer socket option.
pub fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` lives across the call and its size is passed; the fd is open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens a netlink socket of `protocol` (`NETLINK_NETFILTER`, `NETLINK_ROUTE`) in the calling
/// thread's network namespace.
pub fn open(protocol: libc::c_int, options: Options) -> Result<OwnedFd, OpenError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if raw < 0 {
        return Err(("socket", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if options.bind {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and its size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(("bind", io::Error::last_os_error()));
        }
    }
    if let Some(required) = options.cap_ack {
        let r = setsockopt_int(&fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        if required {
            r.map_err(|e| ("NETLINK_CAP_ACK", e))?;
        }
    }
    if options.ext_ack {
        // Failure only loses the kernel's extended message.
        let _ = setsockopt_int(&fd, libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
    }
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(options.recv_timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(options.recv_timeout.subsec_micros()),
    };
    // SAFETY: `tv` lives across the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(("SO_RCVTIMEO", io::Error::last_os_error()));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_a_route_socket_with_every_option() {
        let fd = open(
            libc::NETLINK_ROUTE,
            Options {
                bind: true,
                cap_ack: Some(false),
                ext_ack: true,
                recv_timeout: Duration::from_millis(1500),
            },
        )
        .unwrap();
        assert!(fd.as_raw_fd() >= 0);
    }

    #[test]
    fn a_bad_protocol_names_the_socket_step() {
        let (step, _) = open(
            1000,
            Options {
                bind: false,
                cap_ack: None,
                ext_ack: false,
                recv_timeout: Duration::from_secs(1),
            },
        )
        .unwrap_err();
        assert_eq!(step, "socket");
    }
}
