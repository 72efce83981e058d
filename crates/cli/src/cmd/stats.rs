use anyhow::Result;
use cairn_repo::Repo;

use crate::args::StatsArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::size;

pub fn run(ctx: &Ctx, a: StatsArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let (all, _) = Repo::list_snapshots(&**repo.storage())?;
    let roots: Vec<_> = all.iter().map(|s| s.envelope.root).collect();
    let unique = cairn_maint::usage::unique_bytes(&**repo.storage(), repo.index(), &roots)?;
    let mut both: Vec<_> = all.into_iter().zip(unique).collect();
    if let Some(g) = &a.group {
        both.retain(|(s, _)| &s.envelope.group == g);
    }
    let list: Vec<_> = both.iter().map(|(s, _)| s.clone()).collect();
    let index = repo.index();
    let stored: u64 = index.packs().iter().map(|p| p.size).sum();
    let (mut raw, mut blobs) = (0u64, 0u64);
    index.scan(|_, loc| {
        raw += u64::from(loc.raw_len);
        blobs += 1;
    })?;
    let referenced: u64 = list.iter().map(|s| s.envelope.bytes).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    if ctx.g.json {
        crate::output::json(&serde_json::json!({
            "snapshots": list.len(),
            "packs": index.packs().len(),
            "blobs": blobs,
            "stored_bytes": stored,
            "unique_raw_bytes": raw,
            "snapshot_bytes": referenced,
            "compression_ratio": ratio(raw, stored),
            "total_ratio": ratio(referenced, stored),
            "per_snapshot": both.iter().map(|(s, u)| serde_json::json!({
                "id": s.id.to_hex(), "group": s.envelope.group,
                "bytes": s.envelope.bytes, "added_bytes": s.envelope.added_bytes,
                "unique_bytes": u,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        println!("snapshots:         {}", list.len());
        println!(
            "stored:            {} in {} packs, {} blobs",
            size(stored),
            index.packs().len(),
            blobs
        );
        println!(
            "unique data:       {} before compression ({:.2}x)",
            size(raw),
            ratio(raw, stored)
        );
        println!(
            "snapshots hold:    {} of files ({:.2}x over what is stored)",
            size(referenced),
            ratio(referenced, stored)
        );
        if !both.is_empty() {
            println!();
            println!(
                "{:<8}  {:<19}  {:>10}  {:>10}  {:>10}  group",
                "ID", "time (UTC)", "size", "added", "only it"
            );
            for (s, u) in &both {
                println!(
                    "{:<8}  {:<19}  {:>10}  {:>10}  {:>10}  {}",
                    s.id.short(),
                    crate::output::time(s.envelope.time_ns),
                    size(s.envelope.bytes),
                    size(s.envelope.added_bytes),
                    size(*u),
                    s.envelope.group
                );
            }
        }
    }
    Ok(exit::OK)
}
