//! A laptop that comes and goes: a second OpenSSH server on loopback,
//! with its own user and home, is the laptop; the box's daemon pulls a
//! backup from it when it appears, over that one SSH connection.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const USER: &str = "cairnlaptop";

fn sh(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The laptop's user, with `home` as its home.
fn laptop_user(home: &Path) {
    let exists = sh(Command::new("id").arg(USER));
    let ok = if exists {
        sh(Command::new("usermod").args(["-d", s(home), USER]))
    } else {
        sh(Command::new("useradd").args(["-M", "-d", s(home), "-s", "/bin/sh", USER]))
    };
    if !ok {
        cannot_run("useradd/usermod for the laptop's user failed");
    }
    // A locked account ("!") cannot log in even by key without PAM.
    assert!(sh(Command::new("usermod").args(["-p", "*", USER])));
}

fn chown_r(p: &Path) {
    assert!(sh(Command::new("chown").args([
        "-R",
        &format!("{USER}:"),
        s(p)
    ])));
}

struct Laptop {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Laptop {
    fn config(dir: &Path, port: u16) -> PathBuf {
        let c = dir.join("sshd_config");
        fs::write(
            &c,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {h}\nAuthorizedKeysFile {a}\nPidFile {p}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nAllowUsers {USER}\nLogLevel ERROR\n",
                h = dir.join("host").display(),
                a = dir.join("authorized_keys").display(),
                p = dir.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        c
    }

    /// Starts (or restarts) the laptop's sshd.
    fn up(&mut self) {
        let _ = fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .spawn()
            .expect("start sshd");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "sshd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// The laptop leaves: its sshd and every process of its user die.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("pkill").args(["-KILL", "-u", USER]).status();
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        self.down();
    }
}

fn keygen(path: &Path) {
    assert!(sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)));
}

/// The laptop is away, then appears: the pull starts within a probe
/// interval, lands under the laptop's group and restores byte-identical.
/// The box's key opens nothing but the agent. Cut off mid-backup, the
/// next run completes re-sending little.
#[test]
fn a_laptop_that_appears_is_pulled_and_a_cut_run_resumes() {
    if !is_root() {
        cannot_run("a second sshd with its own user needs root");
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        cannot_run("OpenSSH's server: apt-get install openssh-server (.ci/run does)");
    }
    let env = Env::new();
    // The laptop's user must reach its home and the program below.
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.ok(&["init"]);
    let put = env.put_only_key("put.key");

    let home = env.path("laptop");
    let data = home.join("data");
    fs::create_dir_all(data.join("docs")).unwrap();
    for i in 0..20 {
        fs::write(
            data.join(format!("docs/f{i}")),
            pseudo(100_000 + i, i as u64),
        )
        .unwrap();
    }
    fs::write(data.join("big"), pseudo(3 << 20, 99)).unwrap();
    let bin = env.path("bin/cairn");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_cairn"), &bin).unwrap();
    fs::copy(&put, home.join("put.key")).unwrap();
    laptop_user(&home);

    let ssh_dir = env.path("laptop-ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    keygen(&ssh_dir.join("host"));
    let box_key = env.path("box_key");
    keygen(&box_key);
    let public = fs::read_to_string(box_key.with_extension("pub")).unwrap();
    let forced = format!(
        "{} pull-agent --key-file {} --allow {}",
        bin.display(),
        home.join("put.key").display(),
        data.display()
    );
    fs::write(
        ssh_dir.join("authorized_keys"),
        format!("command=\"{forced}\",restrict {public}"),
    )
    .unwrap();
    chown_r(&home);
    fs::set_permissions(home.join("put.key"), fs::Permissions::from_mode(0o600)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Laptop::config(&ssh_dir, port);
    let mut laptop = Laptop {
        dir: ssh_dir.clone(),
        port,
        child: None,
    };
    let ssh_command = format!(
        "ssh -i {} -p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        box_key.display()
    );

    let state = env.path("state");
    let cfg = env.path("cairn.toml");
    fs::write(
        &cfg,
        format!(
            r#"[daemon]
state = "{state}"
listen = "off"

[repository.box]
path = "{repo}"

[[job]]
name = "laptop"
kind = "pull"
repository = "box"
ssh = "{USER}@127.0.0.1"
ssh_command = "{ssh_command}"
remote_cairn = "{bin}"
paths = ["{data}"]
every = "1h"
when = "reachable"
probe_every = "1s"
"#,
            state = state.display(),
            repo = env.repo.display(),
            bin = bin.display(),
            data = data.display(),
        ),
    )
    .unwrap();

    // The box holds no key: its daemon runs without a passphrase.
    let mut d = env.cmd();
    d.env_remove("CAIRN_PASSWORD")
        .args(["daemon", "-c", s(&cfg)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = d.spawn().unwrap();
    let job = state.join("jobs/laptop.json");
    let ok_runs = || -> u64 {
        fs::read(&job)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["ok_runs"].as_u64())
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ok_runs(), 0, "the laptop is away: nothing runs");
    laptop.up();
    let t = Instant::now();
    while ok_runs() < 1 {
        if t.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            let out = daemon.wait_with_output().unwrap();
            panic!(
                "no pull within 30 s of the laptop appearing:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());

    let snaps = json(&env.ok(&["--json", "snapshots"]));
    let group = format!("127.0.0.1:{}", data.display());
    assert_eq!(snaps[0]["group"], group.as_str(), "{snaps}");
    let dest = env.path("restored");
    env.ok(&["restore", "latest", s(&dest)]);
    let diffs = compare_trees(&data, &restored(&dest, &data), true);
    assert!(diffs.is_empty(), "{diffs:#?}");

    // The box's key runs the agent and nothing else.
    let mut probe = Command::new("ssh");
    probe
        .args(ssh_command.split_whitespace().skip(1))
        .arg(format!("{USER}@127.0.0.1"))
        .args(["cat", "/etc/passwd"])
        .stdin(Stdio::null());
    let out = probe.output().unwrap();
    let both = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && !both.contains("root:x:0"),
        "{both}"
    );
    assert!(both.contains("not by hand"), "{both}");

    // The laptop leaves in the middle of a run with new data.
    fs::write(data.join("new-big"), pseudo(96 << 20, 7)).unwrap();
    chown_r(&data);
    let before = pack_bytes(&env.repo);
    let mut run = env.cmd();
    run.env_remove("CAIRN_PASSWORD")
        .args(["run", "laptop", "-c", s(&cfg)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut running = run.spawn().unwrap();
    let t = Instant::now();
    while pack_bytes(&env.repo) < before + (20 << 20) {
        if t.elapsed() > Duration::from_secs(60) || running.try_wait().unwrap().is_some() {
            let _ = running.kill();
            let out = running.wait_with_output().unwrap();
            panic!(
                "no pack arrived:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    laptop.down();
    let cut = running.wait_with_output().unwrap();
    assert_eq!(
        cut.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&cut.stdout)
    );
    let arrived = pack_bytes(&env.repo) - before;
    assert!(arrived < 96 << 20, "the run was cut before it finished");

    laptop.up();
    let mut again = env.cmd();
    again
        .env_remove("CAIRN_PASSWORD")
        .args(["run", "laptop", "-c", s(&cfg)]);
    run_ok(again);
    let total = pack_bytes(&env.repo) - before;
    let resent = total.saturating_sub(96 << 20);
    eprintln!(
        "cut after {arrived} bytes had arrived; the resumed run stored {total} in all, {resent} beyond the new data"
    );
    assert!(
        resent * 10 < arrived,
        "re-sent {resent} bytes of the {arrived} that had arrived"
    );
    let dest = env.path("restored2");
    env.ok(&["restore", "latest", s(&dest)]);
    let diffs = compare_trees(&data, &restored(&dest, &data), true);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

fn run_ok(c: Command) {
    run(c).expect(0);
}
