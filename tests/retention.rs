//! Retention end to end: tiers kept as object tags, the tier rules `rgrid-mount retention
//! set` installs, `expires_at` as what will really delete an object, `retention apply`
//! with `--keep-latest`, and the embedded store's lifecycle pass. Against moto's S3
//! server (an implementation not ours, which evaluates nothing: the mount reads the
//! rules) and the embedded store (which, like MinIO, sends `x-amz-expiration` and
//! deletes what its rules say).

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter,
};
use common::BUCKET;
use common::{outcome, rgrid_mount_bare, sdk_client, Endpoint, MotoServer, Mount, TestStore};
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

/// A lifecycle rule as a plain S3 client reads it back.
#[derive(Debug)]
struct Rule {
    prefix: String,
    tags: Vec<(String, String)>,
    days: Option<i32>,
}

/// The bucket as a plain S3 client sees it.
struct Bucket {
    sdk: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    fn of(server: &dyn Endpoint) -> Bucket {
        let (access, secret) = server.keys();
        Bucket {
            sdk: sdk_client(server.url(), access, secret),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn put(&self, key: &str, body: &'static [u8]) {
        let body = ByteStream::from_static(body);
        let put = self.sdk.put_object().bucket(BUCKET).key(key).body(body);
        self.runtime.block_on(put.send()).unwrap();
    }

    /// LastModified, ETag and `x-amz-expiration` of `key`.
    fn head(&self, key: &str) -> (SystemTime, String, Option<String>) {
        let head = self.sdk.head_object().bucket(BUCKET).key(key).send();
        let head = self.runtime.block_on(head).unwrap();
        let modified = SystemTime::try_from(*head.last_modified().unwrap()).unwrap();
        let etag = head.e_tag().unwrap().to_owned();
        (modified, etag, head.expiration().map(str::to_owned))
    }

    /// Tags `key` with tier `tier`, as another tool would.
    fn set_tier(&self, key: &str, tier: &str) {
        use aws_sdk_s3::types::{Tag, Tagging};
        let tag = Tag::builder()
            .key("rgrid-retention")
            .value(tier)
            .build()
            .unwrap();
        let tagging = Tagging::builder().tag_set(tag).build().unwrap();
        let put = self.sdk.put_object_tagging().bucket(BUCKET).key(key);
        self.runtime.block_on(put.tagging(tagging).send()).unwrap();
    }

    fn exists(&self, key: &str) -> bool {
        let head = self.sdk.head_object().bucket(BUCKET).key(key).send();
        self.runtime.block_on(head).is_ok()
    }

    fn tags(&self, key: &str) -> HashMap<String, String> {
        let get = self.sdk.get_object_tagging().bucket(BUCKET).key(key).send();
        let out = self.runtime.block_on(get).unwrap();
        let tags = out.tag_set().iter();
        tags.map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect()
    }

    /// The bucket's rules.
    fn rules(&self) -> Vec<Rule> {
        let get = self.sdk.get_bucket_lifecycle_configuration().bucket(BUCKET);
        let out = self.runtime.block_on(get.send()).unwrap();
        out.rules()
            .iter()
            .map(|r| {
                let filter = r.filter().unwrap();
                let (prefix, tags) = match filter.and() {
                    Some(and) => (
                        and.prefix().unwrap_or("").to_owned(),
                        and.tags()
                            .iter()
                            .map(|t| (t.key().to_owned(), t.value().to_owned()))
                            .collect(),
                    ),
                    None => (filter.prefix().unwrap_or("").to_owned(), Vec::new()),
                };
                let days = r.expiration().and_then(|e| e.days());
                Rule { prefix, tags, days }
            })
            .collect()
    }

    /// Replaces the bucket's configuration with one rule deleting everything under
    /// `prefix` at `date`.
    fn date_rule(&self, prefix: &str, date: &str) {
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
        let put = self
            .sdk
            .put_bucket_lifecycle_configuration()
            .bucket(BUCKET)
            .lifecycle_configuration(config)
            .send();
        self.runtime.block_on(put).unwrap();
    }
}

fn getfattr(path: &Path, name: &str) -> String {
    outcome(
        Command::new("getfattr")
            .args(["--only-values", "-n", name])
            .arg(path),
    )
    .unwrap()
}

fn setfattr(path: &Path, name: &str, value: &str) -> Result<String, String> {
    outcome(
        Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(path),
    )
}

/// Midnight UTC at or after `t`, as S3 rounds lifecycle expiry.
fn next_midnight(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.div_ceil(DAY) * DAY)
}

fn expires_at(path: &Path) -> SystemTime {
    let value = getfattr(path, "user.rgrid.expires_at");
    parse_time(&value).unwrap_or_else(|| panic!("not a time: {value:?}"))
}

/// A 30-day tier on every file written, then 90 days and `keep` asked for with setfattr:
/// the tag changes (no copy, no new version), the bucket's rules act on it, and the date
/// shown is LastModified plus the tier's days as S3 counts them.
fn tiers_change_what_the_store_does(server: &dyn Endpoint, sends_header: bool) {
    let bucket = Bucket::of(server);
    let set = retention(server, &["set", "--tiers", "30,90"]).unwrap();
    assert!(
        set.contains("tagged rgrid-retention=90d expire 90 days"),
        "{set}"
    );
    let mount = Mount::new(server, &["--metadata-ttl", "1"]);
    let key = "executions/e1/outputs/model.bin";
    let file = mount.join(key);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, vec![7u8; 4096]).unwrap();
    assert_eq!(
        bucket.tags(key)["rgrid-retention"],
        "30d",
        "tagged at its PUT"
    );
    let (written, etag, _) = bucket.head(key);
    assert_eq!(getfattr(&file, "user.rgrid.retention_days"), "30");
    let thirty = next_midnight(written + Duration::from_secs(30 * DAY));
    assert_eq!(expires_at(&file), thirty);

    setfattr(&file, "user.rgrid.retention_days", "90").unwrap();
    assert_eq!(bucket.tags(key)["rgrid-retention"], "90d");
    let (modified, etag_after, header) = bucket.head(key);
    assert_eq!(
        (modified, &etag_after),
        (written, &etag),
        "no copy, no version"
    );
    let ninety = next_midnight(written + Duration::from_secs(90 * DAY));
    assert_eq!(expires_at(&file), ninety);
    assert_eq!(getfattr(&file, "user.rgrid.retention_days"), "90");
    let rules = bucket.rules();
    let tier = ("rgrid-retention".to_owned(), "90d".to_owned());
    assert!(
        rules
            .iter()
            .any(|r| r.prefix == "executions/" && r.tags == [tier.clone()] && r.days == Some(90)),
        "the store has the rule the tag selects: {rules:?}"
    );
    if sends_header {
        let header = header.expect("x-amz-expiration");
        // The rule's id, URL-encoded as S3 writes it.
        assert!(
            header.contains("rule-id=\"rgrid-tier%3A90d%3Aexecutions%2F\""),
            "{header}"
        );
    }
    // A fresh mount reads the same from the store.
    let fresh = Mount::new(server, &[]);
    assert_eq!(expires_at(&fresh.join(key)), ninety);

    setfattr(&file, "user.rgrid.retention_days", "keep").unwrap();
    assert_eq!(getfattr(&file, "user.rgrid.expires_at"), "never");
    assert_eq!(getfattr(&file, "user.rgrid.retention_days"), "keep");
    let none = setfattr(&file, "user.rgrid.retention_days", "45").unwrap_err();
    assert!(none.contains("Invalid argument"), "{none}");
    assert!(
        mount.log().contains("no lifecycle rule deletes"),
        "{}",
        mount.log()
    );
    assert_eq!(bucket.tags(key)["rgrid-retention"], "keep", "unchanged");

    // Another tool changes the tier: shown once the tags are read again.
    bucket.set_tier(key, "30d");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(getfattr(&file, "user.rgrid.retention_days"), "30");
    assert_eq!(expires_at(&file), thirty);
    // A copy onto itself (chmod) starts the object's days again.
    let before = fs::metadata(&file).unwrap();
    let mut perms = before.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(&file, perms).unwrap();
    let (rewritten, _, _) = bucket.head(key);
    assert_eq!(
        expires_at(&file),
        next_midnight(rewritten + Duration::from_secs(30 * DAY))
    );
}

#[test]
fn tiers_change_what_moto_does() {
    tiers_change_what_the_store_does(&MotoServer::start(), false);
}

#[test]
fn tiers_change_what_the_embedded_store_does() {
    tiers_change_what_the_store_does(&TestStore::start(), true);
}

#[test]
fn a_bucket_without_rules_shows_never_and_refuses_tiers() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &["--retention-days", "7"]);
    let file = mount.join("executions/e1/outputs/a.txt");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "x").unwrap();
    assert_eq!(getfattr(&file, "user.rgrid.expires_at"), "never");
    assert_eq!(getfattr(&file, "user.rgrid.retention_days"), "7");
    let err = setfattr(&file, "user.rgrid.retention_days", "90").unwrap_err();
    assert!(err.contains("Operation not supported"), "{err}");
    assert!(
        mount.log().contains("no retention tier rules"),
        "{}",
        mount.log()
    );
    let bad = Mount::try_new(&store, &["--retention-days", "soon"])
        .err()
        .unwrap();
    assert!(bad.1.contains("not a retention tier"), "{}", bad.1);
}

#[test]
fn apply_tags_the_untiered_and_keeps_the_latest() {
    let moto = MotoServer::start();
    let bucket = Bucket::of(&moto);
    retention(&moto, &["set", "--tiers", "30,90"]).unwrap();
    for e in ["e1", "e2", "e3", "e4"] {
        bucket.put(&format!("executions/{e}/outputs/a.txt"), b"a");
        // LastModified counts whole seconds.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let apply = retention(&moto, &["apply", "--keep-latest", "2"]).unwrap();
    assert!(apply.contains("4 objects looked at"), "{apply}");
    assert!(apply.contains("kept as latest (e4, e3)"), "{apply}");
    let tier = |e: &str| bucket.tags(&format!("executions/{e}/outputs/a.txt"));
    assert_eq!(tier("e1")["rgrid-retention"], "30d");
    assert_eq!(tier("e2")["rgrid-retention"], "30d");
    assert_eq!(tier("e3")["rgrid-retention"], "latest");
    assert_eq!(tier("e4")["rgrid-retention-tier"], "30d");

    let mount = Mount::new(&moto, &[]);
    let kept = mount.join("executions/e4/outputs/a.txt");
    assert_eq!(getfattr(&kept, "user.rgrid.expires_at"), "never");
    assert_eq!(getfattr(&kept, "user.rgrid.retention_days"), "latest");
    let (written, _, _) = bucket.head("executions/e1/outputs/a.txt");
    let old = mount.join("executions/e1/outputs/a.txt");
    assert_eq!(
        expires_at(&old),
        next_midnight(written + Duration::from_secs(30 * DAY))
    );

    // A newer execution: e3 falls out of the latest two and returns to its tier, but
    // only when a keep is asked for: a run that tags new objects ends no keep.
    bucket.put("executions/e5/outputs/a.txt", b"a");
    let tag_only = retention(&moto, &["apply"]).unwrap();
    assert!(
        tag_only.contains("1 objects without a tier got the default"),
        "{tag_only}"
    );
    assert_eq!(tier("e3")["rgrid-retention"], "latest");
    let again = retention(&moto, &["apply", "--keep-latest", "2"]).unwrap();
    assert!(
        again.contains("1 objects returned to their tier"),
        "{again}"
    );
    assert_eq!(tier("e3")["rgrid-retention"], "30d");
    assert!(!tier("e3").contains_key("rgrid-retention-tier"));
    assert_eq!(tier("e5")["rgrid-retention"], "latest");
    assert_eq!(tier("e5")["rgrid-retention-tier"], "30d");
}

#[test]
fn the_embedded_store_deletes_what_its_rules_say() {
    let store = TestStore::start();
    store.lifecycle_every(Duration::from_millis(200));
    let bucket = Bucket::of(&store);
    bucket.put("old/stale.txt", b"x");
    bucket.put("executions/e1/outputs/kept.txt", b"x");
    let mount = Mount::new(&store, &["--metadata-ttl", "0"]);
    assert_eq!(common::names(&mount.join("old")), ["stale.txt"]);

    // AC-7.3: a rule whose time has passed; the store's pass deletes the object.
    bucket.date_rule("old/", "2020-01-01T00:00:00Z");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bucket.exists("old/stale.txt") {
        assert!(
            Instant::now() < deadline,
            "the lifecycle pass deleted nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = fs::metadata(mount.join("old/stale.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(fs::read_dir(mount.join("old")).map_or(true, |mut d| d.next().is_none()));
    assert!(
        bucket.exists("executions/e1/outputs/kept.txt"),
        "outside the rule"
    );
}

#[test]
fn past_rules_hide_objects_and_the_header_comes_first() {
    let store = TestStore::start();
    let bucket = Bucket::of(&store);
    bucket.put("old/stale.txt", b"x");
    bucket.put("other/plain.txt", b"x");
    // The store's pass would delete it soon; until then the mount already hides it.
    bucket.date_rule("old/", "2020-01-01T00:00:00Z");
    let mount = Mount::new(&store, &[]);
    assert!(fs::read_dir(mount.join("old")).unwrap().next().is_none());
    let err = fs::metadata(mount.join("old/stale.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(
        getfattr(&mount.join("other/plain.txt"), "user.rgrid.expires_at"),
        "never"
    );

    // Rules the mount has not read yet: the store's header tells.
    retention(&store, &["set", "--tiers", "3"]).unwrap();
    bucket.put("executions/e1/outputs/r.txt", b"x");
    bucket.set_tier("executions/e1/outputs/r.txt", "3d");
    let (written, _, header) = bucket.head("executions/e1/outputs/r.txt");
    assert!(header.unwrap().contains("rule-id="));
    assert_eq!(
        expires_at(&mount.join("executions/e1/outputs/r.txt")),
        next_midnight(written + Duration::from_secs(3 * DAY))
    );
}

#[test]
fn opening_a_file_the_store_deletes_soon_is_logged() {
    let store = TestStore::start();
    let bucket = Bucket::of(&store);
    bucket.put("soon/a.txt", b"x");
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    bucket.date_rule("soon/", &rgrid_mount::artifact::format_time(in_an_hour));
    let mount = Mount::new(&store, &[]);
    assert_eq!(fs::read(mount.join("soon/a.txt")).unwrap(), b"x");
    assert!(mount.log().contains("deletes soon"), "{}", mount.log());
}

#[test]
fn retention_show_and_set_keep_other_rules() {
    let moto = MotoServer::start();
    assert!(retention(&moto, &["show"])
        .unwrap()
        .contains("no expiration rules"));
    Bucket::of(&moto).date_rule("old/", "2020-01-01T00:00:00Z");
    retention(&moto, &["set", "--tiers", "30,90"]).unwrap();
    retention(
        &moto,
        &["set", "--tiers", "7", "--prefix", "executions/e1/"],
    )
    .unwrap();
    retention(&moto, &["set", "--tiers", "30,365"]).unwrap();
    let shown = retention(&moto, &["show"]).unwrap();
    assert!(
        shown.contains(
            "cutoff: objects under \"old/\" expire at 2020-01-01T00:00:00Z (whatever their tier)"
        ),
        "{shown}"
    );
    for id in [
        "rgrid-tier:7d:executions/e1/",
        "rgrid-tier:30d:executions/",
        "rgrid-tier:365d:executions/",
    ] {
        assert!(shown.contains(id), "{id}: {shown}");
    }
    assert!(
        !shown.contains("rgrid-tier:90d:executions/:"),
        "a prefix's tiers are replaced as a set: {shown}"
    );

    let bad = retention(&moto, &["set", "--tiers", "0"]).unwrap_err();
    assert!(bad.contains("--tiers"), "{bad}");
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
    for args in [&["show"][..], &["set"], &["apply"]] {
        let err = retention(&server, args).unwrap_err();
        assert!(
            err.contains("does not support bucket lifecycle configuration"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}
