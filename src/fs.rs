//! `RgridFs`: the filesystem operations, free of the FUSE binding. Each operation takes
//! plain values and returns a typed result or an [`FsError`]; `fuse.rs` only translates.
//!
//! Open handles live here: a file handle owns a [`FileReader`] (reading) or a writer with
//! its spool (`fs/write.rs`), a directory handle a snapshot of the listing taken at
//! opendir, so that readdir offsets stay stable.
//!
//! The kernel's page cache is the cheapest cache there is, so an open keeps it
//! (`keep_cache`) when the object's ETag is the one the previous open of the inode saw.

mod attr;
mod control;
mod error;
mod fill;
#[cfg(test)]
mod model;
mod passthrough;
mod sizes;
mod tree;
mod write;
mod writeback;
mod xattr;

use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

pub use attr::{Attr, Ownership, SetAttr, SetTime, StatFs};
pub use control::{
    Counters, MountIdentity, MountStatus, ReadMemory, SyncOutcome, UploadStatus, STATUS, SYNC,
};
pub use error::{FsError, Severity};

use crate::artifact::{self, KeptAttrs};
use crate::cache::{Form, ObjectCache};
use crate::namespace::{entry_name, DirEntry, InodeKind, InodeNo, Namespace, NamespaceError, Node};
use crate::readahead::ReadEngine;
use crate::retention::{Expiry, Retention, Subject};
use crate::upload::Uploader;
use crate::view::{Decodes, FileReader};
use passthrough::{IoMode, IoModes};
use write::Writer;
use writeback::WriteBacks;

/// Filesystem settings.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Owner and modes shown.
    pub ownership: Ownership,
    /// Where gzip-stored objects are decoded for their readers (files unlinked at once).
    pub decode_dir: PathBuf,
    /// Reads bypass the page cache (`--direct-io`).
    pub direct_io: bool,
    /// The user the daemon runs as: with root, the only one the control channel answers.
    pub control_uid: u32,
    /// What the mount is of, for its status.
    pub identity: MountIdentity,
    /// How long a link in `user.rgrid.url` stays valid.
    pub share_link_ttl: std::time::Duration,
    /// Cached files are served by FUSE passthrough where the kernel allows it.
    pub passthrough: bool,
    /// Files open at once through the mount; an open past it is ENFILE. Each holds a
    /// descriptor of the daemon (its spool or cache entry), and the daemon keeps some
    /// for itself: connections, the journal, fills.
    pub max_open_files: usize,
}

/// Who asks: the calling thread and its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller {
    /// Thread id (FUSE names the thread, not the process).
    pub pid: u32,
    /// User id.
    pub uid: u32,
}

/// A getxattr or listxattr answer for a buffer of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrValue {
    /// The caller asked for the size only (a buffer of 0).
    Size(u32),
    /// The value, which fits the buffer.
    Data(Vec<u8>),
}

impl XattrValue {
    /// `value` as the answer to a buffer of `size`: its size alone when asked with 0,
    /// ERANGE when it does not fit.
    pub fn fit(value: Vec<u8>, size: u32) -> Result<XattrValue, FsError> {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        match size {
            0 => Ok(XattrValue::Size(len)),
            n if n < len => Err(FsError::Range),
            _ => Ok(XattrValue::Data(value)),
        }
    }
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenMode {
    /// Any access mode but read-only.
    pub write: bool,
    /// O_TRUNC.
    pub truncate: bool,
    /// The thread opening the file.
    pub caller: u32,
}

/// A handle of an open file or directory, as the kernel names it in later requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle(pub u64);

impl std::fmt::Display for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An open file: a reader of one object version, or a writer with its spool.
#[derive(Debug)]
enum OpenFile {
    Read(Box<Reader>),
    Write(Box<Writer>),
}

/// A file open for reading: the view of one version of inode `ino`.
#[derive(Debug)]
struct Reader {
    ino: InodeNo,
    etag: Option<String>,
    view: FileReader,
    /// Served from an object cache entry.
    cached: bool,
}

/// What a new reader reads (see `RgridFs::to_read`).
enum ToRead {
    /// Content closed here in write-back mode, not in the store yet.
    Queued(Box<FileReader>),
    /// A version in the store.
    Stored(Node),
}

/// An opened file.
#[derive(Debug)]
pub struct Opened {
    /// The handle.
    pub fh: FileHandle,
    /// The page cache of the inode still holds this version's bytes.
    pub keep_cache: bool,
    /// Reads bypass the page cache (decoded content, whose size the kernel may not know;
    /// an open beside passthrough ones).
    pub direct_io: bool,
    /// The kernel is to serve it from this file (FUSE passthrough); if it cannot, the
    /// adapter says so with [`RgridFs::passthrough_refused`] and reads come here.
    pub backing: Option<std::fs::File>,
}

/// One entry of a readdir reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirLine<'a> {
    /// Entry name.
    pub name: &'a str,
    /// Attributes of the entry (for readdirplus; readdir uses ino and kind).
    pub attr: Attr,
    /// Offset of the entry after this one, for the next readdir call.
    pub next_offset: u64,
}

#[derive(Debug)]
struct DirHandle {
    dir: Node,
    parent: InodeNo,
    entries: Arc<Vec<DirEntry>>,
}

/// An open under way, counted against the mount's limit of open files until its file is
/// in the table or the open fails.
struct OpenSlot<'a>(&'a AtomicUsize);

impl Drop for OpenSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The filesystem of one mount.
#[derive(Debug)]
pub struct RgridFs {
    namespace: Namespace,
    engine: Arc<ReadEngine>,
    /// `None` on a read-only mount.
    uploader: Option<Arc<Uploader>>,
    /// `None` when the object cache is off.
    cache: Option<Arc<ObjectCache>>,
    retention: Arc<Retention>,
    config: FsConfig,
    files: Mutex<HashMap<FileHandle, Arc<tokio::sync::Mutex<OpenFile>>>>,
    /// Opens under way, each holding an `OpenSlot`: counted against the cap with `files`.
    opening: AtomicUsize,
    /// The writers of each inode, until their release is over: found without locking
    /// every open file (a lock held across an upload).
    writers: Mutex<HashMap<InodeNo, Vec<FileHandle>>>,
    /// Gzip decodes shared by the handles of one version.
    decodes: Decodes,
    /// ETag of each inode's last open: what its page cache holds.
    cached_versions: Mutex<HashMap<InodeNo, Option<String>>>,
    dirs: Mutex<HashMap<FileHandle, DirHandle>>,
    next_handle: AtomicU64,
    /// Keys whose coming expiry was logged.
    expiry_warned: Mutex<HashSet<String>>,
    /// Decoded sizes of gzip objects worked out at lookup (`fs/sizes.rs`).
    lookup_sizes: sizes::LookupSizes,
    /// Control answers waiting for their read.
    answers: control::Answers,
    /// Operations served.
    counters: control::OpCounters,
    /// When the mount started.
    started: SystemTime,
    /// Files closed in write-back mode whose upload may be pending.
    write_backs: WriteBacks,
    /// How each open file does its I/O: passthrough, page cache, or direct.
    io_modes: IoModes,
}

/// EREMOTE for an archived object that is not restored, which GET would refuse; the
/// error's log line says how to restore it.
fn check_not_archived(node: &Node) -> Result<(), FsError> {
    let Some(headers) = node.headers.as_deref().filter(|h| h.archived()) else {
        return Ok(());
    };
    Err(FsError::Archived {
        key: node.key.clone(),
        class: headers.storage_class.clone().unwrap_or_default(),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RgridFs {
    /// A filesystem over `namespace`, reading through `engine`, writing through
    /// `uploader` (`None`: read-only), keeping objects in `cache` (`None`: off), with
    /// expiry from `retention`.
    pub fn new(
        namespace: Namespace,
        engine: Arc<ReadEngine>,
        uploader: Option<Arc<Uploader>>,
        cache: Option<Arc<ObjectCache>>,
        retention: Arc<Retention>,
        config: FsConfig,
    ) -> RgridFs {
        RgridFs {
            io_modes: IoModes::new(config.passthrough),
            decodes: Decodes::new(config.decode_dir.clone(), cache.clone()),
            namespace,
            engine,
            uploader,
            cache,
            retention,
            config,
            cached_versions: Mutex::default(),
            files: Mutex::default(),
            opening: AtomicUsize::new(0),
            writers: Mutex::default(),
            dirs: Mutex::default(),
            next_handle: AtomicU64::new(1),
            expiry_warned: Mutex::default(),
            lookup_sizes: Mutex::default(),
            answers: control::Answers::default(),
            counters: control::OpCounters::default(),
            started: SystemTime::now(),
            write_backs: WriteBacks::default(),
        }
    }

    /// `name` in directory `parent`.
    pub async fn lookup(&self, parent: InodeNo, name: &OsStr) -> Result<Attr, FsError> {
        let name = entry_name(name).map_err(NamespaceError::lookup_of)?;
        self.settle_write_backs().await;
        let node = self.namespace.lookup(parent, name).await?;
        Ok(self.attr_of(node).await)
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: InodeNo, n: u64) {
        if self.namespace.forget(ino, n) {
            lock(&self.cached_versions).remove(&ino);
        }
    }

    /// setattr: a new size (through open handle `fh` if given), and a mode and mtime to
    /// keep.
    pub async fn setattr(
        &self,
        ino: InodeNo,
        fh: Option<FileHandle>,
        set: SetAttr,
    ) -> Result<Attr, FsError> {
        let kept = set.kept();
        let resized = match set.size {
            Some(size) => Some(self.truncate(ino, size, fh).await?),
            None => None,
        };
        match resized {
            Some(attr) if kept == KeptAttrs::default() => Ok(attr),
            _ => self.keep_attrs(ino, kept).await,
        }
    }

    /// Mode and mtime (`chmod`, `touch -d`, `cp -p`, `rsync -a`, `tar -x`), kept in the
    /// object's metadata: a file being written takes them up with its upload; a stored one
    /// gets its metadata rewritten. Owners and atime are accepted and not kept;
    /// directories, having no object, keep nothing.
    async fn keep_attrs(&self, ino: InodeNo, kept: KeptAttrs) -> Result<Attr, FsError> {
        self.writable(&[ino])?;
        let node = self.namespace.describe(ino).await?;
        if node.kind == InodeKind::Directory || kept == KeptAttrs::default() {
            return Ok(self.config.ownership.attr(&node));
        }
        if self.namespace.is_local(ino) || node.etag.is_none() {
            // Being written here: they go up with the upload.
            self.namespace.set_kept(ino, kept);
            self.restate_pending(ino);
        } else {
            // Shown once the store has them (rewrite_metadata records them).
            let mut headers = node.headers.as_deref().cloned().unwrap_or_default();
            node.kept.merged(kept).store(&mut headers.user_metadata);
            self.rewrite_metadata(&node, headers).await?;
        }
        self.getattr(ino).await
    }

    /// Version `was` of `ino` is also version `now` (same bytes: a copy): a page cache
    /// that holds the one holds the other.
    fn same_bytes_as(&self, ino: InodeNo, was: &Option<String>, now: Option<String>) {
        let mut cached = lock(&self.cached_versions);
        if cached.get(&ino) == Some(was) {
            cached.insert(ino, now);
        }
    }

    /// stat of `ino`.
    pub async fn getattr(&self, ino: InodeNo) -> Result<Attr, FsError> {
        self.settle_write_backs().await;
        let node = self.namespace.getattr(ino).await?;
        Ok(self.attr_of(node).await)
    }

    /// Opens file `ino`.
    pub async fn open(&self, ino: InodeNo, mode: OpenMode) -> Result<Opened, FsError> {
        let slot = self.open_slot()?;
        self.settle_write_backs().await;
        // With its headers: how it is stored, what it must hash to, when it expires.
        let node = self.namespace.describe(ino).await?;
        if node.kind == InodeKind::Directory {
            return Err(NamespaceError::IsADirectory.into());
        }
        if !mode.truncate {
            check_not_archived(&node)?;
        }
        if mode.write || mode.truncate {
            if !self.io_modes.released(ino).await {
                return Err(FsError::TextBusy);
            }
            let writer = self
                .open_writer(&node, mode.truncate, Some(mode.caller))
                .await?;
            let fh = self.insert_writer(writer, slot);
            return self.opened(fh, ino, false, false, None);
        }
        if self.io_modes.held(ino) && !self.cache_has(&node) {
            // A reader with no entry to pass through to, beside passthrough ones.
            self.io_modes.released(ino).await;
        }
        let node = match self.to_read(node).await? {
            ToRead::Stored(node) => node,
            ToRead::Queued(view) => {
                let reader = Reader {
                    ino,
                    etag: None,
                    view: *view,
                    cached: false,
                };
                let fh = self.insert_file(OpenFile::Read(Box::new(reader)), slot);
                return self.opened(fh, ino, false, false, None);
            }
        };
        self.note_expiry(&node);
        let (view, backing) = self.reader_of(&node)?;
        let cached = backing.is_some();
        // A decoded entry whose size the kernel may not have been told: every read
        // comes here rather than stopping at the kernel's idea of the end.
        let stale_size = cached && self.size_was_unknown(&node);
        let decoded = view.direct_io();
        if decoded && node.size == node.stored_size {
            self.learn_gzip_size(&node).await;
        }
        let previous = lock(&self.cached_versions).insert(ino, node.etag.clone());
        let keep_cache = node.etag.is_some() && previous == Some(node.etag.clone());
        let backing = backing.map(|file| (file, node.etag.clone()));
        let reader = Reader {
            ino,
            etag: node.etag,
            view,
            cached,
        };
        let fh = self.insert_file(OpenFile::Read(Box::new(reader)), slot);
        let direct_io = decoded || stale_size || self.config.direct_io;
        self.opened(fh, ino, keep_cache, direct_io, backing)
    }

    /// What a new reader of `node` reads: while the file waits for its upload, the
    /// queued content; while it is being written, the store's version with the store's
    /// size (a writer's changes are its own until it closes, and the namespace shows its
    /// size). A queued upload may land while this looks: its spool goes, and the file is
    /// the store's again.
    async fn to_read(&self, node: Node) -> Result<ToRead, FsError> {
        if !self.namespace.is_local(node.ino) {
            return Ok(ToRead::Stored(node));
        }
        if let Some(view) = self.pending_reader(node.ino, &node.key) {
            return Ok(ToRead::Queued(Box::new(view)));
        }
        self.settle_write_backs().await;
        let node = self.namespace.describe(node.ino).await?;
        if let Some(view) = self.pending_reader(node.ino, &node.key) {
            return Ok(ToRead::Queued(Box::new(view)));
        }
        if !self.namespace.is_local(node.ino) || node.etag.is_none() {
            return Ok(ToRead::Stored(node));
        }
        match self.namespace.stored_node(&node).await {
            // Deleted behind the writer: its reads say so.
            Err(NamespaceError::NotFound) => Ok(ToRead::Stored(node)),
            stored => Ok(ToRead::Stored(stored?)),
        }
    }

    /// The reply to an open of `ino` as `fh`: passed through to `backing` when the
    /// inode's other opens allow it, else with the page cache as asked, or direct I/O
    /// beside passthrough opens.
    pub(super) fn opened(
        &self,
        fh: FileHandle,
        ino: InodeNo,
        keep_cache: bool,
        direct_io: bool,
        backing: Option<(std::fs::File, Option<String>)>,
    ) -> Result<Opened, FsError> {
        let version = backing.as_ref().map(|(_, etag)| etag.as_deref());
        let Some(mode) = self.io_modes.open(fh, ino, version) else {
            // The kernel would refuse it: passthrough opens hold the inode.
            drop(lock(&self.files).remove(&fh));
            return Err(FsError::TextBusy);
        };
        let (keep_cache, direct_io, backing) = match mode {
            IoMode::Passthrough => (false, false, backing.map(|(file, _)| file)),
            IoMode::Cached => (keep_cache, direct_io, None),
        };
        Ok(Opened {
            fh,
            keep_cache,
            direct_io,
            backing,
        })
    }

    /// Whether `node`'s version has a cache entry that an open would pass through to.
    fn cache_has(&self, node: &Node) -> bool {
        let (Some(cache), Some(headers)) = (&self.cache, node.headers.as_deref()) else {
            return false;
        };
        cache.has(&node.object_id(), Form::of(headers))
    }

    /// The kernel offers no passthrough: every open uses the page cache. Returns whether
    /// it was on until now.
    pub fn passthrough_unavailable(&self) -> bool {
        self.io_modes.disable()
    }

    /// The kernel refused passthrough for `fh`: its reads come here (from the same local
    /// file). Returns whether passthrough was on until now (so that it is logged once).
    pub fn passthrough_refused(&self, fh: FileHandle) -> bool {
        self.io_modes.refused(fh);
        self.io_modes.disable()
    }

    /// A reader of stored file `node`: its cache entry if there is one (with a second
    /// descriptor of it, for passthrough), else the store, filling an entry as it reads
    /// (a gzip decode fills its own). Without its headers nothing tells the entry's form: no cache.
    fn reader_of(&self, node: &Node) -> Result<(FileReader, Option<std::fs::File>), FsError> {
        let store = |fill| FileReader::open(&self.engine, node, &self.decodes, fill);
        let (Some(cache), Some(headers)) = (&self.cache, node.headers.as_deref()) else {
            return Ok((store(None)?, None));
        };
        let id = node.object_id();
        let form = Form::of(headers);
        if let Some(file) = cache.open_entry(&id, form) {
            if form == Form::Decoded {
                // The entry's length is the decoded size: stat agrees before any read.
                let size = file.metadata()?.len();
                let etag = node.etag.as_deref();
                self.namespace.learned_size(node.ino, etag, size);
            }
            let backing = file.try_clone()?;
            return Ok((FileReader::local(&node.key, file), Some(backing)));
        }
        let sha256 = artifact::sha256(headers).map(str::to_owned);
        let fill = (form == Form::Plain)
            .then(|| cache.start_fill(&id, form, node.stored_size, sha256))
            .flatten();
        Ok((store(fill)?, None))
    }

    /// At the open of `node`: logs, once per key, that the file expires within the
    /// warning period, and tells the cache when its entry stops being worth keeping.
    /// Opens make no request for it: the tags count if this mount has them.
    fn note_expiry(&self, node: &Node) {
        let object = Subject {
            key: &node.key,
            size: node.stored_size,
            last_modified: node.mtime,
        };
        let expiry = self.retention.expiry(object, node.headers.as_deref(), None);
        let Some(Expiry::At { at, source }) = expiry else {
            return;
        };
        if let (Some(cache), Some(headers)) = (&self.cache, node.headers.as_deref()) {
            cache.note_expiry(&node.object_id(), Form::of(headers), at);
        }
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        if left >= self.retention.warning() {
            return;
        }
        let mut warned = lock(&self.expiry_warned);
        if warned.len() >= 10_000 {
            warned.clear();
        }
        if warned.insert(node.key.clone()) {
            let at = artifact::format_time(at);
            tracing::warn!(key = %node.key, expires_at = %at, ?source, "opened a file the store deletes soon");
        }
    }

    fn new_handle(&self) -> FileHandle {
        FileHandle(self.next_handle.fetch_add(1, Ordering::Relaxed))
    }

    /// A place among the mount's open files for an open about to start, or ENFILE at its
    /// limit, refused before any descriptor is taken: the daemon's own (connections,
    /// journal) are never the ones to run out. Opens under way count, so opens that run
    /// together never pass the limit.
    fn open_slot(&self) -> Result<OpenSlot<'_>, FsError> {
        let files = lock(&self.files);
        let max = self.config.max_open_files;
        if files.len() + self.opening.load(Ordering::Acquire) >= max {
            tracing::warn!(max, "open refused: the mount has its most files open");
            return Err(FsError::TooManyOpen { max });
        }
        self.opening.fetch_add(1, Ordering::AcqRel);
        Ok(OpenSlot(&self.opening))
    }

    /// Opens `file` in the place `slot` kept for it.
    fn insert_file(&self, file: OpenFile, slot: OpenSlot<'_>) -> FileHandle {
        let fh = self.new_handle();
        let mut files = lock(&self.files);
        files.insert(fh, Arc::new(tokio::sync::Mutex::new(file)));
        // Counted as open now, under the lock the count is read with.
        drop(slot);
        fh
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<tokio::sync::Mutex<OpenFile>>, FsError> {
        lock(&self.files)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle(fh))
    }

    /// An operation failed with `err`: counted if the store failed it.
    pub fn failed(&self, err: &FsError) {
        self.counters.failed(err);
    }

    /// Up to `size` bytes of open file `fh` at `offset`.
    pub async fn read(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let data = self.read_file(fh, offset, size).await?;
        self.counters.read(data.len());
        Ok(data)
    }

    async fn read_file(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let file = self.file(fh)?;
        let mut file = file.lock().await;
        match &mut *file {
            OpenFile::Read(reader) => self.read_view(reader, offset, size).await,
            OpenFile::Write(writer) => {
                if let Some(fill) = writer.fill.as_mut() {
                    let end = offset.saturating_add(u64::from(size));
                    fill.fill(&writer.spool, offset..end).await?;
                }
                Ok(Bytes::from(writer.spool.read_at(offset, size as usize)?))
            }
        }
    }

    async fn read_view(
        &self,
        reader: &mut Reader,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, FsError> {
        match reader.view.read(offset, size).await {
            Ok(chunk) => {
                if let (true, Some(cache)) = (reader.cached, &self.cache) {
                    cache.served(chunk.data.len());
                }
                if let Some(size) = chunk.size {
                    let etag = reader.etag.as_deref();
                    self.namespace.learned_size(reader.ino, etag, size);
                }
                Ok(chunk.data)
            }
            Err(e) => {
                if e.is_bad_content() {
                    // The page cache may hold bytes of it: the next open must drop them.
                    lock(&self.cached_versions).remove(&reader.ino);
                }
                if e.is_version_gone() {
                    let etag = reader.etag.as_deref();
                    self.namespace.version_gone(reader.ino, etag);
                }
                Err(FsError::of_read(e))
            }
        }
    }

    /// Opens directory `ino`, listing it.
    pub async fn opendir(&self, ino: InodeNo) -> Result<FileHandle, FsError> {
        self.settle_write_backs().await;
        let dir = self.namespace.getattr(ino).await?;
        let mut entries = self.namespace.readdir(ino).await?;
        self.size_listed(&mut entries).await;
        let parent = self.namespace.parent(ino).unwrap_or(InodeNo::ROOT);
        let fh = self.new_handle();
        lock(&self.dirs).insert(
            fh,
            DirHandle {
                dir,
                parent,
                entries,
            },
        );
        Ok(fh)
    }

    /// Hands the entries of open directory `fh` from `offset` on (`.` and `..` first) to
    /// `add`, until it returns false because the reply is full. With `plus`, every entry
    /// taken but `.` and `..` counts as a lookup, which the kernel will forget.
    pub fn readdir(
        &self,
        fh: FileHandle,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&DirLine<'_>) -> bool,
    ) -> Result<(), FsError> {
        let dirs = lock(&self.dirs);
        let handle = dirs.get(&fh).ok_or(FsError::BadHandle(fh))?;
        let own = self.config.ownership;
        let dir_attr = own.attr(&handle.dir);
        let parent_attr = Attr {
            ino: handle.parent,
            ..dir_attr
        };
        // By index from `offset`: readdir runs once per reply page, so skipping entry by
        // entry would make listing a large directory quadratic.
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for i in start..handle.entries.len() + 2 {
            let (name, node) = match i {
                0 => (".", None),
                1 => ("..", None),
                _ => (
                    handle.entries[i - 2].name.as_str(),
                    Some(&handle.entries[i - 2].node),
                ),
            };
            let attr = match (i, node) {
                (_, Some(node)) => own.attr(node),
                (0, None) => dir_attr,
                _ => parent_attr,
            };
            if !add(&DirLine {
                name,
                attr,
                next_offset: i as u64 + 1,
            }) {
                break;
            }
            if let (true, Some(node)) = (plus, node) {
                self.namespace.remember(handle.dir.ino, name, node);
            }
        }
        Ok(())
    }

    /// statfs of the mount.
    pub fn statfs(&self) -> StatFs {
        StatFs::UNBOUNDED
    }

    /// Closes directory `fh`.
    pub fn releasedir(&self, fh: FileHandle) {
        lock(&self.dirs).remove(&fh);
    }
}
