//! The backup box: a storage that sources reach over the
//! network and that decides, in one place, what each of them may do.
//!
//! [`policy`] says which operations a role allows on which kinds of
//! objects; [`guarded::GuardedStorage`] applies it to every call and
//! checks what is uploaded (names are hashes of the bytes, snapshots
//! belong to the caller's groups), so HTTPS and SSH transports share one
//! enforcement point instead of each growing its own.

pub mod guarded;
pub mod policy;
pub mod serve;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;
