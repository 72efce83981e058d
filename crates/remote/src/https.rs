//! The client of the box's HTTP API (`docs/http-api.md`): a [`Storage`]
//! at `https://host:port/NAME`.
//!
//! A small HTTP/1.1 client of our own over rustls rather than a general
//! one: the storage trait is blocking and called from several threads,
//! certificates are pinned by fingerprint (which the blocking clients
//! on crates.io do not let one plug in), uploads stream from staged
//! files, and every response of the API carries a `Content-Length`. Idle
//! connections are pooled; a request that meets a dead connection or an
//! unreachable server is retried with backoff for a bounded time, so a
//! box restarting under a backup is waited for rather than fatal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_storage::{Error, Kind, ObjectInfo, Result, Storage};
use rustls::pki_types::ServerName;

use crate::tls::{Trust, Verdict};

/// The path segment of a kind in the API.
pub fn kind_segment(kind: Kind) -> &'static str {
    match kind {
        Kind::Config => "config",
        k => k.dir(),
    }
}

/// The kind a path segment names.
pub fn kind_of_segment(s: &str) -> Option<Kind> {
    use Kind::*;
    [
        Config, Key, Pack, Index, Snapshot, Lock, Garbage, Protect, Receipt, Origin,
    ]
    .into_iter()
    .find(|k| kind_segment(*k) == s)
}

/// Where a client connects and how it proves who it is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Repository name on the box.
    pub repo: String,
    /// TLS, or plain HTTP (loopback only).
    pub tls: bool,
}

impl Endpoint {
    /// Parses `https://host[:port]/NAME` (port 8443 by default) or
    /// `http://127.0.0.1:port/NAME`.
    pub fn parse(url: &str) -> std::result::Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url}: expected https://host:port/NAME"));
        };
        let (hostport, repo) = rest.split_once('/').ok_or_else(|| {
            format!(
                "{url}: give the repository's name after the host, e.g. https://box:8443/laptop"
            )
        })?;
        let repo = repo.trim_end_matches('/');
        if repo.is_empty() || !cairn_storage::valid_name(repo) {
            return Err(format!(
                "{url}: the repository name {repo:?} must be lower-case letters, digits and '-'"
            ));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) => (h, p),
                Err(_) if hostport.starts_with('[') && hostport.ends_with(']') => (hostport, 8443),
                Err(_) => return Err(format!("{url}: {p:?} is not a port number")),
            },
            _ => (hostport, 8443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let e = Endpoint {
            host: host.to_string(),
            port,
            repo: repo.to_string(),
            tls,
        };
        if !tls && !e.is_loopback() {
            return Err(format!(
                "{url}: plain HTTP would send the token in the clear; use https:// (plain http:// is for loopback only)"
            ));
        }
        Ok(e)
    }

    fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    }

    /// `host:port`, as remembered in `known_servers`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

enum Stream {
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Plain(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.read(buf),
            Stream::Plain(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.write(buf),
            Stream::Plain(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            Stream::Plain(s) => s.flush(),
        }
    }
}

type Conn = BufReader<Stream>;

/// What a request sends.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a Path),
}

struct Response {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<u64>,
}

/// Why a request did not get an answer, and whether to try again.
enum Failure {
    /// The connection broke or could not be made: worth retrying.
    Transport(std::io::Error),
    /// Anything else, final.
    Fatal(Error),
}

/// A repository on a Cairn box, over HTTPS.
pub struct HttpsStorage {
    endpoint: Endpoint,
    token: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    verdict: Verdict,
    idle: Mutex<Vec<Conn>>,
    staging: PathBuf,
    retry_for: Duration,
    io_timeout: Duration,
}

impl std::fmt::Debug for HttpsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpsStorage({})", self.location())
    }
}

/// How long a client waits for an unreachable box by default.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(120);

impl HttpsStorage {
    /// A client of `endpoint` sending `token`, trusting certificates by
    /// `trust`; `staging` is a local directory for packs being written.
    pub fn new(
        endpoint: Endpoint,
        token: &str,
        trust: Trust,
        staging: &Path,
        retry_for: Duration,
    ) -> Result<HttpsStorage> {
        let verdict: Verdict = Arc::default();
        let tls = if endpoint.tls {
            let cfg = crate::tls::client_config(trust, &endpoint.authority(), verdict.clone())
                .map_err(|e| {
                    Error::io(
                        "set up TLS for",
                        endpoint.authority(),
                        std::io::Error::other(e),
                    )
                })?;
            Some(cfg)
        } else {
            None
        };
        if token.is_empty()
            || token
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(Error::Refused(
                "the token is empty or has spaces in it: set CAIRN_TOKEN or use --token-file with the token `cairn server token add` printed".into(),
            ));
        }
        Ok(HttpsStorage {
            endpoint,
            token: token.to_string(),
            tls,
            verdict,
            idle: Mutex::new(Vec::new()),
            staging: staging.to_path_buf(),
            retry_for,
            io_timeout: Duration::from_secs(120),
        })
    }

    fn connect(&self) -> std::result::Result<Conn, Failure> {
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = TcpStream::connect(addr).map_err(Failure::Transport)?;
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(self.io_timeout));
        let _ = tcp.set_write_timeout(Some(self.io_timeout));
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(cfg) => {
                let name = ServerName::try_from(self.endpoint.host.clone()).map_err(|e| {
                    Failure::Fatal(Error::io(
                        "connect to",
                        self.location(),
                        std::io::Error::other(e),
                    ))
                })?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| {
                    Failure::Fatal(Error::io(
                        "connect to",
                        self.location(),
                        std::io::Error::other(e),
                    ))
                })?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                // Handshake now, so a refused certificate is told apart
                // from a broken connection.
                while s.conn.is_handshaking() {
                    if let Err(e) = s.conn.complete_io(&mut s.sock) {
                        if let Some(why) = self
                            .verdict
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take()
                        {
                            return Err(Failure::Fatal(Error::Refused(why)));
                        }
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            return Err(Failure::Fatal(Error::io(
                                "TLS handshake with",
                                self.location(),
                                e,
                            )));
                        }
                        return Err(Failure::Transport(e));
                    }
                }
                Stream::Tls(Box::new(s))
            }
        };
        Ok(BufReader::with_capacity(64 << 10, stream))
    }

    fn path(&self, kind: Kind, name: Option<&str>) -> String {
        let seg = kind_segment(kind);
        match (kind, name) {
            (Kind::Config, _) => format!("/v1/{}/config", self.endpoint.repo),
            (_, Some(n)) => format!("/v1/{}/{seg}/{n}", self.endpoint.repo),
            (_, None) => format!("/v1/{}/{seg}/", self.endpoint.repo),
        }
    }

    /// One attempt on one connection.
    fn attempt(
        &self,
        conn: &mut Conn,
        method: &str,
        path: &str,
        range: Option<(u64, u64)>,
        body: &Body<'_>,
        head: bool,
    ) -> std::result::Result<Response, Failure> {
        let t = Failure::Transport;
        let (len, mut file) = match body {
            Body::Empty => (0, None),
            Body::Bytes(b) => (b.len() as u64, None),
            Body::File(p) => {
                let f =
                    std::fs::File::open(p).map_err(|e| Failure::Fatal(Error::io("open", *p, e)))?;
                let n = f
                    .metadata()
                    .map_err(|e| Failure::Fatal(Error::io("stat", *p, e)))?
                    .len();
                (n, Some(f))
            }
        };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nUser-Agent: cairn/{}\r\n",
            self.endpoint.authority(),
            self.token,
            env!("CARGO_PKG_VERSION")
        );
        if let Some((off, n)) = range {
            req.push_str(&format!("Range: bytes={}-{}\r\n", off, off + n - 1));
        }
        if method == "PUT" {
            req.push_str(&format!("Content-Length: {len}\r\n"));
        }
        req.push_str("\r\n");
        let w = conn.get_mut();
        w.write_all(req.as_bytes()).map_err(t)?;
        match body {
            Body::Empty => {}
            Body::Bytes(b) => w.write_all(b).map_err(t)?,
            Body::File(p) => {
                let f = file.as_mut().expect("opened above");
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = f
                        .read(&mut buf)
                        .map_err(|e| Failure::Fatal(Error::io("read", *p, e)))?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n]).map_err(t)?;
                }
            }
        }
        w.flush().map_err(t)?;
        read_response(conn, head).map_err(t)
    }

    /// Sends a request, retrying on broken connections and while the
    /// box is unreachable, and maps refusals to storage errors.
    fn call(
        &self,
        method: &str,
        kind: Kind,
        name: Option<&str>,
        range: Option<(u64, u64)>,
        body: Body<'_>,
    ) -> Result<Response> {
        // An empty name would address the kind's listing. (Other bad
        // names are the box's to refuse: it must, whoever sends them.)
        if name == Some("") && kind != Kind::Config {
            return Err(Error::InvalidName(String::new()));
        }
        let path = self.path(kind, name);
        let head = method == "HEAD";
        let start = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut warned = false;
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => match self.connect() {
                    Ok(c) => c,
                    Err(Failure::Fatal(e)) => return Err(e),
                    Err(Failure::Transport(e)) => {
                        if start.elapsed() + delay > self.retry_for {
                            return Err(Error::io("connect to", self.location(), e));
                        }
                        if !warned {
                            eprintln!(
                                "cairn: cannot reach {} ({e}); retrying for up to {} s",
                                self.location(),
                                self.retry_for.as_secs()
                            );
                            warned = true;
                        }
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            match self.attempt(&mut conn, method, &path, range, &body, head) {
                Ok(r) => {
                    if r.status == 503 && start.elapsed() + delay <= self.retry_for {
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                    if idle.len() < 16 {
                        idle.push(conn);
                    }
                    return Ok(r);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                // A pooled connection the server has closed: try afresh
                // at once; a new one that broke: back off.
                Err(Failure::Transport(_)) if reused => continue,
                Err(Failure::Transport(e)) => {
                    if start.elapsed() + delay > self.retry_for {
                        return Err(Error::io("talk to", self.location(), e));
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Maps a response that is not a success to the storage error it means.
    fn check(&self, r: Response, kind: Kind, name: &str) -> Result<Response> {
        let msg = || String::from_utf8_lossy(&r.body).trim().to_string();
        match r.status {
            200..=299 => Ok(r),
            404 => Err(Error::NotFound {
                kind,
                name: name.to_string(),
                location: self.location(),
            }),
            409 => Err(Error::AlreadyExists {
                kind,
                name: name.to_string(),
            }),
            416 => Err(Error::Short {
                kind,
                name: name.to_string(),
            }),
            401 => Err(Error::Refused(format!(
                "{} did not accept the token: {}",
                self.endpoint.authority(),
                msg()
            ))),
            429 => Err(Error::Refused(format!(
                "{} refuses this address for now after failed logins; try again in {} s ({})",
                self.endpoint.authority(),
                r.retry_after.unwrap_or(60),
                msg()
            ))),
            // The server's text already says "refused: …".
            400 | 403 | 413 => Err(Error::Refused(
                msg()
                    .strip_prefix("refused: ")
                    .map(str::to_string)
                    .unwrap_or_else(msg),
            )),
            507 => Err(Error::NoSpace {
                path: PathBuf::from(self.location()),
            }),
            s => Err(Error::io(
                "request",
                format!("{} {kind:?} {name}", self.location()),
                std::io::Error::other(format!("the server answered {s}: {}", msg())),
            )),
        }
    }
}

/// The largest response body the client accepts: more than any object a
/// repository holds (a pack is tens of MiB, an upload at most 1 GiB).
const MAX_RESPONSE: u64 = 1 << 30;

/// Appends exactly `n` bytes to `body`, growing it as they arrive rather
/// than allocating what a header claims.
fn read_body(conn: &mut Conn, n: u64, body: &mut Vec<u8>) -> std::io::Result<()> {
    let got = conn.by_ref().take(n).read_to_end(body)?;
    if got as u64 != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection in the middle of a response",
        ));
    }
    Ok(())
}

/// Reads one response: status line, headers, then a body of exactly
/// `Content-Length` bytes (or chunked). `head`: no body follows.
fn read_response(conn: &mut Conn, head: bool) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = conn.by_ref().take(16 << 10).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        lines.push(line);
        if lines.len() > 100 {
            return Err(bad("too many response headers"));
        }
    }
    let status_line =
        String::from_utf8_lossy(lines.first().ok_or_else(|| bad("empty response"))?).into_owned();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP response"))?;
    let mut length = None;
    let mut chunked = false;
    let mut retry_after = None;
    let mut object_size = None;
    for l in &lines[1..] {
        let l = String::from_utf8_lossy(l);
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = v.parse::<u64>().ok();
            }
            "cairn-size" => object_size = v.parse::<u64>().ok(),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "retry-after" => retry_after = v.parse().ok(),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if head {
        // The size is the answer: return it as decimal text.
        body = object_size.or(length).unwrap_or(0).to_string().into_bytes();
    } else if chunked {
        loop {
            let mut line = Vec::new();
            conn.by_ref().take(1024).read_until(b'\n', &mut line)?;
            let s = String::from_utf8_lossy(&line);
            let size = u64::from_str_radix(s.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                let mut end = Vec::new();
                conn.read_until(b'\n', &mut end)?;
                break;
            }
            // The sizes are the server's: the body grows only with bytes
            // that arrived, and never past what a response may hold.
            if size > MAX_RESPONSE - body.len() as u64 {
                return Err(bad("response larger than any object"));
            }
            read_body(conn, size, &mut body)?;
            let mut crlf = [0u8; 2];
            conn.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = length {
        if n > MAX_RESPONSE {
            return Err(bad("response larger than any object"));
        }
        read_body(conn, n, &mut body)?;
    } else if status != 204 && status != 304 {
        return Err(bad("response without a length"));
    }
    Ok(Response {
        status,
        body,
        retry_after,
    })
}

impl Storage for HttpsStorage {
    fn location(&self) -> String {
        format!(
            "{}://{}/{}",
            if self.endpoint.tls { "https" } else { "http" },
            self.endpoint.authority(),
            self.endpoint.repo
        )
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let r = self.call("GET", kind, Some(name), None, Body::Empty)?;
        Ok(self.check(r, kind, name)?.body)
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            self.size(kind, name)?;
            return Ok(Vec::new());
        }
        let r = self.call("GET", kind, Some(name), Some((offset, len)), Body::Empty)?;
        let r = self.check(r, kind, name)?;
        if r.body.len() as u64 != len {
            return Err(Error::Short {
                kind,
                name: name.to_string(),
            });
        }
        Ok(r.body)
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        let r = self.call("HEAD", kind, Some(name), None, Body::Empty)?;
        let r = self.check(r, kind, name)?;
        String::from_utf8_lossy(&r.body)
            .parse()
            .map_err(|_| Error::io("size of", name, std::io::Error::other("no Content-Length")))
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let r = self.call("PUT", kind, Some(name), None, Body::Bytes(data))?;
        match self.check(r, kind, name) {
            Ok(_) => Ok(()),
            // A retry after the connection broke, of an upload that had
            // landed: the object holds these very bytes, so it is ours (a
            // lease renewal must not pass for a lost lease).
            Err(e @ Error::AlreadyExists { .. }) => match self.get(kind, name) {
                Ok(stored) if stored == data => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> Result<()> {
        let r = self.call("PUT", kind, Some(name), None, Body::File(file));
        let _ = std::fs::remove_file(file);
        self.check(r?, kind, name).map(|_| ())
    }

    fn list(&self, kind: Kind) -> Result<Vec<ObjectInfo>> {
        let r = self.call("GET", kind, None, None, Body::Empty)?;
        let r = self.check(r, kind, "")?;
        let text = String::from_utf8(r.body).map_err(|_| {
            Error::io(
                "list",
                kind.dir(),
                std::io::Error::other("listing is not text"),
            )
        })?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, size) = l.split_once(' ').unwrap_or((l, ""));
                Ok(ObjectInfo {
                    name: name.to_string(),
                    size: size.parse().map_err(|_| {
                        Error::io(
                            "list",
                            kind.dir(),
                            std::io::Error::other(format!("bad listing line {l:?}")),
                        )
                    })?,
                })
            })
            .collect()
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        let r = self.call("DELETE", kind, Some(name), None, Body::Empty)?;
        match self.check(r, kind, name) {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.staging)
            .map_err(|e| Error::io("create", &self.staging, e))?;
        Ok(self.staging.clone())
    }

    fn prepare(&self) -> Result<()> {
        Err(Error::Refused(format!(
            "repositories on a box are created there: run `cairn init --repo PATH` on the box and name it in the server config, then use {}",
            self.location()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_plain_http_stays_on_loopback() {
        let e = Endpoint::parse("https://box.lan:9000/laptop").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.repo.as_str(), e.tls),
            ("box.lan", 9000, "laptop", true)
        );
        let e = Endpoint::parse("https://box/main/").unwrap();
        assert_eq!((e.port, e.repo.as_str()), (8443, "main"));
        let e = Endpoint::parse("https://[::1]:8443/main").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority()),
            ("::1", "[::1]:8443".to_string())
        );
        assert!(Endpoint::parse("http://127.0.0.1:8080/main").is_ok());
        assert!(
            Endpoint::parse("http://box.lan:8080/main")
                .unwrap_err()
                .contains("in the clear")
        );
        assert!(
            Endpoint::parse("https://box")
                .unwrap_err()
                .contains("name after the host")
        );
        assert!(
            Endpoint::parse("https://box/Main")
                .unwrap_err()
                .contains("lower-case")
        );
        assert!(
            Endpoint::parse("https://box:http/main")
                .unwrap_err()
                .contains("port")
        );
        for k in [Kind::Config, Kind::Pack, Kind::Snapshot, Kind::Receipt] {
            assert_eq!(kind_of_segment(kind_segment(k)), Some(k));
        }
        assert_eq!(kind_of_segment(".."), None);
    }

    /// A server that answers every request with `answer` and hangs up.
    fn hostile_server(answer: &'static [u8]) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = c.write_all(answer);
            }
        });
        port
    }

    /// Lengths a server sends are never trusted with an allocation: a
    /// claimed terabyte, or a chunk size past any object, is an error at
    /// once, and a short body is an error, not zeros.
    #[test]
    fn hostile_response_lengths_are_errors() {
        let answers: [&'static [u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffff\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: 500000000\r\n\r\nabc",
        ];
        let staging = tempfile::tempdir().unwrap();
        for answer in answers {
            let port = hostile_server(answer);
            let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}/main")).unwrap();
            let st = HttpsStorage::new(
                endpoint,
                "token",
                Trust::OnFirstUse {
                    file: staging.path().join("known"),
                },
                staging.path(),
                Duration::from_millis(200),
            )
            .unwrap();
            let t = std::time::Instant::now();
            let r = st.get(Kind::Config, "config");
            assert!(r.is_err(), "{}: {r:?}", String::from_utf8_lossy(answer));
            assert!(t.elapsed() < Duration::from_secs(30));
        }
    }
}
