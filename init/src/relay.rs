//! `rampart-relay`: carries the control protocol between a virtio-serial port and PID 1's
//! control socket, so the `rampart` CLI on the build machine can talk to a VM (QEMU's
//! `-device virtserialport,name=org.rampart.control` backed by a unix socket on the host).
//!
//! It runs in the guest as a supervised service (uid 0, no capabilities, no_new_privs) and
//! logs to stderr. Its rule: the bytes of one host session never reach another.
//!
//! How the kernel's virtio console port behaves (drivers/char/virtio_console.c), and what the
//! relay does about it:
//! - While no host client is connected, `read` returns 0 at once, `poll` reports
//!   `POLLIN | POLLHUP` at once, and a write blocks (`EAGAIN` when nonblocking). So the relay
//!   never polls a port without a host: it waits for SIGIO (the port is `O_ASYNC`, owned by
//!   the relay's thread; the kernel signals the owner when the host connects or disconnects
//!   and when data arrives, and at no other time) on a signalfd, with a long safety timeout.
//! - While a host client is connected, the port behaves like a nonblocking stream:
//!   `EAGAIN` when empty.
//! - Host connects and disconnects reach the guest as control messages handled in a
//!   workqueue, data in the interrupt handler: the guest sees them out of order. Under QEMU
//!   (which accepts the next client of its socket as soon as the last one left) a new host's
//!   request is routinely readable before the previous host's disconnect shows, and both
//!   changes often show at once (a SIGIO with nothing to read, and no `POLLHUP` ever seen).
//!   Measured with back-to-back CLI runs under TCG: dropping state or unread bytes at the
//!   first sign of a disconnect lost about one request in four.
//!
//! So host sessions are told apart by the protocol's framing, with host changes as late
//! hints ([`relay_session`]):
//! - every request frame gets a fresh connection to the control socket; the start of the
//!   next request drops the previous connection and every reply byte of it not yet written;
//! - a host change (end-of-file on the port, or a SIGIO with nothing behind it when nothing
//!   was read since the one before) drops a request that began more than
//!   [`Timing::freshness`] before it was seen (a fresher one may be the new host's);
//! - replies are written only while a host is connected; a session's state is kept for
//!   [`Timing::grace`] after its host went away, then dropped;
//! - a connection the server closed is reopened when the host sends more;
//! - a control socket that cannot be reached is answered with an `internal` error frame, so
//!   the CLI says so instead of timing out.
//!
//! What this cannot rule out: reply bytes of an old request written in the instant between
//! a new host connecting and its request being read (the guest cannot see that instant),
//! and a request sent by a host that left less than [`Timing::freshness`] later being
//! answered to the next host. Both need a host to leave right after (or right while) asking.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::control::proto::{self, ErrorCode, Reply, HEADER, MAX_REQUEST};

/// Where the kernel lists virtio-serial ports.
pub const SYS_CLASS_VIRTIO_PORTS: &str = "/sys/class/virtio-ports";
/// Where their device nodes are.
pub const DEV_DIR: &str = "/dev";
/// The most bytes buffered in each direction before the relay stops reading that side.
pub const BUFFER_LIMIT: usize = 64 * 1024;
/// The usage text.
pub const USAGE: &str = "usage: rampart-relay [--port-name NAME] [--socket PATH] \
                         [--sys-class DIR] [--dev DIR]";

/// The longest wait for a host between checks of the port (a safety net: SIGIO wakes it).
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// The longest pause between scans for a port that is not there yet.
const MAX_SCAN_PAUSE: Duration = Duration::from_secs(60);
/// The read size.
const CHUNK: usize = 32 * 1024;

// Linux's F_SETOWN_EX and F_OWNER_TID (include/uapi/asm-generic/fcntl.h); the libc crate
// does not define them for glibc targets.
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex`.
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// Why the relay stopped (it is restarted by its supervisor).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The command line is wrong.
    #[error("{reason}; {USAGE}")]
    Usage {
        /// What is wrong.
        reason: String,
    },
    /// Listing the virtio-serial ports failed.
    #[error("read {path}: {source}")]
    ListPorts {
        /// The sysfs path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Opening the port failed.
    #[error("open {path}: {source}")]
    OpenPort {
        /// The device path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Asking for SIGIO on the port failed.
    #[error("request SIGIO on {path}: {source}")]
    Async {
        /// The device path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Blocking SIGIO or creating the signalfd failed.
    #[error("set up the SIGIO signalfd: {source}")]
    Signals {
        /// The error.
        source: nix::Error,
    },
    /// Waiting for events failed.
    #[error("poll: {source}")]
    Poll {
        /// The error.
        source: nix::Error,
    },
    /// Reading from the port failed (other than the host going away).
    #[error("read from the port: {source}")]
    ReadPort {
        /// The I/O error.
        source: io::Error,
    },
    /// Writing to the port failed (other than the host going away).
    #[error("write to the port: {source}")]
    WritePort {
        /// The I/O error.
        source: io::Error,
    },
}

/// The command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The virtio-serial port's name (`--port-name`).
    pub port_name: String,
    /// The control socket (`--socket`).
    pub socket: PathBuf,
    /// `/sys/class/virtio-ports` (`--sys-class`).
    pub sys_class: PathBuf,
    /// `/dev` (`--dev`).
    pub dev: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port_name: rampart_config::operate::HOST_CHANNEL_NAME.to_owned(),
            socket: PathBuf::from(rampart_config::operate::CONTROL_SOCKET),
            sys_class: PathBuf::from(SYS_CLASS_VIRTIO_PORTS),
            dev: PathBuf::from(DEV_DIR),
        }
    }
}

/// Parses the arguments after argv[0].
pub fn parse_args(args: &[String]) -> Result<Options, RelayError> {
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next().cloned().ok_or_else(|| RelayError::Usage {
                reason: format!("{a} needs a value"),
            })
        };
        match a.as_str() {
            "--port-name" => opts.port_name = value()?,
            "--socket" => opts.socket = PathBuf::from(value()?),
            "--sys-class" => opts.sys_class = PathBuf::from(value()?),
            "--dev" => opts.dev = PathBuf::from(value()?),
            other => {
                return Err(RelayError::Usage {
                    reason: format!("unknown argument {other}"),
                })
            }
        }
    }
    if opts.port_name.is_empty() || opts.port_name.contains(['/', '\n']) {
        return Err(RelayError::Usage {
            reason: format!("bad port name {:?}", opts.port_name),
        });
    }
    Ok(opts)
}

/// The device node of the virtio-serial port named `name`: the `vport*` entry of
/// `sys_class` whose `name` file holds it, under `dev`. `None` when there is none (yet).
pub fn find_port(sys_class: &Path, dev: &Path, name: &str) -> Result<Option<PathBuf>, RelayError> {
    let list_err = |source| RelayError::ListPorts {
        path: sys_class.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(sys_class) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(list_err(e)),
    };
    let mut ports: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        if let Some(n) = entry.file_name().to_str() {
            if n.starts_with("vport") {
                ports.push(n.to_owned());
            }
        }
    }
    ports.sort();
    for port in ports {
        let name_file = sys_class.join(&port).join("name");
        match std::fs::read_to_string(&name_file) {
            // Ports without a name have no `name` file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RelayError::ListPorts {
                    path: name_file,
                    source,
                })
            }
            Ok(text) if text.trim_end_matches('\n') == name => return Ok(Some(dev.join(port))),
            Ok(_) => {}
        }
    }
    Ok(None)
}

/// Tracks request frame boundaries in the bytes from the host (a 4-byte big-endian length,
/// then that many bytes), to tell where a second request begins.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    /// Reading a length prefix; `got` bytes of it so far.
    Header { got: usize, len: [u8; HEADER] },
    /// Inside a body; `left` bytes to go.
    Body { left: usize },
    /// The stream is not framed as the protocol says (an empty or oversized frame): no more
    /// boundaries can be found until the connection is reset.
    Opaque,
}

impl Default for Framing {
    fn default() -> Self {
        Framing::Header {
            got: 0,
            len: [0; HEADER],
        }
    }
}

impl Framing {
    /// Consumes the longest prefix of `data` that lies within one frame; returns its length
    /// (at least 1 when `data` is not empty) and whether it starts a frame.
    fn take(&mut self, data: &[u8]) -> (usize, bool) {
        let begins = !data.is_empty() && matches!(self, Framing::Header { got: 0, .. });
        let mut used = 0usize;
        loop {
            match self {
                Framing::Header { got, len } => {
                    while *got < HEADER {
                        let (Some(&b), Some(slot)) = (data.get(used), len.get_mut(*got)) else {
                            return (used, begins);
                        };
                        *slot = b;
                        *got += 1;
                        used += 1;
                    }
                    let n = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
                    *self = if n == 0 || n > MAX_REQUEST {
                        Framing::Opaque
                    } else {
                        Framing::Body { left: n }
                    };
                }
                Framing::Body { left } => {
                    let k = (*left).min(data.len().saturating_sub(used));
                    used += k;
                    *left -= k;
                    if *left == 0 {
                        *self = Framing::default();
                    }
                    return (used, begins);
                }
                Framing::Opaque => return (data.len(), begins),
            }
        }
    }
}

/// The connection to the control socket of the current request.
enum Upstream {
    /// None yet, or the server closed the last one.
    None,
    /// Open.
    Open(UnixStream),
    /// Connecting failed; the rest of this request is discarded.
    Failed,
}

/// The relay's clocks (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the state of a session is kept while the host is away (the new host's
    /// request may already be in flight).
    pub grace: Duration,
    /// How late the guest may see a host change: a request that began less than this long
    /// before a change was seen may be the new host's, and is kept.
    pub freshness: Duration,
}

/// The timing of the real relay.
pub const TIMING: Timing = Timing {
    grace: Duration::from_secs(2),
    freshness: Duration::from_secs(1),
};

/// Counts of one session (from a host connecting to the host being away for the grace
/// time), for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes read from the host.
    pub from_host: u64,
    /// Bytes written to the host.
    pub to_host: u64,
    /// Request frames that began.
    pub requests: u64,
    /// Connections made to the control socket.
    pub connections: u32,
    /// Host changes seen (disconnects, reconnects).
    pub host_changes: u32,
    /// Requests dropped with their connection at a host change.
    pub dropped: u32,
}

/// The state of one session.
struct Session<'c> {
    connect: &'c mut dyn FnMut() -> io::Result<UnixStream>,
    upstream: Upstream,
    framing: Framing,
    /// When the current request began.
    request_at: Option<Instant>,
    to_server: Vec<u8>,
    to_host: Vec<u8>,
    /// Whether the host is connected, as last seen.
    connected: bool,
    /// Since when it has been away.
    away_since: Option<Instant>,
    stats: SessionStats,
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn host_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

impl Session<'_> {
    /// Handles bytes read from the host.
    fn on_host_bytes(&mut self, data: &[u8], now: Instant) {
        self.stats.from_host += data.len() as u64;
        let mut rest = data;
        while !rest.is_empty() {
            let (n, begins) = self.framing.take(rest);
            let (piece, tail) = (
                rest.get(..n).unwrap_or_default(),
                rest.get(n..).unwrap_or_default(),
            );
            rest = tail;
            if n == 0 {
                break;
            }
            if begins {
                if self.stats.requests > 0 {
                    // A new request: never on the connection (or with the replies) of another.
                    self.drop_request();
                }
                self.stats.requests += 1;
                self.request_at = Some(now);
            }
            if let Upstream::None = self.upstream {
                self.open_upstream();
            }
            if let Upstream::Open(_) = self.upstream {
                self.to_server.extend_from_slice(piece);
            }
        }
    }

    /// Forgets the current request: its connection and every byte bound to or from it.
    fn drop_request(&mut self) {
        self.upstream = Upstream::None;
        self.to_server.clear();
        self.to_host.clear();
    }

    fn open_upstream(&mut self) {
        match (self.connect)() {
            Ok(stream) => match stream.set_nonblocking(true) {
                Ok(()) => {
                    self.stats.connections += 1;
                    self.upstream = Upstream::Open(stream);
                }
                Err(e) => self.refuse(&e),
            },
            Err(e) => self.refuse(&e),
        }
    }

    /// Tells the host that the control socket could not be reached.
    fn refuse(&mut self, e: &io::Error) {
        tracing::warn!("cannot connect to the control socket: {e}");
        self.upstream = Upstream::Failed;
        let reply = Reply::Error {
            code: ErrorCode::Internal,
            message: format!("rampart-relay in the guest cannot reach the control socket: {e}"),
        };
        if let Ok(frame) = proto::encode_reply(&reply) {
            self.to_host.extend_from_slice(&frame);
        }
    }

    /// The server closed its end (or failed): drop the connection and what was bound for it.
    fn upstream_closed(&mut self) {
        self.upstream = Upstream::None;
        self.to_server.clear();
        if self.framing == Framing::Opaque {
            self.framing = Framing::default();
        }
    }

    /// A host change was seen at `now`: a request older than `freshness` was the previous
    /// host's, and goes with everything bound to or from it.
    fn host_changed(&mut self, now: Instant, freshness: Duration) {
        self.stats.host_changes += 1;
        let stale = self
            .request_at
            .is_none_or(|at| now.saturating_duration_since(at) > freshness);
        if stale {
            if !matches!(self.upstream, Upstream::None) || !self.to_host.is_empty() {
                self.stats.dropped += 1;
            }
            self.drop_request();
            self.request_at = None;
            self.framing = Framing::default();
        }
    }

    fn went_away(&mut self, now: Instant, freshness: Duration) {
        if self.connected {
            self.connected = false;
            self.away_since = Some(now);
            self.host_changed(now, freshness);
        }
    }
}

/// What one read of the port gave.
enum PortRead {
    /// Bytes (already handled).
    Data,
    /// Nothing to read, the host is connected.
    Empty,
    /// Nothing to read, no host is connected (end-of-file).
    Away,
}

fn read_port<P>(
    s: &mut Session<'_>,
    port: &P,
    buf: &mut [u8],
    now: Instant,
) -> Result<PortRead, RelayError>
where
    for<'a> &'a P: Read,
{
    let mut reader: &P = port;
    match reader.read(buf) {
        Ok(0) => Ok(PortRead::Away),
        Ok(n) => {
            s.on_host_bytes(buf.get(..n).unwrap_or_default(), now);
            Ok(PortRead::Data)
        }
        Err(e) if would_block(&e) => Ok(PortRead::Empty),
        Err(e) if host_gone(&e) => Ok(PortRead::Away),
        Err(source) => Err(RelayError::ReadPort { source }),
    }
}

/// Relays over `port` from the moment a host is connected until no host has been connected
/// for `timing.grace`, opening connections to the control socket with `connect`.
///
/// Requests are told apart by their framing: each gets a fresh connection, and the start of
/// the next one drops the previous one with its unsent replies. Host changes (the port at
/// end-of-file, or, with `sigio`, a SIGIO with nothing behind it) drop a request older than
/// `timing.freshness` the same way; replies are only written while a host is connected.
pub fn relay_session<P>(
    port: &P,
    connect: &mut dyn FnMut() -> io::Result<UnixStream>,
    sigio: Option<&SignalFd>,
    timing: Timing,
) -> Result<SessionStats, RelayError>
where
    P: AsFd,
    for<'a> &'a P: Read + Write,
{
    let mut s = Session {
        connect,
        upstream: Upstream::None,
        framing: Framing::default(),
        request_at: None,
        to_server: Vec::new(),
        to_host: Vec::new(),
        connected: true,
        away_since: None,
        stats: SessionStats::default(),
    };
    let mut buf = vec![0u8; CHUNK];
    // Whether bytes were read from the port since SIGIOs were last drained.
    let mut read_since_drain = false;
    loop {
        let timeout = match s.away_since {
            Some(since) => {
                let left = timing.grace.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Ok(s.stats);
                }
                // Rounded up, so the wait does not end just short of the grace.
                PollTimeout::try_from(left.as_millis().saturating_add(1))
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let room = s.to_server.len() < BUFFER_LIMIT;
        let mut port_flags = PollFlags::empty();
        if room {
            port_flags |= PollFlags::POLLIN;
        }
        if !s.to_host.is_empty() {
            port_flags |= PollFlags::POLLOUT;
        }
        let mut up_flags = PollFlags::empty();
        if s.to_host.len() < BUFFER_LIMIT {
            up_flags |= PollFlags::POLLIN;
        }
        if !s.to_server.is_empty() {
            up_flags |= PollFlags::POLLOUT;
        }
        let (port_ev, up_ev) = {
            // A port without a host is always ready (end-of-file): it is not polled then;
            // SIGIO tells when that changes.
            let mut fds = Vec::with_capacity(3);
            if s.connected {
                fds.push(PollFd::new(port.as_fd(), port_flags));
            }
            if let Some(sfd) = sigio {
                fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
            }
            let up_open = if let Upstream::Open(up) = &s.upstream {
                fds.push(PollFd::new(up.as_fd(), up_flags));
                true
            } else {
                false
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(source) => return Err(RelayError::Poll { source }),
            }
            let ev = |i: usize| {
                fds.get(i)
                    .and_then(PollFd::revents)
                    .unwrap_or(PollFlags::empty())
            };
            let port_ev = if s.connected {
                ev(0)
            } else {
                PollFlags::empty()
            };
            let up_ev = if up_open {
                ev(fds.len().saturating_sub(1))
            } else {
                PollFlags::empty()
            };
            (port_ev, up_ev)
        };
        let now = Instant::now();

        // The host side first, before anything more is written to the port. Data raises its
        // SIGIO before it can be read, so a SIGIO drained now belongs to bytes read since the
        // last drain, to bytes readable now, or to a host change.
        let signalled = sigio.is_some_and(|sfd| drain_signals(sfd) > 0);
        let read_before = std::mem::replace(&mut read_since_drain, false);
        if (!port_ev.is_empty() || signalled || !s.connected) && room {
            match read_port(&mut s, port, &mut buf, now)? {
                PortRead::Data => {
                    read_since_drain = true;
                    if !s.connected {
                        // A new host is sending before the guest saw it connect.
                        s.away_since = Some(now);
                    }
                }
                PortRead::Empty if !s.connected => {
                    s.connected = true;
                    s.away_since = None;
                    s.host_changed(now, timing.freshness);
                }
                PortRead::Empty if signalled && !read_before => {
                    // Gone and back before the port showed it.
                    s.host_changed(now, timing.freshness);
                }
                PortRead::Empty => {}
                PortRead::Away => s.went_away(now, timing.freshness),
            }
        } else if port_ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) && !room {
            s.went_away(now, timing.freshness);
        }
        if port_ev.contains(PollFlags::POLLNVAL) {
            return Err(RelayError::ReadPort {
                source: io::Error::from_raw_os_error(libc::EBADF),
            });
        }

        // Server to host.
        if let Upstream::Open(up) = &s.upstream {
            if up_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                let mut reader: &UnixStream = up;
                match reader.read(&mut buf) {
                    Ok(0) => s.upstream_closed(),
                    Ok(n) => s
                        .to_host
                        .extend_from_slice(buf.get(..n).unwrap_or_default()),
                    Err(e) if would_block(&e) => {}
                    Err(e) => {
                        tracing::warn!("read from the control socket: {e}");
                        s.upstream_closed();
                    }
                }
            }
        }
        if let Upstream::Open(up) = &s.upstream {
            if up_ev.contains(PollFlags::POLLOUT) && !s.to_server.is_empty() {
                let mut writer: &UnixStream = up;
                match writer.write(&s.to_server) {
                    Ok(n) => {
                        s.to_server.drain(..n.min(s.to_server.len()));
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => {
                        if !host_gone(&e) {
                            tracing::warn!("write to the control socket: {e}");
                        }
                        s.upstream_closed();
                    }
                }
            }
        }

        // Replies to the host, only while one is connected.
        if s.connected && !s.to_host.is_empty() {
            let mut writer: &P = port;
            match writer.write(&s.to_host) {
                Ok(n) => {
                    s.stats.to_host += n as u64;
                    s.to_host.drain(..n.min(s.to_host.len()));
                }
                Err(e) if would_block(&e) => {}
                Err(e) if host_gone(&e) => s.went_away(now, timing.freshness),
                Err(source) => return Err(RelayError::WritePort { source }),
            }
        }
    }
}

/// Whether a host is connected to the port (it is not when `poll` reports `POLLHUP`).
pub fn host_connected(port: &impl AsFd) -> Result<bool, RelayError> {
    let mut fds = [PollFd::new(port.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(source) => return Err(RelayError::Poll { source }),
        }
    }
    let ev = fds
        .first()
        .and_then(PollFd::revents)
        .unwrap_or(PollFlags::empty());
    Ok(!ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL))
}

/// Makes the kernel send SIGIO to this thread when the port's host connects, disconnects or
/// sends data (`F_SETOWN_EX` to this thread, then `O_ASYNC`).
pub fn request_sigio(port: &impl AsFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let owner = FOwnerEx {
        kind: F_OWNER_TID,
        pid: nix::unistd::gettid().as_raw(),
    };
    // SAFETY: F_SETOWN_EX reads one `struct f_owner_ex` through the pointer, which points to
    // a live, properly laid out value for the duration of the call.
    let r = unsafe {
        libc::fcntl(
            port.as_fd().as_raw_fd(),
            F_SETOWN_EX,
            std::ptr::from_ref(&owner),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = fcntl(port.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_ASYNC;
    fcntl(port.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Blocks SIGIO in this thread and returns a nonblocking signalfd that receives it.
pub fn sigio_fd() -> Result<SignalFd, RelayError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGIO);
    mask.thread_block()
        .map_err(|source| RelayError::Signals { source })?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|source| RelayError::Signals { source })
}

/// Drops the pending SIGIOs; returns how many there were.
fn drain_signals(sigfd: &SignalFd) -> usize {
    let mut n = 0usize;
    while let Ok(Some(_)) = sigfd.read_signal() {
        n += 1;
    }
    n
}

/// Waits until a SIGIO arrives or `timeout` passes.
pub fn wait_sigio(sigfd: &SignalFd, timeout: Duration) -> Result<(), RelayError> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(source) => Err(RelayError::Poll { source }),
    }
}

/// Finds the port, rescanning with growing pauses until it appears.
fn wait_for_port(opts: &Options) -> Result<PathBuf, RelayError> {
    let mut pause = Duration::from_secs(1);
    let mut told = false;
    loop {
        if let Some(p) = find_port(&opts.sys_class, &opts.dev, &opts.port_name)? {
            return Ok(p);
        }
        if !told {
            tracing::info!(
                "no virtio-serial port named {} under {} yet; waiting",
                opts.port_name,
                opts.sys_class.display()
            );
            told = true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_SCAN_PAUSE);
    }
}

/// The relay: finds and opens the port, then serves one host session after another.
/// Returns only on an error.
pub fn run(opts: &Options) -> Result<(), RelayError> {
    let sigfd = sigio_fd()?;
    let path = wait_for_port(opts)?;
    let port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&path)
        .map_err(|source| RelayError::OpenPort {
            path: path.clone(),
            source,
        })?;
    request_sigio(&port).map_err(|source| RelayError::Async {
        path: path.clone(),
        source,
    })?;
    tracing::info!(
        "relaying {} ({}) to {}",
        path.display(),
        opts.port_name,
        opts.socket.display()
    );
    let socket = opts.socket.clone();
    let mut connect = move || UnixStream::connect(&socket);
    loop {
        // Pending SIGIOs first, then the state: a connect after the check still wakes the wait.
        drain_signals(&sigfd);
        if !host_connected(&port)? {
            wait_sigio(&sigfd, IDLE_RECHECK)?;
            continue;
        }
        let stats = relay_session(&port, &mut connect, Some(&sigfd), TIMING)?;
        if stats.requests > 0 {
            tracing::info!(
                "host session ended: {} requests, {} bytes from the host, {} to it, {} control \
                 connections, {} host changes, {} requests dropped at a change",
                stats.requests,
                stats.from_host,
                stats.to_host,
                stats.connections,
                stats.host_changes,
                stats.dropped
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{
        decode_reply, decode_request, encode_reply, encode_request, FrameReader, Request, MAX_REPLY,
    };
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::thread;

    /// A short grace, a long freshness.
    const QUICK: Timing = Timing {
        grace: Duration::from_millis(20),
        freshness: Duration::from_secs(10),
    };

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn args() {
        assert_eq!(parse_args(&[]).unwrap(), Options::default());
        assert_eq!(
            Options::default().port_name,
            "org.rampart.control".to_owned()
        );
        let o = parse_args(&s(&[
            "--port-name",
            "x.y",
            "--socket",
            "/tmp/c.sock",
            "--sys-class",
            "/tmp/sys",
            "--dev",
            "/tmp/dev",
        ]))
        .unwrap();
        assert_eq!(
            o,
            Options {
                port_name: "x.y".into(),
                socket: "/tmp/c.sock".into(),
                sys_class: "/tmp/sys".into(),
                dev: "/tmp/dev".into(),
            }
        );
        for bad in [
            &["--port-name"][..],
            &["--bogus"],
            &["--port-name", ""],
            &["--port-name", "a/b"],
        ] {
            let e = parse_args(&s(bad)).unwrap_err();
            assert!(matches!(e, RelayError::Usage { .. }), "{bad:?}");
            assert!(e.to_string().contains("usage: rampart-relay"), "{e}");
        }
    }

    #[test]
    fn finds_the_port_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("virtio-ports");
        let dev = dir.path().join("dev");
        assert_eq!(find_port(&sys, &dev, "org.rampart.control").unwrap(), None);
        for (port, name) in [
            ("vport0p0", None),
            ("vport0p1", Some("org.qemu.guest_agent.0\n")),
            ("vport1p1", Some("org.rampart.control\n")),
            ("vport1p2", Some("org.rampart.control.extra\n")),
        ] {
            std::fs::create_dir_all(sys.join(port)).unwrap();
            if let Some(n) = name {
                std::fs::write(sys.join(port).join("name"), n).unwrap();
            }
        }
        std::fs::create_dir_all(sys.join("unrelated")).unwrap();
        assert_eq!(
            find_port(&sys, &dev, "org.rampart.control").unwrap(),
            Some(dev.join("vport1p1"))
        );
        assert_eq!(
            find_port(&sys, &dev, "org.qemu.guest_agent.0").unwrap(),
            Some(dev.join("vport0p1"))
        );
        assert_eq!(find_port(&sys, &dev, "org.rampart").unwrap(), None);
        // A file where the directory should be is an error, not "absent".
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(find_port(&file, &dev, "x").is_err());
    }

    fn frame(json: &str) -> Vec<u8> {
        let mut v = u32::try_from(json.len()).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v
    }

    #[test]
    fn framing_finds_request_starts() {
        let a = frame(r#"{"version":1,"request":{"op":"status"}}"#);
        let b = frame(r#"{"version":1,"request":{"op":"audit"}}"#);
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        // Whatever the chunking, starts are found at 0 and at a.len().
        for chunk in [1, 2, 3, 5, 7, a.len(), stream.len()] {
            let mut f = Framing::default();
            let mut starts = Vec::new();
            let mut offset = 0;
            for c in stream.chunks(chunk) {
                let mut rest = c;
                while !rest.is_empty() {
                    let (n, begins) = f.take(rest);
                    assert!(n > 0);
                    if begins {
                        starts.push(offset);
                    }
                    offset += n;
                    rest = &rest[n..];
                }
            }
            assert_eq!(starts, vec![0, a.len()], "chunk {chunk}");
            assert_eq!(f, Framing::default());
        }
        // An oversized or empty announcement makes the rest opaque.
        for header in [[0u8, 0, 0, 0], (1u32 << 30).to_be_bytes()] {
            let mut f = Framing::default();
            let mut data = header.to_vec();
            data.extend_from_slice(&b);
            assert_eq!(f.take(&data), (data.len(), true));
            assert_eq!(f, Framing::Opaque);
            assert_eq!(f.take(&b), (b.len(), false));
        }
        assert_eq!(Framing::default().take(&[]), (0, false));
    }

    /// A fake control server: serves connections on a temp socket, one script per
    /// connection, reporting each request and what happened to the connection.
    struct Fake {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn read_request(conn: &mut UnixStream) -> Option<Request> {
        let mut r = FrameReader::new(MAX_REQUEST);
        let mut buf = [0u8; 1024];
        loop {
            if let Some(f) = r.next_frame().unwrap() {
                return Some(decode_request(&f).unwrap());
            }
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                return None;
            }
            r.push(&buf[..n]);
        }
    }

    fn read_reply(conn: &mut UnixStream, r: &mut FrameReader) -> Option<Reply> {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(f) = r.next_frame().unwrap() {
                return Some(decode_reply(&f).unwrap());
            }
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                return None;
            }
            r.push(&buf[..n]);
        }
    }

    fn done(m: &str) -> Reply {
        Reply::Done { message: m.into() }
    }

    fn fake() -> (Fake, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let l = UnixListener::bind(&path).unwrap();
        (Fake { _dir: dir, path }, l)
    }

    /// Runs a session on one end of a socketpair standing in for the port.
    fn session_thread(
        path: PathBuf,
    ) -> (
        UnixStream,
        thread::JoinHandle<Result<SessionStats, RelayError>>,
    ) {
        let (port, host) = UnixStream::pair().unwrap();
        port.set_nonblocking(true).unwrap();
        let h = thread::spawn(move || {
            let mut connect = || UnixStream::connect(&path);
            relay_session(&port, &mut connect, None, QUICK)
        });
        (host, h)
    }

    #[test]
    fn one_request_then_another_in_the_same_session() {
        let (fake, listener) = fake();
        let server = thread::spawn(move || {
            let mut seen = Vec::new();
            for reply in ["first", "second"] {
                let (mut c, _) = listener.accept().unwrap();
                seen.push(read_request(&mut c).unwrap());
                c.write_all(&encode_reply(&done(reply)).unwrap()).unwrap();
                // The server closes after its reply.
            }
            seen
        });
        let (mut host, session) = session_thread(fake.path.clone());
        let mut r = FrameReader::new(MAX_REPLY);
        host.write_all(&encode_request(&Request::Status {}).unwrap())
            .unwrap();
        assert_eq!(read_reply(&mut host, &mut r), Some(done("first")));
        // After the server closed, more bytes from the host get a fresh connection; the
        // request arrives in two pieces.
        let req = encode_request(&Request::Audit {}).unwrap();
        host.write_all(&req[..3]).unwrap();
        thread::sleep(Duration::from_millis(50));
        host.write_all(&req[3..]).unwrap();
        assert_eq!(read_reply(&mut host, &mut r), Some(done("second")));
        drop(host);
        let stats = session.join().unwrap().unwrap();
        assert_eq!(stats.connections, 2);
        assert!(stats.to_host > 0 && stats.from_host > 0);
        assert_eq!(
            server.join().unwrap(),
            vec![Request::Status {}, Request::Audit {}]
        );
    }

    #[test]
    fn nothing_crosses_between_host_sessions() {
        let (fake, listener) = fake();
        let (tx, rx) = mpsc::channel::<&str>();
        let server = thread::spawn(move || {
            // Session 1 follows logs: the server keeps streaming until its client goes.
            let (mut c1, _) = listener.accept().unwrap();
            let r1 = read_request(&mut c1).unwrap();
            c1.write_all(&encode_reply(&done("one-a")).unwrap())
                .unwrap();
            let mut c1_closed = false;
            for _ in 0..500 {
                if c1
                    .write_all(&encode_reply(&done("one-more")).unwrap())
                    .is_err()
                {
                    c1_closed = true;
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            tx.send("c1 done").unwrap();
            // Session 2 gets only its own answer.
            let (mut c2, _) = listener.accept().unwrap();
            let r2 = read_request(&mut c2).unwrap();
            c2.write_all(&encode_reply(&done("two")).unwrap()).unwrap();
            (r1, r2, c1_closed)
        });
        let (mut host1, s1) = session_thread(fake.path.clone());
        host1
            .write_all(
                &encode_request(&Request::Logs {
                    service: None,
                    since_ms: None,
                    tail: None,
                    follow: true,
                })
                .unwrap(),
            )
            .unwrap();
        let mut r = FrameReader::new(MAX_REPLY);
        assert_eq!(read_reply(&mut host1, &mut r), Some(done("one-a")));
        // The host goes away mid-stream: the relay drops the server connection.
        drop(host1);
        s1.join().unwrap().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("c1 done"));

        let (mut host2, s2) = session_thread(fake.path.clone());
        host2
            .write_all(&encode_request(&Request::Status {}).unwrap())
            .unwrap();
        let mut r = FrameReader::new(MAX_REPLY);
        assert_eq!(read_reply(&mut host2, &mut r), Some(done("two")));
        drop(host2);
        s2.join().unwrap().unwrap();
        let (r1, r2, c1_closed) = server.join().unwrap();
        assert!(matches!(r1, Request::Logs { follow: true, .. }));
        assert_eq!(r2, Request::Status {});
        assert!(c1_closed, "the relay kept the first session's connection");
    }

    #[test]
    fn a_second_request_never_shares_a_connection() {
        // The host (a fast reconnect the relay did not see, or a pipelining client) sends a
        // second request while the first one's stream is still open.
        let (fake, listener) = fake();
        let server = thread::spawn(move || {
            let (mut a, _) = listener.accept().unwrap();
            let ra = read_request(&mut a).unwrap();
            a.write_all(&encode_reply(&done("a1")).unwrap()).unwrap();
            let (mut b, _) = listener.accept().unwrap();
            let rb = read_request(&mut b).unwrap();
            // The first connection is gone by now: its late reply goes nowhere.
            let mut probe = [0u8; 1];
            let a_eof = matches!(a.read(&mut probe), Ok(0) | Err(_));
            let _ = a.write_all(&encode_reply(&done("a2")).unwrap());
            b.write_all(&encode_reply(&done("b1")).unwrap()).unwrap();
            (ra, rb, a_eof)
        });
        let (mut host, session) = session_thread(fake.path.clone());
        let mut r = FrameReader::new(MAX_REPLY);
        host.write_all(
            &encode_request(&Request::Events {
                since_ms: None,
                follow: true,
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(read_reply(&mut host, &mut r), Some(done("a1")));
        host.write_all(&encode_request(&Request::Status {}).unwrap())
            .unwrap();
        assert_eq!(read_reply(&mut host, &mut r), Some(done("b1")));
        drop(host);
        let stats = session.join().unwrap().unwrap();
        assert_eq!(stats.connections, 2);
        let (ra, rb, a_eof) = server.join().unwrap();
        assert!(matches!(ra, Request::Events { follow: true, .. }));
        assert_eq!(rb, Request::Status {});
        assert!(a_eof);
    }

    #[test]
    fn an_unreachable_control_socket_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (mut host, session) = session_thread(dir.path().join("absent.sock"));
        let mut r = FrameReader::new(MAX_REPLY);
        host.write_all(&encode_request(&Request::Status {}).unwrap())
            .unwrap();
        let reply = read_reply(&mut host, &mut r).unwrap();
        let Reply::Error { code, message } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(code, ErrorCode::Internal);
        assert!(
            message.contains("cannot reach the control socket"),
            "{message}"
        );
        // A second request tries again (and is answered again).
        host.write_all(&encode_request(&Request::Status {}).unwrap())
            .unwrap();
        assert!(matches!(
            read_reply(&mut host, &mut r),
            Some(Reply::Error { .. })
        ));
        drop(host);
        assert_eq!(session.join().unwrap().unwrap().connections, 0);
    }

    #[test]
    fn an_idle_host_and_a_departed_one() {
        // An idle but connected host: no spinning (the session thread just blocks) and
        // nothing is read or connected until the host speaks.
        let (fake, _listener) = fake();
        let (host, session) = session_thread(fake.path.clone());
        thread::sleep(Duration::from_millis(100));
        assert!(!session.is_finished());
        drop(host);
        let stats = session.join().unwrap().unwrap();
        assert_eq!(
            stats,
            SessionStats {
                host_changes: 1,
                ..SessionStats::default()
            }
        );

        let (port, host) = UnixStream::pair().unwrap();
        port.set_nonblocking(true).unwrap();
        assert!(host_connected(&port).unwrap());
        drop(host);
        assert!(!host_connected(&port).unwrap());
    }

    #[test]
    fn sigio_wakes_the_waiting_thread() {
        // SIGIO is directed at this test's thread only (F_OWNER_TID), which blocks it; the
        // other test threads never see it.
        let t = thread::spawn(|| {
            let sigfd = sigio_fd().unwrap();
            let (port, mut host) = UnixStream::pair().unwrap();
            port.set_nonblocking(true).unwrap();
            request_sigio(&port).unwrap();
            drain_signals(&sigfd);
            // Nothing pending: the wait times out.
            let started = std::time::Instant::now();
            wait_sigio(&sigfd, Duration::from_millis(100)).unwrap();
            assert!(started.elapsed() >= Duration::from_millis(90));
            assert!(sigfd.read_signal().unwrap().is_none());
            // Data from the "host" raises SIGIO, which ends the wait early.
            host.write_all(b"x").unwrap();
            let started = std::time::Instant::now();
            wait_sigio(&sigfd, Duration::from_secs(10)).unwrap();
            assert!(started.elapsed() < Duration::from_secs(5));
            let info = sigfd.read_signal().unwrap().unwrap();
            assert_eq!(info.ssi_signo, Signal::SIGIO as u32);
            drop(port);
        });
        t.join().unwrap();
    }

    /// Runs a session whose port raises SIGIO (directed at, and blocked in, the session's
    /// thread only); returns the host end and the thread.
    fn sigio_session(
        path: PathBuf,
        timing: Timing,
    ) -> (
        UnixStream,
        thread::JoinHandle<Result<SessionStats, RelayError>>,
    ) {
        let (tx, rx) = mpsc::channel::<UnixStream>();
        let session = thread::spawn(move || {
            let sigfd = sigio_fd().unwrap();
            let (port, host) = UnixStream::pair().unwrap();
            port.set_nonblocking(true).unwrap();
            request_sigio(&port).unwrap();
            tx.send(host).unwrap();
            let mut connect = || UnixStream::connect(&path);
            relay_session(&port, &mut connect, Some(&sigfd), timing)
        });
        (rx.recv().unwrap(), session)
    }

    /// A host change the port never showed: a SIGIO with nothing to read.
    fn sigio_without_data(session: &thread::JoinHandle<Result<SessionStats, RelayError>>) {
        use std::os::unix::thread::JoinHandleExt;
        // SAFETY: the thread is alive (not joined, blocked in poll) and SIGIO is blocked in
        // it, so the signal only becomes pending for its signalfd.
        let rc = unsafe { libc::pthread_kill(session.as_pthread_t(), libc::SIGIO) };
        assert_eq!(rc, 0);
    }

    fn follow_request() -> Vec<u8> {
        encode_request(&Request::Events {
            since_ms: None,
            follow: true,
        })
        .unwrap()
    }

    #[test]
    fn a_host_change_drops_an_old_request() {
        let (fake, listener) = fake();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let first = read_request(&mut c).unwrap();
            c.write_all(&encode_reply(&done("x")).unwrap()).unwrap();
            // A stream: the connection stays open until the relay drops it.
            let mut probe = [0u8; 1];
            let closed = matches!(c.read(&mut probe), Ok(0) | Err(_));
            let (mut c2, _) = listener.accept().unwrap();
            let second = read_request(&mut c2).unwrap();
            c2.write_all(&encode_reply(&done("y")).unwrap()).unwrap();
            (first, closed, second)
        });
        let timing = Timing {
            grace: Duration::from_millis(20),
            freshness: Duration::from_millis(50),
        };
        let (mut host, session) = sigio_session(fake.path.clone(), timing);
        let mut r = FrameReader::new(MAX_REPLY);
        // Data raises SIGIO too, in pieces: none of it is taken for a host change.
        for piece in follow_request().chunks(7) {
            host.write_all(piece).unwrap();
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(read_reply(&mut host, &mut r), Some(done("x")));
        thread::sleep(Duration::from_millis(100));
        assert!(!session.is_finished());
        sigio_without_data(&session);
        // The new host's request gets a fresh connection (and nothing of the old stream).
        thread::sleep(Duration::from_millis(50));
        host.write_all(&encode_request(&Request::Status {}).unwrap())
            .unwrap();
        assert_eq!(read_reply(&mut host, &mut r), Some(done("y")));
        drop(host);
        let stats = session.join().unwrap().unwrap();
        assert_eq!(stats.connections, 2);
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.dropped, 1);
        assert_eq!(stats.host_changes, 2, "{stats:?}");
        let (first, closed, second) = server.join().unwrap();
        assert!(matches!(first, Request::Events { follow: true, .. }));
        assert!(closed, "the stream of the previous host was kept");
        assert_eq!(second, Request::Status {});
    }

    #[test]
    fn a_host_change_keeps_a_fresh_request() {
        // The guest sees host changes late (a workqueue) but data at once (an interrupt): a
        // request read just before a change may be the new host's, and is answered.
        let (fake, listener) = fake();
        let (tx, rx) = mpsc::channel::<()>();
        let server = thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let req = read_request(&mut c).unwrap();
            rx.recv().unwrap();
            c.write_all(&encode_reply(&done("late")).unwrap()).unwrap();
            req
        });
        let timing = Timing {
            grace: Duration::from_millis(20),
            freshness: Duration::from_secs(10),
        };
        let (mut host, session) = sigio_session(fake.path.clone(), timing);
        host.write_all(&encode_request(&Request::Audit {}).unwrap())
            .unwrap();
        thread::sleep(Duration::from_millis(100));
        sigio_without_data(&session);
        thread::sleep(Duration::from_millis(50));
        tx.send(()).unwrap();
        let mut r = FrameReader::new(MAX_REPLY);
        assert_eq!(read_reply(&mut host, &mut r), Some(done("late")));
        drop(host);
        let stats = session.join().unwrap().unwrap();
        assert_eq!(stats.dropped, 0);
        assert_eq!(stats.host_changes, 2, "{stats:?}");
        assert_eq!(server.join().unwrap(), Request::Audit {});
    }
}
