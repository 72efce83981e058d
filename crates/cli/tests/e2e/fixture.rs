//! The committed format-v1 repository must stay readable by every later
//! version (see `tests/fixtures/README.md`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::util::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    // `sha256sum` is what made the expectation; use it for the check too.
    let mut c = std::process::Command::new("sha256sum");
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("sha256sum");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

#[test]
fn repo_v1_still_reads() {
    let env = Env::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    copy_dir(&fixtures.join("repo-v1"), &env.repo);
    let mut cmd = env.cmd();
    cmd.env("CAIRN_PASSWORD", "fixture")
        .arg("--repo")
        .arg(&env.repo)
        .args(["snapshots", "--json"]);
    let out = run(cmd).expect(0).stdout;
    let snaps: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["group"], "fixture");
    assert_eq!(snaps[0]["tags"][0], "fixture");

    let dest = env.path("dest");
    let mut cmd = env.cmd();
    cmd.env("CAIRN_PASSWORD", "fixture")
        .arg("--repo")
        .arg(&env.repo)
        .args(["restore", "latest", s(&dest)]);
    run(cmd).expect(0);
    let root = dest.join("tmp/cairn-fixture-src");
    let expected = std::fs::read_to_string(fixtures.join("repo-v1.expected")).unwrap();
    let mut seen = 0;
    for line in expected.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let (path, kind, mode, size, mtime, hash) = (f[0], f[1], f[2], f[3], f[4], f[5]);
        let p = root.join(path);
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mt = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
        assert_eq!(mt.to_string(), mtime, "{path} mtime");
        match kind {
            "directory" => assert!(m.is_dir(), "{path}"),
            "symbolic link" => {
                assert_eq!(std::fs::read_link(&p).unwrap().to_str().unwrap(), hash)
            }
            _ => {
                assert!(m.is_file(), "{path}");
                assert_eq!(format!("{:o}", m.mode() & 0o7777), mode, "{path} mode");
                assert_eq!(m.len().to_string(), size, "{path} size");
                assert_eq!(sha256_hex(&std::fs::read(&p).unwrap()), hash, "{path}");
            }
        }
        seen += 1;
    }
    assert_eq!(seen, 8);
    let mut cmd = env.cmd();
    cmd.env("CAIRN_PASSWORD", "fixture")
        .arg("--repo")
        .arg(&env.repo)
        .args(["check", "--read-data"]);
    run(cmd).expect(0);
}
