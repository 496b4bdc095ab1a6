//! Logging for PID 1: every line goes to the console (stderr, which is `/dev/console` for PID 1)
//! and to the kernel log (`/dev/kmsg`).
//!
//! [`install`] sets a minimal `tracing` subscriber: no timestamps (the kernel adds its own to
//! kmsg records), no ANSI colours, one line per event (`warning: message key=value`).
//! [`attach_kmsg`] adds `/dev/kmsg` once `/dev` is mounted; each record gets the prefix
//! `<N>rampart-init: ` with the kmsg priority of the event's level. Writing to kmsg is best
//! effort: a failure never blocks or stops the boot.
//!
//! The lines of the console contract (`services started at`, `fatal:`, `no service started`,
//! the final action) are printed with [`console`], straight to the console and not through
//! `tracing`, so that they appear exactly as specified.
//!
//! Every line also goes to PID 1's in-memory log ring ([`crate::control::ring`], source
//! `rampart-init`, the level's syslog severity, without the level word), which the control
//! socket serves and the log forwarder forwards. Console and kmsg output are unchanged.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::control::ring;

/// The prefix of every line rampart-init prints.
pub const PREFIX: &str = "rampart-init: ";

/// The kernel log device.
pub const KMSG: &str = "/dev/kmsg";

/// The console device.
pub const CONSOLE: &str = "/dev/console";

static KMSG_FILE: OnceLock<File> = OnceLock::new();

/// The syslog priority (as `/dev/kmsg` reads it) of a `tracing` level.
#[must_use]
pub fn kmsg_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The word printed before a message of this level (none for `info`).
#[must_use]
pub fn level_word(level: Level) -> Option<&'static str> {
    match level {
        Level::ERROR => Some("error"),
        Level::WARN => Some("warning"),
        Level::INFO => None,
        Level::DEBUG => Some("debug"),
        Level::TRACE => Some("trace"),
    }
}

/// A console line: `rampart-init: <line>\n`.
#[must_use]
pub fn console_record(line: &str) -> String {
    format!("{PREFIX}{line}\n")
}

/// A kmsg record: `<priority>rampart-init: <line>\n`.
#[must_use]
pub fn kmsg_record(priority: u8, line: &str) -> String {
    format!("<{priority}>{PREFIX}{line}\n")
}

/// Opens `/dev/kmsg` (or `path`) for logging; later lines also go to the kernel log.
///
/// Calling it again once attached does nothing.
///
/// # Errors
/// The device cannot be opened (the caller logs it and carries on without kmsg).
pub fn attach_kmsg(path: &Path) -> io::Result<()> {
    if KMSG_FILE.get().is_some() {
        return Ok(());
    }
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    // A concurrent attach won the race: its file is as good as ours.
    let _ = KMSG_FILE.set(file);
    Ok(())
}

fn write_kmsg(priority: u8, line: &str) {
    if let Some(mut kmsg) = KMSG_FILE.get() {
        // Best effort: kmsg rate-limits and may refuse; boot never waits on it.
        let _ = kmsg.write_all(kmsg_record(priority, line).as_bytes());
    }
}

fn write_console(text: &str) {
    // Stderr is unbuffered: one write per call, so lines of concurrent writers do not mix.
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Prints one line of the console contract: `rampart-init: <line>` straight to the console,
/// and the same line to kmsg and the log ring (priority notice).
pub fn console(line: &str) {
    write_console(&console_record(line));
    write_kmsg(5, line);
    ring::record_init(5, line);
}

/// The line as the ring keeps it: without the leading level word the format adds.
#[must_use]
pub fn ring_message(level: Level, line: &str) -> &str {
    level_word(level)
        .and_then(|word| line.strip_prefix(word))
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(line)
}

/// Makes sure file descriptors 0, 1 and 2 are open, opening `console` for any that is not
/// (the kernel opens `/dev/console` for PID 1, but only if the initramfs had the node).
///
/// # Errors
/// The console cannot be opened or duplicated.
pub fn ensure_std_fds(console: &Path) -> io::Result<()> {
    let closed: Vec<i32> = (0..=2).filter(|fd| !fd_is_open(*fd)).collect();
    if closed.is_empty() {
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(console)?;
    for fd in closed {
        let result = match fd {
            0 => nix::unistd::dup2_stdin(&file),
            1 => nix::unistd::dup2_stdout(&file),
            _ => nix::unistd::dup2_stderr(&file),
        };
        result.map_err(io::Error::from)?;
    }
    Ok(())
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`; it touches no memory and is
    // valid for any integer (an unused one gives EBADF).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0
}

/// The event format: `[<program>: ][<level word>: ]<message> <key=value...>`, one line, no
/// timestamp. PID 1 uses it without a program (its writer adds [`PREFIX`]); the small
/// supervised binaries with theirs ([`crate::tool::init_logging`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct LineFormat {
    /// The program name printed first, if any.
    pub program: Option<&'static str>,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if let Some(program) = self.program {
            write!(writer, "{program}: ")?;
        }
        if let Some(word) = level_word(*event.metadata().level()) {
            write!(writer, "{word}: ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The `MakeWriter` of the subscriber: one [`LineWriter`] per event.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter::new(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter::new(*meta.level())
    }
}

/// Collects one formatted event and sends it, line by line, to the console and kmsg when
/// flushed or dropped.
#[derive(Debug)]
pub struct LineWriter {
    level: Level,
    priority: u8,
    buf: Vec<u8>,
}

impl LineWriter {
    fn new(level: Level) -> Self {
        Self {
            level,
            priority: kmsg_priority(level),
            buf: Vec::new(),
        }
    }

    fn emit(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        let mut console = String::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            console.push_str(&console_record(line));
            write_kmsg(self.priority, line);
            ring::record_init(self.priority, ring_message(self.level, line));
        }
        write_console(&console);
    }
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit();
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

/// Installs the global `tracing` subscriber (level `info` and above). Installing twice does
/// nothing.
pub fn install() {
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::INFO)
        .event_format(LineFormat::default())
        .with_writer(LogSink)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn records() {
        assert_eq!(
            console_record("services started at 2.345s"),
            "rampart-init: services started at 2.345s\n"
        );
        assert_eq!(kmsg_record(6, "mounted"), "<6>rampart-init: mounted\n");
        let cases = [
            (Level::ERROR, 3, Some("error")),
            (Level::WARN, 4, Some("warning")),
            (Level::INFO, 6, None),
            (Level::DEBUG, 7, Some("debug")),
            (Level::TRACE, 7, Some("trace")),
        ];
        for (level, priority, word) in cases {
            assert_eq!(kmsg_priority(level), priority);
            assert_eq!(level_word(level), word);
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    #[test]
    fn line_format_has_no_time_no_colour_and_a_level_word() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .event_format(LineFormat::default())
            .with_writer(capture.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("mounted {}", "/proc");
            tracing::warn!(key = "dev.tty.legacy_tiocsti", "sysctl missing");
            tracing::error!("boom");
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "mounted /proc\nwarning: sysctl missing key=\"dev.tty.legacy_tiocsti\"\nerror: boom\n"
        );
    }

    #[test]
    fn line_writer_buffers_until_flushed() {
        let mut writer = LineWriter::new(Level::WARN);
        assert_eq!(writer.priority, 4);
        writer.write_all(b"part one ").unwrap();
        writer.write_all(b"part two\n").unwrap();
        assert_eq!(writer.buf, b"part one part two\n");
        writer.flush().unwrap();
        assert!(writer.buf.is_empty());
    }

    #[test]
    fn ring_messages_lose_the_level_word_only() {
        let cases = [
            (Level::WARN, "warning: sysctl missing", "sysctl missing"),
            (Level::ERROR, "error: boom", "boom"),
            (Level::INFO, "mounted /proc", "mounted /proc"),
            (Level::WARN, "warningless", "warningless"),
            (Level::ERROR, "warning: not mine", "warning: not mine"),
        ];
        for (level, line, want) in cases {
            assert_eq!(ring_message(level, line), want);
        }
    }

    #[test]
    fn emitted_lines_reach_the_ring() {
        let mut writer = LineWriter::new(Level::WARN);
        writer
            .write_all(b"warning: log-ring-test one\nlog-ring-test two\n")
            .unwrap();
        writer.flush().unwrap();
        let found = ring::with_ring(|r| {
            let mut cursor = r.first_seq();
            let mut out = Vec::new();
            r.read(&mut cursor, None, &ring::Filter::default(), |e| {
                if e.message.starts_with("log-ring-test") {
                    out.push((e.source.clone(), e.severity, e.message.clone()));
                }
                true
            });
            out
        });
        assert_eq!(
            found,
            [
                (
                    "rampart-init".to_string(),
                    4,
                    "log-ring-test one".to_string()
                ),
                (
                    "rampart-init".to_string(),
                    4,
                    "log-ring-test two".to_string()
                ),
            ]
        );
    }

    #[test]
    fn open_std_fds_are_left_alone() {
        if !(0..=2).all(fd_is_open) {
            eprintln!("skipped: the test harness runs with a closed standard descriptor");
            return;
        }
        // Nothing to reopen: the console path is never opened.
        ensure_std_fds(Path::new("/nonexistent/console")).unwrap();
    }
}
