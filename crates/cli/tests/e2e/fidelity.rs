//! A restore equals its source: every kind of entry and every piece of
//! metadata `verify-restore.py` compares, plus partial restores.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())?;
    Ok(())
}

fn has_xattr(p: &Path, name: &str) -> bool {
    rustix::fs::lgetxattr_query(p, name).is_ok()
}

fn mkdirs(p: &Path) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        mkdirs(d);
    }
    std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// A POSIX ACL in the kernel's `system.posix_acl_*` xattr encoding:
/// version 2, then (tag, perm, id) entries sorted by tag and id.
fn raw_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Gives `file` an access ACL and `dir` an access and a default ACL, with
/// `setfacl` when installed, else as raw xattrs; fails the test when the
/// filesystem refuses ACLs.
fn set_acls(file: &Path, dir: &Path) {
    if have("setfacl") {
        let runs = [
            vec!["-m", "u:1234:rw,g:5678:r", s(file)],
            vec!["-m", "u:1234:rx", s(dir)],
            vec!["-d", "-m", "u:1234:rwx,g:5678:rx", s(dir)],
        ];
        for args in runs {
            let out = Command::new("setfacl").args(&args).output().unwrap();
            if !out.status.success() {
                cannot_run(&format!(
                    "ACLs: setfacl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    } else {
        const ANY: u32 = u32::MAX;
        let file_acl = raw_acl(&[
            (0x01, 6, ANY),  // user::rw-
            (0x02, 6, 1234), // user:1234:rw-
            (0x04, 4, ANY),  // group::r--
            (0x08, 4, 5678), // group:5678:r--
            (0x10, 6, ANY),  // mask::rw-
            (0x20, 4, ANY),  // other::r--
        ]);
        let dir_acl = raw_acl(&[
            (0x01, 7, ANY),
            (0x02, 5, 1234),
            (0x04, 5, ANY),
            (0x10, 5, ANY),
            (0x20, 5, ANY),
        ]);
        let tries = [
            (file, "system.posix_acl_access", &file_acl),
            (dir, "system.posix_acl_access", &dir_acl),
            (dir, "system.posix_acl_default", &dir_acl),
        ];
        for (p, name, v) in tries {
            if let Err(e) = set_xattr(p, name, v) {
                cannot_run(&format!("ACLs: setting {name} on {}: {e}", p.display()));
            }
        }
    }
    assert!(has_xattr(file, "system.posix_acl_access"));
    assert!(has_xattr(dir, "system.posix_acl_default"));
}

/// Every path below and including `root`, children before their parent,
/// so setting times in this order leaves every directory's mtime intact.
fn post_order(root: &Path, out: &mut Vec<PathBuf>) {
    let md = std::fs::symlink_metadata(root).unwrap();
    if md.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            post_order(&root.join(n), out);
        }
    }
    out.push(root.to_path_buf());
}

/// What the fidelity tree turned out to contain, where that depends on
/// privileges and the filesystem.
struct Built {
    sparse: PathBuf,
}

/// Builds the fidelity tree at `src`. Root-only entries (device node,
/// foreign owners) are made only as root.
fn build_tree(src: &Path) -> Built {
    let root = is_root();
    mkdirs(src);

    // Regular files: empty, tiny, a few KiB, several 1 MiB chunks.
    write(&src.join("files/empty"), b"");
    write(&src.join("files/tiny"), b"x");
    write(&src.join("files/small.txt"), &pseudo(5000, 1));
    write(&src.join("files/big"), &pseudo((4 << 20) + 12345, 2));
    write(&src.join("files/old"), b"written before 1970");
    write(&src.join("files/future"), b"written after 2100");
    // Long runs of zeros inside a dense file must read back as zeros.
    let mut zeros = pseudo(100_000, 3);
    zeros.extend(std::iter::repeat_n(0u8, 300_000));
    zeros.extend(pseudo(5000, 4));
    write(&src.join("files/zero-run"), &zeros);

    // A sparse file: 16 MiB with three written 4 KiB blocks.
    let sparse = src.join("files/sparse");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&sparse).unwrap();
        for off in [0u64, 5 << 20, (16 << 20) - 4096] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&pseudo(4096, off + 7)).unwrap();
        }
        f.set_len(16 << 20).unwrap();
    }
    let md = std::fs::metadata(&sparse).unwrap();
    if md.blocks() * 512 >= md.len() / 2 {
        cannot_run("sparse check: this filesystem does not keep holes");
    }

    // Sparse with a hole at the end, and a dense file of zeros only.
    {
        let mut f = std::fs::File::create(src.join("files/sparse-tail")).unwrap();
        std::io::Write::write_all(&mut f, &pseudo(4096, 8)).unwrap();
        f.set_len(8 << 20).unwrap();
    }
    write(&src.join("files/all-zeros"), &vec![0u8; (1 << 20) + 10_000]);
    // Ending in a few zero bytes past a block, as gzip files often do
    // (their last field is a length); small and large.
    for (name, len) in [("zero-end", 4098usize), ("zero-end-big", (3 << 20) + 4098)] {
        let mut d = pseudo(len - 2, len as u64);
        d.extend_from_slice(&[0, 0]);
        write(&src.join("files").join(name), &d);
    }
    write(&src.join("files/.hidden"), b"dot file");
    write(&src.join("files/-dash"), b"leading dash");

    // Symlinks: relative, absolute, dangling, to a directory, a loop.
    mkdirs(&src.join("links"));
    symlink("../files/tiny", src.join("links/rel")).unwrap();
    symlink(src.join("files/tiny"), src.join("links/abs")).unwrap();
    symlink("nowhere/at/all", src.join("links/dangling")).unwrap();
    symlink("../files", src.join("links/dir")).unwrap();
    symlink("loop-b", src.join("links/loop-a")).unwrap();
    symlink("loop-a", src.join("links/loop-b")).unwrap();
    symlink(
        OsStr::from_bytes(b"caf\xe9/target"),
        src.join("links/non-utf8"),
    )
    .unwrap();

    // Hardlink groups of 2 and 3 names in different directories.
    write(&src.join("hard/two-1"), b"two names");
    write(&src.join("hard/three-1"), &pseudo(70_000, 5));
    mkdirs(&src.join("other/deeper"));
    std::fs::hard_link(src.join("hard/two-1"), src.join("other/two-2")).unwrap();
    std::fs::hard_link(src.join("hard/three-1"), src.join("other/three-2")).unwrap();
    std::fs::hard_link(src.join("hard/three-1"), src.join("other/deeper/three-3")).unwrap();

    // Special files: a FIFO always, a character device as root.
    mkdirs(&src.join("special"));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("special/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    if root {
        if let Err(e) = rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("special/null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        ) {
            cannot_run(&format!("device node: mknod refused: {e}"));
        }
    } else {
        cannot_run("device node: not root");
    }

    // Names: not UTF-8, 255 bytes (ASCII and multi-byte), odd characters.
    let names = src.join("names");
    mkdirs(&names);
    write(&names.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name");
    write(&names.join("a".repeat(255)), b"long ascii name");
    let mb = format!("{}x", "é".repeat(127));
    assert_eq!(mb.len(), 255);
    write(&names.join(&mb), b"long utf-8 name");
    write(&names.join("new\nline and space"), b"odd name");
    write(
        &names.join(OsStr::from_bytes(b"dir\xff\xfe")).join("inside"),
        b"in a non-UTF-8 directory",
    );

    // A 40-level deep directory path.
    let mut deep = src.join("deep");
    for i in 0..40 {
        deep.push(format!("level-{i:02}"));
    }
    write(&deep.join("leaf"), b"at the bottom");

    // Foreign owners (root only). Before chmod: chown clears setuid.
    write(&src.join("owned/file"), b"owned by 1234:5678");
    write(&src.join("owned/group-only"), b"group 5678");
    mkdirs(&src.join("owned/dir"));
    write(&src.join("owned/dir/inner"), b"inner");
    symlink("file", src.join("owned/link")).unwrap();
    write(&src.join("owned/huge-ids"), b"ids near 2^32");
    if root {
        use std::os::unix::fs::{chown, lchown};
        chown(src.join("owned/file"), Some(1234), Some(5678)).unwrap();
        chown(src.join("owned/group-only"), Some(0), Some(5678)).unwrap();
        chown(src.join("owned/dir"), Some(1234), Some(5678)).unwrap();
        chown(src.join("owned/dir/inner"), Some(4321), Some(8765)).unwrap();
        lchown(src.join("owned/link"), Some(1234), Some(5678)).unwrap();
        chown(
            src.join("owned/huge-ids"),
            Some(4_000_000_000),
            Some(4_000_000_001),
        )
        .unwrap();
    } else {
        cannot_run("foreign owners: not root");
    }

    // Root only: entries nobody else could read, trusted.* xattrs.
    if root {
        write(&src.join("root-only/no-access"), b"mode 000");
        write(
            &src.join("root-only/locked/inside"),
            b"in a mode 000 directory",
        );
        write(&src.join("root-only/trusted"), b"trusted xattr");
        set_xattr(
            &src.join("root-only/trusted"),
            "trusted.cairn",
            b"root only",
        )
        .unwrap();
        chmod(&src.join("root-only/no-access"), 0);
        chmod(&src.join("root-only/locked"), 0);
    }

    // Special mode bits.
    write(&src.join("modes/setuid"), b"#!/bin/sh\n");
    write(&src.join("modes/setgid"), b"#!/bin/sh\n");
    write(&src.join("modes/odd"), b"mode 0604");
    write(&src.join("modes/sticky/inside"), b"in a sticky dir");
    mkdirs(&src.join("modes/setgid-dir"));
    chmod(&src.join("modes/setuid"), 0o4755);
    chmod(&src.join("modes/setgid"), 0o2755);
    chmod(&src.join("modes/odd"), 0o604);
    chmod(&src.join("modes/sticky"), 0o1777);
    chmod(&src.join("modes/setgid-dir"), 0o2775);

    // Extended attributes on files and directories.
    write(&src.join("xattr/file"), b"has xattrs");
    mkdirs(&src.join("xattr/dir"));
    let xa = [
        (src.join("xattr/file"), "user.comment", &b"hello"[..]),
        (src.join("xattr/file"), "user.binary", &b"\0\xff\x01"[..]),
        (src.join("xattr/file"), "user.empty", &b""[..]),
        (
            src.join("xattr/dir"),
            "user.dirattr",
            &b"on a directory"[..],
        ),
    ];
    for (p, k, v) in &xa {
        set_xattr(p, k, v)
            .unwrap_or_else(|e| panic!("user xattrs must work here: {k} on {}: {e}", p.display()));
    }

    // POSIX ACLs.
    write(&src.join("acl/file"), b"has an ACL");
    mkdirs(&src.join("acl/dir"));
    set_acls(&src.join("acl/file"), &src.join("acl/dir"));
    // A file created inside the directory inherits its default ACL.
    write(&src.join("acl/dir/inherited"), b"inherits");

    // A read-only directory holding files and a subdirectory.
    write(&src.join("ro/a"), b"in a read-only dir");
    write(&src.join("ro/sub/b"), b"deeper");
    chmod(&src.join("ro/sub"), 0o555);
    chmod(&src.join("ro"), 0o555);

    // Nanosecond times on everything, set last, children first.
    let mut all = Vec::new();
    post_order(src, &mut all);
    for (i, p) in all.iter().enumerate() {
        let i = i as i64;
        set_mtime(
            p,
            1_600_000_000 + i * 3_607,
            ((i * 987_654_321 + 1) % 999_999_999) as u32,
        );
    }
    set_mtime(&src.join("files/old"), -86_400 * 365, 7);
    set_mtime(&src.join("files/future"), 4_200_000_000, 999_999_999);
    set_mtime(&src.join("links/dangling"), 1_234_567_890, 123_456_789);
    // The directory's own time last: setting its children did not touch it.
    set_mtime(&src.join("files"), 1_500_000_000, 1);

    Built { sparse }
}

#[test]
fn fidelity_full_tree_roundtrip() {
    let env = Env::new();
    let src = env.path("src");
    let built = build_tree(&src);
    if !is_root() {
        cannot_run("owner comparison: not root (owners cannot be restored)");
    }
    env.ok(&["init"]);
    let out = env.ok(&["backup", s(&src)]);
    assert!(out.contains("snapshot "), "{out}");

    let dest = env.path("dest");
    let run = env.run(&["restore", "latest", s(&dest)]).expect(0);
    assert!(
        !run.stdout.contains("extended attributes not restored"),
        "{}",
        run.stdout
    );
    if is_root() {
        assert!(
            !run.stdout.contains("owners not restored"),
            "{}",
            run.stdout
        );
    }
    let got = restored(&dest, &src);
    let diffs = compare_trees(&src, &got, is_root());
    assert!(
        diffs.is_empty(),
        "restore differs from the source:\n{diffs:#?}"
    );

    // Spot checks that would hide behind a broken comparison.
    assert_eq!(
        std::fs::read_link(got.join("links/abs")).unwrap(),
        src.join("files/tiny")
    );
    assert!(
        std::fs::symlink_metadata(got.join("special/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let ro = std::fs::metadata(got.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o555);
    let old = std::fs::metadata(got.join("files/old")).unwrap();
    assert_eq!((old.mtime(), old.mtime_nsec()), (-86_400 * 365, 7));
    let m = std::fs::metadata(restored(&dest, &built.sparse)).unwrap();
    assert!(
        m.blocks() * 512 < m.len() / 2,
        "restored sparse file has {} of {} bytes allocated",
        m.blocks() * 512,
        m.len()
    );
    let a = std::fs::metadata(got.join("hard/three-1")).unwrap();
    let c = std::fs::metadata(got.join("other/deeper/three-3")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (c.ino(), 3));
    if is_root() {
        let o = std::fs::metadata(got.join("owned/file")).unwrap();
        assert_eq!((o.uid(), o.gid()), (1234, 5678));
        let l = std::fs::symlink_metadata(got.join("owned/link")).unwrap();
        assert_eq!((l.uid(), l.gid()), (1234, 5678));
        if src.join("special/null").exists() {
            let d = std::fs::symlink_metadata(got.join("special/null")).unwrap();
            assert!(d.file_type().is_char_device());
            assert_eq!(d.rdev(), rustix::fs::makedev(1, 3));
        }
    }

    let check = env.run(&["check", "--read-data"]).expect(0);
    assert!(check.stdout.contains("no errors"), "{}", check.stdout);

    make_writable(env.dir.path());
}

/// A small tree for partial restores.
fn partial_tree(src: &Path) {
    write(&src.join("a/x.txt"), b"ax");
    write(&src.join("a/y.dat"), b"ay");
    write(&src.join("b/z.dat"), b"bz");
    write(&src.join("b/c/w.txt"), b"bcw");
    write(&src.join("b/c/v.dat"), b"bcv");
    write(&src.join("d/e.dat"), b"de");
    write(&src.join("top.txt"), b"top");
    symlink("a/x.txt", src.join("link")).unwrap();
    write(&src.join("h/one.lnk"), b"three names");
    std::fs::hard_link(src.join("h/one.lnk"), src.join("h/two.lnk")).unwrap();
    std::fs::hard_link(src.join("h/one.lnk"), src.join("h/three.lnk")).unwrap();
    let mut all = Vec::new();
    post_order(src, &mut all);
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_700_000_000 + i as i64, 1000 + i as u32);
    }
}

fn set(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn fidelity_partial_restores() {
    let env = Env::new();
    let src = env.path("src");
    partial_tree(&src);
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);

    // SNAP:PATH of a directory: its contents land in DEST, with its metadata.
    let d1 = env.path("sub");
    env.ok(&["restore", &format!("latest:{}/b", s(&src)), s(&d1)]);
    let diffs = compare_trees(&src.join("b"), &d1, is_root());
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert_eq!(
        entries_below(&d1),
        set(&["c", "c/v.dat", "c/w.txt", "z.dat"])
    );

    // SNAP:PATH of a single file lands as DEST/NAME.
    let d2 = env.path("one");
    env.ok(&["restore", &format!("latest:{}/b/c/w.txt", s(&src)), s(&d2)]);
    assert_eq!(entries_below(&d2), set(&["w.txt"]));
    assert_eq!(std::fs::read(d2.join("w.txt")).unwrap(), b"bcw");

    // SNAP:PATH with a trailing slash means the same directory.
    let d3 = env.path("slash");
    env.ok(&["restore", &format!("latest:{}/a/", s(&src)), s(&d3)]);
    assert_eq!(entries_below(&d3), set(&["x.txt", "y.dat"]));

    // --include: matching files and the directories leading to them.
    let d4 = env.path("inc");
    env.ok(&["restore", "latest", s(&d4), "--include", "*.txt"]);
    assert_eq!(
        entries_below(&restored(&d4, &src)),
        set(&["a", "a/x.txt", "b", "b/c", "b/c/w.txt", "top.txt"])
    );

    // --include of an anchored directory takes everything below it.
    let d5 = env.path("inc-dir");
    let anchored = format!("{}/b", s(&src));
    env.ok(&["restore", "latest", s(&d5), "--include", &anchored]);
    assert_eq!(
        entries_below(&restored(&d5, &src)),
        set(&["b", "b/c", "b/c/v.dat", "b/c/w.txt", "b/z.dat"])
    );
    let diffs = compare_trees(&src.join("b"), &restored(&d5, &src).join("b"), is_root());
    assert!(diffs.is_empty(), "{diffs:#?}");

    // --exclude of a glob and of a directory-only pattern.
    let d6 = env.path("exc");
    env.ok(&[
        "restore",
        "latest",
        s(&d6),
        "--exclude",
        "*.dat",
        "--exclude",
        "c/",
    ]);
    assert_eq!(
        entries_below(&restored(&d6, &src)),
        set(&[
            "a",
            "a/x.txt",
            "b",
            "d",
            "h",
            "h/one.lnk",
            "h/three.lnk",
            "h/two.lnk",
            "link",
            "top.txt"
        ])
    );

    // --include and --exclude together: exclude wins.
    let d7 = env.path("both");
    env.ok(&[
        "restore",
        "latest",
        s(&d7),
        "--include",
        &anchored,
        "--exclude",
        "*.txt",
    ]);
    assert_eq!(
        entries_below(&restored(&d7, &src)),
        set(&["b", "b/c", "b/c/v.dat", "b/z.dat"])
    );

    // SNAP:PATH combined with --exclude.
    let d8 = env.path("sub-exc");
    env.ok(&[
        "restore",
        &format!("latest:{}/b", s(&src)),
        s(&d8),
        "--exclude",
        "*.txt",
    ]);
    assert_eq!(entries_below(&d8), set(&["c", "c/v.dat", "z.dat"]));

    // Excluding the first name of a hard link group keeps the others linked.
    let d10 = env.path("links");
    let first = format!("{}/h/one.lnk", s(&src));
    env.ok(&["restore", "latest", s(&d10), "--exclude", &first]);
    let h = restored(&d10, &src).join("h");
    assert_eq!(entries_below(&h), set(&["three.lnk", "two.lnk"]));
    let (m2, m3) = (
        std::fs::metadata(h.join("two.lnk")).unwrap(),
        std::fs::metadata(h.join("three.lnk")).unwrap(),
    );
    assert_eq!((m2.ino(), m2.nlink()), (m3.ino(), 2));
    assert_eq!(std::fs::read(h.join("two.lnk")).unwrap(), b"three names");

    // A path that is not in the snapshot fails clearly and writes nothing.
    let d9 = env.path("missing");
    let r = env
        .run(&["restore", &format!("latest:{}/nope", s(&src)), s(&d9)])
        .expect(2);
    assert!(r.stderr.contains("not in the snapshot"), "{}", r.stderr);
}

/// Runs `restore` as an unprivileged user: as root through `setpriv` as
/// nobody (65534), otherwise directly.
fn restore_unprivileged(env: &Env, dest: &Path, extra: &[&str]) -> Run {
    if !is_root() {
        return env.run(&[&["restore", "latest", s(dest)], extra].concat());
    }
    if !have("setpriv") {
        cannot_run("unprivileged restore: setpriv is not installed");
    }
    // nobody must reach the repository and own the destination and a home.
    chmod(env.dir.path(), 0o755);
    let home = env.path("nobody-home");
    mkdirs(&home);
    mkdirs(dest);
    for d in [&home, dest] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        env!("CARGO_BIN_EXE_cairn"),
    ])
    .arg("--repo")
    .arg(&env.repo)
    .args(["restore", "latest", s(dest)])
    .args(extra)
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", &home)
    .env("XDG_DATA_HOME", home.join(".local/share"))
    .env("XDG_CACHE_HOME", home.join(".cache"))
    .env("XDG_STATE_HOME", home.join(".local/state"))
    .env("XDG_CONFIG_HOME", home.join(".config"))
    .env("CAIRN_PASSWORD", PASS);
    let r = run(c);
    if r.stderr.contains("setpriv:") {
        cannot_run(&format!("unprivileged restore: {}", r.stderr));
    }
    r
}

#[test]
fn fidelity_unprivileged_restore_reports_owners() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("plain"), b"plain");
    write(&src.join("dir/inner"), &pseudo(10_000, 9));
    write(&src.join("xattr"), b"xattr");
    set_xattr(&src.join("xattr"), "user.k", b"v").unwrap();
    symlink("plain", src.join("link")).unwrap();
    write(&src.join("ro-dir/file"), b"in a read-only dir");
    chmod(&src.join("ro-dir"), 0o555);
    if is_root() {
        std::os::unix::fs::chown(src.join("plain"), Some(1234), Some(5678)).unwrap();
    }
    let mut all = Vec::new();
    post_order(&src, &mut all);
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_650_000_000 + i as i64, 42 + i as u32);
    }
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);

    let dest = env.path("dest");
    let r = restore_unprivileged(&env, &dest, &[]);
    assert!(
        r.code == 0 || r.code == 1,
        "unprivileged restore must not fail:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    if is_root() {
        // Owners differ from the restoring user: the summary says so.
        assert!(
            r.stdout.contains("owners not restored"),
            "stdout: {}\nstderr: {}",
            r.stdout,
            r.stderr
        );
        let m = std::fs::metadata(restored(&dest, &src).join("plain")).unwrap();
        assert_eq!(m.uid(), 65534);
    }
    let diffs = compare_trees(&src, &restored(&dest, &src), false);
    assert!(diffs.is_empty(), "{diffs:#?}\n{}\n{}", r.stdout, r.stderr);
    make_writable(env.dir.path());
}

#[test]
fn fidelity_unprivileged_restore_keeps_xattrs_of_read_only_files() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("ro-file"), b"read-only, with an xattr");
    set_xattr(&src.join("ro-file"), "user.k", b"v").unwrap();
    chmod(&src.join("ro-file"), 0o444);
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let dest = env.path("dest");
    let r = restore_unprivileged(&env, &dest, &[]);
    let diffs = compare_trees(&src, &restored(&dest, &src), false);
    assert!(
        diffs.is_empty() && r.code == 0,
        "exit {}\n{diffs:#?}\nstdout: {}\nstderr: {}",
        r.code,
        r.stdout,
        r.stderr
    );
    make_writable(env.dir.path());
}

#[test]
fn fidelity_restore_over_existing_tree() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), &pseudo(50_000, 1));
    write(&src.join("b"), b"bee");
    write(&src.join("d/f"), b"eff");
    std::fs::hard_link(src.join("a"), src.join("d/a2")).unwrap();
    symlink("a", src.join("l")).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    // Restoring again over the same tree changes nothing.
    env.ok(&["restore", "latest", s(&dest)]);
    let got = restored(&dest, &src);
    let diffs = compare_trees(&src, &got, is_root());
    assert!(diffs.is_empty(), "second restore: {diffs:#?}");

    // Damage the restored tree: changed contents, a type change, a stray
    // symlink where a file was.
    let outside = env.path("outside");
    std::fs::write(&outside, b"must stay as it is").unwrap();
    std::fs::write(got.join("a"), b"garbage").unwrap();
    std::fs::remove_file(got.join("b")).unwrap();
    std::fs::create_dir(got.join("b")).unwrap();
    write(&got.join("b/inside"), b"x");
    std::fs::remove_file(got.join("d/f")).unwrap();
    symlink(&outside, got.join("d/f")).unwrap();
    std::fs::remove_file(got.join("l")).unwrap();
    write(&got.join("l"), b"a file where a symlink was");
    chmod(&got.join("d"), 0o700);
    env.ok(&["restore", "latest", s(&dest)]);
    let diffs = compare_trees(&src, &got, is_root());
    assert!(diffs.is_empty(), "restore over a damaged tree: {diffs:#?}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"must stay as it is");
}

#[test]
fn fidelity_restore_does_not_write_through_hard_links() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("d/f"), b"restored contents");
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let dest = env.path("dest");
    let got = restored(&dest, &src);
    // DEST already holds the path, as a hard link to a file elsewhere.
    let victim = env.path("victim");
    std::fs::write(&victim, b"must stay as it is").unwrap();
    mkdirs(&got.join("d"));
    std::fs::hard_link(&victim, got.join("d/f")).unwrap();
    env.ok(&["restore", "latest", s(&dest)]);
    assert_eq!(
        std::fs::read(got.join("d/f")).unwrap(),
        b"restored contents"
    );
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&victim).unwrap()),
        "must stay as it is",
        "restore wrote through a hard link to a file outside the destination"
    );
}

/// An unchanged file is not asked for its extended attributes when the
/// files cache saw none: one added or removed between backups (which
/// moves the ctime) is still in the next snapshot, and one left alone
/// stays.
#[test]
fn fidelity_xattrs_changed_between_backups() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    for name in ["plain", "gains", "loses", "keeps"] {
        write(&src.join(name), name.as_bytes());
    }
    set_xattr(&src.join("loses"), "user.note", b"going").unwrap();
    set_xattr(&src.join("keeps"), "user.note", b"staying").unwrap();
    env.ok(&["backup", s(&src)]);
    // The second run trusts the files cache for all four; the third sees
    // the attributes changed in between.
    env.ok(&["backup", s(&src)]);
    set_xattr(&src.join("gains"), "user.note", b"new").unwrap();
    rustix::fs::lremovexattr(src.join("loses"), "user.note").unwrap();
    env.ok(&["backup", s(&src)]);
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    let got = restored(&dest, &src);
    let value = |name: &str| {
        let mut v = [0u8; 64];
        rustix::fs::lgetxattr(got.join(name), "user.note", &mut v[..])
            .ok()
            .map(|n| v[..n].to_vec())
    };
    assert_eq!(value("plain"), None);
    assert_eq!(value("gains").as_deref(), Some(&b"new"[..]));
    assert_eq!(value("loses"), None);
    assert_eq!(value("keeps").as_deref(), Some(&b"staying"[..]));
}
