//! The tags a new object gets at creation (its retention tier), sent with its first
//! PutObject or CreateMultipartUpload so that no moment exists where the object has no
//! tier. A store that refuses tags there gets the object without them, once told in
//! the log (only once an untagged creation got through where the tagged one failed): the
//! data matters more than its tier.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Uploader;
use crate::object::{ObjectError, ObjectHeaders, Tags};

impl Uploader {
    /// The tags new objects get now.
    pub(super) fn new_tags(&self) -> Tags {
        if self.untagged.load(Ordering::Relaxed) {
            Tags::new()
        } else {
            self.config.tags.clone()
        }
    }

    /// Whether a creation with `headers` that failed with `error` may have failed for its
    /// tags: a store without tagging (501, 400), or a policy that denies
    /// s3:PutObjectTagging (a 403 that names it; other 403s are the key's own).
    fn may_be_the_tags(error: &ObjectError, headers: &ObjectHeaders) -> bool {
        let kind = match error {
            ObjectError::Unsupported { .. } | ObjectError::Other { .. } => true,
            ObjectError::AccessDenied { message, .. } => {
                message.to_ascii_lowercase().contains("tagging")
            }
            _ => false,
        };
        kind && !headers.tagging.is_empty()
    }

    /// A creation without tags got through where the tagged one failed with `first`:
    /// creations go on untagged, told once.
    fn untagged_from_now(&self, first: &ObjectError) {
        if !self.untagged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the store refuses tags on new objects ({first}): they go up without a retention tier"
            );
        }
    }

    /// PutObject of a new object, tagged.
    pub(super) async fn put_new(
        &self,
        key: &str,
        body: Bytes,
        mut headers: ObjectHeaders,
    ) -> Result<Option<String>, ObjectError> {
        headers.tagging = self.new_tags();
        let result = self.client.put(key, body.clone(), headers.clone()).await;
        let Err(first) = result else {
            return result;
        };
        if !Self::may_be_the_tags(&first, &headers) {
            return Err(first);
        }
        headers.tagging.clear();
        let retry = self.client.put(key, body, headers).await;
        if retry.is_ok() {
            self.untagged_from_now(&first);
        }
        retry
    }

    /// CreateMultipartUpload of a new object, tagged, recorded in the ledger until it
    /// ends.
    pub(super) async fn start_multipart(
        &self,
        key: &str,
        headers: ObjectHeaders,
    ) -> Result<String, ObjectError> {
        let upload_id = self.create_tagged(key, headers).await?;
        self.multipart.started(key, &upload_id);
        Ok(upload_id)
    }

    async fn create_tagged(
        &self,
        key: &str,
        mut headers: ObjectHeaders,
    ) -> Result<String, ObjectError> {
        headers.tagging = self.new_tags();
        let result = self.client.create_multipart(key, headers.clone()).await;
        let Err(first) = result else {
            return result;
        };
        if !Self::may_be_the_tags(&first, &headers) {
            return Err(first);
        }
        headers.tagging.clear();
        let retry = self.client.create_multipart(key, headers).await;
        if retry.is_ok() {
            self.untagged_from_now(&first);
        }
        retry
    }
}
