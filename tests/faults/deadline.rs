//! The default deadline (`--request-timeout` 15 s; uploads one more second per MiB sent)
//! against the bound the mount promises: a store that stops answering is EIO within 30 s,
//! for a read and for a close.

use std::time::{Duration, Instant};

use super::proxy::{Fault, Op, When};
use super::{errno, record, Rig, MIB};
use crate::common::pseudo_random;

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn a_store_pausing_mid_body_is_eio_within_30_s_at_the_default_deadline() {
    let rig = Rig::new();
    let mount = rig.mount(&["--max-cache-size", "0"]);
    let started = Instant::now();
    let took = super::read::read_paused_object(&rig, &mount);
    assert!(took < BOUND, "EIO after {took:?}");
    record("store pauses mid-body (default deadline)", "EIO", started);
}

#[test]
fn a_store_stalling_every_part_fails_the_close_within_30_s_at_the_default_deadline() {
    let rig = Rig::new();
    let mount = rig.mount(&[]);
    // Two parts of the default 8 MiB, the first sent while the file is written.
    let data = pseudo_random(12 * MIB, 61);
    rig.proxy.inject(Op::UploadPart, Fault::Stall, When::Always);
    let started = Instant::now();
    let written = super::write_closed(&mount.join("stalled.bin"), &data);
    let took = started.elapsed();
    assert_eq!(errno(written), libc::EIO);
    assert!(took < BOUND, "close failed after {took:?}");
    record(
        "store stalls on every UploadPart (default deadline)",
        "EIO at close",
        started,
    );
    assert!(rig.store.get("stalled.bin").is_none(), "no partial object");
}
