use anyhow::Result;
use cairn_maint::prune::{PruneOptions, PruneReport, prune};

use crate::args::{PruneArgs, PruneOpts};
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{size, time};

pub fn run(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    let storage = ctx.open_keyless("prune")?;
    let report = run_prune(ctx, storage, &a.opts, a.dry_run)?;
    print(ctx, &report)?;
    Ok(exit::OK)
}

pub fn run_prune(
    ctx: &Ctx,
    storage: std::sync::Arc<dyn cairn_storage::Storage>,
    o: &PruneOpts,
    dry_run: bool,
) -> Result<PruneReport> {
    if o.grace.is_zero() && !dry_run {
        eprintln!(
            "warning: --grace 0 deletes unused data in this run; a backup running now will refuse to commit if it used any of it"
        );
    }
    let opts = PruneOptions {
        grace: o.grace,
        max_unused: o.max_unused,
        dry_run,
        holder: ctx.holder(),
        limits: ctx.index_limits(),
        ..PruneOptions::default()
    };
    Ok(prune(storage, &opts)?)
}

pub fn print(ctx: &Ctx, r: &PruneReport) -> Result<()> {
    if ctx.g.json {
        return crate::output::json(r);
    }
    if ctx.g.quiet {
        return Ok(());
    }
    let would = if r.dry_run { " (dry run)" } else { "" };
    println!(
        "{} snapshots need {} of {} blobs, {} of {} in {} packs",
        r.snapshots,
        r.blobs_used,
        r.blobs,
        size(r.bytes_used),
        size(r.bytes),
        r.packs
    );
    if r.deleted_packs > 0 || r.rescued_packs > 0 {
        println!(
            "deleted{}: {} packs, {} (condemned earlier, grace period over){}",
            if r.dry_run { " (would be)" } else { "" },
            r.deleted_packs,
            size(r.deleted_bytes),
            if r.rescued_packs > 0 {
                format!(
                    "; {} condemned packs kept because a snapshot needs them now",
                    r.rescued_packs
                )
            } else {
                String::new()
            }
        );
    }
    if r.condemned_packs > 0 {
        println!(
            "condemned{would}: {} packs, {} ({} repacked first, {} copied)",
            r.condemned_packs,
            size(r.condemned_bytes),
            r.repacked_packs,
            size(r.repack_bytes_written)
        );
    } else {
        println!("nothing new to collect");
    }
    for p in &r.pending {
        if p.packs > 0 {
            println!(
                "waiting: {} packs, {}, deleted by a prune after {} UTC",
                p.packs,
                size(p.bytes),
                time(p.not_before_ns)
            );
        }
    }
    for d in &r.damaged_packs {
        eprintln!("warning: pack {d}; left alone, run `cairn check`");
    }
    Ok(())
}
