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
