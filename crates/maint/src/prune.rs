//! Garbage collection in two phases, without any key.
//!
//! A run first *sweeps*: packs listed in garbage records whose
//! `not_before` has passed are deleted, unless a snapshot needs one of
//! their blobs by now (a backup that was running when they were condemned
//! may have deduplicated against them and committed since), in which case
//! they are rescued. Then it *marks*: packs no snapshot needs are listed
//! in a new garbage record, and packs whose unused share is above
//! `max_unused` are repacked (their needed records copied verbatim into
//! new packs, so no key is needed) and listed too. Nothing is deleted in
//! the run that condemns it, and backups never deduplicate against a
//! condemned pack, so a backup that runs concurrently never loses data
//! (`docs/format.md`, "Garbage collection").
//!
//! Deletions only ever follow a listing that is consistent: every
//! snapshot readable, every index file readable, every pack an index
//! lists present with its size, every referenced blob indexed. Anything
//! else stops the run before it deletes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_format::Id;
use cairn_format::index::IndexPack;
use cairn_format::maint::Garbage;
use cairn_storage::{Kind, Storage};
use cairn_store::garbage::{read_garbage, write_garbage};
use cairn_store::{
    LoadedIndex, PackSink, SealedBlob, TableLimits, list_snapshots, load_index_tiered, now_ns,
    read_index_file, read_pack_trailer, write_index_file,
};

use crate::graph::{
    OnDamage, Reach, Trust, pack_tags, read_origins, snapshot_trusts, trust_of, walk_trusted,
};
use crate::lease::LeaseGuard;
use crate::{Error, Result};

/// How a prune runs.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// How long condemned packs wait before deletion: longer than any
    /// backup runs. A backup still running after it refuses to commit.
    pub grace: Duration,
    /// Repack a pack when more than this share of its records is unused.
    pub max_unused: f64,
    /// Report only; write and delete nothing, take no lease.
    pub dry_run: bool,
    /// Lifetime of the prune lease between renewals.
    pub lease_ttl: Duration,
    /// Who runs it, for the lease and garbage records.
    pub holder: String,
    /// Index memory limits.
    pub limits: TableLimits,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(6 * 3600),
            max_unused: 0.10,
            dry_run: false,
            lease_ttl: Duration::from_secs(600),
            holder: String::new(),
            limits: TableLimits::default(),
        }
    }
}

/// Condemned packs not yet due.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Pending {
    /// Garbage record name.
    pub record: String,
    /// Packs it lists that still exist.
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// When they may be deleted, ns since the epoch.
    pub not_before_ns: i64,
}

/// What a prune found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots whose blobs were kept.
    pub snapshots: usize,
    /// Distinct blobs indexed.
    pub blobs: u64,
    /// Of which a snapshot needs.
    pub blobs_used: u64,
    /// Packs in the repository.
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of records a snapshot needs.
    pub bytes_used: u64,
    /// Packs no index lists, left alone (a backup still writing, or one
    /// that crashed: the next backup indexes them).
    pub unindexed_packs: usize,
    /// Packs deleted by this run's sweep.
    pub deleted_packs: usize,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Condemned packs kept because a snapshot needs them now.
    pub rescued_packs: usize,
    /// Index files replaced because they listed deleted packs.
    pub index_files_rewritten: usize,
    /// Packs this run condemned.
    pub condemned_packs: usize,
    /// Their bytes.
    pub condemned_bytes: u64,
    /// Of the condemned packs, those repacked first.
    pub repacked_packs: usize,
    /// Bytes written into new packs by repacking.
    pub repack_bytes_written: u64,
    /// Packs skipped because their bytes do not match their name.
    pub damaged_packs: Vec<String>,
    /// Garbage records that could not be read (and were removed).
    pub damaged_records: usize,
    /// Condemned packs waiting for their grace period, this run's included.
    pub pending: Vec<Pending>,
    /// The run was a dry run.
    pub dry_run: bool,
}

/// Runs a prune. With a grace period of zero, every garbage record is
/// due, and what this run condemns is swept at once by a second pass:
/// safe only when no backup is running (one that started before and used
/// those packs refuses to commit, because they are gone).
pub fn prune(storage: Arc<dyn Storage>, opts: &PruneOptions) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&opts.max_unused) {
        return Err(Error::Input(
            "--max-unused must be a share between 0% and 100%".into(),
        ));
    }
    // A newer minor version may add objects that keep blobs alive, or
    // copies that must not be merged: a prune that does not know them
    // could delete what a snapshot needs.
    let config = cairn_store::read_config(&*storage)?;
    if config.minor > cairn_format::FORMAT_MINOR {
        return Err(Error::Input(format!(
            "the repository is format {}.{}, newer than this build's {}.{}: an older prune could delete what newer writers rely on; upgrade cairn",
            config.major,
            config.minor,
            cairn_format::FORMAT_MAJOR,
            cairn_format::FORMAT_MINOR
        )));
    }
    let mut lease = if opts.dry_run {
        None
    } else {
        Some(LeaseGuard::acquire(
            storage.clone(),
            "prune",
            &opts.holder,
            opts.lease_ttl,
        )?)
    };
    let mut report = run(&storage, opts, &mut lease)?;
    if opts.grace.is_zero() && !opts.dry_run && report.condemned_packs > 0 {
        let second = run(&storage, opts, &mut lease)?;
        report.deleted_packs += second.deleted_packs;
        report.deleted_bytes += second.deleted_bytes;
        report.rescued_packs += second.rescued_packs;
        report.index_files_rewritten += second.index_files_rewritten;
        report.pending = second.pending;
    }
    if let Some(l) = lease {
        l.release()?;
    }
    report.dry_run = opts.dry_run;
    Ok(report)
}

fn ensure(lease: &mut Option<LeaseGuard>) -> Result<()> {
    match lease {
        Some(l) => l.ensure(),
        None => Ok(()),
    }
}

/// Tier of a pack in the index: live, condemned but not due, due.
const LIVE: u8 = 0;
const PENDING: u8 = 1;
const DUE: u8 = 2;

/// Bytes of a pack that are not records: magic, trailer, tail. Entries
/// cost at most 1 + 32 + 10 + 5 + 5 bytes each.
fn overhead(blobs: u32) -> u64 {
    8 + 1 + 16 + 104 + 10 + u64::from(blobs) * 53 + 12
}

fn run(
    storage: &Arc<dyn Storage>,
    opts: &PruneOptions,
    lease: &mut Option<LeaseGuard>,
) -> Result<PruneReport> {
    let st: &dyn Storage = &**storage;
    let mut report = PruneReport::default();
    let now = now_ns();

    // Garbage records: what is due, what is pending.
    let mut tiers: HashMap<Id, u8> = HashMap::new();
    let mut due_records = Vec::new();
    let mut pending_records = Vec::new();
    for r in read_garbage(st)? {
        match r.record {
            // A grace period of zero asserts that no backup is running:
            // every record is due, whatever grace it was written with.
            Ok(g) if g.not_before_ns <= now || opts.grace.is_zero() => {
                for p in &g.packs {
                    tiers.insert(*p, DUE);
                }
                due_records.push((r.name, g));
            }
            Ok(g) => pending_records.push((r.name, g)),
            Err(_) => {
                report.damaged_records += 1;
                if !opts.dry_run {
                    ensure(lease)?;
                    st.delete(Kind::Garbage, &r.name)?;
                }
            }
        }
    }
    for (_, g) in &pending_records {
        for p in &g.packs {
            tiers.entry(*p).or_insert(PENDING);
        }
    }

    let (snaps, bad) = list_snapshots(st)?;
    if let Some(b) = bad.first() {
        return Err(Error::Untrusted(format!(
            "{b}: what it references cannot be known"
        )));
    }
    report.snapshots = snaps.len();

    let tier = |p: &Id| tiers.get(p).copied().unwrap_or(LIVE);
    let loaded = load_index_tiered(st, opts.limits.clone(), &tier, 3, &[])?;
    if let Some(p) = loaded.problems.first() {
        return Err(Error::Untrusted(p.clone()));
    }
    // Packs are listed after the index files are read: a pack is durable
    // before any index file lists it, so every pack the index loaded
    // lists is in this listing unless it is lost. Listed before, a pack
    // a backup published in between would look lost.
    let listing: HashMap<Id, u64> = st
        .list(Kind::Pack)?
        .into_iter()
        .filter_map(|o| Id::from_hex(&o.name).map(|id| (id, o.size)))
        .collect();
    // Packs no index lists belong to a backup still writing (it indexes
    // them before its snapshot) or to one that crashed (the next backup
    // indexes them). Either way they are left alone: condemning a pack
    // that a running backup is about to index would leave that index
    // listing a deleted pack.
    report.unindexed_packs = listing
        .keys()
        .filter(|id| !loaded.index.has_pack(id))
        .count();
    let LoadedIndex { index, files, .. } = loaded;
    for p in index.packs() {
        match listing.get(&p.id) {
            Some(&size) if size == p.size => {}
            Some(&size) => {
                return Err(Error::Untrusted(format!(
                    "pack {} is {size} bytes, but the index says {}",
                    p.id.short(),
                    p.size
                )));
            }
            // Deleted by an interrupted sweep before it replaced the index.
            None if tier(&p.id) == DUE => {}
            None => {
                return Err(Error::Untrusted(format!(
                    "the index lists pack {} that the storage does not list (a lost pack, or a listing that came back short)",
                    p.id.short()
                )));
            }
        }
    }

    // What the snapshots need.
    // A source's snapshot needs only copies its sender could have
    // stored or deduplicated against: garbage another source stored
    // under the same IDs is neither followed nor kept for it.
    let origins = read_origins(st)?;
    let tags = pack_tags(&index, &origins);
    let trusts = snapshot_trusts(st)?;
    let roots: Vec<(Id, String, Trust)> = snaps
        .iter()
        .map(|s| {
            (
                s.envelope.root,
                format!("snapshot {}", s.id.short()),
                trust_of(&trusts, &s.id),
            )
        })
        .collect();
    let reach: Reach = walk_trusted(
        st,
        &index,
        &roots,
        &tags,
        &mut || ensure(lease),
        OnDamage::Stop,
    )?;
    let mut used = vec![0u64; index.packs().len()];
    index.scan_ranked(|r, _, l| {
        if reach.kept.primary.contains(r) {
            used[l.pack as usize] += u64::from(l.length);
        }
    })?;
    for (&(pack, _), &len) in &reach.kept.others {
        used[pack as usize] += u64::from(len);
    }
    report.blobs = index.ranked_len() as u64;
    report.blobs_used = reach.blobs.len() as u64;
    report.packs = listing.len();
    report.bytes = listing.values().sum();
    report.bytes_used = used.iter().sum();

    // Sweep.
    let mut delete: HashSet<Id> = HashSet::new();
    for (pos, p) in index.packs().iter().enumerate() {
        if tier(&p.id) != DUE || !listing.contains_key(&p.id) {
            continue;
        }
        if used[pos] > 0 {
            report.rescued_packs += 1;
        } else {
            delete.insert(p.id);
            report.deleted_packs += 1;
            report.deleted_bytes += p.size;
        }
    }
    if !opts.dry_run {
        sweep(st, lease, &files, &delete, &mut report)?;
        for (name, _) in &due_records {
            st.delete(Kind::Garbage, name)?;
        }
    }

    // Mark.
    let mut condemn: Vec<Id> = Vec::new();
    let mut repack: Vec<u32> = Vec::new();
    for (pos, p) in index.packs().iter().enumerate() {
        if tier(&p.id) != LIVE {
            continue;
        }
        let records = p.size.saturating_sub(overhead(p.blobs)).max(1);
        let u = used[pos];
        if u == 0 {
            condemn.push(p.id);
        } else if (records.saturating_sub(u)) as f64 / records as f64 > opts.max_unused {
            repack.push(pos as u32);
        }
    }
    let mut repacked = if opts.dry_run {
        report.repacked_packs = repack.len();
        repack
            .iter()
            .map(|&pos| index.pack(pos).id)
            .collect::<Vec<Id>>()
    } else {
        let ctx = RepackCtx {
            index: &index,
            reach: &reach,
            origins: &origins,
        };
        repack_packs(storage, lease, &ctx, &repack, &mut report)?
    };
    condemn.append(&mut repacked);
    report.condemned_packs = condemn.len();
    report.condemned_bytes = condemn.iter().filter_map(|p| listing.get(p)).sum();

    let grace_ns = i64::try_from(opts.grace.as_nanos()).unwrap_or(i64::MAX / 4);
    if !condemn.is_empty() && !opts.dry_run {
        ensure(lease)?;
        let g = Garbage {
            created_ns: now_ns(),
            not_before_ns: now_ns().saturating_add(grace_ns),
            holder: opts.holder.clone(),
            packs: condemn.clone(),
        };
        let name = write_garbage(st, &g)?;
        pending_records.push((name, g));
    } else if !condemn.is_empty() {
        pending_records.push((
            "(dry run)".into(),
            Garbage {
                not_before_ns: now.saturating_add(grace_ns),
                packs: condemn,
                ..Garbage::default()
            },
        ));
    }
    for (name, g) in &pending_records {
        let present: Vec<u64> = g
            .packs
            .iter()
            .filter_map(|p| listing.get(p).copied())
            .collect();
        report.pending.push(Pending {
            record: name.clone(),
            packs: present.len(),
            bytes: present.iter().sum(),
            not_before_ns: g.not_before_ns,
        });
    }
    Ok(report)
}

/// Replaces the index files that list a pack about to be deleted, then
/// deletes those files, then the packs. A crash in between leaves packs
/// listed twice, or condemned packs no index lists, both harmless; never
/// an index listing a pack that the repository still needs but lost.
fn sweep(
    st: &dyn Storage,
    lease: &mut Option<LeaseGuard>,
    files: &[(String, Vec<Id>)],
    delete: &HashSet<Id>,
    report: &mut PruneReport,
) -> Result<()> {
    if delete.is_empty() {
        return Ok(());
    }
    let affected: Vec<&String> = files
        .iter()
        .filter(|(_, packs)| packs.iter().any(|p| delete.contains(p)))
        .map(|(n, _)| n)
        .collect();
    for name in &affected {
        ensure(lease)?;
        let packs = read_index_file(st, name).map_err(|e| {
            Error::Untrusted(format!("index file {name} could not be read again: {e}"))
        })?;
        let keep: Vec<IndexPack> = packs
            .into_iter()
            .filter(|p| !delete.contains(&p.pack))
            .collect();
        if !keep.is_empty() {
            write_index_file(st, &keep)?;
        }
    }
    for name in &affected {
        st.delete(Kind::Index, name)?;
        report.index_files_rewritten += 1;
    }
    for (i, p) in delete.iter().enumerate() {
        if i % 64 == 0 {
            ensure(lease)?;
        }
        st.delete(Kind::Pack, &p.to_hex())?;
    }
    // The origin marks of deleted packs go after them, never before: a
    // source's pack without its mark would pass for the owner's. Marks
    // of packs not deleted here stay, even without a pack: the box
    // writes a mark just before the pack it marks.
    for o in st.list(Kind::Origin)? {
        if let Some((pack, _)) = cairn_format::maint::parse_origin_name(&o.name)
            && delete.contains(&pack)
        {
            st.delete(Kind::Origin, &o.name)?;
        }
    }
    Ok(())
}

/// What repacking needs to know.
struct RepackCtx<'a> {
    index: &'a cairn_store::Index,
    reach: &'a Reach,
    origins: &'a HashMap<Id, [u8; 8]>,
}

impl RepackCtx<'_> {
    /// Whether the record of `id` at `offset` in the pack at `pos` is a
    /// copy prune keeps.
    fn wanted(&self, pos: u32, id: &Id, offset: u64) -> bool {
        let Some((r, l)) = self.index.rank(id) else {
            return false;
        };
        if l.pack == pos && l.offset == offset {
            self.reach.kept.primary.contains(r)
        } else {
            self.reach.kept.others.contains_key(&(pos, offset))
        }
    }
}

/// Bytes of records read at once while repacking.
const REPACK_WINDOW: u64 = 4 << 20;

/// Copies the needed records of `packs` into new packs (one sink per
/// session key, since a pack's records share one key, and per origin, so
/// that a source's records never land in a pack of someone else's),
/// publishes them and an index file listing them, and returns the packs
/// now safe to condemn.
fn repack_packs(
    storage: &Arc<dyn Storage>,
    lease: &mut Option<LeaseGuard>,
    ctx: &RepackCtx<'_>,
    packs: &[u32],
    report: &mut PruneReport,
) -> Result<Vec<Id>> {
    let st: &dyn Storage = &**storage;
    let index = ctx.index;
    type Group = ([u8; 16], Option<[u8; 8]>);
    let mut by_key: HashMap<Group, Vec<u32>> = HashMap::new();
    for &pos in packs {
        let p = index.pack(pos);
        let tag = ctx.origins.get(&p.id).copied();
        by_key.entry((p.key_id, tag)).or_default().push(pos);
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort();
    let mut done = Vec::new();
    let mut buf = Vec::new();
    for ((key_id, tag), list) in keys {
        let info = index.pack(list[0]);
        // The copies carry the origin of what they copy: a mark written
        // before each is published, so it never passes for the owner's.
        let mark = match tag {
            Some(t) => Some((
                t,
                st.get(
                    Kind::Origin,
                    &cairn_format::maint::origin_name(&info.id, &t),
                )?,
            )),
            None => None,
        };
        let mut sink = PackSink::new(storage.clone(), key_id, info.wrapped);
        let mut staged = Vec::new();
        let mut copied_from = Vec::new();
        for pos in list {
            ensure(lease)?;
            let p = index.pack(pos);
            // Check the whole pack against its name first (streamed), then
            // copy the needed records in windows: memory holds a window,
            // never a pack.
            if !crate::verify::hash_pack(st, &p.id, p.size, &mut buf) {
                report
                    .damaged_packs
                    .push(format!("{}: contents do not match its name", p.id.short()));
                continue;
            }
            let trailer = read_pack_trailer(st, &p.id, p.size)?.trailer;
            let want: Vec<_> = trailer
                .entries
                .iter()
                .filter(|e| ctx.wanted(pos, &e.id, e.offset))
                .collect();
            let name = p.id.to_hex();
            let mut i = 0;
            while i < want.len() {
                let start = want[i].offset;
                let mut end = start + u64::from(want[i].length);
                let mut j = i + 1;
                while j < want.len() {
                    let e_end = want[j].offset + u64::from(want[j].length);
                    if e_end - start > REPACK_WINDOW {
                        break;
                    }
                    end = e_end;
                    j += 1;
                }
                cairn_storage::read_exact_range(
                    st,
                    Kind::Pack,
                    &name,
                    start,
                    end - start,
                    &mut buf,
                )?;
                for e in &want[i..j] {
                    let a = (e.offset - start) as usize;
                    let blob = SealedBlob {
                        kind: e.kind,
                        id: e.id,
                        record: buf[a..a + e.length as usize].to_vec(),
                        raw_len: e.raw_len,
                    };
                    if let Some(s) = sink.add(&blob)? {
                        staged.push(s);
                    }
                    report.repack_bytes_written += u64::from(e.length);
                }
                i = j;
            }
            copied_from.push(p.id);
        }
        if let Some(s) = sink.finish_pack()? {
            staged.push(s);
        }
        let mut published = Vec::new();
        for s in staged {
            if let Some((t, body)) = &mark {
                let name = cairn_format::maint::origin_name(&s.pack.pack, t);
                match st.put(Kind::Origin, &name, body) {
                    Ok(()) | Err(cairn_storage::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            published.push(s.publish()?);
        }
        // The copies are durable and indexed before the originals are
        // condemned.
        if !published.is_empty() {
            write_index_file(st, &published)?;
        }
        report.repacked_packs += copied_from.len();
        done.extend(copied_from);
    }
    Ok(done)
}
