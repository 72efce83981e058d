//! Restoring a snapshot (or part of it) to a directory.
//!
//! The calling thread walks the trees, creates directories, symlinks and
//! special files, and hands regular files to worker threads in batches of
//! consecutive files, so each worker reads packs roughly in the order they
//! were written and its read-ahead window serves many small files.
//! Every chunk is authenticated before a byte of it is written; a file
//! whose data is damaged is removed rather than left with wrong bytes.
//! Runs of zeros become holes, so sparse files stay sparse. Directory
//! metadata is applied last, deepest first, so restoring children does not
//! disturb their parents' times and read-only directories can be filled.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::tree::{Node, NodeType};
use cairn_repo::{BlobReader, Repo};
use crossbeam_channel::bounded;
use ignore::gitignore::Gitignore;

use crate::archiver::Progress;
use crate::meta::{ApplyOutcome, apply, is_root, make_special};
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
    /// Entries whose owner could not be set (restoring as non-root).
    pub owners_not_applied: u64,
    /// Entries with extended attributes that could not be set.
    pub xattrs_not_applied: u64,
    /// Files not restored because their data is damaged.
    pub damaged_files: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Problems, one per entry.
    pub warnings: Vec<Warning>,
}

struct Shared {
    summary: Mutex<RestoreSummary>,
}

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

type Batch = Vec<(PathBuf, Node)>;

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
    };
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let (tx, rx) = bounded::<Batch>(threads);
    let mut plan = Plan {
        includes: includes.as_ref(),
        excludes: excludes.as_ref(),
        dirs: Vec::new(),
        links: Vec::new(),
        first_link: HashMap::new(),
        batch: Vec::new(),
        batch_bytes: 0,
        as_root,
        shared: &shared,
        cancel,
    };
    let walked = std::thread::scope(|s| {
        for _ in 0..threads {
            let rx = rx.clone();
            let shared = &shared;
            s.spawn(move || {
                let mut reader = repo.reader();
                let mut data = Vec::new();
                for batch in rx {
                    for (dest, node) in batch {
                        if cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        restore_file(
                            &mut reader,
                            &dest,
                            &node,
                            as_root,
                            shared,
                            progress,
                            &mut data,
                        );
                    }
                }
            });
        }
        drop(rx);
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
        drop(tx);
        r
    });
    walked?;
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    for (dest, first) in std::mem::take(&mut plan.links) {
        let _ = std::fs::remove_file(&dest);
        match std::fs::hard_link(&first, &dest) {
            Ok(()) => shared.with(|s| s.hardlinks += 1),
            Err(e) => shared.warn(&dest, format!("hard link not created: {e}")),
        }
    }
    for (dest, node) in plan.dirs.iter().rev() {
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

struct Plan<'a> {
    includes: Option<&'a Gitignore>,
    excludes: Option<&'a Gitignore>,
    dirs: Vec<(PathBuf, Node)>,
    links: Vec<(PathBuf, PathBuf)>,
    first_link: HashMap<(u64, u64), PathBuf>,
    batch: Batch,
    batch_bytes: u64,
    as_root: bool,
    shared: &'a Shared,
    cancel: &'a AtomicBool,
}

const BATCH_BYTES: u64 = 8 << 20;
const BATCH_FILES: usize = 256;

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
        for n in &t.nodes {
            if self.cancel.load(Ordering::Relaxed) {
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
        if let Some(parent) = d.parent() {
            self.mkdir(parent)?;
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
                self.batch_bytes += n.size;
                self.batch.push((d.to_path_buf(), n.clone()));
                if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_FILES {
                    self.flush(tx);
                }
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

    fn finish_special(&mut self, d: &Path, n: &Node) {
        self.shared.with(|s| s.others += 1);
        match apply(d, n, self.as_root) {
            Ok(o) => self.shared.outcome(o),
            Err(e) => self.shared.warn(d, format!("metadata not applied: {e}")),
        }
    }

    fn mkdir(&self, d: &Path) -> Result<()> {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => remove_existing(d),
            Err(_) => {}
        }
        std::fs::create_dir_all(d).map_err(|e| Error::Io {
            op: "create directory",
            path: d.to_path_buf(),
            source: e,
        })
    }

    fn flush(&mut self, tx: &crossbeam_channel::Sender<Batch>) {
        if !self.batch.is_empty() {
            let b = std::mem::take(&mut self.batch);
            self.batch_bytes = 0;
            let _ = tx.send(b);
        }
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

fn restore_file(
    reader: &mut BlobReader<'_>,
    dest: &Path,
    n: &Node,
    as_root: bool,
    shared: &Shared,
    progress: &Progress,
    data: &mut Vec<u8>,
) {
    match write_file(reader, dest, n, progress, data) {
        Ok(()) => {
            shared.with(|s| {
                s.files += 1;
                s.bytes += n.size;
            });
            match apply(dest, n, as_root) {
                Ok(o) => shared.outcome(o),
                Err(e) => shared.warn(dest, format!("metadata not applied: {e}")),
            }
        }
        Err(e) => {
            let _ = std::fs::remove_file(dest);
            if e.is_integrity() {
                shared.with(|s| s.damaged_files += 1);
                shared.warn(dest, format!("not restored, its data is damaged: {e}"));
            } else {
                shared.warn(dest, format!("not restored: {e}"));
            }
        }
    }
}

fn write_file(
    reader: &mut BlobReader<'_>,
    dest: &Path,
    n: &Node,
    progress: &Progress,
    data: &mut Vec<u8>,
) -> Result<()> {
    let io = |op, e| Error::Io {
        op,
        path: dest.to_path_buf(),
        source: e,
    };
    // Never write through what is already there: an existing file may be
    // a hard link to, or a symlink towards, something outside the target.
    remove_existing(dest);
    let mut f: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| io("create", e))?;
    let mut pos = 0u64;
    let mut hole = false;
    for id in &n.content {
        let kind = reader.load_into(id, data)?;
        if kind != BlobKind::Chunk {
            return Err(Error::Repo(cairn_repo::Error::MissingBlob(*id)));
        }
        // Write non-zero 4 KiB blocks; skip zero blocks to leave holes.
        let mut off = 0;
        while off < data.len() {
            let end = (off + 4096).min(data.len());
            let block = &data[off..end];
            if block.len() == 4096 && block.iter().all(|&b| b == 0) {
                hole = true;
            } else {
                if hole {
                    f.seek(SeekFrom::Start(pos + off as u64))
                        .map_err(|e| io("seek", e))?;
                    hole = false;
                }
                f.write_all(block).map_err(|e| io("write", e))?;
            }
            off = end;
        }
        pos += data.len() as u64;
        progress
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    f.set_len(pos).map_err(|e| io("set length of", e))?;
    progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
