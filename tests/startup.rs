//! Start-up: bad input fails fast with one clear line and exit code 1; `--local` and the
//! detached (non-foreground) mode work from the real binary.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{is_mounted, refused, rgrid_mount, Mount, TestStore};

/// Runs `cmd` on `mountpoint`, which must fail within 30 s with one `rgrid-mount:` line,
/// leaving no mount behind; the line.
fn fails(mut cmd: Command, mountpoint: &std::path::Path) -> String {
    let already_mounted = is_mounted(mountpoint);
    let started = Instant::now();
    let stderr = refused(cmd.arg("--foreground").arg(mountpoint));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "slow failure: {:?}",
        started.elapsed()
    );
    let last = stderr.trim().lines().last().unwrap_or("").to_owned();
    assert!(last.starts_with("rgrid-mount: "), "{stderr}");
    if mountpoint.is_dir() && !already_mounted {
        assert!(!is_mounted(mountpoint), "a mount left after: {last}");
    }
    last
}

#[test]
fn unreachable_endpoint_fails_fast() {
    let store = TestStore::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rgrid-mount"));
    cmd.env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .args(["--endpoint-url", "http://127.0.0.1:1"]);
    let line = fails(cmd, dir.path());
    assert!(
        line.contains("cannot reach the store at http://127.0.0.1:1"),
        "{line}"
    );
    drop(store);
}

#[test]
fn missing_bucket_is_named() {
    let store = TestStore::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = rgrid_mount(&store);
    cmd.args(["--bucket", "no-such-bucket"]);
    let line = fails(cmd, dir.path());
    assert!(
        line.contains("bucket no-such-bucket does not exist"),
        "{line}"
    );
}

#[test]
fn bad_credentials_are_refused() {
    let store = TestStore::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = rgrid_mount(&store);
    cmd.env("AWS_SECRET_ACCESS_KEY", "wrong-secret");
    let line = fails(cmd, dir.path());
    assert!(line.contains("refused access"), "{line}");
}

#[test]
fn bad_mountpoints_are_refused() {
    let store = TestStore::start();
    let dir = tempfile::tempdir().unwrap();
    let line = fails(rgrid_mount(&store), &dir.path().join("missing"));
    assert!(!is_mounted(&dir.path().join("missing")));
    assert!(line.contains("No such file or directory"), "{line}");
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let line = fails(rgrid_mount(&store), &file);
    assert!(line.contains("is not a directory"), "{line}");
    let mount = Mount::new(&store, &[]);
    let line = fails(rgrid_mount(&store), &mount.path);
    assert!(line.contains("already a mount point"), "{line}");
}

#[test]
fn bad_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rgrid-mount"))
        .arg("--no-such-flag")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2)); // clap's usage error
    let out = Command::new(env!("CARGO_BIN_EXE_rgrid-mount"))
        .arg("--metadata-ttl=-1")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn local_store_serves_a_plain_directory() {
    let data = tempfile::tempdir().unwrap();
    let outputs = data.path().join("rgrid-executions/executions/demo/outputs");
    std::fs::create_dir_all(&outputs).unwrap();
    std::fs::write(outputs.join("hello.txt"), "hello from the store\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rgrid-mount"));
    cmd.arg("--local").arg(data.path());
    let mount = Mount::spawn(cmd).unwrap_or_else(|(s, log)| panic!("{s}: {log}"));
    let text = std::fs::read_to_string(mount.join("executions/demo/outputs/hello.txt")).unwrap();
    assert_eq!(text, "hello from the store\n");
}

#[test]
fn detached_mode_returns_once_mounted() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("rgrid-executions/x")).unwrap();
    std::fs::write(data.path().join("rgrid-executions/x/f"), "f").unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_rgrid-mount"))
        .arg("--local")
        .arg(data.path())
        .arg("--cache-dir")
        .arg(data.path().join("cache"))
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mounted = is_mounted(&mnt.path().canonicalize().unwrap());
    let read = std::fs::read_to_string(mnt.path().join("x/f"));
    let unmounted = Command::new("umount").arg(mnt.path()).status().unwrap();
    assert!(mounted && unmounted.success());
    assert_eq!(read.unwrap(), "f");
}

#[test]
fn detached_mode_reports_the_daemons_error() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused(
        Command::new(env!("CARGO_BIN_EXE_rgrid-mount"))
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .args(["--endpoint-url", "http://127.0.0.1:1"])
            .arg(dir.path()),
    );
    assert!(
        stderr.contains("cannot reach the store at http://127.0.0.1:1"),
        "{stderr}"
    );
}
