//! nf_tables expressions and their netlink encoding (`NFTA_LIST_ELEM` nests), attribute for
//! attribute in the order libnftnl writes them, so that the bytes equal what `nft` sends.

use super::msg::Buf;

/// `NFT_REG_VERDICT`.
pub const REG_VERDICT: u32 = 0;
/// `NFT_REG_1`: the 16-byte register every load here uses.
pub const REG_1: u32 = 1;

/// `enum nft_meta_keys` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// `NFT_META_IIF`: input interface index (u32, host order).
    Iif = 4,
    /// `NFT_META_OIF`: output interface index.
    Oif = 5,
    /// `NFT_META_IIFNAME`: input interface name (16 bytes).
    IifName = 6,
    /// `NFT_META_OIFNAME`: output interface name.
    OifName = 7,
    /// `NFT_META_NFPROTO`: netfilter family (u8).
    NfProto = 15,
    /// `NFT_META_L4PROTO`: layer 4 protocol (u8).
    L4Proto = 16,
}

/// `enum nft_cmp_ops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `NFT_CMP_EQ`.
    Eq = 0,
    /// `NFT_CMP_NEQ`.
    Neq = 1,
    /// `NFT_CMP_LTE`.
    Lte = 3,
    /// `NFT_CMP_GTE`.
    Gte = 5,
}

/// `enum nft_payload_bases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// `NFT_PAYLOAD_NETWORK_HEADER`.
    Network = 1,
    /// `NFT_PAYLOAD_TRANSPORT_HEADER`.
    Transport = 2,
}

/// A verdict (`NF_DROP`, `NF_ACCEPT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictCode {
    /// `NF_DROP`.
    Drop = 0,
    /// `NF_ACCEPT`.
    Accept = 1,
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `[ meta load KEY => reg 1 ]`.
    Meta(MetaKey),
    /// `[ cmp OP reg 1 DATA ]`.
    Cmp(CmpOp, Vec<u8>),
    /// `[ payload load LENb @ BASE header + OFFSET => reg 1 ]`.
    Payload {
        /// The header.
        base: PayloadBase,
        /// Byte offset in it.
        offset: u32,
        /// Bytes loaded.
        len: u32,
    },
    /// `[ bitwise reg 1 = ( reg 1 & MASK ) ^ XOR ]`.
    Bitwise {
        /// The mask.
        mask: Vec<u8>,
        /// The xor (same length).
        xor: Vec<u8>,
    },
    /// `[ ct load state => reg 1 ]` (`NFT_CT_STATE`).
    CtState,
    /// `[ immediate reg 0 VERDICT ]`.
    Verdict(VerdictCode),
    /// `[ counter pkts 0 bytes 0 ]`.
    Counter,
    /// `[ limit rate RATE/UNIT burst BURST type packets flags 0x0 ]`.
    Limit {
        /// Packets per unit.
        rate: u64,
        /// The unit in seconds.
        unit: u64,
        /// The burst in packets.
        burst: u32,
    },
    /// `[ log prefix PREFIX ]`.
    Log {
        /// The prefix.
        prefix: String,
    },
    /// `[ masq ]`.
    Masq,
}

// Attribute numbers (linux/netfilter/nf_tables.h).
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

impl Expr {
    /// The kernel's name for the expression type.
    pub fn name(&self) -> &'static str {
        match self {
            Expr::Meta(_) => "meta",
            Expr::Cmp(..) => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::CtState => "ct",
            Expr::Verdict(_) => "immediate",
            Expr::Counter => "counter",
            Expr::Limit { .. } => "limit",
            Expr::Log { .. } => "log",
            Expr::Masq => "masq",
        }
    }

    /// Writes the expression as one `NFTA_LIST_ELEM`.
    pub fn encode(&self, b: &mut Buf) {
        b.nest(NFTA_LIST_ELEM, |b| {
            b.attr_str(NFTA_EXPR_NAME, self.name());
            b.nest(NFTA_EXPR_DATA, |b| self.encode_data(b));
        });
    }

    fn encode_data(&self, b: &mut Buf) {
        let data = |b: &mut Buf, ty: u16, v: &[u8]| b.nest(ty, |b| b.attr(NFTA_DATA_VALUE, v));
        match self {
            Expr::Meta(key) => {
                b.attr_u32(2, *key as u32); // NFTA_META_KEY
                b.attr_u32(1, REG_1); // NFTA_META_DREG
            }
            Expr::Cmp(op, value) => {
                b.attr_u32(1, REG_1); // NFTA_CMP_SREG
                b.attr_u32(2, *op as u32); // NFTA_CMP_OP
                data(b, 3, value); // NFTA_CMP_DATA
            }
            Expr::Payload { base, offset, len } => {
                b.attr_u32(1, REG_1); // NFTA_PAYLOAD_DREG
                b.attr_u32(2, *base as u32); // NFTA_PAYLOAD_BASE
                b.attr_u32(3, *offset); // NFTA_PAYLOAD_OFFSET
                b.attr_u32(4, *len); // NFTA_PAYLOAD_LEN
            }
            Expr::Bitwise { mask, xor } => {
                b.attr_u32(1, REG_1); // NFTA_BITWISE_SREG
                b.attr_u32(2, REG_1); // NFTA_BITWISE_DREG
                b.attr_u32(3, u32::try_from(mask.len()).unwrap_or(0)); // NFTA_BITWISE_LEN
                data(b, 4, mask); // NFTA_BITWISE_MASK
                data(b, 5, xor); // NFTA_BITWISE_XOR
            }
            Expr::CtState => {
                b.attr_u32(2, 0); // NFTA_CT_KEY = NFT_CT_STATE
                b.attr_u32(1, REG_1); // NFTA_CT_DREG
            }
            Expr::Verdict(code) => {
                b.attr_u32(1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
                b.nest(2, |b| {
                    // NFTA_IMMEDIATE_DATA
                    b.nest(NFTA_DATA_VERDICT, |b| {
                        b.attr_u32(NFTA_VERDICT_CODE, *code as u32);
                    });
                });
            }
            Expr::Counter | Expr::Masq => {}
            Expr::Limit { rate, unit, burst } => {
                b.attr_u64(1, *rate); // NFTA_LIMIT_RATE
                b.attr_u64(2, *unit); // NFTA_LIMIT_UNIT
                b.attr_u32(3, *burst); // NFTA_LIMIT_BURST
                b.attr_u32(4, 0); // NFTA_LIMIT_TYPE = NFT_LIMIT_PKTS
                b.attr_u32(5, 0); // NFTA_LIMIT_FLAGS
            }
            Expr::Log { prefix } => b.attr_str(2, prefix), // NFTA_LOG_PREFIX
        }
    }
}
