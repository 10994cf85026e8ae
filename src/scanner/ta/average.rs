//! Moving averages that are not a close window's mean: `ema(n)` (and the seeded EMAs
//! MACD is made of), and the volume averages behind `avg_volume(n)` and
//! `volume_ratio(n)`. O(1) per bar; volumes are summed as integers, so they never drift.

use super::ring::Ring;

/// An EMA seeded at index `seed_at` of its series with the mean of the `n` values ending
/// there, then `ema += k (x - ema)`, `k = 2 / (n + 1)`. `ema(n)` is seeded at `n - 1`;
/// MACD seeds both of its EMAs at `slow - 1` (INDICATORS.md).
#[derive(Debug, Clone)]
pub(super) struct Ema {
    n: u64,
    seed_at: u64,
    k: f64,
    sum: f64,
    value: f64,
}

impl Ema {
    /// `ema(n)`: seeded with the first n values. `n` is at least 1.
    pub(super) fn new(n: u32) -> Ema {
        let n = u64::from(n.max(1));
        Ema::seeded_at(n, n - 1)
    }

    /// Seeded at `seed_at` (at least `n - 1`).
    pub(super) fn seeded_at(n: u64, seed_at: u64) -> Ema {
        Ema {
            n,
            seed_at,
            k: 2.0 / (n as f64 + 1.0),
            sum: 0.0,
            value: f64::NAN,
        }
    }

    /// Takes the value at index `t` of the series (0, 1, 2, ... in turn).
    #[inline]
    pub(super) fn update(&mut self, t: u64, x: f64) {
        if t > self.seed_at {
            self.value += self.k * (x - self.value);
        } else if t + self.n > self.seed_at {
            self.sum += x;
            if t == self.seed_at {
                self.value = self.sum / self.n as f64;
            }
        }
    }

    /// The value, NaN before the seed.
    #[inline]
    pub(super) fn value(&self) -> f64 {
        self.value
    }
}

/// One volume window: the exact sum of the last n volumes, and the mean it had before
/// the last bar, over all n (`prior`) and over as many as there were (`partial`).
#[derive(Debug, Clone)]
struct VolumeWindow {
    n: usize,
    sum: u128,
    prior: f64,
    partial: f64,
}

/// The volume windows asked for, sliding over one ring.
#[derive(Debug, Clone)]
pub(super) struct Volumes {
    ring: Ring<u64>,
    windows: Box<[VolumeWindow]>,
}

impl Volumes {
    /// Windows of the given lengths (each at least 1).
    pub(super) fn new(lengths: &[usize]) -> Volumes {
        Volumes {
            ring: Ring::new(lengths.iter().copied().max().unwrap_or(0)),
            windows: lengths
                .iter()
                .map(|&n| VolumeWindow {
                    n,
                    sum: 0,
                    prior: f64::NAN,
                    partial: f64::NAN,
                })
                .collect(),
        }
    }

    #[inline]
    pub(super) fn push(&mut self, volume: u64) {
        let held = self.ring.len();
        for w in self.windows.iter_mut() {
            // The mean of the n bars before this one (or of those there were), then the
            // window moves on to it.
            let count = held.min(w.n);
            w.partial = if count > 0 {
                to_f64(w.sum) / count as f64
            } else {
                f64::NAN
            };
            w.prior = if held >= w.n {
                w.sum -= u128::from(self.ring.back(w.n));
                w.partial
            } else {
                f64::NAN
            };
            w.sum += u128::from(volume);
        }
        self.ring.push(volume);
    }

    /// Window `i`'s mean volume of the n bars before the last one (NaN until there are n).
    #[inline]
    pub(super) fn prior_mean(&self, i: usize) -> f64 {
        self.windows[i].prior
    }

    /// Window `i`'s mean volume of the up to n bars before the last one (NaN before the
    /// second bar).
    #[inline]
    pub(super) fn partial_mean(&self, i: usize) -> f64 {
        self.windows[i].partial
    }
}

/// `x` as a float (the nearest one below 2^64), by halves: the hardware converts 64 bits,
/// while `u128 as f64` is a library call.
#[inline]
pub(super) fn to_f64(x: u128) -> f64 {
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    (x >> 64) as u64 as f64 * TWO_64 + x as u64 as f64
}

/// `volume / average`: undefined while the average is, or is 0.
#[inline]
pub(super) fn ratio(volume: f64, average: f64) -> f64 {
    if average > 0.0 {
        volume / average
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ema_seeds_with_the_mean_of_the_n_values_ending_at_its_seed() {
        // ema(3) over 1..: seeded with (1 + 2 + 3) / 3 at index 2.
        let mut ema = Ema::new(3);
        let mut seen = Vec::new();
        for (t, x) in [1.0, 2.0, 3.0, 7.0].into_iter().enumerate() {
            ema.update(t as u64, x);
            seen.push(ema.value());
        }
        assert!(seen[0].is_nan() && seen[1].is_nan());
        assert_eq!(&seen[2..], [2.0, 4.5]);
        // Seeded late (MACD's fast EMA): only the n values ending at the seed count.
        let mut late = Ema::seeded_at(2, 3);
        for (t, x) in [100.0, 100.0, 4.0, 6.0].into_iter().enumerate() {
            late.update(t as u64, x);
        }
        assert_eq!(late.value(), 5.0);
    }

    #[test]
    fn volume_means_cover_the_bars_before_this_one() {
        let mut volumes = Volumes::new(&[2, 1]);
        let mut seen = Vec::new();
        let mut partial = Vec::new();
        for v in [10, 20, 0, 0, 40] {
            volumes.push(v);
            seen.push((volumes.prior_mean(0), volumes.prior_mean(1)));
            partial.push(volumes.partial_mean(0));
        }
        assert!(partial[0].is_nan());
        assert_eq!(
            &partial[1..],
            [10.0, 15.0, 10.0, 0.0],
            "up to 2 bars before"
        );
        assert!(seen[0].0.is_nan() && seen[0].1.is_nan() && seen[1].0.is_nan());
        assert_eq!(
            &seen[1..].iter().map(|s| s.1).collect::<Vec<_>>(),
            &[10.0, 20.0, 0.0, 0.0]
        );
        assert_eq!(
            &seen[2..].iter().map(|s| s.0).collect::<Vec<_>>(),
            &[15.0, 10.0, 0.0]
        );
        assert!(ratio(5.0, 0.0).is_nan() && ratio(5.0, f64::NAN).is_nan());
        assert_eq!(ratio(5.0, 2.5), 2.0);
        for x in [0, 1, u128::from(u64::MAX), 1 << 80, u128::MAX] {
            assert!(
                (to_f64(x) - x as f64).abs() <= x as f64 * f64::EPSILON,
                "{x}"
            );
        }
    }
}
