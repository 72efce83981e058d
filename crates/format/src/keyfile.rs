//! Key files (`docs/format.md`, "Keys").
//!
//! A key file holds an owner key (owner secret + dedup key) or a put-only
//! key (dedup key only; the owner's public key is in plaintext). The secret
//! part is sealed under an Argon2id passphrase key, or stored unsealed in a
//! 0600 file outside the repository when the user gave no passphrase.

use crate::error::{Error, Result, invalid};
use crate::wire::{Reader, Writer, field_i64, field_str, field_u64};

/// First 8 bytes of a key file.
pub const KEY_MAGIC: &[u8; 8] = b"CAIRNKY1";

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Reads and writes everything.
    Owner = 1,
    /// Adds snapshots and deduplicates; reads nothing already stored.
    PutOnly = 2,
}

impl Role {
    /// Name for people and for `--role`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::PutOnly => "put-only",
        }
    }
}

/// Argon2id parameters and salt of a passphrase-protected key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kdf {
    /// Random salt.
    pub salt: [u8; 16],
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

/// A decoded key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// Role of the key.
    pub role: Role,
    /// Repository this key belongs to.
    pub repo_id: [u8; 16],
    /// Owner's public key (wraps session keys).
    pub owner_public: [u8; 32],
    /// Creation time, ns since the epoch.
    pub created_ns: i64,
    /// Who made it, e.g. `alice@laptop`.
    pub label: String,
    /// Passphrase parameters; `None` means `secret` is plaintext.
    pub kdf: Option<Kdf>,
    /// The secret payload (sealed when `kdf` is set); see [`Secrets`].
    pub secret: Vec<u8>,
}

mod tag {
    pub const ROLE: u64 = 1;
    pub const REPO: u64 = 2;
    pub const PUBLIC: u64 = 3;
    pub const CREATED: u64 = 4;
    pub const LABEL: u64 = 5;
    pub const KDF: u64 = 6;
    pub const SECRET: u64 = 7;
}

impl KeyFile {
    /// Associated data for sealing the secret: binds it to this repository,
    /// role and owner.
    pub fn aad(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(KEY_MAGIC)
            .raw(&self.repo_id)
            .u8(self.role as u8)
            .raw(&self.owner_public);
        w.buf
    }

    /// Encodes the key file.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(KEY_MAGIC);
        w.field_u64(tag::ROLE, self.role as u64);
        w.field(tag::REPO, &self.repo_id);
        w.field(tag::PUBLIC, &self.owner_public);
        w.field_i64(tag::CREATED, self.created_ns);
        w.field(tag::LABEL, self.label.as_bytes());
        if let Some(k) = &self.kdf {
            let mut x = Writer::new();
            x.raw(&k.salt)
                .varint(u64::from(k.m_kib))
                .varint(u64::from(k.t))
                .varint(u64::from(k.p));
            w.field(tag::KDF, &x.buf);
        }
        w.field(tag::SECRET, &self.secret);
        w.buf
    }

    /// Decodes a key file.
    pub fn decode(data: &[u8]) -> Result<KeyFile> {
        const W: &str = "key file";
        let mut r = Reader::new(data, W);
        if r.take(8).map_err(|_| Error::BadMagic { what: W })? != KEY_MAGIC {
            return Err(Error::BadMagic { what: W });
        }
        let mut role = None;
        let mut repo_id = None;
        let mut owner_public = None;
        let mut k = KeyFile {
            role: Role::Owner,
            repo_id: [0; 16],
            owner_public: [0; 32],
            created_ns: 0,
            label: String::new(),
            kdf: None,
            secret: Vec::new(),
        };
        while let Some((t, v)) = r.field()? {
            match t {
                tag::ROLE => {
                    role = Some(match field_u64(v, W)? {
                        1 => Role::Owner,
                        2 => Role::PutOnly,
                        x => return Err(invalid(W, format!("unknown role {x}"))),
                    })
                }
                tag::REPO => repo_id = Some(v.try_into().map_err(|_| invalid(W, "repo id"))?),
                tag::PUBLIC => {
                    owner_public = Some(v.try_into().map_err(|_| invalid(W, "public key"))?)
                }
                tag::CREATED => k.created_ns = field_i64(v, W)?,
                tag::LABEL => k.label = field_str(v, W)?,
                tag::KDF => {
                    let mut x = Reader::new(v, W);
                    let salt = x.array()?;
                    let small = |x: &mut Reader<'_>| -> Result<u32> {
                        u32::try_from(x.varint()?).map_err(|_| invalid(W, "kdf parameter"))
                    };
                    let m_kib = small(&mut x)?;
                    let t = small(&mut x)?;
                    let p = small(&mut x)?;
                    x.finish()?;
                    k.kdf = Some(Kdf { salt, m_kib, t, p });
                }
                tag::SECRET => k.secret = v.to_vec(),
                _ => {}
            }
        }
        k.role = role.ok_or_else(|| invalid(W, "no role"))?;
        k.repo_id = repo_id.ok_or_else(|| invalid(W, "no repository id"))?;
        k.owner_public = owner_public.ok_or_else(|| invalid(W, "no owner public key"))?;
        Ok(k)
    }
}

/// The secret payload of a key file, once unsealed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Owner's X25519 secret (owner keys only).
    pub owner_secret: Option<[u8; 32]>,
    /// The dedup key.
    pub dedup: [u8; 32],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        if let Some(s) = &self.owner_secret {
            w.field(1, s);
        }
        w.field(2, &self.dedup);
        w.buf
    }
    /// Decodes the payload.
    pub fn decode(data: &[u8]) -> Result<Secrets> {
        const W: &str = "key secrets";
        let mut r = Reader::new(data, W);
        let mut owner_secret = None;
        let mut dedup = None;
        while let Some((t, v)) = r.field()? {
            match t {
                1 => owner_secret = Some(v.try_into().map_err(|_| invalid(W, "owner secret"))?),
                2 => dedup = Some(v.try_into().map_err(|_| invalid(W, "dedup key"))?),
                _ => {}
            }
        }
        Ok(Secrets {
            owner_secret,
            dedup: dedup.ok_or_else(|| invalid(W, "no dedup key"))?,
        })
    }
}
