//! Content-defined chunking over a byte stream.
//!
//! Cairn cuts file contents with FastCDC 2020 (Xia et al., "The Design of
//! Fast Content-Defined Chunking for Data Deduplication Based Storage
//! Systems", 2020) so that an insertion early in a file moves only the
//! chunks around it, not every chunk after it. The gear table is XORed with a
//! seed derived from the repository's secret dedup key, so that cut points,
//! and therefore chunk sizes visible to the storage side, do not reveal
//! which well-known file was stored (the fingerprinting attack on CDC).
//!
//! The chunker owns one reusable buffer of `2 * max` bytes: memory does not
//! grow with the file, and no allocation happens per chunk.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

/// Chunk size bounds. The defaults were chosen by measurement (see
/// `bench/results.md`): 1 MiB average keeps the index small (a 1 TiB source
/// makes about a million chunks) while still finding shared runs in VM
/// images and appended logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// No cut before this many bytes (except at end of stream).
    pub min: usize,
    /// Target average chunk size; must be a power of two.
    pub avg: usize,
    /// A cut is forced at this many bytes.
    pub max: usize,
}

/// The sizes a new repository gets (`cairn_repo::init_options`); each
/// repository records its own in its config.
impl Default for Params {
    fn default() -> Self {
        Params {
            min: 128 * 1024,
            avg: 512 * 1024,
            max: 2 * 1024 * 1024,
        }
    }
}

impl Params {
    /// Whether FastCDC accepts these bounds.
    pub fn is_valid(&self) -> bool {
        self.min >= 64
            && self.avg.is_power_of_two()
            && self.avg >= 256
            && self.min <= self.avg
            && self.avg <= self.max
            && self.max <= 1 << 28
            && self.min.is_multiple_of(2)
            && self.max.is_multiple_of(2)
    }
}

/// Precomputed gear tables and masks for one repository.
#[derive(Clone, Debug)]
pub struct Cutter {
    params: Params,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    /// Where FastCDC cuts a run of at least `max` zero bytes; sparse files
    /// and disk images hold gigabytes of them, and a zero check is many
    /// times faster than the gear hash.
    zero_cut: usize,
}

impl Cutter {
    /// Builds a cutter; `seed` comes from the repository's dedup key.
    pub fn new(params: Params, seed: u64) -> Self {
        assert!(params.is_valid(), "invalid chunker params {params:?}");
        let (mask_s, mask_l) = select_masks(params.avg, Normalization::Level1);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        let mut c = Cutter {
            params,
            mask_s,
            mask_l,
            gear,
            gear_ls,
            zero_cut: 0,
        };
        c.zero_cut = c.gear_cut(&vec![0u8; params.max]);
        c
    }

    /// The bounds this cutter was made with.
    pub fn params(&self) -> Params {
        self.params
    }

    /// Length of the first chunk of `data`, where `data` holds everything
    /// up to the end of the stream or at least `max` bytes.
    pub fn cut(&self, data: &[u8]) -> usize {
        if data.len() <= self.params.min {
            return data.len();
        }
        // FastCDC never looks past `max` bytes, so a zero prefix that long
        // always cuts where it cuts an all-zero buffer.
        let max = self.params.max;
        if data.len() >= max && is_zero(&data[..max]) {
            return self.zero_cut;
        }
        self.gear_cut(data)
    }

    fn gear_cut(&self, data: &[u8]) -> usize {
        if data.len() <= self.params.min {
            return data.len();
        }
        let (_, n) = cut_gear(
            data,
            self.params.min,
            self.params.avg,
            self.params.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n.clamp(1, data.len())
    }

    /// Splits an in-memory buffer into chunk lengths.
    pub fn split(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.cut(data);
            out.push(n);
            data = &data[n..];
        }
        out
    }
}

/// Whether `data` is all zeros, 16 bytes at a time: zero runs are cut,
/// stored and restored (as holes) apart from other data, here and in the
/// archiver and the restorer.
pub fn is_zero(data: &[u8]) -> bool {
    let mut it = data.chunks_exact(16);
    it.all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
        && it.remainder().iter().all(|&b| b == 0)
}

/// Streams chunks out of a reader with one reusable buffer.
pub struct StreamChunker<'c, R> {
    cutter: &'c Cutter,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<'c, R: Read> StreamChunker<'c, R> {
    /// Wraps `reader`; the buffer is allocated lazily on first use.
    pub fn new(cutter: &'c Cutter, reader: R) -> Self {
        Self::with_buffer(cutter, reader, Vec::new())
    }

    /// Wraps `reader`, reusing `buf` (from [`StreamChunker::into_parts`]):
    /// a backup of many files allocates and zeroes its buffer once.
    pub fn with_buffer(cutter: &'c Cutter, reader: R, buf: Vec<u8>) -> Self {
        StreamChunker {
            cutter,
            reader,
            buf,
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Returns the next chunk, or `None` at end of stream. The slice is valid
    /// until the next call.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill_to_max()?;
        let n = if self.start == self.end {
            0
        } else {
            self.cutter.cut(&self.buf[self.start..self.end])
        };
        Ok(self.take(n))
    }

    /// Returns the next `len` bytes as a chunk (fewer at the end of the
    /// stream), for cut points found elsewhere ([`StreamChunker::next_chunk`]
    /// run from a later offset, by another thread). `len` is at most `max`.
    pub fn next_chunk_of(&mut self, len: usize) -> io::Result<Option<&[u8]>> {
        self.fill_to_max()?;
        let n = len.min(self.cutter.params.max).min(self.end - self.start);
        Ok(self.take(n))
    }

    /// The next `len` bytes (fewer at the end of the stream) without
    /// taking them: a caller that knows where a chunk ended last time
    /// checks that its bytes are unchanged before it takes them with
    /// [`StreamChunker::next_chunk_of`]. `len` is at most `max`.
    pub fn peek(&mut self, len: usize) -> io::Result<&[u8]> {
        self.fill_to_max()?;
        let n = len.min(self.cutter.params.max).min(self.end - self.start);
        Ok(&self.buf[self.start..self.start + n])
    }

    /// Makes sure `max` bytes, or the rest of the stream, are buffered.
    fn fill_to_max(&mut self) -> io::Result<()> {
        if self.end - self.start < self.cutter.params.max && !self.eof {
            self.fill()?;
        }
        Ok(())
    }

    /// The next `n` buffered bytes as a chunk; `None` for none.
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if n == 0 {
            return None;
        }
        let chunk = &self.buf[self.start..self.start + n];
        self.start += n;
        Some(chunk)
    }

    fn fill(&mut self) -> io::Result<()> {
        let max = self.cutter.params.max;
        if self.buf.len() != 2 * max {
            self.buf = vec![0; 2 * max];
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Gives back the reader.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// Gives back the reader and the buffer, for reuse.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.reader, self.buf)
    }
}

/// Cut points of a stream from some offset on, found by a helper thread
/// while the caller chunks the same stream from its start.
///
/// A chunk boundary depends only on the bytes from the chunk's start, so
/// once the caller reaches a boundary the helper also found, every later
/// boundary is the helper's: from there the caller only slices
/// ([`StreamChunker::next_chunk_of`]) and skips the gear hash. The chunks
/// are exactly those of one pass over the stream; a helper that is slow,
/// fails or never meets the caller's chain only costs the time it saves.
/// Cutting is the largest single cost of re-reading a large changed file,
/// and this spreads it over two cores.
#[derive(Debug, Default)]
pub struct CutsAhead {
    state: std::sync::Mutex<Ahead>,
    more: std::sync::Condvar,
    stop: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Ahead {
    /// Chunk boundaries found, in order, starting with the helper's offset.
    ends: Vec<u64>,
    done: bool,
}

impl CutsAhead {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ahead> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The helper's work: chunks `reader`, which starts at offset `from`
    /// of the stream, and publishes each boundary, until the end, an error
    /// or [`CutsAhead::stop`].
    pub fn find(&self, cutter: &Cutter, reader: impl Read, from: u64) {
        self.lock().ends.push(from);
        self.more.notify_all();
        let mut chunker = StreamChunker::new(cutter, reader);
        let mut pos = from;
        while !self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            match chunker.next_chunk() {
                Ok(Some(c)) => {
                    pos += c.len() as u64;
                    self.lock().ends.push(pos);
                    self.more.notify_all();
                }
                Ok(None) | Err(_) => break,
            }
        }
        self.lock().done = true;
        self.more.notify_all();
    }

    /// The helper could not start (its own open of the source failed):
    /// the caller cuts everything itself.
    pub fn give_up(&self) {
        self.lock().done = true;
        self.more.notify_all();
    }

    /// Tells the helper to stop.
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until the helper is past `pos`; the index of `pos` among its
    /// boundaries, if it is one.
    pub fn position(&self, pos: u64) -> Option<usize> {
        let mut g = self.lock();
        while !g.done && g.ends.last().is_none_or(|&e| e < pos) {
            g = self.more.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.ends.binary_search(&pos).ok()
    }

    /// The boundary after the one at index `i`, waiting for the helper;
    /// `None` when it ended before finding one.
    pub fn end_after(&self, i: usize) -> Option<u64> {
        let mut g = self.lock();
        while !g.done && g.ends.len() <= i + 1 {
            g = self.more.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.ends.get(i + 1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> Params {
        Params {
            min: 64,
            avg: 256,
            max: 1024,
        }
    }

    fn pseudo(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The caller chunks from the start and takes over the helper's cuts
    /// where the chains meet: the chunks are those of a single pass, for
    /// helpers started anywhere, zero runs included.
    #[test]
    fn cuts_found_ahead_give_the_same_chunks() {
        let c = Cutter::new(small(), 7);
        let mut data = pseudo(200_000, 5);
        data[50_000..60_000].fill(0);
        let serial = c.split(&data);
        for from in [0usize, 1, 999, 50_500, 100_000, 199_990, 200_000] {
            let ahead = CutsAhead::default();
            std::thread::scope(|s| {
                s.spawn(|| ahead.find(&c, &data[from..], from as u64));
                let mut chunker = StreamChunker::new(&c, &data[..]);
                let (mut pos, mut lens, mut at) = (0u64, Vec::new(), None::<usize>);
                loop {
                    let next = match at {
                        Some(i) => match ahead.end_after(i) {
                            Some(end) => {
                                at = Some(i + 1);
                                chunker.next_chunk_of((end - pos) as usize).unwrap()
                            }
                            None => chunker.next_chunk().unwrap(),
                        },
                        None => chunker.next_chunk().unwrap(),
                    };
                    let Some(chunk) = next else { break };
                    pos += chunk.len() as u64;
                    lens.push(chunk.len());
                    if at.is_none() && pos >= from as u64 {
                        at = ahead.position(pos);
                    }
                }
                assert_eq!(lens, serial, "helper from {from}");
            });
        }
    }

    #[test]
    fn stream_matches_split_and_bounds() {
        let c = Cutter::new(small(), 7);
        let data = pseudo(100_000, 3);
        let lens = c.split(&data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        assert!(
            lens[..lens.len() - 1]
                .iter()
                .all(|&n| (64..=1024).contains(&n))
        );
        let mut s = StreamChunker::new(&c, &data[..]);
        let mut got = Vec::new();
        while let Some(ch) = s.next_chunk().unwrap() {
            got.push(ch.len());
        }
        assert_eq!(got, lens);
    }

    #[test]
    fn insertion_moves_few_cuts() {
        let c = Cutter::new(small(), 1);
        let data = pseudo(200_000, 9);
        let mut ins = data.clone();
        ins.splice(50_000..50_000, b"0123456789".iter().copied());
        let a: std::collections::HashSet<_> = chunks(&c, &data).into_iter().collect();
        let b = chunks(&c, &ins);
        let shared = b.iter().filter(|x| a.contains(*x)).count();
        assert!(shared * 10 >= b.len() * 9, "{shared} of {}", b.len());
    }

    fn chunks(c: &Cutter, d: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut off = 0;
        for n in c.split(d) {
            out.push(d[off..off + n].to_vec());
            off += n;
        }
        out
    }

    #[test]
    fn zero_shortcut_matches_gear() {
        for seed in 0..50 {
            let c = Cutter::new(small(), seed);
            let mut data = vec![0u8; 5000];
            data.extend(pseudo(3000, seed));
            assert_eq!(c.cut(&data), c.gear_cut(&data), "seed {seed}");
            assert_eq!(c.split(&data), {
                let mut out = Vec::new();
                let mut d = &data[..];
                while !d.is_empty() {
                    let n = c.gear_cut(d);
                    out.push(n);
                    d = &d[n..];
                }
                out
            });
        }
    }

    #[test]
    fn seed_changes_cut_points() {
        let data = pseudo(100_000, 5);
        assert_ne!(
            Cutter::new(small(), 1).split(&data),
            Cutter::new(small(), 2).split(&data)
        );
    }

    proptest! {
        #[test]
        fn stream_reassembles(data in proptest::collection::vec(any::<u8>(), 0..5000), seed in any::<u64>()) {
            let c = Cutter::new(small(), seed);
            let mut s = StreamChunker::new(&c, &data[..]);
            let mut out = Vec::new();
            while let Some(ch) = s.next_chunk().unwrap() {
                prop_assert!(ch.len() <= 1024);
                out.extend_from_slice(ch);
            }
            prop_assert_eq!(out, data);
        }
    }
}
