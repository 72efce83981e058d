//! `cairn daemon`, `run`, `status` and `approve`: the scheduled jobs of
//! `cairn.toml`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Result, bail};
use cairn_daemon::config::Config;
use cairn_daemon::state::Outcome;

use crate::args::{ConfigArg, DaemonArgs, JobArgs};
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{Bar, cancel_flag};

fn path(c: &ConfigArg) -> PathBuf {
    c.config
        .clone()
        .unwrap_or_else(cairn_daemon::config::default_path)
}

fn load(c: &ConfigArg) -> Result<Config> {
    Ok(Config::load(&path(c))?)
}

/// Things worth knowing that are not mistakes in the file: missing
/// secret files and sources (they may appear later, on another disk).
fn warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    for r in c.repositories.values() {
        for (what, f) in [
            ("password_file", &r.password_file),
            ("key_file", &r.key_file),
            ("token_file", &r.token_file),
        ] {
            if let Some(f) = f
                && !f.exists()
            {
                w.push(format!(
                    "repository {}: {what} {} does not exist (yet)",
                    r.name,
                    f.display()
                ));
            }
        }
    }
    for j in &c.jobs {
        if let cairn_daemon::config::Kind::Backup(b) = &j.kind {
            for p in &b.paths {
                if !p.exists() {
                    w.push(format!(
                        "job {}: source {} does not exist now",
                        j.name,
                        p.display()
                    ));
                }
            }
        }
    }
    w
}

pub fn daemon(a: DaemonArgs) -> Result<i32> {
    let file = path(&a.cfg);
    let config = match Config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit::FAILED);
        }
    };
    if a.check_config {
        for w in warnings(&config) {
            eprintln!("warning: {w}");
        }
        println!(
            "{}: ok: {} repositories, {} jobs, {} notification channels",
            file.display(),
            config.repositories.len(),
            config.jobs.len(),
            config.notify.len()
        );
        return Ok(exit::OK);
    }
    let signals = cairn_daemon::scheduler::Signals::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signals.stop.clone())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, signals.reload.clone())?;
    let notifying = cairn_daemon::announce::Notifying::new(&config).map_err(anyhow::Error::msg)?;
    if let Some(server) = config.server_config() {
        // A box: the server, with the scheduler beside it.
        let running = cairn_daemon::boxed::start_with(server, config, Some(notifying))?;
        eprintln!(
            "cairn daemon: serving on {}{}",
            running.addr,
            running
                .fingerprint
                .as_ref()
                .map_or(String::new(), |f| format!(
                    ", certificate {}",
                    cairn_remote::tls::show_fingerprint(f)
                ))
        );
        while !signals.stop.load(std::sync::atomic::Ordering::SeqCst) {
            if signals
                .reload
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                eprintln!(
                    "cairn daemon: a box reloads its config by restarting (systemctl restart)"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        running.stop();
        return Ok(exit::OK);
    }
    let announce = Arc::new(notifying);
    let shared = Arc::new(std::sync::RwLock::new(config.clone()));
    let web = match config.listen {
        Some(addr) => {
            Some(cairn_daemon::web::start(shared.clone(), addr).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    if let Some(w) = &web {
        eprintln!(
            "cairn daemon: status page and /metrics on http://{}/",
            w.addr
        );
    }
    let reload_file = file.clone();
    let reload = move || {
        let c = Config::load(&reload_file).map_err(|e| e.to_string())?;
        *shared.write().unwrap_or_else(|p| p.into_inner()) = c.clone();
        Ok(c)
    };
    let res = cairn_daemon::scheduler::run(config, &reload, &signals, announce.clone());
    announce.flush(Duration::from_secs(10));
    if let Some(w) = web {
        w.stop();
    }
    res.map_err(anyhow::Error::msg)?;
    Ok(exit::OK)
}

pub fn run_job(ctx: &Ctx, a: JobArgs) -> Result<i32> {
    let config = load(&a.cfg)?;
    let Some(job) = config.job_named(&a.job) else {
        let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
        bail!(
            "no job {:?} in {}; its jobs are: {}",
            a.job,
            config.file.display(),
            names.join(", ")
        );
    };
    let announce = cairn_daemon::announce::Notifying::new(&config)
        .map_err(anyhow::Error::msg)?
        .quiet();
    let state = cairn_daemon::state::StateDir::new(&config.state);
    let progress = Arc::new(cairn_engine::archiver::Progress::default());
    let cancel: Arc<AtomicBool> = cancel_flag();
    let bar = Bar::start(progress.clone(), "run", ctx.progress());
    let res = cairn_daemon::run::run_recorded(&config, job, &state, progress, cancel, &announce);
    bar.finish();
    announce.flush(Duration::from_secs(10));
    let rec = match res {
        Ok(r) => r,
        Err(cairn_daemon::run::NotStarted::Busy) => bail!(
            "job {} is running already (in the daemon, or another `cairn run`); see `cairn status`",
            a.job
        ),
        Err(cairn_daemon::run::NotStarted::State(e)) => bail!("job {}: {e}", a.job),
    };
    let word = match rec.report.outcome {
        Outcome::Ok => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Refused => "REFUSED",
        Outcome::Interrupted => "interrupted",
    };
    if ctx.g.json {
        crate::output::json(&serde_json::json!({
            "job": a.job,
            "outcome": word.to_lowercase(),
            "message": rec.report.message,
            "snapshot": rec.report.snapshot,
            "upstream": rec.report.news,
        }))?;
    } else {
        println!("job {}: {word}: {}", a.job, rec.report.message);
        for n in &rec.report.news {
            println!("  upstream: {n}");
        }
    }
    Ok(match rec.report.outcome {
        Outcome::Ok => exit::OK,
        _ => exit::FAILED,
    })
}

pub fn status(ctx: &Ctx, a: ConfigArg) -> Result<i32> {
    let config = match load(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: error: {e}");
            return Ok(cairn_daemon::status::Health::Unknown.nagios());
        }
    };
    let v = cairn_daemon::status::view(&config, cairn_store::now_ns());
    if ctx.g.json {
        crate::output::json(&v)?;
    } else {
        print!("{}", cairn_daemon::status::render(&v));
    }
    Ok(v.health.nagios())
}

pub fn approve(a: JobArgs) -> Result<i32> {
    let config = load(&a.cfg)?;
    if config.job_named(&a.job).is_none() {
        bail!("no job {:?} in {}", a.job, config.file.display());
    }
    let state = cairn_daemon::state::StateDir::new(&config.state);
    let by = format!(
        "approved by {} at {}",
        std::env::var("USER").unwrap_or_else(|_| "?".into()),
        cairn_maint::times::rfc3339(cairn_store::now_ns())
    );
    state.approve(&a.job, &by)?;
    println!(
        "the next run of {} may commit a snapshot that lost more than max_vanished of the last one; later runs are guarded again",
        a.job
    );
    Ok(exit::OK)
}
