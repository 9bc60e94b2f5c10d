//! Crash safety, alone in its test binary: a fork anywhere in the process (another test
//! starting a command) closes a copy of the writer's descriptor, and that close is a
//! FUSE flush, which uploads what is written so far, as close must. Here nothing forks
//! while the file is written, so the kill meets the upload of the close itself.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{pseudo_random, Mount, TestStore};
use rgrid_mount::artifact::sha256_hex;

const MIB: usize = 1 << 20;

#[test]
fn a_daemon_killed_while_uploading_finishes_the_upload_on_restart() {
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap().to_owned();
    let data = pseudo_random(160 * MIB, 78);
    {
        let mut mount = Mount::new(&store, &["--cache-dir", &cache_arg]);
        let path = mount.join("big.bin");
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || {
                let file = fs::File::create(&path).unwrap();
                // Back to front: no part goes up while writing, close uploads it all.
                let half = data.len() / 2;
                file.write_all_at(&data[half..], half as u64).unwrap();
                file.write_all_at(&data[..half], 0).unwrap();
                file.sync_all() // close's upload, which the kill interrupts
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while common::journaled(cache.path()) == 0 {
            assert!(std::time::Instant::now() < deadline, "{}", mount.log());
            std::thread::sleep(Duration::from_millis(1));
        }
        mount.kill();
        mount.wait(Duration::from_secs(10));
        assert!(
            writer.join().unwrap().is_err(),
            "the writer was not told it was durable"
        );
        // What the store has now is nothing or the whole file, never a part of it.
        if let Some((body, _)) = store.get("big.bin") {
            assert!(body == data, "a partial object in the store");
        }
    }
    let _mount = Mount::new(&store, &["--cache-dir", &cache_arg]);
    let (body, meta) = store.get("big.bin").expect("uploaded at restart");
    assert!(body == data);
    assert_eq!(meta.get("rgrid-sha256"), Some(&sha256_hex(&data)));
    assert_eq!(
        common::journaled(cache.path()),
        0,
        "journal empty once done"
    );
}
