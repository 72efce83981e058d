//! Power cuts, beyond SIGKILL: a killed process leaves the page cache to
//! the kernel, which writes it all out; a power cut keeps only what was
//! fsynced. The real `cairn` runs `init`, a backup, `key add`, a second
//! backup, `forget` and `prune` under an LD_PRELOAD shim
//! (`tests/powercut/shim.c`) that records what every fsync made durable.
//! For many cut points the test rebuilds only that (a pessimistic POSIX
//! disk: an unsynced directory entry or file content is lost) and checks
//! that the repository opens, that every acknowledged snapshot restores
//! byte-identical, that no key is lost, and that a new backup still works.
//!
//! A run checks every cut point under both models while there are at
//! most `CAIRN_POWERCUT_CUTS` of them (150 by default; `all` for no limit),
//! else a sample that keeps the points around each acknowledgement.
//! `CAIRN_POWERCUT_SEED` changes the files backed up and the sample;
//! `tests/soak/powercut.sh` runs many seeds.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::util::*;

const NEW_PASS: &str = "a second owner passphrase";

/// Compiles the shim into `dir`.
fn build_shim(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/powercut/shim.c");
    let so = dir.join("shim.so");
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|e| {
            panic!("the power-cut test needs gcc to build its LD_PRELOAD shim ({e}): install it (apt-get install gcc)")
        });
    assert!(
        out.status.success(),
        "gcc {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

/// `cairn` with HOME, the XDG directories and the repository all under
/// `root`, so a rebuilt copy of `root` is a machine after the cut.
fn cairn(root: &Path, args: &[&str]) -> Command {
    let home = root.join("home");
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .arg("--repo")
        .arg(root.join("repo"))
        .args(args);
    c
}

/// The next value of one of the shim's counters; the lock must be held.
fn counter(log: &Path, name: &str) -> u64 {
    use std::io::{Read, Seek, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(log.join(name))
        .unwrap();
    let mut num = String::new();
    f.read_to_string(&mut num).unwrap();
    let v = num.trim().parse::<u64>().unwrap_or(0) + 1;
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    write!(f, "{v:020}").unwrap();
    v
}

/// Appends a record under the shim's lock, with the next sequence number
/// and snapshot ticket.
fn append_record(log: &Path, line: impl FnOnce(u64, u64) -> String) {
    use std::io::Write;
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(log.join("lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let (seq, ticket) = (counter(log, "seq"), counter(log, "ticket"));
    let mut lf = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log.join("log"))
        .unwrap();
    lf.write_all(line(seq, ticket).as_bytes()).unwrap();
}

/// Of the snapshots whose sync returned by record `k`, the one taken
/// last: syncs running at once may return in another order than they
/// began, and an older listing must not hide a newer one's names.
fn newest<T>(v: &[Synced<T>], k: u64) -> Option<&T> {
    v.iter()
        .filter(|(s, _, _)| *s <= k)
        .max_by_key(|(_, t, _)| *t)
        .map(|(_, _, x)| x)
}

type Id = (u64, i64, u32);

/// A snapshot taken at a sync: (seq, ticket, what it saw).
type Synced<T> = (u64, u64, T);

/// Every name below the root, by path relative to it.
type Tree = Vec<(Vec<u8>, Entry)>;

struct Entry {
    name: Vec<u8>,
    id: Id,
    kind: u8,
    mode: u32,
}

/// What the shim recorded, indexed for replay.
#[derive(Default)]
struct Log {
    /// Directory path -> (seq, ticket, entries).
    dirs: HashMap<Vec<u8>, Vec<Synced<Vec<Entry>>>>,
    /// File identity -> (seq, ticket, blob name) of each of its syncs.
    files: HashMap<Id, Vec<Synced<u64>>>,
    /// (seq, label) of each acknowledged command.
    acks: Vec<(u64, String)>,
    /// (seq, ticket, every name below the root then).
    trees: Vec<Synced<Tree>>,
    last: u64,
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `name-hex ino btime_s btime_ns type mode`, as the shim writes them.
fn entry(e: &[&str]) -> Entry {
    Entry {
        name: unhex(e[0]),
        id: (
            e[1].parse().unwrap(),
            e[2].parse().unwrap(),
            e[3].parse().unwrap(),
        ),
        kind: e[4].as_bytes()[0],
        mode: u32::from_str_radix(e[5], 8).unwrap(),
    }
}

/// The names below `root` like the shim's TREE block, for an ACK: what a
/// command left unsynced when it exited is part of the second model.
fn tree_block(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let Ok(m) = std::fs::symlink_metadata(root.join(&r)) else {
                continue;
            };
            let (bs, bns) = m
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
            let ft = m.file_type();
            let kind = if ft.is_file() {
                'f'
            } else if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else {
                'o'
            };
            let hex: String = r
                .as_os_str()
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            out.push(format!(
                "T {hex} {} {bs} {bns} {kind} {:o}\n",
                m.ino(),
                m.mode() & 0o7777
            ));
            if ft.is_dir() {
                walk(root, &r, out);
            }
        }
    }
    let mut lines = Vec::new();
    walk(root, Path::new(""), &mut lines);
    format!("TREE {}\n{}", lines.len(), lines.concat())
}

fn parse_log(dir: &Path) -> Log {
    let text = std::fs::read_to_string(dir.join("log")).expect("power-cut log");
    let mut log = Log::default();
    let mut lines = text.lines().peekable();
    let mut seqs = Vec::new();
    while let Some(line) = lines.next() {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> u64 { f[i].parse().unwrap_or_else(|_| panic!("{line}")) };
        match f[0] {
            "FILE" => {
                let id = (num(3), f[4].parse().unwrap(), f[5].parse().unwrap());
                log.files
                    .entry(id)
                    .or_default()
                    .push((num(1), num(2), num(1)));
                seqs.push(num(1));
            }
            "DIR" => {
                let n = num(4) as usize;
                let entries = (0..n)
                    .map(|_| {
                        let l = lines.next().expect("entry line");
                        let e: Vec<&str> = l.split(' ').collect();
                        assert_eq!(e[0], "E", "{l}");
                        entry(&e[1..])
                    })
                    .collect();
                log.dirs
                    .entry(unhex(f[3]))
                    .or_default()
                    .push((num(1), num(2), entries));
                seqs.push(num(1));
            }
            "ACK" => {
                log.acks.push((num(1), f[3].to_string()));
                seqs.push(num(1));
            }
            _ => panic!("unknown record: {line}"),
        }
        if let Some(t) = lines.next_if(|l| l.starts_with("TREE ")) {
            let n: usize = t[5..].parse().unwrap();
            let names = (0..n)
                .map(|_| {
                    let l = lines.next().expect("tree line");
                    let e: Vec<&str> = l.split(' ').collect();
                    assert_eq!(e[0], "T", "{l}");
                    (unhex(e[1]), entry(&e[1..]))
                })
                .collect();
            let f: Vec<&str> = line.split(' ').collect();
            log.trees
                .push((*seqs.last().unwrap(), f[2].parse().unwrap(), names));
        }
    }
    // Records are appended under the lock in sequence order; a gap or a
    // repeat would mean a lost or torn record.
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, i as u64 + 1, "power-cut log out of order");
    }
    log.last = seqs.len() as u64;
    log
}

impl Log {
    fn acked(&self, k: u64, label: &str) -> bool {
        self.acks.iter().any(|(s, l)| *s <= k && l == label)
    }

    /// Rebuilds into `new` what a disk holds after a cut right after
    /// record `k`, under `model`.
    fn rebuild(&self, model: Model, blobs: &Path, k: u64, old: &Path, new: &Path) {
        match model {
            Model::Synced => self.rebuild_synced(blobs, k, old, new),
            Model::Names => self.rebuild_names(blobs, k, new),
        }
    }

    /// The bytes of a file's last sync before the cut; none if never.
    fn write_file(&self, blobs: &Path, k: u64, e: &Entry, n: &Path) {
        match self.files.get(&e.id).and_then(|v| newest(v, k)) {
            Some(s) => std::fs::copy(blobs.join(s.to_string()), n).map(|_| ()),
            None => std::fs::write(n, b""),
        }
        .unwrap();
        std::fs::set_permissions(n, std::fs::Permissions::from_mode(e.mode)).unwrap();
    }

    /// Every name as it stood at the cut, every file with the bytes of
    /// its last sync.
    fn rebuild_names(&self, blobs: &Path, k: u64, new: &Path) {
        std::fs::create_dir(new).unwrap();
        std::fs::create_dir(new.join("home")).unwrap();
        let Some(names) = newest(&self.trees, k) else {
            return;
        };
        let mut dirs = Vec::new();
        for (rel, e) in names {
            let n = new.join(OsStr::from_bytes(rel));
            match e.kind {
                b'd' if rel == b"home" => {}
                b'd' => {
                    std::fs::create_dir(&n).unwrap();
                    dirs.push((n, e.mode));
                }
                b'f' => self.write_file(blobs, k, e, &n),
                other => panic!(
                    "{}: entry of type {} not modelled by the replay",
                    n.display(),
                    other as char
                ),
            }
        }
        for (n, mode) in dirs.into_iter().rev() {
            std::fs::set_permissions(&n, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    /// The tree as the last directory syncs before the cut listed it
    /// (a directory never synced holds nothing), every file with the
    /// bytes of its last sync.
    fn rebuild_synced(&self, blobs: &Path, k: u64, old: &Path, new: &Path) {
        std::fs::create_dir(new).unwrap();
        // The test created HOME before any record; nothing else was there.
        let listing = self.listing(old.as_os_str().as_bytes(), k);
        let mut names: BTreeSet<&[u8]> = BTreeSet::new();
        if let Some(entries) = listing {
            for e in entries {
                names.insert(&e.name);
            }
        }
        if !names.contains(&b"home"[..]) {
            std::fs::create_dir(new.join("home")).unwrap();
            self.rebuild_dir(blobs, k, &old.join("home"), &new.join("home"));
        }
        self.rebuild_dir(blobs, k, old, new);
    }

    fn listing(&self, path: &[u8], k: u64) -> Option<&Vec<Entry>> {
        newest(self.dirs.get(path)?, k)
    }

    fn rebuild_dir(&self, blobs: &Path, k: u64, old: &Path, new: &Path) {
        let Some(entries) = self.listing(old.as_os_str().as_bytes(), k) else {
            return;
        };
        for e in entries {
            let name = OsStr::from_bytes(&e.name);
            let (o, n) = (old.join(name), new.join(name));
            match e.kind {
                b'd' => {
                    std::fs::create_dir(&n).unwrap();
                    self.rebuild_dir(blobs, k, &o, &n);
                    std::fs::set_permissions(&n, std::fs::Permissions::from_mode(e.mode)).unwrap();
                }
                b'f' => self.write_file(blobs, k, e, &n),
                other => panic!(
                    "{}: entry of type {} not modelled by the replay",
                    o.display(),
                    other as char
                ),
            }
        }
    }
}

/// What a power cut keeps.
#[derive(Clone, Copy, Debug)]
enum Model {
    /// Only what fsync made durable: a name needs a sync of its
    /// directory, bytes a sync of their file.
    Synced,
    /// Every name change, but no unsynced byte: delayed allocation, where
    /// a file renamed into place without fsync comes back empty.
    Names,
}

/// One checked command: its failure is a finding, reported with the cut.
fn ok(c: Command, what: &str, problems: &mut Vec<String>) -> Option<Run> {
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let r = run(c);
    if r.code == 0 {
        Some(r)
    } else {
        problems.push(format!(
            "{what}: `cairn {}` exited {}\n{}{}",
            args.join(" "),
            r.code,
            r.stdout,
            r.stderr
        ));
        None
    }
}

struct Scenario {
    /// Where the commands ran (the paths in the log).
    root: PathBuf,
    src: PathBuf,
    blobs: PathBuf,
    /// Snapshot id and a copy of the source it was taken from, per label.
    snaps: Vec<(String, String, PathBuf)>,
}

/// Checks the state after a cut right after record `k`; returns what is
/// wrong with it, and how many names the rebuilt state held.
fn check_cut(
    log: &Log,
    sc: &Scenario,
    model: Model,
    k: u64,
    at: &Path,
    deep: bool,
) -> (Vec<String>, usize) {
    log.rebuild(model, &sc.blobs, k, &sc.root, at);
    let names = entries_below(at).len();
    (check_state(log, sc, k, at, deep), names)
}

fn check_state(log: &Log, sc: &Scenario, k: u64, at: &Path, deep: bool) -> Vec<String> {
    let mut p = Vec::new();
    let repo = at.join("repo");
    let keyed = |args: &[&str]| cairn(at, args);
    if !log.acked(k, "init") {
        // Anything may be there, but init must finish the job, or refuse
        // because the repository is in fact there and opens.
        let r = run(keyed(&["init"]));
        if r.code != 0 {
            let opens = repo.join("config").is_file() && run(keyed(&["snapshots"])).code == 0;
            if !opens {
                p.push(format!(
                    "init after a cut during init exited {}:\n{}{}",
                    r.code, r.stdout, r.stderr
                ));
            }
        }
        return p;
    }
    // The owner key file written by init.
    let Some(r) = ok(
        keyed(&["snapshots", "--json"]),
        "open with the key file",
        &mut p,
    ) else {
        return p;
    };
    let listed: BTreeSet<String> = json(&r.stdout)
        .as_array()
        .expect("snapshot list")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_string())
        .collect();
    if log.acked(k, "key-add") {
        let mut c = keyed(&["snapshots"]);
        c.env("XDG_CONFIG_HOME", at.join("no-config"))
            .env("CAIRN_PASSWORD", NEW_PASS);
        ok(c, "open with the passphrase of the added key", &mut p);
    }
    let mut check = vec!["check"];
    if deep {
        check.push("--read-data");
    }
    ok(keyed(&check), "check", &mut p);
    // A forget that had begun may have removed A before it answered.
    let forgotten = log.acked(k, "begin-forget-A");
    for (label, id, copy) in &sc.snaps {
        if !log.acked(k, &format!("backup-{label}")) || (label == "A" && forgotten) {
            continue;
        }
        if !listed.contains(id) {
            p.push(format!(
                "acknowledged snapshot {label} ({id}) is not listed: {listed:?}"
            ));
            continue;
        }
        let dest = at.join(format!("restore-{label}"));
        if ok(
            keyed(&["restore", "--no-progress", id, s(&dest)]),
            &format!("restore {label}"),
            &mut p,
        )
        .is_some()
        {
            let diffs = compare_trees(copy, &restored(&dest, &sc.src), false);
            if !diffs.is_empty() {
                p.push(format!("snapshot {label} restored differently: {diffs:?}"));
            }
        }
    }
    // The machine goes on backing up after the cut: stale locks, staging
    // files, caches and records left empty must not stop it.
    if p.is_empty() {
        ok(
            keyed(&[
                "backup",
                "--no-progress",
                "--pack-size",
                "256KiB",
                s(&sc.src),
            ]),
            "backup after the cut",
            &mut p,
        );
    }
    p
}

/// Deterministic xorshift, to pick cut points.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn powercut_init_backup_key_add_prune() {
    let started = Instant::now();
    let t = tempfile::Builder::new()
        .prefix("cairn-powercut-")
        .tempdir()
        .unwrap();
    let shim = build_shim(t.path());
    let root = t.path().join("root");
    let src = t.path().join("src");
    let logdir = t.path().join("log");
    std::fs::create_dir_all(root.join("home")).unwrap();
    std::fs::create_dir_all(logdir.join("blobs")).unwrap();
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let seed: u64 = std::env::var("CAIRN_POWERCUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    // Sizes around a few packs' worth each: packs, index files and
    // snapshot objects all get cut.
    for (i, n) in [700_000u64, 400_000, 300_000, 5_000].iter().enumerate() {
        let n = n / 2 + next(&mut x) % n;
        std::fs::write(
            src.join(format!("f{i}")),
            pseudo(n as usize, seed + i as u64),
        )
        .unwrap();
    }
    std::fs::write(src.join("sub/g"), pseudo(600_000, seed + 9)).unwrap();

    let recorded = |args: &[&str]| {
        let mut c = cairn(&root, args);
        c.env("LD_PRELOAD", &shim)
            .env("CAIRN_POWERCUT_LOG", &logdir)
            .env("CAIRN_POWERCUT_ROOT", &root);
        c
    };
    let ack = |label: &str| {
        append_record(&logdir, |seq, ticket| {
            format!("ACK {seq} {ticket} {label}\n{}", tree_block(&root))
        });
    };
    let backup = |label: &str| -> String {
        let r = run(recorded(&[
            "backup",
            "--json",
            "--no-progress",
            "--pack-size",
            "256KiB",
            s(&src),
        ]))
        .expect(0);
        ack(&format!("backup-{label}"));
        json(&r.stdout)["snapshot"].as_str().unwrap().to_string()
    };
    let mut snaps = Vec::new();

    run(recorded(&["init"])).expect(0);
    ack("init");
    let a = backup("A");
    copy_tree(&src, &t.path().join("src-A"));
    snaps.push(("A".to_string(), a.clone(), t.path().join("src-A")));

    let mut c = recorded(&["key", "add", "--label", "second"]);
    c.env("CAIRN_NEW_PASSWORD", NEW_PASS);
    run(c).expect(0);
    ack("key-add");

    std::fs::write(src.join("f1"), pseudo(400_000, 77)).unwrap();
    std::fs::remove_file(src.join("f2")).unwrap();
    std::fs::write(src.join("sub/h"), pseudo(300_000, 78)).unwrap();
    let b = backup("B");
    copy_tree(&src, &t.path().join("src-B"));
    snaps.push(("B".to_string(), b, t.path().join("src-B")));

    ack("begin-forget-A");
    run(recorded(&["forget", &a])).expect(0);
    ack("forget-A");
    run(recorded(&["prune", "--grace", "0", "--max-unused", "0%"])).expect(0);
    ack("prune");
    let recording = started.elapsed();

    let log = parse_log(&logdir);
    let sc = Scenario {
        root: root.clone(),
        src: src.clone(),
        blobs: logdir.join("blobs"),
        snaps,
    };

    // Cut points: right before and right after every acknowledgement,
    // the very end, and a deterministic sample of the rest.
    let want = std::env::var("CAIRN_POWERCUT_CUTS").unwrap_or_default();
    let want: usize = match want.as_str() {
        "all" => usize::MAX,
        w => w.parse().unwrap_or(150),
    };
    let mut cuts: BTreeSet<u64> = BTreeSet::new();
    if want > log.last as usize {
        cuts.extend(0..=log.last);
    } else {
        for (s, _) in &log.acks {
            cuts.insert(s - 1);
            cuts.insert(*s);
        }
        cuts.insert(log.last);
        while cuts.len() < want {
            cuts.insert(next(&mut x) % (log.last + 1));
        }
    }
    let deep: BTreeSet<u64> = log.acks.iter().map(|(s, _)| *s).collect();

    let cuts: Vec<(Model, u64)> = cuts
        .into_iter()
        .flat_map(|k| [(Model::Synced, k), (Model::Names, k)])
        .collect();
    let at = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let sizes = Mutex::new(HashMap::new());
    let states = t.path().join("cuts");
    std::fs::create_dir(&states).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = at.fetch_add(1, Ordering::SeqCst);
                    let Some(&(model, k)) = cuts.get(i) else {
                        break;
                    };
                    let dir = states.join(format!("{model:?}-{k}"));
                    let (p, names) = check_cut(&log, &sc, model, k, &dir, deep.contains(&k));
                    sizes
                        .lock()
                        .unwrap()
                        .insert((format!("{model:?}"), k), names);
                    if p.is_empty() {
                        make_writable(&dir);
                        std::fs::remove_dir_all(&dir).unwrap();
                    } else {
                        let acked: Vec<&str> = log
                            .acks
                            .iter()
                            .filter(|(s, l)| *s <= k && !l.starts_with("begin-"))
                            .map(|(_, l)| l.as_str())
                            .collect();
                        failures.lock().unwrap().push(format!(
                            "{model:?} model, cut after record {k} (acknowledged: {acked:?}; state \
                             kept in {}):\n  {}",
                            dir.display(),
                            p.join("\n  ")
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    // Unsynced names (the files cache, staging files) make the second
    // model's states larger somewhere; if not, it checks nothing more.
    let sizes = sizes.into_inner().unwrap();
    let differ = sizes
        .iter()
        .filter(|((m, k), n)| m == "Names" && sizes.get(&("Synced".into(), *k)) < Some(n))
        .count();
    assert!(
        differ > 0,
        "the names model never held a name that no directory sync had saved"
    );
    eprintln!(
        "power-cut test (seed {seed}): {} records ({} fsyncs of files, of {} directories), \
         {} states checked ({differ} with unsynced names) in {:?} (recording took {recording:?})",
        log.last,
        log.files.values().map(Vec::len).sum::<usize>(),
        log.dirs.len(),
        cuts.len(),
        started.elapsed(),
    );
    if !failures.is_empty() {
        // Keep the states and the log for a look.
        let kept = t.keep();
        panic!(
            "{} of {} cut points lose data (log in {}):\n{}",
            failures.len(),
            cuts.len(),
            kept.join("log").display(),
            failures.join("\n")
        );
    }
}
