//! Verifying a repository.
//!
//! Without `--read-data`: every indexed pack exists with the indexed size,
//! every snapshot decodes, every tree reachable from a snapshot opens and
//! authenticates, and every blob they reference is indexed. With it: every
//! pack is read in full, its bytes must hash to its name, and every blob
//! in it must authenticate and hash to its ID. Damage is then traced to
//! each snapshot and path it affects.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cairn_format::Id;
use cairn_format::tree::NodeType;
use cairn_repo::{Location, Repo};
use cairn_storage::Kind;

use crate::archiver::Progress;
use crate::walk::join;
use crate::{Result, display_path};

/// Chooses the packs a data check reads.
pub type PackFilter = std::sync::Arc<dyn Fn(&Id) -> bool + Send + Sync>;

/// What to verify.
#[derive(Clone, Default)]
pub struct CheckOptions {
    /// Read and authenticate every blob.
    pub read_data: bool,
    /// Reader threads (0 = cores).
    pub threads: usize,
    /// With `read_data`, only the packs this accepts are read (a
    /// deterministic subset, so a repository is verified over many runs).
    pub only_packs: Option<PackFilter>,
    /// Also report what the keyless structural check finds (unreadable
    /// index files, missing, resized or unindexed packs); `false` when
    /// that check has run and reported them already.
    pub structure: bool,
}

impl std::fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckOptions")
            .field("read_data", &self.read_data)
            .field("threads", &self.threads)
            .field("subset", &self.only_packs.is_some())
            .field("structure", &self.structure)
            .finish()
    }
}

/// A path that damage makes unrestorable.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct Affected {
    /// Snapshot ID.
    pub snapshot: String,
    /// Path inside it.
    pub path: String,
    /// The damaged or missing blob.
    pub blob: String,
}

/// The outcome of a check.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Trees checked.
    pub trees: usize,
    /// Packs listed in the index.
    pub packs: usize,
    /// Packs read in full.
    pub packs_read: usize,
    /// Blobs authenticated.
    pub blobs_read: usize,
    /// Structural or data errors found.
    pub errors: Vec<String>,
    /// Harmless findings (packs left by interrupted runs).
    pub notes: Vec<String>,
    /// Damaged or missing blobs.
    pub damaged_blobs: Vec<String>,
    /// Paths that cannot be restored intact.
    pub affected: Vec<Affected>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the repository.
pub fn check(
    repo: &Repo,
    opts: &CheckOptions,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<CheckReport> {
    repo.require_owner("check contents")?;
    let mut rep = CheckReport::default();
    let mut damaged: HashMap<Id, String> = HashMap::new();
    if opts.structure {
        rep.errors.extend(repo.index_problems().iter().cloned());
    }

    // Packs: listed vs indexed.
    let listed: HashMap<Id, u64> = repo
        .storage()
        .list(Kind::Pack)?
        .into_iter()
        .filter_map(|o| Some((Id::from_hex(&o.name)?, o.size)))
        .collect();
    let index = repo.index();
    rep.packs = index.packs().len();
    let cmp = cairn_repo::compare_packs(index, &listed);
    let mut bad_packs: HashSet<u32> = HashSet::new();
    for &(pos, m) in &cmp.mismatched {
        if opts.structure {
            rep.errors.push(m.describe(index.pack(pos)));
        }
        bad_packs.insert(pos);
    }
    if opts.structure {
        for id in &cmp.unindexed {
            rep.notes.push(format!(
                "pack {id} is not indexed (left by an interrupted backup; the next backup indexes it)"
            ));
        }
    }
    let mut bad_copies: BadCopies = HashMap::new();
    if !bad_packs.is_empty() {
        let mut mark = |id: &Id, loc: &Location| {
            if bad_packs.contains(&loc.pack) {
                bad_copies.entry(*id).or_default().push((
                    loc.pack,
                    format!("in damaged pack {}", index.pack(loc.pack).id),
                ));
            }
        };
        index.scan(&mut mark)?;
        index.scan_other_copies(&mut mark);
    }

    // Data: read every pack in full.
    if opts.read_data {
        read_packs(
            repo,
            opts,
            progress,
            cancel,
            &bad_packs,
            &mut rep,
            &mut bad_copies,
        )?;
    }
    sort_copies(repo, bad_copies, &mut damaged, &mut rep.notes);

    // Snapshots and trees.
    let (snaps, bad) = Repo::list_snapshots(&**repo.storage())?;
    rep.errors.extend(bad);
    rep.snapshots = snaps.len();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut reader = repo.reader();
    for s in &snaps {
        if cancel.load(Ordering::Relaxed) {
            return Err(crate::Error::Interrupted);
        }
        let mut stack = vec![(s.envelope.root, b"/".to_vec())];
        while let Some((tree, path)) = stack.pop() {
            if !seen.insert(tree) {
                continue;
            }
            let t = match reader.load_tree(&tree) {
                Ok(t) => t,
                Err(e) if e.is_integrity() => {
                    damaged.entry(tree).or_insert_with(|| e.to_string());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            rep.trees += 1;
            for n in &t.nodes {
                let p = join(&path, &n.name);
                if let Some(sub) = n.subtree {
                    stack.push((sub, p));
                } else if n.node_type() == NodeType::File {
                    for id in &n.content {
                        if !index.contains(id) {
                            damaged
                                .entry(*id)
                                .or_insert_with(|| "missing from the index".into());
                        }
                    }
                }
            }
        }
    }

    if !damaged.is_empty() {
        let mut d: Vec<_> = damaged.iter().collect();
        d.sort();
        for (id, why) in d {
            rep.damaged_blobs.push(format!("{id}: {why}"));
        }
        rep.errors
            .push(format!("{} blobs are damaged or missing", damaged.len()));
        for s in &snaps {
            trace(repo, &s.envelope.root, &s.id, &damaged, &mut rep.affected);
        }
    }
    Ok(rep)
}

/// Damaged copies of blobs: the pack position of each, and what is wrong.
type BadCopies = HashMap<Id, Vec<(u32, String)>>;

/// A blob is damaged when every copy of it is. A damaged copy beside an
/// intact one loses nothing (readers fall back on the intact one), but
/// is worth a note: it is bit rot, or garbage a source of a server
/// stored under the ID of content it guessed (dedup poisoning).
fn sort_copies(
    repo: &Repo,
    bad: BadCopies,
    damaged: &mut HashMap<Id, String>,
    notes: &mut Vec<String>,
) {
    let index = repo.index();
    let mut bad: Vec<_> = bad.into_iter().collect();
    bad.sort_by_key(|b| b.0);
    for (id, fails) in bad {
        let packs: HashSet<u32> = fails.iter().map(|f| f.0).collect();
        let other = index
            .get(&id)
            .into_iter()
            .chain(index.other_copies(&id))
            .find(|l| !packs.contains(&l.pack));
        match other {
            Some(l) => {
                for (pack, why) in fails {
                    notes.push(format!(
                        "blob {id}: its copy in pack {} is damaged or forged ({why}); restores use its copy in pack {}",
                        index.pack(pack).id,
                        index.pack(l.pack).id
                    ));
                }
            }
            None => {
                damaged.entry(id).or_insert_with(|| fails[0].1.clone());
            }
        }
    }
}

/// Lists every path of snapshot `snap` that uses a damaged blob.
fn trace(
    repo: &Repo,
    root: &Id,
    snap: &Id,
    damaged: &HashMap<Id, String>,
    out: &mut Vec<Affected>,
) {
    let mut reader = repo.reader();
    let mut stack = vec![(*root, b"/".to_vec())];
    let mut add = |path: &[u8], blob: &Id| {
        out.push(Affected {
            snapshot: snap.to_hex(),
            path: display_path(path),
            blob: blob.to_hex(),
        })
    };
    while let Some((tree, path)) = stack.pop() {
        if damaged.contains_key(&tree) {
            add(&path, &tree);
            continue;
        }
        let Ok(t) = reader.load_tree(&tree) else {
            continue;
        };
        for n in &t.nodes {
            let p = join(&path, &n.name);
            if let Some(sub) = n.subtree {
                stack.push((sub, p));
            } else if let Some(bad) = n.content.iter().find(|id| damaged.contains_key(id)) {
                add(&p, bad);
            }
        }
    }
}

const WINDOW: u64 = 2 << 20;

/// Packs whose entries are gathered and checked together (a few MiB of
/// entries at most).
const PACKS_PER_ROUND: usize = 64;

/// Errors, damaged blobs, packs read, blobs authenticated.
type Found = (Vec<String>, Vec<(Id, u32, String)>, usize, usize);

fn read_packs(
    repo: &Repo,
    opts: &CheckOptions,
    progress: &Progress,
    cancel: &AtomicBool,
    bad_packs: &HashSet<u32>,
    rep: &mut CheckReport,
    bad_copies: &mut BadCopies,
) -> Result<()> {
    let index = repo.index();
    let threads = crate::threads(opts.threads);
    let found: Mutex<Found> = Mutex::new((Vec::new(), Vec::new(), 0, 0));
    let total = index.packs().len();
    // Packs are checked a round at a time, each round collecting the
    // entries of its packs in one pass over the index: memory holds the
    // entries of a round's packs, not of the whole repository.
    for first in (0..total).step_by(PACKS_PER_ROUND) {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let round = first..(first + PACKS_PER_ROUND).min(total);
        let mut by_pack: Vec<Vec<(Id, Location)>> = vec![Vec::new(); round.len()];
        let mut gather = |id: &Id, loc: &Location| {
            if round.contains(&(loc.pack as usize)) {
                by_pack[loc.pack as usize - first].push((*id, *loc));
            }
        };
        index.scan(&mut gather)?;
        index.scan_other_copies(&mut gather);
        for v in &mut by_pack {
            v.sort_by_key(|e| e.1.offset);
        }
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= by_pack.len() || cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = (first + k) as u32;
                        if bad_packs.contains(&i)
                            || opts
                                .only_packs
                                .as_ref()
                                .is_some_and(|f| !f(&index.pack(i).id))
                        {
                            continue;
                        }
                        let r = check_pack(repo, i, &by_pack[k], progress);
                        let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
                        f.0.extend(r.0);
                        f.1.extend(r.1.into_iter().map(|(id, why)| (id, i, why)));
                        f.2 += 1;
                        f.3 += r.2;
                    }
                });
            }
        });
    }
    let (errs, bad, packs, blobs) = found.into_inner().unwrap_or_else(|p| p.into_inner());
    rep.errors.extend(errs);
    for (id, pack, why) in bad {
        bad_copies.entry(id).or_default().push((pack, why));
    }
    rep.packs_read = packs;
    rep.blobs_read = blobs;
    Ok(())
}

/// Streams one pack: hashes all of it, authenticates every blob. Reads
/// go in windows cut at record boundaries, so one buffer of about
/// [`WINDOW`] (or one record, if larger) is all a thread holds.
fn check_pack(
    repo: &Repo,
    pos: u32,
    entries: &[(Id, Location)],
    progress: &Progress,
) -> (Vec<String>, Vec<(Id, String)>, usize) {
    let info = repo.index().pack(pos);
    let name = info.id.to_hex();
    let storage = repo.storage();
    let mut errors = Vec::new();
    let mut bad = Vec::new();
    let mut hasher = cairn_crypto::PlainHasher::new();
    let mut at = 0u64;
    let mut ei = 0;
    let mut ok_blobs = 0;
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    let mut plain = Vec::new();
    while at < info.size {
        // Extend the window over whole records while it stays small.
        let mut end = at;
        let mut last = ei;
        while last < entries.len() {
            let e = &entries[last].1;
            // Index entries are checked against their pack when loaded;
            // the sum is checked again so no entry can wrap it.
            let Some(e_end) = e.offset.checked_add(u64::from(e.length)) else {
                break;
            };
            if e.offset < at || e_end > info.size || (end > at && e_end - at > WINDOW) {
                break;
            }
            end = e_end;
            last += 1;
        }
        if last == ei {
            // No (more) records fit: read up to a window of what is left
            // (the trailer, or bytes the index does not describe).
            end = (at + WINDOW).min(info.size);
        }
        if let Err(e) =
            cairn_storage::read_exact_range(&**storage, Kind::Pack, &name, at, end - at, &mut buf)
        {
            errors.push(format!("pack {name}: {e}"));
            for (id, _) in &entries[ei..] {
                bad.push((*id, format!("unreadable pack {name}")));
            }
            return (errors, bad, ok_blobs);
        }
        hasher.update(&buf);
        for (id, loc) in &entries[ei..last] {
            let a = (loc.offset - at) as usize;
            let rec = &buf[a..a + loc.length as usize];
            match repo.decode_blob_into(id, loc, rec, &mut scratch, &mut plain) {
                Ok(_) => ok_blobs += 1,
                Err(e) => bad.push((*id, e.to_string())),
            }
        }
        progress.bytes.fetch_add(end - at, Ordering::Relaxed);
        ei = last;
        at = end;
        // Records that overlap what was already read are damaged indexes.
        while ei < entries.len() && entries[ei].1.offset < at {
            bad.push((
                entries[ei].0,
                format!("overlaps another blob in pack {name}"),
            ));
            ei += 1;
        }
    }
    for (id, _) in &entries[ei..] {
        bad.push((*id, format!("beyond the end of pack {name}")));
    }
    if Id(hasher.finalize()) != info.id {
        errors.push(format!(
            "pack {name}: contents do not match its name (bit rot or tampering)"
        ));
    }
    progress.files.fetch_add(1, Ordering::Relaxed);
    (errors, bad, ok_blobs)
}
