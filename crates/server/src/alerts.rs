//! Back-dated snapshots, remembered when they arrive.
//!
//! A source that uploads snapshots claiming old times is trying to push
//! good snapshots out of retention (or is badly broken). Retention goes by
//! the box's receipts, so the flood fails; but once retention has
//! forgotten the flood's snapshots the listing no longer shows it, so the
//! box counts such arrivals here (kept in `STATE/alerts.json`) and the
//! status page shows them for a week after the last one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Claimed this much before arrival is back-dated.
pub const BACKDATED_NS: i64 = 86_400 * 1_000_000_000;
/// This many back-dated arrivals is a flood.
pub const FLOOD: u64 = 3;
/// How long a flood stays on the page after its last snapshot.
pub const SHOWN_NS: i64 = 7 * 86_400 * 1_000_000_000;

/// Back-dated arrivals of one group.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Backdated {
    /// How many arrived.
    pub count: u64,
    /// The token that sent the last one.
    pub token: String,
    /// When the last one arrived.
    pub last_ns: i64,
    /// The oldest time one of them claimed.
    pub oldest_claim_ns: i64,
}

/// All groups' back-dated arrivals, by repository and group.
pub struct Alerts {
    file: PathBuf,
    seen: Mutex<BTreeMap<String, BTreeMap<String, Backdated>>>,
}

impl Alerts {
    /// What `state/alerts.json` remembers.
    pub fn new(state: &std::path::Path) -> crate::Result<Alerts> {
        let file = state.join("alerts.json");
        let seen = crate::state::read_json(
            &file,
            "move it away to forget the back-dated snapshots seen so far",
        )?
        .unwrap_or_default();
        Ok(Alerts {
            file,
            seen: Mutex::new(seen),
        })
    }

    /// Looks at a snapshot a source just uploaded; returns the group's
    /// record when the snapshot is back-dated.
    pub fn arrived(
        &self,
        repo: &str,
        token: &str,
        snapshot: &[u8],
        now_ns: i64,
    ) -> Option<(String, Backdated)> {
        let f = cairn_format::snapshot::decode(snapshot).ok()?;
        let claimed = f.envelope.time_ns;
        if claimed >= now_ns - BACKDATED_NS {
            return None;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let b = seen
            .entry(repo.to_string())
            .or_default()
            .entry(f.envelope.group.clone())
            .or_insert_with(|| Backdated {
                oldest_claim_ns: claimed,
                ..Backdated::default()
            });
        b.count += 1;
        b.token = token.to_string();
        b.last_ns = now_ns;
        b.oldest_claim_ns = b.oldest_claim_ns.min(claimed);
        let out = (f.envelope.group.clone(), b.clone());
        crate::state::write_json(&self.file, &*seen);
        Some(out)
    }

    /// The groups of `repo` with a flood on show at `now_ns`.
    pub fn floods(&self, repo: &str, now_ns: i64) -> BTreeMap<String, Backdated> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(repo)
            .map(|m| {
                m.iter()
                    .filter(|(_, b)| b.count >= FLOOD && now_ns - b.last_ns < SHOWN_NS)
                    .map(|(g, b)| (g.clone(), b.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every group's count, for `/metrics`.
    pub fn all(&self) -> BTreeMap<String, BTreeMap<String, Backdated>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
