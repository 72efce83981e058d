//! One module per verb.

mod agent;
mod backup;
mod check;
mod copy;
mod daemon;
mod diff;
mod dump;
mod forget;
mod git;
mod init;
mod key;
mod ls;
mod mount;
mod protect;
mod prune;
mod repair;
mod restore;
mod serve;
mod server;
mod snapshots;
mod stats;

use anyhow::Result;

use crate::args::{Cli, Command};
use crate::ctx::Ctx;

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx { g: cli.global };
    match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Backup(a) => backup::run(&ctx, a),
        Command::Snapshots(a) => snapshots::run(&ctx, a),
        Command::Ls(a) => ls::run(&ctx, a),
        Command::Diff(a) => diff::run(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Mount(a) => mount::run(&ctx, a),
        Command::Dump(a) => dump::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Key(k) => key::run(&ctx, k),
        Command::Stats(a) => stats::run(&ctx, a),
        Command::Forget(a) => forget::run(&ctx, a),
        Command::Copy(a) => copy::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Protect(a) => protect::run(&ctx, a, true),
        Command::Unprotect(a) => protect::run(&ctx, a, false),
        Command::Repair(r) => repair::run(&ctx, r),
        Command::Serve(a) => serve::run(&ctx, a),
        Command::Server(a) => server::run(&ctx, a),
        Command::Daemon(a) => daemon::daemon(a),
        Command::Run(a) => daemon::run_job(&ctx, a),
        Command::Status(a) => daemon::status(&ctx, a),
        Command::Approve(a) => daemon::approve(a),
        Command::PullAgent(a) => agent::run(&ctx, a),
        Command::Git(c) => git::run(&ctx, c),
    }
}

/// Loads snapshots and resolves a selector.
pub fn resolve(
    repo: &cairn_repo::Repo,
    spec: &str,
    group: Option<&str>,
) -> Result<cairn_repo::SnapshotInfo> {
    let (list, _) = cairn_repo::Repo::list_snapshots(&**repo.storage())?;
    Ok(cairn_repo::select_snapshot(&list, spec, group)?.clone())
}
