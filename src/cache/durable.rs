//! Durability of entries without a sync in the reader's path. An entry is published as
//! soon as its content is complete and checked, its data still in the page cache; its
//! record names the boot it was written in. A crash of the daemon loses nothing (the
//! kernel still has the pages); a crash of the machine may, so after a reboot a start
//! drops every entry whose record names another boot. A background pass syncs each
//! entry once the kernel's own writeback has had time to write it (the sync then costs
//! little), and rewrites its record without the boot: from then on it survives reboots.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{ObjectCache, Record};

/// How long an entry waits for its sync: past the kernel's 30 s dirty expiry, so that
/// the writeback is done by then.
const SYNC_AFTER: Duration = Duration::from_secs(35);

/// How often the background pass looks for entries to sync.
const TICK: Duration = Duration::from_secs(1);

/// This boot's id, if the kernel tells it.
pub(super) fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned()).filter(|id| !id.is_empty())
}

impl Record {
    /// Whether the entry may be served in boot `boot` (unknown: `None`): synced, or
    /// written in that boot.
    pub(super) fn serves_in(&self, boot: Option<&str>) -> bool {
        self.boot.is_none() || (boot.is_some() && self.boot.as_deref() == boot)
    }
}

/// Entries published and not yet synced, oldest first.
pub(super) type Unsynced = VecDeque<(Instant, String)>;

impl ObjectCache {
    /// Readies the record of the complete file `data` for publishing: stamped with this
    /// boot (synced later) or, when the boot cannot be told, synced now.
    pub(super) fn stamp(&self, data: &Path, record: &mut Record) -> io::Result<()> {
        match &self.boot {
            Some(boot) => record.boot = Some(boot.clone()),
            None => File::open(data)?.sync_data()?,
        }
        Ok(())
    }

    /// `name` was published unsynced.
    pub(super) fn published_unsynced(&self, name: String) {
        lock(&self.unsynced).push_back((Instant::now(), name));
    }

    /// Syncs the entries published at least `age` ago and clears their boot.
    pub(super) fn sync_older_than(&self, age: Duration) {
        loop {
            let name = {
                let mut unsynced = lock(&self.unsynced);
                match unsynced.front() {
                    Some((at, _)) if at.elapsed() >= age => unsynced.pop_front().map(|(_, n)| n),
                    _ => None,
                }
            };
            let Some(name) = name else {
                return;
            };
            if let Err(e) = self.make_durable(&name) {
                tracing::debug!(entry = %name, "not synced, kept for this boot only: {e}");
            }
        }
    }

    /// Syncs `name`'s data, then rewrites its record without the boot, unless the entry
    /// was evicted or replaced meanwhile.
    fn make_durable(&self, name: &str) -> io::Result<()> {
        let data = File::open(self.data_path(name))?;
        data.sync_data()?;
        let synced = data.metadata()?.ino();
        let index = self.index();
        if !index.entries.contains(name) || std::fs::metadata(self.data_path(name))?.ino() != synced
        {
            return Ok(());
        }
        let text = std::fs::read(self.record_path(name))?;
        let mut record: Record = serde_json::from_slice(&text).map_err(io::Error::other)?;
        record.boot = None;
        self.write_record(name, &record)?;
        drop(index);
        Ok(())
    }

    /// Starts the background pass; it ends with the cache.
    pub(super) fn start_syncer(self: &Arc<Self>) {
        let cache: Weak<ObjectCache> = Arc::downgrade(self);
        let pass = move || loop {
            std::thread::sleep(TICK);
            match cache.upgrade() {
                Some(cache) => cache.sync_older_than(SYNC_AFTER),
                None => return,
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("rgrid-cache-sync".into())
            .spawn(pass)
        {
            tracing::warn!("no cache sync thread: entries last until the next reboot only: {e}");
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
