//! The commands besides mounting: `status`, `sync`, `retention ...`, `cache ...`.

use std::path::PathBuf;

use clap::Subcommand;

use super::{parse_tier, StoreArgs};
use crate::retention::Tier;

/// Commands besides mounting.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Show this machine's rgrid mounts (or one): store, view, uptime, every upload
    /// pending or in flight with its progress, failed uploads, read memory, counters.
    Status {
        /// The mount to show (default: all).
        mountpoint: Option<PathBuf>,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
        /// Redraw every second until interrupted.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// Wait until every upload pending now is in the store; exit 1, naming each file
    /// that failed and why, if any did not get there.
    Sync {
        /// The mount.
        mountpoint: PathBuf,
    },
    /// Show, install or apply the bucket's retention: the tier rules that delete old
    /// artifacts, and the tier tags that choose among them.
    Retention {
        /// What to do.
        #[command(subcommand)]
        action: RetentionAction,
    },
    /// Manage the object cache kept under the cache directory.
    Cache {
        /// What to do.
        #[command(subcommand)]
        action: CacheAction,
    },
}

/// `rgrid-mount cache ...`
#[derive(Debug, Clone, Subcommand)]
pub enum CacheAction {
    /// Empty the object cache of one store and bucket (safe while mounted: the mount
    /// reads from the store again).
    Clear {
        /// The cache directory the mount uses (as `--cache-dir`).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// The embedded store's directory, for a `--local` mount.
        #[arg(long, value_name = "DIR")]
        local: Option<PathBuf>,
        /// Which store.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `rgrid-mount retention ...`
#[derive(Debug, Clone, Subcommand)]
pub enum RetentionAction {
    /// Print the bucket's expiration rules.
    Show {
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Install the retention tiers under a prefix: one lifecycle rule per tier, deleting
    /// objects tagged `rgrid-retention=<N>d` N days after they are written. Our earlier
    /// rules for the prefix are replaced; every other rule stays.
    Set {
        /// Days of each tier (each from 1 to 36525).
        #[arg(long, value_delimiter = ',', default_value = "7,30,90,365",
              value_parser = clap::value_parser!(u32).range(1..=36_525))]
        tiers: Vec<u32>,
        /// Keys the rules apply to.
        #[arg(long, default_value = "executions/")]
        prefix: String,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give every object under a prefix a tier: objects without one get the default, and
    /// with --keep-latest the newest executions are kept whatever their age.
    Apply {
        /// The tier of objects that have none: days or `keep`.
        #[arg(long, value_name = "DAYS|keep", default_value = "30", value_parser = parse_tier)]
        default: Tier,
        /// Keep the objects of the N most recent executions; those of older ones go
        /// back to their tier. Without it, what earlier runs kept stays kept.
        #[arg(long, value_name = "N")]
        keep_latest: Option<usize>,
        /// Keys it looks at.
        #[arg(long, default_value = "executions/")]
        prefix: String,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
}
