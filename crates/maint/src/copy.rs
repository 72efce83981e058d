//! Copying snapshots to a replica: a repository that shares the source's
//! config and keys (`cairn init --like`), so that records travel as they
//! are, sealed. Like prune, this needs no key: the walk reads record
//! headers only, and records are copied byte for byte into new packs, one
//! per session key (the trailer names the key).
//!
//! Only what the replica lacks is sent. Packs go first, an index file
//! every few packs, and a snapshot file only once everything it reaches
//! has been read back from the replica's index and tree headers: a killed
//! copy leaves at most a few unindexed packs and no snapshot that is not
//! whole, and the next run sends what is still missing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cairn_format::Id;
use cairn_format::index::IndexPack;
use cairn_storage::{Kind, Storage};
use cairn_store::garbage::read_garbage;
use cairn_store::{
    Location, PackSink, SealedBlob, SnapshotInfo, StagedPack, TableLimits, list_snapshots,
    load_index_tiered, read_pack_trailer, write_index_file,
};

use crate::graph::{OnDamage, pack_tags, read_origins, snapshot_trusts, trust_of, walk_trusted};
use crate::{Error, Result};

/// Packs published before an index file lists them: what a killed copy
/// may leave unindexed.
const INDEX_EVERY: usize = 4;
/// Threads uploading packs, each while the next pack is read.
const PUBLISHERS: usize = 2;
/// Bytes of records read at once.
const WINDOW: u64 = 4 << 20;

/// What to copy.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Only snapshots of groups matching this (`*` matches any run).
    pub group: Option<String>,
    /// Only these snapshots (ID prefixes or `latest`); empty: all.
    pub snapshots: Vec<String>,
    /// Say what would be sent; send nothing.
    pub dry_run: bool,
    /// Index memory limits.
    pub limits: TableLimits,
}

/// What a copy did (or, in a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// Snapshots selected.
    pub selected: usize,
    /// Of those, snapshots the replica had already.
    pub present: usize,
    /// Snapshots copied.
    pub copied: Vec<Id>,
    /// Records sent.
    pub blobs: u64,
    /// Record bytes sent.
    pub bytes: u64,
    /// Records the replica had already.
    pub blobs_present: u64,
    /// Packs written.
    pub packs: usize,
}

/// Makes `to` a replica of `from`: the same config and key files, so
/// that records copied as they are read there. `to` must be empty.
pub fn init_replica(from: &dyn Storage, to: &dyn Storage) -> Result<()> {
    let config = from.get(Kind::Config, "config")?;
    match to.get(Kind::Config, "config") {
        Ok(_) => {
            return Err(Error::Input(format!(
                "{} is a repository already; a replica must be created empty",
                to.location()
            )));
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    to.prepare()?;
    for k in from.list(Kind::Key)? {
        let data = from.get(Kind::Key, &k.name)?;
        match to.put(Kind::Key, &k.name, &data) {
            Ok(()) => {}
            // A crashed earlier attempt wrote it.
            Err(cairn_storage::Error::AlreadyExists { .. })
                if to.get(Kind::Key, &k.name)? == data => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The config last: a crash before leaves no repository.
    to.put(Kind::Config, "config", &config)?;
    Ok(())
}

/// Whether `to` is a replica of `from` (the same config bytes: the same
/// repository ID, chunker and keys).
pub fn is_replica(from: &dyn Storage, to: &dyn Storage) -> Result<bool> {
    Ok(from.get(Kind::Config, "config")? == to.get(Kind::Config, "config")?)
}

/// Copies the selected snapshots of `from` to its replica `to`.
pub fn copy_sealed(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    opts: &CopyOptions,
    progress: &mut dyn FnMut(&CopyReport),
) -> Result<CopyReport> {
    let src: &dyn Storage = &**from;
    let dst: &dyn Storage = &**to;
    if !is_replica(src, dst)? {
        return Err(Error::Input(format!(
            "{} is not a replica of {}: make one with `cairn init --repo {} --like {}` (an empty place), or copy into a repository of another owner with --reencrypt",
            dst.location(),
            src.location(),
            dst.location(),
            src.location()
        )));
    }
    let (snaps, bad) = list_snapshots(src)?;
    if let Some(b) = bad.first() {
        return Err(Error::Untrusted(format!("{}: {b}", src.location())));
    }
    let chosen = cairn_store::select_many(&snaps, &opts.snapshots, opts.group.as_deref())?;
    let (there, _) = list_snapshots(dst)?;
    let there: HashSet<Id> = there.iter().map(|s| s.id).collect();
    let mut report = CopyReport {
        selected: chosen.len(),
        ..Default::default()
    };
    let todo: Vec<&SnapshotInfo> = chosen
        .into_iter()
        .filter(|s| {
            let have = there.contains(&s.id);
            report.present += usize::from(have);
            !have
        })
        .collect();
    if todo.is_empty() {
        return Ok(report);
    }

    // What the snapshots need, walked on the source without a key: for a
    // repository a box served, each snapshot with the copies its sender
    // may use, so that a forged copy never stands in for the real one.
    let loaded = load_index_tiered(src, opts.limits.clone(), &|_| 0, 1, &[])?;
    if let Some(p) = loaded.problems.first() {
        return Err(Error::Untrusted(format!("{}: {p}", src.location())));
    }
    let index = loaded.index;
    let tags = pack_tags(&index, &read_origins(src)?);
    let trusts = snapshot_trusts(src)?;
    let roots: Vec<_> = todo
        .iter()
        .map(|s| {
            (
                s.envelope.root,
                format!("snapshot {}", s.id.short()),
                trust_of(&trusts, &s.id),
            )
        })
        .collect();
    let reach = walk_trusted(src, &index, &roots, &tags, &mut || Ok(()), OnDamage::Stop)?;

    // What the replica has: its index, less condemned packs (a writer
    // must not count on them).
    let have = replica_blobs(dst, opts)?;
    let mut wanted: HashMap<u32, Vec<(Id, Location)>> = HashMap::new();
    index.scan_ranked(|rank, id, l| {
        if !reach.kept.primary.contains(rank) {
            return;
        }
        if have.contains(id) {
            report.blobs_present += 1;
        } else {
            wanted.entry(l.pack).or_default().push((*id, *l));
        }
    })?;
    if !reach.kept.others.is_empty() {
        let mut others = Vec::new();
        index.scan_other_copies(|id, l| {
            if reach.kept.others.contains_key(&(l.pack, l.offset)) && !have.contains(id) {
                others.push((*id, *l));
            }
        });
        for (id, l) in others {
            wanted.entry(l.pack).or_default().push((id, l));
        }
    }
    for list in wanted.values_mut() {
        list.sort_by_key(|(_, l)| l.offset);
        list.dedup_by_key(|(_, l)| l.offset);
        report.blobs += list.len() as u64;
        report.bytes += list.iter().map(|(_, l)| u64::from(l.length)).sum::<u64>();
    }
    if opts.dry_run {
        report.copied = todo.iter().map(|s| s.id).collect();
        return Ok(report);
    }

    send_records(from, to, &index, wanted, &mut report, progress)?;

    // Snapshots last, each once the replica shows everything it reaches.
    let check = load_index_tiered(dst, opts.limits.clone(), &|_| 0, 1, &[])?;
    if let Some(p) = check.problems.first() {
        return Err(Error::Untrusted(format!("{}: {p}", dst.location())));
    }
    for s in todo {
        let what = format!("snapshot {} as copied", s.id.short());
        walk_trusted(
            dst,
            &check.index,
            &[(s.envelope.root, what, crate::graph::Trust::Any)],
            &[],
            &mut || Ok(()),
            OnDamage::Stop,
        )
        .map_err(|e| {
            Error::Untrusted(format!(
                "{} lacks what snapshot {} needs after the copy ({e}); run the copy again",
                dst.location(),
                s.id.short()
            ))
        })?;
        let bytes = src.get(Kind::Snapshot, &s.id.to_hex())?;
        if Id(cairn_crypto::plain_hash(&bytes)) != s.id {
            return Err(Error::Untrusted(format!(
                "snapshot {} of {} does not match its name",
                s.id.short(),
                src.location()
            )));
        }
        dst.put(Kind::Snapshot, &s.id.to_hex(), &bytes)?;
        report.copied.push(s.id);
        progress(&report);
    }
    Ok(report)
}

/// The blobs a replica holds in packs no garbage record condemns. Packs
/// that a killed copy published but did not index are indexed first
/// (they are whole: a pack is published atomically under its hash), so
/// that a resumed copy does not send them again.
fn replica_blobs(dst: &dyn Storage, opts: &CopyOptions) -> Result<HashSet<Id>> {
    let mut condemned = HashSet::new();
    for r in read_garbage(dst)? {
        if let Ok(g) = r.record {
            condemned.extend(g.packs);
        }
    }
    let mut loaded = load_index_tiered(dst, opts.limits.clone(), &|_| 0, 1, &[])?;
    if !opts.dry_run {
        let mut found = Vec::new();
        for o in dst.list(Kind::Pack)? {
            let Some(id) = Id::from_hex(&o.name) else {
                continue;
            };
            if loaded.index.has_pack(&id) || condemned.contains(&id) {
                continue;
            }
            if let Ok(p) = read_pack_trailer(dst, &id, o.size) {
                found.push(p);
            }
        }
        if !found.is_empty() {
            write_index_file(dst, &found)?;
            loaded = load_index_tiered(dst, opts.limits.clone(), &|_| 0, 1, &[])?;
        }
    }
    let index = loaded.index;
    let mut have = HashSet::new();
    index.scan(|id, l| {
        if !condemned.contains(&index.pack(l.pack).id) {
            have.insert(*id);
        }
    })?;
    Ok(have)
}

/// Copies the `wanted` records of each source pack, checked against the
/// pack's name first, into packs of the replica under the same session
/// keys.
fn send_records(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    index: &cairn_store::Index,
    wanted: HashMap<u32, Vec<(Id, Location)>>,
    report: &mut CopyReport,
    progress: &mut dyn FnMut(&CopyReport),
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<StagedPack>(PUBLISHERS);
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        // Packs go up while the next ones are read and checked; each
        // publisher indexes the packs it published.
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|_| {
                let rx = &rx;
                s.spawn(move || -> Result<()> {
                    let mut unindexed: Vec<IndexPack> = Vec::new();
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(staged) = next else { break };
                        unindexed.push(staged.publish()?);
                        if unindexed.len() >= INDEX_EVERY {
                            write_index_file(&**to, &unindexed)?;
                            unindexed.clear();
                        }
                    }
                    if !unindexed.is_empty() {
                        write_index_file(&**to, &unindexed)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let read = read_records(from, to, index, wanted, report, progress, &tx);
        drop(tx);
        let mut published = Ok(());
        for p in publishers {
            let r = p.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            if published.is_ok() {
                published = r;
            }
        }
        // A publisher's failure stops the reading: it is the cause.
        published.and(read)
    })
}

/// Reads the wanted records pack by pack (each pack checked against its
/// name first) into sinks, one per session key, handing full packs to
/// the publishers. Returns early, without error, once they are gone.
fn read_records(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    index: &cairn_store::Index,
    wanted: HashMap<u32, Vec<(Id, Location)>>,
    report: &mut CopyReport,
    progress: &mut dyn FnMut(&CopyReport),
    publish: &std::sync::mpsc::SyncSender<StagedPack>,
) -> Result<()> {
    let src: &dyn Storage = &**from;
    let mut by_key: HashMap<[u8; 16], Vec<u32>> = HashMap::new();
    for &pos in wanted.keys() {
        by_key.entry(index.pack(pos).key_id).or_default().push(pos);
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort();
    let mut buf = Vec::new();
    for (key_id, mut packs) in keys {
        packs.sort();
        let first = index.pack(packs[0]);
        let mut sink = PackSink::new(to.clone(), key_id, first.wrapped);
        for pos in packs {
            let p = index.pack(pos);
            if !crate::verify::hash_pack(src, &p.id, p.size, &mut buf) {
                return Err(Error::Untrusted(format!(
                    "pack {} of {} does not match its name (damaged); nothing of it was sent. Run `cairn check --read-data` there",
                    p.id.short(),
                    src.location()
                )));
            }
            // The trailer is the pack's own word on its records; the
            // index must agree with it.
            let trailer = read_pack_trailer(src, &p.id, p.size)?.trailer;
            let listed: HashSet<(u64, u32)> = trailer
                .entries
                .iter()
                .map(|e| (e.offset, e.length))
                .collect();
            let want = &wanted[&pos];
            let name = p.id.to_hex();
            let mut i = 0;
            while i < want.len() {
                let start = want[i].1.offset;
                let mut end = start + u64::from(want[i].1.length);
                let mut j = i + 1;
                while j < want.len() {
                    let e_end = want[j].1.offset + u64::from(want[j].1.length);
                    if e_end - start > WINDOW {
                        break;
                    }
                    end = e_end.max(end);
                    j += 1;
                }
                cairn_storage::read_exact_range(
                    src,
                    Kind::Pack,
                    &name,
                    start,
                    end - start,
                    &mut buf,
                )?;
                for (id, l) in &want[i..j] {
                    if !listed.contains(&(l.offset, l.length)) {
                        return Err(Error::Untrusted(format!(
                            "pack {} of {}: the index places a record its trailer does not list",
                            p.id.short(),
                            src.location()
                        )));
                    }
                    let a = (l.offset - start) as usize;
                    let blob = SealedBlob {
                        kind: l.kind,
                        id: *id,
                        record: buf[a..a + l.length as usize].to_vec(),
                        raw_len: l.raw_len,
                    };
                    if let Some(s) = sink.add(&blob)? {
                        if publish.send(s).is_err() {
                            return Ok(());
                        }
                        report.packs += 1;
                        progress(report);
                    }
                }
                i = j;
            }
        }
        if let Some(s) = sink.finish_pack()? {
            if publish.send(s).is_err() {
                return Ok(());
            }
            report.packs += 1;
        }
    }
    Ok(())
}
