//! The backup box: a storage that sources reach over the network and
//! that decides, in one place, what each of them may do.
//!
//! [`policy`] says which operations a role allows on which kinds of
//! objects; [`guarded::GuardedStorage`] applies it to every call and
//! checks what is uploaded (names are hashes of the bytes, snapshots
//! belong to the caller's groups), so HTTPS and SSH transports share one
//! enforcement point instead of each growing its own. `cairn serve
//! --stdio` ([`serve`]) is that guard over SSH; `cairn server` is the
//! rest of this crate: a config file ([`config`]), tokens ([`tokens`]),
//! certificates that reload ([`certs`]), the HTTP API ([`api`]) and its
//! connection loop ([`listener`]) with timeouts and a failed-login limit
//! ([`limiter`]), scheduled jobs ([`jobs`]), `/metrics` ([`metrics`])
//! and a status page ([`status`]).

pub mod alerts;
pub mod api;
pub mod certs;
pub mod config;
mod error;
pub mod groups;
pub mod guarded;
pub mod jobs;
pub mod limiter;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod serve;
mod state;
pub mod status;
pub mod tokens;

pub use error::{Error, Result};
