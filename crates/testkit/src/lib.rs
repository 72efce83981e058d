//! Helpers for tests of the box and anything above it: a real
//! repository with an owner key and a put-only key, a backup through any
//! storage, a byte-exact picture of a repository directory, and a
//! source forging copies of other sources' blobs (dedup poisoning).

pub mod conformance;
pub mod forge;
pub mod garage;
pub mod proxy;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_engine::archiver::{BackupOptions, Progress, backup};
use cairn_repo::keys::write_key_file;
use cairn_repo::{KeySource, Repo, init_options};
use cairn_storage::{Kind, LocalStorage, Storage};

/// `raw` as a source with a put token named `name` sees it, through the
/// box's guard (refusals are not logged).
pub fn put_token(raw: &Arc<dyn Storage>, name: &str) -> Arc<dyn Storage> {
    Arc::new(cairn_server::guarded::GuardedStorage::new(
        raw.clone(),
        cairn_server::policy::Role::Put(None),
        name,
        Arc::new(|_: &cairn_server::guarded::Refusal| {}),
    ))
}

/// `n` pseudo-random bytes (xorshift from `seed`): data that neither
/// compresses nor repeats.
pub fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `storage` opened with the key file `key`.
pub fn open_with_key(storage: Arc<dyn Storage>, key: &Path) -> Repo {
    Repo::open(
        storage,
        &KeySource::File {
            path: key.to_path_buf(),
            passphrase: None,
        },
    )
    .unwrap()
}

/// Restores snapshot `snapshot` (hex) into `dest` with the owner's `repo`,
/// asserting that nothing was skipped; returns where the snapshot's
/// source `src` landed.
pub fn restore_snapshot(
    repo: &Repo,
    snapshot: &str,
    src: &Path,
    dest: &Path,
) -> std::path::PathBuf {
    let (snaps, _) = Repo::list_snapshots(&**repo.storage()).unwrap();
    let s = snaps.iter().find(|s| s.id.to_hex() == snapshot).unwrap();
    let sum = cairn_engine::restorer::restore(
        repo,
        s.envelope.root,
        &cairn_engine::restorer::RestoreOptions {
            target: dest.to_path_buf(),
            threads: 2,
            ..Default::default()
        },
        &Progress::default(),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(sum.warnings.is_empty(), "{:?}", sum.warnings);
    dest.join(src.strip_prefix("/").unwrap())
}

/// `check --read-data` of the owner's `repo`: every copy of every blob
/// read back.
pub fn check_read_data(repo: &Repo) -> cairn_engine::checker::CheckReport {
    cairn_engine::checker::check(
        repo,
        &cairn_engine::checker::CheckOptions {
            structure: true,
            read_data: true,
            threads: 2,
            only_packs: None,
        },
        &Progress::default(),
        &AtomicBool::new(false),
    )
    .unwrap()
}

/// Every file below `dir` (staging `tmp/` left out) with its bytes.
pub fn fingerprint(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("tmp") {
                    stack.push(p);
                }
            } else {
                out.insert(p.display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Backs up `src` as `group` with the key file `key`; returns the snapshot ID.
pub fn backup_as(
    storage: Arc<dyn Storage>,
    key: &Path,
    src: &Path,
    group: &str,
    cache: &Path,
) -> String {
    let mut repo = Repo::open(
        storage,
        &KeySource::File {
            path: key.to_path_buf(),
            passphrase: None,
        },
    )
    .unwrap();
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        group: Some(group.into()),
        cache_dir: Some(cache.to_path_buf()),
        hostname: "test".into(),
        threads: 1,
        ..BackupOptions::default()
    };
    backup(
        &mut repo,
        &opts,
        &Progress::default(),
        &AtomicBool::new(false),
    )
    .unwrap()
    .snapshot
    .unwrap()
}

/// A repository with an owner key file and a put-only key file beside it.
pub struct Setup {
    /// The temporary directory holding everything (removed on drop).
    pub dir: tempfile::TempDir,
    /// The repository directory.
    pub root: std::path::PathBuf,
    /// The repository's storage, with no guard in front.
    pub raw: Arc<dyn Storage>,
    /// The repository opened with the owner key.
    pub owner: Repo,
    /// The owner key file.
    pub owner_key: std::path::PathBuf,
    /// A put-only key file, as a source holds it.
    pub put_key: std::path::PathBuf,
}

/// A new repository in a temporary directory.
pub fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let raw: Arc<dyn Storage> = Arc::new(LocalStorage::new(&root));
    let mut o = init_options();
    o.key_dir = Some(dir.path().to_path_buf());
    let owner = Repo::init(raw.clone(), &o).unwrap();
    let owner_key = dir.path().join(format!("{}.key", owner.id_hex()));
    let put_key = dir.path().join("put.key");
    let kf = owner
        .export_keyfile(&owner.keys().put_only(), None, "laptop")
        .unwrap();
    write_key_file(&put_key, &kf).unwrap();
    Setup {
        dir,
        root,
        raw,
        owner,
        owner_key,
        put_key,
    }
}

/// Mallory's forgery: a pack of garbage records under `ids`, sealed
/// with a session of Mallory's own, and an index file listing it. With
/// `first`, the upload is redone until the index file's name sorts
/// before every other one, so that readers meet the forged copies first
/// (an attacker can grind names like this).
pub fn forge(
    mallory: &Arc<dyn Storage>,
    m: &Repo,
    ids: &[(cairn_repo::BlobKind, cairn_format::Id)],
    first: bool,
) -> cairn_format::Id {
    use cairn_repo::{BlobKind, PackSink};
    let others: Vec<String> = mallory
        .list(Kind::Index)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    for attempt in 0..100_000 {
        let session = m.new_session().unwrap();
        let mut sealer = m.sealer(&session, 3);
        let mut sink = PackSink::new(mallory.clone(), session.key_id, session.wrapped);
        for (n, (kind, id)) in ids.iter().enumerate() {
            // Trees alternate between a tree with false edges and a chunk.
            let kind = match kind {
                BlobKind::Tree if n % 2 == 0 => BlobKind::Chunk,
                k => *k,
            };
            let junk = format!("ransom note {attempt} {n}");
            // Forged trees name a blob that exists nowhere: a prune that
            // followed them would stop.
            let refs = match kind {
                BlobKind::Tree => vec![cairn_format::Id([0xee; 32])],
                _ => Vec::new(),
            };
            let b = sealer.seal(kind, *id, refs, junk.as_bytes()).unwrap();
            assert!(sink.add(&b).unwrap().is_none());
        }
        let staged = sink.finish_pack().unwrap().unwrap();
        let bytes = cairn_format::index::encode(std::slice::from_ref(&staged.pack));
        let name = cairn_format::Id(cairn_crypto::plain_hash(&bytes)).to_hex();
        if first && others.iter().any(|o| *o < name) {
            continue;
        }
        let p = staged.publish().unwrap();
        cairn_repo::write_index_file(&**mallory, std::slice::from_ref(&p)).unwrap();
        return p.pack;
    }
    panic!("no index file name sorted first");
}
