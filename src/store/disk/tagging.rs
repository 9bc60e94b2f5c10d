//! Object tagging of the embedded store, as S3 has it: a tag set per object, replaced
//! whole by PutObjectTagging without a new version (ETag and LastModified stay), kept by
//! a copy, dropped when a PUT replaces the object.

use std::collections::BTreeMap;

use s3s::dto;
use s3s::{s3_error, S3Result};

use super::DiskStore;

/// S3's limits: ten tags an object, keys up to 128 characters, values up to 256.
const MAX_TAGS: usize = 10;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

impl DiskStore {
    /// The tag set of `key`.
    pub(super) fn tag_set(&self, bucket: &str, key: &str) -> S3Result<dto::TagSet> {
        let index = self.bucket(bucket)?;
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        let entry = index.get(key).ok_or_else(|| s3_error!(NoSuchKey))?;
        Ok(entry
            .tags
            .iter()
            .map(|(k, v)| dto::Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect())
    }

    /// Replaces the tag set of `key` (an empty one removes every tag).
    pub(super) fn replace_tags(&self, bucket: &str, key: &str, set: dto::TagSet) -> S3Result<()> {
        let tags = checked_tags(set)?;
        let index = self.bucket(bucket)?;
        let mut index = index.write().unwrap_or_else(|e| e.into_inner());
        let entry = index.get_mut(key).ok_or_else(|| s3_error!(NoSuchKey))?;
        entry.tags = tags;
        self.write_sidecar(bucket, entry)
    }
}

/// The tag set an `x-amz-tagging` header gives a new object: a URL query,
/// `k1=v1&k2=v2`, within S3's limits.
pub(super) fn tagging_header(header: Option<&str>) -> S3Result<BTreeMap<String, String>> {
    let Some(header) = header.filter(|h| !h.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let mut set = dto::TagSet::new();
    for pair in header.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (percent_decoded(key)?, percent_decoded(value)?);
        set.push(dto::Tag {
            key: Some(key),
            value: Some(value),
        });
    }
    checked_tags(set)
}

/// `%XX` and `+` of a URL query decoded.
fn percent_decoded(text: &str) -> S3Result<String> {
    let bad = || {
        s3_error!(InvalidTag, "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates.")
    };
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// A tag set as S3 accepts it: within its limits, no key twice.
fn checked_tags(set: dto::TagSet) -> S3Result<BTreeMap<String, String>> {
    if set.len() > MAX_TAGS {
        return Err(s3_error!(
            InvalidTag,
            "Object tags cannot be greater than 10"
        ));
    }
    let mut tags = BTreeMap::new();
    for tag in set {
        let (key, value) = (tag.key.unwrap_or_default(), tag.value.unwrap_or_default());
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey you have provided is invalid"
            ));
        }
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(s3_error!(
                InvalidTag,
                "The TagValue you have provided is invalid"
            ));
        }
        if tags.insert(key, value).is_some() {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(key: &str, value: &str) -> dto::Tag {
        dto::Tag {
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    #[test]
    fn tag_sets_follow_s3_limits() {
        let tags = checked_tags(vec![tag("a", "1"), tag("b", "")]).expect("valid");
        assert_eq!(tags.len(), 2);
        assert!(checked_tags(vec![tag("a", "1"), tag("a", "2")]).is_err());
        assert!(checked_tags(vec![tag("", "1")]).is_err());
        assert!(checked_tags(vec![tag("a", &"v".repeat(257))]).is_err());
        let eleven = (0..11).map(|i| tag(&i.to_string(), "x")).collect();
        assert!(checked_tags(eleven).is_err());
    }

    #[test]
    fn tagging_headers_decode_as_url_queries() {
        let tags = tagging_header(Some("rgrid-retention=30d&team=ml%2Fvision&e=")).unwrap();
        assert_eq!(tags["rgrid-retention"], "30d");
        assert_eq!(tags["team"], "ml/vision");
        assert_eq!(tags["e"], "");
        assert!(tagging_header(None).unwrap().is_empty());
        assert!(tagging_header(Some("a=%zz")).is_err());
        assert!(tagging_header(Some("a=1&a=2")).is_err());
    }

    proptest! {
        /// Any `x-amz-tagging` text, bad `%` escapes and escapes of bytes that are not
        /// UTF-8 included, gives a tag set within S3's limits or InvalidTag, never a
        /// panic.
        #[test]
        fn any_tagging_header_parses_or_is_refused(header in prop_oneof![
            any::<String>(),
            "([a-z=&+]|%[0-9a-fA-F]{2}|%[0-9a-zA-Z+\\-]{0,2}|%[c-f][0-9a-f]%[0-7][0-9a-f]){0,16}",
        ]) {
            if let Ok(tags) = tagging_header(Some(header.as_str())) {
                prop_assert!(tags.len() <= MAX_TAGS);
                for (key, value) in &tags {
                    prop_assert!(!key.is_empty() && key.chars().count() <= MAX_TAG_KEY);
                    prop_assert!(value.chars().count() <= MAX_TAG_VALUE);
                }
            }
        }

        /// Any tag set within the limits, written as a query with every byte escaped,
        /// reads back as itself.
        #[test]
        fn escaped_tag_sets_read_back(
            tags in proptest::collection::btree_map("\\PC{1,8}", "\\PC{0,8}", 0..=MAX_TAGS),
        ) {
            let escaped = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            let pairs: Vec<String> = tags
                .iter()
                .map(|(k, v)| format!("{}={}", escaped(k), escaped(v)))
                .collect();
            prop_assert_eq!(tagging_header(Some(pairs.join("&").as_str())).ok(), Some(tags));
        }
    }
}
