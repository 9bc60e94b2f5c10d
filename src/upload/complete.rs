//! Ending multipart uploads. An abort that fails (the store unreachable) is kept and
//! tried again by the retry loop, so that no upload is left holding its parts.
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

use super::Uploader;
use crate::artifact;
use crate::object::{ObjectClient, ObjectError};

/// Aborts kept for the retry loop, at most: past it the oldest are forgotten (the
/// bucket's AbortIncompleteMultipartUpload rule, where there is one, ends them).
const MAX_UNABORTED: usize = 10_000;

/// A multipart upload whose abort failed.
#[derive(Debug)]
pub(super) struct Unaborted {
    key: String,
    upload_id: String,
}

/// The aborts still to do.
pub(super) type UnabortedUploads = Arc<Mutex<Vec<Unaborted>>>;

impl Uploader {
    /// Completes `upload_id` of `key` from `parts`; the new object's ETag.
    pub(super) async fn complete(
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
        let (client, unaborted) = (self.client.clone(), self.unaborted.clone());
        let upload = Unaborted {
            key: key.to_owned(),
            upload_id,
        };
        tokio::spawn(abort_or_keep(client, unaborted, upload));
    }

    /// Tries the aborts that failed again.
    pub(super) async fn retry_aborts(&self) {
        let failed = std::mem::take(&mut *lock(&self.unaborted));
        for upload in failed {
            abort_or_keep(self.client.clone(), self.unaborted.clone(), upload).await;
        }
    }
}

async fn abort_or_keep(
    client: Arc<dyn ObjectClient>,
    unaborted: UnabortedUploads,
    upload: Unaborted,
) {
    match client.abort_multipart(&upload.key, &upload.upload_id).await {
        // NoSuchUpload: aborted or completed already.
        Ok(()) | Err(ObjectError::NotFound { .. }) => {}
        Err(e) => {
            tracing::debug!(key = %upload.key, "abort failed, tried again later: {e}");
            let mut kept = lock(&unaborted);
            if kept.len() >= MAX_UNABORTED {
                kept.remove(0);
            }
            kept.push(upload);
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
