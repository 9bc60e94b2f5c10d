//! Write-back mode through a real mount: close returns at local speed, the barriers
//! (fsync, `rgrid-mount sync`, unmount) wait for the store and tell the truth, and a
//! pending file behaves like a local one; nothing closed is lost to a kill or an outage.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{pseudo_random, rgrid_mount_bare, run, Mount, TestStore};
use rgrid_mount::artifact::sha256_hex;

fn sync(store: &TestStore, mount: &Mount) -> Output {
    let mountpoint = mount.path.to_str().unwrap();
    rgrid_mount_bare(store)
        .args(["sync", mountpoint])
        .output()
        .unwrap()
}

fn upload_state(path: &Path) -> String {
    let value = xattr::get(path, "user.rgrid.upload_state").unwrap();
    String::from_utf8(value.unwrap_or_default()).unwrap()
}

/// Asserts the store holds `data` under `key`, with its SHA-256.
fn assert_stored(store: &TestStore, key: &str, data: &[u8]) {
    let (body, meta) = store.get(key).unwrap_or_else(|| panic!("{key} missing"));
    assert!(
        body == data,
        "{key}: stored {:?}",
        String::from_utf8_lossy(&body[..body.len().min(64)])
    );
    assert_eq!(meta.get("rgrid-sha256"), Some(&sha256_hex(data)), "{key}");
}

#[test]
fn tar_x_then_sync_puts_every_file_in_the_store() {
    let store = TestStore::start();
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    let mut files = Vec::new();
    for i in 0..120 {
        let rel = format!("results/part-{}/f{i}.bin", i % 7);
        let len = if i == 0 { 20 << 20 } else { 100 + i * 37 };
        let data = pseudo_random(len, i as u64);
        fs::create_dir_all(tree.join(&rel).parent().unwrap()).unwrap();
        fs::write(tree.join(&rel), &data).unwrap();
        files.push((rel, data));
    }
    let archive = local.path().join("tree.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&tree)
        .arg("results"));
    let mount = Mount::new(&store, &["--write-back"]);
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&mount.path));
    // Pending or not, the tree reads back as written.
    let (rel, data) = &files[5];
    assert!(fs::read(mount.join(rel)).unwrap() == *data);
    let out = sync(&store, &mount);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (rel, data) in &files {
        assert_stored(&store, rel, data);
    }
    assert_eq!(upload_state(&mount.join(&files[3].0)), "committed");
}

#[test]
fn close_returns_before_the_upload_and_fsync_waits_for_it() {
    let store = TestStore::start();
    store.slow_uploads(Duration::from_millis(800));
    let mount = Mount::new(&store, &["--write-back"]);
    let started = Instant::now();
    fs::write(mount.join("quick.txt"), b"closed at local speed").unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "close waited"
    );
    assert!(store.get("quick.txt").is_none(), "not uploaded yet");
    assert!(
        upload_state(&mount.join("quick.txt")).starts_with("queued")
            || upload_state(&mount.join("quick.txt")) == "uploading"
    );
    assert_eq!(
        fs::read(mount.join("quick.txt")).unwrap(),
        b"closed at local speed"
    );

    let mut file = fs::File::create(mount.join("synced.txt")).unwrap();
    file.write_all(b"durable at fsync").unwrap();
    file.sync_all().unwrap();
    assert_stored(&store, "synced.txt", b"durable at fsync");
    drop(file);

    // fsync of the directory waits for every file in it.
    fs::create_dir(mount.join("d")).unwrap();
    for i in 0..3 {
        fs::write(mount.join(&format!("d/{i}")), format!("{i}")).unwrap();
    }
    let dir = fs::File::open(mount.join("d")).unwrap();
    dir.sync_all()
        .unwrap_or_else(|e| panic!("fsync of a directory: {e}: {}", mount.log()));
    for i in 0..3 {
        assert_stored(&store, &format!("d/{i}"), format!("{i}").as_bytes());
    }
}

#[test]
fn with_the_store_down_closes_succeed_sync_waits_and_only_the_last_content_goes_up() {
    let mut store = TestStore::start();
    let mount = Mount::new(&store, &["--write-back"]);
    // Made here: lookups of new names in it need not ask the store.
    fs::create_dir(mount.join("out")).unwrap();
    store.stop();
    fs::write(mount.join("out/over.txt"), b"first").unwrap();
    // An attempt in flight when a newer version closes is finished, not cut: a request
    // cut after its body was sent may still be applied, after the newer one. This waits
    // for the first attempt to fail (the SDK's own retries of a refused connection take
    // up to 3 s), so that the superseded content is never sent.
    let first_failed = Instant::now();
    while !upload_state(&mount.join("out/over.txt")).starts_with("retrying") {
        assert!(
            first_failed.elapsed() < Duration::from_secs(20),
            "{}",
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("first attempt failed after {:?}", first_failed.elapsed());
    fs::write(mount.join("out/over.txt"), b"second, the one to keep").unwrap();
    fs::write(mount.join("out/a.txt"), b"renamed while pending").unwrap();
    fs::write(mount.join("out/b.txt"), b"unlinked while pending").unwrap();
    fs::rename(mount.join("out/a.txt"), mount.join("out/c.txt")).unwrap();
    fs::remove_file(mount.join("out/b.txt")).unwrap();
    assert_eq!(
        fs::read(mount.join("out/c.txt")).unwrap(),
        b"renamed while pending"
    );
    assert_eq!(
        fs::read(mount.join("out/over.txt")).unwrap(),
        b"second, the one to keep"
    );
    let mut names: Vec<_> = fs::read_dir(mount.join("out"))
        .unwrap_or_else(|e| panic!("{e} {}", mount.log()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["c.txt", "over.txt"]);

    let mountpoint = mount.path.to_str().unwrap().to_owned();
    let mut waiting = rgrid_mount_bare(&store)
        .args(["sync", &mountpoint])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "sync returned with the store down"
    );
    store.restart();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = waiting.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "sync still waiting"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    if store.get("out/over.txt").map(|(b, _)| b) != Some(b"second, the one to keep".to_vec()) {
        panic!("{}", mount.log());
    }
    assert_stored(&store, "out/over.txt", b"second, the one to keep");
    assert_stored(&store, "out/c.txt", b"renamed while pending");
    assert!(
        store.get("out/a.txt").is_none(),
        "the old name was never created"
    );
    assert!(
        store.get("out/b.txt").is_none(),
        "an unlinked file was uploaded"
    );
    assert_eq!(
        store.requests("PutObject"),
        2,
        "superseded content is not sent: {}",
        mount.log()
    );
}

#[test]
fn a_refused_upload_fails_sync_naming_the_file_and_is_kept() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &["--write-back"]);
    store.refuse_uploads(true);
    fs::write(mount.join("refused.txt"), b"kept until it can go up").unwrap();
    let out = sync(&store, &mount);
    assert_eq!(out.status.code(), Some(1));
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("refused.txt"), "{report}");
    let state = upload_state(&mount.join("refused.txt"));
    assert!(state.starts_with("failed: "), "{state}");
    store.refuse_uploads(false);
    let out = sync(&store, &mount);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_stored(&store, "refused.txt", b"kept until it can go up");
}

#[test]
fn a_killed_daemon_with_200_pending_files_uploads_them_after_a_remount() {
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let args = [
        "--write-back",
        "--cache-dir",
        cache_dir,
        "--upload-concurrency",
        "2",
    ];
    let mut mount = Mount::new(&store, &args);
    store.slow_uploads(Duration::from_millis(300));
    fs::create_dir(mount.join("out")).unwrap();
    for i in 0..200 {
        fs::write(mount.join(&format!("out/{i}")), format!("content {i}")).unwrap();
    }
    // The last ones closed: still queued when they go.
    for i in 190..200 {
        fs::remove_file(mount.join(&format!("out/{i}"))).unwrap();
    }
    mount.kill();
    mount.wait(Duration::from_secs(10)).expect("killed");
    drop(mount);
    let landed = (0..190)
        .filter(|i| store.get(&format!("out/{i}")).is_some())
        .count();
    assert!(
        landed < 150,
        "{landed} uploaded before the kill: too few left pending"
    );
    store.slow_uploads(Duration::ZERO);
    let mount = Mount::new(&store, &args);
    let out = sync(&store, &mount);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 190..200 {
        assert!(
            store.get(&format!("out/{i}")).is_none(),
            "out/{i} was deleted before the kill"
        );
    }
    for i in 0..190 {
        assert_stored(
            &store,
            &format!("out/{i}"),
            format!("content {i}").as_bytes(),
        );
    }
    // Each file once; a PUT cut off by the kill may be made again, no more.
    let puts = store.requests("PutObject");
    assert!(puts <= 190 + 2, "{puts} PUTs for 190 files");
}

#[test]
fn unmount_waits_for_pending_uploads_and_exits_zero() {
    let store = TestStore::start();
    let mut mount = Mount::new(&store, &["--write-back"]);
    store.slow_uploads(Duration::from_millis(200));
    let data = pseudo_random(3 << 20, 9);
    for i in 0..10 {
        fs::write(mount.join(&format!("f{i}")), &data).unwrap();
    }
    run(Command::new("umount").arg(&mount.path));
    let status = mount.wait(Duration::from_secs(60)).expect("daemon exits");
    assert!(status.success(), "{}", mount.log());
    for i in 0..10 {
        assert_stored(&store, &format!("f{i}"), &data);
    }
}

#[test]
fn a_directory_of_300_files_renames_in_the_store() {
    let store = TestStore::start();
    for i in 0..300 {
        store.put(&format!("pkg/build/lib{i}.so"), format!("object {i}"));
    }
    store.put("pkg/build/sub/deep.txt", "deep");
    let mount = Mount::new(&store, &["--write-back"]);
    // Refused for now: pending, and not in flight, when the rename comes.
    store.refuse_uploads(true);
    fs::write(mount.join("pkg/build/pending.txt"), b"closed, not uploaded").unwrap();
    assert_eq!(sync(&store, &mount).status.code(), Some(1));
    store.refuse_uploads(false);
    let copies = store.requests("CopyObject");
    fs::rename(mount.join("pkg/build"), mount.join("pkg/dist")).unwrap();
    assert_eq!(
        store.requests("CopyObject") - copies,
        301,
        "one copy per stored object"
    );
    assert!(!mount.join("pkg/build").exists());
    assert_eq!(
        fs::read(mount.join("pkg/dist/lib7.so")).unwrap(),
        b"object 7"
    );
    assert_eq!(
        fs::read(mount.join("pkg/dist/sub/deep.txt")).unwrap(),
        b"deep"
    );
    let out = sync(&store, &mount);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..300 {
        assert!(
            store.get(&format!("pkg/build/lib{i}.so")).is_none(),
            "lib{i} left behind"
        );
        let (body, _) = store.get(&format!("pkg/dist/lib{i}.so")).expect("moved");
        assert_eq!(body, format!("object {i}").into_bytes());
    }
    assert_stored(&store, "pkg/dist/pending.txt", b"closed, not uploaded");
    assert!(store.get("pkg/build/pending.txt").is_none());
}

#[test]
fn a_directory_rename_killed_midway_finishes_at_the_next_start() {
    let store = TestStore::start();
    for i in 0..200 {
        store.put(&format!("tree/a/f{i}"), format!("{i}"));
    }
    let cache = tempfile::tempdir().unwrap();
    let args = ["--cache-dir", cache.path().to_str().unwrap()];
    let mut mount = Mount::new(&store, &args);
    store.slow_uploads(Duration::from_millis(5));
    let from = mount.join("tree/a");
    let to = mount.join("tree/b");
    let renaming = std::thread::spawn(move || fs::rename(from, to));
    // Some objects moved, others not yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.requests("DeleteObject") < 20 {
        assert!(Instant::now() < deadline, "the rename did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    mount.kill();
    mount.wait(Duration::from_secs(10)).expect("killed");
    let _ = renaming.join();
    drop(mount);
    let mut not_moved = 0;
    for i in 0..200 {
        let old = store.get(&format!("tree/a/f{i}")).is_some();
        let new = store.get(&format!("tree/b/f{i}")).is_some();
        assert!(old || new, "f{i} under neither name");
        not_moved += usize::from(old);
    }
    assert!(not_moved > 0, "the kill came after the rename was done");
    let mount = Mount::new(&store, &args);
    for i in 0..200 {
        assert!(
            store.get(&format!("tree/a/f{i}")).is_none(),
            "f{i} not moved"
        );
        assert_eq!(
            fs::read(mount.join(&format!("tree/b/f{i}"))).unwrap(),
            format!("{i}").into_bytes()
        );
    }
}

#[test]
fn closes_past_max_pending_wait_for_room_and_nothing_is_dropped() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &["--write-back", "--max-pending", "1"]);
    store.slow_uploads(Duration::from_millis(700));
    let data = pseudo_random(700 << 10, 4);
    let started = Instant::now();
    fs::write(mount.join("first"), &data).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the first fits"
    );
    // 1.4 MiB would be pending: this close waits until the first is in the store.
    fs::write(mount.join("second"), &data).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "the second did not wait"
    );
    assert_stored(&store, "first", &data);
    let out = sync(&store, &mount);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_stored(&store, "second", &data);
}
