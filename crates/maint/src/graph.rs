//! Which blobs the snapshots need, found without any key.
//!
//! Every record starts with a plaintext header listing the blob's edges
//! (`docs/format.md`, "Blobs"), so walking from each snapshot's root tree
//! through the headers of tree records reaches every blob a restore could
//! need, reading only those headers. The result is a bitset over the
//! index's blobs in ID order, a bit per blob: two million blobs cost
//! 250 KiB.

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::wire::Reader;
use cairn_repo::{BlobKind as Kind2, Index, Location};
use cairn_storage::{Kind, Storage};

use crate::{Error, Result};

/// A set of blob ranks.
#[derive(Clone, Debug, Default)]
pub struct RankSet {
    words: Vec<u64>,
}

impl RankSet {
    /// An empty set for ranks below `n`.
    pub fn new(n: usize) -> Self {
        RankSet {
            words: vec![0; n.div_ceil(64)],
        }
    }
    /// Adds `r`; returns whether it was new.
    pub fn insert(&mut self, r: usize) -> bool {
        let (w, b) = (r / 64, 1u64 << (r % 64));
        let new = self.words[w] & b == 0;
        self.words[w] |= b;
        new
    }
    /// Whether `r` is in the set.
    pub fn contains(&self, r: usize) -> bool {
        self.words
            .get(r / 64)
            .is_some_and(|w| w & (1 << (r % 64)) != 0)
    }
    /// Number of members.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the edges of the tree `id` stored at `loc` from its record
/// header, checking that the header names that tree.
pub fn tree_refs(storage: &dyn Storage, index: &Index, id: &Id, loc: &Location) -> Result<Vec<Id>> {
    let pack = index.pack(loc.pack).id;
    let damaged = |why: &str| {
        Error::Untrusted(format!(
            "the record of tree {} in pack {} {why}",
            id.short(),
            pack.short()
        ))
    };
    let first = u64::from(loc.length).min(4096);
    let mut data = storage.get_range(Kind::Pack, &pack.to_hex(), loc.offset, first)?;
    let parse = |data: &[u8]| -> std::result::Result<(usize, usize), cairn_format::Error> {
        let mut r = Reader::new(data, "blob record");
        let kind = r.u8()?;
        let rid = r.id()?;
        if kind != BlobKind::Tree as u8 || rid != *id {
            return Err(cairn_format::Error::Invalid {
                what: "blob record",
                reason: "header names another blob".into(),
            });
        }
        let n = r.varint()? as usize;
        Ok((r.pos(), n))
    };
    let (start, n) = parse(&data).map_err(|e| damaged(&e.to_string()))?;
    let need = n
        .checked_mul(32)
        .and_then(|b| b.checked_add(start))
        .filter(|&need| need as u64 <= u64::from(loc.length))
        .ok_or_else(|| damaged("lists more edges than the record holds"))?;
    if need > data.len() {
        data = storage.get_range(Kind::Pack, &pack.to_hex(), loc.offset, need as u64)?;
    }
    Ok(data[start..need]
        .chunks_exact(32)
        .map(|c| Id(c.try_into().expect("32 bytes")))
        .collect())
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Reach {
    /// Ranks of every blob reachable from the roots.
    pub blobs: RankSet,
    /// Trees walked.
    pub trees: u64,
}

/// What a walk does on a reference it cannot follow.
pub enum OnDamage<'a> {
    /// Stop: the walk decides deletions and must see everything.
    Stop,
    /// Note it and go on (a check): `(snapshot, blob, why)`.
    Record(&'a mut dyn FnMut(&str, &Id, String)),
}

/// Marks every blob reachable from `roots` (each with a description for
/// messages, such as `snapshot 1a2b3c4d`). With [`OnDamage::Stop`], a
/// referenced blob that the index does not know, or a tree record that
/// does not match, is an [`Error::Untrusted`]: whoever decides deletions
/// on this walk would otherwise act on a partial picture. `tick` runs
/// every few thousand trees (lease renewal).
pub fn walk(
    storage: &dyn Storage,
    index: &Index,
    roots: &[(Id, String)],
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<Reach> {
    walk_with(storage, index, roots, tick, OnDamage::Stop)
}

/// [`walk`] with a choice of what to do on damage.
pub fn walk_with(
    storage: &dyn Storage,
    index: &Index,
    roots: &[(Id, String)],
    tick: &mut dyn FnMut() -> Result<()>,
    mut on_damage: OnDamage<'_>,
) -> Result<Reach> {
    let mut reach = Reach {
        blobs: RankSet::new(index.ranked_len()),
        trees: 0,
    };
    let stop = matches!(on_damage, OnDamage::Stop);
    let mut damage = |what: &str, id: &Id, why: String| -> Result<()> {
        match &mut on_damage {
            OnDamage::Stop => Err(Error::Untrusted(format!("{what}: {why}"))),
            OnDamage::Record(f) => {
                f(what, id, why);
                Ok(())
            }
        }
    };
    let mut stack: Vec<(Id, Location)> = Vec::new();
    for (root, what) in roots {
        let Some((r, loc)) = index.rank(root) else {
            damage(
                what,
                root,
                format!("its root tree {} is in no index", root.short()),
            )?;
            continue;
        };
        if reach.blobs.insert(r) {
            stack.push((*root, loc));
        }
        while let Some((id, primary)) = stack.pop() {
            // Every copy that says it is a tree is walked, and their edges
            // joined: a source of a server may have stored a forged copy
            // first, with other edges or another kind, and a walk that
            // believed it would miss what the true copy needs.
            let copies: Vec<Location> = std::iter::once(primary)
                .chain(index.other_copies(&id))
                .filter(|l| l.kind == Kind2::Tree)
                .collect();
            if copies.is_empty() {
                damage(
                    what,
                    &id,
                    format!(
                        "blob {} is referenced as a tree but indexed as a chunk",
                        id.short()
                    ),
                )?;
                continue;
            }
            reach.trees += 1;
            if reach.trees.is_multiple_of(4096) {
                tick()?;
            }
            for loc in &copies {
                let refs = match tree_refs(storage, index, &id, loc) {
                    Ok(r) => r,
                    Err(Error::Untrusted(why)) => {
                        damage(what, &id, why)?;
                        continue;
                    }
                    Err(Error::Storage(e)) if !stop => {
                        damage(what, &id, format!("tree {}: {e}", id.short()))?;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for child in refs {
                    let Some((r, cl)) = index.rank(&child) else {
                        damage(
                            what,
                            &child,
                            format!(
                                "blob {} referenced by tree {} is in no index (a missing pack or index file)",
                                child.short(),
                                id.short()
                            ),
                        )?;
                        continue;
                    };
                    if reach.blobs.insert(r)
                        && (cl.kind == Kind2::Tree
                            || index.other_copies(&child).any(|l| l.kind == Kind2::Tree))
                    {
                        stack.push((child, cl));
                    }
                }
            }
        }
    }
    Ok(reach)
}
