//! The end of what another program printed, kept in bounded memory: a
//! hook, a dump command or a pulled machine may print without end, and
//! only the last lines explain a failure.

use std::io::Read;

/// Reads `r` to its end and keeps the last `keep` bytes (whole text, cut
/// at a character boundary), trimmed.
pub fn read(mut r: impl Read, keep: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    let t = String::from_utf8_lossy(&tail);
    let t = t.trim();
    t[t.floor_char_boundary(t.len().saturating_sub(keep))..].to_string()
}

/// Runs `cmd` to its end with standard input closed, keeping the last
/// `keep` bytes of standard error and of standard output.
pub fn run(
    mut cmd: std::process::Command,
    keep: usize,
) -> std::io::Result<(std::process::ExitStatus, String, String)> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = child
        .stdout
        .take()
        .map(|o| std::thread::spawn(move || read(o, keep)));
    let err = child
        .stderr
        .take()
        .map(|e| std::thread::spawn(move || read(e, keep)));
    let status = child.wait()?;
    let out = out.and_then(|t| t.join().ok()).unwrap_or_default();
    let err = err.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok((status, out, err))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_end_is_kept() {
        let big = "x".repeat(100_000) + "\nthe reason";
        let t = super::read(big.as_bytes(), 64);
        assert!(t.len() <= 64 && t.ends_with("the reason"), "{t}");
        let mut c = std::process::Command::new("sh");
        c.args(["-c", "yes | head -c 1000000; echo done >&2; exit 4"]);
        let (st, out, err) = super::run(c, 100).unwrap();
        assert_eq!(st.code(), Some(4));
        assert!(out.len() <= 100);
        assert_eq!(err, "done");
    }
}
