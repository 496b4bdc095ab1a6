//! Pure parsers of the `/proc` files PID 1's `status` reply and the metrics endpoint both
//! read (`meminfo`, `loadavg`, `uptime`), and a bounded reader for such small pseudo-files.
//!
//! The parsers take the file's text; callers take the `/proc` directory as a parameter (a
//! temp tree in tests).

use std::io::Read;
use std::path::Path;

/// `MemTotal` and `MemAvailable` of a `/proc/meminfo`, in bytes.
#[must_use]
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut words = rest.split_whitespace();
            let value: u64 = words.next()?.parse().ok()?;
            match words.next() {
                Some("kB") => value.checked_mul(1024),
                None => Some(value),
                Some(_) => None,
            }
        })
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// Whether `s` is a plain decimal number (`0.15`, `12345.67`).
fn is_decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or_default();
    let frac = parts.next();
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// The three load averages of a `/proc/loadavg`, as printed.
#[must_use]
pub fn parse_loadavg(text: &str) -> Option<[String; 3]> {
    let mut words = text.split_whitespace();
    let mut next = || words.next().filter(|s| is_decimal(s)).map(str::to_owned);
    Some([next()?, next()?, next()?])
}

/// The uptime of a `/proc/uptime`, in seconds, as printed.
#[must_use]
pub fn parse_uptime(text: &str) -> Option<String> {
    text.split_whitespace()
        .next()
        .filter(|s| is_decimal(s))
        .map(str::to_owned)
}

/// The largest pseudo-file read, in bytes (`/proc/meminfo` is about 1.5 KiB).
pub const MAX_FILE: usize = 64 * 1024;

/// Reads a small pseudo-file to its end: open, read, close (no `stat` for a size hint, which
/// is 0 for these files anyway: each syscall counts when `status` is asked for in a loop).
/// `None` if it cannot be read, is larger than [`MAX_FILE`] or is not UTF-8.
#[must_use]
pub fn read_small(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(chunk.get(..n)?);
                if out.len() > MAX_FILE {
                    return None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `MemTotal` and `MemAvailable`, in bytes.
    type Figures = (Option<u64>, Option<u64>);

    #[test]
    fn meminfo() {
        let cases: &[(&str, Figures)] = &[
            (
                "MemTotal:        2030268 kB\nMemFree:          1597696 kB\nMemAvailable:    1800000 kB\n",
                (Some(2_030_268 * 1024), Some(1_800_000 * 1024)),
            ),
            (
                "MemTotal:        1014552 kB\nMemFree:          600000 kB\nMemAvailable:     812345 kB\nBuffers: 1 kB\n",
                (Some(1_014_552 * 1024), Some(812_345 * 1024)),
            ),
            ("MemTotal: x kB\n", (None, None)),
            ("", (None, None)),
            // MemTotalX is not MemTotal.
            ("MemTotalX: 5 kB\n", (None, None)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_meminfo(text), *want, "{text:?}");
        }
    }

    #[test]
    fn loadavg() {
        let three = |a: &str, b: &str, c: &str| Some([a.to_owned(), b.to_owned(), c.to_owned()]);
        let cases: &[(&str, Option<[String; 3]>)] = &[
            ("0.00 0.01 0.05 1/123 4567\n", three("0.00", "0.01", "0.05")),
            ("0.15 0.10 0.05 1/123 4567\n", three("0.15", "0.10", "0.05")),
            ("0.1 x 0.2", None),
            ("0.1", None),
            ("0.15 0.10\n", None),
            ("0.15 nan 1\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_loadavg(text), want, "{text:?}");
        }
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("123.45 200.10\n"), Some("123.45".to_owned()));
        assert_eq!(parse_uptime("-1 2\n"), None);
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn small_files_are_read_whole_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(10_000);
        std::fs::write(dir.path().join("long"), &long).unwrap();
        std::fs::write(dir.path().join("huge"), "y".repeat(MAX_FILE + 1)).unwrap();
        assert_eq!(read_small(&dir.path().join("long")), Some(long));
        assert_eq!(read_small(&dir.path().join("huge")), None);
        assert_eq!(read_small(&dir.path().join("absent")), None);
        assert!(read_small(Path::new("/proc/meminfo")).is_some_and(|t| t.contains("MemTotal")));
    }
}
