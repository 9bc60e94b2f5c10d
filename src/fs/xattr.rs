//! Extended attributes of [`RgridFs`]: the artifact metadata under `user.rgrid.*` (expiry,
//! SHA-256, ETag, stored size, content type, compression, execution and artifact type),
//! read from the object's metadata (one HEAD per version, kept with the inode) and from
//! its key. `expires_at` and `retention_days` can be set on a writable file: the store
//! then gets the object's metadata rewritten, pinned to the version read, so that a
//! concurrent writer's object never gets our metadata.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use super::control::{STATUS, SYNC};
use super::{lock, Caller, FsError, RgridFs, XattrValue};
use crate::artifact;
use crate::namespace::{InodeKind, InodeNo, Node};
use crate::object::ObjectHeaders;
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

/// A century: longer retentions are surely a typo.
const MAX_RETENTION_DAYS: u32 = 36_525;

/// Our namespace; other names are not ours to set.
const OURS: &str = "user.rgrid.";

impl RgridFs {
    /// The attributes `ino` has, with their values.
    async fn xattrs(&self, ino: InodeNo) -> Result<Vec<(&'static str, String)>, FsError> {
        let node = self.namespace.describe(ino).await?;
        let mut out = Vec::new();
        let execution = artifact::execution_of(&node.key);
        if let Some((id, _)) = execution {
            out.push((EXECUTION_ID, id.to_owned()));
        }
        if node.kind == InodeKind::Directory {
            return Ok(out);
        }
        if let Some((_, Some(kind))) = execution {
            out.push((ARTIFACT_TYPE, kind.name().to_owned()));
        }
        let headers = node.headers.as_deref();
        let expiry = self.retention.expiry(&node.key, node.mtime, headers);
        out.push((EXPIRES_AT, artifact::format_time(expiry.at)));
        let days = self.retention.days(&node.key, headers);
        out.push((RETENTION_DAYS, days.to_string()));
        let compression = headers.map_or(artifact::Compression::None, artifact::compression);
        out.push((COMPRESSION, compression.name().to_owned()));
        if let Some(sha) = headers.and_then(artifact::sha256) {
            out.push((SHA256, sha.to_owned()));
        }
        if let Some(content_type) = headers.and_then(|h| h.content_type.clone()) {
            out.push((CONTENT_TYPE, content_type));
        }
        if let Some(etag) = &node.etag {
            out.push((ETAG, etag.trim_matches('"').to_owned()));
            out.push((STORED_SIZE, node.stored_size.to_string()));
        }
        if let Some(state) = self.upload_state(&node) {
            out.push((UPLOAD_STATE, state));
        }
        Ok(out)
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
        let value = self
            .xattrs(ino)
            .await?
            .into_iter()
            .find(|(n, _)| *n == name);
        let value = value.map(|(_, v)| v.into_bytes());
        XattrValue::fit(value.ok_or(FsError::NoAttribute)?, size)
    }

    /// setxattr: `expires_at` (RFC 3339) and `retention_days` of a file change its
    /// retention; the other `user.rgrid.*` names are read-only (EPERM); names outside
    /// our namespace are not supported (so that `cp -a` carries on without them).
    pub async fn setxattr(&self, ino: InodeNo, name: &OsStr, value: &[u8]) -> Result<(), FsError> {
        let name = name.to_str().unwrap_or("");
        if !name.starts_with(OURS) {
            return Err(FsError::NotSupported);
        }
        self.writable(&[ino])?;
        let value = std::str::from_utf8(value).map_err(|_| FsError::InvalidValue)?;
        let (expires_at, days) = match name {
            EXPIRES_AT => (
                artifact::parse_time(value).ok_or(FsError::InvalidValue)?,
                None,
            ),
            RETENTION_DAYS => {
                let days: u32 = value.trim().parse().map_err(|_| FsError::InvalidValue)?;
                if days > MAX_RETENTION_DAYS {
                    return Err(FsError::InvalidValue);
                }
                let kept = Duration::from_secs(u64::from(days) * 86_400);
                (SystemTime::now() + kept, Some(days))
            }
            _ => return Err(FsError::NotPermitted),
        };
        let node = self.stored_file(ino).await?;
        let mut headers = node.headers.as_deref().cloned().unwrap_or_default();
        let meta = &mut headers.user_metadata;
        meta.insert(
            artifact::EXPIRES_AT.to_owned(),
            artifact::format_time(expires_at),
        );
        match days {
            Some(days) => meta.insert(artifact::RETENTION_DAYS.to_owned(), days.to_string()),
            None => meta.remove(artifact::RETENTION_DAYS),
        };
        self.rewrite_metadata(&node, headers).await
    }

    /// removexattr: drops a retention set on the file, so that the bucket's policy applies.
    pub async fn removexattr(&self, ino: InodeNo, name: &OsStr) -> Result<(), FsError> {
        let name = name.to_str().unwrap_or("");
        if !name.starts_with(OURS) {
            return Err(FsError::NoAttribute);
        }
        self.writable(&[ino])?;
        if name != EXPIRES_AT && name != RETENTION_DAYS {
            return Err(FsError::NotPermitted);
        }
        let node = self.stored_file(ino).await?;
        let mut headers = node.headers.as_deref().cloned().unwrap_or_default();
        let meta = &mut headers.user_metadata;
        let had = meta.remove(artifact::EXPIRES_AT).is_some();
        let had = meta.remove(artifact::RETENTION_DAYS).is_some() || had;
        if !had {
            return Err(FsError::NoAttribute);
        }
        self.rewrite_metadata(&node, headers).await
    }

    /// File `ino` as the store holds it, with its headers.
    async fn stored_file(&self, ino: InodeNo) -> Result<Node, FsError> {
        let node = self.namespace.describe(ino).await?;
        // Being written here: its upload would drop metadata rewritten now.
        let being_written = self.namespace.is_local(ino);
        match (node.kind, &node.etag) {
            (InodeKind::Directory | InodeKind::Symlink, _) => Err(FsError::NotPermitted),
            (InodeKind::File, None) => Err(FsError::Busy),
            (InodeKind::File, Some(_)) if being_written => Err(FsError::Busy),
            (InodeKind::File, Some(_)) => Ok(node),
        }
    }

    /// Replaces the metadata of `node`'s object (same bytes, pinned to its version).
    pub(super) async fn rewrite_metadata(
        &self,
        node: &Node,
        headers: ObjectHeaders,
    ) -> Result<(), FsError> {
        let new_etag = self
            .writable(&[node.ino])?
            .rewrite_metadata(&node.object_id(), node.stored_size, headers.clone())
            .await?;
        // A page cache that holds these bytes holds them under the new version too.
        let mut cached = lock(&self.cached_versions);
        if cached.get(&node.ino) == Some(&node.etag) {
            cached.insert(node.ino, new_etag.clone());
        }
        drop(cached);
        self.namespace
            .rewritten(node.ino, node.etag.as_deref(), new_etag, headers);
        Ok(())
    }
}
