//! An in-memory store for tests of the layers above.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Error, Kind, ObjectInfo, Result, Storage, valid_name};

/// Objects kept in a map; staging goes to a private temp directory.
#[derive(Debug)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<(Kind, String), Vec<u8>>>,
    staging: PathBuf,
}

impl MemoryStorage {
    /// A new empty store staging files under `staging`.
    pub fn new(staging: impl Into<PathBuf>) -> Self {
        MemoryStorage {
            objects: Mutex::new(BTreeMap::new()),
            staging: staging.into(),
        }
    }

    /// Refuses the names a directory would (so the layers above meet the
    /// same rules in tests as in use).
    fn check(kind: Kind, name: &str) -> Result<()> {
        if kind == Kind::Config || valid_name(name) {
            Ok(())
        } else {
            Err(Error::InvalidName(name.to_string()))
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Kind, String), Vec<u8>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn location(&self) -> String {
        "memory".into()
    }
    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        Self::check(kind, name)?;
        self.map()
            .get(&(kind, name.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind,
                name: name.into(),
                location: "memory".into(),
            })
    }
    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let v = self.get(kind, name)?;
        let end = offset.checked_add(len).filter(|&e| e <= v.len() as u64);
        match end {
            Some(e) => Ok(v[offset as usize..e as usize].to_vec()),
            None => Err(Error::Short {
                kind,
                name: name.into(),
            }),
        }
    }
    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        Ok(self.get(kind, name)?.len() as u64)
    }
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        Self::check(kind, name)?;
        let mut m = self.map();
        let key = (kind, name.to_string());
        if m.contains_key(&key) {
            if kind.content_addressed() {
                return Ok(());
            }
            return Err(Error::AlreadyExists {
                kind,
                name: name.into(),
            });
        }
        m.insert(key, data.to_vec());
        Ok(())
    }
    fn put_file(&self, kind: Kind, name: &str, file: &Path) -> Result<()> {
        let data = std::fs::read(file).map_err(|e| Error::io("read", file, e))?;
        let _ = std::fs::remove_file(file);
        self.put(kind, name, &data)
    }
    fn list(&self, kind: Kind) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .map()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), v)| ObjectInfo {
                name: n.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
    fn delete(&self, kind: Kind, name: &str) -> Result<()> {
        Self::check(kind, name)?;
        self.map().remove(&(kind, name.to_string()));
        Ok(())
    }
    fn staging_dir(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.staging)
            .map_err(|e| Error::io("create directory", &self.staging, e))?;
        Ok(self.staging.clone())
    }
}
