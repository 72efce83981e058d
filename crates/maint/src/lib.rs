//! Maintenance that the storage side runs without any key: it reads only
//! plaintext (snapshot envelopes, pack trailers, index files, record
//! headers), so a backup box can decide what to keep and collect garbage
//! while holding nothing that reveals content (`docs/design.md`, "The
//! storage side needs no secret").

pub mod copy;
pub mod duration;
mod error;
pub mod forget;
pub mod graph;
pub mod lease;
pub mod protect;
pub mod prune;
pub mod repair;
pub mod retention;
pub mod times;
pub mod units;
pub mod usage;
pub mod verify;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};
