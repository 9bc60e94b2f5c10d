//! Retention: when the store will delete an object. First match wins:
//! 1. the object's own `x-amz-meta-rgrid-expires-at`;
//! 2. the `x-amz-expiration` header S3 and MinIO send when a lifecycle rule applies;
//! 3. the bucket's lifecycle rules (read at mount, refreshed in the background) applied
//!    to LastModified, the earliest matching rule winning as in S3;
//! 4. `--retention-days` after LastModified.
//!
//! 1 and 2 come with HEAD only; 3 and 4 need nothing but a listing, so a listing decides
//! with them and asks HEAD only about the objects they call expired.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::artifact;
use crate::object::{ExpiryRule, ObjectClient, ObjectError, ObjectHeaders};

const DAY: u64 = 86_400;

/// The rule `rgrid-mount retention set` writes for `prefix`: one per prefix, so that an
/// execution's own retention sits beside the bucket-wide one.
pub fn retention_rule(prefix: &str, days: u32) -> ExpiryRule {
    ExpiryRule {
        id: format!("rgrid-retention:{prefix}"),
        prefix: prefix.to_owned(),
        days: Some(days),
        date: None,
    }
}

/// The rules as `rgrid-mount retention show` prints them, one per line.
pub fn describe(rules: &[ExpiryRule]) -> String {
    if rules.is_empty() {
        return "no expiration rules: objects are kept until deleted\n".into();
    }
    rules
        .iter()
        .map(|r| {
            let when = match (r.days, r.date) {
                (Some(days), _) => format!("{days} days after they are written"),
                (None, Some(date)) => format!("at {}", artifact::format_time(date)),
                (None, None) => "never".into(),
            };
            format!("{}: objects under {:?} expire {when}\n", r.id, r.prefix)
        })
        .collect()
}

/// Retention settings.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Days an object lives when no rule or metadata says otherwise.
    pub days: u32,
    /// Opening a file this close to its expiry logs a warning.
    pub warning: Duration,
    /// How often the bucket's lifecycle rules are read again.
    pub refresh: Duration,
}

/// Where an expiry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirySource {
    /// `x-amz-meta-rgrid-expires-at`.
    Metadata,
    /// `x-amz-expiration`.
    Header,
    /// A lifecycle rule of the bucket.
    Lifecycle,
    /// `--retention-days`.
    Default,
}

/// An object's expiry and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// When the store deletes the object.
    pub at: SystemTime,
    /// Which rule said so.
    pub source: ExpirySource,
}

/// The retention policy of one bucket.
#[derive(Debug)]
pub struct Retention {
    client: Arc<dyn ObjectClient>,
    config: RetentionConfig,
    rules: RwLock<Arc<Vec<ExpiryRule>>>,
}

impl Retention {
    /// A policy with no lifecycle rules known yet.
    pub fn new(client: Arc<dyn ObjectClient>, config: RetentionConfig) -> Retention {
        Retention {
            client,
            config,
            rules: RwLock::default(),
        }
    }

    /// Reads the bucket's lifecycle rules; on failure the previous ones stay in force.
    pub async fn load(&self) -> Result<usize, ObjectError> {
        let rules = self.client.expiry_rules().await?;
        let n = rules.len();
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        Ok(n)
    }

    /// Reads the rules now, then every `refresh` in a background task.
    pub async fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut told = self.reload(false).await;
        let retention = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(retention.config.refresh).await;
                told = retention.reload(told).await;
            }
        })
    }

    /// Reads the rules, logging the outcome; a server without lifecycle support is told
    /// once (`told`). Returns whether it has been told.
    async fn reload(&self, told: bool) -> bool {
        match self.load().await {
            Ok(n) => tracing::debug!("{n} lifecycle expiration rules in force"),
            Err(ObjectError::Unsupported { .. }) if told => {}
            Err(e @ ObjectError::Unsupported { .. }) => {
                let days = self.config.days;
                tracing::info!("no bucket lifecycle ({e}); objects are kept {days} days");
                return true;
            }
            Err(e) => tracing::warn!("reading the bucket lifecycle failed: {e}"),
        }
        told
    }

    /// The rules in force now.
    fn rules(&self) -> Arc<Vec<ExpiryRule>> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The expiry that a listing can tell (sources 3 and 4).
    pub fn policy(&self, key: &str, last_modified: SystemTime) -> Expiry {
        let rules = self.rules();
        let by_rule = rules
            .iter()
            .filter(|r| key.starts_with(&r.prefix))
            .filter_map(|r| r.expires_at(last_modified))
            .min();
        match by_rule {
            Some(at) => Expiry {
                at,
                source: ExpirySource::Lifecycle,
            },
            None => Expiry {
                at: last_modified
                    .checked_add(Duration::from_secs(u64::from(self.config.days) * DAY))
                    .unwrap_or(last_modified),
                source: ExpirySource::Default,
            },
        }
    }

    /// The expiry of an object, with its HEAD headers when known (all four sources).
    pub fn expiry(
        &self,
        key: &str,
        last_modified: SystemTime,
        headers: Option<&ObjectHeaders>,
    ) -> Expiry {
        if let Some(at) = headers.and_then(artifact::expires_at) {
            return Expiry {
                at,
                source: ExpirySource::Metadata,
            };
        }
        if let Some(at) = headers.and_then(|h| h.expiration) {
            return Expiry {
                at,
                source: ExpirySource::Header,
            };
        }
        self.policy(key, last_modified)
    }

    /// Days an object is kept: as set on it, else by the rule that applies to it.
    pub fn days(&self, key: &str, headers: Option<&ObjectHeaders>) -> u32 {
        if let Some(days) = headers.and_then(artifact::retention_days) {
            return days;
        }
        let rules = self.rules();
        rules
            .iter()
            .filter(|r| key.starts_with(&r.prefix))
            .filter_map(|r| r.days)
            .min()
            .unwrap_or(self.config.days)
    }

    /// How close to expiry an open warns.
    pub fn warning(&self) -> Duration {
        self.config.warning
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::MemoryClient;

    fn at(s: &str) -> SystemTime {
        artifact::parse_time(s).unwrap()
    }

    async fn retention(rules: Vec<ExpiryRule>) -> Retention {
        let client = MemoryClient::new();
        for rule in rules {
            client.put_expiry_rule(rule).await.unwrap();
        }
        let config = RetentionConfig {
            days: 30,
            warning: Duration::from_secs(2 * DAY),
            refresh: Duration::from_secs(600),
        };
        let retention = Retention::new(Arc::new(client), config);
        retention.load().await.unwrap();
        retention
    }

    fn rule(id: &str, prefix: &str, days: Option<u32>, date: Option<&str>) -> ExpiryRule {
        ExpiryRule {
            id: id.into(),
            prefix: prefix.into(),
            days,
            date: date.map(at),
        }
    }

    #[tokio::test]
    async fn first_source_that_knows_wins() {
        let r = retention(vec![rule("logs", "executions/", Some(7), None)]).await;
        let modified = at("2026-11-01T15:20:00Z");
        let mut headers = ObjectHeaders::default();

        let e = r.expiry("executions/e/outputs/x", modified, Some(&headers));
        assert_eq!(
            (e.at, e.source),
            (at("2026-11-09T00:00:00Z"), ExpirySource::Lifecycle)
        );
        let e = r.expiry("other/x", modified, None);
        assert_eq!(
            (e.at, e.source),
            (at("2026-12-01T15:20:00Z"), ExpirySource::Default)
        );

        headers.expiration = Some(at("2026-11-10T00:00:00Z"));
        let e = r.expiry("executions/e/outputs/x", modified, Some(&headers));
        assert_eq!(
            (e.at, e.source),
            (at("2026-11-10T00:00:00Z"), ExpirySource::Header)
        );

        let own = (
            artifact::EXPIRES_AT.to_owned(),
            "2027-01-01T00:00:00Z".to_owned(),
        );
        headers.user_metadata.extend([own]);
        let e = r.expiry("executions/e/outputs/x", modified, Some(&headers));
        assert_eq!(
            (e.at, e.source),
            (at("2027-01-01T00:00:00Z"), ExpirySource::Metadata)
        );
    }

    #[tokio::test]
    async fn the_earliest_matching_rule_wins_and_dates_apply_as_given() {
        let r = retention(vec![
            rule("long", "", Some(90), None),
            rule("short", "executions/e1/", Some(1), None),
            rule(
                "cutoff",
                "executions/e2/",
                None,
                Some("2026-11-05T00:00:00Z"),
            ),
        ])
        .await;
        let midnight = at("2026-11-01T00:00:00Z");
        assert_eq!(
            r.policy("executions/e1/x", midnight).at,
            at("2026-11-02T00:00:00Z")
        );
        assert_eq!(
            r.policy("executions/e2/x", midnight).at,
            at("2026-11-05T00:00:00Z")
        );
        assert_eq!(
            r.policy("elsewhere", midnight).at,
            at("2027-01-30T00:00:00Z")
        );
        assert_eq!(r.days("executions/e1/x", None), 1);
        assert_eq!(r.days("elsewhere", None), 90);
    }
}
