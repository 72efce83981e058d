use anyhow::Result;
use cairn_repo::Repo;

use crate::args::SnapshotsArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{rfc3339, size, time};

pub fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<i32> {
    // Envelopes are plaintext, but listing is for key holders: opening
    // checks the key, so a wrong passphrase is reported here too.
    let repo = ctx.open()?;
    let (list, bad) = Repo::list_snapshots(&**repo.storage())?;
    // What only each snapshot holds is computed over all of them (a blob
    // shared with a snapshot of another group is not "only" this one's).
    let roots: Vec<_> = list.iter().map(|s| s.envelope.root).collect();
    let unique = cairn_maint::usage::unique_bytes(&**repo.storage(), repo.index(), &roots)?;
    let protected = cairn_maint::protect::protected(&**repo.storage())?;
    let mut list: Vec<_> = list.into_iter().zip(unique).collect();
    if let Some(g) = &a.group {
        list.retain(|(s, _)| &s.envelope.group == g);
    }
    if ctx.g.json {
        let v: Vec<_> = list
            .iter()
            .map(|(s, unique)| {
                let e = &s.envelope;
                serde_json::json!({
                    "id": s.id.to_hex(),
                    "time": rfc3339(e.time_ns),
                    "group": e.group,
                    "tags": e.tags,
                    "root": e.root.to_hex(),
                    "parent": e.parent.map(|p| p.to_hex()),
                    "files": e.files,
                    "dirs": e.dirs,
                    "bytes": e.bytes,
                    "added_bytes": e.added_bytes,
                    "unique_bytes": unique,
                    "protected": protected.contains_key(&s.id),
                    "repaired_from": e.repaired_from.map(|p| p.to_hex()),
                })
            })
            .collect();
        crate::output::json(&v)?;
    } else {
        println!(
            "{:<8}  {:<19}  {:>9}  {:>10}  {:>10}  {:>10}  group / tags",
            "ID", "time (UTC)", "files", "size", "added", "only it"
        );
        for (s, unique) in &list {
            let e = &s.envelope;
            let mut tags = if e.tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.tags.join(","))
            };
            if let Some(r) = e.repaired_from {
                tags.push_str(&format!(" (repaired from {})", r.short()));
            }
            if protected.contains_key(&s.id) {
                tags.push_str(" (protected)");
            }
            println!(
                "{:<8}  {:<19}  {:>9}  {:>10}  {:>10}  {:>10}  {}{}",
                s.id.short(),
                time(e.time_ns),
                e.files,
                size(e.bytes),
                size(e.added_bytes),
                size(*unique),
                e.group,
                tags
            );
        }
        println!(
            "{} snapshots; \"added\" is what each backup wrote, \"only it\" what forgetting it (and a prune) would free",
            list.len()
        );
    }
    for b in &bad {
        eprintln!("warning: unreadable {b}");
    }
    Ok(if bad.is_empty() {
        exit::OK
    } else {
        exit::INTEGRITY
    })
}
