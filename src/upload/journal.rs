//! `UploadJournal`: one small file per pending upload in `journal/`, written before its
//! upload starts and removed once the object is in the store.
//!
//! An entry survives the daemon's death as written (the page cache outlives the process);
//! it is synced to disk only when its upload fails, which is when the caller is told its
//! data lives here: a successful upload needs no local durability, the store has the
//! bytes. The directory is read once, at start; after that an index in memory answers
//! every question (by spool, by key, oldest first), so that 10,000 pending files cost no
//! directory scan per operation.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::object::ObjectHeaders;

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
    /// Order of recording, across restarts: of two entries of one key, the later one is
    /// the content the key is to have, and the earlier one is never sent.
    #[serde(default)]
    pub seq: u64,
}

impl JournalEntry {
    /// The headers the object goes up with.
    pub(super) fn headers(&self) -> ObjectHeaders {
        let mut headers = super::headers_for(&self.key, Some(&self.sha256));
        let extra = self.metadata.iter().map(|(k, v)| (k.clone(), v.clone()));
        headers.user_metadata.extend(extra);
        headers
    }
}

/// The journal directory and its index.
#[derive(Debug)]
pub struct UploadJournal {
    dir: PathBuf,
    index: Mutex<Index>,
    next_seq: AtomicU64,
}

/// The entries by spool, and each key's entries in order.
#[derive(Debug, Default)]
struct Index {
    by_spool: HashMap<PathBuf, JournalEntry>,
    by_key: HashMap<String, BTreeMap<u64, PathBuf>>,
}

impl Index {
    fn insert(&mut self, entry: JournalEntry) {
        self.remove(&entry.spool);
        let spools = self.by_key.entry(entry.key.clone()).or_default();
        spools.insert(entry.seq, entry.spool.clone());
        self.by_spool.insert(entry.spool.clone(), entry);
    }

    fn remove(&mut self, spool: &Path) {
        let Some(old) = self.by_spool.remove(spool) else {
            return;
        };
        if let Some(spools) = self.by_key.get_mut(&old.key) {
            spools.remove(&old.seq);
            if spools.is_empty() {
                self.by_key.remove(&old.key);
            }
        }
    }
}

impl UploadJournal {
    /// The journal in `dir` (created if needed), with every entry a previous daemon left.
    pub fn open(dir: PathBuf) -> io::Result<UploadJournal> {
        std::fs::create_dir_all(&dir)?;
        let entries = read_entries(&dir)?;
        let last = entries.values().map(|e| e.seq).max().unwrap_or(0);
        let next_seq = AtomicU64::new(last.max(now_nanos()) + 1);
        let mut index = Index::default();
        // Entries of a daemon that kept no order (seq 0) get one, by their file's mtime.
        let mut entries: Vec<(PathBuf, JournalEntry)> = entries.into_iter().collect();
        entries.sort_by_key(|(path, e)| (e.seq, modified(path)));
        for (i, (_, mut entry)) in entries.into_iter().enumerate() {
            if entry.seq == 0 {
                entry.seq = i as u64 + 1;
            }
            index.insert(entry);
        }
        // Of one key, only the latest is the file's content; an older one left by a
        // crash right after its successor was recorded is dropped, never sent after it.
        let superseded: Vec<JournalEntry> = (index.by_spool.values())
            .filter(|e| index.by_key[&e.key].keys().next_back() != Some(&e.seq))
            .cloned()
            .collect();
        for entry in superseded {
            let path = dir.join(entry_name(&entry.spool));
            if std::fs::remove_file(path).is_ok() {
                let _ = std::fs::remove_file(&entry.spool);
                index.remove(&entry.spool);
            }
        }
        Ok(UploadJournal {
            dir,
            index: Mutex::new(index),
            next_seq,
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry_path(&self, spool: &Path) -> PathBuf {
        self.dir.join(entry_name(spool))
    }

    /// Records `entry` (replacing one of the same spool), whole or not at all; not yet
    /// synced. Returns it with its place in the order. A first entry is one write to a
    /// new file, which a killed daemon leaves whole or empty (an empty one is set aside,
    /// and its close was never answered); a replacement goes through a temp file and a
    /// rename, so that the entry it replaces stays until the new one is whole.
    pub fn record(&self, mut entry: JournalEntry) -> io::Result<JournalEntry> {
        entry.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.entry_path(&entry.spool);
        let bytes = serde_json::to_vec(&entry)?;
        let new = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        match new {
            Ok(mut file) => io::Write::write_all(&mut file, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let tmp = path.with_extension("tmp");
                io::Write::write_all(&mut File::create(&tmp)?, &bytes)?;
                std::fs::rename(&tmp, &path)?;
            }
            Err(e) => return Err(e),
        }
        self.index().insert(entry.clone());
        Ok(entry)
    }

    /// Makes the entry of `spool` survive a power cut (its file, then the directory
    /// that names it).
    pub fn sync(&self, spool: &Path) -> io::Result<()> {
        File::open(self.entry_path(spool))?.sync_all()?;
        File::open(&self.dir)?.sync_all()
    }

    /// Forgets the upload of `spool`: it is in the store, or will never be sent.
    pub fn remove(&self, spool: &Path) -> io::Result<()> {
        let mut index = self.index();
        match std::fs::remove_file(self.entry_path(spool)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => {
                index.remove(spool);
                Ok(())
            }
        }
    }

    /// Forgets the upload of `spool` if its entry is still the one recorded as `seq`
    /// (not recorded again since, with new attributes or a new key).
    pub fn remove_if_seq(&self, spool: &Path, seq: u64) -> io::Result<()> {
        let mut index = self.index();
        if index.by_spool.get(spool).map(|e| e.seq) != Some(seq) {
            return Ok(());
        }
        match std::fs::remove_file(self.entry_path(spool)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => {
                index.remove(spool);
                Ok(())
            }
        }
    }

    /// Records `entry` again (new attributes for a queued upload) if it is still as
    /// recorded and the latest of its key: one step under the index's lock, so that it
    /// never becomes newer than a version of its key closed meanwhile. The new place in
    /// the order tells an upload in flight of the old record that it must go again.
    pub fn rewrite(&self, mut entry: JournalEntry) -> io::Result<bool> {
        let mut index = self.index();
        let latest = index
            .by_key
            .get(&entry.key)
            .and_then(|s| s.keys().next_back());
        let current = index.by_spool.get(&entry.spool).map(|e| e.seq);
        if current != Some(entry.seq) || latest != Some(&entry.seq) {
            return Ok(false);
        }
        entry.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.entry_path(&entry.spool);
        let tmp = path.with_extension("tmp");
        io::Write::write_all(&mut File::create(&tmp)?, &serde_json::to_vec(&entry)?)?;
        std::fs::rename(&tmp, &path)?;
        index.insert(entry);
        Ok(true)
    }

    /// Keeps the entry of a damaged spool as `.damaged`, out of the retries.
    pub fn set_aside(&self, spool: &Path) -> io::Result<()> {
        let path = self.entry_path(spool);
        std::fs::rename(&path, path.with_extension("damaged"))?;
        self.index().remove(spool);
        Ok(())
    }

    /// The pending upload of `spool`, if any.
    pub fn get(&self, spool: &Path) -> Option<JournalEntry> {
        self.index().by_spool.get(spool).cloned()
    }

    /// Whether an upload of `spool` is pending.
    pub fn contains(&self, spool: &Path) -> bool {
        self.index().by_spool.contains_key(spool)
    }

    /// Every pending upload, oldest first.
    pub fn pending(&self) -> Vec<JournalEntry> {
        let mut all: Vec<JournalEntry> = self.index().by_spool.values().cloned().collect();
        all.sort_by_key(|e| e.seq);
        all
    }

    /// The pending uploads of `key`, oldest first.
    pub fn of_key(&self, key: &str) -> Vec<JournalEntry> {
        let index = self.index();
        let Some(spools) = index.by_key.get(key) else {
            return Vec::new();
        };
        let entries = spools.values().filter_map(|s| index.by_spool.get(s));
        entries.cloned().collect()
    }

    /// Whether `entry`'s spool still holds the content its key is to have: no entry of
    /// another spool recorded for the key since. (Its own record made again, with new
    /// attributes, is the same content.)
    pub fn holds_latest(&self, entry: &JournalEntry) -> bool {
        let index = self.index();
        let latest = index
            .by_key
            .get(&entry.key)
            .and_then(|s| s.values().next_back());
        latest == Some(&entry.spool)
    }

    /// Whether no upload is pending.
    pub fn is_empty(&self) -> bool {
        self.index().by_spool.is_empty()
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The file name of the entry of `spool`.
fn entry_name(spool: &Path) -> String {
    let name = spool.file_name().map(|n| n.to_string_lossy().into_owned());
    format!("{}.json", name.unwrap_or_default())
}

fn now_nanos() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The entries in `dir`. An unreadable one is set aside as `.torn`, with a log line
/// naming it: entries are synced only when an upload fails, so a torn one (a power cut
/// after its rename reached the disk, before its bytes did) belongs to a close that was
/// never answered, or to an upload that had succeeded.
fn read_entries(dir: &Path) -> io::Result<BTreeMap<PathBuf, JournalEntry>> {
    let mut entries = BTreeMap::new();
    for item in std::fs::read_dir(dir)?.flatten() {
        let path = item.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match std::fs::read(&path).map(|b| serde_json::from_slice::<JournalEntry>(&b)) {
            Ok(Ok(entry)) => {
                entries.insert(path, entry);
            }
            Ok(Err(_)) => {
                let torn = path.with_extension("torn");
                let _ = std::fs::rename(&path, &torn);
                tracing::error!(entry = %torn.display(), "unreadable journal entry set aside; its spool, if any, is kept")
            }
            Err(e) => tracing::warn!(entry = %path.display(), "journal entry not read: {e}"),
        }
    }
    Ok(entries)
}
