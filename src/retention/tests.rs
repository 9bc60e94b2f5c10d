use proptest::prelude::*;

use super::*;
use crate::artifact;
use crate::object::{MemoryClient, RuleFilter};

const DAY: u64 = 86_400;

fn at(s: &str) -> SystemTime {
    artifact::parse_time(s).unwrap()
}

async fn retention(rules: Vec<ExpiryRule>) -> Retention {
    let client = MemoryClient::new();
    client.update_expiry_rules(&|_| false, rules).await.unwrap();
    let config = RetentionConfig {
        tier: Tier::Days(30),
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
        filter: RuleFilter {
            prefix: prefix.into(),
            ..RuleFilter::default()
        },
        days,
        date: date.map(at),
    }
}

fn subject(key: &str, last_modified: SystemTime) -> Subject<'_> {
    Subject {
        key,
        size: 10,
        last_modified,
    }
}

fn lifecycle(s: &str) -> Option<Expiry> {
    Some(Expiry::At {
        at: at(s),
        source: ExpirySource::Lifecycle,
    })
}

#[tokio::test]
async fn the_header_comes_first_then_rules_then_never() {
    let r = retention(vec![rule("logs", "executions/", Some(7), None)]).await;
    let modified = at("2026-11-01T15:20:00Z");
    let mut headers = ObjectHeaders::default();
    let e = r.expiry(
        subject("executions/e/outputs/x", modified),
        Some(&headers),
        None,
    );
    assert_eq!(e, lifecycle("2026-11-09T00:00:00Z"));
    let e = r.expiry(subject("other/x", modified), None, None);
    assert_eq!(e, Some(Expiry::Never), "no rule, no guess");

    headers.expiration = Some(at("2026-11-10T00:00:00Z"));
    let e = r.expiry(
        subject("executions/e/outputs/x", modified),
        Some(&headers),
        None,
    );
    assert_eq!(
        e,
        Some(Expiry::At {
            at: at("2026-11-10T00:00:00Z"),
            source: ExpirySource::Header
        })
    );
}

#[tokio::test]
async fn tier_rules_need_the_tags_and_the_earliest_wins() {
    let mut rules = tier_rules("executions/", &[30, 90]);
    rules.push(rule(
        "cutoff",
        "executions/e2/",
        None,
        Some("2026-11-05T00:00:00Z"),
    ));
    let r = retention(rules).await;
    let midnight = at("2026-11-01T00:00:00Z");
    let tagged = |tier: &str| Tags::from([(TIER_TAG.to_owned(), tier.to_owned())]);
    let e1 = subject("executions/e1/x", midnight);
    assert_eq!(r.expiry(e1, None, None), None, "unknown without tags");
    assert_eq!(
        r.expiry(e1, None, Some(&tagged("90d"))),
        lifecycle("2027-01-30T00:00:00Z")
    );
    assert_eq!(
        r.expiry(e1, None, Some(&tagged("keep"))),
        Some(Expiry::Never)
    );
    assert_eq!(r.expiry(e1, None, Some(&Tags::new())), Some(Expiry::Never));
    // The date rule comes before any tier: known without tags.
    let e2 = subject("executions/e2/x", midnight);
    assert_eq!(r.expiry(e2, None, None), lifecycle("2026-11-05T00:00:00Z"));
    assert!(!r.past_rules(e1));
    assert!(r.past_rules(e2), "past its date whatever its tags");
}

#[tokio::test]
async fn a_tag_rule_that_could_come_first_leaves_the_date_unknown() {
    let mut rules = tier_rules("executions/", &[30]);
    rules.push(rule("all", "executions/", Some(90), None));
    let mut small = rule("small", "executions/", Some(7), None);
    small.filter.smaller_than = Some(5);
    rules.push(small);
    let r = retention(rules).await;
    let midnight = at("2026-11-01T00:00:00Z");
    let e = subject("executions/e/x", midnight);
    assert_eq!(
        r.expiry(e, None, None),
        None,
        "the 30d tier could come first"
    );
    let untagged = Tags::new();
    assert_eq!(
        r.expiry(e, None, Some(&untagged)),
        lifecycle("2027-01-30T00:00:00Z")
    );
    let tiny = Subject { size: 4, ..e };
    assert_eq!(
        r.expiry(tiny, None, None),
        lifecycle("2026-11-08T00:00:00Z")
    );
}

#[tokio::test]
async fn rules_never_read_are_not_no_rules() {
    let client = MemoryClient::new();
    client.fail_next(1);
    let config = RetentionConfig {
        tier: Tier::Days(30),
        warning: Duration::from_secs(2 * DAY),
        refresh: Duration::from_secs(600),
    };
    let r = Retention::new(Arc::new(client), config);
    assert!(r.load().await.is_err());
    let e = subject("executions/e/x", at("2026-11-01T00:00:00Z"));
    assert_eq!(r.expiry(e, None, Some(&Tags::new())), None);
    assert_eq!(
        r.check_tier("executions/e/x", Tier::Keep),
        Err(TierError::RulesUnknown)
    );
    r.load().await.unwrap();
    assert_eq!(r.expiry(e, None, Some(&Tags::new())), Some(Expiry::Never));
}

#[tokio::test]
async fn a_tier_is_accepted_only_where_a_rule_acts_on_it() {
    let none = retention(vec![rule("old", "", Some(30), None)]).await;
    assert_eq!(
        none.check_tier("executions/e/x", Tier::Keep),
        Err(TierError::NoTiers)
    );
    let r = retention(tier_rules("executions/", &[30, 90])).await;
    assert_eq!(r.check_tier("executions/e/x", Tier::Days(90)), Ok(()));
    assert_eq!(r.check_tier("executions/e/x", Tier::Keep), Ok(()));
    let err = r.check_tier("executions/e/x", Tier::Days(45)).unwrap_err();
    assert!(err.to_string().contains("30d, 90d"), "{err}");
    assert!(r.check_tier("other/x", Tier::Days(30)).is_err());
}

#[test]
fn tiers_parse_as_users_write_them() {
    assert_eq!(Tier::parse("90"), Some(Tier::Days(90)));
    assert_eq!(Tier::parse(" 30d\n"), Some(Tier::Days(30)));
    assert_eq!(Tier::parse("keep"), Some(Tier::Keep));
    assert_eq!(Tier::parse("0"), None);
    assert_eq!(Tier::parse("99999999"), None);
    assert_eq!(Tier::Days(7).tag_value(), "7d");
    assert_eq!(Tier::Latest.shown(), "latest");
    assert_eq!(Tier::from_tag("30d"), Some(Tier::Days(30)));
    assert_eq!(Tier::from_tag(" 30d"), None, "S3 matches tags exactly");
    assert_eq!(Tier::from_tag("30"), None);
    assert_eq!(Tier::from_tag("030d"), None);
}

/// Text a tier may be given as: anything, and numbers with and without `d` around the
/// limits, signs and blanks included.
fn tier_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ +\\-0]{0,2}[0-9]{0,12}d{0,2} ?",
        Just("keep".to_owned()),
        Just("latest".to_owned()),
        (0..=MAX_DAYS + 1).prop_map(|d| format!("{d}d")),
    ]
}

use crate::artifact::proptests::any_time;

/// A size bound of a rule: none, a small one, or any.
fn any_bound() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        Just(None),
        (0u64..64).prop_map(Some),
        any::<u64>().prop_map(Some)
    ]
}

/// A rule as a bucket may hold it: prefix, tag and size filters, days of any number,
/// dates of any time.
fn any_rule() -> impl Strategy<Value = ExpiryRule> {
    let filter = (
        "[ab/]{0,3}",
        proptest::collection::btree_map("[ab]", "[xy]", 0..2),
        any_bound(),
        any_bound(),
    )
        .prop_map(|(prefix, tags, larger_than, smaller_than)| RuleFilter {
            prefix,
            tags,
            larger_than,
            smaller_than,
        });
    (
        "\\PC{0,6}",
        filter,
        proptest::option::of(any::<u32>()),
        proptest::option::of(any_time()),
    )
        .prop_map(|(id, filter, days, date)| ExpiryRule {
            id,
            filter,
            days,
            date,
        })
}

proptest! {
    /// Any text: a tier parsed is within its limits and reads back from what it shows
    /// and from its tag; a tag names a tier only when it is exactly that tier's tag.
    #[test]
    fn any_tier_text_parses_or_not_and_reads_back(text in tier_text()) {
        if let Some(tier) = Tier::parse(&text) {
            if let Tier::Days(days) = tier {
                prop_assert!((1..=MAX_DAYS).contains(&days));
            }
            prop_assert_eq!(Tier::parse(&tier.shown()), Some(tier));
            prop_assert_eq!(Tier::from_tag(&tier.tag_value()), Some(tier));
        }
        if let Some(tier) = Tier::from_tag(&text) {
            prop_assert_eq!(tier.tag_value(), text.clone());
        }
        let tags = Tags::from([(TIER_TAG.to_owned(), text.clone())]);
        prop_assert_eq!(Tier::of(&tags), Tier::from_tag(&text));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any rules and any object whose tags are known: the expiry is the earliest one a
    /// rule that selects it gives, else never, whatever the days or dates; an object past
    /// a rule has that expiry behind it, and `retention show` prints a line a rule.
    #[test]
    fn the_earliest_selecting_rule_gives_the_expiry(
        rules in proptest::collection::vec(any_rule(), 0..5),
        key in "[ab/]{0,4}",
        size in 0u64..64,
        modified in any_time(),
        tags in proptest::collection::btree_map("[ab]", "[xy]", 0..3),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = runtime.block_on(retention(rules.clone()));
        let object = Subject {
            key: &key,
            size,
            last_modified: modified,
        };
        let expected = rules
            .iter()
            .filter(|rule| rule.filter.selects(&key, size, Some(&tags)) == Some(true))
            .filter_map(|rule| rule.expires_at(modified))
            .min()
            .map_or(Expiry::Never, |at| Expiry::At {
                at,
                source: ExpirySource::Lifecycle,
            });
        prop_assert_eq!(r.expiry(object, None, Some(&tags)), Some(expected));
        if r.past_rules(object) {
            let now = SystemTime::now();
            prop_assert!(matches!(expected, Expiry::At { at, .. } if at <= now), "{expected:?}");
        }
        let _ = r.expiry(object, None, None);
        let _ = r.check_tier(&key, Tier::Days(30));
        prop_assert_eq!(describe(&rules).lines().count(), rules.len().max(1));
    }
}
