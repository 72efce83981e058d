//! The command channel: a program of the user's, for whatever the other
//! channels do not cover (a Matrix bot, an SMS gateway, a LED).
//!
//! It runs without a shell, with the webhook JSON on its standard input
//! and the main fields in its environment, and is killed if it runs too
//! long: a hung script must not hold the alerts behind it forever.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::render::Message;
use super::{Channel, NotifyError};

/// How long the command may run.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How much of its standard error is kept to quote when it fails.
const STDERR_BYTES: usize = 4096;

/// Checks that there is a program to run.
pub(super) fn validate(channel: &Channel, argv: &[String]) -> Result<(), NotifyError> {
    if argv.first().is_none_or(|p| p.is_empty()) {
        return Err(NotifyError::Config {
            channel: channel.to_string(),
            reason: "no program: give command = [\"/path/to/program\", \"arg\", ...]".into(),
        });
    }
    Ok(())
}

/// Runs the command and waits for it, up to [`TIMEOUT`].
pub(super) fn run(
    channel: &Channel,
    argv: &[String],
    message: Message<'_>,
) -> Result<(), NotifyError> {
    run_with_timeout(channel, argv, message, TIMEOUT)
}

/// [`run`] with the time limit given.
fn run_with_timeout(
    channel: &Channel,
    argv: &[String],
    message: Message<'_>,
    timeout: Duration,
) -> Result<(), NotifyError> {
    let fail = |reason: String| NotifyError::Command {
        channel: channel.to_string(),
        reason,
    };
    // An environment variable cannot hold a NUL byte.
    let env = |s: &str| s.replace('\0', "");
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("CAIRN_JOB", env(message.job().unwrap_or("")))
        .env("CAIRN_EVENT", message.event_name())
        .env("CAIRN_MESSAGE", env(&message.text()))
        .env("CAIRN_HOST", env(message.host()))
        .env("CAIRN_TIME", message.time())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;

    // Stdin and stderr on their own threads: a command that does not read
    // its input, or writes much, must not block us before the time limit.
    if let Some(mut stdin) = child.stdin.take() {
        let json = message.json();
        std::thread::spawn(move || {
            // A command that exits without reading gets EPIPE here; its
            // exit status says whether that was a failure.
            let _ = stdin.write_all(json.as_bytes());
        });
    }
    let (tx, stderr_rx) = mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = STDERR_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = tx.send(kept);
        });
    }

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "still running after {} s; it was killed",
                    timeout.as_secs_f32()
                )));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(fail(format!("cannot wait for it: {e}"))),
        }
    };
    if status.success() {
        return Ok(());
    }
    // A background process it started may hold stderr open: do not wait
    // for the end of it long.
    let stderr = stderr_rx
        .recv_timeout(Duration::from_millis(500))
        .unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    let mut reason = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("ended by a signal ({status})"),
    };
    if let Some(line) = last {
        let line: String = line.trim().chars().take(300).collect();
        reason.push_str(&format!(": {line}"));
    }
    Err(fail(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Event, EventKind};

    #[test]
    fn a_command_that_hangs_is_killed() {
        let argv: Vec<String> = ["sh", "-c", "exec sleep 10"].map(String::from).to_vec();
        let channel = Channel::Command { argv: argv.clone() };
        let event = Event {
            job: "home".into(),
            kind: EventKind::Failed,
            message: "m".into(),
            time_ns: 0,
            host: "nas".into(),
        };
        let t0 = Instant::now();
        let e = run_with_timeout(
            &channel,
            &argv,
            Message::Event(&event),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(e.to_string().starts_with("command sh:"), "{e}");
    }
}
