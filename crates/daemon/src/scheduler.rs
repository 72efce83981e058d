//! The one scheduler: every second it looks at each job's schedule and
//! state and starts the runs that are due, at most `max_concurrent` at a
//! time and never two of one job.
//!
//! It keeps no list of missed slots: a job is due when the time computed
//! from its last recorded attempt has passed (see [`crate::schedule`]),
//! so a machine that slept through three due times runs the job once on
//! waking. A run interrupted by a stop or a crash is not an attempt: the
//! job is due again at the next start, and the backup resumes from the
//! packs already uploaded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_engine::archiver::Progress;

use crate::announce::Announce;
use crate::config::{Config, Job, Kind};
use crate::run::{NotStarted, Recorded};
use crate::schedule::When;
use crate::state::{Outcome, StateDir};

/// Signals the daemon reacts to, as flags its loop checks.
#[derive(Clone, Default)]
pub struct Signals {
    /// Stop: cancel running jobs (they record an interruption) and exit.
    pub stop: Arc<AtomicBool>,
    /// Read the config file again.
    pub reload: Arc<AtomicBool>,
}

struct Active {
    handle: JoinHandle<Result<Recorded, NotStarted>>,
    cancel: Arc<AtomicBool>,
}

/// What the loop remembers between ticks (not on disk: it is rebuilt
/// from the state files at each start).
#[derive(Default)]
struct Memory {
    /// When `when` was last probed, per job (ns).
    probed: HashMap<String, i64>,
    /// Whether the job's disk was seen absent since its last run.
    absent: HashMap<String, bool>,
    /// Each job's state as last read, with its file's change time: an
    /// idle daemon looks at a file's metadata each second, and reads
    /// the file only when a run (its own or `cairn run`'s) changed it.
    states: HashMap<String, Known>,
    /// Each job's `overdue_after`, computed once per config (a calendar's
    /// longest gap takes a few hundred time-zone conversions).
    overdue: HashMap<String, Option<Duration>>,
}

/// A job's state as last read, and what follows from it.
struct Known {
    stamp: Option<std::time::SystemTime>,
    st: crate::state::JobState,
    /// When the clock makes it due next (see [`crate::schedule::Schedule::next_due`]).
    next: Option<i64>,
}

impl Memory {
    /// The state of `job` and its next due time, read and computed again
    /// only when its file changed; a job seen for the first time is
    /// recorded as created now.
    fn state(
        &mut self,
        dir: &StateDir,
        job: &Job,
        now: i64,
        tz: &jiff::tz::TimeZone,
    ) -> Option<(crate::state::JobState, Option<i64>)> {
        let stamp = dir.modified(&job.name);
        // A state that says "running" is read each time: the run's end
        // may land within the file system's timestamp tick.
        if let Some(k) = self.states.get(&job.name)
            && stamp.is_some()
            && k.stamp == stamp
            && k.st.running.is_none()
        {
            return Some((k.st.clone(), k.next));
        }
        let st = dir.load(&job.name, now).ok()?;
        if stamp.is_none()
            && let Ok(Some(_l)) = dir.lock_job(&job.name)
        {
            // First sight: remember when, so a calendar job counts from
            // here and overdue has a start.
            let _ = dir.save(&job.name, &st);
        }
        let next = job.schedule.next_due(&job.name, &st.past(), tz);
        self.states.insert(
            job.name.clone(),
            Known {
                stamp: dir.modified(&job.name),
                st: st.clone(),
                next,
            },
        );
        Some((st, next))
    }

    /// The job's `overdue_after`, or its default.
    fn overdue_after(&mut self, job: &Job, now: i64, tz: &jiff::tz::TimeZone) -> Option<Duration> {
        *self.overdue.entry(job.name.clone()).or_insert_with(|| {
            job.overdue_after
                .or_else(|| job.schedule.default_overdue(now, tz))
        })
    }
}

/// Runs the daemon until `signals.stop` is set.
pub fn run(
    mut config: Config,
    load: &dyn Fn() -> Result<Config, String>,
    signals: &Signals,
    announce: Arc<dyn Announce>,
) -> Result<(), String> {
    let state = StateDir::new(&config.state);
    let _lock = state
        .lock_daemon()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "another cairn daemon is running with the state directory {}; stop it first (one daemon per state directory)",
                config.state.display()
            )
        })?;
    announce.log(&format!(
        "cairn daemon {} started: {} jobs, state in {}",
        env!("CARGO_PKG_VERSION"),
        config.jobs.len(),
        config.state.display()
    ));
    recover_interrupted(&config, &state, &*announce);
    let mut active: HashMap<String, Active> = HashMap::new();
    let mut memory = Memory::default();
    let tz = jiff::tz::TimeZone::system();
    loop {
        if signals.reload.swap(false, Ordering::SeqCst) {
            match load() {
                Ok(c) => {
                    announce.log(&format!("config reloaded: {} jobs", c.jobs.len()));
                    config = c;
                    memory.overdue.clear();
                    memory.states.clear();
                }
                Err(e) => {
                    announce.log(&format!("config not reloaded, the running one stays:\n{e}"))
                }
            }
        }
        for name in reap(&mut active, &*announce) {
            memory.states.remove(&name);
        }
        if signals.stop.load(Ordering::SeqCst) {
            for a in active.values() {
                a.cancel.store(true, Ordering::SeqCst);
            }
            for (_, a) in active.drain() {
                let _ = a.handle.join();
            }
            announce.log("cairn daemon stopped");
            return Ok(());
        }
        let now = cairn_store::now_ns();
        let second = 1_000_000_000i64;
        // When something can next happen: the loop sleeps until then
        // (at most a minute), so an idle daemon wakes once a second only
        // to look at its signals.
        let mut wake = now + 60 * second;
        let mut candidates: Vec<(i64, &Job)> = Vec::new();
        for job in &config.jobs {
            if active.contains_key(&job.name) {
                continue;
            }
            let Some((mut st, next)) = memory.state(&state, job, now, &tz) else {
                continue;
            };
            let overdue_after = memory.overdue_after(job, now, &tz);
            // Cheap test first: the lock is taken only to record an alert.
            if let Some(after) = overdue_after
                && st.alert.is_none()
                && now.saturating_sub(st.last_success_ns.unwrap_or(st.created_ns))
                    > after.as_nanos() as i64
                && let Ok(Some(_l)) = state.lock_job(&job.name)
                && let Ok(mut fresh) = state.load(&job.name, now)
                && let Some(a) = crate::alerts::overdue(&mut fresh, now, after)
            {
                let _ = state.save(&job.name, &fresh);
                st = fresh;
                announce.alert(
                    job,
                    a,
                    &format!(
                        "no successful run since {}",
                        st.last_success_ns
                            .map_or("the job was set up".to_string(), cairn_maint::times::local)
                    ),
                );
            }
            match next {
                Some(n) if n > now => wake = wake.min(n),
                Some(_) => wake = wake.min(now + second),
                None => {}
            }
            if job.schedule.when != When::Always {
                let probed = memory.probed.get(&job.name).copied().unwrap_or(now);
                let every = job.schedule.probe_every.as_nanos() as i64;
                wake = wake.min((probed + every).max(now + second));
            }
            if let Some(after) = overdue_after
                && st.alert.is_none()
            {
                let late = st.last_success_ns.unwrap_or(st.created_ns) + after.as_nanos() as i64;
                wake = wake.min((late + 1).max(now + second));
            }
            if !due(&config, job, &st, next, now, &tz, &mut memory) {
                continue;
            }
            // The job waiting longest goes first, so a job due every
            // second cannot starve the others.
            let since = next.unwrap_or(now);
            candidates.push((since, job));
        }
        candidates.sort_by_key(|(since, _)| *since);
        for (_, job) in candidates {
            if active.len() >= config.max_concurrent {
                break;
            }
            if job.schedule.when == When::Mounted {
                memory.absent.insert(job.name.clone(), false);
            }
            let cancel = Arc::new(AtomicBool::new(false));
            let (c, j, s, cc, ann) = (
                config.clone(),
                job.clone(),
                state.clone(),
                cancel.clone(),
                announce.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("job {}", job.name))
                .spawn(move || {
                    crate::run::run_recorded(&c, &j, &s, Arc::new(Progress::default()), cc, &*ann)
                });
            match handle {
                Ok(handle) => {
                    active.insert(job.name.clone(), Active { handle, cancel });
                }
                Err(e) => announce.log(&format!("job {}: cannot start a thread: {e}", job.name)),
            }
        }
        if !active.is_empty() {
            wake = wake.min(now + second);
        }
        // Sleep in steps of at most a second (a quarter while runs are
        // going, so a stop cancels them at once), so stop and reload stay
        // prompt; a machine that slept past `wake` finds it gone at once.
        let step = if active.is_empty() {
            second
        } else {
            second / 4
        };
        loop {
            if signals.stop.load(Ordering::SeqCst) || signals.reload.load(Ordering::SeqCst) {
                break;
            }
            let left = wake - cairn_store::now_ns();
            if left <= 0 {
                break;
            }
            std::thread::sleep(Duration::from_nanos(left.min(step) as u64));
        }
    }
}

/// Whether `job` should start now.
fn due(
    config: &Config,
    job: &Job,
    st: &crate::state::JobState,
    clock: Option<i64>,
    now: i64,
    tz: &jiff::tz::TimeZone,
    memory: &mut Memory,
) -> bool {
    let s = &job.schedule;
    if st.running.is_some() {
        return false;
    }
    let clock_due = clock.is_some_and(|d| d <= now);
    if (clock_due || s.when == When::Mounted) && s.blackout_end(now, tz).is_some() {
        return false;
    }
    match s.when {
        When::Always => clock_due,
        When::Mounted => {
            let absent = *memory
                .absent
                .entry(job.name.clone())
                .or_insert(st.last_start_ns.is_none());
            // The disk is looked at every probe interval, to notice it
            // going away as well as coming back.
            if !probe_due(memory, &job.name, now, s.probe_every) {
                return false;
            }
            let mounted = config
                .repositories
                .get(&job.repository)
                .is_some_and(disk_present);
            if !mounted {
                memory.absent.insert(job.name.clone(), true);
                return false;
            }
            // Timed: when due and the disk is there. Untimed: each time
            // the disk appears, and for retries after a failure.
            if s.timed() {
                clock_due
            } else {
                absent || clock_due
            }
        }
        When::Reachable => {
            if !clock_due || !probe_due(memory, &job.name, now, s.probe_every) {
                return false;
            }
            match &job.kind {
                Kind::Pull(p) => crate::probe::reachable(p),
                _ => true,
            }
        }
    }
}

fn probe_due(memory: &mut Memory, job: &str, now: i64, every: Duration) -> bool {
    let last = memory.probed.get(job).copied();
    if last.is_some_and(|l| now - l < every.as_nanos() as i64) {
        return false;
    }
    memory.probed.insert(job.to_string(), now);
    true
}

/// Whether a repository's disk is there: its mount rule holds and the
/// repository directory exists.
fn disk_present(r: &crate::config::Repository) -> bool {
    crate::open::check_mount(r).is_ok() && r.local_path().is_some_and(|p| p.join("config").exists())
}

/// Joins the runs that ended; returns their jobs' names.
fn reap(active: &mut HashMap<String, Active>, announce: &dyn Announce) -> Vec<String> {
    let done: Vec<String> = active
        .iter()
        .filter(|(_, a)| a.handle.is_finished())
        .map(|(k, _)| k.clone())
        .collect();
    for name in &done {
        if let Some(a) = active.remove(name) {
            match a.handle.join() {
                Ok(Ok(_)) => {}
                Ok(Err(NotStarted::Busy)) => announce.log(&format!(
                    "job {name}: already running elsewhere (cairn run?)"
                )),
                Ok(Err(NotStarted::State(e))) => {
                    announce.log(&format!("job {name}: its state cannot be kept: {e}"))
                }
                Err(_) => announce.log(&format!("job {name}: the run crashed")),
            }
        }
    }
    done
}

/// Runs that a dead daemon left marked as running: they are recorded as
/// interrupted, so they run again at once, except a backup whose
/// snapshot was committed before the daemon died, which is recorded as
/// the success it was (not run twice).
fn recover_interrupted(config: &Config, state: &StateDir, announce: &dyn Announce) {
    let now = cairn_store::now_ns();
    for job in &config.jobs {
        let Ok(Some(_lock)) = state.lock_job(&job.name) else {
            continue;
        };
        let Ok(mut st) = state.load(&job.name, now) else {
            continue;
        };
        let Some(running) = st.running.clone() else {
            continue;
        };
        let committed = committed_since(config, job, running.started_ns);
        let report = match committed {
            Some(id) => crate::run::Report {
                outcome: Outcome::Ok,
                message: format!(
                    "snapshot {} was committed before the daemon stopped",
                    &id[..8.min(id.len())]
                ),
                snapshot: Some(id),
                ..Default::default()
            },
            None => crate::run::Report {
                outcome: Outcome::Interrupted,
                message: "the daemon stopped during the run; it runs again now".into(),
                snapshot: None,
                bytes_added: 0,
                ..Default::default()
            },
        };
        crate::run::record(&mut st, &report, running.started_ns, Duration::ZERO);
        crate::alerts::after_run(&mut st, report.outcome);
        if state.save(&job.name, &st).is_ok() {
            announce.log(&format!("job {}: {}", job.name, report.message));
        }
    }
}

/// A snapshot of the job's group written since `since_ns`, if any.
fn committed_since(config: &Config, job: &Job, since_ns: i64) -> Option<String> {
    let group = match &job.kind {
        Kind::Backup(b) => match &b.group {
            Some(g) => g.clone(),
            None => {
                cairn_engine::archiver::default_group(&cairn_store::hostname(), &b.paths).ok()?
            }
        },
        Kind::Pull(p) => crate::pull::group(p),
        Kind::Command(c) => c
            .group
            .clone()
            .unwrap_or_else(|| format!("{}:stdin:{}", cairn_store::hostname(), c.filename)),
        Kind::Git(g) => g.group(),
        _ => return None,
    };
    let r = config.repositories.get(&job.repository)?;
    let storage = crate::open::storage(r, Duration::from_secs(10)).ok()?;
    let (snaps, _) = cairn_store::list_snapshots(&*storage).ok()?;
    snaps
        .iter()
        .rev()
        .find(|s| s.envelope.group == group && s.envelope.time_ns >= since_ns)
        .map(|s| s.id.to_hex())
}
