//! Pure comparisons of a checker [`Report`](crate::report::Report) against the plans
//! `rampart_init` derives from the same host config.
//!
//! Each check returns the list of problems found (empty means pass), one human-readable line
//! each, so a failing test shows every difference at once.

use std::collections::BTreeMap;

use rampart_config::HostConfig;
use rampart_init::mount::{MountFlags, MountSpec};

use crate::report::{normalize_value, MountEntry};

/// The sysctls PID 1 plans for `cfg` (baseline plus overrides, then `kernel.modules_disabled`
/// when `kernel.lock_modules` is set), as dotted key and value.
pub fn planned_sysctls(cfg: &HostConfig) -> Vec<(String, String)> {
    let mut plan = rampart_init::sysctl::plan(cfg);
    if cfg.kernel.lock_modules {
        plan.push(rampart_init::sysctl::lock_modules_setting());
    }
    plan.into_iter().map(|s| (s.key, s.value)).collect()
}

/// The visible mount at `target`: the last mountinfo entry for it.
pub fn mount_at<'a>(mounts: &'a [MountEntry], target: &str) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.target == target)
}

/// Checks that every planned mount is present with exactly its planned per-mount flags and
/// with each of its file-system options as the kernel shows them.
pub fn check_mounts(plan: &[MountSpec], mounts: &[MountEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    for spec in plan {
        let target = spec.target.to_string_lossy();
        let Some(m) = mount_at(mounts, &target) else {
            problems.push(format!("{target}: not mounted"));
            continue;
        };
        if m.fstype != spec.fstype {
            problems.push(format!(
                "{target}: file system {} instead of {}",
                m.fstype, spec.fstype
            ));
        }
        for (flag, name) in [
            (MountFlags::RDONLY, "ro"),
            (MountFlags::NOSUID, "nosuid"),
            (MountFlags::NODEV, "nodev"),
            (MountFlags::NOEXEC, "noexec"),
        ] {
            let want = spec.flags.contains(flag);
            let have = m.has_option(name);
            if want != have {
                problems.push(format!(
                    "{target}: {name} is {} but the plan says {} (options {})",
                    if have { "set" } else { "missing" },
                    if want { "set" } else { "unset" },
                    m.options.join(",")
                ));
            }
        }
        if !spec.flags.contains(MountFlags::RDONLY) && !m.has_option("rw") {
            problems.push(format!(
                "{target}: not rw (options {})",
                m.options.join(",")
            ));
        }
        for opt in spec.data.split(',').filter(|o| !o.is_empty()) {
            if let Err(why) = option_shown(opt, m) {
                problems.push(format!("{target}: option {opt}: {why}"));
            }
        }
    }
    problems
}

/// Whether the planned file-system option `opt` is what the kernel shows for mount `m`.
pub fn option_shown(opt: &str, m: &MountEntry) -> Result<(), String> {
    let shown: BTreeMap<&str, Option<&str>> = m
        .super_options
        .iter()
        .chain(&m.options)
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        })
        .collect();
    let (key, want) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    let Some(have) = shown.get(key) else {
        let default = HIDDEN_DEFAULTS.iter().any(|(fs, k, v)| {
            *fs == m.fstype && *k == key && want.is_some_and(|w| same_value(k, w, v))
        });
        return if default {
            Ok(())
        } else {
            Err(format!(
                "not shown (super options {})",
                m.super_options.join(",")
            ))
        };
    };
    let (Some(want), Some(have)) = (want, *have) else {
        return if want.is_none() && have.is_none() {
            Ok(())
        } else {
            Err(format!("shown as {key}={}", have.unwrap_or("")))
        };
    };
    if same_value(key, want, have) {
        Ok(())
    } else {
        Err(format!("shown as {key}={have}"))
    }
}

/// Options the kernel leaves out of mountinfo when they have their default value:
/// (file system, key, value). A tmpfs shows `mode=` only when it is not 1777.
const HIDDEN_DEFAULTS: &[(&str, &str, &str)] = &[("tmpfs", "mode", "1777")];

/// Whether two values of option `key` mean the same (modes in octal, sizes rounded to pages).
fn same_value(key: &str, want: &str, have: &str) -> bool {
    match key {
        "mode" | "ptmxmode" => {
            parse_octal(want).is_some() && parse_octal(want) == parse_octal(have)
        }
        "size" => match (parse_size(want), parse_size(have)) {
            (Some(w), Some(h)) => w.div_ceil(4096) == h.div_ceil(4096),
            _ => false,
        },
        _ => want == have,
    }
}

fn parse_octal(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8).ok()
}

/// Parses a tmpfs size as written (`67108864`, `65536k`, `64m`, `1g`) into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (s.get(..i)?, 1u64 << 10),
        (i, 'm' | 'M') => (s.get(..i)?, 1 << 20),
        (i, 'g' | 'G') => (s.get(..i)?, 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Outcome of comparing sysctls.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SysctlCheck {
    /// Keys the guest's kernel does not have (skipped).
    pub missing: Vec<String>,
    /// Keys read back with the planned value.
    pub matched: Vec<String>,
    /// Differences, one line each.
    pub problems: Vec<String>,
}

/// Compares every planned sysctl with the value the checker read back.
pub fn check_sysctls(
    planned: &[(String, String)],
    read: &BTreeMap<String, Option<String>>,
) -> SysctlCheck {
    let mut out = SysctlCheck::default();
    for (key, want) in planned {
        match read.get(key) {
            None => out
                .problems
                .push(format!("{key}: not reported by the checker")),
            Some(None) => out.missing.push(key.clone()),
            Some(Some(have)) if normalize_value(have) == normalize_value(want) => {
                out.matched.push(key.clone());
            }
            Some(Some(have)) => out
                .problems
                .push(format!("{key}: {have} instead of {want}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::parse_mountinfo;

    fn spec(target: &str, fstype: &str, flags: MountFlags, data: &str) -> MountSpec {
        MountSpec {
            source: fstype.into(),
            target: target.into(),
            fstype: fstype.into(),
            flags,
            data: data.into(),
        }
    }

    const NSN: MountFlags = MountFlags::NOSUID
        .union(MountFlags::NODEV)
        .union(MountFlags::NOEXEC);

    #[test]
    fn mounts_match_or_say_why() {
        let info = parse_mountinfo(
            "\
1 0 0:1 / / ro,relatime - tmpfs rootfs ro,mode=755
2 1 0:2 / /run rw,nosuid,nodev,noexec,relatime - tmpfs run rw,size=65536k,mode=755
3 1 0:3 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=000
4 1 0:4 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
5 1 0:5 / /var rw,nosuid,nodev,noexec,relatime - tmpfs var rw,size=1024k
",
        )
        .unwrap();
        let ok = [
            spec("/run", "tmpfs", NSN, "mode=0755,size=67108864"),
            spec(
                "/dev/pts",
                "devpts",
                MountFlags::NOSUID.union(MountFlags::NOEXEC),
                "ptmxmode=000,mode=620,gid=5",
            ),
            spec(
                "/sys/fs/cgroup",
                "cgroup2",
                NSN,
                "nsdelegate,memory_recursiveprot",
            ),
            spec("/var", "tmpfs", NSN, "mode=1777,size=1048576"),
        ];
        assert_eq!(check_mounts(&ok, &info), Vec::<String>::new());

        let bad = [
            spec("/missing", "tmpfs", NSN, ""),
            spec("/run", "tmpfs", NSN, "mode=0700,size=1048576"),
            spec(
                "/var",
                "tmpfs",
                MountFlags::NOSUID.union(MountFlags::NODEV),
                "",
            ),
            spec("/sys/fs/cgroup", "cgroup2", NSN, "nsdelegate,favordynmods"),
            spec("/", "tmpfs", MountFlags::EMPTY, ""),
        ];
        let problems = check_mounts(&bad, &info);
        let expected = [
            "/missing: not mounted",
            "/run: option mode=0700",
            "/run: option size=1048576",
            "/var: noexec is set",
            "/sys/fs/cgroup: option favordynmods",
            "/: ro is set",
            "/: not rw",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (p, e) in problems.iter().zip(expected) {
            assert!(p.starts_with(e), "{p} does not start with {e}");
        }
    }

    #[test]
    fn sizes_parse() {
        for (s, n) in [
            ("67108864", Some(67_108_864)),
            ("65536k", Some(67_108_864)),
            ("1g", Some(1 << 30)),
            ("x", None),
            ("", None),
        ] {
            assert_eq!(parse_size(s), n, "{s}");
        }
    }

    #[test]
    fn sysctls_compare() {
        let planned = vec![
            ("a.b".to_owned(), "1".to_owned()),
            ("a.c".to_owned(), "2".to_owned()),
            ("a.d".to_owned(), "3 4".to_owned()),
            ("a.e".to_owned(), "5".to_owned()),
            ("a.f".to_owned(), "6".to_owned()),
        ];
        let read: BTreeMap<String, Option<String>> = [
            ("a.b", Some("1")),
            ("a.c", None),
            ("a.d", Some("3\t4")),
            ("a.e", Some("0")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
        let c = check_sysctls(&planned, &read);
        assert_eq!(c.matched, ["a.b", "a.d"]);
        assert_eq!(c.missing, ["a.c"]);
        assert_eq!(
            c.problems,
            ["a.e: 0 instead of 5", "a.f: not reported by the checker"]
        );
    }
}
