//! What the small supervised binaries (`rampart-logd`, `rampart-metrics`, `rampart-events`)
//! share: their `--flag PATH` command line walk and their stderr log format
//! (`PROGRAM: [<level word>: ]<message>`: PID 1's [`LineFormat`] with the program's name).

use std::io::Write;
use std::path::PathBuf;

use tracing::Level;

use crate::log::LineFormat;

/// Walks `args` (after the program name) as `FLAG VALUE` pairs, each FLAG one of `known`,
/// calling `set(flag, value)` in order. The error is the usage reason: `FLAG needs a value`
/// or ``unknown argument `ARG` ``.
pub fn parse_flags(
    args: &[String],
    known: &[&str],
    mut set: impl FnMut(&str, PathBuf),
) -> Result<(), String> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if !known.contains(&arg.as_str()) {
            return Err(format!("unknown argument `{arg}`"));
        }
        let value = it
            .next()
            .map(PathBuf::from)
            .ok_or_else(|| format!("{arg} needs a value"))?;
        set(arg, value);
    }
    Ok(())
}

/// The value of a required flag, or the usage reason `FLAG is required`.
pub fn required<T>(value: Option<T>, flag: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("{flag} is required"))
}

/// Installs a `tracing` subscriber that prints `PROGRAM: [warning: ]message` lines to stderr
/// (PID 1 captures them as this service's log), for the small supervised binaries.
pub fn init_logging(program: &'static str) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(Level::INFO)
        .event_format(LineFormat {
            program: Some(program),
        })
        .try_init();
    // Make sure an early line is not lost in a buffer if the process is killed.
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn walk(a: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
        let mut seen = Vec::new();
        parse_flags(&args(a), &["--config", "--socket"], |flag, value| {
            seen.push((flag.to_owned(), value));
        })
        .map(|()| seen)
    }

    #[test]
    fn flags_are_walked_in_order() {
        assert_eq!(walk(&[]), Ok(vec![]));
        assert_eq!(
            walk(&["--socket", "/s", "--config", "c", "--socket", "/t"]),
            Ok(vec![
                ("--socket".into(), "/s".into()),
                ("--config".into(), "c".into()),
                ("--socket".into(), "/t".into()),
            ])
        );
    }

    #[test]
    fn usage_reasons() {
        let cases: &[(&[&str], &str)] = &[
            (&["--config"], "--config needs a value"),
            (&["--proc", "/p"], "unknown argument `--proc`"),
            (&["--config", "c", "--bogus"], "unknown argument `--bogus`"),
            (&["x"], "unknown argument `x`"),
        ];
        for (a, want) in cases {
            assert_eq!(walk(a), Err((*want).to_owned()), "{a:?}");
        }
        assert_eq!(required(Some(1), "--ctr"), Ok(1));
        assert_eq!(
            required::<u8>(None, "--ctr"),
            Err("--ctr is required".to_owned())
        );
    }

    /// A writer that keeps what is written.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn program_lines_are_prefixed_line_format() {
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(Level::INFO)
            .event_format(LineFormat {
                program: Some("rampart-x"),
            })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("hello {}", 1);
            tracing::warn!(peer = 3, "slow");
            tracing::debug!("hidden");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "rampart-x: hello 1\nrampart-x: warning: slow peer=3\n"
        );
    }
}
