//! The common case of an hourly run, fetched without `git fetch`: a
//! mirror over HTTP(S) whose upstream only added commits and refs.
//!
//! `git fetch` over HTTP is five processes (fetch, the remote helper with
//! its TLS library, fetch-pack, index-pack, a connectivity rev-list) and
//! three requests to the forge; starting them is most of the cost of a
//! small fetch. Here the advertisement the run already read says what
//! changed, one POST asks for it, the pack streams into `git index-pack`,
//! one `git rev-list` checks that everything the new tips need is there
//! and that every moved branch only moved forward, and the refs are
//! written as git writes loose refs. Anything else (a ref deleted, a tag
//! moved, a branch rewritten, a name git would refuse, an answer not as
//! the protocol says) is left to the careful path of [`super::mirror`],
//! which runs git itself.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;

use super::refs::{Advertised, RefMap, valid_refname};

/// What the fast path did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fast {
    /// The mirror now matches the advertisement.
    Done {
        /// Refs created or moved.
        updated: usize,
    },
    /// Something needs the careful path (the reason, for tests).
    Careful(&'static str),
}

/// Why the fast path gave up half-way; the caller goes the careful way.
#[derive(Debug)]
pub struct Failed(pub String);

/// Longest upload-pack answer accepted here; bigger fetches go through git.
const MAX_PACK: u64 = 4 << 30;
/// Haves sent at most: enough for any mirror's branches and tags to find
/// common ground at once.
const MAX_HAVES: usize = 256;

/// Brings the mirror at `dir` (whose refs are `local`) to `adv` if
/// upstream only added.
pub fn fast_fetch(
    agent: &ureq::Agent,
    dir: &Path,
    url: &str,
    auth: Option<&str>,
    adv: &Advertised,
    local: &RefMap,
) -> Result<Fast, Failed> {
    if !adv.refs.keys().all(|n| valid_refname(n)) {
        return Ok(Fast::Careful("a ref name git would refuse"));
    }
    if local.keys().any(|n| !adv.refs.contains_key(n)) {
        return Ok(Fast::Careful("a ref deleted upstream"));
    }
    let changed: Vec<(&String, &String, Option<&String>)> = adv
        .refs
        .iter()
        .filter(|(n, o)| local.get(*n) != Some(*o))
        .map(|(n, o)| (n, o, local.get(n)))
        .collect();
    if changed
        .iter()
        .any(|(n, _, old)| old.is_some() && n.starts_with("refs/tags/"))
    {
        return Ok(Fast::Careful("a tag moved"));
    }
    if changed.is_empty() {
        return Ok(Fast::Done { updated: 0 });
    }
    let wants: BTreeSet<&String> = changed.iter().map(|(_, o, _)| *o).collect();
    let haves: BTreeSet<&String> = local.values().collect();
    fetch_pack(agent, dir, url, auth, adv, &wants, &haves)?;

    // Connectivity, and which old tips the new ones contain: a boundary
    // commit of `NEW… --not OLD…` is an old tip some new tip reaches.
    let mut c = super::mirror::git(dir, None);
    c.args(["rev-list", "--objects", "--boundary", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| Failed(format!("git rev-list: {e}")))?;
    let mut input = String::new();
    for w in &wants {
        input.push_str(w);
        input.push('\n');
    }
    input.push_str("--not\n");
    for h in &haves {
        input.push_str(h);
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut boundary = BTreeSet::new();
    let out = BufReader::new(child.stdout.take().expect("piped"));
    for line in out.lines() {
        let line = line.map_err(|e| Failed(format!("git rev-list: {e}")))?;
        if let Some(b) = line.strip_prefix('-') {
            boundary.insert(b.to_string());
        }
    }
    let _ = writer.join();
    let done = child
        .wait_with_output()
        .map_err(|e| Failed(format!("git rev-list: {e}")))?;
    if !done.status.success() {
        return Err(Failed(format!(
            "the fetched objects are incomplete: {}",
            String::from_utf8_lossy(&done.stderr).trim()
        )));
    }
    if changed
        .iter()
        .any(|(_, _, old)| old.is_some_and(|o| !boundary.contains(o)))
    {
        return Ok(Fast::Careful("a branch rewritten"));
    }
    for (name, oid, _) in &changed {
        write_ref(dir, name, oid).map_err(|e| Failed(format!("writing {name}: {e}")))?;
    }
    Ok(Fast::Done {
        updated: changed.len(),
    })
}

fn pkt(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(format!("{:04x}", line.len() + 4).as_bytes());
    out.extend_from_slice(line.as_bytes());
}

/// POSTs the wants and haves, and streams the pack into `git index-pack`.
fn fetch_pack(
    agent: &ureq::Agent,
    dir: &Path,
    url: &str,
    auth: Option<&str>,
    adv: &Advertised,
    wants: &BTreeSet<&String>,
    haves: &BTreeSet<&String>,
) -> Result<(), Failed> {
    let has = |c: &str| adv.caps.iter().any(|x| x == c);
    let band = if has("side-band-64k") {
        "side-band-64k"
    } else if has("side-band") {
        "side-band"
    } else {
        return Err(Failed("the server offers no side-band".into()));
    };
    let mut caps = vec![band];
    for c in ["ofs-delta", "thin-pack", "no-progress"] {
        if has(c) {
            caps.push(c);
        }
    }
    let agent_cap = concat!("agent=cairn/", env!("CARGO_PKG_VERSION"));
    caps.push(agent_cap);
    let mut body = Vec::new();
    for (i, w) in wants.iter().enumerate() {
        if i == 0 {
            pkt(&mut body, &format!("want {w} {}\n", caps.join(" ")));
        } else {
            pkt(&mut body, &format!("want {w}\n"));
        }
    }
    body.extend_from_slice(b"0000");
    for h in haves.iter().take(MAX_HAVES) {
        pkt(&mut body, &format!("have {h}\n"));
    }
    pkt(&mut body, "done\n");

    let u = format!("{}/git-upload-pack", url.trim_end_matches('/'));
    let mut req = agent
        .post(&u)
        .header("Content-Type", "application/x-git-upload-pack-request")
        .header("Accept", "application/x-git-upload-pack-result");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut resp = req
        .send(&body[..])
        .map_err(|e| Failed(format!("upload-pack: {e}")))?;
    if resp.status().as_u16() != 200 {
        return Err(Failed(format!("upload-pack answered {}", resp.status())));
    }
    let mut r = resp.body_mut().as_reader().take(MAX_PACK);

    // ACK/NAK lines, then side-band packets until a flush.
    let mut child: Option<std::process::Child> = None;
    let mut header = Vec::with_capacity(12);
    let res = (|| -> Result<(), Failed> {
        loop {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)
                .map_err(|e| Failed(format!("the answer broke off: {e}")))?;
            let n = std::str::from_utf8(&len)
                .ok()
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .ok_or_else(|| Failed("not a pkt-line".into()))?;
            if n == 0 {
                break;
            }
            if n < 5 {
                return Err(Failed("a short pkt-line".into()));
            }
            let mut data = vec![0u8; n - 4];
            r.read_exact(&mut data)
                .map_err(|e| Failed(format!("the answer broke off: {e}")))?;
            if data.starts_with(b"ACK ") || data.starts_with(b"NAK") {
                continue;
            }
            match data[0] {
                1 => {
                    let payload = &data[1..];
                    if child.is_none() {
                        // The first 12 bytes say how many objects come; an
                        // empty pack needs no index-pack.
                        header.extend_from_slice(payload);
                        if header.len() < 12 {
                            continue;
                        }
                        if &header[..4] != b"PACK" {
                            return Err(Failed("the answer holds no pack".into()));
                        }
                        if header[8..12] == [0, 0, 0, 0] {
                            return Ok(());
                        }
                        let mut c = super::mirror::git(dir, None);
                        c.args(["index-pack", "--stdin", "--fix-thin"])
                            .stdin(Stdio::piped())
                            .stdout(Stdio::null())
                            .stderr(Stdio::piped());
                        let mut ch = c
                            .spawn()
                            .map_err(|e| Failed(format!("git index-pack: {e}")))?;
                        let first = std::mem::take(&mut header);
                        ch.stdin
                            .as_mut()
                            .expect("piped")
                            .write_all(&first)
                            .map_err(|e| Failed(format!("git index-pack: {e}")))?;
                        header = first[..12].to_vec();
                        child = Some(ch);
                    } else if let Some(ch) = child.as_mut() {
                        ch.stdin
                            .as_mut()
                            .expect("piped")
                            .write_all(payload)
                            .map_err(|e| Failed(format!("git index-pack: {e}")))?;
                    }
                }
                2 => {}
                3 => {
                    return Err(Failed(format!(
                        "the server said: {}",
                        String::from_utf8_lossy(&data[1..]).trim()
                    )));
                }
                _ => return Err(Failed("an unknown side-band".into())),
            }
        }
        Ok(())
    })();
    let Some(mut ch) = child else {
        return res.and_then(|()| {
            if header.len() == 12 {
                Ok(())
            } else {
                Err(Failed("the answer holds no pack".into()))
            }
        });
    };
    drop(ch.stdin.take());
    if res.is_err() {
        let _ = ch.kill();
    }
    let out = ch
        .wait_with_output()
        .map_err(|e| Failed(format!("git index-pack: {e}")))?;
    res?;
    if !out.status.success() {
        return Err(Failed(format!(
            "git index-pack: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Writes a loose ref as git does: the value into `NAME.lock`, flushed to
/// disk, renamed over `NAME`.
fn write_ref(dir: &Path, name: &str, oid: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let lock = dir.join(format!("{name}.lock"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)?;
    let res = f
        .write_all(format!("{oid}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&lock, &path));
    if res.is_err() {
        let _ = std::fs::remove_file(&lock);
    }
    res
}
