//! Unit tests of the namespace over the in-memory client.

use std::time::Duration;

use super::*;
use crate::object::{MemoryClient, Operation};
use crate::retention::RetentionConfig;

fn namespace(keys: &[&str]) -> (Namespace, MemoryClient) {
    let client = MemoryClient::new();
    for key in keys {
        client.insert(key, key.as_bytes().to_vec(), ObjectHeaders::default());
    }
    let config = NamespaceConfig {
        root_prefix: String::new(),
        inputs_prefix: None,
        metadata_ttl: Duration::from_secs(60),
        listing_heads: 0,
    };
    let retention = RetentionConfig {
        tier: crate::retention::Tier::Days(30),
        warning: Duration::from_secs(3600),
        refresh: Duration::from_secs(600),
    };
    let retention = Arc::new(Retention::new(Arc::new(client.clone()), retention));
    (
        Namespace::new(Arc::new(client.clone()), retention, config),
        client,
    )
}

fn names(entries: &[DirEntry]) -> Vec<(&str, InodeKind)> {
    entries
        .iter()
        .map(|e| (e.name.as_str(), e.node.kind))
        .collect()
}

#[tokio::test]
async fn directory_shadows_file_and_bad_keys_are_hidden() {
    let (ns, _) = namespace(&["a", "a/x", "b//c", "./d", "ok.txt", "dir/"]);
    let root = ns.readdir(InodeNo::ROOT).await.unwrap();
    let dir = InodeKind::Directory;
    assert_eq!(
        names(&root),
        vec![
            ("a", dir),
            ("b", dir),
            ("dir", dir),
            ("ok.txt", InodeKind::File)
        ]
    );
    let b = ns.lookup(InodeNo::ROOT, "b").await.unwrap();
    assert!(ns.readdir(b.ino).await.unwrap().is_empty());
    let dir = ns.lookup(InodeNo::ROOT, "dir").await.unwrap();
    assert!(ns.readdir(dir.ino).await.unwrap().is_empty());
}

#[tokio::test]
async fn attributes_set_during_an_upload_stay_pending() {
    let (ns, _) = namespace(&[]);
    let file = ns
        .create_local(InodeNo::ROOT, "f", InodeKind::File)
        .unwrap();
    let (a, b) = (
        KeptAttrs {
            mode: Some(0o600),
            mtime: None,
        },
        KeptAttrs {
            mode: Some(0o640),
            mtime: None,
        },
    );
    ns.set_kept(file.ino, a);
    let attrs = |kept, pending| UploadAttrs { kept, pending };
    let version = |etag: &str, kept| StoredVersion {
        size: 1,
        stored_size: 1,
        etag: Some(etag.into()),
        kept,
    };
    // The upload carried `a`, and nothing changed meanwhile: nothing pending.
    ns.stored(file.ino, version("\"v1\"", a));
    assert_eq!(ns.upload_attrs(file.ino), attrs(a, false));
    // `b` arrived while an upload carrying `a` ran: still pending, still shown.
    ns.set_kept(file.ino, b);
    ns.stored(file.ino, version("\"v2\"", a));
    assert_eq!(ns.upload_attrs(file.ino), attrs(b, true));
    // A metadata rewrite carrying an older value leaves `b` pending; `b` clears it.
    let headers = |kept: KeptAttrs| {
        let mut headers = ObjectHeaders::default();
        kept.store(&mut headers.user_metadata);
        headers
    };
    ns.rewritten(file.ino, Some("\"v2\""), Some("\"v3\"".into()), headers(a));
    assert_eq!(ns.upload_attrs(file.ino), attrs(b, true));
    ns.rewritten(file.ino, Some("\"v3\""), Some("\"v4\"".into()), headers(b));
    assert_eq!(ns.upload_attrs(file.ino), attrs(b, false));
}

#[tokio::test]
async fn listing_answers_lookups_without_requests() {
    let (ns, client) = namespace(&["d/1", "d/2", "d/3"]);
    let d = ns.lookup(InodeNo::ROOT, "d").await.unwrap();
    ns.readdir(d.ino).await.unwrap();
    let (heads, lists) = (client.count(Operation::Head), client.count(Operation::List));
    let f = ns.lookup(d.ino, "2").await.unwrap();
    assert_eq!((f.kind, f.size), (InodeKind::File, 3));
    assert!(matches!(
        ns.lookup(d.ino, "9").await,
        Err(NamespaceError::NotFound)
    ));
    assert_eq!(
        (client.count(Operation::Head), client.count(Operation::List)),
        (heads, lists)
    );
}

#[tokio::test]
async fn a_forgotten_inode_from_a_listing_comes_back_on_lookup() {
    let (ns, _) = namespace(&["d/f"]);
    let d = ns.lookup(InodeNo::ROOT, "d").await.unwrap();
    let listed = ns.readdir(d.ino).await.unwrap()[0].node.clone();
    let f = ns.lookup(d.ino, "f").await.unwrap();
    assert!(ns.forget(f.ino, 1), "last reference gone");
    let again = ns.lookup(d.ino, "f").await.unwrap();
    assert_eq!(again.ino, listed.ino);
    assert_eq!(ns.getattr(again.ino).await.unwrap().size, 3);
}

#[tokio::test]
async fn negative_lookups_are_cached_until_the_ttl() {
    let (ns, client) = namespace(&["f"]);
    for _ in 0..3 {
        let missing = ns.lookup(InodeNo::ROOT, "missing").await;
        assert!(matches!(missing, Err(NamespaceError::NotFound)));
    }
    assert_eq!(client.count(Operation::Head), 1);
}

#[tokio::test]
async fn cold_lookup_finds_files_and_directories() {
    let (ns, _) = namespace(&["f", "g/h"]);
    assert_eq!(
        ns.lookup(InodeNo::ROOT, "f").await.unwrap().kind,
        InodeKind::File
    );
    assert_eq!(
        ns.lookup(InodeNo::ROOT, "g").await.unwrap().kind,
        InodeKind::Directory
    );
    assert!(matches!(
        ns.lookup(InodeNo::ROOT, "nope").await,
        Err(NamespaceError::NotFound)
    ));
}

#[tokio::test]
async fn forget_releases_inodes() {
    let (ns, _) = namespace(&["f"]);
    let f = ns.lookup(InodeNo::ROOT, "f").await.unwrap();
    ns.forget(f.ino, 1);
    assert!(matches!(
        ns.getattr(f.ino).await,
        Err(NamespaceError::UnknownInode(_))
    ));
}

#[tokio::test]
async fn store_failure_is_an_error_not_a_missing_file() {
    let (ns, client) = namespace(&["f"]);
    client.fail_next(2);
    assert!(matches!(
        ns.lookup(InodeNo::ROOT, "f").await,
        Err(NamespaceError::Object(_))
    ));
}
