//! Expiry from the bucket's lifecycle configuration, and `rgrid-mount retention`: against
//! moto's S3 server (an implementation not ours), against the embedded store (which, like
//! MinIO, sends `x-amz-expiration`), and against a server without a lifecycle API.

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter,
};
use common::{outcome, rgrid_mount_bare, run, Endpoint, MotoServer, Mount, TestStore, BUCKET};
use rgrid_mount::artifact::parse_time;

const DAY: u64 = 86_400;

/// `rgrid-mount retention ARGS --endpoint-url URL`: exit success and stdout, or stderr.
fn retention(server: &dyn Endpoint, args: &[&str]) -> Result<String, String> {
    outcome(
        rgrid_mount_bare(server)
            .arg("retention")
            .args(args)
            .args(["--endpoint-url", server.url()]),
    )
}

/// A rule deleting everything under `prefix` at `date`, set with the SDK.
fn date_rule(server: &MotoServer, prefix: &str, date: &str) {
    let date = parse_time(date).unwrap();
    let rule = LifecycleRule::builder()
        .id("cutoff")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
        .expiration(
            LifecycleExpiration::builder()
                .date(DateTime::from(date))
                .build(),
        )
        .build()
        .unwrap();
    let config = BucketLifecycleConfiguration::builder()
        .rules(rule)
        .build()
        .unwrap();
    let put = server
        .sdk()
        .put_bucket_lifecycle_configuration()
        .bucket(BUCKET)
        .lifecycle_configuration(config)
        .send();
    server.runtime.block_on(put).unwrap();
}

fn put(server: &MotoServer, key: &str) -> SystemTime {
    let sdk = server.sdk();
    let body = ByteStream::from_static(b"data");
    let send = sdk.put_object().bucket(BUCKET).key(key).body(body).send();
    server.runtime.block_on(send).unwrap();
    let head = server
        .runtime
        .block_on(sdk.head_object().bucket(BUCKET).key(key).send())
        .unwrap();
    SystemTime::try_from(*head.last_modified().unwrap()).unwrap()
}

fn expires_at(path: &std::path::Path) -> SystemTime {
    let value = run(Command::new("getfattr")
        .args(["--only-values", "-n", "user.rgrid.expires_at"])
        .arg(path));
    parse_time(&value).unwrap()
}

/// Midnight UTC at or after `t`, as S3 rounds lifecycle expiry.
fn next_midnight(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.div_ceil(DAY) * DAY)
}

#[test]
fn retention_show_and_set_keep_other_rules() {
    let moto = MotoServer::start();
    assert!(retention(&moto, &["show"])
        .unwrap()
        .contains("no expiration rules"));
    date_rule(&moto, "old/", "2020-01-01T00:00:00Z");
    let set = retention(&moto, &["set", "--days", "30"]).unwrap();
    assert!(set.contains("\"executions/\" expire 30 days"), "{set}");
    retention(&moto, &["set", "--days", "3", "--prefix", "executions/e1/"]).unwrap();
    retention(&moto, &["set", "--days", "45"]).unwrap();
    let shown = retention(&moto, &["show"]).unwrap();
    assert!(
        shown.contains("cutoff: objects under \"old/\" expire at 2020-01-01T00:00:00Z"),
        "{shown}"
    );
    assert!(
        shown.contains("\"executions/e1/\" expire 3 days"),
        "{shown}"
    );
    assert!(shown.contains("\"executions/\" expire 45 days"), "{shown}");
    assert!(
        !shown.contains("30 days"),
        "the rule of a prefix is replaced: {shown}"
    );

    let bad = retention(&moto, &["set", "--days", "0"]).unwrap_err();
    assert!(bad.contains("--days"), "{bad}");
}

/// An HTTP server that answers every request 501 NotImplemented, as S3-compatible
/// servers without a lifecycle API do for it.
struct NotImplemented(String);

impl NotImplemented {
    fn start() -> NotImplemented {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = "<?xml version=\"1.0\"?><Error><Code>NotImplemented</Code>\
                    <Message>A header you provided implies functionality that is not implemented</Message></Error>";
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 501 Not Implemented\r\ncontent-type: application/xml\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        NotImplemented(url)
    }
}

impl Endpoint for NotImplemented {
    fn url(&self) -> &str {
        &self.0
    }
    fn keys(&self) -> (&str, &str) {
        ("k", "s")
    }
}

#[test]
fn a_server_without_lifecycle_gets_a_clear_error() {
    let server = NotImplemented::start();
    for args in [&["show"][..], &["set", "--days", "30"]] {
        let err = retention(&server, args).unwrap_err();
        assert!(
            err.contains("does not support bucket lifecycle configuration"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn the_stores_expiration_header_comes_before_the_default() {
    let store = TestStore::start();
    store.put("executions/e1/outputs/r.txt", "x");
    // Mounted first: the mount read no lifecycle rule, only the header can tell it.
    let mount = Mount::new(&store, &[]);
    retention(&store, &["set", "--days", "3"]).unwrap();
    let sdk = store.sdk();
    let head = sdk
        .head_object()
        .bucket(BUCKET)
        .key("executions/e1/outputs/r.txt");
    let head = store.runtime.block_on(head.send()).unwrap();
    assert!(head.expiration().unwrap().contains("rule-id="), "{head:?}");
    let written = SystemTime::try_from(*head.last_modified().unwrap()).unwrap();
    let file = mount.join("executions/e1/outputs/r.txt");
    assert_eq!(
        expires_at(&file),
        next_midnight(written + Duration::from_secs(3 * DAY))
    );
    assert!(retention(&store, &["show"]).unwrap().contains("3 days"));
}

#[test]
fn lifecycle_rules_give_expiry_and_hide_expired_objects() {
    let moto = MotoServer::start();
    date_rule(&moto, "old/", "2020-01-01T00:00:00Z");
    retention(&moto, &["set", "--days", "7", "--prefix", "executions/"]).unwrap();
    let written = put(&moto, "executions/e1/outputs/a.txt");
    put(&moto, "old/stale.txt");
    put(&moto, "other/plain.txt");

    let mount = Mount::new(&moto, &[]);
    let file = mount.join("executions/e1/outputs/a.txt");
    assert_eq!(fs::read_to_string(&file).unwrap(), "data");
    let seven_days = next_midnight(written + Duration::from_secs(7 * DAY));
    assert_eq!(expires_at(&file), seven_days);
    let plain = expires_at(&mount.join("other/plain.txt"));
    let thirty_days = SystemTime::now() + Duration::from_secs(30 * DAY);
    let off = plain
        .duration_since(thirty_days)
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(120), "no rule: --retention-days");

    // Past its rule's date: gone from listings and lookups alike.
    assert!(fs::read_dir(mount.join("old")).unwrap().next().is_none());
    let err = fs::metadata(mount.join("old/stale.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}
