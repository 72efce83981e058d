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
            .env("CAIRN_PASSWORD", PASS);
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
