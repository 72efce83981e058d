//! The daemon's config file, `cairn.toml`: repositories, jobs and where
//! alerts go.
//!
//! The file is a contract with its users: keys are added, never renamed.
//! Every mistake is reported with its line and column and what would be
//! accepted instead, all of them at once (a user fixing a config by trial
//! and error one message at a time gives up). Keys the daemon does not
//! know are errors, not ignored: a misspelt `max_vanshed` must not
//! silently switch a guard off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::schedule::{Calendar, Schedule, When, Window};

/// Where the config is when none is named: `/etc/cairn/cairn.toml` for
/// root, else `$XDG_CONFIG_HOME/cairn/cairn.toml`.
pub fn default_path() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/etc/cairn/cairn.toml")
    } else {
        crate::paths::xdg("XDG_CONFIG_HOME", ".config")
            .join("cairn")
            .join("cairn.toml")
    }
}

/// Where the daemon keeps job state when the config does not say:
/// `/var/lib/cairn` for root, else `$XDG_STATE_HOME/cairn/daemon`.
pub fn default_state() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/lib/cairn")
    } else {
        crate::paths::xdg("XDG_STATE_HOME", ".local/state")
            .join("cairn")
            .join("daemon")
    }
}

/// The whole config.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// Job state, locks and the daemon's own files.
    pub state: PathBuf,
    /// Address of the status page and `/metrics` (`None`: not served).
    pub listen: Option<SocketAddr>,
    /// Whether the status page answers other addresses than loopback.
    pub public_status: bool,
    /// Jobs running at once, at most.
    pub max_concurrent: usize,
    /// Repositories by name.
    pub repositories: BTreeMap<String, Repository>,
    /// Jobs in file order.
    pub jobs: Vec<Job>,
    /// Where alerts go.
    pub notify: Vec<Notify>,
    /// The backup box this daemon also is, if `[server]` is there.
    pub server: Option<Server>,
}

/// `[server]`: the daemon also serves repositories to other machines over
/// HTTPS, as `cairn server` does; its status page and `/metrics` are the
/// box's, and show the daemon's jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// A certificate chain and key in PEM files (else self-signed).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain HTTP on loopback, behind a proxy.
    pub plain_http: bool,
}

/// The default address of the status page and `/metrics`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8379";

/// A repository jobs write to or maintain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    /// Its name in the file.
    pub name: String,
    /// A directory, or an `https://` or `ssh://` URL.
    pub location: String,
    /// The passphrase, in a file.
    pub password_file: Option<PathBuf>,
    /// A key file (e.g. put-only), instead of or with the passphrase.
    pub key_file: Option<PathBuf>,
    /// The box's token, for `https://`.
    pub token_file: Option<PathBuf>,
    /// The box's certificate fingerprint, for `https://`.
    pub server_fingerprint: Option<String>,
    /// The filesystem the directory must be on.
    pub require_mount: Option<MountRule>,
    /// The repository's ID, when it must be this one.
    pub repo_id: Option<String>,
    /// Served to other machines by `[server]`.
    pub serve: bool,
    /// On the box's status page, a group with no snapshot for this long
    /// shows in red.
    pub stale_after: Option<Duration>,
}

impl Repository {
    /// The directory, for a repository on this machine.
    pub fn local_path(&self) -> Option<&Path> {
        (!self.location.contains("://")).then(|| Path::new(&self.location))
    }
}

/// Which mount a path must be on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountRule {
    /// Any mounted filesystem other than the root one.
    NotRoot,
    /// This mount point.
    At(PathBuf),
}

/// One scheduled job.
#[derive(Clone, Debug)]
pub struct Job {
    /// Unique name (state, status, `cairn run NAME`).
    pub name: String,
    /// What it does.
    pub kind: Kind,
    /// Repository it works on.
    pub repository: String,
    /// When.
    pub schedule: Schedule,
    /// Alert when no run succeeded for this long (`None`: the default).
    pub overdue_after: Option<Duration>,
    /// Commands around each run.
    pub hooks: Hooks,
    /// Retention applied to the job's group after a successful run.
    pub keep: Option<cairn_maint::retention::Policy>,
    /// Line of the job in the file.
    pub line: usize,
}

/// Commands around a run, each an argument vector run without a shell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Before the run; a failure aborts the run.
    pub before: Vec<Vec<String>>,
    /// After every run, whatever its outcome.
    pub after: Vec<Vec<String>>,
    /// After a failed or refused run.
    pub on_failure: Vec<Vec<String>>,
}

/// What a job does.
#[derive(Clone, Debug)]
pub enum Kind {
    /// Back up paths of this machine.
    Backup(Backup),
    /// Back up another machine over SSH, from the box.
    Pull(Pull),
    /// Store a command's output as a file.
    Command(CommandJob),
    /// Forget snapshots by policy.
    Retention {
        /// Groups it applies to (`*` matches any run of characters).
        group: Option<String>,
        /// The policy.
        policy: cairn_maint::retention::Policy,
    },
    /// Collect unused data.
    Prune {
        /// How long condemned data waits.
        grace: Duration,
    },
    /// Structural check.
    Check,
    /// Re-read packs (bit rot).
    Verify {
        /// Share of the packs each run reads.
        subset: Option<String>,
    },
    /// Copy snapshots to another repository (the off-site copy): as
    /// they are to a replica, re-encrypted to another owner's.
    Copy {
        /// The repository copied to (a `[repository.NAME]`).
        to: String,
        /// Groups it copies (`*` matches any run of characters).
        group: Option<String>,
    },
    /// Mirror every repository of a forge owner, then snapshot the
    /// mirrors.
    Git(crate::git::GitJob),
    /// Restore a sample and compare it with the source.
    Drill {
        /// Groups it samples.
        group: Option<String>,
        /// Files per group.
        files: u64,
        /// Bytes per group, at most.
        bytes: u64,
    },
}

impl Kind {
    /// The kind's name in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Backup(_) => "backup",
            Kind::Pull(_) => "pull",
            Kind::Command(_) => "command",
            Kind::Retention { .. } => "retention",
            Kind::Prune { .. } => "prune",
            Kind::Check => "check",
            Kind::Verify { .. } => "verify",
            Kind::Copy { .. } => "copy",
            Kind::Drill { .. } => "drill",
            Kind::Git(_) => "git",
        }
    }
}

/// A backup of local paths.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backup {
    /// Sources.
    pub paths: Vec<PathBuf>,
    /// Gitignore-style patterns left out.
    pub exclude: Vec<String>,
    /// Files of such patterns.
    pub exclude_file: Vec<PathBuf>,
    /// Skip directories tagged with CACHEDIR.TAG.
    pub exclude_caches: bool,
    /// Stay on each source's filesystem.
    pub one_file_system: bool,
    /// Snapshot group (default: host and paths).
    pub group: Option<String>,
    /// Snapshot tags.
    pub tags: Vec<String>,
    /// Shrink guard: the share of files or bytes that may vanish.
    pub max_vanished: Option<f64>,
    /// The mount the sources must be on.
    pub require_mount: Option<MountRule>,
    /// A file that must exist (relative paths: in each source).
    pub marker: Option<PathBuf>,
    /// zstd level.
    pub compression: Option<i32>,
}

/// A backup of another machine, started over SSH.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pull {
    /// `[user@]host`.
    pub ssh: String,
    /// The ssh program and its options.
    pub ssh_command: Vec<String>,
    /// The cairn program on the machine.
    pub remote_cairn: String,
    /// The machine's put-only key, as a path on the machine.
    pub remote_key_file: Option<PathBuf>,
    /// What the machine backs up, and how.
    pub backup: Backup,
}

/// A command's output stored as a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandJob {
    /// Argument vector.
    pub command: Vec<String>,
    /// Name of the file in the snapshot.
    pub filename: String,
    /// Snapshot group (default: host, `stdin` and the filename).
    pub group: Option<String>,
    /// Snapshot tags.
    pub tags: Vec<String>,
}

/// Where alerts go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// `webhook`, `ntfy`, `healthchecks`, `email` or `command`.
    pub kind: NotifyKind,
    /// Receiver URL.
    pub url: Option<String>,
    /// Extra HTTP headers.
    pub headers: Vec<(String, String)>,
    /// A bearer token, in a file (ntfy).
    pub token_file: Option<PathBuf>,
    /// Only these jobs (empty: all).
    pub jobs: Vec<String>,
    /// SMTP server `host:port`.
    pub smtp: Option<String>,
    /// SMTP security: `starttls`, `tls` or `none`.
    pub tls: Option<String>,
    /// SMTP login.
    pub username: Option<String>,
    /// SMTP password, in a file.
    pub password_file: Option<PathBuf>,
    /// Sender.
    pub from: Option<String>,
    /// Recipients.
    pub to: Vec<String>,
    /// Command to run.
    pub command: Vec<String>,
    /// Line in the file.
    pub line: usize,
}

/// The channels alerts can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// JSON POST.
    Webhook,
    /// ntfy.sh or a self-hosted ntfy.
    Ntfy,
    /// Dead-man's-switch pings.
    Healthchecks,
    /// SMTP.
    Email,
    /// A local command.
    Command,
}

/// One mistake in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// Every mistake in a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the config file {}: {source}; write one (see the README, \"Backups that run themselves\") or name another with --config", .file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It says something wrong.
    #[error("{}", render(.file, .problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Each mistake.
        problems: Vec<Problem>,
    },
}

fn render(file: &Path, problems: &[Problem]) -> String {
    let mut s = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&format!(
            "{}:{}:{}: {}",
            file.display(),
            p.line,
            p.column,
            p.message
        ));
    }
    s
}

// ---- raw forms, as serde reads them ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state: Option<PathBuf>,
    listen: Option<Spanned<String>>,
    public_status: Option<bool>,
    max_concurrent: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    path: Option<Spanned<PathBuf>>,
    url: Option<Spanned<String>>,
    password_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    server_fingerprint: Option<String>,
    require_mount: Option<Spanned<RawMount>>,
    repo_id: Option<Spanned<String>>,
    serve: Option<Spanned<bool>>,
    stale_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    tls: Option<RawTls>,
    #[serde(default)]
    plain_http: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawMount {
    Flag(bool),
    At(PathBuf),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawHook {
    One(Vec<String>),
    Many(Vec<Vec<String>>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeep {
    last: Option<u32>,
    hourly: Option<u32>,
    daily: Option<u32>,
    weekly: Option<u32>,
    monthly: Option<u32>,
    yearly: Option<u32>,
    within: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    files: Option<u64>,
    bytes: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    kind: Spanned<String>,
    repository: Spanned<String>,
    // schedule
    every: Option<Spanned<String>>,
    at: Option<Spanned<OneOrMany>>,
    jitter: Option<Spanned<String>>,
    when: Option<Spanned<String>>,
    probe_every: Option<Spanned<String>>,
    blackout: Option<Spanned<OneOrMany>>,
    overdue_after: Option<Spanned<String>>,
    retry: Option<Spanned<String>>,
    // hooks
    before: Option<Spanned<RawHook>>,
    after: Option<Spanned<RawHook>>,
    on_failure: Option<Spanned<RawHook>>,
    // what
    paths: Option<Spanned<Vec<PathBuf>>>,
    exclude: Option<Spanned<Vec<String>>>,
    exclude_file: Option<Spanned<Vec<PathBuf>>>,
    exclude_caches: Option<Spanned<bool>>,
    one_file_system: Option<Spanned<bool>>,
    group: Option<Spanned<String>>,
    tags: Option<Spanned<Vec<String>>>,
    keep: Option<Spanned<RawKeep>>,
    max_vanished: Option<Spanned<String>>,
    require_mount: Option<Spanned<RawMount>>,
    marker: Option<Spanned<PathBuf>>,
    compression: Option<Spanned<i32>>,
    ssh: Option<Spanned<String>>,
    ssh_command: Option<Spanned<String>>,
    remote_cairn: Option<Spanned<String>>,
    remote_key_file: Option<Spanned<PathBuf>>,
    command: Option<Spanned<Vec<String>>>,
    filename: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    subset: Option<Spanned<String>>,
    sample: Option<Spanned<RawSample>>,
    to: Option<Spanned<String>>,
    forge: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    include: Option<Spanned<Vec<String>>>,
    forks: Option<Spanned<bool>>,
    archived: Option<Spanned<bool>>,
    wikis: Option<Spanned<bool>>,
    lfs: Option<Spanned<bool>>,
    pull_requests: Option<Spanned<bool>>,
    protocol: Option<Spanned<String>>,
    fetches: Option<Spanned<i64>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    kind: Spanned<NotifyKind>,
    url: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    jobs: Vec<Spanned<String>>,
    smtp: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    from: Option<Spanned<String>>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    command: Vec<String>,
}

/// Collects problems with their positions.
struct Problems<'a> {
    text: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn at(&mut self, offset: usize, message: impl Into<String>) {
        let (line, column) = line_col(self.text, offset);
        self.list.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    fn span<T>(&mut self, s: &Spanned<T>, message: impl Into<String>) {
        self.at(s.span().start, message);
    }

    fn toml(&mut self, e: &toml::de::Error, fallback: usize) {
        let at = e.span().map_or(fallback, |s| s.start);
        let msg = e.message().trim().replace('\n', " ");
        self.at(at, explain(&msg));
    }
}

/// Serde's wording, with what to do added where it is terse.
fn explain(msg: &str) -> String {
    if msg.starts_with("data did not match any variant of untagged enum RawHook") {
        return "a hook is a command as a list of words, e.g. [\"systemctl\", \"stop\", \"db\"], or a list of such lists".into();
    }
    if msg.starts_with("data did not match any variant of untagged enum RawMount") {
        return "require_mount is true, false, or the mount point as a path".into();
    }
    if msg.starts_with("data did not match any variant of untagged enum OneOrMany") {
        return "expected a string or a list of strings".into();
    }
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once("`, expected one of ")
    {
        let accepted: Vec<&str> = expected.split(", ").map(|k| k.trim_matches('`')).collect();
        let near = accepted
            .iter()
            .map(|k| (edit_distance(key, k), *k))
            .min()
            .filter(|(d, _)| *d <= 2);
        return match near {
            Some((_, k)) => format!("unknown key `{key}`; did you mean `{k}`?"),
            None => format!(
                "unknown key `{key}`; accepted here: {}",
                accepted.join(", ")
            ),
        };
    }
    msg.to_string()
}

/// Levenshtein distance, for suggesting the key a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map_or(before, |(_, l)| l)
        .chars()
        .count()
        + 1;
    (line, col)
}

/// A duration as written in schedules: like everywhere else in Cairn
/// (`90s`, `30min`, `12h`, `7d`, `2w`), and here a bare `m` is minutes,
/// since no schedule counts in months.
pub fn interval(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "hourly" => return Ok(Duration::from_secs(3600)),
        "daily" => return Ok(Duration::from_secs(86_400)),
        "weekly" => return Ok(Duration::from_secs(7 * 86_400)),
        _ => {}
    }
    let mut fixed = String::new();
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        fixed.push(c);
        if c == 'm' && !matches!(chars.peek(), Some('i' | 'o')) {
            fixed.push_str("in");
        }
    }
    cairn_maint::duration::parse(&fixed).map_err(|_| {
        format!("{s:?} is not a duration; write e.g. 90s, 5m, 1h, 1d, 1w, or hourly, daily, weekly")
    })
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::parse(file, &text)
    }

    /// Parses config text; `file` names it in messages.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut p = Problems {
            text,
            list: Vec::new(),
        };
        let (doc, errors) = DeTable::parse_recoverable(text);
        for e in &errors {
            p.toml(e, 0);
        }
        let mut config = Config {
            file: file.to_path_buf(),
            state: default_state(),
            listen: Some(DEFAULT_LISTEN.parse().expect("valid default address")),
            public_status: false,
            max_concurrent: 2,
            repositories: BTreeMap::new(),
            jobs: Vec::new(),
            notify: Vec::new(),
            server: None,
        };
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                file: file.to_path_buf(),
                problems: p.list,
            });
        }
        let mut raw_jobs = Vec::new();
        for (key, value) in doc.into_inner() {
            let start = value.span().start;
            match key.get_ref().as_ref() {
                "daemon" => {
                    if let Some(d) = de::<RawDaemon>(&mut p, value) {
                        config.daemon(&mut p, d);
                    }
                }
                "server" => {
                    if let Some(sv) = de::<RawServer>(&mut p, value) {
                        config.server(&mut p, start, sv);
                    }
                }
                "repository" => {
                    let DeValue::Table(t) = value.into_inner() else {
                        p.at(start, "repository must be tables: [repository.NAME]");
                        continue;
                    };
                    for (name, v) in t {
                        let at = name.span().start;
                        let name = name.get_ref().to_string();
                        if let Some(r) = de::<RawRepository>(&mut p, v) {
                            config.repository(&mut p, at, name, r);
                        }
                    }
                }
                "job" => {
                    let DeValue::Array(a) = value.into_inner() else {
                        p.at(start, "jobs are written [[job]]");
                        continue;
                    };
                    for v in a {
                        let at = v.span().start;
                        if let Some(j) = de::<RawJob>(&mut p, v) {
                            raw_jobs.push((at, j));
                        }
                    }
                }
                "notify" => {
                    let DeValue::Array(a) = value.into_inner() else {
                        p.at(start, "notification channels are written [[notify]]");
                        continue;
                    };
                    for v in a {
                        let at = v.span().start;
                        if let Some(n) = de::<RawNotify>(&mut p, v) {
                            config.notify(&mut p, at, n);
                        }
                    }
                }
                other => p.at(
                    key.span().start,
                    format!(
                        "unknown key {other:?}; the file holds [daemon], [server], [repository.NAME], [[job]] and [[notify]]"
                    ),
                ),
            }
        }
        for (at, j) in raw_jobs {
            config.job(&mut p, at, j);
        }
        if config.server.is_some() && !config.repositories.values().any(|r| r.serve) {
            p.at(
                0,
                "[server] serves the repositories marked serve = true, and none is",
            );
        }
        if config.server.is_none()
            && let Some(r) = config.repositories.values().find(|r| r.serve)
        {
            p.at(
                0,
                format!(
                    "repository {} says serve = true, but there is no [server] section",
                    r.name
                ),
            );
        }
        if let Some(l) = config.listen
            && !l.ip().is_loopback()
            && !config.public_status
        {
            p.at(0, format!("[daemon] listen = {l} is not loopback: the status page tells anyone how your backups are doing; set public_status = true if that is meant"));
        }
        if p.list.is_empty() {
            Ok(config)
        } else {
            p.list.sort_by_key(|x| (x.line, x.column));
            Err(ConfigError::Invalid {
                file: file.to_path_buf(),
                problems: p.list,
            })
        }
    }

    fn daemon(&mut self, p: &mut Problems, d: RawDaemon) {
        if let Some(s) = d.state {
            self.state = s;
        }
        if let Some(l) = &d.listen {
            match l.get_ref().as_str() {
                "off" | "" => self.listen = None,
                a => match a.parse::<SocketAddr>() {
                    Ok(a) => self.listen = Some(a),
                    Err(_) => p.span(
                        l,
                        format!(
                            "listen = {a:?} is not an address like 127.0.0.1:8379 (or \"off\")"
                        ),
                    ),
                },
            }
        }
        self.public_status = d.public_status.unwrap_or(false);
        if let Some(m) = &d.max_concurrent {
            if *m.get_ref() == 0 {
                p.span(m, "max_concurrent must be at least 1");
            } else {
                self.max_concurrent = *m.get_ref();
            }
        }
    }

    fn server(&mut self, p: &mut Problems, at: usize, sv: RawServer) {
        let listen = match &sv.listen {
            None => cairn_server::config::DEFAULT_LISTEN.parse().ok(),
            Some(l) => match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    p.span(
                        l,
                        format!(
                            "listen = {:?} is not an address like 0.0.0.0:8443",
                            l.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let Some(listen) = listen else { return };
        if sv.plain_http && !listen.ip().is_loopback() {
            p.at(at, format!("plain_http is for loopback only, and {listen} is not: tokens would cross the network in the clear"));
        }
        if sv.plain_http && sv.tls.is_some() {
            p.at(at, "plain_http and tls exclude each other");
        }
        self.server = Some(Server {
            listen,
            tls: sv.tls.map(|t| (t.cert, t.key)),
            plain_http: sv.plain_http,
        });
        // The box's status page is on the server's port.
        self.listen = None;
    }

    fn repository(&mut self, p: &mut Problems, at: usize, name: String, r: RawRepository) {
        if !cairn_storage::valid_name(&name) {
            p.at(
                at,
                format!("repository name {name:?}: use lower-case letters, digits and '-'"),
            );
        }
        let location = match (&r.path, &r.url) {
            (Some(path), None) => {
                if !path.get_ref().is_absolute() {
                    p.span(path, "path must be absolute, e.g. \"/mnt/backup/cairn\"");
                }
                path.get_ref().display().to_string()
            }
            (None, Some(url)) => {
                let u = url.get_ref();
                if !(u.starts_with("https://")
                    || u.starts_with("http://")
                    || u.starts_with("ssh://"))
                {
                    if u.starts_with("s3://") {
                        if let Err(e) = cairn_storage::s3::S3Url::parse(u) {
                            p.span(url, e.to_string());
                        }
                    } else {
                        p.span(
                            url,
                            format!("url = {u:?}: accepted are https://HOST:PORT/NAME, ssh://[USER@]HOST[:PORT]/PATH and s3://BUCKET/PREFIX; a directory goes in `path`"),
                        );
                    }
                }
                u.clone()
            }
            (Some(_), Some(url)) => {
                p.span(url, "give either path or url, not both");
                String::new()
            }
            (None, None) => {
                p.at(at, format!("repository {name:?} needs path = \"/dir\" or url = \"https://…\" / \"ssh://…\" / \"s3://…\""));
                String::new()
            }
        };
        let require_mount = r.require_mount.as_ref().and_then(|m| mount_rule(p, m));
        if require_mount.is_some() && r.url.is_some() {
            p.at(
                at,
                "require_mount applies to a path on this machine, not to a url",
            );
        }
        if let Some(id) = &r.repo_id {
            let v = id.get_ref();
            if v.len() != 32 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                p.span(
                    id,
                    "repo_id is the repository's ID: 32 hex digits, as `cairn stats` prints it",
                );
            }
        }
        if let Some(sv) = &r.serve
            && *sv.get_ref()
            && r.path.is_none()
            && !r
                .url
                .as_ref()
                .is_some_and(|u| u.get_ref().starts_with("s3://"))
        {
            p.span(
                sv,
                "serve = true needs a path on this machine or an s3:// url",
            );
        }
        let stale_after = r.stale_after.as_ref().and_then(|v| {
            interval(v.get_ref())
                .map_err(|e| p.span(v, format!("stale_after: {e}")))
                .ok()
        });
        if r.token_file.is_some()
            && r.url
                .as_ref()
                .is_none_or(|u| !u.get_ref().starts_with("http"))
        {
            p.at(at, "token_file applies to https:// repositories only");
        }
        self.repositories.insert(
            name.clone(),
            Repository {
                name,
                location,
                password_file: r.password_file,
                key_file: r.key_file,
                token_file: r.token_file,
                server_fingerprint: r.server_fingerprint,
                require_mount,
                repo_id: r.repo_id.map(|s| s.into_inner().to_ascii_lowercase()),
                serve: r.serve.is_some_and(|s| s.into_inner()),
                stale_after,
            },
        );
    }

    fn notify(&mut self, p: &mut Problems, at: usize, n: RawNotify) {
        let kind = *n.kind.get_ref();
        let need = |p: &mut Problems, ok: bool, what: &str| {
            if !ok {
                p.at(
                    at,
                    format!("notify kind = {:?} needs {what}", kind_name(kind)),
                );
            }
        };
        match kind {
            NotifyKind::Webhook | NotifyKind::Ntfy | NotifyKind::Healthchecks => {
                need(p, n.url.is_some(), "url");
                if let Some(u) = &n.url
                    && !(u.get_ref().starts_with("https://") || u.get_ref().starts_with("http://"))
                {
                    p.span(u, "url must start with https:// or http://");
                }
            }
            NotifyKind::Email => {
                need(p, n.smtp.is_some(), "smtp = \"HOST:PORT\"");
                need(p, n.from.is_some(), "from");
                need(p, !n.to.is_empty(), "to = [\"you@example.org\"]");
                if let Some(t) = &n.tls
                    && !["starttls", "tls", "none"].contains(&t.get_ref().as_str())
                {
                    p.span(t, "tls is \"starttls\" (the default), \"tls\" or \"none\"");
                }
                if let Some(s) = &n.smtp
                    && s.get_ref()
                        .rsplit_once(':')
                        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
                {
                    p.span(s, "smtp is HOST:PORT, e.g. \"mail.example.org:587\"");
                }
            }
            NotifyKind::Command => {
                need(p, !n.command.is_empty(), "command = [\"program\", \"arg\"]")
            }
        }
        let jobs = n.jobs.into_iter().map(|j| j.into_inner()).collect();
        self.notify.push(Notify {
            kind,
            url: n.url.map(|u| u.into_inner()),
            headers: n.headers.into_iter().collect(),
            token_file: n.token_file,
            jobs,
            smtp: n.smtp.map(|s| s.into_inner()),
            tls: n.tls.map(|s| s.into_inner()),
            username: n.username,
            password_file: n.password_file,
            from: n.from.map(|s| s.into_inner()),
            to: n.to,
            command: n.command,
            line: line_col(p.text, at).0,
        });
    }

    fn job(&mut self, p: &mut Problems, at: usize, j: RawJob) {
        let name = j.name.get_ref().clone();
        let ctx = format!("job {name:?}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            || name.starts_with('.')
        {
            p.span(
                &j.name,
                format!("{ctx}: a job name uses letters, digits, '-', '_' and '.'"),
            );
        }
        if self.jobs.iter().any(|o| o.name == name) {
            p.span(&j.name, format!("{ctx}: another job has this name"));
        }
        let repo = j.repository.get_ref().clone();
        if !self.repositories.contains_key(&repo) {
            let known: Vec<&str> = self.repositories.keys().map(|s| s.as_str()).collect();
            p.span(
                &j.repository,
                format!(
                    "{ctx}: no [repository.{repo}] in this file{}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (there are: {})", known.join(", "))
                    }
                ),
            );
        }
        const KINDS: &str =
            "backup, pull, command, git, retention, prune, check, verify, copy or drill";
        let kind_name = j.kind.get_ref().as_str();
        // Which optional keys each kind takes.
        let allowed: &[&str] = match KIND_KEYS.iter().find(|(k, _)| *k == kind_name) {
            Some((_, keys)) => keys,
            None if kind_name == "check" => &[],
            None => {
                p.span(
                    &j.kind,
                    format!("{ctx}: kind = {kind_name:?}; accepted: {KINDS}"),
                );
                return;
            }
        };
        let present: [(&str, Option<usize>); 34] = [
            ("paths", j.paths.as_ref().map(|s| s.span().start)),
            ("exclude", j.exclude.as_ref().map(|s| s.span().start)),
            (
                "exclude_file",
                j.exclude_file.as_ref().map(|s| s.span().start),
            ),
            (
                "exclude_caches",
                j.exclude_caches.as_ref().map(|s| s.span().start),
            ),
            (
                "one_file_system",
                j.one_file_system.as_ref().map(|s| s.span().start),
            ),
            ("group", j.group.as_ref().map(|s| s.span().start)),
            ("tags", j.tags.as_ref().map(|s| s.span().start)),
            ("keep", j.keep.as_ref().map(|s| s.span().start)),
            (
                "max_vanished",
                j.max_vanished.as_ref().map(|s| s.span().start),
            ),
            (
                "require_mount",
                j.require_mount.as_ref().map(|s| s.span().start),
            ),
            ("marker", j.marker.as_ref().map(|s| s.span().start)),
            (
                "compression",
                j.compression.as_ref().map(|s| s.span().start),
            ),
            ("ssh", j.ssh.as_ref().map(|s| s.span().start)),
            (
                "ssh_command",
                j.ssh_command.as_ref().map(|s| s.span().start),
            ),
            (
                "remote_cairn",
                j.remote_cairn.as_ref().map(|s| s.span().start),
            ),
            (
                "remote_key_file",
                j.remote_key_file.as_ref().map(|s| s.span().start),
            ),
            ("command", j.command.as_ref().map(|s| s.span().start)),
            ("filename", j.filename.as_ref().map(|s| s.span().start)),
            ("grace", j.grace.as_ref().map(|s| s.span().start)),
            ("subset", j.subset.as_ref().map(|s| s.span().start)),
            ("sample", j.sample.as_ref().map(|s| s.span().start)),
            ("to", j.to.as_ref().map(|s| s.span().start)),
            ("forge", j.forge.as_ref().map(|s| s.span().start)),
            ("base_url", j.base_url.as_ref().map(|s| s.span().start)),
            ("owner", j.owner.as_ref().map(|s| s.span().start)),
            ("token_file", j.token_file.as_ref().map(|s| s.span().start)),
            ("include", j.include.as_ref().map(|s| s.span().start)),
            ("forks", j.forks.as_ref().map(|s| s.span().start)),
            ("archived", j.archived.as_ref().map(|s| s.span().start)),
            ("wikis", j.wikis.as_ref().map(|s| s.span().start)),
            ("lfs", j.lfs.as_ref().map(|s| s.span().start)),
            (
                "pull_requests",
                j.pull_requests.as_ref().map(|s| s.span().start),
            ),
            ("protocol", j.protocol.as_ref().map(|s| s.span().start)),
            ("fetches", j.fetches.as_ref().map(|s| s.span().start)),
        ];
        for (key, pos) in present {
            if let Some(pos) = pos
                && !allowed.contains(&key)
            {
                let takers: Vec<&str> = KIND_KEYS
                    .iter()
                    .filter(|(_, keys)| keys.contains(&key))
                    .map(|(k, _)| *k)
                    .collect();
                p.at(
                    pos,
                    format!(
                        "{ctx}: `{key}` does not apply to kind = {kind_name:?}; it is for {} jobs",
                        takers.join(", ")
                    ),
                );
            }
        }

        let schedule = schedule(p, &ctx, &j);
        let overdue_after = j.overdue_after.as_ref().and_then(|o| {
            interval(o.get_ref())
                .map_err(|e| p.span(o, format!("{ctx}: overdue_after: {e}")))
                .ok()
        });
        let hooks = Hooks {
            before: hook(p, &ctx, "before", &j.before),
            after: hook(p, &ctx, "after", &j.after),
            on_failure: hook(p, &ctx, "on_failure", &j.on_failure),
        };
        let keep = j.keep.as_ref().and_then(|k| policy(p, &ctx, k));
        let group = j.group.as_ref().map(|g| g.get_ref().clone());
        let tags = j
            .tags
            .as_ref()
            .map(|t| t.get_ref().clone())
            .unwrap_or_default();
        let backup = || -> Backup {
            Backup {
                paths: j
                    .paths
                    .as_ref()
                    .map(|x| x.get_ref().clone())
                    .unwrap_or_default(),
                exclude: j
                    .exclude
                    .as_ref()
                    .map(|x| x.get_ref().clone())
                    .unwrap_or_default(),
                exclude_file: j
                    .exclude_file
                    .as_ref()
                    .map(|x| x.get_ref().clone())
                    .unwrap_or_default(),
                exclude_caches: j.exclude_caches.as_ref().is_some_and(|x| *x.get_ref()),
                one_file_system: j.one_file_system.as_ref().is_some_and(|x| *x.get_ref()),
                group: group.clone(),
                tags: tags.clone(),
                max_vanished: None,
                require_mount: None,
                marker: j.marker.as_ref().map(|m| m.get_ref().clone()),
                compression: j.compression.as_ref().map(|c| *c.get_ref()),
            }
        };
        let needs_paths = |p: &mut Problems| match &j.paths {
            None => p.at(
                at,
                format!("{ctx}: a {kind_name} job needs paths = [\"/dir\", …]"),
            ),
            Some(ps) if ps.get_ref().is_empty() => p.span(
                ps,
                format!("{ctx}: paths is empty; name at least one directory"),
            ),
            Some(ps) => {
                if let Some(rel) = ps.get_ref().iter().find(|x| !x.is_absolute()) {
                    p.span(
                        ps,
                        format!("{ctx}: {} is not an absolute path", rel.display()),
                    );
                }
            }
        };
        if let Some(c) = &j.compression
            && !(0..=19).contains(c.get_ref())
        {
            p.span(
                c,
                format!("{ctx}: compression is a zstd level from 0 (none) to 19"),
            );
        }
        let max_vanished = match &j.max_vanished {
            None => Some(DEFAULT_MAX_VANISHED),
            Some(v) if v.get_ref() == "off" => None,
            Some(v) => match cairn_maint::units::share(v.get_ref()) {
                Ok(x) => Some(x),
                Err(e) => {
                    p.span(v, format!("{ctx}: max_vanished: {e}, or \"off\""));
                    None
                }
            },
        };
        let kind = match kind_name {
            "backup" => {
                needs_paths(p);
                let mut b = backup();
                b.max_vanished = max_vanished;
                b.require_mount = j.require_mount.as_ref().and_then(|m| mount_rule(p, m));
                Kind::Backup(b)
            }
            "pull" => {
                needs_paths(p);
                let ssh = match &j.ssh {
                    Some(s) if s.get_ref().starts_with('-') || s.get_ref().is_empty() => {
                        p.span(
                            s,
                            format!("{ctx}: ssh is a destination like backup@laptop.lan"),
                        );
                        String::new()
                    }
                    Some(s) => s.get_ref().clone(),
                    None => {
                        p.at(at, format!("{ctx}: a pull job needs ssh = \"user@host\""));
                        String::new()
                    }
                };
                let ssh_command = match &j.ssh_command {
                    None => vec!["ssh".to_string()],
                    Some(c) => {
                        let words: Vec<String> =
                            c.get_ref().split_whitespace().map(String::from).collect();
                        if words.is_empty() {
                            p.span(c, format!("{ctx}: ssh_command is empty"));
                        }
                        words
                    }
                };
                if let Some(g) = &j.group
                    && g.get_ref().contains('*')
                {
                    p.span(
                        g,
                        format!("{ctx}: the group of a pull job is one group, without '*'"),
                    );
                }
                let mut b = backup();
                b.max_vanished = max_vanished;
                Kind::Pull(Pull {
                    ssh,
                    ssh_command,
                    remote_cairn: j
                        .remote_cairn
                        .as_ref()
                        .map_or_else(|| "cairn".to_string(), |r| r.get_ref().clone()),
                    remote_key_file: j.remote_key_file.as_ref().map(|k| k.get_ref().clone()),
                    backup: b,
                })
            }
            "command" => {
                let command = match &j.command {
                    Some(c) if !c.get_ref().is_empty() => c.get_ref().clone(),
                    Some(c) => {
                        p.span(c, format!("{ctx}: command is empty"));
                        Vec::new()
                    }
                    None => {
                        p.at(
                            at,
                            format!("{ctx}: a command job needs command = [\"program\", \"arg\"]"),
                        );
                        Vec::new()
                    }
                };
                let filename = match &j.filename {
                    Some(f) => {
                        let n = f.get_ref();
                        if n.is_empty() || n.contains('/') || n == "." || n == ".." {
                            p.span(f, format!("{ctx}: filename is one file name, without '/'"));
                        }
                        n.clone()
                    }
                    None => {
                        p.at(
                            at,
                            format!("{ctx}: a command job needs filename = \"dump.sql\""),
                        );
                        String::new()
                    }
                };
                Kind::Command(CommandJob {
                    command,
                    filename,
                    group,
                    tags,
                })
            }
            "retention" => {
                if j.keep.is_none() {
                    p.at(
                        at,
                        format!("{ctx}: a retention job needs keep = {{ daily = 7, … }}"),
                    );
                }
                Kind::Retention {
                    group,
                    policy: keep.clone().unwrap_or_default(),
                }
            }
            "prune" => Kind::Prune {
                grace: match &j.grace {
                    None => Duration::from_secs(6 * 3600),
                    Some(g) => interval(g.get_ref()).unwrap_or_else(|e| {
                        p.span(g, format!("{ctx}: grace: {e}"));
                        Duration::ZERO
                    }),
                },
            },
            "check" => Kind::Check,
            "git" => Kind::Git(git_job(p, &ctx, at, &j, group)),
            "copy" => {
                let to = match &j.to {
                    Some(t) => {
                        if !self.repositories.contains_key(t.get_ref()) {
                            p.span(
                                t,
                                format!(
                                    "{ctx}: to = {:?}: no [repository.{}] in this file",
                                    t.get_ref(),
                                    t.get_ref()
                                ),
                            );
                        } else if t.get_ref() == j.repository.get_ref() {
                            p.span(t, format!("{ctx}: to names the job's own repository"));
                        }
                        t.get_ref().clone()
                    }
                    None => {
                        p.at(at, format!("{ctx}: a copy job needs to = \"REPOSITORY\", the [repository.NAME] it copies to"));
                        String::new()
                    }
                };
                Kind::Copy { to, group }
            }
            "verify" => {
                if let Some(s) = &j.subset
                    && let Err(e) = cairn_maint::verify::Subset::parse(s.get_ref())
                {
                    p.span(s, format!("{ctx}: subset: {e}"));
                }
                Kind::Verify {
                    subset: j.subset.as_ref().map(|s| s.get_ref().clone()),
                }
            }
            _ => {
                let (mut files, mut bytes) = (DRILL_FILES, DRILL_BYTES);
                if let Some(s) = &j.sample {
                    let s = s.get_ref();
                    if let Some(f) = s.files {
                        files = f;
                    }
                    if let Some(b) = &s.bytes {
                        match cairn_maint::units::size(b.get_ref()) {
                            Ok(v) => bytes = v,
                            Err(e) => p.span(b, format!("{ctx}: sample.bytes: {e}")),
                        }
                    }
                }
                Kind::Drill {
                    group,
                    files,
                    bytes,
                }
            }
        };
        if j.every.is_none() && j.at.is_none() && j.when.is_none() {
            p.at(
                at,
                format!(
                    "{ctx}: say when it runs: every = \"1h\", at = \"02:30\", or when = \"mounted\""
                ),
            );
        }
        if schedule.when == When::Reachable
            && !matches!(kind, Kind::Pull(_))
            && let Some(w) = &j.when
        {
            p.span(w, format!("{ctx}: when = \"reachable\" is for pull jobs"));
        }
        if schedule.when == When::Mounted
            && self
                .repositories
                .get(&repo)
                .is_some_and(|r| r.local_path().is_none())
            && let Some(w) = &j.when
        {
            p.span(
                w,
                format!("{ctx}: when = \"mounted\" needs a repository with a path on this machine"),
            );
        }
        self.jobs.push(Job {
            name,
            kind,
            repository: repo,
            schedule,
            overdue_after,
            hooks,
            keep: if kind_name == "retention" { None } else { keep },
            line: line_col(p.text, at).0,
        });
    }

    /// The job of that name.
    pub fn job_named(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The server config of `[server]`: the repositories marked `serve`,
    /// with tokens, certificate and the job board in the state directory.
    pub fn server_config(&self) -> Option<cairn_server::config::Config> {
        let sv = self.server.as_ref()?;
        Some(cairn_server::config::Config {
            listen: sv.listen,
            state: self.state.clone(),
            plain_http: sv.plain_http,
            tls: sv
                .tls
                .clone()
                .map(|(cert, key)| cairn_server::config::TlsFiles { cert, key }),
            repositories: self
                .repositories
                .values()
                .filter(|r| r.serve)
                .filter_map(|r| {
                    Some(cairn_server::config::RepoConfig {
                        name: r.name.clone(),
                        path: match r.local_path() {
                            Some(p) => p.to_path_buf(),
                            None if r.location.starts_with("s3://") => {
                                std::path::PathBuf::from(&r.location)
                            }
                            None => return None,
                        },
                        jobs: Vec::new(),
                        stale_after: r.stale_after.unwrap_or(Duration::from_secs(2 * 86_400)),
                    })
                })
                .collect(),
            limits: cairn_server::config::Limits {
                public_status: self.public_status,
                ..Default::default()
            },
        })
    }
}

/// A `kind = "git"` job's keys.
fn git_job(
    p: &mut Problems,
    ctx: &str,
    at: usize,
    j: &RawJob,
    group: Option<String>,
) -> crate::git::GitJob {
    use crate::git::{GitJob, forge::ForgeKind};
    let mut g = GitJob {
        group,
        ..GitJob::default()
    };
    match &j.forge {
        Some(f) => match ForgeKind::parse(f.get_ref()) {
            Some(k) => g.forge = k,
            None => p.span(
                f,
                format!(
                    "{ctx}: forge = {:?}; accepted: github, gitlab, gitea, forgejo",
                    f.get_ref()
                ),
            ),
        },
        None => p.at(
            at,
            format!("{ctx}: a git job needs forge = \"github\" (or gitlab, gitea, forgejo)"),
        ),
    }
    match &j.owner {
        Some(o) if !o.get_ref().trim().is_empty() => g.owner = o.get_ref().trim().to_string(),
        Some(o) => p.span(o, format!("{ctx}: owner is empty")),
        None => p.at(
            at,
            format!("{ctx}: a git job needs owner = \"USER, ORGANISATION OR GROUP\""),
        ),
    }
    if let Some(b) = &j.base_url {
        let v = b.get_ref();
        if !(v.starts_with("https://") || v.starts_with("http://")) {
            p.span(
                b,
                format!("{ctx}: base_url is the forge's web address, https://…"),
            );
        }
        g.base_url = Some(v.trim_end_matches('/').to_string());
    }
    g.token_file = j.token_file.as_ref().map(|t| t.get_ref().clone());
    if let Some(i) = &j.include {
        g.include = i.get_ref().clone();
    }
    if let Some(e) = &j.exclude {
        g.exclude = e.get_ref().clone();
    }
    g.forks = j.forks.as_ref().is_some_and(|x| *x.get_ref());
    g.archived = j.archived.as_ref().is_none_or(|x| *x.get_ref());
    g.wikis = j.wikis.as_ref().is_none_or(|x| *x.get_ref());
    g.lfs = j.lfs.as_ref().map(|x| *x.get_ref());
    g.pull_requests = j.pull_requests.as_ref().is_some_and(|x| *x.get_ref());
    match j.protocol.as_ref().map(|x| (x, x.get_ref().as_str())) {
        None | Some((_, "https")) => {}
        Some((_, "ssh")) => g.ssh = true,
        Some((x, v)) => p.span(x, format!("{ctx}: protocol = {v:?}; accepted: https, ssh")),
    }
    g.ssh_command = j.ssh_command.as_ref().map(|c| c.get_ref().clone());
    if let Some(f) = &j.fetches {
        match usize::try_from(*f.get_ref()) {
            Ok(n @ 1..=64) => g.fetches = n,
            _ => p.span(
                f,
                format!("{ctx}: fetches is how many fetches run at once, 1 to 64"),
            ),
        }
    }
    g
}

/// Which optional keys each kind takes (`check` takes none).
const KIND_KEYS: &[(&str, &[&str])] = &[
    (
        "backup",
        &[
            "paths",
            "exclude",
            "exclude_file",
            "exclude_caches",
            "one_file_system",
            "group",
            "tags",
            "keep",
            "max_vanished",
            "require_mount",
            "marker",
            "compression",
        ],
    ),
    (
        "pull",
        &[
            "ssh",
            "ssh_command",
            "remote_cairn",
            "remote_key_file",
            "paths",
            "exclude",
            "exclude_caches",
            "one_file_system",
            "group",
            "tags",
            "keep",
            "max_vanished",
            "compression",
        ],
    ),
    ("command", &["command", "filename", "group", "tags", "keep"]),
    ("retention", &["group", "keep"]),
    ("prune", &["grace"]),
    ("verify", &["subset"]),
    ("drill", &["group", "sample"]),
    ("copy", &["to", "group"]),
    (
        "git",
        &[
            "forge",
            "base_url",
            "owner",
            "token_file",
            "include",
            "exclude",
            "forks",
            "archived",
            "wikis",
            "lfs",
            "pull_requests",
            "protocol",
            "ssh_command",
            "fetches",
            "group",
            "keep",
        ],
    ),
];

/// The shrink guard's default: a backup that lost half of its files or
/// bytes since the last snapshot is held back.
pub const DEFAULT_MAX_VANISHED: f64 = 0.5;
/// Files a drill restores per group, by default.
pub const DRILL_FILES: u64 = 20;
/// Bytes a drill restores per group, at most, by default.
pub const DRILL_BYTES: u64 = 256 << 20;

fn kind_name(k: NotifyKind) -> &'static str {
    match k {
        NotifyKind::Webhook => "webhook",
        NotifyKind::Ntfy => "ntfy",
        NotifyKind::Healthchecks => "healthchecks",
        NotifyKind::Email => "email",
        NotifyKind::Command => "command",
    }
}

fn de<T: serde::de::DeserializeOwned>(p: &mut Problems, v: Spanned<DeValue<'_>>) -> Option<T> {
    let start = v.span().start;
    match T::deserialize(serde::de::IntoDeserializer::into_deserializer(v)) {
        Ok(t) => Some(t),
        Err(e) => {
            p.toml(&e, start);
            None
        }
    }
}

fn mount_rule(p: &mut Problems, m: &Spanned<RawMount>) -> Option<MountRule> {
    match m.get_ref() {
        RawMount::Flag(true) => Some(MountRule::NotRoot),
        RawMount::Flag(false) => None,
        RawMount::At(path) if path.is_absolute() => Some(MountRule::At(path.clone())),
        RawMount::At(_) => {
            p.span(m, "require_mount = \"PATH\" needs an absolute mount point");
            None
        }
    }
}

fn hook(p: &mut Problems, ctx: &str, key: &str, h: &Option<Spanned<RawHook>>) -> Vec<Vec<String>> {
    let Some(h) = h else { return Vec::new() };
    let list = match h.get_ref() {
        RawHook::One(v) => vec![v.clone()],
        RawHook::Many(v) => v.clone(),
    };
    if list.iter().any(|c| c.is_empty() || c[0].is_empty()) {
        p.span(
            h,
            format!("{ctx}: {key}: a command needs at least a program name"),
        );
    }
    list
}

fn policy(
    p: &mut Problems,
    ctx: &str,
    k: &Spanned<RawKeep>,
) -> Option<cairn_maint::retention::Policy> {
    let r = k.get_ref();
    let within_ns = match &r.within {
        None => None,
        Some(w) => match cairn_maint::duration::parse(w.get_ref()) {
            Ok(d) => Some(d.as_nanos() as i64),
            Err(e) => {
                p.span(w, format!("{ctx}: keep.within: {e}"));
                return None;
            }
        },
    };
    let policy = cairn_maint::retention::Policy {
        last: r.last,
        hourly: r.hourly,
        daily: r.daily,
        weekly: r.weekly,
        monthly: r.monthly,
        yearly: r.yearly,
        within_ns,
        tags: r.tags.clone(),
    };
    match policy.validate() {
        Ok(()) => Some(policy),
        Err(e) => {
            p.span(
                k,
                format!("{ctx}: keep: {e}; keys: last, hourly, daily, weekly, monthly, yearly, within, tags"),
            );
            None
        }
    }
}

fn schedule(p: &mut Problems, ctx: &str, j: &RawJob) -> Schedule {
    let mut s = Schedule {
        probe_every: Duration::from_secs(300),
        ..Schedule::default()
    };
    let dur = |p: &mut Problems, key: &str, v: &Option<Spanned<String>>| -> Option<Duration> {
        let v = v.as_ref()?;
        match interval(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                p.span(v, format!("{ctx}: {key}: {e}"));
                None
            }
        }
    };
    s.every = dur(p, "every", &j.every);
    if let (Some(e), Some(v)) = (s.every, &j.every)
        && e < Duration::from_secs(1)
    {
        p.span(v, format!("{ctx}: every must be at least 1s"));
    }
    if let Some(at) = &j.at {
        for c in at.get_ref().list() {
            match Calendar::parse(&c) {
                Ok(c) => s.at.push(c),
                Err(e) => p.span(at, format!("{ctx}: at: {e}")),
            }
        }
        if j.every.is_some() {
            p.span(at, format!("{ctx}: give every or at, not both"));
        }
    }
    s.jitter = dur(p, "jitter", &j.jitter).unwrap_or_default();
    s.retry = dur(p, "retry", &j.retry).unwrap_or_default();
    if let Some(pe) = dur(p, "probe_every", &j.probe_every) {
        s.probe_every = pe.max(Duration::from_secs(1));
    }
    if let Some(w) = &j.when {
        s.when = match w.get_ref().as_str() {
            "always" => When::Always,
            "reachable" => When::Reachable,
            "mounted" => When::Mounted,
            other => {
                p.span(w, format!("{ctx}: when = {other:?}; accepted: \"reachable\" (pull jobs), \"mounted\", \"always\""));
                When::Always
            }
        };
        if s.when == When::Mounted && j.probe_every.is_none() {
            s.probe_every = Duration::from_secs(10);
        }
    }
    if let Some(b) = &j.blackout {
        for w in b.get_ref().list() {
            match Window::parse(&w) {
                Ok(w) => s.blackout.push(w),
                Err(e) => p.span(b, format!("{ctx}: blackout: {e}")),
            }
        }
    }
    s
}

#[cfg(test)]
mod tests;
