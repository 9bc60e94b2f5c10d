//! `BlockCache`: recently fetched blocks of random reads, shared by every handle of the
//! same object version, bounded in bytes with LRU eviction.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use crate::object::ObjectId;

/// One block: object key, ETag and start offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockId {
    /// The object version.
    pub version: Arc<ObjectId>,
    /// Offset of the block's first byte.
    pub start: u64,
}

/// Blocks by id, at most `capacity` bytes in all.
#[derive(Debug)]
pub struct BlockCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug)]
struct Inner {
    blocks: LruCache<BlockId, Bytes>,
    bytes: usize,
}

impl BlockCache {
    /// An empty cache holding up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let inner = Inner {
            blocks: LruCache::unbounded(),
            bytes: 0,
        };
        BlockCache {
            inner: Mutex::new(inner),
            capacity,
        }
    }

    /// Bytes held, and the most it holds.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.bytes, self.capacity)
    }

    /// The block, if cached; marks it recently used.
    pub fn get(&self, id: &BlockId) -> Option<Bytes> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let block = inner.blocks.get(id).cloned();
        crate::metrics::read_cache(block.is_some());
        block
    }

    /// Caches a block, evicting the least recently used ones beyond capacity.
    pub fn insert(&self, id: BlockId, data: Bytes) {
        if data.len() > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.bytes += data.len();
        if let Some(old) = inner.blocks.put(id, data) {
            inner.bytes -= old.len();
        }
        while inner.bytes > self.capacity {
            let Some((_, evicted)) = inner.blocks.pop_lru() else {
                break;
            };
            inner.bytes -= evicted.len();
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(start: u64) -> BlockId {
        BlockId {
            version: Arc::new(ObjectId::new("k".into(), Some("e".into()))),
            start,
        }
    }

    #[test]
    fn evicts_least_recently_used_beyond_capacity() {
        let cache = BlockCache::new(100);
        cache.insert(id(0), Bytes::from(vec![0; 40]));
        cache.insert(id(1), Bytes::from(vec![1; 40]));
        assert!(cache.get(&id(0)).is_some());
        cache.insert(id(2), Bytes::from(vec![2; 40]));
        assert!(
            cache.get(&id(1)).is_none(),
            "least recently used goes first"
        );
        assert!(cache.get(&id(0)).is_some() && cache.get(&id(2)).is_some());
        assert_eq!(cache.bytes(), 80);
    }
}
