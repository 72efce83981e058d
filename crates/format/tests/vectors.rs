//! The test vectors of `docs/format.md`, kept in `docs/vectors/`.
//!
//! Every vector is built here from fixed inputs with the real encoders (and
//! `cairn-crypto` for the derivations), rendered as `key: value` lines and
//! compared line by line with the file: that proves `encode(structure)`
//! gives exactly the bytes in the file. Then the bytes read from the file
//! are decoded (and opened, unwrapped, hashed) and compared with the
//! structure built here. A file nobody checks, or a line nobody wrote, fails
//! the test, so the document, the vectors and the code cannot drift apart.
//!
//! Sealed values use random nonces, so they cannot be recomputed: the file's
//! value is used when it opens to the expected plaintext, and the test
//! fails when it does not.
//!
//! After a deliberate format change (which also updates `docs/format.md`
//! and the version constants), rewrite the files with
//! `CAIRN_WRITE_VECTORS=1 cargo test -p cairn-format --test vectors`;
//! sealed values that still open are kept, so the diff shows only what
//! changed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use cairn_crypto::{DedupKey, KdfParams, OwnerSecret, SealKey, passphrase_key, plain_hash};
use cairn_format::blob::{BlobHeader, BlobKind, Compression, decode_record};
use cairn_format::config::Config;
use cairn_format::index::{self, IndexPack};
use cairn_format::keyfile::{Kdf, KeyFile, Role, Secrets};
use cairn_format::maint::{Garbage, Lease, Protection, Receipt};
use cairn_format::pack::{
    PACK_END_MAGIC, PACK_MAGIC, PackEntry, PackTrailer, TAIL_FIXED, WRAPPED_LEN,
    decode_pack_trailer, trailer_len,
};
use cairn_format::snapshot::{self, Body, Envelope};
use cairn_format::tree::{Node, NodeType, Time, Tree};
use cairn_format::{FORMAT_MAJOR, FORMAT_MINOR, Id};

// ---------------------------------------------------------------------------
// Fixed inputs (listed in docs/vectors/README.md).

/// `n, n+1, ..., n+N-1`: recognisable fixed keys.
const fn seq<const N: usize>(start: u8) -> [u8; N] {
    let mut a = [0u8; N];
    let mut i = 0;
    while i < N {
        a[i] = start.wrapping_add(i as u8);
        i += 1;
    }
    a
}

const DEDUP_KEY: [u8; 32] = seq(0x00);
const SESSION_KEY: [u8; 32] = seq(0x20);
const OWNER_SECRET: [u8; 32] = seq(0x40);
const REPO_ID: [u8; 16] = seq(0xc0);
const SALT: [u8; 16] = seq(0x60);
const PASSPHRASE: &str = "correct horse battery staple";
const KDF: KdfParams = KdfParams {
    m_kib: 64,
    t: 1,
    p: 1,
};
const CHUNK_1: &[u8] = b"Cairn test vector: the first chunk of a file.\n";
const CHUNK_2: &[u8] = b"And the second one.\n";
const SEAL_AAD: &[u8] = b"cairn vector associated data";
const SEAL_PLAINTEXT: &[u8] = b"attack at dawn";
/// Creation times: 2025-12-24T18:30:00Z and 2026-01-02T03:04:05.123456789Z.
const T_CREATED: i64 = 1_766_601_000_000_000_000;
const T_BACKUP: i64 = 1_767_323_045_123_456_789;

// BLAKE3 `derive_key` contexts, as `docs/format.md` states them.
const WRAP_CONTEXT: &str = "cairn 2026-11 session key wrap v1";
const KEY_ID_CONTEXT: &str = "cairn 2026-11 session key id v1";
const SEED_CONTEXT: &str = "cairn 2026-11 chunker seed v1";

fn dedup() -> DedupKey {
    DedupKey::from_bytes(DEDUP_KEY)
}
fn session() -> SealKey {
    SealKey::from_bytes(SESSION_KEY)
}
fn owner() -> OwnerSecret {
    OwnerSecret::from_bytes(OWNER_SECRET)
}
fn blob_id(data: &[u8]) -> Id {
    Id(dedup().id(data))
}

// ---------------------------------------------------------------------------
// Vector files: `# comment` lines, `key: value` lines, and long hex values
// continued on lines indented by two spaces.

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors")
}

/// One value as written in a vector file.
#[derive(Clone)]
enum Val {
    /// Bytes as lowercase hex, wrapped at 32 bytes a line.
    Hex(Vec<u8>),
    /// UTF-8 text in double quotes.
    Text(String),
    /// A number or short literal, written as is.
    Lit(String),
    /// An absent optional field.
    Absent,
}

fn hex(b: impl AsRef<[u8]>) -> Val {
    Val::Hex(b.as_ref().to_vec())
}
fn text(s: &str) -> Val {
    assert!(!s.contains(['"', '\n']), "vector text {s:?}");
    Val::Text(s.to_owned())
}
fn lit(v: impl std::fmt::Display) -> Val {
    Val::Lit(v.to_string())
}
fn opt_hex(v: Option<impl AsRef<[u8]>>) -> Val {
    v.map_or(Val::Absent, hex)
}
fn opt_text(v: Option<&str>) -> Val {
    v.map_or(Val::Absent, text)
}

impl Val {
    /// The value as compared with a file: continuation lines joined.
    fn flat(&self) -> String {
        match self {
            Val::Hex(b) => hex::encode(b),
            Val::Text(s) => format!("\"{s}\""),
            Val::Lit(s) => s.clone(),
            Val::Absent => "none".into(),
        }
    }
}

/// A vector as this build produces it.
struct Vector {
    name: &'static str,
    about: &'static str,
    fields: Vec<(String, Val)>,
}

impl Vector {
    fn new(name: &'static str, about: &'static str) -> Self {
        Vector {
            name,
            about,
            fields: Vec::new(),
        }
    }

    fn put(&mut self, key: impl Into<String>, v: Val) -> &mut Self {
        let key = key.into();
        assert!(
            !self.fields.iter().any(|(k, _)| *k == key),
            "{}: key {key} twice",
            self.name
        );
        self.fields.push((key, v));
        self
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for line in self.about.trim().lines() {
            let line = line.trim();
            if line.is_empty() {
                out.push_str("#\n");
            } else {
                writeln!(out, "# {line}").unwrap();
            }
        }
        out.push('\n');
        for (k, v) in &self.fields {
            match v {
                Val::Hex(b) if b.len() > 32 => {
                    writeln!(out, "{k}:").unwrap();
                    for c in b.chunks(32) {
                        writeln!(out, "  {}", hex::encode(c)).unwrap();
                    }
                }
                Val::Hex(b) if b.is_empty() => writeln!(out, "{k}:").unwrap(),
                v => writeln!(out, "{k}: {}", v.flat()).unwrap(),
            }
        }
        out
    }
}

/// A vector file as read from disk.
struct File {
    name: String,
    fields: Vec<(String, String)>,
}

impl File {
    fn parse(name: &str, data: &str) -> File {
        let mut fields: Vec<(String, String)> = Vec::new();
        for (n, line) in data.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with("  ") {
                let last = fields
                    .last_mut()
                    .unwrap_or_else(|| panic!("{name}.txt:{}: continuation first", n + 1));
                last.1.push_str(line.trim());
                continue;
            }
            let (k, v) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{name}.txt:{}: not `key: value`", n + 1));
            fields.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        File {
            name: name.to_owned(),
            fields,
        }
    }

    fn load(name: &str) -> Option<File> {
        let data = std::fs::read_to_string(vectors_dir().join(format!("{name}.txt"))).ok()?;
        Some(File::parse(name, &data))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn bytes(&self, key: &str) -> Vec<u8> {
        let v = self
            .get(key)
            .unwrap_or_else(|| panic!("{}.txt has no {key}", self.name));
        hex::decode(v).unwrap_or_else(|e| panic!("{}.txt {key}: {e}", self.name))
    }
}

/// Writes (in write mode) or checks vector files, and remembers which.
struct Ctx {
    write: bool,
    done: BTreeSet<String>,
}

impl Ctx {
    fn new() -> Self {
        Ctx {
            write: std::env::var_os("CAIRN_WRITE_VECTORS").is_some(),
            done: BTreeSet::new(),
        }
    }

    /// Compares a vector with its file (after writing it in write mode) and
    /// returns the file, whose bytes the caller then decodes.
    fn settle(&mut self, v: &Vector) -> File {
        let path = vectors_dir().join(format!("{}.txt", v.name));
        if self.write {
            std::fs::write(&path, v.render()).expect("write vector");
        }
        let f = File::load(v.name).unwrap_or_else(|| {
            panic!(
                "{} is missing; write it with CAIRN_WRITE_VECTORS=1",
                path.display()
            )
        });
        let want: Vec<(String, String)> = v
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.flat()))
            .collect();
        for i in 0..want.len().max(f.fields.len()) {
            match (want.get(i), f.fields.get(i)) {
                (Some(w), Some(g)) if w == g => {}
                (w, g) => panic!(
                    "{}.txt differs from this build at line item {i}:\n  file:  {g:?}\n  build: {w:?}",
                    v.name
                ),
            }
        }
        assert!(self.done.insert(v.name.to_owned()), "{} twice", v.name);
        f
    }

    /// A sealed value under `key`: the one in the file if it opens to
    /// `plain` with `aad`; a fresh one in write mode.
    fn sealed(&self, name: &str, field: &str, key: &SealKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        if let Some(old) = File::load(name).and_then(|f| f.get(field).map(str::to_owned))
            && let Ok(old) = hex::decode(old)
            && key.open(aad, &old).as_deref() == Ok(plain)
        {
            return old;
        }
        assert!(
            self.write,
            "{name}.txt: {field} does not open to the expected plaintext"
        );
        key.seal(aad, plain).expect("seal")
    }

    /// The session key wrapped to the owner: the file's if it unwraps.
    fn wrapped(&self) -> [u8; WRAPPED_LEN] {
        if let Some(old) = File::load("wrap").and_then(|f| f.get("wrapped").map(str::to_owned))
            && let Ok(old) = hex::decode(old)
            && let Ok(old) = <[u8; WRAPPED_LEN]>::try_from(old)
            && owner().unwrap(&old).map(|k| k.to_bytes()) == Ok(SESSION_KEY)
        {
            return old;
        }
        assert!(
            self.write,
            "wrap.txt: wrapped does not unwrap to the session key"
        );
        owner().public().wrap(&session()).expect("wrap")
    }
}

fn kind_lit(k: BlobKind) -> Val {
    lit(format!("{} ({})", k as u8, k.name()))
}

// ---------------------------------------------------------------------------
// Cryptography.

fn v_blob_id(cx: &mut Ctx) {
    let mut v = Vector::new(
        "blob_id",
        "Identifiers: a blob ID is BLAKE3 keyed with the dedup key over the\n\
         plaintext; packs, index files and snapshots are named by unkeyed BLAKE3.\n\
         data is the ASCII text \"Cairn test vector: the first chunk of a file.\\n\".",
    );
    let id = dedup().id(CHUNK_1);
    v.put("dedup_key", hex(DEDUP_KEY))
        .put("data", hex(CHUNK_1))
        .put("blob_id", hex(id))
        .put("plain_hash", hex(plain_hash(CHUNK_1)));
    let f = cx.settle(&v);
    let data = f.bytes("data");
    assert_eq!(
        f.bytes("blob_id"),
        blake3::keyed_hash(&DEDUP_KEY, &data).as_bytes()
    );
    assert_eq!(f.bytes("plain_hash"), blake3::hash(&data).as_bytes());
}

fn v_key_id(cx: &mut Ctx) {
    let mut v = Vector::new(
        "key_id",
        "Cryptography, session keys: key_id is the first 16 bytes of\n\
         BLAKE3 derive_key(context, session_key).",
    );
    let derived = blake3::derive_key(KEY_ID_CONTEXT, &SESSION_KEY);
    v.put("context", text(KEY_ID_CONTEXT))
        .put("session_key", hex(SESSION_KEY))
        .put("derived", hex(derived))
        .put("key_id", hex(session().key_id()));
    let f = cx.settle(&v);
    assert_eq!(f.bytes("key_id"), f.bytes("derived")[..16]);
}

fn v_chunker_seed(cx: &mut Ctx) {
    let mut v = Vector::new(
        "chunker_seed",
        "Cryptography, chunker seed: the first 8 bytes of\n\
         BLAKE3 derive_key(context, dedup_key), read as a little-endian u64.\n\
         The FastCDC 2020 gear table is XORed with it (and its shifted table\n\
         with seed << 1).",
    );
    let derived = blake3::derive_key(SEED_CONTEXT, &DEDUP_KEY);
    let seed = dedup().chunker_seed();
    v.put("context", text(SEED_CONTEXT))
        .put("dedup_key", hex(DEDUP_KEY))
        .put("derived", hex(derived))
        .put("seed", lit(format!("{seed:#018x}")));
    let f = cx.settle(&v);
    let d: [u8; 8] = f.bytes("derived")[..8].try_into().unwrap();
    assert_eq!(u64::from_le_bytes(d), seed);
}

fn v_seal(cx: &mut Ctx) {
    let mut v = Vector::new(
        "seal",
        "Cryptography, sealing: XChaCha20-Poly1305, sealed = nonce(24) | ciphertext | tag(16).\n\
         The nonce is random, so this vector is checked by opening `sealed`\n\
         with `key` and `aad`; aad is the ASCII text \"cairn vector associated data\"\n\
         and plaintext is \"attack at dawn\".",
    );
    let key = session();
    let sealed = cx.sealed("seal", "sealed", &key, SEAL_AAD, SEAL_PLAINTEXT);
    let n = sealed.len();
    v.put("key", hex(SESSION_KEY))
        .put("aad", hex(SEAL_AAD))
        .put("plaintext", hex(SEAL_PLAINTEXT))
        .put("sealed", hex(&sealed))
        .put("nonce", hex(&sealed[..24]))
        .put("ciphertext", hex(&sealed[24..n - 16]))
        .put("tag", hex(&sealed[n - 16..]));
    let f = cx.settle(&v);
    let sealed = f.bytes("sealed");
    assert_eq!(key.open(&f.bytes("aad"), &sealed).unwrap(), SEAL_PLAINTEXT);
    assert!(key.open(b"other aad", &sealed).is_err());
    let mut bad = sealed.clone();
    bad[30] ^= 1;
    assert!(key.open(SEAL_AAD, &bad).is_err());
}

fn v_passphrase_key(cx: &mut Ctx) {
    let mut v = Vector::new(
        "passphrase_key",
        "Cryptography, passphrases: Argon2id, version 0x13, 32-byte output,\n\
         no secret and no associated data. These parameters are far below the\n\
         default (m_kib 19456, t 2, p 1) so the test is fast.",
    );
    let key = passphrase_key(PASSPHRASE.as_bytes(), &SALT, KDF).expect("argon2");
    v.put("passphrase", text(PASSPHRASE))
        .put("salt", hex(SALT))
        .put("m_kib", lit(KDF.m_kib))
        .put("t", lit(KDF.t))
        .put("p", lit(KDF.p))
        .put("key", hex(key.to_bytes()));
    cx.settle(&v);
}

fn v_wrap(cx: &mut Ctx) -> [u8; WRAPPED_LEN] {
    let mut v = Vector::new(
        "wrap",
        "Cryptography, session key wrapping:\n\
         wrapped = ephemeral_public(32) | nonce(24) | sealed session key(32) | tag(16),\n\
         shared = X25519(ephemeral secret, owner_public) = X25519(owner_secret, ephemeral_public),\n\
         kek = BLAKE3 derive_key(context) over shared | ephemeral_public | owner_public,\n\
         the session key sealed under kek with aad = ephemeral_public.\n\
         The ephemeral key and nonce are random: the vector is checked by unwrapping.",
    );
    let wrapped = cx.wrapped();
    let eph: [u8; 32] = wrapped[..32].try_into().unwrap();
    let public = owner().public().to_bytes();
    let shared = x25519_dalek::StaticSecret::from(OWNER_SECRET)
        .diffie_hellman(&x25519_dalek::PublicKey::from(eph));
    let shared = *shared.as_bytes();
    let mut h = blake3::Hasher::new_derive_key(WRAP_CONTEXT);
    h.update(&shared).update(&eph).update(&public);
    let kek = *h.finalize().as_bytes();
    v.put("owner_secret", hex(OWNER_SECRET))
        .put("owner_public", hex(public))
        .put("session_key", hex(SESSION_KEY))
        .put("wrapped", hex(wrapped))
        .put("context", text(WRAP_CONTEXT))
        .put("ephemeral_public", hex(eph))
        .put("shared", hex(shared))
        .put("kek", hex(kek))
        .put("nonce", hex(&wrapped[32..56]))
        .put("ciphertext", hex(&wrapped[56..88]))
        .put("tag", hex(&wrapped[88..]));
    let f = cx.settle(&v);
    let w: [u8; WRAPPED_LEN] = f.bytes("wrapped").try_into().unwrap();
    assert_eq!(owner().unwrap(&w).unwrap().to_bytes(), SESSION_KEY);
    let opened = SealKey::from_bytes(kek).open(&eph, &w[32..]).unwrap();
    assert_eq!(opened, SESSION_KEY);
    assert_eq!(
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(OWNER_SECRET)).to_bytes(),
        public
    );
    w
}

// ---------------------------------------------------------------------------
// Config and keys.

fn v_config(cx: &mut Ctx) {
    let c = Config::new(REPO_ID, 256 << 10, 1 << 20, 4 << 20, T_CREATED);
    let mut v = Vector::new(
        "config",
        "Config: magic \"CAIRNCF1\", then tagged fields. The default chunk sizes.",
    );
    v.put("major", lit(c.major))
        .put("minor", lit(c.minor))
        .put("repo_id", hex(c.repo_id))
        .put("chunk_min", lit(c.chunk_min))
        .put("chunk_avg", lit(c.chunk_avg))
        .put("chunk_max", lit(c.chunk_max))
        .put("created_ns", lit(c.created_ns))
        .put("encoded", hex(c.encode()));
    let f = cx.settle(&v);
    assert_eq!((c.major, c.minor), (FORMAT_MAJOR, FORMAT_MINOR));
    assert_eq!(Config::decode(&f.bytes("encoded")).unwrap(), c);
}

fn put_keyfile(v: &mut Vector, k: &KeyFile) {
    v.put("role", lit(format!("{} ({})", k.role as u8, k.role.name())))
        .put("repo_id", hex(k.repo_id))
        .put("owner_public", hex(k.owner_public))
        .put("created_ns", lit(k.created_ns))
        .put("label", text(&k.label));
    match &k.kdf {
        None => {
            v.put("kdf", Val::Absent);
        }
        Some(d) => {
            v.put("kdf.salt", hex(d.salt))
                .put("kdf.m_kib", lit(d.m_kib))
                .put("kdf.t", lit(d.t))
                .put("kdf.p", lit(d.p));
        }
    }
}

fn put_secrets(v: &mut Vector, s: &Secrets) {
    v.put("secrets.owner_secret", opt_hex(s.owner_secret))
        .put("secrets.dedup_key", hex(s.dedup));
}

fn v_keyfile_owner(cx: &mut Ctx) {
    let secrets = Secrets {
        owner_secret: Some(OWNER_SECRET),
        dedup: DEDUP_KEY,
    };
    let mut k = KeyFile {
        role: Role::Owner,
        repo_id: REPO_ID,
        owner_public: owner().public().to_bytes(),
        created_ns: T_CREATED,
        label: "alice@laptop".into(),
        kdf: Some(Kdf {
            salt: SALT,
            m_kib: KDF.m_kib,
            t: KDF.t,
            p: KDF.p,
        }),
        secret: Vec::new(),
    };
    let pk = passphrase_key(PASSPHRASE.as_bytes(), &SALT, KDF).expect("argon2");
    let payload = secrets.encode();
    let aad = k.aad();
    k.secret = cx.sealed("keyfile_owner", "secret", &pk, &aad, &payload);
    let mut v = Vector::new(
        "keyfile_owner",
        "Keys: an owner key file protected by the passphrase of passphrase_key.txt\n\
         (\"correct horse battery staple\", small Argon2id parameters).\n\
         secret = seal(passphrase key, aad, secrets payload); the nonce is random,\n\
         so the vector is checked by opening it.",
    );
    put_keyfile(&mut v, &k);
    put_secrets(&mut v, &secrets);
    v.put("secrets", hex(&payload))
        .put("passphrase", text(PASSPHRASE))
        .put("passphrase_key", hex(pk.to_bytes()))
        .put("aad", hex(&aad))
        .put("secret", hex(&k.secret))
        .put("encoded", hex(k.encode()));
    let f = cx.settle(&v);
    let d = KeyFile::decode(&f.bytes("encoded")).unwrap();
    assert_eq!(d, k);
    let plain = pk.open(&f.bytes("aad"), &d.secret).unwrap();
    assert_eq!(plain, f.bytes("secrets"));
    assert_eq!(Secrets::decode(&plain).unwrap(), secrets);
    assert_eq!(d.owner_public, owner().public().to_bytes());
}

fn v_keyfile_put_only(cx: &mut Ctx) {
    let secrets = Secrets {
        owner_secret: None,
        dedup: DEDUP_KEY,
    };
    let k = KeyFile {
        role: Role::PutOnly,
        repo_id: REPO_ID,
        owner_public: owner().public().to_bytes(),
        created_ns: T_BACKUP,
        label: "laptop".into(),
        kdf: None,
        secret: secrets.encode(),
    };
    let mut v = Vector::new(
        "keyfile_put_only",
        "Keys: a put-only key file without passphrase: the secrets payload\n\
         (dedup key only) is stored as is, and the file must be kept mode 0600.",
    );
    put_keyfile(&mut v, &k);
    put_secrets(&mut v, &secrets);
    v.put("secrets", hex(&k.secret))
        .put("encoded", hex(k.encode()));
    let f = cx.settle(&v);
    let d = KeyFile::decode(&f.bytes("encoded")).unwrap();
    assert_eq!(d, k);
    assert_eq!(d.secret, f.bytes("secrets"));
    assert_eq!(Secrets::decode(&d.secret).unwrap(), secrets);
}

// ---------------------------------------------------------------------------
// Trees and blobs.

fn put_time(v: &mut Vector, p: &str, t: Time) {
    v.put(format!("{p}.sec"), lit(t.sec))
        .put(format!("{p}.nsec"), lit(t.nsec));
}

fn put_node(v: &mut Vector, p: &str, n: &Node) {
    v.put(format!("{p}name"), hex(&n.name)).put(
        format!("{p}type"),
        n.kind
            .map_or(Val::Absent, |k| lit(format!("{} ({})", k as u8, k.name()))),
    );
    v.put(format!("{p}mode"), lit(format!("{:#o}", n.mode)))
        .put(format!("{p}uid"), lit(n.uid))
        .put(format!("{p}gid"), lit(n.gid))
        .put(format!("{p}user"), opt_text(n.user.as_deref()))
        .put(format!("{p}group"), opt_text(n.group.as_deref()));
    put_time(v, &format!("{p}mtime"), n.mtime);
    put_time(v, &format!("{p}atime"), n.atime);
    put_time(v, &format!("{p}ctime"), n.ctime);
    v.put(format!("{p}size"), lit(n.size))
        .put(format!("{p}xattrs"), lit(n.xattrs.len()));
    for (i, (k, val)) in n.xattrs.iter().enumerate() {
        v.put(format!("{p}xattrs.{i}.name"), hex(k))
            .put(format!("{p}xattrs.{i}.value"), hex(val));
    }
    v.put(format!("{p}target"), opt_hex(n.target.as_ref()))
        .put(format!("{p}rdev"), lit(n.rdev));
    match n.link {
        None => v.put(format!("{p}link"), Val::Absent),
        Some((dev, ino)) => v
            .put(format!("{p}link.dev"), lit(dev))
            .put(format!("{p}link.inode"), lit(ino)),
    };
    v.put(format!("{p}nlink"), lit(n.nlink))
        .put(format!("{p}content"), lit(n.content.len()));
    for (i, id) in n.content.iter().enumerate() {
        v.put(format!("{p}content.{i}"), hex(id.0));
    }
    v.put(format!("{p}subtree"), opt_hex(n.subtree.map(|i| i.0)))
        .put(format!("{p}unknown"), lit(n.unknown.len()));
    for (i, (t, val)) in n.unknown.iter().enumerate() {
        v.put(format!("{p}unknown.{i}.tag"), lit(t))
            .put(format!("{p}unknown.{i}.value"), hex(val));
    }
}

fn put_tree(v: &mut Vector, t: &Tree) {
    v.put("nodes", lit(t.nodes.len()));
    for (i, n) in t.nodes.iter().enumerate() {
        put_node(v, &format!("nodes.{i}."), n);
    }
    let refs = t.refs();
    v.put("encoded", hex(t.encode()))
        .put("id", hex(blob_id(&t.encode()).0))
        .put("refs", lit(refs.len()));
    for (i, r) in refs.iter().enumerate() {
        v.put(format!("refs.{i}"), hex(r.0));
    }
}

/// The name of the third node: "résumé.txt" in Latin-1, not valid UTF-8.
const RESUME: &[u8] = b"r\xe9sum\xe9.txt";
const SYMLINK_TARGET: &[u8] = b"docs/r\xe9sum\xe9.txt";

fn sample_tree() -> Tree {
    let empty = blob_id(&Tree::default().encode());
    let alice = |name: &[u8], kind| Node {
        name: name.to_vec(),
        kind: Some(kind),
        uid: 1000,
        gid: 1000,
        user: Some("alice".into()),
        group: Some("alice".into()),
        ..Node::default()
    };
    let t = |sec, nsec| Time { sec, nsec };
    let backup_s = T_BACKUP / 1_000_000_000;
    Tree {
        nodes: vec![
            Node {
                mode: 0o2775,
                mtime: t(backup_s - 3600, 500_000_000),
                atime: t(backup_s, 0),
                ctime: t(backup_s - 3600, 500_000_000),
                nlink: 2,
                subtree: Some(empty),
                ..alice(b"docs", NodeType::Dir)
            },
            Node {
                mode: 0o777,
                // 1969-07-20T20:17:40Z: negative seconds show the zigzag.
                mtime: t(-14_182_940, 0),
                atime: t(-14_182_940, 0),
                ctime: t(backup_s - 60, 999_999_999),
                size: SYMLINK_TARGET.len() as u64,
                target: Some(SYMLINK_TARGET.to_vec()),
                nlink: 1,
                ..alice(b"latest", NodeType::Symlink)
            },
            Node {
                mode: 0o640,
                gid: 100,
                group: Some("users".into()),
                mtime: t(backup_s - 86_400, 123_456_789),
                atime: t(backup_s - 86_400, 123_456_789),
                ctime: t(backup_s - 86_400, 123_456_789),
                size: (CHUNK_1.len() + CHUNK_2.len()) as u64,
                xattrs: vec![(
                    b"user.xdg.origin.url".to_vec(),
                    b"https://example.org/cv".to_vec(),
                )],
                link: Some((2049, 1_234_567)),
                nlink: 2,
                content: vec![blob_id(CHUNK_1), blob_id(CHUNK_2)],
                ..alice(RESUME, NodeType::File)
            },
        ],
    }
}

fn v_tree(cx: &mut Ctx) -> Tree {
    let tree = sample_tree();
    let mut v = Vector::new(
        "tree",
        "Trees: a directory of three entries, sorted by name bytes:\n\
         \"docs\" (a setgid directory whose subtree is the empty tree 01 00),\n\
         \"latest\" (a symlink to \"docs/r\\xe9sum\\xe9.txt\", with a 1969 mtime),\n\
         \"r\\xe9sum\\xe9.txt\" (a Latin-1 name, not UTF-8: a file of two chunks\n\
         with an xattr, hardlinked: link = (st_dev, st_ino), nlink 2).\n\
         Chunk IDs and the tree ID are keyed with the dedup key of blob_id.txt.\n\
         refs are the tree's visible edges, in the order a blob header lists them.",
    );
    put_tree(&mut v, &tree);
    let f = cx.settle(&v);
    let d = Tree::decode(&f.bytes("encoded")).unwrap();
    assert_eq!(d, tree);
    assert!(std::str::from_utf8(&d.nodes[2].name).is_err());
    assert_eq!(f.bytes("id"), blob_id(&f.bytes("encoded")).0);
    tree
}

fn v_tree_unknown_field(cx: &mut Ctx) {
    let tree = Tree {
        nodes: vec![Node {
            name: b"from-the-future".to_vec(),
            kind: Some(NodeType::Fifo),
            mode: 0o600,
            unknown: vec![(99, b"a field of a newer minor version".to_vec())],
            ..Node::default()
        }],
    };
    let mut v = Vector::new(
        "tree_unknown_field",
        "Wire primitives, forward compatibility: a node with field tag 99, which\n\
         format 1.0 does not define. A reader keeps it verbatim and writes it\n\
         back after the fields it knows, so the tree re-encodes to the same bytes.\n\
         Also shows the fields every node carries even when zero.",
    );
    put_tree(&mut v, &tree);
    let f = cx.settle(&v);
    let d = Tree::decode(&f.bytes("encoded")).unwrap();
    assert_eq!(d, tree);
    assert_eq!(d.encode(), f.bytes("encoded"));
}

/// A sealed blob record built from a vector's parts.
struct Rec {
    header: BlobHeader,
    raw_len: u32,
    record: Vec<u8>,
}

fn v_blob(
    cx: &mut Ctx,
    name: &'static str,
    about: &'static str,
    header: BlobHeader,
    plain: &[u8],
) -> Rec {
    let mut payload = vec![Compression::None as u8];
    payload.extend_from_slice(plain);
    let aad = header.encode();
    let sealed = cx.sealed(name, "sealed", &session(), &aad, &payload);
    let record = header.encode_record(&sealed);
    let mut v = Vector::new(name, about);
    v.put("kind", kind_lit(header.kind))
        .put("id", hex(header.id.0))
        .put("refs", lit(header.refs.len()));
    for (i, r) in header.refs.iter().enumerate() {
        v.put(format!("refs.{i}"), hex(r.0));
    }
    v.put("session_key", hex(SESSION_KEY))
        .put("payload", hex(&payload))
        .put("header", hex(&aad))
        .put("sealed", hex(&sealed))
        .put("record", hex(&record));
    let f = cx.settle(&v);
    let bytes = f.bytes("record");
    let r = decode_record(&bytes).unwrap();
    assert_eq!(r.header, header);
    assert_eq!(r.aad, f.bytes("header"));
    assert_eq!(r.sealed, f.bytes("sealed"));
    let opened = session().open(r.aad, r.sealed).unwrap();
    assert_eq!(opened, f.bytes("payload"));
    assert_eq!(Compression::from_u8(opened[0]).unwrap(), Compression::None);
    assert_eq!(blob_id(&opened[1..]), header.id);
    Rec {
        header,
        raw_len: plain.len() as u32,
        record,
    }
}

// ---------------------------------------------------------------------------
// Packs and index.

fn put_trailer(v: &mut Vector, p: &str, t: &PackTrailer) {
    v.put(format!("{p}key_id"), hex(t.key_id))
        .put(format!("{p}wrapped"), hex(t.wrapped))
        .put(format!("{p}entries"), lit(t.entries.len()));
    for (i, e) in t.entries.iter().enumerate() {
        v.put(format!("{p}entries.{i}.kind"), kind_lit(e.kind))
            .put(format!("{p}entries.{i}.id"), hex(e.id.0))
            .put(format!("{p}entries.{i}.offset"), lit(e.offset))
            .put(format!("{p}entries.{i}.length"), lit(e.length))
            .put(format!("{p}entries.{i}.raw_len"), lit(e.raw_len));
    }
}

fn v_pack(cx: &mut Ctx, wrapped: [u8; WRAPPED_LEN], recs: &[Rec]) -> IndexPack {
    let mut pack = PACK_MAGIC.to_vec();
    let mut entries = Vec::new();
    for r in recs {
        entries.push(PackEntry {
            kind: r.header.kind,
            id: r.header.id,
            offset: pack.len() as u64,
            length: r.record.len() as u32,
            raw_len: r.raw_len,
        });
        pack.extend_from_slice(&r.record);
    }
    let records_end = pack.len();
    let trailer = PackTrailer {
        key_id: session().key_id(),
        wrapped,
        entries,
    };
    let tail = trailer.encode_tail();
    pack.extend_from_slice(&tail);
    let name = plain_hash(&pack);
    let mut v = Vector::new(
        "pack",
        "Packs: a pack holding the records of blob_chunk.txt and blob_tree.txt,\n\
         sealed with the session key of key_id.txt and wrapped as in wrap.txt.\n\
         tail = trailer body | trailer length (u32 little-endian) | \"CAIRNPKE\".\n\
         name is the unkeyed BLAKE3 of the whole pack, its object name.",
    );
    put_trailer(&mut v, "", &trailer);
    v.put("tail", hex(&tail))
        .put("pack", hex(&pack))
        .put("size", lit(pack.len()))
        .put("name", hex(name));
    let f = cx.settle(&v);
    let bytes = f.bytes("pack");
    assert!(bytes.starts_with(PACK_MAGIC) && bytes.ends_with(PACK_END_MAGIC));
    assert!(bytes.ends_with(&f.bytes("tail")));
    let d = decode_pack_trailer(&bytes).unwrap();
    assert_eq!(d, trailer);
    d.check_layout(records_end as u64).unwrap();
    let tl = trailer_len(&bytes[bytes.len() - TAIL_FIXED..]).unwrap() as usize;
    assert_eq!(records_end + tl + TAIL_FIXED, bytes.len());
    for (e, r) in d.entries.iter().zip(recs) {
        let at = e.offset as usize;
        assert_eq!(bytes[at..at + e.length as usize], r.record);
    }
    assert_eq!(f.bytes("name"), plain_hash(&bytes));
    IndexPack {
        pack: Id(name),
        size: pack.len() as u64,
        trailer,
    }
}

fn v_index(cx: &mut Ctx, pack: IndexPack) {
    let packs = vec![pack];
    let bytes = index::encode(&packs);
    let mut v = Vector::new(
        "index",
        "Index: an index file listing the pack of pack.txt, with a copy of its\n\
         trailer body. name is the unkeyed BLAKE3 of the file, its object name.",
    );
    v.put("packs", lit(packs.len()));
    for (i, p) in packs.iter().enumerate() {
        v.put(format!("packs.{i}.pack"), hex(p.pack.0))
            .put(format!("packs.{i}.size"), lit(p.size));
        put_trailer(&mut v, &format!("packs.{i}.trailer."), &p.trailer);
    }
    v.put("encoded", hex(&bytes))
        .put("name", hex(plain_hash(&bytes)));
    let f = cx.settle(&v);
    assert_eq!(index::decode(&f.bytes("encoded")).unwrap(), packs);
}

// ---------------------------------------------------------------------------
// Maintenance records.

fn v_lease(cx: &mut Ctx) {
    let l = Lease {
        purpose: "prune".into(),
        generation: 3,
        holder: "root@backup-box pid 4242".into(),
        taken_ns: T_BACKUP,
        expires_ns: T_BACKUP + 600_000_000_000,
        host: "backup-box".into(),
        pid: 4242,
    };
    let bytes = l.encode();
    let mut v = Vector::new(
        "lease",
        "Leases: generation 3 of the prune lease, held for 600 s. Its object\n\
         name is locks/<purpose>-<generation as 20 digits>.",
    );
    v.put("purpose", text(&l.purpose))
        .put("generation", lit(l.generation))
        .put("holder", text(&l.holder))
        .put("taken_ns", lit(l.taken_ns))
        .put("expires_ns", lit(l.expires_ns))
        .put("host", text(&l.host))
        .put("pid", lit(l.pid))
        .put("encoded", hex(&bytes))
        .put("name", text(&l.name()));
    let f = cx.settle(&v);
    assert_eq!(Lease::decode(&f.bytes("encoded")).unwrap(), l);
}

fn v_garbage(cx: &mut Ctx, pack: Id) {
    let g = Garbage {
        created_ns: T_BACKUP,
        not_before_ns: T_BACKUP + 6 * 3_600_000_000_000,
        holder: "root@backup-box pid 4242".into(),
        packs: vec![pack],
    };
    let bytes = g.encode();
    let mut v = Vector::new(
        "garbage",
        "Garbage records: the pack of pack.txt condemned with a 6 h grace\n\
         period. name is the unkeyed BLAKE3 of the record, its object name.",
    );
    v.put("created_ns", lit(g.created_ns))
        .put("not_before_ns", lit(g.not_before_ns))
        .put("holder", text(&g.holder))
        .put("packs", lit(g.packs.len()))
        .put("packs.0", hex(g.packs[0].0))
        .put("encoded", hex(&bytes))
        .put("name", hex(plain_hash(&bytes)));
    let f = cx.settle(&v);
    assert_eq!(Garbage::decode(&f.bytes("encoded")).unwrap(), g);
}

fn v_protect(cx: &mut Ctx) {
    let p = Protection {
        created_ns: T_BACKUP,
        note: "tax records 2025".into(),
    };
    let bytes = p.encode();
    let mut v = Vector::new(
        "protect",
        "Protection marks: the object protected/<snapshot ID> keeps that\n\
         snapshot out of every retention policy.",
    );
    v.put("created_ns", lit(p.created_ns))
        .put("note", text(&p.note))
        .put("encoded", hex(&bytes));
    let f = cx.settle(&v);
    assert_eq!(Protection::decode(&f.bytes("encoded")).unwrap(), p);
}

fn v_receipt(cx: &mut Ctx) {
    let r = Receipt {
        received_ns: T_BACKUP,
        sender: "laptop".into(),
    };
    let bytes = r.encode();
    let mut v = Vector::new(
        "receipt",
        "Receipts: the object receipts/<snapshot ID>, written by a server when a\n\
         source's snapshot arrives; retention goes by received_ns.",
    );
    v.put("received_ns", lit(r.received_ns))
        .put("sender", text(&r.sender))
        .put("encoded", hex(&bytes));
    let f = cx.settle(&v);
    assert_eq!(Receipt::decode(&f.bytes("encoded")).unwrap(), r);
}

fn v_origin(cx: &mut Ctx, pack: Id) {
    let principal = "laptop";
    let mut pre = b"cairn origin\0".to_vec();
    pre.extend_from_slice(principal.as_bytes());
    let tag: [u8; 8] = plain_hash(&pre)[..8].try_into().unwrap();
    let name = cairn_format::maint::origin_name(&pack, &tag);
    let mut v = Vector::new(
        "origin",
        "Origin marks (format 1.2, in progress): the object origins/<pack>-<tag>,\n\
         written by a server before it publishes a pack a source uploaded;\n\
         tag = BLAKE3(\"cairn origin\" 0x00 principal)[..8]; the body is a receipt.",
    );
    v.put("pack", hex(pack.0))
        .put("principal", text(principal))
        .put("tag", hex(tag))
        .put("name", text(&name));
    let f = cx.settle(&v);
    assert_eq!(
        cairn_format::maint::parse_origin_name(f.get("name").unwrap().trim_matches('"')),
        Some((pack, tag))
    );
}

// ---------------------------------------------------------------------------
// Snapshots.

fn sample_body() -> Body {
    Body {
        hostname: "laptop".into(),
        username: "alice".into(),
        paths: vec![b"/home/alice".to_vec(), b"/srv/caf\xe9".to_vec()],
        command: vec![
            "cairn".into(),
            "backup".into(),
            "--files-from".into(),
            "/etc/cairn/laptop.list".into(),
        ],
        excludes: vec!["*.tmp".into(), ".cache".into()],
        program: "cairn 0.1.0".into(),
        new_files: 1,
        changed_files: 0,
        unchanged_files: 0,
        bytes_read: (CHUNK_1.len() + CHUNK_2.len()) as u64,
        duration_ms: 1234,
        errors: 0,
        unknown: Vec::new(),
    }
}

fn put_list(v: &mut Vector, key: &str, items: &[Val]) {
    v.put(key, lit(items.len()));
    for (i, x) in items.iter().enumerate() {
        v.put(format!("{key}.{i}"), x.clone());
    }
}

fn v_snapshot_body(cx: &mut Ctx) -> Body {
    let b = sample_body();
    let mut v = Vector::new(
        "snapshot_body",
        "Snapshots, body: the plaintext that is sealed into snapshot_envelope.txt.\n\
         Paths are raw bytes (\"/srv/caf\\xe9\" is Latin-1); the command line,\n\
         excludes, host, user and program are UTF-8 text.",
    );
    v.put("hostname", text(&b.hostname))
        .put("username", text(&b.username));
    put_list(
        &mut v,
        "paths",
        &b.paths.iter().map(hex).collect::<Vec<_>>(),
    );
    put_list(
        &mut v,
        "command",
        &b.command.iter().map(|s| text(s)).collect::<Vec<_>>(),
    );
    put_list(
        &mut v,
        "excludes",
        &b.excludes.iter().map(|s| text(s)).collect::<Vec<_>>(),
    );
    v.put("program", text(&b.program))
        .put("new_files", lit(b.new_files))
        .put("changed_files", lit(b.changed_files))
        .put("unchanged_files", lit(b.unchanged_files))
        .put("bytes_read", lit(b.bytes_read))
        .put("duration_ms", lit(b.duration_ms))
        .put("errors", lit(b.errors))
        .put("encoded", hex(b.encode()));
    let f = cx.settle(&v);
    assert_eq!(Body::decode(&f.bytes("encoded")).unwrap(), b);
    b
}

fn v_snapshot_envelope(
    cx: &mut Ctx,
    wrapped: [u8; WRAPPED_LEN],
    root: Id,
    pack_size: u64,
    body: &Body,
) {
    let e = Envelope {
        time_ns: T_BACKUP,
        group: "laptop:/home".into(),
        tags: vec!["hourly".into(), "pre-upgrade".into()],
        root,
        parent: Some(Id([0xaa; 32])),
        key_id: session().key_id(),
        wrapped: Some(wrapped),
        files: 1,
        dirs: 2,
        bytes: (CHUNK_1.len() + CHUNK_2.len()) as u64,
        added_bytes: pack_size,
        repaired_from: None,
        unknown: Vec::new(),
    };
    let header = e.encode_header();
    let plain = body.encode();
    let sealed = cx.sealed(
        "snapshot_envelope",
        "sealed_body",
        &session(),
        &header,
        &plain,
    );
    let mut file = header.clone();
    file.extend_from_slice(&sealed);
    let mut v = Vector::new(
        "snapshot_envelope",
        "Snapshots: the envelope of a snapshot whose root is the tree of tree.txt\n\
         (parent is an arbitrary ID). header = \"CAIRNSN1\" | varint length | fields,\n\
         and is the associated data of sealed_body, which opens with the session\n\
         key to the encoded body of snapshot_body.txt. file = header | sealed_body;\n\
         name is its unkeyed BLAKE3.",
    );
    v.put("time_ns", lit(e.time_ns))
        .put("group", text(&e.group));
    put_list(
        &mut v,
        "tags",
        &e.tags.iter().map(|s| text(s)).collect::<Vec<_>>(),
    );
    v.put("root", hex(e.root.0))
        .put("parent", opt_hex(e.parent.map(|i| i.0)))
        .put("key_id", hex(e.key_id))
        .put("wrapped", opt_hex(e.wrapped))
        .put("files", lit(e.files))
        .put("dirs", lit(e.dirs))
        .put("bytes", lit(e.bytes))
        .put("added_bytes", lit(e.added_bytes))
        .put("repaired_from", opt_hex(e.repaired_from.map(|i| i.0)))
        .put("header", hex(&header))
        .put("sealed_body", hex(&sealed))
        .put("file", hex(&file))
        .put("name", hex(plain_hash(&file)));
    let f = cx.settle(&v);
    let bytes = f.bytes("file");
    let d = snapshot::decode(&bytes).unwrap();
    assert_eq!(d.envelope, e);
    assert_eq!(d.aad, f.bytes("header"));
    assert_eq!(d.sealed_body, f.bytes("sealed_body"));
    let key = owner().unwrap(&d.envelope.wrapped.unwrap()).unwrap();
    assert_eq!(key.key_id(), d.envelope.key_id);
    let opened = key.open(d.aad, d.sealed_body).unwrap();
    assert_eq!(Body::decode(&opened).unwrap(), *body);
    assert_eq!(f.bytes("name"), plain_hash(&bytes));
}

// ---------------------------------------------------------------------------

#[test]
fn vectors() {
    let mut cx = Ctx::new();
    v_blob_id(&mut cx);
    v_key_id(&mut cx);
    v_chunker_seed(&mut cx);
    v_seal(&mut cx);
    v_passphrase_key(&mut cx);
    let wrapped = v_wrap(&mut cx);
    v_config(&mut cx);
    v_keyfile_owner(&mut cx);
    v_keyfile_put_only(&mut cx);
    let tree = v_tree(&mut cx);
    v_tree_unknown_field(&mut cx);
    let chunk = v_blob(
        &mut cx,
        "blob_chunk",
        "Blobs: the record of a chunk blob (the data of blob_id.txt), stored\n\
         uncompressed (payload = 00 | plaintext), sealed with the session key;\n\
         header is the associated data. record = header | u32le sealed length | sealed.",
        BlobHeader {
            kind: BlobKind::Chunk,
            id: blob_id(CHUNK_1),
            refs: Vec::new(),
        },
        CHUNK_1,
    );
    let tree_rec = v_blob(
        &mut cx,
        "blob_tree",
        "Blobs: the record of the tree blob of tree.txt (payload = 00 | tree\n\
         encoding). Its header lists the tree's visible edges, in tree.refs order.",
        BlobHeader {
            kind: BlobKind::Tree,
            id: blob_id(&tree.encode()),
            refs: tree.refs(),
        },
        &tree.encode(),
    );
    let pack = v_pack(&mut cx, wrapped, &[chunk, tree_rec]);
    let pack_size = pack.size;
    let pack_id = pack.pack;
    v_index(&mut cx, pack);
    v_lease(&mut cx);
    v_garbage(&mut cx, pack_id);
    v_protect(&mut cx);
    v_receipt(&mut cx);
    v_origin(&mut cx, pack_id);
    let body = v_snapshot_body(&mut cx);
    v_snapshot_envelope(&mut cx, wrapped, blob_id(&tree.encode()), pack_size, &body);

    let mut on_disk = BTreeSet::new();
    for e in std::fs::read_dir(vectors_dir()).expect("docs/vectors") {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".txt") {
            on_disk.insert(stem.to_owned());
        }
    }
    assert_eq!(
        on_disk, cx.done,
        "every file in docs/vectors is a checked vector"
    );
}
