//! The last published filter values of every open (symbol, scan) condition, so each
//! `update` carries its predecessor's (PROTOCOL.md, "Leaving a filter").
//!
//! It lives where results are numbered: one producer sees every result in order, so the
//! prior it attaches is the one every edge, live or replaying, would have seen. Memory
//! is bounded by the open conditions; a `clear` forgets its entry.

use ahash::AHashMap;
use smol_str::{SmolStr, StrExt};

use crate::event::{EventKind, FilterValues, Scan, ScanEvent, ScanResult};

/// Filter values of the open conditions, keyed as the active set keys them.
#[derive(Debug, Default)]
pub struct Priors {
    open: AHashMap<(SmolStr, Scan), FilterValues>,
}

impl Priors {
    /// Takes `ev`, an open condition of an earlier run, as the last published state of
    /// its (symbol, scan).
    pub fn seed(&mut self, ev: &ScanEvent) {
        self.open
            .insert((SmolStr::new(&ev.symbol_key), ev.scan), ev.values());
    }

    /// Records `r` as published and returns what an `update` replaces: the filter values
    /// of the previous state of its (symbol, scan). Ad-hoc results answer a request and
    /// are no state: they neither read nor change it.
    pub fn observe(&mut self, r: &ScanResult) -> Option<FilterValues> {
        if r.adhoc {
            return None;
        }
        // The active set matches symbols case-insensitively; so must the prior.
        let key = (r.symbol.to_ascii_uppercase_smolstr(), r.scan);
        match r.event {
            EventKind::New => {
                self.open.insert(key, FilterValues::of(r));
                None
            }
            EventKind::Update => self.open.insert(key, FilterValues::of(r)),
            EventKind::Clear => {
                self.open.remove(&key);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(symbol: &str, event: EventKind, score: f64) -> ScanResult {
        ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol: symbol.into(),
            scan: Scan::NewHigh,
            event,
            score,
            price: 10.0,
            change_pct: 1.0,
            volume: 1,
            volume_ratio: 2.0,
            rsi: None,
            source_ts: None,
            adhoc: false,
        }
    }

    #[test]
    fn updates_carry_the_previous_state() {
        let mut p = Priors::default();
        let score = |v: Option<FilterValues>| v.map(|v| v.score);
        let steps = [
            (result("aapl", EventKind::New, 1.0), None),
            (result("AAPL", EventKind::Update, 2.0), Some(1.0)),
            (result("aapl", EventKind::Update, 3.0), Some(2.0)),
            (result("MSFT", EventKind::Update, 9.0), None),
            (result("AAPL", EventKind::Clear, 0.0), None),
            (result("AAPL", EventKind::Update, 4.0), None),
        ];
        for (i, (r, want)) in steps.into_iter().enumerate() {
            assert_eq!(score(p.observe(&r)), want, "step {i}");
        }
        assert_eq!(p.open.len(), 2, "AAPL reopened by an update, and MSFT");
    }

    #[test]
    fn adhoc_results_are_not_state() {
        let mut p = Priors::default();
        p.observe(&result("X", EventKind::New, 1.0));
        let mut adhoc = result("X", EventKind::Update, 5.0);
        adhoc.adhoc = true;
        assert_eq!(p.observe(&adhoc), None);
        let next = p.observe(&result("X", EventKind::Update, 2.0));
        assert_eq!(next.map(|v| v.score), Some(1.0));
    }
}
