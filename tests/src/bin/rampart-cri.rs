//! rampart-cri: the test suite's own CRI client (logic in `rampart_tests::cri`).
//!
//! ```text
//! rampart-cri version [--socket PATH]    CRI v1 Version of containerd's CRI plugin
//! rampart-cri tier1 [OPTIONS]            the tier-1 scenario, CRI-TEST KEY=VALUE lines
//!                                        (options: rampart_tests::cri::scenario::Options)
//! rampart-cri kubelet [OPTIONS]          wait for a static pod's container to run, report
//!                                        (options: rampart_tests::kubelet::GuestOptions)
//! rampart-cri bench [OPTIONS]            pod start latency, rampart-runc against plain runc
//!                                        (options: rampart_tests::cri::bench::BenchOptions)
//! ```
//!
//! Exits 0 when every step ran (refusals are results), 1 otherwise, 2 on bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rampart_tests::cri::api::{Cri, RUNTIME_V1};
use rampart_tests::cri::bench::{self, BenchOptions};
use rampart_tests::cri::scenario::{self, Options, DEFAULT_SOCKET};

/// Runs `run` on the parsed options: its failure count as the exit status (0 or 1), or 2 and
/// the parse error.
fn run_with<O>(parsed: Result<O, String>, run: impl FnOnce(&O) -> u32) -> ExitCode {
    match parsed {
        Ok(o) if run(&o) == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("rampart-cri: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, rest)) if cmd == "tier1" => run_with(Options::parse(rest), scenario::run),
        Some((cmd, rest)) if cmd == "kubelet" => {
            run_with(rampart_tests::kubelet::GuestOptions::parse(rest), |o| {
                u32::from(rampart_tests::kubelet::guest_main(o))
            })
        }
        Some((cmd, rest)) if cmd == "bench" => run_with(BenchOptions::parse(rest), bench::run),
        Some((cmd, rest)) if cmd == "version" => {
            let socket = match rest {
                [] => PathBuf::from(DEFAULT_SOCKET),
                [flag, path] if flag == "--socket" => PathBuf::from(path),
                _ => {
                    eprintln!("rampart-cri: usage: rampart-cri version [--socket PATH]");
                    return ExitCode::from(2);
                }
            };
            match Cri::new(&socket, Duration::from_secs(30)).version(RUNTIME_V1) {
                Ok(v) => {
                    println!(
                        "{} {} (CRI {})",
                        v.runtime_name, v.runtime_version, v.runtime_api_version
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rampart-cri: {e}");
                    ExitCode::from(1)
                }
            }
        }
        _ => {
            eprintln!("rampart-cri: usage: rampart-cri version [--socket PATH] | rampart-cri tier1 [OPTIONS] | rampart-cri kubelet [OPTIONS] | rampart-cri bench [OPTIONS]");
            ExitCode::from(2)
        }
    }
}
