//! A blocking client of the control socket, for the `rampart` CLI, the log forwarder, the
//! metrics endpoint and the tests (never used inside PID 1).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{self, FrameReader, ProtoError, Reply, Request, MAX_REPLY};

/// Why talking to the control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// There is no socket at the path (PID 1 is not serving, or this is not a rampart host).
    #[error("no control socket at {path} (is this a rampart host, and is the path right?)")]
    Absent {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket exists but refused us (not root).
    #[error("permission denied on {path}: the control socket is for root only")]
    Denied {
        /// The socket path.
        path: PathBuf,
    },
    /// Connecting failed otherwise.
    #[error("connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Sending the request failed.
    #[error("send request: {source}")]
    Send {
        /// The I/O error.
        source: std::io::Error,
    },
    /// Receiving a reply failed.
    #[error("receive reply: {source}")]
    Receive {
        /// The I/O error.
        source: std::io::Error,
    },
    /// A frame could not be encoded or decoded.
    #[error("protocol: {source}")]
    Protocol {
        /// What was wrong.
        #[from]
        source: ProtoError,
    },
    /// The server closed the connection before replying.
    #[error("the server closed the connection without a reply")]
    Closed,
}

/// One connection to the control socket.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    reader: FrameReader,
}

impl Client {
    /// Connects to the socket at `path`; `timeout` bounds every read and write (none: block).
    pub fn connect(path: &Path, timeout: Option<Duration>) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ClientError::Absent {
                path: path.to_path_buf(),
            },
            std::io::ErrorKind::PermissionDenied => ClientError::Denied {
                path: path.to_path_buf(),
            },
            _ => ClientError::Connect {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let set = stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout));
        set.map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps a connected stream (a socketpair in tests).
    #[must_use]
    pub fn from_stream(stream: UnixStream) -> Self {
        Self {
            stream,
            reader: FrameReader::new(MAX_REPLY),
        }
    }

    /// Sends one request.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let bytes = proto::encode_request(request)?;
        self.stream
            .write_all(&bytes)
            .map_err(|source| ClientError::Send { source })
    }

    /// The next reply frame; `None` when the server closed the connection cleanly between
    /// frames.
    pub fn recv(&mut self) -> Result<Option<Reply>, ClientError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            if let Some(body) = self.reader.next_frame()? {
                return Ok(Some(proto::decode_reply(&body)?));
            }
            let n = match self.stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ClientError::Receive { source }),
            };
            if n == 0 {
                return if self.reader.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(ClientError::Closed)
                };
            }
            self.reader.push(buf.get(..n).unwrap_or_default());
        }
    }

    /// Sends `request` and returns the first reply.
    ///
    /// A server that refuses a connection (`denied`, `busy`) sends its error frame and closes
    /// at once, possibly before the request was sent: that frame is returned rather than the
    /// send error.
    pub fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        if let Err(error) = self.send(request) {
            return match self.recv() {
                Ok(Some(reply)) => Ok(reply),
                _ => Err(error),
            };
        }
        self.recv()?.ok_or(ClientError::Closed)
    }
}

/// Connects, sends `request` and returns the first reply.
pub fn call(
    path: &Path,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<Reply, ClientError> {
    Client::connect(path, timeout)?.call(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{decode_request, encode_reply, MAX_REQUEST};

    #[test]
    fn call_and_stream_over_a_socketpair() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut r = FrameReader::new(MAX_REQUEST);
            let mut buf = [0u8; 1024];
            let req = loop {
                let n = b.read(&mut buf).unwrap();
                r.push(&buf[..n]);
                if let Some(f) = r.next_frame().unwrap() {
                    break decode_request(&f).unwrap();
                }
            };
            assert_eq!(
                req,
                Request::Stop {
                    service: "x".into()
                }
            );
            for reply in [
                Reply::Done {
                    message: "stopped".into(),
                },
                Reply::End,
            ] {
                b.write_all(&encode_reply(&reply).unwrap()).unwrap();
            }
        });
        let mut c = Client::from_stream(a);
        let first = c
            .call(&Request::Stop {
                service: "x".into(),
            })
            .unwrap();
        assert_eq!(
            first,
            Reply::Done {
                message: "stopped".into()
            }
        );
        assert_eq!(c.recv().unwrap(), Some(Reply::End));
        server.join().unwrap();
        assert!(c.recv().unwrap().is_none());
    }

    #[test]
    fn absent_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(&dir.path().join("nope.sock"), None).unwrap_err();
        assert!(matches!(err, ClientError::Absent { .. }));
        assert!(err.to_string().contains("no control socket"));
    }
}
