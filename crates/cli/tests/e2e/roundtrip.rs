//! Back up and restore real directories; prove the bytes and metadata.

use std::os::unix::fs::symlink;

use crate::util::*;

#[test]
fn backup_restore_check_roundtrip() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big"), pseudo(6 << 20, 1)).unwrap();
    std::fs::write(src.join("sub/small"), b"hello").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    symlink("small", src.join("sub/link")).unwrap();
    env.ok(&["init"]);
    let out = env.ok(&["backup", s(&src)]);
    assert!(out.contains("3 new"), "{out}");
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    let diffs = compare_trees(&src, &restored(&dest, &src), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    env.ok(&["check", "--read-data"]);
}

/// Files of 32 MiB and more are hashed by the seal workers while the
/// walker reads on: their chunk IDs must land in order, holes and zero runs
/// must survive, and a copy must deduplicate completely.
#[test]
fn large_files_hashed_in_parallel_roundtrip() {
    use std::io::{Seek, SeekFrom, Write};

    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 40 MiB: random data, a 4 MiB run of zeros, a repeat of the first
    // 3 MiB, more random data.
    let mut big = pseudo(16 << 20, 7);
    big.extend(std::iter::repeat_n(0u8, 4 << 20));
    big.extend_from_within(..3 << 20);
    big.extend(pseudo((17 << 20) + 4321, 8));
    std::fs::write(src.join("big"), &big).unwrap();
    // 48 MiB sparse: data at three places, holes between.
    {
        let mut f = std::fs::File::create(src.join("sparse")).unwrap();
        for (i, off) in [0u64, 20 << 20, (48 << 20) - 100_000]
            .into_iter()
            .enumerate()
        {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&pseudo(100_000, 20 + i as u64)).unwrap();
        }
        f.set_len(48 << 20).unwrap();
    }
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    let diffs = compare_trees(&src, &restored(&dest, &src), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    env.ok(&["check", "--read-data"]);

    // A copy in a second backup adds no chunk.
    std::fs::write(src.join("big-copy"), &big).unwrap();
    let v = json(&env.ok(&["backup", "--json", s(&src)]));
    assert!(
        v["raw_bytes_added"].as_u64().unwrap() < 64 << 10,
        "the copy was stored again: {v:#}"
    );
    let dest2 = env.path("dest2");
    env.ok(&["restore", "latest", s(&dest2)]);
    let diffs = compare_trees(&src, &restored(&dest2, &src), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

/// With `CAIRN_INDEX_MEMORY` tiny, the index lives in a temporary file and
/// the backup's set of sent blobs spills to disk: every command must
/// behave exactly as with everything in memory, and leave no file behind.
#[test]
fn index_on_disk_roundtrip() {
    let env = Env::new();
    let src = env.path("src");
    for d in 0..20 {
        for f in 0..30 {
            let p = src.join(format!("d{d:02}/f{f:02}"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, pseudo(100 + d * 211 + f * 37, (d * 100 + f) as u64)).unwrap();
        }
    }
    // Duplicates far apart in walk order must still be stored once.
    std::fs::write(src.join("d00/dup"), pseudo(5000, 424242)).unwrap();
    std::fs::write(src.join("d19/dup"), pseudo(5000, 424242)).unwrap();
    let run_small = |args: &[&str]| {
        let mut c = env.cmd();
        c.env("CAIRN_INDEX_MEMORY", "8")
            .arg("--repo")
            .arg(&env.repo)
            .args(args);
        run(c).expect(0).stdout
    };
    run_small(&["init"]);
    let v = json(&run_small(&["backup", "--json", s(&src)]));
    // 601 distinct files and 21 trees (20 directories and src), plus the
    // parents of src: the duplicate adds nothing.
    let blobs = v["blobs_added"].as_u64().unwrap();
    let levels = src.components().count() as u64 - 1;
    assert_eq!(blobs, 601 + 21 + levels, "{v:#}");
    // Unchanged files are recognised through the on-disk index.
    let v = json(&run_small(&["backup", "--json", s(&src)]));
    assert_eq!(v["unchanged_files"].as_u64(), Some(602), "{v:#}");
    // Only trees of the source's parents may change (other tests create
    // files in the temporary directory all the time).
    let again = v["blobs_added"].as_u64().unwrap();
    assert!(again <= levels, "{v:#}");
    let stats = json(&run_small(&["stats", "--json"]));
    assert_eq!(stats["blobs"].as_u64(), Some(blobs + again), "{stats:#}");
    run_small(&["check", "--read-data"]);
    let dest = env.path("dest");
    run_small(&["restore", "latest", s(&dest)]);
    let diffs = compare_trees(&src, &restored(&dest, &src), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    let left: Vec<_> = std::fs::read_dir(env.home.join(".cache/cairn"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary index files left: {left:?}");
}

/// `check --read-data` works through the packs 64 at a time: damage in
/// any round is found and traced to its file.
#[test]
fn check_finds_damage_across_pack_rounds() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..70u64 {
        std::fs::write(src.join(format!("f{i:02}")), pseudo(1_100_000, 1000 + i)).unwrap();
    }
    env.ok(&["init"]);
    env.ok(&["backup", "--pack-size", "1MiB", s(&src)]);
    let data = env.repo.join("data");
    let mut packs = files_below(&data)
        .into_iter()
        .map(|p| data.join(p))
        .collect::<Vec<_>>();
    packs.sort();
    assert!(packs.len() > 64, "{} packs: not two rounds", packs.len());
    // Damage every tenth pack: some land in each round.
    for p in packs.iter().step_by(10) {
        let mut b = std::fs::read(p).unwrap();
        b[100] ^= 1;
        std::fs::write(p, &b).unwrap();
    }
    let mut c = env.cmd();
    c.arg("--repo")
        .arg(&env.repo)
        .args(["check", "--read-data", "--json"]);
    let r = run(c).expect(3);
    let v = json(&r.stdout);
    assert_eq!(v["packs_read"].as_u64(), Some(packs.len() as u64), "{v:#}");
    let damaged = v["damaged_blobs"].as_array().unwrap().len();
    assert!(damaged >= packs.len().div_ceil(10), "{v:#}");
    assert!(!v["affected"].as_array().unwrap().is_empty(), "{v:#}");
}

/// A chunk met again in a restore is copied from where it was first
/// written through the page cache (files under 1 MiB; larger ones go to
/// the disk directly and their chunks are decoded again): copies of a
/// file, a segment repeated inside one file, and a copy of a sparse file
/// (whose zero chunks must stay holes) all come back byte-identical, and a
/// partial restore that leaves out the first copy still restores the
/// second.
#[test]
fn repeated_chunks_copied_on_restore() {
    use std::io::{Seek, SeekFrom, Write};

    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("b")).unwrap();
    // 20 MiB, split between workers: random, a repeat of its first
    // 5 MiB, a run of zeros, random again.
    let mut big = pseudo(6 << 20, 31);
    big.extend_from_within(..5 << 20);
    big.extend(std::iter::repeat_n(0u8, 3 << 20));
    big.extend(pseudo(6 << 20, 32));
    std::fs::write(src.join("a/big"), &big).unwrap();
    std::fs::write(src.join("b/big-copy"), &big).unwrap();
    std::fs::write(src.join("b/medium"), &big[1 << 20..(3 << 20) + 777]).unwrap();
    // Copies of two files small enough to be written through the page
    // cache, alternating (a worker reuses the chunk it holds without a
    // copy, so the same file twice in a row would copy nothing).
    std::fs::create_dir_all(src.join("c")).unwrap();
    let small = [pseudo(900 << 10, 33), pseudo(800 << 10, 34)];
    for i in 0..8 {
        std::fs::write(src.join(format!("c/{i}")), &small[i % 2]).unwrap();
    }
    for name in ["a/sparse", "b/sparse-copy"] {
        let mut f = std::fs::File::create(src.join(name)).unwrap();
        f.write_all(&pseudo(300_000, 40)).unwrap();
        f.seek(SeekFrom::Start(24 << 20)).unwrap();
        f.write_all(&pseudo(300_000, 41)).unwrap();
        f.set_len(40 << 20).unwrap();
    }
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let dest = env.path("dest");
    let v = json(&env.ok(&["restore", "--json", "latest", s(&dest)]));
    let diffs = compare_trees(&src, &restored(&dest, &src), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    // The three later copies of each small file were copied, but for a
    // last chunk under 64 KiB, which is decoded again.
    let copied = v["bytes_copied"].as_u64().unwrap();
    assert!(
        copied >= 3 * (1700 << 10) - 6 * (64 << 10),
        "only {copied} bytes copied: {v:#}"
    );

    let part = env.path("part");
    env.ok(&["restore", &format!("latest:{}/b", s(&src)), s(&part)]);
    let diffs = compare_trees(&src.join("b"), &part, true);
    assert!(diffs.is_empty(), "{diffs:#?}");
}
