//! Packs uploaded from their staging file as they are read, in one PUT.
//!
//! `object_store` sends a PUT body from memory, so each of a backup's two
//! publishers held its whole 32 MiB pack: the client's peak RSS on S3 was
//! twice its local one. Here `object_store` signs a URL (it keeps the
//! signing) and the body streams from the file in [`PIECE`]-sized pieces.
//! Packs are content-addressed, so a PUT that may have landed is simply
//! sent again; the retries mirror the ones `object_store` makes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::signer::Signer;
use reqwest::header::CONTENT_LENGTH;

/// Bytes read from the file per piece of the body.
const PIECE: usize = 256 << 10;
/// How long a signed URL is valid: longer than any one attempt may take.
const VALID: Duration = Duration::from_secs(3600);

/// Retries: how many, the first wait (doubling, with jitter, at most
/// `MAX_WAIT`) and the time after which no new attempt starts.
pub(super) struct Retry {
    pub attempts: u32,
    pub first_wait: Duration,
    pub max_wait: Duration,
    pub within: Duration,
}

/// Uploads `file` (`size` bytes) to `key`. Errors come as
/// `object_store::Error::Generic` carrying the status and the store's own
/// message (its XML error code included), which the caller turns into a
/// clear error the same way as `object_store`'s.
pub(super) async fn put(
    client: reqwest::Client,
    signer: Arc<AmazonS3>,
    key: Key,
    file: PathBuf,
    size: u64,
    retry: Retry,
) -> object_store::Result<()> {
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let url = signer.signed_url(reqwest::Method::PUT, &key, VALID).await?;
        let sent = client
            .put(url)
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(pieces(&file, size).await?))
            .send()
            .await;
        let (again, err) = match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let again = status.is_server_error() || status.as_u16() == 429;
                (again, format!("{status}: {}", text.trim()))
            }
            // Connecting, sending or a lost answer: the body is sent
            // again (the object's name is its hash).
            Err(e) => (true, error_chain(&e)),
        };
        let wait = backoff(&retry, attempt);
        if !again || attempt > retry.attempts || start.elapsed() + wait > retry.within {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: err.into(),
            });
        }
        tokio::time::sleep(wait).await;
    }
}

/// The body: the file read piece by piece. A file shorter than `size`
/// (it never is: a staged pack does not change) ends the body early and
/// the store refuses it for its length.
async fn pieces(
    file: &Path,
    size: u64,
) -> object_store::Result<impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + use<>> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })?;
    Ok(futures_util::stream::unfold(
        (f, size),
        |(mut f, left)| async move {
            use tokio::io::AsyncReadExt;
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; PIECE.min(usize::try_from(left).unwrap_or(PIECE))];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf), (f, left - n as u64)))
                }
                Err(e) => Some((Err(e), (f, 0))),
            }
        },
    ))
}

/// The wait before attempt `attempt + 1`: doubling from the first, at
/// most the maximum, each drawn uniformly from its upper half so that
/// clients that failed together do not retry together.
fn backoff(r: &Retry, attempt: u32) -> Duration {
    let full = r
        .first_wait
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(r.max_wait);
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let frac = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
    full.mul_f64(frac)
}

/// An error with its causes: reqwest's own text is "error sending request
/// for url (…)", the reason is in the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let r = Retry {
            attempts: 8,
            first_wait: Duration::from_millis(500),
            max_wait: Duration::from_secs(8),
            within: Duration::from_secs(60),
        };
        for (attempt, full) in [(1, 500), (2, 1000), (3, 2000), (6, 8000), (40, 8000)] {
            let w = backoff(&r, attempt).as_millis();
            assert!(w >= full / 2 && w <= full, "attempt {attempt}: {w} ms");
        }
    }
}
