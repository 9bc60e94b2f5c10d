//! Changing what the xattrs show: a file's tier (`retention_days`), its S3 tags
//! (`tag.NAME`) and a restore from an archive (`restore`), each one request beside the
//! object (PutObjectTagging, RestoreObject), never a copy of its bytes. The rest of
//! `user.rgrid.*` is read-only.

use std::ffi::OsStr;

use super::{RESERVED_TAGS, RESTORE, RETENTION_DAYS, TAG};
use crate::fs::{FsError, RgridFs};
use crate::namespace::{InodeKind, InodeNo, Node};
use crate::object::ObjectHeaders;
use crate::retention::{Tier, MAX_DAYS, RETURN_TAG, TIER_TAG};

/// S3's limits on a tag's key and value, in characters.
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

impl RgridFs {
    /// setxattr: `retention_days` (`N` or `keep`) asks the store for a tier, `tag.NAME`
    /// sets an S3 tag, `restore` (days) restores an archived object; the other
    /// `user.rgrid.*` names are read-only (EPERM); names outside our namespace are not
    /// supported (so that `cp -a` carries on without them).
    pub async fn setxattr(&self, ino: InodeNo, name: &OsStr, value: &[u8]) -> Result<(), FsError> {
        let name = name.to_str().unwrap_or("");
        if !name.starts_with(super::OURS) {
            return Err(FsError::NotSupported);
        }
        self.writable(&[ino])?;
        let value = std::str::from_utf8(value).map_err(|_| FsError::InvalidValue)?;
        if let Some(tag) = name.strip_prefix(TAG) {
            let (tag, value) = (tag.to_owned(), value.to_owned());
            check_tag(&tag, &value)?;
            let node = self.stored_file(ino).await?;
            let id = node.object_id();
            self.namespace
                .edit_tags(&id, |tags| {
                    tags.insert(tag, value);
                })
                .await?;
            return Ok(());
        }
        match name {
            RETENTION_DAYS => {
                let tier = Tier::parse(value).filter(|t| *t != Tier::Latest);
                self.set_tier(ino, tier.ok_or(FsError::InvalidValue)?).await
            }
            RESTORE => {
                let days: u32 = value.trim().parse().map_err(|_| FsError::InvalidValue)?;
                if !(1..=MAX_DAYS).contains(&days) {
                    return Err(FsError::InvalidValue);
                }
                self.restore(ino, days).await
            }
            _ => Err(FsError::NotPermitted),
        }
    }

    /// removexattr: `retention_days` goes back to the mount's default tier, `tag.NAME`
    /// drops that tag.
    pub async fn removexattr(&self, ino: InodeNo, name: &OsStr) -> Result<(), FsError> {
        let name = name.to_str().unwrap_or("");
        if !name.starts_with(super::OURS) {
            return Err(FsError::NoAttribute);
        }
        self.writable(&[ino])?;
        if let Some(tag) = name.strip_prefix(TAG) {
            if tag.starts_with(RESERVED_TAGS) {
                return Err(FsError::NotPermitted);
            }
            let node = self.stored_file(ino).await?;
            let mut had = false;
            self.namespace
                .edit_tags(&node.object_id(), |tags| had = tags.remove(tag).is_some())
                .await?;
            return if had {
                Ok(())
            } else {
                Err(FsError::NoAttribute)
            };
        }
        match name {
            RETENTION_DAYS => self.set_tier(ino, self.retention.default_tier()).await,
            _ => Err(FsError::NotPermitted),
        }
    }

    /// Asks the store to restore archived file `ino` for `days`. A file not in an
    /// archive is EINVAL; a restore already under way is success.
    async fn restore(&self, ino: InodeNo, days: u32) -> Result<(), FsError> {
        let node = self.stored_file(ino).await?;
        let in_archive = node.headers.as_deref().is_some_and(|h| h.in_archive());
        if !in_archive {
            tracing::warn!(key = %node.key, "restore not asked for: the object is not archived");
            return Err(FsError::InvalidValue);
        }
        match self.namespace.restore(&node.key, days).await {
            Ok(()) => tracing::info!(key = %node.key, days, "restore asked for"),
            Err(e) if e.to_string().contains("RestoreAlreadyInProgress") => {
                tracing::info!(key = %node.key, "a restore is under way already");
            }
            Err(e) => return Err(e.into()),
        }
        self.namespace
            .reread_headers(ino, &node.object_id())
            .await?;
        Ok(())
    }

    /// Tags file `ino` with `tier`, if a lifecycle rule acts on it there: a tier that
    /// nothing enforces would show a date no one keeps.
    async fn set_tier(&self, ino: InodeNo, tier: Tier) -> Result<(), FsError> {
        let node = self.stored_file(ino).await?;
        if let Err(why) = self.retention.check_tier(&node.key, tier) {
            tracing::warn!(key = %node.key, "retention not set: {why}");
            return Err(FsError::Retention(why));
        }
        let id = node.object_id();
        let edited = self
            .namespace
            .edit_tags(&id, |tags| {
                tags.insert(TIER_TAG.to_owned(), tier.tag_value());
                tags.remove(RETURN_TAG);
            })
            .await;
        if let Err(e) = edited {
            tracing::warn!(key = %node.key, "retention not set: the store's tagging failed: {e}");
            return Err(e.into());
        }
        tracing::info!(key = %node.key, %tier, "retention tier set");
        // The store's x-amz-expiration follows the tag.
        self.namespace.reread_headers(ino, &id).await?;
        Ok(())
    }

    /// File `ino` as the store holds it, with its headers.
    async fn stored_file(&self, ino: InodeNo) -> Result<Node, FsError> {
        let node = self.namespace.describe(ino).await?;
        // Being written here: its upload would drop what is changed now.
        let being_written = self.namespace.is_local(ino);
        match (node.kind, &node.etag) {
            (InodeKind::Directory | InodeKind::Symlink, _) => Err(FsError::NotPermitted),
            (InodeKind::File, None) => Err(FsError::Busy),
            (InodeKind::File, Some(_)) if being_written => Err(FsError::Busy),
            (InodeKind::File, Some(_)) => Ok(node),
        }
    }

    /// Replaces the metadata of `node`'s object (same bytes, pinned to its version).
    pub(in crate::fs) async fn rewrite_metadata(
        &self,
        node: &Node,
        headers: ObjectHeaders,
    ) -> Result<(), FsError> {
        let new_etag = self
            .writable(&[node.ino])?
            .rewrite_metadata(&node.object_id(), node.stored_size, headers.clone())
            .await?;
        self.same_bytes_as(node.ino, &node.etag, new_etag.clone());
        self.namespace
            .rewritten(node.ino, node.etag.as_deref(), new_etag.clone(), headers);
        self.namespace.headers_stale(node.ino, new_etag.as_deref());
        Ok(())
    }
}

/// A user tag S3 would take: a key of ours is reserved (EPERM), sizes past S3's limits
/// are EINVAL.
fn check_tag(key: &str, value: &str) -> Result<(), FsError> {
    if key.starts_with(RESERVED_TAGS) {
        return Err(FsError::NotPermitted);
    }
    let key_len = key.chars().count();
    if key_len == 0 || key_len > MAX_TAG_KEY || value.chars().count() > MAX_TAG_VALUE {
        return Err(FsError::InvalidValue);
    }
    Ok(())
}
