//! `MultipartLedger`: the multipart uploads this daemon has started and not yet completed
//! or aborted, one small file each in `multipart/`. An upload the daemon could not abort
//! (the store unreachable, then an unmount or a crash) is aborted by the next daemon,
//! instead of holding its parts in the bucket until a lifecycle rule, if any, ends it.
//!
//! Mounts of one bucket share a cache directory, so a daemon adopts only the records of
//! daemons that are gone: each holds an flock on `<daemon>.lock` for its life, and a lock
//! that can be taken belongs to no one (the kernel drops it when its process dies, crash
//! or not). A record is `<daemon>.<upload>.json`; adopting it renames it to the adopter.
//!
//! Like the journal, a record is not synced: it outlives the daemon in the page cache, and
//! a power cut that loses one leaves an upload for the bucket's lifecycle rule.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifact;

/// A multipart upload started and not yet ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OpenUpload {
    pub key: String,
    pub upload_id: String,
}

/// This daemon's records of its open multipart uploads.
#[derive(Debug)]
pub(super) struct MultipartLedger {
    dir: PathBuf,
    daemon: String,
    /// Holds the flock on `<daemon>.lock` for as long as the daemon runs.
    _alive: File,
}

impl MultipartLedger {
    /// Opens the ledger in `dir` for this daemon, with the uploads it adopts from daemons
    /// that are gone: they are to be aborted.
    pub fn open(dir: PathBuf) -> io::Result<(MultipartLedger, Vec<OpenUpload>)> {
        std::fs::create_dir_all(&dir)?;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let daemon = format!("{}-{}", std::process::id(), since.as_nanos());
        let alive = File::create(dir.join(format!("{daemon}.lock")))?;
        if !try_lock(&alive)? {
            return Err(io::Error::other("ledger lock held by another daemon"));
        }
        let ledger = MultipartLedger {
            dir,
            daemon,
            _alive: alive,
        };
        let adopted = ledger.adopt()?;
        Ok((ledger, adopted))
    }

    /// Records `upload_id` of `key`, just started. A record that cannot be written costs
    /// only the abort after a restart: the upload goes on.
    pub fn started(&self, key: &str, upload_id: &str) {
        let upload = OpenUpload {
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
        };
        let written = serde_json::to_vec(&upload)
            .map_err(io::Error::other)
            .and_then(|json| std::fs::write(self.record(upload_id), json));
        if let Err(e) = written {
            tracing::warn!(key, "multipart upload not recorded: {e}");
        }
    }

    /// `upload_id` is completed or aborted: its record goes.
    pub fn ended(&self, upload_id: &str) {
        match std::fs::remove_file(self.record(upload_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!("multipart record not removed: {e}")
            }
            _ => {}
        }
    }

    fn record(&self, upload_id: &str) -> PathBuf {
        let id = artifact::hex(&Sha256::digest(upload_id.as_bytes())[..16]);
        self.dir.join(format!("{}.{id}.json", self.daemon))
    }

    /// Takes over the records of every daemon whose lock is free.
    fn adopt(&self) -> io::Result<Vec<OpenUpload>> {
        let mut adopted = Vec::new();
        for gone in self.gone_daemons()? {
            adopted.extend(self.adopt_from(&gone)?);
            // Its records are ours now; the lock file goes last, so that a crash before
            // leaves them for the next start.
            let _ = std::fs::remove_file(self.dir.join(format!("{gone}.lock")));
        }
        Ok(adopted)
    }

    /// Daemons with a lock file that no process holds.
    fn gone_daemons(&self) -> io::Result<Vec<String>> {
        let mut gone = Vec::new();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(daemon) = name.strip_suffix(".lock") else {
                continue;
            };
            if daemon == self.daemon {
                continue;
            }
            // Gone already: adopted by another daemon meanwhile.
            let Ok(lock) = File::open(entry.path()) else {
                continue;
            };
            if try_lock(&lock)? {
                gone.push(daemon.to_owned());
            }
        }
        Ok(gone)
    }

    /// Renames the records of daemon `gone` to this one's; the uploads they name.
    fn adopt_from(&self, gone: &str) -> io::Result<Vec<OpenUpload>> {
        let prefix = format!("{gone}.");
        let mut adopted = Vec::new();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || !name.ends_with(".json") {
                continue;
            }
            match read_record(&entry.path()) {
                Some(upload) => {
                    std::fs::rename(entry.path(), self.record(&upload.upload_id))?;
                    adopted.push(upload);
                }
                None => {
                    tracing::warn!(record = %entry.path().display(), "unreadable, removed");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(adopted)
    }
}

fn read_record(path: &Path) -> Option<OpenUpload> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Takes an exclusive flock on `file` without waiting: whether it was free.
fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_daemons_records_stay_and_a_gone_ones_are_adopted_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("multipart");
        let (first, adopted) = MultipartLedger::open(path.clone()).unwrap();
        assert!(adopted.is_empty());
        first.started("a.bin", "upload-1");
        first.started("b.bin", "upload-2");
        first.ended("upload-2");
        // A second mount of the bucket while the first runs: nothing to adopt.
        let (second, adopted) = MultipartLedger::open(path.clone()).unwrap();
        assert!(adopted.is_empty(), "{adopted:?}");
        drop(first);
        let (third, adopted) = MultipartLedger::open(path.clone()).unwrap();
        let a = OpenUpload {
            key: "a.bin".into(),
            upload_id: "upload-1".into(),
        };
        assert_eq!(adopted, vec![a]);
        // The record is the third's now: it survives it, and nobody adopts it twice.
        let (_fourth, again) = MultipartLedger::open(path.clone()).unwrap();
        assert!(again.is_empty());
        drop((second, third));
        let (_fifth, last) = MultipartLedger::open(path).unwrap();
        assert_eq!(last.len(), 1);
    }

    #[test]
    fn an_ended_upload_leaves_nothing_and_a_bad_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("multipart");
        let (ledger, _) = MultipartLedger::open(path.clone()).unwrap();
        ledger.started("k", "u");
        ledger.ended("u");
        ledger.ended("never-started");
        std::fs::write(path.join("1-1.lock"), "").unwrap();
        std::fs::write(path.join("1-1.bad.json"), "{not json").unwrap();
        drop(ledger);
        let (_next, adopted) = MultipartLedger::open(path.clone()).unwrap();
        assert!(adopted.is_empty());
        let left: Vec<_> = std::fs::read_dir(&path).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "only the live daemon's lock: {left:?}");
    }
}
