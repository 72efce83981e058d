//! Turning plaintext into sealed blob records, and back.
//!
//! Sealing is the CPU-heavy step of a backup (zstd plus XChaCha20), so a
//! [`BlobSealer`] is cheap to clone and each worker thread owns one with
//! its own compression context.

use cairn_crypto::SealKey;
use cairn_format::Id;
use cairn_format::blob::{BlobHeader, BlobKind, Compression, decode_record};

use cairn_store::SealedBlob;

use crate::{Error, Result};

/// Default zstd level. On the benchmark corpus with 512 KiB chunks, level
/// 2 used a quarter less CPU than zstd's default of 3 for about 1% more
/// stored bytes, and level 1 another 9% less CPU for 1–2.5% more on the
/// mixed corpus and 1% less on small files (`bench/results.md`: still
/// within 4% of borg at level 3). Compression is the largest share of a
/// first backup's CPU, and a first backup is CPU-bound.
pub const DEFAULT_LEVEL: i32 = 1;
/// A chunk larger than twice this is compressed as one frame whose first
/// block holds only this much: if that block does not shrink, the chunk is
/// stored as is and the rest of the frame is never compressed. Media,
/// archives and encrypted files cost a 64 KiB trial; compressible chunks
/// cost nothing extra, since the trial is the start of their frame.
const SAMPLE: usize = 64 * 1024;

/// Compresses and seals blobs under one session key.
pub struct BlobSealer {
    key: SealKey,
    level: i32,
    zstd: zstd::zstd_safe::CCtx<'static>,
}

impl Clone for BlobSealer {
    fn clone(&self) -> Self {
        BlobSealer::with_level(self.key.clone(), self.level)
    }
}

impl BlobSealer {
    /// A sealer for `key`.
    pub fn new(key: SealKey) -> Self {
        Self::with_level(key, DEFAULT_LEVEL)
    }

    /// A sealer compressing at zstd `level` (0 stores everything as is).
    pub fn with_level(key: SealKey, level: i32) -> Self {
        let mut zstd = zstd::zstd_safe::CCtx::create();
        zstd.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level.max(1)))
            .expect("zstd level");
        BlobSealer { key, level, zstd }
    }

    /// Appends `plain` to `out` as one zstd frame, if that pays (and leaves
    /// `out` as it was if not). Large inputs
    /// are given up after their first [`SAMPLE`] bytes if those do not
    /// shrink by a sixteenth. The frame is written into `out`'s spare
    /// capacity, which is never zeroed first.
    fn compress(&mut self, plain: &[u8], out: &mut Vec<u8>) -> bool {
        if plain.len() < 64 || self.level == 0 {
            return false;
        }
        let start = out.len();
        // Room for the tag too, so sealing does not move the record.
        out.reserve(zstd::zstd_safe::compress_bound(plain.len()) + cairn_crypto::TAG_LEN);
        let n = self.compress_frame(plain, out, start);
        let pays = n.is_some_and(|n| n < plain.len() - plain.len() / 32);
        if !pays {
            out.truncate(start);
        }
        pays
    }

    fn compress_frame(&mut self, plain: &[u8], out: &mut Vec<u8>, start: usize) -> Option<usize> {
        use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::{ZSTD_e_end, ZSTD_e_flush};
        use zstd::zstd_safe::{InBuffer, OutBuffer, ResetDirective};
        let z = &mut self.zstd;
        // A frame abandoned earlier (or failed) leaves the session open.
        z.reset(ResetDirective::SessionOnly).ok()?;
        z.set_pledged_src_size(Some(plain.len() as u64)).ok()?;
        let mut dst = OutBuffer::around_pos(out, start);
        let mut rest = plain;
        if plain.len() > 2 * SAMPLE {
            let mut src = InBuffer::around(&plain[..SAMPLE]);
            while z.compress_stream2(&mut dst, &mut src, ZSTD_e_flush).ok()? != 0
                || src.pos() < SAMPLE
            {}
            if dst.pos() - start >= SAMPLE - SAMPLE / 16 {
                return None;
            }
            rest = &plain[SAMPLE..];
        }
        let mut src = InBuffer::around(rest);
        while z.compress_stream2(&mut dst, &mut src, ZSTD_e_end).ok()? != 0 {}
        Some(dst.pos() - start)
    }

    /// Compresses where it pays, seals, and builds the record in a single
    /// buffer: `header | sealed_len | nonce | payload | tag`, with the
    /// payload compressed into place and encrypted where it lies.
    pub fn seal(
        &mut self,
        kind: BlobKind,
        id: Id,
        refs: Vec<Id>,
        plain: &[u8],
    ) -> Result<SealedBlob> {
        self.seal_into(kind, id, refs, plain, Vec::new())
    }

    /// [`BlobSealer::seal`] into a reused buffer: a backup recycles its
    /// record buffers, so sealing a MiB-sized chunk does not map, fault
    /// in and zero fresh pages each time.
    pub fn seal_into(
        &mut self,
        kind: BlobKind,
        id: Id,
        refs: Vec<Id>,
        plain: &[u8],
        mut record: Vec<u8>,
    ) -> Result<SealedBlob> {
        let header = BlobHeader { kind, id, refs };
        record.clear();
        record.extend_from_slice(&header.encode());
        let aad_len = record.len();
        record.extend_from_slice(&[0u8; 4]);
        let nonce_at = record.len();
        record.extend_from_slice(&[0u8; cairn_crypto::NONCE_LEN]);
        let payload_at = record.len();
        record.push(Compression::Zstd as u8);
        if !self.compress(plain, &mut record) {
            record.truncate(payload_at);
            record.reserve(1 + plain.len() + cairn_crypto::TAG_LEN);
            record.push(Compression::None as u8);
            record.extend_from_slice(plain);
        }
        self.key.seal_in_place(&mut record, aad_len, nonce_at)?;
        let sealed_len = (record.len() - nonce_at) as u32;
        record[aad_len..aad_len + 4].copy_from_slice(&sealed_len.to_le_bytes());
        Ok(SealedBlob {
            kind,
            id,
            record,
            raw_len: plain.len() as u32,
        })
    }
}

/// Opens a record read from a pack into `out`: checks the header names
/// `want`, opens the seal where the record lies (which leaves its bytes
/// changed, whether or not it opens: callers that need them copy them
/// first), decompresses. The caller verifies the keyed hash. `out` is
/// reused across calls, so the restore and check loops do not allocate
/// per blob.
pub fn open_record_in_place(
    record: &mut [u8],
    want: &Id,
    key: &SealKey,
    raw_len: u32,
    out: &mut Vec<u8>,
    object: impl Fn() -> String,
) -> Result<(BlobKind, Vec<Id>)> {
    let (header, aad_len, sealed_len) = {
        let rec = decode_record(record).map_err(|e| Error::corrupt(object(), e))?;
        (rec.header, rec.aad.len(), rec.sealed.len())
    };
    if header.id != *want {
        return Err(Error::corrupt(
            object(),
            format!("record holds blob {} instead", header.id.short()),
        ));
    }
    // The sealed bytes end the record (`decode_record` checks it), after
    // the header and their length.
    let (head, sealed) = record.split_at_mut(record.len() - sealed_len);
    let payload = key
        .open_in_place(&head[..aad_len], sealed)
        .map_err(|e| Error::corrupt(object(), e))?;
    let (&comp, body) = payload
        .split_first()
        .ok_or_else(|| Error::corrupt(object(), "empty payload"))?;
    out.clear();
    match Compression::from_u8(comp).map_err(|e| Error::corrupt(object(), e))? {
        Compression::None => out.extend_from_slice(body),
        Compression::Zstd => {
            // The length comes from the index: never trust it for more
            // than a bound, and check it exactly afterwards.
            out.reserve((raw_len as usize).min(MAX_BLOB));
            if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(body)
                && n != u64::from(raw_len)
            {
                return Err(Error::corrupt(
                    object(),
                    format!("payload frame holds {n} bytes, index says {raw_len}"),
                ));
            }
            DCTX.with(|d| match &mut *d.borrow_mut() {
                Some(d) => d.decompress_to_buffer(body, out),
                None => Err(std::io::Error::other("no zstd context")),
            })
            .map_err(|e| Error::corrupt(object(), format!("zstd: {e}")))?;
        }
    }
    if out.len() != raw_len as usize {
        return Err(Error::corrupt(
            object(),
            format!("payload is {} bytes, index says {raw_len}", out.len()),
        ));
    }
    Ok((header.kind, header.refs))
}

thread_local! {
    /// One decompression context per thread, reused for every blob.
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// Largest plaintext a blob may have (trees of huge directories included).
pub const MAX_BLOB: usize = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(format!("line {i} of a log that repeats itself\n").as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    /// Seals, then opens the record back, and says how it was stored.
    fn roundtrip(s: &mut BlobSealer, key: &SealKey, plain: &[u8]) -> Compression {
        let id = Id([9; 32]);
        let b = s.seal(BlobKind::Chunk, id, Vec::new(), plain).unwrap();
        let mut out = Vec::new();
        open_record_in_place(
            &mut b.record.clone(),
            &id,
            key,
            plain.len() as u32,
            &mut out,
            || "test".into(),
        )
        .unwrap();
        assert_eq!(out, plain);
        let rec = decode_record(&b.record).unwrap();
        Compression::from_u8(key.open(rec.aad, rec.sealed).unwrap()[0]).unwrap()
    }

    /// Large chunks are tried on their first 64 KiB, as the start of the
    /// real frame: a random chunk is stored as is, a compressible one is
    /// one valid frame (with its content size), and an abandoned frame
    /// does not spoil the next one sealed by the same context.
    #[test]
    fn compression_is_chosen_per_chunk() {
        let key = SealKey::from_bytes([3; 32]);
        let mut s = BlobSealer::new(key.clone());
        for round in 0..2 {
            assert_eq!(
                roundtrip(&mut s, &key, &random(600 << 10, round + 1)),
                Compression::None
            );
            let t = text((600 << 10) + 17);
            assert_eq!(roundtrip(&mut s, &key, &t), Compression::Zstd);
            assert_eq!(
                roundtrip(&mut s, &key, &random(100 << 10, 7)),
                Compression::None
            );
            assert_eq!(roundtrip(&mut s, &key, &text(100 << 10)), Compression::Zstd);
            assert_eq!(roundtrip(&mut s, &key, b"tiny"), Compression::None);
            assert_eq!(roundtrip(&mut s, &key, &[]), Compression::None);
        }
        // Text after a random first 64 KiB: the trial decides, and the
        // chunk is still stored correctly.
        let mut mixed = random(64 << 10, 5);
        mixed.extend(text(600 << 10));
        roundtrip(&mut s, &key, &mixed);
        let mut none = BlobSealer::with_level(key.clone(), 0);
        assert_eq!(
            roundtrip(&mut none, &key, &text(600 << 10)),
            Compression::None
        );
    }
}
