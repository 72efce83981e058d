//! A tiny HTTP server on 127.0.0.1 that records what it is sent and
//! answers every request with one status (or, silent, never answers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Request {
    /// A header's value, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.body))
    }
}

type Log = Arc<(Mutex<Vec<Request>>, Condvar)>;

/// The server; it stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Log,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Answers every request with `status`.
    pub fn start(status: u16) -> Receiver {
        Receiver::spawn(Some(status))
    }

    /// Accepts connections and reads requests but never answers: a
    /// receiver that hangs.
    pub fn silent() -> Receiver {
        Receiver::spawn(None)
    }

    fn spawn(status: Option<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                let (lock, cv) = &*log2;
                lock.lock().unwrap().push(req);
                cv.notify_all();
                match status {
                    Some(code) => {
                        let body = format!("status {code}");
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {code} Whatever\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    // Keep it open, unanswered.
                    None => held.push(conn),
                }
            }
        });
        Receiver { addr, log, stop }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What was received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits until `n` requests came, and returns them; panics with what
    /// came if they do not within `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.log;
        let mut got = lock.lock().unwrap();
        while got.len() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "expected {n} requests within {timeout:?}, got {}: {:#?}",
                got.len(),
                *got
            );
            got = cv.wait_timeout(got, deadline - now).unwrap().0;
        }
        got.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request: its line, headers and a Content-Length body.
fn read_request(conn: &mut TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}
