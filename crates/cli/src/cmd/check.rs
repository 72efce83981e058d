use std::sync::Arc;

use anyhow::Result;
use cairn_engine::archiver::Progress;
use cairn_engine::checker::{CheckOptions, check};

use crate::args::CheckArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{Bar, cancel_flag};

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let progress = Arc::new(Progress::default());
    let total: u64 = repo.index().packs().iter().map(|p| p.size).sum();
    progress
        .total_bytes
        .store(total, std::sync::atomic::Ordering::Relaxed);
    let cancel = cancel_flag();
    let bar = Bar::start(progress.clone(), "check", ctx.progress() && a.read_data);
    let res = check(
        &repo,
        &CheckOptions {
            read_data: a.read_data,
            threads: 0,
        },
        &progress,
        &cancel,
    );
    bar.finish();
    let r = res?;
    if ctx.g.json {
        crate::output::json(&r)?;
    } else {
        for n in &r.notes {
            println!("note: {n}");
        }
        for e in &r.errors {
            println!("error: {e}");
        }
        for b in &r.damaged_blobs {
            println!("damaged blob {b}");
        }
        for x in &r.affected {
            println!(
                "affected: snapshot {} path {} (blob {})",
                &x.snapshot[..8],
                x.path,
                &x.blob[..8]
            );
        }
        if !ctx.g.quiet {
            println!(
                "checked {} snapshots, {} trees, {} packs{}: {}",
                r.snapshots,
                r.trees,
                r.packs,
                if a.read_data {
                    format!(
                        " ({} read, {} blobs authenticated)",
                        r.packs_read, r.blobs_read
                    )
                } else {
                    String::new()
                },
                if r.ok() { "no errors" } else { "ERRORS FOUND" }
            );
        }
    }
    Ok(if r.ok() { exit::OK } else { exit::INTEGRITY })
}
