//! `cairn mount`: every snapshot of a repository as a read-only
//! filesystem, through FUSE (the `fuser` crate, without libfuse).
//!
//! The view is `snapshots/<time>_<id>/` (each snapshot's tree), plus
//! `groups/<group>/` and `tags/<tag>/` holding links into it
//! ([`layout`]). Nothing is read until asked for: directory listings and
//! file chunks are fetched on demand, authenticated like any restore, and
//! kept in bounded caches ([`cache`]). Inode numbers cost memory per
//! directory visited, not per file ([`inodes`]), so `find` over millions
//! of files stays small.
//!
//! The mount lasts until the process is asked to stop (SIGINT, SIGTERM)
//! or the filesystem is unmounted from outside (`umount`, `fusermount3
//! -u`). A stop that finds the mount in use says so and keeps serving; a
//! second one detaches it lazily, as `umount -l` does.

mod cache;
mod disk;
mod fs;
mod inodes;
pub mod layout;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_repo::{Repo, SnapshotInfo};

pub use fs::Tuning;

/// Why a mount could not be made or did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mount point is unusable; the message says why and what to do.
    #[error("{0}")]
    MountPoint(String),
    /// FUSE is not available here.
    #[error("cannot mount {path}: {source}; {hint}")]
    Fuse {
        /// The mount point.
        path: PathBuf,
        /// What the kernel or fusermount said.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The disk cache could not be opened.
    #[error("cannot use {path} as the mount's disk cache: {source}")]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The FUSE session failed while mounted.
    #[error("the mount at {path} failed: {source}")]
    Session {
        /// The mount point.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Options of a mount.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Let other users than the one mounting use the view (their access is
    /// still checked against each entry's stored owner and mode).
    pub allow_other: bool,
    /// Cache and thread sizes.
    pub tuning: Tuning,
    /// A directory keeping file chunks (sealed, as stored) across reads
    /// and mounts, and the bytes it may hold.
    pub disk_cache: Option<(PathBuf, u64)>,
}

/// Checks that `path` can take a mount: an empty directory with nothing
/// mounted on it.
pub fn check_mount_point(path: &Path) -> Result<(), Error> {
    let md = std::fs::metadata(path).map_err(|e| {
        Error::MountPoint(match e.kind() {
            ErrorKind::NotFound => format!(
                "mount point {} does not exist; create an empty directory there first",
                path.display()
            ),
            _ => format!("cannot use {} as a mount point: {e}", path.display()),
        })
    })?;
    if !md.is_dir() {
        return Err(Error::MountPoint(format!(
            "mount point {} is not a directory; give an empty directory",
            path.display()
        )));
    }
    if is_mount_point(path) {
        return Err(Error::MountPoint(format!(
            "{} is in use: something is already mounted there (see `findmnt {}`); unmount it or give another empty directory",
            path.display(),
            path.display()
        )));
    }
    let mut entries = std::fs::read_dir(path).map_err(|e| {
        Error::MountPoint(format!("cannot read mount point {}: {e}", path.display()))
    })?;
    if entries.next().is_some() {
        return Err(Error::MountPoint(format!(
            "mount point {} is not empty; mounting would hide its files, so give an empty directory",
            path.display()
        )));
    }
    Ok(())
}

/// Whether `path` is the root of a mounted filesystem: its device
/// differs from its parent's, or it is its parent (`/`).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Ok(up)) = (std::fs::metadata(path), std::fs::metadata(path.join(".."))) else {
        return false;
    };
    me.dev() != up.dev() || me.ino() == up.ino()
}

/// Mounts every snapshot in `snapshots` of `repo` at `mountpoint` and
/// serves it until a stop signal or an unmount from outside. `ready` is
/// called once the view is mounted. The repository lives as long as the
/// process: the filesystem's threads read it until the very end.
pub fn mount(
    repo: Repo,
    snapshots: &[SnapshotInfo],
    mountpoint: &Path,
    opts: &Options,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    check_mount_point(mountpoint)?;
    let disk = match &opts.disk_cache {
        Some((dir, limit)) => Some(disk::DiskCache::open(dir, &repo.id_hex(), *limit).map_err(
            |e| Error::Cache {
                path: dir.clone(),
                source: e,
            },
        )?),
        None => None,
    };
    let repo: &'static Repo = Box::leak(Box::new(repo));
    let fs = fs::Fs::new(repo, layout::layout(snapshots), &opts.tuning, disk);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::FSName("cairn".into()),
        fuser::MountOption::Subtype("cairn".into()),
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8),
    );
    config.clone_fd = true;
    // Signals are caught before mounting, so one that arrives early
    // still unmounts.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| Error::Session {
            path: mountpoint.to_path_buf(),
            source: e,
        })?;
    }
    let session = fuser::Session::new(fs, mountpoint, &config).map_err(|e| Error::Fuse {
        path: mountpoint.to_path_buf(),
        hint: if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(rustix::io::Errno::NODEV.raw_os_error()) {
            "FUSE is not available: load the `fuse` kernel module and install fuse3 (`apt install fuse3`), which provides fusermount3"
        } else {
            "mounting needs /dev/fuse and, for a user other than root, fusermount3 (`apt install fuse3`)"
        },
        source: e,
    })?;
    let serving = std::thread::Builder::new()
        .name("cairn-mount".into())
        .spawn(move || session.run())
        .map_err(|e| Error::Session {
            path: mountpoint.to_path_buf(),
            source: e,
        })?;
    ready();
    let mut stops = 0;
    while !serving.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if !stop.swap(false, Ordering::SeqCst) {
            continue;
        }
        stops += 1;
        match unmount(mountpoint, stops > 1) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                eprintln!(
                    "cairn mount: {} is in use (a shell or program has it open: `fuser -vm {}` names them); still mounted. Close them and stop again, or stop once more to detach it lazily",
                    mountpoint.display(),
                    mountpoint.display()
                );
            }
            Err(e) => eprintln!("cairn mount: cannot unmount {}: {e}", mountpoint.display()),
        }
    }
    match serving.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Session {
            path: mountpoint.to_path_buf(),
            source: e,
        }),
        Err(_) => Err(Error::Session {
            path: mountpoint.to_path_buf(),
            source: std::io::Error::other("the filesystem thread panicked"),
        }),
    }
}

/// Unmounts `path` (lazily: detached now, gone once no longer used):
/// directly as root, else through the setuid fusermount3 or fusermount.
fn unmount(path: &Path, lazy: bool) -> std::io::Result<()> {
    let flags = if lazy {
        rustix::mount::UnmountFlags::DETACH
    } else {
        rustix::mount::UnmountFlags::empty()
    };
    match rustix::mount::unmount(path, flags) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) => {
            let mut last = std::io::Error::new(
                ErrorKind::NotFound,
                "neither fusermount3 nor fusermount is installed",
            );
            for tool in ["fusermount3", "fusermount"] {
                let mut cmd = std::process::Command::new(tool);
                cmd.arg(if lazy { "-uz" } else { "-u" }).arg(path);
                match cmd.output() {
                    Ok(o) if o.status.success() => return Ok(()),
                    Ok(o) => {
                        let msg = String::from_utf8_lossy(&o.stderr);
                        return Err(if msg.contains("busy") {
                            std::io::Error::from_raw_os_error(
                                rustix::io::Errno::BUSY.raw_os_error(),
                            )
                        } else {
                            std::io::Error::other(format!("{tool}: {}", msg.trim()))
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => last = e,
                    Err(e) => return Err(e),
                }
            }
            Err(last)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_must_be_empty_directories() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("gone");
        let e = check_mount_point(&gone).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let file = d.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = check_mount_point(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = check_mount_point(d.path()).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        check_mount_point(&empty).unwrap();
        let e = check_mount_point(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("already mounted"), "{e}");
    }
}
