//! A real SMTP server for the email tests: Debian's `python3-aiosmtpd`
//! on 127.0.0.1, writing each message it accepts as a JSON file. It
//! accepts the login `cairn` / [`PASSWORD`] and refuses any other.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The password the server accepts for `cairn`.
pub const PASSWORD: &str = "right-password";

/// The Debian package the server comes from, named when it is missing.
const PACKAGE: &str = "python3-aiosmtpd";

const SERVER: &str = r#"
import asyncio, email, email.policy, json, os, socket, sys
try:
    from aiosmtpd.smtp import SMTP, AuthResult
except ImportError as e:
    print("cannot import aiosmtpd: %s" % e, file=sys.stderr)
    sys.exit(3)

out = sys.argv[1]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                       policy=email.policy.default)
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "authenticated": bool(session.authenticated),
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "content_type": msg.get_content_type(),
            "body": msg.get_content(),
        }
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        tmp = os.path.join(out, "tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(out, "%04d.json" % n))
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"cairn" and auth_data.password == b"right-password"
    # handled=False: aiosmtpd itself answers 535 (with True it says nothing).
    return AuthResult(success=ok, handled=False)

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(8)
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
factory = lambda: SMTP(Handler(), authenticator=authenticator, auth_require_tls=False)
loop.run_until_complete(loop.create_server(factory, sock=sock))
print(sock.getsockname()[1], flush=True)
loop.run_forever()
"#;

/// The running server; it is killed when dropped.
pub struct Smtp {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Smtp {
    /// Starts the server, or panics saying what to install: the email
    /// channel must not pass untested because a package is missing.
    pub fn start() -> Smtp {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cairn-notify-smtp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Debian's interpreter, where the package installs the module; a
        // python3 earlier in PATH (pyenv, a venv) would not see it.
        let python = if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SERVER)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| cannot_run(&format!("{python} cannot be started ({e})")));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            cannot_run(&format!(
                "the SMTP server ({python} with aiosmtpd) did not start: {}",
                stderr.trim()
            ));
        };
        Smtp { port, child, dir }
    }

    /// Waits until `n` messages came, and returns them (as the server
    /// parsed them); panics if they do not within `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} messages within {timeout:?}, got {}: {got:#?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails the test, naming what is missing.
fn cannot_run(what: &str) -> ! {
    panic!(
        "this test cannot run here: {what}; it needs Debian's {PACKAGE} \
         (apt-get install -y {PACKAGE}, which .ci/run does)"
    )
}
