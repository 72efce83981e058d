//! A whole machine onto a new disk: this machine's own system directories
//! backed up with `--one-file-system`, restored into a fresh ext4 on a loop
//! device, and the restored system checked from inside with `chroot`:
//! `dpkg --verify` says there what it says on the machine itself, and its
//! programs run. The CI-sized variant takes the directories `dpkg`, its
//! libraries and the common programs live in; `bench/whole-machine.sh`
//! does all of `/`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::*;

/// The system directories backed up, and the `/bin`-style links to them.
const ROOTS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/etc",
    "/var/lib/dpkg",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
];

/// Paths inside what was backed up, as `dpkg --verify` names them
/// (through the merged-`/usr` links too).
const INSIDE: &[&str] = &[
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/lib/x86_64-linux-gnu/",
    "/usr/lib64/",
    "/etc/",
    "/var/lib/dpkg/",
    "/bin/",
    "/sbin/",
    "/lib/x86_64-linux-gnu/",
    "/lib64/",
];

/// `dpkg --verify` run at `root` (through chroot unless it is `/`): how
/// many lines it printed, and those about paths inside what was backed
/// up, sorted.
fn dpkg_verify(root: &Path) -> (usize, Vec<String>) {
    let out = if root == Path::new("/") {
        Command::new("dpkg").arg("--verify").output().unwrap()
    } else {
        Command::new("chroot")
            .arg(root)
            .args(["/usr/bin/dpkg", "--verify"])
            .output()
            .unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some(),
        "dpkg --verify at {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            l.rsplit(' ')
                .next()
                .is_some_and(|p| INSIDE.iter().any(|r| p.starts_with(r)))
        })
        .map(String::from)
        .collect();
    lines.sort();
    (text.lines().count(), lines)
}

fn verify_restore(src: &Path, dst: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/verify-restore.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify-restore.py {} {}:\n{}{}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The capability `cap_net_raw+ep` as `security.capability` holds it
/// (`vfs_cap_data`, revision 2).
const CAP_NET_RAW_EP: &str = "0x0100000200200000000000000000000000000000";

#[test]
fn whole_machine_restored_to_a_new_disk_verifies_and_runs() {
    if !is_root() {
        cannot_run("restoring a system needs root (owners, devices, mount, chroot)");
    }
    for tool in [
        "dpkg",
        "chroot",
        "mkfs.ext4",
        "mount",
        "python3",
        "setfattr",
        "getfattr",
    ] {
        if !have(tool) {
            cannot_run(&format!("{tool} is missing"));
        }
    }
    let env = Env::new();
    // Beside the system, what a system also holds and these directories
    // may lack: a file capability, ACLs, a device node, a sparse file.
    let extra = env.path("extra");
    rich_source(&extra);
    let cap = extra.join("pinger");
    fs::write(&cap, b"#!/bin/sh\n").unwrap();
    let set = Command::new("setfattr")
        .args(["-n", "security.capability", "-v", CAP_NET_RAW_EP, s(&cap)])
        .output()
        .unwrap();
    if !set.status.success() {
        cannot_run(&format!(
            "file capabilities: {}",
            String::from_utf8_lossy(&set.stderr)
        ));
    }
    env.ok(&["init"]);
    let mut args = vec!["backup", "--one-file-system"];
    args.extend(ROOTS);
    args.push(s(&extra));
    env.ok(&args);
    let (_, before) = dpkg_verify(Path::new("/"));

    let disk = LoopDisk::new(env.dir.path(), "3G");
    let out = env.ok(&["restore", "latest", s(&disk.mnt)]);
    assert!(!out.contains("not restored"), "{out}");

    // From inside: dpkg finds what it finds on this machine, and the
    // restored programs run on the restored libraries.
    let (all, after) = dpkg_verify(&disk.mnt);
    // It did check: the packages' files outside what was backed up (their
    // documentation, say) are missing there.
    assert!(
        all > after.len(),
        "dpkg --verify in the chroot checked nothing"
    );
    assert_eq!(
        before, after,
        "dpkg --verify differs inside the restored system"
    );
    let run = |args: &[&str]| {
        let mut all = vec![s(&disk.mnt)];
        all.extend(args);
        command_out("chroot", &all)
    };
    assert!(run(&["/usr/bin/ls", "/usr"]).contains("bin"));
    assert!(run(&["/usr/bin/dpkg", "-s", "coreutils"]).contains("install ok installed"));
    assert_eq!(run(&["/bin/sh", "-c", "echo restored"]), "restored\n");
    assert!(run(&["/usr/bin/tar", "--version"]).contains("GNU tar"));

    // Every byte and attribute, as the bench's verifier sees them (not
    // /etc, which other tests running at the same time may change).
    for dir in [
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib/x86_64-linux-gnu",
        "/var/lib/dpkg",
    ] {
        verify_restore(Path::new(dir), &restored(&disk.mnt, Path::new(dir)));
    }
    let extra_back = restored(&disk.mnt, &extra);
    verify_restore(&extra, &extra_back);
    let diffs = compare_trees(&extra, &extra_back, true);
    assert!(diffs.is_empty(), "{diffs:#?}");
    let getcap = |p: &Path| {
        let out = Command::new("getfattr")
            .args([
                "-n",
                "security.capability",
                "-e",
                "hex",
                "--absolute-names",
                s(p),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(getcap(&extra_back.join("pinger")), getcap(&cap));
    assert!(getcap(&cap).contains(&CAP_NET_RAW_EP[2..]));
    // The merged-/usr links came back as links.
    for l in ["/bin", "/sbin", "/lib", "/lib64"] {
        let (a, b) = (
            fs::read_link(l).ok(),
            fs::read_link(restored(&disk.mnt, Path::new(l))).ok(),
        );
        assert_eq!(a, b, "{l}");
    }
}
