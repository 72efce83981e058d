//! Garbage collection against real backups, in process: randomised
//! interleavings of a backup with forget and prune, and storages whose
//! listings fail or come back short.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cairn_engine::archiver::{BackupOptions, Progress, backup};
use cairn_engine::checker::{CheckOptions, check};
use cairn_repo::{KeySource, Repo, init_options};
use cairn_storage::{Kind, MemoryStorage, ObjectInfo, Storage};

use crate::prune::{PruneOptions, prune};

struct Fixture {
    dir: tempfile::TempDir,
    storage: Arc<dyn Storage>,
    key: PathBuf,
}

impl Fixture {
    fn new(storage: Arc<dyn Storage>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut o = init_options();
        o.key_dir = Some(dir.path().to_path_buf());
        o.chunk = (4 << 10, 16 << 10, 64 << 10);
        o.kdf = cairn_crypto::KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let repo = Repo::init(storage.clone(), &o).unwrap();
        let key = dir.path().join(format!("{}.key", repo.id_hex()));
        Fixture { dir, storage, key }
    }

    fn open(&self) -> Repo {
        Repo::open(
            self.storage.clone(),
            &KeySource::File {
                path: self.key.clone(),
                passphrase: None,
            },
        )
        .unwrap()
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn backup(&self) -> cairn_engine::Result<String> {
        let mut repo = self.open();
        let opts = BackupOptions {
            paths: vec![self.src()],
            cache_dir: Some(self.dir.path().join("cache")),
            hostname: "test".into(),
            pack_size: 64 << 10,
            threads: 1,
            compression: 1,
            ..BackupOptions::default()
        };
        let s = backup(
            &mut repo,
            &opts,
            &Progress::default(),
            &AtomicBool::new(false),
        )?;
        Ok(s.snapshot.expect("committed"))
    }

    fn check(&self) {
        let r = check(
            &self.open(),
            &CheckOptions {
                structure: true,
                read_data: true,
                threads: 1,
                only_packs: None,
            },
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(r.errors.is_empty(), "{:#?}", r.errors);
    }
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn write(p: &Path, seed: u64, len: usize) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes(seed, len)).unwrap();
}

fn opts(grace_ms: u64) -> PruneOptions {
    PruneOptions {
        grace: Duration::from_millis(grace_ms),
        holder: "test".into(),
        lease_ttl: Duration::from_secs(60),
        ..PruneOptions::default()
    }
}

/// Restores snapshot `id` and returns the files it brought back of the
/// fixture's source, by name.
fn restored_files(f: &Fixture, id: &str) -> BTreeMap<String, Vec<u8>> {
    let repo = f.open();
    let (snaps, _) = Repo::list_snapshots(&*f.storage).unwrap();
    let snap = snaps.iter().find(|s| s.id.to_hex() == id).unwrap();
    let dest = f.dir.path().join("restore");
    let _ = std::fs::remove_dir_all(&dest);
    cairn_engine::restorer::restore(
        &repo,
        snap.envelope.root,
        &cairn_engine::restorer::RestoreOptions {
            target: dest.clone(),
            subpath: None,
            includes: Vec::new(),
            excludes: Vec::new(),
            threads: 1,
            ..Default::default()
        },
        &Progress::default(),
        &AtomicBool::new(false),
    )
    .unwrap();
    let files = files_in(&dest.join(f.src().strip_prefix("/").unwrap()));
    std::fs::remove_dir_all(&dest).unwrap();
    files
}

fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Restores snapshot `id` and compares it with the source as it is now.
fn restore_matches(f: &Fixture, id: &str) {
    assert!(
        restored_files(f, id) == files_in(&f.src()),
        "snapshot {id} does not restore the source"
    );
}

/// A backup built on parent S0 (its files cache points at S0's blobs)
/// races with forget of S0 and two prunes a grace period apart, at
/// random offsets. Whatever the interleaving, a committed snapshot
/// restores exactly, and a refused one says why.
#[test]
fn backup_on_forgotten_parent_races_prune() {
    let f = Fixture::new(Arc::new(MemoryStorage::new(std::env::temp_dir())));
    for i in 0..4 {
        write(&f.src().join(format!("f{i}")), i, 40 << 10);
    }
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (mut committed, mut refused) = (0, 0);
    let (rescued, deleted) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let grace = 24;
    for round in 0..200u64 {
        let s0 = f.backup().unwrap();
        write(
            &f.src().join(format!("f{}", round % 4)),
            100 + round,
            40 << 10,
        );
        let (d_backup, d_forget, d_sweep) = (next(12), next(12), next(2 * grace));
        let (b, ()) = std::thread::scope(|s| {
            let b = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(d_backup));
                f.backup()
            });
            let p = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(d_forget));
                f.storage.delete(Kind::Snapshot, &s0).unwrap();
                let a = prune(f.storage.clone(), &opts(grace)).unwrap();
                std::thread::sleep(Duration::from_millis(d_sweep));
                let b = prune(f.storage.clone(), &opts(grace)).unwrap();
                rescued.fetch_add(a.rescued_packs + b.rescued_packs, Ordering::Relaxed);
                deleted.fetch_add(a.deleted_packs + b.deleted_packs, Ordering::Relaxed);
            });
            (b.join().unwrap(), p.join().unwrap())
        });
        match b {
            Ok(id) => {
                committed += 1;
                // Nothing runs now: sweep everything, then prove the
                // snapshot whole.
                prune(f.storage.clone(), &opts(0)).unwrap();
                if round % 20 == 0 {
                    restore_matches(&f, &id);
                }
                let repo = f.open();
                let (snaps, _) = Repo::list_snapshots(&*f.storage).unwrap();
                let roots: Vec<_> = snaps
                    .iter()
                    .map(|s| (s.envelope.root, s.id.to_hex()))
                    .collect();
                crate::graph::walk(&*f.storage, repo.index(), &roots, &mut || Ok(()))
                    .unwrap_or_else(|e| panic!("round {round}: snapshot {id} has holes: {e}"));
                f.storage.delete(Kind::Snapshot, &id).unwrap();
            }
            Err(e) => {
                let m = e.to_string();
                assert!(
                    m.contains("grace period") || m.contains("is gone"),
                    "round {round}: {m}"
                );
                refused += 1;
            }
        }
    }
    let (rescued, deleted) = (rescued.into_inner(), deleted.into_inner());
    eprintln!(
        "{committed} committed, {refused} refused; during the races {deleted} packs deleted, {rescued} rescued"
    );
    assert!(
        deleted > 0 && rescued > 0,
        "the interleavings missed the races"
    );
    assert!(committed > 100, "{committed} committed, {refused} refused");
    let id = f.backup().unwrap();
    prune(f.storage.clone(), &opts(0)).unwrap();
    f.check();
    restore_matches(&f, &id);
}

/// A storage whose listings misbehave on demand.
#[derive(Debug)]
struct Faulty {
    inner: MemoryStorage,
    /// List calls of this kind fail.
    fail: Option<Kind>,
    /// List calls of this kind drop their first entry, this many times.
    short: Option<Kind>,
    short_left: AtomicUsize,
    /// Index files of the newer snapshot of [`two_snapshots`]: a short
    /// listing drops the first of these it meets, else its first entry.
    newer: BTreeSet<String>,
}

impl Storage for Faulty {
    fn location(&self) -> String {
        "faulty".into()
    }
    fn get(&self, kind: Kind, name: &str) -> cairn_storage::Result<Vec<u8>> {
        self.inner.get(kind, name)
    }
    fn get_range(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> cairn_storage::Result<Vec<u8>> {
        self.inner.get_range(kind, name, offset, len)
    }
    fn size(&self, kind: Kind, name: &str) -> cairn_storage::Result<u64> {
        self.inner.size(kind, name)
    }
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> cairn_storage::Result<()> {
        self.inner.put(kind, name, data)
    }
    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> cairn_storage::Result<()> {
        self.inner.put_file(kind, name, file)
    }
    fn list(&self, kind: Kind) -> cairn_storage::Result<Vec<ObjectInfo>> {
        if self.fail == Some(kind) {
            return Err(cairn_storage::Error::io(
                "list",
                Path::new("faulty"),
                std::io::Error::other("connection reset part-way through the listing"),
            ));
        }
        let mut v = self.inner.list(kind)?;
        if self.short == Some(kind)
            && self
                .short_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            && !v.is_empty()
        {
            let at = v.iter().position(|o| self.newer.contains(&o.name));
            v.remove(at.unwrap_or(0));
        }
        Ok(v)
    }
    fn delete(&self, kind: Kind, name: &str) -> cairn_storage::Result<()> {
        self.inner.delete(kind, name)
    }
    fn staging_dir(&self) -> cairn_storage::Result<PathBuf> {
        self.inner.staging_dir()
    }
}

/// Two snapshots, the older with data of its own; returns the names of
/// the index files the newer one wrote.
fn two_snapshots(f: &Fixture, st: &dyn Storage) -> BTreeSet<String> {
    let index_files = || -> BTreeSet<String> {
        st.list(Kind::Index)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect()
    };
    write(&f.src().join("shared"), 1, 60 << 10);
    write(&f.src().join("old"), 2, 60 << 10);
    f.backup().unwrap();
    let older = index_files();
    std::fs::remove_file(f.src().join("old")).unwrap();
    write(&f.src().join("new"), 3, 60 << 10);
    f.backup().unwrap();
    let newer: BTreeSet<String> = index_files().difference(&older).cloned().collect();
    assert!(!newer.is_empty());
    newer
}

fn faulty(fail: Option<Kind>, short: Option<Kind>, times: usize) -> (Fixture, Arc<Faulty>) {
    let inner = Arc::new(Faulty {
        inner: MemoryStorage::new(std::env::temp_dir()),
        fail: None,
        short: None,
        short_left: AtomicUsize::new(0),
        newer: BTreeSet::new(),
    });
    let f = Fixture::new(inner.clone());
    // The index files of the newer backup each list data the newer
    // snapshot needs. One of the older backup's may list only data the
    // older alone used (each pack publisher writes an index file), and a
    // listing that leaves that out is harmless: its packs are unindexed,
    // so left alone.
    let newer = two_snapshots(&f, &*inner);
    // Rebuild the wrapper around the same objects with the fault on.
    let copy = MemoryStorage::new(std::env::temp_dir());
    for k in [
        Kind::Config,
        Kind::Key,
        Kind::Pack,
        Kind::Index,
        Kind::Snapshot,
    ] {
        let names: Vec<String> = if k == Kind::Config {
            vec!["config".into()]
        } else {
            inner.list(k).unwrap().into_iter().map(|o| o.name).collect()
        };
        for n in names {
            copy.put(k, &n, &inner.get(k, &n).unwrap()).unwrap();
        }
    }
    let bad = Arc::new(Faulty {
        inner: copy,
        fail,
        short,
        short_left: AtomicUsize::new(times),
        newer,
    });
    let f = Fixture {
        dir: f.dir,
        storage: bad.clone(),
        key: f.key,
    };
    (f, bad)
}

#[test]
fn listing_that_fails_part_way_deletes_nothing() {
    for kind in [Kind::Pack, Kind::Index, Kind::Snapshot, Kind::Garbage] {
        let (f, bad) = faulty(Some(kind), None, 0);
        let before = objects_of(&bad.inner);
        let e = prune(f.storage.clone(), &opts(0)).unwrap_err();
        assert!(e.to_string().contains("connection reset"), "{kind:?}: {e}");
        assert_eq!(
            objects_of(&bad.inner),
            before,
            "{kind:?}: something changed"
        );
    }
}

#[test]
fn short_pack_or_index_listing_deletes_nothing() {
    for kind in [Kind::Pack, Kind::Index] {
        let (f, bad) = faulty(None, Some(kind), usize::MAX);
        // Forget the older snapshot, so its own data is garbage.
        let (snaps, _) = Repo::list_snapshots(&bad.inner).unwrap();
        bad.inner
            .delete(Kind::Snapshot, &snaps[0].id.to_hex())
            .unwrap();
        let before = objects_of(&bad.inner);
        let e = prune(f.storage.clone(), &opts(0)).unwrap_err();
        assert!(matches!(e, crate::Error::Untrusted(_)), "{kind:?}: {e}");
        assert!(e.to_string().contains("nothing was deleted"), "{e}");
        assert_eq!(
            objects_of(&bad.inner),
            before,
            "{kind:?}: something changed"
        );
    }
}

/// A snapshot listing that leaves one snapshot out, once: its data is
/// condemned, but the sweep lists again, sees it, and keeps the data.
#[test]
fn snapshot_listing_short_once_loses_nothing() {
    let (f, bad) = faulty(None, Some(Kind::Snapshot), 1);
    let (snaps, _) = Repo::list_snapshots(&bad.inner).unwrap();
    assert_eq!(snaps.len(), 2);
    let r = prune(f.storage.clone(), &opts(0)).unwrap();
    assert!(r.condemned_packs > 0, "{r:#?}");
    assert!(r.rescued_packs > 0, "{r:#?}");
    f.check();
    // Both snapshots restore what they were made of (two_snapshots).
    let shared = ("shared".to_string(), bytes(1, 60 << 10));
    let first = BTreeMap::from([shared.clone(), ("old".to_string(), bytes(2, 60 << 10))]);
    let second = BTreeMap::from([shared, ("new".to_string(), bytes(3, 60 << 10))]);
    assert_eq!(restored_files(&f, &snaps[0].id.to_hex()), first);
    assert_eq!(restored_files(&f, &snaps[1].id.to_hex()), second);
}

fn objects_of(inner: &MemoryStorage) -> BTreeSet<(Kind, String)> {
    let mut out = BTreeSet::new();
    for k in [Kind::Pack, Kind::Index, Kind::Snapshot, Kind::Garbage] {
        for o in inner.list(k).unwrap() {
            out.insert((k, o.name));
        }
    }
    out
}

/// A prune of this build refuses a repository of a newer minor version:
/// what it adds may keep blobs alive in ways this build does not know.
#[test]
fn prune_refuses_a_newer_minor_version() {
    let inner = Arc::new(MemoryStorage::new(std::env::temp_dir()));
    let f = Fixture::new(inner.clone());
    write(&f.src().join("a"), 1, 10_000);
    f.backup().unwrap();
    let mut c = cairn_repo::read_config(&*f.storage).unwrap();
    c.minor = cairn_format::FORMAT_MINOR + 1;
    inner.delete(Kind::Config, "config").unwrap();
    inner.put(Kind::Config, "config", &c.encode()).unwrap();
    let before = objects_of(&inner);
    let e = prune(f.storage.clone(), &opts(0)).unwrap_err().to_string();
    assert!(e.contains("upgrade cairn"), "{e}");
    assert_eq!(objects_of(&inner), before, "nothing was touched");
}

/// A copy to a replica whose store fails at any one call, for every call
/// in turn: the copy ends (its publishers and reader stop together), a
/// snapshot it wrote restores whole, and the next copy completes.
#[test]
fn copy_with_a_failing_destination_at_any_call_resumes() {
    use cairn_storage::faulty::{Fault, FaultyStorage};
    let f = Fixture::new(Arc::new(MemoryStorage::new(std::env::temp_dir())));
    for (i, n) in [(1u64, 300_000), (2, 5_000), (3, 90_000)] {
        write(&f.src().join(format!("f{i}")), i, n);
    }
    let first = f.backup().unwrap();
    write(&f.src().join("f4"), 4, 200_000);
    let second = f.backup().unwrap();
    let replica = || {
        let d: Arc<dyn Storage> = Arc::new(MemoryStorage::new(f.dir.path().join("staging")));
        crate::copy::init_replica(&*f.storage, &*d).unwrap();
        d
    };
    let opts = crate::copy::CopyOptions::default();
    let counted = Arc::new(FaultyStorage::new(replica(), Fault::Fail, 0));
    let to: Arc<dyn Storage> = counted.clone();
    crate::copy::copy_sealed(&f.storage, &to, &opts, &mut |_| {}).unwrap();
    let total = counted.calls();
    assert!(total > 10, "{total} calls");
    for n in 1..=total {
        let dst = replica();
        let to: Arc<dyn Storage> = Arc::new(FaultyStorage::new(dst.clone(), Fault::Fail, n));
        let _ = crate::copy::copy_sealed(&f.storage, &to, &opts, &mut |_| {});
        crate::copy::copy_sealed(&f.storage, &dst, &opts, &mut |_| {})
            .unwrap_or_else(|e| panic!("copy after a failure at call {n}: {e}"));
        let copy = Fixture {
            dir: tempfile::tempdir().unwrap(),
            storage: dst,
            key: f.key.clone(),
        };
        for id in [&first, &second] {
            let repo = copy.open();
            let (snaps, _) = Repo::list_snapshots(&*copy.storage).unwrap();
            let snap = snaps.iter().find(|s| &s.id.to_hex() == id).unwrap();
            let dest = copy.dir.path().join(format!("r{id}"));
            let sum = cairn_engine::restorer::restore(
                &repo,
                snap.envelope.root,
                &cairn_engine::restorer::RestoreOptions {
                    target: dest.clone(),
                    ..Default::default()
                },
                &Progress::default(),
                &AtomicBool::new(false),
            )
            .unwrap();
            assert!(
                sum.warnings.is_empty(),
                "failure at call {n}: {:?}",
                sum.warnings
            );
            let got = files_in(&dest.join(f.src().strip_prefix("/").unwrap()));
            let mut want = files_in(&f.src());
            if id == &first {
                want.remove("f4");
            }
            assert!(got == want, "failure at call {n}: snapshot {id} differs");
        }
    }
}
