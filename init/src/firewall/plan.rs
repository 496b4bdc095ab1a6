//! The ruleset as plain data, planned from the validated `[firewall]` section.
//!
//! One `inet` table, [`TABLE`], holds three filter base chains (`input`, `forward`, `output`,
//! each `policy drop`) and, with bridged containers, a `postrouting` nat chain. Every rule is a
//! list of [`Match`]es followed by [`Statement`]s; [`super::render`] prints it as `nft` syntax and
//! [`super::netlink`] encodes it as nf_tables expressions. The plan is pure: the same config
//! always gives the same ruleset.

use rampart_config::firewall::{
    Cidr, Direction, Firewall, InterfaceName, PortRange, Protocol, Rule as UserRule, Verdict,
};

/// The name of the one table rampart owns.
pub const TABLE: &str = "rampart";
/// The prefix of logged drops (`log prefix "rampart-drop: "`).
pub const LOG_PREFIX: &str = "rampart-drop: ";
/// The burst nft gives a packet limit when none is written (and omits when printing).
pub const LIMIT_BURST: u32 = 5;

/// A planned ruleset: one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The table name ([`TABLE`]).
    pub table: String,
    /// Base chains, in the order they are created and printed.
    pub chains: Vec<Chain>,
}

impl Ruleset {
    /// The number of rules in every chain.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

/// A base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Its name (`input`, `forward`, `output`, `postrouting`).
    pub name: String,
    /// `filter` or `nat`.
    pub kind: ChainKind,
    /// The netfilter hook.
    pub hook: Hook,
    /// The hook priority (0 for filter, 100 for source nat).
    pub priority: i32,
    /// What happens to packets no rule decides.
    pub policy: Policy,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// A base chain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// `type filter`.
    Filter,
    /// `type nat`.
    Nat,
}

/// A netfilter hook of the inet family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `input` (`NF_INET_LOCAL_IN`).
    Input,
    /// `forward` (`NF_INET_FORWARD`).
    Forward,
    /// `output` (`NF_INET_LOCAL_OUT`).
    Output,
    /// `postrouting` (`NF_INET_POST_ROUTING`).
    Postrouting,
}

/// A base chain policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `policy accept`.
    Accept,
    /// `policy drop`.
    Drop,
}

/// A rule: every match must hold, then the statements run in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The matches, in evaluation (and printing) order.
    pub matches: Vec<Match>,
    /// The statements; a verdict, when present, is last.
    pub statements: Vec<Statement>,
    /// A comment stored with the rule.
    pub comment: Option<String>,
}

/// A layer 4 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
}

impl L4 {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
            L4::Icmp => 1,
            L4::Icmpv6 => 58,
        }
    }
}

/// `ct state` bits (`NF_CT_STATE_*`).
pub mod ct_state {
    /// `invalid`.
    pub const INVALID: u32 = 1;
    /// `established`.
    pub const ESTABLISHED: u32 = 2;
    /// `related`.
    pub const RELATED: u32 = 4;
}

/// ICMP types the plan names.
pub mod icmp {
    /// `timestamp-request`.
    pub const TIMESTAMP_REQUEST: u8 = 13;
    /// `address-mask-request`.
    pub const ADDRESS_MASK_REQUEST: u8 = 17;
}

/// ICMPv6 neighbour discovery types.
pub mod icmpv6 {
    /// `nd-router-solicit`.
    pub const ND_ROUTER_SOLICIT: u8 = 133;
    /// `nd-router-advert`.
    pub const ND_ROUTER_ADVERT: u8 = 134;
    /// `nd-neighbor-solicit`.
    pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
    /// `nd-neighbor-advert`.
    pub const ND_NEIGHBOR_ADVERT: u8 = 136;
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `iif "lo"`: arrived on the loopback interface (ifindex 1 in every namespace).
    IifLoopback,
    /// `oif "lo"`: leaves on the loopback interface.
    OifLoopback,
    /// `iifname "NAME"`.
    IifName(InterfaceName),
    /// `oifname "NAME"`.
    OifName(InterfaceName),
    /// `oifname != "NAME"`.
    OifNameNot(InterfaceName),
    /// `ip saddr NET` or `ip6 saddr NET`.
    Saddr(Cidr),
    /// `ip daddr NET` or `ip6 daddr NET`.
    Daddr(Cidr),
    /// `meta l4proto PROTO`.
    L4Proto(L4),
    /// `tcp sport RANGE` or `udp sport RANGE`.
    Sport(L4, PortRange),
    /// `tcp dport RANGE` or `udp dport RANGE`.
    Dport(L4, PortRange),
    /// `icmp type TYPE`.
    IcmpType(u8),
    /// `icmpv6 type TYPE`.
    Icmpv6Type(u8),
    /// `ct state STATES` (a mask of [`ct_state`] bits; any of them matches).
    CtState(u32),
}

/// The unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
}

impl Per {
    /// Seconds in the unit.
    pub fn seconds(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
        }
    }
}

/// A statement of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `limit rate N/UNIT` (packets, burst [`LIMIT_BURST`]): later statements run only for
    /// packets within the rate.
    Limit {
        /// Packets per unit.
        rate: u32,
        /// The unit.
        per: Per,
    },
    /// `log prefix "PREFIX"`.
    Log {
        /// The prefix.
        prefix: String,
    },
    /// `counter`.
    Counter,
    /// `masquerade`.
    Masquerade,
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
}

fn rule(matches: Vec<Match>, statements: Vec<Statement>) -> Rule {
    Rule {
        matches,
        statements,
        comment: None,
    }
}

fn verdict(v: Verdict) -> Statement {
    match v {
        Verdict::Accept => Statement::Accept,
        Verdict::Drop => Statement::Drop,
    }
}

/// Plans the ruleset of a host.
pub fn plan(fw: &Firewall) -> Ruleset {
    let mut input = Vec::new();
    let mut forward = Vec::new();
    let mut output = Vec::new();

    // Loopback: everything on lo; loopback addresses nowhere else.
    input.push(rule(vec![Match::IifLoopback], vec![Statement::Accept]));
    output.push(rule(vec![Match::OifLoopback], vec![Statement::Accept]));
    let lo4 = Cidr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0), 8);
    let lo6 = Cidr::V6(std::net::Ipv6Addr::LOCALHOST, 128);
    for net in [lo4, lo6] {
        input.push(rule(vec![Match::Saddr(net)], vec![Statement::Drop]));
        input.push(rule(vec![Match::Daddr(net)], vec![Statement::Drop]));
    }

    // Neighbour discovery, before conntrack: the kernel does not track it.
    let nd_in = [
        icmpv6::ND_ROUTER_ADVERT,
        icmpv6::ND_NEIGHBOR_SOLICIT,
        icmpv6::ND_NEIGHBOR_ADVERT,
    ];
    let nd_out = [
        icmpv6::ND_ROUTER_SOLICIT,
        icmpv6::ND_NEIGHBOR_SOLICIT,
        icmpv6::ND_NEIGHBOR_ADVERT,
    ];
    for t in nd_in {
        input.push(rule(vec![Match::Icmpv6Type(t)], vec![Statement::Accept]));
    }
    for t in nd_out {
        output.push(rule(vec![Match::Icmpv6Type(t)], vec![Statement::Accept]));
    }

    // Conntrack, in every chain.
    for chain in [&mut input, &mut forward, &mut output] {
        chain.push(rule(
            vec![Match::CtState(ct_state::ESTABLISHED | ct_state::RELATED)],
            vec![Statement::Accept],
        ));
        chain.push(rule(
            vec![Match::CtState(ct_state::INVALID)],
            vec![Statement::Drop],
        ));
    }

    // ICMP: no timestamp or address-mask requests; the rest rate-limited.
    for t in [icmp::TIMESTAMP_REQUEST, icmp::ADDRESS_MASK_REQUEST] {
        input.push(rule(vec![Match::IcmpType(t)], vec![Statement::Drop]));
    }
    for chain in [&mut input, &mut output] {
        for proto in [L4::Icmp, L4::Icmpv6] {
            chain.push(rule(
                vec![Match::L4Proto(proto)],
                vec![
                    Statement::Limit {
                        rate: fw.icmp_rate,
                        per: Per::Second,
                    },
                    Statement::Accept,
                ],
            ));
        }
    }

    // DHCPv4 client: requests go out from 68 to 67, offers come back (often broadcast, so
    // conntrack does not see them as replies).
    if fw.dhcp_client {
        let port =
            |n: u16| rampart_config::firewall::Port::try_from(i64::from(n)).map(PortRange::single);
        if let (Ok(p67), Ok(p68)) = (port(67), port(68)) {
            output.push(rule(
                vec![Match::Sport(L4::Udp, p68), Match::Dport(L4::Udp, p67)],
                vec![Statement::Accept],
            ));
            input.push(rule(
                vec![Match::Sport(L4::Udp, p67), Match::Dport(L4::Udp, p68)],
                vec![Statement::Accept],
            ));
        }
    }

    // DNS to the configured resolvers; answers come back as established.
    if let Ok(p53) = rampart_config::firewall::Port::try_from(53).map(PortRange::single) {
        for resolver in &fw.dns {
            for proto in [L4::Udp, L4::Tcp] {
                output.push(rule(
                    vec![
                        Match::Daddr(Cidr::host(*resolver)),
                        Match::Dport(proto, p53),
                    ],
                    vec![Statement::Accept],
                ));
            }
        }
    }

    // Containers: out of the bridge from the subnet; answers are established.
    let mut postrouting = Vec::new();
    if let Some(c) = &fw.containers {
        for net in std::iter::once(c.subnet).chain(c.subnet6) {
            forward.push(rule(
                vec![Match::IifName(c.bridge.clone()), Match::Saddr(net)],
                vec![Statement::Accept],
            ));
            postrouting.push(rule(
                vec![Match::OifNameNot(c.bridge.clone()), Match::Saddr(net)],
                vec![Statement::Masquerade],
            ));
        }
    }

    // User rules, in file order.
    for r in &fw.rules {
        let chain = match r.direction {
            Direction::In => &mut input,
            Direction::Out => &mut output,
            Direction::Forward => &mut forward,
        };
        chain.extend(user_rules(r));
    }

    // Drops: optionally logged, always counted.
    for chain in [&mut input, &mut forward, &mut output] {
        if fw.log_drops {
            chain.push(rule(
                Vec::new(),
                vec![
                    Statement::Limit {
                        rate: fw.log_rate,
                        per: Per::Minute,
                    },
                    Statement::Log {
                        prefix: LOG_PREFIX.to_owned(),
                    },
                ],
            ));
        }
        chain.push(rule(Vec::new(), vec![Statement::Counter, Statement::Drop]));
    }

    let filter = |name: &str, hook: Hook, rules: Vec<Rule>| Chain {
        name: name.to_owned(),
        kind: ChainKind::Filter,
        hook,
        priority: 0,
        policy: Policy::Drop,
        rules,
    };
    let mut chains = vec![
        filter("input", Hook::Input, input),
        filter("forward", Hook::Forward, forward),
        filter("output", Hook::Output, output),
    ];
    if fw.containers.is_some() {
        chains.push(Chain {
            name: "postrouting".to_owned(),
            kind: ChainKind::Nat,
            hook: Hook::Postrouting,
            priority: 100,
            policy: Policy::Accept,
            rules: postrouting,
        });
    }
    Ruleset {
        table: TABLE.to_owned(),
        chains,
    }
}

/// The nftables rules of one user rule: one per combination of its alternatives.
pub fn user_rules(r: &UserRule) -> Vec<Rule> {
    let proto = match r.protocol {
        Protocol::Any => None,
        Protocol::Tcp => Some(L4::Tcp),
        Protocol::Udp => Some(L4::Udp),
        Protocol::Icmp => Some(L4::Icmp),
        Protocol::Icmpv6 => Some(L4::Icmpv6),
    };
    r.matches()
        .into_iter()
        .map(|m| {
            let mut matches = Vec::new();
            if let Some(i) = &r.in_interface {
                matches.push(Match::IifName(i.clone()));
            }
            if let Some(o) = &r.out_interface {
                matches.push(Match::OifName(o.clone()));
            }
            if let Some(s) = m.source {
                matches.push(Match::Saddr(s));
            }
            if let Some(d) = m.destination {
                matches.push(Match::Daddr(d));
            }
            if let Some(p) = proto {
                if m.source_port.is_none() && m.port.is_none() {
                    matches.push(Match::L4Proto(p));
                }
                if let Some(sp) = m.source_port {
                    matches.push(Match::Sport(p, sp));
                }
                if let Some(dp) = m.port {
                    matches.push(Match::Dport(p, dp));
                }
            }
            Rule {
                matches,
                statements: vec![verdict(r.action)],
                comment: r.comment.clone(),
            }
        })
        .collect()
}

/// Kernel modules the ruleset needs on a modular kernel (Debian's 6.1), in load order; the
/// `[kernel] modules` list of a host must hold them (dependencies are resolved by
/// `rampart-image`).
pub fn required_modules(rs: &Ruleset) -> Vec<&'static str> {
    let mut out = vec!["nf_tables", "nft_ct", "nft_limit"];
    let statements = || {
        rs.chains
            .iter()
            .flat_map(|c| c.rules.iter())
            .flat_map(|r| r.statements.iter())
    };
    if statements().any(|s| matches!(s, Statement::Log { .. })) {
        out.extend(["nft_log", "nf_log_syslog"]);
    }
    if rs.chains.iter().any(|c| c.kind == ChainKind::Nat) {
        out.extend(["nf_nat", "nft_chain_nat", "nft_masq"]);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests_support {
    use rampart_config::firewall::Firewall;
    use std::path::Path;

    /// The `[firewall]` section of a host TOML text.
    pub(crate) fn firewall(toml: &str) -> Firewall {
        match rampart_config::parse(toml, Path::new("host.toml")) {
            Ok(c) => c.firewall,
            Err(e) => panic!("{e}"),
        }
    }

    /// A host file using every `[firewall]` key.
    pub(crate) const FULL: &str = r#"
[firewall]
icmp_rate = 20
log_drops = true
log_rate = 6
dhcp_client = true
dns = ["192.0.2.53", "2001:db8::53"]

[firewall.containers]
bridge = "rampart0"
subnet = "10.88.0.0/16"
subnet6 = "fd00:88::/64"

[[firewall.rule]]
direction = "in"
protocol = "tcp"
ports = [22, "8000-8080"]
source = ["10.0.0.0/8", "2001:db8::/32"]
in_interface = "eth0"
action = "accept"
comment = "ssh and web"

[[firewall.rule]]
direction = "in"
protocol = "icmp"
source = ["172.16.0.0/12"]
action = "drop"

[[firewall.rule]]
direction = "out"
protocol = "udp"
destination = ["198.51.100.7"]
ports = [123]
out_interface = "eth0"
action = "accept"
comment = "ntp"

[[firewall.rule]]
direction = "forward"
protocol = "tcp"
source_ports = [1024]
ports = [443]
in_interface = "eth1"
out_interface = "eth0"
action = "accept"

[[firewall.rule]]
direction = "forward"
protocol = "udp"
source_ports = ["1000-2000"]
ports = [53]
action = "drop"

[[firewall.rule]]
direction = "forward"
destination = ["2001:db8:1234::/47"]
action = "drop"
"#;
}

#[cfg(test)]
mod tests {
    use super::tests_support::firewall;
    use super::*;

    #[test]
    fn default_ruleset_shape() {
        let rs = plan(&Firewall::default());
        assert_eq!(rs.table, "rampart");
        let names: Vec<&str> = rs.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["input", "forward", "output"]);
        for c in &rs.chains {
            assert_eq!(c.policy, Policy::Drop);
            assert_eq!(c.kind, ChainKind::Filter);
            assert_eq!(c.priority, 0);
            let last = c.rules.last().unwrap();
            assert_eq!(last.statements, [Statement::Counter, Statement::Drop]);
            assert!(last.matches.is_empty());
        }
        let input = &rs.chains[0];
        assert_eq!(input.rules[0].matches, [Match::IifLoopback]);
        // The timestamp request drop comes before the generic ICMP accept.
        let pos = |m: &Match| {
            input
                .rules
                .iter()
                .position(|r| r.matches.first() == Some(m))
        };
        assert!(
            pos(&Match::IcmpType(icmp::TIMESTAMP_REQUEST)).unwrap()
                < pos(&Match::L4Proto(L4::Icmp)).unwrap()
        );
        assert_eq!(required_modules(&rs), ["nf_tables", "nft_ct", "nft_limit"]);
    }

    #[test]
    fn options_add_rules() {
        let base = plan(&Firewall::default());
        let cases: &[(&str, [isize; 4])] = &[
            ("[firewall]\ndhcp_client = true\n", [1, 0, 1, 0]),
            ("[firewall]\ndns = [\"192.0.2.53\", \"2001:db8::53\"]\n", [0, 0, 4, 0]),
            ("[firewall]\nlog_drops = true\n", [1, 1, 1, 0]),
            (
                "[firewall.containers]\nbridge = \"br0\"\nsubnet = \"10.88.0.0/16\"\nsubnet6 = \"fd00:88::/64\"\n",
                [0, 2, 0, 2],
            ),
            (
                "[[firewall.rule]]\ndirection = \"in\"\nprotocol = \"tcp\"\nports = [22, 80]\nsource = [\"10.0.0.0/8\", \"2001:db8::/32\"]\naction = \"accept\"\n",
                [4, 0, 0, 0],
            ),
        ];
        for (toml, delta) in cases {
            let rs = plan(&firewall(toml));
            for (i, d) in delta.iter().enumerate() {
                let got = rs.chains.get(i).map_or(0, |c| c.rules.len()) as isize;
                let want = base.chains.get(i).map_or(0, |c| c.rules.len()) as isize + d;
                assert_eq!(got, want, "{toml}: chain {i}");
            }
        }
    }

    #[test]
    fn user_rule_expansion() {
        let fw = firewall(
            r#"
[[firewall.rule]]
direction = "forward"
protocol = "udp"
source_ports = [53]
ports = ["1000-2000"]
source = ["10.0.0.0/8"]
destination = ["192.0.2.0/24", "2001:db8::/32"]
in_interface = "eth1"
out_interface = "eth0"
action = "drop"
comment = "no"
"#,
        );
        let rules = user_rules(&fw.rules[0]);
        assert_eq!(rules.len(), 1, "{rules:?}");
        let r = &rules[0];
        assert_eq!(r.comment.as_deref(), Some("no"));
        assert_eq!(r.statements, [Statement::Drop]);
        assert_eq!(r.matches.len(), 6);
        assert!(matches!(r.matches[0], Match::IifName(_)));
        assert!(matches!(r.matches[1], Match::OifName(_)));
        assert!(matches!(r.matches[4], Match::Sport(L4::Udp, _)));
        assert!(matches!(r.matches[5], Match::Dport(L4::Udp, _)));
    }

    #[test]
    fn containers_need_nat_modules() {
        let rs = plan(&firewall(
            "[firewall]\nlog_drops = true\n[firewall.containers]\nbridge = \"br0\"\nsubnet = \"10.88.0.0/16\"\n",
        ));
        assert_eq!(rs.chains[3].name, "postrouting");
        assert_eq!(rs.chains[3].policy, Policy::Accept);
        assert_eq!(
            required_modules(&rs),
            [
                "nf_tables",
                "nft_ct",
                "nft_limit",
                "nft_log",
                "nf_log_syslog",
                "nf_nat",
                "nft_chain_nat",
                "nft_masq"
            ]
        );
    }
}
