//! The namespace: inode numbers for keys and prefixes, lookup, directory listings and
//! attribute caching. It turns the flat key space into a tree:
//! a directory is a key prefix ending in `/`, a file is a key.
//!
//! Facts learned from the store (a HEAD or a listing) are trusted for `metadata_ttl`; after
//! that the next lookup, getattr or open asks again. A listing costs ceil(N/1000) LIST
//! requests and fills the attributes of every entry, so `ls -l` needs no HEAD per file.
//!
//! One `impl Namespace` block per file: `lookup.rs` asks the store what a name is,
//! `listing.rs` lists directories, `overlay.rs` holds what this mount knows before the
//! store does (files being written, directories made here, attributes set, sizes learned
//! by readers); `tables.rs` is the inode table under all of them, and `name.rs` the rules
//! for which names can be entries.

mod listing;
mod lookup;
mod name;
mod overlay;
mod tables;
mod tags;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use crate::artifact::KeptAttrs;
use crate::object::{ObjectClient, ObjectError, ObjectHeaders, ObjectId};
use crate::retention::Retention;
use name::SkippedKeys;
pub use name::{check_key, check_name, entry_name, BadName, NAME_MAX};
pub use overlay::UploadAttrs;
use tables::Tables;

/// An inode number as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeNo(pub u64);

impl InodeNo {
    /// The mount's root directory.
    pub const ROOT: InodeNo = InodeNo(1);
}

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeKind {
    /// A key.
    File,
    /// A key prefix.
    Directory,
    /// A key whose metadata names a link target.
    Symlink,
}

/// A version of a file that an upload or copy of ours put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// Size of the content.
    pub size: u64,
    /// Bytes in the store (smaller when compressed).
    pub stored_size: u64,
    /// Its ETag, when the store returned one.
    pub etag: Option<String>,
    /// The attributes it carries.
    pub kept: KeptAttrs,
}

/// A snapshot of one inode, handed to the layers above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Inode number.
    pub ino: InodeNo,
    /// File or directory.
    pub kind: InodeKind,
    /// Files: the object key. Directories: the prefix, empty or ending in `/`.
    pub key: String,
    /// Size a reader sees (files): the original size of a gzip-stored object when known;
    /// 0 for directories.
    pub size: u64,
    /// Size of the object's bytes in the store.
    pub stored_size: u64,
    /// LastModified (files); the mount time for directories.
    pub mtime: SystemTime,
    /// The ETag of the version these facts describe, if the store gave one.
    pub etag: Option<String>,
    /// Nothing in it may change (the work view's `inputs/`).
    pub read_only: bool,
    /// Removed from its directory while the kernel still references it (an open file
    /// that was unlinked): it has no name left, so no link.
    pub unlinked: bool,
    /// Files: what HEAD said of this version (`None` when known from a listing only).
    pub headers: Option<Arc<ObjectHeaders>>,
    /// Files: mode and mtime kept in the object's metadata, or set here since.
    pub kept: KeptAttrs,
}

impl Node {
    /// An empty inode of `kind` at `key`, with nothing known from the store yet.
    fn empty(ino: InodeNo, kind: InodeKind, key: String, mtime: SystemTime) -> Node {
        Node {
            ino,
            kind,
            key,
            size: 0,
            stored_size: 0,
            mtime,
            etag: None,
            read_only: false,
            unlinked: false,
            headers: None,
            kept: KeptAttrs::default(),
        }
    }

    /// The object version these facts describe.
    pub fn object_id(&self) -> ObjectId {
        ObjectId::new(self.key.clone(), self.etag.clone())
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// File name.
    pub name: String,
    /// Its inode.
    pub node: Node,
}

/// What can go wrong in the namespace.
#[derive(Debug, Error)]
pub enum NamespaceError {
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// A file where a directory is needed.
    #[error("not a directory")]
    NotADirectory,
    /// A directory where a file is needed.
    #[error("is a directory")]
    IsADirectory,
    /// A name that cannot be an entry of this mount.
    #[error("invalid name: {0}")]
    InvalidName(BadName),
    /// A change inside a read-only place.
    #[error("read-only place")]
    ReadOnly,
    /// The kernel named an inode this mount does not know (forgotten, or never issued).
    #[error("unknown inode {0}")]
    UnknownInode(u64),
    /// More tags than S3 keeps on an object (10).
    #[error("an object has at most {} tags", tags::MAX_TAGS)]
    TooManyTags,
    /// The store failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

impl NamespaceError {
    /// What a lookup of a name that breaks rule `why` finds: a name too long to be one
    /// is said to be, as a local filesystem does; any other bad name names nothing.
    pub fn lookup_of(why: BadName) -> NamespaceError {
        match why {
            BadName::TooLong => NamespaceError::InvalidName(why),
            _ => NamespaceError::NotFound,
        }
    }
}

/// Namespace settings.
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
    /// Key prefix shown as the mount root: empty, or ending in `/`.
    pub root_prefix: String,
    /// A prefix (ending in `/`) shown read-only as the root's `inputs/`: the work view.
    pub inputs_prefix: Option<String>,
    /// How long facts from the store are trusted.
    pub metadata_ttl: Duration,
    /// Directories with at most this many files get a HEAD per file when listed, so
    /// that `ls -l` shows kept modes and mtimes and original sizes of gzip objects; larger
    /// ones cost LISTs only.
    pub listing_heads: usize,
}

/// Name of the work view's read-only directory of inputs.
pub const INPUTS: &str = "inputs";

/// The inode table over one bucket view.
#[derive(Debug)]
pub struct Namespace {
    client: Arc<dyn ObjectClient>,
    retention: Arc<Retention>,
    config: NamespaceConfig,
    mount_time: SystemTime,
    skipped: SkippedKeys,
    tables: Mutex<Tables>,
    tag_cache: tags::TagCache,
    /// Held by a tag edit (read, change, write).
    tag_edits: tokio::sync::Mutex<()>,
}

impl Namespace {
    /// A namespace whose root is `config.root_prefix`; objects past their expiry under
    /// `retention` are not shown.
    pub fn new(
        client: Arc<dyn ObjectClient>,
        retention: Arc<Retention>,
        config: NamespaceConfig,
    ) -> Namespace {
        let mount_time = SystemTime::now();
        let mut tables = Tables::new(&config.root_prefix, mount_time);
        if let Some(prefix) = &config.inputs_prefix {
            tables.pin_inputs(prefix, mount_time);
        }
        Namespace {
            client,
            retention,
            config,
            mount_time,
            skipped: SkippedKeys::default(),
            tables: Mutex::new(tables),
            tag_cache: tags::TagCache::default(),
            tag_edits: tokio::sync::Mutex::new(()),
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.config.metadata_ttl
    }

    /// The key `name` would have in directory `parent` (a directory's ends in `/`),
    /// checked against the name and key rules.
    pub fn child_key(
        &self,
        parent: InodeNo,
        name: &str,
        kind: InodeKind,
    ) -> Result<String, NamespaceError> {
        check_name(name).map_err(NamespaceError::InvalidName)?;
        tables::checked_child_key(&self.tables().dir(parent)?.node.key, name, kind)
    }

    /// Counts one kernel reference to `node`, the entry `name` of `parent` (a lookup, or
    /// an entry handed out by readdirplus).
    pub fn remember(&self, parent: InodeNo, name: &str, node: &Node) -> Node {
        self.tables().reference(parent, name, node)
    }

    /// `ino` as last known, without asking the store: the reply to a change just made,
    /// which a name taken since by a directory must not turn into ENOENT.
    pub fn known(&self, ino: InodeNo) -> Result<Node, NamespaceError> {
        Ok(self.tables().inode(ino)?.node.clone())
    }

    /// Whether `ino` lies in a read-only place (unknown inodes are not).
    pub fn is_read_only(&self, ino: InodeNo) -> bool {
        self.tables()
            .inodes
            .get(&ino)
            .is_some_and(|i| i.node.read_only)
    }

    /// Whether `ino` is a file being written or a directory made in this mount.
    pub fn is_local(&self, ino: InodeNo) -> bool {
        self.tables().inodes.get(&ino).is_some_and(|i| i.local)
    }

    /// Whether `ino` was removed from its directory (unlinked, or replaced by a rename).
    pub fn is_unlinked(&self, ino: InodeNo) -> bool {
        self.tables()
            .inodes
            .get(&ino)
            .is_some_and(|i| i.node.unlinked)
    }

    /// The key of `ino` now (a rename moves it), if the inode is known.
    pub fn key_of(&self, ino: InodeNo) -> Option<String> {
        self.tables().inodes.get(&ino).map(|i| i.node.key.clone())
    }

    /// The parent directory of `ino`, if the inode is known.
    pub fn parent(&self, ino: InodeNo) -> Option<InodeNo> {
        self.tables().inodes.get(&ino).map(|i| i.parent)
    }

    /// The kernel dropped `n` references to `ino`; true when the inode is now gone.
    pub fn forget(&self, ino: InodeNo, n: u64) -> bool {
        self.tables().forget(ino, n)
    }
}
