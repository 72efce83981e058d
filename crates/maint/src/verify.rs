//! The structural check, without any key.
//!
//! Everything a repository promises in plaintext is checked here: every
//! object is named by the hash of its bytes, every envelope and record
//! decodes, every pack the index lists is there with the size and the
//! trailer the index copied, and every blob a snapshot reaches through the
//! visible edges is indexed. It reads pack trailers and tree record
//! headers, and (unless told not to) every pack's bytes to compare them
//! with its name: bit rot is found without a key. Decrypting and
//! authenticating contents is `cairn check --read-data`, with the owner key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_format::Id;
use cairn_format::maint::{Lease, Protection};
use cairn_storage::{Kind, Storage};
use cairn_store::garbage::read_garbage;
use cairn_store::{
    TableLimits, load_index_tiered, read_config, read_index_file, read_pack_trailer,
};

use crate::Result;
use crate::graph::{
    OnDamage, Trust, pack_tags, read_origins, snapshot_trusts, trust_of, walk_trusted, walk_with,
};

/// A deterministic part of the packs, so a repository can be verified a
/// slice at a time (`1/10` then `2/10` … covers everything once).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Slice `k` of `n` (1-based): packs whose name, as a number, is `k-1`
    /// modulo `n`.
    Part {
        /// Which slice, 1..=n.
        k: u32,
        /// How many slices.
        n: u32,
    },
    /// This share of the packs, by the leading bits of their names.
    Share(f64),
}

impl Subset {
    /// Parses `3/10` or `5%`.
    pub fn parse(s: &str) -> std::result::Result<Subset, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a share like 5%"))?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(format!(
                    "{s:?}: the share must be above 0% and at most 100%"
                ));
            }
            return Ok(Subset::Share(v / 100.0));
        }
        let (k, n) = t
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a subset like 1/10 or 5%"))?;
        let k: u32 = k
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: bad slice number"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: bad slice count"))?;
        if n == 0 || k == 0 || k > n {
            return Err(format!(
                "{s:?}: the slice must be between 1/{n} and {n}/{n}"
            ));
        }
        Ok(Subset::Part { k, n })
    }

    /// Whether the pack named `id` is in the subset.
    pub fn contains(&self, id: &Id) -> bool {
        let x = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        match *self {
            Subset::Part { k, n } => x % u64::from(n) == u64::from(k - 1),
            Subset::Share(f) => (x as f64) < f * (u64::MAX as f64),
        }
    }
}

/// How the check runs.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Read every pack (or the subset's) and compare it with its name.
    pub hash_packs: bool,
    /// Only these packs are read in full.
    pub subset: Option<Subset>,
    /// Reader threads for hashing (0: two).
    pub threads: usize,
    /// Index memory limits.
    pub limits: TableLimits,
}

/// What the check found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Trees walked through their record headers.
    pub trees: u64,
    /// Distinct blobs the snapshots reach.
    pub blobs_reached: usize,
    /// Packs the index lists.
    pub packs: usize,
    /// Packs read in full and compared with their names.
    pub packs_hashed: usize,
    /// Bytes read doing that.
    pub bytes_hashed: u64,
    /// Damage: anything here is an integrity problem.
    pub errors: Vec<String>,
    /// Things worth knowing that are not damage.
    pub notes: Vec<String>,
    /// Snapshots that need damaged or missing data, with why.
    pub affected_snapshots: BTreeMap<String, Vec<String>>,
}

impl VerifyReport {
    /// Whether nothing is damaged.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Runs the structural check.
pub fn verify(storage: &dyn Storage, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut rep = VerifyReport::default();
    read_config(storage)?;

    // Snapshots: name, envelope.
    let mut snaps = Vec::new();
    for o in storage.list(Kind::Snapshot)? {
        let Some(id) = Id::from_hex(&o.name) else {
            continue;
        };
        let data = match storage.get(Kind::Snapshot, &o.name) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                rep.errors.push(format!("snapshot {}: {e}", id.short()));
                continue;
            }
        };
        if Id(cairn_crypto::plain_hash(&data)) != id {
            rep.errors.push(format!(
                "snapshot {}: contents do not match its name (damaged)",
                id.short()
            ));
            continue;
        }
        match cairn_format::snapshot::decode(&data) {
            Ok(f) => snaps.push((id, f.envelope)),
            Err(e) => rep.errors.push(format!("snapshot {}: {e}", id.short())),
        }
    }
    rep.snapshots = snaps.len();

    // Maintenance records.
    let mut condemned: HashMap<Id, i64> = HashMap::new();
    for r in read_garbage(storage)? {
        match r.record {
            Ok(g) => {
                for p in g.packs {
                    condemned.insert(p, g.not_before_ns);
                }
            }
            Err(e) => rep.notes.push(format!(
                "garbage record {}: {e}; it condemns nothing and the next prune removes it",
                &r.name[..8.min(r.name.len())]
            )),
        }
    }
    for o in storage.list(Kind::Lock)? {
        if let Ok(d) = storage.get(Kind::Lock, &o.name)
            && Lease::decode(&d).is_err()
        {
            rep.notes.push(format!(
                "lease {}: cannot be read; the next prune takes it over",
                o.name
            ));
        }
    }
    for o in storage.list(Kind::Protect)? {
        if let Ok(d) = storage.get(Kind::Protect, &o.name)
            && let Err(e) = Protection::decode(&d)
        {
            rep.notes.push(format!(
                "protection mark {}: {e}; it still protects its snapshot",
                &o.name[..8.min(o.name.len())]
            ));
        }
    }

    // Index files, and packs against them.
    let tier = |p: &Id| u8::from(condemned.contains_key(p));
    let loaded = load_index_tiered(storage, opts.limits.clone(), &tier, 2, &[])?;
    rep.errors.extend(loaded.problems.iter().cloned());
    let index = loaded.index;
    rep.packs = index.packs().len();
    let listing: HashMap<Id, u64> = storage
        .list(Kind::Pack)?
        .into_iter()
        .filter_map(|o| Id::from_hex(&o.name).map(|id| (id, o.size)))
        .collect();
    let mut bad_packs: BTreeSet<Id> = BTreeSet::new();
    let cmp = cairn_store::compare_packs(&index, &listing);
    for &(pos, m) in &cmp.mismatched {
        let p = index.pack(pos);
        let collected = m == cairn_store::PackMismatch::Missing
            && condemned
                .get(&p.id)
                .is_some_and(|&t| t <= cairn_store::now_ns());
        if collected {
            rep.notes.push(format!(
                "pack {} was deleted as garbage before its index was rewritten; the next prune finishes that",
                p.id.short()
            ));
        } else {
            rep.errors.push(m.describe(p));
            bad_packs.insert(p.id);
        }
    }
    if !cmp.unindexed.is_empty() {
        rep.notes.push(format!(
            "{} packs are not indexed (left by an interrupted backup; the next backup indexes them)",
            cmp.unindexed.len()
        ));
    }
    // Every index file's copy of a trailer equals the pack's own.
    let mut trailers_checked: BTreeSet<Id> = BTreeSet::new();
    for (name, _) in &loaded.files {
        let Ok(packs) = read_index_file(storage, name) else {
            continue;
        };
        for ip in packs {
            let Some(&size) = listing.get(&ip.pack) else {
                continue;
            };
            if bad_packs.contains(&ip.pack) || size != ip.size {
                continue;
            }
            match read_pack_trailer(storage, &ip.pack, size) {
                Ok(own) if own.trailer == ip.trailer => {
                    trailers_checked.insert(ip.pack);
                }
                Ok(_) => {
                    rep.errors.push(format!(
                        "pack {}: its trailer differs from the copy in index file {}",
                        ip.pack,
                        &name[..8]
                    ));
                    bad_packs.insert(ip.pack);
                }
                Err(e) => {
                    rep.errors.push(format!("pack {}: {e}", ip.pack));
                    bad_packs.insert(ip.pack);
                }
            }
        }
    }

    // Every pack's bytes against its name.
    if opts.hash_packs {
        let todo: Vec<(Id, u64)> = index
            .packs()
            .iter()
            .filter(|p| listing.contains_key(&p.id) && !bad_packs.contains(&p.id))
            .filter(|p| opts.subset.is_none_or(|s| s.contains(&p.id)))
            .map(|p| (p.id, p.size))
            .collect();
        let next = AtomicUsize::new(0);
        let found: Mutex<(Vec<Id>, u64, usize)> = Mutex::new((Vec::new(), 0, 0));
        let threads = if opts.threads == 0 { 2 } else { opts.threads };
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(id, size)) = todo.get(i) else {
                            return;
                        };
                        let ok = hash_pack(storage, &id, size, &mut buf);
                        let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
                        if !ok {
                            f.0.push(id);
                        }
                        f.1 += size;
                        f.2 += 1;
                    }
                });
            }
        });
        let (bad, bytes, n) = found.into_inner().unwrap_or_else(|p| p.into_inner());
        rep.bytes_hashed = bytes;
        rep.packs_hashed = n;
        for id in bad {
            rep.errors.push(format!(
                "pack {id}: contents do not match its name (bit rot or tampering)"
            ));
            bad_packs.insert(id);
        }
    }

    // References, snapshot by snapshot, so damage names its snapshots.
    let mut damage: Vec<(String, String)> = Vec::new();
    let mut record = |what: &str, _id: &Id, why: String| damage.push((what.to_string(), why));
    // Each snapshot with the copies its sender could have used, as prune
    // walks it: a source's forgeries are not damage in anyone else's.
    let tags = pack_tags(&index, &read_origins(storage)?);
    let trusts = snapshot_trusts(storage)?;
    let roots: Vec<(Id, String)> = snaps
        .iter()
        .map(|(id, e)| (e.root, format!("snapshot {}", id.short())))
        .collect();
    let trusted: Vec<(Id, String, Trust)> = snaps
        .iter()
        .zip(&roots)
        .map(|((id, _), (root, what))| (*root, what.clone(), trust_of(&trusts, id)))
        .collect();
    let reach = walk_trusted(
        storage,
        &index,
        &trusted,
        &tags,
        &mut || Ok(()),
        OnDamage::Record(&mut record),
    )?;
    rep.trees = reach.trees;
    rep.blobs_reached = reach.blobs.len();
    for (what, why) in damage {
        rep.errors.push(format!("{what}: {why}"));
        rep.affected_snapshots.entry(what).or_default().push(why);
    }
    if !bad_packs.is_empty() {
        let bad_pos: BTreeSet<u32> = bad_packs.iter().filter_map(|p| index.pack_pos(p)).collect();
        for (root, what) in &roots {
            let one = [(*root, what.clone())];
            let mut ignore = |_: &str, _: &Id, _: String| {};
            let r = walk_with(
                storage,
                &index,
                &one,
                &mut || Ok(()),
                OnDamage::Record(&mut ignore),
            )?;
            let mut hit = BTreeSet::new();
            index.scan_ranked(|rank, _, l| {
                if bad_pos.contains(&l.pack) && r.blobs.contains(rank) {
                    hit.insert(index.pack(l.pack).id.short());
                }
            })?;
            for p in hit {
                rep.affected_snapshots
                    .entry(what.clone())
                    .or_default()
                    .push(format!("needs blobs in damaged pack {p}"));
            }
        }
    }
    Ok(rep)
}

/// Reads a pack in windows and compares its BLAKE3 with its name.
pub(crate) fn hash_pack(storage: &dyn Storage, id: &Id, size: u64, buf: &mut Vec<u8>) -> bool {
    const WINDOW: u64 = 4 << 20;
    let name = id.to_hex();
    let mut h = cairn_crypto::PlainHasher::new();
    let mut at = 0;
    while at < size {
        let n = WINDOW.min(size - at);
        if cairn_storage::read_exact_range(storage, Kind::Pack, &name, at, n, buf).is_err() {
            return false;
        }
        h.update(buf);
        at += n;
    }
    Id(h.finalize()) == *id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_parse_and_cover_everything_once() {
        assert_eq!(Subset::parse("3/10"), Ok(Subset::Part { k: 3, n: 10 }));
        assert_eq!(Subset::parse("5%"), Ok(Subset::Share(0.05)));
        for bad in ["0/10", "11/10", "1/0", "0%", "150%", "x", "1-10"] {
            assert!(Subset::parse(bad).is_err(), "{bad}");
        }
        let ids: Vec<Id> = (0..1000u32)
            .map(|i| Id(cairn_crypto::plain_hash(&i.to_le_bytes())))
            .collect();
        for id in &ids {
            let hits = (1..=10)
                .filter(|&k| Subset::Part { k, n: 10 }.contains(id))
                .count();
            assert_eq!(hits, 1);
        }
        let share = ids
            .iter()
            .filter(|i| Subset::Share(0.2).contains(i))
            .count();
        assert!((150..250).contains(&share), "{share}");
        assert!(ids.iter().all(|i| Subset::Share(1.0).contains(i)));
    }
}
