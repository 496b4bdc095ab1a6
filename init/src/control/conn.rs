//! The state of one control connection, as pure functions the server drives: the bounded
//! output buffer ([`OutBuf`]), reading the one request ([`next_request`]), filling a `logs` or
//! `events` stream from the ring ([`fill`]), the epoll interest ([`interest`]) and the
//! deadline ([`deadline`]).
//!
//! A stream's cursor is a ring sequence number: the ring holds the entries, the output buffer
//! holds at most about [`OUTPUT_LIMIT`] bytes of encoded frames. A reader that falls behind
//! so far that the ring evicted entries it had not read gets a `dropped` frame with their
//! count, then carries on from the oldest entry kept.

use std::time::{Duration, Instant};

use nix::sys::epoll::EpollFlags;
use serde::Serialize;

use super::proto::{
    self, EntryKind, ErrorCode, FrameReader, LogEntry, ProtoError, Reply, Request, VERSION,
};
use super::ring::{Filter, Ring};

/// The output bytes a connection may have pending before the server stops adding stream
/// entries to it.
pub const OUTPUT_LIMIT: usize = 1 << 20;

/// Output pending for the peer: frames appended at the end, sent from the front.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    /// Bytes not sent yet.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The bytes not sent yet.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Appends an encoded frame.
    pub fn push(&mut self, frame: &[u8]) {
        self.buf.extend_from_slice(frame);
    }

    /// `n` bytes were sent; memory is reclaimed once everything was.
    pub fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > 64 * 1024 {
                self.buf.shrink_to(64 * 1024);
            }
        } else if self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// The wire form of a [`Reply::Entry`] frame, serialised from a borrowed entry (no copy).
#[derive(Serialize)]
struct EntryFrame<'a> {
    version: u32,
    reply: EntryRef<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "entry")]
struct EntryRef<'a> {
    seq: u64,
    time_ms: i64,
    source: &'a str,
    kind: EntryKind,
    severity: u8,
    message: &'a str,
}

/// Encodes one entry frame, identical to `encode_reply(&Reply::Entry(entry.clone()))`.
pub fn encode_entry(entry: &LogEntry) -> Result<Vec<u8>, ProtoError> {
    proto::encode(
        &EntryFrame {
            version: VERSION,
            reply: EntryRef {
                seq: entry.seq,
                time_ms: entry.time_ms,
                source: &entry.source,
                kind: entry.kind,
                severity: entry.severity,
                message: &entry.message,
            },
        },
        proto::MAX_REPLY,
    )
}

/// Encodes a reply frame; a reply too large to encode becomes an `internal` error frame.
#[must_use]
pub fn encode_or_error(reply: &Reply) -> Vec<u8> {
    match proto::encode_reply(reply) {
        Ok(bytes) => bytes,
        Err(error) => proto::encode_reply(&Reply::Error {
            code: ErrorCode::Internal,
            message: format!("reply not encoded: {error}"),
        })
        .unwrap_or_default(),
    }
}

/// The error reply for a frame that could not be read as a request.
#[must_use]
pub fn protocol_error(error: &ProtoError) -> Reply {
    let code = match error {
        ProtoError::Version { .. } => ErrorCode::Version,
        ProtoError::TooLarge { .. } | ProtoError::Malformed { .. } | ProtoError::Empty => {
            ErrorCode::BadRequest
        }
    };
    Reply::Error {
        code,
        message: error.to_string(),
    }
}

/// The request in the bytes received so far: `Ok(None)` until a whole frame arrived; an
/// error (answer it with [`protocol_error`], then close) if the frame is not a request of
/// this version.
pub fn next_request(reader: &mut FrameReader) -> Result<Option<Request>, ProtoError> {
    match reader.next_frame()? {
        None => Ok(None),
        Some(body) => proto::decode_request(&body).map(Some),
    }
}

/// A `logs` or `events` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Which entries.
    pub filter: Filter,
    /// The next sequence number to look at.
    pub cursor: u64,
    /// Stop (and send `end`) here; `None` follows.
    pub end: Option<u64>,
}

impl Stream {
    /// A stream over `ring` of the entries matching `filter`, the last `tail` of them only
    /// when given; `follow` keeps it open for new entries.
    #[must_use]
    pub fn new(ring: &Ring, filter: Filter, tail: Option<u32>, follow: bool) -> Self {
        let end = ring.next_seq();
        Stream {
            cursor: ring.tail_start(&filter, tail, end),
            filter,
            end: if follow { None } else { Some(end) },
        }
    }
}

/// What [`fill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filled {
    /// Entry frames added.
    pub entries: usize,
    /// The count in the `dropped` frame added, if one was.
    pub dropped: u64,
    /// A stream with an end reached it: `end` was added; close once flushed.
    pub ended: bool,
}

/// Adds the stream's next entries to `out` while it holds less than `limit` bytes: first a
/// `dropped` frame if the ring evicted entries the stream had not read, then entry frames,
/// then `end` once a stream with an end reached it.
pub fn fill(stream: &mut Stream, ring: &Ring, out: &mut OutBuf, limit: usize) -> Filled {
    let mut filled = Filled::default();
    if out.pending() >= limit {
        return filled;
    }
    let skipped = ring.catch_up(&mut stream.cursor, stream.end);
    if skipped > 0 {
        out.push(&encode_or_error(&Reply::Dropped { count: skipped }));
        filled.dropped = skipped;
    }
    ring.read(&mut stream.cursor, stream.end, &stream.filter, |entry| {
        if out.pending() >= limit {
            return false;
        }
        // An entry is far below the frame limit; one that is not is skipped.
        if let Ok(frame) = encode_entry(entry) {
            out.push(&frame);
            filled.entries = filled.entries.saturating_add(1);
        }
        true
    });
    if stream.end.is_some_and(|end| stream.cursor >= end) {
        out.push(&encode_or_error(&Reply::End));
        filled.ended = true;
    }
    filled
}

/// The epoll interest of a connection: input until the peer closed its side, output only
/// while some is pending (so a writable socket never wakes the loop for nothing).
#[must_use]
pub fn interest(read_closed: bool, pending: bool) -> EpollFlags {
    let mut flags = EpollFlags::empty();
    if !read_closed {
        flags |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
    }
    if pending {
        flags |= EpollFlags::EPOLLOUT;
    }
    flags
}

/// When the connection is closed if nothing happens: a request must arrive whole within
/// `timeout` of the accept; pending output must make progress within `timeout` of the last
/// progress; a stream waiting for new entries has no deadline.
#[must_use]
pub fn deadline(
    awaiting_request: bool,
    pending: bool,
    accepted: Instant,
    progress: Instant,
    timeout: Duration,
) -> Option<Instant> {
    if awaiting_request {
        accepted.checked_add(timeout)
    } else if pending {
        progress.checked_add(timeout)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{decode_reply, encode_request, MAX_REPLY, MAX_REQUEST};

    fn frames(out: &OutBuf) -> Vec<Reply> {
        let mut r = FrameReader::new(MAX_REPLY);
        r.push(out.data());
        let mut v = Vec::new();
        while let Some(body) = r.next_frame().unwrap() {
            v.push(decode_reply(&body).unwrap());
        }
        v
    }

    fn ring_of(n: u64, source: &str) -> Ring {
        let mut ring = Ring::new(1 << 20);
        for i in 0..n {
            ring.push(i as i64, source, EntryKind::Log, 6, &format!("line {i}"));
        }
        ring
    }

    #[test]
    fn entry_frames_are_the_reply_encoding() {
        let entry = LogEntry {
            seq: 9,
            time_ms: -1,
            source: "web".into(),
            kind: EntryKind::Audit,
            severity: 3,
            message: "a \"quoted\"\nline é".into(),
        };
        assert_eq!(
            encode_entry(&entry).unwrap(),
            proto::encode_reply(&Reply::Entry(entry)).unwrap()
        );
    }

    #[test]
    fn out_buf_sends_from_the_front() {
        let mut out = OutBuf::default();
        out.push(b"hello");
        out.push(b" world");
        out.consume(3);
        assert_eq!(out.data(), b"lo world");
        out.consume(100);
        assert_eq!(out.pending(), 0);
        assert_eq!(out.data(), b"");
    }

    #[test]
    fn requests_and_protocol_errors() {
        let mut r = FrameReader::new(MAX_REQUEST);
        assert_eq!(next_request(&mut r), Ok(None));
        r.push(&encode_request(&Request::Status {}).unwrap());
        assert_eq!(next_request(&mut r), Ok(Some(Request::Status {})));
        let code = |bytes: &[u8]| {
            let mut r = FrameReader::new(MAX_REQUEST);
            r.push(bytes);
            match next_request(&mut r).map_err(|e| protocol_error(&e)) {
                Err(Reply::Error { code, .. }) => Some(code),
                _ => None,
            }
        };
        let frame = |json: &str| {
            let mut v = (json.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(json.as_bytes());
            v
        };
        assert_eq!(code(&[0, 0, 0, 0]), Some(ErrorCode::BadRequest));
        assert_eq!(code(&[0xff, 0xff, 0xff, 0xff]), Some(ErrorCode::BadRequest));
        assert_eq!(code(&frame("garbage")), Some(ErrorCode::BadRequest));
        assert_eq!(
            code(&frame(r#"{"version":7,"request":{"op":"status"}}"#)),
            Some(ErrorCode::Version)
        );
        assert_eq!(code(&[0, 0, 0]), None);
    }

    #[test]
    fn a_one_shot_stream_ends() {
        let ring = ring_of(3, "a");
        let mut s = Stream::new(&ring, Filter::default(), Some(2), false);
        let mut out = OutBuf::default();
        let filled = fill(&mut s, &ring, &mut out, OUTPUT_LIMIT);
        assert_eq!(filled.entries, 2);
        assert!(filled.ended);
        let got = frames(&out);
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[0], Reply::Entry(e) if e.message == "line 1"));
        assert_eq!(got[2], Reply::End);
    }

    #[test]
    fn an_empty_match_ends_at_once() {
        let ring = ring_of(3, "a");
        let filter = Filter {
            source: Some("b".into()),
            ..Filter::default()
        };
        let mut s = Stream::new(&ring, filter, None, false);
        let mut out = OutBuf::default();
        assert!(fill(&mut s, &ring, &mut out, OUTPUT_LIMIT).ended);
        assert_eq!(frames(&out), [Reply::End]);
    }

    #[test]
    fn a_follower_gets_new_entries_and_never_ends() {
        let mut ring = ring_of(2, "a");
        let mut s = Stream::new(&ring, Filter::default(), Some(0), true);
        let mut out = OutBuf::default();
        let filled = fill(&mut s, &ring, &mut out, OUTPUT_LIMIT);
        assert_eq!(filled, Filled::default());
        ring.push(5, "a", EntryKind::Log, 6, "new");
        let filled = fill(&mut s, &ring, &mut out, OUTPUT_LIMIT);
        assert_eq!((filled.entries, filled.ended), (1, false));
        assert!(matches!(&frames(&out)[..], [Reply::Entry(e)] if e.message == "new"));
    }

    #[test]
    fn the_output_limit_holds_entries_back_and_a_lagging_follower_is_told() {
        let mut ring = Ring::new(40 * 200);
        for i in 0..20 {
            ring.push(i, "a", EntryKind::Log, 6, &format!("line {i}"));
        }
        let mut s = Stream::new(&ring, Filter::default(), None, true);
        let mut out = OutBuf::default();
        let one = encode_entry(ring.get(0).unwrap()).unwrap().len();
        // Room for about three frames.
        let filled = fill(&mut s, &ring, &mut out, one * 3);
        assert_eq!(filled.entries, 3);
        // Nothing more while the client does not read.
        assert_eq!(fill(&mut s, &ring, &mut out, one * 3).entries, 0);
        // Meanwhile the ring moves on past the cursor.
        for i in 20..400 {
            ring.push(i, "a", EntryKind::Log, 6, &format!("line {i}"));
        }
        out.consume(out.pending());
        let filled = fill(&mut s, &ring, &mut out, OUTPUT_LIMIT);
        let first_kept = ring.first_seq();
        assert_eq!(filled.dropped, first_kept - 3);
        let got = frames(&out);
        assert_eq!(
            got[0],
            Reply::Dropped {
                count: first_kept - 3
            }
        );
        assert!(matches!(&got[1], Reply::Entry(e) if e.seq == first_kept));
        assert_eq!(s.cursor, ring.next_seq());
    }

    #[test]
    fn interest_and_deadlines() {
        use EpollFlags as F;
        let cases = [
            (false, false, F::EPOLLIN | F::EPOLLRDHUP),
            (false, true, F::EPOLLIN | F::EPOLLRDHUP | F::EPOLLOUT),
            (true, true, F::EPOLLOUT),
            (true, false, F::empty()),
        ];
        for (closed, pending, want) in cases {
            assert_eq!(interest(closed, pending), want);
        }
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3);
        let timeout = Duration::from_secs(10);
        let cases = [
            (true, false, Some(t0 + timeout)),
            (true, true, Some(t0 + timeout)),
            (false, true, Some(later + timeout)),
            (false, false, None),
        ];
        for (awaiting, pending, want) in cases {
            assert_eq!(deadline(awaiting, pending, t0, later, timeout), want);
        }
    }
}
