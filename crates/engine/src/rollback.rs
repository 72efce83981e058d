//! Noticing a repository rolled back to an older copy.
//!
//! Each machine records, per group, the last snapshot it committed
//! (`last-<hash of group>`: `<snapshot hex> <time ns>`) under its state
//! directory (`$XDG_STATE_HOME/cairn/<repo-id>/`, not the cache a user may
//! empty). A backup refuses a repository where that snapshot is gone and
//! nothing of the group as new or newer is there: retention never does
//! that (a policy keeps a group's newest snapshot unless told to empty
//! it), but a storage reset to an older copy does, and writing into it
//! would build on data that may be gone.
//!
//! The record fails closed: one that cannot be read or parsed refuses the
//! backup and names the file, since treating it as absent would switch
//! the check off exactly when something tampered with it.

use std::path::{Path, PathBuf};

use cairn_format::Id;
use cairn_repo::Repo;

use crate::{Error, Result};

/// Where the record of `group` lives in `state_dir`.
pub fn record_path(state_dir: &Path, group: &str) -> PathBuf {
    let h = cairn_crypto::plain_hash(group.as_bytes());
    state_dir.join(format!("last-{}", hex::encode(&h[..8])))
}

/// Reads a record: `None` if there is none.
fn read(path: &Path) -> Result<Option<(String, i64)>> {
    let damaged = |why: String| {
        Error::Input(format!(
            "the rollback record {} is damaged ({why}); nothing was written. If you trust the repository as it is, remove that file or run again with --accept-rollback",
            path.display()
        ))
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(damaged(format!("cannot read it: {e}"))),
    };
    let text = String::from_utf8(bytes).map_err(|_| damaged("not text".into()))?;
    let mut it = text.split_whitespace();
    match (it.next(), it.next().map(str::parse::<i64>), it.next()) {
        (Some(id), Some(Ok(t)), None) if Id::from_hex(id).is_some() => {
            Ok(Some((id.to_string(), t)))
        }
        _ => Err(damaged("expected a snapshot ID and a time".into())),
    }
}

/// Refuses to write into a repository that lost what this machine last
/// wrote to it for `group`.
pub fn check(repo: &Repo, state_dir: &Path, group: &str) -> Result<()> {
    let path = record_path(state_dir, group);
    let Some((id, t)) = read(&path)? else {
        return Ok(());
    };
    let (snaps, _) = Repo::list_snapshots(&**repo.storage())?;
    let present = snaps
        .iter()
        .any(|s| s.id.to_hex() == id || (s.envelope.group == group && s.envelope.time_ns >= t));
    if present {
        return Ok(());
    }
    Err(Error::Input(format!(
        "the repository looks rolled back: snapshot {} that this machine wrote for group {group:?} is gone, and nothing newer of that group is there. The storage may have been reset to an older copy; nothing was written. If the snapshot was forgotten on purpose, run again with --accept-rollback (or remove {})",
        &id[..8],
        path.display()
    )))
}

/// Records `id`, committed at `time_ns`, as the last snapshot of `group`.
pub fn record(state_dir: &Path, group: &str, id: &Id, time_ns: i64) -> Result<()> {
    let path = record_path(state_dir, group);
    cairn_storage::atomic_write(
        &path,
        format!("{} {time_ns}\n", id.to_hex()).as_bytes(),
        0o600,
        cairn_storage::Existing::Replace,
    )
    .map_err(|e| Error::Input(e.to_string()))
}

/// Forgets this machine's records of snapshots that were removed on
/// purpose, so that the next backup does not take their absence for a
/// rollback. Returns the records it could not remove.
pub fn forget_recorded(state_dir: &Path, removed: &[Id]) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(rd) = std::fs::read_dir(state_dir) else {
        return problems;
    };
    let gone: std::collections::HashSet<String> = removed.iter().map(|i| i.to_hex()).collect();
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with("last-") {
            continue;
        }
        // A damaged record stays: the next backup names it.
        if let Ok(Some((id, _))) = read(&e.path())
            && gone.contains(&id)
            && let Err(err) = std::fs::remove_file(e.path())
        {
            problems.push(format!("cannot remove {}: {err}", e.path().display()));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state/repo");
        let id = Id([7; 32]);
        record(&dir, "g", &id, 42).unwrap();
        let p = record_path(&dir, "g");
        assert_eq!(read(&p).unwrap(), Some((id.to_hex(), 42)));
        for bad in [&b"garbage"[..], b"", b"\xff\xfe", b"0707 12"] {
            std::fs::write(&p, bad).unwrap();
            let e = read(&p).unwrap_err().to_string();
            assert!(e.contains("damaged"), "{e}");
            assert!(e.contains(&p.display().to_string()), "{e}");
        }
        record(&dir, "g", &id, 43).unwrap();
        assert!(forget_recorded(&dir, &[id]).is_empty());
        assert_eq!(read(&p).unwrap(), None);
    }
}
