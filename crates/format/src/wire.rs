//! Primitive encodings shared by every object (`docs/format.md`, "Wire
//! primitives"): LEB128 varints, length-prefixed bytes, and tagged fields.
//!
//! Tagged fields are what make trees and snapshot bodies forward
//! compatible: a record is a sequence of `tag, length, value`; a reader
//! skips tags it does not know, so a newer minor version can add fields.

use crate::error::{Error, Result, invalid};
use crate::id::Id;

/// Appends encoded values to a byte vector.
#[derive(Default, Debug, Clone)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Little-endian u32.
    pub fn u32le(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Unsigned LEB128.
    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
        self
    }
    /// Zigzag-encoded signed LEB128.
    pub fn svarint(&mut self, v: i64) -> &mut Self {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }
    /// Raw bytes, no length.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// Varint length, then bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.varint(b.len() as u64);
        self.raw(b)
    }
    /// A 32-byte ID.
    pub fn id(&mut self, id: &Id) -> &mut Self {
        self.raw(&id.0)
    }
    /// A tagged field holding raw bytes.
    pub fn field(&mut self, tag: u64, value: &[u8]) -> &mut Self {
        self.varint(tag);
        self.bytes(value)
    }
    /// A tagged field holding an unsigned varint.
    pub fn field_u64(&mut self, tag: u64, v: u64) -> &mut Self {
        let mut w = Writer::new();
        w.varint(v);
        self.field(tag, &w.buf)
    }
    /// A tagged field holding a signed varint.
    pub fn field_i64(&mut self, tag: u64, v: i64) -> &mut Self {
        let mut w = Writer::new();
        w.svarint(v);
        self.field(tag, &w.buf)
    }
}

/// Reads encoded values from untrusted bytes; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `data`, naming errors after `what`.
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, pos: 0, what }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }
    fn trunc(&self) -> Error {
        Error::Truncated { what: self.what }
    }
    /// Exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.trunc());
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// Little-endian u32.
    pub fn u32le(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Unsigned LEB128 of at most 10 bytes, in its shortest form: a longer
    /// encoding of the same value would give one header, trailer or node
    /// several byte strings, and so several hashes.
    pub fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(invalid(self.what, "varint overflows 64 bits"));
            }
            if i > 0 && b == 0 {
                return Err(invalid(self.what, "varint not in its shortest form"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid(self.what, "varint longer than 10 bytes"))
    }
    /// A varint that must fit `usize` and not exceed what is left, for
    /// lengths and counts: a hostile count cannot make us allocate.
    pub fn len(&mut self, unit: usize) -> Result<usize> {
        let v = self.varint()?;
        let n = usize::try_from(v).map_err(|_| self.trunc())?;
        if n.saturating_mul(unit.max(1)) > self.remaining() {
            return Err(self.trunc());
        }
        Ok(n)
    }
    /// Zigzag signed varint.
    pub fn svarint(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    /// Varint length, then bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len(1)?;
        self.take(n)
    }
    /// A 32-byte ID.
    pub fn id(&mut self) -> Result<Id> {
        Ok(Id(self.array()?))
    }
    /// The next tagged field, or `None` at the end.
    pub fn field(&mut self) -> Result<Option<(u64, &'a [u8])>> {
        if self.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        Ok(Some((tag, self.bytes()?)))
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(invalid(self.what, "trailing bytes"))
        }
    }
}

/// Decodes the value of a varint field.
pub fn field_u64(v: &[u8], what: &'static str) -> Result<u64> {
    let mut r = Reader::new(v, what);
    let x = r.varint()?;
    r.finish()?;
    Ok(x)
}

/// Decodes the value of a signed varint field.
pub fn field_i64(v: &[u8], what: &'static str) -> Result<i64> {
    let mut r = Reader::new(v, what);
    let x = r.svarint()?;
    r.finish()?;
    Ok(x)
}

/// Decodes a field that holds exactly one ID.
pub fn field_id(v: &[u8], what: &'static str) -> Result<Id> {
    let b: [u8; 32] = v
        .try_into()
        .map_err(|_| invalid(what, "id field is not 32 bytes"))?;
    Ok(Id(b))
}

/// Decodes a field of concatenated IDs.
pub fn field_ids(v: &[u8], what: &'static str) -> Result<Vec<Id>> {
    if !v.len().is_multiple_of(32) {
        return Err(invalid(what, "id list is not a multiple of 32 bytes"));
    }
    Ok(v.chunks_exact(32)
        .map(|c| Id(c.try_into().expect("32")))
        .collect())
}

/// Decodes a UTF-8 string field.
pub fn field_str(v: &[u8], what: &'static str) -> Result<String> {
    String::from_utf8(v.to_vec()).map_err(|_| invalid(what, "string is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints(u in any::<u64>(), s in any::<i64>()) {
            let mut w = Writer::new();
            w.varint(u).svarint(s);
            let mut r = Reader::new(&w.buf, "t");
            prop_assert_eq!(r.varint().unwrap(), u);
            prop_assert_eq!(r.svarint().unwrap(), s);
            prop_assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        let mut w = Writer::new();
        w.varint(u64::MAX);
        assert!(Reader::new(&w.buf, "t").bytes().is_err());
        assert!(Reader::new(&[0xff; 11], "t").varint().is_err());
    }

    /// Found by the `pack` fuzz target: `80 00` is a longer form of 0.
    #[test]
    fn varints_must_be_shortest() {
        assert!(Reader::new(&[0x80, 0x00], "t").varint().is_err());
        assert!(Reader::new(&[0xff, 0x80, 0x00], "t").varint().is_err());
        assert_eq!(Reader::new(&[0x00], "t").varint().unwrap(), 0);
        assert_eq!(Reader::new(&[0x80, 0x01], "t").varint().unwrap(), 128);
    }
}
