//! `rampart-mount`: the `mount` and `umount` that kubelet executes (a rampart host carries no
//! util-linux). kubelet 1.20 mounts pod volumes by running `mount [-t TYPE] [-o OPTIONS]
//! SOURCE TARGET` (the tmpfs of secret, configMap, downwardAPI and projected volumes; bind
//! mounts, then `-o bind,remount,ro` for read-only ones) and unmounts them with
//! `umount TARGET`. This program does exactly that subset with the syscalls, and nothing else:
//! no fstab, no helpers (`mount.nfs`, ...), no shell. Installed for kubelet only, under
//! [`rampart_config::kubelet::TOOLS_DIR`] as `mount` and `umount` (it acts on its name).
//!
//! [`parse`] turns the arguments into a [`Request`] (pure data, tested as such); [`apply`]
//! performs it.

use nix::mount::{MntFlags, MsFlags};

/// Why a request could not be parsed or performed.
#[derive(Debug, thiserror::Error)]
pub enum KubeMountError {
    /// The arguments are not a supported `mount` or `umount` command line.
    #[error("{0}")]
    Usage(String),
    /// `mount(2)` failed.
    #[error("mount {from} on {target}: {error}")]
    Mount {
        /// The source.
        from: String,
        /// The target.
        target: String,
        /// The error.
        error: nix::Error,
    },
    /// Changing the propagation of the new mount failed.
    #[error("make {target} {kind}: {error}")]
    Propagation {
        /// The target.
        target: String,
        /// `shared`, `private`, ...
        kind: String,
        /// The error.
        error: nix::Error,
    },
    /// `umount2(2)` failed.
    #[error("umount {target}: {error}")]
    Unmount {
        /// The target.
        target: String,
        /// The error.
        error: nix::Error,
    },
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `mount(source, target, fstype, flags, data)`, then each propagation change on target.
    Mount {
        /// The source (`tmpfs`, a folder to bind).
        source: String,
        /// The mount point.
        target: String,
        /// `-t`, if given.
        fstype: Option<String>,
        /// The flags from `-o`.
        flags: MsFlags,
        /// The options `-o` passes on to the filesystem (`size=`, `mode=`, ...), comma-joined.
        data: String,
        /// Propagation changes from `-o` (`shared`, `rslave`, ...), in order.
        propagation: Vec<(String, MsFlags)>,
    },
    /// `umount2(target, flags)`.
    Unmount {
        /// The mount point.
        target: String,
        /// `-l` (detach), `-f` (force).
        flags: MntFlags,
    },
}

/// What one `-o` item does: a flag to set, a propagation change, or filesystem data.
enum Item {
    Set(MsFlags),
    Propagate(MsFlags),
    Data,
}

/// The mount options rampart-mount knows, and what each does; any other `name=value` item is
/// filesystem data, any other bare word an error.
fn item(name: &str) -> Option<Item> {
    Some(match name {
        "defaults" | "rw" | "suid" | "dev" | "exec" | "async" | "atime" | "diratime" => {
            Item::Set(MsFlags::empty())
        }
        "ro" => Item::Set(MsFlags::MS_RDONLY),
        "bind" => Item::Set(MsFlags::MS_BIND),
        "rbind" => Item::Set(MsFlags::MS_BIND | MsFlags::MS_REC),
        "remount" => Item::Set(MsFlags::MS_REMOUNT),
        "nosuid" => Item::Set(MsFlags::MS_NOSUID),
        "nodev" => Item::Set(MsFlags::MS_NODEV),
        "noexec" => Item::Set(MsFlags::MS_NOEXEC),
        "sync" => Item::Set(MsFlags::MS_SYNCHRONOUS),
        "noatime" => Item::Set(MsFlags::MS_NOATIME),
        "nodiratime" => Item::Set(MsFlags::MS_NODIRATIME),
        "relatime" => Item::Set(MsFlags::MS_RELATIME),
        "strictatime" => Item::Set(MsFlags::MS_STRICTATIME),
        "shared" => Item::Propagate(MsFlags::MS_SHARED),
        "rshared" => Item::Propagate(MsFlags::MS_SHARED | MsFlags::MS_REC),
        "private" => Item::Propagate(MsFlags::MS_PRIVATE),
        "rprivate" => Item::Propagate(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        "slave" => Item::Propagate(MsFlags::MS_SLAVE),
        "rslave" => Item::Propagate(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        _ if name.contains('=') => Item::Data,
        _ => return None,
    })
}

/// Parses `args` (without the program name) for the program named `name` (`mount` or
/// `umount`; a path's last component counts).
///
/// # Errors
/// A usage error naming what is not supported.
pub fn parse(name: &str, args: &[String]) -> Result<Request, KubeMountError> {
    let usage = |m: String| KubeMountError::Usage(m);
    let program = name.rsplit('/').next().unwrap_or(name);
    let mut it = args.iter();
    match program {
        "umount" => {
            let mut flags = MntFlags::empty();
            let mut target = None;
            for a in it {
                match a.as_str() {
                    "-l" => flags |= MntFlags::MNT_DETACH,
                    "-f" => flags |= MntFlags::MNT_FORCE,
                    s if s.starts_with('-') => {
                        return Err(usage(format!("umount: unsupported option {s}")))
                    }
                    s if target.is_none() => target = Some(s.to_owned()),
                    s => return Err(usage(format!("umount: unexpected argument {s}"))),
                }
            }
            let target =
                target.ok_or_else(|| usage("usage: umount [-l] [-f] TARGET".to_owned()))?;
            Ok(Request::Unmount { target, flags })
        }
        "mount" => {
            let mut fstype = None;
            let mut options: Vec<String> = Vec::new();
            let mut positional: Vec<String> = Vec::new();
            while let Some(a) = it.next() {
                let mut value = |flag: &str| {
                    it.next()
                        .cloned()
                        .ok_or_else(|| usage(format!("mount: {flag} needs a value")))
                };
                match a.as_str() {
                    "-t" => fstype = Some(value("-t")?),
                    "-o" => options.extend(value("-o")?.split(',').map(str::to_owned)),
                    s if s.starts_with('-') => {
                        return Err(usage(format!("mount: unsupported option {s}")))
                    }
                    s => positional.push(s.to_owned()),
                }
            }
            let (source, target) = match positional.as_slice() {
                [source, target] => (source.clone(), target.clone()),
                _ => {
                    return Err(usage(
                        "usage: mount [-t TYPE] [-o OPTIONS] SOURCE TARGET".to_owned(),
                    ))
                }
            };
            let mut flags = MsFlags::empty();
            let mut data: Vec<&str> = Vec::new();
            let mut propagation = Vec::new();
            for o in options.iter().filter(|o| !o.is_empty()) {
                match item(o) {
                    Some(Item::Set(f)) => flags |= f,
                    Some(Item::Propagate(f)) => propagation.push((o.clone(), f)),
                    Some(Item::Data) => data.push(o),
                    None => return Err(usage(format!("mount: unsupported option {o}"))),
                }
            }
            Ok(Request::Mount {
                source,
                target,
                fstype,
                flags,
                data: data.join(","),
                propagation,
            })
        }
        other => Err(usage(format!(
            "rampart-mount runs as mount or umount, not as {other}"
        ))),
    }
}

/// Performs `r`.
///
/// # Errors
/// The syscall that failed, with its error.
pub fn apply(r: &Request) -> Result<(), KubeMountError> {
    match r {
        Request::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            propagation,
        } => {
            // A propagation-only request (`-o rshared` on an existing mount) makes no mount.
            let only_propagation = flags.is_empty() && !propagation.is_empty() && fstype.is_none();
            if !only_propagation {
                nix::mount::mount(
                    Some(source.as_str()),
                    target.as_str(),
                    fstype.as_deref(),
                    *flags,
                    (!data.is_empty()).then_some(data.as_str()),
                )
                .map_err(|error| KubeMountError::Mount {
                    from: source.clone(),
                    target: target.clone(),
                    error,
                })?;
            }
            for (kind, f) in propagation {
                nix::mount::mount(
                    None::<&str>,
                    target.as_str(),
                    None::<&str>,
                    *f,
                    None::<&str>,
                )
                .map_err(|error| KubeMountError::Propagation {
                    target: target.clone(),
                    kind: kind.clone(),
                    error,
                })?;
            }
            Ok(())
        }
        Request::Unmount { target, flags } => {
            nix::mount::umount2(target.as_str(), *flags).map_err(|error| KubeMountError::Unmount {
                target: target.clone(),
                error,
            })
        }
    }
}

/// The program: parses `argv` (its first item names the program) and performs the request.
///
/// # Errors
/// As [`parse`] and [`apply`].
pub fn run(argv: &[String]) -> Result<(), KubeMountError> {
    let (name, args) = argv
        .split_first()
        .ok_or_else(|| KubeMountError::Usage("no program name".to_owned()))?;
    apply(&parse(name, args)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn what_kubelet_runs() {
        // (program, arguments, expected request)
        let tmpfs = parse("mount", &args(&["-t", "tmpfs", "tmpfs", "/v/x"])).unwrap();
        assert_eq!(
            tmpfs,
            Request::Mount {
                source: "tmpfs".into(),
                target: "/v/x".into(),
                fstype: Some("tmpfs".into()),
                flags: MsFlags::empty(),
                data: String::new(),
                propagation: vec![],
            }
        );
        let ro = parse(
            "/usr/libexec/rampart/kubelet/mount",
            &args(&["-o", "bind,remount,ro", "/a", "/b"]),
        )
        .unwrap();
        assert_eq!(
            ro,
            Request::Mount {
                source: "/a".into(),
                target: "/b".into(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                data: String::new(),
                propagation: vec![],
            }
        );
        let sized = parse(
            "mount",
            &args(&[
                "-t",
                "tmpfs",
                "-o",
                "size=64m,mode=0755,nosuid,rshared",
                "tmpfs",
                "/t",
            ]),
        )
        .unwrap();
        let Request::Mount {
            flags,
            data,
            propagation,
            ..
        } = sized
        else {
            panic!("not a mount")
        };
        assert_eq!(flags, MsFlags::MS_NOSUID);
        assert_eq!(data, "size=64m,mode=0755");
        assert_eq!(
            propagation,
            [("rshared".to_owned(), MsFlags::MS_SHARED | MsFlags::MS_REC)]
        );
        assert_eq!(
            parse("umount", &args(&["/v/x"])).unwrap(),
            Request::Unmount {
                target: "/v/x".into(),
                flags: MntFlags::empty()
            }
        );
        assert_eq!(
            parse("umount", &args(&["-l", "/v/x"])).unwrap(),
            Request::Unmount {
                target: "/v/x".into(),
                flags: MntFlags::MNT_DETACH
            }
        );
    }

    #[test]
    fn anything_else_is_refused() {
        // (program, arguments, what the error says)
        let cases: &[(&str, &[&str], &str)] = &[
            ("mount", &[], "usage: mount"),
            ("mount", &["/a"], "usage: mount"),
            ("mount", &["-a"], "unsupported option -a"),
            ("mount", &["-t"], "-t needs a value"),
            (
                "mount",
                &["-o", "loop", "/a", "/b"],
                "unsupported option loop",
            ),
            ("mount", &["/a", "/b", "/c"], "usage: mount"),
            ("umount", &[], "usage: umount"),
            ("umount", &["-R", "/a"], "unsupported option -R"),
            ("umount", &["/a", "/b"], "unexpected argument /b"),
            ("sh", &["-c", "x"], "not as sh"),
        ];
        for (name, a, want) in cases {
            let e = parse(name, &args(a)).unwrap_err().to_string();
            assert!(e.contains(want), "{name} {a:?}: {e}");
        }
        assert!(run(&[]).is_err());
    }

    /// As root, in a thread with its own mount namespace: a tmpfs goes up and comes down.
    #[test]
    fn mounts_and_unmounts_a_tmpfs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped mounts_and_unmounts_a_tmpfs: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().display().to_string();
        let (mounted, after) = crate::mount::tests::in_private_mount_namespace(move || {
            let info = || std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            run(&args(&[
                "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", &target,
            ]))
            .unwrap();
            let mounted = info();
            run(&args(&["umount", &target])).unwrap();
            (mounted, info())
        });
        let here = format!(" {} ", dir.path().display());
        assert!(
            mounted
                .lines()
                .any(|l| l.contains(&here) && l.contains(" tmpfs ")),
            "{mounted}"
        );
        assert!(!after.lines().any(|l| l.contains(&here)), "{after}");
    }
}
