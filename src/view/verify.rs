//! `Verifier`: hashes what a handle reads, in file order, and compares the SHA-256 when
//! the last byte has gone by. The kernel's read-ahead may send reads slightly out of
//! order, so reads ahead of the hashed prefix wait in a small buffer; a reader that jumps
//! around (or too far ahead) is simply not verified.

use std::collections::BTreeMap;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Bytes held for reads that arrived ahead of the hashed prefix.
const MAX_PENDING: usize = 32 << 20;

/// The outcome of a verification that reached the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not at the end yet, or not verifiable any more.
    Open,
    /// The content hashes as expected.
    Matches,
    /// It does not.
    Mismatch {
        /// Hex SHA-256 the object's metadata promised.
        expected: String,
        /// Hex SHA-256 of what was read.
        actual: String,
    },
}

/// A running SHA-256 over a file read front to back.
#[derive(Debug)]
pub struct Verifier {
    expected: String,
    size: u64,
    hasher: Sha256,
    /// Bytes `[0, next)` are hashed.
    next: u64,
    pending: BTreeMap<u64, Bytes>,
    pending_bytes: usize,
    /// Gave up (the reader skipped ahead) or already judged.
    done: bool,
}

impl Verifier {
    /// A verifier of a `size`-byte file that must hash to `expected` (hex).
    pub fn new(expected: &str, size: u64) -> Verifier {
        Verifier {
            expected: expected.to_ascii_lowercase(),
            size,
            hasher: Sha256::new(),
            next: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            done: false,
        }
    }

    /// The hex SHA-256 the content must hash to.
    pub fn expected(&self) -> &str {
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
        if let Some(fresh) = data.get(skip..) {
            self.hasher.update(fresh);
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
        let actual = super::hex(&std::mem::take(&mut self.hasher).finalize());
        if actual == self.expected {
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

    #[test]
    fn in_order_reads_match_and_a_changed_byte_does_not() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut v = Verifier::new(&sha256_hex(&data), data.len() as u64);
        let bytes = Bytes::from(data.clone());
        assert_eq!(v.feed(0, &bytes.slice(..4096)), Verdict::Open);
        assert_eq!(v.feed(4096, &bytes.slice(4096..)), Verdict::Matches);

        let mut bad = data.clone();
        bad[5000] ^= 1;
        let mut v = Verifier::new(&sha256_hex(&data), data.len() as u64);
        let verdict = v.feed(0, &Bytes::from(bad.clone()));
        assert_eq!(
            verdict,
            Verdict::Mismatch {
                expected: sha256_hex(&data),
                actual: sha256_hex(&bad)
            }
        );
    }

    #[test]
    fn a_reader_that_skips_ahead_is_not_judged() {
        let data = Bytes::from(vec![1u8; 100]);
        let mut v = Verifier::new(&sha256_hex(&[2u8; 100]), 100);
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
            let mut v = Verifier::new(&sha256_hex(&data), len as u64);
            let verdicts: Vec<Verdict> = reads
                .iter()
                .map(|&(a, b)| v.feed(a as u64, &bytes.slice(a..b)))
                .collect();
            prop_assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Matches).count(), 1);
        }
    }
}
