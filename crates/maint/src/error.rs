//! Why a maintenance operation failed.

/// Errors of keyless maintenance.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the repository failed.
    #[error(transparent)]
    Repo(#[from] cairn_store::Error),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] cairn_storage::Error),
    /// What the storage shows cannot be trusted to decide deletions, so
    /// nothing was deleted.
    #[error("{0}; nothing was deleted. Run `cairn check` to find out what is wrong")]
    Untrusted(String),
    /// A retention policy is not usable.
    #[error(transparent)]
    Policy(#[from] crate::retention::Error),
    /// Bad arguments.
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// Whether the error means stored data is damaged (exit code 3).
    pub fn is_integrity(&self) -> bool {
        match self {
            Error::Repo(e) => e.is_integrity(),
            Error::Untrusted(_) => true,
            _ => false,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
