//! The embedded store, through the raw SDK: the S3 behaviours s3s-fs 0.14 got wrong.

mod common;

use common::{TestStore, BUCKET};

#[test]
fn empty_delimiter_means_a_flat_listing() {
    let store = TestStore::start();
    store.put("a/b/c", "1");
    store.put("a/d", "2");
    let sdk = store.sdk();
    let out = store
        .runtime
        .block_on(sdk.list_objects_v2().bucket(BUCKET).delimiter("").send())
        .unwrap();
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/b/c", "a/d"]);
    assert!(out.common_prefixes().is_empty());
}

#[test]
fn a_directory_on_disk_is_not_an_object() {
    let store = TestStore::start();
    store.put("executions/e/outputs/x", "x");
    let sdk = store.sdk();
    let err = store
        .runtime
        .block_on(sdk.head_object().bucket(BUCKET).key("executions").send())
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
}

fn get(store: &TestStore, key: &str) -> String {
    let sdk = store.sdk();
    let out = store
        .runtime
        .block_on(sdk.get_object().bucket(BUCKET).key(key).send())
        .unwrap();
    let bytes = store
        .runtime
        .block_on(out.body.collect())
        .unwrap()
        .into_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn key_and_prefix_of_the_same_name_coexist_and_survive_a_restart() {
    let mut store = TestStore::start();
    let keys = ["a", "a/b", "c/d", "c", "x//y", "./z", "m/"];
    for key in keys {
        store.put(key, format!("file {key}"));
    }
    for key in keys {
        assert_eq!(get(&store, key), format!("file {key}"));
    }
    store.restart();
    for key in keys {
        assert_eq!(
            get(&store, key),
            format!("file {key}"),
            "{key} after restart"
        );
    }
}
