//! Which server certificates a client trusts.
//!
//! A box that made its own certificate has no authority vouching for it,
//! so clients pin it: by a fingerprint the user gives
//! (`--server-fingerprint`), or on first use, remembered in a
//! `known_servers` file the way SSH remembers host keys. A certificate a
//! public authority signed for the host name (Let's Encrypt, say) is
//! trusted as any HTTPS client would, so its renewals need no re-pinning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// SHA-256 of a certificate's DER bytes: what `cairn server` prints and
/// clients pin.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// How fingerprints are shown: `sha256:` and 64 hex digits.
pub fn show_fingerprint(fp: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(fp))
}

/// Parses a fingerprint as shown, also with colons, upper case, or
/// without the `sha256:` prefix (as `openssl x509 -fingerprint` prints).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let digits: String = t.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(digits.to_ascii_lowercase()).map_err(|_| {
        format!("{s:?} is not a certificate fingerprint: expected sha256: and 64 hex digits")
    })?;
    bytes.try_into().map_err(|_| {
        format!("{s:?} is not a SHA-256 fingerprint: expected 64 hex digits after sha256:")
    })
}

/// A client config that checks the server of `host` (`host:port`) by
/// `trust`; `verdict` receives the reason for a refused certificate.
pub fn client_config(
    trust: Trust,
    host: &str,
    verdict: Verdict,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let verifier = Verifier::new(trust, host, verdict)?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The provider every TLS endpoint of Cairn uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a client's trust comes from.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Only the certificate with this fingerprint.
    Pinned([u8; 32]),
    /// A publicly signed certificate, or the one remembered for `host`
    /// in `file`, or (first contact) whatever the server shows, which is
    /// then remembered.
    OnFirstUse {
        /// The `known_servers` file.
        file: PathBuf,
    },
}

/// Reads the fingerprint remembered for `host` (`host:port`).
pub fn known_fingerprint(file: &Path, host: &str) -> Option<[u8; 32]> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == host).then(|| parse_fingerprint(w.next()?).ok())?
    })
}

fn remember(file: &Path, host: &str, fp: &[u8; 32]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(f, "{host} {}", show_fingerprint(fp))?;
    f.sync_all()
}

/// Why the last handshake's certificate was refused, in words for the
/// user (rustls's own error only says "invalid certificate").
pub type Verdict = Arc<Mutex<Option<String>>>;

/// The client's certificate check.
#[derive(Debug)]
pub struct Verifier {
    trust: Trust,
    host: String,
    public: Arc<dyn ServerCertVerifier>,
    provider: Arc<CryptoProvider>,
    verdict: Verdict,
}

impl Verifier {
    /// Checks certificates of `host` (`host:port`) against `trust`.
    pub fn new(trust: Trust, host: &str, verdict: Verdict) -> Result<Verifier, rustls::Error> {
        let provider = provider();
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let public = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Verifier {
            trust,
            host: host.to_string(),
            public,
            provider,
            verdict,
        })
    }

    fn refuse(&self, why: String) -> rustls::Error {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
        rustls::Error::General(why)
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        match &self.trust {
            Trust::Pinned(want) if *want == fp => Ok(ServerCertVerified::assertion()),
            Trust::Pinned(want) => Err(self.refuse(format!(
                "the server at {} shows certificate {}, not the pinned {}: if its certificate \
                 was replaced on purpose, pin the new fingerprint (cairn server prints it); \
                 otherwise someone may be between you and the server",
                self.host,
                show_fingerprint(&fp),
                show_fingerprint(want)
            ))),
            Trust::OnFirstUse { file } => {
                if self
                    .public
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                    .is_ok()
                {
                    return Ok(ServerCertVerified::assertion());
                }
                match known_fingerprint(file, &self.host) {
                    Some(known) if known == fp => Ok(ServerCertVerified::assertion()),
                    Some(known) => Err(self.refuse(format!(
                        "the server at {} shows certificate {}, but {} remembers {} for it: if \
                         the server's certificate was replaced on purpose, delete its line from \
                         that file (or pass --server-fingerprint); otherwise someone may be \
                         between you and the server",
                        self.host,
                        show_fingerprint(&fp),
                        file.display(),
                        show_fingerprint(&known)
                    ))),
                    None => {
                        remember(file, &self.host, &fp).map_err(|e| {
                            self.refuse(format!(
                                "cannot remember the certificate of {} in {}: {e}",
                                self.host,
                                file.display()
                            ))
                        })?;
                        eprintln!(
                            "cairn: first contact with {}: trusting its certificate {} from now \
                             on (remembered in {}); compare it with what `cairn server` printed",
                            self.host,
                            show_fingerprint(&fp),
                            file.display()
                        );
                        Ok(ServerCertVerified::assertion())
                    }
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_every_usual_spelling() {
        let fp = fingerprint(b"cert");
        let shown = show_fingerprint(&fp);
        assert_eq!(parse_fingerprint(&shown).unwrap(), fp);
        let colons = hex::encode_upper(fp)
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), fp);
        assert_eq!(parse_fingerprint(&format!("SHA256:{colons}")).unwrap(), fp);
        assert!(
            parse_fingerprint("sha256:abcd")
                .unwrap_err()
                .contains("64 hex")
        );
        assert!(parse_fingerprint("hello").is_err());
    }

    #[test]
    fn known_servers_file_is_per_host() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("cfg/known_servers");
        assert_eq!(known_fingerprint(&f, "a:1"), None);
        remember(&f, "a:1", &[1; 32]).unwrap();
        remember(&f, "b:2", &[2; 32]).unwrap();
        assert_eq!(known_fingerprint(&f, "a:1"), Some([1; 32]));
        assert_eq!(known_fingerprint(&f, "b:2"), Some([2; 32]));
        assert_eq!(known_fingerprint(&f, "a:2"), None);
    }
}
