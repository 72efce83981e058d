//! A repository in an S3-compatible bucket (AWS S3, Garage, MinIO, Ceph
//! RGW, Backblaze B2), through `object_store`: signing, retries with
//! backoff and jitter, pagination and multipart uploads are its, and
//! well kept.
//!
//! The objects are laid out as in a local repository (`config`,
//! `keys/NAME`, `data/XX/NAME`, …) under the prefix, so a repository
//! directory copied into a bucket by any tool is a repository there too.
//!
//! Writes are create-only where the store honours `If-None-Match: *`
//! (AWS, MinIO, Ceph). Garage does not: the last writer wins. What must
//! stay unique on such a store is made so above this layer (see
//! [`S3Storage::create_only`] and the lease in `cairn-maint`);
//! content-addressed objects are safe either way, since every writer of a
//! name writes the same bytes.

mod config;
mod stream;

pub use config::{Env, ProcessEnv, S3Config, S3Url};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use crate::{Error, Kind, ObjectInfo, Result, Storage, valid_name};

/// Files at least this large are uploaded in parts. Packs (32 MiB) go
/// in one PUT: a request is what a provider bills, and one PUT per pack
/// is 32,768 per TiB stored.
const MULTIPART_FROM: u64 = 64 << 20;
/// The size of each part of a multipart upload.
const PART: usize = 16 << 20;
/// Attempts at a create-only PUT whose connection broke: such a PUT may
/// have landed, so `object_store` leaves it to us (an existing object
/// holding our bytes is then ours).
const CREATE_ATTEMPTS: u32 = 4;

/// Retries of a failed request: at most this many, waiting from
/// `FIRST_WAIT`, doubling up to `MAX_WAIT` (jittered), none starting after
/// `RETRY_WITHIN`.
const RETRIES: usize = 8;
const FIRST_WAIT: Duration = Duration::from_millis(500);
const MAX_WAIT: Duration = Duration::from_secs(8);
const RETRY_WITHIN: Duration = Duration::from_secs(60);

/// Whether the store refuses to create an object that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateOnly {
    /// Not probed yet.
    Unknown,
    /// A second create-only PUT of a name fails (AWS, MinIO, Ceph).
    Enforced,
    /// A second PUT replaces the first (Garage): last writer wins.
    LastWriterWins,
}

/// An S3 bucket (and prefix) holding a repository.
pub struct S3Storage {
    store: Arc<AmazonS3>,
    /// The same client without retries.
    once: Arc<AmazonS3>,
    /// When a request last failed to reach the endpoint at all.
    down: std::sync::Mutex<Option<std::time::Instant>>,
    rt: tokio::runtime::Runtime,
    config: S3Config,
    /// `prefix/`, or empty.
    root: String,
    staging: PathBuf,
    create_only: AtomicU8,
    multipart_from: u64,
    part: usize,
    /// For packs streamed from their file (see `stream`).
    http: reqwest::Client,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("location", &self.location())
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// Connects (lazily: the first request does) to the repository at
    /// `url` with the configuration the process environment gives,
    /// staging uploads under `staging`.
    pub fn open(url: &str, staging: &Path) -> Result<S3Storage> {
        S3Storage::with_config(S3Config::resolve(url, &ProcessEnv)?, staging)
    }

    /// Like [`S3Storage::open`] with a configuration at hand.
    pub fn with_config(config: S3Config, staging: &Path) -> Result<S3Storage> {
        // reqwest's TLS takes the process's rustls provider: ring, the
        // one the rest of Cairn uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |retries: usize| {
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(&config.url.bucket)
                .with_region(&config.region)
                .with_access_key_id(&config.access_key_id)
                .with_secret_access_key(&config.secret_access_key)
                .with_virtual_hosted_style_request(config.virtual_hosted)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: FIRST_WAIT,
                        max_backoff: MAX_WAIT,
                        base: 2.0,
                    },
                    max_retries: retries,
                    retry_timeout: RETRY_WITHIN,
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(10))
                        .with_timeout(Duration::from_secs(300))
                        .with_allow_http(true),
                );
            if let Some(t) = &config.session_token {
                b = b.with_token(t);
            }
            if let Some(e) = &config.endpoint {
                b = b.with_endpoint(e);
            }
            b.build()
                .map(Arc::new)
                .map_err(|e| Error::Config(format!("{}: {e}", config::display_url(&config.url))))
        };
        // Up to about half a minute of backoff (jittered): long enough
        // for a store's SlowDown or a node's restart, short enough that a
        // wrong endpoint is reported while the user still waits.
        let store = build(RETRIES)?;
        // Once the endpoint could not be reached at all, later requests
        // try once: a run that stops does not wait half a minute for each
        // of its last steps (flushing an index, releasing a lease).
        let once = build(0)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::Config(format!("{}: {e}", config::display_url(&config.url))))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the S3 client", staging, e))?;
        let root = if config.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", config.url.prefix)
        };
        Ok(S3Storage {
            store,
            once,
            down: std::sync::Mutex::new(None),
            rt,
            config,
            root,
            staging: staging.to_path_buf(),
            create_only: AtomicU8::new(0),
            multipart_from: MULTIPART_FROM,
            part: PART,
            http,
        })
    }

    /// Uploads files of at least `from` bytes in parts of `part` bytes
    /// (tests make it small to exercise the multipart path).
    pub fn with_multipart(mut self, from: u64, part: usize) -> S3Storage {
        self.multipart_from = from;
        self.part = part.max(5 << 20);
        self
    }

    /// The client for the next request: without retries for a minute
    /// after the endpoint could not be reached.
    fn client(&self) -> Arc<AmazonS3> {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(t) if t.elapsed() < Duration::from_secs(60) => self.once.clone(),
            _ => self.store.clone(),
        }
    }

    /// Runs a request on the client's runtime and waits for it. Spawning
    /// rather than `block_on` lets any thread call, a runtime's own
    /// included (the box serves from tokio).
    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        let r = rx.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "S3",
                source: "the S3 client stopped".into(),
            })
        });
        let unreachable = matches!(&r, Err(e) if e.to_string().contains("error sending request"));
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if unreachable {
            down.get_or_insert_with(std::time::Instant::now);
        } else if r.is_ok() {
            *down = None;
        }
        r
    }

    fn key(&self, kind: Kind, name: &str) -> Result<Key> {
        if kind == Kind::Config {
            return Ok(Key::from(format!("{}config", self.root)));
        }
        if !valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        Ok(Key::from(if kind == Kind::Pack {
            format!("{}data/{}/{name}", self.root, name.get(..2).unwrap_or("00"))
        } else {
            format!("{}{}/{name}", self.root, kind.dir())
        }))
    }

    /// Turns the client's error into one a user can act on.
    fn error(&self, op: &str, kind: Kind, name: &str, e: object_store::Error) -> Error {
        let loc = self.location();
        let bucket = &self.config.url.bucket;
        let text = e.to_string();
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if has(&["NoSuchBucket"]) {
            return Error::Remote(format!(
                "{loc}: bucket {bucket} does not exist: create it (with Garage: `garage bucket create {bucket}`, then `garage bucket allow --read --write --owner {bucket} --key KEY`), or fix the bucket name"
            ));
        }
        if has(&[
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidSignature",
            "Invalid signature",
            "No such key",
            "ExpiredToken",
        ]) || matches!(e, object_store::Error::Unauthenticated { .. })
        {
            return Error::Refused(format!(
                "{loc}: the store rejected the credentials (key {}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile's), and AWS_REGION ({})",
                self.config.access_key_id, self.config.region
            ));
        }
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                kind,
                name: name.to_string(),
                location: loc,
            },
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => Error::AlreadyExists {
                kind,
                name: name.to_string(),
            },
            _ if matches!(e, object_store::Error::PermissionDenied { .. })
                || has(&["AccessDenied", "403 Forbidden"]) =>
            {
                Error::Refused(format!(
                    "{loc}: the store denied {op} {}/{name}: the credentials (key {}) lack that permission on bucket {bucket}",
                    kind.dir(),
                    self.config.access_key_id,
                ))
            }
            _ => {
                let endpoint = self.config.endpoint.clone().unwrap_or_else(|| "AWS".into());
                Error::Remote(format!(
                    "{loc}: {op} {}/{name} failed, retries included (endpoint {endpoint}): {text}",
                    kind.dir()
                ))
            }
        }
    }

    /// What the store does with a second create of one name, as far as
    /// known ([`S3Storage::probe_create_only`] finds out).
    pub fn create_only(&self) -> CreateOnly {
        match self.create_only.load(Ordering::Relaxed) {
            1 => CreateOnly::Enforced,
            2 => CreateOnly::LastWriterWins,
            _ => CreateOnly::Unknown,
        }
    }

    /// Records what the store does with a second create (from a probe
    /// made earlier, say at `init`).
    pub fn set_create_only(&self, c: CreateOnly) {
        let v = match c {
            CreateOnly::Unknown => 0,
            CreateOnly::Enforced => 1,
            CreateOnly::LastWriterWins => 2,
        };
        self.create_only.store(v, Ordering::Relaxed);
    }

    /// Creates a probe object twice, create-only, and removes it: tells
    /// whether the store enforces create-only writes.
    pub fn probe_create_only(&self) -> Result<CreateOnly> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| Error::Remote(format!("no randomness: {e}")))?;
        let name = format!("probe-{}", hex::encode(b));
        let key = self.key(Kind::Lock, &name)?;
        let create = |data: &'static [u8]| {
            let (s, k) = (self.client(), key.clone());
            self.run(async move {
                s.put_opts(
                    &k,
                    PutPayload::from_static(data),
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await
            })
        };
        create(b"1").map_err(|e| self.error("create", Kind::Lock, &name, e))?;
        let second = create(b"2");
        let _ = self.delete(Kind::Lock, &name);
        let c = match second {
            Ok(_) => CreateOnly::LastWriterWins,
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => CreateOnly::Enforced,
            // A store that rejects the header outright does not enforce it.
            Err(object_store::Error::NotImplemented { .. }) => CreateOnly::LastWriterWins,
            Err(e) => return Err(self.error("create", Kind::Lock, &name, e)),
        };
        self.set_create_only(c);
        Ok(c)
    }

    /// Puts `payload` create-only. A broken connection is retried here;
    /// an object found then is ours if it holds these very bytes (a
    /// lease renewal must not pass for a lost lease).
    fn create(&self, kind: Kind, name: &str, payload: PutPayload) -> Result<()> {
        let key = self.key(kind, name)?;
        if !kind.content_addressed() && self.create_only() != CreateOnly::Enforced {
            // The store may not refuse: look first. This narrows, not
            // closes, the window; what must be unique does not rely on it.
            match self.size(kind, name) {
                Ok(_) => {
                    return Err(Error::AlreadyExists {
                        kind,
                        name: name.to_string(),
                    });
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (s, k, p) = (self.client(), key.clone(), payload.clone());
            let r = self.run(async move {
                s.put_opts(
                    &k,
                    p,
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await
            });
            match r {
                Ok(_) => return Ok(()),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    if kind.content_addressed() {
                        return Ok(());
                    }
                    if attempt > 1 && self.holds(kind, name, &payload)? {
                        return Ok(());
                    }
                    return Err(Error::AlreadyExists {
                        kind,
                        name: name.to_string(),
                    });
                }
                Err(object_store::Error::NotImplemented { .. }) => {
                    // The store rejects conditional PUTs: write plainly.
                    self.set_create_only(CreateOnly::LastWriterWins);
                    let (s, k, p) = (self.client(), key.clone(), payload.clone());
                    return self
                        .run(async move { s.put(&k, p).await })
                        .map(|_| ())
                        .map_err(|e| self.error("write", kind, name, e));
                }
                Err(e) if attempt < CREATE_ATTEMPTS && transient(&e) => {
                    std::thread::sleep(Duration::from_millis(250 << attempt));
                }
                Err(e) => return Err(self.error("write", kind, name, e)),
            }
        }
    }

    fn holds(&self, kind: Kind, name: &str, payload: &PutPayload) -> Result<bool> {
        let stored = self.get(kind, name)?;
        let mut want = Vec::with_capacity(payload.content_length());
        for b in payload.iter() {
            want.extend_from_slice(b);
        }
        Ok(stored == want)
    }

    /// Uploads a content-addressed object from its file in one PUT,
    /// without holding it in memory.
    fn put_streamed(&self, kind: Kind, name: &str, file: &Path, size: u64) -> Result<()> {
        let key = self.key(kind, name)?;
        let retries = !Arc::ptr_eq(&self.client(), &self.once);
        let retry = stream::Retry {
            attempts: if retries { RETRIES as u32 } else { 0 },
            first_wait: FIRST_WAIT,
            max_wait: MAX_WAIT,
            within: RETRY_WITHIN,
        };
        let (http, signer, path) = (self.http.clone(), self.store.clone(), file.to_path_buf());
        self.run(stream::put(http, signer, key, path, size, retry))
            .map_err(|e| self.error("upload", kind, name, e))
    }

    /// Uploads a large file in parts, read from disk part by part.
    fn put_parts(&self, kind: Kind, name: &str, file: &Path) -> Result<()> {
        if !kind.content_addressed() {
            // Multipart uploads cannot be create-only everywhere; only
            // packs are ever this large.
            return self.create(
                kind,
                name,
                PutPayload::from(std::fs::read(file).map_err(|e| Error::io("read", file, e))?),
            );
        }
        let key = self.key(kind, name)?;
        let (s, part, path) = (self.client(), self.part, file.to_path_buf());
        self.run(async move {
            let upload = s.put_multipart(&key).await?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, part);
            let mut f =
                tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    })?;
            let mut buf = vec![0u8; part];
            loop {
                let n = read_full(&mut f, &mut buf).await.map_err(|e| {
                    object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    }
                })?;
                if n == 0 {
                    break;
                }
                // At most two parts in flight: memory stays bounded.
                w.wait_for_capacity(2).await?;
                w.write(&buf[..n]);
            }
            w.finish().await
        })
        .map(|_| ())
        .map_err(|e| self.error("upload", kind, name, e))
    }
}

async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    while n < buf.len() {
        let m = f.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}

/// Whether a create-only PUT failed in a way the client does not retry
/// itself: the request went out and its answer was lost (a timeout, a
/// reset connection), so it may have landed. Failures to connect are
/// retried by the client already.
fn transient(e: &object_store::Error) -> bool {
    let t = e.to_string().to_ascii_lowercase();
    matches!(e, object_store::Error::Generic { .. })
        && (t.contains("timed out")
            || t.contains("timeout")
            || t.contains("connection reset")
            || t.contains("broken pipe")
            || t.contains("connection closed before message completed")
            || t.contains("interrupted"))
}

impl Storage for S3Storage {
    fn location(&self) -> String {
        config::display_url(&self.config.url)
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let key = self.key(kind, name)?;
        let s = self.client();
        self.run(async move { s.get(&key).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.error("read", kind, name, e))
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_range_into(kind, name, offset, len, &mut buf)?;
        Ok(buf)
    }

    /// Streams the answer into the caller's buffer: object_store's own
    /// `get_range` gathers the body into a fresh allocation that is then
    /// copied again, and on a restore those page faults and copies were a
    /// third of the client's CPU.
    fn get_range_into(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        buf.clear();
        if len == 0 {
            self.size(kind, name)?;
            return Ok(());
        }
        let short = || Error::Short {
            kind,
            name: name.to_string(),
        };
        let end = offset.checked_add(len).ok_or_else(short)?;
        let key = self.key(kind, name)?;
        let s = self.client();
        // The length is the caller's (checked against the index), never
        // the store's: an answer longer than asked is cut off as short.
        let want = usize::try_from(len).map_err(|_| short())?;
        let mut out = std::mem::take(buf);
        let got = self.run(async move {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(offset..end)),
                ..Default::default()
            };
            let mut body = s.get_opts(&key, opts).await?.into_stream();
            out.reserve(want);
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                if out.len() + chunk.len() > want {
                    return Ok((out, false));
                }
                out.extend_from_slice(&chunk);
            }
            let whole = out.len() == want;
            Ok((out, whole))
        });
        match got {
            Ok((out, true)) => {
                *buf = out;
                Ok(())
            }
            Ok(_) => Err(short()),
            // A range past the end is refused (416) or cut short,
            // depending on the store and how far past: the size tells.
            Err(e) => match self.size(kind, name) {
                Ok(size) if end > size => Err(short()),
                Ok(_) => Err(self.error("read", kind, name, e)),
                Err(not) => Err(not),
            },
        }
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        let key = self.key(kind, name)?;
        let s = self.client();
        self.run(async move { s.head(&key).await })
            .map(|m| m.size)
            .map_err(|e| self.error("look at", kind, name, e))
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.create(kind, name, PutPayload::from(data.to_vec()))
    }

    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> Result<()> {
        let size = std::fs::metadata(file)
            .map_err(|e| Error::io("stat", file, e))?
            .len();
        let r = if size >= self.multipart_from {
            self.put_parts(kind, name, file)
        } else if kind.content_addressed() {
            self.put_streamed(kind, name, file, size)
        } else {
            std::fs::read(file)
                .map_err(|e| Error::io("read", file, e))
                .and_then(|d| self.create(kind, name, PutPayload::from(d)))
        };
        if r.is_ok() {
            let _ = std::fs::remove_file(file);
        }
        r
    }

    fn list(&self, kind: Kind) -> Result<Vec<ObjectInfo>> {
        if kind == Kind::Config {
            return match self.size(kind, "config") {
                Ok(size) => Ok(vec![ObjectInfo {
                    name: "config".into(),
                    size,
                }]),
                Err(e) if e.is_not_found() => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let dir = format!("{}{}", self.root, kind.dir());
        let s = self.client();
        let prefix = Key::from(dir.clone());
        let listed = self.run(async move {
            let mut out = Vec::new();
            let mut st = s.list(Some(&prefix));
            while let Some(m) = st.next().await {
                out.push(m?);
            }
            Ok(out)
        });
        let listed = listed.map_err(|e| self.error("list", kind, "", e))?;
        let mut out = Vec::with_capacity(listed.len());
        for m in listed {
            let full = m.location.as_ref();
            let Some(rest) = full.strip_prefix(&dir).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            let name = match kind {
                Kind::Pack => match rest.split_once('/') {
                    Some((sub, n)) if sub.len() == 2 && n.starts_with(sub) => n,
                    _ => continue,
                },
                _ => rest,
            };
            // Anything else under the prefix (a stray upload, another
            // tool's file) is not an object of this repository.
            if valid_name(name) {
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size: m.size,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        let key = self.key(kind, name)?;
        let s = self.client();
        match self.run(async move { s.delete(&key).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", kind, name, e)),
        }
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.staging)
            .map_err(|e| Error::io("create directory", &self.staging, e))?;
        Ok(self.staging.clone())
    }

    fn prepare(&self) -> Result<()> {
        // Refuse a prefix that holds someone's data; an empty one, or
        // what a crashed `init` left (keys without a config), is fine.
        let s = self.client();
        let prefix = (!self.root.is_empty()).then(|| Key::from(self.root.clone()));
        let found = self.run(async move {
            let mut st = s.list(prefix.as_ref());
            let mut found = Vec::new();
            while let Some(m) = st.next().await {
                found.push(m?.location.to_string());
                if found.len() >= 16 {
                    break;
                }
            }
            Ok(found)
        });
        let found = found.map_err(|e| self.error("list", Kind::Config, "", e))?;
        let root = self.root.clone();
        let foreign = found.iter().any(|k| {
            let rest = k.strip_prefix(&root).unwrap_or(k);
            !(rest.starts_with("keys/") || rest.starts_with("locks/"))
        });
        if foreign {
            return Err(Error::NotEmptyRemote(self.location()));
        }
        self.probe_create_only()?;
        Ok(())
    }

    fn read_concurrency(&self) -> usize {
        // Each range read is a request; restic reads eight packs at once.
        8
    }

    fn write_semantics(&self) -> Option<String> {
        match self.create_only() {
            CreateOnly::Enforced => Some(format!(
                "{} refuses to replace an object (If-None-Match): create-only writes are enforced",
                self.location()
            )),
            CreateOnly::LastWriterWins => Some(format!(
                "{} lets the last writer of an object win (it ignores If-None-Match, as Garage does): Cairn's leases do not rely on it, and content-addressed objects are safe either way",
                self.location()
            )),
            CreateOnly::Unknown => None,
        }
    }
}
