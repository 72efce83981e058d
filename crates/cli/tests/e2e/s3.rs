//! Repositories on S3: a real Garage cluster on loopback (the `garage`
//! binary is installed by `.ci/run`), and the storage conformance suite
//! run against every backend: memory, local, the box over HTTPS and
//! SSH, S3.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_storage::{LocalStorage, MemoryStorage, S3Storage, Storage};
use cairn_testkit::conformance::{self, Options};
use cairn_testkit::garage::Garage;

use crate::util::*;

/// A `cairn` command reaching `s3://` through node `node` of `g`.
pub(crate) fn cairn_s3(env: &Env, g: &Garage, node: usize, args: &[&str]) -> Run {
    let mut c = env.cmd();
    for (k, v) in g.env(node) {
        c.env(k, v);
    }
    c.args(args);
    run(c)
}

fn tree(src: &Path, seed: u64) {
    fs::create_dir_all(src.join("docs/deep")).unwrap();
    fs::write(src.join("big.bin"), pseudo(9 << 20, seed)).unwrap();
    fs::write(src.join("docs/a.txt"), b"hello from a").unwrap();
    fs::write(src.join("docs/deep/b.bin"), pseudo(300_000, seed + 1)).unwrap();
    for i in 0..40 {
        fs::write(
            src.join(format!("docs/small-{i}")),
            pseudo(1000 + i, seed + i as u64),
        )
        .unwrap();
    }
}

#[test]
fn conformance_memory_and_local() {
    let d = tempfile::tempdir().unwrap();
    let mem = MemoryStorage::new(d.path().join("staging"));
    conformance::run(&mem, Options::default());
    let local = LocalStorage::new(d.path().join("repo"));
    local.create_layout().unwrap();
    conformance::run(&local, Options::default());
}

/// Garage with the multipart threshold lowered so that the big object
/// goes in parts, and more objects than one listing page holds.
#[test]
fn conformance_s3_on_garage() {
    let g = Garage::start(1, "conformance");
    let d = tempfile::tempdir().unwrap();
    let st = S3Storage::with_config(g.config(0, "s3://conformance/some/prefix"), d.path())
        .unwrap()
        .with_multipart(6 << 20, 5 << 20);
    conformance::run(
        &st,
        Options {
            many: 1100,
            big: 13 << 20,
        },
    );
    // Nothing of the suite is left, and nothing escaped the prefix.
    let root = S3Storage::with_config(g.config(0, "s3://conformance"), d.path()).unwrap();
    for kind in [
        cairn_storage::Kind::Pack,
        cairn_storage::Kind::Index,
        cairn_storage::Kind::Key,
    ] {
        assert!(
            root.list(kind).unwrap().is_empty(),
            "{kind:?} left at the root"
        );
        assert!(st.list(kind).unwrap().is_empty(), "{kind:?} left");
    }
}

#[test]
fn conformance_box_over_https() {
    let env = Env::new();
    env.ok(&["init"]);
    let b = crate::https::start_box(&env, 0, "conformance");
    let token = crate::https::make_token(&env, "admin", "admin", None);
    let st = cairn_remote::open::open(
        &b.url(),
        &access(
            &env,
            Some(fs::read_to_string(&token).unwrap()),
            Some(b.fingerprint.clone()),
        ),
    )
    .unwrap();
    conformance::run(&*st, Options::default());
}

#[test]
fn conformance_box_over_ssh() {
    let env = Env::new();
    env.ok(&["init"]);
    let server = crate::ssh::sshd(env.dir.path(), None);
    let mut a = access(&env, None, None);
    a.ssh = crate::ssh::ssh_command(&server);
    a.remote_cairn = env!("CARGO_BIN_EXE_cairn").to_string();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        crate::ssh::user(),
        server.port,
        s(&env.repo)
    );
    let st: Arc<dyn Storage> = cairn_remote::open::open(&url, &a).unwrap();
    conformance::run(&*st, Options::default());
}

fn access(
    env: &Env,
    token: Option<String>,
    fingerprint: Option<String>,
) -> cairn_remote::open::Access {
    cairn_remote::open::Access {
        token: token.map(|t| t.trim().to_string()),
        fingerprint,
        known_servers: env.path("known"),
        staging: env.path("staging"),
        retry_for: Duration::from_secs(5),
        ssh: "ssh".into(),
        remote_cairn: "cairn".into(),
    }
}

/// Three nodes, replication factor 3: a node dies after the backup and
/// the repository reads and writes on; it comes back and all is whole.
#[test]
fn three_node_garage_survives_a_dead_node() {
    let mut g = Garage::start(3, "cairn");
    let env = Env::new();
    let repo = "s3://cairn/home";
    let src = env.path("src");
    tree(&src, 1);
    cairn_s3(&env, &g, 0, &["--repo", repo, "init"]).expect(0);
    cairn_s3(&env, &g, 0, &["--repo", repo, "backup", s(&src)]).expect(0);
    g.kill(2);
    let dest = env.path("dest");
    cairn_s3(
        &env,
        &g,
        0,
        &["--repo", repo, "restore", "latest", s(&dest)],
    )
    .expect(0);
    let problems = compare_trees(&src, &restored(&dest, &src), true);
    assert!(problems.is_empty(), "{problems:?}");
    cairn_s3(&env, &g, 1, &["--repo", repo, "check", "--read-data"]).expect(0);
    fs::write(src.join("docs/a.txt"), b"changed while a node was down").unwrap();
    fs::write(src.join("new.bin"), pseudo(2 << 20, 77)).unwrap();
    cairn_s3(&env, &g, 0, &["--repo", repo, "backup", s(&src)]).expect(0);
    g.restart(2);
    cairn_s3(&env, &g, 2, &["--repo", repo, "check", "--read-data"]).expect(0);
    let listed = cairn_s3(&env, &g, 2, &["--repo", repo, "snapshots", "--json"]).expect(0);
    assert_eq!(json(&listed.stdout).as_array().unwrap().len(), 2);
    let dest2 = env.path("dest2");
    cairn_s3(
        &env,
        &g,
        2,
        &["--repo", repo, "restore", "latest", s(&dest2)],
    )
    .expect(0);
    let problems = compare_trees(&src, &restored(&dest2, &src), true);
    assert!(problems.is_empty(), "{problems:?}");
    // The other commands, through the same storage.
    let snaps = json(&listed.stdout);
    let (a, b) = (
        snaps[0]["id"].as_str().unwrap().to_string(),
        snaps[1]["id"].as_str().unwrap().to_string(),
    );
    let ls = cairn_s3(&env, &g, 1, &["--repo", repo, "ls", "latest"]).expect(0);
    assert!(ls.stdout.contains("new.bin"), "{}", ls.stdout);
    let diff = cairn_s3(&env, &g, 1, &["--repo", repo, "diff", &a[..12], &b[..12]]).expect(0);
    assert!(diff.stdout.contains("a.txt"), "{}", diff.stdout);
    cairn_s3(&env, &g, 1, &["--repo", repo, "stats"]).expect(0);
    cairn_s3(&env, &g, 1, &["--repo", repo, "repair", "index"]).expect(0);
    cairn_s3(&env, &g, 1, &["--repo", repo, "key", "list"]).expect(0);
    cairn_s3(&env, &g, 1, &["--repo", repo, "check"]).expect(0);
}

/// Wrong credentials, a missing bucket, an endpoint that is down: a
/// clear error naming what to fix, and nothing created.
#[test]
fn s3_faults_are_named() {
    let g = Garage::start(1, "faults");
    let env = Env::new();
    let src = env.path("src");
    tree(&src, 2);
    let with = |vars: &[(&str, String)], args: &[&str]| {
        let mut c = env.cmd();
        for (k, v) in g.env(0) {
            c.env(k, v);
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c.args(args);
        run(c)
    };
    let r = with(
        &[("AWS_SECRET_ACCESS_KEY", "0".repeat(64))],
        &["--repo", "s3://faults/x", "init"],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("AWS_SECRET_ACCESS_KEY"), "{}", r.stderr);
    let r = with(&[], &["--repo", "s3://no-such-bucket/x", "init"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("no-such-bucket") && r.stderr.contains("does not exist"),
        "{}",
        r.stderr
    );
    let down = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let r = with(
        &[("AWS_ENDPOINT_URL", down.clone())],
        &["--repo", "s3://faults/x", "init"],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(&down), "{}", r.stderr);
    let r = with(
        &[
            ("AWS_ACCESS_KEY_ID", String::new()),
            ("AWS_SECRET_ACCESS_KEY", String::new()),
        ],
        &["--repo", "s3://faults/x", "init"],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no S3 credentials"), "{}", r.stderr);
    // None of it left anything in the bucket; a good init then works.
    let st = S3Storage::with_config(g.config(0, "s3://faults"), &env.path("staging")).unwrap();
    for kind in [cairn_storage::Kind::Key, cairn_storage::Kind::Config] {
        assert!(st.list(kind).unwrap().is_empty());
    }
    let r = with(&[], &["--repo", "s3://faults/x", "init"]).expect(0);
    // Garage lets the last writer win; init finds out and says so.
    assert!(r.stderr.contains("lets the last writer"), "{}", r.stderr);
    with(&[], &["--repo", "s3://faults/x", "backup", s(&src)]).expect(0);
    // A second init at the same place is refused.
    let r = with(&[], &["--repo", "s3://faults/x", "init"]);
    assert_ne!(r.code, 0);
}

/// On Garage, where a second create of a name replaces the first, two
/// prunes start at the same instant while backups run, twice (the
/// second time the first round's condemned packs are due): each prune
/// either works or says another one holds the lease, every backup
/// commits, and every snapshot still restores and checks.
#[test]
fn two_prunes_at_once_on_garage_lose_nothing() {
    let g = Garage::start(1, "race");
    let env = Env::new();
    let repo = "s3://race/r";
    let src = env.path("src");
    tree(&src, 3);
    let cmd = |args: &[&str]| {
        let mut c = env.cmd();
        for (k, v) in g.env(0) {
            c.env(k, v);
        }
        c.arg("--repo").arg(repo).args(args);
        c
    };
    run(cmd(&["init"])).expect(0);
    for round in 0..3u64 {
        fs::write(src.join("changing.bin"), pseudo(3 << 20, 100 + round)).unwrap();
        run(cmd(&["backup", s(&src)])).expect(0);
    }
    run(cmd(&["forget", "--keep-last", "1"])).expect(0);
    let mut prunes_that_worked = 0;
    let mut said = String::new();
    for round in 0..2u64 {
        // A backup of new data runs while both prunes start together.
        fs::write(src.join("changing.bin"), pseudo(3 << 20, 200 + round)).unwrap();
        let backup = cmd(&["backup", s(&src)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let prunes: Vec<_> = (0..2)
            .map(|_| {
                cmd(&["prune", "--grace", "3s"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for p in prunes {
            let out = p.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            said.push_str(&String::from_utf8_lossy(&out.stdout));
            eprintln!(
                "round {round} prune: {}{err}",
                String::from_utf8_lossy(&out.stdout)
            );
            if out.status.success() {
                prunes_that_worked += 1;
            } else {
                assert!(
                    err.contains("another prune is running") || err.contains("lease"),
                    "a prune failed for another reason: {err}"
                );
            }
        }
        let out = backup.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "backup during prunes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Let the first round's condemned packs fall due.
        std::thread::sleep(Duration::from_millis(3500));
    }
    assert!(
        prunes_that_worked >= 2,
        "only {prunes_that_worked} prunes worked"
    );
    // The second round deleted what the first condemned.
    assert!(said.contains("deleted: "), "{said}");
    run(cmd(&["check", "--read-data"])).expect(0);
    let listed = run(cmd(&["snapshots", "--json"])).expect(0);
    let snaps = json(&listed.stdout);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    for (i, snap) in snaps.iter().enumerate() {
        let id = snap["id"].as_str().unwrap();
        let dest = env.path(&format!("restore-{i}"));
        run(cmd(&["restore", &id[..16], s(&dest)])).expect(0);
    }
    let dest = env.path("latest");
    run(cmd(&["restore", "latest", s(&dest)])).expect(0);
    let problems = compare_trees(&src, &restored(&dest, &src), true);
    assert!(problems.is_empty(), "{problems:?}");
}

/// The box serves a repository that lives in a Garage bucket, with its
/// role rules unchanged: a source with a put token backs up through it
/// and can neither delete nor read what is stored; the owner restores
/// straight from the bucket.
#[test]
fn the_box_serves_a_repository_on_s3() {
    let g = Garage::start(1, "boxed");
    let mut env = Env::new();
    let url = "s3://boxed/home";
    cairn_s3(&env, &g, 0, &["--repo", url, "init"]).expect(0);
    let key = env.path("laptop-put.key");
    cairn_s3(
        &env,
        &g,
        0,
        &[
            "--repo",
            url,
            "key",
            "add",
            "--role",
            "put-only",
            "--no-password",
            "-o",
            s(&key),
        ],
    )
    .expect(0);
    env.repo = std::path::PathBuf::from(url);
    let b = crate::https::start_box_with(&env, 0, "s3", &g.env(0));
    let token = crate::https::make_token(&env, "laptop", "put", Some("*"));
    let src = env.path("src");
    tree(&src, 5);
    let mut c = crate::https::source(&env, &b, &token, Some(&key));
    c.args(["backup", s(&src)]);
    run(c).expect(0);
    for args in [
        vec!["prune", "--grace", "0"],
        vec!["restore", "latest", s(&env.path("stolen"))],
    ] {
        let mut c = crate::https::source(&env, &b, &token, Some(&key));
        c.args(&args);
        let r = run(c);
        assert_ne!(r.code, 0, "a put token could {args:?}: {}", r.stdout);
    }
    let dest = env.path("dest");
    cairn_s3(&env, &g, 0, &["--repo", url, "restore", "latest", s(&dest)]).expect(0);
    let problems = compare_trees(&src, &restored(&dest, &src), true);
    assert!(problems.is_empty(), "{problems:?}");
    cairn_s3(&env, &g, 0, &["--repo", url, "check", "--read-data"]).expect(0);
}

/// A bucket whose policy allows no delete (here a proxy answering 403
/// AccessDenied to every delete, as AWS does): backups work; forget and
/// prune stop with a clear message and take nothing away.
#[test]
fn a_bucket_that_refuses_deletes() {
    let g = Garage::start(1, "nodelete");
    let proxy = cairn_testkit::proxy::DenyDelete::start(&g.endpoint(0));
    let env = Env::new();
    let url = "s3://nodelete/r";
    let cmd = |args: &[&str]| {
        let mut c = env.cmd();
        for (k, v) in g.env(0) {
            c.env(k, v);
        }
        c.env("AWS_ENDPOINT_URL", proxy.endpoint());
        c.arg("--repo").arg(url).args(args);
        run(c)
    };
    let src = env.path("src");
    tree(&src, 8);
    cmd(&["init"]).expect(0);
    cmd(&["backup", s(&src)]).expect(0);
    fs::write(src.join("docs/a.txt"), b"second").unwrap();
    cmd(&["backup", s(&src)]).expect(0);
    let r = cmd(&["forget", "--keep-last", "1"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("denied delete") && r.stderr.contains("lack that permission"),
        "{}",
        r.stderr
    );
    let r = cmd(&["prune", "--grace", "0"]);
    assert!(proxy.denied() >= 2);
    if r.code != 0 {
        assert!(r.stderr.contains("lack that permission"), "{}", r.stderr);
    }
    // Backups go on; nothing was taken away.
    fs::write(src.join("docs/a.txt"), b"third").unwrap();
    cmd(&["backup", s(&src)]).expect(0);
    let listed = json(&cmd(&["snapshots", "--json"]).expect(0).stdout);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    cmd(&["check", "--read-data"]).expect(0);
    let dest = env.path("dest");
    cmd(&["restore", "latest", s(&dest)]).expect(0);
    assert!(compare_trees(&src, &restored(&dest, &src), true).is_empty());
}

/// The node a backup talks to dies in the middle of the upload: the
/// backup fails naming the endpoint, no snapshot shows, and the next
/// backup through another node completes and checks.
#[test]
fn a_node_killed_mid_upload() {
    let mut g = Garage::start(3, "midway");
    let env = Env::new();
    let url = "s3://midway/r";
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("f{i}")), pseudo(12 << 20, 300 + i)).unwrap();
    }
    cairn_s3(&env, &g, 0, &["--repo", url, "init"]).expect(0);
    let mut c = env.cmd();
    for (k, v) in g.env(0) {
        c.env(k, v);
    }
    let child = c
        .args(["--repo", url, "backup", s(&src), "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the node once the upload is under way.
    let st = S3Storage::with_config(g.config(1, url), &env.path("staging")).unwrap();
    let t = std::time::Instant::now();
    while st.list(cairn_storage::Kind::Pack).unwrap().is_empty()
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    g.kill(0);
    let killed = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("backup failed {:?} after the kill: {err}", killed.elapsed());
    assert!(!out.status.success(), "the backup outlived its node");
    assert!(err.contains(&g.endpoint(0)), "{err}");
    let listed = cairn_s3(&env, &g, 1, &["--repo", url, "snapshots", "--json"]).expect(0);
    assert!(json(&listed.stdout).as_array().unwrap().is_empty());
    cairn_s3(&env, &g, 1, &["--repo", url, "backup", s(&src)]).expect(0);
    cairn_s3(&env, &g, 1, &["--repo", url, "check", "--read-data"]).expect(0);
    g.restart(0);
    let dest = env.path("dest");
    cairn_s3(&env, &g, 0, &["--repo", url, "restore", "latest", s(&dest)]).expect(0);
    assert!(compare_trees(&src, &restored(&dest, &src), true).is_empty());
}
