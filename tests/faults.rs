//! The store failing under a real mount: each case asserts the errno a program gets,
//! how long it took, and the bucket afterwards, and that the mount goes on by itself
//! once the store is back. Most cases put the fault proxy (`faults/proxy.rs`) between
//! the mount and the store; each prints a line of the case table (`case | outcome |
//! seconds`), collected with `--nocapture`.

mod common;
// The cases' modules, beside the proxy, under tests/faults/ (a test crate's root looks
// for its modules in tests/ itself).
#[path = "faults/deadline.rs"]
mod deadline;
#[path = "faults/proxy.rs"]
mod proxy;
#[path = "faults/read.rs"]
mod read;
#[path = "faults/refused.rs"]
mod refused;
#[path = "faults/storm.rs"]
mod storm;
#[path = "faults/write.rs"]
mod write;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{pseudo_random, Endpoint, Mount, TestStore};
use proxy::FaultProxy;

const MIB: usize = 1 << 20;

/// A store, the fault proxy in front of it, and one cache dir for every mount through
/// it. Declare mounts after the rig: they unmount first.
struct Rig<S: Endpoint = TestStore> {
    proxy: FaultProxy,
    store: S,
    cache: tempfile::TempDir,
}

impl Rig {
    /// The proxy in front of a fresh embedded store.
    fn new() -> Rig {
        Rig::over(TestStore::start())
    }
}

impl<S: Endpoint> Rig<S> {
    /// The proxy in front of `store`.
    fn over(store: S) -> Rig<S> {
        Rig {
            proxy: FaultProxy::start(&store),
            store,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// A mount through the proxy, with `args`.
    fn mount(&self, args: &[&str]) -> Mount {
        let cache = self.cache.path().to_str().unwrap();
        let mut all = vec!["--cache-dir", cache];
        all.extend_from_slice(args);
        Mount::new(&self.proxy, &all)
    }
}

/// The errno of a failed call; panics if it succeeded.
fn errno<T>(result: std::io::Result<T>) -> i32 {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().unwrap_or(0),
    }
}

/// Writes `data` to `path` and closes it as a careful program does, with the errno of
/// a failed write or close (Rust's `File` drops close errors).
fn write_closed(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut file = fs::File::create(path)?;
    file.write_all(data)?;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken from the `File`, which no longer owns it; it is closed
    // once, here.
    #[allow(unsafe_code)]
    let closed = unsafe { libc::close(fd) };
    if closed == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Prints one row of the case table.
fn record(case: &str, outcome: &str, started: Instant) {
    eprintln!(
        "CASE | {case} | {outcome} | {:.2}",
        started.elapsed().as_secs_f64()
    );
}

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
    // In process: a spawned `cat` can take a second to start on a loaded machine.
    let started = Instant::now();
    let read = fs::read(mount.join(&names[1]));
    let next = started.elapsed();
    assert_eq!(read.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(
        next < Duration::from_secs(1),
        "unreachable: EIO at once, took {next:?}: {}",
        mount.log()
    );
    eprintln!(
        "CASE | silent store (request timeout 3 s), first read | EIO | {:.2}",
        first.as_secs_f64()
    );
    eprintln!(
        "CASE | silent store, the next read | EIO | {:.3}",
        next.as_secs_f64()
    );
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

#[test]
fn an_aborted_connection_with_uploads_pending_exits_non_zero_and_the_next_mount_lands_them() {
    let store = TestStore::start();
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap().to_owned();
    let mut mount = Mount::new(&store, &["--cache-dir", &cache_arg, "--write-back"]);
    store.refuse_uploads(true);
    let data = pseudo_random(3 * MIB, 40);
    fs::write(mount.join("pending.bin"), &data).unwrap();
    let started = Instant::now();
    common::abort_connection(&mount);
    let status = mount
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("daemon still running after the abort: {}", mount.log()));
    assert!(!status.success(), "uploads left: a failure exit");
    record(
        "FUSE connection aborted, an upload refused",
        "exit 1",
        started,
    );
    assert_eq!(common::journaled(cache.path()), 1, "the journal keeps it");
    drop(mount);
    store.refuse_uploads(false);
    let _next = Mount::new(&store, &["--cache-dir", &cache_arg]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while store
        .get("pending.bin")
        .is_none_or(|(stored, _)| stored != data)
    {
        assert!(Instant::now() < deadline, "the next mount did not land it");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(common::journaled(cache.path()), 0);
}
