//! Unary gRPC calls over HTTP/2 (RFC 9113) with prior knowledge, on a unix socket: what a CRI
//! client needs and nothing more.
//!
//! One call is one connection and one stream (id 1): the client preface, a SETTINGS frame
//! (no push, a 1 MiB stream window) and a connection WINDOW_UPDATE, the request HEADERS
//! (`POST`, the method's path, `content-type: application/grpc`, `te: trailers`) and the
//! length-prefixed message in DATA frames of at most 16 KiB. [`Exchange`] takes the server's
//! frames one by one (pure: it returns the frames to send back, SETTINGS and PING
//! acknowledgements and window updates) until stream 1 ends; [`Exchange::outcome`] then reads
//! `:status`, `grpc-status` and `grpc-message` (percent-decoded) from the trailers (or from the
//! headers of a trailers-only answer) and returns the response message.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hpack::{self, Decoder, HpackError};

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload either side may send without a SETTINGS saying otherwise.
pub const MAX_FRAME: usize = 16_384;
/// The receive window this client opens (per stream and for the connection).
pub const WINDOW: u32 = 1 << 20;
/// The one stream of a call.
const STREAM: u32 = 1;

/// Frame types.
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0;
    /// HEADERS.
    pub const HEADERS: u8 = 1;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 4;
    /// PING.
    pub const PING: u8 = 6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 9;
}

/// Frame flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS); ACK (SETTINGS, PING).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// Errors of a call.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The socket could not be connected.
    #[error("connect to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// `read from` or `write to`.
        action: &'static str,
        /// The socket.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The server broke HTTP/2 or gRPC framing.
    #[error("protocol: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// A header block could not be decoded.
    #[error("{source}")]
    Hpack {
        /// The error.
        #[from]
        source: HpackError,
    },
    /// The server reset the stream.
    #[error("stream reset by the server (http/2 error code {code})")]
    Reset {
        /// The HTTP/2 error code.
        code: u32,
    },
    /// The server closed the connection with an error.
    #[error("connection closed by the server (goaway, http/2 error code {code}): {debug}")]
    GoAway {
        /// The HTTP/2 error code.
        code: u32,
        /// Its debug data.
        debug: String,
    },
    /// The answer is not HTTP 200.
    #[error("http status {status}")]
    Http {
        /// The `:status`.
        status: String,
    },
    /// The call failed with a gRPC status.
    #[error("grpc status {code} ({}): {message}", status_name(*code))]
    Status {
        /// The code.
        code: u32,
        /// `grpc-message`, percent-decoded.
        message: String,
    },
}

impl GrpcError {
    /// The gRPC status message, for a failed call.
    pub fn status_message(&self) -> Option<&str> {
        match self {
            GrpcError::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// The name of a gRPC status code.
pub fn status_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "?",
    }
}

fn protocol(reason: impl Into<String>) -> GrpcError {
    GrpcError::Protocol {
        reason: reason.into(),
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its type.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream.
    pub stream: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame.
    pub fn new(kind: u8, flags: u8, stream: u32, payload: Vec<u8>) -> Self {
        Self {
            kind,
            flags,
            stream,
            payload,
        }
    }

    /// The frame on the wire: 24-bit length, type, flags, 31-bit stream id, payload.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.payload.len() as u32;
        let mut out = Vec::with_capacity(9 + self.payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&(self.stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads one frame (payloads above `max` are a protocol error).
    pub fn read(r: &mut impl Read, max: usize) -> std::io::Result<Result<Self, GrpcError>> {
        let mut head = [0u8; 9];
        r.read_exact(&mut head)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        if len > max {
            return Ok(Err(protocol(format!(
                "a frame of {len} bytes, above {max}"
            ))));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Ok(Self {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        }))
    }
}

/// A SETTINGS payload from (identifier, value) pairs.
fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, v) in pairs {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// A WINDOW_UPDATE frame.
fn window_update(stream: u32, increment: u32) -> Frame {
    Frame::new(
        kind::WINDOW_UPDATE,
        0,
        stream,
        increment.to_be_bytes().to_vec(),
    )
}

/// `message` with gRPC's prefix: not compressed, 32-bit big-endian length.
pub fn length_prefixed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Everything the client sends for a call of `path` (`/package.Service/Method`) with `message`.
pub fn request(path: &str, message: &[u8]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    // SETTINGS_ENABLE_PUSH = 0, SETTINGS_INITIAL_WINDOW_SIZE = WINDOW.
    out.extend(Frame::new(kind::SETTINGS, 0, 0, settings(&[(2, 0), (4, WINDOW)])).encode());
    out.extend(window_update(0, WINDOW - 65_535).encode());
    let block = hpack::encode(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "rampart-cri"),
    ]);
    out.extend(Frame::new(kind::HEADERS, flag::END_HEADERS, STREAM, block).encode());
    let body = length_prefixed(message);
    let chunks: Vec<&[u8]> = body.chunks(MAX_FRAME).collect();
    let last = chunks.len().saturating_sub(1);
    for (i, c) in chunks.iter().enumerate() {
        let flags = if i == last { flag::END_STREAM } else { 0 };
        out.extend(Frame::new(kind::DATA, flags, STREAM, c.to_vec()).encode());
    }
    out
}

/// Strips the padding (and for HEADERS the priority fields) of a frame's payload.
fn unpad(f: &Frame) -> Result<&[u8], GrpcError> {
    let mut p: &[u8] = &f.payload;
    let mut pad = 0usize;
    if f.flags & flag::PADDED != 0 {
        let (&n, rest) = p
            .split_first()
            .ok_or_else(|| protocol("a padded frame without its pad length"))?;
        pad = usize::from(n);
        p = rest;
    }
    if f.kind == kind::HEADERS && f.flags & flag::PRIORITY != 0 {
        p = p
            .get(5..)
            .ok_or_else(|| protocol("a HEADERS frame too short for its priority"))?;
    }
    let keep = p
        .len()
        .checked_sub(pad)
        .ok_or_else(|| protocol("padding longer than the frame"))?;
    Ok(&p[..keep])
}

/// The server's side of one call, frame by frame.
#[derive(Debug, Default)]
pub struct Exchange {
    decoder: Decoder,
    /// Header blocks of stream 1, decoded, in order (headers, then trailers).
    pub blocks: Vec<Vec<(String, String)>>,
    /// DATA payloads of stream 1, concatenated.
    pub data: Vec<u8>,
    /// A header block still waiting for its CONTINUATION frames, and whether it ends the stream.
    pending: Option<(Vec<u8>, bool)>,
    /// Whether stream 1 has ended.
    pub done: bool,
}

impl Exchange {
    /// A new exchange.
    pub fn new() -> Self {
        Self::default()
    }

    fn end_block(&mut self, block: &[u8], end_stream: bool) -> Result<(), GrpcError> {
        let fields = self.decoder.decode(block)?;
        self.blocks.push(fields);
        if end_stream {
            self.done = true;
        }
        Ok(())
    }

    /// Takes one frame from the server; returns the frames to send back.
    pub fn on_frame(&mut self, f: &Frame) -> Result<Vec<Frame>, GrpcError> {
        let mut replies = Vec::new();
        if let Some((mut block, end_stream)) = self.pending.take() {
            if f.kind != kind::CONTINUATION || f.stream != STREAM {
                return Err(protocol("a header block interrupted by another frame"));
            }
            block.extend_from_slice(&f.payload);
            if f.flags & flag::END_HEADERS != 0 {
                self.end_block(&block, end_stream)?;
            } else {
                self.pending = Some((block, end_stream));
            }
            return Ok(replies);
        }
        match f.kind {
            kind::SETTINGS if f.flags & flag::ACK == 0 => {
                replies.push(Frame::new(kind::SETTINGS, flag::ACK, 0, Vec::new()));
            }
            kind::PING if f.flags & flag::ACK == 0 => {
                replies.push(Frame::new(kind::PING, flag::ACK, 0, f.payload.clone()));
            }
            kind::GOAWAY => {
                let code = f
                    .payload
                    .get(4..8)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if code != 0 {
                    let debug = String::from_utf8_lossy(f.payload.get(8..).unwrap_or(&[]));
                    return Err(GrpcError::GoAway {
                        code,
                        debug: debug.into_owned(),
                    });
                }
            }
            kind::RST_STREAM if f.stream == STREAM => {
                let code = f
                    .payload
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                return Err(GrpcError::Reset { code });
            }
            kind::HEADERS if f.stream == STREAM => {
                let block = unpad(f)?.to_vec();
                let end_stream = f.flags & flag::END_STREAM != 0;
                if f.flags & flag::END_HEADERS != 0 {
                    self.end_block(&block, end_stream)?;
                } else {
                    self.pending = Some((block, end_stream));
                }
            }
            kind::DATA if f.stream == STREAM => {
                let data = unpad(f)?;
                self.data.extend_from_slice(data);
                if !f.payload.is_empty() {
                    let n = f.payload.len() as u32;
                    replies.push(window_update(0, n));
                    if f.flags & flag::END_STREAM == 0 {
                        replies.push(window_update(STREAM, n));
                    }
                }
                if f.flags & flag::END_STREAM != 0 {
                    self.done = true;
                }
            }
            kind::CONTINUATION => return Err(protocol("a CONTINUATION frame out of place")),
            _ => {}
        }
        Ok(replies)
    }

    /// The result of the ended call: the response message, or why there is none.
    pub fn outcome(&self) -> Result<Vec<u8>, GrpcError> {
        let headers = self
            .blocks
            .first()
            .ok_or_else(|| protocol("no response headers"))?;
        let get = |block: &[(String, String)], name: &str| {
            block
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let status = get(headers, ":status").unwrap_or_default();
        if status != "200" {
            return Err(GrpcError::Http { status });
        }
        let trailers = self.blocks.last().unwrap_or(headers);
        let code = get(trailers, "grpc-status")
            .ok_or_else(|| protocol("no grpc-status in the trailers"))?;
        let code: u32 = code
            .trim()
            .parse()
            .map_err(|_| protocol(format!("grpc-status `{code}` is not a number")))?;
        if code != 0 {
            let message = get(trailers, "grpc-message").unwrap_or_default();
            return Err(GrpcError::Status {
                code,
                message: percent_decode(&message),
            });
        }
        let prefix = self
            .data
            .get(..5)
            .ok_or_else(|| protocol("no response message"))?;
        if prefix[0] != 0 {
            return Err(protocol("a compressed response message"));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        self.data
            .get(5..5 + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| protocol("a truncated response message"))
    }
}

/// Decodes gRPC's percent-encoding of `grpc-message` (`%XX` byte escapes, UTF-8).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gRPC client of one unix socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of `socket`; every call must end within `timeout` of silence.
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        Self {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    fn io(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> GrpcError + '_ {
        move |source| GrpcError::Io {
            action,
            path: self.socket.clone(),
            source,
        }
    }

    /// Calls `path` (`/package.Service/Method`) with the encoded `message`; returns the
    /// encoded response.
    pub fn call(&self, path: &str, message: &[u8]) -> Result<Vec<u8>, GrpcError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| GrpcError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(self.io("configure"))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(self.io("configure"))?;
        stream
            .write_all(&request(path, message))
            .map_err(self.io("write to"))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(self.io("clone"))?);
        let mut ex = Exchange::new();
        while !ex.done {
            let frame = Frame::read(&mut reader, MAX_FRAME).map_err(self.io("read from"))??;
            for reply in ex.on_frame(&frame)? {
                stream
                    .write_all(&reply.encode())
                    .map_err(self.io("write to"))?;
            }
        }
        ex.outcome()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's header block: literal fields with incremental indexing and Huffman values,
    /// as Go's encoder writes them.
    fn server_block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            out.push(0x40);
            hpack::put_integer(&mut out, 0, 7, n.len() as u64);
            out.extend_from_slice(n.as_bytes());
            let h = hpack::huffman_encode(v.as_bytes());
            hpack::put_integer(&mut out, 0x80, 7, h.len() as u64);
            out.extend_from_slice(&h);
        }
        out
    }

    fn run(frames: &[Frame]) -> (Exchange, Vec<Frame>) {
        let mut ex = Exchange::new();
        let mut replies = Vec::new();
        for f in frames {
            replies.extend(ex.on_frame(f).unwrap());
        }
        (ex, replies)
    }

    #[test]
    fn request_layout() {
        let msg = vec![7u8; 40_000];
        let bytes = request("/runtime.v1.RuntimeService/Version", &msg);
        assert!(bytes.starts_with(PREFACE));
        let mut r = &bytes[PREFACE.len()..];
        let mut frames = Vec::new();
        while !r.is_empty() {
            frames.push(Frame::read(&mut r, MAX_FRAME).unwrap().unwrap());
        }
        let kinds: Vec<u8> = frames.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                kind::SETTINGS,
                kind::WINDOW_UPDATE,
                kind::HEADERS,
                kind::DATA,
                kind::DATA,
                kind::DATA
            ]
        );
        let h = Decoder::new().decode(&frames[2].payload).unwrap();
        assert!(h.contains(&(":path".into(), "/runtime.v1.RuntimeService/Version".into())));
        assert!(h.contains(&("content-type".into(), "application/grpc".into())));
        let data: Vec<u8> = frames[3..].iter().flat_map(|f| f.payload.clone()).collect();
        assert_eq!(data, length_prefixed(&msg));
        assert_eq!(frames[5].flags, flag::END_STREAM);
        assert_eq!(frames[3].flags, 0);
    }

    #[test]
    fn a_successful_call() {
        let body = length_prefixed(b"\x0a\x02v1");
        let frames = [
            Frame::new(kind::SETTINGS, 0, 0, settings(&[(3, 100)])),
            Frame::new(kind::PING, 0, 0, vec![1, 2, 3, 4, 5, 6, 7, 8]),
            Frame::new(
                kind::HEADERS,
                flag::END_HEADERS,
                1,
                server_block(&[(":status", "200"), ("content-type", "application/grpc")]),
            ),
            Frame::new(kind::DATA, 0, 1, body.clone()),
            // Trailers in two pieces, with the second using the dynamic table.
            Frame::new(kind::HEADERS, flag::END_STREAM, 1, vec![0x80 | 62]),
            Frame::new(
                kind::CONTINUATION,
                flag::END_HEADERS,
                1,
                server_block(&[("grpc-status", "0")]),
            ),
        ];
        let (ex, replies) = run(&frames);
        assert!(ex.done);
        assert_eq!(ex.outcome().unwrap(), b"\x0a\x02v1");
        assert_eq!(replies[0], Frame::new(kind::SETTINGS, flag::ACK, 0, vec![]));
        assert_eq!(
            replies[1],
            Frame::new(kind::PING, flag::ACK, 0, vec![1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert_eq!(replies[2].kind, kind::WINDOW_UPDATE);
    }

    #[test]
    fn a_failed_call_says_why() {
        let message = "failed to create containerd task: container x refused by the host's container policy: privileged: pod a/b container c is privileged";
        let encoded = message.replace(':', "%3A");
        let frames = [Frame::new(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM | flag::PADDED,
            1,
            {
                let mut p = vec![3];
                p.extend(server_block(&[
                    (":status", "200"),
                    ("grpc-status", "2"),
                    ("grpc-message", &encoded),
                ]));
                p.extend([0, 0, 0]);
                p
            },
        )];
        let (ex, _) = run(&frames);
        let err = ex.outcome().unwrap_err();
        assert_eq!(err.status_message(), Some(message));
        assert!(err
            .to_string()
            .starts_with("grpc status 2 (UNKNOWN): failed"));
        // Other failures.
        let mut ex = Exchange::new();
        let e = ex
            .on_frame(&Frame::new(kind::RST_STREAM, 0, 1, vec![0, 0, 0, 8]))
            .unwrap_err();
        assert!(matches!(e, GrpcError::Reset { code: 8 }));
        let e = ex
            .on_frame(&Frame::new(
                kind::GOAWAY,
                0,
                0,
                vec![0, 0, 0, 0, 0, 0, 0, 2, b'x'],
            ))
            .unwrap_err();
        assert!(e.to_string().contains("code 2): x"), "{e}");
        let (ex, _) = run(&[Frame::new(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            server_block(&[(":status", "415")]),
        )]);
        assert!(matches!(ex.outcome(), Err(GrpcError::Http { .. })));
    }

    #[test]
    fn percent_decoding() {
        // (encoded, decoded)
        let cases = [
            ("plain", "plain"),
            ("a%3Ab", "a:b"),
            ("%E2%9C%93 ok", "\u{2713} ok"),
            ("100%", "100%"),
            ("%zz", "%zz"),
        ];
        for (e, d) in cases {
            assert_eq!(percent_decode(e), d);
        }
    }
}
