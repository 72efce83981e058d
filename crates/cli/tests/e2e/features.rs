//! Behaviour a user relies on: incremental backups, excludes, listing,
//! snapshot selection, keys, the default repository, clear failures.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::*;

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field:?} in {v:#}"))
}

/// Runs `backup --json` and returns the summary.
fn backup_json(env: &Env, args: &[&str]) -> Value {
    let out = env.ok(&[&["backup", "--json"], args].concat());
    json(&out)
}

/// Paths listed by `ls --json SPEC`, relative to `base` (entries outside
/// `base` — its ancestors — are left out).
fn ls_below(env: &Env, spec: &str, base: &Path) -> BTreeSet<String> {
    let v = json(&env.ok(&["ls", "--json", spec]));
    let prefix = format!("{}/", s(base));
    v.as_array()
        .expect("ls --json gives an array")
        .iter()
        .filter_map(|e| e["path"].as_str()?.strip_prefix(&prefix).map(String::from))
        .collect()
}

/// (mtime, ctime) of every ancestor of `p`: a backup records them, so a
/// change there adds tree blobs even when `p` itself did not change.
fn ancestor_times(p: &Path) -> Vec<(i64, i64, i64, i64)> {
    p.ancestors()
        .skip(1)
        .map(|a| {
            let m = std::fs::symlink_metadata(a).unwrap();
            (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
        })
        .collect()
}

#[test]
fn features_incremental_backups() {
    let env = Env::new();
    // The source lives outside the busy temp directory: a backup records
    // its ancestors' times, and other tests keep changing /tmp's.
    let base = tempfile::Builder::new()
        .prefix("cairn-features-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let src = base.path().join("src");
    write(&src.join("a.txt"), b"alpha");
    write(&src.join("b.bin"), &pseudo(300_000, 1));
    write(&src.join("sub/c.txt"), b"gamma");
    write(&src.join("sub/d.bin"), &pseudo(1_500_000, 2));
    symlink("a.txt", src.join("link")).unwrap();
    // A file after a subdirectory: the walker asks the files cache about a
    // directory's files a run at a time, up to the next subdirectory.
    write(&src.join("z.txt"), b"zeta");
    let states = env.path("states");
    std::fs::create_dir(&states).unwrap();
    env.ok(&["init"]);

    // Other tests create directories beside `base` at any time: an
    // ancestor's time that moved since the first backup read it makes its
    // tree new in the second.
    let before = ancestor_times(&src);
    let s1 = backup_json(&env, &[s(&src)]);
    assert_eq!(file_counts(&s1), (5, 0, 0), "{s1:#}");
    assert!(u(&s1, "blobs_added") > 0 && u(&s1, "bytes_added") > 0);
    assert!(s1["warnings"].as_array().unwrap().is_empty(), "{s1:#}");
    copy_tree(&src, &states.join("1"));

    // Unchanged: nothing read, nothing added.
    let s2 = backup_json(&env, &[s(&src)]);
    let ancestors_moved = ancestor_times(&src) != before;
    assert_eq!(file_counts(&s2), (0, 0, 5), "{s2:#}");
    assert_eq!(u(&s2, "bytes_read"), 0, "{s2:#}");
    if ancestors_moved {
        eprintln!("an ancestor of the source changed during the test: only its trees may be new");
        assert!(
            u(&s2, "blobs_added") <= src.ancestors().count() as u64,
            "{s2:#}"
        );
    } else {
        assert_eq!(
            (u(&s2, "blobs_added"), u(&s2, "bytes_added")),
            (0, 0),
            "{s2:#}"
        );
    }
    assert!(s2["warnings"].as_array().unwrap().is_empty(), "{s2:#}");
    // The text summary says the same.
    let text = env.ok(&["backup", s(&src)]);
    assert!(text.contains("0 new, 0 changed, 5 unchanged"), "{text}");
    copy_tree(&src, &states.join("2"));

    // Two files changed (one before a subdirectory, one after), one added.
    let mut c = std::fs::read(src.join("sub/c.txt")).unwrap();
    c.extend_from_slice(b" and more");
    std::fs::write(src.join("sub/c.txt"), c).unwrap();
    std::fs::write(src.join("z.txt"), b"zeta!").unwrap();
    write(&src.join("e.txt"), b"epsilon");
    let s3 = backup_json(&env, &[s(&src)]);
    assert_eq!(file_counts(&s3), (1, 2, 3), "{s3:#}");
    // Only the three small files were read.
    assert_eq!(u(&s3, "bytes_read"), 14 + 5 + 7, "{s3:#}");
    copy_tree(&src, &states.join("3"));

    // Each snapshot restores its own state.
    for (i, snap) in [&s1, &s2, &s3].iter().enumerate() {
        let id = snap["snapshot"].as_str().expect("snapshot id");
        let dest = env.path(&format!("dest{}", i + 1));
        env.ok(&["restore", id, s(&dest)]);
        let diffs = compare_trees(
            &states.join((i + 1).to_string()),
            &restored(&dest, &src),
            is_root(),
        );
        assert!(diffs.is_empty(), "snapshot {} differs: {diffs:#?}", i + 1);
    }
    env.ok(&["check", "--read-data"]);
}

/// A large file's second half is cut by a helper thread: its chunks must be
/// exactly those of one pass, so a copy of its start, small enough to be
/// cut by the walker alone, deduplicates against it but for the last chunk.
#[test]
fn features_large_files_cut_in_two_halves_chunk_as_one_pass() {
    let env = Env::new();
    env.ok(&["init"]);
    let big = pseudo(40 << 20, 77);
    let src = env.path("big");
    write(&src.join("whole"), &big);
    let v1 = backup_json(&env, &[s(&src)]);
    assert_eq!(file_counts(&v1), (1, 0, 0), "{v1:#}");
    // 30 MiB: below the size at which a helper cuts, and 10 MiB into the
    // half the helper cut above.
    let prefix = env.path("prefix");
    write(&prefix.join("start"), &big[..30 << 20]);
    let v = backup_json(&env, &[s(&prefix)]);
    assert!(
        u(&v, "raw_bytes_added") <= (2 << 20) + (64 << 10),
        "the start of the file was cut differently: {v:#}"
    );
    for (snap, dir, name, want) in [
        (&v1, &src, "whole", &big[..]),
        (&v, &prefix, "start", &big[..30 << 20]),
    ] {
        let dest = env.path(&format!("dest-{name}"));
        env.ok(&["restore", snap["snapshot"].as_str().unwrap(), s(&dest)]);
        let got = std::fs::read(restored(&dest, dir).join(name)).unwrap();
        assert!(got == want, "{name} restored differently");
    }
}

/// A changed file is re-read along the chunks it had: where they are
/// unchanged they are taken whole, elsewhere it is cut as usual. The
/// chunks must be those of one pass over the new bytes: the same bytes
/// backed up from another path, with nothing to follow, add no chunk.
#[test]
fn features_changed_files_rechunked_along_old_chunks_match_one_pass() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    let old = pseudo(40 << 20, 91);
    write(&src.join("big"), &old);
    write(&src.join("small"), &old[..5 << 20]);
    // Rewritten whole: the guide is dropped after a few chunks and a
    // helper cuts the second half of what is left.
    write(&src.join("rewritten"), &pseudo(40 << 20, 93));
    backup_json(&env, &[s(&src)]);
    // A few bytes overwritten near the start, ten inserted in the middle,
    // 3 MiB appended; the small one grows by a few bytes (its old last
    // chunk ended at its old end).
    let mut new = old.clone();
    new[100_000..100_008].copy_from_slice(b"CHANGED!");
    new.splice(20 << 20..20 << 20, *b"0123456789");
    new.extend_from_slice(&pseudo(3 << 20, 92));
    let mut small = old[..5 << 20].to_vec();
    small.extend_from_slice(b"tail");
    let rewritten = pseudo(40 << 20, 94);
    write(&src.join("big"), &new);
    write(&src.join("small"), &small);
    write(&src.join("rewritten"), &rewritten);
    let v = backup_json(&env, &[s(&src)]);
    assert_eq!(file_counts(&v), (0, 3, 0), "{v:#}");
    assert!(
        u(&v, "raw_bytes_added") < (12 << 20) + (40 << 20) + (1 << 20),
        "the unchanged chunks were not found again: {v:#}"
    );
    let copy = env.path("copy");
    write(&copy.join("big"), &new);
    write(&copy.join("small"), &small);
    write(&copy.join("rewritten"), &rewritten);
    // Only its trees are new (a chunk is at least 128 KiB).
    let c = backup_json(&env, &[s(&copy)]);
    assert!(
        u(&c, "raw_bytes_added") < 64 << 10,
        "the guided chunks differ from one pass: {c:#}"
    );
    let dest = env.path("dest");
    env.ok(&["restore", v["snapshot"].as_str().unwrap(), s(&dest)]);
    let got = restored(&dest, &src);
    assert!(
        std::fs::read(got.join("big")).unwrap() == new,
        "big restored differently"
    );
    assert!(
        std::fs::read(got.join("small")).unwrap() == small,
        "small restored differently"
    );
    assert!(
        std::fs::read(got.join("rewritten")).unwrap() == rewritten,
        "rewritten restored differently"
    );
}

const CACHEDIR_TAG: &[u8] =
    b"Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n";

#[test]
fn features_excludes_tags_and_groups() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"keep");
    write(&src.join("drop.tmp"), b"tmp");
    write(&src.join("sub/deep.tmp"), b"tmp");
    write(&src.join("sub/keep.txt"), b"keep");
    write(&src.join("anchored/x"), b"anchored, excluded");
    write(&src.join("sub/anchored/x"), b"same name elsewhere, kept");
    write(&src.join("fromfile/y"), b"excluded by the file");
    write(&src.join("sub/fromfile"), b"a file, not a directory: kept");
    write(&src.join("cache/CACHEDIR.TAG"), CACHEDIR_TAG);
    write(&src.join("cache/junk"), b"cached");
    write(&src.join("cache/sub/more"), b"cached");
    write(
        &src.join("fakecache/CACHEDIR.TAG"),
        b"Signature: 00000000000000000000000000000000\n",
    );
    write(&src.join("fakecache/kept"), b"not a real cache");
    write(&src.join("web/node_modules/pkg/index.js"), b"dependency");
    write(
        &src.join("node_modules"),
        b"a file named like the pattern: kept",
    );
    write(&src.join("logs/debug.log"), b"excluded");
    write(&src.join("logs/keep.log"), b"re-included by !");
    let exfile = env.path("excludes");
    std::fs::write(&exfile, "# a comment\n\nfromfile/\n").unwrap();
    env.ok(&["init"]);
    let out = env.ok(&[
        "backup",
        s(&src),
        "--exclude",
        "*.tmp",
        "--exclude",
        &format!("{}/anchored", s(&src)),
        "--exclude-file",
        s(&exfile),
        "--exclude-caches",
        "--exclude",
        "node_modules/",
        "--exclude",
        "*.log",
        "--exclude",
        "!keep.log",
        "--tag",
        "daily",
        "--tag",
        "test",
        "--group",
        "laptop:/home",
    ]);
    assert!(out.contains("group laptop:/home"), "{out}");
    assert_eq!(
        ls_below(&env, "latest", &src),
        set(&[
            "cache",
            "cache/CACHEDIR.TAG",
            "fakecache",
            "fakecache/CACHEDIR.TAG",
            "fakecache/kept",
            "keep.txt",
            "logs",
            "logs/keep.log",
            "node_modules",
            "sub",
            "sub/anchored",
            "sub/anchored/x",
            "sub/fromfile",
            "sub/keep.txt",
            "web",
        ])
    );

    // Tags and group are in the snapshot list.
    let snaps = json(&env.ok(&["snapshots", "--json"]));
    let list = snaps.as_array().unwrap();
    assert_eq!(list.len(), 1, "{snaps:#}");
    assert_eq!(list[0]["group"], "laptop:/home");
    assert_eq!(list[0]["tags"], serde_json::json!(["daily", "test"]));

    // Without options, everything is there; the default group names the
    // host and the path.
    let plain = backup_json(&env, &[s(&src)]);
    let group = plain["group"].as_str().unwrap();
    assert!(group.ends_with(&format!(":{}", s(&src))), "{group}");
    let all = ls_below(&env, "latest", &src);
    for p in [
        "drop.tmp",
        "anchored/x",
        "fromfile/y",
        "cache/junk",
        "cache/sub/more",
    ] {
        assert!(all.contains(p), "{p} missing from {all:?}");
    }
}

/// Unmounts on drop, so a failing test does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn features_one_file_system() {
    if !is_root() {
        cannot_run("--one-file-system: mounting a tmpfs needs root");
    }
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("here"), b"on the source filesystem");
    let mnt = src.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", s(&mnt)])
        .status();
    if !st.is_ok_and(|s| s.success()) {
        cannot_run("--one-file-system: mount -t tmpfs failed");
    }
    let _guard = Mount(mnt.clone());
    write(&mnt.join("elsewhere"), b"on the tmpfs");
    env.ok(&["init"]);
    env.ok(&["backup", "--one-file-system", s(&src)]);
    // The mount point stays (empty), its contents do not.
    assert_eq!(ls_below(&env, "latest", &src), set(&["here", "mnt"]));
    env.ok(&["backup", s(&src)]);
    assert_eq!(
        ls_below(&env, "latest", &src),
        set(&["here", "mnt", "mnt/elsewhere"])
    );
}

#[test]
fn features_dry_run_writes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), &pseudo(200_000, 3));
    env.ok(&["init"]);
    let before = files_below(&env.repo);
    let r = env
        .run_limited(&["backup", "--dry-run", s(&src)], 30)
        .expect(0);
    assert!(r.stdout.contains("dry run"), "{}", r.stdout);
    let r = env
        .run_limited(&["backup", "--json", "--dry-run", s(&src)], 30)
        .expect(0);
    let v = json(&r.stdout);
    assert!(v["snapshot"].is_null(), "{v:#}");
    assert_eq!(u(&v, "new_files"), 1);
    assert_eq!(
        files_below(&env.repo),
        before,
        "a dry run wrote to the repository"
    );
    let snaps = json(&env.ok(&["snapshots", "--json"]));
    assert_eq!(snaps.as_array().unwrap().len(), 0);
    // A dry run does not prime the files cache either: the real backup
    // still reads the file.
    let real = backup_json(&env, &[s(&src)]);
    assert_eq!(u(&real, "new_files"), 1, "{real:#}");
    assert!(u(&real, "bytes_added") > 0);
}

#[test]
fn features_ls_diff_snapshots_stats() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha");
    write(&src.join("b.txt"), b"beta");
    write(&src.join("gone.txt"), b"soon removed");
    write(&src.join("sub/c.txt"), b"gamma");
    symlink("a.txt", src.join("link")).unwrap();
    env.ok(&["init"]);
    let s1 = backup_json(&env, &[s(&src)]);
    let id1 = s1["snapshot"].as_str().unwrap().to_string();

    // ls: every path, one per line, absolute.
    let out = env.ok(&["ls", "latest"]);
    let lines: BTreeSet<&str> = out.lines().collect();
    for p in ["a.txt", "b.txt", "gone.txt", "sub", "sub/c.txt", "link"] {
        let full = format!("{}/{p}", s(&src));
        assert!(lines.contains(full.as_str()), "{full} not in:\n{out}");
    }
    assert!(lines.contains(s(&src)), "{out}");

    // ls SNAP:PATH lists below that path only.
    let out = env.ok(&["ls", &format!("latest:{}/sub", s(&src))]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![format!("{}/sub/c.txt", s(&src))],
        "{out}"
    );

    // ls SNAP:PATH of a file lists that file; a missing path fails.
    let out = env.ok(&["ls", &format!("latest:{}/a.txt", s(&src))]);
    assert_eq!(out.trim_end(), format!("{}/a.txt", s(&src)));
    let r = env
        .run(&["ls", &format!("latest:{}/nope", s(&src))])
        .expect(2);
    assert!(r.stderr.contains("not in the snapshot"), "{}", r.stderr);

    // ls -l: type and mode, owner, size, time, symlink target.
    let out = env.ok(&["ls", "-l", "latest"]);
    let line = |suffix: &str| {
        let path = format!("{}/{suffix}", s(&src));
        out.lines()
            .find(|l| l.ends_with(&path) || l.contains(&format!("{path} -> ")))
            .unwrap_or_else(|| panic!("{suffix} not in:\n{out}"))
            .to_string()
    };
    assert!(line("a.txt").starts_with("-rw-"), "{out}");
    assert!(line("sub/c.txt").contains(" 5 B "), "{out}");
    assert!(line("sub").starts_with("drwx"), "{out}");
    assert!(line("link").starts_with('l'), "{out}");
    assert!(line("link").ends_with(" -> a.txt"), "{out}");
    if is_root() {
        assert!(line("a.txt").contains(" root "), "{out}");
    }

    // ls --json: one document with typed entries.
    let v = json(&env.ok(&["ls", "--json", "latest"]));
    let find = |p: &str| {
        let full = format!("{}/{p}", s(&src));
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == full.as_str())
            .unwrap_or_else(|| panic!("{full} not in {v:#}"))
            .clone()
    };
    assert_eq!(find("a.txt")["type"], "file");
    assert_eq!(find("a.txt")["size"], 5);
    assert_eq!(find("sub")["type"], "dir");
    assert_eq!(find("link")["type"], "symlink");
    let m = std::fs::symlink_metadata(src.join("a.txt")).unwrap();
    assert_eq!(
        find("a.txt")["mtime_ns"].as_i64().unwrap(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec()
    );

    // diff: + added, - removed, M modified; nothing else.
    std::fs::write(src.join("b.txt"), b"beta, longer now").unwrap();
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    write(&src.join("new/d.txt"), b"delta");
    std::fs::set_permissions(src.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(src.join("link")).unwrap();
    write(&src.join("link"), b"now a file");
    let s2 = backup_json(&env, &[s(&src)]);
    let id2 = s2["snapshot"].as_str().unwrap().to_string();
    let out = env.ok(&["diff", &id1, &id2]);
    let changes: BTreeSet<String> = out
        .lines()
        .filter(|l| l.len() > 2 && "+-MTU".contains(&l[..1]) && &l[1..2] == " ")
        .map(|l| l.split("  (").next().unwrap().to_string())
        .collect();
    let p = |x: &str| format!("{}/{x}", s(&src));
    let expected: BTreeSet<String> = [
        format!("M {}", p("b.txt")),
        format!("- {}", p("gone.txt")),
        format!("+ {}", p("new")),
        format!("+ {}", p("new/d.txt")),
        format!("U {}", p("a.txt")),
        format!("T {}", p("link")),
    ]
    .into();
    assert_eq!(changes, expected, "{out}");
    assert!(out.contains("(4 B -> 16 B)"), "{out}");
    assert!(out.contains("2 added"), "{out}");
    assert!(out.contains("1 removed"), "{out}");
    assert!(out.contains("3 changed"), "{out}");
    // The reverse diff swaps + and -.
    let back = env.ok(&["diff", &id2, &id1]);
    assert!(back.contains(&format!("+ {}", p("gone.txt"))), "{back}");
    assert!(back.contains(&format!("- {}", p("new/d.txt"))), "{back}");
    let dj = json(&env.ok(&["diff", "--json", &id1, &id2]));
    assert_eq!(dj["changes"].as_array().unwrap().len(), 6, "{dj:#}");
    // A snapshot compared with itself shows nothing.
    let same = env.ok(&["diff", &id2, "latest"]);
    assert!(
        same.contains("0 added (0 B), 0 removed (0 B), 0 changed"),
        "{same}"
    );

    // snapshots --json: valid JSON with id, time, group, tags.
    let snaps = json(&env.ok(&["snapshots", "--json"]));
    let list = snaps.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let ids: BTreeSet<&str> = list.iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id1.as_str(), id2.as_str()].into());
    for x in list {
        let t = x["time"].as_str().unwrap();
        assert!(
            t.len() == 20 && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
        assert!(x["group"].as_str().unwrap().ends_with(s(&src)), "{x:#}");
        assert!(x["tags"].as_array().unwrap().is_empty());
    }
    let table = env.ok(&["snapshots"]);
    assert!(
        table.contains(&id1[..8]) && table.contains(&id2[..8]),
        "{table}"
    );
    assert!(table.contains("2 snapshots"), "{table}");

    // stats --json.
    let st = json(&env.ok(&["stats", "--json"]));
    assert!(u(&st, "stored_bytes") > 0, "{st:#}");
    assert_eq!(u(&st, "snapshots"), 2, "{st:#}");
}

#[test]
fn features_snapshot_selection() {
    let env = Env::new();
    let one = env.path("one");
    let two = env.path("two");
    write(&one.join("f"), b"first");
    write(&two.join("g"), b"other group");
    env.ok(&["init"]);
    let a = backup_json(&env, &["--group", "g1", s(&one)]);
    let b = backup_json(&env, &["--group", "g2", s(&two)]);
    write(&one.join("f2"), b"second");
    let c = backup_json(&env, &["--group", "g1", s(&one)]);
    let id = |v: &Value| v["snapshot"].as_str().unwrap().to_string();
    let (ia, ib, ic) = (id(&a), id(&b), id(&c));

    // latest is the newest snapshot of all.
    let latest = ls_below(&env, "latest", &one);
    assert_eq!(latest, set(&["f", "f2"]));
    // An 8-digit prefix picks that snapshot.
    assert_eq!(ls_below(&env, &ia[..8], &one), set(&["f"]));
    let out = env.ok(&["ls", &ib[..8].to_uppercase()]);
    assert!(out.contains(&format!("{}/g", s(&two))), "{out}");
    // --group picks the latest within the group.
    let out = env.ok(&["ls", "latest", "--group", "g2"]);
    assert!(out.contains(&format!("{}/g", s(&two))), "{out}");
    assert!(!out.contains(s(&one)), "{out}");
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest), "--group", "g1"]);
    assert!(restored(&dest, &one).join("f2").exists());
    assert!(!restored(&dest, &two).exists());
    let diff = env.ok(&["diff", &ia[..8], &ic[..8]]);
    assert!(diff.contains(&format!("+ {}/f2", s(&one))), "{diff}");
    let snaps = json(&env.ok(&["snapshots", "--json", "--group", "g1"]));
    let ids: Vec<_> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&ia) && ids.contains(&ic));

    // An unknown prefix fails clearly.
    let unknown = (0..=255u8)
        .map(|b| format!("{b:02x}{b:02x}{b:02x}{b:02x}"))
        .find(|p| ![&ia, &ib, &ic].iter().any(|i| i.starts_with(p.as_str())))
        .unwrap();
    let r = env.run(&["ls", &unknown]).expect(2);
    assert!(r.stderr.contains("no snapshot matches"), "{}", r.stderr);
    assert!(r.stderr.contains(&unknown), "{}", r.stderr);
    let r = env.run(&["restore", &unknown, s(&env.path("x"))]).expect(2);
    assert!(r.stderr.contains("no snapshot matches"), "{}", r.stderr);
    assert!(!env.path("x").join("tmp").exists());
    // Not an ID at all.
    let r = env.run(&["ls", "yesterday"]).expect(2);
    assert!(r.stderr.contains("latest"), "{}", r.stderr);
    // A prefix of another group's snapshot is not found within a group.
    let r = env.run(&["ls", &ib[..8], "--group", "g1"]).expect(2);
    assert!(r.stderr.contains("no snapshot matches"), "{}", r.stderr);
    // latest in an unknown group.
    let r = env.run(&["ls", "latest", "--group", "nope"]).expect(2);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
}

/// A command without the passphrase in its environment.
fn no_pass(env: &Env, args: &[&str]) -> Run {
    let mut c = env.cmd();
    c.env_remove("CAIRN_PASSWORD")
        .arg("--repo")
        .arg(&env.repo)
        .args(args);
    run(c)
}

/// A command with another passphrase.
fn with_pass(env: &Env, pass: &str, args: &[&str]) -> Run {
    let mut c = env.cmd();
    c.env("CAIRN_PASSWORD", pass)
        .arg("--repo")
        .arg(&env.repo)
        .args(args);
    run(c)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn features_put_only_key() {
    use cairn_format::keyfile::{KeyFile, Role, Secrets};

    let env = Env::new();
    let src = env.path("src");
    let big = pseudo(2 << 20, 11);
    write(&src.join("big"), &big);
    write(&src.join("small"), b"small");
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);

    let key = env.path("laptop.key");
    let out = env.ok(&[
        "key",
        "add",
        "--role",
        "put-only",
        "--no-password",
        "-o",
        s(&key),
    ]);
    assert!(out.contains("put-only"), "{out}");
    assert_eq!(mode(&key), 0o600);

    // The key file holds no owner secret.
    let bytes = std::fs::read(&key).unwrap();
    let kf = KeyFile::decode(&bytes).unwrap();
    assert_eq!(kf.role, Role::PutOnly);
    assert!(kf.kdf.is_none(), "no passphrase: the secrets are plaintext");
    let secrets = Secrets::decode(&kf.secret).unwrap();
    assert!(
        secrets.owner_secret.is_none(),
        "put-only key holds the owner secret"
    );
    // Compare against the owner's real secret: its bytes appear nowhere.
    let owner_key = env.path("owner.key");
    env.ok(&["key", "export", "-o", s(&owner_key)]);
    let okf = KeyFile::decode(&std::fs::read(&owner_key).unwrap()).unwrap();
    assert_eq!(okf.role, Role::Owner);
    let osec = Secrets::decode(&okf.secret).unwrap();
    let owner_secret = osec.owner_secret.expect("owner key has the owner secret");
    assert!(
        !bytes.windows(32).any(|w| w == owner_secret),
        "the owner secret is inside the put-only key file"
    );
    assert_eq!(secrets.dedup, osec.dedup, "put-only needs the dedup key");
    assert_eq!(kf.owner_public, okf.owner_public);

    // A source with the put-only key and no passphrase can back up ...
    let put = |args: &[&str]| {
        let mut c = env.cmd();
        c.env_remove("CAIRN_PASSWORD")
            .arg("--repo")
            .arg(&env.repo)
            .arg("--key-file")
            .arg(&key)
            .args(args);
        run(c)
    };
    let src2 = env.path("src2");
    write(&src2.join("copy-of-big"), &big);
    write(&src2.join("fresh"), b"only the source has this");
    let r = put(&["backup", "--json", s(&src2)]).expect(0);
    let v = json(&r.stdout);
    assert_eq!(u(&v, "new_files"), 2, "{v:#}");
    // ... and deduplicates: the 2 MiB already stored adds no chunk, only
    // the new small file and the trees.
    assert!(
        u(&v, "raw_bytes_added") < 64 << 10,
        "put-only backup re-stored known data: {v:#}"
    );
    let put_snap = v["snapshot"].as_str().unwrap().to_string();
    // A second put-only backup of the same tree adds nothing.
    let v2 = json(&put(&["backup", "--json", s(&src2)]).expect(0).stdout);
    assert_eq!(u(&v2, "unchanged_files"), 2, "{v2:#}");
    assert_eq!(u(&v2, "raw_bytes_added"), 0, "{v2:#}");

    // ... but reads nothing.
    let dest = env.path("dest");
    let attempts: Vec<Vec<&str>> = vec![
        vec!["restore", "latest", s(&dest)],
        vec!["ls", "latest"],
        vec!["diff", &put_snap, "latest"],
        vec!["check"],
        vec!["check", "--read-data"],
        vec![
            "key",
            "add",
            "--role",
            "put-only",
            "--no-password",
            "-o",
            "x.key",
        ],
    ];
    for args in attempts {
        let r = put(&args).expect(2);
        assert!(
            r.stderr.contains("put-only"),
            "{args:?}: no mention of put-only:\n{}",
            r.stderr
        );
    }
    assert!(!dest.join("tmp").exists(), "put-only restore wrote files");
    assert!(!env.path("x.key").exists());

    // The owner sees and restores the source's snapshot.
    let dest2 = env.path("dest2");
    env.ok(&["restore", &put_snap, s(&dest2)]);
    let diffs = compare_trees(&src2, &restored(&dest2, &src2), is_root());
    assert!(diffs.is_empty(), "{diffs:#?}");
    env.ok(&["check", "--read-data"]);
}

#[test]
fn features_owner_key_management() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"data");
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);

    // Add a second owner key under a new passphrase.
    let mut c = env.cmd();
    c.env("CAIRN_NEW_PASSWORD", "second pass")
        .arg("--repo")
        .arg(&env.repo)
        .args(["key", "add"]);
    let r = run(c).expect(0);
    assert!(r.stdout.contains("added owner key"), "{}", r.stdout);
    let keys = json(&env.ok(&["key", "list", "--json"]));
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k["role"] == "owner"));
    let current: Vec<_> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let first_id = current[0]["id"].as_str().unwrap().to_string();
    let text = env.ok(&["key", "list"]);
    assert_eq!(
        text.lines().filter(|l| l.contains("owner")).count(),
        2,
        "{text}"
    );

    // The new passphrase opens the repository.
    let out = with_pass(&env, "second pass", &["ls", "latest"])
        .expect(0)
        .stdout;
    assert!(out.contains(&format!("{}/f", s(&src))), "{out}");

    // passwd changes it: the old one stops working.
    let mut c = env.cmd();
    c.env("CAIRN_PASSWORD", "second pass")
        .env("CAIRN_NEW_PASSWORD", "third pass")
        .arg("--repo")
        .arg(&env.repo)
        .args(["key", "passwd"]);
    let r = run(c).expect(0);
    assert!(r.stdout.contains("passphrase changed"), "{}", r.stdout);
    let r = with_pass(&env, "second pass", &["snapshots"]).expect(2);
    assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
    with_pass(&env, "third pass", &["snapshots"]).expect(0);
    env.ok(&["snapshots"]);
    let keys = json(&env.ok(&["key", "list", "--json"]));
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys:#}");

    // The key in use cannot be removed; another one can.
    let r = env.run(&["key", "remove", &first_id[..8]]).expect(2);
    assert!(r.stderr.contains("in use"), "{}", r.stderr);
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = env.run(&["key", "remove", &other[..8]]).expect(0);
    assert!(r.stdout.contains("removed key"), "{}", r.stdout);
    let r = with_pass(&env, "third pass", &["snapshots"]).expect(2);
    assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
    env.ok(&["snapshots"]);

    // export writes a 0600 file that opens the repository on its own.
    let exported = env.path("exported.key");
    let r = env.run(&["key", "export", "-o", s(&exported)]).expect(0);
    assert!(r.stdout.contains(s(&exported)), "{}", r.stdout);
    assert_eq!(mode(&exported), 0o600);
    let key_arg = s(&exported).to_string();
    let out = no_pass(&env, &["--key-file", &key_arg, "ls", "latest"])
        .expect(0)
        .stdout;
    assert!(out.contains(&format!("{}/f", s(&src))), "{out}");
    let dest = env.path("dest");
    no_pass(
        &env,
        &["--key-file", &key_arg, "restore", "latest", s(&dest)],
    )
    .expect(0);
    assert_eq!(
        std::fs::read(restored(&dest, &src).join("f")).unwrap(),
        b"data"
    );
    // export refuses to overwrite.
    let r = env.run(&["key", "export", "-o", s(&exported)]).expect(2);
    assert!(!r.stderr.is_empty());
    // Opened from the exported file, the one owner key stored in the
    // repository is refused removal unless forced: the file would be the
    // only way in.
    let r = no_pass(
        &env,
        &["--key-file", &key_arg, "key", "remove", &first_id[..8]],
    )
    .expect(2);
    assert!(r.stderr.contains("last owner key stored"), "{}", r.stderr);
    env.ok(&["snapshots"]);
    no_pass(
        &env,
        &[
            "--key-file",
            &key_arg,
            "key",
            "remove",
            "--force",
            &first_id[..8],
        ],
    )
    .expect(0);
    no_pass(&env, &["--key-file", &key_arg, "snapshots"]).expect(0);

    // Without any key the error says how to give one.
    let r = no_pass(&env, &["snapshots"]).expect(2);
    assert!(r.stderr.contains("CAIRN_PASSWORD"), "{}", r.stderr);
}

#[test]
fn features_default_repository() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    write(&src.join("sub/b"), b"b");
    let bare = |args: &[&str]| {
        let mut c = env.cmd();
        c.env_remove("CAIRN_PASSWORD").args(args);
        run(c)
    };
    let repo = env.home.join(".local/share/cairn/repo");
    // Only backup creates the default repository; other commands say how.
    let r = bare(&["snapshots"]).expect(2);
    assert!(r.stderr.contains(s(&repo)), "{}", r.stderr);
    assert!(r.stderr.contains("cairn init"), "{}", r.stderr);
    assert!(!repo.exists());
    let r = bare(&["backup", s(&src)]).expect(0);
    assert!(
        repo.join("config").is_file(),
        "no repository at {}",
        repo.display()
    );
    let keydir = env.home.join(".config/cairn/keys");
    let keys: Vec<PathBuf> = std::fs::read_dir(&keydir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(mode(&keys[0]), 0o600);
    assert!(
        r.stderr.contains(s(&keys[0])),
        "stderr does not say where the key is:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("cairn key export"), "{}", r.stderr);
    assert!(r.stdout.contains("2 new"), "{}", r.stdout);

    // The second run uses the same repository, quietly.
    let r = bare(&["backup", s(&src)]).expect(0);
    assert!(
        r.stdout.contains("0 new, 0 changed, 2 unchanged"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stderr.contains("cairn key export"),
        "said twice:\n{}",
        r.stderr
    );
    let snaps = json(&bare(&["snapshots", "--json"]).expect(0).stdout);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let dest = env.path("dest");
    bare(&["restore", "latest", s(&dest)]).expect(0);
    assert!(compare_trees(&src, &restored(&dest, &src), is_root()).is_empty());
}

#[test]
fn features_bad_passphrase_and_missing_repository() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    for args in [&["snapshots"][..], &["ls", "latest"], &["backup", s(&src)]] {
        let r = with_pass(&env, "not the passphrase", args).expect(2);
        assert!(
            r.stderr.contains("wrong passphrase"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let dest = env.path("dest");
    let r = with_pass(&env, "not the passphrase", &["restore", "latest", s(&dest)]).expect(2);
    assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
    assert!(!dest.exists(), "a refused restore created its target");
    let snaps = json(&env.ok(&["snapshots", "--json"]));
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "a failed backup left a snapshot"
    );

    let missing = env.path("no/such/repo");
    for args in [&["snapshots"][..], &["backup", s(&src)], &["check"]] {
        let mut c = env.cmd();
        c.arg("--repo").arg(&missing).args(args);
        let r = run(c).expect(2);
        assert!(r.stderr.contains(s(&missing)), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("cairn init"), "{args:?}: {}", r.stderr);
    }
    assert!(
        !missing.exists(),
        "a command created the missing repository"
    );
}

#[test]
fn features_source_paths() {
    let env = Env::new();
    let base = env.path("base");
    write(&base.join("one/a"), b"a");
    write(&base.join("one/sub/b"), b"b");
    write(&base.join("two/deep/c"), b"c");
    write(&base.join("single-file"), b"just me");
    write(&base.join("not-included"), b"left out");
    env.ok(&["init"]);
    // Relative paths, a trailing slash, a nested duplicate and a file.
    let mut c = env.cmd();
    c.current_dir(&base).arg("--repo").arg(&env.repo).args([
        "backup",
        "--json",
        "one/",
        "two/deep",
        "one/sub",
        "single-file",
    ]);
    let v = json(&run(c).expect(0).stdout);
    assert_eq!(u(&v, "new_files"), 4, "{v:#}");
    let group = v["group"].as_str().unwrap();
    for p in ["one", "two/deep", "single-file"] {
        assert!(group.contains(s(&base.join(p))), "{group}");
    }
    assert_eq!(
        ls_below(&env, "latest", &base),
        set(&[
            "one",
            "one/a",
            "one/sub",
            "one/sub/b",
            "single-file",
            "two",
            "two/deep",
            "two/deep/c"
        ])
    );
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    let got = restored(&dest, &base);
    for p in ["one", "two/deep"] {
        let diffs = compare_trees(&base.join(p), &got.join(p), is_root());
        assert!(diffs.is_empty(), "{p}: {diffs:#?}");
    }
    assert_eq!(std::fs::read(got.join("single-file")).unwrap(), b"just me");
    assert!(!got.join("not-included").exists());
    // A source that does not exist fails and writes no snapshot.
    let r = env.run(&["backup", s(&base.join("missing"))]).expect(2);
    assert!(r.stderr.contains(s(&base.join("missing"))), "{}", r.stderr);
    assert_eq!(
        json(&env.ok(&["snapshots", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn features_backup_of_parent_directory_path() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("sub/f"), b"in sub");
    write(&src.join("top"), b"in src");
    env.ok(&["init"]);
    // `cairn backup ..` from src/sub means src.
    let mut c = env.cmd();
    c.current_dir(src.join("sub"))
        .arg("--repo")
        .arg(&env.repo)
        .args(["backup", "--json", ".."]);
    let v = json(&run(c).expect(0).stdout);
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    let diffs = compare_trees(&src, &restored(&dest, &src), is_root());
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert_eq!(
        ls_below(&env, "latest", &src),
        set(&["sub", "sub/f", "top"])
    );
    assert_eq!(
        v["group"].as_str().unwrap().split_once(':').unwrap().1,
        s(&src)
    );
}

#[test]
fn features_put_only_key_with_passphrase() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"data");
    env.ok(&["init"]);
    let key = env.path("protected.key");
    let mut c = env.cmd();
    c.env("CAIRN_NEW_PASSWORD", "source secret")
        .arg("--repo")
        .arg(&env.repo)
        .args(["key", "add", "--role", "put-only", "-o", s(&key)]);
    run(c).expect(0);
    let kf = cairn_format::keyfile::KeyFile::decode(&std::fs::read(&key).unwrap()).unwrap();
    assert!(kf.kdf.is_some(), "the key file is not protected");
    let with_key = |pass: &str, args: &[&str]| {
        let mut c = env.cmd();
        c.env("CAIRN_PASSWORD", pass)
            .arg("--repo")
            .arg(&env.repo)
            .arg("--key-file")
            .arg(&key)
            .args(args);
        run(c)
    };
    let r = with_key("wrong", &["backup", s(&src)]).expect(2);
    assert!(r.stderr.contains("passphrase"), "{}", r.stderr);
    with_key("source secret", &["backup", s(&src)]).expect(0);
    let r = with_key("source secret", &["ls", "latest"]).expect(2);
    assert!(r.stderr.contains("put-only"), "{}", r.stderr);
    assert_eq!(
        json(&env.ok(&["snapshots", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `(new, changed, unchanged)` file counts of a `backup --json` summary.
fn file_counts(v: &serde_json::Value) -> (u64, u64, u64) {
    (
        u(v, "new_files"),
        u(v, "changed_files"),
        u(v, "unchanged_files"),
    )
}
