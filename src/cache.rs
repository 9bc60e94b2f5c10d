//! The object cache: whole objects kept on local disk under `<cache dir>/objects`, keyed
//! by key and ETag (the cache directory is the store's and bucket's own), surviving
//! unmounts and restarts, so a file read once reads locally on every mount after.
//!
//! - An entry is a data file `<name>` and its record `<name>.json` (key, ETag, size,
//!   SHA-256 when known); `<name>` is the hex SHA-256 of key and ETag. The record is
//!   written last: an entry exists once its record does, and only complete, checked
//!   content gets one. A fill writes under `tmp/`; a crash leaves only that, which the
//!   next start deletes.
//! - An entry is used only for the ETag it was filled from: the namespace's current ETag
//!   (listing or HEAD within the metadata TTL) picks it, so a replaced object never
//!   serves old bytes.
//! - Entries are evicted least recently used first, by size, within `max_size`. Spools of
//!   pending uploads live elsewhere and are never evicted.
//! - Filling costs no extra GET: a reader that reads a file front to back tees what it
//!   receives into a [`Fill`] (`cache/fill.rs`), and a file uploaded through the mount is linked
//!   in from its spool.

mod fill;

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use serde::{Deserialize, Serialize};

pub use fill::Fill;

use crate::artifact;
use crate::object::ObjectId;

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
    size: u64,
    #[serde(default)]
    sha256: Option<String>,
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

/// What the cache holds, in memory: each entry's size, least recently used first.
#[derive(Debug)]
struct Index {
    entries: LruCache<String, u64>,
    bytes: u64,
    /// Entries being filled: one fill per entry at a time.
    filling: HashSet<String>,
}

/// The object cache of one mount.
#[derive(Debug)]
pub struct ObjectCache {
    dir: PathBuf,
    max_size: u64,
    index: Mutex<Index>,
    stats: CacheStats,
}

/// The name of the entry of version `etag` of `key`.
fn entry_name(key: &str, etag: &str) -> String {
    let mut id = key.as_bytes().to_vec();
    id.push(0);
    id.extend_from_slice(etag.as_bytes());
    artifact::sha256_hex(&id)
}

impl ObjectCache {
    /// Opens the cache in `config.dir`: entries with a record are indexed (oldest record
    /// first), everything else (half fills, data without a record) deleted. `None` when
    /// the cache is off.
    pub fn open(config: &CacheConfig) -> io::Result<Option<Arc<ObjectCache>>> {
        if config.max_size == 0 {
            return Ok(None);
        }
        let dir = config.dir.join("objects");
        let tmp = dir.join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let mut found = scan(&dir)?;
        found.sort_by_key(|(_, _, used)| *used);
        let mut index = Index {
            entries: LruCache::unbounded(),
            bytes: 0,
            filling: HashSet::new(),
        };
        for (name, size, _) in found {
            index.bytes += size;
            index.entries.put(name, size);
        }
        let cache = ObjectCache {
            dir,
            max_size: config.max_size,
            index: Mutex::new(index),
            stats: CacheStats::default(),
        };
        cache.evict(0);
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

    /// The entry of version `id`, opened, if the cache has it (counted as a hit or a
    /// miss). An entry removed behind the index's back (`cache clear`) is a miss.
    pub fn open_entry(&self, id: &ObjectId) -> Option<File> {
        let etag = id.etag.as_deref()?;
        let name = entry_name(&id.key, etag);
        let known = self.index().entries.get(&name).is_some();
        let file = known
            .then(|| File::open(self.data_path(&name)).ok())
            .flatten();
        if file.is_none() && known {
            let mut index = self.index();
            if let Some(size) = index.entries.pop(&name) {
                index.bytes -= size;
            }
        }
        let counter = if file.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::metrics::object_cache(file.is_some());
        file
    }

    /// Whether version `id` has an entry (no counting, no recency).
    pub fn contains(&self, id: &ObjectId) -> bool {
        id.etag
            .as_deref()
            .is_some_and(|etag| self.index().entries.contains(&entry_name(&id.key, etag)))
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

    /// Makes the complete, checked file at `data` (in this cache's filesystem) the entry
    /// of `record`: linked (or renamed, with `take`) into place, then its record written.
    fn publish(&self, data: &Path, record: &Record, take: bool) -> io::Result<()> {
        let name = entry_name(&record.key, &record.etag);
        if record.size > self.max_size {
            return Ok(());
        }
        self.evict(record.size);
        let path = self.data_path(&name);
        let _ = std::fs::remove_file(&path);
        if take {
            std::fs::rename(data, &path)?;
        } else {
            std::fs::hard_link(data, &path)?;
        }
        let text = serde_json::to_vec(record).map_err(io::Error::other)?;
        let tmp = self.dir.join("tmp").join(format!("{name}.json"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.record_path(&name))?;
        let mut index = self.index();
        if let Some(old) = index.entries.put(name, record.size) {
            index.bytes -= old;
        }
        index.bytes += record.size;
        drop(index);
        self.stats.fills.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the content a file uploaded through the mount was read from: `spool`,
    /// `size` bytes hashing to `sha256`, is now version `id` in the store. Linked, so the
    /// spool's own removal leaves the entry.
    pub fn adopt(&self, id: &ObjectId, spool: &Path, size: u64, sha256: &str) {
        let Some(etag) = id.etag.clone() else {
            return;
        };
        let record = Record {
            key: id.key.clone(),
            etag,
            size,
            sha256: Some(sha256.to_owned()),
        };
        if let Err(e) = self.publish(spool, &record, false) {
            tracing::debug!(key = %id.key, "not cached: {e}");
        }
    }

    /// Removes least recently used entries until `incoming` more bytes fit.
    fn evict(&self, incoming: u64) {
        loop {
            let name = {
                let mut index = self.index();
                if index.bytes + incoming <= self.max_size {
                    return;
                }
                let Some((name, size)) = index.entries.pop_lru() else {
                    return;
                };
                index.bytes -= size;
                name
            };
            // The record first: a data file without one is not an entry.
            let _ = std::fs::remove_file(self.record_path(&name));
            let _ = std::fs::remove_file(self.data_path(&name));
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            crate::metrics::object_cache_eviction();
        }
    }
}

/// The entries in `dir`: (name, size, last use), each with its record and a data file
/// of the recorded size. Data files without a record are deleted.
fn scan(dir: &Path) -> io::Result<Vec<(String, u64, std::time::SystemTime)>> {
    let mut found = Vec::new();
    let mut data = HashSet::new();
    let mut records = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let Some(name) = item.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        match name.strip_suffix(".json") {
            Some(stem) => records.push((stem.to_owned(), item.path())),
            None if item.file_type()?.is_file() => {
                data.insert(name);
            }
            None => {}
        }
    }
    for (name, path) in records {
        let record: Option<Record> = std::fs::read(&path)
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok());
        let meta = std::fs::metadata(dir.join(&name)).ok();
        let whole = record
            .as_ref()
            .zip(meta.as_ref())
            .is_some_and(|(r, m)| r.size == m.len() && entry_name(&r.key, &r.etag) == name);
        if !whole {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        data.remove(&name);
        let used = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        found.push((name, meta.map_or(0, |m| m.len()), used));
    }
    for orphan in data {
        let _ = std::fs::remove_file(dir.join(orphan));
    }
    Ok(found)
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
