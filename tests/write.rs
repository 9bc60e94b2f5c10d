//! The write engine through a real mount: what ordinary tools write reaches the store,
//! close reports the truth, and nothing closed is lost when the store or daemon fails.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use common::{peak_rss_mib, pseudo_random, run, Mount, TestStore};
use rgrid_mount::artifact::sha256_hex;

const MIB: usize = 1 << 20;

#[test]
fn cp_in_reaches_the_store_with_its_sha256() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let local = tempfile::tempdir().unwrap();
    for (name, len) in [("small.txt", 1000), ("large.bin", 20 * MIB + 7)] {
        let data = pseudo_random(len, len as u64);
        fs::write(local.path().join(name), &data).unwrap();
        fs::create_dir_all(mount.join("out")).unwrap();
        run(Command::new("cp")
            .arg(local.path().join(name))
            .arg(mount.join("out")));
        let (body, meta) = store
            .get(&format!("out/{name}"))
            .expect("object after close");
        assert!(body == data, "{name}: stored bytes differ");
        assert_eq!(meta.get("rgrid-sha256"), Some(&sha256_hex(&data)), "{name}");
        assert!(
            fs::read(mount.join("out").join(name)).unwrap() == data,
            "{name}: read back"
        );
        assert_eq!(
            fs::metadata(mount.join("out").join(name)).unwrap().len(),
            len as u64
        );
    }
}

#[test]
fn many_writers_at_once_upload_in_bounded_memory() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let local = tempfile::tempdir().unwrap();
    let data = pseudo_random(48 * MIB, 48);
    let src = local.path().join("src.bin");
    fs::write(&src, &data).unwrap();
    peak_rss_mib(mount.pid());
    // Six cp at once, 6 parts each: unbounded, 36 parts of 8 MiB would be in memory
    // together (seen: 403 MiB for 8 writers); the mount-wide limit is 8 bodies.
    let copies: Vec<_> = (0..6)
        .map(|i| {
            Command::new("cp")
                .arg(&src)
                .arg(mount.join(&format!("par-{i}.bin")))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut cp in copies {
        assert!(cp.wait().unwrap().success());
    }
    let rss = peak_rss_mib(mount.pid());
    assert!(rss < 192.0, "daemon peak RSS {rss:.0} MiB");
    for i in 0..6 {
        let (body, _) = store.get(&format!("par-{i}.bin")).unwrap();
        assert!(body == data, "par-{i}.bin differs");
    }
}

#[test]
fn a_child_closing_an_inherited_descriptor_uploads_nothing() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let path = mount.join("parent.txt");
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(b"first half, ").unwrap();
    let puts = store.requests("PutObject");
    // The child starts with a copy of the descriptor; its exec closes it (O_CLOEXEC).
    run(&mut Command::new("true"));
    assert_eq!(
        store.requests("PutObject"),
        puts,
        "a child's close uploads no half-written file"
    );
    file.write_all(b"second half").unwrap();
    drop(file); // the opener's close uploads, and waits for it
    assert_eq!(store.requests("PutObject"), puts + 1);
    let (body, _) = store.get("parent.txt").unwrap();
    assert_eq!(body, b"first half, second half");

    // Opened by one thread and closed by another of the same process: that close uploads
    // (a second descriptor keeps the release, which would upload too, out of the way).
    let other = mount.join("threads.txt");
    let file = std::thread::spawn(move || {
        let mut file = fs::File::create(other).unwrap();
        file.write_all(b"from a thread").unwrap();
        file
    });
    let file = file.join().unwrap();
    let held = file.try_clone().unwrap();
    drop(file);
    assert_eq!(store.get("threads.txt").unwrap().0, b"from a thread");
    drop(held);

    // Popen(cmd, stdout=f), then f.close(): once the opener has closed, the child's exit
    // is the last close; it uploads, and wait() returns after it.
    let out = fs::File::create(mount.join("child.txt")).unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 0.2; echo from the child"])
        .stdout(out);
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // the parent's descriptor: the opener's close
    assert!(child.wait().unwrap().success());
    assert_eq!(store.get("child.txt").unwrap().0, b"from the child\n");
}

#[test]
fn a_corrupt_object_is_never_rewritten_as_a_new_version() {
    let store = TestStore::start();
    let data = pseudo_random(40 * MIB, 31);
    let wrong = sha256_hex(b"what the writer of the object hashed");
    store.put_with_meta("corrupt.bin", data.clone(), &[("rgrid-sha256", &wrong)]);
    let mount = Mount::new(&store, &[]);
    let path = mount.join("corrupt.bin");
    // A read far into the file first: the integrity check holds it aside and still
    // hashes the whole file in order as the first write completes the fill.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut buf = vec![0; 4096];
    file.read_exact_at(&mut buf, 36 * MIB as u64).unwrap();
    let err = file.write_at(b"patch", 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(file);
    let (body, meta) = store.get("corrupt.bin").unwrap();
    assert!(body == data, "the stored object is untouched");
    assert_eq!(meta["rgrid-sha256"], wrong);
}

#[test]
fn random_writes_overwrite_truncate_and_append() {
    let store = TestStore::start();
    store.put("f.bin", vec![b'a'; 10_000]);
    let mount = Mount::new(&store, &[]);
    let path = mount.join("f.bin");
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"XYZ", 5000).unwrap();
    file.write_all_at(b"tail", 12_000).unwrap();
    drop(file);
    let mut expected = vec![b'a'; 10_000];
    expected[5000..5003].copy_from_slice(b"XYZ");
    expected.resize(12_000, 0);
    expected.extend_from_slice(b"tail");
    assert!(store.get("f.bin").unwrap().0 == expected, "random writes");

    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"+more").unwrap();
    drop(file);
    expected.extend_from_slice(b"+more");
    assert!(store.get("f.bin").unwrap().0 == expected, "append");

    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(100).unwrap();
    drop(file);
    assert_eq!(store.get("f.bin").unwrap().0, expected[..100]);

    fs::write(&path, b"replaced").unwrap();
    assert_eq!(store.get("f.bin").unwrap().0, b"replaced");
    assert_eq!(fs::read(&path).unwrap(), b"replaced");
}

#[test]
fn empty_file_created_by_touch_exists_in_the_store() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    run(Command::new("touch").arg(mount.join("empty")));
    assert_eq!(store.get("empty").unwrap().0, b"");
    assert_eq!(fs::metadata(mount.join("empty")).unwrap().len(), 0);
}

#[test]
fn reads_of_a_file_being_written_see_the_written_bytes() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let path = mount.join("live.txt");
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all(b"hello world").unwrap();
    file.seek(SeekFrom::Start(6)).unwrap();
    let mut buf = [0u8; 5];
    std::io::Read::read_exact(&mut file, &mut buf).unwrap();
    assert_eq!(&buf, b"world");
    assert_eq!(fs::metadata(&path).unwrap().len(), 11);
    assert!(
        store.get("live.txt").is_none(),
        "nothing uploaded before close"
    );
    drop(file);
    assert_eq!(store.get("live.txt").unwrap().0, b"hello world");
}

#[test]
fn a_reader_beside_a_writer_reads_the_stored_version_and_the_directory_stays() {
    let store = TestStore::start();
    store.put("dir/kept.txt", b"stored".to_vec());
    store.put("dir/other.txt", b"x".to_vec());
    let mount = Mount::new(&store, &["--metadata-ttl", "0"]);
    let path = mount.join("dir/kept.txt");
    let writer = OpenOptions::new().write(true).open(&path).unwrap();
    writer.write_all_at(b"written, not closed", 100).unwrap();
    // Another process: the writer's changes are its own until it closes.
    assert_eq!(run(Command::new("cat").arg(&path)), "stored");
    // A file being written keeps its directory when another client deletes the rest.
    let created = mount.join("dir/new.txt");
    let mut new = fs::File::create(&created).unwrap();
    new.write_all(b"new").unwrap();
    store.delete("dir/other.txt");
    store.delete("dir/kept.txt");
    assert!(common::names(&mount.join("")).contains(&"dir".to_owned()));
    assert!(common::names(&mount.join("dir")).contains(&"new.txt".to_owned()));
    drop(new);
    assert_eq!(store.get("dir/new.txt").unwrap().0, b"new");
}

#[test]
fn rename_replaces_the_target_and_unlink_deletes() {
    let store = TestStore::start();
    store.put("d/old.txt", "old");
    store.put("d/target.txt", "to be replaced");
    let mount = Mount::new(&store, &[]);
    // rsync's way: write a temp file, then rename it over the target.
    fs::write(mount.join("d/.tmp.XXXX"), "new content").unwrap();
    fs::rename(mount.join("d/.tmp.XXXX"), mount.join("d/target.txt")).unwrap();
    assert_eq!(store.get("d/target.txt").unwrap().0, b"new content");
    assert!(store.get("d/.tmp.XXXX").is_none());
    assert_eq!(
        fs::read_to_string(mount.join("d/target.txt")).unwrap(),
        "new content"
    );
    fs::remove_file(mount.join("d/old.txt")).unwrap();
    assert!(store.get("d/old.txt").is_none());
    assert_eq!(
        fs::metadata(mount.join("d/old.txt")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    let mut names: Vec<String> = fs::read_dir(mount.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["target.txt"]);
}

#[test]
fn mkdir_and_rmdir_follow_posix_rules() {
    let store = TestStore::start();
    store.put("full/file", "x");
    let mount = Mount::new(&store, &[]);
    fs::create_dir(mount.join("made")).unwrap();
    assert!(mount.join("made").is_dir());
    assert_eq!(
        fs::create_dir(mount.join("made"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EEXIST)
    );
    fs::write(mount.join("made/inner.txt"), "i").unwrap();
    assert_eq!(store.get("made/inner.txt").unwrap().0, b"i");
    assert_eq!(
        fs::remove_dir(mount.join("full"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    fs::create_dir(mount.join("empty")).unwrap();
    fs::remove_dir(mount.join("empty")).unwrap();
    assert!(!mount.join("empty").exists());
}

#[test]
fn hard_links_are_refused() {
    let store = TestStore::start();
    store.put("a", "a");
    let mount = Mount::new(&store, &[]);
    assert_eq!(
        fs::hard_link(mount.join("a"), mount.join("b"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EPERM)
    );
}

#[test]
fn store_down_at_close_gives_eio_and_the_upload_completes_later() {
    let mut store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let mut file = fs::File::create(mount.join("precious.txt")).unwrap();
    file.write_all(b"do not lose me").unwrap();
    store.stop();
    let err = file.sync_all().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(file);
    store.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.get("precious.txt").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "not uploaded after the store came back: {}",
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(store.get("precious.txt").unwrap().0, b"do not lose me");
}

#[test]
fn a_killed_daemon_finishes_its_uploads_on_restart() {
    let mut store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap().to_owned();
    let data = pseudo_random(3 * MIB, 77);
    {
        let mut mount = Mount::new(&store, &["--cache-dir", &cache_arg]);
        let mut file = fs::File::create(mount.join("out.bin")).unwrap();
        file.write_all(&data).unwrap();
        store.stop();
        assert_eq!(file.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
        mount.kill();
        mount.wait(Duration::from_secs(10));
    }
    store.restart();
    let _mount = Mount::new(&store, &["--cache-dir", &cache_arg]);
    let (body, meta) = store.get("out.bin").expect("uploaded at restart");
    assert!(body == data);
    assert_eq!(meta.get("rgrid-sha256"), Some(&sha256_hex(&data)));
}

#[test]
fn read_only_mount_still_refuses_changes() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &["--read-only"]);
    assert_eq!(
        fs::write(mount.join("x"), "x").unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );
    assert_eq!(
        fs::create_dir(mount.join("d")).unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );
}

#[test]
fn ls_l_after_writing_shows_the_written_sizes() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    fs::create_dir(mount.join("new")).unwrap();
    assert!(fs::read_dir(mount.join("new")).unwrap().next().is_none());
    for i in 0..3 {
        fs::write(mount.join(&format!("new/f{i}")), vec![b'x'; 1000 * (i + 1)]).unwrap();
    }
    let ls = run(Command::new("ls").arg("-l").arg(mount.join("new")));
    let sizes: Vec<&str> = ls
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().nth(4))
        .collect();
    assert_eq!(sizes, ["1000", "2000", "3000"], "{ls}");
}

#[test]
fn a_full_spool_disk_gives_enospc_and_uploads_nothing() {
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(cache.path()));
    let unmount = TmpfsGuard(cache.path().to_owned());
    let mount = Mount::new(&store, &["--cache-dir", cache.path().to_str().unwrap()]);
    let mut file = fs::File::create(mount.join("huge.bin")).unwrap();
    let chunk = vec![7u8; MIB];
    let err = (0..8)
        .find_map(|_| file.write_all(&chunk).err())
        .expect("the spool fills up");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let closed = file.sync_all();
    assert_eq!(closed.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    drop(file);
    assert!(
        store.get("huge.bin").is_none(),
        "no half object in the store"
    );
    drop(mount);
    drop(unmount);
}

/// Unmounts a test's tmpfs when dropped, even if the test failed.
struct TmpfsGuard(std::path::PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn opening_for_write_without_truncate_copies_only_what_is_needed() {
    let store = TestStore::start();
    let original = pseudo_random(20 * MIB, 31);
    store.put("big.bin", original.clone());
    let mount = Mount::new(&store, &[]);
    let path = mount.join("big.bin");
    fs::metadata(&path).unwrap();
    let fetched = store.range_bytes();

    // Opened read-write and closed unchanged: nothing fetched, nothing uploaded.
    drop(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap(),
    );
    assert_eq!(store.range_bytes(), fetched);

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert_eq!(file.metadata().unwrap().len(), original.len() as u64);
    // Reads before any write copy only what they touch.
    let mut buf = vec![0; 4096];
    file.read_exact_at(&mut buf, 12 * MIB as u64).unwrap();
    assert_eq!(buf, original[12 * MIB..12 * MIB + 4096]);
    let before_write = store.range_bytes() - fetched;
    assert!(
        before_write <= 2 * MIB as u64,
        "fetched {before_write} bytes for 4 KiB"
    );
    // The first write copies the rest: a replaced object fails the write, not close.
    file.write_all_at(b"patched!", 5 * MIB as u64).unwrap();
    let mut around = vec![0; 16];
    file.read_exact_at(&mut around, 5 * MIB as u64 - 4).unwrap();
    assert_eq!(&around[4..12], b"patched!");
    assert_eq!(&around[..4], &original[5 * MIB - 4..5 * MIB]);
    drop(file);

    let mut expected = original.clone();
    expected[5 * MIB..5 * MIB + 8].copy_from_slice(b"patched!");
    let (body, meta) = store.get("big.bin").unwrap();
    assert!(body == expected, "close uploads the object with the patch");
    assert_eq!(meta["rgrid-sha256"], sha256_hex(&expected));

    // ftruncate on a lazily filled handle: what lies past the new end is never fetched.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(MIB as u64).unwrap();
    drop(file);
    assert!(store.get("big.bin").unwrap().0 == expected[..MIB]);
}

#[test]
fn two_writers_of_one_file_last_close_wins_and_both_are_told_the_truth() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let path = mount.join("shared.txt");
    let mut first = fs::File::create(&path).unwrap();
    let mut second = OpenOptions::new().write(true).open(&path).unwrap();
    first.write_all(b"from the first writer").unwrap();
    second.write_all(b"from the second").unwrap();
    first.sync_all().expect("first close reports success");
    assert_eq!(store.get("shared.txt").unwrap().0, b"from the first writer");
    second.sync_all().expect("second close reports success");
    drop((first, second));
    assert_eq!(store.get("shared.txt").unwrap().0, b"from the second");
    assert_eq!(fs::read(&path).unwrap(), b"from the second");
}

#[test]
fn unmount_with_the_store_down_names_each_pending_upload_and_its_spool() {
    let mut store = TestStore::start();
    let mut mount = Mount::new(&store, &[]);
    let mut file = fs::File::create(mount.join("stuck.txt")).unwrap();
    file.write_all(b"waiting for the store").unwrap();
    store.stop();
    assert_eq!(file.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    drop(file);
    run(Command::new("umount").arg(&mount.path));
    assert!(
        mount.wait(Duration::from_secs(60)).is_some(),
        "daemon exits"
    );
    let log = mount.log();
    let line = log
        .lines()
        .find(|l| l.contains("still pending") && l.contains("stuck.txt"))
        .unwrap_or_else(|| panic!("no line names the pending file: {log}"));
    let spool = line
        .split("spool=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(fs::read(spool).unwrap(), b"waiting for the store", "{line}");
}

#[test]
fn a_lazy_writer_whose_object_was_replaced_fails_its_write_not_its_close() {
    let store = TestStore::start();
    store.put("shared.bin", pseudo_random(3 * MIB, 5));
    let mount = Mount::new(&store, &[]);
    let path = mount.join("shared.bin");
    let a = OpenOptions::new().write(true).open(&path).unwrap();
    let b = OpenOptions::new().write(true).open(&path).unwrap();
    a.write_all_at(b"A was here", 0).unwrap();
    a.sync_all().unwrap();
    drop(a);
    let err = b.write_all_at(b"B", 100).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    b.sync_all().expect("nothing of B's to upload");
    drop(b);
    assert_eq!(&store.get("shared.bin").unwrap().0[..10], b"A was here");
}

#[test]
fn a_streamed_upload_records_its_sha256_without_a_copy_and_readers_check_it() {
    let store = TestStore::start();
    let data = pseudo_random(64 * MIB, 64);
    {
        let mount = Mount::new(&store, &[]);
        fs::write(mount.join("big.bin"), &data).unwrap();
        assert_eq!(store.requests("CopyObject"), 0, "no copy after the upload");
        assert_eq!(store.requests("PutObject"), 0, "streamed in parts");
        assert_eq!(store.requests("PutObjectTagging"), 1);
    }
    let (body, meta) = store.get("big.bin").expect("stored");
    assert!(body == data);
    assert_eq!(meta.get("rgrid-sha256"), Some(&sha256_hex(&data)));
    {
        let tag_reads = store.requests("GetObjectTagging");
        let mount = Mount::new(&store, &[]);
        assert!(fs::read(mount.join("big.bin")).unwrap() == data);
        let reads = store.requests("GetObjectTagging") - tag_reads;
        assert_eq!(reads, 1, "one tag read for the version opened");
    }
    // One byte flipped on the store's disk, behind its index: same ETag, wrong bytes.
    let path = store.dir.path().join(common::BUCKET).join("big.bin");
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[!data[40 * MIB]], 40 * MIB as u64)
        .unwrap();
    drop(file);
    let mount = Mount::new(&store, &[]);
    let err = fs::read(mount.join("big.bin")).expect_err("a corrupt object is EIO");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
}
