//! The XDG base directories, resolved the way every Cairn command does.

use std::path::PathBuf;

/// `$HOME`, or `/` when unset.
pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `$VAR` when it is an absolute path, else `$HOME/fallback`.
pub fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(fallback))
}
