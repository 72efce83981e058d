//! Every repository of a forge owner, through the forge's REST API:
//! GitHub (and GitHub Enterprise), GitLab (a group with its subgroups, or
//! a user) and Gitea/Forgejo (an organisation or a user).
//!
//! Pages follow the forge's own next links ([`crate::forge_paging`]),
//! never a guessed page count, and every answer's rate-limit headers are
//! obeyed before the next request, so a run over hundreds of repositories
//! does not get the token blocked. The token goes only to the API's own
//! origin: a next link pointing elsewhere ends the listing with an error
//! rather than sending the token there.
//!
//! Answers come from the network: bodies are read up to a bound, pages
//! and repositories are counted against limits, and every name that will
//! become a directory is checked first.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::forge_paging::{Limits, gitlab_next_page, next_link, wait_before};

/// Which API the forge speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgeKind {
    /// github.com or GitHub Enterprise (`BASE/api/v3`).
    GitHub,
    /// gitlab.com or a self-hosted GitLab (`BASE/api/v4`).
    GitLab,
    /// Gitea (`BASE/api/v1`).
    Gitea,
    /// Forgejo, Gitea's API (`BASE/api/v1`).
    Forgejo,
}

impl ForgeKind {
    /// Parses the config's word.
    pub fn parse(s: &str) -> Option<ForgeKind> {
        Some(match s {
            "github" => ForgeKind::GitHub,
            "gitlab" => ForgeKind::GitLab,
            "gitea" => ForgeKind::Gitea,
            "forgejo" => ForgeKind::Forgejo,
            _ => return None,
        })
    }

    /// The config's word.
    pub fn name(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::GitLab => "gitlab",
            ForgeKind::Gitea => "gitea",
            ForgeKind::Forgejo => "forgejo",
        }
    }

    /// The public instance, when `base_url` is not given.
    pub fn default_base(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "https://github.com",
            ForgeKind::GitLab => "https://gitlab.com",
            ForgeKind::Gitea => "https://gitea.com",
            ForgeKind::Forgejo => "https://codeberg.org",
        }
    }

    /// The REST API's root for a forge at `base`.
    pub fn api_root(self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            ForgeKind::GitHub if base == "https://github.com" => "https://api.github.com".into(),
            ForgeKind::GitHub => format!("{base}/api/v3"),
            ForgeKind::GitLab => format!("{base}/api/v4"),
            ForgeKind::Gitea | ForgeKind::Forgejo => format!("{base}/api/v1"),
        }
    }

    /// The user name that goes with the token in git's Basic auth.
    pub fn git_user(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "x-access-token",
            ForgeKind::GitLab => "oauth2",
            ForgeKind::Gitea | ForgeKind::Forgejo => "cairn",
        }
    }
}

/// One repository as the forge lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgeRepo {
    /// The forge's stable ID: a rename keeps it.
    pub id: u64,
    /// The path under the owner (`shop`, or `team/shop` in a GitLab
    /// subgroup); checked by [`valid_name`].
    pub name: String,
    /// Clone URL over HTTPS.
    pub https_url: String,
    /// Clone URL over SSH.
    pub ssh_url: String,
    /// A fork of another repository.
    pub fork: bool,
    /// Archived (read-only) on the forge.
    pub archived: bool,
    /// The forge says it has a wiki (which may still be empty).
    pub has_wiki: bool,
    /// The branch `HEAD` names, when the forge says.
    pub default_branch: Option<String>,
}

impl ForgeRepo {
    /// The wiki's clone URL next to `url` (`x.git` → `x.wiki.git`), the
    /// convention of all three forges.
    pub fn wiki_url(url: &str) -> String {
        format!("{}.wiki.git", url.strip_suffix(".git").unwrap_or(url))
    }
}

/// Why a listing stopped.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// 401: the token is wrong, expired or revoked.
    #[error(
        "{forge} refused the token ({status}: {detail}); it may be revoked or expired: write a new one to the token file"
    )]
    Unauthorized {
        /// Forge name.
        forge: &'static str,
        /// HTTP status.
        status: u16,
        /// What the forge said.
        detail: String,
    },
    /// 403 not about rate limits: the token lacks a scope.
    #[error(
        "{forge} forbade listing {owner} ({detail}); give the token read access to its repositories"
    )]
    Forbidden {
        /// Forge name.
        forge: &'static str,
        /// The owner.
        owner: String,
        /// What the forge said.
        detail: String,
    },
    /// 404 for the owner.
    #[error("{forge} has no user, organisation or group {owner:?} (or the token cannot see it)")]
    NoOwner {
        /// Forge name.
        forge: &'static str,
        /// The owner.
        owner: String,
    },
    /// A 5xx, after retries.
    #[error("{forge} answered {status} at {url} (tried {tries} times); no mirror was touched")]
    Server {
        /// Forge name.
        forge: &'static str,
        /// HTTP status.
        status: u16,
        /// The URL, without secrets (the token is never in it).
        url: String,
        /// Attempts made.
        tries: u32,
    },
    /// No answer at all.
    #[error("{forge} at {url} is unreachable ({why}); no mirror was touched")]
    Unreachable {
        /// Forge name.
        forge: &'static str,
        /// The URL.
        url: String,
        /// What failed.
        why: String,
    },
    /// An answer that is not what the API documents.
    #[error("{forge} sent an answer Cairn cannot use at {url}: {why}")]
    Bad {
        /// Forge name.
        forge: &'static str,
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The run was asked to stop.
    #[error("stopped while listing")]
    Interrupted,
}

/// Where and as whom to list.
#[derive(Clone, Debug)]
pub struct Listing {
    /// The API.
    pub kind: ForgeKind,
    /// The forge's web address (`https://github.com`, `https://git.example`).
    pub base_url: String,
    /// User, organisation or GitLab group path.
    pub owner: String,
    /// API token, if any (public repositories only without one).
    pub token: Option<String>,
    /// How long to wait after a 429 that says nothing more.
    pub bare_limit_wait: Duration,
    /// Pause between retries of a 5xx or a failed connection.
    pub retry_pause: Duration,
}

/// What a listing found, and what it cost.
#[derive(Debug, Default)]
pub struct Listed {
    /// Every repository of the owner.
    pub repos: Vec<ForgeRepo>,
    /// Names the forge sent that cannot be a directory, skipped.
    pub refused_names: Vec<String>,
    /// Times a rate limit made the listing wait.
    pub limit_waits: u32,
    /// Time spent waiting on rate limits.
    pub waited: Duration,
    /// Requests made.
    pub requests: u32,
}

/// Longest answer read: a page of 100 GitHub repositories is about
/// 600 KiB.
const MAX_BODY: u64 = 32 << 20;
/// Most pages followed: 5,000 pages of 100 is half a million repositories.
const MAX_PAGES: u32 = 5_000;
/// Attempts at a request that meets a 5xx or no connection.
const TRIES: u32 = 3;
/// Rate-limit waits in one listing before giving up.
const MAX_LIMIT_WAITS: u32 = 20;

/// Lists every repository of `l.owner`.
pub fn list(l: &Listing, cancel: &Arc<AtomicBool>) -> Result<Listed, ForgeError> {
    let mut c = Client::new(l, cancel.clone());
    let api = l.kind.api_root(&l.base_url);
    let owner_enc = encode(&l.owner);
    let first = match l.kind {
        ForgeKind::GitHub => {
            let who: GhOwner = c.get_json(&format!("{api}/users/{owner_enc}"))?;
            if who.kind.as_deref() == Some("Organization") {
                format!("{api}/orgs/{owner_enc}/repos?type=all&per_page=100")
            } else if l.token.is_some() && c.token_user(&api)? == Some(l.owner.to_lowercase()) {
                // The token's own account: private repositories too.
                format!("{api}/user/repos?affiliation=owner&per_page=100")
            } else {
                format!("{api}/users/{owner_enc}/repos?type=owner&per_page=100")
            }
        }
        ForgeKind::GitLab => {
            if c.exists(&format!("{api}/groups/{owner_enc}"))? {
                format!(
                    "{api}/groups/{owner_enc}/projects?include_subgroups=true&with_shared=false&per_page=100"
                )
            } else {
                format!("{api}/users/{owner_enc}/projects?per_page=100")
            }
        }
        ForgeKind::Gitea | ForgeKind::Forgejo => {
            if c.exists(&format!("{api}/orgs/{owner_enc}"))? {
                format!("{api}/orgs/{owner_enc}/repos?limit=50")
            } else {
                format!("{api}/users/{owner_enc}/repos?limit=50")
            }
        }
    };
    let mut url = first;
    let mut out = Listed::default();
    for _ in 0..MAX_PAGES {
        let page = c.get(&url, false)?;
        let next = page.next.clone();
        match l.kind {
            ForgeKind::GitHub | ForgeKind::Gitea | ForgeKind::Forgejo => {
                let repos: Vec<GhRepo> = c.parse(&url, &page.body)?;
                for r in repos {
                    out.push(ForgeRepo {
                        id: r.id,
                        name: r.name,
                        https_url: r.clone_url,
                        ssh_url: r.ssh_url,
                        fork: r.fork,
                        archived: r.archived,
                        has_wiki: r.has_wiki,
                        default_branch: r.default_branch,
                    });
                }
            }
            ForgeKind::GitLab => {
                let repos: Vec<GlProject> = c.parse(&url, &page.body)?;
                for p in repos {
                    // The path under the group: `team/shop` for a project
                    // of subgroup `team`.
                    let name = p
                        .path_with_namespace
                        .strip_prefix(&l.owner)
                        .and_then(|s| s.strip_prefix('/'))
                        .map_or(p.path.clone(), str::to_string);
                    out.push(ForgeRepo {
                        id: p.id,
                        name,
                        https_url: p.http_url_to_repo,
                        ssh_url: p.ssh_url_to_repo,
                        fork: p.forked_from_project.is_some(),
                        archived: p.archived,
                        has_wiki: p.wiki_enabled,
                        default_branch: p.default_branch,
                    });
                }
            }
        }
        match next {
            None => {
                out.limit_waits = c.limit_waits;
                out.waited = c.waited;
                out.requests = c.requests;
                return Ok(out);
            }
            Some(n) => url = c.same_origin(&n, &api)?,
        }
    }
    Err(c.bad(&url, format!("more than {MAX_PAGES} pages")))
}

impl Listed {
    /// Keeps `r` if its name can be a directory; a default branch that
    /// cannot follow `refs/heads/` is dropped.
    fn push(&mut self, mut r: ForgeRepo) {
        if !valid_name(&r.name) {
            self.refused_names.push(r.name);
            return;
        }
        r.default_branch = r.default_branch.filter(|b| valid_ref_part(b));
        self.repos.push(r);
    }
}

/// Whether a repository path from the forge can be a directory under the
/// mirrors: relative, no `.` or `..` parts, no control characters, and
/// not ours (`*.git`, `*.wiki`, hidden).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && !part.ends_with(".git")
                && !part.ends_with(".wiki")
                && !part.chars().any(|c| c.is_control() || c == '\\')
        })
}

/// Whether a branch name is safe to put after `refs/heads/`.
fn valid_ref_part(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 255
        && !b.starts_with(['-', '/', '.'])
        && !b.contains("..")
        && !b.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c))
}

/// Percent-encodes a path segment (GitLab's group paths hold `/`).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct GhOwner {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct GhUser {
    login: String,
}

/// GitHub's and Gitea's repository object (the fields used).
#[derive(Deserialize)]
struct GhRepo {
    id: u64,
    name: String,
    clone_url: String,
    #[serde(default)]
    ssh_url: String,
    #[serde(default)]
    fork: bool,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    has_wiki: bool,
    default_branch: Option<String>,
}

/// GitLab's project object (the fields used).
#[derive(Deserialize)]
struct GlProject {
    id: u64,
    path: String,
    path_with_namespace: String,
    http_url_to_repo: String,
    #[serde(default)]
    ssh_url_to_repo: String,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    wiki_enabled: bool,
    default_branch: Option<String>,
    forked_from_project: Option<serde_json::Value>,
}

struct Page {
    body: Vec<u8>,
    next: Option<String>,
    status: u16,
}

struct Client<'a> {
    l: &'a Listing,
    agent: ureq::Agent,
    cancel: Arc<AtomicBool>,
    limit_waits: u32,
    waited: Duration,
    requests: u32,
}

impl<'a> Client<'a> {
    fn new(l: &'a Listing, cancel: Arc<AtomicBool>) -> Client<'a> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .timeout_connect(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            l,
            agent,
            cancel,
            limit_waits: 0,
            waited: Duration::ZERO,
            requests: 0,
        }
    }

    fn forge(&self) -> &'static str {
        self.l.kind.name()
    }

    fn bad(&self, url: &str, why: String) -> ForgeError {
        ForgeError::Bad {
            forge: self.forge(),
            url: url.to_string(),
            why,
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &[u8],
    ) -> Result<T, ForgeError> {
        serde_json::from_slice(body)
            .map_err(|e| self.bad(url, format!("not the documented JSON: {e}")))
    }

    fn get_json<T: serde::de::DeserializeOwned>(&mut self, url: &str) -> Result<T, ForgeError> {
        let page = self.get(url, false)?;
        self.parse(url, &page.body)
    }

    /// Whether `url` answers 200 (rather than 404).
    fn exists(&mut self, url: &str) -> Result<bool, ForgeError> {
        Ok(self.get(url, true)?.status != 404)
    }

    /// The login of the token's user, lowercased.
    fn token_user(&mut self, api: &str) -> Result<Option<String>, ForgeError> {
        let url = format!("{api}/user");
        let page = self.get(&url, true)?;
        if page.status == 404 {
            return Ok(None);
        }
        let u: GhUser = self.parse(&url, &page.body)?;
        Ok(Some(u.login.to_lowercase()))
    }

    /// A next link, if it stays on the API's origin.
    fn same_origin(&self, next: &str, api: &str) -> Result<String, ForgeError> {
        let origin = |u: &str| -> Option<String> {
            let (scheme, rest) = u.split_once("://")?;
            let host = &rest[..rest.find('/').unwrap_or(rest.len())];
            Some(format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            ))
        };
        if origin(next).is_some() && origin(next) == origin(api) {
            Ok(next.to_string())
        } else {
            Err(self.bad(
                api,
                format!(
                    "its next page points to another site ({next:?}); the token is not sent there"
                ),
            ))
        }
    }

    fn sleep(&mut self, d: Duration) -> Result<(), ForgeError> {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(ForgeError::Interrupted);
            }
            std::thread::sleep((until - std::time::Instant::now()).min(Duration::from_millis(200)));
        }
        Ok(())
    }

    /// GETs `url`, waiting out rate limits and retrying 5xx and failed
    /// connections; 404 is an answer when `not_found_ok`.
    fn get(&mut self, url: &str, not_found_ok: bool) -> Result<Page, ForgeError> {
        let mut tries = 0;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(ForgeError::Interrupted);
            }
            tries += 1;
            self.requests += 1;
            let mut req = self.agent.get(url).header("Accept", "application/json");
            if self.l.kind == ForgeKind::GitHub {
                req = req
                    .header("Accept", "application/vnd.github+json")
                    .header("X-GitHub-Api-Version", "2022-11-28");
            }
            if let Some(t) = &self.l.token {
                req = match self.l.kind {
                    ForgeKind::GitHub => req.header("Authorization", &format!("Bearer {t}")),
                    ForgeKind::GitLab => req.header("PRIVATE-TOKEN", t),
                    ForgeKind::Gitea | ForgeKind::Forgejo => {
                        req.header("Authorization", &format!("token {t}"))
                    }
                };
            }
            let mut resp = match req.call() {
                Ok(r) => r,
                Err(e) => {
                    if tries < TRIES {
                        self.sleep(self.l.retry_pause * tries)?;
                        continue;
                    }
                    return Err(ForgeError::Unreachable {
                        forge: self.forge(),
                        url: url.to_string(),
                        why: e.to_string(),
                    });
                }
            };
            let status = resp.status().as_u16();
            let h = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (retry_after, remaining, reset) = (
                h("retry-after"),
                h("x-ratelimit-remaining").or_else(|| h("ratelimit-remaining")),
                h("x-ratelimit-reset").or_else(|| h("ratelimit-reset")),
            );
            let next = h("link").and_then(|l| next_link(&l)).or_else(|| {
                // GitLab: `x-next-page` with the same query otherwise.
                let n = gitlab_next_page(h("x-next-page").as_deref())?;
                Some(with_page(url, n))
            });
            let mut body = Vec::new();
            let read = resp
                .body_mut()
                .as_reader()
                .take(MAX_BODY + 1)
                .read_to_end(&mut body);
            let limits = Limits {
                status,
                retry_after: retry_after.as_deref(),
                remaining: remaining.as_deref(),
                reset: reset.as_deref(),
            };
            let wait = wait_before(&limits, SystemTime::now()).map(|w| {
                if status == 429 && retry_after.is_none() && remaining.is_none() {
                    self.l.bare_limit_wait
                } else {
                    w
                }
            });
            let limited = status == 429
                || (status == 403
                    && (wait.is_some() || String::from_utf8_lossy(&body).contains("rate limit")));
            if limited {
                if self.limit_waits >= MAX_LIMIT_WAITS {
                    return Err(self.bad(
                        url,
                        format!("still rate-limited after {MAX_LIMIT_WAITS} waits"),
                    ));
                }
                let w = wait.unwrap_or(self.l.bare_limit_wait);
                self.limit_waits += 1;
                self.waited += w;
                self.sleep(w)?;
                tries -= 1;
                continue;
            }
            if (500..600).contains(&status) || read.is_err() {
                if tries < TRIES {
                    self.sleep(self.l.retry_pause * tries)?;
                    continue;
                }
                if let Err(e) = read {
                    return Err(ForgeError::Unreachable {
                        forge: self.forge(),
                        url: url.to_string(),
                        why: format!("the answer broke off: {e}"),
                    });
                }
                return Err(ForgeError::Server {
                    forge: self.forge(),
                    status,
                    url: url.to_string(),
                    tries,
                });
            }
            if body.len() as u64 > MAX_BODY {
                return Err(self.bad(url, format!("an answer over {} MiB", MAX_BODY >> 20)));
            }
            let detail = || {
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .and_then(|m| m.as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or(text)
            };
            match status {
                200..=299 => {
                    // A spent limit on a good answer holds the next request.
                    if let Some(w) = wait {
                        self.limit_waits += 1;
                        self.waited += w;
                        self.sleep(w)?;
                    }
                    return Ok(Page { body, next, status });
                }
                401 => {
                    return Err(ForgeError::Unauthorized {
                        forge: self.forge(),
                        status,
                        detail: detail(),
                    });
                }
                403 => {
                    return Err(ForgeError::Forbidden {
                        forge: self.forge(),
                        owner: self.l.owner.clone(),
                        detail: detail(),
                    });
                }
                404 if not_found_ok => return Ok(Page { body, next, status }),
                404 => {
                    return Err(ForgeError::NoOwner {
                        forge: self.forge(),
                        owner: self.l.owner.clone(),
                    });
                }
                _ => return Err(self.bad(url, format!("status {status}: {}", detail()))),
            }
        }
    }
}

/// `url` with its `page` query parameter set to `n`.
fn with_page(url: &str, n: u32) -> String {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page="))
        .map(str::to_string)
        .collect();
    parts.push(format!("page={n}"));
    format!("{path}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_directories_are_refused() {
        for ok in ["shop", "team/shop", "a.b", "x-y_z", "ünï"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "..", "../x", "a/../b", "/abs", "a//b", ".hidden", "x.git", "x.wiki", "a\\b",
            "a\nb", "team/",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn api_roots_and_pages() {
        assert_eq!(
            ForgeKind::GitHub.api_root("https://github.com/"),
            "https://api.github.com"
        );
        assert_eq!(
            ForgeKind::GitHub.api_root("https://ghe.example"),
            "https://ghe.example/api/v3"
        );
        assert_eq!(
            ForgeKind::GitLab.api_root("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/api/v4"
        );
        assert_eq!(encode("team/sub group"), "team%2Fsub%20group");
        assert_eq!(
            with_page("https://g/x?per_page=100&page=1", 2),
            "https://g/x?per_page=100&page=2"
        );
        assert_eq!(with_page("https://g/x", 3), "https://g/x?page=3");
        assert_eq!(
            ForgeRepo::wiki_url("https://g/o/shop.git"),
            "https://g/o/shop.wiki.git"
        );
    }
}
