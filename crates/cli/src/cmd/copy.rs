use anyhow::Result;
use cairn_engine::copier::{ReencryptOptions, ReencryptReport, copy_reencrypt};
use cairn_maint::copy::{CopyOptions, CopyReport, copy_sealed};

use crate::args::CopyArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::size;

pub fn run(ctx: &Ctx, a: CopyArgs) -> Result<i32> {
    let from_loc = a.from.clone().unwrap_or_else(|| ctx.repo_location());
    let from = ctx.storage_at(&from_loc)?;
    let to = ctx.storage_with_token(
        &a.to,
        a.to_token_file.as_deref().or(ctx.g.token_file.as_deref()),
    )?;
    if a.reencrypt {
        return reencrypt(ctx, &a, from, to);
    }
    if a.to_key_file.is_some() || a.to_password_file.is_some() {
        anyhow::bail!(
            "--to-key-file and --to-password-file go with --reencrypt; a copy to a replica needs no key"
        );
    }
    let opts = CopyOptions {
        group: a.group.clone(),
        snapshots: a.snapshots.clone(),
        dry_run: a.dry_run,
        limits: ctx.index_limits(),
    };
    let quiet = ctx.g.quiet || ctx.g.json;
    let mut progress = |r: &CopyReport| {
        if !quiet && ctx.progress() {
            eprint!("\rsent {} packs, {} snapshots   ", r.packs, r.copied.len());
        }
    };
    let r = copy_sealed(&from, &to, &opts, &mut progress)?;
    if !quiet && ctx.progress() {
        eprintln!();
    }
    if ctx.g.json {
        crate::output::json(&serde_json::json!({
            "from": from.location(),
            "to": to.location(),
            "dry_run": a.dry_run,
            "selected": r.selected,
            "present": r.present,
            "copied": r.copied.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            "blobs": r.blobs,
            "bytes": r.bytes,
            "blobs_present": r.blobs_present,
            "packs": r.packs,
        }))?;
        return Ok(exit::OK);
    }
    if ctx.g.quiet {
        return Ok(exit::OK);
    }
    let verb = if a.dry_run { "would copy" } else { "copied" };
    println!(
        "{verb} {} of {} snapshots ({} already at {}): {} blobs, {} sent{}; {} blobs already there",
        r.copied.len(),
        r.selected,
        r.present,
        to.location(),
        r.blobs,
        size(r.bytes),
        if a.dry_run {
            String::new()
        } else {
            format!(" in {} packs", r.packs)
        },
        r.blobs_present
    );
    Ok(exit::OK)
}

/// The copy into a repository of another owner.
fn reencrypt(
    ctx: &Ctx,
    a: &CopyArgs,
    from: std::sync::Arc<dyn cairn_storage::Storage>,
    to: std::sync::Arc<dyn cairn_storage::Storage>,
) -> Result<i32> {
    if cairn_maint::copy::is_replica(&*from, &*to)? {
        anyhow::bail!(
            "{} is a replica of {} (the same keys): copy without --reencrypt, which sends records as they are",
            to.location(),
            from.location()
        );
    }
    let src = ctx.open_storage(from, ctx.g.key_file.as_deref(), ctx.given_passphrase()?)?;
    let to_pass = match &a.to_password_file {
        Some(f) => Some(crate::ctx::trim_newline(std::fs::read(f).map_err(|e| {
            anyhow::anyhow!("cannot read password file {}: {e}", f.display())
        })?)),
        None => None,
    };
    let mut dst = ctx.open_storage(to, a.to_key_file.as_deref(), to_pass)?;
    let opts = ReencryptOptions {
        group: a.group.clone(),
        snapshots: a.snapshots.clone(),
        dry_run: a.dry_run,
    };
    let show = ctx.progress();
    let mut progress = |r: &ReencryptReport| {
        if show {
            eprint!(
                "\rcopied {} snapshots, {} blobs, {}   ",
                r.copied.len(),
                r.blobs,
                size(r.bytes)
            );
        }
    };
    let r = copy_reencrypt(&src, &mut dst, &opts, &mut progress)?;
    if show {
        eprintln!();
    }
    if ctx.g.json {
        crate::output::json(&serde_json::json!({
            "from": src.storage().location(),
            "to": dst.storage().location(),
            "dry_run": a.dry_run,
            "reencrypt": true,
            "selected": r.selected,
            "present": r.present,
            "copied": r.copied.iter().map(|(s, d)| serde_json::json!({"from": s, "to": d})).collect::<Vec<_>>(),
            "blobs": r.blobs,
            "bytes": r.bytes,
            "blobs_present": r.blobs_present,
            "packs": r.packs,
        }))?;
        return Ok(exit::OK);
    }
    if ctx.g.quiet {
        return Ok(exit::OK);
    }
    let verb = if a.dry_run { "would copy" } else { "copied" };
    println!(
        "{verb} {} of {} snapshots re-encrypted ({} already at {}): {} blobs, {} sealed; {} blobs already there",
        r.copied.len(),
        r.selected,
        r.present,
        dst.storage().location(),
        r.blobs,
        size(r.bytes),
        r.blobs_present
    );
    Ok(exit::OK)
}
