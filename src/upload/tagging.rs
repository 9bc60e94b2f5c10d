//! The tags a new object gets at creation (its retention tier), sent with its first
//! PutObject or CreateMultipartUpload so that no moment exists where the object has no
//! tier. A store that refuses tags there gets the object without them, once told in
//! the log: the data matters more than its tier.

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

    /// Whether `result` of a creation with `headers` failed only for its tags: then
    /// creations go on untagged.
    fn refused_tags<T>(&self, result: &Result<T, ObjectError>, headers: &ObjectHeaders) -> bool {
        let refused =
            matches!(result, Err(ObjectError::Unsupported { .. })) && !headers.tagging.is_empty();
        if refused && !self.untagged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the store refuses tags on new objects: they go up without a retention tier"
            );
        }
        refused
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
        if self.refused_tags(&result, &headers) {
            headers.tagging.clear();
            return self.client.put(key, body, headers).await;
        }
        result
    }

    /// CreateMultipartUpload of a new object, tagged.
    pub(super) async fn start_multipart(
        &self,
        key: &str,
        mut headers: ObjectHeaders,
    ) -> Result<String, ObjectError> {
        headers.tagging = self.new_tags();
        let result = self.client.create_multipart(key, headers.clone()).await;
        if self.refused_tags(&result, &headers) {
            headers.tagging.clear();
            return self.client.create_multipart(key, headers).await;
        }
        result
    }
}
