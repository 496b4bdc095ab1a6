//! Netlink message and attribute building: `nlmsghdr`, `nfgenmsg` and nested `nlattr`s.
//!
//! Integers in nf_tables attributes are big-endian; attribute headers and the `nlmsghdr` are
//! in host order; every attribute is padded to four bytes.

/// `NLA_F_NESTED`.
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_EXCL`.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`.
pub const NLM_F_APPEND: u16 = 0x800;
/// The size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;

/// Rounds up to the netlink alignment (4).
pub fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// A growing buffer of netlink messages.
#[derive(Debug, Default, Clone)]
pub struct Buf {
    bytes: Vec<u8>,
}

impl Buf {
    /// An empty buffer.
    pub fn new() -> Self {
        Buf::default()
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the buffer.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn pad(&mut self) {
        let n = align(self.bytes.len());
        self.bytes.resize(n, 0);
    }

    /// Writes `len` (as u32/u16) at `at`, in host order.
    fn patch_u32(&mut self, at: usize, v: u32) {
        if let Some(dst) = self.bytes.get_mut(at..at + 4) {
            dst.copy_from_slice(&v.to_ne_bytes());
        }
    }

    fn patch_u16(&mut self, at: usize, v: u16) {
        if let Some(dst) = self.bytes.get_mut(at..at + 2) {
            dst.copy_from_slice(&v.to_ne_bytes());
        }
    }

    /// Starts a message: `nlmsghdr` (length patched by [`Buf::end_msg`]) and `nfgenmsg`.
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        self.pad();
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(&flags.to_ne_bytes());
        self.bytes.extend_from_slice(&seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.push(family);
        self.bytes.push(0); // NFNETLINK_V0
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Finishes the message started at `start`.
    pub fn end_msg(&mut self, start: usize) {
        self.pad();
        let len = u32::try_from(self.bytes.len() - start).unwrap_or(u32::MAX);
        self.patch_u32(start, len);
    }

    /// An attribute with a raw payload.
    pub fn attr(&mut self, ty: u16, payload: &[u8]) {
        self.pad();
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.pad();
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }

    /// A big-endian u32 attribute.
    pub fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A big-endian u64 attribute.
    pub fn attr_u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A nested attribute whose content `f` writes.
    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Buf)) {
        self.pad();
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0, 0]);
        self.bytes
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        f(self);
        self.pad();
        let len = u16::try_from(self.bytes.len() - start).unwrap_or(u16::MAX);
        self.patch_u16(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut b = Buf::new();
        b.attr_str(1, "input");
        b.nest(4, |b| b.attr_u32(1, 1));
        assert_eq!(
            b.bytes(),
            [
                10, 0, 1, 0, b'i', b'n', b'p', b'u', b't', 0, 0, 0, //
                12, 0, 4, 0x80, 8, 0, 1, 0, 0, 0, 0, 1
            ]
        );
    }

    #[test]
    fn message_header() {
        let mut b = Buf::new();
        let s = b.begin_msg(0x10, NLM_F_REQUEST, 7, 0, 10);
        b.end_msg(s);
        let mut want = Vec::new();
        want.extend_from_slice(&20u32.to_ne_bytes());
        want.extend_from_slice(&0x10u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 10]);
        assert_eq!(b.bytes(), want);
    }
}
