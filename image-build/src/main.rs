//! rampart-image entry point: a thin clap layer over the `rampart_image` library.
//!
//! Exit statuses: `build` 0 or 1; `check` 0 (ok) or 1 (problems); `boot` 0 clean power-off,
//! 2 reboot, 3 kernel panic, 4 timeout, 5 QEMU failed (or bad image), 6 halted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rampart_image::build::{self, BuildRequest};
use rampart_image::qemu::{self, Accel, BootOptions, Forward, HostFwd, Outcome};

/// Build and boot rampart images.
#[derive(Parser, Debug)]
#[command(name = "rampart-image", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build DIR/kernel, DIR/initrd, DIR/cmdline and DIR/manifest.json from a host file.
    Build {
        /// The host TOML file.
        #[arg(long)]
        config: PathBuf,
        /// The output directory.
        #[arg(long)]
        out: PathBuf,
        /// The kernel (vmlinuz or vmlinux); overrides [image] kernel.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The modules directory (lib/modules/RELEASE); overrides [image] modules.
        #[arg(long)]
        modules: Option<PathBuf>,
        /// The init binary; defaults to rampart-init next to this executable.
        #[arg(long)]
        init: Option<PathBuf>,
        /// Output format: `initramfs` (kernel + initrd) or `disk` (a UEFI GPT disk.raw).
        #[arg(long, default_value = "initramfs", value_parser = ["initramfs", "disk"])]
        format: String,
        /// With `--format disk`: also write DIR/disk.qcow2 (qemu-img convert).
        #[arg(long)]
        qcow2: bool,
        /// With `--format disk`: size of the state partition in MiB.
        #[arg(long, default_value_t = 256)]
        state_size: u64,
    },
    /// Validate a host file: print its problems and exit 1, or print "ok".
    Check {
        /// The host TOML file.
        file: PathBuf,
    },
    /// Print the host's nftables ruleset as `nft` text (exit 1 on config problems).
    Firewall {
        /// The host TOML file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Boot an image in QEMU with the serial console on stdout.
    Boot {
        /// The image directory written by `build`.
        dir: PathBuf,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Number of vCPUs.
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        /// Kill the guest after this many seconds (exit status 4).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Accelerator: auto, kvm or tcg.
        #[arg(long, default_value = "auto")]
        accel: Accel,
        /// Forward 127.0.0.1:HOSTPORT to the guest's GUESTPORT (TCP); repeatable.
        #[arg(long = "forward", value_name = "HOSTPORT:GUESTPORT", value_parser = parse_forward)]
        forwards: Vec<Forward>,
        /// A QEMU user-network forward, e.g. `tcp:19100-:9100` (host port 19100 on 127.0.0.1
        /// to guest port 9100; `udp:` too, and QEMU's `tcp:ADDR:HOSTPORT-ADDR:GUESTPORT`);
        /// repeatable.
        #[arg(long = "hostfwd", value_name = "SPEC", value_parser = parse_hostfwd)]
        hostfwds: Vec<HostFwd>,
        /// Serve the guest's control channel on this unix socket of the build machine
        /// (a virtio-serial port for `[control] host_channel = true`): `rampart --socket PATH`.
        #[arg(long, value_name = "PATH")]
        control: Option<PathBuf>,
        /// Attach a raw virtio disk; repeatable.
        #[arg(long = "disk", value_name = "FILE")]
        disks: Vec<PathBuf>,
        /// Extra kernel arguments after DIR/cmdline.
        #[arg(long, allow_hyphen_values = true)]
        append: Option<String>,
    },
}

/// The error and its causes, each cause left out when the text so far already says it
/// (our error types include their source in their message).
fn render(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

/// Log level from `RAMPART_LOG` (error, warn, info, debug, trace); info by default.
fn log_level() -> tracing::Level {
    std::env::var("RAMPART_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing::Level::INFO)
}

fn parse_forward(s: &str) -> Result<Forward, String> {
    s.parse().map_err(|e: qemu::QemuError| e.to_string())
}

fn parse_hostfwd(s: &str) -> Result<HostFwd, String> {
    s.parse().map_err(|e: qemu::QemuError| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_max_level(log_level())
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rampart-image: error: {}", render(&e));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Build {
            config,
            out,
            kernel,
            modules,
            init,
            format,
            qcow2,
            state_size,
        } => {
            let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
            let req = BuildRequest {
                config,
                out,
                kernel,
                modules,
                init,
                mtime: build::mtime_from_epoch(epoch.as_deref())?,
            };
            let started = std::time::Instant::now();
            if format == "disk" {
                return rampart_image::disk::cli::run(&req, qcow2, state_size, started);
            }
            let manifest = build::build(&req)
                .with_context(|| format!("cannot build {}", req.config.display()))?;
            eprintln!(
                "rampart-image: built {} ({} files, kernel {}, initrd {} bytes) in {:.2}s",
                req.out.display(),
                manifest.files.len(),
                manifest.inputs.kernel.kind,
                manifest.initrd.size,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Firewall { config } => match rampart_image::firewall_cmd::render(&config) {
            Ok(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Cmd::Check { file } => match rampart_config::load(&file) {
            Ok(_) => {
                println!("ok");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Cmd::Boot {
            dir,
            memory,
            cpus,
            timeout,
            accel,
            forwards,
            hostfwds,
            control,
            disks,
            append,
        } => {
            let opts = BootOptions {
                dir,
                memory_mib: memory,
                cpus,
                timeout: Duration::from_secs(timeout),
                accel,
                forwards,
                hostfwds,
                control,
                disks,
                append,
            };
            let outcome = match qemu::boot(&opts) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("rampart-image: error: {e}");
                    Outcome::QemuFailed
                }
            };
            eprintln!(
                "rampart-image: {} (exit {})",
                outcome.describe(),
                outcome.exit_code()
            );
            Ok(ExitCode::from(
                u8::try_from(outcome.exit_code()).unwrap_or(1),
            ))
        }
    }
}
