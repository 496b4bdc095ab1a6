//! End-to-end network tests in QEMU (user networking: the guest is 10.0.2.15, the host's
//! forwarded ports reach it from 10.0.2.2). Two boots: static addressing (interface chosen by
//! MAC) and DHCP against QEMU's built-in server. Each checks that the firewall is applied
//! before the interface comes up (boot log order), that a TCP service on a port the policy
//! allows answers the host and the same service on another port does not, and what the guest
//! ended up with (routes, resolv.conf, hosts, the lease).

use std::path::PathBuf;
use std::time::Duration;

use rampart_tests::harness::{self, test_env as env, TestService};
use rampart_tests::network::{fetch, free_port, position, with_network, RunningGuest, NIC_MODULES};

const ALLOWED: u16 = 8080;
const CLOSED: u16 = 8081;

const RULE: &str = r#"
[[firewall.rule]]
direction = "in"
protocol = "tcp"
ports = [8080]
action = "accept"
comment = "e2e allowed port"
"#;

fn responder(name: &str, port: u16) -> TestService {
    TestService {
        name: name.to_owned(),
        exec: [
            "/bin/busybox",
            "nc",
            "-ll",
            "-p",
            &port.to_string(),
            "-e",
            "/bin/busybox",
            "echo",
            &format!("open-{port}"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        on_exit: None,
        capabilities: vec![],
    }
}

fn reporter(sleep: u32) -> TestService {
    let script = format!(
        "sleep {sleep}; echo NET-REPORT-BEGIN; cat /proc/net/route; cat /etc/resolv.conf; \
         cat /etc/hosts; cat /run/rampart/dhcp/*.lease 2>/dev/null; \
         head -n 1 /run/rampart/firewall.nft; echo NET-REPORT-END"
    );
    TestService {
        name: "report".to_owned(),
        exec: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script],
        on_exit: Some("poweroff".to_owned()),
        capabilities: vec![],
    }
}

fn build(name: &str, extra: &str) -> PathBuf {
    let env = env();
    let dir = env.out_dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let services = [
        responder("open", ALLOWED),
        responder("closed", CLOSED),
        reporter(25),
    ];
    let base =
        harness::host_from_example(&env.example, &env.rampart_check(), &services, &[]).unwrap();
    let text = with_network(&base, NIC_MODULES, extra).unwrap();
    let config = harness::write_host(&dir, &text).unwrap();
    let out = dir.join("image");
    let built = harness::build(env, &config, &out).unwrap();
    assert!(
        built.status.success(),
        "build failed:\n{}",
        built.combined()
    );
    out
}

/// Boots `image`, waits for `ready`, talks to both ports, and returns the console and what
/// the two ports answered.
fn boot_and_probe(
    name: &str,
    image: &std::path::Path,
    ready: &str,
) -> (Vec<String>, Result<String, String>, Result<String, String>) {
    let (h_open, h_closed) = (free_port(), free_port());
    let mut g = RunningGuest::start(
        env(),
        image,
        &[(h_open, ALLOWED), (h_closed, CLOSED)],
        harness::boot_timeout(),
    )
    .unwrap();
    let seen = g.wait_for(ready, Duration::from_secs(120));
    let (open, closed) = if seen.is_some() {
        // Give the responders a moment to listen.
        std::thread::sleep(Duration::from_secs(1));
        (
            fetch(h_open, Duration::from_secs(5)),
            fetch(h_closed, Duration::from_secs(5)),
        )
    } else {
        (Err("not ready".into()), Err("not ready".into()))
    };
    let console = g.finish(Duration::from_secs(120));
    let log = env().out_dir.join(format!("{name}.console.log"));
    let _ = std::fs::write(&log, console.join("\n"));
    eprintln!("{name}: console in {}", log.display());
    assert!(
        seen.is_some(),
        "{name}: `{ready}` never came:\n{}",
        console.join("\n")
    );
    (console, open, closed)
}

fn check_common(
    name: &str,
    console: &[String],
    open: &Result<String, String>,
    closed: &Result<String, String>,
) {
    let all = console.join("\n");
    let fw = position(console, "rampart-init: firewall applied (");
    let up = position(console, "rampart-init: network: eth0 up");
    let lo = position(console, "rampart-init: network: lo up");
    assert!(
        fw.is_some() && up.is_some() && lo.is_some(),
        "{name}:\n{all}"
    );
    assert!(
        fw < lo && lo < up,
        "{name}: firewall must come before any interface:\n{all}"
    );
    if let Some(line) = fw.and_then(|i| console.get(i)) {
        eprintln!("{name}: {line}");
    }
    assert_eq!(
        open.as_deref(),
        Ok("open-8080\n"),
        "{name}: allowed port:\n{all}"
    );
    assert!(
        !closed.as_deref().unwrap_or("").contains("open-8081"),
        "{name}: the port the policy does not allow answered: {closed:?}"
    );
    assert!(!all.contains("network: error"), "{name}:\n{all}");
    let report = all
        .split("NET-REPORT-BEGIN")
        .nth(1)
        .and_then(|r| r.split("NET-REPORT-END").next())
        .unwrap_or_else(|| panic!("{name}: no report:\n{all}"));
    // /proc/net/route: default via 10.0.2.2 (hex, little-endian) on eth0.
    assert!(
        report
            .lines()
            .any(|l| l.contains("eth0\t00000000\t0202000A")),
        "{name}: no default route:\n{report}"
    );
    assert!(report.contains("nameserver 10.0.2.3"), "{name}:\n{report}");
    assert!(report.contains("table inet rampart {"), "{name}:\n{report}");
}

#[test]
fn static_addressing_by_mac_behind_the_firewall() {
    if !harness::qemu_or_skip("static_addressing_by_mac_behind_the_firewall").unwrap() {
        return;
    }
    let extra = format!(
        r#"
[network]
dns = ["10.0.2.3"]
search = ["rampart.test"]

[[network.interface]]
mac = "52:54:00:12:34:56"
addresses = ["10.0.2.15/24"]
gateway = "10.0.2.2"

[[network.hosts]]
address = "10.0.2.2"
names = ["gateway.rampart.test"]
{RULE}"#
    );
    let image = build("net-static", &extra);
    let (console, open, closed) =
        boot_and_probe("net-static", &image, "rampart-init: services started");
    check_common("net-static", &console, &open, &closed);
    let all = console.join("\n");
    assert!(all.contains("network: eth0 up (10.0.2.15/24)"), "{all}");
    assert!(all.contains("search rampart.test"), "{all}");
    assert!(all.contains("10.0.2.2\tgateway.rampart.test"), "{all}");
}

#[test]
fn dhcp_lease_from_qemu_behind_the_firewall() {
    if !harness::qemu_or_skip("dhcp_lease_from_qemu_behind_the_firewall").unwrap() {
        return;
    }
    let extra = format!(
        r#"
[[network.interface]]
name = "eth0"
dhcp = true
{RULE}"#
    );
    let image = build("net-dhcp", &extra);
    let (console, open, closed) = boot_and_probe("net-dhcp", &image, "rampart-dhcp: eth0: bound");
    check_common("net-dhcp", &console, &open, &closed);
    let all = console.join("\n");
    assert!(
        all.contains("rampart-dhcp: eth0: bound 10.0.2.15/24 via 10.0.2.2"),
        "{all}"
    );
    assert!(all.contains("address 10.0.2.15/24"), "lease file:\n{all}");
    assert!(all.contains("server 10.0.2.2"), "lease file:\n{all}");
    // At shutdown the client releases the lease (unicast to the server) and removes it.
    assert!(
        all.contains("rampart-dhcp: eth0: released 10.0.2.15/24"),
        "{all}"
    );
    assert!(
        !all.contains("rampart-dhcp: eth0: send"),
        "a send failed:\n{all}"
    );
    assert!(!all.contains("rampart-dhcp: eth0: error"), "{all}");
}
