//! `UploadSlots`: the mount's limit on upload bodies in memory at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The mount's limit on upload bodies in memory at once. Streamed parts, uploads at close
/// and replays each take a slot before a body is read (or, compressed, handed over) and
/// give it back when its request is done: eight writers closing together take turns
/// instead of holding eight times the memory.
#[derive(Debug, Clone)]
pub(super) struct UploadSlots(Arc<Semaphore>);

/// An upload body and the slot it holds until dropped.
pub(super) struct SlotBody {
    pub(super) bytes: Bytes,
    _slot: OwnedSemaphorePermit,
}

impl UploadSlots {
    pub(super) fn new(slots: usize) -> UploadSlots {
        UploadSlots(Arc::new(Semaphore::new(slots)))
    }

    async fn take(&self) -> io::Result<OwnedSemaphorePermit> {
        // Never closed: an error here would be a bug, reported as a failed upload.
        self.0
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)
    }

    /// `len` bytes of `file` at `start`, read once a slot is free.
    pub(super) async fn read(&self, file: Arc<File>, start: u64, len: u64) -> io::Result<SlotBody> {
        let slot = self.take().await?;
        let bytes = read_range(file, start, len).await?;
        Ok(SlotBody { bytes, _slot: slot })
    }

    /// `bytes` already in memory (a compressed part), once a slot is free.
    pub(super) async fn hold(&self, bytes: Bytes) -> io::Result<SlotBody> {
        let slot = self.take().await?;
        Ok(SlotBody { bytes, _slot: slot })
    }
}

async fn read_range(file: Arc<File>, start: u64, len: u64) -> io::Result<Bytes> {
    let read = move || {
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, start)?;
        Ok(Bytes::from(buf))
    };
    // A small read from the spool (written moments ago, in the page cache) costs less
    // than handing it to a blocking thread.
    if len <= INLINE_READ {
        return read();
    }
    tokio::task::spawn_blocking(read)
        .await
        .map_err(io::Error::other)?
}

/// Largest spool read done on the async worker itself.
const INLINE_READ: u64 = 256 << 10;
