//! Keeps glibc's allocator from hoarding memory.
//!
//! glibc raises its mmap threshold each time a large mmapped block is
//! freed (the first one is Argon2's 19 MiB when a key is opened), after
//! which buffers of a few MiB come from per-thread arenas that keep up to
//! twice that threshold of freed memory each. Measured on `check
//! --read-data` of a 3 GiB repository: 83 MiB peak RSS with the dynamic
//! threshold, 41 MiB with a fixed one, and no slower. glibc only takes a
//! fixed threshold from the environment at start-up (changing it later
//! needs `mallopt`, i.e. unsafe code), so the process re-executes itself
//! once with `MALLOC_MMAP_THRESHOLD_` set. Other allocators (mimalloc,
//! jemalloc) were measured too and held more memory, not less.

/// Set in the environment of the re-executed process.
const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
/// 256 KiB: chunks and pack windows (MiBs) are mmapped and returned on
/// free; small allocations stay in the arenas.
const THRESHOLD: &str = "262144";

/// Re-executes the current binary with a fixed mmap threshold, unless it
/// is set already or this is not glibc. Returns if anything fails.
pub fn fix_threshold() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(argv0)
        .args(args)
        .env(VAR, THRESHOLD)
        .exec();
    // exec only returns on failure: carry on with the default allocator.
    let _ = err;
}
