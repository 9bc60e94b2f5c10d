//! What `stat` shows for a gzip-stored file whose metadata lacks its decoded size (an
//! object another tool stored with `Content-Encoding: gzip`): the length of its decoded
//! cache entry if there is one, else the size worked out once per version at the lookup
//! or listing that shows the file (`view::gzip_decoded_size`: decoded whole when it is
//! stored in at most 1 MiB, else its trailer's), so that `ls -l` and a read agree before
//! anything opens it. A larger stream whose trailer cannot be the whole size (4 GiB or
//! more stored, a last member shorter than the rest) leaves the stored size, and a larger
//! multi-member stream shows its last member's, until a reader decodes to the end.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use super::{lock, Attr, RgridFs};
use crate::artifact::{self, Compression};
use crate::cache::Form;
use crate::namespace::{DirEntry, InodeKind, Node};
use crate::object::ObjectId;
use crate::readahead::ReadError;
use crate::view;

/// Sizes worked out at lookup remembered, at most: past it they are forgotten (a
/// version is then asked again).
const MAX_LOOKUP_SIZES: usize = 10_000;

/// Sizes of one listing worked out at once.
const SIZES_AT_ONCE: usize = 8;

/// The size worked out at lookup of each version asked so far (`None`: no usable one).
pub(super) type LookupSizes = std::sync::Mutex<HashMap<ObjectId, Option<u64>>>;

/// Whether a failed fetch may succeed if asked again (as opposed to a refusal: access
/// denied, an archived object, a version gone).
fn is_transient(e: &ReadError) -> bool {
    match e {
        ReadError::Object(e) => e.is_transient(),
        _ => true,
    }
}

/// Whether `node` is a gzip-stored file whose headers give no decoded size.
fn size_unknown(node: &Node) -> bool {
    let Some(headers) = node.headers.as_deref() else {
        return false;
    };
    node.kind == InodeKind::File
        && node.size == node.stored_size
        && artifact::compression(headers) == Compression::Gzip
        && artifact::original_size(headers).is_none()
}

impl RgridFs {
    /// The attributes of `node`, with its decoded size when the namespace does not know
    /// it yet.
    pub(super) async fn attr_of(&self, mut node: Node) -> Attr {
        if let Some(size) = self.decoded_size(&node).await {
            node.size = size;
        }
        self.config.ownership.attr(&node)
    }

    /// The decoded size of `node` when it shows another, told to the namespace: the
    /// cache entry's (exact), else the one worked out at lookup (which a reader may correct).
    async fn decoded_size(&self, node: &Node) -> Option<u64> {
        let plain = node.headers.as_deref().map(Form::of) == Some(Form::Plain);
        let entry = self
            .cache
            .as_ref()
            .filter(|_| !plain && node.kind == InodeKind::File);
        if let Some(size) = entry.and_then(|cache| cache.decoded_size(&node.object_id())) {
            let etag = node.etag.as_deref();
            let shown = size != node.size && self.namespace.learned_size(node.ino, etag, size);
            return shown.then_some(size);
        }
        if !size_unknown(node) {
            return None;
        }
        let size = self.lookup_size(node).await?;
        self.namespace
            .guessed_size(node.ino, node.etag.as_deref(), size);
        Some(size)
    }

    /// `node`'s decoded size as worked out at lookup, once per version.
    pub(super) async fn lookup_size(&self, node: &Node) -> Option<u64> {
        let id = node.object_id();
        if let Some(known) = lock(&self.lookup_sizes).get(&id) {
            return *known;
        }
        let size = match view::gzip_decoded_size(&self.engine, node).await {
            Ok(size) => size,
            // A store that may answer later is not remembered: the next lookup asks again.
            Err(e) if is_transient(&e) => {
                tracing::debug!(key = %node.key, "decoded size at lookup: {e}");
                return None;
            }
            Err(_) => None,
        };
        let mut sizes = lock(&self.lookup_sizes);
        if sizes.len() >= MAX_LOOKUP_SIZES {
            sizes.clear();
        }
        sizes.insert(id, size);
        size
    }

    /// Gives the files of a listing their decoded sizes, as [`RgridFs::attr_of`] does
    /// (readdirplus hands these attributes to `ls -l`).
    pub(super) async fn size_listed(&self, entries: &mut Arc<Vec<DirEntry>>) {
        let unknown: Vec<usize> = (entries.iter().enumerate())
            .filter(|(_, e)| size_unknown(&e.node) || self.has_decoded_entry(&e.node))
            .map(|(i, _)| i)
            .collect();
        if unknown.is_empty() {
            return;
        }
        let listed = entries.clone();
        let sizes: Vec<(usize, Option<u64>)> = futures::stream::iter(unknown)
            .map(|i| {
                let node = &listed[i].node;
                async move { (i, self.decoded_size(node).await) }
            })
            .buffer_unordered(SIZES_AT_ONCE)
            .collect()
            .await;
        let entries = Arc::make_mut(entries);
        for (i, size) in sizes {
            if let Some(size) = size {
                entries[i].node.size = size;
            }
        }
    }

    fn has_decoded_entry(&self, node: &Node) -> bool {
        let cache = self.cache.as_ref();
        node.kind == InodeKind::File
            && cache.is_some_and(|c| {
                c.decoded_size(&node.object_id())
                    .is_some_and(|s| s != node.size)
            })
    }

    /// Whether the size `node` showed is not its content's: a gzip-stored object whose
    /// decoded entry is longer or shorter.
    pub(super) fn size_was_unknown(&self, node: &Node) -> bool {
        let entry = (self.cache.as_ref()).and_then(|c| c.decoded_size(&node.object_id()));
        entry.is_some_and(|size| size != node.size)
    }

    /// A gzip object without its original size in metadata, opened: st_size as worked
    /// out at lookup until a reader decodes it to the end (reads do not depend on it:
    /// direct I/O).
    pub(super) async fn learn_gzip_size(&self, node: &Node) {
        if let Some(size) = self.lookup_size(node).await {
            self.namespace
                .guessed_size(node.ino, node.etag.as_deref(), size);
        }
    }
}
