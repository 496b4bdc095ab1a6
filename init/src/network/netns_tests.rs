//! Root tests in a throwaway network namespace (no VM): a veth pair is created with `ip` (a
//! test-time tool only), our rtnetlink code configures one end from a `[network]` section, and
//! `ip` reads the result back. Skips, with a reason, when not root or without `ip`.

use super::plan::ops;
use super::rtnl::{Request, Socket};
use super::{run_ops, NetworkError, Resolved};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    if !Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: `ip` is not installed (test dependency)");
        return false;
    }
    true
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn configures_a_veth_end_over_rtnetlink() {
    if !can_run() {
        return;
    }
    let ns = NetNs(format!("rnet-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&[
        "-n", &ns.0, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    let line = ip(&["-n", &ns.0, "-o", "link", "show", "veth0"]);
    let index: u32 = line.split(':').next().unwrap().trim().parse().unwrap();
    let cfg = rampart_config::parse(
        r#"
[[network.interface]]
name = "veth0"
mtu = 1400
addresses = ["10.77.0.1/24", "fd77::1/64"]
gateway = "10.77.0.2"
routes = [{ destination = "10.78.0.0/16", gateway = "10.77.0.3" }]
"#,
        Path::new("host.toml"),
    )
    .unwrap();
    let iface = &cfg.network.interfaces[0];
    let resolved = Resolved {
        name: "veth0".into(),
        index,
    };
    let proc_sys = tempfile::tempdir().unwrap();
    let path = format!("/run/netns/{}", ns.0);
    let (result, failure) = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut sock = Socket::open().unwrap();
            let ok = run_ops(&mut sock, &resolved, &ops(iface, "veth0"), proc_sys.path());
            // A gateway that is not on-link is refused: the error names interface and op.
            let bad = run_ops(
                &mut sock,
                &resolved,
                &[super::Op::Route(rampart_config::network::Route {
                    destination: rampart_config::firewall::Cidr::try_from("10.79.0.0/16").unwrap(),
                    gateway: Some("192.0.2.1".parse().unwrap()),
                })],
                proc_sys.path(),
            );
            let _ = sock.request(&Request::Link { index: 1, up: true });
            (ok, bad)
        })
        .join()
        .unwrap()
    });
    result.unwrap();
    let link = ip(&["-n", &ns.0, "-o", "link", "show", "veth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(link.contains(",UP"), "{link}");
    let addrs = ip(&["-n", &ns.0, "-o", "addr", "show", "veth0"]);
    assert!(
        addrs.contains("inet 10.77.0.1/24 brd 10.77.0.255"),
        "{addrs}"
    );
    assert!(addrs.contains("inet6 fd77::1/64"), "{addrs}");
    let routes = ip(&["-n", &ns.0, "route"]);
    assert!(
        routes.contains("default via 10.77.0.2 dev veth0 proto static"),
        "{routes}"
    );
    assert!(
        routes.contains("10.78.0.0/16 via 10.77.0.3 dev veth0 proto static"),
        "{routes}"
    );
    let sysctls: Vec<String> = ["accept_ra", "autoconf"]
        .iter()
        .map(|k| {
            std::fs::read_to_string(proc_sys.path().join(format!("net/ipv6/conf/veth0/{k}")))
                .unwrap_or_default()
        })
        .collect();
    // The temp tree has no such folder: a missing key is skipped, not an error.
    assert_eq!(sysctls, ["", ""]);
    let e = failure.unwrap_err();
    assert!(matches!(e, NetworkError::Netlink { .. }));
    let text = e.to_string();
    assert!(
        text.starts_with("veth0: add route 10.79.0.0/16 via 192.0.2.1: "),
        "{text}"
    );
}
