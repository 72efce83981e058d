//! The seal workers and the pack sink: blobs the walker found new are
//! compressed and sealed on every core, appended to packs by one sink
//! thread, and published with an index file every few packs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::index::IndexPack;
use cairn_repo::{Repo, SealedBlob, SpillSet, StagedPack, WriteStats, write_index_file};
use crossbeam_channel::{Receiver, Sender, bounded};

use super::Progress;
use crate::{Error, Result};

/// A new blob on its way to a seal worker.
pub(super) struct Plain {
    pub(super) kind: BlobKind,
    pub(super) id: Id,
    pub(super) refs: Vec<Id>,
    pub(super) data: Vec<u8>,
}

/// A chunk of a large file, sent before it is hashed: the seal worker
/// hashes it, decides whether it is new, and reports its ID on the ticket.
pub(super) struct Unhashed {
    pub(super) ticket: Arc<Ticket>,
    pub(super) idx: u32,
    pub(super) data: Vec<u8>,
}

/// What a seal worker is given.
pub(super) enum Work {
    /// A blob whose ID is known and which is new.
    Hashed(Plain),
    /// A chunk still to hash and deduplicate.
    Unhashed(Unhashed),
}

/// Blobs travel in batches: a channel hand-off per 4 KiB file costs more
/// than sealing it (wake-ups, spinning), so small blobs go together.
pub(super) type Job = Vec<Work>;

/// Files at least this large have their chunks hashed by the seal workers
/// instead of the walker, which then only reads and chunks them. Keyed
/// hashing is a third of the walker's work; with the walker alone on the
/// critical path while it reads data already stored, a large file is read
/// at twice the speed. The walker waits for the file's IDs at its end, so
/// small files, where that wait would cost more than the hashing, stay on
/// the walker.
pub(super) const PARALLEL_FILE: u64 = 32 << 20;

/// The chunk IDs of one large file, filled in by the seal workers.
#[derive(Default)]
pub(super) struct Ticket {
    pub(super) ids: Mutex<Vec<(u32, Id)>>,
    pub(super) ready: std::sync::Condvar,
}

impl Ticket {
    pub(super) fn fulfil(&self, idx: u32, id: Id) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((idx, id));
        self.ready.notify_all();
    }
}

/// Deduplication state shared by the walker and the seal workers.
pub(super) struct Dedup<'a> {
    pub(super) repo: &'a Repo,
    /// Blobs sent for writing in this run, by the first 128 bits of their
    /// ID (half the memory of full IDs; a false match needs a 2^-64
    /// coincidence among billions of blobs), spilled to disk past a few
    /// MiB so a first backup of millions of files stays small.
    pub(super) pending: Mutex<SpillSet>,
    /// Plaintext bytes of the new blobs, whoever found them.
    pub(super) raw_added: AtomicU64,
    /// One bit per pack of the index: whether this run deduplicated
    /// against it, for the commit check against concurrent prunes.
    pub(super) used: Vec<AtomicU64>,
}

impl Dedup<'_> {
    /// Whether `id` is stored in a pack this run may deduplicate against
    /// (never a condemned one); remembers the pack.
    pub(super) fn stored(&self, id: &Id) -> bool {
        match self.repo.index().get_live(id) {
            Some(l) => {
                let p = l.pack as usize;
                if let Some(w) = self.used.get(p / 64) {
                    w.fetch_or(1 << (p % 64), Ordering::Relaxed);
                }
                true
            }
            None => false,
        }
    }

    /// Packs this run deduplicated against.
    pub(super) fn used_packs(&self) -> Vec<Id> {
        let packs = self.repo.index().packs();
        let mut out = Vec::new();
        for (i, w) in self.used.iter().enumerate() {
            let mut bits = w.load(Ordering::Relaxed);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(p) = packs.get(i * 64 + b) {
                    out.push(p.id);
                }
            }
        }
        out
    }

    /// Whether the blob `id` of `len` plaintext bytes is neither stored
    /// nor already sent; marks it sent and counts its bytes. If the spilled
    /// set cannot be read, the blob counts as new: storing it twice wastes
    /// space, skipping it would lose it.
    pub(super) fn is_new(&self, id: &Id, len: usize) -> bool {
        let new = !self.stored(id)
            && self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(short(id))
                .unwrap_or(true);
        if new {
            self.raw_added.fetch_add(len as u64, Ordering::Relaxed);
        }
        new
    }

    /// Whether `id` is stored or sent in this run (unknown when the
    /// spilled set cannot be read: the file is then read again).
    pub(super) fn known(&self, id: &Id) -> bool {
        self.stored(id)
            || self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(short(id))
                .unwrap_or(false)
    }
}

/// A batch is sent once it holds this many bytes or blobs.
pub(super) const BATCH_BYTES: usize = 1 << 20;
pub(super) const BATCH_BLOBS: usize = 256;

/// Recycled buffers for chunk data and sealed records.
///
/// With glibc's mmap threshold fixed at 256 KiB (`cli/src/malloc.rs`), a
/// fresh MiB-sized buffer is a new mapping whose pages are faulted in and
/// zeroed, then unmapped on free: a tenth of a backup's CPU. Only large
/// buffers are pooled (small ones come cheaply from the allocator), and
/// the pool keeps few, so it holds no more than what is in flight anyway.
#[derive(Default)]
pub(super) struct Pool(Mutex<Vec<Vec<u8>>>);

pub(super) const POOL_MIN: usize = 256 << 10;
pub(super) const POOL_KEEP: usize = 4;

impl Pool {
    /// An empty buffer with room for `len` bytes.
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        if len >= POOL_MIN
            && let Some(v) = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop()
        {
            return v;
        }
        Vec::with_capacity(len)
    }

    pub(super) fn give(&self, mut v: Vec<u8>) {
        if v.capacity() < POOL_MIN {
            return;
        }
        v.clear();
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() < POOL_KEEP {
            g.push(v);
        }
    }
}

/// Shared failure slot: the first fatal error stops everyone.
#[derive(Default)]
pub(super) struct Failure(Mutex<Option<Error>>);

impl Failure {
    pub(super) fn set(&self, e: Error) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }
    pub(super) fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    pub(super) fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

pub(super) fn seal_worker(
    sealer: &mut cairn_repo::BlobSealer,
    rx: Receiver<Job>,
    tx: Sender<Vec<SealedBlob>>,
    pool: &Pool,
    dedup: &Dedup<'_>,
    failure: &Failure,
) {
    for job in rx {
        // Hash first, so the walker waiting on a ticket is not held up by
        // the sealing of the rest of the batch.
        let mut new = Vec::with_capacity(job.len());
        for w in job {
            match w {
                Work::Hashed(p) => new.push(p),
                Work::Unhashed(u) => {
                    let id = dedup.repo.blob_id(&u.data);
                    u.ticket.fulfil(u.idx, id);
                    if dedup.is_new(&id, u.data.len()) {
                        new.push(Plain {
                            kind: BlobKind::Chunk,
                            id,
                            refs: Vec::new(),
                            data: u.data,
                        });
                    } else {
                        pool.give(u.data);
                    }
                }
            }
        }
        let mut sealed = Vec::with_capacity(new.len());
        for p in new {
            let record = pool.take(p.data.len() + 256);
            match sealer.seal_into(p.kind, p.id, p.refs, &p.data, record) {
                Ok(b) => sealed.push(b),
                Err(e) => {
                    failure.set(e.into());
                    return;
                }
            }
            pool.give(p.data);
        }
        if !sealed.is_empty() && tx.send(sealed).is_err() {
            return;
        }
    }
}

/// Packs published but not yet in an index file are indexed in groups of
/// this many, bounding what a crash forgets to a few packs (which the next
/// run recovers from their trailers anyway).
pub(super) const INDEX_EVERY: usize = 4;

/// An index file is also written once its packs hold this many blobs, so
/// that readers, which load one index file at a time, hold a few MiB of
/// it at most (a pack of tiny files holds some 70,000 blobs).
pub(super) const INDEX_ENTRIES: usize = 65_536;

/// Trees go to packs of their own: listing, diffing and restoring walk
/// every tree first, and finding them together in a few packs makes that a
/// handful of reads instead of one per directory.
///
/// Finished packs are published (fsync, rename) and indexed by a separate
/// thread, so the pipeline keeps filling the next pack while the disk
/// syncs the last one; at most [`PUBLISH_QUEUE`] staged packs wait.
pub(super) fn run_sink(
    repo: &Repo,
    mut data: cairn_repo::PackSink,
    mut trees: cairn_repo::PackSink,
    rx: Receiver<Vec<SealedBlob>>,
    pool: &Pool,
    progress: &Progress,
    failure: &Failure,
) -> Result<(WriteStats, Vec<Id>)> {
    let storage = repo.storage();
    let (pub_tx, pub_rx) = bounded::<StagedPack>(PUBLISH_QUEUE);
    let published = std::thread::scope(|s| {
        // Two publishers: while one waits for a pack to reach the disk or
        // the box (fsync, upload, the box hashing it), the other sends the
        // next. Each indexes only the packs it published itself.
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|_| {
                let pub_rx = pub_rx.clone();
                s.spawn(move || -> Result<Vec<Id>> {
                    let mut pending: Vec<IndexPack> = Vec::new();
                    let mut published = Vec::new();
                    let run = || -> Result<()> {
                        for staged in pub_rx {
                            // A failure stops the other publisher and the
                            // producers at once, as one publisher's exit did.
                            if failure.is_set() {
                                break;
                            }
                            let p = staged.publish()?;
                            published.push(p.pack);
                            pending.push(p);
                            let entries: usize =
                                pending.iter().map(|p| p.trailer.entries.len()).sum();
                            if pending.len() >= INDEX_EVERY || entries >= INDEX_ENTRIES {
                                write_index_file(&**storage, &pending)?;
                                pending.clear();
                            }
                        }
                        if !pending.is_empty() {
                            write_index_file(&**storage, &pending)?;
                        }
                        Ok(())
                    };
                    if let Err(e) = run() {
                        failure.set(e);
                    }
                    Ok(published)
                })
            })
            .collect();
        drop(pub_rx);
        let mut step = || -> Result<()> {
            for batch in rx.iter() {
                if failure.is_set() {
                    return Ok(());
                }
                for blob in batch {
                    let len = blob.record.len() as u64;
                    let sink = if blob.kind == BlobKind::Tree {
                        &mut trees
                    } else {
                        &mut data
                    };
                    let staged = sink.add(&blob)?;
                    pool.give(blob.record);
                    if let Some(p) = staged
                        && pub_tx.send(p).is_err()
                    {
                        // The publisher failed; its error is reported below.
                        return Ok(());
                    }
                    progress.added.fetch_add(len, Ordering::Relaxed);
                }
            }
            if failure.is_set() {
                return Ok(());
            }
            for sink in [&mut data, &mut trees] {
                if let Some(p) = sink.finish_pack()?
                    && pub_tx.send(p).is_err()
                {
                    return Ok(());
                }
            }
            Ok(())
        };
        let r = step();
        drop(pub_tx);
        if let Err(e) = r {
            // Stop the producers: dropping the receiver makes their sends fail.
            failure.set(e);
        }
        let mut all = Vec::new();
        for publisher in publishers {
            match publisher.join() {
                Ok(Ok(mut p)) => all.append(&mut p),
                // Set at once, so the other publisher and the producers stop.
                Ok(Err(e)) => failure.set(e),
                Err(_) => failure.set(Error::Input(
                    "internal error: pack publisher panicked".into(),
                )),
            }
        }
        all
    });
    let (d, t) = (data.stats(), trees.stats());
    let stats = WriteStats {
        blobs: d.blobs + t.blobs,
        bytes: d.bytes + t.bytes,
        packs: d.packs + t.packs,
    };
    Ok((stats, published))
}

/// Staged packs waiting for a publisher (disk space, not memory).
pub(super) const PUBLISH_QUEUE: usize = 2;
/// Threads publishing packs.
pub(super) const PUBLISHERS: usize = 2;

/// The first 128 bits of an ID, for the in-flight set.
fn short(id: &Id) -> u128 {
    u128::from_le_bytes(id.0[..16].try_into().expect("16 bytes"))
}
