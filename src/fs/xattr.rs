//! Extended attributes of [`RgridFs`]: the artifact metadata under `user.rgrid.*`, read
//! from the object's HEAD (once per version, kept with the inode), its tags (once per
//! version and metadata TTL), its key, and the bucket's lifecycle rules:
//!
//! - `expires_at`: when the store deletes it (`never` when nothing does), absent when
//!   that cannot be told (its tags unreadable while a tag rule could apply);
//! - `retention_days`: the tier asked for (`30`, `keep`), settable (see `set.rs`);
//! - `tag.NAME`: the object's own S3 tags, settable; `kind`, `storage_class`, `restore`,
//!   `sha256`, `etag`, `stored_size`, `content_type`, `compression`, `execution_id`,
//!   `artifact_type`, `upload_state`;
//! - `url`, asked for by name and never listed: a presigned GET link.

mod set;

use std::ffi::OsStr;

use super::control::{STATUS, SYNC};
use super::{Caller, FsError, RgridFs, XattrValue};
use crate::artifact::{self, ArtifactKind, Compression};
use crate::namespace::{InodeKind, InodeNo, Node};
use crate::object::{ObjectError, Restore, Tags};
use crate::retention::{Expiry, Subject, Tier};
use crate::upload::UploadState;

const EXPIRES_AT: &str = "user.rgrid.expires_at";
const RETENTION_DAYS: &str = "user.rgrid.retention_days";
const SHA256: &str = "user.rgrid.sha256";
const ETAG: &str = "user.rgrid.etag";
const STORED_SIZE: &str = "user.rgrid.stored_size";
const CONTENT_TYPE: &str = "user.rgrid.content_type";
const COMPRESSION: &str = "user.rgrid.compression";
const EXECUTION_ID: &str = "user.rgrid.execution_id";
const ARTIFACT_TYPE: &str = "user.rgrid.artifact_type";
const UPLOAD_STATE: &str = "user.rgrid.upload_state";
const KIND: &str = "user.rgrid.kind";
const STORAGE_CLASS: &str = "user.rgrid.storage_class";
const RESTORE: &str = "user.rgrid.restore";
const URL: &str = "user.rgrid.url";
/// The object's S3 tags, one attribute each.
const TAG: &str = "user.rgrid.tag.";

/// Tags rgrid itself keeps (hash, tier): shown under their own names, not as `tag.*`.
const RESERVED_TAGS: &str = "rgrid-";

/// Our namespace; other names are not ours to set.
const OURS: &str = "user.rgrid.";

impl RgridFs {
    /// The attributes `ino` has, with their values.
    async fn xattrs(&self, ino: InodeNo) -> Result<Vec<(String, String)>, FsError> {
        let node = self.namespace.describe(ino).await?;
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |name: &str, value: String| out.push((name.to_owned(), value));
        let execution = artifact::execution_of(&node.key);
        if let Some((id, _)) = execution {
            push(EXECUTION_ID, id.to_owned());
        }
        if node.kind == InodeKind::Directory {
            return Ok(out);
        }
        if let Some((_, Some(kind))) = execution {
            push(ARTIFACT_TYPE, kind.name().to_owned());
        }
        let headers = node.headers.as_deref();
        let content_type = headers.and_then(|h| h.content_type.as_deref());
        push(
            KIND,
            ArtifactKind::of(&node.key, content_type).name().into(),
        );
        let compression = headers.map_or(Compression::None, artifact::compression);
        push(COMPRESSION, compression.name().to_owned());
        if let Some(sha) = headers.and_then(artifact::sha256) {
            push(SHA256, sha.to_owned());
        }
        if let Some(content_type) = content_type {
            push(CONTENT_TYPE, content_type.to_owned());
        }
        if let Some(state) = self.upload_state(&node) {
            push(UPLOAD_STATE, state);
        }
        if node.etag.is_none() {
            // Not in the store yet: the tier it will be asked for, nothing more.
            push(RETENTION_DAYS, self.retention.default_tier().shown());
            return Ok(out);
        }
        let etag = node.etag.as_deref().unwrap_or_default();
        push(ETAG, etag.trim_matches('"').to_owned());
        push(STORED_SIZE, node.stored_size.to_string());
        if let Some(headers) = headers {
            let class = headers.storage_class.as_deref().unwrap_or("STANDARD");
            push(STORAGE_CLASS, class.to_owned());
            match headers.restore {
                Some(Restore::Ongoing) => push(RESTORE, "ongoing".into()),
                Some(Restore::Until(t)) => push(RESTORE, artifact::format_time(t)),
                None => {}
            }
        }
        let tags = self.stored_tags(&node).await;
        // Reading the tags may have read the HEAD again (its expiry follows them).
        let node = self.namespace.describe(ino).await?;
        out.extend(self.retention_xattrs(&node, tags.as_ref()));
        for (key, value) in tags.iter().flatten() {
            if !key.starts_with(RESERVED_TAGS) {
                out.push((format!("{TAG}{key}"), value.clone()));
            }
        }
        Ok(out)
    }

    /// The tags of a stored file; `None` when they cannot be read (no tagging here, or
    /// the store failed): what depends on them is then left out, not guessed.
    async fn stored_tags(&self, node: &Node) -> Option<Tags> {
        match self.namespace.tags(node).await {
            Ok(tags) => Some(tags.as_ref().clone()),
            Err(e) => {
                if !matches!(
                    e,
                    crate::namespace::NamespaceError::Object(ObjectError::Unsupported { .. })
                ) {
                    tracing::debug!(key = %node.key, "tags not read: {e}");
                }
                None
            }
        }
    }

    /// `expires_at` and `retention_days` of a stored file with `tags`.
    fn retention_xattrs(&self, node: &Node, tags: Option<&Tags>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let object = Subject {
            key: &node.key,
            size: node.stored_size,
            last_modified: node.mtime,
        };
        match self.retention.expiry(object, node.headers.as_deref(), tags) {
            Some(Expiry::Never) => out.push((EXPIRES_AT.to_owned(), "never".to_owned())),
            Some(Expiry::At { at, .. }) => {
                out.push((EXPIRES_AT.to_owned(), artifact::format_time(at)));
            }
            None => {}
        }
        if let Some(tier) = tags.and_then(Tier::of) {
            out.push((RETENTION_DAYS.to_owned(), tier.shown()));
        }
        out
    }

    /// Where the upload of a file written through this mount stands: `pending` while it
    /// is being written or waits, `uploading`, `committed`, or `failed: <reason>`.
    /// Absent for files this daemon did not write.
    fn upload_state(&self, node: &Node) -> Option<String> {
        let board = self.uploader.as_ref()?.board();
        let latest = board.latest(&node.key);
        if !(self.namespace.is_local(node.ino) && node.kind == InodeKind::File) {
            return latest.map(|r| r.state.to_string());
        }
        // Written here: an upload committed before the last write is not of this content.
        match latest {
            None => Some("pending".into()),
            Some(r) if r.state == UploadState::Committed && r.started < node.mtime => {
                Some("pending".into())
            }
            Some(r) => Some(r.state.to_string()),
        }
    }

    /// A presigned GET link of file `ino`, valid for the configured time. A gzip-stored
    /// object's link serves its stored (compressed) bytes with `Content-Encoding: gzip`,
    /// so that browsers and `curl --compressed` decode them.
    async fn share_link(&self, ino: InodeNo) -> Result<String, FsError> {
        let node = self.namespace.describe(ino).await?;
        if node.kind != InodeKind::File || node.etag.is_none() {
            return Err(FsError::NoAttribute);
        }
        let headers = node.headers.as_deref();
        let gzip = headers.map(artifact::compression) == Some(Compression::Gzip);
        let encoding = gzip.then_some("gzip");
        let ttl = self.config.share_link_ttl;
        Ok(self.namespace.share_link(&node.key, ttl, encoding).await?)
    }

    /// listxattr: the names, each ending in NUL, for a buffer of `size`.
    pub async fn listxattr(&self, ino: InodeNo, size: u32) -> Result<XattrValue, FsError> {
        let mut names = Vec::new();
        for (name, _) in self.xattrs(ino).await? {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        XattrValue::fit(names, size)
    }

    /// getxattr: the value of `name` for a buffer of `size`, ENODATA when `ino` has no
    /// such attribute. On the root, the control channel's names answer `caller`.
    pub async fn getxattr(
        &self,
        ino: InodeNo,
        name: &OsStr,
        size: u32,
        caller: Caller,
    ) -> Result<XattrValue, FsError> {
        let Some(name) = name.to_str().filter(|n| n.starts_with(OURS)) else {
            return Err(FsError::NoAttribute);
        };
        if ino == InodeNo::ROOT {
            match name {
                STATUS => return self.control(STATUS, size, caller).await,
                SYNC => return self.control(SYNC, size, caller).await,
                _ => {}
            }
        }
        if name == URL {
            return XattrValue::fit(self.share_link(ino).await?.into_bytes(), size);
        }
        let value = self.xattrs(ino).await?.into_iter().find(|(n, _)| n == name);
        let value = value.map(|(_, v)| v.into_bytes());
        XattrValue::fit(value.ok_or(FsError::NoAttribute)?, size)
    }
}
