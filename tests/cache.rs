//! The object cache through real mounts of the embedded store: what a mount read or
//! wrote is read on the next mount without a GET, never stale, never half, and within
//! its bound.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{outcome, pseudo_random, rgrid_mount_bare, Mount, TestStore};

/// Mount arguments that share `cache` (one store's directory lives under it).
fn args(cache: &Path) -> Vec<String> {
    vec!["--cache-dir".into(), cache.display().to_string()]
}

/// A mount sharing `cache`, with a bound of its own unless `extra` sets one (the default
/// depends on the disk's free space).
fn mount(store: &TestStore, cache: &Path, extra: &[&str]) -> Mount {
    let mut all = args(cache);
    if !extra.contains(&"--max-cache-size") {
        all.extend(["--max-cache-size".into(), "256".into()]);
    }
    all.extend(extra.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    Mount::new(store, &all)
}

/// The `objects/` directory of the store's cache under `cache`.
fn objects(cache: &Path) -> PathBuf {
    let store_dir = fs::read_dir(cache)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().join("objects").is_dir())
        .expect("a store cache directory");
    store_dir.path().join("objects")
}

/// Records of published entries.
fn entries(cache: &Path) -> usize {
    fs::read_dir(objects(cache))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count()
}

/// Waits until the cache holds `n` entries (a fill publishes just after the last read).
fn wait_entries(cache: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while entries(cache) < n {
        assert!(
            Instant::now() < deadline,
            "{} entries, not {n}",
            entries(cache)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount of its own reads `key` whole, waits for its entry, and unmounts: the bytes.
fn read_once(store: &TestStore, cache: &Path, key: &str) -> Vec<u8> {
    let mount = mount(store, cache, &[]);
    let data = fs::read(mount.join(key)).unwrap();
    wait_entries(cache, 1);
    data
}

#[test]
fn a_file_read_once_is_read_again_after_remount_without_a_get() {
    let store = TestStore::start();
    let data = pseudo_random(3 << 20, 1);
    store.put("executions/e1/outputs/model.bin", data.clone());
    let cache = tempfile::tempdir().unwrap();
    let key = "executions/e1/outputs/model.bin";
    assert_eq!(read_once(&store, cache.path(), key), data);
    let mount = mount(&store, cache.path(), &[]);
    let gets = store.requests("GetObject");
    assert_eq!(
        fs::read(mount.join("executions/e1/outputs/model.bin")).unwrap(),
        data
    );
    assert_eq!(store.requests("GetObject"), gets, "read from the cache");
}

#[test]
fn an_object_replaced_between_mounts_reads_its_new_bytes() {
    let store = TestStore::start();
    store.put("d/a.txt", "old contents");
    let cache = tempfile::tempdir().unwrap();
    assert_eq!(read_once(&store, cache.path(), "d/a.txt"), b"old contents");
    store.put("d/a.txt", "new contents, longer");
    let mount = mount(&store, cache.path(), &[]);
    assert_eq!(
        fs::read_to_string(mount.join("d/a.txt")).unwrap(),
        "new contents, longer"
    );
}

#[test]
fn a_fill_killed_midway_is_not_served_and_is_cleaned_up() {
    let store = TestStore::start();
    let data = pseudo_random(24 << 20, 2);
    store.put("big.bin", data.clone());
    let cache = tempfile::tempdir().unwrap();
    {
        let mut mount = mount(&store, cache.path(), &[]);
        let mut file = fs::File::open(mount.join("big.bin")).unwrap();
        let mut half = vec![0; 8 << 20];
        file.read_exact(&mut half).unwrap();
        assert!(
            fs::read_dir(objects(cache.path()).join("tmp"))
                .unwrap()
                .next()
                .is_some(),
            "a fill in progress"
        );
        mount.kill();
        mount.wait(Duration::from_secs(10));
    }
    let mount = mount(&store, cache.path(), &[]);
    let tmp = objects(cache.path()).join("tmp");
    assert!(
        fs::read_dir(&tmp).unwrap().next().is_none(),
        "cleaned at start"
    );
    assert_eq!(entries(cache.path()), 0);
    let gets = store.requests("GetObject");
    assert_eq!(fs::read(mount.join("big.bin")).unwrap(), data);
    assert!(
        store.requests("GetObject") > gets,
        "from the store, not a half entry"
    );
}

#[test]
fn the_bound_holds_when_more_is_read_than_fits() {
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    for i in 0..5 {
        store.put(&format!("d/{i}.bin"), pseudo_random(1536 << 10, i));
    }
    let mount = mount(&store, cache.path(), &["--max-cache-size", "4"]);
    for i in 0..5 {
        fs::read(mount.join(&format!("d/{i}.bin"))).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let bytes: u64 = fs::read_dir(objects(cache.path()))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().unwrap().is_file())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes <= 4 << 20, "{bytes} bytes cached");
    assert_eq!(entries(cache.path()), 2, "the last two fit");
    let gets = store.requests("GetObject");
    fs::read(mount.join("d/4.bin")).unwrap();
    assert_eq!(store.requests("GetObject"), gets, "the newest stayed");
}

#[test]
fn a_file_written_here_reads_back_locally_on_the_next_mount() {
    let store = TestStore::start();
    let data = pseudo_random(1 << 20, 3);
    for (n, mode) in [&[][..], &["--write-back"]].into_iter().enumerate() {
        let cache = tempfile::tempdir().unwrap();
        let key = format!("executions/e{n}/outputs/out.bin");
        {
            let mount = mount(&store, cache.path(), mode);
            let path = mount.join(&key);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &data).unwrap();
            // The unmount finishes the upload and publishes the entry its spool became.
        }
        assert_eq!(entries(cache.path()), 1, "{mode:?}: the spool is the entry");
        assert_eq!(store.get(&key).unwrap().0, data);
        let mount = mount(&store, cache.path(), &[]);
        let gets = store.requests("GetObject");
        assert_eq!(fs::read(mount.join(&key)).unwrap(), data);
        assert_eq!(store.requests("GetObject"), gets, "{mode:?}");
    }
}

#[test]
fn a_file_written_back_reads_back_from_the_cache_once_uploaded() {
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    let mount = mount(&store, cache.path(), &["--write-back"]);
    let path = mount.join("out/log.txt");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data = pseudo_random(256 << 10, 8);
    let mut file = fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut file, &data).unwrap();
    file.sync_all().unwrap(); // waits for the upload
    drop(file);
    fs::metadata(&path).unwrap(); // the next operation takes the upload up
    wait_entries(cache.path(), 1);
    let gets = store.requests("GetObject");
    let mut back = Vec::new();
    fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(store.requests("GetObject"), gets, "read from the entry");
}

#[test]
fn a_small_file_read_at_random_is_fetched_whole_at_close() {
    use std::os::unix::fs::FileExt;
    let store = TestStore::start();
    let small = pseudo_random(3 << 20, 21);
    let big = pseudo_random(9 << 20, 22);
    store.put("db/small.sqlite", small.clone());
    store.put("db/big.sqlite", big.clone());
    let cache = tempfile::tempdir().unwrap();
    {
        let mount = mount(&store, cache.path(), &[]);
        for (name, data) in [("small", &small), ("big", &big)] {
            let file = fs::File::open(mount.join(&format!("db/{name}.sqlite"))).unwrap();
            let mut page = [0u8; 4096];
            for offset in [2 << 20, 4096, 1 << 20] {
                file.read_exact_at(&mut page, offset).unwrap();
                assert_eq!(&page[..], &data[offset as usize..offset as usize + 4096]);
            }
        }
        wait_entries(cache.path(), 1);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(entries(cache.path()), 1, "past 8 MiB, no whole fetch");
    }
    let mount = mount(&store, cache.path(), &[]);
    let gets = store.requests("GetObject");
    assert_eq!(fs::read(mount.join("db/small.sqlite")).unwrap(), small);
    assert_eq!(store.requests("GetObject"), gets, "read from the entry");
}

/// The mount's status (`rgrid-mount status --json`).
fn status(store: &TestStore, mount: &Mount) -> serde_json::Value {
    common::status_json(store, mount)["mounts"][0]["status"].clone()
}

fn sha256(data: &[u8]) -> String {
    rgrid_mount::artifact::sha256_hex(data)
}

#[test]
fn a_checked_object_fills_and_a_corrupt_one_does_not() {
    let store = TestStore::start();
    let data = pseudo_random(2 << 20, 5);
    store.put_with_meta(
        "d/ok.bin",
        data.clone(),
        &[("rgrid-sha256", &sha256(&data))],
    );
    store.put_with_meta(
        "d/bad.bin",
        data.clone(),
        &[("rgrid-sha256", &sha256(b"other"))],
    );
    let cache = tempfile::tempdir().unwrap();
    let mount = mount(&store, cache.path(), &[]);
    assert_eq!(fs::read(mount.join("d/ok.bin")).unwrap(), data);
    wait_entries(cache.path(), 1);
    let err = fs::read(mount.join("d/bad.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(entries(cache.path()), 1, "bad bytes never reach the cache");
}

#[test]
fn a_gzip_file_written_here_reads_back_decoded_from_the_cache() {
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    let data = common::csv(1 << 20, 6);
    {
        let mount = mount(&store, cache.path(), &["--compress", "always"]);
        fs::write(mount.join("table.csv"), &data).unwrap();
        wait_entries(cache.path(), 1);
    }
    let (stored, meta) = store.get("table.csv").unwrap();
    assert_eq!(meta["rgrid-compression"], "gzip");
    assert!(stored.len() < data.len());
    let mount = mount(&store, cache.path(), &[]);
    let gets = store.requests("GetObject");
    assert_eq!(fs::read(mount.join("table.csv")).unwrap(), data);
    assert_eq!(
        store.requests("GetObject"),
        gets,
        "decoded bytes, from the cache"
    );
}

/// `grep -c` of `path`: the count it prints.
fn grep_count(path: &Path, pattern: &str) -> String {
    common::run(
        std::process::Command::new("grep")
            .args(["-c", pattern])
            .arg(path),
    )
}

#[test]
fn a_gzip_object_read_once_greps_again_after_remount_without_get_or_decode() {
    let store = TestStore::start();
    let data = common::csv(3 << 20, 11);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &data).unwrap();
    let stored = encoder.finish().unwrap();
    // No original size in the metadata: stat cannot know it before a decode.
    store.put_with_meta(
        "e/table.csv",
        stored.clone(),
        &[("rgrid-compression", "gzip")],
    );
    let cache = tempfile::tempdir().unwrap();
    let expected = data
        .split(|b| *b == b'\n')
        .filter(|l| l.contains(&b'7'))
        .count();
    let count = {
        let mount = mount(&store, cache.path(), &[]);
        let count = grep_count(&mount.join("e/table.csv"), "7");
        wait_entries(cache.path(), 1);
        count
    };
    assert_eq!(count.trim(), expected.to_string());
    for extra in [&[][..], &["--no-passthrough"]] {
        let mount = mount(&store, cache.path(), extra);
        let gets = store.requests("GetObject");
        let path = mount.join("e/table.csv");
        // The entry tells the decoded size: `ls -l` agrees with a read before any open.
        assert_eq!(fs::metadata(&path).unwrap().len(), data.len() as u64);
        let before = common::daemon_reads(&store, &mount);
        assert_eq!(grep_count(&path, "7"), count);
        assert_eq!(fs::read(&path).unwrap(), data);
        assert_eq!(
            store.requests("GetObject"),
            gets,
            "no GET: the decoded entry"
        );
        if extra.is_empty() {
            assert_eq!(
                common::daemon_reads(&store, &mount),
                before,
                "passthrough: no daemon read"
            );
        }
    }
}

#[test]
fn a_file_changed_after_its_upload_then_unlinked_leaves_no_entry() {
    use std::io::Write;
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    let mount = mount(&store, cache.path(), &[]);
    let path = mount.join("scratch.bin");
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(b"first version").unwrap();
    file.sync_all().unwrap();
    file.write_all(b", then more").unwrap();
    fs::remove_file(&path).unwrap();
    drop(file);
    let changed = mount.join("kept.bin");
    let mut file = fs::File::create(&changed).unwrap();
    file.write_all(b"first").unwrap();
    file.sync_all().unwrap();
    file.write_all(b" and last").unwrap();
    drop(file);
    wait_entries(cache.path(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(entries(cache.path()), 1, "only the file that exists");
    drop(mount);
    let mount = self::mount(&store, cache.path(), &[]);
    let gets = store.requests("GetObject");
    assert_eq!(fs::read(mount.join("kept.bin")).unwrap(), b"first and last");
    assert_eq!(
        store.requests("GetObject"),
        gets,
        "the last content, from the cache"
    );
}

/// Reads a cached file on a fresh mount: through passthrough the daemon sees no read
/// at all; turned off, every read comes to it, from the same entry.
#[test]
fn cached_files_are_served_by_passthrough_and_map_shared() {
    let store = TestStore::start();
    let data = pseudo_random(4 << 20, 7);
    store.put("d/model.bin", data.clone());
    let cache = tempfile::tempdir().unwrap();
    read_once(&store, cache.path(), "d/model.bin");
    let mount = mount(&store, cache.path(), &[]);
    let (before, gets) = (
        common::daemon_reads(&store, &mount),
        store.requests("GetObject"),
    );
    assert_eq!(fs::read(mount.join("d/model.bin")).unwrap(), data);
    assert_eq!(
        common::map_shared(&mount.join("d/model.bin")).unwrap(),
        data
    );
    assert_eq!(
        common::daemon_reads(&store, &mount),
        before,
        "the kernel served every read"
    );
    assert_eq!(store.requests("GetObject"), gets);
    let hits = status(&store, &mount)["object_cache"]["hits"].as_u64();
    assert_eq!(hits, Some(2));
    drop(mount);

    let off = self::mount(&store, cache.path(), &["--no-passthrough"]);
    let before = common::daemon_reads(&store, &off);
    assert_eq!(fs::read(off.join("d/model.bin")).unwrap(), data);
    assert!(
        common::daemon_reads(&store, &off) > before,
        "the fallback reads here"
    );
    assert_eq!(store.requests("GetObject"), gets, "from the entry");
}

/// The kernel wants every open of a file that passthrough opens hold to pass through
/// too: a writer then gets ETXTBSY, and opens once the readers have closed.
#[test]
fn a_writer_waits_for_passthrough_readers_to_close() {
    use std::io::{Read as _, Write};
    let store = TestStore::start();
    store.put("d/a.txt", "cached bytes");
    let cache = tempfile::tempdir().unwrap();
    read_once(&store, cache.path(), "d/a.txt");
    let mount = mount(&store, cache.path(), &[]);
    let path = mount.join("d/a.txt");
    let mut reader = fs::File::open(&path).unwrap();
    let mut second = fs::File::open(&path).expect("readers share the backing file");
    let busy = fs::OpenOptions::new().append(true).open(&path).unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(libc::ETXTBSY), "{busy}");
    let mut held = String::new();
    reader.read_to_string(&mut held).unwrap();
    assert_eq!(held, "cached bytes");
    second.read_to_string(&mut String::new()).unwrap();
    drop((reader, second));
    let mut writer = fs::OpenOptions::new().append(true).open(&path).unwrap();
    writer.write_all(b", and more").unwrap();
    drop(writer);
    assert_eq!(store.get("d/a.txt").unwrap().0, b"cached bytes, and more");
}

#[test]
fn a_pending_upload_survives_eviction_pressure() {
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    for i in 0..4 {
        store.put(&format!("in/{i}.bin"), pseudo_random(900 << 10, i));
    }
    let mount = mount(
        &store,
        cache.path(),
        &["--write-back", "--max-cache-size", "2"],
    );
    store.refuse_uploads(true);
    let pending = pseudo_random(512 << 10, 9);
    fs::create_dir_all(mount.join("out")).unwrap();
    fs::write(mount.join("out/result.bin"), &pending).unwrap();
    for i in 0..4 {
        fs::read(mount.join(&format!("in/{i}.bin"))).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let evicted = status(&store, &mount)["object_cache"]["evictions"].as_u64();
    assert!(
        evicted > Some(0),
        "the cache was under pressure: {evicted:?}"
    );
    store.refuse_uploads(false);
    let sync = outcome(rgrid_mount_bare(&store).arg("sync").arg(&mount.path));
    assert!(sync.is_ok(), "{sync:?}");
    assert_eq!(store.get("out/result.bin").unwrap().0, pending);
}

#[test]
fn cache_clear_empties_it_and_the_mount_reads_from_the_store() {
    let store = TestStore::start();
    store.put("d/a.bin", pseudo_random(100 << 10, 4));
    let cache = tempfile::tempdir().unwrap();
    let mount = mount(&store, cache.path(), &[]);
    fs::read(mount.join("d/a.bin")).unwrap();
    wait_entries(cache.path(), 1);
    let cleared = outcome(
        rgrid_mount_bare(&store)
            .args([
                "cache",
                "clear",
                "--endpoint-url",
                &store.endpoint,
                "--cache-dir",
            ])
            .arg(cache.path()),
    )
    .unwrap();
    assert!(cleared.contains("cleared"), "{cleared}");
    assert_eq!(entries(cache.path()), 0);
    let fresh = Mount::new(
        &store,
        &["--cache-dir", &cache.path().display().to_string()],
    );
    let gets = store.requests("GetObject");
    fs::read(fresh.join("d/a.bin")).unwrap();
    assert!(store.requests("GetObject") > gets);
    drop(mount);
}
