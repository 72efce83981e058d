//! `cairn mount` through the kernel's FUSE: what programs see through the
//! view is what was backed up, byte for byte and attribute for attribute;
//! damage gives EIO for the file it touches, never wrong bytes; a stop
//! signal unmounts.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A running `cairn mount`, unmounted when dropped.
struct Mounted {
    child: Child,
    at: PathBuf,
    log: PathBuf,
}

/// Fails the test, saying why, where FUSE cannot work.
fn require_fuse() {
    if !Path::new("/dev/fuse").exists() {
        cannot_run("/dev/fuse is missing: load the fuse kernel module (`modprobe fuse`)");
    }
    if !is_root() && !have("fusermount3") {
        cannot_run("fusermount3 is missing (`apt install fuse3`)");
    }
}

fn mounted(at: &Path) -> bool {
    let want = fs::canonicalize(at).unwrap_or_else(|_| at.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(s(&want)))
}

impl Mounted {
    fn start(env: &Env, at: &Path, extra: &[&str]) -> Mounted {
        Mounted::start_on(env, &["--repo", s(&env.repo)], &[], at, extra)
    }

    /// A mount of the repository that `repo` (global options) names, with
    /// `vars` set in its environment.
    fn start_on(
        env: &Env,
        repo: &[&str],
        vars: &[(String, String)],
        at: &Path,
        extra: &[&str],
    ) -> Mounted {
        require_fuse();
        fs::create_dir_all(at).unwrap();
        let log = env.path(&format!(
            "mount-{}.log",
            at.file_name().unwrap().to_string_lossy()
        ));
        let mut c = env.cmd();
        c.envs(vars.iter().map(|(k, v)| (k, v)))
            .args(repo)
            .arg("mount")
            .arg(at)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let mut child = c.spawn().expect("spawn cairn mount");
        let start = Instant::now();
        while !mounted(at) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "cairn mount exited {st} before mounting:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not mounted after 60 s:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mounted {
            child,
            at: at.to_path_buf(),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` and waits for the process to end: its exit code.
    fn stop(&mut self, sig: rustix::process::Signal) -> i32 {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "cairn mount still running 20 s after a stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if mounted(&self.at) {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

/// The single entry under `dir`.
fn only_entry(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every snapshot appears under `snapshots/`, `groups/` and `tags/`; what
/// `cat`, `cmp`, `stat` and `getfattr` see through the view is what was
/// backed up; many readers at once get the same bytes; nothing can be
/// written; SIGTERM unmounts and exits cleanly.
#[test]
fn mount_shows_every_snapshot_as_it_was_stored() {
    let env = Env::new();
    let src = env.path("src");
    rich_source(&src);
    env.ok(&["init"]);
    env.ok(&["backup", s(&src), "--tag", "first"]);
    let old_small = fs::read(src.join("small/f00")).unwrap();
    fs::write(src.join("small/f00"), b"changed after the first backup\n").unwrap();
    fs::write(src.join("added"), pseudo(3 << 20, 77)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    env.ok(&["backup", s(&src), "--tag", "second", "--tag", "weekly/full"]);
    std::thread::sleep(Duration::from_millis(1100));
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("note"), b"another group\n").unwrap();
    env.ok(&["backup", s(&other), "--group", "docs/other"]);

    let at = env.path("mnt");
    let mut m = Mounted::start(&env, &at, &[]);
    assert_eq!(sorted_names(&at), ["groups", "snapshots", "tags"]);
    let snaps = sorted_names(&at.join("snapshots"));
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    for n in &snaps {
        assert!(
            n.len() == 27 && n.as_bytes()[10] == b'T' && n.as_bytes()[17] == b'Z',
            "{n}"
        );
    }
    assert_eq!(
        sorted_names(&at.join("tags")),
        ["first", "second", "weekly%2Ffull"]
    );
    let groups = sorted_names(&at.join("groups"));
    assert!(groups.contains(&"docs%2Fother".to_string()), "{groups:?}");
    let src_group = groups.iter().find(|g| *g != "docs%2Fother").unwrap();
    let group_dir = at.join("groups").join(src_group);
    let entries = sorted_names(&group_dir);
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[2], "latest");
    assert_eq!(
        fs::read_link(group_dir.join("latest")).unwrap(),
        Path::new("../../snapshots").join(&snaps[1])
    );
    assert_eq!(
        fs::read_link(at.join("tags/first").join(&snaps[0])).unwrap(),
        Path::new("../../snapshots").join(&snaps[0])
    );

    // The latest snapshot of the source, through the group's link, is the
    // source: contents, types, modes, owners, ns times, symlinks, xattrs
    // and ACLs, hard links, sparseness, device numbers.
    let latest = restored(&group_dir.join("latest"), &src);
    let diffs = compare_trees(&src, &latest, true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    // The first snapshot holds the file as it was then, and not the file
    // added later.
    let first = restored(&at.join("snapshots").join(&snaps[0]), &src);
    assert_eq!(fs::read(first.join("small/f00")).unwrap(), old_small);
    assert!(!first.join("added").exists());
    assert_eq!(
        fs::read(restored(&at.join("snapshots").join(&snaps[2]), &other).join("note")).unwrap(),
        b"another group\n"
    );

    // What the usual programs see.
    command_out("cmp", &[s(&src.join("big")), s(&latest.join("big"))]);
    let cat = Command::new("cat")
        .arg(latest.join("sparse"))
        .output()
        .unwrap();
    assert!(cat.status.success());
    assert_eq!(cat.stdout, fs::read(src.join("sparse")).unwrap());
    let fmt = "%F|%a|%u|%g|%s|%h|%Y.%y|%t:%T";
    for rel in [
        "small/f05",
        "small/f06",
        "suid",
        "shared",
        "fifo",
        "link",
        "hard1",
    ] {
        let a = command_out("stat", &["-c", fmt, s(&src.join(rel))]);
        let b = command_out("stat", &["-c", fmt, s(&latest.join(rel))]);
        assert_eq!(a, b, "stat {rel}");
    }
    if is_root() {
        let a = command_out("stat", &["-c", fmt, s(&src.join("null"))]);
        let b = command_out("stat", &["-c", fmt, s(&latest.join("null"))]);
        assert_eq!(a, b, "stat of the device node");
    }
    let getfattr = |p: &Path| command_out("getfattr", &["-d", "-m", "-", "--absolute-names", s(p)]);
    for rel in ["small/f03", "small/f04"] {
        let a = getfattr(&src.join(rel));
        let b = getfattr(&latest.join(rel));
        assert_eq!(
            a.lines().skip(1).collect::<Vec<_>>(),
            b.lines().skip(1).collect::<Vec<_>>(),
            "getfattr {rel}"
        );
    }
    assert!(getfattr(&latest.join("small/f04")).contains("system.posix_acl_access"));
    assert_eq!(
        fs::metadata(latest.join("hard1")).unwrap().ino(),
        fs::metadata(latest.join("small/hard2")).unwrap().ino(),
        "hard links are one file"
    );

    // Readers at once, each through its own descriptors.
    let files = ["big", "sparse", "added", "small/f10", "big"];
    std::thread::scope(|sc| {
        for (k, rel) in files.iter().enumerate() {
            let (src, latest) = (&src, &latest);
            sc.spawn(move || {
                for round in 0..2 {
                    let got = fs::read(latest.join(rel)).unwrap();
                    assert!(
                        got == fs::read(src.join(rel)).unwrap(),
                        "reader {k} round {round}: {rel} differs"
                    );
                }
            });
        }
    });

    // Read-only.
    let e = fs::write(latest.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(30), "EROFS: {e}");
    assert!(fs::remove_file(latest.join("big")).is_err());

    // A second mount on the same point is refused before asking for
    // anything.
    let again = env.run(&["mount", s(&at)]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("is in use"), "{}", again.stderr);

    assert_eq!(m.stop(rustix::process::Signal::TERM), 0, "{}", m.log());
    assert!(!mounted(&at), "still mounted after SIGTERM");
    assert!(fs::read_dir(&at).unwrap().next().is_none());
}

/// `ls` of a directory of 200,000 entries lists every one, and `stat` of
/// any is answered; SIGINT (Ctrl-C) unmounts.
#[test]
fn mount_lists_a_directory_of_200k_entries() {
    const N: usize = 200_000;
    let env = Env::new();
    let src = env.path("src");
    let big = src.join("many");
    fs::create_dir_all(&big).unwrap();
    for i in 0..N {
        fs::File::create(big.join(format!("entry-{i:06}"))).unwrap();
    }
    fs::write(big.join("entry-123456"), b"the one with bytes\n").unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let at = env.path("mnt");
    let mut m = Mounted::start(&env, &at, &[]);
    let snap = only_entry(&at.join("snapshots"));
    let dir = restored(&snap, &big);
    let t = Instant::now();
    let names = sorted_names(&dir);
    eprintln!(
        "listed {} entries in {:.2} s",
        names.len(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(names.len(), N);
    assert_eq!(names[0], "entry-000000");
    assert_eq!(names[N - 1], format!("entry-{:06}", N - 1));
    assert_eq!(
        fs::read(dir.join("entry-123456")).unwrap(),
        b"the one with bytes\n"
    );
    assert_eq!(fs::metadata(dir.join("entry-199999")).unwrap().len(), 0);
    assert!(fs::metadata(dir.join("entry-200000")).is_err());
    assert_eq!(m.stop(rustix::process::Signal::INT), 0, "{}", m.log());
    assert!(!mounted(&at), "still mounted after SIGINT");
}

/// A damaged pack makes reads of the file whose chunk it holds fail with
/// EIO, and only that file; the log names it. Wrong bytes are never
/// returned. A mount point that is not empty is refused with the reason.
#[test]
fn mount_fails_only_the_damaged_file_and_names_it() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("good"), pseudo(3 << 20, 5)).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let before = files_below(&env.repo.join("data"));
    fs::write(src.join("bad"), pseudo(3 << 20, 6)).unwrap();
    // Snapshot names are to the second: a second apart, they sort in the
    // order they were taken.
    std::thread::sleep(Duration::from_millis(1100));
    env.ok(&["backup", s(&src)]);
    let new: Vec<PathBuf> = files_below(&env.repo.join("data"))
        .difference(&before)
        .map(|rel| env.repo.join("data").join(rel))
        .collect();
    let biggest = new
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("the second backup wrote a pack");
    make_writable(&env.repo);
    let mut bytes = fs::read(biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(biggest, bytes).unwrap();

    let full = env.path("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("keep"), b"mine").unwrap();
    let r = env.run(&["mount", s(&full)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not empty"), "{}", r.stderr);

    let at = env.path("mnt");
    let mut m = Mounted::start(&env, &at, &[]);
    let snaps = sorted_names(&at.join("snapshots"));
    let latest = restored(&at.join("snapshots").join(&snaps[1]), &src);
    assert_eq!(sorted_names(&latest), ["bad", "good"]);
    assert_eq!(fs::read(latest.join("good")).unwrap(), pseudo(3 << 20, 5));
    let e = fs::read(latest.join("bad")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(5), "EIO: {e}");
    // Read through `cat` too: it fails rather than print other bytes.
    let cat = Command::new("cat")
        .arg(latest.join("bad"))
        .output()
        .unwrap();
    assert!(!cat.status.success());
    assert!(cat.stdout.len() < 3 << 20);
    assert_eq!(&cat.stdout[..], &pseudo(3 << 20, 6)[..cat.stdout.len()]);
    // The other file, and the older snapshot, still read.
    let older = restored(&at.join("snapshots").join(&snaps[0]), &src);
    assert_eq!(fs::read(older.join("good")).unwrap(), pseudo(3 << 20, 5));
    assert_eq!(m.stop(rustix::process::Signal::TERM), 0);
    let log = m.log();
    assert!(
        log.contains(&format!(
            "{}/bad: ",
            latest.strip_prefix(&at).unwrap().display()
        )),
        "{log}"
    );
    assert!(log.contains("cairn check --read-data"), "{log}");
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    files_below(dir).into_iter().map(|r| dir.join(r)).collect()
}

/// With `--disk-cache`, what one mount read is read by the next from the
/// local disk, even with the repository's packs gone; the cache holds no
/// plaintext, drops a damaged record instead of serving it, and stays
/// within its size.
#[test]
fn mount_disk_cache_serves_later_mounts_and_stays_bounded() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = pseudo(3 << 20, 11);
    fs::write(src.join("a"), &data).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let cache = env.path("cache");
    let at = env.path("mnt");
    let args = ["--disk-cache", s(&cache), "--disk-cache-size", "64MiB"];
    // Reads the file through whatever is mounted at `at`.
    let read = |_: &Mounted| {
        let snap = only_entry(&at.join("snapshots"));
        fs::read(restored(&snap, &src).join("a"))
    };
    let mut m = Mounted::start(&env, &at, &args);
    assert!(read(&m).unwrap() == data);
    assert_eq!(m.stop(rustix::process::Signal::TERM), 0);
    let kept = cache_files(&cache);
    assert!(!kept.is_empty(), "nothing cached");
    // No 64-byte piece of the file, taken every 4 KiB, is in the cache.
    let pieces: std::collections::HashSet<&[u8]> = data.chunks(4096).map(|c| &c[..64]).collect();
    for f in &kept {
        let b = fs::read(f).unwrap();
        assert!(
            !b.windows(64).any(|w| pieces.contains(w)),
            "{} holds plaintext",
            f.display()
        );
    }

    // The packs gone: the cache alone serves the file.
    make_writable(&env.repo);
    fs::rename(env.repo.join("data"), env.path("data-away")).unwrap();
    fs::create_dir(env.repo.join("data")).unwrap();
    let mut m = Mounted::start(&env, &at, &args);
    assert!(read(&m).unwrap() == data, "not served from the disk cache");
    assert_eq!(m.stop(rustix::process::Signal::TERM), 0);

    // Damaged cache records are not served: with the packs gone too, the
    // read fails; the records are dropped.
    for f in &kept {
        let mut b = fs::read(f).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        fs::write(f, b).unwrap();
    }
    let mut m = Mounted::start(&env, &at, &args);
    let e = read(&m).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(5), "EIO: {e}");
    assert_eq!(m.stop(rustix::process::Signal::TERM), 0);
    assert!(
        cache_files(&cache).len() < kept.len(),
        "damaged records kept"
    );

    // The packs back, and a cache of 1 MiB: the read works and the cache
    // stays within its bound.
    fs::remove_dir(env.repo.join("data")).unwrap();
    fs::rename(env.path("data-away"), env.repo.join("data")).unwrap();
    let mut m = Mounted::start(
        &env,
        &at,
        &["--disk-cache", s(&cache), "--disk-cache-size", "1MiB"],
    );
    assert!(read(&m).unwrap() == data);
    assert_eq!(m.stop(rustix::process::Signal::TERM), 0);
    let held: u64 = cache_files(&cache)
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert!(held <= 1 << 20, "{held} bytes cached");
}

/// The mount works on a box over HTTPS as on a local repository.
#[test]
fn mount_over_the_box() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let data = pseudo(5 << 20, 21);
    fs::write(src.join("d/file"), &data).unwrap();
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let b = crate::https::start_box(&env, 0, "mount");
    let admin = crate::https::make_token(&env, "owner", "admin", None);
    let url = b.url();
    let at = env.path("mnt");
    let mut m = Mounted::start_on(
        &env,
        &[
            "--repo",
            &url,
            "--token-file",
            s(&admin),
            "--server-fingerprint",
            &b.fingerprint,
        ],
        &[],
        &at,
        &[],
    );
    let snap = only_entry(&at.join("snapshots"));
    assert!(fs::read(restored(&snap, &src).join("d/file")).unwrap() == data);
    assert_eq!(m.stop(rustix::process::Signal::TERM), 0, "{}", m.log());
}

/// Contents of a mount of a remote repository: the snapshot of a tree
/// with a file larger than the read-ahead, read whole and at an offset.
fn remote_mount_reads(src: &Path, m: &Mounted) {
    let snap = only_entry(&m.at.join("snapshots"));
    let got = restored(&snap, src);
    let diffs = compare_trees(src, &got, true);
    assert!(diffs.is_empty(), "{diffs:?}\n{}", m.log());
    let f = fs::File::open(got.join("d/big")).unwrap();
    let mut tail = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, (11 << 20) + 7).unwrap();
    assert!(tail[..] == fs::read(src.join("d/big")).unwrap()[(11 << 20) + 7..][..4096]);
}

fn remote_tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/big"), pseudo(12 << 20, 23)).unwrap();
    fs::write(src.join("d/small"), b"small file\n").unwrap();
    std::os::unix::fs::symlink("small", src.join("d/link")).unwrap();
    src
}

/// The mount works on a box over SSH (`cairn serve --stdio` run by the
/// owner's login) as on a local repository.
#[test]
fn mount_over_ssh() {
    let env = Env::new();
    let src = remote_tree(&env);
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let server = crate::ssh::sshd(env.dir.path(), None);
    let remote = format!(
        "ssh://{}@127.0.0.1:{}{}",
        crate::ssh::user(),
        server.port,
        s(&env.repo)
    );
    let vars = [
        ("CAIRN_SSH".to_string(), crate::ssh::ssh_command(&server)),
        (
            "CAIRN_REMOTE_CAIRN".to_string(),
            env!("CARGO_BIN_EXE_cairn").to_string(),
        ),
    ];
    let at = env.path("mnt");
    let mut m = Mounted::start_on(&env, &["--repo", &remote], &vars, &at, &[]);
    remote_mount_reads(&src, &m);
    assert_eq!(m.stop(rustix::process::Signal::INT), 0, "{}", m.log());
}

/// The mount works on a repository in an S3 bucket (Garage on loopback).
#[test]
fn mount_on_s3() {
    let env = Env::new();
    let src = remote_tree(&env);
    let g = cairn_testkit::garage::Garage::start(1, "mounted");
    let url = "s3://mounted/repo";
    crate::s3::cairn_s3(&env, &g, 0, &["--repo", url, "init"]).expect(0);
    crate::s3::cairn_s3(&env, &g, 0, &["--repo", url, "backup", s(&src)]).expect(0);
    let at = env.path("mnt");
    let mut m = Mounted::start_on(&env, &["--repo", url], &g.env(0), &at, &[]);
    remote_mount_reads(&src, &m);
    assert_eq!(m.stop(rustix::process::Signal::TERM), 0, "{}", m.log());
}
