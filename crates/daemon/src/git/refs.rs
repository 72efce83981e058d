//! Refs without running git: a bare repository's branches and tags read
//! from its files, and a remote's as its smart-HTTP advertisement lists
//! them. Comparing the two lets a run skip a mirror whose upstream did
//! not change without starting a single process, which is most mirrors
//! on most runs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Ref name (`refs/heads/main`) to object ID (hex).
pub type RefMap = BTreeMap<String, String>;

/// Whether a ref is one a mirror keeps: branches and tags, and with
/// `pulls` the heads of pull and merge requests (`refs/pull/N/head` on
/// GitHub and Gitea, `refs/merge-requests/N/head` on GitLab; not the
/// forge's synthetic merge commits, which move with every push to the
/// target branch).
pub fn mirrored(name: &str, pulls: bool) -> bool {
    name.starts_with("refs/heads/") || name.starts_with("refs/tags/") || (pulls && pull_head(name))
}

fn pull_head(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 4
        && parts[0] == "refs"
        && (parts[1] == "pull" || parts[1] == "merge-requests")
        && !parts[2].is_empty()
        && parts[2].bytes().all(|b| b.is_ascii_digit())
        && parts[3] == "head"
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The branches and tags of the bare repository at `dir` (loose refs
/// override packed ones, as in git). A ref file that is not an object ID
/// (a symbolic ref, a torn write) is left out, which at worst makes a run
/// fetch when it need not.
pub fn local(dir: &Path, pulls: bool) -> std::io::Result<RefMap> {
    let mut out = RefMap::new();
    match std::fs::read_to_string(dir.join("packed-refs")) {
        Ok(text) => {
            for line in text.lines() {
                if line.starts_with('#') || line.starts_with('^') {
                    continue;
                }
                if let Some((oid, name)) = line.split_once(' ')
                    && is_oid(oid)
                    && mirrored(name, pulls)
                {
                    out.insert(name.to_string(), oid.to_string());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let tops: &[&str] = if pulls {
        &[
            "refs/heads",
            "refs/tags",
            "refs/pull",
            "refs/merge-requests",
        ]
    } else {
        &["refs/heads", "refs/tags"]
    };
    for top in tops {
        loose(&dir.join(top), top, &mut out)?;
    }
    out.retain(|name, _| mirrored(name, pulls));
    Ok(out)
}

fn loose(path: &Path, name: &str, out: &mut RefMap) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for ent in rd {
        let ent = ent?;
        let Some(file) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let full = format!("{name}/{file}");
        let ft = ent.file_type()?;
        if ft.is_dir() {
            loose(&ent.path(), &full, out)?;
        } else if ft.is_file() && !file.ends_with(".lock") {
            let text = std::fs::read_to_string(ent.path()).unwrap_or_default();
            let oid = text.trim_end();
            if is_oid(oid) {
                out.insert(full, oid.to_string());
            }
        }
    }
    Ok(())
}

/// What a smart-HTTP advertisement said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advertised {
    /// Branches and tags.
    pub refs: RefMap,
    /// Where `HEAD` points, when the server says (`symref=`).
    pub head: Option<String>,
    /// The server's capabilities.
    pub caps: Vec<String>,
}

/// Why an advertisement could not be had.
#[derive(Debug, PartialEq, Eq)]
pub enum Discovery {
    /// The server has no such repository (404): an unused wiki, say.
    Missing,
    /// Anything else; the caller fetches and lets git say what is wrong.
    Unknown(String),
}

/// Longest advertisement read (a repository with a million refs).
const MAX_ADVERTISEMENT: u64 = 128 << 20;

/// The refs the server at `url` (an `http(s)://` clone URL) advertises,
/// by protocol v0's `info/refs`, sending `auth` as the Authorization
/// header.
pub fn discover(
    agent: &ureq::Agent,
    url: &str,
    auth: Option<&str>,
    pulls: bool,
) -> Result<Advertised, Discovery> {
    let u = format!(
        "{}/info/refs?service=git-upload-pack",
        url.trim_end_matches('/')
    );
    let mut req = agent.get(&u).header("Accept", "*/*");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut resp = req.call().map_err(|e| Discovery::Unknown(e.to_string()))?;
    match resp.status().as_u16() {
        200 => {}
        404 => return Err(Discovery::Missing),
        s => return Err(Discovery::Unknown(format!("status {s}"))),
    }
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "application/x-git-upload-pack-advertisement" {
        // A dumb server or a login page: let git deal with it.
        return Err(Discovery::Unknown(format!("content type {ct:?}")));
    }
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_ADVERTISEMENT + 1)
        .read_to_end(&mut body)
        .map_err(|e| Discovery::Unknown(e.to_string()))?;
    if body.len() as u64 > MAX_ADVERTISEMENT {
        return Err(Discovery::Unknown("advertisement too long".into()));
    }
    parse_advertisement(&body, pulls)
        .ok_or_else(|| Discovery::Unknown("not a ref advertisement".into()))
}

/// Parses protocol v0's pkt-lines: `# service=…`, a flush, then
/// `OID NAME\0CAPS`, `OID NAME`…, a flush.
pub fn parse_advertisement(mut b: &[u8], pulls: bool) -> Option<Advertised> {
    let mut out = Advertised::default();
    let mut first = true;
    let mut flushes = 0;
    while flushes < 2 {
        let len = usize::from_str_radix(std::str::from_utf8(b.get(..4)?).ok()?, 16).ok()?;
        if len == 0 {
            flushes += 1;
            b = &b[4..];
            continue;
        }
        if len < 4 || len > b.len() {
            return None;
        }
        let line = std::str::from_utf8(&b[4..len]).ok()?.trim_end_matches('\n');
        b = &b[len..];
        if flushes == 0 {
            // The service line; a v0 server sends it before a flush.
            if !line.starts_with("# service=") {
                return None;
            }
            continue;
        }
        let (refpart, caps) = match line.split_once('\0') {
            Some((r, c)) => (r, Some(c)),
            None => (line, None),
        };
        if first {
            first = false;
            if let Some(caps) = caps {
                out.caps = caps.split(' ').map(str::to_string).collect();
                out.head = out
                    .caps
                    .iter()
                    .find_map(|c| c.strip_prefix("symref=HEAD:"))
                    .map(str::to_string);
            }
        }
        let (oid, name) = refpart.split_once(' ')?;
        if !is_oid(oid) {
            return None;
        }
        if mirrored(name, pulls) && !name.ends_with("^{}") {
            out.refs.insert(name.to_string(), oid.to_string());
        }
    }
    Some(out)
}

/// Whether `name` is a ref name git itself would accept (the rules of
/// `git check-ref-format`, stricter where that is simpler): names from a
/// server become file paths, so nothing else is written.
pub fn valid_refname(name: &str) -> bool {
    name.len() <= 1024
        && name.starts_with("refs/")
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && !name
            .chars()
            .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
        && name
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.') && !part.ends_with(".lock"))
}

/// One HTTP client for every discovery of a run.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .timeout_connect(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("git/2 cairn/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(s: &str) -> String {
        format!("{:04x}{s}", s.len() + 4)
    }

    #[test]
    fn advertisement_parsed_and_junk_refused() {
        let a = "1111111111111111111111111111111111111111";
        let t = "2222222222222222222222222222222222222222";
        let body = format!(
            "{}0000{}{}{}{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt(&format!(
                "{a} HEAD\0multi_ack symref=HEAD:refs/heads/main agent=git/2\n"
            )),
            pkt(&format!("{a} refs/heads/main\n")),
            pkt(&format!("{t} refs/tags/v1\n")),
            pkt(&format!("{a} refs/tags/v1^{{}}\n")),
        );
        let got = parse_advertisement(body.as_bytes(), false).unwrap();
        assert_eq!(got.head.as_deref(), Some("refs/heads/main"));
        assert_eq!(got.refs.len(), 2);
        assert_eq!(got.refs["refs/tags/v1"], t);
        // An empty repository.
        let empty = format!(
            "{}0000{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt("0000000000000000000000000000000000000000 capabilities^{}\0agent=x\n")
        );
        assert_eq!(
            parse_advertisement(empty.as_bytes(), false)
                .unwrap()
                .refs
                .len(),
            0
        );
        for junk in ["", "00", "zzzz", "0005", "ffff0000", "0000"] {
            assert_eq!(
                parse_advertisement(junk.as_bytes(), false),
                None,
                "{junk:?}"
            );
        }
    }

    #[test]
    fn ref_names_from_servers_are_checked() {
        for ok in [
            "refs/heads/main",
            "refs/heads/feature/x-1",
            "refs/tags/v1.0",
        ] {
            assert!(valid_refname(ok), "{ok}");
        }
        for bad in [
            "refs/heads/../../config",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/a b",
            "refs/heads/a:b",
            "refs/heads/",
            "refs/heads//x",
            "refs/heads/x.",
            "refs/heads/x@{1}",
            "HEAD",
            "refs/heads/tab\there",
        ] {
            assert!(!valid_refname(bad), "{bad:?}");
        }
    }

    #[test]
    fn local_refs_read_like_git() {
        let d = tempfile::tempdir().unwrap();
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        std::fs::write(
            d.path().join("packed-refs"),
            format!("# pack-refs with: peeled\n{a} refs/heads/main\n{a} refs/tags/v1\n^{b}\n{a} refs/pull/1/head\n"),
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("refs/heads/feature")).unwrap();
        std::fs::write(d.path().join("refs/heads/main"), format!("{b}\n")).unwrap();
        std::fs::write(d.path().join("refs/heads/feature/x"), format!("{a}\n")).unwrap();
        std::fs::write(d.path().join("refs/heads/torn"), "12").unwrap();
        let got = local(d.path(), false).unwrap();
        assert_eq!(got["refs/heads/main"], b, "loose overrides packed");
        assert_eq!(got["refs/heads/feature/x"], a);
        assert_eq!(got["refs/tags/v1"], a);
        assert!(!got.contains_key("refs/heads/torn"));
        assert!(!got.contains_key("refs/pull/1/head"));
        let with = local(d.path(), true).unwrap();
        assert_eq!(with["refs/pull/1/head"], a, "pull heads when asked");
        assert!(mirrored("refs/merge-requests/7/head", true));
        assert!(!mirrored("refs/pull/1/merge", true));
        assert!(!mirrored("refs/pull/x/head", true));
    }
}
