use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cairn_daemon::git::{self, GitJob, forge::ForgeKind};
use cairn_engine::archiver::{Progress, backup};

use crate::args::{GitCommand, GitMirrorArgs, GitRestoreArgs};
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{Bar, cancel_flag, size};

pub fn run(ctx: &Ctx, c: GitCommand) -> Result<i32> {
    match c {
        GitCommand::Mirror(a) => mirror(ctx, a),
        GitCommand::Restore(a) => restore(ctx, a),
    }
}

fn mirror(ctx: &Ctx, a: GitMirrorArgs) -> Result<i32> {
    let forge = ForgeKind::parse(&a.forge).context("unknown forge")?;
    if a.fetches == 0 || a.fetches > 64 {
        bail!("--fetches is how many fetches run at once, 1 to 64");
    }
    let job = GitJob {
        forge,
        base_url: a.base_url.map(|b| b.trim_end_matches('/').to_string()),
        owner: a.owner.clone(),
        token_file: a.token_file,
        include: if a.include.is_empty() {
            vec!["*".into()]
        } else {
            a.include
        },
        exclude: a.exclude,
        forks: a.forks,
        archived: !a.no_archived,
        wikis: !a.no_wikis,
        lfs: a.no_lfs.then_some(false),
        pull_requests: a.pull_requests,
        ssh: a.ssh,
        ssh_command: None,
        fetches: a.fetches,
        group: a.group,
    };
    let root = a.mirrors.unwrap_or_else(|| {
        cairn_daemon::paths::xdg("XDG_STATE_HOME", ".local/state")
            .join("cairn/git")
            .join(format!("{}-{}", forge.name(), a.owner.replace('/', "-")))
    });
    // The repository is opened first: a wrong passphrase should not cost
    // a whole mirroring run.
    let repo = if a.no_snapshot {
        None
    } else {
        Some(ctx.open()?)
    };
    let cancel = cancel_flag();
    let sum = git::mirror(&job, &root, &git::Pace::from_env(), &cancel)?;
    let news = sum.news();
    if !ctx.g.quiet {
        println!("{}", sum.message());
        for n in &news {
            println!("  {n}");
        }
    }
    if let Some(mut repo) = repo {
        let opts = git::snapshot_options(&repo, &root, &job.group(), "cairn git mirror".into());
        let progress = Arc::new(Progress::default());
        let bar = Bar::start(progress.clone(), "snapshot", ctx.progress());
        let res = backup(&mut repo, &opts, &progress, &cancel);
        bar.finish();
        let s = res?;
        if !ctx.g.quiet {
            println!(
                "snapshot {} of {}: {} added",
                s.snapshot
                    .as_deref()
                    .map_or("", |id| &id[..id.len().min(8)]),
                job.group(),
                size(s.bytes_added)
            );
        }
    }
    Ok(if sum.failed.is_empty() {
        exit::OK
    } else {
        for (n, why) in &sum.failed {
            eprintln!("cairn: {n}: {why}");
        }
        exit::WARNINGS
    })
}

fn restore(ctx: &Ctx, a: GitRestoreArgs) -> Result<i32> {
    let repo = ctx.open()?;
    repo.require_owner("restore")?;
    let snap = super::resolve(&repo, &a.snapshot, a.group.as_deref())?;
    let progress = Arc::new(Progress::default());
    let cancel = cancel_flag();
    let r = git::restore::restore(
        &repo,
        snap.envelope.root,
        &a.name,
        &a.dest,
        &progress,
        &cancel,
    )
    .map_err(anyhow::Error::msg)?;
    if !ctx.g.quiet {
        println!(
            "restored {} (id {}) from snapshot {} to {}: {} refs, {} preserved old tips",
            r.entry.name,
            r.entry.id,
            snap.id.short(),
            a.dest.display(),
            r.refs,
            r.preserved
        );
    }
    if let Some(url) = &a.push {
        git::restore::push(&a.dest, url).map_err(anyhow::Error::msg)?;
        if !ctx.g.quiet {
            println!("pushed every ref to {url}");
        }
    }
    Ok(exit::OK)
}
