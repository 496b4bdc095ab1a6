//! Inside the guest: gathers a [`Report`] and runs the orphan test.
//!
//! Every read failure is recorded in [`Report::errors`] rather than aborting, so that the host
//! always gets a line to judge. The root of `/proc`, `/sys` and the config file are parameters so
//! unit tests can point them at a temp tree.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::{
    normalize_value, parse_mountinfo, parse_stat, parse_vmrss_kib, OrphanResult, ProcInfo, Report,
};

/// Where the checker looks.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/proc`.
    pub proc: PathBuf,
    /// `/sys/fs/cgroup`.
    pub cgroup: PathBuf,
    /// The host config in the image.
    pub config: PathBuf,
    /// The root whose read-only state is reported.
    pub root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            cgroup: PathBuf::from("/sys/fs/cgroup"),
            config: PathBuf::from(rampart_config::IMAGE_CONFIG_PATH),
            root: PathBuf::from("/"),
        }
    }
}

/// How the orphan test is run.
#[derive(Debug, Clone)]
pub struct OrphanSpec {
    /// The program to run as `PROGRAM orphans COUNT` (the checker itself).
    pub program: PathBuf,
    /// How many grandchildren.
    pub count: u32,
    /// The bound on the wait for them to disappear.
    pub max_wait: Duration,
}

/// Gathers the full report. `orphans` is `None` to skip the orphan test.
pub fn gather(paths: &Paths, orphans: Option<&OrphanSpec>) -> Report {
    let mut r = Report::default();
    let mut errors = Vec::new();
    let mut read = |path: &Path| -> String {
        match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("read {}: {e}", path.display()));
                String::new()
            }
        }
    };

    let mountinfo = read(&paths.proc.join("1/mountinfo"));
    let self_mountinfo = read(&paths.proc.join("self/mountinfo"));
    let subtree = read(&paths.cgroup.join("cgroup.subtree_control"));
    let controllers = read(&paths.cgroup.join("cgroup.controllers"));
    let self_cgroup = read(&paths.proc.join("self/cgroup"));
    let pid1_cgroup = read(&paths.proc.join("1/cgroup"));
    let pid1_status = read(&paths.proc.join("1/status"));
    match parse_mountinfo(&mountinfo) {
        Ok(m) => r.mounts = m,
        Err(e) => errors.push(e.to_string()),
    }
    match parse_mountinfo(&self_mountinfo) {
        Ok(m) => r.service_mounts = m,
        Err(e) => errors.push(e.to_string()),
    }
    r.cgroup_subtree_control = subtree.trim().to_owned();
    r.cgroup_controllers = controllers.trim().to_owned();
    r.self_cgroup = self_cgroup.trim().to_owned();
    r.pid1_cgroup = pid1_cgroup.trim().to_owned();
    r.pid1_rss_kib = parse_vmrss_kib(&pid1_status);
    r.root_read_only = match root_read_only(&paths.root) {
        Ok(ro) => ro,
        Err(e) => {
            errors.push(format!("statvfs {}: {e}", paths.root.display()));
            false
        }
    };
    match planned_sysctl_keys(&paths.config) {
        Ok(keys) => r.sysctls = read_sysctls(&paths.proc.join("sys"), &keys, &mut errors),
        Err(e) => errors.push(e),
    }
    r.zombies_before = zombies(&paths.proc);
    if let Some(spec) = orphans {
        r.orphans = orphan_test(&paths.proc, spec, &mut errors);
    }
    r.errors = errors;
    r
}

/// Whether the filesystem at `root` is mounted read-only.
pub fn root_read_only(root: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(root.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory the size of
    // a statvfs; statvfs(3) initialises it fully when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    Ok(st.f_flag & libc::ST_RDONLY != 0)
}

/// The dotted keys of every sysctl the host config at `config` plans.
pub fn planned_sysctl_keys(config: &Path) -> Result<Vec<String>, String> {
    let cfg =
        rampart_config::load(config).map_err(|e| format!("load {}: {e}", config.display()))?;
    Ok(crate::expect::planned_sysctls(&cfg)
        .into_iter()
        .map(|(k, _)| k)
        .collect())
}

/// Reads each dotted key below `proc_sys`; a missing file gives `None`.
pub fn read_sysctls(
    proc_sys: &Path,
    keys: &[String],
    errors: &mut Vec<String>,
) -> BTreeMap<String, Option<String>> {
    keys.iter()
        .map(|k| {
            let path = proc_sys.join(k.replace('.', "/"));
            let value = match std::fs::read_to_string(&path) {
                Ok(v) => Some(normalize_value(&v)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    errors.push(format!("read {}: {e}", path.display()));
                    Some(format!("<unreadable: {e}>"))
                }
            };
            (k.clone(), value)
        })
        .collect()
}

/// Every process under `proc`, skipping any that vanish while being read.
pub fn processes(proc: &Path) -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut out: Vec<ProcInfo> = dir
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s).ok())
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// Every process in state `Z`.
pub fn zombies(proc: &Path) -> Vec<ProcInfo> {
    processes(proc)
        .into_iter()
        .filter(|p| p.state == 'Z')
        .collect()
}

/// Runs `PROGRAM orphans COUNT`, reads the grandchildren's PIDs from its stdout, waits for it,
/// then waits (bounded) until none of the grandchildren remains, then lists zombies.
pub fn orphan_test(proc: &Path, spec: &OrphanSpec, errors: &mut Vec<String>) -> OrphanResult {
    let mut result = OrphanResult {
        requested: spec.count,
        ..OrphanResult::default()
    };
    let child = Command::new(&spec.program)
        .arg("orphans")
        .arg(spec.count.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            errors.push(format!("spawn {} orphans: {e}", spec.program.display()));
            return result;
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        if let Err(e) = stdout.read_to_string(&mut out) {
            errors.push(format!("read orphan pids: {e}"));
        }
    }
    match child.wait() {
        Ok(status) => result.child_ok = status.success(),
        Err(e) => errors.push(format!("wait for the orphan parent: {e}")),
    }
    let pids: Vec<i32> = out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    result.spawned = u32::try_from(pids.len()).unwrap_or(u32::MAX);
    let start = Instant::now();
    let mut first = true;
    loop {
        let remaining: Vec<ProcInfo> = pids
            .iter()
            .filter_map(|pid| std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok())
            .filter_map(|s| parse_stat(&s).ok())
            .collect();
        if first {
            let mut parents: Vec<i32> = remaining.iter().map(|p| p.ppid).collect();
            parents.sort_unstable();
            parents.dedup();
            result.adopted_by = parents;
            first = false;
        }
        if remaining.is_empty() || start.elapsed() >= spec.max_wait {
            result.remaining = remaining;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    result.waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    result.zombies_after = zombies(proc);
    result
}

/// The `orphans COUNT` mode: forks `count` children that each sleep `sleep` and exit, prints
/// their PIDs on stdout (one line) and returns so the caller exits at once, orphaning them.
pub fn spawn_orphans(count: u32, sleep: Duration) -> std::io::Result<Vec<i32>> {
    let secs = libc::c_uint::try_from(sleep.as_secs()).unwrap_or(1);
    let mut pids = Vec::new();
    for _ in 0..count {
        // SAFETY: the child calls only async-signal-safe functions (sleep, _exit) and never
        // returns into Rust code, so forking a possibly multi-threaded process is sound.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => {
                let e = std::io::Error::last_os_error();
                if pids.is_empty() {
                    return Err(e);
                }
                break;
            }
            0 => {
                // SAFETY: see above; close(2), sleep(3) and _exit(2) are async-signal-safe.
                // Closing stdout lets the caller's read of the PID list end without waiting
                // for the children.
                unsafe {
                    libc::close(1);
                    libc::sleep(secs);
                    libc::_exit(0);
                }
            }
            pid => pids.push(pid),
        }
    }
    Ok(pids)
}

/// One result line of an in-guest test program: `PREFIX KEY=VALUE`, control characters of the
/// value turned into spaces so it stays on one line.
pub fn result_line(prefix: &str, key: &str, value: &str) -> String {
    let value: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{prefix}{key}={}", value.trim())
}

/// Prints [`result_line`] on stdout and flushes it (the console is read as it comes).
pub fn say(prefix: &str, key: &str, value: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", result_line(prefix, key, value));
    let _ = out.flush();
}

/// The `--flag value` pairs of an in-guest program's options, in order (every option takes a
/// value); a flag without one is an error naming it.
pub fn flag_pairs(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    args.chunks(2)
        .map(|pair| match pair {
            [flag, value] => Ok((flag.as_str(), value.as_str())),
            [flag] => Err(format!("{flag} needs a value")),
            _ => Err("no option".to_owned()),
        })
        .collect()
}

/// A whole number of seconds given to `flag`.
pub fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("{flag} {value}: not a number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_pairs() {
        let args = |v: &[&str]| -> Vec<String> { v.iter().map(|s| (*s).to_owned()).collect() };
        let a = args(&["--a", "1", "--b", "x y"]);
        assert_eq!(flag_pairs(&a).unwrap(), [("--a", "1"), ("--b", "x y")]);
        assert_eq!(flag_pairs(&[]).unwrap(), []);
        let e = flag_pairs(&args(&["--a", "1", "--b"])).unwrap_err();
        assert_eq!(e, "--b needs a value");
        assert_eq!(seconds("--wait", "5"), Ok(Duration::from_secs(5)));
        let e = seconds("--wait", "-1").unwrap_err();
        assert_eq!(e, "--wait -1: not a number of seconds");
    }

    #[test]
    fn sysctls_read_back_normalized_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kernel")).unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        std::fs::write(dir.path().join("kernel/kptr_restrict"), "2\n").unwrap();
        std::fs::write(
            dir.path().join("net/ipv4/ip_local_port_range"),
            "32768\t60999\n",
        )
        .unwrap();
        let keys = [
            "kernel.kptr_restrict".to_owned(),
            "net.ipv4.ip_local_port_range".to_owned(),
            "dev.tty.legacy_tiocsti".to_owned(),
        ];
        let mut errors = Vec::new();
        let got = read_sysctls(dir.path(), &keys, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(got["kernel.kptr_restrict"].as_deref(), Some("2"));
        assert_eq!(
            got["net.ipv4.ip_local_port_range"].as_deref(),
            Some("32768 60999")
        );
        assert_eq!(got["dev.tty.legacy_tiocsti"], None);
    }

    #[test]
    fn processes_of_a_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, stat) in [
            ("1", "1 (init) S 0 1"),
            ("9", "9 (z z) Z 1 9"),
            ("self", "x"),
        ] {
            std::fs::create_dir_all(dir.path().join(pid)).unwrap();
            std::fs::write(dir.path().join(pid).join("stat"), stat).unwrap();
        }
        let all = processes(dir.path());
        assert_eq!(all.len(), 2);
        let z = zombies(dir.path());
        assert_eq!(z.len(), 1);
        assert_eq!(z[0].comm, "z z");
    }

    #[test]
    fn real_proc_is_readable() {
        let me = std::process::id();
        let procs = processes(Path::new("/proc"));
        assert!(procs.iter().any(|p| u32::try_from(p.pid).ok() == Some(me)));
        assert!(!root_read_only(Path::new("/proc")).unwrap());
    }
}
