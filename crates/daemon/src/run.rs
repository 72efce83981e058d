//! One run of one job, the same whether the daemon starts it or a user
//! does with `cairn run`: hooks, guards, the work itself, and the record
//! of how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_engine::archiver::{BackupOptions, Progress, backup};

use crate::config::{Backup, CommandJob, Config, Job, Kind};
use crate::state::{JobState, Outcome, Running, StateDir};

/// How a run ended, in detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Its outcome.
    pub outcome: Outcome,
    /// What it did, or why not.
    pub message: String,
    /// Snapshot written, if any.
    pub snapshot: Option<String>,
    /// Bytes added to the repository.
    pub bytes_added: u64,
    /// When the run started (ns; set once it is recorded).
    pub started_ns: i64,
    /// How long it took (ms; set once it is recorded).
    pub took_ms: u64,
    /// A drill proved a restore: `record` dates the last proven restore.
    pub proven: bool,
    /// What happened upstream that a person should hear of (a git job's
    /// rewritten refs and deleted repositories), alerted once.
    pub news: Vec<String>,
    /// A git job's figures, for status and metrics.
    pub git: Option<Box<crate::state::GitStats>>,
}

impl Default for Report {
    fn default() -> Report {
        Report {
            outcome: Outcome::Failed,
            message: String::new(),
            snapshot: None,
            bytes_added: 0,
            started_ns: 0,
            took_ms: 0,
            proven: false,
            news: Vec::new(),
            git: None,
        }
    }
}

impl Report {
    fn failed(message: String) -> Report {
        Report {
            outcome: Outcome::Failed,
            message,
            ..Report::default()
        }
    }
}

/// How long a remote repository may be unreachable within one run.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Who runs maintenance, for leases and garbage records.
pub fn holder() -> String {
    format!(
        "cairn daemon@{} pid {}",
        cairn_store::hostname(),
        std::process::id()
    )
}

/// What one run is given.
pub struct Run<'a> {
    /// The whole config.
    pub config: &'a Config,
    /// The job.
    pub job: &'a Job,
    /// Where state lives.
    pub state: &'a StateDir,
    /// Live counters, for status and progress bars.
    pub progress: Arc<Progress>,
    /// Set to stop the run cleanly.
    pub cancel: Arc<AtomicBool>,
}

impl Run<'_> {
    /// Runs the job: `before` hooks, the work, `on_failure` and `after`
    /// hooks.
    pub fn execute(&self) -> Report {
        let job = self.job;
        let env = vec![
            ("CAIRN_JOB", job.name.clone()),
            ("CAIRN_REPOSITORY", job.repository.clone()),
        ];
        let mut report = match crate::hooks::run("before", &job.hooks.before, &env) {
            Err(e) => Report::failed(format!("not run: {e}")),
            Ok(()) => self.work(),
        };
        let mut env = env;
        env.push((
            "CAIRN_OUTCOME",
            format!("{:?}", report.outcome).to_lowercase(),
        ));
        env.push(("CAIRN_MESSAGE", report.message.clone()));
        if let Some(s) = &report.snapshot {
            env.push(("CAIRN_SNAPSHOT", s.clone()));
        }
        if matches!(report.outcome, Outcome::Failed | Outcome::Refused)
            && let Err(e) = crate::hooks::run("on_failure", &job.hooks.on_failure, &env)
        {
            report.message.push_str(&format!("; {e}"));
        }
        if let Err(e) = crate::hooks::run("after", &job.hooks.after, &env) {
            report.message.push_str(&format!("; {e}"));
            if report.outcome == Outcome::Ok {
                report.outcome = Outcome::Failed;
            }
        }
        report
    }

    fn work(&self) -> Report {
        let job = self.job;
        let Some(repo_cfg) = self.config.repositories.get(&job.repository) else {
            return Report::failed(format!("no repository {}", job.repository));
        };
        match &job.kind {
            Kind::Backup(b) => self.backup(repo_cfg, b),
            Kind::Retention { .. } | Kind::Prune { .. } | Kind::Check | Kind::Verify { .. } => {
                let storage = match crate::open::storage(repo_cfg, RETRY_FOR) {
                    Ok(s) => s,
                    Err(e) => return refused_or_failed(e),
                };
                match crate::maint::run(storage, &job.kind, &holder(), &self.state.scratch()) {
                    Ok(m) => Report {
                        outcome: Outcome::Ok,
                        message: m,
                        snapshot: None,
                        bytes_added: 0,
                        ..Report::default()
                    },
                    Err(m) => Report::failed(m),
                }
            }
            Kind::Copy { to, group } => self.copy(repo_cfg, to, group.clone()),
            Kind::Git(g) => self.git(repo_cfg, g),
            Kind::Command(c) => self.command(repo_cfg, c),
            Kind::Pull(p) => self.pull(repo_cfg, p),
            Kind::Drill {
                group,
                files,
                bytes,
            } => self.drill(
                repo_cfg,
                group.clone(),
                crate::drill::Limits {
                    files: *files,
                    bytes: *bytes,
                },
            ),
        }
    }

    /// Copies the job's repository to `to`: records as they are to a
    /// replica (no key needed), else re-encrypted, reading with this
    /// repository's key and writing with `to`'s (a put-only one will do).
    fn copy(
        &self,
        repo_cfg: &crate::config::Repository,
        to: &str,
        group: Option<String>,
    ) -> Report {
        let Some(to_cfg) = self.config.repositories.get(to) else {
            return Report::failed(format!("no repository {to}"));
        };
        let (from, dest) = match (
            crate::open::storage(repo_cfg, RETRY_FOR),
            crate::open::storage(to_cfg, RETRY_FOR),
        ) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return refused_or_failed(e),
        };
        let replica = match cairn_maint::copy::is_replica(&*from, &*dest) {
            Ok(r) => r,
            Err(e) => return Report::failed(e.to_string()),
        };
        let scratch = self.state.scratch();
        let done = if replica {
            let opts = cairn_maint::copy::CopyOptions {
                group,
                limits: crate::open::limits(&scratch),
                ..Default::default()
            };
            cairn_maint::copy::copy_sealed(&from, &dest, &opts, &mut |_| {})
                .map(|r| {
                    (
                        r.copied.len(),
                        r.bytes,
                        format!("{} blobs already there", r.blobs_present),
                    )
                })
                .map_err(|e| e.to_string())
        } else {
            let src = match crate::open::repo(repo_cfg, from, &scratch) {
                Ok(r) => r,
                Err(e) => return Report::failed(e),
            };
            let mut dst = match crate::open::repo(to_cfg, dest, &scratch) {
                Ok(r) => r,
                Err(e) => return Report::failed(e),
            };
            let opts = cairn_engine::copier::ReencryptOptions {
                group,
                ..Default::default()
            };
            cairn_engine::copier::copy_reencrypt(&src, &mut dst, &opts, &mut |_| {})
                .map(|r| {
                    (
                        r.copied.len(),
                        r.bytes,
                        format!("re-encrypted, {} blobs already there", r.blobs_present),
                    )
                })
                .map_err(|e| e.to_string())
        };
        match done {
            Ok((n, bytes, more)) => Report {
                outcome: Outcome::Ok,
                message: format!(
                    "copied {n} snapshots to {to}, {} sent; {more}",
                    cairn_maint::units::human(bytes)
                ),
                bytes_added: bytes,
                ..Report::default()
            },
            Err(e) => Report::failed(e),
        }
    }

    /// Restores a sample of each group's newest snapshot and compares it
    /// with the source; see [`crate::drill`].
    fn drill(
        &self,
        repo_cfg: &crate::config::Repository,
        group: Option<String>,
        limits: crate::drill::Limits,
    ) -> Report {
        use crate::drill::{Stopped, needs_read_key};
        let storage = match crate::open::storage(repo_cfg, RETRY_FOR) {
            Ok(s) => s,
            Err(e) => return refused_or_failed(e),
        };
        let repo = match crate::open::repo(repo_cfg, storage, &self.state.scratch()) {
            Ok(r) => r,
            // No key configured, none left by `cairn init`: a keyless box.
            Err(e) if e.contains("needs a key") => return Report::failed(needs_read_key(&e)),
            Err(e) => return Report::failed(e),
        };
        if repo.require_owner("restore").is_err() {
            return Report::failed(needs_read_key(&format!(
                "the key of repository {} is {}, which adds backups but cannot read them",
                repo_cfg.name,
                repo.role().name()
            )));
        }
        let opts = crate::drill::Options {
            group,
            limits,
            dir: self
                .state
                .scratch()
                .join(format!("drill-{}", self.job.name)),
            seed: crate::drill::seed(),
        };
        match crate::drill::drill(&repo, &opts, &self.progress, &self.cancel) {
            Ok(d) => Report {
                outcome: if d.proven() {
                    Outcome::Ok
                } else {
                    Outcome::Failed
                },
                message: d.message(),
                proven: d.proven(),
                ..Report::default()
            },
            Err(Stopped::Interrupted) => Report {
                outcome: Outcome::Interrupted,
                message: "stopped before the drill finished; the next run draws a new sample"
                    .into(),
                ..Report::default()
            },
            Err(e) => Report::failed(e.to_string()),
        }
    }

    fn backup(&self, repo_cfg: &crate::config::Repository, b: &Backup) -> Report {
        let job = self.job;
        if let Err(e) = crate::open::check_mount(repo_cfg) {
            return refused(e);
        }
        if let Err(e) = crate::guards::check_sources(b) {
            return refused(e);
        }
        let mut repo = match self.open_for_writing(repo_cfg) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let hostname = cairn_store::hostname();
        let group = match &b.group {
            Some(g) => g.clone(),
            None => match cairn_engine::archiver::default_group(&hostname, &b.paths) {
                Ok(g) => g,
                Err(e) => return Report::failed(e.to_string()),
            },
        };
        let approved = self.state.approved(&job.name);
        let opts = BackupOptions {
            paths: b.paths.clone(),
            excludes: b.exclude.clone(),
            exclude_files: b.exclude_file.clone(),
            exclude_caches: b.exclude_caches,
            one_file_system: b.one_file_system,
            tags: b.tags.clone(),
            group: Some(group.clone()),
            cache_dir: Some(crate::open::cache_dir(&repo)),
            command: vec![format!("cairn daemon: job {}", job.name)],
            hostname,
            compression: b.compression.unwrap_or(cairn_repo::DEFAULT_LEVEL),
            state_dir: Some(crate::open::machine_state(&repo)),
            guard: b
                .max_vanished
                .map(|limit| crate::guards::shrink_guard(&job.name, limit, approved)),
            ..BackupOptions::default()
        };
        let s = match backup(&mut repo, &opts, &self.progress, &self.cancel) {
            Ok(s) => s,
            Err(cairn_engine::Error::Refused(m)) => return refused(m),
            Err(cairn_engine::Error::Interrupted) => {
                return Report {
                    outcome: Outcome::Interrupted,
                    message: "stopped before the snapshot was committed; the next run resumes"
                        .into(),
                    snapshot: None,
                    bytes_added: 0,
                    ..Report::default()
                };
            }
            Err(e) => return Report::failed(e.to_string()),
        };
        if approved {
            self.state.consume_approval(&job.name);
        }
        let id = s.snapshot.clone().unwrap_or_default();
        let mut message = format!(
            "snapshot {} of {}: {} files, {} read, {} added",
            &id[..id.len().min(8)],
            group,
            s.new_files + s.changed_files + s.unchanged_files,
            cairn_maint::units::human(s.bytes_read),
            cairn_maint::units::human(s.bytes_added)
        );
        if !s.warnings.is_empty() {
            message.push_str(&format!(
                "; {} warnings, first: {}: {}",
                s.warnings.len(),
                s.warnings[0].path,
                s.warnings[0].message
            ));
        }
        let outcome = self.keep(&repo, &group, &mut message);
        Report {
            outcome,
            message,
            snapshot: s.snapshot,
            bytes_added: s.bytes_added,
            ..Report::default()
        }
    }

    /// Brings the job's forge mirrors up to date, then snapshots them.
    /// A listing that fails touches no mirror and writes no snapshot; a
    /// fetch that fails leaves its mirror as it was, and the snapshot
    /// still records the others.
    fn git(&self, repo_cfg: &crate::config::Repository, g: &crate::git::GitJob) -> Report {
        let root = crate::git::mirrors_dir(self.state.root(), &self.job.name);
        let sum = match crate::git::mirror(g, &root, &crate::git::Pace::from_env(), &self.cancel) {
            Ok(s) => s,
            Err(crate::git::GitError::Interrupted) => {
                return Report {
                    outcome: Outcome::Interrupted,
                    message: "stopped during mirroring; the mirrors are consistent and the next run goes on".into(),
                    ..Report::default()
                };
            }
            Err(e) => return Report::failed(e.to_string()),
        };
        let stats = crate::state::GitStats {
            repositories: sum.mirrored as u64,
            fetched: sum.fetched as u64,
            bytes_fetched: sum.bytes,
            rewritten_refs: sum.preserved.len() as u64,
            deleted: sum.deleted.clone(),
            failed: sum.failed.len() as u64,
            limit_waits: sum.limit_waits,
        };
        let mut report = self.snapshot_dir(repo_cfg, &root, &g.group());
        report.message = format!("{}; {}", sum.message(), report.message);
        if !sum.failed.is_empty() && report.outcome == Outcome::Ok {
            report.outcome = Outcome::Failed;
        }
        report.news = sum.news();
        report.git = Some(Box::new(stats));
        report
    }

    /// A snapshot of one directory in `group`, with the job's retention.
    fn snapshot_dir(
        &self,
        repo_cfg: &crate::config::Repository,
        dir: &std::path::Path,
        group: &str,
    ) -> Report {
        let mut repo = match self.open_for_writing(repo_cfg) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let opts = crate::git::snapshot_options(
            &repo,
            dir,
            group,
            format!("cairn daemon: job {}", self.job.name),
        );
        let s = match backup(&mut repo, &opts, &self.progress, &self.cancel) {
            Ok(s) => s,
            Err(cairn_engine::Error::Interrupted) => {
                return Report {
                    outcome: Outcome::Interrupted,
                    message: "stopped before the snapshot was committed; the next run resumes"
                        .into(),
                    ..Report::default()
                };
            }
            Err(e) => return Report::failed(format!("snapshot of the mirrors: {e}")),
        };
        let id = s.snapshot.clone().unwrap_or_default();
        let mut message = format!(
            "snapshot {} of {group}: {} files, {} added",
            &id[..id.len().min(8)],
            s.new_files + s.changed_files + s.unchanged_files,
            cairn_maint::units::human(s.bytes_added)
        );
        let outcome = self.keep(&repo, group, &mut message);
        Report {
            outcome,
            message,
            snapshot: s.snapshot,
            bytes_added: s.bytes_added,
            ..Report::default()
        }
    }

    /// Opens the repository of a job that writes snapshots.
    fn open_for_writing(
        &self,
        repo_cfg: &crate::config::Repository,
    ) -> Result<cairn_repo::Repo, Report> {
        let storage = crate::open::storage(repo_cfg, RETRY_FOR).map_err(refused_or_failed)?;
        crate::open::repo(repo_cfg, storage, &self.state.scratch()).map_err(Report::failed)
    }

    /// Stores a command's standard output as one file of a snapshot,
    /// streamed; a command that fails leaves no snapshot.
    fn command(&self, repo_cfg: &crate::config::Repository, c: &CommandJob) -> Report {
        use std::process::{Command, Stdio};
        let mut repo = match self.open_for_writing(repo_cfg) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let hostname = cairn_store::hostname();
        let group = c
            .group
            .clone()
            .unwrap_or_else(|| format!("{hostname}:stdin:{}", c.filename));
        let shown = c.command.join(" ");
        let mut child = match Command::new(&c.command[0])
            .args(&c.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(ch) => ch,
            Err(e) => return Report::failed(format!("command `{shown}` could not start: {e}")),
        };
        let (Some(mut out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Report::failed(format!("command `{shown}`: no pipe to read"));
        };
        let stderr = std::thread::spawn(move || crate::tail::read(err, 2048));
        let opts = BackupOptions {
            tags: c.tags.clone(),
            group: Some(group.clone()),
            command: vec![format!("cairn daemon: job {}", self.job.name)],
            hostname,
            state_dir: Some(crate::open::machine_state(&repo)),
            ..BackupOptions::default()
        };
        let mut status = None;
        let res = cairn_engine::archiver::backup_stream(
            &mut repo,
            &opts,
            &mut out,
            &c.filename,
            &mut || {
                let st = child
                    .wait()
                    .map_err(|e| format!("command `{shown}`: {e}"))?;
                status = Some(st);
                if st.success() {
                    Ok(())
                } else {
                    Err(format!("command `{shown}` failed ({st})"))
                }
            },
            &self.progress,
            &self.cancel,
        );
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let errtext = stderr.join().unwrap_or_default();
        let s = match res {
            Ok(s) => s,
            Err(cairn_engine::Error::Stream {
                why: cairn_engine::StreamFailure::Interrupted,
                ..
            })
            | Err(cairn_engine::Error::Interrupted) => {
                return Report {
                    outcome: Outcome::Interrupted,
                    message: "stopped before the snapshot was committed".into(),
                    snapshot: None,
                    bytes_added: 0,
                    ..Report::default()
                };
            }
            Err(e) => {
                let mut m = e.to_string();
                if !errtext.is_empty() {
                    m.push_str(&format!("; it printed: {errtext}"));
                }
                return Report::failed(m);
            }
        };
        let id = s.snapshot.clone().unwrap_or_default();
        let mut message = format!(
            "snapshot {} of {group}: {} of output, {} added",
            &id[..id.len().min(8)],
            cairn_maint::units::human(s.bytes_read),
            cairn_maint::units::human(s.bytes_added)
        );
        let outcome = self.keep(&repo, &group, &mut message);
        Report {
            outcome,
            message,
            snapshot: s.snapshot,
            bytes_added: s.bytes_added,
            ..Report::default()
        }
    }

    /// Applies the job's `keep`, if any, after a snapshot: what it did goes
    /// into `message`, and a failure fails the run.
    fn keep(&self, repo: &cairn_repo::Repo, group: &str, message: &mut String) -> Outcome {
        let Some(policy) = &self.job.keep else {
            return Outcome::Ok;
        };
        match self.retention(repo, group, policy) {
            Ok(m) => {
                message.push_str(&format!("; {m}"));
                Outcome::Ok
            }
            Err(e) => {
                message.push_str(&format!("; retention failed: {e}"));
                Outcome::Failed
            }
        }
    }

    /// The job's `keep` on its own group, where the key may forget.
    fn retention(
        &self,
        repo: &cairn_repo::Repo,
        group: &str,
        policy: &cairn_maint::retention::Policy,
    ) -> Result<String, String> {
        if repo.keys().role == cairn_format::keyfile::Role::PutOnly {
            return Ok("retention left to the box (this key is put-only)".into());
        }
        retention(&**repo.storage(), group, policy)
    }

    /// Backs up another machine over SSH; the box holds no key for it.
    fn pull(&self, repo_cfg: &crate::config::Repository, p: &crate::config::Pull) -> Report {
        let storage = match crate::open::storage(repo_cfg, RETRY_FOR) {
            Ok(s) => s,
            Err(e) => return refused_or_failed(e),
        };
        let approved = self.state.approved(&self.job.name);
        let req = crate::pull::request(&self.job.name, p, approved);
        let log = Arc::new(|l: &str| crate::announce::log_line(l));
        let r = match crate::pull::pull(storage.clone(), p, &req, log, Default::default()) {
            Ok(r) => r,
            Err(e) => return Report::failed(e),
        };
        // The machine's word is checked: its snapshot must have arrived,
        // in the job's group.
        if r.outcome == "ok" {
            let arrived = r.snapshot.as_deref().is_some_and(|id| {
                cairn_store::list_snapshots(&*storage).is_ok_and(|(snaps, _)| {
                    snaps
                        .iter()
                        .any(|s| s.id.to_hex() == id && s.envelope.group == req.group)
                })
            });
            if !arrived {
                return Report::failed(format!(
                    "{} reported snapshot {} of {}, but no such snapshot arrived",
                    p.ssh,
                    r.snapshot.as_deref().unwrap_or("(none)"),
                    req.group
                ));
            }
        }
        let outcome = match r.outcome.as_str() {
            "ok" => Outcome::Ok,
            "refused" => Outcome::Refused,
            "interrupted" => Outcome::Interrupted,
            _ => Outcome::Failed,
        };
        let mut report = Report {
            outcome,
            message: r.message,
            snapshot: r.snapshot,
            bytes_added: r.bytes_added,
            ..Report::default()
        };
        if outcome == Outcome::Ok {
            if approved {
                self.state.consume_approval(&self.job.name);
            }
            if let Some(policy) = &self.job.keep {
                match retention(&*storage, &req.group, policy) {
                    Ok(m) => report.message.push_str(&format!("; {m}")),
                    Err(e) => {
                        report.message.push_str(&format!("; retention failed: {e}"));
                        report.outcome = Outcome::Failed;
                    }
                }
            }
        }
        report
    }
}

/// Applies `policy` to `group`; needs no key.
fn retention(
    storage: &dyn cairn_storage::Storage,
    group: &str,
    policy: &cairn_maint::retention::Policy,
) -> Result<String, String> {
    let tz = jiff::tz::TimeZone::system();
    let opts = cairn_maint::forget::ForgetOptions {
        policy: policy.clone(),
        groups: vec![group.to_string()],
        allow_empty: false,
        dry_run: false,
    };
    let r = cairn_maint::forget::forget(storage, &opts, cairn_store::now_ns(), &|ns| {
        cairn_maint::retention::Civil::in_zone(&tz, ns)
    })
    .map_err(|e| e.to_string())?;
    Ok(format!("retention removed {}", r.removed.len()))
}

fn refused(message: String) -> Report {
    Report {
        outcome: Outcome::Refused,
        message,
        snapshot: None,
        bytes_added: 0,
        ..Report::default()
    }
}

/// A repository that is not mounted is a refusal; anything else a failure.
fn refused_or_failed(message: String) -> Report {
    if message.contains("nothing was written") {
        refused(message)
    } else {
        Report::failed(message)
    }
}

/// Why a run could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum NotStarted {
    /// Another run of the job holds its lock.
    Busy,
    /// The state could not be read or written.
    State(String),
}

/// A finished, recorded run.
#[derive(Debug)]
pub struct Recorded {
    /// How it ended.
    pub report: Report,
    /// The job's state after it.
    pub state: JobState,
    /// The alert it calls for, if any.
    pub alert: Option<crate::alerts::Alert>,
}

/// Runs `job` under its lock and records the outcome and the alert it
/// calls for in its state; `announce` hears of the start and the end.
pub fn run_recorded(
    config: &Config,
    job: &Job,
    state: &StateDir,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    announce: &dyn crate::announce::Announce,
) -> Result<Recorded, NotStarted> {
    let lock = state
        .lock_job(&job.name)
        .map_err(|e| NotStarted::State(e.to_string()))?
        .ok_or(NotStarted::Busy)?;
    let now = cairn_store::now_ns();
    let mut st = state
        .load(&job.name, now)
        .map_err(|e| NotStarted::State(e.to_string()))?;
    st.running = Some(Running {
        pid: std::process::id(),
        started_ns: now,
        progress: Default::default(),
    });
    state
        .save(&job.name, &st)
        .map_err(|e| NotStarted::State(e.to_string()))?;
    let started = std::time::Instant::now();
    announce.started(job);
    let report = {
        let done = Arc::new(AtomicBool::new(false));
        let ticker = progress_writer(state, &job.name, &st, progress.clone(), done.clone());
        let r = Run {
            config,
            job,
            state,
            progress,
            cancel,
        }
        .execute();
        done.store(true, Ordering::Relaxed);
        let _ = ticker.join();
        r
    };
    let mut report = report;
    report.started_ns = now;
    report.took_ms = started.elapsed().as_millis() as u64;
    let mut st = state.load(&job.name, now).unwrap_or(st);
    record(&mut st, &report, now, started.elapsed());
    let alert = crate::alerts::after_run(&mut st, report.outcome);
    let saved = state.save(&job.name, &st);
    drop(lock);
    announce.finished(job, &report, alert);
    saved.map_err(|e| NotStarted::State(e.to_string()))?;
    Ok(Recorded {
        report,
        state: st,
        alert,
    })
}

/// Folds a finished run into the state.
pub fn record(st: &mut JobState, r: &Report, started_ns: i64, took: Duration) {
    st.running = None;
    st.last_outcome = Some(r.outcome);
    st.last_message = r.message.clone();
    st.last_duration_ms = took.as_millis() as u64;
    if r.outcome == Outcome::Interrupted {
        // Not an attempt: the schedule still finds the job due, so the
        // next start resumes it.
        return;
    }
    st.last_start_ns = Some(started_ns);
    st.last_end_ns = Some(cairn_store::now_ns());
    match r.outcome {
        Outcome::Ok => {
            st.last_success_ns = Some(started_ns);
            st.failures = 0;
            st.ok_runs += 1;
            st.last_bytes_added = r.bytes_added;
            if r.snapshot.is_some() {
                st.last_snapshot = r.snapshot.clone();
            }
            if r.proven {
                st.last_proven_ns = st.last_end_ns;
            }
            if r.git.is_some() {
                st.git = r.git.as_deref().cloned();
            }
        }
        Outcome::Refused => {
            st.failures += 1;
            st.refusals += 1;
        }
        _ => {
            st.failures += 1;
            st.failed_runs += 1;
        }
    }
}

/// Writes the run's progress into its state every two seconds, so
/// `cairn status` shows how far a running job got.
fn progress_writer(
    state: &StateDir,
    job: &str,
    st: &JobState,
    progress: Arc<Progress>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (state, job, mut st) = (state.clone(), job.to_string(), st.clone());
    std::thread::spawn(move || {
        let mut waited = Duration::ZERO;
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            waited += Duration::from_millis(100);
            if waited < Duration::from_secs(2) {
                continue;
            }
            waited = Duration::ZERO;
            if let Some(r) = &mut st.running {
                r.progress = crate::state::Progress {
                    files: progress.files.load(Ordering::Relaxed),
                    bytes: progress.bytes.load(Ordering::Relaxed),
                    total_files: progress.total_files.load(Ordering::Relaxed),
                    total_bytes: progress.total_bytes.load(Ordering::Relaxed),
                    added: progress.added.load(Ordering::Relaxed),
                };
            }
            let _ = state.save(&job, &st);
        }
    })
}
