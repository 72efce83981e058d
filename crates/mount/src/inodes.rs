//! Inode numbers for the entries of snapshot trees, without a table entry
//! per file. When a directory's children are first asked for, the
//! directory gets a block of consecutive numbers, one per entry in its
//! listing: child `i` is `base + i`. Blocks are handed out in increasing
//! order, so the directory holding any number is found by a binary search
//! over the blocks. Memory grows with the directories visited, not with
//! the files: `find` over a million files costs a few bytes per directory.
//! Each path gets its own number; a directory met under two parents (the
//! same tree in two snapshots) is two directories to the kernel, which
//! refuses a directory inode with two parents.

use std::collections::HashMap;

use cairn_repo::Id;

/// A directory of a snapshot tree.
#[derive(Clone, Copy, Debug)]
pub struct Dir {
    /// Its listing.
    pub tree: Id,
    /// The directory holding it.
    pub parent: u64,
    /// Inode of its first entry, once numbered.
    pub base: Option<u64>,
    /// The snapshot it belongs to (hard links are only links within one).
    pub snap: u32,
}

/// Where an inode number points inside the trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The directory holding the entry.
    pub dir: u64,
    /// Its position in that directory's listing.
    pub pos: usize,
}

/// The numbering of tree entries from `first` upwards.
pub struct Inodes {
    dirs: HashMap<u64, Dir>,
    /// `(base, directory)`, by base.
    blocks: Vec<(u64, u64)>,
    /// Entries in each block, by the same index.
    lens: Vec<u64>,
    next: u64,
}

impl Inodes {
    /// Numbers from `first` on are free for trees.
    pub fn new(first: u64) -> Self {
        Inodes {
            dirs: HashMap::new(),
            blocks: Vec::new(),
            lens: Vec::new(),
            next: first,
        }
    }

    /// Registers a snapshot's root directory.
    pub fn add_root(&mut self, ino: u64, tree: Id, parent: u64, snap: u32) {
        self.dirs.entry(ino).or_insert(Dir {
            tree,
            parent,
            base: None,
            snap,
        });
    }

    /// Registers directory `ino`, met in its registered parent's listing;
    /// a second call changes nothing.
    pub fn add_dir(&mut self, ino: u64, tree: Id, parent: u64) {
        let Some(snap) = self.dirs.get(&parent).map(|d| d.snap) else {
            return;
        };
        self.dirs.entry(ino).or_insert(Dir {
            tree,
            parent,
            base: None,
            snap,
        });
    }

    /// A registered directory.
    pub fn dir(&self, ino: u64) -> Option<Dir> {
        self.dirs.get(&ino).copied()
    }

    /// The first inode of `dir`'s entries, numbering its `len` entries
    /// now if they were not yet.
    pub fn base(&mut self, dir: u64, len: usize) -> Option<u64> {
        let d = self.dirs.get_mut(&dir)?;
        if let Some(b) = d.base {
            return Some(b);
        }
        let b = self.next;
        // At least one number, so that bases stay distinct.
        self.next += (len as u64).max(1);
        d.base = Some(b);
        self.blocks.push((b, dir));
        self.lens.push(len as u64);
        Some(b)
    }

    /// Which directory entry `ino` is.
    pub fn place(&self, ino: u64) -> Option<Place> {
        let k = self
            .blocks
            .partition_point(|&(b, _)| b <= ino)
            .checked_sub(1)?;
        let (base, dir) = self.blocks[k];
        let pos = ino - base;
        (pos < self.lens[k]).then_some(Place {
            dir,
            pos: pos as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_entries_in_blocks_and_finds_them_again() {
        let mut n = Inodes::new(100);
        n.add_root(10, Id([1; 32]), 2, 0);
        n.add_root(11, Id([2; 32]), 2, 1);
        n.add_root(12, Id([3; 32]), 2, 2);
        assert_eq!(n.base(10, 3), Some(100));
        assert_eq!(n.base(11, 0), Some(103));
        assert_eq!(n.base(12, 2), Some(104));
        assert_eq!(n.base(10, 3), Some(100), "numbered once");
        assert_eq!(n.base(99, 1), None, "unknown directory");
        assert_eq!(n.place(99), None);
        assert_eq!(n.place(100), Some(Place { dir: 10, pos: 0 }));
        assert_eq!(n.place(102), Some(Place { dir: 10, pos: 2 }));
        assert_eq!(n.place(103), None, "the empty directory's spare number");
        assert_eq!(n.place(105), Some(Place { dir: 12, pos: 1 }));
        assert_eq!(n.place(106), None);
        n.add_dir(102, Id([4; 32]), 10);
        n.add_dir(102, Id([5; 32]), 99);
        assert_eq!(n.dir(102).unwrap().tree, Id([4; 32]));
        assert_eq!(n.dir(102).unwrap().parent, 10);
        assert_eq!(n.dir(102).unwrap().snap, 0);
        n.add_dir(200, Id([6; 32]), 99);
        assert!(n.dir(200).is_none(), "unknown parent");
    }
}
