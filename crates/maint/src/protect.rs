//! Protection marks: snapshots no retention policy removes.
//!
//! A mark is an object `protected/<snapshot ID>`. It is plaintext and
//! separate from the snapshot (which is never modified), so the storage
//! side sees it without a key, and removing the mark is the one way to
//! let a policy reach the snapshot again.

use std::collections::HashMap;

use cairn_format::Id;
use cairn_format::maint::Protection;
use cairn_storage::{Kind, Storage};

use crate::Result;

/// Every protected snapshot. A mark that cannot be decoded still
/// protects: losing a snapshot to a damaged mark would be worse than
/// keeping one too many.
pub fn protected(storage: &dyn Storage) -> Result<HashMap<Id, Protection>> {
    let mut out = HashMap::new();
    for o in storage.list(Kind::Protect)? {
        let Some(id) = Id::from_hex(&o.name) else {
            continue;
        };
        let p = match storage.get(Kind::Protect, &o.name) {
            Ok(d) => Protection::decode(&d).unwrap_or_else(|e| Protection {
                created_ns: 0,
                note: format!("(damaged mark: {e})"),
            }),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        out.insert(id, p);
    }
    Ok(out)
}

/// Protects a snapshot; returns false if it was already protected.
pub fn protect(storage: &dyn Storage, id: &Id, note: &str) -> Result<bool> {
    let p = Protection {
        created_ns: cairn_store::now_ns(),
        note: note.to_string(),
    };
    match storage.put(Kind::Protect, &id.to_hex(), &p.encode()) {
        Ok(()) => Ok(true),
        Err(cairn_storage::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes a snapshot's protection; returns false if it had none.
pub fn unprotect(storage: &dyn Storage, id: &Id) -> Result<bool> {
    let had = match storage.size(Kind::Protect, &id.to_hex()) {
        Ok(_) => true,
        Err(e) if e.is_not_found() => false,
        Err(e) => return Err(e.into()),
    };
    if had {
        storage.delete(Kind::Protect, &id.to_hex())?;
    }
    Ok(had)
}
