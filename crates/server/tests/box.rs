//! The box, tested from outside: the guard against real repositories
//! ([`guard`]) and the HTTPS server on loopback ([`https`]).

#[path = "box/guard.rs"]
mod guard;
#[path = "box/https.rs"]
mod https;
