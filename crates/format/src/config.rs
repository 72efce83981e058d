//! The repository config (`docs/format.md`, "Config").
//!
//! Plaintext and written once: the storage side reads it without keys.

use crate::error::{Error, Result, invalid};
use crate::wire::{Reader, Writer, field_i64, field_u64};
use crate::{FORMAT_MAJOR, FORMAT_MINOR};

/// First 8 bytes of the config file.
pub const CONFIG_MAGIC: &[u8; 8] = b"CAIRNCF1";

/// Repository-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Major format version; readers refuse a newer one.
    pub major: u32,
    /// Minor format version.
    pub minor: u32,
    /// Random repository ID; names the local cache directory.
    pub repo_id: [u8; 16],
    /// FastCDC minimum chunk size.
    pub chunk_min: u32,
    /// FastCDC average chunk size.
    pub chunk_avg: u32,
    /// FastCDC maximum chunk size.
    pub chunk_max: u32,
    /// Creation time, ns since the epoch.
    pub created_ns: i64,
}

mod tag {
    pub const MAJOR: u64 = 1;
    pub const MINOR: u64 = 2;
    pub const REPO_ID: u64 = 3;
    pub const MIN: u64 = 4;
    pub const AVG: u64 = 5;
    pub const MAX: u64 = 6;
    pub const CREATED: u64 = 7;
}

impl Config {
    /// A config for a new repository with this build's versions.
    pub fn new(repo_id: [u8; 16], min: u32, avg: u32, max: u32, created_ns: i64) -> Self {
        Config {
            major: FORMAT_MAJOR,
            minor: FORMAT_MINOR,
            repo_id,
            chunk_min: min,
            chunk_avg: avg,
            chunk_max: max,
            created_ns,
        }
    }

    /// Encodes the config file.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(CONFIG_MAGIC);
        w.field_u64(tag::MAJOR, u64::from(self.major));
        w.field_u64(tag::MINOR, u64::from(self.minor));
        w.field(tag::REPO_ID, &self.repo_id);
        w.field_u64(tag::MIN, u64::from(self.chunk_min));
        w.field_u64(tag::AVG, u64::from(self.chunk_avg));
        w.field_u64(tag::MAX, u64::from(self.chunk_max));
        w.field_i64(tag::CREATED, self.created_ns);
        w.buf
    }

    /// Decodes a config file, refusing a newer major version.
    pub fn decode(data: &[u8]) -> Result<Config> {
        const W: &str = "config";
        let mut r = Reader::new(data, W);
        if r.take(8).map_err(|_| Error::BadMagic { what: W })? != CONFIG_MAGIC {
            return Err(Error::BadMagic { what: W });
        }
        let mut c = Config::new([0; 16], 0, 0, 0, 0);
        c.major = 0;
        let mut id = false;
        while let Some((t, v)) = r.field()? {
            let small = |v: &[u8]| -> Result<u32> {
                u32::try_from(field_u64(v, W)?).map_err(|_| invalid(W, "value over 32 bits"))
            };
            match t {
                tag::MAJOR => c.major = small(v)?,
                tag::MINOR => c.minor = small(v)?,
                tag::REPO_ID => {
                    c.repo_id = v.try_into().map_err(|_| invalid(W, "repo id length"))?;
                    id = true;
                }
                tag::MIN => c.chunk_min = small(v)?,
                tag::AVG => c.chunk_avg = small(v)?,
                tag::MAX => c.chunk_max = small(v)?,
                tag::CREATED => c.created_ns = field_i64(v, W)?,
                _ => {}
            }
        }
        if c.major > FORMAT_MAJOR {
            return Err(Error::UnsupportedVersion {
                what: "repository",
                found: c.major,
                supported: FORMAT_MAJOR,
            });
        }
        if c.major == 0 || !id {
            return Err(invalid(W, "missing version or repository id"));
        }
        let (min, avg, max) = (c.chunk_min, c.chunk_avg, c.chunk_max);
        let sane = (64..=avg).contains(&min)
            && avg.is_power_of_two()
            && avg >= 256
            && avg <= max
            && max <= 1 << 28
            && min % 2 == 0
            && max % 2 == 0;
        if !sane {
            return Err(invalid(
                W,
                format!("chunk sizes {min}/{avg}/{max} are out of range"),
            ));
        }
        Ok(c)
    }
}
