//! Object cache benchmark, medians of RUNS runs in one run, ratios mount/local:
//! - re-reads of a cached 1 GiB file on a fresh mount, page cache dropped, against
//!   reading the same bytes from a local file on the same disk (the entry itself, read
//!   as a plain file); the same with passthrough off (reads through the daemon); both
//!   again with the entry in the page cache;
//! - the cold first read with the cache filling against the cache off (raw-client-warm
//!   store), and with the cache filling, direct I/O against the page cache;
//! - `grep` of a gzip-stored 1 GiB CSV a second time, on a fresh mount, against `grep`
//!   of its decoded entry as a local file.
//!
//! `cargo bench --bench cache [-- SCENARIO...]` (root, /dev/fuse; scenarios: reread,
//! fallback, warm, fill, cold, gzip).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    daemon_reads, median, peak_rss_mib, process_cpu, pseudo_random, selected, Mount, TestStore,
    BUCKET,
};

const RUNS: usize = 5;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const KEY: &str = "cached-1g.bin";

/// Empties the page cache: written back first, since dirty pages (an entry just
/// published) are not dropped.
fn drop_caches() {
    assert!(std::process::Command::new("sync")
        .status()
        .unwrap()
        .success());
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

/// Reads `path` to the end in 1 MiB reads; returns the bytes read.
fn read_all(path: &Path) -> u64 {
    read_in(path, MIB as usize)
}

/// Reads `path` to the end in reads of `size` bytes; returns the bytes read.
fn read_in(path: &Path, size: usize) -> u64 {
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; size];
    let mut total = 0;
    loop {
        match f.read(&mut buf).unwrap() {
            0 => return total,
            n => total += n as u64,
        }
    }
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

/// A mount sharing `cache`, with `extra` flags.
fn mount(store: &TestStore, cache: &Path, extra: &[&str]) -> Mount {
    let dir = cache.display().to_string();
    let mut args = vec!["--cache-dir", &dir, "--max-cache-size", "4096"];
    args.extend_from_slice(extra);
    Mount::new(store, &args)
}

struct Row {
    name: &'static str,
    mount: f64,
    local: f64,
    rss: f64,
    notes: String,
}

/// Re-reads of the cached file on fresh mounts (`extra` flags), page cache dropped
/// (`cold`) or holding the entry, against the same bytes read from a local file on the
/// same disk.
fn reread(
    store: &TestStore,
    cache: &Path,
    local: &Path,
    (extra, cold): (&[&str], bool),
    name: &'static str,
) -> Row {
    let settle = || match cold {
        true => drop_caches(),
        false => assert_eq!(read_all(local), GIB),
    };
    let timed = |path: &Path| {
        let t = Instant::now();
        assert_eq!(read_all(path), GIB);
        t.elapsed()
    };
    let sides = Sides {
        settle: &settle,
        on_mount: &|mount| timed(&mount.join(KEY)),
        local: &|| timed(local),
    };
    let got = alternate(store, cache, extra, &sides);
    Row {
        name,
        mount: median(got.mount),
        local: median(got.local),
        rss: median(got.rss),
        notes: format!(
            "{:.0} GETs, {:.0} reads seen by the daemon per re-read",
            median(got.gets),
            median(got.reads)
        ),
    }
}

/// What [`alternate`] runs: `settle` before each side, the mount's work, the local one;
/// each side returns how long its GiB took.
struct Sides<'a> {
    settle: &'a dyn Fn(),
    on_mount: &'a dyn Fn(&Mount) -> Duration,
    local: &'a dyn Fn() -> Duration,
}

/// Per run, MB/s of each side, and the mount's peak RSS, GETs and daemon reads.
#[derive(Default)]
struct Samples {
    mount: Vec<f64>,
    local: Vec<f64>,
    rss: Vec<f64>,
    gets: Vec<f64>,
    reads: Vec<f64>,
}

/// RUNS runs of both sides, each on a fresh mount sharing `cache` (`extra` flags); which
/// side goes first alternates, as the disk's speed drifts.
fn alternate(store: &TestStore, cache: &Path, extra: &[&str], sides: &Sides) -> Samples {
    let mut got = Samples::default();
    let local = |got: &mut Samples| {
        (sides.settle)();
        got.local.push(mbps(GIB, (sides.local)()));
    };
    for run in 0..RUNS {
        if run % 2 == 1 {
            local(&mut got);
        }
        let mount = mount(store, cache, extra);
        let before = (store.requests("GetObject"), daemon_reads(store, &mount));
        (sides.settle)();
        got.mount.push(mbps(GIB, (sides.on_mount)(&mount)));
        got.gets
            .push((store.requests("GetObject") - before.0) as f64);
        got.reads
            .push((daemon_reads(store, &mount) - before.1) as f64);
        got.rss.push(peak_rss_mib(mount.pid()));
        if run % 2 == 0 {
            local(&mut got);
        }
    }
    got
}

/// Cold first reads, store side warm: a fresh cache filling against the cache off.
fn fill(store: &TestStore) -> Row {
    let (mut on, mut off, mut rss) = (vec![], vec![], vec![]);
    let (mut cpu_on, mut cpu_off) = (vec![], vec![]);
    let stored = store.dir.path().join(BUCKET).join(KEY);
    for run in 0..RUNS {
        for filling in [run % 2 == 0, run % 2 == 1] {
            let cache = tempfile::tempdir().unwrap();
            let size = if filling { "4096" } else { "0" };
            let dir = cache.path().display().to_string();
            let mount = Mount::new(store, &["--cache-dir", &dir, "--max-cache-size", size]);
            drop_caches();
            read_all(&stored);
            let cpu = process_cpu(mount.pid());
            let t = Instant::now();
            assert_eq!(read_all(&mount.join(KEY)), GIB);
            let speed = mbps(GIB, t.elapsed());
            // The fill's last writes and its sync belong to its cost.
            std::thread::sleep(Duration::from_secs(2));
            let cpu = process_cpu(mount.pid()) - cpu;
            if filling {
                on.push(speed);
                cpu_on.push(cpu);
                rss.push(peak_rss_mib(mount.pid()));
            } else {
                off.push(speed);
                cpu_off.push(cpu);
            }
        }
    }
    Row {
        name: "cold first read, 1 GiB: cache filling (mount) vs cache off (local column)",
        mount: median(on),
        local: median(off),
        rss: median(rss),
        notes: format!(
            "store side warm; daemon {:.2} CPU-s/GiB filling vs {:.2} off (the tee: one more copy, into the entry's page cache, and its writeback)",
            median(cpu_on),
            median(cpu_off)
        ),
    }
}

/// The kernel's page cache, in bytes (`Cached` of /proc/meminfo).
fn page_cache() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo.lines().find(|l| l.starts_with("Cached:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        << 10
}

/// One cold first read with the cache filling, through a mount with `extra` flags in
/// reads of `size`: MB/s, the page cache it added (the mount's pages and the entry's),
/// the daemon's CPU seconds and its peak RSS.
fn cold_fill_once(store: &TestStore, extra: &[&str], size: usize) -> (f64, f64, f64, f64) {
    let cache = tempfile::tempdir_in(store.dir.path()).unwrap();
    let mount = mount(store, cache.path(), extra);
    drop_caches();
    read_all(&store.dir.path().join(BUCKET).join(KEY));
    let (cached, cpu) = (page_cache(), process_cpu(mount.pid()));
    let t = Instant::now();
    assert_eq!(read_in(&mount.join(KEY), size), GIB);
    let speed = mbps(GIB, t.elapsed());
    std::thread::sleep(Duration::from_secs(2)); // the entry's sync and publish
    let grown = page_cache().saturating_sub(cached) as f64 / GIB as f64;
    let rss = peak_rss_mib(mount.pid());
    (speed, grown, process_cpu(mount.pid()) - cpu, rss)
}

/// Cold first reads with the cache filling: `--direct-io` against the page cache, in
/// reads of `size` (1 MiB as `dd bs=1M`, 128 KiB as `cat`).
fn cold_modes(store: &TestStore, size: usize, name: &'static str) -> Row {
    let (mut direct, mut cached) = ((vec![], vec![], vec![]), (vec![], vec![], vec![]));
    let mut rss = vec![];
    for run in 0..RUNS {
        for mode in [run % 2 == 0, run % 2 == 1] {
            let extra: &[&str] = if mode { &["--direct-io"] } else { &[] };
            let (speed, grown, cpu, peak) = cold_fill_once(store, extra, size);
            rss.push(peak);
            let side = if mode { &mut direct } else { &mut cached };
            side.0.push(speed);
            side.1.push(grown);
            side.2.push(cpu);
        }
    }
    Row {
        name,
        mount: median(direct.0),
        local: median(cached.0),
        rss: median(rss),
        notes: format!(
            "page cache added: {:.2} GiB direct vs {:.2} GiB cached; daemon {:.2} vs {:.2} CPU-s/GiB",
            median(direct.1),
            median(cached.1),
            median(direct.2),
            median(cached.2)
        ),
    }
}

const CSV_KEY: &str = "table-1g.csv";

/// `grep -c` of `path`: its count, and the time it took.
fn grep(path: &Path) -> (String, Duration) {
    let t = Instant::now();
    let out = common::run(
        std::process::Command::new("grep")
            .args(["-c", ",4242,"])
            .arg(path),
    );
    (out, t.elapsed())
}

/// A gzip-stored 1 GiB CSV grepped once on a mount of its own (decoding into a fresh
/// cache), then again on fresh mounts with the page cache dropped, against `grep` of
/// the decoded entry read as a local file.
fn gzip_grep(store: &TestStore) -> Row {
    let csv = common::csv(GIB as usize, 9);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &csv).unwrap();
    let stored = encoder.finish().unwrap();
    drop(csv);
    let stored_mib = stored.len() as u64 / MIB;
    store.put_with_meta(CSV_KEY, stored, &[("rgrid-compression", "gzip")]);
    let cache = tempfile::tempdir_in(store.dir.path()).unwrap();
    let (count, first) = {
        let mount = mount(store, cache.path(), &[]);
        let (count, took) = grep(&mount.join(CSV_KEY));
        std::thread::sleep(Duration::from_secs(3)); // the entry's sync and publish
        (count, took)
    };
    let records = walk_records(cache.path());
    assert_eq!(records.len(), 1, "the first grep filled the cache");
    let local = records[0].with_extension("");
    let grep_timed = |path: &Path| {
        let (found, took) = grep(path);
        assert_eq!(found, count);
        took
    };
    let sides = Sides {
        settle: &drop_caches,
        on_mount: &|mount| grep_timed(&mount.join(CSV_KEY)),
        local: &|| grep_timed(&local),
    };
    let got = alternate(store, cache.path(), &[], &sides);
    Row {
        name: "grep of a gzip-stored 1 GiB CSV a second time, fresh mount, page cache dropped",
        mount: median(got.mount),
        local: median(got.local),
        rss: median(got.rss),
        notes: format!(
            "{stored_mib} MiB stored; first grep (decode + fill) {:.0} MB/s; {:.0} GETs, \
             {:.0} daemon reads per second grep: no decode",
            mbps(GIB, first),
            median(got.gets),
            median(got.reads)
        ),
    }
}

/// Entry records under `dir`, at any depth.
fn walk_records(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for item in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = item.path();
        if path.is_dir() {
            found.extend(walk_records(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            found.push(path);
        }
    }
    found
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("cache: bench");
        return;
    }
    let mut store = TestStore::start();
    let path = store.dir.path().join(BUCKET).join(KEY);
    let chunk = pseudo_random(64 << 20, 3);
    let mut out = std::io::BufWriter::new(File::create(&path).unwrap());
    for _ in 0..16 {
        std::io::Write::write_all(&mut out, &chunk).unwrap();
    }
    drop(out);
    store.restart();
    let cache = tempfile::tempdir_in(store.dir.path()).unwrap();
    {
        let first = mount(&store, cache.path(), &[]);
        assert_eq!(read_all(&first.join(KEY)), GIB);
        std::thread::sleep(Duration::from_secs(3)); // the fill's sync and publish
    }
    let records = walk_records(cache.path());
    assert_eq!(records.len(), 1, "the first read filled the cache");
    // The local file: the entry itself, read as a plain file (the same blocks of the
    // same disk that passthrough serves).
    let local: PathBuf = records[0].with_extension("");
    let mut rows = Vec::new();
    if selected("reread") {
        let name = "re-read of a cached 1 GiB file, fresh mount, page cache dropped (passthrough)";
        rows.push(reread(&store, cache.path(), &local, (&[], true), name));
    }
    if selected("fallback") {
        let name = "the same with --no-passthrough (reads through the daemon)";
        let flags: &[&str] = &["--no-passthrough"];
        rows.push(reread(&store, cache.path(), &local, (flags, true), name));
    }
    if selected("warm") {
        let name = "re-read with the entry in the page cache (passthrough)";
        rows.push(reread(&store, cache.path(), &local, (&[], false), name));
        let name = "the same with --no-passthrough";
        let flags: &[&str] = &["--no-passthrough"];
        rows.push(reread(&store, cache.path(), &local, (flags, false), name));
    }
    if selected("fill") {
        rows.push(fill(&store));
    }
    if selected("cold") {
        let name = "cold first read, cache filling, 1 MiB reads: --direct-io (mount) vs page cache (local column)";
        rows.push(cold_modes(&store, MIB as usize, name));
        let name = "the same in 128 KiB reads (cat)";
        rows.push(cold_modes(&store, 128 << 10, name));
        let name = "the same in 16 KiB reads";
        rows.push(cold_modes(&store, 16 << 10, name));
    }
    if selected("gzip") {
        rows.push(gzip_grep(&store));
    }
    println!("| scenario | mount | local | ratio | daemon RSS | notes |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} MB/s | {:.0} MB/s | {:.2} | {:.0} MiB | {} |",
            r.name,
            r.mount,
            r.local,
            r.mount / r.local,
            r.rss,
            r.notes
        );
    }
}
