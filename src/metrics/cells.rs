//! Counters that one thread writes and any thread reads.
//!
//! `/metrics` on one edge adds up every edge's counters, so they are atomics; but only
//! the edge that owns them writes them, so a write is a plain load and store (the same
//! instructions as a `u64` increment), never a locked read-modify-write on the hot path.
//! A second writer would lose counts, never memory safety.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A count written by its owner alone.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Sets it (a gauge).
    pub fn set(&self, value: u64) {
        self.0.store(value, Relaxed);
    }

    /// Its value now.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A fixed-bucket histogram.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[Counter]>,
    /// The sum's `f64` bits.
    sum: Counter,
    count: Counter,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending); `+Inf` is implied.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| Counter::default()).collect(),
            sum: Counter::default(),
            count: Counter::default(),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i].inc();
        }
        self.sum
            .set((f64::from_bits(self.sum.get()) + value).to_bits());
        self.count.inc();
    }

    /// The bounds, and the cumulative counts, sum and count of `parts` added up (they share
    /// the bounds of the first).
    pub fn merged(parts: &[&Histogram]) -> Option<Merged> {
        let first = parts.first()?;
        let mut merged = Merged {
            bounds: first.bounds,
            cumulative: vec![0; first.bounds.len()],
            sum: 0.0,
            count: 0,
        };
        for part in parts {
            let mut running = 0;
            for (slot, count) in merged.cumulative.iter_mut().zip(part.counts.iter()) {
                running += count.get();
                *slot += running;
            }
            merged.sum += f64::from_bits(part.sum.get());
            merged.count += part.count.get();
        }
        Some(merged)
    }
}

/// Histograms added up, as rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// Upper bounds.
    pub bounds: &'static [f64],
    /// Observations at or below each bound.
    pub cumulative: Vec<u64>,
    /// Sum of every observation.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

/// Counts by a numeric code (an HTTP status, a close code): one slot per code in a range,
/// so counting never allocates or hashes.
#[derive(Debug)]
pub struct Tally {
    first: u16,
    counts: Box<[Counter]>,
}

impl Tally {
    /// Slots for every code in `range`.
    pub fn new(range: RangeInclusive<u16>) -> Tally {
        Tally {
            first: *range.start(),
            counts: range.map(|_| Counter::default()).collect(),
        }
    }

    /// Counts `code`; one outside the range is not counted (callers send known codes).
    pub fn count(&self, code: u16) {
        let slot = code.checked_sub(self.first).map(usize::from);
        if let Some(counter) = slot.and_then(|i| self.counts.get(i)) {
            counter.inc();
        }
    }

    /// The codes counted so far and their counts, in code order.
    pub fn nonzero(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        (self.first..)
            .zip(self.counts.iter())
            .map(|(code, n)| (code, n.get()))
            .filter(|&(_, n)| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_add_up_cumulatively() {
        let (a, b) = (Histogram::new(&[1.0, 2.0]), Histogram::new(&[1.0, 2.0]));
        for v in [0.5, 1.5, 9.0] {
            a.observe(v);
        }
        b.observe(1.7);
        let m = Histogram::merged(&[&a, &b]).expect("parts");
        assert_eq!(m.cumulative, vec![1, 3]);
        assert_eq!(m.count, 4);
        assert!((m.sum - 12.7).abs() < 1e-9);
    }

    #[test]
    fn a_tally_counts_codes_in_its_range_only() {
        let t = Tally::new(100..=599);
        for code in [404, 200, 404, 99, 600] {
            t.count(code);
        }
        assert_eq!(t.nonzero().collect::<Vec<_>>(), vec![(200, 1), (404, 2)]);
    }
}
