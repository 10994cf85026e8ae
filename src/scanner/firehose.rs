//! `firehose:RATE`: exactly RATE synthetic results per second, spread evenly, for
//! benchmarks and tests.
//!
//! Each symbol of a fixed rotating set goes through `new`, `update` and `clear` in turn,
//! so the active set and snapshots are exercised. Values are derived from the result's
//! index, so a run is reproducible; they must never depend on wall-clock time.

use std::time::{Duration, Instant, SystemTime};

use smol_str::SmolStr;

use super::sim::ticker;
use super::{Counters, Progress, Source};
use crate::event::{EventKind, Scan, ScanResult};

/// Symbols in the rotation.
const SYMBOLS: usize = 100;

/// The benchmark source.
#[derive(Debug)]
pub struct Firehose {
    rate: u32,
    symbols: Vec<SmolStr>,
    /// When result 0 of the current schedule was due.
    start: Instant,
    /// Results emitted since `start`.
    emitted: u64,
    /// Results emitted over the whole run, for the values and the rotation.
    index: u64,
    /// The symbols were handed to the reactor.
    announced: bool,
}

impl Firehose {
    /// A firehose of `rate` results per second starting at `now`.
    pub fn new(rate: u32, now: Instant) -> Firehose {
        Firehose {
            rate,
            symbols: (0..SYMBOLS).map(|i| SmolStr::from(ticker(i))).collect(),
            start: now,
            emitted: 0,
            index: 0,
            announced: false,
        }
    }

    /// When result `n` of the current schedule is due.
    fn due(&self, n: u64) -> Instant {
        let nanos = u128::from(n) * 1_000_000_000 / u128::from(self.rate.max(1));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn result(&self, index: u64) -> ScanResult {
        let n = self.symbols.len() as u64;
        let symbol = self.symbols[(index % n) as usize].clone();
        let event = match (index / n) % 3 {
            0 => EventKind::New,
            1 => EventKind::Update,
            _ => EventKind::Clear,
        };
        let r = mix(index);
        let unit = |shift: u32| ((r >> shift) & 0xffff) as f64 / 65_535.0;
        ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol,
            scan: Scan::Firehose,
            event,
            score: round2(unit(0) * 10.0),
            price: round2(10.0 + unit(16) * 490.0),
            change_pct: round2(unit(32) * 20.0 - 10.0),
            volume: 1_000 + (r >> 48) * 100,
            volume_ratio: round2(0.5 + unit(8) * 9.5),
            rsi: Some(round2(unit(24) * 100.0)),
            source_ts: Some(SystemTime::now()),
            adhoc: false,
        }
    }
}

impl Source for Firehose {
    fn poll(&mut self, now: Instant, max: usize, out: &mut Vec<ScanResult>) -> Instant {
        if self.rate == 0 {
            return now + Duration::from_secs(1);
        }
        let mut budget = max;
        while budget > 0 && self.due(self.emitted) <= now {
            out.push(self.result(self.index));
            self.emitted += 1;
            self.index += 1;
            budget -= 1;
        }
        self.due(self.emitted)
    }

    fn scan(&mut self, symbols: &[String], out: &mut Vec<ScanResult>) {
        for symbol in symbols {
            let seed = symbol
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
            let mut r = self.result(mix(seed));
            r.symbol = SmolStr::from(symbol.as_str());
            r.event = EventKind::New;
            r.adhoc = true;
            out.push(r);
        }
    }

    fn progress(&self) -> Progress {
        // A cycle is one second's worth of results, so cycle-end statuses come once a second.
        let per_cycle = u64::from(self.rate.max(1));
        Progress {
            cycle: self.index / per_cycle,
            scanned: self.index % per_cycle,
            total: per_cycle,
            last_cycle_ms: 1000.0,
            scanning: self.rate > 0,
            counters: Counters {
                updates: self.index,
                evaluated: self.index,
                bad_input: 0,
            },
        }
    }

    fn restart(&mut self, now: Instant) {
        self.start = now;
        self.emitted = 0;
    }

    fn new_symbols(&mut self, out: &mut Vec<Box<str>>) {
        if !self.announced {
            self.announced = true;
            out.extend(self.symbols.iter().map(|s| Box::from(&**s)));
        }
    }
}

/// SplitMix64: cheap, well-spread bits from an index.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_exactly_rate_per_second_evenly() {
        let t0 = Instant::now();
        let mut f = Firehose::new(1000, t0);
        let mut out = Vec::new();
        // Result 0 is due at t0, result k at t0 + k ms.
        let next = f.poll(t0 + Duration::from_micros(999_500), usize::MAX, &mut out);
        assert_eq!(out.len(), 1000);
        assert_eq!(next, t0 + Duration::from_secs(1));
        out.clear();
        f.poll(t0 + Duration::from_micros(1_499_500), usize::MAX, &mut out);
        assert_eq!(out.len(), 500);
    }

    #[test]
    fn catch_up_is_sliced() {
        let t0 = Instant::now();
        let mut f = Firehose::new(1000, t0);
        let mut out = Vec::new();
        let next = f.poll(t0 + Duration::from_secs(10), 100, &mut out);
        assert_eq!(out.len(), 100);
        assert!(next <= t0 + Duration::from_secs(10), "more is due at once");
    }

    #[test]
    fn each_symbol_cycles_new_update_clear() {
        let t0 = Instant::now();
        let mut f = Firehose::new(1000, t0);
        let mut out = Vec::new();
        f.poll(t0 + Duration::from_secs(1), usize::MAX, &mut out);
        let first: Vec<_> = out
            .iter()
            .filter(|r| r.symbol == out[0].symbol)
            .map(|r| r.event)
            .collect();
        assert_eq!(
            &first[..4],
            [
                EventKind::New,
                EventKind::Update,
                EventKind::Clear,
                EventKind::New
            ]
        );
        let distinct: std::collections::HashSet<_> = out.iter().map(|r| &r.symbol).collect();
        assert_eq!(distinct.len(), SYMBOLS);
    }

    #[test]
    fn restart_does_not_burst() {
        let t0 = Instant::now();
        let mut f = Firehose::new(1000, t0);
        let mut out = Vec::new();
        f.restart(t0 + Duration::from_secs(60));
        f.poll(t0 + Duration::from_secs(60), usize::MAX, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn adhoc_results_are_marked() {
        let mut f = Firehose::new(10, Instant::now());
        let mut out = Vec::new();
        f.scan(&["AAPL".into(), "msft".into()], &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.adhoc && r.event == EventKind::New));
        assert_eq!(&*out[1].symbol, "msft");
    }
}
