//! `cairn daemon`: one scheduler and one job model for everything that
//! should happen without a human: backups of this machine, pulls of
//! machines that come and go, command output, the box's maintenance
//! (retention, prune, check, verify) and restore drills. A box is a
//! daemon that also serves; the server crate stays keyless, and this one
//! holds a key only where the config gives it one.
//!
//! [`config`] reads `cairn.toml`; [`schedule`] says when each job is due.

pub mod alerts;
pub mod announce;
pub mod boxed;
pub mod config;
pub mod drill;
pub mod forge_paging;
pub mod git;
pub mod guards;
pub mod hooks;
pub mod maint;
pub mod notify;
pub mod open;
pub mod paths;
pub mod probe;
pub mod pull;
pub mod run;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod status;
pub mod tail;
pub mod web;

/// Starts the box with its scheduler; see [`boxed::start`].
pub fn start(
    config: cairn_server::config::Config,
) -> cairn_server::Result<cairn_server::listener::Running> {
    boxed::start(config)
}
