//! Aligned stretches of packs shared by all of a repository's readers, on
//! stores where every read is a request (S3).
//!
//! Each reader's own windows suit a local disk, where a read costs a
//! system call. Over S3 they cost a request each, and the eight workers of
//! a restore read around each other: on the benchmark corpus they fetched
//! 2.7 times the repository, in ranges that straddled the store's own
//! blocks (Garage reads and hashes whole 1 MiB blocks for any range), so
//! the store read 5.5 times the repository. Here every reader takes
//! blocks of [`BLOCK`] bytes aligned to the start of the pack from one
//! cache, a block missing is fetched once (with the next few, in one
//! request) however many readers want it, and the cache holds at most
//! [`CAPACITY`] bytes.
//!
//! The buffers of runs nobody holds any more are kept (a few) for the
//! next fetches: a fresh 4 MiB buffer is mapped anew and faulted in page by
//! page, which was a tenth of a restore's CPU over S3.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use cairn_storage::{Kind, Storage};

use crate::Result;

/// Bytes of a block: the alignment and unit of the cache, and Garage's
/// default block size, so that a block read is one block read there.
pub const BLOCK: u64 = 1 << 20;
/// Blocks one request fetches at most: the block asked for and the ones
/// after it that nobody holds or fetches yet.
const RUN: u64 = 4;
/// Bytes the cache holds before it frees the least recently used blocks.
const CAPACITY: usize = 48 << 20;
/// Buffers of freed runs kept for reuse: one per reader fetching at once
/// is plenty, since each fetch frees about one run.
const SPARE: usize = 4;

/// Buffers of runs no block refers to any more.
type Spare = Arc<Mutex<Vec<Vec<u8>>>>;

/// The buffer of one request; handed back to the spares when the last
/// block of it is dropped.
struct Run {
    buf: Vec<u8>,
    spare: Spare,
}

impl Drop for Run {
    fn drop(&mut self) {
        keep_spare(&self.spare, std::mem::take(&mut self.buf));
    }
}

/// Keeps `buf` for the next fetch, unless [`SPARE`] buffers are kept.
fn keep_spare(spare: &Spare, buf: Vec<u8>) {
    let mut spare = spare.lock().unwrap_or_else(|p| p.into_inner());
    if spare.len() < SPARE {
        spare.push(buf);
    }
}

/// A block: a stretch of the buffer of the request that fetched it.
#[derive(Clone)]
pub struct Block {
    run: Arc<Run>,
    start: usize,
    len: usize,
}

impl Block {
    pub fn bytes(&self) -> &[u8] {
        &self.run.buf[self.start..self.start + self.len]
    }
}

enum Slot {
    /// A reader is fetching it; others wait on the condition variable.
    Loading,
    Ready {
        block: Block,
        used: u64,
    },
}

#[derive(Default)]
struct State {
    slots: HashMap<(u32, u64), Slot>,
    tick: u64,
    held: usize,
}

#[derive(Default)]
pub struct BlockCache {
    state: Mutex<State>,
    changed: Condvar,
    spare: Spare,
}

impl BlockCache {
    /// Block `n` of the pack with index number `pack`, name `name` and
    /// `size` bytes (from the index; the caller checked the block lies
    /// within it).
    pub fn get(
        &self,
        storage: &dyn Storage,
        pack: u32,
        name: &str,
        size: u64,
        n: u64,
    ) -> Result<Block> {
        let blocks = size.div_ceil(BLOCK);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let end = loop {
            st.tick += 1;
            let tick = st.tick;
            match st.slots.get_mut(&(pack, n)) {
                Some(Slot::Ready { block, used }) => {
                    *used = tick;
                    return Ok(block.clone());
                }
                Some(Slot::Loading) => {
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                None => {
                    let mut end = n + 1;
                    while end < blocks && end < n + RUN && !st.slots.contains_key(&(pack, end)) {
                        end += 1;
                    }
                    for b in n..end {
                        st.slots.insert((pack, b), Slot::Loading);
                    }
                    break end;
                }
            }
        };
        drop(st);
        // Should the read panic, the blocks are unmarked all the same:
        // waiters must not wait for a fetch that will never end.
        let mut unmark = Unmark {
            cache: self,
            pack,
            blocks: n..end,
        };
        let from = n * BLOCK;
        let to = (end * BLOCK).min(size);
        let mut buf = (self.spare.lock().unwrap_or_else(|p| p.into_inner()))
            .pop()
            .unwrap_or_default();
        let read =
            cairn_storage::read_exact_range(storage, Kind::Pack, name, from, to - from, &mut buf);
        unmark.blocks = 0..0;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = match read {
            Ok(()) => {
                let run = Arc::new(Run {
                    buf,
                    spare: self.spare.clone(),
                });
                st.tick += 1;
                let used = st.tick;
                let mut first = None;
                for b in n..end {
                    let start = ((b - n) * BLOCK) as usize;
                    let len = (BLOCK as usize).min(run.buf.len() - start);
                    let block = Block {
                        run: run.clone(),
                        start,
                        len,
                    };
                    first.get_or_insert_with(|| block.clone());
                    st.held += len;
                    st.slots.insert((pack, b), Slot::Ready { block, used });
                }
                evict(&mut st, (pack, n));
                Ok(first.expect("a run has a block"))
            }
            Err(e) => {
                keep_spare(&self.spare, buf);
                // Nothing stays marked as loading: a waiter tries itself.
                for b in n..end {
                    st.slots.remove(&(pack, b));
                }
                Err(e.into())
            }
        };
        drop(st);
        self.changed.notify_all();
        result
    }
}

/// Removes the marks of blocks being fetched, when dropped with any left.
struct Unmark<'a> {
    cache: &'a BlockCache,
    pack: u32,
    blocks: std::ops::Range<u64>,
}

impl Drop for Unmark<'_> {
    fn drop(&mut self) {
        if self.blocks.is_empty() {
            return;
        }
        let mut st = self.cache.state.lock().unwrap_or_else(|p| p.into_inner());
        for b in self.blocks.clone() {
            st.slots.remove(&(self.pack, b));
        }
        drop(st);
        self.cache.changed.notify_all();
    }
}

/// Frees least recently used blocks (never `keep`, just fetched) until the
/// cache is within its capacity.
fn evict(st: &mut State, keep: (u32, u64)) {
    while st.held > CAPACITY {
        let victim = st
            .slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready { used, .. } if *k != keep => Some((*used, *k)),
                _ => None,
            })
            .min();
        let Some((_, k)) = victim else { break };
        if let Some(Slot::Ready { block, .. }) = st.slots.remove(&k) {
            st.held -= block.len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::MemoryStorage;
    use cairn_storage::faulty::{Fault, FaultyStorage};

    fn store() -> (tempfile::TempDir, FaultyStorage) {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStorage::new(dir.path()));
        (dir, FaultyStorage::new(mem, Fault::Fail, 0))
    }

    #[test]
    fn blocks_are_aligned_fetched_once_and_bounded() {
        let (_d, st) = store();
        let name = "ab".repeat(32);
        let size = 10 * BLOCK + 123;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        st.put(Kind::Pack, &name, &data).unwrap();
        let cache = BlockCache::default();
        let before = st.calls();
        for n in 0..=10 {
            let b = cache.get(&st, 0, &name, size, n).unwrap();
            let from = (n * BLOCK) as usize;
            let to = ((n + 1) * BLOCK).min(size) as usize;
            assert_eq!(b.bytes(), &data[from..to]);
        }
        // Runs of four: blocks 0-3, 4-7 and 8-10.
        assert_eq!(st.calls() - before, 3);
        // Far more blocks than the capacity: what is held stays bounded.
        let other = "cd".repeat(32);
        let big = (CAPACITY as u64 / BLOCK) * 2 * BLOCK;
        st.put(Kind::Pack, &other, &vec![7u8; big as usize])
            .unwrap();
        for n in 0..big / BLOCK {
            assert_eq!(cache.get(&st, 1, &other, big, n).unwrap().bytes()[0], 7);
        }
        assert!(cache.state.lock().unwrap().held <= CAPACITY);
        // The freed runs' buffers are kept, a few, and reused: what they
        // held before never shows through.
        let spare = cache.spare.lock().unwrap().len();
        assert!((1..=SPARE).contains(&spare), "{spare} spare buffers");
        for n in 0..=10 {
            let b = cache.get(&st, 0, &name, size, n).unwrap();
            let from = (n * BLOCK) as usize;
            let to = ((n + 1) * BLOCK).min(size) as usize;
            assert_eq!(b.bytes(), &data[from..to]);
        }
    }

    #[test]
    fn a_failed_fetch_leaves_nothing_loading() {
        let (_d, st) = store();
        let name = "ef".repeat(32);
        let cache = BlockCache::default();
        // The pack is missing: an error, and the next reader tries again.
        assert!(cache.get(&st, 0, &name, BLOCK, 0).is_err());
        assert!(cache.state.lock().unwrap().slots.is_empty());
        st.put(Kind::Pack, &name, &vec![1u8; BLOCK as usize])
            .unwrap();
        let b = cache.get(&st, 0, &name, BLOCK, 0).unwrap();
        assert_eq!(b.bytes().len(), BLOCK as usize);
    }

    #[test]
    fn a_fetch_that_panics_leaves_nothing_to_wait_for() {
        let (_d, st) = store();
        let name = "34".repeat(32);
        st.put(Kind::Pack, &name, &vec![5u8; BLOCK as usize])
            .unwrap();
        let cache = Arc::new(BlockCache::default());
        let mem: Arc<dyn Storage> = Arc::new(st);
        let panics = FaultyStorage::new(mem.clone(), Fault::Panic, 1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.get(&panics, 0, &name, BLOCK, 0)
        }));
        assert!(r.is_err(), "the store panicked");
        // Another reader of that block fetches it instead of waiting.
        let (tx, rx) = std::sync::mpsc::channel();
        let c = cache.clone();
        let n = name.clone();
        std::thread::spawn(move || {
            let _ = tx.send(c.get(&*mem, 0, &n, BLOCK, 0).map(|b| b.bytes()[0]));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            got.expect("a reader waited for a fetch that had panicked")
                .unwrap(),
            5
        );
    }

    #[test]
    fn readers_at_once_fetch_a_block_once() {
        let (_d, st) = store();
        let name = "12".repeat(32);
        st.put(Kind::Pack, &name, &vec![3u8; (2 * BLOCK) as usize])
            .unwrap();
        let cache = BlockCache::default();
        let before = st.calls();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| cache.get(&st, 0, &name, 2 * BLOCK, 1).unwrap());
            }
        });
        // One run (blocks 1 onwards) however many readers asked.
        assert_eq!(st.calls() - before, 1);
    }
}
