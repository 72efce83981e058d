use std::sync::Arc;

use anyhow::Result;
use cairn_engine::archiver::Progress;
use cairn_engine::repairer::repair_snapshots;
use cairn_maint::repair::repair_index;

use crate::args::RepairCommand;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{Bar, cancel_flag};

pub fn run(ctx: &Ctx, c: RepairCommand) -> Result<i32> {
    match c {
        RepairCommand::Index => {
            let storage = ctx.open_keyless("repair the index")?;
            let r = repair_index(storage, &ctx.holder())?;
            if ctx.g.json {
                crate::output::json(&r)?;
            } else if !ctx.g.quiet {
                println!(
                    "indexed {} packs ({} blobs) from their trailers into {} index files; removed {} old index files",
                    r.packs_indexed, r.blobs, r.index_files_written, r.index_files_removed
                );
            }
            for d in &r.damaged_packs {
                eprintln!("warning: pack {d}: left out of the index; run `cairn check`");
            }
            Ok(if r.damaged_packs.is_empty() {
                exit::OK
            } else {
                exit::INTEGRITY
            })
        }
        RepairCommand::Snapshots(a) => {
            let repo = ctx.open()?;
            let mut only = Vec::new();
            for spec in &a.snapshots {
                only.push(super::resolve(&repo, spec, None)?.id);
            }
            let progress = Arc::new(Progress::default());
            let total: u64 = repo.index().packs().iter().map(|p| p.size).sum();
            progress
                .total_bytes
                .store(total, std::sync::atomic::Ordering::Relaxed);
            let bar = Bar::start(progress.clone(), "check", ctx.progress());
            let r = repair_snapshots(&repo, &only, a.dry_run, &progress, &cancel_flag());
            bar.finish();
            let r = r?;
            if ctx.g.json {
                crate::output::json(&r)?;
            } else if !ctx.g.quiet {
                if r.repaired.is_empty() && r.unrepairable.is_empty() {
                    println!("no snapshot needs damaged data: nothing to repair");
                }
                for x in &r.repaired {
                    match &x.repaired {
                        Some(n) => println!(
                            "snapshot {} repaired as {} ({} paths left out; the original stays until forgotten)",
                            &x.original[..8],
                            &n[..8],
                            x.removed.len()
                        ),
                        None => println!(
                            "snapshot {} would be repaired, leaving out {} paths",
                            &x.original[..8],
                            x.removed.len()
                        ),
                    }
                    for p in &x.removed {
                        println!("  left out: {p}");
                    }
                }
                for u in &r.unrepairable {
                    println!(
                        "snapshot {} cannot be repaired: its root tree is damaged",
                        &u[..8]
                    );
                }
            }
            Ok(if r.unrepairable.is_empty() {
                exit::OK
            } else {
                exit::INTEGRITY
            })
        }
    }
}
