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
    // Behind a box, a put token may not read trees or protection marks:
    // the listing still shows what the envelopes say.
    let refused = |e: &cairn_maint::Error| {
        matches!(
            e,
            cairn_maint::Error::Storage(cairn_storage::Error::Refused(_))
                | cairn_maint::Error::Repo(cairn_repo::Error::Storage(
                    cairn_storage::Error::Refused(_)
                ))
        )
    };
    let unique: Vec<Option<u64>> =
        match cairn_maint::usage::unique_bytes(&**repo.storage(), repo.index(), &roots) {
            Ok(u) => u.into_iter().map(Some).collect(),
            Err(e) if refused(&e) => vec![None; roots.len()],
            Err(e) => return Err(e.into()),
        };
    let protected = match cairn_maint::protect::protected(&**repo.storage()) {
        Ok(p) => p,
        Err(e) if refused(&e) => Default::default(),
        Err(e) => return Err(e.into()),
    };
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
                unique.map(size).unwrap_or_else(|| "-".into()),
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
