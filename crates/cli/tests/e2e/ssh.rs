//! The backup box over SSH: a real OpenSSH server on loopback (installed
//! by `.ci/run`) whose `authorized_keys` forces `cairn serve --stdio
//! --role put` for the source's key.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::util::*;

pub(crate) struct Sshd {
    child: Child,
    pub(crate) port: u16,
    pub(crate) client_key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

/// Starts sshd on a free loopback port; `forced` is the command every
/// login with the client key runs (`None`: the one the client asks for).
pub(crate) fn sshd(dir: &Path, forced: Option<&str>) -> Sshd {
    let sshd = Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "this test needs OpenSSH's server: apt-get install openssh-server (.ci/run does)"
    );
    let d = dir.join("ssh");
    fs::create_dir_all(&d).unwrap();
    keygen(&d.join("host"));
    keygen(&d.join("client"));
    let public = fs::read_to_string(d.join("client.pub")).unwrap();
    let options = match forced {
        Some(f) => format!("command=\"{f}\",no-pty,"),
        None => String::new(),
    };
    fs::write(
        d.join("authorized_keys"),
        format!("{options}no-port-forwarding,no-agent-forwarding,no-X11-forwarding {public}"),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {h}\nAuthorizedKeysFile {a}\nPidFile {p}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nLogLevel ERROR\n",
            h = d.join("host").display(),
            a = d.join("authorized_keys").display(),
            p = d.join("sshd.pid").display(),
        ),
    )
    .unwrap();
    if is_root() {
        let _ = fs::create_dir_all("/run/sshd");
    }
    let child = Command::new(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(d.join("sshd_config"))
        .spawn()
        .expect("start sshd");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "sshd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Sshd {
        child,
        port,
        client_key: d.join("client"),
    }
}

pub(crate) fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn put_source_over_ssh_backs_up_but_cannot_delete() {
    let env = Env::new();
    env.ok(&["init"]);
    let key = env.put_only_key("laptop.key");
    let cairn = env!("CARGO_BIN_EXE_cairn");
    let forced = format!(
        "{cairn} --repo {} serve --stdio --role put --group laptop:* --name laptop",
        s(&env.repo)
    );
    let server = sshd(env.dir.path(), Some(&forced));
    let remote = format!("ssh://{}@127.0.0.1:{}/ignored", user(), server.port);
    let source = |args: &[&str]| {
        let mut c = env.cmd();
        c.env_remove("CAIRN_PASSWORD")
            .env("CAIRN_SSH", ssh_command(&server))
            .arg("--repo")
            .arg(&remote)
            .args(args);
        run(c)
    };
    let src = env.path("home");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), pseudo(6 << 20, 1)).unwrap();
    fs::write(src.join("small"), b"hello").unwrap();
    let k = s(&key).to_string();
    let r = source(&[
        "--key-file",
        &k,
        "backup",
        "--json",
        "--group",
        "laptop:/home",
        s(&src),
    ])
    .expect(0);
    let first = json(&r.stdout)["snapshot"].as_str().unwrap().to_string();
    fs::write(src.join("small"), b"hello again").unwrap();
    let r = source(&[
        "--key-file",
        &k,
        "backup",
        "--json",
        "--group",
        "laptop:/home",
        s(&src),
    ])
    .expect(0);
    assert_eq!(json(&r.stdout)["unchanged_files"], 1, "{}", r.stdout);

    // A snapshot of another group, and deletion by any means: refused by
    // the server, whatever the client tries.
    let r = source(&[
        "--key-file",
        &k,
        "backup",
        "--group",
        "server:/etc",
        s(&src),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("outside this token's groups"),
        "{}",
        r.stderr
    );
    let before = snapshot_listing(&env.repo);
    for args in [
        vec!["forget", &first[..8]],
        vec!["forget", "--keep-last", "1"],
        vec!["prune", "--grace", "0"],
    ] {
        let r = source(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("refused"), "{args:?}: {}", r.stderr);
    }
    assert_eq!(snapshot_listing(&env.repo), before);

    // The owner, on the box, restores the source's first snapshot.
    let dest = env.path("dest");
    env.ok(&["restore", &first[..16], s(&dest)]);
    let got = restored(&dest, &src);
    assert_eq!(fs::read(got.join("big")).unwrap(), pseudo(6 << 20, 1));
    assert_eq!(fs::read(got.join("small")).unwrap(), b"hello");
    env.ok(&["check", "--read-data"]);
}

pub(crate) fn ssh_command(server: &Sshd) -> String {
    format!(
        "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        s(&server.client_key)
    )
}

/// ssh hands the remote shell one command line: a repository path with
/// spaces, quotes and shell syntax must reach `serve` as written, neither
/// split nor run.
#[test]
fn ssh_repository_path_with_spaces_and_shell_characters() {
    let env = Env::new();
    let server = sshd(env.dir.path(), None);
    let base = env.path("box dir");
    let repo = base.join("it's \"a\" repo; $(false) `false` \\ *");
    fs::create_dir_all(&base).unwrap();
    let remote = format!("ssh://{}@127.0.0.1:{}{}", user(), server.port, s(&repo));
    let cairn = |args: &[&str]| {
        let mut c = env.cmd();
        c.env("CAIRN_SSH", ssh_command(&server))
            .env("CAIRN_REMOTE_CAIRN", env!("CARGO_BIN_EXE_cairn"))
            .arg("--repo")
            .arg(&remote)
            .args(args);
        run(c)
    };
    // The box serves existing repositories only: made on the box.
    let mut c = env.cmd();
    c.arg("--repo").arg(&repo).arg("init");
    run(c).expect(0);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), pseudo(100_000, 3)).unwrap();
    cairn(&["backup", s(&src)]).expect(0);
    assert_eq!(fs::read_dir(repo.join("snapshots")).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&base).unwrap().count(), 1);
    let dest = env.path("dest");
    cairn(&["restore", "latest", s(&dest)]).expect(0);
    assert_eq!(
        fs::read(restored(&dest, &src).join("f")).unwrap(),
        pseudo(100_000, 3)
    );
}

fn snapshot_listing(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
