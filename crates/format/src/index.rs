//! Index files (`docs/format.md`, "Index").
//!
//! An index file lists packs with their trailers, so a reader can find any
//! blob without opening packs. Index files are named by the unkeyed BLAKE3
//! of their bytes; several may list the same pack, and readers merge them.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::PackTrailer;
use crate::wire::{Reader, Writer};

/// First 8 bytes of an index file.
pub const INDEX_MAGIC: &[u8; 8] = b"CAIRNIX1";

/// One pack as listed in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPack {
    /// Pack name (BLAKE3 of its bytes).
    pub pack: Id,
    /// Pack length in bytes.
    pub size: u64,
    /// A copy of the pack's trailer.
    pub trailer: PackTrailer,
}

/// Encodes an index file.
pub fn encode(packs: &[IndexPack]) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(INDEX_MAGIC).varint(packs.len() as u64);
    for p in packs {
        w.id(&p.pack).varint(p.size);
        p.trailer.encode_body(&mut w);
    }
    w.buf
}

/// Decodes an index file.
pub fn decode(data: &[u8]) -> Result<Vec<IndexPack>> {
    let mut out = Vec::new();
    decode_each(data, |p| {
        out.push(p);
        Ok(())
    })?;
    Ok(out)
}

/// Decodes an index file one pack at a time, so a reader holds the
/// entries of one pack rather than of the whole file. An error from `f`
/// stops the decoding and is returned; packs before a decoding error have
/// been passed to `f` already.
pub fn decode_each(data: &[u8], mut f: impl FnMut(IndexPack) -> Result<()>) -> Result<()> {
    let mut r = Reader::new(data, "index file");
    if r.take(8)
        .map_err(|_| Error::BadMagic { what: "index file" })?
        != INDEX_MAGIC
    {
        return Err(Error::BadMagic { what: "index file" });
    }
    let n = r.len(32 + 1 + 16 + 104)?;
    for _ in 0..n {
        let pack = r.id()?;
        let size = r.varint()?;
        let trailer = PackTrailer::decode_body(&mut r)?;
        f(IndexPack {
            pack,
            size,
            trailer,
        })?;
    }
    r.finish()
}
