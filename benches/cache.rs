//! Object cache benchmark: what a cached file costs to read again, on a fresh mount
//! with the page cache dropped, against `cat`-like reading of the same bytes from a local
//! file on the same disk (the entry itself, read as a plain file); the same with passthrough off (reads through the daemon); and
//! the cold first read with the cache filling against the cache off, both against the
//! raw-client-warm store; and `grep` of a gzip-stored 1 GiB CSV a second time, on a fresh
//! mount, against `grep` of its decoded entry as a local file. Medians of RUNS runs, same
//! run, ratios mount/local.
//!
//! `cargo bench --bench cache [-- SCENARIO...]` (root, /dev/fuse; scenarios: reread,
//! fallback, fill, gzip).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{median, peak_rss_mib, pseudo_random, selected, Mount, TestStore, BUCKET};

const RUNS: usize = 5;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const KEY: &str = "cached-1g.bin";

fn drop_caches() {
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

/// Re-reads of the cached file on fresh mounts (`extra` flags), page cache dropped,
/// against the same bytes read from a local file on the same disk.
fn reread(
    store: &TestStore,
    cache: &Path,
    local: &Path,
    extra: &[&str],
    name: &'static str,
) -> Row {
    let (mut m, mut l, mut rss, mut gets, mut reads) = (vec![], vec![], vec![], vec![], vec![]);
    for run in 0..RUNS {
        // The disk's speed drifts: which side goes first alternates.
        let read_local = |l: &mut Vec<f64>| {
            drop_caches();
            let t = Instant::now();
            assert_eq!(read_all(local), GIB);
            l.push(mbps(GIB, t.elapsed()));
        };
        if run % 2 == 1 {
            read_local(&mut l);
        }
        let mount = mount(store, cache, extra);
        let before = (store.requests("GetObject"), daemon_reads(store, &mount));
        drop_caches();
        let t = Instant::now();
        assert_eq!(read_all(&mount.join(KEY)), GIB);
        m.push(mbps(GIB, t.elapsed()));
        gets.push((store.requests("GetObject") - before.0) as f64);
        reads.push((daemon_reads(store, &mount) - before.1) as f64);
        rss.push(peak_rss_mib(mount.pid()));
        if run % 2 == 0 {
            read_local(&mut l);
        }
    }
    Row {
        name,
        mount: median(m),
        local: median(l),
        rss: median(rss),
        notes: format!(
            "{:.0} GETs, {:.0} reads seen by the daemon per re-read",
            median(gets),
            median(reads)
        ),
    }
}

/// Read requests the daemon served so far (its status counters).
fn daemon_reads(store: &TestStore, mount: &Mount) -> u64 {
    let status = common::status_json(store, mount);
    status["mounts"][0]["status"]["counters"]["reads"]
        .as_u64()
        .unwrap()
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

/// CPU seconds (user and system) that process `pid` has used.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// One cold first read with the cache filling, through a mount with `extra` flags in
/// reads of `size`: MB/s, the page cache it added (the mount's pages and the entry's),
/// and the daemon's CPU seconds.
fn cold_fill_once(store: &TestStore, extra: &[&str], size: usize) -> (f64, f64, f64) {
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
    (speed, grown, process_cpu(mount.pid()) - cpu)
}

/// Cold first reads with the cache filling: `--direct-io` against the page cache, in
/// reads of `size` (1 MiB as `dd bs=1M`, 128 KiB as `cat`).
fn cold_modes(store: &TestStore, size: usize, name: &'static str) -> Row {
    let (mut direct, mut cached) = ((vec![], vec![], vec![]), (vec![], vec![], vec![]));
    for run in 0..RUNS {
        for mode in [run % 2 == 0, run % 2 == 1] {
            let extra: &[&str] = if mode { &["--direct-io"] } else { &[] };
            let (speed, grown, cpu) = cold_fill_once(store, extra, size);
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
        rss: 0.0,
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
    let (mut m, mut l, mut rss, mut gets, mut reads) = (vec![], vec![], vec![], vec![], vec![]);
    for run in 0..RUNS {
        let grep_local = |l: &mut Vec<f64>| {
            drop_caches();
            let (plain, took) = grep(&local);
            assert_eq!(plain, count);
            l.push(mbps(GIB, took));
        };
        if run % 2 == 1 {
            grep_local(&mut l);
        }
        let mount = mount(store, cache.path(), &[]);
        let before = (store.requests("GetObject"), daemon_reads(store, &mount));
        drop_caches();
        let (again, took) = grep(&mount.join(CSV_KEY));
        assert_eq!(again, count);
        m.push(mbps(GIB, took));
        gets.push((store.requests("GetObject") - before.0) as f64);
        reads.push((daemon_reads(store, &mount) - before.1) as f64);
        rss.push(peak_rss_mib(mount.pid()));
        if run % 2 == 0 {
            grep_local(&mut l);
        }
    }
    Row {
        name: "grep of a gzip-stored 1 GiB CSV a second time, fresh mount, page cache dropped",
        mount: median(m),
        local: median(l),
        rss: median(rss),
        notes: format!(
            "{stored_mib} MiB stored; first grep (decode + fill) {:.0} MB/s; {:.0} GETs, \
             {:.0} daemon reads per second grep: no decode",
            mbps(GIB, first),
            median(gets),
            median(reads)
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
        rows.push(reread(&store, cache.path(), &local, &[], name));
    }
    if selected("fallback") {
        let name = "the same with --no-passthrough (reads through the daemon)";
        rows.push(reread(
            &store,
            cache.path(),
            &local,
            &["--no-passthrough"],
            name,
        ));
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
