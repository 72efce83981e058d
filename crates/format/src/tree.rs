//! Tree blobs: one directory listing (`docs/format.md`, "Trees").
//!
//! `version u8 | count varint | (len varint | node fields)*`. Each node is a
//! sequence of tagged fields; readers skip tags they do not know and keep
//! them, so a newer minor version can add metadata without breaking older
//! readers. Names are raw bytes (Linux names need not be UTF-8).

use crate::error::{Error, Result, invalid};
use crate::id::Id;
use crate::wire::{Reader, Writer, field_i64, field_id, field_ids, field_str, field_u64};

/// Tree encoding version written by this build.
pub const TREE_VERSION: u8 = 1;

/// Type of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeType {
    /// Regular file.
    File = 1,
    /// Directory.
    Dir = 2,
    /// Symbolic link.
    Symlink = 3,
    /// Named pipe.
    Fifo = 4,
    /// Character device.
    CharDev = 5,
    /// Block device.
    BlockDev = 6,
    /// Unix socket (restored as nothing: sockets cannot be recreated).
    Socket = 7,
}

impl NodeType {
    fn from_u64(v: u64) -> Result<Self> {
        Ok(match v {
            1 => NodeType::File,
            2 => NodeType::Dir,
            3 => NodeType::Symlink,
            4 => NodeType::Fifo,
            5 => NodeType::CharDev,
            6 => NodeType::BlockDev,
            7 => NodeType::Socket,
            _ => return Err(invalid("tree node", format!("unknown node type {v}"))),
        })
    }
    /// Short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            NodeType::File => "file",
            NodeType::Dir => "dir",
            NodeType::Symlink => "symlink",
            NodeType::Fifo => "fifo",
            NodeType::CharDev => "chardev",
            NodeType::BlockDev => "blockdev",
            NodeType::Socket => "socket",
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Time {
    /// Seconds (may be negative).
    pub sec: i64,
    /// Nanoseconds, below 10^9.
    pub nsec: u32,
}

/// One directory entry with its full metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Node {
    /// Raw name bytes: not empty, no `/`, no NUL, not `.` or `..`.
    pub name: Vec<u8>,
    /// Entry type.
    pub kind: Option<NodeType>,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 07777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Owner name, when it resolved.
    pub user: Option<String>,
    /// Group name, when it resolved.
    pub group: Option<String>,
    /// Modification time.
    pub mtime: Time,
    /// Access time (informational; restored).
    pub atime: Time,
    /// Status change time (informational; cannot be restored).
    pub ctime: Time,
    /// Size in bytes (files: content length).
    pub size: u64,
    /// Extended attributes, including POSIX ACLs (`system.posix_acl_*`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Symlink target, raw bytes.
    pub target: Option<Vec<u8>>,
    /// Device number of char/block devices.
    pub rdev: u64,
    /// Hardlink identity `(dev, inode)` of files with more than one link.
    pub link: Option<(u64, u64)>,
    /// Number of links at backup time.
    pub nlink: u64,
    /// Chunk IDs of a file's contents, in order.
    pub content: Vec<Id>,
    /// Tree ID of a directory.
    pub subtree: Option<Id>,
    /// Fields this version does not know, kept verbatim.
    pub unknown: Vec<(u64, Vec<u8>)>,
}

mod tag {
    pub const NAME: u64 = 1;
    pub const TYPE: u64 = 2;
    pub const MODE: u64 = 3;
    pub const UID: u64 = 4;
    pub const GID: u64 = 5;
    pub const USER: u64 = 6;
    pub const GROUP: u64 = 7;
    pub const MTIME_SEC: u64 = 8;
    pub const MTIME_NSEC: u64 = 9;
    pub const ATIME_SEC: u64 = 10;
    pub const ATIME_NSEC: u64 = 11;
    pub const CTIME_SEC: u64 = 12;
    pub const CTIME_NSEC: u64 = 13;
    pub const SIZE: u64 = 14;
    pub const XATTR: u64 = 15;
    pub const TARGET: u64 = 16;
    pub const RDEV: u64 = 17;
    pub const LINK: u64 = 18;
    pub const CONTENT: u64 = 19;
    pub const SUBTREE: u64 = 20;
    pub const NLINK: u64 = 21;
}

/// Whether a raw name is safe to join under a restore target.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Node {
    /// The node type, defaulting to a file for a missing field.
    pub fn node_type(&self) -> NodeType {
        self.kind.unwrap_or(NodeType::File)
    }

    fn encode(&self, w: &mut Writer) {
        w.field(tag::NAME, &self.name);
        w.field_u64(tag::TYPE, self.node_type() as u64);
        w.field_u64(tag::MODE, u64::from(self.mode));
        w.field_u64(tag::UID, u64::from(self.uid));
        w.field_u64(tag::GID, u64::from(self.gid));
        if let Some(u) = &self.user {
            w.field(tag::USER, u.as_bytes());
        }
        if let Some(g) = &self.group {
            w.field(tag::GROUP, g.as_bytes());
        }
        for (ts, tn, t) in [
            (tag::MTIME_SEC, tag::MTIME_NSEC, self.mtime),
            (tag::ATIME_SEC, tag::ATIME_NSEC, self.atime),
            (tag::CTIME_SEC, tag::CTIME_NSEC, self.ctime),
        ] {
            if ts == tag::ATIME_SEC && t == Time::default() {
                continue;
            }
            w.field_i64(ts, t.sec);
            w.field_u64(tn, u64::from(t.nsec));
        }
        w.field_u64(tag::SIZE, self.size);
        for (k, v) in &self.xattrs {
            let mut x = Writer::new();
            x.bytes(k).bytes(v);
            w.field(tag::XATTR, &x.buf);
        }
        if let Some(t) = &self.target {
            w.field(tag::TARGET, t);
        }
        if self.rdev != 0 {
            w.field_u64(tag::RDEV, self.rdev);
        }
        if let Some((dev, ino)) = self.link {
            let mut x = Writer::new();
            x.varint(dev).varint(ino);
            w.field(tag::LINK, &x.buf);
        }
        if !self.content.is_empty() {
            let mut ids = Vec::with_capacity(self.content.len() * 32);
            for id in &self.content {
                ids.extend_from_slice(&id.0);
            }
            w.field(tag::CONTENT, &ids);
        }
        if let Some(s) = &self.subtree {
            w.field(tag::SUBTREE, &s.0);
        }
        if self.nlink != 0 {
            w.field_u64(tag::NLINK, self.nlink);
        }
        for (t, v) in &self.unknown {
            w.field(*t, v);
        }
    }

    fn decode(data: &[u8]) -> Result<Node> {
        const W: &str = "tree node";
        let mut n = Node::default();
        let mut r = Reader::new(data, W);
        let mut have_name = false;
        while let Some((t, v)) = r.field()? {
            match t {
                tag::NAME => {
                    n.name = v.to_vec();
                    have_name = true;
                }
                tag::TYPE => n.kind = Some(NodeType::from_u64(field_u64(v, W)?)?),
                tag::MODE => n.mode = u32_field(v)?,
                tag::UID => n.uid = u32_field(v)?,
                tag::GID => n.gid = u32_field(v)?,
                tag::USER => n.user = Some(field_str(v, W)?),
                tag::GROUP => n.group = Some(field_str(v, W)?),
                tag::MTIME_SEC => n.mtime.sec = field_i64(v, W)?,
                tag::MTIME_NSEC => n.mtime.nsec = nsec_field(v)?,
                tag::ATIME_SEC => n.atime.sec = field_i64(v, W)?,
                tag::ATIME_NSEC => n.atime.nsec = nsec_field(v)?,
                tag::CTIME_SEC => n.ctime.sec = field_i64(v, W)?,
                tag::CTIME_NSEC => n.ctime.nsec = nsec_field(v)?,
                tag::SIZE => n.size = field_u64(v, W)?,
                tag::XATTR => {
                    let mut x = Reader::new(v, "xattr");
                    let k = x.bytes()?.to_vec();
                    let val = x.bytes()?.to_vec();
                    x.finish()?;
                    n.xattrs.push((k, val));
                }
                tag::TARGET => n.target = Some(v.to_vec()),
                tag::RDEV => n.rdev = field_u64(v, W)?,
                tag::LINK => {
                    let mut x = Reader::new(v, "hardlink field");
                    let dev = x.varint()?;
                    let ino = x.varint()?;
                    x.finish()?;
                    n.link = Some((dev, ino));
                }
                tag::NLINK => n.nlink = field_u64(v, W)?,
                tag::CONTENT => n.content = field_ids(v, W)?,
                tag::SUBTREE => n.subtree = Some(field_id(v, W)?),
                _ => n.unknown.push((t, v.to_vec())),
            }
        }
        if !have_name || !valid_name(&n.name) {
            return Err(invalid(
                W,
                format!(
                    "unsafe or missing name {:?}",
                    String::from_utf8_lossy(&n.name)
                ),
            ));
        }
        if n.node_type() == NodeType::Dir && n.subtree.is_none() {
            return Err(invalid(W, "directory without a subtree"));
        }
        // A missing type means file: say so, so that the node re-encodes
        // to what it decoded from (encoding always writes the type).
        n.kind = Some(n.node_type());
        Ok(n)
    }
}

fn u32_field(v: &[u8]) -> Result<u32> {
    u32::try_from(field_u64(v, "tree node")?)
        .map_err(|_| invalid("tree node", "value over 32 bits"))
}

fn nsec_field(v: &[u8]) -> Result<u32> {
    let n = u32_field(v)?;
    if n >= 1_000_000_000 {
        return Err(invalid("tree node", "nanoseconds out of range"));
    }
    Ok(n)
}

/// A directory listing, sorted by name bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    /// Entries in strictly increasing name order.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Encodes the tree (the plaintext that gets an ID and is sealed).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(TREE_VERSION).varint(self.nodes.len() as u64);
        let mut nw = Writer::new();
        for n in &self.nodes {
            nw.buf.clear();
            n.encode(&mut nw);
            w.bytes(&nw.buf);
        }
        w.buf
    }

    /// Decodes and validates a tree: known version, safe and unique names
    /// in sorted order.
    pub fn decode(data: &[u8]) -> Result<Tree> {
        let mut nodes: Vec<Node> = Vec::new();
        each_node(data, |_, n| nodes.push(n))?;
        Ok(Tree { nodes })
    }

    /// The IDs this tree references, each once: the visible edges.
    pub fn refs(&self) -> Vec<Id> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for n in &self.nodes {
            for id in n.subtree.iter().chain(n.content.iter()) {
                if seen.insert(*id) {
                    out.push(*id);
                }
            }
        }
        out
    }
}

/// Walks an encoded tree, validating it as [`Tree::decode`] does, and
/// hands each node with the span of its encoding in `data` to `f`.
fn each_node(data: &[u8], mut f: impl FnMut((u32, u32), Node)) -> Result<()> {
    let mut r = Reader::new(data, "tree");
    let v = r.u8()?;
    if v != TREE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "tree",
            found: u32::from(v),
            supported: u32::from(TREE_VERSION),
        });
    }
    if u32::try_from(data.len()).is_err() {
        return Err(invalid("tree", "larger than 4 GiB"));
    }
    let count = r.len(1)?;
    let mut prev: Option<Vec<u8>> = None;
    for _ in 0..count {
        let body = r.bytes()?;
        let end = r.pos();
        let span = ((end - body.len()) as u32, end as u32);
        let n = Node::decode(body)?;
        if prev.as_ref().is_some_and(|p| *p >= n.name) {
            return Err(invalid("tree", "names are not strictly sorted"));
        }
        prev = Some(n.name.clone());
        f(span, n);
    }
    r.finish()
}

/// A validated tree kept as its encoding plus where each node lies in it,
/// for readers that hold many trees at once (a mounted snapshot). A
/// decoded [`Node`] with its allocations takes several times its encoded
/// size: a directory of 200,000 files is about 24 MB encoded and about
/// 90 MB as a [`Tree`]. Nodes are decoded when asked for; the whole tree
/// was validated when the listing was made, so that cannot fail.
#[derive(Clone, Debug)]
pub struct Listing {
    data: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl Listing {
    /// Validates an encoded tree and keeps it.
    pub fn decode(data: Vec<u8>) -> Result<Listing> {
        let mut spans = Vec::new();
        each_node(&data, |span, _| spans.push(span))?;
        Ok(Listing { data, spans })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the directory is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The entry at `i` (in name order), or `None` past the end.
    pub fn node(&self, i: usize) -> Option<Node> {
        let &(a, b) = self.spans.get(i)?;
        Some(Node::decode(&self.data[a as usize..b as usize]).expect("validated when listed"))
    }

    /// The name of entry `i`, without decoding the rest of it.
    pub fn name(&self, i: usize) -> Option<&[u8]> {
        let &(a, b) = self.spans.get(i)?;
        let mut r = Reader::new(&self.data[a as usize..b as usize], "tree node");
        while let Ok(Some((t, v))) = r.field() {
            if t == tag::NAME {
                return Some(v);
            }
        }
        None
    }

    /// The position of the entry called `name`.
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.name(mid)?.cmp(name) {
                std::cmp::Ordering::Equal => return Some(mid),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// The IDs this tree references, each once, as [`Tree::refs`].
    pub fn refs(&self) -> Vec<Id> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for n in (0..self.len()).filter_map(|i| self.node(i)) {
            for id in n.subtree.iter().chain(n.content.iter()) {
                if seen.insert(*id) {
                    out.push(*id);
                }
            }
        }
        out
    }

    /// Bytes held, for caches that bound their memory.
    pub fn held_bytes(&self) -> usize {
        self.data.capacity() + self.spans.capacity() * 8
    }

    /// The whole tree, decoded.
    pub fn to_tree(&self) -> Tree {
        Tree {
            nodes: (0..self.len()).filter_map(|i| self.node(i)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node_strategy() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(1u8..=255, 1..20),
            0u32..0o7777,
            any::<u32>(),
            any::<i64>(),
            0u32..1_000_000_000,
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 1..10),
                    proptest::collection::vec(any::<u8>(), 0..10),
                ),
                0..3,
            ),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            any::<bool>(),
        )
            .prop_map(|(name, mode, uid, sec, nsec, xattrs, content, link)| {
                let name: Vec<u8> = name
                    .into_iter()
                    .map(|b| if b == b'/' { b'x' } else { b })
                    .collect();
                let name = if name == b"." || name == b".." {
                    b"n".to_vec()
                } else {
                    name
                };
                Node {
                    name,
                    kind: Some(NodeType::File),
                    mode,
                    uid,
                    gid: uid / 2,
                    user: Some("u".into()),
                    mtime: Time { sec, nsec },
                    xattrs,
                    content: content.into_iter().map(Id).collect(),
                    link: link.then_some((1, 2)),
                    nlink: if link { 2 } else { 1 },
                    ..Node::default()
                }
            })
    }

    proptest! {
        #[test]
        fn tree_roundtrip(mut nodes in proptest::collection::vec(node_strategy(), 0..6)) {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let t = Tree { nodes };
            let d = Tree::decode(&t.encode()).unwrap();
            prop_assert_eq!(d, t);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::decode(&data);
        }
    }

    proptest! {
        #[test]
        fn listing_agrees_with_tree(mut nodes in proptest::collection::vec(node_strategy(), 0..6)) {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let t = Tree { nodes };
            let l = Listing::decode(t.encode()).unwrap();
            prop_assert_eq!(l.len(), t.nodes.len());
            prop_assert_eq!(l.refs(), t.refs());
            for (i, n) in t.nodes.iter().enumerate() {
                prop_assert_eq!(l.name(i), Some(&n.name[..]));
                prop_assert_eq!(l.find(&n.name), Some(i));
                prop_assert_eq!(l.node(i), Some(n.clone()));
            }
            prop_assert_eq!(l.find(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), None);
            prop_assert_eq!(l.to_tree(), t);
        }

        #[test]
        fn listing_refuses_what_tree_refuses(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(Listing::decode(data.clone()).is_ok(), Tree::decode(&data).is_ok());
        }
    }

    #[test]
    fn rejects_traversal_names() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0"] {
            let t = Tree {
                nodes: vec![Node {
                    name: bad.to_vec(),
                    ..Node::default()
                }],
            };
            assert!(Tree::decode(&t.encode()).is_err(), "{bad:?}");
        }
    }

    /// Found by the `tree` fuzz target: a node without a type field is a
    /// file, and re-encodes to a tree that decodes the same.
    #[test]
    fn node_without_type_is_a_file_and_roundtrips() {
        let t = Tree::decode(&[0x01, 0x01, 0x04, 0x01, 0x02, 0xff, 0xff]).unwrap();
        assert_eq!(t.nodes[0].kind, Some(NodeType::File));
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn unknown_fields_survive() {
        let t = Tree {
            nodes: vec![Node {
                name: b"a".to_vec(),
                kind: Some(NodeType::File),
                unknown: vec![(99, b"future".to_vec())],
                ..Node::default()
            }],
        };
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
    }
}
