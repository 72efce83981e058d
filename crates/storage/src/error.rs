use std::path::PathBuf;

use crate::Kind;

/// Why a storage operation failed, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{kind:?} object {name} not found in {location}")]
    NotFound {
        /// Object kind.
        kind: Kind,
        /// Object name.
        name: String,
        /// Storage location.
        location: String,
    },
    /// A create-only object exists already.
    #[error("{kind:?} object {name} already exists")]
    AlreadyExists {
        /// Object kind.
        kind: Kind,
        /// Object name.
        name: String,
    },
    /// The object name is not acceptable.
    #[error("invalid object name {0:?}")]
    InvalidName(String),
    /// The storage refused access.
    #[error("permission denied on {path}: check the owner and mode of the repository")]
    Denied {
        /// What was refused.
        path: PathBuf,
    },
    /// The role of whoever asked does not allow the operation (a put
    /// token deleting, say). Nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// The disk holding the repository is full.
    #[error(
        "the disk holding {path} is full: free space there (or move the repository), then rerun; nothing was lost"
    )]
    NoSpace {
        /// Where the write failed.
        path: PathBuf,
    },
    /// A new repository was to be created in a non-empty directory.
    #[error("{path} is not empty and is not a Cairn repository: choose an empty or new directory")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// A repository location or its settings are wrong (an `s3://` URL,
    /// missing credentials).
    #[error("{0}")]
    Config(String),
    /// A remote store failed in a way retrying did not cure; the message
    /// says where and what to check.
    #[error("{0}")]
    Remote(String),
    /// A new repository was to be created where a remote store already
    /// holds other objects.
    #[error(
        "{0} holds objects that are not a Cairn repository: choose an empty bucket or another prefix"
    )]
    NotEmptyRemote(String),
    /// The object is shorter than a range read asked for.
    #[error("{kind:?} object {name} is shorter than expected (truncated?)")]
    Short {
        /// Object kind.
        kind: Kind,
        /// Object name.
        name: String,
    },
    /// Any other I/O error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Classifies an I/O error on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, e: std::io::Error) -> Error {
        let path = path.into();
        match e.raw_os_error() {
            Some(libc_enospc) if libc_enospc == 28 || libc_enospc == 122 => Error::NoSpace { path },
            Some(13) | Some(1) => Error::Denied { path },
            _ => Error::Io {
                op,
                path,
                source: e,
            },
        }
    }

    /// Whether this is a missing object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}
