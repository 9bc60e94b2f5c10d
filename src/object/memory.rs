//! `MemoryClient`: an in-memory [`ObjectClient`] for unit tests of the layers above, with
//! per-operation request counters and injectable failures. It follows the same contract as
//! the S3 client (the conformance suite in `tests/` runs both).

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    ByteStream, ExpiryRule, ListPage, ObjectClient, ObjectError, ObjectHeaders, ObjectInfo,
    ObjectMeta, PartBody, Tags,
};

/// The operations that [`MemoryClient`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `check_bucket`
    CheckBucket,
    /// `head`
    Head,
    /// `list_page`
    List,
    /// `get_range`
    Get,
    /// `put`
    Put,
    /// `delete`
    Delete,
    /// `create_multipart`, `upload_part`, `complete_multipart`
    Multipart,
    /// `abort_multipart`
    Abort,
    /// `copy`
    Copy,
    /// `expiry_rules`, `update_expiry_rules`
    Lifecycle,
    /// `tags`, `set_tags`
    Tagging,
    /// `restore`
    Restore,
}

#[derive(Debug, Clone)]
struct StoredObject {
    data: Bytes,
    headers: ObjectHeaders,
    last_modified: SystemTime,
    etag: String,
    tags: Tags,
}

/// A multipart upload in progress: its key, headers and parts so far.
type PendingUpload = (String, ObjectHeaders, BTreeMap<u32, Bytes>);

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, StoredObject>,
    uploads: HashMap<String, PendingUpload>,
    expiry_rules: Vec<ExpiryRule>,
    counts: HashMap<Operation, u64>,
    /// Number of upcoming calls that fail as if the store were down.
    failures: u32,
    /// Number of upcoming calls of one operation that fail so.
    failures_of: HashMap<Operation, u32>,
    /// Number of upcoming GET bodies that break off after half their bytes.
    broken_bodies: u32,
    /// How long each PUT and part upload takes (none: instant).
    upload_delay: Option<Duration>,
    /// PUT and part uploads in flight now, and the most at once.
    uploads_in_flight: usize,
    peak_uploads: usize,
    /// Bytes served by GETs.
    got_bytes: u64,
    /// Tagging calls fail as on a server without the API.
    no_tagging: bool,
    /// Parts whose body came as a file range, not bytes in memory.
    file_parts: u64,
}

/// A creation with tags fails where tagging is refused, as on a server without it.
fn refuse_tags_if(state: &State, key: &str, headers: &ObjectHeaders) -> Result<(), ObjectError> {
    if state.no_tagging && !headers.tagging.is_empty() {
        return Err(ObjectError::Unsupported {
            target: key.into(),
            message: "x-amz-tagging is not implemented".into(),
        });
    }
    Ok(())
}

/// An in-memory bucket. Cloning shares the bucket.
#[derive(Debug, Clone, Default)]
pub struct MemoryClient {
    state: Arc<Mutex<State>>,
    versions: Arc<AtomicU64>,
}

/// One upload counted in flight until dropped.
struct InFlight<'a>(&'a MemoryClient);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().uploads_in_flight -= 1;
    }
}

/// Page size when the caller does not ask for one, as S3's.
const DEFAULT_MAX_KEYS: usize = 1000;

impl MemoryClient {
    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `data` under `key`, replacing any earlier version; returns the new ETag.
    /// The tags given in `headers.tagging` are the object's tag set.
    pub fn insert(&self, key: &str, data: impl Into<Bytes>, mut headers: ObjectHeaders) -> String {
        let etag = format!("\"v{}\"", self.versions.fetch_add(1, Ordering::Relaxed));
        let object = StoredObject {
            data: data.into(),
            tags: std::mem::take(&mut headers.tagging),
            headers,
            last_modified: SystemTime::now(),
            etag: etag.clone(),
        };
        self.lock().objects.insert(key.to_owned(), object);
        etag
    }

    /// How many calls of `op` were made so far.
    pub fn count(&self, op: Operation) -> u64 {
        self.lock().counts.get(&op).copied().unwrap_or(0)
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    /// Makes the next `n` calls fail with [`ObjectError::Unavailable`].
    pub fn fail_next(&self, n: u32) {
        self.lock().failures = n;
    }

    /// Makes the next `n` calls of `op` fail with [`ObjectError::Unavailable`], the
    /// others going on as they are.
    pub fn fail_next_of(&self, op: Operation, n: u32) {
        self.lock().failures_of.insert(op, n);
    }

    /// Makes the next `n` GET bodies send half their bytes, then fail mid-stream (a
    /// connection reset).
    pub fn break_next_bodies(&self, n: u32) {
        self.lock().broken_bodies = n;
    }

    /// Makes tagging calls fail with [`ObjectError::Unsupported`], as on a server
    /// without the API.
    pub fn refuse_tagging(&self) {
        self.lock().no_tagging = true;
    }

    /// Makes every PUT and part upload take `delay`, so that uploads overlap as they
    /// would over a network.
    pub fn slow_uploads(&self, delay: Duration) {
        self.lock().upload_delay = Some(delay);
    }

    /// Bytes all GETs so far returned.
    pub fn got_bytes(&self) -> u64 {
        self.lock().got_bytes
    }

    /// Parts uploaded from a file range rather than from memory.
    pub fn file_parts(&self) -> u64 {
        self.lock().file_parts
    }

    /// The most PUT and part uploads that were in flight at once.
    pub fn peak_uploads(&self) -> usize {
        self.lock().peak_uploads
    }

    /// Counts a body upload in flight for as long as the upload delay.
    async fn upload_in_flight(&self) {
        let delay = {
            let mut state = self.lock();
            state.uploads_in_flight += 1;
            state.peak_uploads = state.peak_uploads.max(state.uploads_in_flight);
            state.upload_delay
        };
        let _counted = InFlight(self); // uncounted even when the upload is cancelled
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep the data usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the call and applies any injected failure.
    fn begin(&self, op: Operation, target: &str) -> Result<MutexGuard<'_, State>, ObjectError> {
        let mut state = self.lock();
        *state.counts.entry(op).or_default() += 1;
        let of_op = state.failures_of.get_mut(&op).filter(|n| **n > 0);
        if let Some(n) = of_op {
            *n -= 1;
        } else if state.failures > 0 {
            state.failures -= 1;
        } else {
            return Ok(state);
        }
        Err(ObjectError::Unavailable {
            target: target.to_owned(),
            message: "injected failure".into(),
        })
    }
}

impl MemoryClient {
    fn begin_tagging(&self, key: &str) -> Result<MutexGuard<'_, State>, ObjectError> {
        let state = self.begin(Operation::Tagging, key)?;
        if state.no_tagging {
            return Err(ObjectError::Unsupported {
                target: key.to_owned(),
                message: "tagging is not implemented".into(),
            });
        }
        Ok(state)
    }
}

fn no_upload(key: &str) -> ObjectError {
    ObjectError::Other {
        target: key.to_owned(),
        message: "no such upload".into(),
    }
}

fn meta(key: &str, o: &StoredObject) -> ObjectMeta {
    ObjectMeta {
        key: key.to_owned(),
        size: o.data.len() as u64,
        last_modified: o.last_modified,
        etag: Some(o.etag.clone()),
    }
}

fn list(
    objects: &BTreeMap<String, StoredObject>,
    prefix: &str,
    after: Bound<String>,
    max: usize,
) -> ListPage {
    let mut page = ListPage::default();
    let mut last = None;
    for (key, object) in objects.range((after, Bound::Unbounded)) {
        let Some(rest) = key.strip_prefix(prefix) else {
            if key.as_str() > prefix {
                break;
            }
            continue;
        };
        let common = rest.find('/').map(|i| format!("{prefix}{}", &rest[..=i]));
        if common.is_some() && page.prefixes.last() == common.as_ref() {
            continue;
        }
        if page.objects.len() + page.prefixes.len() == max {
            page.next_token = last;
            return page;
        }
        match common {
            Some(common) => {
                last = Some(common.clone());
                page.prefixes.push(common);
            }
            None => {
                last = Some(key.clone());
                page.objects.push(meta(key, object));
            }
        }
    }
    page
}

#[async_trait]
impl ObjectClient for MemoryClient {
    async fn check_bucket(&self) -> Result<(), ObjectError> {
        self.begin(Operation::CheckBucket, "bucket").map(drop)
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        let state = self.begin(Operation::Head, key)?;
        let object = state
            .objects
            .get(key)
            .ok_or_else(|| ObjectError::NotFound { key: key.into() })?;
        Ok(ObjectInfo {
            meta: meta(key, object),
            headers: object.headers.clone(),
        })
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: Option<u32>,
    ) -> Result<ListPage, ObjectError> {
        let state = self.begin(Operation::List, prefix)?;
        let after = match token {
            // A token that is a common prefix resumes after everything beneath it.
            Some(t) if t.ends_with('/') => Bound::Excluded(format!("{t}\u{10FFFF}")),
            Some(t) => Bound::Excluded(t.to_owned()),
            None => Bound::Included(prefix.to_owned()),
        };
        let max = max_keys.map_or(DEFAULT_MAX_KEYS, |m| m.clamp(1, 1000) as usize);
        Ok(list(&state.objects, prefix, after, max))
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<ByteStream, ObjectError> {
        let mut state = self.begin(Operation::Get, key)?;
        let object = state
            .objects
            .get(key)
            .ok_or_else(|| ObjectError::NotFound { key: key.into() })?;
        if if_match.is_some_and(|etag| etag != object.etag) {
            return Err(ObjectError::PreconditionFailed { key: key.into() });
        }
        let len = object.data.len() as u64;
        let (start, end) = (range.start.min(len) as usize, range.end.min(len) as usize);
        let body = object.data.slice(start..end);
        state.got_bytes += body.len() as u64;
        if state.broken_bodies > 0 {
            state.broken_bodies -= 1;
            let half = body.slice(..body.len() / 2);
            let reset = ObjectError::Unavailable {
                target: key.into(),
                message: "connection reset".into(),
            };
            return Ok(futures::stream::iter([Ok(half), Err(reset)]).boxed());
        }
        Ok(futures::stream::once(async move { Ok(body) }).boxed())
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, ObjectError> {
        {
            let state = self.begin(Operation::Put, key)?;
            refuse_tags_if(&state, key, &headers)?;
        }
        self.upload_in_flight().await;
        Ok(Some(self.insert(key, body, headers)))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.begin(Operation::Delete, key)?.objects.remove(key);
        Ok(())
    }

    async fn create_multipart(
        &self,
        key: &str,
        headers: ObjectHeaders,
    ) -> Result<String, ObjectError> {
        let mut state = self.begin(Operation::Multipart, key)?;
        refuse_tags_if(&state, key, &headers)?;
        let id = format!("upload-{}", self.versions.fetch_add(1, Ordering::Relaxed));
        state
            .uploads
            .insert(id.clone(), (key.to_owned(), headers, BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: PartBody,
    ) -> Result<String, ObjectError> {
        drop(self.begin(Operation::Multipart, key)?);
        self.upload_in_flight().await;
        self.lock().file_parts += u64::from(matches!(body, PartBody::File { .. }));
        let body = body.into_bytes().await.map_err(|e| ObjectError::Other {
            target: key.to_owned(),
            message: e.to_string(),
        })?;
        let mut state = self.lock();
        let upload = state
            .uploads
            .get_mut(upload_id)
            .ok_or_else(|| no_upload(key))?;
        upload.2.insert(number, body);
        Ok(format!("\"part-{number}\""))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<Option<String>, ObjectError> {
        let (upload_key, headers, stored) = {
            let mut state = self.begin(Operation::Multipart, key)?;
            state
                .uploads
                .remove(upload_id)
                .ok_or_else(|| no_upload(key))?
        };
        let mut data = Vec::new();
        for (number, _) in parts {
            data.extend_from_slice(stored.get(&number).ok_or_else(|| no_upload(key))?);
        }
        Ok(Some(self.insert(&upload_key, data, headers)))
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), ObjectError> {
        self.begin(Operation::Abort, key)?.uploads.remove(upload_id);
        Ok(())
    }

    async fn expiry_rules(&self) -> Result<Vec<ExpiryRule>, ObjectError> {
        Ok(self
            .begin(Operation::Lifecycle, "bucket")?
            .expiry_rules
            .clone())
    }

    async fn update_expiry_rules(
        &self,
        replaced: &(dyn for<'k> Fn(&'k str) -> bool + Send + Sync),
        rules: Vec<ExpiryRule>,
    ) -> Result<(), ObjectError> {
        let mut state = self.begin(Operation::Lifecycle, "bucket")?;
        state.expiry_rules.retain(|r| {
            let dropped = replaced(&r.id);
            !dropped && !rules.iter().any(|new| new.id == r.id)
        });
        state.expiry_rules.extend(rules);
        Ok(())
    }

    async fn presign_get(
        &self,
        key: &str,
        _ttl: Duration,
        _content_encoding: Option<&str>,
    ) -> Result<String, ObjectError> {
        Err(ObjectError::Unsupported {
            target: key.into(),
            message: "an in-memory bucket has no URL".into(),
        })
    }

    async fn restore(&self, key: &str, days: u32) -> Result<(), ObjectError> {
        let mut state = self.begin(Operation::Restore, key)?;
        let object = state.objects.get_mut(key);
        let object = object.ok_or_else(|| ObjectError::NotFound { key: key.into() })?;
        let until = SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
        object.headers.restore = Some(crate::object::Restore::Until(until));
        Ok(())
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        headers: Option<ObjectHeaders>,
        if_match: Option<&str>,
    ) -> Result<Option<String>, ObjectError> {
        let source = {
            let state = self.begin(Operation::Copy, from)?;
            state
                .objects
                .get(from)
                .cloned()
                .ok_or_else(|| ObjectError::NotFound { key: from.into() })?
        };
        if if_match.is_some_and(|etag| etag != source.etag) {
            return Err(ObjectError::PreconditionFailed { key: from.into() });
        }
        let etag = self.insert(to, source.data, headers.unwrap_or(source.headers));
        // As in S3, a copy keeps the source's tags.
        if let Some(copy) = self.lock().objects.get_mut(to) {
            copy.tags = source.tags;
        }
        Ok(Some(etag))
    }

    async fn tags(&self, key: &str) -> Result<Tags, ObjectError> {
        let state = self.begin_tagging(key)?;
        let object = state.objects.get(key);
        let object = object.ok_or_else(|| ObjectError::NotFound { key: key.into() })?;
        Ok(object.tags.clone())
    }

    async fn set_tags(&self, key: &str, tags: Tags) -> Result<(), ObjectError> {
        let mut state = self.begin_tagging(key)?;
        let object = state.objects.get_mut(key);
        let object = object.ok_or_else(|| ObjectError::NotFound { key: key.into() })?;
        object.tags = tags;
        Ok(())
    }
}
