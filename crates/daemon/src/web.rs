//! The daemon's status page and `/metrics`, on loopback by default: the
//! answer to "what do my backups look like right now?" for a person (a
//! page in the box's style, red where something is wrong) and for
//! Prometheus. A box shows the same jobs on its own page instead.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::status::{Health, View};

use cairn_server::metrics::label;
use cairn_server::status::esc;

/// The page as HTML.
pub fn page(v: &View, host: &str) -> String {
    use cairn_maint::times::local;
    let bad = v
        .jobs
        .iter()
        .filter(|j| matches!(j.health, Health::Red | Health::Unknown))
        .count();
    let mut body = String::new();
    if !v.daemon_running {
        body.push_str("<p class=\"bad\">The daemon is not running: nothing runs on schedule.</p>");
    }
    body.push_str(
        "<table class=\"jobs\"><thead><tr><th>Job</th><th>Kind</th><th>Repository</th><th>State</th>\
         <th>Last success</th><th>Next run</th><th>Last proven restore</th><th>Last run</th></tr></thead><tbody>",
    );
    for j in &v.jobs {
        let class = match j.health {
            Health::Green => "ok",
            Health::Yellow => "warn",
            Health::Red | Health::Unknown => "bad",
        };
        let state = match &j.progress {
            Some(p) => format!(
                "running: {} files, {} read",
                p.files,
                cairn_maint::units::human(p.bytes)
            ),
            None => j.state.clone(),
        };
        let next = match (j.next_run_ns, &j.waits_for) {
            (Some(n), Some(w)) => format!("{} (and {w})", local(n)),
            (Some(n), None) => local(n),
            (None, Some(w)) => format!("when {w}"),
            (None, None) => String::new(),
        };
        let _ = write!(
            body,
            "<tr class=\"{class}\" data-job=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td></tr>",
            esc(&j.name),
            j.kind,
            esc(&j.repository),
            esc(&state),
            j.last_success_ns.map_or("never".to_string(), local),
            esc(&next),
            if j.kind == "drill" || j.last_proven_ns.is_some() {
                j.last_proven_ns.map_or("never".to_string(), local)
            } else {
                String::new()
            },
            esc(&j.last_message)
        );
    }
    body.push_str("</tbody></table>");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <title>Cairn on {host}{title}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
         tr.bad td,p.bad,.summary.bad{{color:#b00020;font-weight:bold}}tr.warn td{{color:#8a5a00}}\
         tr.ok td:nth-child(4),.summary.ok{{color:#1b5e20}}.meta{{color:#555}}</style></head><body>\
         <h1>Cairn on {host}</h1><p class=\"summary {sclass}\">{summary}</p>{body}\
         <p class=\"meta\">As of {now}.</p></body></html>",
        host = esc(host),
        title = if bad > 0 {
            format!(" ({bad} problems)")
        } else {
            String::new()
        },
        sclass = if bad > 0 { "bad" } else { "ok" },
        summary = if bad > 0 {
            format!(
                "{} {} attention.",
                cairn_server::status::count(bad, "job"),
                if bad == 1 { "needs" } else { "need" }
            )
        } else {
            "All well.".to_string()
        },
        now = esc(&local(cairn_store::now_ns())),
    )
}

/// The jobs in Prometheus's text format.
pub fn metrics(v: &View, out: &mut String) {
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        out,
        "cairn_daemon_up",
        "gauge",
        "1 when a daemon holds the state directory.",
    );
    let _ = writeln!(out, "cairn_daemon_up {}", u8::from(v.daemon_running));
    let secs = |ns: i64| ns as f64 / 1e9;
    let metrics: [(&str, &str, &str); 6] = [
        (
            "cairn_job_last_success_timestamp_seconds",
            "gauge",
            "When the job's last successful run started.",
        ),
        (
            "cairn_job_last_run_timestamp_seconds",
            "gauge",
            "When the job's last run started.",
        ),
        (
            "cairn_job_last_run_duration_seconds",
            "gauge",
            "How long the job's last run took.",
        ),
        (
            "cairn_job_last_bytes_added",
            "gauge",
            "Bytes the job's last successful run added to its repository.",
        ),
        (
            "cairn_job_health",
            "gauge",
            "0 OK, 1 warning, 2 critical, 3 unknown (the Nagios codes).",
        ),
        (
            "cairn_job_guard_refusals_total",
            "counter",
            "Runs a guard held back (missing source, unmounted disk, shrink).",
        ),
    ];
    for (i, (name, kind, help)) in metrics.iter().enumerate() {
        head(out, name, kind, help);
        for j in &v.jobs {
            let l = format!(
                "job=\"{}\",kind=\"{}\",repository=\"{}\"",
                label(&j.name),
                j.kind,
                label(&j.repository)
            );
            let value = match i {
                0 => j.last_success_ns.map(secs),
                1 => j.last_run_ns.map(secs),
                2 => j.last_run_ns.map(|_| j.last_duration_ms as f64 / 1000.0),
                3 => Some(j.last_bytes_added as f64),
                4 => Some(f64::from(j.health.nagios())),
                _ => Some(j.refusals as f64),
            };
            if let Some(x) = value {
                let _ = writeln!(out, "{name}{{{l}}} {x}");
            }
        }
    }
    head(
        out,
        "cairn_job_state",
        "gauge",
        "1 for the state the job is in.",
    );
    for j in &v.jobs {
        let _ = writeln!(
            out,
            "cairn_job_state{{job=\"{}\",state=\"{}\"}} 1",
            label(&j.name),
            label(&j.state)
        );
    }
    type Figure = fn(&crate::state::GitStats) -> f64;
    let git: [(&str, &str, Figure); 6] = [
        (
            "cairn_git_repositories",
            "Repositories a git job mirrors.",
            |g| g.repositories as f64,
        ),
        (
            "cairn_git_fetched_repositories",
            "Mirrors the last run fetched (the rest were unchanged upstream).",
            |g| g.fetched as f64,
        ),
        (
            "cairn_git_fetched_bytes",
            "Bytes of packs the last run fetched.",
            |g| g.bytes_fetched as f64,
        ),
        (
            "cairn_git_rewritten_refs",
            "Refs upstream rewrote, deleted or moved in the last run; their old tips are kept.",
            |g| g.rewritten_refs as f64,
        ),
        (
            "cairn_git_deleted_repositories",
            "Repositories deleted upstream whose mirrors are kept.",
            |g| g.deleted.len() as f64,
        ),
        (
            "cairn_git_rate_limit_waits",
            "Times the last run's listing waited for a rate limit.",
            |g| f64::from(g.limit_waits),
        ),
    ];
    let any_git = v.jobs.iter().any(|j| j.git.is_some());
    for (name, help, f) in git.into_iter().filter(|_| any_git) {
        head(out, name, "gauge", help);
        for j in &v.jobs {
            if let Some(g) = &j.git {
                let _ = writeln!(out, "{name}{{job=\"{}\"}} {}", label(&j.name), f(g));
            }
        }
    }
    head(
        out,
        "cairn_job_runs_total",
        "counter",
        "Runs of the job, by outcome.",
    );
    for j in &v.jobs {
        for (outcome, n) in [("ok", j.ok_runs), ("failed", j.failed_runs)] {
            let _ = writeln!(
                out,
                "cairn_job_runs_total{{job=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(&j.name)
            );
        }
    }
}

/// A running status server.
pub struct Web {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Web {
    /// Stops it.
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the page, `/metrics` and `/status.json` of `config` (shared, so
/// a reload shows at once) on `addr`.
pub fn start(config: Arc<RwLock<Config>>, addr: SocketAddr) -> Result<Web, String> {
    use axum::routing::get;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start the status server: {e}"))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| format!("cannot listen on {addr} for the status page: {e}; set [daemon] listen to another address or \"off\""))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let view = move || {
        let c = config.read().unwrap_or_else(|p| p.into_inner()).clone();
        crate::status::view(&c, cairn_store::now_ns())
    };
    let (v1, v2, v3) = (view.clone(), view.clone(), view);
    let host = cairn_store::hostname();
    let app = axum::Router::new()
        .route(
            "/",
            get(move || async move { axum::response::Html(page(&v1(), &host)) }),
        )
        .route(
            "/metrics",
            get(move || async move {
                let mut out = String::new();
                metrics(&v2(), &mut out);
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    out,
                )
            }),
        )
        .route("/status.json", get(move || async move { axum::Json(v3()) }));
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cairn-status".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(Web {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::GitStats;
    use crate::status::{Health, JobView};

    #[test]
    fn git_jobs_export_their_figures() {
        let job = |name: &str, git: Option<GitStats>| JobView {
            name: name.into(),
            kind: if git.is_some() { "git" } else { "backup" },
            repository: "nas".into(),
            health: Health::Green,
            state: "idle".into(),
            last_success_ns: Some(1_000_000_000),
            last_error: None,
            last_message: String::new(),
            next_run_ns: None,
            waits_for: None,
            last_proven_ns: None,
            progress: None,
            last_snapshot: None,
            last_bytes_added: 0,
            last_duration_ms: 0,
            last_run_ns: None,
            ok_runs: 1,
            failed_runs: 0,
            refusals: 0,
            git,
        };
        let v = View {
            daemon_running: true,
            health: Health::Green,
            jobs: vec![
                job("home", None),
                job(
                    "github",
                    Some(GitStats {
                        repositories: 212,
                        fetched: 3,
                        bytes_fetched: 4096,
                        rewritten_refs: 1,
                        deleted: vec!["blog".into()],
                        failed: 0,
                        limit_waits: 2,
                    }),
                ),
            ],
        };
        let mut out = String::new();
        metrics(&v, &mut out);
        for line in [
            "cairn_git_repositories{job=\"github\"} 212",
            "cairn_git_fetched_repositories{job=\"github\"} 3",
            "cairn_git_fetched_bytes{job=\"github\"} 4096",
            "cairn_git_rewritten_refs{job=\"github\"} 1",
            "cairn_git_deleted_repositories{job=\"github\"} 1",
            "cairn_git_rate_limit_waits{job=\"github\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
        }
        assert!(!out.contains("cairn_git_repositories{job=\"home\"}"));
        let text = crate::status::render(&v);
        assert!(
            text.contains("mirrors: 212 repositories, 3 fetched")
                && text.contains("deleted upstream, mirrors kept: blog"),
            "{text}"
        );
    }
}
