//! `LazyFill`: a spool that starts as an existing object's content, copied in only when
//! needed. Opening a file for writing without O_TRUNC costs nothing up front; a read
//! copies the bytes it touches; a truncate drops what lies past it; the first write
//! copies the rest, so that an object replaced since the open fails that write rather
//! than a close with the writer's bytes in the spool. A handle opened read-write and
//! closed unchanged downloads nothing.

use std::ops::Range;

use super::FsError;
use crate::upload::Spool;
use crate::view::FileReader;

/// Bytes asked of the object at a time.
const CHUNK: u64 = 1 << 20;

/// Byte ranges of the spool still to be copied from the object, and the reader to copy
/// them with.
#[derive(Debug)]
pub(super) struct LazyFill {
    view: FileReader,
    missing: Missing,
}

impl LazyFill {
    /// A fill of a spool that stands for `size` bytes of `view`'s content.
    pub(super) fn new(view: FileReader, size: u64) -> LazyFill {
        LazyFill {
            view,
            missing: Missing::new(size),
        }
    }

    /// The spool is now `len` bytes long: nothing past it to copy.
    pub(super) fn truncated(&mut self, len: u64) {
        self.missing.remove(len..u64::MAX);
    }

    /// Copies whatever of `range` is still missing into `spool`.
    pub(super) async fn fill(&mut self, spool: &Spool, range: Range<u64>) -> Result<(), FsError> {
        for gap in self.missing.within(range) {
            let mut offset = gap.start;
            while offset < gap.end {
                let len = (gap.end - offset).min(CHUNK) as u32;
                let chunk = self
                    .view
                    .read(offset, len)
                    .await
                    .map_err(FsError::of_read)?;
                if chunk.data.is_empty() {
                    // The object is shorter than it said: the rest reads as zeros.
                    break;
                }
                spool.write_at(offset, &chunk.data)?;
                offset += chunk.data.len() as u64;
            }
            self.missing.remove(gap);
        }
        Ok(())
    }
}

/// A set of disjoint, sorted, non-empty byte ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Missing {
    ranges: Vec<Range<u64>>,
}

impl Missing {
    fn new(size: u64) -> Missing {
        Missing {
            ranges: (size > 0).then_some(0..size).into_iter().collect(),
        }
    }

    /// Takes `cut` out of the set.
    fn remove(&mut self, cut: Range<u64>) {
        if cut.start >= cut.end {
            return;
        }
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for r in self.ranges.drain(..) {
            if r.end <= cut.start || r.start >= cut.end {
                kept.push(r);
                continue;
            }
            if r.start < cut.start {
                kept.push(r.start..cut.start);
            }
            if cut.end < r.end {
                kept.push(cut.end..r.end);
            }
        }
        self.ranges = kept;
    }

    /// The parts of the set inside `window`.
    fn within(&self, window: Range<u64>) -> Vec<Range<u64>> {
        self.ranges
            .iter()
            .map(|r| r.start.max(window.start)..r.end.min(window.end))
            .filter(|r| r.start < r.end)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, u64),
        Truncate(u64),
        Fill(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..300, 0u64..100).prop_map(|(a, n)| Op::Write(a, n)),
            (0u64..300).prop_map(Op::Truncate),
            (0u64..300, 0u64..100).prop_map(|(a, n)| Op::Fill(a, n)),
        ]
    }

    proptest! {
        /// Against a byte map of "still to copy": the set matches after any sequence.
        #[test]
        fn missing_matches_a_byte_model(size in 0u64..256, ops in proptest::collection::vec(op(), 0..30)) {
            let mut set = Missing::new(size);
            let mut model: Vec<bool> = vec![true; size as usize];
            for op in ops {
                let (cut, len) = match op {
                    Op::Write(a, n) | Op::Fill(a, n) => (a..a + n, None),
                    Op::Truncate(len) => (len..u64::MAX, Some(len)),
                };
                if let Op::Fill(a, n) = op {
                    let expected: Vec<u64> = (a..a + n).filter(|&i| model.get(i as usize) == Some(&true)).collect();
                    let got: Vec<u64> = set.within(a..a + n).into_iter().flatten().collect();
                    prop_assert_eq!(got, expected);
                }
                set.remove(cut.clone());
                let end = cut.end.min(model.len() as u64);
                for i in cut.start.min(end)..end {
                    model[i as usize] = false;
                }
                if let Some(len) = len {
                    model.truncate(len as usize);
                }
            }
            let left: Vec<u64> = set.ranges.iter().cloned().flatten().collect();
            let expected: Vec<u64> = (0..model.len() as u64).filter(|&i| model[i as usize]).collect();
            prop_assert_eq!(left, expected);
            prop_assert!(set.ranges.windows(2).all(|w| w[0].end <= w[1].start));
        }
    }
}
