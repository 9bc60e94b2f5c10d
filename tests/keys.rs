//! Keys as the store has them, through a real mount: a prefix of 100,000 keys lists
//! exactly across pages in bounded memory, and keys of any bytes the store allows are
//! names, hidden, or readable, never a crash.

mod common;

use std::fs;
use std::process::Command;

use common::{peak_rss_mib, run, Endpoint, MotoServer, Mount, TestStore, BUCKET};

const KEYS: usize = 100_000;

/// Lays `count` objects under `prefix` in the embedded store's directory, as files put
/// there by hand (what 100,000 PUTs would make, in a second), then restarts the store
/// so that it indexes them.
fn lay_files(store: &mut TestStore, prefix: &str, count: usize) {
    let dir = store.dir.path().join(BUCKET).join(prefix);
    fs::create_dir_all(&dir).unwrap();
    for i in 0..count {
        fs::write(dir.join(format!("f{i:06}")), i.to_string()).unwrap();
    }
    store.restart();
}

#[test]
fn a_hundred_thousand_keys_under_one_prefix_list_exactly_in_bounded_memory() {
    let mut store = TestStore::start();
    lay_files(&mut store, "many", KEYS);
    store.put("many/z-sub/inner.txt", "below");
    let mount = Mount::new(&store, &[]);
    let rss_before = peak_rss_mib(mount.pid());
    let names: Vec<String> = fs::read_dir(mount.join("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let rss = peak_rss_mib(mount.pid());
    let mut expected: Vec<String> = (0..KEYS).map(|i| format!("f{i:06}")).collect();
    expected.push("z-sub".to_owned());
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted.len(), names.len());
    assert!(sorted == expected, "the listing differs from the keys");
    // Listed 1,000 at a time: every page asked once.
    let pages = store.requests("ListObjectsV2");
    assert!(
        (KEYS as u64 / 1000..=KEYS as u64 / 1000 + 3).contains(&pages),
        "{pages} listing requests"
    );
    // ls -l of all of them, and a read of one, from the listing alone.
    let ls = run(Command::new("ls").arg("-l").arg(mount.join("many")));
    assert_eq!(ls.lines().count(), KEYS + 2, "total line and every entry");
    assert_eq!(
        fs::read_to_string(mount.join("many/f054321")).unwrap(),
        "54321"
    );
    assert!(
        rss < 400.0,
        "daemon peak RSS {rss:.0} MiB listing {KEYS} keys (was {rss_before:.0})"
    );
    eprintln!("{KEYS} keys: {pages} listing requests, daemon peak RSS {rss:.0} MiB");
}

/// Keys XML cannot carry as they are (the listing is asked escaped), and one no name
/// reaches: "/k/leading-slash" has an empty first segment.
const ODD_KEYS: [&str; 6] = [
    "k/tab\there",
    "k/bell\x07",
    "k/new\nline",
    "/k/leading-slash",
    "k/trailing-space ",
    "k/\u{feff}bom",
];

/// The mount shows exactly `names` in `k`, each with its key as its content, and only
/// `k` at its root.
fn check_names(store: &dyn Endpoint, names: &[&str]) {
    let mount = Mount::new(store, &[]);
    let listed = |dir: &std::path::Path| {
        let mut listed: Vec<String> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{e}: {}", mount.log()))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort();
        listed
    };
    assert_eq!(listed(&mount.join("k")), names);
    for name in names {
        let key = format!("k/{name}");
        assert_eq!(fs::read_to_string(mount.join(&key)).unwrap(), key);
    }
    assert_eq!(listed(&mount.path), ["k"]);
}

#[test]
fn keys_with_control_characters_or_a_leading_slash_are_names_or_hidden() {
    let store = TestStore::start();
    for key in ODD_KEYS {
        store.put(key, key);
    }
    let names = [
        "bell\x07",
        "new\nline",
        "tab\there",
        "trailing-space ",
        "\u{feff}bom",
    ];
    check_names(&store, &names);
}

/// moto's HTTP router answers 404 to a PUT of a key with a newline or a leading slash:
/// the others.
#[test]
fn keys_with_control_characters_list_escaped_from_moto_too() {
    let moto = MotoServer::start();
    let sdk = moto.sdk();
    for key in [
        "k/tab\there",
        "k/bell\x07",
        "k/trailing-space ",
        "k/\u{feff}bom",
    ] {
        let body = key.as_bytes().to_vec().into();
        let put = sdk.put_object().bucket(BUCKET).key(key).body(body);
        moto.runtime.block_on(put.send()).unwrap();
    }
    check_names(
        &moto,
        &["bell\x07", "tab\there", "trailing-space ", "\u{feff}bom"],
    );
}

/// Keys no name can show (`.`, `..`, an empty segment, a segment past NAME_MAX) are
/// hidden, never a crash or an EIO for the directory; a file `a` beside keys under `a/`
/// is shadowed by the directory, as the log says.
#[test]
fn keys_that_cannot_be_names_are_hidden_and_a_directory_shadows_its_file() {
    let store = TestStore::start();
    let long = format!("k/{}", "n".repeat(256));
    let longest = format!("k/{}", "n".repeat(255));
    for key in [
        "k/.",
        "k/..",
        "k//empty-segment",
        &long,
        &longest,
        "k/a",
        "k/a/x",
    ] {
        store.put(key, key);
        assert_eq!(store.get(key).unwrap().0, key.as_bytes(), "{key:?} stored");
    }
    let mount = Mount::new(&store, &[]);
    let mut listed: Vec<String> = fs::read_dir(mount.join("k"))
        .unwrap_or_else(|e| panic!("{e}: {}", mount.log()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, ["a", &"n".repeat(255)]);
    assert!(fs::metadata(mount.join("k/a")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(mount.join("k/a/x")).unwrap(), "k/a/x");
    assert_eq!(fs::read_to_string(mount.join(&longest)).unwrap(), longest);
    let too_long = fs::metadata(mount.join(&long)).unwrap_err();
    assert_eq!(too_long.raw_os_error(), Some(libc::ENAMETOOLONG));
    assert!(
        mount.log().contains("shadowed by a directory"),
        "{}",
        mount.log()
    );
}
