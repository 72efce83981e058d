//! One backup run, whatever its source: the checks before it, the seal
//! workers and pack sink around the walker, and the commit after it.
//!
//! A backup of paths and a backup of a stream differ only in what they
//! hand the walker (a tree of sources, or one reader) and in what the
//! snapshot's body records; everything that makes a run safe (the
//! rollback check, resuming interrupted packs, bounded channels, the
//! failure slot, the commit check against a concurrent prune) lives here
//! once, so the two cannot drift apart.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use cairn_chunker::{Cutter, Params};
use cairn_format::Id;
use cairn_format::snapshot::{Body, Envelope};
use cairn_repo::{Repo, SealedBlob, Session, SpillSet};
use crossbeam_channel::bounded;

use crate::exclude::Excluder;
use crate::filescache::FilesCache;
use crate::meta::Names;
use crate::{Error, Result, Warning};

use super::pipeline::{Dedup, Failure, Job, Pool, run_sink, seal_worker};
use super::walker::Walker;
use super::{BackupOptions, BackupSummary, Progress};

/// Staging files untouched for this long belong to a dead process (a live
/// writer appends to its pack file continuously).
const STALE_STAGING_SECS: u64 = 3600;

/// Files modified this close to the start of a backup are not trusted to
/// the files cache: file timestamps come from a coarse clock (one kernel
/// tick, at most 10 ms).
const RACY_NS: i64 = 20_000_000;

/// A backup run between its checks and its commit.
pub(super) struct Run<'a> {
    pub(super) opts: &'a BackupOptions,
    pub(super) progress: &'a Progress,
    pub(super) cancel: &'a AtomicBool,
    pub(super) start: Instant,
    pub(super) started_ns: i64,
    pub(super) summary: BackupSummary,
}

/// What the pipeline leaves for the commit.
pub(super) struct Walked {
    pub(super) root: Id,
    /// The files cache, to be committed after the snapshot.
    pub(super) cache: Option<FilesCache>,
    session: Session,
    /// Packs this run deduplicated against or wrote.
    used_packs: Vec<Id>,
}

/// What the snapshot's body says about the source.
pub(super) struct Described {
    /// Absolute paths, raw bytes.
    pub(super) paths: Vec<Vec<u8>>,
    /// Exclude patterns in effect.
    pub(super) excludes: Vec<String>,
    /// Files of the previous run this one did not see, when the files
    /// cache tells.
    pub(super) vanished: Option<crate::shrink::Tally>,
}

impl<'a> Run<'a> {
    /// Checks the repository for `group` and resumes what an interrupted
    /// run left (nothing of it for a dry run, which writes nothing).
    pub(super) fn begin(
        repo: &mut Repo,
        opts: &'a BackupOptions,
        group: String,
        progress: &'a Progress,
        cancel: &'a AtomicBool,
    ) -> Result<Run<'a>> {
        let mut run = Run {
            opts,
            progress,
            cancel,
            start: Instant::now(),
            started_ns: cairn_repo::now_ns(),
            summary: BackupSummary {
                group,
                ..BackupSummary::default()
            },
        };
        if !opts.dry_run {
            if let Some(d) = &opts.state_dir
                && !opts.accept_rollback
            {
                crate::rollback::check(repo, d, &run.summary.group)?;
            }
            repo.storage()
                .clean_staging(std::time::Duration::from_secs(STALE_STAGING_SECS));
            // One listing serves both: packs an interrupted run left
            // unindexed, and the packs this writer may deduplicate against.
            let packs = repo.storage().list(cairn_storage::Kind::Pack)?;
            run.summary.packs_recovered = repo.recover_unindexed(&packs)? as u64;
            repo.scope_dedup(&packs)?;
        }
        Ok(run)
    }

    /// Runs the seal workers and the pack sink while `walk` feeds them
    /// through the walker it is given and returns the root tree; `roots`
    /// are the directories it will walk, for the scan-ahead. Whatever
    /// `walk` leaves in the walker's batch is sent before the workers are
    /// told to end, even after an error: what was read is kept for the
    /// rerun.
    pub(super) fn pipeline(
        &mut self,
        repo: &mut Repo,
        excluder: &Excluder,
        cache: Option<FilesCache>,
        roots: &[std::path::PathBuf],
        walk: impl FnOnce(&mut Walker<'_>) -> Result<Id>,
    ) -> Result<Walked> {
        let opts = self.opts;
        let (progress, cancel) = (self.progress, self.cancel);
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
        let summary = &mut self.summary;
        let racy_before = self.started_ns - RACY_NS;

        let (walk_result, sink_result) = std::thread::scope(|s| {
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
                excluder,
                opts,
                // A dry run drops the sender here, so the workers end at once.
                jobs: Some(job_tx).filter(|_| !opts.dry_run),
                batch: Vec::new(),
                batch_bytes: 0,
                pool: &pool,
                dedup: &dedup,
                cache,
                names: Names::default(),
                summary,
                progress,
                cancel,
                failure: &failure,
                root_dev: 0,
                kept: 0,
                chunk_buf: Vec::new(),
                racy_before,
                zero_ids: std::collections::HashMap::new(),
                prefetch: super::prefetch::Prefetch::start(roots, excluder, opts.one_file_system),
            };
            let walked = walk(&mut w);
            let sent = w.send_batch();
            w.jobs = None;
            let cache = w.cache.take();
            drop(w);
            let sunk = sink.join().unwrap_or_else(|_| {
                Err(Error::Input("internal error: pack writer panicked".into()))
            });
            (walked.and_then(|root| sent.map(|()| (root, cache))), sunk)
        });
        if let Some(e) = failure.take() {
            return Err(e);
        }
        // This run's packs are in index files on disk; the in-memory index
        // is not extended with them (a million new blobs would double the
        // memory a backup needs), so `repo` must be reopened to read them.
        let (stats, mut used_packs) = sink_result?;
        let (root, cache) = walk_result?;
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        used_packs.extend(dedup.used_packs());
        let summary = &mut self.summary;
        summary.raw_bytes_added = dedup.raw_added.load(Ordering::Relaxed);
        summary.blobs_added = stats.blobs;
        summary.bytes_added = stats.bytes;
        summary.packs_added = stats.packs;
        summary.duration_secs = self.start.elapsed().as_secs_f64();
        Ok(Walked {
            root,
            cache,
            session,
            used_packs,
        })
    }

    /// Writes the snapshot of `walked` (never for a dry run) and records it
    /// for the rollback check; returns the summary. The files cache, if
    /// any, is the caller's to commit once this succeeded: take it out of
    /// `walked` first.
    pub(super) fn commit(
        mut self,
        repo: &Repo,
        walked: Walked,
        source: Described,
    ) -> Result<BackupSummary> {
        let opts = self.opts;
        let summary = &mut self.summary;
        let (snaps, _) = Repo::list_snapshots(&**repo.storage())?;
        let previous = snaps
            .iter()
            .rev()
            .find(|s| s.envelope.group == summary.group);
        let parent = previous.map(|s| s.id);
        if let (Some(guard), Some(prev)) = (&opts.guard, previous) {
            let files = summary.new_files + summary.changed_files + summary.unchanged_files;
            let s = crate::shrink::measure(
                &prev.envelope,
                files,
                summary.total_bytes,
                source.vanished.as_ref(),
            );
            (guard.0)(&s).map_err(Error::Refused)?;
        }
        let env = Envelope {
            time_ns: self.started_ns,
            group: summary.group.clone(),
            tags: opts.tags.clone(),
            root: walked.root,
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
            paths: source.paths,
            command: opts.command.clone(),
            excludes: source.excludes,
            program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            new_files: summary.new_files,
            changed_files: summary.changed_files,
            unchanged_files: summary.unchanged_files,
            bytes_read: summary.bytes_read,
            duration_ms: self.start.elapsed().as_millis() as u64,
            errors: summary.warnings.len() as u64,
            unknown: Vec::new(),
        };
        cairn_repo::garbage::check_commit(
            &**repo.storage(),
            &repo.condemned().seen,
            &walked.used_packs,
        )?;
        let id = repo.commit_snapshot(&env, &body, &walked.session)?;
        if let Some(d) = &opts.state_dir
            && let Err(e) = crate::rollback::record(d, &summary.group, &id, self.started_ns)
        {
            summary.warnings.push(Warning {
                path: d.display().to_string(),
                message: format!(
                    "snapshot saved, but this machine could not record it, so it cannot notice if the repository is later rolled back past it: {e}"
                ),
            });
        }
        summary.snapshot = Some(id.to_hex());
        summary.duration_secs = self.start.elapsed().as_secs_f64();
        Ok(self.summary)
    }
}
