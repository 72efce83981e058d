use std::sync::Arc;

use anyhow::Result;
use cairn_engine::archiver::Progress;
use cairn_engine::checker::{CheckOptions, check};
use cairn_maint::verify::{VerifyOptions, VerifyReport, verify};

use crate::args::CheckArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{Bar, cancel_flag, size};

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<i32> {
    // The structure is checked with no key; only reading data needs the
    // owner's. A key that is given must still be right.
    let storage = ctx.open_keyless("check the repository")?;
    let read = a.read_data || a.read_data_subset.is_some();
    let v = verify(
        &*storage,
        &VerifyOptions {
            hash_packs: !read && !a.structure_only,
            limits: ctx.index_limits(),
            ..VerifyOptions::default()
        },
    )?;
    if !read {
        return report_structure(ctx, &v);
    }

    let repo = ctx.open()?;
    let progress = Arc::new(Progress::default());
    let total: u64 = repo
        .index()
        .packs()
        .iter()
        .filter(|p| a.read_data_subset.is_none_or(|s| s.contains(&p.id)))
        .map(|p| p.size)
        .sum();
    progress
        .total_bytes
        .store(total, std::sync::atomic::Ordering::Relaxed);
    let cancel = cancel_flag();
    let bar = Bar::start(progress.clone(), "check", ctx.progress());
    let res = check(
        &repo,
        &CheckOptions {
            // The keyless check above reported the structure.
            structure: false,
            read_data: true,
            threads: 0,
            only_packs: a.read_data_subset.map(|s| {
                Arc::new(move |id: &cairn_format::Id| s.contains(id))
                    as cairn_engine::checker::PackFilter
            }),
        },
        &progress,
        &cancel,
    );
    bar.finish();
    let mut r = res?;
    r.errors.splice(0..0, v.errors.iter().cloned());
    r.notes.splice(0..0, v.notes.iter().cloned());
    if ctx.g.json {
        let mut doc = serde_json::to_value(&r)?;
        doc["affected_snapshots"] = serde_json::to_value(&v.affected_snapshots)?;
        doc["subset"] = serde_json::Value::from(a.read_data_subset.map(|s| format!("{s:?}")));
        crate::output::json(&doc)?;
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
                "checked {} snapshots, {} trees, {} packs ({} read{}, {} blobs authenticated): {}",
                r.snapshots,
                r.trees,
                r.packs,
                r.packs_read,
                if a.read_data_subset.is_some() {
                    " in this subset"
                } else {
                    ""
                },
                r.blobs_read,
                if r.ok() { "no errors" } else { "ERRORS FOUND" }
            );
        }
    }
    Ok(if r.ok() { exit::OK } else { exit::INTEGRITY })
}

fn report_structure(ctx: &Ctx, v: &VerifyReport) -> Result<i32> {
    if ctx.g.json {
        crate::output::json(v)?;
    } else {
        for n in &v.notes {
            println!("note: {n}");
        }
        for e in &v.errors {
            println!("error: {e}");
        }
        for (snap, why) in &v.affected_snapshots {
            println!("affected: {snap} ({})", why.join("; "));
        }
        if !ctx.g.quiet {
            println!(
                "checked {} snapshots, {} trees, {} packs ({} compared with their names, {}), no key used: {}",
                v.snapshots,
                v.trees,
                v.packs,
                v.packs_hashed,
                size(v.bytes_hashed),
                if v.ok() { "no errors" } else { "ERRORS FOUND" }
            );
        }
    }
    Ok(if v.ok() { exit::OK } else { exit::INTEGRITY })
}
