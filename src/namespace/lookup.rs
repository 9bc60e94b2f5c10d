//! Lookup and describe: what a name is (asking the store when the cache is stale), the
//! current attributes of an inode, and its HEAD headers once per version.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::tables::{self, Found, Inode, Tables};
use super::{check_key, check_name, InodeKind, InodeNo, Namespace, NamespaceError, Node};
use crate::artifact::{self, Compression, KeptAttrs};
use crate::object::{ObjectError, ObjectHeaders, ObjectInfo, ObjectMeta};
use crate::retention::Subject;

impl Namespace {
    /// The entry `name` in directory `parent`; counts one kernel reference.
    pub async fn lookup(&self, parent: InodeNo, name: &str) -> Result<Node, NamespaceError> {
        let node = self.find(parent, name).await?;
        Ok(self.remember(parent, name, &node))
    }

    /// The entry `name` in directory `parent`, without counting a kernel reference.
    pub async fn find(&self, parent: InodeNo, name: &str) -> Result<Node, NamespaceError> {
        check_name(name).map_err(NamespaceError::lookup_of)?;
        let prefix = {
            let tables = self.tables();
            let dir = tables.dir(parent)?;
            if let Some(node) = self.cached_child(&tables, dir, name) {
                return node.ok_or(NamespaceError::NotFound);
            }
            dir.node.key.clone()
        };
        // A key the store cannot hold names nothing, and is not worth a request.
        let found = match check_key(&tables::child_key(&prefix, name, InodeKind::File)) {
            Ok(()) => self.resolve(&prefix, name).await?,
            Err(_) => None,
        };
        let mut tables = self.tables();
        let Some(found) = found else {
            if let Some(held) = tables.held_dir(parent, name) {
                return Ok(held);
            }
            tables.remember_absent(parent, name);
            return Err(NamespaceError::NotFound);
        };
        Ok(tables.upsert(parent, name, found, self.mount_time))
    }

    /// `name` in `parent` as the store has it now, whatever was cached; counts one kernel
    /// reference (after this mount made the object, e.g. a symlink).
    pub async fn refresh(&self, parent: InodeNo, name: &str) -> Result<Node, NamespaceError> {
        let prefix = self.tables().dir(parent)?.node.key.clone();
        let found = self.resolve(&prefix, name).await?;
        let mut tables = self.tables();
        let found = found.ok_or(NamespaceError::NotFound)?;
        tables.forget_listing(parent);
        let node = tables.upsert(parent, name, found, self.mount_time);
        Ok(tables.reference(parent, name, &node))
    }

    /// A child known well enough to answer without the store: `Some(None)` means known
    /// absent (a fresh listing lacks it).
    fn cached_child(&self, tables: &Tables, dir: &Inode, name: &str) -> Option<Option<Node>> {
        let child = tables.child(dir.node.ino, name);
        if let Some(child) = child.filter(|c| c.local || self.fresh(c.validated)) {
            return Some(Some(child.node.clone()));
        }
        let slot = (dir.node.ino, name.to_owned());
        if tables.absent.get(&slot).is_some_and(|at| self.fresh(*at)) {
            return Some(None);
        }
        let (at, entries) = dir.listing.as_ref()?;
        if !self.fresh(*at) {
            return None;
        }
        Some(
            entries
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.node.clone()),
        )
    }

    /// Current attributes of `ino` with, for a file in the store, its HEAD headers
    /// (asked once per version).
    pub async fn describe(&self, ino: InodeNo) -> Result<Node, NamespaceError> {
        let node = self.getattr(ino).await?;
        let known = node.headers.is_some() || node.etag.is_none() || node.unlinked;
        if node.kind != InodeKind::File || known {
            return Ok(node);
        }
        let info = match self.head(&node.key).await {
            Err(ObjectError::NotFound { .. }) => return Err(NamespaceError::NotFound),
            Ok(info) if self.expired(&info) => return Err(NamespaceError::NotFound),
            other => other?,
        };
        let mut tables = self.tables();
        let inode = tables.inode_mut(ino)?;
        // Not if it changed while HEAD was out (an upload of ours landed meanwhile).
        if !inode.local && inode.node.etag == node.etag {
            inode.node.size = inode.size_for(&info.meta.etag, view_size(&info.meta, &info.headers));
            inode.node.stored_size = info.meta.size;
            inode.node.mtime = info.meta.last_modified;
            inode.node.etag = info.meta.etag;
            if !inode.kept_pending {
                inode.node.kept = KeptAttrs::of(&info.headers);
            }
            inode.node.headers = Some(Arc::new(info.headers));
            inode.validated = Instant::now();
        }
        Ok(inode.node.clone())
    }

    /// `ino`'s object as the store has it now (a HEAD), without changing what this mount
    /// shows: for a writer that must start from the stored content while another handle
    /// of the same file has changed its size here.
    pub async fn stored_node(&self, node: &Node) -> Result<Node, NamespaceError> {
        let info = match self.head(&node.key).await {
            Err(ObjectError::NotFound { .. }) => return Err(NamespaceError::NotFound),
            other => other?,
        };
        let found = file_found(info.meta, Some(info.headers));
        Ok(Node {
            size: found.size,
            stored_size: found.stored_size,
            etag: found.etag,
            headers: found.headers,
            kept: found.kept,
            ..node.clone()
        })
    }

    /// Current attributes of `ino`, asking the store when the cached ones are stale.
    pub async fn getattr(&self, ino: InodeNo) -> Result<Node, NamespaceError> {
        let (parent, name, prefix) = {
            let tables = self.tables();
            let inode = tables.inode(ino)?;
            // Without a name the store cannot say more: what the inode was is what it is.
            if inode.local || inode.node.unlinked || self.fresh(inode.validated) {
                return Ok(inode.node.clone());
            }
            let parent = &tables
                .inodes
                .get(&inode.parent)
                .ok_or(NamespaceError::NotFound)?
                .node;
            (inode.parent, inode.name.clone(), parent.key.clone())
        };
        let Some(found) = self.resolve(&prefix, &name).await? else {
            let held = self.tables().held_dir(parent, &name);
            return held
                .filter(|d| d.ino == ino)
                .ok_or(NamespaceError::NotFound);
        };
        let node = self.tables().upsert(parent, &name, found, self.mount_time);
        if node.ino != ino {
            // The name now holds something of another kind; this inode is gone.
            return Err(NamespaceError::NotFound);
        }
        Ok(node)
    }

    /// Asks the store what `prefix + name` is: a directory (any key below it) wins over a
    /// file of the same name. HEAD and LIST go out together.
    pub(super) async fn resolve(
        &self,
        prefix: &str,
        name: &str,
    ) -> Result<Option<Found>, NamespaceError> {
        let key = format!("{prefix}{name}");
        let dir_prefix = format!("{key}/");
        let (head, list) = tokio::join!(
            self.head(&key),
            self.client.list_page(&dir_prefix, None, Some(1))
        );
        let list = list?;
        if !list.objects.is_empty() || !list.prefixes.is_empty() {
            if head.is_ok() {
                self.skipped
                    .report(&key, "shadowed by a directory of the same name");
            }
            return Ok(Some(Found::directory(dir_prefix, self.mount_time)));
        }
        match head {
            Ok(info) if self.expired(&info) => Ok(None),
            Ok(info) => Ok(Some(file_found(info.meta, Some(info.headers)))),
            Err(ObjectError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// HEAD of `key`, with the SHA-256 of a streamed upload taken from its tag (one more
    /// request, made only for objects whose metadata says the hash is there). A tag that
    /// cannot be read leaves the object unverified, as one without a hash.
    pub(super) async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        let mut info = self.client.head(key).await?;
        if artifact::sha256_in_tag(&info.headers) {
            let etag = info.meta.etag.as_deref();
            let adopted = match self.client.tags(key).await {
                Ok(tags) => artifact::adopt_tagged_sha256(&mut info.headers, &tags, etag),
                Err(e) => {
                    tracing::debug!(key, "tags not read: {e}");
                    false
                }
            };
            if !adopted {
                tracing::debug!(key, "no SHA-256 tag for this version: not verified");
            }
        }
        Ok(info)
    }

    /// Whether the object is past its expiry, as far as HEAD and the rules tell without
    /// its tags: the store is about to delete it, so it is shown as already gone.
    pub(super) fn expired(&self, info: &ObjectInfo) -> bool {
        let by_header = info
            .headers
            .expiration
            .is_some_and(|at| at <= SystemTime::now());
        let gone = by_header || self.retention.past_rules(subject(&info.meta));
        if gone {
            tracing::debug!(key = %info.meta.key, "expired, hidden");
        }
        gone
    }
}

/// The size a reader of the object sees, as far as its metadata tells: the original size
/// of a gzip-stored object that recorded it, else the stored size.
fn view_size(meta: &ObjectMeta, headers: &ObjectHeaders) -> u64 {
    match artifact::compression(headers) {
        Compression::Gzip => artifact::original_size(headers).unwrap_or(meta.size),
        Compression::None => meta.size,
    }
}

/// An object as the retention rules see it.
pub(super) fn subject(meta: &ObjectMeta) -> Subject<'_> {
    Subject {
        key: &meta.key,
        size: meta.size,
        last_modified: meta.last_modified,
    }
}

/// What a listing entry (no headers) or a HEAD says of a file.
pub(super) fn file_found(meta: ObjectMeta, headers: Option<ObjectHeaders>) -> Found {
    let link = headers
        .as_ref()
        .and_then(artifact::symlink_target)
        .is_some();
    Found {
        kind: if link {
            InodeKind::Symlink
        } else {
            InodeKind::File
        },
        size: headers.as_ref().map_or(meta.size, |h| view_size(&meta, h)),
        stored_size: meta.size,
        key: meta.key,
        mtime: meta.last_modified,
        etag: meta.etag,
        kept: headers.as_ref().map(KeptAttrs::of).unwrap_or_default(),
        headers: headers.map(Arc::new),
    }
}
