//! Service output: split into lines, prefixed with the service name, to the console and to a
//! bounded, size-rotated log file per service.
//!
//! Memory stays bounded whatever a service writes: a [`LineSplitter`] holds at most
//! [`MAX_LINE`] bytes (a longer line is cut and the rest of it dropped up to its newline), the
//! supervisor reads each pipe in bounded chunks, and a [`LogFile`] is rotated
//! (`NAME.log` -> `NAME.log.1`) before it grows past [`LOG_MAX`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the per-service logs live.
pub const LOG_DIR: &str = "/run/rampart/log";
/// The longest line kept; longer lines are cut there.
pub const MAX_LINE: usize = 4096;
/// The size at which a log file is rotated.
pub const LOG_MAX: u64 = 1 << 20;
/// What marks a cut line.
pub const CUT_MARK: &[u8] = b" [cut]";

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// The current line was cut: drop bytes until its newline.
    dropping: bool,
}

impl LineSplitter {
    /// Feeds bytes; `emit(line, cut)` is called for every complete (or cut) line, without its
    /// newline.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let newline = data.iter().position(|b| *b == b'\n');
            let (chunk, rest, ends) = match newline {
                Some(i) => (
                    data.get(..i).unwrap_or_default(),
                    data.get(i + 1..).unwrap_or_default(),
                    true,
                ),
                None => (data, &[][..], false),
            };
            data = rest;
            if self.dropping {
                if ends {
                    self.dropping = false;
                }
                continue;
            }
            let room = MAX_LINE.saturating_sub(self.buf.len());
            if chunk.len() > room {
                self.buf
                    .extend_from_slice(chunk.get(..room).unwrap_or_default());
                emit(&self.buf, true);
                self.buf.clear();
                self.dropping = !ends;
                continue;
            }
            self.buf.extend_from_slice(chunk);
            if ends {
                emit(&self.buf, false);
                self.buf.clear();
            }
        }
    }

    /// End of stream: emits a last unterminated line, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, false);
            self.buf.clear();
        }
        self.dropping = false;
    }
}

/// `NAME: line` (plus [`CUT_MARK`] for a cut line) and a newline.
pub fn format_line(service: &str, line: &[u8], cut: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + line.len() + 2 + CUT_MARK.len() + 1);
    out.extend_from_slice(service.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(line);
    if cut {
        out.extend_from_slice(CUT_MARK);
    }
    out.push(b'\n');
    out
}

/// A log file rotated by size.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    rotated: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
}

impl LogFile {
    /// `DIR/NAME.log`, rotated to `DIR/NAME.log.1` past `max` bytes; opened lazily.
    pub fn new(dir: &Path, service: &str, max: u64) -> Self {
        let path = dir.join(format!("{service}.log"));
        let rotated = dir.join(format!("{service}.log.1"));
        Self {
            path,
            rotated,
            file: None,
            size: 0,
            max,
        }
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&self.path)?;
            self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Appends one formatted line, rotating first when it would pass the limit.
    pub fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.open()?;
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > self.max {
            self.file = None;
            std::fs::rename(&self.path, &self.rotated)?;
            self.open()?;
        }
        let file = self.open()?;
        file.write_all(line)?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l, cut| {
                out.push((String::from_utf8_lossy(l).into_owned(), cut))
            });
        }
        s.finish(|l, cut| out.push((String::from_utf8_lossy(l).into_owned(), cut)));
        out
    }

    #[test]
    fn lines_across_chunks() {
        let l = |s: &str| (s.to_string(), false);
        type Case<'a> = (&'a [&'a [u8]], Vec<(String, bool)>);
        let cases: &[Case] = &[
            (&[b"a\nb\n"], vec![l("a"), l("b")]),
            (&[b"a", b"b\nc", b"d\n"], vec![l("ab"), l("cd")]),
            (&[b"\n\n"], vec![l(""), l("")]),
            (&[b"tail"], vec![l("tail")]),
            (&[b""], vec![]),
        ];
        for (chunks, want) in cases {
            assert_eq!(&split(chunks), want, "{chunks:?}");
        }
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_dropped() {
        let long = vec![b'x'; MAX_LINE * 3];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        // In one chunk and byte by byte in chunks of 1000.
        let whole = split(&[&input]);
        let pieces: Vec<&[u8]> = input.chunks(1000).collect();
        let chunked = split(&pieces);
        for got in [whole, chunked] {
            assert_eq!(
                got.len(),
                2,
                "{:?}",
                got.iter().map(|(l, c)| (l.len(), *c)).collect::<Vec<_>>()
            );
            assert_eq!(got[0].0.len(), MAX_LINE);
            assert!(got[0].1);
            assert_eq!(got[1], ("next".to_string(), false));
        }
        // Exactly MAX_LINE is not cut.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        let got = split(&[&exact]);
        assert_eq!(got.len(), 1);
        assert!(!got[0].1);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_line("web", b"hello", false), b"web: hello\n");
        assert_eq!(format_line("web", b"xx", true), b"web: xx [cut]\n");
    }

    #[test]
    fn log_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::new(dir.path(), "svc", 100);
        let line = format_line("svc", &[b'a'; 40], false); // 46 bytes
        for _ in 0..5 {
            log.write(&line).unwrap();
        }
        let cur = std::fs::read(dir.path().join("svc.log")).unwrap();
        let old = std::fs::read(dir.path().join("svc.log.1")).unwrap();
        assert_eq!(cur.len(), 46);
        assert_eq!(old.len(), 92);
        assert!(!dir.path().join("svc.log.2").exists());
        assert_eq!(log.path(), dir.path().join("svc.log"));
    }
}
