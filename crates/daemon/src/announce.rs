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
    }
    fn alert(&self, job: &Job, alert: Alert, message: &str) {
        log_line(&format!("job {}: alert {}: {message}", job.name, alert.name()));
    }
    fn log(&self, line: &str) {
        log_line(line);
    }
}
