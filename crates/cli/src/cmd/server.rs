use anyhow::{Context, Result, bail};
use cairn_remote::tls::show_fingerprint;
use cairn_server::config::{Config, Limits, RepoConfig, TlsFiles};
use cairn_server::tokens::{TokenStore, show_time};

use crate::args::{ServeRole, ServerArgs, ServerCommand, ServerConfigArgs, TokenCommand};
use crate::ctx::Ctx;
use crate::exit;

/// The config from `--config`, or from the flags.
fn config(w: &ServerConfigArgs) -> Result<Config> {
    if let Some(f) = &w.config {
        if !w.serve.is_empty() || w.listen.is_some() || w.plain_http || w.tls_cert.is_some() {
            bail!(
                "give either --config or the flags --serve/--listen/--plain-http/--tls-*, not both"
            );
        }
        return Ok(Config::load(f)?);
    }
    let mut repositories = Vec::new();
    for s in &w.serve {
        let Some((name, path)) = s.split_once('=') else {
            bail!("--serve {s:?}: expected NAME=PATH, e.g. --serve home=/srv/cairn/home");
        };
        repositories.push(RepoConfig {
            name: name.to_string(),
            path: path.into(),
            jobs: Vec::new(),
            stale_after: std::time::Duration::from_secs(2 * 86_400),
        });
    }
    let listen = w
        .listen
        .as_deref()
        .unwrap_or(cairn_server::config::DEFAULT_LISTEN);
    let c = Config {
        listen: listen.parse().with_context(|| {
            format!("--listen {listen:?}: expected an address like 0.0.0.0:8443")
        })?,
        state: state_dir(w),
        plain_http: w.plain_http,
        tls: match (&w.tls_cert, &w.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        repositories,
        limits: Limits::default(),
    };
    if c.repositories.is_empty() {
        bail!(
            "nothing to serve: give --config FILE, or --serve NAME=PATH (a repository made with `cairn init --repo PATH`)"
        );
    }
    c.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

fn state_dir(w: &ServerConfigArgs) -> std::path::PathBuf {
    w.state
        .clone()
        .unwrap_or_else(|| crate::ctx::data_dir().join("server"))
}

pub fn run(ctx: &Ctx, a: ServerArgs) -> Result<i32> {
    match a.command {
        None => serve(a.where_),
        Some(ServerCommand::Fingerprint) => {
            let w = &a.where_;
            let files = if w.config.is_some() || !w.serve.is_empty() {
                let c = config(w)?;
                if c.plain_http {
                    bail!("this server speaks plain HTTP: it has no certificate");
                }
                cairn_server::certs::ensure(&c)?
            } else {
                // Flag form: the given certificate, or the one the
                // server made in its state directory.
                let dir = state_dir(w).join("tls");
                cairn_server::certs::CertFiles {
                    cert: w
                        .tls_cert
                        .clone()
                        .unwrap_or_else(|| dir.join("self-signed.crt")),
                    key: w
                        .tls_key
                        .clone()
                        .unwrap_or_else(|| dir.join("self-signed.key")),
                    self_signed: w.tls_cert.is_none(),
                }
            };
            if !files.cert.exists() {
                bail!(
                    "no certificate at {}: start `cairn server` once (it makes one), or give --tls-cert",
                    files.cert.display()
                );
            }
            let (_, fp) = cairn_server::certs::load(&files)?;
            println!("{}", show_fingerprint(&fp));
            Ok(exit::OK)
        }
        Some(ServerCommand::Token(t)) => token(ctx, &a.where_, t),
    }
}

fn serve(w: ServerConfigArgs) -> Result<i32> {
    let c = config(&w)?;
    let scheme = if c.plain_http { "http" } else { "https" };
    let running = cairn_daemon::start(c)?;
    let s = &running.server;
    let host = if running.addr.ip().is_unspecified() {
        crate::ctx::hostname()
    } else {
        running.addr.ip().to_string()
    };
    for r in &s.config.repositories {
        s.log(&format!(
            "serving {} at {scheme}://{host}:{}/{}",
            r.path.display(),
            running.addr.port(),
            r.name
        ));
    }
    if let Some(fp) = &running.fingerprint {
        let how = if s.config.tls.is_some() {
            "from the configured files, reloaded when they change"
        } else {
            "self-signed; clients trust it on first contact, or pin it with --server-fingerprint"
        };
        s.log(&format!("certificate {} ({how})", show_fingerprint(fp)));
    }
    s.log(&format!(
        "tokens in {} (`cairn server token add` makes them); status page at {scheme}://{host}:{}/",
        s.tokens.path().display(),
        running.addr.port()
    ));
    running.wait();
    Ok(exit::OK)
}

fn token(ctx: &Ctx, w: &ServerConfigArgs, t: TokenCommand) -> Result<i32> {
    // A config file names the state directory and the repositories;
    // without one, the flag-form state directory.
    let known = match &w.config {
        Some(f) => Some(Config::load(f)?),
        None => None,
    };
    let state = known
        .as_ref()
        .map(|c| c.state.clone())
        .unwrap_or_else(|| state_dir(w));
    let store = TokenStore::new(&state);
    match t {
        TokenCommand::Add {
            name,
            role,
            group,
            expires,
        } => {
            let repo = match (&ctx.g.repo, &known) {
                (Some(r), _) => r.clone(),
                (None, Some(c)) if c.repositories.len() == 1 => c.repositories[0].name.clone(),
                _ => bail!(
                    "name the repository the token opens: --repo NAME (its name in the server config)"
                ),
            };
            if let Some(c) = &known
                && c.repository(&repo).is_none()
            {
                bail!(
                    "the server config names no repository {repo:?}; it has: {}",
                    c.repositories
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let role = match role {
                ServeRole::Admin => "admin",
                ServeRole::Put => "put",
                ServeRole::Read => "read",
            };
            let tok = store.add(&name, role, &repo, group.as_deref(), expires)?;
            if ctx.g.json {
                crate::output::json(&serde_json::json!({"name": name, "token": tok}))?;
            } else {
                println!("{tok}");
                if !ctx.g.quiet {
                    eprintln!(
                        "token {name:?} ({role} on {repo}) made; it is shown only now. On the client: \
                         put it in a file (mode 0600) and pass --token-file FILE, or set CAIRN_TOKEN"
                    );
                }
            }
        }
        TokenCommand::List => {
            let list = store.list()?;
            if ctx.g.json {
                crate::output::json(&list)?;
            } else {
                println!(
                    "{:<20} {:<6} {:<12} {:<16} {:<21} state",
                    "name", "role", "repository", "groups", "created"
                );
                let now = cairn_repo::now_ns() / 1_000_000_000;
                for t in list {
                    let state = match (t.revoked, t.expires) {
                        (Some(at), _) => format!("revoked {}", show_time(at)),
                        (None, Some(at)) if at <= now => format!("expired {}", show_time(at)),
                        (None, Some(at)) => format!("expires {}", show_time(at)),
                        (None, None) => "active".into(),
                    };
                    println!(
                        "{:<20} {:<6} {:<12} {:<16} {:<21} {state}",
                        t.name,
                        t.role,
                        t.repo,
                        t.group.as_deref().unwrap_or("*"),
                        show_time(t.created)
                    );
                }
            }
        }
        TokenCommand::Revoke { name } => {
            store.revoke(&name)?;
            if !ctx.g.quiet {
                println!("token {name:?} revoked");
            }
        }
    }
    Ok(exit::OK)
}
