//! Backing up a byte stream (a database dump on a pipe, `--stdin`) as one
//! file of a snapshot.
//!
//! The stream goes through the same walker, seal workers and pack sink as
//! the files of a path backup, and is cut by the repository's
//! content-defined chunker exactly as a file is: a second dump of a
//! database that changed in a few rows stores only the chunks around
//! them. Nothing of the stream is held but the chunker's buffer (twice
//! the largest chunk) and the batches on the bounded channels to the
//! seal workers; what grows with its length is its list of chunk IDs,
//! 32 bytes per chunk (512 KiB on average by default), as for a file.
//!
//! A dump command that fails part-way often still writes a plausible
//! prefix and closes its output: the end of the stream says nothing about
//! whether the dump is whole. So the caller is asked, through `finish`,
//! once the stream has ended and before the snapshot is written; a failure
//! there leaves no snapshot, only data the next run reuses.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_format::Id;
use cairn_format::tree::{Node, NodeType, Time, Tree};
use cairn_repo::Repo;

use crate::exclude::Excluder;
use crate::{Error, Result, StreamFailure};

use super::run::{Described, Run};
use super::walker::{Chunked, Walker};
use super::{BackupOptions, BackupSummary, Progress};

/// Permission bits of the file a stream is stored as: owner only, since a
/// dump usually holds what the database guards, and a restore should not
/// hand it to every local user.
pub const STREAM_MODE: u32 = 0o600;

/// Backs up the bytes of `input`, up to its end, as a snapshot whose root
/// directory holds one regular file, `filename`.
///
/// Of `opts`, the group, tags, host name, command line, compression, pack
/// size, thread count, state directory, `accept_rollback` and `dry_run`
/// apply as in [`super::backup`]; the paths, excludes and files cache do
/// not (a stream has no metadata the cache could trust).
///
/// - `filename` is one path component: not empty, not `.` or `..`, with
///   no `/` or NUL; anything else is refused before anything is read.
/// - The default group is `HOST:stdin:FILENAME`, so each dump a machine
///   makes is its own group for retention, apart from its path backups.
/// - The file has mode [`STREAM_MODE`], this process's uid and gid, and
///   the time the stream ended as its mtime.
/// - The snapshot's body records the path `/FILENAME`, the file's place
///   in the snapshot, as a path backup records its source paths: a
///   restore into `DEST` writes `DEST/FILENAME`.
/// - `finish` is called once, after the end of the stream and before the
///   snapshot is written (also in a dry run); an `Err` from it, a read
///   error or `cancel` make this return [`Error::Stream`] naming
///   `filename`, and no snapshot is written. A caller running a command
///   waits for it in `finish` and reaps it itself on every other outcome.
pub fn backup_stream(
    repo: &mut Repo,
    opts: &BackupOptions,
    input: &mut dyn Read,
    filename: &str,
    finish: &mut dyn FnMut() -> std::result::Result<(), String>,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<BackupSummary> {
    check_name(filename)?;
    let group = opts
        .group
        .clone()
        .unwrap_or_else(|| format!("{}:stdin:{filename}", opts.hostname));
    let mut run = Run::begin(repo, opts, group, progress, cancel)?;
    let no_excludes = Excluder::new(&[], &[], false)?;
    let walked = run
        .pipeline(repo, &no_excludes, None, &[], |w| {
            w.stream(input, filename, finish)
        })
        .map_err(|e| match e {
            Error::Interrupted => failed(filename, StreamFailure::Interrupted),
            e => e,
        })?;
    if opts.dry_run {
        return Ok(run.summary);
    }
    let source = Described {
        vanished: None,
        paths: vec![format!("/{filename}").into_bytes()],
        excludes: Vec::new(),
    };
    run.commit(repo, walked, source)
}

fn failed(name: &str, why: StreamFailure) -> Error {
    Error::Stream {
        name: name.to_string(),
        why,
    }
}

/// Refuses a name that is not one entry of a directory: it becomes the
/// file's name in the root tree, and a restore joins it to its target.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Input(format!(
            "cannot store a stream as {name:?}: give a file name without '/' (not empty, '.' or '..')"
        )));
    }
    Ok(())
}

impl Walker<'_> {
    /// Reads the stream into the root tree's only file.
    fn stream(
        &mut self,
        input: &mut dyn Read,
        name: &str,
        finish: &mut dyn FnMut() -> std::result::Result<(), String>,
    ) -> Result<Id> {
        if let Ok(mut cur) = self.progress.current.lock() {
            cur.clear();
            cur.push_str(name);
        }
        // Hashed by the seal workers, as a large file is: the size is not
        // known in advance, and a dump is usually large; for a small one,
        // waiting for its IDs at the end costs next to nothing.
        let (content, size) = match self.chunk(input, true, None, None)? {
            Chunked::Read { content, size, .. } => (content, size),
            Chunked::Failed(e) => return Err(failed(name, StreamFailure::Read(e))),
        };
        finish().map_err(|m| failed(name, StreamFailure::Producer(m)))?;
        self.summary.new_files += 1;
        self.summary.bytes_read += size;
        self.summary.total_bytes += size;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let time = Time {
            sec: now.as_secs() as i64,
            nsec: now.subsec_nanos(),
        };
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let node = Node {
            name: name.as_bytes().to_vec(),
            kind: Some(NodeType::File),
            mode: STREAM_MODE,
            uid,
            gid,
            user: self.names.user(uid),
            group: self.names.group(gid),
            mtime: time,
            ctime: time,
            size,
            nlink: 1,
            content,
            ..Node::default()
        };
        self.kept += 1;
        self.finish_tree(Tree { nodes: vec![node] })
    }
}

#[cfg(test)]
mod tests;
