//! Compressed uploads: a large text output is stored gzip-compressed, with its original
//! size and SHA-256 in its metadata (the store's rule: any rgrid reader decodes by that
//! metadata, and checks the decoded bytes against that hash). The spool is
//! compressed on a blocking thread and each part goes up as soon as it is full, so
//! compressing and sending overlap, and memory stays at a few parts.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use flate2::write::GzEncoder;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{JournalEntry, PartPlan, UploadError, Uploaded, Uploader};
use crate::artifact::{self, is_text};

/// When outputs are stored compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressMode {
    /// Never.
    Never,
    /// Text formats (by file name) larger than the threshold.
    Auto,
    /// Every file.
    Always,
}

/// The compression rule of the write engine.
#[derive(Debug, Clone, Copy)]
pub struct CompressPolicy {
    /// Which files.
    pub mode: CompressMode,
    /// Size a text file must exceed under `Auto`.
    pub threshold: u64,
}

impl CompressPolicy {
    /// Whether a file `key` of `size` bytes is stored compressed.
    pub fn applies(&self, key: &str, size: u64) -> bool {
        match self.mode {
            CompressMode::Never => false,
            CompressMode::Always => true,
            CompressMode::Auto => size > self.threshold && is_text(key),
        }
    }
}

/// Input read from the spool at a time.
const READ_CHUNK: usize = 1 << 20;

impl Uploader {
    /// Whether a file `key` of `size` bytes goes up compressed. Compressed parts are made
    /// in memory, so a file past the part plan's first tier (8.5 GiB at 8 MiB parts)
    /// goes up as it is: its parts would grow, and memory with them.
    pub(super) fn compresses(&self, key: &str, size: u64) -> bool {
        self.config.compress.applies(key, size) && size <= self.plan.uniform_max()
    }

    /// Puts the journaled spool under its key, gzip-compressed.
    pub(super) async fn put_compressed(
        &self,
        entry: &JournalEntry,
        file: Arc<File>,
    ) -> Result<Uploaded, UploadError> {
        let mut headers = entry.headers();
        let meta = &mut headers.user_metadata;
        meta.insert(artifact::COMPRESSION.into(), "gzip".into());
        meta.insert(artifact::ORIGINAL_SIZE.into(), entry.size.to_string());
        let plan = self.plan;
        let (tx, mut rx) = mpsc::channel(2);
        let compressor = tokio::task::spawn_blocking(move || compress(&file, plan, &tx));
        let first = next_part(&mut rx).await?;
        let second = next_part(&mut rx).await?;
        let (etag, stored) = match (first, second) {
            (Some(first), None) => {
                let stored = first.len() as u64;
                let body = self.slots.hold(first).await?;
                let etag = self
                    .put_new(&entry.key, body.body.clone(), headers.clone())
                    .await?;
                self.board.sent(&entry.key, &entry.spool, stored);
                (etag, stored)
            }
            (Some(first), Some(second)) => {
                let rest = futures::stream::unfold(rx, |mut rx| async {
                    let part = next_part(&mut rx).await.transpose()?;
                    Some((part, rx))
                });
                let slots = self.slots.clone();
                let parts = futures::stream::iter([Ok(first), Ok(second)])
                    .chain(rest)
                    .then(move |part| {
                        let slots = slots.clone();
                        async move { Ok(slots.hold(part?).await?.into_part()) }
                    });
                self.put_parts(entry, headers.clone(), parts).await?
            }
            (None, _) => return Err(io::Error::other("compressor sent nothing").into()),
        };
        compressor.await.map_err(io::Error::other)??;
        Ok(Uploaded {
            key: entry.key.clone(),
            size: entry.size,
            stored_size: stored,
            etag,
            sha256: entry.sha256.clone(),
            headers,
        })
    }
}

/// What the compressor sends: parts, then the end. A channel that closes without the
/// end means the compressor died, and no object may be made of what came before.
enum Piece {
    Part(Bytes),
    End,
}

/// The next part, `None` at the end.
async fn next_part(
    rx: &mut mpsc::Receiver<io::Result<Piece>>,
) -> Result<Option<Bytes>, UploadError> {
    match rx.recv().await {
        Some(Ok(Piece::Part(part))) => Ok(Some(part)),
        Some(Ok(Piece::End)) => Ok(None),
        Some(Err(e)) => Err(e.into()),
        None => Err(io::Error::other("compression stopped before the end").into()),
    }
}

/// Compresses `file` into parts of at least the `plan`'s sizes (the last may be smaller),
/// sent on `tx`, then the end; stops early when the receiver is gone. Parts at least as
/// large as the plan's are never more than the plan's count for the file's size.
fn compress(file: &File, plan: PartPlan, tx: &mpsc::Sender<io::Result<Piece>>) -> io::Result<()> {
    let result = compress_parts(file, plan, tx);
    if let Err(e) = &result {
        let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
    }
    result
}

fn compress_parts(
    file: &File,
    plan: PartPlan,
    tx: &mpsc::Sender<io::Result<Piece>>,
) -> io::Result<()> {
    let level = flate2::Compression::default();
    let mut number = 1;
    // Cut where one more chunk's output still fits the largest part the store takes.
    let largest = plan.max_part().saturating_sub(2 * READ_CHUNK as u64);
    let part_size = |number| plan.size_of(number).min(largest) as usize;
    let mut encoder = GzEncoder::new(Vec::with_capacity(part_size(1) + READ_CHUNK), level);
    let mut buf = vec![0; READ_CHUNK];
    let mut offset = 0;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        encoder.write_all(&buf[..n])?;
        if encoder.get_ref().len() >= part_size(number) {
            number += 1;
            let part = std::mem::replace(
                encoder.get_mut(),
                Vec::with_capacity(part_size(number) + READ_CHUNK),
            );
            if tx
                .blocking_send(Ok(Piece::Part(Bytes::from(part))))
                .is_err()
            {
                return Ok(());
            }
        }
    }
    let last = encoder.finish()?;
    if tx.blocking_send(Ok(Piece::Part(Bytes::from(last)))).is_ok() {
        let _ = tx.blocking_send(Ok(Piece::End));
    }
    Ok(())
}
