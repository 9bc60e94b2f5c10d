//! The store failing under a real mount: each case asserts the errno a program gets,
//! how long it took, and that the mount goes on by itself once the store is back.

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{pseudo_random, Mount, TestStore};

const MIB: usize = 1 << 20;

/// `cat path`: whether it succeeded, and how long it took.
fn cat(path: &std::path::Path) -> (bool, Duration) {
    let started = Instant::now();
    let out = Command::new("cat")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), started.elapsed())
}

#[test]
fn a_silent_store_gives_eio_within_the_request_timeout_then_at_once_then_recovers() {
    let mut store = TestStore::start();
    let names: Vec<String> = (0..3).map(|i| format!("f{i}.bin")).collect();
    let data = pseudo_random(4 * MIB, 31);
    for name in &names {
        store.put(name, data.clone());
    }
    let mount = Mount::new(&store, &["--request-timeout", "3", "--max-cache-size", "0"]);
    for name in &names {
        fs::metadata(mount.join(name)).unwrap(); // known before the store goes silent
    }
    let addr = store.endpoint.trim_start_matches("http://").to_owned();
    store.stop();
    // Connections queue in its backlog; no request is ever answered.
    let silent = std::net::TcpListener::bind(&addr).unwrap();
    let (ok, first) = cat(&mount.join(&names[0]));
    assert!(!ok, "no store, no bytes");
    // The deadline, then the kernel's own retry, which fails at once (was 165 s).
    assert!(first < Duration::from_secs(8), "first EIO after {first:?}");
    let (ok, next) = cat(&mount.join(&names[1]));
    assert!(!ok);
    assert!(
        next < Duration::from_secs(1),
        "unreachable: EIO at once, took {next:?}"
    );
    eprintln!("silent store: first EIO after {first:?}, the next after {next:?}");
    let err = fs::read(mount.join(&names[1])).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    drop(silent);
    store.restart();
    let restarted = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fs::read(mount.join(&names[2])) {
            Ok(read) => {
                assert!(read == data, "the store's bytes");
                eprintln!(
                    "recovered {:?} after the store came back",
                    restarted.elapsed()
                );
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "not recovered: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_bad_request_timeout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "-1", "nan", "4000"] {
        let stderr = common::refused(
            Command::new(env!("CARGO_BIN_EXE_rgrid-mount"))
                .arg(format!("--request-timeout={bad}"))
                .arg(dir.path()),
        );
        assert!(stderr.contains("--request-timeout"), "{bad}: {stderr}");
    }
}
