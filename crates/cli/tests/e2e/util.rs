//! Test harness: an isolated HOME per test, a runner that prints
//! everything on failure, and a restore verifier.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PASS: &str = "correct horse battery staple";

/// An isolated environment: its own HOME, XDG dirs and repository path.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub repo: PathBuf,
}

/// The result of one run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub cmdline: String,
}

impl Run {
    /// Panics with the whole story unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Run {
        if self.code != code {
            panic!(
                "`{}` exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
                self.cmdline, self.code, self.stdout, self.stderr
            );
        }
        self
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("cairn-e2e-")
            .tempdir()
            .expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let repo = dir.path().join("repo");
        Env { dir, home, repo }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A command with the environment isolated and the passphrase set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("CAIRN_PASSWORD", PASS);
        // `CAIRN_INDEX_MEMORY=0 cargo nextest run` runs every test with
        // the index and the in-flight set on disk.
        if let Some(v) = std::env::var_os("CAIRN_INDEX_MEMORY") {
            c.env("CAIRN_INDEX_MEMORY", v);
        }
        c
    }

    /// Runs cairn with `--repo <env repo>` prepended.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut c = self.cmd();
        c.arg("--repo").arg(&self.repo).args(args);
        run(c)
    }

    /// Runs and requires exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).expect(0).stdout
    }

    /// Writes a put-only key without passphrase to `name` in the test
    /// directory (for a source) and returns its path.
    pub fn put_only_key(&self, name: &str) -> PathBuf {
        let key = self.path(name);
        self.ok(&[
            "key",
            "add",
            "--role",
            "put-only",
            "--no-password",
            "-o",
            s(&key),
        ]);
        key
    }
}

/// Runs a prepared command.
pub fn run(mut c: Command) -> Run {
    let cmdline = format!("{c:?}");
    let out: Output = c.output().expect("spawn cairn");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cmdline,
    }
}

/// `p` as a string for command lines.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// Where restore puts an absolute source path under `dest`.
pub fn restored(dest: &Path, src: &Path) -> PathBuf {
    dest.join(src.strip_prefix("/").unwrap())
}

fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(list) = xattr_list(p) else {
        return out;
    };
    for name in list {
        if [
            &b"user."[..],
            b"trusted.",
            b"security.",
            b"system.posix_acl_",
        ]
        .iter()
        .any(|pre| name.starts_with(pre))
        {
            let v = xattr_get(p, &name).unwrap_or_default();
            out.insert(name, v);
        }
    }
    out
}

fn xattr_list(p: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let n = rustix::fs::llistxattr_query(p)?;
    let mut buf = vec![0u8; n + 16];
    let n = rustix::fs::llistxattr(p, &mut buf[..])?;
    buf.truncate(n);
    Ok(buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_vec())
        .collect())
}

fn xattr_get(p: &Path, name: &[u8]) -> std::io::Result<Vec<u8>> {
    let n = rustix::fs::lgetxattr_query(p, OsStr::from_bytes(name))?;
    let mut v = vec![0u8; n];
    let n = rustix::fs::lgetxattr(p, OsStr::from_bytes(name), &mut v[..])?;
    v.truncate(n);
    Ok(v)
}

fn walk(root: &Path) -> BTreeMap<Vec<u8>, std::fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    out.insert(Vec::new(), std::fs::symlink_metadata(root).unwrap());
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let md = std::fs::symlink_metadata(root.join(&r)).unwrap();
            if md.is_dir() {
                stack.push(r.clone());
            }
            out.insert(r.as_os_str().as_bytes().to_vec(), md);
        }
    }
    out
}

/// Compares a restored tree with its source like `verify-restore.py`:
/// content, type, mode, owner, ns mtimes, symlink targets, xattrs
/// (including ACLs), hardlink groups, sparseness, device numbers.
/// Returns one line per difference.
pub fn compare_trees(src: &Path, dst: &Path, check_owner: bool) -> Vec<String> {
    let a = walk(src);
    if !dst.is_dir() {
        return vec![format!("{} missing", dst.display())];
    }
    let b = walk(dst);
    let mut diffs = Vec::new();
    let mut groups: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    for (rel, m) in &a {
        let name = String::from_utf8_lossy(rel).into_owned();
        let Some(n) = b.get(rel) else {
            diffs.push(format!("missing {name}"));
            continue;
        };
        let (ft, nt) = (m.file_type(), n.file_type());
        if format!("{ft:?}") != format!("{nt:?}") {
            diffs.push(format!("type {name}"));
            continue;
        }
        let sp = src.join(OsStr::from_bytes(rel));
        let dp = dst.join(OsStr::from_bytes(rel));
        if !ft.is_symlink() && m.mode() & 0o7777 != n.mode() & 0o7777 {
            diffs.push(format!(
                "mode {name} {:o} -> {:o}",
                m.mode() & 0o7777,
                n.mode() & 0o7777
            ));
        }
        if check_owner && (m.uid(), m.gid()) != (n.uid(), n.gid()) {
            diffs.push(format!("owner {name}"));
        }
        if (m.mtime(), m.mtime_nsec()) != (n.mtime(), n.mtime_nsec()) {
            diffs.push(format!(
                "mtime {name} {}.{} -> {}.{}",
                m.mtime(),
                m.mtime_nsec(),
                n.mtime(),
                n.mtime_nsec()
            ));
        }
        if ft.is_symlink() {
            if std::fs::read_link(&sp).unwrap() != std::fs::read_link(&dp).unwrap() {
                diffs.push(format!("symlink target {name}"));
            }
        } else if xattrs(&sp) != xattrs(&dp) {
            diffs.push(format!(
                "xattrs {name}: {:?} -> {:?}",
                xattrs(&sp).keys().collect::<Vec<_>>(),
                xattrs(&dp).keys().collect::<Vec<_>>()
            ));
        }
        if (ft.is_char_device() || ft.is_block_device()) && m.rdev() != n.rdev() {
            diffs.push(format!("rdev {name}"));
        }
        if ft.is_file() {
            if m.len() != n.len() {
                diffs.push(format!("size {name} {} -> {}", m.len(), n.len()));
            } else if std::fs::read(&sp).unwrap() != std::fs::read(&dp).unwrap() {
                diffs.push(format!("content {name}"));
            }
            if m.nlink() > 1 {
                groups
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            if m.len() >= 1 << 20
                && m.blocks() * 512 < m.len() / 2
                && n.blocks() * 512 >= n.len() / 2
            {
                diffs.push(format!(
                    "sparse {name}: {} of {} allocated",
                    n.blocks() * 512,
                    n.len()
                ));
            }
        }
    }
    for rel in b.keys() {
        if !a.contains_key(rel) {
            diffs.push(format!("extra {}", String::from_utf8_lossy(rel)));
        }
    }
    for names in groups.values().filter(|g| g.len() > 1) {
        let inos: std::collections::BTreeSet<_> = names
            .iter()
            .filter_map(|r| b.get(r).map(|m| (m.dev(), m.ino())))
            .collect();
        if inos.len() != 1 {
            diffs.push(format!(
                "hardlink group {:?}",
                names
                    .iter()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect::<Vec<_>>()
            ));
        }
    }
    diffs
}

/// Deterministic pseudo-random bytes.
pub fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Whether the tests run as root (owners, devices, mounts are testable).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

// ---------------------------------------------------------------------------
// Helpers for fidelity.rs and features.rs (appended; keep this block
// separate from the shared harness above).
// ---------------------------------------------------------------------------

/// Sets a path's access and modification times (seconds, nanoseconds)
/// without following a symlink.
pub fn set_mtime(p: &Path, sec: i64, nsec: u32) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec.into(),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// Parses a command's stdout as one JSON document.
pub fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// Every entry below `root` (not `root` itself), as `/`-joined relative
/// paths (lossy for non-UTF-8 names), directories included.
pub fn entries_below(root: &Path) -> std::collections::BTreeSet<String> {
    walk(root)
        .into_keys()
        .filter(|k| !k.is_empty())
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect()
}

/// Every file below `dir` (recursively), relative to it.
pub fn files_below(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    if !dir.exists() {
        return Default::default();
    }
    walk(dir)
        .into_iter()
        .filter(|(_, m)| !m.is_dir())
        .map(|(k, _)| PathBuf::from(OsStr::from_bytes(&k)))
        .collect()
}

/// Copies a tree with all its metadata (`cp -a`), to keep a source state.
pub fn copy_tree(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("spawn cp");
    assert!(st.success(), "cp -a {} {}", src.display(), dst.display());
}

/// Makes every directory below `root` writable by its owner, so that a
/// non-root test can delete trees holding read-only directories.
pub fn make_writable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (rel, m) in walk(root) {
        if m.is_dir() {
            let p = root.join(OsStr::from_bytes(&rel));
            let _ = std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o700),
            );
        }
    }
}

/// Whether a program can be found on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(program)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

/// Runs a prepared command, killing it after `limit`: for commands that
/// might hang. A killed command returns code -1 and says so in stderr.
pub fn run_limited(mut c: Command, limit: std::time::Duration) -> Run {
    use std::io::Read;
    use std::process::Stdio;
    let cmdline = format!("{c:?}");
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = std::time::Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let mut stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    if timed_out {
        stderr.push_str(&format!("\n[killed: still running after {limit:?}]"));
    }
    Run {
        code: if timed_out {
            -1
        } else {
            status.code().unwrap_or(-1)
        },
        stdout,
        stderr,
        cmdline,
    }
}

impl Env {
    /// Like [`Env::run`], but kills cairn after `secs` seconds.
    pub fn run_limited(&self, args: &[&str], secs: u64) -> Run {
        let mut c = self.cmd();
        c.arg("--repo").arg(&self.repo).args(args);
        run_limited(c, std::time::Duration::from_secs(secs))
    }
}

/// Fails the test because part of it cannot run on this machine (no
/// root, a missing program, a filesystem without holes): a test that
/// cannot run must never pass unseen. `.ci/run` runs as root and installs
/// every program the tests use.
pub fn cannot_run(what: &str) -> ! {
    panic!(
        "this test cannot run here: {what}; run the tests as root with the programs .ci/run installs"
    )
}

/// Bytes of pack files in a local repository (what was stored).
pub fn pack_bytes(repo: &Path) -> u64 {
    fn walk(d: &Path, sum: &mut u64) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                walk(&e.path(), sum);
            } else {
                *sum += md.len();
            }
        }
    }
    let mut sum = 0;
    walk(&repo.join("data"), &mut sum);
    sum
}

/// A source with every kind of entry and metadata a view of a snapshot
/// has to show: a multi-chunk file, small files, a hard link, symlinks, a
/// FIFO, a sparse file, setuid and setgid bits, a user xattr, an ACL, and
/// as root a device node and another owner; ns mtimes.
pub fn rich_source(src: &Path) {
    std::fs::create_dir_all(src.join("small")).unwrap();
    std::fs::write(src.join("big"), pseudo(12 << 20, 1)).unwrap();
    for i in 0..40 {
        std::fs::write(
            src.join(format!("small/f{i:02}")),
            pseudo(100 + i * 977, i as u64 + 7),
        )
        .unwrap();
    }
    std::fs::write(src.join("hard1"), b"one file, two names\n").unwrap();
    std::fs::hard_link(src.join("hard1"), src.join("small/hard2")).unwrap();
    std::os::unix::fs::symlink("small/f01", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("dangling")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    // A hole of 8 MiB, then data.
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &pseudo(1 << 20, 9), 8 << 20).unwrap();
    drop(f);
    std::fs::write(src.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("suid"),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o4755),
    )
    .unwrap();
    std::fs::create_dir(src.join("shared")).unwrap();
    std::fs::set_permissions(
        src.join("shared"),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o2775),
    )
    .unwrap();
    let out = std::process::Command::new("setfattr")
        .args(["-n", "user.note", "-v", "kept", s(&src.join("small/f03"))])
        .output();
    if !out.is_ok_and(|o| o.status.success()) {
        cannot_run("setfattr (package attr) on a filesystem with user xattrs");
    }
    let out = std::process::Command::new("setfacl")
        .args(["-m", "u:1234:rw,g:5678:r", s(&src.join("small/f04"))])
        .output();
    if !out.is_ok_and(|o| o.status.success()) {
        cannot_run("setfacl (package acl) on a filesystem with ACLs");
    }
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        std::os::unix::fs::chown(src.join("small/f05"), Some(1234), Some(5678)).unwrap();
    }
    set_mtime(&src.join("small/f06"), 1_234_567_890, 123_456_789);
    set_mtime(&src.join("small"), 1_500_000_000, 987_654_321);
}

/// Runs `program` and requires success: its stdout.
pub fn command_out(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh ext4 on a loop device, mounted; unmounted when dropped.
pub struct LoopDisk {
    pub mnt: PathBuf,
}

impl LoopDisk {
    /// A disk of `size` (as `truncate -s` takes it), its image and mount
    /// point in `dir`.
    pub fn new(dir: &Path, size: &str) -> LoopDisk {
        let img = dir.join("disk.img");
        let mnt = dir.join("newdisk");
        std::fs::create_dir_all(&mnt).unwrap();
        let ok = |c: &mut Command| {
            let out = c.output().unwrap();
            if !out.status.success() {
                cannot_run(&format!(
                    "{c:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        };
        ok(Command::new("truncate").args(["-s", size, s(&img)]));
        ok(Command::new("mkfs.ext4").args(["-q", "-F", s(&img)]));
        ok(Command::new("mount").args(["-o", "loop", s(&img), s(&mnt)]));
        LoopDisk { mnt }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}
