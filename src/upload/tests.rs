//! Unit and property tests of the write engine over the in-memory client.

use std::sync::Arc;

use futures::TryStreamExt;
use proptest::prelude::*;

use super::*;
use crate::artifact::sha256_hex;
use crate::object::{MemoryClient, Operation};
use bytes::Bytes;

/// Text files larger than this are stored compressed in these tests.
const COMPRESS_ABOVE: u64 = 256 << 10;

fn uploader(part_size: u64) -> (Arc<Uploader>, MemoryClient, tempfile::TempDir) {
    let client = MemoryClient::new();
    let dir = tempfile::tempdir().unwrap();
    let config = WriteConfig {
        cache_dir: dir.path().join("cache"),
        ..uploader_config(part_size)
    };
    (
        Uploader::new(Arc::new(client.clone()), config).unwrap(),
        client,
        dir,
    )
}

fn uploader_config(part_size: u64) -> WriteConfig {
    WriteConfig {
        cache_dir: PathBuf::new(),
        part_size,
        part_limits: S3_LIMITS,
        concurrency: 3,
        retry_interval: Duration::from_secs(3600),
        tags: [("rgrid-retention".to_owned(), "30d".to_owned())].into(),
        write_back: false,
        max_pending: 1 << 30,
        compress: CompressPolicy {
            mode: CompressMode::Auto,
            threshold: COMPRESS_ABOVE,
        },
    }
}

/// The object an upload made; panics if it was superseded.
fn stored_as(sent: Sent) -> Uploaded {
    match sent {
        Sent::Stored(uploaded) => *uploaded,
        Sent::Superseded => panic!("superseded"),
    }
}

/// Writes `data` to a spool and uploads it as `key`, which must succeed.
async fn upload_bytes(uploader: &Uploader, key: &str, data: &[u8]) {
    let spool = uploader.spool().unwrap();
    spool.write_at(0, data).unwrap();
    uploader
        .upload(key, &spool, None, KeptAttrs::default())
        .await
        .unwrap();
}

async fn stored(client: &MemoryClient, key: &str) -> (Vec<u8>, ObjectHeaders) {
    let info = client.head(key).await.unwrap();
    let chunks: Vec<Bytes> = client
        .get_range(key, 0..info.meta.size, None)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    (chunks.concat(), info.headers)
}

#[tokio::test]
async fn small_files_are_put_with_sha256_and_content_type() {
    let (uploader, client, _dir) = uploader(1 << 20);
    let spool = uploader.spool().unwrap();
    spool.write_at(0, b"a,b\n1,2\n").unwrap();
    let done = stored_as(
        uploader
            .upload("out/data.csv", &spool, None, KeptAttrs::default())
            .await
            .unwrap(),
    );
    assert_eq!(done.size, 8);
    let (data, headers) = stored(&client, "out/data.csv").await;
    assert_eq!(data, b"a,b\n1,2\n");
    assert_eq!(
        headers.user_metadata[artifact::SHA256],
        sha256_hex(b"a,b\n1,2\n")
    );
    assert_eq!(headers.content_type.as_deref(), Some("text/csv"));
    assert!(!uploader.is_pending(spool.path()));
}

#[tokio::test]
async fn large_files_go_up_in_parts() {
    let (uploader, client, _dir) = uploader(1000);
    let spool = uploader.spool().unwrap();
    let content: Vec<u8> = (0..4500u32).map(|i| (i % 253) as u8).collect();
    spool.write_at(0, &content).unwrap();
    uploader
        .upload("big.bin", &spool, None, KeptAttrs::default())
        .await
        .unwrap();
    assert_eq!(stored(&client, "big.bin").await.0, content);
    assert_eq!(client.count(Operation::Put), 0);
    assert_eq!(
        client.count(Operation::Multipart),
        7,
        "create, 5 parts, complete"
    );
}

#[tokio::test]
async fn files_closed_together_upload_in_parallel_within_the_slot_limit() {
    let (uploader, client, _dir) = uploader(1000);
    client.slow_uploads(Duration::from_millis(20));
    let content: Vec<u8> = (0..4500u32).map(|i| (i % 251) as u8).collect();
    let small = b"tiny".to_vec();
    let spools: Vec<Spool> = (0..6)
        .map(|i| {
            let spool = uploader.spool().unwrap();
            spool
                .write_at(0, if i % 2 == 0 { &content } else { &small })
                .unwrap();
            spool
        })
        .collect();
    let uploads = spools.iter().enumerate().map(|(i, spool)| {
        let key = format!("f{i}");
        let uploader = uploader.clone();
        async move {
            uploader
                .upload(&key, spool, None, KeptAttrs::default())
                .await
        }
    });
    for done in futures::future::join_all(uploads).await {
        done.unwrap();
    }
    // 3 multipart files of 5 parts and 3 small ones: 18 bodies; config.concurrency 3.
    assert_eq!(client.peak_uploads(), 3, "parallel, but never more than 3");
    for i in (0..6).step_by(2) {
        assert_eq!(stored(&client, &format!("f{i}")).await.0, content);
    }
}

#[tokio::test]
async fn a_failed_upload_stays_journaled_and_finishes_later() {
    let (uploader, client, _dir) = uploader(1 << 20);
    let spool = uploader.spool().unwrap();
    spool.write_at(0, b"precious").unwrap();
    client.fail_next(100);
    assert!(uploader
        .upload("keep.txt", &spool, None, KeptAttrs::default())
        .await
        .is_err());
    assert!(uploader.is_pending(spool.path()));
    client.fail_next(0);
    let puts = client.count(Operation::Put);
    assert_eq!(
        uploader.finish_pending().await,
        1,
        "its writer still has it open"
    );
    assert_eq!(
        client.count(Operation::Put),
        puts,
        "the retry loop keeps off"
    );
    uploader.close_spool(&spool);
    assert!(spool.path().exists(), "a pending spool outlives its writer");
    client.fail_next(100);
    assert_eq!(uploader.finish_pending().await, 1, "store still down");
    client.fail_next(0);
    assert_eq!(uploader.finish_pending().await, 0);
    assert_eq!(stored(&client, "keep.txt").await.0, b"precious");
    assert!(!spool.path().exists(), "spool removed once uploaded");
}

#[tokio::test]
async fn a_failed_multipart_upload_leaves_no_object() {
    let (uploader, client, _dir) = uploader(100);
    let spool = uploader.spool().unwrap();
    spool.write_at(0, &[1u8; 1000]).unwrap();
    client.fail_next(3);
    assert!(uploader
        .upload("x", &spool, None, KeptAttrs::default())
        .await
        .is_err());
    assert!(client.head("x").await.is_err());
}

#[derive(Debug, Clone)]
enum SpoolOp {
    Write(u64, Vec<u8>),
    Truncate(u64),
    Read(u64, usize),
}

fn spool_ops() -> impl Strategy<Value = Vec<SpoolOp>> {
    let op = prop_oneof![
        (0u64..5000, proptest::collection::vec(any::<u8>(), 0..700))
            .prop_map(|(o, d)| SpoolOp::Write(o, d)),
        (0u64..6000).prop_map(SpoolOp::Truncate),
        (0u64..7000, 0usize..3000).prop_map(|(o, n)| SpoolOp::Read(o, n)),
    ];
    proptest::collection::vec(op, 1..50)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spool_matches_a_vec_model(ops in spool_ops()) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path()).unwrap();
        let mut model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                SpoolOp::Write(offset, data) => {
                    spool.write_at(offset, &data).unwrap();
                    let end = offset as usize + data.len();
                    if !data.is_empty() && model.len() < end {
                        model.resize(end, 0);
                    }
                    if !data.is_empty() {
                        model[offset as usize..end].copy_from_slice(&data);
                    }
                }
                SpoolOp::Truncate(len) => {
                    spool.set_len(len).unwrap();
                    model.resize(len as usize, 0);
                }
                SpoolOp::Read(offset, len) => {
                    let start = (offset as usize).min(model.len());
                    let end = (offset as usize + len).min(model.len());
                    prop_assert_eq!(spool.read_at(offset, len).unwrap(), model[start..end].to_vec());
                }
            }
            prop_assert_eq!(spool.size().unwrap(), model.len() as u64);
        }
    }
}

#[tokio::test]
async fn a_torn_journal_entry_is_set_aside_once() {
    let (uploader, client, dir) = uploader(1 << 20);
    let journal = dir.path().join("cache/journal");
    std::fs::write(journal.join("123-abc.json"), b"").unwrap(); // a power cut's leftover
    drop(uploader);
    // The next start finds it.
    let config = WriteConfig {
        cache_dir: dir.path().join("cache"),
        ..uploader_config(1 << 20)
    };
    let uploader = Uploader::new(Arc::new(client), config).unwrap();
    assert!(uploader.pending().is_empty());
    assert!(journal.join("123-abc.torn").exists(), "kept for inspection");
    assert!(
        !journal.join("123-abc.json").exists(),
        "not read again every retry"
    );
    assert_eq!(uploader.finish_pending().await, 0);
}

#[tokio::test]
async fn a_spool_that_no_longer_matches_its_journal_is_never_uploaded() {
    let (uploader, client, _dir) = uploader(1 << 20);
    let spool = uploader.spool().unwrap();
    spool.write_at(0, b"the real content").unwrap();
    client.fail_next(100);
    assert!(uploader
        .upload("k", &spool, None, KeptAttrs::default())
        .await
        .is_err());
    client.fail_next(0);
    spool.set_len(4).unwrap(); // what a power cut can leave of an unsynced file
    uploader.close_spool(&spool);
    assert_eq!(uploader.finish_pending().await, 0, "set aside, not retried");
    assert!(
        client.head("k").await.is_err(),
        "no damaged object in the store"
    );
    assert!(!uploader.is_pending(spool.path()));
    assert!(spool.path().exists(), "kept for inspection");
}

#[tokio::test]
async fn sequential_writes_send_parts_before_close() {
    let (uploader, client, _dir) = uploader(1000);
    let spool = uploader.spool().unwrap();
    let mut stream = uploader.stream("seq.bin", &spool);
    let content: Vec<u8> = (0..4500u32).map(|i| (i % 251) as u8).collect();
    for (i, chunk) in content.chunks(300).enumerate() {
        let offset = (i * 300) as u64;
        spool.write_at(offset, chunk).unwrap();
        assert!(uploader.stream_write(&mut stream, offset, chunk).await);
    }
    assert_eq!(stream.sent(), 4000, "four full parts went up while writing");
    let done = stored_as(
        uploader
            .upload("seq.bin", &spool, Some(stream), KeptAttrs::default())
            .await
            .unwrap(),
    );
    let (data, mut headers) = stored(&client, "seq.bin").await;
    assert_eq!(data, content);
    let etag = client.head("seq.bin").await.unwrap().meta.etag;
    assert_eq!(done.etag, etag);
    assert_eq!(client.count(Operation::Put), 0);
    // The hash is a tag bound to the version, set without copying the object.
    assert_eq!(client.count(Operation::Copy), 0);
    assert!(artifact::sha256_in_tag(&headers));
    let tags = client.tags("seq.bin").await.unwrap();
    assert!(artifact::adopt_tagged_sha256(
        &mut headers,
        &tags,
        etag.as_deref()
    ));
    assert_eq!(
        artifact::sha256(&headers),
        Some(sha256_hex(&content).as_str())
    );
}

#[tokio::test]
async fn a_store_without_tagging_gets_the_hash_of_a_stream_by_a_copy() {
    let (uploader, client, _dir) = uploader(1000);
    client.refuse_tagging();
    let spool = uploader.spool().unwrap();
    let mut stream = uploader.stream("seq.bin", &spool);
    let content = vec![7u8; 2500];
    spool.write_at(0, &content).unwrap();
    assert!(uploader.stream_write(&mut stream, 0, &content).await);
    uploader
        .upload("seq.bin", &spool, Some(stream), KeptAttrs::default())
        .await
        .unwrap();
    let (data, headers) = stored(&client, "seq.bin").await;
    assert_eq!(data, content);
    assert_eq!(client.count(Operation::Copy), 1);
    assert_eq!(
        artifact::sha256(&headers),
        Some(sha256_hex(&content).as_str())
    );
}

#[tokio::test]
async fn a_store_that_refuses_tags_at_creation_gets_the_objects_untagged() {
    let (uploader, client, _dir) = uploader(1000);
    client.refuse_tagging();
    for (key, len) in [("small.bin", 10), ("parts.bin", 2500)] {
        upload_bytes(&uploader, key, &vec![3u8; len]).await;
        let (data, headers) = stored(&client, key).await;
        assert_eq!(data, vec![3u8; len]);
        assert!(artifact::sha256(&headers).is_some());
    }
    assert_eq!(
        client.count(Operation::Put),
        2,
        "one refused, one untagged after it"
    );
}

#[tokio::test]
async fn new_objects_carry_the_tier_from_their_creation() {
    let (uploader, client, _dir) = uploader(1000);
    for (key, len) in [("small.bin", 10), ("parts.bin", 2500)] {
        upload_bytes(&uploader, key, &vec![3u8; len]).await;
        let tags = client.tags(key).await.unwrap();
        assert_eq!(tags["rgrid-retention"], "30d", "{key}");
    }
}

#[tokio::test]
async fn a_write_out_of_order_ends_the_stream_and_close_uploads_the_spool() {
    let (uploader, client, _dir) = uploader(1000);
    let spool = uploader.spool().unwrap();
    let mut stream = uploader.stream("r.bin", &spool);
    spool.write_at(0, &[1u8; 2500]).unwrap();
    assert!(uploader.stream_write(&mut stream, 0, &[1u8; 2500]).await);
    spool.write_at(100, b"patch").unwrap();
    assert!(!uploader.stream_write(&mut stream, 100, b"patch").await);
    uploader.abandon(stream);
    uploader
        .upload("r.bin", &spool, None, KeptAttrs::default())
        .await
        .unwrap();
    let mut expected = vec![1u8; 2500];
    expected[100..105].copy_from_slice(b"patch");
    let (data, headers) = stored(&client, "r.bin").await;
    assert_eq!(data, expected);
    assert_eq!(
        headers.user_metadata[artifact::SHA256],
        sha256_hex(&expected)
    );
}

#[tokio::test]
async fn large_text_goes_up_compressed_and_binary_as_is() {
    use std::io::Read;
    let (uploader, client, _dir) = uploader(64 << 10);
    let text: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("{i},{}\n", i % 97).into_bytes())
        .collect();
    assert!(text.len() as u64 > COMPRESS_ABOVE);
    for (key, gzipped) in [("big.csv", true), ("big.png", false), ("small.csv", false)] {
        let content = if key == "small.csv" {
            &text[..1000]
        } else {
            &text[..]
        };
        let spool = uploader.spool().unwrap();
        spool.write_at(0, content).unwrap();
        let uploaded = stored_as(
            uploader
                .upload(key, &spool, None, KeptAttrs::default())
                .await
                .unwrap(),
        );
        let (body, headers) = stored(&client, key).await;
        let meta = &headers.user_metadata;
        assert_eq!(meta[artifact::SHA256], sha256_hex(content), "{key}");
        assert_eq!(uploaded.size, content.len() as u64);
        assert_eq!(uploaded.stored_size, body.len() as u64);
        if gzipped {
            assert_eq!(meta[artifact::COMPRESSION], "gzip");
            assert_eq!(meta[artifact::ORIGINAL_SIZE], content.len().to_string());
            assert!(
                body.len() < content.len() / 2,
                "{key}: {} bytes",
                body.len()
            );
            let mut decoded = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert!(decoded == content, "{key}: round trip");
            assert!(client.count(Operation::Multipart) > 0, "parts of 64 KiB");
        } else {
            assert!(
                body == content && !meta.contains_key(artifact::COMPRESSION),
                "{key}"
            );
        }
    }
}

#[tokio::test]
async fn an_older_version_never_lands_after_a_newer_one() {
    let (uploader, client, _dir) = uploader(1 << 20);
    let (old, new) = (uploader.spool().unwrap(), uploader.spool().unwrap());
    old.write_at(0, b"old").unwrap();
    new.write_at(0, b"new").unwrap();
    let kept = KeptAttrs::default();
    let old_entry = uploader.record("k", &old, None, kept).await.unwrap();
    let sent = uploader.upload("k", &new, None, kept).await.unwrap();
    assert!(matches!(sent, Sent::Stored(_)));
    let late = uploader.send(&old_entry.spool, None, false).await.unwrap();
    assert_eq!(late, Sent::Superseded);
    assert_eq!(stored(&client, "k").await.0, b"new");
    assert_eq!(
        client.count(Operation::Put),
        1,
        "the old version cost nothing"
    );
}

#[tokio::test]
async fn a_restart_keeps_only_the_latest_version_of_each_key() {
    let (uploader, client, dir) = uploader(1 << 20);
    client.fail_next(100);
    let spools: Vec<Spool> = (0..3).map(|_| uploader.spool().unwrap()).collect();
    for (i, spool) in spools.iter().enumerate() {
        spool.write_at(0, format!("v{i}").as_bytes()).unwrap();
        let key = if i < 2 { "same" } else { "other" };
        assert!(uploader
            .upload(key, spool, None, KeptAttrs::default())
            .await
            .is_err());
    }
    // Both versions of `same` journaled, as a crash right after the second's record
    // would leave them.
    let first = JournalEntry {
        key: "same".into(),
        spool: spools[0].path().to_owned(),
        size: 2,
        sha256: sha256_hex(b"v0"),
        metadata: Default::default(),
        seq: 1,
    };
    let json = serde_json::to_vec(&first).unwrap();
    let name = format!(
        "{}.json",
        spools[0].path().file_name().unwrap().to_string_lossy()
    );
    std::fs::write(dir.path().join("cache/journal").join(name), json).unwrap();
    drop(uploader);
    client.fail_next(0);
    let config = WriteConfig {
        cache_dir: dir.path().join("cache"),
        ..uploader_config(1 << 20)
    };
    let uploader = Uploader::new(Arc::new(client.clone()), config).unwrap();
    let keys: Vec<String> = uploader.pending().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["same", "other"]);
    assert_eq!(uploader.finish_pending().await, 0);
    assert_eq!(stored(&client, "same").await.0, b"v1");
}

#[tokio::test]
async fn new_attributes_never_bring_back_a_superseded_version() {
    let (uploader, client, _dir) = uploader(1 << 20);
    client.fail_next(100);
    let (old, new) = (uploader.spool().unwrap(), uploader.spool().unwrap());
    old.write_at(0, b"old").unwrap();
    new.write_at(0, b"new").unwrap();
    let kept = KeptAttrs::default();
    assert!(uploader.upload("k", &old, None, kept).await.is_err());
    assert!(uploader.upload("k", &new, None, kept).await.is_err());
    let chmod = KeptAttrs {
        mode: Some(0o600),
        mtime: None,
    };
    assert!(
        !uploader.restate(old.path(), chmod).unwrap(),
        "old is superseded"
    );
    assert!(uploader.restate(new.path(), chmod).unwrap());
    client.fail_next(0);
    uploader.close_spool(&old);
    uploader.close_spool(&new);
    assert_eq!(uploader.finish_pending().await, 0);
    let (data, headers) = stored(&client, "k").await;
    assert_eq!(data, b"new");
    assert_eq!(headers.user_metadata[artifact::MODE], "0600");
}

#[tokio::test]
async fn a_record_made_again_with_new_attributes_is_the_same_content() {
    let (uploader, client, _dir) = uploader(1 << 20);
    client.fail_next(100);
    let spool = uploader.spool().unwrap();
    spool.write_at(0, b"data").unwrap();
    let kept = KeptAttrs::default();
    assert!(uploader.upload("k", &spool, None, kept).await.is_err());
    // As an upload in flight holds it while a chmod records it again.
    let in_flight = uploader.journal.get(spool.path()).unwrap();
    let chmod = KeptAttrs {
        mode: Some(0o600),
        mtime: None,
    };
    assert!(uploader.restate(spool.path(), chmod).unwrap());
    assert!(uploader.journal.holds_latest(&in_flight), "not superseded");
    client.fail_next(0);
    uploader.close_spool(&spool);
    assert_eq!(uploader.finish_pending().await, 0);
    let (data, headers) = stored(&client, "k").await;
    assert_eq!(data, b"data");
    assert_eq!(headers.user_metadata[artifact::MODE], "0600");
}

/// An uploader whose store takes 8 parts of at most 4,000 bytes and objects of at most
/// 20,000: parts of 1,000 bytes double every 2 parts.
fn small_limits_uploader(mode: CompressMode) -> (Arc<Uploader>, MemoryClient, tempfile::TempDir) {
    let client = MemoryClient::new();
    let dir = tempfile::tempdir().unwrap();
    let config = WriteConfig {
        cache_dir: dir.path().join("cache"),
        part_limits: PartLimits {
            max_parts: 8,
            max_part: 4000,
            max_object: 20_000,
        },
        compress: CompressPolicy { mode, threshold: 0 },
        ..uploader_config(1000)
    };
    let uploader = Uploader::new(Arc::new(client.clone()), config).unwrap();
    (uploader, client, dir)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i % 249) as u8).collect()
}

#[tokio::test]
async fn parts_grow_so_a_file_past_the_fixed_size_ceiling_uploads_whole() {
    let (uploader, client, _dir) = small_limits_uploader(CompressMode::Never);
    assert_eq!(uploader.max_file_size(), 20_000);
    // 8 parts of 1,000 bytes would stop at 8,000.
    let content = pattern(19_500);
    upload_bytes(&uploader, "grown.bin", &content).await;
    let (data, headers) = stored(&client, "grown.bin").await;
    assert_eq!(data, content);
    assert_eq!(
        headers.user_metadata[artifact::SHA256],
        sha256_hex(&content)
    );
    assert_eq!(client.count(Operation::Multipart), 1 + 8 + 1);
}

#[tokio::test]
async fn a_streamed_file_sends_parts_of_the_growing_sizes() {
    let (uploader, client, _dir) = small_limits_uploader(CompressMode::Never);
    let spool = uploader.spool().unwrap();
    let mut stream = uploader.stream("streamed.bin", &spool);
    let content = pattern(19_500);
    for (i, chunk) in content.chunks(700).enumerate() {
        let offset = (i * 700) as u64;
        spool.write_at(offset, chunk).unwrap();
        assert!(uploader.stream_write(&mut stream, offset, chunk).await);
    }
    // 1,000 + 1,000 + 2,000 + 2,000 + 4,000 + 4,000 + 4,000 went up while writing.
    assert_eq!(stream.sent(), 18_000);
    uploader
        .upload("streamed.bin", &spool, Some(stream), KeptAttrs::default())
        .await
        .unwrap();
    assert_eq!(stored(&client, "streamed.bin").await.0, content);
    assert_eq!(client.count(Operation::Put), 0);
}

#[tokio::test]
async fn a_file_past_the_object_limit_is_refused_and_nothing_is_sent() {
    let (uploader, client, _dir) = small_limits_uploader(CompressMode::Never);
    let spool = uploader.spool().unwrap();
    spool.write_at(0, &pattern(20_001)).unwrap();
    let result = uploader
        .upload("huge.bin", &spool, None, KeptAttrs::default())
        .await;
    assert!(
        matches!(
            result,
            Err(UploadError::TooLarge {
                size: 20_001,
                max: 20_000,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(client.count(Operation::Multipart), 0);
}

#[tokio::test]
async fn a_file_past_the_first_tier_goes_up_uncompressed() {
    let (uploader, client, _dir) = small_limits_uploader(CompressMode::Always);
    upload_bytes(&uploader, "small.txt", &pattern(1500)).await;
    upload_bytes(&uploader, "large.txt", &pattern(19_500)).await;
    let compressed =
        |headers: &ObjectHeaders| headers.user_metadata.contains_key(artifact::COMPRESSION);
    assert!(compressed(&stored(&client, "small.txt").await.1));
    let (data, headers) = stored(&client, "large.txt").await;
    assert!(!compressed(&headers));
    assert_eq!(data, pattern(19_500));
}

#[tokio::test]
async fn parts_past_the_in_memory_limit_are_read_from_the_spool_as_they_are_sent() {
    let part = slots::IN_MEMORY_PART_MAX + 1;
    let (uploader, client, _dir) = uploader(part);
    let content = pattern(2 * part as usize + 10);
    upload_bytes(&uploader, "file-parts.bin", &content).await;
    assert_eq!(stored(&client, "file-parts.bin").await.0, content);
    assert_eq!(client.count(Operation::Multipart), 1 + 3 + 1);
    assert_eq!(
        client.file_parts(),
        2,
        "the two full parts; the 10-byte tail is read"
    );
}

/// A rename of directory `d/` to `e/` over `d/a`, whose file has an upload pending, with
/// every delete failing: the rename fails after its copies, and its record stays.
async fn rename_stopped_before_its_deletes(
    uploader: &Uploader,
    client: &MemoryClient,
) -> (Spool, String) {
    let old = client.insert("d/a", &b"older"[..], ObjectHeaders::default());
    let spool = uploader.spool().unwrap();
    spool.write_at(0, b"newer").unwrap();
    client.fail_next(100);
    let upload = uploader.upload("d/a", &spool, None, KeptAttrs::default());
    assert!(upload.await.is_err());
    client.fail_next(0);
    client.fail_next_of(Operation::Delete, 100);
    let moved = uploader.move_tree("d/", "e/", TreeLimits::DEFAULT).await;
    assert!(moved.is_err(), "the delete of the older object failed");
    client.fail_next_of(Operation::Delete, 0);
    (spool, old)
}

#[tokio::test]
async fn an_object_a_moved_upload_supersedes_is_deleted_by_the_rename_journal() {
    let (uploader, client, _dir) = uploader(1 << 20);
    let (spool, _) = rename_stopped_before_its_deletes(&uploader, &client).await;
    assert!(client.head("d/a").await.is_ok(), "the delete failed");
    uploader.finish_moves().await.unwrap();
    assert!(client.head("d/a").await.is_err(), "left under the old name");
    uploader.close_spool(&spool);
    assert_eq!(uploader.finish_pending().await, 0);
    assert_eq!(stored(&client, "e/a").await.0, b"newer");
}

#[tokio::test]
async fn an_object_written_since_the_rename_listed_it_is_kept() {
    let (uploader, client, _dir) = uploader(1 << 20);
    let (_spool, old) = rename_stopped_before_its_deletes(&uploader, &client).await;
    let since = client.insert("d/a", &b"another's"[..], ObjectHeaders::default());
    assert_ne!(since, old);
    uploader.finish_moves().await.unwrap();
    assert_eq!(stored(&client, "d/a").await.0, b"another's");
}

/// Starts a multipart upload of `key` and aborts it while aborts fail: it is kept.
async fn abort_refused(uploader: &Uploader, client: &MemoryClient, key: &str) {
    let headers = headers_for(key, None);
    let upload_id = uploader.start_multipart(key, headers).await.unwrap();
    client.fail_next_of(Operation::Abort, 100);
    let kept = uploader.multipart.unaborted() + 1;
    uploader.abort(key, upload_id);
    while uploader.multipart.unaborted() < kept {
        tokio::task::yield_now().await;
    }
    client.fail_next_of(Operation::Abort, 0);
}

#[tokio::test]
async fn a_failed_abort_is_tried_again_by_the_retry_loop() {
    let (uploader, client, _dir) = uploader(1 << 20);
    abort_refused(&uploader, &client, "a.bin").await;
    assert_eq!(client.open_uploads(), 1);
    uploader.retry_aborts().await;
    assert_eq!(client.open_uploads(), 0);
    assert_eq!(uploader.multipart.unaborted(), 0);
}

#[tokio::test]
async fn a_failed_abort_is_done_by_the_next_daemon() {
    let client = MemoryClient::new();
    let dir = tempfile::tempdir().unwrap();
    let config = WriteConfig {
        cache_dir: dir.path().join("cache"),
        ..uploader_config(1 << 20)
    };
    let first = Uploader::new(Arc::new(client.clone()), config.clone()).unwrap();
    abort_refused(&first, &client, "a.bin").await;
    // One completed: nothing of it is left to abort.
    upload_bytes(&first, "b.bin", &pattern(3 << 20)).await;
    drop(first);
    assert_eq!(client.open_uploads(), 1);
    let next = Uploader::new(Arc::new(client.clone()), config).unwrap();
    assert_eq!(next.multipart.unaborted(), 1, "only the unaborted one");
    next.retry_aborts().await;
    assert_eq!(client.open_uploads(), 0);
    assert_eq!(
        client.count(Operation::Abort),
        2,
        "the refused one, then the next daemon's"
    );
}
