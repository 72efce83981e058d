//! `dist/systemd/`: the unit files keep their hardening, start `cairn
//! daemon`, put the daemon's defaults where systemd made directories for
//! them, pass `systemd-analyze verify`, and the example config checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Env, cannot_run, have, s};

fn dist(p: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/systemd")).join(p)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A unit file as systemd reads it: section, key, and every value the key
/// was given in that section (comments and blank lines dropped).
type Unit = BTreeMap<(String, String), Vec<String>>;

fn parse(p: &Path) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for (n, line) in read(p).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "{}:{}: no continuation lines, please",
            p.display(),
            n + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not key=value: {line}", p.display(), n + 1));
        assert!(
            !section.is_empty(),
            "{}:{}: outside a section",
            p.display(),
            n + 1
        );
        unit.entry((section.clone(), k.trim().to_string()))
            .or_default()
            .push(v.trim().to_string());
    }
    unit
}

/// The one value of `key` in `[section]`.
fn one<'a>(u: &'a Unit, section: &str, key: &str) -> &'a str {
    match u.get(&(section.to_string(), key.to_string())) {
        Some(v) if v.len() == 1 => &v[0],
        Some(v) => panic!("[{section}] {key}= is set {} times", v.len()),
        None => panic!("[{section}] has no {key}="),
    }
}

/// `Environment=` assignments, all lines together.
fn environment(u: &Unit) -> BTreeMap<String, String> {
    u.get(&("Service".to_string(), "Environment".to_string()))
        .into_iter()
        .flatten()
        .flat_map(|l| l.split_whitespace())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Settings both units must keep: the ones that work without a mount
/// namespace, so a user manager can enforce them too.
const BOTH: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
    ("UMask", "0077"),
    ("KillSignal", "SIGTERM"),
    ("TimeoutStopSec", "5min"),
    ("Restart", "on-failure"),
    ("ExecReload", "/bin/kill -HUP $MAINPID"),
];

/// What the system unit adds: a read-only machine, no devices, no kernel
/// knobs, one capability.
const SYSTEM: &[(&str, &str)] = &[
    ("User", "cairn"),
    ("Group", "cairn"),
    ("AmbientCapabilities", "CAP_DAC_READ_SEARCH"),
    ("CapabilityBoundingSet", "CAP_DAC_READ_SEARCH"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "read-only"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("StateDirectory", "cairn"),
    ("CacheDirectory", "cairn"),
    ("ConfigurationDirectory", "cairn"),
];

#[test]
fn the_system_unit_is_hardened_and_runs_the_daemon() {
    let file = dist("cairn-daemon.service");
    let u = parse(&file);
    for (k, v) in BOTH.iter().chain(SYSTEM) {
        assert_eq!(one(&u, "Service", k), *v, "{}: {k}=", file.display());
    }
    assert_eq!(
        one(&u, "Service", "ExecStart"),
        "/usr/local/bin/cairn daemon"
    );
    assert_eq!(one(&u, "Install", "WantedBy"), "multi-user.target");
    // Where the repositories go is the one thing to fill in; say so.
    assert!(
        read(&file).contains("#ReadWritePaths="),
        "{}: a commented ReadWritePaths= line for the repositories",
        file.display()
    );

    // The daemon's defaults ($XDG_*_HOME/cairn) land in the directories
    // systemd creates for the unit, and the example config's state
    // directory is the one a non-root daemon would pick anyway.
    let env = environment(&u);
    for (var, dir, setting) in [
        ("XDG_STATE_HOME", "/var/lib", "StateDirectory"),
        ("XDG_CACHE_HOME", "/var/cache", "CacheDirectory"),
        ("XDG_CONFIG_HOME", "/etc", "ConfigurationDirectory"),
    ] {
        assert_eq!(env.get(var).map(String::as_str), Some(dir), "{var}");
        assert_eq!(one(&u, "Service", setting), "cairn");
    }
    let example = read(&dist("cairn.toml.example"));
    let state = format!("state = \"{}/cairn/daemon\"", env["XDG_STATE_HOME"]);
    assert!(
        example.lines().any(|l| l.trim_start().starts_with(&state)),
        "cairn.toml.example sets {state}"
    );
}

/// The forge-mirroring unit: the system unit's sandbox without its one
/// capability, running the git jobs of its own config.
#[test]
fn the_git_unit_runs_without_capabilities() {
    let file = dist("cairn-git.service");
    let u = parse(&file);
    for (k, v) in BOTH.iter().chain(SYSTEM) {
        let want = match *k {
            "AmbientCapabilities" | "CapabilityBoundingSet" => "",
            "ProtectHome" => "yes",
            _ => v,
        };
        assert_eq!(one(&u, "Service", k), want, "{}: {k}=", file.display());
    }
    assert_eq!(
        one(&u, "Service", "ExecStart"),
        "/usr/local/bin/cairn daemon --config /etc/cairn/git.toml"
    );
    checks("git.toml.example", "ok: 1 repositories, 1 jobs");
}

#[test]
fn the_user_unit_runs_the_daemon_as_its_user() {
    let file = dist("user/cairn-daemon.service");
    let u = parse(&file);
    for (k, v) in BOTH {
        assert_eq!(one(&u, "Service", k), *v, "{}: {k}=", file.display());
    }
    let exec = one(&u, "Service", "ExecStart");
    assert!(exec.contains("cairn daemon"), "ExecStart={exec}");
    assert!(
        exec.contains("%h/.config/cairn/cairn.toml"),
        "ExecStart={exec}"
    );
    assert_eq!(one(&u, "Install", "WantedBy"), "default.target");
    // A user manager cannot switch users, and without a mount namespace
    // these would stop the unit from starting.
    for k in [
        "User",
        "Group",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
    ] {
        assert!(
            !u.contains_key(&("Service".to_string(), k.to_string())),
            "{}: {k}= has no place in a user unit",
            file.display()
        );
    }
}

#[test]
fn the_example_config_checks() {
    checks("cairn.toml.example", "ok: 2 repositories, 6 jobs");
}

/// `cairn daemon --check-config` on an example of dist/systemd/ passes
/// and says `summary`.
fn checks(example: &str, summary: &str) {
    let env = Env::new();
    let mut c = env.cmd();
    c.args(["daemon", "--check-config", "--config", s(&dist(example))]);
    let out = crate::util::run(c).expect(0);
    assert!(out.stdout.contains(summary), "{example}: {}", out.stdout);
}

/// `systemd-analyze verify` on both units, with `ExecStart=` pointed at
/// the binary under test (verify wants it to exist): unknown keys, bad
/// values and misspelt sections are all reported on stderr.
#[test]
fn systemd_analyze_verifies_the_units() {
    if !have("systemd-analyze") {
        cannot_run("systemd-analyze is not installed (Debian package systemd)");
    }
    let env = Env::new();
    let runtime = env.path("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    for (unit, user) in [
        ("cairn-daemon.service", false),
        ("cairn-git.service", false),
        ("user/cairn-daemon.service", true),
    ] {
        let text = read(&dist(unit)).replace("/usr/local/bin/cairn", env!("CARGO_BIN_EXE_cairn"));
        let dir = env.path(if user { "user" } else { "system" });
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join(Path::new(unit).file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        let mut c = Command::new("systemd-analyze");
        c.env("XDG_RUNTIME_DIR", &runtime);
        if user {
            c.arg("--user");
        }
        c.args(["verify", "--man=no", s(&copy)]);
        let out = crate::util::run(c).expect(0);
        assert!(
            out.stderr.trim().is_empty() && out.stdout.trim().is_empty(),
            "{unit}: systemd-analyze verify says:\n{}{}",
            out.stdout,
            out.stderr
        );
    }
}
