//! What a restore does with what DEST already holds: `--overwrite`,
//! `--delete`, `--verify`, and a killed restore run again.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

/// ctime to the nanosecond: changed by any rewrite, kept by a skip.
fn ctime(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.ctime(), m.ctime_nsec())
}

/// `if-changed` (the default) keeps files that match by size and ns
/// mtime and rewrites the rest; `always` rewrites all; `never` touches
/// nothing that exists; `--delete` makes DEST equal to the snapshot;
/// `--verify` reads back and catches what a quick check cannot.
#[test]
fn restore_overwrite_delete_and_verify() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a"), b"alpha alpha\n").unwrap();
    fs::write(src.join("b"), b"bravo bravo\n").unwrap();
    fs::write(src.join("d/c"), pseudo(300_000, 4)).unwrap();
    std::os::unix::fs::symlink("a", src.join("l")).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let spec = format!("latest:{}", s(&src));
    let dest = env.path("dest");
    env.ok(&["restore", &spec, s(&dest)]);
    assert!(compare_trees(&src, &dest, true).is_empty());
    let c_first = ctime(&dest.join("d/c"));
    std::thread::sleep(Duration::from_millis(20));

    // Changes in DEST: `a` rewritten (new mtime), `b` changed behind the
    // quick check's back (same size, mtime put back), extra entries.
    fs::write(dest.join("a"), b"ALPHA ALPHA\n").unwrap();
    let b_md = fs::metadata(src.join("b")).unwrap();
    fs::write(dest.join("b"), b"BRAVO BRAVO\n").unwrap();
    set_mtime(&dest.join("b"), b_md.mtime(), b_md.mtime_nsec() as u32);
    fs::write(dest.join("extra"), b"not in the snapshot").unwrap();
    fs::create_dir_all(dest.join("more/deeper")).unwrap();
    fs::write(dest.join("more/deeper/x"), b"x").unwrap();

    let out = env.ok(&["restore", &spec, s(&dest)]);
    assert!(out.contains("were kept"), "{out}");
    assert_eq!(fs::read(dest.join("a")).unwrap(), b"alpha alpha\n");
    assert_eq!(
        fs::read(dest.join("b")).unwrap(),
        b"BRAVO BRAVO\n",
        "kept by the quick check"
    );
    assert_eq!(
        ctime(&dest.join("d/c")),
        c_first,
        "an unchanged file was rewritten"
    );
    assert!(dest.join("extra").exists());

    // --verify catches `b`, and says how to fix it.
    let r = env.run(&["restore", &spec, s(&dest), "--verify"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{}/b differs", s(&dest))),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--overwrite always"), "{}", r.stderr);

    // always: everything rewritten.
    let out = env.ok(&[
        "restore",
        &spec,
        s(&dest),
        "--overwrite",
        "always",
        "--verify",
    ]);
    assert!(out.contains("verified: 3 files"), "{out}");
    assert_eq!(fs::read(dest.join("b")).unwrap(), b"bravo bravo\n");
    assert_ne!(ctime(&dest.join("d/c")), c_first);

    // never: what exists stays, directories too, and what is missing
    // comes back.
    fs::write(dest.join("a"), b"mine now").unwrap();
    fs::remove_file(dest.join("d/c")).unwrap();
    fs::set_permissions(dest.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    // Nothing is added to DEST itself, so its mtime stays if untouched.
    set_mtime(&dest, 1_000_000_000, 5);
    env.ok(&["restore", &spec, s(&dest), "--overwrite", "never"]);
    assert_eq!(fs::read(dest.join("a")).unwrap(), b"mine now");
    assert_eq!(fs::read(dest.join("d/c")).unwrap(), pseudo(300_000, 4));
    let d_md = fs::metadata(dest.join("d")).unwrap();
    assert_eq!(
        d_md.mode() & 0o7777,
        0o700,
        "an existing directory's mode was changed"
    );
    assert_ne!(
        fs::metadata(src.join("d")).unwrap().mode() & 0o7777,
        0o700,
        "the test needs a mode the snapshot does not have"
    );
    let top = fs::metadata(&dest).unwrap();
    assert_eq!((top.mtime(), top.mtime_nsec()), (1_000_000_000, 5));
    // A missing directory comes back with the snapshot's metadata.
    fs::remove_dir_all(dest.join("d")).unwrap();
    env.ok(&["restore", &spec, s(&dest), "--overwrite", "never"]);
    let d_md = fs::metadata(dest.join("d")).unwrap();
    let d_src = fs::metadata(src.join("d")).unwrap();
    assert_eq!(d_md.mode(), d_src.mode());
    assert_eq!(
        (d_md.mtime(), d_md.mtime_nsec()),
        (d_src.mtime(), d_src.mtime_nsec())
    );

    // --delete: DEST ends equal to the snapshot.
    let out = env.ok(&["restore", &spec, s(&dest), "--delete", "--verify"]);
    assert!(
        out.contains("2 entries not in the snapshot were deleted"),
        "{out}"
    );
    let diffs = compare_trees(&src, &dest, true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    let r = env.run(&["restore", &spec, s(&dest), "--delete", "--include", "a"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

/// A restore killed part way, run again, finishes without rewriting the
/// files the first run completed.
#[test]
fn killed_restore_resumes_without_rewriting_finished_files() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..150 {
        fs::write(src.join(format!("f{i:03}")), pseudo(1 << 20, i)).unwrap();
    }
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let spec = format!("latest:{}", s(&src));
    let dest = env.path("dest");
    let done = |dest: &Path| -> Vec<String> {
        let mut v = Vec::new();
        for e in fs::read_dir(dest).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let (a, b) = (
                e.metadata().unwrap(),
                fs::metadata(src.join(&name)).unwrap(),
            );
            if a.len() == b.len() && (a.mtime(), a.mtime_nsec()) == (b.mtime(), b.mtime_nsec()) {
                v.push(name);
            }
        }
        v
    };
    let mut c = env.cmd();
    // One worker makes the run long enough to stop in the middle.
    c.args([
        "--repo",
        s(&env.repo),
        "restore",
        &spec,
        s(&dest),
        "--threads",
        "1",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while done(&dest).len() < 5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = done(&dest);
    assert!(finished.len() < 150, "nothing left to resume");
    let before: Vec<_> = finished.iter().map(|n| ctime(&dest.join(n))).collect();
    let out = env.ok(&["restore", &spec, s(&dest), "--verify"]);
    assert!(out.contains("verified: 150 files"), "{out}");
    let after: Vec<_> = finished.iter().map(|n| ctime(&dest.join(n))).collect();
    assert_eq!(
        before, after,
        "files the killed run finished were written again"
    );
    assert!(compare_trees(&src, &dest, true).is_empty());
}

/// A whole snapshot that fits in memory is restored with large files
/// written through the page cache; a path inside it (its size unknown)
/// with large files written directly. Both give the source's bytes,
/// holes and metadata: a file split between workers, with a run of zeros
/// inside and zeros at its end, a copy of it, and a file of one part
/// ending mid-block.
#[test]
fn large_files_restore_alike_through_the_cache_and_directly() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut big = pseudo(40 << 20, 31);
    big[8 << 20..14 << 20].fill(0);
    big[(38 << 20) + 5..].fill(0);
    fs::write(src.join("big"), &big).unwrap();
    fs::write(src.join("copy"), &big).unwrap();
    fs::write(src.join("mid"), pseudo((3 << 20) + 123, 32)).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let whole = env.path("whole");
    env.ok(&["restore", "latest", s(&whole)]);
    let part = env.path("part");
    env.ok(&["restore", &format!("latest:{}", s(&src)), s(&part)]);
    for dest in [whole.join(src.strip_prefix("/").unwrap()), part] {
        let diffs = compare_trees(&src, &dest, true);
        assert!(diffs.is_empty(), "{}: {diffs:?}", dest.display());
        for f in ["big", "copy"] {
            let p = dest.join(f);
            assert!(fs::read(&p).unwrap() == big, "{} differs", p.display());
            let allocated = fs::metadata(&p).unwrap().blocks() * 512;
            assert!(
                allocated < (36 << 20),
                "{}: {allocated} bytes allocated, the zeros were written",
                p.display()
            );
        }
    }
}

/// Bytes of `p` in the page cache (`fincore`).
fn cached(p: &Path) -> u64 {
    let out = command_out(
        "fincore",
        &["--bytes", "--noheadings", "--raw", "-o", "RES", s(p)],
    );
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore said {out:?}"))
}

/// A restore that fits in memory writes large files through the page
/// cache, and so does one that passes the kernel's free dirty limit, but
/// there a large file that copies one restored before it goes to the disk
/// directly, its bytes copied from the first, and packs are read around
/// the cache: the copy and the packs leave no pages in the cache, and
/// every file has the source's bytes. Below the limit the copy and the
/// packs go through the cache like the rest.
#[test]
fn a_copy_of_a_large_file_is_copied_and_written_directly() {
    use cairn_engine::restorer::{RestoreOptions, restore};
    if !is_root() {
        cannot_run("mounting an ext4 (direct writes need a device) needs root");
    }
    for tool in ["truncate", "mkfs.ext4", "mount", "fincore", "dd", "stat"] {
        if !have(tool) {
            cannot_run(&format!("{tool} is missing"));
        }
    }
    let env = Env::new();
    let fs_type = command_out("stat", &["-f", "-c", "%T", s(env.dir.path())]);
    if fs_type.trim() == "tmpfs" {
        cannot_run("the test directory is on a tmpfs, whose files are all in memory");
    }
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = pseudo(24 << 20, 41);
    fs::write(src.join("a-first"), &big).unwrap();
    fs::write(src.join("b-copy"), &big).unwrap();
    fs::write(src.join("c-other"), pseudo(6 << 20, 42)).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let storage = std::sync::Arc::new(cairn_storage::LocalStorage::new(&env.repo));
    let repo = cairn_repo::Repo::open(
        storage.clone(),
        &cairn_repo::KeySource::Passphrase(PASS.into()),
    )
    .unwrap();
    let (snaps, _) = cairn_repo::Repo::list_snapshots(&*storage).unwrap();
    let root = snaps[0].envelope.root;
    // The restore is told its size, as the CLI tells it a whole snapshot's:
    // one past the free dirty limit that still fits in memory (a quarter
    // of it), and one below.
    let (limit, avail) = cairn_engine::restorer::memory_limits()
        .expect("the kernel's dirty limits and available memory");
    if limit >= avail / 4 {
        cannot_run(&format!(
            "the dirty limits (vm.dirty_*) leave no restore size between {limit} bytes and a quarter of the {avail} available"
        ));
    }
    let mut packs = Vec::new();
    let mut dirs = vec![env.repo.join("data")];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                packs.push(e.path());
            }
        }
    }
    let total: u64 = packs.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    let packs_cached = || packs.iter().map(|p| cached(p)).sum::<u64>();
    let disk = LoopDisk::new(env.dir.path(), "200M");
    for (name, expected, direct) in [
        ("over", limit / 2 + avail / 8, true),
        ("under", 60 << 20, false),
    ] {
        let dest = disk.mnt.join(name);
        let opts = RestoreOptions {
            target: dest.clone(),
            expected_bytes: Some(expected),
            ..RestoreOptions::default()
        };
        // The backup synced its packs, so the kernel may drop them.
        for p in &packs {
            command_out("dd", &[&format!("if={}", s(p)), "iflag=nocache", "count=0"]);
        }
        let before = packs_cached();
        assert!(
            before < total / 8,
            "{before} of {total} pack bytes still cached after dropping them"
        );
        let no = std::sync::atomic::AtomicBool::new(false);
        let sum = restore(&repo, root, &opts, &Default::default(), &no).unwrap();
        let after = packs_cached();
        assert!(sum.warnings.is_empty(), "{:?}", sum.warnings);
        let restored = dest.join(src.strip_prefix("/").unwrap());
        let (first, copy, other) = (
            cached(&restored.join("a-first")),
            cached(&restored.join("b-copy")),
            cached(&restored.join("c-other")),
        );
        assert!(
            first >= 12 << 20 && other >= 3 << 20,
            "{name}: files that copy nothing were not written through the cache: {first} and {other} bytes cached"
        );
        if direct {
            assert_eq!(
                copy, 0,
                "{name}: the copy was written through the page cache"
            );
            // Pages two reads share may stay.
            assert!(
                after < total / 16,
                "{name}: {after} of {total} pack bytes read into the page cache"
            );
            // Every chunk of the copy was waited for and copied, however
            // the workers went; but a last chunk under 64 KiB, which is
            // decoded again rather than copied (chunks are at least 128
            // KiB, so no other is that small, and where the last cut
            // falls depends on the repository's chunker key).
            assert!(
                (24 << 20) - (64 << 10) < sum.bytes_copied && sum.bytes_copied <= 24 << 20,
                "{name}: copy's chunks decoded again: {} bytes copied",
                sum.bytes_copied
            );
        } else {
            assert!(copy >= 12 << 20, "{name}: the copy was written directly");
            assert!(
                after >= total / 2,
                "{name}: {after} of {total} pack bytes read through the page cache"
            );
        }
        let diffs = compare_trees(&src, &restored, true);
        assert!(diffs.is_empty(), "{name}: {diffs:?}");
    }
}

/// A restore onto a disk without room for it stops at the first write that
/// finds the disk full, says so and what to do, and leaves only whole
/// files; once there is room, the same restore run again completes.
#[test]
fn a_restore_onto_a_full_disk_stops_keeps_whole_files_and_resumes() {
    if !is_root() {
        cannot_run("mounting a small ext4 needs root");
    }
    for tool in ["truncate", "mkfs.ext4", "mount"] {
        if !have(tool) {
            cannot_run(&format!("{tool} is missing"));
        }
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // Large files (written directly, split between workers) and small ones.
    for i in 0..4u64 {
        fs::write(src.join(format!("big{i}")), pseudo(12 << 20, 70 + i)).unwrap();
    }
    for i in 0..40u64 {
        fs::write(src.join(format!("small{i:02}")), pseudo(20_000, 200 + i)).unwrap();
    }
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let spec = format!("latest:{}", s(&src));
    // 80 MiB, of which a filler takes 40: the 49 MiB restored do not fit.
    let disk = LoopDisk::new(env.dir.path(), "80M");
    let filler = disk.mnt.join("filler");
    fs::write(&filler, vec![1u8; 40 << 20]).unwrap();
    let dest = disk.mnt.join("dest");
    let r = env.run(&["restore", &spec, s(&dest)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("is full") && r.stderr.contains("run the same restore again"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("warning:"),
        "a warning per file instead of one error:\n{}",
        r.stderr
    );
    // What is there is whole: every file left has the source's bytes.
    let mut left = 0;
    for e in fs::read_dir(&dest).unwrap() {
        let e = e.unwrap();
        let got = fs::read(e.path()).unwrap();
        assert!(
            got == fs::read(src.join(e.file_name())).unwrap(),
            "{:?} was left incomplete",
            e.file_name()
        );
        left += 1;
    }
    assert!(left < 44, "everything was restored onto a full disk");
    // Room made: the same restore completes, keeping what was there.
    fs::remove_file(&filler).unwrap();
    let out = env.ok(&["restore", &spec, s(&dest)]);
    if left > 0 {
        assert!(out.contains("were kept"), "{out}");
    }
    let diffs = compare_trees(&src, &dest, true);
    assert!(diffs.is_empty(), "{diffs:#?}");
}
