//! `Verifier`: hashes what a handle reads, in file order, and compares it with the
//! object's `ContentHash` (its SHA-256, else the MD5 its ETag is) when the last byte has
//! gone by. The kernel's read-ahead may send reads slightly out of
//! order, so reads ahead of the hashed prefix wait in a small buffer; a reader that jumps
//! around (or too far ahead) is simply not verified.

use std::collections::BTreeMap;

use bytes::Bytes;
use md5::{Digest as _, Md5};
use sha2::{Digest, Sha256};

use crate::artifact;
use crate::object::ObjectHeaders;

/// Bytes held for reads that arrived ahead of the hashed prefix.
const MAX_PENDING: usize = 32 << 20;

/// What the content of an object must hash to (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentHash {
    /// Its `rgrid-sha256`.
    Sha256(String),
    /// The MD5 its ETag is ([`artifact::etag_md5`]), for an object without a SHA-256.
    Md5(String),
}

impl ContentHash {
    /// The hash of the object with `headers` and `etag`: its SHA-256, else, with
    /// `etag_md5`, the MD5 its ETag is.
    pub fn of(headers: &ObjectHeaders, etag: Option<&str>, etag_md5: bool) -> Option<Self> {
        if let Some(sha) = artifact::sha256(headers) {
            return Some(ContentHash::Sha256(sha.to_owned()));
        }
        let md5 = etag_md5
            .then(|| artifact::etag_md5(etag, headers))
            .flatten();
        md5.map(ContentHash::Md5)
    }

    /// Whether `data` hashes to it.
    pub fn matches(&self, data: &[u8]) -> bool {
        let mut hasher = Hasher::of(self);
        hasher.update(data);
        hasher.finish() == self.hex()
    }

    /// Its hex digits.
    pub fn hex(&self) -> &str {
        match self {
            ContentHash::Sha256(hex) | ContentHash::Md5(hex) => hex,
        }
    }

    /// What the hash is, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            ContentHash::Sha256(_) => "sha256",
            ContentHash::Md5(_) => "md5 (its ETag)",
        }
    }
}

/// A running hash of the kind a [`ContentHash`] is.
#[derive(Debug)]
enum Hasher {
    Sha256(Sha256),
    Md5(Md5),
}

impl Hasher {
    fn of(hash: &ContentHash) -> Hasher {
        match hash {
            ContentHash::Sha256(_) => Hasher::Sha256(Sha256::new()),
            ContentHash::Md5(_) => Hasher::Md5(Md5::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => super::hex(&h.finalize()),
            Hasher::Md5(h) => super::hex(&h.finalize()),
        }
    }
}

/// The outcome of a verification that reached the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not at the end yet, or not verifiable any more.
    Open,
    /// The content hashes as expected.
    Matches,
    /// It does not.
    Mismatch {
        /// The hash the object promised.
        expected: ContentHash,
        /// Hex hash of that kind of what was read.
        actual: String,
    },
}

/// A running hash over a file read front to back.
#[derive(Debug)]
pub struct Verifier {
    expected: ContentHash,
    size: u64,
    /// `None` once judged.
    hasher: Option<Hasher>,
    /// Bytes `[0, next)` are hashed.
    next: u64,
    pending: BTreeMap<u64, Bytes>,
    pending_bytes: usize,
    /// Gave up (the reader skipped ahead) or already judged.
    done: bool,
}

impl Verifier {
    /// A verifier of a `size`-byte file that must hash to `expected`.
    pub fn new(expected: ContentHash, size: u64) -> Verifier {
        Verifier {
            hasher: Some(Hasher::of(&expected)),
            expected,
            size,
            next: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            done: false,
        }
    }

    /// What the content must hash to.
    pub fn expected(&self) -> &ContentHash {
        &self.expected
    }

    /// Takes the bytes a read at `offset` returned.
    pub fn feed(&mut self, offset: u64, data: &Bytes) -> Verdict {
        if self.done || data.is_empty() {
            return Verdict::Open;
        }
        if offset > self.next {
            return self.hold(offset, data);
        }
        self.hash_from(offset, data);
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let (offset, data) = entry.remove_entry();
            self.pending_bytes -= data.len();
            self.hash_from(offset, &data);
        }
        self.judge()
    }

    /// Hashes the part of `data` (read at `offset <= next`) past the hashed prefix.
    fn hash_from(&mut self, offset: u64, data: &Bytes) {
        let skip = usize::try_from(self.next - offset).unwrap_or(usize::MAX);
        if let (Some(fresh), Some(hasher)) = (data.get(skip..), self.hasher.as_mut()) {
            hasher.update(fresh);
            self.next += fresh.len() as u64;
        }
    }

    fn hold(&mut self, offset: u64, data: &Bytes) -> Verdict {
        if self.pending_bytes + data.len() > MAX_PENDING {
            tracing::debug!("read too far ahead of the hashed prefix; not verified");
            self.give_up();
            return Verdict::Open;
        }
        // A copy: a slice would keep a whole read-ahead part alive.
        let copy = Bytes::copy_from_slice(data);
        self.pending_bytes += copy.len();
        if let Some(old) = self.pending.insert(offset, copy) {
            self.pending_bytes -= old.len();
        }
        Verdict::Open
    }

    fn judge(&mut self) -> Verdict {
        if self.next < self.size {
            return Verdict::Open;
        }
        self.done = true;
        let Some(hasher) = self.hasher.take() else {
            return Verdict::Open;
        };
        let actual = hasher.finish();
        if actual == self.expected.hex() {
            Verdict::Matches
        } else {
            Verdict::Mismatch {
                expected: self.expected.clone(),
                actual,
            }
        }
    }

    fn give_up(&mut self) {
        self.done = true;
        self.pending.clear();
        self.pending_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::sha256_hex;
    use proptest::prelude::*;

    fn sha(data: &[u8]) -> ContentHash {
        ContentHash::Sha256(sha256_hex(data))
    }

    #[test]
    fn an_md5_etag_checks_a_plain_single_part_object_and_nothing_else() {
        let data = b"hello";
        let md5 = "5d41402abc4b2a76b9719d911017c592";
        let headers = |encryption: Option<&str>| ObjectHeaders {
            encryption: encryption.map(str::to_owned),
            ..ObjectHeaders::default()
        };
        let quoted = format!("\"{md5}\"");
        for encryption in [None, Some("AES256")] {
            let hash = ContentHash::of(&headers(encryption), Some(&quoted), true);
            assert_eq!(hash, Some(ContentHash::Md5(md5.into())), "{encryption:?}");
            assert!(hash.unwrap().matches(data));
        }
        let mut v = Verifier::new(ContentHash::Md5(md5.into()), 5);
        assert!(matches!(
            v.feed(0, &Bytes::from_static(b"hellp")),
            Verdict::Mismatch { .. }
        ));
        let no_md5 = [
            (Some("aws:kms"), quoted.as_str()),
            (Some("SSE-C"), quoted.as_str()),
            (None, "\"5d41402abc4b2a76b9719d911017c592-2\""),
            (None, "1f-5e0a-3b"),
            (None, "\"zz41402abc4b2a76b9719d911017c592\""),
        ];
        for (encryption, etag) in no_md5 {
            assert_eq!(
                ContentHash::of(&headers(encryption), Some(etag), true),
                None,
                "{etag}"
            );
        }
        assert_eq!(
            ContentHash::of(&headers(None), Some(&quoted), false),
            None,
            "turned off"
        );
        let mut summed = headers(None);
        summed
            .user_metadata
            .insert(artifact::SHA256.into(), sha256_hex(data));
        let hash = ContentHash::of(&summed, Some(&quoted), true);
        assert_eq!(hash, Some(sha(data)), "the SHA-256 comes first");
    }

    #[test]
    fn in_order_reads_match_and_a_changed_byte_does_not() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut v = Verifier::new(sha(&data), data.len() as u64);
        let bytes = Bytes::from(data.clone());
        assert_eq!(v.feed(0, &bytes.slice(..4096)), Verdict::Open);
        assert_eq!(v.feed(4096, &bytes.slice(4096..)), Verdict::Matches);

        let mut bad = data.clone();
        bad[5000] ^= 1;
        let mut v = Verifier::new(sha(&data), data.len() as u64);
        let verdict = v.feed(0, &Bytes::from(bad.clone()));
        assert_eq!(
            verdict,
            Verdict::Mismatch {
                expected: sha(&data),
                actual: sha256_hex(&bad)
            }
        );
    }

    #[test]
    fn a_reader_that_skips_ahead_is_not_judged() {
        let data = Bytes::from(vec![1u8; 100]);
        let mut v = Verifier::new(sha(&[2u8; 100]), 100);
        let far = Bytes::from(vec![0u8; MAX_PENDING + 1]);
        assert_eq!(v.feed(50, &far), Verdict::Open);
        assert_eq!(v.feed(0, &data), Verdict::Open);
    }

    proptest! {
        /// Reads of any sizes, shuffled a little as the kernel does, overlapping or
        /// repeated, verify exactly when every byte was read.
        #[test]
        fn any_read_order_within_reach_verifies(
            len in 1usize..20_000,
            cuts in proptest::collection::vec(1usize..4096, 1..40),
            swaps in proptest::collection::vec(0usize..40, 0..10),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let bytes = Bytes::from(data.clone());
            let mut reads = Vec::new();
            let (mut at, mut i) = (0, 0);
            while at < len {
                let end = (at + cuts[i % cuts.len()]).min(len);
                reads.push((at, end));
                at = end;
                i += 1;
            }
            for s in swaps {
                let a = s % reads.len();
                let b = (a + 1).min(reads.len() - 1);
                reads.swap(a, b);
            }
            reads.push((0, len / 2)); // a re-read changes nothing
            let mut v = Verifier::new(sha(&data), len as u64);
            let verdicts: Vec<Verdict> = reads
                .iter()
                .map(|&(a, b)| v.feed(a as u64, &bytes.slice(a..b)))
                .collect();
            prop_assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Matches).count(), 1);
        }
    }
}
