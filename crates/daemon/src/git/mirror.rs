//! One mirror brought up to date without ever losing a commit.
//!
//! A plain `git fetch --mirror` follows a force-push and a deleted branch
//! and drops what they dropped, which is why every mirroring tool loses
//! history when upstream rewrites it. Here a fetch never moves a branch
//! or tag backwards: first it takes only what is safe (new refs and
//! fast-forwards, git's own non-forced refspecs). When upstream still
//! differs, the upstream refs are fetched into a quarantine namespace,
//! each ref that would drop commits, vanish or (a tag) move keeps its old
//! tip under `refs/cairn/preserved/<time>/…`, and all ref changes land in
//! one `git update-ref` transaction. A fetch killed at any point leaves
//! the mirror's refs as they were or fast-forwarded, never rewound.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::refs::{self, Advertised, Discovery, RefMap};

/// How to reach an upstream.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Clone URL.
    pub url: String,
    /// `Authorization` header value for HTTP(S), if the token may go there.
    pub auth: Option<String>,
    /// `GIT_SSH_COMMAND`, for SSH URLs.
    pub ssh_command: Option<String>,
    /// The branch `HEAD` should name.
    pub default_branch: Option<String>,
    /// Mirror the heads of pull and merge requests too.
    pub pulls: bool,
    /// Set to stop: a fetch in progress is killed (its mirror keeps its
    /// refs, as after any killed fetch).
    pub cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Remote {
    fn is_http(&self) -> bool {
        self.url.starts_with("https://") || self.url.starts_with("http://")
    }
}

/// What upstream did to a ref since the last run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loss {
    /// A branch moved to a commit that does not contain its old tip.
    Rewritten,
    /// A branch or tag is gone upstream.
    Deleted,
    /// A tag points elsewhere.
    TagMoved,
}

/// A ref whose old tip was kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preserved {
    /// `refs/heads/main`.
    pub reference: String,
    /// What happened.
    pub loss: Loss,
    /// The old tip.
    pub old: String,
    /// Where it is kept.
    pub kept_as: String,
    /// Commits reachable from the old tip and from no upstream ref.
    pub lost_commits: u64,
}

impl Preserved {
    /// "main of shop rewritten: 42 commits no longer upstream".
    pub fn describe(&self, repo: &str) -> String {
        let short = self
            .reference
            .strip_prefix("refs/heads/")
            .or_else(|| self.reference.strip_prefix("refs/"))
            .unwrap_or(&self.reference);
        let what = match self.loss {
            Loss::Rewritten => "rewritten",
            Loss::Deleted => "deleted",
            Loss::TagMoved => "moved",
        };
        let commits = match self.lost_commits {
            0 => "no commits lost".to_string(),
            1 => "1 commit no longer upstream".to_string(),
            n => format!("{n} commits no longer upstream"),
        };
        format!(
            "{short} of {repo} {what}: {commits}; old tip {} kept as {}",
            &self.old[..self.old.len().min(12)],
            self.kept_as
        )
    }
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct Synced {
    /// Upstream matched the mirror; nothing was run.
    pub unchanged: bool,
    /// Refs created or moved.
    pub updated: usize,
    /// Old tips kept.
    pub preserved: Vec<Preserved>,
    /// Bytes of packs the fetch added.
    pub bytes: u64,
}

/// Why a sync failed; the mirror's refs are as they were.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The upstream repository does not exist (an unused wiki).
    #[error("no such repository upstream")]
    Missing,
    /// git failed.
    #[error("{0}")]
    Git(String),
    /// The run was asked to stop.
    #[error("stopped")]
    Interrupted,
    /// The mirror's files.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The quarantine namespace of the careful fetch.
const INCOMING: &str = "refs/cairn/incoming/";
/// Where old tips are kept.
pub const PRESERVED: &str = "refs/cairn/preserved/";
/// Packs in a mirror before small ones are rolled up.
const MAX_PACKS: usize = 24;

/// A git command in `dir` with the settings every mirror needs: no
/// automatic gc or maintenance (they would prune what we keep), packs
/// kept as fetched (one file, not hundreds of loose objects), no prompt,
/// no credential helper, and only http(s) and ssh transports, so a
/// hostile clone URL cannot name `ext::` or a local path.
pub(super) fn git(dir: &Path, remote: Option<&Remote>) -> Command {
    let mut c = Command::new("git");
    // The mirror is this job's own: `cairn run` as root on the daemon
    // user's mirrors must not trip git's ownership check.
    c.arg("-C")
        .arg(dir)
        .arg("-c")
        .arg(format!("safe.directory={}", dir.display()));
    for kv in [
        "gc.auto=0",
        "maintenance.auto=false",
        "fetch.unpackLimit=1",
        "transfer.unpackLimit=1",
        "fetch.writeCommitGraph=false",
        "core.askPass=",
        "credential.helper=",
        // Protocol v0: the fetch's first request is the ref advertisement
        // this run already read, one request per fetch fewer than v2's
        // separate ls-refs (which costs the forge a process each).
        "protocol.version=0",
    ] {
        c.arg("-c").arg(kv);
    }
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "http:https:ssh")
        .env("GIT_ASKPASS", "true")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null());
    if let Some(r) = remote {
        if let Some(a) = &r.auth {
            // Through the environment, not argv, so `ps` does not show it.
            c.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", format!("Authorization: {a}"));
        }
        if let Some(s) = &r.ssh_command {
            c.env("GIT_SSH_COMMAND", s);
        }
    }
    c
}

/// A finished git's stdout on success, its stderr's tail on failure.
fn finished(out: std::process::Output, what: &str) -> Result<Vec<u8>, SyncError> {
    if out.status.success() {
        return Ok(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
    Err(SyncError::Git(format!(
        "{what} failed ({}): {tail}",
        out.status
    )))
}

/// Runs `cmd`, its stdout on success, its stderr's tail on failure.
fn run(mut cmd: Command, what: &str) -> Result<Vec<u8>, SyncError> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| SyncError::Git(format!("{what}: cannot start git: {e}")))?;
    finished(out, what)
}

/// Runs a fetch like [`run`], killing it as soon as `cancel` is set (its
/// helpers, left without their parent, stop at the end of their pipes).
/// It stays in cairn's process group, so whatever kills a daemon's whole
/// group kills it too, and no orphaned fetch writes into a mirror that
/// the next run holds.
fn run_cancellable(
    mut cmd: Command,
    what: &str,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Vec<u8>, SyncError> {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SyncError::Git(format!("{what}: cannot start git: {e}")))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(out) => break out.map_err(|e| SyncError::Git(format!("{what}: {e}")))?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if cancel.load(Ordering::Relaxed) {
                    // The helpers hold the fetch's pipes: the waiter is
                    // left to reap it once they are gone too.
                    kill_tree(pid);
                    return Err(SyncError::Interrupted);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(SyncError::Git(format!("{what}: lost the process")));
            }
        }
    };
    finished(out, what)
}

/// Kills `pid` and every process below it (git's remote helper,
/// fetch-pack, index-pack), found through `/proc` before the parent dies
/// and they are handed to init.
fn kill_tree(pid: u32) {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for ent in rd.flatten() {
            let Some(p) = ent.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(ent.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parens.
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|x| x.parse::<u32>().ok())
            {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    for p in tree {
        if let Some(p) = rustix::process::Pid::from_raw(p as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

/// Creates the bare repository at `dir` if it is not there.
pub fn ensure(dir: &Path) -> Result<(), SyncError> {
    if dir.join("HEAD").exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // Into a temporary name and renamed: a killed init leaves no
    // half-made mirror behind under the real name.
    let tmp = dir.with_extension("git.init-tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let mut c = Command::new("git");
    c.arg("init").arg("--bare").arg("-q").arg(&tmp);
    run(c, "git init")?;
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    Ok(())
}

/// Removes what a killed git leaves: lock files (which would make every
/// later fetch fail) and half-written packs. The caller holds the
/// mirrors' lock, so no git is running here.
pub fn clean_stale(dir: &Path) -> Result<(), SyncError> {
    for f in [
        "packed-refs.lock",
        "config.lock",
        "HEAD.lock",
        "shallow.lock",
    ] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    remove_locks(&dir.join("refs"))?;
    let pack = dir.join("objects/pack");
    if let Ok(rd) = std::fs::read_dir(&pack) {
        for ent in rd.flatten() {
            let n = ent.file_name();
            let n = n.to_string_lossy();
            // A killed fetch also leaves the `.keep` that guarded its
            // pack until the refs moved; it would keep the pack out of
            // every later repack.
            let fetch_keep = n.ends_with(".keep")
                && std::fs::read_to_string(ent.path()).is_ok_and(|k| k.starts_with("fetch-pack"));
            if n.starts_with("tmp_") || n.starts_with(".tmp-") || fetch_keep {
                let _ = std::fs::remove_file(ent.path());
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("objects")) {
        for ent in rd.flatten() {
            let n = ent.file_name();
            if n.to_string_lossy().starts_with("incoming-")
                || n.to_string_lossy().starts_with("tmp_objdir")
            {
                let _ = std::fs::remove_dir_all(ent.path());
            }
        }
    }
    Ok(())
}

fn remove_locks(dir: &Path) -> Result<(), SyncError> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for ent in rd.flatten() {
        let p = ent.path();
        match ent.file_type() {
            Ok(t) if t.is_dir() => remove_locks(&p)?,
            Ok(_) if p.extension().is_some_and(|e| e == "lock") => {
                std::fs::remove_file(&p).map_err(io(&p))?
            }
            _ => {}
        }
    }
    Ok(())
}

fn pack_bytes(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut packs = 0;
    if let Ok(rd) = std::fs::read_dir(dir.join("objects/pack")) {
        for ent in rd.flatten() {
            if let Ok(m) = ent.metadata() {
                bytes += m.len();
            }
            if ent.file_name().to_string_lossy().ends_with(".pack") {
                packs += 1;
            }
        }
    }
    (bytes, packs)
}

/// Brings the mirror at `dir` up to date with `remote`, keeping every old
/// tip a change would drop; `stamp` names this run's preserved refs.
pub fn sync(
    dir: &Path,
    remote: &Remote,
    agent: &ureq::Agent,
    stamp: &str,
) -> Result<Synced, SyncError> {
    let created = !dir.join("HEAD").exists();
    // What upstream has, without a process, where the protocol allows.
    let advertised: Option<Advertised> = if remote.is_http() {
        match refs::discover(agent, &remote.url, remote.auth.as_deref(), remote.pulls) {
            Ok(a) => Some(a),
            Err(Discovery::Missing) if created => return Err(SyncError::Missing),
            Err(_) => None,
        }
    } else {
        None
    };
    if !created {
        clean_stale(dir)?;
        if let Some(a) = &advertised
            && refs::local(dir, remote.pulls).map_err(io(dir))? == a.refs
        {
            return Ok(Synced {
                unchanged: true,
                ..Synced::default()
            });
        }
    }
    ensure(dir)?;
    let (bytes_before, _) = pack_bytes(dir);
    let before = refs::local(dir, remote.pulls).map_err(io(dir))?;
    let mut synced = Synced::default();
    let mut now = before.clone();
    let mut fast = false;
    if let Some(a) = &advertised
        && !created
    {
        // Upstream only added: one request and two processes, no git fetch.
        match super::smart_http::fast_fetch(
            agent,
            dir,
            &remote.url,
            remote.auth.as_deref(),
            a,
            &before,
        ) {
            Ok(super::smart_http::Fast::Done { .. }) => {
                fast = true;
                now = refs::local(dir, remote.pulls).map_err(io(dir))?;
            }
            Ok(super::smart_http::Fast::Careful(_)) => fast = true,
            Err(_) => {}
        }
    }
    if advertised.is_some() && !fast {
        // New refs and fast-forwards only: git refuses the rest, which
        // the careful pass below then handles.
        let mut c = git(dir, Some(remote));
        c.args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-gc",
            "--no-auto-maintenance",
            "--no-recurse-submodules",
            "--",
            &remote.url,
            "refs/heads/*:refs/heads/*",
            "refs/tags/*:refs/tags/*",
        ]);
        // A refusal exits non-zero; whether anything is left to do is
        // judged by the refs, not the exit code.
        if let Err(SyncError::Interrupted) = run_cancellable(c, "git fetch", &remote.cancel) {
            return Err(SyncError::Interrupted);
        }
        now = refs::local(dir, remote.pulls).map_err(io(dir))?;
    }
    let settled = advertised.as_ref().is_some_and(|a| a.refs == now);
    if !settled {
        careful(dir, remote, stamp, &mut now, &mut synced)?;
    }
    synced.updated += now
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .count();
    let head = remote
        .default_branch
        .as_ref()
        .map(|b| format!("refs/heads/{b}"))
        .or_else(|| advertised.as_ref().and_then(|a| a.head.clone()));
    if let Some(h) = head
        && now.contains_key(&h)
    {
        set_head(dir, &h)?;
    }
    let (bytes_after, packs) = pack_bytes(dir);
    synced.bytes = bytes_after.saturating_sub(bytes_before);
    if packs > MAX_PACKS {
        // Rolls small packs into bigger ones; every object of a rolled-up
        // pack goes into the new one, so nothing unreferenced is dropped.
        let mut c = git(dir, None);
        c.args(["repack", "-d", "-q", "--geometric=2"]);
        run(c, "git repack")?;
    }
    Ok(synced)
}

/// Whether `git lfs` can run here.
pub fn lfs_installed() -> bool {
    Command::new("git")
        .args(["lfs", "version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the mirror's default branch says it uses Git LFS (a
/// `filter=lfs` line in its top `.gitattributes`): one small git call,
/// where starting git-lfs and scanning history for every moved mirror
/// would cost more than the fetch itself.
pub fn uses_lfs(dir: &Path) -> bool {
    let mut c = git(dir, None);
    c.args(["cat-file", "-p", "HEAD:.gitattributes"]);
    run(c, "git cat-file").is_ok_and(|out| String::from_utf8_lossy(&out).contains("filter=lfs"))
}

/// Fetches the Git LFS objects every ref of the mirror at `dir` needs
/// (preserved refs included) from the LFS server of `remote` (an HTTPS
/// clone URL), into the mirror's `lfs/objects`. Returns the bytes added.
pub fn lfs_fetch(dir: &Path, remote: &Remote) -> Result<u64, SyncError> {
    let before = dir_bytes(&dir.join("lfs/objects"));
    let mut c = git(dir, Some(remote));
    c.arg("-c")
        .arg(format!("remote.origin.url={}", remote.url))
        .arg("-c")
        .arg(format!(
            "lfs.url={}/info/lfs",
            remote.url.trim_end_matches('/')
        ))
        .args(["lfs", "fetch", "--all", "origin"]);
    run_cancellable(c, "git lfs fetch", &remote.cancel)?;
    Ok(dir_bytes(&dir.join("lfs/objects")).saturating_sub(before))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Points `HEAD` at `target` when it names another branch.
fn set_head(dir: &Path, target: &str) -> Result<(), SyncError> {
    let head = dir.join("HEAD");
    let cur = std::fs::read_to_string(&head).unwrap_or_default();
    if cur.trim_end() == format!("ref: {target}") {
        return Ok(());
    }
    let mut c = git(dir, None);
    c.args(["symbolic-ref", "HEAD", target]);
    run(c, "git symbolic-ref").map(|_| ())
}

/// Fetches upstream's refs into quarantine and applies them, keeping
/// every old tip that would be lost.
fn careful(
    dir: &Path,
    remote: &Remote,
    stamp: &str,
    now: &mut RefMap,
    synced: &mut Synced,
) -> Result<(), SyncError> {
    let mut c = git(dir, Some(remote));
    c.args([
        "fetch",
        "--quiet",
        "--no-tags",
        "--prune",
        "--no-write-fetch-head",
        "--no-auto-gc",
        "--no-auto-maintenance",
        "--no-recurse-submodules",
        "--",
        &remote.url,
        "+refs/heads/*:refs/cairn/incoming/heads/*",
        "+refs/tags/*:refs/cairn/incoming/tags/*",
    ]);
    if remote.pulls {
        c.args([
            "+refs/pull/*:refs/cairn/incoming/pull/*",
            "+refs/merge-requests/*:refs/cairn/incoming/merge-requests/*",
        ]);
    }
    run_cancellable(c, "git fetch", &remote.cancel).map_err(|e| match e {
        SyncError::Git(m)
            if m.contains("not found") || m.contains("does not appear to be a git repository") =>
        {
            if now.is_empty() {
                SyncError::Missing
            } else {
                SyncError::Git(m)
            }
        }
        e => e,
    })?;
    let incoming = incoming_refs(dir)?;
    let upstream: RefMap = incoming
        .iter()
        .map(|(k, v)| (format!("refs/{}", &k[INCOMING.len()..]), v.clone()))
        .filter(|(k, _)| refs::mirrored(k, remote.pulls))
        .collect();
    let mut tx = String::new();
    let names: std::collections::BTreeSet<&String> = now.keys().chain(upstream.keys()).collect();
    for name in names {
        let (old, new) = (now.get(name), upstream.get(name));
        let loss = match (old, new) {
            (Some(o), Some(n)) if o == n => continue,
            (None, Some(n)) => {
                tx.push_str(&format!("create {name} {n}\n"));
                continue;
            }
            (None, None) => continue,
            (Some(_), None) => Loss::Deleted,
            (Some(_), Some(_)) if name.starts_with("refs/tags/") => Loss::TagMoved,
            (Some(o), Some(n)) => {
                if count(dir, &[o.as_str(), "--not", n.as_str()])? == 0 {
                    tx.push_str(&format!("update {name} {n} {o}\n"));
                    continue;
                }
                Loss::Rewritten
            }
        };
        let o = old.expect("a loss has an old tip");
        // Lost: reachable from the old tip and from no ref the mirror
        // keeps upstream (a forge's merge ref does not count).
        let lost = count_not(dir, o, upstream.values())?;
        let kept_as = format!("{PRESERVED}{stamp}/{}", &name["refs/".len()..]);
        tx.push_str(&format!("create {kept_as} {o}\n"));
        match new {
            Some(n) => tx.push_str(&format!("update {name} {n} {o}\n")),
            None => tx.push_str(&format!("delete {name} {o}\n")),
        }
        synced.preserved.push(Preserved {
            reference: name.clone(),
            loss,
            old: o.clone(),
            kept_as,
            lost_commits: lost,
        });
    }
    for (k, v) in &incoming {
        tx.push_str(&format!("delete {k} {v}\n"));
    }
    let mut c = git(dir, None);
    c.args(["update-ref", "--stdin"]);
    run_with_input(c, tx.as_bytes(), "git update-ref")?;
    *now = upstream;
    Ok(())
}

fn incoming_refs(dir: &Path) -> Result<RefMap, SyncError> {
    let mut c = git(dir, None);
    c.args([
        "for-each-ref",
        "--format=%(objectname) %(refname)",
        INCOMING,
    ]);
    let out = run(c, "git for-each-ref")?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(o, n)| (n.to_string(), o.to_string()))
        .collect())
}

/// `git rev-list --count ARGS`.
fn count(dir: &Path, args: &[&str]) -> Result<u64, SyncError> {
    let mut c = git(dir, None);
    c.args(["rev-list", "--count"]).args(args);
    parse_count(&run(c, "git rev-list")?)
}

fn parse_count(out: &[u8]) -> Result<u64, SyncError> {
    String::from_utf8_lossy(out)
        .trim()
        .parse()
        .map_err(|_| SyncError::Git("git rev-list printed no count".into()))
}

/// Commits reachable from `tip` and from none of `not`.
fn count_not<'a>(
    dir: &Path,
    tip: &str,
    not: impl Iterator<Item = &'a String>,
) -> Result<u64, SyncError> {
    let mut input = format!("{tip}\n--not\n");
    for n in not {
        input.push_str(n);
        input.push('\n');
    }
    let mut c = git(dir, None);
    c.args(["rev-list", "--count", "--stdin"]);
    parse_count(&run_output_with_input(c, input.as_bytes(), "git rev-list")?)
}

fn run_with_input(cmd: Command, input: &[u8], what: &str) -> Result<(), SyncError> {
    run_output_with_input(cmd, input, what).map(|_| ())
}

/// Runs `cmd` with `input` on its stdin; its stdout.
fn run_output_with_input(mut cmd: Command, input: &[u8], what: &str) -> Result<Vec<u8>, SyncError> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SyncError::Git(format!("{what}: cannot start git: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let wrote = stdin.write_all(input);
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| SyncError::Git(format!("{what}: {e}")))?;
    if let Err(e) = wrote {
        return Err(SyncError::Git(format!("{what}: {e}")));
    }
    finished(out, what)
}
