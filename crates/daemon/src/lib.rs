//! `cairn server` with its jobs: the box's server (`cairn-server`) and,
//! in its runtime, the scheduler that runs retention, prune, the
//! structural check and verify on each repository ([`jobs`]). Like the
//! server, it holds no key that reads.

pub mod jobs;
pub mod notify;

/// Starts the box with its scheduler; see [`cairn_server::listener::start`].
pub fn start(
    config: cairn_server::config::Config,
) -> cairn_server::Result<cairn_server::listener::Running> {
    cairn_server::listener::start_with(config, jobs::spawn)
}
