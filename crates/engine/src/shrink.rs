//! What a backup is about to lose compared with the group's last
//! snapshot, for a guard that holds back a snapshot after a mass
//! deletion, an emptied cloud folder or a mount that moved.
//!
//! The files cache of the previous run on this machine lists every file
//! that run saw, in walk order; the files it lists that this run never
//! looked up are the ones that vanished. That needs no key, so a put-only
//! source is guarded as well as the owner. Without a cache (first run
//! here, `--no-cache`) the guard falls back on the counts in the previous
//! snapshot's envelope.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directories tallied one by one; past this, the rest are summed as one.
const MAX_DIRS: usize = 65_536;

/// Files and bytes that vanished, by the directory that held them.
#[derive(Debug, Default)]
pub struct Tally {
    dirs: HashMap<Vec<u8>, (u64, u64)>,
    other: (u64, u64),
    files: u64,
    bytes: u64,
}

impl Tally {
    /// Counts a file of the previous run that this run did not see.
    pub fn add(&mut self, path: &[u8], size: u64) {
        self.files += 1;
        self.bytes = self.bytes.saturating_add(size);
        let dir = match path.iter().rposition(|&b| b == b'/') {
            Some(0) => &path[..1],
            Some(i) => &path[..i],
            None => path,
        };
        let slot = if self.dirs.len() < MAX_DIRS || self.dirs.contains_key(dir) {
            self.dirs.entry(dir.to_vec()).or_default()
        } else {
            &mut self.other
        };
        slot.0 += 1;
        slot.1 = slot.1.saturating_add(size);
    }

    /// The directories that lost most, each rolled up to the highest
    /// directory that is gone altogether (`/home/me/Photos` rather than
    /// its thousand subdirectories), most files first.
    pub fn largest(&self, n: usize) -> Vec<VanishedDir> {
        let mut gone: HashMap<PathBuf, bool> = HashMap::new();
        let mut exists = |p: &Path| -> bool {
            *gone
                .entry(p.to_path_buf())
                .or_insert_with(|| std::fs::symlink_metadata(p).is_ok())
        };
        let mut by: HashMap<PathBuf, (u64, u64)> = HashMap::new();
        for (dir, (files, bytes)) in &self.dirs {
            use std::os::unix::ffi::OsStrExt;
            let mut d = Path::new(std::ffi::OsStr::from_bytes(dir)).to_path_buf();
            while let Some(parent) = d.parent() {
                if exists(parent) || parent.as_os_str().is_empty() {
                    break;
                }
                d = parent.to_path_buf();
            }
            let e = by.entry(d).or_default();
            e.0 += files;
            e.1 = e.1.saturating_add(*bytes);
        }
        let mut list: Vec<VanishedDir> = by
            .into_iter()
            .map(|(path, (files, bytes))| VanishedDir {
                gone: !exists(&path),
                path: path.display().to_string(),
                files,
                bytes,
            })
            .collect();
        if self.other.0 > 0 {
            list.push(VanishedDir {
                path: "(other directories)".into(),
                files: self.other.0,
                bytes: self.other.1,
                gone: false,
            });
        }
        list.sort_by(|a, b| b.files.cmp(&a.files).then(b.bytes.cmp(&a.bytes)));
        list.truncate(n);
        list
    }

    /// Files counted.
    pub fn files(&self) -> u64 {
        self.files
    }

    /// Bytes counted.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// A directory that lost files.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VanishedDir {
    /// Its path.
    pub path: String,
    /// Files of the previous run no longer in it.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Whether the directory itself is gone.
    pub gone: bool,
}

/// A backup about to be committed, against the group's last snapshot.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Shrinkage {
    /// Files in the group's last snapshot.
    pub previous_files: u64,
    /// Bytes in it.
    pub previous_bytes: u64,
    /// Files in this one.
    pub files: u64,
    /// Bytes in this one.
    pub bytes: u64,
    /// Files of the last snapshot no longer there.
    pub vanished_files: u64,
    /// Their bytes.
    pub vanished_bytes: u64,
    /// Where they were, when the files cache tells.
    pub vanished_dirs: Vec<VanishedDir>,
    /// Whether the counts are file by file (files cache), not the
    /// difference of two totals.
    pub exact: bool,
}

impl Shrinkage {
    /// The larger of the shares of files and of bytes that vanished.
    pub fn share(&self) -> f64 {
        let f = ratio(self.vanished_files, self.previous_files);
        let b = ratio(self.vanished_bytes, self.previous_bytes);
        f.max(b)
    }
}

/// Compares a backup's totals with the group's last snapshot, file by
/// file where the previous run's files cache is there (`vanished`).
pub fn measure(
    previous: &cairn_format::snapshot::Envelope,
    files: u64,
    bytes: u64,
    vanished: Option<&Tally>,
) -> Shrinkage {
    match vanished {
        Some(t) => Shrinkage {
            previous_files: previous.files,
            previous_bytes: previous.bytes,
            files,
            bytes,
            vanished_files: t.files(),
            vanished_bytes: t.bytes(),
            vanished_dirs: t.largest(5),
            exact: true,
        },
        None => Shrinkage {
            previous_files: previous.files,
            previous_bytes: previous.bytes,
            files,
            bytes,
            vanished_files: previous.files.saturating_sub(files),
            vanished_bytes: previous.bytes.saturating_sub(bytes),
            vanished_dirs: Vec::new(),
            exact: false,
        },
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Decides, before a snapshot is committed, whether it may be: an `Err`
/// holds the snapshot back with that reason (see [`crate::Error::Refused`]).
#[derive(Clone)]
pub struct CommitGuard(pub Arc<GuardFn>);

/// The decision a [`CommitGuard`] makes.
pub type GuardFn = dyn Fn(&Shrinkage) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for CommitGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitGuard")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanished_files_roll_up_to_the_directory_that_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("kept")).unwrap();
        let mut t = Tally::default();
        let p = |s: &str| root.join(s).display().to_string().into_bytes();
        for i in 0..5 {
            t.add(&p(&format!("photos/2024/{i}.jpg")), 100);
            t.add(&p(&format!("photos/2025/{i}.jpg")), 100);
        }
        t.add(&p("kept/old.txt"), 7);
        let l = t.largest(5);
        assert_eq!(l[0].path, root.join("photos").display().to_string());
        assert_eq!((l[0].files, l[0].bytes, l[0].gone), (10, 1000, true));
        assert_eq!(l[1].path, root.join("kept").display().to_string());
        assert!(!l[1].gone);
        assert_eq!((t.files(), t.bytes()), (11, 1007));
    }
}
