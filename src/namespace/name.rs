//! The name rules: which key segments can be file names, which names the kernel hands
//! us can become keys, and the log-once record of keys that cannot be shown. Every
//! operation that takes a name checks it here before any request to the store; the
//! errno of each rule is in `fs/error.rs`, the one errno table.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::Mutex;

/// Longest file name Linux accepts (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Longest key S3 (and MinIO) store, in bytes of UTF-8.
pub const KEY_MAX: usize = 1024;

/// Why a name cannot be an entry of this mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    /// `a//b`: an empty segment.
    Empty,
    /// A `.` or `..` segment.
    Dot,
    /// Longer than NAME_MAX bytes.
    TooLong,
    /// Contains NUL.
    Nul,
    /// Not UTF-8: keys are UTF-8, so such a name cannot be one.
    NotUtf8,
    /// The key it makes would pass KEY_MAX bytes.
    KeyTooLong,
}

impl std::fmt::Display for BadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadName::Empty => "empty name",
            BadName::Dot => "`.` or `..`",
            BadName::TooLong => "name longer than 255 bytes",
            BadName::Nul => "name contains NUL",
            BadName::NotUtf8 => "name is not UTF-8",
            BadName::KeyTooLong => "key longer than 1024 bytes",
        })
    }
}

/// Checks that `name` (one key segment) can be a directory entry.
pub fn check_name(name: &str) -> Result<(), BadName> {
    match name {
        "" => Err(BadName::Empty),
        "." | ".." => Err(BadName::Dot),
        n if n.len() > NAME_MAX => Err(BadName::TooLong),
        n if n.contains('\0') => Err(BadName::Nul),
        _ => Ok(()),
    }
}

/// A name from the kernel as a key segment: UTF-8, and a valid entry name.
pub fn entry_name(name: &OsStr) -> Result<&str, BadName> {
    // Length first: a 300-byte name is too long whatever its bytes are.
    if name.len() > NAME_MAX {
        return Err(BadName::TooLong);
    }
    let name = name.to_str().ok_or(BadName::NotUtf8)?;
    check_name(name)?;
    Ok(name)
}

/// Checks that `key` is short enough for the store.
pub fn check_key(key: &str) -> Result<(), BadName> {
    if key.len() > KEY_MAX {
        return Err(BadName::KeyTooLong);
    }
    Ok(())
}

/// Keys already reported, so that a listing repeated every few seconds logs each once.
#[derive(Debug, Default)]
pub struct SkippedKeys {
    seen: Mutex<HashSet<String>>,
}

impl SkippedKeys {
    /// Logs (once per key) that `key` is not shown, and why.
    pub fn report(&self, key: &str, why: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(key.to_owned()) {
            tracing::warn!(key, "key not shown: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn names_that_cannot_be_entries() {
        assert_eq!(check_name("data.csv"), Ok(()));
        assert_eq!(check_name(""), Err(BadName::Empty));
        assert_eq!(check_name(".."), Err(BadName::Dot));
        assert_eq!(check_name(&"x".repeat(256)), Err(BadName::TooLong));
        assert_eq!(check_name(&"x".repeat(255)), Ok(()));
        assert_eq!(check_name("a\0b"), Err(BadName::Nul));
    }

    #[test]
    fn names_from_the_kernel() {
        assert_eq!(entry_name(OsStr::new("out.csv")), Ok("out.csv"));
        assert_eq!(
            entry_name(OsStr::from_bytes(b"a\xffb")),
            Err(BadName::NotUtf8)
        );
        let long = [0xffu8; 256];
        assert_eq!(entry_name(OsStr::from_bytes(&long)), Err(BadName::TooLong));
        // 255 bytes of a multi-byte character: long in bytes, within the limit.
        let wide = "é".repeat(127) + "x";
        assert_eq!(wide.len(), 255);
        assert_eq!(entry_name(OsStr::new(&wide)), Ok(wide.as_str()));
        assert_eq!(entry_name(OsStr::new(&(wide + "y"))), Err(BadName::TooLong));
    }

    #[test]
    fn keys_past_the_store_limit() {
        assert_eq!(check_key(&"k".repeat(KEY_MAX)), Ok(()));
        assert_eq!(
            check_key(&"k".repeat(KEY_MAX + 1)),
            Err(BadName::KeyTooLong)
        );
    }

    /// One piece of a name or key: the pieces the rules are about (empty, dots, slashes,
    /// NUL, control characters, `%` escapes of bytes that are not UTF-8, segments around
    /// NAME_MAX in one- and two-byte characters), and any other text.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("/".to_owned()),
            Just("//".to_owned()),
            Just("\0".to_owned()),
            Just("%ff%c3%28%e2%82".to_owned()),
            "[\\x00-\\x1f\\x7f]{1,3}",
            "\\PC{0,16}",
            any::<String>(),
            (250usize..260).prop_map(|n| "x".repeat(n)),
            (125usize..130).prop_map(|n| "é".repeat(n)),
        ]
    }

    /// A name made of a few pieces.
    fn any_name() -> impl Strategy<Value = String> {
        proptest::collection::vec(piece(), 0..4).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        /// Any string gets the rules' answer, no panic: refused exactly when it is empty,
        /// `.` or `..`, longer than NAME_MAX bytes, or holds NUL.
        #[test]
        fn any_name_gets_the_rules_answer(name in any_name()) {
            let expected = if name.is_empty() {
                Err(BadName::Empty)
            } else if name == "." || name == ".." {
                Err(BadName::Dot)
            } else if name.len() > NAME_MAX {
                Err(BadName::TooLong)
            } else if name.contains('\0') {
                Err(BadName::Nul)
            } else {
                Ok(())
            };
            prop_assert_eq!(check_name(&name), expected);
        }

        /// Any bytes from the kernel: a name taken is those bytes, UTF-8, and passes the
        /// rules; one refused is too long, not UTF-8, or breaks a rule.
        #[test]
        fn any_kernel_bytes_are_taken_only_as_good_names(bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            any_name().prop_map(String::into_bytes),
        ]) {
            match entry_name(OsStr::from_bytes(&bytes)) {
                Ok(name) => {
                    prop_assert_eq!(name.as_bytes(), &bytes[..]);
                    prop_assert_eq!(check_name(name), Ok(()));
                }
                Err(BadName::TooLong) => prop_assert!(bytes.len() > NAME_MAX),
                Err(BadName::NotUtf8) => prop_assert!(std::str::from_utf8(&bytes).is_err()),
                Err(why) => {
                    let name = std::str::from_utf8(&bytes).expect("checked as UTF-8 before the rules");
                    prop_assert_eq!(check_name(name), Err(why));
                }
            }
        }

        /// Any key is refused exactly when it is longer than the store keeps.
        #[test]
        fn any_key_is_refused_only_past_the_store_limit(
            key in proptest::collection::vec(piece(), 0..8).prop_map(|pieces| pieces.concat()),
        ) {
            prop_assert_eq!(check_key(&key).is_ok(), key.len() <= KEY_MAX);
        }
    }
}
