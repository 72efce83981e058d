//! Owner and put-only keys, and how they are stored.
//!
//! An owner key holds the owner's X25519 secret and the dedup key; a
//! put-only key holds only the dedup key and the owner's public key, so a
//! source can write and deduplicate but never unwrap a session key.
//! Passphrase-protected key files live in the repository (`keys/`), so the
//! passphrase alone opens it from a new machine; a key without passphrase
//! lives only in a 0600 file outside it.

use std::path::{Path, PathBuf};

use cairn_crypto::{DedupKey, KdfParams, OwnerPublic, OwnerSecret, passphrase_key};
use cairn_format::keyfile::{Kdf, KeyFile, Role, Secrets};

use crate::{Error, Result};

/// Where the key to open a repository comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// Try every key file in the repository with this passphrase.
    Passphrase(Vec<u8>),
    /// A key file on the local disk, optionally passphrase-protected.
    File {
        /// Path of the key file.
        path: PathBuf,
        /// Its passphrase, if it has one.
        passphrase: Option<Vec<u8>>,
    },
}

/// Unlocked key material.
#[derive(Clone)]
pub struct KeyMaterial {
    /// What this key may do.
    pub role: Role,
    /// Owner's public key, to wrap session keys.
    pub owner_public: OwnerPublic,
    /// Owner's secret (owner role only).
    pub owner_secret: Option<OwnerSecret>,
    /// Dedup key.
    pub dedup: DedupKey,
    /// Name of the key file in the repository, if it is stored there.
    pub name: Option<String>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({})", self.role.name())
    }
}

impl KeyMaterial {
    /// A fresh owner key.
    pub fn generate_owner() -> Result<Self> {
        let s = OwnerSecret::generate()?;
        Ok(KeyMaterial {
            role: Role::Owner,
            owner_public: s.public(),
            owner_secret: Some(s),
            dedup: DedupKey::generate()?,
            name: None,
        })
    }

    /// The put-only key derived from this one.
    pub fn put_only(&self) -> KeyMaterial {
        KeyMaterial {
            role: Role::PutOnly,
            owner_public: self.owner_public,
            owner_secret: None,
            dedup: self.dedup.clone(),
            name: None,
        }
    }

    /// The owner secret, or a refusal naming `action`.
    pub fn require_owner(&self, action: &'static str) -> Result<&OwnerSecret> {
        self.owner_secret.as_ref().ok_or(Error::Denied {
            role: self.role.name(),
            action,
        })
    }

    /// Builds a key file, sealed under `passphrase` if given.
    pub fn to_keyfile(
        &self,
        repo_id: [u8; 16],
        passphrase: Option<&[u8]>,
        label: &str,
        kdf: KdfParams,
    ) -> Result<KeyFile> {
        let secrets = Secrets {
            owner_secret: self.owner_secret.as_ref().map(|s| s.to_bytes()),
            dedup: self.dedup.to_bytes(),
        };
        let mut kf = KeyFile {
            role: self.role,
            repo_id,
            owner_public: self.owner_public.to_bytes(),
            created_ns: crate::now_ns(),
            label: label.to_string(),
            kdf: None,
            secret: Vec::new(),
        };
        match passphrase {
            Some(p) => {
                let salt = cairn_crypto::random::<16>()?;
                let key = passphrase_key(p, &salt, kdf)?;
                kf.kdf = Some(Kdf {
                    salt,
                    m_kib: kdf.m_kib,
                    t: kdf.t,
                    p: kdf.p,
                });
                kf.secret = key.seal(&kf.aad(), &secrets.encode())?;
            }
            None => kf.secret = secrets.encode(),
        }
        Ok(kf)
    }
}

/// Why a key file did not unlock.
pub(crate) enum Unlock {
    /// The passphrase is wrong (or the file needs one).
    WrongPassphrase,
    /// The file is damaged or inconsistent.
    Bad(Error),
}

/// Unlocks a key file with an optional passphrase.
pub(crate) fn unlock(
    kf: &KeyFile,
    passphrase: Option<&[u8]>,
) -> std::result::Result<KeyMaterial, Unlock> {
    let plain = match (&kf.kdf, passphrase) {
        (Some(k), Some(p)) => {
            let key = passphrase_key(
                p,
                &k.salt,
                KdfParams {
                    m_kib: k.m_kib,
                    t: k.t,
                    p: k.p,
                },
            )
            .map_err(|e| Unlock::Bad(e.into()))?;
            key.open(&kf.aad(), &kf.secret)
                .map_err(|_| Unlock::WrongPassphrase)?
        }
        (Some(_), None) => return Err(Unlock::WrongPassphrase),
        (None, _) => kf.secret.clone(),
    };
    let s = Secrets::decode(&plain).map_err(|e| Unlock::Bad(Error::corrupt("key file", e)))?;
    let owner_public = OwnerPublic::from_bytes(kf.owner_public);
    let owner_secret = match (kf.role, s.owner_secret) {
        (Role::Owner, Some(b)) => {
            let sec = OwnerSecret::from_bytes(b);
            if sec.public() != owner_public {
                return Err(Unlock::Bad(Error::corrupt(
                    "key file",
                    "secret does not match public key",
                )));
            }
            Some(sec)
        }
        (Role::Owner, None) => {
            return Err(Unlock::Bad(Error::corrupt(
                "key file",
                "owner key without secret",
            )));
        }
        (Role::PutOnly, _) => None,
    };
    Ok(KeyMaterial {
        role: kf.role,
        owner_public,
        owner_secret,
        dedup: DedupKey::from_bytes(s.dedup),
        name: None,
    })
}

/// Writes a key file outside the repository with mode 0600, refusing to
/// overwrite an existing file.
pub fn write_key_file(path: &Path, kf: &KeyFile) -> Result<()> {
    // Mode 0600 from the start, never replacing a key, and durable with
    // its directory: a power cut after `init` must not keep the config
    // and lose the only key.
    cairn_storage::atomic_write(path, &kf.encode(), 0o600, cairn_storage::Existing::Keep)?;
    Ok(())
}

/// Reads and decodes a key file from the local disk.
pub fn read_key_file(path: &Path) -> Result<KeyFile> {
    let data = std::fs::read(path).map_err(|e| Error::Io {
        op: "read key file",
        path: path.to_path_buf(),
        source: e,
    })?;
    KeyFile::decode(&data).map_err(|e| Error::corrupt(format!("key file {}", path.display()), e))
}
