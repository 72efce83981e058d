//! The status page: per repository and group the newest snapshot, its
//! age and size, and the jobs' last outcomes, with anything wrong in
//! red. Plain HTML that refreshes itself, no JavaScript.

use std::fmt::Write;

use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::groups::GroupStat;
use crate::listener::Server;

/// Text escaped for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// "1 problem", "3 problems".
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// "3 h 20 min", "2 d 4 h", "40 s".
pub fn age(ns: i64) -> String {
    let s = (ns / 1_000_000_000).max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

pub use cairn_maint::units::human as size;

use cairn_maint::times::local as when;

/// Problems of a group, for the page (empty: all well).
pub fn problems(
    g: &GroupStat,
    flood: Option<&crate::alerts::Backdated>,
    now_ns: i64,
    stale_after: std::time::Duration,
) -> Vec<String> {
    let mut p = Vec::new();
    let stale = stale_after.as_nanos() as i64;
    if now_ns - g.last_ns > stale {
        p.push(format!("no new snapshot for {}", age(now_ns - g.last_ns)));
    }
    if let Some(f) = flood {
        p.push(format!(
            "{} snapshots from token {} claimed times over a day before they arrived (the oldest \
             {}, the last arrived {} ago): a source back-dating snapshots, a retention flood? \
             Retention goes by arrival time, so older backups stay",
            f.count,
            f.token,
            when(f.oldest_claim_ns),
            age(now_ns - f.last_ns)
        ));
    } else if g.flooded() {
        p.push(format!(
            "{} snapshots claim times over a day before they arrived: a source back-dating \
             snapshots (a retention flood?). Retention goes by arrival time, so older backups stay",
            g.backdated
        ));
    }
    p
}

/// The page.
///
/// `detail`: whether to show the refused requests' log lines (token
/// names, client addresses); only a reader on the box itself sees them.
pub async fn render(server: &std::sync::Arc<Server>, detail: bool) -> Response {
    let s = server.clone();
    let body = tokio::task::spawn_blocking(move || page(&s, detail))
        .await
        .unwrap_or_default();
    let mut r = Response::new(axum::body::Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The page as HTML; see [`render`].
pub fn page(s: &Server, detail: bool) -> String {
    let now = cairn_store::now_ns();
    let mut o = String::new();
    let mut bad_total = 0usize;
    let mut body = String::new();
    for r in &s.config.repositories {
        let Some(storage) = s.repo(&r.name) else {
            continue;
        };
        let st = s
            .metrics
            .groups
            .get(&r.name, &*storage, crate::metrics::FRESH);
        let _ = write!(
            body,
            "<section id=\"repo-{0}\"><h2>Repository {0}</h2><p class=\"meta\">{1} in {2} packs</p>",
            esc(&r.name),
            size(st.pack_bytes),
            st.packs
        );
        if let Some(e) = &st.error {
            bad_total += 1;
            let _ = write!(
                body,
                "<p class=\"bad\">Cannot read the repository: {}</p>",
                esc(e)
            );
        }
        if st.unreadable > 0 {
            bad_total += 1;
            let _ = write!(
                body,
                "<p class=\"bad\">{} snapshot files do not decode: run <code>cairn check</code> on the box</p>",
                st.unreadable
            );
        }
        body.push_str(
            "<table class=\"groups\"><thead><tr><th>Group</th><th>Last snapshot</th><th>Age</th>\
             <th>Snapshots</th><th>Size</th><th>Added</th><th>Status</th></tr></thead><tbody>",
        );
        if st.groups.is_empty() {
            body.push_str("<tr><td colspan=\"7\">No snapshots yet.</td></tr>");
        }
        let floods = s.alerts.floods(&r.name, now);
        for g in &st.groups {
            let p = problems(g, floods.get(&g.group), now, r.stale_after);
            bad_total += usize::from(!p.is_empty());
            let _ = write!(
                body,
                "<tr class=\"{}\" data-group=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} in {} files</td><td>{}</td><td>{}</td></tr>",
                if p.is_empty() { "ok" } else { "bad" },
                esc(&g.group),
                esc(&g.group),
                esc(&when(g.last_ns)),
                age(now - g.last_ns),
                g.snapshots,
                size(g.last_bytes),
                g.last_files,
                size(g.added_bytes),
                if p.is_empty() {
                    "OK".to_string()
                } else {
                    esc(&p.join("; "))
                }
            );
        }
        body.push_str("</tbody></table>");
        let jobs = s.jobs.of(&r.name);
        if !jobs.is_empty() {
            body.push_str(
                "<table class=\"jobs\"><thead><tr><th>Job</th><th>When</th><th>Last run</th>\
                 <th>Took</th><th>Outcome</th></tr></thead><tbody>",
            );
            for (name, schedule, last) in &jobs {
                let (class, when_s, took, outcome) = match last {
                    None => (
                        "",
                        "not yet".to_string(),
                        String::new(),
                        "waiting for its first run".to_string(),
                    ),
                    Some(o) => (
                        if o.ok { "ok" } else { "bad" },
                        format!("{} ({} ago)", when(o.started_ns), age(now - o.started_ns)),
                        format!("{:.1} s", o.took_ms as f64 / 1000.0),
                        format!("{}: {}", if o.ok { "OK" } else { "FAILED" }, o.message),
                    ),
                };
                bad_total += usize::from(class == "bad");
                let _ = write!(
                    body,
                    "<tr class=\"{class}\" data-job=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td></tr>",
                    esc(name),
                    esc(schedule),
                    esc(&when_s),
                    took,
                    esc(&outcome)
                );
            }
            body.push_str("</tbody></table>");
        }
        body.push_str("</section>");
    }
    // Refusals of the last day (log lines start with their UTC time).
    let day_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
    let alarms: Vec<String> = s
        .recent()
        .into_iter()
        .filter(|l| l.contains(" refused ") || l.contains("failed login"))
        .filter(|l| {
            l.split_whitespace()
                .next()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_none_or(|t| t >= day_ago)
        })
        .collect();
    if !alarms.is_empty() {
        bad_total += 1;
        let _ = write!(
            body,
            "<section id=\"refusals\"><h2>Refused requests</h2><p class=\"bad\">{} or failed logins in the last day; the newest:</p><ul class=\"bad\">",
            count(alarms.len(), "refused request")
        );
        if detail {
            for l in alarms.iter().rev().take(10) {
                let _ = write!(body, "<li>{}</li>", esc(l));
            }
        } else {
            body.push_str(
                "<li>the lines (token names, addresses) show on the box itself and in its log</li>",
            );
        }
        body.push_str("</ul></section>");
    }
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"60\">\
         <title>Cairn backup box{}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
         tr.bad td,p.bad,.summary.bad{{color:#b00020;font-weight:bold}}tr.ok td:last-child,.summary.ok{{color:#1b5e20}}\
         .meta{{color:#555}}</style></head><body><h1>Cairn backup box</h1>",
        if bad_total > 0 {
            format!(" ({bad_total} problems)")
        } else {
            String::new()
        }
    );
    let _ = write!(
        o,
        "<p class=\"summary {}\">{}</p>{body}<p class=\"meta\">As of {}. Times are when snapshots arrived here.</p></body></html>",
        if bad_total > 0 { "bad" } else { "ok" },
        if bad_total > 0 {
            format!(
                "{} {} attention.",
                count(bad_total, "problem"),
                if bad_total == 1 { "needs" } else { "need" }
            )
        } else {
            "All well.".to_string()
        },
        esc(&when(now))
    );
    o
}
