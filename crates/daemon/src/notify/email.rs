//! The email channel: one message per alert over SMTP, with lettre's
//! blocking transport (the background thread may block; nothing else
//! waits for it).
//!
//! STARTTLS is required, not opportunistic: a server or a middlebox that
//! strips the offer gets an error, never the password in clear. Plain
//! SMTP is only for a relay on the same machine.

use std::net::IpAddr;
use std::time::Duration;

use lettre::Transport;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::SmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;

use super::error::scrub;
use super::render::Message;
use super::{Channel, EmailTls, NotifyError};

/// The longest any one SMTP step may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Checks the addresses, the login and where plain text may go.
pub(super) fn validate(channel: &Channel) -> Result<(), NotifyError> {
    let Channel::Email {
        server,
        port,
        tls,
        username,
        password,
        from,
        to,
    } = channel
    else {
        return Ok(());
    };
    let bad = |reason: String| NotifyError::Config {
        channel: channel.to_string(),
        reason,
    };
    if server.is_empty() {
        return Err(bad("no smtp server is given".into()));
    }
    if *port == 0 {
        return Err(bad("port 0 is not a port: give smtp = \"host:587\"".into()));
    }
    if *tls == EmailTls::None && !is_loopback(server) {
        return Err(bad(
            "tls = \"none\" would send the message and any password in clear; it is \
             only allowed to a server on this machine (localhost, 127.0.0.1, ::1): \
             use tls = \"starttls\" (port 587) or \"tls\" (port 465)"
                .into(),
        ));
    }
    if username.is_some() != password.is_some() {
        return Err(bad(
            "username and password_file go together: give both or neither".into(),
        ));
    }
    mailbox(channel, "from", from)?;
    if to.is_empty() {
        return Err(bad("no recipient: give to = [\"you@example.org\"]".into()));
    }
    for t in to {
        mailbox(channel, "to", t)?;
    }
    Ok(())
}

/// Sends the message to every recipient.
pub(super) fn send(channel: &Channel, message: Message<'_>) -> Result<(), NotifyError> {
    let Channel::Email {
        server,
        port,
        tls,
        username,
        password,
        from,
        to,
    } = channel
    else {
        return Ok(());
    };
    let mut email = lettre::Message::builder()
        .from(mailbox(channel, "from", from)?)
        .subject(format!("[cairn] {}", message.title()))
        .header(ContentType::TEXT_PLAIN);
    for t in to {
        email = email.to(mailbox(channel, "to", t)?);
    }
    let email = email
        .body(message.email_body())
        .map_err(|e| NotifyError::Config {
            channel: channel.to_string(),
            reason: format!("the message cannot be built: {e}"),
        })?;

    let host = server.trim_start_matches('[').trim_end_matches(']');
    let builder = match tls {
        EmailTls::StartTls => SmtpTransport::starttls_relay(host),
        EmailTls::Tls => SmtpTransport::relay(host),
        EmailTls::None => Ok(SmtpTransport::builder_dangerous(host)),
    };
    let mut builder = builder
        .map_err(|e| NotifyError::Config {
            channel: channel.to_string(),
            reason: format!("the server's name cannot be used for TLS: {e}"),
        })?
        .port(*port)
        .timeout(Some(TIMEOUT))
        .hello_name(hello_name(message.host()));
    if let (Some(u), Some(p)) = (username, password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
    }
    let secrets: Vec<&str> = password.iter().map(String::as_str).collect();
    match builder.build().send(&email) {
        Ok(_) => Ok(()),
        Err(e) => Err(smtp_error(channel, *tls, username.as_deref(), &e, &secrets)),
    }
}

/// Whether plain SMTP to `server` stays on this machine. Names other than
/// `localhost` are not resolved: what they point to can change.
fn is_loopback(server: &str) -> bool {
    let s = server.trim_start_matches('[').trim_end_matches(']');
    s.eq_ignore_ascii_case("localhost") || s.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The name to greet the server with: the host's, if it is one a server
/// accepts.
fn hello_name(host: &str) -> ClientId {
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        ClientId::Domain(host.to_string())
    } else {
        ClientId::default()
    }
}

/// Parses an address, saying which key holds a bad one.
fn mailbox(channel: &Channel, key: &str, address: &str) -> Result<Mailbox, NotifyError> {
    address.parse().map_err(|e| NotifyError::Config {
        channel: channel.to_string(),
        reason: format!("{key} = {address:?} is not an email address ({e})"),
    })
}

/// lettre's error in words, sorted into what a retry may fix.
fn smtp_error(
    channel: &Channel,
    tls: EmailTls,
    username: Option<&str>,
    e: &lettre::transport::smtp::Error,
    secrets: &[&str],
) -> NotifyError {
    let channel = channel.to_string();
    let text = scrub(&e.to_string(), secrets);
    if let Some(io) = io_cause(e) {
        let reason = match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                "timed out".to_string()
            }
            // rustls reports a peer that does not speak TLS this way.
            std::io::ErrorKind::InvalidData if tls != EmailTls::None => format!(
                "TLS failed ({}); does the server speak TLS on this port? tls = \"tls\" is \
                 for port 465, tls = \"starttls\" for 587",
                scrub(&io.to_string(), secrets)
            ),
            _ => text,
        };
        return NotifyError::Unreachable { channel, reason };
    }
    if e.is_client() && text.contains("STARTTLS") {
        return NotifyError::Rejected {
            channel,
            reason: "the server does not offer STARTTLS, which tls = \"starttls\" requires \
                     (nothing was sent): for port 465 use tls = \"tls\""
                .into(),
            permanent: true,
        };
    }
    if e.is_timeout() {
        return NotifyError::Unreachable {
            channel,
            reason: "timed out".into(),
        };
    }
    if e.is_tls() {
        return NotifyError::Unreachable {
            channel,
            reason: format!("TLS failed: {text}"),
        };
    }
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    let hint = match (code.as_str(), username) {
        ("535" | "534" | "530", Some(u)) => {
            format!("; the server refused the login as {u:?}: check username and password_file")
        }
        ("530", None) => "; the server wants a login: give username and password_file".into(),
        _ => String::new(),
    };
    // A refusal on our side (say, no login method in common) is not the
    // server's answer.
    let reason = match text.strip_prefix("internal client error: ") {
        Some(t) => format!("{t}{hint}"),
        None => format!("the server answered: {text}{hint}"),
    };
    NotifyError::Rejected {
        channel,
        reason,
        // A 5xx or a client-side refusal (no STARTTLS offered, no login
        // method in common) will be the same next time.
        permanent: e.is_permanent() || e.is_client(),
    }
}

/// The I/O error under lettre's, if the failure was the network's.
fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur = e.source();
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(server: &str, tls: EmailTls) -> Channel {
        Channel::Email {
            server: server.into(),
            port: 25,
            tls,
            username: None,
            password: None,
            from: "Cairn <cairn@nas.example.org>".into(),
            to: vec!["admin@example.org".into()],
        }
    }

    #[test]
    fn plain_smtp_only_to_loopback() {
        for ok in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.53"] {
            assert!(email(ok, EmailTls::None).validate().is_ok(), "{ok}");
        }
        for remote in ["mail.example.org", "192.0.2.1", "localhost.example.org"] {
            let e = email(remote, EmailTls::None).validate().unwrap_err();
            assert!(matches!(e, NotifyError::Config { .. }));
            let text = e.to_string();
            assert!(text.contains(remote), "{text}");
            assert!(text.contains("tls = \"none\""), "{text}");
        }
        assert!(
            email("mail.example.org", EmailTls::StartTls)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn bad_addresses_name_their_key() {
        let mut c = email("127.0.0.1", EmailTls::None);
        if let Channel::Email { to, .. } = &mut c {
            to.push("not an address".into());
        }
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("to = \"not an address\""), "{e}");
    }
}
