//! Sliding windows over the closes: the mean (`sma(n)`) and the population standard
//! deviation (the bands of the same n) of the last n closes, in O(1) per bar, all
//! lengths reading one shared ring. Nothing is ever subtracted from a running total, so
//! neither drift nor the memory of a large move that has left the window can spoil a
//! quiet window: the result is as accurate as a two-pass computation over the window.
//!
//! A window of n is cut into blocks of h = n/2 closes (rounded down): the last n closes
//! are a suffix of the block before last, the whole last block, and a prefix of the
//! current one. Each bar adds its close to the prefix, and builds one suffix of the last
//! block (backwards, from the ring), so that every suffix is ready by the time it is
//! needed; the three parts' sums and Welford M2s are merged with Chan's formula, whose
//! terms are all non-negative. A window whose closes are all equal reads its mean as that
//! close and its deviation as exactly 0 (a run of equal closes is counted) rather than
//! whatever rounding leaves: a flat window has no width.

use super::ring::Ring;

/// A sum and a sum of squared deviations from its mean, over a count kept by the caller.
#[derive(Debug, Clone, Copy, Default)]
struct Part {
    sum: f64,
    m2: f64,
}

impl Part {
    /// `self` (of `count` values) with `x` added: Welford's update,
    /// `m2 += (x - mean)² c / (c + 1)`, written with one divide.
    #[inline(always)]
    fn add(self, count: usize, x: f64, spread: bool) -> Part {
        let m2 = if spread && count > 0 {
            let c = count as f64;
            let d = c * x - self.sum; // c (x - mean)
            self.m2 + d * d / (c * (c + 1.0))
        } else {
            self.m2
        };
        Part {
            sum: self.sum + x,
            m2,
        }
    }

    /// `self` (of `n` values) and `other` (of `m`) together: Chan et al.'s merge,
    /// `m2 = m2a + m2b + (mean_b - mean_a)² n m / (n + m)`, written with one divide.
    #[inline(always)]
    fn merge(self, n: usize, other: Part, m: usize, spread: bool) -> Part {
        if n == 0 {
            return other;
        }
        let (a, b) = (n as f64, m as f64);
        let m2 = if spread && m > 0 {
            let d = a * other.sum - b * self.sum; // n m (mean_b - mean_a)
            self.m2 + other.m2 + d * d / (a * b * (a + b))
        } else {
            self.m2 + other.m2
        };
        Part {
            sum: self.sum + other.sum,
            m2,
        }
    }
}

/// One window's blocks, and its mean and deviation after the last close.
#[derive(Debug, Clone)]
struct Window {
    n: usize,
    /// Block length, n/2.
    h: usize,
    inv_n: f64,
    /// Some band reads the deviation; an sma alone skips its arithmetic.
    spread: bool,
    /// Position of the next close in the current block.
    at: usize,
    prefix: Part,
    last_block: Part,
    /// Suffixes of the block before last (`older[i]`: its closes from `i` on), and those
    /// of the last block, built while the current one fills.
    older: Box<[Part]>,
    building: Box<[Part]>,
    mean: f64,
    std_dev: f64,
    /// Without a deviation: the running sum of the last n closes, and the pushes since
    /// it was last summed again from the ring.
    sum: f64,
    since_exact: usize,
}

impl Window {
    fn new(n: usize, spread: bool) -> Window {
        // Only the deviation needs blocks: a running sum cannot lose a mean's digits the
        // way it loses a small variance's, and it is summed again exactly once per window.
        let h = if spread { n / 2 } else { 0 };
        Window {
            n,
            h,
            inv_n: 1.0 / n as f64,
            spread,
            at: 0,
            prefix: Part::default(),
            last_block: Part::default(),
            older: vec![Part::default(); h].into_boxed_slice(),
            building: vec![Part::default(); h].into_boxed_slice(),
            mean: f64::NAN,
            std_dev: f64::NAN,
            sum: 0.0,
            since_exact: 0,
        }
    }

    /// The mean, from a running sum summed again from the ring once per window (so
    /// rounding never gathers over more than n closes).
    #[inline(always)]
    fn push_mean(&mut self, ring: &Ring<f64>) {
        let n = self.n;
        self.sum += ring.back(1);
        if ring.len() > n {
            self.sum -= ring.back(n + 1);
        }
        if ring.len() < n {
            return;
        }
        self.since_exact += 1;
        if self.since_exact >= n {
            self.since_exact = 0;
            self.sum = (1..=n).map(|k| ring.back(k)).sum();
        }
        self.mean = self.sum * self.inv_n;
    }

    /// Takes the close just pushed onto `ring` (whose capacity is at least n).
    #[inline(always)]
    fn push(&mut self, ring: &Ring<f64>) {
        let (n, h, j, spread) = (self.n, self.h, self.at, self.spread);
        let x = ring.back(1);
        if n == 1 {
            // The window is the close itself.
            (self.mean, self.std_dev) = (x, 0.0);
            return;
        }
        // The mean comes from the running sum whether or not a band shares the window,
        // so `sma(n)` reads the same with or without `bb_*(n, k)` beside it.
        self.push_mean(ring);
        if !spread {
            return;
        }
        self.prefix = self.prefix.add(j, x, spread);
        // The last block's suffix from i = h-1-j, once there is a last block: its close
        // i is 2j+2 back.
        if ring.len() >= 2 * j + 2 {
            let i = h - 1 - j;
            let rest = if j == 0 {
                Part::default()
            } else {
                self.building[i + 1]
            };
            self.building[i] = rest.add(j, ring.back(2 * j + 2), spread);
        }
        if ring.len() >= n {
            // The last n closes: n-1-h-j of the block before last, the last block, and
            // the j+1 of this one.
            let from_older = n - 1 - h - j;
            let older = if from_older > 0 {
                self.older[h - from_older]
            } else {
                Part::default()
            };
            let total = older.merge(from_older, self.last_block, h, spread).merge(
                from_older + h,
                self.prefix,
                j + 1,
                spread,
            );
            self.std_dev = (total.m2 * self.inv_n).sqrt();
        }
        self.at += 1;
        if self.at == h {
            self.at = 0;
            self.last_block = std::mem::take(&mut self.prefix);
            std::mem::swap(&mut self.older, &mut self.building);
        }
    }
}

/// The close windows a symbol's indicators asked for, and the ring they slide over.
#[derive(Debug, Clone)]
pub(super) struct Closes {
    ring: Ring<f64>,
    windows: Box<[Window]>,
    last: f64,
    /// Closes in a row equal to the last one, counting it.
    flat: usize,
}

impl Closes {
    /// Windows of the given lengths (each at least 1), with the deviation where asked.
    pub(super) fn new(windows: &[(usize, bool)]) -> Closes {
        let longest = windows.iter().map(|&(n, _)| n).max().unwrap_or(0);
        Closes {
            // One more than the longest: a running sum takes out the close that left.
            ring: Ring::new(longest + 1),
            windows: windows.iter().map(|&(n, s)| Window::new(n, s)).collect(),
            last: f64::NAN,
            flat: 0,
        }
    }

    #[inline]
    pub(super) fn push(&mut self, x: f64) {
        if self.windows.is_empty() {
            return;
        }
        self.flat = if x == self.last { self.flat + 1 } else { 1 };
        self.last = x;
        self.ring.push(x);
        for w in self.windows.iter_mut() {
            w.push(&self.ring);
        }
    }

    /// Window `i`'s mean, once it holds n closes (NaN before).
    #[inline]
    pub(super) fn mean(&self, i: usize) -> f64 {
        let w = &self.windows[i];
        if self.flat >= w.n { self.last } else { w.mean }
    }

    /// Window `i`'s population standard deviation, once it holds n closes (NaN before).
    #[inline]
    pub(super) fn std_dev(&self, i: usize) -> f64 {
        let w = &self.windows[i];
        debug_assert!(
            w.spread || w.n == 1,
            "the deviation of a window not asked for it"
        );
        if self.flat >= w.n { 0.0 } else { w.std_dev }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean and population standard deviation, two passes.
    fn plain(xs: &[f64]) -> (f64, f64) {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        (mean, var.sqrt())
    }

    #[test]
    fn every_length_matches_two_passes_at_every_bar() {
        let xs: Vec<f64> = (0..400u32)
            .map(|i| 50.0 + f64::from(i.wrapping_mul(2_654_435_761) % 1_000) / 100.0)
            .collect();
        let lengths: Vec<(usize, bool)> = (1..=13).chain([40, 41]).map(|n| (n, true)).collect();
        let mut closes = Closes::new(&lengths);
        for (t, &x) in xs.iter().enumerate() {
            closes.push(x);
            for (i, &(n, _)) in lengths.iter().enumerate() {
                if t + 1 < n {
                    assert!(
                        closes.mean(i).is_nan() && closes.std_dev(i).is_nan(),
                        "{n} at {t}"
                    );
                    continue;
                }
                let (mean, sd) = plain(&xs[t + 1 - n..=t]);
                assert!(
                    (closes.mean(i) - mean).abs() <= 1e-12 * mean,
                    "mean {n} at {t}"
                );
                assert!(
                    (closes.std_dev(i) - sd).abs() <= 1e-12 * mean,
                    "sd {n} at {t}"
                );
            }
        }
    }

    #[test]
    fn a_mean_alone_matches_two_passes_at_every_bar() {
        let xs: Vec<f64> = (0..700u32)
            .map(|i| 50.0 + f64::from(i.wrapping_mul(2_654_435_761) % 1_000) / 100.0)
            .collect();
        let lengths: Vec<(usize, bool)> = [2, 3, 7, 20, 50, 199].map(|n| (n, false)).to_vec();
        let mut closes = Closes::new(&lengths);
        for (t, &x) in xs.iter().enumerate() {
            closes.push(x);
            for (i, &(n, _)) in lengths.iter().enumerate() {
                if t + 1 < n {
                    assert!(closes.mean(i).is_nan(), "{n} at {t}");
                    continue;
                }
                let (mean, _) = plain(&xs[t + 1 - n..=t]);
                assert!(
                    (closes.mean(i) - mean).abs() <= 1e-12 * mean,
                    "mean {n} at {t}"
                );
            }
        }
    }

    #[test]
    fn a_quiet_window_after_a_wild_one_keeps_its_digits() {
        // Sum-of-squares loses everything against the offset; a sliding update that
        // subtracts the closes that left keeps the error of the wild ones.
        let mut xs: Vec<f64> = (0..100).map(|i| 1e6 + f64::from(i % 2) * 5e4).collect();
        xs.extend((0..100).map(|i| 1e6 + f64::from(i % 3) * 1e-3));
        let mut closes = Closes::new(&[(10, true)]);
        for (t, &x) in xs.iter().enumerate() {
            closes.push(x);
            if t >= 9 {
                let (_, sd) = plain(&xs[t - 9..=t]);
                let got = closes.std_dev(0);
                assert!(
                    (got - sd).abs() <= 1e-6 * sd.max(1e-3),
                    "at {t}: {got} against {sd}"
                );
            }
        }
    }

    #[test]
    fn a_flat_window_is_exact() {
        let mut closes = Closes::new(&[(3, true), (5, true)]);
        for x in [0.1, 0.7, 0.3, 0.3, 0.3, 0.3] {
            closes.push(x);
        }
        assert_eq!((closes.mean(0), closes.std_dev(0)), (0.3, 0.0));
        assert!(closes.std_dev(1) > 0.0);
    }
}
