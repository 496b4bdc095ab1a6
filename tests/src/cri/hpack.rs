//! HPACK (RFC 7541), the header compression of HTTP/2, as a client needs it.
//!
//! Requests are encoded with [`encode`]: every field a literal without indexing, its name and
//! value as plain octets (no Huffman, no dynamic table), which any server decodes. Responses
//! are decoded by a [`Decoder`], one per connection: indexed fields from the static table
//! (Appendix A) and the dynamic table, literals with and without indexing, table size updates,
//! and Huffman-coded strings. The Huffman code (Appendix B) is canonical, so it is rebuilt
//! from the code length of each symbol ([`HUFFMAN_LENGTHS`]).

use std::collections::VecDeque;
use std::sync::OnceLock;

/// The dynamic table size both ends start with (SETTINGS_HEADER_TABLE_SIZE's default), and
/// the most this decoder allows.
pub const TABLE_SIZE: usize = 4096;

/// Errors decoding a header block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("hpack: header block truncated at byte {at}")]
    Truncated {
        /// Where.
        at: usize,
    },
    /// An integer does not fit.
    #[error("hpack: integer too large at byte {at}")]
    Integer {
        /// Where.
        at: usize,
    },
    /// An index outside both tables.
    #[error("hpack: index {index} is in neither table")]
    Index {
        /// The index.
        index: u64,
    },
    /// A table size update above [`TABLE_SIZE`].
    #[error("hpack: table size update to {size}, above {TABLE_SIZE}")]
    TableSize {
        /// The size asked for.
        size: u64,
    },
    /// A Huffman string that is not a valid code sequence.
    #[error("hpack: bad huffman string: {reason}")]
    Huffman {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Appendix A: the static table (index 1 to 61).
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Appendix B: the length in bits of the Huffman code of each symbol (0 to 255, then EOS).
#[rustfmt::skip]
pub const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,         // 32
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,              // 48
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,                // 64
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,             // 80
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,                // 96
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,            // 112
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240
    30,                                                             // EOS
];

/// The EOS symbol.
const EOS: u16 = 256;
/// The longest code.
const MAX_LEN: usize = 30;

/// The canonical Huffman code rebuilt from [`HUFFMAN_LENGTHS`]: for each length, the first
/// code, how many codes have it and where their symbols start in `symbols` (sorted by length,
/// then symbol).
struct Canonical {
    first_code: [u32; MAX_LEN + 1],
    first_index: [usize; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static C: OnceLock<Canonical> = OnceLock::new();
    C.get_or_init(|| {
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|s| (HUFFMAN_LENGTHS[usize::from(*s)], *s));
        let mut count = [0u32; MAX_LEN + 1];
        for l in HUFFMAN_LENGTHS {
            count[usize::from(l)] += 1;
        }
        let mut first_code = [0u32; MAX_LEN + 1];
        let mut first_index = [0usize; MAX_LEN + 1];
        let (mut code, mut index) = (0u32, 0usize);
        for len in 1..=MAX_LEN {
            first_code[len] = code;
            first_index[len] = index;
            code = (code + count[len]) << 1;
            index += count[len] as usize;
        }
        Canonical {
            first_code,
            first_index,
            count,
            symbols,
        }
    })
}

/// The code of `sym` (for tests and [`huffman_encode`]).
fn code_of(sym: u16) -> (u32, u8) {
    let c = canonical();
    let len = HUFFMAN_LENGTHS[usize::from(sym)];
    let l = usize::from(len);
    let rank = c.symbols[c.first_index[l]..c.first_index[l] + c.count[l] as usize]
        .iter()
        .position(|s| *s == sym)
        .unwrap_or(0);
    (c.first_code[l] + rank as u32, len)
}

/// Huffman-encodes `s`, padding with the most significant bits of EOS (all ones).
pub fn huffman_encode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0u32);
    for b in s {
        let (code, len) = code_of(u16::from(*b));
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
    }
    out
}

/// Decodes a Huffman-coded string.
pub fn huffman_decode(b: &[u8]) -> Result<Vec<u8>, HpackError> {
    let c = canonical();
    let mut out = Vec::with_capacity(b.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in b {
        for i in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> i) & 1);
            len += 1;
            if len > MAX_LEN {
                return Err(HpackError::Huffman {
                    reason: "a code longer than 30 bits",
                });
            }
            let first = c.first_code[len];
            if c.count[len] > 0 && code >= first && code - first < c.count[len] {
                let sym = c.symbols[c.first_index[len] + (code - first) as usize];
                if sym == EOS {
                    return Err(HpackError::Huffman {
                        reason: "EOS inside the string",
                    });
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
        }
    }
    if len > 7 {
        return Err(HpackError::Huffman {
            reason: "padding longer than 7 bits",
        });
    }
    if code != (1u32 << len) - 1 {
        return Err(HpackError::Huffman {
            reason: "padding that is not a prefix of EOS",
        });
    }
    Ok(out)
}

/// Appends `v` as an HPACK integer with an `n`-bit prefix, the prefix byte's high bits `flags`.
pub fn put_integer(out: &mut Vec<u8>, flags: u8, n: u32, v: u64) {
    let max = (1u64 << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Reads an HPACK integer with an `n`-bit prefix at `*at`, advancing it.
pub fn get_integer(b: &[u8], at: &mut usize, n: u32) -> Result<u64, HpackError> {
    let start = *at;
    let first = *b.get(*at).ok_or(HpackError::Truncated { at: *at })?;
    *at += 1;
    let max = (1u64 << n) - 1;
    let mut v = u64::from(first) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*at).ok_or(HpackError::Truncated { at: *at })?;
        *at += 1;
        if shift > 28 {
            return Err(HpackError::Integer { at: start });
        }
        v += u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_integer(out, 0, 7, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn get_string(b: &[u8], at: &mut usize) -> Result<String, HpackError> {
    let huffman = b.get(*at).is_some_and(|x| x & 0x80 != 0);
    let len = get_integer(b, at, 7)?;
    let len = usize::try_from(len).map_err(|_| HpackError::Integer { at: *at })?;
    let end = at
        .checked_add(len)
        .ok_or(HpackError::Truncated { at: *at })?;
    let raw = b.get(*at..end).ok_or(HpackError::Truncated { at: *at })?;
    *at = end;
    let bytes = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A header block of literal fields without indexing, names and values as plain octets.
pub fn encode(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0);
        put_string(&mut out, name);
        put_string(&mut out, value);
    }
    out
}

/// The decoding side of one connection: its dynamic table.
#[derive(Debug, Clone)]
pub struct Decoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: TABLE_SIZE,
        }
    }
}

fn entry_size(name: &str, value: &str) -> usize {
    name.len() + value.len() + 32
}

impl Decoder {
    /// A decoder with an empty dynamic table of [`TABLE_SIZE`].
    pub fn new() -> Self {
        Self::default()
    }

    fn evict(&mut self) {
        while self.size > self.max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => break,
            }
        }
    }

    fn insert(&mut self, name: String, value: String) {
        let size = entry_size(&name, &value);
        if size > self.max {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.size += size;
        self.table.push_front((name, value));
        self.evict();
    }

    fn lookup(&self, index: u64) -> Result<(String, String), HpackError> {
        let i = usize::try_from(index).map_err(|_| HpackError::Index { index })?;
        let found = match i {
            0 => None,
            1..=61 => STATIC_TABLE
                .get(i - 1)
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
            _ => self.table.get(i - 62).cloned(),
        };
        found.ok_or(HpackError::Index { index })
    }

    /// The number of entries in the dynamic table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the dynamic table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Decodes one complete header block.
    pub fn decode(&mut self, b: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(&first) = b.get(at) {
            if first & 0x80 != 0 {
                let index = get_integer(b, &mut at, 7)?;
                out.push(self.lookup(index)?);
            } else if first & 0xc0 == 0x40 {
                let index = get_integer(b, &mut at, 6)?;
                let name = if index == 0 {
                    get_string(b, &mut at)?
                } else {
                    self.lookup(index)?.0
                };
                let value = get_string(b, &mut at)?;
                self.insert(name.clone(), value.clone());
                out.push((name, value));
            } else if first & 0xe0 == 0x20 {
                let size = get_integer(b, &mut at, 5)?;
                if size > TABLE_SIZE as u64 {
                    return Err(HpackError::TableSize { size });
                }
                self.max = size as usize;
                self.evict();
            } else {
                // Without indexing (0000) or never indexed (0001).
                let index = get_integer(b, &mut at, 4)?;
                let name = if index == 0 {
                    get_string(b, &mut at)?
                } else {
                    self.lookup(index)?.0
                };
                let value = get_string(b, &mut at)?;
                out.push((name, value));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    #[test]
    fn huffman_code_matches_appendix_b() {
        // (symbol, code, length) from Appendix B.
        let cases: [(u16, u32, u8); 8] = [
            (0, 0x1ff8, 13),
            (10, 0x3fff_fffc, 30),
            (32, 0x14, 6),
            (b'0'.into(), 0x0, 5),
            (b'a'.into(), 0x3, 5),
            (b'~'.into(), 0x1ffd, 13),
            (255, 0x3ff_ffee, 26),
            (EOS, 0x3fff_ffff, 30),
        ];
        for (sym, code, len) in cases {
            assert_eq!(code_of(sym), (code, len), "symbol {sym}");
        }
        // Kraft equality: a complete prefix code.
        let kraft: f64 = HUFFMAN_LENGTHS
            .iter()
            .map(|l| 2f64.powi(-i32::from(*l)))
            .sum();
        assert!((kraft - 1.0).abs() < 1e-12, "{kraft}");
    }

    #[test]
    fn huffman_strings_of_appendix_c() {
        // (text, Huffman encoding) from C.4.
        let cases = [
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
        ];
        for (text, enc) in cases {
            assert_eq!(
                huffman_decode(&hex(enc)).unwrap(),
                text.as_bytes(),
                "{text}"
            );
            assert_eq!(huffman_encode(text.as_bytes()), hex(enc), "{text}");
        }
        // Every byte value survives a round trip.
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(huffman_decode(&huffman_encode(&all)).unwrap(), all);
        // Padding must be ones, at most 7 bits; EOS may not appear.
        assert!(huffman_decode(&[0x00]).is_err());
        assert!(huffman_decode(&[0xff, 0xff]).is_err());
        assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn integers_of_appendix_c1() {
        // (value, prefix bits, encoding)
        let cases: [(u64, u32, &[u8]); 3] = [
            (10, 5, &[0x0a]),
            (1337, 5, &[0x1f, 0x9a, 0x0a]),
            (42, 8, &[0x2a]),
        ];
        for (v, n, enc) in cases {
            let mut out = Vec::new();
            put_integer(&mut out, 0, n, v);
            assert_eq!(out, enc);
            let mut at = 0;
            assert_eq!(get_integer(enc, &mut at, n).unwrap(), v);
        }
        let mut at = 0;
        assert!(get_integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut at, 5).is_err());
    }

    #[test]
    fn requests_of_appendix_c4_share_the_dynamic_table() {
        let mut d = Decoder::new();
        let h = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .unwrap();
        assert_eq!(
            pairs(&h),
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ]
        );
        let h = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(h[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(h[4], ("cache-control".into(), "no-cache".into()));
        let h = d
            .decode(&hex(
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ))
            .unwrap();
        assert_eq!(
            pairs(&h),
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ]
        );
        assert_eq!(d.len(), 3);
        assert_eq!(d.size, 164);
    }

    #[test]
    fn eviction_and_size_updates() {
        let mut d = Decoder::new();
        // A size update to 99 bytes, then two 50-byte entries: the first is evicted.
        let mut block = vec![];
        put_integer(&mut block, 0x20, 5, 99);
        for v in ["aaaaaaaaa", "bbbbbbbbb"] {
            block.push(0x40);
            put_string(&mut block, "name-nine");
            put_string(&mut block, v);
        }
        block.push(0x80 | 62);
        let h = d.decode(&block).unwrap();
        assert_eq!(h[2].1, "bbbbbbbbb");
        assert_eq!(d.len(), 1);
        assert_eq!(d.decode(&[0x80 | 63]), Err(HpackError::Index { index: 63 }));
        let mut big = vec![];
        put_integer(&mut big, 0x20, 5, 5000);
        assert_eq!(d.decode(&big), Err(HpackError::TableSize { size: 5000 }));
        assert_eq!(d.decode(&[0x80]), Err(HpackError::Index { index: 0 }));
    }

    #[test]
    fn encoded_requests_decode() {
        let block = encode(&[(":method", "POST"), ("content-type", "application/grpc")]);
        assert_eq!(block[0], 0);
        let h = Decoder::new().decode(&block).unwrap();
        assert_eq!(
            pairs(&h),
            [(":method", "POST"), ("content-type", "application/grpc")]
        );
    }
}
