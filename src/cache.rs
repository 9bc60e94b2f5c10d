//! The object cache: whole objects kept on local disk under `<cache dir>/objects`, keyed
//! by key and ETag (the cache directory is the store's and bucket's own), surviving
//! unmounts and restarts, so a file read once reads locally on every mount after.
//!
//! - An entry is a data file `<name>` and its record `<name>.json` (key, ETag, size,
//!   SHA-256 when known); `<name>` is the hex SHA-256 of key and ETag. The record is
//!   written last: an entry exists once its record does, and only complete, checked
//!   content gets one. A fill writes under `tmp/`; a crash leaves only that, which the
//!   next start deletes. The record names the boot until a background pass has synced
//!   the data (`cache/durable.rs`): a reboot drops what the kernel may not have written.
//! - An entry is used only for the ETag it was filled from: the namespace's current ETag
//!   (listing or HEAD within the metadata TTL) picks it, so a replaced object never
//!   serves old bytes.
//! - Entries are evicted least recently used first, by size, within `max_size`. Spools of
//!   pending uploads live elsewhere and are never evicted.
//! - Filling costs no extra GET: a reader that reads a file front to back tees what it
//!   receives into a [`Fill`] (`cache/fill.rs`), a gzip decode writes its output where
//!   it becomes the decoded entry ([`DecodeTarget`]), and a file uploaded through the
//!   mount is linked in from its spool.

mod adopt;
mod decode;
mod durable;
mod fill;
mod index;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

pub use adopt::LinkedSpool;
pub use decode::DecodeTarget;
pub use fill::Fill;
use index::{Entry, Index};

use crate::artifact;
use crate::object::{ObjectHeaders, ObjectId};

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Holds `objects/`.
    pub dir: PathBuf,
    /// Most bytes of entries together; 0 turns the cache off.
    pub max_size: u64,
}

/// What the record of an entry says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    key: String,
    etag: String,
    form: Form,
    size: u64,
    #[serde(default)]
    sha256: Option<String>,
    /// The boot the data was written in, while it is not known to be on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot: Option<String>,
    /// When the store deletes the object (Unix seconds), if known: evicted first after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

impl Record {
    fn name(&self) -> String {
        entry_name(&self.key, &self.etag, self.form)
    }
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Opens served from an entry.
    pub hits: AtomicU64,
    /// Opens of stored files with no entry.
    pub misses: AtomicU64,
    /// Bytes read from entries.
    pub bytes_served: AtomicU64,
    /// Entries evicted to stay within the bound.
    pub evictions: AtomicU64,
    /// Entries published.
    pub fills: AtomicU64,
}

/// Fills at once, at most: each has a thread and a temp file.
const MAX_FILLS: usize = 16;
/// Bytes handed to fill threads and not yet written, all fills together.
const MAX_QUEUED: usize = 64 << 20;

/// The object cache of one mount.
#[derive(Debug)]
pub struct ObjectCache {
    dir: PathBuf,
    max_size: u64,
    index: Mutex<Index>,
    stats: CacheStats,
    /// Bytes queued to fill threads.
    queued: AtomicU64,
    /// Told each time a fill thread has written some.
    drained: tokio::sync::Notify,
    /// Names temp files apart, with the process id (mounts may share the directory).
    tmp_counter: AtomicU64,
    /// The threads that write and publish entries, so that an unmount waits for them.
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// This boot's id: entries are published before their sync, stamped with it.
    boot: Option<String>,
    /// Entries published and not yet synced.
    unsynced: Mutex<durable::Unsynced>,
}

/// What an entry holds: the content as readers see it, which for a gzip-stored object
/// is its decoded bytes. Part of the entry's name: a copy that changes only the metadata
/// keeps S3's ETag, and must not find the other form's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Form {
    /// The stored bytes, as they are.
    Plain,
    /// The decoded bytes of a gzip-stored object.
    Decoded,
}

impl Form {
    /// The form an object with `headers` is read in: decoded if it is gzip-stored.
    pub fn of(headers: &ObjectHeaders) -> Form {
        match artifact::compression(headers) {
            artifact::Compression::None => Form::Plain,
            artifact::Compression::Gzip => Form::Decoded,
        }
    }
}

/// The name of the entry of version `etag` of `key` in `form`.
fn entry_name(key: &str, etag: &str, form: Form) -> String {
    let mut id = key.as_bytes().to_vec();
    id.push(0);
    id.extend_from_slice(etag.as_bytes());
    if form == Form::Decoded {
        id.extend_from_slice(b"\0decoded");
    }
    artifact::sha256_hex(&id)
}

impl ObjectCache {
    /// Opens the cache in `config.dir`: entries with a record are indexed (oldest record
    /// first), everything else (half fills, data without a record) deleted. `None` when
    /// the cache is off.
    pub fn open(config: &CacheConfig) -> io::Result<Option<Arc<ObjectCache>>> {
        let cache = Self::open_in_boot(config, durable::boot_id())?;
        if let Some(cache) = &cache {
            cache.start_syncer();
        }
        Ok(cache)
    }

    /// [`ObjectCache::open`] in boot `boot` (unknown: `None`), without the background
    /// sync pass.
    fn open_in_boot(
        config: &CacheConfig,
        boot: Option<String>,
    ) -> io::Result<Option<Arc<ObjectCache>>> {
        if config.max_size == 0 {
            return Ok(None);
        }
        let dir = config.dir.join("objects");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        remove_stale_tmp(&tmp);
        let index = Index::load(&dir, boot.as_deref())?;
        let cache = ObjectCache {
            dir,
            max_size: config.max_size,
            index: Mutex::new(index),
            stats: CacheStats::default(),
            queued: AtomicU64::new(0),
            drained: tokio::sync::Notify::new(),
            tmp_counter: AtomicU64::new(0),
            workers: Mutex::default(),
            boot,
            unsynced: Mutex::default(),
        };
        cache.evict();
        Ok(Some(Arc::new(cache)))
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The entry of version `id` in `form`, opened, if the cache has it whole (counted
    /// as a hit or a miss). An entry removed behind the index's back (`cache clear`) is
    /// a miss.
    pub fn open_entry(&self, id: &ObjectId, form: Form) -> Option<File> {
        let file = self.open_whole(id, form);
        let counter = if file.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::metrics::object_cache(file.is_some());
        file
    }

    fn open_whole(&self, id: &ObjectId, form: Form) -> Option<File> {
        let name = entry_name(&id.key, id.etag.as_deref()?, form);
        let size = self.index().entries.get(&name)?.size;
        let file = File::open(self.data_path(&name));
        let len = file
            .as_ref()
            .ok()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len());
        match (file, len) {
            (Ok(file), Some(len)) if len == size => {
                // Recency that outlives the mount: the record's mtime.
                let record = File::options().write(true).open(self.record_path(&name));
                let _ = record.and_then(|r| r.set_modified(std::time::SystemTime::now()));
                Some(file)
            }
            (Err(e), _) if e.kind() != io::ErrorKind::NotFound => None,
            _ => {
                self.forget(&name);
                None
            }
        }
    }

    /// Drops `name` from the index and the disk.
    fn forget(&self, name: &str) {
        self.index().remove(name);
        let _ = std::fs::remove_file(self.record_path(name));
        let _ = std::fs::remove_file(self.data_path(name));
    }

    /// Whether version `id` has an entry in `form` (no counting, no recency).
    pub fn has(&self, id: &ObjectId, form: Form) -> bool {
        let name = id
            .etag
            .as_deref()
            .map(|etag| entry_name(&id.key, etag, form));
        name.is_some_and(|name| self.index().entries.contains(&name))
    }

    /// The size of version `id`'s decoded entry, if it has one: the object is gzip-stored
    /// and this is what it decodes to (no counting, no recency).
    pub fn decoded_size(&self, id: &ObjectId) -> Option<u64> {
        let name = entry_name(&id.key, id.etag.as_deref()?, Form::Decoded);
        self.index().entries.peek(&name).map(|e| e.size)
    }

    /// A fresh temp path, this process's own.
    fn tmp_path(&self, name: &str) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        self.dir.join("tmp").join(format!("{name}.{pid}.{n}"))
    }

    /// Whether an entry of `size` bytes is worth keeping: at most half the bound, so that
    /// one object cannot empty the cache.
    fn fits(&self, size: u64) -> bool {
        size > 0 && size <= self.max_size / 2
    }

    /// Bytes read from an entry.
    pub fn served(&self, bytes: usize) {
        self.stats
            .bytes_served
            .fetch_add(bytes as u64, Ordering::Relaxed);
        crate::metrics::object_cache_bytes(bytes);
    }

    /// The counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Bytes of entries now, and the bound.
    pub fn usage(&self) -> (u64, u64) {
        (self.index().bytes, self.max_size)
    }

    /// Makes the complete, checked file at `data`, in this cache's filesystem, the entry
    /// of `record`: linked into place (never over a file another mount published there:
    /// same name, same bytes), then its record written, stamped with this boot until
    /// the background pass syncs it (`cache/durable.rs`).
    fn publish(&self, data: &Path, record: &Record) -> io::Result<()> {
        let name = record.name();
        let mut record = record.clone();
        record.expires_at = self.index().expiring.get(&name).copied();
        self.stamp(data, &mut record)?;
        match std::fs::hard_link(data, self.data_path(&name)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        self.write_record(&name, &record)?;
        if record.boot.is_some() {
            self.published_unsynced(name.clone());
        }
        let entry = Entry {
            size: record.size,
            expires_at: record.expires_at,
        };
        self.index().insert(name, entry);
        self.stats.fills.fetch_add(1, Ordering::Relaxed);
        self.evict();
        Ok(())
    }

    /// Writes `record` as `name`'s record, whole or not at all.
    fn write_record(&self, name: &str, record: &Record) -> io::Result<()> {
        let text = serde_json::to_vec(record).map_err(io::Error::other)?;
        let tmp = self.tmp_path(&format!("{name}.json"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.record_path(name))
    }

    /// Runs `work` (writing or publishing an entry) on a thread of its own, which
    /// [`ObjectCache::wait_for_workers`] waits for.
    fn spawn_worker(&self, name: &str, work: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(work)?;
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.retain(|w| !w.is_finished());
        workers.push(handle);
        Ok(())
    }

    /// Waits for the entries being written to be published (at unmount: an entry whose
    /// content went by is not lost to the process's exit). Fills still fed by open
    /// handles end when those handles do.
    pub fn wait_for_workers(&self) {
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            let _ = worker.join();
        }
    }

    /// The store deletes version `id` at `at` (the retention policy's expiry): once
    /// that has passed, its entry in `form` is the first to go when room is needed.
    pub fn note_expiry(&self, id: &ObjectId, form: Form, at: std::time::SystemTime) {
        let Some(etag) = id.etag.as_deref() else {
            return;
        };
        let at = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.index()
            .note_expiry(entry_name(&id.key, etag, form), at);
    }

    /// Removes entries until they fit the bound: those of expired objects first, then the
    /// least recently used.
    fn evict(&self) {
        loop {
            let name = {
                let mut index = self.index();
                if index.bytes <= self.max_size {
                    return;
                }
                match index.take_victim(std::time::SystemTime::now()) {
                    Some(name) => name,
                    None => return,
                }
            };
            // The record first: a data file without one is not an entry.
            let _ = std::fs::remove_file(self.record_path(&name));
            let _ = std::fs::remove_file(self.data_path(&name));
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            crate::metrics::object_cache_eviction();
        }
    }
}

/// Deletes the temp files in `tmp` of processes no longer running: what a crash left.
/// (Mounts of one store may share the directory; a live one's fills stay.)
fn remove_stale_tmp(tmp: &Path) {
    let Ok(items) = std::fs::read_dir(tmp) else {
        return;
    };
    for item in items.filter_map(Result::ok) {
        let name = item.file_name().to_string_lossy().into_owned();
        let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_file(item.path());
        }
    }
}

/// Empties the cache in `dir` (`rgrid-mount cache clear`): records first, so that no
/// entry is ever half there. A mount using it finds its entries gone and reads from the
/// store. Returns the bytes freed.
pub fn clear(dir: &Path) -> io::Result<u64> {
    let dir = dir.join("objects");
    let mut freed = 0;
    let Ok(items) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let items: Vec<_> = items.filter_map(Result::ok).collect();
    for pass in [true, false] {
        for item in &items {
            let name = item.file_name();
            let is_record = name.to_string_lossy().ends_with(".json");
            if is_record == pass && item.file_type().is_ok_and(|t| t.is_file()) {
                freed += item.metadata().map_or(0, |m| m.len());
                std::fs::remove_file(item.path())?;
            }
        }
    }
    Ok(freed)
}

#[cfg(test)]
mod tests;
