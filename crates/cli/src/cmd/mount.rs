use anyhow::Result;
use cairn_mount::{Options, Tuning};

use crate::args::MountArgs;
use crate::ctx::Ctx;
use crate::exit;

pub fn run(ctx: &Ctx, a: MountArgs) -> Result<i32> {
    // Refused before the key is asked for: a mistyped mount point should
    // not cost a passphrase.
    cairn_mount::check_mount_point(&a.mountpoint)?;
    let repo = ctx.open()?;
    repo.require_owner("mount snapshots")?;
    let (list, bad) = cairn_repo::Repo::list_snapshots(&**repo.storage())?;
    for b in &bad {
        eprintln!("warning: {b}; it is left out of the view");
    }
    let list: Vec<_> = cairn_repo::select_many(&list, &[], a.group.as_deref())?
        .into_iter()
        .cloned()
        .collect();
    let opts = Options {
        allow_other: a.allow_other,
        tuning: Tuning {
            chunk_cache: usize::try_from(a.cache_size).unwrap_or(usize::MAX),
            ..Tuning::default()
        },
        disk_cache: a.disk_cache.map(|d| (d, a.disk_cache_size)),
    };
    let n = list.len();
    let at = a.mountpoint.display().to_string();
    let quiet = ctx.g.quiet;
    cairn_mount::mount(repo, &list, &a.mountpoint, &opts, || {
        if !quiet {
            eprintln!(
                "cairn: mounted {n} snapshots at {at} (read-only); Ctrl-C or `umount {at}` unmounts"
            );
        }
    })?;
    Ok(exit::OK)
}
