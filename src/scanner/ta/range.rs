//! `highest(n)` and `lowest(n)`: the highest high and lowest low of the n bars before
//! this one (not including it), first defined at index n. Amortised O(1) per bar with a
//! monotonic deque ([`Extreme`], which the scanner's fixed indicator set uses too).

use super::ring::wrap;

/// The extreme (the highest with `MAX`, else the lowest) of the last `window` pushed
/// values, in O(1) amortised: a deque of candidates, each later and less extreme than the
/// one before it.
#[derive(Debug, Clone)]
pub(in crate::scanner) struct Extreme<const MAX: bool> {
    /// (bar index, value), oldest first, in a ring of `window + 1`.
    items: Box<[(u64, f64)]>,
    head: usize,
    len: usize,
    window: u64,
}

impl<const MAX: bool> Extreme<MAX> {
    pub(in crate::scanner) fn new(window: usize) -> Extreme<MAX> {
        Extreme {
            items: vec![(0, 0.0); window + 1].into_boxed_slice(),
            head: 0,
            len: 0,
            window: window as u64,
        }
    }

    fn slot(&self, i: usize) -> usize {
        wrap(self.head + i, self.items.len())
    }

    /// `a` is at least as extreme as `b`, so `b` can never be the answer again.
    fn beats(a: f64, b: f64) -> bool {
        if MAX { a >= b } else { a <= b }
    }

    /// The extreme over bars `index - window .. index`, if bar `index - window` exists.
    pub(in crate::scanner) fn prior(&mut self, index: u64) -> Option<f64> {
        let expired = (self.len > 0 && self.items[self.head].0 + self.window < index) as usize;
        self.head = wrap(self.head + expired, self.items.len());
        self.len -= expired;
        (index >= self.window && self.len > 0).then(|| self.items[self.head].1)
    }

    pub(in crate::scanner) fn push(&mut self, index: u64, x: f64) {
        while self.len > 0 && Self::beats(x, self.items[self.slot(self.len - 1)].1) {
            self.len -= 1;
        }
        if self.len == self.items.len() {
            // Only reachable if `prior` was skipped; keep the newest window.
            self.head = wrap(self.head + 1, self.items.len());
            self.len -= 1;
        }
        let at = self.slot(self.len);
        self.items[at] = (index, x);
        self.len += 1;
    }
}

/// `highest(n)` (`MAX`) or `lowest(n)`, and its value before the last bar.
#[derive(Debug, Clone)]
pub(super) struct Prior<const MAX: bool> {
    extreme: Extreme<MAX>,
    value: f64,
}

impl<const MAX: bool> Prior<MAX> {
    /// Over the `n` bars before each one, `n` at least 1.
    pub(super) fn new(n: u32) -> Prior<MAX> {
        Prior {
            extreme: Extreme::new(n.max(1) as usize),
            value: f64::NAN,
        }
    }

    /// Takes bar `t`'s high (or low).
    #[inline]
    pub(super) fn update(&mut self, t: u64, x: f64) {
        self.value = self.extreme.prior(t).unwrap_or(f64::NAN);
        self.extreme.push(t, x);
    }

    /// The extreme of the n bars before the last one, NaN until there are n.
    #[inline]
    pub(super) fn value(&self) -> f64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extreme_excludes_the_bar_itself_and_forgets_what_left() {
        let xs = [5.0, 1.0, 4.0, 4.0, 2.0, 9.0, 3.0, 3.0, 3.0];
        let mut high = Prior::<true>::new(3);
        let mut low = Prior::<false>::new(3);
        for (t, &x) in xs.iter().enumerate() {
            high.update(t as u64, x);
            low.update(t as u64, x);
            if t < 3 {
                assert!(high.value().is_nan() && low.value().is_nan(), "at {t}");
            } else {
                let before = &xs[t - 3..t];
                let max = before.iter().copied().fold(f64::MIN, f64::max);
                let min = before.iter().copied().fold(f64::MAX, f64::min);
                assert_eq!((high.value(), low.value()), (max, min), "at {t}");
            }
        }
    }
}
