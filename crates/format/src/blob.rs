//! Blob records inside packs (`docs/format.md`, "Blobs").
//!
//! A record is a plaintext header (kind, ID, the IDs it references) followed
//! by the sealed payload. The header is the AEAD's associated data, so the
//! visible edges cannot be changed without the payload failing to open, and
//! the storage side can walk the graph without any key.

use crate::error::{Result, invalid};
use crate::id::Id;
use crate::wire::{Reader, Writer};

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file contents; references nothing.
    Chunk = 1,
    /// A directory listing; references its subtrees and its files' chunks.
    Tree = 2,
}

impl BlobKind {
    /// Parses the kind byte.
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            1 => Ok(BlobKind::Chunk),
            2 => Ok(BlobKind::Tree),
            _ => Err(invalid("blob", format!("unknown blob kind {b}"))),
        }
    }
    /// Lowercase name for people.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Chunk => "chunk",
            BlobKind::Tree => "tree",
        }
    }
}

/// The plaintext part of a blob record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// Kind of blob.
    pub kind: BlobKind,
    /// Keyed hash of the plaintext payload.
    pub id: Id,
    /// IDs this blob refers to (trees only).
    pub refs: Vec<Id>,
}

/// Payload compression marker, the first byte of the sealed plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is (compression did not pay).
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Parses the marker byte.
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            _ => Err(invalid("blob payload", format!("unknown compression {b}"))),
        }
    }
}

impl BlobHeader {
    /// Encodes the header; these bytes are also the AEAD associated data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.kind as u8)
            .id(&self.id)
            .varint(self.refs.len() as u64);
        for r in &self.refs {
            w.id(r);
        }
        w.buf
    }

    /// Encodes a whole record: header, sealed length, sealed bytes.
    pub fn encode_record(&self, sealed: &[u8]) -> Vec<u8> {
        let mut out = self.encode();
        out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        out.extend_from_slice(sealed);
        out
    }
}

/// A decoded record: the header, its encoded bytes (the AAD), and the
/// sealed payload.
#[derive(Debug)]
pub struct Record<'a> {
    /// Decoded header.
    pub header: BlobHeader,
    /// The header's bytes, to pass as associated data.
    pub aad: &'a [u8],
    /// Nonce, ciphertext and tag.
    pub sealed: &'a [u8],
}

/// Decodes one record that must span `data` exactly.
pub fn decode_record(data: &[u8]) -> Result<Record<'_>> {
    let mut r = Reader::new(data, "blob record");
    let kind = BlobKind::from_u8(r.u8()?)?;
    let id = r.id()?;
    let n = r.len(32)?;
    let mut refs = Vec::with_capacity(n);
    for _ in 0..n {
        refs.push(r.id()?);
    }
    if kind == BlobKind::Chunk && n != 0 {
        return Err(invalid("blob record", "a chunk cannot reference blobs"));
    }
    let aad = &data[..r.pos()];
    let len = r.u32le()? as usize;
    let sealed = r.take(len)?;
    r.finish()?;
    Ok(Record {
        header: BlobHeader { kind, id, refs },
        aad,
        sealed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn record_roundtrip(n in 0usize..5, sealed in proptest::collection::vec(any::<u8>(), 0..100)) {
            let h = BlobHeader { kind: if n == 0 { BlobKind::Chunk } else { BlobKind::Tree }, id: Id([3; 32]), refs: (0..n).map(|i| Id([i as u8; 32])).collect() };
            let rec = h.encode_record(&sealed);
            let d = decode_record(&rec).unwrap();
            prop_assert_eq!(&d.header, &h);
            prop_assert_eq!(d.aad, &h.encode()[..]);
            prop_assert_eq!(d.sealed, &sealed[..]);
        }
    }
}
