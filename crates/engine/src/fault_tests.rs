//! Backup, restore and check against a storage that fails, comes back
//! short or hands back hostile bytes at one call, for every call in turn:
//! no panic, no wrong bytes restored, damage reported, and what was
//! committed before stays whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_repo::{KeySource, Repo, init_options};
use cairn_storage::faulty::{Fault, FaultyStorage, Hit};
use cairn_storage::{Kind, MemoryStorage, Storage};

use crate::archiver::{BackupOptions, Progress, backup};
use crate::checker::{CheckOptions, CheckReport, check};
use crate::restorer::{RestoreOptions, restore};

const FAULTS: [Fault; 3] = [Fault::Fail, Fault::Short, Fault::Hostile];

fn pseudo(n: usize, seed: u64) -> Vec<u8> {
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

/// A repository in memory with one snapshot of `src`, and the bytes it
/// holds.
struct Fixture {
    dir: tempfile::TempDir,
    base: Arc<MemoryStorage>,
    key: PathBuf,
    first: String,
    v1: BTreeMap<String, Vec<u8>>,
}

impl Fixture {
    fn new() -> Fixture {
        let mut f = Fixture::empty((4 << 10, 16 << 10, 64 << 10));
        f.write("big", pseudo(200_000, 1));
        f.write("small", b"small file".to_vec());
        f.write("sub/mid", pseudo(50_000, 2));
        f.v1 = f.source();
        f.first = f.backup(f.base.clone()).unwrap().unwrap();
        f.write("big", pseudo(200_000, 3));
        f.write("sub/new", pseudo(30_000, 4));
        f
    }

    /// A repository in memory with chunks of the given (min, average,
    /// max) sizes, and no snapshot yet.
    fn empty(chunk: (u32, u32, u32)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = Arc::new(MemoryStorage::new(dir.path().join("staging")));
        let mut o = init_options();
        o.key_dir = Some(dir.path().to_path_buf());
        o.chunk = chunk;
        o.kdf = cairn_crypto::KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let repo = Repo::init(base.clone(), &o).unwrap();
        let key = dir.path().join(format!("{}.key", repo.id_hex()));
        Fixture {
            dir,
            base,
            key,
            first: String::new(),
            v1: BTreeMap::new(),
        }
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn write(&self, rel: &str, data: Vec<u8>) {
        let p = self.src().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// The source's files, by path below it.
    fn source(&self) -> BTreeMap<String, Vec<u8>> {
        files(&self.src())
    }

    fn open(&self, st: Arc<dyn Storage>) -> crate::Result<Repo> {
        Ok(Repo::open(
            st,
            &KeySource::File {
                path: self.key.clone(),
                passphrase: None,
            },
        )?)
    }

    fn backup(&self, st: Arc<dyn Storage>) -> crate::Result<Option<String>> {
        let mut repo = self.open(st)?;
        let opts = BackupOptions {
            paths: vec![self.src()],
            hostname: "test".into(),
            pack_size: 64 << 10,
            threads: 2,
            compression: 1,
            ..BackupOptions::default()
        };
        let s = backup(
            &mut repo,
            &opts,
            &Progress::default(),
            &AtomicBool::new(false),
        )?;
        Ok(s.snapshot)
    }

    /// Restores snapshot `id` into a new directory; the restored files
    /// and whether the restore said everything went well.
    fn restore(
        &self,
        st: Arc<dyn Storage>,
        id: &str,
    ) -> (BTreeMap<String, Vec<u8>>, crate::Result<bool>) {
        let dest = tempfile::tempdir_in(self.dir.path()).unwrap();
        let r = (|| {
            let repo = self.open(st)?;
            let (snaps, _) = Repo::list_snapshots(&**repo.storage())?;
            let s = snaps
                .iter()
                .find(|s| s.id.to_hex() == id)
                .ok_or_else(|| crate::Error::Input("snapshot not listed".into()))?;
            let sum = restore(
                &repo,
                s.envelope.root,
                &RestoreOptions {
                    target: dest.path().to_path_buf(),
                    threads: 2,
                    ..Default::default()
                },
                &Progress::default(),
                &AtomicBool::new(false),
            )?;
            Ok(sum.warnings.is_empty() && sum.damaged_files == 0)
        })();
        let below = dest.path().join(self.src().strip_prefix("/").unwrap());
        (files(&below), r)
    }

    fn check(&self, st: Arc<dyn Storage>) -> crate::Result<CheckReport> {
        let repo = self.open(st)?;
        check(
            &repo,
            &CheckOptions {
                structure: true,
                read_data: true,
                threads: 2,
                only_packs: None,
            },
            &Progress::default(),
            &AtomicBool::new(false),
        )
    }
}

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A copy of every object, so each round starts from the same repository.
fn copy_of(st: &MemoryStorage, staging: &Path) -> Arc<MemoryStorage> {
    let out = MemoryStorage::new(staging);
    out.put(
        Kind::Config,
        "config",
        &st.get(Kind::Config, "config").unwrap(),
    )
    .unwrap();
    for k in [
        Kind::Key,
        Kind::Pack,
        Kind::Index,
        Kind::Snapshot,
        Kind::Garbage,
        Kind::Protect,
        Kind::Receipt,
        Kind::Origin,
        Kind::Lock,
    ] {
        for o in st.list(k).unwrap() {
            out.put(k, &o.name, &st.get(k, &o.name).unwrap()).unwrap();
        }
    }
    Arc::new(out)
}

/// Calls an operation makes on a storage that never misbehaves.
fn calls_of(st: Arc<dyn Storage>, op: impl FnOnce(Arc<dyn Storage>)) -> u64 {
    let counted = Arc::new(FaultyStorage::new(st, Fault::Fail, 0));
    op(counted.clone());
    counted.calls()
}

/// Every restored file has the bytes of the snapshot; a restore that
/// said all went well restored all of them.
fn assert_restored(
    want: &BTreeMap<String, Vec<u8>>,
    got: &BTreeMap<String, Vec<u8>>,
    clean: bool,
    what: &str,
) {
    for (rel, bytes) in got {
        assert_eq!(
            want.get(rel),
            Some(bytes),
            "{what}: {rel} restored with wrong bytes"
        );
    }
    if clean {
        assert_eq!(
            got.len(),
            want.len(),
            "{what}: a clean restore left files out"
        );
    }
}

#[test]
fn backup_with_a_fault_at_any_call_keeps_the_repository_whole() {
    let f = Fixture::new();
    let v2 = f.source();
    let staging = f.dir.path().join("staging");
    let total = calls_of(copy_of(&f.base, &staging), |st| {
        f.backup(st).unwrap().unwrap();
    });
    assert!(total > 10, "{total} calls");
    for fault in FAULTS {
        for n in 1..=total {
            let st = copy_of(&f.base, &staging);
            let faulty = Arc::new(FaultyStorage::new(st.clone(), fault, n));
            let r = f.backup(faulty.clone());
            let what = format!("backup, {fault:?} at call {n} ({:?})", faulty.hit());
            let report = f.check(st.clone()).unwrap();
            assert!(report.ok(), "{what}: check after it: {:?}", report.errors);
            let (got, clean) = f.restore(st.clone(), &f.first);
            assert!(
                clean.unwrap(),
                "{what}: the first snapshot does not restore"
            );
            assert_restored(&f.v1, &got, true, &what);
            if let Ok(Some(id)) = r {
                let (got, clean) = f.restore(st.clone(), &id);
                assert!(clean.unwrap(), "{what}: its snapshot does not restore");
                assert_restored(&v2, &got, true, &what);
            }
        }
    }
}

/// A reader that bypasses the storage's cache (a restore past the free
/// dirty limit reads packs with direct I/O) reads each large chunk once
/// going forward: a window read past a chunk runs into the next one,
/// which is then read again whole, and without a cache that is the
/// disk's time (on the 4 GiB corpus, 2.0 GB read of a 1.3 GB repository).
#[test]
fn uncached_reads_take_each_large_chunk_once() {
    let f = Fixture::empty((64 << 10, 128 << 10, 256 << 10));
    f.write("big", pseudo(6 << 20, 9));
    let mut repo = f.open(f.base.clone()).unwrap();
    let opts = BackupOptions {
        paths: vec![f.src()],
        hostname: "test".into(),
        pack_size: 16 << 20,
        threads: 1,
        ..BackupOptions::default()
    };
    let cancel = AtomicBool::new(false);
    backup(&mut repo, &opts, &Progress::default(), &cancel).unwrap();
    let st = Arc::new(FaultyStorage::new(f.base.clone(), Fault::Fail, 0));
    let repo = f.open(st.clone()).unwrap();
    let (snaps, _) = Repo::list_snapshots(&**repo.storage()).unwrap();
    let path = f.src().join("big");
    let node = crate::walk::find(&repo, snaps[0].envelope.root, path.to_str().unwrap()).unwrap();
    assert!(node.content.len() > 20, "{} chunks", node.content.len());
    let (mut records, mut small) = (0u64, 0u64);
    for uncached in [true, false] {
        let before = st.pack_bytes_read();
        let mut r = if uncached {
            repo.uncached_reader()
        } else {
            repo.sequential_reader()
        };
        let mut plain = Vec::new();
        for (k, id) in node.content.iter().enumerate() {
            r.load_into(id, &mut plain).unwrap();
            let loc = repo.index().get(id).unwrap();
            if uncached {
                records += u64::from(loc.length);
                // The file's last chunk may be small; a small record gets
                // a window (of 1 MiB), for the small files after it.
                small += u64::from(loc.length < 64 << 10);
            }
            assert_eq!(plain.len(), loc.raw_len as usize, "chunk {k}");
        }
        let read = st.pack_bytes_read() - before;
        if uncached {
            assert!(
                (records..=records + small * (1 << 20)).contains(&read),
                "uncached reads: {read} of {records}, {small} small records"
            );
        } else {
            // Through a cache, windows run ahead, and that is cheap.
            assert!(read > records, "cached reads: {read} of {records}");
        }
    }
}

/// Large records are opened in the window they were read into, which
/// leaves their bytes there decrypted: a record met again (a file that
/// repeats a chunk further on, two files sharing one) is read again,
/// never opened twice or taken as read. For compressed and stored
/// chunks, through each kind of reader.
#[test]
fn records_opened_in_place_are_read_again_when_met_again() {
    let f = Fixture::empty((128 << 10, 256 << 10, 512 << 10));
    // Hex digits: compressed to about half, so records stay large.
    let text: Vec<u8> = pseudo(1 << 20, 12)
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect();
    f.write("random", pseudo(3 << 20, 11));
    f.write("text", text);
    let mut repo = f.open(f.base.clone()).unwrap();
    let opts = BackupOptions {
        paths: vec![f.src()],
        hostname: "test".into(),
        threads: 1,
        ..BackupOptions::default()
    };
    let cancel = AtomicBool::new(false);
    backup(&mut repo, &opts, &Progress::default(), &cancel).unwrap();
    let repo = f.open(f.base.clone()).unwrap();
    let (snaps, _) = Repo::list_snapshots(&**repo.storage()).unwrap();
    for name in ["random", "text"] {
        let path = f.src().join(name);
        let want = std::fs::read(&path).unwrap();
        let node =
            crate::walk::find(&repo, snaps[0].envelope.root, path.to_str().unwrap()).unwrap();
        let n = node.content.len();
        assert!(n > 4, "{name}: {n} chunks");
        let mut at = vec![0usize];
        for id in &node.content {
            let l = repo.index().get(id).unwrap();
            at.push(at.last().unwrap() + l.raw_len as usize);
        }
        // Large records, compressed in the text, stored as they are in
        // the random bytes.
        assert!(
            node.content.iter().any(|id| {
                let l = repo.index().get(id).unwrap();
                l.length >= 64 << 10 && (l.length < l.raw_len) == (name == "text")
            }),
            "{name}: no large record of its kind"
        );
        // Forward, back to the start, over again, and each chunk twice.
        let mut order: Vec<usize> = (0..n).collect();
        order.extend([0, 1, 0, 2, 1, 0]);
        order.extend((0..n).flat_map(|k| [k, k]));
        for kind in 0..3 {
            let mut r = match kind {
                0 => repo.reader(),
                1 => repo.sequential_reader(),
                _ => repo.uncached_reader(),
            };
            let mut plain = Vec::new();
            for &k in &order {
                r.load_into(&node.content[k], &mut plain)
                    .unwrap_or_else(|e| panic!("{name}, reader {kind}, chunk {k}: {e}"));
                assert!(
                    plain == want[at[k]..at[k + 1]],
                    "{name}, reader {kind}, chunk {k}"
                );
            }
        }
    }
}

/// Files created with their mode (no `fchmod` after) end with exactly
/// the modes stored, whatever the umask takes away, with setuid and
/// sticky bits, and under a directory whose default ACL would have
/// given new files other modes.
#[test]
fn files_end_with_their_modes_under_a_umask_and_a_default_acl() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::empty((4 << 10, 16 << 10, 64 << 10));
    let modes = [
        0o644, 0o600, 0o755, 0o666, 0o777, 0o640, 0o400, 0o4755, 0o2750, 0o1644,
    ];
    for m in modes {
        f.write(&format!("d/{m:o}"), format!("mode {m:o}").into_bytes());
        let p = f.src().join(format!("d/{m:o}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let mut repo = f.open(f.base.clone()).unwrap();
    let opts = BackupOptions {
        paths: vec![f.src()],
        hostname: "test".into(),
        ..BackupOptions::default()
    };
    let cancel = AtomicBool::new(false);
    backup(&mut repo, &opts, &Progress::default(), &cancel).unwrap();
    let repo = f.open(f.base.clone()).unwrap();
    let (snaps, _) = Repo::list_snapshots(&**repo.storage()).unwrap();
    // A default ACL granting others nothing: new files under it (and
    // under the directories the restore creates there, which inherit
    // it) would lose their bits for others. The xattr's form: version 2,
    // then entries of tag, permissions and ID: user::rwx, group::rwx,
    // other::---.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 7u16), (0x04, 7), (0x20, 0)] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    for with_acl in [false, true] {
        let dest = tempfile::tempdir_in(f.dir.path()).unwrap();
        if with_acl {
            rustix::fs::setxattr(
                dest.path(),
                "system.posix_acl_default",
                &acl,
                rustix::fs::XattrFlags::empty(),
            )
            .expect("a default ACL on the restore's target (a filesystem with POSIX ACLs)");
            assert!(crate::meta::has_default_acl(dest.path()));
        }
        let sum = restore(
            &repo,
            snaps[0].envelope.root,
            &RestoreOptions {
                target: dest.path().to_path_buf(),
                threads: 2,
                ..Default::default()
            },
            &Progress::default(),
            &cancel,
        )
        .unwrap();
        assert!(sum.warnings.is_empty(), "{:?}", sum.warnings);
        let below = dest
            .path()
            .join(f.src().strip_prefix("/").unwrap())
            .join("d");
        for m in modes {
            let md = std::fs::metadata(below.join(format!("{m:o}"))).unwrap();
            assert_eq!(
                md.permissions().mode() & 0o7777,
                m,
                "mode {m:o}, default ACL {with_acl}"
            );
        }
    }
}

/// A restore copies chunks it wrote before instead of fetching them again.
/// A chunk met twice in one large file is copied from its first place,
/// which must hold its bytes by then: not still in the staging buffer of
/// direct writes (local), not a stretch of a file in parts that no worker
/// has written yet (over S3, where large files are written buffered).
#[test]
fn restore_copies_only_chunks_already_written() {
    // Chunks of exactly 256 KiB: A B A B …, the third chunk a copy of
    // the first while that would still be in the 1 MiB staging buffer.
    // Past 16 MiB the file is restored in parts, so it is created at its
    // full length and a read of what is not written yet finds zeros.
    let mut f = Fixture::empty((256 << 10, 256 << 10, 256 << 10));
    let (a, b) = (pseudo(256 << 10, 5), pseudo(256 << 10, 6));
    let big: Vec<u8> = (0..70)
        .flat_map(|i| if i % 2 == 0 { &a } else { &b })
        .copied()
        .collect();
    f.write("big", big);
    f.v1 = f.source();
    f.first = f.backup(f.base.clone()).unwrap().unwrap();
    for reads in [1, 8] {
        let st = FaultyStorage::new(f.base.clone(), Fault::Fail, 0).reading_like_a_remote(reads);
        let (got, ok) = f.restore(Arc::new(st), &f.first);
        assert!(ok.unwrap(), "{reads} reads at once");
        assert_restored(&f.v1, &got, true, &format!("{reads} reads at once"));
    }
}

#[test]
fn restore_with_a_fault_at_any_call_never_writes_wrong_bytes() {
    let f = Fixture::new();
    let total = calls_of(f.base.clone(), |st| {
        let (_, ok) = f.restore(st, &f.first);
        assert!(ok.unwrap());
    });
    let remote = FaultyStorage::new(f.base.clone(), Fault::Fail, 0).reading_like_a_remote(8);
    let (got, ok) = f.restore(Arc::new(remote), &f.first);
    assert!(ok.unwrap(), "restore through the shared blocks");
    assert_restored(&f.v1, &got, true, "restore through the shared blocks");
    // Locally and as over S3, where readers share aligned blocks.
    for (fault, reads) in FAULTS.into_iter().flat_map(|f| [(f, 1), (f, 8)]) {
        for n in 1..=total {
            let faulty =
                Arc::new(FaultyStorage::new(f.base.clone(), fault, n).reading_like_a_remote(reads));
            let (got, r) = f.restore(faulty.clone(), &f.first);
            let what = format!(
                "restore, {fault:?} at call {n} of {reads} at once ({:?})",
                faulty.hit()
            );
            let clean = matches!(r, Ok(true));
            assert_restored(&f.v1, &got, clean, &what);
            // Bytes that came back altered are never taken for data.
            if fault != Fault::Fail
                && matches!(faulty.hit(), Some(Hit { kind: Kind::Pack, op }) if op.starts_with("get"))
            {
                assert!(!clean, "{what}: altered pack bytes went unnoticed");
            }
        }
    }
}

#[test]
fn check_with_a_fault_at_any_call_reports_it() {
    let f = Fixture::new();
    let total = calls_of(f.base.clone(), |st| {
        assert!(f.check(st).unwrap().ok());
    });
    for fault in FAULTS {
        for n in 1..=total {
            let faulty = Arc::new(FaultyStorage::new(f.base.clone(), fault, n));
            let r = f.check(faulty.clone());
            let hit = faulty.hit();
            let what = format!("check, {fault:?} at call {n} ({hit:?})");
            let passed = r.as_ref().is_ok_and(|rep| rep.ok());
            let read_pack =
                matches!(&hit, Some(Hit { kind: Kind::Pack, op }) if op.starts_with("get"));
            if fault == Fault::Fail || read_pack {
                assert!(!passed, "{what}: check passed");
            }
        }
    }
}

/// A reader that panics (a bug) at any call makes the restore end with
/// the panic, whichever thread met it: the planner's panic used to leave
/// the workers waiting on their queues, and the restore hung.
#[test]
fn restore_that_panics_at_any_call_ends() {
    let f = Arc::new(Fixture::new());
    // Locally, and as over S3, where the other readers wait for a block
    // the panicking one was fetching.
    for reads in [1, 8] {
        let counted = Arc::new(
            FaultyStorage::new(f.base.clone(), Fault::Fail, 0).reading_like_a_remote(reads),
        );
        let (_, ok) = f.restore(counted.clone(), &f.first);
        assert!(ok.unwrap());
        let total = counted.calls();
        for n in 1..=total {
            let faulty = Arc::new(
                FaultyStorage::new(f.base.clone(), Fault::Panic, n).reading_like_a_remote(reads),
            );
            let (done, ended) = std::sync::mpsc::channel();
            let (f2, st) = (f.clone(), faulty.clone());
            std::thread::spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    f2.restore(st, &f2.first)
                }));
                let _ = done.send(r.is_err());
            });
            let panicked = ended
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!("restore hung after a panic at call {n} ({reads} at once)")
                });
            // Readers at once may make fewer calls in one run than in another.
            assert!(
                panicked || faulty.calls() < n,
                "call {n} ({reads} at once): the panic was swallowed"
            );
        }
    }
}
