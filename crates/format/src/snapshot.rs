//! Snapshots (`docs/format.md`, "Snapshots").
//!
//! `magic(8) | header_len varint | header fields | sealed body`. The header
//! is plaintext so the storage side can apply retention and walk from the
//! root tree without keys; the body (host, paths, command line, summary)
//! is sealed with the backup's session key, with `magic | header` as
//! associated data. A snapshot is named by the BLAKE3 of all its bytes.

use crate::error::{Error, Result, invalid};
use crate::id::Id;
use crate::pack::WRAPPED_LEN;
use crate::wire::{Reader, Writer, field_i64, field_id, field_str, field_u64};

/// First 8 bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"CAIRNSN1";

/// The plaintext part of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Time the backup started, as claimed by the writer (ns since epoch).
    pub time_ns: i64,
    /// Group, e.g. `laptop:/home`: retention applies per group.
    pub group: String,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Root tree: a directory whose entries are the backed-up paths.
    pub root: Id,
    /// Snapshot this one was built on, if any.
    pub parent: Option<Id>,
    /// Session key ID.
    pub key_id: [u8; 16],
    /// Session key wrapped to the owner.
    pub wrapped: Option<[u8; WRAPPED_LEN]>,
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Sum of file sizes.
    pub bytes: u64,
    /// Bytes this backup added to the repository (after dedup, compressed).
    pub added_bytes: u64,
    /// Snapshot this one repairs, if made by `repair snapshots`.
    pub repaired_from: Option<Id>,
    /// Fields this version does not know.
    pub unknown: Vec<(u64, Vec<u8>)>,
}

mod tag {
    pub const TIME: u64 = 1;
    pub const GROUP: u64 = 2;
    pub const TAG: u64 = 3;
    pub const ROOT: u64 = 4;
    pub const PARENT: u64 = 5;
    pub const KEY_ID: u64 = 6;
    pub const WRAPPED: u64 = 7;
    pub const FILES: u64 = 8;
    pub const DIRS: u64 = 9;
    pub const BYTES: u64 = 10;
    pub const ADDED: u64 = 11;
    pub const REPAIRED: u64 = 12;
}

impl Envelope {
    /// Encodes `magic | header`: the associated data of the body.
    pub fn encode_header(&self) -> Vec<u8> {
        let mut h = Writer::new();
        h.field_i64(tag::TIME, self.time_ns);
        h.field(tag::GROUP, self.group.as_bytes());
        for t in &self.tags {
            h.field(tag::TAG, t.as_bytes());
        }
        h.field(tag::ROOT, &self.root.0);
        if let Some(p) = &self.parent {
            h.field(tag::PARENT, &p.0);
        }
        h.field(tag::KEY_ID, &self.key_id);
        if let Some(w) = &self.wrapped {
            h.field(tag::WRAPPED, w);
        }
        h.field_u64(tag::FILES, self.files);
        h.field_u64(tag::DIRS, self.dirs);
        h.field_u64(tag::BYTES, self.bytes);
        h.field_u64(tag::ADDED, self.added_bytes);
        if let Some(r) = &self.repaired_from {
            h.field(tag::REPAIRED, &r.0);
        }
        for (t, v) in &self.unknown {
            h.field(*t, v);
        }
        let mut w = Writer::new();
        w.raw(SNAPSHOT_MAGIC).bytes(&h.buf);
        w.buf
    }
}

/// A decoded snapshot file: envelope, associated data, sealed body.
#[derive(Debug)]
pub struct SnapshotFile<'a> {
    /// Plaintext envelope.
    pub envelope: Envelope,
    /// `magic | header`, the body's associated data.
    pub aad: &'a [u8],
    /// Sealed body.
    pub sealed_body: &'a [u8],
}

/// Decodes a snapshot file.
pub fn decode(data: &[u8]) -> Result<SnapshotFile<'_>> {
    const W: &str = "snapshot";
    let mut r = Reader::new(data, W);
    if r.take(8).map_err(|_| Error::BadMagic { what: W })? != SNAPSHOT_MAGIC {
        return Err(Error::BadMagic { what: W });
    }
    let header = r.bytes()?;
    let aad = &data[..r.pos()];
    let sealed_body = &data[r.pos()..];
    let mut e = Envelope::default();
    let mut hr = Reader::new(header, W);
    let mut have_root = false;
    while let Some((t, v)) = hr.field()? {
        match t {
            tag::TIME => e.time_ns = field_i64(v, W)?,
            tag::GROUP => e.group = field_str(v, W)?,
            tag::TAG => e.tags.push(field_str(v, W)?),
            tag::ROOT => {
                e.root = field_id(v, W)?;
                have_root = true;
            }
            tag::PARENT => e.parent = Some(field_id(v, W)?),
            tag::KEY_ID => {
                e.key_id = v
                    .try_into()
                    .map_err(|_| invalid(W, "key id is not 16 bytes"))?
            }
            tag::WRAPPED => {
                e.wrapped = Some(
                    v.try_into()
                        .map_err(|_| invalid(W, "wrapped key has a wrong length"))?,
                )
            }
            tag::FILES => e.files = field_u64(v, W)?,
            tag::DIRS => e.dirs = field_u64(v, W)?,
            tag::BYTES => e.bytes = field_u64(v, W)?,
            tag::ADDED => e.added_bytes = field_u64(v, W)?,
            tag::REPAIRED => e.repaired_from = Some(field_id(v, W)?),
            _ => e.unknown.push((t, v.to_vec())),
        }
    }
    if !have_root {
        return Err(invalid(W, "no root tree"));
    }
    Ok(SnapshotFile {
        envelope: e,
        aad,
        sealed_body,
    })
}

/// The sealed part of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Body {
    /// Host name of the source.
    pub hostname: String,
    /// User who ran the backup.
    pub username: String,
    /// Absolute source paths, raw bytes.
    pub paths: Vec<Vec<u8>>,
    /// Command line.
    pub command: Vec<String>,
    /// Exclude patterns in effect.
    pub excludes: Vec<String>,
    /// Program and version that wrote the snapshot.
    pub program: String,
    /// Files whose content was read and was new.
    pub new_files: u64,
    /// Files read again because they changed.
    pub changed_files: u64,
    /// Files taken from the files cache.
    pub unchanged_files: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Wall time of the backup in milliseconds.
    pub duration_ms: u64,
    /// Entries that could not be read (reported, skipped).
    pub errors: u64,
    /// Fields this version does not know.
    pub unknown: Vec<(u64, Vec<u8>)>,
}

mod btag {
    pub const HOST: u64 = 1;
    pub const USER: u64 = 2;
    pub const PATH: u64 = 3;
    pub const ARG: u64 = 4;
    pub const EXCLUDE: u64 = 5;
    pub const PROGRAM: u64 = 6;
    pub const NEW: u64 = 7;
    pub const CHANGED: u64 = 8;
    pub const UNCHANGED: u64 = 9;
    pub const READ: u64 = 10;
    pub const DURATION: u64 = 11;
    pub const ERRORS: u64 = 12;
}

impl Body {
    /// Encodes the body plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.field(btag::HOST, self.hostname.as_bytes());
        w.field(btag::USER, self.username.as_bytes());
        for p in &self.paths {
            w.field(btag::PATH, p);
        }
        for a in &self.command {
            w.field(btag::ARG, a.as_bytes());
        }
        for e in &self.excludes {
            w.field(btag::EXCLUDE, e.as_bytes());
        }
        w.field(btag::PROGRAM, self.program.as_bytes());
        w.field_u64(btag::NEW, self.new_files);
        w.field_u64(btag::CHANGED, self.changed_files);
        w.field_u64(btag::UNCHANGED, self.unchanged_files);
        w.field_u64(btag::READ, self.bytes_read);
        w.field_u64(btag::DURATION, self.duration_ms);
        w.field_u64(btag::ERRORS, self.errors);
        for (t, v) in &self.unknown {
            w.field(*t, v);
        }
        w.buf
    }

    /// Decodes the body plaintext.
    pub fn decode(data: &[u8]) -> Result<Body> {
        const W: &str = "snapshot body";
        let mut b = Body::default();
        let mut r = Reader::new(data, W);
        while let Some((t, v)) = r.field()? {
            match t {
                btag::HOST => b.hostname = field_str(v, W)?,
                btag::USER => b.username = field_str(v, W)?,
                btag::PATH => b.paths.push(v.to_vec()),
                btag::ARG => b.command.push(field_str(v, W)?),
                btag::EXCLUDE => b.excludes.push(field_str(v, W)?),
                btag::PROGRAM => b.program = field_str(v, W)?,
                btag::NEW => b.new_files = field_u64(v, W)?,
                btag::CHANGED => b.changed_files = field_u64(v, W)?,
                btag::UNCHANGED => b.unchanged_files = field_u64(v, W)?,
                btag::READ => b.bytes_read = field_u64(v, W)?,
                btag::DURATION => b.duration_ms = field_u64(v, W)?,
                btag::ERRORS => b.errors = field_u64(v, W)?,
                _ => b.unknown.push((t, v.to_vec())),
            }
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_roundtrip() {
        let e = Envelope {
            time_ns: -5,
            group: "h:/x".into(),
            tags: vec!["a".into(), "b".into()],
            root: Id([4; 32]),
            parent: Some(Id([5; 32])),
            key_id: [6; 16],
            wrapped: Some([7; WRAPPED_LEN]),
            files: 1,
            dirs: 2,
            bytes: 3,
            added_bytes: 4,
            repaired_from: None,
            unknown: vec![(77, vec![1])],
        };
        let mut bytes = e.encode_header();
        let hl = bytes.len();
        bytes.extend_from_slice(b"sealed");
        let d = decode(&bytes).unwrap();
        assert_eq!(d.envelope, e);
        assert_eq!(d.aad.len(), hl);
        assert_eq!(d.sealed_body, b"sealed");
        let b = Body {
            hostname: "h".into(),
            paths: vec![b"/x\xff".to_vec()],
            errors: 2,
            ..Body::default()
        };
        assert_eq!(Body::decode(&b.encode()).unwrap(), b);
    }
}
