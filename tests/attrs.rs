//! Modes and mtimes that ordinary tools set (`touch -d`, `chmod`, `cp -p`, `rsync -a`,
//! `tar -x`) are kept in the object's metadata and shown by stat, also by a new mount.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use common::{run, Mount, TestStore};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn mtime(path: &std::path::Path) -> i64 {
    fs::metadata(path).unwrap().mtime()
}

#[test]
fn a_chmod_landing_while_close_uploads_reaches_the_store() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let path = mount.join("late.txt");
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(b"data").unwrap();
    // A second descriptor keeps the file open: closing the first is a flush alone, so
    // what reaches the store is that close's doing, not the release's.
    let held = file.try_clone().unwrap();
    // The store fails the first three PUTs; the SDK backs off between attempts, so the
    // upload at close is still running when chmod comes in.
    let puts = store.requests("PutObject");
    store.fail_next(3);
    std::thread::scope(|s| {
        s.spawn(|| {
            while store.requests("PutObject") == puts {
                std::thread::sleep(Duration::from_millis(1));
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        });
        // close(), not fsync: fsync holds the inode lock, which chmod waits for.
        drop(file);
    });
    assert_eq!(mode(&path), 0o600);
    let (body, meta) = store.get("late.txt").unwrap();
    assert_eq!(body, b"data");
    assert_eq!(meta["rgrid-mode"], "0600", "{meta:?}");
    drop(held);
}

#[test]
fn touch_d_and_chmod_persist_in_the_store() {
    let store = TestStore::start();
    store.put("d/stored.txt", "already here");
    {
        let mount = Mount::new(&store, &[]);
        let stored = mount.join("d/stored.txt");
        run(Command::new("touch")
            .args(["-d", "2021-03-04 05:06:07Z"])
            .arg(&stored));
        run(Command::new("chmod").arg("0600").arg(&stored));
        assert_eq!((mtime(&stored), mode(&stored)), (1_614_834_367, 0o600));
        assert_eq!(fs::read_to_string(&stored).unwrap(), "already here");
        let (_, meta) = store.get("d/stored.txt").unwrap();
        assert_eq!(meta["rgrid-mode"], "0600");
        assert!(meta["rgrid-mtime"].starts_with("1614834367."), "{meta:?}");
    }
    // Another mount, listing first: small directories are listed with their metadata.
    let mount = Mount::new(&store, &[]);
    let out = run(Command::new("ls")
        .arg("-l")
        .arg("--time-style=+%s")
        .arg(mount.join("d")));
    assert!(
        out.contains("-rw------- ") && out.contains(" 1614834367 stored.txt"),
        "{out}"
    );
}

#[test]
fn cp_p_keeps_mode_and_mtime_of_a_new_file() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("tool.sh");
    fs::write(&src, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    run(Command::new("touch")
        .args(["-d", "2020-01-02 03:04:05Z"])
        .arg(&src));
    run(Command::new("cp")
        .arg("-p")
        .arg(&src)
        .arg(mount.join("tool.sh")));
    let copied = mount.join("tool.sh");
    assert_eq!((mode(&copied), mtime(&copied)), (0o750, 1_577_934_245));
    let (body, meta) = store.get("tool.sh").unwrap();
    assert_eq!(body, b"#!/bin/sh\necho hi\n");
    assert_eq!(meta["rgrid-mode"], "0750");
}

#[test]
fn rsync_a_round_trip_keeps_contents_modes_and_mtimes() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    let files = [
        ("a.txt", 0o644, 1_500_000_000),
        ("sub/b.csv", 0o600, 1_600_000_000),
        ("sub/deeper/c.bin", 0o755, 1_700_000_000),
    ];
    for (name, perm, time) in files {
        let path = tree.join(name);
        fs::write(&path, format!("content of {name}\n").repeat(100)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(perm)).unwrap();
        run(Command::new("touch")
            .arg("-d")
            .arg(format!("@{time}"))
            .arg(&path));
    }
    std::os::unix::fs::symlink("../a.txt", tree.join("sub/link")).unwrap();
    run(Command::new("rsync").arg("-a").arg(&tree).arg(&mount.path));
    let back = tempfile::tempdir().unwrap();
    // A fresh mount: what comes back is what the store kept, not this mount's memory.
    drop(mount);
    let mount = Mount::new(&store, &[]);
    run(Command::new("rsync")
        .arg("-a")
        .arg(mount.join("tree"))
        .arg(back.path()));
    for (name, perm, time) in files {
        let path = back.path().join("tree").join(name);
        let want = format!("content of {name}\n").repeat(100);
        assert_eq!(fs::read_to_string(&path).unwrap(), want, "{name}");
        assert_eq!((mode(&path), mtime(&path)), (perm, time), "{name}");
    }
    let link = back.path().join("tree/sub/link");
    assert_eq!(fs::read_link(&link).unwrap().to_str(), Some("../a.txt"));
    let status = Command::new("rsync")
        .args(["-a", "--dry-run", "--itemize-changes"])
        .arg(&tree)
        .arg(&mount.path)
        .output()
        .unwrap();
    let changes = String::from_utf8_lossy(&status.stdout);
    // Directories keep no attributes of their own (they have no object): only files.
    assert!(
        !changes
            .lines()
            .any(|l| l.starts_with(">f") || l.starts_with(".f")),
        "rsync sees no file to update: {changes}"
    );
}

#[test]
fn symlinks_are_small_objects_that_read_back_as_links() {
    let store = TestStore::start();
    {
        let mount = Mount::new(&store, &[]);
        fs::create_dir(mount.join("d")).unwrap();
        fs::write(mount.join("d/target.txt"), "pointed at").unwrap();
        std::os::unix::fs::symlink("target.txt", mount.join("d/link")).unwrap();
        std::os::unix::fs::symlink("/elsewhere/abs", mount.join("d/abs")).unwrap();
        assert_eq!(
            fs::read_link(mount.join("d/link")).unwrap().to_str(),
            Some("target.txt")
        );
        assert_eq!(
            fs::read_to_string(mount.join("d/link")).unwrap(),
            "pointed at"
        );
        // Targets S3 metadata cannot carry live in the body only.
        let long = "a/".repeat(900);
        for (name, target) in [("accent", "données/é.txt"), ("long", long.as_str())] {
            std::os::unix::fs::symlink(target, mount.join("d").join(name)).unwrap();
            let read = fs::read_link(mount.join("d").join(name)).unwrap();
            assert_eq!(read.to_str(), Some(target), "{name}");
        }
        let err = std::os::unix::fs::symlink("x", mount.join("d/link")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        let (body, meta) = store.get("d/link").unwrap();
        assert_eq!(
            (body.as_slice(), meta["rgrid-symlink"].as_str()),
            (&b"target.txt"[..], "target.txt")
        );
    }
    // Listed again and again (no caching): still links, not files of the same version.
    let mount = Mount::new(&store, &["--metadata-ttl", "0"]);
    run(Command::new("ls").arg("-l").arg(mount.join("d")));
    let listed = run(Command::new("ls").arg("-l").arg(mount.join("d")));
    assert!(
        listed.contains("link -> target.txt") && listed.contains("abs -> /elsewhere/abs"),
        "{listed}"
    );
    assert!(fs::symlink_metadata(mount.join("d/link"))
        .unwrap()
        .file_type()
        .is_symlink());
    fs::remove_file(mount.join("d/link")).unwrap();
    assert!(store.get("d/link").is_none());
    assert_eq!(
        fs::read_to_string(mount.join("d/target.txt")).unwrap(),
        "pointed at"
    );
}

#[test]
fn a_write_by_a_process_without_cap_fsetid_clears_setuid() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let path = mount.join("tool");
    fs::write(&path, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o4755);
    // As on a local disk: a writer that may not keep the bit (no CAP_FSETID) drops it.
    let append = format!("echo 'exit 0' >> {}", path.display());
    run(Command::new("setpriv")
        .args(["--bounding-set", "-fsetid", "--inh-caps", "-fsetid", "--"])
        .args(["sh", "-c", &append]));
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o755);
    let (_, meta) = store.get("tool").expect("uploaded");
    assert_eq!(meta.get("rgrid-mode").map(String::as_str), Some("0755"));
}
