//! The harness's operations on names: rename, unlink, mkdir, rmdir, readdir, stat, and
//! the attributes set on a path (chmod, touch).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::{errno, unexpected, Checked, FilePath, Harness, Kind, View};
use crate::fs::{Attr, DirLine, FsError, SetAttr, SetTime};
use crate::namespace::{InodeKind, InodeNo};
use crate::object::ObjectClient;

impl Harness {
    // Unlink, rename, mkdir and rmdir come after the kernel's lookups, as through FUSE:
    // those answer ENOENT (for mkdir, EEXIST) themselves, and they take up the uploads that
    // landed since the last operation (`Uploader::take_committed`), which an unlink or
    // rename of a file only ever written here would otherwise count as its own.

    pub(super) async fn rename(&mut self, from: FilePath, to: FilePath) -> Checked {
        let Some((parent, _)) = self.found(from, "rename").await? else {
            return Ok(());
        };
        let Some(new_parent) = self.dir_found(to.dir, "rename onto").await? else {
            return Ok(());
        };
        if self.found(to, "rename onto").await?.is_none() && self.model.kind(&to.key()).is_some() {
            return Ok(()); // a directory: EISDIR, from the kernel
        }
        let (name, new_name) = (OsStr::new(from.name), OsStr::new(to.name));
        let result = self.fs.rename(parent, name, new_parent, new_name).await;
        let want = self.rename_errno(from, to);
        prop_assert_eq!(errno(&result), want, "rename {:?} to {:?}", from, to);
        if want == 0 && from != to {
            self.renamed(&from.key(), &to.key());
        }
        Ok(())
    }

    /// What a rename of an existing file answers: one being written here is renamed as
    /// the namespace shows it, so its copy is pinned to the version it opened at.
    fn rename_errno(&self, from: FilePath, to: FilePath) -> i32 {
        let key = from.key();
        let Some(state) = self.model.local(&key) else {
            return 0;
        };
        if from == to || state.unstored {
            return 0; // the same file; or content not in the store, which goes up as `to`
        }
        match (self.model.bucket.get(&key), state.since) {
            (None, _) => libc::ENOENT,
            (Some(object), Some(since)) if object.version == since => 0,
            _ => libc::EIO,
        }
    }

    fn renamed(&mut self, from: &str, to: &str) {
        // The rename first copies in what writers of the file had not: all of it where
        // their version is still the store's; the others stay pinned to a version gone.
        let inode = self.model.files.get(from).map(|s| s.inode);
        for i in 0..self.handles.len() {
            if Some(self.handles[i].inode) == inode && self.pin_holds(i) {
                if let View::Writer { pin, .. } = &mut self.handles[i].view {
                    *pin = None;
                }
            }
        }
        // What had the new name is unlinked: its writers' closes upload nothing.
        if let Some(replaced) = self.model.files.remove(to) {
            self.unlink_handles(replaced.inode);
        }
        let state = self.model.files.remove(from);
        if !state.as_ref().is_some_and(|s| s.unstored) {
            if let Some(object) = self.model.bucket.remove(from) {
                self.model.put(to, object.data);
            }
        }
        let Some(mut state) = state else { return };
        if !state.unstored {
            (state.local, state.since) = (false, None);
        }
        for handle in self.handles.iter_mut().filter(|h| h.inode == state.inode) {
            handle.key = to.to_owned();
        }
        self.model.files.insert(to.to_owned(), state);
    }

    /// A directory rename moves every key under it, and its files being written with
    /// their handles; it replaces an empty target and refuses one with names in it.
    pub(super) async fn rename_dir(&mut self, from: &'static str, to: &'static str) -> Checked {
        if self.dir_found(from, "rename").await?.is_none() {
            return Ok(());
        }
        let target = self.dir_found(to, "rename onto").await?;
        if target.is_none() && self.model.kind(to).is_some() {
            return Ok(()); // a file: ENOTDIR, from the kernel
        }
        let (name, new_name) = (OsStr::new(from), OsStr::new(to));
        let root = InodeNo::ROOT;
        let result = self.fs.rename(root, name, root, new_name).await;
        let full = from != to && target.is_some() && !self.model.listing(to).is_empty();
        let want = if full { libc::ENOTEMPTY } else { 0 };
        prop_assert_eq!(errno(&result), want, "rename {:?} to {:?}", from, to);
        if want == 0 && from != to {
            self.dir_renamed(from, to);
        }
        Ok(())
    }

    fn dir_renamed(&mut self, from: &str, to: &str) {
        let (old, new) = (format!("{from}/"), format!("{to}/"));
        let moved = |key: &str| key.strip_prefix(&old).map(|rest| format!("{new}{rest}"));
        // Writers' fills are completed first, where their version is still the store's.
        for i in 0..self.handles.len() {
            if self.handles[i].key.starts_with(&old) && self.pin_holds(i) {
                if let View::Writer { pin, .. } = &mut self.handles[i].view {
                    *pin = None;
                }
            }
        }
        self.model.forget_below(to);
        let keys: Vec<String> = self.model.bucket.keys().cloned().collect();
        for key in keys.iter().filter(|k| k.starts_with(&old)) {
            let object = self.model.bucket.remove(key).expect("listed");
            self.model.put(&moved(key).expect("under"), object.data);
            // A file being written that was the version copied is the copy now.
            let copy = self.model.counter;
            let state = self.model.files.get_mut(key).filter(|s| s.local);
            if let Some(state) = state.filter(|s| s.since == Some(object.version)) {
                state.since = Some(copy);
            }
        }
        let files: Vec<String> = self.model.files.keys().cloned().collect();
        for key in files.iter().filter(|k| k.starts_with(&old)) {
            let state = self.model.files.remove(key).expect("listed");
            self.model.files.insert(moved(key).expect("under"), state);
        }
        for handle in self.handles.iter_mut() {
            if let Some(key) = moved(&handle.key) {
                handle.key = key;
            }
        }
        // The target, if any, is replaced: made here or not as the directory moved was.
        self.model.dirs.remove(to);
        if self.model.dirs.remove(from) {
            self.model.dirs.insert(to.to_owned());
        }
    }

    fn unlink_handles(&mut self, inode: u64) {
        for handle in self.handles.iter_mut().filter(|h| h.inode == inode) {
            handle.unlinked = true;
        }
    }

    pub(super) async fn unlink(&mut self, path: FilePath) -> Checked {
        let Some((parent, _)) = self.found(path, "unlink").await? else {
            return Ok(());
        };
        let result = self.fs.unlink(parent, OsStr::new(path.name)).await;
        result.map_err(|e| unexpected("unlink", &e))?;
        let key = path.key();
        let state = self.model.files.remove(&key);
        // A file only ever written here has no object to delete (another client's stays).
        if !state.as_ref().is_some_and(|s| s.unstored) {
            self.model.bucket.remove(&key);
        }
        if let Some(state) = state {
            self.unlink_handles(state.inode);
        }
        Ok(())
    }

    pub(super) async fn mkdir(&mut self, dir: &str) -> Checked {
        self.dir_found(dir, "mkdir").await?;
        let exists = self.model.kind(dir).is_some();
        // Where the kernel's lookup found it, mkdir itself must refuse too (a race).
        let result = self.fs.mkdir(InodeNo::ROOT, OsStr::new(dir)).await;
        let want = if exists { libc::EEXIST } else { 0 };
        prop_assert_eq!(errno(&result), want, "mkdir {:?}", dir);
        if !exists {
            self.model.dirs.insert(dir.to_owned());
            self.model.forget_below(dir);
        }
        Ok(())
    }

    pub(super) async fn rmdir(&mut self, dir: &str) -> Checked {
        if self.dir_found(dir, "rmdir").await?.is_none() {
            return Ok(());
        }
        let result = self.fs.rmdir(InodeNo::ROOT, OsStr::new(dir)).await;
        let empty = self.model.listing(dir).is_empty();
        let want = if empty { 0 } else { libc::ENOTEMPTY };
        prop_assert_eq!(errno(&result), want, "rmdir {:?}", dir);
        if empty {
            self.model.dirs.remove(dir);
            self.model.forget_below(dir);
        }
        Ok(())
    }

    pub(super) async fn readdir(&mut self, dir: &str) -> Checked {
        let Some(ino) = self.dir_found(dir, "readdir").await? else {
            return Ok(());
        };
        let entries = self
            .list(ino)
            .await
            .map_err(|e| unexpected("readdir", &e))?;
        let names: BTreeSet<String> = entries.keys().cloned().collect();
        prop_assert_eq!(names, self.model.listing(dir), "readdir {:?}", dir);
        // Each entry is of the kind its lookup finds.
        for (name, kind) in entries {
            let key = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let want = match self.model.kind(&key) {
                Some(Kind::Dir) => InodeKind::Directory,
                _ => InodeKind::File,
            };
            prop_assert_eq!(kind, want, "readdir {:?}: kind of {}", dir, key);
        }
        Ok(())
    }

    /// The entries opendir and readdir give for directory `ino`, without `.` and `..`.
    async fn list(&self, ino: InodeNo) -> Result<BTreeMap<String, InodeKind>, FsError> {
        let fh = self.fs.opendir(ino).await?;
        let mut names = BTreeMap::new();
        let listed = self.fs.readdir(fh, 0, false, |line: &DirLine<'_>| {
            if line.name != "." && line.name != ".." {
                names.insert(line.name.to_owned(), line.attr.kind);
            }
            true
        });
        self.fs.releasedir(fh);
        listed.map(|()| names)
    }

    pub(super) async fn stat(&mut self, path: FilePath) -> Checked {
        let Some((_, attr)) = self.found(path, "stat").await? else {
            return Ok(());
        };
        let key = path.key();
        let size = self.model.size(&key);
        // A flush makes the store's facts the file's again while writers may still have it
        // open: its size may be theirs as well as the store's (see the module doc).
        let inode = self.model.files.get(&key).map(|s| s.inode);
        let writing = self
            .handles
            .iter()
            .filter(|h| Some(h.inode) == inode && !h.unlinked);
        let mut sizes = writing.filter_map(|h| match &h.view {
            View::Writer { content, .. } => Some(content.len() as u64),
            _ => None,
        });
        let shown = attr.size == size || sizes.any(|s| s == attr.size);
        prop_assert!(
            shown,
            "stat {path:?}: size {}, the model has {size}",
            attr.size
        );
        Ok(())
    }

    pub(super) async fn chmod(&mut self, path: FilePath, mode: u32) -> Checked {
        let set = SetAttr {
            mode: Some(libc::S_IFREG | mode),
            ..SetAttr::default()
        };
        let checked = move |attr: &Attr| u32::from(attr.perm) == mode;
        self.set_attrs(path, set, "chmod", checked).await
    }

    pub(super) async fn touch(&mut self, path: FilePath, secs: u32) -> Checked {
        let at = UNIX_EPOCH + Duration::from_secs(secs.into());
        let set = SetAttr {
            mtime: Some(SetTime::At(at)),
            ..SetAttr::default()
        };
        self.set_attrs(path, set, "touch", move |attr| attr.mtime == at)
            .await
    }

    /// A mode or mtime set on a path never changes its bytes. A file stored and not being
    /// written gets a new version of the same bytes (a copy onto itself); one being
    /// written keeps them for its next upload, which then goes up changed or not.
    async fn set_attrs(
        &mut self,
        path: FilePath,
        set: SetAttr,
        what: &str,
        shows: impl Fn(&Attr) -> bool,
    ) -> Checked {
        let Some((_, attr)) = self.found(path, what).await? else {
            return Ok(());
        };
        let key = path.key();
        let before = self.client.head(&key).await.ok().map(|i| i.meta.etag);
        let result = self.fs.setattr(attr.ino, None, set).await;
        let attr = result.map_err(|e| unexpected(what, &e))?;
        prop_assert!(shows(&attr), "{what} {path:?}: shows {attr:?}");
        let after = self.client.head(&key).await.ok().map(|i| i.meta.etag);
        let local = self.model.local(&key).is_some();
        if before != after {
            // Rewritten in the store: allowed for a file the model has as stored, or one
            // whose writers flushed (the namespace shows the store's facts then).
            let data = self.model.bucket.get(&key).map(|o| o.data.clone());
            let data = data.ok_or_else(|| {
                TestCaseError::fail(format!(
                    "{what}: {key} rewritten, not in the model's bucket"
                ))
            })?;
            self.model.put(&key, data);
        } else {
            // Or kept with a write-back upload still queued, to go up with it.
            let writing = self
                .handles
                .iter()
                .any(|h| h.key == key && h.view.is_writer());
            let queued = self.write_back && !local && !writing;
            prop_assert!(
                local || writing || queued,
                "{what} {path:?}: stored, not rewritten"
            );
            if !queued {
                self.model.state(&key).attrs_pending = true;
            }
        }
        Ok(())
    }
}
