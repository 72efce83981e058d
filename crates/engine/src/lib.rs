//! What Cairn does with a repository: back up, restore, check, list, diff.
//!
//! Each operation is one function taking options and returning a summary;
//! the CLI renders those summaries and the daemon will schedule them.

pub mod archiver;
pub mod checker;
pub mod copier;
pub mod dump;
mod error;
pub mod exclude;
#[cfg(test)]
mod fault_tests;
pub mod filescache;
mod filewrite;
pub mod meta;
pub mod repairer;
pub mod restorer;
pub mod rollback;
pub mod shrink;
mod source;
pub mod walk;

pub use error::{Error, Result, StreamFailure};

/// A problem with one entry that did not stop the run (exit code 1).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Warning {
    /// The entry concerned.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Renders raw path bytes for people (lossy for non-UTF-8 names).
pub fn display_path(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Worker threads to use: `requested`, or one per core when 0.
pub fn threads(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
