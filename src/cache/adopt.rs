//! Adoption: a file written through the mount becomes its version's entry from the
//! spool its upload was read from, with no copy. The spool is linked into `tmp/` while
//! it still exists (the write engine removes it once the upload is in), and published
//! once the upload is confirmed and the version is still the file's: at once in
//! write-through mode, when the queue reports it in write-back mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Form, ObjectCache, Record};
use crate::object::ObjectId;

/// A spool's content linked under the cache's `tmp/`, waiting for its upload's
/// outcome. Dropped unpublished, the link goes.
#[derive(Debug)]
pub struct LinkedSpool {
    cache: Arc<ObjectCache>,
    tmp: PathBuf,
    /// Handed to the publishing thread, which removes the link instead.
    handed_off: bool,
}

impl ObjectCache {
    /// Links closed spool `spool` (its content final: no writer holds it) into the
    /// cache's `tmp/`, unless it is too big to keep.
    pub fn link_spool(self: &Arc<Self>, spool: &Path) -> Option<LinkedSpool> {
        let len = std::fs::metadata(spool).ok()?.len();
        if !self.fits(len) {
            return None;
        }
        let name = spool.file_name()?.to_string_lossy().into_owned();
        let tmp = self.tmp_path(&format!("spool-{name}"));
        if let Err(e) = std::fs::hard_link(spool, &tmp) {
            tracing::warn!(spool = %spool.display(), "not cached: {e}");
            return None;
        }
        Some(LinkedSpool {
            cache: self.clone(),
            tmp,
            handed_off: false,
        })
    }

    /// Takes the content a file uploaded through the mount was read from: `spool`,
    /// `size` bytes hashing to `sha256`, is now version `id` in `form` in the store.
    pub fn adopt(
        self: &Arc<Self>,
        id: &ObjectId,
        form: Form,
        spool: &Path,
        size: u64,
        sha256: &str,
    ) {
        if let Some(linked) = self.link_spool(spool) {
            linked.publish(id, form, size, sha256);
        }
    }
}

impl LinkedSpool {
    /// The upload is in: the content is version `id` in `form`, `size` bytes hashing to
    /// `sha256`. Published by a thread of its own (a release never waits for the disk);
    /// a link of another length is not published.
    pub fn publish(mut self, id: &ObjectId, form: Form, size: u64, sha256: &str) {
        let Some(etag) = id.etag.clone() else {
            return;
        };
        let record = Record {
            key: id.key.clone(),
            etag,
            form,
            size,
            sha256: Some(sha256.to_owned()),
            boot: None,
            expires_at: None,
        };
        let (cache, tmp) = (self.cache.clone(), self.tmp.clone());
        let publish = move || {
            let whole = std::fs::metadata(&tmp).map(|m| m.len() == record.size);
            let published = match whole {
                Ok(true) => cache.publish(&tmp, &record),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = published {
                tracing::warn!(key = %record.key, "not cached: {e}");
            }
            let _ = std::fs::remove_file(&tmp);
        };
        match self.cache.spawn_worker("rgrid-cache-adopt", publish) {
            Ok(_) => self.handed_off = true,
            Err(e) => tracing::warn!(key = %id.key, "not cached: {e}"),
        }
    }
}

impl Drop for LinkedSpool {
    fn drop(&mut self) {
        if !self.handed_off {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
