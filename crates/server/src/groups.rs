//! What the box knows about each group without a key: snapshot
//! envelopes (plaintext), the receipts it wrote when they arrived, and
//! the repository's size. The status page and `/metrics` both show it;
//! it is read at most every few seconds however often they are asked.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_storage::{Kind, Storage};

/// A source claiming a time this much before the snapshot arrived is
/// back-dating it.
const BACKDATED: i64 = 86_400 * 1_000_000_000;
/// This many back-dated snapshots in a group is a flood.
const FLOOD: usize = 3;

/// One group's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStat {
    /// The group.
    pub group: String,
    /// Snapshots it has.
    pub snapshots: usize,
    /// When its newest snapshot arrived (receipt, else the claimed time).
    pub last_ns: i64,
    /// Files and bytes of that snapshot.
    pub last_files: u64,
    /// Sum of file sizes of that snapshot.
    pub last_bytes: u64,
    /// Bytes the group's snapshots added to the repository.
    pub added_bytes: u64,
    /// Snapshots claiming a time over a day before they arrived.
    pub backdated: usize,
}

impl GroupStat {
    /// Whether the group looks flooded with back-dated snapshots.
    pub fn flooded(&self) -> bool {
        self.backdated >= FLOOD
    }
}

/// A repository's state.
#[derive(Clone, Debug, Default)]
pub struct RepoStat {
    /// Per group, by name.
    pub groups: Vec<GroupStat>,
    /// Bytes in packs.
    pub pack_bytes: u64,
    /// Packs.
    pub packs: usize,
    /// Snapshot files that did not decode.
    pub unreadable: usize,
    /// Why the state could not be read, if it could not.
    pub error: Option<String>,
}

/// Reads a repository's state.
pub fn read(storage: &dyn Storage) -> RepoStat {
    match try_read(storage) {
        Ok(s) => s,
        Err(e) => RepoStat {
            error: Some(e.to_string()),
            ..RepoStat::default()
        },
    }
}

fn try_read(storage: &dyn Storage) -> cairn_store::Result<RepoStat> {
    let (snaps, unreadable) = cairn_store::list_snapshots(storage)?;
    // A damaged receipt is shown as the repository's problem; the groups
    // still show, with the times their snapshots claim.
    let (received, receipt_problem) = match cairn_maint::forget::receipts(storage) {
        Ok(r) => (r, None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    let mut by: BTreeMap<String, GroupStat> = BTreeMap::new();
    for s in &snaps {
        let e = &s.envelope;
        let at = received.get(&s.id).copied();
        let t = at.unwrap_or(e.time_ns);
        let g = by.entry(e.group.clone()).or_insert_with(|| GroupStat {
            group: e.group.clone(),
            last_ns: i64::MIN,
            ..GroupStat::default()
        });
        g.snapshots += 1;
        g.added_bytes += e.added_bytes;
        if at.is_some_and(|a| e.time_ns < a - BACKDATED) {
            g.backdated += 1;
        }
        if t > g.last_ns {
            g.last_ns = t;
            g.last_files = e.files;
            g.last_bytes = e.bytes;
        }
    }
    let packs = storage.list(Kind::Pack)?;
    Ok(RepoStat {
        groups: by.into_values().collect(),
        pack_bytes: packs.iter().map(|p| p.size).sum(),
        packs: packs.len(),
        unreadable: unreadable.len(),
        error: receipt_problem,
    })
}

/// [`read`], remembered for a few seconds per repository.
#[derive(Default)]
pub struct Cache {
    seen: Mutex<BTreeMap<String, (Instant, RepoStat)>>,
}

impl Cache {
    /// The state of `name`, at most `fresh` old.
    pub fn get(&self, name: &str, storage: &dyn Storage, fresh: Duration) -> RepoStat {
        if let Some((at, s)) = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            && at.elapsed() < fresh
        {
            return s.clone();
        }
        let s = read(storage);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (Instant::now(), s.clone()));
        s
    }
}
