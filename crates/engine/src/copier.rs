//! `cairn copy --reencrypt`: snapshots into a repository of another
//! owner, such as an off-site box that must learn nothing.
//!
//! Blob IDs are keyed by each repository's own key, so a copy cannot keep
//! them: every chunk is read and authenticated at the source (its owner
//! key), given the destination's ID, and sealed to the destination's
//! owner; every tree is re-encoded with the new IDs. Writing needs only
//! a put-only key of the destination: it can name and seal blobs and
//! test whether one is stored, never read one back. What the destination
//! already holds (an earlier copy, its own backups of the same bytes) is
//! not sent again.
//!
//! A snapshot is committed once every pack and index file it needs is
//! durable, keeping its time, group, tags and body. A killed copy leaves
//! packs the next one indexes and reuses. A snapshot counts as copied
//! when the destination has one of the same time, group, tags, files and
//! bytes.
//!
//! Reading, checking and sealing a chunk is most of the work, and chunks
//! are independent: a first pass walks a snapshot's trees and hands the
//! chunks not mapped yet to one worker per core, a sink thread packs what
//! they sealed and a publisher uploads the packs. A second pass rewrites
//! the trees, whose new IDs need their children's.

use std::collections::{HashMap, HashSet};

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::snapshot::Envelope;
use cairn_format::tree::Tree;
use cairn_repo::{BlobSealer, PackSink, Repo, SealedBlob, Session, StagedPack, write_index_file};
use cairn_storage::Kind;
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::{Error, Result};

/// Published packs between index files.
const INDEX_EVERY: usize = 4;
/// A worker's job: at most this many chunks, or this many bytes.
const JOB_CHUNKS: usize = 256;
const JOB_BYTES: u64 = 8 << 20;

/// What to copy.
#[derive(Clone, Debug, Default)]
pub struct ReencryptOptions {
    /// Only snapshots of groups matching this (`*` matches any run).
    pub group: Option<String>,
    /// Only these snapshots (ID prefixes or `latest`); empty: all.
    pub snapshots: Vec<String>,
    /// Say what would be copied; read and write nothing else.
    pub dry_run: bool,
}

/// What a re-encrypting copy did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReencryptReport {
    /// Snapshots selected.
    pub selected: usize,
    /// Of those, snapshots the destination had already.
    pub present: usize,
    /// `(source, destination)` snapshot IDs of the snapshots copied
    /// (destination empty in a dry run).
    pub copied: Vec<(String, String)>,
    /// Blobs sealed and sent.
    pub blobs: u64,
    /// Plaintext bytes of those blobs.
    pub bytes: u64,
    /// Blobs the destination held already.
    pub blobs_present: u64,
    /// Packs written.
    pub packs: usize,
}

/// Whether two envelopes describe the same backup.
fn same_backup(a: &Envelope, b: &Envelope) -> bool {
    a.time_ns == b.time_ns
        && a.group == b.group
        && a.tags == b.tags
        && a.files == b.files
        && a.bytes == b.bytes
}

struct Copier<'a> {
    src: &'a Repo,
    dst: &'a Repo,
    reader: cairn_repo::BlobReader<'a>,
    session: Session,
    sealer: BlobSealer,
    sink: PackSink,
    /// Source blob ID to destination blob ID, for blobs already mapped.
    map: HashMap<Id, Id>,
    /// Packs of the destination this copy relies on (for the commit
    /// check against a concurrent prune).
    used: Vec<Id>,
    unindexed: Vec<cairn_format::index::IndexPack>,
    report: ReencryptReport,
    buf: Vec<u8>,
}

impl Copier<'_> {
    /// Stores `plain` in the destination unless it is there; returns its
    /// destination ID.
    fn put(&mut self, kind: BlobKind, refs: Vec<Id>, plain: &[u8]) -> Result<Id> {
        let id = self.dst.blob_id(plain);
        if let Some(l) = self.dst.index().get_live(&id) {
            self.used.push(self.dst.index().pack(l.pack).id);
            self.report.blobs_present += 1;
            return Ok(id);
        }
        let sealed = self.sealer.seal(kind, id, refs, plain)?;
        self.report.blobs += 1;
        self.report.bytes += plain.len() as u64;
        if let Some(s) = self.sink.add(&sealed)? {
            self.publish(s)?;
        }
        Ok(id)
    }

    fn publish(&mut self, s: StagedPack) -> Result<()> {
        let p = s.publish()?;
        self.used.push(p.pack);
        self.unindexed.push(p);
        self.report.packs += 1;
        if self.unindexed.len() >= INDEX_EVERY {
            write_index_file(&**self.dst.storage(), &self.unindexed)?;
            self.unindexed.clear();
        }
        Ok(())
    }

    /// Copies the tree `id` and everything below it; returns its ID in
    /// the destination.
    fn tree(&mut self, id: &Id) -> Result<Id> {
        if let Some(new) = self.map.get(id) {
            return Ok(*new);
        }
        let mut tree: Tree = self.reader.load_tree(id)?;
        for n in &mut tree.nodes {
            if let Some(sub) = n.subtree {
                n.subtree = Some(self.tree(&sub)?);
            }
            for c in &mut n.content {
                *c = self.chunk(c)?;
            }
        }
        let data = tree.encode();
        let new = self.put(BlobKind::Tree, tree.refs(), &data)?;
        self.map.insert(*id, new);
        Ok(new)
    }

    /// Maps every chunk below `root` that is not mapped yet, on all
    /// cores: their destination IDs go in the map, those the destination
    /// lacks into packs.
    fn chunks(&mut self, root: &Id) -> Result<()> {
        let threads = crate::threads(0);
        let (job_tx, job_rx) = bounded::<Vec<Id>>(threads * 2);
        let (done_tx, done_rx) = bounded::<Result<Vec<Sealed>>>(threads * 2);
        let (pub_tx, pub_rx) = bounded::<StagedPack>(2);
        let (src, dst) = (self.src, self.dst);
        let map = &self.map;
        let reader = &mut self.reader;
        let sealer = &self.sealer;
        let sink = &mut self.sink;
        let report = &mut self.report;
        let (walked, sunk, published) = std::thread::scope(|s| {
            for _ in 0..threads {
                let (jobs, done) = (job_rx.clone(), done_tx.clone());
                let mut sealer = sealer.clone();
                s.spawn(move || {
                    let mut reader = src.reader();
                    let mut buf = Vec::new();
                    for job in jobs {
                        let r = job
                            .iter()
                            .map(|id| seal_chunk(dst, &mut reader, &mut sealer, &mut buf, id))
                            .collect();
                        if done.send(r).is_err() {
                            return;
                        }
                    }
                });
            }
            drop((job_rx, done_tx));
            let publisher = s.spawn(move || publish_all(dst, pub_rx));
            let sinker = s.spawn(move || sink_all(sink, report, done_rx, pub_tx));
            let walked = queue_chunks(src, reader, map, root, &job_tx);
            drop(job_tx);
            let sunk = sinker
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            let published = publisher
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (walked, sunk, published)
        });
        // The first failure is the cause; the others follow from it.
        let (new, present) = sunk?;
        let (used, unindexed) = published?;
        walked?;
        self.map.extend(new);
        self.used.extend(present);
        self.used.extend(&used);
        self.report.packs += used.len();
        self.unindexed.extend(unindexed);
        Ok(())
    }

    fn chunk(&mut self, id: &Id) -> Result<Id> {
        if let Some(new) = self.map.get(id) {
            return Ok(*new);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let kind = self.reader.load_into(id, &mut buf)?;
        let new = self.put(kind, Vec::new(), &buf);
        self.buf = buf;
        let new = new?;
        self.map.insert(*id, new);
        Ok(new)
    }

    /// Makes everything written so far durable and indexed.
    fn flush(&mut self) -> Result<()> {
        if let Some(s) = self.sink.finish_pack()? {
            self.publish(s)?;
        }
        if !self.unindexed.is_empty() {
            write_index_file(&**self.dst.storage(), &self.unindexed)?;
            self.unindexed.clear();
        }
        Ok(())
    }
}

/// A chunk mapped by a worker: sealed unless the destination holds it
/// (then `present` names the pack).
struct Sealed {
    src: Id,
    dst: Id,
    sealed: Option<SealedBlob>,
    present: Option<Id>,
    len: u64,
}

fn seal_chunk(
    dst: &Repo,
    reader: &mut cairn_repo::BlobReader<'_>,
    sealer: &mut BlobSealer,
    buf: &mut Vec<u8>,
    id: &Id,
) -> Result<Sealed> {
    let kind = reader.load_into(id, buf)?;
    if kind != BlobKind::Chunk {
        return Err(Error::Repo(cairn_repo::Error::MissingBlob(*id)));
    }
    let new = dst.blob_id(buf);
    let len = buf.len() as u64;
    if let Some(l) = dst.index().get_live(&new) {
        let present = Some(dst.index().pack(l.pack).id);
        return Ok(Sealed {
            src: *id,
            dst: new,
            sealed: None,
            present,
            len,
        });
    }
    let sealed = Some(sealer.seal(kind, new, Vec::new(), buf)?);
    Ok(Sealed {
        src: *id,
        dst: new,
        sealed,
        present: None,
        len,
    })
}

/// Walks the trees below `root` (those not mapped yet) and sends their
/// unmapped chunks, each once, in jobs. Stops when the workers are gone.
fn queue_chunks(
    src: &Repo,
    reader: &mut cairn_repo::BlobReader<'_>,
    map: &HashMap<Id, Id>,
    root: &Id,
    jobs: &Sender<Vec<Id>>,
) -> Result<()> {
    let mut queued: HashSet<Id> = HashSet::new();
    let mut seen_trees: HashSet<Id> = HashSet::new();
    let mut stack = vec![*root];
    let mut job = Vec::new();
    let mut job_bytes = 0u64;
    while let Some(t) = stack.pop() {
        if map.contains_key(&t) || !seen_trees.insert(t) {
            continue;
        }
        let tree: Tree = reader.load_tree(&t)?;
        for n in &tree.nodes {
            stack.extend(n.subtree);
            for c in &n.content {
                if map.contains_key(c) || !queued.insert(*c) {
                    continue;
                }
                job.push(*c);
                job_bytes += src.index().get(c).map_or(0, |l| u64::from(l.raw_len));
                if job.len() >= JOB_CHUNKS || job_bytes >= JOB_BYTES {
                    job_bytes = 0;
                    if jobs.send(std::mem::take(&mut job)).is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    if !job.is_empty() {
        let _ = jobs.send(job);
    }
    Ok(())
}

/// Packs what the workers sealed; returns the new mappings and the
/// destination packs relied on for chunks it held.
#[allow(clippy::type_complexity)]
fn sink_all(
    sink: &mut PackSink,
    report: &mut ReencryptReport,
    done: Receiver<Result<Vec<Sealed>>>,
    publish: Sender<StagedPack>,
) -> Result<(Vec<(Id, Id)>, Vec<Id>)> {
    let mut new = Vec::new();
    let mut present = Vec::new();
    for r in done {
        for c in r? {
            new.push((c.src, c.dst));
            match c.sealed {
                None => {
                    report.blobs_present += 1;
                    present.extend(c.present);
                }
                Some(sealed) => {
                    report.blobs += 1;
                    report.bytes += c.len;
                    if let Some(staged) = sink.add(&sealed)?
                        && publish.send(staged).is_err()
                    {
                        // The publisher failed: its error is the cause.
                        return Ok((new, present));
                    }
                }
            }
        }
    }
    if let Some(staged) = sink.finish_pack()? {
        let _ = publish.send(staged);
    }
    Ok((new, present))
}

/// Publishes packs as they come, writing an index file every few; returns
/// the packs published and those not indexed yet.
fn publish_all(
    dst: &Repo,
    packs: Receiver<StagedPack>,
) -> Result<(Vec<Id>, Vec<cairn_format::index::IndexPack>)> {
    let mut published = Vec::new();
    let mut unindexed = Vec::new();
    for staged in packs {
        let p = staged.publish()?;
        published.push(p.pack);
        unindexed.push(p);
        if unindexed.len() >= INDEX_EVERY {
            write_index_file(&**dst.storage(), &unindexed)?;
            unindexed.clear();
        }
    }
    Ok((published, unindexed))
}

/// Copies the selected snapshots of `src` (opened with its owner key)
/// into `dst` (any key, a put-only one included), re-encrypted.
/// `progress` is called after each snapshot.
pub fn copy_reencrypt(
    src: &Repo,
    dst: &mut Repo,
    opts: &ReencryptOptions,
    progress: &mut dyn FnMut(&ReencryptReport),
) -> Result<ReencryptReport> {
    src.require_owner("copy snapshots out of it")?;
    if src.config().repo_id == dst.config().repo_id {
        return Err(Error::Input(format!(
            "{} is a replica of {} (the same keys): copy without --reencrypt, which sends records as they are",
            dst.storage().location(),
            src.storage().location()
        )));
    }
    let (snaps, bad) = Repo::list_snapshots(&**src.storage())?;
    if let Some(b) = bad.first() {
        return Err(Error::Input(format!("{}: {b}", src.storage().location())));
    }
    let chosen = cairn_repo::select_many(&snaps, &opts.snapshots, opts.group.as_deref())?;
    let (there, _) = Repo::list_snapshots(&**dst.storage())?;
    let mut report = ReencryptReport {
        selected: chosen.len(),
        ..Default::default()
    };
    // Source snapshot to its copy, for parents.
    let mut copies: HashMap<Id, Id> = HashMap::new();
    let mut todo = Vec::new();
    for s in chosen {
        match there.iter().find(|t| same_backup(&t.envelope, &s.envelope)) {
            Some(t) => {
                report.present += 1;
                copies.insert(s.id, t.id);
            }
            None => todo.push(s),
        }
    }
    if opts.dry_run {
        report.copied = todo
            .iter()
            .map(|s| (s.id.to_hex(), String::new()))
            .collect();
        return Ok(report);
    }
    if todo.is_empty() {
        return Ok(report);
    }
    // Packs a killed copy (or backup) published without an index file.
    let listed = dst.storage().list(Kind::Pack)?;
    dst.recover_unindexed(&listed)?;
    let dst: &Repo = dst;
    let session = dst.new_session()?;
    let mut c = Copier {
        src,
        dst,
        reader: src.reader(),
        sealer: dst.sealer(&session, cairn_repo::DEFAULT_LEVEL),
        sink: dst.sink(&session),
        session,
        map: HashMap::new(),
        used: Vec::new(),
        unindexed: Vec::new(),
        report,
        buf: Vec::new(),
    };
    for s in todo {
        let before = c.report.bytes;
        c.used.clear();
        c.chunks(&s.envelope.root)?;
        let root = c.tree(&s.envelope.root)?;
        c.flush()?;
        let body = c.src.snapshot_body(&s.id)?;
        let env = Envelope {
            root,
            parent: s.envelope.parent.and_then(|p| copies.get(&p).copied()),
            added_bytes: c.report.bytes - before,
            repaired_from: None,
            key_id: [0; 16],
            wrapped: None,
            ..s.envelope.clone()
        };
        c.used.sort();
        c.used.dedup();
        cairn_repo::garbage::check_commit(&**c.dst.storage(), &c.dst.condemned().seen, &c.used)?;
        let new = c.dst.commit_snapshot(&env, &body, &c.session)?;
        copies.insert(s.id, new);
        c.report.copied.push((s.id.to_hex(), new.to_hex()));
        progress(&c.report);
    }
    Ok(c.report)
}
