use std::sync::Arc;

use anyhow::Result;
use cairn_engine::archiver::Progress;
use cairn_engine::restorer::{Overwrite, RestoreOptions, restore, verify};
use cairn_engine::walk::split_spec;

use crate::args::{OverwriteArg, RestoreArgs};
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{Bar, cancel_flag, size};

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<i32> {
    let repo = ctx.open()?;
    repo.require_owner("restore")?;
    let (spec, path) = split_spec(&a.snapshot);
    let snap = super::resolve(&repo, spec, a.group.as_deref())?;
    // The snapshot's size is the restore's only for all of it.
    let whole = path.is_none() && a.include.is_empty() && a.exclude.is_empty();
    let opts = RestoreOptions {
        target: a.target,
        subpath: path.map(String::from),
        includes: a.include,
        excludes: a.exclude,
        threads: a.threads,
        overwrite: match a.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Never => Overwrite::Never,
        },
        delete: a.delete,
        expected_bytes: whole.then_some(snap.envelope.bytes),
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
    let verified = if a.verify && s.damaged_files == 0 {
        Some(verify(&repo, snap.envelope.root, &opts, &cancel)?)
    } else {
        None
    };
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
            if s.kept > 0 {
                println!(
                    "  {} entries already there and matching the snapshot were kept (--overwrite always rewrites them)",
                    s.kept
                );
            }
            if s.deleted > 0 {
                println!("  {} entries not in the snapshot were deleted", s.deleted);
            }
            if let Some(v) = &verified {
                println!(
                    "  verified: {} files ({}) read back and match the snapshot",
                    v.files,
                    size(v.bytes)
                );
            }
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
    if let Some(v) = &verified
        && !v.mismatches.is_empty()
    {
        for m in &v.mismatches {
            eprintln!("cairn: verify: {} {}", m.path, m.message);
        }
        eprintln!(
            "cairn: {} restored files do not match the snapshot; restore them again with --overwrite always",
            v.mismatches.len()
        );
        return Ok(exit::INTEGRITY);
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
