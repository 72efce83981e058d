//! Repairs that need no key.
//!
//! `repair index` rebuilds the index from the packs themselves: every
//! pack carries its trailer, so listing the packs and reading their
//! trailers recreates what any index file said, and more (packs an
//! interrupted backup never indexed). Damaged index files go away.

use std::sync::Arc;
use std::time::Duration;

use cairn_format::index::IndexPack;
use cairn_storage::{Kind, Storage};
use cairn_store::{read_pack_trailer, write_index_file};

use crate::Result;
use crate::lease::LeaseGuard;

/// What `repair index` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Packs whose trailers were read and indexed.
    pub packs_indexed: usize,
    /// Blobs they hold.
    pub blobs: u64,
    /// New index files written.
    pub index_files_written: usize,
    /// Old index files removed.
    pub index_files_removed: usize,
    /// Packs left out: their trailer cannot be read.
    pub damaged_packs: Vec<String>,
}

/// Index files are cut at this many trailer entries, so no reader holds
/// more than a few MiB of one file.
const ENTRIES_PER_FILE: usize = 65_536;

/// Rebuilds the index from pack trailers. Holds the prune lease, so no
/// prune rewrites index files meanwhile; backups may run (their index
/// files written after the listing are kept).
pub fn repair_index(storage: Arc<dyn Storage>, holder: &str) -> Result<RepairIndexReport> {
    let lease = LeaseGuard::acquire(storage.clone(), "prune", holder, Duration::from_secs(600))?;
    let st: &dyn Storage = &*storage;
    let mut rep = RepairIndexReport::default();
    let old = st.list(Kind::Index)?;
    let mut batch: Vec<IndexPack> = Vec::new();
    let mut entries = 0;
    let mut lease = lease;
    let mut new = std::collections::HashSet::new();
    for o in st.list(Kind::Pack)? {
        let Some(id) = cairn_format::Id::from_hex(&o.name) else {
            continue;
        };
        match read_pack_trailer(st, &id, o.size) {
            Ok(p) => {
                rep.packs_indexed += 1;
                rep.blobs += p.trailer.entries.len() as u64;
                entries += p.trailer.entries.len();
                batch.push(p);
            }
            Err(e) => rep.damaged_packs.push(format!("{}: {e}", id.short())),
        }
        if entries >= ENTRIES_PER_FILE {
            lease.ensure()?;
            new.insert(write_index_file(st, &batch)?.to_hex());
            rep.index_files_written += 1;
            batch.clear();
            entries = 0;
        }
    }
    if !batch.is_empty() {
        new.insert(write_index_file(st, &batch)?.to_hex());
        rep.index_files_written += 1;
    }
    // Only now, with every pack indexed anew, do the old files go (an old
    // file with the very bytes of a new one is the new one).
    lease.ensure()?;
    for o in old.iter().filter(|o| !new.contains(&o.name)) {
        st.delete(Kind::Index, &o.name)?;
        rep.index_files_removed += 1;
    }
    lease.release()?;
    Ok(rep)
}
