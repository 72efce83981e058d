//! Forge mirroring against a forge on loopback: the documented listing
//! JSON of GitHub, GitLab and Gitea with paging and rate limits
//! (`cairn_testkit::forge`), real repositories served by `git
//! http-backend` and over OpenSSH, and real git on both ends. Whatever
//! upstream rewrites, deletes or renames, every commit ever fetched is
//! in the restored mirror.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_testkit::forge::{Forge, Limit};

use crate::util::{Env, json, s};

/// Runs git with a fixed identity; panics with its stderr on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.org",
            "-c",
            "init.defaultBranch=main",
            // The test reads mirrors another user owns.
            "-c",
            "safe.directory=*",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A working copy that pushes to a served bare repository.
struct Work {
    dir: PathBuf,
    bare: PathBuf,
    n: u32,
}

impl Work {
    fn new(env: &Env, name: &str, bare: PathBuf) -> Work {
        let dir = env.path(&format!("work-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q"]);
        Work { dir, bare, n: 0 }
    }

    /// A commit on the current branch; its ID.
    fn commit(&mut self) -> String {
        self.n += 1;
        std::fs::write(
            self.dir.join(format!("f{}", self.n)),
            format!("{}-{}\n", self.dir.display(), self.n),
        )
        .unwrap();
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "-m", &format!("c{}", self.n)]);
        git(&self.dir, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Makes upstream's branches and tags exactly this copy's.
    fn push(&self) {
        git(
            &self.dir,
            &[
                "push",
                "-q",
                "--force",
                "--prune",
                s(&self.bare),
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
        );
    }
}

fn refs(dir: &Path) -> BTreeMap<String, String> {
    git(
        dir,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/heads",
            "refs/tags",
        ],
    )
    .lines()
    .filter_map(|l| l.split_once(' '))
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

fn commits(dir: &Path) -> BTreeSet<String> {
    git(dir, &["rev-list", "--all"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn cairn(env: &Env, args: &[&str]) -> crate::util::Run {
    let mut c = env.cmd();
    c.env("CAIRN_FORGE_RETRY_MS", "20")
        .env("CAIRN_FORGE_BARE_WAIT_MS", "300")
        .args(args);
    crate::util::run(c)
}

fn events(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

fn kinds(file: &Path) -> Vec<String> {
    events(file)
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The GitHub story as the daemon runs it: paging, filters, wikis, a
/// force-push, a deleted branch, a moved tag, a deleted and a renamed
/// repository, a new one, a rate limit mid-listing, a revoked token, a
/// broken forge, a fetch killed mid-way; then every commit ever fetched
/// comes back in restored mirrors, and one pushes to a fresh remote.
#[test]
fn github_mirrors_keep_everything_upstream_drops() {
    let env = Env::new();
    env.ok(&["init"]);
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let forge = Forge::start(&env.path("forge"), "acme", true);
    forge.model.lock().unwrap().per_page = 2;
    forge.model.lock().unwrap().token = Some("tok-1".into());
    std::fs::write(env.path("token"), "tok-1\n").unwrap();

    // shop: main with three commits, a feature branch, a tag.
    let mut shop = Work::new(&env, "shop", forge.add_repo("shop"));
    let c1 = shop.commit();
    git(&shop.dir, &["checkout", "-q", "-b", "feature"]);
    let f1 = shop.commit();
    git(&shop.dir, &["checkout", "-q", "main"]);
    let c2 = shop.commit();
    let c3 = shop.commit();
    git(&shop.dir, &["tag", "v1", &c2]);
    shop.push();
    let mut blog = Work::new(&env, "blog", forge.add_repo("blog"));
    blog.commit();
    blog.push();
    let mut docs = Work::new(&env, "docs", forge.add_repo("docs"));
    docs.commit();
    docs.push();
    let wiki_bare = forge.root.join("acme/docs.wiki.git");
    assert!(
        Command::new("git")
            .args(["init", "--bare", "-q", "-b", "main"])
            .arg(&wiki_bare)
            .status()
            .unwrap()
            .success()
    );
    let mut wiki = Work::new(&env, "docs-wiki", wiki_bare);
    wiki.commit();
    wiki.push();
    let mut old = Work::new(&env, "old", forge.add_repo("old-thing"));
    old.commit();
    old.push();
    let mut fork = Work::new(&env, "fork", forge.add_repo("someones-fork"));
    fork.commit();
    fork.push();
    {
        let mut m = forge.model.lock().unwrap();
        for r in &mut m.repos {
            r.has_wiki = r.name == "docs" || r.name == "shop";
            r.fork = r.name == "someones-fork";
        }
    }

    let state = env.path("state");
    let events_file = env.path("events");
    let cfg = env.path("cairn.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[daemon]
state = "{state}"
listen = "off"

[repository.r]
path = "{repo}"
password_file = "{pw}"

[[job]]
name = "gh"
kind = "git"
forge = "github"
base_url = "{url}"
owner = "acme"
token_file = "{token}"
exclude = ["old-*"]
repository = "r"
every = "1h"
keep = {{ last = 3 }}

[[notify]]
kind = "command"
command = ["sh", "-c", "cat >> {events}; echo >> {events}"]
"#,
            state = state.display(),
            repo = env.repo.display(),
            pw = env.path("pw").display(),
            url = forge.url,
            token = env.path("token").display(),
            events = events_file.display(),
        ),
    )
    .unwrap();
    let cfg = s(&cfg).to_string();
    let mirrors = state.join("git/gh");
    let mut ever: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut saw = |name: &'static str, dir: &Path| {
        ever.entry(name).or_default().extend(commits(dir));
    };

    // Run 1: everything new.
    let out = cairn(&env, &["run", "gh", "-c", &cfg]).expect(0);
    assert!(
        out.stdout.contains("3 repositories mirrored (5 listed)"),
        "{}",
        out.stdout
    );
    for (name, work) in [("shop", &shop), ("blog", &blog), ("docs", &docs)] {
        assert_eq!(
            refs(&mirrors.join(format!("{name}.git"))),
            refs(&work.bare),
            "{name} mirrors upstream"
        );
    }
    assert_eq!(refs(&mirrors.join("docs.wiki.git")), refs(&wiki.bare));
    assert!(
        !mirrors.join("shop.wiki.git").exists(),
        "a wiki never written is no wiki"
    );
    assert!(!mirrors.join("old-thing.git").exists(), "excluded");
    assert!(!mirrors.join("someones-fork.git").exists(), "forks are off");
    assert!(
        forge.model.lock().unwrap().api_requests >= 4,
        "the listing followed the Link headers through three pages"
    );
    saw("shop", &shop.bare);
    saw("docs", &docs.bare);
    saw("blog", &blog.bare);
    let snaps = json(&env.ok(&["--json", "snapshots"]));
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["group"], "git:github/acme");

    // Upstream rewrites history, deletes, renames, adds; and the listing
    // meets a rate limit on its second page.
    git(&shop.dir, &["reset", "-q", "--hard", &c1]);
    let c4 = shop.commit();
    git(&shop.dir, &["branch", "-q", "-D", "feature"]);
    git(&shop.dir, &["tag", "-f", "v1", &c4]);
    shop.push();
    {
        let mut m = forge.model.lock().unwrap();
        m.repos.retain(|r| r.name != "blog");
        let d = m.repos.iter_mut().find(|r| r.name == "docs").unwrap();
        d.name = "handbook".into();
        d.dir = "handbook".into();
        m.limit_at = Some((3, Limit::RetryAfter));
    }
    std::fs::remove_dir_all(&blog.bare).unwrap();
    std::fs::rename(&docs.bare, forge.root.join("acme/handbook.git")).unwrap();
    std::fs::rename(&wiki.bare, forge.root.join("acme/handbook.wiki.git")).unwrap();
    docs.bare = forge.root.join("acme/handbook.git");
    docs.commit();
    docs.push();
    let mut api = Work::new(&env, "api", forge.add_repo("api"));
    api.commit();
    api.push();

    let out = cairn(&env, &["run", "gh", "-c", &cfg]).expect(0);
    let text = &out.stdout;
    for want in [
        "main of shop rewritten: 2 commits no longer upstream",
        "feature of shop deleted: 1 commit no longer upstream",
        "tags/v1 of shop moved",
        "blog was deleted upstream",
        "docs renamed to handbook",
        "1 new",
        "waited 1 s for rate limits",
        "deleted upstream, mirror kept: blog",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let shop_m = mirrors.join("shop.git");
    assert_eq!(
        refs(&shop_m),
        refs(&shop.bare),
        "branches and tags follow upstream"
    );
    let kept = git(
        &shop_m,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/cairn/preserved",
        ],
    );
    for (r, old) in [
        ("heads/main", &c3),
        ("heads/feature", &f1),
        ("tags/v1", &c2),
    ] {
        assert!(
            kept.lines().any(|l| l.ends_with(&format!("/{r} {old}"))),
            "{r} kept at {old}:\n{kept}"
        );
    }
    assert!(mirrors.join("handbook.git").exists() && !mirrors.join("docs.git").exists());
    assert!(mirrors.join("handbook.wiki.git").exists());
    assert!(
        mirrors.join("blog.git").exists(),
        "a deleted repository's mirror stays"
    );
    assert_eq!(refs(&mirrors.join("handbook.git")), refs(&docs.bare));
    assert_eq!(refs(&mirrors.join("api.git")), refs(&api.bare));
    saw("shop", &shop.bare);
    saw("docs", &docs.bare);
    saw("api", &api.bare);
    let ev = events(&events_file);
    let upstream: Vec<&serde_json::Value> =
        ev.iter().filter(|e| e["event"] == "upstream").collect();
    assert_eq!(upstream.len(), 1, "one alert for the run's news: {ev:?}");
    let msg = upstream[0]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("main of shop rewritten") && msg.contains("blog was deleted upstream"),
        "{msg}"
    );
    let st = cairn(&env, &["status", "-c", &cfg]);
    assert!(
        st.stdout.contains("mirrors: 3 repositories, 3 fetched")
            && st.stdout.contains("3 refs rewritten upstream")
            && st.stdout.contains("deleted upstream, mirrors kept: blog"),
        "status: {}",
        st.stdout
    );

    // Nothing changed: nothing fetched, no news, one request per mirror.
    let requests = || forge.model.lock().unwrap().git_requests;
    let r0 = requests();
    let out = cairn(&env, &["run", "gh", "-c", &cfg]).expect(0);
    assert!(
        out.stdout.contains("0 fetched, 4 unchanged"),
        "{}",
        out.stdout
    );
    assert_eq!(kinds(&events_file), ["upstream"], "no news is no alert");
    let idle = requests() - r0;

    // A new commit upstream costs one request more: the pack, asked for
    // with the advertisement already read (git fetch would ask again).
    api.commit();
    api.push();
    let r0 = requests();
    let out = cairn(&env, &["run", "gh", "-c", &cfg]).expect(0);
    assert!(
        out.stdout.contains("1 fetched, 3 unchanged"),
        "{}",
        out.stdout
    );
    assert_eq!(requests() - r0, idle + 1);
    assert_eq!(refs(&mirrors.join("api.git")), refs(&api.bare));
    git(&mirrors.join("api.git"), &["fsck", "--no-progress"]);
    saw("api", &api.bare);

    // A revoked token: a clear failure, one alert, no mirror touched.
    let before = fingerprint(&mirrors);
    forge.model.lock().unwrap().token = Some("tok-2".into());
    git(&shop.dir, &["reset", "-q", "--hard", &c1]);
    shop.commit();
    shop.push();
    for _ in 0..2 {
        let out = cairn(&env, &["run", "gh", "-c", &cfg]).expect(2);
        assert!(
            out.stdout
                .contains("github refused the token (401: Bad credentials)")
                && out.stdout.contains("write a new one to the token file"),
            "{}",
            out.stdout
        );
    }
    assert_eq!(fingerprint(&mirrors), before, "no mirror touched");
    assert_eq!(kinds(&events_file), ["upstream", "failed"]);
    forge.model.lock().unwrap().token = Some("tok-1".into());
    cairn(&env, &["run", "gh", "-c", &cfg]).expect(0);
    saw("shop", &shop.bare);
    assert_eq!(
        kinds(&events_file),
        ["upstream", "failed", "recovered", "upstream"]
    );

    // An unreachable forge: every run fails, one alert, no mirror
    // touched; then it is back.
    let before = fingerprint(&mirrors);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace(&forge.url, "http://127.0.0.1:9")).unwrap();
    for _ in 0..2 {
        let out = cairn(&env, &["run", "gh", "-c", &cfg]).expect(2);
        assert!(
            out.stdout.contains("is unreachable") && out.stdout.contains("no mirror was touched"),
            "{}",
            out.stdout
        );
    }
    assert_eq!(fingerprint(&mirrors), before);
    std::fs::write(&cfg, text).unwrap();
    cairn(&env, &["run", "gh", "-c", &cfg]).expect(0);
    assert_eq!(
        kinds(&events_file),
        [
            "upstream",
            "failed",
            "recovered",
            "upstream",
            "failed",
            "recovered"
        ]
    );

    // A broken forge: every run fails, one alert, no mirror touched.
    let before = fingerprint(&mirrors);
    forge.model.lock().unwrap().fail_with = Some(502);
    for _ in 0..2 {
        let out = cairn(&env, &["run", "gh", "-c", &cfg]).expect(2);
        assert!(out.stdout.contains("github answered 502"), "{}", out.stdout);
    }
    assert_eq!(fingerprint(&mirrors), before);
    assert_eq!(
        kinds(&events_file)
            .iter()
            .filter(|k| *k == "failed")
            .count(),
        3
    );
    forge.model.lock().unwrap().fail_with = None;

    // Fetches killed mid-way, while the packs are on their way: one of
    // a mirror brought up to date (without git fetch) and the first of a
    // new repository (with it). The mirrors are as they were, and the
    // next run completes both.
    let c_new = shop.commit();
    shop.push();
    let mut late = Work::new(&env, "late", forge.add_repo("late"));
    late.commit();
    late.push();
    {
        let mut m = forge.model.lock().unwrap();
        m.pack_delay = Some(Duration::from_secs(4));
        m.pack_requests = 0;
    }
    let before_refs = refs(&shop_m);
    let mut c = env.cmd();
    c.args(["run", "gh", "-c", &cfg]);
    {
        use std::os::unix::process::CommandExt;
        c.process_group(0);
    }
    let mut child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while forge.model.lock().unwrap().pack_requests < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the fetches never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let _ = child.wait();
    forge.model.lock().unwrap().pack_delay = None;
    assert_eq!(refs(&shop_m), before_refs, "a killed fetch moves no ref");
    git(&shop_m, &["fsck", "--no-progress", "--connectivity-only"]);
    let late_m = mirrors.join("late.git");
    if late_m.exists() {
        assert!(
            refs(&late_m).is_empty(),
            "a killed first fetch leaves no ref"
        );
    }
    let out = cairn(&env, &["run", "gh", "-c", &cfg]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(refs(&shop_m), refs(&shop.bare));
    assert_eq!(refs(&late_m), refs(&late.bare));
    assert!(commits(&shop_m).contains(&c_new));
    git(&shop_m, &["fsck", "--no-progress"]);
    saw("shop", &shop.bare);

    // SIGTERM during a fetch (a first clone, which git does): the run
    // stops at once, recorded as interrupted, and the next one completes.
    let mut later = Work::new(&env, "later", forge.add_repo("later"));
    later.commit();
    later.push();
    {
        let mut m = forge.model.lock().unwrap();
        m.pack_delay = Some(Duration::from_secs(6));
        m.pack_requests = 0;
    }
    let mut c = env.cmd();
    c.args(["run", "gh", "-c", &cfg]);
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while forge.model.lock().unwrap().pack_requests < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the fetch never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "stopping waited for the fetch ({:?})",
        asked.elapsed()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("interrupted"), "{text}");
    forge.model.lock().unwrap().pack_delay = None;
    cairn(&env, &["run", "gh", "-c", &cfg]).expect(0);
    assert_eq!(refs(&mirrors.join("later.git")), refs(&later.bare));

    // A new repository takes the name of the deleted one: the old mirror
    // moves aside and stays restorable by its forge ID.
    let old_blog_commits = commits(&mirrors.join("blog.git"));
    let mut blog2 = Work::new(&env, "blog2", forge.add_repo("blog"));
    blog2.commit();
    blog2.push();
    cairn(&env, &["run", "gh", "-c", &cfg]).expect(0);
    assert_eq!(refs(&mirrors.join("blog.git")), refs(&blog2.bare));
    assert_eq!(
        commits(&mirrors.join("blog.deleted-1001.git")),
        old_blog_commits
    );
    let dest = env.path("old-blog");
    env.ok(&[
        "git",
        "restore",
        "latest",
        "1001",
        s(&dest),
        "--group",
        "git:github/acme",
    ]);
    assert_eq!(commits(&dest), old_blog_commits);
    let dest = env.path("new-blog");
    env.ok(&[
        "git",
        "restore",
        "latest",
        "blog",
        s(&dest),
        "--group",
        "git:github/acme",
    ]);
    assert_eq!(
        refs(&dest),
        refs(&blog2.bare),
        "the name means the repository that has it now"
    );

    // The job's retention applies to its group; the mirrors themselves
    // still hold everything.
    let snaps = json(&env.ok(&["--json", "snapshots"]));
    assert_eq!(snaps.as_array().unwrap().len(), 3, "keep = {{ last = 3 }}");

    // Every commit ever fetched is in the restored mirrors, under the
    // current name, a former name, and for a deleted repository.
    for (name, alias) in [
        ("shop", "shop"),
        ("docs", "docs"),
        ("blog", "1001"),
        ("api", "api"),
    ] {
        let dest = env.path(&format!("restored-{alias}"));
        let out = env.ok(&[
            "git",
            "restore",
            "latest",
            alias,
            s(&dest),
            "--group",
            "git:github/acme",
        ]);
        assert!(out.contains("restored"), "{out}");
        let got = commits(&dest);
        let missing: Vec<_> = ever[name].difference(&got).collect();
        assert!(missing.is_empty(), "{name}: commits lost: {missing:?}");
        let clone = env.path(&format!("clone-{alias}"));
        let st = Command::new("git")
            .args(["clone", "-q"])
            .arg(&dest)
            .arg(&clone)
            .status()
            .unwrap();
        assert!(st.success(), "git clone of the restored {name}");
    }
    for lost in [&c2, &c3, &f1] {
        assert!(ever["shop"].contains(lost));
    }

    // --push sends every ref, preserved ones too, to a fresh remote.
    let fresh = env.path("fresh.git");
    git(&env.path(""), &["init", "--bare", "-q", s(&fresh)]);
    env.ok(&[
        "git",
        "restore",
        "latest",
        "shop",
        s(&env.path("pushed-from")),
        "--group",
        "git:github/acme",
        "--push",
        s(&fresh),
    ]);
    let all = git(&fresh, &["for-each-ref", "--format=%(refname)"]);
    assert!(all.contains("refs/cairn/preserved/"), "{all}");
    assert!(commits(&fresh).is_superset(&ever["shop"]));
}

/// Every file's path and bytes below `dir`, for "nothing touched".
fn fingerprint(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// GitLab (a group with a subgroup, paged by `x-next-page`, a bare 429)
/// and Gitea (a user, paged by `Link`, a spent limit with its reset,
/// archived and fork filters) through `cairn git mirror`, and fetches
/// over SSH from a real OpenSSH server.
#[test]
fn gitlab_gitea_and_ssh_mirrors() {
    let env = Env::new();
    env.ok(&["init"]);

    // GitLab: group "team" with a project in subgroup "infra".
    let gl = Forge::start(&env.path("gitlab"), "team", true);
    gl.model.lock().unwrap().per_page = 1;
    gl.model.lock().unwrap().token = Some("gl-tok".into());
    std::fs::write(env.path("gl-token"), "gl-tok").unwrap();
    let mut app = Work::new(&env, "app", gl.add_repo("app"));
    app.commit();
    app.push();
    let mut deploy = Work::new(&env, "deploy", gl.add_repo("infra/deploy"));
    deploy.commit();
    deploy.push();
    gl.model.lock().unwrap().limit_at = Some((3, Limit::Bare429));
    let mirrors = env.path("gl-mirrors");
    let out = cairn(
        &env,
        &[
            "--repo",
            s(&env.repo),
            "git",
            "mirror",
            "--forge",
            "gitlab",
            "--base-url",
            &gl.url,
            "--owner",
            "team",
            "--token-file",
            s(&env.path("gl-token")),
            "--mirrors",
            s(&mirrors),
        ],
    )
    .expect(0);
    assert!(
        out.stdout.contains("2 repositories mirrored (2 listed)")
            && out.stdout.contains("waited 0 s for rate limits"),
        "{}",
        out.stdout
    );
    assert_eq!(refs(&mirrors.join("app.git")), refs(&app.bare));
    assert_eq!(refs(&mirrors.join("infra/deploy.git")), refs(&deploy.bare));
    let snaps = json(&env.ok(&["--json", "snapshots"]));
    assert_eq!(snaps[0]["group"], "git:gitlab/team");
    let dest = env.path("deploy-restored");
    env.ok(&[
        "git",
        "restore",
        "latest",
        "infra/deploy",
        s(&dest),
        "--group",
        "git:gitlab/team",
    ]);
    assert_eq!(refs(&dest), refs(&deploy.bare));

    // Gitea: a user, two pages, a spent limit on the second.
    let gt = Forge::start(&env.path("gitea"), "alice", false);
    gt.model.lock().unwrap().per_page = 2;
    gt.model.lock().unwrap().token = Some("gt-tok".into());
    std::fs::write(env.path("gt-token"), "gt-tok").unwrap();
    let mut names = Vec::new();
    for n in ["dots", "notes", "attic", "forked"] {
        let mut w = Work::new(&env, &format!("gt-{n}"), gt.add_repo(n));
        w.commit();
        w.push();
        names.push(w);
    }
    {
        let mut m = gt.model.lock().unwrap();
        for r in &mut m.repos {
            r.archived = r.name == "attic";
            r.fork = r.name == "forked";
        }
        m.limit_at = Some((3, Limit::Spent403));
    }
    let gmirrors = env.path("gt-mirrors");
    let t = Instant::now();
    let out = cairn(
        &env,
        &[
            "--repo",
            s(&env.repo),
            "git",
            "mirror",
            "--forge",
            "gitea",
            "--base-url",
            &gt.url,
            "--owner",
            "alice",
            "--token-file",
            s(&env.path("gt-token")),
            "--no-archived",
            "--mirrors",
            s(&gmirrors),
            "--no-snapshot",
        ],
    )
    .expect(0);
    assert!(
        out.stdout.contains("2 repositories mirrored (4 listed)")
            && out.stdout.contains("for rate limits"),
        "{}",
        out.stdout
    );
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "waited for the reset"
    );
    assert!(gmirrors.join("dots.git").exists() && gmirrors.join("notes.git").exists());
    assert!(!gmirrors.join("attic.git").exists() && !gmirrors.join("forked.git").exists());
    assert_eq!(
        json(&env.ok(&["--json", "snapshots"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // An unreachable forge: a clear error, nothing touched.
    let before = fingerprint(&gmirrors);
    let out = cairn(
        &env,
        &[
            "git",
            "mirror",
            "--forge",
            "gitea",
            "--base-url",
            "http://127.0.0.1:9",
            "--owner",
            "alice",
            "--mirrors",
            s(&gmirrors),
            "--no-snapshot",
        ],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("is unreachable") && out.stderr.contains("no mirror was touched"),
        "{}",
        out.stderr
    );
    assert_eq!(fingerprint(&gmirrors), before);

    // Over SSH: the forge's ssh_url, the user's ssh command.
    let server = crate::ssh::sshd(env.dir.path(), None);
    gt.model.lock().unwrap().ssh_base = Some(format!(
        "ssh://{}@127.0.0.1:{}{}",
        crate::ssh::user(),
        server.port,
        gt.root.display()
    ));
    names[0].commit();
    names[0].push();
    let smirrors = env.path("ssh-mirrors");
    let over_ssh = || {
        let mut c = env.cmd();
        c.env("GIT_SSH_COMMAND", crate::ssh::ssh_command(&server))
            .args(["git", "mirror", "--forge", "gitea", "--base-url", &gt.url])
            .args(["--owner", "alice", "--token-file", s(&env.path("gt-token"))])
            .args(["--ssh", "--mirrors", s(&smirrors), "--no-snapshot"]);
        crate::util::run(c).expect(0)
    };
    let out = over_ssh();
    assert!(
        out.stdout.contains("3 repositories mirrored (4 listed)"),
        "{}",
        out.stdout
    );
    assert_eq!(refs(&smirrors.join("dots.git")), refs(&names[0].bare));
    // A force-push seen over SSH keeps the old tip too.
    let old_tip = refs(&names[0].bare)["refs/heads/main"].clone();
    git(&names[0].dir, &["reset", "-q", "--hard", "HEAD~1"]);
    names[0].commit();
    names[0].push();
    let out = over_ssh();
    assert!(
        out.stdout
            .contains("main of dots rewritten: 1 commit no longer upstream"),
        "{}",
        out.stdout
    );
    assert!(commits(&smirrors.join("dots.git")).contains(&old_tip));
    assert_eq!(refs(&smirrors.join("dots.git")), refs(&names[0].bare));
}

/// The SHA-256 of `data`, as Git LFS names objects.
fn sha256(data: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// Git LFS objects come along with their mirror, stay when upstream
/// rewrites the commit that named them, are fetched again by the next
/// run when the LFS server failed, and are in the restored mirror.
#[test]
fn lfs_objects_are_mirrored_and_kept() {
    if !crate::util::have("git-lfs") {
        crate::util::cannot_run(
            "git-lfs is not installed (Debian package git-lfs; .ci/run installs it)",
        );
    }
    let env = Env::new();
    env.ok(&["init"]);
    let forge = Forge::start(&env.path("forge"), "acme", true);
    forge.model.lock().unwrap().token = Some("tok".into());
    std::fs::write(env.path("token"), "tok").unwrap();
    let mut w = Work::new(&env, "assets", forge.add_repo("assets"));
    std::fs::write(
        w.dir.join(".gitattributes"),
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    )
    .unwrap();
    let put = |w: &mut Work, file: &str, data: &[u8]| -> String {
        let oid = sha256(data);
        let pointer = forge.add_lfs_object("assets", data, &oid);
        std::fs::write(w.dir.join(file), pointer).unwrap();
        oid
    };
    let a = crate::util::pseudo(300_000, 1);
    let oid_a = put(&mut w, "a.bin", &a);
    w.commit();
    w.push();
    let mirrors = env.path("mirrors");
    let mirror = || {
        cairn(
            &env,
            &[
                "--repo",
                s(&env.repo),
                "git",
                "mirror",
                "--forge",
                "github",
                "--base-url",
                &forge.url,
                "--owner",
                "acme",
                "--token-file",
                s(&env.path("token")),
                "--mirrors",
                s(&mirrors),
            ],
        )
    };
    let object = |oid: &str| {
        mirrors
            .join("assets.git/lfs/objects")
            .join(&oid[..2])
            .join(&oid[2..4])
            .join(oid)
    };
    mirror().expect(0);
    assert_eq!(std::fs::read(object(&oid_a)).unwrap(), a);

    // A second object whose server copy is missing: the run fails for
    // that repository, the mirror's refs still move, and the run after
    // the object is back fetches it although no ref moved.
    let b = crate::util::pseudo(200_000, 2);
    let oid_b = put(&mut w, "b.bin", &b);
    w.commit();
    w.push();
    let stored = forge.root.join("acme/assets.lfs").join(&oid_b);
    std::fs::rename(&stored, env.path("held")).unwrap();
    let out = mirror();
    assert_ne!(out.code, 0);
    assert!(out.stdout.contains("LFS"), "{}{}", out.stdout, out.stderr);
    assert!(!object(&oid_b).exists());
    std::fs::rename(env.path("held"), &stored).unwrap();
    let before = forge.model.lock().unwrap().lfs_downloads;
    let out = mirror().expect(0);
    assert!(
        out.stdout.contains("0 fetched, 1 unchanged"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read(object(&oid_b)).unwrap(), b);
    assert!(forge.model.lock().unwrap().lfs_downloads > before);

    // Upstream drops the commit that named b: the object stays, and the
    // restored mirror holds both.
    git(&w.dir, &["reset", "-q", "--hard", "HEAD~1"]);
    w.commit();
    w.push();
    let out = mirror().expect(0);
    assert!(
        out.stdout.contains("main of assets rewritten"),
        "{}",
        out.stdout
    );
    assert!(object(&oid_b).exists());
    let dest = env.path("restored");
    env.ok(&[
        "git",
        "restore",
        "latest",
        "assets",
        s(&dest),
        "--group",
        "git:github/acme",
    ]);
    for (oid, data) in [(&oid_a, &a), (&oid_b, &b)] {
        let p = dest
            .join("lfs/objects")
            .join(&oid[..2])
            .join(&oid[2..4])
            .join(oid);
        assert_eq!(&std::fs::read(&p).unwrap(), data, "{oid} restored");
    }
}

/// Pull-request heads are hidden refs: left out by default, mirrored
/// with `--pull-requests` (the heads, never the forge's merge commits),
/// and kept like branches when a request is force-pushed.
#[test]
fn pull_request_heads_only_when_asked() {
    let env = Env::new();
    let forge = Forge::start(&env.path("forge"), "acme", true);
    let mut w = Work::new(&env, "app", forge.add_repo("app"));
    w.commit();
    w.push();
    git(&w.dir, &["checkout", "-q", "-b", "pr"]);
    let pr1 = w.commit();
    git(&w.dir, &["push", "-q", s(&w.bare), "HEAD:refs/pull/1/head"]);
    let merge = w.commit();
    git(
        &w.dir,
        &[
            "push",
            "-q",
            s(&w.bare),
            &format!("{merge}:refs/pull/1/merge"),
        ],
    );
    let all_refs = |dir: &Path| git(dir, &["for-each-ref", "--format=%(refname)"]);
    let mirror = |mirrors: &Path, pulls: bool| {
        let mirrors = s(mirrors).to_string();
        let mut args = vec![
            "git",
            "mirror",
            "--forge",
            "github",
            "--base-url",
            &forge.url,
            "--owner",
            "acme",
            "--mirrors",
            &mirrors,
            "--no-snapshot",
        ];
        if pulls {
            args.push("--pull-requests");
        }
        cairn(&env, &args).expect(0)
    };
    let plain = env.path("plain");
    mirror(&plain, false);
    assert!(!all_refs(&plain.join("app.git")).contains("refs/pull/"));
    let with = env.path("with");
    mirror(&with, true);
    let got = all_refs(&with.join("app.git"));
    assert!(
        got.contains("refs/pull/1/head") && !got.contains("refs/pull/1/merge"),
        "{got}"
    );

    // The request is force-pushed: its old head is kept.
    git(&w.dir, &["reset", "-q", "--hard", "HEAD~2"]);
    w.commit();
    git(
        &w.dir,
        &["push", "-q", "--force", s(&w.bare), "HEAD:refs/pull/1/head"],
    );
    let out = mirror(&with, true);
    assert!(
        out.stdout
            .contains("pull/1/head of app rewritten: 1 commit no longer upstream"),
        "{}",
        out.stdout
    );
    assert!(commits(&with.join("app.git")).contains(&pr1));
}

/// What the systemd unit does: mirroring and snapshots as a user with no
/// privilege at all (as root, through `setpriv` as nobody).
#[test]
fn mirrors_as_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::util::is_root() {
        crate::util::cannot_run("this test switches to the user nobody; run it as root");
    }
    if !crate::util::have("setpriv") {
        crate::util::cannot_run("setpriv is not installed (util-linux; .ci/run installs it)");
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let forge = Forge::start(&env.path("forge"), "acme", true);
    let mut w = Work::new(&env, "shop", forge.add_repo("shop"));
    w.commit();
    let old = w.commit();
    w.push();
    let home = env.path("nobody");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .arg("--repo")
            .arg(home.join("repo"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("CAIRN_PASSWORD", crate::util::PASS);
        crate::util::run(c)
    };
    as_nobody(&["init"]).expect(0);
    let mirror = [
        "git",
        "mirror",
        "--forge",
        "github",
        "--base-url",
        &forge.url,
        "--owner",
        "acme",
    ];
    as_nobody(&mirror).expect(0);
    let m = home.join(".local/state/cairn/git/github-acme/shop.git");
    assert_eq!(refs(&m), refs(&w.bare));
    git(&w.dir, &["reset", "-q", "--hard", "HEAD~1"]);
    w.commit();
    w.push();
    let out = as_nobody(&mirror).expect(0);
    assert!(
        out.stdout.contains("main of shop rewritten"),
        "{}",
        out.stdout
    );
    assert!(commits(&m).contains(&old));
    let st = std::fs::metadata(m.join("HEAD")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&st), 65534);
    let snaps = as_nobody(&["--json", "snapshots"]).expect(0);
    assert_eq!(json(&snaps.stdout).as_array().unwrap().len(), 2);

    // Root running the same mirrors (`cairn run` on the daemon user's
    // state) is not stopped by git's ownership check.
    w.commit();
    w.push();
    let mut c = env.cmd();
    c.env("HOME", &home)
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .args([
            "git",
            "mirror",
            "--forge",
            "github",
            "--base-url",
            &forge.url,
        ])
        .args(["--owner", "acme", "--no-snapshot"]);
    let out = crate::util::run(c).expect(0);
    assert!(out.stdout.contains("1 fetched"), "{}", out.stdout);
    assert_eq!(refs(&m), refs(&w.bare));
}
