//! The ruleset as `nft` text, the way `nft list ruleset` prints what the kernel holds.
//!
//! The text is for people (`/run/rampart/firewall.nft`, `rampart-image firewall`) and for tests,
//! which load the ruleset over netlink and compare this rendering with the kernel's own listing.
//! It is also valid input for `nft -f`. Counters print as zero.

use super::plan::{
    ct_state, Chain, ChainKind, Hook, Match, Per, Policy, Rule, Ruleset, Statement, L4,
};
use rampart_config::firewall::Cidr;
use std::fmt::Write as _;

/// Renders the whole ruleset.
pub fn render(rs: &Ruleset) -> String {
    let mut out = format!("table inet {} {{\n", rs.table);
    for (i, chain) in rs.chains.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_chain(&mut out, chain);
    }
    out.push_str("}\n");
    out
}

fn render_chain(out: &mut String, c: &Chain) {
    let kind = match c.kind {
        ChainKind::Filter => "filter",
        ChainKind::Nat => "nat",
    };
    let hook = match c.hook {
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    };
    let priority = match (c.kind, c.priority) {
        (ChainKind::Filter, 0) => "filter".to_owned(),
        (ChainKind::Nat, 100) => "srcnat".to_owned(),
        (_, p) => p.to_string(),
    };
    let policy = match c.policy {
        Policy::Accept => "accept",
        Policy::Drop => "drop",
    };
    let _ = writeln!(out, "\tchain {} {{", c.name);
    let _ = writeln!(
        out,
        "\t\ttype {kind} hook {hook} priority {priority}; policy {policy};"
    );
    for r in &c.rules {
        let _ = writeln!(out, "\t\t{}", rule_text(r));
    }
    out.push_str("\t}\n");
}

/// One rule as `nft` prints it.
pub fn rule_text(r: &Rule) -> String {
    let mut parts: Vec<String> = r.matches.iter().map(match_text).collect();
    parts.extend(r.statements.iter().map(statement_text));
    if let Some(c) = &r.comment {
        parts.push(format!("comment \"{c}\""));
    }
    parts.join(" ")
}

fn l4_name(p: L4) -> &'static str {
    match p {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
        L4::Icmp => "icmp",
        L4::Icmpv6 => "ipv6-icmp",
    }
}

fn addr(dir: &str, net: &Cidr) -> String {
    let fam = match net {
        Cidr::V4(..) => "ip",
        Cidr::V6(..) => "ip6",
    };
    format!("{fam} {dir} {net}")
}

fn icmp_type_name(t: u8) -> String {
    match t {
        0 => "echo-reply".to_owned(),
        3 => "destination-unreachable".to_owned(),
        8 => "echo-request".to_owned(),
        11 => "time-exceeded".to_owned(),
        13 => "timestamp-request".to_owned(),
        14 => "timestamp-reply".to_owned(),
        17 => "address-mask-request".to_owned(),
        18 => "address-mask-reply".to_owned(),
        n => n.to_string(),
    }
}

fn icmpv6_type_name(t: u8) -> String {
    match t {
        1 => "destination-unreachable".to_owned(),
        2 => "packet-too-big".to_owned(),
        128 => "echo-request".to_owned(),
        129 => "echo-reply".to_owned(),
        133 => "nd-router-solicit".to_owned(),
        134 => "nd-router-advert".to_owned(),
        135 => "nd-neighbor-solicit".to_owned(),
        136 => "nd-neighbor-advert".to_owned(),
        137 => "nd-redirect".to_owned(),
        n => n.to_string(),
    }
}

fn ct_state_text(mask: u32) -> String {
    let names = [
        (ct_state::INVALID, "invalid"),
        (ct_state::ESTABLISHED, "established"),
        (ct_state::RELATED, "related"),
        (8, "new"),
        (64, "untracked"),
    ];
    names
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn match_text(m: &Match) -> String {
    match m {
        Match::IifLoopback => "iif \"lo\"".to_owned(),
        Match::OifLoopback => "oif \"lo\"".to_owned(),
        Match::IifName(n) => format!("iifname \"{n}\""),
        Match::OifName(n) => format!("oifname \"{n}\""),
        Match::OifNameNot(n) => format!("oifname != \"{n}\""),
        Match::Saddr(net) => addr("saddr", net),
        Match::Daddr(net) => addr("daddr", net),
        Match::L4Proto(p) => format!("meta l4proto {}", l4_name(*p)),
        Match::Sport(p, r) => format!("{} sport {r}", l4_name(*p)),
        Match::Dport(p, r) => format!("{} dport {r}", l4_name(*p)),
        Match::IcmpType(t) => format!("icmp type {}", icmp_type_name(*t)),
        Match::Icmpv6Type(t) => format!("icmpv6 type {}", icmpv6_type_name(*t)),
        Match::CtState(mask) => format!("ct state {}", ct_state_text(*mask)),
    }
}

fn statement_text(s: &Statement) -> String {
    match s {
        Statement::Limit { rate, per } => {
            let unit = match per {
                Per::Second => "second",
                Per::Minute => "minute",
            };
            format!("limit rate {rate}/{unit}")
        }
        Statement::Log { prefix } => format!("log prefix \"{prefix}\""),
        Statement::Counter => "counter packets 0 bytes 0".to_owned(),
        Statement::Masquerade => "masquerade".to_owned(),
        Statement::Accept => "accept".to_owned(),
        Statement::Drop => "drop".to_owned(),
    }
}

/// Normalises `nft list ruleset` output (or a rendering) for comparison: counters zeroed,
/// trailing blanks and empty lines removed.
pub fn normalise(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        let mut i = 0;
        while i + 1 < words.len() {
            let is_count = words.get(i).is_some_and(|w| w == "packets" || w == "bytes")
                && words
                    .get(i + 1)
                    .is_some_and(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_digit()));
            if is_count {
                if let Some(w) = words.get_mut(i + 1) {
                    *w = "0".to_owned();
                }
            }
            i += 1;
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::plan::{
        plan,
        tests_support::{firewall, FULL},
    };
    use super::*;
    use rampart_config::firewall::Firewall;
    use std::path::PathBuf;

    fn golden_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/firewall/golden")
    }

    /// Compares with a golden file; `RAMPART_BLESS=1` rewrites it.
    fn golden(name: &str, text: &str) {
        let path = golden_dir().join(name);
        if std::env::var_os("RAMPART_BLESS").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with RAMPART_BLESS=1)", path.display()));
        assert_eq!(text, want, "{name} differs from the golden file");
    }

    #[test]
    fn default_golden() {
        golden("default.nft", &render(&plan(&Firewall::default())));
    }

    #[test]
    fn full_golden() {
        golden("full.nft", &render(&plan(&firewall(FULL))));
    }

    #[test]
    fn normalise_counters() {
        let a = "\t\tcounter packets 12 bytes 3400 drop\n\n";
        assert_eq!(normalise(a), "\t\tcounter packets 0 bytes 0 drop\n");
    }

    #[test]
    fn rule_texts() {
        let cases: &[(Match, &str)] = &[
            (Match::IifLoopback, "iif \"lo\""),
            (Match::CtState(6), "ct state established,related"),
            (Match::CtState(1), "ct state invalid"),
            (Match::L4Proto(L4::Icmpv6), "meta l4proto ipv6-icmp"),
            (Match::Icmpv6Type(135), "icmpv6 type nd-neighbor-solicit"),
            (Match::IcmpType(17), "icmp type address-mask-request"),
            (
                Match::Saddr(Cidr::try_from("10.1.0.0/16").unwrap()),
                "ip saddr 10.1.0.0/16",
            ),
            (
                Match::Daddr(Cidr::try_from("::1").unwrap()),
                "ip6 daddr ::1",
            ),
        ];
        for (m, want) in cases {
            assert_eq!(match_text(m), *want);
        }
    }
}
