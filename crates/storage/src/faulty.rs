//! A storage that misbehaves once, at a chosen call: it fails, comes back
//! short, or hands back hostile bytes. Tests run an operation with the
//! fault at every call in turn and hold it to its promises (no panic, no
//! wrong bytes restored, damage reported, earlier snapshots intact), the
//! way a flaky disk, a cut connection or a malicious server would test it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Kind, ObjectInfo, Result, Storage};

/// What goes wrong at the chosen call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with an I/O error.
    Fail,
    /// A read returns fewer bytes than it should (a listing loses its
    /// last entry, a size is one less); a write fails.
    Short,
    /// A read returns the right number of bytes, each one altered (a
    /// listing gains an entry that does not exist, a size is huge); a
    /// write fails.
    Hostile,
    /// The call panics, as a bug in a reader would: the operation must
    /// end with the panic, never hang.
    Panic,
}

/// Which call was hit, for a test to reason about what it may expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The operation: `get`, `get_range`, `size`, `put`, `list`, `delete`.
    pub op: &'static str,
    /// The kind of object.
    pub kind: Kind,
}

/// Wraps a storage; call number `at` (counted from 1 over every method
/// but `location`, `staging_dir` and `clean_staging`) gets `fault`.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    fault: Fault,
    at: u64,
    calls: AtomicU64,
    /// Bytes of packs handed out by ranged reads.
    pack_bytes: AtomicU64,
    hit: Mutex<Option<Hit>>,
    read_concurrency: usize,
}

impl FaultyStorage {
    /// A wrapper whose call `at` misbehaves (0: none does).
    pub fn new(inner: Arc<dyn Storage>, fault: Fault, at: u64) -> FaultyStorage {
        FaultyStorage {
            inner,
            fault,
            at,
            calls: AtomicU64::new(0),
            pack_bytes: AtomicU64::new(0),
            hit: Mutex::new(None),
            read_concurrency: 1,
        }
    }

    /// Claims that `n` reads at once pay, as a remote store does, so that
    /// readers take their paths for such stores (the shared block cache).
    pub fn reading_like_a_remote(mut self, n: usize) -> FaultyStorage {
        self.read_concurrency = n;
        self
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Bytes of packs read by ranged reads so far, for a test of how much
    /// a reader reads.
    pub fn pack_bytes_read(&self) -> u64 {
        self.pack_bytes.load(Ordering::SeqCst)
    }

    /// The call the fault hit, if it came.
    pub fn hit(&self) -> Option<Hit> {
        self.hit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether this call is the one: counts it, and records the hit.
    fn this_one(&self, op: &'static str, kind: Kind) -> Option<Fault> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let hit = (n == self.at).then(|| {
            *self.hit.lock().unwrap_or_else(|p| p.into_inner()) = Some(Hit { op, kind });
            self.fault
        });
        if hit == Some(Fault::Panic) {
            panic!("injected panic at call {n} ({op} {kind:?})");
        }
        hit
    }

    fn failure(&self, op: &'static str) -> Error {
        Error::io(
            op,
            Path::new("faulty storage"),
            std::io::Error::other(format!("injected failure at call {}", self.at)),
        )
    }
}

/// `data` altered as a hostile store would: same length, every byte
/// changed.
fn hostile(mut data: Vec<u8>) -> Vec<u8> {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= 0x5a ^ (i as u8);
        if *b == 0 {
            *b = 0xff;
        }
    }
    data
}

fn altered(fault: Fault, mut data: Vec<u8>) -> Vec<u8> {
    match fault {
        Fault::Short => {
            data.truncate(data.len() / 2);
            data
        }
        _ => hostile(data),
    }
}

impl Storage for FaultyStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        match self.this_one("get", kind) {
            Some(Fault::Fail) => Err(self.failure("get")),
            Some(f) => Ok(altered(f, self.inner.get(kind, name)?)),
            None => self.inner.get(kind, name),
        }
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.this_one("get_range", kind) {
            Some(Fault::Fail) => Err(self.failure("get")),
            Some(f) => Ok(altered(f, self.inner.get_range(kind, name, offset, len)?)),
            None => {
                let got = self.inner.get_range(kind, name, offset, len)?;
                if kind == Kind::Pack {
                    self.pack_bytes
                        .fetch_add(got.len() as u64, Ordering::SeqCst);
                }
                Ok(got)
            }
        }
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        match self.this_one("size", kind) {
            Some(Fault::Fail) => Err(self.failure("size")),
            Some(Fault::Short) => Ok(self.inner.size(kind, name)?.saturating_sub(1)),
            Some(Fault::Hostile | Fault::Panic) => Ok(u64::MAX - 7),
            None => self.inner.size(kind, name),
        }
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        match self.this_one("put", kind) {
            Some(_) => Err(self.failure("put")),
            None => self.inner.put(kind, name, data),
        }
    }

    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> Result<()> {
        match self.this_one("put", kind) {
            Some(_) => {
                let _ = std::fs::remove_file(file);
                Err(self.failure("put"))
            }
            None => self.inner.put_file(kind, name, file),
        }
    }

    fn list(&self, kind: Kind) -> Result<Vec<ObjectInfo>> {
        match self.this_one("list", kind) {
            Some(Fault::Fail) => Err(self.failure("list")),
            Some(Fault::Short) => {
                let mut v = self.inner.list(kind)?;
                v.pop();
                Ok(v)
            }
            Some(Fault::Hostile | Fault::Panic) => {
                let mut v = self.inner.list(kind)?;
                v.push(ObjectInfo {
                    name: "ff".repeat(32),
                    size: u64::MAX - 7,
                });
                Ok(v)
            }
            None => self.inner.list(kind),
        }
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        match self.this_one("delete", kind) {
            Some(_) => Err(self.failure("delete")),
            None => self.inner.delete(kind, name),
        }
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        self.inner.staging_dir()
    }

    fn prepare(&self) -> Result<()> {
        self.inner.prepare()
    }

    fn read_concurrency(&self) -> usize {
        self.read_concurrency
    }

    fn clean_staging(&self, min_age: std::time::Duration) {
        self.inner.clean_staging(min_age)
    }
}
