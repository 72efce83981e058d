//! Pull backups: the box starts a backup on a machine that comes and
//! goes, and the data comes back over the same SSH connection.
//!
//! BackupPC's model with Cairn's keys. The box runs `ssh MACHINE cairn
//! pull-agent`; on the machine, `authorized_keys` forces that command for
//! the box's key, so the key opens nothing else. The box sends one JSON
//! line saying what to back up ([`Request`]); then the two ends speak the
//! storage protocol, the machine as the client (with its put-only key)
//! and the box as the server, through a [`GuardedStorage`] with the put
//! role for the job's group only. The machine needs no scheduler, no
//! token and no route to the box, and what it sends cannot read, alter or
//! delete anything stored. The agent's last line on standard error is
//! its result ([`AgentResult`]).

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cairn_server::guarded::{GuardedStorage, Refusal};
use cairn_server::policy::{GroupPattern, Role};
use cairn_storage::Storage;
use serde::{Deserialize, Serialize};

use crate::config::Pull;

/// The agent's program word after the cairn binary.
pub const AGENT: &str = "pull-agent";

/// Prefix of the agent's result line on standard error.
pub const RESULT_PREFIX: &str = "cairn-agent-result: ";

/// Longest request line the agent reads.
pub const MAX_REQUEST: u64 = 64 << 10;

/// What the box asks the machine to back up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Format of this line.
    pub version: u32,
    /// The box's job name (for messages and `cairn approve`).
    pub job: String,
    /// Sources on the machine.
    pub paths: Vec<std::path::PathBuf>,
    /// Exclude patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Skip CACHEDIR.TAG directories.
    #[serde(default)]
    pub exclude_caches: bool,
    /// Stay on each source's filesystem.
    #[serde(default)]
    pub one_file_system: bool,
    /// The snapshot group (the box allows only this one).
    pub group: String,
    /// Snapshot tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// zstd level.
    pub compression: Option<i32>,
    /// The shrink guard.
    pub max_vanished: Option<f64>,
    /// Whether this run is approved past the shrink guard.
    #[serde(default)]
    pub approved: bool,
    /// The machine's put-only key, as a path there (`remote_key_file`);
    /// a `--key-file` in the machine's forced command wins.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

/// What the agent reports at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentResult {
    /// `ok`, `failed`, `refused` or `interrupted`.
    pub outcome: String,
    /// What it did, or why not.
    pub message: String,
    /// The snapshot written.
    pub snapshot: Option<String>,
    /// Bytes added to the repository.
    #[serde(default)]
    pub bytes_added: u64,
}

/// The group a pull job's snapshots get when none is configured: the
/// machine's SSH host and the paths, like a backup made on it.
pub fn group(p: &Pull) -> String {
    if let Some(g) = &p.backup.group {
        return g.clone();
    }
    let host = crate::probe::target(p).0;
    let paths: Vec<String> = p
        .backup
        .paths
        .iter()
        .map(|x| x.display().to_string())
        .collect();
    format!("{host}:{}", paths.join(","))
}

/// The request for one run of `job`.
pub fn request(job: &str, p: &Pull, approved: bool) -> Request {
    Request {
        version: 1,
        job: job.to_string(),
        paths: p.backup.paths.clone(),
        exclude: p.backup.exclude.clone(),
        exclude_caches: p.backup.exclude_caches,
        one_file_system: p.backup.one_file_system,
        group: group(p),
        tags: p.backup.tags.clone(),
        compression: p.backup.compression,
        max_vanished: p.backup.max_vanished,
        approved,
        key_file: p.remote_key_file.clone(),
    }
}

/// Runs one pull: starts the agent over SSH and serves `storage` to it
/// with the put role for the request's group. Returns the agent's result,
/// or why there is none.
pub fn pull(
    storage: Arc<dyn Storage>,
    p: &Pull,
    req: &Request,
    log: Arc<dyn Fn(&str) + Send + Sync>,
    limits: Silence,
) -> Result<AgentResult, String> {
    let (prog, opts) = p.ssh_command.split_first().ok_or("ssh_command is empty")?;
    // ssh's keep-alives notice a machine that vanished without closing
    // the connection (a laptop lid shut, Wi-Fi gone).
    let keepalive: &[&str] = if prog.ends_with("ssh") {
        &[
            "-o",
            "ServerAliveInterval=30",
            "-o",
            "ServerAliveCountMax=4",
        ]
    } else {
        &[]
    };
    let mut child = Command::new(prog)
        .args(cairn_remote::ssh::cipher_preference(prog))
        .args(opts)
        .args(keepalive)
        .args(["-o", "BatchMode=yes", "--", &p.ssh, &p.remote_cairn, AGENT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {prog}: {e}"))?;
    let (Some(mut to), Some(from), Some(err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("no pipes to the ssh process".into());
    };
    // The machine's words are kept in bounded memory: its result line is
    // the last, and a few KiB before it explain a failure.
    let stderr = std::thread::spawn(move || crate::tail::read(err, 16 << 10));
    let heard = Arc::new(std::sync::atomic::AtomicI64::new(cairn_store::now_ns()));
    let spoke = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = watchdog(
        child.id(),
        heard.clone(),
        spoke.clone(),
        done.clone(),
        limits,
    );
    let mut from = Heard {
        inner: from,
        heard,
        spoke,
    };
    let line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    // Groups of pull jobs hold no `*` (the config refuses one), so the
    // pattern matches this group only.
    let pattern = GroupPattern::new(&req.group)?;
    let principal = format!("pull {}", p.ssh);
    let guarded = GuardedStorage::new(
        storage,
        Role::Put(Some(pattern)),
        &principal,
        Arc::new(move |r: &Refusal| {
            log(&format!(
                "refused {:?} {:?} {} for {} ({}): {}",
                r.op, r.kind, r.name, r.principal, r.role, r.reason
            ))
        }),
    );
    let served = to
        .write_all(line.as_bytes())
        .and_then(|()| to.write_all(b"\n"))
        .and_then(|()| to.flush())
        .and_then(|()| cairn_server::serve::serve(&mut from, &mut to, &guarded));
    drop(to);
    let _ = std::io::copy(&mut from, &mut std::io::sink());
    let status = child.wait().map_err(|e| e.to_string())?;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let silenced = watchdog.join().unwrap_or(None);
    let text = stderr.join().unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if let Some(r) = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .and_then(|j| serde_json::from_str::<AgentResult>(j).ok())
    {
        return Ok(r);
    }
    let said = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" | ");
    let said = &said[said.floor_char_boundary(said.len().saturating_sub(1500))..];
    if let Some(why) = silenced {
        return Err(format!("the backup on {} was stopped: {why}", p.ssh));
    }
    Err(format!(
        "the backup on {} did not finish ({status}{}){}",
        p.ssh,
        served
            .err()
            .map_or(String::new(), |e| format!("; connection: {e}")),
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        }
    ))
}

/// How long the machine may stay silent before the box gives up on it.
#[derive(Clone, Copy, Debug)]
pub struct Silence {
    /// Until its first bytes (connecting, starting, opening the key).
    pub first: std::time::Duration,
    /// Between any two reads afterwards (a walk over millions of
    /// unchanged files sends nothing for a while).
    pub between: std::time::Duration,
}

impl Default for Silence {
    fn default() -> Silence {
        Silence {
            first: std::time::Duration::from_secs(120),
            between: std::time::Duration::from_secs(1800),
        }
    }
}

/// The machine's output, noting when it last said something.
struct Heard<R> {
    inner: R,
    heard: Arc<std::sync::atomic::AtomicI64>,
    spoke: Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for Heard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            use std::sync::atomic::Ordering;
            self.heard.store(cairn_store::now_ns(), Ordering::Relaxed);
            self.spoke.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Kills the ssh process when the machine stays silent too long, and
/// says why; ends when `done` is set.
fn watchdog(
    pid: u32,
    heard: Arc<std::sync::atomic::AtomicI64>,
    spoke: Arc<std::sync::atomic::AtomicBool>,
    done: Arc<std::sync::atomic::AtomicBool>,
    limits: Silence,
) -> std::thread::JoinHandle<Option<String>> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let (limit, what) = if spoke.load(Ordering::Relaxed) {
                (limits.between, "it sent nothing")
            } else {
                (limits.first, "it never answered")
            };
            let quiet = cairn_store::now_ns() - heard.load(Ordering::Relaxed);
            if quiet > limit.as_nanos() as i64 {
                if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
                return Some(format!(
                    "{what} for {}; the next run resumes",
                    crate::schedule::words(limit)
                ));
            }
        }
        None
    })
}

/// Reads the request line an agent gets first, without reading past it
/// (the storage protocol follows on the same stream).
pub fn read_request(input: &mut dyn BufRead) -> Result<Request, String> {
    let mut line = Vec::new();
    input
        .take(MAX_REQUEST)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the box's request: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err(
            "no request from the box: this command is run by a Cairn box's pull job over SSH, not by hand"
                .into(),
        );
    }
    let req: Request = serde_json::from_slice(&line)
        .map_err(|e| format!("the box's request is not understood ({e}); is the box running another version of cairn?"))?;
    if req.version != 1 {
        return Err(format!(
            "the box speaks request version {}, this cairn version 1",
            req.version
        ));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_strangers_are_refused() {
        let p = Pull {
            ssh: "backup@laptop.lan".into(),
            ssh_command: vec!["ssh".into()],
            remote_cairn: "cairn".into(),
            backup: crate::config::Backup {
                paths: vec!["/home/me".into()],
                max_vanished: Some(0.2),
                ..Default::default()
            },
            ..Pull::default()
        };
        let r = request("laptop", &p, false);
        assert_eq!(r.group, "laptop.lan:/home/me");
        let mut line = serde_json::to_vec(&r).unwrap();
        line.extend_from_slice(b"\nCAIRN...");
        let mut input = std::io::BufReader::new(&line[..]);
        assert_eq!(read_request(&mut input).unwrap(), r);
        let mut rest = String::new();
        input.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "CAIRN...", "nothing past the line is consumed");
        let e = read_request(&mut std::io::BufReader::new(&b"cat /etc/passwd"[..])).unwrap_err();
        assert!(e.contains("not by hand"), "{e}");
        let e = read_request(&mut std::io::BufReader::new(&b"{\"version\":1}\n"[..])).unwrap_err();
        assert!(e.contains("not understood"), "{e}");
    }

    /// A machine that answers with garbage and floods its error output:
    /// the pull fails saying so, in bounded memory, and nothing is stored.
    #[test]
    fn a_hostile_machine_gets_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(cairn_storage::MemoryStorage::new(dir.path()));
        let fake = |script: &str| Pull {
            ssh: "laptop".into(),
            ssh_command: vec!["sh".into(), "-c".into(), script.into(), "fake-ssh".into()],
            remote_cairn: "cairn".into(),
            backup: crate::config::Backup {
                paths: vec!["/home".into()],
                ..Default::default()
            },
            ..Pull::default()
        };
        let log: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(|_: &str| {});
        let quick = Silence {
            first: std::time::Duration::from_secs(2),
            between: std::time::Duration::from_secs(2),
        };
        let p = fake(
            "head -c 1 >/dev/null; head -c 50000000 /dev/zero; head -c 30000000 /dev/zero | tr '\\0' x >&2; exit 1",
        );
        let e = pull(
            storage.clone(),
            &p,
            &request("j", &p, false),
            log.clone(),
            quick,
        )
        .unwrap_err();
        assert!(
            e.contains("did not finish") && e.len() < 20_000,
            "{}",
            &e[..200.min(e.len())]
        );
        // Silent: it never answers, and is given up on.
        let p = fake("cat >/dev/null");
        let e = pull(
            storage.clone(),
            &p,
            &request("j", &p, false),
            log.clone(),
            quick,
        )
        .unwrap_err();
        assert!(e.contains("it never answered for 2s"), "{e}");
        // Answers, then falls silent.
        let p = fake("printf 'CAIRN'; exec sleep 30");
        let e = pull(storage.clone(), &p, &request("j", &p, false), log, quick).unwrap_err();
        assert!(e.contains("it sent nothing for 2s"), "{e}");
        assert!(
            storage
                .list(cairn_storage::Kind::Snapshot)
                .unwrap()
                .is_empty()
        );
    }
}
