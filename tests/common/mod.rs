//! Test harness: a real S3 endpoint (the embedded store, stoppable mid-test), a raw SDK
//! client to seed it, and real FUSE mounts of the `rgrid-mount` binary that unmount on drop.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use rgrid_mount::store::EmbeddedStore;
use tempfile::TempDir;

/// The bucket every test store serves.
pub const BUCKET: &str = "rgrid-executions";

/// An embedded S3 store over a temp dir, on its own runtime.
pub struct TestStore {
    pub runtime: tokio::runtime::Runtime,
    store: Option<EmbeddedStore>,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub dir: TempDir,
}

impl TestStore {
    pub fn start() -> TestStore {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let store = runtime
            .block_on(EmbeddedStore::start(dir.path(), BUCKET, addr))
            .unwrap();
        TestStore {
            endpoint: store.endpoint.clone(),
            access_key: store.access_key.clone(),
            secret_key: store.secret_key.clone(),
            store: Some(store),
            runtime,
            dir,
        }
    }

    /// Runs the store's lifecycle pass every `every`.
    pub fn lifecycle_every(&self, every: Duration) {
        self.store.as_ref().unwrap().lifecycle_every(every);
    }

    /// Starts the store again over the same directory, port and credentials.
    pub fn restart(&mut self) {
        self.stop();
        let addr: SocketAddr = self.endpoint.trim_start_matches("http://").parse().unwrap();
        let creds = (self.access_key.clone(), self.secret_key.clone());
        let start = EmbeddedStore::start_with_credentials(self.dir.path(), BUCKET, addr, creds);
        self.store = Some(self.runtime.block_on(start).unwrap());
    }

    /// Stops the server as a crash would: the port closes, open connections are cut.
    pub fn stop(&mut self) {
        if let Some(store) = self.store.take() {
            self.runtime.block_on(store.shutdown());
        }
    }

    /// Requests the store has served for `op` (e.g. "GetObject", "ListObjectsV2").
    pub fn requests(&self, op: &str) -> u64 {
        self.store.as_ref().map_or(0, |s| s.requests(op))
    }

    /// Bytes the store was asked for by ranged GETs.
    pub fn range_bytes(&self) -> u64 {
        self.store.as_ref().map_or(0, |s| s.range_bytes())
    }

    /// Makes the store answer the next `n` requests with 500.
    pub fn fail_next(&self, n: u32) {
        self.store.as_ref().expect("store running").fail_next(n);
    }

    /// Makes every upload body wait `delay` at the store.
    pub fn slow_uploads(&self, delay: Duration) {
        self.store
            .as_ref()
            .expect("store running")
            .slow_uploads(delay);
    }

    /// Refuses uploads with 403 while `on`; everything else works.
    pub fn refuse_uploads(&self, on: bool) {
        self.store
            .as_ref()
            .expect("store running")
            .refuse_uploads(on);
    }

    /// A raw aws-sdk-s3 client for the store.
    pub fn sdk(&self) -> aws_sdk_s3::Client {
        sdk_client(&self.endpoint, &self.access_key, &self.secret_key)
    }

    pub fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        let sdk = self.sdk();
        let body = ByteStream::from(body.into());
        self.runtime
            .block_on(sdk.put_object().bucket(BUCKET).key(key).body(body).send())
            .unwrap();
    }

    /// Deletes `key`, as another client does.
    pub fn delete(&self, key: &str) {
        let sdk = self.sdk();
        let delete = sdk.delete_object().bucket(BUCKET).key(key).send();
        self.runtime.block_on(delete).unwrap();
    }

    /// Puts `body` under `key` with user metadata `meta` (names without `x-amz-meta-`).
    pub fn put_with_meta(&self, key: &str, body: impl Into<Vec<u8>>, meta: &[(&str, &str)]) {
        let sdk = self.sdk();
        let mut put = sdk
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(body.into()));
        for (name, value) in meta {
            put = put.metadata(*name, *value);
        }
        self.runtime.block_on(put.send()).unwrap();
    }

    /// The stored bytes of `key` and its user metadata, or `None` when it is missing.
    /// The SHA-256 of a streamed upload, recorded in a tag bound to the ETag, is shown
    /// as `rgrid-sha256` like one in the metadata; a tag for another version is not.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, HashMap<String, String>)> {
        let sdk = self.sdk();
        let out = self
            .runtime
            .block_on(sdk.get_object().bucket(BUCKET).key(key).send())
            .ok()?;
        let mut meta = out.metadata().cloned().unwrap_or_default();
        if meta.get("rgrid-sha256-in").is_some_and(|v| v == "tag") {
            let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_owned();
            let tagged = self.tags(key).remove("rgrid-sha256").unwrap_or_default();
            if let Some((sha, _)) = tagged.split_once('@').filter(|(_, e)| *e == etag) {
                meta.insert("rgrid-sha256".into(), sha.to_owned());
            }
        }
        let body = self.runtime.block_on(out.body.collect()).ok()?;
        Some((body.into_bytes().to_vec(), meta))
    }

    /// The tag set of `key` (empty when it has none or is missing).
    pub fn tags(&self, key: &str) -> HashMap<String, String> {
        let sdk = self.sdk();
        let request = sdk.get_object_tagging().bucket(BUCKET).key(key).send();
        let Ok(out) = self.runtime.block_on(request) else {
            return HashMap::new();
        };
        let tags = out.tag_set().iter();
        tags.map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect()
    }

    /// Puts many small objects, 32 at a time.
    pub fn put_many(&self, keys: Vec<String>, body: &'static [u8]) {
        use futures::StreamExt;
        let sdk = self.sdk();
        self.runtime.block_on(
            futures::stream::iter(keys)
                .map(|key| {
                    let sdk = sdk.clone();
                    async move {
                        sdk.put_object()
                            .bucket(BUCKET)
                            .key(key)
                            .body(ByteStream::from_static(body))
                            .send()
                            .await
                            .unwrap()
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>(),
        );
    }
}

/// The entries of `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    rgrid_mount::config::is_mounted(path)
}

/// A running `rgrid-mount --foreground` on a fresh temp dir; unmounted on drop.
pub struct Mount {
    pub path: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

/// The binary under test with the store's endpoint and credentials.
pub fn rgrid_mount(store: &dyn Endpoint) -> Command {
    let mut cmd = rgrid_mount_bare(store);
    cmd.arg("--endpoint-url").arg(store.url());
    cmd
}

/// The binary with the store's credentials in its environment, and no arguments.
pub fn rgrid_mount_bare(store: &dyn Endpoint) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rgrid-mount"));
    let (access_key, secret_key) = store.keys();
    cmd.env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret_key)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RUST_LOG");
    cmd
}

/// `rgrid-mount status --json` of `mount`, which must answer.
pub fn status_json(store: &dyn Endpoint, mount: &Mount) -> serde_json::Value {
    let out = run(rgrid_mount_bare(store)
        .args(["status", "--json"])
        .arg(&mount.path));
    serde_json::from_str(&out).unwrap()
}

/// An S3 endpoint a mount can be pointed at.
pub trait Endpoint {
    /// Its URL.
    fn url(&self) -> &str;
    /// Access key and secret key.
    fn keys(&self) -> (&str, &str);
}

impl Endpoint for TestStore {
    fn url(&self) -> &str {
        &self.endpoint
    }
    fn keys(&self) -> (&str, &str) {
        (&self.access_key, &self.secret_key)
    }
}

/// moto's S3 server (PyPI `moto[server]`, installed by .ci/run), for what the embedded
/// store does not do: bucket lifecycle configuration. Killed on drop.
pub struct MotoServer {
    child: Child,
    pub endpoint: String,
    pub runtime: tokio::runtime::Runtime,
}

impl MotoServer {
    /// Starts moto's server on a free port and creates [`BUCKET`] in it.
    pub fn start() -> MotoServer {
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] (.ci/run installs it)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            runtime,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sdk = server.sdk();
        server
            .runtime
            .block_on(sdk.create_bucket().bucket(BUCKET).send())
            .unwrap();
        server
    }

    /// A raw aws-sdk-s3 client for the server.
    pub fn sdk(&self) -> aws_sdk_s3::Client {
        sdk_client(&self.endpoint, "moto", "moto")
    }
}

impl Endpoint for MotoServer {
    fn url(&self) -> &str {
        &self.endpoint
    }
    fn keys(&self) -> (&str, &str) {
        ("moto", "moto")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An aws-sdk-s3 client for `endpoint` with static keys, path-style.
pub fn sdk_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let creds = Credentials::new(access_key, secret_key, None, None, "test");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

impl Mount {
    pub fn new(store: &dyn Endpoint, args: &[&str]) -> Mount {
        Mount::try_new(store, args)
            .unwrap_or_else(|(status, log)| panic!("mount failed ({status}): {log}"))
    }

    /// Mounts, or returns the exit status and log of a daemon that gave up.
    pub fn try_new(store: &dyn Endpoint, args: &[&str]) -> Result<Mount, (ExitStatus, String)> {
        let mut cmd = rgrid_mount(store);
        cmd.args(args);
        Mount::spawn(cmd)
    }

    /// Runs `cmd` (plus `--foreground MOUNTPOINT`) and waits for its mount.
    pub fn spawn(mut cmd: Command) -> Result<Mount, (ExitStatus, String)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let log = dir.path().join("daemon.log");
        if !cmd.get_args().any(|a| a == "--cache-dir") {
            cmd.arg("--cache-dir").arg(dir.path().join("cache"));
        }
        let child = cmd
            .arg("--foreground")
            .arg("--log-level=info")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut mount = Mount {
            path,
            child: Some(child),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mount.path) {
            if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
                mount.child = None;
                return Err((status, mount.log()));
            }
            assert!(
                Instant::now() < deadline,
                "not mounted after 20 s: {}",
                mount.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(mount)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGKILL to the daemon, at once (no helper process to start first).
    pub fn kill(&mut self) {
        self.child.as_mut().expect("daemon running").kill().unwrap();
    }

    /// Waits for the daemon to exit (after an unmount or a signal).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            // Lazy, so that a test that failed with a file still open cannot block cleanup.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        if self.wait(Duration::from_secs(10)).is_none() {
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The hex SHA-256 of `data`, as `rgrid-sha256` holds it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Entries (complete, not being written) in the upload journal under `cache`, wherever
/// the store's subdirectory is.
pub fn journaled(cache: &std::path::Path) -> usize {
    let Ok(stores) = std::fs::read_dir(cache) else {
        return 0;
    };
    let is_entry = |e: &std::fs::DirEntry| e.path().extension().is_some_and(|x| x == "json");
    stores
        .flatten()
        .filter_map(|d| std::fs::read_dir(d.path().join("journal")).ok())
        .map(|entries| entries.flatten().filter(is_entry).count())
        .sum()
}

/// Aborts the FUSE connection of `mount`, as `echo 1 > .../abort` in fusectl does to a
/// hung mount.
pub fn abort_connection(mount: &Mount) {
    use std::os::unix::fs::MetadataExt;
    let control = tempfile::tempdir().unwrap();
    run(Command::new("mount")
        .args(["-t", "fusectl", "fusectl"])
        .arg(control.path()));
    let dev = std::fs::metadata(&mount.path).unwrap().dev();
    let connection = libc::minor(dev).to_string();
    let aborted = std::fs::write(control.path().join(connection).join("abort"), "1");
    run(Command::new("umount").arg(control.path()));
    aborted.unwrap();
}

/// Read requests the daemon of `mount` served so far (its status counters).
pub fn daemon_reads(store: &dyn Endpoint, mount: &Mount) -> u64 {
    let status = status_json(store, mount);
    status["mounts"][0]["status"]["counters"]["reads"]
        .as_u64()
        .unwrap()
}

/// CPU seconds (user and system) that process `pid` has used.
pub fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat_cpu(&stat)
}

/// utime + stime of a /proc stat line, in seconds (the name may hold spaces: fields
/// are counted after its closing parenthesis).
pub fn stat_cpu(stat: &str) -> f64 {
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Runs `cmd`, which must fail as bad input does (exit code 1): its stderr.
pub fn refused(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// Runs `cmd`: its stdout if it succeeded, else its stderr.
pub fn outcome(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// `cmd` run to completion: its stdout; panics with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// CSV-like text of `len` bytes (numbers and labels; gzip makes it about 3:1 smaller).
pub fn csv(len: usize, seed: u64) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(len + 64);
    let mut x = seed | 1;
    let mut row = 0u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (id, value, label) = (x % 100_000, (x % 977) as f64 / 7.0, x % 13);
        writeln!(out, "{row},{id},{value:.3},label-{label}").unwrap();
        row += 1;
    }
    out.truncate(len);
    out
}

/// Deterministic pseudo-random bytes (xorshift), so a mismatch is reproducible.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The whole of `path` read through a shared read-only mapping, as Python's mmap (and
/// numpy.memmap) map files.
pub fn map_shared(path: &Path) -> Result<Vec<u8>, String> {
    const SCRIPT: &str = "import mmap, sys\n\
        f = open(sys.argv[1], 'rb')\n\
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n\
        sys.stdout.buffer.write(m[:])";
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(out.stdout)
}

/// Whether the bench scenario `name` runs: every one does unless the command line names
/// some (`cargo bench --bench read -- sequential tail`), each matched as a substring.
pub fn selected(name: &str) -> bool {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    wanted.is_empty() || wanted.iter().any(|w| name.contains(w.as_str()))
}

/// Median of benchmark samples.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Peak RSS of `pid` since the last reset, in MiB; resets it.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    kib / 1024.0
}
