use std::path::PathBuf;

/// Why the server could not start or a command on it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file (or flags) say something impossible.
    #[error("{path}: {1}", path = .0.display())]
    Config(PathBuf, String),
    /// The token file.
    #[error("tokens: {0}")]
    Tokens(String),
    /// Certificates.
    #[error("TLS: {0}")]
    Tls(String),
    /// Reading or writing the server's own files.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing one of the server's own files durably.
    #[error(transparent)]
    Storage(#[from] cairn_storage::Error),
    /// A state file the server keeps is damaged: it is not reset
    /// silently, since what it records (alerts, job outcomes) matters.
    #[error("{path} is damaged ({reason}); {fix}", path = .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// What to do.
        fix: &'static str,
    },
    /// A repository the config names.
    #[error("repository {name}: {source}")]
    Repo {
        /// Its name in the config.
        name: String,
        /// What is wrong with it.
        source: cairn_store::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
