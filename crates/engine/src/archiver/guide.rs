//! Re-reading a changed file along the chunks it had at its last backup.
//!
//! A file that grew at its end or changed in one place (a log, a mailbox,
//! a disk image, a database) is mostly the chunks it had. The walker tries
//! those first: where the next old chunk's bytes are there unchanged (its
//! keyed hash matches), it takes them as one chunk without running the
//! gear hash over them, which is the largest cost of re-reading a large
//! file. Where they are not, it cuts as usual, and goes back to the old
//! chunks as soon as a chunk it cut is one of them.
//!
//! The chunks are exactly those of one pass. A boundary depends only on
//! the bytes since the previous boundary; every chunk taken starts at a
//! boundary, and its bytes are those that ended at a boundary last time,
//! so a pass would cut it there too. The one exception is the old last
//! chunk, which ended where the file ended, not where its bytes said: it
//! is always cut again.

use std::collections::HashMap;
use std::io::Read;

use cairn_chunker::StreamChunker;
use cairn_format::Id;
use cairn_repo::Repo;

/// Chunks cut in a row without meeting an old one before the guide is
/// dropped: the file was rewritten, and the usual path (hashing on the
/// seal workers, the helper cutting ahead) is faster.
const MISSES: u32 = 16;

/// The chunks a file had, and where the walk is among them.
pub(super) struct Guide {
    old: Vec<Id>,
    /// Where each old chunk first appears.
    at: HashMap<Id, usize>,
    /// The old chunk expected at the current position, if any.
    next: Option<usize>,
    misses: u32,
    max: usize,
}

impl Guide {
    /// A guide along `old`, for a cutter whose chunks are at most `max`
    /// bytes; none for a file of one chunk (that chunk is its last).
    pub(super) fn new(old: &[Id], max: usize) -> Option<Guide> {
        if old.len() < 2 {
            return None;
        }
        let mut at = HashMap::with_capacity(old.len());
        for (i, id) in old.iter().enumerate() {
            at.entry(*id).or_insert(i);
        }
        Some(Guide {
            old: old.to_vec(),
            at,
            next: Some(0),
            misses: 0,
            max,
        })
    }

    /// The old chunk at the current position, as its ID and length, when
    /// its bytes are there unchanged; `None`: cut here. The bytes are left
    /// in `chunker` for the caller to take.
    pub(super) fn try_next<R: Read>(
        &mut self,
        chunker: &mut StreamChunker<'_, R>,
        repo: &Repo,
    ) -> std::io::Result<Option<(Id, usize)>> {
        let Some(j) = self.next.take() else {
            return Ok(None);
        };
        if j + 1 >= self.old.len() {
            return Ok(None);
        }
        let id = self.old[j];
        // The length comes from the index, and is only trusted as far as
        // the hash of that many bytes matches.
        let Some(len) = repo
            .index()
            .get_live(&id)
            .map(|l| l.raw_len as usize)
            .filter(|&n| n > 0 && n <= self.max)
        else {
            return Ok(None);
        };
        let bytes = chunker.peek(len)?;
        if bytes.len() != len || repo.blob_id(bytes) != id {
            return Ok(None);
        }
        self.next = Some(j + 1);
        Ok(Some((id, len)))
    }

    /// A chunk with ID `id` was cut at the current position: whether to
    /// go on following the guide.
    pub(super) fn resync(&mut self, id: &Id) -> bool {
        match self.at.get(id) {
            Some(&j) => {
                self.next = Some(j + 1);
                self.misses = 0;
                true
            }
            None => {
                self.misses += 1;
                self.misses < MISSES
            }
        }
    }
}
