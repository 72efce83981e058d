//! Stream backups: the bytes come back, dumps deduplicate, and a stream
//! that fails in any way leaves no snapshot.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_repo::{KeySource, Repo, init_options};
use cairn_storage::{Kind, LocalStorage, Storage};

use super::{STREAM_MODE, backup_stream};
use crate::archiver::{BackupOptions, BackupSummary, Progress};
use crate::restorer::{RestoreOptions, restore};
use crate::{Error, StreamFailure};

/// Deterministic bytes that neither compress nor repeat, produced on
/// demand: a stream of any length without holding it.
struct Pseudo {
    x: u64,
    left: u64,
}

impl Pseudo {
    fn new(len: u64, seed: u64) -> Pseudo {
        Pseudo {
            x: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            left: len,
        }
    }
}

impl Read for Pseudo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            *b = (self.x >> 24) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn pseudo(len: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::new();
    Pseudo::new(len as u64, seed).read_to_end(&mut v).unwrap();
    v
}

/// A repository in a temporary directory, on the local store.
struct Fixture {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Fixture {
    /// Small chunks (4 / 16 / 64 KiB), so small streams have many.
    fn new() -> Fixture {
        Fixture::with_chunks((4 << 10, 16 << 10, 64 << 10))
    }

    fn with_chunks(chunk: (u32, u32, u32)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut o = init_options();
        o.key_dir = Some(dir.path().to_path_buf());
        o.chunk = chunk;
        o.kdf = cairn_crypto::KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let repo = Repo::init(Arc::new(LocalStorage::new(dir.path().join("repo"))), &o).unwrap();
        let key = dir.path().join(format!("{}.key", repo.id_hex()));
        Fixture { dir, key }
    }

    fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn open(&self) -> Repo {
        let st: Arc<dyn Storage> = Arc::new(LocalStorage::new(self.repo_dir()));
        Repo::open(
            st,
            &KeySource::File {
                path: self.key.clone(),
                passphrase: None,
            },
        )
        .unwrap()
    }

    fn opts(&self) -> BackupOptions {
        BackupOptions {
            hostname: "test".into(),
            pack_size: 256 << 10,
            threads: 2,
            compression: 1,
            ..BackupOptions::default()
        }
    }

    /// Backs up `input` as `name`, with `finish` answering `done`.
    fn stream(
        &self,
        opts: &BackupOptions,
        input: &mut dyn Read,
        name: &str,
        done: Result<(), String>,
    ) -> crate::Result<BackupSummary> {
        let mut calls = 0;
        let mut finish = || {
            calls += 1;
            done.clone()
        };
        let r = backup_stream(
            &mut self.open(),
            opts,
            input,
            name,
            &mut finish,
            &Progress::default(),
            &AtomicBool::new(false),
        );
        assert!(calls <= 1, "finish called {calls} times");
        r
    }

    /// Snapshot IDs, oldest first.
    fn snapshots(&self) -> Vec<String> {
        let (snaps, _) = Repo::list_snapshots(&**self.open().storage()).unwrap();
        snaps.iter().map(|s| s.id.to_hex()).collect()
    }

    /// Restores snapshot `id` into a new directory, which it returns.
    fn restore(&self, id: &str) -> PathBuf {
        let repo = self.open();
        let (snaps, _) = Repo::list_snapshots(&**repo.storage()).unwrap();
        let s = snaps.iter().find(|s| s.id.to_hex() == id).unwrap();
        let dest = tempfile::tempdir_in(self.dir.path()).unwrap().keep();
        let sum = restore(
            &repo,
            s.envelope.root,
            &RestoreOptions {
                target: dest.clone(),
                threads: 2,
                ..Default::default()
            },
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(sum.warnings.is_empty(), "{:?}", sum.warnings);
        assert_eq!(sum.damaged_files, 0);
        dest
    }
}

/// Names of the entries of `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn stream_restores_to_its_bytes() {
    let f = Fixture::new();
    let data = pseudo(700_000, 1);
    let s = f
        .stream(&f.opts(), &mut &data[..], "shop.sql", Ok(()))
        .unwrap();
    assert_eq!(s.group, "test:stdin:shop.sql");
    assert_eq!((s.new_files, s.dirs, s.total_bytes), (1, 0, 700_000));
    assert_eq!(s.bytes_read, 700_000);
    let id = s.snapshot.unwrap();
    let dest = f.restore(&id);
    assert_eq!(entries(&dest), ["shop.sql"]);
    let got = std::fs::read(dest.join("shop.sql")).unwrap();
    assert!(got == data, "restored bytes differ");
    let md = std::fs::metadata(dest.join("shop.sql")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, STREAM_MODE);
    assert_eq!(f.snapshots(), [id]);
}

#[test]
fn second_dump_with_a_small_change_adds_little() {
    let f = Fixture::new();
    let mut data = pseudo(2 << 20, 2);
    let first = f
        .stream(&f.opts(), &mut &data[..], "db.sql", Ok(()))
        .unwrap();
    assert!(first.raw_bytes_added >= 2 << 20, "{first:?}");
    // A few bytes changed in the middle, a few inserted.
    data[1 << 20..(1 << 20) + 8].copy_from_slice(b"CHANGED!");
    data.splice(1_500_000..1_500_000, *b"new row");
    let second = f
        .stream(&f.opts(), &mut &data[..], "db.sql", Ok(()))
        .unwrap();
    // The chunks around the two changes (64 KiB at most each) and the tree.
    assert!(
        second.raw_bytes_added < 4 * (64 << 10),
        "the second dump stored {} bytes again",
        second.raw_bytes_added
    );
    let dest = f.restore(second.snapshot.as_ref().unwrap());
    assert!(std::fs::read(dest.join("db.sql")).unwrap() == data);
}

#[test]
fn failed_finish_leaves_no_snapshot() {
    let f = Fixture::new();
    let good = pseudo(300_000, 3);
    let kept = f
        .stream(&f.opts(), &mut &good[..], "db.sql", Ok(()))
        .unwrap()
        .snapshot
        .unwrap();
    let e = f
        .stream(
            &f.opts(),
            &mut &pseudo(500_000, 4)[..],
            "db.sql",
            Err("pg_dump exited with status 1".into()),
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::Stream { name, why: StreamFailure::Producer(_) } if name == "db.sql"),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("db.sql") && msg.contains("pg_dump exited with status 1"),
        "{msg}"
    );
    assert!(msg.contains("no snapshot"), "{msg}");
    assert_eq!(f.snapshots(), std::slice::from_ref(&kept));
    let dest = f.restore(&kept);
    assert!(std::fs::read(dest.join("db.sql")).unwrap() == good);
}

/// Gives `good` bytes, then fails.
struct Failing {
    inner: Pseudo,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf)? {
            0 => Err(std::io::Error::other("pipe broke")),
            n => Ok(n),
        }
    }
}

#[test]
fn read_error_leaves_no_snapshot_and_names_the_file() {
    let f = Fixture::new();
    let mut input = Failing {
        inner: Pseudo::new(400_000, 5),
    };
    let e = f
        .stream(&f.opts(), &mut input, "x.sql", Ok(()))
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Stream {
                why: StreamFailure::Read(_),
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("x.sql") && msg.contains("pipe broke"), "{msg}");
    assert!(f.snapshots().is_empty());
}

#[test]
fn cancel_leaves_no_snapshot() {
    let f = Fixture::new();
    let mut finish = || -> Result<(), String> { panic!("finish called after a cancel") };
    let e = backup_stream(
        &mut f.open(),
        &f.opts(),
        &mut Pseudo::new(100_000, 6),
        "x.sql",
        &mut finish,
        &Progress::default(),
        &AtomicBool::new(true),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Stream { name, why: StreamFailure::Interrupted } if name == "x.sql"),
        "{e:?}"
    );
    assert!(f.snapshots().is_empty());
}

#[test]
fn empty_stream_is_an_empty_file() {
    let f = Fixture::new();
    let s = f
        .stream(&f.opts(), &mut std::io::empty(), "empty.sql", Ok(()))
        .unwrap();
    assert_eq!((s.new_files, s.total_bytes), (1, 0));
    let dest = f.restore(s.snapshot.as_ref().unwrap());
    assert_eq!(entries(&dest), ["empty.sql"]);
    assert_eq!(std::fs::read(dest.join("empty.sql")).unwrap(), b"");
}

#[test]
fn names_that_are_not_one_entry_are_refused_before_reading() {
    struct Unread;
    impl Read for Unread {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            panic!("read before the name was checked")
        }
    }
    let f = Fixture::new();
    for bad in ["", ".", "..", "a/b", "/x", "x/", "a\0b"] {
        let e = f.stream(&f.opts(), &mut Unread, bad, Ok(())).unwrap_err();
        assert!(matches!(e, Error::Input(_)), "{bad:?}: {e:?}");
    }
    assert!(f.snapshots().is_empty());
}

#[test]
fn dry_run_writes_nothing_and_group_can_be_given() {
    let f = Fixture::new();
    let opts = BackupOptions {
        dry_run: true,
        group: Some("db:shop".into()),
        ..f.opts()
    };
    let s = f
        .stream(&opts, &mut &pseudo(100_000, 7)[..], "x.sql", Ok(()))
        .unwrap();
    assert_eq!(s.group, "db:shop");
    assert_eq!((s.snapshot, s.total_bytes), (None, 100_000));
    assert!(f.snapshots().is_empty());
    assert!(f.open().storage().list(Kind::Pack).unwrap().is_empty());
}

/// The rollback check applies as in a path backup: this machine's last
/// snapshot of the group gone, the next stream is refused.
#[test]
fn rolled_back_repository_is_refused() {
    let f = Fixture::new();
    let opts = BackupOptions {
        state_dir: Some(f.dir.path().join("state")),
        ..f.opts()
    };
    let id = f
        .stream(&opts, &mut &pseudo(10_000, 8)[..], "x.sql", Ok(()))
        .unwrap()
        .snapshot
        .unwrap();
    f.open().storage().delete(Kind::Snapshot, &id).unwrap();
    let e = f
        .stream(&opts, &mut &pseudo(10_000, 8)[..], "x.sql", Ok(()))
        .unwrap_err();
    assert!(e.to_string().contains("rolled back"), "{e}");
    assert!(f.snapshots().is_empty());
    let opts = BackupOptions {
        accept_rollback: true,
        ..opts
    };
    f.stream(&opts, &mut &pseudo(10_000, 8)[..], "x.sql", Ok(()))
        .unwrap();
}

/// Files under `dir`, at any depth.
fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

/// Wraps the stream and watches how it is consumed.
struct Watched<'a> {
    inner: Pseudo,
    read: u64,
    /// The largest read asked for.
    largest: usize,
    /// Where packs are published, looked at once `look_at` bytes are read.
    data_dir: &'a Path,
    look_at: u64,
    packs_then: Option<usize>,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.largest = self.largest.max(buf.len());
        if self.packs_then.is_none() && self.read >= self.look_at {
            self.packs_then = Some(count_files(self.data_dir));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// A stream far larger than anything the pipeline buffers is generated
/// as it is read and never held whole, here or in the backup: the backup
/// reads it through the chunker's buffer (asks for no more than twice the
/// largest chunk at a time) and has published packs of it before reaching
/// its end, which the bounded channels force: with 1 MiB packs and two
/// workers, a few tens of MiB at most are read but not yet in a published
/// pack. The restored file is compared piece by piece with the stream
/// generated again.
#[test]
fn large_stream_is_streamed_not_buffered() {
    const LEN: u64 = 300 << 20;
    const MAX_CHUNK: u32 = 2 << 20;
    let f = Fixture::with_chunks((128 << 10, 512 << 10, MAX_CHUNK));
    let opts = BackupOptions {
        pack_size: 1 << 20,
        compression: 0,
        ..f.opts()
    };
    let data_dir = f.repo_dir().join("data");
    let mut input = Watched {
        inner: Pseudo::new(LEN, 9),
        read: 0,
        largest: 0,
        data_dir: &data_dir,
        look_at: 200 << 20,
        packs_then: None,
    };
    let s = f.stream(&opts, &mut input, "big.sql", Ok(())).unwrap();
    assert_eq!(s.total_bytes, LEN);
    assert!(
        input.largest <= 2 * MAX_CHUNK as usize,
        "asked for {} bytes at once",
        input.largest
    );
    let packs = input.packs_then.expect("the stream was read past 200 MiB");
    assert!(packs > 0, "no pack was published before the end");

    let dest = f.restore(s.snapshot.as_ref().unwrap());
    let mut got = std::fs::File::open(dest.join("big.sql")).unwrap();
    let mut want = Pseudo::new(LEN, 9);
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let n = want.read(&mut a).unwrap();
        got.read_exact(&mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "restored bytes differ near {at}");
        at += n as u64;
        if n == 0 {
            break;
        }
    }
    assert_eq!(got.read(&mut b).unwrap(), 0, "the restored file is longer");
    assert_eq!(at, LEN);
}
