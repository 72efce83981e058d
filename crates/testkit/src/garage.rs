//! A real Garage cluster on loopback for tests: `n` nodes, each its own
//! process with its own directories and ports, joined into one layout
//! (replication factor `min(n, 3)`, consistent mode), one bucket and one
//! key allowed on it.
//!
//! The `garage` binary comes from `CAIRN_GARAGE`, else `PATH` (`.ci/run`
//! installs it). A test that needs it fails when it is missing: a skipped
//! S3 test would pass for a broken S3 backend.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_storage::s3::{S3Config, S3Url};

/// The key every test cluster is given (Garage's formats: `GK` and 24
/// hex digits; 64 hex digits).
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
/// The secret of [`KEY_ID`].
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The region Garage answers to.
pub const REGION: &str = "garage";

struct Node {
    config: PathBuf,
    s3: u16,
    rpc: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running cluster; dropping it kills every node.
pub struct Garage {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    bin: PathBuf,
    buckets: Vec<String>,
}

/// The `garage` program, or a panic that says how to get it.
pub fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_GARAGE") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home_cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_cargo)
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "these tests need Garage: `cargo install garage --locked --no-default-features --features bundled-libs,lmdb` (.ci/run does), or set CAIRN_GARAGE"
            )
        })
}

/// `k` free loopback ports, all different: the listeners are held until
/// every port is chosen (one at a time, the kernel may hand out a port
/// just released again).
fn free_ports(k: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..k)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

impl Garage {
    /// Starts `n` nodes and waits until the bucket `bucket` answers.
    pub fn start(n: usize, bucket: &str) -> Garage {
        let bin = garage_bin();
        let dir = tempfile::tempdir().unwrap();
        let mut secret = [0u8; 32];
        getrandom_fill(&mut secret);
        let rpc_secret = hex::encode(secret);
        let mut nodes = Vec::new();
        let ports = free_ports(2 * n);
        for i in 0..n {
            let (s3, rpc) = (ports[2 * i], ports[2 * i + 1]);
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(root.join("meta")).unwrap();
            std::fs::create_dir_all(root.join("data")).unwrap();
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "lmdb"
replication_factor = {rf}
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{rpc_secret}"
block_size = "1M"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
                    meta = root.join("meta").display(),
                    data = root.join("data").display(),
                    rf = n.min(3),
                ),
            )
            .unwrap();
            nodes.push(Node {
                config,
                s3,
                rpc,
                child: None,
                log: root.join("garage.log"),
            });
        }
        let mut g = Garage {
            dir,
            nodes,
            bin,
            buckets: Vec::new(),
        };
        for i in 0..n {
            g.start_node(i);
        }
        let ids: Vec<String> = (0..n)
            .map(|i| {
                let out = g.wait_cli(i, &["node", "id", "-q"]);
                out.trim().to_string()
            })
            .collect();
        for id in &ids[1..] {
            g.cli(0, &["node", "connect", id]);
        }
        for id in &ids {
            let short = id.split('@').next().unwrap_or(id);
            g.cli(0, &["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        }
        g.cli(0, &["layout", "apply", "--version", "1"]);
        g.cli(
            0,
            &["key", "import", "--yes", "-n", "cairn-test", KEY_ID, SECRET],
        );
        g.add_bucket(bucket);
        g
    }

    /// Creates another bucket, with the test key allowed to read and
    /// write it.
    pub fn add_bucket(&mut self, bucket: &str) {
        self.buckets.push(bucket.to_string());
        let deadline = Instant::now() + Duration::from_secs(60);
        // Right after a layout change the cluster may not have a quorum
        // for a moment.
        loop {
            match self.try_cli(0, &["bucket", "create", bucket]) {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => panic!("garage bucket create {bucket}: {e}"),
            }
        }
        self.cli(
            0,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                bucket,
                "--key",
                "cairn-test",
            ],
        );
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", node.s3)).is_err() {
            assert!(
                Instant::now() < deadline,
                "garage node {i} did not listen: {}",
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs `garage ARGS` against node `i`, panicking on failure.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        self.try_cli(i, args)
            .unwrap_or_else(|e| panic!("garage {}: {e}", args.join(" ")))
    }

    fn wait_cli(&self, i: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_cli(i, args) {
                Ok(o) => return o,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("garage {}: {e}", args.join(" ")),
            }
        }
    }

    /// Kills node `i` at once (SIGKILL), as a crash or a pulled cable.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again after [`Garage::kill`], and waits until it
    /// serves requests again (it reconnects to its peers first).
    pub fn restart(&mut self, i: usize) {
        self.start_node(i);
        let Some(bucket) = self.buckets.first().cloned() else {
            return;
        };
        let staging = self.dir.path().join("staging");
        let st = cairn_storage::S3Storage::with_config(
            self.config(i, &format!("s3://{bucket}")),
            &staging,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = cairn_storage::Storage::list(&st, cairn_storage::Kind::Key) {
            assert!(
                Instant::now() < deadline,
                "garage node {i} did not come back: {e}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Node `i`'s S3 endpoint.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3)
    }

    /// Node `i`'s RPC port.
    pub fn rpc_port(&self, i: usize) -> u16 {
        self.nodes[i].rpc
    }

    /// The cluster's scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment a `cairn` process needs to reach `s3://` URLs
    /// through node `i`.
    pub fn env(&self, i: usize) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint(i)),
        ]
    }

    /// A client configuration for `s3://BUCKET/PREFIX` through node `i`.
    pub fn config(&self, i: usize, url: &str) -> S3Config {
        S3Config {
            url: S3Url::parse(url).unwrap(),
            region: REGION.into(),
            endpoint: Some(self.endpoint(i)),
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
            session_token: None,
            virtual_hosted: false,
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

fn getrandom_fill(b: &mut [u8]) {
    // Only needs to differ between clusters started at once.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = (t as u64) ^ ((std::process::id() as u64) << 32) ^ (b.as_ptr() as u64);
    b.copy_from_slice(&crate::pseudo(b.len(), seed));
}
