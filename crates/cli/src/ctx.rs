//! Where the repository is and how to open it: defaults, passphrases,
//! key files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cairn_repo::{KeySource, Repo};
use cairn_storage::Storage;

use crate::args::Global;

/// Shared state of one command run.
pub struct Ctx {
    pub g: Global,
}

use cairn_daemon::paths::xdg;

impl Ctx {
    /// The repository location as given, or the default one.
    pub fn repo_location(&self) -> String {
        match &self.g.repo {
            Some(r) => r.clone(),
            None => default_repo().display().to_string(),
        }
    }

    /// Whether no repository was named (the default one is used).
    pub fn is_default_repo(&self) -> bool {
        self.g.repo.is_none()
    }

    /// The storage behind the location.
    pub fn storage(&self) -> Result<Arc<dyn Storage>> {
        self.storage_at(&self.repo_location())
    }

    /// The storage at `loc`, reached with this run's options.
    pub fn storage_at(&self, loc: &str) -> Result<Arc<dyn Storage>> {
        self.storage_with_token(loc, self.g.token_file.as_deref())
    }

    /// [`Ctx::storage_at`] with a box's token from `token_file` (else
    /// $CAIRN_TOKEN): a copy between two boxes holds a token for each.
    pub fn storage_with_token(
        &self,
        loc: &str,
        token_file: Option<&std::path::Path>,
    ) -> Result<Arc<dyn Storage>> {
        let loc = loc.to_string();
        let token = if loc.starts_with("https://") || loc.starts_with("http://") {
            Some(self.token(&loc, token_file)?)
        } else {
            None
        };
        let access = cairn_remote::open::Access {
            token,
            fingerprint: self.g.server_fingerprint.clone(),
            known_servers: xdg("XDG_CONFIG_HOME", ".config")
                .join("cairn")
                .join("known_servers"),
            staging: xdg("XDG_CACHE_HOME", ".cache")
                .join("cairn")
                .join("staging"),
            retry_for: self.g.retry_for,
            ssh: std::env::var("CAIRN_SSH").unwrap_or_else(|_| "ssh".into()),
            remote_cairn: self.g.remote_cairn.clone(),
        };
        cairn_remote::open::open(&loc, &access).map_err(anyhow::Error::msg)
    }

    /// The box's token from --token-file or $CAIRN_TOKEN.
    fn token(&self, loc: &str, token_file: Option<&std::path::Path>) -> Result<String> {
        if let Some(f) = token_file {
            let t = std::fs::read(f)
                .with_context(|| format!("cannot read token file {}", f.display()))?;
            return Ok(String::from_utf8(trim_newline(t))
                .with_context(|| format!("token file {} is not text", f.display()))?
                .trim()
                .to_string());
        }
        if let Ok(t) = std::env::var("CAIRN_TOKEN") {
            return Ok(t.trim().to_string());
        }
        bail!(
            "{loc} needs a token: set CAIRN_TOKEN or use --token-file (the box's admin makes one with `cairn server token add`)"
        )
    }

    /// The passphrase from --password-file or $CAIRN_PASSWORD, if any.
    pub fn given_passphrase(&self) -> Result<Option<Vec<u8>>> {
        if let Some(f) = &self.g.password_file {
            let s = std::fs::read(f)
                .with_context(|| format!("cannot read password file {}", f.display()))?;
            return Ok(Some(trim_newline(s)));
        }
        if let Some(p) = std::env::var_os("CAIRN_PASSWORD") {
            return Ok(Some(p.into_encoded_bytes()));
        }
        Ok(None)
    }

    /// Asks on the terminal, when there is one.
    pub fn prompt(&self, what: &str, confirm: bool) -> Result<Option<Vec<u8>>> {
        if !std::io::stdin().is_terminal() {
            return Ok(None);
        }
        let p = rpassword::prompt_password(format!("{what}: "))?;
        if confirm {
            let again = rpassword::prompt_password("enter it again: ")?;
            if again != p {
                bail!("the passphrases do not match; nothing was changed");
            }
        }
        Ok(Some(p.into_bytes()))
    }

    /// Opens the repository with whatever key is available.
    pub fn open(&self) -> Result<Repo> {
        let storage = self.storage()?;
        let passphrase = self.given_passphrase()?;
        self.open_storage(storage, self.g.key_file.as_deref(), passphrase)
    }

    /// Opens the repository in `storage` with the key file `key_file` or
    /// the passphrase `passphrase`, else the key kept for it on this
    /// machine, else a passphrase asked for.
    pub fn open_storage(
        &self,
        storage: Arc<dyn Storage>,
        key_file: Option<&Path>,
        passphrase: Option<Vec<u8>>,
    ) -> Result<Repo> {
        let config = cairn_repo::read_config(&*storage)?;
        let id = hex::encode(config.repo_id);
        let source = if let Some(k) = key_file {
            KeySource::File {
                path: k.to_path_buf(),
                passphrase,
            }
        } else if let Some(p) = passphrase {
            KeySource::Passphrase(p)
        } else if default_key_path(&id).exists() {
            KeySource::File {
                path: default_key_path(&id),
                passphrase: None,
            }
        } else if let Some(p) =
            self.prompt(&format!("passphrase of {}", storage.location()), false)?
        {
            KeySource::Passphrase(p)
        } else {
            bail!(
                "the repository at {} needs a key: set CAIRN_PASSWORD, use --password-file, or --key-file",
                storage.location()
            );
        };
        let limits = index_limits();
        match Repo::open_with(storage.clone(), &source, limits.clone()) {
            // A repository made without passphrase keeps its key in the
            // default key file: use it even when a passphrase is set.
            Err(cairn_repo::Error::NoKey(_))
                if matches!(source, KeySource::Passphrase(_)) && default_key_path(&id).exists() =>
            {
                Ok(Repo::open_with(
                    storage,
                    &KeySource::File {
                        path: default_key_path(&id),
                        passphrase: None,
                    },
                    limits,
                )?)
            }
            r => Ok(r?),
        }
    }

    /// The storage of an existing repository for maintenance that needs no
    /// key (forget, prune, protect). No key material is read unless one
    /// is named or kept for this repository on this machine; then a
    /// put-only key is refused, because a source must not decide what the
    /// repository keeps.
    pub fn open_keyless(&self, action: &'static str) -> Result<Arc<dyn Storage>> {
        use cairn_format::keyfile::Role;
        let storage = self.storage()?;
        let config = cairn_repo::read_config(&*storage)?;
        let default = default_key_path(&hex::encode(config.repo_id));
        let refuse = |role: Role, what: &str| -> Result<()> {
            if role == Role::PutOnly {
                bail!(
                    "the key {what} is put-only: a source cannot {action}. Run this on the backup box with the owner key, or with no key at all"
                );
            }
            Ok(())
        };
        let passphrase = self.given_passphrase()?;
        if let Some(k) = &self.g.key_file {
            let kf = cairn_repo::keys::read_key_file(k)?;
            refuse(kf.role, &k.display().to_string())?;
            if let Some(p) = passphrase {
                let source = KeySource::File {
                    path: k.clone(),
                    passphrase: Some(p),
                };
                cairn_repo::unlock_key(&*storage, &source)?;
            }
            return Ok(storage);
        }
        if let Some(p) = passphrase {
            match cairn_repo::unlock_key(&*storage, &KeySource::Passphrase(p)) {
                Ok(km) => {
                    refuse(km.role, "opened with the passphrase")?;
                    return Ok(storage);
                }
                // The repository keeps no passphrase key: its key, if any
                // is here, is the default key file.
                Err(cairn_repo::Error::NoKey(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if default.exists() {
            let kf = cairn_repo::keys::read_key_file(&default)?;
            refuse(kf.role, &default.display().to_string())?;
        }
        Ok(storage)
    }

    /// Who is running a maintenance job, for leases and garbage records.
    pub fn holder(&self) -> String {
        format!(
            "{}@{} pid {}",
            std::env::var("USER").unwrap_or_else(|_| "?".into()),
            hostname(),
            std::process::id()
        )
    }

    /// Index memory limits, as for every command.
    pub fn index_limits(&self) -> cairn_repo::TableLimits {
        index_limits()
    }

    /// Where this machine keeps what it must not forget about the
    /// repository behind `storage` (the rollback records):
    /// `$XDG_STATE_HOME/cairn/<repo-id>`, not the cache a user may empty.
    /// Records an earlier version kept in the cache are moved here.
    pub fn state_dir_of(&self, storage: &dyn Storage) -> Result<PathBuf> {
        let id = hex::encode(cairn_repo::read_config(storage)?.repo_id);
        state_dir(&id)
    }

    /// [`Ctx::state_dir_of`] for an open repository.
    pub fn state_dir(&self, repo: &Repo) -> Result<PathBuf> {
        state_dir(&repo.id_hex())
    }

    /// Where this repository's local cache lives.
    pub fn cache_dir(&self, repo: &Repo) -> PathBuf {
        xdg("XDG_CACHE_HOME", ".cache")
            .join("cairn")
            .join(repo.id_hex())
    }

    /// Whether to draw progress bars.
    pub fn progress(&self) -> bool {
        !self.g.json && !self.g.quiet && !self.g.no_progress && std::io::stderr().is_terminal()
    }
}

fn state_dir(repo_id: &str) -> Result<PathBuf> {
    let dir = xdg("XDG_STATE_HOME", ".local/state")
        .join("cairn")
        .join(repo_id);
    let legacy = xdg("XDG_CACHE_HOME", ".cache").join("cairn").join(repo_id);
    let Ok(rd) = std::fs::read_dir(&legacy) else {
        return Ok(dir);
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("last-") {
            continue;
        }
        let to = dir.join(&name);
        if !to.exists() {
            let bytes = std::fs::read(e.path())
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            cairn_storage::atomic_write(&to, &bytes, 0o600, cairn_storage::Existing::Keep)?;
        }
        std::fs::remove_file(e.path())
            .with_context(|| format!("cannot remove {}", e.path().display()))?;
    }
    Ok(dir)
}

/// `$XDG_DATA_HOME/cairn/repo`.
pub fn default_repo() -> PathBuf {
    data_dir().join("repo")
}

/// `$XDG_DATA_HOME/cairn`.
pub fn data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share").join("cairn")
}

/// Where an owner key without passphrase is kept.
pub fn default_key_path(repo_id: &str) -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config")
        .join("cairn")
        .join("keys")
        .join(format!("{repo_id}.key"))
}

/// The directory the unprotected key of a new repository goes to.
pub fn key_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("cairn").join("keys")
}

pub fn trim_newline(mut s: Vec<u8>) -> Vec<u8> {
    while s.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        s.pop();
    }
    s
}

/// Reads a new passphrase from a file, the environment, or a prompt.
pub fn read_new_passphrase(ctx: &Ctx, file: Option<&Path>) -> Result<Option<Vec<u8>>> {
    if let Some(f) = file {
        let s = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        return Ok(Some(trim_newline(s)));
    }
    if let Some(p) = std::env::var_os("CAIRN_NEW_PASSWORD") {
        return Ok(Some(p.into_encoded_bytes()));
    }
    ctx.prompt("new passphrase", true)
}

pub use cairn_repo::hostname;

/// How much of the index stays in memory: past `CAIRN_INDEX_MEMORY` blobs
/// (default 65536, about 3.5 MiB) it moves to a temporary file under the
/// cache directory, which is on disk where `/tmp` may be RAM.
fn index_limits() -> cairn_repo::TableLimits {
    let mut l = cairn_repo::TableLimits::default();
    if let Some(n) = std::env::var("CAIRN_INDEX_MEMORY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        l.mem_entries = n;
        l.run_entries = l.run_entries.min(n.max(1024));
    }
    let dir = xdg("XDG_CACHE_HOME", ".cache").join("cairn");
    if std::fs::create_dir_all(&dir).is_ok() {
        l.dir = Some(dir);
    }
    l
}
