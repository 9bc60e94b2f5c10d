//! Changes to the tree of [`RgridFs`]: unlink, mkdir, rmdir, rename, symlink and readlink,
//! and the answers to what this mount does not do (device nodes, hard links). Every name
//! is checked by the name rules before anything is asked of the store; how each change
//! looks in the store is the write engine's business (`upload/tree.rs`).

use std::collections::HashMap;
use std::ffi::OsStr;

use super::{lock, Attr, FsError, RgridFs};
use crate::artifact::KeptAttrs;
use crate::namespace::{entry_name, InodeKind, InodeNo, NamespaceError, Node, StoredVersion};
use crate::upload::{MovedVersion, TreeLimits, TreeMoveError};

/// The longest link target Linux takes.
const PATH_MAX: u64 = 4096;

impl RgridFs {
    /// Deletes file `name` of `parent`. A handle still open on it keeps working, on a
    /// file with no link left.
    pub async fn unlink(&self, parent: InodeNo, name: &OsStr) -> Result<(), FsError> {
        let name = entry_name(name)?;
        let uploader = self.writable(&[parent])?;
        let node = self.namespace.find(parent, name).await?;
        if node.kind == InodeKind::Directory {
            return Err(NamespaceError::IsADirectory.into());
        }
        uploader.remove(&node.key, node.etag.is_some()).await?;
        self.write_backs.forget(node.ino);
        self.namespace.remove(parent, name);
        Ok(())
    }

    /// Makes symbolic link `name` in `parent` pointing at `target`.
    pub async fn symlink(
        &self,
        parent: InodeNo,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<Attr, FsError> {
        let name = entry_name(name)?;
        let uploader = self.writable(&[parent])?;
        let target = target.to_str().ok_or(FsError::InvalidValue)?;
        let key = self.namespace.child_key(parent, name, InodeKind::Symlink)?;
        if self.namespace.find(parent, name).await.is_ok() {
            return Err(FsError::Exists);
        }
        uploader.put_symlink(&key, target).await?;
        let node = self.namespace.refresh(parent, name).await?;
        Ok(self.config.ownership.attr(&node))
    }

    /// The target of symbolic link `ino`.
    pub async fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>, FsError> {
        let node = self.namespace.describe(ino).await?;
        let target = node
            .headers
            .as_deref()
            .and_then(crate::artifact::symlink_target);
        match target {
            None => Err(FsError::InvalidValue),
            // Kept in the object's body only (not ASCII, or long).
            Some("") if node.stored_size > PATH_MAX => Err(FsError::InvalidValue),
            Some("") => {
                let range = 0..node.stored_size;
                Ok(self.engine.read_small(&node.object_id(), range).await?)
            }
            Some(target) => Ok(target.as_bytes().to_vec()),
        }
    }

    /// Makes directory `name` in `parent`; it exists in this mount until it has entries.
    pub async fn mkdir(&self, parent: InodeNo, name: &OsStr) -> Result<Attr, FsError> {
        let name = entry_name(name)?;
        self.writable(&[parent])?;
        if self.namespace.find(parent, name).await.is_ok() {
            return Err(FsError::Exists);
        }
        let node = self
            .namespace
            .create_local(parent, name, InodeKind::Directory)?;
        Ok(self.config.ownership.attr(&node))
    }

    /// Removes empty directory `name` of `parent` (and its marker object, if any).
    pub async fn rmdir(&self, parent: InodeNo, name: &OsStr) -> Result<(), FsError> {
        let name = entry_name(name)?;
        let uploader = self.writable(&[parent])?;
        let node = self.namespace.find(parent, name).await?;
        if node.kind != InodeKind::Directory {
            return Err(NamespaceError::NotADirectory.into());
        }
        if node.read_only {
            return Err(FsError::ReadOnly);
        }
        if !self.namespace.readdir(node.ino).await?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        uploader.delete(&node.key).await?;
        self.namespace.remove(parent, name);
        Ok(())
    }

    /// Renames a file (a server-side copy, then a delete; content not uploaded yet just
    /// goes up under the new name), or a directory (each object under it so, journaled;
    /// EXDEV past `TreeLimits::DEFAULT`, so that `mv` copies it). What the new name holds
    /// is replaced as rename(2) says: a file by a file, an empty directory by a directory,
    /// and nothing else. A file rename that fails changes nothing; a directory rename
    /// that fails midway is finished in the background.
    pub async fn rename(
        &self,
        parent: InodeNo,
        name: &OsStr,
        new_parent: InodeNo,
        new_name: &OsStr,
    ) -> Result<(), FsError> {
        let (name, new_name) = (entry_name(name)?, entry_name(new_name)?);
        let uploader = self.writable(&[parent, new_parent])?;
        let node = self.namespace.find(parent, name).await?;
        if node.read_only {
            return Err(FsError::ReadOnly);
        }
        let new_key = self.namespace.child_key(new_parent, new_name, node.kind)?;
        let target = self.rename_target(new_parent, new_name).await?;
        if let Some(target) = &target {
            if target.ino == node.ino {
                return Ok(()); // the same file: nothing to do
            }
            self.check_replaceable(&node, target).await?;
        }
        if node.kind == InodeKind::Directory {
            let empty = self.namespace.readdir(node.ino).await?.is_empty();
            let mut moved = Vec::new();
            if !(empty && self.namespace.is_local(node.ino)) {
                let under = |ino| self.namespace.key_of(ino);
                self.complete_fills(|ino| under(ino).is_some_and(|k| k.starts_with(&node.key)))
                    .await;
                moved = self.move_tree(&node.key, &new_key).await?;
                // Uploads the move waited for landed under the old keys: taken up there
                // first, so that the versions the move copied are the files' own.
                self.settle_write_backs().await;
            }
            self.namespace
                .rename(parent, name, new_parent, new_name, new_key.clone());
            self.namespace.rekey_tree(&node.key, &new_key);
            self.carried(&moved);
            return Ok(());
        }
        let pending = uploader.has_pending(&node.key) || node.etag.is_none();
        self.complete_fills(|ino| ino == node.ino).await;
        let etag = uploader.rename_file(&node.object_id(), &new_key).await?;
        if let Some(replaced) = target {
            self.write_backs.forget(replaced.ino);
        }
        self.namespace
            .rename(parent, name, new_parent, new_name, new_key);
        if !pending {
            self.renamed(&node, etag);
        }
        Ok(())
    }

    /// Moves the objects of a directory from prefix `from` to `to`, within the bounds
    /// of `TreeLimits::DEFAULT` (EXDEV past them, so that `mv` copies the tree itself).
    async fn move_tree(&self, from: &str, to: &str) -> Result<Vec<MovedVersion>, FsError> {
        let uploader = self.uploader.as_ref().ok_or(FsError::ReadOnly)?;
        match uploader.move_tree(from, to, TreeLimits::DEFAULT).await {
            Ok(moved) => Ok(moved),
            Err(TreeMoveError::TooLarge { prefix }) => {
                tracing::info!(prefix, "directory too large to rename in the store: EXDEV");
                Err(FsError::CrossDevice)
            }
            Err(TreeMoveError::Upload(e)) => Err(e.into()),
        }
    }

    /// What `parent/name` holds now, if anything.
    async fn rename_target(&self, parent: InodeNo, name: &str) -> Result<Option<Node>, FsError> {
        match self.namespace.find(parent, name).await {
            Ok(node) => Ok(Some(node)),
            Err(NamespaceError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The objects a directory rename copied: a file that was the version copied (one
    /// being written here keeps its version until its upload) is the copy now, same
    /// bytes, so a later rename or fill pinned to it finds it.
    fn carried(&self, moved: &[MovedVersion]) {
        let by_key: HashMap<&str, &MovedVersion> =
            moved.iter().map(|m| (m.key.as_str(), m)).collect();
        let copy_of = |key: &str, etag: Option<&str>| {
            let version = by_key.get(key).filter(|v| Some(v.was.as_str()) == etag)?;
            Some(version.etag.clone())
        };
        for (ino, key) in self.namespace.carried(copy_of) {
            let version = by_key[key.as_str()];
            self.same_bytes_as(ino, &Some(version.was.clone()), version.etag.clone());
        }
    }

    /// Fails unless `source` may replace `target` in a rename.
    async fn check_replaceable(&self, source: &Node, target: &Node) -> Result<(), FsError> {
        let dir = |n: &Node| n.kind == InodeKind::Directory;
        match (dir(source), dir(target)) {
            (false, false) => Ok(()),
            (false, true) => Err(NamespaceError::IsADirectory.into()),
            (true, false) => Err(NamespaceError::NotADirectory.into()),
            (true, true) if target.read_only => Err(FsError::ReadOnly),
            (true, true) => match self.namespace.readdir(target.ino).await?.is_empty() {
                true => Ok(()),
                false => Err(FsError::NotEmpty),
            },
        }
    }

    /// File `node` now lives under its new key as version `etag`: same bytes, so the
    /// page cache stays, and readers of the new name pin the copy's ETag.
    fn renamed(&self, node: &Node, etag: Option<String>) {
        lock(&self.cached_versions).insert(node.ino, etag.clone());
        // The copy carries the source's stored attributes, not any still pending here.
        let kept = node.headers.as_deref().map_or(node.kept, KeptAttrs::of);
        let stored = StoredVersion {
            size: node.size,
            stored_size: node.stored_size,
            etag,
            kept,
        };
        self.namespace.stored(node.ino, stored);
    }

    /// mknod: device nodes, FIFOs and sockets cannot be objects.
    pub async fn mknod(&self, parent: InodeNo, name: &OsStr) -> Result<Attr, FsError> {
        self.refuse_new_name(parent, name).await
    }

    /// link: an object has one key, so a file has one name.
    pub async fn link(&self, parent: InodeNo, name: &OsStr) -> Result<Attr, FsError> {
        self.refuse_new_name(parent, name).await
    }

    /// The answer to making `parent/name` something this mount cannot store: the errors
    /// any creation would give first (a bad name, a read-only place, an existing name),
    /// else EPERM.
    async fn refuse_new_name(&self, parent: InodeNo, name: &OsStr) -> Result<Attr, FsError> {
        let name = entry_name(name)?;
        self.writable(&[parent])?;
        self.namespace.child_key(parent, name, InodeKind::File)?;
        if self.namespace.find(parent, name).await.is_ok() {
            return Err(FsError::Exists);
        }
        Err(FsError::NotPermitted)
    }
}
