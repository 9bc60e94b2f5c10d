//! This mount's overlay on the store: files being written and directories made here
//! (whose facts win over the store's until uploaded), attributes set and waiting to go
//! up, sizes readers found out, and the changes of the tree: create, remove, rename.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::tables::{checked_child_key, Inode, LearnedSize, Tables};
use super::{
    check_name, DirEntry, InodeKind, InodeNo, Namespace, NamespaceError, Node, StoredVersion,
};
use crate::artifact::KeptAttrs;
use crate::object::ObjectHeaders;

/// The attributes to upload with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadAttrs {
    /// Mode and mtime to keep in the object's metadata.
    pub kept: KeptAttrs,
    /// Set here since the last upload: the object does not carry them yet.
    pub pending: bool,
}

impl Namespace {
    /// Makes `parent/name` a file or directory of this mount, not (yet) in the store; counts
    /// one kernel reference, as a lookup would.
    pub fn create_local(
        &self,
        parent: InodeNo,
        name: &str,
        kind: InodeKind,
    ) -> Result<Node, NamespaceError> {
        check_name(name).map_err(NamespaceError::InvalidName)?;
        let mut tables = self.tables();
        let dir = tables.dir_mut(parent)?;
        if dir.node.read_only {
            return Err(NamespaceError::ReadOnly);
        }
        let key = checked_child_key(&dir.node.key, name, kind)?;
        let listing = dir.listing.take();
        let ino = tables.allocate();
        let node = Node::empty(ino, kind, key, SystemTime::now());
        let mut inode = Inode::new(node.clone(), parent, name, 1);
        inode.local = true;
        // A directory made here starts empty: lookups of new names in it (tar -x, cp -r)
        // need not ask the store.
        inode.listing =
            (kind == InodeKind::Directory).then(|| (Instant::now(), Arc::new(Vec::new())));
        tables.inodes.insert(ino, inode);
        if let Some(listing) = listing {
            keep_listing_with(&mut tables, parent, listing, name, &node);
        }
        tables.by_name.insert((parent, name.to_owned()), ino);
        tables.absent.remove(&(parent, name.to_owned()));
        Ok(node)
    }

    /// A file of the store is being written here: until [`Namespace::stored`], this
    /// mount's size and mtime are the truth.
    pub fn begin_write(&self, ino: InodeNo) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            inode.local = true;
        }
    }

    /// The last writer of `ino` closed with nothing to upload: the store's facts are the
    /// file's again, asked anew (the store may have a new version since the open).
    pub fn end_write(&self, ino: InodeNo) {
        let mut tables = self.tables();
        let Some(inode) = tables.inodes.get_mut(&ino) else {
            return;
        };
        let stored = inode.node.etag.is_some() && inode.node.kind == InodeKind::File;
        if !inode.local || !stored || inode.kept_pending || inode.node.unlinked {
            return;
        }
        inode.local = false;
        self.ask_again(&mut tables, ino);
    }

    /// Makes the next lookup of `ino` ask the store: its HEAD and its parent's listing
    /// are past the TTL.
    fn ask_again(&self, tables: &mut Tables, ino: InodeNo) {
        let Some(inode) = tables.inodes.get_mut(&ino) else {
            return;
        };
        let stale = self.config.metadata_ttl + std::time::Duration::from_secs(1);
        if let Some(past) = Instant::now().checked_sub(stale) {
            inode.validated = past;
        }
        let parent = inode.parent;
        tables.forget_listing(parent);
    }

    /// A write-back close queued `size` bytes as `ino`'s content: until that upload
    /// lands, the file is what was closed, not what the store has (an fsync, or a
    /// truncate of the path, may have made a store's version its facts since the open).
    pub fn closed_here(&self, ino: InodeNo, size: u64) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            inode.local = true;
            inode.node.size = size;
            inode.node.stored_size = size;
        }
    }

    /// The content of a file being written changed, to `size` bytes: its mtime is now,
    /// whatever one was kept (a tool that keeps times sets them after writing).
    pub fn set_size(&self, ino: InodeNo, size: u64) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            inode.node.size = size;
            inode.node.stored_size = size;
            inode.node.kept.mtime = None;
            inode.node.mtime = SystemTime::now();
        }
    }

    /// The store now holds `ino`'s content, `size` bytes stored as `stored_size` bytes,
    /// at version `etag`, with attributes `kept`. Attributes set here since (a chmod
    /// while the upload ran) stay pending.
    pub fn stored(&self, ino: InodeNo, stored: StoredVersion) {
        let mut tables = self.tables();
        if let Some(inode) = tables.inodes.get_mut(&ino) {
            inode.local = inode.node.kind == InodeKind::Directory && !inode.node.unlinked;
            inode.node.size = stored.size;
            inode.node.stored_size = stored.stored_size;
            inode.node.etag = stored.etag;
            inode.node.headers = None;
            if inode.node.kept == stored.kept {
                inode.kept_pending = false;
            }
            inode.validated = Instant::now();
        }
        // Kept while only this mount knew it; the store knows it now.
        tables.drop_if_unreferenced(ino);
    }

    /// An older content of `ino`, written again since, reached the store as version
    /// `etag`: the file's facts stay its newer content's, and an unlink or rename knows
    /// the store has an object at its key.
    pub fn landed_beneath(&self, ino: InodeNo, etag: Option<String>) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            if inode.local {
                inode.node.etag = etag;
                inode.node.headers = None;
            }
        }
    }

    /// `parent/name` is gone (unlinked, removed or renamed away).
    pub fn remove(&self, parent: InodeNo, name: &str) {
        let mut tables = self.tables();
        if let Some(ino) = tables.by_name.remove(&(parent, name.to_owned())) {
            unlink(&mut tables, ino);
        }
        drop_from_listing(&mut tables, parent, name);
        tables.remember_absent(parent, name);
    }

    /// Moves the inode at `parent/name` to `new_parent/new_name`, whose key is now `key`:
    /// the kernel keeps the inode number across a rename. What was at the new name is
    /// unlinked.
    pub fn rename(
        &self,
        parent: InodeNo,
        name: &str,
        new_parent: InodeNo,
        new_name: &str,
        key: String,
    ) {
        let mut tables = self.tables();
        let Some(ino) = tables.by_name.remove(&(parent, name.to_owned())) else {
            return;
        };
        let new_slot = (new_parent, new_name.to_owned());
        tables.absent.remove(&new_slot);
        if let Some(replaced) = tables.by_name.insert(new_slot, ino) {
            unlink(&mut tables, replaced);
        }
        let mut moved = None;
        if let Some(inode) = tables.inodes.get_mut(&ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_owned();
            inode.node.key = key;
            inode.validated = Instant::now();
            moved = Some(inode.node.clone());
        }
        // The listings are edited, not forgotten: a directory made here needs no LIST
        // (which a store that is down would fail) to be listed again.
        drop_from_listing(&mut tables, parent, name);
        let listing = tables
            .inodes
            .get_mut(&new_parent)
            .and_then(|d| d.listing.take());
        match (listing, moved) {
            (Some(listing), Some(node)) => {
                keep_listing_with(&mut tables, new_parent, listing, new_name, &node)
            }
            _ => tables.forget_listing(new_parent),
        }
        tables.remember_absent(parent, name);
    }

    /// A directory's objects moved from prefix `from` to `to` (a directory rename): every
    /// inode below it now has its key under `to`.
    pub fn rekey_tree(&self, from: &str, to: &str) {
        let mut tables = self.tables();
        for inode in tables.inodes.values_mut() {
            if let Some(rest) = inode.node.key.strip_prefix(from) {
                inode.node.key = format!("{to}{rest}");
                inode.listing = None;
            }
        }
    }

    /// A directory rename copied files to their new keys: `copy_of(key, etag)` is the
    /// copy's ETag where version `etag` of the file at `key` is what was copied. Those
    /// inodes are the copy now (same bytes); returns them with their keys. One pass over
    /// the inodes, however many objects moved.
    pub fn carried(
        &self,
        copy_of: impl Fn(&str, Option<&str>) -> Option<Option<String>>,
    ) -> Vec<(InodeNo, String)> {
        let mut tables = self.tables();
        let mut carried = Vec::new();
        for (ino, inode) in tables.inodes.iter_mut() {
            if let Some(etag) = copy_of(&inode.node.key, inode.node.etag.as_deref()) {
                inode.node.etag = etag;
                carried.push((*ino, inode.node.key.clone()));
            }
        }
        carried
    }

    /// A reader found out the size of `ino`'s content (a gzip stream decoded to its end,
    /// its trailer read, or its decoded cache entry found). Returns whether it is shown:
    /// not for another version, nor for a file being written here.
    pub fn learned_size(&self, ino: InodeNo, etag: Option<&str>, size: u64) -> bool {
        self.learn(ino, etag, size, true)
    }

    /// A size for `ino`'s version `etag` that a cheap look suggests (a gzip trailer):
    /// shown until the store or a reader says otherwise, never preferred to either.
    pub fn guessed_size(&self, ino: InodeNo, etag: Option<&str>, size: u64) {
        self.learn(ino, etag, size, false);
    }

    fn learn(&self, ino: InodeNo, etag: Option<&str>, size: u64, exact: bool) -> bool {
        let mut tables = self.tables();
        let Some(inode) = tables.inodes.get_mut(&ino) else {
            return false;
        };
        let known_exactly = inode
            .learned
            .as_ref()
            .is_some_and(|l| l.exact && l.etag.as_deref() == etag);
        if inode.node.etag.as_deref() == etag && !inode.local && (exact || !known_exactly) {
            inode.node.size = size;
            inode.learned = Some(LearnedSize {
                etag: inode.node.etag.clone(),
                size,
                exact,
            });
            return true;
        }
        false
    }

    /// The metadata of `ino`'s object version `old` was replaced: same bytes, version
    /// `etag`. Ignored if the inode moved on to another version meanwhile.
    pub fn rewritten(
        &self,
        ino: InodeNo,
        old: Option<&str>,
        etag: Option<String>,
        headers: ObjectHeaders,
    ) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            if inode.node.etag.as_deref() != old {
                return;
            }
            inode.node.etag = etag;
            // Attributes set here while the copy was out stay pending, and shown.
            let stored = KeptAttrs::of(&headers);
            if !inode.kept_pending || inode.node.kept == stored {
                inode.node.kept = stored;
                inode.kept_pending = false;
            }
            inode.node.headers = Some(Arc::new(headers));
        }
    }

    /// The ETag `ino` shows now (`None`: no such inode).
    pub fn current_etag(&self, ino: InodeNo) -> Option<Option<String>> {
        let tables = self.tables();
        tables.inodes.get(&ino).map(|i| i.node.etag.clone())
    }

    /// The store no longer has `ino`'s version `etag` (a read found another, or none):
    /// the next lookup or open asks the store, not the cached HEAD or listing, and
    /// sees the new object or ENOENT.
    pub fn version_gone(&self, ino: InodeNo, etag: Option<&str>) {
        let mut tables = self.tables();
        let Some(inode) = tables.inodes.get_mut(&ino) else {
            return;
        };
        if inode.local || inode.node.etag.as_deref() != etag {
            return;
        }
        self.ask_again(&mut tables, ino);
    }

    /// Drops what HEAD said of `ino`'s version `etag` (kept attributes stay): after a
    /// copy onto itself its LastModified and `x-amz-expiration` changed, and the next
    /// `describe` asks again.
    pub fn headers_stale(&self, ino: InodeNo, etag: Option<&str>) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            if inode.node.etag.as_deref() == etag && !inode.local {
                inode.node.headers = None;
            }
        }
    }

    /// `chmod`, `touch` and the like set `kept` on `ino`, a file being written here: the
    /// attributes go up with its upload.
    pub fn set_kept(&self, ino: InodeNo, kept: KeptAttrs) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            inode.node.kept = inode.node.kept.merged(kept);
            inode.kept_pending = true;
        }
    }

    /// Attributes `kept` went up with `ino`'s content (queued, in write-back mode): no
    /// longer pending unless they changed since.
    pub fn kept_sent(&self, ino: InodeNo, kept: KeptAttrs) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            if inode.node.kept == kept {
                inode.kept_pending = false;
            }
        }
    }

    /// The attributes to upload with `ino`.
    pub fn upload_attrs(&self, ino: InodeNo) -> UploadAttrs {
        self.tables()
            .inodes
            .get(&ino)
            .map_or_else(UploadAttrs::default, |i| UploadAttrs {
                kept: i.node.kept,
                pending: i.kept_pending,
            })
    }
}

/// Inode `ino` lost its name: it lives on only while the kernel references it.
fn unlink(tables: &mut Tables, ino: InodeNo) {
    if let Some(inode) = tables.inodes.get_mut(&ino) {
        inode.local = false;
        inode.node.unlinked = true;
    }
}

/// Keeps the listing of `parent`, if any, valid without `name`, which is gone from it.
fn drop_from_listing(tables: &mut Tables, parent: InodeNo, name: &str) {
    let Some(dir) = tables.inodes.get_mut(&parent) else {
        return;
    };
    if let Some((_, entries)) = dir.listing.as_mut() {
        if let Ok(i) = entries.binary_search_by(|e| e.name.as_str().cmp(name)) {
            Arc::make_mut(entries).remove(i);
        }
    }
}

/// Keeps `listing` of `parent` valid with `node`, just made as `name`, in it.
fn keep_listing_with(
    tables: &mut Tables,
    parent: InodeNo,
    (at, mut entries): (Instant, Arc<Vec<DirEntry>>),
    name: &str,
    node: &Node,
) {
    let list = Arc::make_mut(&mut entries);
    let entry = DirEntry {
        name: name.to_owned(),
        node: node.clone(),
    };
    match list.binary_search_by(|e| e.name.as_str().cmp(name)) {
        Ok(i) => list[i] = entry,
        Err(i) => list.insert(i, entry),
    }
    if let Some(dir) = tables.inodes.get_mut(&parent) {
        dir.listing = Some((at, entries));
    }
}
