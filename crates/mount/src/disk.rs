//! An optional cache of file chunks on disk, for mounts of repositories
//! that are slow or costly to read (a box, S3): a file read once is read
//! from local disk the next time, in this mount or a later one.
//!
//! It keeps records as they are stored, still sealed, one file per blob
//! (`DIR/<repository id>/<2 hex>/<blob id>`): nothing readable lands on
//! the disk, and every hit is authenticated again when decoded, so a
//! damaged cache file is dropped and fetched anew rather than trusted.
//! Files are evicted oldest use first once their bytes pass the limit;
//! the order survives remounts through the files' modification times.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_repo::Id;

struct State {
    files: HashMap<Id, (u64, u64)>,
    order: BTreeMap<u64, Id>,
    tick: u64,
    bytes: u64,
}

/// Sealed records on disk, bounded in bytes.
pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
}

impl DiskCache {
    /// Opens (creating) the cache of repository `repo_id` under `dir`,
    /// taking stock of what earlier mounts left, and trims it to `limit`.
    pub fn open(dir: &Path, repo_id: &str, limit: u64) -> std::io::Result<DiskCache> {
        let dir = dir.join(repo_id);
        std::fs::create_dir_all(&dir)?;
        let mut found: Vec<(std::time::SystemTime, Id, u64)> = Vec::new();
        for sub in std::fs::read_dir(&dir)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name();
                let Some(id) = name.to_str().and_then(Id::from_hex) else {
                    // A temporary file of a write that was cut short.
                    let _ = std::fs::remove_file(f.path());
                    continue;
                };
                let md = f.metadata()?;
                found.push((md.modified()?, id, md.len()));
            }
        }
        found.sort();
        let mut st = State {
            files: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
        };
        for (_, id, len) in found {
            st.tick += 1;
            st.files.insert(id, (st.tick, len));
            st.order.insert(st.tick, id);
            st.bytes += len;
        }
        let cache = DiskCache {
            dir,
            limit,
            state: Mutex::new(st),
        };
        cache.trim(&mut cache.lock());
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: &Id) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The record of `id` into `out`, if cached.
    pub fn get(&self, id: &Id, out: &mut Vec<u8>) -> bool {
        {
            let mut st = self.lock();
            let State {
                files, order, tick, ..
            } = &mut *st;
            let Some((t, _)) = files.get_mut(id) else {
                return false;
            };
            order.remove(t);
            *tick += 1;
            *t = *tick;
            order.insert(*tick, *id);
        }
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(b) => {
                // Later mounts keep the order of use.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                *out = b;
                true
            }
            Err(_) => {
                self.forget(id);
                false
            }
        }
    }

    /// Keeps the record of `id`; a failure to write only costs a fetch
    /// later.
    pub fn put(&self, id: &Id, record: &[u8]) {
        if record.len() as u64 > self.limit || self.lock().files.contains_key(id) {
            return;
        }
        let path = self.path(id);
        let tmp = path.with_extension("tmp");
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("has a parent"))?;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(record)?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        let mut st = self.lock();
        st.tick += 1;
        let tick = st.tick;
        if let Some((old, len)) = st.files.insert(*id, (tick, record.len() as u64)) {
            st.order.remove(&old);
            st.bytes -= len;
        }
        st.order.insert(tick, *id);
        st.bytes += record.len() as u64;
        self.trim(&mut st);
    }

    /// Drops the record of `id` (it did not authenticate).
    pub fn forget(&self, id: &Id) {
        let mut st = self.lock();
        if let Some((t, len)) = st.files.remove(id) {
            st.order.remove(&t);
            st.bytes -= len;
        }
        let _ = std::fs::remove_file(self.path(id));
    }

    fn trim(&self, st: &mut State) {
        while st.bytes > self.limit {
            let Some((&t, &id)) = st.order.iter().next() else {
                break;
            };
            st.order.remove(&t);
            if let Some((_, len)) = st.files.remove(&id) {
                st.bytes -= len;
            }
            let _ = std::fs::remove_file(self.path(&id));
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn keeps_records_within_the_limit_across_opens() {
        let d = tempfile::tempdir().unwrap();
        let c = DiskCache::open(d.path(), "repo", 250).unwrap();
        let mut out = Vec::new();
        assert!(!c.get(&id(1), &mut out));
        c.put(&id(1), &[1; 100]);
        c.put(&id(2), &[2; 100]);
        assert!(c.get(&id(1), &mut out));
        assert_eq!(out, vec![1; 100]);
        c.put(&id(3), &[3; 100]); // evicts 2, the least recently used
        assert!(!c.get(&id(2), &mut out));
        assert_eq!(c.bytes(), 200);
        c.put(&id(4), &[4; 300]); // larger than the whole cache: not kept
        assert!(!c.get(&id(4), &mut out));
        drop(c);
        // A cut-short write is cleaned up; what was kept is found again.
        std::fs::write(d.path().join("repo/01/leftover.tmp"), b"x").unwrap();
        let c = DiskCache::open(d.path(), "repo", 250).unwrap();
        assert_eq!(c.bytes(), 200);
        assert!(c.get(&id(3), &mut out));
        assert_eq!(out, vec![3; 100]);
        assert!(!d.path().join("repo/01/leftover.tmp").exists());
        c.forget(&id(3));
        assert!(!c.get(&id(3), &mut out));
        // A smaller limit trims at open.
        drop(c);
        let c = DiskCache::open(d.path(), "repo", 50).unwrap();
        assert_eq!(c.bytes(), 0);
    }
}
