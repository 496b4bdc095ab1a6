//! `rampart-init audit [--json] [--config FILE]`: the self-check as a command.
//!
//! Only when the process is not PID 1 (PID 1 never takes this path: it must never exit).
//! Exit status: 0 when no item failed, 1 on any drift, 2 on a usage or config error.

use std::path::PathBuf;

use super::{read_live_firewall, run, Paths};

/// The usage text.
pub const USAGE: &str = "usage: rampart-init audit [--json] [--config FILE]";

/// Parsed arguments (after `audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// One JSON object per line instead of the human report.
    pub json: bool,
    /// The host file (`/etc/rampart/host.toml`).
    pub config: PathBuf,
}

/// Parses the arguments after `audit`.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut out = Args {
        json: false,
        config: PathBuf::from(rampart_config::IMAGE_CONFIG_PATH),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => out.json = true,
            "--config" => {
                out.config = PathBuf::from(it.next().ok_or("--config needs a file")?);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(out)
}

/// Runs `audit` when asked for (`argv[1] == "audit"` and this is not PID 1) and returns the
/// exit status; `None` otherwise (the caller goes on as init).
pub fn run_if_asked() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("audit") || nix::unistd::getpid().as_raw() == 1 {
        return None;
    }
    Some(main(args.get(2..).unwrap_or(&[])))
}

/// The command; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rampart-init audit: {e}\n{USAGE}");
            return 2;
        }
    };
    let cfg = match rampart_config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart-init audit: {e}");
            return 2;
        }
    };
    let audit = run(&cfg, &Paths::default(), &read_live_firewall());
    if args.json {
        for line in audit.json_lines() {
            println!("{line}");
        }
    } else {
        print!("{}", audit.human());
    }
    i32::from(audit.failed() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse_args(&s(&[])).unwrap(),
            Args {
                json: false,
                config: PathBuf::from("/etc/rampart/host.toml")
            }
        );
        let a = parse_args(&s(&["--json", "--config", "/x.toml"])).unwrap();
        assert!(a.json);
        assert_eq!(a.config, PathBuf::from("/x.toml"));
        assert!(parse_args(&s(&["--config"])).is_err());
        assert!(parse_args(&s(&["-v"])).unwrap_err().contains("`-v`"));
        assert_eq!(main(&s(&["--bogus"])), 2);
        assert_eq!(main(&s(&["--config", "/nonexistent/host.toml"])), 2);
    }
}
