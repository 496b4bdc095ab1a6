//! `rampart-metrics`: the Prometheus endpoint of `[metrics]`, outside PID 1.
//!
//! It listens on `[metrics] address:port` and answers `GET /metrics` with the text exposition
//! format 0.0.4 ([`render`]): each scrape asks PID 1 for `status` over the control socket
//! (per-service state, restarts, CPU, memory and pids of its cgroup) and reads the host's
//! memory, load and uptime from `/proc`. Any other path is a 404, another method a 405, a
//! malformed head a 400 and a head over 8 KiB a 431 ([`http`]). Each request head is read
//! with a size limit and a timeout; at most [`MAX_CONNECTIONS`] are served at once, more are
//! answered 503 and closed. Peers outside `[metrics] allow` (when set) are closed at once:
//! the firewall already filters them, this is a second check.

pub mod http;
pub mod render;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_config::firewall::Cidr;
use rampart_config::HostConfig;

use crate::control::client;
use crate::control::proto::{Reply, Request, StatusReply};
use crate::tool;
use http::Route;

/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long writing the response may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the `status` request to PID 1 may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 4;

/// Why the metrics endpoint cannot run.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The command line is wrong.
    #[error("usage: rampart-metrics --config PATH [--socket PATH] [--proc PATH]: {reason}")]
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
    /// `[metrics]` is not enabled.
    #[error("[metrics] is not enabled in {path}")]
    Disabled {
        /// The config file.
        path: PathBuf,
    },
    /// The listening socket could not be opened.
    #[error("listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Accepting connections failed for good.
    #[error("accept on {address}: {source}")]
    Accept {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The command line: `--config PATH [--socket PATH] [--proc PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The host config.
    pub config: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The proc file system.
    pub proc: PathBuf,
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Options, MetricsError> {
    let usage = |reason: String| MetricsError::Usage { reason };
    let mut config = None;
    let mut socket = PathBuf::from(rampart_config::operate::CONTROL_SOCKET);
    let mut proc = PathBuf::from("/proc");
    let known = ["--config", "--socket", "--proc"];
    tool::parse_flags(args, &known, |flag, value| match flag {
        "--config" => config = Some(value),
        "--socket" => socket = value,
        _ => proc = value,
    })
    .map_err(usage)?;
    let config = tool::required(config, "--config").map_err(usage)?;
    Ok(Options {
        config,
        socket,
        proc,
    })
}

/// What the endpoint does: plain data from the host config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Source networks let in; empty: any.
    pub allow: Vec<Cidr>,
    /// The control socket.
    pub socket: PathBuf,
    /// The proc file system.
    pub proc: PathBuf,
}

/// The endpoint's plan for a host config; `None` when `[metrics]` is not enabled.
#[must_use]
pub fn plan(cfg: &HostConfig, socket: &Path, proc: &Path) -> Option<Plan> {
    let m = &cfg.metrics;
    m.enabled.then(|| Plan {
        listen: SocketAddr::new(m.address, m.port.get()),
        allow: m.allow.clone(),
        socket: socket.to_path_buf(),
        proc: proc.to_path_buf(),
    })
}

/// Whether `net` contains `addr` (an IPv4-mapped IPv6 address counts as IPv4).
#[must_use]
pub fn cidr_contains(net: Cidr, addr: IpAddr) -> bool {
    let bits_match = |a: &[u8], b: &[u8], prefix: u8| {
        let full = usize::from(prefix / 8);
        let rest = prefix % 8;
        if a.get(..full) != b.get(..full) {
            return false;
        }
        if rest == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rest);
        match (a.get(full), b.get(full)) {
            (Some(x), Some(y)) => x & mask == y & mask,
            _ => false,
        }
    };
    match (net, addr.to_canonical()) {
        (Cidr::V4(n, p), IpAddr::V4(a)) => bits_match(&n.octets(), &a.octets(), p),
        (Cidr::V6(n, p), IpAddr::V6(a)) => bits_match(&n.octets(), &a.octets(), p),
        _ => false,
    }
}

/// Whether a peer may scrape: `allow` is empty or one of its networks contains the peer.
#[must_use]
pub fn allowed(allow: &[Cidr], peer: IpAddr) -> bool {
    allow.is_empty() || allow.iter().any(|n| cidr_contains(*n, peer))
}

/// Asks PID 1 for `status`; `None` (logged) when it does not answer.
#[must_use]
pub fn fetch_status(socket: &Path) -> Option<StatusReply> {
    match client::call(socket, &Request::Status {}, Some(CONTROL_TIMEOUT)) {
        Ok(Reply::Status(s)) => Some(s),
        Ok(other) => {
            tracing::warn!("control: unexpected reply to status: {other:?}");
            None
        }
        Err(e) => {
            tracing::warn!("control: {e}");
            None
        }
    }
}

/// Reads a request head (at most [`http::MAX_REQUEST`] bytes, within [`READ_TIMEOUT`]) and
/// routes it; `None` when the client went away or timed out before a complete head.
pub fn read_route(stream: &mut TcpStream, timeout: Duration) -> Option<Route> {
    let deadline = Instant::now().checked_add(timeout)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        let room = http::MAX_REQUEST.saturating_sub(buf.len()).min(chunk.len());
        let n = match stream.read(chunk.get_mut(..room.max(1))?) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        buf.extend_from_slice(chunk.get(..n)?);
        match http::route(&buf) {
            Route::Incomplete => {}
            r => return Some(r),
        }
    }
}

/// Serves one connection: reads the head, answers, closes.
pub fn serve_connection(mut stream: TcpStream, socket: &Path, proc: &Path) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Some(route) = read_route(&mut stream, READ_TIMEOUT) else {
        return;
    };
    let bytes = match route {
        Route::Metrics { head } => {
            let status = fetch_status(socket);
            let body = render::render(status.as_ref(), &render::read_host(proc));
            http::response(200, "OK", http::CONTENT_TYPE, &body, head)
        }
        other => http::error_response(other),
    };
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Let the client read the response before the close (a close with unread request bytes
    // would reset the connection).
    let mut sink = [0u8; 512];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => drained = drained.saturating_add(n),
            _ => break,
        }
    }
}

/// Accepts connections on `listener` for ever, serving at most [`MAX_CONNECTIONS`] at once.
pub fn serve(listener: &TcpListener, plan: &Plan) -> Result<(), MetricsError> {
    let active = Arc::new(AtomicUsize::new(0));
    let address = listener.local_addr().unwrap_or(plan.listen);
    let mut failures = 0u32;
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(c) => {
                failures = 0;
                c
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                // EMFILE and the like pass; a listener that keeps failing is broken.
                failures = failures.saturating_add(1);
                tracing::warn!("accept: {source}");
                if failures > 100 {
                    return Err(MetricsError::Accept { address, source });
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if !allowed(&plan.allow, peer.ip()) {
            tracing::warn!("refused a connection from {peer}: not in [metrics] allow");
            continue;
        }
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(&http::response(
                503,
                "Service Unavailable",
                "text/plain; charset=utf-8",
                "503 Service Unavailable\n",
                false,
            ));
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let guard = ActiveGuard(Arc::clone(&active));
        let socket = plan.socket.clone();
        let proc = plan.proc.clone();
        let spawned = std::thread::Builder::new()
            .name("scrape".into())
            .spawn(move || {
                let _guard = guard;
                serve_connection(stream, &socket, &proc);
            });
        if let Err(e) = spawned {
            // The closure (and its guard) was dropped: the count is already back down.
            tracing::warn!("cannot start a thread for {peer}: {e}");
        }
    }
}

/// Decrements the count of active connections when dropped.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Loads the config, binds `[metrics] address:port` and serves for ever.
pub fn run(opts: &Options) -> Result<(), MetricsError> {
    let cfg = rampart_config::load(&opts.config).map_err(|source| MetricsError::Config {
        path: opts.config.clone(),
        source: Box::new(source),
    })?;
    let plan = plan(&cfg, &opts.socket, &opts.proc).ok_or_else(|| MetricsError::Disabled {
        path: opts.config.clone(),
    })?;
    let listener = TcpListener::bind(plan.listen).map_err(|source| MetricsError::Bind {
        address: plan.listen,
        source,
    })?;
    tracing::info!("serving /metrics on {}", plan.listen);
    serve(&listener, &plan)
}

#[cfg(test)]
mod tests;
