//! Fixed-bucket histograms of durations, updated on the hot path with one relaxed atomic add per
//! observation. Buckets hold their own counts (not cumulative ones); the exposition adds them up, and the
//! `_count` is their total, so `+Inf` and `_count` can never disagree.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets in microseconds (Prometheus' `le`, inclusive), from 100 µs to 30 s: a query
/// through a pooler takes from a fraction of a millisecond to minutes, and a queue wait from nothing to
/// query_wait_timeout (120 s by default). Anything longer lands in `+Inf`.
pub const BOUNDS_US: [u64; 17] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// The buckets, `+Inf` last.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Counts of durations per bucket.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, us: u64) {
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records `n` durations that add up to `total_us`, as `n` observations of their mean (one add). The
    /// pools learn their counts in batches (a link's [`crate::client::Counts`]), mostly of one transaction or
    /// one query, so the mean is the value itself almost always; the `_sum` comes from the exact totals.
    #[inline]
    pub fn observe_mean(&self, total_us: u64, n: u64) {
        if let Some(mean) = total_us.checked_div(n) {
            self.buckets[bucket(mean)].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The count of each bucket (not cumulative), `+Inf` last.
    pub fn counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }
}

/// The bucket of a duration: the first whose bound is at least `us`.
#[inline]
pub fn bucket(us: u64) -> usize {
    BOUNDS_US.partition_point(|&bound| bound < us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_increasing() {
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(100), 0);
        assert_eq!(bucket(101), 1);
        assert_eq!(bucket(1_000_000), 12);
        assert_eq!(bucket(30_000_000), BOUNDS_US.len() - 1);
        assert_eq!(bucket(30_000_001), BUCKETS - 1);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::default();
        h.observe(90);
        h.observe(2_000);
        h.observe_mean(3 * 40_000, 3);
        h.observe_mean(7, 0);
        h.observe(u64::MAX);
        let c = h.counts();
        assert_eq!(c[0], 1);
        assert_eq!(c[bucket(2_000)], 1);
        assert_eq!(c[bucket(40_000)], 3);
        assert_eq!(c[BUCKETS - 1], 1);
        assert_eq!(c.iter().sum::<u64>(), 6);
    }
}
