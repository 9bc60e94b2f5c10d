//! Many at once through a real mount: a thousand files open for writing, thirty-two
//! readers of one 1 GiB object, and the mount's limit of open files, which is ENFILE for
//! the open past it (also among opens that run together) and nothing worse for the files
//! already open.

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::{peak_rss_mib, rgrid_mount, Mount, TestStore, BUCKET};

/// Opens `count` files `w0000`... in `dir` for writing at once (python, whose close
/// reports errors), writes 64 KiB to each, closes them all, and prints how many opens
/// succeeded and the errno of the first that failed (0: none).
const WRITERS: &str = r#"
import os, resource, sys
dir, count = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds, failed = [], 0
for i in range(count):
    try:
        fds.append(os.open(f"{dir}/w{i:04}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644))
    except OSError as e:
        failed = failed or e.errno
for i, fd in enumerate(fds):
    os.write(fd, (b"%04d" % i) * 16384)
for fd in fds:
    os.close(fd)
print(len(fds), failed)
"#;

fn writers(dir: &std::path::Path, count: usize) -> (usize, i32) {
    let out = Command::new("python3")
        .args(["-c", WRITERS])
        .arg(dir)
        .arg(count.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fields = stdout.split_whitespace().map(|f| f.parse::<i64>().unwrap());
    let opened = fields.next().unwrap() as usize;
    (opened, fields.next().unwrap() as i32)
}

fn assert_landed(store: &TestStore, count: usize) {
    for i in [0, count / 2, count - 1] {
        let (body, _) = store
            .get(&format!("w{i:04}"))
            .unwrap_or_else(|| panic!("w{i:04} not in the store"));
        assert_eq!(body, format!("{i:04}").repeat(16384).into_bytes());
    }
}

#[test]
fn a_thousand_files_open_for_writing_at_once_all_land_in_bounded_memory() {
    let store = TestStore::start();
    let mount = Mount::new(&store, &[]);
    peak_rss_mib(mount.pid());
    assert_eq!(writers(&mount.path, 1000), (1000, 0));
    let rss = peak_rss_mib(mount.pid());
    assert_eq!(store.requests("PutObject"), 1000);
    assert_landed(&store, 1000);
    assert!(rss < 200.0, "daemon peak RSS {rss:.0} MiB");
    eprintln!("1000 writers at once: daemon peak RSS {rss:.0} MiB");
}

/// Opens `count` stored files `r0000`... in `dir` for reading, all at once from as many
/// threads, and prints how many opens succeeded and the errno of the first that failed.
const READERS: &str = r#"
import os, resource, sys, threading
dir, count = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
for i in range(count):
    os.stat(f"{dir}/r{i:04}")
start, lock, fds, errors = threading.Barrier(count), threading.Lock(), [], []
def reader(i):
    start.wait()
    try:
        fd = os.open(f"{dir}/r{i:04}", os.O_RDONLY)
        with lock:
            fds.append(fd)
    except OSError as e:
        with lock:
            errors.append(e.errno)
threads = [threading.Thread(target=reader, args=(i,)) for i in range(count)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(fds), errors[0] if errors else 0)
"#;

/// A mount whose daemon may have 400 descriptors: it keeps 256 of them and allows two a
/// file, or a quarter of the limit, so 100 files may be open.
fn mount_of_a_hundred_files(store: &TestStore) -> Mount {
    let inner = rgrid_mount(store);
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=400:400")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    Mount::spawn(cmd).unwrap_or_else(|(status, log)| panic!("{status}: {log}"))
}

#[test]
fn opens_past_the_mounts_limit_are_enfile_and_the_open_files_still_land() {
    let store = TestStore::start();
    let mount = mount_of_a_hundred_files(&store);
    assert_eq!(writers(&mount.path, 250), (100, libc::ENFILE));
    assert_eq!(store.requests("PutObject"), 100);
    assert_landed(&store, 100);
    // Closed, they make room again.
    fs::write(mount.path.join("after.txt"), b"room again").unwrap();
    assert!(mount.log().contains("open refused"), "{}", mount.log());
}

#[test]
fn opens_that_run_together_never_pass_the_mounts_limit() {
    let store = TestStore::start();
    let keys = (0..250).map(|i| format!("r{i:04}")).collect();
    store.put_many(keys, b"read me");
    let mount = mount_of_a_hundred_files(&store);
    let out = Command::new("python3")
        .args(["-c", READERS])
        .arg(&mount.path)
        .arg("250")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("100 {}", libc::ENFILE));
}

#[test]
fn thirty_two_readers_of_one_gib_object_read_it_whole_in_bounded_memory() {
    let mut store = TestStore::start();
    // Laid in the store's directory: the store indexes it when it starts again.
    let local = tempfile::tempdir().unwrap();
    let reference = local.path().join("big.bin");
    let made = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=1024", "status=none"])
        .arg(format!("of={}", reference.display()))
        .status()
        .unwrap();
    assert!(made.success());
    let in_store = store.dir.path().join(BUCKET).join("big.bin");
    fs::create_dir_all(in_store.parent().unwrap()).unwrap();
    fs::copy(&reference, &in_store).unwrap();
    store.restart();
    let mount = Mount::new(&store, &["--max-cache-size", "0"]);
    peak_rss_mib(mount.pid());
    let readers: Vec<_> = (0..32)
        .map(|_| {
            Command::new("cmp")
                .arg(&reference)
                .arg(mount.path.join("big.bin"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for reader in readers {
        let out = reader.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cmp: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss = peak_rss_mib(mount.pid());
    let fetched = store.range_bytes() >> 20;
    // Read parts are held to --max-read-memory (128 MiB); request buffers and bodies in
    // flight come on top (measured: 257 MiB).
    assert!(rss < 400.0, "daemon peak RSS {rss:.0} MiB");
    eprintln!("32 readers of 1 GiB: {fetched} MiB fetched, daemon peak RSS {rss:.0} MiB");
}
