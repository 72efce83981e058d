//! Cryptographic primitives of a Cairn repository, and nothing else.
//!
//! * Content IDs are BLAKE3 keyed with the repository's dedup key, so equal
//!   plaintext deduplicates while IDs reveal nothing to whoever lacks the key.
//! * Everything secret is sealed with XChaCha20-Poly1305 under a random
//!   192-bit nonce: concurrent writers and crashed runs never have to agree
//!   on counters, and nonce reuse is out of reach by probability alone.
//! * Each backup seals its blobs with a fresh session key that is wrapped to
//!   the owner's X25519 public key (an ECIES construction like age's: an
//!   ephemeral X25519 key, a BLAKE3-derived wrapping key, XChaCha20-Poly1305).
//!   A put-only source therefore writes data it cannot read back later.
//! * Passphrases are stretched with Argon2id.
//!
//! The exact byte layouts are in `docs/format.md`, section "Cryptography".

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use x25519_dalek::{PublicKey, StaticSecret};

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of a wrapped session key: ephemeral public key, nonce, key, tag.
pub const WRAPPED_LEN: usize = 32 + NONCE_LEN + 32 + TAG_LEN;

const WRAP_CONTEXT: &str = "cairn 2026-11 session key wrap v1";
const KEY_ID_CONTEXT: &str = "cairn 2026-11 session key id v1";
const SEED_CONTEXT: &str = "cairn 2026-11 chunker seed v1";

/// Errors of this crate. Sealed data that fails to open is the only one a
/// caller normally meets; it means tampering, corruption or the wrong key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed: wrong key, or the bytes were changed.
    #[error("authentication failed (wrong key, or the data was altered)")]
    Auth,
    /// The sealed input is shorter than nonce plus tag.
    #[error("sealed data is truncated ({0} bytes)")]
    Truncated(usize),
    /// The system random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// Argon2 refused the parameters.
    #[error("invalid passphrase parameters: {0}")]
    Kdf(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Fills a fresh array from the operating system's CSPRNG.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}

/// Unkeyed BLAKE3, used for names of packs, index files and snapshots so
/// that the storage side can verify them without any key.
pub fn plain_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// Incremental unkeyed BLAKE3, for pack files written as a stream.
#[derive(Default, Clone)]
pub struct PlainHasher(blake3::Hasher);

impl PlainHasher {
    /// Starts an empty hash.
    pub fn new() -> Self {
        PlainHasher(blake3::Hasher::new())
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest of everything fed so far.
    pub fn finalize(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// The repository-wide secret that makes content IDs unpredictable.
#[derive(Clone)]
pub struct DedupKey([u8; 32]);

impl DedupKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        DedupKey(b)
    }
    /// Makes a new random key.
    pub fn generate() -> Result<Self> {
        Ok(DedupKey(random()?))
    }
    /// Raw bytes, for storing inside a sealed key file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
    /// Content ID of a plaintext blob.
    pub fn id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, data).as_bytes()
    }
    /// Gear seed for the chunker, derived so it reveals nothing of the key.
    pub fn chunker_seed(&self) -> u64 {
        let k = blake3::derive_key(SEED_CONTEXT, &self.0);
        u64::from_le_bytes(k[..8].try_into().expect("8 bytes"))
    }
}

impl std::fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DedupKey(..)")
    }
}

/// A symmetric XChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        SealKey(b)
    }
    /// Makes a new random key (a backup's session key).
    pub fn generate() -> Result<Self> {
        Ok(SealKey(random()?))
    }
    /// Raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
    /// A short public identifier: lets readers pick the right key without
    /// trying each one, and reveals nothing of the key.
    pub fn key_id(&self) -> [u8; 16] {
        let k = blake3::derive_key(KEY_ID_CONTEXT, &self.0);
        k[..16].try_into().expect("16 bytes")
    }

    /// Appends `nonce || ciphertext || tag` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let nonce: [u8; NONCE_LEN] = random()?;
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (key, n) = xchacha(&self.0, &nonce);
        let tag = key
            .seal_in_place_separate_tag(n, Aad::from(aad), &mut out[start + NONCE_LEN..])
            .map_err(|_| Error::Auth)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals in place: `buf[at..at + NONCE_LEN]` receives a fresh nonce,
    /// `buf[at + NONCE_LEN..]` (the plaintext) is encrypted where it lies,
    /// and the tag is appended. `buf[..aad_len]` is the associated data.
    /// Avoids copying large payloads (the backup's hot path).
    pub fn seal_in_place(&self, buf: &mut Vec<u8>, aad_len: usize, at: usize) -> Result<()> {
        assert!(
            aad_len <= at && at + NONCE_LEN <= buf.len(),
            "seal_in_place layout"
        );
        let nonce: [u8; NONCE_LEN] = random()?;
        buf[at..at + NONCE_LEN].copy_from_slice(&nonce);
        let (head, tail) = buf.split_at_mut(at + NONCE_LEN);
        let (key, n) = xchacha(&self.0, &nonce);
        let tag = key
            .seal_in_place_separate_tag(n, Aad::from(&head[..aad_len]), tail)
            .map_err(|_| Error::Auth)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals into a new vector.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens into `out` (replacing its contents), reusing its allocation.
    pub fn open_into(&self, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::Truncated(sealed.len()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        out.clear();
        out.extend_from_slice(ct);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("nonce length");
        let tag: [u8; TAG_LEN] = tag.try_into().expect("tag length");
        let (key, n) = xchacha(&self.0, &nonce);
        key.open_in_place_separate_tag(n, Aad::from(aad), Tag::from(tag), out, 0..)
            .map(|_| ())
            .map_err(|_| {
                out.clear();
                Error::Auth
            })
    }

    /// Opens `nonce || ciphertext || tag` where it lies and returns the
    /// plaintext, which takes the ciphertext's place: a restore opens
    /// records in the buffer they were read into, where
    /// [`SealKey::open_into`] copies every byte first. On failure ring
    /// zeroes the ciphertext's place, so no unauthenticated plaintext is
    /// left behind.
    pub fn open_in_place<'a>(&self, aad: &[u8], sealed: &'a mut [u8]) -> Result<&'a mut [u8]> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::Truncated(sealed.len()));
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let at = rest.len() - TAG_LEN;
        let (ct, tag) = rest.split_at_mut(at);
        let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().expect("nonce length");
        let tag: [u8; TAG_LEN] = (&*tag).try_into().expect("tag length");
        let (key, n) = xchacha(&self.0, &nonce);
        key.open_in_place_separate_tag(n, Aad::from(aad), Tag::from(tag), ct, 0..)
            .map_err(|_| Error::Auth)?;
        Ok(ct)
    }

    /// Opens `nonce || ciphertext || tag`, checking it against `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(aad, sealed, &mut out)?;
        Ok(out)
    }
}

/// XChaCha20-Poly1305 as its definition builds it: HChaCha20 turns the key
/// and the first 16 nonce bytes into a subkey, and the IETF
/// ChaCha20-Poly1305 of RFC 8439 runs under that subkey with the nonce
/// `0u32 || nonce[16..24]`. The bytes are those of any XChaCha20-Poly1305
/// (a test checks them against RustCrypto's); ring's assembly for the
/// inner AEAD is about twice as fast here as the portable Rust one, and
/// sealing and opening are a large share of backup and restore time.
fn xchacha(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let first: [u8; 16] = nonce[..16].try_into().expect("16 bytes");
    let sub = chacha20::hchacha::<chacha20::R20>(&(*key).into(), &first.into());
    let key =
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, sub.as_slice()).expect("32-byte key"));
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&nonce[16..]);
    (key, Nonce::assume_unique_for_key(n))
}

/// The owner's public key: anyone holding it can wrap session keys.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OwnerPublic([u8; 32]);

impl std::fmt::Debug for OwnerPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnerPublic({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

impl OwnerPublic {
    /// Wraps raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        OwnerPublic(b)
    }
    /// Raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Wraps a session key so that only the owner's secret can unwrap it.
    pub fn wrap(&self, session: &SealKey) -> Result<[u8; WRAPPED_LEN]> {
        let eph = StaticSecret::from(random::<32>()?);
        let eph_pub = PublicKey::from(&eph);
        let shared = eph.diffie_hellman(&PublicKey::from(self.0));
        let kek = wrap_kek(shared.as_bytes(), eph_pub.as_bytes(), &self.0);
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(eph_pub.as_bytes());
        kek.seal_into(eph_pub.as_bytes(), &session.0, &mut out)?;
        Ok(out.try_into().expect("wrapped length"))
    }
}

fn wrap_kek(shared: &[u8; 32], eph_pub: &[u8; 32], recipient: &[u8; 32]) -> SealKey {
    let mut h = blake3::Hasher::new_derive_key(WRAP_CONTEXT);
    h.update(shared);
    h.update(eph_pub);
    h.update(recipient);
    SealKey(*h.finalize().as_bytes())
}

/// The owner's secret key: the one key that can read a repository.
#[derive(Clone)]
pub struct OwnerSecret(StaticSecret);

impl std::fmt::Debug for OwnerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerSecret(..)")
    }
}

impl OwnerSecret {
    /// Makes a new random owner key.
    pub fn generate() -> Result<Self> {
        Ok(OwnerSecret(StaticSecret::from(random::<32>()?)))
    }
    /// Rebuilds from stored bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        OwnerSecret(StaticSecret::from(b))
    }
    /// Raw bytes, for sealing into a key file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    /// The matching public key.
    pub fn public(&self) -> OwnerPublic {
        OwnerPublic(PublicKey::from(&self.0).to_bytes())
    }
    /// Recovers a session key wrapped with [`OwnerPublic::wrap`].
    pub fn unwrap(&self, wrapped: &[u8; WRAPPED_LEN]) -> Result<SealKey> {
        let eph_pub: [u8; 32] = wrapped[..32].try_into().expect("32 bytes");
        let shared = self.0.diffie_hellman(&PublicKey::from(eph_pub));
        let kek = wrap_kek(shared.as_bytes(), &eph_pub, &self.public().0);
        let key = kek.open(&eph_pub, &wrapped[32..])?;
        Ok(SealKey(key.try_into().map_err(|_| Error::Auth)?))
    }
}

/// Argon2id cost parameters, stored next to the salt in each key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 19 MiB, 2 passes, 1 lane: OWASP's Argon2id baseline. It keeps a key
    /// opening under a quarter of a second and well inside the 64 MiB memory
    /// budget of a small board.
    fn default() -> Self {
        KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

/// Stretches a passphrase into a sealing key. Costs above 256 MiB are
/// refused: opening tries every key file, and a planted key file must not
/// be able to exhaust a small board's memory.
pub fn passphrase_key(pass: &[u8], salt: &[u8; 16], p: KdfParams) -> Result<SealKey> {
    if p.m_kib > 256 * 1024 || p.t > 64 || p.p > 64 {
        return Err(Error::Kdf(format!("{p:?} is beyond the accepted maximum")));
    }
    let params =
        argon2::Params::new(p.m_kib, p.t, p.p, Some(32)).map_err(|e| Error::Kdf(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(pass, salt, &mut out)
        .map_err(|e| Error::Kdf(e.to_string()))?;
    Ok(SealKey(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrap_roundtrip_and_wrong_owner() {
        let owner = OwnerSecret::generate().unwrap();
        let other = OwnerSecret::generate().unwrap();
        let s = SealKey::generate().unwrap();
        let w = owner.public().wrap(&s).unwrap();
        assert_eq!(owner.unwrap(&w).unwrap().to_bytes(), s.to_bytes());
        assert_eq!(other.unwrap(&w).unwrap_err(), Error::Auth);
        let mut bad = w;
        bad[40] ^= 1;
        assert!(owner.unwrap(&bad).is_err());
    }

    #[test]
    fn aad_is_bound() {
        let k = SealKey::generate().unwrap();
        let s = k.seal(b"a", b"hello").unwrap();
        assert_eq!(k.open(b"a", &s).unwrap(), b"hello");
        assert_eq!(k.open(b"b", &s).unwrap_err(), Error::Auth);
        assert_eq!(k.open(b"a", &s[..10]).unwrap_err(), Error::Truncated(10));
    }

    #[test]
    fn in_place_matches_open() {
        let k = SealKey::generate().unwrap();
        let mut buf = b"HEADER".to_vec();
        buf.extend_from_slice(&[0; NONCE_LEN]);
        buf.extend_from_slice(b"payload");
        k.seal_in_place(&mut buf, 6, 6).unwrap();
        assert_eq!(k.open(b"HEADER", &buf[6..]).unwrap(), b"payload");
    }

    #[test]
    fn kdf_is_deterministic() {
        let p = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let a = passphrase_key(b"pw", &[1; 16], p).unwrap();
        let b = passphrase_key(b"pw", &[1; 16], p).unwrap();
        let c = passphrase_key(b"pX", &[1; 16], p).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_ne!(a.to_bytes(), c.to_bytes());
    }

    proptest! {
        #[test]
        fn seal_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..2000), aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let k = SealKey::from_bytes([7; 32]);
            let s = k.seal(&aad, &data).unwrap();
            prop_assert_eq!(s.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(&k.open(&aad, &s).unwrap(), &data);
            let mut place = s.clone();
            prop_assert_eq!(&*k.open_in_place(&aad, &mut place).unwrap(), &data[..]);
            let mut bad = s.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            prop_assert_eq!(k.open_in_place(&aad, &mut bad), Err(Error::Auth));
            // No unauthenticated plaintext is left behind.
            prop_assert!(bad[NONCE_LEN..last + 1 - TAG_LEN].iter().all(|&b| b == 0));
            let mut short = s[..SEAL_OVERHEAD - 1].to_vec();
            prop_assert_eq!(k.open_in_place(&aad, &mut short), Err(Error::Truncated(SEAL_OVERHEAD - 1)));
        }

        /// The HChaCha20 + ring construction is XChaCha20-Poly1305: its
        /// output is byte for byte what RustCrypto's implementation makes
        /// with the same nonce, and each opens what the other sealed.
        #[test]
        fn matches_reference_xchacha(data in proptest::collection::vec(any::<u8>(), 0..3000), aad in proptest::collection::vec(any::<u8>(), 0..64), key in any::<[u8; 32]>()) {
            use chacha20poly1305::aead::{AeadInOut, KeyInit};
            use chacha20poly1305::{XChaCha20Poly1305, XNonce};
            let k = SealKey::from_bytes(key);
            let ours = k.seal(&aad, &data).unwrap();
            let nonce: [u8; NONCE_LEN] = ours[..NONCE_LEN].try_into().unwrap();
            let mut theirs = data.clone();
            let tag = XChaCha20Poly1305::new(&key.into())
                .encrypt_inout_detached(&XNonce::from(nonce), &aad, theirs.as_mut_slice().into())
                .unwrap();
            theirs.extend_from_slice(tag.as_slice());
            prop_assert_eq!(&ours[NONCE_LEN..], &theirs[..]);
            let mut again = nonce.to_vec();
            again.extend_from_slice(&theirs);
            prop_assert_eq!(k.open(&aad, &again).unwrap(), data);
        }
    }

    #[test]
    fn tampered_open_fails_and_leaves_nothing() {
        let k = SealKey::generate().unwrap();
        let mut s = k.seal(b"aad", b"secret payload").unwrap();
        let last = s.len() - 1;
        s[last] ^= 1;
        let mut out = b"old".to_vec();
        assert_eq!(k.open_into(b"aad", &s, &mut out), Err(Error::Auth));
        assert!(
            out.is_empty(),
            "no unauthenticated plaintext is left behind"
        );
        assert_eq!(
            k.open(b"aad", &k.seal(b"aad", b"x").unwrap()).unwrap(),
            b"x"
        );
        assert_eq!(
            k.open(b"other", &k.seal(b"aad", b"x").unwrap()),
            Err(Error::Auth)
        );
    }
}
