//! Transparent gzip and integrity on read, through a real mount: gzip-stored objects read
//! as their original bytes, whatever the access pattern; corrupt ones and SHA-256
//! mismatches are EIO.

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;

use aws_sdk_s3::primitives::ByteStream;
use common::{csv, map_shared, Mount, TestStore, BUCKET};
use flate2::write::GzEncoder;
use rgrid_mount::artifact::sha256_hex;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Stores `body` under `key` with user metadata and, if given, a Content-Encoding.
fn put(
    store: &TestStore,
    key: &str,
    body: Vec<u8>,
    meta: &[(&str, String)],
    encoding: Option<&str>,
) {
    let sdk = store.sdk();
    let mut put = sdk
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(body))
        .set_content_encoding(encoding.map(str::to_owned));
    for (name, value) in meta {
        put = put.metadata(*name, value);
    }
    store.runtime.block_on(put.send()).unwrap();
}

fn rgrid_meta(original: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("rgrid-compression", "gzip".into()),
        ("rgrid-original-size", original.len().to_string()),
        ("rgrid-sha256", sha256_hex(original)),
    ]
}

fn read_all(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(data)
}

#[test]
fn gzip_objects_read_as_their_original_bytes_in_any_order() {
    let store = TestStore::start();
    let original = csv(12 << 20, 7);
    put(
        &store,
        "g/rgrid.csv",
        gzip(&original),
        &rgrid_meta(&original),
        None,
    );
    put(&store, "g/encoded.csv", gzip(&original), &[], Some("gzip"));
    let multi = [gzip(&original[..5 << 20]), gzip(&original[5 << 20..])].concat();
    put(&store, "g/multi.csv", multi, &[], Some("gzip"));
    let mount = Mount::new(&store, &["--metadata-ttl", "0"]);

    // With the original size in metadata, st_size is right from the first stat.
    let len = original.len() as u64;
    assert_eq!(fs::metadata(mount.join("g/rgrid.csv")).unwrap().len(), len);
    for name in ["rgrid.csv", "encoded.csv", "multi.csv"] {
        let path = mount.join("g").join(name);
        assert!(read_all(&path).unwrap() == original, "{name}: cat");
        let cmp = std::process::Command::new("cmp")
            .arg(&path)
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .spawn();
        let mut cmp = cmp.unwrap();
        cmp.stdin.take().unwrap().write_all(&original).unwrap();
        assert!(cmp.wait().unwrap().success(), "{name}: cmp");
        // Decoded once to the end: the true size, also for a multi-member stream.
        assert_eq!(fs::metadata(&path).unwrap().len(), len, "{name}: st_size");
    }

    // Random and backward reads on one fresh handle.
    let file = File::open(mount.join("g/encoded.csv")).unwrap();
    for offset in [9 << 20, 100, 11 << 20, 3 << 20, 0, (12 << 20) - 10] {
        let mut buf = vec![0; 4096];
        let n = file.read_at(&mut buf, offset as u64).unwrap();
        let end = (offset + 4096).min(original.len());
        assert_eq!(&buf[..n], &original[offset..end], "pread at {offset}");
    }
}

#[test]
fn handles_of_one_version_share_one_decode() {
    let store = TestStore::start();
    let original = csv(6 << 20, 9);
    let stored = gzip(&original);
    put(
        &store,
        "shared.csv",
        stored.clone(),
        &rgrid_meta(&original),
        None,
    );
    let mount = Mount::new(&store, &[]);
    let path = mount.join("shared.csv");
    let handles = [File::open(&path).unwrap(), File::open(&path).unwrap()];
    let before = store.range_bytes();
    for file in &handles {
        let mut buf = vec![0; original.len()];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf == original);
    }
    let fetched = store.range_bytes() - before;
    let stored = stored.len() as u64;
    assert!(
        fetched < stored * 3 / 2,
        "{fetched} bytes fetched for {stored} stored: decoded twice"
    );
}

#[test]
fn a_gzip_object_maps_shared_as_its_original_bytes() {
    let store = TestStore::start();
    let original = csv(3 << 20, 8);
    put(
        &store,
        "m.csv",
        gzip(&original),
        &rgrid_meta(&original),
        None,
    );
    let mount = Mount::new(&store, &[]);
    // Gzip views use direct I/O: without FUSE_DIRECT_IO_ALLOW_MMAP this was ENODEV.
    assert!(map_shared(&mount.join("m.csv")).unwrap() == original);
}

/// Stored without metadata: one member; three, as `cat a.gz b.gz c.gz` makes (the
/// trailer gives only the last one's size); incompressible (stored larger than its
/// content).
#[test]
fn a_gzip_object_without_metadata_shows_its_decoded_size_before_any_open() {
    let store = TestStore::start();
    let original = csv(300_000, 3);
    let noise = common::pseudo_random(200_000, 4);
    let members = [
        &original[..100_000],
        &original[100_000..250_000],
        &original[250_000..],
    ];
    let objects = [
        ("t/one.csv", gzip(&original), original.len()),
        ("t/three.csv", members.map(gzip).concat(), original.len()),
        ("t/noise.bin", gzip(&noise), noise.len()),
    ];
    for (key, stored, _) in &objects {
        put(&store, key, stored.clone(), &[], Some("gzip"));
    }
    for ttl in ["0", "5"] {
        let mount = Mount::new(&store, &["--metadata-ttl", ttl, "--max-cache-size", "0"]);
        // As a new user checks it: `ls -l`, then `cat | wc -c`.
        let listing = common::run(Command::new("ls").arg("-l").arg(mount.join("t")));
        for (key, _, len) in &objects {
            let name = key.trim_start_matches("t/");
            let line = listing.lines().find(|l| l.ends_with(name));
            let line = line.unwrap_or_else(|| panic!("{name} not listed: {listing}"));
            assert!(line.contains(&format!(" {len} ")), "ttl {ttl}: {line}");
            let path = mount.join(key);
            assert_eq!(fs::metadata(&path).unwrap().len(), *len as u64, "{key}");
            let out = common::run(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("cat {} | wc -c", path.display())),
            );
            assert_eq!(out.trim(), len.to_string(), "{key}");
        }
    }
}

#[test]
fn corrupt_or_truncated_gzip_is_eio_and_logged() {
    let store = TestStore::start();
    let original = csv(2 << 20, 5);
    let good = gzip(&original);
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    let truncated = good[..good.len() - 200].to_vec();
    put(
        &store,
        "bad/flipped.csv",
        flipped,
        &rgrid_meta(&original),
        None,
    );
    put(&store, "bad/truncated.csv", truncated, &[], Some("gzip"));
    put(
        &store,
        "bad/lying.csv",
        good,
        &rgrid_meta(&original[1..]),
        None,
    );
    let mount = Mount::new(&store, &[]);
    for name in ["flipped.csv", "truncated.csv", "lying.csv"] {
        let err = read_all(&mount.join("bad").join(name)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
        assert!(
            mount.log().contains(&format!("bad/{name}")),
            "{name}: {}",
            mount.log()
        );
    }
}

#[test]
fn sha256_mismatch_is_eio_on_the_last_read_and_stays_so() {
    let store = TestStore::start();
    let data = csv(5 << 20, 11);
    let wrong = sha256_hex(b"something else");
    store.put_with_meta("bad.csv", data.clone(), &[("rgrid-sha256", &wrong)]);
    store.put_with_meta(
        "good.csv",
        data.clone(),
        &[("rgrid-sha256", &sha256_hex(&data))],
    );
    store.put("unchecked.csv", data.clone());
    let mount = Mount::new(&store, &[]);

    assert!(read_all(&mount.join("good.csv")).unwrap() == data);
    assert!(read_all(&mount.join("unchecked.csv")).unwrap() == data);
    for attempt in 0..2 {
        let err = read_all(&mount.join("bad.csv")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "attempt {attempt}");
    }
    let log = mount.log();
    assert!(
        log.contains(&wrong) && log.contains(&sha256_hex(&data)),
        "{log}"
    );
    // The bytes before the end were served: the check is on reading to the end.
    let mut head = vec![0; 1000];
    File::open(mount.join("bad.csv"))
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(head, data[..1000]);
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn a_150_mib_csv_is_stored_compressed_and_a_png_is_not() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let csv_data = csv(150 << 20, 21);
    fs::create_dir(mount.join("out")).unwrap();
    fs::write(mount.join("out/big.csv"), &csv_data).unwrap();
    let (body, meta) = store.get("out/big.csv").unwrap();
    assert_eq!(meta["rgrid-compression"], "gzip");
    assert_eq!(meta["rgrid-original-size"], csv_data.len().to_string());
    assert_eq!(meta["rgrid-sha256"], sha256_hex(&csv_data));
    assert!(
        body.len() < csv_data.len() / 2,
        "stored {} bytes",
        body.len()
    );
    assert!(
        gunzip(&body) == csv_data,
        "the stored stream decodes to the original"
    );
    let back = read_all(&mount.join("out/big.csv"))
        .unwrap_or_else(|e| panic!("read back: {e}: {}", mount.log()));
    assert!(back == csv_data, "read back");
    assert_eq!(
        fs::metadata(mount.join("out/big.csv")).unwrap().len(),
        150 << 20
    );
    drop(body);

    let png = common::pseudo_random(150 << 20, 5);
    fs::write(mount.join("out/big.png"), &png).unwrap();
    let (body, meta) = store.get("out/big.png").unwrap();
    assert!(!meta.contains_key("rgrid-compression"));
    assert!(body == png, "a binary format is stored as is");
}

#[test]
fn compress_never_and_always_override_the_rule() {
    let store = TestStore::start();
    let data = csv(3 << 20, 9);
    let never = Mount::new(
        &store,
        &["--compress", "never", "--compress-threshold", "1"],
    );
    fs::write(never.join("n.csv"), &data).unwrap();
    let (body, meta) = store.get("n.csv").unwrap();
    assert!(body == data && !meta.contains_key("rgrid-compression"));
    drop(never);

    let always = Mount::new(&store, &["--compress", "always"]);
    fs::write(always.join("a.bin"), b"tiny").unwrap();
    let (body, meta) = store.get("a.bin").unwrap();
    assert_eq!(meta["rgrid-compression"], "gzip");
    assert_eq!(gunzip(&body), b"tiny");
    assert_eq!(fs::read(always.join("a.bin")).unwrap(), b"tiny");
    let bad = Mount::try_new(&store, &["--compress", "sometimes"])
        .err()
        .unwrap();
    assert!(bad.1.contains("--compress"), "{}", bad.1);
}

#[test]
fn a_reader_that_stops_at_exactly_st_size_still_gets_the_check() {
    let store = TestStore::start();
    let original = csv(3 << 20, 13);
    let mut meta = rgrid_meta(&original);
    meta[2].1 = sha256_hex(b"not this content");
    put(&store, "exact.csv", gzip(&original), &meta, None);
    let mount = Mount::new(&store, &[]);
    let mut buf = vec![0; original.len()];
    let err = File::open(mount.join("exact.csv"))
        .unwrap()
        .read_exact(&mut buf)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}
