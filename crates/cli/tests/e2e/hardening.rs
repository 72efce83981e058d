//! Defects a new user or an attacker meets first: a backup of `/`, a
//! backup that would hold nothing, a dry run on a fresh machine, an `init`
//! rerun after a crash, damaged keys and local security state.

use std::fs;
use std::path::Path;

use crate::util::*;

fn snapshot_count(env: &Env) -> usize {
    json(&env.ok(&["snapshots", "--json"]))
        .as_array()
        .expect("snapshots --json gives an array")
        .len()
}

/// `/` is a source like any other: the snapshot holds what it names (here
/// narrowed by excludes to two files of `/etc`), and restores it.
#[test]
fn backup_of_root_holds_what_it_names() {
    let env = Env::new();
    env.ok(&["init"]);
    for extra in [&[][..], &["--one-file-system"][..]] {
        let mut args = vec![
            "backup",
            "--json",
            "--exclude",
            "/*",
            "--exclude",
            "!/etc/",
            "--exclude",
            "/etc/*",
            "--exclude",
            "!/etc/passwd",
            "--exclude",
            "!/etc/group",
        ];
        args.extend_from_slice(extra);
        args.push("/");
        let v = json(&env.ok(&args));
        assert_eq!(
            v["new_files"].as_u64().unwrap() + v["unchanged_files"].as_u64().unwrap(),
            2,
            "{v:#}"
        );
        let listed = json(&env.ok(&["ls", "--json", "latest"]));
        let paths: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["/etc", "/etc/group", "/etc/passwd"], "{extra:?}");
    }
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    for f in ["passwd", "group"] {
        assert_eq!(
            fs::read(dest.join("etc").join(f)).unwrap(),
            fs::read(Path::new("/etc").join(f)).unwrap(),
            "/etc/{f}"
        );
    }
}

/// A backup whose sources have entries but whose snapshot would hold none
/// fails and writes no snapshot.
#[test]
fn backup_that_would_hold_nothing_fails() {
    let env = Env::new();
    env.ok(&["init"]);
    let r = env.run(&["backup", "--exclude", "/*", "/"]).expect(2);
    assert!(r.stderr.contains("nothing to save"), "{}", r.stderr);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    let r = env
        .run(&["backup", "--exclude", "a", "--dry-run", s(&src)])
        .expect(0);
    assert!(r.stdout.contains("dry run"), "{}", r.stdout);
    // The source directory itself is an entry: an empty folder is saved.
    env.ok(&["backup", "--exclude", "a", s(&src)]);
    assert_eq!(snapshot_count(&env), 1);
    let r = env
        .run(&["backup", "--exclude", "/*", "--dry-run", "/"])
        .expect(2);
    assert!(r.stderr.contains("nothing to save"), "{}", r.stderr);
    assert_eq!(snapshot_count(&env), 1);
}

/// A dry run into the default repository on a fresh machine creates no
/// repository and no key, and still says what a backup would add.
#[test]
fn dry_run_on_a_fresh_machine_creates_nothing() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), pseudo(300_000, 9)).unwrap();
    let mut c = env.cmd();
    c.args(["backup", "--dry-run", "--json", s(&src)]);
    let r = run(c).expect(0);
    let v = json(&r.stdout);
    assert!(v["snapshot"].is_null(), "{v:#}");
    assert_eq!(v["new_files"], 1, "{v:#}");
    assert!(v["raw_bytes_added"].as_u64().unwrap() >= 300_000, "{v:#}");
    let data = env.home.join(".local/share/cairn");
    assert!(!data.join("repo").exists(), "a repository was created");
    let keys = env.home.join(".config/cairn/keys");
    assert!(!keys.exists(), "a key was written");
}

/// `init` rerun after a crash that left the layout (and a key) but no
/// config succeeds; a directory holding anything else is still refused.
#[test]
fn init_reruns_after_a_crash_before_the_config() {
    let env = Env::new();
    env.ok(&["init"]);
    fs::remove_file(env.repo.join("config")).unwrap();
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    env.ok(&["backup", s(&src)]);
    env.ok(&["check", "--read-data"]);

    let other = env.path("other");
    fs::create_dir_all(other.join("garbage")).unwrap();
    fs::write(other.join("photo.jpg"), b"mine").unwrap();
    let mut c = env.cmd();
    c.args(["--repo", s(&other), "init"]);
    let r = run(c).expect(2);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
    assert_eq!(fs::read(other.join("photo.jpg")).unwrap(), b"mine");
}

/// A stored key that cannot be decoded is named, not reported as a wrong
/// passphrase.
#[test]
fn damaged_key_is_named_not_taken_for_a_wrong_passphrase() {
    let env = Env::new();
    env.ok(&["init"]);
    let keys: Vec<_> = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1);
    let mut b = fs::read(&keys[0]).unwrap();
    b.truncate(20);
    fs::write(&keys[0], &b).unwrap();
    let r = env.run(&["snapshots"]).expect(3);
    let name = keys[0].file_name().unwrap().to_str().unwrap();
    assert!(r.stderr.contains(&format!("key {name}")), "{}", r.stderr);
    assert!(!r.stderr.contains("wrong passphrase"), "{}", r.stderr);
}

/// A damaged receipt stops retention, naming it: falling back to the time
/// a snapshot claims would let a source decide what retention removes.
#[test]
fn damaged_receipt_stops_retention() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    env.ok(&["backup", s(&src)]);
    fs::write(src.join("f"), b"y").unwrap();
    env.ok(&["backup", s(&src)]);
    let id = json(&env.ok(&["snapshots", "--json"]))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(env.repo.join("receipts").join(&id), b"not a receipt").unwrap();
    let r = env.run(&["forget", "--keep-last", "1"]).expect(3);
    assert!(
        r.stderr.contains(&format!("receipt {id} is damaged")),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot_count(&env), 2);
    fs::remove_file(env.repo.join("receipts").join(&id)).unwrap();
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(snapshot_count(&env), 1);
}
