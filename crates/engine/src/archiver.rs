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
//!
//! [`backup`] walks paths; [`backup_stream`] stores one byte stream as a
//! file. Both are one run (`run.rs`) of the same pipeline, differing only in
//! what they hand the walker.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use cairn_repo::Repo;

use crate::exclude::Excluder;
use crate::filescache::FilesCache;
use crate::{Error, Result, Warning};

mod guide;
mod pipeline;
mod prefetch;
mod run;
mod stream;
mod walker;

use run::{Described, Run};
pub use stream::{STREAM_MODE, backup_stream};
use walker::scan;

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
    /// Group; default `host:path[,path]` (`host:stdin:NAME` for a
    /// stream, see [`backup_stream`]).
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

/// Runs a backup. `cancel` stops it cleanly (no snapshot; uploaded data is
/// kept for the rerun).
pub fn backup(
    repo: &mut Repo,
    opts: &BackupOptions,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<BackupSummary> {
    let paths = normalize_paths(&opts.paths)?;
    let excluder = Excluder::new(&opts.excludes, &opts.exclude_files, opts.exclude_caches)?;
    let group = opts
        .group
        .clone()
        .unwrap_or_else(|| group_of(&opts.hostname, &paths));
    let mut run = Run::begin(repo, opts, group, progress, cancel)?;
    let cache = opts.cache_dir.as_ref().map(|d| {
        let h = cairn_crypto::plain_hash(run.summary.group.as_bytes());
        FilesCache::open(
            &d.join(format!("files-{}", hex::encode(&h[..8]))),
            !opts.dry_run,
        )
    });
    let mut walked = std::thread::scope(|s| {
        if opts.scan {
            let (paths, ex) = (&paths, &excluder);
            s.spawn(move || scan(paths, ex, opts.one_file_system, progress, cancel));
        }
        run.pipeline(repo, &excluder, cache, &paths, |w| w.walk_roots(&paths))
    })?;
    if opts.dry_run {
        return Ok(run.summary);
    }
    let mut cache = walked.cache.take();
    let source = Described {
        vanished: cache.as_mut().and_then(|c| c.vanished()),
        paths: paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
        excludes: excluder.patterns().to_vec(),
    };
    let summary = run.commit(repo, walked, source)?;
    if let Some(c) = cache {
        c.commit();
    }
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
