//! Safety: damage is found, named and
//! never restored as wrong bytes; a killed or interrupted backup loses
//! nothing and resumes; concurrent backups coexist; a full disk and bad
//! input are reported clearly and change nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

// ---------------------------------------------------------------------
// Reading repository bytes the way docs/format.md describes them, so the
// tests know independently which blobs live in which pack.

/// One entry of a pack trailer ("Packs" in docs/format.md).
#[derive(Clone, Debug)]
struct Entry {
    /// 1 chunk, 2 tree.
    kind: u8,
    /// Blob ID, hex.
    id: String,
    /// Record offset in the pack.
    offset: u64,
    /// Record length.
    length: u64,
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let c = b[*at];
        *at += 1;
        v |= u64::from(c & 0x7f) << shift;
        if c & 0x80 == 0 {
            return v;
        }
        shift += 7;
        assert!(shift < 70, "varint too long at {at}");
    }
}

/// A trailer body at `at`: each entry with the position of its kind byte.
fn trailer_body(b: &[u8], at: &mut usize) -> Vec<(usize, Entry)> {
    assert_eq!(b[*at], 1, "trailer version");
    *at += 1 + 16 + 104;
    let n = varint(b, at);
    (0..n)
        .map(|_| {
            let pos = *at;
            let kind = b[pos];
            let id = hex::encode(&b[pos + 1..pos + 33]);
            *at += 33;
            let offset = varint(b, at);
            let length = varint(b, at);
            let _raw_len = varint(b, at);
            (
                pos,
                Entry {
                    kind,
                    id,
                    offset,
                    length,
                },
            )
        })
        .collect()
}

/// The entries of a pack file, from its own trailer.
fn pack_entries(path: &Path) -> Vec<Entry> {
    let f = fs::File::open(path).unwrap();
    let n = f.metadata().unwrap().len();
    let mut tail = [0u8; 12];
    f.read_exact_at(&mut tail, n - 12).unwrap();
    assert_eq!(&tail[4..], b"CAIRNPKE", "{}", path.display());
    let t = u32::from_le_bytes(tail[..4].try_into().unwrap()) as u64;
    let mut b = vec![0u8; t as usize];
    f.read_exact_at(&mut b, n - 12 - t).unwrap();
    let mut at = 0;
    let e = trailer_body(&b, &mut at);
    assert_eq!(at, b.len(), "{}", path.display());
    e.into_iter().map(|(_, e)| e).collect()
}

/// One pack as an index file lists it.
struct IndexedPack {
    name: String,
    entries: Vec<(usize, Entry)>,
}

fn parse_index(b: &[u8]) -> Vec<IndexedPack> {
    assert_eq!(&b[..8], b"CAIRNIX1");
    let mut at = 8;
    let n = varint(b, &mut at);
    let out = (0..n)
        .map(|_| {
            let name = hex::encode(&b[at..at + 32]);
            at += 32;
            let _size = varint(b, &mut at);
            let entries = trailer_body(b, &mut at);
            IndexedPack { name, entries }
        })
        .collect();
    assert_eq!(at, b.len());
    out
}

/// Every pack of a repository: name → path.
fn pack_files(repo: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for d in fs::read_dir(repo.join("data")).unwrap() {
        let d = d.unwrap().path();
        if !d.is_dir() {
            continue;
        }
        for f in fs::read_dir(&d).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            if name.len() == 64 {
                out.insert(name, f.path());
            }
        }
    }
    out
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn snapshot_ids(repo: &Path) -> BTreeSet<String> {
    names_in(&repo.join("snapshots"))
}

/// Every file and directory under `dir` with a hash of its contents, to
/// prove that a failed command changed nothing.
fn fingerprint(dir: &Path) -> BTreeMap<String, Option<[u8; 32]>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(cairn_crypto::plain_hash(&fs::read(&p).unwrap())));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------
// Source states: relative path → hash of the contents.

type State = BTreeMap<String, [u8; 32]>;

fn state_of(root: &Path) -> State {
    let mut out = State::new();
    if !root.is_dir() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, cairn_crypto::plain_hash(&fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Differences between an expected state and a restored one.
fn state_diff(want: &State, got: &State) -> Vec<String> {
    let mut d = Vec::new();
    for (k, h) in want {
        match got.get(k) {
            None => d.push(format!("missing {k}")),
            Some(g) if g != h => d.push(format!("content {k}")),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            d.push(format!("extra {k}"));
        }
    }
    d
}

// ---------------------------------------------------------------------
// Commands.

/// `cairn --repo <env repo> args...`, not yet run.
fn cairn(env: &Env, args: &[&str]) -> Command {
    let mut c = env.cmd();
    c.arg("--repo").arg(&env.repo).args(args);
    c
}

fn run_json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "`{}`: stdout is not JSON ({e})\n--- stdout\n{}\n--- stderr\n{}",
            r.cmdline, r.stdout, r.stderr
        )
    })
}

fn backup_json(env: &Env, src: &Path) -> Value {
    run_json(
        &env.run(&["backup", "--pack-size", "1MiB", "--json", s(src)])
            .expect(0),
    )
}

/// A small deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Blob IDs and record bytes of the packs in `names`.
fn pack_blobs(
    packs: &BTreeMap<String, PathBuf>,
    names: &BTreeSet<String>,
) -> (BTreeSet<String>, u64) {
    let mut ids = BTreeSet::new();
    let mut bytes = 0;
    for n in names {
        for e in pack_entries(&packs[n]) {
            bytes += e.length;
            ids.insert(e.id);
        }
    }
    (ids, bytes)
}

/// Record bytes of blobs in the packs `names` that were already in `old`.
fn reuploaded(
    packs: &BTreeMap<String, PathBuf>,
    names: &BTreeSet<String>,
    old: &BTreeSet<String>,
) -> u64 {
    names
        .iter()
        .flat_map(|n| pack_entries(&packs[n]))
        .filter(|e| old.contains(&e.id))
        .map(|e| e.length)
        .sum()
}

fn new_names(
    after: &BTreeMap<String, PathBuf>,
    before: &BTreeMap<String, PathBuf>,
) -> BTreeSet<String> {
    after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect()
}

fn bytes_of(packs: &BTreeMap<String, PathBuf>, names: &BTreeSet<String>) -> u64 {
    names
        .iter()
        .map(|n| fs::metadata(&packs[n]).unwrap().len())
        .sum()
}

// ---------------------------------------------------------------------
// 1. Corruption.

/// A repository with two snapshots of ~20 files, in several 1 MiB packs.
struct Damaged {
    env: Env,
    src: PathBuf,
    /// Snapshot IDs, oldest first.
    snaps: Vec<String>,
    /// Packs written by the first backup (all referenced by both snapshots).
    first_packs: BTreeMap<String, PathBuf>,
    /// The source as the latest snapshot holds it.
    latest: State,
}

fn damaged_setup() -> Damaged {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..20u64 {
        // 128 to 512 KiB each, distinct pseudo-random contents.
        let size = (128 << 10) + pseudo(1, 100 + i)[0] as usize * 1536;
        let dir = if i % 2 == 0 { "" } else { "sub/" };
        fs::write(src.join(format!("{dir}f{i:02}")), pseudo(size, 1000 + i)).unwrap();
    }
    env.ok(&["init"]);
    let a = backup_json(&env, &src);
    let first_packs = pack_files(&env.repo);
    assert!(first_packs.len() >= 5, "{} packs", first_packs.len());
    // The change: new files and a mode change. No chunk of the first backup
    // stops being referenced, so damage to one hits both snapshots.
    fs::write(src.join("sub/new1"), pseudo(200 << 10, 7)).unwrap();
    fs::write(src.join("new2"), pseudo(150 << 10, 8)).unwrap();
    fs::set_permissions(src.join("f00"), fs::Permissions::from_mode(0o600)).unwrap();
    let b = backup_json(&env, &src);
    let snaps = vec![
        a["snapshot"].as_str().unwrap().to_string(),
        b["snapshot"].as_str().unwrap().to_string(),
    ];
    assert_ne!(snaps[0], snaps[1]);
    env.ok(&["check", "--read-data"]);
    Damaged {
        latest: state_of(&src),
        env,
        src,
        snaps,
        first_packs,
    }
}

impl Damaged {
    /// A pack of the first backup holding at least two chunks and no tree.
    fn chunk_pack(&self) -> (String, PathBuf, Vec<Entry>) {
        self.first_packs
            .iter()
            .map(|(n, p)| (n.clone(), p.clone(), pack_entries(p)))
            .find(|(_, _, e)| e.len() >= 2 && e.iter().all(|e| e.kind == 1))
            .expect("a pack with two chunks and no tree")
    }

    /// Runs `check --read-data` (text and JSON) and a restore of `latest`,
    /// and holds them to the promises: exit 3, exactly `blobs` named as
    /// damaged, every snapshot with its affected paths, unaffected files
    /// restored byte-identical, affected ones never with wrong bytes.
    /// With `exact`, every affected file must be absent from the restore
    /// (without, a file check names may still restore if every chunk it
    /// needs authenticates).
    fn verify(&self, blobs: &BTreeSet<String>, error_names: &str, exact: bool) {
        let text = self.env.run(&["check", "--read-data"]).expect(3);
        for b in blobs {
            assert!(
                text.stdout.contains(&format!("damaged blob {b}")),
                "check does not name blob {b}:\n{}",
                text.stdout
            );
        }
        assert!(
            text.stdout.contains(error_names),
            "check does not name {error_names}:\n{}",
            text.stdout
        );

        let r = self.env.run(&["check", "--read-data", "--json"]).expect(3);
        let v = run_json(&r);
        let errors: Vec<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(
            errors.iter().any(|e| e.contains(error_names)),
            "{errors:#?}"
        );
        let damaged: BTreeSet<String> = v["damaged_blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(&damaged, blobs, "damaged blobs: {:#?}", v["damaged_blobs"]);

        let affected: Vec<(String, String, String)> = v["affected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["snapshot"].as_str().unwrap().to_string(),
                    a["path"].as_str().unwrap().to_string(),
                    a["blob"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(!affected.is_empty(), "nothing affected: {v:#}");
        let prefix = format!("{}/", s(&self.src));
        for (snap, path, blob) in &affected {
            assert!(
                damaged.contains(blob),
                "{blob} affects {path} but is not listed"
            );
            let line = format!(
                "affected: snapshot {} path {path} (blob {})",
                &snap[..8],
                &blob[..8]
            );
            assert!(
                text.stdout.contains(&line),
                "no line {line:?}:\n{}",
                text.stdout
            );
            // Only chunks are damaged, so every affected path is a file.
            let rel = path
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("affected path {path} is outside the source"));
            assert!(
                self.latest.contains_key(rel),
                "affected path {path} is not a file of the source"
            );
        }
        // Both snapshots hold the files of the damaged chunks unchanged, so
        // both are affected, through the same paths.
        let paths_in = |snap: &String| -> BTreeSet<String> {
            affected
                .iter()
                .filter(|a| &a.0 == snap)
                .map(|a| a.1.strip_prefix(&prefix).unwrap().to_string())
                .collect()
        };
        let hit_latest = paths_in(&self.snaps[1]);
        assert!(!hit_latest.is_empty(), "latest not affected: {v:#}");
        assert_eq!(paths_in(&self.snaps[0]), hit_latest, "{v:#}");

        let dest = self.env.path("restored");
        let rr = self.env.run(&["restore", "latest", s(&dest)]).expect(3);
        assert!(
            rr.stderr.contains("damaged"),
            "restore does not say data is damaged:\n{}",
            rr.stderr
        );
        let got = state_of(&restored(&dest, &self.src));
        let mut missing = BTreeSet::new();
        for (rel, h) in &self.latest {
            match got.get(rel) {
                Some(g) => {
                    assert_eq!(g, h, "{rel} restored with wrong bytes");
                    assert!(
                        !exact || !hit_latest.contains(rel),
                        "{rel} is affected but was restored"
                    );
                }
                None => {
                    assert!(
                        hit_latest.contains(rel),
                        "{rel} not restored although check does not name it"
                    );
                    missing.insert(rel.clone());
                }
            }
        }
        for rel in got.keys() {
            assert!(self.latest.contains_key(rel), "extra file {rel} restored");
        }
        assert!(
            !missing.is_empty(),
            "restore exited 3 but restored everything"
        );
        assert!(
            missing.len() < self.latest.len(),
            "nothing unaffected was restored"
        );
    }
}

#[test]
fn corrupt_flipped_byte_in_pack() {
    let d = damaged_setup();
    let (name, path, entries) = d.chunk_pack();
    let mut b = fs::read(&path).unwrap();
    let pos = b.len() / 2;
    b[pos] ^= 0x01;
    fs::write(&path, &b).unwrap();
    let hit = entries
        .iter()
        .find(|e| e.offset <= pos as u64 && (pos as u64) < e.offset + e.length)
        .expect("the middle of a pack is inside a record");
    let blobs = BTreeSet::from([hit.id.clone()]);
    d.verify(&blobs, &format!("pack {name}"), true);
}

/// A damaged chunk in a large file, which restore writes with direct I/O
/// in parts on several workers: the file is removed rather than left with
/// wrong or missing bytes, the exit code says integrity problem, and the
/// other files, small and large, restore byte-identical.
#[test]
fn corrupt_chunk_of_a_large_file_written_directly() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), pseudo(10_000, 1)).unwrap();
    fs::write(src.join("z"), pseudo(100_000, 3)).unwrap();
    // 40 MiB: three parts, written at once by the workers.
    fs::write(src.join("big"), pseudo(40 << 20, 2)).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    // The largest record holds a chunk of `big`: the small files' chunks
    // are smaller than its smallest but last one.
    let (path, e) = pack_files(&env.repo)
        .values()
        .flat_map(|p| pack_entries(p).into_iter().map(move |e| (p.clone(), e)))
        .filter(|(_, e)| e.kind == 1)
        .max_by_key(|(_, e)| e.length)
        .unwrap();
    assert!(
        e.length > 100_000,
        "largest chunk record is {} bytes",
        e.length
    );
    let mut b = fs::read(&path).unwrap();
    b[(e.offset + e.length / 2) as usize] ^= 0x40;
    fs::write(&path, &b).unwrap();

    let dest = env.path("dest");
    let r = env.run(&["restore", "latest", s(&dest)]).expect(3);
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);
    let out = restored(&dest, &src);
    assert!(
        !out.join("big").exists(),
        "a damaged large file was left behind"
    );
    for f in ["a", "z"] {
        assert_eq!(
            fs::read(out.join(f)).unwrap(),
            fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn corrupt_truncated_pack() {
    let d = damaged_setup();
    let (name, path, entries) = d.chunk_pack();
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let blobs: BTreeSet<String> = entries.iter().map(|e| e.id.clone()).collect();
    // Records before the cut still authenticate, so a file check counts as
    // affected may restore intact; it must never restore with other bytes.
    d.verify(&blobs, &format!("pack {name}"), false);
}

#[test]
fn corrupt_deleted_pack() {
    let d = damaged_setup();
    let (name, path, entries) = d.chunk_pack();
    fs::remove_file(&path).unwrap();
    let blobs: BTreeSet<String> = entries.iter().map(|e| e.id.clone()).collect();
    d.verify(&blobs, &format!("pack {name}"), true);
}

/// An index file of the first backup that lists only chunks, with its
/// parsed contents.
fn chunk_index(d: &Damaged) -> (String, PathBuf, Vec<IndexedPack>) {
    let dir = d.env.repo.join("index");
    names_in(&dir)
        .into_iter()
        .map(|n| {
            let p = dir.join(&n);
            let packs = parse_index(&fs::read(&p).unwrap());
            (n, p, packs)
        })
        .find(|(_, _, packs)| {
            packs.iter().all(|p| {
                d.first_packs.contains_key(&p.name) && p.entries.iter().all(|e| e.1.kind == 1)
            })
        })
        .expect("an index file of the first backup without trees")
}

#[test]
fn corrupt_index_file() {
    let d = damaged_setup();
    let (name, path, packs) = chunk_index(&d);
    // Overwrite 16 bytes from the kind byte of an entry in the middle.
    let pack = &packs[packs.len() / 2];
    let at = pack.entries[0].0;
    let mut b = fs::read(&path).unwrap();
    b[at..at + 16].fill(0xff);
    fs::write(&path, &b).unwrap();
    // The index is unreadable: every blob it listed is missing.
    let blobs: BTreeSet<String> = packs
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.1.id.clone()))
        .collect();
    d.verify(&blobs, &format!("index file {name}"), true);
}

/// An index file that is correctly named (its hash matches) but whose
/// first entry claims an offset near 2^64: the sum of offset and length
/// would wrap. It must be a reported index problem (its blobs missing),
/// never a panic or a hang, in check and in restore.
#[test]
fn hostile_index_entry_offset_is_refused() {
    let d = damaged_setup();
    let (name, path, packs) = chunk_index(&d);
    let mut b = fs::read(&path).unwrap();
    let at = packs[0].entries[0].0 + 33;
    let mut end = at;
    varint(&b, &mut end);
    let mut hostile = Vec::new();
    let mut v: u64 = u64::MAX - 15;
    while v >= 0x80 {
        hostile.push((v as u8) | 0x80);
        v >>= 7;
    }
    hostile.push(v as u8);
    b.splice(at..end, hostile);
    let new_name = hex::encode(cairn_crypto::plain_hash(&b));
    fs::remove_file(&path).unwrap();
    fs::write(path.with_file_name(&new_name), &b).unwrap();
    assert_ne!(name, new_name);
    let blobs: BTreeSet<String> = packs
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.1.id.clone()))
        .collect();
    d.verify(&blobs, &format!("index file {new_name}"), true);
}

/// An index file whose bytes no longer match its name, but still decode
/// (one blob ID changed): check should say the index file is damaged, not
/// blame the intact pack.
#[test]

fn corrupt_index_file_that_still_decodes_is_named() {
    let d = damaged_setup();
    let (name, path, packs) = chunk_index(&d);
    let at = packs[0].entries[0].0 + 1;
    let mut b = fs::read(&path).unwrap();
    for x in &mut b[at..at + 32] {
        *x ^= 0xff;
    }
    fs::write(&path, &b).unwrap();
    let r = d.env.run(&["check", "--read-data"]).expect(3);
    assert!(
        r.stdout.contains(&format!("index file {name}")),
        "check does not name the damaged index file:\n{}",
        r.stdout
    );
    assert!(
        !r.stdout
            .contains(&format!("in pack {}", &packs[0].name[..8])),
        "check blames the intact pack:\n{}",
        r.stdout
    );
}

// ---------------------------------------------------------------------
// 2. Crash safety: SIGKILL a backup at random instants.

/// A source of a few big and many small files that changes every round.
struct Source {
    root: PathBuf,
    state: State,
    small: Vec<String>,
    next: u64,
}

const BIG: usize = 4;
const BIG_SIZE: usize = 4 << 20;
const SMALL: usize = 300;

impl Source {
    fn new(root: &Path, rng: &mut Rng) -> Source {
        let mut src = Source {
            root: root.to_path_buf(),
            state: State::new(),
            small: Vec::new(),
            next: 0,
        };
        for i in 0..BIG {
            src.write(&format!("big/b{i}"), pseudo(BIG_SIZE, rng.next()));
        }
        for _ in 0..SMALL {
            src.add_small(rng);
        }
        src
    }

    fn write(&mut self, rel: &str, data: Vec<u8>) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &data).unwrap();
        self.state
            .insert(rel.to_string(), cairn_crypto::plain_hash(&data));
    }

    fn add_small(&mut self, rng: &mut Rng) {
        let rel = format!("small/d{}/s{}", self.next % 12, self.next);
        self.next += 1;
        let size = 8192 + rng.below(72 << 10) as usize;
        self.write(&rel, pseudo(size, rng.next()));
        self.small.push(rel);
    }

    /// About 5 to 9 MiB of new data: one or two big files rewritten, 25
    /// small ones rewritten, 3 added, 2 deleted.
    fn mutate(&mut self, rng: &mut Rng) {
        for _ in 0..1 + rng.below(2) {
            let i = rng.below(BIG as u64);
            self.write(&format!("big/b{i}"), pseudo(BIG_SIZE, rng.next()));
        }
        for _ in 0..25 {
            let rel = self.small[rng.below(self.small.len() as u64) as usize].clone();
            let size = 8192 + rng.below(72 << 10) as usize;
            self.write(&rel, pseudo(size, rng.next()));
        }
        for _ in 0..3 {
            self.add_small(rng);
        }
        for _ in 0..2 {
            let rel = self
                .small
                .swap_remove(rng.below(self.small.len() as u64) as usize);
            fs::remove_file(self.root.join(&rel)).unwrap();
            self.state.remove(&rel);
        }
    }
}

/// Restores snapshot `id` (only the source paths `only`, relative, when
/// given) and compares it with the state it was taken from.
fn assert_restores(
    cmd: &dyn Fn(&[&str]) -> Command,
    scratch: &Path,
    src: &Path,
    id: &str,
    want: &State,
    only: &[String],
) {
    let dest = scratch.join("restore");
    let _ = fs::remove_dir_all(&dest);
    let mut args = vec!["restore".to_string(), id[..16].to_string(), s(&dest).into()];
    for p in only {
        args.push("--include".into());
        args.push(format!("{}/{p}", s(src)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(cmd(&args)).expect(0);
    let want: State = want
        .iter()
        .filter(|(k, _)| {
            only.is_empty()
                || only
                    .iter()
                    .any(|p| *k == p || k.starts_with(&format!("{p}/")))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(!want.is_empty());
    let diffs = state_diff(&want, &state_of(&restored(&dest, src)));
    assert!(diffs.is_empty(), "snapshot {id}: {diffs:#?}");
    fs::remove_dir_all(&dest).unwrap();
}

/// What the crash loop did, and where its time went.
#[derive(Default, Debug)]
struct CrashStats {
    kills: usize,
    /// Runs that completed before the kill arrived.
    finished: usize,
    /// Bytes of packs the killed runs published.
    killed_bytes: u64,
    /// Of those, bytes the reruns uploaded again.
    reuploaded: u64,
    /// Unindexed packs the reruns recovered.
    recovered: u64,
    snapshots: usize,
    /// Distinct root trees among them (each restored once at the end).
    roots: usize,
    mutate: Duration,
    killed: Duration,
    check: Duration,
    sample: Duration,
    rerun: Duration,
    verify: Duration,
}

fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    *acc += t.elapsed();
    r
}

/// Kills per repository: the soak starts a fresh one after this many, so
/// disk use and `check` time stay bounded.
const CRASH_ROUND: usize = 100;

/// SIGKILLs `cairn backup` at random instants (50 in CI; set
/// CAIRN_CRASH_ITERS for more, as tests/soak/crash.sh does). After each
/// kill: `check` passes, earlier snapshots restore byte-identical, and the
/// rerun uploads again less than 10% of what the killed run had published.
#[test]
fn crash_sigkill_backup_loop() {
    let iters: usize = std::env::var("CAIRN_CRASH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let started = Instant::now();
    let mut st = CrashStats::default();
    let mut done = 0;
    while done < iters {
        let n = CRASH_ROUND.min(iters - done);
        crash_round(done, n, &mut st);
        done += n;
    }
    eprintln!(
        "crash test: {iters} kills in {:?}: {} runs finished before the kill; killed runs \
         published {} bytes of packs, reruns uploaded {} of them again and recovered {} \
         unindexed packs; {} snapshots ({} distinct roots) restored\n{st:?}",
        started.elapsed(),
        st.finished,
        st.killed_bytes,
        st.reuploaded,
        st.recovered,
        st.snapshots,
        st.roots,
    );
}

/// Kills `n` backups (numbered from `first`) into one fresh repository.
fn crash_round(first: usize, n: usize, st: &mut CrashStats) {
    let env = Env::new();
    let src = env.path("src");
    let mut source = Source::new(&src, &mut Rng(1 + first as u64));
    // Restores go to memory where there is a tmpfs: several times faster.
    let scratch = Some(Path::new("/dev/shm"))
        .filter(|p| p.is_dir())
        .and_then(|p| {
            tempfile::Builder::new()
                .prefix("cairn-e2e-")
                .tempdir_in(p)
                .ok()
        })
        .unwrap_or_else(|| tempfile::tempdir_in(env.dir.path()).unwrap());
    // An unprotected key (in $XDG_CONFIG_HOME) spares a KDF run per command.
    let cmd = |args: &[&str]| -> Command {
        let mut c = cairn(&env, args);
        c.env_remove("CAIRN_PASSWORD");
        c
    };
    let backup_args = ["backup", "--pack-size", "1MiB", "--json", s(&src)];
    run(cmd(&["init"])).expect(0);
    // Every completed snapshot with the source state it was taken from.
    let mut snaps: Vec<(String, State)> = Vec::new();
    let v = run_json(&run(cmd(&backup_args)).expect(0));
    snaps.push((v["snapshot"].as_str().unwrap().into(), source.state.clone()));

    // Uninterrupted runs of a typical change give the kill window (the
    // median of three).
    let mut took = Vec::new();
    for k in 0..3 {
        source.mutate(&mut Rng(0xA000 + (first + k) as u64));
        let t = Instant::now();
        let v = run_json(&run(cmd(&backup_args)).expect(0));
        took.push(t.elapsed());
        snaps.push((v["snapshot"].as_str().unwrap().into(), source.state.clone()));
    }
    took.sort();
    let window = took[1];

    for i in first..first + n {
        let mut rng = Rng(0x5EED_0000 + i as u64);
        timed(&mut st.mutate, || source.mutate(&mut rng));
        let before = pack_files(&env.repo);
        let snaps_before = snapshot_ids(&env.repo);
        let delay = window.mul_f64(rng.unit());
        let status = timed(&mut st.killed, || {
            let mut child = cmd(&backup_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn cairn");
            std::thread::sleep(delay);
            let _ = child.kill();
            child.wait().unwrap()
        });
        st.kills += 1;
        if status.success() {
            st.finished += 1;
        }
        let after_kill = pack_files(&env.repo);
        let killed = new_names(&after_kill, &before);
        let (killed_ids, _) = pack_blobs(&after_kill, &killed);
        let k_bytes = bytes_of(&after_kill, &killed);
        st.killed_bytes += k_bytes;
        // The run may have committed its snapshot just before the kill.
        for id in snapshot_ids(&env.repo).difference(&snaps_before) {
            snaps.push((id.clone(), source.state.clone()));
        }
        let what = format!("kill {i}, after {delay:?} of a {window:?} run");

        let c = timed(&mut st.check, || run(cmd(&["check"])));
        assert_eq!(
            c.code, 0,
            "{what}: check failed\n{}\n{}",
            c.stdout, c.stderr
        );
        // A sample: one earlier snapshot, one big file and two directories.
        let (id, want) = &snaps[rng.below(snaps.len() as u64) as usize];
        let only = [
            format!("big/b{}", rng.below(BIG as u64)),
            format!("small/d{}", rng.below(12)),
            format!("small/d{}", rng.below(12)),
        ];
        timed(&mut st.sample, || {
            assert_restores(&cmd, scratch.path(), &src, id, want, &only)
        });

        let r = timed(&mut st.rerun, || run(cmd(&backup_args)).expect(0));
        let v = run_json(&r);
        snaps.push((v["snapshot"].as_str().unwrap().into(), source.state.clone()));
        st.recovered += v["packs_recovered"].as_u64().unwrap();
        let after = pack_files(&env.repo);
        let rerun = new_names(&after, &after_kill);
        let (_, rerun_bytes) = pack_blobs(&after, &rerun);
        assert_eq!(
            v["bytes_added"].as_u64().unwrap(),
            rerun_bytes,
            "{what}: bytes_added differs from the records the rerun wrote"
        );
        let again = reuploaded(&after, &rerun, &killed_ids);
        st.reuploaded += again;
        assert!(
            again == 0 || again * 10 < k_bytes,
            "{what}: the rerun uploaded {again} bytes again of the {k_bytes} the killed \
             run had written\n{}",
            r.stdout
        );
    }

    // Every snapshot restores. Snapshots with the same root tree restore
    // the very same thing, so each root is restored once (after checking
    // that their sources were indeed equal).
    let t = Instant::now();
    let listed = run_json(&run(cmd(&["snapshots", "--json"])).expect(0));
    let roots: BTreeMap<String, String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["root"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(roots.len(), snaps.len(), "snapshots appeared or vanished");
    let mut by_root: BTreeMap<&str, (&str, &State)> = BTreeMap::new();
    for (id, want) in &snaps {
        let root = roots[id].as_str();
        match by_root.get(root) {
            Some((other, earlier)) => assert!(
                *earlier == want,
                "snapshots {other} and {id} share a root but not a source state"
            ),
            None => {
                by_root.insert(root, (id, want));
            }
        }
    }
    for (id, want) in by_root.values() {
        assert_restores(&cmd, scratch.path(), &src, id, want, &[]);
    }
    run(cmd(&["check", "--read-data"])).expect(0);
    st.verify += t.elapsed();
    st.snapshots += snaps.len();
    st.roots += by_root.len();
}

// ---------------------------------------------------------------------
// 3. Two backups at once.

#[test]
fn concurrent_backups_into_one_repository() {
    let env = Env::new();
    env.ok(&["init"]);
    let srcs = [env.path("a"), env.path("b")];
    for (k, src) in srcs.iter().enumerate() {
        fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..8u64 {
            let seed = 100 * k as u64 + i;
            fs::write(src.join(format!("sub/f{i}")), pseudo(700 << 10, seed)).unwrap();
        }
        // The same content in both: both runs may store it, either copy serves.
        fs::write(src.join("common"), pseudo(2 << 20, 4242)).unwrap();
    }
    let children: Vec<_> = srcs
        .iter()
        .map(|src| {
            cairn(&env, &["backup", "--pack-size", "1MiB", "--json", s(src)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            cmdline: "concurrent backup".into(),
        }
        .expect(0);
        ids.push(run_json(&r)["snapshot"].as_str().unwrap().to_string());
    }
    assert_eq!(snapshot_ids(&env.repo), ids.iter().cloned().collect());
    for (src, id) in srcs.iter().zip(&ids) {
        let dest = env.path(&format!("restore-{}", &id[..8]));
        env.ok(&["restore", &id[..16], s(&dest)]);
        let diffs = compare_trees(src, &restored(&dest, src), true);
        assert!(diffs.is_empty(), "{diffs:#?}");
    }
    env.ok(&["check", "--read-data"]);
}

// ---------------------------------------------------------------------
// 4. The repository's disk fills up.

/// Unmounts a test filesystem, even when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn disk_full_stops_cleanly() {
    let env = Env::new();
    let mnt = env.path("small-disk");
    fs::create_dir_all(&mnt).unwrap();
    let m = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .output();
    match m {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            cannot_run(&format!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => cannot_run(&format!("cannot run mount: {e}")),
    }
    let _unmount = Unmount(mnt.clone());
    let repo = mnt.join("repo");
    let at = |args: &[&str]| {
        let mut c = env.cmd();
        c.arg("--repo").arg(&repo).args(args);
        run(c)
    };
    at(&["init"]).expect(0);
    let small = env.path("small");
    fs::create_dir_all(&small).unwrap();
    for i in 0..3u64 {
        fs::write(small.join(format!("f{i}")), pseudo(40 << 10, i)).unwrap();
    }
    at(&["backup", s(&small)]).expect(0);
    let snaps = snapshot_ids(&repo);
    assert_eq!(snaps.len(), 1);

    let big = env.path("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..5u64 {
        fs::write(big.join(format!("f{i}")), pseudo(4 << 20, 50 + i)).unwrap();
    }
    let r = at(&["backup", "--pack-size", "1MiB", s(&big)]).expect(2);
    assert!(
        r.stderr.contains("is full") && r.stderr.contains(s(&repo)),
        "stderr should say the disk holding the repository is full:\n{}",
        r.stderr
    );
    assert_eq!(snapshot_ids(&repo), snaps, "a snapshot was written");
    assert_eq!(
        names_in(&repo.join("tmp")),
        BTreeSet::new(),
        "temp files left"
    );

    let dest = env.path("dest");
    at(&["restore", "latest", s(&dest)]).expect(0);
    let diffs = compare_trees(&small, &restored(&dest, &small), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    at(&["check", "--read-data"]).expect(0);
}

// ---------------------------------------------------------------------
// 5. Ctrl-C.

#[test]
fn ctrl_c_stops_cleanly_and_resumes() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..12u64 {
        fs::write(src.join(format!("f{i:02}")), pseudo(4 << 20, 300 + i)).unwrap();
    }
    let mut child = cairn(&env, &["backup", "--pack-size", "1MiB", s(&src)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pack_files(&env.repo).len() < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the backup wrote no pack");
        std::thread::sleep(Duration::from_millis(2));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("interrupted"), "stderr:\n{stderr}");
    assert!(snapshot_ids(&env.repo).is_empty(), "a snapshot was written");
    env.ok(&["check"]);

    let before = pack_files(&env.repo);
    let all: BTreeSet<String> = before.keys().cloned().collect();
    let (written_ids, _) = pack_blobs(&before, &all);
    let written = bytes_of(&before, &all);
    let v = backup_json(&env, &src);
    let after = pack_files(&env.repo);
    let rerun = new_names(&after, &before);
    let again = reuploaded(&after, &rerun, &written_ids);
    let added = v["bytes_added"].as_u64().unwrap();
    let total = 48u64 << 20;
    assert!(
        again * 10 < written,
        "the rerun uploaded {again} of {written} bytes again: {v:#}"
    );
    assert!(
        v["packs_recovered"].as_u64().unwrap() > 0 || added < total - written * 9 / 10,
        "the rerun added {added} bytes although {written} of {total} were written: {v:#}"
    );
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    let diffs = compare_trees(&src, &restored(&dest, &src), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

// ---------------------------------------------------------------------
// 6. Bad input.

/// A repository with one snapshot of a small source.
fn small_repo() -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), pseudo(50 << 10, 1)).unwrap();
    fs::write(src.join("b"), b"hello").unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    (env, src)
}

#[test]
fn bad_input_wrong_passphrase() {
    let (env, src) = small_repo();
    fs::write(src.join("c"), b"new").unwrap();
    let before = fingerprint(&env.repo);
    let dest = env.path("dest");
    for args in [
        vec!["backup", s(&src)],
        vec!["snapshots"],
        vec!["restore", "latest", s(&dest)],
        vec!["check"],
    ] {
        let mut c = cairn(&env, &args);
        c.env("CAIRN_PASSWORD", "not the passphrase");
        let r = run(c).expect(2);
        assert!(
            r.stderr.contains("wrong passphrase"),
            "{args:?}:\n{}",
            r.stderr
        );
    }
    assert_eq!(fingerprint(&env.repo), before, "the repository changed");
    assert!(!dest.exists(), "restore created its target");
}

/// Commands on something that is not a repository fail, say so, name the
/// path, and change nothing there.
fn assert_not_a_repository(env: &Env, repo: &Path) {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"x").unwrap();
    let before = fingerprint(repo);
    let existed = repo.exists();
    for args in [vec!["snapshots"], vec!["backup", s(&src)], vec!["check"]] {
        let mut c = env.cmd();
        c.arg("--repo").arg(repo).args(&args);
        let r = run(c).expect(2);
        assert!(
            r.stderr.contains("no Cairn repository at") && r.stderr.contains(s(repo)),
            "{args:?}:\n{}",
            r.stderr
        );
        assert!(r.stderr.contains("cairn init"), "{args:?}:\n{}", r.stderr);
    }
    assert_eq!(repo.exists(), existed);
    assert_eq!(fingerprint(repo), before, "{} changed", repo.display());
}

#[test]
fn bad_input_repo_missing_directory() {
    let env = Env::new();
    assert_not_a_repository(&env, &env.path("nowhere"));
}

#[test]
fn bad_input_repo_empty_directory() {
    let env = Env::new();
    let repo = env.path("empty");
    fs::create_dir_all(&repo).unwrap();
    assert_not_a_repository(&env, &repo);
}

#[test]
fn bad_input_repo_not_a_cairn_repository() {
    let env = Env::new();
    let repo = env.path("photos");
    fs::create_dir_all(repo.join("2024")).unwrap();
    fs::write(repo.join("notes.txt"), b"mine").unwrap();
    fs::write(repo.join("2024/a.jpg"), pseudo(1000, 3)).unwrap();
    assert_not_a_repository(&env, &repo);
    let before = fingerprint(&repo);
    let mut c = env.cmd();
    c.arg("--repo").arg(&repo).arg("init");
    let r = run(c).expect(2);
    assert!(
        r.stderr.contains("not empty") && r.stderr.contains(s(&repo)),
        "init should refuse a non-empty directory:\n{}",
        r.stderr
    );
    assert_eq!(fingerprint(&repo), before, "init changed the directory");
}

#[test]
fn bad_input_newer_format_version() {
    let (env, src) = small_repo();
    let config = env.repo.join("config");
    let mut b = fs::read(&config).unwrap();
    assert_eq!(&b[..8], b"CAIRNCF1");
    assert_eq!(&b[8..11], &[1, 1, 1], "tag 1 (major), length 1, value 1");
    b[10] = 9;
    fs::write(&config, &b).unwrap();
    let before = fingerprint(&env.repo);
    let dest = env.path("dest");
    for args in [
        vec!["snapshots"],
        vec!["backup", s(&src)],
        vec!["check", "--read-data"],
        vec!["restore", "latest", s(&dest)],
        vec!["ls", "latest"],
        vec!["diff", "latest", "latest"],
        vec!["stats"],
        vec!["key", "list"],
        vec!["key", "add", "--label", "second"],
        vec!["key", "passwd"],
    ] {
        let mut c = cairn(&env, &args);
        c.env("CAIRN_NEW_PASSWORD", "another passphrase");
        let r = run(c).expect(2);
        assert!(
            r.stderr.contains("upgrade cairn"),
            "{args:?}:\n{}",
            r.stderr
        );
    }
    // `init` refuses too: there is a repository.
    env.run(&["init"]).expect(2);
    assert_eq!(fingerprint(&env.repo), before, "the repository changed");
    assert!(!dest.exists(), "restore created its target");
}

#[test]
fn bad_input_missing_source_path() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"x").unwrap();
    let missing = env.path("no-such-dir");
    for args in [
        vec!["backup", s(&missing)],
        vec!["backup", s(&src), s(&missing)],
    ] {
        let r = env.run(&args).expect(2);
        assert!(r.stderr.contains(s(&missing)), "{args:?}:\n{}", r.stderr);
        assert!(
            r.stderr.contains("does not exist") || r.stderr.contains("No such file"),
            "{args:?}:\n{}",
            r.stderr
        );
    }
    assert!(snapshot_ids(&env.repo).is_empty(), "a snapshot was written");
    assert!(pack_files(&env.repo).is_empty(), "data was written");
}

#[test]
fn bad_input_permission_denied_is_skipped_and_reported() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::write(src.join("ok"), pseudo(30 << 10, 1)).unwrap();
    fs::write(src.join("sub/ok2"), b"fine").unwrap();
    fs::write(src.join("secret"), b"private").unwrap();
    fs::write(src.join("locked/inside"), b"private too").unwrap();
    let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    mode(&src.join("secret"), 0o000);
    mode(&src.join("locked"), 0o000);

    // Root reads everything: run the backup as nobody (uid 65534).
    let as_user = |args: &[&str]| -> Command {
        let inner = cairn(&env, args);
        if !is_root() {
            return inner;
        }
        let mut c = Command::new("setpriv");
        c.env_clear();
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(inner.get_program())
            .args(inner.get_args());
        c
    };
    if is_root() {
        if Command::new("setpriv").arg("--version").output().is_err() {
            cannot_run("setpriv (util-linux) is missing, cannot drop root");
        }
        mode(env.dir.path(), 0o755);
        fs::create_dir_all(&env.repo).unwrap();
        for p in [&env.home, &env.repo] {
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        }
    }
    run(as_user(&["init"])).expect(0);
    let r = run(as_user(&["backup", s(&src)])).expect(1);
    for p in [src.join("secret"), src.join("locked")] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with("warning:") && l.contains(s(&p))),
            "no warning names {}:\n{}",
            p.display(),
            r.stderr
        );
    }
    mode(&src.join("secret"), 0o644);
    mode(&src.join("locked"), 0o755);

    let dest = env.path("dest");
    run(as_user(&["ls", "latest"])).expect(0);
    run(cairn(&env, &["restore", "latest", s(&dest)])).expect(0);
    let got = state_of(&restored(&dest, &src));
    let want: State = [("ok", src.join("ok")), ("sub/ok2", src.join("sub/ok2"))]
        .into_iter()
        .map(|(k, p)| {
            (
                k.to_string(),
                cairn_crypto::plain_hash(&fs::read(p).unwrap()),
            )
        })
        .collect();
    assert_eq!(state_diff(&want, &got), Vec::<String>::new());
}

#[test]
fn bad_input_file_changed_while_read() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let hot = src.join("hot");
    let size = 64u64 << 20;
    fs::write(&hot, pseudo(size as usize, 9)).unwrap();
    fs::write(src.join("calm"), b"calm").unwrap();
    for attempt in 1..=4 {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let f = fs::OpenOptions::new().write(true).open(&hot).unwrap();
            std::thread::spawn(move || {
                let mut block = pseudo(64 << 10, attempt);
                let mut off = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    block[0] = block[0].wrapping_add(1);
                    f.write_at(&block, off).unwrap();
                    off = (off + block.len() as u64) % size;
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let r = env.run(&["backup", s(&src)]);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(
            r.code == 0 || r.code == 1,
            "backup failed:\n{}\n{}",
            r.stdout,
            r.stderr
        );
        if r.code == 1 {
            assert!(
                r.stderr.lines().any(|l| l.starts_with("warning:")
                    && l.contains(s(&hot))
                    && l.contains("changed while being read")),
                "{}",
                r.stderr
            );
            assert_eq!(snapshot_ids(&env.repo).len(), attempt as usize);
            return;
        }
        eprintln!("attempt {attempt}: the change was not noticed, trying again");
    }
    panic!("a file rewritten throughout the backup was never reported as changed");
}
