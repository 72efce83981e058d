use std::path::PathBuf;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository layer failed.
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    /// The user asked for something impossible (missing path, bad pattern).
    #[error("{0}")]
    Input(String),
    /// The run was stopped (Ctrl-C); what was written is kept for the rerun.
    #[error(
        "interrupted: no snapshot was written; data already uploaded is kept and the next run reuses it"
    )]
    Interrupted,
    /// A guard held the snapshot back (see [`crate::shrink::CommitGuard`]);
    /// nothing was committed, and uploaded data is kept for the rerun.
    #[error("{0}")]
    Refused(String),
    /// A local I/O error that stops the run.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The disk a restore writes to is full. What was restored is kept
    /// (the file being written when it filled up is removed), so the same
    /// restore run again resumes.
    #[error(
        "the disk holding {path} is full: {files} files were restored before it filled up; free space there (or restore onto a larger disk) and run the same restore again, which keeps the files already restored"
    )]
    TargetFull {
        /// Where a write failed for want of space.
        path: PathBuf,
        /// Files restored completely before.
        files: u64,
    },
    /// A stream being backed up as a file failed (see
    /// [`crate::archiver::backup_stream`]); no snapshot was written.
    #[error(
        "backup of the stream {name}: {why}; no snapshot was written (data already uploaded is kept and the next run reuses it)"
    )]
    Stream {
        /// The file name the stream was to be stored as.
        name: String,
        /// What went wrong.
        why: StreamFailure,
    },
}

/// Why a stream backup stopped, apart from the repository failing: the
/// daemon tells a failed dump from a cancelled job by it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamFailure {
    /// Reading the stream failed.
    #[error("reading it failed: {0}")]
    Read(std::io::Error),
    /// Its producer reported failure after the end of the stream (a dump
    /// command that exited non-zero): the bytes may be a truncated dump.
    #[error("{0}")]
    Producer(String),
    /// The run was cancelled.
    #[error("interrupted")]
    Interrupted,
}

impl From<cairn_storage::Error> for Error {
    fn from(e: cairn_storage::Error) -> Self {
        Error::Repo(e.into())
    }
}

impl Error {
    /// Whether a local write failed for want of space (or of quota).
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.raw_os_error(), Some(c)
                if c == rustix::io::Errno::NOSPC.raw_os_error()
                    || c == rustix::io::Errno::DQUOT.raw_os_error()))
    }

    /// Whether the failure means damaged repository data.
    pub fn is_integrity(&self) -> bool {
        matches!(self, Error::Repo(e) if e.is_integrity())
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
