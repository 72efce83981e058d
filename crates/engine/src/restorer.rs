//! Restoring a snapshot (or part of it) to a directory.
//!
//! The calling thread walks the trees, creates directories, symlinks and
//! special files, and hands regular files to worker threads in batches of
//! consecutive files, so each worker reads packs roughly in the order they
//! were written and its read-ahead window serves many small files. Large
//! files are cut into parts written in parallel at their offsets, so one
//! big file does not leave the other cores idle. From a local repository
//! large files are queued apart from the small ones, and half the workers
//! take them first; a restore too large for memory writes them to the disk
//! directly (`filewrite`, from a thread per worker), and one that fits
//! writes them through the page cache with the parts of two files
//! interleaved, as two workers cannot copy into one file at once; past
//! the kernel's free dirty limit, where its writeback would make the
//! workers wait, copies of large files go to the disk directly, from
//! lanes of their own that copy each chunk from the first copy as soon
//! as it is written (`Plan::copy_of`). From a remote one (S3) every file
//! goes through the page cache: there the workers wait on the network,
//! and waiting on the disk besides made restores take about 40% longer. Every
//! chunk is authenticated before a byte of it is written; a file whose
//! data is damaged is removed rather than left with wrong bytes. A chunk
//! met again (a copied file, a repeated segment) is read back from the
//! page cache where this restore already wrote it rather than decoded a
//! second time: its bytes were authenticated when first written, and a
//! copy costs a small part of decrypting, decompressing and hashing it
//! again.
//! Runs of zeros become holes, so sparse files stay sparse. Directory
//! metadata is applied last, deepest first, so restoring children does not
//! disturb their parents' times and read-only directories can be filled.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::tree::{Node, NodeType};
use cairn_repo::{BlobReader, Repo};
use crossbeam_channel::bounded;
use ignore::gitignore::Gitignore;

use crate::archiver::Progress;
use crate::filewrite::{PartWriter, SharedBlocks, WriteBehind};
use crate::meta::{ApplyOutcome, apply, apply_file, is_root, make_special};
use crate::walk::{find, join, root_node};
use crate::{Error, Result, Warning};

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Target directory.
    pub target: PathBuf,
    /// Path inside the snapshot to restore (its contents land in target).
    pub subpath: Option<String>,
    /// Only restore paths matching these patterns (and their parents).
    pub includes: Vec<String>,
    /// Skip paths matching these patterns.
    pub excludes: Vec<String>,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// What to do with entries already at the target.
    pub overwrite: Overwrite,
    /// Remove what is at the target but not in the snapshot, so that the
    /// target ends equal to it.
    pub delete: bool,
    /// The bytes the restore will write, when known (a whole snapshot's
    /// recorded size): one that fits easily in memory is written through
    /// the page cache throughout (see `filewrite::fits_in_memory`).
    pub expected_bytes: Option<u64>,
}

/// What a restore does with an entry already at its destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    #[default]
    Always,
    /// Keep a regular file whose size and modification time (to the
    /// nanosecond) are the snapshot's, setting only its mode, owner and
    /// xattrs where they differ, and a symlink with the same target: a
    /// restore sets a file's time after its last byte, so a file cut
    /// short by an interrupted restore never matches, and running the
    /// restore again resumes it.
    IfChanged,
    /// Leave anything that exists as it is, directories included (their
    /// mode, owner, xattrs and times).
    Never,
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks, FIFOs and devices created.
    pub others: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Bytes of file contents.
    pub bytes: u64,
    /// Of those, bytes copied from chunks this restore had already written
    /// (copies of files, repeated segments) instead of decoded again.
    pub bytes_copied: u64,
    /// Entries whose owner could not be set (restoring as non-root).
    pub owners_not_applied: u64,
    /// Entries with extended attributes that could not be set.
    pub xattrs_not_applied: u64,
    /// Files not restored because their data is damaged.
    pub damaged_files: u64,
    /// Entries already at the target and left as they were (see
    /// [`Overwrite`]).
    pub kept: u64,
    /// Entries removed from the target because the snapshot does not hold
    /// them (`delete`).
    pub deleted: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Problems, one per entry.
    pub warnings: Vec<Warning>,
}

struct Shared {
    summary: Mutex<RestoreSummary>,
    seen: Mutex<HashMap<Id, Seen>>,
    /// Told when a chunk is added to `seen`, for copies waiting on it.
    seen_added: std::sync::Condvar,
    /// Where a write found the target's disk full: the restore stops
    /// (every file after would fail the same way).
    full: Mutex<Option<PathBuf>>,
    /// Set with `full`, read where workers and the walk check for Ctrl-C.
    stop: AtomicBool,
    /// Workers still running: once none is, a copy waits no more for the
    /// files it copies (their parts will not be written, after a panic).
    workers: AtomicUsize,
}

/// The kernel's free dirty limit and the memory available now, in bytes,
/// which decide how a restore of a known size writes (see
/// `Plan::copy_of`): for a caller that wants a restore on either side.
pub fn memory_limits() -> Option<(u64, u64)> {
    Some((
        crate::filewrite::free_dirty_limit()?,
        crate::filewrite::memory_available()?,
    ))
}

/// Counts a worker out of [`Shared::workers`] however it ends.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a chunk of this restore was written.
#[derive(Clone)]
struct Seen {
    path: Arc<Path>,
    offset: u64,
    /// Its length as decoded (the index may know copies of other lengths).
    len: usize,
    /// The chunk is all zeros, written as a hole: nothing to copy.
    zero: bool,
}

/// Chunks smaller than this are decoded again rather than copied: opening
/// the earlier file costs about as much as decoding a small chunk.
const SEEN_MIN: usize = 64 << 10;
/// Entries in the map of written chunks, about 100 bytes each; when full it
/// starts again, so memory stays bounded on any restore.
const SEEN_MAX: usize = 32 << 10;

impl Shared {
    fn warn(&self, path: &Path, msg: String) {
        self.summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .warnings
            .push(Warning {
                path: path.display().to_string(),
                message: msg,
            });
    }
    /// Remembers where a chunk's bytes are in a restored file, for later
    /// copies; the caller vouches that they are there.
    fn seen_at(&self, id: Id, seen: Seen) {
        let mut map = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SEEN_MAX {
            map.clear();
        }
        map.insert(id, seen);
        drop(map);
        self.seen_added.notify_all();
    }
    fn with<T>(&self, f: impl FnOnce(&mut RestoreSummary) -> T) -> T {
        f(&mut self.summary.lock().unwrap_or_else(|p| p.into_inner()))
    }
    fn outcome(&self, o: ApplyOutcome) {
        self.with(|s| {
            s.owners_not_applied += u64::from(o.owner_failed);
            s.xattrs_not_applied += u64::from(o.xattr_failed);
        });
    }
}

type Batch = Vec<Part>;

/// Restores the tree `root` of a snapshot.
pub fn restore(
    repo: &Repo,
    root: Id,
    opts: &RestoreOptions,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<RestoreSummary> {
    repo.require_owner("restore")?;
    let start = Instant::now();
    let includes = crate::exclude::compile(&opts.includes)?;
    let excludes = crate::exclude::compile(&opts.excludes)?;
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::Io {
        op: "create target directory",
        path: opts.target.clone(),
        source: e,
    })?;
    let (start_node, start_path) = match &opts.subpath {
        Some(p) => {
            let n = find(repo, root, p)?;
            let abs = format!("/{}", p.trim_matches('/'));
            (n, abs.into_bytes())
        }
        None => (root_node(root), b"/".to_vec()),
    };
    let as_root = is_root();
    let shared = Shared {
        summary: Mutex::new(RestoreSummary::default()),
        seen: Mutex::new(HashMap::new()),
        seen_added: std::sync::Condvar::new(),
        full: Mutex::new(None),
        stop: AtomicBool::new(false),
        workers: AtomicUsize::new(0),
    };
    let local = repo.storage().read_concurrency() == 1;
    let can_direct = local && crate::filewrite::direct_pays(&opts.target);
    let direct = can_direct
        && !opts
            .expected_bytes
            .is_some_and(crate::filewrite::fits_in_memory);
    // A restore that fits in memory but passes the kernel's free dirty
    // limit, by this many bytes (see `Plan::copy_of`).
    let past_limit = (can_direct && !direct)
        .then(|| {
            let bytes = opts.expected_bytes?;
            let over = bytes.saturating_sub(crate::filewrite::free_dirty_limit()?);
            (over > 0).then_some(over)
        })
        .flatten();
    // Workers wait as well as compute: on pack reads from a cold disk, on
    // file creation, and over a network on every answer. A second worker
    // per core (up to eight more) keeps the cores busy through the waits:
    // on this machine's whole system (6.4 GB, 139,000 entries; 2 cores,
    // three runs each, alternated) the median went from 9.1 s to 8.0 s
    // and peak memory from 76 to 110 MiB, and a 4 GiB restore through the
    // page cache took 3.4-4.5 s against 3.5-6.4 s. Over a network, at
    // least as many as the storage takes reads at once. Past the free
    // dirty limit packs are read without the page cache
    // (`Repo::uncached_reader`) and so without the kernel's read-ahead:
    // two more per core keep the cores busy while they wait.
    let threads = match opts.threads {
        0 => {
            let cores = crate::threads(0);
            let more = cores.min(8) * if past_limit.is_some() { 2 } else { 1 };
            (cores + more).max(repo.storage().read_concurrency())
        }
        n => n,
    };
    let uncached = past_limit.is_some();
    let (tx, rx) = bounded::<Batch>(threads);
    let (big_tx, big_rx) = bounded::<Batch>(BIG_QUEUE);
    // Not bounded: the lanes wait on the workers, never the walk on them
    // (`Plan::feed_copies` keeps all but a few parts back meanwhile).
    let (copy_tx, copy_rx) = crossbeam_channel::unbounded::<Part>();
    let mut plan = Plan {
        local,
        direct,
        copies: past_limit.map(|over| (Copies::default(), copy_tx, over)),
        big: Some(big_tx),
        pending: Vec::new(),
        copy_pending: Vec::new(),
        index: repo.index(),
        fresh_dirs: HashMap::new(),
        umask: crate::meta::umask(),
        includes: includes.as_ref(),
        excludes: excludes.as_ref(),
        dirs: Vec::new(),
        links: Vec::new(),
        first_link: HashMap::new(),
        batch: Vec::new(),
        batch_bytes: 0,
        as_root,
        overwrite: opts.overwrite,
        delete: opts.delete,
        shared: &shared,
        cancel,
    };
    let walked = std::thread::scope(|s| {
        for k in 0..threads {
            // Half the workers (at least one) take large files first, the
            // others small ones: one waits on the disk while another
            // keeps the cores busy.
            let (pref, other) = if k < (threads / 2).max(1) {
                (big_rx.clone(), rx.clone())
            } else {
                (rx.clone(), big_rx.clone())
            };
            let shared = &shared;
            shared.workers.fetch_add(1, Ordering::AcqRel);
            s.spawn(move || {
                let _running = Running(&shared.workers);
                let mut w = Worker::new(repo, uncached, cancel);
                while let Some(batch) = next_batch(&pref, &other) {
                    for part in batch {
                        if cancel.load(Ordering::Relaxed) || shared.stop.load(Ordering::Relaxed) {
                            return;
                        }
                        restore_part(&mut w, part, as_root, shared, progress);
                    }
                }
            });
        }
        drop(rx);
        drop(big_rx);
        // Copies of large files, each chunk as soon as its first copy is
        // written (see `Plan::copy_of`).
        let shared = &shared;
        for _ in 0..COPY_LANES {
            let copy_rx = copy_rx.clone();
            s.spawn(move || {
                let mut w = Worker::new(repo, uncached, cancel);
                for part in copy_rx {
                    if cancel.load(Ordering::Relaxed) || shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    restore_part(&mut w, part, as_root, shared, progress);
                }
            });
        }
        drop(copy_rx);
        // A panic while planning must still close the queues: the scope
        // waits for the workers before it rethrows, and they wait on the
        // queues, so the restore would hang instead of failing.
        let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = if start_node.node_type() == NodeType::Dir {
                let mut reader = repo.reader();
                let r = plan.dir(
                    &mut reader,
                    start_node.subtree.as_ref().expect("dir has subtree"),
                    &start_path,
                    &opts.target,
                    &tx,
                );
                if opts.subpath.is_some() {
                    plan.dirs.push((opts.target.clone(), start_node.clone()));
                }
                r
            } else {
                let dest = opts
                    .target
                    .join(std::ffi::OsStr::from_bytes(&start_node.name));
                plan.entry(&start_path, &start_node, &dest, &tx, &mut repo.reader())
            };
            plan.flush(&tx);
            plan.feed_big(true);
            r
        }));
        drop(tx);
        drop(plan.big.take());
        drop(plan.copies.take());
        match planned {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    });
    // A full disk is the reason, whatever else stopped with it (the
    // walk's next directory, say).
    let full = shared.full.lock().unwrap_or_else(|p| p.into_inner()).take();
    let full = full.or_else(|| match &walked {
        Err(e @ Error::Io { path, .. }) if e.is_no_space() => Some(path.clone()),
        _ => None,
    });
    if let Some(path) = full {
        let files = shared.with(|s| s.files);
        return Err(Error::TargetFull { path, files });
    }
    walked?;
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    for (dest, first) in std::mem::take(&mut plan.links) {
        if plan.overwrite != Overwrite::Always && same_file(&dest, &first) {
            shared.with(|s| s.kept += 1);
            continue;
        }
        if plan.overwrite == Overwrite::Never && std::fs::symlink_metadata(&dest).is_ok() {
            shared.with(|s| s.kept += 1);
            continue;
        }
        let _ = std::fs::remove_file(&dest);
        match std::fs::hard_link(&first, &dest) {
            Ok(()) => shared.with(|s| s.hardlinks += 1),
            Err(e) => shared.warn(&dest, format!("hard link not created: {e}")),
        }
    }
    for (dest, node) in plan.dirs.iter().rev() {
        // `never` leaves a directory that was there with its own mode,
        // owner and times (its mtime moves as missing entries come back).
        if plan.overwrite == Overwrite::Never && !plan.fresh_dirs.contains_key(dest) {
            shared.with(|s| s.kept += 1);
            continue;
        }
        match apply(dest, node, as_root) {
            Ok(o) => shared.outcome(o),
            Err(e) => shared.warn(dest, format!("metadata not applied: {e}")),
        }
    }
    let mut summary = shared
        .summary
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    summary.duration_secs = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// What reading a restore back found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Verified {
    /// Files read back and compared.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files whose bytes differ from the snapshot's, or that are missing,
    /// with what is wrong.
    pub mismatches: Vec<Warning>,
}

/// Reads back every regular file a restore with `opts` wrote and checks
/// it against the snapshot: the size, and each chunk's keyed hash against
/// the chunk's ID. Nothing is decrypted: the IDs in the trees are enough.
pub fn verify(
    repo: &Repo,
    root: Id,
    opts: &RestoreOptions,
    cancel: &AtomicBool,
) -> Result<Verified> {
    let includes = crate::exclude::compile(&opts.includes)?;
    let excludes = crate::exclude::compile(&opts.excludes)?;
    let mut out = Verified::default();
    let (start, start_path) = match &opts.subpath {
        Some(p) => (
            find(repo, root, p)?,
            format!("/{}", p.trim_matches('/')).into_bytes(),
        ),
        None => (root_node(root), b"/".to_vec()),
    };
    let index = repo.index();
    let mut buf = Vec::new();
    let mut check = |sp: &[u8], dest: &Path, n: &Node| -> Result<()> {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let p = Path::new(std::ffi::OsStr::from_bytes(sp));
        let skip = |g: Option<&Gitignore>| {
            g.is_some_and(|g| crate::exclude::matches_or_parent(g, p, false))
        };
        if n.node_type() != NodeType::File
            || skip(excludes.as_ref())
            || includes
                .as_ref()
                .is_some_and(|g| !crate::exclude::matches_or_parent(g, p, false))
        {
            return Ok(());
        }
        let mut bad = |m: String| {
            out.mismatches.push(Warning {
                path: dest.display().to_string(),
                message: m,
            })
        };
        let f = match File::open(dest) {
            Ok(f) => f,
            Err(e) => {
                bad(format!("cannot be read back: {e}"));
                return Ok(());
            }
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if len != n.size {
            bad(format!("is {len} bytes, the snapshot has {}", n.size));
            return Ok(());
        }
        let mut at = 0u64;
        for id in &n.content {
            let Some(raw) = index.get(id).map(|l| l.raw_len as usize) else {
                bad(format!("chunk {} is not in the index", id.short()));
                return Ok(());
            };
            buf.clear();
            buf.resize(raw, 0);
            if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, at) {
                bad(format!("cannot be read back at {at}: {e}"));
                return Ok(());
            }
            if repo.blob_id(&buf) != *id {
                bad(format!(
                    "differs from the snapshot in the {raw} bytes at {at}"
                ));
                return Ok(());
            }
            at += raw as u64;
        }
        out.files += 1;
        out.bytes += n.size;
        Ok(())
    };
    match start.subtree {
        Some(sub) if start.node_type() == NodeType::Dir => {
            let mut reader = repo.reader();
            crate::walk::walk(&mut reader, &sub, &start_path, &mut |sp, n| {
                let rel = &sp[start_path.len()..];
                let rel = rel.strip_prefix(b"/").unwrap_or(rel);
                let dest = opts.target.join(std::ffi::OsStr::from_bytes(rel));
                check(sp, &dest, n)
            })?;
        }
        _ => {
            let dest = opts.target.join(std::ffi::OsStr::from_bytes(&start.name));
            check(&start_path, &dest, &start)?;
        }
    }
    Ok(out)
}

struct Plan<'a> {
    index: &'a cairn_repo::Index,
    /// The repository is local: large files are queued apart (see the
    /// module's comment).
    local: bool,
    /// Large files are written directly: the repository is local, the
    /// target is on a device (`filewrite::direct_pays`) and the restore
    /// is not known to fit in memory (`filewrite::fits_in_memory`).
    direct: bool,
    /// In a restore that fits in memory with large files that may be
    /// written directly (local repository, target on a device): the
    /// chunks of the large files queued so far, the lanes that write
    /// copies of them (see [`Plan::copy_of`]), and how many more bytes of
    /// copies they may take.
    copies: Option<(Copies, crossbeam_channel::Sender<Part>, u64)>,
    /// Parts of large files, queued apart from the batches of small files
    /// (see [`next_batch`]).
    big: Option<crossbeam_channel::Sender<Batch>>,
    /// Parts of the last two large files written through the page cache,
    /// not queued yet (see [`Plan::queue_buffered`]).
    pending: Vec<std::collections::VecDeque<Part>>,
    /// Parts of copies not given to the lanes yet (see
    /// [`Plan::feed_copies`]).
    copy_pending: Vec<std::collections::VecDeque<Part>>,
    /// Directories this restore created (empty when made), and whether
    /// each is without a default ACL, so that a file created there with a
    /// mode gets that mode less the umask (see [`exact_mode`]).
    fresh_dirs: HashMap<PathBuf, bool>,
    /// The process's umask, if known.
    umask: Option<u32>,
    includes: Option<&'a Gitignore>,
    excludes: Option<&'a Gitignore>,
    dirs: Vec<(PathBuf, Node)>,
    links: Vec<(PathBuf, PathBuf)>,
    first_link: HashMap<(u64, u64), PathBuf>,
    batch: Batch,
    batch_bytes: u64,
    as_root: bool,
    overwrite: Overwrite,
    delete: bool,
    shared: &'a Shared,
    cancel: &'a AtomicBool,
}

const BATCH_BYTES: u64 = 8 << 20;
/// Threads that write copies of large files (see [`Plan::copy_of`]). One
/// fell behind the files it copies, which took the cores' time for
/// themselves: at the end of a 4 GiB restore it still had 0.2-0.5 s of
/// copying to do, at the disk's pace with the cores idle. Two keep up, and
/// wait for the chunks they copy instead.
const COPY_LANES: usize = 2;
/// Parts of large files the walk may queue ahead of the workers: enough
/// to reach past a run of large files to the small ones behind it (a few
/// hundred bytes each; the files are created as they are queued).
const BIG_QUEUE: usize = 256;
const BATCH_FILES: usize = 256;
/// Files larger than this are split between workers.
const PART_BYTES: u64 = 16 << 20;

/// The chunks of the large files a restore has queued through the page
/// cache, each with its file, to tell a file that copies them. Bounded:
/// when full it starts again, as [`Shared::seen`] does, so a copy of a file
/// queued long before may be taken for new.
#[derive(Default)]
struct Copies(HashMap<Id, Arc<FileJob>>);

/// Chunks [`Copies`] holds at most (about 50 bytes each).
const COPIES_MAX: usize = 64 << 10;

/// What a copy waits for: chunks of files queued before it, and those
/// files, until they are written.
struct Sources {
    ids: std::collections::HashSet<Id>,
    jobs: Vec<Arc<FileJob>>,
}

impl Copies {
    /// What `content` (of `len` bytes) copies, when at least half of its
    /// bytes are in chunks noted before; `size` gives a chunk's length.
    fn sources(&self, content: &[Id], len: u64, size: impl Fn(&Id) -> u64) -> Option<Sources> {
        let mut ids = std::collections::HashSet::new();
        let mut jobs: Vec<Arc<FileJob>> = Vec::new();
        let mut known = 0u64;
        for id in content {
            let Some(job) = self.0.get(id) else { continue };
            known += size(id);
            ids.insert(*id);
            if !jobs.iter().any(|j| Arc::ptr_eq(j, job)) {
                jobs.push(job.clone());
            }
        }
        (known >= len.div_ceil(2)).then_some(Sources { ids, jobs })
    }

    /// Notes the chunks of `job`, a large file written through the cache.
    fn note(&mut self, job: &Arc<FileJob>) {
        let content = &job.node.content;
        if self.0.len() + content.len() > COPIES_MAX {
            self.0.clear();
        }
        for id in content.iter().take(COPIES_MAX) {
            self.0.entry(*id).or_insert_with(|| job.clone());
        }
    }
}

impl Plan<'_> {
    fn wanted(&self, snap_path: &[u8], is_dir: bool) -> (bool, bool) {
        let p = Path::new(std::ffi::OsStr::from_bytes(snap_path));
        if self
            .excludes
            .is_some_and(|g| crate::exclude::matches_or_parent(g, p, is_dir))
        {
            return (false, false);
        }
        match self.includes {
            None => (true, true),
            Some(g) => {
                let m = crate::exclude::matches_or_parent(g, p, is_dir);
                // A directory that does not match may still hold matches.
                (m, m || is_dir)
            }
        }
    }

    fn dir(
        &mut self,
        reader: &mut BlobReader<'_>,
        tree: &Id,
        snap_path: &[u8],
        dest: &Path,
        tx: &crossbeam_channel::Sender<Batch>,
    ) -> Result<()> {
        let t = match reader.load_tree(tree) {
            Ok(t) => t,
            Err(e) if e.is_integrity() => {
                self.shared.warn(
                    dest,
                    format!("directory not restored, its listing is damaged: {e}"),
                );
                self.shared.with(|s| s.damaged_files += 1);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if self.delete && !self.fresh_dirs.contains_key(dest) {
            self.delete_extra(dest, &t);
        }
        for n in &t.nodes {
            if self.cancel.load(Ordering::Relaxed) || self.shared.stop.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let sp = join(snap_path, &n.name);
            let d = dest.join(std::ffi::OsStr::from_bytes(&n.name));
            self.entry(&sp, n, &d, tx, reader)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        sp: &[u8],
        n: &Node,
        d: &Path,
        tx: &crossbeam_channel::Sender<Batch>,
        reader: &mut BlobReader<'_>,
    ) -> Result<()> {
        let is_dir = n.node_type() == NodeType::Dir;
        let (take, descend) = self.wanted(sp, is_dir);
        if is_dir {
            if !descend {
                return Ok(());
            }
            if take {
                self.mkdir(d)?;
                self.dirs.push((d.to_path_buf(), strip(n)));
                self.shared.with(|s| s.dirs += 1);
            }
            if let Some(sub) = &n.subtree {
                self.dir(reader, sub, sp, d, tx)?;
            }
            return Ok(());
        }
        if !take {
            return Ok(());
        }
        // Without --include every directory was made on the way down.
        if let Some(parent) = d.parent()
            && self.includes.is_some()
        {
            self.mkdir(parent)?;
        }
        if self.keep_existing(d, n) {
            self.shared.with(|s| s.kept += 1);
            if let Some(link) = n.link
                && n.node_type() == NodeType::File
            {
                self.first_link
                    .entry(link)
                    .or_insert_with(|| d.to_path_buf());
            }
            return Ok(());
        }
        match n.node_type() {
            NodeType::File => {
                if let Some(link) = n.link {
                    if let Some(first) = self.first_link.get(&link) {
                        self.links.push((d.to_path_buf(), first.clone()));
                        return Ok(());
                    }
                    self.first_link.insert(link, d.to_path_buf());
                }
                self.add_file(d, n, tx)?;
            }
            NodeType::Symlink => {
                remove_existing(d);
                let target = std::ffi::OsStr::from_bytes(n.target.as_deref().unwrap_or(b""));
                match std::os::unix::fs::symlink(target, d) {
                    Ok(()) => {
                        self.finish_special(d, n);
                    }
                    Err(e) => self.shared.warn(d, format!("symlink not created: {e}")),
                }
            }
            NodeType::Fifo | NodeType::CharDev | NodeType::BlockDev => {
                remove_existing(d);
                match make_special(d, n) {
                    Ok(()) => self.finish_special(d, n),
                    Err(e) => self
                        .shared
                        .warn(d, format!("{} not created: {e}", n.node_type().name())),
                }
            }
            NodeType::Socket => {}
            NodeType::Dir => unreachable!("handled above"),
        }
        Ok(())
    }

    /// Queues a file, split into parts of about [`PART_BYTES`] so that
    /// large files are written by every worker at once.
    fn add_file(
        &mut self,
        d: &Path,
        n: &Node,
        tx: &crossbeam_channel::Sender<Batch>,
    ) -> Result<()> {
        let mut cuts = vec![(0usize, 0u64)];
        let mut off = 0u64;
        let mut since = 0u64;
        let mut forged = false;
        for (i, id) in n.content.iter().enumerate() {
            if since >= PART_BYTES {
                cuts.push((i, off));
                since = 0;
            }
            let raw = self.index.get(id).map(|l| l.raw_len).unwrap_or(0);
            // Copies of one blob that disagree on its length (one was
            // forged): parts of a split file could not be placed, so the
            // file is written in one part, at the lengths read.
            forged |= self.index.has_other_copies()
                && self.index.other_copies(id).any(|l| l.raw_len != raw);
            off += u64::from(raw);
            since += u64::from(raw);
        }
        if forged {
            cuts.truncate(1);
        }
        let split = cuts.len() > 1;
        if split {
            remove_existing(d);
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(d)
                .and_then(|f| f.set_len(off));
            if let Err(e) = f {
                self.shared.warn(d, format!("not restored: {e}"));
                return Ok(());
            }
        }
        let sources = self.copy_of(n, off);
        let plain = self.fresh_dirs.get(d.parent().unwrap_or(d)).copied();
        let job = Arc::new(FileJob {
            dest: Arc::from(d),
            node: n.clone(),
            split,
            fresh: plain.is_some(),
            mode: (!split && plain == Some(true) && exact_mode(n, self.umask))
                .then_some(n.mode & 0o777),
            direct: (self.direct || sources.is_some()) && crate::filewrite::wants_direct(off),
            sources,
            shared: SharedBlocks::default(),
            parts_left: AtomicUsize::new(cuts.len()),
            failed: Mutex::new(None),
            writing: Mutex::new(()),
        });
        let buffered = !job.direct;
        if let Some((copies, _, _)) = &mut self.copies
            && crate::filewrite::wants_direct(off)
        {
            if job.sources.is_some() {
                let parts = cuts.iter().enumerate().map(|(k, &(first, offset))| {
                    let last = cuts.get(k + 1).map(|c| c.0).unwrap_or(n.content.len());
                    Part {
                        file: job.clone(),
                        chunks: first..last,
                        offset,
                    }
                });
                self.copy_pending.push(parts.collect());
                self.feed_copies(false);
                return Ok(());
            }
            copies.note(&job);
        }
        let mut held = std::collections::VecDeque::new();
        for (k, &(first, offset)) in cuts.iter().enumerate() {
            let last = cuts.get(k + 1).map(|c| c.0).unwrap_or(n.content.len());
            let end = cuts.get(k + 1).map(|c| c.1).unwrap_or(off);
            let part = Part {
                file: job.clone(),
                chunks: first..last,
                offset,
            };
            if self.local
                && crate::filewrite::wants_direct(off)
                && let Some(big) = &self.big
            {
                if buffered {
                    held.push_back(part);
                } else {
                    let _ = big.send(vec![part]);
                }
                continue;
            }
            self.batch.push(part);
            self.batch_bytes += end - offset;
            if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_FILES {
                self.flush(tx);
            }
        }
        if !held.is_empty() {
            self.queue_buffered(held);
        }
        Ok(())
    }

    /// The files that a large file `n` of `len` bytes copies, when at
    /// least half of its bytes are in chunks of large files queued before
    /// it (a copied disk image, a release kept twice), in a restore that
    /// fits in memory but passes the kernel's free dirty limit
    /// (`filewrite::free_dirty_limit`), for as many bytes as it passes it
    /// by. Such a file is written directly, by lanes of their own that
    /// copy each chunk from the page cache as soon as the first copy's
    /// worker has written it: that costs the cores little, and the disk,
    /// which only reads packs while the rest goes to the cache, has time
    /// for it. Through the cache, past that limit, the kernel makes the
    /// writers wait for its writeback, and each byte takes a fresh page,
    /// which on a VM that hands freed memory back to its host faults
    /// through to the host. On the 4 GiB mixed corpus (5 GB as its
    /// snapshot counts, two of its four 700 MB files copies; the limit
    /// here 3.5 GB) four alternating pairs took 2.68-2.82 s against
    /// 2.93-3.44 s with the copies through the cache, system time 1.6-1.8
    /// s against 3.1-4.1 s. Below the limit the writes cost only a copy
    /// and end before they reach the disk: at 2 GiB, copies written
    /// directly made the restore a fifth slower, waiting on the disk.
    fn copy_of(&mut self, n: &Node, len: u64) -> Option<Sources> {
        let (copies, _, budget) = self.copies.as_mut()?;
        if !crate::filewrite::wants_direct(len) || *budget == 0 {
            return None;
        }
        let index = self.index;
        let size = |id: &Id| index.get(id).map_or(0, |l| u64::from(l.raw_len));
        let sources = copies.sources(&n.content, len, size)?;
        *budget = budget.saturating_sub(len);
        Some(sources)
    }

    /// Queues the parts of a large file written through the page cache,
    /// interleaved with those of the large file before it. Two workers
    /// cannot copy into one file at once (the kernel holds its inode lock
    /// through each write), so workers on parts of one file took turns at
    /// the copy while a core could have copied into another file. On the
    /// 4 GiB mixed corpus (four files of 700 MB), seven alternating pairs
    /// took 3.07 s (median) interleaved against 3.34 s in file order;
    /// writing each file in one part did about as well as interleaving,
    /// but interleaving keeps the split, so that a lone large file is
    /// still decoded on every core.
    fn queue_buffered(&mut self, parts: std::collections::VecDeque<Part>) {
        if self.pending.len() >= 2 {
            self.interleave(false);
        }
        self.pending.push(parts);
        self.feed_big(false);
    }

    /// Queues pending parts, one of each file in turn: until one file has
    /// none left (or, with `all`, until none has any).
    fn interleave(&mut self, all: bool) {
        while !self.pending.is_empty() {
            if self.round() && !all {
                break;
            }
        }
    }

    /// Queues the parts of copies for the lanes, one of each copy in turn,
    /// whenever the lanes have less than two waiting, and all of them at
    /// the end of the walk (`last`). The large files they copy are written
    /// side by side (see [`Plan::queue_buffered`]), and so are the copies:
    /// queued one after the other, the lanes copied the first while the
    /// second's source was written, and then the whole second at the end,
    /// at the disk's pace, with the cores idle (on the 4 GiB corpus, the
    /// last 0.2-0.5 s of a 3.5 s restore; 40 ms with copies side by side
    /// and two lanes, see [`COPY_LANES`]).
    fn feed_copies(&mut self, last: bool) {
        let Some((_, lanes, _)) = &self.copies else {
            self.copy_pending.clear();
            return;
        };
        while !self.copy_pending.is_empty() && (last || lanes.len() < 2) {
            for q in &mut self.copy_pending {
                if let Some(p) = q.pop_front() {
                    let _ = lanes.send(p);
                }
            }
            self.copy_pending.retain(|q| !q.is_empty());
        }
    }

    /// Keeps the workers fed while large files wait for a partner: one
    /// round of pending parts whenever the queue of large files runs
    /// low, and all of them at the end of the walk (`last`).
    fn feed_big(&mut self, last: bool) {
        self.feed_copies(last);
        if last {
            self.interleave(true);
        } else if self.big.as_ref().is_some_and(|b| b.len() < 2) {
            self.round();
        }
    }

    /// Queues one part of each pending file; returns whether a file ran
    /// out of parts.
    fn round(&mut self) -> bool {
        let Some(big) = &self.big else {
            self.pending.clear();
            return true;
        };
        for q in &mut self.pending {
            if let Some(p) = q.pop_front() {
                let _ = big.send(vec![p]);
            }
        }
        let before = self.pending.len();
        self.pending.retain(|q| !q.is_empty());
        self.pending.len() < before
    }

    /// Whether the entry at `d` stays as it is (see [`Overwrite`]); one
    /// kept for matching the snapshot gets the snapshot's metadata.
    fn keep_existing(&mut self, d: &Path, n: &Node) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.overwrite == Overwrite::Always
            || d.parent().is_some_and(|p| self.fresh_dirs.contains_key(p))
        {
            return false;
        }
        let Ok(md) = std::fs::symlink_metadata(d) else {
            return false;
        };
        if self.overwrite == Overwrite::Never {
            return true;
        }
        let same = match n.node_type() {
            NodeType::File => {
                md.is_file()
                    && md.len() == n.size
                    && (md.mtime(), md.mtime_nsec()) == (n.mtime.sec, i64::from(n.mtime.nsec))
                    // A file hard-linked elsewhere is not this restore's.
                    && (md.nlink() == 1 || n.link.is_some())
            }
            NodeType::Symlink => {
                md.file_type().is_symlink()
                    && std::fs::read_link(d)
                        .ok()
                        .map(|t| t.into_os_string().into_vec())
                        == n.target.clone()
            }
            _ => false,
        };
        // Metadata is set only where it differs, so that a kept file is
        // not touched at all (its ctime tells).
        if same && n.node_type() == NodeType::File && !meta_matches(d, &md, n, self.as_root) {
            match apply(d, n, self.as_root) {
                Ok(o) => self.shared.outcome(o),
                Err(e) => self.shared.warn(d, format!("metadata not applied: {e}")),
            }
        }
        same
    }

    /// Removes what is in `dest` but not in the listing `t`.
    fn delete_extra(&mut self, dest: &Path, t: &cairn_format::tree::Tree) {
        let Ok(entries) = std::fs::read_dir(dest) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if t.nodes
                .binary_search_by(|n| n.name[..].cmp(name.as_bytes()))
                .is_ok()
            {
                continue;
            }
            let p = e.path();
            let r = match e.file_type() {
                Ok(ft) if ft.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
            match r {
                Ok(()) => self.shared.with(|s| s.deleted += 1),
                Err(err) => self.shared.warn(&p, format!("not deleted: {err}")),
            }
        }
    }

    fn finish_special(&mut self, d: &Path, n: &Node) {
        self.shared.with(|s| s.others += 1);
        match apply(d, n, self.as_root) {
            Ok(o) => self.shared.outcome(o),
            Err(e) => self.shared.warn(d, format!("metadata not applied: {e}")),
        }
    }

    fn mkdir(&mut self, d: &Path) -> Result<()> {
        if self.fresh_dirs.contains_key(d) {
            return Ok(());
        }
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => remove_existing(d),
            Err(_) => {}
        }
        std::fs::create_dir_all(d).map_err(|e| Error::Io {
            op: "create directory",
            path: d.to_path_buf(),
            source: e,
        })?;
        self.fresh_dirs
            .insert(d.to_path_buf(), !crate::meta::has_default_acl(d));
        Ok(())
    }

    fn flush(&mut self, tx: &crossbeam_channel::Sender<Batch>) {
        if !self.batch.is_empty() {
            let b = std::mem::take(&mut self.batch);
            self.batch_bytes = 0;
            let _ = tx.send(b);
        }
        self.feed_big(false);
    }
}

/// The next batch for a worker: from its preferred queue when that has
/// one, else whichever has one first; `None` once both are closed and
/// empty. With large files (written directly, so waiting on the disk) in
/// one queue and small ones (written through the page cache, so busy on
/// the CPU) in the other, a restore of both overlaps the two instead of
/// spending the run of large files with the cores idle.
fn next_batch(
    pref: &crossbeam_channel::Receiver<Batch>,
    other: &crossbeam_channel::Receiver<Batch>,
) -> Option<Batch> {
    use crossbeam_channel::TryRecvError;
    match pref.try_recv() {
        Ok(b) => return Some(b),
        Err(TryRecvError::Disconnected) => return other.recv().ok(),
        Err(TryRecvError::Empty) => {}
    }
    let mut sel = crossbeam_channel::Select::new();
    let p = sel.recv(pref);
    sel.recv(other);
    let op = sel.select();
    if op.index() == p {
        match op.recv(pref) {
            Ok(b) => Some(b),
            Err(_) => other.recv().ok(),
        }
    } else {
        match op.recv(other) {
            Ok(b) => Some(b),
            // The other queue is closed: the preferred one may still
            // hold work.
            Err(_) => pref.recv().ok(),
        }
    }
}

/// Whether the file at `d` already has `n`'s mode, owner (as root) and
/// extended attributes.
fn meta_matches(d: &Path, md: &std::fs::Metadata, n: &Node, as_root: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    if md.mode() & 0o7777 != n.mode & 0o7777 || (as_root && (md.uid(), md.gid()) != (n.uid, n.gid))
    {
        return false;
    }
    let Ok(mut have) = crate::meta::read_xattrs(d) else {
        return false;
    };
    let mut want = n.xattrs.clone();
    have.sort();
    want.sort();
    have == want
}

/// Whether a file created with `n`'s permission bits gets exactly its
/// mode: no setuid, setgid or sticky bit (`fchown` would clear the first
/// two, and they are set after it), no bit the umask takes away, and no
/// extended attribute (an access ACL set after creation changes the
/// mode's group bits, which `fchmod` then sets back). Its directory must
/// have no default ACL, under which the umask does not apply. That
/// `fchmod` (the inode and its journal entry updated once more for every
/// file) was 1.2% of the CPU samples of a 4 GiB restore; five alternating
/// rounds without it showed no change in wall time beyond the noise.
fn exact_mode(n: &Node, umask: Option<u32>) -> bool {
    umask.is_some_and(|u| n.mode & 0o7000 == 0 && n.mode & 0o777 & u == 0) && n.xattrs.is_empty()
}

/// Whether two paths are one file (hard links of each other).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// A directory node without its (large) listing fields.
fn strip(n: &Node) -> Node {
    Node {
        content: Vec::new(),
        ..n.clone()
    }
}

fn remove_existing(d: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(d) {
        if m.is_dir() {
            let _ = std::fs::remove_dir_all(d);
        } else {
            let _ = std::fs::remove_file(d);
        }
    }
}

/// A regular file being restored, possibly by several workers at once.
struct FileJob {
    dest: Arc<Path>,
    node: Node,
    /// Split files are created (at full length) by the walker; a file in
    /// one part is created by the worker that writes it.
    split: bool,
    /// Created in a directory this restore made, so nothing is in the way.
    fresh: bool,
    /// The mode a file in one part is created with, when that is its
    /// mode to be (see [`exact_mode`]): no `fchmod` afterwards.
    mode: Option<u32>,
    /// Written with direct I/O (see `filewrite`), every part of it.
    direct: bool,
    /// What it copies, when it is a copy of large files before it.
    sources: Option<Sources>,
    /// The blocks where its parts meet.
    shared: SharedBlocks,
    parts_left: AtomicUsize,
    failed: Mutex<Option<Error>>,
    /// Held while writing to a split file. Two threads writing one file
    /// contend for its inode lock in the kernel, which spins while the
    /// other copies; this lock makes the second worker sleep instead, so
    /// one decodes while the other writes.
    writing: Mutex<()>,
}

impl Drop for FileJob {
    /// A split file whose parts did not all run (the restore stopped: a
    /// full disk, Ctrl-C) is removed rather than left at its full length
    /// with holes where the bytes were to go. Its walk created it, so it
    /// is nobody else's file; a file in one part is created by its part.
    fn drop(&mut self) {
        if self.split && *self.parts_left.get_mut() > 0 {
            let _ = std::fs::remove_file(&*self.dest);
        }
    }
}

/// A run of consecutive chunks of one file, written at `offset`.
struct Part {
    file: Arc<FileJob>,
    chunks: std::ops::Range<usize>,
    offset: u64,
}

/// Per-worker state: the reader, a reused data buffer and the ID of the
/// blob it holds (a sparse image repeats its zero chunk thousands of times;
/// it is read and verified once).
struct Worker<'r> {
    reader: BlobReader<'r>,
    data: Vec<u8>,
    holds: Option<Id>,
    /// `data` is all zeros.
    zero: bool,
    /// Direct writes, done on a thread of their own.
    sink: WriteBehind,
    cancel: &'r AtomicBool,
    /// The directory the last file was created in, held open.
    dir: Option<(PathBuf, rustix::fd::OwnedFd)>,
}

impl<'r> Worker<'r> {
    fn new(repo: &'r Repo, uncached: bool, cancel: &'r AtomicBool) -> Self {
        Worker {
            reader: if uncached {
                repo.uncached_reader()
            } else {
                repo.sequential_reader()
            },
            data: Vec::new(),
            holds: None,
            zero: false,
            sink: WriteBehind::default(),
            cancel,
            dir: None,
        }
    }

    /// Creates the file `dest`, which must not exist, relative to its
    /// directory held open: the files of a batch mostly share one, and a
    /// path looked up from the root at every file was 2% of a restore's
    /// CPU time. Like `O_EXCL` on the whole path, it never follows a
    /// symlink in the file's place.
    fn create(&mut self, dest: &Path, mode: u32) -> std::io::Result<File> {
        use rustix::fs::{Mode, OFlags};
        use std::os::unix::fs::OpenOptionsExt;
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(dest);
        };
        if self.dir.as_ref().is_none_or(|(p, _)| p != parent) {
            self.dir = None;
            let fd = rustix::fs::open(
                parent,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.dir = Some((parent.to_path_buf(), fd));
        }
        let (_, dir) = self.dir.as_ref().expect("opened above");
        let f = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(f))
    }

    /// Where this restore wrote chunk `id` before, if it did: for a chunk
    /// of a copy (`sources`), once the file it copies has it written.
    fn written(&self, id: &Id, sources: Option<&Sources>, shared: &Shared) -> Option<Seen> {
        let wait = sources.filter(|s| s.ids.contains(id));
        let mut seen = shared.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(s) = wait
            && !seen.contains_key(id)
            && s.jobs
                .iter()
                .any(|j| j.parts_left.load(Ordering::Acquire) > 0)
            && shared.workers.load(Ordering::Acquire) > 0
            && !self.cancel.load(Ordering::Relaxed)
            && !shared.stop.load(Ordering::Relaxed)
        {
            // Timed: a file finishing (or failing) does not notify.
            seen = shared
                .seen_added
                .wait_timeout(seen, std::time::Duration::from_millis(5))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        seen.get(id).cloned()
    }

    /// Copies chunk `id` of a copy written directly from where this
    /// restore wrote it before straight into `out`'s staging buffer,
    /// where it fits there whole: a read into the worker's buffer and a
    /// copy from it into the stage cost the lanes a copy of every byte
    /// they write. Returns its length, or else where it was written
    /// before, if anywhere, for [`Worker::fill_from`]. The caller checks
    /// that `data` does not hold it already.
    fn copy_into(
        &mut self,
        id: &Id,
        sources: &Sources,
        shared: &Shared,
        out: &mut PartWriter<'_>,
    ) -> std::io::Result<std::result::Result<usize, Option<Seen>>> {
        let seen = self.written(id, Some(sources), shared);
        let Some(s) = seen.as_ref().filter(|s| !s.zero) else {
            return Ok(Err(seen));
        };
        if !out.write_with(s.len, |buf| read_back_into(&s.path, s.offset, buf))? {
            return Ok(Err(seen));
        }
        self.holds = None;
        shared.with(|sum| sum.bytes_copied += s.len as u64);
        Ok(Ok(s.len))
    }

    /// Puts the plaintext of chunk `id` in `data`: copied from where this
    /// restore wrote it before, or else loaded and verified. Returns true
    /// for a chunk decoded here that is large enough to be copied later.
    /// A chunk of a copy (`sources`) is waited for until the file it
    /// copies has it written.
    fn fill(&mut self, id: &Id, sources: Option<&Sources>, shared: &Shared) -> Result<bool> {
        if self.holds == Some(*id) {
            return Ok(false);
        }
        let seen = self.written(id, sources, shared);
        self.fill_from(id, seen, shared)
    }

    /// [`Worker::fill`] once [`Worker::written`] has said where the chunk
    /// was written before (`seen`).
    fn fill_from(&mut self, id: &Id, seen: Option<Seen>, shared: &Shared) -> Result<bool> {
        self.holds = None;
        if let Some(seen) = seen {
            if seen.zero {
                self.data.clear();
                self.data.resize(seen.len, 0);
                self.zero = true;
                self.holds = Some(*id);
                return Ok(false);
            }
            if read_back(&seen.path, seen.offset, seen.len, &mut self.data).is_ok() {
                self.zero = false;
                self.holds = Some(*id);
                shared.with(|s| s.bytes_copied += seen.len as u64);
                return Ok(false);
            }
        }
        let kind = self.reader.load_into(id, &mut self.data)?;
        if kind != BlobKind::Chunk {
            return Err(Error::Repo(cairn_repo::Error::MissingBlob(*id)));
        }
        self.zero = is_zero(&self.data);
        self.holds = Some(*id);
        Ok(self.data.len() >= SEEN_MIN)
    }
}

/// Reads `len` bytes at `offset` of a file this restore wrote. Fails (and
/// the chunk is decoded instead) if the file is gone or shorter, such as
/// a file removed because another of its chunks was damaged.
fn read_back(path: &Path, offset: u64, len: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    buf.resize(len, 0);
    read_back_into(path, offset, buf)
}

/// [`read_back`] into `buf`, all of it.
fn read_back_into(path: &Path, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.read_exact_at(buf, offset)
}

pub(crate) use cairn_chunker::is_zero;

fn restore_part(
    w: &mut Worker<'_>,
    part: Part,
    as_root: bool,
    shared: &Shared,
    progress: &Progress,
) {
    let file = &part.file;
    let fd = match write_part(w, &part, shared, progress) {
        Ok(fd) => fd,
        Err(e) => {
            // A full disk stops the restore even when this file failed
            // already for another reason.
            if e.is_no_space() {
                let mut full = shared.full.lock().unwrap_or_else(|p| p.into_inner());
                full.get_or_insert_with(|| file.dest.to_path_buf());
                shared.stop.store(true, Ordering::Relaxed);
            }
            let mut f = file.failed.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                *f = Some(e);
            }
            None
        }
    };
    if file.parts_left.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    // The last part to finish completes the file.
    let dest = &file.dest;
    let failed = file.failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        None => {
            shared.with(|s| {
                s.files += 1;
                s.bytes += file.node.size;
            });
            progress.files.fetch_add(1, Ordering::Relaxed);
            let applied = match &fd {
                Some(f) => apply_file(f, &file.node, as_root, file.mode.is_some()),
                None => apply(dest, &file.node, as_root),
            };
            match applied {
                Ok(o) => shared.outcome(o),
                Err(e) => shared.warn(dest, format!("metadata not applied: {e}")),
            }
        }
        Some(e) => {
            let _ = std::fs::remove_file(dest);
            // A full disk is said once, by the restore's error.
            if e.is_integrity() {
                shared.with(|s| s.damaged_files += 1);
                shared.warn(dest, format!("not restored, its data is damaged: {e}"));
            } else if !e.is_no_space() {
                shared.warn(dest, format!("not restored: {e}"));
            }
        }
    }
}

fn write_part(
    w: &mut Worker<'_>,
    part: &Part,
    shared: &Shared,
    progress: &Progress,
) -> Result<Option<Arc<File>>> {
    let file = &part.file;
    let dest = &file.dest;
    let io = |op, e| Error::Io {
        op,
        path: dest.to_path_buf(),
        source: e,
    };
    if file.failed.lock().map(|f| f.is_some()).unwrap_or(true) {
        return Ok(None);
    }
    let f: File = if file.split {
        OpenOptions::new().write(true).open(dest)
    } else {
        // Never write through what is already there: an existing file may
        // be a hard link to, or a symlink towards, something outside. A
        // directory this restore created is known to be empty.
        if !file.fresh {
            remove_existing(dest);
        }
        w.create(dest, file.mode.unwrap_or(0o666))
    }
    .map_err(|e| io("create", e))?;
    let f = Arc::new(f);
    let mut sink = std::mem::take(&mut w.sink);
    let direct = file.direct.then_some((&mut sink, &file.shared));
    let written = PartWriter::new(&f, part.offset, last_part(part), direct)
        .map_err(|e| io("write", e))
        .and_then(|out| write_chunks(w, part, out, shared, progress));
    w.sink = sink;
    written?;
    Ok(Some(f))
}

fn last_part(part: &Part) -> bool {
    part.chunks.end == part.file.node.content.len()
}

/// Decodes a part's chunks into `out`, then finishes it.
fn write_chunks(
    w: &mut Worker<'_>,
    part: &Part,
    mut out: PartWriter<'_>,
    shared: &Shared,
    progress: &Progress,
) -> Result<()> {
    let file = &part.file;
    let io = |op, e| Error::Io {
        op,
        path: file.dest.to_path_buf(),
        source: e,
    };
    let direct = file.direct;
    let mut pos = part.offset;
    for id in &file.node.content[part.chunks.clone()] {
        let fresh = match file.sources.as_ref().filter(|_| direct) {
            Some(sources) if w.holds != Some(*id) => {
                match w
                    .copy_into(id, sources, shared, &mut out)
                    .map_err(|e| io("write", e))?
                {
                    Ok(len) => {
                        pos += len as u64;
                        progress.bytes.fetch_add(len as u64, Ordering::Relaxed);
                        continue;
                    }
                    Err(seen) => w.fill_from(id, seen, shared)?,
                }
            }
            _ => w.fill(id, file.sources.as_ref(), shared)?,
        };
        // Two workers writing one file through the page cache contend
        // for its inode lock; see `FileJob::writing`.
        let _writing =
            (file.split && !direct).then(|| file.writing.lock().unwrap_or_else(|p| p.into_inner()));
        let len = w.data.len();
        if w.zero {
            out.zeros(len as u64)
        } else {
            out.write(&w.data)
        }
        .map_err(|e| io("write", e))?;
        // Bytes written directly are on the disk, not in memory: a
        // copy would read them back from the disk, which large files
        // keep busy, so decoding them again costs less.
        if fresh && !direct {
            let seen = Seen {
                path: file.dest.clone(),
                offset: pos,
                len,
                zero: w.zero,
            };
            shared.seen_at(*id, seen);
        }
        pos += len as u64;
        progress.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
    out.finish().map_err(|e| io("write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 4099]));
        for at in [0, 15, 16, 4000, 4098] {
            let mut b = vec![0u8; 4099];
            b[at] = 1;
            assert!(!is_zero(&b), "byte {at}");
        }
    }

    /// A large file of chunks `ids` in a directory this restore made.
    fn job(ids: &[Id]) -> Arc<FileJob> {
        Arc::new(FileJob {
            dest: Arc::from(Path::new("/nonexistent/f")),
            node: Node {
                content: ids.to_vec(),
                ..Node::default()
            },
            split: false,
            fresh: true,
            mode: None,
            direct: false,
            sources: None,
            shared: SharedBlocks::default(),
            parts_left: AtomicUsize::new(1),
            failed: Mutex::new(None),
            writing: Mutex::new(()),
        })
    }

    #[test]
    fn a_file_copies_files_before_it_when_half_its_bytes_are_theirs() {
        let id = |i: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            Id(b)
        };
        // Chunk i is i KiB long.
        let size = |x: &Id| u64::from(u32::from_le_bytes(x.0[..4].try_into().unwrap())) << 10;
        let ids = |r: std::ops::Range<u32>| -> (Vec<Id>, u64) {
            (
                r.clone().map(id).collect(),
                r.map(|i| u64::from(i) << 10).sum(),
            )
        };
        let mut c = Copies::default();
        let (a, la) = ids(1..100);
        assert!(c.sources(&a, la, size).is_none(), "nothing noted yet");
        let first = job(&a);
        c.note(&first);
        let s = c.sources(&a, la, size).expect("an exact copy");
        assert_eq!(s.ids.len(), 99);
        assert!(s.jobs.len() == 1 && Arc::ptr_eq(&s.jobs[0], &first));
        // Chunks 50..150: the 50..100 noted are 3725 of 9950 KiB.
        let (b, lb) = ids(50..150);
        assert!(c.sources(&b, lb, size).is_none());
        c.note(&job(&b));
        // 90..170: 90..100 of the first, 100..150 of the second, 7170 of
        // 10360 KiB; chunks noted twice keep their first file.
        let (d, ld) = ids(90..170);
        let s = c.sources(&d, ld, size).expect("a copy of two files");
        assert_eq!((s.ids.len(), s.jobs.len()), (60, 2));
        assert!(Arc::ptr_eq(&s.jobs[0], &first));
        // Full, the notes start again rather than grow.
        let (e, _) = ids(1000..1000 + COPIES_MAX as u32);
        c.note(&job(&e));
        assert!(c.0.len() <= COPIES_MAX);
        assert!(c.sources(&a, la, size).is_none(), "forgotten when full");
    }

    #[test]
    fn read_back_refuses_missing_short_and_symlinked_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let mut buf = Vec::new();
        read_back(&f, 2, 5, &mut buf).unwrap();
        assert_eq!(buf, b"23456");
        assert!(read_back(&f, 8, 5, &mut buf).is_err(), "short file");
        assert!(read_back(&dir.path().join("gone"), 0, 1, &mut buf).is_err());
        assert!(read_back(&l, 0, 1, &mut buf).is_err(), "symlink followed");
    }
}
