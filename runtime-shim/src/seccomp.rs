//! rampart's default seccomp profile, as OCI `linux.seccomp` data.
//!
//! Deny by default (`EPERM`), allow the system calls an ordinary container needs. Left out on
//! purpose (they fail with `EPERM`): io_uring, userfaultfd, the key store (`keyctl`, `add_key`,
//! `request_key`), kexec, module loading, `open_by_handle_at`/`name_to_handle_at`, ptrace and
//! its cousins (`process_vm_*`, `kcmp`, `pidfd_getfd`), `bpf`, `perf_event_open`, every mount
//! and namespace call (`mount`, `umount2`, `pivot_root`, `unshare`, `setns`, the new mount API),
//! swap, reboot, the clock setters, host and domain names, accounting, quotas, `syslog`,
//! `vhangup`, NUMA policy calls, `mknod`/`mknodat`, and obsolete calls. `personality` is allowed
//! only for the harmless personas, `clone` only without namespace flags, and `clone3` (whose
//! flags a filter cannot see) fails with `ENOSYS` so that the C library falls back to `clone`.

use serde_json::{json, Value};

/// `EPERM`, returned for every system call the profile does not allow.
pub const EPERM: u32 = 1;
/// `ENOSYS`, returned for `clone3`.
pub const ENOSYS: u32 = 38;

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET`: `clone` is allowed only when none of these bits is set.
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `personality(2)` arguments that are allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32 | UNAME26`, and the query `0xffffffff`.
pub const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// System calls allowed without conditions (x86_64 names, then the 32-bit x86 ones).
#[rustfmt::skip]
pub const ALLOWED: &[&str] = &[
    // files and descriptors
    "read", "write", "open", "openat", "openat2", "close", "close_range", "creat", "stat",
    "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "lseek", "pread64",
    "pwrite64", "readv", "writev", "preadv", "pwritev", "preadv2", "pwritev2", "access",
    "faccessat", "faccessat2", "pipe", "pipe2", "dup", "dup2", "dup3", "fcntl", "flock",
    "fsync", "fdatasync", "syncfs", "sync", "sync_file_range", "truncate", "ftruncate",
    "fallocate", "fadvise64", "readahead", "getdents", "getdents64", "getcwd", "chdir",
    "fchdir", "chroot", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link",
    "linkat", "unlink", "unlinkat", "symlink", "symlinkat", "readlink", "readlinkat", "chmod",
    "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "umask", "utime", "utimes",
    "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "getxattr", "lgetxattr",
    "fgetxattr", "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr",
    "fremovexattr", "ioctl", "splice", "tee", "vmsplice", "sendfile", "copy_file_range",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "memfd_create",
    "memfd_secret",
    // polling and events
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_settime", "timerfd_gettime",
    // asynchronous I/O (not io_uring)
    "io_setup", "io_destroy", "io_getevents", "io_pgetevents", "io_submit", "io_cancel",
    // memory
    "mmap", "mprotect", "munmap", "mremap", "msync", "mincore", "madvise", "brk", "mlock",
    "mlock2", "munlock", "mlockall", "munlockall", "remap_file_pages", "pkey_mprotect",
    "pkey_alloc", "pkey_free", "membarrier",
    // processes and threads
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "getpid",
    "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "set_tid_address",
    "set_robust_list", "get_robust_list", "rseq", "futex", "futex_waitv", "arch_prctl", "prctl",
    "set_thread_area", "get_thread_area", "seccomp", "sched_yield", "sched_setparam",
    "sched_getparam", "sched_setscheduler", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "sched_setaffinity", "sched_getaffinity",
    "sched_setattr", "sched_getattr", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
    "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "getcpu", "pidfd_open",
    "pidfd_send_signal", "restart_syscall", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self",
    // credentials
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "setuid",
    "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid",
    "setfsgid", "capget", "capset",
    // signals and timers
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigsuspend", "sigaltstack", "kill", "tkill",
    "tgkill", "pause", "nanosleep", "clock_nanosleep", "alarm", "getitimer", "setitimer",
    "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
    "clock_gettime", "clock_getres", "gettimeofday", "time",
    // sockets
    "socket", "socketpair", "connect", "accept", "accept4", "bind", "listen", "shutdown",
    "getsockname", "getpeername", "setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg",
    "recvmsg", "sendmmsg", "recvmmsg",
    // System V and POSIX IPC
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget",
    "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr",
    // system information
    "uname", "sysinfo", "getrandom",
    // 32-bit x86 names of the same calls
    "_llseek", "_newselect", "chown32", "fchown32", "lchown32", "fcntl64", "fstat64",
    "fstatat64", "fstatfs64", "ftruncate64", "truncate64", "lstat64", "stat64", "statfs64",
    "mmap2", "sendfile64", "fadvise64_64", "getuid32", "geteuid32", "getgid32", "getegid32",
    "getgroups32", "getresgid32", "getresuid32", "setfsgid32", "setfsuid32", "setgid32",
    "setgroups32", "setregid32", "setresgid32", "setresuid32", "setreuid32", "setuid32",
    "ugetrlimit", "waitpid", "socketcall", "ipc", "recv", "send", "sigreturn", "sigprocmask",
    "sigsuspend", "sigpending", "sigaction", "signal", "clock_gettime64", "clock_getres_time64",
    "clock_nanosleep_time64", "futex_time64", "io_pgetevents_time64", "mq_timedreceive_time64",
    "mq_timedsend_time64", "ppoll_time64", "pselect6_time64", "recvmmsg_time64",
    "rt_sigtimedwait_time64", "sched_rr_get_interval_time64", "semtimedop_time64",
    "timer_gettime64", "timer_settime64", "timerfd_gettime64", "timerfd_settime64",
    "utimensat_time64",
];

/// System calls the profile must never allow (checked by the tests; documentation for readers).
#[rustfmt::skip]
pub const BLOCKED: &[&str] = &[
    "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "keyctl", "add_key",
    "request_key", "kexec_load", "kexec_file_load", "open_by_handle_at", "name_to_handle_at",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "bpf",
    "perf_event_open", "mount", "umount", "umount2", "unshare", "setns", "pivot_root", "fsopen",
    "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr", "swapon",
    "swapoff", "reboot", "init_module", "finit_module", "delete_module", "create_module",
    "query_module", "get_kernel_syms", "settimeofday", "stime", "clock_settime",
    "clock_settime64", "clock_adjtime", "clock_adjtime64", "adjtimex", "sethostname",
    "setdomainname", "acct", "lookup_dcookie", "quotactl", "quotactl_fd", "syslog", "vhangup",
    "nfsservctl", "uselib", "mknod", "mknodat", "iopl", "ioperm", "modify_ldt", "vm86",
    "vm86old", "_sysctl", "ustat", "sysfs", "fanotify_init", "fanotify_mark", "mbind",
    "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages", "set_mempolicy_home_node",
    "process_madvise", "process_mrelease", "clone3",
];

/// The profile as an OCI `linux.seccomp` object.
pub fn default_profile() -> Value {
    let personality: Vec<Value> = PERSONALITIES
        .iter()
        .map(|p| {
            json!({
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{ "index": 0, "value": p, "op": "SCMP_CMP_EQ" }]
            })
        })
        .collect();
    let mut syscalls = vec![json!({ "names": ALLOWED, "action": "SCMP_ACT_ALLOW" })];
    syscalls.extend(personality);
    syscalls.push(json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{
            "index": 0,
            "value": CLONE_NAMESPACE_FLAGS,
            "valueTwo": 0,
            "op": "SCMP_CMP_MASKED_EQ"
        }]
    }));
    syscalls.push(json!({
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": ENOSYS
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn nothing_blocked_is_allowed_and_nothing_is_listed_twice() {
        let allowed: BTreeSet<&str> = ALLOWED.iter().copied().collect();
        assert_eq!(allowed.len(), ALLOWED.len(), "a name is listed twice");
        for b in BLOCKED {
            assert!(!allowed.contains(b), "{b} is allowed");
        }
        for name in ["personality", "clone"] {
            assert!(
                !allowed.contains(name),
                "{name} must only be allowed with a filter"
            );
        }
    }

    #[test]
    fn profile_shape() {
        let p = default_profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        assert_eq!(p["architectures"][0], "SCMP_ARCH_X86_64");
        let rules = p["syscalls"].as_array().unwrap();
        let clone = rules.iter().find(|r| r["names"][0] == "clone").unwrap();
        assert_eq!(clone["args"][0]["value"], 2_114_060_288_u64);
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let clone3 = rules.iter().find(|r| r["names"][0] == "clone3").unwrap();
        assert_eq!(clone3["errnoRet"], 38);
        let personas: Vec<u64> = rules
            .iter()
            .filter(|r| r["names"][0] == "personality")
            .map(|r| r["args"][0]["value"].as_u64().unwrap())
            .collect();
        assert_eq!(personas, PERSONALITIES);
        // Every allowed name appears in exactly one rule.
        let mut seen = BTreeSet::new();
        for r in rules {
            for n in r["names"].as_array().unwrap() {
                let n = n.as_str().unwrap();
                if n != "personality" {
                    assert!(seen.insert(n.to_owned()), "{n} in two rules");
                }
            }
        }
    }
}
