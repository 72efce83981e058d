//! `cairn copy` to a replica (`init --like`): the off-site copy, here to
//! a Garage bucket and to another directory.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_storage::{Kind, S3Storage, Storage};
use cairn_testkit::garage::Garage;

use crate::util::*;

fn with_s3(env: &Env, g: &Garage, args: &[&str]) -> std::process::Command {
    let mut c = env.cmd();
    for (k, v) in g.env(0) {
        c.env(k, v);
    }
    c.args(args);
    c
}

fn snapshots(env: &Env, g: &Garage, repo: &str) -> Vec<serde_json::Value> {
    let out = run(with_s3(env, g, &["--repo", repo, "snapshots", "--json"])).expect(0);
    let mut v = json(&out.stdout).as_array().unwrap().clone();
    v.sort_by_key(|s| s["id"].as_str().unwrap().to_string());
    v
}

fn source(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("big"), pseudo(12 << 20, seed)).unwrap();
    fs::write(dir.join("sub/small"), pseudo(5000, seed + 1)).unwrap();
}

/// Everything arrives once, sealed: the replica's snapshots are the
/// source's (times, groups and tags), restore byte-identical and check;
/// a second copy sends nothing, a later one only what is new.
#[test]
fn copy_to_a_replica_on_garage_sends_only_what_is_missing() {
    let g = Garage::start(1, "offsite");
    let env = Env::new();
    let home = env.path("home-src");
    let etc = env.path("etc-src");
    source(&home, 1);
    source(&etc, 50);
    env.ok(&["init"]);
    env.ok(&["backup", s(&home), "--tag", "daily", "--tag", "laptop"]);
    env.ok(&["backup", s(&etc)]);
    fs::write(home.join("sub/new"), pseudo(3 << 20, 9)).unwrap();
    env.ok(&["backup", s(&home), "--tag", "daily"]);
    let r2 = "s3://offsite/replica";
    let local = s(&env.repo).to_string();
    run(with_s3(&env, &g, &["--repo", r2, "init", "--like", &local])).expect(0);
    // A dry run says what would go and sends nothing.
    let dry = run(with_s3(
        &env,
        &g,
        &["copy", "--from", &local, "--to", r2, "--dry-run", "--json"],
    ))
    .expect(0);
    let d = json(&dry.stdout);
    assert_eq!(d["copied"].as_array().unwrap().len(), 3, "{d}");
    assert!(d["bytes"].as_u64().unwrap() > 20 << 20, "{d}");
    assert!(snapshots(&env, &g, r2).is_empty());
    let st = S3Storage::with_config(g.config(0, r2), &env.path("staging")).unwrap();
    assert!(st.list(Kind::Pack).unwrap().is_empty());
    // The copy.
    let out = run(with_s3(
        &env,
        &g,
        &["copy", "--from", &local, "--to", r2, "--json"],
    ))
    .expect(0);
    let c = json(&out.stdout);
    assert_eq!(
        c["bytes"], d["bytes"],
        "the dry run said otherwise: {d} {c}"
    );
    let mine = snapshots(&env, &g, &local);
    let theirs = snapshots(&env, &g, r2);
    assert_eq!(mine, theirs, "snapshots differ");
    run(with_s3(&env, &g, &["--repo", r2, "check", "--read-data"])).expect(0);
    let group = theirs
        .iter()
        .map(|x| x["group"].as_str().unwrap().to_string())
        .find(|gr| gr.ends_with(s(&home)))
        .unwrap();
    let dest = env.path("dest");
    run(with_s3(
        &env,
        &g,
        &[
            "--repo",
            r2,
            "restore",
            "latest",
            "--group",
            &group,
            s(&dest),
        ],
    ))
    .expect(0);
    let problems = compare_trees(&home, &restored(&dest, &home), true);
    assert!(problems.is_empty(), "{problems:?}");
    // Again: nothing to send.
    let again = run(with_s3(
        &env,
        &g,
        &["copy", "--from", &local, "--to", r2, "--json"],
    ))
    .expect(0);
    let a = json(&again.stdout);
    assert_eq!(
        (a["copied"].as_array().unwrap().len(), a["bytes"].as_u64()),
        (0, Some(0)),
        "{a}"
    );
    assert_eq!(a["present"], 3);
    // A small change: only it travels.
    fs::write(home.join("sub/small"), b"changed").unwrap();
    env.ok(&["backup", s(&home)]);
    let later = run(with_s3(
        &env,
        &g,
        &["copy", "--from", &local, "--to", r2, "--json"],
    ))
    .expect(0);
    let l = json(&later.stdout);
    assert_eq!(l["copied"].as_array().unwrap().len(), 1, "{l}");
    assert!(l["bytes"].as_u64().unwrap() < 200_000, "{l}");
    assert!(l["blobs_present"].as_u64().unwrap() > 0, "{l}");
    run(with_s3(&env, &g, &["--repo", r2, "check", "--read-data"])).expect(0);
}

/// `--group` and snapshot IDs choose what goes; a repository of another
/// owner is refused with what to do instead.
#[test]
fn copy_selects_and_refuses_a_stranger() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    source(&a, 3);
    source(&b, 4);
    env.ok(&["init"]);
    env.ok(&["backup", s(&a)]);
    env.ok(&["backup", s(&b)]);
    let replica = env.path("replica");
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "init", "--like", s(&env.repo)]);
    run(c).expect(0);
    let out = env.ok(&[
        "copy",
        "--to",
        s(&replica),
        "--group",
        &format!("*{}", s(&b)),
        "--json",
    ]);
    assert_eq!(json(&out)["copied"].as_array().unwrap().len(), 1);
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "snapshots", "--json"]);
    let listed = json(&run(c).expect(0).stdout);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0]["group"].as_str().unwrap().ends_with(s(&b)));
    // The replica opens with the same passphrase and restores.
    let dest = env.path("dest");
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "restore", "latest", s(&dest)]);
    run(c).expect(0);
    assert_eq!(
        fs::read(restored(&dest, &b).join("big")).unwrap(),
        pseudo(12 << 20, 4)
    );
    // Another owner's repository.
    let stranger = env.path("stranger");
    let mut c = env.cmd();
    c.args(["--repo", s(&stranger), "init"]);
    run(c).expect(0);
    let r = env.run(&["copy", "--to", s(&stranger)]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("not a replica") && r.stderr.contains("--like"),
        "{}",
        r.stderr
    );
}

/// A copy killed part way leaves no snapshot that is not whole; the next
/// one finishes and sends less than the whole.
#[test]
fn a_killed_copy_resumes() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), pseudo(20 << 20, 100 + i)).unwrap();
    }
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let replica = env.path("replica");
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "init", "--like", s(&env.repo)]);
    run(c).expect(0);
    let mut child = env
        .cmd()
        .args(["--repo", s(&env.repo), "copy", "--to", s(&replica)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let packs = |p: &Path| pack_bytes(p);
    while packs(&replica) == 0 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let sent_before = packs(&replica);
    assert!(sent_before > 0, "nothing was sent before the kill");
    // No snapshot yet, or a whole one.
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "check"]);
    run(c).expect(0);
    let out = env.ok(&["copy", "--to", s(&replica), "--json"]);
    let r = json(&out);
    // What had arrived (indexed or not) is not sent again.
    assert!(
        r["bytes"].as_u64().unwrap() + sent_before / 2 < pack_bytes(&env.repo),
        "the resumed copy sent again what had arrived ({sent_before} bytes): {r}"
    );
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "check", "--read-data"]);
    run(c).expect(0);
    let dest = env.path("dest");
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "restore", "latest", s(&dest)]);
    run(c).expect(0);
    assert!(compare_trees(&src, &restored(&dest, &src), true).is_empty());
}

/// A damaged pack at the source is not propagated: the copy stops naming
/// it, and the replica gets no snapshot that needs it.
#[test]
fn copy_refuses_a_damaged_source_pack() {
    let env = Env::new();
    let src = env.path("src");
    source(&src, 7);
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let replica = env.path("replica");
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "init", "--like", s(&env.repo)]);
    run(c).expect(0);
    // Flip a byte in the middle of the largest pack.
    let mut biggest: Option<(u64, std::path::PathBuf)> = None;
    for sub in fs::read_dir(env.repo.join("data")).unwrap().flatten() {
        for p in fs::read_dir(sub.path()).unwrap().flatten() {
            let len = p.metadata().unwrap().len();
            if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                biggest = Some((len, p.path()));
            }
        }
    }
    let (len, path) = biggest.unwrap();
    make_writable(&env.repo);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(len / 2) as usize] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    let r = env.run(&["copy", "--to", s(&replica)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("does not match its name"), "{}", r.stderr);
    assert_eq!(fs::read_dir(replica.join("snapshots")).unwrap().count(), 0);
    // Re-encrypting, the damaged chunk fails its worker: the copy stops
    // with the damage named, and nothing is committed.
    let other = env.path("other");
    let pass = env.path("other-pass");
    fs::write(&pass, "another owner").unwrap();
    let mut c = env.cmd();
    c.env_remove("CAIRN_PASSWORD")
        .args(["--repo", s(&other), "--password-file", s(&pass), "init"]);
    run(c).expect(0);
    let r = env.run(&[
        "copy",
        "--to",
        s(&other),
        "--reencrypt",
        "--to-password-file",
        s(&pass),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is damaged"), "{}", r.stderr);
    assert_eq!(fs::read_dir(other.join("snapshots")).unwrap().count(), 0);
}

/// The off-site copy for another owner: the destination is its own
/// repository on Garage, written with nothing but its put-only key; its
/// owner restores what arrived byte for byte, with times, groups and tags
/// intact, and a second copy sends nothing.
#[test]
fn reencrypting_copy_with_a_put_only_key() {
    let g = Garage::start(1, "stranger");
    let env = Env::new();
    let home = env.path("home-src");
    source(&home, 11);
    env.ok(&["init"]);
    env.ok(&["backup", s(&home), "--tag", "nightly"]);
    fs::write(home.join("sub/more"), pseudo(2 << 20, 12)).unwrap();
    env.ok(&["backup", s(&home), "--tag", "nightly"]);
    let r2 = "s3://stranger/offsite";
    let pass2 = env.path("pass2");
    fs::write(&pass2, "a different owner's passphrase").unwrap();
    let owner2 = |args: &[&str]| {
        let mut c = with_s3(&env, &g, &["--repo", r2, "--password-file", s(&pass2)]);
        c.env_remove("CAIRN_PASSWORD").args(args);
        run(c)
    };
    owner2(&["init"]).expect(0);
    let put = env.path("offsite-put.key");
    owner2(&[
        "key",
        "add",
        "--role",
        "put-only",
        "--no-password",
        "-o",
        s(&put),
    ])
    .expect(0);
    let local = s(&env.repo).to_string();
    let copy = |extra: &[&str]| {
        let mut args = vec![
            "copy",
            "--from",
            &local,
            "--to",
            r2,
            "--reencrypt",
            "--to-key-file",
            s(&put),
            "--json",
        ];
        args.extend_from_slice(extra);
        run(with_s3(&env, &g, &args)).expect(0)
    };
    let dry = json(&copy(&["--dry-run"]).stdout);
    assert_eq!(dry["copied"].as_array().unwrap().len(), 2, "{dry}");
    let none = json(&owner2(&["snapshots", "--json"]).expect(0).stdout);
    assert!(none.as_array().unwrap().is_empty(), "{none}");
    let done = json(&copy(&[]).stdout);
    assert_eq!(done["copied"].as_array().unwrap().len(), 2, "{done}");
    // The same backups, as the source's owner and the destination's see
    // them: times, groups, tags, sizes.
    let pick = |v: &[serde_json::Value]| {
        let mut out: Vec<_> = v
            .iter()
            .map(|x| {
                (
                    x["time"].clone(),
                    x["group"].clone(),
                    x["tags"].clone(),
                    x["files"].clone(),
                    x["bytes"].clone(),
                )
            })
            .collect();
        // Two backups may share a second: sort on everything.
        out.sort_by_key(|t| format!("{t:?}"));
        out
    };
    let theirs = json(&owner2(&["snapshots", "--json"]).expect(0).stdout);
    assert_eq!(
        pick(&snapshots(&env, &g, &local)),
        pick(theirs.as_array().unwrap())
    );
    owner2(&["check", "--read-data"]).expect(0);
    let dest = env.path("dest");
    owner2(&["restore", "latest", s(&dest)]).expect(0);
    let problems = compare_trees(&home, &restored(&dest, &home), true);
    assert!(problems.is_empty(), "{problems:?}");
    // Nothing twice.
    let again = json(&copy(&[]).stdout);
    assert_eq!(
        (
            again["copied"].as_array().unwrap().len(),
            again["present"].as_u64()
        ),
        (0, Some(2)),
        "{again}"
    );
    // Into a replica, --reencrypt is the wrong tool, and says so.
    let replica = env.path("replica");
    let mut c = env.cmd();
    c.args(["--repo", s(&replica), "init", "--like", &local]);
    run(c).expect(0);
    let r = env.run(&["copy", "--to", s(&replica), "--reencrypt"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("without --reencrypt"), "{}", r.stderr);
}

/// The off-site copy as daemon jobs: one to a replica in a bucket, one
/// re-encrypted into another owner's repository with its put-only key;
/// `cairn run` each, twice (the second sends nothing).
#[test]
fn copy_jobs_of_the_daemon() {
    let g = Garage::start(1, "jobs");
    let env = Env::new();
    let src = env.path("src");
    source(&src, 21);
    env.ok(&["init"]);
    env.ok(&["backup", s(&src)]);
    let local = s(&env.repo).to_string();
    let replica = "s3://jobs/replica";
    let theirs = "s3://jobs/theirs";
    run(with_s3(
        &env,
        &g,
        &["--repo", replica, "init", "--like", &local],
    ))
    .expect(0);
    let pass2 = env.path("pass2");
    fs::write(&pass2, "their passphrase").unwrap();
    let owner2 = |args: &[&str]| {
        let mut c = with_s3(&env, &g, &["--repo", theirs, "--password-file", s(&pass2)]);
        c.env_remove("CAIRN_PASSWORD").args(args);
        run(c)
    };
    owner2(&["init"]).expect(0);
    let put = env.path("their-put.key");
    owner2(&[
        "key",
        "add",
        "--role",
        "put-only",
        "--no-password",
        "-o",
        s(&put),
    ])
    .expect(0);
    let pass1 = env.path("pass1");
    fs::write(&pass1, PASS).unwrap();
    let cfg = env.path("cairn.toml");
    fs::write(
        &cfg,
        format!(
            r#"[daemon]
state = "{state}"
listen = "off"

[repository.home]
path = "{local}"
password_file = "{pass1}"

[repository.replica]
url = "{replica}"

[repository.theirs]
url = "{theirs}"
key_file = "{put}"

[[job]]
name = "to-replica"
kind = "copy"
repository = "home"
to = "replica"
every = "1d"

[[job]]
name = "to-theirs"
kind = "copy"
repository = "home"
to = "theirs"
every = "1d"
"#,
            state = s(&env.path("state")),
            pass1 = s(&pass1),
            put = s(&put),
        ),
    )
    .unwrap();
    let job = |name: &str| {
        let mut c = with_s3(&env, &g, &["run", name, "-c", s(&cfg), "--no-progress"]);
        c.env_remove("CAIRN_PASSWORD");
        run(c).expect(0)
    };
    let first = job("to-replica");
    assert!(
        first.stdout.contains("copied 1 snapshots") || first.stderr.contains("copied 1 snapshots"),
        "{}{}",
        first.stdout,
        first.stderr
    );
    let first = job("to-theirs");
    assert!(
        (first.stdout.clone() + &first.stderr).contains("re-encrypted"),
        "{}{}",
        first.stdout,
        first.stderr
    );
    let again = job("to-theirs");
    assert!(
        (again.stdout.clone() + &again.stderr).contains("copied 0 snapshots"),
        "{}{}",
        again.stdout,
        again.stderr
    );
    run(with_s3(
        &env,
        &g,
        &["--repo", replica, "check", "--read-data"],
    ))
    .expect(0);
    owner2(&["check", "--read-data"]).expect(0);
    let dest = env.path("dest");
    owner2(&["restore", "latest", s(&dest)]).expect(0);
    assert!(compare_trees(&src, &restored(&dest, &src), true).is_empty());
    // A copy job must name where it copies to.
    fs::write(
        env.path("bad.toml"),
        format!("[repository.home]\npath = \"{local}\"\n\n[[job]]\nname = \"c\"\nkind = \"copy\"\nrepository = \"home\"\nevery = \"1d\"\n"),
    )
    .unwrap();
    let mut c = env.cmd();
    c.args(["daemon", "--check-config", "-c", s(&env.path("bad.toml"))]);
    let r = run(c);
    assert_ne!(r.code, 0);
    assert!((r.stdout + &r.stderr).contains("a copy job needs to ="));
}

/// The off-site box of another owner, reached over HTTPS from this
/// owner's own box: the copy reads the source box with an admin token and
/// writes the destination with nothing but a put token and a put-only
/// key. The destination's owner restores what arrived byte for byte, and
/// a second copy sends nothing.
#[test]
fn reencrypting_copy_between_two_boxes_with_a_put_token() {
    use crate::https::{make_token, start_box};
    let here = Env::new();
    let home = here.path("home-src");
    source(&home, 21);
    here.ok(&["init"]);
    here.ok(&["backup", s(&home), "--tag", "nightly"]);
    fs::write(home.join("sub/more"), pseudo(3 << 20, 22)).unwrap();
    here.ok(&["backup", s(&home)]);
    let b1 = start_box(&here, 0, "here");
    let admin = make_token(&here, "owner", "admin", None);

    let offsite = Env::new();
    offsite.ok(&["init"]);
    let put_key = offsite.put_only_key("offsite-put.key");
    let b2 = start_box(&offsite, 0, "offsite");
    let put = make_token(&offsite, "here", "put", None);

    let copy = || {
        let mut c = here.cmd();
        c.args([
            "copy",
            "--from",
            &b1.url(),
            "--to",
            &b2.url(),
            "--token-file",
            s(&admin),
            "--to-token-file",
            s(&put),
            "--reencrypt",
            "--to-key-file",
            s(&put_key),
            "--json",
        ]);
        json(&run(c).expect(0).stdout)
    };
    let done = copy();
    assert_eq!(done["copied"].as_array().unwrap().len(), 2, "{done}");
    assert!(done["blobs"].as_u64().unwrap() > 0, "{done}");
    let again = copy();
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["present"].as_u64(), Some(2), "{again}");
    assert_eq!(again["blobs"].as_u64(), Some(0), "{again}");
    // The destination's owner, on its own disk.
    offsite.ok(&["check", "--read-data"]);
    let dest = offsite.path("dest");
    offsite.ok(&["restore", "latest", s(&dest)]);
    let problems = compare_trees(&home, &restored(&dest, &home), true);
    assert!(problems.is_empty(), "{problems:?}");
    let snaps = json(&offsite.ok(&["snapshots", "--json"]));
    let tagged = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["tags"].to_string().contains("nightly"))
        .count();
    assert_eq!(tagged, 1, "{snaps}");
}
