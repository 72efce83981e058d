use anyhow::{Result, bail};
use cairn_maint::forget::{ForgetOptions, forget, forget_ids};
use cairn_maint::retention::{Civil, Policy};
use cairn_repo::Repo;

use crate::args::ForgetArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::rfc3339;

fn local_time(tz: &jiff::tz::TimeZone, ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let c = Civil::in_zone(tz, ns);
    let offset = jiff::Timestamp::from_second(secs)
        .map(|ts| tz.to_offset(ts).seconds())
        .unwrap_or(0);
    let local = secs + i64::from(offset);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        c.year,
        c.month,
        c.day,
        c.hour,
        local.rem_euclid(3600) / 60
    )
}

pub fn run(ctx: &Ctx, a: ForgetArgs) -> Result<i32> {
    let storage = ctx.open_keyless("forget snapshots")?;
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within_ns: a
            .keep_within
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        tags: a.keep_tag.clone(),
    };
    let by_id = !a.snapshots.is_empty();
    if by_id && policy != Policy::default() {
        bail!("give either snapshot IDs or --keep-* rules, not both");
    }
    let mut doc = serde_json::Value::Null;
    if by_id {
        let (list, _) = Repo::list_snapshots(&*storage)?;
        let mut ids = Vec::new();
        for spec in &a.snapshots {
            let group = a.group.first().map(String::as_str);
            ids.push(cairn_repo::select_snapshot(&list, spec, group)?.id);
        }
        forget_ids(&*storage, &ids, a.dry_run)?;
        if !a.dry_run {
            forget_recorded(ctx, &*storage, &ids)?;
        }
        if ctx.g.json {
            let v: Vec<String> = ids.iter().map(|i| i.to_hex()).collect();
            doc = serde_json::json!({"removed": v, "dry_run": a.dry_run});
        } else if !ctx.g.quiet {
            for id in &ids {
                let verb = if a.dry_run { "would remove" } else { "removed" };
                println!("{verb} snapshot {}", id.short());
            }
        }
    } else {
        let tz = jiff::tz::TimeZone::system();
        let opts = ForgetOptions {
            policy,
            groups: a.group.clone(),
            allow_empty: a.allow_empty,
            dry_run: a.dry_run,
        };
        let report = forget(&*storage, &opts, cairn_repo::now_ns(), &|ns| {
            Civil::in_zone(&tz, ns)
        })?;
        if !a.dry_run {
            forget_recorded(ctx, &*storage, &report.removed)?;
        }
        if ctx.g.json {
            let groups: Vec<_> = report
                .plans
                .iter()
                .map(|p| {
                    let d: Vec<_> = p
                        .decisions
                        .iter()
                        .map(|d| {
                            serde_json::json!({
                                "id": d.candidate.id.to_hex(),
                                "time": rfc3339(d.candidate.time_ns),
                                "tags": d.candidate.tags,
                                "keep": d.keep(),
                                "reasons": d.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    serde_json::json!({"group": p.group, "snapshots": d})
                })
                .collect();
            let removed: Vec<String> = report.removed.iter().map(|i| i.to_hex()).collect();
            doc = serde_json::json!({
                "groups": groups,
                "removed": removed,
                "dry_run": a.dry_run,
            });
        } else if !ctx.g.quiet {
            for p in &report.plans {
                println!("group {}", p.group);
                println!(
                    "  {:<8}  {:<16}  {:<7}  {:<24}  tags",
                    "ID", "time (local)", "action", "kept by"
                );
                for d in &p.decisions {
                    let c = &d.candidate;
                    let action = match (d.keep(), a.dry_run) {
                        (true, _) => "keep",
                        (false, true) => "remove?",
                        (false, false) => "removed",
                    };
                    let why: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                    println!(
                        "  {:<8}  {:<16}  {:<7}  {:<24}  {}",
                        c.id.short(),
                        local_time(&tz, c.time_ns),
                        action,
                        why.join(", "),
                        c.tags.join(",")
                    );
                }
            }
            let kept: usize = report
                .plans
                .iter()
                .map(|p| p.decisions.iter().filter(|d| d.keep()).count())
                .sum();
            println!(
                "{} snapshots {}, {kept} kept",
                report.removed.len(),
                if a.dry_run {
                    "would be removed"
                } else {
                    "removed"
                }
            );
        }
        for u in &report.unreadable {
            eprintln!("warning: unreadable {u}; left alone");
        }
    }
    if a.prune && !a.dry_run {
        let r = super::prune::run_prune(ctx, storage, &a.prune_opts, false)?;
        if ctx.g.json {
            doc["prune"] = serde_json::to_value(&r)?;
        } else {
            super::prune::print(ctx, &r)?;
        }
    }
    if ctx.g.json {
        crate::output::json(&doc)?;
    }
    Ok(exit::OK)
}

/// Drops this machine's rollback records of snapshots forgotten on
/// purpose; a record that stays is said, since the next backup of its
/// group would then refuse.
fn forget_recorded(
    ctx: &Ctx,
    storage: &dyn cairn_storage::Storage,
    ids: &[cairn_format::Id],
) -> Result<()> {
    for p in cairn_engine::rollback::forget_recorded(&ctx.state_dir_of(storage)?, ids) {
        eprintln!("warning: {p}");
    }
    Ok(())
}
