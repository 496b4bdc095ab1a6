//! The Protocol Buffers wire format, as much as the CRI client needs: a [`Writer`] for
//! requests (varints, strings, nested messages, `map<string, string>`) and a [`Message`] that
//! reads a response's fields by number (last value wins, as proto3 says).

use std::collections::BTreeMap;

/// Wire type of varints (int32, int64, uint32, uint64, bool, enum).
const VARINT: u8 = 0;
/// Wire type of 64-bit fixed values.
const FIXED64: u8 = 1;
/// Wire type of length-delimited values (strings, bytes, messages, packed lists).
const LEN: u8 = 2;
/// Wire type of 32-bit fixed values.
const FIXED32: u8 = 5;

/// Errors reading a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The bytes end inside a field.
    #[error("protobuf message truncated at byte {at}")]
    Truncated {
        /// Where.
        at: usize,
    },
    /// A varint longer than ten bytes.
    #[error("protobuf varint too long at byte {at}")]
    VarintTooLong {
        /// Where.
        at: usize,
    },
    /// A wire type the format does not have (or the deprecated groups).
    #[error("protobuf wire type {wire_type} at byte {at} is not supported")]
    WireType {
        /// The wire type.
        wire_type: u8,
        /// Where.
        at: usize,
    },
}

/// Appends `v` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*at`, advancing it.
pub fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, ProtoError> {
    let start = *at;
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at).ok_or(ProtoError::Truncated { at: *at })?;
        *at += 1;
        if shift == 63 && byte > 1 {
            return Err(ProtoError::VarintTooLong { at: start });
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ProtoError::VarintTooLong { at: start })
}

/// Builds one message.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        put_varint(
            &mut self.buf,
            (u64::from(field) << 3) | u64::from(wire_type),
        );
    }

    /// A varint field (written even when 0).
    pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, VARINT);
        put_varint(&mut self.buf, v);
        self
    }

    /// A bool field, left out when false (the proto3 default).
    pub fn bool(&mut self, field: u32, v: bool) -> &mut Self {
        if v {
            self.varint(field, 1);
        }
        self
    }

    /// A bytes field (written even when empty).
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, LEN);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A string field, left out when empty (the proto3 default).
    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        if !v.is_empty() {
            self.bytes(field, v.as_bytes());
        }
        self
    }

    /// A repeated string field.
    pub fn strings(&mut self, field: u32, v: &[String]) -> &mut Self {
        for s in v {
            self.bytes(field, s.as_bytes());
        }
        self
    }

    /// A nested message built by `f` (written even when empty, so that it is present).
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) -> &mut Self {
        let mut inner = Writer::new();
        f(&mut inner);
        self.bytes(field, &inner.buf)
    }

    /// A `map<string, string>` field: one entry message (key 1, value 2) per pair.
    pub fn map(&mut self, field: u32, entries: &BTreeMap<String, String>) -> &mut Self {
        for (k, v) in entries {
            self.message(field, |e| {
                e.bytes(1, k.as_bytes()).bytes(2, v.as_bytes());
            });
        }
        self
    }

    /// The encoded message.
    pub fn finish(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

/// One field value as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// A varint.
    Varint(u64),
    /// A 64-bit fixed value.
    Fixed64(u64),
    /// A length-delimited value.
    Bytes(&'a [u8]),
    /// A 32-bit fixed value.
    Fixed32(u32),
}

/// A message read from bytes: its fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message<'a> {
    fields: Vec<(u32, Value<'a>)>,
}

impl<'a> Message<'a> {
    /// Reads every field of `b`.
    pub fn parse(b: &'a [u8]) -> Result<Self, ProtoError> {
        let mut fields = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let key_at = at;
            let key = get_varint(b, &mut at)?;
            let field = (key >> 3) as u32;
            let wire_type = (key & 7) as u8;
            let value = match wire_type {
                VARINT => Value::Varint(get_varint(b, &mut at)?),
                FIXED64 => {
                    let bytes = b.get(at..at + 8).ok_or(ProtoError::Truncated { at })?;
                    at += 8;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(bytes);
                    Value::Fixed64(u64::from_le_bytes(a))
                }
                LEN => {
                    let len = get_varint(b, &mut at)?;
                    let len = usize::try_from(len).map_err(|_| ProtoError::Truncated { at })?;
                    let end = at.checked_add(len).ok_or(ProtoError::Truncated { at })?;
                    let bytes = b.get(at..end).ok_or(ProtoError::Truncated { at })?;
                    at = end;
                    Value::Bytes(bytes)
                }
                FIXED32 => {
                    let bytes = b.get(at..at + 4).ok_or(ProtoError::Truncated { at })?;
                    at += 4;
                    let mut a = [0u8; 4];
                    a.copy_from_slice(bytes);
                    Value::Fixed32(u32::from_le_bytes(a))
                }
                other => {
                    return Err(ProtoError::WireType {
                        wire_type: other,
                        at: key_at,
                    })
                }
            };
            fields.push((field, value));
        }
        Ok(Self { fields })
    }

    fn last(&self, field: u32) -> Option<Value<'a>> {
        self.fields
            .iter()
            .rev()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| *v)
    }

    fn all_bytes(&self, field: u32) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.fields.iter().filter_map(move |(f, v)| match v {
            Value::Bytes(b) if *f == field => Some(*b),
            _ => None,
        })
    }

    /// A varint field (0 when absent).
    pub fn varint(&self, field: u32) -> u64 {
        match self.last(field) {
            Some(Value::Varint(v)) => v,
            _ => 0,
        }
    }

    /// A string field (empty when absent; invalid UTF-8 is replaced).
    pub fn string(&self, field: u32) -> String {
        match self.last(field) {
            Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        }
    }

    /// A repeated string field.
    pub fn strings(&self, field: u32) -> Vec<String> {
        self.all_bytes(field)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// A nested message field (`None` when absent).
    pub fn message(&self, field: u32) -> Result<Option<Message<'a>>, ProtoError> {
        match self.last(field) {
            Some(Value::Bytes(b)) => Message::parse(b).map(Some),
            _ => Ok(None),
        }
    }

    /// A repeated message field.
    pub fn messages(&self, field: u32) -> Result<Vec<Message<'a>>, ProtoError> {
        self.all_bytes(field).map(Message::parse).collect()
    }

    /// A `map<string, string>` field.
    pub fn map(&self, field: u32) -> Result<BTreeMap<String, String>, ProtoError> {
        let mut out = BTreeMap::new();
        for e in self.messages(field)? {
            out.insert(e.string(1), e.string(2));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        // (value, encoding)
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0]),
            (1, &[1]),
            (150, &[0x96, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, enc) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, enc, "{v}");
            let mut at = 0;
            assert_eq!(get_varint(enc, &mut at).unwrap(), v);
            assert_eq!(at, enc.len());
        }
        let mut at = 0;
        assert_eq!(
            get_varint(&[0x80], &mut at),
            Err(ProtoError::Truncated { at: 1 })
        );
        let mut at = 0;
        assert_eq!(
            get_varint(&[0xff; 11], &mut at),
            Err(ProtoError::VarintTooLong { at: 0 })
        );
    }

    #[test]
    fn round_trip() {
        let mut labels = BTreeMap::new();
        labels.insert("a".to_owned(), "1".to_owned());
        labels.insert("b".to_owned(), "2".to_owned());
        let mut w = Writer::new();
        w.string(1, "id")
            .string(2, "")
            .bool(3, false)
            .bool(4, true)
            .varint(5, 2)
            .message(6, |m| {
                m.string(1, "inner");
            })
            .strings(7, &["x".to_owned(), "y".to_owned()])
            .map(8, &labels);
        let bytes = w.finish();
        // The well-known encoding of field 1 = "id".
        assert_eq!(&bytes[..4], &[0x0a, 0x02, b'i', b'd']);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.string(1), "id");
        assert_eq!(m.string(2), "");
        assert_eq!(m.varint(3), 0);
        assert_eq!(m.varint(4), 1);
        assert_eq!(m.varint(5), 2);
        assert_eq!(m.message(6).unwrap().unwrap().string(1), "inner");
        assert!(m.message(9).unwrap().is_none());
        assert_eq!(m.strings(7), ["x", "y"]);
        assert_eq!(m.map(8).unwrap(), labels);
    }

    #[test]
    fn bad_messages() {
        assert_eq!(
            Message::parse(&[0x0a, 0x05, b'a']),
            Err(ProtoError::Truncated { at: 2 })
        );
        assert_eq!(
            Message::parse(&[0x0b]),
            Err(ProtoError::WireType {
                wire_type: 3,
                at: 0
            })
        );
        // Fixed fields are read and skipped.
        let m = Message::parse(&[0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x15, 2, 0, 0, 0, 0x18, 7]).unwrap();
        assert_eq!(m.varint(3), 7);
    }
}
