//! `UploadBoard`: where each upload of this mount stands, by spool: in flight
//! with the bytes sent so far, in the store, or failed and why. `rgrid-mount status`
//! draws it, `rgrid-mount sync` waits on it, and `user.rgrid.upload_state` shows it per
//! file. It is this daemon's memory only: the journal stays the durable record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Where one upload stands. A file written here and not yet closed has no upload yet:
/// `user.rgrid.upload_state` calls it `pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// Closed in write-back mode, waiting for its turn.
    Queued,
    /// Bodies going up.
    Uploading,
    /// The last attempt failed for a reason that passes (the store down, throttling):
    /// tried again after a pause, without limit.
    Retrying(String),
    /// In the store.
    Committed,
    /// The last attempt failed, with this reason; the journal keeps it for a retry.
    Failed(String),
}

impl std::fmt::Display for UploadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadState::Queued => f.write_str("queued"),
            UploadState::Uploading => f.write_str("uploading"),
            UploadState::Retrying(why) => write!(f, "retrying: {why}"),
            UploadState::Committed => f.write_str("committed"),
            UploadState::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// One upload as the board knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// Destination key.
    pub key: String,
    /// The spool it goes up from.
    pub spool: PathBuf,
    /// Bytes of content.
    pub size: u64,
    /// Bytes of bodies the store has acknowledged in this attempt (compressed bytes for
    /// a compressed upload).
    pub sent: u64,
    /// Where it stands.
    pub state: UploadState,
    /// When this attempt started.
    pub started: SystemTime,
    /// Attempts so far.
    pub attempts: u32,
    /// When the record last changed, for the oldest-first trim of finished ones.
    changed: Instant,
}

impl UploadRecord {
    /// A record of `key` from `spool`, starting now.
    fn new(key: &str, spool: PathBuf, size: u64, state: UploadState) -> UploadRecord {
        UploadRecord {
            key: key.to_owned(),
            spool,
            size,
            sent: 0,
            state,
            started: SystemTime::now(),
            attempts: 0,
            changed: Instant::now(),
        }
    }

    /// Bytes per second sent in this attempt so far.
    pub fn rate(&self) -> f64 {
        let elapsed = self.started.elapsed().unwrap_or_default();
        self.sent as f64 / elapsed.max(Duration::from_millis(1)).as_secs_f64()
    }
}

/// Committed records kept for `upload_state` and status after their upload is done;
/// past it the oldest go.
const KEEP_COMMITTED: usize = 1024;
/// Committed records past [`KEEP_COMMITTED`] before the oldest are trimmed.
const TRIM_BATCH: usize = 256;

/// Every upload of the mount, by spool: two uploads of one key (a failed one being
/// retried, a newer version closing) are two records.
#[derive(Debug, Default)]
pub struct UploadBoard {
    records: Mutex<HashMap<PathBuf, UploadRecord>>,
    /// Woken at every end of an attempt, for those waiting on one (fsync, sync).
    changes: tokio::sync::Notify,
}

/// A wait for the board's next change, registered when made: a change between taking it
/// and awaiting it is not missed.
pub struct BoardChange<'a>(std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>);

impl BoardChange<'_> {
    /// Waits for the change, or `at_most`.
    pub async fn wait(self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.0).await;
    }
}

impl UploadBoard {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, UploadRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An attempt of `key` from `spool` (`size` bytes) starts. Parts a writer streamed
    /// from the same spool before its close count as sent; attempts count up across the
    /// failures of one spool.
    pub fn begin(&self, key: &str, spool: &Path, size: u64) {
        let mut records = self.records();
        let before = records.get(spool);
        let streamed = before
            .filter(|r| r.state == UploadState::Uploading)
            .map_or(0, |r| r.sent);
        let attempts = before
            .filter(|r| matches!(r.state, UploadState::Failed(_) | UploadState::Retrying(_)))
            .map_or(0, |r| r.attempts);
        let record = UploadRecord {
            sent: streamed,
            attempts: attempts + 1,
            ..UploadRecord::new(key, spool.to_owned(), size, UploadState::Uploading)
        };
        records.insert(spool.to_owned(), record);
        if attempts > 0 {
            crate::metrics::retry("upload");
        }
        report_pending(&records);
    }

    /// The store acknowledged `bytes` more of the bodies of `key` from `spool` (a part,
    /// or a whole PUT). A part streamed while the file is still being written starts its
    /// record.
    pub fn sent(&self, key: &str, spool: &Path, bytes: u64) {
        let mut records = self.records();
        let record = records
            .entry(spool.to_owned())
            .or_insert_with(|| UploadRecord::new(key, spool.to_owned(), 0, UploadState::Uploading));
        record.sent += bytes;
        record.size = record.size.max(record.sent);
        record.changed = Instant::now();
    }

    /// The upload from `spool` ended: in the store, or failed with `why`.
    pub fn finished(&self, spool: &Path, outcome: Result<(), String>) {
        crate::metrics::upload_finished(outcome.is_ok());
        let mut records = self.records();
        if let Some(record) = records.get_mut(spool) {
            record.state = match outcome {
                Ok(()) => UploadState::Committed,
                Err(why) => UploadState::Failed(why),
            };
            record.changed = Instant::now();
        }
        trim_committed(&mut records);
        report_pending(&records);
        drop(records);
        self.changes.notify_waiters();
    }

    /// `key`, `size` bytes from `spool`, is queued for a write-back upload.
    pub fn queued(&self, key: &str, spool: &Path, size: u64) {
        let mut records = self.records();
        let streamed = records.get(spool).map_or(0, |r| r.sent);
        let record = UploadRecord {
            sent: streamed,
            ..UploadRecord::new(key, spool.to_owned(), size, UploadState::Queued)
        };
        records.insert(spool.to_owned(), record);
        report_pending(&records);
    }

    /// The attempt from `spool` failed for a passing reason, `why`; it is tried again.
    pub fn retrying(&self, spool: &Path, why: String) {
        if let Some(record) = self.records().get_mut(spool) {
            record.state = UploadState::Retrying(why);
            record.changed = Instant::now();
        }
    }

    /// The upload from `spool` will not be made (superseded by a newer version, or its
    /// file removed): its record goes.
    pub fn dropped(&self, spool: &Path) {
        let mut records = self.records();
        records.remove(spool);
        report_pending(&records);
        drop(records);
        self.changes.notify_waiters();
    }

    /// A wait for the next end of an attempt or drop.
    pub fn change(&self) -> BoardChange<'_> {
        let mut notified = Box::pin(self.changes.notified());
        notified.as_mut().enable();
        BoardChange(notified)
    }

    /// Parts streamed from `spool` were given up (the file goes up whole at close, or
    /// not at all): a record that only they started goes.
    pub fn abandoned(&self, spool: &Path) {
        let mut records = self.records();
        if records.get(spool).is_some_and(|r| r.attempts == 0) {
            records.remove(spool);
        }
        report_pending(&records);
    }

    /// `key` will not be uploaded after all (its file was unlinked): its records go.
    pub fn forget(&self, key: &str) {
        let mut records = self.records();
        records.retain(|_, r| r.key != key);
        report_pending(&records);
        drop(records);
        self.changes.notify_waiters();
    }

    /// Where the latest upload of `key` stands, if this daemon made one.
    pub fn state(&self, key: &str) -> Option<UploadState> {
        self.latest(key).map(|r| r.state)
    }

    /// The latest upload of `key`, if this daemon made one.
    pub fn latest(&self, key: &str) -> Option<UploadRecord> {
        let records = self.records();
        let latest = records
            .values()
            .filter(|r| r.key == key)
            .max_by_key(|r| r.changed);
        latest.cloned()
    }

    /// Where the upload from `spool` stands, if this daemon made one.
    pub fn state_of(&self, spool: &Path) -> Option<UploadState> {
        self.records().get(spool).map(|r| r.state.clone())
    }

    /// Every record, oldest first.
    pub fn snapshot(&self) -> Vec<UploadRecord> {
        let mut all: Vec<UploadRecord> = self.records().values().cloned().collect();
        all.sort_by_key(|r| r.changed);
        all
    }
}

/// The pending-uploads gauge, from `records`.
fn report_pending(records: &HashMap<PathBuf, UploadRecord>) {
    let unfinished = records
        .values()
        .filter(|r| r.state != UploadState::Committed);
    crate::metrics::uploads_pending(unfinished.count());
}

fn trim_committed(records: &mut HashMap<PathBuf, UploadRecord>) {
    let committed = records
        .values()
        .filter(|r| r.state == UploadState::Committed)
        .count();
    // Trimmed in batches: a sort per finished upload made 10,000 small closes slow.
    if committed <= KEEP_COMMITTED + TRIM_BATCH {
        return;
    }
    let mut done: Vec<(Instant, PathBuf)> = records
        .values()
        .filter(|r| r.state == UploadState::Committed)
        .map(|r| (r.changed, r.spool.clone()))
        .collect();
    done.sort();
    for (_, spool) in done.into_iter().take(committed - KEEP_COMMITTED) {
        records.remove(&spool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_goes_from_uploading_to_committed_or_failed() {
        let board = UploadBoard::default();
        let spool = PathBuf::from("/spool/1");
        // Parts streamed while writing count once the close's attempt begins.
        board.sent("k", &spool, 4);
        board.begin("k", &spool, 10);
        board.sent("k", &spool, 6);
        let record = |board: &UploadBoard| board.snapshot().into_iter().find(|r| r.spool == spool);
        let first = record(&board).unwrap();
        assert_eq!((first.sent, first.size, first.attempts), (10, 10, 1));
        board.finished(&spool, Err("HTTP 503 SlowDown".into()));
        assert_eq!(
            board.state("k").unwrap().to_string(),
            "failed: HTTP 503 SlowDown"
        );
        board.begin("k", &spool, 10);
        assert_eq!(
            record(&board).unwrap().sent,
            0,
            "a new attempt starts from nothing"
        );
        board.finished(&spool, Ok(()));
        assert_eq!(board.state_of(&spool), Some(UploadState::Committed));
        assert_eq!(record(&board).unwrap().attempts, 2);
    }

    #[test]
    fn two_uploads_of_one_key_keep_their_own_state() {
        let board = UploadBoard::default();
        let (old, new) = (PathBuf::from("/spool/old"), PathBuf::from("/spool/new"));
        board.begin("k", &old, 1);
        board.finished(&old, Err("refused".into()));
        board.begin("k", &new, 2);
        board.begin("k", &old, 1);
        board.finished(&old, Ok(()));
        assert_eq!(board.state_of(&new), Some(UploadState::Uploading));
        board.abandoned(&new);
        assert!(
            board.state_of(&new).is_some(),
            "a begun upload is not a stream's"
        );
        board.forget("k");
        assert_eq!(board.state("k"), None);
    }

    #[test]
    fn finished_records_are_bounded() {
        let board = UploadBoard::default();
        for i in 0..KEEP_COMMITTED + TRIM_BATCH + 1 {
            let spool = PathBuf::from(format!("/s/{i}"));
            board.begin(&format!("k{i}"), &spool, 1);
            board.finished(&spool, Ok(()));
        }
        assert_eq!(board.snapshot().len(), KEEP_COMMITTED);
        assert_eq!(board.state("k0"), None, "the oldest went first");
    }
}
