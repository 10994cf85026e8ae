//! The test oracle: every indicator over a whole series, recomputed with plain loops
//! straight from the definitions (INDICATORS.md's table), with none of the incremental
//! machinery: windows are re-read in full at every bar, recursions run from the start.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::expr::Indicator;
use crate::scanner::indicators::{Bar, Reference};

const NAN: f64 = f64::NAN;

/// `ind` at every bar of `bars` (NaN where undefined).
pub(super) fn series(ind: Indicator, bars: &[Bar], reference: Reference) -> Vec<f64> {
    let close: Vec<f64> = bars.iter().map(|b| b.close).collect();
    let n = |p: u32| p as usize;
    match ind {
        Indicator::Sma(p) => sma(&close, n(p)),
        Indicator::Ema(p) => ema(&close, n(p), n(p) - 1),
        Indicator::Rsi(p) => rsi(&close, n(p)),
        Indicator::Macd(m) => macd(&close, m.fast, m.slow, m.signal).0,
        Indicator::MacdSignal(m) => macd(&close, m.fast, m.slow, m.signal).1,
        Indicator::MacdHist(m) => macd(&close, m.fast, m.slow, m.signal).2,
        Indicator::BbUpper(p, k) => bollinger(&close, n(p), k.get()).1,
        Indicator::BbLower(p, k) => bollinger(&close, n(p), k.get()).0,
        Indicator::BbPct(p, k) => {
            let (lower, upper) = bollinger(&close, n(p), k.get());
            (0..bars.len())
                .map(|t| {
                    if upper[t] - lower[t] > 0.0 {
                        (close[t] - lower[t]) / (upper[t] - lower[t])
                    } else {
                        NAN
                    }
                })
                .collect()
        }
        Indicator::Atr(p) => atr(bars, n(p)),
        Indicator::Vwap => vwap(bars),
        Indicator::Highest(p) => prior(bars, n(p), |b| b.high, f64::max),
        Indicator::Lowest(p) => prior(bars, n(p), |b| b.low, f64::min),
        Indicator::AvgVolume(p) => avg_volume(bars, n(p)),
        Indicator::VolumeRatio(p) => {
            let avg = avg_volume(bars, n(p));
            (0..bars.len())
                .map(|t| {
                    if avg[t] > 0.0 {
                        bars[t].volume as f64 / avg[t]
                    } else {
                        NAN
                    }
                })
                .collect()
        }
        Indicator::ChangePct => (0..bars.len())
            .map(|t| {
                let base = match reference {
                    Reference::PrevClose if t == 0 => bars[0].open,
                    Reference::PrevClose => bars[t - 1].close,
                    Reference::SessionOpen => bars[0].close,
                };
                percent(bars[t].close, base)
            })
            .collect(),
        Indicator::GapPct => (0..bars.len())
            .map(|t| {
                if t == 0 {
                    NAN
                } else {
                    percent(bars[t].open, bars[t - 1].close)
                }
            })
            .collect(),
        Indicator::Price | Indicator::Close => close,
        Indicator::Open => bars.iter().map(|b| b.open).collect(),
        Indicator::High => bars.iter().map(|b| b.high).collect(),
        Indicator::Low => bars.iter().map(|b| b.low).collect(),
        Indicator::Volume => bars.iter().map(|b| b.volume as f64).collect(),
    }
}

fn percent(x: f64, base: f64) -> f64 {
    if base == 0.0 {
        NAN
    } else {
        (x - base) / base * 100.0
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn sma(x: &[f64], n: usize) -> Vec<f64> {
    (0..x.len())
        .map(|t| {
            if t + 1 >= n {
                mean(&x[t + 1 - n..=t])
            } else {
                NAN
            }
        })
        .collect()
}

/// An EMA seeded at `at` with the mean of the `n` values ending there.
fn ema(x: &[f64], n: usize, at: usize) -> Vec<f64> {
    let mut out = vec![NAN; x.len()];
    if at >= x.len() {
        return out;
    }
    let k = 2.0 / (n as f64 + 1.0);
    out[at] = mean(&x[at + 1 - n..=at]);
    for t in at + 1..x.len() {
        out[t] = out[t - 1] + k * (x[t] - out[t - 1]);
    }
    out
}

fn rsi(x: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![NAN; x.len()];
    if n >= x.len() {
        return out;
    }
    let gain = |t: usize| (x[t] - x[t - 1]).max(0.0);
    let loss = |t: usize| (x[t - 1] - x[t]).max(0.0);
    let mut g = (1..=n).map(gain).sum::<f64>() / n as f64;
    let mut l = (1..=n).map(loss).sum::<f64>() / n as f64;
    for (t, out) in out.iter_mut().enumerate().skip(n) {
        if t > n {
            g = (g * (n as f64 - 1.0) + gain(t)) / n as f64;
            l = (l * (n as f64 - 1.0) + loss(t)) / n as f64;
        }
        *out = if g + l > 0.0 {
            100.0 * g / (g + l)
        } else {
            50.0
        };
    }
    out
}

/// (macd, signal, hist), all defined from s+g-2.
fn macd(x: &[f64], f: u32, s: u32, g: u32) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (f, s, g) = (f as usize, s as usize, g as usize);
    let fast = ema(x, f, s - 1);
    let slow = ema(x, s, s - 1);
    let line: Vec<f64> = (0..x.len()).map(|t| fast[t] - slow[t]).collect();
    let mut signal = vec![NAN; x.len()];
    if s - 1 < x.len() {
        let tail = ema(&line[s - 1..], g, g - 1);
        signal[s - 1..].copy_from_slice(&tail);
    }
    let first = s + g - 2;
    let line: Vec<f64> = (0..x.len())
        .map(|t| if t >= first { line[t] } else { NAN })
        .collect();
    let hist = (0..x.len()).map(|t| line[t] - signal[t]).collect();
    (line, signal, hist)
}

/// (lower, upper): mean ∓ k σ, σ the population standard deviation, exactly 0 over a
/// window of equal closes.
fn bollinger(x: &[f64], n: usize, k: f64) -> (Vec<f64>, Vec<f64>) {
    let mut lower = vec![NAN; x.len()];
    let mut upper = vec![NAN; x.len()];
    for t in n.saturating_sub(1)..x.len() {
        let w = &x[t + 1 - n..=t];
        let (m, sd) = if w.iter().all(|&v| v == w[0]) {
            (w[0], 0.0)
        } else {
            let m = mean(w);
            (
                m,
                (w.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64).sqrt(),
            )
        };
        lower[t] = m - k * sd;
        upper[t] = m + k * sd;
    }
    (lower, upper)
}

fn atr(bars: &[Bar], n: usize) -> Vec<f64> {
    let mut out = vec![NAN; bars.len()];
    if n >= bars.len() {
        return out;
    }
    let tr = |t: usize| {
        let (h, l, pc) = (bars[t].high, bars[t].low, bars[t - 1].close);
        (h - l).max((h - pc).abs()).max((l - pc).abs())
    };
    out[n] = (1..=n).map(tr).sum::<f64>() / n as f64;
    for t in n + 1..bars.len() {
        out[t] = (out[t - 1] * (n as f64 - 1.0) + tr(t)) / n as f64;
    }
    out
}

/// Each bar's session: the UTC day of its `ts`, or its predecessor's without one.
fn sessions(bars: &[Bar]) -> Vec<Option<i64>> {
    let day = |ts: SystemTime| {
        let secs = ts.duration_since(UNIX_EPOCH).unwrap().as_secs();
        (secs / 86_400) as i64
    };
    let mut out = Vec::with_capacity(bars.len());
    let mut current = None;
    for bar in bars {
        if let Some(ts) = bar.ts {
            current = Some(day(ts));
        }
        out.push(current);
    }
    out
}

fn vwap(bars: &[Bar]) -> Vec<f64> {
    let session = sessions(bars);
    (0..bars.len())
        .map(|t| {
            let mut start = t;
            while start > 0 && session[start - 1] == session[t] {
                start -= 1;
            }
            let span = &bars[start..=t];
            let pv: f64 = span
                .iter()
                .map(|b| (b.high + b.low + b.close) / 3.0 * b.volume as f64)
                .sum();
            let v: f64 = span.iter().map(|b| b.volume as f64).sum();
            if v > 0.0 { pv / v } else { NAN }
        })
        .collect()
}

/// The fold of `field` over the `n` bars before each one.
fn prior(bars: &[Bar], n: usize, field: fn(&Bar) -> f64, pick: fn(f64, f64) -> f64) -> Vec<f64> {
    (0..bars.len())
        .map(|t| {
            if t >= n {
                bars[t - n..t].iter().map(field).reduce(pick).unwrap()
            } else {
                NAN
            }
        })
        .collect()
}

fn avg_volume(bars: &[Bar], n: usize) -> Vec<f64> {
    (0..bars.len())
        .map(|t| {
            if t >= n {
                bars[t - n..t].iter().map(|b| b.volume as f64).sum::<f64>() / n as f64
            } else {
                NAN
            }
        })
        .collect()
}
