//! Artifact metadata as extended attributes, and expiry, through a real mount with
//! `getfattr`/`setfattr` as users run them. (Expiry and retention tiers are tested in
//! tests/retention.rs.)

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{outcome, run, MotoServer, Mount, TestStore};

/// `getfattr -d` of `path`, as name → value.
fn getfattr_all(path: &Path) -> BTreeMap<String, String> {
    run(Command::new("getfattr")
        .args(["-d", "--absolute-names"])
        .arg(path))
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(n, v)| (n.to_owned(), v.trim_matches('"').to_owned()))
    .collect()
}

/// `getfattr -n name` or `setfattr ...`: success, or the error it printed.
fn attr_tool(args: &[&str], path: &Path) -> Result<String, String> {
    let tool = if args[0] == "-n" && args.len() == 2 {
        "getfattr"
    } else {
        "setfattr"
    };
    outcome(Command::new(tool).args(args).arg("--").arg(path))
}

#[test]
fn getfattr_shows_the_artifact_metadata() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let dir = mount.join("executions/e7/outputs");
    fs::create_dir_all(&dir).unwrap();
    let data = b"id,value\n1,2\n".repeat(100);
    fs::write(dir.join("table.csv"), &data).unwrap();

    let attrs = getfattr_all(&dir.join("table.csv"));
    assert_eq!(attrs["user.rgrid.sha256"], common::sha256_hex(&data));
    assert_eq!(attrs["user.rgrid.stored_size"], data.len().to_string());
    assert_eq!(attrs["user.rgrid.content_type"], "text/csv");
    assert_eq!(attrs["user.rgrid.compression"], "none");
    assert_eq!(attrs["user.rgrid.execution_id"], "e7");
    assert_eq!(attrs["user.rgrid.artifact_type"], "output");
    assert_eq!(
        attrs["user.rgrid.retention_days"], "30",
        "the tier asked for"
    );
    assert_eq!(
        attrs["user.rgrid.expires_at"], "never",
        "no rule deletes it"
    );
    assert_eq!(attrs["user.rgrid.kind"], "data");
    assert_eq!(attrs["user.rgrid.storage_class"], "STANDARD");
    assert!(!attrs["user.rgrid.etag"].is_empty());
    assert!(
        !attrs.contains_key("user.rgrid.url"),
        "a link is made when asked for, not listed"
    );

    let exec = getfattr_all(&mount.join("executions/e7"));
    assert_eq!(exec.keys().collect::<Vec<_>>(), ["user.rgrid.execution_id"]);
    assert!(getfattr_all(&mount.join("executions")).is_empty());

    let file = dir.join("table.csv");
    let missing = attr_tool(&["-n", "user.rgrid.nope"], &file).unwrap_err();
    assert!(missing.contains("No such attribute"), "{missing}");
    let other = attr_tool(&["-n", "user.other"], &file).unwrap_err();
    assert!(other.contains("No such attribute"), "{other}");
    let read_only = attr_tool(&["-n", "user.rgrid.sha256", "-v", "0"], &file).unwrap_err();
    assert!(read_only.contains("Operation not permitted"), "{read_only}");
    let set = attr_tool(
        &["-n", "user.rgrid.expires_at", "-v", "2031-01-01T00:00:00Z"],
        &file,
    );
    assert!(
        set.unwrap_err().contains("Operation not permitted"),
        "expiry follows the store's rules: set retention_days"
    );
    let bad = attr_tool(&["-n", "user.rgrid.retention_days", "-v", "soon"], &file).unwrap_err();
    assert!(bad.contains("Invalid argument"), "{bad}");
}

#[test]
fn user_tags_round_trip_and_a_plain_client_sees_them() {
    let store = TestStore::start();
    store.put("executions/e1/outputs/plot.png", vec![1u8; 64]);
    let key = "executions/e1/outputs/plot.png";
    let mount = Mount::new(&store, &[]);
    let file = mount.join(key);
    let etag = getfattr_all(&file)["user.rgrid.etag"].clone();
    attr_tool(&["-n", "user.rgrid.tag.team", "-v", "vision"], &file).unwrap();
    attr_tool(&["-n", "user.rgrid.tag.run", "-v", "r-17 a/b"], &file).unwrap();
    let attrs = getfattr_all(&file);
    assert_eq!(attrs["user.rgrid.tag.team"], "vision");
    assert_eq!(attrs["user.rgrid.tag.run"], "r-17 a/b");
    assert_eq!(attrs["user.rgrid.kind"], "image");
    assert_eq!(attrs["user.rgrid.etag"], etag, "no new version");
    let tags = store.tags(key);
    assert_eq!(
        (tags["team"].as_str(), tags["run"].as_str()),
        ("vision", "r-17 a/b")
    );
    assert_eq!(store.get(key).unwrap().0, vec![1u8; 64], "the bytes stay");

    attr_tool(&["-x", "user.rgrid.tag.team"], &file).unwrap();
    assert!(!store.tags(key).contains_key("team"));
    let gone = attr_tool(&["-x", "user.rgrid.tag.team"], &file).unwrap_err();
    assert!(gone.contains("No such attribute"), "{gone}");
    let reserved = attr_tool(
        &["-n", "user.rgrid.tag.rgrid-retention", "-v", "keep"],
        &file,
    );
    assert!(reserved.unwrap_err().contains("Operation not permitted"));
    for i in 0..9 {
        let name = format!("user.rgrid.tag.t{i}");
        attr_tool(&["-n", &name, "-v", "x"], &file).unwrap();
    }
    let full = attr_tool(&["-n", "user.rgrid.tag.one-more", "-v", "x"], &file).unwrap_err();
    assert!(full.contains("No space left"), "S3 keeps 10 tags: {full}");

    // A new mount reads them from the store.
    let fresh = Mount::new(&store, &[]);
    assert_eq!(
        getfattr_all(&fresh.join(key))["user.rgrid.tag.run"],
        "r-17 a/b"
    );
}

/// `curl` of the link returns the stored bytes; a gzip-stored object's link serves them
/// with `Content-Encoding: gzip`; past its time the link is refused.
#[test]
fn the_share_link_serves_the_object_until_it_expires() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &["--compress", "always", "--share-link-ttl", "3"]);
    let dir = mount.join("executions/e1/outputs");
    fs::create_dir_all(&dir).unwrap();
    let data = b"id,value\n1,2\n".repeat(1000);
    fs::write(dir.join("t.csv"), &data).unwrap();
    let url = run(Command::new("getfattr")
        .args(["--only-values", "-n", "user.rgrid.url"])
        .arg(dir.join("t.csv")));
    assert!(url.starts_with(&store.endpoint), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let gets = store.requests("GetObject");
    let body = Command::new("curl")
        .args(["-sf", "--compressed", &url])
        .output()
        .unwrap();
    assert!(body.status.success(), "{body:?}");
    assert_eq!(body.stdout, data, "decoded by the client");
    let headers = run(Command::new("curl").args(["-sf", "-o", "/dev/null", "-D", "-", &url]));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{headers}"
    );
    assert_eq!(
        store.requests("GetObject"),
        gets + 2,
        "only curl asked the store"
    );
    std::thread::sleep(Duration::from_secs(4));
    let late = Command::new("curl").args(["-sf", &url]).output().unwrap();
    assert!(!late.status.success(), "an expired link is refused");
}

/// FEAT-004's ARCHIVED state: an object in an archive class fails open with EREMOTE and
/// a log line saying how to restore it; `setfattr user.rgrid.restore` restores it, and
/// then it reads. (moto and the embedded store restore at once.)
fn an_archived_object_fails_open_until_restored(server: &dyn common::Endpoint) {
    let key = "executions/e1/outputs/old.bin";
    let (access, secret) = server.keys();
    let sdk = common::sdk_client(server.url(), access, secret);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let put = sdk
        .put_object()
        .bucket(common::BUCKET)
        .key(key)
        .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"cold bytes",
        ))
        .send();
    runtime.block_on(put).unwrap();
    let mount = Mount::new(server, &[]);
    let file = mount.join(key);
    let err = fs::read(&file).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EREMOTE), "{err}");
    let log = mount.log();
    assert!(
        log.contains(key) && log.contains("setfattr -n user.rgrid.restore"),
        "{log}"
    );
    let attrs = getfattr_all(&file);
    assert_eq!(attrs["user.rgrid.storage_class"], "GLACIER");
    let bad = attr_tool(&["-n", "user.rgrid.restore", "-v", "soon"], &file).unwrap_err();
    assert!(bad.contains("Invalid argument"), "{bad}");
    let plain = mount.join("executions/e1/outputs/plain.txt");
    fs::write(&plain, "warm").unwrap();
    let not_archived = attr_tool(&["-n", "user.rgrid.restore", "-v", "2"], &plain).unwrap_err();
    assert!(not_archived.contains("Invalid argument"), "{not_archived}");

    attr_tool(&["-n", "user.rgrid.restore", "-v", "2"], &file).unwrap();
    assert!(getfattr_all(&file).contains_key("user.rgrid.restore"));
    assert_eq!(fs::read(&file).unwrap(), b"cold bytes");
}

#[test]
fn an_archived_object_on_moto_fails_open_until_restored() {
    an_archived_object_fails_open_until_restored(&MotoServer::start());
}

#[test]
fn an_archived_object_on_the_embedded_store_fails_open_until_restored() {
    an_archived_object_fails_open_until_restored(&TestStore::start());
}
