//! The backup pipeline.
//!
//! ```text
//! walk ─ stat ─ files cache? ─┬─ hit: reuse chunk IDs
//!                             └─ read ─ chunk ─ hash ─ dedup ─┐
//!                                          seal workers (N) ◄─┘ compress + encrypt
//!                                                     └─► pack sink ─► packs + index
//! ```
//!
//! The walk, chunking and keyed hashing run on the calling thread, so chunk
//! IDs (and thus trees) are known in order without waiting on anyone.
//! Only new blobs go to the seal workers, over bounded channels: memory is
//! bounded by what is in flight (a few chunks), not by the source size.
//! One sink thread appends sealed blobs to packs and writes an index file
//! every few packs, so an interrupted run loses at most the pack being
//! filled. The snapshot is written last, after every pack and index file
//! is durable.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cairn_chunker::{Cutter, Params, StreamChunker};
use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::index::IndexPack;
use cairn_format::snapshot::{Body, Envelope};
use cairn_format::tree::{Node, NodeType, Tree};
use cairn_repo::{Repo, SealedBlob, SpillSet, StagedPack, WriteStats, write_index_file};
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::exclude::Excluder;
use crate::filescache::{FilesCache, Lookup};
use crate::meta::{Names, capture};
use crate::source::SourceFile;
use crate::{Error, Result, Warning, display_path};

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Source paths (made absolute).
    pub paths: Vec<PathBuf>,
    /// Gitignore-style exclude patterns.
    pub excludes: Vec<String>,
    /// Files of exclude patterns.
    pub exclude_files: Vec<PathBuf>,
    /// Skip contents of directories tagged with CACHEDIR.TAG.
    pub exclude_caches: bool,
    /// Do not cross into other filesystems.
    pub one_file_system: bool,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Group; default `host:path[,path]`.
    pub group: Option<String>,
    /// Read and chunk, but write nothing.
    pub dry_run: bool,
    /// Directory of the files cache for this repository.
    pub cache_dir: Option<PathBuf>,
    /// Command line, recorded in the snapshot.
    pub command: Vec<String>,
    /// Host name recorded in the snapshot.
    pub hostname: String,
    /// Seal worker threads (0 = number of cores).
    pub threads: usize,
    /// Pack size target in bytes (0 = default).
    pub pack_size: u64,
    /// Count the source first so progress can show totals and an ETA.
    pub scan: bool,
    /// zstd level (0 = store uncompressed).
    pub compression: i32,
    /// Where this machine remembers the last snapshot it wrote per group,
    /// to notice a repository rolled back to an older copy (`None`: not
    /// checked).
    pub state_dir: Option<PathBuf>,
    /// Back up even if the repository looks rolled back (see
    /// [`crate::rollback::check`]).
    pub accept_rollback: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            paths: Vec::new(),
            excludes: Vec::new(),
            exclude_files: Vec::new(),
            exclude_caches: false,
            one_file_system: false,
            tags: Vec::new(),
            group: None,
            dry_run: false,
            cache_dir: None,
            command: Vec::new(),
            hostname: String::new(),
            threads: 0,
            pack_size: 0,
            scan: false,
            compression: cairn_repo::DEFAULT_LEVEL,
            state_dir: None,
            accept_rollback: false,
        }
    }
}

/// Live counters for a progress display.
#[derive(Default, Debug)]
pub struct Progress {
    /// Files done.
    pub files: AtomicU64,
    /// Bytes of files done (read or reused).
    pub bytes: AtomicU64,
    /// Bytes written to the repository.
    pub added: AtomicU64,
    /// Files found by the scan.
    pub total_files: AtomicU64,
    /// Bytes found by the scan.
    pub total_bytes: AtomicU64,
    /// The scan finished.
    pub scan_done: AtomicBool,
    /// File being read.
    pub current: Mutex<String>,
}

/// What a backup did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BackupSummary {
    /// Snapshot written (none for a dry run).
    pub snapshot: Option<String>,
    /// Group of the snapshot.
    pub group: String,
    /// Files read for the first time.
    pub new_files: u64,
    /// Files read again because they changed.
    pub changed_files: u64,
    /// Files reused from the files cache.
    pub unchanged_files: u64,
    /// Directories.
    pub dirs: u64,
    /// Other entries (symlinks, devices, FIFOs).
    pub others: u64,
    /// Sum of file sizes in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Blobs added after deduplication.
    pub blobs_added: u64,
    /// Bytes added to the repository (compressed, sealed).
    pub bytes_added: u64,
    /// Plaintext bytes of the blobs added.
    pub raw_bytes_added: u64,
    /// Packs written.
    pub packs_added: u64,
    /// Packs from interrupted runs that were indexed and reused.
    pub packs_recovered: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Entries skipped or read inconsistently.
    pub warnings: Vec<Warning>,
}

/// A new blob on its way to a seal worker.
struct Plain {
    kind: BlobKind,
    id: Id,
    refs: Vec<Id>,
    data: Vec<u8>,
}

/// A chunk of a large file, sent before it is hashed: the seal worker
/// hashes it, decides whether it is new, and reports its ID on the ticket.
struct Unhashed {
    ticket: Arc<Ticket>,
    idx: u32,
    data: Vec<u8>,
}

/// What a seal worker is given.
enum Work {
    /// A blob whose ID is known and which is new.
    Hashed(Plain),
    /// A chunk still to hash and deduplicate.
    Unhashed(Unhashed),
}

/// Blobs travel in batches: a channel hand-off per 4 KiB file costs more
/// than sealing it (wake-ups, spinning), so small blobs go together.
type Job = Vec<Work>;

/// Files at least this large have their chunks hashed by the seal workers
/// instead of the walker, which then only reads and chunks them. Keyed
/// hashing is a third of the walker's work; with the walker alone on the
/// critical path while it reads data already stored, a large file is read
/// at twice the speed. The walker waits for the file's IDs at its end, so
/// small files, where that wait would cost more than the hashing, stay on
/// the walker.
const PARALLEL_FILE: u64 = 32 << 20;

/// The chunk IDs of one large file, filled in by the seal workers.
#[derive(Default)]
struct Ticket {
    ids: Mutex<Vec<(u32, Id)>>,
    ready: std::sync::Condvar,
}

impl Ticket {
    fn fulfil(&self, idx: u32, id: Id) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((idx, id));
        self.ready.notify_all();
    }
}

/// Deduplication state shared by the walker and the seal workers.
struct Dedup<'a> {
    repo: &'a Repo,
    /// Blobs sent for writing in this run, by the first 128 bits of their
    /// ID (half the memory of full IDs; a false match needs a 2^-64
    /// coincidence among billions of blobs), spilled to disk past a few
    /// MiB so a first backup of millions of files stays small.
    pending: Mutex<SpillSet>,
    /// Plaintext bytes of the new blobs, whoever found them.
    raw_added: AtomicU64,
    /// One bit per pack of the index: whether this run deduplicated
    /// against it, for the commit check against concurrent prunes.
    used: Vec<AtomicU64>,
}

impl Dedup<'_> {
    /// Whether `id` is stored in a pack this run may deduplicate against
    /// (never a condemned one); remembers the pack.
    fn stored(&self, id: &Id) -> bool {
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
    fn used_packs(&self) -> Vec<Id> {
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
    fn is_new(&self, id: &Id, len: usize) -> bool {
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
    fn known(&self, id: &Id) -> bool {
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
const BATCH_BYTES: usize = 1 << 20;
const BATCH_BLOBS: usize = 256;

/// Recycled buffers for chunk data and sealed records.
///
/// With glibc's mmap threshold fixed at 256 KiB (`cli/src/malloc.rs`), a
/// fresh MiB-sized buffer is a new mapping whose pages are faulted in and
/// zeroed, then unmapped on free: a tenth of a backup's CPU. Only large
/// buffers are pooled (small ones come cheaply from the allocator), and
/// the pool keeps few, so it holds no more than what is in flight anyway.
#[derive(Default)]
struct Pool(Mutex<Vec<Vec<u8>>>);

const POOL_MIN: usize = 256 << 10;
const POOL_KEEP: usize = 4;

impl Pool {
    /// An empty buffer with room for `len` bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        if len >= POOL_MIN
            && let Some(v) = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop()
        {
            return v;
        }
        Vec::with_capacity(len)
    }

    fn give(&self, mut v: Vec<u8>) {
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
struct Failure(Mutex<Option<Error>>);

impl Failure {
    fn set(&self, e: Error) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }
    fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// Staging files untouched for this long belong to a dead process (a live
/// writer appends to its pack file continuously).
const STALE_STAGING_SECS: u64 = 3600;

/// Files modified this close to the start of a backup are not trusted to
/// the files cache: file timestamps come from a coarse clock (one kernel
/// tick, at most 10 ms).
const RACY_NS: i64 = 20_000_000;

/// Runs a backup. `cancel` stops it cleanly (no snapshot; uploaded data is
/// kept for the rerun).
pub fn backup(
    repo: &mut Repo,
    opts: &BackupOptions,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<BackupSummary> {
    let start = Instant::now();
    let started_ns = cairn_repo::now_ns();
    let paths = normalize_paths(&opts.paths)?;
    let excluder = Excluder::new(&opts.excludes, &opts.exclude_files, opts.exclude_caches)?;
    let mut summary = BackupSummary {
        group: opts.group.clone().unwrap_or_else(|| {
            let ps: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            format!("{}:{}", opts.hostname, ps.join(","))
        }),
        ..BackupSummary::default()
    };
    if !opts.dry_run {
        if let Some(d) = &opts.state_dir
            && !opts.accept_rollback
        {
            crate::rollback::check(repo, d, &summary.group)?;
        }
        repo.storage()
            .clean_staging(std::time::Duration::from_secs(STALE_STAGING_SECS));
        // One listing serves both: packs an interrupted run left unindexed,
        // and the packs this writer may deduplicate against.
        let packs = repo.storage().list(cairn_storage::Kind::Pack)?;
        summary.packs_recovered = repo.recover_unindexed(&packs)? as u64;
        repo.scope_dedup(&packs)?;
    }
    let cfg = repo.config().clone();
    let cutter = Cutter::new(
        Params {
            min: cfg.chunk_min as usize,
            avg: cfg.chunk_avg as usize,
            max: cfg.chunk_max as usize,
        },
        repo.keys().dedup.chunker_seed(),
    );
    let threads = crate::threads(opts.threads);
    let cache_path = opts.cache_dir.as_ref().map(|d| {
        let h = cairn_crypto::plain_hash(summary.group.as_bytes());
        d.join(format!("files-{}", hex::encode(&h[..8])))
    });
    let session = repo.new_session()?;
    let failure = Failure::default();
    let (job_tx, job_rx) = bounded::<Job>(threads);
    let (sealed_tx, sealed_rx) = bounded::<Vec<SealedBlob>>(threads);
    let pool = Pool::default();
    let dedup = Dedup {
        repo,
        pending: Mutex::new(SpillSet::new(repo.table_limits().clone())),
        raw_added: AtomicU64::new(0),
        used: (0..repo.index().packs().len().div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect(),
    };
    let pack_size = opts.pack_size;
    let repo_ref: &Repo = repo;

    let (walk_result, sink_result) = std::thread::scope(|s| {
        if opts.scan {
            let paths = paths.clone();
            let ex = &excluder;
            s.spawn(move || scan(&paths, ex, opts.one_file_system, progress, cancel));
        }
        for _ in 0..threads {
            let rx = job_rx.clone();
            let tx = sealed_tx.clone();
            let mut sealer = repo_ref.sealer(&session, opts.compression);
            let failure = &failure;
            let pool = &pool;
            let dedup = &dedup;
            s.spawn(move || seal_worker(&mut sealer, rx, tx, pool, dedup, failure));
        }
        drop(job_rx);
        drop(sealed_tx);
        let sink = {
            let failure = &failure;
            let session = &session;
            let pool = &pool;
            s.spawn(move || {
                let mut data = repo_ref.sink(session);
                let mut trees = repo_ref.sink(session);
                if pack_size > 0 {
                    data = data.with_target(pack_size);
                    trees = trees.with_target(pack_size);
                }
                run_sink(repo_ref, data, trees, sealed_rx, pool, progress, failure)
            })
        };
        let mut w = Walker {
            repo: repo_ref,
            cutter: &cutter,
            excluder: &excluder,
            opts,
            // A dry run drops the sender here, so the workers end at once.
            jobs: Some(job_tx).filter(|_| !opts.dry_run),
            batch: Vec::new(),
            batch_bytes: 0,
            pool: &pool,
            dedup: &dedup,
            cache: cache_path
                .as_deref()
                .map(|p| FilesCache::open(p, !opts.dry_run)),
            names: Names::default(),
            summary: &mut summary,
            progress,
            cancel,
            failure: &failure,
            root_dev: 0,
            kept: 0,
            chunk_buf: Vec::new(),
            racy_before: started_ns - RACY_NS,
            zero_ids: std::collections::HashMap::new(),
        };
        let walked = w.walk_roots(&paths);
        let cache = w.cache.take();
        drop(w);
        let sunk = sink
            .join()
            .unwrap_or_else(|_| Err(Error::Input("internal error: pack writer panicked".into())));
        (walked.map(|root| (root, cache)), sunk)
    });
    if let Some(e) = failure.take() {
        return Err(e);
    }
    // This run's packs are in index files on disk; the in-memory index is
    // not extended with them (a million new blobs would double the memory
    // a backup needs), so `repo` must be reopened to read them.
    let (stats, mut used_packs) = sink_result?;
    let (root, cache) = walk_result?;
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    summary.raw_bytes_added = dedup.raw_added.load(Ordering::Relaxed);
    summary.blobs_added = stats.blobs;
    summary.bytes_added = stats.bytes;
    summary.packs_added = stats.packs;
    summary.duration_secs = start.elapsed().as_secs_f64();
    if opts.dry_run {
        return Ok(summary);
    }
    let (snaps, _) = Repo::list_snapshots(&**repo.storage())?;
    let parent = snaps
        .iter()
        .rev()
        .find(|s| s.envelope.group == summary.group)
        .map(|s| s.id);
    let env = Envelope {
        time_ns: started_ns,
        group: summary.group.clone(),
        tags: opts.tags.clone(),
        root,
        parent,
        files: summary.new_files + summary.changed_files + summary.unchanged_files,
        dirs: summary.dirs,
        bytes: summary.total_bytes,
        added_bytes: summary.bytes_added,
        ..Envelope::default()
    };
    let body = Body {
        hostname: opts.hostname.clone(),
        username: std::env::var("USER").unwrap_or_default(),
        paths: paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
        command: opts.command.clone(),
        excludes: excluder.patterns().to_vec(),
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        new_files: summary.new_files,
        changed_files: summary.changed_files,
        unchanged_files: summary.unchanged_files,
        bytes_read: summary.bytes_read,
        duration_ms: start.elapsed().as_millis() as u64,
        errors: summary.warnings.len() as u64,
        unknown: Vec::new(),
    };
    used_packs.extend(dedup.used_packs());
    cairn_repo::garbage::check_commit(&**repo.storage(), &repo.condemned().seen, &used_packs)?;
    let id = repo.commit_snapshot(&env, &body, &session)?;
    if let Some(d) = &opts.state_dir
        && let Err(e) = crate::rollback::record(d, &summary.group, &id, started_ns)
    {
        summary.warnings.push(Warning {
            path: d.display().to_string(),
            message: format!(
                "snapshot saved, but this machine could not record it, so it cannot notice if the repository is later rolled back past it: {e}"
            ),
        });
    }
    if let Some(c) = cache {
        c.commit();
    }
    summary.snapshot = Some(id.to_hex());
    summary.duration_secs = start.elapsed().as_secs_f64();
    Ok(summary)
}

fn normalize_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::Input(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p)
            .map_err(|e| Error::Input(format!("cannot resolve {}: {e}", p.display())))?;
        // Resolve symlinks in the parents, not in the last component: a
        // symlink given as a source is backed up as a symlink. A path
        // ending in `.` or `..` has no last component to keep: resolve it.
        let missing = |e: std::io::Error| {
            Error::Input(format!(
                "source {} does not exist ({e}); check the path, or whether its disk is mounted",
                p.display()
            ))
        };
        let abs = match (abs.parent(), abs.file_name()) {
            (Some(d), Some(n)) => d.canonicalize().map_err(missing)?.join(n),
            _ => abs.canonicalize().map_err(missing)?,
        };
        if let Err(e) = std::fs::symlink_metadata(&abs) {
            return Err(Error::Input(format!(
                "source {} cannot be read: {e}; check the path, or whether its disk is mounted",
                p.display()
            )));
        }
        out.push(abs);
    }
    out.sort_by(|a, b| {
        crate::filescache::cmp_paths(a.as_os_str().as_bytes(), b.as_os_str().as_bytes())
    });
    out.dedup();
    // A path inside another source adds nothing.
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in out {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    Ok(kept)
}

fn seal_worker(
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
const INDEX_EVERY: usize = 4;

/// An index file is also written once its packs hold this many blobs, so
/// that readers, which load one index file at a time, hold a few MiB of
/// it at most (a pack of tiny files holds some 70,000 blobs).
const INDEX_ENTRIES: usize = 65_536;

/// Trees go to packs of their own: listing, diffing and restoring walk
/// every tree first, and finding them together in a few packs makes that a
/// handful of reads instead of one per directory.
///
/// Finished packs are published (fsync, rename) and indexed by a separate
/// thread, so the pipeline keeps filling the next pack while the disk
/// syncs the last one; at most [`PUBLISH_QUEUE`] staged packs wait.
fn run_sink(
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
const PUBLISH_QUEUE: usize = 2;
/// Threads publishing packs.
const PUBLISHERS: usize = 2;

fn scan(paths: &[PathBuf], ex: &Excluder, one_fs: bool, p: &Progress, cancel: &AtomicBool) {
    let mut stack: Vec<PathBuf> = paths.to_vec();
    let root_devs: Vec<u64> = paths
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok().map(|m| m.dev()))
        .collect();
    while let Some(path) = stack.pop() {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            if one_fs && !root_devs.contains(&md.dev()) {
                continue;
            }
            if ex.is_tagged_cache(&path) {
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(&path) {
                for e in rd.flatten() {
                    let child = e.path();
                    let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    if !ex.excluded(&child, is_dir) {
                        stack.push(child);
                    }
                }
            }
        } else if md.is_file() {
            p.total_files.fetch_add(1, Ordering::Relaxed);
            p.total_bytes.fetch_add(md.size(), Ordering::Relaxed);
        }
    }
    p.scan_done.store(true, Ordering::Relaxed);
}

struct Walker<'a> {
    repo: &'a Repo,
    cutter: &'a Cutter,
    excluder: &'a Excluder,
    opts: &'a BackupOptions,
    jobs: Option<Sender<Job>>,
    /// New blobs not yet handed to the seal workers.
    batch: Job,
    batch_bytes: usize,
    pool: &'a Pool,
    dedup: &'a Dedup<'a>,
    cache: Option<FilesCache>,
    names: Names,
    summary: &'a mut BackupSummary,
    progress: &'a Progress,
    cancel: &'a AtomicBool,
    failure: &'a Failure,
    root_dev: u64,
    /// Entries the snapshot will hold; none means a failed backup.
    kept: u64,
    chunk_buf: Vec<u8>,
    racy_before: i64,
    zero_ids: std::collections::HashMap<usize, Id>,
}

/// A virtual directory level above the sources: `/`, `/home`, ...
struct Level {
    children: Vec<(OsString, Option<PathBuf>)>,
}

impl Walker<'_> {
    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.summary.warnings.push(Warning {
            path: path.display().to_string(),
            message: message.into(),
        });
    }

    fn stopped(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.failure.is_set()
    }

    fn check_stop(&self) -> Result<()> {
        if self.failure.is_set() {
            // The real error is in the failure slot; this only unwinds.
            return Err(Error::Interrupted);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    /// Builds the root tree: ancestors of the sources as directories, so a
    /// restore recreates absolute paths under its target.
    fn walk_roots(&mut self, paths: &[PathBuf]) -> Result<Id> {
        let root = Path::new("/");
        // `/` as a source is the root tree itself: it has no name to be
        // an entry under, and every other source lies inside it.
        let r = if paths.iter().any(|p| p == root) {
            self.walk_root_dir(root)
        } else {
            self.walk_level(root, paths)
        };
        let sent = self.send_batch();
        self.jobs = None;
        let id = r?;
        sent?;
        if self.kept == 0 && !self.stopped() {
            return Err(Error::Input(format!(
                "nothing to save: every entry of {} was excluded or could not be read{}; \
                 no snapshot was written (check the excludes and the permissions)",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                match self.summary.warnings.first() {
                    Some(w) => format!(" (first problem: {}: {})", w.path, w.message),
                    None => String::new(),
                }
            )));
        }
        Ok(id)
    }

    /// Backs up `/` as the root tree.
    fn walk_root_dir(&mut self, root: &Path) -> Result<Id> {
        let md = std::fs::symlink_metadata(root).map_err(|e| Error::Io {
            op: "stat",
            path: root.to_path_buf(),
            source: e,
        })?;
        self.root_dev = md.dev();
        self.dir(root)
    }

    fn walk_level(&mut self, here: &Path, paths: &[PathBuf]) -> Result<Id> {
        // Group the sources by their next component below `here`.
        let mut level = Level {
            children: Vec::new(),
        };
        for p in paths {
            let rel = p.strip_prefix(here).unwrap_or(p);
            let Some(first) = rel.components().next() else {
                continue;
            };
            let name = first.as_os_str().to_os_string();
            let full = here.join(&name);
            let is_source = &full == p;
            match level.children.iter_mut().find(|(n, _)| *n == name) {
                Some((_, src)) => {
                    if is_source {
                        *src = Some(full);
                    }
                }
                None => level
                    .children
                    .push((name, if is_source { Some(full) } else { None })),
            }
        }
        level
            .children
            .sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut nodes = Vec::new();
        for (name, src) in level.children {
            let full = here.join(&name);
            match src {
                Some(path) => {
                    let md = std::fs::symlink_metadata(&path).map_err(|e| Error::Io {
                        op: "stat",
                        path: path.clone(),
                        source: e,
                    })?;
                    self.root_dev = md.dev();
                    if let Some(n) = self.entry(&path, name.as_bytes(), md)? {
                        nodes.push(n);
                    }
                }
                None => {
                    let below: Vec<PathBuf> = paths
                        .iter()
                        .filter(|p| p.starts_with(&full))
                        .cloned()
                        .collect();
                    let md = std::fs::symlink_metadata(&full).map_err(|e| Error::Io {
                        op: "stat",
                        path: full.clone(),
                        source: e,
                    })?;
                    let mut n =
                        capture(&full, name.as_bytes(), &md, &mut self.names).map_err(|e| {
                            Error::Io {
                                op: "read metadata of",
                                path: full.clone(),
                                source: e,
                            }
                        })?;
                    n.subtree = Some(self.walk_level(&full, &below)?);
                    nodes.push(n);
                }
            }
        }
        self.finish_tree(Tree { nodes })
    }

    /// Backs up one entry; `None` when it was skipped with a warning.
    fn entry(&mut self, path: &Path, name: &[u8], md: Metadata) -> Result<Option<Node>> {
        self.check_stop()?;
        let mut node = match capture(path, name, &md, &mut self.names) {
            Ok(n) => n,
            Err(e) => {
                self.warn(path, format!("skipped: {e}"));
                return Ok(None);
            }
        };
        match node.node_type() {
            NodeType::Dir => {
                self.summary.dirs += 1;
                let crosses = self.opts.one_file_system && md.dev() != self.root_dev;
                node.subtree = Some(if crosses {
                    self.finish_tree(Tree::default())?
                } else {
                    match self.dir(path) {
                        Ok(id) => id,
                        Err(Error::Io { source, .. }) => {
                            self.warn(path, format!("directory skipped: {source}"));
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    }
                });
            }
            NodeType::File => match self.file(path, &md) {
                Ok(Some((content, size))) => {
                    node.content = content;
                    node.size = size;
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(e),
            },
            _ => self.summary.others += 1,
        }
        self.kept += 1;
        Ok(Some(node))
    }

    fn dir(&mut self, path: &Path) -> Result<Id> {
        let io = |e| Error::Io {
            op: "read directory",
            path: path.to_path_buf(),
            source: e,
        };
        let mut names: Vec<OsString> = Vec::new();
        for e in std::fs::read_dir(path).map_err(io)? {
            names.push(e.map_err(io)?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let tagged = self.excluder.is_tagged_cache(path);
        let mut nodes = Vec::with_capacity(names.len());
        for name in names {
            if tagged && name.as_bytes() != b"CACHEDIR.TAG" {
                continue;
            }
            let child = path.join(&name);
            let md = match std::fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.warn(&child, "vanished during the backup");
                    continue;
                }
                Err(e) => {
                    self.warn(&child, format!("skipped: {e}"));
                    continue;
                }
            };
            if self.excluder.excluded(&child, md.is_dir()) {
                continue;
            }
            if let Some(n) = self.entry(&child, name.as_bytes(), md)? {
                nodes.push(n);
            }
        }
        self.finish_tree(Tree { nodes })
    }

    /// Reads a file (unless the files cache vouches for it); returns its
    /// chunk IDs and size, or `None` when it was skipped.
    fn file(&mut self, path: &Path, md: &Metadata) -> Result<Option<(Vec<Id>, u64)>> {
        let pbytes = path.as_os_str().as_bytes();
        let lookup = match &mut self.cache {
            Some(c) => c.lookup(pbytes, md),
            None => Lookup::New,
        };
        let previous = match &lookup {
            Lookup::Changed(ids) | Lookup::Hit(ids) => Some(ids.clone()),
            Lookup::New => None,
        };
        if let Lookup::Hit(ids) = lookup
            && ids.iter().all(|id| self.dedup.known(id))
        {
            self.summary.unchanged_files += 1;
            self.summary.total_bytes += md.size();
            if let Some(c) = &mut self.cache {
                c.record(pbytes, md, &ids);
            }
            self.progress.files.fetch_add(1, Ordering::Relaxed);
            self.progress.bytes.fetch_add(md.size(), Ordering::Relaxed);
            return Ok(Some((ids, md.size())));
        }
        if let Ok(mut cur) = self.progress.current.lock() {
            cur.clear();
            cur.push_str(&display_path(pbytes));
        }
        let f = match open_noatime(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.warn(path, "vanished during the backup");
                return Ok(None);
            }
            Err(e) => {
                self.warn(path, format!("skipped: {e}"));
                return Ok(None);
            }
        };
        let mut chunker = StreamChunker::with_buffer(
            self.cutter,
            SourceFile::new(f, md),
            std::mem::take(&mut self.chunk_buf),
        );
        let mut content = Vec::new();
        let mut size = 0u64;
        let ticket = (self.jobs.is_some() && md.size() >= PARALLEL_FILE)
            .then(|| Arc::new(Ticket::default()));
        let mut sent = 0usize;
        loop {
            if self.stopped() {
                self.check_stop()?;
            }
            let chunk = match chunker.next_chunk() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    self.warn(path, format!("read failed, file skipped: {e}"));
                    return Ok(None);
                }
            };
            if let Some(t) = &ticket
                && !is_zero(chunk)
            {
                size += chunk.len() as u64;
                self.progress
                    .bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                let mut data = self.pool.take(chunk.len());
                data.extend_from_slice(chunk);
                let idx = content.len() as u32;
                content.push(Id::default());
                sent += 1;
                self.batch_bytes += data.len();
                self.batch.push(Work::Unhashed(Unhashed {
                    ticket: t.clone(),
                    idx,
                    data,
                }));
                if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_BLOBS {
                    self.send_batch()?;
                }
                continue;
            }
            let id = if is_zero(chunk) {
                // Sparse files and disk images hold long runs of zeros:
                // their chunk IDs are computed once per length.
                let repo = self.repo;
                *self
                    .zero_ids
                    .entry(chunk.len())
                    .or_insert_with(|| repo.blob_id(chunk))
            } else {
                self.repo.blob_id(chunk)
            };
            size += chunk.len() as u64;
            self.progress
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            // Counted as new even in a dry run, which sends nothing.
            if self.dedup.is_new(&id, chunk.len()) && self.jobs.is_some() {
                let mut data = self.pool.take(chunk.len());
                data.extend_from_slice(chunk);
                self.queue(Plain {
                    kind: BlobKind::Chunk,
                    id,
                    refs: Vec::new(),
                    data,
                })?;
            }
            content.push(id);
        }
        let (f, buf) = chunker.into_parts();
        self.chunk_buf = buf;
        if let Some(t) = &ticket {
            self.send_batch()?;
            self.await_ticket(t, sent, &mut content)?;
        }
        self.summary.bytes_read += size;
        self.summary.total_bytes += size;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        match &previous {
            Some(old) if *old == content => self.summary.unchanged_files += 1,
            Some(_) => self.summary.changed_files += 1,
            None => self.summary.new_files += 1,
        }
        let after = f.file().metadata().ok();
        let changed = after.as_ref().is_none_or(|a| {
            a.size() != size
                || a.mtime() != md.mtime()
                || a.mtime_nsec() != md.mtime_nsec()
                || a.ctime() != md.ctime()
                || a.ctime_nsec() != md.ctime_nsec()
        });
        if changed {
            self.warn(
                path,
                "changed while being read: the snapshot holds the bytes read, which may mix old and new contents",
            );
        } else if let Some(c) = &mut self.cache {
            // A file modified just before the backup started (within the
            // kernel's coarse timestamp tick) could change again without
            // its mtime moving: the next run reads it again, as git does
            // with racily clean files.
            let mtime = (md.mtime() as i128) * 1_000_000_000 + (md.mtime_nsec() as i128);
            if mtime < self.racy_before as i128 {
                c.record(pbytes, md, &content);
            } else {
                c.record_untrusted(pbytes, md, &content);
            }
        }
        Ok(Some((content, size)))
    }

    fn finish_tree(&mut self, tree: Tree) -> Result<Id> {
        let data = tree.encode();
        let id = self.repo.blob_id(&data);
        if self.dedup.is_new(&id, data.len()) && self.jobs.is_some() {
            self.queue(Plain {
                kind: BlobKind::Tree,
                id,
                refs: tree.refs(),
                data,
            })?;
        }
        Ok(id)
    }

    /// Waits until the seal workers have hashed the `sent` chunks of a
    /// large file, and puts their IDs in place.
    fn await_ticket(&self, t: &Ticket, sent: usize, content: &mut [Id]) -> Result<()> {
        let mut ids = t.ids.lock().unwrap_or_else(|p| p.into_inner());
        while ids.len() < sent {
            self.check_stop()?;
            ids = t
                .ready
                .wait_timeout(ids, std::time::Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        for &(idx, id) in ids.iter() {
            content[idx as usize] = id;
        }
        Ok(())
    }

    /// Adds a new blob to the batch, sending the batch when it is full.
    fn queue(&mut self, p: Plain) -> Result<()> {
        self.batch_bytes += p.data.len();
        self.batch.push(Work::Hashed(p));
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_BLOBS {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let job = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if let Some(tx) = &self.jobs
            && tx.send(job).is_err()
        {
            self.check_stop()?;
            return Err(Error::Interrupted);
        }
        Ok(())
    }
}

/// The first 128 bits of an ID, for the in-flight set.
fn short(id: &Id) -> u128 {
    u128::from_le_bytes(id.0[..16].try_into().expect("16 bytes"))
}

/// Whether a chunk is a zero run worth storing as a hole (4 KiB or more).
fn is_zero(data: &[u8]) -> bool {
    data.len() >= 4096 && cairn_chunker::is_zero(data)
}

/// Opens a file for reading without updating its access time where the
/// kernel allows it (owner or root), falling back to a plain open.
fn open_noatime(path: &Path) -> std::io::Result<File> {
    const O_NOATIME: i32 = 0o1000000;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOATIME)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(1) => File::open(path),
        Err(e) => Err(e),
    }
}
