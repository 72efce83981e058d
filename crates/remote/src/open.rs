//! A repository location as users write it, opened: a directory, an
//! `https://` box, an `ssh://` machine or an `s3://` bucket. The command
//! line and the daemon both open repositories through here, so a location
//! means the same in a flag and in `cairn.toml`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_storage::{LocalStorage, Storage};

use crate::tls::{Trust, parse_fingerprint};

/// What reaching a remote repository takes besides its location.
#[derive(Clone, Debug)]
pub struct Access {
    /// The box's token (`https://`).
    pub token: Option<String>,
    /// The box's certificate fingerprint; else trust on first use.
    pub fingerprint: Option<String>,
    /// Where first-use fingerprints are remembered.
    pub known_servers: PathBuf,
    /// Where uploads are staged before they are sent.
    pub staging: PathBuf,
    /// How long to keep retrying an unreachable box.
    pub retry_for: Duration,
    /// The ssh program and its options, split on spaces (`ssh -i key`).
    pub ssh: String,
    /// The cairn program on the far side of `ssh://`.
    pub remote_cairn: String,
}

/// Whether `loc` names a repository on another machine.
pub fn is_remote(loc: &str) -> bool {
    loc.contains("://")
}

/// Opens the storage at `loc`.
pub fn open(loc: &str, a: &Access) -> Result<Arc<dyn Storage>, String> {
    if loc.starts_with("ssh://") {
        return Ok(Arc::new(crate::ssh::connect(
            loc,
            &a.ssh,
            &a.remote_cairn,
            &a.staging,
        )?));
    }
    if loc.starts_with("https://") || loc.starts_with("http://") {
        let endpoint = crate::https::Endpoint::parse(loc)?;
        let token = a.token.as_deref().ok_or_else(|| {
            format!("{loc} needs a token (the box's admin makes one with `cairn server token add`)")
        })?;
        let trust = match &a.fingerprint {
            Some(f) => Trust::Pinned(parse_fingerprint(f)?),
            None => Trust::OnFirstUse {
                file: a.known_servers.clone(),
            },
        };
        let s = crate::https::HttpsStorage::new(endpoint, token, trust, &a.staging, a.retry_for)
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(s));
    }
    if loc.starts_with("s3://") {
        let s = cairn_storage::S3Storage::open(loc, &a.staging).map_err(|e| e.to_string())?;
        return Ok(Arc::new(s));
    }
    if let Some((scheme, _)) = loc.split_once("://") {
        return Err(format!(
            "repository {loc}: the {scheme}:// transport is not available in this version of cairn; use a directory, https://, ssh:// or s3://"
        ));
    }
    Ok(Arc::new(LocalStorage::new(PathBuf::from(loc))))
}
