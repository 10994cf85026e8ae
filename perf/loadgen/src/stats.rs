//! The latency histogram: fixed size, O(1) to record, percentiles within 0.1 %.

/// Sub-buckets per power of two: 2^10, so a bucket is at most 1/1024 (0.1 %) wide.
const PRECISION_BITS: u32 = 10;
const SUB: u64 = 1 << PRECISION_BITS;
/// Values are clamped to 2^40 ns (about 18 minutes).
const MAX_BITS: u32 = 40;
const BUCKETS: usize = ((MAX_BITS - PRECISION_BITS + 1) as u64 * SUB + SUB) as usize;

/// A log-linear histogram of nanosecond values, in the manner of HdrHistogram: exact
/// below 2048 ns, then 1024 buckets per power of two. Fixed size (256 KiB), O(1) record,
/// so a run of any length keeps every sample's bucket.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    min: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            min: u64::MAX,
        }
    }

    #[inline]
    fn index(v: u64) -> usize {
        let v = v.min((1u64 << MAX_BITS) - 1);
        if v < 2 * SUB {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - PRECISION_BITS;
        (u64::from(shift) * SUB + (v >> shift)) as usize
    }

    /// The highest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let shift = i / SUB - 1;
        let mantissa = i % SUB + SUB;
        ((mantissa + 1) << shift) - 1
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.min = self.min.min(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn min(&self) -> u64 {
        if self.total == 0 { 0 } else { self.min }
    }

    /// The value at or below which `q` (0..=1) of the samples fall: the upper edge of the
    /// bucket holding the sample of rank ceil(q * n), capped by the largest sample.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The epsilon keeps 0.999 * 1000 at rank 999 whatever the rounding of 0.999.
        let rank = ((q * self.total as f64 - 1e-9).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_upper_agree() {
        let mut prev = 0;
        for v in (0..5000u64).chain((1..40).map(|b| (1u64 << b) + 12345)) {
            let i = Histogram::index(v);
            assert!(i >= prev, "monotone at {v}");
            assert!(Histogram::upper(i) >= v, "upper({i}) < {v}");
            if i > 0 {
                assert!(Histogram::upper(i - 1) < v, "bucket below {i} holds {v}");
            }
            prev = i;
            // Relative width stays within 0.1 %.
            assert!((Histogram::upper(i) - v) as f64 <= v as f64 / 1000.0 + 1.0);
        }
        assert!(Histogram::index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_of_a_uniform_set() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1 µs .. 1 ms
        }
        let within = |got: u64, want: u64| {
            assert!(
                got >= want && (got - want) as f64 <= want as f64 * 0.001 + 1.0,
                "got {got}, want {want}"
            )
        };
        within(h.quantile(0.5), 500_000);
        within(h.quantile(0.9), 900_000);
        within(h.quantile(0.99), 990_000);
        within(h.quantile(0.999), 999_000);
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max(), 1_000_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn percentile_of_a_skewed_set_and_of_nothing() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.99), 0);
        for _ in 0..999 {
            h.record(100);
        }
        h.record(5_000_000_000);
        assert_eq!(h.quantile(0.5), 100);
        assert_eq!(h.quantile(0.999), 100);
        assert_eq!(h.quantile(0.9999), 5_000_000_000);
    }
}
