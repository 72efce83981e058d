use std::sync::Arc;

use anyhow::{Result, bail};
use cairn_server::guarded::{GuardedStorage, Refusal};
use cairn_server::policy::{GroupPattern, Role};
use cairn_storage::{LocalStorage, Storage};

use crate::args::{ServeArgs, ServeRole};
use crate::ctx::Ctx;
use crate::exit;

pub fn run(ctx: &Ctx, a: ServeArgs) -> Result<i32> {
    let Some(path) = &ctx.g.repo else {
        bail!("cairn serve needs --repo PATH: the repository it serves");
    };
    if path.contains("://") {
        bail!("cairn serve serves a local directory, not {path}");
    }
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(path));
    // A repository that is not there is an error now, not at the first
    // request.
    cairn_repo::read_config(&*storage)?;
    let role = match (a.role, &a.group) {
        (ServeRole::Put, g) => Role::Put(
            g.as_deref()
                .map(GroupPattern::new)
                .transpose()
                .map_err(anyhow::Error::msg)?,
        ),
        (_, Some(_)) => bail!("--group applies to --role put only"),
        (ServeRole::Admin, None) => Role::Admin,
        (ServeRole::Read, None) => Role::Read,
    };
    let name = a.name.clone().unwrap_or_else(|| {
        std::env::var("SSH_CLIENT")
            .ok()
            .and_then(|c| c.split_whitespace().next().map(|s| format!("ssh {s}")))
            .unwrap_or_else(|| "stdio".into())
    });
    let guarded = GuardedStorage::new(
        storage,
        role,
        &name,
        Arc::new(|r: &Refusal| {
            eprintln!(
                "cairn serve: refused {:?} {:?} {} for {} ({}): {}",
                r.op, r.kind, r.name, r.principal, r.role, r.reason
            )
        }),
    );
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let (mut i, mut o) = (stdin.lock(), stdout.lock());
    cairn_server::serve::serve(&mut i, &mut o, &guarded)?;
    Ok(exit::OK)
}
