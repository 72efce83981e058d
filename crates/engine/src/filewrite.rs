//! Writing a restored file's bytes: holes for zeros, and direct I/O for
//! large files of restores too large for memory (and for copies of large
//! files in any restore).
//!
//! A buffered write copies every byte into a page-cache page the kernel
//! must first find memory for; on a VM whose free memory is handed back to
//! the host, that allocation faults through to the host, and writing 4 GiB
//! cost two thirds of a restore's CPU. A restore rarely reads back what it
//! wrote, so large files go from the worker's buffer to the disk with
//! `O_DIRECT` instead, which also leaves the page cache to the programs
//! that were using it. Direct I/O needs offsets, lengths and memory
//! aligned to the device's blocks, so bytes are staged in an aligned
//! buffer and written in whole 4 KiB blocks, by a thread of the worker's
//! own ([`WriteBehind`]) while the worker decodes the next ones.
//!
//! A file written directly is written only directly: a buffered write
//! next to a direct one can leave a stale page-cache folio (folios span
//! many blocks) that writeback later puts over the direct write. So the
//! block where two parts of a split file meet is assembled in memory from
//! both sides and written by whichever finishes it, and a file's last
//! partial block is padded with zeros and the file cut back to its length.
//! Filesystems without direct I/O (tmpfs before Linux 6.6, some FUSE and
//! network filesystems) get buffered writes throughout, found out once.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, bounded};

use rustix::fs::OFlags;

use crate::restorer::is_zero;

/// Alignment of direct I/O offsets, lengths and memory: the largest
/// logical block size in use, so it suits every device.
const ALIGN: usize = 4096;
/// Bytes staged before a direct write: on the benchmark machine's disk,
/// writes of 4 MiB of incompressible data reached 1.3 GB/s where writes
/// of 1 MiB reached 1.0, and a restore of 4 GiB took a tenth less time.
const STAGE: usize = 4 << 20;
/// Stage buffers per worker: one being filled while the other is on its
/// way to the device (a third gained nothing measurable).
const BUFFERS: usize = 2;
/// Bytes a buffered write hands the kernel at once. The page cache takes
/// folios as large as a write allows, and on this VM (Linux 6.18, freed
/// memory handed back to the host) folios of 1 MiB and more cost far more
/// to take than small ones: `dd` through the cache of a fresh ext4 took
/// 1.0-1.9 s of system time per GB in writes of 1 MiB (2.6 s in 2 MiB)
/// against 0.21-0.35 s in writes of 64-512 KiB. A chunk (512 KiB on
/// average, up to 2 MiB, by default) is written in pieces of this size.
/// In restores the gain did not show through the machine's noise (system
/// time at 4 GiB even in five alternating pairs, wall time at 1 and 2 GiB
/// too); the extra calls cost nothing measurable either.
const PIECE: usize = 512 << 10;
/// Files smaller than this are written buffered: a direct write waits for
/// the device, which costs more than the copy for a small file.
const DIRECT_MIN: u64 = 1 << 20;

/// Set once a filesystem refused direct I/O: every later file is written
/// buffered (restores go to one target, hence one filesystem, nearly
/// always).
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Whether a file of `len` bytes is to be written directly, on a target
/// where [`direct_pays`].
pub(crate) fn wants_direct(len: u64) -> bool {
    len >= DIRECT_MIN && !UNSUPPORTED.load(Ordering::Relaxed)
}

/// Whether direct writes pay off under `target`: not on a filesystem in
/// memory (tmpfs has taken `O_DIRECT` since Linux 6.6, but there is no
/// device to bypass the cache for, so staging only adds a copy, and two
/// workers writing one file contend for its lock in the kernel).
pub(crate) fn direct_pays(target: &std::path::Path) -> bool {
    /// `f_type` of tmpfs and ramfs (linux/magic.h).
    const IN_MEMORY: [u64; 2] = [0x0102_1994, 0x8584_58f6];
    match rustix::fs::statfs(target) {
        #[allow(clippy::unnecessary_cast)] // its type differs by platform
        Ok(fs) => !IN_MEMORY.contains(&(fs.f_type as u64)),
        Err(_) => true,
    }
}

/// Whether a restore of `bytes` is small enough to go through the page
/// cache throughout: at most a quarter of the memory available now. Such
/// a restore ends before most of its bytes reach the disk, workers never
/// wait on the device, and chunks met again are copied from the cache
/// rather than decoded again: on the mixed corpus of 1 and 2 GiB, restores
/// took a quarter to a third less time than with large files written
/// directly. At 4 GiB it depended on the system time of the page-cache
/// writes, which on this VM swung from run to run: from a third faster
/// than direct to as slow. Past that, the cache fills, the kernel reclaims
/// and throttles writers, and an 8 GiB restore took a third longer
/// buffered than direct (system time tripled). A quarter leaves room for
/// a second copy of every byte in the cache of a loop device's backing
/// file, and for the cache of the programs that were running.
pub(crate) fn fits_in_memory(bytes: u64) -> bool {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    available(&meminfo).is_some_and(|avail| bytes <= avail / 4)
}

/// Dirty bytes up to which the kernel lets programs write through the page
/// cache freely: halfway between `vm.dirty_background_*`, where it starts
/// writing back, and `vm.dirty_*`, where writers must wait. Past it the
/// kernel makes writers wait in proportion (`balance_dirty_pages`), while
/// its writeback takes the disk and a core; below it a buffered write
/// costs a copy, and a restore ends before its bytes reach the disk.
/// Each limit is its `_bytes` setting, or else its `_ratio` percent of
/// the memory available.
pub(crate) fn free_dirty_limit() -> Option<u64> {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    let avail = memory_available()?;
    let background = limit(
        read("dirty_background_bytes")?,
        read("dirty_background_ratio")?,
        avail,
    );
    let throttled = limit(read("dirty_bytes")?, read("dirty_ratio")?, avail);
    Some(background / 2 + throttled / 2)
}

/// One of the kernel's dirty limits: `bytes` if set, else `ratio` percent
/// of `avail`.
fn limit(bytes: u64, ratio: u64, avail: u64) -> u64 {
    match bytes {
        0 => avail / 100 * ratio.min(100),
        b => b,
    }
}

/// The memory available now (`MemAvailable`), in bytes.
pub(crate) fn memory_available() -> Option<u64> {
    available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn available(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
}

/// A heap buffer whose usable part starts at an [`ALIGN`]ed address.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    at: usize,
    cap: usize,
}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf::new(0)
    }
}

impl AlignedBuf {
    fn new(cap: usize) -> Self {
        let raw = vec![0u8; cap + ALIGN];
        let at = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, at, cap }
    }

    /// Room for at least `cap` bytes (grown, never shrunk).
    fn reserve(&mut self, cap: usize) {
        if cap > self.cap {
            *self = AlignedBuf::new(cap.next_multiple_of(ALIGN));
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.at..self.at + self.cap]
    }

    fn as_ref(&self) -> &[u8] {
        &self.raw[self.at..self.at + self.cap]
    }
}

fn align_down(x: u64) -> u64 {
    x & !(ALIGN as u64 - 1)
}

fn align_up(x: u64) -> u64 {
    align_down(x + ALIGN as u64 - 1)
}

/// Writes `data` at `pos`, leaving holes for its 4 KiB blocks (aligned in
/// the file) that hold only zeros; returns the end of the last byte
/// written, if any was.
/// The file is new, so what is not written reads as zeros (the file's
/// length is set at its end).
fn write_sparse(f: &File, data: &[u8], pos: u64) -> io::Result<Option<u64>> {
    let mut end = None;
    let mut run = 0usize; // start of the pending run of non-zero bytes
    let mut off = 0usize;
    while off < data.len() {
        let next = ((align_down(pos + off as u64) + ALIGN as u64 - pos) as usize).min(data.len());
        if is_zero(&data[off..next]) {
            if run < off {
                write_pieces(f, &data[run..off], pos + run as u64)?;
                end = Some(pos + off as u64);
            }
            run = next;
        }
        off = next;
    }
    if run < data.len() {
        write_pieces(f, &data[run..], pos + run as u64)?;
        end = Some(pos + data.len() as u64);
    }
    Ok(end)
}

/// Writes `data` at `pos` through the page cache, at most [`PIECE`] bytes
/// a call.
fn write_pieces(f: &File, data: &[u8], pos: u64) -> io::Result<()> {
    let mut at = pos;
    for piece in data.chunks(PIECE) {
        f.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// The blocks where two parts of a split file meet, filled from both
/// sides; the part that completes one writes it.
#[derive(Default)]
pub(crate) struct SharedBlocks(Mutex<HashMap<u64, Meeting>>);

/// One block where two parts meet, as far as it is filled.
struct Meeting {
    bytes: AlignedBuf,
    have: usize,
    /// The file ends in this block, at this length.
    eof: Option<u64>,
}

impl SharedBlocks {
    /// Puts `bytes` at `at` in the block starting at `block`; `pad` more
    /// bytes after them count as given (zeros past the end of the file,
    /// which then ends at `at + bytes.len()`). Returns the block once all
    /// of it is there.
    fn give(&self, block: u64, at: usize, bytes: &[u8], pad: usize) -> Option<Meeting> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(block).or_insert_with(|| Meeting {
            bytes: AlignedBuf::new(ALIGN),
            have: 0,
            eof: None,
        });
        e.bytes.as_mut()[at..at + bytes.len()].copy_from_slice(bytes);
        e.have += bytes.len() + pad;
        if pad > 0 {
            e.eof = Some(block + (at + bytes.len()) as u64);
        }
        if e.have < ALIGN {
            return None;
        }
        map.remove(&block)
    }
}

/// Writes the staged blocks of directly written files on a thread of its
/// own, so that the worker decodes the next chunks while the device takes
/// the last ones: a direct write returns only once the device has the
/// bytes, and a worker waiting for each of its writes kept a restore of
/// large files at little more than one busy core. At most [`BUFFERS`]
/// stage buffers per worker, so memory stays bounded; one worker's writes
/// are in order, and a part waits for all of its own before it ends.
#[derive(Default)]
pub(crate) struct WriteBehind {
    /// Started with the first write handed over.
    thread: Option<Thread>,
    /// Buffers not in flight.
    free: Vec<AlignedBuf>,
    made: usize,
    in_flight: usize,
    /// The first failed write since the last [`WriteBehind::drain`].
    failed: Option<io::Error>,
}

struct Thread {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Whole blocks to write: the first `len` bytes of `buf`, at `at`.
struct Job {
    file: Arc<File>,
    buf: AlignedBuf,
    at: u64,
    len: usize,
}

struct Done {
    buf: AlignedBuf,
    result: io::Result<()>,
}

impl WriteBehind {
    /// A buffer of at least [`STAGE`] bytes to fill: a free one, a new one
    /// while fewer than [`BUFFERS`] exist, or else the next one written.
    fn buffer(&mut self) -> AlignedBuf {
        let mut b = match self.free.pop() {
            Some(b) => b,
            None if self.made < BUFFERS || self.in_flight == 0 => {
                self.made += 1;
                AlignedBuf::default()
            }
            None => self.wait_one(),
        };
        b.reserve(STAGE);
        b
    }

    /// Takes back one written buffer, keeping its write's error.
    fn wait_one(&mut self) -> AlignedBuf {
        let t = self
            .thread
            .as_ref()
            .expect("writes in flight have a thread");
        match t.done.recv() {
            Ok(d) => {
                self.in_flight -= 1;
                if let Err(e) = d.result {
                    self.failed.get_or_insert(e);
                }
                d.buf
            }
            // The thread is gone (it panicked): the writes it held are
            // lost, and so is the part.
            Err(_) => {
                self.in_flight = 0;
                self.failed
                    .get_or_insert_with(|| io::Error::other("the writing thread stopped"));
                // The next write starts a thread afresh.
                self.thread = None;
                AlignedBuf::default()
            }
        }
    }

    /// Hands `len` bytes of whole blocks in `buf` over to be written at
    /// `at` (where `file` is to hold them).
    fn submit(&mut self, file: &Arc<File>, buf: AlignedBuf, at: u64, len: usize) {
        if self.thread.is_none() {
            self.thread = Thread::start();
        }
        let job = Job {
            file: file.clone(),
            buf,
            at,
            len,
        };
        let Some(tx) = self.thread.as_ref().and_then(|t| t.jobs.as_ref()) else {
            // No thread could be started: write here.
            if let Err(e) = write_blocks(&job.file, &job.buf.as_ref()[..len], at) {
                self.failed.get_or_insert(e);
            }
            self.free.push(job.buf);
            return;
        };
        match tx.send(job) {
            Ok(()) => self.in_flight += 1,
            Err(crossbeam_channel::SendError(job)) => {
                self.failed
                    .get_or_insert_with(|| io::Error::other("the writing thread stopped"));
                self.free.push(job.buf);
                // What it held is lost with it (`in_flight` says how
                // much); the next write starts a thread afresh.
                self.in_flight = 0;
                self.thread = None;
            }
        }
    }

    /// Waits for every write handed over; the first error of any.
    fn drain(&mut self) -> io::Result<()> {
        while self.in_flight > 0 {
            let b = self.wait_one();
            self.free.push(b);
        }
        self.failed.take().map_or(Ok(()), Err)
    }
}

impl Thread {
    fn start() -> Option<Thread> {
        // The worker never has more than BUFFERS writes in flight, so
        // neither channel ever blocks it for long.
        let (jobs, rx) = bounded::<Job>(BUFFERS);
        let (tx, done) = bounded::<Done>(BUFFERS);
        let handle = std::thread::Builder::new()
            .name("cairn-write".into())
            .spawn(move || {
                for job in rx {
                    let result = write_blocks(&job.file, &job.buf.as_ref()[..job.len], job.at);
                    drop(job.file);
                    if tx
                        .send(Done {
                            buf: job.buf,
                            result,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Thread {
            jobs: Some(jobs),
            done,
            handle: Some(handle),
        })
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what it
        // holds.
        self.jobs.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The bytes of one part of a file, in order from its first offset.
pub(crate) struct PartWriter<'a> {
    file: &'a Arc<File>,
    /// File offset of the next byte.
    pos: u64,
    /// End of the last byte written (not a hole), when buffered; a direct
    /// part always sets the file's length at its end.
    written: u64,
    /// This part ends the file.
    last: bool,
    /// Direct writing: the writer, the blocks shared with the
    /// neighbouring parts, and the buffer being staged.
    stage: Option<Staging<'a>>,
    /// Bytes of a part starting inside a block, held until the block's
    /// first aligned end, then given to the shared block.
    head: Vec<u8>,
    /// File offset of the staging buffer's first byte (aligned).
    stage_off: u64,
    /// Bytes in the staging buffer.
    fill: usize,
}

struct Staging<'a> {
    sink: &'a mut WriteBehind,
    shared: &'a SharedBlocks,
    buf: AlignedBuf,
}

impl<'a> PartWriter<'a> {
    /// A writer for the part of `file` starting at `offset`, which ends
    /// the file if `last`; with `direct`, every byte is written directly
    /// (see the module doc), staged in buffers of `sink`, and `shared`
    /// holds the blocks this part has in common with its neighbours.
    pub(crate) fn new(
        file: &'a Arc<File>,
        offset: u64,
        last: bool,
        direct: Option<(&'a mut WriteBehind, &'a SharedBlocks)>,
    ) -> io::Result<Self> {
        let stage = match direct {
            Some((sink, shared)) => {
                if !UNSUPPORTED.load(Ordering::Relaxed) {
                    set_direct(file, true)?;
                }
                let buf = sink.buffer();
                Some(Staging { sink, shared, buf })
            }
            None => None,
        };
        Ok(PartWriter {
            file,
            pos: offset,
            written: offset,
            last,
            stage,
            head: Vec::new(),
            stage_off: align_up(offset),
            fill: 0,
        })
    }

    /// Appends `data`.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.stage.is_none() {
            if let Some(end) = write_sparse(self.file, data, self.pos)? {
                self.written = end;
            }
            self.pos += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            if self.pos < self.stage_off {
                let n = ((self.stage_off - self.pos) as usize).min(data.len());
                self.head.extend_from_slice(&data[..n]);
                self.pos += n as u64;
                data = &data[n..];
                if self.pos == self.stage_off {
                    self.give_head(0)?;
                }
                continue;
            }
            let buf = &mut self.stage.as_mut().expect("staging").buf;
            let cap = buf.cap;
            let n = (cap - self.fill).min(data.len());
            buf.as_mut()[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            self.pos += n as u64;
            data = &data[n..];
            if self.fill == cap {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Appends `len` bytes that `fill` puts straight into the staging
    /// buffer, when this part is written directly and they fit there
    /// whole; returns whether they were appended. Nothing is if `fill`
    /// fails (or they do not fit): the caller then writes them the usual
    /// way.
    pub(crate) fn write_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<bool> {
        let at = self.fill;
        let Some(st) = self.stage.as_mut() else {
            return Ok(false);
        };
        if self.pos < self.stage_off || at + len > st.buf.cap {
            return Ok(false);
        }
        if fill(&mut st.buf.as_mut()[at..at + len]).is_err() {
            return Ok(false);
        }
        self.fill += len;
        self.pos += len as u64;
        if self.fill == st.buf.cap {
            self.flush()?;
        }
        Ok(true)
    }

    /// Appends `len` zero bytes, as a hole where blocks allow.
    pub(crate) fn zeros(&mut self, len: u64) -> io::Result<()> {
        let end = self.pos + len;
        if self.stage.is_none() {
            self.pos = end;
            return Ok(());
        }
        if self.pos < self.stage_off {
            // Zeros in the shared block are bytes like any other.
            let n = (self.stage_off - self.pos).min(len);
            self.head.resize(self.head.len() + n as usize, 0);
            self.pos += n;
            if self.pos == self.stage_off {
                self.give_head(0)?;
            }
            if self.pos == end {
                return Ok(());
            }
        }
        // Complete the block being staged with zeros, write out whole
        // blocks, and start staging again in the block `end` falls in.
        let pad = (align_up(self.pos).min(end) - self.pos) as usize;
        if pad > 0 {
            let buf = &mut self.stage.as_mut().expect("staging").buf;
            buf.as_mut()[self.fill..self.fill + pad].fill(0);
            self.fill += pad;
            self.pos += pad as u64;
        }
        if self.pos == end {
            return Ok(());
        }
        self.flush()?;
        debug_assert_eq!(self.fill, 0);
        self.stage_off = align_down(end);
        self.fill = (end - self.stage_off) as usize;
        let fill = self.fill;
        self.stage.as_mut().expect("staging").buf.as_mut()[..fill].fill(0);
        self.pos = end;
        Ok(())
    }

    /// Gives the head to the block it shares with the part before (plus
    /// `pad` zeros past the end of the file), writing the block if that
    /// completes it.
    fn give_head(&mut self, pad: usize) -> io::Result<()> {
        let block = align_down(self.stage_off - 1);
        let at = ALIGN - (self.stage_off - self.pos) as usize - self.head.len();
        let shared = self.stage.as_ref().expect("staging").shared;
        let done = shared.give(block, at, &self.head, pad);
        self.head.clear();
        self.write_shared(block, done)
    }

    /// Writes a completed shared block (and cuts the file back to its
    /// length if it ends there; every write past that length is in this
    /// block, written here).
    fn write_shared(&mut self, block: u64, done: Option<Meeting>) -> io::Result<()> {
        let Some(b) = done else {
            return Ok(());
        };
        if !is_zero(b.bytes.as_ref()) {
            write_run(self.file, b.bytes.as_ref(), block)?;
        }
        if let Some(eof) = b.eof {
            self.file.set_len(eof)?;
        }
        Ok(())
    }

    /// Hands the whole blocks staged over to be written, keeping a
    /// partial last block.
    fn flush(&mut self) -> io::Result<()> {
        let whole = self.fill - self.fill % ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let st = self.stage.as_mut().expect("staging");
        let mut next = st.sink.buffer();
        // A write of this part failed: the part fails now rather than
        // after decoding the rest of it.
        if let Some(e) = st.sink.failed.take() {
            st.sink.free.push(next);
            return Err(e);
        }
        let tail = self.fill - whole;
        next.as_mut()[..tail].copy_from_slice(&st.buf.as_ref()[whole..self.fill]);
        let full = std::mem::replace(&mut st.buf, next);
        st.sink.submit(self.file, full, self.stage_off, whole);
        self.fill = tail;
        self.stage_off += whole as u64;
        Ok(())
    }

    /// Writes what is still held and gives the file its length if this
    /// part ends it.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if self.stage.is_none() {
            // Ending in a hole: give the file its full length.
            if self.last && self.written != self.pos {
                self.file.set_len(self.pos)?;
            }
            return Ok(());
        }
        let r = self.finish_direct();
        // Every write of this part is done before the file gets its
        // length (a padded last block would lengthen it again) and its
        // times.
        let st = self.stage.as_mut().expect("staging");
        let drained = st.sink.drain();
        r?;
        drained?;
        if self.last {
            self.file.set_len(self.pos)?;
        }
        Ok(())
    }

    fn finish_direct(&mut self) -> io::Result<()> {
        if !self.head.is_empty() {
            // A part that ends inside its first block (the file's last
            // part, as others are large): the block's writer sets the
            // length.
            let pad = if self.last {
                (self.stage_off - self.pos) as usize
            } else {
                0
            };
            self.last = false;
            return self.give_head(pad);
        }
        self.flush()?;
        let fill = self.fill;
        if fill > 0 && !self.last {
            // The block shared with the next part.
            let block = self.stage_off;
            let st = self.stage.as_ref().expect("staging");
            let done = st.shared.give(block, 0, &st.buf.as_ref()[..fill], 0);
            return self.write_shared(block, done);
        }
        if fill > 0 {
            // The file's partial last block, padded with zeros.
            let buf = &mut self.stage.as_mut().expect("staging").buf;
            buf.as_mut()[fill..ALIGN].fill(0);
            self.fill = ALIGN;
            self.flush()?;
        }
        Ok(())
    }
}

impl Drop for PartWriter<'_> {
    /// A part given up on (its file failed) still waits for its writes,
    /// which use its buffers and its file.
    fn drop(&mut self) {
        if let Some(st) = self.stage.as_mut() {
            let _ = st.sink.drain();
            let buf = std::mem::take(&mut st.buf);
            st.sink.free.push(buf);
        }
    }
}

/// Writes whole blocks at an aligned offset, leaving the blocks of zeros
/// as holes.
fn write_blocks(f: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    let mut start: Option<usize> = None;
    let whole = bytes.len();
    for i in 0..=whole / ALIGN {
        let b = i * ALIGN;
        let zero = b == whole || is_zero(&bytes[b..b + ALIGN]);
        match (zero, start) {
            (false, None) => start = Some(b),
            (true, Some(s)) => {
                write_run(f, &bytes[s..b], at + s as u64)?;
                start = None;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes whole blocks at an aligned offset, directly if the descriptor
/// is set for it, unless the filesystem refuses (then buffered, from now
/// on).
fn write_run(f: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    match f.write_all_at(bytes, at) {
        // Nothing was written: the filesystem wants another alignment or
        // has no direct I/O after all.
        Err(e)
            if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
                && rustix::fs::fcntl_getfl(f)?.contains(OFlags::DIRECT) =>
        {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            set_direct(f, false)?;
            f.write_all_at(bytes, at)
        }
        r => r,
    }
}

/// Turns `O_DIRECT` on or off for a descriptor (each part has its own);
/// returns whether it is on. A filesystem without direct I/O refuses to
/// turn it on, which is remembered.
fn set_direct(f: &File, on: bool) -> io::Result<bool> {
    let flags = rustix::fs::fcntl_getfl(f)?;
    let want = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    match rustix::fs::fcntl_setfl(f, want) {
        Ok(()) => Ok(on),
        Err(rustix::io::Errno::INVAL) if on => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn available_memory_is_read_from_meminfo() {
        let m = "MemTotal:       24683664 kB\nMemFree:        18550948 kB\nMemAvailable:   24090320 kB\n";
        assert_eq!(available(m), Some(24090320 * 1024));
        assert_eq!(available("MemTotal: 1 kB\n"), None);
        assert_eq!(available("MemAvailable: lots\n"), None);
        // This machine's: a restore of one byte fits, one of an exabyte not.
        assert!(fits_in_memory(1));
        assert!(!fits_in_memory(1 << 60));
    }

    #[test]
    fn dirty_limits_are_bytes_when_set_else_a_share_of_memory() {
        assert_eq!(limit(0, 10, 1000), 100);
        assert_eq!(limit(5, 10, 1000), 5);
        assert_eq!(limit(0, 250, 1000), 1000, "a ratio past 100");
        // This machine's: between nothing and all of its memory.
        let l = free_dirty_limit().expect("the kernel's dirty limits");
        assert!(l > 0 && l < 1 << 50, "{l}");
    }

    #[test]
    fn direct_writes_only_where_there_is_a_device() {
        // /dev/shm is a tmpfs wherever glibc's POSIX shared memory works.
        let shm = std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .any(|l| {
                l.split(' ').nth(1) == Some("/dev/shm") && l.split(' ').nth(2) == Some("tmpfs")
            });
        assert!(shm, "this test needs /dev/shm mounted as a tmpfs");
        assert!(!direct_pays(std::path::Path::new("/dev/shm")));
        // Any filesystem that is not tmpfs or ramfs (the checkout may be on
        // a tmpfs, /proc never is).
        assert!(direct_pays(std::path::Path::new("/proc")));
    }

    /// Bytes with runs of zeros at awkward places: aligned whole blocks,
    /// unaligned runs, and a long run.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8 | 1
            })
            .collect();
        for (at, n) in [
            (8192, 4096),
            (20_000, 10_000),
            (1 << 20, 3 << 20),
            (5_000_001, 7),
        ] {
            if at + n <= len {
                v[at..at + n].fill(0);
            }
        }
        v
    }

    /// Writes `data` into a new file as parts cut at `cuts`, each part fed
    /// in pieces of `piece` bytes (all-zero pieces as zeros()), every part
    /// on its own thread, as the restore's workers do.
    fn write_parts(path: &std::path::Path, data: &[u8], cuts: &[usize], piece: usize) {
        let f = Arc::new(File::create_new(path).unwrap());
        let direct = wants_direct(data.len() as u64);
        if cuts.is_empty() {
            // A file in one part is created at length zero.
        } else {
            f.set_len(data.len() as u64).unwrap();
        }
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(data.len());
        let shared = SharedBlocks::default();
        std::thread::scope(|s| {
            for w in bounds.windows(2) {
                let (a, b) = (w[0], w[1]);
                let (shared, f) = (&shared, &f);
                s.spawn(move || {
                    let mut sink = WriteBehind::default();
                    let last = b == data.len();
                    let mut out =
                        PartWriter::new(f, a as u64, last, direct.then_some((&mut sink, shared)))
                            .unwrap();
                    for p in data[a..b].chunks(piece) {
                        if p.iter().all(|&x| x == 0) {
                            out.zeros(p.len() as u64).unwrap();
                        } else {
                            out.write(p).unwrap();
                        }
                    }
                    out.finish().unwrap();
                });
            }
        });
        assert!(
            shared.0.lock().unwrap().is_empty(),
            "a shared block was not written"
        );
    }

    #[test]
    fn parts_written_directly_read_back_as_written_with_holes() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern((6 << 20) + 123, 7);
        for (cuts, piece) in [
            (vec![], 1 << 20),
            (vec![], 65_537),
            (vec![3_000_001], 300_007),
            (vec![1_234_567, 4_194_304], 4096),
            // A last part inside one block, and one ending on a boundary.
            (vec![(6 << 20) + 100], 1 << 20),
            (vec![2 << 20, 4 << 20], 100_003),
        ] {
            let p = dir.path().join(format!("f{}-{piece}", cuts.len()));
            write_parts(&p, &data, &cuts, piece);
            let got = std::fs::read(&p).unwrap();
            assert_eq!(got.len(), data.len(), "cuts {cuts:?}");
            assert!(
                got == data,
                "contents differ for cuts {cuts:?}, pieces of {piece}"
            );
            // The 3 MiB run of zeros is at least partly a hole.
            let md = std::fs::metadata(&p).unwrap();
            assert!(
                md.blocks() * 512 <= (data.len() - (2 << 20)) as u64,
                "no hole: {} blocks for cuts {cuts:?}",
                md.blocks()
            );
        }
    }

    #[test]
    fn a_file_ending_in_zeros_gets_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = pattern(1_000_003, 3);
        data.resize((4 << 20) + 5, 0);
        for piece in [1 << 20, 99_999] {
            let p = dir.path().join(format!("tail-{piece}"));
            write_parts(&p, &data, &[], piece);
            assert!(std::fs::read(&p).unwrap() == data);
            let md = std::fs::metadata(&p).unwrap();
            assert!(md.blocks() * 512 < 2 << 20, "{} blocks", md.blocks());
        }
    }

    #[test]
    fn a_small_file_ending_in_a_few_zeros_keeps_its_length() {
        // A gzip file ends in its length, often with zero bytes: they are
        // not written, and the file must still get them.
        let dir = tempfile::tempdir().unwrap();
        for (len, zeros) in [
            (4098usize, 2usize),
            (4096 + 100, 100),
            (5000, 4999),
            (9000, 4904),
            (100, 100),
        ] {
            let mut data = pattern(len - zeros, len as u64);
            data.resize(len, 0);
            for piece in [len, 1000, 2] {
                let p = dir.path().join(format!("z-{len}-{zeros}-{piece}"));
                write_parts(&p, &data, &[], piece);
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    data,
                    "{len} bytes, {zeros} zeros, pieces of {piece}"
                );
            }
        }
    }

    /// Bytes filled straight into the stage land where `write` would have
    /// put them; bytes that do not fit whole, a fill that fails, a part's
    /// first partial block and a buffered part are left to `write`.
    #[test]
    fn bytes_filled_into_the_stage_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern((9 << 20) + 777, 13);
        for (offset, direct) in [(0usize, true), (5000, true), (0, false)] {
            let p = dir.path().join(format!("f-{offset}-{direct}"));
            let f = Arc::new(File::create_new(&p).unwrap());
            f.set_len(data.len() as u64).unwrap();
            let shared = SharedBlocks::default();
            let mut sink = WriteBehind::default();
            if offset > 0 {
                // The part before, so that the block both share is written.
                let mut head = PartWriter::new(&f, 0, false, Some((&mut sink, &shared))).unwrap();
                head.write(&data[..offset]).unwrap();
                head.finish().unwrap();
            }
            let mut out = PartWriter::new(
                &f,
                offset as u64,
                true,
                direct.then_some((&mut sink, &shared)),
            )
            .unwrap();
            let (mut filled, mut refused) = (0, 0);
            for (k, c) in data[offset..].chunks(700_001).enumerate() {
                let fails = k % 5 == 3;
                let took = out
                    .write_with(c.len(), |buf| {
                        buf.fill(0xee);
                        if fails {
                            return Err(io::Error::other("source gone"));
                        }
                        buf.copy_from_slice(c);
                        Ok(())
                    })
                    .unwrap();
                assert!(!(took && fails), "a failed fill was appended");
                if took {
                    filled += 1;
                } else {
                    refused += 1;
                    out.write(c).unwrap();
                }
            }
            out.finish().unwrap();
            assert!(
                shared.0.lock().unwrap().is_empty(),
                "a shared block was not written"
            );
            let got = std::fs::read(&p).unwrap();
            assert!(got == data, "offset {offset}, direct {direct}");
            if direct {
                assert!(
                    filled > 5 && refused > 2,
                    "{filled} filled, {refused} refused"
                );
            } else {
                assert_eq!(filled, 0, "a buffered part has no stage");
            }
        }
    }

    #[test]
    fn a_write_failing_behind_the_worker_fails_its_part_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(11 << 20, 5);
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        // A descriptor that cannot write: every write handed over fails.
        let ro = Arc::new(File::open(&p).unwrap());
        let shared = SharedBlocks::default();
        let mut sink = WriteBehind::default();
        let mut out = PartWriter::new(&ro, 0, true, Some((&mut sink, &shared))).unwrap();
        let r = data
            .chunks(1 << 20)
            .try_for_each(|c| out.write(c))
            .and_then(|()| out.finish());
        let e = r.expect_err("writes into a read-only descriptor succeeded");
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::BADF.raw_os_error())
        );
        // The same writer serves the next part as if nothing happened.
        let q = dir.path().join("g");
        let rw = Arc::new(File::create_new(&q).unwrap());
        let mut out = PartWriter::new(&rw, 0, true, Some((&mut sink, &shared))).unwrap();
        for c in data.chunks(999_999) {
            out.write(c).unwrap();
        }
        out.finish().unwrap();
        assert!(std::fs::read(&q).unwrap() == data);
    }

    #[test]
    fn small_files_and_refused_direct_io_write_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3 << 20, 11);
        assert!(!wants_direct(1000));
        write_parts(&dir.path().join("small"), &data[..1000], &[], 333);
        assert_eq!(
            std::fs::read(dir.path().join("small")).unwrap(),
            &data[..1000]
        );
        // As after a filesystem refused O_DIRECT.
        UNSUPPORTED.store(true, Ordering::Relaxed);
        assert!(!wants_direct(10 << 20));
        let p = dir.path().join("buffered");
        write_parts(&p, &data, &[777_777], 100_000);
        assert!(std::fs::read(&p).unwrap() == data);
        // Chunks larger than a piece, at offsets off the blocks: written
        // in pieces, each where it belongs.
        let p = dir.path().join("pieces");
        write_parts(&p, &data, &[PIECE + 4097], 2 * PIECE + 3);
        assert!(std::fs::read(&p).unwrap() == data);
    }
}
