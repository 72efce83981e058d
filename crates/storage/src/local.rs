//! A repository in a local directory.
//!
//! Writes are atomic and durable: bytes go to `tmp/`, are fsynced, then
//! moved into place with `renameat2(RENAME_NOREPLACE)` (falling back to
//! `link` + `unlink` where the filesystem lacks it) and the directory is
//! fsynced. A crash leaves at most a stray file in `tmp/`, never a partial
//! object under its final name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, RenameFlags, renameat_with};

use crate::{Error, Kind, ObjectInfo, Result, Storage, temp_name, valid_name};

/// The directories of a local repository: one per kind, and `tmp` for
/// staging. `init` creates them all before the config, so a directory
/// holding nothing else is what a crashed `init` left.
const LAYOUT: &[&str] = &[
    "keys",
    "data",
    "index",
    "snapshots",
    "locks",
    "garbage",
    "protected",
    "receipts",
    "origins",
    "tmp",
];

/// A repository stored in a directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Opens a directory as storage; does not create anything.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory layout of a new repository.
    pub fn create_layout(&self) -> Result<()> {
        // A directory whose entry never reached its parent is lost in a
        // power cut with all that was later put in it, fsynced or not: the
        // repository directory itself, and `data/xx` below `data`.
        crate::create_dir_durable(&self.root)?;
        for d in LAYOUT {
            let p = self.root.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io("create directory", &p, e))?;
        }
        for i in 0..256 {
            let p = self.root.join("data").join(format!("{i:02x}"));
            fs::create_dir_all(&p).map_err(|e| Error::io("create directory", &p, e))?;
        }
        sync_dir(&self.root.join("data"))?;
        sync_dir(&self.root)
    }

    fn clean_staging_dir(&self, min_age: std::time::Duration) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    fn path(&self, kind: Kind, name: &str) -> Result<PathBuf> {
        if kind == Kind::Config {
            return Ok(self.root.join("config"));
        }
        if !valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let dir = self.root.join(kind.dir());
        Ok(if kind == Kind::Pack {
            dir.join(name.get(..2).unwrap_or("00")).join(name)
        } else {
            dir.join(name)
        })
    }

    fn not_found(&self, kind: Kind, name: &str) -> Error {
        Error::NotFound {
            kind,
            name: name.to_string(),
            location: self.location(),
        }
    }

    fn open(&self, kind: Kind, name: &str) -> Result<(File, PathBuf)> {
        let p = self.path(kind, name)?;
        match File::open(&p) {
            Ok(f) => Ok((f, p)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(kind, name)),
            Err(e) => Err(Error::io("open", &p, e)),
        }
    }

    /// Moves a durable staged file to its final name without overwriting.
    fn publish(&self, kind: Kind, name: &str, staged: &Path) -> Result<()> {
        let dest = self.path(kind, name)?;
        // A missing `data/xx` (removed by hand, or an old layout) is created
        // durably: the directory fsync below covers only the object's entry.
        if let Some(parent) = dest.parent()
            && !parent.exists()
        {
            crate::create_dir_durable(parent)?;
        }
        let res = match renameat_with(CWD, staged, CWD, &dest, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                // The filesystem lacks RENAME_NOREPLACE: link is create-only too.
                match fs::hard_link(staged, &dest) {
                    Ok(()) => {
                        let _ = fs::remove_file(staged);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error())),
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(staged);
                if !kind.content_addressed() {
                    return Err(Error::AlreadyExists {
                        kind,
                        name: name.to_string(),
                    });
                }
            }
            Err(e) => {
                let _ = fs::remove_file(staged);
                return Err(Error::io("publish", &dest, e));
            }
        }
        sync_dir(dest.parent().unwrap_or(&self.root))
    }
}

/// Fsyncs a directory so that a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    f.sync_all()
        .map_err(|e| Error::io("sync directory", dir, e))
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let (mut f, p) = self.open(kind, name)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .map_err(|e| Error::io("read", &p, e))?;
        Ok(v)
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.get_range_into(kind, name, offset, len, &mut v)?;
        Ok(v)
    }

    fn get_range_into(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let (mut f, p) = self.open(kind, name)?;
        let size = f.metadata().map_err(|e| Error::io("stat", &p, e))?.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::Short {
                kind,
                name: name.to_string(),
            });
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("seek", &p, e))?;
        buf.clear();
        buf.reserve(len as usize);
        // `read_to_end` fills spare capacity without zeroing it first.
        let n = f
            .take(len)
            .read_to_end(buf)
            .map_err(|e| Error::io("read", &p, e))?;
        if n as u64 != len {
            return Err(Error::Short {
                kind,
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// With direct I/O: the bytes go from the disk into `buf`, without a
    /// page-cache page to take and fill and copy out of. Falls back to a
    /// read through the cache where the filesystem refuses direct I/O.
    fn get_range_uncached(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        const ALIGN: u64 = 4096;
        let p = self.path(kind, name)?;
        let f = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.not_found(kind, name)),
            Err(_) => {
                crate::read_exact_range(self, kind, name, offset, len, buf)?;
                return Ok(0);
            }
        };
        let size = f.metadata().map_err(|e| Error::io("stat", &p, e))?.len();
        let Some(end) = offset.checked_add(len).filter(|&e| e <= size) else {
            return Err(Error::Short {
                kind,
                name: name.to_string(),
            });
        };
        let from = offset / ALIGN * ALIGN;
        let to = end.div_ceil(ALIGN) * ALIGN;
        let span = usize::try_from(to - from).map_err(|_| Error::Short {
            kind,
            name: name.to_string(),
        })?;
        // Grown (and zeroed) only when too small: its old bytes are
        // overwritten, not cleared, for each read.
        let need = span + ALIGN as usize;
        if buf.len() < need {
            buf.clear();
            buf.resize(need, 0);
        }
        let at = buf.as_ptr().align_offset(ALIGN as usize);
        let mut done = 0usize;
        let want = (end - from) as usize;
        while done < want {
            match f.read_at(&mut buf[at + done..at + span], from + done as u64) {
                Ok(0) => {
                    return Err(Error::Short {
                        kind,
                        name: name.to_string(),
                    });
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    // An alignment the device does not take (or a short
                    // read that left the next one unaligned).
                    crate::read_exact_range(self, kind, name, offset, len, buf)?;
                    return Ok(0);
                }
                Err(e) => return Err(Error::io("read", &p, e)),
            }
        }
        Ok(at + (offset - from) as usize)
    }

    /// A read opens the file anew, which starts the kernel's read-ahead
    /// from nothing each time; without this hint a restore waited on the
    /// disk for every window of a pack it read.
    fn prefetch(&self, kind: Kind, name: &str, offset: u64, len: u64) {
        if let Ok((f, _)) = self.open(kind, name) {
            let _ = rustix::fs::fadvise(
                &f,
                offset,
                std::num::NonZeroU64::new(len),
                rustix::fs::Advice::WillNeed,
            );
        }
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        let p = self.path(kind, name)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(kind, name)),
            Err(e) => Err(Error::io("stat", &p, e)),
        }
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let staged = self.staging_dir()?.join(temp_name());
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staged)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&staged);
            return Err(Error::io("write", &staged, e));
        }
        self.publish(kind, name, &staged)
    }

    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> Result<()> {
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("sync", file, e))?;
        self.publish(kind, name, file)
    }

    fn list(&self, kind: Kind) -> Result<Vec<ObjectInfo>> {
        let dir = self.root.join(kind.dir());
        let mut out = Vec::new();
        let mut dirs = vec![dir.clone()];
        // Repositories made before format 1.1 have no directories for
        // these kinds, and a copy that kept no empty directories (a git
        // checkout of the fixture) lacks `locks/`: none means nothing of
        // the kind was ever written.
        if matches!(
            kind,
            Kind::Garbage | Kind::Protect | Kind::Lock | Kind::Receipt | Kind::Origin
        ) && !dir.exists()
        {
            return Ok(out);
        }
        if kind == Kind::Pack {
            dirs.clear();
            for e in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
                let e = e.map_err(|e| Error::io("list", &dir, e))?;
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
        }
        for d in dirs {
            for e in fs::read_dir(&d).map_err(|e| Error::io("list", &d, e))? {
                let e = e.map_err(|e| Error::io("list", &d, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !valid_name(&name) {
                    continue;
                }
                let m = match e.metadata() {
                    Ok(m) => m,
                    // Deleted since the directory was read (a prune at
                    // work): not there, as a listing a moment later says.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(Error::io("stat", e.path(), err)),
                };
                if m.is_file() {
                    out.push(ObjectInfo {
                        name,
                        size: m.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        let p = self.path(kind, name)?;
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(p.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", &p, e)),
        }
    }

    fn prepare(&self) -> Result<()> {
        // A directory holding only our (empty) layout is what a crashed
        // `init` leaves; anything else is someone's data.
        let foreign = fs::read_dir(&self.root).ok().is_some_and(|rd| {
            rd.flatten()
                .any(|e| !LAYOUT.contains(&e.file_name().to_string_lossy().as_ref()))
        });
        if foreign && !self.root.join("config").exists() {
            return Err(Error::NotEmpty {
                path: self.root.clone(),
            });
        }
        self.create_layout()
    }

    fn clean_staging(&self, min_age: std::time::Duration) {
        self.clean_staging_dir(min_age)
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        let p = self.root.join("tmp");
        if !p.is_dir() {
            fs::create_dir_all(&p).map_err(|e| Error::io("create directory", &p, e))?;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uncached reads give the bytes asked for wherever they start and
    /// end, in a buffer reused across reads of every size, on a disk
    /// (direct I/O) and on a tmpfs (which refuses it: read through the
    /// cache); past the end of the object they fail as a short read.
    #[test]
    fn uncached_reads_give_exact_bytes_at_any_offset() {
        let bytes: Vec<u8> = (0..3 * 4096 + 123u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let tmpfs = std::path::Path::new("/dev/shm");
        let dirs = [
            tempfile::tempdir().unwrap(),
            tempfile::tempdir_in(tmpfs).expect("a directory in /dev/shm"),
        ];
        for d in &dirs {
            let s = LocalStorage::new(d.path());
            s.create_layout().unwrap();
            s.put(Kind::Pack, "abcd", &bytes).unwrap();
            let mut buf = Vec::new();
            let size = bytes.len() as u64;
            for (offset, len) in [
                (0, size),
                (1, 3),
                (4095, 2),
                (4096, 4096),
                (5000, 7000),
                (size - 1, 1),
                (0, 1),
                (123, size - 123),
            ] {
                let at = s
                    .get_range_uncached(Kind::Pack, "abcd", offset, len, &mut buf)
                    .unwrap();
                let (o, l) = (offset as usize, len as usize);
                assert!(
                    buf[at..at + l] == bytes[o..o + l],
                    "{}: {len} bytes at {offset}",
                    d.path().display()
                );
            }
            for (offset, len) in [(size - 1, 2), (size, 1), (u64::MAX, 1)] {
                assert!(
                    matches!(
                        s.get_range_uncached(Kind::Pack, "abcd", offset, len, &mut buf),
                        Err(Error::Short { .. })
                    ),
                    "{len} bytes at {offset}"
                );
            }
            assert!(matches!(
                s.get_range_uncached(Kind::Pack, "ffff", 0, 1, &mut buf),
                Err(Error::NotFound { .. })
            ));
        }
    }

    #[test]
    fn put_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(d.path());
        s.create_layout().unwrap();
        s.put(Kind::Pack, "abcd", b"hello").unwrap();
        s.put(Kind::Pack, "abcd", b"hello").unwrap();
        assert_eq!(s.get(Kind::Pack, "abcd").unwrap(), b"hello");
        assert_eq!(s.get_range(Kind::Pack, "abcd", 1, 3).unwrap(), b"ell");
        // A hint, within, past the end of or for a missing object, changes
        // nothing a read sees.
        s.prefetch(Kind::Pack, "abcd", 1, 3);
        s.prefetch(Kind::Pack, "abcd", 4, 1 << 30);
        s.prefetch(Kind::Pack, "ffff", 0, 10);
        assert_eq!(s.get_range(Kind::Pack, "abcd", 1, 3).unwrap(), b"ell");
        assert!(matches!(
            s.get_range(Kind::Pack, "abcd", 3, 3),
            Err(Error::Short { .. })
        ));
        s.put(Kind::Key, "k1", b"x").unwrap();
        assert!(matches!(
            s.put(Kind::Key, "k1", b"y"),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(s.get(Kind::Key, "k1").unwrap(), b"x");
        assert_eq!(s.list(Kind::Pack).unwrap()[0].name, "abcd");
        s.delete(Kind::Pack, "abcd").unwrap();
        assert!(s.get(Kind::Pack, "abcd").unwrap_err().is_not_found());
        assert!(s.get(Kind::Pack, "../config").is_err());
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }
}
