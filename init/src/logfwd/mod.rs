//! `rampart-logd`: forwards every entry of PID 1's log ring to the remote collectors of
//! `[logs] forward`, outside PID 1 (it is a supervised service with no capabilities).
//!
//! It asks the control socket for `logs --follow` from the start of the ring (so boot lines
//! go out too), and hands each entry to every collector's bounded queue ([`queue`]); one
//! thread per collector ([`sender`]) renders it ([`render`]: RFC 5424 over UDP, RFC 5424 with
//! RFC 6587 octet counting over TCP, or JSON lines over TCP) and sends it, reconnecting with
//! backoff. A full queue drops the new line and counts it; the count is logged at most every
//! 10 s and in the summary printed at exit. When the control connection ends, it reconnects
//! with backoff and resumes after the last sequence number it saw.

pub mod queue;
pub mod render;
pub mod sender;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use rampart_config::HostConfig;

use crate::control::client::{Client, ClientError};
use crate::control::proto::{LogEntry, Reply, Request};
use crate::tool;
/// The log setup and format of the small supervised binaries, here since `rampart-logd`
/// introduced them (the binaries call `logfwd::init_logging`).
pub use crate::tool::init_logging;
use queue::Backoff;
use sender::{Collector, Stats, Target};

/// How long one read of the control stream may block before the stop flag is checked again.
pub const CONTROL_TICK: Duration = Duration::from_secs(1);

/// How long the senders get at exit to write what is queued.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Why the log forwarder cannot run.
#[derive(Debug, thiserror::Error)]
pub enum LogfwdError {
    /// The command line is wrong.
    #[error("usage: rampart-logd --config PATH [--socket PATH]: {reason}")]
    Usage {
        /// What is wrong.
        reason: String,
    },
    /// The host config could not be loaded.
    #[error("load config {path}: {source}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: Box<rampart_config::ConfigError>,
    },
    /// A sender thread could not be started.
    #[error("start the sender thread of collector {target}: {source}")]
    Spawn {
        /// The collector.
        target: Target,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The termination signals could not be blocked.
    #[error("block termination signals: {source}")]
    Signals {
        /// The errno.
        source: nix::Error,
    },
    /// The thread that waits for termination signals could not be started.
    #[error("start the signal thread: {source}")]
    SignalThread {
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The command line: `--config PATH [--socket PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The host config.
    pub config: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Options, LogfwdError> {
    let usage = |reason: String| LogfwdError::Usage { reason };
    let mut config = None;
    let mut socket = PathBuf::from(rampart_config::operate::CONTROL_SOCKET);
    tool::parse_flags(args, &["--config", "--socket"], |flag, value| {
        if flag == "--config" {
            config = Some(value);
        } else {
            socket = value;
        }
    })
    .map_err(usage)?;
    let config = tool::required(config, "--config").map_err(usage)?;
    Ok(Options { config, socket })
}

/// What the forwarder does: plain data from the host config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The control socket.
    pub socket: PathBuf,
    /// HOSTNAME of the messages.
    pub hostname: String,
    /// Lines queued per collector before drops.
    pub queue: usize,
    /// The collectors, in config order.
    pub targets: Vec<Target>,
}

/// The forwarder's plan for a host config.
#[must_use]
pub fn plan(cfg: &HostConfig, socket: &Path) -> Plan {
    Plan {
        socket: socket.to_path_buf(),
        hostname: cfg.host.hostname.as_str().to_owned(),
        queue: usize::try_from(cfg.logs.queue).unwrap_or(usize::MAX),
        targets: cfg
            .logs
            .forward
            .iter()
            .map(|c| Target {
                protocol: c.protocol,
                address: SocketAddr::new(c.address, c.port.get()),
            })
            .collect(),
    }
}

/// Every collector's queue and sender.
#[derive(Debug)]
pub struct Forwarder {
    collectors: Vec<Collector>,
}

impl Forwarder {
    /// Starts one sender thread per collector of `plan`.
    pub fn start(plan: &Plan) -> Result<Self, LogfwdError> {
        let collectors = plan
            .targets
            .iter()
            .map(|t| {
                Collector::start(*t, &plan.hostname, plan.queue)
                    .map_err(|source| LogfwdError::Spawn { target: *t, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { collectors })
    }

    /// Hands an entry to every collector.
    pub fn push(&self, entry: LogEntry) {
        let entry = Arc::new(entry);
        for c in &self.collectors {
            c.push(Arc::clone(&entry));
        }
    }

    /// Every collector's figures.
    #[must_use]
    pub fn stats(&self) -> Vec<Stats> {
        self.collectors.iter().map(Collector::stats).collect()
    }

    /// Closes every queue, gives the senders up to `grace` to write what is queued, and
    /// returns the final figures.
    pub fn shutdown(mut self, grace: Duration) -> Vec<Stats> {
        for c in &self.collectors {
            c.close();
        }
        let end = Instant::now().checked_add(grace);
        while !self.collectors.iter().all(Collector::finished)
            && end.is_some_and(|e| Instant::now() < e)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &mut self.collectors {
            c.join_if_finished();
        }
        self.stats()
    }
}

/// Where the control stream resumes: after the last sequence number seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    last_seq: Option<u64>,
    last_time_ms: Option<i64>,
}

impl Cursor {
    /// The request that resumes the stream: every source, from the last entry's time (from the
    /// start of the ring the first time), following.
    #[must_use]
    pub fn request(&self) -> Request {
        Request::Logs {
            service: None,
            since_ms: self.last_time_ms,
            tail: None,
            follow: true,
        }
    }

    /// Whether an entry is new (its seq is above the last one seen); records it if so.
    pub fn accept(&mut self, entry: &LogEntry) -> bool {
        if self.last_seq.is_some_and(|last| entry.seq <= last) {
            return false;
        }
        self.last_seq = Some(entry.seq);
        self.last_time_ms = Some(entry.time_ms);
        true
    }

    /// The last sequence number seen.
    #[must_use]
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }
}

/// How one control stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// The server closed it (or sent the end of a stream).
    Closed,
    /// The stop flag was set.
    Stopped,
    /// The server refused the request.
    Refused(String),
    /// Connecting, sending or receiving failed.
    Failed(ClientError),
}

impl fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEnd::Closed => f.write_str("the server closed the stream"),
            StreamEnd::Stopped => f.write_str("stopped"),
            StreamEnd::Refused(m) => write!(f, "the server refused the request: {m}"),
            StreamEnd::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Figures of the control side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Entries received and handed to the collectors.
    pub entries: u64,
    /// Entries received again after a reconnection and skipped.
    pub repeated: u64,
    /// Entries the server skipped for this (too slow) subscriber.
    pub server_dropped: u64,
    /// Connections made to the control socket.
    pub connects: u64,
}

/// Follows one control stream from `cursor`, calling `deliver` for each new entry, until it
/// ends or `stop` is set (checked every `tick`).
pub fn follow_once(
    socket: &Path,
    cursor: &mut Cursor,
    stats: &mut ControlStats,
    stop: &AtomicBool,
    tick: Duration,
    mut deliver: impl FnMut(LogEntry),
) -> StreamEnd {
    let mut client = match Client::connect(socket, Some(tick)) {
        Ok(c) => c,
        Err(e) => return StreamEnd::Failed(e),
    };
    stats.connects = stats.connects.saturating_add(1);
    if let Err(e) = client.send(&cursor.request()) {
        return StreamEnd::Failed(e);
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return StreamEnd::Stopped;
        }
        match client.recv() {
            Ok(None) | Ok(Some(Reply::End)) => return StreamEnd::Closed,
            Ok(Some(Reply::Entry(entry))) => {
                if cursor.accept(&entry) {
                    stats.entries = stats.entries.saturating_add(1);
                    deliver(entry);
                } else {
                    stats.repeated = stats.repeated.saturating_add(1);
                }
            }
            Ok(Some(Reply::Dropped { count })) => {
                stats.server_dropped = stats.server_dropped.saturating_add(count);
                tracing::warn!("control: the server skipped {count} entries for this forwarder");
            }
            Ok(Some(Reply::Error { code, message })) => {
                return StreamEnd::Refused(format!("{code:?}: {message}"));
            }
            Ok(Some(other)) => {
                tracing::warn!("control: unexpected reply {other:?}");
            }
            Err(ClientError::Receive { source })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // A quiet stream: the read timed out, the frame reader keeps partial data.
            }
            Err(e) => return StreamEnd::Failed(e),
        }
    }
}

/// Follows the control socket until `stop` is set, reconnecting with backoff.
pub fn follow(
    socket: &Path,
    forwarder: &Forwarder,
    stop: &AtomicBool,
    tick: Duration,
    stats: &mut ControlStats,
) {
    let mut cursor = Cursor::default();
    let mut backoff = Backoff::default();
    while !stop.load(Ordering::Relaxed) {
        let before = stats.entries;
        let end = follow_once(socket, &mut cursor, stats, stop, tick, |e| {
            forwarder.push(e);
        });
        if matches!(end, StreamEnd::Stopped) {
            return;
        }
        if stats.entries > before {
            backoff.reset();
        }
        let pause = backoff.next_pause();
        tracing::warn!(
            "control {}: {end}; reconnecting in {}s (resuming after seq {})",
            socket.display(),
            pause.as_secs(),
            cursor
                .last_seq()
                .map_or_else(|| "-".to_owned(), |s| s.to_string())
        );
        let until = Instant::now().checked_add(pause);
        while until.is_some_and(|u| Instant::now() < u) && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Loads the config and forwards until SIGTERM or SIGINT, then prints a summary.
pub fn run(opts: &Options) -> Result<(), LogfwdError> {
    let cfg = rampart_config::load(&opts.config).map_err(|source| LogfwdError::Config {
        path: opts.config.clone(),
        source: Box::new(source),
    })?;
    let plan = plan(&cfg, &opts.socket);
    let stop = Arc::new(AtomicBool::new(false));
    watch_termination(Arc::clone(&stop))?;
    if plan.targets.is_empty() {
        tracing::info!("no collector in [logs] forward: nothing to do");
    }
    let forwarder = Forwarder::start(&plan)?;
    let names: Vec<String> = plan.targets.iter().map(Target::to_string).collect();
    tracing::info!("forwarding to {}", names.join(", "));
    let mut control = ControlStats::default();
    follow(&plan.socket, &forwarder, &stop, CONTROL_TICK, &mut control);
    let stats = forwarder.shutdown(EXIT_GRACE);
    tracing::info!(
        "exiting: {} entries received, {} skipped by the server",
        control.entries,
        control.server_dropped
    );
    for s in stats {
        tracing::info!("exiting: {s}");
    }
    Ok(())
}

/// Blocks SIGTERM and SIGINT in this thread (and so in every thread started after) and sets
/// `stop` from a thread that waits for them.
pub fn watch_termination(stop: Arc<AtomicBool>) -> Result<(), LogfwdError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()
        .map_err(|source| LogfwdError::Signals { source })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if set.wait().is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .map_err(|source| LogfwdError::SignalThread { source })?;
    Ok(())
}

#[cfg(test)]
mod tests;
