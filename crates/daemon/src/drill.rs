//! Restore drills: a backup nobody has restored is a hope, not a backup.
//! A drill takes each group's newest snapshot, restores a random sample
//! of its files with the same restorer `cairn restore` uses into scratch
//! space, and, where the snapshot was taken on this machine and a file's
//! source still has the size and mtime the snapshot recorded, compares
//! the bytes with the source: a difference there is corruption that no
//! checksum in the repository could see (the wrong bytes were stored, or
//! the source disk rotted under an unchanged mtime).
//!
//! The sample is new each run, so successive drills cover different
//! files, and uniform over a snapshot's files: each gets a random key
//! while the tree is walked and the `files` smallest keys are kept, so
//! memory is bounded by the sample, not by the snapshot. Files larger
//! than the whole byte budget can never be drilled and are counted
//! apart; the rest are taken in key order while they fit the budget.
//!
//! Restoring needs the owner's key: a put-only key (or none, on a
//! keyless box) cannot prove anything, and the run fails saying so rather
//! than succeeding with nothing proven.

use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_engine::archiver::Progress;
use cairn_engine::restorer::{RestoreOptions, restore};
use cairn_format::tree::{NodeType, Time};
use cairn_repo::Repo;
use cairn_server::policy::GroupPattern;
use cairn_store::SnapshotInfo;

/// What a drill restores of each group, at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Files.
    pub files: u64,
    /// Bytes of those files together.
    pub bytes: u64,
}

/// What one drill is given.
#[derive(Clone, Debug)]
pub struct Options {
    /// Groups it drills (`None` or `*`: every group).
    pub group: Option<String>,
    /// The sample per group.
    pub limits: Limits,
    /// Scratch directory of this drill alone: emptied first (a drill
    /// killed earlier may have left files) and removed at the end.
    pub dir: PathBuf,
    /// Seed of the sample; [`seed`] gives a new one per run.
    pub seed: u64,
}

/// Why a drill stopped before it could judge anything.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// The run was cancelled.
    #[error("interrupted")]
    Interrupted,
    /// The scratch directory could not be made.
    #[error("cannot create the drill's scratch directory {}: {source}", .path.display())]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The snapshots could not be listed.
    #[error("cannot list the snapshots: {0}")]
    List(String),
    /// The group pattern is not one.
    #[error("{0}")]
    Pattern(String),
}

/// The message of a drill that has no key able to read: `why` says what
/// key there is.
pub fn needs_read_key(why: &str) -> String {
    format!(
        "a restore drill needs a key that can read the backups (the owner's key or passphrase): {why}; nothing was restored"
    )
}

/// A seed for a new sample: the time and the process, so two drills
/// never draw the same files, with no randomness that could fail.
pub fn seed() -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&cairn_store::now_ns().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// SplitMix64: a fast generator with full period, enough to pick files
/// (nothing secret depends on it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An item of the sample with its random key; ordered by the key alone,
/// so the heap's top is the item to drop first.
struct Keyed<T> {
    key: u64,
    size: u64,
    item: T,
}

impl<T> PartialEq for Keyed<T> {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl<T> Eq for Keyed<T> {}
impl<T> PartialOrd for Keyed<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Keyed<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.key.cmp(&o.key)
    }
}

/// A uniform random sample of what it is offered, holding no more than
/// the sample: each item gets a random key and the `files` smallest keys
/// stay, which picks every subset of that size with equal chance.
pub struct Sampler<T> {
    limits: Limits,
    rng: Rng,
    heap: BinaryHeap<Keyed<T>>,
    /// Items offered that fit the byte budget.
    pub offered: u64,
    /// Items larger than the whole byte budget, never picked.
    pub too_large: u64,
}

impl<T> Sampler<T> {
    /// An empty sample drawn with `seed`.
    pub fn new(limits: Limits, seed: u64) -> Sampler<T> {
        Sampler {
            limits,
            rng: Rng(seed),
            heap: BinaryHeap::new(),
            offered: 0,
            too_large: 0,
        }
    }

    /// Offers an item of `size` bytes; `make` builds it only when it
    /// enters the sample, so the walk allocates for the sample alone.
    pub fn offer(&mut self, size: u64, make: impl FnOnce() -> T) {
        if size > self.limits.bytes {
            self.too_large += 1;
            return;
        }
        self.offered += 1;
        let key = self.rng.next();
        if (self.heap.len() as u64) < self.limits.files {
            self.heap.push(Keyed {
                key,
                size,
                item: make(),
            });
        } else if self.heap.peek().is_some_and(|top| key < top.key) {
            self.heap.pop();
            self.heap.push(Keyed {
                key,
                size,
                item: make(),
            });
        }
    }

    /// The sample in random order, as `(size, item)`: items are taken by
    /// their key while they fit what is left of the byte budget.
    pub fn finish(self) -> Vec<(u64, T)> {
        let mut left = self.limits.bytes;
        let mut out = Vec::new();
        for k in self.heap.into_sorted_vec() {
            if k.size <= left {
                left -= k.size;
                out.push((k.size, k.item));
            }
        }
        out
    }
}

/// A file picked for the drill.
struct Picked {
    path: String,
    mtime: Time,
}

/// What a drill did to one group.
#[derive(Clone, Debug, Default)]
pub struct GroupDrill {
    /// The group.
    pub group: String,
    /// Its newest snapshot (short ID).
    pub snapshot: String,
    /// Host the snapshot was taken on (empty when its body is unread).
    pub host: String,
    /// Whether that is this machine, so sources could be compared.
    pub here: bool,
    /// Regular files in the snapshot that fit the byte budget.
    pub files: u64,
    /// Files restored and checked.
    pub restored: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of those, compared with the source and identical.
    pub identical: u64,
    /// Not compared: the source changed since the snapshot.
    pub changed: u64,
    /// Not compared: the source is gone (or never was a file here, as
    /// the file of a command's output).
    pub gone: u64,
    /// Not compared: the source could not be read.
    pub unreadable: u64,
    /// Files larger than the byte budget, never drilled.
    pub too_large: u64,
    /// Files whose names are not UTF-8, which restore cannot name.
    pub unnamed: u64,
    /// What was wrong, one line each.
    pub failures: Vec<String>,
}

impl GroupDrill {
    fn fail(&mut self, path: &str, what: impl std::fmt::Display) {
        self.failures.push(format!(
            "group {}, snapshot {}: {path}: {what}",
            self.group, self.snapshot
        ));
    }

    fn fail_whole(&mut self, what: impl std::fmt::Display) {
        self.failures.push(format!(
            "group {}, snapshot {}: {what}",
            self.group, self.snapshot
        ));
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        use cairn_maint::units::human;
        let mut s = format!("{} (snapshot {}): ", self.group, self.snapshot);
        if self.files == 0 && self.too_large == 0 {
            s.push_str("no files to restore");
        } else {
            s.push_str(&format!(
                "{} of {} files restored ({})",
                self.restored,
                self.files + self.too_large,
                human(self.bytes)
            ));
            if self.here {
                s.push_str(&format!(
                    ", {} identical to the source, {} skipped as changed since the snapshot",
                    self.identical, self.changed
                ));
                if self.gone > 0 {
                    s.push_str(&format!(", {} skipped as gone from the source", self.gone));
                }
                if self.unreadable > 0 {
                    s.push_str(&format!(", {} sources unreadable", self.unreadable));
                }
            } else if !self.host.is_empty() {
                s.push_str(&format!(
                    ", not compared with the source (taken on {})",
                    self.host
                ));
            }
        }
        if self.too_large > 0 {
            s.push_str(&format!(
                ", {} larger than sample.bytes left out",
                self.too_large
            ));
        }
        if self.unnamed > 0 {
            s.push_str(&format!(
                ", {} with names that are not UTF-8 left out",
                self.unnamed
            ));
        }
        s
    }
}

/// What a drill found.
#[derive(Clone, Debug, Default)]
pub struct Drilled {
    /// Each group drilled.
    pub groups: Vec<GroupDrill>,
    /// The group pattern, for the message when nothing matched.
    pub pattern: String,
    /// Snapshot files that could not be listed (from the listing).
    pub unlisted: usize,
}

impl Drilled {
    fn failures(&self) -> impl Iterator<Item = &String> {
        self.groups.iter().flat_map(|g| g.failures.iter())
    }

    fn restored(&self) -> u64 {
        self.groups.iter().map(|g| g.restored).sum()
    }

    /// Whether it proved a restore: something was restored and nothing
    /// was wrong.
    pub fn proven(&self) -> bool {
        self.failures().next().is_none() && self.restored() > 0
    }

    /// What it did, or what was wrong first.
    pub fn message(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(GroupDrill::summary).collect();
        let failures: Vec<&String> = self.failures().collect();
        let mut s = if self.groups.is_empty() {
            format!(
                "no snapshots in the groups matching {}: nothing to drill",
                self.pattern
            )
        } else if !failures.is_empty() {
            let mut s = format!(
                "restore drill failed, {}: {}",
                cairn_server::status::count(failures.len(), "problem"),
                failures
                    .iter()
                    .take(3)
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            if failures.len() > 3 {
                s.push_str(&format!("; and {} more", failures.len() - 3));
            }
            format!("{s}; {}", groups.join("; "))
        } else if self.restored() == 0 {
            format!("nothing restored, nothing proven: {}", groups.join("; "))
        } else {
            groups.join("; ")
        };
        if self.unlisted > 0 {
            s.push_str(&format!(
                "; {} unreadable",
                cairn_server::status::count(self.unlisted, "snapshot file")
            ));
        }
        s
    }
}

/// The scratch directory, removed when dropped: whatever happens, no
/// restored file stays behind.
struct Scratch(PathBuf);

impl Scratch {
    fn create(path: &Path) -> Result<Scratch, Stopped> {
        let _ = std::fs::remove_dir_all(path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| Stopped::Scratch {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Scratch(path.to_path_buf()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Drills the newest snapshot of each group `opts` names. A problem
/// with one file is recorded and the drill goes on; only a cancel or a
/// repository that cannot be listed stop it.
pub fn drill(
    repo: &Repo,
    opts: &Options,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Drilled, Stopped> {
    let pattern = opts
        .group
        .as_deref()
        .map(GroupPattern::new)
        .transpose()
        .map_err(Stopped::Pattern)?;
    let (snaps, unlisted) =
        Repo::list_snapshots(&**repo.storage()).map_err(|e| Stopped::List(e.to_string()))?;
    let mut newest: std::collections::BTreeMap<&str, &SnapshotInfo> = Default::default();
    for s in &snaps {
        let g = s.envelope.group.as_str();
        if !pattern.as_ref().is_none_or(|p| p.matches(g)) {
            continue;
        }
        let e = newest.entry(g).or_insert(s);
        if (s.envelope.time_ns, s.id) > (e.envelope.time_ns, e.id) {
            *e = s;
        }
    }
    let scratch = Scratch::create(&opts.dir)?;
    let mut rng = Rng(opts.seed);
    let here = cairn_store::hostname();
    let mut out = Drilled {
        pattern: opts.group.clone().unwrap_or_else(|| "*".into()),
        unlisted: unlisted.len(),
        ..Drilled::default()
    };
    for snap in newest.values() {
        let ctx = GroupCtx {
            repo,
            limits: opts.limits,
            dir: &scratch.0,
            here: &here,
            progress,
            cancel,
        };
        out.groups.push(ctx.drill(snap, rng.next())?);
    }
    Ok(out)
}

/// What drilling one group needs.
struct GroupCtx<'a> {
    repo: &'a Repo,
    limits: Limits,
    dir: &'a Path,
    here: &'a str,
    progress: &'a Progress,
    cancel: &'a AtomicBool,
}

impl GroupCtx<'_> {
    fn drill(&self, snap: &SnapshotInfo, seed: u64) -> Result<GroupDrill, Stopped> {
        let mut g = GroupDrill {
            group: snap.envelope.group.clone(),
            snapshot: snap.id.short(),
            ..GroupDrill::default()
        };
        match self.repo.snapshot_body(&snap.id) {
            Ok(b) => {
                g.here = b.hostname == self.here;
                g.host = b.hostname;
            }
            Err(e) => {
                g.fail_whole(format!("its details cannot be read: {e}"));
                return Ok(g);
            }
        }
        let mut sampler = Sampler::new(self.limits, seed);
        let mut unnamed = 0;
        let walked = cairn_engine::walk::walk(
            &mut self.repo.reader(),
            &snap.envelope.root,
            b"/",
            &mut |path, node| {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(cairn_engine::Error::Interrupted);
                }
                if node.node_type() != NodeType::File {
                    return Ok(());
                }
                let Ok(path) = std::str::from_utf8(path) else {
                    unnamed += 1;
                    return Ok(());
                };
                sampler.offer(node.size, || Picked {
                    path: path.to_string(),
                    mtime: node.mtime,
                });
                Ok(())
            },
        );
        match walked {
            Ok(()) => {}
            Err(cairn_engine::Error::Interrupted) => return Err(Stopped::Interrupted),
            Err(e) => {
                g.fail_whole(format!("its files cannot be listed: {e}"));
                return Ok(g);
            }
        }
        g.files = sampler.offered;
        g.too_large = sampler.too_large;
        g.unnamed = unnamed;
        if g.files == 0 && g.too_large > 0 {
            let budget = cairn_maint::units::human(self.limits.bytes);
            g.fail_whole(format!(
                "each of its {} files is larger than sample.bytes ({budget}), so none can be drilled; raise sample.bytes",
                g.too_large
            ));
            return Ok(g);
        }
        let sample = sampler.finish();
        self.progress
            .total_files
            .fetch_add(sample.len() as u64, Ordering::Relaxed);
        self.progress
            .total_bytes
            .fetch_add(sample.iter().map(|(s, _)| s).sum(), Ordering::Relaxed);
        for (i, (size, picked)) in sample.into_iter().enumerate() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Stopped::Interrupted);
            }
            self.one(&mut g, snap, &self.dir.join(i.to_string()), size, &picked)?;
        }
        Ok(g)
    }

    /// Restores one file into `target`, checks it, compares it with its
    /// source where that is meaningful, and removes it again.
    fn one(
        &self,
        g: &mut GroupDrill,
        snap: &SnapshotInfo,
        target: &Path,
        size: u64,
        p: &Picked,
    ) -> Result<(), Stopped> {
        let opts = RestoreOptions {
            target: target.to_path_buf(),
            subpath: Some(p.path.clone()),
            threads: 1,
            ..RestoreOptions::default()
        };
        let done = restore(
            self.repo,
            snap.envelope.root,
            &opts,
            self.progress,
            self.cancel,
        );
        let name = Path::new(&p.path).file_name().unwrap_or(OsStr::new(""));
        let restored = target.join(name);
        let checked = match done {
            Err(cairn_engine::Error::Interrupted) => return Err(Stopped::Interrupted),
            Err(e) => Err(format!("not restored: {e}")),
            Ok(sum) => match std::fs::symlink_metadata(&restored) {
                Ok(md) if md.is_file() && md.len() == size => Ok(()),
                Ok(md) => Err(format!(
                    "restored {} bytes, the snapshot holds {size}",
                    md.len()
                )),
                Err(e) => Err(match sum.warnings.first() {
                    Some(w) => w.message.clone(),
                    None => format!("not restored: {e}"),
                }),
            },
        };
        match checked {
            Err(what) => g.fail(&p.path, what),
            Ok(()) => {
                g.restored += 1;
                g.bytes += size;
                if g.here {
                    match compare(&restored, Path::new(&p.path), size, p.mtime) {
                        Compared::Identical => g.identical += 1,
                        Compared::Changed => g.changed += 1,
                        Compared::Gone => g.gone += 1,
                        Compared::Unreadable => g.unreadable += 1,
                        Compared::Differs(what) => g.fail(&p.path, what),
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(target);
        Ok(())
    }
}

/// How a restored file compares with its source.
#[derive(Debug, PartialEq, Eq)]
enum Compared {
    Identical,
    /// The source is not what the snapshot saw (size, mtime, type).
    Changed,
    /// There is no source file any more.
    Gone,
    Unreadable,
    /// The source looks untouched yet its bytes differ.
    Differs(String),
}

/// What identifies a source file as unchanged, and a write to it while
/// it is read (the ctime moves even when the mtime is put back).
fn stamp(md: &std::fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (
        md.len(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
    )
}

/// Compares `restored` with `source` when the source still has the size
/// and mtime the snapshot recorded.
fn compare(restored: &Path, source: &Path, size: u64, mtime: Time) -> Compared {
    let before = match std::fs::symlink_metadata(source) {
        Ok(md)
            if md.is_file()
                && md.len() == size
                && (md.mtime(), md.mtime_nsec()) == (mtime.sec, i64::from(mtime.nsec)) =>
        {
            md
        }
        Ok(_) => return Compared::Changed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Compared::Gone,
        Err(_) => return Compared::Unreadable,
    };
    let differs = match first_difference(restored, source) {
        Ok(None) => return Compared::Identical,
        Ok(Some(d)) => d,
        Err(_) => return Compared::Unreadable,
    };
    // Written to while it was read: a change, not a corruption.
    match std::fs::symlink_metadata(source) {
        Ok(md) if stamp(&md) == stamp(&before) => Compared::Differs(format!(
            "the restored file differs from the source {differs}, though the source has the size and mtime the snapshot recorded: the repository holds wrong bytes or the source disk changed them unseen"
        )),
        _ => Compared::Changed,
    }
}

/// Where two files first differ (`at byte N`, or their lengths), `None`
/// when they are equal.
fn first_difference(a: &Path, b: &Path) -> std::io::Result<Option<String>> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if let Some(i) = ba[..na.min(nb)]
            .iter()
            .zip(&bb[..na.min(nb)])
            .position(|(x, y)| x != y)
        {
            return Ok(Some(format!("at byte {}", at + i as u64)));
        }
        if na != nb {
            return Ok(Some("in length".into()));
        }
        if na == 0 {
            return Ok(None);
        }
        at += na as u64;
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
