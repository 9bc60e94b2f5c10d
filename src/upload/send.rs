//! Sending a journaled upload, one key at a time and newest content only.
//!
//! Every upload of a key (a close, a write-back in the background, a replay, a rename or
//! an unlink of it) runs under that key's [`KeyLocks`] lock. Under it, the journal entry
//! is read again: gone (the file was unlinked) or no longer the latest of its key (a
//! newer version closed meanwhile), it is dropped unsent; moved to another key (the file
//! was renamed), it is sent there. So an older version never lands after a newer one,
//! and a superseded version costs no request.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

use super::{JournalEntry, PartStream, UploadError, Uploaded, Uploader};

/// What became of a journaled upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// In the store.
    Stored(Box<Uploaded>),
    /// Dropped unsent: the file was unlinked, or a newer version of it closed.
    Superseded,
}

/// One async lock per key with uploads in flight or waiting.
#[derive(Debug, Default)]
pub(super) struct KeyLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

/// Keys remembered before the map drops the locks nobody holds.
const KEY_LOCKS_KEPT: usize = 4096;

impl KeyLocks {
    /// Waits for `key`'s lock.
    pub(super) async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    if map.len() >= KEY_LOCKS_KEPT {
                        map.retain(|_, lock| lock.strong_count() > 0);
                    }
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// Waits for the locks of `a` and `b`, always in the same order (no deadlock between
    /// two renames in opposite directions).
    pub(super) async fn lock_both(&self, a: &str, b: &str) -> Vec<OwnedMutexGuard<()>> {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let mut held = vec![self.lock(first).await];
        if second != first {
            held.push(self.lock(second).await);
        }
        held
    }
}

impl Uploader {
    /// Sends the journaled upload of `spool` under its key's lock, using the parts
    /// `stream` sent while the file was written if they are of this content and key;
    /// `waited`: the caller waits for it (and takes up what it made).
    pub(super) async fn send(
        &self,
        spool: &Path,
        mut stream: Option<PartStream>,
        waited: bool,
    ) -> Result<Sent, UploadError> {
        loop {
            let Some(entry) = self.journal.get(spool) else {
                return Ok(self.superseded(stream));
            };
            let locked = entry.key;
            let _held = self.key_locks.lock(&locked).await;
            let Some(entry) = self.journal.get(spool) else {
                return Ok(self.superseded(stream));
            };
            if entry.key != locked {
                continue; // renamed while we waited: its new key's lock is the one to hold
            }
            if !self.journal.holds_latest(&entry) {
                self.drop_entry(&entry);
                return Ok(self.superseded(stream));
            }
            return self
                .send_locked(&entry, stream.take(), waited)
                .await
                .map(|u| Sent::Stored(Box::new(u)));
        }
    }

    fn superseded(&self, stream: Option<PartStream>) -> Sent {
        if let Some(s) = stream {
            self.abandon(s);
        }
        Sent::Superseded
    }

    async fn send_locked(
        &self,
        entry: &JournalEntry,
        stream: Option<PartStream>,
        waited: bool,
    ) -> Result<Uploaded, UploadError> {
        self.board.begin(&entry.key, &entry.spool, entry.size);
        let result = self.put_entry(entry, stream).await;
        self.settle_entry(entry, &result, waited);
        // After the journal: whoever the board wakes (fsync, sync) sees it as it is.
        let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        self.board.finished(&entry.spool, outcome);
        result
    }

    /// The journal after an attempt: the entry goes once the store has its content, or
    /// is made durable while it waits for the next attempt.
    fn settle_entry(
        &self,
        entry: &JournalEntry,
        result: &Result<Uploaded, UploadError>,
        waited: bool,
    ) {
        match result {
            // Not if the entry was recorded again meanwhile (new attributes): that one
            // still has to go.
            Ok(uploaded) => {
                // Known as landed before the key's lock goes: an unlink or rename that
                // takes it next must treat the object as there.
                self.queue.committed(entry, uploaded.clone(), waited);
                // Not if the entry was recorded again meanwhile (new attributes): that
                // one still has to go. A stale entry costs one idempotent replay at most.
                if let Err(e) = self.journal.remove_if_seq(&entry.spool, entry.seq) {
                    let key = &entry.key;
                    tracing::warn!(key, "journal entry of a finished upload not removed: {e}");
                }
            }
            // Pending now: spool and entry must survive a power cut before anyone hears
            // of it. (On success the store has the bytes: the happy path pays no fsync.)
            Err(_) => self.make_durable(&entry.spool),
        }
    }

    async fn put_entry(
        &self,
        entry: &JournalEntry,
        stream: Option<PartStream>,
    ) -> Result<Uploaded, UploadError> {
        let file = Arc::new(File::open(&entry.spool)?);
        let compressed = self.compresses(&entry.key, entry.size);
        match stream {
            Some(s) if s.covers(entry) && !compressed => {
                match self.finish_stream(s, entry).await? {
                    Some(uploaded) => Ok(uploaded),
                    None => self.put_file(entry, file).await,
                }
            }
            other => {
                if let Some(s) = other {
                    self.abandon(s);
                }
                self.put_file(entry, file).await
            }
        }
    }

    /// Forgets `entry`, unsent, and its spool unless a writer or the queue still holds it.
    pub(super) fn drop_entry(&self, entry: &JournalEntry) {
        if let Err(e) = self.journal.remove(&entry.spool) {
            tracing::warn!(key = %entry.key, "journal entry of a dropped upload not removed: {e}");
            return;
        }
        self.board.dropped(&entry.spool);
        self.remove_spool_if_unused(&entry.spool);
        tracing::debug!(key = %entry.key, spool = %entry.spool.display(), "pending upload dropped: superseded or removed");
    }

    /// Deletes the spool file at `spool` unless an upload or a holder still needs it.
    pub(super) fn remove_spool_if_unused(&self, spool: &Path) {
        let used = self.journal.contains(spool) || self.is_held(spool);
        if !used {
            let _ = std::fs::remove_file(spool);
        }
    }
}
