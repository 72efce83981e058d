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
