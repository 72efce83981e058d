//! `cairn dump`: a file of a snapshot as its bytes, or a directory as a
//! POSIX (pax) tar stream, for piping into another program or machine.
//!
//! The tar stream carries what a restore would set: pax records give
//! times to the nanosecond, owners by number and name, extended attributes
//! (`SCHILY.xattr.*`, as GNU tar and bsdtar write them) and POSIX ACLs in
//! their text form (`SCHILY.acl.access`, `SCHILY.acl.default`); names and
//! link targets of any length or encoding go in pax `path` and `linkpath`
//! records. Hard links within the dump are link entries to the first name.
//! Files with holes (whole chunks of zeros) are written as pax sparse
//! files (format 1.0, which GNU tar and bsdtar extract with their holes),
//! so a mostly empty disk image does not dump as its full size of zeros.
//! Every chunk is authenticated before its bytes are written; a damaged
//! chunk ends the dump with an error naming the file, never with other
//! bytes in its place.

use std::collections::HashMap;
use std::io::{Read, Write};

use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::tree::{Node, NodeType};
use cairn_repo::{BlobReader, Repo};
use tar::{EntryType, Header};

use crate::walk::join;
use crate::{Error, Result};

/// What a dump wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DumpSummary {
    /// Entries in the tar stream (1 for a plain file).
    pub entries: u64,
    /// Bytes of file contents.
    pub bytes: u64,
    /// Sockets, which tar cannot hold, left out.
    pub skipped: u64,
}

/// Writes the contents of file `node` (at `path`, for messages) to `out`.
pub fn dump_file(
    repo: &Repo,
    node: &Node,
    path: &[u8],
    out: &mut dyn Write,
) -> Result<DumpSummary> {
    let mut reader = repo.reader();
    let mut data = Contents::new(&mut reader, repo.index(), node, path)?;
    let n = std::io::copy(&mut data, out).map_err(|e| data.error(e))?;
    out.flush().map_err(|e| io("write the output", e))?;
    Ok(DumpSummary {
        entries: 1,
        bytes: n,
        skipped: 0,
    })
}

/// Writes `node` (named `name` in the stream) and everything below it as
/// a tar stream to `out`. An empty `name` (the snapshot's root) puts the
/// root's entries at the top.
pub fn dump_tar(repo: &Repo, node: &Node, name: &[u8], out: &mut dyn Write) -> Result<DumpSummary> {
    let mut t = Tar {
        repo,
        builder: tar::Builder::new(out),
        reader: repo.reader(),
        links: HashMap::new(),
        summary: DumpSummary::default(),
    };
    if !name.is_empty() {
        t.entry(name, node)?;
    }
    if let Some(sub) = &node.subtree {
        t.dir(sub, name)?;
    }
    t.builder
        .finish()
        .map_err(|e| io("write the end of the tar stream", e))?;
    Ok(t.summary)
}

fn io(op: &'static str, e: std::io::Error) -> Error {
    Error::Io {
        op,
        path: "-".into(),
        source: e,
    }
}

struct Tar<'r, W: Write> {
    repo: &'r Repo,
    builder: tar::Builder<W>,
    reader: BlobReader<'r>,
    /// First name of each hard-linked file, by its identity at backup.
    links: HashMap<(u64, u64), Vec<u8>>,
    summary: DumpSummary,
}

impl<W: Write> Tar<'_, W> {
    fn dir(&mut self, tree: &Id, prefix: &[u8]) -> Result<()> {
        let t = self.reader.load_tree(tree)?;
        for n in &t.nodes {
            let path = if prefix.is_empty() {
                n.name.clone()
            } else {
                join(prefix, &n.name)
            };
            self.entry(&path, n)?;
            if let Some(sub) = &n.subtree {
                self.dir(sub, &path)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &[u8], n: &Node) -> Result<()> {
        let mut h = Header::new_ustar();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut size = 0;
        let mut link: Option<&[u8]> = None;
        let first_name;
        let mut sparse = None;
        let kind = match n.node_type() {
            NodeType::File => match n.link.filter(|_| n.nlink > 1) {
                Some(id) if self.links.contains_key(&id) => {
                    first_name = self.links[&id].clone();
                    link = Some(&first_name);
                    EntryType::Link
                }
                other => {
                    if let Some(id) = other {
                        self.links.insert(id, path.to_vec());
                    }
                    size = n.size;
                    sparse = self.sparse(n);
                    if let Some(sp) = &sparse {
                        size = sp.stored;
                    }
                    EntryType::Regular
                }
            },
            NodeType::Dir => EntryType::Directory,
            NodeType::Symlink => {
                link = Some(n.target.as_deref().unwrap_or(b""));
                EntryType::Symlink
            }
            NodeType::Fifo => EntryType::Fifo,
            NodeType::CharDev => EntryType::Char,
            NodeType::BlockDev => EntryType::Block,
            NodeType::Socket => {
                self.summary.skipped += 1;
                return Ok(());
            }
        };
        h.set_entry_type(kind);
        h.set_mode(n.mode & 0o7777);
        let mut name = path.to_vec();
        if kind == EntryType::Directory {
            name.push(b'/');
        }
        if sparse.is_some() {
            // The real name and size are in the pax records; a tar that
            // does not know them extracts the stored form under a name of
            // its own instead of a wrong file under the real one.
            pax.push(("GNU.sparse.major".into(), b"1".to_vec()));
            pax.push(("GNU.sparse.minor".into(), b"0".to_vec()));
            pax.push(("GNU.sparse.name".into(), name.clone()));
            pax.push((
                "GNU.sparse.realsize".into(),
                n.size.to_string().into_bytes(),
            ));
            let base = name.rsplit(|&b| b == b'/').next().unwrap_or(&name);
            let stored = [&b"GNUSparseFile.0/"[..], base].concat();
            set_bytes(
                &mut h.as_ustar_mut().expect("ustar").name,
                tail(&stored, 100),
            );
        } else {
            if !fits(&name, 100) {
                pax.push(("path".into(), name.clone()));
            }
            set_bytes(&mut h.as_ustar_mut().expect("ustar").name, tail(&name, 100));
        }
        if let Some(l) = link {
            if !fits(l, 100) {
                pax.push(("linkpath".into(), l.to_vec()));
            }
            set_bytes(&mut h.as_ustar_mut().expect("ustar").linkname, tail(l, 100));
        }
        const OCTAL_7: u64 = 0o7777777;
        h.set_uid(u64::from(n.uid).min(OCTAL_7));
        h.set_gid(u64::from(n.gid).min(OCTAL_7));
        if u64::from(n.uid) > OCTAL_7 {
            pax.push(("uid".into(), n.uid.to_string().into_bytes()));
        }
        if u64::from(n.gid) > OCTAL_7 {
            pax.push(("gid".into(), n.gid.to_string().into_bytes()));
        }
        for (key, v) in [("uname", &n.user), ("gname", &n.group)] {
            if let Some(v) = v {
                if v.len() < 32 && v.is_ascii() {
                    let field = if key == "uname" {
                        &mut h.as_ustar_mut().expect("ustar").uname
                    } else {
                        &mut h.as_ustar_mut().expect("ustar").gname
                    };
                    set_bytes(field, v.as_bytes());
                } else {
                    pax.push((key.into(), v.clone().into_bytes()));
                }
            }
        }
        h.set_mtime(u64::try_from(n.mtime.sec).unwrap_or(0).min(0o77777777777));
        pax.push(("mtime".into(), stamp(n.mtime.sec, n.mtime.nsec)));
        if n.atime != Default::default() {
            pax.push(("atime".into(), stamp(n.atime.sec, n.atime.nsec)));
        }
        if matches!(kind, EntryType::Char | EntryType::Block) {
            let (major, minor) = (rustix::fs::major(n.rdev), rustix::fs::minor(n.rdev));
            h.set_device_major(major)
                .and_then(|()| h.set_device_minor(minor))
                .map_err(|e| io("write a device entry", e))?;
        }
        if size > 0o77777777777 {
            pax.push(("size".into(), size.to_string().into_bytes()));
        } else {
            h.set_size(size);
        }
        for (k, v) in &n.xattrs {
            match &k[..] {
                b"system.posix_acl_access" | b"system.posix_acl_default" => {
                    if let Some(text) = acl_text(v) {
                        let key = if k.ends_with(b"access") {
                            "SCHILY.acl.access"
                        } else {
                            "SCHILY.acl.default"
                        };
                        pax.push((key.into(), text.into_bytes()));
                    }
                }
                _ => pax.push((
                    format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)),
                    v.clone(),
                )),
            }
        }
        // The contents are checked before any header is written: a
        // header cannot be taken back.
        let contents = match kind {
            EntryType::Regular => {
                Some(Contents::new(&mut self.reader, self.repo.index(), n, path)?)
            }
            _ => None,
        };
        let records = pax_records(&pax);
        let mut x = Header::new_ustar();
        x.set_entry_type(EntryType::XHeader);
        set_bytes(
            &mut x.as_ustar_mut().expect("ustar").name,
            b"PaxHeaders/entry",
        );
        x.set_mode(0o644);
        x.set_size(records.len() as u64);
        x.set_cksum();
        self.builder
            .append(&x, &records[..])
            .map_err(|e| io("write the tar stream", e))?;
        h.set_cksum();
        if let Some(mut data) = contents {
            if let Some(sp) = sparse {
                data.head = sp.map;
                data.skip = sp.zero;
            }
            self.builder
                .append(&h, &mut data)
                .map_err(|e| data.error(e))?;
            self.summary.bytes += n.size;
        } else {
            self.builder
                .append(&h, std::io::empty())
                .map_err(|e| io("write the tar stream", e))?;
        }
        self.summary.entries += 1;
        Ok(())
    }
}

/// A file written as a pax sparse file: which chunks are holes, and the
/// stored form's map.
struct Sparse {
    /// By chunk: all zeros, left out of the stream.
    zero: Vec<bool>,
    /// The sparse map (format 1.0): the number of data runs, then each
    /// one's offset and length, in decimal lines, padded with NULs to a
    /// whole block.
    map: Vec<u8>,
    /// Bytes of the stored form: the map and the data runs.
    stored: u64,
}

/// Chunks stored at least this many times smaller than they are may be
/// zeros (zeros compress thousands of times); only those are decoded to
/// find out, so a file without holes is read once.
const ZERO_RATIO: u64 = 64;

impl<W: Write> Tar<'_, W> {
    /// The holes of file `n`, if it has any: its chunks that are all
    /// zeros. A chunk that cannot be read here counts as data, and the
    /// copy of the data reports it.
    fn sparse(&mut self, n: &Node) -> Option<Sparse> {
        let index = self.repo.index();
        let mut zero = Vec::with_capacity(n.content.len());
        let mut known: HashMap<Id, bool> = HashMap::new();
        let mut buf = Vec::new();
        for id in &n.content {
            let z = match known.get(id) {
                Some(&z) => z,
                None => {
                    let z =
                        index.get(id).is_some_and(|l| {
                            l.raw_len >= 4096
                                && u64::from(l.length) * ZERO_RATIO <= u64::from(l.raw_len)
                        }) && matches!(self.reader.load_into(id, &mut buf), Ok(BlobKind::Chunk))
                            && crate::restorer::is_zero(&buf);
                    known.insert(*id, z);
                    z
                }
            };
            zero.push(z);
        }
        if !zero.contains(&true) {
            return None;
        }
        // Data runs: (offset, length), a run of data chunks each.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut off = 0u64;
        let mut data = 0u64;
        for (id, &z) in n.content.iter().zip(&zero) {
            let len = u64::from(index.get(id)?.raw_len);
            if !z {
                match runs.last_mut() {
                    Some((o, l)) if *o + *l == off => *l += len,
                    _ => runs.push((off, len)),
                }
                data += len;
            }
            off += len;
        }
        // A file that ends in a hole ends with an empty run at its size.
        if runs.last().is_none_or(|(o, l)| o + l < off) {
            runs.push((off, 0));
        }
        let mut map = format!("{}\n", runs.len()).into_bytes();
        for (o, l) in &runs {
            map.extend_from_slice(format!("{o}\n{l}\n").as_bytes());
        }
        map.resize(map.len().next_multiple_of(512), 0);
        Some(Sparse {
            zero,
            stored: map.len() as u64 + data,
            map,
        })
    }
}

/// Whether a name fits a ustar field as it is (ASCII, short enough).
fn fits(b: &[u8], len: usize) -> bool {
    b.len() < len && b.is_ascii()
}

/// The last bytes of a name that fit a field (the full name is in a pax
/// record then).
fn tail(b: &[u8], len: usize) -> &[u8] {
    &b[b.len().saturating_sub(len - 1)..]
}

fn set_bytes(field: &mut [u8], v: &[u8]) {
    field.fill(0);
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

/// A pax time: seconds, then the nanoseconds when there are any.
fn stamp(sec: i64, nsec: u32) -> Vec<u8> {
    if nsec == 0 {
        return sec.to_string().into_bytes();
    }
    // Negative times count the fraction towards the past as well.
    if sec < 0 {
        let (s, ns) = (sec + 1, 1_000_000_000 - nsec);
        let whole = if s == 0 {
            "-0".to_string()
        } else {
            s.to_string()
        };
        return format!("{whole}.{ns:09}").into_bytes();
    }
    format!("{sec}.{nsec:09}").into_bytes()
}

/// The pax records `len key=value\n`, where `len` counts itself.
fn pax_records(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        let rest = k.len() + v.len() + 3; // space, '=', newline
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// A POSIX ACL xattr (`posix_acl_xattr_header` then entries of tag,
/// permissions and ID) in the text form `acl_from_text` reads, with
/// numeric IDs; `None` for bytes that are not one.
fn acl_text(v: &[u8]) -> Option<String> {
    let (head, body) = v.split_at_checked(4)?;
    if u32::from_le_bytes(head.try_into().ok()?) != 2 || !body.len().is_multiple_of(8) {
        return None;
    }
    let mut parts = Vec::new();
    for e in body.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let rwx: String = [(4, 'r'), (2, 'w'), (1, 'x')]
            .iter()
            .map(|&(b, c)| if perm & b != 0 { c } else { '-' })
            .collect();
        let entry = match tag {
            0x01 => format!("user::{rwx}"),
            0x02 => format!("user:{id}:{rwx}"),
            0x04 => format!("group::{rwx}"),
            0x08 => format!("group:{id}:{rwx}"),
            0x10 => format!("mask::{rwx}"),
            0x20 => format!("other::{rwx}"),
            _ => return None,
        };
        parts.push(entry);
    }
    Some(parts.join(","))
}

/// A file's contents as a reader: each chunk loaded and authenticated in
/// turn; a chunk that fails ends the read with the damage as the error.
struct Contents<'a, 'r> {
    reader: &'a mut BlobReader<'r>,
    chunks: std::slice::Iter<'a, Id>,
    /// Bytes given before the chunks (a sparse file's map).
    head: Vec<u8>,
    /// By chunk, those left out (a sparse file's holes); empty for none.
    skip: Vec<bool>,
    /// Chunks taken so far.
    taken: usize,
    buf: Vec<u8>,
    pos: usize,
    path: Vec<u8>,
    failure: Option<cairn_repo::Error>,
}

impl<'a, 'r> Contents<'a, 'r> {
    /// Checks first that the chunks add up to the recorded size: a tar
    /// header is written before the data and cannot be taken back.
    fn new(
        reader: &'a mut BlobReader<'r>,
        index: &cairn_repo::Index,
        n: &'a Node,
        path: &[u8],
    ) -> Result<Self> {
        let mut total = 0u64;
        for id in &n.content {
            total += index
                .get(id)
                .map(|l| u64::from(l.raw_len))
                .ok_or(cairn_repo::Error::MissingBlob(*id))?;
        }
        if total != n.size {
            return Err(Error::Input(format!(
                "{}: its chunks hold {total} bytes but the snapshot records {}; run `cairn check --read-data`",
                String::from_utf8_lossy(path),
                n.size
            )));
        }
        Ok(Contents {
            reader,
            chunks: n.content.iter(),
            head: Vec::new(),
            skip: Vec::new(),
            taken: 0,
            buf: Vec::new(),
            pos: 0,
            path: path.to_vec(),
            failure: None,
        })
    }

    /// The error to report for a failed copy: the damage found while
    /// reading, else the output's failure.
    fn error(&mut self, e: std::io::Error) -> Error {
        match self.failure.take() {
            Some(f) => Error::Input(format!(
                "{}: {f}; the dump stops here, incomplete (run `cairn check --read-data`)",
                String::from_utf8_lossy(&self.path)
            )),
            None => io("write the output", e),
        }
    }
}

impl Read for Contents<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if !self.head.is_empty() {
            let n = out.len().min(self.head.len());
            out[..n].copy_from_slice(&self.head[..n]);
            self.head.drain(..n);
            return Ok(n);
        }
        while self.pos == self.buf.len() {
            let Some(id) = self.chunks.next() else {
                return Ok(0);
            };
            self.taken += 1;
            if self.skip.get(self.taken - 1) == Some(&true) {
                continue;
            }
            match self.reader.load_into(id, &mut self.buf) {
                Ok(BlobKind::Chunk) => self.pos = 0,
                Ok(_) => {
                    self.failure = Some(cairn_repo::Error::MissingBlob(*id));
                    return Err(std::io::Error::other("damaged"));
                }
                Err(e) => {
                    self.failure = Some(e);
                    return Err(std::io::Error::other("damaged"));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let r = pax_records(&[("path".into(), b"a".to_vec())]);
        assert_eq!(r, b"9 path=a\n");
        // 100 bytes besides the length: a three-digit length makes 103.
        let long = vec![b'x'; 93];
        let r = pax_records(&[("path".into(), long)]);
        assert_eq!(&r[..4], b"103 ");
        assert_eq!(r.len(), 103);
        // 97 besides: two digits would make 99, which fits.
        let r = pax_records(&[("path".into(), vec![b'x'; 90])]);
        assert_eq!(&r[..3], b"99 ");
        assert_eq!(r.len(), 99);
    }

    #[test]
    fn times_and_acls_in_their_text_forms() {
        assert_eq!(stamp(5, 0), b"5");
        assert_eq!(stamp(1_234_567_890, 123_456_789), b"1234567890.123456789");
        assert_eq!(stamp(-2, 500_000_000), b"-1.500000000");
        assert_eq!(stamp(-1, 250_000_000), b"-0.750000000");
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 6, 1234),
            (4, 4, u32::MAX),
            (8, 4, 5678),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&acl).unwrap(),
            "user::rw-,user:1234:rw-,group::r--,group:5678:r--,mask::rw-,other::r--"
        );
        assert_eq!(acl_text(b"junk"), None);
        assert_eq!(acl_text(&[2, 0, 0, 0, 1]), None);
    }
}
