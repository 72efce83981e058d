//! A forge on loopback for tests and benchmarks: the repository listings
//! of GitHub (`/api/v3`), GitLab (`/api/v4`) and Gitea (`/api/v1`) in
//! their documented JSON, paged with `Link` headers (and GitLab's
//! `x-next-page`), with token checks and rate limits on demand, and the
//! repositories themselves served over git's smart HTTP by the real
//! `git http-backend`.
//!
//! Repositories are bare repositories under `root/OWNER/NAME.git`; a
//! test changes them with git and changes the listing through
//! [`Forge::model`] (renames, deletions, new repositories, a revoked
//! token).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};

/// One repository in the listing.
#[derive(Clone, Debug)]
pub struct SimRepo {
    /// Stable ID.
    pub id: u64,
    /// Name under the owner (`team/x` for a GitLab subgroup).
    pub name: String,
    /// Served from `root/OWNER/<dir>.git`.
    pub dir: String,
    /// A fork.
    pub fork: bool,
    /// Archived.
    pub archived: bool,
    /// Has a wiki (`<dir>.wiki.git`, which may not exist).
    pub has_wiki: bool,
    /// Default branch.
    pub default_branch: String,
}

/// A rate limit the next listing meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// A 429 with `Retry-After: 1`.
    RetryAfter,
    /// GitHub's primary limit: 403, `x-ratelimit-remaining: 0`, a reset
    /// a second away.
    Spent403,
    /// A 429 with no header at all.
    Bare429,
}

/// What the forge serves; tests change it between runs.
#[derive(Debug)]
pub struct Model {
    /// The owner.
    pub owner: String,
    /// Whether the owner is an organisation (GitLab: a group).
    pub org: bool,
    /// Its repositories.
    pub repos: Vec<SimRepo>,
    /// The accepted token (`None`: any, or none).
    pub token: Option<String>,
    /// Repositories per page.
    pub per_page: usize,
    /// A limit met on the API request with this number (1-based, counted
    /// from now), once.
    pub limit_at: Option<(u64, Limit)>,
    /// Every API request answers this status (a broken forge).
    pub fail_with: Option<u16>,
    /// SSH clone URLs are `<ssh_base>/OWNER/NAME.git` (default
    /// `ssh://git@127.0.0.1`).
    pub ssh_base: Option<String>,
    /// Answers to `git-upload-pack` POSTs (the pack) wait this long, so
    /// a test can kill a fetch in the middle.
    pub pack_delay: Option<std::time::Duration>,
    /// API requests served (for assertions).
    pub api_requests: u64,
    /// Git requests served.
    pub git_requests: u64,
    /// `git-upload-pack` POSTs received (packs asked for).
    pub pack_requests: u64,
    /// LFS objects downloaded.
    pub lfs_downloads: u64,
}

/// A running forge; dropping it stops the server.
pub struct Forge {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Where the bare repositories are.
    pub root: PathBuf,
    /// The listing.
    pub model: Arc<Mutex<Model>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Forge {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Forge {
    /// Starts a forge for `owner` serving the repositories under `root`.
    pub fn start(root: &Path, owner: &str, org: bool) -> Forge {
        let model = Arc::new(Mutex::new(Model {
            owner: owner.to_string(),
            org,
            repos: Vec::new(),
            token: None,
            per_page: 100,
            limit_at: None,
            fail_with: None,
            ssh_base: None,
            pack_delay: None,
            api_requests: 0,
            git_requests: 0,
            pack_requests: 0,
            lfs_downloads: 0,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            model: model.clone(),
            root: root.to_path_buf(),
            url: url.clone(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let st = state.clone();
                        async move {
                            tokio::task::spawn_blocking(move || {
                                st.handle(method, uri, headers, body)
                            })
                            .await
                            .unwrap_or_else(|_| status(500, "handler panicked"))
                        }
                    },
                );
                axum::serve(l, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        Forge {
            url,
            root: root.to_path_buf(),
            model,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Creates a bare repository served as `name` with the next ID, and
    /// returns its path.
    pub fn add_repo(&self, name: &str) -> PathBuf {
        let mut m = self.model.lock().unwrap();
        let id = 1000 + m.repos.iter().map(|r| r.id - 999).max().unwrap_or(0);
        let dir = self.root.join(&m.owner).join(format!("{name}.git"));
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let ok = std::process::Command::new("git")
            .args(["init", "--bare", "-q", "-b", "main"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git init --bare {}", dir.display());
        m.repos.push(SimRepo {
            id,
            name: name.to_string(),
            dir: name.to_string(),
            fork: false,
            archived: false,
            has_wiki: false,
            default_branch: "main".into(),
        });
        dir
    }

    /// Lists every bare repository already under `root/OWNER` (the
    /// benchmark's), in name order, with IDs from 1000.
    pub fn add_existing(&self) -> usize {
        let mut m = self.model.lock().unwrap();
        let dir = self.root.join(&m.owner);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_suffix(".git")
                            .map(str::to_string)
                    })
                    .filter(|n| !n.ends_with(".wiki"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for (i, name) in names.iter().enumerate() {
            m.repos.push(SimRepo {
                id: 1000 + i as u64,
                name: name.clone(),
                dir: name.clone(),
                fork: false,
                archived: false,
                has_wiki: false,
                default_branch: "main".into(),
            });
        }
        names.len()
    }

    /// Stores `data` as an LFS object of the repository served from
    /// `dir`, and returns the pointer file to commit in its place.
    pub fn add_lfs_object(&self, dir: &str, data: &[u8], sha256_hex: &str) -> String {
        let owner = self.model.lock().unwrap().owner.clone();
        let store = self.root.join(&owner).join(format!("{dir}.lfs"));
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join(sha256_hex), data).unwrap();
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex}\nsize {}\n",
            data.len()
        )
    }

    /// The clone URL of a served directory.
    pub fn clone_url(&self, dir: &str) -> String {
        let owner = self.model.lock().unwrap().owner.clone();
        format!("{}/git/{owner}/{dir}.git", self.url)
    }
}

struct State {
    model: Arc<Mutex<Model>>,
    root: PathBuf,
    url: String,
}

fn status(code: u16, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{{\"message\":{msg:?}}}")));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

impl State {
    fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response<Body> {
        let path = uri.path().to_string();
        if let Some(repo) = path
            .strip_prefix("/git/")
            .and_then(|r| r.strip_suffix(".git/info/lfs/objects/batch"))
        {
            return self.lfs_batch(repo, &headers, &body);
        }
        if let Some(rest) = path.strip_prefix("/lfs/") {
            return self.lfs_get(rest, &headers);
        }
        if let Some(rest) = path.strip_prefix("/git/") {
            return self.git(&method, rest, uri.query().unwrap_or(""), &headers, body);
        }
        self.api(&path, uri.query().unwrap_or(""), &headers)
    }

    fn token_ok(&self, m: &Model, headers: &HeaderMap, git: bool) -> bool {
        let Some(want) = &m.token else { return true };
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        if git {
            // Basic auth, any user name, the token as password.
            let Some(b64) = h("authorization").strip_prefix("Basic ") else {
                return false;
            };
            use base64::Engine;
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return false;
            };
            let raw = String::from_utf8_lossy(&raw).to_string();
            return raw.split_once(':').is_some_and(|(_, p)| p == want);
        }
        h("authorization") == format!("Bearer {want}")
            || h("authorization") == format!("token {want}")
            || h("private-token") == want
    }

    fn api(&self, path: &str, query: &str, headers: &HeaderMap) -> Response<Body> {
        let mut m = self.model.lock().unwrap();
        m.api_requests += 1;
        if let Some(code) = m.fail_with {
            return status(code, "the forge is broken");
        }
        if let Some((at, kind)) = m.limit_at {
            if at <= 1 {
                m.limit_at = None;
                let mut r = status(
                    if kind == Limit::Spent403 { 403 } else { 429 },
                    "API rate limit exceeded",
                );
                let h = r.headers_mut();
                match kind {
                    Limit::RetryAfter => {
                        h.insert("retry-after", HeaderValue::from_static("1"));
                    }
                    Limit::Spent403 => {
                        let reset = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
                    }
                    Limit::Bare429 => {}
                }
                return r;
            }
            m.limit_at = Some((at - 1, kind));
        }
        if !self.token_ok(&m, headers, false) {
            return status(401, "Bad credentials");
        }
        let owner = m.owner.clone();
        let enc_owner = owner.replace('/', "%2F");
        let param = |k: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let page = param("page").unwrap_or(1).max(1);
        let (api, kind) = if let Some(r) = path.strip_prefix("/api/v3") {
            (r, "github")
        } else if let Some(r) = path.strip_prefix("/api/v4") {
            (r, "gitlab")
        } else if let Some(r) = path.strip_prefix("/api/v1") {
            (r, "gitea")
        } else {
            return status(404, "Not Found");
        };
        let listing = match (kind, api) {
            ("github", p) if p == format!("/users/{owner}") => {
                let t = if m.org { "Organization" } else { "User" };
                return json(serde_json::json!({"login": owner, "type": t}), None);
            }
            ("github", "/user") => {
                return json(serde_json::json!({"login": owner, "type": "User"}), None);
            }
            ("github", p)
                if p == format!("/orgs/{owner}/repos")
                    || p == "/user/repos"
                    || p == format!("/users/{owner}/repos") =>
            {
                true
            }
            ("gitlab", p) if p == format!("/groups/{enc_owner}") => {
                if !m.org {
                    return status(404, "404 Group Not Found");
                }
                return json(serde_json::json!({"id": 1, "full_path": owner}), None);
            }
            ("gitlab", p)
                if p == format!("/groups/{enc_owner}/projects")
                    || p == format!("/users/{enc_owner}/projects") =>
            {
                true
            }
            ("gitea", p) if p == format!("/orgs/{owner}") => {
                if !m.org {
                    return status(404, "Not Found");
                }
                return json(serde_json::json!({"id": 1, "username": owner}), None);
            }
            ("gitea", p)
                if p == format!("/orgs/{owner}/repos") || p == format!("/users/{owner}/repos") =>
            {
                true
            }
            _ => false,
        };
        if !listing {
            return status(404, "Not Found");
        }
        let per = m.per_page.max(1);
        let start = (page - 1) * per;
        let items: Vec<serde_json::Value> = m
            .repos
            .iter()
            .skip(start)
            .take(per)
            .map(|r| self.repo_json(kind, &owner, r, m.ssh_base.as_deref()))
            .collect();
        let more = start + per < m.repos.len();
        let next_url = |n: usize| {
            let q: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("page="))
                .collect();
            let mut q = q.join("&");
            if !q.is_empty() {
                q.push('&');
            }
            format!("{}{path}?{q}page={n}", self.url)
        };
        let mut extra = Vec::new();
        if more {
            let link = format!(
                "<{}>; rel=\"next\", <{}>; rel=\"first\"",
                next_url(page + 1),
                next_url(1)
            );
            if kind == "gitlab" {
                // GitLab sends a Link header too; leaving it out makes
                // the client's use of `x-next-page` testable.
                extra.push(("x-next-page", (page + 1).to_string()));
            } else {
                extra.push(("link", link));
            }
        } else if kind == "gitlab" {
            extra.push(("x-next-page", String::new()));
        }
        json(serde_json::Value::Array(items), Some(extra))
    }

    fn repo_json(
        &self,
        kind: &str,
        owner: &str,
        r: &SimRepo,
        ssh_base: Option<&str>,
    ) -> serde_json::Value {
        let http = format!("{}/git/{owner}/{}.git", self.url, r.dir);
        let ssh = format!(
            "{}/{owner}/{}.git",
            ssh_base.unwrap_or("ssh://git@127.0.0.1"),
            r.dir
        );
        match kind {
            "gitlab" => serde_json::json!({
                "id": r.id,
                "path": r.name.rsplit('/').next().unwrap_or(&r.name),
                "path_with_namespace": format!("{owner}/{}", r.name),
                "http_url_to_repo": http,
                "ssh_url_to_repo": ssh,
                "archived": r.archived,
                "wiki_enabled": r.has_wiki,
                "default_branch": r.default_branch,
                "forked_from_project": if r.fork { serde_json::json!({"id": 1}) } else { serde_json::Value::Null },
            }),
            _ => serde_json::json!({
                "id": r.id,
                "name": r.name,
                "full_name": format!("{owner}/{}", r.name),
                "clone_url": http,
                "ssh_url": ssh,
                "fork": r.fork,
                "archived": r.archived,
                "has_wiki": r.has_wiki,
                "default_branch": r.default_branch,
                "private": false,
            }),
        }
    }

    /// Git LFS's batch API for downloads: each object the store has gets
    /// a download link, the others an error, as the spec says.
    fn lfs_batch(&self, repo: &str, headers: &HeaderMap, body: &[u8]) -> Response<Body> {
        {
            let m = self.model.lock().unwrap();
            if !self.token_ok(&m, headers, true) {
                return status(401, "Unauthorized");
            }
        }
        let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
            return status(422, "not JSON");
        };
        let objects: Vec<serde_json::Value> = req["objects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|o| {
                let oid = o["oid"].as_str().unwrap_or("").to_string();
                let size = o["size"].as_u64().unwrap_or(0);
                let file = self.root.join(format!("{repo}.lfs")).join(&oid);
                if oid.len() == 64 && oid.bytes().all(|b| b.is_ascii_hexdigit()) && file.exists() {
                    serde_json::json!({
                        "oid": oid, "size": size, "authenticated": true,
                        "actions": {"download": {"href": format!("{}/lfs/{repo}/{oid}", self.url)}}
                    })
                } else {
                    serde_json::json!({"oid": oid, "size": size, "error": {"code": 404, "message": "Object does not exist"}})
                }
            })
            .collect();
        let mut r = json(
            serde_json::json!({"transfer": "basic", "objects": objects}),
            None,
        );
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/vnd.git-lfs+json"),
        );
        r
    }

    /// An LFS object's bytes.
    fn lfs_get(&self, rest: &str, headers: &HeaderMap) -> Response<Body> {
        {
            let mut m = self.model.lock().unwrap();
            m.lfs_downloads += 1;
            if !self.token_ok(&m, headers, true) {
                return status(401, "Unauthorized");
            }
        }
        let Some((repo, oid)) = rest.rsplit_once('/') else {
            return status(404, "Not Found");
        };
        if repo.contains("..") || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return status(404, "Not Found");
        }
        match std::fs::read(self.root.join(format!("{repo}.lfs")).join(oid)) {
            Ok(b) => Response::new(Body::from(b)),
            Err(_) => status(404, "Not Found"),
        }
    }

    /// Runs `git http-backend` as a CGI for one request.
    fn git(
        &self,
        method: &Method,
        rest: &str,
        query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        let delay = {
            let mut m = self.model.lock().unwrap();
            m.git_requests += 1;
            if !self.token_ok(&m, headers, true) {
                let mut r = status(401, "Unauthorized");
                r.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static("Basic realm=\"forge\""),
                );
                return r;
            }
            let pack = *method == Method::POST && rest.ends_with("/git-upload-pack");
            if pack {
                m.pack_requests += 1;
            }
            m.pack_delay.filter(|_| pack)
        };
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", format!("/{rest}"))
            .env("QUERY_STRING", query)
            .env("REQUEST_METHOD", method.as_str())
            .env("CONTENT_TYPE", h("content-type"))
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("HTTP_CONTENT_ENCODING", h("content-encoding"))
            .env("GIT_PROTOCOL", h("git-protocol"))
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("git http-backend");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let out = child.wait_with_output().expect("http-backend output");
        let _ = writer.join();
        let raw = out.stdout;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| (p, 4))
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
        let Some((at, gap)) = split else {
            return status(
                500,
                &format!("http-backend: {}", String::from_utf8_lossy(&out.stderr)),
            );
        };
        let head = String::from_utf8_lossy(&raw[..at]).to_string();
        let mut resp = Response::new(Body::from(raw[at + gap..].to_vec()));
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("status") {
                let code: u16 = v
                    .split(' ')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(500);
                *resp.status_mut() =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            } else if let (Ok(name), Ok(val)) = (
                axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v),
            ) {
                resp.headers_mut().append(name, val);
            }
        }
        resp
    }
}

fn json(v: serde_json::Value, extra: Option<Vec<(&'static str, String)>>) -> Response<Body> {
    let mut r = Response::new(Body::from(v.to_string()));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    for (k, val) in extra.unwrap_or_default() {
        if let Ok(v) = HeaderValue::from_str(&val) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}
