//! Durable small files outside a repository: key files, certificates,
//! tokens, `known_servers`, the rollback record, the daemon's state.
//!
//! After a power cut such a file holds either its old bytes or its new
//! ones, never a mix or nothing, and a file once written stays written:
//! the bytes go to a temporary file beside it, which is fsynced, renamed
//! over the name, and the directory fsynced so the rename itself survives.
//! Directories created on the way are fsynced into their parents too: a
//! key file in a directory that never reached the disk is lost with it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{CWD, RenameFlags, renameat_with};

use crate::local::sync_dir;
use crate::{Error, Result, temp_name};

/// Whether [`atomic_write`] may replace a file that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (the new bytes win, atomically).
    Replace,
    /// Refuse with an `AlreadyExists` I/O error and leave it untouched.
    Keep,
}

/// Writes `data` to `path` atomically and durably, with permission bits
/// `mode` (e.g. `0o600` for secrets), creating missing parent directories
/// durably.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32, existing: Existing) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::io("write", path, io::Error::other("not a file name")))?;
    create_dir_durable(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        temp_name()
    ));
    let written = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    let placed = match existing {
        Existing::Replace => fs::rename(&tmp, path),
        Existing::Keep => rename_noreplace(&tmp, path),
    };
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    sync_dir(dir)
}

/// Renames without replacing: `renameat2(RENAME_NOREPLACE)`, or `link`
/// and `unlink` where the filesystem lacks it (both are create-only).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error())),
    }
}

/// Creates `dir` and its missing ancestors, fsyncing each new directory's
/// parent so the new entry survives a power cut.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(Error::io("create directory", d, e)),
        }
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_replaces_or_keeps_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/secret");
        atomic_write(&p, b"one", 0o600, Existing::Keep).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = atomic_write(&p, b"two", 0o600, Existing::Keep).unwrap_err();
        assert!(
            matches!(e, Error::Io { ref source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{e}"
        );
        assert_eq!(fs::read(&p).unwrap(), b"one");
        atomic_write(&p, b"three", 0o644, Existing::Replace).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"]);
    }
}
