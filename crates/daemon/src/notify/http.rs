//! The HTTP channels: webhook, ntfy and healthchecks pings, one POST each.
//!
//! Redirects are not followed: a POST that is redirected becomes a GET
//! that loses the body, so a 3xx is reported for the config to be fixed.
//! Webhook, ntfy and healthchecks URLs carry their secret in the path
//! (the Slack or Discord token, the ntfy topic, the check's UUID), so
//! errors show scheme, host and port only.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;

use super::error::scrub;
use super::render::Message;
use super::{Channel, EventKind, NotifyError};

/// The longest a request may take, connection and answer included; the
/// retries of the background thread cover a receiver that is slow once.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The longest to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error answer's body to read and quote.
const DETAIL_BYTES: u64 = 512;

/// One client for every channel: it holds the TLS roots, parsed once.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    })
}

/// Checks that `url` is an http(s) URL with a host.
pub(super) fn validate(channel: &Channel, url: &str) -> Result<(), NotifyError> {
    let bad = |reason: &str| NotifyError::Config {
        channel: channel.to_string(),
        reason: reason.to_string(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("the url must start with https:// (or http://)"));
    };
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(bad("the url must start with https:// (or http://)"));
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .is_empty()
    {
        return Err(bad("the url has no host"));
    }
    if url.parse::<ureq::http::Uri>().is_err() {
        return Err(bad(
            "the url is not valid (characters such as spaces must be percent-encoded)",
        ));
    }
    Ok(())
}

/// `url` without what may be secret: user and password, path, query.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a url)".to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match &rest[end..] {
        tail @ ("" | "/") => format!("{scheme}://{host}{tail}"),
        _ => format!("{scheme}://{host}/…"),
    }
}

/// The parts of `url` that [`redact`] leaves out, to scrub from error
/// texts that quote them.
fn url_secrets(url: &str) -> Vec<&str> {
    let mut out = vec![url];
    if let Some((_, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some((user, _)) = rest[..end].rsplit_once('@') {
            out.push(user);
        }
        out.push(&rest[end..]);
    }
    out
}

/// POSTs the webhook JSON.
pub(super) fn webhook(
    channel: &Channel,
    url: &str,
    headers: &[(String, String)],
    message: Message<'_>,
) -> Result<(), NotifyError> {
    let mut all = vec![("Content-Type".to_string(), "application/json".to_string())];
    all.extend(headers.iter().cloned());
    // A header's value may be an API key.
    let values: Vec<&str> = headers.iter().map(|(_, v)| v.as_str()).collect();
    post(channel, url, &all, message.json(), &values)
}

/// POSTs the text to an ntfy topic, with its title, priority and tags.
pub(super) fn ntfy(
    channel: &Channel,
    url: &str,
    token: Option<&str>,
    message: Message<'_>,
) -> Result<(), NotifyError> {
    let priority = match message.kind() {
        _ if message.is_bad() => "high",
        Some(EventKind::Started | EventKind::Succeeded) => "low",
        _ => "default",
    };
    // Tags that name an emoji show as one before the title.
    let emoji = match message.kind() {
        Some(EventKind::Failed) => "x",
        Some(EventKind::Refused) => "no_entry",
        Some(EventKind::Overdue) => "hourglass",
        Some(EventKind::Recovered) => "white_check_mark",
        Some(EventKind::Started) => "arrow_forward",
        Some(EventKind::Succeeded) => "heavy_check_mark",
        Some(EventKind::Upstream) => "rewind",
        None => "warning",
    };
    let mut headers = vec![
        (
            "Content-Type".to_string(),
            "text/plain; charset=utf-8".to_string(),
        ),
        ("Title".to_string(), header_text(&message.title())),
        ("Priority".to_string(), priority.to_string()),
        ("Tags".to_string(), format!("{emoji},cairn")),
    ];
    if let Some(t) = token {
        headers.push(("Authorization".to_string(), format!("Bearer {t}")));
    }
    post(channel, url, &headers, message.text(), token.as_slice())
}

/// Pings `url/start`, `url` or `url/fail`, with the text as the body
/// (healthchecks shows it in the check's log).
pub(super) fn healthchecks(
    channel: &Channel,
    url: &str,
    message: Message<'_>,
) -> Result<(), NotifyError> {
    let suffix = match message.kind() {
        Some(EventKind::Started) => "/start",
        _ if message.is_bad() => "/fail",
        _ => "",
    };
    let headers = [(
        "Content-Type".to_string(),
        "text/plain; charset=utf-8".to_string(),
    )];
    post(
        channel,
        &ping_url(url, suffix),
        &headers,
        message.text(),
        &[url],
    )
}

/// `url` with `suffix` added to its path, before any query.
fn ping_url(url: &str, suffix: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let mut out = path.trim_end_matches('/').to_string();
    out.push_str(suffix);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A header value as ntfy reads it: ASCII as is, anything else as an
/// RFC 2047 encoded word.
fn header_text(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        s.to_string()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

/// POSTs `body` and turns anything but a 2xx into an error naming the
/// channel; `secrets` (and the URL's path) are scrubbed from its text.
fn post(
    channel: &Channel,
    url: &str,
    headers: &[(String, String)],
    body: String,
    secrets: &[&str],
) -> Result<(), NotifyError> {
    let mut hidden = url_secrets(url);
    hidden.extend_from_slice(secrets);
    let mut request = agent().post(url);
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let mut response = match request.send(body) {
        Ok(r) => r,
        Err(e) => return Err(transport_error(channel, &e, &hidden)),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let code = status.as_u16();
    let mut detail = Vec::new();
    // The body only adds detail; a receiver that breaks off mid-answer
    // still gave its status.
    let _ = response
        .body_mut()
        .as_reader()
        .take(DETAIL_BYTES)
        .read_to_end(&mut detail);
    let detail = String::from_utf8_lossy(&detail)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let detail: String = detail.chars().take(200).collect();
    let hint = match code {
        300..=399 => "; redirects are not followed: put the final URL in the config",
        401 | 403 => "; check the token or headers",
        404 => "; check the URL",
        _ => "",
    };
    let mut reason = format!(
        "the receiver answered {code} {}",
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string();
    if !detail.is_empty() {
        reason.push_str(&format!(" ({detail})"));
    }
    reason.push_str(hint);
    Err(NotifyError::Rejected {
        channel: channel.to_string(),
        reason: scrub(&reason, &hidden),
        permanent: (400..500).contains(&code) && code != 408 && code != 429,
    })
}

/// An error before any answer, in words.
fn transport_error(channel: &Channel, e: &ureq::Error, hidden: &[&str]) -> NotifyError {
    let channel = channel.to_string();
    let reason = match e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::TimedOut => "timed out".to_string(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(t) => format!("no answer in time ({t})"),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::Http(_) | ureq::Error::BadUri(_) => {
            return NotifyError::Config {
                channel,
                reason: scrub(
                    &format!("the request cannot be made (check the url and headers): {e}"),
                    hidden,
                ),
            };
        }
        ureq::Error::Protocol(_) => {
            return NotifyError::Rejected {
                channel,
                reason: scrub(&format!("the receiver does not speak HTTP: {e}"), hidden),
                permanent: false,
            };
        }
        other => other.to_string(),
    };
    NotifyError::Unreachable {
        channel,
        reason: scrub(&reason, hidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_keeps_scheme_host_and_port_only() {
        assert_eq!(
            redact("https://hooks.example.org/services/T0/B0/s3cr3t"),
            "https://hooks.example.org/…"
        );
        assert_eq!(
            redact("http://user:pw@127.0.0.1:8080/x?k=v"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(
            redact("https://ntfy.example.org/"),
            "https://ntfy.example.org/"
        );
        assert_eq!(
            redact("https://ntfy.example.org"),
            "https://ntfy.example.org"
        );
        assert_eq!(redact("ntfy.example.org/x"), "(not a url)");
    }

    #[test]
    fn ping_urls_keep_the_query() {
        assert_eq!(ping_url("https://hc/u/", "/fail"), "https://hc/u/fail");
        assert_eq!(ping_url("https://hc/u", ""), "https://hc/u");
        assert_eq!(
            ping_url("https://hc/u?create=1", "/start"),
            "https://hc/u/start?create=1"
        );
    }

    #[test]
    fn titles_that_are_not_ascii_are_encoded_words() {
        assert_eq!(header_text("home failed"), "home failed");
        assert_eq!(header_text("ü"), "=?UTF-8?B?w7w=?=");
    }

    #[test]
    fn urls_are_checked_before_sending() {
        let check = |url: &str| {
            validate(
                &Channel::Healthchecks {
                    url: url.to_string(),
                },
                url,
            )
        };
        assert!(check("https://hc-ping.com/abc").is_ok());
        for bad in [
            "hc-ping.com/abc",
            "ftp://x/y",
            "https:///abc",
            "https://a b/c",
        ] {
            let e = check(bad).unwrap_err();
            assert!(matches!(e, NotifyError::Config { .. }), "{bad}: {e}");
            assert!(!e.is_retryable());
        }
    }
}
