//! Read benchmark: the mount against the raw aws-sdk-s3 client, same store, same run.
//!
//! `cargo bench --bench read [-- SCENARIO...]` (root, /dev/fuse; scenarios: sequential,
//! concurrent, random, tail, listing, big, direct-* for the first three through a
//! `--direct-io` mount, requests: CPU per GiB by FUSE request size, and verify-first:
//! an object with its SHA-256 streamed or held back until checked). Every figure is the median of RUNS runs
//! and is printed beside the raw client doing the same work; ratios are mount/raw
//! throughput (time ratios for listings). Request counts come from the store itself.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use common::{
    daemon_reads, median, peak_rss_mib, process_cpu, pseudo_random, selected, stat_cpu, Mount,
    TestStore, BUCKET,
};
use futures::StreamExt;

const RUNS: usize = 5;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Writes a file of pseudo-random bytes straight into the store's directory.
/// The object cache off: reads come from the store.
const NO_CACHE: [&str; 2] = ["--max-cache-size", "0"];

fn seed_file(store: &TestStore, key: &str, len: u64, seed: u64) {
    let path = store.dir.path().join(BUCKET).join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::io::BufWriter::new(File::create(&path).unwrap());
    let chunk = pseudo_random(64 << 20, seed);
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut out, &chunk[..n]).unwrap();
        left -= n as u64;
    }
}

/// Drops the page cache, then warms the store's copy of `keys`: the store side is hot,
/// the mount's side cold, for both contestants alike.
fn cold_mount_warm_store(store: &TestStore, keys: &[&str]) {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    for key in keys {
        let mut f = File::open(store.dir.path().join(BUCKET).join(key)).unwrap();
        std::io::copy(&mut f, &mut std::io::sink()).unwrap();
    }
}

fn read_through_mount(path: &Path) -> u64 {
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

/// Parallel ranged GETs of a whole object: 8 MiB parts, 8 in flight.
async fn raw_parallel_get(sdk: &Client, key: &str, size: u64) -> u64 {
    let parts = (0..size)
        .step_by(8 * MIB as usize)
        .map(|start| (start, (start + 8 * MIB).min(size)));
    let counts = futures::stream::iter(parts)
        .map(|(a, b)| async move { raw_range(sdk, key, a, b).await })
        .buffer_unordered(8)
        .collect::<Vec<u64>>()
        .await;
    counts.into_iter().sum()
}

async fn raw_range(sdk: &Client, key: &str, a: u64, b: u64) -> u64 {
    let out = sdk
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .range(format!("bytes={a}-{}", b - 1))
        .send()
        .await
        .unwrap();
    let mut body = out.body;
    let mut n = 0;
    while let Some(chunk) = body.next().await {
        n += chunk.unwrap().len() as u64;
    }
    n
}

struct Row {
    name: String,
    mount: String,
    raw: String,
    ratio: String,
    rss: String,
    notes: String,
}

/// Busy and total CPU time of the whole machine, in ticks.
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<u64> = stat.lines().next().unwrap()[4..]
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    let total = ticks.iter().sum::<u64>();
    (total - ticks[3] - ticks[4], total) // idle and iowait are not busy
}

/// Runs `work`: how long it took, and the share of all cores busy meanwhile. A side at
/// 100% is CPU-bound on this machine, whatever its design.
fn measured(work: impl FnOnce()) -> (Duration, f64) {
    let (busy, total) = machine_cpu();
    let t = Instant::now();
    work();
    let elapsed = t.elapsed();
    let (busy2, total2) = machine_cpu();
    (
        elapsed,
        (busy2 - busy) as f64 / (total2 - total).max(1) as f64,
    )
}

/// "CPU busy: mount 97%, raw 95%", medians.
fn busy_note(mount: Vec<f64>, raw: Vec<f64>) -> String {
    format!(
        "CPU busy: mount {:.0}%, raw {:.0}%",
        median(mount) * 100.0,
        median(raw) * 100.0
    )
}

fn gbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e9
}

fn sequential(store: &TestStore, sdk: &Client, mount: &Mount, flags: &str) -> Row {
    let (mut m, mut r, mut mb, mut rb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let gets_before = store.requests("GetObject");
    for _ in 0..RUNS {
        cold_mount_warm_store(store, &["seq-1g.bin"]);
        let (t, busy) = measured(|| {
            assert_eq!(read_through_mount(&mount.join("seq-1g.bin")), GIB);
        });
        m.push(gbps(GIB, t));
        mb.push(busy);
        cold_mount_warm_store(store, &["seq-1g.bin"]);
        let (t, busy) = measured(|| {
            let read = store
                .runtime
                .block_on(raw_parallel_get(sdk, "seq-1g.bin", GIB));
            assert_eq!(read, GIB);
        });
        r.push(gbps(GIB, t));
        rb.push(busy);
    }
    let raw_gets = RUNS as u64 * GIB.div_ceil(8 * MIB);
    let mount_gets = (store.requests("GetObject") - gets_before - raw_gets) as f64 / RUNS as f64;
    let (m, r) = (median(m), median(r));
    Row {
        name: format!("cold sequential read, 1 GiB{flags}"),
        mount: format!("{m:.2} GB/s"),
        raw: format!("{r:.2} GB/s"),
        ratio: format!("{:.2}", m / r),
        rss: format!("{:.0} MiB", peak_rss_mib(mount.pid())),
        notes: format!(
            "{mount_gets:.0} GETs per GiB through the mount; {}",
            busy_note(mb, rb)
        ),
    }
}

fn concurrent(store: &TestStore, sdk: &Client, mount: &Mount, flags: &str) -> Row {
    let keys = ["par-0.bin", "par-1.bin", "par-2.bin", "par-3.bin"];
    let (mut m, mut r, mut mb, mut rb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        cold_mount_warm_store(store, &keys);
        let (t, busy) = measured(|| {
            std::thread::scope(|s| {
                for key in keys {
                    s.spawn(move || assert_eq!(read_through_mount(&mount.join(key)), 256 * MIB));
                }
            });
        });
        m.push(gbps(GIB, t));
        mb.push(busy);
        cold_mount_warm_store(store, &keys);
        let (t, busy) = measured(|| {
            store.runtime.block_on(async {
                let reads = keys.iter().map(|k| raw_parallel_get(sdk, k, 256 * MIB));
                futures::future::join_all(reads).await
            });
        });
        r.push(gbps(GIB, t));
        rb.push(busy);
    }
    let (m, r) = (median(m), median(r));
    Row {
        name: format!("4 concurrent sequential readers, 4 x 256 MiB{flags}"),
        mount: format!("{m:.2} GB/s"),
        raw: format!("{r:.2} GB/s"),
        ratio: format!("{:.2}", m / r),
        rss: format!("{:.0} MiB", peak_rss_mib(mount.pid())),
        notes: busy_note(mb, rb),
    }
}

fn offsets(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (GIB / 4096)) * 4096
        })
        .collect()
}

fn random(store: &TestStore, sdk: &Client, mount: &Mount, flags: &str) -> Row {
    const READS: usize = 8000;
    const THREADS: usize = 4;
    let (mut m, mut r, mut amplification, mut gets_per_miss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut mb, mut rb) = (Vec::new(), Vec::new());
    // The raw client fetching the mount's 64 KiB blocks instead of 4 KiB: how much of the
    // gap is the block size, how much the FUSE round trip.
    let mut r64 = Vec::new();
    for run in 0..RUNS {
        let offs = offsets(run as u64 * 7919 + 11, READS);
        cold_mount_warm_store(store, &["seq-1g.bin"]);
        let (gets, bytes) = (store.requests("GetObject"), store.range_bytes());
        let (t, busy) = measured(|| {
            std::thread::scope(|s| {
                for chunk in offs.chunks(READS / THREADS) {
                    let path = mount.join("seq-1g.bin");
                    s.spawn(move || {
                        let f = File::open(path).unwrap();
                        let mut buf = [0u8; 4096];
                        for &o in chunk {
                            f.read_exact_at(&mut buf, o).unwrap();
                        }
                    });
                }
            });
        });
        m.push((READS * 4096) as f64 / t.as_secs_f64() / 1e6);
        mb.push(busy);
        amplification.push((store.range_bytes() - bytes) as f64 / (READS * 4096) as f64);
        gets_per_miss.push((store.requests("GetObject") - gets) as f64 / READS as f64);
        let (t, busy) = measured(|| {
            store.runtime.block_on(async {
                let tasks = offs.chunks(READS / THREADS).map(|chunk| async move {
                    for &o in chunk {
                        raw_range(sdk, "seq-1g.bin", o, o + 4096).await;
                    }
                });
                futures::future::join_all(tasks).await
            });
        });
        r.push((READS * 4096) as f64 / t.as_secs_f64() / 1e6);
        rb.push(busy);
        let t = Instant::now();
        store.runtime.block_on(async {
            let tasks = offs.chunks(READS / THREADS).map(|chunk| async move {
                for &o in chunk {
                    let block = o / (64 << 10) * (64 << 10);
                    raw_range(sdk, "seq-1g.bin", block, block + (64 << 10)).await;
                }
            });
            futures::future::join_all(tasks).await
        });
        r64.push((READS * 4096) as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    let (m, r) = (median(m), median(r));
    Row {
        name: format!("4 KiB random reads over 1 GiB, 4 threads{flags}"),
        mount: format!("{m:.1} MB/s"),
        raw: format!("{r:.1} MB/s"),
        ratio: format!("{:.2}", m / r),
        rss: format!("{:.0} MiB", peak_rss_mib(mount.pid())),
        notes: format!(
            "{:.2} GETs per read, fetched/read = {:.1}; raw with 64 KiB GETs: {:.1} MB/s; {}",
            median(gets_per_miss),
            median(amplification),
            median(r64),
            busy_note(mb, rb)
        ),
    }
}

fn total_requests(store: &TestStore) -> u64 {
    ["GetObject", "HeadObject", "ListObjectsV2", "HeadBucket"]
        .iter()
        .map(|op| store.requests(op))
        .sum()
}

fn tail(store: &TestStore) -> Row {
    let (mut times, mut requests, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let mount = Mount::new(store, &NO_CACHE);
        let before = total_requests(store);
        let t = Instant::now();
        let out = Command::new("tail")
            .args(["-c", "100"])
            .arg(mount.join("seq-1g.bin"))
            .output()
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(out.stdout.len(), 100);
        requests.push((total_requests(store) - before) as f64);
        rss.push(peak_rss_mib(mount.pid()));
    }
    Row {
        name: "tail -c 100 of 1 GiB, fresh mount".into(),
        mount: format!("{:.1} ms", median(times)),
        raw: "-".into(),
        ratio: "-".into(),
        rss: format!("{:.0} MiB", median(rss)),
        notes: format!("{:.0} requests in all", median(requests)),
    }
}

fn listing(store: &TestStore, sdk: &Client) -> Row {
    let (mut m, mut r, mut lists, mut heads, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The same 10,000 files as the store keeps them, on local disk (page cache warm):
    // what `ls -l` costs with no network and no FUSE at all.
    let mut local = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new("ls")
            .arg("-l")
            .arg(store.dir.path().join(BUCKET).join("list"))
            .output()
            .unwrap();
        assert!(out.status.success());
        local.push(t.elapsed().as_secs_f64() * 1000.0);
        let mount = Mount::new(store, &NO_CACHE);
        let (l, h) = (
            store.requests("ListObjectsV2"),
            store.requests("HeadObject"),
        );
        let t = Instant::now();
        let out = Command::new("ls")
            .arg("-l")
            .arg(mount.join("list"))
            .output()
            .unwrap();
        m.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(
            out.stdout
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"-"))
                .count(),
            10_000
        );
        lists.push((store.requests("ListObjectsV2") - l) as f64);
        heads.push((store.requests("HeadObject") - h) as f64);
        rss.push(peak_rss_mib(mount.pid()));
        let t = Instant::now();
        let n = store.runtime.block_on(async {
            let mut token = None;
            let mut n = 0;
            loop {
                let page = sdk
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .prefix("list/")
                    .delimiter("/")
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                n += page.contents().len();
                token = page.next_continuation_token().map(str::to_owned);
                if token.is_none() {
                    return n;
                }
            }
        });
        r.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, 10_000);
    }
    let (m, r) = (median(m), median(r));
    Row {
        name: "ls -l of 10,000 objects, fresh mount".into(),
        mount: format!("{m:.0} ms"),
        raw: format!("{r:.0} ms"),
        ratio: format!("{:.2} (time)", m / r),
        rss: format!("{:.0} MiB", median(rss)),
        notes: format!(
            "{:.0} LIST (the lookup of list/ included), {:.0} HEAD; `ls -l` of the store's own directory on local disk: {:.0} ms",
            median(lists),
            median(heads),
            median(local)
        ),
    }
}

fn big_file_rss(store: &TestStore) -> Row {
    let mount = Mount::new(store, &NO_CACHE);
    cold_mount_warm_store(store, &[]);
    let t = Instant::now();
    assert_eq!(read_through_mount(&mount.join("big-4g.bin")), 4 * GIB);
    let speed = gbps(4 * GIB, t.elapsed());
    Row {
        name: "sequential read, 4 GiB (one run)".into(),
        mount: format!("{speed:.2} GB/s"),
        raw: "-".into(),
        ratio: "-".into(),
        rss: format!("{:.0} MiB", peak_rss_mib(mount.pid())),
        notes: "store side cold".into(),
    }
}

/// CPU seconds used by this process's threads named `raw-client*`.
fn raw_client_cpu() -> f64 {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("raw-client") {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) {
                total += stat_cpu(&stat);
            }
        }
    }
    total
}

/// Cold sequential reads of 1 GiB through mounts with FUSE requests of 1, 4 and 16 MiB:
/// the daemon's CPU seconds per GiB against the raw client's (its own runtime's threads,
/// apart from the store's), and the requests per GiB.
fn request_sizes(store: &TestStore) -> Vec<Row> {
    let raw = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("raw-client")
        .enable_all()
        .build()
        .unwrap();
    let sdk = store.sdk();
    let limit = std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit").ok();
    let mut rows = Vec::new();
    for mib in ["1", "4", "16"] {
        let mount = Mount::new(
            store,
            &[NO_CACHE[0], NO_CACHE[1], "--fuse-request-size", mib],
        );
        let (mut m, mut r, mut mcpu, mut rcpu, mut reqs) = (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            cold_mount_warm_store(store, &["seq-1g.bin"]);
            let (cpu, reads) = (process_cpu(mount.pid()), daemon_reads(store, &mount));
            let t = Instant::now();
            assert_eq!(read_through_mount(&mount.join("seq-1g.bin")), GIB);
            m.push(gbps(GIB, t.elapsed()));
            mcpu.push(process_cpu(mount.pid()) - cpu);
            reqs.push((daemon_reads(store, &mount) - reads) as f64);
            cold_mount_warm_store(store, &["seq-1g.bin"]);
            let cpu = raw_client_cpu();
            let t = Instant::now();
            // On the raw runtime's workers, whose CPU is counted.
            let sdk = sdk.clone();
            let task = raw.spawn(async move { raw_parallel_get(&sdk, "seq-1g.bin", GIB).await });
            assert_eq!(raw.block_on(task).unwrap(), GIB);
            r.push(gbps(GIB, t.elapsed()));
            rcpu.push(raw_client_cpu() - cpu);
        }
        let (m, r, mc, rc) = (median(m), median(r), median(mcpu), median(rcpu));
        rows.push(Row {
            name: format!("cold sequential read, 1 GiB, FUSE requests of {mib} MiB"),
            mount: format!("{m:.2} GB/s"),
            raw: format!("{r:.2} GB/s"),
            ratio: format!("{:.2}", m / r),
            rss: format!("{:.0} MiB", peak_rss_mib(mount.pid())),
            notes: format!(
                "daemon {mc:.2} CPU-s/GiB vs raw client {rc:.2} ({:.1}x); {:.0} FUSE reads per GiB",
                mc / rc.max(0.01),
                median(reqs)
            ),
        });
    }
    if let Some(limit) = limit {
        let _ = std::fs::write("/proc/sys/fs/fuse/max_pages_limit", limit.trim());
    }
    rows
}

/// Milliseconds to the first 4 KiB of `path` on a fresh handle.
fn first_bytes_ms(path: &Path) -> f64 {
    let t = Instant::now();
    let mut buf = vec![0u8; 4096];
    File::open(path).unwrap().read_exact(&mut buf).unwrap();
    t.elapsed().as_secs_f64() * 1e3
}

/// A 256 MiB object with its SHA-256 read front to back: checked as it streams (the
/// default) and held back until checked (`--verify-first`), against the raw client; and
/// the time to the first 4 KiB, which `--verify-first` makes wait for the last byte.
fn verify_first(store: &TestStore, sdk: &Client) -> Vec<Row> {
    let len = 256 * MIB;
    let data = pseudo_random(len as usize, 77);
    let sha = rgrid_mount::artifact::sha256_hex(&data);
    store.put_with_meta("summed.bin", data, &[("rgrid-sha256", &sha)]);
    let streamed = Mount::new(store, &[NO_CACHE[0], NO_CACHE[1]]);
    let held = Mount::new(store, &["--verify-first", NO_CACHE[0], NO_CACHE[1]]);
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..RUNS {
        cold_mount_warm_store(store, &["summed.bin"]);
        let (t, _) = measured(|| {
            let read = store
                .runtime
                .block_on(raw_parallel_get(sdk, "summed.bin", len));
            assert_eq!(read, len);
        });
        raw.push(gbps(len, t));
    }
    let raw = median(raw);
    for (mount, flags) in [(&streamed, ""), (&held, ", --verify-first")] {
        peak_rss_mib(mount.pid());
        let (mut speed, mut first) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            cold_mount_warm_store(store, &["summed.bin"]);
            let path = mount.join("summed.bin");
            let (t, _) = measured(|| assert_eq!(read_through_mount(&path), len));
            speed.push(gbps(len, t));
            cold_mount_warm_store(store, &["summed.bin"]);
            first.push(first_bytes_ms(&path));
        }
        let m = median(speed);
        rows.push(Row {
            name: format!("cold read, 256 MiB with its SHA-256{flags}"),
            mount: format!("{m:.2} GB/s"),
            raw: format!("{raw:.2} GB/s"),
            ratio: format!("{:.2}", m / raw),
            rss: format!("{:.0} MiB", peak_rss_mib(mount.pid())),
            notes: format!("first 4 KiB after {:.0} ms", median(first)),
        });
    }
    rows
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("read: bench");
        return;
    }
    let mut store = TestStore::start();
    seed_file(&store, "seq-1g.bin", GIB, 1);
    for i in 0..4 {
        seed_file(&store, &format!("par-{i}.bin"), 256 * MIB, 10 + i);
    }
    seed_file(&store, "big-4g.bin", 4 * GIB, 99);
    let list = store.dir.path().join(BUCKET).join("list");
    std::fs::create_dir_all(&list).unwrap();
    for i in 0..10_000 {
        std::fs::write(list.join(format!("f{i:05}.txt")), "x").unwrap();
    }
    store.restart(); // index what was written behind the store's back
    let sdk = store.sdk();
    // These rows measure reads from the store: the object cache would serve every run
    // after the first from local disk.
    let mount = Mount::new(&store, &[NO_CACHE[0], NO_CACHE[1]]);
    let direct = Mount::new(&store, &["--direct-io", NO_CACHE[0], NO_CACHE[1]]);
    peak_rss_mib(mount.pid());
    peak_rss_mib(direct.pid());
    const DIRECT: &str = ", --direct-io";
    let scenarios: [(&str, &dyn Fn() -> Row); 9] = [
        ("sequential", &|| sequential(&store, &sdk, &mount, "")),
        ("concurrent", &|| concurrent(&store, &sdk, &mount, "")),
        ("random", &|| random(&store, &sdk, &mount, "")),
        ("direct-sequential", &|| {
            sequential(&store, &sdk, &direct, DIRECT)
        }),
        ("direct-concurrent", &|| {
            concurrent(&store, &sdk, &direct, DIRECT)
        }),
        ("direct-random", &|| random(&store, &sdk, &direct, DIRECT)),
        ("tail", &|| tail(&store)),
        ("listing", &|| listing(&store, &sdk)),
        ("big", &|| big_file_rss(&store)),
    ];
    let mut rows: Vec<Row> = scenarios
        .into_iter()
        .filter(|(name, _)| selected(name))
        .map(|(_, scenario)| scenario())
        .collect();
    if selected("requests") {
        rows.extend(request_sizes(&store));
    }
    if selected("verify-first") {
        rows.extend(verify_first(&store, &sdk));
    }
    println!(
        "\n| scenario (median of {RUNS}) | mount | raw SDK | ratio | daemon peak RSS | notes |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.name, r.mount, r.raw, r.ratio, r.rss, r.notes
        );
    }
}
