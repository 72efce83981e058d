//! The source-side files cache.
//!
//! Maps a file's path and `(inode, size, mtime, ctime)` to the chunk IDs
//! of its contents, so an unchanged file is never read again and nothing
//! has to be decrypted from the repository: a put-only source, which cannot
//! read its own old snapshots, is as fast as the owner.
//!
//! The cache is a stream of records in walk order (depth first, names
//! sorted, compared component by component). A backup reads the previous
//! stream in lockstep with its walk and writes the next one beside it, so
//! memory stays constant however many files there are. It is replaced only
//! after the snapshot is committed. Losing or damaging it costs time only.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cairn_format::Id;
use cairn_format::wire::{Reader, Writer};

const MAGIC: &[u8; 8] = b"CAIRNFC1";

/// Orders paths the way the walk visits them: component by component.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: u8| if c == b'/' { 0u8 } else { c };
    a.iter().map(|&c| key(c)).cmp(b.iter().map(|&c| key(c)))
}

/// What the cache knows about a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Unchanged since the last backup.
    Hit {
        /// Its chunks.
        content: Vec<Id>,
        /// It had no extended attributes then and, as its ctime (which
        /// every change of one moves) is unchanged, it has none now.
        bare: bool,
    },
    /// Known, but changed (or not trusted): these were its chunks.
    Changed(Vec<Id>),
    /// Not in the cache.
    New,
}

#[derive(Debug)]
struct Record {
    path: Vec<u8>,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Vec<Id>,
    /// Bit 0: the file had no extended attributes. A trailing field:
    /// records written before it was added decode with none set, and
    /// earlier versions ignore it.
    flags: u64,
}

/// [`Record::flags`]: no extended attributes.
const BARE: u64 = 1;

impl Record {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.path)
            .varint(self.ino)
            .varint(self.size)
            .svarint(self.mtime.0)
            .svarint(self.mtime.1)
            .svarint(self.ctime.0)
            .svarint(self.ctime.1)
            .varint(self.content.len() as u64);
        for id in &self.content {
            w.id(id);
        }
        w.varint(self.flags);
    }
    fn decode(b: &[u8]) -> Option<Record> {
        let mut r = Reader::new(b, "files cache");
        let path = r.bytes().ok()?.to_vec();
        let ino = r.varint().ok()?;
        let size = r.varint().ok()?;
        let mtime = (r.svarint().ok()?, r.svarint().ok()?);
        let ctime = (r.svarint().ok()?, r.svarint().ok()?);
        let n = r.len(32).ok()?;
        let content = (0..n).map(|_| r.id()).collect::<Result<Vec<_>, _>>().ok()?;
        let flags = r.varint().unwrap_or(0);
        Some(Record {
            path,
            ino,
            size,
            mtime,
            ctime,
            content,
            flags,
        })
    }
}

/// A files cache being read (previous run) and written (this run).
pub struct FilesCache {
    old: Option<BufReader<File>>,
    next: Option<Record>,
    new: Option<(BufWriter<File>, PathBuf)>,
    path: PathBuf,
    buf: Vec<u8>,
    w: Writer,
    /// Whether a previous run's cache was there to compare with.
    had_old: bool,
    /// The previous cache ended in a damaged record.
    damaged: bool,
    vanished: crate::shrink::Tally,
}

impl FilesCache {
    /// Opens the cache at `path` for lookups and starts writing its
    /// successor. A missing or unreadable cache behaves as empty.
    pub fn open(path: &Path, write: bool) -> FilesCache {
        let mut old = File::open(path)
            .ok()
            .map(|f| BufReader::with_capacity(256 << 10, f));
        if let Some(r) = &mut old {
            let mut m = [0u8; 8];
            if r.read_exact(&mut m).is_err() || &m != MAGIC {
                old = None;
            }
        }
        let new = if write {
            path.parent()
                .and_then(|d| std::fs::create_dir_all(d).ok())
                .and_then(|_| {
                    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                    File::create(&tmp).ok().map(|f| {
                        let mut w = BufWriter::with_capacity(256 << 10, f);
                        let _ = w.write_all(MAGIC);
                        (w, tmp)
                    })
                })
        } else {
            None
        };
        let mut c = FilesCache {
            old,
            next: None,
            new,
            path: path.to_path_buf(),
            buf: Vec::new(),
            w: Writer::new(),
            had_old: false,
            damaged: false,
            vanished: crate::shrink::Tally::default(),
        };
        c.had_old = c.old.is_some();
        c.advance();
        c
    }

    fn advance(&mut self) {
        self.next = None;
        let Some(r) = &mut self.old else { return };
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).is_err() {
            self.old = None;
            return;
        }
        // The length is the file's: the buffer grows with the bytes that
        // are there, and a record claiming more than the rest of the file
        // ends the cache (it only costs a re-read).
        let n = u64::from(u32::from_le_bytes(len));
        self.buf.clear();
        if !r
            .by_ref()
            .take(n)
            .read_to_end(&mut self.buf)
            .is_ok_and(|got| got as u64 == n)
        {
            self.old = None;
            self.damaged = true;
            return;
        }
        match Record::decode(&self.buf) {
            Some(rec) => self.next = Some(rec),
            None => {
                self.old = None;
                self.damaged = true;
            }
        }
    }

    /// Looks a file up; calls must come in walk order.
    pub fn lookup(&mut self, path: &[u8], md: &std::fs::Metadata) -> Lookup {
        loop {
            let Some(rec) = &mut self.next else {
                return Lookup::New;
            };
            match cmp_paths(&rec.path, path) {
                Ordering::Less => {
                    self.vanished.add(&rec.path, rec.size);
                    self.advance();
                }
                Ordering::Greater => return Lookup::New,
                Ordering::Equal => {
                    let hit = rec.ino == md.ino()
                        && rec.size == md.size()
                        && rec.mtime == (md.mtime(), md.mtime_nsec())
                        && rec.ctime == (md.ctime(), md.ctime_nsec());
                    let content = std::mem::take(&mut rec.content);
                    let out = if hit {
                        Lookup::Hit {
                            content,
                            bare: rec.flags & BARE != 0,
                        }
                    } else {
                        Lookup::Changed(content)
                    };
                    self.advance();
                    return out;
                }
            }
        }
    }

    /// The files of the previous run that this one did not look up, once
    /// the walk is complete; `None` when there was no previous cache (or
    /// it was damaged part-way, so what it lists is not everything).
    pub fn vanished(&mut self) -> Option<crate::shrink::Tally> {
        while let Some(rec) = self.next.take() {
            self.vanished.add(&rec.path, rec.size);
            self.advance();
        }
        let t = std::mem::take(&mut self.vanished);
        (self.had_old && !self.damaged).then_some(t)
    }

    /// Records a file read (or reused) in this run; `bare`: it has no
    /// extended attributes.
    pub fn record(&mut self, path: &[u8], md: &std::fs::Metadata, content: &[Id], bare: bool) {
        self.write(path, md, content, false, bare);
    }

    /// Records a file that must be read again next time (its mtime is too
    /// recent to prove it unchanged); its chunks let the next run tell
    /// whether it really changed.
    pub fn record_untrusted(&mut self, path: &[u8], md: &std::fs::Metadata, content: &[Id]) {
        self.write(path, md, content, true, false);
    }

    fn write(
        &mut self,
        path: &[u8],
        md: &std::fs::Metadata,
        content: &[Id],
        untrusted: bool,
        bare: bool,
    ) {
        let Some((w, _)) = &mut self.new else { return };
        let rec = Record {
            path: path.to_vec(),
            ino: md.ino(),
            size: md.size(),
            mtime: if untrusted {
                (i64::MIN, 0)
            } else {
                (md.mtime(), md.mtime_nsec())
            },
            ctime: (md.ctime(), md.ctime_nsec()),
            content: content.to_vec(),
            flags: if bare { BARE } else { 0 },
        };
        self.w.buf.clear();
        rec.encode(&mut self.w);
        let ok = w
            .write_all(&(self.w.buf.len() as u32).to_le_bytes())
            .is_ok()
            && w.write_all(&self.w.buf).is_ok();
        if !ok {
            self.abandon();
        }
    }

    /// Replaces the old cache with the one written in this run.
    pub fn commit(mut self) {
        if let Some((mut w, tmp)) = self.new.take() {
            if w.flush().is_ok() && std::fs::rename(&tmp, &self.path).is_ok() {
                return;
            }
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Drops the cache being written (the backup did not complete).
    pub fn abandon(&mut self) {
        if let Some((_, tmp)) = self.new.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Drop for FilesCache {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order() {
        assert_eq!(cmp_paths(b"/a/b", b"/a.txt"), Ordering::Less);
        assert_eq!(cmp_paths(b"/a", b"/a/b"), Ordering::Less);
        assert_eq!(cmp_paths(b"/b", b"/a/z"), Ordering::Greater);
    }

    #[test]
    fn hit_changed_new() {
        let d = tempfile::tempdir().unwrap();
        let f1 = d.path().join("f1");
        let f2 = d.path().join("f2");
        std::fs::write(&f1, b"1").unwrap();
        std::fs::write(&f2, b"2").unwrap();
        let cp = d.path().join("cache/files");
        let (m1, m2) = (f1.metadata().unwrap(), f2.metadata().unwrap());
        let mut c = FilesCache::open(&cp, true);
        c.record(b"/x/f1", &m1, &[Id([1; 32])], true);
        c.record(b"/x/f2", &m2, &[Id([2; 32])], false);
        c.commit();
        std::fs::write(&f2, b"22").unwrap();
        let m2b = f2.metadata().unwrap();
        let mut c = FilesCache::open(&cp, false);
        assert_eq!(c.lookup(b"/x/f0", &m1), Lookup::New);
        assert_eq!(
            c.lookup(b"/x/f1", &m1),
            Lookup::Hit {
                content: vec![Id([1; 32])],
                bare: true
            }
        );
        assert_eq!(c.lookup(b"/x/f2", &m2b), Lookup::Changed(vec![Id([2; 32])]));
        assert_eq!(c.lookup(b"/x/f3", &m2b), Lookup::New);
    }

    #[test]
    fn untrusted_entries_are_read_again() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"1").unwrap();
        let m = f.metadata().unwrap();
        let cp = d.path().join("files");
        let mut c = FilesCache::open(&cp, true);
        c.record_untrusted(b"/f", &m, &[Id([1; 32])]);
        c.commit();
        let mut c = FilesCache::open(&cp, false);
        assert_eq!(c.lookup(b"/f", &m), Lookup::Changed(vec![Id([1; 32])]));
    }

    /// A record claiming 4 GiB in a file that holds a few bytes ends the
    /// cache: nothing that large is allocated, and the file is read again.
    #[test]
    fn hostile_record_length_is_not_allocated() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"1").unwrap();
        let m = f.metadata().unwrap();
        let cp = d.path().join("files");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(b"short");
        std::fs::write(&cp, &bytes).unwrap();
        let mut c = FilesCache::open(&cp, false);
        assert_eq!(c.lookup(b"/f", &m), Lookup::New);
        assert!(c.buf.capacity() < 1 << 20);
    }
}
