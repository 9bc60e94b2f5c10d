//! `PartPlan`: the sizes of a multipart upload's parts, which grow as the file grows.
//!
//! S3 allows 10,000 parts of at most 5 GiB, and objects of at most 5 TiB. Parts of one
//! fixed size cap a file at 10,000 of them (78 GiB at 8 MiB), and the size of a file
//! being written is not known while its first parts go up. So the part size doubles
//! every `tier` parts, from `--upload-part-size`, up to the largest part allowed; `tier`
//! is the largest count of parts that still reaches the object limit within the part
//! limit. A file that fits the first tier uploads exactly as with fixed parts; any file
//! up to 5 TiB fits, whether its size is known at the start or not. Part `n` starts at
//! the same offset in every upload of the plan, so a part is named by its offset alone.

/// What the store accepts in one multipart upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLimits {
    /// Parts in one upload.
    pub max_parts: u32,
    /// Bytes in one part.
    pub max_part: u64,
    /// Bytes in one object.
    pub max_object: u64,
}

/// S3's limits, which MinIO shares.
pub const S3_LIMITS: PartLimits = PartLimits {
    max_parts: 10_000,
    max_part: 5 << 30,
    max_object: 5 << 40,
};

/// One part of an upload: its number (from 1), and the range of the file it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub start: u64,
    pub len: u64,
}

/// The part sizes of every multipart upload of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    base: u64,
    /// Parts of one size before the size doubles.
    tier: u32,
    limits: PartLimits,
    /// The largest file the plan can upload.
    max_size: u64,
}

impl PartPlan {
    /// The plan for parts from `base` bytes under S3's limits.
    pub fn new(base: u64) -> PartPlan {
        PartPlan::with_limits(base, S3_LIMITS)
    }

    /// The plan for parts from `base` bytes (at least 1) under `limits`.
    pub fn with_limits(base: u64, limits: PartLimits) -> PartPlan {
        let base = base.clamp(1, limits.max_part);
        let plan = |tier| PartPlan {
            base,
            tier,
            limits,
            max_size: 0,
        };
        // Slowest growth that still reaches the object limit; failing that (a tiny
        // part limit), the fastest.
        let tier = (1..=limits.max_parts.max(1))
            .rev()
            .find(|&tier| plan(tier).capacity() >= limits.max_object)
            .unwrap_or(1);
        let capacity = plan(tier).capacity();
        PartPlan {
            max_size: capacity.min(limits.max_object),
            ..plan(tier)
        }
    }

    /// The largest part the store takes.
    pub fn max_part(&self) -> u64 {
        self.limits.max_part
    }

    /// The largest file this plan uploads: a write past it is EFBIG.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The largest file whose parts all have the base size.
    pub fn uniform_max(&self) -> u64 {
        self.end_of(self.tier).min(self.max_size)
    }

    /// The size of part `number` (from 1).
    pub fn size_of(&self, number: u32) -> u64 {
        let doublings = number.saturating_sub(1) / self.tier;
        self.tier_size(doublings)
    }

    /// The parts of a file of `size` bytes, in order: one empty part for an empty file.
    pub fn parts(&self, size: u64) -> impl Iterator<Item = Part> + '_ {
        let mut next = Some(Part {
            number: 1,
            start: 0,
            len: self.size_of(1).min(size),
        });
        std::iter::from_fn(move || {
            let part = next?;
            let start = part.start + part.len;
            next = (start < size && part.number < self.limits.max_parts).then(|| Part {
                number: part.number + 1,
                start,
                len: self.size_of(part.number + 1).min(size - start),
            });
            Some(part)
        })
    }

    /// Bytes in parts `1..=number`: where part `number + 1` starts.
    pub fn end_of(&self, number: u32) -> u64 {
        let full_tiers = number / self.tier;
        let rest = u64::from(number % self.tier);
        let whole: u64 = (0..full_tiers)
            .map(|t| self.tier_size(t).saturating_mul(u64::from(self.tier)))
            .fold(0, u64::saturating_add);
        whole.saturating_add(rest.saturating_mul(self.tier_size(full_tiers)))
    }

    fn tier_size(&self, doublings: u32) -> u64 {
        // A shift drops high bits silently: shifted back, it must give the base again.
        let grown = match self.base.checked_shl(doublings) {
            Some(grown) if grown >> doublings == self.base => grown,
            _ => u64::MAX,
        };
        grown.min(self.limits.max_part)
    }

    fn capacity(&self) -> u64 {
        self.end_of(self.limits.max_parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn files_of_the_first_tier_use_the_base_size() {
        let plan = PartPlan::new(8 * MIB);
        let parts: Vec<Part> = plan.parts(20 * MIB).collect();
        let lens: Vec<u64> = parts.iter().map(|p| p.len).collect();
        assert_eq!(lens, [8 * MIB, 8 * MIB, 4 * MIB]);
        assert_eq!(parts[2].start, 16 * MIB);
        assert_eq!(plan.size_of(1000), 8 * MIB);
    }

    #[test]
    fn every_base_reaches_five_tebibytes_in_ten_thousand_parts() {
        for base_mib in [5, 6, 8, 16, 64, 100, 1000, 5120] {
            let plan = PartPlan::new(base_mib * MIB);
            assert_eq!(plan.max_size(), 5 << 40, "base {base_mib} MiB");
            let last = plan.parts(plan.max_size()).last().unwrap();
            assert!(last.number <= 10_000, "base {base_mib} MiB: {last:?}");
            assert_eq!(last.start + last.len, 5 << 40);
            assert!(plan.size_of(10_000) <= 5 << 30);
        }
    }

    #[test]
    fn parts_grow_only_past_the_fixed_size_ceiling() {
        let plan = PartPlan::new(8 * MIB);
        // 78 GiB was the ceiling with 8 MiB parts; the growth starts well inside it.
        assert_eq!(plan.tier, 1089);
        assert!(plan.end_of(plan.tier) <= 10_000 * 8 * MIB);
        assert_eq!(plan.size_of(plan.tier + 1), 16 * MIB);
    }

    #[test]
    fn a_tiny_part_limit_still_grows_to_its_largest_part() {
        let limits = PartLimits {
            max_parts: 4,
            max_part: 8,
            max_object: 1000,
        };
        let plan = PartPlan::with_limits(1, limits);
        assert_eq!(plan.max_size(), 1 + 2 + 4 + 8);
        let lens: Vec<u64> = plan.parts(15).map(|p| p.len).collect();
        assert_eq!(lens, [1, 2, 4, 8]);
    }

    proptest! {
        #[test]
        fn parts_tile_the_file_within_the_limits(
            base in 1u64..=64,
            max_parts in 1u32..=50,
            max_part in 1u64..=512,
            max_object in 1u64..=20_000,
            size_share in 0.0f64..=1.0,
        ) {
            let limits = PartLimits { max_parts, max_part, max_object };
            let plan = PartPlan::with_limits(base, limits);
            prop_assert!(plan.max_size() <= max_object);
            let size = (plan.max_size() as f64 * size_share) as u64;
            let mut end = 0;
            for part in plan.parts(size) {
                prop_assert_eq!(part.start, end);
                prop_assert_eq!(part.start, plan.end_of(part.number - 1));
                prop_assert!(part.number <= max_parts);
                prop_assert!(part.len <= max_part);
                prop_assert!(part.len == plan.size_of(part.number) || part.start + part.len == size);
                end += part.len;
            }
            prop_assert_eq!(end, size);
        }
    }
}
