//! The write engine: local spools for files open for writing, the upload journal that
//! makes closed files crash-safe, and the uploader that turns a spool into an object.
//!
//! Order of a close: the spool's size and SHA-256 are taken, a journal entry naming key,
//! spool, size and hash is written, then the upload runs. Only when the store has the
//! object is the entry removed. A failed upload syncs spool and entry, and leaves both
//! on disk for the retry loop (and the next start of the daemon) to finish; a spool
//! that no longer matches its entry (a power cut before it reached the disk) is set aside,
//! never uploaded. So no file that was closed is lost or stored damaged, and close() can
//! report the truth: 0 when the object is durable, EIO when it is not.
//!
//! Small files go up in one PutObject; larger ones as a multipart upload with parts sent
//! in parallel. Every body in memory holds one of the mount's `UploadSlots`, so files
//! closed together upload in parallel up to that limit, in bounded memory (compressed
//! uploads also hold the few parts their compressor has made ahead). Every object
//! carries the SHA-256 of its content in `rgrid-sha256`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::artifact::{self, KeptAttrs};
use crate::object::{ObjectClient, ObjectError, ObjectHeaders};

/// Write-engine settings.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Holds `spool/`, `journal/` and `multipart/`; mode 0700.
    pub cache_dir: PathBuf,
    /// Files up to this size go up in one PutObject; larger ones in parts of this size,
    /// growing for files of many GiB (`PartPlan`).
    pub part_size: u64,
    /// What the store accepts in one multipart upload.
    pub part_limits: PartLimits,
    /// Bodies (parts, small files) uploaded at once, all files together.
    pub concurrency: usize,
    /// How often pending uploads are tried again.
    pub retry_interval: Duration,
    /// Tags every object written gets from its creation: its retention tier.
    pub tags: crate::object::Tags,
    /// Write-back (`--write-back`): close returns once the upload is journaled, and the
    /// upload runs in the background.
    pub write_back: bool,
    /// Bytes of content write-back closes may leave pending; a close past it waits.
    pub max_pending: u64,
    /// Which files are stored gzip-compressed.
    pub compress: CompressPolicy,
}

/// What can go wrong writing.
#[derive(Debug, Error)]
pub enum UploadError {
    /// Local disk: the spool or the journal.
    #[error("local cache: {0}")]
    Io(#[from] io::Error),
    /// The store refused or could not be reached.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// A journaled spool no longer holds what was journaled (lost in a power cut); it is
    /// kept for inspection and never uploaded.
    #[error("{key}: spool does not match its journal entry; not uploaded")]
    Damaged {
        /// Destination key.
        key: String,
    },
    /// Larger than any multipart upload of the store can carry.
    #[error("{key}: {size} bytes is more than the store takes in one object ({max})")]
    TooLarge {
        /// Destination key.
        key: String,
        /// The file's size.
        size: u64,
        /// The largest the part plan uploads.
        max: u64,
    },
}

impl UploadError {
    /// True when the same upload may succeed later (the store was down, throttled us or
    /// failed): write-back retries these without limit.
    pub fn is_transient(&self) -> bool {
        matches!(self, UploadError::Object(e) if e.is_transient())
    }
}

/// An object the uploader put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Its key.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// Bytes in the store (smaller when compressed).
    pub stored_size: u64,
    /// Its ETag, when the store returned one.
    pub etag: Option<String>,
    /// Hex SHA-256 of its content (decompressed).
    pub sha256: String,
    /// The headers it went up with (content type, SHA-256, compression, kept attributes).
    pub headers: ObjectHeaders,
}

/// Turns spools into objects.
#[derive(Debug)]
pub struct Uploader {
    client: Arc<dyn ObjectClient>,
    config: WriteConfig,
    journal: UploadJournal,
    /// Spools of open writers: their own close uploads them, and the retry loop keeps
    /// off (a replay beside an upload in flight made a second version, and deleted a
    /// spool still being written).
    open_spools: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// Spools the write-back queue is sending: the retry loop keeps off them too.
    queued: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// Held by a directory rename and by a pass over unfinished ones: one plan is
    /// carried out by one of them only.
    moving: tokio::sync::Mutex<()>,
    /// Spools set aside as damaged: never uploaded, and no barrier's success.
    damaged: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// One upload of a key at a time.
    key_locks: KeyLocks,
    /// Write-back: what closes may leave pending, and what they did.
    queue: queue::QueueState,
    slots: UploadSlots,
    /// The sizes of every multipart upload's parts.
    plan: PartPlan,
    /// Where each upload stands, for status, sync and `upload_state`.
    board: Arc<UploadBoard>,
    /// Held by a pass over the journal: the retry loop and a sync never replay the same
    /// spool at once.
    replaying: tokio::sync::Mutex<()>,
    /// The store refused tags on new objects: they go up without.
    untagged: std::sync::atomic::AtomicBool,
    /// Multipart uploads open in the store, and the aborts that failed.
    multipart: Arc<complete::MultipartUploads>,
}

impl Uploader {
    /// An uploader with its spool and journal directories under `config.cache_dir`.
    pub fn new(client: Arc<dyn ObjectClient>, config: WriteConfig) -> io::Result<Arc<Uploader>> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.cache_dir)?;
        std::fs::create_dir_all(config.cache_dir.join("spool"))?;
        let journal = UploadJournal::open(config.cache_dir.join("journal"))?;
        let multipart = complete::MultipartUploads::open(config.cache_dir.join("multipart"))?;
        let slots = UploadSlots::new(config.concurrency);
        let plan = PartPlan::with_limits(config.part_size, config.part_limits);
        Ok(Arc::new(Uploader {
            plan,
            client,
            journal,
            open_spools: Default::default(),
            queued: Default::default(),
            damaged: Default::default(),
            moving: tokio::sync::Mutex::new(()),
            key_locks: KeyLocks::default(),
            queue: queue::QueueState::new(config.max_pending, config.concurrency),
            slots,
            config,
            board: Arc::default(),
            replaying: tokio::sync::Mutex::new(()),
            untagged: Default::default(),
            multipart,
        }))
    }

    /// The largest file this mount uploads: a write or truncate past it is EFBIG.
    pub fn max_file_size(&self) -> u64 {
        self.plan.max_size()
    }

    /// Refuses a file larger than the part plan carries.
    fn check_size(&self, key: &str, size: u64) -> Result<(), UploadError> {
        let max = self.plan.max_size();
        if size > max {
            let key = key.to_owned();
            return Err(UploadError::TooLarge { key, size, max });
        }
        Ok(())
    }

    /// A new spool for a file being written.
    pub fn spool(&self) -> io::Result<Spool> {
        let spool = Spool::create(&self.config.cache_dir.join("spool"))?;
        self.open_spools().insert(spool.path().to_owned());
        Ok(spool)
    }

    /// The writer of `spool` is done with it: removed unless its upload is pending, in
    /// which case the queue or the retry loop now owns it.
    pub fn close_spool(&self, spool: &Spool) {
        self.open_spools().remove(spool.path());
        self.remove_spool_if_unused(spool.path());
    }

    fn open_spools(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.open_spools.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a writer or the write-back queue holds `spool`.
    fn is_held(&self, spool: &Path) -> bool {
        self.open_spools().contains(spool) || self.queued().contains(spool)
    }

    /// Where each upload of this mount stands.
    pub fn board(&self) -> &UploadBoard {
        &self.board
    }

    /// The uploads the journal still lists.
    pub fn pending(&self) -> Vec<JournalEntry> {
        self.journal.pending()
    }

    /// Whether `spool` still has an upload pending (so it must outlive its handle).
    pub fn is_pending(&self, spool: &Path) -> bool {
        self.journal.contains(spool)
    }

    /// Makes `spool` the content of `key` in the store: journaled first, so that a crash
    /// or failure anywhere after this call's start loses nothing. `Superseded` when a
    /// newer version of the key closed while this one waited for its turn.
    pub async fn upload(
        &self,
        key: &str,
        spool: &Spool,
        stream: Option<PartStream>,
        kept: KeptAttrs,
    ) -> Result<Sent, UploadError> {
        let entry = match self.record(key, spool, stream.as_ref(), kept).await {
            Ok(entry) => entry,
            Err(e) => {
                if let Some(s) = stream {
                    self.abandon(s);
                }
                return Err(e);
            }
        };
        self.send(&entry.spool, stream, true).await
    }

    /// Journals the content of `spool` as the next version of `key`: its size, its
    /// SHA-256 (from `stream` if it saw every byte, else read from the spool) and the
    /// attributes to keep.
    async fn record(
        &self,
        key: &str,
        spool: &Spool,
        stream: Option<&PartStream>,
        kept: KeptAttrs,
    ) -> Result<JournalEntry, UploadError> {
        let size = spool.size()?;
        let sha256 = match stream.and_then(|s| s.sha256_of_all(size)) {
            Some(sha256) => sha256,
            None => fingerprint(&Arc::new(File::open(spool.path())?)).await?.1,
        };
        let mut metadata = HashMap::new();
        kept.store(&mut metadata);
        let entry = JournalEntry {
            key: key.to_owned(),
            spool: spool.path().to_owned(),
            size,
            sha256,
            metadata,
            seq: 0,
        };
        let entry = self.journal.record(entry)?;
        // Older versions still waiting are never sent: dropped now, they cannot go up
        // after this one (one in flight finishes first, under the key's lock).
        for older in self.journal.of_key(key) {
            if older.seq < entry.seq {
                self.drop_entry(&older);
            }
        }
        Ok(entry)
    }

    /// Syncs a pending upload's spool and journal entry to disk; a failure is logged (the
    /// caller reports the upload's own error).
    fn make_durable(&self, spool: &Path) {
        let synced = File::open(spool)
            .and_then(|f| f.sync_data())
            .and_then(|()| self.journal.sync(spool));
        if let Err(e) = synced {
            tracing::error!(spool = %spool.display(), "pending upload not synced to disk: {e}");
        }
    }

    /// Uploads every journaled file no writer or queue holds; returns how many are
    /// still pending.
    pub async fn finish_pending(&self) -> usize {
        let _pass = self.replaying.lock().await;
        let (held, pending): (Vec<_>, Vec<_>) =
            (self.journal.pending().into_iter()).partition(|e| self.is_held(&e.spool));
        let results = futures::stream::iter(pending)
            .map(|entry| async move {
                let result = self.replay(&entry).await;
                (entry, result)
            })
            .buffer_unordered(self.config.concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut left = held.len();
        for (entry, result) in results {
            match result {
                Ok(Sent::Stored(_)) => {
                    tracing::info!(key = %entry.key, "finished pending upload");
                    self.remove_spool_if_unused(&entry.spool);
                }
                Ok(Sent::Superseded) => {}
                Err(e @ UploadError::Damaged { .. }) => {
                    tracing::error!(key = %entry.key, spool = %entry.spool.display(), "{e}");
                    self.set_aside(&entry, &e);
                }
                Err(e) => {
                    left += 1;
                    tracing::warn!(key = %entry.key, spool = %entry.spool.display(), "upload still pending: {e}");
                }
            }
        }
        left
    }

    /// Takes a damaged spool's entry out of the retries, failed on the board: a barrier
    /// waiting for it reports it instead of success.
    fn set_aside(&self, entry: &JournalEntry, why: &UploadError) {
        self.board.begin(&entry.key, &entry.spool, entry.size);
        self.board.finished(&entry.spool, Err(why.to_string()));
        self.damaged().insert(entry.spool.clone());
        let _ = self.journal.set_aside(&entry.spool);
    }

    fn damaged(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.damaged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uploads a journaled spool if it still holds what was journaled, and unless the
    /// store has that content already (an upload that landed just before a crash).
    async fn replay(&self, entry: &JournalEntry) -> Result<Sent, UploadError> {
        let file = Arc::new(File::open(&entry.spool)?);
        let (size, sha256) = fingerprint(&file).await?;
        if (size, sha256.as_str()) != (entry.size, entry.sha256.as_str()) {
            return Err(UploadError::Damaged {
                key: entry.key.clone(),
            });
        }
        if self.stored_already(entry).await {
            tracing::info!(key = %entry.key, "the store has this content already");
            // Unless renamed or given new attributes meanwhile: that record must go.
            self.journal.remove_if_seq(&entry.spool, entry.seq)?;
            return Ok(Sent::Superseded);
        }
        self.send(&entry.spool, None, false).await
    }

    /// Whether the store's object of `entry.key` is `entry`'s content, by its recorded
    /// size and SHA-256 (not one whose hash sits in a tag: that costs another request).
    async fn stored_already(&self, entry: &JournalEntry) -> bool {
        let Ok(info) = self.client.head(&entry.key).await else {
            return false;
        };
        let size = artifact::original_size(&info.headers).unwrap_or(info.meta.size);
        size == entry.size && artifact::sha256(&info.headers) == Some(entry.sha256.as_str())
    }

    /// Retries pending uploads every `retry_interval`, for as long as the runtime runs;
    /// aborts left by a daemon that stopped go at once.
    pub fn spawn_retries(self: &Arc<Self>) {
        let uploader = self.clone();
        tokio::spawn(async move {
            uploader.retry_aborts().await;
            loop {
                tokio::time::sleep(uploader.config.retry_interval).await;
                uploader.retry_aborts().await;
                if let Err(e) = uploader.finish_moves().await {
                    tracing::warn!("directory rename still unfinished: {e}");
                }
                if !uploader.journal.is_empty() {
                    uploader.finish_pending().await;
                }
            }
        });
    }

    /// Puts the journaled content under its key, with its SHA-256 and a content type.
    async fn put_file(
        &self,
        entry: &JournalEntry,
        file: Arc<File>,
    ) -> Result<Uploaded, UploadError> {
        let (key, size) = (entry.key.as_str(), entry.size);
        if self.compresses(key, size) {
            return self.put_compressed(entry, file).await;
        }
        let headers = entry.headers();
        let etag = if size <= self.config.part_size {
            let body = self.slots.read(file, 0, size).await?;
            let etag = self
                .put_new(key, body.body.clone(), headers.clone())
                .await?;
            self.board.sent(key, &entry.spool, size);
            etag
        } else {
            self.put_multipart(entry, file, headers.clone()).await?
        };
        Ok(Uploaded {
            key: key.to_owned(),
            size,
            stored_size: size,
            etag,
            sha256: entry.sha256.clone(),
            headers,
        })
    }

    async fn put_multipart(
        &self,
        entry: &JournalEntry,
        file: Arc<File>,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, UploadError> {
        self.check_size(&entry.key, entry.size)?;
        let slots = self.slots.clone();
        let parts = self.plan.parts(entry.size).collect::<Vec<_>>();
        let parts = futures::stream::iter(parts).then(move |part| {
            let (slots, file) = (slots.clone(), file.clone());
            async move { Ok(slots.part(file, part.start, part.len).await?) }
        });
        Ok(self.put_parts(entry, headers, parts).await?.0)
    }

    /// A multipart upload of `parts` as they come, `concurrency` at a time; returns the
    /// ETag and the bytes sent. A failed upload is aborted: parts of an abandoned upload
    /// cost storage until then.
    async fn put_parts(
        &self,
        entry: &JournalEntry,
        headers: ObjectHeaders,
        parts: impl futures::Stream<Item = Result<SlotBody, UploadError>>,
    ) -> Result<(Option<String>, u64), UploadError> {
        let key = entry.key.as_str();
        let upload_id = self.start_multipart(key, headers).await?;
        let sent = AtomicU64::new(0);
        let uploads = parts.enumerate().map(|(i, part)| {
            let (upload_id, sent) = (&upload_id, &sent);
            async move {
                let part = part?;
                let number = i as u32 + 1;
                let len = part.body.len();
                sent.fetch_add(len, Ordering::Relaxed);
                let etag = self
                    .client
                    .upload_part(key, upload_id, number, part.body.clone())
                    .await?;
                self.board.sent(key, &entry.spool, len);
                Ok::<_, UploadError>((number, etag))
            }
        });
        let result = uploads
            .buffered(self.config.concurrency)
            .try_collect::<Vec<_>>()
            .await;
        let completed = match result {
            Ok(parts) => self
                .complete(key, &upload_id, parts)
                .await
                .map_err(UploadError::from),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            self.abort(key, upload_id);
        }
        Ok((completed?, sent.into_inner()))
    }
}

/// Headers of an uploaded object: a content type from the name and, once known, the
/// content's SHA-256.
fn headers_for(key: &str, sha256: Option<&str>) -> ObjectHeaders {
    ObjectHeaders {
        content_type: Some(artifact::content_type(key).to_owned()),
        content_encoding: None,
        user_metadata: sha256
            .map(|h| (artifact::SHA256.to_owned(), h.to_owned()))
            .into_iter()
            .collect(),
        ..ObjectHeaders::default()
    }
}

/// Size and hex SHA-256 of an open file.
async fn fingerprint(file: &Arc<File>) -> io::Result<(u64, String)> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || Ok((file.metadata()?.len(), sha256_of(&file)?)))
        .await
        .map_err(io::Error::other)?
}

fn sha256_of(mut file: &File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex_digest(hasher));
        }
        hasher.update(&buf[..n]);
    }
}

/// The hash as lowercase hex, as `x-amz-meta-rgrid-sha256` carries it.
fn hex_digest(hasher: Sha256) -> String {
    artifact::hex(&hasher.finalize())
}

mod barrier;
mod complete;
mod gzip;
mod journal;
mod ledger;
mod moves;
mod parts;
mod progress;
mod queue;
mod send;
mod slots;
mod spool;
mod stream;
mod tagging;
mod tree;

pub use barrier::SyncFailure;
pub use gzip::{CompressMode, CompressPolicy};
pub use journal::{JournalEntry, UploadJournal};
pub use moves::{MovedVersion, TreeLimits, TreeMoveError};
pub use parts::{PartLimits, PartPlan, S3_LIMITS};
pub use progress::{UploadBoard, UploadRecord, UploadState};
pub use queue::Committed;
pub use send::Sent;
pub use spool::Spool;
pub use stream::PartStream;

use send::KeyLocks;
use slots::{SlotBody, UploadSlots};

#[cfg(test)]
mod tests;
