//! Exit codes (documented in the README):
//! 0 ok, 1 finished with warnings, 2 failed, 3 integrity problem.

/// Everything went well.
pub const OK: i32 = 0;
/// Finished, but some entries were skipped or could not be applied.
pub const WARNINGS: i32 = 1;
/// Failed: nothing (more) was done.
pub const FAILED: i32 = 2;
/// Stored data is damaged.
pub const INTEGRITY: i32 = 3;

/// Prints an error with its causes and picks the exit code.
pub fn report(e: &anyhow::Error) -> i32 {
    let mut msg = format!("cairn: error: {e}");
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(&format!("\n  caused by: {c}"));
        }
    }
    eprintln!("{msg}");
    if is_integrity(e) { INTEGRITY } else { FAILED }
}

fn is_integrity(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<cairn_engine::Error>()
            .is_some_and(|x| x.is_integrity())
            || c.downcast_ref::<cairn_repo::Error>()
                .is_some_and(|x| x.is_integrity())
            || c.downcast_ref::<cairn_maint::Error>()
                .is_some_and(|x| x.is_integrity())
    })
}
