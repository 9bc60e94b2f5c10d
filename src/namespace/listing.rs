//! Directory listings: every page of a delimited LIST, with the entries this mount made
//! merged in, objects past a lifecycle rule left out, and a HEAD per file for small directories.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::lookup::{file_found, subject};
use super::tables::Found;
use super::{check_name, DirEntry, InodeKind, InodeNo, Namespace, NamespaceError, Node};
use crate::object::ObjectError;

impl Namespace {
    /// The entries of directory `ino`, from a fresh listing of all pages.
    pub async fn readdir(&self, ino: InodeNo) -> Result<Arc<Vec<DirEntry>>, NamespaceError> {
        let prefix = {
            let tables = self.tables();
            let dir = tables.dir(ino)?;
            match &dir.listing {
                Some((at, entries)) if self.fresh(*at) => {
                    // Names from the listing, attributes as they are now (a file written
                    // since has grown).
                    let current = |e: &DirEntry| DirEntry {
                        name: e.name.clone(),
                        node: tables
                            .inodes
                            .get(&e.node.ino)
                            .map_or_else(|| e.node.clone(), |i| i.node.clone()),
                    };
                    return Ok(Arc::new(entries.iter().map(current).collect()));
                }
                _ => dir.node.key.clone(),
            }
        };
        let (found, known) = match self.list_all(ino, &prefix).await {
            Ok(found) => (found, Vec::new()),
            Err(NamespaceError::Object(e)) if e.is_transient() && self.is_local(ino) => {
                // Made here: what this mount listed and wrote in it is worth more than an
                // error while the store is out of reach.
                tracing::debug!(
                    prefix,
                    "store unreachable, listing what this mount knows: {e}"
                );
                (BTreeMap::new(), self.known_entries(ino))
            }
            Err(e) => return Err(e),
        };
        let mut tables = self.tables();
        let mut entries: BTreeMap<String, Node> = known.into_iter().collect();
        entries.extend(found.into_iter().map(|(name, f)| {
            let node = tables.upsert(ino, &name, f, self.mount_time);
            (name, node)
        }));
        // Files being written and directories made here, or holding such, which the store
        // may lack. A scan of the table: it holds what the kernel references, not the
        // whole bucket.
        let held = tables.holding_local();
        let made_here = tables.inodes.values().filter(|i| {
            let here = i.local || held.contains(&i.node.ino);
            here && i.parent == ino && i.node.ino != ino && !i.node.unlinked
        });
        for inode in made_here {
            entries.insert(inode.name.clone(), inode.node.clone());
        }
        let entries: Vec<DirEntry> = entries
            .into_iter()
            .map(|(name, node)| DirEntry { name, node })
            .collect();
        let entries = Arc::new(entries);
        if let Some(dir) = tables.inodes.get_mut(&ino) {
            dir.listing = Some((Instant::now(), entries.clone()));
        }
        Ok(entries)
    }

    /// The entries of `ino`'s last listing that are still there, as they are now.
    fn known_entries(&self, ino: InodeNo) -> Vec<(String, Node)> {
        let tables = self.tables();
        let Some((_, entries)) = tables.inodes.get(&ino).and_then(|d| d.listing.clone()) else {
            return Vec::new();
        };
        let current = |e: &DirEntry| tables.inodes.get(&e.node.ino).map(|i| i.node.clone());
        (entries.iter())
            .map(|e| (e.name.clone(), current(e).unwrap_or_else(|| e.node.clone())))
            .filter(|(_, node)| !node.unlinked)
            .collect()
    }

    /// Every showable entry under `prefix`, by name; a directory shadows a file.
    async fn list_all(
        &self,
        dir: InodeNo,
        prefix: &str,
    ) -> Result<BTreeMap<String, Found>, NamespaceError> {
        let mut entries = BTreeMap::new();
        let mut token = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let page = self
                .client
                .list_page(prefix, token.as_deref(), None)
                .await?;
            for object in page.objects {
                // A store that answers with keys outside the prefix is ignored, not trusted.
                let Some(name) = object.key.strip_prefix(prefix) else {
                    continue;
                };
                if name.is_empty() {
                    continue; // the directory's own marker object
                }
                if !self.showable(name, &object.key) {
                    continue;
                }
                if self.retention.past_rules(subject(&object)) {
                    tracing::debug!(key = %object.key, "past a lifecycle rule, hidden");
                    continue;
                }
                entries
                    .entry(name.to_owned())
                    .or_insert_with(|| file_found(object, None));
            }
            for dir_prefix in page.prefixes {
                let name = dir_prefix
                    .strip_prefix(prefix)
                    .and_then(|p| p.strip_suffix('/'));
                let Some(name) = name else { continue };
                if self.showable(name, &dir_prefix) {
                    let dir = Found::directory(dir_prefix.clone(), self.mount_time);
                    if let Some(file) = entries.insert(name.to_owned(), dir) {
                        self.skipped
                            .report(&file.key, "shadowed by a directory of the same name");
                    }
                }
            }
            // A store that hands back a token it gave before would be listed forever.
            if page
                .next_token
                .as_ref()
                .is_some_and(|t| !seen.insert(t.clone()))
            {
                return Err(NamespaceError::Object(ObjectError::Other {
                    target: prefix.to_owned(),
                    message: "listing repeats its continuation token".to_owned(),
                }));
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        let files = entries.values().filter(|f| f.kind == InodeKind::File);
        let mut described = Vec::new();
        if files.count() <= self.config.listing_heads {
            described = self.undescribed(dir, &entries);
        }
        for (name, found) in self.described(described).await {
            match found {
                Some(Some(found))
                    if entries.get(&name).is_none_or(|f| f.kind == InodeKind::File) =>
                {
                    entries.insert(name, found);
                }
                Some(Some(_)) | None => {} // shadowed by a directory, or HEAD failed
                Some(None) => {
                    if entries
                        .get(&name)
                        .is_some_and(|f| f.kind == InodeKind::File)
                    {
                        entries.remove(&name);
                    }
                }
            }
        }
        Ok(entries)
    }

    /// The files among `entries` of `dir` whose headers this mount does not have yet for
    /// the version listed, as (name, key).
    fn undescribed(
        &self,
        dir: InodeNo,
        entries: &BTreeMap<String, Found>,
    ) -> Vec<(String, String)> {
        let tables = self.tables();
        let described = |name: &String, found: &Found| {
            let node = tables.child(dir, name).map(|i| &i.node);
            node.is_some_and(|n| n.headers.is_some() && n.etag == found.etag)
        };
        entries
            .iter()
            .filter(|(name, f)| f.kind == InodeKind::File && !described(name, f))
            .map(|(name, f)| (name.clone(), f.key.clone()))
            .collect()
    }

    /// What HEAD says of each of `objects` (name, key): `Some(None)` when it is gone or
    /// expired, `None` when HEAD failed (the listing's facts then stand).
    async fn described(
        &self,
        objects: Vec<(String, String)>,
    ) -> Vec<(String, Option<Option<Found>>)> {
        use futures::StreamExt;
        futures::stream::iter(objects)
            .map(|(name, key)| async move {
                match self.head(&key).await {
                    Ok(info) if self.expired(&info) => (name, Some(None)),
                    Ok(info) => (name, Some(Some(file_found(info.meta, Some(info.headers))))),
                    Err(ObjectError::NotFound { .. }) => (name, Some(None)),
                    Err(e) => {
                        tracing::debug!(key, "HEAD for a listing failed: {e}");
                        (name, None)
                    }
                }
            })
            .buffer_unordered(16)
            .collect()
            .await
    }

    fn showable(&self, name: &str, key: &str) -> bool {
        match check_name(name) {
            Ok(()) => true,
            Err(why) => {
                self.skipped
                    .report(key, &format!("cannot be a file name ({why:?})"));
                false
            }
        }
    }
}
