//! The control protocol: frames of a 4-byte big-endian length followed by that many bytes of
//! JSON, one request per connection answered by one reply frame or, for the streaming
//! requests (`logs --follow`, `events --follow`), by a stream of frames until either side
//! closes.
//!
//! Every frame carries [`VERSION`]; a server refuses another version with
//! [`ErrorCode::Version`]. Sizes are bounded on both sides: a request is at most
//! [`MAX_REQUEST`] bytes (the server drops a connection whose announced length is larger
//! before reading its body), a reply frame at most [`MAX_REPLY`] bytes.
//!
//! Example request: `{"version":1,"request":{"op":"logs","service":"containerd","follow":true}}`.
//! Example reply frames: `{"version":1,"reply":{"type":"entry","seq":7,...}}`,
//! `{"version":1,"reply":{"type":"error","code":"unknown-service","message":"..."}}`.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The largest request body a server accepts, in bytes.
pub const MAX_REQUEST: usize = 16 * 1024;
/// The largest reply frame body a client accepts, in bytes.
pub const MAX_REPLY: usize = 4 * 1024 * 1024;
/// The length prefix, in bytes.
pub const HEADER: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The announced or encoded body is larger than the limit.
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not the JSON of a frame.
    #[error("malformed frame: {reason}")]
    Malformed {
        /// serde's explanation.
        reason: String,
    },
    /// The frame is of another protocol version.
    #[error("protocol version {got} is not supported (this side speaks {VERSION})")]
    Version {
        /// The version the peer sent.
        got: u32,
    },
    /// An empty body (length 0).
    #[error("empty frame")]
    Empty,
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Every service's state and the host's figures; answered by [`Reply::Status`].
    Status {},
    /// Log entries from PID 1's ring, oldest first: [`Reply::Entry`] frames, then
    /// [`Reply::End`] (or, with `follow`, more entries as they come, until the client closes).
    Logs {
        /// Only this source (a service name, or `rampart-init`); all sources when absent.
        #[serde(default)]
        service: Option<String>,
        /// Only entries at or after this wall-clock time (milliseconds since the Unix epoch).
        #[serde(default)]
        since_ms: Option<i64>,
        /// Only the last this many matching entries (before following).
        #[serde(default)]
        tail: Option<u32>,
        /// Keep the connection open and stream new entries.
        #[serde(default)]
        follow: bool,
    },
    /// Service and container lifecycle events and audit lines (entries of kind
    /// [`EntryKind::Event`] and [`EntryKind::Audit`]), streamed like [`Request::Logs`].
    Events {
        /// Only entries at or after this wall-clock time (milliseconds since the Unix epoch).
        #[serde(default)]
        since_ms: Option<i64>,
        /// Keep the connection open and stream new events.
        #[serde(default)]
        follow: bool,
    },
    /// Stop the service (if running) and start it again, resetting its backoff;
    /// answered by [`Reply::Done`].
    Restart {
        /// The service.
        service: String,
    },
    /// Stop the service and keep it stopped until a `start` or `restart`.
    Stop {
        /// The service.
        service: String,
    },
    /// Start a stopped service.
    Start {
        /// The service.
        service: String,
    },
    /// Reboot the host (an orderly shutdown first); answered by [`Reply::Done`] before it begins.
    Reboot {},
    /// Power the host off (an orderly shutdown first).
    Poweroff {},
    /// Run the compliance self-check now; answered by [`Reply::Audit`].
    Audit {},
}

impl Request {
    /// The op's name as it appears on the wire (for logs).
    #[must_use]
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status {} => "status",
            Request::Logs { .. } => "logs",
            Request::Events { .. } => "events",
            Request::Restart { .. } => "restart",
            Request::Stop { .. } => "stop",
            Request::Start { .. } => "start",
            Request::Reboot {} => "reboot",
            Request::Poweroff {} => "poweroff",
            Request::Audit {} => "audit",
        }
    }
}

/// A request frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFrame {
    /// [`VERSION`].
    pub version: u32,
    /// The request.
    pub request: Request,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The peer is not root.
    Denied,
    /// The frame was not a request this server understands.
    BadRequest,
    /// Another protocol version.
    Version,
    /// No service of that name.
    UnknownService,
    /// The service is not in a state that allows the operation.
    InvalidState,
    /// Too many clients are connected.
    Busy,
    /// The host is shutting down.
    ShuttingDown,
    /// The server failed to do what was asked.
    Internal,
}

/// The kind of a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// An output line of a service or a log line of PID 1.
    Log,
    /// A lifecycle event: a service started, exited, restarted, stopped; a container created,
    /// started, exited, deleted, OOM-killed.
    Event,
    /// An audit line: a runtime-shim decision, a control request, a compliance result.
    Audit,
}

/// One entry of PID 1's log ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Increasing by one per entry since boot (a gap in a stream means entries were dropped).
    pub seq: u64,
    /// Wall-clock time it was recorded, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Who wrote it: a service name, or `rampart-init` for PID 1 itself.
    pub source: String,
    /// What it is.
    pub kind: EntryKind,
    /// Syslog severity, 0 (emergency) to 7 (debug).
    pub severity: u8,
    /// The text, without a trailing newline (invalid UTF-8 replaced).
    pub message: String,
}

/// One service in a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// `pending`, `starting`, `running`, `backoff`, `stopped`, `exited`, `failed`.
    pub state: String,
    /// Its main process, when running.
    pub pid: Option<i32>,
    /// Milliseconds since it was (last) started, when running.
    pub uptime_ms: Option<u64>,
    /// How many times PID 1 restarted it.
    pub restarts: u32,
    /// How its last run ended (`exit status 1`, `killed by SIGKILL`), if it ended.
    pub last_exit: Option<String>,
    /// Whether its readiness check passed, when it has one.
    pub ready: Option<bool>,
    /// Its cgroup's `memory.current`, in bytes.
    pub memory_bytes: Option<u64>,
    /// Its cgroup's `pids.current`.
    pub pids: Option<u64>,
    /// Its cgroup's `cpu.stat` `usage_usec`.
    pub cpu_usec: Option<u64>,
}

/// The host part of a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The host name.
    pub hostname: String,
    /// Milliseconds since boot (`CLOCK_BOOTTIME`).
    pub uptime_ms: u64,
    /// `MemTotal` in bytes.
    pub memory_total_bytes: Option<u64>,
    /// `MemAvailable` in bytes.
    pub memory_available_bytes: Option<u64>,
    /// The 1, 5 and 15 minute load averages, as `/proc/loadavg` prints them.
    pub load: Option<[String; 3]>,
    /// Children PID 1 reaped that were no service of its own.
    pub orphans_reaped: u64,
    /// Log entries the ring discarded to make room since boot.
    pub log_entries_evicted: u64,
}

/// The reply to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The host.
    pub host: HostStatus,
    /// Every service, in start order.
    pub services: Vec<ServiceStatus>,
}

/// One item of the compliance self-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditItem {
    /// `pass`, `fail` or `skip`.
    pub result: String,
    /// What was checked.
    pub item: String,
    /// The CIS/KSPP reference.
    pub reference: String,
    /// What was found.
    pub detail: String,
}

/// The reply to [`Request::Audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReply {
    /// Items passed.
    pub passed: u32,
    /// Items failed.
    pub failed: u32,
    /// Items skipped.
    pub skipped: u32,
    /// Every item.
    pub items: Vec<AuditItem>,
}

/// What a server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Reply {
    /// The answer to `status`.
    Status(StatusReply),
    /// One entry of a `logs` or `events` stream.
    Entry(LogEntry),
    /// This subscriber was too slow: the server skipped `count` entries for it.
    Dropped {
        /// Entries skipped.
        count: u64,
    },
    /// The end of a stream that does not follow.
    End,
    /// The answer to `restart`, `stop`, `start`, `reboot`, `poweroff`.
    Done {
        /// What was done, for a human.
        message: String,
    },
    /// The answer to `audit`.
    Audit(AuditReply),
    /// The request failed.
    Error {
        /// Why, for a machine.
        code: ErrorCode,
        /// Why, for a human.
        message: String,
    },
}

/// A reply frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyFrame {
    /// [`VERSION`].
    pub version: u32,
    /// The reply.
    pub reply: Reply,
}

/// Encodes `body` as one frame (length prefix and JSON), refusing bodies over `max` bytes.
pub fn encode<T: Serialize>(body: &T, max: usize) -> Result<Vec<u8>, ProtoError> {
    let json = serde_json::to_vec(body).map_err(|e| ProtoError::Malformed {
        reason: e.to_string(),
    })?;
    if json.len() > max {
        return Err(ProtoError::TooLarge {
            len: json.len(),
            max,
        });
    }
    let len = u32::try_from(json.len()).map_err(|_| ProtoError::TooLarge {
        len: json.len(),
        max,
    })?;
    let mut out = Vec::with_capacity(HEADER.saturating_add(json.len()));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Encodes a request frame of [`VERSION`].
pub fn encode_request(request: &Request) -> Result<Vec<u8>, ProtoError> {
    encode(
        &RequestFrame {
            version: VERSION,
            request: request.clone(),
        },
        MAX_REQUEST,
    )
}

/// Encodes a reply frame of [`VERSION`].
pub fn encode_reply(reply: &Reply) -> Result<Vec<u8>, ProtoError> {
    encode(
        &ReplyFrame {
            version: VERSION,
            reply: reply.clone(),
        },
        MAX_REPLY,
    )
}

/// Reads the version field alone, so a frame of another version gets [`ProtoError::Version`]
/// even when the rest of it does not parse as this version's request.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

fn check_version(body: &[u8]) -> Result<(), ProtoError> {
    match serde_json::from_slice::<VersionOnly>(body) {
        Ok(v) if v.version != VERSION => Err(ProtoError::Version { got: v.version }),
        _ => Ok(()),
    }
}

/// Decodes a request frame's body (without its length prefix).
pub fn decode_request(body: &[u8]) -> Result<Request, ProtoError> {
    if body.is_empty() {
        return Err(ProtoError::Empty);
    }
    if body.len() > MAX_REQUEST {
        return Err(ProtoError::TooLarge {
            len: body.len(),
            max: MAX_REQUEST,
        });
    }
    check_version(body)?;
    let frame: RequestFrame = serde_json::from_slice(body).map_err(|e| ProtoError::Malformed {
        reason: e.to_string(),
    })?;
    Ok(frame.request)
}

/// Decodes a reply frame's body (without its length prefix).
pub fn decode_reply(body: &[u8]) -> Result<Reply, ProtoError> {
    if body.is_empty() {
        return Err(ProtoError::Empty);
    }
    if body.len() > MAX_REPLY {
        return Err(ProtoError::TooLarge {
            len: body.len(),
            max: MAX_REPLY,
        });
    }
    check_version(body)?;
    let frame: ReplyFrame = serde_json::from_slice(body).map_err(|e| ProtoError::Malformed {
        reason: e.to_string(),
    })?;
    Ok(frame.reply)
}

/// Splits a byte stream into frame bodies, refusing an announced length over its limit as
/// soon as the 4-byte prefix has arrived (before buffering the body).
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    max: usize,
}

impl FrameReader {
    /// A reader whose frames may be at most `max` bytes long.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    /// Bytes buffered and not yet returned as a frame.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame body, if one has arrived. An error means the stream cannot be
    /// resynchronised: close it.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        let Some(prefix) = self.buf.get(..HEADER) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; HEADER];
        len_bytes.copy_from_slice(prefix);
        let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
        if len > self.max {
            return Err(ProtoError::TooLarge { len, max: self.max });
        }
        if len == 0 {
            return Err(ProtoError::Empty);
        }
        let end = HEADER.saturating_add(len);
        if self.buf.len() < end {
            return Ok(None);
        }
        let body = self.buf.get(HEADER..end).map(<[u8]>::to_vec);
        self.buf.drain(..end);
        Ok(body)
    }
}

/// Whether a peer with these credentials may use the control socket: root only.
#[must_use]
pub fn authorized(uid: Option<u32>) -> bool {
    uid == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(json: &str) -> Vec<u8> {
        let mut v = (json.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v
    }

    #[test]
    fn requests_round_trip() {
        let all = [
            Request::Status {},
            Request::Logs {
                service: Some("containerd".into()),
                since_ms: Some(1_700_000_000_000),
                tail: Some(10),
                follow: true,
            },
            Request::Logs {
                service: None,
                since_ms: None,
                tail: None,
                follow: false,
            },
            Request::Events {
                since_ms: None,
                follow: true,
            },
            Request::Restart {
                service: "a".into(),
            },
            Request::Stop {
                service: "a".into(),
            },
            Request::Start {
                service: "a".into(),
            },
            Request::Reboot {},
            Request::Poweroff {},
            Request::Audit {},
        ];
        for r in all {
            let bytes = encode_request(&r).unwrap();
            let mut reader = FrameReader::new(MAX_REQUEST);
            reader.push(&bytes);
            let body = reader.next_frame().unwrap().unwrap();
            assert_eq!(decode_request(&body).unwrap(), r, "{}", r.op());
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn wire_form_is_documented_form() {
        let bytes = encode_request(&Request::Restart {
            service: "containerd".into(),
        })
        .unwrap();
        assert_eq!(
            &bytes[4..],
            br#"{"version":1,"request":{"op":"restart","service":"containerd"}}"#
        );
        let bytes = encode_reply(&Reply::Error {
            code: ErrorCode::UnknownService,
            message: "no service x".into(),
        })
        .unwrap();
        assert_eq!(
            &bytes[4..],
            br#"{"version":1,"reply":{"type":"error","code":"unknown-service","message":"no service x"}}"#
        );
        assert_eq!(
            decode_request(br#"{"version":1,"request":{"op":"logs"}}"#).unwrap(),
            Request::Logs {
                service: None,
                since_ms: None,
                tail: None,
                follow: false
            }
        );
    }

    #[test]
    fn replies_round_trip() {
        let entry = LogEntry {
            seq: 3,
            time_ms: 5,
            source: "containerd".into(),
            kind: EntryKind::Audit,
            severity: 6,
            message: "hé \"quoted\"\ttab".into(),
        };
        let status = StatusReply {
            host: HostStatus {
                hostname: "rampart".into(),
                uptime_ms: 1,
                memory_total_bytes: Some(2),
                memory_available_bytes: None,
                load: Some(["0.00".into(), "0.01".into(), "0.05".into()]),
                orphans_reaped: 0,
                log_entries_evicted: 0,
            },
            services: vec![ServiceStatus {
                name: "containerd".into(),
                state: "running".into(),
                pid: Some(42),
                uptime_ms: Some(1000),
                restarts: 1,
                last_exit: Some("killed by SIGKILL".into()),
                ready: Some(true),
                memory_bytes: Some(1 << 20),
                pids: Some(9),
                cpu_usec: Some(7),
            }],
        };
        let all = [
            Reply::Status(status),
            Reply::Entry(entry),
            Reply::Dropped { count: 9 },
            Reply::End,
            Reply::Done {
                message: "restarted".into(),
            },
            Reply::Audit(AuditReply {
                passed: 1,
                failed: 0,
                skipped: 0,
                items: vec![AuditItem {
                    result: "pass".into(),
                    item: "sysctl kernel.kptr_restrict".into(),
                    reference: "KSPP".into(),
                    detail: "2".into(),
                }],
            }),
            Reply::Error {
                code: ErrorCode::Busy,
                message: "too many clients".into(),
            },
        ];
        for r in all {
            let bytes = encode_reply(&r).unwrap();
            assert_eq!(decode_reply(&bytes[4..]).unwrap(), r);
        }
    }

    #[test]
    fn malformed_requests_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"{", "malformed"),
            (b"null", "malformed"),
            (b"[1,2]", "malformed"),
            (br#"{"version":1}"#, "malformed"),
            (
                br#"{"version":1,"request":{"op":"format-disk"}}"#,
                "malformed",
            ),
            (
                br#"{"version":1,"request":{"op":"status","extra":1}}"#,
                "malformed",
            ),
            (br#"{"version":1,"request":{"op":"restart"}}"#, "malformed"),
            (
                br#"{"version":1,"request":{"op":"status"},"x":0}"#,
                "malformed",
            ),
            (br#"{"version":2,"request":{"op":"status"}}"#, "version"),
            (br#"{"version":2,"request":{"op":"teleport"}}"#, "version"),
            (&[0xff, 0xfe, 0x00], "malformed"),
        ];
        for (body, want) in cases {
            let got = decode_request(body).unwrap_err();
            let kind = match got {
                ProtoError::Empty => "empty",
                ProtoError::Malformed { .. } => "malformed",
                ProtoError::Version { .. } => "version",
                ProtoError::TooLarge { .. } => "too-large",
            };
            assert_eq!(kind, *want, "{:?}", String::from_utf8_lossy(body));
        }
        let big = vec![b' '; MAX_REQUEST + 1];
        assert!(matches!(
            decode_request(&big),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[test]
    fn reader_splits_and_refuses_oversized_before_the_body() {
        let a = frame_of(r#"{"version":1,"request":{"op":"status"}}"#);
        let b = frame_of(r#"{"version":1,"request":{"op":"audit"}}"#);
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        // Fed one byte at a time, the two frames come out whole and in order.
        let mut r = FrameReader::new(MAX_REQUEST);
        let mut out = Vec::new();
        for byte in &stream {
            r.push(std::slice::from_ref(byte));
            while let Some(f) = r.next_frame().unwrap() {
                out.push(decode_request(&f).unwrap());
            }
        }
        assert_eq!(out, vec![Request::Status {}, Request::Audit {}]);

        // A 1 GiB announcement is refused from its 4 bytes alone.
        let mut r = FrameReader::new(MAX_REQUEST);
        r.push(&(1u32 << 30).to_be_bytes());
        assert_eq!(
            r.next_frame(),
            Err(ProtoError::TooLarge {
                len: 1 << 30,
                max: MAX_REQUEST
            })
        );
        let mut r = FrameReader::new(MAX_REQUEST);
        r.push(&[0, 0, 0, 0]);
        assert_eq!(r.next_frame(), Err(ProtoError::Empty));
        // An incomplete header or body is not a frame yet.
        let mut r = FrameReader::new(MAX_REQUEST);
        r.push(&a[..3]);
        assert_eq!(r.next_frame(), Ok(None));
        r.push(&a[3..a.len() - 1]);
        assert_eq!(r.next_frame(), Ok(None));
    }

    #[test]
    fn encode_refuses_oversized() {
        let r = Request::Restart {
            service: "x".repeat(MAX_REQUEST),
        };
        assert!(matches!(
            encode_request(&r),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[test]
    fn only_root_is_authorized() {
        for (uid, ok) in [
            (Some(0), true),
            (Some(1), false),
            (Some(65534), false),
            (None, false),
        ] {
            assert_eq!(authorized(uid), ok, "{uid:?}");
        }
    }
}
