//! Unit tests of the namespace over the in-memory client.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::object::{
    ByteStream, ExpiryRule, ListPage, MemoryClient, ObjectInfo, ObjectMeta, Operation, PartBody,
    Tags,
};
use crate::retention::RetentionConfig;

fn namespace(keys: &[&str]) -> (Namespace, MemoryClient) {
    let client = MemoryClient::new();
    for key in keys {
        client.insert(key, key.as_bytes().to_vec(), ObjectHeaders::default());
    }
    (namespace_over(Arc::new(client.clone()), ""), client)
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

/// A piece of a key: the ones the name rules are about, a small alphabet (so that keys
/// share prefixes and names), and any other text.
fn key_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("\0".to_owned()),
        Just("%ff%c3%28".to_owned()),
        "[\\x01-\\x1f\\x7f]{1,2}",
        "[ab]{1,2}",
        "\\PC{0,6}",
        (254usize..258).prop_map(|n| "x".repeat(n)),
    ]
}

/// A key of a few pieces.
fn any_key() -> impl Strategy<Value = String> {
    proptest::collection::vec(key_piece(), 1..6).prop_map(|pieces| pieces.concat())
}

/// What a listing of `prefix` shows of `keys`: the segment after the prefix, a directory
/// when more of the key follows it, and only the names the rules allow.
fn listed(keys: &[String], prefix: &str) -> BTreeMap<String, InodeKind> {
    let mut shown = BTreeMap::new();
    for rest in keys.iter().filter_map(|k| k.strip_prefix(prefix)) {
        match rest.split_once('/') {
            Some((name, _)) => {
                shown.insert(name.to_owned(), InodeKind::Directory);
            }
            None => {
                shown.entry(rest.to_owned()).or_insert(InodeKind::File);
            }
        }
    }
    shown.retain(|name, _| check_name(name).is_ok());
    shown
}

/// A namespace over `client` rooted at `root_prefix`, making no HEAD for listings.
fn namespace_over(client: Arc<dyn ObjectClient>, root_prefix: &str) -> Namespace {
    let config = NamespaceConfig {
        root_prefix: root_prefix.to_owned(),
        inputs_prefix: None,
        metadata_ttl: Duration::from_secs(60),
        listing_heads: 0,
    };
    let retention = RetentionConfig {
        tier: crate::retention::Tier::Days(30),
        warning: Duration::from_secs(3600),
        refresh: Duration::from_secs(600),
    };
    let retention = Arc::new(Retention::new(client.clone(), retention));
    Namespace::new(client, retention, config)
}

/// A store whose every first page of a listing is `page`, whatever the prefix: keys
/// outside the prefix or below it, prefixes without their `/`, names no rule allows.
/// Asked for the page after it, it answers `page` again (a token that repeats).
/// Everything else is `inner`'s.
#[derive(Debug)]
struct OddListing {
    inner: MemoryClient,
    page: ListPage,
}

#[async_trait::async_trait]
impl ObjectClient for OddListing {
    async fn check_bucket(&self) -> Result<(), ObjectError> {
        self.inner.check_bucket().await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.inner.head(key).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: Option<u32>,
    ) -> Result<ListPage, ObjectError> {
        if token.is_none() || token == self.page.next_token.as_deref() {
            return Ok(self.page.clone());
        }
        self.inner.list_page(prefix, token, max_keys).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<ByteStream, ObjectError> {
        self.inner.get_range(key, range, if_match).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, ObjectError> {
        self.inner.put(key, body, headers).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.inner.delete(key).await
    }

    async fn create_multipart(
        &self,
        key: &str,
        headers: ObjectHeaders,
    ) -> Result<String, ObjectError> {
        self.inner.create_multipart(key, headers).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: PartBody,
    ) -> Result<String, ObjectError> {
        self.inner.upload_part(key, upload_id, number, body).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<Option<String>, ObjectError> {
        self.inner.complete_multipart(key, upload_id, parts).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), ObjectError> {
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn expiry_rules(&self) -> Result<Vec<ExpiryRule>, ObjectError> {
        self.inner.expiry_rules().await
    }

    async fn update_expiry_rules(
        &self,
        replaced: &(dyn for<'k> Fn(&'k str) -> bool + Send + Sync),
        rules: Vec<ExpiryRule>,
    ) -> Result<(), ObjectError> {
        self.inner.update_expiry_rules(replaced, rules).await
    }

    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        content_encoding: Option<&str>,
    ) -> Result<String, ObjectError> {
        self.inner.presign_get(key, ttl, content_encoding).await
    }

    async fn restore(&self, key: &str, days: u32) -> Result<(), ObjectError> {
        self.inner.restore(key, days).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        headers: Option<ObjectHeaders>,
        if_match: Option<&str>,
    ) -> Result<Option<String>, ObjectError> {
        self.inner.copy(from, to, headers, if_match).await
    }

    async fn tags(&self, key: &str) -> Result<Tags, ObjectError> {
        self.inner.tags(key).await
    }

    async fn set_tags(&self, key: &str, tags: Tags) -> Result<(), ObjectError> {
        self.inner.set_tags(key, tags).await
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any keys in the store: every directory lists exactly the names the rules allow,
    /// of the kind the keys give (a directory shadows a file), each keyed as its
    /// directory's prefix and its name; no key panics the listing or the lookups.
    #[test]
    fn listings_of_any_keys_show_only_good_names(keys in proptest::collection::vec(any_key(), 0..10)) {
        runtime().block_on(async {
            let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let (ns, _) = namespace(&key_refs);
            let mut dirs = vec![(InodeNo::ROOT, String::new())];
            while let Some((ino, prefix)) = dirs.pop() {
                let entries = ns.readdir(ino).await.unwrap();
                let shown: BTreeMap<String, InodeKind> =
                    entries.iter().map(|e| (e.name.clone(), e.node.kind)).collect();
                prop_assert_eq!(shown, listed(&keys, &prefix));
                for entry in entries.iter() {
                    prop_assert!(!entry.name.contains('/'), "{:?}", entry.name);
                    prop_assert_eq!(check_name(&entry.name), Ok(()));
                    let key = super::tables::child_key(&prefix, &entry.name, entry.node.kind);
                    prop_assert_eq!(&entry.node.key, &key);
                    let found = ns.lookup(ino, &entry.name).await.unwrap();
                    prop_assert_eq!(found.ino, entry.node.ino);
                    if entry.node.kind == InodeKind::Directory {
                        dirs.push((found.ino, key));
                    }
                }
            }
            Ok(())
        })?;
    }

    /// A store that answers a listing of the root (prefix `r/`) with any page: the
    /// listing shows only names that pass the rules, each keyed under the prefix, and
    /// panics on nothing.
    #[test]
    fn any_listing_page_shows_only_names_that_pass_the_rules(
        objects in proptest::collection::vec(
            (prop_oneof![any_key(), any_key().prop_map(|k| format!("r/{k}"))], any::<u64>()),
            0..8,
        ),
        prefixes in proptest::collection::vec(
            prop_oneof![any_key(), any_key().prop_map(|k| format!("r/{k}"))],
            0..8,
        ),
    ) {
        let page = ListPage {
            objects: objects
                .into_iter()
                .map(|(key, size)| ObjectMeta {
                    key,
                    size,
                    last_modified: SystemTime::UNIX_EPOCH,
                    etag: None,
                })
                .collect(),
            prefixes,
            next_token: None,
        };
        let client = OddListing {
            inner: MemoryClient::new(),
            page,
        };
        runtime().block_on(async {
            let ns = namespace_over(Arc::new(client), "r/");
            let entries = ns.readdir(InodeNo::ROOT).await.unwrap();
            for entry in entries.iter() {
                prop_assert_eq!(check_name(&entry.name), Ok(()));
                let key = super::tables::child_key("r/", &entry.name, entry.node.kind);
                prop_assert_eq!(&entry.node.key, &key);
            }
            Ok(())
        })?;
    }

}

#[tokio::test]
async fn a_listing_that_repeats_its_token_fails_instead_of_looping() {
    let page = ListPage {
        objects: Vec::new(),
        prefixes: vec!["r/d/".to_owned()],
        next_token: Some("again".to_owned()),
    };
    let client = OddListing {
        inner: MemoryClient::new(),
        page,
    };
    let ns = namespace_over(Arc::new(client), "r/");
    let listed = tokio::time::timeout(Duration::from_secs(5), ns.readdir(InodeNo::ROOT)).await;
    let result = listed.expect("readdir returns");
    assert!(
        matches!(result, Err(NamespaceError::Object(_))),
        "{result:?}"
    );
}
