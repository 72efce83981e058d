//! Reading and applying full file metadata.
//!
//! Captured per entry: type, permission bits (with setuid, setgid,
//! sticky), numeric owner and group plus their names, nanosecond mtime and
//! ctime, size, every extended attribute (POSIX ACLs are the
//! `system.posix_acl_*` attributes, so they ride along), symlink target,
//! device number, and hardlink identity. The access time is not recorded:
//! it changes whenever a file is read, which would make every tree differ
//! from the last backup and defeat tree deduplication.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cairn_format::tree::{Node, NodeType, Time};
use rustix::fs::{AtFlags, CWD, Mode, Timespec, Timestamps, XattrFlags};

/// Caches uid/gid to name lookups: a home directory has one owner, and NSS
/// lookups are slow.
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    /// Name of a user ID, if it resolves.
    pub fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned())
            })
            .clone()
    }
    /// Name of a group ID, if it resolves.
    pub fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                uzers::get_group_by_gid(gid).map(|g| g.name().to_string_lossy().into_owned())
            })
            .clone()
    }
}

/// The node type of a file type.
pub fn node_type(md: &Metadata) -> NodeType {
    let ft = md.file_type();
    if ft.is_dir() {
        NodeType::Dir
    } else if ft.is_symlink() {
        NodeType::Symlink
    } else if ft.is_fifo() {
        NodeType::Fifo
    } else if ft.is_char_device() {
        NodeType::CharDev
    } else if ft.is_block_device() {
        NodeType::BlockDev
    } else if ft.is_socket() {
        NodeType::Socket
    } else {
        NodeType::File
    }
}

/// Builds a node (without content or subtree) from `lstat` data.
pub fn capture(path: &Path, name: &[u8], md: &Metadata, names: &mut Names) -> io::Result<Node> {
    capture_with(path, name, md, names, true)
}

/// [`capture`], reading the extended attributes only if `xattrs`: the
/// caller knows the entry has none (the files cache saw none, and its
/// ctime has not moved since), and a listing by path is a walk of every
/// component.
pub fn capture_with(
    path: &Path,
    name: &[u8],
    md: &Metadata,
    names: &mut Names,
    xattrs: bool,
) -> io::Result<Node> {
    let kind = node_type(md);
    let mut n = Node {
        name: name.to_vec(),
        kind: Some(kind),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: names.user(md.uid()),
        group: names.group(md.gid()),
        mtime: Time {
            sec: md.mtime(),
            nsec: md.mtime_nsec() as u32,
        },
        ctime: Time {
            sec: md.ctime(),
            nsec: md.ctime_nsec() as u32,
        },
        nlink: md.nlink(),
        ..Node::default()
    };
    match kind {
        NodeType::File => {
            n.size = md.size();
            if md.nlink() > 1 {
                n.link = Some((md.dev(), md.ino()));
            }
        }
        NodeType::Symlink => {
            n.target = Some(
                std::fs::read_link(path)?
                    .into_os_string()
                    .into_encoded_bytes(),
            );
            n.size = md.size();
        }
        NodeType::CharDev | NodeType::BlockDev => n.rdev = md.rdev(),
        _ => {}
    }
    if xattrs {
        n.xattrs = read_xattrs(path)?;
    }
    Ok(n)
}

/// Reads every extended attribute of `path` (not following symlinks).
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(Vec::new()),
        Ok(s) => s,
        Err(e) if unsupported(e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut list = vec![0u8; size + 64];
    let n = match rustix::fs::llistxattr(path, &mut list[..]) {
        Ok(n) => n,
        Err(e) if unsupported(e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    list.truncate(n);
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let oname = OsStr::from_bytes(name);
        let vsize = match rustix::fs::lgetxattr_query(path, oname) {
            Ok(s) => s,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut v = vec![0u8; vsize];
        let got = rustix::fs::lgetxattr(path, oname, &mut v[..])?;
        v.truncate(got);
        out.push((name.to_vec(), v));
    }
    out.sort();
    Ok(out)
}

fn unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::OPNOTSUPP
}

/// What could not be applied to a restored entry.
#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyOutcome {
    /// Owner or group could not be set (not root).
    pub owner_failed: bool,
    /// Some extended attribute could not be set.
    pub xattr_failed: bool,
}

/// Applies owner, xattrs, mode and times to a restored entry. Order
/// matters: chown clears setuid bits, so mode comes after it; xattrs come
/// before the mode because writing them needs write permission on a
/// read-only file when not root; times come last.
pub fn apply(path: &Path, n: &Node, as_root: bool) -> io::Result<ApplyOutcome> {
    let mut out = ApplyOutcome::default();
    let kind = n.node_type();
    let uid = rustix::fs::Uid::from_raw(n.uid);
    let gid = rustix::fs::Gid::from_raw(n.gid);
    match rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(()) => {}
        Err(rustix::io::Errno::PERM) if !as_root => {
            // Without root we can still keep the group if we belong to it.
            out.owner_failed = true;
            let _ = rustix::fs::chownat(CWD, path, None, Some(gid), AtFlags::SYMLINK_NOFOLLOW);
        }
        Err(e) => return Err(e.into()),
    }
    for (k, v) in &n.xattrs {
        if let Err(e) = rustix::fs::lsetxattr(path, OsStr::from_bytes(k), v, XattrFlags::empty()) {
            if e == rustix::io::Errno::PERM
                || e == rustix::io::Errno::ACCESS
                || unsupported(e)
                || kind == NodeType::Symlink
            {
                out.xattr_failed = true;
            } else {
                return Err(e.into());
            }
        }
    }
    if kind != NodeType::Symlink {
        rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(n.mode), AtFlags::empty())?;
    }
    set_times(path, n)?;
    Ok(out)
}

/// [`apply`] for a regular file that is open for writing: the same steps
/// through the descriptor, which spares the kernel resolving a long path
/// four times per file (a restore of many small files is mostly this).
/// `mode_set`: the file was created with its mode, which is not set
/// again.
pub fn apply_file(
    f: &std::fs::File,
    n: &Node,
    as_root: bool,
    mode_set: bool,
) -> io::Result<ApplyOutcome> {
    let mut out = ApplyOutcome::default();
    let uid = rustix::fs::Uid::from_raw(n.uid);
    let gid = rustix::fs::Gid::from_raw(n.gid);
    let me = (rustix::process::geteuid(), rustix::process::getegid());
    if me != (uid, gid) {
        match rustix::fs::fchown(f, Some(uid), Some(gid)) {
            Ok(()) => {}
            Err(rustix::io::Errno::PERM) if !as_root => {
                out.owner_failed = true;
                let _ = rustix::fs::fchown(f, None, Some(gid));
            }
            Err(e) => return Err(e.into()),
        }
    }
    for (k, v) in &n.xattrs {
        if let Err(e) = rustix::fs::fsetxattr(f, OsStr::from_bytes(k), v, XattrFlags::empty()) {
            if e == rustix::io::Errno::PERM || e == rustix::io::Errno::ACCESS || unsupported(e) {
                out.xattr_failed = true;
            } else {
                return Err(e.into());
            }
        }
    }
    if !mode_set {
        rustix::fs::fchmod(f, Mode::from_raw_mode(n.mode))?;
    }
    let t = Timespec {
        tv_sec: n.mtime.sec,
        tv_nsec: i64::from(n.mtime.nsec) as _,
    };
    rustix::fs::futimens(
        f,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )?;
    Ok(out)
}

/// The process's umask, from `/proc/self/status` (reading it through
/// `umask(2)` means setting it, which other threads would see).
pub fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(v.trim(), 8).ok()
}

/// Whether directory `d` has a default ACL (its new files take their
/// mode from it rather than from the umask). Unknown counts as yes.
pub fn has_default_acl(d: &Path) -> bool {
    match rustix::fs::getxattr(d, "system.posix_acl_default", &mut [0u8; 0][..]) {
        Ok(_) => true,
        Err(e) => !(e == rustix::io::Errno::NODATA || unsupported(e)),
    }
}

/// Sets mtime (and atime to the same value) without following symlinks.
pub fn set_times(path: &Path, n: &Node) -> io::Result<()> {
    let t = Timespec {
        tv_sec: n.mtime.sec,
        tv_nsec: i64::from(n.mtime.nsec) as _,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Creates a FIFO or device node.
pub fn make_special(path: &Path, n: &Node) -> io::Result<()> {
    use rustix::fs::FileType;
    let ft = match n.node_type() {
        NodeType::Fifo => FileType::Fifo,
        NodeType::CharDev => FileType::CharacterDevice,
        NodeType::BlockDev => FileType::BlockDevice,
        _ => return Ok(()),
    };
    rustix::fs::mknodat(
        CWD,
        path,
        ft,
        Mode::from_raw_mode(n.mode & 0o777),
        n.rdev as _,
    )?;
    Ok(())
}

/// Whether this process is root (owners can be restored).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
