//! The errors that tools and POSIX suites check (issue 17): names too long for a file
//! system or for the store, renames onto what cannot be replaced, and files unlinked
//! while open. Each over a real mount of the embedded store, through std::fs and libc.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{names, Mount, TestStore};

fn errno_of(result: std::io::Result<impl Sized>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// ENAMETOOLONG as a command reports it, from `cmd` run on `path`.
fn command_errno(cmd: &[&str], path: &Path) -> i32 {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match (out.status.success(), stderr.contains("File name too long")) {
        (true, _) => 0,
        (false, true) => libc::ENAMETOOLONG,
        (false, false) => panic!("{cmd:?}: {stderr}"),
    }
}

/// Requests the store served, of every kind a name could cost.
fn store_requests(store: &TestStore) -> u64 {
    [
        "HeadObject",
        "ListObjectsV2",
        "GetObject",
        "PutObject",
        "CopyObject",
        "DeleteObject",
        "CreateMultipartUpload",
    ]
    .iter()
    .map(|op| store.requests(op))
    .sum()
}

/// Every file under `root`, by path relative to it, with its size: what two mounts of
/// one bucket must agree on (directories made here and still empty exist in this mount
/// only, as on any S3 mount).
fn files(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(root).unwrap().to_owned();
                out.insert(rel.to_string_lossy().into_owned(), meta.len());
            }
        }
    }
    out
}

/// Asserts that `mount` shows the files a fresh mount of the same bucket shows.
fn assert_same_as_fresh_mount(store: &TestStore, mount: &Mount) {
    let fresh = Mount::new(store, &[]);
    assert_eq!(
        files(&mount.path),
        files(&fresh.path),
        "this mount vs a fresh one"
    );
}

#[test]
fn names_over_255_bytes_are_enametoolong_before_any_request() {
    let store = TestStore::start();
    store.put("d/file", "content");
    store.put("d/sub/x", "x");
    let mount = Mount::new(&store, &[]);
    let d = mount.join("d");
    let (file, sub) = (d.join("file"), d.join("sub"));
    fs::metadata(&file).unwrap();
    fs::metadata(&sub).unwrap();
    let long = d.join("n".repeat(256));
    let wide = d.join("é".repeat(128)); // 256 bytes in 128 characters
    let before = store_requests(&store);

    let checks: Vec<(&str, i32)> = vec![
        ("lookup", errno_of(fs::metadata(&long))),
        ("lookup (multi-byte)", errno_of(fs::metadata(&wide))),
        ("create", errno_of(File::create(&long))),
        ("mkdir", errno_of(fs::create_dir(&long))),
        ("rmdir", errno_of(fs::remove_dir(&long))),
        ("unlink", errno_of(fs::remove_file(&long))),
        ("rename from", errno_of(fs::rename(&long, d.join("other")))),
        ("rename to", errno_of(fs::rename(&file, &long))),
        ("rename dir to", errno_of(fs::rename(&sub, &long))),
        (
            "symlink",
            errno_of(std::os::unix::fs::symlink("file", &long)),
        ),
        ("link", errno_of(fs::hard_link(&file, &long))),
        ("mknod", command_errno(&["mkfifo"], &long)),
        ("truncate", command_errno(&["truncate", "-s", "0"], &long)),
    ];
    for (op, errno) in &checks {
        assert_eq!(*errno, libc::ENAMETOOLONG, "{op}");
    }
    assert_eq!(
        store_requests(&store),
        before,
        "no request for a name too long"
    );
    // Nothing changed: the file is where it was, and no key was made.
    assert_eq!(fs::read(&file).unwrap(), b"content");
    assert_same_as_fresh_mount(&store, &mount);

    // 255 bytes is a name like any other.
    let longest = d.join("m".repeat(255));
    fs::write(&longest, "fits").unwrap();
    assert_eq!(fs::read(&longest).unwrap(), b"fits");
    assert!(store.get(&format!("d/{}", "m".repeat(255))).is_some());
}

#[test]
fn paths_whose_key_passes_1024_bytes_are_enametoolong_at_create() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    // Five directories of 200 bytes: a prefix of 1,005 bytes, a key of 1,024 at most.
    let mut deep = mount.path.clone();
    for c in ["a", "b", "c", "d", "e"] {
        deep = deep.join(c.repeat(200));
        fs::create_dir(&deep).unwrap();
    }
    let fits = deep.join("f".repeat(19)); // 1,024 bytes of key
    fs::write(&fits, "ok").unwrap();
    assert_eq!(fs::read(&fits).unwrap(), b"ok");
    let before = store_requests(&store);
    let over = deep.join("f".repeat(20));
    assert_eq!(errno_of(File::create(&over)), libc::ENAMETOOLONG, "create");
    assert_eq!(errno_of(fs::create_dir(&over)), libc::ENAMETOOLONG, "mkdir");
    let link = std::os::unix::fs::symlink("x", &over);
    assert_eq!(errno_of(link), libc::ENAMETOOLONG, "symlink");
    assert_eq!(
        store_requests(&store),
        before,
        "no request for a key too long"
    );
    assert_eq!(
        errno_of(fs::rename(&fits, &over)),
        libc::ENAMETOOLONG,
        "rename"
    );
    assert_eq!(
        fs::read(&fits).unwrap(),
        b"ok",
        "a failed rename changes nothing"
    );
    assert_same_as_fresh_mount(&store, &mount);
}

#[test]
fn rename_of_a_directory_onto_a_non_empty_one_is_enotempty() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let r1 = mount.join("r1");
    fs::create_dir_all(r1.join("src")).unwrap();
    fs::create_dir_all(r1.join("dst")).unwrap();
    File::create(r1.join("dst/x")).unwrap();

    let onto_full = fs::rename(r1.join("src"), r1.join("dst"));
    assert_eq!(errno_of(onto_full), libc::ENOTEMPTY);
    // Nothing changed: both directories, and x where it was.
    assert!(r1.join("src").is_dir());
    assert_eq!(names(&r1.join("dst")), ["x"]);
    assert!(store.get("r1/dst/x").is_some());
    assert_same_as_fresh_mount(&store, &mount);

    // A file onto a directory, a directory onto a file.
    fs::write(r1.join("f"), "f").unwrap();
    assert_eq!(
        errno_of(fs::rename(r1.join("f"), r1.join("dst"))),
        libc::EISDIR
    );
    assert_eq!(
        errno_of(fs::rename(r1.join("src"), r1.join("f"))),
        libc::ENOTDIR
    );

    // An empty directory onto an empty one replaces it, and only one is listed.
    fs::create_dir(r1.join("empty")).unwrap();
    fs::rename(r1.join("src"), r1.join("empty")).unwrap();
    assert_eq!(names(&r1), ["dst", "empty", "f"]);
    fs::remove_dir(r1.join("empty")).unwrap();
    assert_eq!(
        names(&r1),
        ["dst", "f"],
        "a removed directory stays removed"
    );

    // The tree can be removed whole, here and in the store.
    fs::remove_dir_all(&r1).unwrap();
    assert!(!r1.exists());
    assert!(store.get("r1/dst/x").is_none() && store.get("r1/f").is_none());
    assert_same_as_fresh_mount(&store, &mount);
}

#[test]
fn a_file_renamed_onto_another_replaces_it() {
    let store = TestStore::start();
    store.put("d/a", "new");
    store.put("d/b", "old");
    let mount = Mount::new(&store, &[]);
    fs::rename(mount.join("d/a"), mount.join("d/b")).unwrap();
    assert_eq!(names(&mount.join("d")), ["b"]);
    assert_eq!(fs::read(mount.join("d/b")).unwrap(), b"new");
    assert!(store.get("d/a").is_none());
    assert_same_as_fresh_mount(&store, &mount);
}

#[test]
fn an_unlinked_open_file_has_no_link_and_keeps_working() {
    let store = TestStore::start();
    store.put("d/read.txt", "stored bytes");
    let mount = Mount::new(&store, &[]);

    // A file being read: its descriptor still reads, and fstat says it has no link.
    let path = mount.join("d/read.txt");
    let mut reader = File::open(&path).unwrap();
    let mut first = [0u8; 6];
    reader.read_exact(&mut first).unwrap();
    fs::remove_file(&path).unwrap();
    assert_eq!(reader.metadata().unwrap().nlink(), 0);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(
        format!("{}{rest}", String::from_utf8_lossy(&first)),
        "stored bytes"
    );
    assert!(!path.exists());

    // A file being written: it keeps taking writes, and its close brings no key back.
    let path = mount.join("d/written.txt");
    let mut writer = OpenOptions::new()
        .create_new(true)
        .write(true)
        .read(true)
        .open(&path)
        .unwrap();
    writer.write_all(b"first ").unwrap();
    writer.sync_all().unwrap();
    assert!(store.get("d/written.txt").is_some());
    fs::remove_file(&path).unwrap();
    assert_eq!(writer.metadata().unwrap().nlink(), 0);
    writer.write_all(b"second").unwrap();
    drop(writer);
    assert!(
        store.get("d/written.txt").is_none(),
        "closed after unlink: no upload"
    );
    assert!(!path.exists());
    assert_same_as_fresh_mount(&store, &mount);
}
