//! The FUSE filesystem: inode numbers to snapshot entries, their
//! attributes, directory listings, extended attributes and file bytes.
//!
//! Requests are served by several threads at once. File contents come in
//! whole chunks from the chunk cache; a file read sequentially has the
//! chunks ahead of the reader fetched in the background (read-ahead), so
//! decoding runs on every core while the reader copies. A chunk that does
//! not authenticate is never handed out: the read fails with EIO and the
//! file's path and the damage are logged once.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_format::blob::BlobKind;
use cairn_format::tree::{Listing, Node, NodeType, Time};
use cairn_repo::{BlobReader, Id, Location, Repo};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::cache::Cache;
use crate::disk::DiskCache;
use crate::inodes::{Dir, Inodes};
use crate::layout::Layout;

const ROOT: u64 = 1;
const SNAPSHOTS: u64 = 2;
const GROUPS: u64 = 3;
const TAGS: u64 = 4;
/// First inode of the entries above the trees (see [`Virt`]).
const VIRT: u64 = 5;

/// Snapshot contents never change: the kernel may keep what it learnt.
const TTL: Duration = Duration::from_secs(3600);
/// How far ahead of a sequential reader chunks are fetched.
const READ_AHEAD: u64 = 8 << 20;
/// Readers kept for reuse, each with its own read window.
const POOLED_READERS: usize = 8;

/// Sizes of the caches and threads of a mount.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Bytes of decoded chunks kept in memory.
    pub chunk_cache: usize,
    /// Bytes of directory listings kept in memory.
    pub listing_cache: usize,
    /// Threads fetching chunks ahead of sequential readers.
    pub prefetchers: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            chunk_cache: 32 << 20,
            listing_cache: 16 << 20,
            prefetchers: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
        }
    }
}

/// An entry above the trees, at inode `VIRT + index`.
enum Virt {
    /// The root directory of snapshot `i` (also a tree directory).
    Snap(usize),
    /// A group's or tag's directory.
    Dir,
    /// A link into `snapshots/`.
    Link(String),
}

/// A file being read.
struct OpenFile {
    content: Vec<Id>,
    /// Where each chunk ends in the file.
    ends: Vec<u64>,
    /// The offset a sequential reader asks for next.
    next: AtomicU64,
    /// Chunks before this one were queued for read-ahead.
    ahead: AtomicUsize,
}

/// Bytes for a read.
enum Bytes {
    Slice(Arc<Vec<u8>>, std::ops::Range<usize>),
    Joined(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Slice(d, r) => &d[r.clone()],
            Bytes::Joined(v) => v,
        }
    }
}

/// Why a request failed: the answer for the kernel, and for damage or
/// storage failures what to log.
struct Failure {
    errno: Errno,
    log: Option<String>,
}

impl Failure {
    fn missing() -> Self {
        Failure {
            errno: Errno::ENOENT,
            log: None,
        }
    }
    fn repo(e: cairn_repo::Error) -> Self {
        Failure {
            errno: Errno::EIO,
            log: Some(e.to_string()),
        }
    }
}

type Res<T> = std::result::Result<T, Failure>;

/// What the filesystem shares with its read-ahead threads.
pub(crate) struct Inner {
    repo: &'static Repo,
    readers: Mutex<Vec<BlobReader<'static>>>,
    listings: Cache<Listing>,
    chunks: Cache<Vec<u8>>,
    /// Chunks whose damage was logged, so a retried read logs once.
    logged: Mutex<HashSet<Id>>,
    disk: Option<DiskCache>,
}

impl Inner {
    fn with_reader<T>(&self, f: impl FnOnce(&mut BlobReader<'static>) -> T) -> T {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut r = pooled.unwrap_or_else(|| self.repo.reader());
        let out = f(&mut r);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED_READERS {
            pool.push(r);
        }
        out
    }

    fn listing(&self, tree: &Id) -> Res<Arc<Listing>> {
        self.listings
            .get(tree, || {
                let direct = || self.with_reader(|r| r.load_listing(tree));
                let l = match &self.disk {
                    Some(disk) => self.through(
                        disk,
                        tree,
                        |loc, record| self.repo.decode_listing(tree, loc, record),
                        direct,
                    )?,
                    None => direct()?,
                };
                let bytes = l.held_bytes();
                Ok((l, bytes))
            })
            .map_err(Failure::repo)
    }

    fn chunk(&self, id: &Id) -> Result<Arc<Vec<u8>>, cairn_repo::Error> {
        self.chunks.get(id, || {
            let direct = || {
                let mut buf = Vec::new();
                let kind = self.with_reader(|r| r.load_into(id, &mut buf))?;
                if kind != BlobKind::Chunk {
                    return Err(cairn_repo::Error::MissingBlob(*id));
                }
                Ok(buf)
            };
            let decode = |loc: &Location, record: &[u8]| {
                let mut plain = Vec::new();
                match self
                    .repo
                    .decode_blob_into(id, loc, record, &mut Vec::new(), &mut plain)?
                {
                    BlobKind::Chunk => Ok(plain),
                    _ => Err(cairn_repo::Error::MissingBlob(*id)),
                }
            };
            let buf = match &self.disk {
                Some(disk) => self.through(disk, id, decode, direct)?,
                None => direct()?,
            };
            let bytes = buf.capacity();
            Ok((buf, bytes))
        })
    }

    /// Blob `id` from the disk cache, or fetched and kept there. Records
    /// are authenticated (by `decode`) on every use: one that fails is
    /// dropped from the cache; a fetched one that fails is not kept, and
    /// the blob is read the usual way (`direct`), where another stored
    /// copy may still serve.
    fn through<T>(
        &self,
        disk: &DiskCache,
        id: &Id,
        decode: impl Fn(&Location, &[u8]) -> Result<T, cairn_repo::Error>,
        direct: impl FnOnce() -> Result<T, cairn_repo::Error>,
    ) -> Result<T, cairn_repo::Error> {
        let mut record = Vec::new();
        if disk.get(id, &mut record) {
            if let Some(Ok(v)) = self.repo.index().get(id).map(|loc| decode(&loc, &record)) {
                return Ok(v);
            }
            disk.forget(id);
        }
        let loc = self.with_reader(|r| r.read_record(id, &mut record))?;
        match decode(&loc, &record) {
            Ok(v) => {
                disk.put(id, &record);
                Ok(v)
            }
            Err(_) => direct(),
        }
    }
}

/// The mounted repository.
pub struct Fs {
    inner: Arc<Inner>,
    layout: Layout,
    virt: Vec<Virt>,
    /// Entries of the directories above the trees, by inode.
    vdirs: HashMap<u64, Vec<(String, u64)>>,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    prefetch: crossbeam_channel::Sender<Id>,
    /// The first inode seen of each hard-linked file, by snapshot and the
    /// file's identity at backup time: its other names get the same inode,
    /// so the kernel (and `find`, `du`, `tar`) see one file.
    links: Mutex<HashMap<(u32, u64, u64), u64>>,
    /// The chunk of a run of zeros as long as a chunk can be (holes of
    /// sparse files are cut into these): not counted as allocated.
    zero_chunk: Id,
    zero_len: u64,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

impl Fs {
    /// A filesystem over `repo`'s snapshots as laid out in `layout`.
    pub fn new(
        repo: &'static Repo,
        layout: Layout,
        tuning: &Tuning,
        disk: Option<DiskCache>,
    ) -> Fs {
        let inner = Arc::new(Inner {
            repo,
            readers: Mutex::new(Vec::new()),
            listings: Cache::new(tuning.listing_cache),
            chunks: Cache::new(tuning.chunk_cache),
            logged: Mutex::new(HashSet::new()),
            disk,
        });
        let (tx, rx) = crossbeam_channel::bounded::<Id>(1024);
        for _ in 0..tuning.prefetchers.max(1) {
            let (inner, rx) = (inner.clone(), rx.clone());
            std::thread::Builder::new()
                .name("cairn-read-ahead".into())
                .spawn(move || {
                    for id in rx {
                        // A failure is found again, and reported, by the
                        // read that needs the chunk.
                        let _ = inner.chunk(&id);
                    }
                })
                .expect("spawn read-ahead thread");
        }
        let mut virt = Vec::new();
        let mut vdirs: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
        let mut inodes_of_snaps = Vec::new();
        for (i, s) in layout.snaps.iter().enumerate() {
            let ino = VIRT + virt.len() as u64;
            virt.push(Virt::Snap(i));
            inodes_of_snaps.push(ino);
            vdirs
                .entry(SNAPSHOTS)
                .or_default()
                .push((s.name.clone(), ino));
        }
        for (parent, dirs, up) in [
            (GROUPS, &layout.groups, "../../snapshots/"),
            (TAGS, &layout.tags, "../../snapshots/"),
        ] {
            for d in dirs {
                let ino = VIRT + virt.len() as u64;
                virt.push(Virt::Dir);
                vdirs.entry(parent).or_default().push((d.name.clone(), ino));
                let mut entries = Vec::new();
                for (name, snap) in &d.links {
                    let link = VIRT + virt.len() as u64;
                    virt.push(Virt::Link(format!("{up}{}", layout.snaps[*snap].name)));
                    entries.push((name.clone(), link));
                }
                vdirs.insert(ino, entries);
            }
        }
        vdirs.insert(
            ROOT,
            vec![
                ("snapshots".into(), SNAPSHOTS),
                ("groups".into(), GROUPS),
                ("tags".into(), TAGS),
            ],
        );
        for d in [SNAPSHOTS, GROUPS, TAGS] {
            vdirs.entry(d).or_default();
        }
        let mut inodes = Inodes::new(VIRT + virt.len() as u64);
        for (i, ino) in inodes_of_snaps.into_iter().enumerate() {
            inodes.add_root(ino, layout.snaps[i].root, SNAPSHOTS, i as u32);
        }
        let max = repo.config().chunk_max as usize;
        Fs {
            inner,
            layout,
            virt,
            vdirs,
            inodes: Mutex::new(inodes),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            prefetch: tx,
            links: Mutex::new(HashMap::new()),
            zero_chunk: repo.blob_id(&vec![0; max]),
            zero_len: max as u64,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            started: SystemTime::now(),
        }
    }

    fn inodes(&self) -> std::sync::MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn virt(&self, ino: u64) -> Option<&Virt> {
        ino.checked_sub(VIRT)
            .and_then(|i| self.virt.get(usize::try_from(i).ok()?))
    }

    /// The tree entry at `ino`, registering it when it is a directory.
    fn node(&self, ino: u64) -> Res<Node> {
        let (place, dir) = {
            let inodes = self.inodes();
            let place = inodes.place(ino).ok_or_else(Failure::missing)?;
            let dir = inodes.dir(place.dir).ok_or_else(Failure::missing)?;
            (place, dir)
        };
        let listing = self.inner.listing(&dir.tree)?;
        let node = listing.node(place.pos).ok_or_else(Failure::missing)?;
        if let (NodeType::Dir, Some(sub)) = (node.node_type(), node.subtree) {
            self.inodes().add_dir(ino, sub, place.dir);
        }
        Ok(node)
    }

    /// A tree directory's listing, the inode of its first entry, and the
    /// directory.
    fn children(&self, ino: u64) -> Res<(Arc<Listing>, u64, Dir)> {
        let dir = match self.inodes().dir(ino) {
            Some(d) => d,
            None => {
                // A directory not registered yet (its entry was numbered
                // but never looked at), or not a directory at all.
                let n = self.node(ino)?;
                if n.node_type() != NodeType::Dir {
                    return Err(Failure {
                        errno: Errno::ENOTDIR,
                        log: None,
                    });
                }
                self.inodes().dir(ino).ok_or_else(Failure::missing)?
            }
        };
        let listing = self.inner.listing(&dir.tree)?;
        let base = self
            .inodes()
            .base(ino, listing.len())
            .ok_or_else(Failure::missing)?;
        Ok((listing, base, dir))
    }

    /// The inode under which the kernel knows entry `ino` of a directory
    /// of snapshot `snap`: its own, or for a hard-linked file the first
    /// one seen of its links.
    fn canonical(&self, ino: u64, n: &Node, snap: u32) -> u64 {
        match n.link {
            Some((dev, i)) if n.node_type() == NodeType::File && n.nlink > 1 => *self
                .links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((snap, dev, i))
                .or_insert(ino),
            _ => ino,
        }
    }

    fn node_attr(&self, ino: u64, n: &Node) -> FileAttr {
        let mut a = node_attr(ino, n);
        if n.node_type() == NodeType::File {
            let holes = n.content.iter().filter(|c| **c == self.zero_chunk).count() as u64;
            a.blocks = n.size.saturating_sub(holes * self.zero_len).div_ceil(512);
        }
        a
    }

    /// A path for log lines, from the mount's root.
    fn path(&self, ino: u64) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut at = ino;
        for _ in 0..4096 {
            if let Some(Virt::Snap(i)) = self.virt(at) {
                parts.push(self.layout.snaps[*i].name.clone());
                parts.push("snapshots".into());
                break;
            }
            let place = self.inodes().place(at);
            let Some(place) = place else {
                parts.push(format!("inode {at}"));
                break;
            };
            let dir = self.inodes().dir(place.dir);
            let name = dir
                .and_then(|d| self.inner.listing(&d.tree).ok())
                .and_then(|l| {
                    l.name(place.pos)
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                })
                .unwrap_or_else(|| "?".into());
            parts.push(name);
            at = place.dir;
        }
        parts.reverse();
        parts.join("/")
    }

    fn fail(&self, ino: u64, f: Failure) -> Errno {
        if let Some(msg) = f.log {
            eprintln!("cairn mount: {}: {msg}", self.path(ino));
        }
        f.errno
    }

    fn attr(&self, ino: u64) -> Res<FileAttr> {
        match ino {
            ROOT | SNAPSHOTS | GROUPS | TAGS => return Ok(self.dir_attr(ino, self.started)),
            _ => {}
        }
        match self.virt(ino) {
            Some(Virt::Snap(i)) => Ok(self.dir_attr(ino, time_of(self.layout.snaps[*i].time_ns))),
            Some(Virt::Dir) => Ok(self.dir_attr(ino, self.started)),
            Some(Virt::Link(target)) => {
                let mut a = self.dir_attr(ino, self.started);
                a.kind = FileType::Symlink;
                a.perm = 0o777;
                a.size = target.len() as u64;
                a.nlink = 1;
                Ok(a)
            }
            None => self.node(ino).map(|n| self.node_attr(ino, &n)),
        }
    }

    fn dir_attr(&self, ino: u64, t: SystemTime) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The entries of directory `ino` from `offset` on, `.` and `..`
    /// first, as (inode, offset of the next, name, node for tree entries);
    /// `each` returns true when the reply is full.
    fn list(
        &self,
        ino: u64,
        offset: u64,
        mut each: impl FnMut(u64, u64, &[u8], Option<Node>) -> bool,
    ) -> Res<()> {
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        if let Some(entries) = self.vdirs.get(&ino) {
            let dots = [
                (".".to_string(), ino),
                ("..".to_string(), self.vparent(ino)),
            ];
            for (k, (name, child)) in dots.iter().chain(entries.iter()).enumerate().skip(skip) {
                if each(*child, k as u64 + 1, name.as_bytes(), None) {
                    break;
                }
            }
            return Ok(());
        }
        let (listing, base, dir) = self.children(ino)?;
        if skip == 0 && each(ino, 1, b".", None) {
            return Ok(());
        }
        if skip <= 1 && each(dir.parent, 2, b"..", None) {
            return Ok(());
        }
        for pos in skip.max(2) - 2..listing.len() {
            let child = base + pos as u64;
            let Some(node) = listing.node(pos) else {
                break;
            };
            if let (NodeType::Dir, Some(sub)) = (node.node_type(), node.subtree) {
                self.inodes().add_dir(child, sub, ino);
            }
            let name = node.name.clone();
            let child = self.canonical(child, &node, dir.snap);
            if each(child, pos as u64 + 3, &name, Some(node)) {
                break;
            }
        }
        Ok(())
    }

    fn vparent(&self, ino: u64) -> u64 {
        match ino {
            ROOT | SNAPSHOTS | GROUPS | TAGS => ROOT,
            _ => self
                .vdirs
                .iter()
                .find(|(_, v)| v.iter().any(|(_, c)| *c == ino))
                .map_or(ROOT, |(p, _)| *p),
        }
    }

    fn open_file(&self, ino: u64) -> Res<OpenFile> {
        let node = self.node(ino)?;
        if node.node_type() != NodeType::File {
            return Err(Failure {
                errno: Errno::EINVAL,
                log: None,
            });
        }
        let index = self.inner.repo.index();
        let mut ends = Vec::with_capacity(node.content.len());
        let mut at = 0u64;
        for id in &node.content {
            let Some(loc) = index.get(id) else {
                return Err(Failure {
                    errno: Errno::EIO,
                    log: Some(format!(
                        "chunk {} is not in the index; run `cairn check`",
                        id.short()
                    )),
                });
            };
            at += u64::from(loc.raw_len);
            ends.push(at);
        }
        Ok(OpenFile {
            content: node.content,
            ends,
            next: AtomicU64::new(0),
            ahead: AtomicUsize::new(0),
        })
    }

    /// Up to `size` bytes of `f` at `offset`: a slice of one cached chunk
    /// when the read falls inside it (no copy), else the chunks' bytes put
    /// together.
    fn read_at(&self, f: &OpenFile, offset: u64, size: usize) -> Res<Bytes> {
        let first = f.ends.partition_point(|&e| e <= offset);
        let sequential = f.next.swap(offset + size as u64, Ordering::Relaxed) == offset;
        if sequential {
            self.read_ahead(f, first);
        }
        let mut out = Vec::new();
        let mut pos = offset;
        let mut i = first;
        while out.len() < size && i < f.content.len() {
            let data = self
                .inner
                .chunk(&f.content[i])
                .map_err(|e| self.damaged(f, i, e))?;
            let start = if i == 0 { 0 } else { f.ends[i - 1] };
            let a = (pos - start) as usize;
            if a >= data.len() {
                break;
            }
            let b = data.len().min(a + (size - out.len()));
            if out.is_empty() && (b - a == size || i + 1 == f.content.len()) {
                return Ok(Bytes::Slice(data, a..b));
            }
            out.extend_from_slice(&data[a..b]);
            pos += (b - a) as u64;
            i += 1;
        }
        Ok(Bytes::Joined(out))
    }

    fn damaged(&self, f: &OpenFile, i: usize, e: cairn_repo::Error) -> Failure {
        let id = f.content[i];
        let first = self
            .inner
            .logged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        let msg = if e.is_integrity() {
            format!(
                "{e}; reads of this file fail with an I/O error (run `cairn check --read-data`)"
            )
        } else {
            format!("cannot read chunk {}: {e}", id.short())
        };
        Failure {
            errno: Errno::EIO,
            log: first.then_some(msg),
        }
    }

    /// Queues the chunks up to [`READ_AHEAD`] bytes past chunk `from`.
    fn read_ahead(&self, f: &OpenFile, from: usize) {
        let limit = f.ends.get(from).copied().unwrap_or(0) + READ_AHEAD;
        let mut i = f.ahead.load(Ordering::Relaxed).max(from + 1);
        while i < f.content.len() && f.ends[i - 1] < limit {
            let id = f.content[i];
            if !self.inner.chunks.has(&id) && self.prefetch.try_send(id).is_err() {
                break;
            }
            i += 1;
        }
        f.ahead.fetch_max(i, Ordering::Relaxed);
    }
}

fn time_of(ns: i64) -> SystemTime {
    from_parts(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

fn from_parts(sec: i64, nsec: u32) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(u64::from(nsec))
    }
}

fn systime(t: Time) -> SystemTime {
    from_parts(t.sec, t.nsec)
}

fn file_type(t: NodeType) -> FileType {
    match t {
        NodeType::File => FileType::RegularFile,
        NodeType::Dir => FileType::Directory,
        NodeType::Symlink => FileType::Symlink,
        NodeType::Fifo => FileType::NamedPipe,
        NodeType::CharDev => FileType::CharDevice,
        NodeType::BlockDev => FileType::BlockDevice,
        NodeType::Socket => FileType::Socket,
    }
}

/// A `st_rdev` (what backups store) in the kernel's 32-bit form that FUSE
/// carries (`new_encode_dev`).
fn rdev32(rdev: u64) -> u32 {
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12)
}

fn node_attr(ino: u64, n: &Node) -> FileAttr {
    let size = match n.node_type() {
        NodeType::Symlink => n.target.as_ref().map_or(0, |t| t.len() as u64),
        // Backups do not keep a directory's size, which only its own
        // filesystem can give; ext4's usual one reads as expected.
        NodeType::Dir if n.size == 0 => 4096,
        _ => n.size,
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: systime(if n.atime == Time::default() {
            n.mtime
        } else {
            n.atime
        }),
        mtime: systime(n.mtime),
        ctime: systime(n.ctime),
        crtime: systime(n.mtime),
        kind: file_type(n.node_type()),
        perm: (n.mode & 0o7777) as u16,
        nlink: u32::try_from(n.nlink.max(1)).unwrap_or(u32::MAX),
        uid: n.uid,
        gid: n.gid,
        rdev: rdev32(n.rdev),
        blksize: 128 << 10,
        flags: 0,
    }
}

fn xattr_reply(data: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl fuser::Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listing and looking up in one request: `find` and `ls -l` over
        // a large directory make one round trip per page, not per entry.
        let _ = config.add_capabilities(
            InitFlags::FUSE_DO_READDIRPLUS
                | InitFlags::FUSE_READDIRPLUS_AUTO
                | InitFlags::FUSE_PARALLEL_DIROPS
                | InitFlags::FUSE_CACHE_SYMLINKS,
        );
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = parent.0;
        let found = if let Some(entries) = self.vdirs.get(&parent) {
            entries
                .iter()
                .find(|(n, _)| n.as_bytes() == name.as_bytes())
                .map(|(_, ino)| *ino)
                .ok_or_else(Failure::missing)
                .and_then(|ino| self.attr(ino))
        } else {
            self.children(parent).and_then(|(listing, base, dir)| {
                let pos = listing.find(name.as_bytes()).ok_or_else(Failure::missing)?;
                let child = base + pos as u64;
                let node = self.node(child)?;
                Ok(self.node_attr(self.canonical(child, &node, dir.snap), &node))
            })
        };
        match found {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(f) => reply.error(self.fail(parent, f)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(f) => reply.error(self.fail(ino.0, f)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        if let Some(Virt::Link(t)) = self.virt(ino.0) {
            return reply.data(t.as_bytes());
        }
        match self.node(ino.0) {
            Ok(n) => match &n.target {
                Some(t) if n.node_type() == NodeType::Symlink => reply.data(t),
                _ => reply.error(Errno::EINVAL),
            },
            Err(f) => reply.error(self.fail(ino.0, f)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_file(ino.0) {
            Ok(f) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, Arc::new(f));
                // The bytes of a snapshot never change: the page cache
                // may keep them from one open to the next.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(f) => reply.error(self.fail(ino.0, f)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned();
        let Some(f) = f else {
            return reply.error(Errno::EBADF);
        };
        match self.read_at(&f, offset, size as usize) {
            Ok(data) => reply.data(data.as_slice()),
            Err(e) => reply.error(self.fail(ino.0, e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.vdirs.contains_key(&ino.0) {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        }
        match self.children(ino.0) {
            // Listings never change either.
            Ok(_) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(f) => reply.error(self.fail(ino.0, f)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.list(ino.0, offset, |child, next, name, node| {
            let kind = match node {
                Some(n) => file_type(n.node_type()),
                None => match self.virt(child) {
                    Some(Virt::Link(_)) => FileType::Symlink,
                    _ => FileType::Directory,
                },
            };
            reply.add(INodeNo(child), next, kind, OsStr::from_bytes(name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(f) => reply.error(self.fail(ino.0, f)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let own = match self.attr(ino.0) {
            Ok(a) => a,
            Err(f) => return reply.error(self.fail(ino.0, f)),
        };
        let r = self.list(ino.0, offset, |child, next, name, node| {
            let attr = match node {
                Some(n) => self.node_attr(child, &n),
                None if name == b"." || name == b".." => own,
                None => match self.attr(child) {
                    Ok(a) => a,
                    Err(_) => return false,
                },
            };
            reply.add(
                INodeNo(child),
                next,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(f) => reply.error(self.fail(ino.0, f)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if ino.0 < VIRT || self.virt(ino.0).is_some() {
            return reply.error(Errno::NO_XATTR);
        }
        match self.node(ino.0) {
            Ok(n) => match n.xattrs.iter().find(|(k, _)| k[..] == *name.as_bytes()) {
                Some((_, v)) => xattr_reply(v, size, reply),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(f) => reply.error(self.fail(ino.0, f)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if ino.0 < VIRT || self.virt(ino.0).is_some() {
            return xattr_reply(&[], size, reply);
        }
        match self.node(ino.0) {
            Ok(n) => {
                let mut names = Vec::new();
                for (k, _) in &n.xattrs {
                    names.extend_from_slice(k);
                    names.push(0);
                }
                xattr_reply(&names, size, reply);
            }
            Err(f) => reply.error(self.fail(ino.0, f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_reach_the_kernel_form() {
        // makedev(8, 1) and makedev(259, 300) as glibc encodes them.
        let glibc = |major: u64, minor: u64| {
            (minor & 0xff)
                | ((major & 0xfff) << 8)
                | ((minor & !0xff) << 12)
                | ((major & !0xfff) << 32)
        };
        let kernel =
            |major: u32, minor: u32| (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        assert_eq!(rdev32(glibc(8, 1)), kernel(8, 1));
        assert_eq!(rdev32(glibc(259, 300)), kernel(259, 300));
        assert_eq!(rdev32(0), 0);
    }

    #[test]
    fn times_before_the_epoch() {
        assert_eq!(
            time_of(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(
            systime(Time {
                sec: -2,
                nsec: 500_000_000
            }),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(
            systime(Time { sec: 1, nsec: 1 }),
            UNIX_EPOCH + Duration::new(1, 1)
        );
    }
}
