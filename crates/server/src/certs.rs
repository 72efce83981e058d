//! The server's certificate: the user's PEM files, watched and reloaded
//! when they change (a Let's Encrypt renewal needs no restart), or one
//! the server makes itself on first start and keeps in its state
//! directory, which clients pin by fingerprint.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::error::{Error, Result};

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Whether the server made it.
    pub self_signed: bool,
}

/// The files to serve for `config`, making a self-signed pair if the
/// config names none and there is none yet.
pub fn ensure(config: &Config) -> Result<CertFiles> {
    if let Some(t) = &config.tls {
        return Ok(CertFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
            self_signed: false,
        });
    }
    let dir = config.state.join("tls");
    let files = CertFiles {
        cert: dir.join("self-signed.crt"),
        key: dir.join("self-signed.key"),
        self_signed: true,
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    cairn_storage::create_dir_durable(&dir)?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let h = cairn_store::hostname();
    if !h.is_empty() {
        names.push(h);
    }
    if !config.listen.ip().is_unspecified() {
        names.push(config.listen.ip().to_string());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::Tls(format!("cannot make a certificate: {e}")))?;
    write_private(&files.key, made.signing_key.serialize_pem().as_bytes())?;
    write_private(&files.cert, made.cert.pem().as_bytes())?;
    Ok(files)
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    cairn_storage::atomic_write(path, data, 0o600, cairn_storage::Existing::Replace)?;
    Ok(())
}

/// Loads a certificate chain and key; returns them with the leaf's
/// fingerprint.
pub fn load(files: &CertFiles) -> Result<(Arc<CertifiedKey>, [u8; 32])> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("{}: {e}", files.cert.display())))?;
    let Some(leaf) = certs.first() else {
        return Err(Error::Tls(format!(
            "{} holds no certificate",
            files.cert.display()
        )));
    };
    let fp = cairn_remote::tls::fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.key.display())))?;
    let provider = cairn_remote::tls::provider();
    let ck = CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        Error::Tls(format!(
            "{} and {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    Ok((Arc::new(ck), fp))
}

fn stamp(files: &CertFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

struct Current {
    key: Arc<CertifiedKey>,
    fingerprint: [u8; 32],
    stamp: Option<(SystemTime, SystemTime)>,
}

/// Hands rustls the current certificate; [`Resolver::reload_if_changed`]
/// swaps it when the files change.
#[derive(Clone)]
pub struct Resolver {
    files: CertFiles,
    current: Arc<RwLock<Current>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resolver({})", self.files.cert.display())
    }
}

impl Resolver {
    /// Loads the files now; a bad pair is an error at start.
    pub fn new(files: CertFiles) -> Result<Resolver> {
        let stamp = stamp(&files);
        let (key, fingerprint) = load(&files)?;
        Ok(Resolver {
            files,
            current: Arc::new(RwLock::new(Current {
                key,
                fingerprint,
                stamp,
            })),
        })
    }

    /// The fingerprint being served.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .fingerprint
    }

    /// The files behind it.
    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// Reloads when either file changed. A pair that does not load (a
    /// renewal caught half-written) keeps the old certificate serving
    /// and is tried again next time. Returns the new fingerprint.
    pub fn reload_if_changed(&self) -> std::result::Result<Option<[u8; 32]>, Error> {
        let now = stamp(&self.files);
        if now == self.current.read().unwrap_or_else(|p| p.into_inner()).stamp {
            return Ok(None);
        }
        let (key, fingerprint) = load(&self.files)?;
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        *c = Current {
            key,
            fingerprint,
            stamp: now,
        };
        Ok(Some(fingerprint))
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .key
                .clone(),
        )
    }
}

/// The rustls config serving `resolver`'s certificate.
pub fn server_config(resolver: Resolver) -> Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(cairn_remote::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
