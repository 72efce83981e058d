//! Index files (`docs/format.md`, "Index").
//!
//! An index file lists packs with their trailers, so a reader can find any
//! blob without opening packs. Index files are named by the unkeyed BLAKE3
//! of their bytes; several may list the same pack, and readers merge them.

use crate::error::{Error, Result, invalid};
use crate::id::Id;
use crate::pack::{PACK_MAGIC, PackTrailer, TAIL_FIXED};
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
        let start = r.pos();
        let trailer = PackTrailer::decode_body(&mut r)?;
        let p = IndexPack {
            pack,
            size,
            trailer,
        };
        p.check_fits((r.pos() - start) as u64)?;
        f(p)?;
    }
    r.finish()
}

impl IndexPack {
    /// Checks that the trailer copy describes a pack of `size` bytes whose
    /// trailer body is `body_len` bytes: its records tile the records area
    /// exactly, as a pack's own trailer must. Readers then take offsets
    /// and lengths from the index without sums that wrap or reads past a
    /// pack's end, whoever wrote the index file.
    fn check_fits(&self, body_len: u64) -> Result<()> {
        let bad = |reason: String| {
            invalid(
                "index file",
                format!(
                    "pack {} of {} bytes: {reason}",
                    self.pack.short(),
                    self.size
                ),
            )
        };
        let records_end = self
            .size
            .checked_sub(body_len + TAIL_FIXED as u64)
            .filter(|&end| end >= PACK_MAGIC.len() as u64)
            .ok_or_else(|| bad("too short for its trailer".into()))?;
        self.trailer
            .check_layout(records_end)
            .map_err(|e| bad(e.to_string()))
    }
}
