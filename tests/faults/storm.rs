//! 503 SlowDown: a share of requests over a long workload, and a storm on every request
//! for 30 s.

use std::fs;
use std::time::{Duration, Instant};

use super::proxy::{Fault, When};
use super::{errno, record, write_closed, Rig};

/// What the workload writes to file `file` of `worker`.
fn content(worker: usize, file: usize) -> String {
    format!("worker {worker} file {file}\n").repeat(50)
}

/// One worker's share of the workload: `ops` operations on its own files, each of which
/// must succeed with the right bytes, a close too. Returns the operations done.
fn workload(dir: &std::path::Path, worker: usize, ops: usize) -> usize {
    let mine = dir.join(format!("w{worker}"));
    fs::create_dir_all(&mine).unwrap();
    for op in 0..ops {
        let name = mine.join(format!("f{}", op / 4));
        let content = content(worker, op / 4);
        match op % 4 {
            0 => write_closed(&name, content.as_bytes()).unwrap(),
            1 => assert_eq!(fs::metadata(&name).unwrap().len(), content.len() as u64),
            2 => assert_eq!(fs::read_to_string(&name).unwrap(), content),
            _ => assert!(fs::read_dir(&mine).unwrap().count() > op / 4),
        }
    }
    ops
}

#[test]
fn slow_down_on_a_tenth_of_requests_is_never_seen_by_programs() {
    let rig = Rig::new();
    let mount = rig.mount(&["--metadata-ttl", "0", "--max-cache-size", "0"]);
    rig.proxy
        .inject(None, Fault::slow_down(None), When::Probability(0.1));
    let started = Instant::now();
    let done: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                scope.spawn({
                    let dir = mount.path.clone();
                    move || workload(&dir, w, 250)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(done, 1000);
    let (total, faulted) = (rig.proxy.total(), rig.proxy.faulted());
    rig.proxy.heal();
    // Every file is in the bucket, whole: a close that had failed would show here.
    for (worker, file) in (0..4).flat_map(|w| (0..250 / 4 + 1).map(move |f| (w, f))) {
        let key = format!("w{worker}/f{file}");
        let (data, headers) = rig
            .store
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing"));
        let expected = content(worker, file);
        assert!(data == expected.as_bytes(), "{key}: other bytes");
        let sha256 = headers.get("rgrid-sha256").map(String::as_str);
        assert_eq!(
            sha256,
            Some(crate::common::sha256_hex(&data).as_str()),
            "{key}"
        );
    }
    eprintln!("503 on 10%: 1000 operations, {total} requests, {faulted} answered 503");
    assert!(
        faulted > total / 20,
        "the storm happened: {faulted} of {total}"
    );
    record(
        "503 SlowDown on 10% of requests, 1000 operations",
        "0 errors",
        started,
    );
}

#[test]
fn a_30_second_slow_down_storm_fails_in_bounded_time_then_recovers() {
    let rig = Rig::new();
    let mount = rig.mount(&["--metadata-ttl", "0", "--max-cache-size", "0"]);
    fs::write(mount.join("before.txt"), "written before the storm").unwrap();
    rig.proxy.reset_counts();
    let storm = Duration::from_secs(30);
    rig.proxy
        .inject(None, Fault::slow_down(Some(1)), When::For(storm));
    let began = Instant::now();
    let mut failures = 0;
    let mut longest = Duration::ZERO;
    while began.elapsed() < storm - Duration::from_secs(8) {
        let started = Instant::now();
        let read = fs::read(mount.join("before.txt"));
        assert_eq!(errno(read), libc::EIO, "no answer but 503 during the storm");
        longest = longest.max(started.elapsed());
        failures += 1;
    }
    let requests = rig.proxy.total();
    eprintln!(
        "503 storm: {failures} failed reads in {:.0} s, {requests} requests, the longest took {longest:?}",
        began.elapsed().as_secs_f64()
    );
    assert!(longest < Duration::from_secs(16), "EIO after {longest:?}");
    // Bounded: a few attempts each, then the unreachable state's probe every 2 s.
    assert!(
        requests <= failures * 8 + 20,
        "{requests} requests for {failures} reads: a hot loop"
    );
    record("503 SlowDown on every request, 30 s", "EIO", began);
    while began.elapsed() < storm {
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match fs::read_to_string(mount.join("before.txt")) {
            Ok(text) => break assert_eq!(text, "written before the storm"),
            Err(e) => assert!(Instant::now() < deadline, "not recovered: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    fs::write(mount.join("after.txt"), "after").unwrap();
    assert_eq!(rig.store.get("after.txt").unwrap().0, b"after");
}
