//! Bucket lifecycle configuration of the embedded store, as MinIO keeps it: stored as
//! given (`.rgrid-store/lifecycle.json`), and applied only as S3's `x-amz-expiration`
//! header on HEAD and GET. Nothing is deleted: the store is for demos and tests, and a
//! deletion would be a surprise there.

use std::path::PathBuf;
use std::time::SystemTime;

use s3s::dto::{self, Timestamp, TimestampFormat};
use s3s::{s3_error, S3Result};

use super::{internal_err, DiskStore, INTERNAL};
use crate::object::ExpiryRule;

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
            .filter_map(prefix_rule)
            .filter(|rule| key.starts_with(&rule.prefix))
            .filter_map(|rule| Some((rule.expires_at(mtime)?, rule.id)))
            .min_by_key(|(at, _)| *at)?;
        let mut date = Vec::new();
        Timestamp::from(at)
            .format(TimestampFormat::HttpDate, &mut date)
            .ok()?;
        let date = String::from_utf8(date).ok()?;
        Some(format!("expiry-date=\"{date}\", rule-id=\"{id}\""))
    }
}

/// An enabled expiration rule that selects by prefix alone.
fn prefix_rule(rule: &dto::LifecycleRule) -> Option<ExpiryRule> {
    if rule.status.as_str() != dto::ExpirationStatus::ENABLED {
        return None;
    }
    let prefix = match &rule.filter {
        Some(f) if f.tag.is_some() || f.and.is_some() => return None,
        Some(f) if f.object_size_greater_than.is_some() || f.object_size_less_than.is_some() => {
            return None
        }
        Some(f) => f.prefix.clone().unwrap_or_default(),
        None => rule.prefix.clone().unwrap_or_default(),
    };
    let expiration = rule.expiration.as_ref()?;
    Some(ExpiryRule {
        id: rule.id.clone().unwrap_or_default(),
        prefix,
        days: expiration.days.and_then(|d| u32::try_from(d).ok()),
        date: expiration.date.as_ref().and_then(system_time),
    })
}

/// s3s converts only into its timestamps; out goes through epoch seconds.
fn system_time(t: &Timestamp) -> Option<SystemTime> {
    let mut text = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut text).ok()?;
    let seconds: f64 = std::str::from_utf8(&text).ok()?.parse().ok()?;
    let since = std::time::Duration::try_from_secs_f64(seconds).ok()?;
    Some(SystemTime::UNIX_EPOCH + since)
}
