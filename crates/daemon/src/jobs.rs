//! The scheduler: every second it runs, one at a time, the jobs whose
//! interval has passed since they last started (two cores are for serving
//! backups). None needs a key.

use std::sync::Arc;
use std::time::Duration;

use cairn_maint::forget::{ForgetOptions, forget};
use cairn_maint::prune::{PruneOptions, prune};
use cairn_maint::verify::{Subset, VerifyOptions, verify};
use cairn_server::config::{JobConfig, JobKind};
use cairn_server::jobs::{Outcome, job_name};
use cairn_server::listener::Server;
use cairn_server::policy::GroupPattern;
use cairn_storage::Storage;

/// Index memory limits of a job: past them the index goes to a file in
/// `scratch` (on disk, where `/tmp` may be RAM).
/// When `scratch` cannot be made, the index stays in memory.
fn limits(scratch: &std::path::Path) -> cairn_store::TableLimits {
    cairn_store::TableLimits {
        dir: std::fs::create_dir_all(scratch)
            .ok()
            .map(|()| scratch.to_path_buf()),
        ..cairn_store::TableLimits::default()
    }
}

/// Runs one job now and says what it did; `scratch` holds temporary
/// files of large indexes.
pub fn run(
    storage: Arc<dyn Storage>,
    job: &JobConfig,
    holder: &str,
    scratch: &std::path::Path,
) -> Result<String, String> {
    match job.run {
        JobKind::Retention => {
            let (snaps, _) = cairn_store::list_snapshots(&*storage).map_err(|e| e.to_string())?;
            let pattern = job.group.as_deref().map(GroupPattern::new).transpose()?;
            let mut groups: Vec<String> = snaps
                .iter()
                .map(|s| s.envelope.group.clone())
                .filter(|g| pattern.as_ref().is_none_or(|p| p.matches(g)))
                .collect();
            groups.sort();
            groups.dedup();
            if groups.is_empty() {
                return Ok("no snapshots in the groups it applies to".into());
            }
            let tz = jiff::tz::TimeZone::system();
            let opts = ForgetOptions {
                policy: job.policy.clone(),
                groups,
                allow_empty: false,
                dry_run: false,
            };
            let r = forget(&*storage, &opts, cairn_store::now_ns(), &|ns| {
                cairn_maint::retention::Civil::in_zone(&tz, ns)
            })
            .map_err(|e| e.to_string())?;
            let kept: usize = r
                .plans
                .iter()
                .map(|p| p.decisions.iter().filter(|d| d.keep()).count())
                .sum();
            Ok(format!(
                "removed {} snapshots, kept {kept}",
                r.removed.len()
            ))
        }
        JobKind::Prune => {
            let opts = PruneOptions {
                grace: job.grace,
                holder: holder.to_string(),
                limits: limits(scratch),
                ..PruneOptions::default()
            };
            let r = prune(storage, &opts).map_err(|e| e.to_string())?;
            Ok(format!(
                "deleted {} packs ({} bytes), condemned {} ({} repacked)",
                r.deleted_packs, r.deleted_bytes, r.condemned_packs, r.repacked_packs
            ))
        }
        JobKind::Check | JobKind::Verify => {
            let opts = VerifyOptions {
                hash_packs: job.run == JobKind::Verify,
                subset: job.subset.as_deref().map(Subset::parse).transpose()?,
                limits: limits(scratch),
                ..VerifyOptions::default()
            };
            let r = verify(&*storage, &opts).map_err(|e| e.to_string())?;
            if r.ok() {
                Ok(format!(
                    "{} snapshots, {} packs, {} read in full: no damage",
                    r.snapshots, r.packs, r.packs_hashed
                ))
            } else {
                let affected: Vec<&String> = r.affected_snapshots.keys().collect();
                Err(format!(
                    "{} ({}); snapshots affected: {}",
                    cairn_server::status::count(r.errors.len(), "problem"),
                    r.errors
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; "),
                    if affected.is_empty() {
                        "none".to_string()
                    } else {
                        affected
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))
            }
        }
    }
}

/// Starts the scheduler: every second it runs, one at a time, the jobs
/// whose interval has passed since they last started.
pub fn spawn(server: Arc<Server>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let any = server
        .config
        .repositories
        .iter()
        .any(|r| !r.jobs.is_empty());
    if !any {
        return;
    }
    let holder = format!(
        "cairn server@{} pid {}",
        cairn_store::hostname(),
        std::process::id()
    );
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            for r in &server.config.repositories {
                for (i, job) in r.jobs.iter().enumerate() {
                    let name = job_name(&r.jobs, i);
                    let due = server.jobs.last(&r.name, &name).is_none_or(|o| {
                        cairn_store::now_ns() - o.started_ns >= job.every.as_nanos() as i64
                    });
                    if !due || *stop.borrow() {
                        continue;
                    }
                    let Some(storage) = server.repo(&r.name) else {
                        continue;
                    };
                    let started_ns = cairn_store::now_ns();
                    let t = std::time::Instant::now();
                    let (job2, holder2) = (job.clone(), holder.clone());
                    let scratch = server.config.state.join("scratch");
                    let result = tokio::task::spawn_blocking(move || {
                        run(storage, &job2, &holder2, &scratch)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("the job crashed: {e}")));
                    let (ok, message) = match result {
                        Ok(m) => (true, m),
                        Err(m) => (false, m),
                    };
                    server.log(&format!(
                        "job {name} on {}: {}{message}",
                        r.name,
                        if ok { "" } else { "FAILED: " }
                    ));
                    server.jobs.record(
                        &r.name,
                        &name,
                        Outcome {
                            started_ns,
                            took_ms: t.elapsed().as_millis() as u64,
                            ok,
                            message,
                            ..Outcome::default()
                        },
                    );
                }
            }
        }
    });
}
