//! What is measured against earlier prices rather than over a window: `change_pct`
//! (against the previous close for bar sources, the first bar against its own open; or
//! against the run's first price for tick sources, as [`Reference`] says), `gap_pct`
//! (open against the previous close, from bar 1), and `vwap` (typical price
//! `(h + l + c) / 3` weighted by volume since the session began). A session is a UTC
//! date taken from the bar's `ts`; a bar without one continues the current session.
//! O(1) per bar; a percent against a zero price and a VWAP of no volume are undefined.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::scanner::indicators::{Bar, Reference};

const DAY_SECS: u64 = 86_400;

/// `(x - reference)` in percent of `reference`; NaN against 0 or NaN.
#[inline]
fn percent(x: f64, reference: f64) -> f64 {
    // NaN != 0 too: a missing reference falls through to NaN.
    if reference != 0.0 {
        (x - reference) / reference * 100.0
    } else {
        f64::NAN
    }
}

/// The UTC day `ts` falls on, counted from 1970-01-01 (negative before it).
fn day(ts: SystemTime) -> i64 {
    match ts.duration_since(UNIX_EPOCH) {
        Ok(since) => (since.as_secs() / DAY_SECS) as i64,
        Err(before) => {
            let d = before.duration();
            // 1 ns before the epoch is on day -1, as is exactly one day before it.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            -(secs.div_ceil(DAY_SECS) as i64)
        }
    }
}

/// Volume-weighted typical price since the session began. The price-volume sum is
/// compensated (Neumaier), since a feed without timestamps never starts a new session.
#[derive(Debug, Clone, Default)]
struct Vwap {
    day: Option<i64>,
    pv: f64,
    pv_carry: f64,
    volume: u128,
}

impl Vwap {
    fn update(&mut self, bar: &Bar) {
        if let Some(ts) = bar.ts {
            let day = day(ts);
            if self.day != Some(day) {
                *self = Vwap {
                    day: Some(day),
                    ..Vwap::default()
                };
            }
        }
        let volume = bar.volume as f64;
        let x = (bar.high + bar.low + bar.close) / 3.0 * volume;
        let sum = self.pv + x;
        self.pv_carry += if self.pv.abs() >= x.abs() {
            (self.pv - sum) + x
        } else {
            (x - sum) + self.pv
        };
        self.pv = sum;
        self.volume += u128::from(bar.volume);
    }

    fn value(&self) -> f64 {
        if self.volume > 0 {
            (self.pv + self.pv_carry) / super::average::to_f64(self.volume)
        } else {
            f64::NAN
        }
    }
}

/// What the values measured against earlier prices need after the last bar; the percents
/// are worked out when read, so a symbol that reads neither pays no divide.
#[derive(Debug, Clone)]
pub(super) struct Session {
    reference: Reference,
    /// The run's first price, for [`Reference::SessionOpen`].
    first: f64,
    /// What the last close is measured against.
    base: f64,
    /// The close before the last bar (NaN on the first).
    prev_close: f64,
    vwap: Option<Vwap>,
}

impl Session {
    /// `vwap`: whether to keep the VWAP.
    pub(super) fn new(reference: Reference, vwap: bool) -> Session {
        Session {
            reference,
            first: f64::NAN,
            base: f64::NAN,
            prev_close: f64::NAN,
            vwap: vwap.then(Vwap::default),
        }
    }

    /// Takes a bar and the close before it (`None` for the first bar).
    #[inline]
    pub(super) fn update(&mut self, bar: &Bar, prev_close: Option<f64>) {
        if self.first.is_nan() {
            self.first = bar.close;
        }
        self.base = match (self.reference, prev_close) {
            (Reference::PrevClose, Some(prev)) => prev,
            (Reference::PrevClose, None) => bar.open,
            (Reference::SessionOpen, _) => self.first,
        };
        self.prev_close = prev_close.unwrap_or(f64::NAN);
        if let Some(vwap) = &mut self.vwap {
            vwap.update(bar);
        }
    }

    /// `change_pct` of `bar`, the last one taken.
    #[inline]
    pub(super) fn change_pct(&self, bar: &Bar) -> f64 {
        percent(bar.close, self.base)
    }

    /// `gap_pct` of `bar`, the last one taken: NaN on the first bar.
    #[inline]
    pub(super) fn gap_pct(&self, bar: &Bar) -> f64 {
        percent(bar.open, self.prev_close)
    }

    /// `vwap`, NaN while the session has no volume (or if it was not asked for).
    #[inline]
    pub(super) fn vwap(&self) -> f64 {
        self.vwap.as_ref().map_or(f64::NAN, Vwap::value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn days_split_at_utc_midnight_on_both_sides_of_the_epoch() {
        let at = |secs: i64, nanos: u32| {
            let d = Duration::new(secs.unsigned_abs(), 0);
            let t = if secs >= 0 {
                UNIX_EPOCH + d
            } else {
                UNIX_EPOCH - d
            };
            t + Duration::new(0, nanos)
        };
        for (secs, nanos, want) in [
            (0, 0, 0),
            (86_399, 999_999_999, 0),
            (86_400, 0, 1),
            (-1, 999_999_999, -1),
            (-86_400, 0, -1),
            (-86_401, 0, -2),
        ] {
            assert_eq!(day(at(secs, nanos)), want, "{secs} s {nanos} ns");
        }
    }

    #[test]
    fn vwap_starts_again_each_utc_day_and_bars_without_time_stay_in_theirs() {
        let day0 = UNIX_EPOCH + Duration::from_secs(20_000 * DAY_SECS + 3_600);
        let bar = |price: f64, volume: u64, ts: Option<SystemTime>| Bar::tick(price, volume, ts);
        let mut s = Session::new(Reference::PrevClose, true);
        s.update(&bar(10.0, 0, Some(day0)), None);
        assert!(s.vwap().is_nan(), "no volume yet");
        s.update(&bar(10.0, 100, None), Some(10.0));
        s.update(
            &bar(13.0, 200, Some(day0 + Duration::from_secs(60))),
            Some(10.0),
        );
        assert_eq!(s.vwap(), 12.0);
        s.update(
            &bar(20.0, 5, Some(day0 + Duration::from_secs(DAY_SECS))),
            Some(13.0),
        );
        assert_eq!(s.vwap(), 20.0);
        s.update(&bar(26.0, 15, None), Some(20.0));
        assert_eq!(s.vwap(), 24.5);
    }

    #[test]
    fn change_and_gap_in_percent_of_the_reference() {
        let bar = |open: f64, close: f64| Bar {
            open,
            high: open.max(close),
            low: open.min(close),
            close,
            volume: 1,
            ts: None,
        };
        let mut by_bar = Session::new(Reference::PrevClose, false);
        let mut by_tick = Session::new(Reference::SessionOpen, false);
        let first = bar(50.0, 55.0);
        by_bar.update(&first, None);
        by_tick.update(&first, None);
        assert_eq!(by_bar.change_pct(&first), 10.0);
        assert_eq!(by_tick.change_pct(&first), 0.0);
        assert!(by_bar.gap_pct(&first).is_nan());
        let second = bar(44.0, 66.0);
        by_bar.update(&second, Some(55.0));
        by_tick.update(&second, Some(55.0));
        assert_eq!(by_bar.change_pct(&second), 20.0);
        assert_eq!(by_tick.change_pct(&second), 20.0);
        assert_eq!(by_bar.gap_pct(&second), -20.0);
        let third = bar(1.0, 1.0);
        by_bar.update(&third, Some(0.0));
        assert!(by_bar.change_pct(&third).is_nan() && by_bar.gap_pct(&third).is_nan());
        assert!(by_bar.vwap().is_nan(), "not asked for");
    }
}
