//! `UploadSlots`: the mount's limit on upload bodies in memory at once.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::object::PartBody;

/// The largest part read into memory before it is sent. A larger one (parts grow past
/// it only for files of many GiB, or with a large `--upload-part-size`) is read from
/// its spool by the request as it goes out, so no part holds more than this in memory
/// (a single PUT, up to `--upload-part-size`, and a compressed part still do).
pub(super) const IN_MEMORY_PART_MAX: u64 = 16 << 20;

/// The mount's limit on upload bodies in memory at once. Streamed parts, uploads at close
/// and replays each take a slot before a body is read (or, compressed, handed over) and
/// give it back when its request is done: eight writers closing together take turns
/// instead of holding eight times the memory.
#[derive(Debug, Clone)]
pub(super) struct UploadSlots(Arc<Semaphore>);

/// An upload body (`Bytes` or a [`PartBody`]) and the slot it holds until dropped.
pub(super) struct SlotBody<T = PartBody> {
    pub(super) body: T,
    _slot: OwnedSemaphorePermit,
}

impl SlotBody<Bytes> {
    /// The same bytes as a part, in the same slot.
    pub(super) fn into_part(self) -> SlotBody {
        SlotBody {
            body: PartBody::Bytes(self.body),
            _slot: self._slot,
        }
    }
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

    /// `len` bytes of `file` at `start`, read into memory once a slot is free.
    pub(super) async fn read(
        &self,
        file: Arc<File>,
        start: u64,
        len: u64,
    ) -> io::Result<SlotBody<Bytes>> {
        let slot = self.take().await?;
        let body = read_range(file, start, len).await?;
        Ok(SlotBody { body, _slot: slot })
    }

    /// The body of a part of `len` bytes at `start` of spool `file`, once a slot is
    /// free: in memory up to [`IN_MEMORY_PART_MAX`], else read from the spool as it is
    /// sent.
    pub(super) async fn part(&self, file: Arc<File>, start: u64, len: u64) -> io::Result<SlotBody> {
        let slot = self.take().await?;
        let body = if len <= IN_MEMORY_PART_MAX {
            PartBody::Bytes(read_range(file, start, len).await?)
        } else {
            PartBody::File { file, start, len }
        };
        Ok(SlotBody { body, _slot: slot })
    }

    /// `bytes` already in memory (a compressed part), once a slot is free.
    pub(super) async fn hold(&self, bytes: Bytes) -> io::Result<SlotBody<Bytes>> {
        let slot = self.take().await?;
        Ok(SlotBody {
            body: bytes,
            _slot: slot,
        })
    }
}

async fn read_range(file: Arc<File>, start: u64, len: u64) -> io::Result<Bytes> {
    let part = PartBody::File { file, start, len };
    // A small read from the spool (written moments ago, in the page cache) costs less
    // than handing it to a blocking thread.
    if len <= INLINE_READ {
        return part.read_now();
    }
    part.into_bytes().await
}

/// Largest spool read done on the async worker itself.
const INLINE_READ: u64 = 256 << 10;
