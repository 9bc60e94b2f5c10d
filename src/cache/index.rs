//! The cache's index: what it holds, in memory, loaded from the records at start.
//! Entries are kept least recently used first; an entry whose object the store has
//! deleted by now (its expiry, noted when it was opened) is the first to go.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use lru::LruCache;

use super::Record;

/// One entry: its size, and when its object expires (Unix seconds), if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) size: u64,
    pub(super) expires_at: Option<u64>,
}

/// Expiries noted for versions not yet in the cache, at most: past it, the oldest
/// notes go (a note only orders eviction).
const MAX_NOTES: usize = 4096;

/// What the cache holds, least recently used first.
#[derive(Debug)]
pub(super) struct Index {
    pub(super) entries: LruCache<String, Entry>,
    pub(super) bytes: u64,
    /// Entries being filled: one fill per entry at a time.
    pub(super) filling: HashSet<String>,
    /// Expiries of versions opened but not cached yet, for their records.
    pub(super) expiring: HashMap<String, u64>,
}

impl Index {
    /// The entries whose records in `dir` are whole and may be served in boot `boot`,
    /// oldest use first; everything else (half fills, data without a record, records
    /// of another boot never synced) is deleted.
    pub(super) fn load(dir: &Path, boot: Option<&str>) -> io::Result<Index> {
        let mut found = scan(dir, boot)?;
        found.sort_by_key(|(_, _, used)| *used);
        let mut index = Index {
            entries: LruCache::unbounded(),
            bytes: 0,
            filling: HashSet::new(),
            expiring: HashMap::new(),
        };
        for (name, entry, _) in found {
            index.insert(name, entry);
        }
        Ok(index)
    }

    pub(super) fn insert(&mut self, name: String, entry: Entry) {
        self.expiring.remove(&name);
        self.bytes += entry.size;
        if let Some(old) = self.entries.put(name, entry) {
            self.bytes -= old.size;
        }
    }

    pub(super) fn remove(&mut self, name: &str) -> Option<Entry> {
        let entry = self.entries.pop(name)?;
        self.bytes -= entry.size;
        Some(entry)
    }

    /// `name`'s object expires at `at` (Unix seconds).
    pub(super) fn note_expiry(&mut self, name: String, at: u64) {
        if let Some(entry) = self.entries.peek_mut(&name) {
            entry.expires_at = Some(at);
            return;
        }
        if self.expiring.len() >= MAX_NOTES {
            self.expiring.clear();
        }
        self.expiring.insert(name, at);
    }

    /// Takes out the entry to evict next: the least recently used of those whose object
    /// has expired by `now`, else the least recently used.
    pub(super) fn take_victim(&mut self, now: SystemTime) -> Option<String> {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let expired = (self.entries.iter().rev())
            .find(|(_, e)| e.expires_at.is_some_and(|at| at <= now))
            .map(|(name, _)| name.clone());
        let name = match expired {
            Some(name) => name,
            None => self.entries.peek_lru()?.0.clone(),
        };
        self.remove(&name)?;
        Some(name)
    }
}

/// The entries in `dir`: (name, entry, last use), each with its record and a data file
/// of the recorded size, synced or written in boot `boot`. Data files without such a
/// record are deleted.
fn scan(dir: &Path, boot: Option<&str>) -> io::Result<Vec<(String, Entry, SystemTime)>> {
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
            .filter(|(r, m)| r.size == m.len() && r.name() == name && r.serves_in(boot));
        let Some((record, _)) = whole else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        data.remove(&name);
        let used = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        let entry = Entry {
            size: record.size,
            expires_at: record.expires_at,
        };
        found.push((name, entry, used));
    }
    for orphan in data {
        let _ = std::fs::remove_file(dir.join(orphan));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64, expires_at: Option<u64>) -> Entry {
        Entry { size, expires_at }
    }

    #[test]
    fn expired_entries_go_first_then_the_least_recently_used() {
        let mut index = Index::load(tempfile::tempdir().unwrap().path(), None).unwrap();
        index.insert("old".into(), entry(10, None));
        index.insert("expired-later-used".into(), entry(20, Some(100)));
        index.insert("not-yet".into(), entry(30, Some(1_000)));
        index.insert("fresh".into(), entry(40, None));
        assert_eq!(index.bytes, 100);
        let at = |secs| UNIX_EPOCH + std::time::Duration::from_secs(secs);
        assert_eq!(
            index.take_victim(at(500)).as_deref(),
            Some("expired-later-used")
        );
        assert_eq!(index.take_victim(at(500)).as_deref(), Some("old"));
        index.note_expiry("fresh".into(), 400);
        assert_eq!(index.take_victim(at(500)).as_deref(), Some("fresh"));
        assert_eq!(index.take_victim(at(500)).as_deref(), Some("not-yet"));
        assert_eq!(index.take_victim(at(500)), None);
        assert_eq!(index.bytes, 0);
        index.note_expiry("coming".into(), 7);
        index.insert("coming".into(), entry(1, None));
        assert!(
            index.expiring.is_empty(),
            "taken up by the record at publish"
        );
    }
}
