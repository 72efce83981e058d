/// Why a sequence of bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before the structure did.
    #[error("{what} is truncated")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
    },
    /// The input does not start with the expected magic bytes.
    #[error("{what} has a wrong magic number (not a Cairn object, or damaged)")]
    BadMagic {
        /// The structure being decoded.
        what: &'static str,
    },
    /// A field holds a value this version cannot accept.
    #[error("{what} is malformed: {reason}")]
    Invalid {
        /// The structure being decoded.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The object was written by a newer format version.
    #[error(
        "{what} uses format version {found}, this cairn reads up to {supported}; upgrade cairn"
    )]
    UnsupportedVersion {
        /// The structure being decoded.
        what: &'static str,
        /// Version found in the bytes.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        reason: reason.into(),
    }
}
