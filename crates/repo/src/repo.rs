//! Opening, reading and writing a repository.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cairn_crypto::{KdfParams, SealKey};
use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_format::config::Config;
use cairn_format::index::IndexPack;
use cairn_format::keyfile::{KeyFile, Role};
use cairn_format::pack::WRAPPED_LEN;
use cairn_format::snapshot::{Body, Envelope};
use cairn_format::tree::{Listing, Tree};
use cairn_storage::{Kind, ObjectInfo, Storage};

use crate::blobs::open_record_in_place;
use crate::blocks::{BLOCK, Block, BlockCache};
use crate::garbage::Condemned;
use crate::keys::{KeyMaterial, KeySource, Unlock, read_key_file, unlock, write_key_file};
use crate::snapshots::SnapshotInfo;
use crate::{BlobSealer, Error, PackSink, Result};
use cairn_store::{Index, Location, PackInfo};
use cairn_store::{
    TableLimits, load_index_tiered, read_config, read_pack_trailer, write_index_file,
};

/// How a new repository is set up.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Passphrase protecting the owner key stored in the repository.
    pub passphrase: Option<Vec<u8>>,
    /// Directory where the owner key is written, as `<repo-id>.key`,
    /// when there is no passphrase.
    pub key_dir: Option<PathBuf>,
    /// Who creates it, e.g. `alice@laptop`.
    pub label: String,
    /// Chunk size bounds (min, avg, max).
    pub chunk: (u32, u32, u32),
    /// Argon2id cost.
    pub kdf: KdfParams,
}

/// Default [`InitOptions`]: 128 KiB / 512 KiB / 2 MiB chunks.
///
/// Measured on the benchmark corpus over three repositories each (every
/// repository has its own cut points, and its size varies by about 2%
/// between them): a 512 KiB average stored 4% less than 1 MiB and 14%
/// less than 2 MiB, because data repeated inside large files is found
/// again in smaller pieces; zstd gains less from larger blobs than that.
pub fn init_options() -> InitOptions {
    InitOptions {
        passphrase: None,
        key_dir: None,
        label: String::new(),
        chunk: (128 << 10, 512 << 10, 2 << 20),
        kdf: KdfParams::default(),
    }
}

/// A backup's session key: seals its blobs, wrapped to the owner.
#[derive(Clone)]
pub struct Session {
    /// The key.
    pub key: SealKey,
    /// Its public ID.
    pub key_id: [u8; 16],
    /// Wrapped to the owner's public key.
    pub wrapped: [u8; WRAPPED_LEN],
}

/// An open repository.
pub struct Repo {
    storage: Arc<dyn Storage>,
    config: Config,
    keys: KeyMaterial,
    index: Index,
    limits: TableLimits,
    index_problems: Vec<String>,
    condemned: Condemned,
    session_keys: Mutex<HashMap<[u8; 16], SealKey>>,
    /// Shared by the readers where each read is a request.
    blocks: Option<BlockCache>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repo({})", self.storage.location())
    }
}

impl Repo {
    /// Creates a repository and its owner key.
    pub fn init(storage: Arc<dyn Storage>, opts: &InitOptions) -> Result<Repo> {
        match storage.get(Kind::Config, "config") {
            Ok(_) => return Err(Error::AlreadyInitialized(storage.location())),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if opts.passphrase.is_none() && opts.key_dir.is_none() {
            return Err(Error::NoKey(
                "a new repository needs a passphrase or a key file path".into(),
            ));
        }
        storage.prepare()?;
        let repo_id = cairn_crypto::random::<16>()?;
        let mut keys = KeyMaterial::generate_owner()?;
        let kf = keys.to_keyfile(repo_id, opts.passphrase.as_deref(), &opts.label, opts.kdf)?;
        match &opts.passphrase {
            Some(_) => {
                let name = hex::encode(cairn_crypto::random::<16>()?);
                storage.put(Kind::Key, &name, &kf.encode())?;
                keys.name = Some(name);
            }
            None => {
                let dir = opts.key_dir.as_deref().expect("checked");
                write_key_file(&dir.join(format!("{}.key", hex::encode(repo_id))), &kf)?
            }
        }
        let (min, avg, max) = opts.chunk;
        let config = Config::new(repo_id, min, avg, max, crate::now_ns());
        // The config is written last: a crash before leaves no repository.
        storage.put(Kind::Config, "config", &config.encode())?;
        Ok(Repo::with(storage, config, keys))
    }

    /// A repository in memory with fresh owner keys and the default
    /// config. A dry run into a repository that does not exist yet
    /// measures against it (everything is new) and so creates nothing: no
    /// directory, no key.
    pub fn scratch() -> Result<Repo> {
        let storage: Arc<dyn Storage> = Arc::new(cairn_storage::MemoryStorage::new(
            std::env::temp_dir().join("cairn-scratch-staging"),
        ));
        storage.prepare()?;
        let keys = KeyMaterial::generate_owner()?;
        let (min, avg, max) = init_options().chunk;
        let config = Config::new(
            cairn_crypto::random::<16>()?,
            min,
            avg,
            max,
            crate::now_ns(),
        );
        storage.put(Kind::Config, "config", &config.encode())?;
        Ok(Repo::with(storage, config, keys))
    }

    fn with(storage: Arc<dyn Storage>, config: Config, keys: KeyMaterial) -> Repo {
        let blocks = (storage.read_concurrency() > 1).then(BlockCache::default);
        Repo {
            storage,
            config,
            keys,
            index: Index::new(),
            limits: TableLimits::default(),
            index_problems: Vec::new(),
            condemned: Condemned::default(),
            session_keys: Mutex::new(HashMap::new()),
            blocks,
        }
    }

    /// Opens a repository with a key and loads its index.
    pub fn open(storage: Arc<dyn Storage>, source: &KeySource) -> Result<Repo> {
        Repo::open_with(storage, source, TableLimits::default())
    }

    /// [`Repo::open`] with limits on the index held in memory: past
    /// `limits.mem_entries` blobs it moves to a temporary file in
    /// `limits.dir`.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        source: &KeySource,
        limits: TableLimits,
    ) -> Result<Repo> {
        let config = read_config(&*storage)?;
        let keys = open_key(&*storage, &config, source)?;
        let mut repo = Repo::with(storage, config, keys);
        repo.limits = limits.clone();
        repo.load_index(limits)?;
        Ok(repo)
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The key in use.
    pub fn keys(&self) -> &KeyMaterial {
        &self.keys
    }
    /// The loaded index.
    pub fn index(&self) -> &Index {
        &self.index
    }
    /// Limits on what the index, and sets of blob IDs built beside it,
    /// hold in memory.
    pub fn table_limits(&self) -> &TableLimits {
        &self.limits
    }
    /// What the garbage records said when the repository was opened.
    pub fn condemned(&self) -> &Condemned {
        &self.condemned
    }
    /// Index files that could not be read, for `check`.
    pub fn index_problems(&self) -> &[String] {
        &self.index_problems
    }
    /// Repository ID as hex (names the local cache).
    pub fn id_hex(&self) -> String {
        hex::encode(self.config.repo_id)
    }
    /// Content ID of a plaintext blob under this repository's dedup key.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        Id(self.keys.dedup.id(data))
    }

    fn load_index(&mut self, limits: TableLimits) -> Result<()> {
        // Garbage records are read before the index: a record written
        // after this point is newer than the backup, and its packs are
        // checked again at commit (`garbage::check_commit`).
        self.condemned = Condemned::load(&*self.storage)?;
        let condemned = &self.condemned;
        let tier = |p: &Id| u8::from(condemned.contains(p));
        let loaded = load_index_tiered(&*self.storage, limits, &tier, 2, &[])?;
        self.index = loaded.index;
        self.index_problems = loaded.problems;
        Ok(())
    }

    /// Finds packs that no index file lists (left by an interrupted backup),
    /// reads their trailers, and indexes them so their blobs are reused
    /// instead of uploaded again; `listed` is the storage's pack listing.
    /// Returns the number of packs recovered.
    pub fn recover_unindexed(&mut self, listed: &[ObjectInfo]) -> Result<usize> {
        let mut found = Vec::new();
        for obj in listed {
            let Some(id) = Id::from_hex(&obj.name) else {
                continue;
            };
            // A condemned pack is garbage even if no index lists it.
            if self.index.has_pack(&id) || self.condemned.contains(&id) {
                continue;
            }
            if let Ok(p) = read_pack_trailer(&*self.storage, &id, obj.size) {
                found.push(p);
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        let n = found.len();
        self.write_index(found)?;
        Ok(n)
    }

    /// Limits deduplication to packs this writer may trust: those the
    /// storage lists to it (a box lists a source only its own packs and
    /// the owner's) and, where origin marks are readable (the owner),
    /// none that a source uploaded. Blobs only in other packs are stored
    /// again, so garbage a source uploaded under a predicted ID never
    /// ends up in this writer's snapshots. `listed` is the storage's pack
    /// listing. Returns the packs left out.
    pub fn scope_dedup(&mut self, listed: &[ObjectInfo]) -> Result<usize> {
        let listed: std::collections::HashSet<&str> =
            listed.iter().map(|o| o.name.as_str()).collect();
        let marked: std::collections::HashSet<Id> = match self.storage.list(Kind::Origin) {
            Ok(l) => l
                .iter()
                .filter_map(|o| cairn_format::maint::parse_origin_name(&o.name))
                .map(|(p, _)| p)
                .collect(),
            // Behind a box, a source may not read marks: its listing is
            // already scoped.
            Err(cairn_storage::Error::Refused(_)) => Default::default(),
            Err(e) => return Err(e.into()),
        };
        let out: Vec<Id> = self
            .index
            .packs()
            .iter()
            .filter(|p| !listed.contains(p.id.to_hex().as_str()) || marked.contains(&p.id))
            .map(|p| p.id)
            .collect();
        for p in &out {
            self.index.condemn(p);
        }
        Ok(out.len())
    }

    /// Writes one index file listing `packs` and adds them to the index.
    pub fn write_index(&mut self, packs: Vec<IndexPack>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        write_index_file(&*self.storage, &packs)?;
        self.index.add_packs(&packs);
        Ok(())
    }

    /// Starts a backup session: a fresh key wrapped to the owner.
    pub fn new_session(&self) -> Result<Session> {
        let key = SealKey::generate()?;
        Ok(Session {
            key_id: key.key_id(),
            wrapped: self.keys.owner_public.wrap(&key)?,
            key,
        })
    }

    /// A pack sink for a session.
    pub fn sink(&self, s: &Session) -> PackSink {
        PackSink::new(self.storage.clone(), s.key_id, s.wrapped)
    }

    /// A blob sealer for a session.
    pub fn sealer(&self, s: &Session, level: i32) -> BlobSealer {
        BlobSealer::with_level(s.key.clone(), level)
    }

    /// Writes a snapshot. Call only once every pack and index file it needs
    /// is durable: the snapshot file is what makes a backup visible.
    pub fn commit_snapshot(&self, env: &Envelope, body: &Body, s: &Session) -> Result<Id> {
        let mut env = env.clone();
        env.key_id = s.key_id;
        env.wrapped = Some(s.wrapped);
        let mut bytes = env.encode_header();
        let sealed = s.key.seal(&bytes, &body.encode())?;
        bytes.extend_from_slice(&sealed);
        let id = Id(cairn_crypto::plain_hash(&bytes));
        self.storage.put(Kind::Snapshot, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Every snapshot's envelope (no key needed); see
    /// [`cairn_store::snapshots::list_snapshots`].
    pub fn list_snapshots(storage: &dyn Storage) -> Result<(Vec<SnapshotInfo>, Vec<String>)> {
        cairn_store::snapshots::list_snapshots(storage)
    }

    /// Decrypts a snapshot's body (owner only).
    pub fn snapshot_body(&self, id: &Id) -> Result<Body> {
        let owner = self.keys.require_owner("read snapshot details")?;
        let data = self.storage.get(Kind::Snapshot, &id.to_hex())?;
        let obj = || format!("snapshot {}", id.short());
        if Id(cairn_crypto::plain_hash(&data)) != *id {
            return Err(Error::corrupt(obj(), "contents do not match its name"));
        }
        let f = cairn_format::snapshot::decode(&data).map_err(|e| Error::corrupt(obj(), e))?;
        let wrapped = f
            .envelope
            .wrapped
            .ok_or_else(|| Error::corrupt(obj(), "no wrapped key"))?;
        let key = owner
            .unwrap(&wrapped)
            .map_err(|e| Error::corrupt(obj(), e))?;
        if key.key_id() != f.envelope.key_id {
            return Err(Error::corrupt(obj(), "session key does not match its ID"));
        }
        let plain = key
            .open(f.aad, f.sealed_body)
            .map_err(|e| Error::corrupt(obj(), e))?;
        Body::decode(&plain).map_err(|e| Error::corrupt(obj(), e))
    }

    fn session_key(&self, pack: &PackInfo) -> Result<SealKey> {
        let mut cache = self.session_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = cache.get(&pack.key_id) {
            return Ok(k.clone());
        }
        let owner = self.keys.require_owner("read stored data")?;
        let obj = || format!("session key of pack {}", pack.id.short());
        let key = owner
            .unwrap(&pack.wrapped)
            .map_err(|e| Error::corrupt(obj(), e))?;
        if key.key_id() != pack.key_id {
            return Err(Error::corrupt(obj(), "key does not match its ID"));
        }
        cache.insert(pack.key_id, key.clone());
        Ok(key)
    }

    /// Authenticates and decodes a record read from a pack at `loc` into
    /// `plain`: checks the header, opens the seal, decompresses, verifies
    /// the keyed hash and, for trees, that the visible references match
    /// the contents. Both buffers are reused (the check and restore loops
    /// call this once per blob).
    pub fn decode_blob_into(
        &self,
        id: &Id,
        loc: &Location,
        record: &[u8],
        scratch: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<BlobKind> {
        scratch.clear();
        scratch.extend_from_slice(record);
        Ok(self.decode_checked(id, loc, scratch, plain, Shape::Tree)?.0)
    }

    /// Authenticates and decodes a tree's record (as
    /// [`BlobReader::read_record`] copied it) into a [`Listing`].
    pub fn decode_listing(&self, id: &Id, loc: &Location, record: &[u8]) -> Result<Listing> {
        let mut plain = Vec::new();
        match self.decode_checked(id, loc, &mut record.to_vec(), &mut plain, Shape::Listing)? {
            (_, Some(Parsed::Listing(l))) => Ok(l),
            _ => Err(Error::corrupt(format!("blob {}", id.short()), "not a tree")),
        }
    }

    /// The checks of [`Repo::decode_blob_into`]; a tree, which has to be
    /// decoded to compare its references, is returned (shaped as `shape`
    /// asks) so that callers wanting it do not decode it again. A listing
    /// takes the plaintext out of `plain`. The record is opened where it
    /// lies, which leaves its bytes changed.
    fn decode_checked(
        &self,
        id: &Id,
        loc: &Location,
        record: &mut [u8],
        plain: &mut Vec<u8>,
        shape: Shape,
    ) -> Result<(BlobKind, Option<Parsed>)> {
        let pack = self.index.pack(loc.pack);
        let obj = || format!("blob {} in pack {}", id.short(), pack.id.short());
        let key = self.session_key(pack)?;
        let (kind, refs) = open_record_in_place(record, id, &key, loc.raw_len, plain, obj)?;
        if kind != loc.kind {
            return Err(Error::corrupt(obj(), "kind differs from the index"));
        }
        if self.blob_id(plain) != *id {
            return Err(Error::corrupt(obj(), "contents do not match the blob ID"));
        }
        if kind != BlobKind::Tree {
            return Ok((kind, None));
        }
        let (parsed, visible) = match shape {
            Shape::Tree => {
                let t = Tree::decode(plain).map_err(|e| Error::corrupt(obj(), e))?;
                let r = t.refs();
                (Parsed::Tree(t), r)
            }
            Shape::Listing => {
                let l =
                    Listing::decode(std::mem::take(plain)).map_err(|e| Error::corrupt(obj(), e))?;
                let r = l.refs();
                (Parsed::Listing(l), r)
            }
        };
        if visible != refs {
            return Err(Error::corrupt(
                obj(),
                "visible references differ from the tree",
            ));
        }
        Ok((kind, Some(parsed)))
    }

    /// A reader with its own read-ahead window (one per thread).
    pub fn reader(&self) -> BlobReader<'_> {
        BlobReader {
            repo: self,
            windows: Vec::new(),
            window_bytes: WINDOW_BYTES,
            tick: 0,
            uncached: false,
            scratch: Vec::new(),
            joined: Vec::new(),
        }
    }

    /// A reader for one thread going through packs in the order they were
    /// written, such as a restore's worker: its windows may hold four
    /// windows of this repository's largest chunks. With the room of
    /// [`BlobReader`]s in general, a restore of large files freed a window
    /// and allocated one again for nearly every chunk, and faulted in
    /// 150,000 fresh pages for 4 GiB restored (27,000 with this room),
    /// each one costly on a VM that hands freed memory back to its host.
    pub fn sequential_reader(&self) -> BlobReader<'_> {
        // The config is authenticated, but a chunk size past reason would
        // only make the room useless, not larger.
        let largest = (self.config.chunk_max as usize).min(64 << 20);
        BlobReader {
            window_bytes: WINDOWS * (largest + WINDOW as usize),
            ..self.reader()
        }
    }

    /// A [`Repo::sequential_reader`] whose reads bypass the storage's
    /// cache (a local disk: direct I/O, no page cache), for a restore
    /// whose own writes fill the page cache past the kernel's free dirty
    /// limit. There every page the cache takes for a pack is a page the
    /// writes then find elsewhere, fresh (on a VM that hands freed memory
    /// back to its host, a fault through to it), and the copy out of the
    /// cache costs a core besides. Its reads are not read ahead: the
    /// caller keeps more readers busy instead.
    pub fn uncached_reader(&self) -> BlobReader<'_> {
        BlobReader {
            uncached: true,
            ..self.sequential_reader()
        }
    }

    /// Loads and decodes a tree.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        self.reader().load_tree(id)
    }

    /// Owner key check for anything that reads contents.
    pub fn require_owner(&self, action: &'static str) -> Result<()> {
        self.keys.require_owner(action).map(|_| ())
    }

    /// The role of the key in use.
    pub fn role(&self) -> Role {
        self.keys.role
    }

    /// Stores a new key file in the repository.
    pub fn add_key(&self, km: &KeyMaterial, passphrase: &[u8], label: &str) -> Result<String> {
        let kf = km.to_keyfile(
            self.config.repo_id,
            Some(passphrase),
            label,
            KdfParams::default(),
        )?;
        let name = hex::encode(cairn_crypto::random::<16>()?);
        self.storage.put(Kind::Key, &name, &kf.encode())?;
        Ok(name)
    }

    /// Every key file stored in the repository.
    pub fn list_keys(&self) -> Result<Vec<(String, Option<KeyFile>)>> {
        let mut out = Vec::new();
        for obj in self.storage.list(Kind::Key)? {
            let kf = self
                .storage
                .get(Kind::Key, &obj.name)
                .ok()
                .and_then(|d| KeyFile::decode(&d).ok());
            out.push((obj.name, kf));
        }
        Ok(out)
    }

    /// Builds a key file for export or for a put-only source.
    pub fn export_keyfile(
        &self,
        km: &KeyMaterial,
        passphrase: Option<&[u8]>,
        label: &str,
    ) -> Result<KeyFile> {
        km.to_keyfile(self.config.repo_id, passphrase, label, KdfParams::default())
    }
}

/// Unlocks a key of the repository without loading anything else: for
/// commands that need no key but must still refuse a wrong passphrase or
/// a put-only key.
pub fn unlock_key(storage: &dyn Storage, source: &KeySource) -> Result<KeyMaterial> {
    let config = read_config(storage)?;
    open_key(storage, &config, source)
}

fn open_key(storage: &dyn Storage, config: &Config, source: &KeySource) -> Result<KeyMaterial> {
    match source {
        KeySource::File { path, passphrase } => {
            let kf = read_key_file(path)?;
            if kf.repo_id != config.repo_id {
                return Err(Error::NoKey(format!(
                    "key file {} belongs to another repository ({}), not {}",
                    path.display(),
                    hex::encode(kf.repo_id),
                    storage.location()
                )));
            }
            match unlock(&kf, passphrase.as_deref()) {
                Ok(k) => Ok(k),
                Err(Unlock::WrongPassphrase) if passphrase.is_none() => Err(Error::NoKey(format!(
                    "key file {} is protected by a passphrase: set CAIRN_PASSWORD or use --password-file",
                    path.display()
                ))),
                Err(Unlock::WrongPassphrase) => Err(Error::WrongPassphrase(format!(
                    "{} (key file {})",
                    storage.location(),
                    path.display()
                ))),
                Err(Unlock::Bad(e)) => Err(e),
            }
        }
        KeySource::Passphrase(p) => {
            let mut tried = 0;
            // A key that cannot be read may be the one the passphrase
            // opens: it is named, never taken for a wrong passphrase.
            let mut damaged: Vec<String> = Vec::new();
            for obj in storage.list(Kind::Key)? {
                let data = match storage.get(Kind::Key, &obj.name) {
                    Ok(d) => d,
                    Err(e) => {
                        damaged.push(format!("key {}: {e}", obj.name));
                        continue;
                    }
                };
                let kf = match KeyFile::decode(&data) {
                    Ok(k) => k,
                    Err(e) => {
                        damaged.push(format!("key {}: {e}", obj.name));
                        continue;
                    }
                };
                if kf.repo_id != config.repo_id {
                    continue;
                }
                tried += 1;
                match unlock(&kf, Some(p)) {
                    Ok(mut k) => {
                        k.name = Some(obj.name);
                        return Ok(k);
                    }
                    Err(Unlock::WrongPassphrase) => {}
                    Err(Unlock::Bad(e)) => return Err(e),
                }
            }
            if !damaged.is_empty() {
                return Err(Error::corrupt(
                    format!("the keys of the repository at {}", storage.location()),
                    format!(
                        "{}; no readable key opens with this passphrase, which may be the damaged key's. \
                         Open the repository with an exported key file (--key-file), or put back a copy of the damaged key",
                        damaged.join("; ")
                    ),
                ));
            }
            if tried == 0 {
                return Err(Error::NoKey(format!(
                    "the repository at {} keeps no passphrase-protected key: open it with --key-file (the key was written when it was created, see `cairn key export`)",
                    storage.location()
                )));
            }
            Err(Error::WrongPassphrase(storage.location()))
        }
    }
}

/// Reads blobs, keeping a read-ahead window so that reading blobs in the
/// order they were written (as restore does) costs one read per window.
/// Buffers are reused across blobs.
pub struct BlobReader<'r> {
    repo: &'r Repo,
    /// Recently read stretches of packs, at most [`WINDOWS`].
    windows: Vec<Window>,
    /// Bytes the windows may hold together (see [`WINDOW_BYTES`]).
    window_bytes: usize,
    /// Use counter, for evicting the least recently used window.
    tick: u64,
    /// Reads bypass the storage's cache (see
    /// [`cairn_storage::Storage::get_range_uncached`]).
    uncached: bool,
    scratch: Vec<u8>,
    /// A record that spans blocks of the shared cache, put together.
    joined: Vec<u8>,
}

/// The bytes of a record [`BlobReader::locate`] found.
fn record_bytes<'a>(windows: &'a [Window], joined: &'a [u8], at: &'a Record) -> &'a [u8] {
    match at {
        Record::Window(w, a, b) => &windows[*w].buf[*a..*b],
        Record::Block(block, a, b) => &block.bytes()[*a..*b],
        Record::Joined => joined,
    }
}

/// Where a record's bytes are.
enum Record {
    /// In window `.0`, at `.1..2`.
    Window(usize, usize, usize),
    /// In one block of the shared cache.
    Block(Block, usize, usize),
    /// In `joined`.
    Joined,
}

/// A stretch of one pack held in memory.
struct Window {
    pack: u32,
    start: u64,
    buf: Vec<u8>,
    used: u64,
    /// How far into the pack reads were announced to the storage
    /// ([`Storage::prefetch`]).
    ahead: u64,
    /// Where in `buf` the bytes read start, and how many there are.
    skip: usize,
    len: usize,
    /// Ranges of `buf` holding records opened in place (see
    /// [`LARGE`]): no longer as read, so a record there is read again.
    spent: Vec<(usize, usize)>,
}

impl Window {
    /// Where in `buf` the bytes `offset..offset + length` of the pack
    /// are, if the window holds them as read.
    fn holds(&self, pack: u32, offset: u64, length: u32) -> Option<(usize, usize)> {
        let end = offset + u64::from(length);
        if self.pack != pack || offset < self.start || end > self.start + self.len as u64 {
            return None;
        }
        let a = self.skip + (offset - self.start) as usize;
        let b = a + length as usize;
        (!self.spent.iter().any(|&(x, y)| x < b && a < y)).then_some((a, b))
    }
}

/// Records at least this large are read alone by an uncached reader (see
/// [`BlobReader::record`]), and opened in the window they were read into
/// rather than copied out first: copying each record before
/// decrypting it was 2-3% of a restore's CPU time. Smaller ones are copied,
/// as a record opened in place has to be read again if it is met again,
/// and small ones met again in one window are common (copies of small
/// files in one batch); large ones met again are mostly copied from where
/// the restore wrote them.
const LARGE: u32 = 64 << 10;

/// Bytes a window reads ahead.
const WINDOW: u64 = 1 << 20;
/// Windows a reader keeps. A backup seals with one packer per core, so
/// consecutive files alternate between that many packs; with a single
/// window a restore read each 2 MiB stretch again at every switch, ten
/// times the repository's size on the benchmark corpus.
const WINDOWS: usize = 4;
/// Bytes the windows of one reader may hold together; past this the least
/// recently used ones are freed, so large chunks read one by one do not
/// leave four of them behind per thread (a mount pools eight readers).
/// [`Repo::sequential_reader`] allows more.
const WINDOW_BYTES: usize = 4 << 20;
/// A reader going forward through a pack announces the next this many
/// bytes, in steps of half of it, so that the storage fetches them while
/// the caller decodes what it read: a restore from a cold local disk
/// otherwise waited on it for each large chunk.
const AHEAD: u64 = 8 << 20;

impl BlobReader<'_> {
    /// The window and byte range of a record (within its pack, checked by
    /// the caller), from memory or a fresh read.
    fn record(&mut self, loc: &Location) -> Result<(usize, usize, usize)> {
        let pack = self.repo.index.pack(loc.pack);
        let end = loc.offset + u64::from(loc.length);
        self.tick += 1;
        if let Some((i, (a, b))) = self
            .windows
            .iter()
            .enumerate()
            .find_map(|(i, w)| Some((i, w.holds(loc.pack, loc.offset, loc.length)?)))
        {
            self.windows[i].used = self.tick;
            return Ok((i, a, b));
        }
        // A read past the middle of this pack's window continues it.
        let same = self
            .windows
            .iter()
            .position(|w| w.pack == loc.pack && loc.offset >= w.start + w.len as u64 / 2);
        let sequential = same.is_some();
        // Reading forward (restore, check) gets a window ahead. A small
        // record met out of order gets a window around it: trees are
        // written children first, so a walk from the root goes backwards
        // through the tree packs as often as forwards, and a window that
        // only looked ahead would be read anew for nearly every tree.
        // An uncached read (see `Repo::uncached_reader`) reads a large
        // record alone, even going forward: a window runs into the next
        // record, which then does not fit and is read again whole, and
        // without a cache behind it that is the disk's time. On the 4 GiB
        // mixed corpus windows read 2.0 GB of a 1.3 GB repository.
        let large = loc.length >= LARGE;
        let start = if sequential || large || self.uncached {
            loc.offset
        } else {
            loc.offset.saturating_sub(WINDOW / 2)
        };
        let want = if (sequential && !self.uncached) || !large {
            (start + WINDOW).max(end).min(pack.size) - start
        } else {
            u64::from(loc.length)
        };
        let i = match same {
            Some(i) => i,
            None if self.windows.len() < WINDOWS => {
                self.windows.push(Window {
                    pack: loc.pack,
                    start,
                    buf: Vec::new(),
                    used: 0,
                    ahead: 0,
                    skip: 0,
                    len: 0,
                    spent: Vec::new(),
                });
                self.windows.len() - 1
            }
            None => (0..self.windows.len())
                .min_by_key(|&i| self.windows[i].used)
                .expect("windows are full"),
        };
        let w = &mut self.windows[i];
        // Emptied first, so a failed read leaves no stale window behind.
        w.len = 0;
        w.spent.clear();
        if w.pack != loc.pack || !sequential {
            w.ahead = 0;
        }
        w.pack = loc.pack;
        w.start = start;
        w.used = self.tick;
        w.skip = if self.uncached {
            self.repo.storage.get_range_uncached(
                Kind::Pack,
                &pack.id.to_hex(),
                start,
                want,
                &mut w.buf,
            )?
        } else {
            w.buf.clear();
            cairn_storage::read_exact_range(
                &*self.repo.storage,
                Kind::Pack,
                &pack.id.to_hex(),
                start,
                want,
                &mut w.buf,
            )?;
            0
        };
        w.len = want as usize;
        let read_to = start + want;
        if !self.uncached && sequential && read_to < pack.size && w.ahead < read_to + AHEAD / 2 {
            let from = w.ahead.max(read_to);
            let to = (read_to + AHEAD).min(pack.size);
            w.ahead = to;
            self.repo
                .storage
                .prefetch(Kind::Pack, &pack.id.to_hex(), from, to - from);
        }
        let mut held: usize = self.windows.iter().map(|w| w.buf.capacity()).sum();
        while held > self.window_bytes {
            let Some(j) = (0..self.windows.len())
                .filter(|&j| j != i && self.windows[j].buf.capacity() > 0)
                .min_by_key(|&j| self.windows[j].used)
            else {
                break;
            };
            held -= self.windows[j].buf.capacity();
            self.windows[j].buf = Vec::new();
            self.windows[j].len = 0;
            self.windows[j].spent.clear();
        }
        let a = self.windows[i].skip + (loc.offset - start) as usize;
        Ok((i, a, a + loc.length as usize))
    }

    /// Loads, authenticates and decompresses a blob; verifies that its
    /// plaintext hashes to `id`.
    pub fn load(&mut self, id: &Id) -> Result<(BlobKind, Vec<u8>)> {
        let mut out = Vec::new();
        let kind = self.load_into(id, &mut out)?;
        Ok((kind, out))
    }

    /// [`BlobReader::load`] into a reused buffer.
    pub fn load_into(&mut self, id: &Id, out: &mut Vec<u8>) -> Result<BlobKind> {
        Ok(self.fetch(id, out, Shape::Tree)?.0)
    }

    fn fetch(
        &mut self,
        id: &Id,
        out: &mut Vec<u8>,
        shape: Shape,
    ) -> Result<(BlobKind, Option<Parsed>)> {
        let loc = self.repo.index.get(id).ok_or(Error::MissingBlob(*id))?;
        let first = match self.fetch_at(id, &loc, out, shape) {
            Err(e) if e.is_integrity() => e,
            r => return r,
        };
        // Another copy: the blob was stored twice, and the first copy is
        // damaged or was forged by a source that guessed the content.
        for other in self.repo.index.other_copies(id) {
            if let Ok(r) = self.fetch_at(id, &other, out, shape) {
                return Ok(r);
            }
        }
        Err(first)
    }

    fn fetch_at(
        &mut self,
        id: &Id,
        loc: &Location,
        out: &mut Vec<u8>,
        shape: Shape,
    ) -> Result<(BlobKind, Option<Parsed>)> {
        let at = self.locate(id, loc)?;
        let record = match at {
            Record::Window(w, a, b) if loc.length >= LARGE => {
                let w = &mut self.windows[w];
                w.spent.push((a, b));
                &mut w.buf[a..b]
            }
            Record::Joined => &mut self.joined[..],
            at => {
                self.scratch.clear();
                self.scratch
                    .extend_from_slice(record_bytes(&self.windows, &self.joined, &at));
                &mut self.scratch[..]
            }
        };
        self.repo.decode_checked(id, loc, record, out, shape)
    }

    /// The sealed record of blob `id` as stored, copied into `out`, and
    /// where it lies: for caches that keep records (still encrypted) and
    /// decode them when needed with [`Repo::decode_blob_into`], which
    /// authenticates them. Nothing is checked here.
    pub fn read_record(&mut self, id: &Id, out: &mut Vec<u8>) -> Result<Location> {
        let loc = self.repo.index.get(id).ok_or(Error::MissingBlob(*id))?;
        let at = self.locate(id, &loc)?;
        out.clear();
        out.extend_from_slice(record_bytes(&self.windows, &self.joined, &at));
        Ok(loc)
    }

    /// Reads the record at `loc` into a window, a block or `joined`.
    fn locate(&mut self, id: &Id, loc: &Location) -> Result<Record> {
        let repo = self.repo;
        let pack = repo.index.pack(loc.pack);
        let obj = || format!("blob {} in pack {}", id.short(), pack.id.short());
        if loc.offset + u64::from(loc.length) > pack.size {
            return Err(Error::corrupt(
                format!("index entry for pack {}", pack.id.short()),
                "points beyond the end of the pack",
            ));
        }
        match &repo.blocks {
            Some(cache) => self.in_blocks(cache, loc),
            None => self.record(loc).map(|(w, a, b)| Record::Window(w, a, b)),
        }
        .map_err(|e| match e {
            Error::Storage(cairn_storage::Error::Short { .. }) => {
                Error::corrupt(obj(), "pack is truncated")
            }
            Error::Storage(cairn_storage::Error::NotFound { .. }) => {
                Error::corrupt(obj(), "pack is missing")
            }
            e => e,
        })
    }

    /// A record's bytes from the shared cache of aligned blocks.
    fn in_blocks(&mut self, cache: &BlockCache, loc: &Location) -> Result<Record> {
        let pack = self.repo.index.pack(loc.pack);
        let end = loc.offset + u64::from(loc.length);
        let storage = &*self.repo.storage;
        let name = pack.id.to_hex();
        let first = loc.offset / BLOCK;
        let last = end.saturating_sub(1).max(loc.offset) / BLOCK;
        let get = |n| cache.get(storage, loc.pack, &name, pack.size, n);
        if first == last {
            let a = (loc.offset - first * BLOCK) as usize;
            return Ok(Record::Block(get(first)?, a, a + loc.length as usize));
        }
        self.joined.clear();
        for n in first..=last {
            let block = get(n)?;
            let bytes = block.bytes();
            let from = loc.offset.max(n * BLOCK) - n * BLOCK;
            let to = end.min(n * BLOCK + bytes.len() as u64) - n * BLOCK;
            self.joined
                .extend_from_slice(&bytes[from as usize..to as usize]);
        }
        Ok(Record::Joined)
    }

    /// Loads a tree blob.
    pub fn load_tree(&mut self, id: &Id) -> Result<Tree> {
        match self.fetch(id, &mut Vec::new(), Shape::Tree)? {
            (_, Some(Parsed::Tree(tree))) => Ok(tree),
            _ => Err(Error::corrupt(format!("blob {}", id.short()), "not a tree")),
        }
    }

    /// Loads a tree blob kept encoded (see [`Listing`]): for readers that
    /// hold many trees, such as a mounted snapshot.
    pub fn load_listing(&mut self, id: &Id) -> Result<Listing> {
        match self.fetch(id, &mut Vec::new(), Shape::Listing)? {
            (_, Some(Parsed::Listing(l))) => Ok(l),
            _ => Err(Error::corrupt(format!("blob {}", id.short()), "not a tree")),
        }
    }
}

/// How a tree blob is handed back: decoded whole, or kept encoded.
#[derive(Clone, Copy)]
enum Shape {
    Tree,
    Listing,
}

/// A tree blob as decoded by [`Repo::decode_checked`].
enum Parsed {
    Tree(Tree),
    Listing(Listing),
}
