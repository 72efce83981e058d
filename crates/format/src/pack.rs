//! Pack files (`docs/format.md`, "Packs").
//!
//! `magic(8) | record* | trailer | trailer_len u32le | end magic(8)`.
//! The trailer lists every record in plaintext and carries the session key
//! (wrapped to the owner) that sealed them, so a pack is self-describing:
//! the index can be rebuilt from trailers alone, and no data is ever
//! orphaned from its key. A pack is named by the unkeyed BLAKE3 of all its
//! bytes, so bit rot and truncation are found without any key.

use crate::blob::BlobKind;
use crate::error::{Error, Result, invalid};
use crate::id::Id;
use crate::wire::{Reader, Writer};

/// First 8 bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPK1";
/// Last 8 bytes of every pack.
pub const PACK_END_MAGIC: &[u8; 8] = b"CAIRNPKE";
/// Length of the wrapped session key (see `cairn-crypto`).
pub const WRAPPED_LEN: usize = 104;
/// Trailer version written by this build.
pub const TRAILER_VERSION: u8 = 1;

/// Where one blob sits in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Blob kind.
    pub kind: BlobKind,
    /// Blob ID.
    pub id: Id,
    /// Offset of the record from the start of the pack.
    pub offset: u64,
    /// Length of the whole record.
    pub length: u32,
    /// Length of the plaintext (uncompressed) payload.
    pub raw_len: u32,
}

/// The plaintext table at the end of a pack; also the per-pack part of an
/// index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackTrailer {
    /// `key_id` of the session key that sealed every record.
    pub key_id: [u8; 16],
    /// The session key wrapped to the owner's public key.
    pub wrapped: [u8; WRAPPED_LEN],
    /// Records in file order.
    pub entries: Vec<PackEntry>,
}

impl PackTrailer {
    /// Encodes the trailer body (no length, no magic).
    pub fn encode_body(&self, w: &mut Writer) {
        w.u8(TRAILER_VERSION)
            .raw(&self.key_id)
            .raw(&self.wrapped)
            .varint(self.entries.len() as u64);
        for e in &self.entries {
            w.u8(e.kind as u8)
                .id(&e.id)
                .varint(e.offset)
                .varint(u64::from(e.length))
                .varint(u64::from(e.raw_len));
        }
    }

    /// Decodes a trailer body.
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let v = r.u8()?;
        if v != TRAILER_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "pack trailer",
                found: u32::from(v),
                supported: u32::from(TRAILER_VERSION),
            });
        }
        let key_id = r.array()?;
        let wrapped = r.array()?;
        let n = r.len(36)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = BlobKind::from_u8(r.u8()?)?;
            let id = r.id()?;
            let offset = r.varint()?;
            let length = u32::try_from(r.varint()?)
                .map_err(|_| invalid("pack trailer", "record length over 4 GiB"))?;
            let raw_len = u32::try_from(r.varint()?)
                .map_err(|_| invalid("pack trailer", "payload length over 4 GiB"))?;
            entries.push(PackEntry {
                kind,
                id,
                offset,
                length,
                raw_len,
            });
        }
        Ok(PackTrailer {
            key_id,
            wrapped,
            entries,
        })
    }

    /// Encodes `trailer | len | end magic`, to append after the records.
    pub fn encode_tail(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_body(&mut w);
        let len = w.buf.len() as u32;
        w.u32le(len).raw(PACK_END_MAGIC);
        w.buf
    }

    /// Checks that entries tile `[8, records_end)` without gaps or overlap.
    pub fn check_layout(&self, records_end: u64) -> Result<()> {
        let mut at = PACK_MAGIC.len() as u64;
        for e in &self.entries {
            if e.offset != at {
                return Err(invalid(
                    "pack trailer",
                    format!("blob {} at offset {} expected {at}", e.id.short(), e.offset),
                ));
            }
            at += u64::from(e.length);
        }
        if at != records_end {
            return Err(invalid(
                "pack trailer",
                format!("records end at {at} but the trailer starts at {records_end}"),
            ));
        }
        Ok(())
    }
}

/// How many bytes from the end of a pack hold the trailer's length and the
/// end magic.
pub const TAIL_FIXED: usize = 4 + 8;

/// Reads the trailer length from the last [`TAIL_FIXED`] bytes of a pack.
pub fn trailer_len(tail: &[u8]) -> Result<u32> {
    if tail.len() != TAIL_FIXED {
        return Err(Error::Truncated { what: "pack" });
    }
    if &tail[4..] != PACK_END_MAGIC {
        return Err(Error::BadMagic { what: "pack end" });
    }
    Ok(u32::from_le_bytes(tail[..4].try_into().expect("4")))
}

/// Decodes a whole pack's trailer from the full pack bytes, checking magic
/// numbers and layout: a trailer it returns has records that tile the
/// pack from its magic to the trailer, so a caller can slice every record
/// out of `pack` without further checks.
pub fn decode_pack_trailer(pack: &[u8]) -> Result<PackTrailer> {
    if pack.len() < PACK_MAGIC.len() + TAIL_FIXED || &pack[..8] != PACK_MAGIC {
        return Err(Error::BadMagic { what: "pack" });
    }
    let tl = trailer_len(&pack[pack.len() - TAIL_FIXED..])? as usize;
    let body_end = pack.len() - TAIL_FIXED;
    if tl > body_end - PACK_MAGIC.len() {
        return Err(Error::Truncated {
            what: "pack trailer",
        });
    }
    let t = decode_trailer_at(pack, body_end - tl, body_end)?;
    t.check_layout((body_end - tl) as u64)?;
    Ok(t)
}

/// Decodes a trailer body in `bytes[start..end]`. The layout is left to
/// the caller ([`PackTrailer::check_layout`]): `bytes` may hold only the
/// trailer, read from the end of a pack, so where its records end is
/// known only to the caller.
pub fn decode_trailer_at(bytes: &[u8], start: usize, end: usize) -> Result<PackTrailer> {
    let mut r = Reader::new(&bytes[start..end], "pack trailer");
    let t = PackTrailer::decode_body(&mut r)?;
    r.finish()?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack holding `hello` whose trailer claims one record of `length`
    /// bytes at offset 8.
    fn pack_claiming(length: u32) -> (PackTrailer, Vec<u8>) {
        let t = PackTrailer {
            key_id: [1; 16],
            wrapped: [2; WRAPPED_LEN],
            entries: vec![PackEntry {
                kind: BlobKind::Chunk,
                id: Id([9; 32]),
                offset: 8,
                length,
                raw_len: 3,
            }],
        };
        let mut pack = PACK_MAGIC.to_vec();
        pack.extend_from_slice(b"hello");
        pack.extend_from_slice(&t.encode_tail());
        (t, pack)
    }

    #[test]
    fn tail_roundtrip() {
        let (t, pack) = pack_claiming(5);
        let d = decode_pack_trailer(&pack).unwrap();
        assert_eq!(d, t);
        d.check_layout(13).unwrap();
        assert!(d.check_layout(14).is_err());
        assert!(decode_pack_trailer(&pack[..pack.len() - 1]).is_err());
    }

    /// A trailer whose record claims more bytes than lie before the
    /// trailer used to decode, and a caller slicing that record out of the
    /// pack would read past it.
    #[test]
    fn trailer_must_tile_the_pack() {
        let (_, pack) = pack_claiming(500);
        assert!(decode_pack_trailer(&pack).is_err());
    }
}
