//! Property tests: every encoding round-trips, no decoder panics on
//! arbitrary bytes, and valid encodings with a few bytes changed, cut off
//! or inserted decode to something that keeps each decoder's promises, or
//! to an error. Random bytes rarely get past a magic number or a version
//! byte; mutated valid encodings reach the fields behind them. The fuzz
//! targets under `fuzz/` go further.

use crate::blob::{BlobHeader, BlobKind};
use crate::config::Config;
use crate::index::{self, IndexPack};
use crate::keyfile::{Kdf, KeyFile, Role, Secrets};
use crate::pack::{PACK_MAGIC, PackEntry, PackTrailer, WRAPPED_LEN, decode_pack_trailer};
use crate::snapshot::{self, Body, Envelope};
use crate::tree::{Node, NodeType, Time, Tree, valid_name};
use crate::{FORMAT_MAJOR, Id};
use proptest::prelude::*;
use proptest::sample::Index;

fn id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

fn trailer() -> impl Strategy<Value = PackTrailer> {
    trailer_of(1..5000)
}

/// A trailer whose records have lengths in `lengths`.
fn trailer_of(lengths: std::ops::Range<u32>) -> impl Strategy<Value = PackTrailer> {
    (
        any::<[u8; 16]>(),
        proptest::collection::vec((any::<bool>(), id(), lengths, any::<u32>()), 0..8),
    )
        .prop_map(|(key_id, es)| {
            let mut off = PACK_MAGIC.len() as u64;
            let entries = es
                .into_iter()
                .map(|(tree, id, length, raw_len)| {
                    let e = PackEntry {
                        kind: if tree {
                            BlobKind::Tree
                        } else {
                            BlobKind::Chunk
                        },
                        id,
                        offset: off,
                        length,
                        raw_len,
                    };
                    off += u64::from(length);
                    e
                })
                .collect();
            PackTrailer {
                key_id,
                wrapped: [7; WRAPPED_LEN],
                entries,
            }
        })
}

/// A pack as an index lists it: its size is what its trailer describes.
fn index_pack(pack: Id, trailer: PackTrailer) -> IndexPack {
    let end = trailer
        .entries
        .last()
        .map(|e| e.offset + u64::from(e.length))
        .unwrap_or(PACK_MAGIC.len() as u64);
    IndexPack {
        pack,
        size: end + trailer.encode_tail().len() as u64,
        trailer,
    }
}

/// A whole pack: magic, records (zeros: no decoder here looks inside
/// them) and the tail.
fn whole_pack(t: &PackTrailer) -> Vec<u8> {
    let end = t
        .entries
        .last()
        .map_or(PACK_MAGIC.len() as u64, |e| e.offset + u64::from(e.length));
    let mut pack = PACK_MAGIC.to_vec();
    pack.resize(end as usize, 0);
    pack.extend_from_slice(&t.encode_tail());
    pack
}

fn node() -> impl Strategy<Value = Node> {
    (
        proptest::collection::vec(any::<u8>(), 1..12),
        1u64..=7,
        (
            0u32..0o10000,
            any::<u32>(),
            any::<i64>(),
            0u32..1_000_000_000,
        ),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 1..8),
                proptest::collection::vec(any::<u8>(), 0..8),
            ),
            0..2,
        ),
        proptest::collection::vec(id(), 0..3),
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..10)),
            proptest::option::of((any::<u64>(), any::<u64>())),
            proptest::option::of((30u64..200, proptest::collection::vec(any::<u8>(), 0..6))),
        ),
    )
        .prop_map(
            |(name, kind, (mode, uid, sec, nsec), xattrs, ids, (target, link, unknown))| {
                let kind = [
                    NodeType::File,
                    NodeType::Dir,
                    NodeType::Symlink,
                    NodeType::Fifo,
                    NodeType::CharDev,
                    NodeType::BlockDev,
                    NodeType::Socket,
                ][kind as usize - 1];
                let mut name: Vec<u8> = name
                    .into_iter()
                    .map(|b| if b == b'/' || b == 0 { b'x' } else { b })
                    .collect();
                if !valid_name(&name) {
                    name = b"n".to_vec();
                }
                let t = Time { sec, nsec };
                Node {
                    name,
                    kind: Some(kind),
                    mode,
                    uid,
                    gid: uid.rotate_left(7),
                    user: Some("user".into()),
                    group: (uid % 2 == 0).then(|| "group".into()),
                    mtime: t,
                    atime: Time { sec: sec / 3, nsec },
                    ctime: t,
                    size: u64::from(uid),
                    xattrs,
                    target: if kind == NodeType::Symlink {
                        target
                    } else {
                        None
                    },
                    rdev: if matches!(kind, NodeType::CharDev | NodeType::BlockDev) {
                        u64::from(mode)
                    } else {
                        0
                    },
                    link,
                    nlink: if link.is_some() { 2 } else { 1 },
                    subtree: (kind == NodeType::Dir)
                        .then(|| ids.first().copied().unwrap_or_default()),
                    content: if kind == NodeType::File { ids } else { vec![] },
                    unknown: unknown.into_iter().collect(),
                }
            },
        )
}

/// A valid tree: names sorted and unique, as the decoder demands.
fn tree() -> impl Strategy<Value = Tree> {
    proptest::collection::vec(node(), 0..5).prop_map(|mut nodes| {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        Tree { nodes }
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<i64>(),
        ".{0,12}",
        proptest::collection::vec("[a-z]{1,8}", 0..3),
        (id(), proptest::option::of(id()), proptest::option::of(id())),
        any::<[u8; 16]>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(time_ns, group, tags, (root, parent, repaired_from), key_id, wrapped, n)| Envelope {
                time_ns,
                group,
                tags,
                root,
                parent,
                key_id,
                wrapped: wrapped.then_some([9; WRAPPED_LEN]),
                files: n,
                dirs: n / 2,
                bytes: n / 3,
                added_bytes: n / 5,
                repaired_from,
                unknown: if n % 3 == 0 {
                    vec![(40, vec![1, 2])]
                } else {
                    vec![]
                },
            },
        )
}

fn body() -> impl Strategy<Value = Body> {
    (
        ".{0,10}",
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..12), 0..3),
        proptest::collection::vec("[a-z/-]{1,8}", 0..3),
        any::<u64>(),
    )
        .prop_map(|(hostname, paths, command, n)| Body {
            hostname,
            username: "u".into(),
            paths,
            excludes: command.iter().take(1).cloned().collect(),
            command,
            program: "cairn".into(),
            new_files: n,
            changed_files: n / 2,
            unchanged_files: n / 3,
            bytes_read: n / 5,
            duration_ms: n / 7,
            errors: n % 4,
            unknown: vec![],
        })
}

fn keyfile() -> impl Strategy<Value = KeyFile> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<i64>(),
        "[a-z@.]{0,20}",
        proptest::option::of((any::<[u8; 16]>(), 8u32..1_000_000, 1u32..10, 1u32..10)),
        proptest::collection::vec(any::<u8>(), 0..110),
    )
        .prop_map(|(owner, repo_id, created_ns, label, kdf, secret)| KeyFile {
            role: if owner { Role::Owner } else { Role::PutOnly },
            repo_id,
            owner_public: [4; 32],
            created_ns,
            label,
            kdf: kdf.map(|(salt, m_kib, t, p)| Kdf { salt, m_kib, t, p }),
            secret,
        })
}

fn config() -> impl Strategy<Value = Config> {
    (any::<[u8; 16]>(), any::<i64>(), 8u32..24).prop_map(|(repo_id, created, shift)| {
        let avg = 1u32 << shift;
        Config::new(repo_id, avg / 4, avg, avg * 4, created)
    })
}

/// A blob record: chunks reference nothing, trees reference a few blobs.
fn record() -> impl Strategy<Value = (BlobHeader, Vec<u8>)> {
    (
        any::<bool>(),
        id(),
        proptest::collection::vec(id(), 0..4),
        proptest::collection::vec(any::<u8>(), 0..60),
    )
        .prop_map(|(tree, id, refs, sealed)| {
            let (kind, refs) = if tree {
                (BlobKind::Tree, refs)
            } else {
                (BlobKind::Chunk, vec![])
            };
            (BlobHeader { kind, id, refs }, sealed)
        })
}

/// What bit rot, a torn write or a hostile writer does to a valid encoding.
#[derive(Clone, Debug)]
enum Mutation {
    /// One to four bytes set to new values.
    Set(Vec<(Index, u8)>),
    /// Everything from a point on cut off.
    Truncate(Index),
    /// One byte inserted.
    Insert(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => proptest::collection::vec((any::<Index>(), any::<u8>()), 1..=4).prop_map(Mutation::Set),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Set(edits) if !bytes.is_empty() => {
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
        }
        Mutation::Set(_) => {}
        Mutation::Truncate(at) if !bytes.is_empty() => bytes.truncate(at.index(bytes.len())),
        Mutation::Truncate(_) => {}
        Mutation::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
    }
    bytes
}

proptest! {
    #[test]
    fn index_roundtrip(packs in proptest::collection::vec((id(), trailer()), 0..4)) {
        let packs: Vec<IndexPack> = packs.into_iter().map(|(pack, trailer)| index_pack(pack, trailer)).collect();
        prop_assert_eq!(index::decode(&index::encode(&packs)).unwrap(), packs);
    }

    /// A valid index file with bytes changed decodes to packs whose every
    /// record lies inside its pack, or to an error; never a panic.
    #[test]
    fn index_mutated_is_checked(packs in proptest::collection::vec((id(), trailer()), 1..3), m in mutation()) {
        let packs: Vec<IndexPack> = packs.into_iter().map(|(pack, trailer)| index_pack(pack, trailer)).collect();
        let bytes = mutate(index::encode(&packs), &m);
        if let Ok(got) = index::decode(&bytes) {
            for p in got {
                for e in p.trailer.entries {
                    prop_assert!(e.offset >= 8);
                    prop_assert!(e.offset + u64::from(e.length) <= p.size);
                }
            }
        }
    }

    #[test]
    fn pack_trailer_roundtrip(t in trailer()) {
        let end: u64 = t.entries.last().map(|e| e.offset + u64::from(e.length)).unwrap_or(8);
        let mut pack = PACK_MAGIC.to_vec();
        pack.resize(end as usize, 0);
        pack.extend_from_slice(&t.encode_tail());
        let d = decode_pack_trailer(&pack).unwrap();
        d.check_layout(end).unwrap();
        prop_assert_eq!(d, t);
    }

    #[test]
    fn config_roundtrip(repo_id in any::<[u8; 16]>(), created in any::<i64>(), shift in 8u32..24) {
        let avg = 1u32 << shift;
        let c = Config::new(repo_id, avg / 4, avg, avg * 4, created);
        prop_assert_eq!(Config::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn keyfile_roundtrip(owner in any::<bool>(), secret in proptest::collection::vec(any::<u8>(), 0..100),
                         kdf in proptest::option::of((any::<[u8; 16]>(), 8u32..1000, 1u32..5, 1u32..5)),
                         label in "[a-z@.]{0,20}", created in any::<i64>()) {
        let k = KeyFile {
            role: if owner { Role::Owner } else { Role::PutOnly },
            repo_id: [3; 16],
            owner_public: [4; 32],
            created_ns: created,
            label,
            kdf: kdf.map(|(salt, m_kib, t, p)| Kdf { salt, m_kib, t, p }),
            secret,
        };
        prop_assert_eq!(KeyFile::decode(&k.encode()).unwrap(), k);
        let s = Secrets { owner_secret: owner.then_some([1; 32]), dedup: [2; 32] };
        prop_assert_eq!(Secrets::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn snapshot_roundtrip(time in any::<i64>(), group in ".{0,30}", tags in proptest::collection::vec("[a-z]{1,8}", 0..3),
                          root in id(), parent in proptest::option::of(id()), n in any::<u64>(),
                          paths in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..3)) {
        let e = Envelope { time_ns: time, group, tags, root, parent, key_id: [1; 16], wrapped: Some([2; WRAPPED_LEN]),
                           files: n, dirs: n / 2, bytes: n / 3, added_bytes: n / 4, ..Envelope::default() };
        let mut bytes = e.encode_header();
        bytes.extend_from_slice(b"sealed body");
        let d = snapshot::decode(&bytes).unwrap();
        prop_assert_eq!(d.envelope, e);
        prop_assert_eq!(d.sealed_body, b"sealed body");
        let b = Body { hostname: "h".into(), paths, new_files: n, duration_ms: n / 7, ..Body::default() };
        prop_assert_eq!(Body::decode(&b.encode()).unwrap(), b);
    }

    /// A mutated pack's trailer, when it decodes, still tiles the records
    /// between the magic and itself, and is exactly the pack's last bytes:
    /// readers slice records out of the pack by it.
    #[test]
    fn pack_trailer_mutated_is_checked(t in trailer_of(1..40), m in mutation()) {
        let bytes = mutate(whole_pack(&t), &m);
        if let Ok(d) = decode_pack_trailer(&bytes) {
            let tail = d.encode_tail();
            prop_assert!(bytes.ends_with(&tail));
            prop_assert!(d.check_layout((bytes.len() - tail.len()) as u64).is_ok());
        }
    }

    #[test]
    fn tree_roundtrip(t in tree()) {
        prop_assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
    }

    /// A mutated tree, when it decodes, has safe, sorted, unique names and
    /// re-encodes to a tree that decodes the same: a tree's ID is the hash
    /// of its encoding, so what is read must be what would be written.
    #[test]
    fn tree_mutated_is_checked(t in tree(), m in mutation()) {
        let bytes = mutate(t.encode(), &m);
        if let Ok(d) = Tree::decode(&bytes) {
            for n in &d.nodes {
                prop_assert!(valid_name(&n.name));
                prop_assert!(n.kind.is_some());
                prop_assert!(n.node_type() != NodeType::Dir || n.subtree.is_some());
                prop_assert!(n.mtime.nsec < 1_000_000_000 && n.atime.nsec < 1_000_000_000 && n.ctime.nsec < 1_000_000_000);
            }
            for w in d.nodes.windows(2) {
                prop_assert!(w[0].name < w[1].name);
            }
            prop_assert_eq!(Tree::decode(&d.encode()).unwrap(), d);
        }
    }

    /// A mutated snapshot, when it decodes, splits into associated data
    /// and sealed body with nothing lost, and its envelope round-trips.
    #[test]
    fn snapshot_mutated_is_checked(e in envelope(), sealed in proptest::collection::vec(any::<u8>(), 0..40),
                                   m in mutation()) {
        let mut bytes = e.encode_header();
        bytes.extend_from_slice(&sealed);
        let bytes = mutate(bytes, &m);
        if let Ok(d) = snapshot::decode(&bytes) {
            prop_assert_eq!([d.aad, d.sealed_body].concat(), bytes.clone());
            let mut again = d.envelope.encode_header();
            again.extend_from_slice(d.sealed_body);
            let d2 = snapshot::decode(&again).unwrap();
            prop_assert_eq!(d2.envelope, d.envelope);
            prop_assert_eq!(d2.sealed_body, d.sealed_body);
        }
    }

    #[test]
    fn body_mutated_is_checked(b in body(), m in mutation()) {
        let bytes = mutate(b.encode(), &m);
        if let Ok(d) = Body::decode(&bytes) {
            prop_assert_eq!(Body::decode(&d.encode()).unwrap(), d);
        }
    }

    #[test]
    fn keyfile_mutated_is_checked(k in keyfile(), m in mutation()) {
        let bytes = mutate(k.encode(), &m);
        if let Ok(d) = KeyFile::decode(&bytes) {
            prop_assert_eq!(KeyFile::decode(&d.encode()).unwrap(), d);
        }
    }

    /// Decoded secrets are whole keys: a dedup key always, an owner secret
    /// of full length when there is one (fixed-size arrays say the rest).
    #[test]
    fn secrets_mutated_are_checked(owner in proptest::option::of(any::<[u8; 32]>()), dedup in any::<[u8; 32]>(),
                                   m in mutation()) {
        let bytes = mutate(Secrets { owner_secret: owner, dedup }.encode(), &m);
        if let Ok(d) = Secrets::decode(&bytes) {
            prop_assert_eq!(Secrets::decode(&d.encode()).unwrap(), d);
        }
    }

    /// A mutated config, when it decodes, is one this build can use: a
    /// supported version and chunk sizes the chunker accepts.
    #[test]
    fn config_mutated_is_checked(c in config(), m in mutation()) {
        let bytes = mutate(c.encode(), &m);
        if let Ok(d) = Config::decode(&bytes) {
            prop_assert!((1..=FORMAT_MAJOR).contains(&d.major));
            prop_assert!(d.chunk_min >= 64 && d.chunk_min <= d.chunk_avg && d.chunk_avg <= d.chunk_max);
            prop_assert!(d.chunk_avg.is_power_of_two() && d.chunk_max <= 1 << 28);
            prop_assert_eq!(Config::decode(&d.encode()).unwrap(), d);
        }
    }

    /// A mutated record, when it decodes, is exactly its header and sealed
    /// bytes (the header being the associated data), and a chunk in it
    /// references nothing.
    #[test]
    fn record_mutated_is_checked(r in record(), m in mutation()) {
        let bytes = mutate(r.0.encode_record(&r.1), &m);
        if let Ok(d) = crate::blob::decode_record(&bytes) {
            prop_assert_eq!(d.header.encode_record(d.sealed), bytes.clone());
            prop_assert_eq!(d.aad, &d.header.encode()[..]);
            prop_assert!(d.header.kind == BlobKind::Tree || d.header.refs.is_empty());
        }
    }

    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = index::decode(&data);
        let _ = decode_pack_trailer(&data);
        let _ = Config::decode(&data);
        let _ = KeyFile::decode(&data);
        let _ = Secrets::decode(&data);
        let _ = snapshot::decode(&data);
        let _ = Body::decode(&data);
        let _ = crate::blob::decode_record(&data);
        let _ = crate::tree::Tree::decode(&data);
    }
}
