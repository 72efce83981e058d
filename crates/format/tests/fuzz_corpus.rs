//! The seed corpus of the fuzz targets, kept in `fuzz/corpus/<target>/`.
//!
//! From random bytes libFuzzer spends its short CI runs failing magic
//! numbers, versions and length prefixes; seeds that are valid encodings let
//! it mutate the fields behind them from the first execution. The seeds are
//! built here with the real encoders and compared with the committed files,
//! so a format change that leaves them stale fails this test rather than
//! quietly sending the fuzzers back to the magic numbers. Each seed must
//! also decode, which is what makes it a useful seed.
//!
//! Only files named `seed-*` are checked: an input a fuzzer found and
//! someone committed next to them (a crash reproducer) is left alone.
//! After a deliberate format change, rewrite the seeds with
//! `CAIRN_WRITE_FUZZ_CORPUS=1 cargo test -p cairn-format --test fuzz_corpus`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_format::Id;
use cairn_format::blob::{BlobHeader, BlobKind, decode_record};
use cairn_format::config::Config;
use cairn_format::index::{self, IndexPack};
use cairn_format::keyfile::{Kdf, KeyFile, Role, Secrets};
use cairn_format::pack::{PACK_MAGIC, PackEntry, PackTrailer, WRAPPED_LEN, decode_pack_trailer};
use cairn_format::snapshot::{self, Body, Envelope};
use cairn_format::tree::{Node, NodeType, Time, Tree};

/// Recognisable filler: `start, start+1, ...`.
fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn id(start: u8) -> Id {
    Id(seq(start))
}

/// Deterministic bytes that do not compress: the chunker needs inputs whose
/// rolling hash finds cut points, and sealed payloads look like this.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn tree_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let t = Time {
        sec: 1_767_323_045,
        nsec: 123_456_789,
    };
    let file = Node {
        name: b"notes.txt".to_vec(),
        kind: Some(NodeType::File),
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        user: Some("alice".into()),
        group: Some("users".into()),
        mtime: t,
        ctime: t,
        size: 66,
        content: vec![id(0x10), id(0x30)],
        nlink: 1,
        ..Node::default()
    };
    // One node of every type, with every optional field somewhere, sorted
    // by name as the decoder demands.
    let mixed = Tree {
        nodes: vec![
            Node {
                name: b"bin".to_vec(),
                kind: Some(NodeType::Dir),
                mode: 0o755,
                subtree: Some(id(0x50)),
                mtime: t,
                ..Node::default()
            },
            Node {
                name: b"data\xff".to_vec(),
                kind: Some(NodeType::File),
                mode: 0o4750,
                size: 4096,
                atime: Time { sec: -1, nsec: 5 },
                xattrs: vec![
                    (b"user.comment".to_vec(), b"x".to_vec()),
                    (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
                ],
                link: Some((2049, 131_075)),
                nlink: 2,
                content: vec![id(0x70)],
                ..Node::default()
            },
            Node {
                name: b"link".to_vec(),
                kind: Some(NodeType::Symlink),
                mode: 0o777,
                target: Some(b"../data\xff".to_vec()),
                ..Node::default()
            },
            Node {
                name: b"null".to_vec(),
                kind: Some(NodeType::CharDev),
                mode: 0o666,
                rdev: 0x103,
                ..Node::default()
            },
            Node {
                name: b"pipe".to_vec(),
                kind: Some(NodeType::Fifo),
                mode: 0o600,
                ..Node::default()
            },
            Node {
                name: b"sda".to_vec(),
                kind: Some(NodeType::BlockDev),
                rdev: 0x800,
                ..Node::default()
            },
            Node {
                name: b"sock".to_vec(),
                kind: Some(NodeType::Socket),
                unknown: vec![(99, b"from a newer minor version".to_vec())],
                ..Node::default()
            },
        ],
    };
    vec![
        ("seed-empty", Tree::default().encode()),
        ("seed-file", Tree { nodes: vec![file] }.encode()),
        ("seed-mixed", mixed.encode()),
    ]
}

fn snapshot_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let envelope = |e: &Envelope, sealed: &[u8]| {
        let mut b = e.encode_header();
        b.extend_from_slice(sealed);
        b
    };
    let min = Envelope {
        root: id(0x50),
        ..Envelope::default()
    };
    let full = Envelope {
        time_ns: 1_767_323_045_123_456_789,
        group: "laptop:/home".into(),
        tags: vec!["daily".into(), "pre-upgrade".into()],
        root: id(0x50),
        parent: Some(id(0x90)),
        key_id: seq(0xb0),
        wrapped: Some([0xa5; WRAPPED_LEN]),
        files: 1234,
        dirs: 56,
        bytes: 7_890_123,
        added_bytes: 4567,
        repaired_from: Some(id(0xd0)),
        unknown: vec![(77, vec![1, 2, 3])],
    };
    let body = Body {
        hostname: "laptop".into(),
        username: "alice".into(),
        paths: vec![b"/home/alice".to_vec(), b"/etc\xff".to_vec()],
        command: vec!["cairn".into(), "backup".into(), "/home/alice".into()],
        excludes: vec!["*.tmp".into()],
        program: "cairn 0.1.0".into(),
        new_files: 10,
        changed_files: 2,
        unchanged_files: 1222,
        bytes_read: 123_456,
        duration_ms: 1500,
        errors: 1,
        unknown: vec![(40, b"later".to_vec())],
    };
    vec![
        ("seed-envelope-min", envelope(&min, b"")),
        ("seed-envelope-full", envelope(&full, &noise(56, 1))),
        ("seed-body-min", Body::default().encode()),
        ("seed-body-full", body.encode()),
    ]
}

/// A whole pack: magic, a chunk record and a tree record referencing it,
/// and the trailer listing both.
fn pack(key: u8) -> (Vec<u8>, PackTrailer) {
    let chunk = BlobHeader {
        kind: BlobKind::Chunk,
        id: id(key),
        refs: vec![],
    }
    .encode_record(&noise(40, u64::from(key) + 2));
    let tree = BlobHeader {
        kind: BlobKind::Tree,
        id: id(key + 0x20),
        refs: vec![id(key)],
    }
    .encode_record(&noise(48, u64::from(key) + 3));
    let mut bytes = PACK_MAGIC.to_vec();
    let mut entries = Vec::new();
    for (kind, bid, rec, raw_len) in [
        (BlobKind::Chunk, id(key), &chunk, 20),
        (BlobKind::Tree, id(key + 0x20), &tree, 31),
    ] {
        entries.push(PackEntry {
            kind,
            id: bid,
            offset: bytes.len() as u64,
            length: rec.len() as u32,
            raw_len,
        });
        bytes.extend_from_slice(rec);
    }
    let trailer = PackTrailer {
        key_id: seq(0xb0),
        wrapped: [0xa5; WRAPPED_LEN],
        entries,
    };
    bytes.extend_from_slice(&trailer.encode_tail());
    (bytes, trailer)
}

fn pack_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let empty = PackTrailer {
        key_id: seq(0xb0),
        wrapped: [0xa5; WRAPPED_LEN],
        entries: vec![],
    };
    let mut empty_pack = PACK_MAGIC.to_vec();
    empty_pack.extend_from_slice(&empty.encode_tail());
    let (whole, _) = pack(0x10);
    vec![
        ("seed-pack-empty", empty_pack),
        ("seed-pack", whole),
        (
            "seed-record-chunk",
            BlobHeader {
                kind: BlobKind::Chunk,
                id: id(0x10),
                refs: vec![],
            }
            .encode_record(&noise(40, 4)),
        ),
        (
            "seed-record-tree",
            BlobHeader {
                kind: BlobKind::Tree,
                id: id(0x30),
                refs: vec![id(0x10), id(0x50)],
            }
            .encode_record(&noise(48, 5)),
        ),
    ]
}

fn index_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let listed = |key: u8| {
        let (bytes, trailer) = pack(key);
        IndexPack {
            pack: id(key + 0x80),
            size: bytes.len() as u64,
            trailer,
        }
    };
    vec![
        ("seed-empty", index::encode(&[])),
        ("seed-one", index::encode(&[listed(0x10)])),
        ("seed-two", index::encode(&[listed(0x10), listed(0x40)])),
    ]
}

fn keys_config_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let owner_secrets = Secrets {
        owner_secret: Some(seq(0x40)),
        dedup: seq(0x00),
    };
    let put_only_secrets = Secrets {
        owner_secret: None,
        dedup: seq(0x00),
    };
    let owner = KeyFile {
        role: Role::Owner,
        repo_id: seq(0xc0),
        owner_public: seq(0xe0),
        created_ns: 1_766_601_000_000_000_000,
        label: "alice@laptop".into(),
        kdf: Some(Kdf {
            salt: seq(0x60),
            m_kib: 65536,
            t: 3,
            p: 4,
        }),
        // What sealing the secrets adds: a 24-byte nonce and a 16-byte tag.
        secret: noise(owner_secrets.encode().len() + 40, 6),
    };
    let put_only = KeyFile {
        role: Role::PutOnly,
        label: "cron@server".into(),
        kdf: None,
        secret: put_only_secrets.encode(),
        ..owner.clone()
    };
    vec![
        (
            "seed-config",
            Config::new(
                seq(0xc0),
                256 * 1024,
                1024 * 1024,
                4 * 1024 * 1024,
                1_766_601_000_000_000_000,
            )
            .encode(),
        ),
        (
            "seed-config-small",
            Config::new(seq(0xc0), 64, 256, 1024, -1).encode(),
        ),
        ("seed-key-owner", owner.encode()),
        ("seed-key-put-only", put_only.encode()),
        ("seed-secrets-owner", owner_secrets.encode()),
        ("seed-secrets-put-only", put_only_secrets.encode()),
    ]
}

fn chunker_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let text: Vec<u8> = b"Cairn test vector: the first chunk of a file.\n"
        .iter()
        .copied()
        .cycle()
        .take(1500)
        .collect();
    vec![
        ("seed-noise", noise(4096, 7)),
        ("seed-text", text),
        ("seed-zeros", vec![0; 2100]),
    ]
}

/// Every seed, by target; each must decode with its target's decoders.
fn corpus() -> BTreeMap<&'static str, Vec<(&'static str, Vec<u8>)>> {
    let mut c = BTreeMap::new();
    c.insert("tree", tree_seeds());
    c.insert("snapshot", snapshot_seeds());
    c.insert("pack", pack_seeds());
    c.insert("index", index_seeds());
    c.insert("keys_config", keys_config_seeds());
    c.insert("chunker", chunker_seeds());
    c
}

fn decodes(target: &str, name: &str, bytes: &[u8]) -> bool {
    match target {
        "tree" => Tree::decode(bytes).is_ok(),
        "snapshot" if name.starts_with("seed-body") => Body::decode(bytes).is_ok(),
        "snapshot" => snapshot::decode(bytes).is_ok(),
        "pack" if name.starts_with("seed-record") => decode_record(bytes).is_ok(),
        "pack" => decode_pack_trailer(bytes).is_ok(),
        "index" => index::decode(bytes).is_ok(),
        "keys_config" if name.starts_with("seed-config") => Config::decode(bytes).is_ok(),
        "keys_config" if name.starts_with("seed-key") => KeyFile::decode(bytes).is_ok(),
        "keys_config" => Secrets::decode(bytes).is_ok(),
        _ => true,
    }
}

#[test]
fn seeds_are_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let write = std::env::var_os("CAIRN_WRITE_FUZZ_CORPUS").is_some();
    let mut problems = Vec::new();
    for (target, seeds) in corpus() {
        let dir = root.join(target);
        for (name, bytes) in &seeds {
            assert!(
                decodes(target, name, bytes),
                "{target}/{name} does not decode"
            );
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                if std::fs::read(&path).ok().as_ref() != Some(bytes) {
                    std::fs::write(&path, bytes).unwrap();
                }
            } else if std::fs::read(&path).ok().as_ref() != Some(bytes) {
                problems.push(format!("{target}/{name} is missing or differs"));
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with("seed-") && !seeds.iter().any(|(n, _)| *n == name) {
                if write {
                    std::fs::remove_file(dir.join(&name)).unwrap();
                } else {
                    problems.push(format!("{target}/{name} is not a seed this test makes"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "fuzz/corpus is stale ({}); rewrite it with \
         CAIRN_WRITE_FUZZ_CORPUS=1 cargo test -p cairn-format --test fuzz_corpus",
        problems.join(", ")
    );
}
