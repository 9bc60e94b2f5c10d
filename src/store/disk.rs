//! `DiskStore`: the embedded store's S3 implementation over a directory.
//!
//! Layout under the root: one directory per bucket. Inside it, an object whose key is a
//! valid relative path is a plain file at that path, so `cp -r` seeds a demo store and `ls`
//! shows it. Keys that cannot be paths (empty or `.`/`..` segments, segments over 255
//! bytes, a key `a` beside keys under `a/`) are kept as blobs in `.rgrid-store/blobs/`.
//! Metadata of objects put through S3 sits in `.rgrid-store/meta/<sha256 of key>.json`.
//!
//! An in-memory index per bucket (a `BTreeMap` by key), built at start, answers LIST and
//! HEAD without touching the disk and lets a delimited listing skip whole subtrees. Files
//! added to the directory behind the store's back show up at the next start.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, SeekFrom};
use std::ops::Bound;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use s3s::dto::{self, ETag, ETagCondition, Timestamp};
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use serde::{Deserialize, Serialize};

mod archive;
mod escape;
mod lifecycle;
mod multipart;
mod tagging;
#[cfg(test)]
mod tests;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

/// Internal directory inside each bucket; never listed as objects.
const INTERNAL: &str = ".rgrid-store";
/// GET bodies are read in chunks this big: large enough that loopback throughput is
/// limited by the client, not by syscalls (s3s-fs's 4 KiB chunks cap it near 0.6 GB/s).
const READ_CHUNK: usize = 1 << 20;
/// S3's page-size limit for ListObjectsV2.
const MAX_KEYS: usize = 1000;

/// Where an object's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Location {
    Plain,
    Blob,
}

/// Everything the store knows about one object; also its sidecar file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: String,
    size: u64,
    mtime: SystemTime,
    etag: String,
    location: Location,
    content_type: Option<String>,
    content_encoding: Option<String>,
    metadata: HashMap<String, String>,
    /// The S3 tag set.
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// Its storage class, when not STANDARD.
    #[serde(default)]
    storage_class: Option<String>,
    /// An archived object's restored copy is readable until then.
    #[serde(default)]
    restored_until: Option<SystemTime>,
}

type Index = BTreeMap<String, Entry>;

/// An S3 server's storage over one directory: buckets are its subdirectories. Clones
/// share the store (the lifecycle pass runs on one).
#[derive(Debug, Clone)]
pub struct DiskStore {
    root: PathBuf,
    buckets: Arc<RwLock<HashMap<String, Arc<RwLock<Index>>>>>,
    tmp_counter: Arc<AtomicU64>,
}

fn internal_err(e: impl std::fmt::Display) -> s3s::S3Error {
    s3_error!(InternalError, "{e}")
}

/// Hex SHA-256 of a string: blob and sidecar names, generated credentials.
pub(super) fn sha_hex(key: &str) -> String {
    crate::artifact::sha256_hex(key.as_bytes())
}

/// True when `key` maps onto a relative path without loss.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && !key.ends_with('/')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && s.len() <= 255)
        && !key.contains('\0')
        && key.split('/').next() != Some(INTERNAL)
}

/// An ETag for a file that was put in place by hand: changes whenever the file does.
fn derived_etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{:x}-{:x}-{:x}",
        meta.ino(),
        // Wrapping: a file dated past 2262 still gets an ETag, not a panic.
        meta.mtime()
            .wrapping_mul(1_000_000_000)
            .wrapping_add(meta.mtime_nsec()),
        meta.len()
    )
}

/// `time` as an S3 timestamp, which ends with the year 9999 (a file's mtime may not).
fn timestamp(time: SystemTime) -> Timestamp {
    const LAST: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    Timestamp::from(time.min(SystemTime::UNIX_EPOCH + LAST))
}

impl DiskStore {
    /// Opens (creating if needed) the store at `root` and indexes every bucket in it.
    pub fn open(root: &Path) -> io::Result<DiskStore> {
        std::fs::create_dir_all(root)?;
        let mut buckets = HashMap::new();
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if entry.file_type()?.is_dir() && !name.starts_with('.') {
                let index = load_index(&entry.path())?;
                buckets.insert(name, Arc::new(RwLock::new(index)));
            }
        }
        Ok(DiskStore {
            root: root.to_owned(),
            buckets: Arc::new(RwLock::new(buckets)),
            tmp_counter: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Creates `bucket` unless it exists.
    pub fn ensure_bucket(&self, bucket: &str) -> io::Result<()> {
        let dir = self.root.join(bucket);
        std::fs::create_dir_all(dir.join(INTERNAL).join("tmp"))?;
        let mut buckets = self.buckets.write().unwrap_or_else(|e| e.into_inner());
        buckets.entry(bucket.to_owned()).or_default();
        Ok(())
    }

    fn bucket(&self, bucket: &str) -> S3Result<Arc<RwLock<Index>>> {
        let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
        buckets
            .get(bucket)
            .cloned()
            .ok_or_else(|| s3_error!(NoSuchBucket))
    }

    fn data_path(&self, bucket: &str, entry: &Entry) -> PathBuf {
        match entry.location {
            Location::Plain => self.root.join(bucket).join(&entry.key),
            Location::Blob => self
                .root
                .join(bucket)
                .join(INTERNAL)
                .join("blobs")
                .join(sha_hex(&entry.key)),
        }
    }

    fn meta_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root
            .join(bucket)
            .join(INTERNAL)
            .join("meta")
            .join(format!("{}.json", sha_hex(key)))
    }

    /// Where a new object under `key` can go: plain unless a file or directory is in the way.
    fn location_for(&self, bucket: &str, key: &str, index: &Index) -> Location {
        if !is_plain_key(key) {
            return Location::Blob;
        }
        let path = self.root.join(bucket).join(key);
        if path.is_dir() {
            return Location::Blob;
        }
        let mut ancestor = key;
        while let Some(i) = ancestor.rfind('/') {
            ancestor = &key[..i];
            let ancestor_path = self.root.join(bucket).join(ancestor);
            if ancestor_path.is_file() || index.contains_key(ancestor) {
                return Location::Blob;
            }
        }
        Location::Plain
    }

    fn opened(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&ETagCondition>,
    ) -> S3Result<(Entry, std::fs::File)> {
        let index = self.bucket(bucket)?;
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        let entry = index.get(key).ok_or_else(|| s3_error!(NoSuchKey))?;
        check_if_match(entry, if_match)?;
        // Opened under the index lock: a concurrent PUT renames a new file into place only
        // while holding the write lock, so the bytes served are the version in `entry`.
        let file = std::fs::File::open(self.data_path(bucket, entry)).map_err(internal_err)?;
        Ok((entry.clone(), file))
    }

    /// A fresh path in the bucket's staging directory.
    fn tmp_path(&self, bucket: &str) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{n}", std::process::id());
        self.root.join(bucket).join(INTERNAL).join("tmp").join(name)
    }

    async fn write_tmp(&self, bucket: &str, body: Option<dto::StreamingBlob>) -> S3Result<PathBuf> {
        let tmp = self.tmp_path(bucket);
        let file = tokio::fs::File::create(&tmp).await.map_err(internal_err)?;
        let mut writer = tokio::io::BufWriter::with_capacity(READ_CHUNK, file);
        if let Some(mut body) = body {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "{e}"))?;
                writer.write_all(&chunk).await.map_err(internal_err)?;
            }
        }
        writer.flush().await.map_err(internal_err)?;
        writer.get_ref().sync_data().await.map_err(internal_err)?;
        Ok(tmp)
    }

    fn commit(&self, bucket: &str, tmp: &Path, mut entry: Entry) -> S3Result<Entry> {
        let index = self.bucket(bucket)?;
        let mut index = index.write().unwrap_or_else(|e| e.into_inner());
        entry.location = self.location_for(bucket, &entry.key, &index);
        let dest = self.data_path(bucket, &entry);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(internal_err)?;
        }
        std::fs::rename(tmp, &dest).map_err(internal_err)?;
        let meta = std::fs::metadata(&dest).map_err(internal_err)?;
        entry.size = meta.len();
        entry.mtime = meta.modified().map_err(internal_err)?;
        entry.etag = derived_etag(&meta);
        self.write_sidecar(bucket, &entry)?;
        if let Some(old) = index.insert(entry.key.clone(), entry.clone()) {
            if old.location != entry.location {
                let _ = std::fs::remove_file(self.data_path(bucket, &old));
            }
        }
        Ok(entry)
    }

    /// Content type, content encoding and user metadata of an object.
    fn replace_metadata(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&ETagCondition>,
        (content_type, content_encoding, metadata): (
            Option<String>,
            Option<String>,
            HashMap<String, String>,
        ),
    ) -> S3Result<Entry> {
        let index = self.bucket(bucket)?;
        let mut index = index.write().unwrap_or_else(|e| e.into_inner());
        let entry = index.get_mut(key).ok_or_else(|| s3_error!(NoSuchKey))?;
        check_if_match(entry, if_match)?;
        // As in S3: the copy is a new write of the same bytes.
        entry.mtime = SystemTime::now();
        entry.content_type = content_type;
        entry.content_encoding = content_encoding;
        entry.metadata = metadata;
        self.write_sidecar(bucket, entry)?;
        Ok(entry.clone())
    }

    fn write_sidecar(&self, bucket: &str, entry: &Entry) -> S3Result<()> {
        let sidecar = serde_json::to_vec(entry).map_err(internal_err)?;
        let meta_dir = self.root.join(bucket).join(INTERNAL).join("meta");
        std::fs::create_dir_all(&meta_dir).map_err(internal_err)?;
        std::fs::write(self.meta_path(bucket, &entry.key), sidecar).map_err(internal_err)
    }

    /// Deletes `key` if it is there and `due` says so (judged under the index lock);
    /// returns whether it did.
    fn remove(&self, bucket: &str, key: &str, due: impl Fn(&Entry) -> bool) -> S3Result<bool> {
        let index = self.bucket(bucket)?;
        let mut index = index.write().unwrap_or_else(|e| e.into_inner());
        if !index.get(key).is_some_and(due) {
            return Ok(false);
        }
        let Some(entry) = index.remove(key) else {
            return Ok(false);
        };
        let path = self.data_path(bucket, &entry);
        std::fs::remove_file(&path).map_err(internal_err)?;
        let _ = std::fs::remove_file(self.meta_path(bucket, key));
        if entry.location == Location::Plain {
            // Empty parents would make a later key of the same name a blob for no reason.
            let top = self.root.join(bucket);
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| *d != top) {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        Ok(true)
    }
}

fn check_if_match(entry: &Entry, cond: Option<&ETagCondition>) -> S3Result<()> {
    match cond {
        Some(ETagCondition::ETag(tag)) if tag.value() != entry.etag => {
            Err(s3_error!(PreconditionFailed))
        }
        _ => Ok(()),
    }
}

/// Builds a bucket's index: plain files first, then sidecars (which win while current).
fn load_index(bucket_dir: &Path) -> io::Result<Index> {
    let mut index = Index::new();
    scan_plain(bucket_dir, bucket_dir, &mut index)?;
    let meta_dir = bucket_dir.join(INTERNAL).join("meta");
    let Ok(sidecars) = std::fs::read_dir(&meta_dir) else {
        return Ok(index);
    };
    for sidecar in sidecars {
        let Ok(bytes) = std::fs::read(sidecar?.path()) else {
            continue;
        };
        let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) else {
            continue;
        };
        let current = match entry.location {
            // A sidecar is stale once its file was replaced by hand.
            Location::Plain => index
                .get(&entry.key)
                .is_some_and(|plain| plain.etag == entry.etag),
            Location::Blob => true,
        };
        if current {
            index.insert(entry.key.clone(), entry);
        }
    }
    Ok(index)
}

fn scan_plain(top: &Path, dir: &Path, index: &mut Index) -> io::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        let kind = item.file_type()?;
        if kind.is_dir() && !(dir == top && item.file_name() == INTERNAL) {
            scan_plain(top, &path, index)?;
        } else if kind.is_file() {
            let Some(key) = relative_key(top, &path) else {
                continue;
            };
            let meta = item.metadata()?;
            let entry = Entry {
                key: key.clone(),
                size: meta.len(),
                mtime: meta.modified()?,
                etag: derived_etag(&meta),
                location: Location::Plain,
                content_type: None,
                content_encoding: None,
                metadata: HashMap::new(),
                tags: BTreeMap::new(),
                storage_class: None,
                restored_until: None,
            };
            index.insert(key, entry);
        }
    }
    Ok(())
}

fn relative_key(top: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(top).ok()?;
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    Some(parts?.join("/"))
}

/// Smallest string above every key that starts with `prefix`, for skipping a subtree.
fn past_subtree(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

/// One page of a delimited or flat listing, S3 semantics.
fn list_page(
    index: &Index,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> dto::ListObjectsV2Output {
    let mut contents = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut cursor = match after {
        Some(token) => Bound::Excluded(match delimiter {
            Some(d) if token.ends_with(d) => past_subtree(token),
            _ => token.to_owned(),
        }),
        None => Bound::Included(prefix.to_owned()),
    };
    let mut last = None;
    let mut truncated = false;
    while let Some((key, entry)) = index
        .range::<String, _>((cursor.clone(), Bound::Unbounded))
        .next()
    {
        let Some(rest) = key.strip_prefix(prefix) else {
            break;
        };
        let common = delimiter.and_then(|d| {
            rest.find(d)
                .map(|i| format!("{prefix}{}", &rest[..i + d.len()]))
        });
        if contents.len() + prefixes.len() == max {
            truncated = true;
            break;
        }
        match common {
            Some(common) => {
                cursor = Bound::Excluded(past_subtree(&common));
                if prefixes.last() != Some(&common) {
                    last = Some(common.clone());
                    prefixes.push(common);
                }
            }
            None => {
                cursor = Bound::Excluded(key.clone());
                last = Some(key.clone());
                contents.push(dto::Object {
                    key: Some(key.clone()),
                    size: Some(entry.size as i64),
                    last_modified: Some(timestamp(entry.mtime)),
                    e_tag: Some(ETag::Strong(entry.etag.clone())),
                    ..Default::default()
                });
            }
        }
    }
    let key_count = (contents.len() + prefixes.len()) as i32;
    dto::ListObjectsV2Output {
        prefix: Some(prefix.to_owned()),
        delimiter: delimiter.map(str::to_owned),
        max_keys: Some(max as i32),
        key_count: Some(key_count),
        is_truncated: Some(truncated),
        // Escaped: a key with a control character would not go into XML as it is.
        next_continuation_token: if truncated {
            last.as_deref().map(escape::escape)
        } else {
            None
        },
        contents: Some(contents),
        common_prefixes: Some(
            prefixes
                .into_iter()
                .map(|p| dto::CommonPrefix { prefix: Some(p) })
                .collect(),
        ),
        ..Default::default()
    }
}

#[async_trait::async_trait]
impl S3 for DiskStore {
    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        self.ensure_bucket(&req.input.bucket)
            .map_err(internal_err)?;
        Ok(S3Response::new(dto::CreateBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(dto::HeadBucketOutput::default()))
    }

    async fn list_buckets(
        &self,
        _: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = buckets.keys().collect();
        names.sort();
        let buckets = names
            .into_iter()
            .map(|n| dto::Bucket {
                name: Some(n.clone()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let (entry, _) = self.opened(
            &req.input.bucket,
            &req.input.key,
            req.input.if_match.as_ref(),
        )?;
        let expiration = self.expiration(&req.input.bucket, &entry);
        let restore = archive::restore_header(&entry);
        let storage_class = entry.storage_class.clone().map(dto::StorageClass::from);
        Ok(S3Response::new(dto::HeadObjectOutput {
            restore,
            storage_class,
            content_length: Some(entry.size as i64),
            content_type: entry.content_type,
            content_encoding: entry.content_encoding,
            e_tag: Some(ETag::Strong(entry.etag)),
            last_modified: Some(timestamp(entry.mtime)),
            expiration,
            metadata: Some(entry.metadata),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLifecycleConfigurationOutput>> {
        let config = self.lifecycle(&req.input.bucket)?;
        Ok(S3Response::new(
            dto::GetBucketLifecycleConfigurationOutput {
                rules: Some(config.rules),
                ..Default::default()
            },
        ))
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        let config = input
            .lifecycle_configuration
            .ok_or_else(|| s3_error!(MalformedXML, "no lifecycle configuration"))?;
        self.set_lifecycle(&input.bucket, Some(&config))?;
        Ok(S3Response::new(Default::default()))
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<dto::DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketLifecycleOutput>> {
        self.set_lifecycle(&req.input.bucket, None)?;
        Ok(S3Response::new(dto::DeleteBucketLifecycleOutput {}))
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let input = req.input;
        let (entry, file) = self.opened(&input.bucket, &input.key, input.if_match.as_ref())?;
        archive::check_readable(&entry)?;
        let (range, content_range) = match &input.range {
            None => (0..entry.size, None),
            Some(r) => {
                let range = r.check(entry.size)?;
                let cr = format!("bytes {}-{}/{}", range.start, range.end - 1, entry.size);
                (range, Some(cr))
            }
        };
        let mut file = tokio::fs::File::from_std(file);
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(internal_err)?;
        let len = range.end - range.start;
        let body = ReaderStream::with_capacity(file.take(len), READ_CHUNK);
        let expiration = self.expiration(&input.bucket, &entry);
        Ok(S3Response::new(dto::GetObjectOutput {
            body: Some(dto::StreamingBlob::wrap(body)),
            content_length: Some(len as i64),
            content_range,
            content_type: entry.content_type,
            expiration,
            // A presigned link may ask for its own (S3's response-content-encoding).
            content_encoding: input.response_content_encoding.or(entry.content_encoding),
            e_tag: Some(ETag::Strong(entry.etag)),
            last_modified: Some(timestamp(entry.mtime)),
            metadata: Some(entry.metadata),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let input = req.input;
        self.bucket(&input.bucket)?;
        let tmp = self.write_tmp(&input.bucket, input.body).await?;
        let entry = Entry {
            key: input.key,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            etag: String::new(),
            location: Location::Plain,
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            metadata: input.metadata.unwrap_or_default(),
            tags: tagging::tagging_header(input.tagging.as_deref())?,
            storage_class: archive::class_of(input.storage_class),
            restored_until: None,
        };
        let result = self.commit(&input.bucket, &tmp, entry);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let entry = result?;
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: Some(ETag::Strong(entry.etag)),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        self.remove(&req.input.bucket, &req.input.key, |_| true)?;
        Ok(S3Response::new(dto::DeleteObjectOutput::default()))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let upload_id = self.create_upload(req.input).await?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let e_tag = self.store_part(req.input).await?;
        Ok(S3Response::new(dto::UploadPartOutput {
            e_tag: Some(e_tag),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let bucket = req.input.bucket.clone();
        let entry = self.complete_upload(req.input).await?;
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(entry.key),
            e_tag: Some(ETag::Strong(entry.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        self.abort_upload(req.input).await?;
        Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
    }

    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let entry = self.copy(req.input).await?;
        let result = dto::CopyObjectResult {
            e_tag: Some(ETag::Strong(entry.etag)),
            last_modified: Some(timestamp(entry.mtime)),
            ..Default::default()
        };
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(result),
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<dto::GetObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::GetObjectTaggingOutput>> {
        let tag_set = self.tag_set(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(dto::GetObjectTaggingOutput {
            tag_set,
            version_id: None,
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<dto::PutObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::PutObjectTaggingOutput>> {
        let input = req.input;
        self.replace_tags(&input.bucket, &input.key, input.tagging.tag_set)?;
        Ok(S3Response::new(dto::PutObjectTaggingOutput::default()))
    }

    async fn restore_object(
        &self,
        req: S3Request<dto::RestoreObjectInput>,
    ) -> S3Result<S3Response<dto::RestoreObjectOutput>> {
        let input = req.input;
        let days = input.restore_request.and_then(|r| r.days).unwrap_or(1);
        self.restore(&input.bucket, &input.key, days)?;
        Ok(S3Response::new(dto::RestoreObjectOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let input = req.input;
        let index = self.bucket(&input.bucket)?;
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        let prefix = input.prefix.unwrap_or_default();
        // An empty `delimiter=` means no delimiter, as in S3.
        let delimiter = input.delimiter.filter(|d| !d.is_empty());
        let token = input.continuation_token.as_deref().map(escape::unescape);
        let after = match token {
            Some(None) => return Err(s3_error!(InvalidArgument, "bad continuation token")),
            Some(token) => token,
            None => input.start_after,
        };
        let max = input
            .max_keys
            .map_or(MAX_KEYS, |m| (m.max(0) as usize).min(MAX_KEYS));
        let mut out = list_page(&index, &prefix, delimiter.as_deref(), after.as_deref(), max);
        out.name = Some(input.bucket);
        out.continuation_token = None;
        if input
            .encoding_type
            .is_some_and(|e| e.as_str() == dto::EncodingType::URL)
        {
            escape::escape_listing(&mut out);
        }
        Ok(S3Response::new(out))
    }
}
