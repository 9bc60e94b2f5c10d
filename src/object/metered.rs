//! `MeteredClient`: a decorator that times and counts every request of the client it
//! wraps, by S3 operation and outcome, and the body bytes each way (see `metrics.rs`).
//! It changes no request: the mount wraps its client in it when `--metrics-addr` is set.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;

use super::{
    ByteStream, ExpiryRule, ListPage, ObjectClient, ObjectError, ObjectHeaders, ObjectInfo,
    PartBody, Tags,
};
use crate::metrics;

/// The client it wraps, measured.
#[derive(Debug)]
pub struct MeteredClient {
    inner: Arc<dyn ObjectClient>,
}

impl MeteredClient {
    /// Measures `inner`.
    pub fn new(inner: Arc<dyn ObjectClient>) -> MeteredClient {
        MeteredClient { inner }
    }
}

/// The outcome label of a result.
fn outcome<T>(result: &Result<T, ObjectError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ObjectError::NotFound { .. } | ObjectError::NoSuchBucket { .. }) => "not_found",
        Err(ObjectError::PreconditionFailed { .. }) => "precondition_failed",
        Err(ObjectError::AccessDenied { .. }) => "access_denied",
        Err(ObjectError::Unavailable { .. }) => "unavailable",
        Err(ObjectError::Unreachable { .. }) => "unreachable",
        Err(ObjectError::Unsupported { .. }) => "unsupported",
        Err(ObjectError::Other { .. }) => "error",
    }
}

/// Runs `request`, recording it as `operation`.
async fn observe<T>(
    operation: &'static str,
    request: impl Future<Output = Result<T, ObjectError>>,
) -> Result<T, ObjectError> {
    let start = Instant::now();
    let result = request.await;
    metrics::store_request(operation, outcome(&result), start.elapsed());
    result
}

#[async_trait]
impl ObjectClient for MeteredClient {
    async fn check_bucket(&self) -> Result<(), ObjectError> {
        observe("HeadBucket", self.inner.check_bucket()).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        observe("HeadObject", self.inner.head(key)).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: Option<u32>,
    ) -> Result<ListPage, ObjectError> {
        let list = self.inner.list_page(prefix, token, max_keys);
        observe("ListObjectsV2", list).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<ByteStream, ObjectError> {
        let get = self.inner.get_range(key, range, if_match);
        let body = observe("GetObject", get).await?;
        let counted = body.inspect_ok(|chunk| metrics::bytes_from_store(chunk.len()));
        Ok(Box::pin(counted))
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, ObjectError> {
        let len = body.len();
        let etag = observe("PutObject", self.inner.put(key, body, headers)).await?;
        metrics::bytes_to_store(len);
        Ok(etag)
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        observe("DeleteObject", self.inner.delete(key)).await
    }

    async fn create_multipart(
        &self,
        key: &str,
        headers: ObjectHeaders,
    ) -> Result<String, ObjectError> {
        let create = self.inner.create_multipart(key, headers);
        observe("CreateMultipartUpload", create).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: PartBody,
    ) -> Result<String, ObjectError> {
        let len = body.len() as usize;
        let part = self.inner.upload_part(key, upload_id, number, body);
        let etag = observe("UploadPart", part).await?;
        metrics::bytes_to_store(len);
        Ok(etag)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<Option<String>, ObjectError> {
        let complete = self.inner.complete_multipart(key, upload_id, parts);
        observe("CompleteMultipartUpload", complete).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), ObjectError> {
        let abort = self.inner.abort_multipart(key, upload_id);
        observe("AbortMultipartUpload", abort).await
    }

    async fn expiry_rules(&self) -> Result<Vec<ExpiryRule>, ObjectError> {
        observe("GetBucketLifecycleConfiguration", self.inner.expiry_rules()).await
    }

    async fn tags(&self, key: &str) -> Result<Tags, ObjectError> {
        observe("GetObjectTagging", self.inner.tags(key)).await
    }

    async fn set_tags(&self, key: &str, tags: Tags) -> Result<(), ObjectError> {
        observe("PutObjectTagging", self.inner.set_tags(key, tags)).await
    }

    async fn update_expiry_rules(
        &self,
        replaced: &(dyn for<'k> Fn(&'k str) -> bool + Send + Sync),
        rules: Vec<ExpiryRule>,
    ) -> Result<(), ObjectError> {
        let put = self.inner.update_expiry_rules(replaced, rules);
        observe("PutBucketLifecycleConfiguration", put).await
    }

    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        content_encoding: Option<&str>,
    ) -> Result<String, ObjectError> {
        // Signed here: no request to count.
        self.inner.presign_get(key, ttl, content_encoding).await
    }

    async fn restore(&self, key: &str, days: u32) -> Result<(), ObjectError> {
        observe("RestoreObject", self.inner.restore(key, days)).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        headers: Option<ObjectHeaders>,
        if_match: Option<&str>,
    ) -> Result<Option<String>, ObjectError> {
        let copy = self.inner.copy(from, to, headers, if_match);
        observe("CopyObject", copy).await
    }
}
