//! The barrier: [`Uploader::sync`] returns once every upload the journal listed at the
//! call is in the store, or has failed an attempt made for it; a runner calls it (as
//! `rgrid-mount sync`) before it reports an execution complete.

use std::time::Duration;

use super::{UploadState, Uploader};

/// An upload that did not reach the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncFailure {
    /// Its key.
    pub key: String,
    /// Why.
    pub error: String,
}

/// How often the barrier looks again at uploads still in flight.
const POLL: Duration = Duration::from_millis(50);

impl Uploader {
    /// Waits for every upload pending now: those no writer holds are tried at once (not
    /// at the next retry), those a close is sending are waited for. Returns the ones
    /// that failed, with the reason of their last attempt; they stay journaled.
    pub async fn sync(&self) -> Vec<SyncFailure> {
        let wanted = self.journal.pending();
        self.finish_pending().await;
        loop {
            let mut failed = Vec::new();
            let mut waiting = false;
            for entry in &wanted {
                match self.board.state_of(&entry.spool) {
                    Some(UploadState::Committed) => {}
                    Some(UploadState::Failed(error)) => failed.push(SyncFailure {
                        key: entry.key.clone(),
                        error,
                    }),
                    Some(UploadState::Uploading) => waiting = true,
                    // Not tried by this daemon: done if the journal no longer has it.
                    None if !self.journal.contains(&entry.spool) => {}
                    None => failed.push(SyncFailure {
                        key: entry.key.clone(),
                        error: "pending, never attempted by this daemon".into(),
                    }),
                }
            }
            if !waiting {
                return failed;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
