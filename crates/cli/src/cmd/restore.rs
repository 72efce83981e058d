use std::sync::Arc;

use anyhow::Result;
use cairn_engine::archiver::Progress;
use cairn_engine::restorer::{RestoreOptions, restore};
use cairn_engine::walk::split_spec;

use crate::args::RestoreArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{Bar, cancel_flag, size};

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<i32> {
    let repo = ctx.open()?;
    repo.require_owner("restore")?;
    let (spec, path) = split_spec(&a.snapshot);
    let snap = super::resolve(&repo, spec, a.group.as_deref())?;
    let opts = RestoreOptions {
        target: a.target,
        subpath: path.map(String::from),
        includes: a.include,
        excludes: a.exclude,
        threads: 0,
    };
    let progress = Arc::new(Progress::default());
    progress
        .total_bytes
        .store(snap.envelope.bytes, std::sync::atomic::Ordering::Relaxed);
    progress
        .scan_done
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let cancel = cancel_flag();
    let bar = Bar::start(progress.clone(), "restore", ctx.progress());
    let res = restore(&repo, snap.envelope.root, &opts, &progress, &cancel);
    bar.finish();
    let s = res?;
    if ctx.g.json {
        crate::output::json(&s)?;
    } else {
        for w in &s.warnings {
            eprintln!("warning: {}: {}", w.path, w.message);
        }
        if !ctx.g.quiet {
            println!(
                "restored snapshot {} to {}: {} files ({}), {} dirs, {} other, {} hard links in {:.1} s",
                snap.id.short(),
                opts.target.display(),
                s.files,
                size(s.bytes),
                s.dirs,
                s.others,
                s.hardlinks,
                s.duration_secs
            );
            if s.owners_not_applied > 0 {
                println!(
                    "  owners not restored on {} entries (restoring as non-root keeps your own user)",
                    s.owners_not_applied
                );
            }
            if s.xattrs_not_applied > 0 {
                println!(
                    "  extended attributes not restored on {} entries (not permitted or not supported here)",
                    s.xattrs_not_applied
                );
            }
        }
    }
    if s.damaged_files > 0 {
        eprintln!(
            "cairn: {} files were not restored because their data is damaged; run `cairn check --read-data`",
            s.damaged_files
        );
        return Ok(exit::INTEGRITY);
    }
    Ok(if s.warnings.is_empty() {
        exit::OK
    } else {
        exit::WARNINGS
    })
}
