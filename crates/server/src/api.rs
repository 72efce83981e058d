//! The storage API (`docs/http-api.md`): one object operation per
//! request, authenticated by a bearer token and applied through the
//! token's [`GuardedStorage`], the one place roles are enforced.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::guarded::{GuardedStorage, Refusal};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use cairn_remote::https::kind_of_segment;
use cairn_storage::{Error, Kind, Storage};
use http_body_util::BodyExt;

use crate::listener::Server;

/// The client's address, put on each request by the connection loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Largest upload of anything but a pack.
pub const MAX_SMALL: u64 = 64 << 20;
/// Bodies up to this size are taken in memory; larger go to a file.
const IN_MEMORY: u64 = 8 << 20;

pub(crate) fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    let mut r = Response::new(Body::from(m));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::AlreadyExists { .. } => StatusCode::CONFLICT,
        Error::Refused(_) => StatusCode::FORBIDDEN,
        Error::InvalidName(_) => StatusCode::BAD_REQUEST,
        Error::Short { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        Error::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a request is about, from its path.
#[derive(Debug)]
struct Target {
    repo: String,
    kind: Kind,
    /// `None`: the listing of the kind.
    name: Option<String>,
}

fn parse_path(path: &str) -> Result<Target, String> {
    let usage = "expected /v1/REPO/config, /v1/REPO/KIND/ or /v1/REPO/KIND/NAME";
    let rest = path
        .strip_prefix("/v1/")
        .ok_or_else(|| format!("{path}: {usage}"))?;
    let (repo, rest) = rest
        .split_once('/')
        .ok_or_else(|| format!("{path}: {usage}"))?;
    if rest == "config" {
        return Ok(Target {
            repo: repo.to_string(),
            kind: Kind::Config,
            name: Some("config".into()),
        });
    }
    let (kind, name) = rest
        .split_once('/')
        .ok_or_else(|| format!("{path}: {usage}"))?;
    let kind = kind_of_segment(kind)
        .filter(|k| *k != Kind::Config)
        .ok_or_else(|| format!("{path}: no object kind {kind:?}; {usage}"))?;
    Ok(Target {
        repo: repo.to_string(),
        kind,
        // Everything after the kind is the name, slashes and dots
        // included, so that the guard sees (and logs) `../x` as asked.
        name: (!name.is_empty()).then(|| name.to_string()),
    })
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Parses `bytes=A-B` (both given, as Cairn's client sends).
fn range(h: &HeaderMap) -> Result<Option<(u64, u64)>, String> {
    let Some(v) = h.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || "Range: expected bytes=FIRST-LAST".to_string();
    let v = v.to_str().map_err(|_| bad())?;
    let (a, b) = v
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if b < a || b - a >= 64 << 20 {
        return Err("Range: empty, backwards or over 64 MiB".into());
    }
    Ok(Some((a, b - a + 1)))
}

/// Runs a storage call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> cairn_storage::Result<T> + Send + 'static,
) -> cairn_storage::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::io("serve", "request", std::io::Error::other(e))))
}

/// Every `/v1/` request.
pub async fn handle(server: Arc<Server>, peer: Peer, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let ip = peer.0.ip();
    let t = match parse_path(parts.uri.path()) {
        Ok(t) => t,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    // Who is asking.
    if let Some(wait) = server.limiter.locked(ip) {
        let mut r = text(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins from {ip}; wait {wait} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let Some(token) = bearer(&parts.headers) else {
        server.auth_failed(ip, None, "no token");
        return text(
            StatusCode::UNAUTHORIZED,
            "no token: send Authorization: Bearer TOKEN (cairn: set CAIRN_TOKEN or --token-file)",
        );
    };
    let record = match server.tokens.authenticate(token) {
        Ok(Ok(r)) => r,
        Ok(Err(why)) => {
            server.auth_failed(ip, Some(&why), "");
            return text(StatusCode::UNAUTHORIZED, why.to_string());
        }
        Err(e) => {
            server.log(&format!("cannot read tokens: {e}"));
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server cannot read its tokens",
            );
        }
    };
    let role = match record.role() {
        Ok(r) => r,
        Err(e) => return text(StatusCode::FORBIDDEN, format!("token {}: {e}", record.name)),
    };
    if record.repo != t.repo {
        server.log(&format!(
            "refused token {} ({}) from {ip}: it is for repository {:?}, not {:?}",
            record.name,
            role.name(),
            record.repo,
            t.repo
        ));
        server.metrics.refused(role.name());
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} is for repository {:?}, not {:?}",
                record.name, record.repo, t.repo
            ),
        );
    }
    let Some(inner) = server.repo(&t.repo) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no repository {:?} on this server", t.repo),
        );
    };
    let role_name = role.name();
    let audit_server = server.clone();
    let guarded = Arc::new(GuardedStorage::new(
        inner,
        role,
        &record.name,
        Arc::new(move |r: &Refusal| {
            audit_server.log(&format!(
                "refused {:?} {:?} {:?} for token {} ({}) from {ip}: {}",
                r.op, r.kind, r.name, r.principal, r.role, r.reason
            ));
            audit_server.metrics.refused(r.role);
        }),
    ));
    let resp = dispatch(
        &server,
        guarded,
        &parts.method,
        &parts.headers,
        t,
        body,
        &record.name,
    )
    .await;
    server.metrics.request(role_name, resp.status().as_u16());
    resp
}

async fn dispatch(
    server: &Server,
    g: Arc<GuardedStorage>,
    method: &Method,
    headers: &HeaderMap,
    t: Target,
    body: Body,
    token: &str,
) -> Response {
    let kind = t.kind;
    let err = |e: Error| text(status_of(&e), e.to_string());
    match (method.clone(), t.name) {
        (Method::GET, None) => match blocking(move || g.list(kind)).await {
            Ok(list) => {
                let mut out = String::with_capacity(list.len() * 80);
                for o in list {
                    out.push_str(&o.name);
                    out.push(' ');
                    out.push_str(&o.size.to_string());
                    out.push('\n');
                }
                Response::new(Body::from(out))
            }
            Err(e) => err(e),
        },
        (Method::GET, Some(name)) => {
            let r = match range(headers) {
                Ok(r) => r,
                Err(m) => return text(StatusCode::BAD_REQUEST, m),
            };
            match r {
                Some((off, len)) => {
                    match blocking(move || g.get_range(kind, &name, off, len)).await {
                        Ok(d) => {
                            let mut resp = Response::new(Body::from(d));
                            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                            resp
                        }
                        Err(e) => err(e),
                    }
                }
                None => match blocking(move || g.get(kind, &name)).await {
                    Ok(d) => Response::new(Body::from(d)),
                    Err(e) => err(e),
                },
            }
        }
        (Method::HEAD, Some(name)) => match blocking(move || g.size(kind, &name)).await {
            Ok(n) => {
                let mut resp = Response::new(Body::empty());
                resp.headers_mut()
                    .insert("cairn-size", HeaderValue::from(n));
                resp
            }
            Err(e) => err(e),
        },
        (Method::PUT, Some(name)) => {
            put(server, g, headers, &t.repo, token, kind, name, body).await
        }
        (Method::DELETE, Some(name)) => match blocking(move || g.delete(kind, &name)).await {
            Ok(()) => {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            Err(e) => err(e),
        },
        (m, _) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not an operation on this path; see docs/http-api.md"),
        ),
    }
}

/// A staged upload that did not end in a publish leaves nothing behind.
struct Staged(std::path::PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
async fn put(
    server: &Server,
    g: Arc<GuardedStorage>,
    headers: &HeaderMap,
    repo: &str,
    token: &str,
    kind: Kind,
    name: String,
    body: Body,
) -> Response {
    let err = |e: Error| text(status_of(&e), e.to_string());
    let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return text(
            StatusCode::LENGTH_REQUIRED,
            "an upload needs a Content-Length",
        );
    };
    let max = if kind == Kind::Pack {
        crate::serve::MAX_UPLOAD
    } else {
        MAX_SMALL
    };
    if len > max {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{len} bytes is more than the {max} a {kind:?} object may have"),
        );
    }
    // Refuse by role and name before taking a byte.
    if let Err(e) = g.admit_put(kind, &name) {
        return err(e);
    }
    let idle = server.config.limits.body_idle;
    let mut body = body;
    let created = || {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::CREATED;
        r
    };
    if len <= IN_MEMORY {
        let mut data = Vec::with_capacity(len as usize);
        if let Err(r) = read_body(&mut body, idle, len, &mut data, None).await {
            return r;
        }
        let admin = g.role_name() == "admin";
        return match blocking(move || g.put(kind, &name, &data).map(|()| data)).await {
            Ok(data) => {
                if kind == Kind::Snapshot && !admin {
                    server.snapshot_arrived(repo, token, &data);
                }
                created()
            }
            Err(e) => err(e),
        };
    }
    let dir = match g.staging_dir() {
        Ok(d) => d,
        Err(e) => return err(e),
    };
    let rnd = cairn_crypto::random::<12>().unwrap_or_default();
    let staged = Staged(dir.join(format!(
        "upload-{}-{}.tmp",
        std::process::id(),
        hex::encode(rnd)
    )));
    let mut file = match tokio::fs::File::create(&staged.0).await {
        Ok(f) => f,
        Err(e) => return err(Error::io("create", &staged.0, e)),
    };
    let mut pending: Vec<u8> = Vec::with_capacity(2 << 20);
    let at = staged.0.clone();
    if let Err(r) = read_body(&mut body, idle, len, &mut pending, Some((&mut file, &at))).await {
        return r;
    }
    drop(file);
    let path = staged.0.clone();
    match blocking(move || g.put_file(kind, &name, &path)).await {
        Ok(()) => created(),
        Err(e) => err(e),
    }
}

/// Reads exactly `len` body bytes into `buf`, waiting at most `idle`
/// for each piece; with a `file`, spills `buf` into it every MiB.
async fn read_body(
    body: &mut Body,
    idle: std::time::Duration,
    len: u64,
    buf: &mut Vec<u8>,
    mut file: Option<(&mut tokio::fs::File, &std::path::Path)>,
) -> Result<(), Response> {
    use tokio::io::AsyncWriteExt;
    let mut got = 0u64;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("no data for {} s; upload abandoned", idle.as_secs()),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    format!("upload broke off: {e}"),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        got += data.len() as u64;
        if got > len {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "body longer than its Content-Length",
            ));
        }
        buf.extend_from_slice(&data);
        if let Some((f, path)) = &mut file
            && buf.len() >= 1 << 20
        {
            f.write_all(buf).await.map_err(|e| {
                let e = Error::io("write", *path, e);
                text(status_of(&e), e.to_string())
            })?;
            buf.clear();
        }
    }
    if got != len {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "body shorter than its Content-Length",
        ));
    }
    if let Some((f, path)) = file {
        let io = |e| {
            let e = Error::io("write", path, e);
            text(status_of(&e), e.to_string())
        };
        f.write_all(buf).await.map_err(io)?;
        f.sync_all().await.map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_repo_kind_and_object() {
        let t = parse_path("/v1/home/data/ab12").unwrap();
        assert_eq!(
            (t.repo.as_str(), t.kind, t.name.as_deref()),
            ("home", Kind::Pack, Some("ab12"))
        );
        let t = parse_path("/v1/home/snapshots/").unwrap();
        assert_eq!((t.kind, t.name), (Kind::Snapshot, None));
        let t = parse_path("/v1/home/config").unwrap();
        assert_eq!(t.kind, Kind::Config);
        // Traversal reaches the guard as a name, to be refused and logged.
        let t = parse_path("/v1/home/data/../keys/k").unwrap();
        assert_eq!(t.name.as_deref(), Some("../keys/k"));
        assert!(parse_path("/v2/home/data/x").is_err());
        assert!(
            parse_path("/v1/home/etc/x")
                .unwrap_err()
                .contains("no object kind")
        );
        assert!(parse_path("/v1/home").is_err());
    }
}
