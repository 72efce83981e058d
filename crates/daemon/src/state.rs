//! What the daemon remembers of each job, one small JSON file per job in
//! `STATE/jobs/`, replaced atomically: a restart mid-run neither forgets
//! a run nor records one twice.
//!
//! Only the holder of a job's lock (`STATE/jobs/NAME.lock`, an `flock`)
//! writes its state, so `cairn run` and the daemon never run a job at
//! the same time and never overwrite each other's record. `cairn approve`
//! writes a separate file the next run consumes, for the same reason.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did what it should.
    Ok,
    /// It failed.
    Failed,
    /// A guard held it back; nothing was written.
    Refused,
    /// The daemon stopped or died during it.
    Interrupted,
}

/// Live progress of a running job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Files done.
    pub files: u64,
    /// Bytes done.
    pub bytes: u64,
    /// Files in all, when known.
    pub total_files: u64,
    /// Bytes in all, when known.
    pub total_bytes: u64,
    /// Bytes written to the repository.
    pub added: u64,
}

/// A run in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Process running it.
    pub pid: u32,
    /// When it started (ns since the epoch).
    pub started_ns: i64,
    /// How far it got.
    #[serde(default)]
    pub progress: Progress,
}

/// What is remembered of a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// When a daemon first saw the job (ns).
    pub created_ns: i64,
    /// When the last attempt started.
    pub last_start_ns: Option<i64>,
    /// When it ended.
    pub last_end_ns: Option<i64>,
    /// How it ended.
    pub last_outcome: Option<Outcome>,
    /// What it did, or why it failed.
    #[serde(default)]
    pub last_message: String,
    /// When the last successful run started.
    pub last_success_ns: Option<i64>,
    /// Failed or refused attempts since the last success.
    #[serde(default)]
    pub failures: u32,
    /// A run in progress.
    pub running: Option<Running>,
    /// The alert in force ("failed", "refused", "overdue"): alerts go out
    /// when it changes, so ten failures in a row make one alert.
    pub alert: Option<String>,
    /// The last snapshot a run wrote.
    pub last_snapshot: Option<String>,
    /// Bytes the last successful run added.
    #[serde(default)]
    pub last_bytes_added: u64,
    /// How long the last run took (ms).
    #[serde(default)]
    pub last_duration_ms: u64,
    /// When a drill last proved a restore (ns).
    pub last_proven_ns: Option<i64>,
    /// Runs that succeeded.
    #[serde(default)]
    pub ok_runs: u64,
    /// Runs that failed.
    #[serde(default)]
    pub failed_runs: u64,
    /// Runs a guard refused.
    #[serde(default)]
    pub refusals: u64,
    /// A git job's figures from its last run that got past the listing.
    #[serde(default)]
    pub git: Option<GitStats>,
}

/// What a git job's last run found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitStats {
    /// Repositories mirrored.
    pub repositories: u64,
    /// Mirrors fetched (the rest were unchanged upstream).
    pub fetched: u64,
    /// Bytes of packs fetched.
    pub bytes_fetched: u64,
    /// Refs rewritten, deleted or moved upstream whose old tip was kept.
    pub rewritten_refs: u64,
    /// Repositories deleted upstream whose mirrors are kept.
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Fetches that failed.
    pub failed: u64,
    /// Times a rate limit made the listing wait.
    pub limit_waits: u32,
}

impl JobState {
    /// What the schedule needs of it.
    pub fn past(&self) -> crate::schedule::Past {
        crate::schedule::Past {
            created_ns: self.created_ns,
            last_start_ns: self.last_start_ns,
            last_end_ns: self.last_end_ns,
            failures: self.failures,
        }
    }
}

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file system.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A state file that is not what the daemon wrote.
    #[error("{} is damaged ({reason}); move it away to start that job's record afresh", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing durably.
    #[error(transparent)]
    Storage(#[from] cairn_storage::Error),
}

/// The daemon's state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    /// The state under `root` (created when first written).
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn jobs(&self) -> PathBuf {
        self.root.join("jobs")
    }

    fn file(&self, job: &str) -> PathBuf {
        self.jobs().join(format!("{job}.json"))
    }

    /// Scratch space for large indexes and drills.
    pub fn scratch(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// The state of `job`; a job never seen gets a fresh record dated
    /// `now_ns` (not yet written).
    pub fn load(&self, job: &str, now_ns: i64) -> Result<JobState, StateError> {
        let path = self.file(job);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError::Damaged {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobState {
                created_ns: now_ns,
                ..JobState::default()
            }),
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }

    /// When the state file of `job` last changed (`None`: there is none).
    pub fn modified(&self, job: &str) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.file(job))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Replaces the state of `job` atomically and durably.
    pub fn save(&self, job: &str, st: &JobState) -> Result<(), StateError> {
        let dir = self.jobs();
        cairn_storage::create_dir_durable(&dir)?;
        let bytes = serde_json::to_vec_pretty(st).map_err(|e| StateError::Damaged {
            path: self.file(job),
            reason: e.to_string(),
        })?;
        cairn_storage::atomic_write(
            &self.file(job),
            &bytes,
            0o600,
            cairn_storage::Existing::Replace,
        )?;
        Ok(())
    }

    fn lock(&self, path: PathBuf) -> Result<Option<Lock>, StateError> {
        use rustix::fs::{FlockOperation, flock};
        if let Some(d) = path.parent() {
            cairn_storage::create_dir_durable(d)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Lock { _file: f })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(io("cannot lock", &path)(e.into())),
        }
    }

    /// Takes the lock of `job`; `None` when a run holds it already.
    pub fn lock_job(&self, job: &str) -> Result<Option<Lock>, StateError> {
        self.lock(self.jobs().join(format!("{job}.lock")))
    }

    /// Takes the daemon's single-instance lock.
    pub fn lock_daemon(&self) -> Result<Option<Lock>, StateError> {
        self.lock(self.root.join("daemon.lock"))
    }

    /// Whether someone holds the lock at `path`, without creating it:
    /// `cairn status` run by another user (root) must not leave lock
    /// files the daemon's own user cannot open.
    fn held(path: &Path) -> bool {
        use rustix::fs::{FlockOperation, flock};
        let Ok(f) = File::open(path) else {
            return false;
        };
        match flock(&f, FlockOperation::NonBlockingLockShared) {
            Ok(()) => false,
            Err(e) => e == rustix::io::Errno::WOULDBLOCK,
        }
    }

    /// Whether a daemon holds its lock now.
    pub fn daemon_running(&self) -> bool {
        Self::held(&self.root.join("daemon.lock"))
    }

    /// Whether a run of `job` holds its lock now.
    pub fn job_running(&self, job: &str) -> bool {
        Self::held(&self.jobs().join(format!("{job}.lock")))
    }

    fn approval(&self, job: &str) -> PathBuf {
        self.jobs().join(format!("{job}.approved"))
    }

    /// Lets the next run of `job` through the shrink guard.
    pub fn approve(&self, job: &str, by: &str) -> Result<(), StateError> {
        cairn_storage::create_dir_durable(&self.jobs())?;
        cairn_storage::atomic_write(
            &self.approval(job),
            by.as_bytes(),
            0o600,
            cairn_storage::Existing::Replace,
        )?;
        Ok(())
    }

    /// Whether the next run is approved.
    pub fn approved(&self, job: &str) -> bool {
        self.approval(job).exists()
    }

    /// Uses up an approval (after the run it let through committed).
    pub fn consume_approval(&self, job: &str) {
        let _ = std::fs::remove_file(self.approval(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_locks_exclude() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        let mut st = s.load("home", 42).unwrap();
        assert_eq!(st.created_ns, 42);
        st.last_outcome = Some(Outcome::Refused);
        st.failures = 2;
        s.save("home", &st).unwrap();
        assert_eq!(s.load("home", 7).unwrap(), st);
        assert!(!s.job_running("home"));
        assert!(
            !d.path().join("jobs/home.lock").exists(),
            "looking creates nothing"
        );
        let held = s.lock_job("home").unwrap().expect("free");
        assert!(s.lock_job("home").unwrap().is_none(), "held");
        assert!(s.job_running("home"));
        drop(held);
        assert!(!s.job_running("home"));
        assert!(!s.approved("home"));
        s.approve("home", "me").unwrap();
        assert!(s.approved("home"));
        s.consume_approval("home");
        assert!(!s.approved("home"));
        std::fs::write(d.path().join("jobs/bad.json"), b"{").unwrap();
        assert!(
            s.load("bad", 0)
                .unwrap_err()
                .to_string()
                .contains("move it away")
        );
    }
}
