//! Support for the hardening end-to-end tests (`tests/tests/hardening.rs`): the in-guest
//! `finit_module` probe of `rampart-check finit-module`, the parsers of its and the audit's
//! console lines, and booting an image with extra kernel arguments.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::harness::{self, Boot, Env, HarnessError};

/// The prefix of the probe's console line: `RAMPART-FINIT errno=EPERM path=/lib/...`.
pub const FINIT_PREFIX: &str = "RAMPART-FINIT ";

/// Calls `finit_module(2)` on `path` with no parameters; `Ok(())` when the module loaded, else
/// the errno.
pub fn finit_module(path: &Path) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).map_err(|e| e.raw_os_error().unwrap_or(0))?;
    let params = c"";
    // SAFETY: the fd is open for the duration of the call and `params` is a valid C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// `rampart-check finit-module PATH`: prints the probe's line (the outcome is in the line, not
/// the exit status).
pub fn finit_cli(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", finit_line(path, finit_module(path)))?;
    out.flush()?;
    Ok(())
}

/// The symbolic name of the errnos the probe expects.
pub fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM".to_owned(),
        libc::ENOENT => "ENOENT".to_owned(),
        libc::EEXIST => "EEXIST".to_owned(),
        libc::ENOSYS => "ENOSYS".to_owned(),
        libc::EKEYREJECTED => "EKEYREJECTED".to_owned(),
        n => format!("errno{n}"),
    }
}

/// The probe's console line for a result.
pub fn finit_line(path: &Path, result: Result<(), i32>) -> String {
    let outcome = match result {
        Ok(()) => "loaded".to_owned(),
        Err(e) => format!("errno={}", errno_name(e)),
    };
    format!("{FINIT_PREFIX}{outcome} path={}", path.display())
}

/// The outcome word of the probe's line in a console (`errno=EPERM`, `loaded`).
pub fn find_finit(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        let at = l.find(FINIT_PREFIX)?;
        l.get(at + FINIT_PREFIX.len()..)?
            .split_whitespace()
            .next()
            .map(str::to_owned)
    })
}

/// `(passed, failed)` from PID 1's `rampart-init: audit: N passed, M failed` boot line.
pub fn boot_audit_summary(console: &str) -> Option<(usize, usize)> {
    console.lines().find_map(|l| {
        let rest = l.split("rampart-init: audit: ").nth(1)?;
        let mut words = rest.split([' ', ',']).filter(|w| !w.is_empty());
        let passed = words.next()?.parse().ok()?;
        if words.next()? != "passed" {
            return None;
        }
        let failed = words.next()?.parse().ok()?;
        Some((passed, failed))
    })
}

/// `rampart-image boot IMAGE --append APPEND` with the harness's memory, CPUs and timeout;
/// saves the console as `<out_dir>/<name>.console.log`.
pub fn boot_with_append(
    env: &Env,
    image: &Path,
    name: &str,
    append: &str,
) -> Result<Boot, HarnessError> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let timeout = harness::boot_timeout();
    let accel = std::env::var("RAMPART_TEST_ACCEL").unwrap_or_else(|_| "auto".to_owned());
    eprintln!("hardening: booting {name} with --append {append:?}");
    let output = harness::run(
        Command::new(env.rampart_image())
            .arg("boot")
            .arg(image)
            .args(["--memory", "1024", "--cpus", "2", "--accel", &accel])
            .args(["--timeout", &timeout.to_string()])
            .args(["--append", append]),
        Duration::from_secs(timeout + 60),
    )?;
    let log = env.out_dir.join(format!("{name}.console.log"));
    let text = format!(
        "{}\n--- stderr ({}, {:.1}s) ---\n{}",
        output.stdout,
        output.status,
        output.elapsed.as_secs_f64(),
        output.stderr
    );
    std::fs::write(&log, text).map_err(|source| HarnessError::Io {
        action: "write",
        path: log.clone(),
        source,
    })?;
    Ok(Boot { output, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines() {
        let c = "x\nhardening: RAMPART-FINIT errno=EPERM path=/lib/a.ko\nrampart-init: audit: 88 passed, 0 failed, 2 skipped\n";
        assert_eq!(find_finit(c).as_deref(), Some("errno=EPERM"));
        assert_eq!(boot_audit_summary(c), Some((88, 0)));
        assert_eq!(
            boot_audit_summary("rampart-init: audit: 3 passed, 1 failed"),
            Some((3, 1))
        );
        assert_eq!(boot_audit_summary("nothing"), None);
        assert_eq!(
            finit_line(Path::new("/x.ko"), Err(libc::EPERM)),
            "RAMPART-FINIT errno=EPERM path=/x.ko"
        );
        assert_eq!(
            finit_line(Path::new("/x.ko"), Ok(())),
            "RAMPART-FINIT loaded path=/x.ko"
        );
    }

    #[test]
    fn finit_of_a_missing_file_is_enoent() {
        assert_eq!(
            finit_module(Path::new("/nonexistent.ko")),
            Err(libc::ENOENT)
        );
    }
}
