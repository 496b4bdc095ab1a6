//! Host side of the network end-to-end tests: a test host with NIC drivers and extra TOML,
//! a boot with TCP port forwards that the test talks to while the guest runs, and checks on
//! the boot log's order.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{Env, HarnessError};

/// The NIC drivers of QEMU's `virtio-net-pci` on Debian's modular kernel.
pub const NIC_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// Adds `modules` to `[kernel] modules` of a host TOML text and appends `extra` TOML.
pub fn with_network(text: &str, modules: &[&str], extra: &str) -> Result<String, String> {
    let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let kernel = doc
        .entry("kernel")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let list = kernel
        .as_table_mut()
        .ok_or("[kernel] is not a table")?
        .entry("modules")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let arr = list.as_array_mut().ok_or("modules is not a list")?;
    for m in modules {
        arr.push(toml::Value::String((*m).to_owned()));
    }
    Ok(format!("{doc}\n{extra}\n"))
}

/// A guest booted with port forwards; lines of its console arrive on `lines`.
pub struct RunningGuest {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Every console line seen so far.
    pub console: Vec<String>,
}

impl RunningGuest {
    /// `rampart-image boot IMAGE --forward H:G...` in the background.
    pub fn start(
        env: &Env,
        image: &Path,
        forwards: &[(u16, u16)],
        timeout: u64,
    ) -> Result<Self, HarnessError> {
        let accel = std::env::var("RAMPART_TEST_ACCEL").unwrap_or_else(|_| "auto".to_owned());
        let mut cmd = Command::new(env.rampart_image());
        cmd.arg("boot")
            .arg(image)
            .args(["--memory", "1024", "--cpus", "2", "--accel", &accel])
            .args(["--timeout", &timeout.to_string()]);
        for (h, g) in forwards {
            cmd.args(["--forward", &format!("{h}:{g}")]);
        }
        let program = env.rampart_image().display().to_string();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| HarnessError::Spawn { program, source })?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line.replace('\r', ""));
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(format!("[stderr] {line}"));
                }
            });
        }
        Ok(RunningGuest {
            child,
            lines: rx,
            console: Vec::new(),
        })
    }

    /// Waits up to `limit` for a console line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> Option<String> {
        if let Some(l) = self.console.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.console.push(line.clone());
                    if hit {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the guest to end (killing it after `limit`) and collects the rest of the
    /// console.
    pub fn finish(mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            while let Ok(l) = self.lines.try_recv() {
                self.console.push(l);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(200));
        while let Ok(l) = self.lines.try_recv() {
            self.console.push(l);
        }
        self.console
    }
}

/// Connects to `127.0.0.1:port` and reads what the guest sends within `limit`: `Ok(text)`
/// (possibly empty when the connection was closed without data), or the error.
pub fn fetch(port: u16, limit: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), limit)
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let mut buf = String::new();
    match s.read_to_string(&mut buf) {
        Ok(_) => Ok(buf),
        Err(e) if buf.is_empty() => Err(format!("read: {e}")),
        Err(_) => Ok(buf),
    }
}

/// The index of the first line containing `needle`.
pub fn position(lines: &[String], needle: &str) -> Option<usize> {
    lines.iter().position(|l| l.contains(needle))
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_sections_are_added() {
        let text = with_network(
            "[kernel]\nmodules = [\"overlay\"]\n",
            NIC_MODULES,
            "[network]\ndns = [\"10.0.2.3\"]",
        )
        .unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let mods = doc["kernel"]["modules"].as_array().unwrap();
        assert_eq!(mods.len(), 3);
        assert_eq!(doc["network"]["dns"][0].as_str(), Some("10.0.2.3"));
        assert_eq!(position(&["a".into(), "xb".into()], "b"), Some(1));
    }
}
