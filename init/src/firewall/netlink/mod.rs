//! nf_tables over netlink: the ruleset as one atomic nfnetlink batch, and the socket that sends
//! it and reads every acknowledgement.
//!
//! The batch is `NFNL_MSG_BATCH_BEGIN`, `NEWTABLE rampart` (creates the table, or does nothing
//! to an existing one), `DELTABLE rampart` (drops the old table with all its chains and rules),
//! `NEWTABLE rampart` again, the chains, the rules, and `NFNL_MSG_BATCH_END`. The kernel applies
//! it as one transaction: if any message fails, nothing changes. Kernel 6.1 has no
//! `DESTROYTABLE`, hence the create-then-delete pair. Every message but the batch markers
//! carries `NLM_F_ACK`, and [`Socket::send`] reads one acknowledgement per message.
//!
//! [`apply`] asks whether the table exists (`GETTABLE`); if not (the boot case) it sends the
//! cheaper [`encode_fresh`] batch (`NEWTABLE` with `NLM_F_EXCL`, no delete), else the replacing
//! one.

pub mod expr;
pub mod lower;
pub mod msg;
#[cfg(test)]
mod vectors;

use super::plan::{Chain, ChainKind, Hook, Policy, Rule, Ruleset};
use expr::Expr;
use msg::{Buf, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// `NFNL_SUBSYS_NFTABLES`.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN`.
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END`.
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFT_MSG_NEWTABLE`.
pub const NFT_MSG_NEWTABLE: u16 = 0;
/// `NFT_MSG_GETTABLE`.
pub const NFT_MSG_GETTABLE: u16 = 1;
/// `NFT_MSG_DELTABLE`.
pub const NFT_MSG_DELTABLE: u16 = 2;
/// `NFT_MSG_NEWCHAIN`.
pub const NFT_MSG_NEWCHAIN: u16 = 3;
/// `NFT_MSG_NEWRULE`.
pub const NFT_MSG_NEWRULE: u16 = 6;
/// `NFPROTO_INET`.
pub const NFPROTO_INET: u8 = 1;

const NLMSG_ERROR: u16 = 2;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Why the ruleset could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened or set up.
    #[error("open nfnetlink socket: {step}: {source}")]
    Socket {
        /// The failing call.
        step: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The batch could not be sent.
    #[error("send batch of {messages} messages ({bytes} bytes): {source}")]
    Send {
        /// Messages in the batch.
        messages: usize,
        /// Bytes in the batch.
        bytes: usize,
        /// The error.
        source: io::Error,
    },
    /// Reading the acknowledgements failed.
    #[error("read acknowledgements ({got} of {want} received): {source}")]
    Receive {
        /// Acknowledgements received so far.
        got: usize,
        /// Acknowledgements expected.
        want: usize,
        /// The error.
        source: io::Error,
    },
    /// The kernel refused a message; it rolled the whole batch back.
    #[error("kernel refused {op}: {source}{} (the batch was rolled back{})", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default(), if *more > 0 { format!("; {more} more errors") } else { String::new() })]
    Refused {
        /// What the message did (`add rule to chain input: tcp dport 22 accept`).
        op: String,
        /// The errno.
        source: io::Error,
        /// The kernel's extended ack message, if any.
        detail: Option<String>,
        /// How many other messages failed.
        more: usize,
    },
    /// A reply did not parse.
    #[error("malformed netlink reply: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

/// An encoded batch: bytes plus what each acknowledged message does.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    buf: Buf,
    /// `(sequence number, description)` of every message that asks for an ack.
    ops: Vec<(u32, String)>,
    next_seq: u32,
    end: Option<usize>,
}

impl Batch {
    /// An open batch (`NFNL_MSG_BATCH_BEGIN` written).
    pub fn begin() -> Self {
        let mut b = Batch {
            next_seq: 1,
            ..Batch::default()
        };
        let seq = b.seq();
        let s = b.buf.begin_msg(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        b.buf.end_msg(s);
        b
    }

    fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        s
    }

    /// Adds one nf_tables message; `f` writes its attributes.
    pub fn message(&mut self, ty: u16, flags: u16, op: String, f: impl FnOnce(&mut Buf)) {
        let seq = self.seq();
        let s = self.buf.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            NFPROTO_INET,
            0,
        );
        f(&mut self.buf);
        self.buf.end_msg(s);
        self.ops.push((seq, op));
    }

    /// `NEWTABLE name`.
    pub fn new_table(&mut self, name: &str) {
        self.message(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            format!("add table inet {name}"),
            |b| table_attrs(b, name),
        );
    }

    /// `DELTABLE name`.
    pub fn del_table(&mut self, name: &str) {
        self.message(
            NFT_MSG_DELTABLE,
            0,
            format!("delete table inet {name}"),
            |b| {
                b.attr_str(1, name) // NFTA_TABLE_NAME
            },
        );
    }

    /// `NEWCHAIN` for a base chain.
    pub fn new_chain(&mut self, table: &str, c: &Chain) {
        self.message(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            format!("add chain {}", c.name),
            |b| chain_attrs(b, table, c),
        );
    }

    /// `NEWRULE` appending `exprs` to `chain`.
    pub fn new_rule(
        &mut self,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: Option<&str>,
        op: String,
    ) {
        self.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, op, |b| {
            rule_attrs(b, table, chain, exprs, comment)
        });
    }

    /// Closes the batch (`NFNL_MSG_BATCH_END`) and returns it.
    pub fn end(mut self) -> Self {
        if self.end.is_none() {
            let seq = self.seq();
            let s = self.buf.begin_msg(
                NFNL_MSG_BATCH_END,
                NLM_F_REQUEST,
                seq,
                0,
                NFNL_SUBSYS_NFTABLES,
            );
            self.buf.end_msg(s);
            self.end = Some(s);
        }
        self
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        self.buf.bytes()
    }

    /// The number of messages that ask for an acknowledgement.
    pub fn acked_messages(&self) -> usize {
        self.ops.len()
    }

    fn describe(&self, seq: u32) -> String {
        self.ops
            .iter()
            .find(|(s, _)| *s == seq)
            .map_or_else(|| format!("message {seq}"), |(_, op)| op.clone())
    }
}

fn table_attrs(b: &mut Buf, name: &str) {
    b.attr_str(1, name); // NFTA_TABLE_NAME
    b.attr_u32(2, 0); // NFTA_TABLE_FLAGS
}

fn chain_attrs(b: &mut Buf, table: &str, c: &Chain) {
    b.attr_str(1, table); // NFTA_CHAIN_TABLE
    b.attr_str(3, &c.name); // NFTA_CHAIN_NAME
    b.attr_str(
        7,
        match c.kind {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        },
    ); // NFTA_CHAIN_TYPE
    b.attr_u32(
        5,
        match c.policy {
            Policy::Drop => 0,
            Policy::Accept => 1,
        },
    ); // NFTA_CHAIN_POLICY
    b.nest(4, |b| {
        // NFTA_CHAIN_HOOK
        let hook = match c.hook {
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        };
        b.attr_u32(1, hook); // NFTA_HOOK_HOOKNUM
        b.attr(2, &c.priority.to_be_bytes()); // NFTA_HOOK_PRIORITY
    });
}

fn rule_attrs(b: &mut Buf, table: &str, chain: &str, exprs: &[Expr], comment: Option<&str>) {
    b.attr_str(1, table); // NFTA_RULE_TABLE
    b.attr_str(2, chain); // NFTA_RULE_CHAIN
    b.nest(4, |b| {
        // NFTA_RULE_EXPRESSIONS
        for e in exprs {
            e.encode(b);
        }
    });
    if let Some(c) = comment {
        b.attr(7, &lower::comment_udata(c)); // NFTA_RULE_USERDATA
    }
}

/// Adds the messages that replace the table with `rs` (without the batch markers).
pub fn encode_into(batch: &mut Batch, rs: &Ruleset) {
    batch.new_table(&rs.table);
    batch.del_table(&rs.table);
    batch.new_table(&rs.table);
    encode_contents(batch, rs);
}

fn encode_contents(batch: &mut Batch, rs: &Ruleset) {
    for c in &rs.chains {
        batch.new_chain(&rs.table, c);
    }
    for c in &rs.chains {
        for (i, r) in c.rules.iter().enumerate() {
            add_rule(batch, &rs.table, &c.name, i, r);
        }
    }
}

fn add_rule(batch: &mut Batch, table: &str, chain: &str, i: usize, r: &Rule) {
    let op = format!(
        "add rule {} to chain {chain}: {}",
        i + 1,
        super::render::rule_text(r)
    );
    batch.new_rule(table, chain, &lower::lower(r), r.comment.as_deref(), op);
}

/// The complete batch that replaces the table with `rs`.
pub fn encode(rs: &Ruleset) -> Batch {
    let mut b = Batch::begin();
    encode_into(&mut b, rs);
    b.end()
}

/// The batch that creates the table only if it does not exist yet (`NLM_F_EXCL`): the boot
/// case. Deleting a table costs the kernel a grace period (about 10 ms), this batch does not.
pub fn encode_fresh(rs: &Ruleset) -> Batch {
    let mut b = Batch::begin();
    b.message(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE | NLM_F_EXCL,
        fresh_table_op(&rs.table),
        |m| table_attrs(m, &rs.table),
    );
    encode_contents(&mut b, rs);
    b.end()
}

fn fresh_table_op(table: &str) -> String {
    format!("create table inet {table}")
}

/// A netlink socket of the netfilter family.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// Opens and binds a `NETLINK_NETFILTER` socket (in the calling thread's network namespace).
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = crate::netlink::open(
            libc::NETLINK_NETFILTER,
            crate::netlink::Options {
                bind: true,
                cap_ack: Some(true),
                ext_ack: true,
                recv_timeout: std::time::Duration::from_secs(10),
            },
        )
        .map_err(|(step, source)| NetlinkError::Socket { step, source })?;
        Ok(Socket { fd })
    }

    /// Sizes the socket buffers for a batch of `bytes` bytes and `acks` acknowledgements.
    fn size_buffers(&self, bytes: usize, acks: usize) -> Result<(), NetlinkError> {
        let want_snd =
            libc::c_int::try_from(bytes.saturating_add(4096)).unwrap_or(libc::c_int::MAX);
        // An acknowledgement takes about 1 KiB of receive buffer (skb overhead included).
        let want_rcv = libc::c_int::try_from(acks.saturating_mul(1024).saturating_add(65536))
            .unwrap_or(libc::c_int::MAX);
        for (force, plain, v, step) in [
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, want_snd, "SO_SNDBUF"),
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, want_rcv, "SO_RCVBUF"),
        ] {
            if crate::netlink::setsockopt_int(&self.fd, libc::SOL_SOCKET, force, v).is_err() {
                crate::netlink::setsockopt_int(&self.fd, libc::SOL_SOCKET, plain, v)
                    .map_err(|source| NetlinkError::Socket { step, source })?;
            }
        }
        Ok(())
    }

    /// Sends a closed batch and reads one acknowledgement per message. Any refusal is an error
    /// (and the kernel has then applied nothing).
    pub fn send(&self, batch: &Batch) -> Result<(), NetlinkError> {
        let bytes = batch.bytes();
        let want = batch.acked_messages();
        self.size_buffers(bytes.len(), want)?;
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (pid 0: the kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `bytes` and `kernel` are valid for the given lengths during the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        let send_err = |source| NetlinkError::Send {
            messages: want + 2,
            bytes: bytes.len(),
            source,
        };
        if sent < 0 {
            return Err(send_err(io::Error::last_os_error()));
        }
        if usize::try_from(sent).ok() != Some(bytes.len()) {
            return Err(send_err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short send: {sent} bytes"),
            )));
        }
        self.read_acks(batch, want)
    }

    /// Asks the kernel whether the inet table `name` exists (`NFT_MSG_GETTABLE`).
    pub fn table_exists(&self, name: &str) -> Result<bool, NetlinkError> {
        const SEQ: u32 = 0x7261_6d70;
        let mut b = Buf::new();
        let s = b.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            SEQ,
            NFPROTO_INET,
            0,
        );
        b.attr_str(1, name); // NFTA_TABLE_NAME
        b.end_msg(s);
        let op = || format!("get table inet {name}");
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (pid 0: the kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let bytes = b.bytes();
        // SAFETY: `bytes` and `kernel` are valid for the given lengths during the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(NetlinkError::Send {
                messages: 1,
                bytes: bytes.len(),
                source: io::Error::last_os_error(),
            });
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: `buf` is valid for writes of its length during the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Receive {
                    got: 0,
                    want: 1,
                    source: e,
                });
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                return Err(NetlinkError::Malformed {
                    reason: format!("{}: empty reply", op()),
                });
            }
            for r in parse_replies(buf.get(..n).unwrap_or(&[]))? {
                if r.seq != SEQ {
                    continue;
                }
                return match -r.errno {
                    0 => Ok(true),
                    libc::ENOENT => Ok(false),
                    errno => Err(NetlinkError::Refused {
                        op: op(),
                        source: io::Error::from_raw_os_error(errno),
                        detail: r.message,
                        more: 0,
                    }),
                };
            }
        }
    }

    fn read_acks(&self, batch: &Batch, want: usize) -> Result<(), NetlinkError> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let mut errors: Vec<(u32, i32, Option<String>)> = Vec::new();
        while got < want {
            // SAFETY: `buf` is valid for writes of its length during the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if !errors.is_empty() {
                    break; // the refusal is what matters
                }
                return Err(NetlinkError::Receive {
                    got,
                    want,
                    source: e,
                });
            }
            let n = usize::try_from(n).unwrap_or(0);
            let data = buf.get(..n).unwrap_or(&[]);
            for reply in parse_replies(data)? {
                got += 1;
                if reply.errno != 0 {
                    errors.push((reply.seq, reply.errno, reply.message));
                }
            }
            if n == 0 {
                break;
            }
        }
        if let Some((seq, errno, detail)) = errors.first().cloned() {
            return Err(NetlinkError::Refused {
                op: batch.describe(seq),
                source: io::Error::from_raw_os_error(errno.saturating_abs()),
                detail,
                more: errors.len() - 1,
            });
        }
        Ok(())
    }
}

/// One `NLMSG_ERROR` reply: an ack (`errno` 0) or a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The sequence number of the message it answers.
    pub seq: u32,
    /// 0, or a negative errno.
    pub errno: i32,
    /// The extended ack message (`NLMSGERR_ATTR_MSG`).
    pub message: Option<String>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_ne_bytes)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2)
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map(u16::from_ne_bytes)
}

/// Parses the `NLMSG_ERROR` replies in one datagram (other message types are skipped).
pub fn parse_replies(data: &[u8]) -> Result<Vec<Reply>, NetlinkError> {
    let bad = |reason: &str| NetlinkError::Malformed {
        reason: reason.to_owned(),
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + NLMSG_HDRLEN <= data.len() {
        let len = u32_at(data, at).ok_or_else(|| bad("short header"))? as usize;
        let ty = u16_at(data, at + 4).ok_or_else(|| bad("short header"))?;
        let flags = u16_at(data, at + 6).ok_or_else(|| bad("short header"))?;
        if len < NLMSG_HDRLEN || at + len > data.len() {
            return Err(bad("message length out of range"));
        }
        if ty == NLMSG_ERROR {
            let body = data.get(at + NLMSG_HDRLEN..at + len).unwrap_or(&[]);
            let errno = u32_at(body, 0).ok_or_else(|| bad("short error message"))? as i32;
            // The original header follows: its sequence number is at offset 8.
            let seq = u32_at(body, 4 + 8).ok_or_else(|| bad("short error message"))?;
            let orig_len = u32_at(body, 4).unwrap_or(0) as usize;
            // With NETLINK_CAP_ACK only the header is echoed; without it, errors echo it whole.
            let echoed = if errno == 0 || flags & 0x100 != 0 {
                NLMSG_HDRLEN
            } else {
                orig_len.max(NLMSG_HDRLEN)
            };
            let mut message = None;
            if flags & NLM_F_ACK_TLVS != 0 {
                let mut t = 4 + msg::align(echoed);
                while t + 4 <= body.len() {
                    let alen = u16_at(body, t).unwrap_or(0) as usize;
                    let aty = u16_at(body, t + 2).unwrap_or(0);
                    if alen < 4 {
                        break;
                    }
                    if aty & 0x3fff == NLMSGERR_ATTR_MSG {
                        let v = body.get(t + 4..t + alen).unwrap_or(&[]);
                        let s = String::from_utf8_lossy(v).trim_end_matches('\0').to_owned();
                        message = Some(s);
                    }
                    t += msg::align(alen);
                }
            }
            out.push(Reply {
                seq,
                errno,
                message,
            });
        }
        at += msg::align(len);
    }
    Ok(out)
}

/// Applies a ruleset in the calling thread's network namespace: creates the table when there
/// is none, else replaces it (both atomically). Should the table appear between the check and
/// the batch, the exclusive create fails without effect and the replacing batch follows.
pub fn apply(rs: &Ruleset) -> Result<(), NetlinkError> {
    let sock = Socket::open()?;
    if sock.table_exists(&rs.table)? {
        return sock.send(&encode(rs));
    }
    match sock.send(&encode_fresh(rs)) {
        Err(NetlinkError::Refused { op, source, .. })
            if source.raw_os_error() == Some(libc::EEXIST) && op == fresh_table_op(&rs.table) =>
        {
            sock.send(&encode(rs))
        }
        other => other,
    }
}
