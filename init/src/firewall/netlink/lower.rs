//! Lowers a planned rule to nf_tables expressions, the way nft linearises the same `nft` text
//! (so that `nft list ruleset` prints our rendering back): family and protocol dependencies
//! (`meta nfproto`, `meta l4proto`) once per rule before the first header field that needs
//! them, byte-aligned prefixes as shorter loads, other prefixes through a bitwise mask, port
//! ranges as two comparisons, and an exact source port followed by an exact destination port
//! as one four-byte load.

use super::expr::{CmpOp, Expr, MetaKey, PayloadBase, VerdictCode};
use crate::firewall::plan::{Match, Per, Rule, Statement, L4, LIMIT_BURST};
use rampart_config::firewall::{Cidr, InterfaceName, PortRange};

/// `NFPROTO_IPV4`.
const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_IPV6`.
const NFPROTO_IPV6: u8 = 10;
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

#[derive(Default)]
struct State {
    nfproto: Option<u8>,
    l4: Option<u8>,
    out: Vec<Expr>,
}

impl State {
    fn meta_eq(&mut self, key: MetaKey, value: Vec<u8>) {
        self.out.push(Expr::Meta(key));
        self.out.push(Expr::Cmp(CmpOp::Eq, value));
    }

    fn nfproto(&mut self, p: u8) {
        if self.nfproto != Some(p) {
            self.nfproto = Some(p);
            self.meta_eq(MetaKey::NfProto, vec![p]);
        }
    }

    fn l4(&mut self, p: u8) {
        if self.l4 != Some(p) {
            self.l4 = Some(p);
            self.meta_eq(MetaKey::L4Proto, vec![p]);
        }
    }

    fn payload(&mut self, base: PayloadBase, offset: u32, len: u32) {
        self.out.push(Expr::Payload { base, offset, len });
    }

    fn addr(&mut self, net: Cidr, source: bool) {
        let (proto, offset, width) = match (net, source) {
            (Cidr::V4(..), true) => (NFPROTO_IPV4, 12, 4),
            (Cidr::V4(..), false) => (NFPROTO_IPV4, 16, 4),
            (Cidr::V6(..), true) => (NFPROTO_IPV6, 8, 16),
            (Cidr::V6(..), false) => (NFPROTO_IPV6, 24, 16),
        };
        self.nfproto(proto);
        let prefix = u32::from(net.prefix());
        let octets = net.octets();
        if prefix > 0 && prefix % 8 == 0 {
            let n = prefix / 8;
            self.payload(PayloadBase::Network, offset, n);
            let bytes = octets.get(..n as usize).unwrap_or(&octets).to_vec();
            self.out.push(Expr::Cmp(CmpOp::Eq, bytes));
        } else {
            self.payload(PayloadBase::Network, offset, width);
            let mask: Vec<u8> = (0..width)
                .map(|i| {
                    let bits = prefix.saturating_sub(i * 8).min(8);
                    // The top `bits` bits of the byte.
                    u8::try_from((0xff00u16 >> bits) & 0xff).unwrap_or(0)
                })
                .collect();
            self.out.push(Expr::Bitwise {
                xor: vec![0; mask.len()],
                mask,
            });
            self.out.push(Expr::Cmp(CmpOp::Eq, octets));
        }
    }

    fn ports(&mut self, proto: L4, offset: u32, r: PortRange) {
        self.l4(proto.number());
        self.payload(PayloadBase::Transport, offset, 2);
        if r.is_single() {
            self.out
                .push(Expr::Cmp(CmpOp::Eq, r.first().get().to_be_bytes().to_vec()));
        } else {
            self.out.push(Expr::Cmp(
                CmpOp::Gte,
                r.first().get().to_be_bytes().to_vec(),
            ));
            self.out
                .push(Expr::Cmp(CmpOp::Lte, r.last().get().to_be_bytes().to_vec()));
        }
    }

    fn ifname(&mut self, key: MetaKey, op: CmpOp, name: &InterfaceName) {
        let mut v = name.as_str().as_bytes().to_vec();
        v.resize(IFNAMSIZ, 0);
        self.out.push(Expr::Meta(key));
        self.out.push(Expr::Cmp(op, v));
    }

    fn icmp_type(&mut self, nfproto: u8, l4: u8, t: u8) {
        self.nfproto(nfproto);
        self.l4(l4);
        self.payload(PayloadBase::Transport, 0, 1);
        self.out.push(Expr::Cmp(CmpOp::Eq, vec![t]));
    }
}

/// The expressions of one rule.
pub fn lower(rule: &Rule) -> Vec<Expr> {
    let mut s = State::default();
    let mut matches = rule.matches.iter().peekable();
    while let Some(m) = matches.next() {
        match m {
            Match::IifLoopback => s.meta_eq(MetaKey::Iif, 1u32.to_ne_bytes().to_vec()),
            Match::OifLoopback => s.meta_eq(MetaKey::Oif, 1u32.to_ne_bytes().to_vec()),
            Match::IifName(n) => s.ifname(MetaKey::IifName, CmpOp::Eq, n),
            Match::OifName(n) => s.ifname(MetaKey::OifName, CmpOp::Eq, n),
            Match::OifNameNot(n) => s.ifname(MetaKey::OifName, CmpOp::Neq, n),
            Match::Saddr(net) => s.addr(*net, true),
            Match::Daddr(net) => s.addr(*net, false),
            Match::L4Proto(p) => s.l4(p.number()),
            Match::Sport(p, sp) => {
                // nft merges `sport X dport Y` (both exact) into one load of both fields.
                let merged = match matches.peek() {
                    Some(Match::Dport(q, dp)) if q == p && sp.is_single() && dp.is_single() => {
                        Some(*dp)
                    }
                    _ => None,
                };
                if let Some(dp) = merged {
                    matches.next();
                    s.l4(p.number());
                    s.payload(PayloadBase::Transport, 0, 4);
                    let mut v = sp.first().get().to_be_bytes().to_vec();
                    v.extend_from_slice(&dp.first().get().to_be_bytes());
                    s.out.push(Expr::Cmp(CmpOp::Eq, v));
                } else {
                    s.ports(*p, 0, *sp);
                }
            }
            Match::Dport(p, dp) => s.ports(*p, 2, *dp),
            Match::IcmpType(t) => s.icmp_type(NFPROTO_IPV4, L4::Icmp.number(), *t),
            Match::Icmpv6Type(t) => s.icmp_type(NFPROTO_IPV6, L4::Icmpv6.number(), *t),
            Match::CtState(mask) => {
                s.out.push(Expr::CtState);
                s.out.push(Expr::Bitwise {
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                s.out.push(Expr::Cmp(CmpOp::Neq, vec![0; 4]));
            }
        }
    }
    for st in &rule.statements {
        s.out.push(match st {
            Statement::Limit { rate, per } => Expr::Limit {
                rate: u64::from(*rate),
                unit: per_seconds(*per),
                burst: LIMIT_BURST,
            },
            Statement::Log { prefix } => Expr::Log {
                prefix: prefix.clone(),
            },
            Statement::Counter => Expr::Counter,
            Statement::Masquerade => Expr::Masq,
            Statement::Accept => Expr::Verdict(VerdictCode::Accept),
            Statement::Drop => Expr::Verdict(VerdictCode::Drop),
        });
    }
    s.out
}

fn per_seconds(p: Per) -> u64 {
    p.seconds()
}

/// The rule's comment as libnftnl user data (`NFTNL_UDATA_RULE_COMMENT` TLV).
pub fn comment_udata(comment: &str) -> Vec<u8> {
    let mut v = vec![0u8, u8::try_from(comment.len() + 1).unwrap_or(u8::MAX)];
    v.extend_from_slice(comment.as_bytes());
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks() {
        let r = Rule {
            matches: vec![Match::Saddr(Cidr::try_from("172.16.0.0/12").unwrap())],
            statements: vec![],
            comment: None,
        };
        let e = lower(&r);
        assert_eq!(
            e[3],
            Expr::Bitwise {
                mask: vec![0xff, 0xf0, 0, 0],
                xor: vec![0; 4]
            }
        );
        let r = Rule {
            matches: vec![Match::Saddr(Cidr::try_from("10.0.0.0/8").unwrap())],
            statements: vec![],
            comment: None,
        };
        assert_eq!(
            lower(&r)[2..],
            [
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset: 12,
                    len: 1
                },
                Expr::Cmp(CmpOp::Eq, vec![10])
            ]
        );
    }
}
