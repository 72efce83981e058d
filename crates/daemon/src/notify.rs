//! How the daemon tells people that a job went bad or came back: webhooks,
//! ntfy, healthchecks.io-style pings, email and a local command.
//!
//! The scheduler decides *when* to alert (one alert when a job goes bad,
//! one when it recovers); this module decides *how*, and keeps a flapping
//! job from flooding anyone: per channel, at most a number of alerts per
//! window, the rest folded into one summary. Pings to healthchecks are
//! never limited, since they are the dead-man's switch that notices when
//! the daemon itself is gone.
//!
//! Delivery runs on one background thread per channel ([`Notifier`]), so
//! neither the scheduler nor the other channels wait for a slow or dead
//! receiver. A failed delivery is retried a few times, then logged as
//! lost: an alert path that retried for hours would hold every later
//! alert behind it.
//!
//! Errors name the channel and its receiver but never a secret: webhook,
//! ntfy and healthchecks URLs carry theirs in the path, so only their
//! scheme, host and port are shown. The messages and the webhook JSON are
//! documented, with samples, in `docs/notifications.md`.

mod command;
mod email;
mod error;
mod http;
mod limit;
mod notifier;
mod render;
#[cfg(test)]
mod tests;

use std::fmt;

pub use error::NotifyError;
pub use limit::RateLimit;
pub use notifier::{Log, Notifier, Options, Retry, Route};

/// What happened to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A run began (a ping for healthchecks channels only).
    Started,
    /// A run ended well (a ping for healthchecks channels only).
    Succeeded,
    /// A run ended with an error.
    Failed,
    /// A run was refused before it began (say, its source is missing).
    Refused,
    /// A job has not succeeded for longer than it should have.
    Overdue,
    /// A job that was failing, refused or overdue succeeded again.
    Recovered,
    /// Upstream dropped history a git job kept: a force-push, a deleted
    /// branch or tag, a moved tag, a deleted repository. Sent once per
    /// change, whatever the run's outcome.
    Upstream,
}

impl EventKind {
    /// The word used in messages, the webhook JSON and `CAIRN_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Refused => "refused",
            EventKind::Overdue => "overdue",
            EventKind::Recovered => "recovered",
            EventKind::Upstream => "upstream",
        }
    }

    /// Whether it goes to every channel, not only as a healthchecks ping.
    pub fn is_alert(self) -> bool {
        !matches!(self, EventKind::Started | EventKind::Succeeded)
    }

    /// Whether something is wrong: the urgent alerts (ntfy priority high,
    /// healthchecks `/fail`).
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            EventKind::Failed | EventKind::Refused | EventKind::Overdue
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to a job, as the scheduler reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    /// The job's name.
    pub job: String,
    /// What happened.
    pub kind: EventKind,
    /// One or more lines of text for people.
    pub message: String,
    /// When, in nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The daemon's host name, so alerts from several machines can be told
    /// apart.
    pub host: String,
}

/// How an email channel protects the SMTP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmailTls {
    /// STARTTLS, required: a server that does not offer it is an error,
    /// never a silent fall back to plain text (usually port 587).
    #[default]
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// Plain text, password and all: refused unless the server is a
    /// loopback address, for a local relay.
    None,
}

/// Where and how an event is delivered.
///
/// `Debug` leaves out the ntfy token and the SMTP password, and
/// `Display` (used in logs and errors) also leaves out URL paths.
#[derive(Clone)]
pub enum Channel {
    /// POST of the JSON documented in `docs/notifications.md` to `url`:
    /// `{"version":1,"host":..,"job":..,"event":"failed","message":..,"time":"2025-01-02T03:04:05Z"}`
    /// (a held-back summary has `"event":"held_back"`, `"job":null` and a
    /// `held_back` list), with `headers` added to the request.
    Webhook {
        /// Where to POST.
        url: String,
        /// Extra headers, such as an API key.
        headers: Vec<(String, String)>,
    },
    /// ntfy: POST of the message as the body to the topic URL, with the
    /// headers `Title`, `Priority` (high when something is wrong, default
    /// for a recovery) and `Tags`.
    Ntfy {
        /// The topic URL, such as `https://ntfy.sh/my-backups`.
        url: String,
        /// An access token, sent as `Authorization: Bearer`.
        token: Option<String>,
    },
    /// healthchecks.io-style pings: `url/start` when a run starts, `url`
    /// on success or recovery, `url/fail` when something is wrong; the
    /// body is the message.
    Healthchecks {
        /// The check's ping URL.
        url: String,
    },
    /// Email over SMTP.
    Email {
        /// The SMTP server's host name or address.
        server: String,
        /// Its port: 587 for STARTTLS, 465 for TLS, 25 for a local relay.
        port: u16,
        /// How the connection is protected.
        tls: EmailTls,
        /// The login, if the server wants one.
        username: Option<String>,
        /// The password for `username`.
        password: Option<String>,
        /// The sender, `addr@example.org` or `Name <addr@example.org>`.
        from: String,
        /// The recipients, in the same forms.
        to: Vec<String>,
    },
    /// A command run with the event as JSON on its standard input and
    /// `CAIRN_JOB`, `CAIRN_EVENT`, `CAIRN_MESSAGE`, `CAIRN_HOST` and
    /// `CAIRN_TIME` in its environment; a non-zero exit is a failed
    /// delivery.
    Command {
        /// The program and its arguments (no shell).
        argv: Vec<String>,
    },
}

impl Channel {
    /// The kind's name, as the config file spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Ntfy { .. } => "ntfy",
            Channel::Healthchecks { .. } => "healthchecks",
            Channel::Email { .. } => "email",
            Channel::Command { .. } => "command",
        }
    }

    /// Checks what can be checked without sending anything (URLs,
    /// addresses, plain SMTP only to loopback), so a config error shows at
    /// start rather than at the first alert.
    pub fn validate(&self) -> Result<(), NotifyError> {
        match self {
            Channel::Webhook { url, .. }
            | Channel::Ntfy { url, .. }
            | Channel::Healthchecks { url } => http::validate(self, url),
            Channel::Email { .. } => email::validate(self),
            Channel::Command { argv } => command::validate(self, argv),
        }
    }

    /// Whether alerts to it count against the rate limit: pings are the
    /// dead-man's switch and must all go out.
    fn is_limited(&self) -> bool {
        !matches!(self, Channel::Healthchecks { .. })
    }

    /// Whether an event of this kind goes to it at all.
    fn takes(&self, kind: EventKind) -> bool {
        match self {
            // A ping says whether the job runs; upstream news is not that.
            Channel::Healthchecks { .. } => kind != EventKind::Upstream,
            _ => kind.is_alert(),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Webhook { url, .. }
            | Channel::Ntfy { url, .. }
            | Channel::Healthchecks { url } => {
                write!(f, "{} {}", self.kind(), http::redact(url))
            }
            Channel::Email { server, port, .. } => write!(f, "email via {server}:{port}"),
            Channel::Command { argv } => match argv.first() {
                Some(program) => write!(f, "command {program}"),
                None => f.write_str("command (empty)"),
            },
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug output ends up in logs; secrets must not.
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        match self {
            Channel::Webhook { url, headers } => f
                .debug_struct("Webhook")
                .field("url", &http::redact(url))
                .field(
                    "headers",
                    &headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                )
                .finish(),
            Channel::Ntfy { url, token } => f
                .debug_struct("Ntfy")
                .field("url", &http::redact(url))
                .field("token", &hidden(token))
                .finish(),
            Channel::Healthchecks { url } => f
                .debug_struct("Healthchecks")
                .field("url", &http::redact(url))
                .finish(),
            Channel::Email {
                server,
                port,
                tls,
                username,
                password,
                from,
                to,
            } => f
                .debug_struct("Email")
                .field("server", server)
                .field("port", port)
                .field("tls", tls)
                .field("username", username)
                .field("password", &hidden(password))
                .field("from", from)
                .field("to", to)
                .finish(),
            Channel::Command { argv } => f.debug_struct("Command").field("argv", argv).finish(),
        }
    }
}

/// Delivers one event on one channel now, blocking until the receiver
/// has it or has failed, with no retry and no rate limit: what
/// [`Notifier::send`] does for each attempt, and what a
/// `--test-notify`-style command calls directly.
///
/// The event goes out as given, whatever its kind: a `Failed` event sent
/// to a healthchecks channel marks the check down until its next success
/// ping, so a test of such a channel may prefer `Succeeded`.
pub fn deliver(channel: &Channel, event: &Event) -> Result<(), NotifyError> {
    deliver_message(channel, render::Message::Event(event))
}

/// [`deliver`] for an event or a held-back summary.
fn deliver_message(channel: &Channel, message: render::Message<'_>) -> Result<(), NotifyError> {
    channel.validate()?;
    match channel {
        Channel::Webhook { url, headers } => http::webhook(channel, url, headers, message),
        Channel::Ntfy { url, token } => http::ntfy(channel, url, token.as_deref(), message),
        Channel::Healthchecks { url } => http::healthchecks(channel, url, message),
        Channel::Email { .. } => email::send(channel, message),
        Channel::Command { argv } => command::run(channel, argv, message),
    }
}
