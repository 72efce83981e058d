//! Retention and garbage collection through the real binary: forget with
//! policies and protection, prune without any key, prune while backups
//! run, a backup frozen across a prune, and the prune lease.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn snapshot_count(env: &Env) -> usize {
    snapshot_ids(env).len()
}

/// Every snapshot's ID and group, as `snapshots --json` lists them.
fn snapshot_ids(env: &Env) -> Vec<(String, String)> {
    json(&env.ok(&["snapshots", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["group"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn backup(env: &Env, args: &[&str]) -> String {
    let mut a = vec!["backup", "--json", "--pack-size", "1MiB"];
    a.extend_from_slice(args);
    let v = json(&env.ok(&a));
    v["snapshot"].as_str().unwrap().to_string()
}

/// Names of every object of a repository directory, by kind.
fn objects(repo: &Path, dir: &str) -> Vec<String> {
    let mut out: Vec<String> = files_below(&repo.join(dir))
        .into_iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn dir_bytes(dir: &Path) -> u64 {
    files_below(dir)
        .iter()
        .map(|p| fs::metadata(dir.join(p)).unwrap().len())
        .sum()
}

/// A command for `repo` with no key anywhere: an empty HOME and no
/// passphrase, as on a backup box that holds only the repository files.
fn keyless(env: &Env, repo: &Path, args: &[&str]) -> Run {
    let mut c = keyless_cmd(env, repo);
    c.args(args);
    run(c)
}

fn keyless_cmd(env: &Env, repo: &Path) -> Command {
    let home = env.path("keyless-home");
    fs::create_dir_all(&home).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .arg("--repo")
        .arg(repo);
    c
}

#[test]
fn forget_policies_protection_and_refusals() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    let mut ids = Vec::new();
    for i in 0..3u64 {
        write(&src.join("f"), &pseudo(10_000, i));
        ids.push(backup(
            &env,
            &["--group", "laptop", "--tag", "daily", s(&src)],
        ));
    }
    let other = backup(&env, &["--group", "server", s(&src)]);
    assert_eq!(snapshot_count(&env), 4);

    // A dry run shows every snapshot, kept or not, and why; removes nothing.
    let out = env.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(
        out.contains("group laptop") && out.contains("group server"),
        "{out}"
    );
    let row = |id: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&id[..8]))
            .unwrap_or_else(|| panic!("no row for {id} in\n{out}"))
            .to_string()
    };
    assert!(
        row(&ids[2]).contains("keep") && row(&ids[2]).contains("last"),
        "{out}"
    );
    assert!(row(&ids[0]).contains("remove?"), "{out}");
    assert!(row(&other).contains("keep"), "{out}");
    assert!(
        out.contains("2 snapshots would be removed, 2 kept"),
        "{out}"
    );
    assert_eq!(snapshot_count(&env), 4);
    let v = json(&env.ok(&["forget", "--keep-last", "1", "--dry-run", "--json"]));
    let laptop = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "laptop")
        .unwrap();
    let decisions = laptop["snapshots"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    assert_eq!(decisions[0]["id"], ids[2].as_str(), "newest first");
    assert_eq!(decisions[0]["reasons"][0], "last");
    assert_eq!(decisions[1]["keep"], false);

    // Bad input: named, and nothing removed.
    let r = env.run(&["forget"]).expect(2);
    assert!(r.stderr.contains("no retention rule"), "{}", r.stderr);
    let r = env
        .run(&["forget", "--keep-last", "1", "--group", "nope"])
        .expect(2);
    assert!(
        r.stderr.contains("no snapshot is in group \"nope\"") && r.stderr.contains("laptop"),
        "{}",
        r.stderr
    );
    let r = env.run(&["forget", "--keep-tag", "weekly"]).expect(2);
    assert!(
        r.stderr.contains("every snapshot of") && r.stderr.contains("--allow-empty"),
        "{}",
        r.stderr
    );
    let r = env.run(&["forget", "--keep-daily", "0"]).expect(2);
    assert!(r.stderr.contains("keeps nothing"), "{}", r.stderr);
    let r = env.run(&["forget", "--keep-within", "5m"]).expect(2);
    assert!(r.stderr.contains("`min`"), "{}", r.stderr);
    let r = env
        .run(&["forget", "--keep-last", "1", &ids[0][..8]])
        .expect(2);
    assert!(r.stderr.contains("not both"), "{}", r.stderr);
    assert_eq!(snapshot_count(&env), 4);

    // A protected snapshot survives any policy, and removal by ID.
    let out = env.ok(&["protect", &ids[0][..8], "--note", "before the upgrade"]);
    assert!(out.contains("protected"), "{out}");
    let out = env.ok(&["forget", "--keep-last", "1", "--group", "laptop"]);
    assert!(out.contains("protected"), "{out}");
    let left: Vec<String> = snapshot_ids(&env).into_iter().map(|(id, _)| id).collect();
    assert!(left.contains(&ids[0]) && left.contains(&ids[2]) && left.contains(&other));
    assert!(!left.contains(&ids[1]), "the middle snapshot was removed");
    let r = env.run(&["forget", &ids[0][..8]]).expect(2);
    assert!(r.stderr.contains("protected"), "{}", r.stderr);
    env.ok(&["unprotect", &ids[0][..8]]);
    env.ok(&["forget", &ids[0][..8]]);
    assert_eq!(snapshot_count(&env), 2);

    // --allow-empty lets a policy clear a group.
    env.ok(&[
        "forget",
        "--keep-tag",
        "none",
        "--group",
        "server",
        "--allow-empty",
    ]);
    assert_eq!(snapshot_count(&env), 1);

    // A put-only key cannot forget, prune or protect.
    let key = env.put_only_key("put.key");
    for args in [
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["protect", "latest"],
    ] {
        let mut c = env.cmd();
        c.env_remove("CAIRN_PASSWORD")
            .arg("--repo")
            .arg(&env.repo)
            .arg("--key-file")
            .arg(&key)
            .args(&args);
        let r = run(c).expect(2);
        assert!(r.stderr.contains("put-only"), "{args:?}: {}", r.stderr);
    }
    assert_eq!(snapshot_count(&env), 1);
}

/// Three generations of a source; forget the first two and prune. Run
/// once with the owner key on the machine and once on a copy with no key
/// material at all: the results are the same objects.
#[test]
fn prune_frees_space_without_any_key_and_same_as_owner() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    for i in 0..6u64 {
        write(&src.join(format!("keep{i}")), &pseudo(300 << 10, i));
    }
    write(&src.join("old"), &pseudo(1 << 20, 100));
    backup(&env, &[s(&src)]);
    fs::remove_file(src.join("old")).unwrap();
    write(&src.join("mid"), &pseudo(1 << 20, 101));
    backup(&env, &[s(&src)]);
    fs::remove_file(src.join("mid")).unwrap();
    write(&src.join("new"), &pseudo(200 << 10, 102));
    let last = backup(&env, &[s(&src)]);

    let copy = env.path("repo-copy");
    copy_tree(&env.repo, &copy);
    let before = dir_bytes(&env.repo.join("data"));

    let out = env.ok(&["forget", "--keep-last", "1", "--prune", "--grace", "0"]);
    assert!(out.contains("deleted"), "{out}");
    let r = keyless(
        &env,
        &copy,
        &["forget", "--keep-last", "1", "--prune", "--grace", "0"],
    );
    let r = r.expect(0);
    assert!(r.stdout.contains("deleted"), "{}", r.stdout);
    for dir in ["data", "index", "snapshots"] {
        assert_eq!(
            objects(&env.repo, dir),
            objects(&copy, dir),
            "{dir}/ differs between the owner's prune and the keyless one"
        );
    }
    // Rebuilding the index from the trailers: the same with and without
    // a key.
    env.ok(&["repair", "index"]);
    keyless(&env, &copy, &["repair", "index"]).expect(0);
    assert_eq!(objects(&env.repo, "index"), objects(&copy, "index"));
    keyless(&env, &copy, &["check"]).expect(0);
    // The two MiB only the forgotten snapshots held are gone (the packs
    // are 1 MiB, so every pack that held them went or was repacked).
    let after = dir_bytes(&env.repo.join("data"));
    assert!(
        before - after >= (19 << 20) / 10,
        "freed only {} of {before} bytes",
        before - after
    );
    assert!(objects(&env.repo, "garbage").is_empty());
    assert!(objects(&env.repo, "locks").is_empty());

    let dest = env.path("dest");
    env.ok(&["restore", &last[..16], s(&dest)]);
    let diffs = compare_trees(&src, &restored(&dest, &src), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    env.ok(&["check", "--read-data"]);
    // Nothing left to do.
    let out = env.ok(&["prune", "--grace", "0"]);
    assert!(out.contains("nothing new to collect"), "{out}");
}

/// What a source directory held, file by file.
type State = BTreeMap<String, Vec<u8>>;

fn state(dir: &Path) -> State {
    files_below(dir)
        .into_iter()
        .map(|p| {
            let data = fs::read(dir.join(&p)).unwrap();
            (p.to_string_lossy().into_owned(), data)
        })
        .collect()
}

fn assert_restores_state(env: &Env, id: &str, src: &Path, want: &State) {
    let dest = env.path("verify");
    let _ = fs::remove_dir_all(&dest);
    env.ok(&["restore", &id[..16], s(&dest)]);
    let got = state(&restored(&dest, src));
    assert!(
        got == *want,
        "snapshot {id} restored {} files, want {}; differing: {:?}",
        got.len(),
        want.len(),
        want.keys()
            .filter(|k| got.get(*k) != want.get(*k))
            .collect::<Vec<_>>()
    );
    fs::remove_dir_all(&dest).unwrap();
}

/// Backups in a loop while forget and prune run repeatedly with a short
/// grace period: every snapshot that was not forgotten restores exactly
/// what its source held, and `check --read-data` passes. A backup may
/// refuse to commit (it ran past a prune's grace period); nothing else
/// may fail.
#[test]
fn prune_rounds_while_backups_run() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    for i in 0..8u64 {
        write(&src.join(format!("base/f{i}")), &pseudo(64 << 10, i));
    }
    let stop = AtomicBool::new(false);
    let deleted = AtomicU64::new(0);
    let rescued = AtomicU64::new(0);
    let (states, prunes, refused) = std::thread::scope(|sc| {
        let pruner = sc.spawn(|| {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) || rounds < 20 {
                let args: &[&str] = if rounds % 3 == 2 {
                    &["prune", "--grace", "1s", "--max-unused", "5%", "--json"]
                } else {
                    &[
                        "forget",
                        "--keep-last",
                        "3",
                        "--prune",
                        "--grace",
                        "1s",
                        "--json",
                    ]
                };
                let r = env.run(args);
                if r.code == 0 {
                    let v = json(&r.stdout);
                    let p = if v["prune"].is_null() {
                        &v
                    } else {
                        &v["prune"]
                    };
                    deleted.fetch_add(p["deleted_packs"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    rescued.fetch_add(p["rescued_packs"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
                // Refusing because another prune holds the lease is fine;
                // forget with no snapshot yet is refused as an empty group.
                if r.code != 0 {
                    assert!(
                        r.stderr.contains("no snapshot") || r.stderr.contains("every snapshot"),
                        "prune round {rounds} failed:\n{}",
                        r.stderr
                    );
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
            rounds
        });
        // Stops the pruner however this thread leaves (a failed assertion
        // included), so a failure is reported instead of hanging the run.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop_guard = StopOnDrop(&stop);
        let mut states: Vec<(String, State)> = Vec::new();
        let mut refused = 0;
        for round in 0..24u64 {
            // Mutate: one file changes, one appears, one old goes.
            write(
                &src.join(format!("base/f{}", round % 8)),
                &pseudo(64 << 10, 1000 + round),
            );
            write(
                &src.join(format!("r{round}")),
                &pseudo(96 << 10, 2000 + round),
            );
            if round >= 3 {
                let _ = fs::remove_file(src.join(format!("r{}", round - 3)));
            }
            let want = state(&src);
            let r = env.run(&["backup", "--json", "--pack-size", "256KiB", s(&src)]);
            if r.code != 0 {
                assert!(
                    r.stderr.contains("grace period") || r.stderr.contains("is gone"),
                    "backup {round} failed:\n{}",
                    r.stderr
                );
                refused += 1;
                continue;
            }
            let id = json(&r.stdout)["snapshot"].as_str().unwrap().to_string();
            states.push((id, want));
        }
        stop.store(true, Ordering::Relaxed);
        let prunes = pruner.join().unwrap();
        (states, prunes, refused)
    });
    let (deleted, rescued) = (deleted.into_inner(), rescued.into_inner());
    eprintln!(
        "{prunes} prune rounds, {} snapshots, {refused} backups refused, {deleted} packs deleted, {rescued} rescued",
        states.len()
    );
    assert!(prunes >= 20, "only {prunes} prune rounds");
    assert!(
        deleted > 0,
        "the prunes deleted nothing: the test tests nothing"
    );
    assert!(refused < 12, "{refused} of 24 backups refused");
    let left: Vec<String> = snapshot_ids(&env).into_iter().map(|(id, _)| id).collect();
    assert!(!left.is_empty());
    for (id, want) in &states {
        if left.contains(id) {
            assert_restores_state(&env, id, &src, want);
        }
    }
    env.ok(&["check", "--read-data"]);
    // Collect everything now that nothing runs, and check again.
    env.ok(&["prune", "--grace", "0"]);
    env.ok(&["check", "--read-data"]);
    for (id, want) in &states {
        if left.contains(id) {
            assert_restores_state(&env, id, &src, want);
        }
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// Starts a backup of `src` and stops it (SIGSTOP) once it writes its
/// first new pack, after it deduplicated against what was stored.
fn frozen_backup(env: &Env, src: &Path) -> std::process::Child {
    let tmp = env.repo.join("tmp");
    let mut c = env.cmd();
    c.arg("--repo")
        .arg(&env.repo)
        .args(["backup", "--json", "--pack-size", "1MiB", s(src)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the backup finished ({st}) before it wrote a pack");
        }
        let staging = fs::read_dir(&tmp)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("pack-"))
            })
            .unwrap_or(false);
        if staging {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "backup wrote no pack"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(child.id(), rustix::process::Signal::STOP);
    child
}

fn finish(child: std::process::Child) -> Run {
    signal(child.id(), rustix::process::Signal::CONT);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cmdline: "frozen backup".into(),
    }
}

/// The race that broke peers: a backup deduplicates against data whose
/// only snapshot is then forgotten and pruned while the backup is frozen.
/// Frozen past the grace period, its commit is refused; frozen for less,
/// it commits and the next prune keeps what it needs.
#[test]
fn backup_frozen_across_prune_never_commits_holes() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    write(&src.join("a"), &pseudo(3 << 20, 1));
    let s0 = backup(&env, &[s(&src)]);
    // Big enough that the backup is still running when it is frozen.
    write(&src.join("z"), &pseudo(48 << 20, 2));

    // 1. Frozen past the grace period.
    env.ok(&["forget", &s0[..8]]);
    let child = frozen_backup(&env, &src);
    let out = env.ok(&["prune", "--grace", "2s"]);
    assert!(out.contains("condemned"), "{out}");
    std::thread::sleep(Duration::from_millis(2200));
    let out = env.ok(&["prune", "--grace", "2s"]);
    assert!(out.contains("deleted"), "{out}");
    let r = finish(child).expect(2);
    assert!(
        r.stderr.contains("grace period") || r.stderr.contains("is gone"),
        "{}",
        r.stderr
    );
    assert_eq!(
        snapshot_count(&env),
        0,
        "a snapshot with holes was committed"
    );
    env.ok(&["check", "--read-data"]);
    // The rerun reads what it needs again and restores.
    let id = backup(&env, &[s(&src)]);
    let dest = env.path("dest");
    env.ok(&["restore", &id[..16], s(&dest)]);
    assert!(compare_trees(&src, &restored(&dest, &src), true).is_empty());
    fs::remove_dir_all(&dest).unwrap();

    // 2. Frozen for less than the grace period: it commits, and the packs
    //    condemned meanwhile are rescued because its snapshot needs them.
    env.ok(&["forget", &id[..8]]);
    // New data, so that the backup writes a pack while it runs.
    write(&src.join("z"), &pseudo(48 << 20, 3));
    let child = frozen_backup(&env, &src);
    let out = env.ok(&["prune", "--grace", "1h"]);
    assert!(out.contains("condemned"), "{out}");
    let r = finish(child).expect(0);
    let id = json(&r.stdout)["snapshot"].as_str().unwrap().to_string();
    let out = env.ok(&["prune", "--grace", "0"]);
    assert!(out.contains("kept because a snapshot needs them"), "{out}");
    env.ok(&["check", "--read-data"]);
    env.ok(&["restore", &id[..16], s(&dest)]);
    assert!(compare_trees(&src, &restored(&dest, &src), true).is_empty());
}

/// A prune refuses while another holds the lease, naming the holder and
/// the expiry; an expired lease is taken over, and released afterwards.
#[test]
fn prune_lease_refuses_then_takes_over_when_expired() {
    use cairn_format::maint::Lease;
    let env = Env::new();
    env.ok(&["init"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let locks = env.repo.join("locks");
    let held = Lease {
        purpose: "prune".into(),
        generation: 7,
        holder: "ops@backup-box pid 999".into(),
        taken_ns: now,
        expires_ns: now + 600_000_000_000,
        host: "backup-box".into(),
        pid: 999,
    };
    fs::write(locks.join(held.name()), held.encode()).unwrap();
    let r = env.run(&["prune"]).expect(2);
    assert!(
        r.stderr.contains("ops@backup-box pid 999") && r.stderr.contains("expires in"),
        "{}",
        r.stderr
    );
    fs::remove_file(locks.join(held.name())).unwrap();
    let expired = Lease {
        expires_ns: now - 1,
        ..held
    };
    fs::write(locks.join(expired.name()), expired.encode()).unwrap();
    env.ok(&["prune"]);
    let left: Vec<PathBuf> = files_below(&locks).into_iter().collect();
    assert!(left.is_empty(), "leases left behind: {left:?}");
}

/// The structural check needs no key, says the same with and without
/// one, finds bit rot and a lost index file, and names the snapshots
/// that need what is damaged. Slices of `--read-data-subset` cover every
/// pack exactly once.
#[test]
fn check_without_key_same_as_owner_and_finds_damage() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    for i in 0..5u64 {
        write(&src.join(format!("f{i}")), &pseudo(400 << 10, i));
    }
    let first = backup(&env, &[s(&src)]);
    write(&src.join("g"), &pseudo(700 << 10, 9));
    let second = backup(&env, &[s(&src)]);

    let owner = json(&env.ok(&["check", "--json"]));
    let r = keyless(&env, &env.repo, &["check", "--json"]).expect(0);
    assert_eq!(json(&r.stdout), owner, "keyless and owner checks differ");
    assert!(owner["packs_hashed"].as_u64().unwrap() >= 3, "{owner:#}");
    assert!(owner["trees"].as_u64().unwrap() >= 2, "{owner:#}");

    // Every pack read exactly once over three slices.
    let packs = owner["packs"].as_u64().unwrap();
    let mut read = 0;
    for k in 1..=3 {
        let v = json(&env.ok(&["check", "--read-data-subset", &format!("{k}/3"), "--json"]));
        read += v["packs_read"].as_u64().unwrap();
    }
    assert_eq!(read, packs);
    let r = env.run(&["check", "--read-data-subset", "4/3"]).expect(2);
    assert!(r.stderr.contains("between 1/3 and 3/3"), "{}", r.stderr);

    // Bit rot in the pack holding the newest file: found without a key.
    let g_pack = {
        // The newest pack was written by the second backup: only its
        // snapshot needs it.
        let mut newest: Vec<(std::time::SystemTime, String)> = objects(&env.repo, "data")
            .iter()
            .map(|n| {
                let p = env.repo.join("data").join(&n[..2]).join(n);
                (fs::metadata(&p).unwrap().modified().unwrap(), n.clone())
            })
            .collect();
        newest.sort();
        newest.last().unwrap().1.clone()
    };
    let p = env.repo.join("data").join(&g_pack[..2]).join(&g_pack);
    let mut b = fs::read(&p).unwrap();
    b[200] ^= 0x40;
    fs::write(&p, &b).unwrap();
    let r = keyless(&env, &env.repo, &["check"]).expect(3);
    assert!(r.stdout.contains(&format!("pack {g_pack}")), "{}", r.stdout);
    assert!(r.stdout.contains("bit rot"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("snapshot {}", &second[..8])),
        "{}",
        r.stdout
    );
    let owner = env.run(&["check", "--json"]).expect(3);
    let r = keyless(&env, &env.repo, &["check", "--json"]).expect(3);
    assert_eq!(json(&r.stdout), json(&owner.stdout));
    b[200] ^= 0x40;
    fs::write(&p, &b).unwrap();

    // A lost index file: references no longer resolve.
    let idx = objects(&env.repo, "index");
    let kept = env.path("kept-index");
    fs::create_dir_all(&kept).unwrap();
    for n in &idx {
        fs::rename(env.repo.join("index").join(n), kept.join(n)).unwrap();
    }
    let r = keyless(&env, &env.repo, &["check"]).expect(3);
    assert!(r.stdout.contains("in no index"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&first[..8]) && r.stdout.contains(&second[..8]),
        "{}",
        r.stdout
    );
    // ... which `repair index` rebuilds from the pack trailers, keyless.
    let out = keyless(&env, &env.repo, &["repair", "index"])
        .expect(0)
        .stdout;
    assert!(out.contains("indexed"), "{out}");
    keyless(&env, &env.repo, &["check"]).expect(0);
    env.ok(&["check", "--read-data"]);
    let dest = env.path("dest");
    env.ok(&["restore", &second[..16], s(&dest)]);
    assert!(compare_trees(&src, &restored(&dest, &src), true).is_empty());
}

/// `repair snapshots` after bit rot: new snapshots leave out exactly the
/// damaged file and restore everything else; the originals stay until
/// forgotten, and once they are, a prune leaves a repository that checks
/// clean.
#[test]
fn repair_snapshots_leaves_out_damaged_files() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    write(&src.join("big"), &pseudo(3 << 20, 1));
    let s1 = backup(&env, &[s(&src)]);
    let data_packs: Vec<String> = objects(&env.repo, "data");
    write(&src.join("sub/small"), &pseudo(20 << 10, 2));
    write(&src.join("other"), &pseudo(50 << 10, 3));
    let s2 = backup(&env, &[s(&src)]);

    // Damage a data pack of the first backup: it holds only chunks of big.
    let v = json(&env.ok(&["check", "--json"]));
    assert!(v["errors"].as_array().unwrap().is_empty());
    let victim = data_packs
        .iter()
        .map(|n| env.repo.join("data").join(&n[..2]).join(n))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = fs::read(&victim).unwrap();
    b[300] ^= 1;
    fs::write(&victim, &b).unwrap();
    env.run(&["check", "--read-data"]).expect(3);

    let out = env.ok(&["repair", "snapshots", "--dry-run"]);
    assert!(out.contains("would be repaired"), "{out}");
    assert_eq!(snapshot_count(&env), 2);
    let v = json(&env.ok(&["repair", "snapshots", "--json"]));
    let repaired = v["repaired"].as_array().unwrap();
    assert_eq!(repaired.len(), 2, "{v:#}");
    let big = format!("{}/big", s(&src));
    for r in repaired {
        assert_eq!(r["removed"], serde_json::json!([big]), "{v:#}");
    }
    let new_of = |orig: &str| {
        repaired.iter().find(|r| r["original"] == orig).unwrap()["repaired"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (r1, r2) = (new_of(&s1), new_of(&s2));
    let list = json(&env.ok(&["snapshots", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 4, "originals stay");
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == r2.as_str())
        .unwrap();
    assert_eq!(entry["repaired_from"], s2.as_str());
    assert!(
        env.ok(&["snapshots"])
            .contains(&format!("repaired from {}", &s2[..8]))
    );

    // The repaired snapshot restores everything but the damaged file.
    let dest = env.path("dest");
    env.ok(&["restore", &r2[..16], s(&dest)]);
    let got = restored(&dest, &src);
    assert!(!got.join("big").exists());
    assert_eq!(
        fs::read(got.join("sub/small")).unwrap(),
        pseudo(20 << 10, 2)
    );
    assert_eq!(fs::read(got.join("other")).unwrap(), pseudo(50 << 10, 3));
    let _ = r1;

    // Forget the originals; the damaged pack is then garbage.
    env.ok(&["forget", &s1[..8], &s2[..8]]);
    env.ok(&["prune", "--grace", "0"]);
    assert!(!victim.exists(), "the damaged pack is still there");
    env.ok(&["check", "--read-data"]);
    env.ok(&["check"]);
}

/// SIGKILL prune at random instants, each run facing fresh garbage (a new
/// backup and a forget before it): after every kill the structure checks,
/// the next prune takes over the dead one's lease at once, and at the end
/// a prune that runs to completion leaves nothing pending, every kept
/// snapshot restores what its source held, and `check --read-data`
/// passes.
#[test]
fn crash_sigkill_prune_loop() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    for i in 0..6u64 {
        write(&src.join(format!("f{i}")), &pseudo(200 << 10, i));
    }
    let mut states: Vec<(String, State)> = Vec::new();
    let mut rng = 0x51ed_2701_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let kills = 50;
    let (mut killed, mut mid_run) = (0, 0);
    // How long a whole prune takes here: kills land uniformly inside it.
    let mut full = Duration::from_millis(100);
    let mut round = 0u64;
    while mid_run < kills {
        assert!(
            round < 150,
            "only {mid_run} of {killed} kills landed while prune worked"
        );
        round += 1;
        write(
            &src.join(format!("f{}", round % 6)),
            &pseudo(200 << 10, 100 + round),
        );
        write(&src.join("r"), &pseudo(300 << 10, 1000 + round));
        let want = state(&src);
        let id = backup(&env, &[s(&src)]);
        states.push((id, want));
        // Maintenance runs keyless, as on a backup box (and without the
        // passphrase's key derivation in every start-up).
        keyless(&env, &env.repo, &["forget", "--keep-last", "3"]).expect(0);
        let mut c = keyless_cmd(&env, &env.repo);
        c.args(["prune", "--grace", "0", "--max-unused", "5%"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t = Instant::now();
        let mut child = c.spawn().unwrap();
        if round.is_multiple_of(8) {
            // Every eighth run finishes: the rerun does the job.
            assert!(
                child.wait().unwrap().success(),
                "round {round}: prune failed"
            );
            full = t.elapsed();
        } else {
            // Past process start-up, anywhere in the work.
            let us = full.as_micros() as u64;
            let delay = Duration::from_micros(us / 5 + next(us * 4 / 5 + 1));
            std::thread::sleep(delay);
            let _ = child.kill();
            if !child.wait().unwrap().success() {
                killed += 1;
                // A lease left behind: it was killed after it started work.
                if !objects(&env.repo, "locks").is_empty() {
                    mid_run += 1;
                }
            }
        }
        let r = keyless(&env, &env.repo, &["check", "--structure-only"]);
        assert_eq!(r.code, 0, "round {round}:\n{}", r.stdout);
    }
    let finished = round - killed as u64;
    assert!(
        mid_run >= kills / 2,
        "only {mid_run} of {kills} kills landed while prune worked"
    );
    // Reruns finish the job. A prune killed after it published repacked
    // copies, before it condemned the originals, leaves blobs stored twice;
    // each rerun repacks what that makes look unused, so a few runs settle.
    let mut settled = false;
    for _ in 0..4 {
        let v = json(&env.ok(&["prune", "--grace", "0", "--max-unused", "5%", "--json"]));
        if v["condemned_packs"] == 0 && v["deleted_packs"] == 0 {
            settled = true;
            break;
        }
    }
    assert!(settled, "prune still finds work after four reruns");
    assert!(objects(&env.repo, "garbage").is_empty());
    assert!(objects(&env.repo, "locks").is_empty());
    env.ok(&["check", "--read-data"]);
    env.ok(&["check"]);
    let left: Vec<String> = snapshot_ids(&env).into_iter().map(|(id, _)| id).collect();
    assert_eq!(left.len(), 3);
    for (id, want) in &states {
        if left.contains(id) {
            assert_restores_state(&env, id, &src, want);
        }
    }
    eprintln!(
        "{killed} prunes killed ({mid_run} while working), {finished} finished; a whole prune took {full:?}"
    );
}

/// `snapshots` and `stats` show what each snapshot added and what only
/// it holds, and the latter is what forgetting it frees.
#[test]
fn snapshots_show_added_and_unique_bytes() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    write(&src.join("shared"), &pseudo(1 << 20, 1));
    write(&src.join("b"), &pseudo(600 << 10, 2));
    let s1 = backup(&env, &[s(&src)]);
    fs::remove_file(src.join("b")).unwrap();
    write(&src.join("c"), &pseudo(300 << 10, 3));
    let s2 = backup(&env, &[s(&src)]);
    let list = json(&env.ok(&["snapshots", "--json"]));
    let get = |id: &str, k: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()[k]
            .as_u64()
            .unwrap()
    };
    // Random data does not compress: what only s1 holds is b and its
    // trees, about 600 KiB; only s2, c and its trees.
    let (u1, u2) = (get(&s1, "unique_bytes"), get(&s2, "unique_bytes"));
    assert!((600 << 10..(600 << 10) + (16 << 10)).contains(&u1), "{u1}");
    assert!((300 << 10..(300 << 10) + (16 << 10)).contains(&u2), "{u2}");
    assert!(get(&s1, "added_bytes") > (1600 << 10), "{list:#}");
    assert!(get(&s2, "added_bytes") < (330 << 10), "{list:#}");
    let text = env.ok(&["snapshots"]);
    assert!(text.contains("only it"), "{text}");
    let stats = json(&env.ok(&["stats", "--json"]));
    let per = stats["per_snapshot"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    assert!(per.iter().any(|p| p["unique_bytes"] == u1));
    // Forgetting s1 and pruning frees what only it held.
    let before = dir_bytes(&env.repo.join("data"));
    env.ok(&["forget", &s1[..8]]);
    env.ok(&["prune", "--grace", "0", "--max-unused", "0%"]);
    let freed = before - dir_bytes(&env.repo.join("data"));
    assert!(
        freed + (8 << 10) >= u1 && freed <= u1 + (64 << 10),
        "freed {freed}, only-s1 {u1}"
    );
}

/// A source that floods the repository with tiny snapshots cannot push
/// another group's snapshots out of a policy, and a policy with
/// `--keep-within` keeps every snapshot of the window however many came.
#[test]
fn snapshot_flood_from_one_group_cannot_age_out_another() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    write(&src.join("f"), &pseudo(4 << 10, 1));
    let mut home = Vec::new();
    for i in 0..3u64 {
        write(&src.join("f"), &pseudo(4 << 10, 10 + i));
        home.push(backup(&env, &["--group", "nas", s(&src)]));
    }
    let tiny = env.path("tiny");
    fs::create_dir_all(&tiny).unwrap();
    for _ in 0..25 {
        backup(&env, &["--group", "flooder", s(&tiny)]);
    }
    env.ok(&["forget", "--keep-last", "3"]);
    let left = snapshot_ids(&env);
    for id in &home {
        assert!(
            left.iter().any(|(l, _)| l == id),
            "nas snapshot {id} removed"
        );
    }
    assert_eq!(left.iter().filter(|(_, g)| g == "flooder").count(), 3);
    // Within the window, nothing goes, even with a small keep-last.
    for _ in 0..5 {
        backup(&env, &["--group", "flooder", s(&tiny)]);
    }
    env.ok(&["forget", "--keep-last", "1", "--keep-within", "1h"]);
    assert_eq!(snapshot_count(&env), 3 + 8);
}

/// A repository reset to an older copy is noticed by the next backup,
/// which writes nothing and says why; forgetting the newest snapshot on
/// purpose is not taken for a rollback.
#[test]
fn rolled_back_repository_is_refused() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    write(&src.join("f"), &pseudo(10 << 10, 1));
    backup(&env, &[s(&src)]);
    let old = env.path("old-copy");
    copy_tree(&env.repo, &old);
    write(&src.join("f"), &pseudo(10 << 10, 2));
    backup(&env, &[s(&src)]);
    // The storage is reset to the copy taken before the second backup.
    fs::remove_dir_all(&env.repo).unwrap();
    copy_tree(&old, &env.repo);
    let before = objects(&env.repo, "data");
    write(&src.join("f"), &pseudo(10 << 10, 3));
    let r = env.run(&["backup", s(&src)]).expect(2);
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    assert_eq!(
        objects(&env.repo, "data"),
        before,
        "a refused backup wrote data"
    );
    assert_eq!(snapshot_count(&env), 1);

    // The record is state, not cache: emptying the cache keeps it.
    let state = env.home.join(".local/state/cairn");
    let dirs: Vec<_> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let records: Vec<_> = fs::read_dir(&dirs[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    let kept = fs::read(record).unwrap();
    fs::remove_dir_all(env.home.join(".cache/cairn")).unwrap();
    let r = env.run(&["backup", s(&src)]).expect(2);
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    // A damaged record refuses too, naming the file, never a silent reset.
    fs::write(record, b"garbled\n").unwrap();
    let r = env.run(&["backup", s(&src)]).expect(2);
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);
    assert!(r.stderr.contains(s(record)), "{}", r.stderr);
    // A record an earlier version kept in the cache is moved and honoured.
    fs::remove_file(record).unwrap();
    let legacy = env
        .home
        .join(".cache/cairn")
        .join(dirs[0].file_name().unwrap());
    fs::create_dir_all(&legacy).unwrap();
    fs::write(legacy.join(record.file_name().unwrap()), &kept).unwrap();
    let r = env.run(&["backup", s(&src)]).expect(2);
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    assert_eq!(fs::read(record).unwrap(), kept);
    assert_eq!(snapshot_count(&env), 1);

    env.ok(&["backup", "--accept-rollback", s(&src)]);
    // Forgetting the newest on purpose, here, clears the record.
    let newest = backup(&env, &[s(&src)]);
    env.ok(&["forget", &newest[..8]]);
    env.ok(&["backup", s(&src)]);
}
