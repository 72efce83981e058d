//! The in-memory view of the repository's index files.
//!
//! Entries loaded from index files live in one sorted [`Table`]: a vector
//! for small repositories, a temporary file with fence keys for large ones
//! (`table.rs`), so memory does not grow with the repository. Blobs added
//! during this run go to a small hash map, merged into an in-memory table
//! when it grows.

use std::collections::HashMap;

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::index::IndexPack;
use cairn_format::pack::WRAPPED_LEN;

use crate::Result;
use crate::table::{MemTable, Table, TableBuilder};

/// A pack as the index knows it.
#[derive(Clone, Debug)]
pub struct PackInfo {
    /// Pack name.
    pub id: Id,
    /// Length in bytes.
    pub size: u64,
    /// Session key ID of its blobs.
    pub key_id: [u8; 16],
    /// Session key wrapped to the owner.
    pub wrapped: [u8; WRAPPED_LEN],
    /// Number of blobs.
    pub blobs: u32,
    /// Listed in a garbage record: readers may use its blobs, writers
    /// must not deduplicate against them.
    pub condemned: bool,
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    /// Offset of the record in the pack.
    pub offset: u64,
    /// Record length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Blob kind.
    pub kind: BlobKind,
}

/// Blob ID to location, over every index file loaded.
#[derive(Default, Debug)]
pub struct Index {
    packs: Vec<PackInfo>,
    pack_pos: HashMap<Id, u32>,
    table: Table,
    /// Further copies of bulk-loaded blobs stored in more than one pack,
    /// sorted by ID (see [`TableBuilder::finish`]).
    alts: Vec<(Id, Location)>,
    recent: HashMap<Id, Location>,
}

const MERGE_AT: usize = 1 << 16;

fn location(pack: u32, e: &cairn_format::pack::PackEntry) -> Location {
    Location {
        pack,
        offset: e.offset,
        length: e.length,
        raw_len: e.raw_len,
        kind: e.kind,
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Index::default()
    }

    /// Records a pack; `None` if it is known already.
    fn register(&mut self, p: &IndexPack) -> Option<u32> {
        if self.pack_pos.contains_key(&p.pack) {
            return None;
        }
        let pos = self.packs.len() as u32;
        self.packs.push(PackInfo {
            id: p.pack,
            size: p.size,
            key_id: p.trailer.key_id,
            wrapped: p.trailer.wrapped,
            blobs: p.trailer.entries.len() as u32,
            condemned: false,
        });
        self.pack_pos.insert(p.pack, pos);
        Some(pos)
    }

    /// Adds the packs of one index file. Returns the number of packs that
    /// were new.
    pub fn add_packs(&mut self, packs: &[IndexPack]) -> usize {
        let mut added = 0;
        for p in packs {
            let Some(pos) = self.register(p) else {
                continue;
            };
            for e in &p.trailer.entries {
                self.recent.entry(e.id).or_insert(location(pos, e));
            }
            added += 1;
        }
        if self.recent.len() >= MERGE_AT {
            self.merge();
        }
        added
    }

    /// Bulk loading, used when opening a repository: registers the packs
    /// and hands their entries to `b`; [`Index::finish_bulk`] then installs
    /// the sorted table.
    pub(crate) fn add_packs_bulk(
        &mut self,
        b: &mut TableBuilder,
        packs: &[IndexPack],
    ) -> Result<()> {
        for p in packs {
            let Some(pos) = self.register(p) else {
                continue;
            };
            for e in &p.trailer.entries {
                b.push(e.id, location(pos, e))?;
            }
        }
        Ok(())
    }

    /// Marks a registered pack as condemned (see [`PackInfo::condemned`]).
    pub fn condemn(&mut self, pack: &Id) {
        if let Some(&pos) = self.pack_pos.get(pack) {
            self.packs[pos as usize].condemned = true;
        }
    }

    /// Installs the table built from every bulk-loaded entry; the first
    /// location of a blob stored twice is its primary one, the others
    /// are kept as [`Index::other_copies`].
    pub(crate) fn finish_bulk(&mut self, b: TableBuilder) -> Result<()> {
        (self.table, self.alts) = b.finish()?;
        // Per blob, copies in live packs first, then in load order.
        let packs = &self.packs;
        self.alts
            .sort_by_key(|a| (a.0, packs[a.1.pack as usize].condemned, a.1.pack));
        Ok(())
    }

    /// The copies of a bulk-loaded blob besides the one [`Index::get`]
    /// gives: those in live packs first, then in load order. A reader whose copy fails authentication
    /// tries these: another source of a server may have stored garbage
    /// under the ID first (dedup poisoning).
    pub fn other_copies(&self, id: &Id) -> impl Iterator<Item = Location> + '_ {
        let id = *id;
        let start = self.alts.partition_point(|a| a.0 < id);
        self.alts[start..]
            .iter()
            .take_while(move |a| a.0 == id)
            .map(|a| a.1)
    }

    /// Whether any bulk-loaded blob is stored more than once.
    pub fn has_other_copies(&self) -> bool {
        !self.alts.is_empty()
    }

    /// Calls `f` on every copy that [`Index::scan`] leaves out.
    pub fn scan_other_copies(&self, mut f: impl FnMut(&Id, &Location)) {
        for (id, l) in &self.alts {
            f(id, l);
        }
    }

    /// Folds the recent map into the sorted vector.
    /// A table on disk is left alone: only this run's additions stay in
    /// the map, and a backup adds none.
    pub fn merge(&mut self) {
        if self.recent.is_empty() || !matches!(self.table, Table::Mem(_)) {
            return;
        }
        let Table::Mem(sorted) = std::mem::take(&mut self.table) else {
            unreachable!("checked above");
        };
        let mut add: Vec<(Id, Location)> = self.recent.drain().collect();
        add.sort_unstable_by_key(|a| a.0);
        let old = sorted.into_entries();
        let mut out = Vec::with_capacity(old.len() + add.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() && j < add.len() {
            match old[i].0.cmp(&add[j].0) {
                std::cmp::Ordering::Less => {
                    out.push(old[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(add[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    out.push(old[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&old[i..]);
        out.extend_from_slice(&add[j..]);
        self.table = Table::Mem(MemTable::new(out));
    }

    /// Where a blob is, if indexed.
    pub fn get(&self, id: &Id) -> Option<Location> {
        if let Some(l) = self.table.get(id) {
            return Some(l);
        }
        self.recent.get(id).copied()
    }

    /// Where a blob is, if a writer may deduplicate against it: never in
    /// a condemned pack. Packs are loaded live ones first, so a blob with
    /// a live copy is usually found at once; otherwise its other copies
    /// are looked at.
    pub fn get_live(&self, id: &Id) -> Option<Location> {
        let live = |l: &Location| !self.packs[l.pack as usize].condemned;
        if let Some(l) = self.table.get(id) {
            if live(&l) {
                return Some(l);
            }
            if let Some(l) = self.other_copies(id).find(live) {
                return Some(l);
            }
        }
        // A copy this run stored itself, beside one it may not use.
        self.recent.get(id).copied().filter(live)
    }

    /// Position of a bulk-loaded blob in ID order, with its location: a
    /// dense number for bitsets over every blob (garbage collection).
    /// Blobs added after loading have none.
    pub fn rank(&self, id: &Id) -> Option<(usize, Location)> {
        self.table.rank(id)
    }

    /// Number of bulk-loaded blobs: ranks are below it.
    pub fn ranked_len(&self) -> usize {
        self.table.len()
    }

    /// Calls `f` on every bulk-loaded blob in rank order.
    pub fn scan_ranked(&self, mut f: impl FnMut(usize, &Id, &Location)) -> Result<()> {
        let mut i = 0;
        self.table.scan(&mut |id, l| {
            f(i, id, l);
            i += 1;
        })
    }

    /// Position of a pack in [`Index::packs`].
    pub fn pack_pos(&self, id: &Id) -> Option<u32> {
        self.pack_pos.get(id).copied()
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    /// Whether a pack is listed.
    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// Every pack known.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// Pack info by position.
    pub fn pack(&self, pos: u32) -> &PackInfo {
        &self.packs[pos as usize]
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.table.len() + self.recent.len()
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every blob, in no particular order (a large table is
    /// streamed from its file, never loaded whole).
    pub fn scan(&self, mut f: impl FnMut(&Id, &Location)) -> Result<()> {
        self.table.scan(&mut f)?;
        for (id, l) in &self.recent {
            f(id, l);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TableLimits;
    use cairn_format::pack::{PackEntry, PackTrailer};

    fn pack(n: u8, ids: &[Id]) -> IndexPack {
        IndexPack {
            pack: Id([n; 32]),
            size: 1000,
            trailer: PackTrailer {
                key_id: [n; 16],
                wrapped: [0; WRAPPED_LEN],
                entries: ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| PackEntry {
                        kind: BlobKind::Chunk,
                        id: *id,
                        offset: i as u64 * 10,
                        length: 10,
                        raw_len: u32::from(n),
                    })
                    .collect(),
            },
        }
    }

    /// A blob stored in three packs: the first loaded is the one `get`
    /// gives, the others are kept in load order, and a writer that may
    /// not use the first finds the next live one.
    #[test]
    fn every_copy_of_a_blob_is_kept_and_a_live_one_found() {
        let (x, y) = (Id([1; 32]), Id([2; 32]));
        let mut index = Index::new();
        let mut b = TableBuilder::new(TableLimits::default());
        for p in [pack(10, &[x]), pack(11, &[y, x]), pack(12, &[x])] {
            index.add_packs_bulk(&mut b, &[p]).unwrap();
        }
        index.finish_bulk(b).unwrap();
        assert!(index.has_other_copies());
        assert_eq!(index.get(&x).unwrap().raw_len, 10);
        let others: Vec<u32> = index.other_copies(&x).map(|l| l.raw_len).collect();
        assert_eq!(others, [11, 12]);
        assert_eq!(index.other_copies(&y).count(), 0);
        index.condemn(&Id([10; 32]));
        assert_eq!(index.get_live(&x).unwrap().raw_len, 11);
        index.condemn(&Id([11; 32]));
        assert_eq!(index.get_live(&x).unwrap().raw_len, 12);
        assert!(index.get_live(&y).is_none());
        let mut n = 0;
        index.scan_other_copies(|id, _| {
            assert_eq!(*id, x);
            n += 1;
        });
        assert_eq!(n, 2);
    }
}
