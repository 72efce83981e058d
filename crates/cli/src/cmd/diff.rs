use anyhow::Result;

use crate::args::DiffArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::size;

pub fn run(ctx: &Ctx, a: DiffArgs) -> Result<i32> {
    let repo = ctx.open()?;
    repo.require_owner("compare snapshots")?;
    let sa = super::resolve(&repo, &a.a, a.group.as_deref())?;
    let sb = super::resolve(&repo, &a.b, a.group.as_deref())?;
    let changes = cairn_engine::walk::diff(&repo, &sa.envelope.root, &sb.envelope.root)?;
    if ctx.g.json {
        crate::output::json(&serde_json::json!({
            "from": sa.id.to_hex(), "to": sb.id.to_hex(), "changes": changes,
        }))?;
        return Ok(exit::OK);
    }
    let (mut added, mut removed, mut changed) = (0u64, 0u64, 0u64);
    let (mut bytes_added, mut bytes_removed) = (0u64, 0u64);
    for c in &changes {
        match c.kind {
            '+' => {
                added += 1;
                bytes_added += c.new_size;
                println!("+ {}  ({})", c.path, size(c.new_size));
            }
            '-' => {
                removed += 1;
                bytes_removed += c.old_size;
                println!("- {}  ({})", c.path, size(c.old_size));
            }
            k => {
                changed += 1;
                println!(
                    "{k} {}  ({} -> {})",
                    c.path,
                    size(c.old_size),
                    size(c.new_size)
                );
            }
        }
    }
    println!(
        "{added} added ({}), {removed} removed ({}), {changed} changed",
        size(bytes_added),
        size(bytes_removed)
    );
    Ok(exit::OK)
}
