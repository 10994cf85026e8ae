//! The eight scans in their fixed form: when each fires, and its score. The scanner runs
//! them as definitions in the scan language (`scanset::builtin`); this form stays as the
//! reference those definitions are checked against, and as the benches' baseline.
//!
//! A score is 1 at the scan's threshold and grows by 1 for each unit past it, so a
//! `min_score` filter means the same distance past the line for every scan:
//!
//! | scan | fires when | score |
//! |---|---|---|
//! | `price_change` | `abs(change_pct) >= T` | `abs(change_pct) / T` |
//! | `volume_spike` | a full volume window and `volume_ratio >= T` | `volume_ratio / T` |
//! | `rsi_overbought` | `rsi >= T` | `1 + (rsi - T) / 10` |
//! | `rsi_oversold` | `rsi <= T` | `1 + (T - rsi) / 10` |
//! | `new_high` | `close > prior high` | `1 + percent above the prior high` |
//! | `new_low` | `close < prior low` | `1 + percent below the prior low` |
//! | `sma_cross_up` | fast crossed above slow within `cross_bars` bars, still above | `1 + 10 × gap percent` |
//! | `sma_cross_down` | fast crossed below slow within `cross_bars` bars, still below | `1 + 10 × gap percent` |
//!
//! A cross is one bar; holding it for `cross_bars` bars makes it an opportunity a client
//! can see rather than a flicker. The gap is `abs(fast - slow) / slow * 100`.

use super::indicators::{Cross, Indicators};
use crate::event::Scan;

/// The scans the market scanner runs: the built-in ones but the firehose, which is last.
pub const MARKET_SCANS: [Scan; 8] = {
    let mut scans = [Scan::Firehose; 8];
    let mut i = 0;
    while i < scans.len() {
        scans[i] = Scan::ALL[i];
        i += 1;
    }
    scans
};

/// Scan thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// `price_change`: absolute change in percent.
    pub price_change_pct: f64,
    /// `volume_spike`: volume over its average.
    pub volume_ratio: f64,
    /// `rsi_overbought`: RSI at or above.
    pub rsi_overbought: f64,
    /// `rsi_oversold`: RSI at or below.
    pub rsi_oversold: f64,
    /// SMA crosses stay open this many bars.
    pub cross_bars: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            price_change_pct: 3.0,
            volume_ratio: 3.0,
            rsi_overbought: 70.0,
            rsi_oversold: 30.0,
            cross_bars: 5,
        }
    }
}

/// The score of each market scan on the last bar, `None` where it does not fire; in
/// the order of [`MARKET_SCANS`].
#[inline]
pub fn evaluate(ind: &Indicators, t: &Thresholds) -> [Option<f64>; 8] {
    let Some(close) = ind.close() else {
        return [None; 8];
    };
    let change = ind.change_pct.abs();
    let price_change = (change >= t.price_change_pct).then(|| change / t.price_change_pct);
    let volume_spike = (ind.volume_full && ind.volume_ratio >= t.volume_ratio)
        .then(|| ind.volume_ratio / t.volume_ratio);
    let overbought = ind
        .rsi
        .filter(|rsi| *rsi >= t.rsi_overbought)
        .map(|rsi| 1.0 + (rsi - t.rsi_overbought) / 10.0);
    let oversold = ind
        .rsi
        .filter(|rsi| *rsi <= t.rsi_oversold)
        .map(|rsi| 1.0 + (t.rsi_oversold - rsi) / 10.0);
    let new_high = ind
        .prior_high
        .filter(|high| close > *high && *high > 0.0)
        .map(|high| 1.0 + (close / high - 1.0) * 100.0);
    let new_low = ind
        .prior_low
        .filter(|low| close < *low && *low > 0.0)
        .map(|low| 1.0 + (1.0 - close / low) * 100.0);
    let gap = ind
        .sma_fast
        .zip(ind.sma_slow)
        .filter(|(_, slow)| *slow > 0.0)
        .map(|(fast, slow)| (fast - slow) / slow * 100.0);
    let crossed = |want: Cross| {
        let (dir, age) = ind.cross?;
        let gap = gap?;
        let holds = match want {
            Cross::Up => gap > 0.0,
            Cross::Down => gap < 0.0,
        };
        (dir == want && age < t.cross_bars && holds).then(|| 1.0 + 10.0 * gap.abs())
    };
    [
        price_change,
        volume_spike,
        overbought,
        oversold,
        new_high,
        new_low,
        crossed(Cross::Up),
        crossed(Cross::Down),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::indicators::{Bar, IndicatorParams, Reference};

    fn params() -> IndicatorParams {
        IndicatorParams {
            rsi: 3,
            sma_fast: 2,
            sma_slow: 4,
            range: 3,
            volume: 3,
            reference: Reference::SessionOpen,
        }
    }

    /// Runs closes (volume 100 unless given) and returns what fires on the last bar.
    fn fired(closes: &[f64], last_volume: u64) -> Vec<(Scan, f64)> {
        let mut ind = Indicators::new(params());
        for (i, c) in closes.iter().enumerate() {
            let volume = if i + 1 == closes.len() {
                last_volume
            } else {
                100
            };
            ind.update(&Bar::tick(*c, volume, None));
        }
        MARKET_SCANS
            .into_iter()
            .zip(evaluate(&ind, &Thresholds::default()))
            .filter_map(|(scan, score)| score.map(|s| (scan, s)))
            .collect()
    }

    fn scans(hits: &[(Scan, f64)]) -> Vec<Scan> {
        hits.iter().map(|h| h.0).collect()
    }

    fn score(hits: &[(Scan, f64)], scan: Scan) -> f64 {
        hits.iter()
            .find(|h| h.0 == scan)
            .map(|h| h.1)
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn each_scan_fires_when_it_should_and_not_otherwise() {
        use Scan::*;
        // (what, closes, last volume, must fire, must not fire)
        type Case<'a> = (&'a str, &'a [f64], u64, &'a [Scan], &'a [Scan]);
        let table: &[Case<'_>] = &[
            ("flat", &[100.0; 8], 100, &[], &MARKET_SCANS),
            (
                "up 3% exactly",
                &[100.0, 100.0, 100.0, 100.0, 103.0],
                100,
                &[PriceChange],
                &[],
            ),
            (
                "up 2.9%",
                &[100.0, 100.0, 100.0, 100.0, 102.9],
                100,
                &[],
                &[PriceChange],
            ),
            (
                "down 4%",
                &[100.0, 100.0, 100.0, 100.0, 96.0],
                100,
                &[PriceChange],
                &[],
            ),
            ("volume x3", &[100.0; 5], 300, &[VolumeSpike], &[]),
            ("volume x2.9", &[100.0; 5], 290, &[], &[VolumeSpike]),
            (
                "volume x5, window short",
                &[100.0, 100.0, 100.0],
                500,
                &[],
                &[VolumeSpike],
            ),
            (
                "steady rise",
                &[100.0, 100.5, 101.0, 101.5, 102.0],
                100,
                &[RsiOverbought, NewHigh],
                &[RsiOversold, NewLow],
            ),
            (
                "steady fall",
                &[100.0, 99.5, 99.0, 98.5, 98.0],
                100,
                &[RsiOversold, NewLow],
                &[RsiOverbought, NewHigh],
            ),
            (
                "equal to the prior high",
                &[100.0, 101.0, 100.0, 100.5, 101.0],
                100,
                &[],
                &[NewHigh],
            ),
            (
                "cross up",
                &[100.0, 100.0, 99.0, 99.0, 98.0, 101.0],
                100,
                &[SmaCrossUp],
                &[SmaCrossDown],
            ),
            (
                "cross down",
                &[100.0, 100.0, 101.0, 101.0, 102.0, 99.0],
                100,
                &[SmaCrossDown],
                &[SmaCrossUp],
            ),
            (
                "no cross while above",
                &[
                    100.0, 100.0, 100.0, 100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 107.0,
                ],
                100,
                &[],
                &[SmaCrossUp, SmaCrossDown],
            ),
        ];
        for (what, closes, volume, yes, no) in table {
            let hits = fired(closes, *volume);
            let got = scans(&hits);
            for s in *yes {
                assert!(got.contains(s), "{what}: {s} should fire, got {got:?}");
            }
            for s in *no {
                assert!(!got.contains(s), "{what}: {s} should not fire, got {got:?}");
            }
        }
    }

    #[test]
    fn the_market_scans_are_every_scan_but_the_firehose() {
        assert_eq!(MARKET_SCANS[..], Scan::ALL[..8]);
        assert_eq!(Scan::ALL[8], Scan::Firehose);
    }

    #[test]
    fn scores_are_one_at_the_threshold_and_grow_past_it() {
        let at = fired(&[100.0, 100.0, 100.0, 100.0, 103.0], 100);
        assert!((score(&at, Scan::PriceChange) - 1.0).abs() < 1e-12);
        let past = fired(&[100.0, 100.0, 100.0, 100.0, 106.0], 100);
        assert!((score(&past, Scan::PriceChange) - 2.0).abs() < 1e-12);
        let spike = fired(&[100.0; 5], 600);
        assert!((score(&spike, Scan::VolumeSpike) - 2.0).abs() < 1e-12);
        let high = fired(&[100.0, 100.0, 100.0, 100.0, 102.0], 100);
        assert!((score(&high, Scan::NewHigh) - 3.0).abs() < 1e-9);
        // All gains: RSI 100, 3 units of 10 past 70.
        assert!((score(&high, Scan::RsiOverbought) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn a_cross_stays_open_for_cross_bars_then_closes() {
        let mut closes = vec![100.0, 100.0, 99.0, 99.0, 98.0, 101.0];
        let mut open_for = 0;
        for _ in 0..10 {
            closes.push(*closes.last().unwrap() + 0.01);
            if scans(&fired(&closes, 100)).contains(&Scan::SmaCrossUp) {
                open_for += 1;
            }
        }
        // Bars 1 to 4 after the crossing bar (age 0 was the crossing bar itself).
        assert_eq!(open_for, Thresholds::default().cross_bars - 1);
    }
}
