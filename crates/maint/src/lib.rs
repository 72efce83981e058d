//! Maintenance that the storage side runs without any key: it reads only
//! plaintext (snapshot envelopes, pack trailers, index files), so a backup
//! box can decide what to keep and collect garbage while holding nothing
//! that reveals content (DESIGN.md, "The storage side needs no secret").

pub mod retention;
