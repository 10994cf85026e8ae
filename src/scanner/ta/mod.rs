//! Every indicator the scan language can name ([`Indicator`]), computed for one symbol
//! bar by bar: [`Studies`] is built once from the indicators some scan reads and then
//! takes each bar close in O(1) (amortised O(1) for `highest` and `lowest`), allocating
//! nothing after construction and keeping only what was asked for. Sans-IO: bars in,
//! values out; it never sees a feed, a clock or a symbol's name.
//!
//! Definitions and seeding are TA-Lib's, so a trader's charting tool agrees (save the
//! `rsi` of a series that never moves: 50, not 0); each file states its own. Index `t` counts the symbol's bars from 0, and a value is undefined
//! (NaN: every comparison false) before its first index:
//!
//! | indicator | first defined at |
//! |---|---|
//! | `sma(n)`, `ema(n)`, `bb_upper/bb_lower/bb_pct(n, k)` | n-1 |
//! | `rsi(n)`, `atr(n)`, `highest(n)`, `lowest(n)`, `avg_volume(n)`, `volume_ratio(n)` | n |
//! | `macd`, `macd_signal`, `macd_hist` `(f, s, g)` | s+g-2 |
//! | `gap_pct` | 1 |
//! | `change_pct`, `vwap`, `price`, `open`, `high`, `low`, `close`, `volume` | 0 |
//!
//! Later values can still be undefined: `bb_pct` over a window of equal closes (the bands
//! have no width), `volume_ratio` over an average of 0, `vwap` while the session has no
//! volume, a percent against a price of 0.

mod atr;
mod average;
mod bands;
mod macd;
mod range;
mod ring;
mod rsi;
mod session;
mod window;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;

pub(in crate::scanner) use range::Extreme;
pub(in crate::scanner) use ring::wrap;

use std::sync::Arc;

use crate::expr::Indicator;
use crate::scanner::indicators::{Bar, Reference};
use atr::{Atr, true_range};
use average::{Ema, Volumes};
use macd::MacdLine;
use range::Prior;
use rsi::Rsi;
use session::Session;
use window::Closes;

/// One symbol's indicators: built from the list a set of scans reads (slot order, as in
/// [`Needs::indicators`](crate::expr::Needs)), fed every bar with [`update`](Self::update),
/// read by slot with [`values`](Self::values).
///
/// Indicators that need the same thing share it: the three MACD outputs of one set of
/// periods are computed once, `sma(n)` and every `bb_*(n, k)` of the same n read one
/// window, and all close windows (or volume windows) slide over one ring sized to the
/// longest.
///
/// Built with [`with_fields`](Self::with_fields), it also keeps what every result
/// carries beside its scan's values ([`Fields`]), sharing the RSI and the volume window
/// with any scan that reads the same.
#[derive(Debug, Clone)]
pub struct Studies {
    /// The values, by slot, then the numbers the owner keeps beside them
    /// ([`with_beside`](Self::with_beside)).
    values: Box<[f64]>,
    /// The same for every symbol of a scan set: shared, not copied.
    reads: Arc<[Read]>,
    /// The RSI and the volume window (indices in `State`) behind the result's fields.
    fields: Option<(u32, u32)>,
    state: State,
}

/// What every result carries, as the market scanner has always computed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fields {
    /// Change against the reference, in percent; NaN against a price of 0.
    pub change_pct: f64,
    /// The RSI, once defined.
    pub rsi: Option<f64>,
    /// Volume over the mean of up to n bars before (at least 1 share); 1 on the first bar.
    pub volume_ratio: f64,
}

/// Where a slot's value comes from: a computation (by its index in `State`) and how it
/// is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Read {
    Sma(u32),
    BbUpper(u32, f64),
    BbLower(u32, f64),
    BbPct(u32, f64),
    Ema(u32),
    Rsi(u32),
    Macd(u32),
    MacdSignal(u32),
    MacdHist(u32),
    Atr(u32),
    Highest(u32),
    Lowest(u32),
    AvgVolume(u32),
    VolumeRatio(u32),
    Vwap,
    ChangePct,
    GapPct,
    Open,
    High,
    Low,
    Close,
    Volume,
}

/// The computations, each once, and the last bar.
#[derive(Debug, Clone)]
struct State {
    bars: u64,
    last: Option<Bar>,
    session: Session,
    closes: Closes,
    volumes: Volumes,
    emas: Box<[Ema]>,
    rsis: Box<[Rsi]>,
    macds: Box<[MacdLine]>,
    atrs: Box<[Atr]>,
    highs: Box<[Prior<true>]>,
    lows: Box<[Prior<false>]>,
}

/// `key`'s index in `keys`, added at the end if new.
fn index_of<K: PartialEq>(keys: &mut Vec<K>, key: K) -> u32 {
    crate::expr::slot_of(keys, key) as u32
}

/// A period as a window length (at least 1: the catalog refuses less anyway).
fn len(n: u32) -> usize {
    n.max(1) as usize
}

impl Studies {
    /// The studies behind `indicators`, one slot each in that order (a repeated
    /// indicator gets its own slot, computed once); `reference` is what `change_pct`
    /// is measured against. Every value reads NaN until the first bar.
    pub fn new(indicators: &[Indicator], reference: Reference) -> Studies {
        Studies::build(indicators, reference, None)
    }

    /// [`new`](Self::new), and the result's [`Fields`] with `rsi(rsi)` and a volume
    /// window of `volume` bars.
    pub fn with_fields(
        indicators: &[Indicator],
        reference: Reference,
        rsi: u32,
        volume: u32,
    ) -> Studies {
        Studies::build(indicators, reference, Some((rsi, volume)))
    }

    fn build(
        indicators: &[Indicator],
        reference: Reference,
        fields: Option<(u32, u32)>,
    ) -> Studies {
        // What to compute, each once, by key.
        let mut closes: Vec<(usize, bool)> = Vec::new();
        let mut volumes = Vec::new();
        let (mut emas, mut rsis, mut macds, mut atrs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut highs, mut lows) = (Vec::new(), Vec::new());
        let mut vwap = false;
        let mut close_window = |n: u32, spread: bool| {
            let n = len(n);
            match closes.iter().position(|w| w.0 == n) {
                Some(at) => {
                    closes[at].1 |= spread;
                    at as u32
                }
                None => {
                    closes.push((n, spread));
                    closes.len() as u32 - 1
                }
            }
        };
        let reads: Box<[Read]> = indicators
            .iter()
            .map(|ind| match *ind {
                Indicator::Sma(n) => Read::Sma(close_window(n, false)),
                Indicator::BbUpper(n, k) => Read::BbUpper(close_window(n, true), k.get()),
                Indicator::BbLower(n, k) => Read::BbLower(close_window(n, true), k.get()),
                Indicator::BbPct(n, k) => Read::BbPct(close_window(n, true), k.get()),
                Indicator::Ema(n) => Read::Ema(index_of(&mut emas, n)),
                Indicator::Rsi(n) => Read::Rsi(index_of(&mut rsis, n)),
                Indicator::Macd(m) => Read::Macd(index_of(&mut macds, m)),
                Indicator::MacdSignal(m) => Read::MacdSignal(index_of(&mut macds, m)),
                Indicator::MacdHist(m) => Read::MacdHist(index_of(&mut macds, m)),
                Indicator::Atr(n) => Read::Atr(index_of(&mut atrs, n)),
                Indicator::Highest(n) => Read::Highest(index_of(&mut highs, n)),
                Indicator::Lowest(n) => Read::Lowest(index_of(&mut lows, n)),
                Indicator::AvgVolume(n) => Read::AvgVolume(index_of(&mut volumes, len(n))),
                Indicator::VolumeRatio(n) => Read::VolumeRatio(index_of(&mut volumes, len(n))),
                Indicator::Vwap => {
                    vwap = true;
                    Read::Vwap
                }
                Indicator::ChangePct => Read::ChangePct,
                Indicator::GapPct => Read::GapPct,
                Indicator::Open => Read::Open,
                Indicator::High => Read::High,
                Indicator::Low => Read::Low,
                Indicator::Price | Indicator::Close => Read::Close,
                Indicator::Volume => Read::Volume,
            })
            .collect();
        let fields = fields.map(|(rsi, volume)| {
            (
                index_of(&mut rsis, rsi),
                index_of(&mut volumes, len(volume)),
            )
        });
        let state = State {
            bars: 0,
            last: None,
            session: Session::new(reference, vwap),
            closes: Closes::new(&closes),
            volumes: Volumes::new(&volumes),
            emas: emas.into_iter().map(Ema::new).collect(),
            rsis: rsis.into_iter().map(Rsi::new).collect(),
            macds: macds.into_iter().map(MacdLine::new).collect(),
            atrs: atrs.into_iter().map(Atr::new).collect(),
            highs: highs.into_iter().map(Prior::new).collect(),
            lows: lows.into_iter().map(Prior::new).collect(),
        };
        Studies {
            values: vec![f64::NAN; reads.len()].into_boxed_slice(),
            reads: reads.into(),
            fields,
            state,
        }
    }

    /// The same, with `beside` kept after the values in their block: numbers the owner
    /// reads with them on every bar (a scan set's cross states), so one symbol's
    /// evaluation touches one block of memory.
    pub fn with_beside(mut self, beside: &[f64]) -> Studies {
        self.values = self.values.iter().chain(beside).copied().collect();
        self
    }

    /// Takes one bar close (a tick is a bar with `open = high = low = close`).
    pub fn update(&mut self, bar: &Bar) {
        self.state.update(bar);
        for (value, read) in self.values.iter_mut().zip(&*self.reads) {
            *value = self.state.read(*read);
        }
    }

    /// Each slot's value after the last bar, in slot order; NaN where undefined.
    pub fn values(&self) -> &[f64] {
        self.split().0
    }

    /// The values, and the numbers kept beside them.
    #[inline]
    pub fn split(&self) -> (&[f64], &[f64]) {
        self.values.split_at(self.reads.len())
    }

    /// The values, and the numbers kept beside them to change.
    #[inline]
    pub fn split_mut(&mut self) -> (&[f64], &mut [f64]) {
        let (values, beside) = self.values.split_at_mut(self.reads.len());
        (values, beside)
    }

    /// Bars taken so far.
    pub fn bars(&self) -> u64 {
        self.state.bars
    }

    /// The last bar.
    pub fn last(&self) -> Option<&Bar> {
        self.state.last.as_ref()
    }

    /// The result's own fields on the last bar (with no RSI, and a volume ratio of 1,
    /// unless built [`with_fields`](Self::with_fields)).
    pub fn fields(&self) -> Fields {
        let st = &self.state;
        let Some(bar) = &st.last else {
            return Fields {
                change_pct: f64::NAN,
                rsi: None,
                volume_ratio: 1.0,
            };
        };
        let (rsi, volume_ratio) = match self.fields {
            Some((rsi, volume)) => {
                let mean = st.volumes.partial_mean(volume as usize);
                let ratio = if mean.is_nan() {
                    1.0
                } else {
                    // An average under one share counts as one: the ratio stays finite
                    // after silent bars.
                    bar.volume as f64 / mean.max(1.0)
                };
                let rsi = st.rsis[rsi as usize].value();
                (rsi.is_finite().then_some(rsi), ratio)
            }
            None => (None, 1.0),
        };
        Fields {
            change_pct: st.session.change_pct(bar),
            rsi,
            volume_ratio,
        }
    }
}

impl State {
    #[inline]
    fn update(&mut self, bar: &Bar) {
        let t = self.bars;
        let close = bar.close;
        let prev = self.last.map(|b| b.close);
        self.session.update(bar, prev);
        self.volumes.push(bar.volume);
        self.closes.push(close);
        for ema in self.emas.iter_mut() {
            ema.update(t, close);
        }
        for macd in self.macds.iter_mut() {
            macd.update(t, close);
        }
        if let Some(prev) = prev {
            for rsi in self.rsis.iter_mut() {
                rsi.update(t, close - prev);
            }
            if !self.atrs.is_empty() {
                let tr = true_range(bar.high, bar.low, prev);
                for atr in self.atrs.iter_mut() {
                    atr.update(t, tr);
                }
            }
        }
        for high in self.highs.iter_mut() {
            high.update(t, bar.high);
        }
        for low in self.lows.iter_mut() {
            low.update(t, bar.low);
        }
        self.last = Some(*bar);
        self.bars += 1;
    }

    #[inline]
    fn read(&self, read: Read) -> f64 {
        let Some(bar) = &self.last else {
            return f64::NAN;
        };
        let i = |at: u32| at as usize;
        let bands =
            |w: u32, k: f64| bands::bands(self.closes.mean(i(w)), self.closes.std_dev(i(w)), k);
        match read {
            Read::Sma(w) => self.closes.mean(i(w)),
            Read::BbUpper(w, k) => bands(w, k).1,
            Read::BbLower(w, k) => bands(w, k).0,
            Read::BbPct(w, k) => bands::pct(bar.close, bands(w, k)),
            Read::Ema(at) => self.emas[i(at)].value(),
            Read::Rsi(at) => self.rsis[i(at)].value(),
            Read::Macd(at) => self.macds[i(at)].line(),
            Read::MacdSignal(at) => self.macds[i(at)].signal(),
            Read::MacdHist(at) => self.macds[i(at)].hist(),
            Read::Atr(at) => self.atrs[i(at)].value(),
            Read::Highest(at) => self.highs[i(at)].value(),
            Read::Lowest(at) => self.lows[i(at)].value(),
            Read::AvgVolume(w) => self.volumes.prior_mean(i(w)),
            Read::VolumeRatio(w) => {
                average::ratio(bar.volume as f64, self.volumes.prior_mean(i(w)))
            }
            Read::Vwap => self.session.vwap(),
            Read::ChangePct => self.session.change_pct(bar),
            Read::GapPct => self.session.gap_pct(bar),
            Read::Open => bar.open,
            Read::High => bar.high,
            Read::Low => bar.low,
            Read::Close => bar.close,
            Read::Volume => bar.volume as f64,
        }
    }
}
