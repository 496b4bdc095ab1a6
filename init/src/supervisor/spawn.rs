//! Fork and exec of one service.
//!
//! Everything the child needs (argv and envp pointer arrays, the `cgroup.procs` path, the
//! message prefix, the signal mask and disposition) is prepared in [`Prepared`] BEFORE `fork`.
//! The child then only makes async-signal-safe system calls on that data, with no allocation
//! and no lock: join the cgroup, `setsid`, reset signals, stdin from `/dev/null`, `execve`. On
//! any failure it writes one line to fd 2 and calls `_exit(127)`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use libc::c_char;
use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::unistd::{fork, ForkResult, Pid};

use super::{ServicePlan, SupervisorError};

/// Exit status of a child that could not exec its service (as shells do).
pub const EXEC_FAILED: i32 = 127;

/// The child's data, prepared before `fork`; the raw pointers point into `plan`'s strings.
struct Prepared<'a> {
    path: &'a CStr,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    procs: CString,
    prefix: Vec<u8>,
    empty_mask: SigSet,
    max_signal: libc::c_int,
}

/// The kernel's `struct sigaction` for `rt_sigaction(2)` with every field zero: handler
/// `SIG_DFL`, no flags, no restorer, empty mask (4 words on x86_64 and aarch64).
static KERNEL_SIG_DFL: [u64; 4] = [0; 4];

/// `sizeof(sigset_t)` as the kernel sees it (64 signals) on x86_64 and aarch64.
const KERNEL_SIGSET_BYTES: libc::c_long = 8;

impl<'a> Prepared<'a> {
    fn new(plan: &'a ServicePlan) -> Result<Self, SupervisorError> {
        let path = plan
            .argv
            .first()
            .ok_or_else(|| SupervisorError::InvalidCommand {
                service: plan.name.clone(),
            })?;
        let procs_path = plan.cgroup.join("cgroup.procs");
        let procs = CString::new(procs_path.as_os_str().as_bytes()).map_err(|_| {
            SupervisorError::CgroupPath {
                service: plan.name.clone(),
                path: procs_path.clone(),
            }
        })?;
        Ok(Self {
            path: path.as_c_str(),
            argv: null_terminated(&plan.argv),
            envp: null_terminated(&plan.env),
            procs,
            prefix: format!("rampart-init: service {}: ", plan.name).into_bytes(),
            empty_mask: SigSet::empty(),
            max_signal: libc::SIGRTMAX(),
        })
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Forks and execs `plan` with `stdin` as its standard input; returns the child's pid.
pub(super) fn spawn(plan: &ServicePlan, stdin: BorrowedFd<'_>) -> Result<Pid, SupervisorError> {
    let prepared = Prepared::new(plan)?;
    let stdin = stdin.as_raw_fd();
    // SAFETY: PID 1 is single-threaded; and whatever the caller, the child below only runs
    // async-signal-safe system calls on data prepared above (no allocation, no lock, no
    // destructor) before it execs or `_exit`s.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => exec_child(&prepared, stdin),
        Err(source) => Err(SupervisorError::Fork {
            service: plan.name.clone(),
            source,
        }),
    }
}

/// The child side: never returns.
fn exec_child(p: &Prepared<'_>, stdin: RawFd) -> ! {
    // SAFETY: every call is an async-signal-safe system call wrapper; every pointer is either
    // null (where the call allows it) or points to a NUL-terminated string or a
    // null-terminated pointer array owned by `p` (or by the plan it borrows), alive until
    // execve replaces the process image or `fail` exits it.
    unsafe {
        // Join the service's cgroup: "0" means the writing process.
        let fd = libc::open(p.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            fail(p, b"open cgroup.procs");
        }
        if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(p, b"join cgroup");
        }
        libc::close(fd);

        if libc::setsid() < 0 {
            fail(p, b"setsid");
        }

        // Default disposition for every signal, through the raw system call: the C library's
        // wrapper refuses its internal signals 32 and 33, which may be inherited as ignored.
        // SIGKILL and SIGSTOP refuse; that is fine.
        for signal in 1..=p.max_signal {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    libc::c_long::from(signal),
                    KERNEL_SIG_DFL.as_ptr(),
                    std::ptr::null::<u64>(),
                    KERNEL_SIGSET_BYTES,
                );
            }
        }
        if libc::sigprocmask(
            libc::SIG_SETMASK,
            p.empty_mask.as_ref(),
            std::ptr::null_mut(),
        ) != 0
        {
            fail(p, b"reset signal mask");
        }

        // stdin from /dev/null; stdout and stderr stay on the console.
        if stdin == 0 {
            if libc::fcntl(0, libc::F_SETFD, 0) < 0 {
                fail(p, b"stdin");
            }
        } else if libc::dup2(stdin, 0) < 0 {
            fail(p, b"stdin");
        }
        // Best effort: no other descriptor of PID 1 leaks into the service (close_range needs
        // Linux 5.11; the error is ignored on older kernels).
        libc::syscall(
            libc::SYS_close_range,
            libc::c_long::from(3u32),
            libc::c_long::from(u32::MAX),
            libc::c_long::from(libc::CLOSE_RANGE_CLOEXEC),
        );

        libc::execve(p.path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    }
    fail(p, b"execve")
}

/// Writes `<prefix><step>: errno <n>` to fd 2 and exits the child with [`EXEC_FAILED`].
fn fail(p: &Prepared<'_>, step: &[u8]) -> ! {
    let errno = Errno::last_raw();
    let mut digits = [0u8; 10];
    let number = format_decimal(errno.unsigned_abs(), &mut digits);
    for part in [p.prefix.as_slice(), step, b": errno ", number, b"\n"] {
        write_all(2, part);
    }
    // SAFETY: `_exit` is async-signal-safe and ends the child without running any destructor
    // or atexit handler of the parent's copy.
    unsafe { libc::_exit(EXEC_FAILED) }
}

/// Writes all of `bytes` to `fd`, giving up on the first error.
fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid, initialised buffer of `bytes.len()` bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        let Ok(n) = usize::try_from(n) else {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return;
        };
        if n == 0 {
            return;
        }
        bytes = bytes.get(n..).unwrap_or_default();
    }
}

/// Formats `n` in decimal into `buf` without allocating; returns the digits.
fn format_decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        // `n % 10` is below 10, so the cast cannot truncate.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    buf.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use rampart_config::Restart;
    use std::os::fd::AsFd;
    use std::path::Path;

    #[test]
    fn decimal_formatting() {
        let cases = [
            (0, "0"),
            (7, "7"),
            (42, "42"),
            (1000, "1000"),
            (u32::MAX, "4294967295"),
        ];
        for (n, want) in cases {
            let mut buf = [0u8; 10];
            assert_eq!(format_decimal(n, &mut buf), want.as_bytes());
        }
    }

    /// A plan whose "cgroup" is a temp dir holding a plain `cgroup.procs` file: writing "0"
    /// to it works without root or a cgroup2 mount.
    fn plan_in(dir: &Path, argv: &[&str], env: &[&str]) -> ServicePlan {
        std::fs::write(dir.join("cgroup.procs"), b"").unwrap();
        ServicePlan {
            name: "test".to_string(),
            argv: argv.iter().map(|s| CString::new(*s).unwrap()).collect(),
            env: env.iter().map(|s| CString::new(*s).unwrap()).collect(),
            cgroup: dir.to_path_buf(),
            restart: Restart::Never,
            on_exit: None,
        }
    }

    fn run(plan: &ServicePlan) -> WaitStatus {
        let stdin = std::fs::File::open("/dev/null").unwrap();
        let pid = spawn(plan, stdin.as_fd()).unwrap();
        waitpid(pid, None).unwrap()
    }

    #[test]
    fn spawned_child_runs_in_its_cgroup_with_a_clean_state() {
        let cases: &[(&str, &[&str], i32)] = &[
            ("true", &["/bin/true"], 0),
            ("false", &["/bin/false"], 1),
            (
                "env",
                &[
                    "/bin/sh",
                    "-c",
                    "[ \"$FOO\" = bar ] && [ \"$PATH\" = /usr/bin:/bin ]",
                ],
                0,
            ),
            (
                "argv",
                &[
                    "/bin/sh",
                    "-c",
                    "[ \"$0\" = zero ] && [ \"$1\" = one ]",
                    "zero",
                    "one",
                ],
                0,
            ),
            (
                "stdin",
                &[
                    "/bin/sh",
                    "-c",
                    "[ \"$(readlink /proc/self/fd/0)\" = /dev/null ]",
                ],
                0,
            ),
            (
                "session leader",
                &[
                    "/bin/sh",
                    "-c",
                    "read -r pid comm st pp pg sid rest < /proc/self/stat; [ \"$pid\" = \"$sid\" ]",
                ],
                0,
            ),
            (
                "no blocked signal",
                &[
                    "/bin/grep",
                    "-q",
                    "^SigBlk:[[:space:]]*0*$",
                    "/proc/self/status",
                ],
                0,
            ),
            (
                "no ignored signal",
                &[
                    "/bin/grep",
                    "-q",
                    "^SigIgn:[[:space:]]*0*$",
                    "/proc/self/status",
                ],
                0,
            ),
            ("exec failure", &["/nonexistent/binary"], EXEC_FAILED),
        ];
        for (what, argv, code) in cases {
            let dir = tempfile::tempdir().unwrap();
            let plan = plan_in(dir.path(), argv, &["FOO=bar", "PATH=/usr/bin:/bin"]);
            match run(&plan) {
                WaitStatus::Exited(_, got) => assert_eq!(got, *code, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
            let procs = std::fs::read_to_string(dir.path().join("cgroup.procs")).unwrap();
            assert_eq!(procs, "0", "{what}");
        }
    }

    #[test]
    fn missing_cgroup_fails_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = plan_in(dir.path(), &["/bin/true"], &[]);
        plan.cgroup = dir.path().join("absent");
        match run(&plan) {
            WaitStatus::Exited(_, code) => assert_eq!(code, EXEC_FAILED),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_argv_is_refused_before_fork() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_in(dir.path(), &[], &[]);
        let stdin = std::fs::File::open("/dev/null").unwrap();
        let err = spawn(&plan, stdin.as_fd()).unwrap_err();
        assert!(
            matches!(err, SupervisorError::InvalidCommand { .. }),
            "{err}"
        );
    }
}
