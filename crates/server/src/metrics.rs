//! `GET /metrics`, in Prometheus's text format: requests by role and
//! status, refusals, failed logins, and per repository and group the
//! newest snapshot's time, age and size, and job outcomes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::listener::Server;

/// Counters the request path bumps.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    auth_failures: AtomicU64,
    /// Repository state, read at most every few seconds.
    pub groups: crate::groups::Cache,
}

impl Metrics {
    /// Counts an answered request.
    pub fn request(&self, role: &'static str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((role, status))
            .or_default() += 1;
    }

    /// Counts a refusal.
    pub fn refused(&self, role: &'static str) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(role)
            .or_default() += 1;
    }

    /// Counts a failed login.
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// A label value, escaped as the format wants.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// How fresh repository state must be for the page and the metrics.
pub const FRESH: Duration = Duration::from_secs(5);

/// The metrics page.
pub async fn render(server: &std::sync::Arc<Server>) -> Response {
    let s = server.clone();
    let body = tokio::task::spawn_blocking(move || text(&s))
        .await
        .unwrap_or_default();
    let mut r = Response::new(axum::body::Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn text(s: &Server) -> String {
    let m = &s.metrics;
    let mut out = String::new();
    head(
        &mut out,
        "cairn_requests_total",
        "counter",
        "Requests answered, by token role and HTTP status.",
    );
    for ((role, code), n) in m.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(
            out,
            "cairn_requests_total{{role=\"{role}\",code=\"{code}\"}} {n}"
        );
    }
    head(
        &mut out,
        "cairn_refusals_total",
        "counter",
        "Requests refused by role policy, by role.",
    );
    for (role, n) in m.refusals.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "cairn_refusals_total{{role=\"{role}\"}} {n}");
    }
    head(
        &mut out,
        "cairn_auth_failures_total",
        "counter",
        "Requests with a missing, unknown, revoked or expired token.",
    );
    let _ = writeln!(
        out,
        "cairn_auth_failures_total {}",
        m.auth_failures.load(Ordering::Relaxed)
    );

    let now = cairn_store::now_ns();
    let mut repo_lines = String::new();
    let mut group_lines: BTreeMap<&str, String> = BTreeMap::new();
    for r in &s.config.repositories {
        let Some(storage) = s.repo(&r.name) else {
            continue;
        };
        let st = m.groups.get(&r.name, &*storage, FRESH);
        let repo = label(&r.name);
        let _ = writeln!(
            repo_lines,
            "cairn_repository_pack_bytes{{repo=\"{repo}\"}} {}",
            st.pack_bytes
        );
        let _ = writeln!(
            repo_lines,
            "cairn_repository_packs{{repo=\"{repo}\"}} {}",
            st.packs
        );
        let _ = writeln!(
            repo_lines,
            "cairn_repository_readable{{repo=\"{repo}\"}} {}",
            u8::from(st.error.is_none())
        );
        for g in &st.groups {
            let l = format!("repo=\"{repo}\",group=\"{}\"", label(&g.group));
            let mut put = |metric: &'static str, v: String| {
                let _ = writeln!(
                    group_lines.entry(metric).or_default(),
                    "{metric}{{{l}}} {v}"
                );
            };
            put("cairn_group_snapshots", g.snapshots.to_string());
            put(
                "cairn_group_last_snapshot_timestamp_seconds",
                format!("{:.3}", g.last_ns as f64 / 1e9),
            );
            put(
                "cairn_group_last_snapshot_age_seconds",
                format!("{:.3}", (now - g.last_ns).max(0) as f64 / 1e9),
            );
            put("cairn_group_last_snapshot_bytes", g.last_bytes.to_string());
            put("cairn_group_added_bytes", g.added_bytes.to_string());
            put("cairn_group_backdated_snapshots", g.backdated.to_string());
        }
    }
    head(
        &mut out,
        "cairn_repository_pack_bytes",
        "gauge",
        "Bytes in the repository's packs.",
    );
    head(
        &mut out,
        "cairn_repository_packs",
        "gauge",
        "Packs in the repository.",
    );
    head(
        &mut out,
        "cairn_repository_readable",
        "gauge",
        "1 when the repository's listings could be read.",
    );
    out.push_str(&repo_lines);
    let help = [
        ("cairn_group_snapshots", "Snapshots of the group."),
        (
            "cairn_group_last_snapshot_timestamp_seconds",
            "When the group's newest snapshot arrived (server time).",
        ),
        (
            "cairn_group_last_snapshot_age_seconds",
            "Seconds since the group's newest snapshot arrived.",
        ),
        (
            "cairn_group_last_snapshot_bytes",
            "Sum of file sizes in the group's newest snapshot.",
        ),
        (
            "cairn_group_added_bytes",
            "Bytes the group's snapshots added to the repository.",
        ),
        (
            "cairn_group_backdated_snapshots",
            "Snapshots claiming a time over a day before they arrived.",
        ),
    ];
    for (name, h) in help {
        head(&mut out, name, "gauge", h);
        if let Some(l) = group_lines.get(name) {
            out.push_str(l);
        }
    }
    head(
        &mut out,
        "cairn_group_backdated_received_total",
        "counter",
        "Snapshots that arrived claiming a time over a day before their arrival.",
    );
    for (repo, groups) in s.alerts.all() {
        for (g, b) in groups {
            let _ = writeln!(
                out,
                "cairn_group_backdated_received_total{{repo=\"{}\",group=\"{}\"}} {}",
                label(&repo),
                label(&g),
                b.count
            );
        }
    }
    s.jobs.metrics(&mut out);
    out
}
