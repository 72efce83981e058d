//! Is the machine of a pull job there? A TCP connection to its SSH port,
//! answered within a few seconds, is the cheap test BackupPC's ping was;
//! the run itself finds out the rest.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::Pull;

/// How long a probe waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The host and port `ssh` would connect to for this job.
pub fn target(p: &Pull) -> (String, u16) {
    let host = p.ssh.rsplit_once('@').map_or(p.ssh.as_str(), |(_, h)| h);
    let mut port = 22;
    let mut words = p.ssh_command.iter();
    while let Some(w) = words.next() {
        if w == "-p" {
            if let Some(v) = words.next().and_then(|v| v.parse().ok()) {
                port = v;
            }
        } else if let Some(v) = w.strip_prefix("-p").and_then(|v| v.parse().ok()) {
            port = v;
        }
    }
    (host.to_string(), port)
}

/// Whether the machine answers on its SSH port now.
pub fn reachable(p: &Pull) -> bool {
    let (host, port) = target(p);
    let Ok(addrs) = (host.as_str(), port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, TIMEOUT).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_ssh_options() {
        let mut p = Pull {
            ssh: "backup@laptop.lan".into(),
            ssh_command: vec![
                "ssh".into(),
                "-i".into(),
                "k".into(),
                "-p".into(),
                "2222".into(),
            ],
            ..Pull::default()
        };
        assert_eq!(target(&p), ("laptop.lan".into(), 2222));
        p.ssh_command = vec!["ssh".into(), "-p2200".into()];
        assert_eq!(target(&p), ("laptop.lan".into(), 2200));
        p.ssh = "nas".into();
        p.ssh_command = vec!["ssh".into()];
        assert_eq!(target(&p), ("nas".into(), 22));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        p.ssh = "u@127.0.0.1".into();
        p.ssh_command = vec![
            "ssh".into(),
            "-p".into(),
            l.local_addr().unwrap().port().to_string(),
        ];
        assert!(reachable(&p));
        drop(l);
        assert!(!reachable(&p));
    }
}
