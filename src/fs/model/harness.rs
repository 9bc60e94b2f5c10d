//! The harness of the reference-model test: a mount over the in-memory client beside the
//! model, with one method per operation that makes it on the filesystem as the kernel
//! would, checks the answer against the model, and updates the model with it.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use proptest::prelude::*;

use super::{bytes, caller, same_bytes, slice, summary, write_at, OTHER_PROCESS};
use super::{Case, Checked, FilePath, FileState, Handle, Kind, Mode, Model, Op, View};
use crate::fs::{Attr, FileHandle, FsError, OpenMode, RgridFs, SetAttr};
use crate::namespace::{InodeKind, InodeNo};
use crate::object::{MemoryClient, ObjectClient, ObjectHeaders};
use setup::{mount, stored_objects};

mod setup;
mod tree;

/// What a handle pinned to a version the store no longer has may fail with, replaced
/// (If-Match) or deleted: EIO, never ENOENT, which read(2) and write(2) never give.
const GONE: [i32; 1] = [libc::EIO];

/// The errno of `result`, 0 for success.
fn errno<T>(result: &Result<T, FsError>) -> i32 {
    result.as_ref().err().map_or(0, FsError::errno)
}

fn outcome<T>(result: &Result<T, FsError>) -> String {
    match result {
        Ok(_) => "success".to_owned(),
        Err(e) => format!("{e} (errno {})", e.errno()),
    }
}

fn unexpected(what: &str, e: &FsError) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e} (errno {})", e.errno()))
}

/// The filesystem under test, its bucket, and the model of both.
pub(super) struct Harness {
    fs: RgridFs,
    client: MemoryClient,
    model: Model,
    handles: Vec<Handle>,
    /// Closes are written back (`--write-back`).
    write_back: bool,
    /// Spools, journal and cache; removed after the filesystem (fields drop in order).
    _dir: tempfile::TempDir,
}

impl Harness {
    pub(super) fn new(case: &Case) -> Harness {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (client, mut model) = (MemoryClient::new(), Model::default());
        for (path, len, seed) in &case.objects {
            let data = bytes(*len, *seed);
            client.insert(&path.key(), data.clone(), ObjectHeaders::default());
            model.put(&path.key(), data);
        }
        let fs = mount(&client, &dir.path().join("cache"), case);
        let handles = Vec::new();
        Harness {
            fs,
            client,
            model,
            handles,
            write_back: case.write_back,
            _dir: dir,
        }
    }

    pub(super) async fn apply(&mut self, op: &Op) -> Checked {
        match *op {
            Op::Create(path) => self.create(path).await,
            Op::Open(path, mode) => self.open(path, mode).await,
            Op::Write(handle, at, len, seed) => self.write(handle, at, &bytes(len, seed)).await,
            Op::Read(handle, offset, len) => self.read(handle, offset, len).await,
            Op::Ftruncate(handle, len) => self.ftruncate(handle, len).await,
            Op::Truncate(path, len) => self.truncate(path, len).await,
            Op::Flush(handle) => self.flush(handle).await,
            Op::FlushByChild(handle) => self.flush_by_child(handle).await,
            Op::Fsync(handle) => self.fsync(handle).await,
            Op::Release(handle) => self.release(handle).await,
            Op::Close(handle) => self.close(handle).await,
            Op::Rename(from, to) => self.rename(from, to).await,
            Op::RenameDir(from, to) => self.rename_dir(from, to).await,
            Op::Unlink(path) => self.unlink(path).await,
            Op::Chmod(path, mode) => self.chmod(path, mode).await,
            Op::Touch(path, secs) => self.touch(path, secs).await,
            Op::Mkdir(dir) => self.mkdir(dir).await,
            Op::Rmdir(dir) => self.rmdir(dir).await,
            Op::Readdir(dir) => self.readdir(dir).await,
            Op::Stat(path) => self.stat(path).await,
            Op::Put(path, len, seed) => {
                let data = bytes(len, seed);
                let headers = ObjectHeaders::default();
                self.client.insert(&path.key(), data.clone(), headers);
                self.model.put(&path.key(), data);
                Ok(())
            }
            Op::Delete(path) => {
                self.client.delete(&path.key()).await?;
                self.model.bucket.remove(&path.key());
                Ok(())
            }
            Op::Sync => self.sync().await,
        }
    }

    /// Looks `key` up as the kernel does, name by name, and checks what it finds against
    /// the model: its directory's inode and its attributes, or `None` where the kernel
    /// answers ENOENT (or ENOTDIR, under a file).
    async fn looked_up(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Option<(InodeNo, Attr)>, TestCaseError> {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let parent = match dir {
            "" => InodeNo::ROOT,
            dir => match Box::pin(self.looked_up(dir, what)).await? {
                Some((_, attr)) if attr.kind == InodeKind::Directory => attr.ino,
                _ => return Ok(None),
            },
        };
        let want = self.model.kind(key);
        let found = self.fs.lookup(parent, OsStr::new(name)).await;
        let is = |kind: Kind| match kind {
            Kind::File => InodeKind::File,
            Kind::Dir => InodeKind::Directory,
        };
        match (want, found) {
            (Some(kind), Ok(attr)) if attr.kind == is(kind) => Ok(Some((parent, attr))),
            (None, Err(e)) if e.errno() == libc::ENOENT => Ok(None),
            (want, result) => Err(TestCaseError::fail(format!(
                "{what}: lookup of {key:?} gave {}, the model has {want:?}",
                match &result {
                    Ok(attr) => format!("a {:?}", attr.kind),
                    Err(_) => outcome(&result),
                }
            ))),
        }
    }

    /// Looks directory `dir` up, as the kernel does before `what`: its inode when it is
    /// one, else `None` (ENOENT, or ENOTDIR for a file).
    async fn dir_found(&self, dir: &str, what: &str) -> Result<Option<InodeNo>, TestCaseError> {
        if dir.is_empty() {
            return Ok(Some(InodeNo::ROOT));
        }
        let found = self.looked_up(dir, what).await?;
        Ok(found
            .filter(|(_, a)| a.kind == InodeKind::Directory)
            .map(|(_, a)| a.ino))
    }

    /// Looks `path` up, as the kernel does before `what`: its directory's inode and its
    /// attributes when it is a file, else `None` (ENOENT, EISDIR or ENOTDIR).
    async fn found(
        &self,
        path: FilePath,
        what: &str,
    ) -> Result<Option<(InodeNo, Attr)>, TestCaseError> {
        let found = self.looked_up(&path.key(), what).await?;
        Ok(found.filter(|(_, a)| a.kind == InodeKind::File))
    }

    /// The `which`-th open handle (of the writers only, if asked), if any is open.
    fn pick(&self, which: usize, writers_only: bool) -> Option<usize> {
        let eligible: Vec<usize> = (0..self.handles.len())
            .filter(|i| !writers_only || self.handles[*i].view.is_writer())
            .collect();
        eligible.get(which % eligible.len().max(1)).copied()
    }

    /// Whether what handle `i` is pinned to, if anything, is still in the store.
    fn pin_holds(&self, i: usize) -> bool {
        match &self.handles[i].view {
            View::Reader { pin, .. } | View::Writer { pin: Some(pin), .. } => self.model.holds(pin),
            View::Writer { pin: None, .. } | View::Loose { .. } => true,
        }
    }

    fn push(&mut self, (fh, ino): (FileHandle, InodeNo), key: String, view: View) {
        let inode = self.model.state(&key).inode;
        self.handles.push(Handle {
            fh,
            ino,
            inode,
            key,
            unlinked: false,
            opener_closed: false,
            view,
        });
    }

    async fn create(&mut self, path: FilePath) -> Checked {
        match self.model.kind_at(path) {
            Some(Kind::File) => return self.open(path, Mode::Truncate).await, // creat(2) of one
            Some(Kind::Dir) => return self.found(path, "create").await.map(drop), // EISDIR
            None => {}
        }
        let Some(parent) = self.dir_found(path.dir, "create").await? else {
            return Ok(());
        };
        // The kernel's lookup finds nothing, then it asks for the create.
        let name = OsStr::new(path.name);
        let absent = self.fs.lookup(parent, name).await;
        prop_assert_eq!(errno(&absent), libc::ENOENT, "create {:?}: lookup", path);
        let created = self.fs.create(parent, name, caller()).await;
        let (attr, opened) = created.map_err(|e| unexpected("create", &e))?;
        let (key, inode) = (path.key(), self.model.next());
        let state = FileState {
            inode,
            local: true,
            unstored: true,
            since: None,
            size: 0,
            attrs_pending: false,
        };
        // The name's inode now; an older one's open writers still upload to the key.
        self.model.files.insert(key.clone(), state);
        self.push(
            (opened.fh, attr.ino),
            key,
            View::writer(Vec::new(), true, None),
        );
        Ok(())
    }

    async fn open(&mut self, path: FilePath, mode: Mode) -> Checked {
        let Some((_, attr)) = self.found(path, "open").await? else {
            return Ok(());
        };
        let (write, truncate) = (mode != Mode::Read, mode == Mode::Truncate);
        let mode_of = OpenMode {
            write,
            truncate,
            caller: caller(),
        };
        let result = self.fs.open(attr.ino, mode_of).await;
        let key = path.key();
        let view = match mode {
            Mode::Read => self.reader_view(&key),
            Mode::Truncate => self.truncated_view(&key),
            Mode::Write => match self.writer_view(&key) {
                Some(view) => view,
                None => {
                    let what = format!("open {path:?} for writing, no version stored");
                    prop_assert_eq!(errno(&result), libc::ENOENT, "{}", what);
                    return Ok(());
                }
            },
        };
        let opened = result.map_err(|e| unexpected("open", &e))?;
        self.push((opened.fh, attr.ino), key, view);
        Ok(())
    }

    /// The contents of the open writers of `key`.
    fn writer_contents<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
        let writing = self.handles.iter().filter(move |h| h.key == key);
        writing.filter_map(|h| match &h.view {
            View::Writer { content, .. } => Some(content),
            _ => None,
        })
    }

    fn reader_view(&self, key: &str) -> View {
        let beside_writer = self.model.local(key).is_some();
        match self.model.bucket.get(key) {
            Some(object) if !beside_writer => {
                let pin = (key.to_owned(), object.version);
                View::Reader {
                    pin,
                    data: object.data.clone(),
                }
            }
            _ => View::Loose {
                key: key.to_owned(),
                seen: self.writer_contents(key).cloned().collect(),
            },
        }
    }

    fn truncated_view(&mut self, key: &str) -> View {
        let version = self.model.bucket.get(key).map(|o| o.version);
        let state = self.model.state(key);
        if !state.local {
            (state.local, state.since) = (true, version);
        }
        state.size = 0;
        View::writer(Vec::new(), true, None)
    }

    /// A writer without O_TRUNC; `None` when its open must fail.
    fn writer_view(&mut self, key: &str) -> Option<View> {
        let (content, pin) = self.model.stored_base(key)?;
        let version = self.model.bucket.get(key).map(|o| o.version);
        let state = self.model.state(key);
        if !state.local {
            (state.local, state.since, state.size) = (true, version, content.len() as u64);
        }
        Some(View::writer(content, false, pin))
    }

    async fn write(&mut self, which: usize, at: Option<u64>, data: &[u8]) -> Checked {
        let Some(i) = self.pick(which, true) else {
            return Ok(());
        };
        let offset = match (&self.handles[i].view, at) {
            (_, Some(offset)) => offset,
            (View::Writer { content, .. }, None) => content.len() as u64,
            _ => 0,
        };
        match self.fs.write(self.handles[i].fh, offset, data, false).await {
            Ok(n) => prop_assert_eq!(n as usize, data.len(), "write: bytes written"),
            Err(e) => {
                // Its first change copies the rest of the version it opened: gone, it fails.
                let allowed = !self.pin_holds(i) && GONE.contains(&e.errno());
                prop_assert!(allowed, "write at {offset}: {e} (errno {})", e.errno());
                return Ok(());
            }
        }
        self.change(i, |content| write_at(content, offset, data));
        Ok(())
    }

    /// Writer `i` changed: its content is whole and its own, and its inode's size shows.
    fn change(&mut self, i: usize, edit: impl FnOnce(&mut Vec<u8>)) {
        let handle = &mut self.handles[i];
        let View::Writer {
            content,
            dirty,
            pin,
        } = &mut handle.view
        else {
            return;
        };
        edit(content);
        (*dirty, *pin) = (true, None);
        let size = content.len() as u64;
        let state = self.model.files.get_mut(&handle.key);
        if let Some(state) = state.filter(|s| s.inode == handle.inode) {
            state.size = size;
        }
    }

    async fn read(&mut self, which: usize, offset: u64, len: u32) -> Checked {
        let Some(i) = self.pick(which, false) else {
            return Ok(());
        };
        let result = self.fs.read(self.handles[i].fh, offset, len).await;
        let handle = &self.handles[i];
        let what = format!("read of {} at {offset}+{len}", handle.key);
        let got = match result {
            Ok(got) => got,
            Err(e) => {
                let loose = matches!(handle.view, View::Loose { .. });
                let allowed = (loose || !self.pin_holds(i)) && GONE.contains(&e.errno());
                prop_assert!(allowed, "{what}: {e} (errno {})", e.errno());
                return Ok(());
            }
        };
        match &handle.view {
            View::Reader { data: want, .. } | View::Writer { content: want, .. } => {
                same_bytes(&got, slice(want, offset, len), &what)
            }
            View::Loose { key, seen } => {
                // What a writer held at the reader's open, or holds now, or the store.
                let mut written = seen.iter().chain(self.writer_contents(key));
                let by_writer = written.any(|c| slice(c, offset, len) == &got[..]);
                let shown = by_writer || self.model.held(key, offset, &got);
                let n = got.len();
                prop_assert!(
                    n <= len as usize && shown,
                    "{what}: {n} bytes {key} never had"
                );
                Ok(())
            }
        }
    }

    async fn ftruncate(&mut self, which: usize, len: u64) -> Checked {
        let Some(i) = self.pick(which, true) else {
            return Ok(());
        };
        let set = SetAttr {
            size: Some(len),
            ..SetAttr::default()
        };
        let (ino, fh) = (self.handles[i].ino, self.handles[i].fh);
        match &self.fs.setattr(ino, Some(fh), set).await {
            Ok(_) => {}
            Err(e) => {
                let allowed = !self.pin_holds(i) && GONE.contains(&e.errno());
                prop_assert!(allowed, "ftruncate to {len}: {e} (errno {})", e.errno());
                return Ok(());
            }
        }
        self.change(i, |content| content.resize(len as usize, 0));
        Ok(())
    }

    async fn truncate(&mut self, path: FilePath, len: u64) -> Checked {
        let Some((_, attr)) = self.found(path, "truncate").await? else {
            return Ok(());
        };
        let set = SetAttr {
            size: Some(len),
            ..SetAttr::default()
        };
        let result = self.fs.setattr(attr.ino, None, set).await;
        let key = path.key();
        // To 0 nothing is read; else from the store's version, not another handle's writes.
        let base = match len {
            0 => Some((Vec::new(), None)),
            _ => self.model.stored_base(&key),
        };
        let Some((mut content, _)) = base else {
            prop_assert_eq!(
                errno(&result),
                libc::ENOENT,
                "truncate {:?}: no version",
                path
            );
            return Ok(());
        };
        let attr = result.map_err(|e| unexpected("truncate", &e))?;
        prop_assert_eq!(attr.size, len, "truncate {:?}: size", path);
        content.resize(len as usize, 0);
        let inode = self.model.state(&key).inode;
        self.model.stored(&key, inode, content);
        Ok(())
    }

    async fn flush(&mut self, which: usize) -> Checked {
        let Some(i) = self.pick(which, false) else {
            return Ok(());
        };
        let result = self.fs.flush(self.handles[i].fh, Some(caller())).await;
        self.handles[i].opener_closed = true;
        self.flush_outcome(i, result, "flush")
    }

    /// A child's close leaves the upload to the opener until the opener has closed its
    /// own descriptor; after that it may be the last close, and uploads as one.
    async fn flush_by_child(&mut self, which: usize) -> Checked {
        let Some(i) = self.pick(which, false) else {
            return Ok(());
        };
        let result = self.fs.flush(self.handles[i].fh, Some(OTHER_PROCESS)).await;
        if self.handles[i].opener_closed {
            return self.flush_outcome(i, result, "flush by a child");
        }
        result.map_err(|e| unexpected("flush by a child, the opener's still open", &e))
    }

    /// fsync(2) in the default mode: the handle's content goes up at once, as at a close.
    async fn fsync(&mut self, which: usize) -> Checked {
        let Some(i) = self.pick(which, false) else {
            return Ok(());
        };
        let result = self.fs.fsync(self.handles[i].fh).await;
        self.flush_outcome(i, result, "fsync")
    }

    /// Checks what a flush or fsync of handle `i` answered: it fails only where its
    /// upload must copy a version that is gone (a mode set, the content unchanged).
    fn flush_outcome(&mut self, i: usize, result: Result<(), FsError>, what: &str) -> Checked {
        let what = format!("{what} of {}", self.handles[i].key);
        match result {
            Err(e) if self.cannot_upload(i) && GONE.contains(&e.errno()) => Ok(()),
            Err(e) => Err(unexpected(&what, &e)),
            Ok(()) => {
                prop_assert!(
                    !self.cannot_upload(i),
                    "{what}: succeeded, its version is gone"
                );
                self.flushed(i);
                Ok(())
            }
        }
    }

    /// Whether handle `i` has a mode or mtime to upload, no change of its own, and the
    /// version it would copy is gone.
    fn cannot_upload(&self, i: usize) -> bool {
        let handle = &self.handles[i];
        let View::Writer { dirty, .. } = &handle.view else {
            return false;
        };
        !*dirty && !handle.unlinked && self.attrs_pending(handle.inode) && !self.pin_holds(i)
    }

    fn drop_attrs(&mut self, inode: u64) {
        for state in self.model.files.values_mut().filter(|s| s.inode == inode) {
            state.attrs_pending = false;
        }
    }

    fn attrs_pending(&self, inode: u64) -> bool {
        (self.model.files.values()).any(|s| s.inode == inode && s.attrs_pending)
    }

    /// A flush or release of handle `i` uploaded its content if it changed, or if its
    /// file has a mode or mtime to take up, unless its file has no name left.
    fn flushed(&mut self, i: usize) {
        if self.cannot_upload(i) {
            return;
        }
        let pending = self.attrs_pending(self.handles[i].inode);
        let handle = &mut self.handles[i];
        let View::Writer { content, dirty, .. } = &mut handle.view else {
            return;
        };
        if (std::mem::take(dirty) || pending) && !handle.unlinked {
            self.model
                .stored(&handle.key, handle.inode, content.clone());
        }
    }

    async fn release(&mut self, which: usize) -> Checked {
        let Some(i) = self.pick(which, false) else {
            return Ok(());
        };
        // A release that cannot copy the version its mode or mtime was set on drops
        // them: the store's file stands without them, for every writer of the file.
        let unsendable = self.cannot_upload(i);
        self.fs.release(self.handles[i].fh).await;
        self.flushed(i);
        if unsendable {
            self.drop_attrs(self.handles[i].inode);
        }
        let handle = self.handles.remove(i);
        self.closed(&handle);
        Ok(())
    }

    /// Close-to-open: once the last writer of an inode has closed, what the mount shows
    /// of it is the store's again (the namespace's facts were the writers' while open).
    fn closed(&mut self, handle: &Handle) {
        let same = |h: &Handle| h.inode == handle.inode && h.view.is_writer();
        if !handle.view.is_writer() || self.handles.iter().any(same) {
            return;
        }
        let state = self.model.files.get_mut(&handle.key);
        if let Some(state) = state.filter(|s| s.inode == handle.inode && !s.unstored) {
            state.local = false;
        }
    }

    async fn close(&mut self, which: usize) -> Checked {
        self.flush(which).await?;
        self.release(which).await
    }

    /// `rgrid-mount sync`: nothing fails here, so nothing is left pending.
    async fn sync(&mut self) -> Checked {
        let outcome = self.fs.sync().await;
        prop_assert!(outcome.failed.is_empty(), "sync: {:?}", outcome.failed);
        Ok(())
    }

    /// The bucket holds exactly what the model says, key for key and byte for byte.
    pub(super) async fn check_bucket(&self) -> Checked {
        let stored = stored_objects(&self.client).await?;
        let model = self.model.bucket.iter();
        let want: BTreeMap<String, Vec<u8>> =
            model.map(|(k, o)| (k.clone(), o.data.clone())).collect();
        if stored != want {
            let (got, want) = (summary(&stored), summary(&want));
            return Err(TestCaseError::fail(format!(
                "bucket has {{{got}}}, model {{{want}}}"
            )));
        }
        Ok(())
    }

    /// What the bucket holds, for a failure's message.
    pub(super) async fn bucket_summary(&self) -> String {
        stored_objects(&self.client)
            .await
            .map_or_else(|e| e.to_string(), |b| summary(&b))
    }

    /// With closes written back, the bucket lags behind the model: each object it holds
    /// is one its key held, as the mount showed it (never bytes no close made).
    pub(super) async fn check_bucket_lags(&self) -> Checked {
        for (key, data) in stored_objects(&self.client).await? {
            let held = self.model.history.get(&key);
            prop_assert!(
                held.is_some_and(|all| all.contains(&data)),
                "bucket has {key}: {}, which no close made",
                summary(&BTreeMap::from([(key.clone(), data.clone())]))
            );
        }
        Ok(())
    }

    /// Closes what is still open (checking each close), waits for what closes queued,
    /// then checks the bucket.
    pub(super) async fn finish(&mut self) -> Checked {
        while !self.handles.is_empty() {
            self.close(0).await?;
        }
        self.sync().await?;
        self.fs.finish().await;
        self.check_bucket().await
    }
}
