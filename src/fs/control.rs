//! The control channel of a mount: two reserved extended attributes of its root that
//! `rgrid-mount status` and `rgrid-mount sync` read. `user.rgrid.status` is the mount's
//! state as JSON ([`MountStatus`]); `user.rgrid.sync` waits until every upload pending
//! at the call is in the store and answers with the outcome ([`SyncOutcome`]). Only the
//! user the daemon runs as and root get answers (others EACCES, even with
//! `--allow-other`; without it FUSE lets no one else in, root included); neither name
//! is listed, and no entry appears in any directory.
//!
//! getxattr(2) comes as a size probe and then a read, or as a read that may find its
//! buffer too small: one answer is computed per caller and kept until a read takes it
//! whole, so a sync runs once and the size told is the size read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{lock, Caller, FsError, RgridFs, XattrValue};
use crate::upload::{SyncFailure, UploadRecord, UploadState};

/// The mount's state.
pub const STATUS: &str = "user.rgrid.status";
/// The upload barrier.
pub const SYNC: &str = "user.rgrid.sync";

/// Uploads listed in a status at most.
const MAX_LISTED: usize = 200;

/// Failures a sync names at most; the rest are counted.
const MAX_FAILURES: usize = 100;

/// The largest answer: an xattr value holds 64 KiB (XATTR_SIZE_MAX), with room to spare.
const MAX_ANSWER: usize = 60 << 10;

/// How long an answer waits for the read that takes it.
const ANSWER_KEPT: Duration = Duration::from_secs(10);

/// What a mount is of, for its status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountIdentity {
    /// The S3 endpoint.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// `bucket`, `prefix P/` or `work ID`, and `read-only` where it is.
    pub view: String,
}

/// One upload in a status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Destination key.
    pub key: String,
    /// `pending`, `uploading`, `committed` or `failed`.
    pub state: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Bytes of content.
    pub size: u64,
    /// Bytes sent in this attempt.
    pub sent: u64,
    /// Bytes per second in this attempt.
    pub rate: f64,
    /// Seconds left at that rate, while uploading.
    pub eta_secs: Option<f64>,
    /// The spool it goes up from (kept until it is in the store).
    pub spool: String,
    /// Attempts so far.
    pub attempts: u32,
}

impl UploadStatus {
    fn of(record: &UploadRecord) -> UploadStatus {
        let rate = record.rate();
        let (state, error) = match &record.state {
            UploadState::Failed(why) => ("failed".to_owned(), Some(why.clone())),
            other => (other.to_string(), None),
        };
        let left = record.size.saturating_sub(record.sent) as f64;
        let uploading = record.state == UploadState::Uploading;
        UploadStatus {
            key: record.key.clone(),
            state,
            error,
            size: record.size,
            sent: record.sent,
            rate,
            eta_secs: (uploading && rate > 0.0).then(|| left / rate),
            spool: record.spool.display().to_string(),
            attempts: record.attempts,
        }
    }
}

/// Read buffers and the block cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMemory {
    /// Bytes the block cache of random reads holds.
    pub cache_bytes: u64,
    /// The most it holds.
    pub cache_capacity: u64,
    /// Bytes of read-ahead buffers in use.
    pub buffers_bytes: u64,
    /// Their budget.
    pub buffers_budget: u64,
}

/// Operations served since the mount started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// read() requests.
    pub reads: u64,
    /// Bytes they returned.
    pub read_bytes: u64,
    /// write() requests.
    pub writes: u64,
    /// Bytes they took.
    pub write_bytes: u64,
    /// Operations that failed because the store did.
    pub store_errors: u64,
}

/// The state of one mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountStatus {
    /// What it mounts.
    pub identity: MountIdentity,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// Uploads pending, in flight, failed, and the last committed, oldest first.
    pub uploads: Vec<UploadStatus>,
    /// Uploads not listed (past the listing's bound).
    pub uploads_unlisted: usize,
    /// Read memory.
    pub read_memory: ReadMemory,
    /// Operations since the start.
    pub counters: Counters,
    /// The object cache, when it is on.
    #[serde(default)]
    pub object_cache: Option<ObjectCacheStatus>,
}

/// The object cache of a mount: its use, and what it served since the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCacheStatus {
    /// Bytes of entries.
    pub bytes: u64,
    /// The bound.
    pub capacity: u64,
    /// Opens served from an entry.
    pub hits: u64,
    /// Opens of stored files that had none.
    pub misses: u64,
    /// Bytes read from entries.
    pub bytes_served: u64,
    /// Entries published.
    pub fills: u64,
    /// Entries evicted.
    pub evictions: u64,
}

/// What a sync found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOutcome {
    /// Uploads that did not reach the store, and why.
    pub failed: Vec<SyncFailure>,
    /// More that failed, past the ones named.
    #[serde(default)]
    pub failed_unlisted: usize,
}

/// Who an answer is for: a calling thread, and the name it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AnswerFor {
    pid: u32,
    name: &'static str,
}

/// An answer computed at `at`.
#[derive(Debug)]
struct Answer {
    at: Instant,
    value: Vec<u8>,
}

/// Answers computed for a caller and not yet read whole.
#[derive(Debug, Default)]
pub(super) struct Answers {
    kept: std::sync::Mutex<HashMap<AnswerFor, Answer>>,
}

impl RgridFs {
    /// The value of control attribute `name` for `caller`, who gave a buffer of `size`.
    pub(super) async fn control(
        &self,
        name: &'static str,
        size: u32,
        caller: Caller,
    ) -> Result<XattrValue, FsError> {
        if caller.uid != 0 && caller.uid != self.config.control_uid {
            return Err(FsError::AccessDenied);
        }
        let slot = AnswerFor {
            pid: caller.pid,
            name,
        };
        let kept = {
            let mut answers = lock(&self.answers.kept);
            answers.retain(|_, answer| answer.at.elapsed() < ANSWER_KEPT);
            answers.remove(&slot).map(|answer| answer.value)
        };
        let value = match kept {
            Some(value) => value,
            None => self.answer(name).await?,
        };
        let reply = XattrValue::fit(value.clone(), size);
        if !matches!(reply, Ok(XattrValue::Data(_))) {
            let answer = Answer {
                at: Instant::now(),
                value,
            };
            lock(&self.answers.kept).insert(slot, answer);
        }
        reply
    }

    async fn answer(&self, name: &'static str) -> Result<Vec<u8>, FsError> {
        let json = match name {
            SYNC => serde_json::to_vec(&self.sync().await),
            _ => self.status_json(),
        };
        json.map_err(|e| FsError::Io(std::io::Error::other(e)))
    }

    /// The status as JSON, with as many uploads as fit in an xattr value.
    fn status_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut status = self.status();
        loop {
            let json = serde_json::to_vec(&status)?;
            if json.len() <= MAX_ANSWER || status.uploads.is_empty() {
                return Ok(json);
            }
            let drop = status.uploads.len().div_ceil(4);
            status.uploads.truncate(status.uploads.len() - drop);
            status.uploads_unlisted += drop;
        }
    }

    /// Waits for every upload pending now.
    pub async fn sync(&self) -> SyncOutcome {
        let all = match &self.uploader {
            Some(uploader) => uploader.sync().await,
            None => Vec::new(),
        };
        let (mut failed, mut room) = (Vec::new(), MAX_ANSWER - 1024);
        for mut failure in all.iter().take(MAX_FAILURES).cloned() {
            if let Some((cut, _)) = failure.error.char_indices().nth(240) {
                failure.error.truncate(cut);
            }
            // JSON escapes can double a key; what does not fit is counted, not named.
            let cost = 2 * (failure.key.len() + failure.error.len()) + 32;
            if cost > room {
                break;
            }
            room -= cost;
            failed.push(failure);
        }
        SyncOutcome {
            failed_unlisted: all.len() - failed.len(),
            failed,
        }
    }

    /// The mount's state now.
    pub fn status(&self) -> MountStatus {
        let records = self
            .uploader
            .as_ref()
            .map(|u| u.board().snapshot())
            .unwrap_or_default();
        // Unfinished first, then the most recent committed ones.
        let (mut open, done): (Vec<_>, Vec<_>) = records
            .iter()
            .partition(|r| r.state != UploadState::Committed);
        open.extend(done.into_iter().rev());
        let listed: Vec<UploadStatus> = open
            .iter()
            .take(MAX_LISTED)
            .map(|r| UploadStatus::of(r))
            .collect();
        let budget = self.engine.budget();
        let (cache_bytes, cache_capacity) = self.engine.cache_use();
        MountStatus {
            identity: self.config.identity.clone(),
            uptime_secs: self.started.elapsed().unwrap_or_default().as_secs(),
            uploads_unlisted: open.len() - listed.len(),
            uploads: listed,
            read_memory: ReadMemory {
                cache_bytes,
                cache_capacity,
                buffers_bytes: budget.total() - budget.available(),
                buffers_budget: budget.total(),
            },
            counters: self.counters.snapshot(),
            object_cache: self.cache.as_ref().map(|cache| {
                let (bytes, capacity) = cache.usage();
                let stats = cache.stats();
                let n =
                    |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                ObjectCacheStatus {
                    bytes,
                    capacity,
                    hits: n(&stats.hits),
                    misses: n(&stats.misses),
                    bytes_served: n(&stats.bytes_served),
                    fills: n(&stats.fills),
                    evictions: n(&stats.evictions),
                }
            }),
        }
    }
}

/// The operation counters of a mount.
#[derive(Debug, Default)]
pub(super) struct OpCounters {
    reads: std::sync::atomic::AtomicU64,
    read_bytes: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
    write_bytes: std::sync::atomic::AtomicU64,
    store_errors: std::sync::atomic::AtomicU64,
}

impl OpCounters {
    pub(super) fn read(&self, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.reads.fetch_add(1, Relaxed);
        self.read_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub(super) fn write(&self, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.writes.fetch_add(1, Relaxed);
        self.write_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts `err` if the store failed the operation.
    pub(super) fn failed(&self, err: &FsError) {
        if err.is_store_failure() {
            self.store_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Counters {
        use std::sync::atomic::Ordering::Relaxed;
        Counters {
            reads: self.reads.load(Relaxed),
            read_bytes: self.read_bytes.load(Relaxed),
            writes: self.writes.load(Relaxed),
            write_bytes: self.write_bytes.load(Relaxed),
            store_errors: self.store_errors.load(Relaxed),
        }
    }
}
