//! `repair snapshots`: new snapshots without the damaged files.
//!
//! A data check names the blobs that are missing or fail to authenticate.
//! Every snapshot that needs one is rewritten: a file that needs a damaged
//! chunk, and a directory whose tree is damaged, are left out; every tree
//! above them is re-encoded and sealed under a new session key; the new
//! snapshot keeps the original's time, group and tags and names it in
//! `repaired_from`. The original is not touched: it stays, and still
//! fails its check, until it is forgotten.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::snapshot::Envelope;
use cairn_format::tree::{NodeType, Tree};
use cairn_repo::{BlobSealer, PackSink, Repo, StagedPack, write_index_file};

use crate::archiver::Progress;
use crate::checker::{CheckOptions, check};
use crate::walk::join;
use crate::{Result, display_path};

/// One snapshot rewritten.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Repaired {
    /// The damaged original.
    pub original: String,
    /// The new snapshot (`None` in a dry run).
    pub repaired: Option<String>,
    /// Paths left out.
    pub removed: Vec<String>,
}

/// What `repair snapshots` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Damaged or missing blobs found by the data check.
    pub damaged_blobs: usize,
    /// Snapshots rewritten.
    pub repaired: Vec<Repaired>,
    /// Snapshots that cannot be repaired (their root tree is damaged).
    pub unrepairable: Vec<String>,
}

struct Writer<'a> {
    repo: &'a Repo,
    damaged: &'a HashSet<Id>,
    sealer: BlobSealer,
    sink: PackSink,
    staged: Vec<StagedPack>,
    written: HashSet<Id>,
    dry_run: bool,
}

impl Writer<'_> {
    /// Rewrites the tree `id` at `path` without damaged entries; returns
    /// the new tree ID and what it dropped (`files`, `bytes`), or `None`
    /// when nothing below it is damaged.
    fn rewrite(
        &mut self,
        id: &Id,
        path: &[u8],
        removed: &mut Vec<String>,
    ) -> Result<Option<(Id, u64, u64)>> {
        let tree = self.repo.load_tree(id)?;
        let mut changed = false;
        let (mut files, mut bytes) = (0u64, 0u64);
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut n in tree.nodes {
            let p = join(path, &n.name);
            if let Some(sub) = n.subtree {
                if self.damaged.contains(&sub) {
                    removed.push(display_path(&p));
                    changed = true;
                    continue;
                }
                if let Some((new, f, b)) = self.rewrite(&sub, &p, removed)? {
                    n.subtree = Some(new);
                    files += f;
                    bytes += b;
                    changed = true;
                }
            } else if n.node_type() == NodeType::File
                && n.content.iter().any(|c| self.damaged.contains(c))
            {
                removed.push(display_path(&p));
                files += 1;
                bytes += n.size;
                changed = true;
                continue;
            }
            nodes.push(n);
        }
        if !changed {
            return Ok(None);
        }
        let t = Tree { nodes };
        let data = t.encode();
        let new = self.repo.blob_id(&data);
        if !self.dry_run && self.repo.index().get_live(&new).is_none() && self.written.insert(new) {
            let sealed = self.sealer.seal(BlobKind::Tree, new, t.refs(), &data)?;
            if let Some(s) = self.sink.add(&sealed)? {
                self.staged.push(s);
            }
        }
        Ok(Some((new, files, bytes)))
    }
}

/// Repairs every snapshot in `only` (all when empty) that needs damaged
/// data. Owner key only.
pub fn repair_snapshots(
    repo: &Repo,
    only: &[Id],
    dry_run: bool,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<RepairReport> {
    repo.require_owner("repair snapshots")?;
    let found = check(
        repo,
        &CheckOptions {
            structure: true,
            read_data: true,
            threads: 0,
            only_packs: None,
        },
        progress,
        cancel,
    )?;
    let damaged: HashSet<Id> = found
        .damaged_blobs
        .iter()
        .filter_map(|d| d.split(':').next().and_then(Id::from_hex))
        .collect();
    let mut rep = RepairReport {
        damaged_blobs: damaged.len(),
        ..RepairReport::default()
    };
    let mut affected: Vec<Id> = found
        .affected
        .iter()
        .filter_map(|a| Id::from_hex(&a.snapshot))
        .collect();
    affected.sort();
    affected.dedup();
    if !only.is_empty() {
        affected.retain(|s| only.contains(s));
    }
    if affected.is_empty() {
        return Ok(rep);
    }
    let session = repo.new_session()?;
    let mut w = Writer {
        repo,
        damaged: &damaged,
        sealer: repo.sealer(&session, cairn_repo::DEFAULT_LEVEL),
        sink: repo.sink(&session),
        staged: Vec::new(),
        written: HashSet::new(),
        dry_run,
    };
    let (snaps, _) = Repo::list_snapshots(&**repo.storage())?;
    let mut commits: Vec<(Id, Envelope, Vec<String>)> = Vec::new();
    for s in snaps.iter().filter(|s| affected.contains(&s.id)) {
        if damaged.contains(&s.envelope.root) {
            rep.unrepairable.push(s.id.to_hex());
            continue;
        }
        let mut removed = Vec::new();
        let Some((root, files, bytes)) = w.rewrite(&s.envelope.root, b"/", &mut removed)? else {
            continue;
        };
        let env = Envelope {
            root,
            files: s.envelope.files.saturating_sub(files),
            bytes: s.envelope.bytes.saturating_sub(bytes),
            added_bytes: 0,
            repaired_from: Some(s.id),
            key_id: [0; 16],
            wrapped: None,
            ..s.envelope.clone()
        };
        commits.push((s.id, env, removed));
    }
    if let Some(p) = w.sink.finish_pack()? {
        w.staged.push(p);
    }
    let mut published = Vec::new();
    if !dry_run {
        for s in std::mem::take(&mut w.staged) {
            published.push(s.publish()?);
        }
        if !published.is_empty() {
            write_index_file(&**repo.storage(), &published)?;
        }
    }
    let used: Vec<Id> = published.iter().map(|p| p.pack).collect();
    for (orig, mut env, removed) in commits {
        let new = if dry_run {
            None
        } else {
            env.added_bytes = published.iter().map(|p| p.size).sum();
            let body = repo.snapshot_body(&orig)?;
            cairn_repo::garbage::check_commit(&**repo.storage(), &repo.condemned().seen, &used)?;
            Some(repo.commit_snapshot(&env, &body, &session)?.to_hex())
        };
        rep.repaired.push(Repaired {
            original: orig.to_hex(),
            repaired: new,
            removed,
        });
    }
    Ok(rep)
}
