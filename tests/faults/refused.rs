//! One kind of request refused alone (403, 404, 412, 500 on GET, HEAD, LIST, CopyObject
//! or DELETE), and objects changed behind the mount between its listing and its reads:
//! each is the errno its cause names, the bucket keeps what it had, and the mount goes
//! on once the store answers again.

use std::fs;
use std::io::Read;
use std::time::{Duration, Instant};

use super::proxy::{Fault, Op, When};
use super::{errno, record, Rig, MIB};
use crate::common::pseudo_random;

/// Retries `check` every 100 ms until it holds, for up to 10 s.
fn within_10_s(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_refused_get_is_the_errno_of_its_status() {
    let rig = Rig::new();
    let mount = rig.mount(&["--max-cache-size", "0"]);
    let data = pseudo_random(MIB, 50);
    for (status, expected) in [(403, libc::EACCES), (412, libc::EIO), (500, libc::EIO)] {
        // A file of its own: the page cache keeps what an earlier one read.
        let name = format!("r{status}.bin");
        rig.store.put(&name, data.clone());
        fs::metadata(mount.join(&name)).unwrap();
        rig.proxy
            .inject(Op::Get, Fault::status(status), When::Always);
        let started = Instant::now();
        assert_eq!(errno(fs::read(mount.join(&name))), expected, "{status}");
        record(
            &format!("{status} on every GET"),
            "errno of the status",
            started,
        );
        rig.proxy.heal();
        // A 500 counts the store unreachable: the probe ends that within 2 s.
        within_10_s("not recovered", || {
            fs::read(mount.join(&name)).is_ok_and(|read| read == data)
        });
    }
}

#[test]
fn a_failed_head_or_listing_is_eio_never_a_missing_name() {
    let rig = Rig::new();
    let mount = rig.mount(&["--metadata-ttl", "0"]);
    rig.store.put("d/there.txt", "there");
    for op in [Op::Head, Op::List] {
        rig.proxy.inject(op, Fault::status(500), When::Always);
        let started = Instant::now();
        let stat = fs::metadata(mount.join("d/there.txt"));
        // Either request may tell the name; one that fails is not "no such file".
        match stat {
            Ok(meta) => assert_eq!(meta.len(), 5, "{op:?}: the object's size"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{op:?}"),
        }
        let missing = fs::metadata(mount.join("d/missing.txt"));
        assert_eq!(errno(missing), libc::EIO, "{op:?}: unknown, not ENOENT");
        record(&format!("500 on every {op:?}"), "EIO", started);
        rig.proxy.heal();
        within_10_s("not recovered", || {
            fs::read_to_string(mount.join("d/there.txt")).is_ok_and(|t| t == "there")
        });
        let missing = fs::metadata(mount.join("d/missing.txt"));
        assert_eq!(errno(missing), libc::ENOENT);
    }
    rig.proxy.inject(Op::List, Fault::status(500), When::Always);
    assert_eq!(errno(fs::read_dir(mount.join("d"))), libc::EIO, "ls");
}

#[test]
fn a_refused_delete_or_copy_fails_the_call_and_keeps_the_object() {
    let rig = Rig::new();
    let mount = rig.mount(&["--metadata-ttl", "0"]);
    rig.store.put("keep.txt", "kept");
    fs::metadata(mount.join("keep.txt")).unwrap();
    rig.proxy
        .inject(Op::Delete, Fault::status(500), When::Always);
    let started = Instant::now();
    assert_eq!(errno(fs::remove_file(mount.join("keep.txt"))), libc::EIO);
    record("500 on every DELETE: rm", "EIO, object kept", started);
    rig.proxy.heal();
    within_10_s("store not back", || {
        fs::read_to_string(mount.join("keep.txt")).is_ok_and(|t| t == "kept")
    });
    assert_eq!(rig.store.get("keep.txt").unwrap().0, b"kept");
    rig.proxy.inject(Op::Copy, Fault::status(500), When::Always);
    let started = Instant::now();
    let moved = fs::rename(mount.join("keep.txt"), mount.join("moved.txt"));
    assert_eq!(errno(moved), libc::EIO);
    record("500 on every CopyObject: mv", "EIO, object kept", started);
    rig.proxy.heal();
    assert_eq!(rig.store.get("keep.txt").unwrap().0, b"kept");
    assert!(rig.store.get("moved.txt").is_none(), "no copy made");
    within_10_s("the old name is gone", || {
        fs::read_to_string(mount.join("keep.txt")).is_ok_and(|t| t == "kept")
    });
    assert_eq!(errno(fs::metadata(mount.join("moved.txt"))), libc::ENOENT);
}

#[test]
fn an_object_deleted_mid_read_is_eio_then_enoent_at_reopen() {
    let rig = Rig::new();
    let mount = rig.mount(&["--max-cache-size", "0", "--metadata-ttl", "0"]);
    let data = pseudo_random(32 * MIB, 51);
    rig.store.put("gone.bin", data.clone());
    let mut file = fs::File::open(mount.join("gone.bin")).unwrap();
    let mut head = vec![0u8; MIB];
    file.read_exact(&mut head).unwrap();
    rig.store.delete("gone.bin");
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = file.read_to_end(&mut rest);
    assert_eq!(errno(read), libc::EIO, "a short file is not its end");
    assert!(
        rest.iter().zip(&data[MIB..]).all(|(a, b)| a == b),
        "bytes before the error are the object's"
    );
    record("object deleted between two ranged GETs", "EIO", started);
    drop(file);
    assert_eq!(errno(fs::File::open(mount.join("gone.bin"))), libc::ENOENT);
}

#[test]
fn an_object_that_grew_after_its_listing_is_read_whole_or_eio() {
    let rig = Rig::new();
    let mount = rig.mount(&["--max-cache-size", "0", "--metadata-ttl", "60"]);
    rig.store.put("d/g.bin", pseudo_random(MIB, 52));
    let listed = fs::metadata(mount.join("d/g.bin")).unwrap().len();
    assert_eq!(listed, MIB as u64);
    let larger = pseudo_random(6 * MIB, 53);
    rig.store.put("d/g.bin", larger.clone());
    // The listing still says 1 MiB; the GET finds another object.
    let started = Instant::now();
    match fs::read(mount.join("d/g.bin")) {
        Ok(bytes) => assert!(bytes == larger, "the new object whole, not its first MiB"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
    }
    record(
        "object grew after its listing",
        "EIO or the new bytes",
        started,
    );
    within_10_s("stat and read do not agree", || {
        let size = fs::metadata(mount.join("d/g.bin")).unwrap().len();
        let read = fs::read(mount.join("d/g.bin"));
        size == larger.len() as u64 && read.is_ok_and(|bytes| bytes == larger)
    });
}

#[test]
fn a_listed_key_that_decodes_to_bytes_not_utf8_is_hidden_and_nothing_breaks() {
    let rig = Rig::new();
    let mount = rig.mount(&["--metadata-ttl", "0"]);
    rig.store.put("odd/fine.txt", "fine");
    rig.store.put("odd/x-marker.txt", "hidden");
    rig.store.put("odd/x-marker/under.txt", "hidden too");
    // Listings come with `encoding-type=url`: the store sends the key as `%FF%FE`.
    let rewrite = Fault::Rewrite {
        from: "x-marker".into(),
        to: "%FF%FE".into(),
    };
    rig.proxy.inject(Op::List, rewrite, When::Always);
    let names: Vec<String> = fs::read_dir(mount.join("odd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["fine.txt"], "the key no name can show is hidden");
    assert_eq!(
        fs::read_to_string(mount.join("odd/fine.txt")).unwrap(),
        "fine"
    );
    assert!(rig.proxy.faulted() > 0, "the listing was rewritten");
    rig.proxy.heal();
    within_10_s("the mount goes on", || {
        fs::read_dir(mount.join("odd")).is_ok_and(|d| d.count() == 3)
    });
}
