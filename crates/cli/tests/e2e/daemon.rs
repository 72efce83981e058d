//! `cairn daemon`, `run`, `status` and `approve` against real
//! directories, mounts, signals, an HTTP receiver and an SMTP server.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{Env, cannot_run, is_root, json, s};

/// A config file in the test directory, with the state beside it.
fn config(env: &Env, body: &str) -> PathBuf {
    let file = env.path("cairn.toml");
    let text = format!(
        "[daemon]\nstate = \"{}\"\nlisten = \"off\"\n\n{body}",
        env.path("state").display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

fn cairn(env: &Env, args: &[&str]) -> crate::util::Run {
    let mut c = env.cmd();
    c.args(args);
    crate::util::run(c)
}

fn snapshot_count(env: &Env, repo: &Path) -> usize {
    let out = cairn(env, &["--repo", s(repo), "--json", "snapshots"]).expect(0);
    json(&out.stdout).as_array().map_or(0, |a| a.len())
}

/// Job state as the daemon wrote it.
fn job_state(env: &Env, job: &str) -> serde_json::Value {
    let p = env.path(&format!("state/jobs/{job}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            panic!("waited {limit:?} for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events a `command` notification channel appended to `file`, one
/// JSON document per line.
fn events_sent(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| json(l)["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "cairn-test", s(at)])
            .status()
            .is_ok_and(|st| st.success());
        if !ok {
            cannot_run("mount -t tmpfs failed (needs root and mount permission)");
        }
        Tmpfs(at.to_path_buf())
    }
    fn unmount(&self) {
        let st = Command::new("umount").arg(&self.0).status().unwrap();
        assert!(st.success(), "umount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// The daemon config the README shows must pass `--check-config` as
/// written, and mistakes are named with line and column.
#[test]
fn the_readme_config_checks_and_mistakes_are_placed() {
    let env = Env::new();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let at = readme
        .find("## Backups that run themselves")
        .expect("README section \"Backups that run themselves\"");
    let block = &readme[at..];
    let start = block
        .find("```toml\n")
        .expect("a toml block in that section")
        + 8;
    let end = start + block[start..].find("```").unwrap();
    let file = env.path("readme.toml");
    std::fs::write(&file, &block[start..end]).unwrap();
    let out = cairn(&env, &["daemon", "--check-config", "--config", s(&file)]).expect(0);
    assert!(
        out.stdout
            .contains("ok: 2 repositories, 5 jobs, 1 notification channels"),
        "{}",
        out.stdout
    );

    let bad = env.path("bad.toml");
    std::fs::write(
        &bad,
        "[repository.r]\npath = \"/r\"\n\n[[job]]\nname = \"home\"\nkind = \"backup\"\nrepository = \"r\"\npaths = [\"/home\"]\nevery = \"1 fortnight\"\nmax_vanshed = \"10%\"\n\n[[job]]\nname = \"x\"\nkind = \"backup\"\nrepository = \"r\"\npaths = [\"/x\"]\nevery = \"1h\"\nwhen = \"sometimes\"\n",
    )
    .unwrap();
    let out = cairn(&env, &["daemon", "--check-config", "-c", s(&bad)]).expect(2);
    let place = format!("{}:", bad.display());
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with(&place))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(":10:1: unknown key `max_vanshed`; did you mean `max_vanished`?")),
        "{}",
        out.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(":18:8: job \"x\": when = \"sometimes\"; accepted:")),
        "{}",
        out.stderr
    );
    // `cairn status` on a config it cannot read: UNKNOWN.
    cairn(&env, &["status", "-c", s(&bad)]).expect(3);
}

/// A source tmpfs unmounted, then empty, then 30% of its files deleted:
/// each run refused with nothing committed and the retention untouched,
/// one alert for the refusals, one recovery; `approve` lets the next run
/// through and only that one.
#[test]
fn guards_refuse_and_approve_lets_one_run_through() {
    if !is_root() {
        cannot_run("mounting a tmpfs needs root");
    }
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    let fs = Tmpfs::mount(&src);
    for i in 0..10 {
        std::fs::write(src.join(format!("f{i}")), vec![b'x'; 1000 + i]).unwrap();
    }
    let events = env.path("events");
    let file = config(
        &env,
        &format!(
            r#"[repository.r]
path = "{repo}"
password_file = "{pw}"

[[job]]
name = "home"
kind = "backup"
repository = "r"
paths = ["{src}"]
require_mount = "{src}"
every = "1h"
max_vanished = "20%"
keep = {{ last = 5 }}

[[notify]]
kind = "command"
command = ["sh", "-c", "cat >> {events}; echo >> {events}"]
"#,
            repo = env.repo.display(),
            pw = env.path("pw").display(),
            src = src.display(),
            events = events.display(),
        ),
    );
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let cfg = s(&file);
    let alerts = || events_sent(&events);

    cairn(&env, &["run", "home", "-c", cfg]).expect(0);
    assert_eq!(snapshot_count(&env, &env.repo), 1);

    fs.unmount();
    let out = cairn(&env, &["run", "home", "-c", cfg]).expect(2);
    assert!(
        out.stdout.contains("REFUSED") && out.stdout.contains("is not mounted"),
        "{}",
        out.stdout
    );
    let st = cairn(&env, &["status", "-c", cfg]).expect(2);
    assert!(
        st.stdout.contains("CRIT home") && st.stdout.contains("refused"),
        "{}",
        st.stdout
    );

    let _fs2 = Tmpfs::mount(&src);
    let out = cairn(&env, &["run", "home", "-c", cfg]).expect(2);
    assert!(out.stdout.contains("is empty"), "{}", out.stdout);
    assert_eq!(snapshot_count(&env, &env.repo), 1, "nothing committed");
    assert_eq!(alerts(), ["refused"], "two refusals, one alert");

    for i in 0..10 {
        std::fs::write(src.join(format!("f{i}")), vec![b'x'; 1000 + i]).unwrap();
    }
    cairn(&env, &["run", "home", "-c", cfg]).expect(0);
    assert_eq!(alerts(), ["refused", "recovered"]);
    assert_eq!(snapshot_count(&env, &env.repo), 2);

    for i in 0..3 {
        std::fs::remove_file(src.join(format!("f{i}"))).unwrap();
    }
    let out = cairn(&env, &["run", "home", "-c", cfg]).expect(2);
    assert!(
        out.stdout.contains("3 of the 10 files (30%)")
            && out
                .stdout
                .contains(&format!("Most vanished from: {} (3 files", src.display()))
            && out.stdout.contains("cairn approve home"),
        "{}",
        out.stdout
    );
    assert_eq!(
        snapshot_count(&env, &env.repo),
        2,
        "held back, retention untouched"
    );
    assert_eq!(alerts(), ["refused", "recovered", "refused"]);

    cairn(&env, &["approve", "home", "-c", cfg]).expect(0);
    cairn(&env, &["run", "home", "-c", cfg]).expect(0);
    assert_eq!(snapshot_count(&env, &env.repo), 3);
    // The approval was for one run.
    for i in 3..6 {
        std::fs::remove_file(src.join(format!("f{i}"))).unwrap();
    }
    cairn(&env, &["run", "home", "-c", cfg]).expect(2);
    assert_eq!(snapshot_count(&env, &env.repo), 3);
    let st = cairn(&env, &["--json", "status", "-c", cfg]).expect(2);
    let v = json(&st.stdout);
    assert_eq!(v["jobs"][0]["state"], "refused");
    assert_eq!(v["jobs"][0]["refusals"], 4);
}

/// A repository whose disk is not mounted is refused and never created;
/// with `when = "mounted"` the daemon backs up as soon as the disk
/// appears.
#[test]
fn a_repository_disk_that_is_not_mounted_is_refused_then_used_when_it_appears() {
    if !is_root() {
        cannot_run("mounting a tmpfs needs root");
    }
    let env = Env::new();
    let disk = env.path("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let repo = disk.join("cairn");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"data").unwrap();
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let file = config(
        &env,
        &format!(
            r#"[repository.usb]
path = "{repo}"
password_file = "{pw}"
require_mount = "{disk}"

[[job]]
name = "usb"
kind = "backup"
repository = "usb"
paths = ["{src}"]
when = "mounted"
probe_every = "1s"
"#,
            repo = repo.display(),
            pw = env.path("pw").display(),
            disk = disk.display(),
            src = src.display(),
        ),
    );
    let cfg = s(&file);
    let out = cairn(&env, &["run", "usb", "-c", cfg]).expect(2);
    assert!(out.stdout.contains("is not mounted"), "{}", out.stdout);
    assert_eq!(
        std::fs::read_dir(&disk).unwrap().count(),
        0,
        "nothing created"
    );

    let mut daemon = Daemon::start(&env, &file);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        std::fs::read_dir(&disk).unwrap().count(),
        0,
        "still nothing"
    );
    // The disk appears, holding its repository.
    let _fs = Tmpfs::mount(&disk);
    cairn(&env, &["--repo", s(&repo), "init"]).expect(0);
    wait_for("the backup on the disk", Duration::from_secs(30), || {
        env.path("state/jobs/usb.json").exists() && job_state(&env, "usb")["ok_runs"] == 1
    });
    assert_eq!(snapshot_count(&env, &repo), 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(job_state(&env, "usb")["ok_runs"], 1, "once per appearance");
    daemon.stop();
}

/// The daemon running, as a child that is stopped when dropped.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(env: &Env, config: &Path) -> Daemon {
        let mut c = env.cmd();
        c.args(["daemon", "-c", s(config)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn cairn daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let (err, l2) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Daemon { child, log }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, and the exit code.
    fn stop(&mut self) -> i32 {
        self.signal(rustix::process::Signal::TERM);
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("the daemon did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stopped (SIGSTOP) past two due times, then continued: exactly one
/// run, then the schedule goes on from there. One daemon per state
/// directory; SIGTERM stops it cleanly.
#[test]
fn a_daemon_that_slept_runs_once_on_waking() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"data").unwrap();
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let file = config(
        &env,
        &format!(
            r#"[repository.r]
path = "{repo}"
password_file = "{pw}"

[[job]]
name = "often"
kind = "backup"
repository = "r"
paths = ["{src}"]
every = "4s"
keep = {{ last = 1 }}
"#,
            repo = env.repo.display(),
            pw = env.path("pw").display(),
            src = src.display(),
        ),
    );
    let mut d = Daemon::start(&env, &file);
    let runs = || {
        if env.path("state/jobs/often.json").exists() {
            job_state(&env, "often")["ok_runs"].as_u64().unwrap_or(0)
        } else {
            0
        }
    };
    wait_for("the first run", Duration::from_secs(30), || runs() == 1);
    let second = cairn(&env, &["daemon", "-c", s(&file)]).expect(2);
    assert!(
        second.stderr.contains("another cairn daemon is running"),
        "{}",
        second.stderr
    );

    d.signal(rustix::process::Signal::STOP);
    std::thread::sleep(Duration::from_secs(10));
    let before = runs();
    d.signal(rustix::process::Signal::CONT);
    wait_for("the catch-up run", Duration::from_secs(10), || {
        runs() == before + 1
    });
    // The next is an interval after the catch-up, not at once.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        runs(),
        before + 1,
        "exactly one run for the missed ones:\n{}",
        d.log()
    );
    assert_eq!(d.stop(), 0, "{}", d.log());
    assert!(d.log().contains("cairn daemon stopped"), "{}", d.log());
    assert_eq!(
        snapshot_count(&env, &env.repo),
        1,
        "keep = {{ last = 1 }} applied after each run"
    );
}

/// A loopback HTTP receiver that records request bodies.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b2 = bodies.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                b2.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Receiver { url, bodies }
    }

    fn events(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| json(b)["event"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// Debian's aiosmtpd on loopback, each message a file in `dir`.
struct Smtp {
    port: u16,
    child: Child,
    dir: PathBuf,
}

const SMTP_SINK: &str = r#"
import asyncio, os, socket, sys
try:
    from aiosmtpd.smtp import SMTP
except ImportError as e:
    print("cannot import aiosmtpd: %s" % e, file=sys.stderr); sys.exit(3)
out = sys.argv[1]
class H:
    async def handle_DATA(self, server, session, envelope):
        n = len(os.listdir(out))
        with open(os.path.join(out, ".tmp"), "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(os.path.join(out, ".tmp"), os.path.join(out, "%04d.eml" % n))
        return "250 OK"
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
loop = asyncio.new_event_loop(); asyncio.set_event_loop(loop)
loop.run_until_complete(loop.create_server(lambda: SMTP(H()), sock=s))
print(s.getsockname()[1], flush=True)
loop.run_forever()
"#;

impl Smtp {
    fn start(dir: &Path) -> Smtp {
        std::fs::create_dir_all(dir).unwrap();
        // Debian's python, where python3-aiosmtpd lives (a python3 from
        // elsewhere may come first in PATH).
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut child = Command::new(python)
            .args(["-c", SMTP_SINK, s(dir)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| cannot_run(&format!("python3 for the SMTP server: {e}")));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Ok(port) = line.trim().parse() else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            cannot_run(&format!("an SMTP server (install python3-aiosmtpd): {err}"));
        };
        Smtp {
            port,
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn messages(&self) -> Vec<String> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        v.sort();
        v.iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command job whose command fails half-way leaves no snapshot; ten
/// failures in a row make one alert, by webhook and by email through a
/// real SMTP server, and the success after them one recovery.
#[test]
fn ten_failures_make_one_alert_and_one_recovery() {
    let env = Env::new();
    env.ok(&["init"]);
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let hook = Receiver::start();
    let smtp = Smtp::start(&env.path("mail"));
    let flag = env.path("db-up");
    let file = config(
        &env,
        &format!(
            r#"[repository.r]
path = "{repo}"
password_file = "{pw}"

[[job]]
name = "db"
kind = "command"
repository = "r"
command = ["sh", "-c", "echo 'CREATE TABLE half;'; test -e {flag} || {{ echo 'connection lost' >&2; exit 1; }}; echo 'COMMIT;'"]
filename = "shop.sql"
every = "1d"

[[notify]]
kind = "webhook"
url = "{url}"

[[notify]]
kind = "email"
smtp = "127.0.0.1:{port}"
tls = "none"
from = "cairn@example.org"
to = ["admin@example.org"]
"#,
            repo = env.repo.display(),
            pw = env.path("pw").display(),
            flag = flag.display(),
            url = hook.url,
            port = smtp.port,
        ),
    );
    let cfg = s(&file);
    for _ in 0..10 {
        let out = cairn(&env, &["run", "db", "-c", cfg]).expect(2);
        assert!(
            out.stdout.contains("FAILED") && out.stdout.contains("connection lost"),
            "{}",
            out.stdout
        );
    }
    assert_eq!(
        snapshot_count(&env, &env.repo),
        0,
        "a failed dump is no snapshot"
    );
    std::fs::write(&flag, b"").unwrap();
    cairn(&env, &["run", "db", "-c", cfg]).expect(0);
    assert_eq!(snapshot_count(&env, &env.repo), 1);
    let restored = env.path("out");
    env.ok(&["restore", "latest", s(&restored)]);
    assert_eq!(
        std::fs::read_to_string(restored.join("shop.sql")).unwrap(),
        "CREATE TABLE half;\nCOMMIT;\n"
    );
    let alerts: Vec<String> = hook
        .events()
        .into_iter()
        .filter(|e| e != "started" && e != "succeeded")
        .collect();
    assert_eq!(alerts, ["failed", "recovered"]);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert!(
        mails[0].contains("db") && mails[0].contains("connection lost"),
        "{}",
        mails[0]
    );
    assert!(
        mails[1].to_lowercase().contains("recovered") || mails[1].contains("OK"),
        "{}",
        mails[1]
    );
}

/// The status JSON of one job.
fn job_view(env: &Env, cfg: &str, job: &str) -> serde_json::Value {
    let out = cairn(env, &["--json", "status", "-c", cfg]);
    let v = json(&out.stdout);
    v["jobs"]
        .as_array()
        .and_then(|a| a.iter().find(|j| j["name"] == job))
        .unwrap_or_else(|| panic!("no job {job} in the status:\n{}", out.stdout))
        .clone()
}

/// Whatever a drill restored is gone when it ends.
fn drill_scratch_is_empty(env: &Env) {
    let scratch = env.path("state/scratch");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with("drill")),
        "left in {}: {left:?}",
        scratch.display()
    );
}

/// A drill restores a sample of the newest snapshot, compares it with
/// the unchanged sources and dates the proven restore; sources changed
/// since the snapshot are skipped and counted; a source whose bytes
/// changed under its old size and mtime fails the drill by its path, and
/// so does a damaged pack.
#[test]
fn a_drill_proves_a_restore_and_finds_bytes_changed_under_an_unchanged_mtime() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    env.ok(&["init"]);
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let src = env.path("src");
    for i in 0..40u64 {
        let dir = src.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i}")),
            crate::util::pseudo(1000 + 997 * i as usize, i),
        )
        .unwrap();
    }
    let file = config(
        &env,
        &format!(
            r#"[repository.r]
path = "{repo}"
password_file = "{pw}"

[[job]]
name = "home"
kind = "backup"
repository = "r"
paths = ["{src}"]
every = "1d"

[[job]]
name = "drill"
kind = "drill"
repository = "r"
group = "*"
every = "1w"
sample = {{ files = 10 }}

[[job]]
name = "all"
kind = "drill"
repository = "r"
every = "1w"
sample = {{ files = 1000, bytes = "1GiB" }}
"#,
            repo = env.repo.display(),
            pw = env.path("pw").display(),
            src = src.display(),
        ),
    );
    let cfg = s(&file);
    cairn(&env, &["run", "home", "-c", cfg]).expect(0);
    assert!(job_view(&env, cfg, "drill")["last_proven_ns"].is_null());

    let out = cairn(&env, &["run", "drill", "-c", cfg]).expect(0);
    assert!(
        out.stdout.contains("10 of 40 files restored")
            && out
                .stdout
                .contains("10 identical to the source, 0 skipped as changed"),
        "{}",
        out.stdout
    );
    let v = job_view(&env, cfg, "drill");
    let proven = v["last_proven_ns"].as_i64().expect("last_proven_ns set");
    assert_eq!(
        (v["state"].as_str(), v["health"].as_str()),
        (Some("idle"), Some("green"))
    );
    drill_scratch_is_empty(&env);
    let text = cairn(&env, &["status", "-c", cfg]).stdout;
    // Proven for `drill`; `all` has not run yet.
    assert!(
        text.matches("last proven restore:").count() == 2
            && text.matches("last proven restore: never").count() == 1,
        "{text}"
    );

    // Three sources changed since the snapshot and one deleted:
    // restored, not compared.
    for i in 0..3 {
        let f = src.join(format!("d{}/f{i}", i % 4));
        let mut data = std::fs::read(&f).unwrap();
        data.extend_from_slice(b"more");
        std::fs::write(&f, data).unwrap();
    }
    std::fs::remove_file(src.join("d3/f3")).unwrap();
    let out = cairn(&env, &["run", "all", "-c", cfg]).expect(0);
    assert!(
        out.stdout.contains("40 of 40 files restored")
            && out.stdout.contains(
                "36 identical to the source, 3 skipped as changed since the snapshot, 1 skipped as gone from the source"
            ),
        "{}",
        out.stdout
    );

    // Silent corruption: other bytes, the same size and mtime.
    let victim = src.join("d1/f9");
    let md = std::fs::metadata(&victim).unwrap();
    let mut data = std::fs::read(&victim).unwrap();
    data[500] ^= 0xff;
    std::fs::write(&victim, &data).unwrap();
    crate::util::set_mtime(&victim, md.mtime(), md.mtime_nsec() as u32);
    let out = cairn(&env, &["run", "all", "-c", cfg]).expect(2);
    assert!(
        out.stdout.contains("FAILED")
            && out.stdout.contains(&format!(
                "{}: the restored file differs from the source at byte 500",
                victim.display()
            )),
        "{}",
        out.stdout
    );
    drill_scratch_is_empty(&env);
    let st = cairn(&env, &["status", "-c", cfg]).expect(2);
    assert!(st.stdout.contains("CRIT all"), "{}", st.stdout);
    let v = job_view(&env, cfg, "all");
    assert_eq!(v["state"], "failed");
    assert!(
        v["last_error"].as_str().unwrap().contains(s(&victim)),
        "{v}"
    );
    // The earlier proof of the other drill stands.
    assert_eq!(job_view(&env, cfg, "drill")["last_proven_ns"], proven);

    // Damage in the repository: the restore authenticates every chunk,
    // so the file it hits is not restored and the drill fails.
    let largest = crate::util::files_below(&env.repo.join("data"))
        .into_iter()
        .map(|p| env.repo.join("data").join(p))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut pack = std::fs::read(&largest).unwrap();
    let mid = pack.len() / 2;
    pack[mid] ^= 0xff;
    std::fs::write(&largest, pack).unwrap();
    let out = cairn(&env, &["run", "all", "-c", cfg]).expect(2);
    assert!(out.stdout.contains("is damaged"), "{}", out.stdout);
    drill_scratch_is_empty(&env);
}

/// A drill with a put-only key, or with no key at all (a keyless box),
/// fails saying it needs a key that can read, and status shows it red
/// with no proven restore.
#[test]
fn a_drill_without_a_key_that_can_read_fails_and_says_so() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"data").unwrap();
    env.ok(&["backup", s(&src)]);
    let put = env.put_only_key("put.key");
    let file = config(
        &env,
        &format!(
            r#"[repository.put]
path = "{repo}"
key_file = "{put}"

[repository.bare]
path = "{repo}"

[[job]]
name = "put-drill"
kind = "drill"
repository = "put"
every = "1w"

[[job]]
name = "box-drill"
kind = "drill"
repository = "bare"
every = "1w"
"#,
            repo = env.repo.display(),
            put = put.display(),
        ),
    );
    let cfg = s(&file);
    for (job, why) in [
        ("put-drill", "the key of repository put is put-only"),
        ("box-drill", "repository bare needs a key"),
    ] {
        let out = cairn(&env, &["run", job, "-c", cfg]).expect(2);
        assert!(
            out.stdout.contains("FAILED")
                && out.stdout.contains("needs a key that can read the backups")
                && out.stdout.contains(why),
            "{}",
            out.stdout
        );
        let v = job_view(&env, cfg, job);
        assert_eq!(
            (v["state"].as_str(), v["health"].as_str()),
            (Some("failed"), Some("red"))
        );
        assert!(v["last_proven_ns"].is_null(), "{v}");
    }
    let st = cairn(&env, &["status", "-c", cfg]).expect(2);
    assert!(
        st.stdout.contains("CRIT put-drill")
            && st.stdout.contains("CRIT box-drill")
            && st.stdout.contains("needs a key that can read")
            && st.stdout.matches("last proven restore: never").count() == 2,
        "{}",
        st.stdout
    );
    drill_scratch_is_empty(&env);
}

/// A failing job is retried with growing waits and alerts once; its
/// recovery alerts once.
#[test]
fn a_failing_job_retries_with_backoff_and_alerts_once() {
    let env = Env::new();
    env.ok(&["init"]);
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let flag = env.path("up");
    let events = env.path("events");
    let file = config(
        &env,
        &format!(
            r#"[repository.r]
path = "{repo}"
password_file = "{pw}"

[[job]]
name = "dump"
kind = "command"
repository = "r"
command = ["sh", "-c", "test -e {flag} && echo ok"]
filename = "dump.txt"
every = "1d"
retry = "1s"

[[notify]]
kind = "command"
command = ["sh", "-c", "cat >> {events}; echo >> {events}"]
"#,
            repo = env.repo.display(),
            pw = env.path("pw").display(),
            flag = flag.display(),
            events = events.display(),
        ),
    );
    let mut d = Daemon::start(&env, &file);
    let mut ends: Vec<i64> = Vec::new();
    wait_for("three failed attempts", Duration::from_secs(30), || {
        if !env.path("state/jobs/dump.json").exists() {
            return false;
        }
        let st = job_state(&env, "dump");
        let end = st["last_end_ns"].as_i64().unwrap_or(0);
        if st["running"].is_null() && end > 0 && ends.last() != Some(&end) {
            ends.push(end);
        }
        st["failed_runs"].as_u64().unwrap_or(0) >= 3
    });
    std::fs::write(&flag, b"").unwrap();
    wait_for("the recovery", Duration::from_secs(30), || {
        job_state(&env, "dump")["ok_runs"] == 1
    });
    assert_eq!(d.stop(), 0);
    let st = job_state(&env, "dump");
    assert_eq!(st["failed_runs"], 3, "{st}");
    if ends.len() >= 3 {
        let (g1, g2) = (ends[1] - ends[0], ends[2] - ends[1]);
        assert!(
            g1 >= 900_000_000 && g2 > g1 + 500_000_000,
            "waits {g1} then {g2} ns"
        );
    }
    assert_eq!(events_sent(&events), ["failed", "recovered"], "{}", d.log());
}

/// The daemon stopped (SIGTERM) and then killed (SIGKILL) in the middle
/// of a backup: each restart resumes it, and in the end there is one
/// snapshot and the data was stored once.
#[test]
fn a_daemon_stopped_or_killed_mid_backup_resumes_without_duplicates() {
    let env = Env::new();
    env.ok(&["init"]);
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let size = 320usize << 20;
    std::fs::write(src.join("big"), crate::util::pseudo(size, 5)).unwrap();
    let file = config(
        &env,
        &format!(
            r#"[repository.r]
path = "{repo}"
password_file = "{pw}"

[[job]]
name = "big"
kind = "backup"
repository = "r"
paths = ["{src}"]
every = "1d"
"#,
            repo = env.repo.display(),
            pw = env.path("pw").display(),
            src = src.display(),
        ),
    );
    let stored = || crate::util::pack_bytes(&env.repo);
    let mut d = Daemon::start(&env, &file);
    wait_for("a first pack", Duration::from_secs(60), || stored() > 0);
    // A job never overlaps itself: `cairn run` finds the daemon's run.
    let busy = cairn(&env, &["run", "big", "-c", s(&file)]).expect(2);
    assert!(
        busy.stderr.contains("is running already"),
        "{}",
        busy.stderr
    );
    assert_eq!(d.stop(), 0, "{}", d.log());
    assert_eq!(job_state(&env, "big")["last_outcome"], "interrupted");
    assert_eq!(snapshot_count(&env, &env.repo), 0);
    let after_stop = stored();
    assert!(after_stop < size as u64, "stopped before the end");

    let d = Daemon::start(&env, &file);
    wait_for("a pack more", Duration::from_secs(60), || {
        stored() > after_stop
    });
    d.signal(rustix::process::Signal::KILL);
    drop(d);
    assert!(
        !job_state(&env, "big")["running"].is_null(),
        "killed while running"
    );

    let mut d = Daemon::start(&env, &file);
    wait_for("the resumed backup", Duration::from_secs(120), || {
        job_state(&env, "big")["ok_runs"] == 1
    });
    assert_eq!(d.stop(), 0);
    assert_eq!(snapshot_count(&env, &env.repo), 1, "{}", d.log());
    let total = stored();
    assert!(
        total < size as u64 + (size as u64) / 20,
        "stored {total} bytes for {size}: data was stored twice"
    );
}

/// A job that cannot run (its disk never appears) becomes overdue and
/// alerts once, though nothing ran; SIGHUP reads the config again and a
/// job added to it runs.
#[test]
fn overdue_alerts_without_a_run_and_sighup_reloads() {
    let env = Env::new();
    env.ok(&["init"]);
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let disk = env.path("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let events = env.path("events");
    let body = |extra: &str| {
        format!(
            r#"[repository.usb]
path = "{disk}/cairn"
password_file = "{pw}"
require_mount = "{disk}"

[repository.r]
path = "{repo}"
password_file = "{pw}"

[[job]]
name = "usb"
kind = "command"
repository = "usb"
command = ["echo", "x"]
filename = "x"
when = "mounted"
probe_every = "1s"
overdue_after = "2s"

[[notify]]
kind = "command"
command = ["sh", "-c", "cat >> {events}; echo >> {events}"]
{extra}"#,
            disk = disk.display(),
            pw = env.path("pw").display(),
            repo = env.repo.display(),
            events = events.display(),
        )
    };
    let file = config(&env, &body(""));
    let d = Daemon::start(&env, &file);
    let sent = || events_sent(&events);
    wait_for("the overdue alert", Duration::from_secs(20), || {
        !sent().is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sent(), ["overdue"], "{}", d.log());
    let st = cairn(&env, &["status", "-c", s(&file)]).expect(2);
    assert!(
        st.stdout.contains("CRIT usb") && st.stdout.contains("overdue"),
        "{}",
        st.stdout
    );

    config(
        &env,
        &body(
            "
[[job]]
name = \"added\"
kind = \"command\"
repository = \"r\"
command = [\"echo\", \"y\"]
filename = \"y\"
every = \"1h\"
",
        ),
    );
    d.signal(rustix::process::Signal::HUP);
    wait_for("the added job", Duration::from_secs(20), || {
        env.path("state/jobs/added.json").exists() && job_state(&env, "added")["ok_runs"] == 1
    });
    assert!(d.log().contains("config reloaded: 2 jobs"), "{}", d.log());
}

/// Hooks run around each run (`after` always, a failing `before` stops
/// the run with its output in the message), and `max_concurrent = 1`
/// runs due jobs one after another.
#[test]
fn hooks_surround_runs_and_max_concurrent_bounds_them() {
    let env = Env::new();
    env.ok(&["init"]);
    std::fs::write(env.path("pw"), crate::util::PASS).unwrap();
    let log = env.path("hooks.log");
    let job = |name: &str| {
        format!(
            r#"
[[job]]
name = "{name}"
kind = "command"
repository = "r"
command = ["sh", "-c", "sleep 1; echo {name}"]
filename = "{name}.txt"
every = "1h"
before = ["sh", "-c", "echo start $CAIRN_JOB $(date +%s%N) >> {log}"]
after = ["sh", "-c", "echo end $CAIRN_JOB $CAIRN_OUTCOME $(date +%s%N) >> {log}"]
"#,
            log = log.display()
        )
    };
    let file = config(
        &env,
        &format!(
            r#"[repository.r]
path = "{repo}"
password_file = "{pw}"
{a}{b}
[[job]]
name = "guarded"
kind = "command"
repository = "r"
command = ["echo", "never"]
filename = "never.txt"
every = "1h"
before = ["sh", "-c", "echo 'no btrfs here' >&2; exit 3"]
after = ["touch", "{after}"]
"#,
            repo = env.repo.display(),
            pw = env.path("pw").display(),
            a = job("one"),
            b = job("two"),
            after = env.path("after-ran").display(),
        ),
    );
    // max_concurrent defaults to 2; one at a time here.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("listen = \"off\"", "listen = \"off\"\nmax_concurrent = 1");
    std::fs::write(&file, text).unwrap();

    let out = cairn(&env, &["run", "guarded", "-c", s(&file)]).expect(2);
    assert!(
        out.stdout.contains("before hook") && out.stdout.contains("no btrfs here"),
        "{}",
        out.stdout
    );
    assert!(
        env.path("after-ran").exists(),
        "after runs whatever happened"
    );
    assert_eq!(snapshot_count(&env, &env.repo), 0);

    let mut d = Daemon::start(&env, &file);
    wait_for("both jobs", Duration::from_secs(30), || {
        ["one", "two"].iter().all(|j| {
            env.path(&format!("state/jobs/{j}.json")).exists() && job_state(&env, j)["ok_runs"] == 1
        })
    });
    assert_eq!(d.stop(), 0);
    let lines: Vec<Vec<String>> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    let at = |what: &str, job: &str| -> i64 {
        lines
            .iter()
            .find(|l| l[0] == what && l[1] == job)
            .and_then(|l| l.last()?.parse().ok())
            .unwrap_or_else(|| panic!("no {what} of {job} in {lines:?}"))
    };
    assert!(
        lines.iter().any(|l| l[0] == "end" && l[2] == "ok"),
        "{lines:?}"
    );
    let (s1, e1, s2, e2) = (
        at("start", "one"),
        at("end", "one"),
        at("start", "two"),
        at("end", "two"),
    );
    assert!(e1 <= s2 || e2 <= s1, "the runs overlapped: {lines:?}");
}
