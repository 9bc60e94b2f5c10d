//! How changes to the tree look in the store, apart from file contents: a deleted file or
//! directory marker, a renamed file (a copy pinned to the version, then a delete), a
//! metadata rewrite (a copy onto itself), and a symbolic link (a small object whose
//! metadata and body hold the target, as s3fs stores them).

use bytes::Bytes;

use super::{UploadError, Uploader};
use crate::artifact;
use crate::object::{ObjectHeaders, ObjectId};

impl Uploader {
    /// Deletes `key`, and drops its journaled uploads, which would bring it back; one
    /// that is gone already is no error.
    pub async fn delete(&self, key: &str) -> Result<(), UploadError> {
        self.client.delete_if_exists(key).await?;
        self.cancel(key);
        Ok(())
    }

    /// Whether `key` has an upload journaled and not yet in the store.
    pub fn has_pending(&self, key: &str) -> bool {
        self.journal.pending().iter().any(|e| e.key == key)
    }

    /// Moves version `id` to `to`; returns the new object's ETag. What was journaled for
    /// `to` is dropped: the moved object replaces it.
    pub async fn rename(&self, id: &ObjectId, to: &str) -> Result<Option<String>, UploadError> {
        let etag = self.client.move_object(id, to).await?;
        self.cancel(to);
        Ok(etag)
    }

    /// Drops every journaled upload of `key`, and the spools no writer holds.
    fn cancel(&self, key: &str) {
        for entry in self.journal.pending().into_iter().filter(|e| e.key == key) {
            if let Err(e) = self.journal.remove(&entry.spool) {
                tracing::warn!(key, "journal entry of a removed file not dropped: {e}");
                continue;
            }
            if !self.open_spools().contains(&entry.spool) {
                let _ = std::fs::remove_file(&entry.spool);
            }
            tracing::info!(key, spool = %entry.spool.display(), "pending upload dropped: the file was removed or replaced");
        }
        self.board.forget(key);
    }

    /// Replaces the metadata of version `id` (`stored_size` bytes) with `headers`;
    /// returns the new version's ETag.
    pub async fn rewrite_metadata(
        &self,
        id: &ObjectId,
        stored_size: u64,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, UploadError> {
        Ok(self
            .client
            .rewrite_metadata(id, stored_size, headers)
            .await?)
    }

    /// Stores a symbolic link at `key` pointing at `target`.
    pub async fn put_symlink(&self, key: &str, target: &str) -> Result<(), UploadError> {
        let mut headers = ObjectHeaders {
            content_type: Some("application/x-symlink".into()),
            ..Default::default()
        };
        let meta = &mut headers.user_metadata;
        let in_metadata = artifact::symlink_metadata(target);
        meta.insert(artifact::SYMLINK.into(), in_metadata.to_owned());
        meta.insert(
            artifact::SHA256.into(),
            artifact::sha256_hex(target.as_bytes()),
        );
        let body = Bytes::copy_from_slice(target.as_bytes());
        self.client.put(key, body, headers).await?;
        Ok(())
    }
}
