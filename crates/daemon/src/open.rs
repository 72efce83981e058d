//! Opening a `[repository.NAME]` of the config: its guards first (the
//! disk must be mounted, the repository must exist and be the one named),
//! then its storage and, for jobs that write or read contents, its key.
//!
//! The daemon never creates a repository: a missing one is an error that
//! says how to make it, so a backup never lands in the empty directory of
//! a disk that is not plugged in.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_repo::{KeySource, Repo};
use cairn_storage::Storage;

use crate::config::Repository;
use crate::paths::xdg;

fn read_secret(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    let mut s = std::fs::read(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    while s.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        s.pop();
    }
    Ok(s)
}

/// Refuses a repository whose disk is not mounted.
pub fn check_mount(r: &Repository) -> Result<(), String> {
    if let (Some(rule), Some(path)) = (&r.require_mount, r.local_path()) {
        crate::guards::check_mount(path, rule, &format!("repository {}", r.name))?;
    }
    Ok(())
}

/// The storage of `r`, after its guards, with its config read.
pub fn storage(r: &Repository, retry_for: Duration) -> Result<Arc<dyn Storage>, String> {
    check_mount(r)?;
    let token = match &r.token_file {
        Some(f) => Some(
            String::from_utf8(read_secret(f, "token file")?)
                .map_err(|_| format!("the token file {} is not text", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let access = cairn_remote::open::Access {
        token,
        fingerprint: r.server_fingerprint.clone(),
        known_servers: xdg("XDG_CONFIG_HOME", ".config")
            .join("cairn")
            .join("known_servers"),
        staging: xdg("XDG_CACHE_HOME", ".cache")
            .join("cairn")
            .join("staging"),
        retry_for,
        ssh: std::env::var("CAIRN_SSH").unwrap_or_else(|_| "ssh".into()),
        remote_cairn: "cairn".into(),
    };
    let storage = cairn_remote::open::open(&r.location, &access)
        .map_err(|e| format!("repository {}: {e}", r.name))?;
    let config = match cairn_repo::read_config(&*storage) {
        Ok(c) => c,
        Err(cairn_repo::Error::NotARepository(_)) => {
            return Err(format!(
                "repository {}: {} holds no Cairn repository; the daemon never creates one, so run `cairn init --repo {}` once (on the right disk)",
                r.name, r.location, r.location
            ));
        }
        Err(e) => return Err(format!("repository {}: {e}", r.name)),
    };
    if let Some(want) = &r.repo_id {
        let got = hex::encode(config.repo_id);
        if &got != want {
            return Err(format!(
                "repository {}: {} holds repository {got}, not {want} (repo_id in the config): another disk is mounted there; nothing was written",
                r.name, r.location
            ));
        }
    }
    Ok(storage)
}

/// Where an owner key without passphrase is kept, as `cairn init` puts it.
fn default_key(repo_id: &str) -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config")
        .join("cairn")
        .join("keys")
        .join(format!("{repo_id}.key"))
}

/// Index memory limits: past them the index spills to `scratch`.
pub fn limits(scratch: &std::path::Path) -> cairn_repo::TableLimits {
    cairn_repo::TableLimits {
        dir: std::fs::create_dir_all(scratch)
            .ok()
            .map(|()| scratch.to_path_buf()),
        ..cairn_repo::TableLimits::default()
    }
}

/// `r` opened with its key: `key_file` (with `password_file` as its
/// passphrase, if any), else `password_file`, else the key file `cairn
/// init` left on this machine.
pub fn repo(
    r: &Repository,
    storage: Arc<dyn Storage>,
    scratch: &std::path::Path,
) -> Result<Repo, String> {
    let id = hex::encode(
        cairn_repo::read_config(&*storage)
            .map_err(|e| e.to_string())?
            .repo_id,
    );
    let pass = r
        .password_file
        .as_deref()
        .map(|f| read_secret(f, "password file"))
        .transpose()?;
    let source = match (&r.key_file, pass) {
        (Some(k), p) => KeySource::File {
            path: k.clone(),
            passphrase: p,
        },
        (None, Some(p)) => KeySource::Passphrase(p),
        (None, None) if default_key(&id).exists() => KeySource::File {
            path: default_key(&id),
            passphrase: None,
        },
        (None, None) => {
            return Err(format!(
                "repository {} needs a key: set password_file or key_file in its [repository.{}] section",
                r.name, r.name
            ));
        }
    };
    Repo::open_with(storage, &source, limits(scratch))
        .map_err(|e| format!("repository {}: {e}", r.name))
}

/// Where this machine keeps what it must remember about a repository
/// (rollback records), shared with the command line.
pub fn machine_state(repo: &Repo) -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state")
        .join("cairn")
        .join(repo.id_hex())
}

/// The files cache directory of a repository, shared with the command
/// line so a manual backup and a scheduled one reuse each other's work.
pub fn cache_dir(repo: &Repo) -> PathBuf {
    xdg("XDG_CACHE_HOME", ".cache")
        .join("cairn")
        .join(repo.id_hex())
}
