//! The in-guest checker of the rampart end-to-end tests, and two host-side helpers of the
//! boot benchmark.
//!
//! ```text
//! rampart-check [report]          in the guest: print the report as `RAMPART-CHECK <i>/<n> <json
//!                                 chunk>` lines (PID 1 cuts long lines), exit 0
//! rampart-check orphans COUNT     fork COUNT children that sleep 1 s, print their PIDs, exit
//! rampart-check rss               in the guest: print `RAMPART-RSS pid1_vmrss_kib=N`
//! rampart-check plan-sh HOST.toml DIR    write DIR/init and DIR/stage1: a busybox init doing
//!                                 the same mounts, modules, sysctls and cgroups as rampart
//! rampart-check host-toml EXAMPLE.toml CHECKER [ARGS...]
//!                                 print EXAMPLE with absolute paths and one service,
//!                                 `CHECKER ARGS...` copied into the image, on_exit poweroff
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rampart_tests::guest::{self, OrphanSpec, Paths};
use rampart_tests::harness::{self, TestService};
use rampart_tests::report::{parse_vmrss_kib, report_lines};

const ORPHANS: u32 = 1000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Err(e) = run(&argv) {
        eprintln!("rampart-check: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[&str]) -> Result<()> {
    match args {
        [] | ["report"] => report(),
        ["orphans", count] => orphans(count.parse().context("orphans COUNT")?),
        ["rss"] => rss(),
        ["finit-module", path] => rampart_tests::hardening::finit_cli(Path::new(path)),
        ["plan-sh", config, dir] => plan_sh(Path::new(config), Path::new(dir)),
        ["host-toml", example, checker, args @ ..] => {
            let text = harness::host_from_example(
                Path::new(example),
                Path::new(checker),
                &[TestService::checker(args)],
                &[],
            )?;
            print!("{text}");
            Ok(())
        }
        _ => bail!(
            "usage: rampart-check [report | orphans COUNT | rss | plan-sh HOST.toml DIR | host-toml EXAMPLE.toml CHECKER [ARGS...]]"
        ),
    }
}

fn report() -> Result<()> {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let spec = OrphanSpec {
        program,
        count: ORPHANS,
        max_wait: Duration::from_secs(60),
    };
    let report = guest::gather(&Paths::default(), Some(&spec));
    let json = serde_json::to_string(&report)?;
    // One write per line, so that each line reaches the console in one piece.
    let mut out = std::io::stdout().lock();
    for line in report_lines(&json) {
        out.write_all(format!("{line}\n").as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

fn orphans(count: u32) -> Result<()> {
    let pids = guest::spawn_orphans(count, Duration::from_secs(1)).context("fork")?;
    let line: Vec<String> = pids.iter().map(i32::to_string).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line.join(" "))?;
    out.flush()?;
    Ok(())
}

fn rss() -> Result<()> {
    let status = std::fs::read_to_string("/proc/1/status").context("read /proc/1/status")?;
    let kib = parse_vmrss_kib(&status).context("no VmRSS in /proc/1/status")?;
    println!("RAMPART-RSS pid1_vmrss_kib={kib}");
    Ok(())
}

fn plan_sh(config: &Path, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let cfg = rampart_config::load(config)?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for (name, text) in [
        ("init", rampart_tests::plansh::stage0()),
        ("stage1", rampart_tests::plansh::stage1(&cfg)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}
