//! Listing snapshots and resolving `latest`, ID prefixes and groups.

use cairn_format::Id;
use cairn_format::snapshot::Envelope;
use cairn_storage::{Kind, Storage};

use crate::{Error, Result};

/// A snapshot as listed: its name and plaintext envelope.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    /// Snapshot ID (BLAKE3 of the file).
    pub id: Id,
    /// The plaintext envelope.
    pub envelope: Envelope,
}

/// Resolves `latest`, an ID prefix, or `latest` within `group`.
pub fn select_snapshot<'a>(
    list: &'a [SnapshotInfo],
    spec: &str,
    group: Option<&str>,
) -> Result<&'a SnapshotInfo> {
    let in_group = |s: &&SnapshotInfo| group.is_none_or(|g| s.envelope.group == g);
    if spec == "latest" {
        return list
            .iter()
            .filter(in_group)
            .max_by_key(|s| (s.envelope.time_ns, s.id))
            .ok_or_else(|| {
                Error::Snapshot(match group {
                    Some(g) => format!(
                        "no snapshot in group {g:?}; `cairn snapshots` lists the groups there are"
                    ),
                    None => "the repository has no snapshots yet; run `cairn backup` first".into(),
                })
            });
    }
    let spec_l = spec.to_ascii_lowercase();
    if spec_l.is_empty() || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Snapshot(format!(
            "{spec:?} is not a snapshot: give `latest` or a hex ID prefix from `cairn snapshots`"
        )));
    }
    let m: Vec<_> = list
        .iter()
        .filter(in_group)
        .filter(|s| s.id.to_hex().starts_with(&spec_l))
        .collect();
    match m.len() {
        0 => Err(Error::Snapshot(format!(
            "no snapshot matches {spec:?}; `cairn snapshots` lists them"
        ))),
        1 => Ok(m[0]),
        n => Err(Error::Snapshot(format!(
            "{n} snapshots match {spec:?}; give more digits"
        ))),
    }
}

/// Every snapshot's envelope (no key needed). Unreadable snapshot files
/// are returned as errors in the second list.
pub fn list_snapshots(storage: &dyn Storage) -> Result<(Vec<SnapshotInfo>, Vec<String>)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for obj in storage.list(Kind::Snapshot)? {
        let Some(id) = Id::from_hex(&obj.name) else {
            continue;
        };
        match storage.get(Kind::Snapshot, &obj.name) {
            Ok(d) => match cairn_format::snapshot::decode(&d) {
                Ok(f) => out.push(SnapshotInfo {
                    id,
                    envelope: f.envelope,
                }),
                Err(e) => bad.push(format!("snapshot {}: {e}", obj.name)),
            },
            Err(e) => bad.push(format!("snapshot {}: {e}", obj.name)),
        }
    }
    out.sort_by_key(|s| (s.envelope.time_ns, s.id));
    Ok((out, bad))
}

/// Whether `group` matches the pattern `p`: `*` matches any run of
/// characters, everything else itself (e.g. `laptop:*`).
pub fn group_matches(p: &str, group: &str) -> bool {
    glob(p.as_bytes(), group.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative with one backtrack point: linear in practice, never
    // exponential, whatever a token's pattern holds.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The snapshots `specs` name (ID prefixes or `latest`, within `group`
/// when given), or with no specs every snapshot of the groups `group`
/// matches; oldest first, each once.
pub fn select_many<'a>(
    list: &'a [SnapshotInfo],
    specs: &[String],
    group: Option<&str>,
) -> Result<Vec<&'a SnapshotInfo>> {
    let mut out: Vec<&SnapshotInfo> = Vec::new();
    if specs.is_empty() {
        out.extend(
            list.iter()
                .filter(|s| group.is_none_or(|g| group_matches(g, &s.envelope.group))),
        );
    }
    for spec in specs {
        let s = select_snapshot(list, spec, group)?;
        if !out.iter().any(|o| o.id == s.id) {
            out.push(s);
        }
    }
    out.sort_by_key(|s| (s.envelope.time_ns, s.id));
    Ok(out)
}
