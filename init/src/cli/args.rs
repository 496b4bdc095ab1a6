//! The `rampart` command line, parsed into an [`Invocation`] by a pure function.
//!
//! Global options (`--socket`, `--json`, `--timeout`, `--help`, `--version`) may stand
//! anywhere; a command's own options follow the command. `--opt=value` is accepted for every
//! option that takes a value.

use std::path::PathBuf;
use std::time::Duration;

use super::when::{parse_when, When};

/// The usage text (`rampart help`).
pub const USAGE: &str = "\
usage: rampart [--socket PATH] [--json] [--timeout SECS] COMMAND [ARGS]

Operate a rampart host through its control socket (root only).

commands:
  status                         every service and the host's figures
  logs [SERVICE] [-f|--follow] [--since WHEN] [--tail N]
                                 log entries of PID 1 and every service (or one)
  events [-f|--follow] [--since WHEN]
                                 service and container lifecycle events, audit lines
  restart SERVICE                stop a service and start it again
  stop SERVICE                   stop a service and keep it stopped
  start SERVICE                  start a stopped service
  reboot                         reboot the host (orderly shutdown first)
  poweroff                       power the host off (orderly shutdown first)
  audit                          run the compliance self-check
  help                           this text

options:
  --socket PATH    the control socket (default: $RAMPART_SOCKET, else /run/rampart/control.sock)
  --json           one JSON object per line: the replies as the host sent them
  --timeout SECS   give up when the host does not answer within SECS (default 10;
                   not applied while following)
  -h, --help       this text
  --version        the version

WHEN is how long ago (30s, 5m, 2h, 1d, 1h30m), an RFC 3339 time (2026-11-28T18:00:00Z)
or Unix seconds (1795888800).

exit status: 0 ok; 1 the host answered an error, or the audit found a failed item;
2 usage error; 3 no control socket, permission denied or the connection failed.
";

/// The default `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `--timeout` accepted (a day).
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `status`.
    Status,
    /// `logs [SERVICE] [--follow] [--since WHEN] [--tail N]`.
    Logs {
        /// Only this source.
        service: Option<String>,
        /// Keep streaming.
        follow: bool,
        /// Only entries at or after this time.
        since: Option<When>,
        /// Only the last N entries.
        tail: Option<u32>,
    },
    /// `events [--follow] [--since WHEN]`.
    Events {
        /// Keep streaming.
        follow: bool,
        /// Only entries at or after this time.
        since: Option<When>,
    },
    /// `restart SERVICE`.
    Restart(String),
    /// `stop SERVICE`.
    Stop(String),
    /// `start SERVICE`.
    Start(String),
    /// `reboot`.
    Reboot,
    /// `poweroff`.
    Poweroff,
    /// `audit`.
    Audit,
    /// `help`, `--help`, `-h`.
    Help,
    /// `--version`.
    Version,
}

impl Command {
    /// Whether the command streams until interrupted (no timeout applies).
    #[must_use]
    pub fn follows(&self) -> bool {
        matches!(
            self,
            Command::Logs { follow: true, .. } | Command::Events { follow: true, .. }
        )
    }
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `--socket PATH`, when given.
    pub socket: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `--timeout SECS`.
    pub timeout: Duration,
    /// The command.
    pub command: Command,
}

impl Invocation {
    /// The socket to use: `--socket`, else `env` (`RAMPART_SOCKET`, when not empty), else
    /// `default`.
    #[must_use]
    pub fn socket_path(&self, env: Option<&str>, default: &str) -> PathBuf {
        if let Some(p) = &self.socket {
            return p.clone();
        }
        match env {
            Some(e) if !e.is_empty() => PathBuf::from(e),
            _ => PathBuf::from(default),
        }
    }
}

/// Options that take a value, global or of a command.
fn takes_value(opt: &str) -> bool {
    matches!(opt, "--socket" | "--timeout" | "--since" | "--tail" | "-n")
}

/// Splits `--opt=value` into its parts.
fn split_eq(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((o, v)) if o.starts_with("--") => (o, Some(v)),
        _ => (arg, None),
    }
}

/// One option or operand after the global options are taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An option, with its value when it takes one.
    Opt(String, Option<String>),
    /// An operand.
    Word(String),
}

/// Parses the arguments after argv[0]; the error is a one-line reason for a usage error.
pub fn parse(args: &[String]) -> Result<Invocation, String> {
    let mut socket = None;
    let mut json = false;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut help = false;
    let mut version = false;
    let mut rest: Vec<Token> = Vec::new();
    let mut operands_only = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if operands_only || !arg.starts_with('-') || arg == "-" {
            rest.push(Token::Word(arg.clone()));
            continue;
        }
        if arg == "--" {
            operands_only = true;
            continue;
        }
        let (opt, inline) = split_eq(arg);
        let value = if takes_value(opt) {
            match inline {
                Some(v) => Some(v.to_owned()),
                None => Some(
                    it.next()
                        .ok_or_else(|| format!("{opt} needs a value"))?
                        .clone(),
                ),
            }
        } else if inline.is_some() {
            return Err(format!("{opt} takes no value"));
        } else {
            None
        };
        match (opt, value) {
            ("--socket", Some(v)) => {
                if v.is_empty() {
                    return Err("--socket needs a path".to_owned());
                }
                socket = Some(PathBuf::from(v));
            }
            ("--timeout", Some(v)) => timeout = parse_timeout(&v)?,
            ("--json", _) => json = true,
            ("-h" | "--help", _) => help = true,
            ("--version" | "-V", _) => version = true,
            (o, v) => rest.push(Token::Opt(o.to_owned(), v)),
        }
    }
    let command = if help {
        Command::Help
    } else if version {
        Command::Version
    } else {
        parse_command(&rest)?
    };
    Ok(Invocation {
        socket,
        json,
        timeout,
        command,
    })
}

/// Parses `--timeout`: a positive number of seconds (fractions allowed), at most a day.
pub fn parse_timeout(v: &str) -> Result<Duration, String> {
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("--timeout `{v}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > MAX_TIMEOUT_SECS {
        return Err(format!(
            "--timeout `{v}` is out of range (more than 0, at most {MAX_TIMEOUT_SECS} seconds)"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("--timeout `{v}`: {e}"))
}

fn parse_tail(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| format!("--tail `{v}` is not a count of entries"))
}

/// The operands and options of one command.
struct Rest<'a> {
    name: &'a str,
    words: Vec<&'a str>,
    opts: Vec<(&'a str, Option<&'a str>)>,
}

impl Rest<'_> {
    /// Fails on an option the command does not know.
    fn only_opts(&self, known: &[&str]) -> Result<(), String> {
        match self.opts.iter().find(|(o, _)| !known.contains(o)) {
            Some((o, _)) => Err(format!("`{}` does not take {o}", self.name)),
            None => Ok(()),
        }
    }

    /// Fails when more than `max` operands were given.
    fn at_most(&self, max: usize) -> Result<(), String> {
        match self.words.get(max) {
            Some(extra) => Err(format!("`{}`: unexpected argument `{extra}`", self.name)),
            None => Ok(()),
        }
    }

    fn flag(&self, names: &[&str]) -> bool {
        self.opts.iter().any(|(o, _)| names.contains(o))
    }

    /// The last value given for the option (a repeated option overrides).
    fn value(&self, names: &[&str]) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(o, _)| names.contains(o))
            .and_then(|(_, v)| *v)
    }

    /// The one service operand.
    fn service(&self) -> Result<String, String> {
        self.at_most(1)?;
        self.only_opts(&[])?;
        match self.words.first() {
            Some(s) if !s.is_empty() => Ok((*s).to_owned()),
            _ => Err(format!("`{}` needs a SERVICE", self.name)),
        }
    }

    fn bare(&self) -> Result<(), String> {
        self.at_most(0)?;
        self.only_opts(&[])
    }
}

fn parse_command(tokens: &[Token]) -> Result<Command, String> {
    let mut words = Vec::new();
    let mut opts = Vec::new();
    for t in tokens {
        match t {
            Token::Word(w) => words.push(w.as_str()),
            Token::Opt(o, v) => opts.push((o.as_str(), v.as_deref())),
        }
    }
    let Some((&name, operands)) = words.split_first() else {
        return match opts.first() {
            Some((o, _)) => Err(format!("unknown option {o}")),
            None => Err("no command given".to_owned()),
        };
    };
    let rest = Rest {
        name,
        words: operands.to_vec(),
        opts,
    };
    let since = |r: &Rest| -> Result<Option<When>, String> {
        r.value(&["--since"]).map(parse_when).transpose()
    };
    match name {
        "status" => rest.bare().map(|()| Command::Status),
        "logs" => {
            rest.at_most(1)?;
            rest.only_opts(&["-f", "--follow", "--since", "--tail", "-n"])?;
            Ok(Command::Logs {
                service: rest.words.first().map(|s| (*s).to_owned()),
                follow: rest.flag(&["-f", "--follow"]),
                since: since(&rest)?,
                tail: rest.value(&["--tail", "-n"]).map(parse_tail).transpose()?,
            })
        }
        "events" => {
            rest.at_most(0)?;
            rest.only_opts(&["-f", "--follow", "--since"])?;
            Ok(Command::Events {
                follow: rest.flag(&["-f", "--follow"]),
                since: since(&rest)?,
            })
        }
        "restart" => rest.service().map(Command::Restart),
        "stop" => rest.service().map(Command::Stop),
        "start" => rest.service().map(Command::Start),
        "reboot" => rest.bare().map(|()| Command::Reboot),
        "poweroff" => rest.bare().map(|()| Command::Poweroff),
        "audit" => rest.bare().map(|()| Command::Audit),
        "help" => Ok(Command::Help),
        other => Err(format!("unknown command `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn cmd(s: &str) -> Result<Command, String> {
        parse(&args(s)).map(|i| i.command)
    }

    #[test]
    fn every_command() {
        let logs = |service: Option<&str>, follow, since, tail| Command::Logs {
            service: service.map(str::to_owned),
            follow,
            since,
            tail,
        };
        let cases: Vec<(&str, Command)> = vec![
            ("status", Command::Status),
            ("logs", logs(None, false, None, None)),
            (
                "logs containerd",
                logs(Some("containerd"), false, None, None),
            ),
            (
                "logs containerd -f",
                logs(Some("containerd"), true, None, None),
            ),
            ("logs --follow", logs(None, true, None, None)),
            (
                "logs --since 5m --tail 20 rampart-init",
                logs(
                    Some("rampart-init"),
                    false,
                    Some(When::Ago(Duration::from_secs(300))),
                    Some(20),
                ),
            ),
            (
                "logs --since=1795888800 -n 3",
                logs(None, false, Some(When::At(1_795_888_800_000)), Some(3)),
            ),
            (
                "events",
                Command::Events {
                    follow: false,
                    since: None,
                },
            ),
            (
                "events -f --since 2h",
                Command::Events {
                    follow: true,
                    since: Some(When::Ago(Duration::from_secs(7200))),
                },
            ),
            ("restart containerd", Command::Restart("containerd".into())),
            ("stop containerd", Command::Stop("containerd".into())),
            ("start containerd", Command::Start("containerd".into())),
            ("reboot", Command::Reboot),
            ("poweroff", Command::Poweroff),
            ("audit", Command::Audit),
            ("help", Command::Help),
            ("--help", Command::Help),
            ("-h", Command::Help),
            ("status --help", Command::Help),
            ("--version", Command::Version),
            ("-- status", Command::Status),
            ("--json -- restart x", Command::Restart("x".into())),
        ];
        for (line, want) in cases {
            assert_eq!(cmd(line), Ok(want), "{line}");
        }
    }

    #[test]
    fn global_options_anywhere() {
        let inv = parse(&args("--json status --socket /tmp/x.sock --timeout 2.5")).unwrap();
        assert_eq!(
            inv,
            Invocation {
                socket: Some(PathBuf::from("/tmp/x.sock")),
                json: true,
                timeout: Duration::from_millis(2500),
                command: Command::Status,
            }
        );
        let inv = parse(&args("logs --socket=/s -f")).unwrap();
        assert_eq!(inv.socket, Some(PathBuf::from("/s")));
        assert_eq!(inv.timeout, DEFAULT_TIMEOUT);
        assert!(!inv.json);
        assert!(inv.command.follows());
        assert!(!parse(&args("logs")).unwrap().command.follows());
    }

    #[test]
    fn bad_command_lines() {
        let cases = [
            ("", "no command given"),
            ("--json", "no command given"),
            ("frobnicate", "unknown command `frobnicate`"),
            ("--frob status", "`status` does not take --frob"),
            ("--frob", "unknown option --frob"),
            ("status extra", "`status`: unexpected argument `extra`"),
            ("restart", "`restart` needs a SERVICE"),
            ("stop a b", "`stop`: unexpected argument `b`"),
            ("start -f a", "`start` does not take -f"),
            ("logs a b", "`logs`: unexpected argument `b`"),
            ("logs --since", "--since needs a value"),
            ("logs --since yesterday", "--since `yesterday`"),
            ("logs --tail -1", "--tail `-1` is not a count of entries"),
            ("logs --tail x", "--tail `x` is not a count of entries"),
            (
                "events containerd",
                "`events`: unexpected argument `containerd`",
            ),
            ("events --tail 3", "`events` does not take --tail"),
            ("reboot now", "`reboot`: unexpected argument `now`"),
            ("audit --fix", "`audit` does not take --fix"),
            ("status --timeout 0", "--timeout `0` is out of range"),
            ("status --timeout -3", "--timeout `-3` is out of range"),
            ("status --timeout soon", "--timeout `soon` is not a number"),
            ("status --timeout 1e9", "--timeout `1e9` is out of range"),
            ("status --timeout NaN", "--timeout `NaN` is out of range"),
            ("status --socket", "--socket needs a value"),
            ("status --socket=", "--socket needs a path"),
            ("status --json=yes", "--json takes no value"),
        ];
        for (line, want) in cases {
            let got = parse(&args(line)).unwrap_err();
            assert!(got.starts_with(want), "{line:?}: {got:?}");
        }
    }

    #[test]
    fn socket_precedence() {
        let default = "/run/rampart/control.sock";
        let plain = parse(&args("status")).unwrap();
        assert_eq!(plain.socket_path(None, default), PathBuf::from(default));
        assert_eq!(plain.socket_path(Some(""), default), PathBuf::from(default));
        assert_eq!(
            plain.socket_path(Some("/env.sock"), default),
            PathBuf::from("/env.sock")
        );
        let flag = parse(&args("status --socket /flag.sock")).unwrap();
        assert_eq!(
            flag.socket_path(Some("/env.sock"), default),
            PathBuf::from("/flag.sock")
        );
    }

    #[test]
    fn usage_mentions_every_command() {
        for c in [
            "status",
            "logs",
            "events",
            "restart",
            "stop",
            "start",
            "reboot",
            "poweroff",
            "audit",
            "help",
            "--socket",
            "--json",
            "--timeout",
            "--version",
        ] {
            assert!(USAGE.contains(c), "{c}");
        }
    }
}
