//! Files of [`RgridFs`] closed in write-back mode and not yet in the store: which spool
//! holds each one's content, so that a new open reads (or starts writing from) it, and
//! the barriers: fsync of a file waits for its upload, fsync of a directory for those of
//! its files.
//!
//! The write engine reports each upload that reached the store; the filesystem takes
//! them up at its next operation (the engine never calls up into this layer), and a
//! file whose content is in the store is read from there again, or from the object
//! cache entry its spool became.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{lock, FileHandle, FsError, OpenFile, RgridFs};
use crate::cache::{Form, LinkedSpool};
use crate::namespace::InodeNo;
use crate::object::ObjectId;
use crate::upload::Committed;
use crate::view::FileReader;

/// The spool of each file's newest content closed in write-back mode, and the file of
/// every spool queued (older contents too: one that lands still puts an object at the
/// file's key, which an unlink or rename must know of).
#[derive(Debug, Default)]
pub(super) struct WriteBacks(Mutex<Spooled>);

#[derive(Debug, Default)]
struct Spooled {
    by_ino: HashMap<InodeNo, PathBuf>,
    by_spool: HashMap<PathBuf, InodeNo>,
    /// Queued spools linked into the object cache, to become entries once uploaded.
    linked: HashMap<PathBuf, LinkedSpool>,
}

/// A queued spool that reached the store: its file, whether it still holds the file's
/// newest content, and its link into the object cache.
struct Landed {
    ino: InodeNo,
    newest: bool,
    linked: Option<LinkedSpool>,
}

impl WriteBacks {
    /// `ino`'s newest content is in `spool`, closed and queued (and `linked` into the
    /// object cache, if it is on).
    pub(super) fn closed(&self, ino: InodeNo, spool: PathBuf, linked: Option<LinkedSpool>) {
        let mut map = lock(&self.0);
        if let Some(old) = map.by_ino.insert(ino, spool.clone()) {
            map.linked.remove(&old);
        }
        if let Some(linked) = linked {
            map.linked.insert(spool.clone(), linked);
        }
        map.by_spool.insert(spool, ino);
    }

    /// `ino`'s content is elsewhere now (written again, or the file removed).
    pub(super) fn forget(&self, ino: InodeNo) {
        let mut map = lock(&self.0);
        if let Some(old) = map.by_ino.remove(&ino) {
            map.linked.remove(&old);
        }
    }

    /// The spool holding `ino`'s newest content, if its upload may still be pending.
    pub(super) fn spool_of(&self, ino: InodeNo) -> Option<PathBuf> {
        lock(&self.0).by_ino.get(&ino).cloned()
    }

    /// The file whose content `spool` holds or held, if it was queued here.
    fn file_of(&self, spool: &Path) -> Option<InodeNo> {
        lock(&self.0).by_spool.get(spool).copied()
    }

    /// What became of `spool`, which is no longer pending, if it was queued here.
    fn committed(&self, spool: &Path) -> Option<Landed> {
        let mut map = lock(&self.0);
        let linked = map.linked.remove(spool);
        let ino = map.by_spool.remove(spool)?;
        let newest = map.by_ino.get(&ino).is_some_and(|s| s == spool);
        if newest {
            map.by_ino.remove(&ino);
        }
        Some(Landed {
            ino,
            newest,
            linked,
        })
    }

    /// Forgets the older spools that will never land (dropped unsent), once they are as
    /// many as the newest ones: a pass over all of them costs as much as they took.
    fn prune(&self, may_land: impl Fn(&Path) -> bool) {
        let mut map = lock(&self.0);
        let Spooled {
            by_ino, by_spool, ..
        } = &mut *map;
        if by_spool.len() <= 2 * by_ino.len() + 64 {
            return;
        }
        by_spool.retain(|spool, ino| by_ino.get(ino) == Some(spool) || may_land(spool));
    }
}

impl RgridFs {
    /// Takes up the write-back uploads that reached the store: their files are the
    /// stored versions now (an older version, superseded here, is not).
    pub(super) async fn settle_write_backs(&self) {
        let Some(uploader) = &self.uploader else {
            return;
        };
        let landed = uploader.take_committed();
        for (i, done) in landed.iter().enumerate() {
            // Unless a later upload of the key, landed since, is the store's version.
            let last_of_key = !landed[i + 1..].iter().any(|later| later.key == done.key);
            if done.waited {
                // Taken up by the close or fsync that waited for it. (Its spool may be
                // queued since, with newer content: that one's landing is what counts.)
                continue;
            }
            if uploader.recorded_again(done) {
                // Its record goes up again (new attributes): the file stays as it is
                // until that landing, but the store has an object at its key now.
                if let Some(ino) = self.write_backs.file_of(&done.spool) {
                    if last_of_key {
                        self.landed_beneath(ino, done);
                    }
                }
                continue;
            }
            let Some(landing) = self.write_backs.committed(&done.spool) else {
                continue;
            };
            if self.namespace.is_unlinked(landing.ino) {
                continue;
            }
            if !landing.newest || lock(&self.writers).contains_key(&landing.ino) {
                // Written again since, or open for writing now: the file's facts stay its
                // newer content's, or its writer's.
                if last_of_key {
                    self.landed_beneath(landing.ino, done);
                }
                continue;
            }
            self.take_up(landing, done).await;
        }
        self.write_backs.prune(|spool| uploader.may_land(spool));
    }

    /// An upload of `ino` that is not its newest content reached the store: an unlink or
    /// rename must know the object is there.
    fn landed_beneath(&self, ino: InodeNo, done: &Committed) {
        self.namespace
            .landed_beneath(ino, done.uploaded.etag.clone());
    }

    /// The file's newest content is in the store as `done`: the file shows that version.
    async fn take_up(&self, landing: Landed, done: &Committed) {
        let up = &done.uploaded;
        let id = ObjectId::new(up.key.clone(), up.etag.clone());
        let (form, size, sha256) = (Form::of(&up.headers), up.size, up.sha256.clone());
        self.after_upload(landing.ino, up.clone()).await;
        // The spool's content is the version the file shows: a script that wrote it
        // and reads it back reads locally.
        if let Some(linked) = landing.linked {
            if self.namespace.current_etag(landing.ino).as_ref() == Some(&id.etag) {
                linked.publish(&id, form, size, &sha256);
            }
        }
    }

    /// At exit, once uploads are drained: what reached the store is taken up, and the
    /// cache entries being published are waited for.
    pub async fn finish(&self) {
        self.settle_write_backs().await;
        if let Some(cache) = self.cache.clone() {
            let _ = tokio::task::spawn_blocking(move || cache.wait_for_workers()).await;
        }
    }

    /// Attributes set on a file closed in write-back mode (`tar -x` sets mtime and mode
    /// after close) go with its queued upload: its journal entry is recorded again, so no
    /// metadata rewrite (a copy in the store) follows the upload.
    pub(super) fn restate_pending(&self, ino: InodeNo) {
        let (Some(uploader), Some(spool)) = (&self.uploader, self.write_backs.spool_of(ino)) else {
            return;
        };
        let kept = self.namespace.upload_attrs(ino).kept;
        match uploader.restate(&spool, kept) {
            Ok(true) => self.namespace.kept_sent(ino, kept),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(spool = %spool.display(), "attributes not journaled; stored after the upload: {e}")
            }
        }
    }

    /// A reader of `ino`'s content closed here and not yet uploaded, if there is one.
    pub(super) fn pending_reader(&self, ino: InodeNo, key: &str) -> Option<FileReader> {
        let spool = self.write_backs.spool_of(ino)?;
        // Gone: the upload finished and removed it; the store has the content.
        FileReader::spooled(key, &spool).ok()
    }

    /// fsync(): uploads open file `fh` if it changed, at once (its caller waits for the
    /// store in either mode), then waits for what an earlier write-back close queued;
    /// EIO when it cannot get there.
    pub async fn fsync(&self, fh: FileHandle) -> Result<(), FsError> {
        self.flush_file(fh, None, false).await?;
        let (Some(uploader), Some(file)) = (&self.uploader, lock(&self.files).get(&fh).cloned())
        else {
            return Ok(());
        };
        // What this handle queued, else what any close of the file queued (fsync of a
        // descriptor opened after it, or read-only, covers the file too).
        let spool = match &*file.lock().await {
            OpenFile::Write(writer) => {
                (writer.queued.clone()).or_else(|| self.write_backs.spool_of(writer.ino))
            }
            OpenFile::Read(reader) => self.write_backs.spool_of(reader.ino),
        };
        let Some(spool) = spool else {
            return Ok(());
        };
        uploader
            .wait_for(&spool)
            .await
            .map_err(FsError::UploadFailed)
    }

    /// fsync() of directory `ino`: waits until every file closed in it is in the store.
    pub async fn fsyncdir(&self, ino: InodeNo) -> Result<(), FsError> {
        let Some(uploader) = &self.uploader else {
            return Ok(());
        };
        let dir = self.namespace.getattr(ino).await?;
        let failed = uploader.sync_children(&dir.key).await;
        match failed.into_iter().next() {
            None => Ok(()),
            Some(failure) => Err(FsError::UploadFailed(format!(
                "{}: {}",
                failure.key, failure.error
            ))),
        }
    }
}
