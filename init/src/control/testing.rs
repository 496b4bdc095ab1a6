//! Test fixtures shared by the control server's tests and the CLI's live tests: a stand-in
//! supervisor ([`Fake`]), the server's poll loop in a thread ([`serve`]), a cgroup directory
//! with figures ([`write_cgroup`]), an empty [`ServiceStatus`] ([`service_status`]) and the
//! request side of a fake server ([`read_request`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use rampart_config::Action;

use super::proto::{decode_request, FrameReader, Request, ServiceStatus, MAX_REQUEST};
use super::server::{Server, Services};
use crate::supervisor::{OpError, ServiceSnapshot};

/// A supervisor stand-in: services with a state, ops that move them (`stop` needs a running
/// service, `start` one that is not).
#[derive(Debug)]
pub(crate) struct Fake {
    /// Each service's name and state.
    pub services: Vec<(String, &'static str)>,
    /// What `shutting_down` answers.
    pub shutting_down: bool,
    /// Every service's cgroup directory.
    pub cgroup: PathBuf,
    /// The pid of a running service.
    pub pid: i32,
    /// The uptime of a running service.
    pub uptime_ms: u64,
    /// What `orphans_reaped` answers.
    pub orphans: u64,
}

impl Fake {
    /// These services, all running (pid 42, up 1 s, 7 orphans reaped).
    pub fn with(names: &[&str]) -> Self {
        Fake {
            services: names.iter().map(|n| (n.to_string(), "running")).collect(),
            shutting_down: false,
            cgroup: PathBuf::new(),
            pid: 42,
            uptime_ms: 1000,
            orphans: 7,
        }
    }

    fn find(&mut self, name: &str) -> Result<&mut (String, &'static str), OpError> {
        self.services
            .iter_mut()
            .find(|(n, _)| n == name)
            .ok_or_else(|| OpError::UnknownService {
                service: name.to_owned(),
            })
    }
}

impl Services for Fake {
    fn snapshot(&self, _now: Instant) -> Vec<ServiceSnapshot> {
        self.services
            .iter()
            .map(|(name, state)| ServiceSnapshot {
                name: name.clone(),
                state,
                pid: (*state == "running").then_some(self.pid),
                uptime_ms: (*state == "running").then_some(self.uptime_ms),
                restarts: 0,
                last_exit: None,
                ready: None,
                cgroup: self.cgroup.clone(),
            })
            .collect()
    }
    fn orphans_reaped(&self) -> u64 {
        self.orphans
    }
    fn shutting_down(&self) -> bool {
        self.shutting_down
    }
    fn stop(&mut self, name: &str) -> Result<String, OpError> {
        let s = self.find(name)?;
        if s.1 != "running" {
            return Err(OpError::InvalidState {
                op: "stop",
                service: name.to_owned(),
                state: s.1,
            });
        }
        s.1 = "stopped";
        Ok(format!("stopping {name}"))
    }
    fn start(&mut self, name: &str) -> Result<String, OpError> {
        let s = self.find(name)?;
        if s.1 == "running" {
            return Err(OpError::InvalidState {
                op: "start",
                service: name.to_owned(),
                state: s.1,
            });
        }
        s.1 = "running";
        Ok(format!("started {name}"))
    }
    fn restart(&mut self, name: &str) -> Result<String, OpError> {
        let s = self.find(name)?;
        s.1 = "running";
        Ok(format!("restarting {name}"))
    }
}

/// Runs the server's poll loop (as PID 1's event loop drives it) in a thread until `stop` is
/// set; the thread returns the actions the server asked for and the fake.
pub(crate) fn serve(
    mut server: Server,
    mut fake: Fake,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(Vec<Action>, Fake)> {
    std::thread::spawn(move || {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        epoll
            .add(server.poll_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .unwrap();
        let mut actions = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let mut events = [EpollEvent::empty(); 1];
            if epoll.wait(&mut events, 20u16).unwrap() > 0 {
                actions.extend(server.on_poll(&mut fake));
            }
            server.pump();
        }
        (actions, fake)
    })
}

/// Creates the cgroup directory `dir` with `memory.current`, `pids.current` and, when given,
/// a `cpu.stat` with `usage_usec`.
pub(crate) fn write_cgroup(dir: &Path, memory: u64, pids: u64, cpu_usec: Option<u64>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("memory.current"), format!("{memory}\n")).unwrap();
    std::fs::write(dir.join("pids.current"), format!("{pids}\n")).unwrap();
    if let Some(usec) = cpu_usec {
        std::fs::write(dir.join("cpu.stat"), format!("usage_usec {usec}\n")).unwrap();
    }
}

/// A service's status with this name and state and no figures.
pub(crate) fn service_status(name: &str, state: &str) -> ServiceStatus {
    ServiceStatus {
        name: name.into(),
        state: state.into(),
        pid: None,
        uptime_ms: None,
        restarts: 0,
        last_exit: None,
        ready: None,
        memory_bytes: None,
        pids: None,
        cpu_usec: None,
    }
}

/// Reads one request from a client's connection; `None` if the client closes before a whole
/// request.
pub(crate) fn read_request(conn: &mut impl Read) -> Option<Request> {
    let mut reader = FrameReader::new(MAX_REQUEST);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(body) = reader.next_frame().unwrap() {
            return Some(decode_request(&body).unwrap());
        }
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            return None;
        }
        reader.push(&buf[..n]);
    }
}
