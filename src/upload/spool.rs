//! `Spool`: the local file that holds the content of a file open for writing, from its
//! first write until its upload is in the store.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A local file holding the content of one file open for writing.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
}

static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Spool {
    /// A new, empty spool in `dir`.
    pub fn create(dir: &Path) -> io::Result<Spool> {
        let n = SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("{}-{nanos:x}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Spool { path, file })
    }

    /// Where the spool lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data` at `offset`, growing the file as needed.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    /// Up to `len` bytes at `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let size = self.size()?;
        let len = len.min(size.saturating_sub(offset) as usize);
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Current size.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Makes the spool a copy of `from` (in the kernel, without a pass through memory).
    pub fn copy_from(&self, from: &mut File) -> io::Result<()> {
        let mut to = &self.file;
        to.set_len(0)?;
        io::copy(from, &mut to)?;
        Ok(())
    }

    /// Truncates or extends (with zeros) to `len`.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}
