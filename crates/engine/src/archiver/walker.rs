//! The walker: reads the sources in order, consults the files cache,
//! chunks and hashes what changed, and builds the trees, handing new
//! blobs to the seal workers.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_chunker::{CutsAhead, Cutter, StreamChunker};
use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::tree::{Node, NodeType, Tree};
use cairn_repo::Repo;
use crossbeam_channel::Sender;

use crate::exclude::Excluder;
use crate::filescache::{FilesCache, Lookup};
use crate::meta::{Names, capture, capture_with};
use crate::source::SourceFile;
use crate::{Error, Result, Warning, display_path};

use super::guide::Guide;
use super::pipeline::{
    BATCH_BLOBS, BATCH_BYTES, Dedup, Failure, Job, PARALLEL_FILE, Plain, Pool, Ticket, Unhashed,
    Work,
};
use super::prefetch::Prefetch;
use super::{BackupOptions, BackupSummary, Progress};

pub(super) fn scan(
    paths: &[PathBuf],
    ex: &Excluder,
    one_fs: bool,
    p: &Progress,
    cancel: &AtomicBool,
) {
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

pub(super) struct Walker<'a> {
    pub(super) repo: &'a Repo,
    pub(super) cutter: &'a Cutter,
    pub(super) excluder: &'a Excluder,
    pub(super) opts: &'a BackupOptions,
    pub(super) jobs: Option<Sender<Job>>,
    /// New blobs not yet handed to the seal workers.
    pub(super) batch: Job,
    pub(super) batch_bytes: usize,
    pub(super) pool: &'a Pool,
    pub(super) dedup: &'a Dedup<'a>,
    pub(super) cache: Option<FilesCache>,
    pub(super) names: Names,
    pub(super) summary: &'a mut BackupSummary,
    pub(super) progress: &'a Progress,
    pub(super) cancel: &'a AtomicBool,
    pub(super) failure: &'a Failure,
    pub(super) root_dev: u64,
    /// Entries the snapshot will hold; none means a failed backup.
    pub(super) kept: u64,
    pub(super) chunk_buf: Vec<u8>,
    pub(super) racy_before: i64,
    pub(super) zero_ids: std::collections::HashMap<usize, Id>,
    /// Read-ahead of what the walk is about to touch.
    pub(super) prefetch: Option<Prefetch>,
}

/// A large file's size, the helper's cut points, and what starts the
/// helper at an offset (whether it started).
type Ahead<'a> = (u64, &'a CutsAhead, &'a dyn Fn(u64) -> bool);

/// A source read by [`Walker::chunk`].
pub(super) enum Chunked<R> {
    /// Read to its end.
    Read {
        /// The reader, for a last look at the source.
        reader: R,
        /// Chunk IDs, in order.
        content: Vec<Id>,
        /// Bytes read.
        size: u64,
    },
    /// Reading failed.
    Failed(std::io::Error),
}

/// A virtual directory level above the sources: `/`, `/home`, ...
pub(super) struct Level {
    pub(super) children: Vec<(OsString, Option<PathBuf>)>,
}

impl Walker<'_> {
    pub(super) fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.summary.warnings.push(Warning {
            path: path.display().to_string(),
            message: message.into(),
        });
    }

    pub(super) fn stopped(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.failure.is_set()
    }

    pub(super) fn check_stop(&self) -> Result<()> {
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
    pub(super) fn walk_roots(&mut self, paths: &[PathBuf]) -> Result<Id> {
        let root = Path::new("/");
        // `/` as a source is the root tree itself: it has no name to be
        // an entry under, and every other source lies inside it.
        let id = if paths.iter().any(|p| p == root) {
            self.walk_root_dir(root)?
        } else {
            self.walk_level(root, paths)?
        };
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
    pub(super) fn walk_root_dir(&mut self, root: &Path) -> Result<Id> {
        let md = std::fs::symlink_metadata(root).map_err(|e| Error::Io {
            op: "stat",
            path: root.to_path_buf(),
            source: e,
        })?;
        self.root_dev = md.dev();
        self.dir(root)
    }

    pub(super) fn walk_level(&mut self, here: &Path, paths: &[PathBuf]) -> Result<Id> {
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
                    if let Some(n) = self.entry(&path, name.as_bytes(), md, None)? {
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
    /// `lookup`: what the files cache said of this file, when the caller
    /// asked it already.
    pub(super) fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        md: Metadata,
        lookup: Option<Lookup>,
    ) -> Result<Option<Node>> {
        self.check_stop()?;
        let bare = matches!(lookup, Some(Lookup::Hit { bare: true, .. }));
        let mut node = match capture_with(path, name, &md, &mut self.names, !bare) {
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
            NodeType::File => match self.file(path, &md, lookup, node.xattrs.is_empty()) {
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

    pub(super) fn dir(&mut self, path: &Path) -> Result<Id> {
        let io = |e| Error::Io {
            op: "read directory",
            path: path.to_path_buf(),
            source: e,
        };
        // The scan-ahead usually listed the directory already. Otherwise
        // entries are looked at relative to the open directory
        // (`DirEntry::metadata` is an `fstatat`: a `stat` by full path
        // walked every component again, a fifth of a walk's system time),
        // in name order, which on a tree written in that order is inode
        // order, so the disk reads the inode table ahead instead of at
        // random. Every entry is looked at before any is backed up, so that
        // the files to read are known early enough to be read ahead.
        let tagged = self.excluder.is_tagged_cache(path);
        let listed = match self.prefetch.as_ref().and_then(|p| p.take(path)) {
            Some(l) => l,
            None => {
                let mut listed = Vec::new();
                for e in std::fs::read_dir(path).map_err(io)? {
                    let e = e.map_err(io)?;
                    let name = e.file_name();
                    if !tagged || name.as_bytes() == b"CACHEDIR.TAG" {
                        let md = e.metadata();
                        listed.push((name, md));
                    }
                }
                listed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                listed
            }
        };
        if let Some(p) = &self.prefetch {
            p.walked(listed.len());
        }
        let mut entries = Vec::with_capacity(listed.len());
        for (name, md) in listed {
            if tagged && name.as_bytes() != b"CACHEDIR.TAG" {
                continue;
            }
            let child = path.join(&name);
            let md = match md {
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
            entries.push((name, child, md));
        }
        let mut nodes = Vec::with_capacity(entries.len());
        let mut looked: std::collections::VecDeque<Lookup> = Default::default();
        for i in 0..entries.len() {
            // At the start of a run of files, the files cache (read in walk
            // order, so no further than the next subdirectory) says which
            // of them must be read: those are read ahead.
            if looked.is_empty() && entries[i].2.is_file() {
                let run = entries[i..].iter().take_while(|e| e.2.is_file());
                for (_, child, md) in run {
                    let l = match &mut self.cache {
                        Some(c) => c.lookup(child.as_os_str().as_bytes(), md),
                        None => Lookup::New,
                    };
                    if let Some(p) = &self.prefetch
                        && !matches!(l, Lookup::Hit { .. })
                        && md.size() < PARALLEL_FILE
                    {
                        p.read(child.clone(), md.size());
                    }
                    looked.push_back(l);
                }
            }
            let (name, child, md) = &entries[i];
            let lookup = if md.is_file() {
                looked.pop_front()
            } else {
                None
            };
            if let Some(n) = self.entry(child, name.as_bytes(), md.clone(), lookup)? {
                nodes.push(n);
            }
        }
        self.finish_tree(Tree { nodes })
    }

    /// Reads a file (unless the files cache vouches for it); returns its
    /// chunk IDs and size, or `None` when it was skipped. `bare`: it has
    /// no extended attributes.
    pub(super) fn file(
        &mut self,
        path: &Path,
        md: &Metadata,
        lookup: Option<Lookup>,
        bare: bool,
    ) -> Result<Option<(Vec<Id>, u64)>> {
        let pbytes = path.as_os_str().as_bytes();
        let lookup = match (lookup, &mut self.cache) {
            (Some(l), _) => l,
            (None, Some(c)) => c.lookup(pbytes, md),
            (None, None) => Lookup::New,
        };
        let previous = match lookup {
            Lookup::Hit { content, .. } if content.iter().all(|id| self.dedup.known(id)) => {
                self.summary.unchanged_files += 1;
                self.summary.total_bytes += md.size();
                if let Some(c) = &mut self.cache {
                    c.record(pbytes, md, &content, bare);
                }
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes.fetch_add(md.size(), Ordering::Relaxed);
                return Ok(Some((content, md.size())));
            }
            Lookup::Changed(ids) | Lookup::Hit { content: ids, .. } => Some(ids),
            Lookup::New => None,
        };
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
        let large = md.size() >= PARALLEL_FILE;
        let (f, content, size) = match self.chunk(
            SourceFile::new(f, md),
            large,
            large.then_some((path, md.size())),
            previous.as_deref(),
        )? {
            Chunked::Read {
                reader,
                content,
                size,
            } => (reader, content, size),
            Chunked::Failed(e) => {
                self.warn(path, format!("read failed, file skipped: {e}"));
                return Ok(None);
            }
        };
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
                c.record(pbytes, md, &content, bare);
            } else {
                c.record_untrusted(pbytes, md, &content);
            }
        }
        Ok(Some((content, size)))
    }

    /// Reads `reader` to its end, cutting it into chunks, and queues the
    /// new ones; returns its chunk IDs and size, or the read error that
    /// stopped it (after which some of its chunks may have been stored).
    /// Only the chunker's buffer and the chunks in flight are held, never
    /// the whole source. `parallel`: the seal workers hash the chunks (see
    /// [`PARALLEL_FILE`]), and this waits for their IDs at the end.
    ///
    /// `ahead`: the source is the file at this path, of this size, large
    /// enough that a helper thread finds the cut points of its second half
    /// while this one cuts the part before ([`CutsAhead`]).
    ///
    /// `old`: the chunks the source had at its last backup, tried first
    /// (see [`Guide`]); the helper starts only if they stop matching.
    pub(super) fn chunk<R: Read>(
        &mut self,
        reader: R,
        parallel: bool,
        ahead: Option<(&Path, u64)>,
        old: Option<&[Id]>,
    ) -> Result<Chunked<R>> {
        let guide = old.and_then(|o| Guide::new(o, self.cutter.params().max));
        let Some((path, size)) = ahead.filter(|_| self.jobs.is_some()) else {
            return self.chunk_with(reader, parallel, guide, None);
        };
        let cuts = CutsAhead::default();
        std::thread::scope(|s| {
            let (cutter, cuts) = (self.cutter, &cuts);
            let start = move |from: u64| {
                let helper = std::thread::Builder::new()
                    .name("cairn-cut-ahead".into())
                    .spawn_scoped(s, move || {
                        let opened = open_noatime(path).and_then(|mut f| {
                            f.seek(std::io::SeekFrom::Start(from))?;
                            Ok(f)
                        });
                        match opened {
                            Ok(f) => cuts.find(cutter, f, from),
                            Err(_) => cuts.give_up(),
                        }
                    });
                helper.is_ok()
            };
            let r = self.chunk_with(reader, parallel, guide, Some((size, cuts, &start)));
            cuts.stop();
            r
        })
    }

    /// [`Walker::chunk`]'s loop. `ahead`: the file's size, the helper's
    /// cut points, and what starts the helper at an offset (it starts
    /// at the middle of what is left once no guide is followed).
    fn chunk_with<R: Read>(
        &mut self,
        reader: R,
        parallel: bool,
        mut guide: Option<Guide>,
        ahead: Option<Ahead<'_>>,
    ) -> Result<Chunked<R>> {
        let mut chunker =
            StreamChunker::with_buffer(self.cutter, reader, std::mem::take(&mut self.chunk_buf));
        // Where the helper started, once it did.
        let mut helper: Option<(u64, &CutsAhead)> = None;
        let mut may_start = ahead;
        // The index of this pass's last boundary (`size`) among the
        // helper's, once the two chains met.
        let mut met: Option<usize> = None;
        let mut content = Vec::new();
        let mut size = 0u64;
        let ticket = (self.jobs.is_some() && parallel).then(|| Arc::new(Ticket::default()));
        let mut sent = 0usize;
        loop {
            if self.stopped() {
                self.check_stop()?;
            }
            if guide.is_none()
                && let Some((total, cuts, start)) = may_start.take()
            {
                let from = size + total.saturating_sub(size) / 2;
                if total.saturating_sub(size) >= PARALLEL_FILE && start(from) {
                    helper = Some((from, cuts));
                }
            }
            if let Some(g) = &mut guide {
                match g.try_next(&mut chunker, self.repo) {
                    Ok(Some((id, len))) => {
                        let chunk = match chunker.next_chunk_of(len) {
                            Ok(Some(c)) => c,
                            Ok(None) => break,
                            Err(e) => {
                                self.chunk_buf = chunker.into_parts().1;
                                return Ok(Chunked::Failed(e));
                            }
                        };
                        size += len as u64;
                        // The guide found it stored, so this only marks its
                        // pack as used.
                        self.keep_chunk(id, chunk)?;
                        content.push(id);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.chunk_buf = chunker.into_parts().1;
                        return Ok(Chunked::Failed(e));
                    }
                }
            }
            let next = match (helper, met) {
                (Some((_, cuts)), Some(i)) => match cuts.end_after(i) {
                    Some(end) if end > size => {
                        met = Some(i + 1);
                        chunker.next_chunk_of((end - size) as usize)
                    }
                    // The helper stopped short (the file grew, or it
                    // failed): cut the rest here.
                    _ => {
                        helper = None;
                        chunker.next_chunk()
                    }
                },
                _ => chunker.next_chunk(),
            };
            let chunk = match next {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    self.chunk_buf = chunker.into_parts().1;
                    return Ok(Chunked::Failed(e));
                }
            };
            size += chunk.len() as u64;
            if met.is_none()
                && let Some((from, cuts)) = helper
                && size >= from
            {
                met = cuts.position(size);
            }
            // While a guide is followed this thread hashes every chunk: the
            // ID says where the old chunks resume.
            if let Some(t) = &ticket
                && guide.is_none()
                && !is_zero(chunk)
            {
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
            if let Some(g) = &mut guide
                && !g.resync(&id)
            {
                guide = None;
            }
            self.keep_chunk(id, chunk)?;
            content.push(id);
        }
        let (reader, buf) = chunker.into_parts();
        self.chunk_buf = buf;
        if let Some(t) = &ticket {
            self.send_batch()?;
            self.await_ticket(t, sent, &mut content)?;
        }
        Ok(Chunked::Read {
            reader,
            content,
            size,
        })
    }

    /// Counts a chunk read and queues it if it is new (counted as new even
    /// in a dry run, which sends nothing).
    fn keep_chunk(&mut self, id: Id, chunk: &[u8]) -> Result<()> {
        self.progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
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
        Ok(())
    }

    pub(super) fn finish_tree(&mut self, tree: Tree) -> Result<Id> {
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
    pub(super) fn await_ticket(&self, t: &Ticket, sent: usize, content: &mut [Id]) -> Result<()> {
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
    pub(super) fn queue(&mut self, p: Plain) -> Result<()> {
        self.batch_bytes += p.data.len();
        self.batch.push(Work::Hashed(p));
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_BLOBS {
            self.send_batch()?;
        }
        Ok(())
    }

    pub(super) fn send_batch(&mut self) -> Result<()> {
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

/// Whether a chunk is a zero run worth storing as a hole (4 KiB or more).
pub(super) fn is_zero(data: &[u8]) -> bool {
    data.len() >= 4096 && cairn_chunker::is_zero(data)
}

/// Opens a file for reading without updating its access time where the
/// kernel allows it (owner or root), falling back to a plain open.
pub(super) fn open_noatime(path: &Path) -> std::io::Result<File> {
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
