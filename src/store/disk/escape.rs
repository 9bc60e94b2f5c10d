//! `encoding-type=url` listings: keys, prefixes and continuation tokens escaped so that
//! any key travels in the XML of a listing, which cannot carry most control characters.
//! Escaping is S3's: every byte but the unreserved ones and `/` as `%XX`, which clients
//! undo as a URL query value. Continuation tokens, the store's own, are escaped too.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use s3s::dto;

/// Left as they are: what a URL never escapes, and the key separator.
const KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// `value` escaped.
pub(super) fn escape(value: &str) -> String {
    utf8_percent_encode(value, KEPT).to_string()
}

/// A continuation token as the key it escapes; `None` when it is not one of ours.
pub(super) fn unescape(token: &str) -> Option<String> {
    let decoded = percent_decode_str(token).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

/// Escapes the keys and prefixes of a listing answered with `encoding-type=url`.
pub(super) fn escape_listing(out: &mut dto::ListObjectsV2Output) {
    for value in [&mut out.prefix, &mut out.delimiter, &mut out.start_after] {
        if let Some(v) = value.as_mut() {
            *v = escape(v);
        }
    }
    for object in out.contents.iter_mut().flatten() {
        if let Some(key) = object.key.as_mut() {
            *key = escape(key);
        }
    }
    for prefix in out.common_prefixes.iter_mut().flatten() {
        if let Some(p) = prefix.prefix.as_mut() {
            *p = escape(p);
        }
    }
    out.encoding_type = Some(dto::EncodingType::from_static(dto::EncodingType::URL));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_and_spaces_are_escaped_and_slashes_kept() {
        assert_eq!(escape("a b/c\u{7}+%"), "a%20b/c%07%2B%25");
        assert_eq!(unescape("a%20b/%07").as_deref(), Some("a b/\u{7}"));
        assert_eq!(unescape("%FF"), None);
    }

    proptest! {
        #[test]
        fn any_key_escapes_to_xml_safe_ascii_and_back(key in any::<String>()) {
            let escaped = escape(&key);
            prop_assert!(escaped.bytes().all(|b| b.is_ascii_graphic()));
            prop_assert_eq!(unescape(&escaped), Some(key));
        }
    }
}
