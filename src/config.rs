//! Command-line arguments ([`MountArgs`], raw, from clap) and their validation into a
//! [`MountConfig`] that holds each layer's settings. Nothing below `main` reads arguments
//! or the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, ValueEnum};

use crate::cache::CacheConfig;
use crate::fs::{FsConfig, MountIdentity, Ownership};
use crate::fuse::SessionConfig;
use crate::namespace::{check_name, NamespaceConfig};
use crate::object::S3ClientConfig;
use crate::readahead::ReadConfig;
use crate::retention::{RetentionConfig, Tier, TIER_TAG};
use crate::upload::{CompressMode, CompressPolicy, WriteConfig};

mod commands;
pub use commands::{CacheAction, Command, RetentionAction};

/// Mount an rgrid artifact store (an S3-compatible bucket) as a local directory.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rgrid-mount",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct MountArgs {
    /// Something other than mounting.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Directory to mount on.
    #[arg(required = true)]
    pub mountpoint: Option<PathBuf>,

    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,

    /// Show only keys under this prefix; the mount root is the prefix.
    #[arg(long)]
    pub prefix: Option<String>,

    /// Mount one execution as its script's /work: inputs/ is executions/<EXEC_ID>/inputs/
    /// (read-only), every other path X is executions/<EXEC_ID>/outputs/X.
    #[arg(long, value_name = "EXEC_ID", conflicts_with = "prefix")]
    pub work: Option<String>,

    /// Refuse every change (EROFS).
    #[arg(long)]
    pub read_only: bool,

    /// Owner of all files (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,

    /// Group of all files (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,

    /// Let other users (and containers) access the mount.
    #[arg(long)]
    pub allow_other: bool,

    /// Seconds that file attributes and listings are trusted before asking the store again.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub metadata_ttl: f64,

    /// Stay in the foreground (logs go to stderr) instead of detaching.
    #[arg(long)]
    pub foreground: bool,

    /// Log level: error, warn, info, debug or trace (RUST_LOG, when set, wins).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Bypass the kernel page cache for files read from the store: one copy of every
    /// byte less, so single-pass reads of big files (cp, grep) run faster, but nothing
    /// stays cached across opens. mmap still works (through the page cache).
    #[arg(long)]
    pub direct_io: bool,

    /// Memory for all read buffers together, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    pub max_read_memory: u64,

    /// Size of one ranged GET of a sequential reader, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub read_part_size: u64,

    /// Most bytes fetched ahead of one sequential reader, in MiB; divided by the part size,
    /// it is the number of GETs in flight per reader.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_read_window: u64,

    /// The largest read or write one FUSE request carries, in MiB (1 to 16). Past 1 MiB,
    /// root raises the kernel's /proc/sys/fs/fuse/max_pages_limit to allow it; the
    /// kernel's read-ahead for the mount is 4 requests, at least 4 MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1)]
    pub fuse_request_size: u64,

    /// Where files being written are spooled, pending uploads journaled and objects
    /// cached (default: $XDG_CACHE_HOME/rgrid-mount, else /var/cache/rgrid for root,
    /// ~/.cache/rgrid-mount).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Check plain objects that carry no `rgrid-sha256` against their ETag no more. By
    /// default a single-part object stored plain or under SSE-S3, whose ETag S3 makes the
    /// MD5 of its content, is EIO when its bytes do not hash to it (as rclone checks);
    /// for a store whose ETags look like MD5s and are not.
    #[arg(long)]
    pub no_etag_check: bool,

    /// Serve no byte of an object with a content hash (`rgrid-sha256`, an MD5 ETag, a
    /// gzip stream's CRC-32s) before all of it is fetched and checked: a corrupt object
    /// is EIO at the first read, and no bad byte ever reaches a program. Larger objects
    /// are kept in a local file under --cache-dir meanwhile; the first byte waits for
    /// the last. By default only objects up to 256 KiB are held back, and a larger one
    /// streams and is EIO at the read that completes it.
    #[arg(long)]
    pub verify_first: bool,

    /// Serve cached files through the kernel's own reads (the default, where FUSE
    /// passthrough is available) no more: every read comes to the daemon.
    #[arg(long)]
    pub no_passthrough: bool,

    /// Most MiB the object cache keeps, across mounts (default: the smaller of 10 GiB
    /// and a fifth of the cache directory's free space; 0 turns it off).
    #[arg(long, value_name = "MIB")]
    pub max_cache_size: Option<u64>,

    /// Part size of multipart uploads, in MiB (S3's minimum is 5); smaller files go up in
    /// one PUT.
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub upload_part_size: u64,

    /// Upload bodies (parts, whole small files) in flight at once, all files together;
    /// each holds up to one part in memory.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub upload_concurrency: usize,

    /// close() returns once the file is journaled, and its upload runs in the background;
    /// fsync, `rgrid-mount sync` and unmount wait for it (default: close waits).
    #[arg(long)]
    pub write_back: bool,

    /// Most MiB of closed files that may wait for upload in write-back mode; a close past
    /// it waits (default: a tenth of the cache directory's free space, at least 256).
    #[arg(long, value_name = "MIB")]
    pub max_pending: Option<u64>,

    /// Directories with at most N files get a HEAD per file when listed, so that `ls -l`
    /// shows kept modes and mtimes, symlinks and original sizes; larger ones cost only
    /// their LISTs (0: never).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub listing_heads: usize,

    /// Store outputs gzip-compressed: never, auto (text formats such as csv, json, log
    /// larger than --compress-threshold), or always (every file).
    #[arg(long, value_enum, default_value_t = CompressArg::Auto)]
    pub compress: CompressArg,

    /// Size in MiB a text output must exceed to be stored compressed under auto.
    #[arg(long, value_name = "MIB", default_value_t = 100)]
    pub compress_threshold: u64,

    /// The retention tier files written here ask for: days (`30`) or `keep`. It is the
    /// object's `rgrid-retention` tag from its first PUT; the tier rules `rgrid-mount
    /// retention set` installs make the store act on it.
    #[arg(long, value_name = "DAYS|keep", default_value = "30", value_parser = parse_tier)]
    pub retention_days: Tier,

    /// Seconds a link in `user.rgrid.url` stays valid (at most 7 days, SigV4's limit).
    #[arg(long, value_name = "SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub share_link_ttl: u64,

    /// Opening a file that expires within this many days logs a warning.
    #[arg(long, value_name = "DAYS", default_value_t = 2.0)]
    pub expiry_warning: f64,

    /// Serve Prometheus metrics (text exposition) on ADDR, e.g. 127.0.0.1:9464: store
    /// requests, bytes, FUSE operation latencies, read cache, uploads, retries.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Serve DIR with the embedded S3 store on 127.0.0.1 and mount that.
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
}

/// `--compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// Never.
    Never,
    /// Large text formats.
    Auto,
    /// Every file.
    Always,
}

/// The bucket and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Bucket to mount.
    #[arg(long, default_value = "rgrid-executions")]
    pub bucket: String,

    /// S3 endpoint, e.g. http://minio:9000 (path-style addressing is used with it).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Region (default: from the AWS config chain, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,

    /// PEM certificates to trust for an HTTPS endpoint, beside the system's (a private
    /// CA, as production MinIO often has); default: $AWS_CA_BUNDLE, as the AWS CLI reads.
    #[arg(long, value_name = "PATH")]
    pub ca_bundle: Option<PathBuf>,

    /// Seconds a request to the store may take to answer, and a body to send its next
    /// bytes (uploads: one more second per MiB sent). One that takes longer fails (EIO),
    /// and the store counts as unreachable: later requests fail at once, with one try
    /// every 2 s, until it answers again.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub request_timeout: f64,
}

impl StoreArgs {
    /// The object client's settings.
    pub fn client_config(&self) -> anyhow::Result<S3ClientConfig> {
        if !(self.request_timeout.is_finite() && (1.0..=3600.0).contains(&self.request_timeout)) {
            bail!("--request-timeout must be between 1 and 3600 seconds");
        }
        let mut client = S3ClientConfig::new(&self.bucket);
        client.request_timeout = Duration::from_secs_f64(self.request_timeout);
        client.read_timeout = client.request_timeout;
        client.force_path_style = self.endpoint_url.is_some();
        client.endpoint_url = self.endpoint_url.clone();
        client.region = self.region.clone();
        let bundle = self
            .ca_bundle
            .clone()
            .or_else(|| std::env::var_os("AWS_CA_BUNDLE").map(PathBuf::from));
        client.ca_bundle = bundle.map(|path| read_ca_bundle(&path)).transpose()?;
        Ok(client)
    }
}

/// A `--retention-days` or `--default` value: days or `keep`.
pub(crate) fn parse_tier(text: &str) -> Result<Tier, String> {
    match Tier::parse(text) {
        Some(Tier::Latest) | None => Err(format!(
            "{text:?} is not a retention tier: days from 1 to {} or `keep`",
            crate::retention::MAX_DAYS
        )),
        Some(tier) => Ok(tier),
    }
}

/// The certificates of a CA bundle file, checked to hold at least one.
fn read_ca_bundle(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading the CA bundle {}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        bail!("the CA bundle {} holds no PEM certificate", path.display());
    }
    Ok(pem)
}

/// Validated settings for every layer.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Canonical mount point.
    pub mountpoint: PathBuf,
    /// Directory of the embedded store, if any.
    pub local: Option<PathBuf>,
    /// Object client.
    pub client: S3ClientConfig,
    /// Namespace.
    pub namespace: NamespaceConfig,
    /// Filesystem.
    pub fs: FsConfig,
    /// Read engine.
    pub read: ReadConfig,
    /// Retention policy.
    pub retention: RetentionConfig,
    /// Write engine; `None` on a read-only mount.
    pub write: Option<WriteConfig>,
    /// Object cache.
    pub cache: CacheConfig,
    /// FUSE session.
    pub session: SessionConfig,
    /// Stay in the foreground.
    pub foreground: bool,
    /// Log filter directive.
    pub log_level: String,
    /// Where to serve metrics, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The mounting user's ids; the daemon shows files as theirs.
fn current_ids() -> (u32, u32) {
    let meta = std::fs::metadata("/proc/self");
    meta.map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.uid(), m.gid())
    })
    .unwrap_or((0, 0))
}

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its type (`fuse`, `fuse.rgrid`, `ext4`, ...).
    pub fstype: String,
    /// What is mounted (for FUSE, the fsname).
    pub source: String,
}

/// The mounts of this process's namespace, from /proc/self/mountinfo (empty if it
/// cannot be read).
pub fn mount_table() -> Vec<MountEntry> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().filter_map(mount_entry).collect()
}

/// A mountinfo line: the mount point is its fifth field; type and source follow ` - `.
fn mount_entry(line: &str) -> Option<MountEntry> {
    let mountpoint = unescape_mountinfo(line.split(' ').nth(4)?);
    let mut after = line.split(" - ").nth(1)?.split(' ');
    Some(MountEntry {
        mountpoint: PathBuf::from(mountpoint),
        fstype: after.next()?.to_owned(),
        source: unescape_mountinfo(after.next()?),
    })
}

/// Whether `path` is a mount point now (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    mount_table().iter().any(|m| m.mountpoint == path)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_mountpoint(path: &Path) -> anyhow::Result<PathBuf> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("mount point {}", path.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", path.display());
    }
    let canonical = path
        .canonicalize()
        .with_context(|| format!("mount point {}", path.display()))?;
    if is_mounted(&canonical) {
        bail!(
            "{} is already a mount point; unmount it first",
            canonical.display()
        );
    }
    Ok(canonical)
}

fn normalize_prefix(prefix: Option<&str>) -> anyhow::Result<String> {
    let prefix = prefix.unwrap_or("").trim_start_matches('/');
    if prefix.split('/').any(|s| s == "." || s == "..") {
        bail!("--prefix {prefix:?} has a '.' or '..' segment");
    }
    Ok(match prefix {
        "" => String::new(),
        p if p.ends_with('/') => p.to_owned(),
        p => format!("{p}/"),
    })
}

/// The namespace of the bucket view (`--prefix`) or of the work view (`--work`).
fn namespace_config(args: &MountArgs, ttl: Duration) -> anyhow::Result<NamespaceConfig> {
    let (root_prefix, inputs_prefix) = match &args.work {
        Some(id) => {
            if check_name(id).is_err() || id.contains('/') {
                bail!("--work {id:?} is not an execution id (one path segment)");
            }
            (
                format!("executions/{id}/outputs/"),
                Some(format!("executions/{id}/inputs/")),
            )
        }
        None => (normalize_prefix(args.prefix.as_deref())?, None),
    };
    Ok(NamespaceConfig {
        root_prefix,
        inputs_prefix,
        metadata_ttl: ttl,
        listing_heads: args.listing_heads,
    })
}

const MIB: u64 = 1 << 20;

fn read_config(args: &MountArgs) -> anyhow::Result<ReadConfig> {
    if args.read_part_size == 0 || args.read_part_size > 4096 {
        bail!("--read-part-size must be between 1 and 4096 MiB");
    }
    if args.max_read_window < args.read_part_size {
        bail!("--max-read-window must be at least --read-part-size");
    }
    if args.max_read_memory < args.read_part_size * 2 {
        bail!("--max-read-memory must hold at least two read parts");
    }
    if !(1..=16).contains(&args.fuse_request_size) {
        bail!("--fuse-request-size must be between 1 and 16 MiB");
    }
    Ok(ReadConfig {
        part_size: args.read_part_size * MIB,
        request_size: args.fuse_request_size * MIB,
        kernel_readahead: kernel_readahead(args.fuse_request_size * MIB),
        max_window: args.max_read_window * MIB,
        max_memory: args.max_read_memory * MIB,
        ..ReadConfig::default()
    })
}

/// The mount's kernel read-ahead for requests of `request_size`: four of them in flight,
/// and at least 4 MiB.
fn kernel_readahead(request_size: u64) -> u64 {
    (4 * request_size).max(4 * MIB)
}

fn default_cache_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("rgrid-mount");
    }
    match (current_ids().0, std::env::var_os("HOME")) {
        (0, _) | (_, None) => PathBuf::from("/var/cache/rgrid"),
        (_, Some(home)) => PathBuf::from(home).join(".cache/rgrid-mount"),
    }
}

/// The cache directory of this store and bucket: one each, so that a journal never
/// replays into another bucket.
fn store_cache_dir(args: &MountArgs) -> PathBuf {
    cache_dir_of(
        &args.store,
        args.local.as_deref(),
        args.cache_dir.as_deref(),
    )
}

/// The cache directory of one store and bucket: under `base` (default: the user's), a
/// directory named after them.
pub fn cache_dir_of(store: &StoreArgs, local: Option<&Path>, base: Option<&Path>) -> PathBuf {
    let name = local.map(|d| d.display().to_string());
    let name = name
        .or_else(|| store.endpoint_url.clone())
        .unwrap_or_else(|| "s3".into());
    let id: String = format!("{}@{name}", store.bucket)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = base.map_or_else(default_cache_dir, Path::to_path_buf);
    base.join(id)
}

/// Largest default `--max-cache-size`.
const MAX_DEFAULT_CACHE: u64 = 10 << 30;

/// The smaller of [`MAX_DEFAULT_CACHE`] and a fifth of the free space where the cache
/// lives (the cache directory, or the nearest ancestor that exists yet).
fn default_max_cache(cache_dir: &Path) -> u64 {
    let free = cache_dir
        .ancestors()
        .find_map(|dir| free_bytes(dir).ok())
        .unwrap_or(0);
    (free / 5).min(MAX_DEFAULT_CACHE)
}

fn write_config(args: &MountArgs, cache_dir: PathBuf) -> anyhow::Result<Option<WriteConfig>> {
    if args.read_only {
        return Ok(None);
    }
    if !(5..=5120).contains(&args.upload_part_size) {
        bail!("--upload-part-size must be between 5 and 5120 MiB");
    }
    if !(1..=1024).contains(&args.upload_concurrency) {
        bail!("--upload-concurrency must be between 1 and 1024");
    }
    let mode = match args.compress {
        CompressArg::Never => CompressMode::Never,
        CompressArg::Auto => CompressMode::Auto,
        CompressArg::Always => CompressMode::Always,
    };
    Ok(Some(WriteConfig {
        compress: CompressPolicy {
            mode,
            threshold: args.compress_threshold.saturating_mul(MIB),
        },
        part_size: args.upload_part_size * MIB,
        part_limits: crate::upload::S3_LIMITS,
        concurrency: args.upload_concurrency,
        retry_interval: Duration::from_secs(5),
        tags: [(TIER_TAG.to_owned(), args.retention_days.tag_value())].into(),
        write_back: args.write_back,
        max_pending: match args.max_pending {
            Some(0) => bail!("--max-pending must be at least 1 MiB"),
            Some(mib) => mib.saturating_mul(MIB),
            None => default_max_pending(&cache_dir),
        },
        cache_dir,
    }))
}

/// Least default `--max-pending`.
const MIN_DEFAULT_PENDING: u64 = 256 * MIB;

/// A tenth of the free space where spools live (the cache directory, or the nearest
/// ancestor that exists yet), at least [`MIN_DEFAULT_PENDING`].
fn default_max_pending(cache_dir: &std::path::Path) -> u64 {
    let free = cache_dir
        .ancestors()
        .find_map(|dir| free_bytes(dir).ok())
        .unwrap_or(0);
    (free / 10).max(MIN_DEFAULT_PENDING)
}

#[allow(unsafe_code)]
fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out pointer for statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// What a mount of `args` is of; the endpoint of `--local` is known once its store runs.
fn identity(args: &MountArgs) -> MountIdentity {
    let mut view = match (&args.work, &args.prefix) {
        (Some(id), _) => format!("work {id}"),
        (None, Some(prefix)) => format!("prefix {prefix}"),
        (None, None) => "bucket".to_owned(),
    };
    if args.read_only {
        view.push_str(", read-only");
    }
    MountIdentity {
        endpoint: args
            .store
            .endpoint_url
            .clone()
            .unwrap_or_else(|| "AWS S3".into()),
        bucket: args.store.bucket.clone(),
        view,
    }
}

impl MountConfig {
    /// Validates `args`: the mount point must be an existing, unmounted directory.
    pub fn from_args(args: MountArgs) -> anyhow::Result<MountConfig> {
        let Some(mountpoint) = &args.mountpoint else {
            bail!("no mount point given");
        };
        let mountpoint = check_mountpoint(mountpoint)?;
        if !(args.metadata_ttl.is_finite() && args.metadata_ttl >= 0.0) {
            bail!("--metadata-ttl must be a number of seconds >= 0");
        }
        let ttl = Duration::from_secs_f64(args.metadata_ttl);
        let namespace = namespace_config(&args, ttl)?;
        if !(args.expiry_warning.is_finite() && args.expiry_warning >= 0.0) {
            bail!("--expiry-warning must be a number of days >= 0");
        }
        let retention = RetentionConfig {
            tier: args.retention_days,
            warning: Duration::from_secs_f64(args.expiry_warning * 86_400.0),
            // Rules installed while mounted count within a minute.
            refresh: Duration::from_secs(60),
        };
        let mut read = read_config(&args)?;
        let cache_dir = store_cache_dir(&args);
        let write = write_config(&args, cache_dir.clone())?;
        let mut client = args.store.client_config()?;
        client.force_path_style |= args.local.is_some();
        // A body silent for as long as a response may take is as dead as a silent response.
        read.stall_timeout = client.read_timeout;
        read.etag_md5 = !args.no_etag_check;
        read.verify_first = args.verify_first;
        let (uid, gid) = current_ids();
        let identity = identity(&args);
        let (file_mode, dir_mode) = if args.read_only {
            (0o444, 0o555)
        } else {
            (0o644, 0o755)
        };
        let ownership = Ownership {
            uid: args.uid.unwrap_or(uid),
            gid: args.gid.unwrap_or(gid),
            file_mode,
            dir_mode,
        };
        Ok(MountConfig {
            mountpoint,
            local: args.local,
            namespace,
            retention,
            fs: FsConfig {
                ownership,
                decode_dir: cache_dir.join("decode"),
                direct_io: args.direct_io,
                control_uid: uid,
                identity,
                share_link_ttl: Duration::from_secs(args.share_link_ttl),
                passthrough: !args.no_passthrough,
                // The daemon sets it from its descriptor limit once raised.
                max_open_files: usize::MAX,
            },
            read,
            write,
            cache: CacheConfig {
                max_size: match args.max_cache_size {
                    Some(mib) => mib.saturating_mul(MIB),
                    None => default_max_cache(&cache_dir),
                },
                dir: cache_dir.clone(),
            },
            client,
            session: SessionConfig {
                allow_other: args.allow_other,
                attr_ttl: ttl,
                threads: 4,
                read_only: args.read_only,
                request_size: (args.fuse_request_size * MIB) as u32,
                kernel_readahead: kernel_readahead(args.fuse_request_size * MIB),
            },
            foreground: args.foreground,
            log_level: args.log_level,
            metrics_addr: args.metrics_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix(None).unwrap(), "");
        assert_eq!(
            normalize_prefix(Some("/executions")).unwrap(),
            "executions/"
        );
        assert_eq!(normalize_prefix(Some("a/b/")).unwrap(), "a/b/");
        assert!(normalize_prefix(Some("a/../b")).is_err());
    }

    #[test]
    fn mountinfo_lines() {
        let line = r"45 27 0:40 / /tmp/with\040space rw,nosuid - fuse rgrid rw,user_id=0";
        let entry = mount_entry(line).unwrap();
        assert_eq!(entry.mountpoint, Path::new("/tmp/with space"));
        assert_eq!(
            (entry.fstype.as_str(), entry.source.as_str()),
            ("fuse", "rgrid")
        );
        assert_eq!(mount_entry("garbage"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    /// The mount helper's option table is the mount's flags, no more and no fewer, and
    /// a switch there is a switch here.
    #[test]
    fn every_mount_flag_has_a_mount_option() {
        use clap::CommandFactory;
        use rgrid_mount_helper::options::{Takes, FLAGS, NOT_OPTIONS};
        let command = MountArgs::command();
        let mut ours = Vec::new();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let option = long.replace('-', "_");
            if NOT_OPTIONS.contains(&option.as_str()) {
                continue;
            }
            let takes = match arg.get_action().takes_values() {
                true => Takes::Value,
                false => Takes::Nothing,
            };
            let helper = FLAGS.iter().find(|(name, _)| *name == option);
            assert_eq!(helper.map(|(_, t)| *t), Some(takes), "--{long}");
            ours.push(option);
        }
        for (name, _) in FLAGS {
            assert!(ours.iter().any(|o| o == name), "{name} is not a flag");
        }
    }
}
