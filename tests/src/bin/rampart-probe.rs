//! The container probe of the rampart end-to-end tests: a static program run inside a container
//! to show which dangerous operations the container policy blocks.
//!
//! ```text
//! rampart-probe all              try every operation below, print one line
//!                                `RAMPART-PROBE {"all":{"probes":[{"name":..,"blocked":..,"detail":..},..],"not_blocked":[..]}}`
//! rampart-probe forkbomb [N]     fork pausing children until fork fails, N exist (100000) or 20 s
//!                                pass; print `RAMPART-PROBE {"forkbomb":{"spawned":K,"stopped_by":"EAGAIN",..}}`
//! rampart-probe memhog [MIB]     allocate and touch 16 MiB chunks up to MIB (4096), printing
//!                                `RAMPART-PROBE {"memhog":{"mib":M}}` after each chunk
//! rampart-probe sleep SECS       print `RAMPART-PROBE {"sleep":{"seconds":SECS}}`, sleep; SIGTERM
//!                                and SIGINT end it with status 0 (it may be a container's PID 1)
//! rampart-probe status           print `RAMPART-PROBE {"status":{"CapEff":..,"Seccomp":..,..}}`
//! rampart-probe cat PATH         print `RAMPART-PROBE {"cat":{"path":PATH,"text":..}}` (or
//!                                `"error":..`; exits 0 either way: the text is the result)
//! rampart-probe control-flood SOCKET N   N abusive connections to PID 1's control socket,
//!                                then a `status`: `CTL-PROBE {"flood":{..}}` (see ctlprobe.rs)
//! rampart-probe control-nobody SOCKET    connect as uid 65534: `CTL-PROBE {"nobody":{..}}`
//! ```
//!
//! Every attempt is harmless even where it succeeds (for instance as root on a build host):
//! where the operation itself would change the system, the probe passes an argument the kernel
//! rejects only *after* its permission check (a bad reboot magic, an out-of-range time zone,
//! too many kexec segments, a missing swap file, a module that is not an ELF file), so an
//! `EPERM` means "denied" and any other error means "permitted, but nothing happened".
//! Operations that change only the probe itself (unshare, keyrings, mounts) run in a forked child
//! that first tries to move into private namespaces; files are opened for writing but nothing is
//! ever written; created files and mounts are removed again.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

/// The prefix of every line the probe prints for the test suite.
const PREFIX: &str = "RAMPART-PROBE ";
/// How long a probe run in a forked child may take before the child is killed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of children `forkbomb` stops at.
const FORKBOMB_DEFAULT: u64 = 100_000;
/// How long `forkbomb` keeps forking at most.
const FORKBOMB_TIME: Duration = Duration::from_secs(20);
/// The default amount of memory `memhog` allocates, in MiB.
const MEMHOG_DEFAULT_MIB: u64 = 4096;
/// The size of one `memhog` chunk, in MiB.
const MEMHOG_CHUNK_MIB: u64 = 16;
/// A path that must not exist (checked before `swapon` is tried on it).
const NO_SUCH_SWAP: &str = "/rampart-probe-no-such-dir/swapfile";
/// A kernel module name that must not exist.
const NO_SUCH_MODULE: &CStr = c"rampart_probe_no_such_module";
/// The containerd socket a container must not reach.
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The `/proc/self/status` fields `status` reports.
const STATUS_FIELDS: &[&str] = &[
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(code) = rampart_tests::ctlprobe::main(&argv) {
        std::process::exit(code);
    }
    let code = match Mode::parse(&argv) {
        Ok(mode) => run(mode),
        Err(message) => {
            eprintln!("rampart-probe: {message}");
            eprintln!(
                "usage: rampart-probe all | forkbomb [N] | memhog [MIB] | sleep SECS | status"
            );
            2
        }
    };
    std::process::exit(code);
}

/// What the probe was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    All,
    Forkbomb(u64),
    Memhog(u64),
    Sleep(u64),
    Status,
    Cat(String),
}

impl Mode {
    fn parse(args: &[&str]) -> Result<Mode, String> {
        let number = |what: &str, text: &str| {
            text.parse::<u64>()
                .map_err(|e| format!("{what}: {text:?}: {e}"))
        };
        match args {
            ["all"] => Ok(Mode::All),
            ["forkbomb"] => Ok(Mode::Forkbomb(FORKBOMB_DEFAULT)),
            ["forkbomb", n] => Ok(Mode::Forkbomb(number("forkbomb N", n)?)),
            ["memhog"] => Ok(Mode::Memhog(MEMHOG_DEFAULT_MIB)),
            ["memhog", mib] => Ok(Mode::Memhog(number("memhog MIB", mib)?)),
            ["sleep", secs] => Ok(Mode::Sleep(number("sleep SECS", secs)?)),
            ["status"] => Ok(Mode::Status),
            ["cat", path] => Ok(Mode::Cat((*path).to_owned())),
            _ => Err(format!("bad arguments: {args:?}")),
        }
    }
}

fn run(mode: Mode) -> i32 {
    match mode {
        Mode::All => emit(&all_line(&run_all())),
        Mode::Forkbomb(limit) => forkbomb(limit, FORKBOMB_TIME),
        Mode::Memhog(mib) => memhog(mib),
        Mode::Sleep(secs) => sleep(secs),
        Mode::Cat(path) => emit(&tagged(
            "cat",
            &match std::fs::read_to_string(&path) {
                Ok(text) => json!({ "path": path, "text": text }),
                Err(e) => json!({ "path": path, "error": e.to_string() }),
            },
        )),
        Mode::Status => match std::fs::read_to_string("/proc/self/status") {
            Ok(text) => emit(&tagged("status", &status_fields(&text))),
            Err(e) => {
                eprintln!("rampart-probe: read /proc/self/status: {e}");
                1
            }
        },
    }
}

/// Prints one line and flushes it; returns the exit status.
fn emit(line: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `RAMPART-PROBE {"<mode>": value}`.
/// Struct fields keep their declaration order.
fn tagged<T: Serialize + ?Sized>(mode: &str, value: &T) -> String {
    let object = BTreeMap::from([(mode, value)]);
    match serde_json::to_string(&object) {
        Ok(text) => format!("{PREFIX}{text}"),
        Err(e) => format!("{PREFIX}{}", json!({ "error": e.to_string() })),
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes and their classification (pure).

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// The operation succeeded; what it did.
    Done(String),
    /// The operation failed with this errno.
    Failed(i32),
    /// The probe could not make the attempt (e.g. fork failed); why.
    Inconclusive(String),
}

/// Which errors count as "blocked".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    /// Only these errnos: any other means the call got past the permission check (the probe
    /// passes arguments the kernel rejects after that check).
    Errnos(&'static [i32]),
    /// Any failure: the operation is real and a failure means it did not happen.
    AnyFailure,
}

/// The errnos of a permission denial: capability or seccomp `EPERM`, `EACCES`, and seccomp's
/// `ENOSYS`.
const DENIED: Denial = Denial::Errnos(&[libc::EPERM, libc::EACCES, libc::ENOSYS]);

/// One line of the `all` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Finding {
    name: &'static str,
    blocked: bool,
    detail: String,
}

/// Whether `attempt` counts as blocked under `denial`, and its detail text.
fn judge(name: &'static str, attempt: &Attempt, denial: Denial) -> Finding {
    let (blocked, detail) = match attempt {
        Attempt::Done(what) => (false, format!("succeeded: {what}")),
        Attempt::Failed(errno) => {
            let blocked = match denial {
                Denial::Errnos(list) => list.contains(errno),
                Denial::AnyFailure => true,
            };
            let text = errno_text(*errno);
            if blocked {
                (true, text)
            } else {
                (false, format!("{text}, not a denial"))
            }
        }
        Attempt::Inconclusive(why) => (false, format!("inconclusive: {why}")),
    };
    Finding {
        name,
        blocked,
        detail,
    }
}

/// `errno EPERM (1)`.
fn errno_text(errno: i32) -> String {
    format!("errno {} ({errno})", errno_name(errno))
}

fn errno_name(errno: i32) -> &'static str {
    const NAMES: &[(i32, &str)] = &[
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::ESRCH, "ESRCH"),
        (libc::EINTR, "EINTR"),
        (libc::EIO, "EIO"),
        (libc::ENXIO, "ENXIO"),
        (libc::E2BIG, "E2BIG"),
        (libc::ENOEXEC, "ENOEXEC"),
        (libc::EBADF, "EBADF"),
        (libc::ECHILD, "ECHILD"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EFAULT, "EFAULT"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENODEV, "ENODEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENFILE, "ENFILE"),
        (libc::EMFILE, "EMFILE"),
        (libc::ENOTTY, "ENOTTY"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::EROFS, "EROFS"),
        (libc::EPIPE, "EPIPE"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ELOOP, "ELOOP"),
        (libc::ENODATA, "ENODATA"),
        (libc::ENOTSOCK, "ENOTSOCK"),
        (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT"),
        (libc::ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
        (libc::EADDRINUSE, "EADDRINUSE"),
        (libc::ECONNREFUSED, "ECONNREFUSED"),
        (libc::ESTALE, "ESTALE"),
        (libc::EDQUOT, "EDQUOT"),
        (libc::ENOKEY, "ENOKEY"),
        (libc::EKEYREVOKED, "EKEYREVOKED"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == errno)
        .map_or("E?", |(_, name)| *name)
}

/// The `all` report line.
fn all_line(findings: &[Finding]) -> String {
    let not_blocked: Vec<&'static str> = findings
        .iter()
        .filter(|f| !f.blocked)
        .map(|f| f.name)
        .collect();
    tagged(
        "all",
        &AllReport {
            probes: findings,
            not_blocked,
        },
    )
}

/// The `all` report.
#[derive(Debug, Serialize)]
struct AllReport<'a> {
    probes: &'a [Finding],
    not_blocked: Vec<&'static str>,
}

/// The `status` fields of a `/proc/PID/status` text, by name.
fn status_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| STATUS_FIELDS.contains(key))
        .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
        .collect()
}

/// How a child reports its attempt through a pipe: `D<detail>`, `F<errno>` or `I<why>`.
fn encode(attempt: &Attempt) -> String {
    match attempt {
        Attempt::Done(what) => format!("D{what}"),
        Attempt::Failed(errno) => format!("F{errno}"),
        Attempt::Inconclusive(why) => format!("I{why}"),
    }
}

fn decode(text: &str) -> Attempt {
    let mut chars = text.chars();
    let tag = chars.next();
    let rest = chars.as_str();
    match tag {
        Some('D') => Attempt::Done(rest.to_owned()),
        Some('F') => match rest.parse() {
            Ok(errno) => Attempt::Failed(errno),
            Err(_) => Attempt::Inconclusive(format!("bad child message {text:?}")),
        },
        Some('I') => Attempt::Inconclusive(rest.to_owned()),
        _ => Attempt::Inconclusive(format!("bad child message {text:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Thin syscall helpers.

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A syscall return value as `Ok(value)` or `Err(errno)`.
fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// A syscall result as an attempt; `what` describes a success. A returned fd is closed.
fn attempt_fd(ret: libc::c_long, what: &str) -> Attempt {
    match check(ret) {
        Ok(fd) => {
            close(fd);
            Attempt::Done(what.to_owned())
        }
        Err(e) => Attempt::Failed(e),
    }
}

fn close(fd: libc::c_long) {
    if let Ok(fd) = libc::c_int::try_from(fd) {
        // SAFETY: closing an fd this probe opened and does not use afterwards.
        unsafe { libc::close(fd) };
    }
}

fn cpath(path: &Path) -> Result<CString, Attempt> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Attempt::Inconclusive(format!("{} contains NUL", path.display())))
}

fn open(path: &Path, flags: libc::c_int) -> Result<libc::c_int, i32> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: `c` is a valid NUL-terminated path; the fd is owned by the caller.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

/// Opens `path` for writing, never writes, closes it.
fn open_for_write(path: &Path) -> Attempt {
    match open(path, libc::O_WRONLY | libc::O_NOCTTY) {
        Ok(fd) => {
            close(fd.into());
            Attempt::Done("opened for writing (nothing written)".to_owned())
        }
        Err(e) => Attempt::Failed(e),
    }
}

/// Tries to move into private namespaces (`CLONE_NEW*` in `flags`, mount propagation made
/// private); returns whether that worked. Used in forked children only, so that an operation
/// that unexpectedly succeeds stays out of the host's namespaces.
fn isolate(flags: libc::c_int) -> bool {
    // SAFETY: unshare takes no pointers; it only changes this (child) process.
    if unsafe { libc::unshare(flags) } != 0 {
        return false;
    }
    if flags & libc::CLONE_NEWNS != 0 {
        // SAFETY: valid NUL-terminated strings; MS_REC|MS_PRIVATE on "/" only changes the
        // propagation in this child's new mount namespace.
        let r = unsafe {
            libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        return r == 0;
    }
    true
}

/// Creates a fresh empty directory in the first writable place.
fn scratch_dir() -> Result<PathBuf, Attempt> {
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Some(tmp) = std::env::var_os("TMPDIR") {
        bases.push(PathBuf::from(tmp));
    }
    bases.extend(["/tmp", "/dev/shm", "/var/tmp", "/run", "/"].map(PathBuf::from));
    let mut last = libc::ENOENT;
    for base in bases {
        let Ok(template) = CString::new(
            base.join("rampart-probe-XXXXXX")
                .as_os_str()
                .as_bytes()
                .to_vec(),
        ) else {
            continue;
        };
        let mut buf = template.into_bytes_with_nul();
        // SAFETY: `buf` is a writable NUL-terminated template ending in XXXXXX.
        let r = unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) };
        if r.is_null() {
            last = errno();
            continue;
        }
        buf.pop();
        return Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&buf)));
    }
    Err(Attempt::Inconclusive(format!(
        "no writable directory for a scratch dir ({})",
        errno_text(last)
    )))
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// Runs `f` in a forked child and returns what it reported through a pipe. The child is
/// killed after `timeout`.
fn in_child(timeout: Duration, f: impl FnOnce() -> Attempt) -> Attempt {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Attempt::Inconclusive(format!("pipe: {}", errno_text(errno())));
    }
    let [rd, wr] = fds;
    let _ = std::io::stdout().flush();
    // SAFETY: the probe is single-threaded, so the child may run ordinary code after fork (in
    // the multi-threaded unit tests glibc's fork keeps malloc usable in the child); the child
    // leaves with _exit and never returns into the parent's logic.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = errno();
        close(rd.into());
        close(wr.into());
        return Attempt::Inconclusive(format!("fork: {}", errno_text(e)));
    }
    if pid == 0 {
        close(rd.into());
        let message = encode(&f());
        write_all(wr, message.as_bytes());
        // SAFETY: ends the child without running the parent's exit handlers or flushing its
        // inherited buffers.
        unsafe { libc::_exit(0) };
    }
    close(wr.into());
    let text = read_until_eof(rd, timeout);
    close(rd.into());
    let timed_out = text.is_none();
    if timed_out {
        kill(pid);
    }
    reap(pid);
    match text {
        Some(text) => decode(&text),
        None => Attempt::Inconclusive(format!("no answer within {timeout:?}")),
    }
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes from a valid slice to an fd this process owns.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => bytes = bytes.get(n..).unwrap_or_default(),
            _ if n < 0 && errno() == libc::EINTR => {}
            _ => return,
        }
    }
}

/// Reads `fd` to end of file; `None` when that takes longer than `timeout`.
fn read_until_eof(fd: libc::c_int, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: polls one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return None;
        }
        if r == 0 {
            continue;
        }
        // SAFETY: reads into a valid buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(_) if errno() == libc::EINTR => {}
            Err(_) => return Some(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

fn kill(pid: libc::pid_t) {
    // SAFETY: sends SIGKILL to a child of this process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Waits for `pid` to exit (skipping ptrace stops).
fn reap(pid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return;
        }
    }
}

/// Forks a child that pauses until killed (and dies with its parent).
fn spawn_pauser() -> Result<libc::pid_t, i32> {
    // SAFETY: the probe is single-threaded; the child only calls async-signal-safe functions.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno());
    }
    if pid == 0 {
        // SAFETY: prctl with integer arguments; pause and _exit take none.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            loop {
                libc::pause();
            }
        }
    }
    Ok(pid)
}

// ---------------------------------------------------------------------------------------------
// The probes of `all`.

fn run_all() -> Vec<Finding> {
    let probes: &[fn() -> Finding] = &[
        probe_mount,
        probe_unshare_user,
        probe_unshare_mount,
        probe_init_module,
        probe_finit_module,
        probe_delete_module,
        probe_kexec_load,
        probe_kexec_file_load,
        probe_reboot,
        probe_settimeofday,
        probe_clock_settime,
        probe_adjtimex,
        probe_sethostname,
        probe_swapon,
        probe_raw_socket,
        probe_packet_socket,
        probe_mknod,
        probe_ptrace,
        probe_bpf,
        probe_perf_event_open,
        probe_userfaultfd,
        probe_keyctl,
        probe_add_key,
        probe_io_uring,
        probe_open_by_handle_at,
        probe_sysrq_trigger,
        probe_core_pattern,
        probe_release_agent,
        probe_kcore,
        probe_containerd_socket,
    ];
    probes.iter().map(|probe| probe()).collect()
}

/// Mounts a tmpfs on a fresh directory (in a child, in a private mount namespace if it can
/// make one), unmounts it and removes the directory.
fn probe_mount() -> Finding {
    let attempt = in_child(CHILD_TIMEOUT, || {
        let private = isolate(libc::CLONE_NEWNS);
        let dir = match scratch_dir() {
            Ok(dir) => dir,
            Err(a) => return a,
        };
        let attempt = match cpath(&dir) {
            Ok(target) => {
                // SAFETY: valid NUL-terminated strings; a small tmpfs on our own empty dir.
                let r = unsafe {
                    libc::mount(
                        c"rampart-probe".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=64k".as_ptr().cast(),
                    )
                };
                if r == 0 {
                    // SAFETY: unmounts the tmpfs mounted just above.
                    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
                    Attempt::Done(format!(
                        "mounted a tmpfs{}",
                        if private { " (private mount ns)" } else { "" }
                    ))
                } else {
                    Attempt::Failed(errno())
                }
            }
            Err(a) => a,
        };
        remove_dir(&dir);
        attempt
    });
    judge("mount", &attempt, DENIED)
}

fn unshare_in_child(flags: libc::c_int, what: &str) -> Attempt {
    in_child(CHILD_TIMEOUT, || {
        // SAFETY: unshare takes no pointers; it only changes this child process.
        if unsafe { libc::unshare(flags) } == 0 {
            Attempt::Done(what.to_owned())
        } else {
            Attempt::Failed(errno())
        }
    })
}

fn probe_unshare_user() -> Finding {
    let attempt = unshare_in_child(libc::CLONE_NEWUSER, "new user namespace");
    judge("unshare_user", &attempt, DENIED)
}

fn probe_unshare_mount() -> Finding {
    let attempt = unshare_in_child(libc::CLONE_NEWNS, "new mount namespace");
    judge("unshare_mount", &attempt, DENIED)
}

/// init_module with four zero bytes: the capability check comes first; a permitted caller gets
/// ENOEXEC because the buffer is not an ELF file. Nothing can be loaded.
fn probe_init_module() -> Finding {
    let image = [0u8; 4];
    // SAFETY: passes a valid 4-byte buffer and an empty NUL-terminated parameter string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            c"".as_ptr(),
        )
    };
    judge("init_module", &attempt_fd_noclose(r, "loaded?!"), DENIED)
}

/// finit_module of fd -1: the capability check comes first, a permitted caller gets EBADF.
fn probe_finit_module() -> Finding {
    // SAFETY: an invalid fd and an empty NUL-terminated parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0) };
    judge("finit_module", &attempt_fd_noclose(r, "loaded?!"), DENIED)
}

/// delete_module of a name no module has: EPERM when denied, ENOENT when permitted.
fn probe_delete_module() -> Finding {
    // SAFETY: a valid NUL-terminated name of a module that does not exist.
    let r = unsafe {
        libc::syscall(
            libc::SYS_delete_module,
            NO_SUCH_MODULE.as_ptr(),
            libc::O_NONBLOCK,
        )
    };
    judge("delete_module", &attempt_fd_noclose(r, "removed?!"), DENIED)
}

/// A syscall result that is not an fd.
fn attempt_fd_noclose(ret: libc::c_long, what: &str) -> Attempt {
    match check(ret) {
        Ok(_) => Attempt::Done(what.to_owned()),
        Err(e) => Attempt::Failed(e),
    }
}

/// kexec_load with more segments than the kernel allows (and no segment array): the
/// CAP_SYS_BOOT check comes first, a permitted caller gets EINVAL. (Zero segments would unload
/// a loaded kexec kernel, so it is not used.)
fn probe_kexec_load() -> Finding {
    const TOO_MANY_SEGMENTS: libc::c_ulong = 100_000;
    // SAFETY: a null segment pointer is never read because the count is rejected first.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as libc::c_ulong,
            TOO_MANY_SEGMENTS,
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    };
    judge("kexec_load", &attempt_fd_noclose(r, "loaded?!"), DENIED)
}

/// kexec_file_load with an unknown flag and fds -1: CAP_SYS_BOOT is checked first, a permitted
/// caller gets EINVAL.
fn probe_kexec_file_load() -> Finding {
    const UNKNOWN_FLAG: libc::c_ulong = 1 << 30;
    // SAFETY: invalid fds, no command line; the flag is rejected before anything is read.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1 as libc::c_int,
            -1 as libc::c_int,
            0 as libc::c_ulong,
            std::ptr::null::<libc::c_char>(),
            UNKNOWN_FLAG,
        )
    };
    judge(
        "kexec_file_load",
        &attempt_fd_noclose(r, "loaded?!"),
        DENIED,
    )
}

/// reboot(2) with a wrong second magic: CAP_SYS_BOOT is checked before the magic numbers, so a
/// permitted caller gets EINVAL and nothing happens.
fn probe_reboot() -> Finding {
    const BAD_MAGIC2: libc::c_int = 0;
    // SAFETY: integer arguments and a null argument pointer that the kernel never reads
    // because the magic is wrong.
    let r = unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            BAD_MAGIC2,
            libc::LINUX_REBOOT_CMD_CAD_OFF,
            std::ptr::null::<libc::c_void>(),
        )
    };
    judge("reboot", &attempt_fd_noclose(r, "rebooted?!"), DENIED)
}

/// `struct timezone`.
#[repr(C)]
struct TimeZone {
    minutes_west: libc::c_int,
    dst_time: libc::c_int,
}

/// settimeofday(NULL, tz) with a time zone 1000 h west: CAP_SYS_TIME is checked before the
/// ±15 h range, so a permitted caller gets EINVAL; neither the time nor the zone changes.
fn probe_settimeofday() -> Finding {
    let tz = TimeZone {
        minutes_west: 60_000,
        dst_time: 0,
    };
    // SAFETY: a null timeval (the time is not set) and a valid timezone struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_settimeofday,
            std::ptr::null::<libc::timeval>(),
            &tz as *const TimeZone,
        )
    };
    judge("settimeofday", &attempt_fd_noclose(r, "set?!"), DENIED)
}

/// adjtimex(ADJ_TICK, tick = 0): CAP_SYS_TIME is checked before the tick range, so a permitted
/// caller gets EINVAL and the clock is untouched.
fn adjtimex_attempt() -> Attempt {
    // SAFETY: timex is plain old data; all zeros is a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = libc::ADJ_TICK;
    tx.tick = 0;
    // SAFETY: passes a valid, writable timex struct.
    let r = unsafe { libc::syscall(libc::SYS_adjtimex, &mut tx as *mut libc::timex) };
    attempt_fd_noclose(r, "adjusted?!")
}

fn probe_adjtimex() -> Finding {
    judge("adjtimex", &adjtimex_attempt(), DENIED)
}

/// clock_settime(CLOCK_REALTIME) with tv_nsec = -1. The kernel validates the time before its
/// capability check, so this shows only whether a filter (seccomp) denies the call: EINVAL
/// means it reached the kernel. Then CAP_SYS_TIME is tested with adjtimex (see above). The
/// clock is never set.
fn probe_clock_settime() -> Finding {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: -1,
    };
    // SAFETY: passes a valid (if out-of-range) timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clock_settime,
            libc::CLOCK_REALTIME,
            &ts as *const libc::timespec,
        )
    };
    let first = attempt_fd_noclose(r, "set?!");
    if first != Attempt::Failed(libc::EINVAL) {
        return judge("clock_settime", &first, DENIED);
    }
    let mut finding = judge("clock_settime", &adjtimex_attempt(), DENIED);
    finding.detail = format!(
        "reached the kernel (invalid time: EINVAL); CAP_SYS_TIME via adjtimex: {}",
        finding.detail
    );
    finding
}

/// sethostname to the current hostname, in a child in a private UTS namespace if it can make
/// one (the permission check is the same in either).
fn probe_sethostname() -> Finding {
    let attempt = in_child(CHILD_TIMEOUT, || {
        let private = isolate(libc::CLONE_NEWUTS);
        let mut name = [0u8; 256];
        // SAFETY: a writable buffer of the given length.
        if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } != 0 {
            return Attempt::Inconclusive(format!("gethostname: {}", errno_text(errno())));
        }
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        // SAFETY: the current name, `len` bytes of a valid buffer.
        if unsafe { libc::sethostname(name.as_ptr().cast(), len) } == 0 {
            Attempt::Done(format!(
                "set to its current value{}",
                if private { " (private UTS ns)" } else { "" }
            ))
        } else {
            Attempt::Failed(errno())
        }
    });
    judge("sethostname", &attempt, DENIED)
}

/// swapon of a path that does not exist: EPERM when denied, ENOENT when permitted.
fn probe_swapon() -> Finding {
    let path = Path::new(NO_SUCH_SWAP);
    let attempt = if path.symlink_metadata().is_ok() {
        Attempt::Inconclusive(format!("{NO_SUCH_SWAP} exists, not trying"))
    } else {
        match cpath(path) {
            Ok(c) => {
                // SAFETY: a valid NUL-terminated path that does not exist.
                let r = unsafe { libc::syscall(libc::SYS_swapon, c.as_ptr(), 0) };
                attempt_fd_noclose(r, "swap enabled?!")
            }
            Err(a) => a,
        }
    };
    judge("swapon", &attempt, DENIED)
}

fn socket_attempt(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> Attempt {
    // SAFETY: socket takes integers only; the fd is closed at once.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    attempt_fd(fd.into(), "socket created")
}

fn probe_raw_socket() -> Finding {
    let attempt = socket_attempt(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
    judge("raw_socket", &attempt, DENIED)
}

/// An AF_PACKET socket with protocol 0 (it receives nothing until bound).
fn probe_packet_socket() -> Finding {
    let attempt = socket_attempt(libc::AF_PACKET, libc::SOCK_RAW, 0);
    judge("packet_socket", &attempt, DENIED)
}

/// mknod of a character device (1:3, like /dev/null) in a fresh directory, removed again.
fn probe_mknod() -> Finding {
    let attempt = match scratch_dir() {
        Err(a) => a,
        Ok(dir) => {
            let node = dir.join("null");
            let attempt = match cpath(&node) {
                Ok(c) => {
                    // SAFETY: a valid NUL-terminated path in our own fresh directory.
                    let r = unsafe {
                        libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3))
                    };
                    if r == 0 {
                        let _ = std::fs::remove_file(&node);
                        Attempt::Done("char device 1:3 created (removed)".to_owned())
                    } else {
                        Attempt::Failed(errno())
                    }
                }
                Err(a) => a,
            };
            remove_dir(&dir);
            attempt
        }
    };
    judge("mknod", &attempt, DENIED)
}

/// PTRACE_ATTACH to a pausing child of the probe, which is killed afterwards.
fn probe_ptrace() -> Finding {
    let attempt = match spawn_pauser() {
        Err(e) => Attempt::Inconclusive(format!("fork: {}", errno_text(e))),
        Ok(pid) => {
            // SAFETY: PTRACE_ATTACH takes the pid and ignores the address and data arguments.
            let r = unsafe {
                libc::ptrace(
                    libc::PTRACE_ATTACH,
                    pid,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            let attempt = if r == 0 {
                Attempt::Done("attached to a child".to_owned())
            } else {
                Attempt::Failed(errno())
            };
            kill(pid);
            reap(pid);
            attempt
        }
    };
    judge("ptrace", &attempt, DENIED)
}

/// The leading fields of `union bpf_attr` for BPF_MAP_CREATE; the rest must be zero.
#[repr(C)]
struct BpfMapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    rest: [u32; 28],
}

/// BPF_MAP_CREATE of a one-entry array map, closed at once.
fn probe_bpf() -> Finding {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = BpfMapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        rest: [0; 28],
    };
    // SAFETY: passes a valid, zero-padded attribute struct and its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const BpfMapCreate,
            std::mem::size_of::<BpfMapCreate>(),
        )
    };
    judge("bpf", &attempt_fd(r, "map created"), DENIED)
}

/// `struct perf_event_attr` as of PERF_ATTR_SIZE_VER0 (64 bytes).
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// A disabled, user-space-only software counter on the probe itself (the form most likely to
/// be allowed), closed at once.
fn probe_perf_event_open() -> Finding {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_DUMMY: u64 = 9;
    const DISABLED: u64 = 1;
    const EXCLUDE_KERNEL: u64 = 1 << 5;
    const EXCLUDE_HV: u64 = 1 << 6;
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: 64,
        config: PERF_COUNT_SW_DUMMY,
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        flags: DISABLED | EXCLUDE_KERNEL | EXCLUDE_HV,
        wakeup_events: 0,
        bp_type: 0,
        config1: 0,
    };
    // SAFETY: passes a valid attribute struct; pid 0 (self), any cpu, no group, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            0 as libc::c_ulong,
        )
    };
    judge("perf_event_open", &attempt_fd(r, "counter opened"), DENIED)
}

/// userfaultfd, first in user-mode-only form (allowed without privilege where the kernel knows
/// it), then plain; the fd is closed at once.
fn probe_userfaultfd() -> Finding {
    const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    let call = |flags: libc::c_int| {
        // SAFETY: userfaultfd takes an integer flag word.
        unsafe { libc::syscall(libc::SYS_userfaultfd, flags | libc::O_CLOEXEC) }
    };
    let mut attempt = attempt_fd(call(UFFD_USER_MODE_ONLY), "fd created (user mode only)");
    if attempt == Attempt::Failed(libc::EINVAL) {
        attempt = attempt_fd(call(0), "fd created");
    }
    judge("userfaultfd", &attempt, DENIED)
}

/// KEYCTL_JOIN_SESSION_KEYRING with a new anonymous keyring, in a child (the keyring dies with
/// it).
fn probe_keyctl() -> Finding {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let attempt = in_child(CHILD_TIMEOUT, || {
        // SAFETY: a null name asks for a new anonymous session keyring of this child.
        let r = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<libc::c_char>(),
            )
        };
        attempt_fd_noclose(r, "joined a new session keyring")
    });
    judge("keyctl", &attempt, DENIED)
}

/// add_key of a one-byte "user" key to the process keyring of a child (it dies with it).
fn probe_add_key() -> Finding {
    const KEY_SPEC_PROCESS_KEYRING: libc::c_int = -2;
    let attempt = in_child(CHILD_TIMEOUT, || {
        let payload = b"x";
        // SAFETY: valid NUL-terminated type and description, a valid 1-byte payload.
        let r = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"rampart-probe".as_ptr(),
                payload.as_ptr(),
                payload.len(),
                KEY_SPEC_PROCESS_KEYRING,
            )
        };
        attempt_fd_noclose(r, "key added to the process keyring")
    });
    judge("add_key", &attempt, DENIED)
}

/// io_uring_setup with one entry and no flags (no kernel thread), closed at once.
fn probe_io_uring() -> Finding {
    // `struct io_uring_params` is 120 bytes; all zero but the entry count is valid.
    let mut params = [0u32; 30];
    // SAFETY: passes a valid, writable 120-byte params struct.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    judge("io_uring_setup", &attempt_fd(r, "ring created"), DENIED)
}

/// `struct file_handle` with room for MAX_HANDLE_SZ bytes.
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: libc::c_int,
    f_handle: [u8; 128],
}

/// open_by_handle_at of "/" (a handle from name_to_handle_at, or a bogus one when that is not
/// supported: CAP_DAC_READ_SEARCH is checked before the handle is decoded). Read-only, closed
/// at once.
fn probe_open_by_handle_at() -> Finding {
    let mut handle = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: valid path, writable handle with handle_bytes = its capacity, writable mount id.
    let named = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            &mut handle as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    } == 0;
    if !named {
        handle.handle_bytes = 8;
        handle.handle_type = 1;
        handle.f_handle = [0; 128];
    }
    let attempt = match open(Path::new("/"), libc::O_RDONLY | libc::O_DIRECTORY) {
        Err(e) => Attempt::Inconclusive(format!("open /: {}", errno_text(e))),
        Ok(mount_fd) => {
            // SAFETY: a valid mount fd and handle; the resulting fd is closed by attempt_fd.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_open_by_handle_at,
                    mount_fd,
                    &mut handle as *mut FileHandle,
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            let attempt = attempt_fd(r, "opened / by handle");
            close(mount_fd.into());
            attempt
        }
    };
    judge("open_by_handle_at", &attempt, DENIED)
}

/// Opens /proc/sysrq-trigger for writing and closes it without writing anything.
fn probe_sysrq_trigger() -> Finding {
    let attempt = open_for_write(Path::new("/proc/sysrq-trigger"));
    judge("sysrq_trigger", &attempt, Denial::AnyFailure)
}

/// Opens /proc/sys/kernel/core_pattern for writing and closes it without writing anything.
fn probe_core_pattern() -> Finding {
    let attempt = open_for_write(Path::new("/proc/sys/kernel/core_pattern"));
    judge("core_pattern", &attempt, Denial::AnyFailure)
}

/// A cgroup v1 `release_agent` that could be written: any existing one under /sys/fs/cgroup,
/// then one of a named v1 hierarchy mounted by a child (in a private mount namespace if it
/// can make one) on a fresh directory. Files are opened for writing, never written.
fn probe_release_agent() -> Finding {
    let mut errors = Vec::new();
    let mut candidates = vec![PathBuf::from("/sys/fs/cgroup/release_agent")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        candidates.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join("release_agent")),
        );
    }
    for path in &candidates {
        match open_for_write(path) {
            Attempt::Done(_) => {
                let done = Attempt::Done(format!("opened {} for writing", path.display()));
                return judge("release_agent", &done, Denial::AnyFailure);
            }
            Attempt::Failed(libc::ENOENT | libc::ENOTDIR) => {}
            Attempt::Failed(e) => {
                errors.push(format!("open {}: {}", path.display(), errno_text(e)))
            }
            Attempt::Inconclusive(why) => errors.push(why),
        }
    }
    if errors.is_empty() {
        errors.push("no release_agent under /sys/fs/cgroup".to_owned());
    }
    let mounted = in_child(CHILD_TIMEOUT, mount_cgroup_v1);
    let attempt = match mounted {
        Attempt::Failed(e) => {
            errors.push(format!("mount cgroup v1: {}", errno_text(e)));
            Attempt::Failed(e)
        }
        other => other,
    };
    let mut finding = judge("release_agent", &attempt, Denial::AnyFailure);
    if finding.blocked {
        finding.detail = errors.join("; ");
    }
    finding
}

/// In a child: mounts a named cgroup v1 hierarchy and opens its release_agent for writing.
fn mount_cgroup_v1() -> Attempt {
    let private = isolate(libc::CLONE_NEWNS);
    let dir = match scratch_dir() {
        Ok(dir) => dir,
        Err(a) => return a,
    };
    let attempt = match cpath(&dir) {
        Err(a) => a,
        Ok(target) => {
            // SAFETY: valid NUL-terminated strings; a new named hierarchy on our own empty dir.
            let r = unsafe {
                libc::mount(
                    c"cgroup".as_ptr(),
                    target.as_ptr(),
                    c"cgroup".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"none,name=rampart_probe".as_ptr().cast(),
                )
            };
            if r == 0 {
                let opened = open_for_write(&dir.join("release_agent"));
                // SAFETY: unmounts the hierarchy mounted just above.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
                match opened {
                    Attempt::Done(_) => Attempt::Done(format!(
                        "mounted cgroup v1{} and opened its release_agent for writing",
                        if private { " (private mount ns)" } else { "" }
                    )),
                    Attempt::Failed(e) => Attempt::Failed(e),
                    other => other,
                }
            } else {
                Attempt::Failed(errno())
            }
        }
    };
    remove_dir(&dir);
    attempt
}

/// Opens /proc/kcore and reads one byte: blocked when either fails or nothing can be read (a
/// masked path is /dev/null).
fn probe_kcore() -> Finding {
    let attempt = match open(Path::new("/proc/kcore"), libc::O_RDONLY) {
        Err(e) => Attempt::Failed(e),
        Ok(fd) => {
            let mut byte = [0u8; 1];
            // SAFETY: reads at most one byte into a valid buffer.
            let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
            let e = errno();
            close(fd.into());
            match n {
                1 => Attempt::Done("read 1 byte".to_owned()),
                0 => Attempt::Failed(libc::ENODATA),
                _ => Attempt::Failed(e),
            }
        }
    };
    let mut finding = judge("kcore", &attempt, Denial::AnyFailure);
    if attempt == Attempt::Failed(libc::ENODATA) {
        finding.detail = "read 0 bytes (masked)".to_owned();
    }
    finding
}

/// connect(2) to the containerd socket; blocked when the path is absent or connect fails.
fn probe_containerd_socket() -> Finding {
    let attempt = connect_unix(Path::new(CONTAINERD_SOCKET));
    judge("containerd_socket", &attempt, Denial::AnyFailure)
}

fn connect_unix(path: &Path) -> Attempt {
    // SAFETY: sockaddr_un is plain old data; all zeros is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Attempt::Inconclusive("socket path too long".to_owned());
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Attempt::Inconclusive(format!("socket: {}", errno_text(errno())));
    }
    // SAFETY: a valid sockaddr_un and its size.
    let r = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    let attempt = if r == 0 {
        Attempt::Done("connected".to_owned())
    } else {
        Attempt::Failed(errno())
    };
    close(fd.into());
    attempt
}

// ---------------------------------------------------------------------------------------------
// forkbomb, memhog, sleep.

/// Why `forkbomb` stopped.
fn stop_reason(fork_errno: Option<i32>, timed_out: bool) -> String {
    match (fork_errno, timed_out) {
        (Some(e), _) => errno_name(e).to_owned(),
        (None, true) => "timeout".to_owned(),
        (None, false) => "limit".to_owned(),
    }
}

fn forkbomb_line(
    spawned: u64,
    stopped_by: &str,
    pids_max: Option<&str>,
    elapsed: Duration,
) -> String {
    tagged(
        "forkbomb",
        &json!({
            "spawned": spawned,
            "stopped_by": stopped_by,
            "pids_max": pids_max,
            "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        }),
    )
}

fn forkbomb(limit: u64, time: Duration) -> i32 {
    let start = Instant::now();
    let mut children = Vec::new();
    let mut fork_errno = None;
    let mut timed_out = false;
    while (children.len() as u64) < limit {
        if start.elapsed() >= time {
            timed_out = true;
            break;
        }
        match spawn_pauser() {
            Ok(pid) => children.push(pid),
            Err(e) => {
                fork_errno = Some(e);
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let pids_max = ["/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned());
    let line = forkbomb_line(
        children.len() as u64,
        &stop_reason(fork_errno, timed_out),
        pids_max.as_deref(),
        elapsed,
    );
    let code = emit(&line);
    for &pid in &children {
        kill(pid);
    }
    for &pid in &children {
        reap(pid);
    }
    code
}

fn memhog_line(mib: u64, done: bool) -> String {
    if done {
        tagged("memhog", &json!({ "mib": mib, "done": true }))
    } else {
        tagged("memhog", &json!({ "mib": mib }))
    }
}

fn memhog(target_mib: u64) -> i32 {
    const PAGE: usize = 4096;
    let chunk = usize::try_from(MEMHOG_CHUNK_MIB << 20).unwrap_or(16 << 20);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut mib = 0;
    while mib < target_mib {
        let mut block = vec![0u8; chunk];
        for byte in block.iter_mut().step_by(PAGE) {
            *byte = 1;
        }
        held.push(std::hint::black_box(block));
        mib += MEMHOG_CHUNK_MIB;
        if emit(&memhog_line(mib, false)) != 0 {
            return 1;
        }
    }
    std::hint::black_box(&held);
    emit(&memhog_line(mib, true))
}

extern "C" fn exit_on_signal(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) };
}

fn sleep(secs: u64) -> i32 {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only calls the async-signal-safe _exit.
        unsafe {
            libc::signal(
                sig,
                exit_on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let code = emit(&tagged("sleep", &json!({ "seconds": secs })));
    std::thread::sleep(Duration::from_secs(secs));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(Attempt, Denial, bool, &str)] = &[
            (
                Attempt::Failed(libc::EPERM),
                DENIED,
                true,
                "errno EPERM (1)",
            ),
            (
                Attempt::Failed(libc::EACCES),
                DENIED,
                true,
                "errno EACCES (13)",
            ),
            (
                Attempt::Failed(libc::ENOSYS),
                DENIED,
                true,
                "errno ENOSYS (38)",
            ),
            (
                Attempt::Failed(libc::EINVAL),
                DENIED,
                false,
                "errno EINVAL (22), not a denial",
            ),
            (
                Attempt::Failed(libc::ENOENT),
                DENIED,
                false,
                "errno ENOENT (2), not a denial",
            ),
            (
                Attempt::Failed(libc::ENOENT),
                Denial::AnyFailure,
                true,
                "errno ENOENT (2)",
            ),
            (
                Attempt::Failed(libc::EROFS),
                Denial::AnyFailure,
                true,
                "errno EROFS (30)",
            ),
            (
                Attempt::Done("x".into()),
                Denial::AnyFailure,
                false,
                "succeeded: x",
            ),
            (Attempt::Done("x".into()), DENIED, false, "succeeded: x"),
            (
                Attempt::Inconclusive("why".into()),
                DENIED,
                false,
                "inconclusive: why",
            ),
            (
                Attempt::Inconclusive("why".into()),
                Denial::AnyFailure,
                false,
                "inconclusive: why",
            ),
        ];
        for (attempt, denial, blocked, detail) in cases {
            let f = judge("t", attempt, *denial);
            assert_eq!(f.blocked, *blocked, "{attempt:?} {denial:?}");
            assert_eq!(f.detail, *detail, "{attempt:?} {denial:?}");
        }
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(errno_name(libc::EAGAIN), "EAGAIN");
        assert_eq!(errno_name(9999), "E?");
        assert_eq!(errno_text(9999), "errno E? (9999)");
    }

    #[test]
    fn child_messages_round_trip() {
        for a in [
            Attempt::Done("mounted: a tmpfs".into()),
            Attempt::Failed(1),
            Attempt::Inconclusive("fork: x".into()),
            Attempt::Done(String::new()),
        ] {
            assert_eq!(decode(&encode(&a)), a);
        }
        assert!(matches!(decode(""), Attempt::Inconclusive(_)));
        assert!(matches!(decode("Fx"), Attempt::Inconclusive(_)));
        assert!(matches!(decode("Q1"), Attempt::Inconclusive(_)));
    }

    #[test]
    fn all_line_format() {
        let findings = vec![
            judge("mount", &Attempt::Failed(libc::EPERM), DENIED),
            judge("bpf", &Attempt::Done("map created".into()), DENIED),
        ];
        let line = all_line(&findings);
        assert!(!line.contains('\n'));
        let json = line.strip_prefix("RAMPART-PROBE ").unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            v,
            json!({"all": {
                "probes": [
                    {"name": "mount", "blocked": true, "detail": "errno EPERM (1)"},
                    {"name": "bpf", "blocked": false, "detail": "succeeded: map created"},
                ],
                "not_blocked": ["bpf"],
            }})
        );
        assert!(json.starts_with(r#"{"all":{"#));
        assert!(line.contains(r#"{"name":"mount","blocked":true,"detail":"errno EPERM (1)"}"#));
    }

    #[test]
    fn forkbomb_and_memhog_lines() {
        let line = forkbomb_line(97, "EAGAIN", Some("100"), Duration::from_millis(1500));
        let v: serde_json::Value =
            serde_json::from_str(line.strip_prefix(PREFIX).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"forkbomb": {"spawned": 97, "stopped_by": "EAGAIN", "pids_max": "100", "elapsed_ms": 1500}})
        );
        assert_eq!(
            memhog_line(32, false),
            r#"RAMPART-PROBE {"memhog":{"mib":32}}"#
        );
        let done: serde_json::Value =
            serde_json::from_str(memhog_line(64, true).strip_prefix(PREFIX).unwrap()).unwrap();
        assert_eq!(done, json!({"memhog": {"mib": 64, "done": true}}));
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(stop_reason(Some(libc::EAGAIN), false), "EAGAIN");
        assert_eq!(stop_reason(Some(libc::ENOMEM), true), "ENOMEM");
        assert_eq!(stop_reason(None, true), "timeout");
        assert_eq!(stop_reason(None, false), "limit");
    }

    #[test]
    fn status_fields_are_picked() {
        let text = "Name:\tprobe\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
                    NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\nVmRSS:\t 100 kB\n";
        let fields = status_fields(text);
        let expected: BTreeMap<String, String> = [
            ("CapEff", "00000000a80425fb"),
            ("CapBnd", "00000000a80425fb"),
            ("NoNewPrivs", "1"),
            ("Seccomp", "2"),
            ("Seccomp_filters", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn modes_parse() {
        let cases: &[(&[&str], Option<Mode>)] = &[
            (&["all"], Some(Mode::All)),
            (&["forkbomb"], Some(Mode::Forkbomb(FORKBOMB_DEFAULT))),
            (&["forkbomb", "50"], Some(Mode::Forkbomb(50))),
            (&["memhog"], Some(Mode::Memhog(MEMHOG_DEFAULT_MIB))),
            (&["memhog", "64"], Some(Mode::Memhog(64))),
            (&["sleep", "3"], Some(Mode::Sleep(3))),
            (&["status"], Some(Mode::Status)),
            (&[], None),
            (&["sleep"], None),
            (&["sleep", "x"], None),
            (&["forkbomb", "-1"], None),
            (&["all", "extra"], None),
        ];
        for (args, expected) in cases {
            assert_eq!(Mode::parse(args).ok(), *expected, "{args:?}");
        }
    }

    #[test]
    fn in_child_reports_and_times_out() {
        assert_eq!(
            in_child(CHILD_TIMEOUT, || Attempt::Done("hi".into())),
            Attempt::Done("hi".into())
        );
        assert_eq!(
            in_child(CHILD_TIMEOUT, || Attempt::Failed(libc::EPERM)),
            Attempt::Failed(libc::EPERM)
        );
        let slow = in_child(Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_secs(30));
            Attempt::Done("late".into())
        });
        assert!(matches!(slow, Attempt::Inconclusive(_)), "{slow:?}");
    }
}
