use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Result, bail};
use cairn_engine::archiver::{BackupOptions, BackupSummary, Progress, backup, backup_stream};

use crate::args::BackupArgs;
use crate::ctx::{Ctx, hostname};
use crate::exit;
use crate::output::{Bar, cancel_flag, size};

pub fn run(ctx: &Ctx, a: BackupArgs) -> Result<i32> {
    // A terminal on stdin is a forgotten pipe: the backup would store
    // whatever is typed until Ctrl-D.
    if a.stdin && std::io::stdin().is_terminal() {
        bail!(
            "--stdin reads the data to back up from stdin, which is a terminal; pipe it in, e.g. `pg_dump shop | cairn backup --stdin --stdin-filename shop.sql`"
        );
    }
    let mut scratch = false;
    let mut repo = match ctx.open() {
        Err(e)
            if ctx.is_default_repo()
                && matches!(
                    e.downcast_ref::<cairn_repo::Error>(),
                    Some(cairn_repo::Error::NotARepository(_))
                ) =>
        {
            // A dry run creates nothing: it measures against an empty
            // repository in memory, where everything is new.
            if a.dry_run {
                scratch = true;
                cairn_repo::Repo::scratch()?
            } else {
                super::init::create(ctx)?
            }
        }
        r => r?,
    };
    let state_dir = if scratch {
        None
    } else {
        Some(ctx.state_dir(&repo)?)
    };
    let opts = BackupOptions {
        paths: a.paths,
        excludes: a.exclude,
        exclude_files: a.exclude_file,
        exclude_caches: a.exclude_caches,
        one_file_system: a.one_file_system,
        tags: a.tag,
        group: a.group,
        dry_run: a.dry_run,
        cache_dir: (!a.no_cache && !scratch).then(|| ctx.cache_dir(&repo)),
        command: std::env::args().collect(),
        hostname: a.host.unwrap_or_else(hostname),
        threads: 0,
        pack_size: a.pack_size.unwrap_or(0),
        scan: ctx.progress() && !a.stdin,
        compression: a.compression,
        state_dir,
        accept_rollback: a.accept_rollback,
        guard: None,
    };
    let progress = Arc::new(Progress::default());
    let cancel = cancel_flag();
    let bar = Bar::start(progress.clone(), "backup", ctx.progress());
    let res = if a.stdin {
        let name = a.stdin_filename.as_deref().unwrap_or("stdin");
        backup_stream(
            &mut repo,
            &opts,
            &mut std::io::stdin().lock(),
            name,
            // Whatever writes into the pipe is not ours to ask about.
            &mut || Ok(()),
            &progress,
            &cancel,
        )
    } else {
        backup(&mut repo, &opts, &progress, &cancel)
    };
    bar.finish();
    let s = res?;
    if ctx.g.json {
        crate::output::json(&s)?;
    } else if !ctx.g.quiet {
        print_summary(&s, a.dry_run);
    }
    for w in &s.warnings {
        if !ctx.g.json {
            eprintln!("warning: {}: {}", w.path, w.message);
        }
    }
    Ok(if s.warnings.is_empty() {
        exit::OK
    } else {
        exit::WARNINGS
    })
}

fn print_summary(s: &BackupSummary, dry_run: bool) {
    match &s.snapshot {
        Some(id) => println!("snapshot {} saved (group {})", &id[..8], s.group),
        None if dry_run => println!("dry run: nothing was written (group {})", s.group),
        None => {}
    }
    println!(
        "  files:     {} new, {} changed, {} unchanged; {} dirs, {} other",
        s.new_files, s.changed_files, s.unchanged_files, s.dirs, s.others
    );
    println!(
        "  read:      {} of {} in the snapshot",
        size(s.bytes_read),
        size(s.total_bytes)
    );
    if dry_run {
        println!(
            "  would add: {} before compression",
            size(s.raw_bytes_added)
        );
    } else {
        println!(
            "  added:     {} stored ({} before compression) in {} blobs, {} packs",
            size(s.bytes_added),
            size(s.raw_bytes_added),
            s.blobs_added,
            s.packs_added
        );
    }
    if s.packs_recovered > 0 {
        println!(
            "  resumed:   {} packs from an interrupted run were reused",
            s.packs_recovered
        );
    }
    let rate = if s.duration_secs > 0.0 {
        s.bytes_read as f64 / s.duration_secs
    } else {
        0.0
    };
    println!(
        "  duration:  {:.1} s ({}/s read)",
        s.duration_secs,
        size(rate as u64)
    );
    if !s.warnings.is_empty() {
        println!("  warnings:  {} (listed on stderr)", s.warnings.len());
    }
}
