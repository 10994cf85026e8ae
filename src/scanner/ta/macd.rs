//! `macd(f, s, g)`, `macd_signal(f, s, g)` and `macd_hist(f, s, g)`, computed once per
//! set of periods, seeded as TA-Lib seeds them: both EMAs at index s-1, the slow one with
//! the mean of closes 0..s-1, the fast one with the mean of the f closes ending at s-1
//! (not the first f); the signal is the EMA(g) of the MACD line from s-1, seeded with the
//! mean of its first g values. All three are defined from s+g-2 on. O(1) per bar.

use super::average::Ema;
use crate::expr::Macd;

/// One MACD's state: its three EMAs and the values after the last bar.
#[derive(Debug, Clone)]
pub(super) struct MacdLine {
    /// Index of the first MACD value, s-1.
    start: u64,
    fast: Ema,
    slow: Ema,
    /// Over the MACD line, indexed from its first value.
    signal: Ema,
    line: f64,
}

impl MacdLine {
    /// Periods at least 1; a fast period longer than the slow one is swapped, as TA-Lib
    /// does (the scan language refuses it anyway).
    pub(super) fn new(periods: Macd) -> MacdLine {
        let (a, b) = (
            u64::from(periods.fast.max(1)),
            u64::from(periods.slow.max(1)),
        );
        let (fast, slow) = (a.min(b), a.max(b));
        let signal = u64::from(periods.signal.max(1));
        MacdLine {
            start: slow - 1,
            fast: Ema::seeded_at(fast, slow - 1),
            slow: Ema::seeded_at(slow, slow - 1),
            signal: Ema::seeded_at(signal, signal - 1),
            line: f64::NAN,
        }
    }

    /// Takes bar `t`'s close.
    #[inline]
    pub(super) fn update(&mut self, t: u64, close: f64) {
        self.fast.update(t, close);
        self.slow.update(t, close);
        if t >= self.start {
            self.line = self.fast.value() - self.slow.value();
            self.signal.update(t - self.start, self.line);
        }
    }

    /// `macd`: NaN until the signal is (TA-Lib outputs the three together).
    #[inline]
    pub(super) fn line(&self) -> f64 {
        if self.signal.value().is_nan() {
            f64::NAN
        } else {
            self.line
        }
    }

    /// `macd_signal`.
    #[inline]
    pub(super) fn signal(&self) -> f64 {
        self.signal.value()
    }

    /// `macd_hist`: the line minus its signal.
    #[inline]
    pub(super) fn hist(&self) -> f64 {
        self.line - self.signal.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_ema_is_seeded_from_the_closes_ending_at_the_slow_seed() {
        // macd(2, 3, 2) over 1, 2, 6, 10: at index 2 fast = (2 + 6) / 2 = 4 and
        // slow = 3, line 1; at 3 fast = 4 + 2/3 (10 - 4) = 8, slow = 3 + (10 - 3) / 2 =
        // 6.5, line 1.5; the signal is seeded with (1 + 1.5) / 2 = 1.25 at index 3.
        let periods = Macd {
            fast: 2,
            slow: 3,
            signal: 2,
        };
        let mut macd = MacdLine::new(periods);
        let mut seen = Vec::new();
        for (t, x) in [1.0, 2.0, 6.0, 10.0].into_iter().enumerate() {
            macd.update(t as u64, x);
            seen.push((macd.line(), macd.signal(), macd.hist()));
        }
        assert!(
            seen[..3]
                .iter()
                .all(|(l, s, h)| l.is_nan() && s.is_nan() && h.is_nan())
        );
        let (line, signal, hist) = seen[3];
        assert!((line - 1.5).abs() < 1e-12, "{line}");
        assert!((signal - 1.25).abs() < 1e-12, "{signal}");
        assert!((hist - 0.25).abs() < 1e-12, "{hist}");
    }
}
