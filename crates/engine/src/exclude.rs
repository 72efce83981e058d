//! Which source entries a backup skips.
//!
//! Patterns follow gitignore rules, matched against absolute paths rooted
//! at `/`: `*.o` matches anywhere, `/home/*/.cache` is anchored, a trailing
//! `/` matches directories only, `!` re-includes.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::{Error, Result};

/// The CACHEDIR.TAG signature (https://bford.info/cachedir/).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Compiled exclude rules.
#[derive(Clone)]
pub struct Excluder {
    gi: Option<Gitignore>,
    caches: bool,
    patterns: Vec<String>,
}

impl Excluder {
    /// Compiles patterns given inline and in files.
    pub fn new(patterns: &[String], files: &[PathBuf], caches: bool) -> Result<Excluder> {
        let mut all: Vec<String> = patterns.to_vec();
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Error::Input(format!("cannot read exclude file {}: {e}", f.display()))
            })?;
            all.extend(
                text.lines()
                    .map(str::trim_end)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        let gi = if all.is_empty() {
            None
        } else {
            let mut b = GitignoreBuilder::new("/");
            for p in &all {
                b.add_line(None, p)
                    .map_err(|e| Error::Input(format!("invalid exclude pattern {p:?}: {e}")))?;
            }
            Some(
                b.build()
                    .map_err(|e| Error::Input(format!("invalid exclude patterns: {e}")))?,
            )
        };
        Ok(Excluder {
            gi,
            caches,
            patterns: all,
        })
    }

    /// Every pattern in effect, for the snapshot body.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `path` (absolute) is excluded by a pattern.
    pub fn excluded(&self, path: &Path, is_dir: bool) -> bool {
        self.gi
            .as_ref()
            .is_some_and(|gi| gi.matched(path, is_dir).is_ignore())
    }

    /// Whether a directory is a tagged cache whose contents are skipped.
    pub fn is_tagged_cache(&self, dir: &Path) -> bool {
        if !self.caches {
            return false;
        }
        use std::io::Read;
        let mut buf = [0u8; CACHEDIR_SIGNATURE.len()];
        std::fs::File::open(dir.join("CACHEDIR.TAG"))
            .and_then(|mut f| f.read_exact(&mut buf))
            .is_ok_and(|_| buf == CACHEDIR_SIGNATURE)
    }
}

/// Whether a glob pattern set matches a path or any of its parents; used by
/// restore's `--include`.
pub fn matches_or_parent(gi: &Gitignore, path: &Path, is_dir: bool) -> bool {
    gi.matched_path_or_any_parents(path, is_dir).is_ignore()
}

/// Compiles restore-side patterns.
pub fn compile(patterns: &[String]) -> Result<Option<Gitignore>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GitignoreBuilder::new("/");
    for p in patterns {
        b.add_line(None, p)
            .map_err(|e| Error::Input(format!("invalid pattern {p:?}: {e}")))?;
    }
    Ok(Some(b.build().map_err(|e| {
        Error::Input(format!("invalid patterns: {e}"))
    })?))
}
