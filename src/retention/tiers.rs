//! The lifecycle rules of the retention tiers: one per tier and prefix, selecting the
//! objects whose `rgrid-retention` tag names the tier, as `rgrid-mount retention set`
//! installs them, and how `retention show` prints a bucket's rules.

use super::{Tier, TIER_TAG};
use crate::artifact;
use crate::object::{ExpiryRule, RuleFilter};

/// Ids of tier rules start with this: `rgrid-tier:30d:executions/`.
pub const TIER_RULE: &str = "rgrid-tier:";
/// Ids of the prefix-only rules earlier versions installed: `rgrid-retention:<prefix>`.
const OLD_RULE: &str = "rgrid-retention:";

/// The rules for `tiers` (days) under `prefix`.
pub fn tier_rules(prefix: &str, tiers: &[u32]) -> Vec<ExpiryRule> {
    tiers
        .iter()
        .map(|&days| {
            let tier = Tier::Days(days);
            ExpiryRule {
                id: format!("{TIER_RULE}{tier}:{prefix}"),
                filter: RuleFilter {
                    prefix: prefix.to_owned(),
                    tags: [(TIER_TAG.to_owned(), tier.tag_value())].into(),
                    ..RuleFilter::default()
                },
                days: Some(days),
                date: None,
            }
        })
        .collect()
}

/// Whether rule `id` is ours for `prefix`, and is replaced by a new set of its tiers: a
/// tier rule, or an old prefix-only rule (which deleted objects whatever their tier).
pub fn replaced_by_tiers(id: &str, prefix: &str) -> bool {
    let tier_of_prefix = id
        .strip_prefix(TIER_RULE)
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(tier, p)| p == prefix && Tier::from_tag(tier).is_some());
    tier_of_prefix || id.strip_prefix(OLD_RULE) == Some(prefix)
}

/// The rules as `rgrid-mount retention show` prints them, one per line.
pub fn describe(rules: &[ExpiryRule]) -> String {
    if rules.is_empty() {
        return "no expiration rules: objects are kept until deleted\n".into();
    }
    rules.iter().map(describe_rule).collect()
}

fn describe_rule(r: &ExpiryRule) -> String {
    let when = match (r.days, r.date) {
        (Some(days), _) => format!("{days} days after they are written"),
        (None, Some(date)) => format!("at {}", artifact::format_time(date)),
        (None, None) => "never".into(),
    };
    let f = &r.filter;
    let mut which = format!("objects under {:?}", f.prefix);
    for (k, v) in &f.tags {
        which.push_str(&format!(" tagged {k}={v}"));
    }
    if let Some(n) = f.larger_than {
        which.push_str(&format!(" larger than {n} bytes"));
    }
    if let Some(n) = f.smaller_than {
        which.push_str(&format!(" smaller than {n} bytes"));
    }
    let warning = if f.tags.is_empty() {
        " (whatever their tier)"
    } else {
        ""
    };
    format!("{}: {which} expire {when}{warning}\n", r.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::MAX_DAYS;
    use proptest::prelude::*;

    #[test]
    fn tier_rules_are_replaced_per_prefix_only() {
        let rules = tier_rules("executions/", &[30, 90]);
        assert_eq!(rules[0].id, "rgrid-tier:30d:executions/");
        assert!(replaced_by_tiers(&rules[1].id, "executions/"));
        assert!(!replaced_by_tiers(&rules[1].id, "executions/e1/"));
        assert!(!replaced_by_tiers(
            "rgrid-tier:30d:executions/e1/",
            "executions/"
        ));
        assert!(replaced_by_tiers(
            "rgrid-retention:executions/",
            "executions/"
        ));
        assert!(!replaced_by_tiers("someone-else", "executions/"));
        let shown = describe(&rules);
        assert!(
            shown.contains("tagged rgrid-retention=90d expire 90 days"),
            "{shown}"
        );
    }

    proptest! {
        /// Any rule id and prefix get an answer, no panic; the rules `retention set`
        /// installs under a prefix are replaced by the next set for that prefix and for
        /// no other, and `retention show` prints a line a rule.
        #[test]
        fn tier_rules_are_replaced_for_their_prefix_only(
            prefix in "\\PC{0,12}",
            other in prop_oneof!["\\PC{0,12}", "[:a-z/]{0,4}"],
            days in proptest::collection::vec(1..=MAX_DAYS, 0..4),
            id in prop_oneof!["\\PC{0,40}", "rgrid-(tier|retention):[0-9d:]{0,6}\\PC{0,8}"],
        ) {
            let _ = replaced_by_tiers(&id, &prefix);
            let rules = tier_rules(&prefix, &days);
            for rule in &rules {
                prop_assert!(replaced_by_tiers(&rule.id, &prefix));
                prop_assert_eq!(replaced_by_tiers(&rule.id, &other), other == prefix);
            }
            prop_assert_eq!(describe(&rules).lines().count(), days.len().max(1));
        }
    }
}
