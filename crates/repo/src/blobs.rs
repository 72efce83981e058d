//! Turning plaintext into sealed blob records, and back.
//!
//! Sealing is the CPU-heavy step of a backup (zstd plus XChaCha20), so a
//! [`BlobSealer`] is cheap to clone and each worker thread owns one with
//! its own compression context.

use cairn_crypto::SealKey;
use cairn_format::Id;
use cairn_format::blob::{BlobHeader, BlobKind, Compression, decode_record};

use crate::{Error, Result};

/// zstd level: 3 is zstd's default and matches borg's `zstd,3`.
const ZSTD_LEVEL: i32 = 3;
/// A chunk is tried on this sample first; if the sample does not shrink,
/// the chunk is stored uncompressed and the full compression is skipped.
const SAMPLE: usize = 64 * 1024;

/// A sealed blob ready to append to a pack.
#[derive(Debug)]
pub struct SealedBlob {
    /// Header (kind, ID, refs).
    pub kind: BlobKind,
    /// Blob ID.
    pub id: Id,
    /// The full record bytes.
    pub record: Vec<u8>,
    /// Plaintext length.
    pub raw_len: u32,
}

/// Compresses and seals blobs under one session key.
pub struct BlobSealer {
    key: SealKey,
    zstd: zstd::bulk::Compressor<'static>,
}

impl Clone for BlobSealer {
    fn clone(&self) -> Self {
        BlobSealer::new(self.key.clone())
    }
}

impl BlobSealer {
    /// A sealer for `key`.
    pub fn new(key: SealKey) -> Self {
        BlobSealer {
            key,
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd context"),
        }
    }

    /// Compresses where it pays, seals, and builds the record.
    pub fn seal(
        &mut self,
        kind: BlobKind,
        id: Id,
        refs: Vec<Id>,
        plain: &[u8],
    ) -> Result<SealedBlob> {
        let mut payload = Vec::with_capacity(plain.len() + 1);
        let worth_trying = plain.len() >= 64
            && (plain.len() <= 2 * SAMPLE
                || self
                    .zstd
                    .compress(&plain[..SAMPLE])
                    .is_ok_and(|c| c.len() < SAMPLE - SAMPLE / 16));
        let compressed = if worth_trying {
            self.zstd
                .compress(plain)
                .ok()
                .filter(|c| c.len() < plain.len() - plain.len() / 32)
        } else {
            None
        };
        match compressed {
            Some(c) => {
                payload.push(Compression::Zstd as u8);
                payload.extend_from_slice(&c);
            }
            None => {
                payload.push(Compression::None as u8);
                payload.extend_from_slice(plain);
            }
        }
        let header = BlobHeader { kind, id, refs };
        let aad = header.encode();
        let sealed = self.key.seal(&aad, &payload)?;
        let mut record = aad;
        record.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        record.extend_from_slice(&sealed);
        Ok(SealedBlob {
            kind,
            id,
            record,
            raw_len: plain.len() as u32,
        })
    }
}

/// Opens a record read from a pack: checks the header names `want`, opens
/// the seal, decompresses. The caller verifies the keyed hash.
pub fn open_record(
    record: &[u8],
    want: &Id,
    key: &SealKey,
    raw_len: u32,
    object: impl Fn() -> String,
) -> Result<(BlobKind, Vec<Id>, Vec<u8>)> {
    let rec = decode_record(record).map_err(|e| Error::corrupt(object(), e))?;
    if rec.header.id != *want {
        return Err(Error::corrupt(
            object(),
            format!("record holds blob {} instead", rec.header.id.short()),
        ));
    }
    let payload = key
        .open(rec.aad, rec.sealed)
        .map_err(|e| Error::corrupt(object(), e))?;
    let (&comp, body) = payload
        .split_first()
        .ok_or_else(|| Error::corrupt(object(), "empty payload"))?;
    let plain = match Compression::from_u8(comp).map_err(|e| Error::corrupt(object(), e))? {
        Compression::None => body.to_vec(),
        Compression::Zstd => {
            use std::io::Read;
            let mut out = Vec::with_capacity((raw_len as usize).min(16 << 20));
            zstd::stream::read::Decoder::new(body)
                .and_then(|d| d.take(u64::from(raw_len) + 1).read_to_end(&mut out))
                .map_err(|e| Error::corrupt(object(), format!("zstd: {e}")))?;
            out
        }
    };
    if plain.len() != raw_len as usize {
        return Err(Error::corrupt(
            object(),
            format!("payload is {} bytes, index says {raw_len}", plain.len()),
        ));
    }
    Ok((rec.header.kind, rec.header.refs, plain))
}
