//! Reading the live ruleset back over nf_tables netlink, for the compliance self-check.
//!
//! Two dumps in the inet family: `NFT_MSG_GETCHAIN` (each chain's table, name, type, hook,
//! priority and policy) and `NFT_MSG_GETRULE` (each rule's table and chain, counted per chain).
//! [`summarise`] keeps the chains of one table; [`expected`] gives the same summary for a
//! planned [`Ruleset`], so that the audit compares like with like. Parsing is pure and tested
//! over encoded messages; [`read_table`] is the thin socket layer.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::netlink::msg::{Buf, NLMSG_HDRLEN, NLM_F_REQUEST};
use super::netlink::{NFNL_SUBSYS_NFTABLES, NFPROTO_INET};
use super::plan::{ChainKind, Hook, Policy, Ruleset};

/// `NFT_MSG_NEWCHAIN` (the type of chain dump replies).
pub const NFT_MSG_NEWCHAIN: u16 = 3;
/// `NFT_MSG_GETCHAIN`.
pub const NFT_MSG_GETCHAIN: u16 = 4;
/// `NFT_MSG_NEWRULE` (the type of rule dump replies).
pub const NFT_MSG_NEWRULE: u16 = 6;
/// `NFT_MSG_GETRULE`.
pub const NFT_MSG_GETRULE: u16 = 7;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// The size of `struct nfgenmsg`.
const NFGENMSG_LEN: usize = 4;

/// Why the live ruleset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadbackError {
    /// The socket could not be opened, bound or written.
    #[error("nfnetlink {step}: {source}")]
    Socket {
        /// The failing call.
        step: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The kernel answered a dump with an error.
    #[error("dump {what}: {source}")]
    Refused {
        /// What was dumped.
        what: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// A reply did not parse.
    #[error("malformed dump reply: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

/// One chain as the kernel reports it, or as a plan says it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Its name.
    pub name: String,
    /// `filter`, `nat`, ...
    pub kind: String,
    /// The netfilter hook number (`NF_INET_*`), for a base chain.
    pub hook: Option<u32>,
    /// The hook priority, for a base chain.
    pub priority: Option<i32>,
    /// The policy (`NF_DROP` 0, `NF_ACCEPT` 1), for a base chain.
    pub policy: Option<u32>,
    /// The number of rules in it.
    pub rules: usize,
}

impl ChainSummary {
    /// `filter hook input priority 0 policy drop, 12 rules`.
    pub fn describe(&self) -> String {
        let hook = match self.hook {
            Some(0) => "prerouting".to_owned(),
            Some(1) => "input".to_owned(),
            Some(2) => "forward".to_owned(),
            Some(3) => "output".to_owned(),
            Some(4) => "postrouting".to_owned(),
            Some(n) => format!("hook{n}"),
            None => "none".to_owned(),
        };
        let policy = match self.policy {
            Some(0) => "drop",
            Some(1) => "accept",
            Some(_) => "other",
            None => "none",
        };
        format!(
            "{} hook {hook} priority {} policy {policy}, {} rules",
            self.kind,
            self.priority
                .map_or_else(|| "none".to_owned(), |p| p.to_string()),
            self.rules
        )
    }
}

/// One parsed dump message: the table it belongs to and its attributes of interest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DumpItem {
    /// The nfgenmsg family.
    pub family: u8,
    /// `NFTA_*_TABLE`.
    pub table: String,
    /// The chain name (`NFTA_CHAIN_NAME` or `NFTA_RULE_CHAIN`).
    pub chain: String,
    /// `NFTA_CHAIN_TYPE`.
    pub kind: Option<String>,
    /// `NFTA_HOOK_HOOKNUM`.
    pub hook: Option<u32>,
    /// `NFTA_HOOK_PRIORITY`.
    pub priority: Option<i32>,
    /// `NFTA_CHAIN_POLICY`.
    pub policy: Option<u32>,
}

/// What one datagram of a dump held.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DumpPart {
    /// Chains (`NEWCHAIN`) and rules (`NEWRULE`), in order: `(is_rule, item)`.
    pub items: Vec<(bool, DumpItem)>,
    /// Whether `NLMSG_DONE` was seen.
    pub done: bool,
    /// A negative errno from `NLMSG_ERROR`, if any.
    pub error: Option<i32>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2)
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map(u16::from_ne_bytes)
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_ne_bytes)
}

fn u32_be(b: &[u8]) -> Option<u32> {
    b.get(..4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches('\0').to_owned()
}

/// Iterates over the attributes in `b`: `(type without flags, payload)`.
fn attrs(b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 4 <= b.len() {
        let len = usize::from(u16_at(b, at).unwrap_or(0));
        let ty = u16_at(b, at + 2).unwrap_or(0) & 0x3fff;
        if len < 4 || at + len > b.len() {
            break;
        }
        out.push((ty, b.get(at + 4..at + len).unwrap_or(&[])));
        at += super::netlink::msg::align(len);
    }
    out
}

/// Parses one datagram of a chain or rule dump.
pub fn parse_dump(data: &[u8]) -> Result<DumpPart, ReadbackError> {
    let bad = |reason: &str| ReadbackError::Malformed {
        reason: reason.to_owned(),
    };
    let mut part = DumpPart::default();
    let mut at = 0usize;
    while at + NLMSG_HDRLEN <= data.len() {
        let len = u32_ne(data, at).ok_or_else(|| bad("short header"))? as usize;
        let ty = u16_at(data, at + 4).ok_or_else(|| bad("short header"))?;
        if len < NLMSG_HDRLEN || at + len > data.len() {
            return Err(bad("message length out of range"));
        }
        let body = data.get(at + NLMSG_HDRLEN..at + len).unwrap_or(&[]);
        match ty {
            NLMSG_DONE => part.done = true,
            NLMSG_ERROR => {
                let errno = u32_ne(body, 0).ok_or_else(|| bad("short error message"))? as i32;
                if errno != 0 {
                    part.error = Some(errno);
                }
            }
            _ if ty >> 8 == NFNL_SUBSYS_NFTABLES => {
                let msg = ty & 0xff;
                let is_rule = msg == NFT_MSG_NEWRULE;
                if msg == NFT_MSG_NEWCHAIN || is_rule {
                    let family = body.first().copied().unwrap_or(0);
                    let mut item = DumpItem {
                        family,
                        ..DumpItem::default()
                    };
                    for (aty, v) in attrs(body.get(NFGENMSG_LEN..).unwrap_or(&[])) {
                        match (is_rule, aty) {
                            (_, 1) => item.table = string(v),
                            (false, 3) | (true, 2) => item.chain = string(v),
                            (false, 7) => item.kind = Some(string(v)),
                            (false, 5) => item.policy = u32_be(v),
                            (false, 4) => {
                                for (hty, hv) in attrs(v) {
                                    match hty {
                                        1 => item.hook = u32_be(hv),
                                        2 => item.priority = u32_be(hv).map(|p| p as i32),
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    part.items.push((is_rule, item));
                }
            }
            _ => {}
        }
        at += super::netlink::msg::align(len);
    }
    Ok(part)
}

/// The chains of `table` (inet family) with their rule counts, in dump order.
pub fn summarise(table: &str, items: &[(bool, DumpItem)]) -> Vec<ChainSummary> {
    let mut chains: Vec<ChainSummary> = items
        .iter()
        .filter(|(is_rule, i)| !is_rule && i.table == table && i.family == NFPROTO_INET)
        .map(|(_, i)| ChainSummary {
            name: i.chain.clone(),
            kind: i.kind.clone().unwrap_or_default(),
            hook: i.hook,
            priority: i.priority,
            policy: i.policy,
            rules: 0,
        })
        .collect();
    for (_, r) in items
        .iter()
        .filter(|(is_rule, i)| *is_rule && i.table == table && i.family == NFPROTO_INET)
    {
        if let Some(c) = chains.iter_mut().find(|c| c.name == r.chain) {
            c.rules += 1;
        }
    }
    chains
}

/// The summary a planned ruleset must read back as.
pub fn expected(rs: &Ruleset) -> Vec<ChainSummary> {
    rs.chains
        .iter()
        .map(|c| ChainSummary {
            name: c.name.clone(),
            kind: match c.kind {
                ChainKind::Filter => "filter".to_owned(),
                ChainKind::Nat => "nat".to_owned(),
            },
            hook: Some(match c.hook {
                Hook::Input => 1,
                Hook::Forward => 2,
                Hook::Output => 3,
                Hook::Postrouting => 4,
            }),
            priority: Some(c.priority),
            policy: Some(match c.policy {
                Policy::Drop => 0,
                Policy::Accept => 1,
            }),
            rules: c.rules.len(),
        })
        .collect()
}

/// A dump request of `msg` for the inet family.
pub fn dump_request(msg: u16, seq: u32) -> Vec<u8> {
    let mut b = Buf::new();
    let s = b.begin_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | msg,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
    );
    b.end_msg(s);
    b.into_bytes()
}

fn open_socket() -> Result<OwnedFd, ReadbackError> {
    crate::netlink::open(
        libc::NETLINK_NETFILTER,
        crate::netlink::Options {
            bind: false,
            cap_ack: None,
            ext_ack: false,
            recv_timeout: std::time::Duration::from_secs(5),
        },
    )
    .map_err(|(step, source)| ReadbackError::Socket { step, source })
}

/// Sends one dump request and collects every item until `NLMSG_DONE`.
fn dump(
    fd: &OwnedFd,
    msg: u16,
    what: &'static str,
) -> Result<Vec<(bool, DumpItem)>, ReadbackError> {
    let req = dump_request(msg, 1);
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (pid 0: the kernel).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `req` and `kernel` are valid for the given lengths during the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(ReadbackError::Socket {
            step: "sendto",
            source: io::Error::last_os_error(),
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut items = Vec::new();
    loop {
        // SAFETY: `buf` is valid for writes of its length during the call.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ReadbackError::Socket {
                step: "recv",
                source: e,
            });
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            return Err(ReadbackError::Malformed {
                reason: format!("{what}: empty reply"),
            });
        }
        let part = parse_dump(buf.get(..n).unwrap_or(&[]))?;
        if let Some(errno) = part.error {
            return Err(ReadbackError::Refused {
                what,
                source: io::Error::from_raw_os_error(errno.saturating_abs()),
            });
        }
        items.extend(part.items);
        if part.done {
            return Ok(items);
        }
    }
}

/// Reads the chains of the inet table `table` in the calling thread's network namespace;
/// `Ok(None)` when the table has no chain (it does not exist).
pub fn read_table(table: &str) -> Result<Option<Vec<ChainSummary>>, ReadbackError> {
    let fd = open_socket()?;
    let mut items = dump(&fd, NFT_MSG_GETCHAIN, "chains")?;
    if summarise(table, &items).is_empty() {
        return Ok(None);
    }
    items.extend(dump(&fd, NFT_MSG_GETRULE, "rules")?);
    Ok(Some(summarise(table, &items)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a reply message the way the kernel does.
    fn reply(buf: &mut Buf, msg: u16, f: impl FnOnce(&mut Buf)) {
        let s = buf.begin_msg((NFNL_SUBSYS_NFTABLES << 8) | msg, 0x2, 1, NFPROTO_INET, 0);
        f(buf);
        buf.end_msg(s);
    }

    fn chain(buf: &mut Buf, table: &str, name: &str, hook: u32, prio: i32, policy: u32) {
        reply(buf, NFT_MSG_NEWCHAIN, |b| {
            b.attr_str(1, table);
            b.attr_u64(2, 7); // NFTA_CHAIN_HANDLE
            b.attr_str(3, name);
            b.nest(4, |b| {
                b.attr_u32(1, hook);
                b.attr(2, &prio.to_be_bytes());
            });
            b.attr_u32(5, policy);
            b.attr_str(7, "filter");
        });
    }

    fn rule(buf: &mut Buf, table: &str, chain: &str) {
        reply(buf, NFT_MSG_NEWRULE, |b| {
            b.attr_str(1, table);
            b.attr_str(2, chain);
            b.attr_u64(3, 9);
        });
    }

    fn done(buf: &mut Buf) {
        let s = buf.begin_msg(NLMSG_DONE, 0x2, 1, 0, 0);
        buf.end_msg(s);
    }

    #[test]
    fn chains_and_rules_are_summarised_per_table() {
        let mut b = Buf::new();
        chain(&mut b, "rampart", "input", 1, 0, 0);
        chain(&mut b, "other", "input", 1, -10, 1);
        chain(&mut b, "rampart", "output", 3, 0, 0);
        rule(&mut b, "rampart", "input");
        rule(&mut b, "rampart", "input");
        rule(&mut b, "other", "input");
        rule(&mut b, "rampart", "output");
        done(&mut b);
        let part = parse_dump(b.bytes()).unwrap();
        assert!(part.done);
        assert_eq!(part.error, None);
        assert_eq!(part.items.len(), 7);
        let s = summarise("rampart", &part.items);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].describe(),
            "filter hook input priority 0 policy drop, 2 rules"
        );
        assert_eq!(
            s[1].describe(),
            "filter hook output priority 0 policy drop, 1 rules"
        );
        let o = summarise("other", &part.items);
        assert_eq!(
            o[0].describe(),
            "filter hook input priority -10 policy accept, 1 rules"
        );
        assert!(summarise("missing", &part.items).is_empty());
    }

    #[test]
    fn errors_are_reported() {
        let mut b = Buf::new();
        let s = b.begin_msg(NLMSG_ERROR, 0, 1, 0, 0);
        b.end_msg(s);
        // The nfgenmsg bytes written by begin_msg stand in for the errno field: patch it.
        let mut bytes = b.into_bytes();
        bytes[NLMSG_HDRLEN..NLMSG_HDRLEN + 4].copy_from_slice(&(-1i32).to_ne_bytes());
        let part = parse_dump(&bytes).unwrap();
        assert_eq!(part.error, Some(-1));
        assert!(parse_dump(&[16, 0, 0, 0, 1, 0]).is_ok());
        let mut bad = vec![0u8; 16];
        bad[0] = 200;
        assert!(parse_dump(&bad).is_err());
    }

    #[test]
    fn plan_summary_matches_the_planned_chains() {
        let cfg = rampart_config::parse("", std::path::Path::new("host.toml")).unwrap();
        let rs = crate::firewall::plan(&cfg);
        let e = expected(&rs);
        assert_eq!(e.len(), rs.chains.len());
        for (s, c) in e.iter().zip(&rs.chains) {
            assert_eq!(s.name, c.name);
            assert_eq!(s.rules, c.rules.len());
            assert_eq!(s.policy, Some(0), "{} drops by default", s.name);
        }
        let req = dump_request(NFT_MSG_GETRULE, 1);
        assert_eq!(req.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        assert_eq!(
            u16_at(&req, 4),
            Some((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE)
        );
        assert_eq!(u16_at(&req, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
    }
}
