//! The scheduler: every second it runs, one at a time, the jobs whose
//! interval has passed since they last started (two cores are for serving
//! backups). None needs a key.

use std::sync::Arc;
use std::time::Duration;

use cairn_server::config::{JobConfig, JobKind};
use cairn_server::jobs::{Outcome, job_name};
use cairn_server::listener::Server;
use cairn_storage::Storage;

use crate::config::Kind;

/// Runs one of the box's jobs now and says what it did.
pub fn run(
    storage: Arc<dyn Storage>,
    job: &JobConfig,
    holder: &str,
    scratch: &std::path::Path,
) -> Result<String, String> {
    let kind = match job.run {
        JobKind::Retention => Kind::Retention {
            group: job.group.clone(),
            policy: job.policy.clone(),
        },
        JobKind::Prune => Kind::Prune { grace: job.grace },
        JobKind::Check => Kind::Check,
        JobKind::Verify => Kind::Verify {
            subset: job.subset.clone(),
        },
    };
    crate::maint::run(storage, &kind, holder, scratch)
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
