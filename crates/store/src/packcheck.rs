//! The packs an index lists against the packs a storage listing shows:
//! one comparison for the keyless verify and the data check, so they
//! agree on what is missing or changed and say it in the same words.

use std::collections::HashMap;

use cairn_format::Id;

use crate::index::{Index, PackInfo};

/// How an indexed pack differs from the listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackMismatch {
    /// Not listed at all.
    Missing,
    /// Listed with another size than the index records.
    Resized {
        /// The size the listing shows.
        listed: u64,
    },
}

impl PackMismatch {
    /// The finding, naming the pack.
    pub fn describe(&self, p: &PackInfo) -> String {
        match self {
            PackMismatch::Missing => format!("pack {} is missing", p.id),
            PackMismatch::Resized { listed } => format!(
                "pack {} is {listed} bytes, the index says {} (truncated or replaced)",
                p.id, p.size
            ),
        }
    }
}

/// What the comparison found.
#[derive(Debug, Default)]
pub struct PackComparison {
    /// Indexed packs (by position in the index) that are missing or of
    /// another size.
    pub mismatched: Vec<(u32, PackMismatch)>,
    /// Listed packs the index does not know (left by an interrupted
    /// backup, which the next one indexes).
    pub unindexed: Vec<Id>,
}

/// Compares `index` with `listing` (pack ID → size).
pub fn compare_packs(index: &Index, listing: &HashMap<Id, u64>) -> PackComparison {
    let mut out = PackComparison::default();
    for (pos, p) in index.packs().iter().enumerate() {
        let m = match listing.get(&p.id) {
            None => PackMismatch::Missing,
            Some(&listed) if listed != p.size => PackMismatch::Resized { listed },
            Some(_) => continue,
        };
        out.mismatched.push((pos as u32, m));
    }
    out.unindexed = listing
        .keys()
        .filter(|id| !index.has_pack(id))
        .copied()
        .collect();
    out.unindexed.sort();
    out
}
