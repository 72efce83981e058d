//! The maintenance jobs: retention, prune, the structural check and
//! verify. They read only what the storage side can (no key), so a box
//! runs them on repositories it cannot read.

use std::sync::Arc;

use cairn_maint::forget::{ForgetOptions, forget};
use cairn_maint::prune::{PruneOptions, prune};
use cairn_maint::verify::{Subset, VerifyOptions, verify};
use cairn_server::policy::GroupPattern;
use cairn_storage::Storage;

use crate::config::Kind;

/// Runs one maintenance job now and says what it did; `scratch` holds
/// temporary files of large indexes. None needs a key.
pub fn run(
    storage: Arc<dyn Storage>,
    kind: &Kind,
    holder: &str,
    scratch: &std::path::Path,
) -> Result<String, String> {
    match kind {
        Kind::Retention { group, policy } => {
            let (snaps, _) = cairn_store::list_snapshots(&*storage).map_err(|e| e.to_string())?;
            let pattern = group.as_deref().map(GroupPattern::new).transpose()?;
            let mut groups: Vec<String> = snaps
                .iter()
                .map(|s| s.envelope.group.clone())
                .filter(|g| pattern.as_ref().is_none_or(|p| p.matches(g)))
                .collect();
            groups.sort();
            groups.dedup();
            if groups.is_empty() {
                return Ok("no snapshots in the groups it applies to".into());
            }
            let tz = jiff::tz::TimeZone::system();
            let opts = ForgetOptions {
                policy: policy.clone(),
                groups,
                allow_empty: false,
                dry_run: false,
            };
            let r = forget(&*storage, &opts, cairn_store::now_ns(), &|ns| {
                cairn_maint::retention::Civil::in_zone(&tz, ns)
            })
            .map_err(|e| e.to_string())?;
            let kept: usize = r
                .plans
                .iter()
                .map(|p| p.decisions.iter().filter(|d| d.keep()).count())
                .sum();
            Ok(format!(
                "removed {} snapshots, kept {kept}",
                r.removed.len()
            ))
        }
        Kind::Prune { grace } => {
            let opts = PruneOptions {
                grace: *grace,
                holder: holder.to_string(),
                limits: crate::open::limits(scratch),
                ..PruneOptions::default()
            };
            let r = prune(storage, &opts).map_err(|e| e.to_string())?;
            Ok(format!(
                "deleted {} packs ({} bytes), condemned {} ({} repacked)",
                r.deleted_packs, r.deleted_bytes, r.condemned_packs, r.repacked_packs
            ))
        }
        Kind::Check | Kind::Verify { .. } => {
            let subset = match kind {
                Kind::Verify { subset } => subset.as_deref(),
                _ => None,
            };
            let opts = VerifyOptions {
                hash_packs: matches!(kind, Kind::Verify { .. }),
                subset: subset.map(Subset::parse).transpose()?,
                limits: crate::open::limits(scratch),
                ..VerifyOptions::default()
            };
            let r = verify(&*storage, &opts).map_err(|e| e.to_string())?;
            if r.ok() {
                Ok(format!(
                    "{} snapshots, {} packs, {} read in full: no damage",
                    r.snapshots, r.packs, r.packs_hashed
                ))
            } else {
                let affected: Vec<&String> = r.affected_snapshots.keys().collect();
                Err(format!(
                    "{} ({}); snapshots affected: {}",
                    cairn_server::status::count(r.errors.len(), "problem"),
                    r.errors
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; "),
                    if affected.is_empty() {
                        "none".to_string()
                    } else {
                        affected
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))
            }
        }
        other => Err(format!("{} is not a maintenance job", other.name())),
    }
}
