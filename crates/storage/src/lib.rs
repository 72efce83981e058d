//! Where a repository's objects live.
//!
//! The [`Storage`] trait is deliberately small (get, get a range, create,
//! list, delete) so that a local directory, an S3 bucket and the Cairn
//! server can all implement it. Objects are never overwritten: `put`
//! creates or, for content-addressed kinds whose name is the hash of their
//! bytes, accepts an existing object of that name as already written.

mod atomic;
mod error;
pub mod faulty;
mod local;
mod memory;
pub mod s3;

pub use atomic::{Existing, atomic_write, create_dir_durable};
pub use error::{Error, Result};
pub use local::LocalStorage;
pub use memory::MemoryStorage;
pub use s3::S3Storage;

use std::path::Path;

/// The kinds of objects in a repository; each lives in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The single `config` object.
    Config,
    /// Key files.
    Key,
    /// Pack files.
    Pack,
    /// Index files.
    Index,
    /// Snapshot files.
    Snapshot,
    /// Lease files.
    Lock,
    /// Garbage records: packs a prune condemned (format 1.1).
    Garbage,
    /// Protection marks, named by snapshot ID (format 1.1).
    Protect,
    /// Receipts: when a server received a snapshot (format 1.1).
    Receipt,
    /// Origin marks: which principal uploaded a pack (format 1.2).
    Origin,
}

impl Kind {
    /// Directory name of the kind in a local repository.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Config => "",
            Kind::Key => "keys",
            Kind::Pack => "data",
            Kind::Index => "index",
            Kind::Snapshot => "snapshots",
            Kind::Lock => "locks",
            Kind::Garbage => "garbage",
            Kind::Protect => "protected",
            Kind::Receipt => "receipts",
            Kind::Origin => "origins",
        }
    }

    /// Whether names of this kind are the hash of their bytes, so an
    /// existing object of the same name already holds the same bytes.
    pub fn content_addressed(self) -> bool {
        matches!(
            self,
            Kind::Pack | Kind::Index | Kind::Snapshot | Kind::Garbage
        )
    }
}

/// A listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Object name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// A place that stores repository objects.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    /// Reads a whole object.
    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; fails if the object is shorter.
    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Like [`Storage::get_range`], into a caller's buffer (replacing its
    /// contents), so hot loops reuse one allocation.
    fn get_range_into(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        *buf = self.get_range(kind, name, offset, len)?;
        Ok(())
    }
    /// Size of an object.
    fn size(&self, kind: Kind, name: &str) -> Result<u64>;
    /// Creates an object atomically and durably. Never overwrites: returns
    /// [`Error::AlreadyExists`] unless the kind is content-addressed.
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()>;
    /// Like [`Storage::put`], taking the bytes from a staged local file,
    /// which is consumed.
    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> Result<()>;
    /// Lists every object of a kind.
    fn list(&self, kind: Kind) -> Result<Vec<ObjectInfo>>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, kind: Kind, name: &str) -> Result<()>;
    /// A local directory for staging files before `put_file`, on the same
    /// filesystem where possible so that publishing is a rename.
    fn staging_dir(&self) -> Result<std::path::PathBuf>;
    /// Prepares an empty location for a new repository (directories on a
    /// local disk); refuses a location that holds something else.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }
    /// How many reads in flight pay off: 1 where a read costs no more
    /// than the work on what it returns (a local disk: the cores decide),
    /// more where each one waits on a network round trip.
    fn read_concurrency(&self) -> usize {
        1
    }
    /// Hints that `len` bytes at `offset` are read next, so that a store
    /// which can fetch them in the background does while the caller works
    /// on what it has (a local disk: the kernel reads them ahead). Never
    /// fails; the default does nothing.
    fn prefetch(&self, _kind: Kind, _name: &str, _offset: u64, _len: u64) {}
    /// Reads exactly `len` bytes at `offset` into `buf`, bypassing any
    /// cache the storage keeps (a local disk: the page cache), for a
    /// reader that reads each stretch once. Returns where in `buf` the
    /// bytes start: past it and after them `buf` may hold anything. The
    /// default reads as [`read_exact_range`] does.
    fn get_range_uncached(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        read_exact_range(self, kind, name, offset, len, buf)?;
        Ok(0)
    }
    /// What a user should know about how this storage writes, found out
    /// by [`Storage::prepare`] (an S3 store that lets the last writer
    /// win); `None` when there is nothing to say.
    fn write_semantics(&self) -> Option<String> {
        None
    }
    /// Removes staging files that crashed runs left, when they have not
    /// been touched for `min_age` (a live writer's files are younger).
    fn clean_staging(&self, min_age: std::time::Duration) {
        let _ = min_age;
    }
}

/// Reads exactly `len` bytes at `offset` into `buf`: a store that hands
/// back fewer or more (a remote one, a hostile one) is an
/// [`Error::Short`], never a buffer a reader would index past.
pub fn read_exact_range<S: Storage + ?Sized>(
    st: &S,
    kind: Kind,
    name: &str,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    st.get_range_into(kind, name, offset, len, buf)?;
    if buf.len() as u64 != len {
        return Err(Error::Short {
            kind,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// [`read_exact_range`] into a new buffer.
pub fn read_range(
    st: &dyn Storage,
    kind: Kind,
    name: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_exact_range(st, kind, name, offset, len, &mut buf)?;
    Ok(buf)
}

/// Checks an object name: hex or `[a-z0-9-]`, no separators, bounded.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A random name for temporary files.
pub(crate) fn temp_name() -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..12].copy_from_slice(&t.to_le_bytes()[..12]);
    }
    format!("{}-{}.tmp", std::process::id(), hex::encode(b))
}
