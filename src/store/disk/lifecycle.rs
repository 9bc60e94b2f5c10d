//! Bucket lifecycle configuration of the embedded store, as MinIO keeps it: stored as
//! given (`.rgrid-store/lifecycle.json`), and applied only as S3's `x-amz-expiration`
//! header on HEAD and GET. Nothing is deleted: the store is for demos and tests, and a
//! deletion would be a surprise there.

use std::path::PathBuf;
use std::time::SystemTime;

use s3s::dto::{self, Timestamp, TimestampFormat};
use s3s::{s3_error, S3Result};

use super::{internal_err, DiskStore, INTERNAL};
use crate::artifact;

impl DiskStore {
    fn lifecycle_path(&self, bucket: &str) -> S3Result<PathBuf> {
        self.bucket(bucket)?;
        Ok(self.root.join(bucket).join(INTERNAL).join("lifecycle.json"))
    }

    /// The bucket's configuration; NoSuchLifecycleConfiguration when it has none.
    pub(super) fn lifecycle(&self, bucket: &str) -> S3Result<dto::BucketLifecycleConfiguration> {
        let path = self.lifecycle_path(bucket)?;
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(s3_error!(NoSuchLifecycleConfiguration));
            }
            Err(e) => return Err(internal_err(e)),
        };
        serde_json::from_slice(&text).map_err(internal_err)
    }

    /// Replaces the bucket's configuration (`None` deletes it).
    pub(super) fn set_lifecycle(
        &self,
        bucket: &str,
        config: Option<&dto::BucketLifecycleConfiguration>,
    ) -> S3Result<()> {
        let path = self.lifecycle_path(bucket)?;
        match config {
            Some(config) => {
                // Whole or not at all: a crash mid-write must not leave a broken file.
                let text = serde_json::to_vec(config).map_err(internal_err)?;
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, text).map_err(internal_err)?;
                std::fs::rename(&tmp, &path).map_err(internal_err)
            }
            None => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(internal_err(e)),
                _ => Ok(()),
            },
        }
    }

    /// The `x-amz-expiration` value of `key`, last modified at `mtime`: the earliest of the
    /// enabled expiration rules that select it by prefix.
    pub(super) fn expiration(&self, bucket: &str, key: &str, mtime: SystemTime) -> Option<String> {
        let config = self.lifecycle(bucket).ok()?;
        let (at, id) = config
            .rules
            .iter()
            .filter(|rule| prefix_rule(rule).is_some_and(|prefix| key.starts_with(prefix)))
            .filter_map(|rule| {
                Some((
                    expires_at(rule, mtime)?,
                    rule.id.clone().unwrap_or_default(),
                ))
            })
            .min_by_key(|(at, _)| *at)?;
        let mut date = Vec::new();
        Timestamp::from(at)
            .format(TimestampFormat::HttpDate, &mut date)
            .ok()?;
        let date = String::from_utf8(date).ok()?;
        Some(format!("expiry-date=\"{date}\", rule-id=\"{id}\""))
    }
}

/// The prefix of an enabled expiration rule that selects by prefix alone.
fn prefix_rule(rule: &dto::LifecycleRule) -> Option<&str> {
    if rule.status.as_str() != dto::ExpirationStatus::ENABLED {
        return None;
    }
    match &rule.filter {
        Some(f) if f.tag.is_some() || f.and.is_some() => None,
        Some(f) if f.object_size_greater_than.is_some() || f.object_size_less_than.is_some() => {
            None
        }
        Some(f) => Some(f.prefix.as_deref().unwrap_or_default()),
        None => Some(rule.prefix.as_deref().unwrap_or_default()),
    }
}

/// When `rule` deletes an object last modified at `mtime`: its date, or its days counted
/// as S3 counts them.
fn expires_at(rule: &dto::LifecycleRule, mtime: SystemTime) -> Option<SystemTime> {
    let expiration = rule.expiration.as_ref()?;
    if let Some(date) = expiration.date.as_ref() {
        return system_time(date);
    }
    let days = u32::try_from(expiration.days?).ok()?;
    artifact::lifecycle_expiry(mtime, days)
}

/// s3s converts only into its timestamps; out goes through epoch seconds.
fn system_time(t: &Timestamp) -> Option<SystemTime> {
    let mut text = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut text).ok()?;
    let seconds: f64 = std::str::from_utf8(&text).ok()?.parse().ok()?;
    let since = std::time::Duration::try_from_secs_f64(seconds).ok()?;
    Some(SystemTime::UNIX_EPOCH + since)
}
