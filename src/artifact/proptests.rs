//! Property tests of the metadata contract: whatever text the store holds in an
//! `x-amz-meta-rgrid-*` field or a key, reading it gives a value or none and never
//! panics, and what this module writes reads back as written.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::object::Tags;

const DAY: u64 = 86_400;

/// Text a metadata field may hold: anything, and the shapes the parsers look for with
/// their edges (signs, dots, too many digits, offsets, digits that are not ASCII).
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9+\\-. ]{0,30}",
        "[0-9]{0,25}\\.[0-9]{0,12}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+\\-][0-9]{2}:[0-9]{2}|[+\\-][0-9:+]{0,6})?",
        "[0-9٣０é.+\\-]{0,12}",
        any::<u64>().prop_map(|n| n.to_string()),
    ]
}

/// Any time, before 1970 and long after 9999 included.
pub(crate) fn any_time() -> impl Strategy<Value = SystemTime> {
    (any::<bool>(), 0u64..(1 << 44), 0u32..1_000_000_000).prop_map(|(before, secs, nanos)| {
        let d = Duration::new(secs, nanos);
        if before {
            SystemTime::UNIX_EPOCH - d
        } else {
            SystemTime::UNIX_EPOCH + d
        }
    })
}

/// `t` without its fraction of a second (RFC 3339 shows whole seconds).
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Metadata holding `value` in field `name`.
fn with(name: &str, value: &str) -> ObjectHeaders {
    let mut headers = ObjectHeaders::default();
    headers
        .user_metadata
        .insert(name.to_owned(), value.to_owned());
    headers
}

proptest! {
    /// Any mode and mtime text: kept attributes are read or left out, never a panic; a
    /// mode read is permission bits only, and what is read is stored back as itself.
    #[test]
    fn any_kept_attributes_read_and_store_back(mode in field(), mtime in field()) {
        let mut headers = with(MODE, &mode);
        headers.user_metadata.insert(MTIME.to_owned(), mtime.clone());
        let kept = KeptAttrs::of(&headers);
        prop_assert!(kept.mode.is_none_or(|m| m <= 0o7777));
        prop_assert_eq!(kept.mtime, parse_epoch(&mtime));
        let mut again = ObjectHeaders::default();
        kept.store(&mut again.user_metadata);
        prop_assert_eq!(KeptAttrs::of(&again), kept);
    }

    /// Any mode and any time a `SystemTime` can hold after 1970 round-trip through the
    /// metadata, to the nanosecond.
    #[test]
    fn kept_attributes_round_trip(mode in 0u16..=0o7777, secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
        let Some(mtime) = SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) else {
            return Ok(());
        };
        let kept = KeptAttrs { mode: Some(mode), mtime: Some(mtime) };
        let mut headers = ObjectHeaders::default();
        kept.store(&mut headers.user_metadata);
        prop_assert_eq!(KeptAttrs::of(&headers), kept);
    }

    /// Any original-size text reads as a size or none; a size read reads back from its
    /// decimal form, and every u64 with blanks around it reads as itself.
    #[test]
    fn original_sizes_parse_and_round_trip(text in field(), n in any::<u64>(), pad in "[ \t]{0,2}") {
        if let Some(size) = original_size(&with(ORIGINAL_SIZE, &text)) {
            prop_assert_eq!(original_size(&with(ORIGINAL_SIZE, &size.to_string())), Some(size));
        }
        let padded = format!("{pad}{n}{pad}");
        prop_assert_eq!(original_size(&with(ORIGINAL_SIZE, &padded)), Some(n));
    }

    /// Any compression field and Content-Encoding: gzip exactly when one of them says
    /// `gzip` (any case, blanks around).
    #[test]
    fn gzip_only_when_a_field_says_so(
        ours in proptest::option::of(prop_oneof![field(), Just(" GZip ".to_owned()), Just("x-gzip".to_owned())]),
        encoding in proptest::option::of(prop_oneof![field(), Just("gzip".to_owned()), Just("gzip, br".to_owned())]),
    ) {
        let mut headers = ObjectHeaders::default();
        if let Some(ours) = &ours {
            headers.user_metadata.insert(COMPRESSION.to_owned(), ours.clone());
        }
        headers.content_encoding.clone_from(&encoding);
        let says = |v: &Option<String>| v.as_deref().is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        let expected = if says(&ours) || says(&encoding) {
            Compression::Gzip
        } else {
            Compression::None
        };
        prop_assert_eq!(compression(&headers), expected);
    }

    /// Any bytes hash to 64 lowercase hex digits; any digest is shown as two lowercase
    /// hex digits a byte.
    #[test]
    fn digests_are_lowercase_hex(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let sha = sha256_hex(&data);
        prop_assert_eq!(sha.len(), 64);
        prop_assert!(is_hex(&sha), "{sha}");
        let shown = hex(&data);
        prop_assert_eq!(shown.len(), 2 * data.len());
        prop_assert!(is_hex(&shown), "{shown}");
    }

    /// Any `rgrid-sha256` tag and ETag: the hash is taken only when the tag names that
    /// version and holds 64 bytes, lowercased, and the marker goes with it; else nothing
    /// changes.
    #[test]
    fn any_sha256_tag_is_taken_only_for_its_version(
        value in prop_oneof![
            field(),
            ("[0-9a-fA-Fz]{63,65}", field()).prop_map(|(sha, etag)| format!("{sha}@{etag}")),
        ],
        etag in proptest::option::of(field()),
    ) {
        let mut headers = with(SHA256_IN_TAG, "tag");
        let tags: Tags = [(SHA256.to_owned(), value.clone())].into();
        let before = headers.clone();
        if adopt_tagged_sha256(&mut headers, &tags, etag.as_deref()) {
            let sha = sha256(&headers).unwrap_or_default();
            prop_assert_eq!(sha.len(), 64);
            prop_assert!(!sha.bytes().any(|b| b.is_ascii_uppercase()), "{sha}");
            prop_assert!(!sha256_in_tag(&headers));
            let tagged = value.split_once('@').map(|(_, e)| e);
            prop_assert_eq!(tagged, etag.as_deref().map(|e| e.trim_matches('"')));
        } else {
            prop_assert_eq!(headers, before);
        }
    }

    /// The hash of any content, tagged for any ETag, is taken back for that ETag.
    #[test]
    fn a_sha256_tag_round_trips(data in proptest::collection::vec(any::<u8>(), 0..64), upper in any::<bool>(), etag in field()) {
        let sha = sha256_hex(&data);
        let written = if upper { sha.to_ascii_uppercase() } else { sha.clone() };
        let tags: Tags = [(SHA256.to_owned(), sha256_tag(&written, &etag))].into();
        let mut headers = with(SHA256_IN_TAG, "tag");
        prop_assert!(adopt_tagged_sha256(&mut headers, &tags, Some(etag.as_str())));
        prop_assert_eq!(sha256(&headers), Some(sha.as_str()));
    }

    /// Any text parses to a time between 1970 and the end of 9999, or to none; the time
    /// shown for one parsed reads back as it, to the second.
    #[test]
    fn any_time_text_parses_within_range(text in field()) {
        if let Some(t) = parse_time(&text) {
            prop_assert!((SystemTime::UNIX_EPOCH..=last_time()).contains(&t));
            prop_assert_eq!(parse_time(&format_time(t)), Some(whole_seconds(t)));
        }
    }

    /// Any time, however far from 1970, is shown as RFC 3339 (clamped to the years it
    /// can write) and reads back as the clamped time to the second.
    #[test]
    fn any_time_is_shown_and_reads_back_clamped(t in any_time()) {
        let shown = format_time(t);
        prop_assert_eq!(shown.len(), "2026-12-22T10:00:00Z".len());
        let clamped = t.clamp(SystemTime::UNIX_EPOCH, last_time());
        prop_assert_eq!(parse_time(&shown), Some(whole_seconds(clamped)));
    }

    /// Any LastModified and any number of days: a lifecycle expiry is at a midnight UTC,
    /// on or after the days have passed and less than a day after; every LastModified
    /// after 1970 has one, short of the far end of `SystemTime`; none before 1970.
    #[test]
    fn lifecycle_expiry_is_the_next_midnight(secs in any::<u64>(), nanos in 0u32..1_000_000_000, days in any::<u32>()) {
        let Some(modified) = SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) else {
            return Ok(());
        };
        let at = lifecycle_expiry(modified, days);
        prop_assert!(at.is_some() || secs > (1 << 60));
        if let Some(at) = at {
            let at = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
            let due = secs + u64::from(days) * DAY;
            prop_assert_eq!(at.checked_rem(DAY), Some(0));
            prop_assert!(at >= due && at - due < DAY, "{at} for {due}");
        }
        let before = SystemTime::UNIX_EPOCH - Duration::new(secs % (1 << 40), nanos.max(1));
        prop_assert_eq!(lifecycle_expiry(before, days), None);
    }

    /// Any key and content type: a kind, a content type and a text flag, never a panic;
    /// an execution found is the key's second segment, not empty, and an input or
    /// output is under that execution's `inputs/` or `outputs/`.
    #[test]
    fn any_key_has_a_kind_and_maybe_an_execution(
        key in prop_oneof![
            any::<String>(),
            "(executions/)?[a-z/é.]{0,8}((inputs|outputs)/)?\\PC{0,8}(\\.[A-Za-z]{0,5})?",
        ],
        content_type in proptest::option::of("\\PC{0,20}"),
    ) {
        let _ = ArtifactKind::of(&key, content_type.as_deref()).name();
        let _ = (super::content_type(&key), is_text(&key));
        if let Some((id, kind)) = execution_of(&key) {
            prop_assert!(!id.is_empty() && !id.contains('/'));
            let under = format!("executions/{id}/");
            prop_assert!(key.starts_with(&under));
            let place = kind.map(|k| match k {
                ArtifactType::Input => "inputs/",
                ArtifactType::Output => "outputs/",
            });
            prop_assert!(place.is_none_or(|p| key[under.len()..].starts_with(p)));
        }
    }

    /// Any link target: the metadata holds it as is when it is printable ASCII of at most
    /// 1024 bytes, else nothing (the body holds it).
    #[test]
    fn symlink_metadata_is_the_target_or_nothing(
        target in prop_oneof![any::<String>(), "[ -~]{1000,1030}"],
    ) {
        let kept = symlink_metadata(&target);
        let printable = target.bytes().all(|b| (0x20..0x7f).contains(&b)) && target.len() <= 1024;
        prop_assert_eq!(kept, if printable { target.as_str() } else { "" });
    }
}
