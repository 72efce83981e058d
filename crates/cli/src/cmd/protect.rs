use anyhow::{Result, bail};
use cairn_repo::Repo;

use crate::args::ProtectArgs;
use crate::ctx::Ctx;
use crate::exit;

pub fn run(ctx: &Ctx, a: ProtectArgs, on: bool) -> Result<i32> {
    let action = if on {
        "protect snapshots"
    } else {
        "unprotect snapshots"
    };
    let storage = ctx.open_keyless(action)?;
    let (list, _) = Repo::list_snapshots(&*storage)?;
    let mut ids = Vec::new();
    for spec in &a.snapshots {
        ids.push(cairn_repo::select_snapshot(&list, spec, a.group.as_deref())?.id);
    }
    if ids.is_empty() {
        bail!("no snapshot given");
    }
    let mut out = Vec::new();
    for id in &ids {
        let changed = if on {
            cairn_maint::protect::protect(&*storage, id, &a.note)?
        } else {
            cairn_maint::protect::unprotect(&*storage, id)?
        };
        out.push(serde_json::json!({"id": id.to_hex(), "changed": changed}));
        if !ctx.g.json && !ctx.g.quiet {
            let what = match (on, changed) {
                (true, true) => "protected",
                (true, false) => "was already protected",
                (false, true) => "no longer protected",
                (false, false) => "was not protected",
            };
            println!("snapshot {} {what}", id.short());
        }
    }
    if ctx.g.json {
        crate::output::json(&out)?;
    }
    Ok(exit::OK)
}
