//! A mirror out of a snapshot: `cairn git restore SNAP REPO DEST` gives
//! a bare repository that `git clone` accepts, with every preserved ref,
//! and `--push URL` sends all of it to a fresh remote.
//!
//! The snapshot holds the mirrors directory under its absolute path on
//! the machine that made it; the manifest inside says which directory is
//! which repository, under every name it ever had.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_engine::archiver::Progress;
use cairn_engine::restorer::{RestoreOptions, restore as restore_tree};
use cairn_format::id::Id;
use cairn_format::tree::NodeType;
use cairn_repo::Repo;

use super::manifest::{self, Entry, Manifest};

/// Longest manifest read out of a snapshot.
const MAX_MANIFEST: u64 = 64 << 20;
/// Deepest path searched for the mirrors directory.
const MAX_DEPTH: usize = 64;

/// The mirrors directory inside a snapshot.
pub struct Located {
    /// Its path in the snapshot (`/var/lib/cairn/git/github`).
    pub path: String,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Finds the mirrors directory: the snapshot of a git job holds one path,
/// so the way down is the chain of single directories that ends in the
/// one holding the manifest.
pub fn locate(repo: &Repo, root: Id) -> Result<Located, String> {
    let mut reader = repo.reader();
    let mut tree_id = root;
    let mut path = String::new();
    for _ in 0..MAX_DEPTH {
        let tree = reader.load_tree(&tree_id).map_err(|e| e.to_string())?;
        if let Some(m) = tree
            .nodes
            .iter()
            .find(|n| n.name == manifest::FILE.as_bytes() && n.node_type() == NodeType::File)
        {
            if m.size > MAX_MANIFEST {
                return Err(format!(
                    "{path}/{} is too large to be a manifest",
                    manifest::FILE
                ));
            }
            let mut body = Vec::with_capacity(m.size as usize);
            for c in &m.content {
                let (_, data) = reader.load(c).map_err(|e| e.to_string())?;
                body.extend_from_slice(&data);
                if body.len() as u64 > MAX_MANIFEST {
                    return Err(format!("{path}/{} is too large", manifest::FILE));
                }
            }
            let manifest: Manifest = serde_json::from_slice(&body)
                .map_err(|e| format!("{path}/{} is damaged: {e}", manifest::FILE))?;
            return Ok(Located {
                path: if path.is_empty() { "/".into() } else { path },
                manifest,
            });
        }
        let dirs: Vec<_> = tree
            .nodes
            .iter()
            .filter(|n| n.node_type() == NodeType::Dir)
            .collect();
        match dirs.as_slice() {
            [only] => {
                path.push('/');
                path.push_str(&String::from_utf8_lossy(&only.name));
                tree_id = only
                    .subtree
                    .ok_or_else(|| format!("{path}: a directory without a tree"))?;
            }
            _ => break,
        }
    }
    Err("this snapshot holds no git mirrors (no cairn-mirrors.json); pick one of group git:FORGE/OWNER".into())
}

/// What was restored.
pub struct Restored {
    /// The repository's entry in the manifest.
    pub entry: Entry,
    /// Branches, tags and preserved refs in the restored mirror.
    pub refs: usize,
    /// Of those, preserved old tips.
    pub preserved: usize,
}

/// Restores the mirror of `name` (current name, former name or forge ID)
/// into `dest`, which must be absent or empty.
pub fn restore(
    repo: &Repo,
    root: Id,
    name: &str,
    dest: &Path,
    progress: &Arc<Progress>,
    cancel: &Arc<AtomicBool>,
) -> Result<Restored, String> {
    if let Ok(mut rd) = std::fs::read_dir(dest)
        && rd.next().is_some()
    {
        return Err(format!(
            "{} is not empty; name a new directory for the restored repository",
            dest.display()
        ));
    }
    let loc = locate(repo, root)?;
    let entry = loc.manifest.find(name).cloned().ok_or_else(|| {
        let mut names: Vec<&str> = loc.manifest.repos.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        let shown = names
            .iter()
            .take(20)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "no repository {name:?} in this snapshot's mirrors of {}; it has: {shown}{}",
            loc.manifest.owner,
            if names.len() > 20 { ", …" } else { "" }
        )
    })?;
    let sub = format!("{}/{}", loc.path.trim_end_matches('/'), entry.dir);
    let opts = RestoreOptions {
        target: dest.to_path_buf(),
        subpath: Some(sub),
        includes: Vec::new(),
        excludes: Vec::new(),
        threads: 0,
        ..RestoreOptions::default()
    };
    let done = restore_tree(repo, root, &opts, progress, cancel).map_err(|e| e.to_string())?;
    if done.damaged_files > 0 {
        return Err(format!(
            "{} files of the mirror are damaged in the repository; run `cairn check --read-data`",
            done.damaged_files
        ));
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(dest)
        .args(["for-each-ref", "--format=%(refname)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the restored directory is not a git repository: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(Restored {
        entry,
        refs: text.lines().count(),
        preserved: text
            .lines()
            .filter(|l| l.starts_with(super::mirror::PRESERVED))
            .count(),
    })
}

/// Pushes every ref of the mirror at `dir`, preserved ones included, to
/// `url` (`git push --mirror`).
pub fn push(dir: &Path, url: &str) -> Result<(), String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["push", "--mirror", "--quiet", "--", url])
        .stdin(Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git push --mirror to {url} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
