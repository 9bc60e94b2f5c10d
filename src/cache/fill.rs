//! A fill: what a reader receives from the store, written beside the cache by a thread
//! of its own and published as an entry once every byte has gone by and the content
//! checked out (its SHA-256 when it has one, else its length). The reader never waits on
//! it: past [`MAX_QUEUED`] bytes not yet written, the fill is dropped. Reads may come in
//! any order (the kernel's read-ahead reorders them); each is written where it belongs.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use bytes::Bytes;

use super::{entry_name, ObjectCache, Record};
use crate::object::ObjectId;

/// Bytes handed to the writer and not yet written, at most.
const MAX_QUEUED: usize = 64 << 20;

enum Msg {
    Data(u64, Bytes),
    /// Every byte is in: sync and publish.
    Seal,
}

/// The fill of one entry, fed by one reader.
#[derive(Debug)]
pub struct Fill {
    tx: Option<Sender<Msg>>,
    queued: Arc<AtomicUsize>,
    size: u64,
    /// Ranges written so far, start → end, merged.
    covered: BTreeMap<u64, u64>,
    key: String,
}

impl ObjectCache {
    /// A fill of version `id` (`size` bytes, hashing to `sha256` if known), unless the
    /// entry exists, is being filled, or cannot fit.
    pub fn start_fill(
        self: &Arc<Self>,
        id: &ObjectId,
        size: u64,
        sha256: Option<String>,
    ) -> Option<Fill> {
        let etag = id.etag.clone()?;
        if size == 0 || size > self.max_size / 2 {
            return None;
        }
        let name = entry_name(&id.key, &etag);
        {
            let mut index = self.index();
            if index.entries.contains(&name) || !index.filling.insert(name.clone()) {
                return None;
            }
        }
        let path = self.dir.join("tmp").join(&name);
        let file = match File::create(&path) {
            Ok(file) => file,
            Err(e) => {
                self.index().filling.remove(&name);
                tracing::debug!(key = %id.key, "no cache fill: {e}");
                return None;
            }
        };
        let record = Record {
            key: id.key.clone(),
            etag,
            size,
            sha256,
        };
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            cache: self.clone(),
            name,
            path,
            file,
            record,
            queued: queued.clone(),
        };
        std::thread::Builder::new()
            .name("rgrid-cache-fill".into())
            .spawn(move || writer.run(rx))
            .ok()?;
        Some(Fill {
            tx: Some(tx),
            queued,
            size,
            covered: BTreeMap::new(),
            key: id.key.clone(),
        })
    }
}

impl Fill {
    /// Takes the bytes a read at `offset` returned.
    pub fn feed(&mut self, offset: u64, data: &Bytes) {
        let Some(tx) = &self.tx else { return };
        if data.is_empty() {
            return;
        }
        let queued = self.queued.fetch_add(data.len(), Ordering::Relaxed) + data.len();
        if queued > MAX_QUEUED || tx.send(Msg::Data(offset, data.clone())).is_err() {
            tracing::debug!(key = %self.key, "cache fill dropped: the disk is behind");
            self.tx = None;
            return;
        }
        self.cover(offset, offset + data.len() as u64);
    }

    fn cover(&mut self, mut start: u64, mut end: u64) {
        let overlapping: Vec<(u64, u64)> = self
            .covered
            .range(..=end)
            .filter(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in overlapping {
            self.covered.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.covered.insert(start, end);
    }

    /// Whether every byte has been fed.
    pub fn is_whole(&self) -> bool {
        self.covered.get(&0).is_some_and(|end| *end >= self.size)
    }

    /// The content is whole and checked: publish it.
    pub fn seal(&mut self) {
        if let Some(tx) = self.tx.take() {
            if self.is_whole() {
                let _ = tx.send(Msg::Seal);
            }
        }
    }
}

/// The thread that writes a fill's bytes.
struct Writer {
    cache: Arc<ObjectCache>,
    name: String,
    path: PathBuf,
    file: File,
    record: Record,
    queued: Arc<AtomicUsize>,
}

impl Writer {
    fn run(self, rx: Receiver<Msg>) {
        let published = self.write_all(&rx);
        match published {
            Ok(true) => {}
            Ok(false) => {}
            Err(e) => tracing::debug!(key = %self.record.key, "cache fill failed: {e}"),
        }
        let _ = std::fs::remove_file(&self.path);
        self.cache.index().filling.remove(&self.name);
    }

    /// Writes until sealed (then publishes: true) or dropped (false).
    fn write_all(&self, rx: &Receiver<Msg>) -> std::io::Result<bool> {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Data(offset, data) => {
                    self.file.write_all_at(&data, offset)?;
                    self.queued.fetch_sub(data.len(), Ordering::Relaxed);
                }
                Msg::Seal => {
                    if self.file.metadata()?.len() != self.record.size {
                        return Ok(false);
                    }
                    self.file.sync_data()?;
                    self.cache.publish(&self.path, &self.record, true)?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}
