//! The running server: its repositories, tokens and counters, the
//! connection loop (TLS, or plain HTTP on loopback), and the routes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_storage::{LocalStorage, Storage};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::api::{self, Peer};
use crate::certs::{self, Resolver};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::jobs::JobBoard;
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::tokens::{Rejection, TokenStore};

/// Everything requests share.
pub struct Server {
    /// The configuration it runs with.
    pub config: Config,
    repos: HashMap<String, Arc<dyn Storage>>,
    /// The tokens.
    pub tokens: TokenStore,
    pub(crate) limiter: Limiter,
    /// Request and job counters.
    pub metrics: Metrics,
    /// Outcomes of the scheduled jobs.
    pub jobs: JobBoard,
    /// Back-dated snapshots that arrived.
    pub alerts: crate::alerts::Alerts,
    /// The last log lines, for the status page.
    recent: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// Log lines kept for the status page.
const RECENT: usize = 200;

impl Server {
    /// Opens every repository the config names; one that is missing or
    /// not a repository stops the start, with its name.
    pub fn new(config: Config) -> Result<Server> {
        let mut repos = HashMap::new();
        for r in &config.repositories {
            let loc = r.path.to_string_lossy();
            let s: Arc<dyn Storage> = if loc.starts_with("s3://") {
                // Uploads are staged on the box, then sent in one PUT.
                let staging = config.state.join("staging").join(&r.name);
                Arc::new(cairn_storage::S3Storage::open(&loc, &staging).map_err(|e| {
                    Error::Repo {
                        name: r.name.clone(),
                        source: e.into(),
                    }
                })?)
            } else {
                Arc::new(LocalStorage::new(r.path.clone()))
            };
            cairn_store::read_config(&*s).map_err(|e| Error::Repo {
                name: r.name.clone(),
                source: e,
            })?;
            // Uploads a killed server left behind.
            s.clean_staging(std::time::Duration::from_secs(3600));
            repos.insert(r.name.clone(), s);
        }
        let tokens = TokenStore::new(&config.state);
        // A damaged token file refuses every request; say so at start.
        tokens.list()?;
        Ok(Server {
            tokens,
            limiter: Limiter::new(config.limits.auth_failures, config.limits.auth_window),
            metrics: Metrics::default(),
            jobs: JobBoard::new(&config)?,
            alerts: crate::alerts::Alerts::new(&config.state)?,
            recent: std::sync::Mutex::default(),
            repos,
            config,
        })
    }

    /// The storage of a served repository.
    pub fn repo(&self, name: &str) -> Option<Arc<dyn Storage>> {
        self.repos.get(name).cloned()
    }

    /// Writes a line to the log (stderr: the journal, under systemd).
    pub fn log(&self, msg: &str) {
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::now());
        eprintln!("{now} cairn server: {msg}");
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(format!("{now} {msg}"));
    }

    /// The last log lines, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// A source's snapshot arrived: log it if it is back-dated.
    pub(crate) fn snapshot_arrived(&self, repo: &str, token: &str, data: &[u8]) {
        if let Some((group, b)) = self
            .alerts
            .arrived(repo, token, data, cairn_store::now_ns())
        {
            self.log(&format!(
                "token {token} sent a snapshot of {repo} group {group:?} claiming a time over a day before it arrived ({} such so far); retention goes by arrival, so it cannot push older snapshots out",
                b.count
            ));
        }
    }

    pub(crate) fn auth_failed(&self, ip: IpAddr, why: Option<&Rejection>, detail: &str) {
        self.metrics.auth_failure();
        let locked = self.limiter.fail(ip);
        let what = match why {
            Some(r) => r.to_string(),
            None => detail.to_string(),
        };
        self.log(&format!(
            "failed login from {ip}: {what}{}",
            if locked {
                format!(
                    "; refusing {ip} for {} s",
                    self.config.limits.auth_window.as_secs()
                )
            } else {
                String::new()
            }
        ));
    }
}

/// Whether the request comes from the box itself.
fn from_loopback(req: &Request) -> bool {
    req.extensions()
        .get::<Peer>()
        .is_some_and(|p| p.0.ip().is_loopback())
}

/// Whether the status page and metrics may answer this request.
/// Exposed for tests of the policy: a test cannot connect from an address
/// that is not loopback.
pub fn may_see_status(server: &Server, req: &Request) -> bool {
    server.config.limits.public_status || from_loopback(req)
}

fn router(server: Arc<Server>) -> Router {
    let s1 = server.clone();
    let s2 = server.clone();
    let hidden = || {
        api::text(
            axum::http::StatusCode::FORBIDDEN,
            "the status page answers loopback only here (limits.public_status = false)",
        )
    };
    Router::new()
        .route(
            "/metrics",
            get(move |req: Request| {
                let s = s1.clone();
                async move {
                    if !may_see_status(&s, &req) {
                        return hidden();
                    }
                    crate::metrics::render(&s).await.into_response()
                }
            }),
        )
        .route(
            "/",
            get(move |req: Request| {
                let s = s2.clone();
                async move {
                    if !may_see_status(&s, &req) {
                        return hidden();
                    }
                    let detail = from_loopback(&req);
                    crate::status::render(&s, detail).await.into_response()
                }
            }),
        )
        .fallback(move |req: Request| {
            let s = server.clone();
            async move {
                let peer = req.extensions().get::<Peer>().copied();
                match peer {
                    Some(p) if req.uri().path().starts_with("/v1/") => api::handle(s, p, req).await,
                    _ => api::text(
                        axum::http::StatusCode::NOT_FOUND,
                        "nothing here: the API is under /v1/ (docs/http-api.md), the status page at /",
                    ),
                }
            }
        })
}

/// A server listening; dropping it does not stop it (see [`Running::stop`]).
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The fingerprint of its certificate (TLS only).
    pub fingerprint: Option<[u8; 32]>,
    /// The shared state.
    pub server: Arc<Server>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets open requests end, and waits.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Waits until the server stops (it does not on its own).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the server on its own runtime thread and returns once it
/// listens. Its jobs do not run: `cairn_daemon::start` runs them beside it.
pub fn start(config: Config) -> Result<Running> {
    start_with(config, |_, _| {})
}

/// [`start`], running `beside` in the server's runtime too (the daemon's
/// scheduler), given the server and the signal that stops it.
pub fn start_with(
    config: Config,
    beside: impl FnOnce(Arc<Server>, tokio::sync::watch::Receiver<bool>) + Send + 'static,
) -> Result<Running> {
    let server = Arc::new(Server::new(config)?);
    let c = &server.config;
    let tls = if c.plain_http {
        None
    } else {
        let files = certs::ensure(c)?;
        Some(Resolver::new(files)?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .thread_name("cairn-server")
        .build()
        .map_err(|e| Error::io("start", "runtime", e))?;
    let listener = runtime
        .block_on(TcpListener::bind(c.listen))
        .map_err(|e| Error::io("listen on", c.listen.to_string(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("listen on", c.listen.to_string(), e))?;
    let fingerprint = tls.as_ref().map(Resolver::fingerprint);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let thread = std::thread::Builder::new()
        .name("cairn-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                beside(s.clone(), stop_rx.clone());
                if let Some(r) = &tls {
                    spawn_reloader(s.clone(), r.clone(), stop_rx.clone());
                }
                serve(s, listener, tls, stop_rx).await;
            });
        })
        .map_err(|e| Error::io("start", "server thread", e))?;
    Ok(Running {
        addr,
        fingerprint,
        server,
        stop,
        thread: Some(thread),
    })
}

fn spawn_reloader(s: Arc<Server>, r: Resolver, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = s.config.limits.cert_reload;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let r2 = r.clone();
            match tokio::task::spawn_blocking(move || r2.reload_if_changed()).await {
                Ok(Ok(Some(fp))) => s.log(&format!(
                    "certificate {} changed; now serving {}",
                    r.files().cert.display(),
                    cairn_remote::tls::show_fingerprint(&fp)
                )),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => s.log(&format!(
                    "certificate files changed but do not load ({e}); still serving the old one"
                )),
                Err(_) => {}
            }
        }
    });
}

async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    tls: Option<Resolver>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = match tls.map(certs::server_config).transpose() {
        Ok(cfg) => cfg.map(tokio_rustls::TlsAcceptor::from),
        Err(e) => {
            server.log(&format!("cannot serve TLS: {e}"));
            return;
        }
    };
    let app = router(server.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(
        server.config.limits.connections,
    ));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    server.log(&format!("accept failed: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let limits = &server.config.limits;
            match acceptor {
                None => connection(&server, TokioIo::new(tcp), peer, app).await,
                Some(acceptor) => {
                    if !speaks_tls(&tcp, limits.handshake).await {
                        refuse_plain(tcp).await;
                        return;
                    }
                    match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => connection(&server, TokioIo::new(s), peer, app).await,
                        Ok(Err(e)) => server.log(&format!("TLS handshake with {peer} failed: {e}")),
                        Err(_) => server.log(&format!("TLS handshake with {peer} timed out")),
                    }
                }
            }
        });
    }
}

/// Whether the first byte is a TLS handshake record (22).
async fn speaks_tls(tcp: &TcpStream, wait: std::time::Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(tokio::time::timeout(wait, tcp.peek(&mut b)).await, Ok(Ok(1)) if b[0] == 0x16)
}

/// Plain HTTP to the TLS port gets an answer it can show, not a reset.
async fn refuse_plain(mut tcp: TcpStream) {
    let msg = "this port speaks HTTPS only: use https:// in the repository URL\n";
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
        msg.len()
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = tcp.write_all(resp.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

async fn connection<I>(server: &Server, io: TokioIo<I>, peer: SocketAddr, app: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let app = app.clone();
        async move {
            let req = req.map(axum::body::Body::new);
            let resp: Response = tower_service::Service::call(&mut app.clone(), req)
                .await
                .unwrap_or_else(|never| match never {});
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(server.config.limits.headers)
        .max_buf_size(64 << 10)
        .serve_connection(io, svc);
    if let Err(e) = conn.await
        && !e.is_incomplete_message()
    {
        let m = e.to_string();
        if !m.contains("connection closed") {
            server.log(&format!("connection from {peer}: {m}"));
        }
    }
}
