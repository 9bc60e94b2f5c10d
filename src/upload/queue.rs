//! Write-back (`--write-back`): close returns once the file's spool and journal entry are
//! written, and the upload runs in the background, in the mount's upload slots, oldest
//! first (the slots are handed out in the order asked for).
//!
//! Nothing closed is lost by it: the journal entry is written before close returns, so a
//! crash or kill of the daemon leaves it for the next start (the kernel keeps the pages of
//! what was written; a power cut can lose what was never fsynced, as on a local disk).
//! Failures that pass (the store down, 5xx, throttling) are retried after a pause that
//! doubles up to 30 s, without limit (an upload that gets through ends the others' pauses); others (403, a key the store refuses) leave the
//! file `failed` on the board, in the log and in `sync`, and the retry loop tries it again
//! at its interval. The barriers wait, and cut the pauses short: [`Uploader::wait_for`] for one file (fsync),
//! [`Uploader::sync`] for all.
//!
//! Closes may leave at most `max_pending` bytes pending: one that would pass it waits in
//! close until uploads have made room, never refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{
    JournalEntry, KeptAttrs, PartStream, Sent, Spool, UploadError, UploadState, Uploaded, Uploader,
};

/// First pause after a failure that passes; it doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// Longest a barrier sleeps without looking again (a wake-up it could have missed).
const RECHECK: Duration = Duration::from_secs(1);

/// A write-back upload that reached the store, for the filesystem to take up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Its key.
    pub key: String,
    /// The spool it went up from.
    pub spool: PathBuf,
    /// The journal record it sent (a newer one of the spool still has to go).
    pub seq: u64,
    /// The object it made.
    pub uploaded: Uploaded,
    /// Whether a caller waited for it (a close or fsync in the default mode), and so
    /// took it up itself.
    pub waited: bool,
}

/// What write-back closes left pending, and what became of them.
#[derive(Debug)]
pub(super) struct QueueState {
    limit: u64,
    pending_bytes: Mutex<u64>,
    room: Notify,
    committed: Mutex<Vec<Committed>>,
    /// Cuts short the pauses between retries: a barrier wants them tried now.
    retry_now: Notify,
    /// Queued uploads sending at once. Taken before the key's lock, so that a queued
    /// file waits for its turn without holding its key: an unlink or rename of it goes
    /// ahead at once instead of behind the whole queue.
    turns: tokio::sync::Semaphore,
}

impl QueueState {
    pub(super) fn new(limit: u64, concurrency: usize) -> QueueState {
        QueueState {
            turns: tokio::sync::Semaphore::new(concurrency),
            limit,
            pending_bytes: Mutex::new(0),
            room: Notify::new(),
            committed: Mutex::default(),
            retry_now: Notify::new(),
        }
    }

    fn bytes(&self) -> std::sync::MutexGuard<'_, u64> {
        self.pending_bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `size` more bytes fit the limit (always, when nothing is pending: a
    /// file larger than the limit goes alone).
    async fn reserve(&self, size: u64) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut bytes = self.bytes();
                if *bytes == 0 || bytes.saturating_add(size) <= self.limit {
                    *bytes += size;
                    return;
                }
            }
            room.await;
        }
    }

    /// The upload of `entry` is in the store as `uploaded` (`waited`: its caller waited
    /// for it).
    pub(super) fn committed(&self, entry: &JournalEntry, uploaded: Uploaded, waited: bool) {
        lock(&self.committed).push(Committed {
            key: uploaded.key.clone(),
            spool: entry.spool.clone(),
            seq: entry.seq,
            uploaded,
            waited,
        });
    }

    /// Whether an upload of `key` reached the store that the filesystem has not taken
    /// up yet (so it may not know the object exists).
    pub(super) fn landed(&self, key: &str) -> bool {
        lock(&self.committed).iter().any(|c| c.key == key)
    }

    /// The newest version of `key` an upload made that the filesystem has not taken up
    /// yet: the store's current one, which the filesystem may still name by the version
    /// before it.
    pub(super) fn landed_version(&self, key: &str) -> Option<Option<String>> {
        let committed = lock(&self.committed);
        let newest = committed.iter().rev().find(|c| c.key == key);
        newest.map(|c| c.uploaded.etag.clone())
    }

    fn release(&self, size: u64) {
        let mut bytes = self.bytes();
        *bytes = bytes.saturating_sub(size);
        drop(bytes);
        self.room.notify_waiters();
    }
}

impl Uploader {
    /// A write-back close: journals `spool` as the next version of `key` and returns,
    /// leaving the upload to the background. Waits first while the pending bytes are at
    /// their limit. The spool then belongs to the queue as much as to its writer: a
    /// writer that writes again must do so in a new spool.
    pub async fn enqueue(
        self: &Arc<Self>,
        key: &str,
        spool: &Spool,
        stream: Option<PartStream>,
        kept: KeptAttrs,
    ) -> Result<PathBuf, UploadError> {
        let size = spool.size()?;
        self.queue.reserve(size).await;
        let entry = match self.record(key, spool, stream.as_ref(), kept).await {
            Ok(entry) => entry,
            Err(e) => {
                self.queue.release(size);
                if let Some(s) = stream {
                    self.abandon(s);
                }
                return Err(e);
            }
        };
        self.board.queued(&entry.key, &entry.spool, size);
        if !self.queued().insert(entry.spool.clone()) {
            // Queued already (closed again without a change in between): the task that
            // has it sends the newest record.
            self.queue.release(size);
            return Ok(entry.spool);
        }
        let (uploader, path) = (self.clone(), entry.spool.clone());
        tokio::spawn(async move { uploader.send_in_background(path, stream, size).await });
        Ok(entry.spool)
    }

    async fn send_in_background(&self, spool: PathBuf, mut stream: Option<PartStream>, size: u64) {
        let mut pause = FIRST_PAUSE;
        loop {
            let seen = self.journal.get(&spool).map(|e| e.seq);
            // Never closed; without a turn it would only send sooner.
            let turn = self.queue.turns.acquire().await;
            let pass = self.send(&spool, stream.take(), false).await;
            drop(turn);
            match pass {
                Ok(Sent::Stored(_)) if pause > FIRST_PAUSE => {
                    // The store answers again: the others need not sit out their pause.
                    self.retry_now();
                }
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(spool = %spool.display(), "upload failed, retrying in {pause:?}: {e}");
                    self.board.retrying(&spool, e.to_string());
                    let now = self.queue.retry_now.notified();
                    let _ = tokio::time::timeout(pause, now).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                    continue;
                }
                Err(e @ UploadError::Damaged { .. }) => {
                    tracing::error!(spool = %spool.display(), "{e}");
                    if let Some(entry) = self.journal.get(&spool) {
                        self.set_aside(&entry, &e);
                    }
                }
                Err(e) => {
                    tracing::error!(spool = %spool.display(), "upload failed; kept, and retried at the retry interval: {e}");
                }
            }
            // Recorded again meanwhile (closed again, renamed, new attributes): that
            // record goes too. The check and the release are one step, so a close that
            // finds the spool queued is sure to be sent.
            let mut queued = self.queued();
            if self.journal.get(&spool).map(|e| e.seq) <= seen {
                queued.remove(&spool);
                break;
            }
        }
        self.queue.release(size);
        self.remove_spool_if_unused(&spool);
    }

    /// Replaces the attributes kept with the queued upload of `spool`: recorded again,
    /// so that it goes up with them (again, if it was going up meanwhile). False when
    /// it is not pending any more.
    pub fn restate(&self, spool: &Path, kept: KeptAttrs) -> Result<bool, UploadError> {
        let Some(entry) = self.journal.get(spool) else {
            return Ok(false);
        };
        let mut metadata = entry.metadata.clone();
        kept.store(&mut metadata);
        if metadata == entry.metadata {
            return Ok(true);
        }
        Ok(self.journal.rewrite(JournalEntry { metadata, ..entry })?)
    }

    /// Whether the upload of `spool` may still reach the store, or has and is not taken
    /// up yet. (A landing is recorded before its journal entry goes, so no moment has
    /// neither.)
    pub fn may_land(&self, spool: &Path) -> bool {
        self.journal.contains(spool) || lock(&self.queue.committed).iter().any(|c| c.spool == spool)
    }

    /// Whether `landed`'s spool was recorded again since that upload (new attributes, or
    /// closed again into it): the newer record still goes up, and its landing is the one
    /// the file takes up.
    pub fn recorded_again(&self, landed: &Committed) -> bool {
        let entry = self.journal.get(&landed.spool);
        entry.is_some_and(|e| e.seq > landed.seq)
    }

    /// The uploads nobody waited for (write-back, retries) that reached the store since
    /// the last call.
    pub fn take_committed(&self) -> Vec<Committed> {
        std::mem::take(&mut *lock(&self.queue.committed))
    }

    /// Waits until the upload of `spool` is in the store (or will never be made: its file
    /// was removed or superseded); the reason when it failed and nothing is trying it now.
    pub async fn wait_for(&self, spool: &Path) -> Result<(), String> {
        loop {
            let change = self.board.change();
            // Whether anyone is at it, read before the journal: an upload that lands
            // leaves the journal before it stops working, so a spool seen idle and
            // then still journaled is truly left pending.
            let state = self.board.state_of(spool);
            let working = self.queued().contains(spool)
                || matches!(state, Some(UploadState::Uploading | UploadState::Queued));
            if !self.journal.contains(spool) {
                return match self.damaged().contains(spool) {
                    true => {
                        Err("spool damaged (lost in a power cut?); set aside, not uploaded".into())
                    }
                    false => Ok(()),
                };
            }
            if !working {
                return Err(match state {
                    Some(UploadState::Failed(why)) => why,
                    _ => "pending, not being uploaded".into(),
                });
            }
            change.wait(RECHECK).await;
        }
    }

    /// Ends the pauses of uploads waiting to be tried again: a barrier is waiting.
    pub(super) fn retry_now(&self) {
        self.queue.retry_now.notify_waiters();
    }

    /// Whether this mount closes files in write-back mode.
    pub fn writes_back(&self) -> bool {
        self.config.write_back
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
