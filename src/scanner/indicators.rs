//! Incremental indicators over a symbol's bars: O(1) work per bar, fixed memory per
//! symbol. This fixed set feeds the eight scans' fixed form (`scans.rs`), the reference
//! the scanner's own path (`ta::Studies` under a scan set) is checked against; `Bar`,
//! `Reference` and `IndicatorParams` are everyone's.
//!
//! Every update is a bar close. Definitions (the tests recompute each one naively):
//!
//! - `change_pct`: `(close - reference) / reference * 100`. The reference is the previous
//!   bar's close for bar sources (the first bar's own open for the first bar), and the
//!   first price of the run (the session open) for tick sources.
//! - RSI(n), Wilder as TA-Lib defines it: the first value comes with the n-th change,
//!   seeded by the plain averages of the first n gains and losses; after that
//!   `avg = (avg * (n - 1) + x) / n`. `rsi = 100 * gain / (gain + loss)`; a series with
//!   neither gains nor losses reads 50 (TA-Lib says 0, which would read as oversold).
//! - SMA fast and slow: means of the last `fast` and `slow` closes, once there are that many.
//! - Prior high and low: the highest high and lowest low of the `range` bars before this
//!   one (monotonic deques), once there are that many.
//! - Volume average: the mean volume of up to `volume` bars before this one;
//!   `volume_ratio = volume / max(average, 1)` (1 for the first bar; an average under one
//!   share counts as one, so the ratio stays finite after silent bars).
//! - SMA cross: the bar on which `fast - slow` turns from `<= 0` to `> 0` (up) or from
//!   `>= 0` to `< 0` (down); `cross_age` counts bars since then.

use std::time::SystemTime;

use super::ta::{Extreme, wrap};

/// One bar (or one tick, with `open = high = low = close`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// First price of the bar.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Last price.
    pub close: f64,
    /// Volume traded in the bar.
    pub volume: u64,
    /// The source's own time for the bar, when it has one.
    pub ts: Option<SystemTime>,
}

impl Bar {
    /// A tick: one price and its volume.
    pub fn tick(price: f64, volume: u64, ts: Option<SystemTime>) -> Bar {
        Bar {
            open: price,
            high: price,
            low: price,
            close: price,
            volume,
            ts,
        }
    }
}

/// What `change_pct` is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// The previous bar's close (bar sources: csv).
    PrevClose,
    /// The first price of the run (tick sources: sim, jsonl).
    SessionOpen,
}

/// Indicator windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndicatorParams {
    /// RSI period.
    pub rsi: usize,
    /// Fast SMA window.
    pub sma_fast: usize,
    /// Slow SMA window (longer than the fast one).
    pub sma_slow: usize,
    /// Bars in the prior high and low.
    pub range: usize,
    /// Bars in the volume average.
    pub volume: usize,
    /// What `change_pct` is measured against.
    pub reference: Reference,
}

impl Default for IndicatorParams {
    fn default() -> Self {
        IndicatorParams {
            rsi: 14,
            sma_fast: 20,
            sma_slow: 50,
            range: 20,
            volume: 20,
            reference: Reference::SessionOpen,
        }
    }
}

/// A fixed ring of the last `cap` values and their running sum, re-summed exactly at
/// every wrap so rounding never drifts further than one window's worth.
#[derive(Debug, Clone)]
struct Window {
    values: Box<[f64]>,
    next: usize,
    len: usize,
    sum: f64,
    /// A shorter window inside this one (the fast SMA's), with its own running sum.
    short: usize,
    short_sum: f64,
    /// `1 / capacity` and `1 / short`: a multiply is cheaper than a divide per bar.
    inv_cap: f64,
    inv_short: f64,
}

impl Window {
    fn new(cap: usize, short: usize) -> Window {
        let cap = cap.max(1);
        Window {
            values: vec![0.0; cap].into_boxed_slice(),
            next: 0,
            len: 0,
            sum: 0.0,
            short: short.clamp(1, cap),
            short_sum: 0.0,
            inv_cap: 1.0 / cap as f64,
            inv_short: 1.0 / short.clamp(1, cap) as f64,
        }
    }

    /// The value `k` places back (1 is the newest; `k` at most the capacity).
    fn back(&self, k: usize) -> f64 {
        let cap = self.values.len();
        self.values[wrap(self.next + cap - k, cap)]
    }

    #[inline(always)]
    fn push(&mut self, x: f64) {
        let cap = self.values.len();
        // The short window is the whole ring when they are the same size (the volume
        // average's case): its sum is then `sum`, and tracking it twice is wasted work.
        if self.short < cap {
            // The value that leaves the short window when x comes in.
            if self.len >= self.short {
                self.short_sum -= self.back(self.short);
            }
            self.short_sum += x;
        }
        if self.len == cap {
            self.sum -= self.values[self.next];
        } else {
            self.len += 1;
        }
        self.values[self.next] = x;
        self.sum += x;
        self.next += 1;
        if self.next == cap {
            self.resum();
        }
    }

    /// Once per wrap: exact sums again, O(1) amortised. Out of line, so the per-bar path
    /// inlines small.
    #[cold]
    #[inline(never)]
    fn resum(&mut self) {
        self.next = 0;
        self.sum = self.values[..self.len].iter().sum();
        let short = self.short.min(self.len);
        self.short_sum = self.values[self.len - short..self.len].iter().sum();
    }

    fn full(&self) -> bool {
        self.len == self.values.len()
    }

    /// The mean of every value, once full.
    fn mean(&self) -> Option<f64> {
        self.full().then_some(self.sum * self.inv_cap)
    }

    /// The mean of the last `short` values, once there are that many.
    fn short_mean(&self) -> Option<f64> {
        let sum = if self.short < self.values.len() {
            self.short_sum
        } else {
            self.sum
        };
        (self.len >= self.short).then_some(sum * self.inv_short)
    }
}

/// Direction of the last SMA cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cross {
    /// Fast went above slow.
    Up,
    /// Fast went below slow.
    Down,
}

/// What an update carries from one bar to the next.
#[derive(Debug, Clone)]
struct State {
    reference: f64,
    /// `100 / reference` (0 for a zero reference): change_pct per unit of price.
    percent_per_unit: f64,
    reference_kind: Reference,
    /// `1 / rsi_period`, Wilder's smoothing weight.
    rsi_add: f64,
    rsi_period: u32,
    rsi_gain: f64,
    rsi_loss: f64,
    closes: Window,
    highs: Extreme<true>,
    lows: Extreme<false>,
    volumes: Window,
}

/// The incremental state of one symbol, and the values after its last bar.
#[derive(Debug, Clone)]
pub struct Indicators {
    /// The running state only an update needs, apart, so the values a scan cycle reads
    /// sit in fewer cache lines.
    state: Box<State>,
    /// Bars seen.
    pub bars: u64,
    /// The last bar.
    pub last: Option<Bar>,
    /// Change from the reference price, percent.
    pub change_pct: f64,
    /// RSI, from the `rsi`-th change on.
    pub rsi: Option<f64>,
    /// Fast SMA, once there are enough bars.
    pub sma_fast: Option<f64>,
    /// Slow SMA, once there are enough bars.
    pub sma_slow: Option<f64>,
    /// Last cross and the bars since it (0 on the crossing bar).
    pub cross: Option<(Cross, u64)>,
    /// Highest high of the `range` bars before the last one.
    pub prior_high: Option<f64>,
    /// Lowest low of the `range` bars before the last one.
    pub prior_low: Option<f64>,
    /// Mean volume of up to `volume` bars before the last one.
    pub avg_volume: Option<f64>,
    /// The average covers a full `volume` bars.
    pub volume_full: bool,
    /// Last volume over the average (1 for the first bar).
    pub volume_ratio: f64,
}

impl Indicators {
    /// Empty state for `params`.
    pub fn new(params: IndicatorParams) -> Indicators {
        let state = State {
            reference: f64::NAN,
            percent_per_unit: 0.0,
            reference_kind: params.reference,
            rsi_add: 1.0 / params.rsi.max(1) as f64,
            rsi_period: params.rsi.clamp(1, u32::MAX as usize) as u32,
            rsi_gain: 0.0,
            rsi_loss: 0.0,
            closes: Window::new(params.sma_slow.max(params.sma_fast), params.sma_fast),
            highs: Extreme::new(params.range),
            lows: Extreme::new(params.range),
            volumes: Window::new(params.volume, params.volume),
        };
        Indicators {
            state: Box::new(state),
            bars: 0,
            last: None,
            change_pct: 0.0,
            rsi: None,
            sma_fast: None,
            sma_slow: None,
            cross: None,
            prior_high: None,
            prior_low: None,
            avg_volume: None,
            volume_full: false,
            volume_ratio: 1.0,
        }
    }

    /// Takes one bar close.
    pub fn update(&mut self, bar: &Bar) {
        let index = self.bars;
        let prev_close = self.last.map(|b| b.close);

        let reference = match (self.state.reference_kind, prev_close) {
            (Reference::PrevClose, Some(prev)) => Some(prev),
            (Reference::PrevClose, None) => Some(bar.open),
            (Reference::SessionOpen, _) if index == 0 => Some(bar.close),
            (Reference::SessionOpen, _) => None,
        };
        if let Some(reference) = reference {
            // A session's reference stays put: its divide is paid once, not per bar.
            self.state.reference = reference;
            self.state.percent_per_unit = if reference != 0.0 {
                100.0 / reference
            } else {
                0.0
            };
        }
        self.change_pct = (bar.close - self.state.reference) * self.state.percent_per_unit;

        if let Some(prev) = prev_close {
            self.update_rsi(bar.close - prev, index);
        }

        self.update_trend(bar, index);

        self.avg_volume = (self.state.volumes.len > 0).then(|| match self.state.volumes.mean() {
            Some(mean) => mean,
            None => self.state.volumes.sum / self.state.volumes.len as f64,
        });
        self.volume_full = self.state.volumes.full();
        self.volume_ratio = match self.avg_volume {
            Some(avg) => bar.volume as f64 / avg.max(1.0),
            None => 1.0,
        };
        self.state.volumes.push(bar.volume as f64);

        self.last = Some(*bar);
        self.bars += 1;
    }

    /// The SMAs, their cross and the prior range, from bar `index`.
    fn update_trend(&mut self, bar: &Bar, index: u64) {
        let prev_diff = self.sma_fast.zip(self.sma_slow).map(|(f, s)| f - s);
        self.state.closes.push(bar.close);
        self.sma_fast = self.state.closes.short_mean();
        self.sma_slow = self.state.closes.mean();
        let diff = self.sma_fast.zip(self.sma_slow).map(|(f, s)| f - s);
        self.cross = match (prev_diff, diff) {
            (Some(p), Some(d)) if p <= 0.0 && d > 0.0 => Some((Cross::Up, 0)),
            (Some(p), Some(d)) if p >= 0.0 && d < 0.0 => Some((Cross::Down, 0)),
            _ => self.cross.map(|(c, age)| (c, age + 1)),
        };

        self.prior_high = self.state.highs.prior(index);
        self.prior_low = self.state.lows.prior(index);
        self.state.highs.push(index, bar.high);
        self.state.lows.push(index, bar.low);
    }

    /// `change` is the close-to-close change ending at bar `index` (the `index`-th change).
    fn update_rsi(&mut self, change: f64, index: u64) {
        let n = f64::from(self.state.rsi_period);
        let (gain, loss) = (change.max(0.0), (-change).max(0.0));
        let period = u64::from(self.state.rsi_period);
        if index <= period {
            // Seeding: sums of the first n changes, averaged on the n-th.
            self.state.rsi_gain += gain;
            self.state.rsi_loss += loss;
            if index < period {
                return;
            }
            self.state.rsi_gain /= n;
            self.state.rsi_loss /= n;
        } else {
            let add = self.state.rsi_add;
            let keep = 1.0 - add;
            self.state.rsi_gain = self.state.rsi_gain * keep + gain * add;
            self.state.rsi_loss = self.state.rsi_loss * keep + loss * add;
        }
        let total = self.state.rsi_gain + self.state.rsi_loss;
        self.rsi = Some(if total > 0.0 {
            100.0 * self.state.rsi_gain / total
        } else {
            50.0
        });
    }

    /// The last close, if any bar came.
    pub fn close(&self) -> Option<f64> {
        self.last.map(|b| b.close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// A random walk with flat stretches, gaps and zero volumes.
    fn series(n: usize, seed: u64) -> Vec<Bar> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut price = 100.0;
        (0..n)
            .map(|_| {
                let r: f64 = rng.random();
                if r > 0.1 {
                    price *= 1.0 + (rng.random::<f64>() - 0.5) * 0.04;
                }
                let open = price * (1.0 + (rng.random::<f64>() - 0.5) * 0.01);
                let high = price.max(open) * (1.0 + rng.random::<f64>() * 0.01);
                let low = price.min(open) * (1.0 - rng.random::<f64>() * 0.01);
                let volume = if r < 0.05 {
                    0
                } else {
                    rng.random_range(0..1_000_000)
                };
                Bar {
                    open,
                    high,
                    low,
                    close: price,
                    volume,
                    ts: None,
                }
            })
            .collect()
    }

    /// Naive O(N) definitions, recomputed from the whole history at every bar.
    struct Naive<'a> {
        p: IndicatorParams,
        bars: &'a [Bar],
    }

    impl Naive<'_> {
        fn change_pct(&self, t: usize) -> f64 {
            let reference = match self.p.reference {
                Reference::PrevClose if t == 0 => self.bars[0].open,
                Reference::PrevClose => self.bars[t - 1].close,
                Reference::SessionOpen => self.bars[0].close,
            };
            (self.bars[t].close - reference) / reference * 100.0
        }

        fn rsi(&self, t: usize) -> Option<f64> {
            let n = self.p.rsi;
            if t < n {
                return None;
            }
            let change = |i: usize| self.bars[i].close - self.bars[i - 1].close;
            let mut gain = (1..=n).map(|i| change(i).max(0.0)).sum::<f64>() / n as f64;
            let mut loss = (1..=n).map(|i| (-change(i)).max(0.0)).sum::<f64>() / n as f64;
            for i in n + 1..=t {
                gain = (gain * (n as f64 - 1.0) + change(i).max(0.0)) / n as f64;
                loss = (loss * (n as f64 - 1.0) + (-change(i)).max(0.0)) / n as f64;
            }
            Some(if gain + loss > 0.0 {
                100.0 * gain / (gain + loss)
            } else {
                50.0
            })
        }

        fn sma(&self, t: usize, w: usize) -> Option<f64> {
            (t + 1 >= w).then(|| {
                self.bars[t + 1 - w..=t]
                    .iter()
                    .map(|b| b.close)
                    .sum::<f64>()
                    / w as f64
            })
        }

        fn prior(&self, t: usize, high: bool) -> Option<f64> {
            let w = self.p.range;
            (t >= w).then(|| {
                let it = self.bars[t - w..t].iter();
                if high {
                    it.map(|b| b.high).fold(f64::MIN, f64::max)
                } else {
                    it.map(|b| b.low).fold(f64::MAX, f64::min)
                }
            })
        }

        fn avg_volume(&self, t: usize) -> Option<f64> {
            let from = t.saturating_sub(self.p.volume);
            (t > 0).then(|| {
                self.bars[from..t]
                    .iter()
                    .map(|b| b.volume as f64)
                    .sum::<f64>()
                    / (t - from) as f64
            })
        }

        fn cross(&self, t: usize) -> Option<(Cross, u64)> {
            let diff =
                |i: usize| Some(self.sma(i, self.p.sma_fast)? - self.sma(i, self.p.sma_slow)?);
            (1..=t).rev().find_map(|i| match (diff(i - 1), diff(i)) {
                (Some(p), Some(d)) if p <= 0.0 && d > 0.0 => Some((Cross::Up, (t - i) as u64)),
                (Some(p), Some(d)) if p >= 0.0 && d < 0.0 => Some((Cross::Down, (t - i) as u64)),
                _ => None,
            })
        }
    }

    fn close(a: Option<f64>, b: Option<f64>, what: &str, t: usize) {
        match (a, b) {
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{what} at {t}: {a} vs {b}"
            ),
            (a, b) => assert_eq!(a.is_some(), b.is_some(), "{what} at {t}"),
        }
    }

    fn check(params: IndicatorParams, bars: &[Bar]) {
        let naive = Naive { p: params, bars };
        let mut ind = Indicators::new(params);
        for (t, bar) in bars.iter().enumerate() {
            ind.update(bar);
            close(
                Some(ind.change_pct),
                Some(naive.change_pct(t)),
                "change_pct",
                t,
            );
            close(ind.rsi, naive.rsi(t), "rsi", t);
            close(ind.sma_fast, naive.sma(t, params.sma_fast), "sma_fast", t);
            close(ind.sma_slow, naive.sma(t, params.sma_slow), "sma_slow", t);
            close(ind.prior_high, naive.prior(t, true), "prior_high", t);
            close(ind.prior_low, naive.prior(t, false), "prior_low", t);
            close(ind.avg_volume, naive.avg_volume(t), "avg_volume", t);
            assert_eq!(ind.volume_full, t >= params.volume, "volume_full at {t}");
            if let Some(avg) = naive.avg_volume(t).filter(|a| *a > 0.0) {
                close(
                    Some(ind.volume_ratio),
                    Some(bar.volume as f64 / avg),
                    "volume_ratio",
                    t,
                );
            }
            // The cross scan only needs crosses within a few bars; check those exactly.
            let naive_cross = naive.cross(t);
            if naive_cross.is_some_and(|(_, age)| age < 200)
                || ind.cross.is_some_and(|(_, age)| age < 200)
            {
                assert_eq!(ind.cross, naive_cross, "cross at {t}");
            }
        }
    }

    #[test]
    fn match_naive_recomputation_over_a_long_series() {
        let bars = series(5_000, 7);
        check(IndicatorParams::default(), &bars);
        check(
            IndicatorParams {
                reference: Reference::PrevClose,
                ..IndicatorParams::default()
            },
            &bars,
        );
    }

    #[test]
    fn match_naive_with_small_and_odd_windows() {
        let params = IndicatorParams {
            rsi: 3,
            sma_fast: 1,
            sma_slow: 7,
            range: 1,
            volume: 5,
            reference: Reference::PrevClose,
        };
        check(params, &series(3_000, 11));
    }

    #[test]
    fn running_sums_do_not_drift_over_a_million_bars() {
        let bars = series(1_000_000, 3);
        let params = IndicatorParams::default();
        let mut ind = Indicators::new(params);
        for bar in &bars {
            ind.update(bar);
        }
        let naive = Naive {
            p: params,
            bars: &bars,
        };
        let t = bars.len() - 1;
        close(ind.sma_slow, naive.sma(t, params.sma_slow), "sma_slow", t);
        close(ind.sma_fast, naive.sma(t, params.sma_fast), "sma_fast", t);
        close(ind.avg_volume, naive.avg_volume(t), "avg_volume", t);
    }

    #[test]
    fn rsi_seed_follows_ta_lib() {
        // Wilder's own example series, RSI(14): the first value uses plain averages.
        let closes = [
            44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03,
            45.61, 46.28, 46.28, 46.00,
        ];
        let mut ind = Indicators::new(IndicatorParams::default());
        let mut values = Vec::new();
        for c in closes {
            ind.update(&Bar::tick(c, 1, None));
            values.push(ind.rsi);
        }
        assert!(values[..14].iter().all(Option::is_none));
        assert!(
            (values[14].unwrap() - 70.46).abs() < 0.01,
            "{:?}",
            values[14]
        );
        assert!(
            (values[15].unwrap() - 66.25).abs() < 0.01,
            "{:?}",
            values[15]
        );
    }

    #[test]
    fn a_flat_series_reads_neutral() {
        let mut ind = Indicators::new(IndicatorParams::default());
        for _ in 0..30 {
            ind.update(&Bar::tick(10.0, 0, None));
        }
        assert_eq!(ind.rsi, Some(50.0));
        assert_eq!(
            ind.volume_ratio, 0.0,
            "no volume over no volume is no spike"
        );
        assert_eq!(ind.change_pct, 0.0);
    }
}
