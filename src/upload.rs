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
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::artifact::{self, KeptAttrs};
use crate::object::{ObjectClient, ObjectError, ObjectHeaders};

/// Write-engine settings.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Holds `spool/` and `journal/`; mode 0700.
    pub cache_dir: PathBuf,
    /// Files up to this size go up in one PutObject; larger ones in parts of this size.
    pub part_size: u64,
    /// Bodies (parts, small files) uploaded at once, all files together.
    pub concurrency: usize,
    /// How often pending uploads are tried again.
    pub retry_interval: Duration,
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
}

/// A local file holding the content of one file open for writing.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
}

static SPOOL_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Spool {
    /// A new, empty spool in `dir`.
    pub fn create(dir: &Path) -> io::Result<Spool> {
        let n = SPOOL_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("{}-{nanos:x}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Spool { path, file })
    }

    /// Where the spool lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data` at `offset`, growing the file as needed.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    /// Up to `len` bytes at `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let size = self.size()?;
        let len = len.min(size.saturating_sub(offset) as usize);
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Current size.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Truncates or extends (with zeros) to `len`.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

/// One pending upload, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Destination key.
    pub key: String,
    /// The spool holding the content.
    pub spool: PathBuf,
    /// Size of the content.
    pub size: u64,
    /// Hex SHA-256 of the content: a spool that lost data in a power cut no longer
    /// matches, and is never uploaded.
    pub sha256: String,
    /// User metadata beside the SHA-256: attributes kept (mode, mtime).
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

impl JournalEntry {
    /// The headers the object goes up with.
    fn headers(&self) -> ObjectHeaders {
        let mut headers = headers_for(&self.key, Some(&self.sha256));
        let extra = self.metadata.iter().map(|(k, v)| (k.clone(), v.clone()));
        headers.user_metadata.extend(extra);
        headers
    }
}

/// One small file per pending upload in `journal/`, written before its upload starts and
/// removed once the object is in the store. An entry survives the daemon's death as
/// written (the page cache outlives the process); it is synced to disk only when its
/// upload fails, which is when the caller is told its data lives here: a successful
/// upload needs no local durability, the store has the bytes.
#[derive(Debug)]
pub struct UploadJournal {
    dir: PathBuf,
}

impl UploadJournal {
    /// The journal in `dir` (created if needed).
    pub fn open(dir: PathBuf) -> io::Result<UploadJournal> {
        std::fs::create_dir_all(&dir)?;
        Ok(UploadJournal { dir })
    }

    fn entry_path(&self, spool: &Path) -> PathBuf {
        let name = spool
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.dir.join(format!("{name}.json"))
    }

    /// Records `entry`, whole or not at all (temp file, rename); not yet synced.
    pub fn record(&self, entry: &JournalEntry) -> io::Result<()> {
        let path = self.entry_path(&entry.spool);
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        io::Write::write_all(&mut file, &serde_json::to_vec(entry)?)?;
        std::fs::rename(&tmp, &path)
    }

    /// Makes the entry of `spool` survive a power cut (its file, then the directory
    /// that names it).
    pub fn sync(&self, spool: &Path) -> io::Result<()> {
        File::open(self.entry_path(spool))?.sync_all()?;
        File::open(&self.dir)?.sync_all()
    }

    /// Forgets the upload of `spool`: it is in the store.
    pub fn remove(&self, spool: &Path) -> io::Result<()> {
        match std::fs::remove_file(self.entry_path(spool)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Keeps the entry of a damaged spool as `.damaged`, out of the retries.
    pub fn set_aside(&self, spool: &Path) -> io::Result<()> {
        let path = self.entry_path(spool);
        std::fs::rename(&path, path.with_extension("damaged"))
    }

    /// Whether an upload of `spool` is pending.
    pub fn contains(&self, spool: &Path) -> bool {
        self.entry_path(spool).exists()
    }

    /// Every pending upload. An unreadable entry is set aside as `.torn`, once, with a
    /// log line naming it: entries are synced only when an upload fails, so a torn one
    /// (a power cut after its rename reached the disk, before its bytes did) belongs to a
    /// close that was never answered, or to an upload that had succeeded.
    pub fn pending(&self) -> Vec<JournalEntry> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        for item in dir.flatten() {
            let path = item.path();
            if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&path).map(|b| serde_json::from_slice::<JournalEntry>(&b)) {
                    Ok(Ok(entry)) => entries.push(entry),
                    Ok(Err(_)) => {
                        let torn = path.with_extension("torn");
                        let _ = std::fs::rename(&path, &torn);
                        tracing::error!(entry = %torn.display(), "unreadable journal entry set aside; its spool, if any, is kept")
                    }
                    // Gone meanwhile (its upload finished), or not readable now: not torn.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(entry = %path.display(), "journal entry not read: {e}")
                    }
                }
            }
        }
        entries
    }
}

/// An object the uploader put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Its size.
    pub size: u64,
    /// Bytes in the store (smaller when compressed).
    pub stored_size: u64,
    /// Its ETag, when the store returned one.
    pub etag: Option<String>,
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
    slots: UploadSlots,
    /// Where each upload stands, for status, sync and `upload_state`.
    board: Arc<UploadBoard>,
    /// Held by a pass over the journal: the retry loop and a sync never replay the same
    /// spool at once.
    replaying: tokio::sync::Mutex<()>,
}

/// The mount's limit on upload bodies in memory at once. Streamed parts, uploads at close
/// and replays each take a slot before a body is read (or, compressed, handed over) and
/// give it back when its request is done: eight writers closing together take turns
/// instead of holding eight times the memory.
#[derive(Debug, Clone)]
struct UploadSlots(Arc<Semaphore>);

/// An upload body and the slot it holds until dropped.
struct SlotBody {
    bytes: Bytes,
    _slot: OwnedSemaphorePermit,
}

impl UploadSlots {
    fn new(slots: usize) -> UploadSlots {
        UploadSlots(Arc::new(Semaphore::new(slots)))
    }

    async fn take(&self) -> io::Result<OwnedSemaphorePermit> {
        // Never closed: an error here would be a bug, reported as a failed upload.
        self.0
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)
    }

    /// `len` bytes of `file` at `start`, read once a slot is free.
    async fn read(&self, file: Arc<File>, start: u64, len: u64) -> io::Result<SlotBody> {
        let slot = self.take().await?;
        let bytes = read_range(file, start, len).await?;
        Ok(SlotBody { bytes, _slot: slot })
    }

    /// `bytes` already in memory (a compressed part), once a slot is free.
    async fn hold(&self, bytes: Bytes) -> io::Result<SlotBody> {
        let slot = self.take().await?;
        Ok(SlotBody { bytes, _slot: slot })
    }
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
        let slots = UploadSlots::new(config.concurrency);
        Ok(Arc::new(Uploader {
            client,
            config,
            journal,
            open_spools: Default::default(),
            slots,
            board: Arc::default(),
            replaying: tokio::sync::Mutex::new(()),
        }))
    }

    /// A new spool for a file being written.
    pub fn spool(&self) -> io::Result<Spool> {
        let spool = Spool::create(&self.config.cache_dir.join("spool"))?;
        self.open_spools().insert(spool.path().to_owned());
        Ok(spool)
    }

    /// The writer of `spool` is done with it: removed unless its upload is pending, in
    /// which case the retry loop now owns it.
    pub fn close_spool(&self, spool: &Spool) {
        self.open_spools().remove(spool.path());
        if !self.is_pending(spool.path()) {
            let _ = std::fs::remove_file(spool.path());
        }
    }

    fn open_spools(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.open_spools.lock().unwrap_or_else(|e| e.into_inner())
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
    /// or failure anywhere after this call's start loses nothing.
    pub async fn upload(
        &self,
        key: &str,
        spool: &Spool,
        stream: Option<PartStream>,
        kept: KeptAttrs,
    ) -> Result<Uploaded, UploadError> {
        let file = Arc::new(File::open(spool.path())?);
        let size = spool.size()?;
        // A stream that saw every byte has hashed them already: no second pass.
        let hashed = stream.as_ref().and_then(|s| s.sha256_of_all(size));
        let streamed = hashed.is_some();
        let sha256 = match hashed {
            Some(sha256) => sha256,
            None => fingerprint(&file).await?.1,
        };
        let mut metadata = HashMap::new();
        kept.store(&mut metadata);
        let entry = JournalEntry {
            key: key.to_owned(),
            spool: spool.path().to_owned(),
            size,
            sha256,
            metadata,
        };
        self.journal.record(&entry)?;
        self.board.begin(key, &entry.spool, size);
        let result = match stream {
            Some(s) if streamed && !self.config.compress.applies(key, size) => {
                match self.finish_stream(s, &entry).await {
                    Ok(Some(uploaded)) => Ok(uploaded),
                    Ok(None) => self.put_file(&entry, file).await,
                    Err(e) => Err(e),
                }
            }
            other => {
                if let Some(s) = other {
                    self.abandon(s);
                }
                self.put_file(&entry, file).await
            }
        };
        let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        self.board.finished(&entry.spool, outcome);
        match result {
            Ok(uploaded) => {
                // The store has it: a stale entry costs one idempotent replay at most.
                if let Err(e) = self.journal.remove(spool.path()) {
                    tracing::warn!(key, "journal entry of a finished upload not removed: {e}");
                }
                Ok(uploaded)
            }
            Err(e) => {
                // Pending now: spool and entry must survive a power cut before the
                // caller hears of it. (On success the store has the bytes, so the happy
                // path pays no fsync.)
                self.make_durable(spool.path());
                Err(e)
            }
        }
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

    /// Uploads every journaled file; returns how many are still pending.
    pub async fn finish_pending(&self) -> usize {
        let _pass = self.replaying.lock().await;
        let (owned, pending): (Vec<_>, Vec<_>) = {
            let open = self.open_spools();
            self.journal
                .pending()
                .into_iter()
                .partition(|e| open.contains(&e.spool))
        };
        let results = futures::stream::iter(pending)
            .map(|entry| async move {
                self.board.begin(&entry.key, &entry.spool, entry.size);
                let result = self.replay(&entry).await;
                let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
                self.board.finished(&entry.spool, outcome);
                (entry, result)
            })
            .buffer_unordered(self.config.concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut left = owned.len();
        for (entry, result) in results {
            match result.and_then(|_| Ok(self.journal.remove(&entry.spool)?)) {
                Ok(()) => {
                    tracing::info!(key = %entry.key, "finished pending upload");
                    let _ = std::fs::remove_file(&entry.spool);
                }
                Err(e @ UploadError::Damaged { .. }) => {
                    tracing::error!(key = %entry.key, spool = %entry.spool.display(), "{e}");
                    let _ = self.journal.set_aside(&entry.spool);
                }
                Err(e) => {
                    left += 1;
                    // Recovered after a crash, it may live in the page cache only.
                    self.make_durable(&entry.spool);
                    tracing::warn!(key = %entry.key, spool = %entry.spool.display(), "upload still pending: {e}");
                }
            }
        }
        left
    }

    /// Uploads a journaled spool if it still holds what was journaled.
    async fn replay(&self, entry: &JournalEntry) -> Result<Uploaded, UploadError> {
        let file = Arc::new(File::open(&entry.spool)?);
        let (size, sha256) = fingerprint(&file).await?;
        if (size, sha256.as_str()) != (entry.size, entry.sha256.as_str()) {
            return Err(UploadError::Damaged {
                key: entry.key.clone(),
            });
        }
        self.put_file(entry, file).await
    }

    /// Retries pending uploads every `retry_interval`, for as long as the runtime runs.
    pub fn spawn_retries(self: &Arc<Self>) {
        let uploader = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(uploader.config.retry_interval).await;
                if !uploader.journal.pending().is_empty() {
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
        if self.config.compress.applies(key, size) {
            return self.put_compressed(entry, file).await;
        }
        let headers = entry.headers();
        let etag = if size <= self.config.part_size {
            let body = self.slots.read(file, 0, size).await?;
            let etag = self
                .client
                .put(key, body.bytes.clone(), headers.clone())
                .await?;
            self.board.sent(key, &entry.spool, size);
            etag
        } else {
            self.put_multipart(entry, file, headers.clone()).await?
        };
        Ok(Uploaded {
            size,
            stored_size: size,
            etag,
            headers,
        })
    }

    async fn put_multipart(
        &self,
        entry: &JournalEntry,
        file: Arc<File>,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, UploadError> {
        let size = entry.size;
        let part_size = self.config.part_size;
        let slots = self.slots.clone();
        let parts =
            futures::stream::iter((0..size).step_by(part_size as usize)).then(move |start| {
                let len = part_size.min(size - start);
                let (slots, file) = (slots.clone(), file.clone());
                async move { Ok(slots.read(file, start, len).await?) }
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
        let upload_id = self.client.create_multipart(key, headers).await?;
        let sent = AtomicU64::new(0);
        let uploads = parts.enumerate().map(|(i, part)| {
            let (upload_id, sent) = (&upload_id, &sent);
            async move {
                let part = part?;
                let number = i as u32 + 1;
                let len = part.bytes.len() as u64;
                sent.fetch_add(len, Ordering::Relaxed);
                let etag = self
                    .client
                    .upload_part(key, upload_id, number, part.bytes.clone())
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
                .client
                .complete_multipart(key, &upload_id, parts)
                .await
                .map_err(UploadError::from),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            let _ = self.client.abort_multipart(key, &upload_id).await;
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
        expiration: None,
    }
}

/// Size and hex SHA-256 of an open file.
async fn fingerprint(file: &Arc<File>) -> io::Result<(u64, String)> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || Ok((file.metadata()?.len(), sha256_of(&file)?)))
        .await
        .map_err(io::Error::other)?
}

async fn read_range(file: Arc<File>, start: u64, len: u64) -> io::Result<Bytes> {
    let read = move || {
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, start)?;
        Ok(Bytes::from(buf))
    };
    // A small read from the spool (written moments ago, in the page cache) costs less
    // than handing it to a blocking thread.
    if len <= INLINE_READ {
        return read();
    }
    tokio::task::spawn_blocking(read)
        .await
        .map_err(io::Error::other)?
}

/// Largest spool read done on the async worker itself.
const INLINE_READ: u64 = 256 << 10;

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
mod gzip;
mod progress;
mod stream;
mod tree;

pub use barrier::SyncFailure;
pub use gzip::{CompressMode, CompressPolicy};
pub use progress::{UploadBoard, UploadRecord, UploadState};
pub use stream::PartStream;

#[cfg(test)]
mod tests;
