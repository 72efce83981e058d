//! The record of the box's jobs (its maintenance, its pulls, any job of
//! the daemon that runs beside it): the last outcome of each, shown on
//! the status page and in `/metrics`, and kept in `STATE/jobs.json`. The
//! scheduler that runs them is `cairn-daemon`'s, which declares each job
//! here with its schedule and records each run.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::{Config, JobConfig};

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
    /// Jobs the scheduler runs, by repository, with their schedules.
    declared: Mutex<BTreeMap<(String, String), String>>,
    /// More job lines for `/metrics`, from the scheduler.
    extra: Mutex<Option<ExtraMetrics>>,
}

/// Writes the scheduler's own job lines into `/metrics`.
pub type ExtraMetrics = Box<dyn Fn(&mut String) + Send + Sync>;

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
            declared: Mutex::default(),
            extra: Mutex::default(),
        })
    }

    /// Adds the scheduler's job lines to `/metrics`.
    pub fn set_extra_metrics(&self, f: ExtraMetrics) {
        *self.extra.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Says that a job of `repo` runs, on `schedule` (words for people).
    pub fn declare(&self, repo: &str, job: &str, schedule: &str) {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((repo.to_string(), job.to_string()), schedule.to_string());
    }

    /// The jobs of `repo` the scheduler declared, with their schedules
    /// and last outcomes, by name.
    pub fn of(&self, repo: &str) -> Vec<(String, String, Option<Outcome>)> {
        let declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        declared
            .iter()
            .filter(|((r, _), _)| r == repo)
            .map(|((r, j), sched)| (j.clone(), sched.clone(), self.last(r, j)))
            .collect()
    }

    /// The last outcome of a job.
    pub fn last(&self, repo: &str, job: &str) -> Option<Outcome> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(repo.to_string(), job.to_string()))
            .cloned()
    }

    /// Records a finished run of a job.
    pub fn record(&self, repo: &str, job: &str, mut o: Outcome) {
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
        if let Some(f) = &*self.extra.lock().unwrap_or_else(|p| p.into_inner()) {
            f(out);
        }
    }
}
