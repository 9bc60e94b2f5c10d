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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::super::Location;
    use super::*;

    /// Text for an XML element: anything, XML's own characters and references (named,
    /// numeric, not characters at all), names from a small alphabet (so that filters
    /// select), numbers of any size and sign.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,10}",
            "[abxy/]{0,3}",
            "-?[0-9]{1,22}",
            "[<>&;\"'/a-z#0-9]{0,8}",
            "[ab]?&(amp|lt|quot|#[0-9]{1,8}|#x[0-9a-fA-F]{1,7}|#x?|bogus);[ab]?",
        ]
    }

    /// `<name>text</name>`, or nothing.
    fn element(name: &'static str) -> impl Strategy<Value = String> {
        proptest::option::of(text()).prop_map(move |value| {
            value.map_or_else(String::new, |v| format!("<{name}>{v}</{name}>"))
        })
    }

    /// One `<Rule>` as a client may PUT it: each element S3 defines, present or not,
    /// with any text or a well-formed value, and the filter in each of its shapes.
    fn rule_xml() -> impl Strategy<Value = String> {
        let status = prop_oneof![
            Just("<Status>Enabled</Status>".to_owned()),
            Just("<Status>Disabled</Status>".to_owned()),
            element("Status"),
        ];
        let days = prop_oneof![
            (-2i32..40_000).prop_map(|d| format!("<Days>{d}</Days>")),
            element("Days"),
        ];
        let date = prop_oneof![
            "<Date>[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+\\-][01][0-9]:[0-5][0-9])</Date>",
            element("Date"),
        ];
        let filter = (
            0u8..4,
            element("Prefix"),
            element("Key"),
            element("Value"),
            element("ObjectSizeGreaterThan"),
            element("ObjectSizeLessThan"),
        )
            .prop_map(|(shape, prefix, key, value, larger, smaller)| {
                let tag = format!("<Tag>{key}{value}</Tag>");
                match shape {
                    0 => String::new(),
                    1 => format!("<Filter>{prefix}{larger}{smaller}</Filter>"),
                    2 => format!("<Filter>{tag}</Filter>"),
                    _ => format!("<Filter><And>{prefix}{tag}{tag}{larger}{smaller}</And></Filter>"),
                }
            });
        (element("ID"), status, element("Prefix"), filter, days, date).prop_map(
            |(id, status, prefix, filter, days, date)| {
                format!("<Rule>{id}{status}{prefix}{filter}<Expiration>{days}{date}</Expiration></Rule>")
            },
        )
    }

    /// A lifecycle configuration body: a few rules, with or without S3's namespace.
    fn lifecycle_xml() -> impl Strategy<Value = Vec<u8>> {
        (proptest::collection::vec(rule_xml(), 0..4), any::<bool>()).prop_map(|(rules, xmlns)| {
            let ns = if xmlns {
                " xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\""
            } else {
                ""
            };
            let rules = rules.concat();
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><LifecycleConfiguration{ns}>{rules}</LifecycleConfiguration>")
                .into_bytes()
        })
    }

    /// What the store's S3 front end (s3s) makes of a PutBucketLifecycleConfiguration
    /// body: the whole body read as one configuration, or nothing (MalformedXML).
    fn parsed(xml: &[u8]) -> Option<dto::BucketLifecycleConfiguration> {
        let mut d = s3s::xml::Deserializer::new(xml);
        let config =
            <dto::BucketLifecycleConfiguration as s3s::xml::Deserialize>::deserialize(&mut d)
                .ok()?;
        d.expect_eof().ok()?;
        Some(config)
    }

    /// An object of the store's index.
    fn entry(key: String, size: u64, mtime: SystemTime, tags: Tags) -> Entry {
        Entry {
            key,
            size,
            mtime,
            etag: "e".into(),
            location: Location::Blob,
            content_type: None,
            content_encoding: None,
            metadata: HashMap::new(),
            tags,
            storage_class: None,
            restored_until: None,
        }
    }

    proptest! {
        /// Any lifecycle body, well-formed or any bytes, is read or refused, never a
        /// panic; a configuration read is kept as JSON that reads back (else the bucket's
        /// lifecycle would be unreadable from then on), and a rule that maps is an
        /// enabled expiration with its days, dated no earlier than 1970. Any bytes in
        /// the JSON file are read or refused too.
        #[test]
        fn any_lifecycle_body_is_read_or_refused(
            xml in prop_oneof![lifecycle_xml(), proptest::collection::vec(any::<u8>(), 0..300)],
        ) {
            let _ = serde_json::from_slice::<dto::BucketLifecycleConfiguration>(&xml);
            let Some(config) = parsed(&xml) else {
                return Ok(());
            };
            let json = serde_json::to_vec(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let reread = serde_json::from_slice::<dto::BucketLifecycleConfiguration>(&json)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(reread.rules.len(), config.rules.len());
            for rule in &config.rules {
                let Some(ours) = expiry_rule(rule) else {
                    continue;
                };
                prop_assert_eq!(rule.status.as_str(), dto::ExpirationStatus::ENABLED);
                let days = rule.expiration.as_ref().and_then(|e| e.days);
                prop_assert_eq!(ours.days, days.and_then(|d| u32::try_from(d).ok()));
                prop_assert!(ours.days.is_some() || ours.date.is_some());
                prop_assert!(ours.date.is_none_or(|d| d >= SystemTime::UNIX_EPOCH));
            }
        }

        /// Any rules and any object: the rule found is one that selects it with that
        /// expiry, no rule that selects it expires it sooner, and the date is one
        /// `x-amz-expiration` can write.
        #[test]
        fn the_earliest_rule_selects_and_comes_first(
            xml in lifecycle_xml(),
            key in "[ab/]{0,4}",
            size in 0u64..64,
            secs in 0u64..(1 << 36),
            tags in proptest::collection::btree_map("[ab]", "[xy]", 0..2),
        ) {
            let Some(config) = parsed(&xml) else {
                return Ok(());
            };
            let rules: Vec<ExpiryRule> = config.rules.iter().filter_map(expiry_rule).collect();
            let entry = entry(key, size, SystemTime::UNIX_EPOCH + Duration::from_secs(secs), tags);
            let Some((at, id)) = earliest(&rules, &entry) else {
                return Ok(());
            };
            let selecting: Vec<&ExpiryRule> = rules
                .iter()
                .filter(|r| r.filter.selects(&entry.key, entry.size, Some(&entry.tags)) == Some(true))
                .collect();
            prop_assert!(selecting.iter().any(|r| r.id == id && r.expires_at(entry.mtime) == Some(at)));
            prop_assert!(selecting.iter().all(|r| r.expires_at(entry.mtime).is_none_or(|t| t >= at)));
            let at = at.min(crate::artifact::last_time());
            let mut date = Vec::new();
            prop_assert!(Timestamp::from(at).format(TimestampFormat::HttpDate, &mut date).is_ok());
        }

        /// A rule id of any text goes into `x-amz-expiration` as unreserved characters and
        /// `%XX` escapes only (nothing that ends the quoted value), and decodes back to
        /// itself.
        #[test]
        fn rule_ids_are_url_encoded_reversibly(id in any::<String>()) {
            let encoded = url_encoded(&id);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
            let mut decoded = Vec::new();
            let mut rest = encoded.as_str();
            while let Some(c) = rest.chars().next() {
                if c == '%' {
                    let byte = rest.get(1..3).and_then(|h| u8::from_str_radix(h, 16).ok());
                    prop_assert!(byte.is_some(), "{rest}");
                    decoded.extend(byte);
                    rest = &rest[3..];
                } else {
                    decoded.push(c as u8);
                    rest = &rest[1..];
                }
            }
            prop_assert_eq!(decoded, id.into_bytes());
        }

        /// Whole-second dates of 1970 to 9999 go through the store's conversion exactly.
        #[test]
        fn whole_second_dates_convert_exactly(secs in 0u64..=253_402_300_799) {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            prop_assert_eq!(system_time(&Timestamp::from(t)), Some(t));
        }
    }
}
