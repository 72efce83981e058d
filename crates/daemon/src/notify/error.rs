//! Why a delivery failed, in words that name the channel and its receiver
//! (`webhook https://hooks.example.org/…`, `email via mail.example.org:587`)
//! and never a token, a password or a URL path.

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The channel's settings cannot work (a malformed URL or address,
    /// plain SMTP to a remote server, an empty command): retrying will not
    /// help, the config must change.
    #[error("{channel}: {reason}")]
    Config {
        /// The channel, without secrets.
        channel: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The receiver could not be reached: connection refused, unknown
    /// host, timeout, TLS failure.
    #[error("{channel}: cannot reach it: {reason}")]
    Unreachable {
        /// The channel, without secrets.
        channel: String,
        /// What the network said.
        reason: String,
    },
    /// The receiver answered, with an error (an HTTP status other than
    /// 2xx, an SMTP error reply such as a refused login).
    #[error("{channel}: {reason}")]
    Rejected {
        /// The channel, without secrets.
        channel: String,
        /// The answer, in words.
        reason: String,
        /// Whether the same request will fail again (an HTTP 4xx other
        /// than 408 and 429, an SMTP 5xx): not worth a retry.
        permanent: bool,
    },
    /// The command could not be started, ran too long, or exited with an
    /// error.
    #[error("{channel}: {reason}")]
    Command {
        /// The channel, without secrets.
        channel: String,
        /// What went wrong, with the end of its standard error.
        reason: String,
    },
}

impl NotifyError {
    /// Whether another attempt later may succeed: the receiver may come
    /// back, a broken config will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            NotifyError::Config { .. } => false,
            NotifyError::Rejected { permanent, .. } => !permanent,
            NotifyError::Unreachable { .. } | NotifyError::Command { .. } => true,
        }
    }
}

/// Replaces each secret in `text` with `…`: the messages of the HTTP and
/// SMTP libraries may quote a URL or a server reply whole.
pub(super) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        // Short strings ("/", "a") would mangle the text and hide nothing.
        if s.len() >= 4 {
            out = out.replace(s, "…");
        }
    }
    out
}
