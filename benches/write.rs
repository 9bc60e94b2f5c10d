//! Write benchmark: uploads through the mount against the raw aws-sdk-s3 client, same
//! store, same run. `cargo bench --bench write [-- dd|cp|tar|writers|wb-tar|wb-cp|wb-dd]`
//! (root, /dev/fuse).
//!
//! In the default mode times run until the command returns, which through the mount
//! means the object is in the store (close waits for the upload). In write-back mode
//! (`wb-*`) two times: until the command returns, and until `rgrid-mount sync` says
//! every object is in the store. Ratios are mount time (in the store) / raw time.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use common::{
    median, peak_rss_mib, pseudo_random, rgrid_mount_bare, run, selected, Mount, TestStore, BUCKET,
};
use futures::StreamExt;

const RUNS: usize = 5;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const PART: usize = 8 * MIB;

/// Multipart upload of `data`: 8 MiB parts, 8 in flight, as the mount's defaults.
async fn raw_multipart(sdk: &Client, key: &str, data: &Bytes) {
    let upload = sdk
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap().to_owned();
    let parts = (0..data.len().div_ceil(PART)).map(|i| {
        let body = data.slice(i * PART..((i + 1) * PART).min(data.len()));
        let (sdk, id) = (sdk.clone(), id.clone());
        async move {
            let number = i as i32 + 1;
            let out = sdk
                .upload_part()
                .bucket(BUCKET)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .unwrap();
            CompletedPart::builder()
                .part_number(number)
                .e_tag(out.e_tag().unwrap())
                .build()
        }
    });
    let parts: Vec<CompletedPart> = futures::stream::iter(parts).buffered(8).collect().await;
    let done = CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    sdk.complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
}

fn row(name: &str, mount: Vec<f64>, raw: Vec<f64>, rss: f64) {
    let (m, r) = (median(mount), median(raw));
    println!(
        "| {name} | {m:.2} s | {r:.2} s | {:.2} | {rss:.0} MiB |",
        m / r
    );
}

/// Deletes what a run stored, through the mount and directly: the store's disk holds
/// one run's objects at a time.
fn clean(store: &TestStore, sdk: &Client, mounted: &[std::path::PathBuf], raw: &[String]) {
    for path in mounted {
        std::fs::remove_file(path).unwrap();
    }
    for key in raw {
        let delete = sdk.delete_object().bucket(BUCKET).key(key).send();
        store.runtime.block_on(delete).unwrap();
    }
}

fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("write: bench");
        return;
    }
    let store = TestStore::start();
    let sdk = store.sdk();
    let mount = Mount::new(&store, &[]);
    let local = tempfile::tempdir().unwrap();
    peak_rss_mib(mount.pid());

    println!(
        "\n| scenario (median of {RUNS}) | mount | raw SDK | ratio (time) | daemon peak RSS |"
    );
    println!("|---|---|---|---|---|");
    if selected("dd") {
        dd(&store, &sdk, &mount);
    }
    if selected("cp") {
        cp(&store, &sdk, &mount, local.path());
    }
    if selected("tar") {
        untar(&store, &sdk, &mount, local.path());
    }
    if selected("writers") {
        writers(&store, &sdk, &mount, local.path());
    }
    drop(mount);
    let wb = Mount::new(&store, &["--write-back"]);
    println!(
        "\n| write-back (median of {RUNS}) | returns | in the store | raw SDK | ratio (in the store) | daemon peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    if selected("wb-tar") {
        wb_untar(&store, &sdk, &wb, local.path());
    }
    if selected("wb-cp") {
        wb_cp_tree(&store, &sdk, &wb, local.path());
    }
    if selected("wb-dd") {
        wb_dd(&store, &sdk, &wb);
    }
}

/// `rgrid-mount sync` of `mount`, which must succeed.
fn sync(store: &TestStore, mount: &Mount) {
    common::run(rgrid_mount_bare(store).arg("sync").arg(&mount.path));
}

/// Times of `command` through a write-back mount: until it returns, and until sync.
fn returns_and_stored(store: &TestStore, mount: &Mount, command: impl FnOnce()) -> (f64, f64) {
    let t = Instant::now();
    command();
    let returned = t.elapsed().as_secs_f64();
    sync(store, mount);
    (returned, t.elapsed().as_secs_f64())
}

fn wb_row(name: &str, times: Vec<(f64, f64)>, raw: Vec<f64>, rss: f64) {
    let returned = median(times.iter().map(|t| t.0).collect());
    let stored = median(times.iter().map(|t| t.1).collect());
    let r = median(raw);
    println!(
        "| {name} | {returned:.2} s | {stored:.2} s | {r:.2} s | {:.2} | {rss:.0} MiB |",
        stored / r
    );
}

/// `files` put side by side, 32 at a time, under `prefix`.
fn raw_puts(store: &TestStore, sdk: &Client, prefix: &str, files: &[(String, Bytes)]) {
    store.runtime.block_on(async {
        let puts = files.iter().map(|(name, body)| {
            let sdk = sdk.clone();
            let key = format!("{prefix}/{name}");
            async move {
                let body = ByteStream::from(body.clone());
                let put = sdk.put_object().bucket(BUCKET).key(key).body(body);
                put.send().await.unwrap();
            }
        });
        futures::stream::iter(puts)
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
    });
}

fn wb_untar(store: &TestStore, sdk: &Client, mount: &Mount, local: &Path) {
    let tar = make_tar(local);
    let files = small_files(1000, 10 << 10);
    let (mut m, mut r) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let dir = mount.join(&format!("wb-untar-{i}"));
        std::fs::create_dir(&dir).unwrap();
        m.push(returns_and_stored(store, mount, || {
            run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&dir));
        }));
        r.push(time(|| {
            raw_puts(store, sdk, &format!("raw-wb-untar-{i}"), &files)
        }));
    }
    wb_row(
        "tar -x of 1,000 files of 10 KiB",
        m,
        r,
        peak_rss_mib(mount.pid()),
    );
}

fn wb_cp_tree(store: &TestStore, sdk: &Client, mount: &Mount, local: &Path) {
    const FILES: usize = 10_000;
    let src = local.join("small-tree");
    let files = small_files(FILES, 4 << 10);
    for (i, (name, body)) in files.iter().enumerate() {
        let path = src.join(format!("d{}", i % 100)).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let (mut m, mut r) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let dest = mount.join(&format!("wb-cp-{i}"));
        m.push(returns_and_stored(store, mount, || {
            run(Command::new("cp").arg("-r").arg(&src).arg(&dest));
        }));
        r.push(time(|| {
            raw_puts(store, sdk, &format!("raw-wb-cp-{i}"), &files)
        }));
    }
    wb_row(
        "cp -r of 10,000 files of 4 KiB",
        m,
        r,
        peak_rss_mib(mount.pid()),
    );
}

fn wb_dd(store: &TestStore, sdk: &Client, mount: &Mount) {
    let zeros = Bytes::from(vec![0u8; GIB]);
    let (mut m, mut r) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let out = mount.join(&format!("wb-dd-{i}"));
        m.push(returns_and_stored(store, mount, || {
            dd_gib(&out);
        }));
        r.push(time(|| {
            store
                .runtime
                .block_on(raw_multipart(sdk, &format!("raw-wb-dd-{i}"), &zeros))
        }));
        clean(store, sdk, &[out], &[format!("raw-wb-dd-{i}")]);
    }
    wb_row(
        "dd bs=1M count=1024 conv=fsync",
        m,
        r,
        peak_rss_mib(mount.pid()),
    );
}

/// `n` files of `len` bytes, named as in the tar `make_tar` builds.
fn small_files(n: usize, len: usize) -> Vec<(String, Bytes)> {
    (0..n)
        .map(|i| {
            (
                format!("f{i:04}.dat"),
                Bytes::from(pseudo_random(len, i as u64)),
            )
        })
        .collect()
}

/// Eight files of 256 MiB written at once: cp through the mount, eight multipart uploads
/// side by side for the raw client.
fn writers(store: &TestStore, sdk: &Client, mount: &Mount, local: &Path) {
    const WRITERS: usize = 8;
    let data = Bytes::from(pseudo_random(256 * MIB, 8));
    let src = local.join("quarter.bin");
    std::fs::write(&src, &data).unwrap();
    let (mut m, mut r) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        m.push(time(|| {
            let copies: Vec<_> = (0..WRITERS)
                .map(|w| {
                    Command::new("cp")
                        .arg(&src)
                        .arg(mount.join(&format!("w-{i}-{w}")))
                        .spawn()
                        .unwrap()
                })
                .collect();
            for mut cp in copies {
                assert!(cp.wait().unwrap().success());
            }
        }));
        r.push(time(|| {
            store.runtime.block_on(async {
                let uploads = (0..WRITERS).map(|w| {
                    let key = format!("raw-w-{i}-{w}");
                    let data = data.clone();
                    async move { raw_multipart(sdk, &key, &data).await }
                });
                futures::future::join_all(uploads).await
            });
        }));
        let mounted: Vec<_> = (0..WRITERS)
            .map(|w| mount.join(&format!("w-{i}-{w}")))
            .collect();
        let raw: Vec<_> = (0..WRITERS).map(|w| format!("raw-w-{i}-{w}")).collect();
        clean(store, sdk, &mounted, &raw);
    }
    row(
        "8 cp at once, 256 MiB each",
        m,
        r,
        peak_rss_mib(mount.pid()),
    );
}

/// `dd` of 1 GiB of zeros into `out`, with conv=fsync.
fn dd_gib(out: &Path) {
    run(Command::new("dd")
        .args([
            "if=/dev/zero",
            "bs=1M",
            "count=1024",
            "conv=fsync",
            "status=none",
        ])
        .arg(format!("of={}", out.display())));
}

fn dd(store: &TestStore, sdk: &Client, mount: &Mount) {
    let zeros = Bytes::from(vec![0u8; GIB]);
    let (mut m, mut r) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let out = mount.join(&format!("dd-{i}"));
        m.push(time(|| {
            dd_gib(&out);
        }));
        r.push(time(|| {
            store
                .runtime
                .block_on(raw_multipart(sdk, &format!("raw-dd-{i}"), &zeros))
        }));
        clean(store, sdk, &[out], &[format!("raw-dd-{i}")]);
    }
    row(
        "dd bs=1M count=1024 conv=fsync",
        m,
        r,
        peak_rss_mib(mount.pid()),
    );
}

fn cp(store: &TestStore, sdk: &Client, mount: &Mount, local: &Path) {
    let big = local.join("big.bin");
    let data = Bytes::from(pseudo_random(GIB, 3));
    std::fs::write(&big, &data).unwrap();
    let (mut m, mut r) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let out = mount.join(&format!("cp-{i}"));
        m.push(time(|| {
            run(Command::new("cp").arg(&big).arg(&out));
        }));
        r.push(time(|| {
            store
                .runtime
                .block_on(raw_multipart(sdk, &format!("raw-cp-{i}"), &data))
        }));
        clean(store, sdk, &[out], &[format!("raw-cp-{i}")]);
    }
    row("cp of a 1 GiB file", m, r, peak_rss_mib(mount.pid()));
}

fn untar(store: &TestStore, sdk: &Client, mount: &Mount, local: &Path) {
    let tar = make_tar(local);
    let files = small_files(1000, 10 << 10);
    let (mut m, mut r) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let dir = mount.join(&format!("untar-{i}"));
        std::fs::create_dir(&dir).unwrap();
        m.push(time(|| {
            run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&dir));
        }));
        r.push(time(|| {
            raw_puts(store, sdk, &format!("raw-untar-{i}"), &files)
        }));
    }
    row(
        "tar -x of 1,000 files of 10 KiB",
        m,
        r,
        peak_rss_mib(mount.pid()),
    );
}

/// A tar of 1,000 files of 10 KiB, made once in `dir` (the files of `small_files`).
fn make_tar(dir: &Path) -> std::path::PathBuf {
    let tar = dir.join("tree.tar");
    if tar.exists() {
        return tar;
    }
    let src = dir.join("tree");
    std::fs::create_dir(&src).unwrap();
    for i in 0..1000u64 {
        std::fs::write(src.join(format!("f{i:04}.dat")), pseudo_random(10 << 10, i)).unwrap();
    }
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("."));
    tar
}
