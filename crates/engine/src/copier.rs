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

use std::collections::HashMap;

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::snapshot::Envelope;
use cairn_format::tree::Tree;
use cairn_repo::{BlobSealer, PackSink, Repo, Session, StagedPack, write_index_file};
use cairn_storage::Kind;

use crate::{Error, Result};

/// Published packs between index files.
const INDEX_EVERY: usize = 4;

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
