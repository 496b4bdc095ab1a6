//! One collector: its queue and the thread that sends the queued lines, with reconnection and
//! backoff for TCP.
//!
//! TCP lines are written in batches (as many as are queued, up to [`BATCH_BYTES`]); a batch
//! that fails is kept and written again on the next connection, so a collector that restarts
//! loses nothing that was not already in the kernel's buffers. UDP lines go one per datagram;
//! a datagram that cannot be sent is counted as failed.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rampart_config::operate::LogProtocol;

use super::queue::{Backoff, Pushed, Queue};
use super::render;
use crate::control::proto::LogEntry;

/// The most bytes written to a TCP collector in one batch.
pub const BATCH_BYTES: usize = 64 * 1024;

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one write to a TCP collector may block before the connection is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an idle sender wakes to report dropped lines and notice shutdown.
const TICK: Duration = Duration::from_millis(500);

/// Where and how to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The wire format and transport.
    pub protocol: LogProtocol,
    /// The collector.
    pub address: SocketAddr,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.protocol)
    }
}

/// The bytes of one entry for this target's protocol.
#[must_use]
pub fn encode(protocol: LogProtocol, entry: &LogEntry, hostname: &str) -> Vec<u8> {
    match protocol {
        LogProtocol::SyslogUdp => render::syslog_datagram(entry, hostname).into_bytes(),
        LogProtocol::SyslogTcp => render::octet_counted(&render::syslog(entry, hostname)),
        LogProtocol::JsonTcp => render::json_line(entry, hostname).into_bytes(),
    }
}

/// Counters of one collector.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    connects: AtomicU64,
}

/// The figures of one collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The collector.
    pub target: Target,
    /// Lines sent (written to the socket).
    pub sent: u64,
    /// Lines dropped because the queue was full.
    pub dropped: u64,
    /// Lines taken from the queue that could not be sent (UDP errors, TCP lines still
    /// unsent at shutdown).
    pub failed: u64,
    /// Lines still queued.
    pub queued: u64,
    /// Successful connections (TCP) or sockets opened (UDP).
    pub connects: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "collector {}: sent {} lines, dropped {}, failed {}, still queued {}",
            self.target, self.sent, self.dropped, self.failed, self.queued
        )
    }
}

/// A collector: its queue and its sender thread.
#[derive(Debug)]
pub struct Collector {
    target: Target,
    queue: Queue,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    /// Starts the sender thread of `target` with a queue of `capacity` lines.
    pub fn start(target: Target, hostname: &str, capacity: usize) -> io::Result<Self> {
        let queue = Queue::new(capacity);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            target,
            hostname: hostname.to_owned(),
            queue: queue.clone(),
            counters: Arc::clone(&counters),
        };
        let thread = std::thread::Builder::new()
            .name(format!("collector {}", target.address))
            .spawn(move || worker.run())?;
        Ok(Self {
            target,
            queue,
            counters,
            thread: Some(thread),
        })
    }

    /// The collector.
    #[must_use]
    pub fn target(&self) -> Target {
        self.target
    }

    /// Queues an entry (or drops and counts it).
    pub fn push(&self, entry: Arc<LogEntry>) -> Pushed {
        let pushed = self.queue.push(entry);
        if pushed == Pushed::Dropped {
            report_drops(&self.target, &self.queue);
        }
        pushed
    }

    /// The current figures.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            target: self.target,
            sent: self.counters.sent.load(Ordering::Relaxed),
            dropped: self.queue.dropped(),
            failed: self.counters.failed.load(Ordering::Relaxed),
            queued: u64::try_from(self.queue.len()).unwrap_or(u64::MAX),
            connects: self.counters.connects.load(Ordering::Relaxed),
        }
    }

    /// Closes the queue: the sender writes what is queued (if it is connected) and ends.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Whether the sender thread has ended.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Joins the sender thread if it has ended.
    pub fn join_if_finished(&mut self) {
        if self.finished() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Logs the dropped lines of a collector when a report is due.
fn report_drops(target: &Target, queue: &Queue) {
    if let Some(n) = queue.drops_due(Instant::now()) {
        tracing::warn!("collector {target}: dropped {n} lines");
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

struct Worker {
    target: Target,
    hostname: String,
    queue: Queue,
    counters: Arc<Counters>,
}

/// A batch of encoded lines waiting to be written.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
}

impl Worker {
    fn run(self) {
        match self.target.protocol {
            LogProtocol::SyslogUdp => self.run_udp(),
            LogProtocol::SyslogTcp | LogProtocol::JsonTcp => self.run_tcp(),
        }
    }

    fn connect(&self) -> io::Result<Conn> {
        match self.target.protocol {
            LogProtocol::SyslogUdp => {
                let local: IpAddr = match self.target.address {
                    SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                    SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
                };
                let socket = UdpSocket::bind(SocketAddr::new(local, 0))?;
                socket.connect(self.target.address)?;
                Ok(Conn::Udp(socket))
            }
            LogProtocol::SyslogTcp | LogProtocol::JsonTcp => {
                let stream = TcpStream::connect_timeout(&self.target.address, CONNECT_TIMEOUT)?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                Ok(Conn::Tcp(stream))
            }
        }
    }

    /// Sleeps `pause` in short steps; false when the queue was closed meanwhile.
    fn pause(&self, pause: Duration) -> bool {
        let end = Instant::now().checked_add(pause);
        loop {
            if self.queue.is_closed() {
                return false;
            }
            report_drops(&self.target, &self.queue);
            let left = end.map_or(TICK, |e| e.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(TICK));
        }
    }

    fn run_udp(self) {
        let mut socket: Option<UdpSocket> = None;
        let mut backoff = Backoff::default();
        loop {
            report_drops(&self.target, &self.queue);
            let Some(entry) = self.queue.pop(TICK) else {
                if self.queue.is_closed() && self.queue.is_empty() {
                    return;
                }
                continue;
            };
            if socket.is_none() {
                match self.connect() {
                    Ok(Conn::Udp(s)) => {
                        self.counters.connects.fetch_add(1, Ordering::Relaxed);
                        backoff.reset();
                        socket = Some(s);
                    }
                    Ok(Conn::Tcp(_)) => {}
                    Err(e) => {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        let pause = backoff.next_pause();
                        tracing::warn!(
                            "collector {}: cannot open a socket: {e}; retrying in {}s",
                            self.target,
                            pause.as_secs()
                        );
                        if !self.pause(pause) {
                            return;
                        }
                        continue;
                    }
                }
            }
            let bytes = encode(self.target.protocol, &entry, &self.hostname);
            let result = socket.as_ref().map(|s| s.send(&bytes));
            match result {
                Some(Ok(_)) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    // A refused datagram (ICMP port unreachable) only means nobody listens
                    // right now; anything else gets a fresh socket.
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if e.kind() != io::ErrorKind::ConnectionRefused {
                        tracing::warn!("collector {}: send: {e}", self.target);
                        socket = None;
                    }
                }
                None => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Fills `batch` with queued lines, waiting up to [`TICK`] for the first one.
    fn fill(&self, batch: &mut Batch) {
        let mut wait = TICK;
        while batch.bytes.len() < BATCH_BYTES {
            let Some(entry) = self.queue.pop(wait) else {
                return;
            };
            batch
                .bytes
                .extend_from_slice(&encode(self.target.protocol, &entry, &self.hostname));
            batch.lines = batch.lines.saturating_add(1);
            wait = Duration::ZERO;
        }
    }

    fn run_tcp(self) {
        let mut stream: Option<TcpStream> = None;
        let mut backoff = Backoff::default();
        let mut failures: u32 = 0;
        let mut batch = Batch::default();
        loop {
            report_drops(&self.target, &self.queue);
            if batch.lines == 0 {
                self.fill(&mut batch);
                if batch.lines == 0 {
                    if self.queue.is_closed() && self.queue.is_empty() {
                        return;
                    }
                    continue;
                }
            }
            if stream.as_ref().is_some_and(peer_closed) {
                tracing::warn!(
                    "collector {}: the collector closed the connection",
                    self.target
                );
                stream = None;
            }
            if stream.is_none() {
                if self.queue.is_closed() && failures > 0 {
                    // Shutting down and unreachable: do not wait for it.
                    self.abandon(&batch);
                    return;
                }
                match self.connect() {
                    Ok(Conn::Tcp(s)) => {
                        self.counters.connects.fetch_add(1, Ordering::Relaxed);
                        if failures > 0 {
                            tracing::info!(
                                "collector {}: connected after {failures} failed attempts",
                                self.target
                            );
                        }
                        failures = 0;
                        stream = Some(s);
                    }
                    Ok(Conn::Udp(_)) => {}
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let pause = backoff.next_pause();
                        tracing::warn!(
                            "collector {}: connect: {e}; retrying in {}s",
                            self.target,
                            pause.as_secs()
                        );
                        if !self.pause(pause) {
                            self.abandon(&batch);
                            return;
                        }
                        continue;
                    }
                }
            }
            let result = stream
                .as_mut()
                .map(|s| s.write_all(&batch.bytes).and_then(|()| s.flush()));
            match result {
                Some(Ok(())) => {
                    self.counters.sent.fetch_add(batch.lines, Ordering::Relaxed);
                    batch = Batch::default();
                    backoff.reset();
                }
                Some(Err(e)) => {
                    // Keep the batch for the next connection.
                    failures = failures.saturating_add(1);
                    stream = None;
                    let pause = backoff.next_pause();
                    tracing::warn!(
                        "collector {}: write: {e}; reconnecting in {}s",
                        self.target,
                        pause.as_secs()
                    );
                    if !self.pause(pause) {
                        self.abandon(&batch);
                        return;
                    }
                }
                None => {}
            }
        }
    }

    /// Counts a batch and every queued line as failed (shutdown while unreachable).
    fn abandon(&self, batch: &Batch) {
        let mut lost = batch.lines;
        while self.queue.pop(Duration::ZERO).is_some() {
            lost = lost.saturating_add(1);
        }
        self.counters.failed.fetch_add(lost, Ordering::Relaxed);
    }
}

/// Whether the peer has closed a connection we only ever write to (a collector sends
/// nothing; a readable socket means end of stream or a reset).
fn peer_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut probe = [0u8; 1];
    let closed = match stream.peek(&mut probe) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted,
    };
    let _ = stream.set_nonblocking(false);
    closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::EntryKind;

    #[test]
    fn encodings_per_protocol() {
        let e = LogEntry {
            seq: 1,
            time_ms: 0,
            source: "a".into(),
            kind: EntryKind::Log,
            severity: 6,
            message: "m".into(),
        };
        let udp = String::from_utf8(encode(LogProtocol::SyslogUdp, &e, "h")).unwrap();
        let tcp = String::from_utf8(encode(LogProtocol::SyslogTcp, &e, "h")).unwrap();
        let json = String::from_utf8(encode(LogProtocol::JsonTcp, &e, "h")).unwrap();
        assert_eq!(
            udp,
            "<30>1 1970-01-01T00:00:00.000Z h a - log [rampart@32473 seq=\"1\" kind=\"log\"] m"
        );
        assert_eq!(tcp, format!("{} {udp}", udp.len()));
        assert!(json.starts_with("{\"time\":\"1970-01-01T00:00:00.000Z\",\"host\":\"h\""));
        assert!(json.ends_with("}\n"));
    }

    #[test]
    fn target_display() {
        let t = Target {
            protocol: LogProtocol::SyslogTcp,
            address: "10.0.2.2:5514".parse().unwrap(),
        };
        assert_eq!(t.to_string(), "10.0.2.2:5514 (syslog-tcp)");
    }
}
