//! `rampart-events`: the container audit trail, outside PID 1.
//!
//! It runs `ctr events` (containerd's own client) as a child and turns each of its lines about
//! a container or a task (`/containers/*`, `/tasks/*`: create, start, exit, delete, OOM,
//! exec) into one structured record printed as `@rampart-event <json>` on stdout; the image
//! of a container is remembered from its `/containers/create` event. When `ctr events` ends
//! (containerd restarted), it is started again after a pause with backoff. A second thread
//! follows rampart-runc's audit log (JSON lines; from its end at start, then every new line,
//! also across rotation and before the file exists) and prints each line as
//! `@rampart-audit <line>`. PID 1 turns lines with these prefixes from this service into
//! event and audit entries of its log ring.
//!
//! `ctr events` prints `TIME NAMESPACE TOPIC JSON`, TIME in Go's default form
//! (`2026-11-28 18:40:13.44278684 +0000 UTC`, trailing zeros of the fraction trimmed), e.g.
//! `... default /tasks/exit {"container_id":"t1","id":"t1","pid":16747,"exit_status":3,"exited_at":"2026-11-28T18:40:13.442633192Z"}`;
//! zero values are left out of the JSON (`exit_status` 0 is absent).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::logfwd::queue::Backoff;
use crate::tool;

/// The prefix of a container event line on stdout.
pub const EVENT_PREFIX: &str = "@rampart-event ";

/// The prefix of a runtime-shim audit line on stdout.
pub const AUDIT_PREFIX: &str = "@rampart-audit ";

/// The longest `ctr events` or audit log line handled; longer lines are skipped.
pub const MAX_LINE: usize = 1 << 20;

/// How often the audit log is checked for new lines.
pub const POLL: Duration = Duration::from_secs(1);

/// A run of `ctr events` this long resets the restart backoff.
pub const STABLE_RUN: Duration = Duration::from_secs(60);

/// The most containers whose image is remembered at once.
pub const MAX_TRACKED: usize = 65_536;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CtrEventsError {
    /// The command line is wrong.
    #[error("usage: rampart-events --ctr PATH --audit-log PATH [--address SOCKET]: {reason}")]
    Usage {
        /// What is wrong.
        reason: String,
    },
    /// Stdout (PID 1's pipe) cannot be written.
    #[error("write stdout: {source}")]
    Stdout {
        /// The I/O error.
        source: io::Error,
    },
    /// The audit log follower thread could not be started.
    #[error("start the follower of {path}: {source}")]
    Thread {
        /// The audit log.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Why a `ctr events` line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Fewer fields than `DATE CLOCK OFFSET ZONE NAMESPACE TOPIC`.
    #[error("too few fields")]
    Fields,
    /// The time is not Go's default form.
    #[error("malformed time `{0}`")]
    Time(String),
    /// The topic does not start with `/`.
    #[error("malformed topic `{0}`")]
    Topic(String),
    /// The payload is not a JSON object.
    #[error("malformed payload: {0}")]
    Payload(String),
}

/// The command line: `--ctr PATH --audit-log PATH [--address SOCKET]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// containerd's `ctr`.
    pub ctr: PathBuf,
    /// rampart-runc's audit log.
    pub audit_log: PathBuf,
    /// containerd's socket, when not ctr's default.
    pub address: Option<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Options, CtrEventsError> {
    let usage = |reason: String| CtrEventsError::Usage { reason };
    let (mut ctr, mut audit_log, mut address) = (None, None, None);
    let known = ["--ctr", "--audit-log", "--address"];
    tool::parse_flags(args, &known, |flag, value| match flag {
        "--ctr" => ctr = Some(value),
        "--audit-log" => audit_log = Some(value),
        _ => address = Some(value),
    })
    .map_err(usage)?;
    Ok(Options {
        ctr: tool::required(ctr, "--ctr").map_err(usage)?,
        audit_log: tool::required(audit_log, "--audit-log").map_err(usage)?,
        address,
    })
}

/// One line of `ctr events`.
#[derive(Debug, Clone, PartialEq)]
pub struct CtrLine {
    /// The time, RFC 3339.
    pub time: String,
    /// containerd's namespace (`default`, `k8s.io`).
    pub namespace: String,
    /// The topic (`/tasks/start`).
    pub topic: String,
    /// The event's fields (an empty object when it had none).
    pub payload: serde_json::Map<String, Value>,
}

/// Go's `time.Time` default form (`2026-11-28 18:40:13.44278684 +0000 UTC`) as RFC 3339
/// (`2026-11-28T18:40:13.44278684Z`; another offset is kept: `+01:00`).
#[must_use]
pub fn go_time_to_rfc3339(date: &str, clock: &str, offset: &str) -> Option<String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let d: Vec<&str> = date.split('-').collect();
    let date_ok = matches!(d.as_slice(), [y, m, dd] if y.len() == 4 && m.len() == 2 && dd.len() == 2 && digits(y) && digits(m) && digits(dd));
    let (hms, frac) = clock
        .split_once('.')
        .map_or((clock, None), |(a, b)| (a, Some(b)));
    let c: Vec<&str> = hms.split(':').collect();
    let clock_ok = matches!(c.as_slice(), [h, m, s] if h.len() == 2 && m.len() == 2 && s.len() == 2 && digits(h) && digits(m) && digits(s))
        && frac.is_none_or(|f| f.len() <= 9 && digits(f));
    let (sign, hhmm) = offset.split_at_checked(1)?;
    let offset_ok = (sign == "+" || sign == "-") && hhmm.len() == 4 && digits(hhmm);
    if !(date_ok && clock_ok && offset_ok) {
        return None;
    }
    let zone = if hhmm == "0000" {
        "Z".to_owned()
    } else {
        let (h, m) = hhmm.split_at_checked(2)?;
        format!("{sign}{h}:{m}")
    };
    Some(format!("{date}T{clock}{zone}"))
}

/// Parses one line of `ctr events`.
pub fn parse_line(line: &str) -> Result<CtrLine, LineError> {
    let line = line.trim_end_matches(['\n', '\r']);
    // DATE CLOCK OFFSET ZONE NAMESPACE TOPIC [JSON]; the JSON may hold spaces.
    let mut parts = line.splitn(7, ' ');
    let mut field = || {
        parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or(LineError::Fields)
    };
    let (date, clock, offset, _zone) = (field()?, field()?, field()?, field()?);
    let namespace = field()?;
    let topic = field()?;
    let rest = parts.next().unwrap_or("").trim();
    let time = go_time_to_rfc3339(date, clock, offset)
        .ok_or_else(|| LineError::Time(format!("{date} {clock} {offset}")))?;
    if !topic.starts_with('/') {
        return Err(LineError::Topic(topic.to_owned()));
    }
    let payload = if rest.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<Value>(rest) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(LineError::Payload("not an object".into())),
            Err(e) => return Err(LineError::Payload(e.to_string())),
        }
    };
    Ok(CtrLine {
        time,
        namespace: namespace.to_owned(),
        topic: topic.to_owned(),
        payload,
    })
}

/// One structured audit record of a container or task event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When containerd published it, RFC 3339.
    pub time: String,
    /// containerd's namespace.
    pub namespace: String,
    /// The topic (`/tasks/exit`).
    pub topic: String,
    /// The container id.
    pub container: Option<String>,
    /// The container's image, when its creation was seen.
    pub image: Option<String>,
    /// The process id.
    pub pid: Option<u32>,
    /// The exit status (exit and delete events).
    pub exit_status: Option<u32>,
    /// When the process exited, RFC 3339.
    pub exited_at: Option<String>,
    /// The exec process id, for the events of an exec'd process.
    pub exec_id: Option<String>,
}

/// Whether a topic belongs in the audit trail: container and task events.
#[must_use]
pub fn recorded(topic: &str) -> bool {
    topic.starts_with("/containers/") || topic.starts_with("/tasks/")
}

/// Turns `ctr events` lines into records, remembering each container's image.
#[derive(Debug, Default)]
pub struct Tracker {
    images: HashMap<(String, String), String>,
}

impl Tracker {
    /// The record of a line, `None` for topics not recorded.
    pub fn record(&mut self, line: &CtrLine) -> Option<AuditRecord> {
        if !recorded(&line.topic) {
            return None;
        }
        let text = |key: &str| {
            line.payload
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let number = |key: &str| {
            line.payload
                .get(key)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let is_container_topic = line.topic.starts_with("/containers/");
        let container = if is_container_topic {
            text("id")
        } else {
            text("container_id")
        };
        let key = container
            .as_ref()
            .map(|c| (line.namespace.clone(), c.clone()));
        if let (true, Some(key), Some(image)) = (is_container_topic, &key, text("image")) {
            if line.topic != "/containers/delete"
                && (self.images.len() < MAX_TRACKED || self.images.contains_key(key))
            {
                self.images.insert(key.clone(), image);
            }
        }
        let image = match (&key, line.topic.as_str()) {
            (Some(k), "/containers/delete") => self.images.remove(k),
            (Some(k), _) => self.images.get(k).cloned(),
            (None, _) => None,
        };
        let ends = matches!(line.topic.as_str(), "/tasks/exit" | "/tasks/delete");
        // Zero values are left out of ctr's JSON: an exit without a status is status 0.
        let exit_status = number("exit_status").or(ends.then_some(0));
        let exited_at = text("exited_at").filter(|t| !t.starts_with("0001-01-01"));
        let exec_id = text("exec_id").or_else(|| {
            let id = text("id")?;
            (!is_container_topic && Some(&id) != container.as_ref()).then_some(id)
        });
        Some(AuditRecord {
            time: line.time.clone(),
            namespace: line.namespace.clone(),
            topic: line.topic.clone(),
            container,
            image,
            pid: number("pid"),
            exit_status,
            exited_at,
            exec_id,
        })
    }

    /// Containers whose image is remembered.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.images.len()
    }
}

/// The stdout line of a record (with its newline).
#[must_use]
pub fn event_line(record: &AuditRecord) -> String {
    // A struct of strings and integers always serialises.
    let json = serde_json::to_string(record).unwrap_or_default();
    format!("{EVENT_PREFIX}{json}\n")
}

/// The stdout line of an audit log line (with its newline).
#[must_use]
pub fn audit_line(line: &str) -> String {
    format!("{AUDIT_PREFIX}{}\n", line.trim_end_matches(['\n', '\r']))
}

/// Follows a file of lines like `tail -F`: from its end when it exists at start, from its
/// beginning when it appears later or is replaced (rotation), from the beginning again when
/// it is truncated.
#[derive(Debug)]
pub struct FileFollower {
    path: PathBuf,
    file: Option<File>,
    /// Device and inode of the open file.
    id: Option<(u64, u64)>,
    pos: u64,
    partial: Vec<u8>,
    /// The current line is over [`MAX_LINE`]: skip to its newline.
    skipping: bool,
}

impl FileFollower {
    /// Starts following `path`: lines already in it are not returned.
    #[must_use]
    pub fn new(path: &Path) -> Self {
        let mut f = Self {
            path: path.to_path_buf(),
            file: None,
            id: None,
            pos: 0,
            partial: Vec::new(),
            skipping: false,
        };
        if let Ok(file) = File::open(path) {
            if let Ok(meta) = file.metadata() {
                f.id = Some((meta.dev(), meta.ino()));
                f.pos = meta.len();
                f.file = Some(file);
            }
        }
        f
    }

    /// The complete lines written since the last call (without newlines).
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current != self.id {
            // Replaced or removed: finish the old file first, then start on the new one.
            if self.file.is_some() {
                self.read_new(&mut lines)?;
            }
            self.file = None;
            self.id = None;
            self.pos = 0;
            self.partial.clear();
            self.skipping = false;
            if current.is_some() {
                if let Ok(file) = File::open(&self.path) {
                    let meta = file.metadata()?;
                    self.id = Some((meta.dev(), meta.ino()));
                    self.file = Some(file);
                }
            }
        }
        if self.file.is_some() {
            self.read_new(&mut lines)?;
        }
        Ok(lines)
    }

    fn read_new(&mut self, lines: &mut Vec<String>) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let len = file.metadata()?.len();
        if len < self.pos {
            // Truncated: start over.
            self.pos = 0;
            self.partial.clear();
            self.skipping = false;
        }
        file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.pos = self.pos.saturating_add(u64::try_from(n).unwrap_or(0));
            for chunk in buf
                .get(..n)
                .unwrap_or_default()
                .split_inclusive(|b| *b == b'\n')
            {
                let (body, ends) = match chunk.strip_suffix(b"\n") {
                    Some(b) => (b, true),
                    None => (chunk, false),
                };
                if !self.skipping {
                    self.partial.extend_from_slice(body);
                    if self.partial.len() > MAX_LINE {
                        tracing::warn!(
                            "{}: skipped a line longer than {MAX_LINE} bytes",
                            self.path.display()
                        );
                        self.partial.clear();
                        self.skipping = true;
                    }
                }
                if ends {
                    if !self.skipping {
                        let text = String::from_utf8_lossy(&self.partial);
                        let text = text.trim_end_matches('\r');
                        if !text.trim().is_empty() {
                            lines.push(text.to_owned());
                        }
                    }
                    self.partial.clear();
                    self.skipping = false;
                }
            }
        }
        Ok(())
    }
}

/// Writes one line to stdout (PID 1's pipe) in one locked write.
fn emit(text: &str) -> Result<(), CtrEventsError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| CtrEventsError::Stdout { source })
}

/// Follows the audit log for ever, printing each new line.
fn follow_audit_log(path: &Path) {
    let mut follower = FileFollower::new(path);
    let mut reported = false;
    loop {
        match follower.poll() {
            Ok(lines) => {
                reported = false;
                for l in lines {
                    if emit(&audit_line(&l)).is_err() {
                        return;
                    }
                }
            }
            Err(e) if !reported => {
                tracing::warn!("{}: {e}", path.display());
                reported = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(POLL);
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at end of stream. Longer lines come
/// back empty (and are skipped by the caller).
fn read_bounded_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let limit = u64::try_from(MAX_LINE.saturating_add(1)).unwrap_or(u64::MAX);
        let n = reader.by_ref().take(limit).read_until(b'\n', &mut buf)?;
        if n == 0 {
            if too_long {
                return Ok(Some(String::new()));
            }
            return Ok((!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.ends_with(b"\n") {
            if too_long {
                // The caller skips empty lines.
                return Ok(Some(String::new()));
            }
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_LINE {
            too_long = true;
            buf.clear();
        }
    }
}

/// Runs `ctr events` once and hands the line of each record to `out` until it ends.
fn run_ctr_once(
    opts: &Options,
    tracker: &mut Tracker,
    out: &mut impl FnMut(&str) -> Result<(), CtrEventsError>,
) -> Result<(), CtrEventsError> {
    let mut cmd = Command::new(&opts.ctr);
    if let Some(a) = &opts.address {
        cmd.arg("--address").arg(a);
    }
    cmd.arg("events")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot run {} events: {e}", opts.ctr.display());
            return Ok(());
        }
    };
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(());
    };
    let mut reader = BufReader::new(stdout);
    let result = loop {
        match read_bounded_line(&mut reader) {
            Ok(None) => break Ok(()),
            Ok(Some(line)) if line.trim().is_empty() => {}
            Ok(Some(line)) => match parse_line(&line) {
                Ok(parsed) => {
                    if let Some(rec) = tracker.record(&parsed) {
                        if let Err(e) = out(&event_line(&rec)) {
                            break Err(e);
                        }
                    }
                }
                Err(e) => tracing::warn!("ctr events: {e}: {}", line.trim_end()),
            },
            Err(e) => {
                tracing::warn!("read ctr events: {e}");
                break Ok(());
            }
        }
    };
    let _ = child.kill();
    match child.wait() {
        Ok(status) => tracing::warn!("{} events ended: {status}", opts.ctr.display()),
        Err(e) => tracing::warn!("wait for {} events: {e}", opts.ctr.display()),
    }
    result
}

/// Follows the audit log in a thread and runs `ctr events` for ever, restarting it with
/// backoff; returns only when stdout cannot be written.
pub fn run(opts: &Options) -> Result<(), CtrEventsError> {
    let path = opts.audit_log.clone();
    std::thread::Builder::new()
        .name("audit-log".into())
        .spawn(move || follow_audit_log(&path))
        .map_err(|source| CtrEventsError::Thread {
            path: opts.audit_log.clone(),
            source,
        })?;
    let mut tracker = Tracker::default();
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        run_ctr_once(opts, &mut tracker, &mut emit)?;
        if started.elapsed() >= STABLE_RUN {
            backoff.reset();
        }
        let pause = backoff.next_pause();
        tracing::info!("restarting ctr events in {}s", pause.as_secs());
        std::thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines captured from `ctr events` of containerd 1.6.20 (Debian 12) while running,
    /// exec'ing into, killing and OOM-killing busybox containers.
    const CAPTURE: &str = r#"2026-11-28 18:40:13.312047672 +0000 UTC default /images/create {"name":"docker.io/library/bb:1"}
2026-11-28 18:40:13.371287101 +0000 UTC default /snapshot/prepare {"key":"t1","parent":"sha256:f7443eaf35fbb34b11eb3013250cb77cd7ba3eb23f23b3a275993ae41078c32e"}
2026-11-28 18:40:13.379174932 +0000 UTC default /containers/create {"id":"t1","image":"docker.io/library/bb:1","runtime":{"name":"io.containerd.runc.v2","options":{"type_url":"containerd.runc.v1.Options"}}}
2026-11-28 18:40:13.431388851 +0000 UTC default /tasks/create {"container_id":"t1","bundle":"/run/containerd/io.containerd.runtime.v2.task/default/t1","rootfs":[{"type":"bind","source":"/var/lib/containerd/io.containerd.snapshotter.v1.native/snapshots/2","options":["rbind","rw"]}],"io":{"stdin":"/run/containerd/fifo/773295444/t1-stdin","stdout":"/run/containerd/fifo/773295444/t1-stdout","stderr":"/run/containerd/fifo/773295444/t1-stderr"},"pid":16747}
2026-11-28 18:40:13.441919938 +0000 UTC default /tasks/start {"container_id":"t1","pid":16747}
2026-11-28 18:40:13.44278684 +0000 UTC default /tasks/exit {"container_id":"t1","id":"t1","pid":16747,"exit_status":3,"exited_at":"2026-11-28T18:40:13.442633192Z"}
2026-11-28 18:40:13.452929796 +0000 UTC default /tasks/delete {"container_id":"t1","pid":16747,"exit_status":3,"exited_at":"2026-11-28T18:40:13.442633192Z"}
2026-11-28 18:40:13.469115566 +0000 UTC default /containers/delete {"id":"t1"}
2026-11-28 18:40:14.573926095 +0000 UTC default /tasks/exec-added {"container_id":"t2","exec_id":"e1"}
2026-11-28 18:40:14.606713625 +0000 UTC default /tasks/exec-started {"container_id":"t2","exec_id":"e1","pid":16853}
2026-11-28 18:40:14.613035915 +0000 UTC default /tasks/exit {"container_id":"t2","id":"e1","pid":16853,"exited_at":"2026-11-28T18:40:14.613003427Z"}
2026-11-28 18:40:19.225345561 +0000 UTC k8s.io /tasks/oom {"container_id":"t3"}
"#;

    #[test]
    fn times() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            (
                "2026-11-28",
                "18:40:13.44278684",
                "+0000",
                Some("2026-11-28T18:40:13.44278684Z"),
            ),
            (
                "2026-11-28",
                "18:00:00",
                "+0000",
                Some("2026-11-28T18:00:00Z"),
            ),
            (
                "2026-11-28",
                "19:00:00.5",
                "+0100",
                Some("2026-11-28T19:00:00.5+01:00"),
            ),
            (
                "2026-11-28",
                "13:00:00.123456789",
                "-0530",
                Some("2026-11-28T13:00:00.123456789-05:30"),
            ),
            ("2026-11-28", "18:00:00.1234567890", "+0000", None),
            ("2026-11-28", "18:00", "+0000", None),
            ("26-11-28", "18:00:00", "+0000", None),
            ("2026-11-28", "18:00:00", "UTC", None),
            ("2026-11-28", "18:00:00", "+00", None),
            ("2026-11-28", "18:00:00.", "+0000", None),
            ("2026-1x-28", "18:00:00", "+0000", None),
        ];
        for (d, c, o, want) in cases {
            assert_eq!(go_time_to_rfc3339(d, c, o).as_deref(), *want, "{d} {c} {o}");
        }
    }

    fn records() -> Vec<String> {
        let mut t = Tracker::default();
        CAPTURE
            .lines()
            .map(|l| parse_line(l).unwrap())
            .filter_map(|l| t.record(&l))
            .map(|r| event_line(&r))
            .collect()
    }

    #[test]
    fn capture_to_records() {
        let got = records();
        let want = [
            r#"{"time":"2026-11-28T18:40:13.379174932Z","namespace":"default","topic":"/containers/create","container":"t1","image":"docker.io/library/bb:1","pid":null,"exit_status":null,"exited_at":null,"exec_id":null}"#,
            r#"{"time":"2026-11-28T18:40:13.431388851Z","namespace":"default","topic":"/tasks/create","container":"t1","image":"docker.io/library/bb:1","pid":16747,"exit_status":null,"exited_at":null,"exec_id":null}"#,
            r#"{"time":"2026-11-28T18:40:13.441919938Z","namespace":"default","topic":"/tasks/start","container":"t1","image":"docker.io/library/bb:1","pid":16747,"exit_status":null,"exited_at":null,"exec_id":null}"#,
            r#"{"time":"2026-11-28T18:40:13.44278684Z","namespace":"default","topic":"/tasks/exit","container":"t1","image":"docker.io/library/bb:1","pid":16747,"exit_status":3,"exited_at":"2026-11-28T18:40:13.442633192Z","exec_id":null}"#,
            r#"{"time":"2026-11-28T18:40:13.452929796Z","namespace":"default","topic":"/tasks/delete","container":"t1","image":"docker.io/library/bb:1","pid":16747,"exit_status":3,"exited_at":"2026-11-28T18:40:13.442633192Z","exec_id":null}"#,
            r#"{"time":"2026-11-28T18:40:13.469115566Z","namespace":"default","topic":"/containers/delete","container":"t1","image":"docker.io/library/bb:1","pid":null,"exit_status":null,"exited_at":null,"exec_id":null}"#,
            r#"{"time":"2026-11-28T18:40:14.573926095Z","namespace":"default","topic":"/tasks/exec-added","container":"t2","image":null,"pid":null,"exit_status":null,"exited_at":null,"exec_id":"e1"}"#,
            r#"{"time":"2026-11-28T18:40:14.606713625Z","namespace":"default","topic":"/tasks/exec-started","container":"t2","image":null,"pid":16853,"exit_status":null,"exited_at":null,"exec_id":"e1"}"#,
            r#"{"time":"2026-11-28T18:40:14.613035915Z","namespace":"default","topic":"/tasks/exit","container":"t2","image":null,"pid":16853,"exit_status":0,"exited_at":"2026-11-28T18:40:14.613003427Z","exec_id":"e1"}"#,
            r#"{"time":"2026-11-28T18:40:19.225345561Z","namespace":"k8s.io","topic":"/tasks/oom","container":"t3","image":null,"pid":null,"exit_status":null,"exited_at":null,"exec_id":null}"#,
        ];
        let want: Vec<String> = want
            .iter()
            .map(|j| format!("@rampart-event {j}\n"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn image_is_forgotten_after_delete_and_kept_per_namespace() {
        let mut t = Tracker::default();
        let rec = |t: &mut Tracker, l: &str| t.record(&parse_line(l).unwrap()).unwrap();
        rec(
            &mut t,
            r#"2026-11-28 18:00:00 +0000 UTC a /containers/create {"id":"c","image":"img-a"}"#,
        );
        rec(
            &mut t,
            r#"2026-11-28 18:00:00 +0000 UTC b /containers/create {"id":"c","image":"img-b"}"#,
        );
        assert_eq!(t.tracked(), 2);
        let r = rec(
            &mut t,
            r#"2026-11-28 18:00:01 +0000 UTC b /tasks/start {"container_id":"c","pid":5}"#,
        );
        assert_eq!(r.image.as_deref(), Some("img-b"));
        let r = rec(
            &mut t,
            r#"2026-11-28 18:00:02 +0000 UTC a /containers/delete {"id":"c"}"#,
        );
        assert_eq!(r.image.as_deref(), Some("img-a"));
        assert_eq!(t.tracked(), 1);
        let r = rec(
            &mut t,
            r#"2026-11-28 18:00:03 +0000 UTC a /tasks/start {"container_id":"c","pid":6}"#,
        );
        assert_eq!(r.image, None);
        // A delete of a task that never ran has Go's zero time: no exited_at.
        let r = rec(
            &mut t,
            r#"2026-11-28 18:00:04 +0000 UTC b /tasks/delete {"container_id":"c","exited_at":"0001-01-01T00:00:00Z"}"#,
        );
        assert_eq!((r.exit_status, r.exited_at), (Some(0), None));
    }

    #[test]
    fn other_topics_are_not_recorded() {
        let mut t = Tracker::default();
        for l in CAPTURE.lines().take(2) {
            assert!(t.record(&parse_line(l).unwrap()).is_none(), "{l}");
        }
        let l =
            parse_line("2026-11-28 18:00:00 +0000 UTC default /namespaces/create {\"name\":\"x\"}")
                .unwrap();
        assert!(t.record(&l).is_none());
    }

    #[test]
    fn garbage_lines() {
        fn kind(e: &LineError) -> &'static str {
            match e {
                LineError::Fields => "fields",
                LineError::Time(_) => "time",
                LineError::Topic(_) => "topic",
                LineError::Payload(_) => "payload",
            }
        }
        let cases: &[(&str, &str)] = &[
            ("", "fields"),
            (
                "ctr: failed to dial \"/run/containerd/containerd.sock\": context deadline exceeded",
                "time",
            ),
            ("2026-11-28 18:00:00 +0000 UTC default", "fields"),
            ("2026-11-28 18:00:00 +0000 UTC default tasks/start {}", "topic"),
            (
                "2026-11-28 18:00:00 +0000 UTC default /tasks/start {\"container_id\":",
                "payload",
            ),
            ("2026-11-28 18:00:00 +0000 UTC default /tasks/start [1,2]", "payload"),
            ("yesterday 18:00:00 +0000 UTC default /tasks/start {}", "time"),
        ];
        for (line, want) in cases {
            let e = parse_line(line).unwrap_err();
            assert_eq!(kind(&e), *want, "{line}: {e:?}");
        }
        // No payload at all is an empty object.
        let l = parse_line("2026-11-28 18:00:00 +0000 UTC default /tasks/paused\n").unwrap();
        assert!(l.payload.is_empty());
        // A payload with spaces inside strings stays whole.
        let l = parse_line("2026-11-28 18:00:00 +0000 UTC default /containers/update {\"id\":\"a b\",\"image\":\"x y\"}").unwrap();
        assert_eq!(l.payload["image"], "x y");
    }

    #[test]
    fn audit_lines_are_prefixed() {
        assert_eq!(
            audit_line("{\"time\":\"t\",\"action\":\"refused\"}\r\n"),
            "@rampart-audit {\"time\":\"t\",\"action\":\"refused\"}\n"
        );
    }

    #[test]
    fn follower_tails_rotates_and_waits_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let append = |text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        // Absent at start: nothing, then everything written once it appears.
        let mut f = FileFollower::new(&path);
        assert!(f.poll().unwrap().is_empty());
        append("{\"a\":1}\n{\"a\":2}\n{\"a\":");
        assert_eq!(f.poll().unwrap(), vec!["{\"a\":1}", "{\"a\":2}"]);
        // The rest of a partial line arrives later.
        append("3}\n");
        assert_eq!(f.poll().unwrap(), vec!["{\"a\":3}"]);
        assert!(f.poll().unwrap().is_empty());

        // Present at start: only what comes after.
        let mut g = FileFollower::new(&path);
        assert!(g.poll().unwrap().is_empty());
        append("{\"a\":4}\n");
        assert_eq!(g.poll().unwrap(), vec!["{\"a\":4}"]);
        assert_eq!(f.poll().unwrap(), vec!["{\"a\":4}"]);

        // Rotation: a last line in the old file, then the new file from its start.
        append("{\"a\":5}\n");
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        append("{\"b\":1}\n");
        assert_eq!(g.poll().unwrap(), vec!["{\"a\":5}", "{\"b\":1}"]);

        // Truncation: from the start again.
        std::fs::write(&path, "").unwrap();
        assert!(g.poll().unwrap().is_empty());
        append("{\"c\":1}\n");
        assert_eq!(g.poll().unwrap(), vec!["{\"c\":1}"]);

        // Removed: nothing, no error.
        std::fs::remove_file(&path).unwrap();
        assert!(g.poll().unwrap().is_empty());
    }

    #[test]
    fn bounded_lines() {
        let long = "x".repeat(MAX_LINE + 10);
        let text = format!("a\n{long}\nb\nc");
        let mut r = BufReader::new(text.as_bytes());
        let mut got = Vec::new();
        while let Some(l) = read_bounded_line(&mut r).unwrap() {
            got.push(l);
        }
        assert_eq!(got, vec!["a\n", "", "b\n", "c"]);
    }

    #[test]
    fn arguments() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let o = parse_args(&args(&[
            "--ctr",
            "/usr/bin/ctr",
            "--audit-log",
            "/var/log/rampart/runc-audit.log",
        ]))
        .unwrap();
        assert_eq!(o.ctr, PathBuf::from("/usr/bin/ctr"));
        assert_eq!(o.address, None);
        let o = parse_args(&args(&[
            "--ctr",
            "c",
            "--audit-log",
            "a",
            "--address",
            "/s",
        ]))
        .unwrap();
        assert_eq!(o.address, Some(PathBuf::from("/s")));
        assert!(parse_args(&args(&["--ctr", "c"])).is_err());
        assert!(parse_args(&args(&["--audit-log", "a"])).is_err());
        assert!(parse_args(&args(&["--ctr"])).is_err());
    }

    #[test]
    fn runs_a_fake_ctr_and_prints_records() {
        // A stand-in `ctr` that prints two captured lines and exits.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("ctr");
        let lines: Vec<&str> = CAPTURE.lines().skip(2).take(3).collect();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = events ] || exit 9\ncat <<'EOF'\n{}\nEOF\n",
                lines.join("\n")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let opts = Options {
            ctr: script,
            audit_log: dir.path().join("audit.log"),
            address: None,
        };
        let mut t = Tracker::default();
        let mut got = Vec::new();
        run_ctr_once(&opts, &mut t, &mut |l: &str| {
            got.push(l.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(t.tracked(), 1);
        assert_eq!(got.len(), 3);
        assert!(got[0].starts_with("@rampart-event {\"time\":\"2026-11-28T18:40:13.379174932Z\""));
        assert!(got[2].contains("\"topic\":\"/tasks/start\",\"container\":\"t1\",\"image\":\"docker.io/library/bb:1\",\"pid\":16747"));
    }
}
