//! Files of [`RgridFs`] open for writing: create, open, write, truncate, flush, fsync and
//! release. Each is backed by a [`Spool`] and uploaded on flush, fsync and release.
//!
//! close() maps to flush: by default it returns only once the upload is done, with EIO if
//! it failed (the file then stays journaled and is uploaded by the retry loop); in
//! write-back mode once the upload is journaled and queued (`fs/writeback.rs`).

use std::ffi::OsStr;
use std::sync::Arc;

use super::fill::LazyFill;
use super::{lock, Attr, FileHandle, FsError, OpenFile, OpenSlot, Opened, RgridFs};
use crate::cache::Form;
use crate::namespace::{entry_name, InodeKind, InodeNo, Node, StoredVersion};
use crate::object::ObjectId;
use crate::upload::{PartStream, Sent, Spool, Uploaded, Uploader};
use crate::view::FileReader;

/// Bytes read at a time when a spool starts from the object's content.
const FILL_CHUNK: u32 = 1 << 20;

/// A file open for writing.
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) ino: InodeNo,
    key: String,
    pub(super) spool: Spool,
    /// Changed since the last upload.
    dirty: bool,
    /// A write to the spool failed (a full disk): the content is incomplete, so it is
    /// never uploaded, and every later write, flush and fsync reports this errno.
    failed: Option<i32>,
    /// Parts sent while the file is written front to back, from empty.
    stream: Option<PartStream>,
    /// What of the object's content the spool still lacks (opened without O_TRUNC).
    pub(super) fill: Option<LazyFill>,
    /// The process that opened the file, if known: until it closes the file, only its
    /// closes upload.
    opener: Option<u32>,
    /// The opener has closed (a descriptor of) the file.
    opener_closed: bool,
    /// The spool the last write-back close queued: it belongs to the upload now, so a
    /// write after it goes to a copy, and fsync waits for it.
    pub(super) queued: Option<std::path::PathBuf>,
    /// The version the spool's content went up as (its form, size and SHA-256), while
    /// nothing has changed it since: at release the spool becomes that version's cache
    /// entry.
    stored_as: Option<(ObjectId, Form, u64, String)>,
}

impl Writer {
    fn new(ino: InodeNo, key: String, spool: Spool, dirty: bool, caller: Option<u32>) -> Writer {
        Writer {
            ino,
            key,
            spool,
            dirty,
            failed: None,
            stream: None,
            fill: None,
            opener: caller.and_then(process_of),
            opener_closed: false,
            queued: None,
            stored_as: None,
        }
    }

    /// Notes a close by thread `tid`; true when that close leaves the upload to the
    /// opener: it comes from another process while the opener still has the file open
    /// (a child closing the copy it inherited). Once the opener has closed, any close may
    /// be the last one, so it uploads and waits (`Popen(cmd, stdout=f)`, `f.close()`,
    /// then the child's exit).
    fn leaves_upload_to_opener(&mut self, tid: u32) -> bool {
        // Once the opener has closed, no close needs /proc read again.
        if !self.opener_closed && self.opened_by(tid) {
            self.opener_closed = true;
        }
        !self.opener_closed
    }

    /// Whether thread `tid` is of the process that opened the file (unknown: yes).
    fn opened_by(&self, tid: u32) -> bool {
        match (self.opener, process_of(tid)) {
            (Some(opener), Some(closer)) => opener == closer,
            _ => true,
        }
    }

    /// Copies the rest of the object's content into the spool. Done before the first
    /// change: if the version read at open was replaced meanwhile, that change fails
    /// (nothing of the writer's is lost), not a close whose spool holds writes.
    async fn complete_fill(&mut self) -> Result<(), FsError> {
        if let Some(fill) = self.fill.as_mut() {
            fill.fill(&self.spool, 0..u64::MAX).await?;
            self.fill = None;
        }
        Ok(())
    }

    /// Runs a spool operation, remembering a failure for good.
    fn spool_op<T>(&mut self, op: impl FnOnce(&Spool) -> std::io::Result<T>) -> Result<T, FsError> {
        if let Some(errno) = self.failed {
            return Err(FsError::Io(std::io::Error::from_raw_os_error(errno)));
        }
        op(&self.spool).map_err(|e| {
            self.failed = Some(e.raw_os_error().unwrap_or(libc::EIO));
            tracing::warn!(key = %self.key, "spool write failed, the file will not be uploaded: {e}");
            FsError::Io(e)
        })
    }
}

impl RgridFs {
    fn uploader(&self) -> Result<&Arc<Uploader>, FsError> {
        self.uploader.as_ref().ok_or(FsError::ReadOnly)
    }

    /// Fails unless `inodes` may change: a writable mount, none in a read-only place.
    pub(super) fn writable(&self, inodes: &[InodeNo]) -> Result<&Arc<Uploader>, FsError> {
        let uploader = self.uploader()?;
        if inodes.iter().any(|ino| self.namespace.is_read_only(*ino)) {
            return Err(FsError::ReadOnly);
        }
        Ok(uploader)
    }

    /// A writer of `node` for thread `caller` (none: for the mount itself); without
    /// `truncate` the spool starts with the object's bytes.
    pub(super) async fn open_writer(
        &self,
        node: &Node,
        truncate: bool,
        caller: Option<u32>,
    ) -> Result<Writer, FsError> {
        if node.read_only {
            return Err(FsError::ReadOnly);
        }
        let spool = self.uploader()?.spool()?;
        let fill = match self.start_fill(&spool, node, truncate).await {
            Ok(fill) => fill,
            Err(e) => {
                self.uploader()?.close_spool(&spool);
                return Err(e);
            }
        };
        self.namespace.begin_write(node.ino);
        if truncate {
            self.namespace.set_size(node.ino, 0);
        }
        let mut writer = Writer::new(node.ino, node.key.clone(), spool, truncate, caller);
        writer.fill = fill;
        if truncate {
            writer.stream = Some(self.uploader()?.stream(&writer.key, &writer.spool));
        }
        Ok(writer)
    }

    /// How `spool` comes to hold `node`'s content (without `truncate`): lazily for plain
    /// objects, decoded whole now for gzip ones.
    async fn start_fill(
        &self,
        spool: &Spool,
        node: &Node,
        truncate: bool,
    ) -> Result<Option<LazyFill>, FsError> {
        if truncate {
            return Ok(None);
        }
        let settled;
        let node = match self.write_backs.spool_of(node.ino) {
            Some(pending) => {
                // Closed here, not in the store yet: the queued content is the file's.
                if let Ok(mut from) = std::fs::File::open(&pending) {
                    spool.copy_from(&mut from)?;
                    return Ok(None);
                }
                // Its upload finished since the open described the file: start from
                // the version the store has now.
                self.settle_write_backs().await;
                settled = self.namespace.describe(node.ino).await?;
                &settled
            }
            None => node,
        };
        if node.etag.is_none() {
            return Ok(None);
        }
        let stored;
        // Another handle changed its size here: start from what the store holds.
        let node = if self.namespace.is_local(node.ino) {
            stored = self.namespace.stored_node(node).await?;
            &stored
        } else {
            node
        };
        if node.stored_size == 0 {
            return Ok(None);
        }
        let view = FileReader::open(&self.engine, node, &self.decodes, None)?;
        if view.direct_io() {
            // Decoded content, whose size may be a guess: copied whole, now.
            self.fill_whole(spool, view).await?;
            return Ok(None);
        }
        spool.set_len(node.size)?;
        Ok(Some(LazyFill::new(view, node.size)))
    }

    /// Copies all the content `view` reads into `spool`: decompressed, and checked
    /// against its SHA-256.
    async fn fill_whole(&self, spool: &Spool, mut view: FileReader) -> Result<(), FsError> {
        let mut offset = 0;
        loop {
            let chunk = view.read(offset, FILL_CHUNK).await?;
            if chunk.data.is_empty() {
                return Ok(());
            }
            spool.write_at(offset, &chunk.data)?;
            offset += chunk.data.len() as u64;
        }
    }

    /// Creates file `name` in `parent` and opens it for writing, for thread `caller`.
    pub async fn create(
        &self,
        parent: InodeNo,
        name: &OsStr,
        caller: u32,
    ) -> Result<(Attr, Opened), FsError> {
        let name = entry_name(name)?;
        let uploader = self.writable(&[parent])?;
        let slot = self.open_slot()?;
        let spool = uploader.spool()?;
        let node = match self.namespace.create_local(parent, name, InodeKind::File) {
            Ok(node) => node,
            Err(e) => {
                uploader.close_spool(&spool);
                return Err(e.into());
            }
        };
        let mut writer = Writer::new(node.ino, node.key.clone(), spool, true, Some(caller));
        writer.stream = Some(self.uploader()?.stream(&writer.key, &writer.spool));
        let fh = self.insert_writer(writer, slot);
        let opened = self.opened(fh, node.ino, false, false, None)?;
        Ok((self.config.ownership.attr(&node), opened))
    }

    /// Writes `data` at `offset` of open file `fh`; with `clear_setid` (the kernel says
    /// the writer may not keep them) the setuid and setgid bits go, as on a local disk.
    pub async fn write(
        &self,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        clear_setid: bool,
    ) -> Result<u32, FsError> {
        let written = self.write_file(fh, offset, data).await?;
        if clear_setid {
            self.clear_setid(fh).await?;
        }
        self.counters.write(written as usize);
        Ok(written)
    }

    async fn clear_setid(&self, fh: FileHandle) -> Result<(), FsError> {
        let file = self.file(fh)?;
        let OpenFile::Write(writer) = &*file.lock().await else {
            return Ok(());
        };
        let kept = self.namespace.upload_attrs(writer.ino).kept;
        if let Some(mode) = kept.mode.filter(|m| m & 0o6000 != 0) {
            let cleared = crate::artifact::KeptAttrs {
                mode: Some(mode & !0o6000),
                mtime: None,
            };
            self.namespace.set_kept(writer.ino, cleared);
        }
        Ok(())
    }

    async fn write_file(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        let data = within_limit(offset, data, self.uploader()?.max_file_size())?;
        let file = self.file(fh)?;
        let mut file = file.lock().await;
        let OpenFile::Write(writer) = &mut *file else {
            return Err(FsError::BadHandle(fh));
        };
        writer.complete_fill().await?;
        self.own_spool(writer)?;
        let size = writer.spool_op(|spool| {
            spool.write_at(offset, data)?;
            spool.size()
        });
        let Ok(size) = size else {
            self.end_stream(writer);
            return size.map(|_| 0);
        };
        writer.dirty = true;
        writer.stored_as = None;
        self.namespace.set_size(writer.ino, size);
        if let Some(stream) = writer.stream.as_mut() {
            if !self.uploader()?.stream_write(stream, offset, data).await {
                self.end_stream(writer);
            }
        }
        Ok(data.len() as u32)
    }

    /// Opens `writer`, known as one of its inode's until its release is over.
    pub(super) fn insert_writer(&self, writer: Writer, slot: OpenSlot<'_>) -> FileHandle {
        let ino = writer.ino;
        let fh = self.insert_file(OpenFile::Write(Box::new(writer)), slot);
        lock(&self.writers).entry(ino).or_default().push(fh);
        fh
    }

    /// Copies in what the open writers of the inodes `chosen` (one file, or the files
    /// under a directory) have not yet copied from their object, before a rename takes
    /// the object from under their lazy fills: their content goes up under the new name
    /// whole, and their next write does not fail. A writer whose copy fails (its object
    /// replaced since its open) fails its close, not the rename. Only the chosen
    /// writers are locked: another's lock may be held across its upload.
    pub(super) async fn complete_fills(&self, chosen: impl Fn(InodeNo) -> bool) {
        let handles: Vec<FileHandle> = lock(&self.writers)
            .iter()
            .filter(|(ino, _)| chosen(**ino))
            .flat_map(|(_, fhs)| fhs.iter().copied())
            .collect();
        for fh in handles {
            let Ok(file) = self.file(fh) else { continue };
            let mut file = file.lock().await;
            let OpenFile::Write(writer) = &mut *file else {
                continue;
            };
            if writer.fill.is_none() {
                continue;
            }
            if let Err(e) = writer.complete_fill().await {
                tracing::warn!(key = %writer.key, "renamed before its content was copied: {e}");
                writer.failed = Some(e.errno());
            }
        }
    }

    /// Before a change after a write-back close: the queued spool is the upload's, so the
    /// writer goes on in a copy of it.
    fn own_spool(&self, writer: &mut Writer) -> Result<(), FsError> {
        writer.stored_as = None;
        if writer.queued.as_ref() != Some(&writer.spool.path().to_owned()) {
            return Ok(());
        }
        let uploader = self.uploader()?;
        let fresh = uploader.spool()?;
        let copied =
            std::fs::File::open(writer.spool.path()).and_then(|mut f| fresh.copy_from(&mut f));
        if let Err(e) = copied {
            uploader.close_spool(&fresh);
            return Err(e.into());
        }
        let queued = std::mem::replace(&mut writer.spool, fresh);
        uploader.close_spool(&queued);
        // The queued content stays the file's last closed one, which a reader or another
        // writer opened now starts from, until this writer closes.
        Ok(())
    }

    /// Gives up sending parts while writing: close uploads the spool whole.
    fn end_stream(&self, writer: &mut Writer) {
        if let (Some(stream), Some(uploader)) = (writer.stream.take(), &self.uploader) {
            uploader.abandon(stream);
        }
    }

    /// fsync(), and close() by thread `closer`: uploads open file `fh` if it changed.
    /// A close from another process while the opener still has the file open is, as a
    /// rule, a child closing a descriptor it inherited (fork, then exec or exit) while
    /// the opener may still be writing: it uploads nothing, where it would send a
    /// half-written file once per child, and returns 0 without waiting for the opener's
    /// upload. The opener's close uploads, every close after it does, and so does the
    /// last close of all (release).
    pub async fn flush(&self, fh: FileHandle, closer: Option<u32>) -> Result<(), FsError> {
        let queue = self.uploader.as_ref().is_some_and(|u| u.writes_back());
        self.flush_file(fh, closer, queue).await
    }

    /// Uploads open file `fh` if it changed: queued (write-back) or at once.
    pub(super) async fn flush_file(
        &self,
        fh: FileHandle,
        closer: Option<u32>,
        queue: bool,
    ) -> Result<(), FsError> {
        let file = self.file(fh)?;
        let mut file = file.lock().await;
        let OpenFile::Write(writer) = &mut *file else {
            return Ok(());
        };
        if closer.is_some_and(|tid| writer.leaves_upload_to_opener(tid)) {
            tracing::debug!(key = %writer.key, "close by a child process: no upload");
            return Ok(());
        }
        if !(writer.dirty || self.namespace.upload_attrs(writer.ino).pending) {
            return Ok(());
        }
        match queue {
            true => self.queue_upload(writer).await,
            false => self.upload(writer).await,
        }
    }

    /// A write-back close: the upload is journaled and queued.
    async fn queue_upload(&self, writer: &mut Writer) -> Result<(), FsError> {
        let Some(stream) = self.prepare_upload(writer).await? else {
            return Ok(());
        };
        let kept = self.namespace.upload_attrs(writer.ino).kept;
        let size = writer.spool.size()?;
        // Linked before the queue can send it and remove it. A queued spool's content
        // is final: a later change goes on in a copy (`own_spool`).
        let linked = (self.cache.as_ref()).and_then(|c| c.link_spool(writer.spool.path()));
        let spool = (self.uploader()?)
            .enqueue(&writer.key, &writer.spool, stream, kept)
            .await?;
        writer.dirty = false;
        writer.stored_as = None;
        writer.queued = Some(spool.clone());
        self.write_backs.closed(writer.ino, spool, linked);
        self.namespace.closed_here(writer.ino, size);
        self.namespace.kept_sent(writer.ino, kept);
        Ok(())
    }

    /// What comes before any upload of `writer`: `None` when there is nothing to upload
    /// (its file was unlinked); else the parts it streamed, if any, with the writer's key
    /// following a rename and its spool complete.
    async fn prepare_upload(
        &self,
        writer: &mut Writer,
    ) -> Result<Option<Option<PartStream>>, FsError> {
        writer.spool_op(|_| Ok(()))?;
        if self.namespace.is_unlinked(writer.ino) {
            // Unlinked, or replaced by a rename, while open: its content has no name to
            // go to, and uploading it would bring the old name back.
            tracing::debug!(key = %writer.key, "closed after unlink: no upload");
            self.end_stream(writer);
            writer.dirty = false;
            writer.stored_as = None;
            return Ok(None);
        }
        writer.complete_fill().await?;
        if let Some(key) = self
            .namespace
            .key_of(writer.ino)
            .filter(|k| *k != writer.key)
        {
            // Renamed while open: the content follows the file to its new name, and the
            // parts streamed to the old one are given up.
            self.end_stream(writer);
            writer.key = key;
        }
        Ok(Some(writer.stream.take()))
    }

    /// Uploads `writer` now and waits for the store.
    async fn upload(&self, writer: &mut Writer) -> Result<(), FsError> {
        let Some(stream) = self.prepare_upload(writer).await? else {
            return Ok(());
        };
        let kept = self.namespace.upload_attrs(writer.ino).kept;
        let uploader = self.uploader()?;
        let sent = uploader
            .upload(&writer.key, &writer.spool, stream, kept)
            .await;
        if self.namespace.is_unlinked(writer.ino) {
            // Unlinked while the upload ran: the removal wins, whatever the upload did.
            if let Err(e) = uploader.delete(&writer.key).await {
                tracing::warn!(key = %writer.key, "removing what an upload put back after an unlink: {e}");
            }
            writer.dirty = false;
            writer.stored_as = None;
            return Ok(());
        }
        let sent = match sent {
            Ok(sent) => sent,
            Err(e) => {
                if uploader.is_pending(writer.spool.path()) {
                    // Until the retry loop gets it there, the file's content is here.
                    let spool = writer.spool.path().to_owned();
                    self.write_backs.closed(writer.ino, spool, None);
                }
                return Err(e.into());
            }
        };
        writer.dirty = false;
        writer.stored_as = None;
        // What an earlier write-back close queued is superseded now.
        self.write_backs.forget(writer.ino);
        // Superseded: another writer's newer close of the file went up instead.
        if let Sent::Stored(uploaded) = sent {
            let id = ObjectId::new(uploaded.key.clone(), uploaded.etag.clone());
            let form = Form::of(&uploaded.headers);
            writer.stored_as = Some((id, form, uploaded.size, uploaded.sha256.clone()));
            self.after_upload(writer.ino, *uploaded).await;
        }
        Ok(())
    }

    /// `ino`'s content is in the store as `uploaded`: the namespace shows that version.
    pub(super) async fn after_upload(&self, ino: InodeNo, uploaded: Uploaded) {
        // The page cache holds what was written, which is now this version.
        lock(&self.cached_versions).insert(ino, uploaded.etag.clone());
        let stored = StoredVersion {
            size: uploaded.size,
            stored_size: uploaded.stored_size,
            etag: uploaded.etag.clone(),
            kept: crate::artifact::KeptAttrs::of(&uploaded.headers),
        };
        self.namespace.stored(ino, stored);
        self.keep_late_attrs(ino, uploaded).await;
    }

    /// A chmod or touch that landed while the upload ran is not in the object: a metadata
    /// rewrite of exactly that version (its own headers, pinned by If-Match) takes it up.
    /// Not when the file has moved on (another writer's upload) or there is no ETag to
    /// pin: then it stays pending for the next flush or release, as when the rewrite
    /// fails. The data is durable either way.
    async fn keep_late_attrs(&self, ino: InodeNo, uploaded: Uploaded) {
        let attrs = self.namespace.upload_attrs(ino);
        if !attrs.pending || uploaded.etag.is_none() {
            return;
        }
        let Ok(node) = self.namespace.getattr(ino).await else {
            return;
        };
        if node.etag != uploaded.etag {
            return;
        }
        let mut headers = uploaded.headers;
        attrs.kept.store(&mut headers.user_metadata);
        if let Err(e) = self.rewrite_metadata(&node, headers).await {
            tracing::warn!(key = %node.key, "attributes set during an upload not stored yet: {e}");
        }
    }

    /// Closes file `fh`: a writer not flushed (written through mmap) is uploaded now, and
    /// its spool removed unless the upload is still pending.
    pub async fn release(&self, fh: FileHandle) {
        self.io_modes.release(fh);
        let Some(file) = lock(&self.files).remove(&fh) else {
            return;
        };
        let mut file = file.lock().await;
        let writer = match &mut *file {
            OpenFile::Write(writer) => writer,
            OpenFile::Read(reader) => return reader.view.close(),
        };
        let mut attrs_changed = self.namespace.upload_attrs(writer.ino).pending;
        if (writer.dirty || attrs_changed) && writer.failed.is_none() {
            if let Err(e) = self.upload(writer).await {
                tracing::warn!(key = %writer.key, "upload at release failed, kept pending: {e}");
                attrs_changed &= !self.drop_unsendable_attrs(writer);
            }
        }
        self.end_stream(writer);
        self.cache_spool(writer);
        if let Some(uploader) = &self.uploader {
            uploader.close_spool(&writer.spool);
        }
        let others = self.writer_released(writer.ino, fh);
        let unchanged = !writer.dirty && !attrs_changed;
        let queued = self.write_backs.spool_of(writer.ino).is_some()
            || self
                .uploader
                .as_ref()
                .is_some_and(|u| u.has_pending(&writer.key));
        if unchanged && !queued && !others {
            self.namespace.end_write(writer.ino);
        }
    }

    /// After a failed upload of `writer` that changed nothing but a mode or mtime, and
    /// that nothing journaled keeps trying (it could not copy its version, gone from
    /// the store since its open): those attributes went with that version, and the
    /// store's file stands without them. Whether they were dropped.
    fn drop_unsendable_attrs(&self, writer: &Writer) -> bool {
        let pending = (self.uploader.as_ref()).is_some_and(|u| u.has_pending(&writer.key));
        if writer.dirty || pending {
            return false;
        }
        tracing::warn!(key = %writer.key, "mode or mtime set on a version the store no longer has: not kept");
        let kept = self.namespace.upload_attrs(writer.ino).kept;
        self.namespace.kept_sent(writer.ino, kept);
        true
    }

    /// Writer `fh` of `ino` is released; whether `ino` has other writers.
    fn writer_released(&self, ino: InodeNo, fh: FileHandle) -> bool {
        let mut writers = lock(&self.writers);
        let Some(fhs) = writers.get_mut(&ino) else {
            return false;
        };
        fhs.retain(|h| *h != fh);
        let others = !fhs.is_empty();
        if !others {
            writers.remove(&ino);
        }
        others
    }

    /// At release: a spool whose content is the version it was uploaded as, unchanged
    /// since, becomes that version's cache entry (a script that writes an output and
    /// reads it back reads locally, on this mount and the next).
    fn cache_spool(&self, writer: &Writer) {
        let (Some(cache), Some((id, form, size, sha256))) = (&self.cache, &writer.stored_as) else {
            return;
        };
        let unlinked = self.namespace.is_unlinked(writer.ino);
        if writer.dirty || writer.failed.is_some() || unlinked {
            return;
        }
        if self.namespace.current_etag(writer.ino).as_ref() == Some(&id.etag) {
            cache.adopt(id, *form, writer.spool.path(), *size, sha256);
        }
    }

    /// Releases every file still open, once the session has ended: the kernel drops
    /// what is still queued when a connection goes, and a detached mount's last close
    /// can take its own RELEASE with it.
    pub async fn release_all(&self) {
        let open: Vec<FileHandle> = lock(&self.files).keys().copied().collect();
        for fh in open {
            self.release(fh).await;
        }
    }

    /// Truncates or extends file `ino` to `size`, through open handle `fh` if given.
    pub async fn truncate(
        &self,
        ino: InodeNo,
        size: u64,
        fh: Option<FileHandle>,
    ) -> Result<Attr, FsError> {
        let max = self.uploader()?.max_file_size();
        if size > max {
            return Err(FsError::TooLarge { max });
        }
        let file = match fh {
            Some(fh) => Some(self.file(fh)?),
            None => None,
        };
        if let Some(file) = file {
            let mut file = file.lock().await;
            if let OpenFile::Write(writer) = &mut *file {
                self.end_stream(writer);
                // What stays is copied before the cut: a failed copy leaves the file as
                // it was, not with its tail dropped from the fill but never copied.
                if let Some(fill) = writer.fill.as_mut() {
                    fill.fill(&writer.spool, 0..size).await?;
                    fill.truncated(size);
                }
                writer.complete_fill().await?;
                self.own_spool(writer)?;
                writer.spool_op(|spool| spool.set_len(size))?;
                writer.dirty = true;
                writer.stored_as = None;
                self.namespace.set_size(ino, size);
                return Ok(self.attr_of(self.namespace.known(ino)?).await);
            }
        }
        // truncate(2) on a path: a writer of its own, uploaded at once.
        let node = self.namespace.describe(ino).await?;
        let mut writer = self.open_writer(&node, size == 0, None).await?;
        if let Some(fill) = writer.fill.as_mut() {
            fill.truncated(size);
        }
        writer.spool.set_len(size)?;
        let result = self.upload(&mut writer).await;
        self.uploader()?.close_spool(&writer.spool);
        result?;
        Ok(self.attr_of(self.namespace.known(ino)?).await)
    }
}

/// The part of `data` written at `offset` that ends within `max` bytes, as a local disk
/// does at its file size limit: a write that crosses it is short, one past it EFBIG.
fn within_limit(offset: u64, data: &[u8], max: u64) -> Result<&[u8], FsError> {
    let room = max.saturating_sub(offset);
    if room == 0 && !data.is_empty() {
        return Err(FsError::TooLarge { max });
    }
    let fits = usize::try_from(room).map_or(data.len(), |room| room.min(data.len()));
    Ok(&data[..fits])
}

/// The process (thread group) of thread `tid`: FUSE requests name the calling thread, and
/// a file opened by one thread of a process is often closed by another.
fn process_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:"))?;
    tgid.trim().parse().ok()
}
