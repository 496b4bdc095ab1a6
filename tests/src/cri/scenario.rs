//! The tier-1 scenario that `rampart-cri tier1` runs inside a guest, against containerd's CRI
//! plugin, printing one `CRI-TEST KEY=VALUE` line per result for `tests/tests/cri.rs`:
//!
//! 1. `Version` on CRI v1 and v1alpha2; the pause image (imported at boot) and the test image
//!    are there (`ImageStatus`, waiting for the pause image's import);
//! 2. a host-network pod in a namespace that allows it and a pod on the CNI network, each
//!    running the probe (`rampart-probe status`) through `RunPodSandbox`, `CreateContainer`,
//!    `StartContainer`, `ContainerStatus` until it exits, then its log file under the pod's
//!    log folder: its `/proc/self/status` fields (`Seccomp`, `NoNewPrivs`); the pod's IP and
//!    whether its pause process shares the host's network namespace; `ListContainers`;
//! 3. refusals: a host-network pod in a namespace without `allow_host_network`, a privileged
//!    pod, a pod mounting `/`: at which call each failed and the runtime's message;
//! 4. `StopPodSandbox` and `RemovePodSandbox` of every pod made, and `ListContainers` after.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::api::{
    container_state_name, ContainerSpec, Cri, CriError, Pod, Version, RUNTIME_V1, RUNTIME_V1ALPHA2,
};

/// The prefix of every result line.
pub const LINE_PREFIX: &str = "CRI-TEST ";
/// Where containerd's socket is.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The kubelet's folder of pod logs, used the same way here.
pub const POD_LOG_ROOT: &str = "/var/log/pods";
/// The probe's path in the test image.
pub const PROBE: &str = "/rampart-probe";

/// The scenario's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// containerd's socket.
    pub socket: PathBuf,
    /// The image with the probe, already in the `k8s.io` namespace.
    pub image: String,
    /// The pause image to wait for.
    pub pause_image: String,
    /// The pod subnet the CNI pod's address must be in.
    pub pod_subnet: String,
    /// A Kubernetes namespace whose table has `allow_host_network = true`.
    pub host_network_namespace: String,
    /// A namespace with no table.
    pub plain_namespace: String,
    /// How long to wait for an image, a container or a log.
    pub wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            image: "rampart.test/probe:latest".to_owned(),
            pause_image: rampart_config::cri::PAUSE_IMAGE.to_owned(),
            pod_subnet: "10.88.0.0/16".to_owned(),
            host_network_namespace: "infra".to_owned(),
            plain_namespace: "default".to_owned(),
            wait: Duration::from_secs(120),
        }
    }
}

impl Options {
    /// Parses `--socket PATH --image REF --pause-image REF --pod-subnet CIDR
    /// --host-network-namespace NS --namespace NS --wait SECS` (each optional).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self::default();
        for (flag, value) in crate::guest::flag_pairs(args)? {
            o.set(flag, value)?;
        }
        Ok(o)
    }

    /// Sets the option `flag` to `value`.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        let v = value.to_owned();
        match flag {
            "--socket" => self.socket = PathBuf::from(v),
            "--image" => self.image = v,
            "--pause-image" => self.pause_image = v,
            "--pod-subnet" => self.pod_subnet = v,
            "--host-network-namespace" => self.host_network_namespace = v,
            "--namespace" => self.plain_namespace = v,
            "--wait" => self.wait = crate::guest::seconds(flag, value)?,
            other => return Err(format!("unknown option {other}")),
        }
        Ok(())
    }
}

/// One result line: `CRI-TEST KEY=VALUE`, the value on one line.
pub fn line(key: &str, value: &str) -> String {
    crate::guest::result_line(LINE_PREFIX, key, value)
}

/// Prints one result line.
pub fn say(key: &str, value: impl AsRef<str>) {
    crate::guest::say(LINE_PREFIX, key, value.as_ref());
}

/// The messages of a CRI log file (`TIMESTAMP STREAM TAG MESSAGE` lines; `P` parts joined
/// until their `F` line), with their stream.
pub fn log_messages(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut partial = String::new();
    for l in text.lines() {
        let mut parts = l.splitn(4, ' ');
        let (Some(_ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        partial.push_str(parts.next().unwrap_or(""));
        if tag != "P" {
            out.push((stream.to_owned(), std::mem::take(&mut partial)));
        }
    }
    out
}

/// The object of the probe's `RAMPART-PROBE {"status": {...}}` line among `messages`.
pub fn probe_status(messages: &[(String, String)]) -> Option<serde_json::Value> {
    messages.iter().find_map(|(_, m)| {
        let json = m.split_once("RAMPART-PROBE ")?.1;
        let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
        v.get("status").cloned()
    })
}

/// Whether `ip` is an IPv4 address inside `subnet` (`a.b.c.d/len`).
pub fn in_subnet(ip: &str, subnet: &str) -> bool {
    let Some((net, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(net), Ok(len)) = (
        ip.parse::<Ipv4Addr>(),
        net.parse::<Ipv4Addr>(),
        len.parse::<u32>(),
    ) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// CRI v1 `Version`, asked every 500 ms until the runtime answers or `wait` has passed (the
/// last error then).
pub fn wait_for_runtime(cri: &Cri, wait: Duration) -> Result<Version, CriError> {
    let deadline = Instant::now() + wait;
    loop {
        match cri.version(RUNTIME_V1) {
            Ok(v) => return Ok(v),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => return Err(e),
        }
    }
}

/// `ImageStatus` of `image`, asked every 500 ms until the runtime has it (its id) or `wait`
/// has passed.
pub fn wait_for_image(cri: &Cri, image: &str, wait: Duration) -> Result<String, String> {
    let deadline = Instant::now() + wait;
    loop {
        match cri.image_status(image) {
            Ok(Some(id)) => return Ok(id),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(None) => return Err(format!("{image} was never imported")),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// At which call an attempt to run a container stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// `RunPodSandbox` failed.
    Run(String),
    /// `CreateContainer` failed.
    Create(String),
    /// `StartContainer` failed.
    Start(String),
    /// Everything succeeded.
    Started,
}

impl Stage {
    /// `run`, `create`, `start` or `started`.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Run(_) => "run",
            Stage::Create(_) => "create",
            Stage::Start(_) => "start",
            Stage::Started => "started",
        }
    }

    /// The runtime's message, when a call failed.
    pub fn message(&self) -> &str {
        match self {
            Stage::Run(m) | Stage::Create(m) | Stage::Start(m) => m,
            Stage::Started => "",
        }
    }
}

fn message(e: &CriError) -> String {
    e.runtime_message()
        .map_or_else(|| e.to_string(), str::to_owned)
}

/// The scenario against one runtime.
struct Run<'a> {
    o: &'a Options,
    cri: Cri,
    /// (label, sandbox id) of every sandbox made, for the cleanup.
    sandboxes: Vec<(String, String)>,
    failures: u32,
}

impl Run<'_> {
    fn fail(&mut self, key: &str, what: impl AsRef<str>) {
        self.failures += 1;
        say(key, format!("error: {}", what.as_ref()));
    }

    fn pod(&self, label: &str, namespace: &str, host_network: bool, privileged: bool) -> Pod {
        let uid = format!("rampart-cri-{label}");
        Pod {
            name: label.to_owned(),
            namespace: namespace.to_owned(),
            uid: uid.clone(),
            host_network,
            privileged,
            log_directory: format!("{POD_LOG_ROOT}/{namespace}_{label}_{uid}"),
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            runtime_handler: String::new(),
        }
    }

    fn probe(&self, args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: "probe".to_owned(),
            image: self.o.image.clone(),
            command: vec![PROBE.to_owned()],
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            log_path: "probe/0.log".to_owned(),
            privileged: false,
            mounts: Vec::new(),
        }
    }

    /// RunPodSandbox, CreateContainer, StartContainer: how far it got, and the ids made.
    fn attempt(&mut self, label: &str, pod: &Pod, c: &ContainerSpec) -> (Stage, Option<String>) {
        let _ = std::fs::create_dir_all(&pod.log_directory);
        let t = Instant::now();
        let sandbox = match self.cri.run_pod_sandbox(pod) {
            Ok(id) => id,
            Err(e) => return (Stage::Run(message(&e)), None),
        };
        say(
            &format!("{label}_run_ms"),
            t.elapsed().as_millis().to_string(),
        );
        self.sandboxes.push((label.to_owned(), sandbox.clone()));
        let id = match self.cri.create_container(&sandbox, c, pod) {
            Ok(id) => id,
            Err(e) => return (Stage::Create(message(&e)), None),
        };
        match self.cri.start_container(&id) {
            Ok(()) => (Stage::Started, Some(id)),
            Err(e) => (Stage::Start(message(&e)), Some(id)),
        }
    }

    fn wait_exit(&mut self, label: &str, id: &str) -> bool {
        let deadline = Instant::now() + self.o.wait;
        loop {
            match self.cri.container_status(id) {
                Ok(s) if s.state == 2 => {
                    say(&format!("{label}_exit"), s.exit_code.to_string());
                    say(&format!("{label}_log_path"), &s.log_path);
                    return true;
                }
                Ok(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Ok(s) => {
                    let state = container_state_name(s.state);
                    self.fail(&format!("{label}_exit"), format!("still {state}"));
                    return false;
                }
                Err(e) => {
                    self.fail(&format!("{label}_exit"), e.to_string());
                    return false;
                }
            }
        }
    }

    fn read_probe(&mut self, label: &str, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(status) = probe_status(&log_messages(&text)) {
                say(&format!("{label}_status"), status.to_string());
                return;
            }
            if Instant::now() >= deadline {
                let what = format!("no probe line in {}: {text:?}", log.display());
                self.fail(&format!("{label}_status"), what);
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn netns(path: &str) -> String {
        std::fs::read_link(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("unreadable ({e})"))
    }

    /// A pod running the probe's `status` to its end, with its sandbox's network facts.
    fn pod_with_probe(&mut self, label: &str, pod: &Pod) {
        let c = self.probe(&["status"]);
        let (stage, id) = self.attempt(label, pod, &c);
        say(&format!("{label}_stage"), stage.name());
        if stage != Stage::Started {
            self.fail(&format!("{label}_error"), stage.message());
            return;
        }
        if let Some((_, sandbox)) = self.sandboxes.last().cloned() {
            match self.cri.pod_sandbox_status(&sandbox) {
                Ok(s) => {
                    say(&format!("{label}_ip"), &s.ip);
                    say(
                        &format!("{label}_ip_in_subnet"),
                        in_subnet(&s.ip, &self.o.pod_subnet).to_string(),
                    );
                    say(&format!("{label}_network_mode"), s.network_mode.to_string());
                    let host = Self::netns("/proc/self/ns/net");
                    match s.pid {
                        Some(pid) => {
                            let ns = Self::netns(&format!("/proc/{pid}/ns/net"));
                            say(&format!("{label}_netns"), &ns);
                            say(&format!("{label}_host_netns"), (ns == host).to_string());
                        }
                        None => self.fail(&format!("{label}_netns"), "no pid in the status"),
                    }
                }
                Err(e) => self.fail(&format!("{label}_sandbox_status"), e.to_string()),
            }
            match self.cri.list_containers(Some(&sandbox)) {
                Ok(list) => {
                    let v: Vec<String> = list
                        .iter()
                        .map(|c| format!("{}:{}", c.name, container_state_name(c.state)))
                        .collect();
                    say(&format!("{label}_list"), v.join(","));
                }
                Err(e) => self.fail(&format!("{label}_list"), e.to_string()),
            }
        }
        let Some(id) = id else { return };
        if self.wait_exit(label, &id) {
            let log = Path::new(&pod.log_directory).join(&c.log_path);
            self.read_probe(label, &log);
        }
    }

    /// An attempt that the policy must refuse: the stage and message.
    fn refused(&mut self, label: &str, pod: &Pod, c: &ContainerSpec) {
        let t = Instant::now();
        let (stage, _) = self.attempt(label, pod, c);
        say(&format!("{label}_stage"), stage.name());
        say(&format!("{label}_error"), stage.message());
        say(&format!("{label}_ms"), t.elapsed().as_millis().to_string());
        if stage == Stage::Started {
            self.failures += 1;
        }
    }

    fn images(&mut self) {
        let t = Instant::now();
        match wait_for_image(&self.cri, &self.o.pause_image, self.o.wait) {
            Ok(id) => {
                say("pause_image", id);
                say("pause_wait_ms", t.elapsed().as_millis().to_string());
            }
            Err(e) => self.fail("pause_image", e),
        }
        match self.cri.image_status(&self.o.image) {
            Ok(Some(id)) => say("probe_image", id),
            Ok(None) => self.fail("probe_image", format!("{} is not there", self.o.image)),
            Err(e) => self.fail("probe_image", e.to_string()),
        }
    }

    fn version(&mut self) -> bool {
        match wait_for_runtime(&self.cri, self.o.wait) {
            Ok(v) => {
                say("version_runtime", &v.runtime_name);
                say("version_runtime_version", &v.runtime_version);
                say("version_api", &v.runtime_api_version);
            }
            Err(e) => {
                self.fail("version_runtime", e.to_string());
                return false;
            }
        }
        match self.cri.version(RUNTIME_V1ALPHA2) {
            Ok(v) => say("version_v1alpha2", &v.runtime_api_version),
            Err(e) => say("version_v1alpha2", format!("error: {e}")),
        }
        true
    }

    fn cleanup(&mut self) {
        for (label, id) in std::mem::take(&mut self.sandboxes) {
            let t = Instant::now();
            match self.cri.stop_pod_sandbox(&id) {
                Ok(()) => say(&format!("{label}_stopped"), "ok"),
                Err(e) => self.fail(&format!("{label}_stopped"), e.to_string()),
            }
            match self.cri.remove_pod_sandbox(&id) {
                Ok(()) => say(&format!("{label}_removed"), "ok"),
                Err(e) => self.fail(&format!("{label}_removed"), e.to_string()),
            }
            say(
                &format!("{label}_cleanup_ms"),
                t.elapsed().as_millis().to_string(),
            );
        }
        match self.cri.list_containers(None) {
            Ok(list) => say("containers_after", list.len().to_string()),
            Err(e) => self.fail("containers_after", e.to_string()),
        }
    }
}

/// Runs the scenario; returns the number of steps that failed outright (refusals that came
/// are results, not failures).
pub fn run(o: &Options) -> u32 {
    let start = Instant::now();
    let mut r = Run {
        o,
        cri: Cri::new(&o.socket, o.wait),
        sandboxes: Vec::new(),
        failures: 0,
    };
    if !r.version() {
        say("done", "1");
        return r.failures;
    }
    r.images();
    let hostnet = r.pod("hostnet", &o.host_network_namespace, true, false);
    r.pod_with_probe("hostnet", &hostnet);
    let cni = r.pod("cni", &o.plain_namespace, false, false);
    r.pod_with_probe("cni", &cni);
    match r.cri.list_containers(None) {
        Ok(list) => {
            let v: Vec<String> = list
                .iter()
                .map(|c| format!("{}:{}", c.name, container_state_name(c.state)))
                .collect();
            say("list_all", v.join(","));
        }
        Err(e) => r.fail("list_all", e.to_string()),
    }
    // Refusals.
    let ns = &o.plain_namespace;
    let pod = r.pod("hostnet-refused", ns, true, false);
    let c = r.probe(&["status"]);
    r.refused("hostnet_refused", &pod, &c);
    let pod = r.pod("privileged", ns, false, true);
    let mut c = r.probe(&["status"]);
    c.privileged = true;
    r.refused("privileged", &pod, &c);
    let pod = r.pod("rootmount", ns, false, false);
    let mut c = r.probe(&["status"]);
    c.mounts = vec![("/host".to_owned(), "/".to_owned(), true)];
    r.refused("rootmount", &pod, &c);
    r.cleanup();
    say("total_ms", start.elapsed().as_millis().to_string());
    say("failures", r.failures.to_string());
    say("done", "1");
    r.failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let args: Vec<String> = [
            "--image",
            "x:1",
            "--wait",
            "5",
            "--pod-subnet",
            "10.1.0.0/16",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let o = Options::parse(&args).unwrap();
        assert_eq!(o.image, "x:1");
        assert_eq!(o.wait, Duration::from_secs(5));
        assert_eq!(o.pod_subnet, "10.1.0.0/16");
        assert_eq!(o.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(Options::parse(&["--wait".to_owned()]).is_err());
        assert!(Options::parse(&["--bogus".to_owned(), "1".to_owned()]).is_err());
    }

    #[test]
    fn log_files() {
        let text = "2026-11-28T10:00:00.1Z stdout F RAMPART-PROBE {\"status\":{\"Seccomp\":\"2\",\"NoNewPrivs\":\"1\"}}\n\
                    2026-11-28T10:00:00.2Z stderr P part one \n\
                    2026-11-28T10:00:00.3Z stderr F and two\n\
                    garbage\n";
        let m = log_messages(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], ("stderr".to_owned(), "part one and two".to_owned()));
        let s = probe_status(&m).unwrap();
        assert_eq!(s["Seccomp"], "2");
        assert_eq!(s["NoNewPrivs"], "1");
        assert!(probe_status(&[]).is_none());
    }

    #[test]
    fn subnets() {
        // (ip, subnet, inside)
        let cases = [
            ("10.88.0.5", "10.88.0.0/16", true),
            ("10.89.0.5", "10.88.0.0/16", false),
            ("", "10.88.0.0/16", false),
            ("10.88.0.5", "10.88.0.0", false),
            ("1.2.3.4", "0.0.0.0/0", true),
            ("10.88.0.5", "10.88.0.5/32", true),
        ];
        for (ip, net, want) in cases {
            assert_eq!(in_subnet(ip, net), want, "{ip} {net}");
        }
    }

    #[test]
    fn lines_are_one_line() {
        assert_eq!(line("a", " x\ny \n"), "CRI-TEST a=x y");
        assert_eq!(Stage::Start("m".into()).name(), "start");
        assert_eq!(Stage::Run("m".into()).message(), "m");
        assert_eq!(Stage::Started.message(), "");
    }
}
