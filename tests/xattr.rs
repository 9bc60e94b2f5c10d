//! Artifact metadata as extended attributes, and expiry, through a real mount with
//! `getfattr`/`setfattr` as users run them. (Expiry from a bucket lifecycle rule is tested
//! against a server that has lifecycle configuration, in tests/lifecycle.rs.)

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{outcome, run, Mount, TestStore};
use rgrid_mount::artifact::{format_time, parse_time};
use sha2::{Digest, Sha256};

const DAY: u64 = 86_400;

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

fn close_to(t: SystemTime, expected: SystemTime) -> bool {
    let d = t.duration_since(expected).unwrap_or_else(|e| e.duration());
    d < Duration::from_secs(120)
}

#[test]
fn getfattr_shows_the_artifact_metadata() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    let dir = mount.join("executions/e7/outputs");
    fs::create_dir_all(&dir).unwrap();
    let data = b"id,value\n1,2\n".repeat(100);
    fs::write(dir.join("table.csv"), &data).unwrap();
    let now = SystemTime::now();

    let attrs = getfattr_all(&dir.join("table.csv"));
    let sha: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(attrs["user.rgrid.sha256"], sha);
    assert_eq!(attrs["user.rgrid.stored_size"], data.len().to_string());
    assert_eq!(attrs["user.rgrid.content_type"], "text/csv");
    assert_eq!(attrs["user.rgrid.compression"], "none");
    assert_eq!(attrs["user.rgrid.execution_id"], "e7");
    assert_eq!(attrs["user.rgrid.artifact_type"], "output");
    assert_eq!(attrs["user.rgrid.retention_days"], "30");
    assert!(!attrs["user.rgrid.etag"].is_empty());
    let expires = parse_time(&attrs["user.rgrid.expires_at"]).expect("RFC 3339");
    assert!(
        close_to(expires, now + Duration::from_secs(30 * DAY)),
        "{attrs:?}"
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
    let bad = attr_tool(&["-n", "user.rgrid.expires_at", "-v", "soon"], &file).unwrap_err();
    assert!(bad.contains("Invalid argument"), "{bad}");
}

#[test]
fn setfattr_changes_retention_in_the_store() {
    let store = TestStore::start();
    store.put("executions/e1/outputs/model.bin", vec![7u8; 4096]);
    let key = "executions/e1/outputs/model.bin";
    {
        let mount = Mount::new(&store, &[]);
        let file = mount.join(key);
        let when = "2031-03-04T05:06:07Z";
        attr_tool(&["-n", "user.rgrid.expires_at", "-v", when], &file).unwrap();
        assert_eq!(getfattr_all(&file)["user.rgrid.expires_at"], when);
        let (body, meta) = store.get(key).unwrap();
        assert_eq!(body, vec![7u8; 4096], "the bytes stay");
        assert_eq!(meta["rgrid-expires-at"], when);
        // The same bytes, still readable through the mount after the rewrite.
        assert_eq!(fs::read(&file).unwrap(), vec![7u8; 4096]);

        attr_tool(&["-n", "user.rgrid.retention_days", "-v", "90"], &file).unwrap();
        let attrs = getfattr_all(&file);
        assert_eq!(attrs["user.rgrid.retention_days"], "90");
        let expires = parse_time(&attrs["user.rgrid.expires_at"]).unwrap();
        let expected = SystemTime::now() + Duration::from_secs(90 * DAY);
        assert!(close_to(expires, expected), "{attrs:?}");
    }
    // A new mount reads it back from the store.
    let mount = Mount::new(&store, &[]);
    let attrs = getfattr_all(&mount.join(key));
    assert_eq!(attrs["user.rgrid.retention_days"], "90");
    let (_, meta) = store.get(key).unwrap();
    assert_eq!(attrs["user.rgrid.expires_at"], meta["rgrid-expires-at"]);

    attr_tool(&["-x", "user.rgrid.expires_at"], &mount.join(key)).unwrap();
    let attrs = getfattr_all(&mount.join(key));
    assert_eq!(
        attrs["user.rgrid.retention_days"], "30",
        "back to the default"
    );
}

#[test]
fn expired_objects_are_hidden_whatever_says_so() {
    let store = TestStore::start();
    let past = format_time(SystemTime::now() - Duration::from_secs(60));
    let future = format_time(SystemTime::now() + Duration::from_secs(DAY));
    let soon = format_time(SystemTime::now() + Duration::from_secs(3600));
    store.put_with_meta("d/gone.txt", "x", &[("rgrid-expires-at", &past)]);
    store.put_with_meta("d/kept.txt", "x", &[("rgrid-expires-at", &future)]);
    store.put_with_meta("d/soon.txt", "x", &[("rgrid-expires-at", &soon)]);
    store.put("d/plain.txt", "x");

    let names = |mount: &Mount| {
        let mut names: Vec<String> = fs::read_dir(mount.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    // Default retention (30 days): only the object's own past expiry hides it. Its
    // metadata comes with HEAD, so a lookup sees it; a listing carries no metadata.
    let mount = Mount::new(&store, &[]);
    let err = fs::metadata(mount.join("d/gone.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let listed = names(&mount);
    for name in ["kept.txt", "plain.txt", "soon.txt"] {
        assert!(listed.iter().any(|n| n == name), "{listed:?}");
    }
    assert_eq!(fs::read_to_string(mount.join("d/soon.txt")).unwrap(), "x");
    assert!(mount.log().contains("deletes soon"), "{}", mount.log());
    drop(mount);

    // --retention-days 0: objects without their own expiry are past it at once; the
    // listing asks HEAD about those only, and their own metadata decides.
    let mount = Mount::new(&store, &["--retention-days", "0"]);
    assert_eq!(names(&mount), ["kept.txt", "soon.txt"]);
    let fresh = Mount::new(&store, &["--retention-days", "0"]);
    let err = fs::metadata(fresh.join("d/plain.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(fs::metadata(fresh.join("d/kept.txt")).is_ok());
}
