//! Tests as root in throwaway network namespaces (no VM): the ruleset is applied over our
//! netlink code inside a namespace created for the test, read back with `nft list ruleset`, and
//! exercised with TCP over a veth pair into a second namespace (10.99.x.1 and 10.99.x.2, the
//! test's own hosts). `ip` and `nft` are test-time tools only. Each test skips, with a reason,
//! when not root or when a tool is missing.

use super::netlink::expr::{Expr, VerdictCode};
use super::netlink::{encode_into, Batch, NetlinkError, Socket};
use super::plan::{plan, tests_support::firewall, tests_support::FULL, Ruleset};
use super::render::{normalise, render};
use rampart_config::firewall::Firewall;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    for tool in ["ip", "nft"] {
        let ok = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipped: `{tool}` is not installed (test dependency)");
            return false;
        }
    }
    true
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("rfw-{}-{n}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        // Built before anything else can fail, so Drop removes the namespace in every case.
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v);
    }

    /// Runs `f` on a thread that has entered this namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn apply(&self, rs: &Ruleset) -> Result<(), super::FirewallError> {
        self.enter(|| super::apply(rs))
    }

    fn nft_list(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "list", "ruleset"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn assert_reads_back(ns: &NetNs, rs: &Ruleset) {
    let listed = normalise(&ns.nft_list());
    let ours = normalise(&render(rs));
    assert_eq!(listed, ours, "nft list ruleset differs from our rendering");
}

#[test]
fn applied_ruleset_reads_back_as_rendered() {
    if !can_run() {
        return;
    }
    let ns = NetNs::new();
    let default = plan(&Firewall::default());
    let full = plan(&firewall(FULL));
    ns.apply(&default).unwrap();
    assert_reads_back(&ns, &default);
    // Replacing works on an existing table, and leaves nothing of the old one behind.
    ns.apply(&full).unwrap();
    assert_reads_back(&ns, &full);
    ns.apply(&default).unwrap();
    assert_reads_back(&ns, &default);
}

#[test]
fn failing_batch_leaves_previous_ruleset() {
    if !can_run() {
        return;
    }
    let ns = NetNs::new();
    let full = plan(&firewall(FULL));
    ns.apply(&full).unwrap();
    // A whole replacement whose last rule names a chain that does not exist.
    let mut batch = Batch::begin();
    encode_into(&mut batch, &plan(&Firewall::default()));
    batch.new_rule(
        "rampart",
        "nonexistent",
        &[Expr::Verdict(VerdictCode::Accept)],
        None,
        "add rule to chain nonexistent".to_owned(),
    );
    let batch = batch.end();
    let err = ns
        .enter(|| Socket::open().unwrap().send(&batch))
        .unwrap_err();
    match &err {
        NetlinkError::Refused { op, source, .. } => {
            assert_eq!(op, "add rule to chain nonexistent");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("unexpected error: {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("nonexistent") && text.contains("rolled back"),
        "{text}"
    );
    assert_reads_back(&ns, &full);
}

/// Two namespaces joined by a veth pair: `host` (10.99.N.1, firewalled) and `peer` (10.99.N.2).
struct Pair {
    host: NetNs,
    peer: NetNs,
    host_ip: String,
    peer_ip: String,
}

fn pair() -> Pair {
    let host = NetNs::new();
    let peer = NetNs::new();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst) % 250;
    let (host_ip, peer_ip) = (format!("10.99.{n}.1"), format!("10.99.{n}.2"));
    host.ip(&[
        "link", "add", "vh0", "type", "veth", "peer", "name", "vp0", "netns", &peer.name,
    ]);
    host.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", "vh0"]);
    peer.ip(&["addr", "add", &format!("{peer_ip}/24"), "dev", "vp0"]);
    host.ip(&["link", "set", "vh0", "up"]);
    peer.ip(&["link", "set", "vp0", "up"]);
    Pair {
        host,
        peer,
        host_ip,
        peer_ip,
    }
}

fn listen(ns: &NetNs, ip: &str, port: u16) -> TcpListener {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    ns.enter(move || TcpListener::bind(addr).unwrap())
}

/// Connects from inside `ns`; on success sends "ping" and expects the echo server's "pong".
fn connect(ns: &NetNs, ip: &str, port: u16) -> std::io::Result<()> {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut s = ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_millis(1500)))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)?;
    assert_eq!(&buf, b"pong");
    Ok(())
}

/// Answers one connection with "pong", in the background.
fn serve_once(l: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(b"pong");
            }
        }
    })
}

fn input_drop_count(listing: &str) -> u64 {
    let mut in_input = false;
    for line in listing.lines() {
        let t = line.trim();
        if t.starts_with("chain ") {
            in_input = t == "chain input {";
        }
        if in_input && t.starts_with("counter packets ") {
            return t
                .split(' ')
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

#[test]
fn policy_holds_on_the_wire() {
    if !can_run() {
        return;
    }
    let p = pair();
    let fw = firewall(&format!(
        r#"
[[firewall.rule]]
direction = "in"
protocol = "tcp"
ports = [8080]
action = "accept"
comment = "allowed service"

[[firewall.rule]]
direction = "out"
protocol = "tcp"
destination = ["{}"]
ports = [9091]
action = "accept"
"#,
        p.peer_ip
    ));
    let rs = plan(&fw);
    p.host.apply(&rs).unwrap();
    assert_reads_back(&p.host, &rs);

    // Ingress: the allowed port answers (the reply is established traffic), the other does
    // not even refuse: its SYN is dropped.
    let allowed = serve_once(listen(&p.host, &p.host_ip, 8080));
    let _closed = listen(&p.host, &p.host_ip, 8081);
    connect(&p.peer, &p.host_ip, 8080).expect("allowed port 8080 must answer");
    allowed.join().unwrap();
    let err = connect(&p.peer, &p.host_ip, 8081).expect_err("port 8081 must not answer");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "expected a silent drop, got {err}"
    );
    assert!(
        input_drop_count(&p.host.nft_list()) > 0,
        "the input drop counter counted nothing"
    );

    // Egress: only what a rule allows.
    let egress_ok = serve_once(listen(&p.peer, &p.peer_ip, 9091));
    let _egress_closed = listen(&p.peer, &p.peer_ip, 9090);
    connect(&p.host, &p.peer_ip, 9091).expect("allowed egress to 9091");
    egress_ok.join().unwrap();
    assert!(
        connect(&p.host, &p.peer_ip, 9090).is_err(),
        "egress to 9090 must be refused"
    );

    // Loopback inside the firewalled host is open.
    let lo = serve_once(listen(&p.host, "127.0.0.1", 7070));
    connect(&p.host, "127.0.0.1", 7070).expect("loopback");
    lo.join().unwrap();
}

#[test]
fn dns_to_configured_resolvers_only() {
    if !can_run() {
        return;
    }
    // The peer plays the resolver; DNS over TCP to it is allowed, other egress is not.
    let p = pair();
    let fw = firewall(&format!("[firewall]\ndns = [\"{}\"]\n", p.peer_ip));
    p.host.apply(&plan(&fw)).unwrap();
    let dns = serve_once(listen(&p.peer, &p.peer_ip, 53));
    connect(&p.host, &p.peer_ip, 53).expect("DNS over TCP to the resolver");
    dns.join().unwrap();
    let _other = listen(&p.peer, &p.peer_ip, 54);
    assert!(connect(&p.host, &p.peer_ip, 54).is_err());
}

#[test]
fn containers_go_out_masqueraded_and_nothing_else() {
    if !can_run() {
        return;
    }
    // peer (upstream) <-veth-> host (firewalled, bridge rbr0) <-veth-> container
    let p = pair();
    let ctr = NetNs::new();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst) % 250;
    let (bridge_ip, ctr_ip) = (format!("10.98.{n}.1"), format!("10.98.{n}.2"));
    let subnet = format!("10.98.{n}.0/24");
    p.host.ip(&["link", "add", "rbr0", "type", "bridge"]);
    p.host.ip(&[
        "link", "add", "vc0", "type", "veth", "peer", "name", "eth0", "netns", &ctr.name,
    ]);
    p.host.ip(&["link", "set", "vc0", "master", "rbr0"]);
    p.host
        .ip(&["addr", "add", &format!("{bridge_ip}/24"), "dev", "rbr0"]);
    p.host.ip(&["link", "set", "vc0", "up"]);
    p.host.ip(&["link", "set", "rbr0", "up"]);
    ctr.ip(&["addr", "add", &format!("{ctr_ip}/24"), "dev", "eth0"]);
    ctr.ip(&["link", "set", "eth0", "up"]);
    ctr.ip(&["route", "add", "default", "via", &bridge_ip]);
    p.peer.ip(&["route", "add", &subnet, "via", &p.host_ip]);
    run(&[
        "ip",
        "netns",
        "exec",
        &p.host.name,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let fw = firewall(&format!(
        "[firewall.containers]\nbridge = \"rbr0\"\nsubnet = \"{subnet}\"\n\n[[firewall.rule]]\ndirection = \"in\"\nprotocol = \"tcp\"\nports = [8080]\nin_interface = \"vh0\"\naction = \"accept\"\n"
    ));
    let rs = plan(&fw);
    p.host.apply(&rs).unwrap();
    assert_reads_back(&p.host, &rs);

    // Out, masqueraded: the peer sees the host's address; the answer comes back.
    let l = listen(&p.peer, &p.peer_ip, 9000);
    let seen = std::thread::spawn(move || {
        let (mut s, from) = l.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        from.ip().to_string()
    });
    connect(&ctr, &p.peer_ip, 9000).expect("container to upstream");
    assert_eq!(seen.join().unwrap(), p.host_ip, "not masqueraded");

    // Nothing in: the upstream cannot open a connection to the container.
    let _c = listen(&ctr, &ctr_ip, 9001);
    assert!(
        connect(&p.peer, &ctr_ip, 9001).is_err(),
        "upstream reached a container"
    );
    // Nor does a container reach the host's own ports (8080 is open on vh0 only).
    let _h = listen(&p.host, "0.0.0.0", 8080);
    assert!(
        connect(&ctr, &bridge_ip, 8080).is_err(),
        "container reached the host"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `scripts/bench-firewall.sh`: a 1,000-rule ruleset applied with our netlink code and with
/// `nft -f` of the same rendered rules, in one namespace, median of RAMPART_BENCH_RUNS (11).
#[test]
#[ignore = "benchmark: run with scripts/bench-firewall.sh"]
fn bench_1000_rules() {
    if !can_run() {
        return;
    }
    let runs: usize = std::env::var("RAMPART_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut toml = String::new();
    let base = plan(&Firewall::default()).rule_count();
    let user = 1000 - base;
    for i in 0..user {
        let port = 10000 + i;
        toml.push_str(&format!(
            "[[firewall.rule]]\ndirection = \"in\"\nprotocol = \"tcp\"\nports = [{port}]\nsource = [\"10.{}.{}.0/24\"]\naction = \"accept\"\ncomment = \"rule {i}\"\n\n",
            i / 256,
            i % 256
        ));
    }
    let parse_start = std::time::Instant::now();
    let fw = firewall(&toml);
    let parse = parse_start.elapsed();
    let plan_start = std::time::Instant::now();
    let rs = plan(&fw);
    let planned = plan_start.elapsed();
    assert_eq!(rs.rule_count(), 1000);
    let encode_start = std::time::Instant::now();
    let batch = super::netlink::encode(&rs);
    let encoded = encode_start.elapsed();
    let text = render(&rs);
    let ns = NetNs::new();

    let mut ours = Vec::new();
    for _ in 0..runs {
        let d = ns.enter(|| {
            let t = std::time::Instant::now();
            super::apply(&rs).unwrap();
            t.elapsed()
        });
        ours.push(d);
    }
    assert_reads_back(&ns, &rs);

    // nft gets the same atomic replace: create (no-op if present), delete, then the table.
    let file = std::env::temp_dir().join(format!("rampart-bench-{}.nft", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "table inet rampart\ndelete table inet rampart\n{}",
            text.replace("counter packets 0 bytes 0", "counter")
        ),
    )
    .unwrap();
    let mut nft = Vec::new();
    for _ in 0..runs {
        let t = std::time::Instant::now();
        let st = Command::new("ip")
            .args(["netns", "exec", &ns.name, "nft", "-f"])
            .arg(&file)
            .status()
            .unwrap();
        nft.push(t.elapsed());
        assert!(st.success());
    }
    // `ip netns exec` itself, to subtract.
    let mut exec = Vec::new();
    for _ in 0..runs {
        let t = std::time::Instant::now();
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "true"])
            .status()
            .unwrap();
        exec.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&file);
    assert_reads_back(&ns, &rs);
    let default = plan(&Firewall::default());
    let mut small = Vec::new();
    for _ in 0..runs {
        small.push(ns.enter(|| {
            let t = std::time::Instant::now();
            super::apply(&default).unwrap();
            t.elapsed()
        }));
    }
    // The boot case: no table yet.
    let mut boot = Vec::new();
    let mut boot_big = Vec::new();
    for _ in 0..runs.min(5) {
        let fresh = NetNs::new();
        boot.push(fresh.enter(|| {
            let t = std::time::Instant::now();
            super::apply(&default).unwrap();
            t.elapsed()
        }));
        let fresh = NetNs::new();
        boot_big.push(fresh.enter(|| {
            let t = std::time::Instant::now();
            super::apply(&rs).unwrap();
            t.elapsed()
        }));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "firewall benchmark: 1000 rules, {} bytes, {} messages, median of {runs} runs",
        batch.bytes().len(),
        batch.acked_messages() + 2
    );
    println!(
        "  config parse+validate ({user} user rules):  {:8.2} ms",
        ms(parse)
    );
    println!(
        "  plan:                                    {:8.2} ms",
        ms(planned)
    );
    println!(
        "  netlink encode:                          {:8.2} ms",
        ms(encoded)
    );
    println!(
        "  rampart replace (encode+send+acks):      {:8.2} ms",
        ms(median(ours))
    );
    println!(
        "  nft -f (via ip netns exec):              {:8.2} ms",
        ms(median(nft.clone()))
    );
    println!(
        "  ip netns exec true (overhead):           {:8.2} ms",
        ms(median(exec.clone()))
    );
    println!(
        "  nft -f minus exec overhead:              {:8.2} ms",
        ms(median(nft).saturating_sub(median(exec)))
    );
    println!(
        "  rampart replace, default ruleset ({} rules): {:6.2} ms",
        default.rule_count(),
        ms(median(small))
    );
    println!(
        "  rampart first apply (boot), default:     {:8.2} ms",
        ms(median(boot))
    );
    println!(
        "  rampart first apply (boot), 1000 rules:  {:8.2} ms",
        ms(median(boot_big))
    );
}
