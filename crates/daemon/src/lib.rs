//! `cairn server`: the backup box over HTTPS (issue 5).
//!
//! Roles are enforced by [`cairn_server::guarded::GuardedStorage`], the
//! same guard `cairn serve --stdio` uses over SSH; this crate adds what a
//! long-running network service needs around it: a config file
//! ([`config`]), tokens ([`tokens`]), certificates that reload
//! ([`certs`]), the HTTP API ([`api`]) and its connection loop
//! ([`server`]) with timeouts and a failed-login limit ([`limiter`]),
//! scheduled jobs ([`jobs`]), `/metrics` ([`metrics`]) and a status page
//! ([`status`]).

pub mod alerts;
pub mod api;
pub mod certs;
pub mod config;
mod error;
pub mod groups;
pub mod jobs;
pub mod limiter;
pub mod metrics;
pub mod server;
mod state;
pub mod status;
pub mod tokens;

pub use error::{Error, Result};

#[cfg(test)]
mod tests;
