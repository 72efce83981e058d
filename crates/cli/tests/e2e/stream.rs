//! `cairn backup --stdin`: a stream piped in becomes one file of a
//! snapshot, restored byte for byte.

use std::io::Write;
use std::process::Stdio;

use crate::util::*;

/// Runs cairn with `--repo <env repo>` prepended and `data` written into
/// its stdin through a pipe, as a shell pipeline would.
fn run_piped(env: &Env, args: &[&str], data: &[u8]) -> Run {
    let mut c = env.cmd();
    c.arg("--repo")
        .arg(&env.repo)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cmdline = format!("{c:?}");
    let mut child = c.spawn().expect("spawn cairn");
    let mut stdin = child.stdin.take().unwrap();
    let out = std::thread::scope(|s| {
        // Written from another thread: a pipe holds 64 KiB, and cairn
        // may be writing output meanwhile.
        s.spawn(move || {
            // cairn may refuse before reading; the run's output says why.
            let _ = stdin.write_all(data);
        });
        child.wait_with_output().expect("wait for cairn")
    });
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cmdline,
    }
}

#[test]
fn stdin_backup_restores_byte_identical() {
    let env = Env::new();
    env.ok(&["init"]);
    // Text with every byte value after it, across many chunks.
    let mut data = b"CREATE TABLE t (id int);\n-- \x00\xff\n".to_vec();
    data.extend(pseudo(3 << 20, 11));
    let args = [
        "backup",
        "--json",
        "--host",
        "db1",
        "--stdin",
        "--stdin-filename",
        "x.sql",
    ];
    let v = json(&run_piped(&env, &args, &data).expect(0).stdout);
    assert_eq!(v["group"].as_str(), Some("db1:stdin:x.sql"), "{v:#}");
    assert_eq!(v["total_bytes"].as_u64(), Some(data.len() as u64), "{v:#}");

    let out = env.ok(&["ls", "latest"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["/x.sql"], "{out}");
    let dest = env.path("dest");
    env.ok(&["restore", "latest", s(&dest)]);
    assert_eq!(
        entries_below(&dest).into_iter().collect::<Vec<_>>(),
        ["x.sql"]
    );
    let got = std::fs::read(dest.join("x.sql")).unwrap();
    assert!(got == data, "restored bytes differ");

    // The same dump again stores only its root tree (the file's mtime is
    // the time of the run).
    let v = json(&run_piped(&env, &args, &data).expect(0).stdout);
    assert_eq!(v["blobs_added"].as_u64(), Some(1), "{v:#}");
    assert!(v["raw_bytes_added"].as_u64().unwrap() < 4096, "{v:#}");
    env.ok(&["check", "--read-data"]);

    // An empty stream is an empty file, under the default name and group.
    let v = json(
        &run_piped(&env, &["backup", "--json", "--host", "db1", "--stdin"], b"")
            .expect(0)
            .stdout,
    );
    assert_eq!(v["group"].as_str(), Some("db1:stdin:stdin"), "{v:#}");
    let dest = env.path("dest-empty");
    env.ok(&["restore", "latest", "--group", "db1:stdin:stdin", s(&dest)]);
    assert_eq!(std::fs::read(dest.join("stdin")).unwrap(), b"");
}

#[test]
fn stdin_flags_are_checked_before_anything_is_read() {
    let env = Env::new();
    env.ok(&["init"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (args, want) in [
        (vec!["backup", "--stdin", s(&src)], "cannot be used with"),
        (
            vec!["backup", "--stdin-filename", "x.sql", s(&src)],
            "--stdin",
        ),
        (
            vec!["backup", "--stdin", "--exclude", "*.o"],
            "cannot be used with",
        ),
        (vec!["backup"], "required"),
        (
            vec!["backup", "--stdin", "--stdin-filename", "a/b"],
            "\"a/b\"",
        ),
        (
            vec!["backup", "--stdin", "--stdin-filename", ".."],
            "\"..\"",
        ),
    ] {
        let r = run_piped(&env, &args, b"data").expect(2);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    assert_eq!(env.ok(&["snapshots", "--json"]).trim(), "[]");
}
