//! An S3 endpoint in front of a real one that refuses every delete with
//! `403 AccessDenied`, as a bucket policy without `s3:DeleteObject`
//! does on AWS (Garage cannot express that: its write permission
//! includes deletes).
//!
//! One request per connection: the request is forwarded with
//! `Connection: close`, so the answer ends where the connection does.
//! Signatures stay valid: the `Host` the client signed is forwarded as
//! is, and `Connection` is not a signed header.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A running proxy; dropping it stops accepting.
pub struct DenyDelete {
    addr: String,
    stop: Arc<AtomicBool>,
    denied: Arc<AtomicU64>,
}

impl DenyDelete {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> DenyDelete {
        let up = upstream
            .strip_prefix("http://")
            .expect("an http:// upstream")
            .trim_end_matches('/')
            .to_string();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let denied = Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), denied.clone());
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (up, d) = (up.clone(), d.clone());
                        std::thread::spawn(move || {
                            let _ = serve(c, &up, &d);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        DenyDelete { addr, stop, denied }
    }

    /// The endpoint to give clients.
    pub fn endpoint(&self) -> &str {
        &self.addr
    }

    /// Deletes refused so far.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }
}

impl Drop for DenyDelete {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut c: TcpStream, upstream: &str, denied: &AtomicU64) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    // The request head, byte by byte up to the blank line (small).
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b)? == 0 || head.len() > 64 << 10 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or("");
    let is_delete =
        line.starts_with("DELETE ") || (line.starts_with("POST ") && line.contains("?delete"));
    if is_delete {
        denied.fetch_add(1, Ordering::Relaxed);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        write!(
            c,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return c.shutdown(Shutdown::Both);
    }
    let mut out = String::new();
    for l in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut u = TcpStream::connect(upstream)?;
    u.write_all(out.as_bytes())?;
    let (mut c2, mut u2) = (c.try_clone()?, u.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
    });
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.shutdown(Shutdown::Both);
    let _ = u.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}
