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
) -> Result<AgentResult, String> {
    let (prog, opts) = p.ssh_command.split_first().ok_or("ssh_command is empty")?;
    let mut child = Command::new(prog)
        .args(opts)
        .args(["-o", "BatchMode=yes", "--", &p.ssh, &p.remote_cairn, AGENT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {prog}: {e}"))?;
    let (Some(mut to), Some(mut from), Some(err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("no pipes to the ssh process".into());
    };
    let stderr = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            lines.push(l);
            if lines.len() > 200 {
                lines.remove(0);
            }
        }
        lines
    });
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
    let mut rest = Vec::new();
    let _ = from.read_to_end(&mut rest);
    let status = child.wait().map_err(|e| e.to_string())?;
    let lines = stderr.join().unwrap_or_default();
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
        .cloned()
        .collect::<Vec<_>>()
        .join(" | ");
    let said = &said[said.floor_char_boundary(said.len().saturating_sub(1500))..];
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
}
