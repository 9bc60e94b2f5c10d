//! Renaming a directory with objects under it: the store has no such operation, so each
//! object is copied server-side to its new key and then deleted, as s3fs and rclone do.
//!
//! A rename is journaled before its first copy (`moves/`, synced: it is a promise made
//! to the caller once it returns, and its steps are many): the old and new prefixes and
//! every key it moves. A crash in the middle leaves each object under its old name or
//! its new one, never neither (a copy comes before its delete), and the next start
//! finishes the list. Uploads still pending under the old prefix are moved to the new
//! one first, so nothing lands under the old name after the listing; the objects they
//! replace are journaled with the rest, and deleted last.
//!
//! The work is bounded ([`TreeLimits`]): past it the rename is refused with EXDEV, and
//! `mv` copies the tree itself.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{JournalEntry, UploadError, Uploader};
use crate::object::{ObjectError, ObjectId, ObjectMeta, MAX_COPY_SIZE};

/// The most a directory rename moves; more is refused (EXDEV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Objects under the directory.
    pub objects: usize,
    /// Their bytes together.
    pub bytes: u64,
}

impl TreeLimits {
    /// 10,000 objects and 10 GiB: a minute or so of server-side copies on MinIO.
    pub const DEFAULT: TreeLimits = TreeLimits {
        objects: 10_000,
        bytes: 10 << 30,
    };
}

/// Why a directory was not renamed.
#[derive(Debug, thiserror::Error)]
pub enum TreeMoveError {
    /// Larger than [`TreeLimits`], or holding an object S3 cannot copy (over 5 GiB).
    #[error("{prefix}: too large to rename in the store")]
    TooLarge {
        /// The directory's prefix.
        prefix: String,
    },
    /// Listing, copying or deleting failed; what was moved stays moved, the rest stays,
    /// and the journal finishes it.
    #[error(transparent)]
    Upload(#[from] UploadError),
}

/// One directory rename, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TreeMove {
    from: String,
    to: String,
    /// Keys under `from`, without it. Each moves whatever version it has when its turn
    /// comes (a file rewritten meanwhile is still that file).
    names: Vec<String>,
    /// Objects under `from` whose files have an upload pending, moved to `to` with the
    /// journal: older content, deleted once the copies are done (absent from records
    /// written before it existed).
    #[serde(default)]
    superseded: Vec<SupersededObject>,
}

/// An object a pending upload replaces: it is deleted as the version listed, and kept
/// if it is another (written since, by someone else).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SupersededObject {
    key: String,
    etag: Option<String>,
}

/// An object a directory rename carried, copied from the version the rename listed:
/// a file being written here that was that version is now the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedVersion {
    /// Its new key.
    pub key: String,
    /// The version it was under its old key.
    pub was: String,
    /// The copy's ETag.
    pub etag: Option<String>,
}

/// Copies and deletes in flight at once.
const MOVES_AT_ONCE: usize = 8;

impl Uploader {
    fn moves_dir(&self) -> PathBuf {
        self.config.cache_dir.join("moves")
    }

    /// Renames directory prefix `from` (ending in `/`) to `to`: every object under it,
    /// and every pending upload. Returns the objects moved as the versions listed.
    pub async fn move_tree(
        &self,
        from: &str,
        to: &str,
        limits: TreeLimits,
    ) -> Result<Vec<MovedVersion>, TreeMoveError> {
        let pending = self.move_pending(from, to).await?;
        let objects = self.objects_under(from, limits).await?;
        let mut plan = TreeMove {
            from: from.to_owned(),
            to: to.to_owned(),
            names: Vec::new(),
            superseded: Vec::new(),
        };
        let mut listed = HashMap::new();
        for object in objects {
            // A file with an upload pending has newer content than its object: that
            // upload lands under the new name, and a copy of the old object must not.
            if pending.contains(&object.key) {
                let (key, etag) = (object.key, object.etag);
                plan.superseded.push(SupersededObject { key, etag });
                continue;
            }
            let Some(name) = object.key.strip_prefix(from) else {
                continue;
            };
            if let Some(etag) = object.etag {
                listed.insert(name.to_owned(), etag);
            }
            plan.names.push(name.to_owned());
        }
        let _pass = self.moving.lock().await;
        let path = self.record_move(&plan)?;
        let moved = self.carry_out(&plan, &listed).await?;
        std::fs::remove_file(path).map_err(UploadError::Io)?;
        Ok(moved)
    }

    /// Finishes the directory renames left half done: by a previous daemon, or by a
    /// failure midway (the caller got EIO; the directory then appears under its new name
    /// once this is done, rather than split between the two).
    pub async fn finish_moves(&self) -> Result<(), UploadError> {
        // Not beside a rename in progress: its plan is its own to carry out.
        let _pass = self.moving.lock().await;
        let Ok(dir) = std::fs::read_dir(self.moves_dir()) else {
            return Ok(());
        };
        for item in dir.flatten() {
            let path = item.path();
            let Ok(plan) = serde_json::from_slice::<TreeMove>(&std::fs::read(&path)?) else {
                tracing::error!(path = %path.display(), "unreadable directory-rename record left as it is");
                continue;
            };
            tracing::info!(from = %plan.from, to = %plan.to, "finishing an interrupted directory rename");
            self.carry_out(&plan, &HashMap::new()).await?;
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// Journal entries of keys under `from` now name the same file under `to`. Returns
    /// the old keys whose uploads were moved: their objects are older content.
    async fn move_pending(&self, from: &str, to: &str) -> Result<HashSet<String>, UploadError> {
        let mut moved = HashSet::new();
        let under: Vec<JournalEntry> = (self.journal.pending().into_iter())
            .filter(|e| e.key.starts_with(from))
            .collect();
        for entry in under {
            let key = format!("{to}{}", &entry.key[from.len()..]);
            let _held = self.key_locks.lock_both(&entry.key, &key).await;
            // Sent meanwhile (then it is in the listing to come), or moved already.
            let Some(current) = self.journal.get(&entry.spool) else {
                continue;
            };
            if current.key == entry.key {
                self.journal.record(JournalEntry { key, ..current })?;
                moved.insert(entry.key);
            }
        }
        Ok(moved)
    }

    /// Every object under `from`, or `TooLarge` past `limits`.
    async fn objects_under(
        &self,
        from: &str,
        limits: TreeLimits,
    ) -> Result<Vec<ObjectMeta>, TreeMoveError> {
        let too_large = || TreeMoveError::TooLarge {
            prefix: from.to_owned(),
        };
        let (mut found, mut bytes, mut dirs) = (Vec::new(), 0u64, vec![from.to_owned()]);
        while let Some(prefix) = dirs.pop() {
            let mut token = None;
            loop {
                let page = self.client.list_page(&prefix, token.as_deref(), None);
                let page = page.await.map_err(UploadError::from)?;
                for object in page.objects {
                    bytes = bytes.saturating_add(object.size);
                    if object.size > MAX_COPY_SIZE {
                        return Err(too_large());
                    }
                    found.push(object);
                }
                dirs.extend(page.prefixes);
                if found.len() > limits.objects || bytes > limits.bytes {
                    return Err(too_large());
                }
                token = page.next_token;
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(found)
    }

    fn record_move(&self, plan: &TreeMove) -> Result<PathBuf, UploadError> {
        let dir = self.moves_dir();
        std::fs::create_dir_all(&dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("{nanos:x}.json"));
        let file = std::fs::File::create(&path)?;
        serde_json::to_writer(&file, plan).map_err(std::io::Error::other)?;
        file.sync_all()?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(path)
    }

    /// Copies then deletes each object of `plan`, a few at a time; one gone from the old
    /// name already (moved before a crash) is skipped. Those `listed` (name → ETag) move
    /// as that version if they still are; the others as they are now. Then the objects
    /// it supersedes go.
    async fn carry_out(
        &self,
        plan: &TreeMove,
        listed: &HashMap<String, String>,
    ) -> Result<Vec<MovedVersion>, UploadError> {
        let moves = plan.names.iter().map(|name| {
            let from = format!("{}{name}", plan.from);
            let was = listed.get(name).cloned();
            (from, format!("{}{name}", plan.to), was)
        });
        let moved = futures::stream::iter(moves.collect::<Vec<_>>())
            .map(|(from, to, was)| self.move_one(from, to, was))
            .buffer_unordered(MOVES_AT_ONCE)
            .try_collect::<Vec<Option<MovedVersion>>>()
            .await?;
        for object in &plan.superseded {
            self.delete_superseded(object).await?;
        }
        Ok(moved.into_iter().flatten().collect())
    }

    /// Deletes `object` if its key still holds the version listed; an object written
    /// there since is someone's newer file, and stays.
    async fn delete_superseded(&self, object: &SupersededObject) -> Result<(), UploadError> {
        let _held = self.key_locks.lock(&object.key).await;
        let now = match self.client.head(&object.key).await {
            Ok(info) => info.meta.etag,
            Err(ObjectError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if object.etag.is_some() && now != object.etag {
            tracing::info!(key = %object.key, "written since a directory rename listed it: kept");
            return Ok(());
        }
        Ok(self.client.delete_if_exists(&object.key).await?)
    }

    /// Moves the object at `from` to `to`: as version `was` if it still is, else
    /// whatever version it has now; one gone already is done.
    async fn move_one(
        &self,
        from: String,
        to: String,
        was: Option<String>,
    ) -> Result<Option<MovedVersion>, UploadError> {
        let _held = self.key_locks.lock_both(&from, &to).await;
        if let Some(was) = was {
            let pinned = ObjectId::new(from.clone(), Some(was.clone()));
            match self.client.move_object(&pinned, &to).await {
                Ok(etag) => return Ok(Some(MovedVersion { key: to, was, etag })),
                Err(ObjectError::PreconditionFailed { .. }) => {} // rewritten since
                Err(ObjectError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let id = ObjectId::new(from, None);
        match self.client.move_object(&id, &to).await {
            Err(ObjectError::NotFound { .. }) => Ok(None),
            other => Ok(other.map(|_| None)?),
        }
    }
}
