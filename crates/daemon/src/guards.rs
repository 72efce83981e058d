//! Refusals before anything is written: a repository disk that is not
//! mounted, a source that is missing, empty or not on the filesystem it
//! should be, and (just before the commit) a snapshot that lost more of
//! the last one than the job allows.
//!
//! An unmounted disk looks like an empty directory on the root
//! filesystem; backing that up (or creating a repository there) is how
//! backups silently go wrong. Every check here fails closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_engine::shrink::{CommitGuard, Shrinkage};
use cairn_maint::units::human;

use crate::config::{Backup, MountRule};

/// The mount points of this machine, from `/proc/self/mountinfo`.
pub fn mount_points() -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo to check mounts: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect())
}

/// Mount points escape space, tab, newline and backslash in octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The nearest part of `path` that exists, resolved.
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    loop {
        if let Ok(c) = p.canonicalize() {
            return c;
        }
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
}

/// The mount point of the filesystem `path` (or its nearest existing
/// ancestor) is on.
pub fn mount_of(path: &Path, mounts: &[PathBuf]) -> PathBuf {
    let p = existing_ancestor(path);
    mounts
        .iter()
        .filter(|m| p.starts_with(m))
        .max_by_key(|m| m.components().count())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Checks that `path` is on the mount `rule` asks for; `what` names it
/// in the refusal ("repository nas", "source /srv/dropbox").
pub fn check_mount(path: &Path, rule: &MountRule, what: &str) -> Result<(), String> {
    let mounts = mount_points()?;
    let on = mount_of(path, &mounts);
    match rule {
        MountRule::NotRoot if on == Path::new("/") => Err(format!(
            "{what}: {} is not on a mounted filesystem of its own (it would be on /): is its disk mounted? Nothing was written",
            path.display()
        )),
        MountRule::At(m) if !mounts.iter().any(|x| x == m) => Err(format!(
            "{what}: {} is not mounted (require_mount = {:?}); nothing was written",
            m.display(),
            m.display().to_string()
        )),
        MountRule::At(m) if !existing_ancestor(path).starts_with(m) && on != *m => Err(format!(
            "{what}: {} is on {}, not on {}; nothing was written",
            path.display(),
            on.display(),
            m.display()
        )),
        _ => Ok(()),
    }
}

/// Checks the sources of a backup before it starts.
pub fn check_sources(b: &Backup) -> Result<(), String> {
    for p in &b.paths {
        // The mount first: an unmounted disk shows as an empty directory,
        // and the message should say what is really wrong.
        if let Some(rule) = &b.require_mount {
            check_mount(p, rule, &format!("source {}", p.display()))?;
        }
        let md = std::fs::symlink_metadata(p).map_err(|e| {
            format!(
                "source {} is missing ({e}); is its disk mounted? Nothing was written",
                p.display()
            )
        })?;
        if md.is_dir() {
            let mut rd = std::fs::read_dir(p)
                .map_err(|e| format!("source {} cannot be read: {e}", p.display()))?;
            if rd.next().is_none() {
                return Err(format!(
                    "source {} is empty: is its disk mounted, or did a sync client empty it? Nothing was written",
                    p.display()
                ));
            }
        }
        if let Some(m) = &b.marker {
            let marker = if m.is_absolute() {
                m.clone()
            } else {
                p.join(m)
            };
            if std::fs::symlink_metadata(&marker).is_err() {
                return Err(format!(
                    "source {}: the marker {} is missing, so this is not the filesystem the job expects; nothing was written",
                    p.display(),
                    marker.display()
                ));
            }
        }
    }
    Ok(())
}

/// The shrink guard of `job`: holds a snapshot back when more than
/// `limit` of the last snapshot's files or bytes vanished, unless the
/// run was approved.
pub fn shrink_guard(job: &str, limit: f64, approved: bool) -> CommitGuard {
    let job = job.to_string();
    CommitGuard(Arc::new(move |s: &Shrinkage| {
        if approved || s.share() <= limit {
            return Ok(());
        }
        Err(shrink_message(&job, limit, s))
    }))
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "0%".into()
    } else {
        format!("{:.0}%", a as f64 * 100.0 / b as f64)
    }
}

/// Why a snapshot was held back, in words.
pub fn shrink_message(job: &str, limit: f64, s: &Shrinkage) -> String {
    let mut m = format!(
        "held back: {} of the {} files ({}) and {} of the {} ({}) in the last snapshot are gone, more than max_vanished = {:.0}%",
        s.vanished_files,
        s.previous_files,
        pct(s.vanished_files, s.previous_files),
        human(s.vanished_bytes),
        human(s.previous_bytes),
        pct(s.vanished_bytes, s.previous_bytes),
        limit * 100.0
    );
    if !s.vanished_dirs.is_empty() {
        m.push_str(". Most vanished from: ");
        let dirs: Vec<String> = s
            .vanished_dirs
            .iter()
            .take(3)
            .map(|d| {
                format!(
                    "{} ({}{} files, {})",
                    d.path,
                    if d.gone { "gone: " } else { "" },
                    d.files,
                    human(d.bytes)
                )
            })
            .collect();
        m.push_str(&dirs.join(", "));
    }
    m.push_str(&format!(
        ". Nothing was committed and earlier snapshots are untouched. If this is intended, run `cairn approve {job}` and the next run goes through"
    ));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_and_matched() {
        let m = mount_points().unwrap();
        assert!(m.iter().any(|p| p == Path::new("/")));
        assert_eq!(
            mount_of(Path::new("/surely/not/here/at/all"), &m),
            mount_of(Path::new("/"), &m)
        );
        assert_eq!(unescape("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape("/a\\\\b"), "/a\\\\b");
        assert_eq!(unescape("/a\\134b"), "/a\\b");
        let e = check_mount(
            Path::new("/surely/not/mounted"),
            &MountRule::At("/surely/not".into()),
            "repository x",
        )
        .unwrap_err();
        assert!(e.contains("is not mounted"), "{e}");
    }

    #[test]
    fn missing_empty_and_unmarked_sources_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let mut b = Backup {
            paths: vec![src.clone()],
            ..Backup::default()
        };
        assert!(check_sources(&b).unwrap_err().contains("is missing"));
        std::fs::create_dir(&src).unwrap();
        assert!(check_sources(&b).unwrap_err().contains("is empty"));
        std::fs::write(src.join("f"), b"x").unwrap();
        check_sources(&b).unwrap();
        b.marker = Some(".cairn-source".into());
        assert!(check_sources(&b).unwrap_err().contains("marker"));
        std::fs::write(src.join(".cairn-source"), b"").unwrap();
        check_sources(&b).unwrap();
    }

    #[test]
    fn the_shrink_message_names_counts_and_directories() {
        let s = Shrinkage {
            previous_files: 1000,
            previous_bytes: 10 << 20,
            files: 700,
            bytes: 7 << 20,
            vanished_files: 300,
            vanished_bytes: 3 << 20,
            vanished_dirs: vec![cairn_engine::shrink::VanishedDir {
                path: "/home/me/Photos".into(),
                files: 300,
                bytes: 3 << 20,
                gone: true,
            }],
            exact: true,
        };
        let g = shrink_guard("home", 0.2, false);
        let m = (g.0)(&s).unwrap_err();
        assert!(m.contains("300 of the 1000 files (30%)"), "{m}");
        assert!(
            m.contains("/home/me/Photos (gone: 300 files, 3.0 MiB)"),
            "{m}"
        );
        assert!(m.contains("cairn approve home"), "{m}");
        assert!((shrink_guard("home", 0.2, true).0)(&s).is_ok());
        assert!((shrink_guard("home", 0.5, false).0)(&s).is_ok());
    }
}
