//! Large files through a real mount: a multi-GiB file uploads whole in bounded memory,
//! and the store's 5 TiB object limit is EFBIG at the write that crosses it.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{peak_rss_mib, Mount, TestStore};
use rgrid_mount::artifact::sha256_hex;
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// S3's (and MinIO's) largest object.
const MAX_OBJECT: u64 = 5 << 40;

/// Chunk `i` of a large file: one random MiB, numbered in its first bytes, so that a
/// part in the wrong place shows.
fn chunk(random: &[u8], i: usize) -> Vec<u8> {
    let mut data = random.to_vec();
    data[..8].copy_from_slice(&(i as u64).to_le_bytes());
    data
}

#[test]
fn a_multi_gib_file_streams_up_in_parts_read_from_its_spool() {
    let store = TestStore::start();
    // 24 MiB parts are past what a part holds in memory: each is read from the spool by
    // its request as it goes out.
    let mount = Mount::new(&store, &["--upload-part-size", "24"]);
    let chunks = 2048 + 5; // 2 GiB and 5 MiB
    let random = common::pseudo_random(MIB, 77);
    peak_rss_mib(mount.pid());
    let mut file = fs::File::create(mount.join("big.bin")).unwrap();
    let mut hasher = Sha256::new();
    for i in 0..chunks {
        let data = chunk(&random, i);
        hasher.update(&data);
        file.write_all(&data).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    let rss = peak_rss_mib(mount.pid());
    let sha256 = hex(hasher);
    let parts = (chunks as u64).div_ceil(24);
    assert_eq!(store.requests("UploadPart"), parts);
    assert_eq!(store.requests("PutObject"), 0);
    // Eight 24 MiB parts in memory at once would be 192 MiB.
    assert!(rss < 160.0, "daemon peak RSS {rss:.0} MiB while writing");
    eprintln!("2 GiB streamed in {parts} parts; daemon peak RSS {rss:.0} MiB");
    // The embedded store keeps the object as a file of the same name: its bytes are
    // the ones written.
    let stored = store.dir.path().join(common::BUCKET).join("big.bin");
    let out = std::process::Command::new("sha256sum")
        .arg(&stored)
        .output()
        .unwrap();
    let stored_sha256 = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stored_sha256.split_whitespace().next(),
        Some(sha256.as_str())
    );
    assert_eq!(fs::metadata(&stored).unwrap().len(), (chunks * MIB) as u64);
    // The SHA-256 the upload recorded (a tag, for a streamed file) is the content's.
    let tagged = store
        .tags("big.bin")
        .remove("rgrid-sha256")
        .unwrap_or_default();
    assert_eq!(
        tagged.split_once('@').map(|(sha, _)| sha),
        Some(sha256.as_str())
    );
}

fn hex(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_write_that_crosses_five_tib_is_short_and_the_next_is_efbig() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let path = mount.join("edge.bin");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all_at(b"head", 0).unwrap();
    // The spool is sparse: these offsets cost no disk.
    assert_eq!(file.write_at(b"ab", MAX_OBJECT - 1).unwrap(), 1);
    let past = file.write_at(b"x", MAX_OBJECT).unwrap_err();
    assert_eq!(past.raw_os_error(), Some(libc::EFBIG), "{past}");
    let grown = file.set_len(MAX_OBJECT + 1).unwrap_err();
    assert_eq!(grown.raw_os_error(), Some(libc::EFBIG), "{grown}");
    assert_eq!(fs::metadata(&path).unwrap().len(), MAX_OBJECT);
    // truncate(1) by path is refused the same way.
    let out = std::process::Command::new("truncate")
        .args(["-s", "6T"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("File too large"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Back to a size worth uploading: what was written before stays.
    file.set_len(4).unwrap();
    drop(file);
    let (body, meta) = store.get("edge.bin").expect("object after close");
    assert_eq!(body, b"head");
    assert_eq!(meta.get("rgrid-sha256"), Some(&sha256_hex(b"head")));
}
