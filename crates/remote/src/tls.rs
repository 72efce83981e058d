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

/// Reads the fingerprint remembered for `host` (`host:port`). A file
/// that cannot be read, or holds a line that is not `host fingerprint`,
/// is an error: trust on first use must not open again because the
/// record of the first use was damaged.
pub fn known_fingerprint(file: &Path, host: &str) -> Result<Option<[u8; 32]>, String> {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let damaged = |n: usize, why: &str| {
        format!(
            "{} is damaged at line {n} ({why}): fix or delete that line, then compare the \
             fingerprint the server shows with what `cairn server` printed",
            file.display()
        )
    };
    let text = String::from_utf8(text).map_err(|_| damaged(0, "not text"))?;
    let mut found = None;
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        let [h, fp] = w[..] else {
            return Err(damaged(i + 1, "expected a host and a fingerprint"));
        };
        let fp = parse_fingerprint(fp).map_err(|e| damaged(i + 1, &e))?;
        if h == host && found.is_none() {
            found = Some(fp);
        }
    }
    Ok(found)
}

fn remember(file: &Path, host: &str, fp: &[u8; 32]) -> Result<(), String> {
    let mut text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(format!("{host} {}\n", show_fingerprint(fp)).as_bytes());
    cairn_storage::atomic_write(file, &text, 0o644, cairn_storage::Existing::Replace)
        .map_err(|e| e.to_string())
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
                let known = known_fingerprint(file, &self.host).map_err(|e| self.refuse(e))?;
                match known {
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
                                "cannot remember the certificate of {}: {e}",
                                self.host
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
        assert_eq!(known_fingerprint(&f, "a:1"), Ok(None));
        remember(&f, "a:1", &[1; 32]).unwrap();
        remember(&f, "b:2", &[2; 32]).unwrap();
        assert_eq!(known_fingerprint(&f, "a:1"), Ok(Some([1; 32])));
        assert_eq!(known_fingerprint(&f, "b:2"), Ok(Some([2; 32])));
        assert_eq!(known_fingerprint(&f, "a:2"), Ok(None));
    }

    /// A garbled line (a host's fingerprint cut short, say) refuses every
    /// host, naming the file and line: it must not read as "never seen"
    /// and re-open trust on first use.
    #[test]
    fn damaged_known_servers_fails_closed() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("known_servers");
        remember(&f, "a:1", &[1; 32]).unwrap();
        let mut text = std::fs::read_to_string(&f).unwrap();
        text.push_str("b:2 SHA256:0011\n");
        std::fs::write(&f, &text).unwrap();
        let e = known_fingerprint(&f, "b:2").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(known_fingerprint(&f, "c:3").is_err());
        std::fs::write(&f, b"\xff\xfe").unwrap();
        assert!(known_fingerprint(&f, "a:1").is_err());
    }
}
