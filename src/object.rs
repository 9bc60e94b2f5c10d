//! The object-client seam: one small, dyn-safe trait over an S3-compatible bucket.
//!
//! Everything above this module holds an `Arc<dyn ObjectClient>` and speaks in
//! [`ObjectMeta`], [`ListPage`] and [`ByteStream`]; only `object/s3.rs` knows the AWS SDK.
//! Dynamic dispatch costs nothing next to a first byte that takes a millisecond or more.

mod error;
mod guarded;
mod memory;
mod metered;
mod s3;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use error::ObjectError;
pub use guarded::GuardedClient;
pub use memory::{MemoryClient, Operation};
pub use metered::MeteredClient;
pub use s3::{S3Client, S3ClientConfig};

/// The largest object CopyObject copies (S3's limit, and MinIO's).
pub const MAX_COPY_SIZE: u64 = 5 << 30;

/// The body of a GET, as it arrives.
pub type ByteStream = BoxStream<'static, Result<Bytes, ObjectError>>;

/// The body of an uploaded part: bytes in memory, or a range of an open local file that
/// is read as the request goes out (and again for a retry), so a part of hundreds of MiB
/// never sits in memory whole.
#[derive(Debug, Clone)]
pub enum PartBody {
    /// Bytes already in memory.
    Bytes(Bytes),
    /// `len` bytes of `file` from `start`; that range must not change under it (it may
    /// be unlinked: it is read through the open file).
    File {
        /// The file (a spool).
        file: std::sync::Arc<std::fs::File>,
        /// Offset of the first byte.
        start: u64,
        /// Bytes in the part.
        len: u64,
    },
}

impl PartBody {
    /// Bytes in the part.
    pub fn len(&self) -> u64 {
        match self {
            PartBody::Bytes(bytes) => bytes.len() as u64,
            PartBody::File { len, .. } => *len,
        }
    }

    /// Whether the part has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The part's bytes in memory, read from its file on this thread for a file part.
    pub fn read_now(&self) -> std::io::Result<Bytes> {
        match self {
            PartBody::Bytes(bytes) => Ok(bytes.clone()),
            PartBody::File { file, start, len } => {
                use std::os::unix::fs::FileExt;
                let len = usize::try_from(*len).map_err(std::io::Error::other)?;
                let mut buf = vec![0; len];
                file.read_exact_at(&mut buf, *start)?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// The part's bytes in memory (read from its file on a blocking thread).
    pub async fn into_bytes(self) -> std::io::Result<Bytes> {
        match self {
            PartBody::Bytes(bytes) => Ok(bytes),
            file => tokio::task::spawn_blocking(move || file.read_now())
                .await
                .map_err(std::io::Error::other)?,
        }
    }
}

impl From<Bytes> for PartBody {
    fn from(bytes: Bytes) -> PartBody {
        PartBody::Bytes(bytes)
    }
}

/// An object's S3 tag set, by tag key.
pub type Tags = BTreeMap<String, String>;

/// One version of one object: its key, and the ETag that pins reads and copies to that
/// version (If-Match). Without an ETag (a store that sent none) nothing is pinned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    /// Full key in the bucket.
    pub key: String,
    /// The version's ETag, as the store sent it.
    pub etag: Option<String>,
}

impl ObjectId {
    /// Version `etag` of `key`.
    pub fn new(key: String, etag: Option<String>) -> ObjectId {
        ObjectId { key, etag }
    }
}

/// What a listing or a HEAD tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key in the bucket.
    pub key: String,
    /// Stored size in bytes.
    pub size: u64,
    /// LastModified as the store reports it.
    pub last_modified: SystemTime,
    /// The ETag, when the store sent one (some servers omit it in listings).
    pub etag: Option<String>,
}

/// One page of a delimited listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects directly under the prefix.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes ("subdirectories"), each ending with the delimiter.
    pub prefixes: Vec<String>,
    /// Token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// Metadata that only HEAD and GET return: content headers and `x-amz-meta-*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHeaders {
    /// Content-Type, if stored.
    pub content_type: Option<String>,
    /// Content-Encoding, if stored.
    pub content_encoding: Option<String>,
    /// User metadata, keys without the `x-amz-meta-` prefix.
    pub user_metadata: HashMap<String, String>,
    /// When a lifecycle rule of the store will delete the object (the `expiry-date` of
    /// S3's and MinIO's `x-amz-expiration` header); only HEAD and GET return it.
    pub expiration: Option<SystemTime>,
    /// The storage class (`x-amz-storage-class`); `None` is STANDARD.
    pub storage_class: Option<String>,
    /// Where a restore of an archived object stands (`x-amz-restore`).
    pub restore: Option<Restore>,
    /// The archive tier of an INTELLIGENT_TIERING object (`x-amz-archive-status`:
    /// ARCHIVE_ACCESS, DEEP_ARCHIVE_ACCESS), which GET refuses as it does GLACIER.
    pub archive_status: Option<String>,
    /// Tags a PUT or CreateMultipartUpload gives the new object (`x-amz-tagging`). HEAD
    /// and GET never fill it: an object's tags come from [`ObjectClient::tags`].
    pub tagging: Tags,
    /// Its server-side encryption (`x-amz-server-side-encryption`: AES256, aws:kms, ...;
    /// `SSE-C` for a customer's key), as HEAD tells it.
    pub encryption: Option<String>,
}

/// A restore of an archived object, as `x-amz-restore` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// Asked for, not readable yet.
    Ongoing,
    /// Readable until then.
    Until(SystemTime),
}

/// Storage classes whose objects GET refuses until they are restored.
const ARCHIVE_CLASSES: &[&str] = &["GLACIER", "DEEP_ARCHIVE"];

impl ObjectHeaders {
    /// Whether the object is in an archive (class or tier), restored or not.
    pub fn in_archive(&self) -> bool {
        let class = self.storage_class.as_deref();
        class.is_some_and(|c| ARCHIVE_CLASSES.contains(&c)) || self.archive_status.is_some()
    }

    /// Whether the object is in an archive and no restore of it is readable.
    pub fn archived(&self) -> bool {
        self.in_archive() && !matches!(self.restore, Some(Restore::Until(_)))
    }
}

/// Which objects a lifecycle rule selects: all of its conditions hold (S3's `And`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleFilter {
    /// Keys start with it.
    pub prefix: String,
    /// The object carries each of these tags.
    pub tags: Tags,
    /// Stored size is larger than this.
    pub larger_than: Option<u64>,
    /// Stored size is smaller than this.
    pub smaller_than: Option<u64>,
}

impl RuleFilter {
    /// Whether it selects an object of `key` and stored `size` whose tags are `tags`;
    /// `None` when that depends on tags that are not known.
    pub fn selects(&self, key: &str, size: u64, tags: Option<&Tags>) -> Option<bool> {
        let by_key = key.starts_with(&self.prefix)
            && self.larger_than.is_none_or(|n| size > n)
            && self.smaller_than.is_none_or(|n| size < n);
        if !by_key || self.tags.is_empty() {
            return Some(by_key);
        }
        let tags = tags?;
        Some(self.tags.iter().all(|(k, v)| tags.get(k) == Some(v)))
    }
}

/// An enabled expiration rule of the bucket's lifecycle configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryRule {
    /// The rule's id.
    pub id: String,
    /// Objects it applies to.
    pub filter: RuleFilter,
    /// Objects expire this many days after LastModified (S3 rounds up to midnight UTC)...
    pub days: Option<u32>,
    /// ...or all at this time.
    pub date: Option<SystemTime>,
}

impl ExpiryRule {
    /// When this rule deletes an object last modified at `last_modified`: a date as
    /// given; days counted from LastModified and rounded up to the next midnight UTC, as
    /// S3 does.
    pub fn expires_at(&self, last_modified: SystemTime) -> Option<SystemTime> {
        match self.date {
            Some(date) => Some(date),
            None => crate::artifact::lifecycle_expiry(last_modified, self.days?),
        }
    }
}

/// An object as HEAD describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Listing-level facts.
    pub meta: ObjectMeta,
    /// Header-level facts.
    pub headers: ObjectHeaders,
}

/// The bucket operations rgrid-mount needs, and nothing more.
#[async_trait]
pub trait ObjectClient: Send + Sync + Debug {
    /// Fails unless the bucket exists and the credentials may read it.
    async fn check_bucket(&self) -> Result<(), ObjectError>;

    /// HEAD of one key.
    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError>;

    /// One page of `ListObjectsV2` under `prefix`, delimited by `/`.
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: Option<u32>,
    ) -> Result<ListPage, ObjectError>;

    /// GET of `range` of `key`. With `if_match`, the store refuses (PreconditionFailed)
    /// to serve any other version.
    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<ByteStream, ObjectError>;

    /// PutObject of a whole body; returns the new object's ETag.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, ObjectError>;

    /// DeleteObject.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;

    /// Starts a multipart upload of `key`; returns the upload id.
    async fn create_multipart(
        &self,
        key: &str,
        headers: ObjectHeaders,
    ) -> Result<String, ObjectError>;

    /// Uploads part `number` (from 1) of an upload; returns the part's ETag.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: PartBody,
    ) -> Result<String, ObjectError>;

    /// Completes an upload from its parts, `(number, ETag)` in ascending order; returns
    /// the new object's ETag.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<Option<String>, ObjectError>;

    /// Abandons an upload and its parts.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), ObjectError>;

    /// The enabled expiration rules of the bucket's lifecycle configuration (none when it
    /// has none); `Unsupported` where the server has no lifecycle API.
    async fn expiry_rules(&self) -> Result<Vec<ExpiryRule>, ObjectError>;

    /// Edits the bucket's lifecycle configuration: drops the rules whose id `replaced`
    /// picks, then adds `rules`, each replacing the rule with its id. Every other rule
    /// stays as it is.
    async fn update_expiry_rules(
        &self,
        replaced: &(dyn for<'k> Fn(&'k str) -> bool + Send + Sync),
        rules: Vec<ExpiryRule>,
    ) -> Result<(), ObjectError>;

    /// A presigned GET URL of `key`, valid for `ttl`: signed here, no request made. With
    /// `content_encoding`, the response carries that Content-Encoding (S3's
    /// `response-content-encoding`).
    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        content_encoding: Option<&str>,
    ) -> Result<String, ObjectError>;

    /// Asks the store to restore an archived object for `days` (RestoreObject).
    async fn restore(&self, key: &str, days: u32) -> Result<(), ObjectError>;

    /// Server-side copy of `from` to `to`, with `headers` replacing the metadata if given;
    /// returns the new object's ETag. With `if_match`, the store refuses
    /// (PreconditionFailed) to copy any other version of `from`.
    async fn copy(
        &self,
        from: &str,
        to: &str,
        headers: Option<ObjectHeaders>,
        if_match: Option<&str>,
    ) -> Result<Option<String>, ObjectError>;

    /// The object's tag set (GetObjectTagging).
    async fn tags(&self, key: &str) -> Result<Tags, ObjectError>;

    /// Replaces the object's tag set (PutObjectTagging): no new version, the ETag and
    /// LastModified stay as they are, no byte is copied.
    async fn set_tags(&self, key: &str, tags: Tags) -> Result<(), ObjectError>;

    /// DeleteObject of a key that may be gone already: a missing key is success.
    async fn delete_if_exists(&self, key: &str) -> Result<(), ObjectError> {
        match self.delete(key).await {
            Err(ObjectError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// `range` of version `id`, read whole into memory: for small bodies only (a link
    /// target, a gzip trailer).
    async fn read_range(&self, id: &ObjectId, range: Range<u64>) -> Result<Vec<u8>, ObjectError> {
        use futures::TryStreamExt;
        let body = self.get_range(&id.key, range, id.etag.as_deref()).await?;
        body.try_fold(Vec::new(), |mut all, chunk| {
            all.extend_from_slice(&chunk);
            futures::future::ok(all)
        })
        .await
    }

    /// Replaces the metadata of version `id`, `stored_size` bytes, with `headers`: a
    /// server-side copy onto itself, pinned to that version, so that a concurrent
    /// writer's object never gets them. Returns the new version's ETag.
    async fn rewrite_metadata(
        &self,
        id: &ObjectId,
        stored_size: u64,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, ObjectError> {
        if stored_size > MAX_COPY_SIZE {
            return Err(ObjectError::Unsupported {
                target: id.key.clone(),
                message:
                    "metadata of objects over 5 GiB cannot be rewritten (S3 copies at most 5 GiB)"
                        .into(),
            });
        }
        let etag = id.etag.as_deref();
        self.copy(&id.key, &id.key, Some(headers), etag).await
    }

    /// Moves version `id` to key `to`, metadata and all: a server-side copy pinned to
    /// that version, then a delete of the old key. Returns the new object's ETag.
    async fn move_object(&self, id: &ObjectId, to: &str) -> Result<Option<String>, ObjectError> {
        let etag = self.copy(&id.key, to, None, id.etag.as_deref()).await?;
        self.delete_if_exists(&id.key).await?;
        Ok(etag)
    }
}
