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
//! `CAIRN_POWERCUT_CUTS` raises the number of cut points checked (every
//! one of them with `all`), `CAIRN_POWERCUT_SEED` picks others; see
//! `tests/soak/powercut.sh`.

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
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
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

/// Appends a record under the shim's lock, with the next sequence number.
fn append_record(log: &Path, line: impl FnOnce(u64) -> String) -> u64 {
    use std::io::{Read, Seek, Write};
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(log.join("lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let mut sf = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(log.join("seq"))
        .unwrap();
    let mut num = String::new();
    sf.read_to_string(&mut num).unwrap();
    let seq = num.trim().parse::<u64>().unwrap_or(0) + 1;
    sf.seek(std::io::SeekFrom::Start(0)).unwrap();
    write!(sf, "{seq:020}").unwrap();
    let mut lf = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log.join("log"))
        .unwrap();
    lf.write_all(line(seq).as_bytes()).unwrap();
    seq
}

type Id = (u64, i64, u32);

struct Entry {
    name: Vec<u8>,
    id: Id,
    kind: u8,
    mode: u32,
}

/// What the shim recorded, indexed for replay.
#[derive(Default)]
struct Log {
    /// Directory path -> (seq, entries) in sequence order.
    dirs: HashMap<Vec<u8>, Vec<(u64, Vec<Entry>)>>,
    /// File identity -> seqs of its blobs, in order.
    files: HashMap<Id, Vec<u64>>,
    /// (seq, label) of each acknowledged command.
    acks: Vec<(u64, String)>,
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

fn parse_log(dir: &Path) -> Log {
    let text = std::fs::read_to_string(dir.join("log")).expect("power-cut log");
    let mut log = Log::default();
    let mut lines = text.lines();
    let mut seqs = Vec::new();
    while let Some(line) = lines.next() {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> u64 { f[i].parse().unwrap_or_else(|_| panic!("{line}")) };
        match f[0] {
            "FILE" => {
                let id = (num(2), f[3].parse().unwrap(), f[4].parse().unwrap());
                log.files.entry(id).or_default().push(num(1));
                seqs.push(num(1));
            }
            "DIR" => {
                let n = num(3) as usize;
                let entries = (0..n)
                    .map(|_| {
                        let l = lines.next().expect("entry line");
                        let e: Vec<&str> = l.split(' ').collect();
                        assert_eq!(e[0], "E", "{l}");
                        Entry {
                            name: unhex(e[1]),
                            id: (
                                e[2].parse().unwrap(),
                                e[3].parse().unwrap(),
                                e[4].parse().unwrap(),
                            ),
                            kind: e[5].as_bytes()[0],
                            mode: u32::from_str_radix(e[6], 8).unwrap(),
                        }
                    })
                    .collect();
                log.dirs
                    .entry(unhex(f[2]))
                    .or_default()
                    .push((num(1), entries));
                seqs.push(num(1));
            }
            "ACK" => {
                log.acks.push((num(1), f[2].to_string()));
                seqs.push(num(1));
            }
            _ => panic!("unknown record: {line}"),
        }
    }
    // Records are appended under the lock in sequence order; a gap or a
    // repeat would mean a lost or torn record.
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, i as u64 + 1, "power-cut log out of order");
    }
    log.last = seqs.len() as u64;
    for v in log.files.values_mut() {
        v.sort();
    }
    log
}

impl Log {
    fn acked(&self, k: u64, label: &str) -> bool {
        self.acks.iter().any(|(s, l)| *s <= k && l == label)
    }

    /// Rebuilds into `new` what a disk holds after a cut right after
    /// record `k`: the tree as the last directory syncs before it listed
    /// it, each file with the bytes of its last sync (empty if none).
    fn rebuild(&self, blobs: &Path, k: u64, old: &Path, new: &Path) {
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
        self.dirs
            .get(path)?
            .iter()
            .rev()
            .find(|(s, _)| *s <= k)
            .map(|(_, e)| e)
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
                b'f' => {
                    let blob = self
                        .files
                        .get(&e.id)
                        .and_then(|v| v.iter().rev().find(|s| **s <= k));
                    match blob {
                        Some(s) => std::fs::copy(blobs.join(s.to_string()), &n).map(|_| ()),
                        None => std::fs::write(&n, b""),
                    }
                    .unwrap();
                    std::fs::set_permissions(&n, std::fs::Permissions::from_mode(e.mode)).unwrap();
                }
                other => panic!(
                    "{}: entry of type {} not modelled by the replay",
                    o.display(),
                    other as char
                ),
            }
        }
    }
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
/// wrong with it.
fn check_cut(log: &Log, sc: &Scenario, k: u64, at: &Path, deep: bool) -> Vec<String> {
    let mut p = Vec::new();
    log.rebuild(&sc.blobs, k, &sc.root, at);
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
    for (i, n) in [700_000usize, 400_000, 300_000, 5_000].iter().enumerate() {
        std::fs::write(src.join(format!("f{i}")), pseudo(*n, i as u64 + 1)).unwrap();
    }
    std::fs::write(src.join("sub/g"), pseudo(600_000, 9)).unwrap();

    let recorded = |args: &[&str]| {
        let mut c = cairn(&root, args);
        c.env("LD_PRELOAD", &shim)
            .env("CAIRN_POWERCUT_LOG", &logdir);
        c
    };
    let ack = |label: &str| {
        append_record(&logdir, |seq| format!("ACK {seq} {label}\n"));
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
    let mut cuts: BTreeSet<u64> = BTreeSet::new();
    if want == "all" {
        cuts.extend(0..=log.last);
    } else {
        let want: usize = want.parse().unwrap_or(40);
        for (s, _) in &log.acks {
            cuts.insert(s - 1);
            cuts.insert(*s);
        }
        cuts.insert(log.last);
        let mut x: u64 = std::env::var("CAIRN_POWERCUT_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5EED)
            | 1;
        while cuts.len() < want.min(log.last as usize + 1) {
            cuts.insert(next(&mut x) % (log.last + 1));
        }
    }
    let deep: BTreeSet<u64> = log.acks.iter().map(|(s, _)| *s).collect();

    let cuts: Vec<u64> = cuts.into_iter().collect();
    let at = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let states = t.path().join("cuts");
    std::fs::create_dir(&states).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = at.fetch_add(1, Ordering::SeqCst);
                    let Some(&k) = cuts.get(i) else { break };
                    let dir = states.join(k.to_string());
                    let p = check_cut(&log, &sc, k, &dir, deep.contains(&k));
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
                            "cut after record {k} (acknowledged: {acked:?}; state kept in {}):\n  {}",
                            dir.display(),
                            p.join("\n  ")
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "power-cut test: {} records ({} fsyncs of files, of {} directories), {} cut points \
         checked in {:?} (recording took {recording:?})",
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
