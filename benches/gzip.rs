//! Gzip benchmark: reading a gzip-stored 1 GiB CSV through the mount (ranged GETs,
//! decoding, SHA-256 check) against `gzip -dc` of the same compressed bytes from local
//! disk (page cache warm), in the same run.
//!
//! `cargo bench --bench gzip` (root, /dev/fuse, gzip on PATH). Figures are medians of
//! RUNS runs; the ratio is mount throughput / gzip -dc throughput, both counted in
//! decompressed bytes.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use common::{median, peak_rss_mib, Mount, TestStore, BUCKET};
use rgrid_mount::artifact::sha256_hex;

const RUNS: usize = 5;
const GIB: u64 = 1 << 30;

/// A CSV file of `len` bytes; returns its hex SHA-256.
fn write_csv(path: &std::path::Path, len: u64) -> String {
    let data = common::csv(len as usize, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(path, &data).unwrap();
    sha256_hex(&data)
}

fn gzip_file(from: &std::path::Path, to: &std::path::Path) {
    let status = Command::new("gzip")
        .args(["-c", "-6"])
        .arg(from)
        .stdout(File::create(to).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
}

fn read_all(path: &std::path::Path) -> u64 {
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match f.read(&mut buf).unwrap() {
            0 => return total,
            n => total += n as u64,
        }
    }
}

fn gzip_dc(path: &std::path::Path) -> u64 {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut total = 0;
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match out.read(&mut buf).unwrap() {
            0 => break,
            n => total += n as u64,
        }
    }
    assert!(child.wait().unwrap().success());
    total
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("gzip: bench");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (csv, gz) = (work.path().join("big.csv"), work.path().join("big.csv.gz"));
    let size = GIB;
    let sha = write_csv(&csv, size);
    gzip_file(&csv, &gz);
    std::fs::remove_file(&csv).unwrap();
    let stored = std::fs::metadata(&gz).unwrap().len();

    let store = TestStore::start();
    let put = store
        .sdk()
        .put_object()
        .bucket(BUCKET)
        .key("big.csv")
        .metadata("rgrid-compression", "gzip")
        .metadata("rgrid-original-size", size.to_string())
        .metadata("rgrid-sha256", sha)
        .body(store.runtime.block_on(ByteStream::from_path(&gz)).unwrap())
        .send();
    store.runtime.block_on(put).unwrap();
    // Reads from the store (the object cache would serve repeated runs locally).
    let mount = Mount::new(&store, &["--max-cache-size", "0"]);

    let (mut m, mut g) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        assert_eq!(read_all(&mount.join("big.csv")), size);
        m.push(size as f64 / t.elapsed().as_secs_f64() / 1e6);
        let t = Instant::now();
        assert_eq!(gzip_dc(&gz), size);
        g.push(size as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    let (first, random) = random_reads(&mount.join("big.csv"), size);
    let (m, g) = (median(m), median(g));
    println!("\n| scenario (median of {RUNS}) | mount | gzip -dc, local | ratio | daemon peak RSS | notes |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| read a gzip-stored 1 GiB CSV | {m:.0} MB/s | {g:.0} MB/s | {:.2} | {:.0} MiB | {:.0} MiB stored; SHA-256 checked |",
        m / g,
        peak_rss_mib(mount.pid()),
        stored as f64 / (1 << 20) as f64,
    );
    println!(
        "| 4 KiB random reads, fresh handle | first at 90%: {first:.2} s, then {random:.0} reads/s | - | - | - | decoded once into the decode file |"
    );
}

/// On a fresh handle: the time of a read 90% into the file (it decodes everything before
/// it), then the rate of 4 KiB reads at random offsets (served from the decode file).
fn random_reads(path: &std::path::Path, size: u64) -> (f64, f64) {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).unwrap();
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    file.read_at(&mut buf, size / 10 * 9).unwrap();
    let first = t.elapsed().as_secs_f64();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let t = Instant::now();
    let n = 2000;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        file.read_at(&mut buf, x % (size / 10 * 9)).unwrap();
    }
    (first, f64::from(n) / t.elapsed().as_secs_f64())
}
