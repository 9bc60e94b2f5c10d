//! Uploads under a failing store: a part or the completion refused once or for good, a
//! store that stalls mid-upload. Nothing accepted is lost: a close that fails leaves
//! the file journaled, its multipart upload aborted, and the retry loop lands it once
//! the store is back.

use std::fs;
use std::time::{Duration, Instant};

use super::proxy::{Fault, Op, When};
use super::{errno, record, Rig, MIB};
use crate::common::{journaled, pseudo_random, MotoServer, BUCKET};

/// Multipart uploads in progress in moto's bucket.
fn uploads_in_progress(moto: &MotoServer) -> usize {
    let sdk = moto.sdk();
    let listed = moto
        .runtime
        .block_on(sdk.list_multipart_uploads().bucket(BUCKET).send())
        .unwrap();
    listed.uploads().len()
}

/// The bytes of `key` in moto's bucket, if any.
fn stored(moto: &MotoServer, key: &str) -> Option<Vec<u8>> {
    let sdk = moto.sdk();
    let out = moto
        .runtime
        .block_on(sdk.get_object().bucket(BUCKET).key(key).send())
        .ok()?;
    let body = moto.runtime.block_on(out.body.collect()).ok()?;
    Some(body.into_bytes().to_vec())
}

/// Waits up to `limit` for moto to have no multipart upload in progress.
fn no_upload_left(moto: &MotoServer, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while uploads_in_progress(moto) > 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Waits up to `limit` for `key` to hold `data` in moto's bucket.
fn lands(moto: &MotoServer, key: &str, data: &[u8], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if stored(moto, key).is_some_and(|s| s == data) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

const PARTS: [&str; 2] = ["--upload-part-size", "5"];

#[test]
fn one_refused_part_or_completion_is_retried_and_the_object_is_whole() {
    let rig = Rig::over(MotoServer::start());
    let mount = rig.mount(&PARTS);
    for (op, name) in [(Op::UploadPart, "part.bin"), (Op::Complete, "complete.bin")] {
        let data = pseudo_random(12 * MIB, 20);
        rig.proxy.inject(op, Fault::status(500), When::Next(1));
        let started = Instant::now();
        let written = super::write_closed(&mount.join(name), &data);
        assert!(written.is_ok(), "{op:?}: {written:?} {}", mount.log());
        assert_eq!(rig.proxy.faulted(), 1, "{op:?}: the fault was met");
        assert!(stored(&rig.store, name).unwrap() == data, "{op:?}");
        record(&format!("500 on one {op:?}"), "ok, object whole", started);
        rig.proxy.reset_counts();
    }
    assert_eq!(uploads_in_progress(&rig.store), 0);
}

/// A multipart close while `op` is refused for good: EIO at close, no object, the file
/// journaled and readable, its upload aborted; once the store heals it lands.
fn refused_for_good(op: Op, name: &str, seed: u64) {
    let rig = Rig::over(MotoServer::start());
    let mount = rig.mount(&PARTS);
    let data = pseudo_random(12 * MIB, seed);
    rig.proxy.inject(op, Fault::status(500), When::Always);
    let started = Instant::now();
    let written = super::write_closed(&mount.join(name), &data);
    assert_eq!(errno(written), libc::EIO, "the close reports the failure");
    record(&format!("500 on every {op:?}"), "EIO at close", started);
    assert!(stored(&rig.store, name).is_none(), "no partial object");
    assert_eq!(journaled(rig.cache.path()), 1, "the journal keeps the file");
    assert!(
        no_upload_left(&rig.store, Duration::from_secs(10)),
        "the failed upload is left behind"
    );
    assert!(rig.proxy.count(Op::AbortUpload) >= 1, "aborted, not left");
    // The file is still there, with its bytes, and lands once the store takes it.
    assert!(fs::read(mount.join(name)).unwrap() == data);
    rig.proxy.heal();
    assert!(lands(&rig.store, name, &data, Duration::from_secs(30)));
    assert!(no_upload_left(&rig.store, Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while journaled(rig.cache.path()) > 0 {
        assert!(
            Instant::now() < deadline,
            "the journal entry outlives its upload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_part_refused_for_good_fails_the_close_keeps_the_file_and_lands_it_later() {
    refused_for_good(Op::UploadPart, "kept.bin", 21);
}

#[test]
fn a_completion_refused_for_good_fails_the_close_keeps_the_file_and_lands_it_later() {
    refused_for_good(Op::Complete, "completed-later.bin", 23);
}

#[test]
fn an_upload_whose_abort_failed_before_a_crash_is_aborted_by_the_next_mount() {
    let rig = Rig::over(MotoServer::start());
    let mut mount = rig.mount(&PARTS);
    let data = pseudo_random(12 * MIB, 24);
    rig.proxy
        .inject(Op::UploadPart, Fault::status(500), When::Always);
    rig.proxy
        .inject(Op::AbortUpload, Fault::status(500), When::Always);
    let written = super::write_closed(&mount.join("orphan.bin"), &data);
    assert_eq!(errno(written), libc::EIO);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.proxy.count(Op::AbortUpload) == 0 {
        assert!(Instant::now() < deadline, "no abort tried");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        uploads_in_progress(&rig.store),
        1,
        "the refused abort left it"
    );
    mount.kill();
    assert!(mount.wait(Duration::from_secs(10)).is_some());
    drop(mount);
    rig.proxy.heal();
    let started = Instant::now();
    let next = rig.mount(&PARTS);
    assert!(
        no_upload_left(&rig.store, Duration::from_secs(20)),
        "the next mount left the upload: {}",
        next.log()
    );
    record(
        "abort refused, then a crash: the next mount aborts",
        "no upload left",
        started,
    );
    assert!(lands(
        &rig.store,
        "orphan.bin",
        &data,
        Duration::from_secs(30)
    ));
}

#[test]
fn a_store_stalling_mid_upload_fails_the_close_in_bounded_time() {
    let rig = Rig::over(MotoServer::start());
    let mount = rig.mount(&["--request-timeout", "3", "--upload-part-size", "5"]);
    let data = pseudo_random(12 * MIB, 22);
    rig.proxy.inject(Op::UploadPart, Fault::Stall, When::Always);
    let started = Instant::now();
    let written = super::write_closed(&mount.join("stalled.bin"), &data);
    let took = started.elapsed();
    assert_eq!(errno(written), libc::EIO);
    assert!(
        took < Duration::from_secs(30),
        "close failed after {took:?}"
    );
    record(
        "store stalls on every UploadPart (request timeout 3 s)",
        "EIO at close",
        started,
    );
    assert!(
        stored(&rig.store, "stalled.bin").is_none(),
        "no partial object"
    );
    rig.proxy.heal();
    assert!(lands(
        &rig.store,
        "stalled.bin",
        &data,
        Duration::from_secs(40)
    ));
    assert_eq!(
        uploads_in_progress(&rig.store),
        0,
        "the stalled upload was aborted"
    );
}

#[test]
fn a_refused_small_put_is_retried_then_fails_the_close() {
    let rig = Rig::new();
    let mount = rig.mount(&[]);
    rig.proxy.inject(Op::Put, Fault::status(500), When::Next(1));
    let started = Instant::now();
    super::write_closed(&mount.join("once.txt"), b"retried").unwrap();
    record("500 on one PutObject", "ok", started);
    assert_eq!(rig.store.get("once.txt").unwrap().0, b"retried");
    rig.proxy.inject(Op::Put, Fault::status(500), When::Always);
    let started = Instant::now();
    let written = super::write_closed(&mount.join("never.txt"), b"kept");
    assert_eq!(errno(written), libc::EIO);
    record("500 on every PutObject", "EIO at close", started);
    assert!(rig.store.get("never.txt").is_none());
    rig.proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.store.get("never.txt").is_none() {
        assert!(
            Instant::now() < deadline,
            "not landed after the store healed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
