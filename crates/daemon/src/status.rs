//! "What do my backups look like right now?": each job's health, state,
//! last success, last error, next run and last proven restore, from the
//! config and the state files alone, so `cairn status` answers whether
//! the daemon runs or not (and says when it does not).

use serde::Serialize;

use crate::config::{Config, Kind};
use crate::schedule::When;
use crate::state::{Outcome, StateDir};

/// Health in the Nagios convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// All is well.
    Green,
    /// Worth a look: never run yet, interrupted, or the daemon is off.
    Yellow,
    /// Failed, refused or overdue.
    Red,
    /// The state cannot be read.
    Unknown,
}

impl Health {
    /// The exit code monitoring plugins use: 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN.
    pub fn nagios(self) -> i32 {
        match self {
            Health::Green => 0,
            Health::Yellow => 1,
            Health::Red => 2,
            Health::Unknown => 3,
        }
    }
}

/// One job as status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// Its repository.
    pub repository: String,
    /// Green, yellow, red or unknown.
    pub health: Health,
    /// idle, running, failed, refused, overdue, interrupted, never run.
    pub state: String,
    /// When the last successful run started (ns).
    pub last_success_ns: Option<i64>,
    /// The last run's message when it did not succeed.
    pub last_error: Option<String>,
    /// The last run's message.
    pub last_message: String,
    /// When it next runs (ns), if the clock decides.
    pub next_run_ns: Option<i64>,
    /// What else it waits for.
    pub waits_for: Option<String>,
    /// When a drill last proved a restore (ns).
    pub last_proven_ns: Option<i64>,
    /// Progress of a running job.
    pub progress: Option<crate::state::Progress>,
    /// Snapshot the last run wrote.
    pub last_snapshot: Option<String>,
    /// Bytes the last successful run added.
    pub last_bytes_added: u64,
    /// How long the last run took (ms).
    pub last_duration_ms: u64,
    /// When the last run started (ns).
    pub last_run_ns: Option<i64>,
    /// Counters.
    pub ok_runs: u64,
    /// Counters.
    pub failed_runs: u64,
    /// Counters.
    pub refusals: u64,
    /// A git job's figures from its last run.
    pub git: Option<crate::state::GitStats>,
}

/// Everything status shows.
#[derive(Clone, Debug, Serialize)]
pub struct View {
    /// Whether a daemon holds the state directory's lock.
    pub daemon_running: bool,
    /// The worst health of all.
    pub health: Health,
    /// Each job.
    pub jobs: Vec<JobView>,
}

/// Builds the view at `now_ns`.
pub fn view(config: &Config, now_ns: i64) -> View {
    let state = StateDir::new(&config.state);
    let tz = jiff::tz::TimeZone::system();
    let daemon_running = state.daemon_running();
    let mut jobs = Vec::new();
    for job in &config.jobs {
        let st = match state.load(&job.name, now_ns) {
            Ok(s) => s,
            Err(e) => {
                jobs.push(JobView {
                    name: job.name.clone(),
                    kind: job.kind.name(),
                    repository: job.repository.clone(),
                    health: Health::Unknown,
                    state: "unknown".into(),
                    last_success_ns: None,
                    last_error: Some(e.to_string()),
                    last_message: String::new(),
                    next_run_ns: None,
                    waits_for: None,
                    last_proven_ns: None,
                    progress: None,
                    last_snapshot: None,
                    last_bytes_added: 0,
                    last_duration_ms: 0,
                    last_run_ns: None,
                    ok_runs: 0,
                    failed_runs: 0,
                    refusals: 0,
                    git: None,
                });
                continue;
            }
        };
        let running = st.running.is_some() && state.job_running(&job.name);
        let overdue_after = job
            .overdue_after
            .or_else(|| job.schedule.default_overdue(now_ns, &tz));
        let late = overdue_after.is_some_and(|after| {
            now_ns.saturating_sub(st.last_success_ns.unwrap_or(st.created_ns))
                > after.as_nanos() as i64
        });
        let (health, label) = if running {
            (
                if st.alert.is_some() {
                    Health::Red
                } else {
                    Health::Green
                },
                "running",
            )
        } else {
            match st.last_outcome {
                Some(Outcome::Failed) => (Health::Red, "failed"),
                Some(Outcome::Refused) => (Health::Red, "refused"),
                _ if late && st.last_start_ns.is_some()
                    || st.alert.as_deref() == Some("overdue") =>
                {
                    (Health::Red, "overdue")
                }
                Some(Outcome::Interrupted) => (Health::Yellow, "interrupted"),
                Some(Outcome::Ok) => (Health::Green, "idle"),
                None if late => (Health::Red, "overdue"),
                None => (Health::Yellow, "never run"),
            }
        };
        let mut next = job.schedule.next_due(&job.name, &st.past(), &tz);
        if let Some(n) = next
            && let Some(end) = job.schedule.blackout_end(n.max(now_ns), &tz)
        {
            next = Some(end);
        }
        let waits_for = match (&job.kind, job.schedule.when) {
            (Kind::Pull(p), When::Reachable) => Some(format!("{} to be reachable", p.ssh)),
            (_, When::Mounted) => Some(format!("the disk of repository {}", job.repository)),
            _ => None,
        };
        jobs.push(JobView {
            name: job.name.clone(),
            kind: job.kind.name(),
            repository: job.repository.clone(),
            health,
            state: label.to_string(),
            last_success_ns: st.last_success_ns,
            last_error: (st.last_outcome.is_some_and(|o| o != Outcome::Ok))
                .then(|| st.last_message.clone()),
            last_message: st.last_message.clone(),
            next_run_ns: next,
            waits_for,
            last_proven_ns: st.last_proven_ns,
            progress: st
                .running
                .as_ref()
                .filter(|_| running)
                .map(|r| r.progress.clone()),
            last_snapshot: st.last_snapshot.clone(),
            last_bytes_added: st.last_bytes_added,
            last_duration_ms: st.last_duration_ms,
            last_run_ns: st.last_start_ns,
            ok_runs: st.ok_runs,
            failed_runs: st.failed_runs,
            refusals: st.refusals,
            git: st.git.clone(),
        });
    }
    let mut health = jobs.iter().map(|j| j.health).max().unwrap_or(Health::Green);
    if !daemon_running && health == Health::Green && !config.jobs.is_empty() {
        health = Health::Yellow;
    }
    View {
        daemon_running,
        health,
        jobs,
    }
}

/// The view as text for a terminal.
pub fn render(v: &View) -> String {
    use cairn_maint::times::local;
    let mut s = String::new();
    if !v.daemon_running {
        s.push_str("the daemon is not running: nothing runs on schedule (start it with `cairn daemon` or its systemd unit)\n");
    }
    for j in &v.jobs {
        let mark = match j.health {
            Health::Green => "OK  ",
            Health::Yellow => "WARN",
            Health::Red => "CRIT",
            Health::Unknown => "UNKN",
        };
        s.push_str(&format!(
            "{mark} {:<16} {:<9} {:<12} → {}\n",
            j.name, j.kind, j.state, j.repository
        ));
        if let Some(p) = &j.progress {
            let total = if p.total_bytes > 0 {
                format!(" of {}", cairn_maint::units::human(p.total_bytes))
            } else {
                String::new()
            };
            s.push_str(&format!(
                "     progress: {} files, {}{total} read, {} added\n",
                p.files,
                cairn_maint::units::human(p.bytes),
                cairn_maint::units::human(p.added)
            ));
        }
        s.push_str(&format!(
            "     last success: {}\n",
            j.last_success_ns.map_or("never".to_string(), local)
        ));
        if let Some(e) = &j.last_error {
            s.push_str(&format!("     last error: {e}\n"));
        }
        match (j.next_run_ns, &j.waits_for) {
            (Some(n), Some(w)) => s.push_str(&format!("     next run: {} (and {w})\n", local(n))),
            (Some(n), None) => s.push_str(&format!("     next run: {}\n", local(n))),
            (None, Some(w)) => s.push_str(&format!("     next run: when {w}\n")),
            (None, None) => {}
        }
        if let Some(g) = &j.git {
            s.push_str(&format!(
                "     mirrors: {} repositories, {} fetched ({}), {} refs rewritten upstream (old tips kept), {} failed, {} rate-limit waits\n",
                g.repositories,
                g.fetched,
                cairn_maint::units::human(g.bytes_fetched),
                g.rewritten_refs,
                g.failed,
                g.limit_waits
            ));
            if !g.deleted.is_empty() {
                s.push_str(&format!(
                    "     deleted upstream, mirrors kept: {}\n",
                    g.deleted.join(", ")
                ));
            }
        }
        if matches!(j.kind, "drill") || j.last_proven_ns.is_some() {
            s.push_str(&format!(
                "     last proven restore: {}\n",
                j.last_proven_ns.map_or("never".to_string(), local)
            ));
        }
    }
    s
}
