//! The seccomp profiles a service can ask for, compiled to BPF with seccompiler before `fork`.
//!
//! `"default"` is a deny list: the system calls below fail with `EPERM`, everything else is
//! allowed. It is meant for ordinary daemons; a service that mounts, loads modules or manages
//! containers (containerd: its children inherit the filter) must not use it.

use std::collections::BTreeMap;

use rampart_config::SeccompProfile;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The system calls the `"default"` profile refuses with `EPERM`, with their names (for docs
/// and tests).
pub const DEFAULT_DENIED: &[(&str, libc::c_long)] = &[
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
];

/// The calls `DefaultWithMount` takes out of [`DEFAULT_DENIED`].
pub const MOUNT_CALLS: &[&str] = &["mount", "umount2"];

/// The calls `profile` refuses.
pub fn denied(profile: SeccompProfile) -> Vec<(&'static str, libc::c_long)> {
    DEFAULT_DENIED
        .iter()
        .filter(|(name, _)| match profile {
            SeccompProfile::Default => true,
            SeccompProfile::DefaultWithMount => !MOUNT_CALLS.contains(name),
        })
        .copied()
        .collect()
}

/// Compiles `profile` for the running architecture.
pub fn compile(profile: SeccompProfile) -> Result<BpfProgram, String> {
    let rules = denied(profile)
        .iter()
        .map(|(_, nr)| (*nr, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let errno = u32::try_from(libc::EPERM).unwrap_or(1);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .map_err(|e| e.to_string())?;
    BpfProgram::try_from(filter).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_and_names_are_unique() {
        let prog = compile(SeccompProfile::Default).unwrap();
        assert!(prog.len() > DEFAULT_DENIED.len());
        let mut names: Vec<&str> = DEFAULT_DENIED.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DEFAULT_DENIED.len());
    }

    #[test]
    fn the_mount_profile_only_lets_mount_and_umount2_through() {
        let all: Vec<&str> = denied(SeccompProfile::Default)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        let mount: Vec<&str> = denied(SeccompProfile::DefaultWithMount)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(all.len(), DEFAULT_DENIED.len());
        assert_eq!(mount.len(), all.len() - 2);
        for n in &all {
            assert_eq!(mount.contains(n), !MOUNT_CALLS.contains(n), "{n}");
        }
        for n in [
            "pivot_root",
            "open_tree",
            "move_mount",
            "fsmount",
            "mount_setattr",
            "bpf",
        ] {
            assert!(mount.contains(&n), "{n}");
        }
        assert!(compile(SeccompProfile::DefaultWithMount).is_ok());
    }
}
