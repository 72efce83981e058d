//! Garbage records, as every writer must honour them.
//!
//! A prune does not delete what it finds unused: it lists the packs in a
//! garbage record, and a later prune deletes them once the record's
//! `not_before` has passed and no snapshot needs them by then. Writers
//! keep the two halves of that bargain here: they never deduplicate
//! against a condemned pack, and a backup that may have used a pack
//! condemned after it started refuses to commit once the deletion could
//! have begun (`docs/format.md`, "Garbage collection").

use std::collections::{HashMap, HashSet};

use cairn_format::Id;
use cairn_format::maint::Garbage;
use cairn_storage::{Kind, Storage};

use crate::{Error, Result};

/// One garbage record as found in the storage.
#[derive(Clone, Debug)]
pub struct GarbageRecord {
    /// Object name (the BLAKE3 of its bytes).
    pub name: String,
    /// Its contents, or why it could not be read.
    pub record: std::result::Result<Garbage, String>,
}

/// Lists and reads every garbage record. A record that cannot be read or
/// does not match its name is returned as an error value: it condemns
/// nothing (a prune never deletes on a record it cannot read).
pub fn read_garbage(storage: &dyn Storage) -> Result<Vec<GarbageRecord>> {
    let mut out = Vec::new();
    for obj in storage.list(Kind::Garbage)? {
        let record = match storage.get(Kind::Garbage, &obj.name) {
            Ok(d) if Id(cairn_crypto::plain_hash(&d)).to_hex() != obj.name => {
                Err("contents do not match its name (damaged)".to_string())
            }
            Ok(d) => Garbage::decode(&d).map_err(|e| e.to_string()),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        out.push(GarbageRecord {
            name: obj.name,
            record,
        });
    }
    Ok(out)
}

/// Writes a garbage record; returns its name.
pub fn write_garbage(storage: &dyn Storage, g: &Garbage) -> Result<String> {
    let bytes = g.encode();
    let name = Id(cairn_crypto::plain_hash(&bytes)).to_hex();
    storage.put(Kind::Garbage, &name, &bytes)?;
    Ok(name)
}

/// What a repository's garbage records said when it was opened.
#[derive(Clone, Debug, Default)]
pub struct Condemned {
    /// Condemned packs, with the earliest time any record lets them go.
    pub packs: HashMap<Id, i64>,
    /// Names of the records seen.
    pub seen: HashSet<String>,
}

impl Condemned {
    /// Reads the records now.
    pub fn load(storage: &dyn Storage) -> Result<Condemned> {
        let mut c = Condemned::default();
        for r in read_garbage(storage)? {
            if let Ok(g) = &r.record {
                for p in &g.packs {
                    let t = c.packs.entry(*p).or_insert(g.not_before_ns);
                    *t = (*t).min(g.not_before_ns);
                }
            }
            c.seen.insert(r.name);
        }
        Ok(c)
    }

    /// Whether a pack is condemned.
    pub fn contains(&self, pack: &Id) -> bool {
        self.packs.contains_key(pack)
    }
}

/// Checks, just before a backup publishes its snapshot, that the packs it
/// used (deduplicated against, or wrote) are still there and that no
/// garbage record written since it started may already be deleting them.
///
/// A record newer than the backup counts from a quarter of its grace
/// period before `not_before`, leaving that much time for the snapshot to
/// be written. Older records need no check: their packs were never used.
pub fn check_commit(storage: &dyn Storage, seen: &HashSet<String>, used: &[Id]) -> Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    let used_set: HashSet<&Id> = used.iter().collect();
    let now = crate::now_ns();
    for r in read_garbage(storage)? {
        if seen.contains(&r.name) {
            continue;
        }
        let Ok(g) = r.record else { continue };
        let margin = (g.not_before_ns.saturating_sub(g.created_ns) / 4).max(0);
        if now.saturating_add(margin) >= g.not_before_ns
            && let Some(p) = g.packs.iter().find(|p| used_set.contains(p))
        {
            return Err(Error::Stale(format!(
                "this backup ran past the grace period of a prune that started after it (garbage record {}, held by {}): pack {} it reused may be deleted, so its snapshot is not written. Run the backup again; it re-reads what it needs",
                &r.name[..8],
                g.holder,
                p.short()
            )));
        }
    }
    let listed: HashSet<Id> = storage
        .list(Kind::Pack)?
        .iter()
        .filter_map(|o| Id::from_hex(&o.name))
        .collect();
    if let Some(p) = used.iter().find(|p| !listed.contains(p)) {
        return Err(Error::Stale(format!(
            "pack {} that this backup reused is gone (a prune removed it while the backup ran); its snapshot is not written. Run the backup again",
            p.short()
        )));
    }
    Ok(())
}
