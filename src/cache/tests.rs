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
    let mut file = cache.open_entry(id, Form::Plain)?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    Some(out)
}

/// Waits until `id` is an entry, or `for_nothing` passes.
fn appears(cache: &ObjectCache, id: &ObjectId, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !cache.has(id, Form::Plain) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn spool(dir: &Path, data: &[u8]) -> PathBuf {
    let path = dir.join(format!("spool-{}", artifact::sha256_hex(data)));
    std::fs::write(&path, data).unwrap();
    path
}

fn adopt(cache: &Arc<ObjectCache>, id: &ObjectId, path: &Path, len: u64) {
    cache.adopt(id, Form::Plain, path, len, "x");
    assert!(appears(cache, id, Duration::from_secs(5)), "adopted");
}

#[test]
fn entries_survive_a_reopen_and_serve_only_their_version_and_form() {
    let dir = tempfile::tempdir().unwrap();
    let one = cache(dir.path(), 1 << 20);
    let v1 = id("executions/e/outputs/a", "\"v1\"");
    let path = spool(dir.path(), b"hello");
    adopt(&one, &v1, &path, 5);
    std::fs::remove_file(&path).unwrap();
    drop(one);
    let two = cache(dir.path(), 1 << 20);
    assert_eq!(read_entry(&two, &v1).as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        read_entry(&two, &id("executions/e/outputs/a", "\"v2\"")),
        None
    );
    assert!(two.open_entry(&v1, Form::Decoded).is_none(), "another form");
    assert_eq!(two.stats().hits.load(Ordering::Relaxed), 1);
    assert_eq!(two.stats().misses.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_fill_starts_near_the_start_and_is_published_only_when_sealed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), 1 << 30);
    let v = id("k", "e1");
    let mut fill = cache.start_fill(&v, Form::Plain, 10, None).unwrap();
    fill.feed(0, &Bytes::from_static(b"012")).await;
    fill.feed(6, &Bytes::from_static(b"6789")).await;
    assert!(!fill.is_whole());
    fill.feed(3, &Bytes::from_static(b"345")).await;
    assert!(fill.is_whole(), "in any order once started");
    fill.seal();
    assert!(appears(&cache, &v, Duration::from_secs(5)));
    assert_eq!(read_entry(&cache, &v).as_deref(), Some(&b"0123456789"[..]));
    assert!(
        cache.start_fill(&v, Form::Plain, 10, None).is_none(),
        "there already"
    );

    let tail = id("k", "e2");
    let mut fill = cache
        .start_fill(&tail, Form::Plain, 100 << 20, None)
        .unwrap();
    fill.feed(99 << 20, &Bytes::from_static(b"56789")).await;
    fill.feed(0, &Bytes::from_static(b"01234")).await;
    fill.seal();
    assert!(
        !appears(&cache, &tail, Duration::from_millis(200)),
        "a read of the tail starts none"
    );

    let half = id("k", "e3");
    let mut fill = cache.start_fill(&half, Form::Plain, 10, None).unwrap();
    fill.feed(0, &Bytes::from_static(b"01234")).await;
    fill.seal();
    drop(fill);
    assert!(
        !appears(&cache, &half, Duration::from_millis(200)),
        "never half"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(dir.path().join("objects/tmp"))
        .unwrap()
        .next()
        .is_some()
    {
        assert!(Instant::now() < deadline, "a fill left its temp file");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn eviction_keeps_the_bound_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), 100);
    let ids: Vec<ObjectId> = (0..3).map(|i| id(&format!("k{i}"), "e")).collect();
    let path = spool(dir.path(), &[1u8; 40]);
    adopt(&cache, &ids[0], &path, 40);
    adopt(&cache, &ids[1], &path, 40);
    assert!(read_entry(&cache, &ids[0]).is_some(), "k0 used last now");
    adopt(&cache, &ids[2], &path, 40);
    assert!(cache.has(&ids[0], Form::Plain) && cache.has(&ids[2], Form::Plain));
    assert!(
        !cache.has(&ids[1], Form::Plain),
        "the least recently used went"
    );
    assert!(cache.usage().0 <= 100);
    assert_eq!(cache.stats().evictions.load(Ordering::Relaxed), 1);
    let big = id("big", "e");
    let large = spool(dir.path(), &[0u8; 51]);
    cache.adopt(&big, Form::Plain, &large, 51, "x");
    assert!(
        !appears(&cache, &big, Duration::from_millis(200)),
        "over half the bound"
    );
}

#[test]
fn a_start_cleans_what_a_crash_left_and_clear_empties_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = cache(dir.path(), 1 << 20);
    let v = id("k", "e");
    let w = id("k", "f");
    adopt(&first, &v, &spool(dir.path(), b"data"), 4);
    adopt(&first, &w, &spool(dir.path(), b"dat2"), 4);
    drop(first);
    let objects = dir.path().join("objects");
    std::fs::write(objects.join("tmp/half.4194399.0"), b"da").unwrap();
    let mine = objects.join(format!("tmp/live.{}.0", std::process::id()));
    std::fs::write(&mine, b"a live mount's fill").unwrap();
    std::fs::write(objects.join("orphan"), b"no record").unwrap();
    // A data file cut short: its record's size no longer holds.
    let name = entry_name("k", "f", Form::Plain);
    std::fs::write(objects.join(&name), b"da").unwrap();
    let second = cache(dir.path(), 1 << 20);
    assert!(
        !objects.join("tmp/half.4194399.0").exists(),
        "a dead process's fill"
    );
    assert!(mine.exists(), "a running one's stays");
    assert!(!objects.join("orphan").exists());
    assert!(second.has(&v, Form::Plain));
    assert!(!second.has(&w, Form::Plain), "short data is no entry");
    assert!(clear(dir.path()).unwrap() > 0);
    assert_eq!(
        read_entry(&second, &v),
        None,
        "gone behind the index: a miss"
    );
    let off = CacheConfig {
        dir: dir.path().to_owned(),
        max_size: 0,
    };
    assert!(ObjectCache::open(&off).unwrap().is_none());
}

fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("objects/tmp")).unwrap().count()
}

#[test]
fn a_decode_target_becomes_the_decoded_entry_or_leaves_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), 1 << 20);
    let v1 = id("t.csv", "\"g1\"");
    let (target, mut file) = cache.decode_target(&v1, None).expect("a target");
    assert!(
        cache.decode_target(&v1, None).is_none(),
        "one decode fills it"
    );
    file.write_all(b"half").unwrap();
    drop(target);
    assert_eq!(
        tmp_files(dir.path()),
        0,
        "a decode that stops leaves nothing"
    );
    assert_eq!(cache.decoded_size(&v1), None);

    let (target, mut file) = cache.decode_target(&v1, None).expect("free again");
    file.write_all(b"decoded bytes").unwrap();
    target.publish(13, artifact::sha256_hex(b"decoded bytes"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.decoded_size(&v1).is_none() {
        assert!(Instant::now() < deadline, "published");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(cache.decoded_size(&v1), Some(13));
    assert!(!cache.has(&v1, Form::Plain), "the decoded form only");
    let mut text = String::new();
    let mut entry = cache.open_entry(&v1, Form::Decoded).unwrap();
    entry.read_to_string(&mut text).unwrap();
    assert_eq!(text, "decoded bytes");
    while tmp_files(dir.path()) > 0 {
        assert!(Instant::now() < deadline, "its temp name removed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(cache.decode_target(&v1, None).is_none(), "cached already");
    assert!(
        cache
            .decode_target(&id("big", "\"b\""), Some(1 << 20))
            .is_none(),
        "too big to keep"
    );
}

fn cache_in_boot(dir: &Path, boot: &str) -> Arc<ObjectCache> {
    let config = CacheConfig {
        dir: dir.to_owned(),
        max_size: 1 << 20,
    };
    ObjectCache::open_in_boot(&config, Some(boot.into()))
        .unwrap()
        .expect("on")
}

#[test]
fn an_unsynced_entry_lasts_its_boot_and_a_synced_one_survives_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (id("a", "\"1\""), id("b", "\"1\""));
    let one = cache_in_boot(dir.path(), "boot-1");
    for (v, data) in [(&a, &b"first"[..]), (&b, &b"second"[..])] {
        let path = spool(dir.path(), data);
        adopt(&one, v, &path, data.len() as u64);
    }
    // Only `b` is synced: as the background pass does once its time has come.
    one.wait_for_workers();
    lock_unsynced_drop(&one, "a");
    one.sync_older_than(Duration::ZERO);
    drop(one);
    let same_boot = cache_in_boot(dir.path(), "boot-1");
    assert!(same_boot.has(&a, Form::Plain), "a daemon restart keeps it");
    drop(same_boot);
    let rebooted = cache_in_boot(dir.path(), "boot-2");
    assert!(
        !rebooted.has(&a, Form::Plain),
        "written in another boot, never synced"
    );
    assert_eq!(read_entry(&rebooted, &b).as_deref(), Some(&b"second"[..]));
}

/// Takes `key`'s entry off the list of entries to sync.
fn lock_unsynced_drop(cache: &ObjectCache, key: &str) {
    let name = entry_name(key, "\"1\"", Form::Plain);
    cache.unsynced.lock().unwrap().retain(|(_, n)| *n != name);
}

#[test]
fn an_expired_object_is_evicted_before_older_entries_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let one = cache(dir.path(), 1 << 20);
    let (old, expired) = (id("old", "\"1\""), id("expired", "\"1\""));
    let yesterday = std::time::SystemTime::now() - Duration::from_secs(86_400);
    one.note_expiry(&expired, Form::Plain, yesterday);
    for (v, data) in [(&old, &[1u8; 1000][..]), (&expired, &[2u8; 1000][..])] {
        let path = spool(dir.path(), data);
        adopt(&one, v, &path, 1000);
    }
    assert!(
        read_entry(&one, &expired).is_some(),
        "the most recently used"
    );
    drop(one);
    // Room for one entry: the expired one goes, though the other is older.
    let two = cache(dir.path(), 1500);
    assert!(two.has(&old, Form::Plain));
    assert!(!two.has(&expired, Form::Plain));
}
