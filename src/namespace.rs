//! The namespace: inode numbers for keys and prefixes, lookup, directory listings and
//! attribute caching. It turns the flat key space into a tree:
//! a directory is a key prefix ending in `/`, a file is a key.
//!
//! Facts learned from the store (a HEAD or a listing) are trusted for `metadata_ttl`; after
//! that the next lookup, getattr or open asks again. A listing costs ceil(N/1000) LIST
//! requests and fills the attributes of every entry, so `ls -l` needs no HEAD per file.

mod name;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use crate::artifact::{self, Compression, KeptAttrs};
use crate::object::{ObjectClient, ObjectError, ObjectHeaders, ObjectInfo, ObjectMeta};
use crate::retention::Retention;
use name::SkippedKeys;
pub use name::{check_name, BadName};

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
    /// Files: what HEAD said of this version (`None` when known from a listing only).
    pub headers: Option<Arc<ObjectHeaders>>,
    /// Files: mode and mtime kept in the object's metadata, or set here since.
    pub kept: KeptAttrs,
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
    /// A name that cannot be a key segment.
    #[error("invalid name")]
    InvalidName,
    /// A change inside a read-only place.
    #[error("read-only place")]
    ReadOnly,
    /// The kernel named an inode this mount does not know (forgotten, or never issued).
    #[error("unknown inode {0}")]
    UnknownInode(u64),
    /// The store failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
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

/// What the store says lives at one name.
#[derive(Debug, Clone)]
struct Found {
    kind: InodeKind,
    key: String,
    size: u64,
    stored_size: u64,
    mtime: SystemTime,
    etag: Option<String>,
    headers: Option<Arc<ObjectHeaders>>,
    kept: KeptAttrs,
}

#[derive(Debug)]
struct Inode {
    node: Node,
    parent: InodeNo,
    name: String,
    /// Kernel references (lookups not yet forgotten).
    lookups: u64,
    validated: Instant,
    listing: Option<(Instant, Arc<Vec<DirEntry>>)>,
    /// This mount's facts win over the store's: a file being written (not yet uploaded)
    /// or a directory made here, which the store may not know yet.
    local: bool,
    /// Content size found out for a version (ETag), and whether it is exact (a gzip
    /// stream decoded to its end, which tells more than any metadata) or a guess (its
    /// trailer).
    learned: Option<(Option<String>, u64, bool)>,
    /// Attributes set on a file being written, to go up with it.
    kept_pending: bool,
}

impl Inode {
    /// The size to show for version `etag`, of which the store says `size`.
    fn size_for(&self, etag: &Option<String>, size: u64) -> u64 {
        match &self.learned {
            Some((version, learned, _)) if version == etag => *learned,
            _ => size,
        }
    }
}

impl Inode {
    /// A freshly validated inode of the store with `lookups` kernel references.
    fn new(node: Node, parent: InodeNo, name: &str, lookups: u64) -> Inode {
        Inode {
            node,
            parent,
            name: name.to_owned(),
            lookups,
            validated: Instant::now(),
            listing: None,
            local: false,
            learned: None,
            kept_pending: false,
        }
    }
}

#[derive(Debug)]
struct Tables {
    inodes: HashMap<InodeNo, Inode>,
    by_name: HashMap<(InodeNo, String), InodeNo>,
    /// Names the store said do not exist, and when: negative lookups are cached too.
    absent: HashMap<(InodeNo, String), Instant>,
    next: u64,
}

impl Tables {
    /// Directory `ino`.
    fn dir(&self, ino: InodeNo) -> Result<&Inode, NamespaceError> {
        let dir = self
            .inodes
            .get(&ino)
            .ok_or(NamespaceError::UnknownInode(ino.0))?;
        if dir.node.kind != InodeKind::Directory {
            return Err(NamespaceError::NotADirectory);
        }
        Ok(dir)
    }
}

/// Negative entries kept at most; past it the oldest half is dropped. Each is a name and
/// a timestamp, so this bounds the cache to a few MiB.
const MAX_ABSENT: usize = 65_536;

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
        let node = Node {
            ino: InodeNo::ROOT,
            kind: InodeKind::Directory,
            key: config.root_prefix.clone(),
            size: 0,
            stored_size: 0,
            mtime: mount_time,
            etag: None,
            read_only: false,
            headers: None,
            kept: KeptAttrs::default(),
        };
        let mut root = Inode::new(node, InodeNo::ROOT, "", 1);
        root.local = true; // never revalidated
        let mut tables = Tables {
            inodes: HashMap::from([(InodeNo::ROOT, root)]),
            by_name: HashMap::new(),
            absent: HashMap::new(),
            next: 2,
        };
        if let Some(prefix) = &config.inputs_prefix {
            pin_inputs(&mut tables, prefix, mount_time);
        }
        Namespace {
            client,
            retention,
            config,
            mount_time,
            skipped: SkippedKeys::default(),
            tables: Mutex::new(tables),
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.config.metadata_ttl
    }

    /// The entry `name` in directory `parent`; counts one kernel reference.
    pub async fn lookup(&self, parent: InodeNo, name: &str) -> Result<Node, NamespaceError> {
        let node = self.find(parent, name).await?;
        Ok(self.remember(parent, name, &node))
    }

    /// The entry `name` in directory `parent`, without counting a kernel reference.
    pub async fn find(&self, parent: InodeNo, name: &str) -> Result<Node, NamespaceError> {
        check_name(name).map_err(|_| NamespaceError::NotFound)?;
        let prefix = {
            let tables = self.tables();
            let dir = tables.dir(parent)?;
            if let Some(node) = self.cached_child(&tables, dir, name) {
                return node.ok_or(NamespaceError::NotFound);
            }
            dir.node.key.clone()
        };
        let found = self.resolve(&prefix, name).await?;
        let mut tables = self.tables();
        let Some(found) = found else {
            remember_absent(&mut tables, parent, name);
            return Err(NamespaceError::NotFound);
        };
        Ok(upsert(&mut tables, parent, name, found, self.mount_time))
    }

    /// `name` in `parent` as the store has it now, whatever was cached; counts one kernel
    /// reference (after this mount made the object, e.g. a symlink).
    pub async fn refresh(&self, parent: InodeNo, name: &str) -> Result<Node, NamespaceError> {
        let prefix = self.tables().dir(parent)?.node.key.clone();
        let found = self.resolve(&prefix, name).await?;
        let mut tables = self.tables();
        let found = found.ok_or(NamespaceError::NotFound)?;
        if let Some(dir) = tables.inodes.get_mut(&parent) {
            dir.listing = None;
        }
        let node = upsert(&mut tables, parent, name, found, self.mount_time);
        Ok(reference(&mut tables, parent, name, &node))
    }

    /// A child known well enough to answer without the store: `Some(None)` means known
    /// absent (a fresh listing lacks it).
    fn cached_child(&self, tables: &Tables, dir: &Inode, name: &str) -> Option<Option<Node>> {
        let slot = (dir.node.ino, name.to_owned());
        let child = tables
            .by_name
            .get(&slot)
            .and_then(|ino| tables.inodes.get(ino));
        if let Some(child) = child.filter(|c| c.local || self.fresh(c.validated)) {
            return Some(Some(child.node.clone()));
        }
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

    /// Counts one kernel reference to `node`, the entry `name` of `parent` (a lookup, or
    /// an entry handed out by readdirplus).
    pub fn remember(&self, parent: InodeNo, name: &str, node: &Node) -> Node {
        reference(&mut self.tables(), parent, name, node)
    }

    /// Makes `parent/name` a file or directory of this mount, not (yet) in the store; counts
    /// one kernel reference, as a lookup would.
    pub fn create_local(
        &self,
        parent: InodeNo,
        name: &str,
        kind: InodeKind,
    ) -> Result<Node, NamespaceError> {
        check_name(name).map_err(|_| NamespaceError::InvalidName)?;
        let mut tables = self.tables();
        let dir = tables
            .inodes
            .get_mut(&parent)
            .ok_or(NamespaceError::UnknownInode(parent.0))?;
        if dir.node.kind != InodeKind::Directory {
            return Err(NamespaceError::NotADirectory);
        }
        if dir.node.read_only {
            return Err(NamespaceError::ReadOnly);
        }
        let listing = dir.listing.take();
        let suffix = if kind == InodeKind::Directory {
            "/"
        } else {
            ""
        };
        let key = format!("{}{name}{suffix}", dir.node.key);
        let ino = InodeNo(tables.next);
        tables.next += 1;
        let node = Node {
            ino,
            kind,
            key,
            size: 0,
            stored_size: 0,
            mtime: SystemTime::now(),
            etag: None,
            read_only: false,
            headers: None,
            kept: KeptAttrs::default(),
        };
        let mut inode = Inode::new(node.clone(), parent, name, 1);
        inode.local = true;
        // A directory made here starts empty: lookups of new names in it (tar -x, cp -r)
        // need not ask the store.
        inode.listing =
            (kind == InodeKind::Directory).then(|| (Instant::now(), Arc::new(Vec::new())));
        tables.inodes.insert(ino, inode);
        if let Some((at, mut entries)) = listing {
            // The parent's listing stays valid with the new entry in it.
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
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            inode.local = inode.node.kind == InodeKind::Directory;
            inode.node.size = stored.size;
            inode.node.stored_size = stored.stored_size;
            inode.node.etag = stored.etag;
            inode.node.headers = None;
            if inode.node.kept == stored.kept {
                inode.kept_pending = false;
            }
            inode.validated = Instant::now();
        }
    }

    /// `parent/name` is gone (unlinked, removed or renamed away).
    pub fn remove(&self, parent: InodeNo, name: &str) {
        let mut tables = self.tables();
        let slot = (parent, name.to_owned());
        if let Some(ino) = tables.by_name.remove(&slot) {
            if let Some(inode) = tables.inodes.get_mut(&ino) {
                inode.local = false;
            }
        }
        if let Some(dir) = tables.inodes.get_mut(&parent) {
            dir.listing = None;
        }
        remember_absent(&mut tables, parent, name);
    }

    /// Moves the inode at `parent/name` to `new_parent/new_name`, whose key is now `key`:
    /// the kernel keeps the inode number across a rename.
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
        tables.by_name.insert(new_slot, ino);
        if let Some(inode) = tables.inodes.get_mut(&ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_owned();
            inode.node.key = key;
            inode.validated = Instant::now();
        }
        for dir in [parent, new_parent] {
            if let Some(dir) = tables.inodes.get_mut(&dir) {
                dir.listing = None;
            }
        }
        remember_absent(&mut tables, parent, name);
    }

    /// Whether `ino` lies in a read-only place (unknown inodes are not).
    pub fn is_read_only(&self, ino: InodeNo) -> bool {
        self.tables()
            .inodes
            .get(&ino)
            .is_some_and(|i| i.node.read_only)
    }

    /// Whether `ino` is a directory made in this mount.
    pub fn is_local(&self, ino: InodeNo) -> bool {
        self.tables().inodes.get(&ino).is_some_and(|i| i.local)
    }

    /// The parent directory of `ino`, if the inode is known.
    pub fn parent(&self, ino: InodeNo) -> Option<InodeNo> {
        self.tables().inodes.get(&ino).map(|i| i.parent)
    }

    /// The kernel dropped `n` references to `ino`; true when the inode is now gone.
    pub fn forget(&self, ino: InodeNo, n: u64) -> bool {
        let mut tables = self.tables();
        let Some(inode) = tables.inodes.get_mut(&ino) else {
            return false;
        };
        inode.lookups = inode.lookups.saturating_sub(n);
        if inode.lookups > 0 || ino == InodeNo::ROOT {
            return false;
        }
        let key = (inode.parent, inode.name.clone());
        tables.inodes.remove(&ino);
        if tables.by_name.get(&key) == Some(&ino) {
            tables.by_name.remove(&key);
        }
        true
    }

    /// Current attributes of `ino` with, for a file in the store, its HEAD headers
    /// (asked once per version).
    pub async fn describe(&self, ino: InodeNo) -> Result<Node, NamespaceError> {
        let node = self.getattr(ino).await?;
        if node.kind != InodeKind::File || node.headers.is_some() || node.etag.is_none() {
            return Ok(node);
        }
        let info = match self.client.head(&node.key).await {
            Err(ObjectError::NotFound { .. }) => return Err(NamespaceError::NotFound),
            Ok(info) if self.expired(&info) => return Err(NamespaceError::NotFound),
            other => other?,
        };
        let mut tables = self.tables();
        let inode = tables
            .inodes
            .get_mut(&ino)
            .ok_or(NamespaceError::UnknownInode(ino.0))?;
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

    /// A reader found out the size of `ino`'s content (a gzip stream decoded to its end,
    /// or its trailer read).
    pub fn learned_size(&self, ino: InodeNo, etag: Option<&str>, size: u64) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            if inode.node.etag.as_deref() == etag && !inode.local {
                inode.node.size = size;
                inode.learned = Some((inode.node.etag.clone(), size, true));
            }
        }
    }

    /// A size for `ino`'s version `etag` that a cheap look suggests (a gzip trailer):
    /// shown until the store or a reader says otherwise, never preferred to either.
    pub fn guessed_size(&self, ino: InodeNo, etag: Option<&str>, size: u64) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            let exact = matches!(&inode.learned, Some((v, _, true)) if v.as_deref() == etag);
            if inode.node.etag.as_deref() == etag && !inode.local && !exact {
                inode.node.size = size;
                inode.learned = Some((inode.node.etag.clone(), size, false));
            }
        }
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

    /// `chmod`, `touch` and the like set `kept` on `ino`, a file being written here: the
    /// attributes go up with its upload.
    pub fn set_kept(&self, ino: InodeNo, kept: KeptAttrs) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            inode.node.kept = inode.node.kept.merged(kept);
            inode.kept_pending = true;
        }
    }

    /// `ino`'s object as the store has it now (a HEAD), without changing what this mount
    /// shows: for a writer that must start from the stored content while another handle
    /// of the same file has changed its size here.
    pub async fn stored_node(&self, node: &Node) -> Result<Node, NamespaceError> {
        let info = match self.client.head(&node.key).await {
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

    /// The attributes to upload with `ino`, and whether they changed since the last upload.
    pub fn kept(&self, ino: InodeNo) -> (KeptAttrs, bool) {
        let tables = self.tables();
        tables
            .inodes
            .get(&ino)
            .map_or((KeptAttrs::default(), false), |i| {
                (i.node.kept, i.kept_pending)
            })
    }

    /// Current attributes of `ino`, asking the store when the cached ones are stale.
    pub async fn getattr(&self, ino: InodeNo) -> Result<Node, NamespaceError> {
        let (parent, name, prefix) = {
            let tables = self.tables();
            let inode = tables
                .inodes
                .get(&ino)
                .ok_or(NamespaceError::UnknownInode(ino.0))?;
            if inode.local || self.fresh(inode.validated) {
                return Ok(inode.node.clone());
            }
            let parent = &tables
                .inodes
                .get(&inode.parent)
                .ok_or(NamespaceError::NotFound)?
                .node;
            (inode.parent, inode.name.clone(), parent.key.clone())
        };
        let found = self
            .resolve(&prefix, &name)
            .await?
            .ok_or(NamespaceError::NotFound)?;
        let mut tables = self.tables();
        let node = upsert(&mut tables, parent, &name, found, self.mount_time);
        if node.ino != ino {
            // The name now holds something of another kind; this inode is gone.
            return Err(NamespaceError::NotFound);
        }
        Ok(node)
    }

    /// The entries of directory `ino`, from a fresh listing of all pages.
    pub async fn readdir(&self, ino: InodeNo) -> Result<Arc<Vec<DirEntry>>, NamespaceError> {
        let prefix = {
            let tables = self.tables();
            let dir = tables
                .inodes
                .get(&ino)
                .ok_or(NamespaceError::UnknownInode(ino.0))?;
            if dir.node.kind != InodeKind::Directory {
                return Err(NamespaceError::NotADirectory);
            }
            match &dir.listing {
                Some((at, entries)) if self.fresh(*at) => {
                    // Names from the listing, attributes as they are now (a file written
                    // since has grown).
                    let current = |e: &DirEntry| DirEntry {
                        name: e.name.clone(),
                        node: tables
                            .inodes
                            .get(&e.node.ino)
                            .map_or_else(|| e.node.clone(), |i| i.node.clone()),
                    };
                    return Ok(Arc::new(entries.iter().map(current).collect()));
                }
                _ => dir.node.key.clone(),
            }
        };
        let found = self.list_all(ino, &prefix).await?;
        let mut tables = self.tables();
        let mut entries: BTreeMap<String, Node> = found
            .into_iter()
            .map(|(name, f)| {
                (
                    name.clone(),
                    upsert(&mut tables, ino, &name, f, self.mount_time),
                )
            })
            .collect();
        // Files being written and directories made here, which the store may lack. A scan
        // of the table: it holds what the kernel references, not the whole bucket.
        for inode in tables
            .inodes
            .values()
            .filter(|i| i.local && i.parent == ino && i.node.ino != ino)
        {
            entries.insert(inode.name.clone(), inode.node.clone());
        }
        let entries: Vec<DirEntry> = entries
            .into_iter()
            .map(|(name, node)| DirEntry { name, node })
            .collect();
        let entries = Arc::new(entries);
        if let Some(dir) = tables.inodes.get_mut(&ino) {
            dir.listing = Some((Instant::now(), entries.clone()));
        }
        Ok(entries)
    }

    /// Every showable entry under `prefix`, by name; a directory shadows a file.
    async fn list_all(
        &self,
        dir: InodeNo,
        prefix: &str,
    ) -> Result<BTreeMap<String, Found>, NamespaceError> {
        let mut entries = BTreeMap::new();
        let mut token = None;
        let now = SystemTime::now();
        // Past expiry by the bucket's policy: only their own metadata can keep them.
        let mut doubtful = Vec::new();
        loop {
            let page = self
                .client
                .list_page(prefix, token.as_deref(), None)
                .await?;
            for object in page.objects {
                // A store that answers with keys outside the prefix is ignored, not trusted.
                let Some(name) = object.key.strip_prefix(prefix) else {
                    continue;
                };
                if name.is_empty() {
                    continue; // the directory's own marker object
                }
                if !self.showable(name, &object.key) {
                    continue;
                }
                let policy = self.retention.policy(&object.key, object.last_modified);
                if policy.at <= now {
                    doubtful.push((name.to_owned(), object.key));
                } else {
                    entries
                        .entry(name.to_owned())
                        .or_insert_with(|| file_found(object, None));
                }
            }
            for dir_prefix in page.prefixes {
                let name = dir_prefix
                    .strip_prefix(prefix)
                    .and_then(|p| p.strip_suffix('/'));
                let Some(name) = name else { continue };
                if self.showable(name, &dir_prefix) {
                    let dir = Found {
                        kind: InodeKind::Directory,
                        key: dir_prefix.clone(),
                        size: 0,
                        stored_size: 0,
                        mtime: self.mount_time,
                        etag: None,
                        headers: None,
                        kept: KeptAttrs::default(),
                    };
                    if let Some(file) = entries.insert(name.to_owned(), dir) {
                        self.skipped
                            .report(&file.key, "shadowed by a directory of the same name");
                    }
                }
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        let files = entries.values().filter(|f| f.kind == InodeKind::File);
        if files.count() + doubtful.len() <= self.config.listing_heads {
            doubtful.extend(self.undescribed(dir, &entries));
        }
        for (name, found) in self.described(doubtful).await {
            match found {
                Some(Some(found))
                    if entries.get(&name).is_none_or(|f| f.kind == InodeKind::File) =>
                {
                    entries.insert(name, found);
                }
                Some(Some(_)) | None => {} // shadowed by a directory, or HEAD failed
                Some(None) => {
                    if entries
                        .get(&name)
                        .is_some_and(|f| f.kind == InodeKind::File)
                    {
                        entries.remove(&name);
                    }
                }
            }
        }
        Ok(entries)
    }

    /// The files among `entries` of `dir` whose headers this mount does not have yet for
    /// the version listed, as (name, key).
    fn undescribed(
        &self,
        dir: InodeNo,
        entries: &BTreeMap<String, Found>,
    ) -> Vec<(String, String)> {
        let tables = self.tables();
        let described = |name: &String, found: &Found| {
            let ino = tables.by_name.get(&(dir, name.clone()));
            let node = ino.and_then(|ino| tables.inodes.get(ino)).map(|i| &i.node);
            node.is_some_and(|n| n.headers.is_some() && n.etag == found.etag)
        };
        entries
            .iter()
            .filter(|(name, f)| f.kind == InodeKind::File && !described(name, f))
            .map(|(name, f)| (name.clone(), f.key.clone()))
            .collect()
    }

    /// What HEAD says of each of `objects` (name, key): `Some(None)` when it is gone or
    /// expired, `None` when HEAD failed (the listing's facts then stand).
    async fn described(
        &self,
        objects: Vec<(String, String)>,
    ) -> Vec<(String, Option<Option<Found>>)> {
        use futures::StreamExt;
        futures::stream::iter(objects)
            .map(|(name, key)| async move {
                match self.client.head(&key).await {
                    Ok(info) if self.expired(&info) => (name, Some(None)),
                    Ok(info) => (name, Some(Some(file_found(info.meta, Some(info.headers))))),
                    Err(ObjectError::NotFound { .. }) => (name, Some(None)),
                    Err(e) => {
                        tracing::debug!(key, "HEAD for a listing failed: {e}");
                        (name, None)
                    }
                }
            })
            .buffer_unordered(16)
            .collect()
            .await
    }

    fn showable(&self, name: &str, key: &str) -> bool {
        match check_name(name) {
            Ok(()) => true,
            Err(why) => {
                self.skipped
                    .report(key, &format!("cannot be a file name ({why:?})"));
                false
            }
        }
    }

    /// Asks the store what `prefix + name` is: a directory (any key below it) wins over a
    /// file of the same name. HEAD and LIST go out together.
    async fn resolve(&self, prefix: &str, name: &str) -> Result<Option<Found>, NamespaceError> {
        let key = format!("{prefix}{name}");
        let dir_prefix = format!("{key}/");
        let (head, list) = tokio::join!(
            self.client.head(&key),
            self.client.list_page(&dir_prefix, None, Some(1))
        );
        let list = list?;
        if !list.objects.is_empty() || !list.prefixes.is_empty() {
            if head.is_ok() {
                self.skipped
                    .report(&key, "shadowed by a directory of the same name");
            }
            return Ok(Some(Found {
                kind: InodeKind::Directory,
                key: dir_prefix,
                size: 0,
                stored_size: 0,
                mtime: self.mount_time,
                etag: None,
                headers: None,
                kept: KeptAttrs::default(),
            }));
        }
        match head {
            Ok(info) if self.expired(&info) => Ok(None),
            Ok(info) => Ok(Some(file_found(info.meta, Some(info.headers)))),
            Err(ObjectError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the object is past its expiry: the store is about to delete it, so it is
    /// shown as already gone.
    fn expired(&self, info: &ObjectInfo) -> bool {
        let meta = &info.meta;
        let expiry = self
            .retention
            .expiry(&meta.key, meta.last_modified, Some(&info.headers));
        let gone = expiry.at <= SystemTime::now();
        if gone {
            tracing::debug!(key = %meta.key, source = ?expiry.source, "expired, hidden");
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

fn file_found(meta: ObjectMeta, headers: Option<ObjectHeaders>) -> Found {
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

/// The work view's `inputs/`: always there (the root's listing merges it in, as it does
/// local entries), never revalidated, never forgotten, and read-only with all below it.
fn pin_inputs(tables: &mut Tables, prefix: &str, mount_time: SystemTime) {
    let ino = InodeNo(tables.next);
    tables.next += 1;
    let node = Node {
        ino,
        kind: InodeKind::Directory,
        key: prefix.to_owned(),
        size: 0,
        stored_size: 0,
        mtime: mount_time,
        etag: None,
        read_only: true,
        headers: None,
        kept: KeptAttrs::default(),
    };
    let mut inode = Inode::new(node, InodeNo::ROOT, INPUTS, 1);
    inode.local = true;
    tables.inodes.insert(ino, inode);
    tables
        .by_name
        .insert((InodeNo::ROOT, INPUTS.to_owned()), ino);
}

/// Counts a kernel reference to `node`, bringing its inode back if it was forgotten
/// since a listing handed out its number.
fn reference(tables: &mut Tables, parent: InodeNo, name: &str, node: &Node) -> Node {
    if let Some(inode) = tables.inodes.get_mut(&node.ino) {
        inode.lookups += 1;
        return inode.node.clone();
    }
    tables
        .inodes
        .insert(node.ino, Inode::new(node.clone(), parent, name, 1));
    tables
        .by_name
        .entry((parent, name.to_owned()))
        .or_insert(node.ino);
    node.clone()
}

fn remember_absent(tables: &mut Tables, parent: InodeNo, name: &str) {
    if tables.absent.len() >= MAX_ABSENT {
        let mut times: Vec<Instant> = tables.absent.values().copied().collect();
        let (_, median, _) = times.select_nth_unstable(MAX_ABSENT / 2);
        let cutoff = *median;
        tables.absent.retain(|_, at| *at > cutoff);
    }
    tables
        .absent
        .insert((parent, name.to_owned()), Instant::now());
}

/// Records what lives at `parent/name`, keeping the inode number while the kind is the same.
fn upsert(
    tables: &mut Tables,
    parent: InodeNo,
    name: &str,
    mut found: Found,
    mount_time: SystemTime,
) -> Node {
    let slot = (parent, name.to_owned());
    tables.absent.remove(&slot);
    let existing = tables.by_name.get(&slot).copied();
    if let Some(inode) = existing.and_then(|ino| tables.inodes.get_mut(&ino)) {
        if inode.local {
            return inode.node.clone();
        }
        // A listing cannot tell a link from a file: the same version stays what HEAD said.
        let same_version = found.headers.is_none() && inode.node.etag == found.etag;
        if same_version && inode.node.kind == InodeKind::Symlink {
            found.kind = InodeKind::Symlink;
        }
        if inode.node.kind == found.kind {
            if found.headers.is_some() || inode.node.etag != found.etag {
                inode.node.size = inode.size_for(&found.etag, found.size);
            }
            inode.node.stored_size = found.stored_size;
            inode.node.mtime = if found.kind == InodeKind::Directory {
                mount_time
            } else {
                found.mtime
            };
            if found.headers.is_some() || inode.node.etag != found.etag {
                inode.node.kept = found.kept;
                inode.node.headers = found.headers;
            }
            inode.node.etag = found.etag;
            inode.node.key = found.key;
            inode.validated = Instant::now();
            return inode.node.clone();
        }
    }
    let ino = InodeNo(tables.next);
    tables.next += 1;
    let read_only = tables.inodes.get(&parent).is_some_and(|p| p.node.read_only);
    let node = Node {
        ino,
        kind: found.kind,
        key: found.key,
        size: found.size,
        stored_size: found.stored_size,
        mtime: found.mtime,
        etag: found.etag,
        read_only,
        headers: found.headers,
        kept: found.kept,
    };
    tables
        .inodes
        .insert(ino, Inode::new(node.clone(), parent, name, 0));
    tables.by_name.insert(slot, ino);
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{MemoryClient, Operation};
    use crate::retention::RetentionConfig;

    fn namespace(keys: &[&str]) -> (Namespace, MemoryClient) {
        let client = MemoryClient::new();
        for key in keys {
            client.insert(key, key.as_bytes().to_vec(), ObjectHeaders::default());
        }
        let config = NamespaceConfig {
            root_prefix: String::new(),
            inputs_prefix: None,
            metadata_ttl: Duration::from_secs(60),
            listing_heads: 0,
        };
        let retention = RetentionConfig {
            days: 30,
            warning: Duration::from_secs(3600),
            refresh: Duration::from_secs(600),
        };
        let retention = Arc::new(Retention::new(Arc::new(client.clone()), retention));
        (
            Namespace::new(Arc::new(client.clone()), retention, config),
            client,
        )
    }

    fn names(entries: &[DirEntry]) -> Vec<(&str, InodeKind)> {
        entries
            .iter()
            .map(|e| (e.name.as_str(), e.node.kind))
            .collect()
    }

    #[tokio::test]
    async fn directory_shadows_file_and_bad_keys_are_hidden() {
        let (ns, _) = namespace(&["a", "a/x", "b//c", "./d", "ok.txt", "dir/"]);
        let root = ns.readdir(InodeNo::ROOT).await.unwrap();
        let dir = InodeKind::Directory;
        assert_eq!(
            names(&root),
            vec![
                ("a", dir),
                ("b", dir),
                ("dir", dir),
                ("ok.txt", InodeKind::File)
            ]
        );
        let b = ns.lookup(InodeNo::ROOT, "b").await.unwrap();
        assert!(ns.readdir(b.ino).await.unwrap().is_empty());
        let dir = ns.lookup(InodeNo::ROOT, "dir").await.unwrap();
        assert!(ns.readdir(dir.ino).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn attributes_set_during_an_upload_stay_pending() {
        let (ns, _) = namespace(&[]);
        let file = ns
            .create_local(InodeNo::ROOT, "f", InodeKind::File)
            .unwrap();
        let (a, b) = (
            KeptAttrs {
                mode: Some(0o600),
                mtime: None,
            },
            KeptAttrs {
                mode: Some(0o640),
                mtime: None,
            },
        );
        ns.set_kept(file.ino, a);
        let version = |etag: &str, kept| StoredVersion {
            size: 1,
            stored_size: 1,
            etag: Some(etag.into()),
            kept,
        };
        // The upload carried `a`, and nothing changed meanwhile: nothing pending.
        ns.stored(file.ino, version("\"v1\"", a));
        assert_eq!(ns.kept(file.ino), (a, false));
        // `b` arrived while an upload carrying `a` ran: still pending, still shown.
        ns.set_kept(file.ino, b);
        ns.stored(file.ino, version("\"v2\"", a));
        assert_eq!(ns.kept(file.ino), (b, true));
        // A metadata rewrite carrying an older value leaves `b` pending; `b` clears it.
        let headers = |kept: KeptAttrs| {
            let mut headers = ObjectHeaders::default();
            kept.store(&mut headers.user_metadata);
            headers
        };
        ns.rewritten(file.ino, Some("\"v2\""), Some("\"v3\"".into()), headers(a));
        assert_eq!(ns.kept(file.ino), (b, true));
        ns.rewritten(file.ino, Some("\"v3\""), Some("\"v4\"".into()), headers(b));
        assert_eq!(ns.kept(file.ino), (b, false));
    }

    #[tokio::test]
    async fn listing_answers_lookups_without_requests() {
        let (ns, client) = namespace(&["d/1", "d/2", "d/3"]);
        let d = ns.lookup(InodeNo::ROOT, "d").await.unwrap();
        ns.readdir(d.ino).await.unwrap();
        let (heads, lists) = (client.count(Operation::Head), client.count(Operation::List));
        let f = ns.lookup(d.ino, "2").await.unwrap();
        assert_eq!((f.kind, f.size), (InodeKind::File, 3));
        assert!(matches!(
            ns.lookup(d.ino, "9").await,
            Err(NamespaceError::NotFound)
        ));
        assert_eq!(
            (client.count(Operation::Head), client.count(Operation::List)),
            (heads, lists)
        );
    }

    #[tokio::test]
    async fn a_forgotten_inode_from_a_listing_comes_back_on_lookup() {
        let (ns, _) = namespace(&["d/f"]);
        let d = ns.lookup(InodeNo::ROOT, "d").await.unwrap();
        let listed = ns.readdir(d.ino).await.unwrap()[0].node.clone();
        let f = ns.lookup(d.ino, "f").await.unwrap();
        assert!(ns.forget(f.ino, 1), "last reference gone");
        let again = ns.lookup(d.ino, "f").await.unwrap();
        assert_eq!(again.ino, listed.ino);
        assert_eq!(ns.getattr(again.ino).await.unwrap().size, 3);
    }

    #[tokio::test]
    async fn negative_lookups_are_cached_until_the_ttl() {
        let (ns, client) = namespace(&["f"]);
        for _ in 0..3 {
            let missing = ns.lookup(InodeNo::ROOT, "missing").await;
            assert!(matches!(missing, Err(NamespaceError::NotFound)));
        }
        assert_eq!(client.count(Operation::Head), 1);
    }

    #[tokio::test]
    async fn cold_lookup_finds_files_and_directories() {
        let (ns, _) = namespace(&["f", "g/h"]);
        assert_eq!(
            ns.lookup(InodeNo::ROOT, "f").await.unwrap().kind,
            InodeKind::File
        );
        assert_eq!(
            ns.lookup(InodeNo::ROOT, "g").await.unwrap().kind,
            InodeKind::Directory
        );
        assert!(matches!(
            ns.lookup(InodeNo::ROOT, "nope").await,
            Err(NamespaceError::NotFound)
        ));
    }

    #[tokio::test]
    async fn forget_releases_inodes() {
        let (ns, _) = namespace(&["f"]);
        let f = ns.lookup(InodeNo::ROOT, "f").await.unwrap();
        ns.forget(f.ino, 1);
        assert!(matches!(
            ns.getattr(f.ino).await,
            Err(NamespaceError::UnknownInode(_))
        ));
    }

    #[tokio::test]
    async fn store_failure_is_an_error_not_a_missing_file() {
        let (ns, client) = namespace(&["f"]);
        client.fail_next(2);
        assert!(matches!(
            ns.lookup(InodeNo::ROOT, "f").await,
            Err(NamespaceError::Object(_))
        ));
    }
}
