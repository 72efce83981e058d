use anyhow::{Result, bail};
use cairn_format::keyfile::Role;
use cairn_repo::keys::write_key_file;
use cairn_storage::Kind;

use crate::args::{KeyCommand, RoleArg};
use crate::ctx::{Ctx, read_new_passphrase};
use crate::exit;
use crate::output::time;

pub fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<i32> {
    let repo = ctx.open()?;
    let label_default = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "user".into()),
        crate::ctx::hostname()
    );
    match cmd {
        KeyCommand::Add {
            role,
            output,
            new_password_file,
            no_password,
            label,
        } => {
            repo.require_owner("add keys")?;
            let km = match role {
                RoleArg::Owner => {
                    let mut k = repo.keys().clone();
                    k.name = None;
                    k
                }
                RoleArg::PutOnly => repo.keys().put_only(),
            };
            let label = label.unwrap_or(label_default);
            let pass = if no_password {
                None
            } else {
                read_new_passphrase(ctx, new_password_file.as_deref())?
            };
            match output {
                Some(path) => {
                    if pass.is_none() && !no_password {
                        bail!(
                            "give the new key a passphrase (--new-password-file or CAIRN_NEW_PASSWORD), or pass --no-password"
                        );
                    }
                    let kf = repo.export_keyfile(&km, pass.as_deref(), &label)?;
                    write_key_file(&path, &kf)?;
                    if !ctx.g.quiet {
                        println!(
                            "wrote {} key to {}{}",
                            km.role.name(),
                            path.display(),
                            if pass.is_none() {
                                " (no passphrase, mode 0600)"
                            } else {
                                ""
                            }
                        );
                    }
                }
                None => {
                    let Some(p) = pass else {
                        bail!(
                            "a key stored in the repository needs a passphrase (--new-password-file or CAIRN_NEW_PASSWORD); use --output for a key file"
                        );
                    };
                    let name = repo.add_key(&km, &p, &label)?;
                    if !ctx.g.quiet {
                        println!("added {} key {}", km.role.name(), &name[..8]);
                    }
                }
            }
            Ok(exit::OK)
        }
        KeyCommand::List => {
            let current = repo.keys().name.clone();
            let keys = repo.list_keys()?;
            if ctx.g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(n, kf)| {
                        serde_json::json!({
                            "id": n,
                            "current": Some(n) == current.as_ref(),
                            "role": kf.as_ref().map(|k| k.role.name()),
                            "label": kf.as_ref().map(|k| k.label.clone()),
                            "created": kf.as_ref().map(|k| crate::output::rfc3339(k.created_ns)),
                        })
                    })
                    .collect();
                crate::output::json(&v)?;
            } else {
                println!(
                    "   {:<8}  {:<8}  {:<19}  label",
                    "ID", "role", "created (UTC)"
                );
                for (n, kf) in &keys {
                    let mark = if Some(n) == current.as_ref() {
                        "*"
                    } else {
                        " "
                    };
                    match kf {
                        Some(k) => println!(
                            "{mark}  {:<8}  {:<8}  {:<19}  {}",
                            &n[..8.min(n.len())],
                            k.role.name(),
                            time(k.created_ns),
                            k.label
                        ),
                        None => {
                            println!("{mark}  {:<8}  (unreadable key file)", &n[..8.min(n.len())])
                        }
                    }
                }
                if current.is_none() {
                    println!("(the key in use is a key file outside the repository)");
                }
            }
            Ok(exit::OK)
        }
        KeyCommand::Remove { id, force } => {
            repo.require_owner("remove keys")?;
            let keys = repo.list_keys()?;
            let m: Vec<_> = keys.iter().filter(|(n, _)| n.starts_with(&id)).collect();
            let (name, kf) = match m.as_slice() {
                [one] => one,
                [] => bail!("no key matches {id:?}; `cairn key list` shows them"),
                _ => bail!("{} keys match {id:?}; give more digits", m.len()),
            };
            if repo.keys().name.as_ref() == Some(name) {
                bail!("{id} is the key in use; open the repository with another key to remove it");
            }
            let owners = keys
                .iter()
                .filter(|(_, k)| k.as_ref().is_some_and(|k| k.role == Role::Owner))
                .count();
            // Opened with a stored owner key, the target is never the
            // last one (the key in use is another); opened from a key
            // file, it can be, and then only files outside the repository
            // would be left to read it.
            let is_owner = kf.as_ref().is_some_and(|k| k.role == Role::Owner);
            if is_owner && owners == 1 && !force {
                bail!(
                    "{id} is the last owner key stored in the repository: without it, only owner key files kept elsewhere can open it, and losing them loses the backups. \
                     Add one first (`cairn key add`), or give --force if the key files are kept safe"
                );
            }
            repo.storage().delete(Kind::Key, name)?;
            if !ctx.g.quiet {
                println!("removed key {}", &name[..8]);
            }
            Ok(exit::OK)
        }
        KeyCommand::Passwd { new_password_file } => {
            let Some(old) = repo.keys().name.clone() else {
                bail!(
                    "the key in use is a key file, not stored in the repository: use `cairn key export --new-password-file` to write a protected copy"
                );
            };
            let Some(p) = read_new_passphrase(ctx, new_password_file.as_deref())? else {
                bail!("no new passphrase given (--new-password-file or CAIRN_NEW_PASSWORD)");
            };
            let kf_label = repo
                .list_keys()?
                .into_iter()
                .find(|(n, _)| *n == old)
                .and_then(|(_, k)| k.map(|k| k.label))
                .unwrap_or(label_default);
            // Write the new key first: a crash in between leaves two keys,
            // never none.
            let name = repo.add_key(repo.keys(), &p, &kf_label)?;
            repo.storage().delete(Kind::Key, &old)?;
            if !ctx.g.quiet {
                println!(
                    "passphrase changed (key {} replaces {})",
                    &name[..8],
                    &old[..8]
                );
            }
            Ok(exit::OK)
        }
        KeyCommand::Export {
            output,
            new_password_file,
        } => {
            let pass = match new_password_file {
                Some(f) => read_new_passphrase(ctx, Some(&f))?,
                None => None,
            };
            let kf = repo.export_keyfile(repo.keys(), pass.as_deref(), &label_default)?;
            write_key_file(&output, &kf)?;
            if !ctx.g.quiet {
                println!(
                    "wrote the {} key to {}{}",
                    repo.keys().role.name(),
                    output.display(),
                    if pass.is_none() {
                        " without passphrase (mode 0600): keep it safe, it opens the repository"
                    } else {
                        ""
                    }
                );
            }
            Ok(exit::OK)
        }
    }
}
