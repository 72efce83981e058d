//! The backup box over HTTPS with the real binaries: `cairn server`
//! started from a config file, tokens made with `cairn server token`,
//! sources running `cairn backup --repo https://…`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

pub(crate) struct BoxProc {
    child: Child,
    port: u16,
    pub(crate) fingerprint: String,
    log: PathBuf,
}

impl Drop for BoxProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BoxProc {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory so far, from the kernel.
    fn peak_rss_kib(&self) -> u64 {
        let st = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        st.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}/home", self.port)
    }
}

/// Writes the config (port 0: any free one) and starts the server.
/// (The child is waited for by [`BoxProc`]'s drop, which clippy cannot see.)
#[allow(clippy::zombie_processes)]
pub(crate) fn start_box(env: &Env, port: u16, tag: &str) -> BoxProc {
    start_box_with(env, port, tag, &[])
}

/// [`start_box`] with more environment for the server (S3 credentials).
#[allow(clippy::zombie_processes)]
pub(crate) fn start_box_with(
    env: &Env,
    port: u16,
    tag: &str,
    vars: &[(String, String)],
) -> BoxProc {
    let cfg = env.path("server.toml");
    fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate = \"{}\"\n[[repository]]\nname = \"home\"\npath = \"{}\"\n",
            s(&env.path("state")),
            s(&env.repo)
        ),
    )
    .unwrap();
    let log = env.path(&format!("server-{tag}.log"));
    let mut child = env
        .cmd()
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .arg("server")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let (Some(p), Some(f)) = (
            text.split("https://127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split('/').next()),
            text.split("certificate ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()),
        ) && text.contains("tokens in")
        {
            return BoxProc {
                child,
                port: p.parse().unwrap(),
                fingerprint: f.to_string(),
                log,
            };
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

pub(crate) fn make_token(env: &Env, name: &str, role: &str, group: Option<&str>) -> PathBuf {
    let mut args = vec!["server", "token", "add", name, "--role", role, "--config"];
    let cfg = env.path("server.toml");
    args.push(s(&cfg));
    if let Some(g) = group {
        args.extend(["--group", g]);
    }
    let mut c = env.cmd();
    c.args(&args);
    let tok = run(c).expect(0).stdout;
    let f = env.path(&format!("{name}.token"));
    fs::write(&f, tok.trim()).unwrap();
    f
}

/// A `cairn` command of a source (another machine: its own HOME): no
/// passphrase, the box's URL, a token.
pub(crate) fn source(env: &Env, b: &BoxProc, token: &Path, key: Option<&Path>) -> Command {
    let home = env.path("source-home");
    let mut c = env.cmd();
    c.env_remove("CAIRN_PASSWORD")
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .arg("--repo")
        .arg(b.url())
        .arg("--token-file")
        .arg(token)
        .arg("--server-fingerprint")
        .arg(&b.fingerprint);
    if let Some(k) = key {
        c.arg("--key-file").arg(k);
    }
    c
}

fn tree_bytes(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .filter(|p| !p.starts_with("tmp"))
        .map(|p| {
            let b = fs::read(dir.join(&p)).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn ransomware_with_a_put_token_over_https_harms_nothing() {
    let env = Env::new();
    env.ok(&["init"]);
    let key = env.put_only_key("laptop.key");
    let b = start_box(&env, 0, "a");
    let put = make_token(&env, "laptop", "put", Some("laptop:*"));
    let src = env.path("home");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    let mut versions = Vec::new();
    for i in 0..3u8 {
        fs::write(src.join("big"), pseudo(5 << 20, u64::from(i) + 1)).unwrap();
        fs::write(src.join("note"), format!("version {i}")).unwrap();
        let mut c = source(&env, &b, &put, Some(&key));
        c.args(["backup", "--json", "--group", "laptop:/home", s(&src)]);
        let r = run(c).expect(0);
        ids.push(json(&r.stdout)["snapshot"].as_str().unwrap().to_string());
        let copy = env.path(&format!("v{i}"));
        copy_tree(&src, &copy);
        versions.push(copy);
    }
    // The owner's own backup of another group, on the box.
    let etc = env.path("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("passwd"), b"root:x:0:0").unwrap();
    let r = env
        .run(&["backup", "--json", "--group", "nas:/etc", s(&etc)])
        .expect(0);
    let other = json(&r.stdout)["snapshot"].as_str().unwrap().to_string();

    // A backup into another group uploads its data, then is refused the
    // snapshot (this adds unused packs, which prune collects later).
    let mut c = source(&env, &b, &put, Some(&key));
    c.args(["backup", "--group", "nas:/etc", s(&src)]);
    let r = run(c);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("outside this token's groups"),
        "{}",
        r.stderr
    );

    let before = tree_bytes(&env.repo);
    // Everything a compromised source could run with the token and the
    // put-only key.
    let attacks: Vec<Vec<String>> = vec![
        vec!["forget".into(), ids[0][..8].into()],
        vec!["forget".into(), "--keep-last".into(), "1".into()],
        vec!["prune".into(), "--grace".into(), "0".into()],
        vec![
            "restore".into(),
            ids[0][..8].into(),
            s(&env.path("stolen")).into(),
        ],
        vec!["ls".into(), ids[0][..8].into()],
        vec!["ls".into(), other[..8].into()],
        vec!["check".into(), "--read-data".into()],
        vec!["key".into(), "list".into()],
        vec!["protect".into(), ids[0][..8].into()],
        vec!["repair".into(), "index".into()],
    ];
    for a in &attacks {
        let mut c = source(&env, &b, &put, Some(&key));
        c.args(a);
        let r = run(c);
        assert_ne!(r.code, 0, "{a:?} succeeded:\n{}", r.stdout);
        let e = r.stderr.to_lowercase();
        assert!(
            e.contains("refused") || e.contains("put-only") || e.contains("cannot"),
            "{a:?}: {}",
            r.stderr
        );
        assert!(!env.path("stolen").exists() || files_below(&env.path("stolen")).is_empty());
    }
    // The source sees only its own group's snapshots.
    let mut c = source(&env, &b, &put, Some(&key));
    c.args(["snapshots", "--json"]);
    let listed = run(c).expect(0).stdout;
    assert!(!listed.contains(&other), "{listed}");
    let after = tree_bytes(&env.repo);
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "the repository changed: {changed:?}");
    let log = b.log();
    assert!(log.contains("for token laptop (put)"), "{log}");

    // The owner restores all three snapshots byte-identical.
    for (id, v) in ids.iter().zip(&versions) {
        let dest = env.path(&format!("r-{}", &id[..8]));
        env.ok(&["restore", &id[..16], s(&dest)]);
        assert!(compare_trees(v, &restored(&dest, &src), false).is_empty());
    }
    env.ok(&["check", "--read-data"]);

    // Revoked: the running server refuses the token at once.
    let mut c = env.cmd();
    c.args([
        "server",
        "token",
        "revoke",
        "laptop",
        "--config",
        s(&env.path("server.toml")),
    ]);
    run(c).expect(0);
    let mut c = source(&env, &b, &put, Some(&key));
    c.args(["backup", "--group", "laptop:/home", s(&src)]);
    let r = run(c);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("revoked"), "{}", r.stderr);
    let mut c = env.cmd();
    c.args([
        "server",
        "token",
        "list",
        "--config",
        s(&env.path("server.toml")),
    ]);
    let list = run(c).expect(0).stdout;
    assert!(
        list.contains("laptop") && list.contains("revoked"),
        "{list}"
    );
}

/// Eight sources at once, with the box killed and restarted under them.
#[test]
fn eight_sources_concurrently_survive_a_killed_box() {
    let env = Env::new();
    env.ok(&["init"]);
    let key = env.put_only_key("src.key");
    let mut b = start_box(&env, 0, "a");
    let shared = pseudo(2 << 20, 99);
    let mut srcs = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..8u64 {
        let d = env.path(&format!("m{i}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("own"), pseudo(6 << 20, 1000 + i)).unwrap();
        fs::write(d.join("shared"), &shared).unwrap();
        srcs.push(d);
        tokens.push(make_token(
            &env,
            &format!("m{i}"),
            "put",
            Some(&format!("m{i}:*")),
        ));
    }
    let spawn_all = |b: &BoxProc, round: u64| -> Vec<Child> {
        (0..8)
            .map(|i| {
                let mut c = source(&env, b, &tokens[i], Some(&key));
                c.args(["--retry-for", "60s", "backup", "--group"])
                    .arg(format!("m{i}:/data"))
                    .arg(&srcs[i])
                    .stdout(Stdio::null())
                    .stderr(fs::File::create(env.path(&format!("m{i}-{round}.err"))).unwrap());
                c.spawn().unwrap()
            })
            .collect()
    };
    // Round one completes.
    for mut c in spawn_all(&b, 1) {
        assert!(c.wait().unwrap().success());
    }
    let first: Vec<String> = snapshot_names(&env.repo);
    assert_eq!(first.len(), 8);
    let mut peak = b.peak_rss_kib();

    // Round two: new data, and the box is killed under it and restarted.
    // Enough data that the kill lands while the sources still send: 6 MiB
    // each was all sent within the first 300 ms on a fast machine.
    for (i, d) in srcs.iter().enumerate() {
        fs::write(d.join("own2"), pseudo(16 << 20, 2000 + i as u64)).unwrap();
    }
    let clients = spawn_all(&b, 2);
    std::thread::sleep(Duration::from_millis(200));
    peak = peak.max(b.peak_rss_kib());
    let port = b.port;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let b2 = start_box(&env, port, "b");
    let mut retried = 0;
    for (i, mut c) in clients.into_iter().enumerate() {
        let st = c.wait().unwrap();
        let err = fs::read_to_string(env.path(&format!("m{i}-2.err"))).unwrap();
        assert!(
            st.success(),
            "source {i} did not finish after the restart:\n{err}"
        );
        retried += usize::from(err.contains("retrying"));
    }
    assert!(retried > 0, "no source was cut off by the kill");
    peak = peak.max(b2.peak_rss_kib());
    let after = snapshot_names(&env.repo);
    assert_eq!(after.len(), 16, "{after:?}");
    for f in &first {
        assert!(after.contains(f), "completed snapshot {f} lost");
    }
    env.ok(&["check", "--read-data"]);
    let dest = env.path("dest");
    env.ok(&["restore", "--group", "m3:/data", "latest", s(&dest)]);
    assert!(compare_trees(&srcs[3], &restored(&dest, &srcs[3]), false).is_empty());
    assert!(
        peak <= 128 * 1024,
        "server peak RSS {} KiB over 128 MiB",
        peak
    );
    eprintln!("server peak RSS: {} MiB", peak / 1024);
}

fn snapshot_names(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every command of the core and retention issues, run by the owner
/// through an admin token, gives what it gives on the box's disk.
#[test]
fn every_command_works_over_https_with_an_admin_token() {
    let env = Env::new();
    env.ok(&["init"]);
    let b = start_box(&env, 0, "a");
    let admin = make_token(&env, "owner", "admin", None);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/a"), pseudo(3 << 20, 7)).unwrap();
    fs::write(src.join("b"), b"bee").unwrap();
    let remote = |args: &[&str]| {
        let mut c = env.cmd();
        c.arg("--repo")
            .arg(b.url())
            .arg("--token-file")
            .arg(&admin)
            .arg("--server-fingerprint")
            .arg(&b.fingerprint)
            .args(args);
        run(c).expect(0).stdout
    };
    let first = json(&remote(&[
        "backup",
        "--json",
        "--group",
        "pc:/src",
        s(&src),
    ]))["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(src.join("b"), b"bee two").unwrap();
    fs::write(src.join("c"), b"new").unwrap();
    remote(&["backup", "--group", "pc:/src", "--tag", "second", s(&src)]);
    let snaps = remote(&["snapshots", "--json"]);
    assert_eq!(json(&snaps).as_array().unwrap().len(), 2, "{snaps}");
    // The token from the environment instead of a file.
    let mut c = env.cmd();
    c.env("CAIRN_TOKEN", fs::read_to_string(&admin).unwrap())
        .arg("--repo")
        .arg(b.url())
        .arg("--server-fingerprint")
        .arg(&b.fingerprint)
        .args(["snapshots", "--json"]);
    assert_eq!(json(&run(c).expect(0).stdout).as_array().unwrap().len(), 2);
    // Without any token: told what to do.
    let mut c = env.cmd();
    c.arg("--repo").arg(b.url()).arg("snapshots");
    let r = run(c);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("needs a token"), "{}", r.stderr);
    let ls = remote(&["ls", "latest"]);
    assert!(ls.contains("d/a") || ls.contains("/a"), "{ls}");
    let diff = remote(&["diff", &first[..8], "latest"]);
    assert!(diff.contains('c') && diff.contains('b'), "{diff}");
    let dest = env.path("dest");
    remote(&["restore", "latest", s(&dest), "--include", "**/d/**"]);
    assert_eq!(
        fs::read(restored(&dest, &src).join("d/a")).unwrap(),
        pseudo(3 << 20, 7)
    );
    assert!(!restored(&dest, &src).join("c").exists());
    remote(&["check", "--read-data"]);
    remote(&["check"]);
    remote(&["stats"]);
    let keys = remote(&["key", "list"]);
    assert!(keys.contains("owner"), "{keys}");
    remote(&["protect", &first[..8]]);
    remote(&["unprotect", &first[..8]]);
    remote(&["forget", "--keep-last", "1"]);
    remote(&["prune", "--grace", "0"]);
    remote(&["repair", "index"]);
    let left = json(&remote(&["snapshots", "--json"]));
    assert_eq!(left.as_array().unwrap().len(), 1);
    // What the box holds agrees: the owner on the box's disk checks it.
    env.ok(&["check", "--read-data"]);
    let dest2 = env.path("dest2");
    env.ok(&["restore", "latest", s(&dest2)]);
    assert!(compare_trees(&src, &restored(&dest2, &src), false).is_empty());
}

/// The box's repository is reset to an older copy (a restored disk image,
/// say): the source's next backup notices, writes nothing, and says why.
#[test]
fn a_box_reset_to_an_older_copy_is_noticed() {
    let env = Env::new();
    env.ok(&["init"]);
    let key = env.put_only_key("laptop.key");
    let b = start_box(&env, 0, "a");
    let put = make_token(&env, "laptop", "put", None);
    let src = env.path("home");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"one").unwrap();
    let backup = || {
        let mut c = source(&env, &b, &put, Some(&key));
        c.args(["backup", "--group", "laptop:/home", s(&src)]);
        run(c)
    };
    backup().expect(0);
    let old = env.path("old-copy");
    copy_tree(&env.repo, &old);
    fs::write(src.join("f"), b"two").unwrap();
    backup().expect(0);
    // The reset, under the running server.
    let snaps = env.repo.join("snapshots");
    fs::remove_dir_all(&snaps).unwrap();
    copy_tree(&old.join("snapshots"), &snaps);
    let before = snapshot_names(&env.repo);
    fs::write(src.join("f"), b"three").unwrap();
    let r = backup();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    assert_eq!(snapshot_names(&env.repo), before, "a snapshot was written");
}
