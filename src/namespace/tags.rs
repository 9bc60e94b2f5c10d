//! What an object has beyond its HEAD: its tags (read once per version and metadata TTL,
//! kept for the most recent objects only), a share link, a restore from an archive.
//! The extended attributes show and change these through here.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::{InodeNo, Namespace, NamespaceError, Node};
use crate::object::{ObjectError, ObjectId, Tags};

/// S3 keeps at most this many tags on an object.
pub const MAX_TAGS: usize = 10;

/// Objects whose tags are kept.
const CACHED: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

/// Tag sets by version, each with when it was read.
#[derive(Debug)]
pub(super) struct TagCache(Mutex<LruCache<ObjectId, (Instant, Arc<Tags>)>>);

impl Default for TagCache {
    fn default() -> Self {
        TagCache(Mutex::new(LruCache::new(CACHED)))
    }
}

impl TagCache {
    fn get(&self, id: &ObjectId, ttl: Duration) -> Option<Arc<Tags>> {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(id) {
            Some((at, tags)) if at.elapsed() < ttl => Some(tags.clone()),
            _ => None,
        }
    }

    fn put(&self, id: ObjectId, tags: Arc<Tags>) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.put(id, (Instant::now(), tags));
    }
}

impl Namespace {
    /// The tags of stored file `node`; `Unsupported` where the store has no tagging.
    /// Read again after the metadata TTL, and then so is the store's `x-amz-expiration`
    /// of it, which follows the tags (a `describe` after this one shows it).
    pub async fn tags(&self, node: &Node) -> Result<Arc<Tags>, NamespaceError> {
        let id = node.object_id();
        if let Some(tags) = self.tag_cache.get(&id, self.config.metadata_ttl) {
            return Ok(tags);
        }
        let tags = Arc::new(self.client.tags(&id.key).await?);
        self.tag_cache.put(id.clone(), tags.clone());
        let header = node.headers.as_ref().and_then(|h| h.expiration);
        if header.is_some() {
            self.reread_headers(node.ino, &id).await?;
        }
        Ok(tags)
    }

    /// The tags of version `id` if this mount has them fresh; never a request.
    pub fn cached_tags(&self, id: &ObjectId) -> Option<Arc<Tags>> {
        self.tag_cache.get(id, self.config.metadata_ttl)
    }

    /// Changes the tags of `id` with `edit`, applied to a fresh read so that tags
    /// another tool set meanwhile stay. Returns the new set.
    ///
    /// PutObjectTagging cannot be pinned to a version: a writer replacing the object
    /// between the read and the write gets these tags (and loses its own).
    pub async fn edit_tags(
        &self,
        id: &ObjectId,
        edit: impl FnOnce(&mut Tags),
    ) -> Result<Arc<Tags>, NamespaceError> {
        // Two edits here at once would each write the set without the other's change.
        let _one_at_a_time = self.tag_edits.lock().await;
        let mut tags = self.client.tags(&id.key).await?;
        edit(&mut tags);
        if tags.len() > MAX_TAGS {
            return Err(NamespaceError::TooManyTags);
        }
        self.client.set_tags(&id.key, tags.clone()).await?;
        let tags = Arc::new(tags);
        self.tag_cache.put(id.clone(), tags.clone());
        Ok(tags)
    }

    /// Reads the HEAD of `ino`'s version `id` again: what the store says of it after
    /// its tags changed (its `x-amz-expiration` follows them).
    pub async fn reread_headers(&self, ino: InodeNo, id: &ObjectId) -> Result<(), NamespaceError> {
        let info = self.head(&id.key).await?;
        if info.meta.etag == id.etag {
            self.rewritten(ino, id.etag.as_deref(), info.meta.etag, info.headers);
        }
        Ok(())
    }

    /// A presigned GET URL of `key` valid for `ttl`, made here without a request.
    pub async fn share_link(
        &self,
        key: &str,
        ttl: Duration,
        content_encoding: Option<&str>,
    ) -> Result<String, ObjectError> {
        self.client.presign_get(key, ttl, content_encoding).await
    }

    /// Asks the store to restore the archived object `key` for `days`.
    pub async fn restore(&self, key: &str, days: u32) -> Result<(), ObjectError> {
        self.client.restore(key, days).await
    }
}
