//! The daemon's word to its supervisor over systemd's notify protocol (the `sd-notify`
//! crate): `READY=1` once the mount is in the mount table and answers a stat, `STATUS=`
//! lines with the uploads pending, `STOPPING=1` when it starts to unmount. Without
//! `NOTIFY_SOCKET` (not started by systemd as `Type=notify`) each call does nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::runtime::Handle;

use crate::upload::Uploader;

/// How often STATUS is brought up to date while the mount runs.
const STATUS_EVERY: Duration = Duration::from_secs(5);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("systemd notify: {e}");
    }
}

/// The status line of a mount with `pending` uploads.
fn status_line(mountpoint: &std::path::Path, pending: usize) -> String {
    match pending {
        0 => format!("mounted at {}", mountpoint.display()),
        n => format!("mounted at {}, {n} uploads pending", mountpoint.display()),
    }
}

/// Sends READY=1 once `mountpoint` is mounted and answering, then keeps STATUS current
/// with the uploads `uploader` has pending. Runs beside the session loop, which answers
/// the stat it makes.
pub fn announce_when_live(runtime: &Handle, mountpoint: PathBuf, uploader: Option<Arc<Uploader>>) {
    runtime.spawn(async move {
        wait_until_live(&mountpoint).await;
        let pending = || uploader.as_ref().map_or(0, |u| u.pending().len());
        let status = status_line(&mountpoint, pending());
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        tracing::info!("{status}");
        loop {
            tokio::time::sleep(STATUS_EVERY).await;
            send(&[NotifyState::Status(&status_line(&mountpoint, pending()))]);
        }
    });
}

/// Returns once `mountpoint` is in the mount table and a stat of it is answered. An
/// async loop, so that a session that ends first (an unmount right away) leaves nothing
/// behind that the runtime's shutdown would wait for.
async fn wait_until_live(mountpoint: &std::path::Path) {
    loop {
        if crate::config::is_mounted(mountpoint) && tokio::fs::metadata(mountpoint).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The mount starts to go away: `why` says how.
pub fn stopping(why: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(why)]);
}
