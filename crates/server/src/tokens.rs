//! Access tokens: who may do what on which repository.
//!
//! A token is 32 random bytes shown once, as `cairn_` and hex, when it is
//! made; the server keeps only its BLAKE3 hash, so a copy of the token
//! file lets no one in. The file (`STATE/tokens.json`, mode 0600) is
//! re-read when it changes, so `cairn server token revoke` takes effect
//! at the next request of a running server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::policy::{GroupPattern, Role};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One token as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// Unique name, logged with everything the token does.
    pub name: String,
    /// `admin`, `put` or `read`.
    pub role: String,
    /// The repository it opens.
    pub repo: String,
    /// Put tokens: the groups whose snapshots it may write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// BLAKE3 of the token, hex.
    pub hash: String,
    /// When it was made (seconds since the epoch).
    pub created: i64,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

impl TokenRecord {
    /// The role it grants.
    pub fn role(&self) -> std::result::Result<Role, String> {
        match (self.role.as_str(), &self.group) {
            ("admin", None) => Ok(Role::Admin),
            ("read", None) => Ok(Role::Read),
            ("put", g) => Ok(Role::Put(g.as_deref().map(GroupPattern::new).transpose()?)),
            ("admin" | "read", Some(_)) => Err("a group pattern applies to put tokens only".into()),
            (r, _) => Err(format!("unknown role {r:?}; use admin, put or read")),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

/// Why a presented token does not let its bearer in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No such token.
    Unknown,
    /// Revoked at that time.
    Revoked(String, i64),
    /// Expired at that time.
    Expired(String, i64),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unknown => write!(f, "unknown token: check CAIRN_TOKEN or --token-file"),
            Rejection::Revoked(n, t) => write!(
                f,
                "token {n:?} was revoked at {}: ask the box's admin for a new one",
                show_time(*t)
            ),
            Rejection::Expired(n, t) => write!(
                f,
                "token {n:?} expired at {}: ask the box's admin for a new one",
                show_time(*t)
            ),
        }
    }
}

/// Seconds since the epoch as RFC 3339 (UTC).
pub fn show_time(secs: i64) -> String {
    cairn_maint::times::rfc3339(secs.saturating_mul(1_000_000_000))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hash(token: &str) -> String {
    hex::encode(cairn_crypto::plain_hash(token.as_bytes()))
}

struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    by_hash: HashMap<String, TokenRecord>,
}

/// The token file of a server.
pub struct TokenStore {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl TokenStore {
    /// The store in `state`.
    pub fn new(state: &Path) -> TokenStore {
        TokenStore {
            path: state.join("tokens.json"),
            loaded: Mutex::new(Loaded {
                stamp: None,
                by_hash: HashMap::new(),
            }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<TokenFile> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::Tokens(format!(
                    "{} is damaged ({e}); restore it from a backup or remove it and make new tokens",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(e) => Err(Error::io("read", &self.path, e)),
        }
    }

    /// An exclusive lock on `tokens.lock` beside the file, held while a
    /// change reads and rewrites it (until the returned file is closed):
    /// two `token add` at once would otherwise each write the file
    /// without the other's token.
    fn lock(&self) -> Result<std::fs::File> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let path = dir.join("tokens.lock");
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        lock.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(lock)
    }

    fn write(&self, f: &TokenFile) -> Result<()> {
        let body = serde_json::to_vec_pretty(f).map_err(|e| Error::Tokens(e.to_string()))?;
        cairn_storage::atomic_write(&self.path, &body, 0o600, cairn_storage::Existing::Replace)?;
        Ok(())
    }

    /// Makes a token and returns it: the only time it is shown.
    pub fn add(
        &self,
        name: &str,
        role: &str,
        repo: &str,
        group: Option<&str>,
        lifetime: Option<std::time::Duration>,
    ) -> Result<String> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
        {
            return Err(Error::Tokens(format!(
                "token name {name:?}: use up to 64 letters, digits and - _ . @ :"
            )));
        }
        let _lock = self.lock()?;
        let mut f = self.read()?;
        if f.tokens.iter().any(|t| t.name == name) {
            return Err(Error::Tokens(format!(
                "a token named {name:?} exists already: revoke it first, or choose another name"
            )));
        }
        let secret = cairn_crypto::random::<32>()
            .map_err(|e| Error::Tokens(format!("no randomness: {e}")))?;
        let token = format!("cairn_{}", hex::encode(secret));
        let created = now();
        let rec = TokenRecord {
            name: name.to_string(),
            role: role.to_string(),
            repo: repo.to_string(),
            group: group.map(str::to_string),
            hash: hash(&token),
            created,
            expires: lifetime.map(|l| created + l.as_secs() as i64),
            revoked: None,
        };
        rec.role().map_err(Error::Tokens)?;
        f.tokens.push(rec);
        self.write(&f)?;
        Ok(token)
    }

    /// Every token, revoked ones included.
    pub fn list(&self) -> Result<Vec<TokenRecord>> {
        Ok(self.read()?.tokens)
    }

    /// Revokes a token by name; it stays listed, marked revoked.
    pub fn revoke(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut f = self.read()?;
        let Some(t) = f.tokens.iter_mut().find(|t| t.name == name) else {
            return Err(Error::Tokens(format!(
                "no token named {name:?}; `cairn server token list` shows them"
            )));
        };
        if t.revoked.is_none() {
            t.revoked = Some(now());
        }
        self.write(&f)
    }

    /// Who a presented token is, re-reading the file if it changed.
    pub fn authenticate(&self, token: &str) -> Result<std::result::Result<TokenRecord, Rejection>> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp != l.stamp || l.stamp.is_none() {
            let f = self.read()?;
            l.by_hash = f.tokens.into_iter().map(|t| (t.hash.clone(), t)).collect();
            l.stamp = stamp;
        }
        let Some(t) = l.by_hash.get(&hash(token)) else {
            return Ok(Err(Rejection::Unknown));
        };
        if let Some(at) = t.revoked {
            return Ok(Err(Rejection::Revoked(t.name.clone(), at)));
        }
        if let Some(at) = t.expires
            && now() >= at
        {
            return Ok(Err(Rejection::Expired(t.name.clone(), at)));
        }
        Ok(Ok(t.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token commands run at once (two admins, or a script) each keep
    /// what the others wrote.
    #[test]
    fn concurrent_adds_and_revokes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for i in 0..8 {
                let d = dir.path();
                s.spawn(move || {
                    let store = TokenStore::new(d);
                    store
                        .add(&format!("t{i}"), "put", "home", None, None)
                        .unwrap();
                    store
                        .add(&format!("u{i}"), "read", "home", None, None)
                        .unwrap();
                    store.revoke(&format!("u{i}")).unwrap();
                });
            }
        });
        let all = TokenStore::new(dir.path()).list().unwrap();
        assert_eq!(
            all.len(),
            16,
            "{:?}",
            all.iter().map(|t| &t.name).collect::<Vec<_>>()
        );
        for t in &all {
            assert_eq!(t.revoked.is_some(), t.name.starts_with('u'), "{}", t.name);
        }
    }

    #[test]
    fn tokens_are_made_found_revoked_and_expire() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::new(d.path());
        let put = s
            .add("laptop", "put", "home", Some("laptop:*"), None)
            .unwrap();
        let admin = s.add("admin", "admin", "home", None, None).unwrap();
        let short = s
            .add(
                "brief",
                "read",
                "home",
                None,
                Some(std::time::Duration::ZERO),
            )
            .unwrap();
        assert!(put.starts_with("cairn_") && put.len() == 70);
        // Only hashes are stored.
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(!text.contains(&put[6..]));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let t = s.authenticate(&put).unwrap().unwrap();
        assert_eq!(
            (t.name.as_str(), t.role().unwrap().name()),
            ("laptop", "put")
        );
        assert_eq!(s.authenticate(&admin).unwrap().unwrap().role, "admin");
        assert_eq!(s.authenticate("cairn_00").unwrap(), Err(Rejection::Unknown));
        assert!(matches!(
            s.authenticate(&short).unwrap(),
            Err(Rejection::Expired(..))
        ));

        // A second store (another process) revokes; the first notices.
        let other = TokenStore::new(d.path());
        other.revoke("laptop").unwrap();
        let r = s.authenticate(&put).unwrap().unwrap_err();
        assert!(r.to_string().contains("revoked"), "{r}");
        assert_eq!(s.list().unwrap().len(), 3);

        let e = |r: Result<String>| r.unwrap_err().to_string();
        assert!(e(s.add("admin", "admin", "home", None, None)).contains("exists already"));
        assert!(e(s.add("x y", "put", "home", None, None)).contains("token name"));
        assert!(e(s.add("x", "owner", "home", None, None)).contains("unknown role"));
        assert!(e(s.add("x", "read", "home", Some("a*"), None)).contains("put tokens only"));
        assert!(
            s.revoke("nobody")
                .unwrap_err()
                .to_string()
                .contains("no token named")
        );
    }
}
