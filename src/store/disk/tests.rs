//! Listing and key-mapping rules of the disk store.

use super::*;

fn index_of(keys: &[&str]) -> Index {
    keys.iter()
        .map(|k| {
            let entry = Entry {
                key: (*k).to_owned(),
                size: 1,
                mtime: SystemTime::UNIX_EPOCH,
                etag: "e".into(),
                location: Location::Blob,
                content_type: None,
                content_encoding: None,
                metadata: HashMap::new(),
                tags: BTreeMap::new(),
                storage_class: None,
                restored_until: None,
            };
            ((*k).to_owned(), entry)
        })
        .collect()
}

fn names(out: &dto::ListObjectsV2Output) -> (Vec<String>, Vec<String>) {
    let keys = out
        .contents
        .iter()
        .flatten()
        .filter_map(|o| o.key.clone())
        .collect();
    let prefixes = out
        .common_prefixes
        .iter()
        .flatten()
        .filter_map(|p| p.prefix.clone())
        .collect();
    (keys, prefixes)
}

#[test]
fn delimited_listing_skips_subtrees_and_pages() {
    let index = index_of(&["a", "a/1", "a/2", "b/x/y", "c", "d//e"]);
    let page = list_page(&index, "", Some("/"), None, 2);
    assert_eq!(names(&page), (vec!["a".into()], vec!["a/".into()]));
    let token = page.next_continuation_token.clone().expect("truncated");
    let page = list_page(&index, "", Some("/"), Some(&token), 2);
    assert_eq!(names(&page), (vec!["c".into()], vec!["b/".into()]));
    let token = page.next_continuation_token.clone().expect("truncated");
    let page = list_page(&index, "", Some("/"), Some(&token), 2);
    assert_eq!(names(&page), (vec![], vec!["d/".into()]));
    assert_eq!(page.next_continuation_token, None);
}

#[test]
fn plain_keys_are_exactly_the_path_safe_ones() {
    assert!(is_plain_key("executions/1/outputs/a.txt"));
    for bad in [
        "",
        "a//b",
        "./a",
        "a/..",
        "dir/",
        &"x".repeat(256),
        ".rgrid-store/x",
    ] {
        assert!(!is_plain_key(bad), "{bad:?}");
    }
}
