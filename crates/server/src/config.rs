//! The server's configuration: `/etc/cairn/server.toml`, or the same
//! built from flags.
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! state = "/var/lib/cairn-server"     # tokens, self-made certificate, job state
//!
//! [tls]                                # optional: else a self-signed certificate
//! cert = "/etc/letsencrypt/live/box.example.org/fullchain.pem"
//! key = "/etc/letsencrypt/live/box.example.org/privkey.pem"
//!
//! [[repository]]
//! name = "home"
//! path = "/srv/cairn/home"
//!
//! [[repository.job]]
//! run = "retention"                    # retention, prune, check or verify
//! every = "1d"
//! group = "*"
//! keep_daily = 7
//! keep_weekly = 5
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// What the server serves, and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for tokens, the self-made certificate and job state.
    pub state: PathBuf,
    /// Plain HTTP instead of TLS: refused unless `listen` is loopback.
    pub plain_http: bool,
    /// A certificate and key in PEM files, reloaded when they change.
    pub tls: Option<TlsFiles>,
    /// The repositories, by name.
    pub repositories: Vec<RepoConfig>,
    /// Timeouts and limits.
    pub limits: Limits,
}

/// A user-provided certificate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain (e.g. Let's Encrypt's `fullchain.pem`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// One served repository.
#[derive(Clone, Debug)]
pub struct RepoConfig {
    /// Name in URLs and tokens.
    pub name: String,
    /// Directory of the repository.
    pub path: PathBuf,
    /// Jobs the server runs on it.
    pub jobs: Vec<JobConfig>,
    /// A group whose newest snapshot is older than this shows in red.
    pub stale_after: Duration,
}

/// A scheduled job.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// What it does.
    pub run: JobKind,
    /// How often.
    pub every: Duration,
    /// Retention: which groups (`*` matches any run of characters).
    pub group: Option<String>,
    /// Retention: the policy.
    pub policy: cairn_maint::retention::Policy,
    /// Prune: how long condemned data waits before deletion.
    pub grace: Duration,
    /// Verify: which share of the packs each run reads (`k/n` or `N%`).
    pub subset: Option<String>,
}

/// The kinds of job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Forget snapshots by policy (receipt times govern).
    Retention,
    /// Collect unused data.
    Prune,
    /// Structural check: names, index, references, no pack contents.
    Check,
    /// Re-read packs and compare them with their names (bit rot).
    Verify,
}

impl JobKind {
    /// Its name in the config, metrics and the status page.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Retention => "retention",
            JobKind::Prune => "prune",
            JobKind::Check => "check",
            JobKind::Verify => "verify",
        }
    }
}

/// Timeouts and limits that keep one client from starving the others.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time to finish the TLS handshake.
    pub handshake: Duration,
    /// Time to send a request's headers.
    pub headers: Duration,
    /// Longest pause inside a request body.
    pub body_idle: Duration,
    /// Failed logins from one address before it must wait.
    pub auth_failures: u32,
    /// The window those failures are counted in, and the wait.
    pub auth_window: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub connections: usize,
    /// How often certificate files are checked for a change.
    pub cert_reload: Duration,
    /// Whether the status page and `/metrics` answer any address, or
    /// loopback only (reach them through a tunnel or a proxy).
    pub public_status: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(30),
            body_idle: Duration::from_secs(60),
            auth_failures: 10,
            auth_window: Duration::from_secs(60),
            connections: 256,
            cert_reload: Duration::from_secs(30),
            public_status: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    state: PathBuf,
    #[serde(default)]
    plain_http: bool,
    tls: Option<TlsFiles>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    repository: Vec<RawRepo>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    handshake: Option<String>,
    headers: Option<String>,
    body_idle: Option<String>,
    auth_failures: Option<u32>,
    auth_window: Option<String>,
    connections: Option<usize>,
    cert_reload: Option<String>,
    public_status: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    name: String,
    path: PathBuf,
    stale_after: Option<String>,
    #[serde(default)]
    job: Vec<RawJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    run: JobKind,
    every: String,
    group: Option<String>,
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    keep_within: Option<String>,
    #[serde(default)]
    keep_tag: Vec<String>,
    grace: Option<String>,
    subset: Option<String>,
}

/// The default port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

fn duration(file: &Path, key: &str, v: &Option<String>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) => cairn_maint::duration::parse(s)
            .map_err(|e| Error::Config(file.to_path_buf(), format!("{key}: {e}"))),
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(file: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::Config(
                file.to_path_buf(),
                format!("cannot read it: {e}; see docs/server.md for an example"),
            )
        })?;
        Config::parse(file, &text)
    }

    /// Parses config text; `file` names it in messages.
    pub fn parse(file: &Path, text: &str) -> Result<Config> {
        let bad = |m: String| Error::Config(file.to_path_buf(), m);
        let raw: RawConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen.parse().map_err(|_| {
            bad(format!(
                "listen = {listen:?} is not an address like 0.0.0.0:8443"
            ))
        })?;
        let d = Limits::default();
        let l = &raw.limits;
        let limits = Limits {
            handshake: duration(file, "limits.handshake", &l.handshake, d.handshake)?,
            headers: duration(file, "limits.headers", &l.headers, d.headers)?,
            body_idle: duration(file, "limits.body_idle", &l.body_idle, d.body_idle)?,
            auth_failures: l.auth_failures.unwrap_or(d.auth_failures),
            auth_window: duration(file, "limits.auth_window", &l.auth_window, d.auth_window)?,
            connections: l.connections.unwrap_or(d.connections).max(1),
            cert_reload: duration(file, "limits.cert_reload", &l.cert_reload, d.cert_reload)?,
            public_status: l.public_status.unwrap_or(d.public_status),
        };
        let mut repositories = Vec::new();
        for r in raw.repository {
            let mut jobs = Vec::new();
            for j in r.job {
                let ctx = format!("repository {:?} job {}", r.name, j.run.name());
                let every = cairn_maint::duration::parse(&j.every)
                    .map_err(|e| bad(format!("{ctx}: every: {e}")))?;
                if every < Duration::from_secs(1) {
                    return Err(bad(format!("{ctx}: every must be at least 1s")));
                }
                let within_ns = match &j.keep_within {
                    None => None,
                    Some(s) => Some(
                        cairn_maint::duration::parse(s)
                            .map_err(|e| bad(format!("{ctx}: keep_within: {e}")))?
                            .as_nanos() as i64,
                    ),
                };
                let policy = cairn_maint::retention::Policy {
                    last: j.keep_last,
                    hourly: j.keep_hourly,
                    daily: j.keep_daily,
                    weekly: j.keep_weekly,
                    monthly: j.keep_monthly,
                    yearly: j.keep_yearly,
                    within_ns,
                    tags: j.keep_tag,
                };
                if j.run == JobKind::Retention {
                    policy.validate().map_err(|e| bad(format!("{ctx}: {e}")))?;
                } else if policy != cairn_maint::retention::Policy::default() || j.group.is_some() {
                    return Err(bad(format!(
                        "{ctx}: keep_* and group belong to retention jobs"
                    )));
                }
                let grace = match &j.grace {
                    None => Duration::from_secs(6 * 3600),
                    Some(s) => cairn_maint::duration::parse(s)
                        .map_err(|e| bad(format!("{ctx}: grace: {e}")))?,
                };
                if let Some(s) = &j.subset {
                    cairn_maint::verify::Subset::parse(s)
                        .map_err(|e| bad(format!("{ctx}: subset: {e}")))?;
                }
                jobs.push(JobConfig {
                    run: j.run,
                    every,
                    group: j.group,
                    policy,
                    grace,
                    subset: j.subset,
                });
            }
            let stale_after = duration(
                file,
                "stale_after",
                &r.stale_after,
                Duration::from_secs(2 * 86_400),
            )?;
            repositories.push(RepoConfig {
                name: r.name,
                path: r.path,
                jobs,
                stale_after,
            });
        }
        let c = Config {
            listen,
            state: raw.state,
            plain_http: raw.plain_http,
            tls: raw.tls,
            repositories,
            limits,
        };
        c.validate().map_err(bad)?;
        Ok(c)
    }

    /// Checks what a file or flags may get wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.plain_http && !self.listen.ip().is_loopback() {
            return Err(format!(
                "plain_http is for loopback only, and {} is not: tokens would cross the network in the clear",
                self.listen
            ));
        }
        if self.plain_http && self.tls.is_some() {
            return Err("plain_http and [tls] exclude each other".into());
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.repositories {
            if !cairn_storage::valid_name(&r.name) {
                return Err(format!(
                    "repository name {:?}: use lower-case letters, digits and '-'",
                    r.name
                ));
            }
            if !seen.insert(&r.name) {
                return Err(format!("repository {:?} is named twice", r.name));
            }
        }
        if self.repositories.is_empty() {
            return Err("no [[repository]] to serve".into());
        }
        Ok(())
    }

    /// The repository of that name.
    pub fn repository(&self, name: &str) -> Option<&RepoConfig> {
        self.repositories.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config> {
        Config::parse(Path::new("server.toml"), t)
    }

    #[test]
    fn a_full_config_parses_and_mistakes_are_named() {
        let c = parse(
            r#"
listen = "127.0.0.1:9443"
state = "/var/lib/cairn"
[tls]
cert = "/c.pem"
key = "/k.pem"
[limits]
body_idle = "5s"
auth_failures = 3
[[repository]]
name = "home"
path = "/srv/home"
[[repository.job]]
run = "retention"
every = "1d"
group = "laptop:*"
keep_daily = 7
[[repository.job]]
run = "verify"
every = "1w"
subset = "1/7"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9443);
        assert_eq!(c.limits.body_idle, Duration::from_secs(5));
        assert_eq!(c.limits.auth_failures, 3);
        assert_eq!(c.repositories[0].jobs.len(), 2);
        assert_eq!(c.repositories[0].jobs[0].policy.daily, Some(7));

        let e = |t: &str| parse(t).unwrap_err().to_string();
        assert!(e("state = \"/s\"").contains("no [[repository]]"));
        assert!(
            e("state = \"/s\"\nplain_http = true\nlisten = \"0.0.0.0:80\"\n[[repository]]\nname = \"a\"\npath = \"/a\"")
                .contains("loopback only")
        );
        assert!(
            e("state = \"/s\"\n[[repository]]\nname = \"A b\"\npath = \"/a\"")
                .contains("lower-case")
        );
        assert!(
            e("state = \"/s\"\nlisten = \"nowhere\"\n[[repository]]\nname = \"a\"\npath = \"/a\"")
                .contains("not an address")
        );
        assert!(e("state = \"/s\"\nsurprise = 1").contains("surprise"));
        assert!(
            e("state = \"/s\"\n[[repository]]\nname = \"a\"\npath = \"/a\"\n[[repository.job]]\nrun = \"retention\"\nevery = \"1d\"")
                .contains("retention")
        );
        assert!(
            e("state = \"/s\"\n[[repository]]\nname = \"a\"\npath = \"/a\"\n[[repository.job]]\nrun = \"prune\"\nevery = \"5m\"")
                .contains("`min`")
        );
    }
}
