//! `rampart`: the operator's command line for a rampart host, a client of PID 1's control
//! socket (see [`crate::control`]).
//!
//! It runs on the host itself (`/usr/bin/rampart`, default socket
//! [`rampart_config::operate::CONTROL_SOCKET`]) or on the build machine against a VM through
//! `--socket`, the host end of the virtio-serial channel that `rampart-relay` serves in the
//! guest. [`args`] parses the command line, [`render`] turns replies into text, [`when`]
//! handles times; [`run`] ties them to a connection and is what the tests drive; [`main`] is
//! the binary's entry point.
//!
//! Exit status: [`EXIT_OK`], [`EXIT_FAILED`] (the host answered an error, or the audit found a
//! failed item), [`EXIT_USAGE`], [`EXIT_UNREACHABLE`] (no socket, permission denied, the
//! connection failed or timed out).

pub mod args;
pub mod render;
pub mod when;

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::control::client::{Client, ClientError};
use crate::control::proto::{ErrorCode, Reply, Request};

use args::{Command, Invocation, USAGE};

/// Success.
pub const EXIT_OK: i32 = 0;
/// The host answered an error, or the audit found a failed item.
pub const EXIT_FAILED: i32 = 1;
/// The command line is wrong.
pub const EXIT_USAGE: i32 = 2;
/// No control socket, permission denied, or the connection failed or timed out.
pub const EXIT_UNREACHABLE: i32 = 3;

/// The environment variable that names the socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "RAMPART_SOCKET";

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong.
    #[error("{reason}")]
    Usage {
        /// What is wrong.
        reason: String,
    },
    /// Connecting to or talking with the control socket failed.
    #[error("{}", control_message(.path, .source))]
    Control {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        source: ClientError,
    },
    /// The host did not answer within the timeout.
    #[error("no reply from {} within {}s", .path.display(), .timeout.as_secs_f64())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout.
        timeout: Duration,
    },
    /// The host refused the request (the peer is not root).
    #[error("permission denied on {}: {message} (the control socket is root only)", .path.display())]
    Refused {
        /// The socket path.
        path: PathBuf,
        /// The host's message.
        message: String,
    },
    /// Writing the output failed.
    #[error("write output: {source}")]
    Output {
        /// The I/O error.
        source: io::Error,
    },
}

impl CliError {
    /// The exit status for this error (a closed stdout is a quiet success: `rampart logs | head`).
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage { .. } => EXIT_USAGE,
            CliError::Control { .. } | CliError::Timeout { .. } | CliError::Refused { .. } => {
                EXIT_UNREACHABLE
            }
            CliError::Output { source } if source.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
            CliError::Output { .. } => EXIT_FAILED,
        }
    }
}

/// The one-line message for a client error (without the `rampart: ` prefix).
fn control_message(path: &Path, e: &ClientError) -> String {
    let p = path.display();
    match e {
        ClientError::Absent { .. } => {
            format!("no control socket at {p} (is this a rampart host?)")
        }
        ClientError::Denied { .. } => {
            format!("permission denied on {p}: the control socket is root only")
        }
        ClientError::Connect { source, .. } => {
            if source.kind() == io::ErrorKind::ConnectionRefused {
                format!("cannot connect to {p}: {source} (is PID 1 serving it?)")
            } else {
                format!("cannot connect to {p}: {source}")
            }
        }
        ClientError::Closed => format!("{p}: the host closed the connection without a reply"),
        other => format!("{p}: {other}"),
    }
}

/// The exit status for an error reply of the host.
#[must_use]
pub fn exit_code_for(code: ErrorCode) -> i32 {
    match code {
        ErrorCode::Denied => EXIT_UNREACHABLE,
        _ => EXIT_FAILED,
    }
}

/// How a command that talked to the host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Done,
    /// The host answered an error (already reported), or the audit found a failed item.
    Failed,
}

/// Where the output goes, and the hook told about a following stream's socket (`Some(fd)`
/// when following starts, `None` when it ends), so an interrupt can end it cleanly.
pub struct Io<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
    /// The follow hook.
    pub on_follow: &'a mut dyn FnMut(Option<RawFd>),
}

/// Milliseconds since the Unix epoch now.
fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The request a command sends (`None` for `help` and `--version`).
#[must_use]
pub fn request_for(command: &Command, now_ms: i64) -> Option<Request> {
    Some(match command {
        Command::Status => Request::Status {},
        Command::Logs {
            service,
            follow,
            since,
            tail,
        } => Request::Logs {
            service: service.clone(),
            since_ms: since.map(|w| w.resolve(now_ms)),
            tail: *tail,
            follow: *follow,
        },
        Command::Events { follow, since } => Request::Events {
            since_ms: since.map(|w| w.resolve(now_ms)),
            follow: *follow,
        },
        Command::Restart(s) => Request::Restart { service: s.clone() },
        Command::Stop(s) => Request::Stop { service: s.clone() },
        Command::Start(s) => Request::Start { service: s.clone() },
        Command::Reboot => Request::Reboot {},
        Command::Poweroff => Request::Poweroff {},
        Command::Audit => Request::Audit {},
        Command::Help | Command::Version => return None,
    })
}

fn reply_type(r: &Reply) -> &'static str {
    match r {
        Reply::Status(_) => "status",
        Reply::Entry(_) => "entry",
        Reply::Dropped { .. } => "dropped",
        Reply::End => "end",
        Reply::Done { .. } => "done",
        Reply::Audit(_) => "audit",
        Reply::Error { .. } => "error",
    }
}

fn line(w: &mut dyn Write, text: &str) -> Result<(), CliError> {
    w.write_all(text.as_bytes())
        .and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                w.write_all(b"\n")
            }
        })
        .and_then(|()| w.flush())
        .map_err(|source| CliError::Output { source })
}

fn json_line(w: &mut dyn Write, reply: &Reply) -> Result<(), CliError> {
    let text = serde_json::to_string(reply).map_err(|e| CliError::Output {
        source: io::Error::other(e),
    })?;
    line(w, &text)
}

/// One connection: the client and its socket's descriptor (for the interrupt hook).
fn connect(path: &Path, timeout: Option<Duration>) -> Result<(Client, RawFd), ClientError> {
    let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ClientError::Absent {
            path: path.to_path_buf(),
        },
        io::ErrorKind::PermissionDenied => ClientError::Denied {
            path: path.to_path_buf(),
        },
        _ => ClientError::Connect {
            path: path.to_path_buf(),
            source,
        },
    })?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let fd = stream.as_raw_fd();
    Ok((Client::from_stream(stream), fd))
}

/// A connection with what is needed to report its errors.
struct Session<'p> {
    client: Client,
    path: &'p Path,
    timeout: Option<Duration>,
}

impl Session<'_> {
    fn error(&self, source: ClientError) -> CliError {
        let timed_out = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        };
        match (&source, self.timeout) {
            (ClientError::Receive { source: e } | ClientError::Send { source: e }, Some(t))
                if timed_out(e) =>
            {
                CliError::Timeout {
                    path: self.path.to_path_buf(),
                    timeout: t,
                }
            }
            _ => CliError::Control {
                path: self.path.to_path_buf(),
                source,
            },
        }
    }

    fn send(&mut self, request: &Request) -> Result<(), CliError> {
        self.client.send(request).map_err(|e| self.error(e))
    }

    fn recv(&mut self) -> Result<Option<Reply>, CliError> {
        self.client.recv().map_err(|e| self.error(e))
    }
}

/// Reports an error reply; `Refused` for a denial.
fn error_reply(
    io: &mut Io<'_>,
    path: &Path,
    json: bool,
    reply: &Reply,
) -> Result<Outcome, CliError> {
    let Reply::Error { code, message } = reply else {
        return Ok(Outcome::Failed);
    };
    if json {
        json_line(io.out, reply)?;
    }
    if exit_code_for(*code) == EXIT_UNREACHABLE {
        return Err(CliError::Refused {
            path: path.to_path_buf(),
            message: message.clone(),
        });
    }
    line(io.err, &format!("rampart: {}", render::sanitize(message)))?;
    Ok(Outcome::Failed)
}

fn unexpected(io: &mut Io<'_>, reply: &Reply, request: &Request) -> Result<Outcome, CliError> {
    line(
        io.err,
        &format!(
            "rampart: unexpected `{}` reply to `{}`",
            reply_type(reply),
            request.op()
        ),
    )?;
    Ok(Outcome::Failed)
}

/// Sends `request` and renders the reply (or the stream of replies).
fn converse(
    inv: &Invocation,
    path: &Path,
    request: &Request,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    let follow = inv.command.follows();
    let timeout = (!follow).then_some(inv.timeout);
    let (client, fd) = connect(path, timeout).map_err(|source| CliError::Control {
        path: path.to_path_buf(),
        source,
    })?;
    let mut session = Session {
        client,
        path,
        timeout,
    };
    session.send(request)?;
    let streaming = matches!(request, Request::Logs { .. } | Request::Events { .. });
    if !streaming {
        let reply = session.recv()?.ok_or_else(|| CliError::Control {
            path: path.to_path_buf(),
            source: ClientError::Closed,
        })?;
        return single(inv.json, path, request, &reply, io);
    }
    if follow {
        (io.on_follow)(Some(fd));
    }
    let result = stream(&mut session, inv.json, follow, request, io);
    if follow {
        (io.on_follow)(None);
    }
    result
}

/// Renders the one reply of a non-streaming request.
fn single(
    json: bool,
    path: &Path,
    request: &Request,
    reply: &Reply,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    if let Reply::Error { .. } = reply {
        return error_reply(io, path, json, reply);
    }
    let (text, outcome) = match (request, reply) {
        (Request::Status {}, Reply::Status(s)) => (render::status(s), Outcome::Done),
        (Request::Audit {}, Reply::Audit(a)) => (
            render::audit(a),
            if a.failed > 0 {
                Outcome::Failed
            } else {
                Outcome::Done
            },
        ),
        (
            Request::Restart { .. }
            | Request::Stop { .. }
            | Request::Start { .. }
            | Request::Reboot {}
            | Request::Poweroff {},
            Reply::Done { message },
        ) => (render::sanitize(message), Outcome::Done),
        _ => return unexpected(io, reply, request),
    };
    if json {
        json_line(io.out, reply)?;
    } else {
        line(io.out, &text)?;
    }
    Ok(outcome)
}

/// Renders a `logs`/`events` stream until its end (or, following, until the connection ends).
fn stream(
    session: &mut Session<'_>,
    json: bool,
    follow: bool,
    request: &Request,
    io: &mut Io<'_>,
) -> Result<Outcome, CliError> {
    loop {
        let Some(reply) = session.recv()? else {
            if follow {
                return Ok(Outcome::Done);
            }
            return Err(CliError::Control {
                path: session.path.to_path_buf(),
                source: ClientError::Closed,
            });
        };
        match &reply {
            Reply::Error { .. } => return error_reply(io, session.path, json, &reply),
            Reply::Entry(_) | Reply::Dropped { .. } | Reply::End if json => {
                json_line(io.out, &reply)?;
            }
            Reply::Entry(e) => line(io.out, &render::entry(e))?,
            Reply::Dropped { count } => line(io.err, &render::dropped(*count))?,
            Reply::End => {}
            _ => return unexpected(io, &reply, request),
        }
        if reply == Reply::End {
            return Ok(Outcome::Done);
        }
    }
}

/// Runs the command line `args` (without argv[0]); `env_socket` is `RAMPART_SOCKET`.
/// Returns the exit status.
pub fn run(args: &[String], env_socket: Option<&str>, io: &mut Io<'_>) -> i32 {
    let inv = match args::parse(args) {
        Ok(inv) => inv,
        Err(reason) => {
            let _ = write!(io.err, "rampart: {reason}\n\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    let result = match &inv.command {
        Command::Help => line(io.out, USAGE).map(|()| Outcome::Done),
        Command::Version => {
            line(io.out, &format!("rampart {}", env!("CARGO_PKG_VERSION"))).map(|()| Outcome::Done)
        }
        command => {
            let path = inv.socket_path(env_socket, rampart_config::operate::CONTROL_SOCKET);
            match request_for(command, now_ms()) {
                Some(request) => converse(&inv, &path, &request, io),
                None => Ok(Outcome::Done),
            }
        }
    };
    match result {
        Ok(Outcome::Done) => EXIT_OK,
        Ok(Outcome::Failed) => EXIT_FAILED,
        Err(e) => {
            let code = e.exit_code();
            if code != EXIT_OK {
                let _ = writeln!(io.err, "rampart: {e}");
            }
            code
        }
    }
}

/// The socket of the stream being followed (-1: none), for the signal handler.
static FOLLOWED: AtomicI32 = AtomicI32::new(-1);

/// On SIGINT, SIGTERM or SIGHUP while following: shut the followed socket down, so the read
/// returns end-of-stream and the command ends cleanly (exit 0).
extern "C" fn on_interrupt(_signal: libc::c_int) {
    let fd = FOLLOWED.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: shutdown(2) is async-signal-safe; `fd` is the followed socket, which stays
        // open until after FOLLOWED is reset to -1.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    } else {
        // SAFETY: _exit(2) is async-signal-safe; 128 + SIGINT is the conventional status.
        unsafe { libc::_exit(130) }
    }
}

/// The follow hook of the real binary: installs [`on_interrupt`] while following.
fn watch_interrupts(fd: Option<RawFd>) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    FOLLOWED.store(fd.unwrap_or(-1), Ordering::SeqCst);
    if fd.is_none() {
        return;
    }
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only calls async-signal-safe functions (an atomic load,
        // shutdown, _exit).
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// The `rampart` binary: parses `std::env::args`, talks to the socket, prints to stdout and
/// stderr; returns the exit status.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env_socket = std::env::var(SOCKET_ENV).ok();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut err = io::stderr();
    let mut hook = watch_interrupts;
    run(
        &args,
        env_socket.as_deref(),
        &mut Io {
            out: &mut out,
            err: &mut err,
            on_follow: &mut hook,
        },
    )
}
