//! `atr(n)`, Wilder's average true range as TA-Lib computes it. The true range
//! `max(high - low, |high - prev close|, |low - prev close|)` exists from bar 1 (bar 0
//! has no previous close); the ATR is seeded at index n with the mean of the true
//! ranges of bars 1..n, then `atr = (atr (n - 1) + tr) / n`. O(1) per bar.

/// The true range of a bar given the previous close.
#[inline]
pub(super) fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    (high - low)
        .max((high - prev_close).abs())
        .max((low - prev_close).abs())
}

/// One ATR's state.
#[derive(Debug, Clone)]
pub(super) struct Atr {
    n: u64,
    keep: f64,
    inv_n: f64,
    /// The sum of the true ranges while seeding, then the ATR.
    acc: f64,
    value: f64,
}

impl Atr {
    /// `atr(n)`, `n` at least 1.
    pub(super) fn new(n: u32) -> Atr {
        let n = n.max(1);
        Atr {
            n: u64::from(n),
            keep: f64::from(n - 1),
            inv_n: 1.0 / f64::from(n),
            acc: 0.0,
            value: f64::NAN,
        }
    }

    /// Takes bar `t`'s true range (`t` from 1 on).
    #[inline]
    pub(super) fn update(&mut self, t: u64, tr: f64) {
        if t > self.n {
            self.value = (self.value * self.keep + tr) * self.inv_n;
        } else {
            self.acc += tr;
            if t == self.n {
                self.value = self.acc * self.inv_n;
            }
        }
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
    fn the_true_range_reaches_back_to_the_previous_close() {
        for (high, low, prev, want) in [
            (11.0, 10.0, 10.5, 1.0),
            (11.0, 10.0, 8.0, 3.0),
            (11.0, 10.0, 13.0, 3.0),
        ] {
            assert_eq!(true_range(high, low, prev), want);
        }
    }

    #[test]
    fn seeded_with_the_mean_of_the_first_n_true_ranges() {
        let mut atr = Atr::new(2);
        atr.update(1, 1.0);
        assert!(atr.value().is_nan());
        atr.update(2, 3.0);
        assert_eq!(atr.value(), 2.0);
        atr.update(3, 4.0);
        assert_eq!(atr.value(), 3.0);
    }
}
