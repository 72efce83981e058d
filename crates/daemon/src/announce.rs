//! Where the scheduler tells what happens: the log, and the notification
//! channels once they are configured. A trait, so `cairn run` and the
//! daemon announce the same way and tests can listen in.

use crate::alerts::Alert;
use crate::config::Job;
use crate::run::Report;

/// Hears of runs and alerts.
pub trait Announce: Send + Sync {
    /// A run starts.
    fn started(&self, job: &Job);
    /// A run ended, with the alert it calls for.
    fn finished(&self, job: &Job, report: &Report, alert: Option<Alert>);
    /// An alert raised outside a run (overdue).
    fn alert(&self, job: &Job, alert: Alert, message: &str);
    /// A line for the log.
    fn log(&self, line: &str);
}

/// Announces to standard error only (the journal, under systemd).
pub struct LogOnly;

/// Writes a log line with the local time.
pub fn log_line(line: &str) {
    eprintln!(
        "{} {line}",
        cairn_maint::times::local(cairn_store::now_ns())
    );
}

impl Announce for LogOnly {
    fn started(&self, job: &Job) {
        log_line(&format!("job {}: started", job.name));
    }
    fn finished(&self, job: &Job, report: &Report, alert: Option<Alert>) {
        log_line(&format!(
            "job {}: {}: {}{}",
            job.name,
            format!("{:?}", report.outcome).to_lowercase(),
            report.message,
            alert.map_or(String::new(), |a| format!(" [alert: {}]", a.name()))
        ));
        for n in &report.news {
            log_line(&format!("job {}: upstream: {n}", job.name));
        }
    }
    fn alert(&self, job: &Job, alert: Alert, message: &str) {
        log_line(&format!(
            "job {}: alert {}: {message}",
            job.name,
            alert.name()
        ));
    }
    fn log(&self, line: &str) {
        log_line(line);
    }
}

/// Announces to the log and to the configured channels.
pub struct Notifying {
    notifier: crate::notify::Notifier,
    host: String,
    /// Whether runs are logged too (not in the foreground, which prints
    /// its own summary).
    log_runs: bool,
}

impl Notifying {
    /// The channels of `config`; a secret file that cannot be read is
    /// an error now rather than a lost alert later.
    pub fn new(config: &crate::config::Config) -> Result<Notifying, String> {
        let mut routes = Vec::new();
        for n in &config.notify {
            let channel = channel(n)?;
            channel.validate().map_err(|e| {
                format!(
                    "{}: [[notify]] at line {}: {e}",
                    config.file.display(),
                    n.line
                )
            })?;
            routes.push(crate::notify::Route {
                channel,
                jobs: n.jobs.clone(),
            });
        }
        let options = crate::notify::Options {
            log: std::sync::Arc::new(log_line),
            ..crate::notify::Options::default()
        };
        Ok(Notifying {
            notifier: crate::notify::Notifier::with_options(routes, options),
            host: cairn_store::hostname(),
            log_runs: true,
        })
    }

    /// Stops logging runs (for `cairn run`, which reports them itself).
    pub fn quiet(mut self) -> Notifying {
        self.log_runs = false;
        self
    }

    fn send(&self, job: &Job, kind: crate::notify::EventKind, message: &str) {
        self.notifier.send(crate::notify::Event {
            job: job.name.clone(),
            kind,
            message: message.to_string(),
            time_ns: cairn_store::now_ns(),
            host: self.host.clone(),
        });
    }

    /// Waits for queued notifications to go out (at shutdown).
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        self.notifier.flush(timeout)
    }
}

fn read_secret(path: &std::path::Path, what: &str) -> Result<String, String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

/// A `[[notify]]` entry as a delivery channel.
fn channel(n: &crate::config::Notify) -> Result<crate::notify::Channel, String> {
    use crate::config::NotifyKind;
    use crate::notify::{Channel, EmailTls};
    let url = || n.url.clone().unwrap_or_default();
    Ok(match n.kind {
        NotifyKind::Webhook => Channel::Webhook {
            url: url(),
            headers: n.headers.clone(),
        },
        NotifyKind::Ntfy => Channel::Ntfy {
            url: url(),
            token: n
                .token_file
                .as_deref()
                .map(|f| read_secret(f, "ntfy token file"))
                .transpose()?,
        },
        NotifyKind::Healthchecks => Channel::Healthchecks { url: url() },
        NotifyKind::Email => {
            let smtp = n.smtp.clone().unwrap_or_default();
            let (server, port) = smtp
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
                .ok_or_else(|| format!("smtp = {smtp:?} is not HOST:PORT"))?;
            Channel::Email {
                server,
                port,
                tls: match n.tls.as_deref() {
                    Some("tls") => EmailTls::Tls,
                    Some("none") => EmailTls::None,
                    _ => EmailTls::StartTls,
                },
                username: n.username.clone(),
                password: n
                    .password_file
                    .as_deref()
                    .map(|f| read_secret(f, "SMTP password file"))
                    .transpose()?,
                from: n.from.clone().unwrap_or_default(),
                to: n.to.clone(),
            }
        }
        NotifyKind::Command => Channel::Command {
            argv: n.command.clone(),
        },
    })
}

impl Announce for Notifying {
    fn started(&self, job: &Job) {
        if self.log_runs {
            LogOnly.started(job);
        }
        self.send(job, crate::notify::EventKind::Started, "started");
    }
    fn finished(&self, job: &Job, report: &Report, alert: Option<Alert>) {
        use crate::notify::EventKind;
        if self.log_runs {
            LogOnly.finished(job, report, alert);
        }
        if report.outcome == crate::state::Outcome::Ok {
            self.send(job, EventKind::Succeeded, &report.message);
        }
        let kind = match alert {
            Some(Alert::Failed) => Some(EventKind::Failed),
            Some(Alert::Refused) => Some(EventKind::Refused),
            Some(Alert::Overdue) => Some(EventKind::Overdue),
            Some(Alert::Recovered) => Some(EventKind::Recovered),
            None => None,
        };
        if let Some(kind) = kind {
            self.send(job, kind, &report.message);
        }
        if !report.news.is_empty() {
            self.send(job, EventKind::Upstream, &report.news.join("\n"));
        }
    }
    fn alert(&self, job: &Job, alert: Alert, message: &str) {
        LogOnly.alert(job, alert, message);
        let kind = match alert {
            Alert::Failed => crate::notify::EventKind::Failed,
            Alert::Refused => crate::notify::EventKind::Refused,
            Alert::Overdue => crate::notify::EventKind::Overdue,
            Alert::Recovered => crate::notify::EventKind::Recovered,
        };
        self.send(job, kind, message);
    }
    fn log(&self, line: &str) {
        log_line(line);
    }
}
