//! The mount the reference model drives (the filesystem over the in-memory client, with
//! small parts, blocks and cache), and reading back what its bucket holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::super::Case;
use crate::cache::{CacheConfig, ObjectCache};
use crate::fs::{FsConfig, MountIdentity, Ownership, RgridFs};
use crate::namespace::{Namespace, NamespaceConfig};
use crate::object::{MemoryClient, ObjectClient, ObjectError, ObjectId, Tags};
use crate::readahead::ReadEngine;
use crate::retention::{Retention, RetentionConfig, Tier, TIER_TAG};
use crate::upload::{CompressMode, CompressPolicy, Uploader, WriteConfig};

/// Files past this go up in parts, and a file written front to back streams them: most
/// cases write a few KiB, so both kinds of upload are exercised.
const PART_SIZE: u64 = 4096;

/// A few files' worth: entries get evicted while handles still read them.
const CACHE_SIZE: u64 = 32 << 10;

/// Every object in `client`, whatever its key: each read pinned to the version listed,
/// and the whole listing read again when an upload landing in the background (write-back)
/// changed one in between, so that no object is a mix of two versions.
pub(super) async fn stored_objects(
    client: &MemoryClient,
) -> Result<BTreeMap<String, Vec<u8>>, ObjectError> {
    let mut tries = 0;
    loop {
        match listed_objects(client).await {
            Err(ObjectError::PreconditionFailed { .. } | ObjectError::NotFound { .. })
                if tries < 100 =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

async fn listed_objects(client: &MemoryClient) -> Result<BTreeMap<String, Vec<u8>>, ObjectError> {
    let mut objects = BTreeMap::new();
    let mut prefixes = vec![String::new()];
    while let Some(prefix) = prefixes.pop() {
        let mut token: Option<String> = None;
        loop {
            let page = client.list_page(&prefix, token.as_deref(), None).await?;
            for meta in page.objects {
                let id = ObjectId::new(meta.key.clone(), meta.etag.clone());
                objects.insert(meta.key, client.read_range(&id, 0..meta.size).await?);
            }
            prefixes.extend(page.prefixes);
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
    }
    Ok(objects)
}

/// The filesystem of a mount over `client` with the test's settings: the write engine,
/// spools and (if `cached`) the object cache under `dir`.
pub(super) fn mount(client: &MemoryClient, dir: &Path, case: &Case) -> RgridFs {
    let shared: Arc<dyn ObjectClient> = Arc::new(client.clone());
    let retention = RetentionConfig {
        tier: Tier::Days(30),
        warning: Duration::from_secs(3600),
        refresh: Duration::from_secs(600),
    };
    let retention = Arc::new(Retention::new(shared.clone(), retention));
    let namespace = NamespaceConfig {
        root_prefix: String::new(),
        inputs_prefix: None,
        // Every lookup asks the store: changes behind the mount's back show at once.
        metadata_ttl: Duration::ZERO,
        listing_heads: 0,
    };
    let namespace = Namespace::new(shared.clone(), retention.clone(), namespace);
    // Small blocks: a version replaced under a reader is found mid-file.
    let engine = ReadEngine::new(shared.clone(), crate::readahead::tests::small_config());
    let write = WriteConfig {
        write_back: case.write_back,
        ..write_config(dir)
    };
    let uploader = Uploader::new(shared, write).expect("write engine");
    let cache = CacheConfig {
        dir: dir.to_owned(),
        max_size: if case.cached { CACHE_SIZE } else { 0 },
    };
    let cache = ObjectCache::open(&cache).expect("object cache");
    RgridFs::new(
        namespace,
        engine,
        Some(uploader),
        cache,
        retention,
        fs_config(dir),
    )
}

fn write_config(dir: &Path) -> WriteConfig {
    WriteConfig {
        cache_dir: dir.to_owned(),
        part_size: PART_SIZE,
        part_limits: crate::upload::S3_LIMITS,
        concurrency: 2,
        // Nothing fails here: no retry is to run during a case.
        retry_interval: Duration::from_secs(3600),
        tags: Tags::from([(TIER_TAG.to_owned(), "30d".to_owned())]),
        write_back: false,
        max_pending: 1 << 30,
        compress: CompressPolicy {
            mode: CompressMode::Never,
            threshold: u64::MAX,
        },
    }
}

fn fs_config(dir: &Path) -> FsConfig {
    let identity = MountIdentity {
        endpoint: "memory".into(),
        bucket: "model".into(),
        view: "bucket".into(),
    };
    FsConfig {
        ownership: Ownership {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
        },
        decode_dir: dir.join("decode"),
        direct_io: false,
        control_uid: 0,
        identity,
        share_link_ttl: Duration::from_secs(3600),
        // No kernel here to pass through to.
        passthrough: false,
        max_open_files: 1000,
    }
}
