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
    let (mut list, bad) = Repo::list_snapshots(&**repo.storage())?;
    if let Some(g) = &a.group {
        list.retain(|s| &s.envelope.group == g);
    }
    if ctx.g.json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
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
                    "repaired_from": e.repaired_from.map(|p| p.to_hex()),
                })
            })
            .collect();
        crate::output::json(&v)?;
    } else {
        println!(
            "{:<8}  {:<19}  {:>9}  {:>10}  {:>10}  group / tags",
            "ID", "time (UTC)", "files", "size", "added"
        );
        for s in &list {
            let e = &s.envelope;
            let mut tags = if e.tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.tags.join(","))
            };
            if let Some(r) = e.repaired_from {
                tags.push_str(&format!(" (repaired from {})", r.short()));
            }
            println!(
                "{:<8}  {:<19}  {:>9}  {:>10}  {:>10}  {}{}",
                s.id.short(),
                time(e.time_ns),
                e.files,
                size(e.bytes),
                size(e.added_bytes),
                e.group,
                tags
            );
        }
        println!("{} snapshots", list.len());
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
