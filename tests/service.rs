//! Running under systemd: the notify protocol (READY=1 only once the mount is live,
//! STOPPING=1 on SIGTERM) on a socket of the test's own, and journal-friendly logs.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{is_mounted, rgrid_mount, Mount, TestStore};

/// The next notify message, within `timeout`.
fn next_message(socket: &UnixDatagram, timeout: Duration) -> String {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notify message in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_after_the_mount_is_live_stopping_on_sigterm_and_plain_journal_lines() {
    let store = TestStore::start();
    store.put("d/f", "x");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut cmd = rgrid_mount(&store);
    cmd.env("NOTIFY_SOCKET", &path)
        .env("JOURNAL_STREAM", "8:12345");
    let mut mount = Mount::spawn(cmd).unwrap_or_else(|(s, log)| panic!("{s}: {log}"));

    let ready = next_message(&socket, Duration::from_secs(20));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        is_mounted(&mount.path),
        "READY=1 came before the mount was live"
    );
    assert!(ready.contains("STATUS=mounted at"), "{ready}");

    let started = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &mount.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut stopping = String::new();
    while !stopping.lines().any(|l| l == "STOPPING=1") {
        assert!(started.elapsed() < Duration::from_secs(20), "no STOPPING=1");
        stopping = next_message(&socket, Duration::from_secs(20));
    }
    assert!(
        mount.wait(Duration::from_secs(20)).is_some(),
        "daemon exited"
    );
    assert!(!is_mounted(&mount.path));

    // The journal stamps lines itself and shows no colours.
    let log = mount.log();
    assert!(log.contains("mounted"), "{log}");
    for line in log.lines() {
        assert!(!line.contains('\x1b'), "colour: {line:?}");
        let stamped = line.trim_start().starts_with(|c: char| c.is_ascii_digit());
        assert!(!stamped, "timestamp: {line:?}");
    }
}
