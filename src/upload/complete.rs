//! Ending multipart uploads. Every upload started is recorded in the `MultipartLedger`
//! until it is completed or aborted; an abort that fails (the store unreachable) is kept
//! and tried again by the retry loop, and by the next daemon if this one stops first, so
//! that no upload is left holding its parts.
//!
//! Completing when the answer is lost: a failed
//! CompleteMultipartUpload may hide a completion the store made: the connection cut
//! after the commit, a 500 after it, or a reply the SDK cannot read (moto's root
//! element). Aborting and sending again would cost the whole upload, or, for a close,
//! report a failure for a file that is stored. So the object is asked for, and taken as
//! this upload's when its ETag is the one S3 gives exactly these parts: the MD5 of the
//! parts' MD5s, then `-` and their count (S3, MinIO, Ceph and moto all follow it).

use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};

use super::ledger::{MultipartLedger, OpenUpload};
use super::Uploader;
use crate::artifact;
use crate::object::{ObjectClient, ObjectError};

/// Aborts kept for the retry loop, at most: past it the oldest are forgotten (the
/// bucket's AbortIncompleteMultipartUpload rule, where there is one, ends them).
const MAX_UNABORTED: usize = 10_000;

/// The multipart uploads open in the store: the ledger of every one, and the aborts
/// still to do.
#[derive(Debug)]
pub(super) struct MultipartUploads {
    ledger: MultipartLedger,
    unaborted: Mutex<Vec<OpenUpload>>,
}

impl MultipartUploads {
    /// The uploads of `dir`'s ledger; those of daemons that are gone are to be aborted.
    pub fn open(dir: std::path::PathBuf) -> std::io::Result<Arc<MultipartUploads>> {
        let (ledger, adopted) = MultipartLedger::open(dir)?;
        if !adopted.is_empty() {
            tracing::info!(
                "{} multipart uploads left by a daemon that stopped, to abort",
                adopted.len()
            );
        }
        Ok(Arc::new(MultipartUploads {
            ledger,
            unaborted: Mutex::new(adopted),
        }))
    }

    /// Records an upload just started.
    pub fn started(&self, key: &str, upload_id: &str) {
        self.ledger.started(key, upload_id);
    }

    /// Aborts still to do.
    #[cfg(test)]
    pub fn unaborted(&self) -> usize {
        lock(&self.unaborted).len()
    }

    fn keep(&self, upload: OpenUpload) {
        let mut kept = lock(&self.unaborted);
        if kept.len() >= MAX_UNABORTED {
            let forgotten = kept.remove(0);
            self.ledger.ended(&forgotten.upload_id);
        }
        kept.push(upload);
    }
}

impl Uploader {
    /// Completes `upload_id` of `key` from `parts`; the new object's ETag.
    pub(super) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<Option<String>, ObjectError> {
        let completed = self.try_complete(key, upload_id, parts).await;
        if completed.is_ok() {
            self.multipart.ledger.ended(upload_id);
        }
        completed
    }

    async fn try_complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<Option<String>, ObjectError> {
        let expected = multipart_etag(&parts);
        let failure = match self.client.complete_multipart(key, upload_id, parts).await {
            Ok(etag) => return Ok(etag),
            Err(e) => e,
        };
        let Some(expected) = expected else {
            return Err(failure);
        };
        match self.client.head(key).await {
            Ok(info) if info.meta.etag.as_deref().map(unquoted) == Some(expected.as_str()) => {
                tracing::info!(key, "completed, though its answer was lost: {failure}");
                Ok(info.meta.etag)
            }
            _ => Err(failure),
        }
    }
}

impl Uploader {
    /// Aborts `upload_id` of `key` in the background (it only frees storage).
    pub(super) fn abort(&self, key: &str, upload_id: String) {
        let (client, uploads) = (self.client.clone(), self.multipart.clone());
        let upload = OpenUpload {
            key: key.to_owned(),
            upload_id,
        };
        tokio::spawn(abort_or_keep(client, uploads, upload));
    }

    /// Tries the aborts that failed again.
    pub(super) async fn retry_aborts(&self) {
        let failed = std::mem::take(&mut *lock(&self.multipart.unaborted));
        for upload in failed {
            abort_or_keep(self.client.clone(), self.multipart.clone(), upload).await;
        }
    }
}

async fn abort_or_keep(
    client: Arc<dyn ObjectClient>,
    uploads: Arc<MultipartUploads>,
    upload: OpenUpload,
) {
    match client.abort_multipart(&upload.key, &upload.upload_id).await {
        // NoSuchUpload: aborted or completed already.
        Ok(()) | Err(ObjectError::NotFound { .. }) => uploads.ledger.ended(&upload.upload_id),
        Err(e) => {
            tracing::debug!(key = %upload.key, "abort failed, tried again later: {e}");
            uploads.keep(upload);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unquoted(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// The ETag S3 gives an object completed from `parts`, if every part's ETag is an MD5.
fn multipart_etag(parts: &[(u32, String)]) -> Option<String> {
    let mut md5s = Md5::new();
    for (_, etag) in parts {
        let hex = unquoted(etag);
        if hex.len() != 32 {
            return None;
        }
        for pair in hex.as_bytes().chunks(2) {
            let byte = std::str::from_utf8(pair).ok()?;
            md5s.update([u8::from_str_radix(byte, 16).ok()?]);
        }
    }
    Some(format!(
        "{}-{}",
        artifact::hex(&md5s.finalize()),
        parts.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_of_parts_is_the_md5_of_their_md5s() {
        // md5("a") and md5("b"), whose concatenation hashes to 8c3ec5a2...
        let parts = vec![
            (1, "\"0cc175b9c0f1b6a831c399e269772661\"".to_owned()),
            (2, "92eb5ffee6ae2fec3ad71c777531578f".to_owned()),
        ];
        let mut both = Md5::new();
        both.update(Md5::digest(b"a"));
        both.update(Md5::digest(b"b"));
        let expected = format!("{}-2", artifact::hex(&both.finalize()));
        assert_eq!(multipart_etag(&parts), Some(expected));
    }

    #[test]
    fn parts_whose_etags_are_not_md5s_give_none() {
        assert_eq!(multipart_etag(&[(1, "kms-etag".to_owned())]), None);
        assert_eq!(multipart_etag(&[(1, "zz".repeat(16))]), None);
    }
}
