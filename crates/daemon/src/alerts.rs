//! When to speak: once when a job goes bad (failed, refused, overdue),
//! once when it recovers, and not in between, so ten failures in a row
//! make one alert and one recovery, not eleven messages.
//!
//! The alert in force is part of the job's state on disk, so a restart
//! neither repeats an alert nor forgets that a recovery is owed.

use crate::state::{JobState, Outcome};

/// An alert about a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    /// A run failed.
    Failed,
    /// A guard refused a run.
    Refused,
    /// No success for longer than the job allows.
    Overdue,
    /// Good again after one of the above.
    Recovered,
}

impl Alert {
    /// Its name in state, messages and webhooks.
    pub fn name(self) -> &'static str {
        match self {
            Alert::Failed => "failed",
            Alert::Refused => "refused",
            Alert::Overdue => "overdue",
            Alert::Recovered => "recovered",
        }
    }
}

/// The alert a finished run calls for, with the state's alert updated.
pub fn after_run(st: &mut JobState, outcome: Outcome) -> Option<Alert> {
    let (now, alert) = match outcome {
        Outcome::Ok => (None, st.alert.is_some().then_some(Alert::Recovered)),
        Outcome::Failed => (Some(Alert::Failed), Some(Alert::Failed)),
        Outcome::Refused => (Some(Alert::Refused), Some(Alert::Refused)),
        Outcome::Interrupted => return None,
    };
    let before = st.alert.clone();
    st.alert = now.map(|a| a.name().to_string());
    match alert {
        Some(Alert::Recovered) => Some(Alert::Recovered),
        Some(a) if before.as_deref() != Some(a.name()) => Some(a),
        _ => None,
    }
}

/// Whether the job is overdue now: no success since `overdue_after`
/// (counted from when the job was first seen, if it never succeeded).
/// Marks the state and returns the alert the first time.
pub fn overdue(
    st: &mut JobState,
    now_ns: i64,
    overdue_after: std::time::Duration,
) -> Option<Alert> {
    let since = st.last_success_ns.unwrap_or(st.created_ns);
    let late = now_ns.saturating_sub(since) > overdue_after.as_nanos() as i64;
    if !late || st.alert.is_some() {
        return None;
    }
    st.alert = Some(Alert::Overdue.name().to_string());
    Some(Alert::Overdue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_make_one_alert_and_one_recovery() {
        let mut st = JobState::default();
        let mut sent = Vec::new();
        for _ in 0..10 {
            sent.extend(after_run(&mut st, Outcome::Failed));
        }
        sent.extend(after_run(&mut st, Outcome::Interrupted));
        sent.extend(after_run(&mut st, Outcome::Ok));
        sent.extend(after_run(&mut st, Outcome::Ok));
        assert_eq!(sent, [Alert::Failed, Alert::Recovered]);
        sent.clear();
        sent.extend(after_run(&mut st, Outcome::Refused));
        sent.extend(after_run(&mut st, Outcome::Refused));
        sent.extend(after_run(&mut st, Outcome::Failed));
        assert_eq!(
            sent,
            [Alert::Refused, Alert::Failed],
            "a new kind of trouble is news"
        );
    }

    #[test]
    fn overdue_alerts_once_and_recovers_on_success() {
        let h = std::time::Duration::from_secs(3600);
        let mut st = JobState {
            created_ns: 0,
            ..JobState::default()
        };
        assert_eq!(overdue(&mut st, 1800 * 1_000_000_000, h), None);
        assert_eq!(
            overdue(&mut st, 7200 * 1_000_000_000, h),
            Some(Alert::Overdue)
        );
        assert_eq!(overdue(&mut st, 9000 * 1_000_000_000, h), None);
        assert_eq!(after_run(&mut st, Outcome::Ok), Some(Alert::Recovered));
    }
}
