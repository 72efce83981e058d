use cairn_format::Id;

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] cairn_storage::Error),
    /// There is no repository at the location.
    #[error(
        "no Cairn repository at {0}: create one with `cairn init --repo {0}`, or check the path"
    )]
    NotARepository(String),
    /// A repository exists already where one was to be created.
    #[error("a Cairn repository already exists at {0}")]
    AlreadyInitialized(String),
    /// No key file opened with the passphrase.
    #[error("wrong passphrase: no key of the repository at {0} opens with it")]
    WrongPassphrase(String),
    /// No way to open the repository's key was given.
    #[error("{0}")]
    NoKey(String),
    /// The key does not allow the operation.
    #[error("this is a {role} key: it cannot {action}; use an owner key")]
    Denied {
        /// Role of the key in use.
        role: &'static str,
        /// What was attempted.
        action: &'static str,
    },
    /// Stored bytes failed validation or authentication.
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// The object, e.g. `pack 1a2b..` or `blob 3c4d.. in pack 1a2b..`.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob the index does not know.
    #[error("blob {0} is not in the index (missing pack or damaged index); run `cairn check`")]
    MissingBlob(Id),
    /// The repository uses a newer format.
    #[error(transparent)]
    Format(cairn_format::Error),
    /// A snapshot selector matched nothing or too much.
    #[error("{0}")]
    Snapshot(String),
    /// A local file (key file, staging file) failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A backup's view of the repository is too old to commit safely.
    #[error("{0}")]
    Stale(String),
    /// Another process holds a lease this operation needs.
    #[error("{0}")]
    Busy(String),
    /// Randomness or KDF failure.
    #[error(transparent)]
    Crypto(#[from] cairn_crypto::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the error means stored data is damaged (exit code 3).
    pub fn is_integrity(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::MissingBlob(_))
            || matches!(self, Error::Storage(cairn_storage::Error::Short { .. }))
    }

    /// A [`Error::Corrupt`] naming `object`.
    pub fn corrupt(object: impl Into<String>, reason: impl ToString) -> Error {
        Error::Corrupt {
            object: object.into(),
            reason: reason.to_string(),
        }
    }
}
