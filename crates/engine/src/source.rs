//! Reading a source file without reading its holes.
//!
//! A sparse disk image of 1 TiB with 4 MiB allocated reads, through
//! `read(2)`, as a terabyte of zeros that the kernel materialises page by
//! page. For files with fewer allocated blocks than their size, this
//! reader asks the filesystem where data lies (`SEEK_DATA`/`SEEK_HOLE`)
//! and produces the zeros of each hole itself. The byte stream is the
//! same either way, so chunk cut points and IDs do not depend on how the
//! file was read.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};

use rustix::fs::SeekFrom;

/// A regular file opened for backup.
pub struct SourceFile {
    file: File,
    pos: u64,
    /// Size when opened; a hole reaching past it is cut here.
    size: u64,
    /// `pos..data_end` is known data.
    data_end: u64,
    /// `pos..hole_end` is a known hole.
    hole_end: u64,
    sparse: bool,
}

impl SourceFile {
    /// Wraps `file`, whose `lstat` data is `md`.
    pub fn new(file: File, md: &Metadata) -> Self {
        SourceFile {
            file,
            pos: 0,
            size: md.size(),
            data_end: 0,
            hole_end: 0,
            sparse: md.blocks().saturating_mul(512) < md.size(),
        }
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Finds what lies at `pos`: sets `hole_end` or `data_end`.
    fn locate(&mut self) {
        match rustix::fs::seek(&self.file, SeekFrom::Data(self.pos)) {
            // A hole; one that starts past the size seen at open (the
            // file grew) is read plainly.
            Ok(d) if d > self.pos && self.pos < self.size => self.hole_end = d.min(self.size),
            Ok(d) if d > self.pos => self.data_end = u64::MAX,
            Ok(_) => {
                self.data_end = match rustix::fs::seek(&self.file, SeekFrom::Hole(self.pos)) {
                    Ok(h) if h > self.pos => h,
                    _ => u64::MAX,
                }
            }
            // No data after `pos`: a hole up to the size seen at open.
            Err(rustix::io::Errno::NXIO) if self.pos < self.size => self.hole_end = self.size,
            // At the end, or a filesystem without hole lookup: plain reads.
            Err(_) => self.data_end = u64::MAX,
        }
    }
}

impl Read for SourceFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.sparse {
            return self.file.read(buf);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.hole_end && self.pos >= self.data_end {
            self.locate();
        }
        let n = if self.pos < self.hole_end {
            let n = (self.hole_end - self.pos).min(buf.len() as u64) as usize;
            buf[..n].fill(0);
            n
        } else {
            let want = (self.data_end - self.pos).min(buf.len() as u64) as usize;
            self.file.read_at(&mut buf[..want], self.pos)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn read_all(path: &std::path::Path, chunk: usize) -> (Vec<u8>, bool) {
        let f = File::open(path).unwrap();
        let md = f.metadata().unwrap();
        let mut s = SourceFile::new(f, &md);
        let sparse = s.sparse;
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        (out, sparse)
    }

    #[test]
    fn holes_read_as_zeros_and_data_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let mut f = File::create(&p).unwrap();
        let mut want = vec![0u8; 9 << 20];
        // Hole, data, hole, data, trailing hole.
        for (off, len) in [(3usize << 20, 5000usize), (7 << 20, 70_000)] {
            f.seek(io::SeekFrom::Start(off as u64)).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i % 251 + 1) as u8).collect();
            f.write_all(&data).unwrap();
            want[off..off + len].copy_from_slice(&data);
        }
        f.set_len(want.len() as u64).unwrap();
        drop(f);
        for chunk in [4096, 65_536, 1 << 20, 3 << 20] {
            let (got, _) = read_all(&p, chunk);
            assert_eq!(got.len(), want.len(), "chunk {chunk}");
            assert!(got == want, "contents differ with reads of {chunk}");
        }
    }

    #[test]
    fn dense_file_reads_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dense");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let (got, sparse) = read_all(&p, 8192);
        assert!(!sparse);
        assert_eq!(got, data);
    }
}
