//! Which keys can be file names, and the log-once record of those that cannot.

use std::collections::HashSet;
use std::sync::Mutex;

/// Longest file name Linux accepts (NAME_MAX).
const NAME_MAX: usize = 255;

/// Why a key segment cannot be shown as a file name.
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

    #[test]
    fn names_that_cannot_be_entries() {
        assert_eq!(check_name("data.csv"), Ok(()));
        assert_eq!(check_name(""), Err(BadName::Empty));
        assert_eq!(check_name(".."), Err(BadName::Dot));
        assert_eq!(check_name(&"x".repeat(256)), Err(BadName::TooLong));
        assert_eq!(check_name(&"x".repeat(255)), Ok(()));
        assert_eq!(check_name("a\0b"), Err(BadName::Nul));
    }
}
