use anyhow::Result;
use cairn_maint::copy::{CopyOptions, CopyReport, copy_sealed};

use crate::args::CopyArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::size;

pub fn run(ctx: &Ctx, a: CopyArgs) -> Result<i32> {
    let from_loc = a.from.clone().unwrap_or_else(|| ctx.repo_location());
    let from = ctx.storage_at(&from_loc)?;
    let to = ctx.storage_at(&a.to)?;
    let opts = CopyOptions {
        group: a.group.clone(),
        snapshots: a.snapshots.clone(),
        dry_run: a.dry_run,
        limits: ctx.index_limits(),
    };
    let quiet = ctx.g.quiet || ctx.g.json;
    let mut progress = |r: &CopyReport| {
        if !quiet && ctx.progress() {
            eprint!("\rsent {} packs, {} snapshots   ", r.packs, r.copied.len());
        }
    };
    let r = copy_sealed(&from, &to, &opts, &mut progress)?;
    if !quiet && ctx.progress() {
        eprintln!();
    }
    if ctx.g.json {
        crate::output::json(&serde_json::json!({
            "from": from.location(),
            "to": to.location(),
            "dry_run": a.dry_run,
            "selected": r.selected,
            "present": r.present,
            "copied": r.copied.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            "blobs": r.blobs,
            "bytes": r.bytes,
            "blobs_present": r.blobs_present,
            "packs": r.packs,
        }))?;
        return Ok(exit::OK);
    }
    if ctx.g.quiet {
        return Ok(exit::OK);
    }
    let verb = if a.dry_run { "would copy" } else { "copied" };
    println!(
        "{verb} {} of {} snapshots ({} already at {}): {} blobs, {} sent{}; {} blobs already there",
        r.copied.len(),
        r.selected,
        r.present,
        to.location(),
        r.blobs,
        size(r.bytes),
        if a.dry_run {
            String::new()
        } else {
            format!(" in {} packs", r.packs)
        },
        r.blobs_present
    );
    Ok(exit::OK)
}
