//! The control socket server inside PID 1.
//!
//! [`Server::bind`] creates the listening socket (its directory mode 0700 when it creates it,
//! the socket mode 0600) and the server's own epoll instance holding the listener, every
//! connection and ONE timerfd armed for the earliest connection deadline. PID 1's event loop
//! watches that epoll fd ([`Server::poll_fd`]), calls [`Server::on_poll`] when it is ready and
//! [`Server::pump`] after every iteration, which sends new ring entries to the followers.
//! Nothing blocks: every socket is non-blocking, output is buffered per connection (bounded
//! for streams), and `EPOLLOUT` is asked for only while output is pending.
//!
//! Each accepted connection's peer is checked with `SO_PEERCRED`: only root is served
//! ([`proto::authorized`]); anyone else gets a `denied` error frame (best effort), is closed,
//! logged and audited. At most `max_clients` connections are open; the next one gets `busy`.
//! A connection carries one request: a malformed, oversized or wrong-version frame gets an
//! error frame, then the connection is closed. The request must arrive within the timeout,
//! pending output must make progress within it. Every request handled is recorded in the log
//! ring as an audit entry.
//!
//! The supervisor is reached through the [`Services`] trait (implemented by [`Supervisor`];
//! tests use a fake), the compliance self-check through an injected function.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{self, sockopt, MsgFlags, SockFlag};
use rampart_config::{Action, HostConfig};

use super::conn::{self, OutBuf, Stream, OUTPUT_LIMIT};
use super::proto::{self, AuditItem, AuditReply, EntryKind, ErrorCode, Reply, Request};
use super::ring::{self, Filter, INIT_SOURCE};
use super::status;
use crate::event::DeadlineTimer;
use crate::supervisor::{OpError, ServiceSnapshot, Supervisor};

/// Where PID 1 serves the control API.
pub const CONTROL_SOCKET: &str = rampart_config::operate::CONTROL_SOCKET;
/// Default of `[control] max_clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 8;
/// Default of `[control] timeout`.
pub const DEFAULT_TIMEOUT: Duration = rampart_config::operate::DEFAULT_CONTROL_TIMEOUT;
/// Default of `[logs] buffer`, in bytes.
pub const DEFAULT_LOG_BUFFER: usize = ring::DEFAULT_CAPACITY;
/// Connections accepted per wake-up at most (the listener stays ready for the rest).
pub const ACCEPT_BUDGET: usize = 64;
/// Bytes read from one connection per wake-up at most.
pub const READ_BUDGET: usize = 64 * 1024;
/// How long the listener is left alone after `accept` failed for lack of descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// Warnings about refused or malformed connections logged per [`WARN_WINDOW`] at most.
pub const WARN_BURST: u32 = 10;
/// The window of [`WARN_BURST`].
pub const WARN_WINDOW: Duration = Duration::from_secs(60);

const LISTENER_KEY: u64 = 0;
const TIMER_KEY: u64 = 1;
const FIRST_CONN_KEY: u64 = 16;

/// The server's bounds and paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The socket path.
    pub socket: PathBuf,
    /// Concurrent connections at most.
    pub max_clients: usize,
    /// The request and output-progress timeout of a connection.
    pub timeout: Duration,
    /// The output bytes a stream may have pending.
    pub output_limit: usize,
    /// The proc root, for the host figures.
    pub proc: PathBuf,
    /// The log ring's size in bytes.
    pub log_buffer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            socket: PathBuf::from(CONTROL_SOCKET),
            max_clients: DEFAULT_MAX_CLIENTS,
            timeout: DEFAULT_TIMEOUT,
            output_limit: OUTPUT_LIMIT,
            proc: PathBuf::from("/proc"),
            log_buffer: DEFAULT_LOG_BUFFER,
        }
    }
}

/// The settings of PID 1 for this host config: `[control] max_clients` and `timeout`,
/// `[logs] buffer`.
#[must_use]
pub fn settings(cfg: &HostConfig) -> Settings {
    Settings {
        max_clients: usize::try_from(cfg.control.max_clients).unwrap_or(DEFAULT_MAX_CLIENTS),
        timeout: cfg.control.timeout,
        log_buffer: usize::try_from(cfg.logs.buffer.bytes()).unwrap_or(DEFAULT_LOG_BUFFER),
        ..Settings::default()
    }
}

/// The boot step: serves the control socket for `cfg`. A failure is logged and said on the
/// console, and PID 1 runs on without it (the socket is a convenience, not a protection).
#[must_use]
pub fn boot_step(cfg: &HostConfig) -> Option<Server> {
    let settings = settings(cfg);
    let path = settings.socket.clone();
    match Server::bind(settings, Some(audit_fn(cfg.clone()))) {
        Ok(server) => {
            tracing::info!(path = %path.display(), "control socket ready");
            Some(server)
        }
        Err(error) => {
            tracing::error!(%error, "control socket not created");
            crate::log::console(&format!(
                "control: error: {error}; running without the control socket"
            ));
            None
        }
    }
}

/// Why the server could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Creating the socket's directory failed.
    #[error("create {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Something that is not a socket is in the way.
    #[error("{} exists and is not a socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Removing a stale socket failed.
    #[error("remove stale {}: {source}", path.display())]
    RemoveStale {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `bind` or `listen` failed.
    #[error("bind {}: {source}", path.display())]
    Bind {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Setting the socket's mode failed.
    #[error("chmod 0600 {}: {source}", path.display())]
    Chmod {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Making the listener non-blocking failed.
    #[error("set {} non-blocking: {source}", path.display())]
    NonBlocking {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Creating the epoll instance or the timerfd, or adding to epoll, failed.
    #[error("control server {what}: {source}")]
    Setup {
        /// Which.
        what: &'static str,
        /// The kernel's error.
        source: Errno,
    },
}

/// What the server asks of the supervisor.
pub trait Services {
    /// Every service, in start order.
    fn snapshot(&self, now: Instant) -> Vec<ServiceSnapshot>;
    /// Children reaped that were no service.
    fn orphans_reaped(&self) -> u64;
    /// The host is shutting down: every request is refused.
    fn shutting_down(&self) -> bool;
    /// Stops a service.
    fn stop(&mut self, name: &str) -> Result<String, OpError>;
    /// Starts a service.
    fn start(&mut self, name: &str) -> Result<String, OpError>;
    /// Restarts a service.
    fn restart(&mut self, name: &str) -> Result<String, OpError>;
}

impl Services for Supervisor {
    fn snapshot(&self, now: Instant) -> Vec<ServiceSnapshot> {
        Supervisor::snapshot(self, now)
    }
    fn orphans_reaped(&self) -> u64 {
        Supervisor::orphans_reaped(self)
    }
    fn shutting_down(&self) -> bool {
        self.stopping()
    }
    fn stop(&mut self, name: &str) -> Result<String, OpError> {
        self.stop_service(name)
    }
    fn start(&mut self, name: &str) -> Result<String, OpError> {
        self.start_service(name)
    }
    fn restart(&mut self, name: &str) -> Result<String, OpError> {
        self.restart_service(name)
    }
}

/// The [`Services`] of a host that is shutting down (no supervisor at hand).
#[derive(Debug, Clone, Copy, Default)]
pub struct ShuttingDown;

impl Services for ShuttingDown {
    fn snapshot(&self, _now: Instant) -> Vec<ServiceSnapshot> {
        Vec::new()
    }
    fn orphans_reaped(&self) -> u64 {
        0
    }
    fn shutting_down(&self) -> bool {
        true
    }
    fn stop(&mut self, _name: &str) -> Result<String, OpError> {
        Err(OpError::ShuttingDown)
    }
    fn start(&mut self, _name: &str) -> Result<String, OpError> {
        Err(OpError::ShuttingDown)
    }
    fn restart(&mut self, _name: &str) -> Result<String, OpError> {
        Err(OpError::ShuttingDown)
    }
}

/// Runs the compliance self-check.
pub type AuditFn = Box<dyn FnMut() -> AuditReply + Send>;

/// The compliance self-check of `cfg` on the live system, as a reply.
#[must_use]
pub fn audit_fn(cfg: HostConfig) -> AuditFn {
    Box::new(move || {
        let audit = crate::audit::run(
            &cfg,
            &crate::audit::Paths::default(),
            &crate::audit::read_live_firewall(),
        );
        audit_reply(&audit)
    })
}

/// Maps an audit report to its reply.
#[must_use]
pub fn audit_reply(audit: &crate::audit::Audit) -> AuditReply {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    AuditReply {
        passed: count(audit.passed()),
        failed: count(audit.failed()),
        skipped: count(audit.skipped()),
        items: audit
            .items
            .iter()
            .map(|i| AuditItem {
                result: i.status.as_str().to_owned(),
                item: i.item.clone(),
                reference: i.reference.clone(),
                detail: format!("expected {}, actual {}", i.expected, i.actual),
            })
            .collect(),
    }
}

/// The error code of a refused operation.
#[must_use]
pub fn op_error_code(error: &OpError) -> ErrorCode {
    match error {
        OpError::UnknownService { .. } => ErrorCode::UnknownService,
        OpError::InvalidState { .. } => ErrorCode::InvalidState,
        OpError::ShuttingDown => ErrorCode::ShuttingDown,
        OpError::StartFailed { .. } => ErrorCode::Internal,
    }
}

/// Who is on the other end (from `SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peer {
    /// Its pid, if known.
    pub pid: Option<i32>,
    /// Its uid, if known.
    pub uid: Option<u32>,
}

impl Peer {
    fn describe(self) -> String {
        let show = |v: Option<String>| v.unwrap_or_else(|| "?".to_owned());
        format!(
            "peer_pid={} peer_uid={}",
            show(self.pid.map(|p| p.to_string())),
            show(self.uid.map(|u| u.to_string()))
        )
    }
}

/// A bounded burst of warnings per window; the rest are counted and reported with the next
/// warning of a later window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    window_start: Option<Instant>,
    count: u32,
    suppressed: u64,
}

impl RateLimit {
    /// A limiter with nothing counted.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            window_start: None,
            count: 0,
            suppressed: 0,
        }
    }

    /// Whether a warning at `now` may be logged; when it may, also how many were suppressed
    /// since the last one logged.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= WARN_WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.count = 0;
        }
        if self.count >= WARN_BURST {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.count = self.count.saturating_add(1);
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the one request.
    Request,
    /// Streaming `logs` or `events`.
    Stream(Stream),
    /// The reply is queued: close once it is sent.
    Closing,
}

#[derive(Debug)]
struct Conn {
    key: u64,
    fd: OwnedFd,
    peer: Peer,
    reader: proto::FrameReader,
    out: OutBuf,
    phase: Phase,
    accepted: Instant,
    progress: Instant,
    read_closed: bool,
    /// The last send would have blocked: wait for `EPOLLOUT` before trying again.
    blocked: bool,
    interest: EpollFlags,
    /// Close it now (an error, the peer left, the deadline passed).
    dead: bool,
}

impl Conn {
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        conn::deadline(
            matches!(self.phase, Phase::Request),
            self.out.pending() > 0,
            self.accepted,
            self.progress,
            timeout,
        )
    }

    /// Sends what it can without blocking.
    fn flush(&mut self, now: Instant) {
        while self.out.pending() > 0 {
            let sent = socket::send(
                self.fd.as_raw_fd(),
                self.out.data(),
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
            match sent {
                Ok(n) => {
                    self.out.consume(n);
                    self.progress = now;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    self.blocked = true;
                    return;
                }
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        self.blocked = false;
        if matches!(self.phase, Phase::Closing) {
            self.dead = true;
        }
    }

    fn reply(&mut self, reply: &Reply) {
        self.out.push(&conn::encode_or_error(reply));
        self.phase = Phase::Closing;
    }
}

/// Sends one error frame without waiting (best effort) on a connection about to be closed.
fn refuse(fd: &OwnedFd, code: ErrorCode, message: &str) {
    let frame = conn::encode_or_error(&Reply::Error {
        code,
        message: message.to_owned(),
    });
    let _ = socket::send(
        fd.as_raw_fd(),
        &frame,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    );
}

fn peer_of(fd: &OwnedFd) -> Peer {
    match socket::getsockopt(fd, sockopt::PeerCredentials) {
        Ok(cred) => Peer {
            pid: Some(cred.pid()),
            uid: Some(cred.uid()),
        },
        Err(_) => Peer::default(),
    }
}

/// Records an audit entry of the control socket in the log ring.
fn audit(severity: u8, message: &str) {
    ring::record(INIT_SOURCE, EntryKind::Audit, severity, message);
}

/// The control socket server.
pub struct Server {
    settings: Settings,
    epoll: Epoll,
    listener: UnixListener,
    timer: DeadlineTimer,
    conns: Vec<Conn>,
    next_key: u64,
    audit: Option<AuditFn>,
    warnings: RateLimit,
    /// The listener is out of the epoll set until then (`accept` ran out of descriptors).
    paused_until: Option<Instant>,
    /// A `reboot` or `poweroff` that was answered: it is returned to the event loop once
    /// [`SHUTDOWN_GRACE`] has passed, so the reply can travel on (through `rampart-relay` to
    /// the host channel) before the shutdown signals every service.
    pending: Option<(Action, Instant)>,
    /// A `reboot` or `poweroff` was answered: every later request is refused.
    shutdown_answered: bool,
}

/// How long an answered `reboot` or `poweroff` waits before the shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1000);

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("settings", &self.settings)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// Creates `dir` (mode 0700, parents too) unless it exists.
fn ensure_dir(dir: &Path) -> Result<(), ServerError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ServerError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Removes a stale socket at `path`; refuses to remove anything else.
fn remove_stale(path: &Path) -> Result<(), ServerError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ServerError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => Err(ServerError::NotASocket {
            path: path.to_path_buf(),
        }),
        Err(_) => Ok(()),
    }
}

impl Server {
    /// Binds the socket at `settings.socket` and creates the server's fds.
    pub fn bind(settings: Settings, audit: Option<AuditFn>) -> Result<Self, ServerError> {
        let path = settings.socket.clone();
        if let Some(dir) = path.parent() {
            ensure_dir(dir)?;
        }
        remove_stale(&path)?;
        let listener = UnixListener::bind(&path).map_err(|source| ServerError::Bind {
            path: path.clone(),
            source,
        })?;
        // umask 022 made it 0755 at most: nobody but root could connect even before this.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ServerError::Chmod {
                path: path.clone(),
                source,
            },
        )?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::NonBlocking {
                path: path.clone(),
                source,
            })?;
        let setup = |what| move |source| ServerError::Setup { what, source };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(setup("epoll"))?;
        epoll
            .add(
                listener.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_KEY),
            )
            .map_err(setup("epoll add listener"))?;
        let timer = DeadlineTimer::new(&epoll, TIMER_KEY)
            .map_err(|(what, source)| ServerError::Setup { what, source })?;
        ring::set_capacity(settings.log_buffer);
        Ok(Self {
            settings,
            epoll,
            listener,
            timer,
            conns: Vec::new(),
            next_key: FIRST_CONN_KEY,
            audit,
            warnings: RateLimit::new(),
            paused_until: None,
            pending: None,
            shutdown_answered: false,
        })
    }

    /// The server's epoll fd, for PID 1's event loop.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.settings.socket
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Handles whatever is ready (new connections, requests, writable sockets, deadlines),
    /// then [`Server::pump`]s. Returns a shutdown a `reboot` or `poweroff` request asked for
    /// (its `done` reply was sent, as far as the socket took it without blocking).
    pub fn on_poll(&mut self, services: &mut dyn Services) -> Option<Action> {
        let mut events = [EpollEvent::empty(); 64];
        let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "control server epoll wait");
                0
            }
        };
        let now = Instant::now();
        let mut action = None;
        for event in events.iter().take(n) {
            match event.data() {
                LISTENER_KEY => self.accept_all(now),
                TIMER_KEY => self.timer.acknowledge(),
                key => {
                    let wanted = self.on_conn_event(key, event.events(), services, now);
                    action = action.or(wanted);
                }
            }
        }
        if let Some(wanted) = action {
            // Answered: later requests are refused, the shutdown starts after the grace
            // (at once if the clock cannot add it).
            if !self.shutdown_answered {
                self.shutdown_answered = true;
                self.pending = Some((wanted, now.checked_add(SHUTDOWN_GRACE).unwrap_or(now)));
            }
        }
        self.expire(now);
        self.pump();
        match self.pending {
            Some((wanted, at)) if at <= Instant::now() => {
                self.pending = None;
                self.rearm(Instant::now());
                Some(wanted)
            }
            _ => None,
        }
    }

    /// Sends new ring entries to the streams, flushes what can be sent, closes finished
    /// connections, updates each one's epoll interest and re-arms the timer. PID 1 calls it
    /// after every event-loop iteration.
    pub fn pump(&mut self) {
        let now = Instant::now();
        let limit = self.settings.output_limit;
        if self
            .conns
            .iter()
            .any(|c| matches!(c.phase, Phase::Stream(_)) && !c.dead)
        {
            ring::with_ring(|ring| {
                for c in &mut self.conns {
                    if c.dead {
                        continue;
                    }
                    if let Phase::Stream(stream) = &mut c.phase {
                        if conn::fill(stream, ring, &mut c.out, limit).ended {
                            c.phase = Phase::Closing;
                        }
                    }
                }
            });
        }
        for c in &mut self.conns {
            if !c.dead && !c.blocked && c.out.pending() > 0 {
                c.flush(now);
            }
            if !c.dead && matches!(c.phase, Phase::Closing) && c.out.pending() == 0 {
                c.dead = true;
            }
        }
        self.reap();
        for c in &mut self.conns {
            let wanted = conn::interest(c.read_closed, c.out.pending() > 0);
            if wanted != c.interest {
                match self
                    .epoll
                    .modify(c.fd.as_fd(), &mut EpollEvent::new(wanted, c.key))
                {
                    Ok(()) => c.interest = wanted,
                    Err(_) => c.dead = true,
                }
            }
        }
        self.reap();
        self.rearm(now);
    }

    fn accept_all(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let accepted = socket::accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            );
            let raw = match accepted {
                Ok(raw) => raw,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(error) => {
                    // Out of descriptors (or worse): leave the listener alone for a while
                    // rather than spin on a connection that cannot be accepted.
                    tracing::warn!(%error, pause = ?ACCEPT_PAUSE, "control socket accept failed");
                    if self.epoll.delete(self.listener.as_fd()).is_ok() {
                        self.paused_until = now.checked_add(ACCEPT_PAUSE);
                    }
                    return;
                }
            };
            // SAFETY: accept4 just returned this descriptor; nothing else owns it, and the
            // OwnedFd becomes its only owner (nix has no owned-fd accept4).
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            self.admit(fd, now);
        }
    }

    fn warn(&mut self, now: Instant, what: &str, detail: &str) {
        if let Some(suppressed) = self.warnings.allow(now) {
            if suppressed > 0 {
                tracing::warn!(
                    "control socket: {what}: {detail} ({suppressed} similar warnings suppressed)"
                );
            } else {
                tracing::warn!("control socket: {what}: {detail}");
            }
        }
    }

    fn admit(&mut self, fd: OwnedFd, now: Instant) {
        let peer = peer_of(&fd);
        if !proto::authorized(peer.uid) {
            refuse(
                &fd,
                ErrorCode::Denied,
                "the control socket is for root only",
            );
            let who = peer.describe();
            audit(4, &format!("control refused {who} reason=not-root"));
            self.warn(now, "refused a peer that is not root", &who);
            return;
        }
        if self.conns.len() >= self.settings.max_clients {
            refuse(&fd, ErrorCode::Busy, "too many clients; try again later");
            let who = peer.describe();
            audit(
                5,
                &format!(
                    "control busy {who} max_clients={}",
                    self.settings.max_clients
                ),
            );
            self.warn(
                now,
                "too many clients",
                &format!("{who} max_clients={}", self.settings.max_clients),
            );
            return;
        }
        let key = self.next_key;
        self.next_key = self.next_key.saturating_add(1);
        let interest = conn::interest(false, false);
        if let Err(error) = self.epoll.add(fd.as_fd(), EpollEvent::new(interest, key)) {
            tracing::warn!(%error, "control connection not watched");
            return;
        }
        self.conns.push(Conn {
            key,
            fd,
            peer,
            reader: proto::FrameReader::new(proto::MAX_REQUEST),
            out: OutBuf::default(),
            phase: Phase::Request,
            accepted: now,
            progress: now,
            read_closed: false,
            blocked: false,
            interest,
            dead: false,
        });
    }

    fn on_conn_event(
        &mut self,
        key: u64,
        flags: EpollFlags,
        services: &mut dyn Services,
        now: Instant,
    ) -> Option<Action> {
        let index = self.conns.iter().position(|c| c.key == key)?;
        let mut action = None;
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) {
            action = self.read_conn(index, services, now);
        }
        let c = self.conns.get_mut(index)?;
        if flags.contains(EpollFlags::EPOLLOUT) {
            c.blocked = false;
            c.flush(now);
        }
        if flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
            // The peer is gone both ways: nothing more can be sent.
            c.dead = true;
        }
        action
    }

    fn read_conn(
        &mut self,
        index: usize,
        services: &mut dyn Services,
        now: Instant,
    ) -> Option<Action> {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0usize;
        let mut action = None;
        while total < READ_BUDGET {
            let c = self.conns.get_mut(index)?;
            if c.read_closed || c.dead {
                break;
            }
            let n = match socket::recv(c.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    c.read_closed = true;
                    match &c.phase {
                        // No (whole) request came, or a follower left.
                        Phase::Request => c.dead = true,
                        Phase::Stream(stream) if stream.end.is_none() => c.dead = true,
                        // A reply or a stream with an end is still sent.
                        Phase::Stream(_) | Phase::Closing => {}
                    }
                    break;
                }
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    c.dead = true;
                    break;
                }
            };
            total = total.saturating_add(n);
            if !matches!(c.phase, Phase::Request) {
                // One request per connection: anything after it is ignored.
                continue;
            }
            c.reader.push(buf.get(..n).unwrap_or_default());
            match conn::next_request(&mut c.reader) {
                Ok(None) => {}
                Ok(Some(request)) => {
                    let wanted = self.dispatch(index, request, services, now);
                    action = action.or(wanted);
                }
                Err(error) => {
                    let reply = conn::protocol_error(&error);
                    let peer = c.peer;
                    let detail = match &reply {
                        Reply::Error { message, .. } => message.clone(),
                        _ => String::new(),
                    };
                    c.reply(&reply);
                    c.flush(now);
                    if self.warnings.allow(now).is_some() {
                        audit(
                            5,
                            &format!("control bad-request {} error=\"{detail}\"", peer.describe()),
                        );
                    }
                    tracing::debug!(error = %detail, "control socket: bad request");
                }
            }
        }
        action
    }

    /// Answers one request on connection `index`.
    fn dispatch(
        &mut self,
        index: usize,
        request: Request,
        services: &mut dyn Services,
        now: Instant,
    ) -> Option<Action> {
        let op = request.op();
        let peer = self.conns.get(index).map(|c| c.peer).unwrap_or_default();
        let service = match &request {
            Request::Logs {
                service: Some(s), ..
            }
            | Request::Restart { service: s }
            | Request::Stop { service: s }
            | Request::Start { service: s } => Some(s.clone()),
            _ => None,
        };
        let mut action = None;
        let answer = if services.shutting_down() || self.shutdown_answered {
            Answer::Failed(ErrorCode::ShuttingDown, "the host is shutting down".into())
        } else {
            match request {
                Request::Status {} => Answer::Reply(self.status_reply(services, now)),
                Request::Logs {
                    service,
                    since_ms,
                    tail,
                    follow,
                } => {
                    let known = service.as_deref().is_none_or(|s| {
                        s == INIT_SOURCE || services.snapshot(now).iter().any(|snap| snap.name == s)
                    });
                    if known {
                        let filter = Filter {
                            source: service,
                            since_ms,
                            events_only: false,
                        };
                        self.start_stream(index, filter, tail, follow);
                        Answer::Streaming
                    } else {
                        Answer::Failed(
                            ErrorCode::UnknownService,
                            format!(
                                "no service named {:?}",
                                service.as_deref().unwrap_or_default()
                            ),
                        )
                    }
                }
                Request::Events { since_ms, follow } => {
                    let filter = Filter {
                        source: None,
                        since_ms,
                        events_only: true,
                    };
                    self.start_stream(index, filter, None, follow);
                    Answer::Streaming
                }
                Request::Restart { service } => op_reply(services.restart(&service)),
                Request::Stop { service } => op_reply(services.stop(&service)),
                Request::Start { service } => op_reply(services.start(&service)),
                Request::Reboot {} => {
                    action = Some(Action::Reboot);
                    Answer::Reply(Reply::Done {
                        message: "rebooting".into(),
                    })
                }
                Request::Poweroff {} => {
                    action = Some(Action::Poweroff);
                    Answer::Reply(Reply::Done {
                        message: "powering off".into(),
                    })
                }
                Request::Audit {} => match self.audit.as_mut() {
                    Some(run) => Answer::Reply(Reply::Audit(run())),
                    None => Answer::Failed(
                        ErrorCode::Internal,
                        "the compliance self-check is not available".into(),
                    ),
                },
            }
        };
        let result = match &answer {
            Answer::Reply(_) | Answer::Streaming => "ok".to_owned(),
            Answer::Failed(code, _) => code_name(*code),
        };
        let target = service
            .as_deref()
            .map(|s| format!(" service={s}"))
            .unwrap_or_default();
        let who = peer.describe();
        audit(
            if matches!(answer, Answer::Failed(..)) {
                5
            } else {
                6
            },
            &format!("control op={op}{target} {who} result={result}"),
        );
        let mutating = matches!(op, "restart" | "stop" | "start" | "reboot" | "poweroff");
        if mutating {
            tracing::info!("control request: op={op}{target} {who} result={result}");
        }
        let c = self.conns.get_mut(index)?;
        let reply = match answer {
            Answer::Reply(reply) => reply,
            Answer::Failed(code, message) => Reply::Error { code, message },
            Answer::Streaming => return action,
        };
        c.reply(&reply);
        c.flush(now);
        action
    }

    fn start_stream(&mut self, index: usize, filter: Filter, tail: Option<u32>, follow: bool) {
        let stream = ring::with_ring(|ring| Stream::new(ring, filter, tail, follow));
        if let Some(c) = self.conns.get_mut(index) {
            c.phase = Phase::Stream(stream);
        }
    }

    fn status_reply(&self, services: &dyn Services, now: Instant) -> Reply {
        let snapshots = services.snapshot(now);
        Reply::Status(proto::StatusReply {
            host: status::host_status(
                &self.settings.proc,
                services.orphans_reaped(),
                ring::evicted(),
            ),
            services: snapshots.iter().map(status::service_status).collect(),
        })
    }

    /// Closes every connection past its deadline; puts a paused listener back.
    fn expire(&mut self, now: Instant) {
        let timeout = self.settings.timeout;
        for c in &mut self.conns {
            if c.deadline(timeout).is_some_and(|d| d <= now) {
                c.dead = true;
            }
        }
        if self.paused_until.is_some_and(|t| t <= now) {
            match self.epoll.add(
                self.listener.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_KEY),
            ) {
                Ok(()) => self.paused_until = None,
                Err(error) => {
                    tracing::warn!(%error, "control socket listener not watched again");
                    self.paused_until = now.checked_add(ACCEPT_PAUSE);
                }
            }
        }
        self.reap();
    }

    /// Drops the dead connections (closing their sockets).
    fn reap(&mut self) {
        let epoll = &self.epoll;
        self.conns.retain(|c| {
            if c.dead {
                let _ = epoll.delete(c.fd.as_fd());
            }
            !c.dead
        });
    }

    fn rearm(&mut self, now: Instant) {
        let timeout = self.settings.timeout;
        let next = self
            .conns
            .iter()
            .filter_map(|c| c.deadline(timeout))
            .chain(self.paused_until)
            .chain(self.pending.map(|(_, at)| at))
            .min();
        if let Err(error) = self.timer.rearm(next, now) {
            tracing::error!(%error, "control server timer");
        }
    }
}

/// The wire name of an error code (`unknown-service`).
#[must_use]
pub fn code_name(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "error".to_owned(),
    }
}

/// How a request is answered.
enum Answer {
    /// With this reply.
    Reply(Reply),
    /// With a stream (already set up on the connection).
    Streaming,
    /// With an error.
    Failed(ErrorCode, String),
}

fn op_reply(result: Result<String, OpError>) -> Answer {
    match result {
        Ok(message) => Answer::Reply(Reply::Done { message }),
        Err(error) => Answer::Failed(op_error_code(&error), error.to_string()),
    }
}

#[cfg(test)]
mod tests;
