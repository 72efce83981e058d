//! The words and the JSON every channel sends, in one place so that the
//! channels agree and `docs/notifications.md` has one thing to describe.

use std::time::Duration;

use super::{Event, EventKind, RateLimit};

/// Held-back alerts listed one by one in a summary; past this only their
/// number is given (memory stays bounded however many pile up).
pub(crate) const MAX_LISTED: usize = 50;

/// What one delivery carries.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Message<'a> {
    /// An event, as the scheduler sent it.
    Event(&'a Event),
    /// The alerts a channel's rate limit held back.
    HeldBack(&'a HeldBack),
}

/// The summary of the alerts a rate limit held back.
#[derive(Clone, Debug)]
pub(crate) struct HeldBack {
    /// The daemon's host name (that of the last held alert).
    pub host: String,
    /// When the summary was made, in ns since the epoch.
    pub time_ns: i64,
    /// The first [`MAX_LISTED`] alerts held back, oldest first.
    pub listed: Vec<Held>,
    /// How many were held back, listed or not.
    pub total: usize,
    /// Whether any of them, listed or not, says something is wrong.
    pub bad: bool,
    /// The limit that held them, for the text.
    pub limit: RateLimit,
}

/// One alert a rate limit held back: only its job and kind are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    /// The job.
    pub job: String,
    /// What happened.
    pub kind: EventKind,
    /// When, in ns since the epoch.
    pub time_ns: i64,
}

/// The webhook's JSON body (version 1) and the command's standard input;
/// `docs/notifications.md` documents it.
#[derive(serde::Serialize)]
struct Body<'a> {
    version: u32,
    host: &'a str,
    job: Option<&'a str>,
    event: &'a str,
    message: &'a str,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    held_back: Option<Vec<HeldJson<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    held_back_total: Option<usize>,
}

/// One entry of `held_back` in [`Body`].
#[derive(serde::Serialize)]
struct HeldJson<'a> {
    job: &'a str,
    event: EventKind,
    time: String,
}

impl Message<'_> {
    /// The job, absent from a summary.
    pub fn job(&self) -> Option<&str> {
        match self {
            Message::Event(e) => Some(&e.job),
            Message::HeldBack(_) => None,
        }
    }

    /// The event's name: the kind, or `held_back` for a summary.
    pub fn event_name(&self) -> &'static str {
        match self {
            Message::Event(e) => e.kind.as_str(),
            Message::HeldBack(_) => "held_back",
        }
    }

    /// The event's kind, absent from a summary.
    pub fn kind(&self) -> Option<EventKind> {
        match self {
            Message::Event(e) => Some(e.kind),
            Message::HeldBack(_) => None,
        }
    }

    /// The daemon's host name.
    pub fn host(&self) -> &str {
        match self {
            Message::Event(e) => &e.host,
            Message::HeldBack(h) => &h.host,
        }
    }

    /// When, as RFC 3339 in UTC.
    pub fn time(&self) -> String {
        rfc3339(match self {
            Message::Event(e) => e.time_ns,
            Message::HeldBack(h) => h.time_ns,
        })
    }

    /// Whether it tells that something is wrong (for a summary: whether
    /// any alert it holds does).
    pub fn is_bad(&self) -> bool {
        match self {
            Message::Event(e) => e.kind.is_bad(),
            Message::HeldBack(h) => h.bad,
        }
    }

    /// One line saying what happened: the ntfy title, the email subject.
    pub fn title(&self) -> String {
        match self {
            Message::Event(e) => format!("{} {} on {}", e.job, e.kind, e.host),
            Message::HeldBack(h) => format!(
                "{} {} held back on {}",
                h.total,
                plural(h.total, "alert", "alerts"),
                h.host
            ),
        }
    }

    /// The text for people: the event's message, or the summary's list.
    pub fn text(&self) -> String {
        match self {
            Message::Event(e) => e.message.clone(),
            Message::HeldBack(h) => {
                let mut s = format!(
                    "{} more {} held back by the rate limit ({}):",
                    h.total,
                    plural(h.total, "alert was", "alerts were"),
                    describe_limit(&h.limit)
                );
                for x in &h.listed {
                    s.push_str(&format!(
                        "\n- {} {} at {}",
                        x.job,
                        x.kind,
                        rfc3339(x.time_ns)
                    ));
                }
                if h.total > h.listed.len() {
                    s.push_str(&format!("\n- and {} more", h.total - h.listed.len()));
                }
                s
            }
        }
    }

    /// The webhook body and the command's standard input.
    pub fn json(&self) -> String {
        let text = self.text();
        let body = Body {
            version: 1,
            host: self.host(),
            job: self.job(),
            event: self.event_name(),
            message: &text,
            time: self.time(),
            held_back: match self {
                Message::Event(_) => None,
                Message::HeldBack(h) => Some(
                    h.listed
                        .iter()
                        .map(|x| HeldJson {
                            job: &x.job,
                            event: x.kind,
                            time: rfc3339(x.time_ns),
                        })
                        .collect(),
                ),
            },
            held_back_total: match self {
                Message::Event(_) => None,
                Message::HeldBack(h) => Some(h.total),
            },
        };
        // A struct of strings and numbers always serializes.
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// The email's body: the text, then the facts a filter or a reader
    /// may want.
    pub fn email_body(&self) -> String {
        let mut s = self.text();
        s.push_str("\n\n");
        if let Some(job) = self.job() {
            s.push_str(&format!("job:   {job}\n"));
        }
        s.push_str(&format!(
            "event: {}\nhost:  {}\ntime:  {}\n",
            self.event_name(),
            self.host(),
            self.time()
        ));
        s
    }
}

/// Nanoseconds since the epoch as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(ns: i64) -> String {
    // Every i64 of nanoseconds is within jiff's range of years.
    jiff::Timestamp::from_second(ns.div_euclid(1_000_000_000))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// "10 per hour", "3 per 5 minutes".
fn describe_limit(limit: &RateLimit) -> String {
    format!("{} per {}", limit.max, describe_window(limit.window))
}

/// A window as people say it.
fn describe_window(d: Duration) -> String {
    let s = d.as_secs();
    let (n, one, many) = if d.subsec_nanos() != 0 || s == 0 {
        (d.as_millis() as u64, "millisecond", "milliseconds")
    } else if s.is_multiple_of(86_400) {
        (s / 86_400, "day", "days")
    } else if s.is_multiple_of(3600) {
        (s / 3600, "hour", "hours")
    } else if s.is_multiple_of(60) {
        (s / 60, "minute", "minutes")
    } else {
        (s, "second", "seconds")
    };
    if n == 1 {
        one.to_string()
    } else {
        format!("{n} {many}")
    }
}

/// The singular or the plural, by count.
fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            job: "home".into(),
            kind,
            message: "backup of /home failed:\nsource /home is not mounted".into(),
            time_ns: 1_735_787_045_123_456_789,
            host: "nas".into(),
        }
    }

    #[test]
    fn webhook_json_has_the_documented_fields() {
        let e = event(EventKind::Failed);
        let v: serde_json::Value = serde_json::from_str(&Message::Event(&e).json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "version": 1,
                "host": "nas",
                "job": "home",
                "event": "failed",
                "message": "backup of /home failed:\nsource /home is not mounted",
                "time": "2025-01-02T03:04:05Z",
            })
        );
    }

    #[test]
    fn summary_lists_job_and_kind_and_counts_the_rest() {
        let h = HeldBack {
            host: "nas".into(),
            time_ns: 0,
            listed: vec![
                Held {
                    job: "home".into(),
                    kind: EventKind::Failed,
                    time_ns: 0,
                },
                Held {
                    job: "photos".into(),
                    kind: EventKind::Recovered,
                    time_ns: 0,
                },
            ],
            total: 12,
            bad: true,
            limit: RateLimit::default(),
        };
        let m = Message::HeldBack(&h);
        assert_eq!(m.title(), "12 alerts held back on nas");
        assert_eq!(
            m.text(),
            "12 more alerts were held back by the rate limit (10 per hour):\n\
             - home failed at 1970-01-01T00:00:00Z\n\
             - photos recovered at 1970-01-01T00:00:00Z\n\
             - and 10 more"
        );
        assert!(m.is_bad());
        let v: serde_json::Value = serde_json::from_str(&m.json()).unwrap();
        assert_eq!(v["event"], "held_back");
        assert_eq!(v["job"], serde_json::Value::Null);
        assert_eq!(v["held_back_total"], 12);
        assert_eq!(v["held_back"][1]["job"], "photos");
        assert_eq!(v["held_back"][1]["event"], "recovered");
    }

    #[test]
    fn windows_read_as_people_say_them() {
        assert_eq!(describe_window(Duration::from_secs(3600)), "hour");
        assert_eq!(describe_window(Duration::from_secs(7200)), "2 hours");
        assert_eq!(describe_window(Duration::from_secs(300)), "5 minutes");
        assert_eq!(describe_window(Duration::from_secs(90)), "90 seconds");
        assert_eq!(
            describe_window(Duration::from_millis(250)),
            "250 milliseconds"
        );
    }
}
