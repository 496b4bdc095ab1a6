//! The checker's report (serialised as one `RAMPART-CHECK <json>` console line) and the pure
//! parsers it is built from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The prefix of the checker's console lines.
pub const REPORT_PREFIX: &str = "RAMPART-CHECK ";

/// The most JSON bytes per console line. PID 1 forwards service output line by line and cuts
/// long lines (at 4 KiB), so the report is sent as `RAMPART-CHECK <i>/<n> <chunk>` lines.
pub const CHUNK: usize = 1024;

/// Everything the checker saw inside the guest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Every mount of PID 1's mount namespace (`/proc/1/mountinfo`), in file order: the host's
    /// mount table, whatever the checker's own sandbox looks like.
    pub mounts: Vec<MountEntry>,
    /// The checker's own view (`/proc/self/mountinfo`): a service's mount namespace.
    pub service_mounts: Vec<MountEntry>,
    /// Whether statvfs("/") says the root is read-only (in the checker's mount namespace).
    pub root_read_only: bool,
    /// `/sys/fs/cgroup/cgroup.controllers`, trimmed.
    pub cgroup_controllers: String,
    /// `/sys/fs/cgroup/cgroup.subtree_control`, trimmed.
    pub cgroup_subtree_control: String,
    /// Every sysctl the host config plans, by dotted key: its value as read back (whitespace
    /// runs collapsed to one space), or `None` when the kernel has no such key.
    pub sysctls: BTreeMap<String, Option<String>>,
    /// `/proc/self/cgroup`, trimmed.
    pub self_cgroup: String,
    /// `/proc/1/cgroup`, trimmed.
    pub pid1_cgroup: String,
    /// VmRSS of PID 1 in KiB.
    pub pid1_rss_kib: Option<u64>,
    /// Zombies seen before the orphan test.
    pub zombies_before: Vec<ProcInfo>,
    /// The orphan test.
    pub orphans: OrphanResult,
    /// Anything the checker failed to read (one line each); the report is still printed.
    pub errors: Vec<String>,
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount ID.
    pub id: u32,
    /// Parent mount ID.
    pub parent: u32,
    /// The root of the mount within its filesystem.
    pub root: String,
    /// The mount point (unescaped).
    pub target: String,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: Vec<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Whether `opt` is among the per-mount options.
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.iter().any(|o| o == opt)
    }
}

/// One process as seen in `/proc/PID/stat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process ID.
    pub pid: i32,
    /// Command name (without the parentheses).
    pub comm: String,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent process ID.
    pub ppid: i32,
}

/// The result of the orphan test.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrphanResult {
    /// How many grandchildren were asked for.
    pub requested: u32,
    /// How many were forked.
    pub spawned: u32,
    /// Whether the intermediate child exited with status 0.
    pub child_ok: bool,
    /// The distinct parents of the grandchildren still alive right after their parent exited
    /// (PID 1 is expected: nothing else subreaps them).
    pub adopted_by: Vec<i32>,
    /// Grandchildren still present (any state) when the wait ended.
    pub remaining: Vec<ProcInfo>,
    /// How long the wait for the grandchildren to disappear took, in milliseconds.
    pub waited_ms: u64,
    /// Zombies anywhere in the guest after the wait.
    pub zombies_after: Vec<ProcInfo>,
}

/// A malformed line of a proc file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// A mountinfo line without the expected fields.
    #[error("bad mountinfo line: {line}")]
    Mountinfo {
        /// The line.
        line: String,
    },
    /// A `/proc/PID/stat` text without the expected fields.
    #[error("bad stat line: {line}")]
    Stat {
        /// The line.
        line: String,
    },
    /// A console without a report line, or a report that is not valid JSON.
    #[error("no valid {REPORT_PREFIX}line on the console: {reason}")]
    Report {
        /// What went wrong.
        reason: String,
    },
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' {
            if let Some(oct) = bytes.get(i + 1..i + 4) {
                if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                    let v = oct
                        .iter()
                        .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                    if let Ok(v) = u8::try_from(v) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_options(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|o| !o.is_empty())
        .map(unescape)
        .collect()
}

/// Parses `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>, ParseError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_mountinfo_line)
        .collect()
}

fn parse_mountinfo_line(line: &str) -> Result<MountEntry, ParseError> {
    let bad = || ParseError::Mountinfo {
        line: line.to_owned(),
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-").ok_or_else(bad)?;
    let (head, tail) = fields.split_at(sep);
    let [id, parent, _dev, root, target, options, ..] = head else {
        return Err(bad());
    };
    let [_dash, fstype, source, super_options, ..] = tail else {
        return Err(bad());
    };
    Ok(MountEntry {
        id: id.parse().map_err(|_| bad())?,
        parent: parent.parse().map_err(|_| bad())?,
        root: unescape(root),
        target: unescape(target),
        options: split_options(options),
        fstype: unescape(fstype),
        source: unescape(source),
        super_options: split_options(super_options),
    })
}

/// Parses the text of `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Result<ProcInfo, ParseError> {
    let bad = || ParseError::Stat {
        line: text.trim().to_owned(),
    };
    let open = text.find('(').ok_or_else(bad)?;
    let close = text.rfind(')').ok_or_else(bad)?;
    let pid = text
        .get(..open)
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    let comm = text.get(open + 1..close).ok_or_else(bad)?.to_owned();
    let mut rest = text.get(close + 1..).ok_or_else(bad)?.split_whitespace();
    let state = rest.next().and_then(|s| s.chars().next()).ok_or_else(bad)?;
    let ppid = rest.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    Ok(ProcInfo {
        pid,
        comm,
        state,
        ppid,
    })
}

/// Reads `VmRSS` (KiB) from the text of `/proc/PID/status`.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

/// Collapses runs of whitespace to one space and trims (how sysctl values are compared).
pub fn normalize_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The console lines that carry `json`: `RAMPART-CHECK <i>/<n> <chunk>`, chunks of at most
/// [`CHUNK`] bytes cut at character boundaries.
pub fn report_lines(json: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = json;
    while !rest.is_empty() {
        let mut cut = rest.len().min(CHUNK);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        chunks.push(chunk);
        rest = tail;
    }
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{REPORT_PREFIX}{}/{n} {c}", i + 1))
        .collect()
}

/// Finds the checker's lines in a console transcript (each possibly prefixed, e.g. by PID 1's
/// `service: ` tag), reassembles the last complete report and decodes it.
pub fn find_report(console: &str) -> Result<Report, ParseError> {
    let bad = |reason: String| ParseError::Report { reason };
    let mut current: Option<(usize, usize, String)> = None; // (next index, total, json so far)
    let mut complete: Option<String> = None;
    let mut seen = 0;
    for line in console.lines() {
        let Some(at) = line.find(REPORT_PREFIX) else {
            continue;
        };
        seen += 1;
        let body = line.get(at + REPORT_PREFIX.len()..).unwrap_or("");
        let body = body.trim_end_matches(['\r', '\n']);
        let (counter, chunk) = body.split_once(' ').unwrap_or((body, ""));
        let Some((i, n)) = counter
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        else {
            return Err(bad(format!("no chunk counter in {line:?}")));
        };
        if i == 1 {
            current = Some((1, n, String::new()));
        }
        match current.as_mut() {
            Some((next, total, json)) if *next == i && *total == n => {
                json.push_str(chunk);
                *next += 1;
                if i == n {
                    complete = current.take().map(|(_, _, json)| json);
                }
            }
            _ => return Err(bad(format!("chunk {i}/{n} out of order"))),
        }
    }
    let json = match (complete, current) {
        (Some(json), _) => json,
        (None, Some((next, total, _))) => {
            return Err(bad(format!("only {} of {total} chunks arrived", next - 1)))
        }
        (None, None) => {
            return Err(bad(if seen == 0 {
                "the line is missing".to_owned()
            } else {
                "no complete report".to_owned()
            }))
        }
    };
    serde_json::from_str(&json).map_err(|e| bad(format!("{e} in {json:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / ro,nosuid,nodev,relatime - tmpfs rootfs ro,size=1000k,mode=755
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
24 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
25 22 0:24 / /a\\040b rw - tmpfs tmp\\134x rw
";

    #[test]
    fn mountinfo_parses_every_field() {
        let m = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].target, "/");
        assert!(m[0].has_option("ro"));
        assert_eq!(m[1].fstype, "proc");
        assert_eq!(
            m[1].options,
            ["rw", "nosuid", "nodev", "noexec", "relatime"]
        );
        assert_eq!(
            m[2].super_options,
            ["rw", "nsdelegate", "memory_recursiveprot"]
        );
        assert_eq!(m[2].parent, 22);
        assert_eq!(m[3].target, "/a b");
        assert_eq!(m[3].source, "tmp\\x");
    }

    #[test]
    fn mountinfo_rejects_short_lines() {
        for bad in [
            "1 2 3",
            "1 2 0:1 / / rw - tmpfs",
            "x 2 0:1 / / rw - tmpfs a rw",
        ] {
            assert!(parse_mountinfo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stat_handles_odd_command_names() {
        let cases = [
            ("1 (rampart-init) S 0 1 1", 1, "rampart-init", 'S', 0),
            ("42 (a) b) Z 1 42", 42, "a) b", 'Z', 1),
            ("7 (sleep x) R 3 7", 7, "sleep x", 'R', 3),
        ];
        for (text, pid, comm, state, ppid) in cases {
            let p = parse_stat(text).unwrap();
            assert_eq!(
                (p.pid, p.comm.as_str(), p.state, p.ppid),
                (pid, comm, state, ppid)
            );
        }
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn long_reports_are_chunked_at_char_boundaries() {
        let r = Report {
            errors: vec!["é".repeat(3 * CHUNK)],
            ..Report::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        let lines = report_lines(&json);
        assert!(lines.len() > 3);
        assert!(lines.iter().all(|l| l.len() <= CHUNK + 32));
        assert_eq!(find_report(&lines.join("\n")).unwrap(), r);
        assert!(report_lines("").is_empty());
    }

    #[test]
    fn vmrss_and_values() {
        assert_eq!(
            parse_vmrss_kib("Name:\tinit\nVmRSS:\t    1234 kB\n"),
            Some(1234)
        );
        assert_eq!(parse_vmrss_kib("Name:\tkthreadd\n"), None);
        assert_eq!(normalize_value(" 32768\t60999\n"), "32768 60999");
    }

    #[test]
    fn report_round_trips_through_a_console() {
        let r = Report {
            root_read_only: true,
            cgroup_subtree_control: "cpu io memory pids".into(),
            ..Report::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        let lines = report_lines(&json);
        assert_eq!(lines.len(), json.len().div_ceil(CHUNK));
        let console = format!(
            "[    1.0] boot\r\ncheck: {}\r\nrampart-init: poweroff\r\n",
            lines.join("\r\ncheck: ")
        );
        assert_eq!(find_report(&console).unwrap(), r);
        assert!(find_report("nothing here").is_err());
        assert!(find_report("RAMPART-CHECK 1/1 {broken").is_err());
        assert!(find_report("RAMPART-CHECK {\"a\":1}").is_err());
        if lines.len() > 1 {
            let missing: Vec<&String> = lines.iter().skip(1).collect();
            let text = missing
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(find_report(&text).is_err());
            let cut = lines[..lines.len() - 1].join("\n");
            assert!(find_report(&cut).is_err());
        }
    }
}
