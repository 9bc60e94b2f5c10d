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
    use proptest::prelude::*;

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

    /// An HTTP date, or text shaped like one with its fields mangled.
    fn date_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,34}",
            "(Mon|Fri|Xyz), [0-9]{2} (Jan|Dec|Foo) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,4})? GMT",
        ]
    }

    /// An `x-amz-expiration` or `x-amz-restore` value: anything, and S3's shapes with
    /// any date and quoting in them.
    fn lifecycle_header() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            (date_text(), "\\PC{0,6}")
                .prop_map(|(date, id)| format!("expiry-date=\"{date}\", rule-id=\"{id}\"")),
            ("(true|false|\\PC{0,4})", date_text())
                .prop_map(|(on, date)| format!("ongoing-request=\"{on}\", expiry-date=\"{date}\"")),
            "(expiry-date|ongoing-request)=\"?\\PC{0,12}",
        ]
    }

    /// A rule as a store may send it: any status, no filter, a plain one or an `And`,
    /// a tag, the old rule-level prefix, sizes and days of any sign, any date.
    fn sdk_rule() -> impl Strategy<Value = LifecycleRule> {
        (
            prop_oneof![
                Just("Enabled".to_owned()),
                Just("Disabled".to_owned()),
                "\\PC{0,8}"
            ],
            proptest::option::of("\\PC{0,8}"),
            proptest::option::of("\\PC{0,8}"),
            0u8..3,
            proptest::option::of("\\PC{0,8}"),
            proptest::collection::vec(("\\PC{0,6}", "\\PC{0,6}"), 0..3),
            (
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i64>()),
            ),
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(
                |(status, id, old_prefix, shape, prefix, tags, (larger, smaller), days, date)| {
                    let tags: Vec<Tag> = tags
                        .into_iter()
                        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
                        .collect();
                    let filter = match shape {
                        0 => None,
                        1 => Some(
                            LifecycleRuleFilter::builder()
                                .set_prefix(prefix)
                                .set_tag(tags.first().cloned())
                                .set_object_size_greater_than(larger)
                                .set_object_size_less_than(smaller)
                                .build(),
                        ),
                        _ => Some(
                            LifecycleRuleFilter::builder()
                                .and(
                                    LifecycleRuleAndOperator::builder()
                                        .set_prefix(prefix)
                                        .set_tags(Some(tags))
                                        .set_object_size_greater_than(larger)
                                        .set_object_size_less_than(smaller)
                                        .build(),
                                )
                                .build(),
                        ),
                    };
                    let expiration = LifecycleExpiration::builder()
                        .set_days(days)
                        .set_date(date.map(DateTime::from_secs))
                        .build();
                    #[allow(deprecated)]
                    let rule = LifecycleRule::builder().set_prefix(old_prefix);
                    rule.set_id(id)
                        .set_filter(filter)
                        .status(ExpirationStatus::from(status.as_str()))
                        .expiration(expiration)
                        .build()
                        .expect("the status is set")
                },
            )
    }

    /// One of our rules: any filter, days and date the SDK can carry, at least one of them.
    fn our_rule() -> impl Strategy<Value = ExpiryRule> {
        let bound = proptest::option::of(0..=i64::MAX as u64);
        let filter = (
            "\\PC{0,8}",
            proptest::collection::btree_map("\\PC{1,6}", "\\PC{0,6}", 0..3),
            bound.clone(),
            bound,
        )
            .prop_map(|(prefix, tags, larger_than, smaller_than)| RuleFilter {
                prefix,
                tags,
                larger_than,
                smaller_than,
            });
        let date = (any::<bool>(), 0u64..(1 << 40), 0u32..1_000_000_000).prop_map(
            |(before, secs, nanos)| {
                let d = std::time::Duration::new(secs, nanos);
                if before {
                    SystemTime::UNIX_EPOCH - d
                } else {
                    SystemTime::UNIX_EPOCH + d
                }
            },
        );
        (
            "\\PC{0,8}",
            filter,
            proptest::option::of(0..=i32::MAX as u32),
            proptest::option::of(date),
        )
            .prop_map(|(id, filter, days, date)| ExpiryRule {
                id,
                filter,
                days,
                date,
            })
            .prop_filter("a rule expires by days or a date", |r| {
                r.days.is_some() || r.date.is_some()
            })
    }

    proptest! {
        /// Any `x-amz-expiration` or `x-amz-restore` text parses or not, never a panic; a
        /// restore's readable-until is the date the same text's expiry-date gives.
        #[test]
        fn lifecycle_headers_of_any_text_parse_or_not(text in lifecycle_header()) {
            let expiry = expiry_date(&text);
            match restore_state(&text) {
                Some(Restore::Until(at)) => prop_assert_eq!(Some(at), expiry),
                Some(Restore::Ongoing) => {
                    prop_assert_eq!(quoted(&text, "ongoing-request"), Some("true"));
                }
                None => {}
            }
        }

        /// Every HTTP date of years 1 to 9999 reads back as the time it names.
        #[test]
        fn http_dates_read_back(secs in -62_135_596_800i64..=253_402_300_799) {
            let date = DateTime::from_secs(secs);
            let text = date.fmt(DateTimeFormat::HttpDate).expect("years 1 to 9999 format");
            let header = format!("expiry-date=\"{text}\", rule-id=\"r\"");
            let expected = SystemTime::try_from(date).ok();
            prop_assert!(expected.is_some());
            prop_assert_eq!(expiry_date(&header), expected);
        }

        /// Any rule a store may send maps to ours or to none, never a panic; one that maps
        /// is an enabled expiration with its days, and writing it back gives the same rule.
        #[test]
        fn any_sdk_rule_maps_and_writes_back(rule in sdk_rule()) {
            let Some(ours) = expiry_rule(&rule) else {
                return Ok(());
            };
            prop_assert_eq!(rule.status(), &ExpirationStatus::Enabled);
            let days = rule.expiration().and_then(|e| e.days());
            prop_assert_eq!(ours.days, days.and_then(|d| u32::try_from(d).ok()));
            prop_assert!(ours.days.is_some() || ours.date.is_some());
            let back = lifecycle_rule(&ours).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(expiry_rule(&back), Some(ours));
        }

        /// Any rule of ours the SDK can carry goes to the SDK and back unchanged.
        #[test]
        fn our_rules_round_trip_through_the_sdk(rule in our_rule()) {
            let sdk = lifecycle_rule(&rule).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(expiry_rule(&sdk), Some(rule));
        }
    }
}
