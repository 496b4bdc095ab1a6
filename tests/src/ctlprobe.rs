//! In-guest probes of PID 1's control socket, run by `rampart-probe control-*` from a test
//! service: a flood of malformed, oversized and abandoned connections followed by a `status`
//! that must still be answered, and a non-root peer that must be refused.
//!
//! Each prints one line `CTL-PROBE {json}` for the host side of the test to read.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rampart_init::control::client::{self, Client};
use rampart_init::control::proto::{self, ErrorCode, Reply, Request, MAX_REQUEST};
use serde_json::json;

/// The line prefix.
pub const PREFIX: &str = "CTL-PROBE ";

/// How the flood's connection number `i` misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// An HTTP request: its first four bytes announce a 1.2 GB frame.
    Http,
    /// A length prefix of 1 GiB.
    HugeLength,
    /// A well-framed body that is not JSON.
    Garbage,
    /// A well-framed request of protocol version 99.
    WrongVersion,
    /// A real body one byte over the limit.
    Oversized,
    /// An unknown op.
    UnknownOp,
    /// Connects and closes at once.
    Abandon,
    /// Half a length prefix, then closes.
    Truncated,
}

/// Every abuse, in the order the flood cycles through them.
pub const ABUSES: [Abuse; 8] = [
    Abuse::Http,
    Abuse::HugeLength,
    Abuse::Garbage,
    Abuse::WrongVersion,
    Abuse::Oversized,
    Abuse::UnknownOp,
    Abuse::Abandon,
    Abuse::Truncated,
];

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(body.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(body);
    v
}

/// The bytes a connection of this abuse sends.
pub fn payload(abuse: Abuse) -> Vec<u8> {
    match abuse {
        Abuse::Http => b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        Abuse::HugeLength => (1u32 << 30).to_be_bytes().to_vec(),
        Abuse::Garbage => framed(b"\x00\xffnot json at all{{{"),
        Abuse::WrongVersion => framed(br#"{"version":99,"request":{"op":"status"}}"#),
        Abuse::Oversized => framed(&vec![b'x'; MAX_REQUEST + 1]),
        Abuse::UnknownOp => framed(br#"{"version":1,"request":{"op":"format-disk"}}"#),
        Abuse::Abandon => Vec::new(),
        Abuse::Truncated => vec![0, 0],
    }
}

/// Sends `count` abusive connections in a row, then asks for `status`; prints one line and
/// returns 0 when PID 1 still answered.
pub fn flood(socket: &Path, count: u32) -> i32 {
    let start = Instant::now();
    let mut replied_error = 0u32;
    let mut closed_silently = 0u32;
    let mut connect_failed = 0u32;
    for i in 0..count {
        let abuse = ABUSES[i as usize % ABUSES.len()];
        let mut s = match UnixStream::connect(socket) {
            Ok(s) => s,
            Err(_) => {
                connect_failed += 1;
                continue;
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(&payload(abuse));
        if matches!(abuse, Abuse::Abandon | Abuse::Truncated) {
            continue;
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let error_frame =
            got.len() > 4 && matches!(proto::decode_reply(&got[4..]), Ok(Reply::Error { .. }));
        if error_frame {
            replied_error += 1;
        } else {
            closed_silently += 1;
        }
    }
    let flood_secs = start.elapsed().as_secs_f64();
    let status = client::call(socket, &Request::Status {}, Some(Duration::from_secs(10)));
    let (status_ok, services) = match &status {
        Ok(Reply::Status(s)) => (true, s.services.len()),
        _ => (false, 0),
    };
    let line = json!({
        "flood": {
            "sent": count,
            "replied_error": replied_error,
            "closed_silently": closed_silently,
            "connect_failed": connect_failed,
            "seconds": flood_secs,
            "status_ok": status_ok,
            "services": services,
            "status_error": status.err().map(|e| e.to_string()),
        }
    });
    println!("{PREFIX}{line}");
    i32::from(!status_ok)
}

/// Connects as uid/gid 65534 twice: once plainly (the socket's mode 0600 refuses it) and once
/// keeping `CAP_DAC_OVERRIDE` past the file mode (PID 1's `SO_PEERCRED` check must refuse it).
pub fn nobody(socket: &Path) -> i32 {
    let plain = in_child_as_nobody(socket, false);
    let with_dac = in_child_as_nobody(socket, true);
    let line = json!({ "nobody": { "plain": plain, "dac_override": with_dac } });
    println!("{PREFIX}{line}");
    let ok = plain.starts_with("connect refused") && with_dac == "denied by server";
    i32::from(!ok)
}

/// Runs the connection attempt in a forked child (so this process keeps root) and returns
/// what happened, passed back through a pipe.
fn in_child_as_nobody(socket: &Path, keep_dac: bool) -> String {
    let (mut rx, tx) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return format!("pipe: {e}"),
    };
    // SAFETY: the child only calls async-signal-safe-enough syscalls and this probe is single
    // threaded at this point; it ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return "fork failed".to_owned();
    }
    if pid == 0 {
        drop(rx);
        let mut tx = tx;
        let result = become_nobody(keep_dac).map_or_else(|e| e, |()| attempt(socket));
        let _ = tx.write_all(result.as_bytes());
        drop(tx);
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(tx);
    let mut out = String::new();
    let _ = rx.read_to_string(&mut out);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    out
}

const CAP_DAC_OVERRIDE: u32 = 1;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn become_nobody(keep_dac: bool) -> Result<(), String> {
    // SAFETY: plain prctl/setgroups/setresgid/setresuid calls on this process.
    unsafe {
        if keep_dac && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err("prctl keepcaps failed".into());
        }
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(65534, 65534, 65534) != 0
            || libc::setresuid(65534, 65534, 65534) != 0
        {
            return Err("dropping to 65534 failed".into());
        }
    }
    if keep_dac {
        let mut header = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let bit = 1u32 << CAP_DAC_OVERRIDE;
        let mut data = [CapData {
            effective: bit,
            permitted: bit,
            inheritable: 0,
        }; 2];
        data[1] = CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        };
        // SAFETY: capset with a v3 header and two data structs, as the kernel expects.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_mut_ptr()) };
        if rc != 0 {
            return Err(format!(
                "capset failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn attempt(socket: &Path) -> String {
    match Client::connect(socket, Some(Duration::from_secs(5))) {
        Err(e) => format!("connect refused: {e}"),
        Ok(mut c) => match c.call(&Request::Status {}) {
            Ok(Reply::Error {
                code: ErrorCode::Denied,
                ..
            }) => "denied by server".to_owned(),
            Ok(other) => format!("answered: {other:?}"),
            Err(e) => format!("closed: {e}"),
        },
    }
}

/// PID 1's resident set (`VmRSS`, `VmHWM`, KiB) and CPU time (utime + stime, clock ticks).
fn pid1_figures() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/1/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string("/proc/1/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("VmHWM:"), num(11) + num(12))
}

/// Asks for `status` `count` times over fresh connections and prints PID 1's memory and CPU
/// before and after: `CTL-PROBE {"bench":{..}}`.
pub fn bench(socket: &Path, count: u32) -> i32 {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let (rss0, hwm0, cpu0) = pid1_figures();
    let start = Instant::now();
    let mut failures = 0u32;
    for _ in 0..count {
        if !matches!(
            client::call(socket, &Request::Status {}, Some(Duration::from_secs(10))),
            Ok(Reply::Status(_))
        ) {
            failures += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (rss1, hwm1, cpu1) = pid1_figures();
    let line = json!({
        "bench": {
            "requests": count,
            "failures": failures,
            "seconds": secs,
            "per_request_ms": secs * 1000.0 / f64::from(count.max(1)),
            "pid1_rss_kib_before": rss0,
            "pid1_rss_kib_after": rss1,
            "pid1_hwm_kib_before": hwm0,
            "pid1_hwm_kib_after": hwm1,
            "pid1_cpu_ms": (cpu1.saturating_sub(cpu0)) * 1000 / hz.max(1),
        }
    });
    println!("{PREFIX}{line}");
    i32::from(failures > 0)
}

/// `control-flood SOCKET N`, `control-nobody SOCKET` or `control-bench SOCKET N`; `None` for
/// another mode.
pub fn main(args: &[&str]) -> Option<i32> {
    match args {
        ["control-flood", socket, n] => Some(match n.parse() {
            Ok(n) => flood(Path::new(socket), n),
            Err(_) => 2,
        }),
        ["control-nobody", socket] => Some(nobody(Path::new(socket))),
        ["control-bench", socket, n] => Some(match n.parse() {
            Ok(n) => bench(Path::new(socket), n),
            Err(_) => 2,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payload_is_refused_by_the_decoder() {
        for abuse in ABUSES {
            let bytes = payload(abuse);
            let mut r = proto::FrameReader::new(MAX_REQUEST);
            r.push(&bytes);
            match r.next_frame() {
                Err(_) => {}
                Ok(None) => assert!(matches!(abuse, Abuse::Abandon | Abuse::Truncated)),
                Ok(Some(body)) => assert!(proto::decode_request(&body).is_err(), "{abuse:?}"),
            }
        }
    }
}
