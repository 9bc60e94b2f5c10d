//! A fill: what a reader receives from the store, written beside the cache by a thread
//! of its own and published as an entry once every byte has gone by and the content
//! checked out (its SHA-256 when it has one, else its length). A fill starts with the
//! first read near the start (an open that reads nothing, or only the end, costs nothing),
//! at most [`MAX_FILLS`] at once. Past [`MAX_QUEUED`] bytes of all fills not yet written
//! the reader waits for the disk, briefly: a fill that cannot keep up is dropped. Reads
//! may come in any order
//! (the kernel's read-ahead reorders them); each is written where it belongs.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use bytes::Bytes;

use super::{Form, ObjectCache, Record, MAX_FILLS, MAX_QUEUED};
use crate::object::ObjectId;

/// The longest a reader waits for room in the fill queue before the fill is dropped.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A fill starts with a read this close to the start of the file.
const START_WITHIN: u64 = 8 << 20;

enum Msg {
    Data(u64, Bytes),
    /// Every byte is in: publish.
    Seal,
}

/// Where a fill stands.
#[derive(Debug)]
enum State {
    /// No byte yet: starts at a read of offset 0.
    Waiting,
    /// Its thread writes what it is sent.
    Running(Sender<Msg>),
    /// Sealed, dropped or never started: takes nothing more.
    Over,
}

/// The fill of one entry, fed by one reader.
#[derive(Debug)]
pub struct Fill {
    cache: Arc<ObjectCache>,
    record: Record,
    state: State,
    /// Ranges written so far, start → end, merged.
    covered: BTreeMap<u64, u64>,
}

impl ObjectCache {
    /// A fill of version `id` in `form` (`size` bytes, hashing to `sha256` if known),
    /// unless the entry exists or would not be kept.
    pub fn start_fill(
        self: &Arc<Self>,
        id: &ObjectId,
        form: Form,
        size: u64,
        sha256: Option<String>,
    ) -> Option<Fill> {
        let record = Record {
            key: id.key.clone(),
            etag: id.etag.clone()?,
            form,
            size,
            sha256,
            boot: None,
            expires_at: None,
        };
        if !self.fits(size) || self.index().entries.contains(&record.name()) {
            return None;
        }
        Some(Fill {
            cache: self.clone(),
            record,
            state: State::Waiting,
            covered: BTreeMap::new(),
        })
    }
}

impl Fill {
    /// Takes the bytes a read at `offset` returned. Past `MAX_QUEUED` bytes queued the
    /// reader waits for the fill threads to catch up (the copy to disk then costs it the
    /// time the disk or the CPU lacks), `MAX_WAIT` at most: a disk that is stuck drops
    /// the fill, never the read.
    pub async fn feed(&mut self, offset: u64, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        if matches!(self.state, State::Waiting) {
            // Near the start: the kernel's first reads of a file may come in any order.
            self.state = if offset < START_WITHIN {
                self.start()
            } else {
                State::Over
            };
        }
        let State::Running(tx) = &self.state else {
            return;
        };
        let tx = tx.clone();
        let (cache, len) = (self.cache.clone(), data.len() as u64);
        let fits = || cache.queued.load(Ordering::Relaxed) + len <= MAX_QUEUED as u64;
        let room = tokio::time::timeout(MAX_WAIT, async {
            while !fits() {
                let drained = cache.drained.notified();
                if fits() {
                    break;
                }
                drained.await;
            }
        });
        let mut sent = room.await.is_ok();
        if sent {
            cache.queued.fetch_add(len, Ordering::Relaxed);
            sent = tx.send(Msg::Data(offset, data.clone())).is_ok();
            if !sent {
                cache.queued.fetch_sub(len, Ordering::Relaxed);
            }
        }
        if !sent {
            tracing::debug!(key = %self.record.key, "cache fill dropped: the disk is behind");
            self.state = State::Over;
            return;
        }
        self.cover(offset, offset + data.len() as u64);
    }

    /// The writer thread, if a slot is free and the entry is not being filled.
    fn start(&self) -> State {
        let name = self.record.name();
        {
            let mut index = self.cache.index();
            if index.filling.len() >= MAX_FILLS || !index.filling.insert(name.clone()) {
                return State::Over;
            }
        }
        let path = self.cache.tmp_path(&name);
        let file = File::options().write(true).create_new(true).open(&path);
        let (tx, rx) = mpsc::channel();
        let writer = file.map(|file| Writer {
            cache: self.cache.clone(),
            name: name.clone(),
            path: path.clone(),
            file,
            record: self.record.clone(),
        });
        let spawned = writer.and_then(|writer| {
            (self.cache).spawn_worker("rgrid-cache-fill", move || writer.run(rx))
        });
        match spawned {
            Ok(_) => State::Running(tx),
            Err(e) => {
                tracing::debug!(key = %self.record.key, "no cache fill: {e}");
                let _ = std::fs::remove_file(&path);
                self.cache.index().filling.remove(&name);
                State::Over
            }
        }
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

    /// Whether it has bytes and takes more: started, not sealed or dropped.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// Whether every byte has been fed.
    pub fn is_whole(&self) -> bool {
        self.covered
            .get(&0)
            .is_some_and(|end| *end >= self.record.size)
    }

    /// The content is whole and checked: publish it.
    pub fn seal(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Over);
        if let State::Running(tx) = state {
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
}

impl Writer {
    fn run(self, rx: Receiver<Msg>) {
        if let Err(e) = self.write_all(&rx) {
            tracing::warn!(key = %self.record.key, "cache fill failed: {e}");
        }
        // What was never written is no longer queued.
        let left: u64 = rx
            .try_iter()
            .map(|m| match m {
                Msg::Data(_, data) => data.len() as u64,
                Msg::Seal => 0,
            })
            .sum();
        self.cache.queued.fetch_sub(left, Ordering::Relaxed);
        self.cache.drained.notify_waiters();
        let _ = std::fs::remove_file(&self.path);
        self.cache.index().filling.remove(&self.name);
    }

    /// Writes until sealed (then publishes) or dropped.
    fn write_all(&self, rx: &Receiver<Msg>) -> std::io::Result<()> {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Data(offset, data) => {
                    let written = self.file.write_all_at(&data, offset);
                    let len = data.len() as u64;
                    self.cache.queued.fetch_sub(len, Ordering::Relaxed);
                    self.cache.drained.notify_waiters();
                    written?;
                }
                Msg::Seal => {
                    if self.file.metadata()?.len() != self.record.size {
                        return Ok(());
                    }
                    return self.cache.publish(&self.path, &self.record);
                }
            }
        }
        Ok(())
    }
}
