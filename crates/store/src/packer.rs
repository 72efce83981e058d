//! Appending sealed blobs into pack files.
//!
//! A pack is streamed to a staging file while it fills (memory stays at one
//! buffered writer, whatever the pack size), hashed as it is written, and
//! published under the hash of its bytes once the trailer is appended and
//! the file is fsynced. A crash before publication leaves only a staging
//! file, which a later run removes; a crash after leaves a complete pack
//! that the next backup finds (`Repo::recover_unindexed`) and reuses.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_crypto::PlainHasher;
use cairn_format::Id;
use cairn_format::index::IndexPack;
use cairn_format::pack::{PACK_MAGIC, PackEntry, PackTrailer, WRAPPED_LEN};
use cairn_storage::{Kind, Storage};

use cairn_format::blob::BlobKind;

use crate::{Error, Result};

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

/// Packs are closed at this size: large enough that a repository of a few
/// TiB has tens of thousands of packs, small enough to stage on a board.
pub const PACK_TARGET: u64 = 32 << 20;

/// Counters of what a sink wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteStats {
    /// Blobs appended.
    pub blobs: u64,
    /// Record bytes appended.
    pub bytes: u64,
    /// Packs published.
    pub packs: u64,
}

/// Bytes gathered before they are hashed and written: BLAKE3 only uses
/// its SIMD paths on inputs spanning many 1 KiB chunks, and a pack of
/// small files arrives a few KiB at a time.
const WRITE_BUF: usize = 1 << 20;

struct OpenPack {
    file: File,
    buf: Vec<u8>,
    path: PathBuf,
    hasher: PlainHasher,
    entries: Vec<PackEntry>,
    len: u64,
    published: bool,
}

impl Drop for OpenPack {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes sealed blobs into packs under one session key.
pub struct PackSink {
    storage: Arc<dyn Storage>,
    key_id: [u8; 16],
    wrapped: [u8; WRAPPED_LEN],
    target: u64,
    current: Option<OpenPack>,
    stats: WriteStats,
}

impl PackSink {
    /// A sink for blobs sealed with the session key `key_id`.
    pub fn new(storage: Arc<dyn Storage>, key_id: [u8; 16], wrapped: [u8; WRAPPED_LEN]) -> Self {
        PackSink {
            storage,
            key_id,
            wrapped,
            target: PACK_TARGET,
            current: None,
            stats: WriteStats::default(),
        }
    }

    /// Overrides the pack size (tests use small packs).
    pub fn with_target(mut self, target: u64) -> Self {
        self.target = target;
        self
    }

    /// What was written so far.
    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    fn open(&mut self) -> Result<&mut OpenPack> {
        if self.current.is_none() {
            let dir = self.storage.staging_dir()?;
            let path = dir.join(format!(
                "pack-{}-{}.tmp",
                std::process::id(),
                hex::encode(cairn_crypto::random::<8>()?)
            ));
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| cairn_storage::Error::io("create", &path, e))?;
            let mut p = OpenPack {
                file: f,
                buf: Vec::with_capacity(WRITE_BUF),
                path,
                hasher: PlainHasher::new(),
                entries: Vec::new(),
                len: 0,
                published: false,
            };
            write(&mut p, PACK_MAGIC)?;
            self.current = Some(p);
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    /// Appends a blob; returns a pack, complete on disk but not yet
    /// published, when this blob filled one. The blob is borrowed so the
    /// caller can reuse its record buffer.
    pub fn add(&mut self, blob: &SealedBlob) -> Result<Option<StagedPack>> {
        let p = self.open()?;
        let length = u32::try_from(blob.record.len())
            .map_err(|_| Error::corrupt("blob", "record over 4 GiB"))?;
        p.entries.push(PackEntry {
            kind: blob.kind,
            id: blob.id,
            offset: p.len,
            length,
            raw_len: blob.raw_len,
        });
        write(p, &blob.record)?;
        let full = p.len >= self.target;
        self.stats.blobs += 1;
        self.stats.bytes += u64::from(length);
        if full {
            return self.finish_pack();
        }
        Ok(None)
    }

    /// Closes the open pack, if any: appends the trailer and flushes. The
    /// result must still be published ([`StagedPack::publish`]), which a
    /// separate thread can do while this sink fills the next pack.
    pub fn finish_pack(&mut self) -> Result<Option<StagedPack>> {
        let Some(mut p) = self.current.take() else {
            return Ok(None);
        };
        let trailer = PackTrailer {
            key_id: self.key_id,
            wrapped: self.wrapped,
            entries: std::mem::take(&mut p.entries),
        };
        write(&mut p, &trailer.encode_tail())?;
        flush(&mut p)?;
        let id = Id(p.hasher.finalize());
        self.stats.packs += 1;
        // Ownership of the staging file moves to the staged pack.
        p.published = true;
        Ok(Some(StagedPack {
            storage: self.storage.clone(),
            path: p.path.clone(),
            done: false,
            pack: IndexPack {
                pack: id,
                size: p.len,
                trailer,
            },
        }))
    }
}

/// A complete pack in the staging area, waiting to be published.
pub struct StagedPack {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    done: bool,
    /// The pack as an index file will list it.
    pub pack: IndexPack,
}

impl StagedPack {
    /// Makes the pack durable and visible under its name (fsync, rename,
    /// fsync of the directory). Only then may an index file list it.
    pub fn publish(mut self) -> Result<IndexPack> {
        self.storage
            .put_file(Kind::Pack, &self.pack.pack.to_hex(), &self.path)?;
        self.done = true;
        Ok(std::mem::replace(
            &mut self.pack,
            IndexPack {
                pack: Id::default(),
                size: 0,
                trailer: PackTrailer {
                    key_id: [0; 16],
                    wrapped: [0; WRAPPED_LEN],
                    entries: Vec::new(),
                },
            },
        ))
    }
}

impl Drop for StagedPack {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn write(p: &mut OpenPack, data: &[u8]) -> Result<()> {
    p.len += data.len() as u64;
    if p.buf.len() + data.len() <= WRITE_BUF {
        p.buf.extend_from_slice(data);
        return Ok(());
    }
    flush(p)?;
    if data.len() >= WRITE_BUF / 2 {
        return put(&mut p.file, &mut p.hasher, &p.path, data);
    }
    p.buf.extend_from_slice(data);
    Ok(())
}

fn flush(p: &mut OpenPack) -> Result<()> {
    if !p.buf.is_empty() {
        put(&mut p.file, &mut p.hasher, &p.path, &p.buf)?;
        p.buf.clear();
    }
    Ok(())
}

fn put(
    file: &mut File,
    hasher: &mut PlainHasher,
    path: &std::path::Path,
    data: &[u8],
) -> Result<()> {
    file.write_all(data)
        .map_err(|e| cairn_storage::Error::io("write", path, e))?;
    hasher.update(data);
    Ok(())
}
