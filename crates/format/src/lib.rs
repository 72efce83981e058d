//! Byte layouts of everything Cairn stores, with no I/O and no keys.
//!
//! Each type names its section of `docs/format.md`; the test vectors in
//! `docs/vectors/` are checked by `tests/vectors.rs`, so the document and
//! this code cannot drift apart. Decoders take untrusted bytes: they return
//! [`Error`] values and never panic (fuzzed under `fuzz/`).

pub mod blob;
pub mod config;
mod error;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod maint;
pub mod pack;
pub mod snapshot;
pub mod tree;
pub mod wire;

pub use error::{Error, Result};
pub use id::Id;

/// Major format version written by this build. Readers refuse a larger one.
pub const FORMAT_MAJOR: u32 = 1;
/// Minor format version: additions an older reader of the same major can
/// safely ignore (new optional fields, new object kinds). 1 added leases,
/// garbage records and protection marks; 2 added origin marks
/// (`docs/format.md`, "Versions").
pub const FORMAT_MINOR: u32 = 2;

#[cfg(test)]
mod proptests;
