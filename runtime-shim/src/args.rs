//! runc's command line as plain data.
//!
//! runc uses urfave/cli v1: global flags come before the subcommand, each subcommand has its
//! own flags, a flag is written `--name`, `-name`, `--name=value`, `-name value` or with its
//! short alias (`-b value`), and a boolean flag may be given `=true`/`=false`. Most
//! subcommands accept their flags anywhere among the arguments; `exec` and `ps` stop at the
//! first argument that is not a flag (what follows is the command to run or `ps` options). `--`
//! ends the flags. Flags this table does not know are kept as they are (as booleans): the real
//! runc decides about them. Nothing here rewrites the command line; [`Invocation::without`]
//! builds a copy without some tokens when the policy drops a flag.

use std::path::{Path, PathBuf};

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}
use Kind::{Bool, Value};

/// One flag runc knows: its long name, its short alias, and whether it takes a value.
type FlagSpec = (&'static str, Option<&'static str>, Kind);

const GLOBAL_FLAGS: &[FlagSpec] = &[
    ("debug", None, Bool),
    ("log", None, Value),
    ("log-format", None, Value),
    ("root", None, Value),
    ("criu", None, Value),
    ("systemd-cgroup", None, Bool),
    ("rootless", None, Value),
    ("help", Some("h"), Bool),
    ("version", Some("v"), Bool),
];

const CREATE_FLAGS: &[FlagSpec] = &[
    ("bundle", Some("b"), Value),
    ("console-socket", None, Value),
    ("pid-file", None, Value),
    ("no-pivot", None, Bool),
    ("no-new-keyring", None, Bool),
    ("preserve-fds", None, Value),
];

const RUN_FLAGS: &[FlagSpec] = &[
    ("bundle", Some("b"), Value),
    ("console-socket", None, Value),
    ("detach", Some("d"), Bool),
    ("keep", None, Bool),
    ("pid-file", None, Value),
    ("no-subreaper", None, Bool),
    ("no-pivot", None, Bool),
    ("no-new-keyring", None, Bool),
    ("preserve-fds", None, Value),
];

const EXEC_FLAGS: &[FlagSpec] = &[
    ("console-socket", None, Value),
    ("cwd", None, Value),
    ("env", Some("e"), Value),
    ("tty", Some("t"), Bool),
    ("user", Some("u"), Value),
    ("additional-gids", Some("g"), Value),
    ("process", Some("p"), Value),
    ("detach", Some("d"), Bool),
    ("pid-file", None, Value),
    ("process-label", None, Value),
    ("apparmor", None, Value),
    ("no-new-privs", None, Bool),
    ("cap", Some("c"), Value),
    ("preserve-fds", None, Value),
    ("cgroup", None, Value),
    ("ignore-paused", None, Bool),
];

const KILL_FLAGS: &[FlagSpec] = &[("all", Some("a"), Bool)];
const DELETE_FLAGS: &[FlagSpec] = &[("force", Some("f"), Bool)];
const PS_FLAGS: &[FlagSpec] = &[("format", Some("f"), Value)];
const LIST_FLAGS: &[FlagSpec] = &[("format", Some("f"), Value), ("quiet", Some("q"), Bool)];
const EVENTS_FLAGS: &[FlagSpec] = &[("interval", None, Value), ("stats", None, Bool)];
const SPEC_FLAGS: &[FlagSpec] = &[("bundle", Some("b"), Value), ("rootless", None, Bool)];

const UPDATE_FLAGS: &[FlagSpec] = &[
    ("resources", Some("r"), Value),
    ("blkio-weight", None, Value),
    ("cpu-period", None, Value),
    ("cpu-quota", None, Value),
    ("cpu-share", None, Value),
    ("cpu-rt-period", None, Value),
    ("cpu-rt-runtime", None, Value),
    ("cpuset-cpus", None, Value),
    ("cpuset-mems", None, Value),
    ("memory", None, Value),
    ("memory-reservation", None, Value),
    ("memory-swap", None, Value),
    ("pids-limit", None, Value),
    ("l3-cache-schema", None, Value),
    ("mem-bw-schema", None, Value),
];

const CHECKPOINT_FLAGS: &[FlagSpec] = &[
    ("image-path", None, Value),
    ("work-path", None, Value),
    ("parent-path", None, Value),
    ("leave-running", None, Bool),
    ("tcp-established", None, Bool),
    ("ext-unix-sk", None, Bool),
    ("shell-job", None, Bool),
    ("lazy-pages", None, Bool),
    ("status-fd", None, Value),
    ("page-server", None, Value),
    ("file-locks", None, Bool),
    ("pre-dump", None, Bool),
    ("manage-cgroups-mode", None, Value),
    ("empty-ns", None, Value),
    ("auto-dedup", None, Bool),
];

const RESTORE_FLAGS: &[FlagSpec] = &[
    ("console-socket", None, Value),
    ("image-path", None, Value),
    ("work-path", None, Value),
    ("tcp-established", None, Bool),
    ("ext-unix-sk", None, Bool),
    ("shell-job", None, Bool),
    ("file-locks", None, Bool),
    ("manage-cgroups-mode", None, Value),
    ("bundle", Some("b"), Value),
    ("detach", Some("d"), Bool),
    ("pid-file", None, Value),
    ("no-subreaper", None, Bool),
    ("no-pivot", None, Bool),
    ("empty-ns", None, Value),
    ("auto-dedup", None, Bool),
    ("lazy-pages", None, Bool),
    ("lsm-profile", None, Value),
    ("lsm-mount-context", None, Value),
];

/// Every subcommand accepts `--help`/`-h`.
const HELP_FLAG: FlagSpec = ("help", Some("h"), Bool);

/// A runc subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    /// `create`: policy applies to the bundle.
    Create,
    /// `run`: policy applies to the bundle.
    Run,
    /// `restore`: policy applies to the bundle.
    Restore,
    /// `exec`: policy applies to the process file or the flags.
    Exec,
    /// `start`.
    Start,
    /// `kill`.
    Kill,
    /// `delete`.
    Delete,
    /// `state`.
    State,
    /// `ps`.
    Ps,
    /// `features`.
    Features,
    /// `update`.
    Update,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `events`.
    Events,
    /// `checkpoint`.
    Checkpoint,
    /// `list`.
    List,
    /// `spec`.
    Spec,
    /// A subcommand this table does not know (passed through).
    Other,
}

impl Subcommand {
    fn from_name(name: &str) -> Subcommand {
        match name {
            "create" => Subcommand::Create,
            "run" => Subcommand::Run,
            "restore" => Subcommand::Restore,
            "exec" => Subcommand::Exec,
            "start" => Subcommand::Start,
            "kill" => Subcommand::Kill,
            "delete" => Subcommand::Delete,
            "state" => Subcommand::State,
            "ps" => Subcommand::Ps,
            "features" => Subcommand::Features,
            "update" => Subcommand::Update,
            "pause" => Subcommand::Pause,
            "resume" => Subcommand::Resume,
            "events" => Subcommand::Events,
            "checkpoint" => Subcommand::Checkpoint,
            "list" | "ls" => Subcommand::List,
            "spec" => Subcommand::Spec,
            _ => Subcommand::Other,
        }
    }

    fn flags(self) -> &'static [FlagSpec] {
        match self {
            Subcommand::Create => CREATE_FLAGS,
            Subcommand::Run => RUN_FLAGS,
            Subcommand::Restore => RESTORE_FLAGS,
            Subcommand::Exec => EXEC_FLAGS,
            Subcommand::Kill => KILL_FLAGS,
            Subcommand::Delete => DELETE_FLAGS,
            Subcommand::Ps => PS_FLAGS,
            Subcommand::List => LIST_FLAGS,
            Subcommand::Events => EVENTS_FLAGS,
            Subcommand::Spec => SPEC_FLAGS,
            Subcommand::Update => UPDATE_FLAGS,
            Subcommand::Checkpoint => CHECKPOINT_FLAGS,
            Subcommand::Start
            | Subcommand::State
            | Subcommand::Features
            | Subcommand::Pause
            | Subcommand::Resume
            | Subcommand::Other => &[],
        }
    }

    /// Whether flag parsing stops at the first positional argument (urfave/cli `SkipArgReorder`).
    fn stops_at_positional(self) -> bool {
        matches!(self, Subcommand::Exec | Subcommand::Ps | Subcommand::Other)
    }

    /// Whether the policy looks at this subcommand's bundle.
    pub fn uses_bundle(self) -> bool {
        matches!(
            self,
            Subcommand::Create | Subcommand::Run | Subcommand::Restore
        )
    }
}

/// One flag as it appeared on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The canonical long name (`bundle` for `-b`); for an unknown flag, its name as written.
    pub name: String,
    /// The value (`--x=v`, `--x v`); `None` for a boolean written without `=`.
    pub value: Option<String>,
    /// Whether the flag table knows it.
    pub known: bool,
    /// Index of its first token in argv.
    pub index: usize,
    /// How many argv tokens it spans (1, or 2 for `--x v`).
    pub tokens: usize,
}

impl Flag {
    /// The flag's boolean value: set without a value, or with a value Go's strconv.ParseBool
    /// reads as true.
    pub fn is_true(&self) -> bool {
        self.value
            .as_deref()
            .is_none_or(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"))
    }
}

/// A parsed runc command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The whole argv, `argv[0]` included.
    pub argv: Vec<String>,
    /// The global flags (before the subcommand).
    pub globals: Vec<Flag>,
    /// The subcommand, if one was given.
    pub subcommand: Option<Subcommand>,
    /// The subcommand as written.
    pub subcommand_name: Option<String>,
    /// The subcommand's flags.
    pub flags: Vec<Flag>,
    /// The subcommand's other arguments, in order (the container id first).
    pub positionals: Vec<String>,
}

/// Splits `--name=value` / `-name` into the name and the optional inline value; `None` when the
/// token is not a flag.
fn split_flag(token: &str) -> Option<(&str, Option<&str>)> {
    let body = token
        .strip_prefix("--")
        .or_else(|| token.strip_prefix('-'))?;
    if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
        return None;
    }
    Some(match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    })
}

fn lookup(table: &[FlagSpec], extra: Option<FlagSpec>, name: &str) -> Option<FlagSpec> {
    table
        .iter()
        .copied()
        .chain(extra)
        .find(|(long, short, _)| *long == name || *short == Some(name))
}

/// Reads the flag at `argv[i]` (known to look like a flag).
fn read_flag(argv: &[String], i: usize, table: &[FlagSpec], extra: Option<FlagSpec>) -> Flag {
    let token = argv.get(i).map_or("", String::as_str);
    let (name, inline) = split_flag(token).unwrap_or((token, None));
    match lookup(table, extra, name) {
        Some((long, _, kind)) => {
            let (value, tokens) = match (inline, kind) {
                (Some(v), _) => (Some(v.to_owned()), 1),
                (None, Bool) => (None, 1),
                (None, Value) => match argv.get(i + 1) {
                    Some(v) => (Some(v.clone()), 2),
                    None => (None, 1),
                },
            };
            Flag {
                name: long.to_owned(),
                value,
                known: true,
                index: i,
                tokens,
            }
        }
        None => Flag {
            name: name.to_owned(),
            value: inline.map(str::to_owned),
            known: false,
            index: i,
            tokens: 1,
        },
    }
}

/// Parses a runc argv (`argv[0]` is the program name).
pub fn parse(argv: &[String]) -> Invocation {
    let mut globals = Vec::new();
    let mut i = 1;
    while let Some(token) = argv.get(i) {
        if token == "--" {
            i += 1;
            break;
        }
        if split_flag(token).is_none() {
            break;
        }
        let f = read_flag(argv, i, GLOBAL_FLAGS, None);
        i += f.tokens;
        globals.push(f);
    }
    let mut inv = Invocation {
        argv: argv.to_vec(),
        globals,
        subcommand: None,
        subcommand_name: None,
        flags: Vec::new(),
        positionals: Vec::new(),
    };
    let Some(name) = argv.get(i) else { return inv };
    let sub = Subcommand::from_name(name);
    inv.subcommand = Some(sub);
    inv.subcommand_name = Some(name.clone());
    i += 1;
    let mut flags_done = false;
    while let Some(token) = argv.get(i) {
        if flags_done || split_flag(token).is_none() {
            if token == "--" && !flags_done {
                flags_done = true;
            } else {
                inv.positionals.push(token.clone());
                if sub.stops_at_positional() {
                    flags_done = true;
                }
            }
            i += 1;
            continue;
        }
        let f = read_flag(argv, i, sub.flags(), Some(HELP_FLAG));
        i += f.tokens;
        inv.flags.push(f);
    }
    inv
}

impl Invocation {
    /// The last global flag with this long name (runc takes the last one).
    pub fn global(&self, name: &str) -> Option<&Flag> {
        self.globals
            .iter()
            .rev()
            .find(|f| f.known && f.name == name)
    }

    /// The last subcommand flag with this long name.
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().rev().find(|f| f.known && f.name == name)
    }

    /// Every value of a repeatable subcommand flag, in order.
    pub fn flag_values(&self, name: &str) -> Vec<&Flag> {
        self.flags
            .iter()
            .filter(|f| f.known && f.name == name)
            .collect()
    }

    /// The container id: the first positional argument.
    pub fn container_id(&self) -> Option<&str> {
        self.positionals.first().map(String::as_str)
    }

    /// `--log FILE`.
    pub fn log_file(&self) -> Option<&str> {
        self.global("log")
            .and_then(|f| f.value.as_deref())
            .filter(|v| !v.is_empty())
    }

    /// Whether `--log-format json` was given.
    pub fn log_json(&self) -> bool {
        self.global("log-format").and_then(|f| f.value.as_deref()) == Some("json")
    }

    /// The bundle directory of `create`, `run` and `restore`: `--bundle`/`-b`, relative to
    /// `cwd`, or `cwd` itself when absent or empty.
    pub fn bundle(&self, cwd: &Path) -> PathBuf {
        match self
            .flag("bundle")
            .and_then(|f| f.value.as_deref())
            .filter(|v| !v.is_empty())
        {
            Some(b) => cwd.join(b),
            None => cwd.to_path_buf(),
        }
    }

    /// `exec --process FILE`, relative to `cwd`.
    pub fn process_file(&self, cwd: &Path) -> Option<PathBuf> {
        self.flag("process")
            .and_then(|f| f.value.as_deref())
            .filter(|v| !v.is_empty())
            .map(|p| cwd.join(p))
    }

    /// The indices of the argv tokens left once the given flags are dropped (`argv[0]` is
    /// always kept).
    pub fn without(&self, drop: &[&Flag]) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..self.argv.len() {
            let dropped = drop.iter().any(|f| i >= f.index && i < f.index + f.tokens);
            if !dropped {
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        std::iter::once("runc")
            .chain(s.split_whitespace())
            .map(str::to_owned)
            .collect()
    }

    fn p(s: &str) -> Invocation {
        parse(&argv(s))
    }

    #[test]
    fn global_flag_forms() {
        // (argv, flag, expected value)
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("--root /run/x state id", "root", Some("/run/x")),
            ("--root=/run/x state id", "root", Some("/run/x")),
            ("-root /run/x state id", "root", Some("/run/x")),
            ("-root=/run/x state id", "root", Some("/run/x")),
            ("--log /b/log.json state id", "log", Some("/b/log.json")),
            ("--log-format json state id", "log-format", Some("json")),
            ("--log-format=text state id", "log-format", Some("text")),
            ("--systemd-cgroup state id", "systemd-cgroup", None),
            (
                "--systemd-cgroup=false state id",
                "systemd-cgroup",
                Some("false"),
            ),
            ("--debug state id", "debug", None),
            (
                "--criu /usr/sbin/criu state id",
                "criu",
                Some("/usr/sbin/criu"),
            ),
            ("--rootless auto state id", "rootless", Some("auto")),
            ("--rootless=true state id", "rootless", Some("true")),
        ];
        for (line, name, value) in cases {
            let inv = p(line);
            let f = inv
                .global(name)
                .unwrap_or_else(|| panic!("{line}: no {name}"));
            assert_eq!(f.value.as_deref(), *value, "{line}");
            assert_eq!(inv.subcommand, Some(Subcommand::State), "{line}");
            assert_eq!(inv.container_id(), Some("id"), "{line}");
        }
    }

    #[test]
    fn containerd_style_create() {
        let inv = p("--root /run/containerd/runc/default --log /b/log.json --log-format json --systemd-cgroup create --bundle /b --pid-file /b/init.pid --console-socket /tmp/c.sock c1");
        assert_eq!(inv.subcommand, Some(Subcommand::Create));
        assert_eq!(inv.log_file(), Some("/b/log.json"));
        assert!(inv.log_json());
        assert!(inv.global("systemd-cgroup").is_some_and(Flag::is_true));
        assert_eq!(inv.bundle(Path::new("/cwd")), PathBuf::from("/b"));
        assert_eq!(inv.container_id(), Some("c1"));
        assert_eq!(
            inv.flag("pid-file").and_then(|f| f.value.as_deref()),
            Some("/b/init.pid")
        );
    }

    #[test]
    fn bundle_forms() {
        let cwd = Path::new("/cwd");
        let cases: &[(&str, &str)] = &[
            ("create --bundle /b id", "/b"),
            ("create --bundle=/b id", "/b"),
            ("create -bundle /b id", "/b"),
            ("create -b /b id", "/b"),
            ("create -b=/b id", "/b"),
            ("create id", "/cwd"),
            ("create --bundle= id", "/cwd"),
            ("create --bundle rel id", "/cwd/rel"),
            ("create id --bundle /late", "/late"),
            ("create -b /first -b /second id", "/second"),
            ("run --bundle /b id", "/b"),
            ("run -b /b -d id", "/b"),
            ("run id", "/cwd"),
            ("run --detach --keep --no-subreaper -b /b id", "/b"),
            ("restore --image-path /img -b /b id", "/b"),
            ("restore id", "/cwd"),
        ];
        for (line, want) in cases {
            let inv = p(line);
            assert!(
                inv.subcommand.is_some_and(Subcommand::uses_bundle),
                "{line}"
            );
            assert_eq!(inv.bundle(cwd), PathBuf::from(want), "{line}");
            assert_eq!(inv.container_id(), Some("id"), "{line}");
        }
    }

    #[test]
    fn every_subcommand_and_its_flags() {
        // (argv, subcommand, [(flag, value)], positionals)
        type Case = (
            &'static str,
            Subcommand,
            &'static [(&'static str, Option<&'static str>)],
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            ("create --console-socket /s --pid-file /p --no-pivot --no-new-keyring --preserve-fds 2 id", Subcommand::Create,
             &[("console-socket", Some("/s")), ("pid-file", Some("/p")), ("no-pivot", None), ("no-new-keyring", None), ("preserve-fds", Some("2"))], &["id"]),
            ("run --detach --keep --pid-file=/p --no-subreaper id", Subcommand::Run,
             &[("detach", None), ("keep", None), ("pid-file", Some("/p")), ("no-subreaper", None)], &["id"]),
            ("start id", Subcommand::Start, &[], &["id"]),
            ("kill id 9", Subcommand::Kill, &[], &["id", "9"]),
            ("kill --all id KILL", Subcommand::Kill, &[("all", None)], &["id", "KILL"]),
            ("kill -a id SIGTERM", Subcommand::Kill, &[("all", None)], &["id", "SIGTERM"]),
            ("delete --force id", Subcommand::Delete, &[("force", None)], &["id"]),
            ("delete -f id", Subcommand::Delete, &[("force", None)], &["id"]),
            ("state id", Subcommand::State, &[], &["id"]),
            ("ps --format json id", Subcommand::Ps, &[("format", Some("json"))], &["id"]),
            ("ps -f table id -ef", Subcommand::Ps, &[("format", Some("table"))], &["id", "-ef"]),
            ("features", Subcommand::Features, &[], &[]),
            ("update --resources - id", Subcommand::Update, &[("resources", Some("-"))], &["id"]),
            ("update -r /r.json id", Subcommand::Update, &[("resources", Some("/r.json"))], &["id"]),
            ("update --memory 100 --pids-limit=10 --cpuset-cpus 0-1 id", Subcommand::Update,
             &[("memory", Some("100")), ("pids-limit", Some("10")), ("cpuset-cpus", Some("0-1"))], &["id"]),
            ("pause id", Subcommand::Pause, &[], &["id"]),
            ("resume id", Subcommand::Resume, &[], &["id"]),
            ("events --interval 1s --stats id", Subcommand::Events, &[("interval", Some("1s")), ("stats", None)], &["id"]),
            ("checkpoint --image-path /i --work-path /w --leave-running --tcp-established --ext-unix-sk --shell-job --file-locks --pre-dump --manage-cgroups-mode soft --empty-ns network --auto-dedup --status-fd 3 --page-server 1.2.3.4:5 --parent-path ../p --lazy-pages id", Subcommand::Checkpoint,
             &[("image-path", Some("/i")), ("work-path", Some("/w")), ("leave-running", None), ("tcp-established", None), ("ext-unix-sk", None), ("shell-job", None), ("file-locks", None), ("pre-dump", None), ("manage-cgroups-mode", Some("soft")), ("empty-ns", Some("network")), ("auto-dedup", None), ("status-fd", Some("3")), ("page-server", Some("1.2.3.4:5")), ("parent-path", Some("../p")), ("lazy-pages", None)], &["id"]),
            ("restore --console-socket /s --image-path /i --work-path /w --bundle /b --detach --pid-file /p --no-subreaper --no-pivot --lsm-profile apparmor:x --lsm-mount-context ctx id", Subcommand::Restore,
             &[("console-socket", Some("/s")), ("image-path", Some("/i")), ("work-path", Some("/w")), ("bundle", Some("/b")), ("detach", None), ("pid-file", Some("/p")), ("no-subreaper", None), ("no-pivot", None), ("lsm-profile", Some("apparmor:x")), ("lsm-mount-context", Some("ctx"))], &["id"]),
            ("list", Subcommand::List, &[], &[]),
            ("list --format json -q", Subcommand::List, &[("format", Some("json")), ("quiet", None)], &[]),
            ("ls -f json", Subcommand::List, &[("format", Some("json"))], &[]),
            ("spec --bundle /b --rootless", Subcommand::Spec, &[("bundle", Some("/b")), ("rootless", None)], &[]),
            ("spec -b /b", Subcommand::Spec, &[("bundle", Some("/b"))], &[]),
            ("state --help", Subcommand::State, &[("help", None)], &[]),
            ("delete -h", Subcommand::Delete, &[("help", None)], &[]),
            ("exec --console-socket /s --cwd /w --env A=1 -e B=2 --tty --user 1:2 --additional-gids 5 -g 6 --detach --pid-file /p --process-label l --apparmor a --no-new-privs --cap CAP_KILL -c CAP_CHOWN --preserve-fds 1 --cgroup sub --ignore-paused id sh -c true", Subcommand::Exec,
             &[("console-socket", Some("/s")), ("cwd", Some("/w")), ("env", Some("A=1")), ("env", Some("B=2")), ("tty", None), ("user", Some("1:2")), ("additional-gids", Some("5")), ("additional-gids", Some("6")), ("detach", None), ("pid-file", Some("/p")), ("process-label", Some("l")), ("apparmor", Some("a")), ("no-new-privs", None), ("cap", Some("CAP_KILL")), ("cap", Some("CAP_CHOWN")), ("preserve-fds", Some("1")), ("cgroup", Some("sub")), ("ignore-paused", None)],
             &["id", "sh", "-c", "true"]),
            ("exec -p /proc.json -d -t -u 0 id", Subcommand::Exec,
             &[("process", Some("/proc.json")), ("detach", None), ("tty", None), ("user", Some("0"))], &["id"]),
            ("exec --process=/proc.json id", Subcommand::Exec, &[("process", Some("/proc.json"))], &["id"]),
            // exec stops at the first positional: `--cap` after the id belongs to the command.
            ("exec id sh --cap CAP_SYS_ADMIN", Subcommand::Exec, &[], &["id", "sh", "--cap", "CAP_SYS_ADMIN"]),
            ("exec -- id --cap", Subcommand::Exec, &[], &["id", "--cap"]),
            ("exec --no-new-privs=false id ls", Subcommand::Exec, &[("no-new-privs", Some("false"))], &["id", "ls"]),
            ("create -- -id", Subcommand::Create, &[], &["-id"]),
        ];
        for (line, sub, flags, positionals) in cases {
            let inv = p(line);
            assert_eq!(inv.subcommand, Some(*sub), "{line}");
            let got: Vec<(&str, Option<&str>)> = inv
                .flags
                .iter()
                .map(|f| {
                    assert!(f.known, "{line}: {} unknown", f.name);
                    (f.name.as_str(), f.value.as_deref())
                })
                .collect();
            assert_eq!(got, *flags, "{line}");
            assert_eq!(inv.positionals, *positionals, "{line}");
        }
    }

    #[test]
    fn unknown_flags_and_subcommands_pass_through() {
        let inv = p("--future-flag create --new-thing -b /b id");
        assert_eq!(inv.globals.len(), 1);
        assert!(!inv.globals[0].known);
        assert_eq!(inv.flags[0].name, "new-thing");
        assert!(!inv.flags[0].known);
        assert_eq!(inv.bundle(Path::new("/")), PathBuf::from("/b"));
        let inv = p("frobnicate --x y id");
        assert_eq!(inv.subcommand, Some(Subcommand::Other));
        assert_eq!(inv.subcommand_name.as_deref(), Some("frobnicate"));
        let inv = p("--version");
        assert_eq!(inv.subcommand, None);
        assert!(inv.global("version").is_some());
        let inv = p("");
        assert_eq!(inv.subcommand, None);
        assert!(inv.globals.is_empty());
    }

    #[test]
    fn process_file_and_bools() {
        let inv = p("exec --process rel.json id");
        assert_eq!(
            inv.process_file(Path::new("/cwd")),
            Some(PathBuf::from("/cwd/rel.json"))
        );
        let cases: &[(&str, bool)] = &[
            ("exec --no-new-privs id", true),
            ("exec --no-new-privs=true id", true),
            ("exec --no-new-privs=1 id", true),
            ("exec --no-new-privs=false id", false),
            ("exec --no-new-privs=0 id", false),
        ];
        for (line, want) in cases {
            assert_eq!(
                p(line).flag("no-new-privs").unwrap().is_true(),
                *want,
                "{line}"
            );
        }
    }

    #[test]
    fn without_drops_whole_flags() {
        let inv = p("exec --cap CAP_SYS_ADMIN -c=CAP_KILL --tty id sh");
        let caps = inv.flag_values("cap");
        let keep: Vec<&str> = inv
            .without(&[caps[0]])
            .into_iter()
            .map(|i| inv.argv[i].as_str())
            .collect();
        assert_eq!(keep, ["runc", "exec", "-c=CAP_KILL", "--tty", "id", "sh"]);
    }
}
