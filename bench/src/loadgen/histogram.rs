//! A fixed-size log-linear histogram of latencies in nanoseconds.
//!
//! Values below 64 have a bucket each; above, every power of two is split
//! into 32 linear sub-buckets, so a bucket is at most 1/32 (3.1 %) of its
//! value wide. The 1,920 buckets cover all of `u64`. Recording is one
//! relaxed atomic add on a table allocated once, so a receive thread records
//! while the progress printer reads, without a lock and without allocating.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Sub-buckets per power of two (and the width of the exact range is
/// `2 * SUB`).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const EXACT: u64 = 2 * SUB;
/// Number of buckets: the exact range, then 32 per power of two from 2^6
/// to 2^63.
pub const BUCKETS: usize = (EXACT + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// The bucket of value `v`.
pub fn bucket(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = exp - SUB_BITS;
    let mantissa = (v >> shift) & (SUB - 1);
    (EXACT + u64::from(exp - SUB_BITS - 1) * SUB + mantissa) as usize
}

/// The smallest and largest value that fall into bucket `b`.
pub fn bucket_range(b: usize) -> (u64, u64) {
    let b = b as u64;
    if b < EXACT {
        return (b, b);
    }
    let exp = (b - EXACT) / SUB + u64::from(SUB_BITS) + 1;
    let mantissa = (b - EXACT) % SUB;
    let shift = exp - u64::from(SUB_BITS);
    let low = (SUB + mantissa) << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// A histogram shared between one recording thread and readers.
#[derive(Debug)]
pub struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl AtomicHistogram {
    /// An empty histogram (allocates its table once).
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn record(&self, v: u64) {
        self.buckets[bucket(v)].fetch_add(1, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// A copy of the counts, for percentiles and merging.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            max: self.max.load(Relaxed),
        }
    }
}

/// A point-in-time copy of a histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    buckets: Vec<u64>,
    max: u64,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            max: 0,
        }
    }
}

impl Snapshot {
    /// Adds `other`'s counts into `self`.
    pub fn merge(&mut self, other: &Snapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.max = self.max.max(other.max);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Largest recorded value (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the upper end of the bucket holding
    /// the `ceil(q * count)`-th smallest value, capped at the exact maximum.
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_range(b).1.min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(63), 63);
        assert_eq!(bucket(64), 64);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        let mut next = 0u64;
        for b in 0..BUCKETS {
            let (low, high) = bucket_range(b);
            assert_eq!(low, next, "bucket {b} starts where {} ended", b.max(1) - 1);
            assert!(high >= low);
            assert_eq!(bucket(low), b);
            assert_eq!(bucket(high), b);
            if b >= EXACT as usize {
                // At most 1/32 of the value wide.
                assert!((high - low + 1) * SUB <= low, "bucket {b}");
            }
            next = high.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
    }

    #[test]
    fn quantiles_of_a_uniform_sample() {
        let h = AtomicHistogram::new();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for v in 1..=10_000u64 {
            h.record(v * 1000); // 1 µs .. 10 ms
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 10_000);
        assert_eq!(s.max(), 10_000_000);
        for (q, want) in [(0.5, 5_000_000f64), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = s.quantile(q).expect("not empty") as f64;
            assert!(
                got >= want && got <= want * 1.032,
                "q{q}: got {got}, want {want}"
            );
        }
        assert_eq!(s.quantile(1.0), Some(10_000_000));
        assert_eq!(s.quantile(0.0), Some(bucket_range(bucket(1000)).1));
    }

    #[test]
    fn merge_adds_counts_and_keeps_max() {
        let a = AtomicHistogram::new();
        let b = AtomicHistogram::new();
        a.record(10);
        a.record(20);
        b.record(5_000);
        let mut s = a.snapshot();
        s.merge(&b.snapshot());
        assert_eq!(s.count(), 3);
        assert_eq!(s.max(), 5_000);
        assert_eq!(s.quantile(0.5), Some(20));
        let mut empty = Snapshot::default();
        empty.merge(&s);
        assert_eq!(empty, s);
    }
}
