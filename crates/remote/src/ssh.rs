//! The client side of the storage protocol: a [`Storage`] whose objects
//! live behind a byte stream (the stdin and stdout of `ssh HOST cairn
//! serve --stdio`, for one).
//!
//! Requests are serialised on the one stream. Reads of large objects and
//! uploads go in pieces no larger than a frame, so a pack never sits in
//! memory whole on either side.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_format::wire::Reader;
use cairn_storage::{Error, Kind, ObjectInfo, Result, Storage};

use crate::wire::{
    HELLO, MAX_FRAME, Op, PUT_PIECE, Request, Status, read_frame, write_frame, write_frame_parts,
};

/// Connects to `ssh://[user@]host[:port]/path`: `ssh` (the words of
/// `ssh_command`, e.g. `ssh -i key`) runs `REMOTE_CAIRN serve --stdio
/// --repo /path` on the box; a forced command in the box's
/// `authorized_keys` replaces that and sets the role. Errors are for the
/// user: they say what is wrong with the URL or the connection.
pub fn connect(
    loc: &str,
    ssh_command: &str,
    remote_cairn: &str,
    staging: &Path,
) -> std::result::Result<RemoteStorage, String> {
    let rest = loc
        .strip_prefix("ssh://")
        .ok_or_else(|| format!("repository {loc}: not an ssh:// URL"))?;
    let (hostpart, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => {
            return Err(format!(
                "repository {loc}: give a path after the host, e.g. ssh://backup@nas/srv/cairn/laptop"
            ));
        }
    };
    if hostpart.is_empty() || path.len() < 2 {
        return Err(format!(
            "repository {loc}: expected ssh://[user@]host[:port]/path"
        ));
    }
    let (userhost, port) = match hostpart.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => (h, Some(p)),
        _ => (hostpart, None),
    };
    if userhost.starts_with('-') {
        return Err(format!(
            "repository {loc}: a host name cannot start with '-'"
        ));
    }
    let words: Vec<String> = ssh_command.split_whitespace().map(str::to_string).collect();
    // ssh joins its arguments into one command line for the remote
    // shell, so each word is quoted here: a path with spaces or shell
    // characters reaches `serve` as it was written.
    let remote_command = [
        remote_cairn,
        "serve",
        "--stdio",
        "--role",
        "admin",
        "--repo",
        path,
    ]
    .map(shell_quote)
    .join(" ");
    let (userhost, port) = (userhost.to_string(), port.map(str::to_string));
    let make = move || {
        let program = words.first().map(String::as_str).unwrap_or("ssh");
        let mut cmd = std::process::Command::new(program);
        cmd.args(cipher_preference(program));
        cmd.args(words.iter().skip(1));
        if let Some(p) = &port {
            cmd.arg("-p").arg(p);
        }
        cmd.arg("-o").arg("BatchMode=yes");
        cmd.arg("--").arg(&userhost).arg(&remote_command);
        cmd
    };
    // Two sessions: packs upload in parallel while one waits for the box.
    RemoteStorage::spawn(make, 2, loc, staging)
        .map_err(|e| format!("cannot reach {loc} over ssh: {e}"))
}

/// Options that make `program` (when it is OpenSSH's `ssh`) prefer
/// AES-GCM on a CPU with AES instructions: it costs a fraction of
/// ChaCha20's CPU, and on two cores the cipher competes with chunking and
/// compression; without AES, ssh's own order stays. Words the user gives
/// after these win.
pub fn cipher_preference(program: &str) -> Vec<String> {
    if program.ends_with("ssh") && cpu_has_aes() {
        vec![
            "-c".into(),
            "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr".into(),
        ]
    } else {
        Vec::new()
    }
}

/// `word` as one word of a POSIX shell command line: single-quoted
/// unless it holds only characters no shell treats specially.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Whether the CPU says it has AES instructions (x86 `aes`, Arm `aes`).
fn cpu_has_aes() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
            .any(|l| l.split_whitespace().any(|w| w == "aes"))
    })
}

struct Conn {
    input: Box<dyn Read + Send>,
    output: Box<dyn Write + Send>,
    /// The stream failed: its state is unknown, it is not reused.
    broken: bool,
    /// An upload's piece buffer, kept for the next upload: a fresh 4 MiB
    /// buffer is a fresh mapping, faulted in and zeroed.
    piece: Vec<u8>,
}

impl Conn {
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let r = write_frame(&mut self.output, frame);
        self.broken |= r.is_err();
        r
    }

    /// Sends a frame of `head` and then `body`, without joining them.
    fn send_parts(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<()> {
        let r = write_frame_parts(&mut self.output, &[head, body]);
        self.broken |= r.is_err();
        r
    }

    fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let r = read_frame(&mut self.input);
        self.broken |= r.is_err();
        r
    }
}

/// Makes another connection (starts another `ssh`).
type Dial = Box<dyn Fn() -> Result<(Conn, std::process::Child)> + Send + Sync>;

/// Connections: idle ones, and how many exist.
struct Pool {
    idle: Vec<Conn>,
    open: usize,
}

/// A storage reached through the protocol.
pub struct RemoteStorage {
    pool: Mutex<Pool>,
    freed: std::sync::Condvar,
    /// More connections than the first, for uploads in parallel.
    dial: Option<Dial>,
    max: usize,
    location: String,
    staging: PathBuf,
    role: String,
    /// The processes carrying the streams (`ssh`), reaped on drop.
    children: Mutex<Vec<std::process::Child>>,
}

impl Drop for RemoteStorage {
    fn drop(&mut self) {
        // Closing our ends tells the server to finish; then reap the
        // transports so no zombie outlives the command.
        if let Ok(mut p) = self.pool.lock() {
            p.idle.clear();
        }
        if let Ok(mut ch) = self.children.lock() {
            for mut child in ch.drain(..) {
                let _ = child.wait();
            }
        }
    }
}

impl std::fmt::Debug for RemoteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteStorage({})", self.location)
    }
}

fn proto(what: &str) -> Error {
    Error::io(
        "talk to",
        "the server",
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    )
}

impl RemoteStorage {
    /// Greets the server over `input`/`output`; `staging` is a local
    /// directory for packs being written.
    pub fn connect(
        input: Box<dyn Read + Send>,
        output: Box<dyn Write + Send>,
        location: &str,
        staging: &Path,
    ) -> Result<RemoteStorage> {
        let (conn, role) = greet(input, output, location)?;
        Ok(RemoteStorage {
            pool: Mutex::new(Pool {
                idle: vec![conn],
                open: 1,
            }),
            freed: std::sync::Condvar::new(),
            dial: None,
            max: 1,
            location: location.to_string(),
            staging: staging.to_path_buf(),
            role,
            children: Mutex::new(Vec::new()),
        })
    }
}

/// The greeting on a new stream; returns the connection and its role.
fn greet(
    mut input: Box<dyn Read + Send>,
    mut output: Box<dyn Write + Send>,
    location: &str,
) -> Result<(Conn, String)> {
    {
        let io = |e| Error::io("connect to", location, e);
        output
            .write_all(HELLO)
            .and_then(|()| output.flush())
            .map_err(io)?;
        let mut hello = [0u8; 8];
        input.read_exact(&mut hello).map_err(io)?;
        if &hello != HELLO {
            return Err(proto(
                "the other end is not a Cairn server speaking protocol version 1",
            ));
        }
        let role = read_frame(&mut input)
            .map_err(io)?
            .ok_or_else(|| proto("the server hung up"))?;
        Ok((
            Conn {
                input,
                output,
                broken: false,
                piece: Vec::new(),
            },
            String::from_utf8_lossy(&role).into_owned(),
        ))
    }
}

/// Starts `cmd` and greets the server at the other end.
fn start(
    mut cmd: std::process::Command,
    location: &str,
) -> Result<(Conn, String, std::process::Child)> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::io("start", location, e))?;
    let input = child.stdout.take().expect("piped");
    let output = child.stdin.take().expect("piped");
    match greet(Box::new(input), Box::new(output), location) {
        Ok((c, role)) => Ok((c, role, child)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

impl RemoteStorage {
    /// Starts `make()` (for example `ssh HOST cairn serve --stdio …`)
    /// and talks to it over its stdin and stdout; its stderr passes
    /// through. Up to `max` such connections are opened as requests
    /// overlap (uploads of two packs at once, say).
    pub fn spawn(
        make: impl Fn() -> std::process::Command + Send + Sync + 'static,
        max: usize,
        location: &str,
        staging: &Path,
    ) -> Result<RemoteStorage> {
        let (conn, role, child) = start(make(), location)?;
        let loc = location.to_string();
        let dial: Dial = Box::new(move || {
            let (c, _, child) = start(make(), &loc)?;
            Ok((c, child))
        });
        Ok(RemoteStorage {
            pool: Mutex::new(Pool {
                idle: vec![conn],
                open: 1,
            }),
            freed: std::sync::Condvar::new(),
            dial: Some(dial),
            max: max.max(1),
            location: location.to_string(),
            staging: staging.to_path_buf(),
            role,
            children: Mutex::new(vec![child]),
        })
    }

    /// Runs `f` on a connection of its own: an idle one, a new one while
    /// fewer than the maximum are open, or the next one freed. A
    /// connection that failed is dropped, not reused.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut conn = {
            let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(c) = p.idle.pop() {
                    break c;
                }
                if let Some(dial) = &self.dial
                    && p.open < self.max
                {
                    p.open += 1;
                    drop(p);
                    match dial() {
                        Ok((c, child)) => {
                            self.children
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(child);
                            break c;
                        }
                        Err(e) => {
                            self.pool.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
                            return Err(e);
                        }
                    }
                }
                if p.open == 0 {
                    return Err(proto("the connection is closed"));
                }
                p = self.freed.wait(p).unwrap_or_else(|p| p.into_inner());
            }
        };
        let r = f(&mut conn);
        let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if conn.broken {
            p.open -= 1;
        } else {
            p.idle.push(conn);
        }
        drop(p);
        self.freed.notify_one();
        r
    }

    /// The role the server gave this connection.
    pub fn role(&self) -> &str {
        &self.role
    }

    fn call(&self, req: &Request) -> Result<Vec<u8>> {
        self.with_conn(|c| {
            let io = |e| Error::io("talk to", self.location.clone(), e);
            c.send(&req.encode()).map_err(io)?;
            self.answer(c, req)
        })
    }

    /// Reads the answer to `req`.
    fn answer(&self, c: &mut Conn, req: &Request) -> Result<Vec<u8>> {
        let io = |e| Error::io("talk to", self.location.clone(), e);
        let resp = c
            .recv()
            .map_err(io)?
            .ok_or_else(|| proto("the server hung up"))?;
        let (&status, body) = resp.split_first().ok_or_else(|| proto("empty response"))?;
        let msg = || String::from_utf8_lossy(body).into_owned();
        match Status::from_u8(status) {
            Some(Status::Ok) => Ok(body.to_vec()),
            Some(Status::NotFound) => Err(Error::NotFound {
                kind: req.kind,
                name: req.name.clone(),
                location: self.location.clone(),
            }),
            Some(Status::AlreadyExists) => Err(Error::AlreadyExists {
                kind: req.kind,
                name: req.name.clone(),
            }),
            Some(Status::Refused) => Err(Error::Refused(format!("the server says: {}", msg()))),
            Some(Status::Short) => Err(Error::Short {
                kind: req.kind,
                name: req.name.clone(),
            }),
            Some(Status::Failed) => Err(Error::io(
                "server",
                self.location.clone(),
                std::io::Error::other(msg()),
            )),
            None => Err(proto("unknown response status")),
        }
    }

    fn req(op: Op, kind: Kind, name: &str) -> Request {
        Request {
            op,
            kind,
            name: name.to_string(),
            offset: 0,
            len: 0,
            body: Vec::new(),
        }
    }

    /// Sends an upload as one pipelined burst: the pieces go out without
    /// waiting for each answer (the server answers every frame in order,
    /// and the answers are a few bytes each), then all answers are read.
    /// A stop-and-wait upload left the link idle while the box wrote each
    /// piece; this keeps it busy.
    fn upload(&self, kind: Kind, name: &str, src: &mut dyn Read) -> Result<()> {
        self.with_conn(|c| self.upload_on(c, kind, name, src))
    }

    fn upload_on(&self, c: &mut Conn, kind: Kind, name: &str, src: &mut dyn Read) -> Result<()> {
        let io = |e| Error::io("talk to", self.location.clone(), e);
        let begin = Self::req(Op::PutBegin, kind, name);
        c.send(&begin.encode()).map_err(io)?;
        let mut sent = vec![begin];
        let mut buf = std::mem::take(&mut c.piece);
        buf.resize(PUT_PIECE, 0);
        let data = Self::req(Op::PutData, kind, name).encode_head();
        let mut read_err = None;
        loop {
            let mut n = 0;
            while n < buf.len() {
                match src.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => {
                        read_err = Some(Error::io("read", name, e));
                        break;
                    }
                }
            }
            if read_err.is_some() || n == 0 {
                break;
            }
            if let Err(e) = c.send_parts(&data, &buf[..n]) {
                c.piece = buf;
                return Err(io(e));
            }
            sent.push(Self::req(Op::PutData, kind, name));
            if n < buf.len() {
                break;
            }
        }
        c.piece = buf;
        // A source that failed to read ends the upload with a mismatched
        // end, which the server refuses, so nothing is published.
        let end = if read_err.is_some() {
            Self::req(Op::PutEnd, kind, "-")
        } else {
            Self::req(Op::PutEnd, kind, name)
        };
        c.send(&end.encode()).map_err(io)?;
        sent.push(end);
        let mut first_err = read_err;
        for r in &sent {
            if let Err(e) = self.answer(c, r)
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Bytes asked for per range request.
const RANGE_PIECE: u64 = (MAX_FRAME / 2) as u64;

impl Storage for RemoteStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        if kind == Kind::Pack {
            let size = self.size(kind, name)?;
            return self.get_range(kind, name, 0, size);
        }
        self.call(&Self::req(Op::Get, kind, name))
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_range_into(kind, name, offset, len, &mut out)?;
        Ok(out)
    }

    fn get_range_into(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        buf.clear();
        let mut at = 0;
        while at < len {
            let n = RANGE_PIECE.min(len - at);
            let mut r = Self::req(Op::GetRange, kind, name);
            r.offset = offset + at;
            r.len = n;
            let piece = self.call(&r)?;
            if piece.len() as u64 != n {
                return Err(Error::Short {
                    kind,
                    name: name.to_string(),
                });
            }
            buf.extend_from_slice(&piece);
            at += n;
        }
        Ok(())
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        let b = self.call(&Self::req(Op::Size, kind, name))?;
        Reader::new(&b, "size")
            .varint()
            .map_err(|_| proto("bad size response"))
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        if data.len() <= PUT_PIECE {
            let mut r = Self::req(Op::Put, kind, name);
            r.body = data.to_vec();
            return self.call(&r).map(|_| ());
        }
        self.upload(kind, name, &mut &data[..])
    }

    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> Result<()> {
        let mut f = std::fs::File::open(file).map_err(|e| Error::io("open", file, e))?;
        self.upload(kind, name, &mut f)?;
        let _ = std::fs::remove_file(file);
        Ok(())
    }

    fn list(&self, kind: Kind) -> Result<Vec<ObjectInfo>> {
        let b = self.call(&Self::req(Op::List, kind, ""))?;
        let mut r = Reader::new(&b, "listing");
        let bad = |_| proto("bad listing response");
        let n = r.len(2).map_err(bad)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let name = String::from_utf8(r.bytes().map_err(bad)?.to_vec())
                .map_err(|_| proto("object name is not UTF-8"))?;
            let size = r.varint().map_err(bad)?;
            out.push(ObjectInfo { name, size });
        }
        Ok(out)
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        self.call(&Self::req(Op::Delete, kind, name)).map(|_| ())
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.staging)
            .map_err(|e| Error::io("create directory", &self.staging, e))?;
        Ok(self.staging.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_words_whole() {
        assert_eq!(shell_quote("/srv/cairn"), "/srv/cairn");
        assert_eq!(shell_quote("my repo"), "'my repo'");
        assert_eq!(shell_quote("it's $(x)"), "'it'\\''s $(x)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn bad_urls_are_named() {
        let st = Path::new("/nonexistent");
        for (url, says) in [
            ("ssh://host", "give a path"),
            ("ssh:///srv", "expected ssh://"),
            ("ssh://-oProxyCommand=x/srv", "cannot start with '-'"),
        ] {
            let e = connect(url, "ssh", "cairn", st).err().unwrap();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
