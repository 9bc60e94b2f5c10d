//! Retention: when the store deletes an object, and the tiers rgrid asks it for.
//!
//! An object's expiry is what will delete it, and nothing else:
//! 1. the store's `x-amz-expiration` header on HEAD (S3 and MinIO evaluate their own
//!    rules, tags included, and say when);
//! 2. else the bucket's lifecycle rules (read at mount, refreshed in the background) as
//!    S3 evaluates them: prefix, tag and size filters, the earliest matching rule wins;
//! 3. else it does not expire ([`Expiry::Never`]).
//!
//! What rgrid asks for is a tier, kept in the object's tag `rgrid-retention`: `<N>d` or
//! `keep`. `rgrid-mount retention set` installs one lifecycle rule per tier and prefix,
//! filtered on that tag, so changing the tag (PutObjectTagging: no copy, no new version)
//! changes what the store does. `latest` marks the objects of the newest executions,
//! which `retention apply --keep-latest` keeps whatever their age; the tier they return
//! to waits in `rgrid-retention-tier`.

pub mod apply;
mod tiers;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::object::{ExpiryRule, ObjectClient, ObjectError, ObjectHeaders, Tags};

pub use tiers::{describe, replaced_by_tiers, tier_rules, TIER_RULE};

/// The tag that holds an object's tier.
pub const TIER_TAG: &str = "rgrid-retention";
/// The tier an object kept as one of the latest returns to.
pub const RETURN_TAG: &str = "rgrid-retention-tier";

/// A retention tier: how long rgrid asks the store to keep an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Deleted this many days after it was written (LastModified).
    Days(u32),
    /// Kept until deleted by hand.
    Keep,
    /// Kept while its execution is one of the latest (`retention apply --keep-latest`).
    Latest,
}

/// A century: longer retentions are surely a typo.
pub const MAX_DAYS: u32 = 36_525;

impl Tier {
    /// The tier a user names: `90`, `90d` or `keep`.
    pub fn parse(text: &str) -> Option<Tier> {
        let text = text.trim();
        if text == "keep" {
            return Some(Tier::Keep);
        }
        if text == "latest" {
            return Some(Tier::Latest);
        }
        let days: u32 = text.strip_suffix('d').unwrap_or(text).parse().ok()?;
        (1..=MAX_DAYS).contains(&days).then_some(Tier::Days(days))
    }

    /// The tier an object's tags ask for, if any: the value exactly as a rule's tag
    /// filter would match it (`30d`, `keep`, `latest`).
    pub fn of(tags: &Tags) -> Option<Tier> {
        Tier::from_tag(tags.get(TIER_TAG)?)
    }

    /// The tier a tag value names, exactly: S3 matches tag filters byte for byte.
    pub fn from_tag(value: &str) -> Option<Tier> {
        let tier = match value {
            "keep" => Tier::Keep,
            "latest" => Tier::Latest,
            _ => Tier::parse(value.strip_suffix('d')?)?,
        };
        (tier.tag_value() == value).then_some(tier)
    }

    /// The tag value: `30d`, `keep`, `latest`.
    pub fn tag_value(self) -> String {
        self.to_string()
    }

    /// What `user.rgrid.retention_days` shows: the days, `keep`, or `latest` (kept
    /// while its execution is one of the latest, then back on its tier).
    pub fn shown(self) -> String {
        match self {
            Tier::Days(days) => days.to_string(),
            Tier::Keep => "keep".into(),
            Tier::Latest => "latest".into(),
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tier::Days(days) => write!(f, "{days}d"),
            Tier::Keep => f.write_str("keep"),
            Tier::Latest => f.write_str("latest"),
        }
    }
}

/// Retention settings.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// The tier objects written through the mount are tagged with (`--retention-days`).
    pub tier: Tier,
    /// Opening a file this close to its expiry logs a warning.
    pub warning: Duration,
    /// How often the bucket's lifecycle rules are read again.
    pub refresh: Duration,
}

/// Where an expiry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirySource {
    /// `x-amz-expiration`.
    Header,
    /// A lifecycle rule of the bucket.
    Lifecycle,
}

/// When the store deletes an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing deletes it.
    Never,
    /// Deleted at `at`, as `source` says.
    At {
        /// When.
        at: SystemTime,
        /// Who says so.
        source: ExpirySource,
    },
}

/// An object as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Its key.
    pub key: &'a str,
    /// Stored size.
    pub size: u64,
    /// LastModified.
    pub last_modified: SystemTime,
}

/// Why a tier cannot be set on an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    /// The bucket's lifecycle rules could not be read: whether a rule acts on the tier is
    /// not known.
    #[error("the bucket's lifecycle rules could not be read")]
    RulesUnknown,
    /// No tier rule at all: the store would keep the object whatever its tag says.
    #[error("the bucket has no retention tier rules (run `rgrid-mount retention set`)")]
    NoTiers,
    /// Tier rules exist, but none for this tier over this key.
    #[error("no lifecycle rule deletes {key} after {tier}; tiers here: {available}")]
    NoRule {
        /// The object.
        key: String,
        /// The tier asked for.
        tier: Tier,
        /// The tiers that have rules over the key.
        available: String,
    },
}

/// The retention policy of one bucket.
#[derive(Debug)]
pub struct Retention {
    client: Arc<dyn ObjectClient>,
    config: RetentionConfig,
    /// `None` until a read succeeds: rules not read are not "no rules".
    rules: RwLock<Option<Arc<Vec<ExpiryRule>>>>,
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

    /// Reads the bucket's lifecycle rules; on failure the previous ones stay in force. A
    /// server without a lifecycle API has none: nothing there deletes by rule.
    pub async fn load(&self) -> Result<usize, ObjectError> {
        let rules = match self.client.expiry_rules().await {
            Err(ObjectError::Unsupported { .. }) => Ok(Vec::new()),
            other => other,
        };
        let n = rules.as_ref().map_or(0, Vec::len);
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(rules?));
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

    /// Reads the rules, logging the outcome: a failure is warned of once (`told`) until
    /// a read succeeds again. Returns whether a failure is outstanding.
    async fn reload(&self, told: bool) -> bool {
        match self.load().await {
            Ok(n) => tracing::debug!("{n} lifecycle expiration rules in force"),
            Err(e) if told => tracing::debug!("reading the bucket lifecycle failed: {e}"),
            Err(e) => {
                let known = self.rules().is_some();
                let shown = if known {
                    "the last rules read stay"
                } else {
                    "expiry is not shown until it can be"
                };
                tracing::warn!("reading the bucket lifecycle failed ({e}): {shown}");
                return true;
            }
        }
        false
    }

    /// The rules in force now; `None` if they were never read.
    fn rules(&self) -> Option<Arc<Vec<ExpiryRule>>> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The expiry the rules give `object` with tags `tags`; `None` when that depends on
    /// tags not known (a tag-filtered rule could come first).
    fn by_rules(&self, object: Subject<'_>, tags: Option<&Tags>) -> Option<Expiry> {
        let mut earliest: Option<SystemTime> = None;
        let mut doubtful: Option<SystemTime> = None;
        for rule in self.rules()?.iter() {
            let Some(at) = rule.expires_at(object.last_modified) else {
                continue;
            };
            let slot = match rule.filter.selects(object.key, object.size, tags) {
                Some(true) => &mut earliest,
                Some(false) => continue,
                None => &mut doubtful,
            };
            *slot = Some(slot.map_or(at, |t| t.min(at)));
        }
        match (earliest, doubtful) {
            (Some(at), Some(maybe)) if maybe < at => None,
            (None, Some(_)) => None,
            (Some(at), _) => Some(Expiry::At {
                at,
                source: ExpirySource::Lifecycle,
            }),
            (None, None) => Some(Expiry::Never),
        }
    }

    /// Whether a rule that does not look at tags has deleted `object` already (or is
    /// about to): true whatever its tags are, so a listing can tell.
    pub fn past_rules(&self, object: Subject<'_>) -> bool {
        let now = SystemTime::now();
        let Some(rules) = self.rules() else {
            return false;
        };
        rules.iter().any(|rule| {
            rule.filter.selects(object.key, object.size, None) == Some(true)
                && rule
                    .expires_at(object.last_modified)
                    .is_some_and(|at| at <= now)
        })
    }

    /// The expiry of `object`, with its HEAD headers and its tags when known; `None`
    /// when it cannot be told without them.
    pub fn expiry(
        &self,
        object: Subject<'_>,
        headers: Option<&ObjectHeaders>,
        tags: Option<&Tags>,
    ) -> Option<Expiry> {
        if let Some(at) = headers.and_then(|h| h.expiration) {
            return Some(Expiry::At {
                at,
                source: ExpirySource::Header,
            });
        }
        self.by_rules(object, tags)
    }

    /// The tier new objects are tagged with.
    pub fn default_tier(&self) -> Tier {
        self.config.tier
    }

    /// Whether the store acts on `tier` for `key`: `keep` always (no rule deletes it by
    /// its tag), a number of days only if a tier rule for it covers the key.
    pub fn check_tier(&self, key: &str, tier: Tier) -> Result<(), TierError> {
        let rules = self.rules().ok_or(TierError::RulesUnknown)?;
        let tiers: Vec<(Tier, &ExpiryRule)> = rules
            .iter()
            .filter_map(|r| Some((Tier::of(&r.filter.tags)?, r)))
            .collect();
        if tiers.is_empty() {
            return Err(TierError::NoTiers);
        }
        if tier == Tier::Keep {
            return Ok(());
        }
        let over_key: Vec<Tier> = tiers
            .iter()
            .filter(|(_, r)| key.starts_with(&r.filter.prefix))
            .map(|(t, _)| *t)
            .collect();
        if over_key.contains(&tier) {
            return Ok(());
        }
        let available: Vec<String> = over_key.iter().map(Tier::to_string).collect();
        Err(TierError::NoRule {
            key: key.to_owned(),
            tier,
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        })
    }

    /// How close to expiry an open warns.
    pub fn warning(&self) -> Duration {
        self.config.warning
    }
}

#[cfg(test)]
mod tests;
