//! How changes to the tree look in the store, apart from file contents: a deleted file or
//! directory marker, a renamed file (a copy pinned to the version, then a delete; or, for
//! content still pending, its journal entries moved to the new name), a metadata rewrite
//! (a copy onto itself), and a symbolic link (a small object whose metadata and body hold
//! the target, as s3fs stores them). Each runs under the lock of the keys it touches, so
//! an upload of the same file never lands in between.

use bytes::Bytes;

use super::{JournalEntry, UploadError, Uploader};
use crate::artifact;
use crate::object::{ObjectHeaders, ObjectId};

impl Uploader {
    /// Deletes `key`, and drops its journaled uploads, which would bring it back; one
    /// that is gone already is no error. An upload of it in flight lands first, then
    /// goes.
    pub async fn delete(&self, key: &str) -> Result<(), UploadError> {
        self.remove(key, true).await
    }

    /// Removes file `key`: its journaled uploads are dropped and, if the store may hold
    /// it (`stored`, or an upload of it has landed meanwhile), the object is deleted. A
    /// file only ever written here costs no request.
    pub async fn remove(&self, key: &str, stored: bool) -> Result<(), UploadError> {
        let _held = self.key_locks.lock(key).await;
        self.cancel(key);
        if stored || self.queue.landed(key) {
            self.client.delete_if_exists(key).await?;
        }
        Ok(())
    }

    /// Whether `key` has an upload journaled and not yet in the store.
    pub fn has_pending(&self, key: &str) -> bool {
        !self.journal.of_key(key).is_empty()
    }

    /// Renames file `from` (version `from.etag` in the store, if any) to `to`. Content
    /// closed and not uploaded yet goes to `to` only: its journal entries move there and
    /// `from` is never created (a stored older version of it is deleted). Otherwise the
    /// stored version moves (copy, then delete). Returns the ETag of the object now at
    /// `to`, if the store has one; what was journaled for `to` is superseded either way.
    pub async fn rename_file(
        &self,
        from: &ObjectId,
        to: &str,
    ) -> Result<Option<String>, UploadError> {
        let _held = self.key_locks.lock_both(&from.key, to).await;
        let pending = self.journal.of_key(&from.key);
        if pending.is_empty() {
            // A write-back upload that landed since the caller looked is the file's
            // content now, and the version to move.
            let from = match self.queue.landed_version(&from.key) {
                Some(etag) => ObjectId::new(from.key.clone(), etag),
                None if from.etag.is_none() => {
                    return Ok(None); // still being written: its close goes to the new name
                }
                None => from.clone(),
            };
            let etag = self.client.move_object(&from, to).await?;
            self.cancel(to);
            return Ok(etag);
        }
        self.cancel(to);
        for entry in pending {
            let moved = JournalEntry {
                key: to.to_owned(),
                ..entry
            };
            self.journal.record(moved)?;
        }
        if from.etag.is_some() || self.queue.landed(&from.key) {
            self.client.delete_if_exists(&from.key).await?;
        }
        Ok(None)
    }

    /// Drops every journaled upload of `key`, and the spools nobody holds.
    fn cancel(&self, key: &str) {
        for entry in self.journal.of_key(key) {
            self.drop_entry(&entry);
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
