//! The box's own state files (`jobs.json`, `alerts.json`): read strictly,
//! written durably.
//!
//! A damaged state file stops the server with its name and what to do,
//! rather than starting afresh: an alert that was on show, or a job that
//! was failing, must not go quiet because a file could not be read.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Reads `path` as JSON; `None` when it does not exist yet.
pub fn read_json<T: DeserializeOwned>(path: &Path, fix: &'static str) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
            fix,
        })
}

/// Replaces `path` with `value` as JSON, atomically and durably. A failure
/// is logged, not returned: the state is kept in memory and written again
/// with the next change, and the job that changed it has done its work.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) {
    let written = serde_json::to_vec_pretty(value)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            cairn_storage::atomic_write(path, &b, 0o600, cairn_storage::Existing::Replace)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::now());
        eprintln!(
            "{now} cairn server: cannot save {}: {e}; it is kept in memory and written with the next change",
            path.display()
        );
    }
}
