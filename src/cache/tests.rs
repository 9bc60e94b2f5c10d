use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn cache(dir: &Path, max_size: u64) -> Arc<ObjectCache> {
    let config = CacheConfig {
        dir: dir.to_owned(),
        max_size,
    };
    ObjectCache::open(&config).unwrap().expect("on")
}

fn id(key: &str, etag: &str) -> ObjectId {
    ObjectId::new(key.into(), Some(etag.into()))
}

fn read_entry(cache: &ObjectCache, id: &ObjectId) -> Option<Vec<u8>> {
    let mut file = cache.open_entry(id)?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    Some(out)
}

/// Waits for a fill's thread to publish (or give up on) `id`.
fn settled(cache: &ObjectCache, id: &ObjectId) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let name = entry_name(&id.key, id.etag.as_deref().unwrap());
    while cache.index().filling.contains(&name) {
        assert!(Instant::now() < deadline, "the fill never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    cache.contains(id)
}

fn spool(dir: &Path, data: &[u8]) -> PathBuf {
    let path = dir.join(format!("spool-{}", data.len()));
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn entries_survive_a_reopen_and_serve_only_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let one = cache(dir.path(), 1 << 20);
    let v1 = id("executions/e/outputs/a", "\"v1\"");
    let path = spool(dir.path(), b"hello");
    one.adopt(&v1, &path, 5, &artifact::sha256_hex(b"hello"));
    std::fs::remove_file(&path).unwrap();
    drop(one);
    let two = cache(dir.path(), 1 << 20);
    assert_eq!(read_entry(&two, &v1).as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        read_entry(&two, &id("executions/e/outputs/a", "\"v2\"")),
        None
    );
    assert_eq!(two.stats().hits.load(Ordering::Relaxed), 1);
    assert_eq!(two.stats().misses.load(Ordering::Relaxed), 1);
}

#[test]
fn a_fill_is_published_only_when_sealed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), 1 << 20);
    let v = id("k", "e1");
    let mut fill = cache.start_fill(&v, 10, None).unwrap();
    assert!(
        cache.start_fill(&v, 10, None).is_none(),
        "one fill per entry"
    );
    fill.feed(5, &Bytes::from_static(b"56789"));
    assert!(!fill.is_whole());
    fill.feed(0, &Bytes::from_static(b"01234"));
    assert!(fill.is_whole(), "in any order");
    fill.seal();
    assert!(settled(&cache, &v));
    assert_eq!(read_entry(&cache, &v).as_deref(), Some(&b"0123456789"[..]));

    let half = id("k", "e2");
    let mut fill = cache.start_fill(&half, 10, None).unwrap();
    fill.feed(0, &Bytes::from_static(b"01234"));
    fill.seal();
    drop(fill);
    assert!(!settled(&cache, &half), "a half fill is never an entry");
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("objects/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "and leaves nothing behind");
}

#[test]
fn eviction_keeps_the_bound_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), 100);
    let ids: Vec<ObjectId> = (0..3).map(|i| id(&format!("k{i}"), "e")).collect();
    let data = [1u8; 40];
    let path = spool(dir.path(), &data);
    cache.adopt(&ids[0], &path, 40, "x");
    cache.adopt(&ids[1], &path, 40, "x");
    assert!(read_entry(&cache, &ids[0]).is_some(), "k0 used last now");
    cache.adopt(&ids[2], &path, 40, "x");
    assert!(cache.contains(&ids[0]) && cache.contains(&ids[2]));
    assert!(!cache.contains(&ids[1]), "the least recently used went");
    assert!(cache.usage().0 <= 100);
    assert_eq!(cache.stats().evictions.load(Ordering::Relaxed), 1);
    let big = id("big", "e");
    let large = spool(dir.path(), &[0u8; 101]);
    cache.adopt(&big, &large, 101, "x");
    assert!(!cache.contains(&big), "larger than the bound: not kept");
}

#[test]
fn a_start_cleans_what_a_crash_left_and_clear_empties_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache1 = cache(dir.path(), 1 << 20);
    let v = id("k", "e");
    let path = spool(dir.path(), b"data");
    cache1.adopt(&v, &path, 4, "x");
    drop(cache1);
    let objects = dir.path().join("objects");
    std::fs::write(objects.join("tmp/half"), b"da").unwrap();
    std::fs::write(objects.join("orphan"), b"no record").unwrap();
    let cache2 = cache(dir.path(), 1 << 20);
    assert!(!objects.join("tmp/half").exists());
    assert!(!objects.join("orphan").exists());
    assert!(cache2.contains(&v));
    assert!(clear(dir.path()).unwrap() > 0);
    assert_eq!(
        read_entry(&cache2, &v),
        None,
        "gone behind the index: a miss"
    );
    let off = CacheConfig {
        dir: dir.path().to_owned(),
        max_size: 0,
    };
    assert!(ObjectCache::open(&off).unwrap().is_none());
}
