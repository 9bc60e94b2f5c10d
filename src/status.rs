//! `rgrid-mount status` and `rgrid-mount sync`: the client side of a mount's control
//! channel (the reserved xattrs `user.rgrid.status` and `user.rgrid.sync` of its root,
//! see `fs/control.rs`). Status finds this machine's rgrid mounts in the mount table,
//! asks each with a deadline, and draws every upload as a progress bar (indicatif) or,
//! with `--json`, prints one object for scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::fs::{MountStatus, SyncOutcome, UploadStatus, STATUS, SYNC};

/// How long a mount may take to answer a status before it is reported as not answering.
const STATUS_DEADLINE: Duration = Duration::from_secs(2);

/// One mount as status reports it.
#[derive(Debug, Serialize)]
struct Report {
    mountpoint: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<MountStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The rgrid mounts of this machine, from the mount table: type `fuse.rgrid` where
/// the subtype is kept, else type `fuse` with the source the daemon names `rgrid`.
pub fn rgrid_mounts() -> Vec<PathBuf> {
    crate::config::mount_table()
        .into_iter()
        .filter(|m| m.fstype == "fuse.rgrid" || (m.fstype == "fuse" && m.source == "rgrid"))
        .map(|m| m.mountpoint)
        .collect()
}

/// Reads control attribute `name` of `mountpoint`, within `deadline` if one is given:
/// a mount whose daemon hangs must not hang its status.
fn ask(
    mountpoint: &Path,
    name: &'static str,
    deadline: Option<Duration>,
) -> anyhow::Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = mountpoint.to_owned();
    // A thread stuck in a hung mount ends with the process.
    std::thread::spawn(move || {
        let _ = tx.send(xattr::get(&path, name));
    });
    let answer = match deadline {
        Some(deadline) => rx
            .recv_timeout(deadline)
            .map_err(|_| anyhow::anyhow!("not answering within {deadline:?}"))?,
        None => rx.recv().context("the query thread died")?,
    };
    match answer {
        Ok(Some(value)) => Ok(value),
        Ok(None) => bail!("not an rgrid mount of this version (no {name})"),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            bail!("not yours: only its owner and root may ask")
        }
        Err(e) => Err(e).with_context(|| format!("reading {name}")),
    }
}

fn report(mountpoint: PathBuf) -> Report {
    let status = ask(&mountpoint, STATUS, Some(STATUS_DEADLINE)).and_then(|v| {
        serde_json::from_slice::<MountStatus>(&v).context("a status that does not parse")
    });
    match status {
        Ok(status) => Report {
            mountpoint,
            status: Some(status),
            error: None,
        },
        Err(e) => Report {
            mountpoint,
            status: None,
            error: Some(format!("{e:#}")),
        },
    }
}

/// `rgrid-mount status`: exit status 1 if a mount did not answer.
pub fn status(mountpoint: Option<PathBuf>, json: bool, watch: bool) -> anyhow::Result<bool> {
    let mounts = match mountpoint {
        // Not canonicalized: a stat of a hung mount would hang here.
        Some(m) => vec![std::path::absolute(&m).with_context(|| format!("{}", m.display()))?],
        None => rgrid_mounts(),
    };
    if json {
        let reports: Vec<Report> = mounts.into_iter().map(report).collect();
        let ok = reports.iter().all(|r| r.error.is_none());
        println!("{}", serde_json::json!({ "mounts": reports }));
        return Ok(ok);
    }
    if mounts.is_empty() {
        println!("no rgrid mounts");
        return Ok(true);
    }
    let screen = Screen::new();
    loop {
        let reports: Vec<Report> = mounts.iter().cloned().map(report).collect();
        screen.draw(&reports);
        if !watch {
            return Ok(reports.iter().all(|r| r.error.is_none()));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `rgrid-mount sync`: true when every upload pending at the call is in the store.
pub fn sync(mountpoint: &Path) -> anyhow::Result<bool> {
    let value = ask(mountpoint, SYNC, None)?;
    let outcome: SyncOutcome =
        serde_json::from_slice(&value).context("a sync answer that does not parse")?;
    if outcome.failed.is_empty() {
        println!("every upload of {} is in the store", mountpoint.display());
        return Ok(true);
    }
    for failure in &outcome.failed {
        eprintln!("{}: {}", failure.key, failure.error);
    }
    eprintln!(
        "{} uploads of {} are not in the store (kept, and retried)",
        outcome.failed.len(),
        mountpoint.display()
    );
    Ok(false)
}

/// Where status draws: progress bars on a terminal, plain lines elsewhere.
struct Screen {
    bars: Option<MultiProgress>,
}

impl Screen {
    fn new() -> Screen {
        use std::io::IsTerminal;
        let bars = std::io::stdout()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Screen { bars }
    }

    fn draw(&self, reports: &[Report]) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.clear();
                for report in reports {
                    let _ = bars.println(header(report));
                    for upload in report.status.iter().flat_map(|s| &s.uploads) {
                        let bar = bars.add(upload_bar(upload));
                        bar.abandon();
                    }
                }
            }
            None => {
                for report in reports {
                    println!("{}", header(report));
                    for upload in report.status.iter().flat_map(|s| &s.uploads) {
                        println!("  {}", upload_line(upload));
                    }
                }
            }
        }
    }
}

fn header(report: &Report) -> String {
    let mount = report.mountpoint.display();
    let Some(s) = &report.status else {
        return format!(
            "{mount}: {}",
            report.error.as_deref().unwrap_or("no answer")
        );
    };
    let c = &s.counters;
    let m = &s.read_memory;
    format!(
        "{mount}: {} bucket {} ({}), up {}s\n  reads {} ({} B), writes {} ({} B), store errors {}; read cache {}/{} B, read buffers {}/{} B; {} uploads listed{}{}",
        s.identity.endpoint,
        s.identity.bucket,
        s.identity.view,
        s.uptime_secs,
        c.reads,
        c.read_bytes,
        c.writes,
        c.write_bytes,
        c.store_errors,
        m.cache_bytes,
        m.cache_capacity,
        m.buffers_bytes,
        m.buffers_budget,
        s.uploads.len(),
        match s.uploads_unlisted {
            0 => String::new(),
            n => format!(" (+{n} more)"),
        },
        match &s.object_cache {
            None => String::new(),
            Some(o) => format!(
                "\n  object cache {}/{} B: {} hits, {} misses, {} B served, {} fills, {} evictions",
                o.bytes, o.capacity, o.hits, o.misses, o.bytes_served, o.fills, o.evictions
            ),
        }
    )
}

fn rate_and_eta(u: &UploadStatus) -> String {
    let eta = u
        .eta_secs
        .map_or(String::new(), |s| format!(", eta {s:.0}s"));
    format!("{}/s{eta}", indicatif::HumanBytes(u.rate as u64))
}

fn upload_line(u: &UploadStatus) -> String {
    let state = match &u.error {
        Some(e) => format!("failed: {e} (spool {})", u.spool),
        None => u.state.clone(),
    };
    format!(
        "{} {state} {}/{} B {}",
        u.key,
        u.sent,
        u.size,
        rate_and_eta(u)
    )
}

fn upload_bar(u: &UploadStatus) -> ProgressBar {
    let bar = ProgressBar::new(u.size.max(u.sent)).with_position(u.sent);
    let style = ProgressStyle::with_template("  {msg} [{bar:30}] {bytes}/{total_bytes} {prefix}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(rate_and_eta(u));
    let state = match &u.error {
        Some(e) => format!("failed: {e}"),
        None => u.state.clone(),
    };
    bar.set_message(format!("{} {state}", u.key));
    bar
}
