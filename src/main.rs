//! The `rgrid-mount` binary: parse arguments, start logging, the runtime, the embedded
//! store if asked, check the bucket, mount, and serve until unmounted. Errors become one
//! line on stderr and exit code 1.

use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use rgrid_mount::cache::ObjectCache;
use rgrid_mount::config::{
    cache_dir_of, is_mounted, CacheAction, Command as CliCommand, MountArgs, MountConfig,
    RetentionAction,
};
use rgrid_mount::fs::RgridFs;
use rgrid_mount::fuse::{self, FuseAdapter};
use rgrid_mount::namespace::Namespace;
use rgrid_mount::object::{GuardedClient, MeteredClient, ObjectClient, ObjectError, S3Client};
use rgrid_mount::readahead::ReadEngine;
use rgrid_mount::retention::{self, Retention};
use rgrid_mount::service;
use rgrid_mount::store::EmbeddedStore;
use rgrid_mount::upload::{Uploader, WriteConfig};

fn main() -> ExitCode {
    share_one_allocator_arena();
    let args = match MountArgs::try_parse() {
        Ok(args) => args,
        Err(e) => return usage_error(e),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rgrid-mount: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A bad command line: one line on stderr (help and version print as usual).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or("invalid arguments");
    let line = line.trim_start_matches("error: ");
    eprintln!("rgrid-mount: {line} (see rgrid-mount --help)");
    ExitCode::from(2)
}

fn run(args: MountArgs) -> anyhow::Result<()> {
    if let Some(command) = args.command {
        return run_command(command);
    }
    let mut config = MountConfig::from_args(args)?;
    if !config.foreground {
        return detach(&config);
    }
    rgrid_mount::logging::init(&config.log_level)?;
    config.fs.max_open_files = open_files_cap(raise_open_file_limit());
    // Named, so that `top -H` and profiles tell the daemon's threads from others.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("rgrid-worker")
        .enable_all()
        .build()?;
    let mut client_config = config.client.clone();
    // Kept alive for as long as the mount is served.
    let _store = match &config.local {
        Some(dir) => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let store = runtime
                .block_on(EmbeddedStore::start(dir, &client_config.bucket, addr))
                .with_context(|| format!("starting the embedded store over {}", dir.display()))?;
            tracing::info!(endpoint = %store.endpoint, dir = %dir.display(), "embedded store running");
            client_config.endpoint_url = Some(store.endpoint.clone());
            config.fs.identity.endpoint =
                format!("{} (embedded, {})", store.endpoint, dir.display());
            client_config.credentials = Some((store.access_key.clone(), store.secret_key.clone()));
            Some(store)
        }
        None => None,
    };
    let s3 = runtime
        .block_on(S3Client::new(client_config.clone()))
        .map_err(|e| startup_error(e, &client_config))?;
    let s3: Arc<dyn ObjectClient> = Arc::new(s3);
    let mut client: Arc<dyn ObjectClient> =
        Arc::new(GuardedClient::new(s3, client_config.request_timeout));
    if let Some(addr) = config.metrics_addr {
        let _runtime = runtime.enter();
        rgrid_mount::metrics::serve(addr)?;
        client = Arc::new(MeteredClient::new(client));
        tracing::info!("serving metrics on http://{addr}/metrics");
    }
    runtime
        .block_on(client.check_bucket())
        .map_err(|e| startup_error(e, &client_config))?;
    let retention = Arc::new(Retention::new(client.clone(), config.retention));
    let _refresh = runtime.block_on(retention.start());
    let namespace = Namespace::new(client.clone(), retention.clone(), config.namespace.clone());
    let engine = ReadEngine::new(client.clone(), config.read.clone());
    let uploader = match &config.write {
        Some(write) => Some(start_uploader(&runtime, client.clone(), write.clone())?),
        None => None,
    };
    let cache = ObjectCache::open(&config.cache).unwrap_or_else(|e| {
        let dir = config.cache.dir.display();
        tracing::warn!("no object cache: opening it in {dir} failed: {e}");
        None
    });
    let fs = Arc::new(RgridFs::new(
        namespace,
        engine,
        uploader.clone(),
        cache,
        retention,
        config.fs,
    ));
    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone(), &config.session);
    service::announce_when_live(
        runtime.handle(),
        config.mountpoint.clone(),
        uploader.clone(),
    );
    let served = fuse::serve(adapter, &config.mountpoint, &config.session)
        .with_context(|| format!("mounting {}", config.mountpoint.display()));
    service::stopping("unmounted; finishing uploads");
    runtime.block_on(fs.release_all());
    let left = match uploader {
        Some(uploader) => drain_uploads(&runtime, &uploader),
        None => 0,
    };
    runtime.block_on(fs.finish());
    served?;
    if left > 0 {
        anyhow::bail!("{left} uploads still pending; the next mount of this store finishes them");
    }
    Ok(())
}

/// How long an unmount waits for uploads that are still pending.
const UNMOUNT_UPLOAD_WAIT: Duration = Duration::from_secs(30);

/// After unmount: waits (bounded) for every pending upload, write-back queue and retries
/// alike, then names what is left; returns how many.
fn drain_uploads(runtime: &tokio::runtime::Runtime, uploader: &Uploader) -> usize {
    let synced = runtime
        .block_on(async { tokio::time::timeout(UNMOUNT_UPLOAD_WAIT, uploader.sync()).await });
    let pending = uploader.pending();
    if pending.is_empty() {
        return 0;
    }
    match synced {
        Err(_) => tracing::warn!("pending uploads not finished after {UNMOUNT_UPLOAD_WAIT:?}"),
        Ok(failed) => {
            for failure in failed {
                tracing::warn!(key = %failure.key, "upload failed: {}", failure.error);
            }
        }
    }
    for entry in &pending {
        tracing::warn!(key = %entry.key, spool = %entry.spool.display(), "still pending");
    }
    pending.len()
}

/// Read parts are allocated and freed by the megabyte on many threads. glibc gives each
/// thread its own arena, and each arena keeps the parts it freed: RSS grew to 210 MiB for
/// a 96 MiB budget. One arena reuses them (130 MiB, same throughput); forcing them to
/// mmap instead costs a third of the throughput in page faults (measured, 1 GiB reads).
/// Four arenas measured no faster for random 4 KiB reads over 8,000 reads a run (0.59-0.66
/// of the raw client with one, 0.64-0.67 with four) and took 223 MiB for 4 readers.
#[allow(unsafe_code)]
fn share_one_allocator_arena() {
    // SAFETY: mallopt only tunes the allocator and is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Every file open through the mount holds a descriptor here (its spool, or its cache
/// entry): the soft limit, often 1,024, goes up to the hard one, as file servers do, so
/// that a thousand files open at once are fine. Returns the limit in force, `None` if
/// it cannot be read.
#[allow(unsafe_code)]
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!("open file limit unknown: {e}");
        return None;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(limit = limit.rlim_cur, "open file limit not raised: {e}");
        return Some(limit.rlim_cur);
    }
    tracing::debug!(limit = raised.rlim_cur, "open file limit");
    Some(raised.rlim_cur)
}

/// Descriptors kept for the daemon's own use (connections, the journal, cache fills)
/// below its limit.
const DAEMON_DESCRIPTORS: u64 = 256;

/// Descriptors an open file may hold: a writer's spool, and the same spool opened again
/// for the parts it streams.
const DESCRIPTORS_PER_FILE: u64 = 2;

/// How many files may be open through the mount with a descriptor limit of `limit`
/// (none known: no cap of ours). At least a quarter of the limit.
fn open_files_cap(limit: Option<u64>) -> usize {
    let Some(limit) = limit else {
        return usize::MAX;
    };
    let shared = limit.saturating_sub(DAEMON_DESCRIPTORS) / DESCRIPTORS_PER_FILE;
    usize::try_from(shared.max(limit / 4)).unwrap_or(usize::MAX)
}

/// `rgrid-mount status|sync|retention`.
fn run_command(command: CliCommand) -> anyhow::Result<()> {
    let done = match command {
        CliCommand::Status {
            mountpoint,
            json,
            watch,
        } => rgrid_mount::status::status(mountpoint, json, watch)?,
        CliCommand::Sync { mountpoint } => rgrid_mount::status::sync(&mountpoint)?,
        CliCommand::Retention { action } => {
            retention_command(action)?;
            true
        }
        CliCommand::Cache {
            action:
                CacheAction::Clear {
                    cache_dir,
                    local,
                    store,
                },
        } => {
            let dir = cache_dir_of(&store, local.as_deref(), cache_dir.as_deref());
            let freed = rgrid_mount::cache::clear(&dir)
                .with_context(|| format!("clearing the object cache in {}", dir.display()))?;
            println!("cleared {}: {} MiB freed", dir.display(), freed >> 20);
            true
        }
    };
    if !done {
        std::process::exit(1);
    }
    Ok(())
}

/// `rgrid-mount retention show|set|apply`.
fn retention_command(action: RetentionAction) -> anyhow::Result<()> {
    rgrid_mount::logging::init("warn")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (RetentionAction::Show { store }
    | RetentionAction::Set { store, .. }
    | RetentionAction::Apply { store, .. }) = &action;
    let config = store.client_config()?;
    let client = runtime
        .block_on(S3Client::new(config.clone()))
        .map_err(|e| startup_error(e, &config))?;
    let failed = |e: ObjectError| {
        match e {
        ObjectError::Unsupported { message, .. } => anyhow::anyhow!(
            "the store at {} does not support bucket lifecycle configuration or tagging ({message})",
            config.endpoint_url.as_deref().unwrap_or("AWS S3")
        ),
        other => startup_error(other, &config),
    }
    };
    match action {
        RetentionAction::Show { .. } => {
            let rules = runtime.block_on(client.expiry_rules()).map_err(failed)?;
            print!("{}", retention::describe(&rules));
        }
        RetentionAction::Set { tiers, prefix, .. } => {
            let rules = retention::tier_rules(&prefix, &tiers);
            let replaced = |id: &str| retention::replaced_by_tiers(id, &prefix);
            runtime
                .block_on(client.update_expiry_rules(&replaced, rules.clone()))
                .map_err(failed)?;
            print!("{}", retention::describe(&rules));
        }
        RetentionAction::Apply {
            default,
            keep_latest,
            prefix,
            ..
        } => {
            let plan = retention::apply::ApplyPlan {
                prefix,
                default,
                keep_latest,
            };
            let client: Arc<dyn ObjectClient> = Arc::new(client);
            let report = runtime
                .block_on(retention::apply::apply(client, &plan))
                .map_err(failed)?;
            print!("{report}");
            if !report.failed.is_empty() {
                anyhow::bail!("{} objects could not be tagged", report.failed.len());
            }
        }
    }
    Ok(())
}

/// The write engine: finishes what the journal lists (a crash or an outage interrupted it)
/// before the mount comes up, then keeps retrying whatever fails later.
fn start_uploader(
    runtime: &tokio::runtime::Runtime,
    client: Arc<dyn ObjectClient>,
    config: WriteConfig,
) -> anyhow::Result<Arc<Uploader>> {
    let dir = config.cache_dir.clone();
    let uploader = Uploader::new(client, config)
        .with_context(|| format!("preparing the cache directory {}", dir.display()))?;
    if let Err(e) = runtime.block_on(uploader.finish_moves()) {
        tracing::warn!(
            "an interrupted directory rename is not finished yet; retrying in the background: {e}"
        );
    }
    let left = runtime.block_on(uploader.finish_pending());
    if left > 0 {
        tracing::warn!(
            "{left} uploads still pending in {}; retrying in the background",
            dir.display()
        );
    }
    let _guard = runtime.enter();
    uploader.spawn_retries();
    Ok(uploader)
}

/// One clear line for the start-up failures a user can fix.
fn startup_error(e: ObjectError, client: &rgrid_mount::object::S3ClientConfig) -> anyhow::Error {
    let endpoint = client.endpoint_url.as_deref().unwrap_or("AWS S3");
    let bucket = &client.bucket;
    match e {
        ObjectError::Unavailable { message, .. } | ObjectError::Unreachable { message, .. }
            if message.contains("certificate") =>
        {
            anyhow::anyhow!("the TLS certificate of {endpoint} does not verify (a private CA needs --ca-bundle): {message}")
        }
        ObjectError::Unavailable { message, .. } | ObjectError::Unreachable { message, .. } => {
            anyhow::anyhow!("cannot reach the store at {endpoint}: {message}")
        }
        ObjectError::NoSuchBucket { .. } => {
            anyhow::anyhow!("bucket {bucket} does not exist at {endpoint}")
        }
        ObjectError::AccessDenied { message, .. } => {
            anyhow::anyhow!("the store at {endpoint} refused access to bucket {bucket} (check credentials): {message}")
        }
        other => anyhow::anyhow!("checking bucket {bucket} at {endpoint}: {other}"),
    }
}

/// Where a detached daemon logs: a file per mount point in the temp dir.
fn detached_log_path(mountpoint: &Path) -> PathBuf {
    let name = mountpoint
        .to_string_lossy()
        .trim_matches('/')
        .replace('/', "_");
    std::env::temp_dir().join(format!("rgrid-mount-{name}.log"))
}

/// Runs the daemon as a detached child (same arguments plus `--foreground`, logging to a
/// file) and returns once its mount is up, or fails with the child's own error message.
fn detach(config: &MountConfig) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the rgrid-mount executable")?;
    let log_path = detached_log_path(&config.mountpoint);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening the log file {}", log_path.display()))?;
    let start = log.metadata()?.len();
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the mount daemon")?;
    loop {
        if is_mounted(&config.mountpoint) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let mut file = std::fs::File::open(&log_path)?;
            file.seek(SeekFrom::Start(start))?;
            let mut message = String::new();
            file.read_to_string(&mut message)?;
            let last = message
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("rgrid-mount: ");
            let last = if last.is_empty() {
                "the mount daemon exited"
            } else {
                last
            };
            bail!("{last} ({status}; log: {})", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
