//! Read-ahead for the walker: a few IO threads that bring what the walker
//! is about to touch into the kernel's caches while it works on what it
//! has.
//!
//! The walker is one thread and reads in order, one `stat`, one small file
//! at a time. On a cold cache each of those waits for the disk, so a tree
//! of small files is read at one request in flight: on the benchmark
//! machine, reading 200,000 small files took 13 s that way and 4 s with
//! eight readers. The hints here keep requests in flight without changing
//! what the walker reads or in which order: a hint fills the page, inode
//! and dentry caches and nothing else, so a dropped or failed hint costs
//! only time, and the walker's own reads stay the only ones that count.
//!
//! Hints are never waited for: when the queue is full they are dropped,
//! and the walker never blocks on an IO thread.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

/// IO threads: enough requests in flight for an SSD or a virtual disk;
/// they wait on the disk, not the CPU.
const THREADS: usize = 8;

/// Hints waiting for a thread: the read-ahead runs a few hundred files,
/// or the subdirectories of a few directories, ahead of the walker.
const QUEUE: usize = 256;

/// What to bring into the caches.
enum Hint {
    /// A directory's listing and its entries' metadata.
    Dir(PathBuf),
    /// The first `len` bytes of a file.
    Read(PathBuf, u64),
}

/// The IO threads; dropping this stops them (hints still queued are
/// dropped: the walk they were for is over).
pub(super) struct Prefetch {
    tx: Option<Sender<Hint>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Prefetch {
    /// Starts the IO threads; `None` when none can be started (the walker
    /// then reads as before).
    pub(super) fn start() -> Option<Prefetch> {
        let (tx, rx) = bounded::<Hint>(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let (rx, stop) = (rx.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name(format!("cairn-readahead-{i}"))
                .stack_size(128 << 10)
                .spawn(move || serve(rx, &stop));
            match t {
                Ok(t) => threads.push(t),
                Err(_) => break,
            }
        }
        if threads.is_empty() {
            return None;
        }
        Some(Prefetch {
            tx: Some(tx),
            stop,
            threads,
        })
    }

    fn hint(&self, h: Hint) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(h);
        }
    }

    /// The directory `path` will be listed soon, and its entries looked at.
    pub(super) fn dir(&self, path: PathBuf) {
        self.hint(Hint::Dir(path));
    }

    /// The first `len` bytes of the file `path` will be read soon.
    pub(super) fn read(&self, path: PathBuf, len: u64) {
        if len > 0 {
            self.hint(Hint::Read(path, len));
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(rx: Receiver<Hint>, stop: &AtomicBool) {
    for h in rx {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match h {
            Hint::Dir(path) => {
                if let Ok(rd) = std::fs::read_dir(&path) {
                    for e in rd.flatten() {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        // `DirEntry::metadata` is an `lstat` of the entry.
                        let _ = e.metadata();
                    }
                }
            }
            Hint::Read(path, len) => {
                if let Ok(f) = super::walker::open_noatime(&path) {
                    // The kernel starts reading and returns: the pages
                    // arrive while this thread takes the next hint.
                    let _ = rustix::fs::fadvise(
                        f.as_fd(),
                        0,
                        std::num::NonZeroU64::new(len),
                        rustix::fs::Advice::WillNeed,
                    );
                }
            }
        }
    }
}
