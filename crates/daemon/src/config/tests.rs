use super::*;

/// The example the README shows, with the `usb` repository it refers to.
pub(crate) const EXAMPLE: &str = r#"
[repository.nas]
path = "/mnt/backup/cairn"        # or url = "https://box:8443/home" / "ssh://backup@nas/srv/cairn" / "s3://bucket/prefix"
password_file = "/etc/cairn/passphrase"   # or key_file; token_file, server_fingerprint for https
require_mount = true              # refuse when /mnt/backup is not a mounted filesystem; never init there

[repository.usb]
path = "/media/usb/cairn"
password_file = "/etc/cairn/passphrase"
require_mount = "/media/usb"

[[job]]
name = "home"
kind = "backup"
repository = "nas"
paths = ["/home/me"]
exclude = ["/home/me/.cache"]
every = "1h"
keep = { hourly = 24, daily = 7, weekly = 4 }   # applied after a successful run where the key allows it
max_vanished = "20%"             # shrink guard, see below
before = ["btrfs", "subvolume", "snapshot", "-r", "/home", "/home/.snap"]   # hooks: before, after, on_failure

[[job]]
name = "laptop"
kind = "pull"                     # run on the box: back up a machine that comes and goes
repository = "nas"
ssh = "backup@laptop.lan"         # ssh destination; ssh_command = "ssh -i KEY -p 22" optional
remote_cairn = "cairn"            # the binary on the laptop (default "cairn")
remote_key_file = "/home/me/.config/cairn/put.key"   # the laptop's put-only key
paths = ["/home/me"]
every = "1d"
when = "reachable"
probe_every = "5m"
blackout = "Mon..Fri 08:00-18:00"

[[job]]
name = "db"
kind = "command"                  # stdout of a command stored as a file
command = ["pg_dump", "shop"]
filename = "shop.sql"
repository = "nas"
at = "02:30"

[[job]]
name = "usb"
kind = "backup"
repository = "usb"                # a [repository.usb] on an external disk
paths = ["/srv/dropbox"]
when = "mounted"                  # run when the repository's disk appears

[[job]]
name = "drill"
kind = "drill"                    # restore drill
repository = "nas"
group = "*"
every = "1w"
sample = { files = 50, bytes = "512MiB" }

[[notify]]
kind = "ntfy"                     # also "webhook", "email", "healthchecks", "command"
url = "https://ntfy.example.org/backups"
"#;

fn parse(t: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("cairn.toml"), t)
}

fn problems(t: &str) -> Vec<Problem> {
    match parse(t) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted:\n{t}"),
    }
}

#[test]
fn the_readme_example_parses() {
    let c = parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.repositories.len(), 2);
    assert_eq!(
        c.repositories["nas"].require_mount,
        Some(MountRule::NotRoot)
    );
    assert_eq!(
        c.repositories["usb"].require_mount,
        Some(MountRule::At("/media/usb".into()))
    );
    let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["home", "laptop", "db", "usb", "drill"]);
    let home = &c.jobs[0];
    assert_eq!(home.schedule.every, Some(Duration::from_secs(3600)));
    assert_eq!(home.keep.as_ref().unwrap().hourly, Some(24));
    assert_eq!(home.hooks.before[0][0], "btrfs");
    let Kind::Backup(b) = &home.kind else {
        panic!()
    };
    assert_eq!(b.max_vanished, Some(0.2));
    let Kind::Pull(pull) = &c.jobs[1].kind else {
        panic!()
    };
    assert_eq!(pull.ssh, "backup@laptop.lan");
    assert_eq!(c.jobs[1].schedule.probe_every, Duration::from_secs(300));
    assert_eq!(c.jobs[1].schedule.when, When::Reachable);
    assert_eq!(c.jobs[1].schedule.blackout.len(), 1);
    assert_eq!(c.jobs[2].schedule.at.len(), 1);
    assert_eq!(c.jobs[3].schedule.when, When::Mounted);
    let Kind::Drill { files, bytes, .. } = &c.jobs[4].kind else {
        panic!()
    };
    assert_eq!((*files, *bytes), (50, 512 << 20));
    assert_eq!(c.notify[0].kind, NotifyKind::Ntfy);
}

#[test]
fn every_mistake_is_named_with_its_place() {
    let t = r#"[repository.nas]
path = "/srv/nas"

[[job]]
name = "home"
kind = "backup"
repository = "nas"
paths = ["/home"]
every = "5x"
max_vanshed = "20%"

[[job]]
name = "db"
kind = "comand"
repository = "nas"
every = "1d"

[[job]]
name = "x"
kind = "prune"
repository = "nope"
paths = ["/a"]
at = "25:00"
"#;
    let p = problems(t);
    let text: Vec<String> = p
        .iter()
        .map(|p| format!("{}:{} {}", p.line, p.column, p.message))
        .collect();
    let all = text.join("\n");
    // The unknown key stops that job's other checks; the rest are found.
    assert!(
        all.contains("10:1 ") && all.contains("max_vanshed"),
        "{all}"
    );
    assert!(
        all.contains("14:8 ") && all.contains("accepted: backup, pull"),
        "{all}"
    );
    assert!(all.contains("did you mean `max_vanished`?"), "{all}");
    assert!(
        all.contains("21:14 ") && all.contains("no [repository.nope]"),
        "{all}"
    );
    assert!(
        all.contains("22:9 ") && all.contains("`paths` does not apply to kind = \"prune\""),
        "{all}"
    );
    assert!(
        all.contains("23:6 ") && all.contains("\"25:00\" is not a time like 02:30"),
        "{all}"
    );
    assert!(!all.contains("say when it runs"), "{all}");
    // Rendered as FILE:LINE:COLUMN: message, one per line.
    let rendered = parse(t).unwrap_err().to_string();
    assert!(
        rendered.lines().all(|l| l.starts_with("cairn.toml:")),
        "{rendered}"
    );
    assert_eq!(rendered.lines().count(), p.len());
}

#[test]
fn values_name_what_is_accepted() {
    let base = "[repository.r]\npath = \"/r\"\n[[job]]\nname = \"j\"\nkind = \"backup\"\nrepository = \"r\"\npaths = [\"/a\"]\n";
    let cases = [
        ("every = \"soon\"", "write e.g. 90s, 5m"),
        (
            "every = \"1h\"\nwhen = \"sometimes\"",
            "accepted: \"reachable\"",
        ),
        ("every = \"1h\"\nmax_vanished = \"lots\"", "or \"off\""),
        ("every = \"1h\"\nkeep = { daily = 0 }", "keep:"),
        ("every = \"1h\"\nkeep = { dayly = 3 }", "dayly"),
        ("every = \"1h\"\nblackout = \"weekdays\"", "not a window"),
        ("every = \"1h\"\nbefore = \"echo hi\"", "list of words"),
        ("every = \"1h\"\ncompression = 30", "zstd level"),
        ("", "say when it runs"),
        ("every = \"1h\"\nat = \"02:00\"", "not both"),
    ];
    for (extra, want) in cases {
        let t = format!("{base}{extra}\n");
        let all: Vec<String> = problems(&t).into_iter().map(|p| p.message).collect();
        assert!(
            all.iter().any(|m| m.contains(want)),
            "{extra:?}: wanted {want:?} in {all:?}"
        );
    }
    let p = problems("surprise = 1\n[daemon]\nlisten = \"everywhere\"\n");
    assert_eq!((p[0].line, p[0].column), (1, 1));
    assert!(p[0].message.contains("unknown key \"surprise\""));
    assert!(p[1].message.contains("not an address"));
    let p = problems("[repository.r]\nurl = \"ftp://x\"\n");
    assert!(p[0].message.contains("accepted are https://"));
    let p = problems("[repository.r]\npath = \"/r\"\n[[notify]]\nkind = \"pager\"\n");
    assert!(
        p[0].message.contains("pager") && p[0].message.contains("webhook"),
        "{p:?}"
    );
    let p = problems("x = [1,\n");
    assert_eq!(p[0].line, 1, "{p:?}");
}

#[test]
fn schedules_read_minutes_as_minutes() {
    assert_eq!(interval("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(interval("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(interval("90min"), Ok(Duration::from_secs(5400)));
    assert_eq!(interval("daily"), Ok(Duration::from_secs(86_400)));
    assert!(interval("5 parsecs").is_err());
}
