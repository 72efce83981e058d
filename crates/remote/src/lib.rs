//! The client side of the backup box: a [`cairn_storage::Storage`] that
//! lives on another machine, reached over HTTPS ([`https`]) or over SSH
//! ([`ssh`], speaking [`wire`] to `cairn serve --stdio`), with the
//! server's certificate trusted as [`tls`] decides.
//!
//! Nothing here decides what a client may do: the box does, in
//! `cairn-server`. Every byte and length from the other side is checked
//! before it is used.

pub mod https;
pub mod open;
pub mod ssh;
pub mod tls;
pub mod wire;
