//! `cairn dump`: a file's bytes, and a directory as a tar stream that GNU
//! tar extracts into what was backed up.

use std::fs;
use std::process::Command;

use crate::util::*;

fn dump(env: &Env, spec: &str, extra: &[&str]) -> std::process::Output {
    let mut c = env.cmd();
    c.arg("--repo")
        .arg(&env.repo)
        .arg("dump")
        .arg(spec)
        .args(extra);
    c.output().expect("spawn cairn dump")
}

fn gnu_tar(args: &[&str]) -> String {
    if !have("tar") {
        cannot_run("GNU tar is missing");
    }
    command_out("tar", args)
}

/// A file dumps as its bytes; a directory, or the whole snapshot, as a tar
/// stream that GNU tar and bsdtar extract with contents, modes, owners, ns times,
/// symlinks, hard links, FIFOs, devices, xattrs and ACLs as they were.
#[test]
fn dump_writes_files_and_tar_streams_gnu_tar_extracts_identically() {
    let env = Env::new();
    let src = env.path("src");
    rich_source(&src);
    let deep = src.join("a-directory-name-long-enough/to-need-a-pax-path-record-because-ustar-holds-100/bytes-at-most");
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("file-with-a-long-name-too.txt"), b"deep\n").unwrap();
    std::os::unix::fs::symlink(
        deep.join("file-with-a-long-name-too.txt"),
        src.join("long-link"),
    )
    .unwrap();
    fs::write(src.join("caf\u{e9} \u{1f600}.txt"), b"not ascii\n").unwrap();
    // Sparse files that end in a hole and that are nothing but one.
    let tail = fs::File::create(src.join("sparse-tail")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&tail, &pseudo(1 << 20, 3), 0).unwrap();
    tail.set_len(6 << 20).unwrap();
    fs::File::create(src.join("all-hole"))
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let spec = |p: &str| format!("latest:{}{p}", s(&src));

    // One file: its bytes, to stdout or to a file.
    let out = dump(&env, &spec("/big"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == fs::read(src.join("big")).unwrap());
    let file = env.path("small.out");
    let out = dump(&env, &spec("/small/f07"), &["-o", s(&file)]);
    assert!(out.status.success());
    assert_eq!(
        fs::read(&file).unwrap(),
        fs::read(src.join("small/f07")).unwrap()
    );

    // The directory as tar, extracted by GNU tar as root would restore it.
    let tarball = env.path("src.tar");
    let out = dump(&env, &spec(""), &["-o", s(&tarball)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = env.path("x");
    fs::create_dir(&x).unwrap();
    gnu_tar(&[
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--same-owner",
        "-xpf",
        s(&tarball),
        "-C",
        s(&x),
    ]);
    // Sparseness too: the file with a hole is a pax sparse file.
    let diffs = compare_trees(&src, &x.join("src"), is_root());
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert_eq!(
        fs::read(x.join("src/sparse")).unwrap(),
        fs::read(src.join("sparse")).unwrap()
    );

    // bsdtar (libarchive) reads the same stream into the same tree.
    if !have("bsdtar") {
        cannot_run("bsdtar is missing (`apt install libarchive-tools`)");
    }
    let z = env.path("z");
    fs::create_dir(&z).unwrap();
    let out = Command::new("bsdtar")
        .args(["-xpf", s(&tarball), "--xattrs", "--acls", "-C", s(&z)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bsdtar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diffs = compare_trees(&src, &z.join("src"), is_root());
    assert!(diffs.is_empty(), "bsdtar: {diffs:#?}");

    // The whole snapshot: its absolute paths, relative in the stream.
    let all = env.path("all.tar");
    assert!(dump(&env, "latest", &["-o", s(&all)]).status.success());
    let listing = gnu_tar(&["-tf", s(&all)]);
    let top = s(&src).trim_start_matches('/');
    assert!(
        listing.lines().any(|l| l == format!("{top}/big")),
        "{listing}"
    );
    assert!(!listing.lines().any(|l| l.starts_with('/')), "{listing}");

    // A single file as tar keeps its metadata.
    let one = env.path("one.tar");
    assert!(
        dump(&env, &spec("/small/f06"), &["--tar", "-o", s(&one)])
            .status
            .success()
    );
    let y = env.path("y");
    fs::create_dir(&y).unwrap();
    gnu_tar(&["-xpf", s(&one), "-C", s(&y)]);
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        fs::metadata(src.join("small/f06")).unwrap(),
        fs::metadata(y.join("f06")).unwrap(),
    );
    assert_eq!(
        (a.mtime(), a.mtime_nsec(), a.len()),
        (b.mtime(), b.mtime_nsec(), b.len())
    );

    // Wrong paths are named.
    let out = dump(&env, &spec("/nope"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the snapshot"));
}

/// A damaged chunk stops the dump with an error naming the file; the bytes
/// written before it are the file's own, never others.
#[test]
fn dump_stops_at_damage_and_names_the_file() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = pseudo(4 << 20, 3);
    fs::write(src.join("victim"), &data).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let packs: Vec<_> = files_below(&env.repo.join("data"))
        .into_iter()
        .map(|r| env.repo.join("data").join(r))
        .collect();
    let biggest = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    make_writable(&env.repo);
    let mut b = fs::read(biggest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 4;
    fs::write(biggest, b).unwrap();
    let out = dump(&env, &format!("latest:{}/victim", s(&src)), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("victim") && err.contains("cairn check --read-data"),
        "{err}"
    );
    assert!(out.stdout.len() < data.len());
    assert!(
        out.stdout == data[..out.stdout.len()],
        "wrong bytes before the damage"
    );
    let out = dump(
        &env,
        &format!("latest:{}", s(&src)),
        &["-o", s(&env.path("t.tar"))],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("victim"));
}
