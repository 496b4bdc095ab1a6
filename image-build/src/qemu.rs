//! Boot an image under `qemu-system-x86_64` with the serial console on our stdout, and
//! classify how the guest ended.
//!
//! The argv is built as plain data by [`qemu_args`]; the console is scanned line by line by
//! [`scan_line`] and the end is classified by [`classify`] (both pure). [`boot`] runs it.
//!
//! Acceleration (`--accel auto`): KVM is used only when (1) `/dev/kvm` opens read-write and
//! answers `KVM_GET_API_VERSION` with 12, (2) the CPU advertises hardware virtualisation
//! (`vmx` or `svm` in `/proc/cpuinfo`), and (3) a probe boot of the image's own kernel
//! under KVM, with no initrd, reaches the root-mount panic within
//! [`KVM_PROBE_TIMEOUT`]. Step 2 is why this is cheap where it matters: some cloud
//! machines expose a nested, paravirtual `/dev/kvm` without `vmx`/`svm` on which Debian's
//! kernel never boots (it hangs in the decompressor, or the ELF kernel dies on an
//! emulation failure); they go straight to TCG with no probe cost. Step 3 catches any other
//! broken KVM at the cost of about one second on machines where KVM works (on the machine
//! this was written on, QEMU aborts at once under KVM: "failed to set MSR 0x10a").
//! `--accel kvm` needs only step 1: an explicit choice is honoured.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// How long the KVM probe boot may take.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long to keep reading the console after a panic line, to show the trace.
const PANIC_GRACE: Duration = Duration::from_secs(2);

/// Errors of the boot command.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// An image file is missing.
    #[error("cannot read {path}: {source}")]
    ReadImage {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `--forward` value is malformed.
    #[error("invalid forward {value:?}: expected HOSTPORT:GUESTPORT")]
    BadForward {
        /// The value.
        value: String,
    },
    /// A `--hostfwd` value is malformed.
    #[error("invalid hostfwd {value:?}: expected tcp:HOSTPORT-:GUESTPORT (or udp, with optional IPv4 addresses: tcp:ADDR:HOSTPORT-ADDR:GUESTPORT)")]
    BadHostFwd {
        /// The value.
        value: String,
    },
    /// `--accel kvm` was asked for but KVM is not usable.
    #[error("kvm requested but not usable: {reason}")]
    KvmUnavailable {
        /// Why.
        reason: String,
    },
}

/// How to accelerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Probe KVM, else TCG.
    Auto,
    /// KVM (`-cpu host`).
    Kvm,
    /// TCG ([`TCG_CPU`], multi-threaded).
    Tcg,
}

/// The CPU model under TCG: everything QEMU emulates, but without ERMS and FSRM ("fast"
/// `rep movsb`/`rep stosb`). With them the guest kernel copies and clears memory one byte per
/// `rep` iteration, which TCG runs as one translated block each; without them it uses
/// `rep movsq`/`rep stosq` or unrolled loops. Measured by `scripts/bench-cri.sh` on
/// Debian's 6.1 kernel: copying runc (8.7 MB) into a memfd went from 690 to 300 ms, and
/// containerd was ready 2 s sooner (docs/benchmarks.md).
pub const TCG_CPU: &str = "max,-erms,-fsrm";

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(format!(
                "unknown accelerator {s:?}: expected auto, kvm or tcg"
            )),
        }
    }
}

/// A host-to-guest TCP port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Port on 127.0.0.1 of the host.
    pub host: u16,
    /// Port in the guest.
    pub guest: u16,
}

impl std::str::FromStr for Forward {
    type Err = QemuError;
    fn from_str(s: &str) -> Result<Self, QemuError> {
        let bad = || QemuError::BadForward {
            value: s.to_string(),
        };
        let (h, g) = s.split_once(':').ok_or_else(bad)?;
        Ok(Forward {
            host: h.parse().map_err(|_| bad())?,
            guest: g.parse().map_err(|_| bad())?,
        })
    }
}

pub use crate::operate::HostFwd;

/// Everything that shapes the QEMU command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// Image directory (`kernel`, `initrd`, `cmdline`).
    pub dir: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Kill the guest after this long.
    pub timeout: Duration,
    /// Accelerator choice.
    pub accel: Accel,
    /// Port forwards (a virtio-net device only when there is at least one of these or of
    /// `hostfwds`).
    pub forwards: Vec<Forward>,
    /// `--hostfwd` forwards, on the same user-mode network as `forwards`.
    pub hostfwds: Vec<HostFwd>,
    /// `--control PATH`: a unix socket on the build machine connected to the guest's
    /// control channel (a virtio-serial port named `org.rampart.control`).
    pub control: Option<PathBuf>,
    /// Raw virtio disks.
    pub disks: Vec<PathBuf>,
    /// Extra kernel arguments appended to `DIR/cmdline`.
    pub append: Option<String>,
}

impl BootOptions {
    /// Defaults for `dir`: 1024 MiB, 2 vCPUs, 300 s, auto.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            memory_mib: 1024,
            cpus: 2,
            timeout: Duration::from_secs(300),
            accel: Accel::Auto,
            forwards: Vec::new(),
            hostfwds: Vec::new(),
            control: None,
            disks: Vec::new(),
            append: None,
        }
    }
}

/// The argv after the program name, for a resolved accelerator (`Kvm` or `Tcg`).
pub fn qemu_args(opts: &BootOptions, accel: Accel, cmdline: &str) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-machine", "q35", "-nodefaults", "-no-user-config"]);
    match accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg | Accel::Auto => push(&["-accel", "tcg,thread=multi", "-cpu", TCG_CPU]),
    }
    push(&[
        "-m",
        &opts.memory_mib.to_string(),
        "-smp",
        &opts.cpus.to_string(),
    ]);
    push(&[
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        "-monitor",
        "none",
    ]);
    let kernel = opts.dir.join("kernel");
    let initrd = opts.dir.join("initrd");
    let append = match opts.append.as_deref().map(str::trim) {
        Some(extra) if !extra.is_empty() => format!("{} {extra}", cmdline.trim()),
        _ => cmdline.trim().to_string(),
    };
    push(&["-kernel", &kernel.to_string_lossy()]);
    push(&["-initrd", &initrd.to_string_lossy()]);
    push(&["-append", &append]);
    for arg in device_args(opts) {
        push(&[&arg]);
    }
    for d in &opts.disks {
        let spec = format!("file={},if=virtio,format=raw", d.to_string_lossy());
        push(&["-drive", &spec]);
    }
    a
}

/// The network and control-channel devices of `opts` (shared by the kernel and the UEFI
/// boot): a user-mode netdev with every `--forward` and `--hostfwd` (none without any), and
/// with `--control` a virtio-serial port named `org.rampart.control` backed
/// by a unix socket server QEMU creates at that path.
pub fn device_args(opts: &BootOptions) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if !opts.forwards.is_empty() || !opts.hostfwds.is_empty() {
        let fwd: String = opts
            .forwards
            .iter()
            .map(|f| format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
            .chain(opts.hostfwds.iter().map(|h| format!(",hostfwd={h}")))
            .collect();
        a.push("-netdev".into());
        a.push(format!("user,id=net0{fwd}"));
        a.push("-device".into());
        a.push("virtio-net-pci,netdev=net0".into());
    }
    if let Some(path) = &opts.control {
        a.extend(crate::operate::control_args(path));
    }
    a
}

/// A console line that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// `reboot: Power down`.
    PowerDown,
    /// `reboot: Restarting system`.
    Restart,
    /// `reboot: System halted`.
    Halted,
    /// `Kernel panic - not syncing`.
    Panic,
    /// `---[ end Kernel panic`.
    PanicEnd,
}

/// What a console line says, if anything.
pub fn scan_line(line: &str) -> Option<ConsoleEvent> {
    if line.contains("---[ end Kernel panic") {
        Some(ConsoleEvent::PanicEnd)
    } else if line.contains("Kernel panic - not syncing") {
        Some(ConsoleEvent::Panic)
    } else if line.contains("reboot: Power down") {
        Some(ConsoleEvent::PowerDown)
    } else if line.contains("reboot: Restarting system") {
        Some(ConsoleEvent::Restart)
    } else if line.contains("reboot: System halted") {
        Some(ConsoleEvent::Halted)
    } else {
        None
    }
}

/// How the QEMU process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// We killed it at the timeout.
    Timeout,
    /// We killed it after a panic or a halt.
    Killed,
    /// It could not be started.
    SpawnFailed,
}

/// How the boot ended, with the exit status of `rampart-image boot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Clean power-off: 0.
    PoweredOff,
    /// The guest rebooted (or reset): 2.
    Rebooted,
    /// Kernel panic: 3.
    Panic,
    /// Timeout: 4.
    Timeout,
    /// QEMU failed to start or exited non-zero: 5.
    QemuFailed,
    /// The guest halted (QEMU killed): 6.
    Halted,
}

impl Outcome {
    /// The process exit status.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::PoweredOff => 0,
            Outcome::Rebooted => 2,
            Outcome::Panic => 3,
            Outcome::Timeout => 4,
            Outcome::QemuFailed => 5,
            Outcome::Halted => 6,
        }
    }

    /// A short description.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::PoweredOff => "guest powered off",
            Outcome::Rebooted => "guest rebooted",
            Outcome::Panic => "kernel panic",
            Outcome::Timeout => "timeout",
            Outcome::QemuFailed => "qemu failed",
            Outcome::Halted => "guest halted",
        }
    }
}

/// Classify from the events seen on the console and how QEMU ended.
pub fn classify(events: &[ConsoleEvent], ending: Ending) -> Outcome {
    let seen = |e| events.contains(&e);
    if ending == Ending::SpawnFailed {
        return Outcome::QemuFailed;
    }
    if seen(ConsoleEvent::Panic) {
        return Outcome::Panic;
    }
    match ending {
        Ending::Timeout => Outcome::Timeout,
        Ending::Killed if seen(ConsoleEvent::Halted) => Outcome::Halted,
        Ending::Killed => Outcome::QemuFailed,
        Ending::Exited(Some(0)) => {
            if seen(ConsoleEvent::PowerDown) {
                Outcome::PoweredOff
            } else if seen(ConsoleEvent::Halted) {
                Outcome::Halted
            } else {
                // A reboot line, or a reset with no message (triple fault) under -no-reboot.
                Outcome::Rebooted
            }
        }
        Ending::Exited(_) | Ending::SpawnFailed => Outcome::QemuFailed,
    }
}

/// Whether `/proc/cpuinfo` text advertises hardware virtualisation.
pub fn cpu_has_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm")
}

/// Step 1 of the KVM check: the device opens read-write and speaks API version 12.
pub fn kvm_device(dev: &Path) -> Result<(), String> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd is valid
    // for the duration of the call.
    let version = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != 12 {
        return Err(format!(
            "{} answers API version {version}, not 12",
            dev.display()
        ));
    }
    Ok(())
}

/// Steps 1 and 2 of the KVM check: the device works and the CPU has VT-x/AMD-V.
pub fn kvm_gate(dev: &Path, cpuinfo: &str) -> Result<(), String> {
    kvm_device(dev)?;
    if !cpu_has_virt(cpuinfo) {
        return Err("the CPU advertises neither vmx nor svm (nested or paravirtual KVM)".into());
    }
    Ok(())
}

/// Step 3: boot `kernel` under KVM with no initrd; true when it reaches the root mount
/// panic (the whole kernel init ran) within [`KVM_PROBE_TIMEOUT`].
pub fn kvm_probe(kernel: &Path) -> bool {
    let args = [
        "-machine",
        "q35",
        "-nodefaults",
        "-no-user-config",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-append",
        "console=ttyS0 panic=-1 loglevel=4 rdinit=/rampart-kvm-probe",
        "-kernel",
    ];
    let child = Command::new(QEMU)
        .args(args)
        .arg(kernel)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return false;
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let l = String::from_utf8_lossy(&line);
            if l.contains("Unable to mount root fs") || l.contains("No working init found") {
                let _ = tx.send(());
                return;
            }
        }
    });
    let ok = rx.recv_timeout(KVM_PROBE_TIMEOUT).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    ok
}

/// Resolve `auto` (and check `kvm`) for an image whose kernel is `kernel`.
pub fn resolve_accel(accel: Accel, kernel: &Path) -> Result<Accel, QemuError> {
    let dev = Path::new("/dev/kvm");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    match accel {
        Accel::Tcg => Ok(Accel::Tcg),
        // An explicit request only needs a working device: the user knows best.
        Accel::Kvm => {
            kvm_device(dev).map_err(|reason| QemuError::KvmUnavailable { reason })?;
            if !cpu_has_virt(&cpuinfo) {
                tracing::warn!("kvm requested although the CPU advertises neither vmx nor svm");
            }
            Ok(Accel::Kvm)
        }
        Accel::Auto => match kvm_gate(dev, &cpuinfo) {
            Err(reason) => {
                tracing::info!("using tcg: kvm not usable: {reason}");
                Ok(Accel::Tcg)
            }
            Ok(()) => {
                let started = Instant::now();
                if kvm_probe(kernel) {
                    tracing::info!(
                        ms = started.elapsed().as_millis() as u64,
                        "using kvm: probe boot succeeded"
                    );
                    Ok(Accel::Kvm)
                } else {
                    tracing::warn!("using tcg: the kernel did not boot under kvm");
                    Ok(Accel::Tcg)
                }
            }
        },
    }
}

/// Boot the image: stream the console to stdout and return how it ended.
pub fn boot(opts: &BootOptions) -> Result<Outcome, QemuError> {
    if let Some(disk) = crate::disk::uefi::disk_image(&opts.dir) {
        return crate::disk::uefi::boot(opts, &disk);
    }
    let kernel = opts.dir.join("kernel");
    for f in ["kernel", "initrd", "cmdline"] {
        let p = opts.dir.join(f);
        std::fs::metadata(&p).map_err(|source| QemuError::ReadImage { path: p, source })?;
    }
    let cmdline_path = opts.dir.join("cmdline");
    let cmdline =
        std::fs::read_to_string(&cmdline_path).map_err(|source| QemuError::ReadImage {
            path: cmdline_path,
            source,
        })?;
    let accel = resolve_accel(opts.accel, &kernel)?;
    let args = qemu_args(opts, accel, &cmdline);
    tracing::info!("running {QEMU} {}", args.join(" "));
    Ok(run(QEMU, &args, opts.timeout))
}

/// Run `program args`, stream its stdout, scan it and classify the end.
pub fn run(program: &str, args: &[String], timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs in the forked child before exec and only makes one
    // async-signal-safe syscall: QEMU is killed when this process (its parent) dies, so a
    // killed `rampart-image boot` never leaves a guest running.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = command.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot start {program}: {e}");
            return classify(&[], Ending::SpawnFailed);
        }
    };
    let (tx, rx) = mpsc::channel::<ConsoleEvent>();
    let reader = child.stdout.take().map(|stdout| {
        std::thread::spawn(move || {
            let mut out = std::io::stdout();
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = out.write_all(&line);
                        let _ = out.flush();
                        if let Some(ev) = scan_line(&String::from_utf8_lossy(&line)) {
                            let _ = tx.send(ev);
                        }
                    }
                }
            }
        })
    });
    let mut events = Vec::new();
    let mut kill_at: Option<Instant> = None;
    let ending = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ending::Exited(status.code()),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("cannot wait for {program}: {e}");
                break Ending::Exited(None);
            }
        }
        let now = Instant::now();
        if kill_at.is_some_and(|k| now >= k) {
            let _ = child.kill();
            let _ = child.wait();
            break Ending::Killed;
        }
        if now.duration_since(started) >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break Ending::Timeout;
        }
        if let Ok(ev) = rx.recv_timeout(Duration::from_millis(50)) {
            events.push(ev);
            match ev {
                ConsoleEvent::Panic => kill_at = Some(Instant::now() + PANIC_GRACE),
                ConsoleEvent::PanicEnd | ConsoleEvent::Halted => kill_at = Some(Instant::now()),
                ConsoleEvent::PowerDown | ConsoleEvent::Restart => {}
            }
        }
    };
    // After a normal exit the pipe reaches EOF: wait for the last lines. After a kill, a
    // process that inherited the pipe could keep it open, so do not wait for the reader.
    if let (Some(r), Ending::Exited(_)) = (reader, ending) {
        let _ = r.join();
    }
    events.extend(rx.try_iter());
    let outcome = classify(&events, ending);
    tracing::info!(
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        ?ending,
        "{}",
        outcome.describe()
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BootOptions {
        BootOptions::new("/img".into())
    }

    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn args_default_tcg() {
        let a = qemu_args(&opts(), Accel::Tcg, "console=ttyS0 panic=-1\n");
        assert!(has_pair(&a, "-accel", "tcg,thread=multi"));
        assert!(has_pair(&a, "-cpu", "max,-erms,-fsrm"));
        assert!(has_pair(&a, "-m", "1024"));
        assert!(has_pair(&a, "-smp", "2"));
        assert!(has_pair(&a, "-kernel", "/img/kernel"));
        assert!(has_pair(&a, "-initrd", "/img/initrd"));
        assert!(has_pair(&a, "-append", "console=ttyS0 panic=-1"));
        assert!(has_pair(&a, "-serial", "stdio"));
        assert!(has_pair(&a, "-monitor", "none"));
        for flag in ["-nographic", "-no-reboot", "-nodefaults"] {
            assert!(a.iter().any(|x| x == flag), "{flag}");
        }
        assert!(!a
            .iter()
            .any(|x| x == "-netdev" || x == "-device" || x == "-drive"));
    }

    #[test]
    fn args_kvm_forwards_disks_append() {
        let mut o = opts();
        o.memory_mib = 2048;
        o.cpus = 1;
        o.forwards = vec!["8080:80".parse().unwrap(), "2222:22".parse().unwrap()];
        o.disks = vec!["/d/state.img".into()];
        o.append = Some(" rampart.test=1 ".into());
        let a = qemu_args(&o, Accel::Kvm, "console=ttyS0");
        assert!(has_pair(&a, "-accel", "kvm"));
        assert!(has_pair(&a, "-cpu", "host"));
        assert!(has_pair(&a, "-m", "2048"));
        assert!(has_pair(&a, "-smp", "1"));
        assert!(has_pair(&a, "-append", "console=ttyS0 rampart.test=1"));
        assert!(has_pair(
            &a,
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-:22"
        ));
        assert!(has_pair(&a, "-device", "virtio-net-pci,netdev=net0"));
        assert!(has_pair(
            &a,
            "-drive",
            "file=/d/state.img,if=virtio,format=raw"
        ));
    }

    #[test]
    fn args_hostfwd_and_control() {
        let mut o = opts();
        o.hostfwds = vec!["tcp:19100-:9100".parse().unwrap()];
        let a = qemu_args(&o, Accel::Tcg, "console=ttyS0");
        assert!(has_pair(
            &a,
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:19100-:9100"
        ));
        assert!(has_pair(&a, "-device", "virtio-net-pci,netdev=net0"));
        assert!(!a.iter().any(|x| x == "-chardev"));
        // Forwards of both kinds share the one user netdev, --forward ones first.
        o.forwards = vec!["8080:80".parse().unwrap()];
        o.hostfwds.push("udp:5514-:514".parse().unwrap());
        o.control = Some("/tmp/rampart.sock".into());
        let a = qemu_args(&o, Accel::Tcg, "console=ttyS0");
        assert!(has_pair(
            &a,
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:19100-:9100,hostfwd=udp:127.0.0.1:5514-:514"
        ));
        assert_eq!(a.iter().filter(|x| *x == "-netdev").count(), 1);
        assert!(has_pair(&a, "-device", "virtio-serial-pci"));
        assert!(has_pair(
            &a,
            "-chardev",
            "socket,id=rampartctl,path=/tmp/rampart.sock,server=on,wait=off"
        ));
        assert!(has_pair(
            &a,
            "-device",
            "virtserialport,chardev=rampartctl,name=org.rampart.control"
        ));
        // The control channel alone needs no network.
        let mut o = opts();
        o.control = Some("/run/c.sock".into());
        let a = qemu_args(&o, Accel::Tcg, "console=ttyS0");
        assert!(!a.iter().any(|x| x == "-netdev"));
        assert!(has_pair(&a, "-device", "virtio-serial-pci"));
        // The serial port follows the controller.
        let pos = |s: &str| a.iter().position(|x| x.starts_with(s)).unwrap();
        assert!(pos("virtio-serial-pci") < pos("virtserialport"));
    }

    #[test]
    fn parse_forward_and_accel() {
        assert_eq!(
            "1:2".parse::<Forward>().unwrap(),
            Forward { host: 1, guest: 2 }
        );
        for bad in ["", "1", "a:2", "1:2:3", "70000:1"] {
            assert!(bad.parse::<Forward>().is_err(), "{bad}");
        }
        assert_eq!("auto".parse::<Accel>().unwrap(), Accel::Auto);
        assert_eq!("kvm".parse::<Accel>().unwrap(), Accel::Kvm);
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        assert!("hvf".parse::<Accel>().is_err());
    }

    #[test]
    fn scan_table() {
        let cases = [
            (
                "[    2.1] reboot: Power down\r\n",
                Some(ConsoleEvent::PowerDown),
            ),
            (
                "[    2.1] reboot: Restarting system",
                Some(ConsoleEvent::Restart),
            ),
            (
                "[    2.1] reboot: System halted",
                Some(ConsoleEvent::Halted),
            ),
            (
                "[    1.0] Kernel panic - not syncing: Attempted to kill init!",
                Some(ConsoleEvent::Panic),
            ),
            (
                "[    1.0] ---[ end Kernel panic - not syncing: Attempted to kill init! ]---",
                Some(ConsoleEvent::PanicEnd),
            ),
            ("rampart-init: services started at 2.345s", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(scan_line(line), want, "{line}");
        }
    }

    #[test]
    fn classify_table() {
        use ConsoleEvent as E;
        let cases: &[(&[E], Ending, Outcome, i32)] = &[
            (
                &[E::PowerDown],
                Ending::Exited(Some(0)),
                Outcome::PoweredOff,
                0,
            ),
            (&[E::Restart], Ending::Exited(Some(0)), Outcome::Rebooted, 2),
            (&[], Ending::Exited(Some(0)), Outcome::Rebooted, 2),
            (&[E::Panic], Ending::Killed, Outcome::Panic, 3),
            (
                &[E::Panic, E::PanicEnd],
                Ending::Exited(Some(0)),
                Outcome::Panic,
                3,
            ),
            (&[E::Panic], Ending::Timeout, Outcome::Panic, 3),
            (&[], Ending::Timeout, Outcome::Timeout, 4),
            (&[E::PowerDown], Ending::Timeout, Outcome::Timeout, 4),
            (&[], Ending::SpawnFailed, Outcome::QemuFailed, 5),
            (
                &[E::PowerDown],
                Ending::Exited(Some(1)),
                Outcome::QemuFailed,
                5,
            ),
            (&[], Ending::Exited(None), Outcome::QemuFailed, 5),
            (&[E::Halted], Ending::Killed, Outcome::Halted, 6),
        ];
        for (events, ending, want, code) in cases {
            let got = classify(events, *ending);
            assert_eq!(got, *want, "{events:?} {ending:?}");
            assert_eq!(got.exit_code(), *code);
        }
    }

    #[test]
    fn cpu_virt_flags() {
        assert!(cpu_has_virt("processor\t: 0\nflags\t\t: fpu vme vmx sse\n"));
        assert!(cpu_has_virt("flags\t\t: fpu svm\n"));
        assert!(!cpu_has_virt("flags\t\t: fpu hypervisor svm_lock\n"));
        assert!(!cpu_has_virt(""));
        assert!(kvm_gate(Path::new("/nonexistent/kvm"), "flags: vmx").is_err());
    }

    #[test]
    fn kvm_probe_fails_fast_on_a_missing_kernel() {
        let started = Instant::now();
        assert!(!kvm_probe(Path::new("/nonexistent/kernel")));
        assert!(
            started.elapsed() < KVM_PROBE_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn run_classifies_a_fake_qemu() {
        let out = run(
            "sh",
            &[
                "-c".into(),
                "echo booting; echo '[ 1.0] reboot: Power down'".into(),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(out, Outcome::PoweredOff);
        let out = run(
            "sh",
            &[
                "-c".into(),
                "echo 'Kernel panic - not syncing: x'; exec sleep 30".into(),
            ],
            Duration::from_secs(20),
        );
        assert_eq!(out, Outcome::Panic);
        let out = run(
            "sh",
            &["-c".into(), "exec sleep 30".into()],
            Duration::from_millis(300),
        );
        assert_eq!(out, Outcome::Timeout);
        let out = run(
            "sh",
            &["-c".into(), "exit 1".into()],
            Duration::from_secs(10),
        );
        assert_eq!(out, Outcome::QemuFailed);
        let out = run("/nonexistent/qemu", &[], Duration::from_secs(1));
        assert_eq!(out, Outcome::QemuFailed);
    }
}
