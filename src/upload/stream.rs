//! Parts uploaded while a file is written front to back, so that close waits only for the
//! tail. A [`PartStream`] hashes what is written and, each time a part's worth has been
//! written, sends that part of the spool; a write anywhere else ends the stream, and close
//! then uploads the spool whole, as for any other file.
//!
//! The object's SHA-256 is known only at close, after CreateMultipartUpload has fixed the
//! metadata. So the metadata says the hash is in a tag (`artifact::SHA256_IN_TAG`), and
//! once the upload is complete one PutObjectTagging sets it, bound to the new ETag: no
//! byte is copied. A store without tagging gets the hash by a copy of the object onto
//! itself instead (a full data copy on some servers, and impossible past 5 GiB: then the
//! upload fails and is made again from the spool, with the hash in its metadata).

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::{headers_for, hex_digest, JournalEntry, UploadError, Uploaded, Uploader};
use crate::artifact;

type PartTask = JoinHandle<Result<(u32, String), UploadError>>;

/// The upload of a file being written sequentially.
pub struct PartStream {
    key: String,
    /// The spool's path, naming the upload on the board.
    spool: std::path::PathBuf,
    /// Opened with the first part: most files never have one.
    file: Option<Arc<File>>,
    hasher: Sha256,
    /// Bytes written, all hashed, from offset 0 without a gap.
    written: u64,
    /// Bytes handed to part uploads.
    sent: u64,
    /// Parts handed to uploads: the next is part `parts + 1`, of the plan's size.
    parts: u32,
    upload_id: Option<String>,
    in_flight: VecDeque<PartTask>,
    done: Vec<(u32, String)>,
}

impl std::fmt::Debug for PartStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartStream")
            .field("key", &self.key)
            .field("written", &self.written)
            .finish()
    }
}

impl PartStream {
    /// Bytes handed to part uploads so far.
    #[cfg(test)]
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether the parts sent are the start of `entry`'s content, under its key: every
    /// byte written went through the stream, and nothing since.
    pub(super) fn covers(&self, entry: &JournalEntry) -> bool {
        self.key == entry.key && self.sha256_of_all(entry.size).as_ref() == Some(&entry.sha256)
    }

    /// Hex SHA-256 of what was written, if that is the whole `size` bytes.
    pub(super) fn sha256_of_all(&self, size: u64) -> Option<String> {
        (self.written == size).then(|| hex_digest(self.hasher.clone()))
    }
}

impl Uploader {
    /// A stream for `key`, whose content is written to the (empty) spool at `spool`.
    pub fn stream(&self, key: &str, spool: &super::Spool) -> PartStream {
        PartStream {
            key: key.to_owned(),
            spool: spool.path().to_owned(),
            file: None,
            hasher: Sha256::new(),
            written: 0,
            sent: 0,
            parts: 0,
            upload_id: None,
            in_flight: VecDeque::new(),
            done: Vec::new(),
        }
    }

    /// Takes note of `data`, just written to the spool at `offset`, and sends every part
    /// now complete. False when the stream is over (a write elsewhere, or a failure): the
    /// caller then [`Uploader::abandon`]s it.
    pub async fn stream_write(&self, s: &mut PartStream, offset: u64, data: &[u8]) -> bool {
        let end = offset + data.len() as u64;
        // Not front to back, or it will go up compressed: it goes up from the spool at
        // close, with its metadata from the start.
        if offset != s.written || self.compresses(&s.key, end) {
            return false;
        }
        s.hasher.update(data);
        s.written += data.len() as u64;
        loop {
            let part_size = self.plan.size_of(s.parts + 1);
            if s.written - s.sent < part_size {
                break;
            }
            if let Err(e) = self.send_part(s, part_size).await {
                tracing::debug!(key = %s.key, "streaming upload stopped, will upload at close: {e}");
                return false;
            }
        }
        true
    }

    /// Sends the next `len` bytes as a part, starting the upload first if needed; waits
    /// while `concurrency` parts are already in flight.
    async fn send_part(&self, s: &mut PartStream, len: u64) -> Result<(), UploadError> {
        if s.upload_id.is_none() {
            let mut headers = headers_for(&s.key, None);
            let marker = (artifact::SHA256_IN_TAG.to_owned(), "tag".to_owned());
            headers.user_metadata.extend([marker]);
            s.upload_id = Some(self.start_multipart(&s.key, headers).await?);
        }
        while s.in_flight.len() >= self.config.concurrency {
            let Some(task) = s.in_flight.pop_front() else {
                break;
            };
            s.done.push(task.await.map_err(std::io::Error::other)??);
        }
        let number = s.parts + 1;
        let file = match &s.file {
            Some(file) => file.clone(),
            None => s.file.insert(Arc::new(File::open(&s.spool)?)).clone(),
        };
        let (client, start) = (self.client.clone(), s.sent);
        let (key, upload_id) = (s.key.clone(), s.upload_id.clone().unwrap_or_default());
        let (slots, board, spool) = (self.slots.clone(), self.board.clone(), s.spool.clone());
        s.in_flight.push_back(tokio::spawn(async move {
            // The writer goes on writing to its spool while the part waits for a slot.
            let body = slots.part(file, start, len).await?;
            let etag = client
                .upload_part(&key, &upload_id, number, body.body.clone())
                .await?;
            board.sent(&key, &spool, len);
            Ok((number, etag))
        }));
        s.sent += len;
        s.parts = number;
        Ok(())
    }

    /// Completes the journaled `entry` from stream `s`: sends the tail, waits for every
    /// part, completes the upload and sets the metadata. `Ok(None)` when no part was sent
    /// (the file is small): the caller uploads it whole.
    pub(super) async fn finish_stream(
        &self,
        mut s: PartStream,
        entry: &JournalEntry,
    ) -> Result<Option<Uploaded>, UploadError> {
        if s.upload_id.is_none() {
            return Ok(None);
        }
        let result = self.complete_stream(&mut s, entry).await;
        if result.is_err() {
            self.abandon(s);
        }
        result.map(Some)
    }

    async fn complete_stream(
        &self,
        s: &mut PartStream,
        entry: &JournalEntry,
    ) -> Result<Uploaded, UploadError> {
        self.check_size(&entry.key, entry.size)?;
        if entry.size > s.sent {
            self.send_part(s, entry.size - s.sent).await?;
        }
        while let Some(task) = s.in_flight.pop_front() {
            s.done.push(task.await.map_err(std::io::Error::other)??);
        }
        s.done.sort_by_key(|(number, _)| *number);
        let upload_id = s.upload_id.take().unwrap_or_default();
        let parts = std::mem::take(&mut s.done);
        let completed = self.complete(&entry.key, &upload_id, parts).await;
        if completed.is_err() {
            s.upload_id = Some(upload_id);
        }
        let completed = completed?;
        let headers = entry.headers();
        let etag = self.record_sha256(entry, completed).await?;
        Ok(Uploaded {
            key: entry.key.clone(),
            size: entry.size,
            stored_size: entry.size,
            etag,
            sha256: entry.sha256.clone(),
            headers,
        })
    }

    /// Records the SHA-256 of the object a stream completed as version `etag`: a tag, or
    /// where the store has no tagging, a copy onto itself pinned to that version (a
    /// writer that replaced the object meanwhile must not get our hash). Returns the
    /// ETag of the object that carries it. The tag set it writes is the object's whole
    /// set: a new object has only the tags it was created with, written here beside it.
    async fn record_sha256(
        &self,
        entry: &JournalEntry,
        etag: Option<String>,
    ) -> Result<Option<String>, UploadError> {
        if let Some(etag) = &etag {
            let value = artifact::sha256_tag(&entry.sha256, etag);
            let mut tags = self.new_tags();
            tags.insert(artifact::SHA256.to_owned(), value);
            match self.client.set_tags(&entry.key, tags).await {
                Ok(()) => return Ok(Some(etag.clone())),
                Err(e) => {
                    tracing::debug!(key = %entry.key, "SHA-256 tag not set, copying instead: {e}")
                }
            }
        }
        let headers = Some(entry.headers());
        let copy = self
            .client
            .copy(&entry.key, &entry.key, headers, etag.as_deref());
        Ok(copy.await?)
    }

    /// Stops a stream: parts in flight are cancelled and the upload aborted, in the
    /// background (it only frees storage).
    pub fn abandon(&self, mut s: PartStream) {
        for task in s.in_flight.drain(..) {
            task.abort();
        }
        self.board.abandoned(&s.spool);
        if let Some(upload_id) = s.upload_id.take() {
            self.abort(&s.key, upload_id);
        }
    }
}
