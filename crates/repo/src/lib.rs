//! The keyed half of a Cairn repository over any
//! [`cairn_storage::Storage`]: keys and roles, sealing and reading blobs,
//! opening a repository.
//!
//! The keyless half (index files, trailers, snapshot listing, garbage
//! records, the pack writer) is `cairn-store`; its items are re-exported
//! here so that code holding a key needs one crate.

mod blobs;
mod blocks;
pub mod keys;
mod repo;

pub use blobs::{BlobSealer, DEFAULT_LEVEL};
pub use keys::{KeyMaterial, KeySource};
pub use repo::{BlobReader, InitOptions, Repo, Session, init_options, unlock_key};

pub use cairn_store::{
    BlobKind, Error, FormatResult, Id, Index, LoadedIndex, Location, PackComparison, PackInfo,
    PackMismatch, PackSink, Result, SealedBlob, SnapshotInfo, SpillSet, StagedPack, TableLimits,
    WriteStats, compare_packs, garbage, hostname, load_index_tiered, now_ns, origin_tag,
    read_config, read_index_file, read_pack_trailer, select_many, select_snapshot, snapshots,
    write_index_file,
};
