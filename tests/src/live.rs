//! A guest that keeps running while the test talks to it: `rampart-image boot` in the
//! background with extra arguments (a control channel, port forwards), its console streamed
//! to a file and watched for markers, then waited for like [`crate::harness::boot`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::harness::{Boot, Env, HarnessError, Output, BOOT_LOCK};

/// A running guest.
pub struct LiveBoot {
    child: Child,
    console: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
    log: PathBuf,
    _guard: MutexGuard<'static, ()>,
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> HarnessError + 'a {
    move |source| HarnessError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl LiveBoot {
    /// Starts `rampart-image boot IMAGE --memory M --cpus 2 --accel A --timeout T EXTRA...`;
    /// the console goes to `<out_dir>/<name>.console.log` as it arrives.
    pub fn start(
        env: &Env,
        image: &Path,
        name: &str,
        memory_mib: u32,
        timeout: u64,
        extra: &[String],
    ) -> Result<Self, HarnessError> {
        let guard = BOOT_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let accel = std::env::var("RAMPART_TEST_ACCEL").unwrap_or_else(|_| "auto".to_owned());
        eprintln!("harness: booting {name} live ({})", image.display());
        let log = env.out_dir.join(format!("{name}.console.log"));
        let mut cmd = Command::new(env.rampart_image());
        cmd.arg("boot")
            .arg(image)
            .args(["--memory", &memory_mib.to_string()])
            .args(["--cpus", "2", "--accel", &accel])
            .args(["--timeout", &timeout.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so dropping a failed test's guest kills QEMU with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let program = format!("{cmd:?}");
        let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            program: program.clone(),
            source,
        })?;
        let console = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut file = std::fs::File::create(&log).map_err(io("create", &log))?;
        let mut readers = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let sink = Arc::clone(&console);
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = file.write_all(&buf[..n]);
                    let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                    sink.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push_str(&text);
                }
            }));
        }
        if let Some(mut err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            readers.push(std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_str(&text);
            }));
        }
        Ok(Self {
            child,
            console,
            stderr,
            readers,
            started: Instant::now(),
            log,
            _guard: guard,
        })
    }

    /// The console so far (without `\r`).
    pub fn console(&self) -> String {
        self.console
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until the console contains `needle`; an error (with the console's tail) if the
    /// guest ends or `limit` passes first.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if self.console().contains(needle) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader catch up with the last output.
                std::thread::sleep(Duration::from_millis(200));
                if self.console().contains(needle) {
                    return Ok(());
                }
                return Err(format!(
                    "guest ended ({status}) before `{needle}`:\n{}",
                    tail(&self.console(), 60)
                ));
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "no `{needle}` after {limit:?}:\n{}",
                    tail(&self.console(), 60)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the guest to end (killing QEMU after `limit`) and returns it as a [`Boot`].
    pub fn finish(mut self, limit: Duration) -> Result<Boot, HarnessError> {
        let start = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() > limit => {
                    eprintln!("harness: live guest ran over {limit:?}, killing it");
                    let _ = self.child.kill();
                    break self.child.wait().map_err(|source| HarnessError::Spawn {
                        program: "rampart-image boot".to_owned(),
                        source,
                    })?;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(source) => {
                    return Err(HarnessError::Spawn {
                        program: "rampart-image boot".to_owned(),
                        source,
                    })
                }
            }
        };
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        let output = Output {
            status,
            stdout: self.console(),
            stderr: self
                .stderr
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            elapsed: self.started.elapsed(),
        };
        eprintln!(
            "harness: live guest finished in {:.1}s with {} (console: {})",
            output.elapsed.as_secs_f64(),
            output.status,
            self.log.display()
        );
        Ok(Boot {
            output,
            log: self.log.clone(),
        })
    }
}

impl Drop for LiveBoot {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: signals the process group this test created for the guest.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
