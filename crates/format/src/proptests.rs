//! Property tests: every encoding round-trips, and no decoder panics on
//! arbitrary bytes (the fuzz targets under `fuzz/` go further).

use crate::Id;
use crate::blob::BlobKind;
use crate::config::Config;
use crate::index::{self, IndexPack};
use crate::keyfile::{Kdf, KeyFile, Role, Secrets};
use crate::pack::{PACK_MAGIC, PackEntry, PackTrailer, WRAPPED_LEN, decode_pack_trailer};
use crate::snapshot::{self, Body, Envelope};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

fn trailer() -> impl Strategy<Value = PackTrailer> {
    (
        any::<[u8; 16]>(),
        proptest::collection::vec((any::<bool>(), id(), 1u32..5000, any::<u32>()), 0..8),
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

proptest! {
    #[test]
    fn index_roundtrip(packs in proptest::collection::vec((id(), trailer()), 0..4)) {
        let packs: Vec<IndexPack> = packs.into_iter().map(|(pack, trailer)| index_pack(pack, trailer)).collect();
        prop_assert_eq!(index::decode(&index::encode(&packs)).unwrap(), packs);
    }

    /// A valid index file with bytes changed decodes to packs whose every
    /// record lies inside its pack, or to an error; never a panic.
    #[test]
    fn index_mutated_is_checked(packs in proptest::collection::vec((id(), trailer()), 1..3),
                                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let packs: Vec<IndexPack> = packs.into_iter().map(|(pack, trailer)| index_pack(pack, trailer)).collect();
        let mut bytes = index::encode(&packs);
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
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
