//! The keyless reading and writing of repository files: the config,
//! pack trailers and index files. A box, a prune and a check use these
//! without any key.

use cairn_format::Id;
use cairn_format::config::Config;
use cairn_format::index::{self, IndexPack};
use cairn_format::pack::{PACK_MAGIC, TAIL_FIXED, decode_trailer_at, trailer_len};
use cairn_storage::{Kind, Storage};

use crate::index::Index;
use crate::table::{TableBuilder, TableLimits};
use crate::{Error, Result};

/// Reads and decodes the config, without any key.
pub fn read_config(storage: &dyn Storage) -> Result<Config> {
    let data = match storage.get(Kind::Config, "config") {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Err(Error::NotARepository(storage.location())),
        Err(e) => return Err(e.into()),
    };
    Config::decode(&data).map_err(|e| match e {
        cairn_format::Error::UnsupportedVersion { .. } => Error::Format(e),
        e => Error::corrupt("config", e),
    })
}

/// Reads a pack's trailer from storage (two small range reads).
pub fn read_pack_trailer(storage: &dyn Storage, id: &Id, size: u64) -> Result<IndexPack> {
    let obj = || format!("pack {}", id.short());
    let min = (PACK_MAGIC.len() + TAIL_FIXED) as u64;
    if size < min {
        return Err(Error::corrupt(obj(), "shorter than an empty pack"));
    }
    let name = id.to_hex();
    let tail = cairn_storage::read_range(
        storage,
        Kind::Pack,
        &name,
        size - TAIL_FIXED as u64,
        TAIL_FIXED as u64,
    )?;
    let tl = u64::from(trailer_len(&tail).map_err(|e| Error::corrupt(obj(), e))?);
    if tl > size - min {
        return Err(Error::corrupt(obj(), "trailer length exceeds the pack"));
    }
    let start = size - TAIL_FIXED as u64 - tl;
    let body = cairn_storage::read_range(storage, Kind::Pack, &name, start, tl)?;
    let trailer = decode_trailer_at(&body, 0, body.len()).map_err(|e| Error::corrupt(obj(), e))?;
    trailer
        .check_layout(start)
        .map_err(|e| Error::corrupt(obj(), e))?;
    Ok(IndexPack {
        pack: *id,
        size,
        trailer,
    })
}

/// Reads, verifies against its name, and decodes one index file.
pub fn read_index_file(
    storage: &dyn Storage,
    name: &str,
) -> std::result::Result<Vec<IndexPack>, String> {
    let d = index_bytes(storage, name)?;
    index::decode(&d).map_err(|e| e.to_string())
}

/// An index file's bytes, checked against its name.
fn index_bytes(storage: &dyn Storage, name: &str) -> std::result::Result<Vec<u8>, String> {
    // An index file is named by the hash of its bytes: one that does not
    // match is damaged even if it still decodes, and is not used (the next
    // backup re-indexes its packs from their trailers).
    let d = storage.get(Kind::Index, name).map_err(|e| e.to_string())?;
    if Id(cairn_crypto::plain_hash(&d)).to_hex() != name {
        return Err("contents do not match its name (damaged); the next backup re-indexes its packs from their trailers".to_string());
    }
    Ok(d)
}

/// An index loaded in tiers, with what each index file lists.
pub struct LoadedIndex {
    /// The merged index.
    pub index: Index,
    /// Every index file read: its name and the packs it lists.
    pub files: Vec<(String, Vec<Id>)>,
    /// Index files that could not be read.
    pub problems: Vec<String>,
}

/// Loads every index file, and `extra` packs (read from trailers), adding
/// packs tier by tier: all packs of tier 0 first, then tier 1, and so on
/// below `tiers`. The first location of a blob wins, so a blob stored in
/// packs of several tiers is found in the lowest one: readers and writers
/// prefer a live copy to one in a condemned pack. Packs in tier 1 and
/// above are marked condemned. Each index file is decoded once per tier
/// it has packs in, never held longer than that.
pub fn load_index_tiered(
    storage: &dyn Storage,
    limits: TableLimits,
    tier: &dyn Fn(&Id) -> u8,
    tiers: u8,
    extra: &[IndexPack],
) -> Result<LoadedIndex> {
    let mut objs = storage.list(Kind::Index)?;
    // In name order, so every process meets the copies of a blob stored
    // twice in the same order, whatever order the storage lists in.
    objs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut index = Index::new();
    let mut b = TableBuilder::new(limits);
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut later: Vec<usize> = Vec::new();
    // Adds the packs of one index file that belong to tier `t`, decoding
    // it a pack at a time; returns every pack it lists.
    let add_file = |index: &mut Index,
                    b: &mut TableBuilder,
                    name: &str,
                    t: u8,
                    problems: &mut Vec<String>|
     -> Result<Option<(Vec<Id>, bool)>> {
        let bytes = match index_bytes(storage, name) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("index file {name}: {e}"));
                return Ok(None);
            }
        };
        let mut ids = Vec::new();
        let mut other_tiers = false;
        let mut failed: Option<Error> = None;
        let decoded = index::decode_each(&bytes, |p| {
            ids.push(p.pack);
            let pt = tier(&p.pack).min(tiers - 1);
            if pt != t {
                other_tiers = true;
                return Ok(());
            }
            let r = index.add_packs_bulk(b, std::slice::from_ref(&p));
            if t > 0 {
                index.condemn(&p.pack);
            }
            r.map_err(|e| {
                failed = Some(e);
                cairn_format::Error::Invalid {
                    what: "index file",
                    reason: "loading stopped".into(),
                }
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if let Err(e) = decoded {
            problems.push(format!("index file {name}: {e}"));
        }
        Ok(Some((ids, other_tiers)))
    };
    for obj in objs {
        if let Some((ids, other)) = add_file(&mut index, &mut b, &obj.name, 0, &mut problems)? {
            if other {
                later.push(files.len());
            }
            files.push((obj.name, ids));
        }
    }
    for t in 0..tiers {
        if t > 0 {
            for &f in &later {
                let name = files[f].0.clone();
                add_file(&mut index, &mut b, &name, t, &mut problems)?;
            }
        }
        let these: Vec<IndexPack> = extra
            .iter()
            .filter(|p| tier(&p.pack).min(tiers - 1) == t)
            .cloned()
            .collect();
        index.add_packs_bulk(&mut b, &these)?;
        if t > 0 {
            for p in &these {
                index.condemn(&p.pack);
            }
        }
    }
    index.finish_bulk(b)?;
    Ok(LoadedIndex {
        index,
        files,
        problems,
    })
}

/// Writes an index file for `packs`; its name is the hash of its bytes.
pub fn write_index_file(storage: &dyn Storage, packs: &[IndexPack]) -> Result<Id> {
    let bytes = index::encode(packs);
    let id = Id(cairn_crypto::plain_hash(&bytes));
    storage.put(Kind::Index, &id.to_hex(), &bytes)?;
    Ok(id)
}
