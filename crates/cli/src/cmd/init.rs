use anyhow::Result;
use cairn_repo::{Repo, init_options};

use crate::args::InitArgs;
use crate::ctx::{Ctx, key_dir};
use crate::exit;

/// Creates the repository; shared with `backup` into the default repository.
pub fn create(ctx: &Ctx) -> Result<Repo> {
    let storage = ctx.storage()?;
    let mut opts = init_options();
    opts.passphrase = match ctx.given_passphrase()? {
        Some(p) => Some(p),
        None => ctx
            .prompt("passphrase for the new repository (empty: none)", true)?
            .filter(|p| !p.is_empty()),
    };
    if opts.passphrase.is_none() {
        opts.key_dir = Some(key_dir());
    }
    opts.label = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "owner".into()),
        crate::ctx::hostname()
    );
    let repo = Repo::init(storage.clone(), &opts)?;
    if !ctx.g.json {
        eprintln!(
            "created Cairn repository {} at {}",
            &repo.id_hex()[..8],
            storage.location()
        );
        if let Some(w) = storage.write_semantics() {
            eprintln!("{w}");
        }
        if opts.passphrase.is_none() {
            let path = crate::ctx::default_key_path(&repo.id_hex());
            eprintln!(
                "no passphrase was given: the owner key is stored unprotected in {} (mode 0600).\n\
                 Losing that key loses the backups. Keep a copy somewhere safe:\n  cairn key export -o FILE",
                path.display()
            );
        } else {
            eprintln!(
                "the owner key is stored in the repository, protected by the passphrase.\n\
                 Losing the passphrase loses the backups."
            );
        }
    }
    Ok(repo)
}

pub fn run(ctx: &Ctx, a: InitArgs) -> Result<i32> {
    if let Some(like) = &a.like {
        let from = ctx.storage_at(like)?;
        let to = ctx.storage()?;
        cairn_maint::copy::init_replica(&*from, &*to)?;
        let config = cairn_repo::read_config(&*to)?;
        if ctx.g.json {
            crate::output::json(&serde_json::json!({
                "repository": to.location(),
                "id": hex::encode(config.repo_id),
                "replica_of": from.location(),
            }))?;
        } else {
            eprintln!(
                "created {} as a replica of {} (repository {}): the same keys open both; `cairn copy --from {} --to {}` fills it",
                to.location(),
                from.location(),
                &hex::encode(config.repo_id)[..8],
                like,
                ctx.repo_location()
            );
            if let Some(w) = to.write_semantics() {
                eprintln!("{w}");
            }
        }
        return Ok(exit::OK);
    }
    let repo = create(ctx)?;
    if ctx.g.json {
        crate::output::json(&serde_json::json!({
            "repository": repo.storage().location(),
            "id": repo.id_hex(),
        }))?;
    }
    Ok(exit::OK)
}
