//! The FUSE session: mount options, the session loop and its threads, and the way a
//! mount ends: unmount or detach on SIGTERM/SIGINT, with the kernel's read-ahead for the
//! mount raised beside the loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fuser::{MountOption, SessionACL, SessionUnmounter};
use tokio::runtime::Handle;
use tracing::{debug, warn};

use super::FuseAdapter;

/// Session settings for the kernel side.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Let users other than the mounting one in.
    pub allow_other: bool,
    /// How long the kernel may cache attributes and entries.
    pub attr_ttl: Duration,
    /// fuser worker threads.
    pub threads: usize,
    /// Mount read-only: the kernel refuses every change (EROFS) before asking us.
    pub read_only: bool,
    /// The largest read or write one FUSE request carries.
    pub request_size: u32,
    /// The mount's kernel read-ahead, in bytes.
    pub kernel_readahead: u64,
}

/// Mounts `adapter` on `mountpoint` and serves it until the mount goes away: `umount`,
/// `fusermount3 -u`, or SIGINT/SIGTERM to this process (which unmount cleanly).
pub fn serve(
    adapter: FuseAdapter,
    mountpoint: &Path,
    config: &SessionConfig,
) -> std::io::Result<()> {
    let runtime = adapter.runtime.clone();
    let mut options = vec![
        MountOption::FSName("rgrid".into()),
        MountOption::Subtype("rgrid".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if config.read_only {
        options.push(MountOption::RO);
    }
    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = options;
    fuse_config.acl = if config.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fuse_config.n_threads = Some(config.threads);
    fuse_config.clone_fd = true;
    raise_max_pages(config.request_size);
    let mut session = fuser::Session::new(adapter, mountpoint, &fuse_config)?;
    runtime.spawn(unmount_on_signal(
        session.unmount_callable(),
        mountpoint.to_owned(),
    ));
    raise_kernel_readahead(&runtime, mountpoint.to_owned(), config.kernel_readahead);
    tracing::info!("mounted");
    session.run()
}

/// Unmounts on SIGTERM or SIGINT, and the session ends. A busy mount (a file open, a
/// shell's working directory inside) is detached instead, as `umount -l` does: it leaves
/// the mount table at once, its open files keep working, and the session ends when the
/// last one is closed, its upload done. Refusing, as a plain unmount does, would leave
/// the daemon deaf to every later signal until systemd kills it with files half written.
async fn unmount_on_signal(mut unmounter: SessionUnmounter, mountpoint: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let shown = mountpoint.display();
    // `gone`: out of the mount table, unmounted or detached.
    let (mut unmount_tried, mut gone) = (false, false);
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if gone {
            tracing::info!("signal received: {shown} is unmounted already; exiting when its last open file is closed");
            continue;
        }
        if !unmount_tried {
            unmount_tried = true;
            tracing::info!("signal received, unmounting {shown}");
            crate::service::stopping("unmounting on signal");
            // The unmount may run fusermount3 and wait for it.
            match tokio::task::block_in_place(|| unmounter.unmount()) {
                Ok(()) => {
                    gone = true;
                    continue;
                }
                Err(e) => warn!("unmount of {shown} failed: {e}"),
            }
        }
        // Busy (a file open, a shell inside), or a detach that failed before: the
        // unmounter has given its mount up, so every later signal tries the detach.
        warn!("detaching {shown}: its open files keep working, and the daemon exits when the last one is closed");
        gone = detach(&mountpoint).await;
    }
}

/// Lazy unmount: `fusermount3 -u -z` (any user), else `umount -l` (root).
async fn detach(mountpoint: &Path) -> bool {
    use tokio::process::Command;
    for (program, flags) in [("fusermount3", ["-u", "-z"]), ("umount", ["-l", "--"])] {
        let outcome = Command::new(program)
            .args(flags)
            .arg(mountpoint)
            .output()
            .await;
        match outcome {
            Ok(out) if out.status.success() => return true,
            Ok(out) => warn!(
                "{program} {}: {}",
                flags.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => debug!("{program}: {e}"),
        }
    }
    false
}

/// The kernel's cap on the pages of one FUSE request, for every FUSE mount (256 unless
/// raised; Linux 6.13 and later make it settable).
const MAX_PAGES_LIMIT: &str = "/proc/sys/fs/fuse/max_pages_limit";

/// Raises the kernel's cap on FUSE request pages so that one request can carry
/// `request_size` bytes (root only; best effort, as gcsfuse does). It is a cap, not a
/// setting: other FUSE mounts keep the sizes they ask for. Never lowered.
fn raise_max_pages(request_size: u32) {
    let wanted = u64::from(request_size).div_ceil(4096);
    let Some(limit) = std::fs::read_to_string(MAX_PAGES_LIMIT)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    else {
        debug!("no {MAX_PAGES_LIMIT}: FUSE requests stay at the kernel's fixed 1 MiB");
        return;
    };
    if limit >= wanted {
        return;
    }
    match std::fs::write(MAX_PAGES_LIMIT, wanted.to_string()) {
        Ok(()) => tracing::info!(
            "raised {MAX_PAGES_LIMIT} from {limit} to {wanted}: one FUSE request carries {} KiB",
            wanted * 4
        ),
        Err(e) => tracing::info!(
            "FUSE requests stay at {} KiB ({MAX_PAGES_LIMIT}: {e})",
            limit * 4
        ),
    }
}

/// Raises the mount's read-ahead through sysfs to `bytes` (root only; best effort; FUSE
/// starts at 128 KiB): fewer, larger requests for sequential readers. It needs a stat of
/// the mount point, which the session answers, so it runs beside the session loop.
fn raise_kernel_readahead(runtime: &Handle, mountpoint: PathBuf, bytes: u64) {
    runtime.spawn_blocking(move || {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(&mountpoint)?.dev();
        let knob = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        std::fs::write(&knob, (bytes >> 10).to_string())
            .inspect_err(|e| debug!("read-ahead left as is ({knob}: {e})"))
    });
}
