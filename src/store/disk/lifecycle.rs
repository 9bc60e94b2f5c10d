//! Bucket lifecycle of the embedded store, as MinIO has it: the configuration stored as
//! given (`.rgrid-store/lifecycle.json`), each object's expiry sent as S3's
//! `x-amz-expiration` on HEAD and GET, and a background pass ([`DiskStore::expire`])
//! that deletes the objects past their rule, so that `--local` behaves as production
//! does. Rules select by prefix, tags and size, and the earliest one wins, as in S3; the
//! evaluation is the mount's own ([`crate::object::RuleFilter`]).

use std::path::PathBuf;
use std::time::SystemTime;

use s3s::dto::{self, Timestamp, TimestampFormat};
use s3s::{s3_error, S3Result};

use super::{internal_err, DiskStore, Entry, INTERNAL};
use crate::object::{ExpiryRule, RuleFilter, Tags};

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

    /// The enabled expiration rules of the bucket (none without a configuration).
    fn expiry_rules(&self, bucket: &str) -> Vec<ExpiryRule> {
        let Ok(config) = self.lifecycle(bucket) else {
            return Vec::new();
        };
        config.rules.iter().filter_map(expiry_rule).collect()
    }

    /// The `x-amz-expiration` value of `entry`: the earliest rule that selects it.
    pub(super) fn expiration(&self, bucket: &str, entry: &Entry) -> Option<String> {
        let (at, id) = earliest(&self.expiry_rules(bucket), entry)?;
        // A rule of a million days is a date HTTP cannot write: the last one it can.
        let at = at.min(crate::artifact::last_time());
        let mut date = Vec::new();
        Timestamp::from(at)
            .format(TimestampFormat::HttpDate, &mut date)
            .ok()?;
        let date = String::from_utf8(date).ok()?;
        let id = url_encoded(&id);
        Some(format!("expiry-date=\"{date}\", rule-id=\"{id}\""))
    }

    /// One lifecycle pass over every bucket: deletes each object whose rule has passed
    /// (only the version the rule judged: one written since stays). Returns how many.
    pub fn expire(&self) -> usize {
        let buckets: Vec<String> = {
            let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
            buckets.keys().cloned().collect()
        };
        let now = SystemTime::now();
        let mut deleted = 0;
        for bucket in buckets {
            let rules = self.expiry_rules(&bucket);
            if rules.is_empty() {
                continue;
            }
            let Ok(index) = self.bucket(&bucket) else {
                continue;
            };
            let is_due = |e: &Entry| earliest(&rules, e).is_some_and(|(at, _)| at <= now);
            let due: Vec<String> = {
                let index = index.read().unwrap_or_else(|e| e.into_inner());
                index
                    .values()
                    .filter(|e| is_due(e))
                    .map(|e| e.key.clone())
                    .collect()
            };
            for key in due {
                // Judged again under the write lock: a new version, a tag set to `keep`
                // or a copy onto itself since the scan keeps the object.
                match self.remove(&bucket, &key, is_due) {
                    Ok(true) => deleted += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(bucket, key, "lifecycle delete failed: {e:?}"),
                }
            }
        }
        deleted
    }
}

/// When the earliest of `rules` that selects `entry` deletes it, and that rule's id.
fn earliest(rules: &[ExpiryRule], entry: &Entry) -> Option<(SystemTime, String)> {
    let tags: &Tags = &entry.tags;
    rules
        .iter()
        .filter(|r| r.filter.selects(&entry.key, entry.size, Some(tags)) == Some(true))
        .filter_map(|r| Some((r.expires_at(entry.mtime)?, r.id.clone())))
        .min_by_key(|(at, _)| *at)
}

/// `x-amz-expiration`'s rule-id is URL-encoded, as S3 writes it.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn tags_of(set: Option<&dto::TagSet>) -> Tags {
    set.into_iter()
        .flatten()
        .map(|t| {
            let key = t.key.clone().unwrap_or_default();
            (key, t.value.clone().unwrap_or_default())
        })
        .collect()
}

fn size_bound(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok())
}

/// Which objects a stored rule selects: its filter (a prefix, a tag, sizes, or their
/// `And`), or the rule-level prefix older clients set.
fn filter_of(rule: &dto::LifecycleRule) -> RuleFilter {
    #[allow(deprecated)]
    let Some(f) = &rule.filter
    else {
        return RuleFilter {
            prefix: rule.prefix.clone().unwrap_or_default(),
            ..RuleFilter::default()
        };
    };
    if let Some(and) = &f.and {
        return RuleFilter {
            prefix: and.prefix.clone().unwrap_or_default(),
            tags: tags_of(and.tags.as_ref()),
            larger_than: size_bound(and.object_size_greater_than),
            smaller_than: size_bound(and.object_size_less_than),
        };
    }
    let tag = f.tag.as_ref().map(|t| vec![t.clone()]);
    RuleFilter {
        prefix: f.prefix.clone().unwrap_or_default(),
        tags: tags_of(tag.as_ref()),
        larger_than: size_bound(f.object_size_greater_than),
        smaller_than: size_bound(f.object_size_less_than),
    }
}

/// A stored rule as the mount's model has it, if it is an enabled expiration.
fn expiry_rule(rule: &dto::LifecycleRule) -> Option<ExpiryRule> {
    if rule.status.as_str() != dto::ExpirationStatus::ENABLED {
        return None;
    }
    let expiration = rule.expiration.as_ref()?;
    let days = expiration.days.and_then(|d| u32::try_from(d).ok());
    let date = expiration.date.as_ref().and_then(system_time);
    (days.is_some() || date.is_some()).then(|| ExpiryRule {
        id: rule.id.clone().unwrap_or_default(),
        filter: filter_of(rule),
        days,
        date,
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
