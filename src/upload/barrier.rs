//! The barrier: [`Uploader::sync`] returns once every upload the journal listed at the
//! call is in the store, or has failed an attempt made for it; a runner calls it (as
//! `rgrid-mount sync`) before it reports an execution complete.

use super::Uploader;

/// An upload that did not reach the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncFailure {
    /// Its key.
    pub key: String,
    /// Why.
    pub error: String,
}

impl Uploader {
    /// Waits for every upload pending now: those nobody is sending are tried at once (not
    /// at the next retry), those a close or the write-back queue is sending are waited
    /// for, retries and all. Returns the ones that failed, with the reason of their last
    /// attempt; they stay journaled.
    pub async fn sync(&self) -> Vec<SyncFailure> {
        let wanted = self.journal.pending();
        self.retry_now();
        self.finish_pending().await;
        let mut failed = Vec::new();
        for entry in wanted {
            if let Err(error) = self.wait_for(&entry.spool).await {
                // Under the name it has now, if it was renamed meanwhile.
                let key = self.journal.get(&entry.spool).map_or(entry.key, |e| e.key);
                failed.push(SyncFailure { key, error });
            }
        }
        failed
    }

    /// [`Uploader::sync`] for the files directly under `prefix` (a directory's key
    /// prefix, ending in `/`; empty for the root): what fsync of a directory waits for.
    pub async fn sync_children(&self, prefix: &str) -> Vec<SyncFailure> {
        let child = |key: &str| key.strip_prefix(prefix).is_some_and(|n| !n.contains('/'));
        let mut failed = Vec::new();
        for entry in self.journal.pending().into_iter().filter(|e| child(&e.key)) {
            if let Err(error) = self.wait_for(&entry.spool).await {
                failed.push(SyncFailure {
                    key: entry.key,
                    error,
                });
            }
        }
        failed
    }
}
