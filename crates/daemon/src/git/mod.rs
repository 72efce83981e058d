//! Forge mirroring: every repository of a GitHub, GitLab, Gitea or
//! Forgejo owner kept as a bare mirror that no force-push or deletion
//! upstream can erase, then snapshotted, so the mirrors' own history is
//! versioned too.
//!
//! A run lists the owner's repositories ([`forge`]), matches them to the
//! mirrors by stable ID ([`manifest`]: renames are followed, deletions
//! kept and flagged), fetches them a few at a time ([`mirror`]: old tips
//! are kept before anything would drop them), and says what upstream
//! rewrote or deleted. A listing that fails touches no mirror.

pub mod forge;
pub mod manifest;
pub mod mirror;
pub mod refs;
pub mod restore;
pub mod smart_http;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forge::{ForgeKind, ForgeRepo, Listing};
use manifest::{Entry, Manifest};
use mirror::{Remote, SyncError};

/// What to mirror, and how: a `kind = "git"` job or `cairn git mirror`.
#[derive(Clone, Debug, PartialEq)]
pub struct GitJob {
    /// The forge's API.
    pub forge: ForgeKind,
    /// Its web address (default: the public instance).
    pub base_url: Option<String>,
    /// User, organisation or GitLab group.
    pub owner: String,
    /// File holding the API token.
    pub token_file: Option<PathBuf>,
    /// Names mirrored (`*` matches any run of characters).
    pub include: Vec<String>,
    /// Names left out.
    pub exclude: Vec<String>,
    /// Mirror forks too.
    pub forks: bool,
    /// Mirror archived repositories too.
    pub archived: bool,
    /// Mirror wikis.
    pub wikis: bool,
    /// Fetch Git LFS objects: `None` when git-lfs is installed, `Some(true)`
    /// says so in every run's message when it is not.
    pub lfs: Option<bool>,
    /// Mirror the heads of pull and merge requests (hidden refs, off by
    /// default: forges keep one per request ever opened).
    pub pull_requests: bool,
    /// Fetch over SSH rather than HTTPS.
    pub ssh: bool,
    /// `GIT_SSH_COMMAND` for SSH fetches.
    pub ssh_command: Option<String>,
    /// Fetches at once.
    pub fetches: usize,
    /// Snapshot group (default `git:<forge>/<owner>`).
    pub group: Option<String>,
}

impl Default for GitJob {
    fn default() -> GitJob {
        GitJob {
            forge: ForgeKind::GitHub,
            base_url: None,
            owner: String::new(),
            token_file: None,
            include: vec!["*".into()],
            exclude: Vec::new(),
            forks: false,
            archived: true,
            wikis: true,
            lfs: None,
            pull_requests: false,
            ssh: false,
            ssh_command: None,
            fetches: DEFAULT_FETCHES,
            group: None,
        }
    }
}

/// Fetches at once by default: enough to hide the network's round trips,
/// few enough not to look like abuse to a forge.
pub const DEFAULT_FETCHES: usize = 8;

impl GitJob {
    /// The snapshot group.
    pub fn group(&self) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("git:{}/{}", self.forge.name(), self.owner))
    }

    /// The forge's web address.
    pub fn base(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| self.forge.default_base().to_string())
            .trim_end_matches('/')
            .to_string()
    }

    fn wanted(&self, r: &ForgeRepo) -> bool {
        (self.forks || !r.fork)
            && (self.archived || !r.archived)
            && self
                .include
                .iter()
                .any(|p| cairn_store::snapshots::group_matches(p, &r.name))
            && !self
                .exclude
                .iter()
                .any(|p| cairn_store::snapshots::group_matches(p, &r.name))
    }
}

/// How a run went.
#[derive(Debug, Default)]
pub struct Summary {
    /// Repositories the forge listed.
    pub listed: usize,
    /// Of those, mirrored by this job's filters.
    pub mirrored: usize,
    /// Mirrors whose upstream had not changed.
    pub unchanged: usize,
    /// Mirrors fetched.
    pub fetched: usize,
    /// Bytes of packs fetched.
    pub bytes: u64,
    /// Refs whose old tip was kept, described.
    pub preserved: Vec<String>,
    /// Repositories first seen deleted upstream in this run.
    pub newly_deleted: Vec<String>,
    /// Mirrors kept of repositories deleted upstream.
    pub deleted: Vec<String>,
    /// Renames followed: (old, new).
    pub renamed: Vec<(String, String)>,
    /// New repositories.
    pub added: Vec<String>,
    /// Fetches that failed: (name, why).
    pub failed: Vec<(String, String)>,
    /// Names the forge sent that cannot be directories.
    pub refused_names: Vec<String>,
    /// LFS objects were asked for but git-lfs is not installed.
    pub lfs_missing: bool,
    /// Rate-limit waits.
    pub limit_waits: u32,
    /// Time spent in them.
    pub waited: Duration,
}

impl Summary {
    /// One line for the run's record.
    pub fn message(&self) -> String {
        let mut m = format!(
            "{} repositories mirrored ({} listed): {} fetched, {} unchanged, {} received",
            self.mirrored,
            self.listed,
            self.fetched,
            self.unchanged,
            cairn_maint::units::human(self.bytes)
        );
        if !self.added.is_empty() {
            m.push_str(&format!("; {} new", self.added.len()));
        }
        for (a, b) in &self.renamed {
            m.push_str(&format!("; {a} renamed to {b}"));
        }
        if !self.preserved.is_empty() {
            m.push_str(&format!(
                "; {} refs rewritten or deleted upstream, old tips kept",
                self.preserved.len()
            ));
        }
        if !self.deleted.is_empty() {
            m.push_str(&format!(
                "; deleted upstream, mirror kept: {}",
                self.deleted.join(", ")
            ));
        }
        if self.limit_waits > 0 {
            m.push_str(&format!(
                "; waited {} s for rate limits",
                self.waited.as_secs()
            ));
        }
        if !self.failed.is_empty() {
            let (n, why) = &self.failed[0];
            m.push_str(&format!(
                "; {} fetches failed (their mirrors are as they were), first: {n}: {why}",
                self.failed.len()
            ));
        }
        if self.lfs_missing {
            m.push_str("; LFS objects not fetched: git-lfs is not installed (apt-get install git-lfs), or set lfs = false");
        }
        if !self.refused_names.is_empty() {
            m.push_str(&format!(
                "; names that cannot be directories, skipped: {}",
                self.refused_names.join(", ")
            ));
        }
        m
    }

    /// What upstream did that a person should hear of, once.
    pub fn news(&self) -> Vec<String> {
        let mut out = self.preserved.clone();
        for n in &self.newly_deleted {
            out.push(format!(
                "{n} was deleted upstream (or hidden from the token); its mirror is kept"
            ));
        }
        out
    }
}

/// Why a run did nothing.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The listing failed; no mirror was touched.
    #[error(transparent)]
    Forge(#[from] forge::ForgeError),
    /// The token file.
    #[error("cannot read the token file {}: {source}", .path.display())]
    Token {
        /// Where.
        path: PathBuf,
        /// What.
        source: std::io::Error,
    },
    /// The mirrors directory.
    #[error("{0}")]
    Mirrors(String),
    /// Another run holds the mirrors.
    #[error("another run is mirroring into {}", .0.display())]
    Busy(PathBuf),
    /// Stopped.
    #[error("stopped before the mirrors were brought up to date")]
    Interrupted,
}

/// Knobs tests turn.
#[derive(Clone, Debug)]
pub struct Pace {
    /// The wait after a 429 that says nothing more.
    pub bare_limit_wait: Duration,
    /// Pause between retries of a 5xx.
    pub retry_pause: Duration,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            bare_limit_wait: forge_paging_wait(),
            retry_pause: Duration::from_secs(2),
        }
    }
}

fn forge_paging_wait() -> Duration {
    crate::forge_paging::BARE_LIMIT_WAIT
}

impl Pace {
    /// The defaults, or waits in milliseconds from
    /// `CAIRN_FORGE_BARE_WAIT_MS` and `CAIRN_FORGE_RETRY_MS`, which the
    /// tests set so that a bare 429 does not cost them a minute.
    pub fn from_env() -> Pace {
        let ms = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        let d = Pace::default();
        Pace {
            bare_limit_wait: ms("CAIRN_FORGE_BARE_WAIT_MS").unwrap_or(d.bare_limit_wait),
            retry_pause: ms("CAIRN_FORGE_RETRY_MS").unwrap_or(d.retry_pause),
        }
    }
}

/// The lock file in a mirrors directory (left out of snapshots).
pub const LOCK_FILE: &str = "cairn-mirrors.lock";

/// Where a daemon job keeps its mirrors: `STATE/git/JOB`.
pub fn mirrors_dir(state: &Path, job: &str) -> PathBuf {
    state.join("git").join(job)
}

/// How the mirrors directory is backed up: one path, its lock file left
/// out, in the job's group.
pub fn snapshot_options(
    repo: &cairn_repo::Repo,
    root: &Path,
    group: &str,
    command: String,
) -> cairn_engine::archiver::BackupOptions {
    cairn_engine::archiver::BackupOptions {
        paths: vec![root.to_path_buf()],
        excludes: vec![root.join(LOCK_FILE).to_string_lossy().into_owned()],
        group: Some(group.to_string()),
        cache_dir: Some(crate::open::cache_dir(repo)),
        command: vec![command],
        hostname: cairn_store::hostname(),
        state_dir: Some(crate::open::machine_state(repo)),
        ..cairn_engine::archiver::BackupOptions::default()
    }
}

/// The preserved refs' directory name for a run at `now_ns`, to the
/// nanosecond: two runs never share one, however close.
fn stamp(now_ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(now_ns as i128)
        .map(|t| t.strftime("%Y%m%dT%H%M%S.%fZ").to_string())
        .unwrap_or_else(|_| now_ns.to_string())
}

/// Brings every mirror in `root` up to date.
pub fn mirror(
    job: &GitJob,
    root: &Path,
    pace: &Pace,
    cancel: &Arc<AtomicBool>,
) -> Result<Summary, GitError> {
    std::fs::create_dir_all(root)
        .map_err(|e| GitError::Mirrors(format!("cannot create {}: {e}", root.display())))?;
    let _lock = lock(root)?;
    let token = match &job.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|source| GitError::Token {
                    path: p.clone(),
                    source,
                })?
                .trim()
                .to_string(),
        )
        .filter(|t| !t.is_empty()),
        None => None,
    };
    let base = job.base();
    let listing = Listing {
        kind: job.forge,
        base_url: base.clone(),
        owner: job.owner.clone(),
        token: token.clone(),
        bare_limit_wait: pace.bare_limit_wait,
        retry_pause: pace.retry_pause,
    };
    let listed = forge::list(&listing, cancel).map_err(|e| match e {
        forge::ForgeError::Interrupted => GitError::Interrupted,
        e => GitError::Forge(e),
    })?;
    let mut man = Manifest::load(root).map_err(GitError::Mirrors)?;
    man.version = 1;
    man.forge = job.forge.name().into();
    man.base_url = base.clone();
    man.owner = job.owner.clone();
    let now = cairn_store::now_ns();
    let mut sum = Summary {
        listed: listed.repos.len(),
        refused_names: listed.refused_names.clone(),
        limit_waits: listed.limit_waits,
        waited: listed.waited,
        ..Summary::default()
    };

    // Deleted upstream: IDs the full listing no longer holds.
    let ids: HashSet<u64> = listed.repos.iter().map(|r| r.id).collect();
    for e in &mut man.repos {
        if !ids.contains(&e.id) && e.deleted_ns.is_none() {
            e.deleted_ns = Some(now);
            sum.newly_deleted.push(e.name.clone());
        }
    }

    let mut work = Vec::new();
    for r in listed.repos.iter().filter(|r| job.wanted(r)) {
        let at = place(root, &mut man, r, &mut sum)?;
        work.push((r.clone(), at));
    }
    man.save(root).map_err(GitError::Mirrors)?;
    sum.mirrored = work.len();
    sum.deleted = man
        .repos
        .iter()
        .filter(|e| e.deleted_ns.is_some())
        .map(|e| e.name.clone())
        .collect();

    let auth = token.as_ref().map(|t| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{t}", job.forge.git_user()))
        )
    });
    let st = stamp(now);
    let lfs = job.lfs != Some(false) && mirror::lfs_installed();
    sum.lfs_missing = job.lfs == Some(true) && !lfs;
    let pending: HashSet<u64> = man
        .repos
        .iter()
        .filter(|e| e.lfs_pending)
        .map(|e| e.id)
        .collect();
    let known_lfs: HashSet<u64> = man
        .repos
        .iter()
        .filter(|e| e.uses_lfs)
        .map(|e| e.id)
        .collect();
    let opts = FetchOpts {
        base: &base,
        auth: auth.as_deref(),
        stamp: &st,
        lfs,
        lfs_pending: &pending,
        known_lfs: &known_lfs,
    };
    let results = fetch_all(job, root, &opts, work, cancel);
    if cancel.load(Ordering::Relaxed) {
        return Err(GitError::Interrupted);
    }
    let mut fetched_ids = Vec::new();
    let mut lfs_state = Vec::new();
    for (r, res, lfs_ok) in results {
        if let Some(ok) = lfs_ok {
            lfs_state.push((r.id, !ok));
        }
        match res {
            Ok((main, wiki)) => {
                fetched_ids.push((r.id, wiki.is_some()));
                for s in std::iter::once(&main).chain(wiki.as_ref()) {
                    if s.unchanged {
                        sum.unchanged += 1;
                    } else {
                        sum.fetched += 1;
                    }
                    sum.bytes += s.bytes;
                }
                sum.preserved
                    .extend(main.preserved.iter().map(|p| p.describe(&r.name)));
                if let Some(w) = &wiki {
                    let name = format!("{} (wiki)", r.name);
                    sum.preserved
                        .extend(w.preserved.iter().map(|p| p.describe(&name)));
                }
            }
            Err(e) => sum.failed.push((r.name.clone(), e)),
        }
    }
    for (id, wiki) in fetched_ids {
        if let Some(e) = man.repos.iter_mut().find(|e| e.id == id) {
            e.fetched_ns = Some(now);
            e.wiki_dir = wiki.then(|| manifest::wiki_dir_for(&e.name));
        }
    }
    for (id, pending) in lfs_state {
        if let Some(e) = man.repos.iter_mut().find(|e| e.id == id) {
            e.lfs_pending = pending;
            e.uses_lfs = true;
        }
    }
    man.save(root).map_err(GitError::Mirrors)?;
    Ok(sum)
}

/// The mirror directory for a listed repository: a known ID keeps its
/// mirror (moved along when renamed), a new one gets its name.
fn place(
    root: &Path,
    man: &mut Manifest,
    r: &ForgeRepo,
    sum: &mut Summary,
) -> Result<PathBuf, GitError> {
    let want = manifest::dir_for(&r.name);
    // A deleted repository whose name a new one now has moves aside.
    if let Some(other) = man.repos.iter_mut().find(|e| e.id != r.id && e.dir == want) {
        let to = manifest::aside(root, &other.name, other.id);
        move_dir(&root.join(&other.dir), &to)?;
        if let Some(w) = other.wiki_dir.take() {
            let wto = root.join(format!("{}.deleted-{}.wiki.git", other.name, other.id));
            move_dir(&root.join(w), &wto)?;
            other.wiki_dir = Some(rel(root, &wto));
        }
        other.dir = rel(root, &to);
    }
    match man.repos.iter_mut().find(|e| e.id == r.id) {
        Some(e) => {
            e.deleted_ns = None;
            if e.name != r.name {
                sum.renamed.push((e.name.clone(), r.name.clone()));
                let old_name = std::mem::replace(&mut e.name, r.name.clone());
                e.former_names.push(old_name);
            }
            if e.dir != want {
                move_dir(&root.join(&e.dir), &root.join(&want))?;
                if let Some(w) = e.wiki_dir.take() {
                    let wto = manifest::wiki_dir_for(&r.name);
                    move_dir(&root.join(w), &root.join(&wto))?;
                    e.wiki_dir = Some(wto);
                }
                e.dir = want.clone();
            }
        }
        None => {
            sum.added.push(r.name.clone());
            man.repos.push(Entry {
                id: r.id,
                name: r.name.clone(),
                dir: want.clone(),
                ..Entry::default()
            });
        }
    }
    Ok(root.join(want))
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn move_dir(from: &Path, to: &Path) -> Result<(), GitError> {
    if !from.exists() {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| GitError::Mirrors(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::rename(from, to).map_err(|e| {
        GitError::Mirrors(format!(
            "cannot move {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

/// A repository's outcome: its mirror's and its wiki's syncs, and whether
/// its LFS objects were fetched (`None`: not tried).
type Fetched = (
    ForgeRepo,
    Result<(mirror::Synced, Option<mirror::Synced>), String>,
    Option<bool>,
);

/// What every fetch of a run shares.
struct FetchOpts<'a> {
    base: &'a str,
    auth: Option<&'a str>,
    stamp: &'a str,
    lfs: bool,
    lfs_pending: &'a HashSet<u64>,
    known_lfs: &'a HashSet<u64>,
}

/// Syncs every mirror, `job.fetches` at a time.
fn fetch_all(
    job: &GitJob,
    root: &Path,
    o: &FetchOpts<'_>,
    work: Vec<(ForgeRepo, PathBuf)>,
    cancel: &Arc<AtomicBool>,
) -> Vec<Fetched> {
    let (auth, stamp) = (o.auth, o.stamp);
    let agent = refs::agent();
    let queue = Mutex::new(work.into_iter());
    let out = Mutex::new(Vec::new());
    let base_origin = origin(o.base);
    std::thread::scope(|s| {
        for _ in 0..job.fetches.max(1) {
            s.spawn(|| {
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some((r, dir)) = queue.lock().expect("queue").next() else {
                        return;
                    };
                    let remote = |url: &str| Remote {
                        url: url.to_string(),
                        // The token goes only where the forge lives: a
                        // clone URL elsewhere is fetched without it.
                        auth: auth
                            .filter(|_| !job.ssh && same_site(&origin(url), &base_origin))
                            .map(str::to_string),
                        ssh_command: job.ssh_command.clone(),
                        default_branch: r.default_branch.clone(),
                        pulls: job.pull_requests,
                        cancel: cancel.clone(),
                    };
                    let url = if job.ssh { &r.ssh_url } else { &r.https_url };
                    let main =
                        mirror::sync(&dir, &remote(url), &agent, stamp).map_err(|e| e.to_string());
                    // LFS objects come over HTTPS whichever way git
                    // fetches: after refs moved, or when the last try failed.
                    let mut lfs_ok = None;
                    let main = main.and_then(|m| {
                        let wanted = o.lfs
                            && (o.lfs_pending.contains(&r.id)
                                || (!m.unchanged
                                    && (o.known_lfs.contains(&r.id) || mirror::uses_lfs(&dir))));
                        if !wanted {
                            return Ok(m);
                        }
                        let mut lr = remote(&r.https_url);
                        lr.auth = auth
                            .filter(|_| same_site(&origin(&r.https_url), &base_origin))
                            .map(str::to_string);
                        match mirror::lfs_fetch(&dir, &lr) {
                            Ok(bytes) => {
                                lfs_ok = Some(true);
                                Ok(mirror::Synced {
                                    bytes: m.bytes + bytes,
                                    ..m
                                })
                            }
                            Err(e) => {
                                lfs_ok = Some(false);
                                Err(format!("LFS: {e}"))
                            }
                        }
                    });
                    let res = main.and_then(|m| {
                        if !(job.wikis && r.has_wiki) {
                            return Ok((m, None));
                        }
                        let wdir = root.join(manifest::wiki_dir_for(&r.name));
                        let mut wr = remote(&ForgeRepo::wiki_url(url));
                        wr.default_branch = None;
                        wr.pulls = false;
                        match mirror::sync(&wdir, &wr, &agent, stamp) {
                            Ok(w) => Ok((m, Some(w))),
                            // A wiki never written is no wiki.
                            Err(SyncError::Missing) => Ok((m, None)),
                            Err(e) => Err(format!("wiki: {e}")),
                        }
                    });
                    out.lock().expect("results").push((r, res, lfs_ok));
                }
            });
        }
    });
    let mut v = out.into_inner().expect("results");
    v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    v
}

fn origin(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let host = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// Whether a clone URL is on the forge's site.
fn same_site(url: &Option<(String, String)>, base: &Option<(String, String)>) -> bool {
    url.is_some() && url == base
}

/// Holds the mirrors directory for one run (an `flock`, released when
/// the run's process ends however it ends).
fn lock(root: &Path) -> Result<std::fs::File, GitError> {
    let p = root.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| GitError::Mirrors(format!("cannot open {}: {e}", p.display())))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(GitError::Busy(root.to_path_buf())),
        Err(e) => Err(GitError::Mirrors(format!(
            "cannot lock {}: {e}",
            p.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_at_a_time_per_mirrors_directory() {
        let d = tempfile::tempdir().unwrap();
        let held = lock(d.path()).unwrap();
        assert!(matches!(lock(d.path()), Err(GitError::Busy(_))));
        drop(held);
        lock(d.path()).unwrap();
    }

    #[test]
    fn filters_and_groups() {
        let job = GitJob {
            owner: "acme".into(),
            exclude: vec!["old-*".into()],
            ..GitJob::default()
        };
        let repo = |name: &str, fork: bool, archived: bool| ForgeRepo {
            id: 1,
            name: name.into(),
            https_url: String::new(),
            ssh_url: String::new(),
            fork,
            archived,
            has_wiki: false,
            default_branch: None,
        };
        assert!(job.wanted(&repo("shop", false, true)));
        assert!(!job.wanted(&repo("old-shop", false, false)));
        assert!(!job.wanted(&repo("fork", true, false)));
        assert_eq!(job.group(), "git:github/acme");
        assert_eq!(job.base(), "https://github.com");
        assert!(stamp(1_764_000_000_123_456_789).starts_with("2025"));
        assert!(same_site(
            &origin("https://github.com/acme/shop.git"),
            &origin("https://GitHub.com")
        ));
        assert!(!same_site(
            &origin("https://evil.example/acme/shop.git"),
            &origin("https://github.com")
        ));
    }
}
