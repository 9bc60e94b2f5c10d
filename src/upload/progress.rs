//! `UploadBoard`: where each upload of this mount stands, by key: waiting, in flight
//! with the bytes sent so far, in the store, or failed and why. `rgrid-mount status`
//! draws it, `rgrid-mount sync` waits on it, and `user.rgrid.upload_state` shows it per
//! file. It is this daemon's memory only: the journal stays the durable record.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Where one upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// Journaled, waiting for an attempt (a retry, or a slot).
    Pending,
    /// Bodies going up.
    Uploading,
    /// In the store.
    Committed,
    /// The last attempt failed, with this reason; the journal keeps it for a retry.
    Failed(String),
}

impl std::fmt::Display for UploadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadState::Pending => f.write_str("pending"),
            UploadState::Uploading => f.write_str("uploading"),
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
    /// Bytes per second sent in this attempt so far.
    pub fn rate(&self) -> f64 {
        let elapsed = self.started.elapsed().unwrap_or_default();
        self.sent as f64 / elapsed.max(Duration::from_millis(1)).as_secs_f64()
    }
}

/// Committed records kept for `upload_state` and status after their upload is done;
/// past it the oldest go.
const KEEP_COMMITTED: usize = 1024;

/// Every upload of the mount, by key.
#[derive(Debug, Default)]
pub struct UploadBoard {
    records: Mutex<HashMap<String, UploadRecord>>,
}

impl UploadBoard {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, UploadRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` waits for an attempt (journaled, not yet sending).
    pub fn pending(&self, key: &str, spool: PathBuf, size: u64) {
        let mut records = self.records();
        let record = records
            .entry(key.to_owned())
            .or_insert_with(|| UploadRecord {
                key: key.to_owned(),
                spool: spool.clone(),
                size,
                sent: 0,
                state: UploadState::Pending,
                started: SystemTime::now(),
                attempts: 0,
                changed: Instant::now(),
            });
        if record.state != UploadState::Uploading {
            record.spool = spool;
            record.size = size;
            record.changed = Instant::now();
            if record.state == UploadState::Committed {
                record.state = UploadState::Pending;
            }
        }
    }

    /// An attempt of `key` from `spool` (`size` bytes) starts. Parts a writer streamed
    /// from the same spool before its close count as sent.
    pub fn begin(&self, key: &str, spool: PathBuf, size: u64) {
        let mut records = self.records();
        let streamed = records
            .get(key)
            .filter(|r| r.spool == spool && r.state == UploadState::Uploading)
            .map_or(0, |r| r.sent);
        // Attempts count up across failures of one upload; a new version starts over.
        let failed_before = records
            .get(key)
            .filter(|r| matches!(r.state, UploadState::Failed(_)));
        let attempts = failed_before.map_or(0, |r| r.attempts);
        records.insert(
            key.to_owned(),
            UploadRecord {
                key: key.to_owned(),
                spool,
                size,
                sent: streamed,
                state: UploadState::Uploading,
                started: SystemTime::now(),
                attempts: attempts + 1,
                changed: Instant::now(),
            },
        );
        if attempts > 0 {
            crate::metrics::retry("upload");
        }
        let unfinished = records
            .values()
            .filter(|r| r.state != UploadState::Committed);
        crate::metrics::uploads_pending(unfinished.count());
    }

    /// The store acknowledged `bytes` more of `key`'s bodies (a part, or a whole PUT).
    /// A part streamed while the file is still being written starts its record.
    pub fn sent(&self, key: &str, spool: &std::path::Path, bytes: u64) {
        let mut records = self.records();
        let record = records
            .entry(key.to_owned())
            .or_insert_with(|| UploadRecord {
                key: key.to_owned(),
                spool: spool.to_owned(),
                size: 0,
                sent: 0,
                state: UploadState::Uploading,
                started: SystemTime::now(),
                attempts: 0,
                changed: Instant::now(),
            });
        record.sent += bytes;
        record.size = record.size.max(record.sent);
        record.changed = Instant::now();
    }

    /// `key`'s upload ended: in the store, or failed with `why`.
    pub fn finished(&self, key: &str, outcome: Result<(), String>) {
        crate::metrics::upload_finished(outcome.is_ok());
        let mut records = self.records();
        if let Some(record) = records.get_mut(key) {
            record.state = match outcome {
                Ok(()) => UploadState::Committed,
                Err(why) => UploadState::Failed(why),
            };
            record.changed = Instant::now();
        }
        trim_committed(&mut records);
        let unfinished = records
            .values()
            .filter(|r| r.state != UploadState::Committed);
        crate::metrics::uploads_pending(unfinished.count());
    }

    /// `key` will not be uploaded after all (its file was unlinked).
    pub fn forget(&self, key: &str) {
        self.records().remove(key);
    }

    /// Where `key` stands, if this daemon uploaded or is uploading it.
    pub fn state(&self, key: &str) -> Option<UploadState> {
        self.records().get(key).map(|r| r.state.clone())
    }

    /// Every record, oldest first.
    pub fn snapshot(&self) -> Vec<UploadRecord> {
        let mut all: Vec<UploadRecord> = self.records().values().cloned().collect();
        all.sort_by_key(|r| r.changed);
        all
    }
}

fn trim_committed(records: &mut HashMap<String, UploadRecord>) {
    let committed = records
        .values()
        .filter(|r| r.state == UploadState::Committed)
        .count();
    if committed <= KEEP_COMMITTED {
        return;
    }
    let mut done: Vec<(Instant, String)> = records
        .values()
        .filter(|r| r.state == UploadState::Committed)
        .map(|r| (r.changed, r.key.clone()))
        .collect();
    done.sort();
    for (_, key) in done.into_iter().take(committed - KEEP_COMMITTED) {
        records.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_goes_from_pending_to_committed_or_failed() {
        let board = UploadBoard::default();
        let spool = PathBuf::from("/spool/1");
        board.pending("waits", spool.clone(), 10);
        assert_eq!(board.state("waits"), Some(UploadState::Pending));
        // Parts streamed while writing count once the close's attempt begins.
        board.sent("k", &spool, 4);
        board.begin("k", spool.clone(), 10);
        board.sent("k", &spool, 6);
        let record = board.snapshot().into_iter().find(|r| r.key == "k").unwrap();
        assert_eq!((record.sent, record.size, record.attempts), (10, 10, 1));
        board.finished("k", Err("503 SlowDown".into()));
        assert_eq!(
            board.state("k").unwrap().to_string(),
            "failed: 503 SlowDown"
        );
        board.begin("k", spool, 10);
        let record = |board: &UploadBoard| board.snapshot().into_iter().find(|r| r.key == "k");
        let sent = record(&board).unwrap().sent;
        assert_eq!(sent, 0, "a new attempt starts from nothing");
        board.finished("k", Ok(()));
        assert_eq!(board.state("k"), Some(UploadState::Committed));
        assert_eq!(record(&board).unwrap().attempts, 2);
    }

    #[test]
    fn finished_records_are_bounded() {
        let board = UploadBoard::default();
        for i in 0..KEEP_COMMITTED + 10 {
            let key = format!("k{i}");
            board.begin(&key, PathBuf::from("/s"), 1);
            board.finished(&key, Ok(()));
        }
        assert_eq!(board.snapshot().len(), KEEP_COMMITTED);
        assert_eq!(board.state("k0"), None, "the oldest went first");
    }
}
