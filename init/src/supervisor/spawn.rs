//! Clone and exec of one service, applying its [`Launch`] plan in the child.
//!
//! Everything the child needs is prepared in [`Prepared`] BEFORE the clone: the argv and envp
//! pointer arrays, every path as a C string, the capability sets, the Landlock ruleset (created
//! and filled in the parent) and the seccomp BPF program. PID 1 is single-threaded, so the
//! child is a faithful copy; it then only makes system calls on that data, in the order of
//! [`super::launch::CHILD_STEPS`], and never returns: it execs or writes one line to its
//! stderr (the log pipe) and calls `_exit(127)`.
//!
//! The child is created with the raw `clone` system call (flags `SIGCHLD` plus the namespace
//! flags, no new stack: it behaves like `fork`), because a pid namespace only applies to the
//! children of the caller: this way the service itself is pid 1 of its namespace.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use caps::{CapSet, CapsHashSet};
use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetStatus, ABI,
};
use libc::c_char;
use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::unistd::Pid;
use rampart_config::{Landlock, Namespace};
use seccompiler::BpfProgram;

use super::launch::{Launch, MountOp};
use super::{seccomp, ServicePlan, SupervisorError};

/// Exit status of a child that could not exec its service (as shells do).
pub const EXEC_FAILED: i32 = 127;

/// The Landlock ABI asked for; older kernels get the best they support, a kernel without
/// Landlock makes the service fail to start.
pub const LANDLOCK_ABI: ABI = ABI::V3;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct ifreq` as `SIOCGIFFLAGS`/`SIOCSIFFLAGS` use it (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    pad: [u8; 22],
}

/// A mount operation with its strings ready for the kernel.
enum PreparedMount {
    SlaveRoot,
    ReadOnlyRoot,
    Writable(CString),
    WritableInPlace(CString),
    Tmpfs { path: CString, data: CString },
    Proc(CString),
}

/// The child's data, prepared before the clone; the raw pointers point into `plan`'s strings.
struct Prepared<'a> {
    path: &'a CStr,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    procs: CString,
    prefix: Vec<u8>,
    empty_mask: SigSet,
    max_signal: libc::c_int,
    clone_flags: libc::c_long,
    mounts: Vec<PreparedMount>,
    loopback_up: bool,
    oom_score_adj: Option<Vec<u8>>,
    apparmor_exec: Option<Vec<u8>>,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    keep: CapsHashSet,
    ambient: Vec<caps::Capability>,
    drop_bounding: Vec<u8>,
    no_new_privs: bool,
    workdir: CString,
    landlock: Option<RulesetCreated>,
    seccomp: Option<BpfProgram>,
}

/// The kernel's `struct sigaction` for `rt_sigaction(2)` with every field zero: handler
/// `SIG_DFL`, no flags, no restorer, empty mask (4 words on x86_64 and aarch64).
static KERNEL_SIG_DFL: [u64; 4] = [0; 4];

/// `sizeof(sigset_t)` as the kernel sees it (64 signals) on x86_64 and aarch64.
const KERNEL_SIGSET_BYTES: libc::c_long = 8;

fn cstring(service: &str, what: &'static str, path: &Path) -> Result<CString, SupervisorError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SupervisorError::NulByte {
        service: service.to_owned(),
        what,
    })
}

/// The clone flags of a namespace list.
pub fn clone_flags(namespaces: &[Namespace]) -> libc::c_long {
    namespaces
        .iter()
        .map(|ns| match ns {
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Pid => libc::CLONE_NEWPID,
        })
        .fold(libc::c_long::from(libc::SIGCHLD), |acc, f| {
            acc | libc::c_long::from(f)
        })
}

/// Creates and fills the Landlock ruleset (in the parent: it opens the paths).
fn landlock_ruleset(rules: &Landlock) -> Result<RulesetCreated, String> {
    let abi = LANDLOCK_ABI;
    Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                &rules.read_only,
                AccessFs::from_read(abi),
            ))
        })
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                &rules.read_write,
                AccessFs::from_all(abi),
            ))
        })
        .map_err(|e| e.to_string())
}

impl<'a> Prepared<'a> {
    fn new(plan: &'a ServicePlan) -> Result<Self, SupervisorError> {
        let name = plan.name.as_str();
        let path = plan
            .argv
            .first()
            .ok_or_else(|| SupervisorError::InvalidCommand {
                service: plan.name.clone(),
            })?;
        let launch: &Launch = &plan.launch;
        let mut mounts = Vec::new();
        for op in &launch.mounts {
            mounts.push(match op {
                MountOp::SlaveRoot => PreparedMount::SlaveRoot,
                MountOp::ReadOnlyRoot => PreparedMount::ReadOnlyRoot,
                MountOp::Writable(p) => PreparedMount::Writable(cstring(name, "writable path", p)?),
                MountOp::WritableInPlace(p) => {
                    PreparedMount::WritableInPlace(cstring(name, "shared path", p)?)
                }
                MountOp::Tmpfs { path, data } => PreparedMount::Tmpfs {
                    path: cstring(name, "tmpfs path", path)?,
                    data: CString::new(data.as_bytes()).map_err(|_| SupervisorError::NulByte {
                        service: name.to_owned(),
                        what: "tmpfs options",
                    })?,
                },
                MountOp::Proc(p) => PreparedMount::Proc(cstring(name, "proc path", p)?),
            });
        }
        let mut keep = CapsHashSet::new();
        let mut ambient = Vec::new();
        for n in &launch.keep {
            let cap = caps::all().into_iter().find(|c| c.index() == *n).ok_or(
                SupervisorError::UnknownCapability {
                    service: name.to_owned(),
                    number: *n,
                },
            )?;
            keep.insert(cap);
            ambient.push(cap);
        }
        let landlock = match &launch.landlock {
            None => None,
            Some(rules) => {
                Some(
                    landlock_ruleset(rules).map_err(|reason| SupervisorError::Landlock {
                        service: name.to_owned(),
                        reason,
                    })?,
                )
            }
        };
        let seccomp = match launch.seccomp {
            None => None,
            Some(profile) => {
                Some(
                    seccomp::compile(profile).map_err(|reason| SupervisorError::Seccomp {
                        service: name.to_owned(),
                        reason,
                    })?,
                )
            }
        };
        Ok(Self {
            path: path.as_c_str(),
            argv: null_terminated(&plan.argv),
            envp: null_terminated(&plan.env),
            procs: cstring(name, "cgroup path", &plan.cgroup.join("cgroup.procs"))?,
            prefix: format!("rampart-init: service {name}: ").into_bytes(),
            empty_mask: SigSet::empty(),
            max_signal: libc::SIGRTMAX(),
            clone_flags: clone_flags(&launch.namespaces),
            mounts,
            loopback_up: launch.namespaces.contains(&Namespace::Net),
            oom_score_adj: launch.oom_score_adj.map(|n| n.to_string().into_bytes()),
            apparmor_exec: launch
                .apparmor_profile
                .as_deref()
                .map(crate::apparmor::exec_attr_value),
            uid: launch.ids.uid,
            gid: launch.ids.gid,
            groups: launch.ids.groups.clone(),
            keep,
            ambient,
            drop_bounding: launch.drop_bounding.clone(),
            no_new_privs: launch.no_new_privs,
            workdir: cstring(name, "workdir", &launch.workdir)?,
            landlock,
            seccomp,
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

/// Starts `plan` with `stdin` as its standard input and `output` as its stdout and stderr;
/// returns the child's pid.
pub(super) fn spawn(
    plan: &ServicePlan,
    stdin: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
) -> Result<Pid, SupervisorError> {
    let mut prepared = Prepared::new(plan)?;
    let (stdin, output) = (stdin.as_raw_fd(), output.as_raw_fd());
    // SAFETY: `clone` without CLONE_VM and without a new stack behaves like `fork`: the child
    // gets a copy of this (single-threaded) process. The child below only makes system calls
    // on data prepared above and never returns from `exec_child`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            prepared.clone_flags,
            std::ptr::null::<libc::c_void>(),
            std::ptr::null::<libc::c_int>(),
            std::ptr::null::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match pid {
        0 => exec_child(&mut prepared, stdin, output),
        p if p > 0 => Ok(Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX))),
        _ => Err(SupervisorError::Fork {
            service: plan.name.clone(),
            source: Errno::last(),
        }),
    }
}

/// Puts `fd` on `target` (clearing close-on-exec when it already is `target`).
///
/// # Safety
/// Plain descriptor system calls; the caller is the child.
unsafe fn install(fd: RawFd, target: RawFd) -> bool {
    if fd == target {
        // SAFETY: fcntl on a descriptor number; no memory is involved.
        unsafe { libc::fcntl(target, libc::F_SETFD, 0) >= 0 }
    } else {
        // SAFETY: dup2 on descriptor numbers; no memory is involved.
        unsafe { libc::dup2(fd, target) >= 0 }
    }
}

/// The child side: never returns.
fn exec_child(p: &mut Prepared<'_>, stdin: RawFd, output: RawFd) -> ! {
    // SAFETY: every call is a system call wrapper; every pointer is either null (where the call
    // allows it) or points to a NUL-terminated string, a null-terminated pointer array or a
    // plain struct owned by `p` (or by the plan it borrows), alive until execve replaces the
    // process image or `fail` exits it.
    unsafe {
        // stdout and stderr first, so later failures reach the service's log.
        if !install(output, 1) || !install(output, 2) {
            fail(p, b"stdout");
        }
        if !install(stdin, 0) {
            fail(p, b"stdin");
        }

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

        // Before the mounts: a read-only /proc refuses the write.
        if let Some(value) = &p.oom_score_adj {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                fail(p, b"open oom_score_adj");
            }
            let written = libc::write(fd, value.as_ptr().cast(), value.len());
            if usize::try_from(written).ok() != Some(value.len()) {
                fail(p, b"write oom_score_adj");
            }
            libc::close(fd);
        }

        // Also before the mounts (and Landlock): the profile starts at execve.
        if let Some(value) = &p.apparmor_exec {
            let mut written = false;
            for path in crate::apparmor::exec_attr_paths() {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    continue;
                }
                let n = libc::write(fd, value.as_ptr().cast(), value.len());
                libc::close(fd);
                written = usize::try_from(n).ok() == Some(value.len());
                break;
            }
            if !written {
                fail(p, b"apparmor exec profile");
            }
        }

        for op in &p.mounts {
            match op {
                PreparedMount::SlaveRoot => {
                    if libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_SLAVE,
                        std::ptr::null(),
                    ) != 0
                    {
                        fail(p, b"make / rslave");
                    }
                }
                PreparedMount::ReadOnlyRoot => {
                    if !set_readonly(c"/", true) {
                        fail(p, b"read-only root");
                    }
                }
                PreparedMount::Writable(path) => {
                    if libc::mount(
                        path.as_ptr(),
                        path.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) != 0
                    {
                        fail(p, b"bind writable path");
                    }
                    if !set_readonly(path, false) {
                        fail(p, b"make writable path writable");
                    }
                }
                PreparedMount::WritableInPlace(path) => {
                    if !set_readonly(path, false) {
                        fail(p, b"make shared path writable");
                    }
                }
                PreparedMount::Tmpfs { path, data } => {
                    if libc::mount(
                        c"tmpfs".as_ptr(),
                        path.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        data.as_ptr().cast(),
                    ) != 0
                    {
                        fail(p, b"mount private /tmp");
                    }
                }
                PreparedMount::Proc(path) => {
                    if libc::mount(
                        c"proc".as_ptr(),
                        path.as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) != 0
                    {
                        fail(p, b"mount /proc");
                    }
                }
            }
        }

        if p.loopback_up && !loopback_up() {
            fail(p, b"bring up lo in the network namespace");
        }

        // Bounding set first: it needs CAP_SETPCAP, gone after capset. Numbers beyond the
        // kernel's last capability fail with EINVAL and are skipped.
        for n in &p.drop_bounding {
            if libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(*n), 0, 0, 0) != 0
                && Errno::last() != Errno::EINVAL
            {
                fail(p, b"drop bounding capability");
            }
        }

        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            fail(p, b"keep capabilities");
        }
        // Raw system calls, not the C library's wrappers: after a raw clone the library
        // still believes in the parent's threads and would try to change their ids too
        // (setxid broadcast). The kernel calls change this (only) thread.
        if libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr()) != 0 {
            fail(p, b"setgroups");
        }
        if libc::syscall(libc::SYS_setgid, libc::c_long::from(p.gid)) != 0 {
            fail(p, b"setgid");
        }
        if libc::syscall(libc::SYS_setuid, libc::c_long::from(p.uid)) != 0 {
            fail(p, b"setuid");
        }
    }
    // Effective first (it must stay within permitted), then inheritable, then permitted.
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        if caps::set(None, set, &p.keep).is_err() {
            fail(p, b"capset");
        }
    }
    if caps::clear(None, CapSet::Ambient).is_err() {
        fail(p, b"clear ambient capabilities");
    }
    for cap in &p.ambient {
        if caps::raise(None, CapSet::Ambient, *cap).is_err() {
            fail(p, b"raise ambient capability");
        }
    }
    // SAFETY: prctl and chdir with integer arguments and a NUL-terminated string owned by `p`.
    unsafe {
        if p.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(p, b"no_new_privs");
        }
        if libc::chdir(p.workdir.as_ptr()) != 0 {
            fail(p, b"chdir workdir");
        }
    }
    if let Some(ruleset) = p.landlock.take() {
        match ruleset.restrict_self() {
            Ok(status) if status.ruleset != RulesetStatus::NotEnforced => {}
            Ok(_) => fail(p, b"landlock is not supported by this kernel"),
            Err(_) => fail(p, b"landlock"),
        }
    }
    reset_signals(p);
    if let Some(program) = &p.seccomp {
        if seccompiler::apply_filter(program).is_err() {
            fail(p, b"seccomp");
        }
    }
    // SAFETY: close_range with integer arguments; execve with pointers owned by `p` (see above).
    unsafe {
        // No other descriptor of PID 1 leaks into the service (close_range needs Linux 5.11;
        // the error is ignored on older kernels).
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

/// Sets `IFF_UP` on `lo` (a new network namespace starts with it down).
fn loopback_up() -> bool {
    let mut req = IfReqFlags {
        name: [0; 16],
        flags: 0,
        pad: [0; 22],
    };
    if let Some(slot) = req.name.get_mut(..2) {
        slot.copy_from_slice(b"lo");
    }
    // SAFETY: a datagram socket used only for the two interface ioctls on `req`, a valid
    // `struct ifreq` alive for both calls; the socket is closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, std::ptr::from_mut(&mut req)) == 0;
        if ok {
            // IFF_UP is 1: it fits a c_short.
            req.flags |= libc::IFF_UP as libc::c_short;
            ok = libc::ioctl(fd, libc::SIOCSIFFLAGS, std::ptr::from_mut(&mut req)) == 0;
        }
        libc::close(fd);
        ok
    }
}

/// Sets (`true`) or clears (`false`) the read-only flag of every mount at and below `path`.
fn set_readonly(path: &CStr, readonly: bool) -> bool {
    let attr = MountAttr {
        attr_set: if readonly { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: if readonly { 0 } else { MOUNT_ATTR_RDONLY },
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` a valid `struct mount_attr` of the size given,
    // both alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    r == 0
}

/// Default disposition for every signal and an empty mask.
fn reset_signals(p: &Prepared<'_>) {
    // SAFETY: rt_sigaction with a valid kernel sigaction (all zero) and a null old pointer;
    // sigprocmask with a valid set owned by `p`.
    unsafe {
        // Through the raw system call: the C library's wrapper refuses its internal signals 32
        // and 33, which may be inherited as ignored. SIGKILL and SIGSTOP refuse; that is fine.
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
    }
}

/// Writes `<prefix><step>: errno <n>` to fd 2 and exits the child with [`EXEC_FAILED`].
fn fail(p: &Prepared<'_>, step: &[u8]) -> ! {
    let errno = Errno::last_raw();
    let mut digits = [0u8; 10];
    let number = format_decimal(errno.unsigned_abs(), &mut digits);
    for part in [p.prefix.as_slice(), step, b": errno ", number, b"\n"] {
        write_all(2, part);
    }
    // SAFETY: `_exit` ends the child without running any destructor or atexit handler of the
    // parent's copy.
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
mod tests;
