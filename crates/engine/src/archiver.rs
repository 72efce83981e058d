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

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use cairn_chunker::{Cutter, Params};
use cairn_format::snapshot::{Body, Envelope};
use cairn_repo::{Repo, SealedBlob, SpillSet};
use crossbeam_channel::bounded;

use crate::exclude::Excluder;
use crate::filescache::FilesCache;
use crate::meta::Names;
use crate::{Error, Result, Warning};

mod pipeline;
mod walker;

use pipeline::{Dedup, Failure, Job, Pool, run_sink, seal_worker};
use walker::{Walker, scan};

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
    /// Asked before the snapshot is committed, with what it loses
    /// compared with the group's last snapshot (none: always committed).
    pub guard: Option<crate::shrink::CommitGuard>,
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
            guard: None,
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
        group: opts
            .group
            .clone()
            .unwrap_or_else(|| group_of(&opts.hostname, &paths)),
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
    let (root, mut cache) = walk_result?;
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
    let previous = snaps
        .iter()
        .rev()
        .find(|s| s.envelope.group == summary.group);
    let parent = previous.map(|s| s.id);
    let files = summary.new_files + summary.changed_files + summary.unchanged_files;
    if let (Some(guard), Some(prev)) = (&opts.guard, previous) {
        let vanished = cache.as_mut().and_then(|c| c.vanished());
        let s = crate::shrink::measure(&prev.envelope, files, summary.total_bytes, vanished);
        (guard.0)(&s).map_err(Error::Refused)?;
    }
    let env = Envelope {
        time_ns: started_ns,
        group: summary.group.clone(),
        tags: opts.tags.clone(),
        root,
        parent,
        files,
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

/// The group a backup of `paths` from `hostname` gets when none is
/// named: `HOST:PATH[,PATH…]`, the paths made absolute and sorted.
pub fn default_group(hostname: &str, paths: &[PathBuf]) -> Result<String> {
    Ok(group_of(hostname, &normalize_paths(paths)?))
}

fn group_of(hostname: &str, paths: &[PathBuf]) -> String {
    let ps: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!("{hostname}:{}", ps.join(","))
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
