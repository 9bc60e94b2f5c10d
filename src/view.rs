//! The file view: the bytes a reader of one object version sees, at any offset.
//!
//! For now a view is one streaming range GET that follows a sequential reader; a read
//! elsewhere starts a new GET from there to the end. Memory stays at one network chunk per
//! open file whatever the file's size. Every GET names the ETag the file was opened with
//! (If-Match), so a replaced object fails the read instead of mixing two versions.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::sync::Arc;
use thiserror::Error;

use crate::object::{ByteStream, ObjectClient, ObjectError};

/// A forward gap up to this size is read through and dropped rather than paid for with a
/// new GET: the kernel's concurrent read-ahead requests often arrive slightly out of order.
const MAX_SKIP: u64 = 4 << 20;

/// What can go wrong reading a view.
#[derive(Debug, Error)]
pub enum ViewError {
    /// The store closed the body before the promised length.
    #[error("{key}: body ended {missing} bytes early")]
    Truncated {
        /// Object key.
        key: String,
        /// Bytes still expected.
        missing: u64,
    },
    /// No byte arrived within the stall timeout.
    #[error("{key}: no data for {0:?}", .timeout)]
    Stalled {
        /// Object key.
        key: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

/// One object version, as an open file reads it.
pub struct FileReader {
    client: Arc<dyn ObjectClient>,
    key: String,
    etag: Option<String>,
    size: u64,
    stall_timeout: Duration,
    body: Option<ByteStream>,
    /// Offset of the first byte of `pending`.
    pos: u64,
    /// Bytes received but not yet returned.
    pending: Bytes,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("key", &self.key)
            .field("etag", &self.etag)
            .field("pos", &self.pos)
            .finish()
    }
}

impl FileReader {
    /// A reader of `key` at version `etag` (when known), `size` bytes long.
    pub fn new(
        client: Arc<dyn ObjectClient>,
        key: String,
        etag: Option<String>,
        size: u64,
        stall_timeout: Duration,
    ) -> Self {
        FileReader {
            client,
            key,
            etag,
            size,
            stall_timeout,
            body: None,
            pos: 0,
            pending: Bytes::new(),
        }
    }

    /// Up to `len` bytes at `offset`; fewer only at the end of the file.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Bytes, ViewError> {
        let end = self.size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Ok(Bytes::new());
        }
        if self.body.is_none() || offset < self.pos || offset - self.pos > MAX_SKIP {
            self.restart(offset).await?;
        }
        self.skip_to(offset).await?;
        let want = (end - offset) as usize;
        if self.pending.len() >= want {
            self.pos += want as u64;
            return Ok(self.pending.split_to(want));
        }
        let mut out = BytesMut::with_capacity(want);
        while out.len() < want {
            let chunk = self.take(want - out.len()).await?;
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    async fn restart(&mut self, offset: u64) -> Result<(), ViewError> {
        self.body = None;
        self.pending = Bytes::new();
        let stream = self
            .client
            .get_range(&self.key, offset..self.size, self.etag.as_deref())
            .await?;
        self.body = Some(stream);
        self.pos = offset;
        Ok(())
    }

    async fn skip_to(&mut self, offset: u64) -> Result<(), ViewError> {
        while self.pos < offset {
            let gap = (offset - self.pos).min(usize::MAX as u64) as usize;
            self.take(gap).await?;
        }
        Ok(())
    }

    /// Up to `max` bytes from the body, at least one.
    async fn take(&mut self, max: usize) -> Result<Bytes, ViewError> {
        if self.pending.is_empty() {
            self.pending = self.next_chunk().await?;
        }
        let n = max.min(self.pending.len());
        self.pos += n as u64;
        Ok(self.pending.split_to(n))
    }

    async fn next_chunk(&mut self) -> Result<Bytes, ViewError> {
        let body = self.body.as_mut().expect("restart() opened a body");
        let next = tokio::time::timeout(self.stall_timeout, body.next()).await;
        let result = match next {
            Err(_) => Err(ViewError::Stalled {
                key: self.key.clone(),
                timeout: self.stall_timeout,
            }),
            Ok(None) => Err(ViewError::Truncated {
                key: self.key.clone(),
                missing: self.size - self.pos,
            }),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(chunk))) if chunk.is_empty() => return Box::pin(self.next_chunk()).await,
            Ok(Some(Ok(chunk))) => Ok(chunk),
        };
        if result.is_err() {
            // A broken body is never resumed; the next read starts a new GET.
            self.body = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{MemoryClient, ObjectHeaders, Operation};

    fn reader(data: &[u8]) -> (FileReader, MemoryClient) {
        let client = MemoryClient::new();
        client.insert("k", data.to_vec(), ObjectHeaders::default());
        let etag = Some("\"v0\"".to_owned());
        let r = FileReader::new(
            Arc::new(client.clone()),
            "k".into(),
            etag,
            data.len() as u64,
            Duration::from_secs(5),
        );
        (r, client)
    }

    #[tokio::test]
    async fn reads_any_offset_and_length() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, _) = reader(&data);
        for (off, len) in [
            (0, 100),
            (100, 4000),
            (9000, 5000),
            (50, 10),
            (10_000, 1),
            (9_999, 10),
        ] {
            let got = r.read(off, len).await.unwrap();
            let end = (off as usize + len as usize).min(data.len());
            assert_eq!(
                &got[..],
                &data[(off as usize).min(end)..end],
                "read({off}, {len})"
            );
        }
    }

    #[tokio::test]
    async fn sequential_reads_share_one_get() {
        let (mut r, client) = reader(&[7u8; 100_000]);
        for i in 0..100 {
            r.read(i * 1000, 1000).await.unwrap();
        }
        assert_eq!(client.count(Operation::Get), 1);
    }

    #[tokio::test]
    async fn replaced_object_fails_the_read() {
        let (mut r, client) = reader(b"first version");
        client.insert("k", b"second version".to_vec(), ObjectHeaders::default());
        let err = r.read(0, 5).await.unwrap_err();
        assert!(
            matches!(
                err,
                ViewError::Object(ObjectError::PreconditionFailed { .. })
            ),
            "{err}"
        );
    }
}
