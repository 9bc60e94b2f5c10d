//! Multipart uploads and server-side copies of the embedded store.
//!
//! An upload in progress is a directory `.rgrid-store/uploads/<id>/` holding `upload.json`
//! (key and headers) and one file per part; completing it concatenates the parts named
//! in the request into a new object, committed like a PUT.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use s3s::dto::{self, ETag};
use s3s::{s3_error, S3Result};
use serde::{Deserialize, Serialize};

use super::{internal_err, DiskStore, Entry, Location, INTERNAL};

/// What `upload.json` records of an upload.
#[derive(Debug, Serialize, Deserialize)]
struct PendingUpload {
    key: String,
    content_type: Option<String>,
    content_encoding: Option<String>,
    metadata: std::collections::HashMap<String, String>,
    /// Tags given at creation (`x-amz-tagging`).
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    /// The storage class asked for, when not STANDARD.
    #[serde(default)]
    storage_class: Option<String>,
}

impl PendingUpload {
    fn into_entry(self) -> Entry {
        Entry {
            key: self.key,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            etag: String::new(),
            location: Location::Plain,
            content_type: self.content_type,
            content_encoding: self.content_encoding,
            metadata: self.metadata,
            tags: self.tags,
            storage_class: self.storage_class,
            restored_until: None,
        }
    }
}

impl DiskStore {
    fn upload_dir(&self, bucket: &str, id: &str) -> S3Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(self
            .root
            .join(bucket)
            .join(INTERNAL)
            .join("uploads")
            .join(id))
    }

    pub(super) async fn create_upload(
        &self,
        input: dto::CreateMultipartUploadInput,
    ) -> S3Result<String> {
        self.bucket(&input.bucket)?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!(
            "{nanos:x}{:x}",
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.upload_dir(&input.bucket, &id)?;
        let pending = PendingUpload {
            key: input.key,
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            metadata: input.metadata.unwrap_or_default(),
            tags: super::tagging::tagging_header(input.tagging.as_deref())?,
            storage_class: super::archive::class_of(input.storage_class),
        };
        let json = serde_json::to_vec(&pending).map_err(internal_err)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(internal_err)?;
        tokio::fs::write(dir.join("upload.json"), json)
            .await
            .map_err(internal_err)?;
        Ok(id)
    }

    pub(super) async fn store_part(&self, input: dto::UploadPartInput) -> S3Result<ETag> {
        let dir = self.upload_dir(&input.bucket, &input.upload_id)?;
        if !dir.join("upload.json").exists() {
            return Err(s3_error!(NoSuchUpload));
        }
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part number must be 1..=10000"));
        }
        let tmp = self.write_tmp(&input.bucket, input.body).await?;
        let part = dir.join(input.part_number.to_string());
        tokio::fs::rename(&tmp, &part).await.map_err(internal_err)?;
        let meta = tokio::fs::metadata(&part).await.map_err(internal_err)?;
        Ok(ETag::Strong(super::derived_etag(&meta)))
    }

    pub(super) async fn complete_upload(
        &self,
        input: dto::CompleteMultipartUploadInput,
    ) -> S3Result<Entry> {
        let dir = self.upload_dir(&input.bucket, &input.upload_id)?;
        let json = tokio::fs::read(dir.join("upload.json"))
            .await
            .map_err(|_| s3_error!(NoSuchUpload))?;
        let pending: PendingUpload = serde_json::from_slice(&json).map_err(internal_err)?;
        if pending.key != input.key {
            return Err(s3_error!(NoSuchUpload));
        }
        let numbers: Vec<i32> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .iter()
            .map(|p| p.part_number.unwrap_or(0))
            .collect();
        if numbers.is_empty() || numbers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(s3_error!(InvalidPartOrder));
        }
        let tmp = self.tmp_path(&input.bucket);
        let parts: Vec<PathBuf> = numbers.iter().map(|n| dir.join(n.to_string())).collect();
        let joined = tmp.clone();
        tokio::task::spawn_blocking(move || concatenate(&parts, &joined))
            .await
            .map_err(internal_err)??;
        let result = self.commit(&input.bucket, &tmp, pending.into_entry());
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let entry = result?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(entry)
    }

    pub(super) async fn abort_upload(&self, input: dto::AbortMultipartUploadInput) -> S3Result<()> {
        let dir = self.upload_dir(&input.bucket, &input.upload_id)?;
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|_| s3_error!(NoSuchUpload))
    }

    pub(super) async fn copy(&self, input: dto::CopyObjectInput) -> S3Result<Entry> {
        let dto::CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copy from an access point"));
        };
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == "REPLACE");
        if replace && **src_bucket == *input.bucket && **src_key == *input.key {
            // A copy onto itself only changes metadata, as in S3 and MinIO: no data moves.
            let headers = (
                input.content_type,
                input.content_encoding,
                input.metadata.unwrap_or_default(),
            );
            let if_match = input.copy_source_if_match.as_ref();
            return self.replace_metadata(&input.bucket, &input.key, if_match, headers);
        }
        let if_match = input.copy_source_if_match.as_ref();
        let (source, mut file) = self.opened(src_bucket, src_key, if_match)?;
        let tmp = self.tmp_path(&input.bucket);
        let dest = tmp.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = std::fs::File::create(&dest)?;
            std::io::copy(&mut file, &mut out)?;
            out.sync_data()
        })
        .await
        .map_err(internal_err)?
        .map_err(internal_err)?;
        let entry = Entry {
            key: input.key,
            content_type: if replace {
                input.content_type
            } else {
                source.content_type
            },
            content_encoding: if replace {
                input.content_encoding
            } else {
                source.content_encoding
            },
            metadata: if replace {
                input.metadata.unwrap_or_default()
            } else {
                source.metadata
            },
            ..source
        };
        let result = self.commit(&input.bucket, &tmp, entry);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Writes `parts`, in order, into a new file `out`, synced.
fn concatenate(parts: &[PathBuf], out: &Path) -> S3Result<()> {
    let mut dest = std::fs::File::create(out).map_err(internal_err)?;
    for part in parts {
        let mut src = std::fs::File::open(part).map_err(|_| s3_error!(InvalidPart))?;
        std::io::copy(&mut src, &mut dest).map_err(internal_err)?;
    }
    dest.sync_data().map_err(internal_err)
}
