//! The directories above the snapshots' own trees: `snapshots/`, one
//! directory per snapshot; `groups/<group>/`, its snapshots by time plus
//! `latest`; `tags/<tag>/`, the snapshots carrying the tag. Groups and tags
//! hold symbolic links into `snapshots/`, so each snapshot's tree is
//! reached by one path and its directories get one inode each.

use cairn_repo::{Id, SnapshotInfo};

/// One snapshot's directory under `snapshots/`.
#[derive(Clone, Debug)]
pub struct Snap {
    /// `2026-12-03T155013Z_1a2b3c4d`: time first so that `ls` sorts by it;
    /// no colons, which `scp`, `tar` and `rsync` read as a host.
    pub name: String,
    /// Root tree.
    pub root: Id,
    /// Backup start, ns since the epoch (the directory's times).
    pub time_ns: i64,
}

/// A directory of links into `snapshots/`: a group or a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkDir {
    /// Directory name (the group or tag, escaped).
    pub name: String,
    /// Entry names and the snapshot (index into [`Layout::snaps`]) each
    /// points to.
    pub links: Vec<(String, usize)>,
}

/// Everything above the trees.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Oldest first.
    pub snaps: Vec<Snap>,
    /// By name.
    pub groups: Vec<LinkDir>,
    /// By name.
    pub tags: Vec<LinkDir>,
}

/// The layout of `list` (any order).
pub fn layout(list: &[SnapshotInfo]) -> Layout {
    let mut list: Vec<&SnapshotInfo> = list.iter().collect();
    list.sort_by_key(|s| (s.envelope.time_ns, s.id));
    let snaps: Vec<Snap> = list
        .iter()
        .map(|s| Snap {
            name: format!("{}_{}", stamp(s.envelope.time_ns), &s.id.to_hex()[..8]),
            root: s.envelope.root,
            time_ns: s.envelope.time_ns,
        })
        .collect();
    let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    let mut tags: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, s) in list.iter().enumerate() {
        groups.entry(escape(&s.envelope.group)).or_default().push(i);
        for t in &s.envelope.tags {
            let v = tags.entry(escape(t)).or_default();
            if v.last() != Some(&i) {
                v.push(i);
            }
        }
    }
    let groups = groups
        .into_iter()
        .map(|(name, members)| {
            let mut links: Vec<(String, usize)> = Vec::with_capacity(members.len() + 1);
            let stamps: Vec<String> = members.iter().map(|&i| stamp(snaps[i].time_ns)).collect();
            let mut seen: std::collections::HashMap<&str, usize> = Default::default();
            for t in &stamps {
                *seen.entry(t).or_default() += 1;
            }
            for (t, &i) in stamps.iter().zip(&members) {
                // Two snapshots of one group in the same second: the ID
                // tells them apart.
                let name = if seen[t.as_str()] > 1 {
                    snaps[i].name.clone()
                } else {
                    t.clone()
                };
                links.push((name, i));
            }
            if let Some(&last) = members.last() {
                links.push(("latest".into(), last));
            }
            links.sort();
            LinkDir { name, links }
        })
        .collect();
    let tags = tags
        .into_iter()
        .map(|(name, members)| LinkDir {
            name,
            links: members
                .into_iter()
                .map(|i| (snaps[i].name.clone(), i))
                .collect(),
        })
        .collect();
    Layout {
        snaps,
        groups,
        tags,
    }
}

/// `2026-12-03T155013Z`: ISO 8601's basic time format, in UTC.
fn stamp(ns: i64) -> String {
    let t = jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.strftime("%Y-%m-%dT%H%M%SZ").to_string()
}

/// A group or tag as one directory name: `/` and `%` are written as
/// `%2F` and `%25`, an empty name as `%00`, and `.` and `..` with `%2E`,
/// so every name is a valid, distinct file name (`laptop:/home` becomes
/// `laptop:%2Fhome`).
pub fn escape(s: &str) -> String {
    if s.is_empty() {
        return "%00".into();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_format::snapshot::Envelope;

    fn snap(sec: i64, id: u8, group: &str, tags: &[&str]) -> SnapshotInfo {
        SnapshotInfo {
            id: Id([id; 32]),
            envelope: Envelope {
                time_ns: sec * 1_000_000_000,
                group: group.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                root: Id([id + 100; 32]),
                ..Envelope::default()
            },
        }
    }

    #[test]
    fn escaping_keeps_names_distinct_and_valid() {
        let names = [
            "laptop:/home",
            "a%2Fb",
            "a/b",
            "",
            ".",
            "..",
            "x\0y",
            "plain",
        ];
        let escaped: Vec<String> = names.iter().map(|n| escape(n)).collect();
        assert_eq!(escaped[0], "laptop:%2Fhome");
        assert_eq!(escaped[1], "a%252Fb");
        assert_eq!(escaped[2], "a%2Fb");
        assert_eq!(escaped[4], "%2E");
        assert_eq!(escaped[5], "%2E%2E");
        let set: std::collections::HashSet<_> = escaped.iter().collect();
        assert_eq!(set.len(), names.len());
        for e in &escaped {
            assert!(cairn_format::tree::valid_name(e.as_bytes()), "{e}");
        }
    }

    #[test]
    fn groups_tags_and_latest() {
        let list = [
            snap(1_700_000_100, 3, "nas:/srv", &["weekly"]),
            snap(1_700_000_000, 1, "laptop:/home", &["daily", "weekly"]),
            snap(1_700_000_000, 2, "laptop:/home", &[]),
        ];
        let l = layout(&list);
        assert_eq!(l.snaps.len(), 3);
        assert_eq!(l.snaps[0].name, "2023-11-14T221320Z_01010101");
        assert_eq!(l.snaps[2].name, "2023-11-14T221500Z_03030303");
        assert_eq!(l.snaps[2].root, Id([103; 32]));
        assert_eq!(
            l.groups,
            vec![
                LinkDir {
                    name: "laptop:%2Fhome".into(),
                    links: vec![
                        ("2023-11-14T221320Z_01010101".into(), 0),
                        ("2023-11-14T221320Z_02020202".into(), 1),
                        ("latest".into(), 1),
                    ],
                },
                LinkDir {
                    name: "nas:%2Fsrv".into(),
                    links: vec![("2023-11-14T221500Z".into(), 2), ("latest".into(), 2)],
                },
            ]
        );
        assert_eq!(l.tags.len(), 2);
        assert_eq!(l.tags[0].name, "daily");
        assert_eq!(l.tags[1].links.len(), 2);
    }

    #[test]
    fn a_group_of_many_snapshots_names_each_once() {
        // Hourly snapshots in pairs: the two of an even pair in the same
        // second, those of an odd pair a second apart.
        let list: Vec<SnapshotInfo> = (0..20_000i64)
            .map(|k| {
                let (h, second) = (k / 2, k % 2);
                let sec = 1_700_000_000 + h * 3600 + second * (h % 2);
                let mut s = snap(sec, 0, "nas:/srv", &[]);
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&k.to_le_bytes());
                s.id = Id(id);
                s
            })
            .collect();
        let l = layout(&list);
        let links = &l.groups[0].links;
        assert_eq!(links.len(), 20_001);
        let names: std::collections::HashSet<&str> =
            links.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), links.len(), "two links with one name");
        // Only the snapshots of a shared second are named with their ID.
        let with_id = links.iter().filter(|(n, _)| n.contains('_')).count();
        assert_eq!(with_id, 10_000);
    }
}
