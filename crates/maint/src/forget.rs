//! Applying a retention policy: which snapshot files to delete.
//!
//! Forgetting deletes snapshot files only; the data they alone referenced
//! stays until a prune collects it. Every check (policy, groups, empty
//! groups, protection) passes before the first deletion, so a refused
//! forget changes nothing.

use std::collections::BTreeSet;

use cairn_format::Id;
use cairn_storage::{Kind, Storage};
use cairn_store::{SnapshotInfo, list_snapshots};

use crate::retention::{self, Candidate, Civil, GroupPlan, Policy};
use crate::{Error, Result};

/// What to forget.
#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    /// The policy, applied to each group on its own.
    pub policy: Policy,
    /// Only these groups (all when empty); each must exist.
    pub groups: Vec<String>,
    /// Allow a policy to remove every snapshot of a group.
    pub allow_empty: bool,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

/// What forget decided and did.
#[derive(Debug)]
pub struct ForgetReport {
    /// Decisions per group, newest snapshot first.
    pub plans: Vec<GroupPlan>,
    /// Snapshots deleted (or that would be, in a dry run).
    pub removed: Vec<Id>,
    /// Snapshot files that could not be read; they are left alone.
    pub unreadable: Vec<String>,
}

/// Applies a policy. `civil` turns a snapshot time into the user's
/// calendar (time zones are the caller's business).
pub fn forget(
    storage: &dyn Storage,
    opts: &ForgetOptions,
    now_ns: i64,
    civil: &dyn Fn(i64) -> Civil,
) -> Result<ForgetReport> {
    opts.policy.validate()?;
    let (snaps, unreadable) = list_snapshots(storage)?;
    let chosen = select_groups(&snaps, &opts.groups)?;
    let protected = crate::protect::protected(storage)?;
    let received = receipts(storage)?;
    let candidates: Vec<Candidate> = snaps
        .iter()
        .filter(|s| chosen.contains(&s.envelope.group))
        .map(|s| {
            (
                s,
                received.get(&s.id).copied().unwrap_or(s.envelope.time_ns),
            )
        })
        .map(|(s, t)| Candidate {
            id: s.id,
            group: s.envelope.group.clone(),
            time_ns: t,
            civil: civil(t),
            tags: s.envelope.tags.clone(),
            protected: protected.contains_key(&s.id),
        })
        .collect();
    let plans = retention::plan(&opts.policy, candidates, now_ns);
    if !opts.allow_empty {
        let empty: Vec<String> = plans
            .iter()
            .filter(|p| p.empties_group())
            .map(|p| format!("{} ({} snapshots)", p.group, p.decisions.len()))
            .collect();
        if !empty.is_empty() {
            return Err(Error::Input(format!(
                "this policy would remove every snapshot of {}; nothing was removed. Keep more, or pass --allow-empty if that is what you want",
                empty.join(", ")
            )));
        }
    }
    let removed: Vec<Id> = plans
        .iter()
        .flat_map(|p| p.decisions.iter())
        .filter(|d| !d.keep())
        .map(|d| d.candidate.id)
        .collect();
    if !opts.dry_run {
        remove(storage, &removed)?;
    }
    Ok(ForgetReport {
        plans,
        removed,
        unreadable,
    })
}

/// When a server received each snapshot that has a receipt. Retention
/// goes by that time, not by the time a source claims: a source cannot
/// place snapshots in old calendar buckets to push others out. A receipt
/// that cannot be read is an error naming it, never a fall back to the
/// claimed time (which would hand retention back to the source).
pub fn receipts(storage: &dyn Storage) -> Result<std::collections::HashMap<Id, i64>> {
    let mut out = std::collections::HashMap::new();
    for o in storage.list(Kind::Receipt)? {
        let damaged = |why: String| {
            Error::Untrusted(format!(
                "receipt {} is damaged ({why}): retention cannot tell when the box received that snapshot. \
                 Put back a copy of the receipt, or delete it to let retention use the time the snapshot claims",
                o.name
            ))
        };
        let Some(id) = Id::from_hex(&o.name) else {
            return Err(damaged("its name is not a snapshot ID".into()));
        };
        let d = match storage.get(Kind::Receipt, &o.name) {
            Ok(d) => d,
            // Forgotten since the listing, with its snapshot.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let r = cairn_format::maint::Receipt::decode(&d).map_err(|e| damaged(e.to_string()))?;
        out.insert(id, r.received_ns);
    }
    Ok(out)
}

/// Deletes snapshot files by ID, refusing protected ones before deleting
/// any.
pub fn forget_ids(storage: &dyn Storage, ids: &[Id], dry_run: bool) -> Result<()> {
    let protected = crate::protect::protected(storage)?;
    if let Some(p) = ids.iter().find(|i| protected.contains_key(i)) {
        return Err(Error::Input(format!(
            "snapshot {} is protected; nothing was removed. Run `cairn unprotect {}` first if it really should go",
            p.short(),
            p.short()
        )));
    }
    if !dry_run {
        remove(storage, ids)?;
    }
    Ok(())
}

fn remove(storage: &dyn Storage, ids: &[Id]) -> Result<()> {
    for id in ids {
        storage.delete(Kind::Snapshot, &id.to_hex())?;
        // Its receipt goes with it (a receipt alone means nothing).
        storage.delete(Kind::Receipt, &id.to_hex())?;
    }
    Ok(())
}

fn select_groups(snaps: &[SnapshotInfo], wanted: &[String]) -> Result<BTreeSet<String>> {
    let all: BTreeSet<String> = snaps.iter().map(|s| s.envelope.group.clone()).collect();
    if wanted.is_empty() {
        return Ok(all);
    }
    let mut out = BTreeSet::new();
    for g in wanted {
        if !all.contains(g) {
            let known: Vec<&str> = all.iter().map(String::as_str).collect();
            return Err(Error::Input(format!(
                "no snapshot is in group {g:?}; groups here: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        out.insert(g.clone());
    }
    Ok(out)
}
