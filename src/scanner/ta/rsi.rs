//! `rsi(n)`, Wilder's, as TA-Lib computes it: the average gain and loss are seeded with
//! the means of the first n close-to-close changes (so the first value is at index n),
//! then smoothed `avg = (avg (n - 1) + x) / n`; `rsi = 100 gain / (gain + loss)`. A
//! series with neither gains nor losses reads 50, as the scanner's fixed set does
//! (TA-Lib says 0, which would read as oversold). O(1) per bar.

/// One RSI's state.
#[derive(Debug, Clone)]
pub(super) struct Rsi {
    n: u64,
    /// `n - 1` and `1 / n`, for Wilder's smoothing.
    keep: f64,
    inv_n: f64,
    gain: f64,
    loss: f64,
    value: f64,
}

impl Rsi {
    /// `rsi(n)`, `n` at least 1.
    pub(super) fn new(n: u32) -> Rsi {
        let n = n.max(1);
        Rsi {
            n: u64::from(n),
            keep: f64::from(n - 1),
            inv_n: 1.0 / f64::from(n),
            gain: 0.0,
            loss: 0.0,
            value: f64::NAN,
        }
    }

    /// Takes bar `t`'s change from the bar before (`t` from 1 on).
    #[inline]
    pub(super) fn update(&mut self, t: u64, change: f64) {
        let (gain, loss) = (change.max(0.0), (-change).max(0.0));
        if t > self.n {
            self.gain = (self.gain * self.keep + gain) * self.inv_n;
            self.loss = (self.loss * self.keep + loss) * self.inv_n;
        } else {
            // Seeding: the sums of the first n changes, averaged on the n-th.
            self.gain += gain;
            self.loss += loss;
            if t < self.n {
                return;
            }
            self.gain *= self.inv_n;
            self.loss *= self.inv_n;
        }
        let total = self.gain + self.loss;
        self.value = if total > 0.0 {
            100.0 * self.gain / total
        } else {
            50.0
        };
    }

    /// The value, NaN before index n.
    #[inline]
    pub(super) fn value(&self) -> f64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilders_own_example_seeds_with_plain_averages() {
        // RSI(14) over Wilder's example closes: 70.46 on the 14th change, then 66.25.
        let closes = [
            44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03,
            45.61, 46.28, 46.28, 46.00,
        ];
        let mut rsi = Rsi::new(14);
        let mut seen = Vec::new();
        for t in 1..closes.len() {
            rsi.update(t as u64, closes[t] - closes[t - 1]);
            seen.push(rsi.value());
        }
        assert!(seen[..13].iter().all(|v| v.is_nan()));
        assert!((seen[13] - 70.46).abs() < 0.01, "{}", seen[13]);
        assert!((seen[14] - 66.25).abs() < 0.01, "{}", seen[14]);
    }

    #[test]
    fn no_gains_and_no_losses_read_neutral() {
        let mut rsi = Rsi::new(3);
        for t in 1..10 {
            rsi.update(t, 0.0);
        }
        assert_eq!(rsi.value(), 50.0);
    }
}
