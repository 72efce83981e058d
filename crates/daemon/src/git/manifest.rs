//! What the mirrors directory holds, by the forge's stable repository
//! IDs: a rename is a new name under a known ID (the mirror directory
//! moves with it), a repository deleted upstream is an ID the forge no
//! longer lists (its mirror stays, marked). The file is part of every
//! snapshot of the mirrors, so `cairn git restore` finds a repository
//! by any name it ever had.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's file name in the mirrors directory.
pub const FILE: &str = "cairn-mirrors.json";

/// The whole manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// `github`, `gitlab`, `gitea`, `forgejo`.
    pub forge: String,
    /// The forge's web address.
    pub base_url: String,
    /// The owner mirrored.
    pub owner: String,
    /// One entry per repository ever mirrored.
    pub repos: Vec<Entry>,
}

/// One mirrored repository.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The forge's ID.
    pub id: u64,
    /// Its name now (or when it was last listed).
    pub name: String,
    /// Names it had before, oldest first.
    #[serde(default)]
    pub former_names: Vec<String>,
    /// The bare mirror, relative to the mirrors directory.
    pub dir: String,
    /// The wiki's mirror, when there is one.
    #[serde(default)]
    pub wiki_dir: Option<String>,
    /// When the forge stopped listing it (ns): deleted upstream.
    #[serde(default)]
    pub deleted_ns: Option<i64>,
    /// When it was last fetched successfully (ns).
    #[serde(default)]
    pub fetched_ns: Option<i64>,
    /// Its LFS objects are not all fetched yet: the next run tries again
    /// even when no ref moved.
    #[serde(default)]
    pub lfs_pending: bool,
    /// It has used Git LFS: its LFS objects are fetched whenever its refs
    /// move, whatever its `.gitattributes` says now.
    #[serde(default)]
    pub uses_lfs: bool,
}

impl Manifest {
    /// Reads the manifest in `root`; none yet is an empty one.
    pub fn load(root: &Path) -> Result<Manifest, String> {
        let path = root.join(FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                format!(
                    "{} is damaged ({e}); move it away and the next run rebuilds it from the forge",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
                version: 1,
                ..Manifest::default()
            }),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes it atomically (temporary file, fsync, rename).
    pub fn save(&self, root: &Path) -> Result<(), String> {
        use std::io::Write;
        let path = root.join(FILE);
        let tmp = root.join(format!("{FILE}.tmp"));
        let body = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(root)?.sync_all()
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The entry for a name: a repository that has it now first, then
    /// one deleted under it, then former names, then an ID given as
    /// digits (the way to a deleted repository whose name was taken).
    pub fn find(&self, name: &str) -> Option<&Entry> {
        let name = name.trim_end_matches(".git");
        self.repos
            .iter()
            .find(|e| e.name == name && e.deleted_ns.is_none())
            .or_else(|| self.repos.iter().find(|e| e.name == name))
            .or_else(|| {
                self.repos
                    .iter()
                    .rev()
                    .find(|e| e.former_names.iter().any(|n| n == name))
            })
            .or_else(|| {
                let id: u64 = name.parse().ok()?;
                self.repos.iter().find(|e| e.id == id)
            })
    }
}

/// The mirror directory for a name: `shop.git`, `team/shop.git`.
pub fn dir_for(name: &str) -> String {
    format!("{name}.git")
}

/// The wiki's directory for a name.
pub fn wiki_dir_for(name: &str) -> String {
    format!("{name}.wiki.git")
}

/// A free place for a deleted repository's mirror whose name a new
/// repository takes: `shop.deleted-123.git`.
pub fn aside(root: &Path, name: &str, id: u64) -> PathBuf {
    root.join(format!("{name}.deleted-{id}.git"))
}
