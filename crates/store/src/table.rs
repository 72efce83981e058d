//! The sorted blob table behind [`crate::Index`], in memory when small and
//! in an unlinked temporary file when large.
//!
//! A repository of a million small files has a million blobs; held in
//! memory at 56 bytes each, the index alone would be most of what a
//! backup needs on a 256 MiB board. Past [`TableLimits::mem_entries`], the
//! entries are sorted in runs of bounded size, merged into a file of
//! fixed-size records, and looked up with `pread` through one 8-byte fence
//! key per group of [`GROUP`] records: memory per blob drops to about a
//! byte, and the records live in the page cache, where the kernel may
//! drop them, instead of the process. The file is rebuilt from the index
//! files by each process that opens the repository (a few hundred
//! milliseconds per million blobs), so it can never disagree with them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use cairn_format::Id;
use cairn_format::blob::BlobKind;

use crate::index::Location;
use crate::{Error, Result};

/// Bytes of one record: ID, pack, offset, length, raw length, kind, pad.
const RECORD: usize = 56;
/// Records per fence key. A lookup reads one group with `pread`: a
/// backup looks up every unchanged file's chunks, and at 64 records a
/// group the copying of 3.5 KiB per lookup was a tenth of a walk's CPU.
/// At 16, the fences cost half a byte per blob.
const GROUP: usize = 16;
/// Records read at once by a scan, which reads the file in order.
const SCAN: usize = 1024;

/// When the table leaves memory, and how large its sort runs are.
#[derive(Clone, Debug)]
pub struct TableLimits {
    /// Entries kept in memory before the table moves to disk.
    pub mem_entries: usize,
    /// Entries sorted at once while building a table on disk.
    pub run_entries: usize,
    /// Directory for the table's temporary files (`None`: the system's).
    pub dir: Option<PathBuf>,
}

impl Default for TableLimits {
    fn default() -> Self {
        TableLimits {
            mem_entries: 1 << 16,
            run_entries: 1 << 16,
            dir: None,
        }
    }
}

fn encode(id: &Id, l: &Location) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..32].copy_from_slice(&id.0);
    r[32..36].copy_from_slice(&l.pack.to_le_bytes());
    r[36..44].copy_from_slice(&l.offset.to_le_bytes());
    r[44..48].copy_from_slice(&l.length.to_le_bytes());
    r[48..52].copy_from_slice(&l.raw_len.to_le_bytes());
    r[52] = l.kind as u8;
    r
}

fn decode(r: &[u8]) -> Option<(Id, Location)> {
    let u32_at = |a: usize| u32::from_le_bytes(r[a..a + 4].try_into().expect("4 bytes"));
    let id = Id(r[..32].try_into().ok()?);
    let loc = Location {
        pack: u32_at(32),
        offset: u64::from_le_bytes(r[36..44].try_into().ok()?),
        length: u32_at(44),
        raw_len: u32_at(48),
        kind: BlobKind::from_u8(r[52]).ok()?,
    };
    Some((id, loc))
}

fn key_of(rec: &[u8; RECORD]) -> [u8; 32] {
    rec[..32].try_into().expect("32 bytes")
}

fn prefix(id: &Id) -> u64 {
    u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"))
}

fn temp(limits: &TableLimits) -> Result<File> {
    let dir = limits.dir.clone().unwrap_or_else(std::env::temp_dir);
    tempfile::tempfile_in(&dir)
        .map_err(|e| Error::Storage(cairn_storage::Error::io("create", &dir, e)))
}

fn io_err(op: &'static str, e: std::io::Error) -> Error {
    Error::Storage(cairn_storage::Error::io(
        op,
        std::path::Path::new("index table"),
        e,
    ))
}

/// Sorted entries, wherever they are.
#[derive(Debug)]
pub enum Table {
    /// In memory.
    Mem(MemTable),
    /// In a temporary file.
    Disk(DiskTable),
}

impl Default for Table {
    fn default() -> Self {
        Table::Mem(MemTable::new(Vec::new()))
    }
}

/// Sorted entries in memory, with a directory of where each run of IDs
/// sharing their first bits starts. IDs are keyed hashes, spread evenly,
/// so the directory leaves a lookup a few entries to search instead of
/// sixteen steps of binary search over the whole table, each a likely
/// cache miss: a restore looks up every chunk twice, and those searches
/// were 2-3% of its CPU time. IDs that are not spread evenly (a hostile
/// repository's) only make the runs longer; the search within a run is
/// still a binary search.
#[derive(Debug)]
pub struct MemTable {
    entries: Vec<(Id, Location)>,
    /// `dir[p]` is the first entry whose ID's top `bits` bits are `p` or
    /// more; one more slot holds the number of entries.
    dir: Vec<u32>,
    bits: u32,
}

impl MemTable {
    /// Takes entries sorted by ID.
    pub fn new(entries: Vec<(Id, Location)>) -> Self {
        // Two to four entries a run; at most 2^20 slots (4 MiB), as an
        // entry is 56 bytes and a table of millions moves to disk.
        let bits = (usize::BITS - entries.len().leading_zeros())
            .saturating_sub(2)
            .min(20);
        let slots = 1usize << bits;
        let mut dir = Vec::with_capacity(slots + 1);
        let mut i = 0usize;
        for p in 0..slots as u64 {
            while i < entries.len() && top(&entries[i].0, bits) < p {
                i += 1;
            }
            dir.push(i as u32);
        }
        dir.push(entries.len() as u32);
        MemTable { entries, dir, bits }
    }

    /// Gives the entries back.
    pub fn into_entries(self) -> Vec<(Id, Location)> {
        self.entries
    }

    fn find(&self, id: &Id) -> Option<usize> {
        let p = top(id, self.bits) as usize;
        let (a, b) = (self.dir[p] as usize, self.dir[p + 1] as usize);
        let key = prefix(id);
        // The 8-byte prefix decides nearly every comparison; comparing it
        // as a number saves a call to memcmp at each step.
        self.entries[a..b]
            .binary_search_by(|e| prefix(&e.0).cmp(&key).then_with(|| e.0.cmp(id)))
            .ok()
            .map(|i| a + i)
    }
}

/// The top `bits` bits of an ID.
fn top(id: &Id, bits: u32) -> u64 {
    prefix(id).checked_shr(64 - bits).unwrap_or(0)
}

/// A table in an unlinked file, with its fence keys.
#[derive(Debug)]
pub struct DiskTable {
    file: File,
    len: usize,
    fences: Vec<u64>,
}

impl Table {
    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            Table::Mem(m) => m.entries.len(),
            Table::Disk(d) => d.len,
        }
    }

    /// Location of `id`. An I/O error reading the table file counts as not
    /// found: a backup then stores the blob again, a restore reports it.
    pub fn get(&self, id: &Id) -> Option<Location> {
        match self {
            Table::Mem(m) => m.find(id).map(|i| m.entries[i].1),
            Table::Disk(d) => d.get(id),
        }
    }

    /// Position of `id` in ID order, and its location.
    pub fn rank(&self, id: &Id) -> Option<(usize, Location)> {
        match self {
            Table::Mem(m) => m.find(id).map(|i| (i, m.entries[i].1)),
            Table::Disk(d) => d.rank(id),
        }
    }

    /// Calls `f` on every entry, in ID order.
    pub fn scan(&self, f: &mut dyn FnMut(&Id, &Location)) -> Result<()> {
        match self {
            Table::Mem(m) => {
                for (id, l) in &m.entries {
                    f(id, l);
                }
                Ok(())
            }
            Table::Disk(d) => d.scan(f),
        }
    }
}

impl DiskTable {
    fn group(&self, g: usize, buf: &mut [u8; GROUP * RECORD]) -> Option<usize> {
        let n = (self.len - g * GROUP).min(GROUP);
        self.file
            .read_exact_at(&mut buf[..n * RECORD], (g * GROUP * RECORD) as u64)
            .ok()?;
        Some(n)
    }

    fn get(&self, id: &Id) -> Option<Location> {
        self.rank(id).map(|r| r.1)
    }

    fn rank(&self, id: &Id) -> Option<(usize, Location)> {
        let key = prefix(id);
        // The last group starting at or below the key holds it, unless
        // IDs sharing its 8-byte prefix began in earlier groups.
        let hi = self.fences.partition_point(|&f| f <= key);
        if hi == 0 {
            return None;
        }
        let lo = self.fences[..hi]
            .partition_point(|&f| f < key)
            .saturating_sub(1);
        let mut buf = [0u8; GROUP * RECORD];
        for g in (lo..hi).rev() {
            let n = self.group(g, &mut buf)?;
            let recs = &buf[..n * RECORD];
            let (mut a, mut b) = (0usize, n);
            while a < b {
                let m = (a + b) / 2;
                let rid = &recs[m * RECORD..m * RECORD + 32];
                match rid.cmp(&id.0[..]) {
                    std::cmp::Ordering::Less => a = m + 1,
                    std::cmp::Ordering::Greater => b = m,
                    std::cmp::Ordering::Equal => {
                        return decode(&recs[m * RECORD..(m + 1) * RECORD])
                            .map(|e| (g * GROUP + m, e.1));
                    }
                }
            }
        }
        None
    }

    fn scan(&self, f: &mut dyn FnMut(&Id, &Location)) -> Result<()> {
        let mut buf = vec![0u8; SCAN * RECORD];
        for start in (0..self.len).step_by(SCAN) {
            let n = (self.len - start).min(SCAN);
            self.file
                .read_exact_at(&mut buf[..n * RECORD], (start * RECORD) as u64)
                .map_err(|e| io_err("read", e))?;
            for r in buf[..n * RECORD].chunks_exact(RECORD) {
                let (id, l) =
                    decode(r).ok_or_else(|| Error::corrupt("index table", "undecodable record"))?;
                f(&id, &l);
            }
        }
        Ok(())
    }
}

/// Collects entries and produces a [`Table`], sorting in bounded runs.
pub struct TableBuilder {
    limits: TableLimits,
    buf: Vec<(Id, Location)>,
    runs: Vec<File>,
    /// Later copies of IDs already pushed.
    dups: Vec<(Id, Location)>,
}

impl TableBuilder {
    /// A builder with these limits.
    pub fn new(limits: TableLimits) -> Self {
        TableBuilder {
            limits,
            buf: Vec::new(),
            runs: Vec::new(),
            dups: Vec::new(),
        }
    }

    /// Adds an entry; the first entry of an ID wins, later ones are kept
    /// apart as copies (see [`TableBuilder::finish`]).
    pub fn push(&mut self, id: Id, loc: Location) -> Result<()> {
        self.buf.push((id, loc));
        if self.buf.len() >= self.limits.run_entries.max(1)
            && (self.buf.len() > self.limits.mem_entries || !self.runs.is_empty())
        {
            self.spill()?;
        }
        Ok(())
    }

    fn sort_buf(&mut self) {
        // Stable, so among equal IDs the first added stays first.
        self.buf.sort_by_key(|a| a.0);
        let dups = &mut self.dups;
        self.buf.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                dups.push(*later);
            }
            same
        });
    }

    fn spill(&mut self) -> Result<()> {
        self.sort_buf();
        let f = temp(&self.limits)?;
        let mut w = BufWriter::with_capacity(64 << 10, f);
        for (id, l) in &self.buf {
            w.write_all(&encode(id, l))
                .map_err(|e| io_err("write", e))?;
        }
        let f = w
            .into_inner()
            .map_err(|e| io_err("write", e.into_error()))?;
        self.runs.push(f);
        self.buf.clear();
        self.buf.shrink_to(self.limits.run_entries);
        if self.runs.len() >= MAX_TABLE_RUNS {
            let (merged, _, _) =
                merge_runs(&self.limits, std::mem::take(&mut self.runs), &mut self.dups)?;
            self.runs.push(merged);
        }
        Ok(())
    }

    /// The finished table, and the copies it left out: entries of IDs
    /// pushed before, sorted by ID (copies of one ID in no set order). A blob is stored more than once only when backups raced,
    /// or when sources of a server each stored their own copy (dedup
    /// poisoning, `docs/format.md`): readers fall back on a copy when
    /// the first fails, and prune keeps the copies a snapshot may need.
    pub fn finish(mut self) -> Result<(Table, Vec<(Id, Location)>)> {
        let table = if self.runs.is_empty() && self.buf.len() <= self.limits.mem_entries {
            self.sort_buf();
            self.buf.shrink_to_fit();
            Table::Mem(MemTable::new(std::mem::take(&mut self.buf)))
        } else {
            if !self.buf.is_empty() {
                self.spill()?;
            }
            self.buf = Vec::new();
            let (file, len, fences) =
                merge_runs(&self.limits, std::mem::take(&mut self.runs), &mut self.dups)?;
            Table::Disk(DiskTable { file, len, fences })
        };
        let mut dups = std::mem::take(&mut self.dups);
        dups.sort_unstable_by_key(|a| a.0);
        dups.shrink_to_fit();
        Ok((table, dups))
    }
}

/// Sort runs kept open before they are merged into one (open files stay
/// far below the usual limit of 1024, whatever the repository's size).
const MAX_TABLE_RUNS: usize = 64;

/// Merges sorted runs into one file, the first entry of an ID winning
/// (ties go to the earlier run, which holds the earlier entry); the
/// others go to `dups`. Returns the file, its record count and its fence
/// keys.
fn merge_runs(
    limits: &TableLimits,
    runs: Vec<File>,
    dups: &mut Vec<(Id, Location)>,
) -> Result<(File, usize, Vec<u64>)> {
    let mut readers: Vec<BufReader<File>> = Vec::with_capacity(runs.len());
    for mut f in runs {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| io_err("seek", e))?;
        readers.push(BufReader::with_capacity(64 << 10, f));
    }
    let next = |r: &mut BufReader<File>| -> Result<Option<[u8; RECORD]>> {
        let mut rec = [0u8; RECORD];
        match r.read_exact(&mut rec) {
            Ok(()) => Ok(Some(rec)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(io_err("read", e)),
        }
    };
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(rec) = next(r)? {
            heap.push(Reverse((key_of(&rec), i, rec)));
        }
    }
    let out = temp(limits)?;
    let mut w = BufWriter::with_capacity(64 << 10, out);
    let mut fences = Vec::new();
    let mut len = 0usize;
    let mut last: Option<[u8; 32]> = None;
    while let Some(Reverse((key, i, rec))) = heap.pop() {
        if let Some(r) = next(&mut readers[i])? {
            heap.push(Reverse((key_of(&r), i, r)));
        }
        if last == Some(key) {
            dups.extend(decode(&rec));
            continue;
        }
        if len.is_multiple_of(GROUP) {
            fences.push(u64::from_be_bytes(key[..8].try_into().expect("8 bytes")));
        }
        w.write_all(&rec).map_err(|e| io_err("write", e))?;
        len += 1;
        last = Some(key);
    }
    let file = w
        .into_inner()
        .map_err(|e| io_err("write", e.into_error()))?;
    fences.shrink_to_fit();
    Ok((file, len, fences))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u32) -> Location {
        Location {
            pack: n % 7,
            offset: u64::from(n) * 1000,
            length: n + 1,
            raw_len: n + 2,
            kind: if n.is_multiple_of(3) {
                BlobKind::Tree
            } else {
                BlobKind::Chunk
            },
        }
    }

    fn id(n: u32) -> Id {
        let mut b = *blake3::hash(&n.to_le_bytes()).as_bytes();
        if n.is_multiple_of(50) {
            // IDs sharing their 8-byte prefix, across group boundaries.
            b[..8].copy_from_slice(&[7; 8]);
        }
        Id(b)
    }

    fn limits(mem_entries: usize, run_entries: usize) -> TableLimits {
        TableLimits {
            mem_entries,
            run_entries,
            dir: None,
        }
    }

    fn build(n: u32, limits: TableLimits) -> Table {
        let mut b = TableBuilder::new(limits);
        for i in 0..n {
            b.push(id(i), loc(i)).unwrap();
        }
        // Duplicates added later lose, and are kept as copies.
        for i in (0..n).step_by(13) {
            b.push(id(i), loc(i + 1)).unwrap();
        }
        for i in (0..n).step_by(26) {
            b.push(id(i), loc(i + 2)).unwrap();
        }
        let (t, mut dups) = b.finish().unwrap();
        dups.sort_by_key(|a| (a.0, a.1.offset));
        let mut want: Vec<(Id, Location)> = (0..n)
            .step_by(13)
            .flat_map(|i| {
                let third = i.is_multiple_of(26).then(|| (id(i), loc(i + 2)));
                std::iter::once((id(i), loc(i + 1))).chain(third)
            })
            .collect();
        want.sort_by_key(|a| (a.0, a.1.offset));
        assert_eq!(dups, want, "copies left out of the table");
        t
    }

    #[test]
    fn disk_table_finds_every_entry_and_nothing_else() {
        let t = build(5000, limits(100, 333));
        assert!(matches!(t, Table::Disk(_)), "expected a disk table");
        assert_eq!(t.len(), 5000);
        for i in 0..5000 {
            assert_eq!(t.get(&id(i)), Some(loc(i)), "entry {i}");
        }
        let mut seen = Vec::new();
        t.scan(&mut |id, _| seen.push(*id)).unwrap();
        for (r, x) in seen.iter().enumerate() {
            assert_eq!(t.rank(x).map(|e| e.0), Some(r), "rank of entry {r}");
        }
        for i in 5000..6000 {
            assert_eq!(t.get(&id(i)), None, "absent entry {i}");
        }
        let mut seen = Vec::new();
        t.scan(&mut |id, _| seen.push(*id)).unwrap();
        assert_eq!(seen.len(), 5000);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "scan is sorted");
    }

    /// Many small runs: they are merged along the way, and the first
    /// entry of an ID still wins.
    #[test]
    fn runs_merged_along_the_way_keep_first_entries() {
        let t = build(5000, limits(10, 20));
        assert_eq!(t.len(), 5000);
        for i in 0..5000 {
            assert_eq!(t.get(&id(i)), Some(loc(i)), "entry {i}");
        }
    }

    /// The directory of a table in memory finds every entry and no
    /// other, whatever its size, with IDs spread evenly, crowded into one
    /// run (as a hostile repository's could be) or at the ends of the
    /// key space.
    #[test]
    fn memory_directory_finds_every_entry_and_no_other() {
        for n in [0u32, 1, 2, 3, 5, 64, 1000, 5000] {
            let mut v: Vec<(Id, Location)> = (0..n).map(|i| (id(i), loc(i))).collect();
            let crowded = |i: u32, first: u8| {
                let mut b = id(i).0;
                b[0] = first;
                b[1] = 0;
                (Id(b), loc(i))
            };
            v.extend((0..n / 4).map(|i| crowded(n + i, 0x80)));
            v.push(crowded(2 * n + 1, 0));
            v.push((Id([0xff; 32]), loc(3)));
            v.push((Id([0; 32]), loc(4)));
            v.sort_by_key(|e| e.0);
            v.dedup_by_key(|e| e.0);
            let t = Table::Mem(MemTable::new(v.clone()));
            for (i, (k, l)) in v.iter().enumerate() {
                assert_eq!(t.rank(k), Some((i, *l)), "{n} entries, entry {i}");
            }
            for i in 0..200 {
                let mut b = id(100_000 + i).0;
                assert_eq!(t.get(&Id(b)), None);
                b[0] = 0x80;
                b[1] = 0;
                assert_eq!(t.get(&Id(b)), None);
            }
        }
    }

    #[test]
    fn small_table_stays_in_memory_and_agrees() {
        let t = build(90, TableLimits::default());
        assert!(matches!(t, Table::Mem(_)));
        for i in 0..90 {
            assert_eq!(t.get(&id(i)), Some(loc(i)));
        }
        assert_eq!(t.get(&id(1000)), None);
    }
}

/// Values per fence of a spilled run of [`SpillSet`].
const SET_GROUP: usize = 256;
/// Bloom filter bits per spilled value (about 1% false positives).
const BLOOM_BITS: usize = 10;
const BLOOM_HASHES: u64 = 7;

/// A set of 128-bit ID prefixes that moves to disk as it grows: the blobs
/// a backup has sent, which for a first backup of a million small files
/// would otherwise be its largest allocation.
///
/// Values beyond [`TableLimits::mem_entries`] are spilled in sorted runs,
/// each with fence keys and a Bloom filter in memory (under two bytes per
/// value), so a lookup reads the disk only on a filter hit. The values are
/// keyed hashes, uniformly distributed: the filter takes its bit positions
/// straight from them.
pub struct SpillSet {
    limits: TableLimits,
    mem: std::collections::HashSet<u128>,
    runs: Vec<SetRun>,
}

struct SetRun {
    file: File,
    len: usize,
    fences: Vec<u128>,
    bloom: Vec<u64>,
}

impl SetRun {
    fn bloom_bits(&self) -> u64 {
        self.bloom.len() as u64 * 64
    }

    fn positions(x: u128, m: u64) -> impl Iterator<Item = u64> {
        let h1 = x as u64;
        let h2 = ((x >> 64) as u64) | 1;
        (0..BLOOM_HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
    }

    fn may_contain(&self, x: u128) -> bool {
        let m = self.bloom_bits();
        Self::positions(x, m).all(|p| self.bloom[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    fn contains(&self, x: u128) -> Result<bool> {
        if !self.may_contain(x) {
            return Ok(false);
        }
        let g = self.fences.partition_point(|&f| f <= x);
        if g == 0 {
            return Ok(false);
        }
        let g = g - 1;
        let n = (self.len - g * SET_GROUP).min(SET_GROUP);
        let mut buf = [0u8; SET_GROUP * 16];
        self.file
            .read_exact_at(&mut buf[..n * 16], (g * SET_GROUP * 16) as u64)
            .map_err(|e| io_err("read", e))?;
        let vals = buf[..n * 16]
            .chunks_exact(16)
            .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")));
        Ok(vals.into_iter().any(|v| v == x))
    }
}

impl SpillSet {
    /// An empty set with these limits.
    pub fn new(limits: TableLimits) -> Self {
        SpillSet {
            limits,
            mem: std::collections::HashSet::new(),
            runs: Vec::new(),
        }
    }

    /// Whether `x` is in the set.
    pub fn contains(&self, x: u128) -> Result<bool> {
        if self.mem.contains(&x) {
            return Ok(true);
        }
        for r in &self.runs {
            if r.contains(x)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds `x`; whether it was new.
    pub fn insert(&mut self, x: u128) -> Result<bool> {
        if self.contains(x)? {
            return Ok(false);
        }
        self.mem.insert(x);
        if self.mem.len() >= self.limits.mem_entries.max(1) {
            self.spill()?;
        }
        Ok(true)
    }

    fn spill(&mut self) -> Result<()> {
        let file = temp(&self.limits)?;
        let mut vals: Vec<u128> = self.mem.drain().collect();
        self.mem.shrink_to(self.limits.mem_entries);
        vals.sort_unstable();
        let run = write_run(file, vals.len(), vals.into_iter().map(Ok))?;
        self.runs.push(run);
        if self.runs.len() >= MAX_RUNS {
            self.compact()?;
        }
        Ok(())
    }

    /// Merges every run into one, so lookups and open files stay few
    /// however many values a backup sends.
    fn compact(&mut self) -> Result<()> {
        let file = temp(&self.limits)?;
        let len: usize = self.runs.iter().map(|r| r.len).sum();
        let runs = std::mem::take(&mut self.runs);
        for r in &runs {
            use std::io::Seek;
            (&r.file)
                .seek(std::io::SeekFrom::Start(0))
                .map_err(|e| io_err("seek", e))?;
        }
        let mut readers: Vec<(BufReader<&File>, usize)> = runs
            .iter()
            .map(|r| (BufReader::with_capacity(64 << 10, &r.file), r.len))
            .collect();
        let mut next = move |k: usize| -> Result<Option<u128>> {
            let (r, left) = &mut readers[k];
            if *left == 0 {
                return Ok(None);
            }
            *left -= 1;
            let mut b = [0u8; 16];
            r.read_exact(&mut b).map_err(|e| io_err("read", e))?;
            Ok(Some(u128::from_le_bytes(b)))
        };
        let mut heap = BinaryHeap::new();
        for k in 0..runs.len() {
            if let Some(v) = next(k)? {
                heap.push(Reverse((v, k)));
            }
        }
        let merged = std::iter::from_fn(|| {
            let Reverse((v, k)) = heap.pop()?;
            match next(k) {
                Ok(Some(n)) => heap.push(Reverse((n, k))),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            Some(Ok(v))
        });
        let run = write_run(file, len, merged)?;
        self.runs.push(run);
        Ok(())
    }
}

/// Spilled runs kept before they are merged into one.
const MAX_RUNS: usize = 8;

/// Writes `len` sorted values as a run with its fences and Bloom filter.
fn write_run(file: File, len: usize, vals: impl Iterator<Item = Result<u128>>) -> Result<SetRun> {
    let words = (len * BLOOM_BITS).div_ceil(64).max(1);
    let mut run = SetRun {
        file,
        len: 0,
        fences: Vec::with_capacity(len.div_ceil(SET_GROUP)),
        bloom: vec![0u64; words],
    };
    let m = run.bloom_bits();
    let mut w = BufWriter::with_capacity(64 << 10, &run.file);
    for v in vals {
        let v = v?;
        if run.len.is_multiple_of(SET_GROUP) {
            run.fences.push(v);
        }
        for p in SetRun::positions(v, m) {
            run.bloom[(p / 64) as usize] |= 1 << (p % 64);
        }
        w.write_all(&v.to_le_bytes())
            .map_err(|e| io_err("write", e))?;
        run.len += 1;
    }
    w.flush().map_err(|e| io_err("write", e))?;
    drop(w);
    Ok(run)
}

impl SpillSet {
    #[cfg(test)]
    fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod set_tests {
    use super::*;

    fn val(n: u64) -> u128 {
        u128::from_le_bytes(
            blake3::hash(&n.to_le_bytes()).as_bytes()[..16]
                .try_into()
                .unwrap(),
        )
    }

    #[test]
    fn spilled_set_keeps_every_value() {
        let mut s = SpillSet::new(TableLimits {
            mem_entries: 500,
            run_entries: 500,
            dir: None,
        });
        for n in 0..5000 {
            assert!(s.insert(val(n)).unwrap(), "value {n} was new");
        }
        assert!(
            (1..MAX_RUNS).contains(&s.runs()),
            "the set spilled and its runs were merged: {} runs",
            s.runs()
        );
        for n in 0..5000 {
            assert!(s.contains(val(n)).unwrap(), "value {n} kept");
            assert!(!s.insert(val(n)).unwrap(), "value {n} not new twice");
        }
        let false_hits = (5000..10_000)
            .filter(|&n| s.contains(val(n)).unwrap())
            .count();
        assert_eq!(false_hits, 0, "values never added were found");
    }
}
