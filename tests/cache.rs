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

#[test]
fn a_file_read_once_is_read_again_after_remount_without_a_get() {
    let store = TestStore::start();
    let data = pseudo_random(3 << 20, 1);
    store.put("executions/e1/outputs/model.bin", data.clone());
    let cache = tempfile::tempdir().unwrap();
    {
        let mount = mount(&store, cache.path(), &[]);
        assert_eq!(
            fs::read(mount.join("executions/e1/outputs/model.bin")).unwrap(),
            data
        );
        wait_entries(cache.path(), 1);
    }
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
    {
        let mount = mount(&store, cache.path(), &[]);
        assert_eq!(
            fs::read_to_string(mount.join("d/a.txt")).unwrap(),
            "old contents"
        );
        wait_entries(cache.path(), 1);
    }
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
    let cache = tempfile::tempdir().unwrap();
    let data = pseudo_random(1 << 20, 3);
    {
        let mount = mount(&store, cache.path(), &[]);
        let dir = mount.join("executions/e1/outputs");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("out.bin"), &data).unwrap();
        wait_entries(cache.path(), 1);
    }
    assert_eq!(store.get("executions/e1/outputs/out.bin").unwrap().0, data);
    let mount = mount(&store, cache.path(), &[]);
    let gets = store.requests("GetObject");
    assert_eq!(
        fs::read(mount.join("executions/e1/outputs/out.bin")).unwrap(),
        data
    );
    assert_eq!(store.requests("GetObject"), gets);
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
    }
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
