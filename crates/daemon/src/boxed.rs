//! A box is a daemon that also serves: the HTTPS server of
//! `cairn-server` with this crate's one scheduler beside it, running the
//! box's maintenance and pull jobs and recording each run on the
//! server's job board, where its status page and `/metrics` show them.
//!
//! `cairn server --config server.toml` files keep working: their
//! `[[repository.job]]` entries become jobs of the scheduler here
//! ([`from_server`]), named `REPO.KIND` (`home.verify`, `home.verify#2`),
//! and the times of their last runs are taken over from the box's job
//! board, so an upgrade does not run every job at once.

use std::sync::Arc;
use std::time::Duration;

use cairn_server::config::Config as ServerConfig;
use cairn_server::jobs::job_name;
use cairn_server::listener::{Running, Server};

use crate::alerts::Alert;
use crate::announce::Announce;
use crate::config::{Config, Hooks, Job, Kind, Repository};
use crate::run::Report;
use crate::schedule::Schedule;
use crate::state::{JobState, Outcome, StateDir};

/// The daemon config equivalent to a server config's jobs.
pub fn from_server(c: &ServerConfig) -> Config {
    let mut jobs = Vec::new();
    let mut repositories = std::collections::BTreeMap::new();
    for r in &c.repositories {
        repositories.insert(
            r.name.clone(),
            Repository {
                name: r.name.clone(),
                location: r.path.display().to_string(),
                password_file: None,
                key_file: None,
                token_file: None,
                server_fingerprint: None,
                require_mount: None,
                repo_id: None,
                serve: true,
                stale_after: Some(r.stale_after),
            },
        );
        for (i, j) in r.jobs.iter().enumerate() {
            use cairn_server::config::JobKind;
            let kind = match j.run {
                JobKind::Retention => Kind::Retention {
                    group: j.group.clone(),
                    policy: j.policy.clone(),
                },
                JobKind::Prune => Kind::Prune { grace: j.grace },
                JobKind::Check => Kind::Check,
                JobKind::Verify => Kind::Verify {
                    subset: j.subset.clone(),
                },
            };
            jobs.push(Job {
                name: format!("{}.{}", r.name, job_name(&r.jobs, i)),
                kind,
                repository: r.name.clone(),
                schedule: Schedule {
                    every: Some(j.every),
                    probe_every: Duration::from_secs(300),
                    ..Schedule::default()
                },
                overdue_after: None,
                hooks: Hooks::default(),
                keep: None,
                line: 0,
            });
        }
    }
    Config {
        file: std::path::PathBuf::from("(server config)"),
        state: c.state.clone(),
        listen: None,
        public_status: c.limits.public_status,
        max_concurrent: 1,
        repositories,
        jobs,
        notify: Vec::new(),
        server: None,
    }
}

/// A job's name on the board: without its repository's prefix.
fn board_name(job: &Job) -> &str {
    job.name
        .strip_prefix(&format!("{}.", job.repository))
        .unwrap_or(&job.name)
}

/// Records runs on the server's board and in its log, and passes them on.
struct BoxAnnounce {
    server: Arc<Server>,
    inner: Option<crate::announce::Notifying>,
}

impl Announce for BoxAnnounce {
    fn started(&self, job: &Job) {
        if let Some(n) = &self.inner {
            n.started(job);
        }
    }
    fn finished(&self, job: &Job, report: &Report, alert: Option<Alert>) {
        if report.outcome != Outcome::Interrupted {
            self.server.jobs.record(
                &job.repository,
                board_name(job),
                cairn_server::jobs::Outcome {
                    started_ns: report.started_ns,
                    took_ms: report.took_ms,
                    ok: report.outcome == Outcome::Ok,
                    message: report.message.clone(),
                    ..Default::default()
                },
            );
        }
        self.server.log(&format!(
            "job {} on {}: {}{}",
            board_name(job),
            job.repository,
            match report.outcome {
                Outcome::Ok => "",
                Outcome::Refused => "REFUSED: ",
                Outcome::Interrupted => "interrupted: ",
                Outcome::Failed => "FAILED: ",
            },
            report.message
        ));
        if let Some(n) = &self.inner {
            n.finished(job, report, alert);
        }
    }
    fn alert(&self, job: &Job, alert: Alert, message: &str) {
        self.server.log(&format!(
            "job {} on {}: alert {}: {message}",
            board_name(job),
            job.repository,
            alert.name()
        ));
        if let Some(n) = &self.inner {
            n.alert(job, alert, message);
        }
    }
    fn log(&self, line: &str) {
        self.server.log(line);
    }
}

/// Takes over the last run times the box's job board remembers for jobs
/// that have no state of their own yet.
fn seed_from_board(config: &Config, server: &Server) {
    let state = StateDir::new(&config.state);
    let now = cairn_store::now_ns();
    for job in &config.jobs {
        let Some(o) = server.jobs.last(&job.repository, board_name(job)) else {
            continue;
        };
        let Ok(Some(_lock)) = state.lock_job(&job.name) else {
            continue;
        };
        let Ok(st) = state.load(&job.name, now) else {
            continue;
        };
        if st.last_start_ns.is_some() || st.ok_runs + st.failed_runs > 0 {
            continue;
        }
        let end = o.started_ns + (o.took_ms as i64) * 1_000_000;
        let seeded = JobState {
            created_ns: o.started_ns,
            last_start_ns: Some(o.started_ns),
            last_end_ns: Some(end),
            last_outcome: Some(if o.ok { Outcome::Ok } else { Outcome::Failed }),
            last_message: o.message.clone(),
            last_success_ns: o.ok.then_some(o.started_ns),
            failures: u32::from(!o.ok),
            ..st
        };
        let _ = state.save(&job.name, &seeded);
    }
}

/// Starts a box for a server config: the server, and the scheduler with
/// the config's jobs beside it.
pub fn start(server: ServerConfig) -> cairn_server::Result<Running> {
    let daemon = from_server(&server);
    start_with(server, daemon, None)
}

/// Starts the server of `server` with the scheduler of `daemon` beside
/// it; `notify` gets the runs and alerts too.
pub fn start_with(
    server: ServerConfig,
    daemon: Config,
    notify: Option<crate::announce::Notifying>,
) -> cairn_server::Result<Running> {
    cairn_server::listener::start_with(server, move |server, mut stop| {
        for job in &daemon.jobs {
            server
                .jobs
                .declare(&job.repository, board_name(job), &job.schedule.describe());
        }
        seed_from_board(&daemon, &server);
        let shown = daemon.clone();
        server.jobs.set_extra_metrics(Box::new(move |out| {
            crate::web::metrics(&crate::status::view(&shown, cairn_store::now_ns()), out)
        }));
        let signals = crate::scheduler::Signals::default();
        let flag = signals.stop.clone();
        tokio::spawn(async move {
            let _ = stop.changed().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let announce = Arc::new(BoxAnnounce {
            server: server.clone(),
            inner: notify,
        });
        let _ = std::thread::Builder::new()
            .name("cairn-scheduler".into())
            .spawn(move || {
                // A box restarted in the same process may still hold the
                // lock for a moment.
                let t = std::time::Instant::now();
                loop {
                    let r = crate::scheduler::run(
                        daemon.clone(),
                        &|| Err("the box reloads by restarting".to_string()),
                        &signals,
                        announce.clone(),
                    );
                    match r {
                        Err(e)
                            if e.contains("another cairn daemon")
                                && t.elapsed() < Duration::from_secs(10)
                                && !signals.stop.load(std::sync::atomic::Ordering::SeqCst) =>
                        {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Err(e) => {
                            announce.log(&format!("the scheduler stopped: {e}"));
                            return;
                        }
                        Ok(()) => return,
                    }
                }
            });
    })
}
