//! Turning plaintext into sealed blob records, and back.
//!
//! Sealing is the CPU-heavy step of a backup (zstd plus XChaCha20), so a
//! [`BlobSealer`] is cheap to clone and each worker thread owns one with
//! its own compression context.

use cairn_crypto::SealKey;
use cairn_format::Id;
use cairn_format::blob::{BlobHeader, BlobKind, Compression, decode_record};

use crate::{Error, Result};

/// Default zstd level. On the benchmark corpus with 512 KiB chunks, level
/// 2 used a quarter less CPU than zstd's default of 3 for about 1% more
/// stored bytes (`bench/results.md`, still within 2% of borg at level 3).
pub const DEFAULT_LEVEL: i32 = 2;
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
    level: i32,
    zstd: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
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
        BlobSealer {
            key,
            level,
            zstd: zstd::bulk::Compressor::new(level.max(1)).expect("zstd context"),
            scratch: Vec::new(),
        }
    }

    /// Whether compressing a sample of `plain` pays: incompressible data
    /// (media, archives, encrypted files) skips the full zstd pass.
    fn worth_compressing(&mut self, plain: &[u8]) -> bool {
        if plain.len() < 64 || self.level == 0 {
            return false;
        }
        if plain.len() <= 2 * SAMPLE {
            return true;
        }
        self.scratch
            .resize(zstd::zstd_safe::compress_bound(SAMPLE), 0);
        self.zstd
            .compress_to_buffer(&plain[..SAMPLE], &mut self.scratch[..])
            .is_ok_and(|n| n < SAMPLE - SAMPLE / 16)
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
        let mut stored = false;
        if self.worth_compressing(plain) {
            let bound = zstd::zstd_safe::compress_bound(plain.len());
            record.resize(payload_at + 1 + bound, 0);
            if let Ok(n) = self
                .zstd
                .compress_to_buffer(plain, &mut record[payload_at + 1..])
                && n < plain.len() - plain.len() / 32
            {
                record[payload_at] = Compression::Zstd as u8;
                record.truncate(payload_at + 1 + n);
                stored = true;
            }
        }
        if !stored {
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
/// `want`, opens the seal, decompresses. The caller verifies the keyed
/// hash. `scratch` holds the decrypted payload; both buffers are reused
/// across calls, so the restore and check loops do not allocate per blob.
pub fn open_record(
    record: &[u8],
    want: &Id,
    key: &SealKey,
    raw_len: u32,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    object: impl Fn() -> String,
) -> Result<(BlobKind, Vec<Id>)> {
    let rec = decode_record(record).map_err(|e| Error::corrupt(object(), e))?;
    if rec.header.id != *want {
        return Err(Error::corrupt(
            object(),
            format!("record holds blob {} instead", rec.header.id.short()),
        ));
    }
    key.open_into(rec.aad, rec.sealed, scratch)
        .map_err(|e| Error::corrupt(object(), e))?;
    let (&comp, body) = scratch
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
    Ok((rec.header.kind, rec.header.refs))
}

thread_local! {
    /// One decompression context per thread, reused for every blob.
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// Largest plaintext a blob may have (trees of huge directories included).
pub const MAX_BLOB: usize = 1 << 30;
