//! `cairn pull-agent`: the machine's end of a pull backup. It reads what
//! to back up from the box, then backs it up into the box over the same
//! connection with the machine's put-only key, and reports on standard
//! error; standard output carries the storage protocol only.

use std::io::BufReader;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use cairn_daemon::pull::{AgentResult, RESULT_PREFIX, Request, read_request};
use cairn_engine::archiver::{BackupOptions, Progress, backup};
use cairn_repo::{KeySource, Repo};

use crate::args::PullAgentArgs;
use crate::ctx::{Ctx, hostname};
use crate::exit;
use crate::output::cancel_flag;

pub fn run(ctx: &Ctx, a: PullAgentArgs) -> Result<i32> {
    let r = agent(ctx, &a).unwrap_or_else(|e| AgentResult {
        outcome: "failed".into(),
        message: e,
        ..AgentResult::default()
    });
    eprintln!("{RESULT_PREFIX}{}", serde_json::to_string(&r)?);
    Ok(if r.outcome == "ok" {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn refused(message: String) -> AgentResult {
    AgentResult {
        outcome: "refused".into(),
        message,
        ..AgentResult::default()
    }
}

/// Whether every requested path lies below an allowed directory.
fn check_allowed(req: &Request, allow: &[PathBuf]) -> Result<(), String> {
    if allow.is_empty() {
        return Ok(());
    }
    let roots: Vec<PathBuf> = allow.iter().filter_map(|d| d.canonicalize().ok()).collect();
    for p in &req.paths {
        let real = p.canonicalize().unwrap_or_else(|_| p.clone());
        if !p.is_absolute() || !roots.iter().any(|r| real.starts_with(r)) {
            return Err(format!(
                "the box asked for {}, which is outside what this machine allows (--allow {})",
                p.display(),
                allow
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

fn agent(ctx: &Ctx, a: &PullAgentArgs) -> Result<AgentResult, String> {
    let mut input = BufReader::new(std::io::stdin());
    let req = read_request(&mut input)?;
    if let Err(e) = check_allowed(&req, &a.allow) {
        return Ok(refused(e));
    }
    let sources = cairn_daemon::config::Backup {
        paths: req.paths.clone(),
        ..Default::default()
    };
    if let Err(e) = cairn_daemon::guards::check_sources(&sources) {
        return Ok(refused(e));
    }
    let key = ctx.g.key_file.clone().or(req.key_file.clone()).ok_or(
        "pull-agent needs a key: --key-file in the forced command, or remote_key_file in the box's job (the machine's put-only key)",
    )?;
    let staging = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".cache")
        })
        .join("cairn")
        .join("staging");
    // Standard output unbuffered and unlocked: the protocol frames its own
    // writes, and Rust's line-buffered stdout searched every 4 MiB piece
    // for newlines.
    let out = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(|e| format!("cannot use standard output: {e}"))?;
    let storage = cairn_remote::ssh::RemoteStorage::connect(
        Box::new(input),
        Box::new(out),
        "the box",
        &staging,
    )
    .map_err(|e| e.to_string())?;
    let source = KeySource::File {
        path: key,
        passphrase: ctx.given_passphrase().map_err(|e| e.to_string())?,
    };
    let mut repo = Repo::open_with(Arc::new(storage), &source, ctx.index_limits())
        .map_err(|e| e.to_string())?;
    let opts = BackupOptions {
        paths: req.paths.clone(),
        excludes: req.exclude.clone(),
        exclude_caches: req.exclude_caches,
        one_file_system: req.one_file_system,
        tags: req.tags.clone(),
        group: Some(req.group.clone()),
        cache_dir: Some(ctx.cache_dir(&repo)),
        command: vec![format!("cairn pull-agent: job {}", req.job)],
        hostname: hostname(),
        compression: req.compression.unwrap_or(cairn_repo::DEFAULT_LEVEL),
        state_dir: Some(ctx.state_dir(&repo).map_err(|e| e.to_string())?),
        guard: req
            .max_vanished
            .map(|m| cairn_daemon::guards::shrink_guard(&req.job, m, req.approved)),
        ..BackupOptions::default()
    };
    let progress = Progress::default();
    let cancel = cancel_flag();
    Ok(match backup(&mut repo, &opts, &progress, &cancel) {
        Ok(s) => AgentResult {
            outcome: "ok".into(),
            message: format!(
                "snapshot {} of {}: {} files, {} read, {} added",
                s.snapshot.as_deref().map_or("", |x| &x[..8.min(x.len())]),
                s.group,
                s.new_files + s.changed_files + s.unchanged_files,
                crate::output::size(s.bytes_read),
                crate::output::size(s.bytes_added)
            ),
            snapshot: s.snapshot,
            bytes_added: s.bytes_added,
        },
        Err(cairn_engine::Error::Refused(m)) => refused(m),
        Err(cairn_engine::Error::Interrupted) => AgentResult {
            outcome: "interrupted".into(),
            message: "interrupted on the machine; the next run resumes".into(),
            ..AgentResult::default()
        },
        Err(e) => AgentResult {
            outcome: "failed".into(),
            message: e.to_string(),
            ..AgentResult::default()
        },
    })
}
