//! Which blobs the snapshots need, found without any key.
//!
//! Every record starts with a plaintext header listing the blob's edges
//! (`docs/format.md`, "Blobs"), so walking from each snapshot's root tree
//! through the headers of tree records reaches every blob a restore could
//! need, reading only those headers. The result is a bitset over the
//! index's blobs in ID order, a bit per blob: two million blobs cost
//! 250 KiB.

use std::collections::HashMap;

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::wire::Reader;
use cairn_storage::{Kind, Storage};
use cairn_store::{BlobKind as Kind2, Index, Location};

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
    tree_refs_with(&mut Headers::new(storage), index, id, loc)
}

/// Bytes of a pack read at once where each read is a request.
const HEADER_WINDOW: u64 = 4 << 20;
/// Windows kept: with trees packed together (children first, so a walk
/// goes back and forth in their packs), a few windows hold a whole pack.
const HEADER_WINDOWS: usize = 8;

/// Reads record headers. On a store where each read is a request (S3),
/// packs are read in aligned windows kept for the walk, so thousands of
/// trees cost a handful of requests instead of one each; on a local disk
/// each header is read as it is.
pub struct Headers<'s> {
    storage: &'s dyn Storage,
    windowed: bool,
    windows: std::collections::VecDeque<(u32, u64, Vec<u8>)>,
}

impl<'s> Headers<'s> {
    /// A reader over `storage`.
    pub fn new(storage: &'s dyn Storage) -> Self {
        Headers {
            storage,
            windowed: storage.read_concurrency() > 1,
            windows: Default::default(),
        }
    }

    /// `len` bytes at `offset` of the pack at `pos`.
    fn read(&mut self, index: &Index, pos: u32, offset: u64, len: u64) -> Result<Vec<u8>> {
        let pack = index.pack(pos);
        let name = pack.id.to_hex();
        let end = offset.saturating_add(len);
        if !self.windowed || end > pack.size {
            return Ok(cairn_storage::read_range(
                self.storage,
                Kind::Pack,
                &name,
                offset,
                len,
            )?);
        }
        let hit = self
            .windows
            .iter()
            .find(|(p, s, b)| *p == pos && offset >= *s && end <= *s + b.len() as u64);
        if let Some((_, s, b)) = hit {
            return Ok(b[(offset - s) as usize..(end - s) as usize].to_vec());
        }
        let start = offset - offset % HEADER_WINDOW;
        let stop = (start + HEADER_WINDOW).max(end).min(pack.size);
        let buf = cairn_storage::read_range(self.storage, Kind::Pack, &name, start, stop - start)?;
        let out = buf[(offset - start) as usize..(end - start) as usize].to_vec();
        if self.windows.len() >= HEADER_WINDOWS {
            self.windows.pop_front();
        }
        self.windows.push_back((pos, start, buf));
        Ok(out)
    }
}

/// [`tree_refs`] through a [`Headers`] reader.
pub fn tree_refs_with(
    headers: &mut Headers<'_>,
    index: &Index,
    id: &Id,
    loc: &Location,
) -> Result<Vec<Id>> {
    let pack = index.pack(loc.pack).id;
    let damaged = |why: &str| {
        Error::Untrusted(format!(
            "the record of tree {} in pack {} {why}",
            id.short(),
            pack.short()
        ))
    };
    let first = u64::from(loc.length).min(4096);
    let mut data = headers.read(index, loc.pack, loc.offset, first)?;
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
        data = headers.read(index, loc.pack, loc.offset, need as u64)?;
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
    /// The copies of the reached blobs that their snapshots need.
    pub kept: Kept,
}

/// Which copies of the reached blobs are needed: the copy [`Index::get`]
/// gives (by rank), and other copies by pack position and offset, with
/// their length. Without blobs stored twice, every reached blob's primary
/// copy.
#[derive(Debug, Default)]
pub struct Kept {
    /// Ranks whose primary copy is needed.
    pub primary: RankSet,
    /// Other copies needed: `(pack position, offset)` to record length.
    pub others: HashMap<(u32, u64), u32>,
}

impl Kept {
    fn keep(&mut self, rank: usize, i: usize, l: &Location) {
        if i == 0 {
            self.primary.insert(rank);
        } else {
            self.others.insert((l.pack, l.offset), l.length);
        }
    }
}

/// Which copies of a blob a walk from a snapshot may follow and keep
/// (`docs/format.md`, "Origin marks").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trust {
    /// Every copy: the edges of every tree copy are joined, and one copy
    /// per origin is kept. For snapshots whose sender is unknown, and
    /// for checks.
    Any,
    /// The copies a writer could have stored or deduplicated against:
    /// unmarked ones and those with its origin tag (`None`: the owner,
    /// which deduplicates against unmarked packs only). Copies another
    /// source stored under the same IDs are neither followed nor kept.
    Origin(Option<[u8; 8]>),
}

/// The origin tag of every marked pack (`docs/format.md`, "Origin
/// marks"). A pack marked twice (two sources uploaded the same bytes at
/// once, which random session keys make impossible in practice) keeps
/// the first tag listed.
pub fn read_origins(st: &dyn Storage) -> Result<HashMap<Id, [u8; 8]>> {
    let mut out = HashMap::new();
    for o in st.list(Kind::Origin)? {
        if let Some((pack, tag)) = cairn_format::maint::parse_origin_name(&o.name) {
            out.entry(pack).or_insert(tag);
        }
    }
    Ok(out)
}

/// The origin tag of each pack of `index`, by position, for
/// [`walk_trusted`].
pub fn pack_tags(index: &Index, origins: &HashMap<Id, [u8; 8]>) -> Vec<Option<[u8; 8]>> {
    index
        .packs()
        .iter()
        .map(|p| origins.get(&p.id).copied())
        .collect()
}

/// The trust of every snapshot with a receipt: its sender's copies, or
/// any copy when the receipt cannot be read (the sender is unknown).
pub fn snapshot_trusts(st: &dyn Storage) -> Result<HashMap<Id, Trust>> {
    let mut out = HashMap::new();
    for o in st.list(Kind::Receipt)? {
        let Some(id) = Id::from_hex(&o.name) else {
            continue;
        };
        let trust = st
            .get(Kind::Receipt, &o.name)
            .ok()
            .and_then(|d| cairn_format::maint::Receipt::decode(&d).ok())
            .map_or(Trust::Any, |r| {
                Trust::Origin(Some(cairn_store::origin_tag(&r.sender)))
            });
        out.insert(id, trust);
    }
    Ok(out)
}

/// The trust of snapshot `id`: from its receipt, or the owner's when it
/// has none (a snapshot not written through a box).
pub fn trust_of(trusts: &HashMap<Id, Trust>, id: &Id) -> Trust {
    trusts.get(id).copied().unwrap_or(Trust::Origin(None))
}

/// Which copies of one needed blob are kept, given each copy's origin
/// tag (`None`: unmarked) in load order, so live packs first: the first
/// unmarked copy if there is one (the owner's, trusted), else the first
/// copy of each origin. Prune has no key: it cannot tell a true copy from
/// garbage a source stored under the same ID, but the copy of the source
/// whose snapshot needs the blob is among these.
pub fn keep_copies(tags: &[Option<[u8; 8]>]) -> Vec<bool> {
    if let Some(i) = tags.iter().position(|t| t.is_none()) {
        return (0..tags.len()).map(|j| j == i).collect();
    }
    let mut seen = std::collections::HashSet::new();
    tags.iter().map(|t| seen.insert(*t)).collect()
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
    on_damage: OnDamage<'_>,
) -> Result<Reach> {
    let roots: Vec<(Id, String, Trust)> = roots
        .iter()
        .map(|(id, what)| (*id, what.clone(), Trust::Any))
        .collect();
    walk_trusted(storage, index, &roots, &[], tick, on_damage)
}

/// [`walk_with`] where each root says which copies it may use, and
/// `tags` gives the origin tag of each pack by position (`None`:
/// unmarked; packs past its end count as unmarked). A blob reached from
/// roots of several trusts is walked once per trust, so a forged copy
/// followed for one source never hides what another one needs.
pub fn walk_trusted(
    storage: &dyn Storage,
    index: &Index,
    roots: &[(Id, String, Trust)],
    tags: &[Option<[u8; 8]>],
    tick: &mut dyn FnMut() -> Result<()>,
    mut on_damage: OnDamage<'_>,
) -> Result<Reach> {
    let n = index.ranked_len();
    let mut reach = Reach {
        blobs: RankSet::new(n),
        trees: 0,
        kept: Kept {
            primary: RankSet::new(n),
            others: HashMap::new(),
        },
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
    let tag_of = |l: &Location| tags.get(l.pack as usize).copied().flatten();
    let mut order: Vec<usize> = (0..roots.len()).collect();
    order.sort_by_key(|&i| roots[i].2);
    let mut visited = RankSet::new(n);
    let mut headers = Headers::new(storage);
    let mut current: Option<Trust> = None;
    let mut stack: Vec<(Id, usize, Location)> = Vec::new();
    let mut copies: Vec<Location> = Vec::new();
    let mut trees: Vec<Location> = Vec::new();
    for i in order {
        let (root, what, trust) = &roots[i];
        if current.is_some_and(|c| c != *trust) {
            visited = RankSet::new(n);
        }
        current = Some(*trust);
        let trusted = |l: &Location| match trust {
            Trust::Any => true,
            Trust::Origin(own) => tag_of(l).is_none_or(|t| Some(t) == *own),
        };
        let Some((r, loc)) = index.rank(root) else {
            damage(
                what,
                root,
                format!("its root tree {} is in no index", root.short()),
            )?;
            continue;
        };
        if visited.insert(r) {
            stack.push((*root, r, loc));
        }
        // Every blob on the stack is a tree by some copy, or the root.
        let mut is_root = true;
        while let Some((id, rank, primary)) = stack.pop() {
            let root_here = std::mem::replace(&mut is_root, false);
            copies.clear();
            copies.push(primary);
            copies.extend(index.other_copies(&id));
            // Keep, and gather the tree copies to follow.
            trees.clear();
            keep_trusted(&mut reach.kept, rank, &copies, *trust, &trusted, &tag_of);
            reach.blobs.insert(rank);
            trees.extend(
                copies
                    .iter()
                    .filter(|l| trusted(l) && l.kind == Kind2::Tree)
                    .copied(),
            );
            if !copies.iter().any(&trusted) {
                damage(what, &id, foreign(&id))?;
                continue;
            }
            if trees.is_empty() {
                if root_here {
                    damage(
                        what,
                        &id,
                        format!(
                            "blob {} is referenced as a tree but indexed as a chunk",
                            id.short()
                        ),
                    )?;
                }
                continue;
            }
            reach.trees += 1;
            if reach.trees.is_multiple_of(4096) {
                tick()?;
            }
            for loc in &trees {
                let refs = match tree_refs_with(&mut headers, index, &id, loc) {
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
                    let Some((cr, cl)) = index.rank(&child) else {
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
                    if !visited.insert(cr) {
                        continue;
                    }
                    let tree_copy = cl.kind == Kind2::Tree
                        || index.other_copies(&child).any(|l| l.kind == Kind2::Tree);
                    if tree_copy {
                        stack.push((child, cr, cl));
                        continue;
                    }
                    // A chunk: kept here, never walked.
                    if !index.has_other_copies() {
                        if !trusted(&cl) {
                            damage(what, &child, foreign(&child))?;
                            continue;
                        }
                        reach.blobs.insert(cr);
                        reach.kept.primary.insert(cr);
                        continue;
                    }
                    let mut cc = vec![cl];
                    cc.extend(index.other_copies(&child));
                    if !cc.iter().any(&trusted) {
                        damage(what, &child, foreign(&child))?;
                        continue;
                    }
                    reach.blobs.insert(cr);
                    keep_trusted(&mut reach.kept, cr, &cc, *trust, &trusted, &tag_of);
                }
            }
        }
    }
    Ok(reach)
}

fn foreign(id: &Id) -> String {
    format!(
        "blob {} is stored only by another source of the server, which this snapshot's sender could not have used",
        id.short()
    )
}

/// Marks the copies of one reached blob that its snapshot needs: with
/// [`Trust::Any`], as [`keep_copies`] says; for a sender, its first
/// unmarked copy if any, else its first own copy.
fn keep_trusted(
    kept: &mut Kept,
    rank: usize,
    copies: &[Location],
    trust: Trust,
    trusted: &dyn Fn(&Location) -> bool,
    tag_of: &dyn Fn(&Location) -> Option<[u8; 8]>,
) {
    if copies.len() == 1 {
        if trusted(&copies[0]) {
            kept.keep(rank, 0, &copies[0]);
        }
        return;
    }
    match trust {
        Trust::Any => {
            let tags: Vec<Option<[u8; 8]>> = copies.iter().map(tag_of).collect();
            for (i, (l, k)) in copies.iter().zip(keep_copies(&tags)).enumerate() {
                if k {
                    kept.keep(rank, i, l);
                }
            }
        }
        Trust::Origin(_) => {
            let pick = copies
                .iter()
                .position(|l| tag_of(l).is_none())
                .or_else(|| copies.iter().position(trusted));
            if let Some(i) = pick {
                kept.keep(rank, i, &copies[i]);
            }
        }
    }
}

#[cfg(test)]
mod keep_tests {
    use super::keep_copies;

    #[test]
    fn an_owner_copy_alone_or_one_copy_per_source() {
        let (a, b) = (Some([1u8; 8]), Some([2u8; 8]));
        assert_eq!(keep_copies(&[a]), [true]);
        assert_eq!(keep_copies(&[None]), [true]);
        assert_eq!(
            keep_copies(&[a, None, b, None]),
            [false, true, false, false]
        );
        assert_eq!(keep_copies(&[a, b, a, b]), [true, true, false, false]);
        assert_eq!(keep_copies(&[b, b, a]), [true, false, true]);
    }
}
