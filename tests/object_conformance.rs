//! One contract, every client: the suite below runs against `MemoryClient` and against
//! `S3Client` talking to the embedded store over HTTP.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use rgrid_mount::object::{
    ExpiryRule, MemoryClient, ObjectClient, ObjectError, ObjectHeaders, PartBody, RuleFilter,
    S3Client, S3ClientConfig, Tags,
};

async fn get(
    client: &dyn ObjectClient,
    key: &str,
    range: std::ops::Range<u64>,
    etag: Option<&str>,
) -> Result<Vec<u8>, ObjectError> {
    let chunks: Vec<Bytes> = client
        .get_range(key, range, etag)
        .await?
        .try_collect()
        .await?;
    Ok(chunks.concat())
}

async fn suite(client: Arc<dyn ObjectClient>) {
    client.check_bucket().await.unwrap();
    let headers = ObjectHeaders {
        content_type: Some("text/csv".into()),
        content_encoding: None,
        user_metadata: [("rgrid-sha256".to_owned(), "abc".to_owned())].into(),
        ..ObjectHeaders::default()
    };
    client
        .put(
            "dir/a.csv",
            Bytes::from_static(b"0123456789"),
            headers.clone(),
        )
        .await
        .unwrap();
    client
        .put(
            "dir/sub/b",
            Bytes::from_static(b"b"),
            ObjectHeaders::default(),
        )
        .await
        .unwrap();
    client
        .put(
            "dir/sub/c",
            Bytes::from_static(b"c"),
            ObjectHeaders::default(),
        )
        .await
        .unwrap();
    client
        .put("other", Bytes::new(), ObjectHeaders::default())
        .await
        .unwrap();

    let info = client.head("dir/a.csv").await.unwrap();
    assert_eq!(info.meta.size, 10);
    assert_eq!(info.headers.content_type.as_deref(), Some("text/csv"));
    assert_eq!(
        info.headers
            .user_metadata
            .get("rgrid-sha256")
            .map(String::as_str),
        Some("abc")
    );
    assert!(matches!(
        client.head("dir/missing").await,
        Err(ObjectError::NotFound { .. })
    ));
    assert!(matches!(
        client.head("dir").await,
        Err(ObjectError::NotFound { .. })
    ));

    assert_eq!(
        get(&*client, "dir/a.csv", 2..5, None).await.unwrap(),
        b"234"
    );
    assert_eq!(
        get(&*client, "dir/a.csv", 0..10, info.meta.etag.as_deref())
            .await
            .unwrap(),
        b"0123456789"
    );
    assert_eq!(get(&*client, "dir/a.csv", 7..7, None).await.unwrap(), b"");
    let stale = get(&*client, "dir/a.csv", 0..1, Some("\"not-the-etag\"")).await;
    assert!(
        matches!(stale, Err(ObjectError::PreconditionFailed { .. })),
        "{stale:?}"
    );
    assert!(matches!(
        get(&*client, "nope", 0..1, None).await,
        Err(ObjectError::NotFound { .. })
    ));

    let page = client.list_page("dir/", None, None).await.unwrap();
    let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["dir/a.csv"]);
    assert_eq!(page.objects[0].size, 10);
    assert_eq!(
        page.objects[0].etag, info.meta.etag,
        "listings carry the same ETag as HEAD"
    );
    assert_eq!(page.prefixes, ["dir/sub/"]);
    assert_eq!(page.next_token, None);

    let first = client.list_page("", None, Some(1)).await.unwrap();
    assert_eq!(first.prefixes, ["dir/"]);
    let second = client
        .list_page("", first.next_token.as_deref(), Some(1))
        .await
        .unwrap();
    assert_eq!(
        second
            .objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        ["other"]
    );
    assert_eq!(second.next_token, None);

    client
        .put("marker/", Bytes::new(), ObjectHeaders::default())
        .await
        .unwrap();
    assert_eq!(
        client.head("marker/").await.unwrap().meta.size,
        0,
        "directory markers read back"
    );
    assert_eq!(
        client
            .list_page("marker/", None, None)
            .await
            .unwrap()
            .objects
            .len(),
        1
    );
    client.delete("marker/").await.unwrap();

    let copied = client
        .copy("dir/a.csv", "copy/a.csv", None, None)
        .await
        .unwrap();
    let head = client.head("copy/a.csv").await.unwrap();
    assert_eq!(
        copied, head.meta.etag,
        "copy returns the new version's ETag"
    );
    assert_eq!(
        head.headers.content_type.as_deref(),
        Some("text/csv"),
        "metadata copied"
    );
    let replaced = ObjectHeaders {
        content_type: Some("text/plain".into()),
        ..ObjectHeaders::default()
    };
    client
        .copy("dir/a.csv", "copy/a.csv", Some(replaced), None)
        .await
        .unwrap();
    let head = client.head("copy/a.csv").await.unwrap();
    assert_eq!(
        head.headers.content_type.as_deref(),
        Some("text/plain"),
        "metadata replaced"
    );
    assert!(head.headers.user_metadata.is_empty());
    assert_eq!(
        get(&*client, "copy/a.csv", 0..10, head.meta.etag.as_deref())
            .await
            .unwrap(),
        b"0123456789"
    );
    let meta_only = ObjectHeaders {
        content_type: Some("text/x".into()),
        ..ObjectHeaders::default()
    };
    client
        .copy(
            "copy/a.csv",
            "copy/a.csv",
            Some(meta_only),
            head.meta.etag.as_deref(),
        )
        .await
        .unwrap();
    let head = client.head("copy/a.csv").await.unwrap();
    assert_eq!(
        head.headers.content_type.as_deref(),
        Some("text/x"),
        "copy onto itself"
    );
    assert_eq!(
        get(&*client, "copy/a.csv", 0..10, head.meta.etag.as_deref())
            .await
            .unwrap(),
        b"0123456789"
    );
    let stale = client
        .copy("copy/a.csv", "copy/b.csv", None, Some("\"not-the-etag\""))
        .await;
    assert!(
        matches!(stale, Err(ObjectError::PreconditionFailed { .. })),
        "a pinned copy of another version is refused: {stale:?}"
    );
    assert!(matches!(
        client.head("copy/b.csv").await,
        Err(ObjectError::NotFound { .. })
    ));
    client.delete("copy/a.csv").await.unwrap();

    let id = client
        .create_multipart("mp/obj", headers.clone())
        .await
        .unwrap();
    // The last part from a file range, read as it is sent.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"..world..").unwrap();
    let part = PartBody::File {
        file: Arc::new(file.reopen().unwrap()),
        start: 2,
        len: 5,
    };
    let e2 = client.upload_part("mp/obj", &id, 2, part).await.unwrap();
    let e1 = client
        .upload_part("mp/obj", &id, 1, Bytes::from_static(b"hello ").into())
        .await
        .unwrap();
    let etag = client
        .complete_multipart("mp/obj", &id, vec![(1, e1), (2, e2)])
        .await
        .unwrap();
    let head = client.head("mp/obj").await.unwrap();
    assert_eq!(etag, head.meta.etag);
    assert_eq!(
        head.headers
            .user_metadata
            .get("rgrid-sha256")
            .map(String::as_str),
        Some("abc")
    );
    assert_eq!(
        get(&*client, "mp/obj", 0..11, None).await.unwrap(),
        b"hello world"
    );
    let id = client
        .create_multipart("mp/gone", ObjectHeaders::default())
        .await
        .unwrap();
    client
        .upload_part("mp/gone", &id, 1, Bytes::from_static(b"x").into())
        .await
        .unwrap();
    client.abort_multipart("mp/gone", &id).await.unwrap();
    assert!(matches!(
        client.head("mp/gone").await,
        Err(ObjectError::NotFound { .. })
    ));
    tags(&*client).await;
    tags_of_multipart(&*client).await;
    client.delete("mp/obj").await.unwrap();

    client.delete("dir/sub/b").await.unwrap();
    let page = client.list_page("dir/sub/", None, None).await.unwrap();
    assert_eq!(
        page.objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        ["dir/sub/c"]
    );

    assert_eq!(
        client.expiry_rules().await.unwrap(),
        vec![],
        "no configuration: no rules"
    );
    lifecycle(&*client).await;
}

/// Rules go in and come back as given, prefix and tag filters alike; an update replaces
/// the rules it names and those its predicate picks, and keeps every other.
async fn lifecycle(client: &dyn ObjectClient) {
    let rule = |id: &str, days, tag: Option<&str>| ExpiryRule {
        id: id.into(),
        filter: RuleFilter {
            prefix: format!("{id}/"),
            tags: tag
                .map(|t| Tags::from([("tier".to_owned(), t.to_owned())]))
                .unwrap_or_default(),
            ..RuleFilter::default()
        },
        days: Some(days),
        date: None,
    };
    let none = |_: &str| false;
    let rules = vec![
        rule("a", 7, None),
        rule("b", 9, Some("9d")),
        rule("c", 3, None),
    ];
    client.update_expiry_rules(&none, rules).await.unwrap();
    let drop_c = |id: &str| id == "c";
    let replace_a = vec![rule("a", 30, Some("30d"))];
    client
        .update_expiry_rules(&drop_c, replace_a)
        .await
        .unwrap();
    let mut rules = client.expiry_rules().await.unwrap();
    rules.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        rules,
        vec![rule("a", 30, Some("30d")), rule("b", 9, Some("9d"))],
        "same id replaced, picked ones dropped, others kept"
    );
}

/// Tags replace whole, leave the version (ETag) alone, and go along with a copy.
async fn tags(client: &dyn ObjectClient) {
    assert_eq!(client.tags("mp/obj").await.unwrap(), Tags::new());
    let before = client.head("mp/obj").await.unwrap().meta;
    let set = Tags::from([("a".into(), "1".into()), ("b".into(), "x@y".into())]);
    client.set_tags("mp/obj", set.clone()).await.unwrap();
    assert_eq!(client.tags("mp/obj").await.unwrap(), set);
    let after = client.head("mp/obj").await.unwrap().meta;
    assert_eq!(after.etag, before.etag, "tagging makes no new version");
    let only_b = Tags::from([("b".into(), "2".into())]);
    client.set_tags("mp/obj", only_b.clone()).await.unwrap();
    assert_eq!(client.tags("mp/obj").await.unwrap(), only_b);
    client.copy("mp/obj", "mp/copy", None, None).await.unwrap();
    assert_eq!(client.tags("mp/copy").await.unwrap(), only_b);
    client.delete("mp/copy").await.unwrap();
    assert!(matches!(
        client.tags("mp/missing").await,
        Err(ObjectError::NotFound { .. })
    ));

    // Tags given at creation, by PUT and by a multipart upload.
    let given = Tags::from([
        ("rgrid-retention".to_owned(), "30d".to_owned()),
        ("team".to_owned(), "ml/vision a+b".to_owned()),
    ]);
    let headers = ObjectHeaders {
        tagging: given.clone(),
        ..ObjectHeaders::default()
    };
    let body = Bytes::from_static(b"tagged at birth");
    client.put("mp/born", body, headers.clone()).await.unwrap();
    assert_eq!(client.tags("mp/born").await.unwrap(), given);
}

/// A multipart upload keeps the tags it was created with. (Not on moto: its
/// CompleteMultipartUpload answers a root element the SDK does not parse.)
async fn tags_of_multipart(client: &dyn ObjectClient) {
    let given = Tags::from([("rgrid-retention".to_owned(), "30d".to_owned())]);
    let headers = ObjectHeaders {
        tagging: given.clone(),
        ..ObjectHeaders::default()
    };
    let id = client
        .create_multipart("mp/born-mp", headers)
        .await
        .unwrap();
    let part = Bytes::from(vec![1u8; 64]);
    let etag = client
        .upload_part("mp/born-mp", &id, 1, part.into())
        .await
        .unwrap();
    client
        .complete_multipart("mp/born-mp", &id, vec![(1, etag)])
        .await
        .unwrap();
    assert_eq!(client.tags("mp/born-mp").await.unwrap(), given);
}

#[tokio::test]
async fn memory_client_conforms() {
    suite(Arc::new(MemoryClient::new())).await;
}

#[test]
fn s3_client_over_the_embedded_store_conforms() {
    let store = common::TestStore::start();
    let mut config = S3ClientConfig::new(common::BUCKET);
    config.endpoint_url = Some(store.endpoint.clone());
    config.force_path_style = true;
    config.credentials = Some((store.access_key.clone(), store.secret_key.clone()));
    store.runtime.block_on(async {
        let client = Arc::new(S3Client::new(config).await.unwrap());
        suite(client.clone()).await;
        file_part(&*client, false).await;
    });
}

/// moto refuses no pinned copy (it ignores CopySourceIfMatch), so only the tagging and
/// lifecycle parts of the contract run against it.
#[test]
fn s3_client_over_moto_tags_as_the_others() {
    let moto = common::MotoServer::start();
    let mut config = S3ClientConfig::new(common::BUCKET);
    config.endpoint_url = Some(moto.endpoint.clone());
    config.force_path_style = true;
    config.credentials = Some(("moto".into(), "moto".into()));
    moto.runtime.block_on(async {
        let client = S3Client::new(config).await.unwrap();
        let body = Bytes::from_static(b"tagged");
        client
            .put("mp/obj", body, ObjectHeaders::default())
            .await
            .unwrap();
        tags(&client).await;
        lifecycle(&client).await;
        file_part(&client, true).await;
    });
}

/// A part sent from a file range arrives whole. moto's part ETag is the MD5 of its
/// bytes, and its completion answer is one the SDK cannot parse; the embedded store's
/// ETags are its own, and it completes: there the object is read back.
async fn file_part(client: &dyn ObjectClient, md5_etags: bool) {
    use md5::Digest;
    let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let (start, len) = (1000, 5 << 20);
    let part = PartBody::File {
        file: Arc::new(file.reopen().unwrap()),
        start,
        len,
    };
    let key = "mp/file-part";
    let id = client
        .create_multipart(key, ObjectHeaders::default())
        .await
        .unwrap();
    let etag = client.upload_part(key, &id, 1, part).await.unwrap();
    let sent = &data[start as usize..(start + len) as usize];
    if md5_etags {
        let md5: String = md5::Md5::digest(sent)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(etag.trim_matches('"'), md5);
        client.abort_multipart(key, &id).await.unwrap();
    } else {
        let parts = vec![(1, etag)];
        client.complete_multipart(key, &id, parts).await.unwrap();
        assert!(get(client, key, 0..len, None).await.unwrap() == sent);
        client.delete(key).await.unwrap();
    }
}
