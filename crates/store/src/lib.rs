//! The keyless half of a Cairn repository: what a box, a prune or a
//! structural check reads and writes without any key.
//!
//! Index files and the blob table they load into, pack trailers, the
//! snapshot listing, garbage records, origin marks and the pack writer
//! that appends records already sealed. None of it can decrypt: this
//! crate does not depend on the keyed half (`cairn-repo`), so the crates
//! built on it alone (`cairn-maint`, `cairn-server`) cannot reach a
//! content key by construction.
//!
//! It also knows the rules that keep a repository consistent: packs are
//! published before the index files that list them, and index files
//! before the snapshot that needs them, so a snapshot is visible only
//! when everything it references is durable.

mod error;
pub mod garbage;
mod index;
mod indexfile;
mod packcheck;
mod packer;
pub mod snapshots;
mod table;

pub use error::{Error, Result};
pub use index::{Index, Location, PackInfo};
pub use indexfile::{
    LoadedIndex, load_index_tiered, read_config, read_index_file, read_pack_trailer,
    write_index_file,
};
pub use packcheck::{PackComparison, PackMismatch, compare_packs};
pub use packer::{PACK_TARGET, PackSink, SealedBlob, StagedPack, WriteStats};
pub use snapshots::{SnapshotInfo, list_snapshots, select_many, select_snapshot};
pub use table::{SpillSet, TableLimits};

pub use cairn_format::blob::BlobKind;
pub use cairn_format::{Id, Result as FormatResult};

/// This machine's host name, as snapshots, leases and the box's
/// certificate record it: the kernel's, else `$HOSTNAME`, else
/// `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// Current time in ns since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The tag of a principal (token or SSH key name) in origin mark names
/// (`docs/format.md`, "Origin marks"): the first 8 bytes of
/// BLAKE3(`cairn origin` ‖ 0x00 ‖ name).
pub fn origin_tag(principal: &str) -> [u8; 8] {
    let mut b = b"cairn origin\0".to_vec();
    b.extend_from_slice(principal.as_bytes());
    cairn_crypto::plain_hash(&b)[..8]
        .try_into()
        .expect("8 bytes")
}
