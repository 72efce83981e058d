//! Maintenance records (`docs/format.md`, "Leases", "Garbage records",
//! "Protection marks").
//!
//! All three are plaintext: retention and garbage collection run on the
//! storage side without any key, so what they coordinate through must be
//! readable there too. None of them says anything about contents.

use crate::error::{Error, Result, invalid};
use crate::id::Id;
use crate::wire::{Reader, Writer, field_i64, field_ids, field_str, field_u64};

/// First 8 bytes of a lease file.
pub const LEASE_MAGIC: &[u8; 8] = b"CAIRNLS1";
/// First 8 bytes of a garbage record.
pub const GARBAGE_MAGIC: &[u8; 8] = b"CAIRNGC1";
/// First 8 bytes of a protection mark.
pub const PROTECT_MAGIC: &[u8; 8] = b"CAIRNPT1";
/// First 8 bytes of a receipt.
pub const RECEIPT_MAGIC: &[u8; 8] = b"CAIRNRC1";

fn magic(r: &mut Reader<'_>, m: &[u8; 8], what: &'static str) -> Result<()> {
    if r.take(8).map_err(|_| Error::BadMagic { what })? != m {
        return Err(Error::BadMagic { what });
    }
    Ok(())
}

/// An exclusive lease, such as the one a prune holds: who holds it and
/// until when. A lease that has expired may be taken over.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Lease {
    /// What the lease is for, e.g. `prune`; also the prefix of its name.
    pub purpose: String,
    /// Generation: each new holder, and each renewal, takes the next one.
    pub generation: u64,
    /// Who holds it, for people: `user@host pid N`.
    pub holder: String,
    /// When the holder took or renewed it, ns since the epoch.
    pub taken_ns: i64,
    /// When it expires unless renewed, ns since the epoch.
    pub expires_ns: i64,
    /// Host name of the holder: on that host, a lease whose process is
    /// gone may be taken over before it expires.
    pub host: String,
    /// Process ID of the holder on `host` (0: unknown).
    pub pid: u32,
}

mod lease_tag {
    pub const PURPOSE: u64 = 1;
    pub const GENERATION: u64 = 2;
    pub const HOLDER: u64 = 3;
    pub const TAKEN: u64 = 4;
    pub const EXPIRES: u64 = 5;
    pub const HOST: u64 = 6;
    pub const PID: u64 = 7;
}

impl Lease {
    /// The object name of generation `generation` of a lease: the purpose
    /// and the generation as 20 digits, so names sort by generation.
    pub fn name_for(purpose: &str, generation: u64) -> String {
        format!("{purpose}-{generation:020}")
    }

    /// Parses an object name made by [`Lease::name_for`].
    pub fn parse_name(name: &str) -> Option<(&str, u64)> {
        let (purpose, g) = name.rsplit_once('-')?;
        if g.len() != 20 || purpose.is_empty() {
            return None;
        }
        Some((purpose, g.parse().ok()?))
    }

    /// The object name of a claim on generation `generation`: a name
    /// only its writer uses (`nonce`: 16 lowercase hex digits, drawn at
    /// random), so that on a store where the last writer of a name wins,
    /// contenders still see each other (`docs/format.md`, "Leases").
    pub fn claim_name(purpose: &str, generation: u64, nonce: &str) -> String {
        format!("{purpose}-{generation:020}-{nonce}")
    }

    /// Parses a lease object name of either form: the generation's name
    /// ([`Lease::name_for`]) or a claim ([`Lease::claim_name`], with its
    /// nonce).
    pub fn parse_any(name: &str) -> Option<(&str, u64, Option<&str>)> {
        if let Some((p, g)) = Lease::parse_name(name) {
            return Some((p, g, None));
        }
        let (rest, nonce) = name.rsplit_once('-')?;
        let ok = nonce.len() == 16
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return None;
        }
        let (p, g) = Lease::parse_name(rest)?;
        Some((p, g, Some(nonce)))
    }

    /// This lease's object name.
    pub fn name(&self) -> String {
        Lease::name_for(&self.purpose, self.generation)
    }

    /// Encodes the lease file.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(LEASE_MAGIC);
        w.field(lease_tag::PURPOSE, self.purpose.as_bytes());
        w.field_u64(lease_tag::GENERATION, self.generation);
        w.field(lease_tag::HOLDER, self.holder.as_bytes());
        w.field_i64(lease_tag::TAKEN, self.taken_ns);
        w.field_i64(lease_tag::EXPIRES, self.expires_ns);
        w.field(lease_tag::HOST, self.host.as_bytes());
        w.field_u64(lease_tag::PID, u64::from(self.pid));
        w.buf
    }

    /// Decodes a lease file.
    pub fn decode(data: &[u8]) -> Result<Lease> {
        const W: &str = "lease";
        let mut r = Reader::new(data, W);
        magic(&mut r, LEASE_MAGIC, W)?;
        let mut l = Lease::default();
        let (mut has_purpose, mut has_expiry) = (false, false);
        while let Some((t, v)) = r.field()? {
            match t {
                lease_tag::PURPOSE => {
                    l.purpose = field_str(v, W)?;
                    has_purpose = true;
                }
                lease_tag::GENERATION => l.generation = field_u64(v, W)?,
                lease_tag::HOLDER => l.holder = field_str(v, W)?,
                lease_tag::TAKEN => l.taken_ns = field_i64(v, W)?,
                lease_tag::EXPIRES => {
                    l.expires_ns = field_i64(v, W)?;
                    has_expiry = true;
                }
                lease_tag::HOST => l.host = field_str(v, W)?,
                lease_tag::PID => {
                    l.pid = u32::try_from(field_u64(v, W)?)
                        .map_err(|_| invalid(W, "pid over 32 bits"))?;
                }
                _ => {}
            }
        }
        if !has_purpose || !has_expiry {
            return Err(invalid(W, "missing purpose or expiry"));
        }
        Ok(l)
    }
}

/// Packs that a prune found unused: deleted by a later prune once
/// `not_before_ns` has passed, unless a snapshot needs them by then.
/// Writers MUST NOT deduplicate against the blobs of a listed pack.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Garbage {
    /// When the prune wrote it, ns since the epoch.
    pub created_ns: i64,
    /// Earliest time at which the packs may be deleted.
    pub not_before_ns: i64,
    /// Who wrote it, for people.
    pub holder: String,
    /// The condemned packs.
    pub packs: Vec<Id>,
}

mod garbage_tag {
    pub const CREATED: u64 = 1;
    pub const NOT_BEFORE: u64 = 2;
    pub const HOLDER: u64 = 3;
    pub const PACKS: u64 = 4;
}

impl Garbage {
    /// Encodes the record; its object name is the BLAKE3 of these bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(GARBAGE_MAGIC);
        w.field_i64(garbage_tag::CREATED, self.created_ns);
        w.field_i64(garbage_tag::NOT_BEFORE, self.not_before_ns);
        w.field(garbage_tag::HOLDER, self.holder.as_bytes());
        let mut ids = Vec::with_capacity(self.packs.len() * 32);
        for p in &self.packs {
            ids.extend_from_slice(&p.0);
        }
        w.field(garbage_tag::PACKS, &ids);
        w.buf
    }

    /// Decodes a garbage record.
    pub fn decode(data: &[u8]) -> Result<Garbage> {
        const W: &str = "garbage record";
        let mut r = Reader::new(data, W);
        magic(&mut r, GARBAGE_MAGIC, W)?;
        let mut g = Garbage::default();
        let mut has_time = false;
        while let Some((t, v)) = r.field()? {
            match t {
                garbage_tag::CREATED => g.created_ns = field_i64(v, W)?,
                garbage_tag::NOT_BEFORE => {
                    g.not_before_ns = field_i64(v, W)?;
                    has_time = true;
                }
                garbage_tag::HOLDER => g.holder = field_str(v, W)?,
                garbage_tag::PACKS => g.packs = field_ids(v, W)?,
                _ => {}
            }
        }
        if !has_time {
            return Err(invalid(W, "missing not_before"));
        }
        Ok(g)
    }
}

/// A mark that keeps one snapshot out of every retention policy. Its
/// object name is the snapshot ID.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Protection {
    /// When it was set, ns since the epoch.
    pub created_ns: i64,
    /// Why, for people.
    pub note: String,
}

mod protect_tag {
    pub const CREATED: u64 = 1;
    pub const NOTE: u64 = 2;
}

impl Protection {
    /// Encodes the mark.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(PROTECT_MAGIC);
        w.field_i64(protect_tag::CREATED, self.created_ns);
        w.field(protect_tag::NOTE, self.note.as_bytes());
        w.buf
    }

    /// Decodes a mark.
    pub fn decode(data: &[u8]) -> Result<Protection> {
        const W: &str = "protection mark";
        let mut r = Reader::new(data, W);
        magic(&mut r, PROTECT_MAGIC, W)?;
        let mut p = Protection::default();
        while let Some((t, v)) = r.field()? {
            match t {
                protect_tag::CREATED => p.created_ns = field_i64(v, W)?,
                protect_tag::NOTE => p.note = field_str(v, W)?,
                _ => {}
            }
        }
        Ok(p)
    }
}

/// When a server received a snapshot, and from whom. Written by the
/// server, never by a source; retention goes by it, so a source cannot
/// claim old times to crowd out other snapshots. Its object name is the
/// snapshot ID.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Receipt {
    /// The server's clock when the snapshot arrived, ns since the epoch.
    pub received_ns: i64,
    /// Who sent it (the token or key name).
    pub sender: String,
}

mod receipt_tag {
    pub const RECEIVED: u64 = 1;
    pub const SENDER: u64 = 2;
}

impl Receipt {
    /// Encodes the receipt.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(RECEIPT_MAGIC);
        w.field_i64(receipt_tag::RECEIVED, self.received_ns);
        w.field(receipt_tag::SENDER, self.sender.as_bytes());
        w.buf
    }

    /// Decodes a receipt.
    pub fn decode(data: &[u8]) -> Result<Receipt> {
        const W: &str = "receipt";
        let mut r = Reader::new(data, W);
        magic(&mut r, RECEIPT_MAGIC, W)?;
        let mut out = Receipt::default();
        let mut has_time = false;
        while let Some((t, v)) = r.field()? {
            match t {
                receipt_tag::RECEIVED => {
                    out.received_ns = field_i64(v, W)?;
                    has_time = true;
                }
                receipt_tag::SENDER => out.sender = field_str(v, W)?,
                _ => {}
            }
        }
        if !has_time {
            return Err(invalid(W, "missing received time"));
        }
        Ok(out)
    }
}

/// The name of an origin mark: the pack's name, `-`, and the 16 hex
/// digits of the uploader's tag. The tag is in the name so that one
/// listing tells every pack's origin; the mark's body is a [`Receipt`]
/// (when, and who by name).
pub fn origin_name(pack: &crate::Id, tag: &[u8; 8]) -> String {
    format!("{}-{}", pack.to_hex(), hex::encode(tag))
}

/// The pack and tag an origin mark's name gives.
pub fn parse_origin_name(name: &str) -> Option<(crate::Id, [u8; 8])> {
    let (pack, tag) = name.split_once('-')?;
    let pack = crate::Id::from_hex(pack)?;
    let tag: [u8; 8] = hex::decode(tag).ok()?.try_into().ok()?;
    (name == origin_name(&pack, &tag)).then_some((pack, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_names_parse_back_exactly() {
        let id = crate::Id([7; 32]);
        let n = origin_name(&id, &[0xab; 8]);
        assert_eq!(n.len(), 64 + 1 + 16);
        assert_eq!(parse_origin_name(&n), Some((id, [0xab; 8])));
        assert_eq!(parse_origin_name(&n.to_uppercase()), None);
        assert_eq!(parse_origin_name(&n[..70]), None);
        assert_eq!(parse_origin_name(&id.to_hex()), None);
    }

    #[test]
    fn lease_names_sort_by_generation_and_parse_back() {
        let a = Lease::name_for("prune", 9);
        let b = Lease::name_for("prune", 10);
        assert!(a < b);
        assert_eq!(Lease::parse_name(&b), Some(("prune", 10)));
        assert_eq!(Lease::parse_name("prune-12"), None);
        assert_eq!(Lease::parse_name("-00000000000000000001"), None);
    }

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let l = Lease {
            purpose: "prune".into(),
            generation: 3,
            holder: "root@box pid 7".into(),
            taken_ns: 5,
            expires_ns: 10,
            host: "box".into(),
            pid: 7,
        };
        assert_eq!(Lease::decode(&l.encode()).unwrap(), l);
        let g = Garbage {
            created_ns: 1,
            not_before_ns: 2,
            holder: "x".into(),
            packs: vec![Id([1; 32]), Id([2; 32])],
        };
        assert_eq!(Garbage::decode(&g.encode()).unwrap(), g);
        let p = Protection {
            created_ns: 4,
            note: "tax records".into(),
        };
        assert_eq!(Protection::decode(&p.encode()).unwrap(), p);
        let rc = Receipt {
            received_ns: 9,
            sender: "laptop".into(),
        };
        assert_eq!(Receipt::decode(&rc.encode()).unwrap(), rc);
        assert!(Receipt::decode(b"CAIRNRC1").is_err());
        let mut bad = g.encode();
        bad.truncate(bad.len() - 1);
        assert!(Garbage::decode(&bad).is_err());
        assert!(Lease::decode(&g.encode()).is_err());
        assert!(Protection::decode(b"CAIRNPT0").is_err());
    }
}
