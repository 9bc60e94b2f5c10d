//! Lifecycle rules and the lifecycle headers of HEAD (`x-amz-expiration`,
//! `x-amz-restore`), between the SDK's types and ours.

use std::time::SystemTime;

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use aws_sdk_s3::types::{
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleAndOperator,
    LifecycleRuleFilter, Tag,
};

use crate::object::{ExpiryRule, ObjectError, Restore, RuleFilter, Tags};

/// An HTTP date as S3 writes them in headers: `Fri, 23 Dec 2012 00:00:00 GMT`.
fn http_date(text: &str) -> Option<SystemTime> {
    let date = DateTime::from_str(text, DateTimeFormat::HttpDate).ok()?;
    SystemTime::try_from(date).ok()
}

/// The quoted value of `name` in a header of `name="value"` pairs.
fn quoted<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = header.split_once(&format!("{name}=\""))?;
    Some(rest.split_once('"')?.0)
}

/// The expiry date of an `x-amz-expiration` header:
/// `expiry-date="Fri, 23 Dec 2012 00:00:00 GMT", rule-id="..."`.
pub(super) fn expiry_date(header: &str) -> Option<SystemTime> {
    http_date(quoted(header, "expiry-date")?)
}

/// An `x-amz-restore` header: `ongoing-request="true"`, or `ongoing-request="false",
/// expiry-date="..."` once the restored copy is readable.
pub(super) fn restore_state(header: &str) -> Option<Restore> {
    match quoted(header, "ongoing-request")? {
        "true" => Some(Restore::Ongoing),
        _ => Some(Restore::Until(
            quoted(header, "expiry-date").and_then(http_date)?,
        )),
    }
}

fn tags_of(tags: &[Tag]) -> Tags {
    tags.iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

fn size_bound(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok())
}

/// The filter of an SDK rule: its `Filter` (a prefix, a tag, sizes, or their `And`), or
/// the deprecated rule-level `Prefix` many tools still set.
fn filter_of(rule: &LifecycleRule) -> RuleFilter {
    #[allow(deprecated)]
    let Some(f) = rule.filter() else {
        return RuleFilter {
            prefix: rule.prefix().unwrap_or("").to_owned(),
            ..RuleFilter::default()
        };
    };
    if let Some(and) = f.and() {
        return RuleFilter {
            prefix: and.prefix().unwrap_or("").to_owned(),
            tags: tags_of(and.tags()),
            larger_than: size_bound(and.object_size_greater_than()),
            smaller_than: size_bound(and.object_size_less_than()),
        };
    }
    RuleFilter {
        prefix: f.prefix().unwrap_or("").to_owned(),
        tags: tags_of(f.tag().into_iter().cloned().collect::<Vec<_>>().as_slice()),
        larger_than: size_bound(f.object_size_greater_than()),
        smaller_than: size_bound(f.object_size_less_than()),
    }
}

/// Our view of an SDK rule, if it is an enabled expiration.
pub(super) fn expiry_rule(rule: &LifecycleRule) -> Option<ExpiryRule> {
    if *rule.status() != ExpirationStatus::Enabled {
        return None;
    }
    let expiration = rule.expiration()?;
    let days = expiration.days().and_then(|d| u32::try_from(d).ok());
    let date = expiration
        .date()
        .and_then(|d| SystemTime::try_from(*d).ok());
    (days.is_some() || date.is_some()).then(|| ExpiryRule {
        id: rule.id().unwrap_or("").to_owned(),
        filter: filter_of(rule),
        days,
        date,
    })
}

fn invalid(rule: &ExpiryRule, e: impl std::fmt::Display) -> ObjectError {
    super::other(rule.id.as_str(), e)
}

/// The SDK's filter for ours: a bare prefix when that is all it holds, else `And`.
fn sdk_filter(rule: &ExpiryRule) -> Result<LifecycleRuleFilter, ObjectError> {
    let f = &rule.filter;
    let bound = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    if f.tags.is_empty() && f.larger_than.is_none() && f.smaller_than.is_none() {
        return Ok(LifecycleRuleFilter::builder().prefix(&f.prefix).build());
    }
    let tags = f
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(rule, e))?;
    let and = LifecycleRuleAndOperator::builder()
        .prefix(&f.prefix)
        .set_tags(Some(tags))
        .set_object_size_greater_than(bound(f.larger_than))
        .set_object_size_less_than(bound(f.smaller_than))
        .build();
    Ok(LifecycleRuleFilter::builder().and(and).build())
}

/// The SDK rule for ours.
pub(super) fn lifecycle_rule(rule: &ExpiryRule) -> Result<LifecycleRule, ObjectError> {
    let mut expiration = LifecycleExpiration::builder();
    if let Some(days) = rule.days {
        expiration = expiration.days(i32::try_from(days).unwrap_or(i32::MAX));
    }
    if let Some(date) = rule.date {
        expiration = expiration.date(DateTime::from(date));
    }
    LifecycleRule::builder()
        .id(&rule.id)
        .status(ExpirationStatus::Enabled)
        .filter(sdk_filter(rule)?)
        .expiration(expiration.build())
        .build()
        .map_err(|e| invalid(rule, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_headers_parse() {
        let date = "Fri, 23 Dec 2012 00:00:00 GMT";
        let at = http_date(date).unwrap();
        let expiration = format!("expiry-date=\"{date}\", rule-id=\"r\"");
        assert_eq!(expiry_date(&expiration), Some(at));
        assert_eq!(
            restore_state("ongoing-request=\"true\""),
            Some(Restore::Ongoing)
        );
        let done = format!("ongoing-request=\"false\", expiry-date=\"{date}\"");
        assert_eq!(restore_state(&done), Some(Restore::Until(at)));
        assert_eq!(restore_state("garbage"), None);
        assert_eq!(expiry_date("expiry-date=\"not a date\""), None);
    }

    #[test]
    fn rules_round_trip_through_the_sdk() {
        let rule = ExpiryRule {
            id: "t".into(),
            filter: RuleFilter {
                prefix: "executions/".into(),
                tags: [("rgrid-retention".to_owned(), "30d".to_owned())].into(),
                larger_than: Some(10),
                smaller_than: None,
            },
            days: Some(30),
            date: None,
        };
        let sdk = lifecycle_rule(&rule).unwrap();
        assert_eq!(expiry_rule(&sdk), Some(rule.clone()));
        let plain = ExpiryRule {
            filter: RuleFilter {
                prefix: "p/".into(),
                ..RuleFilter::default()
            },
            ..rule
        };
        let sdk = lifecycle_rule(&plain).unwrap();
        assert!(sdk.filter().unwrap().and().is_none());
        assert_eq!(expiry_rule(&sdk), Some(plain));
    }
}
