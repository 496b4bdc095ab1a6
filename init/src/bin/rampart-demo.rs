//! rampart-demo: the demonstration service of the default host, and its container.
//!
//! As a service (no arguments), once containerd is ready, it imports the OCI archive that
//! `rampart-image` built from this very binary (`ctr image import`), runs it with
//! `ctr run --rm` (through rampart-runc), relays what both print with a `demo:` banner and
//! exits 0 when the container ran and said hello, non-zero otherwise.
//!
//! As the container's process (`rampart-demo inside`), it prints
//! `hello from a container under containerd` and its `CapEff`, `NoNewPrivs` and `Seccomp`
//! lines from `/proc/self/status`, and exits 0.
//!
//! Usage: `rampart-demo [--archive PATH] [--image REF] [--timeout SECS]` or
//! `rampart-demo inside`.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The line the container prints first.
const HELLO: &str = "hello from a container under containerd";
/// containerd's socket.
const SOCKET: &str = "/run/containerd/containerd.sock";
/// containerd's command-line client.
const CTR: &str = "/usr/bin/ctr";
/// The archive `rampart-image` puts in the default image (`[[image.oci]]`).
const DEFAULT_ARCHIVE: &str = "/usr/share/rampart/demo.oci.tar";
/// The image name in that archive.
const DEFAULT_IMAGE: &str = "rampart.demo/hello:latest";
/// The container's name.
const CONTAINER: &str = "rampart-demo-1";
/// The `/proc/self/status` fields the container reports.
const STATUS_FIELDS: &[&str] = &["CapEff:", "NoNewPrivs:", "Seccomp:"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("inside") {
        return inside();
    }
    match Options::parse(&args) {
        Ok(o) => host(&o),
        Err(e) => {
            eprintln!("rampart-demo: {e}");
            eprintln!("usage: rampart-demo [--archive PATH] [--image REF] [--timeout SECS] | rampart-demo inside");
            ExitCode::from(2)
        }
    }
}

/// The container side.
fn inside() -> ExitCode {
    println!("{HELLO}");
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => {
            for line in status.lines() {
                if STATUS_FIELDS.iter().any(|f| line.starts_with(f)) {
                    println!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("cannot read /proc/self/status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The host side's options.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    archive: String,
    image: String,
    timeout: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            archive: DEFAULT_ARCHIVE.to_owned(),
            image: DEFAULT_IMAGE.to_owned(),
            timeout: Duration::from_secs(300),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .clone();
            match flag.as_str() {
                "--archive" => o.archive = value,
                "--image" => o.image = value,
                "--timeout" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| format!("--timeout {value}: not a number of seconds"))?;
                    o.timeout = Duration::from_secs(secs.max(1));
                }
                _ => return Err(format!("unknown argument {flag}")),
            }
        }
        Ok(o)
    }
}

/// What a command did.
struct Outcome {
    /// Exit code (None: killed by a signal or by the timeout).
    code: Option<i32>,
    timed_out: bool,
    /// Its stdout lines.
    lines: Vec<String>,
}

/// Relays `from` line by line with `prefix`, keeping the lines in `keep`.
fn relay<R: Read + Send + 'static>(
    from: R,
    prefix: &'static str,
    keep: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            println!("{prefix}: {line}");
            if let Ok(mut k) = keep.lock() {
                k.push(line);
            }
        }
    })
}

/// Runs `ctr ARGS` with a timeout, relaying its output.
fn ctr(args: &[&str], prefix: &'static str, timeout: Duration) -> Result<Outcome, String> {
    let mut child = Command::new(CTR)
        .arg("--address")
        .arg(SOCKET)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {CTR}: {e}"))?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    if let Some(s) = child.stdout.take() {
        readers.push(relay(s, prefix, Arc::clone(&out)));
    }
    if let Some(s) = child.stderr.take() {
        readers.push(relay(s, "ctr", err));
    }
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("cannot wait for {CTR}: {e}")),
        }
    };
    for r in readers {
        let _ = r.join();
    }
    let lines = out.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(Outcome {
        code: status.and_then(|s| s.code()),
        timed_out,
        lines,
    })
}

/// Why a step failed, or `None`.
fn failure(step: &str, o: &Outcome, timeout: Duration) -> Option<String> {
    if o.timed_out {
        Some(format!("{step} timed out after {}s", timeout.as_secs()))
    } else {
        match o.code {
            Some(0) => None,
            Some(c) => Some(format!("{step} exited with {c}")),
            None => Some(format!("{step} was killed by a signal")),
        }
    }
}

/// The service side.
fn host(o: &Options) -> ExitCode {
    println!("importing {} from {}", o.image, o.archive);
    let import = match ctr(&["image", "import", &o.archive], "ctr import", o.timeout) {
        Ok(r) => r,
        Err(e) => {
            println!("FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(why) = failure("ctr image import", &import, o.timeout) {
        println!("FAILED: {why}");
        return ExitCode::FAILURE;
    }
    println!(
        "running {} as container {CONTAINER} (ctr run --rm, through rampart-runc)",
        o.image
    );
    let run = match ctr(
        &["run", "--rm", &o.image, CONTAINER],
        "container output",
        o.timeout,
    ) {
        Ok(r) => r,
        Err(e) => {
            println!("FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(why) = failure("ctr run", &run, o.timeout) {
        println!("FAILED: {why}");
        return ExitCode::FAILURE;
    }
    if !run.lines.iter().any(|l| l.trim() == HELLO) {
        println!("FAILED: the container did not say hello");
        return ExitCode::FAILURE;
    }
    println!("success: a container ran under containerd and exited 0");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options() {
        let d = Options::parse(&[]).unwrap();
        assert_eq!(d.archive, DEFAULT_ARCHIVE);
        assert_eq!(d.image, DEFAULT_IMAGE);
        let o = Options::parse(&args(&["--image", "a:b", "--timeout", "5"])).unwrap();
        assert_eq!(o.image, "a:b");
        assert_eq!(o.timeout, Duration::from_secs(5));
        // (arguments, expected fragment of the error)
        let bad = [
            (&["--image"][..], "needs a value"),
            (&["--timeout", "x"][..], "not a number"),
            (&["--what", "x"][..], "unknown argument"),
        ];
        for (a, want) in bad {
            assert!(
                Options::parse(&args(a)).unwrap_err().contains(want),
                "{a:?}"
            );
        }
    }

    #[test]
    fn failures() {
        let t = Duration::from_secs(3);
        let o = |code, timed_out| Outcome {
            code,
            timed_out,
            lines: vec![],
        };
        assert_eq!(failure("x", &o(Some(0), false), t), None);
        assert_eq!(
            failure("x", &o(Some(1), false), t).as_deref(),
            Some("x exited with 1")
        );
        assert_eq!(
            failure("x", &o(None, true), t).as_deref(),
            Some("x timed out after 3s")
        );
        assert_eq!(
            failure("x", &o(None, false), t).as_deref(),
            Some("x was killed by a signal")
        );
    }
}
