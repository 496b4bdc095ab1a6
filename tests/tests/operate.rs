//! Operating a host without a shell (issue 7), end to end in QEMU.
//!
//! `operate_end_to_end` boots the default host with containerd, the host channel, two log
//! collectors (RFC 5424 syslog over UDP and over TCP, listening on the build machine's loopback
//! and reached from the guest at 10.0.2.2 through QEMU's user network) and the metrics endpoint
//! (forwarded to a loopback port). Inside the guest a test service runs a container (so there
//! are container events and rampart-runc audit lines), floods the control socket with 1,000
//! malformed, oversized and abandoned connections, tries it as uid 65534 and times 1,000
//! `status` requests. From the build machine the test then uses `rampart --socket` over the
//! virtio-serial channel: `status` shows containerd running with its cgroup figures, `logs
//! containerd` its output, `restart` restarts a service, `events` the container's lifecycle,
//! the metrics endpoint answers, and `poweroff` ends the guest cleanly.
//!
//! `metrics_closed_when_disabled` boots a small host without `[metrics]`: nothing listens on
//! the metrics port, the firewall has no rule for it, a connection from the build machine gets
//! no answer, and the control channel shows no metrics service.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_tests::containerd as ctd;
use rampart_tests::harness::{self, scratch, test_env as env, TestService};
use rampart_tests::live::LiveBoot;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the build machine's `rampart` CLI against the guest's channel.
fn cli(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env().bin_dir.join("rampart"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Collects what the guest's forwarder sends: one entry per UDP datagram, and the messages
/// of the RFC 6587 octet-counted TCP stream.
struct Collectors {
    udp_port: u16,
    tcp_port: u16,
    udp: Arc<Mutex<Vec<String>>>,
    tcp: Arc<Mutex<Vec<String>>>,
}

impl Collectors {
    fn start() -> Self {
        let udp_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp_sock = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Collectors {
            udp_port: udp_sock.local_addr().unwrap().port(),
            tcp_port: tcp_sock.local_addr().unwrap().port(),
            udp: Arc::default(),
            tcp: Arc::default(),
        };
        let udp = Arc::clone(&c.udp);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = udp_sock.recv(&mut buf) {
                udp.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        let tcp = Arc::clone(&c.tcp);
        std::thread::spawn(move || {
            for stream in tcp_sock.incoming() {
                let Ok(stream) = stream else { continue };
                let tcp = Arc::clone(&tcp);
                std::thread::spawn(move || {
                    let mut r = BufReader::new(stream);
                    loop {
                        let mut len = Vec::new();
                        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                            return;
                        }
                        let Ok(n) = String::from_utf8_lossy(&len).trim().parse::<usize>() else {
                            tcp.lock()
                                .unwrap()
                                .push(format!("BAD FRAMING: {:?}", String::from_utf8_lossy(&len)));
                            return;
                        };
                        let mut msg = vec![0u8; n];
                        if r.read_exact(&mut msg).is_err() {
                            return;
                        }
                        tcp.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&msg).into_owned());
                    }
                });
            }
        });
        c
    }
}

/// The guest side: a container for events and audit lines, the flood, the non-root peer, the
/// benchmark, the CLI inside the guest; then it waits for the build machine.
const SCRIPT: &str = r#"
B=/bin/busybox; C=/usr/bin/ctr; I=rampart.demo/hello:latest; S=/run/rampart/control.sock
say() { echo "OPS-TEST $*"; }
$C image import /usr/share/rampart/demo.oci.tar >/dev/null 2>&1; say import=$?
$C run --rm $I ops-demo >/dev/null 2>&1; say run=$?
$C run --rm --privileged $I ops-priv >/dev/null 2>&1; say privileged=$?
/usr/bin/rampart-probe control-flood $S 1000; say flood=$?
/usr/bin/rampart-probe control-nobody $S; say nobody=$?
/usr/bin/rampart-probe control-bench $S 1000; say bench=$?
/usr/bin/rampart status; say guest_status=$?
/usr/bin/rampart logs --tail 3 rampart-init; say guest_logs=$?
echo OPS-READY
exec $B sleep 100000
"#;

fn sleeper() -> ctd::ServiceTable {
    let mut t = toml::Table::new();
    t.insert("name".into(), "sleeper".into());
    t.insert(
        "exec".into(),
        toml::Value::Array(vec!["/bin/busybox".into(), "sleep".into(), "100000".into()]),
    );
    t.insert("restart".into(), "always".into());
    t
}

fn ops_service() -> ctd::ServiceTable {
    let mut t = ctd::script_service("ops", SCRIPT);
    t.remove("on_exit");
    let caps = [
        "CAP_SYS_ADMIN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_SETUID",
        "CAP_SETGID",
    ];
    t.insert(
        "capabilities".into(),
        toml::Value::Array(caps.iter().map(|c| (*c).into()).collect()),
    );
    t
}

fn network_section() -> &'static str {
    r#"
[network]
[[network.interface]]
mac = "52:54:00:12:34:56"
addresses = ["10.0.2.15/24"]
gateway = "10.0.2.2"
"#
}

/// `text` with the drivers of QEMU's network card in `[kernel] modules`.
fn with_nic(text: &str) -> String {
    rampart_tests::network::with_network(text, rampart_tests::network::NIC_MODULES, "").unwrap()
}

/// `base` with the top-level tables of `extra` put in (replacing tables of the same name).
fn merged(base: &str, extra: &str) -> String {
    let mut doc: toml::Table = base.parse().unwrap();
    let extra: toml::Table = extra.parse().unwrap();
    for (k, v) in extra {
        doc.insert(k, v);
    }
    toml::to_string(&doc).unwrap()
}

fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: rampart\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

fn probe_line(console: &str, key: &str) -> serde_json::Value {
    console
        .lines()
        .filter_map(|l| l.split_once("CTL-PROBE ").map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j.trim()).ok())
        .find_map(|v| v.get(key).cloned())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn operate_end_to_end() {
    if !harness::qemu_or_skip("operate_end_to_end").unwrap() {
        return;
    }
    let env = env();
    let dir = scratch("operate");
    let collectors = Collectors::start();
    let metrics_port = free_port();
    let socket = dir.join("control.sock");
    let text = ctd::host_with_containerd(
        env,
        vec![ops_service(), sleeper()],
        &[(
            env.bin_dir.join("rampart-probe"),
            "/usr/bin/rampart-probe",
            0o755,
        )],
    )
    .unwrap();
    let extra = format!(
        r#"{}
[control]
host_channel = true

[[logs.forward]]
protocol = "syslog-udp"
address = "10.0.2.2"
port = {}

[[logs.forward]]
protocol = "syslog-tcp"
address = "10.0.2.2"
port = {}

[metrics]
enabled = true
port = 9100
"#,
        network_section(),
        collectors.udp_port,
        collectors.tcp_port
    );
    let text = merged(&with_nic(&text), &extra);
    let image = harness::build_host(env, &dir, &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .image;

    let mut guest = LiveBoot::start(
        env,
        &image,
        "operate",
        ctd::MEMORY_MIB,
        harness::boot_timeout().max(900),
        &[
            "--control".into(),
            socket.display().to_string(),
            "--forward".into(),
            format!("{metrics_port}:9100"),
        ],
    )
    .unwrap();
    if let Err(e) = guest.wait_for("OPS-READY", Duration::from_secs(900)) {
        panic!("{e}");
    }
    let console = guest.console();

    // --- inside the guest ---
    let flood = probe_line(&console, "flood");
    assert_eq!(flood["sent"], 1000, "{flood}");
    assert_eq!(flood["status_ok"], true, "PID 1 stopped answering: {flood}");
    let nobody = probe_line(&console, "nobody");
    assert!(
        nobody["plain"]
            .as_str()
            .unwrap_or("")
            .starts_with("connect refused"),
        "{nobody}"
    );
    assert_eq!(nobody["dac_override"], "denied by server", "{nobody}");
    let bench = probe_line(&console, "bench");
    assert_eq!(bench["failures"], 0, "{bench}");
    eprintln!("operate: control benchmark {bench}");
    assert!(console.contains("OPS-TEST guest_status=0"), "{console}");
    assert!(console.contains("OPS-TEST run=0"), "{console}");

    // --- from the build machine, over the virtio-serial channel ---
    let (code, out, err) = cli(&socket, &["--json", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let services = status["services"].as_array().unwrap();
    let find = |name: &str| {
        services
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    let containerd = find("containerd");
    assert_eq!(containerd["state"], "running", "{containerd}");
    assert!(
        containerd["memory_bytes"].as_u64().unwrap_or(0) > 1 << 20,
        "{containerd}"
    );
    assert!(
        containerd["pids"].as_u64().unwrap_or(0) >= 1,
        "{containerd}"
    );
    assert!(containerd["pid"].as_i64().unwrap_or(0) > 1, "{containerd}");
    for name in [
        "rampart-logd",
        "rampart-metrics",
        "rampart-events",
        "rampart-relay",
    ] {
        assert_eq!(find(name)["state"], "running", "{name}: {status}");
    }
    let (code, human, err) = cli(&socket, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        human.contains("containerd") && human.contains("running"),
        "{human}"
    );

    let (code, logs, err) = cli(&socket, &["logs", "containerd"]);
    assert_eq!(code, 0, "{err}");
    assert!(logs.contains("containerd"), "{logs}");
    assert!(logs.lines().count() > 5, "{logs}");

    let sleeper_before = find("sleeper");
    let (code, out, err) = cli(&socket, &["restart", "sleeper"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut restarted = serde_json::Value::Null;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let (_, out, _) = cli(&socket, &["--json", "status"]);
        let s: serde_json::Value =
            serde_json::from_str(out.lines().next().unwrap_or("{}")).unwrap_or_default();
        if let Some(x) = s["services"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "sleeper"))
        {
            if x["state"] == "running" && x["pid"] != sleeper_before["pid"] {
                restarted = x.clone();
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        restarted["state"], "running",
        "sleeper not restarted: {sleeper_before}"
    );
    let (code, _, err) = cli(&socket, &["restart", "no-such-service"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-service"), "{err}");

    let (code, events, err) = cli(&socket, &["events"]);
    assert_eq!(code, 0, "{err}");
    for needle in ["/tasks/start", "/tasks/exit", "ops-demo"] {
        assert!(events.contains(needle), "no {needle} in events:\n{events}");
    }

    let metrics = http_get(metrics_port, "/metrics").unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("rampart_service_up{service=\"containerd\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rampart_host_memory_total_bytes"),
        "{metrics}"
    );

    let (code, out, err) = cli(&socket, &["poweroff"]);
    assert_eq!(code, 0, "{out}{err}");
    let boot = guest.finish(Duration::from_secs(120)).unwrap();
    assert_eq!(boot.output.status.code(), Some(0), "{}", boot.tail(40));

    // --- what the collectors received ---
    let udp = collectors.udp.lock().unwrap().clone();
    let tcp = collectors.tcp.lock().unwrap().clone();
    for (name, lines) in [("udp", &udp), ("tcp", &tcp)] {
        let boot_line = lines.iter().find(|l| {
            l.contains(" rampart rampart-init - log [rampart@32473") && l.starts_with('<')
        });
        assert!(
            boot_line.is_some(),
            "{name}: no boot line in {} lines",
            lines.len()
        );
        let audit = lines.iter().find(|l| l.contains(" audit [rampart@32473"));
        assert!(audit.is_some(), "{name}: no audit line in {lines:?}");
        let l = audit.unwrap();
        // authpriv (10) * 8 + severity: <80>..<87>, version 1, RFC 3339 UTC with ms.
        let pri: u32 = l[1..l.find('>').unwrap()].parse().unwrap();
        assert!((80..88).contains(&pri), "{l}");
        assert!(l[l.find('>').unwrap() + 1..].starts_with("1 20"), "{l}");
    }
}

#[test]
fn metrics_closed_when_disabled() {
    if !harness::qemu_or_skip("metrics_closed_when_disabled").unwrap() {
        return;
    }
    let env = env();
    let dir = scratch("operate-closed");
    let port = free_port();
    let socket = dir.join("control.sock");
    let script = "sleep 2; echo CLOSED-LISTEN-BEGIN; /bin/busybox netstat -ltn; \
                  echo CLOSED-LISTEN-END; grep -c 9100 /run/rampart/firewall.nft; \
                  echo CLOSED-READY; exec /bin/busybox sleep 100000";
    let svc = TestService {
        name: "closed".into(),
        exec: vec![
            "/bin/busybox".into(),
            "sh".into(),
            "-c".into(),
            script.into(),
        ],
        on_exit: None,
        capabilities: vec![],
    };
    let text = harness::host_from_example(&env.example, &env.rampart_check(), &[svc], &[]).unwrap();
    let text = merged(
        &with_nic(&text),
        &format!("{}\n[control]\nhost_channel = true\n", network_section()),
    );
    let image = harness::build_host(env, &dir, &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .image;
    let mut guest = LiveBoot::start(
        env,
        &image,
        "operate-closed",
        1024,
        harness::boot_timeout(),
        &[
            "--control".into(),
            socket.display().to_string(),
            "--forward".into(),
            format!("{port}:9100"),
        ],
    )
    .unwrap();
    guest
        .wait_for("CLOSED-READY", Duration::from_secs(300))
        .unwrap();
    let console = guest.console();
    let listen = console
        .split("CLOSED-LISTEN-BEGIN")
        .nth(1)
        .and_then(|s| s.split("CLOSED-LISTEN-END").next())
        .unwrap_or("");
    assert!(
        !listen.contains(":9100"),
        "something listens on 9100:\n{listen}"
    );
    let rules = console
        .split("CLOSED-LISTEN-END")
        .nth(1)
        .and_then(|s| s.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(|l| l.trim_start_matches("closed:").trim())
        .unwrap_or("");
    assert_eq!(rules, "0", "the firewall mentions port 9100:\n{console}");
    // From the build machine: QEMU accepts, the guest has nothing there: no HTTP answer.
    let answer = http_get(port, "/metrics").unwrap_or_default();
    assert!(!answer.contains("200"), "{answer}");
    let (code, out, err) = cli(&socket, &["--json", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("rampart-metrics"), "{out}");
    let (code, _, err) = cli(&socket, &["poweroff"]);
    assert_eq!(code, 0, "{err}");
    let boot = guest.finish(Duration::from_secs(120)).unwrap();
    assert_eq!(boot.output.status.code(), Some(0), "{}", boot.tail(40));
}
