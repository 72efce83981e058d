use anyhow::Result;
use cairn_repo::Repo;

use crate::args::StatsArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::size;

pub fn run(ctx: &Ctx, a: StatsArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let (mut list, _) = Repo::list_snapshots(&**repo.storage())?;
    if let Some(g) = &a.group {
        list.retain(|s| &s.envelope.group == g);
    }
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
            "per_snapshot": list.iter().map(|s| serde_json::json!({
                "id": s.id.to_hex(), "group": s.envelope.group,
                "bytes": s.envelope.bytes, "added_bytes": s.envelope.added_bytes,
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
    }
    Ok(exit::OK)
}
