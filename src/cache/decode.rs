//! A decode target: the file a gzip decode writes its output to, placed in the cache's
//! `tmp/`, so that a decode that reaches its checked end becomes the object's decoded
//! entry without a copy (a hard link), and one that stops short leaves nothing behind.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Form, ObjectCache, Record};
use crate::object::ObjectId;

/// The decode file of one object version, to be published as its decoded entry.
#[derive(Debug)]
pub struct DecodeTarget {
    cache: Arc<ObjectCache>,
    /// The entry's name, reserved in the index's `filling` set until this is done.
    name: String,
    path: PathBuf,
    key: String,
    etag: String,
    /// Handed to the publishing thread, which cleans up instead.
    handed_off: bool,
}

impl ObjectCache {
    /// A new decode file for version `id` and its target, unless the entry exists, is
    /// being filled, fill slots are all taken, or `size` (when known) would not be kept.
    pub fn decode_target(
        self: &Arc<Self>,
        id: &ObjectId,
        size: Option<u64>,
    ) -> Option<(DecodeTarget, File)> {
        let etag = id.etag.clone()?;
        if size.is_some_and(|size| !self.fits(size)) {
            return None;
        }
        let name = super::entry_name(&id.key, &etag, Form::Decoded);
        {
            let mut index = self.index();
            if index.entries.contains(&name)
                || index.filling.len() >= super::MAX_FILLS
                || !index.filling.insert(name.clone())
            {
                return None;
            }
        }
        let target = DecodeTarget {
            cache: self.clone(),
            path: self.tmp_path(&name),
            name,
            key: id.key.clone(),
            etag,
            handed_off: false,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target.path);
        match file {
            Ok(file) => Some((target, file)),
            Err(e) => {
                tracing::debug!(key = %id.key, "decoding outside the cache: {e}");
                None
            }
        }
    }
}

impl DecodeTarget {
    /// The decode ended and checked out: `size` bytes hashing to `sha256`. Published by
    /// a thread of its own, so the reader that finished it never waits for the disk.
    pub fn publish(mut self, size: u64, sha256: String) {
        if !self.cache.fits(size) {
            return;
        }
        let record = Record {
            key: self.key.clone(),
            etag: self.etag.clone(),
            form: Form::Decoded,
            size,
            sha256: Some(sha256),
            boot: None,
            expires_at: None,
        };
        let (cache, path, name) = (self.cache.clone(), self.path.clone(), self.name.clone());
        let publish = move || {
            let published = cache.publish(&path, &record);
            if let Err(e) = published {
                tracing::warn!(key = %record.key, "not cached: {e}");
            }
            let _ = std::fs::remove_file(&path);
            cache.index().filling.remove(&name);
        };
        match self.cache.spawn_worker("rgrid-cache-decode", publish) {
            Ok(_) => self.handed_off = true,
            Err(e) => tracing::warn!(key = %self.key, "not cached: {e}"),
        }
    }
}

impl Drop for DecodeTarget {
    fn drop(&mut self) {
        if !self.handed_off {
            let _ = std::fs::remove_file(&self.path);
            self.cache.index().filling.remove(&self.name);
        }
    }
}
