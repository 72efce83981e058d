//! Jobs the box runs on its own schedule: retention, prune, the
//! structural check and verify. None needs a key. They run one at a
//! time (two cores are for serving backups), each when its interval has
//! passed since its last run; the last outcomes are kept in
//! `STATE/jobs.json` so a restart neither forgets them nor reruns every
//! job at once.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::policy::GroupPattern;
use cairn_maint::forget::{ForgetOptions, forget};
use cairn_maint::prune::{PruneOptions, prune};
use cairn_maint::verify::{Subset, VerifyOptions, verify};
use cairn_storage::Storage;
use serde::{Deserialize, Serialize};

use crate::config::{Config, JobConfig, JobKind};
use crate::listener::Server;

/// The last run of one job.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    /// When it started (ns since the epoch).
    pub started_ns: i64,
    /// How long it took (ms).
    pub took_ms: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it did, or why it failed.
    pub message: String,
    /// Runs so far that succeeded.
    #[serde(default)]
    pub ok_runs: u64,
    /// Runs so far that failed.
    #[serde(default)]
    pub failed_runs: u64,
}

/// A job's key: repository and position in its list, shown as
/// `retention` or `retention#2` when a repository has two of a kind.
pub fn job_name(cfg: &[JobConfig], i: usize) -> String {
    let kind = cfg[i].run;
    let nth = cfg[..i].iter().filter(|j| j.run == kind).count();
    if nth == 0 {
        kind.name().to_string()
    } else {
        format!("{}#{}", kind.name(), nth + 1)
    }
}

/// Outcomes of every job, by repository and job name.
pub struct JobBoard {
    file: std::path::PathBuf,
    last: Mutex<BTreeMap<(String, String), Outcome>>,
}

impl JobBoard {
    /// The board of `config`, with what the state file remembers.
    pub fn new(config: &Config) -> crate::Result<JobBoard> {
        let file = config.state.join("jobs.json");
        let last: Vec<(String, String, Outcome)> = crate::state::read_json(
            &file,
            "move it away to start the job history afresh (the next runs record new outcomes)",
        )?
        .unwrap_or_default();
        Ok(JobBoard {
            file,
            last: Mutex::new(last.into_iter().map(|(r, j, o)| ((r, j), o)).collect()),
        })
    }

    /// The last outcome of a job.
    pub fn last(&self, repo: &str, job: &str) -> Option<Outcome> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(repo.to_string(), job.to_string()))
            .cloned()
    }

    fn record(&self, repo: &str, job: &str, mut o: Outcome) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let key = (repo.to_string(), job.to_string());
        let prev = last.get(&key).cloned().unwrap_or_default();
        o.ok_runs = prev.ok_runs + u64::from(o.ok);
        o.failed_runs = prev.failed_runs + u64::from(!o.ok);
        last.insert(key, o);
        let list: Vec<(&String, &String, &Outcome)> =
            last.iter().map(|((r, j), o)| (r, j, o)).collect();
        crate::state::write_json(&self.file, &list);
    }

    /// The job lines of `/metrics`.
    pub fn metrics(&self, out: &mut String) {
        use crate::metrics::label;
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP cairn_job_last_success 1 when the job's last run succeeded.\n# TYPE cairn_job_last_success gauge"
        );
        for ((r, j), o) in last.iter() {
            let _ = writeln!(
                out,
                "cairn_job_last_success{{repo=\"{}\",job=\"{}\"}} {}",
                label(r),
                label(j),
                u8::from(o.ok)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cairn_job_last_run_timestamp_seconds When the job last started.\n# TYPE cairn_job_last_run_timestamp_seconds gauge"
        );
        for ((r, j), o) in last.iter() {
            let _ = writeln!(
                out,
                "cairn_job_last_run_timestamp_seconds{{repo=\"{}\",job=\"{}\"}} {:.3}",
                label(r),
                label(j),
                o.started_ns as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "# HELP cairn_job_runs_total Runs of the job, by outcome.\n# TYPE cairn_job_runs_total counter"
        );
        for ((r, j), o) in last.iter() {
            for (outcome, n) in [("ok", o.ok_runs), ("failed", o.failed_runs)] {
                let _ = writeln!(
                    out,
                    "cairn_job_runs_total{{repo=\"{}\",job=\"{}\",outcome=\"{outcome}\"}} {n}",
                    label(r),
                    label(j)
                );
            }
        }
    }
}

/// Index memory limits of a job: past them the index goes to a file in
/// `scratch` (on disk, where `/tmp` may be RAM).
fn limits(scratch: &std::path::Path) -> cairn_store::TableLimits {
    let _ = std::fs::create_dir_all(scratch);
    cairn_store::TableLimits {
        dir: Some(scratch.to_path_buf()),
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
                    crate::status::count(r.errors.len(), "problem"),
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
