//! Subscription filters: parsed and checked once at subscribe time, then matched against
//! every result on the hot path without allocating.

use ahash::AHashSet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{EventKind, FilterValues, Scan, ScanEvent};

/// Longest symbol a filter may name, in bytes.
pub const MAX_SYMBOL_LEN: usize = 128;

/// The filter fields as they travel in a `subscribe` message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Result symbol is one of these (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
    /// Result scan is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scans: Option<Vec<String>>,
    /// `score >= min_score`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
    /// `price >= min_price`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_price: Option<f64>,
    /// `price <= max_price`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<f64>,
    /// `abs(change_pct) >= min_abs_change_pct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_abs_change_pct: Option<f64>,
    /// `volume_ratio >= min_volume_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_volume_ratio: Option<f64>,
}

/// Why filters were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// Answer `bad_filter`: unknown field, unknown scan, wrong type, empty list.
    #[error("{0}")]
    Invalid(String),
    /// Answer `limit_exceeded`: more symbols than a filter may hold.
    #[error("{given} symbols in one filter, the limit is {max}")]
    TooManySymbols {
        /// Symbols given.
        given: usize,
        /// The configured limit.
        max: usize,
    },
}

/// A checked filter, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    symbols: Option<AHashSet<Box<str>>>,
    /// Bit set of `Scan::bit`; `None` is every scan.
    scans: Option<u64>,
    min_score: Option<f64>,
    min_price: Option<f64>,
    max_price: Option<f64>,
    min_abs_change_pct: Option<f64>,
    min_volume_ratio: Option<f64>,
}

impl Filter {
    /// Parses the `filters` value of a subscribe message; `null` or absent is "everything".
    pub fn from_json(value: Option<Value>, max_symbols: usize) -> Result<Filter, FilterError> {
        let spec = match value {
            None | Some(Value::Null) => FilterSpec::default(),
            Some(v) => FilterSpec::deserialize(v)
                .map_err(|e| FilterError::Invalid(format!("filters: {e}")))?,
        };
        Filter::from_spec(&spec, max_symbols)
    }

    /// Checks a spec.
    pub fn from_spec(spec: &FilterSpec, max_symbols: usize) -> Result<Filter, FilterError> {
        let symbols = match &spec.symbols {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    "symbols: empty list; omit the field to match every symbol",
                ));
            }
            Some(list) if list.len() > max_symbols => {
                return Err(FilterError::TooManySymbols {
                    given: list.len(),
                    max: max_symbols,
                });
            }
            Some(list) => {
                if list
                    .iter()
                    .any(|s| s.is_empty() || s.len() > MAX_SYMBOL_LEN)
                {
                    return Err(invalid(&format!(
                        "symbols: every symbol must be 1 to {MAX_SYMBOL_LEN} bytes"
                    )));
                }
                Some(list.iter().map(|s| s.to_ascii_uppercase().into()).collect())
            }
        };
        let scans = match &spec.scans {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    "scans: empty list; omit the field to match every scan",
                ));
            }
            Some(list) => {
                let mut bits = 0;
                for name in list {
                    let scan = Scan::from_name(name)
                        .ok_or_else(|| invalid(&format!("scans: unknown scan `{name}`")))?;
                    bits |= scan.bit();
                }
                Some(bits)
            }
        };
        if let (Some(lo), Some(hi)) = (spec.min_price, spec.max_price) {
            if lo > hi {
                return Err(invalid(&format!("min_price {lo} is above max_price {hi}")));
            }
        }
        Ok(Filter {
            symbols,
            scans,
            min_score: spec.min_score,
            min_price: spec.min_price,
            max_price: spec.max_price,
            min_abs_change_pct: spec.min_abs_change_pct,
            min_volume_ratio: spec.min_volume_ratio,
        })
    }

    /// Does `ev` match? A `clear` matches on symbols and scans only, so a client that
    /// shows a row always learns when it ends.
    pub fn matches(&self, ev: &ScanEvent) -> bool {
        self.matches_key(ev) && (ev.kind == EventKind::Clear || self.matches_values(&ev.values()))
    }

    /// Does `ev`, which this filter does not match, leave it? True for an `update` whose
    /// previous published state matched (PROTOCOL.md, "Leaving a filter"): the
    /// subscription's table holds a row this result must remove.
    pub fn leaves(&self, ev: &ScanEvent) -> bool {
        self.leaves_from(ev, ev.prior)
    }

    /// [`leaves`](Self::leaves), from `prior` rather than the state just before `ev`: a
    /// lagging edge that skipped updates judges from what the subscription last saw.
    pub fn leaves_from(&self, ev: &ScanEvent, prior: Option<FilterValues>) -> bool {
        match prior {
            Some(prior) if ev.may_leave() => {
                self.matches_values(&prior)
                    && self.matches_key(ev)
                    && !self.matches_values(&ev.values())
            }
            _ => false,
        }
    }

    /// Does the filter take this symbol and scan?
    #[inline]
    fn matches_key(&self, ev: &ScanEvent) -> bool {
        if let Some(bits) = self.scans {
            if bits & ev.scan.bit() == 0 {
                return false;
            }
        }
        self.symbols
            .as_ref()
            .is_none_or(|symbols| symbols.contains(&*ev.symbol_key))
    }

    /// Do these values pass every value bound?
    #[inline]
    fn matches_values(&self, v: &FilterValues) -> bool {
        at_least(v.score, self.min_score)
            && at_least(v.price, self.min_price)
            && self.max_price.is_none_or(|hi| v.price <= hi)
            && at_least(v.change_pct.abs(), self.min_abs_change_pct)
            && at_least(v.volume_ratio, self.min_volume_ratio)
    }
}

fn at_least(value: f64, bound: Option<f64>) -> bool {
    bound.is_none_or(|lo| value >= lo)
}

fn invalid(msg: &str) -> FilterError {
    FilterError::Invalid(msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ScanResult;
    use serde_json::json;
    use std::time::SystemTime;

    fn event(symbol: &str, scan: Scan, kind: EventKind, score: f64, price: f64) -> ScanEvent {
        let r = ScanResult {
            values: Vec::new(),
            rule_frame: None,
            symbol: symbol.into(),
            scan,
            event: kind,
            score,
            price,
            change_pct: -4.0,
            volume: 10,
            volume_ratio: 2.5,
            rsi: None,
            source_ts: None,
            adhoc: false,
        };
        ScanEvent::publish(&r, 1, SystemTime::now())
    }

    fn filter(v: Value) -> Filter {
        Filter::from_json(Some(v), 1024).unwrap()
    }

    #[test]
    fn matching_table() {
        let new = |sym, scan, score, price| event(sym, scan, EventKind::New, score, price);
        let cases = [
            (json!({}), new("AAPL", Scan::NewHigh, 1.0, 10.0), true),
            (
                json!({"symbols": ["aapl"]}),
                new("AAPL", Scan::NewHigh, 1.0, 10.0),
                true,
            ),
            (
                json!({"symbols": ["MSFT"]}),
                new("AAPL", Scan::NewHigh, 1.0, 10.0),
                false,
            ),
            (
                json!({"scans": ["new_high"]}),
                new("X", Scan::NewHigh, 1.0, 10.0),
                true,
            ),
            (
                json!({"scans": ["new_low"]}),
                new("X", Scan::NewHigh, 1.0, 10.0),
                false,
            ),
            (
                json!({"min_score": 2}),
                new("X", Scan::NewHigh, 2.0, 10.0),
                true,
            ),
            (
                json!({"min_score": 2.5}),
                new("X", Scan::NewHigh, 2.0, 10.0),
                false,
            ),
            (
                json!({"min_price": 5, "max_price": 10}),
                new("X", Scan::NewLow, 1.0, 10.0),
                true,
            ),
            (
                json!({"max_price": 9.99}),
                new("X", Scan::NewLow, 1.0, 10.0),
                false,
            ),
            (
                json!({"min_price": 10.01}),
                new("X", Scan::NewLow, 1.0, 10.0),
                false,
            ),
            (
                json!({"min_abs_change_pct": 4}),
                new("X", Scan::NewLow, 1.0, 1.0),
                true,
            ),
            (
                json!({"min_abs_change_pct": 4.1}),
                new("X", Scan::NewLow, 1.0, 1.0),
                false,
            ),
            (
                json!({"min_volume_ratio": 2.5}),
                new("X", Scan::NewLow, 1.0, 1.0),
                true,
            ),
            (
                json!({"min_volume_ratio": 3}),
                new("X", Scan::NewLow, 1.0, 1.0),
                false,
            ),
        ];
        for (i, (spec, ev, want)) in cases.into_iter().enumerate() {
            assert_eq!(filter(spec.clone()).matches(&ev), want, "case {i}: {spec}");
        }
    }

    #[test]
    fn clear_ignores_value_bounds_but_not_symbols_or_scans() {
        let clear = event("AAPL", Scan::NewHigh, EventKind::Clear, 0.0, 1.0);
        assert!(filter(json!({"min_score": 100, "min_price": 50})).matches(&clear));
        assert!(!filter(json!({"symbols": ["MSFT"]})).matches(&clear));
        assert!(!filter(json!({"scans": ["new_low"]})).matches(&clear));
    }

    #[test]
    fn an_update_leaves_when_its_prior_matched_and_it_does_not() {
        let prior = |score| {
            Some(FilterValues {
                score,
                price: 10.0,
                change_pct: -4.0,
                volume_ratio: 2.5,
            })
        };
        let update = |score, prior| {
            event("AAPL", Scan::NewHigh, EventKind::Update, score, 10.0).with_prior(prior)
        };
        let f = filter(json!({"min_score": 2}));
        // (event, leaves): only matched-then-not leaves.
        let cases = [
            (update(1.5, prior(2.5)), true),
            (update(1.5, prior(1.0)), false),
            (update(2.5, prior(2.5)), false),
            (update(2.5, prior(1.0)), false),
            (update(1.5, None), false),
            (
                event("AAPL", Scan::NewHigh, EventKind::New, 1.5, 10.0).with_prior(prior(2.5)),
                false,
            ),
            (
                event("AAPL", Scan::NewHigh, EventKind::Clear, 0.0, 10.0).with_prior(prior(2.5)),
                false,
            ),
        ];
        for (i, (ev, want)) in cases.into_iter().enumerate() {
            assert_eq!(f.leaves(&ev), want, "case {i}");
        }
        // A filter that never took the symbol or scan is not left.
        let other = filter(json!({"min_score": 2, "symbols": ["MSFT"]}));
        assert!(!other.leaves(&update(1.5, prior(2.5))));
        let scans = filter(json!({"min_score": 2, "scans": ["new_low"]}));
        assert!(!scans.leaves(&update(1.5, prior(2.5))));
        // Nor is one without value bounds: every update matches it.
        assert!(!filter(json!({})).leaves(&update(1.5, prior(2.5))));
        // An ad-hoc result is no state.
        let mut adhoc = update(1.5, prior(2.5));
        adhoc.adhoc = true;
        assert!(!f.leaves(&adhoc));
    }

    #[test]
    fn invalid_filters_are_refused() {
        let bad = [
            json!({"sybmols": ["A"]}),
            json!({"scans": ["moon"]}),
            json!({"min_score": "high"}),
            json!({"symbols": "AAPL"}),
            json!({"symbols": []}),
            json!({"symbols": [""]}),
            json!({"min_price": 10, "max_price": 5}),
            json!([1, 2]),
        ];
        for spec in bad {
            let err = Filter::from_json(Some(spec.clone()), 1024).unwrap_err();
            assert!(matches!(err, FilterError::Invalid(_)), "{spec}: {err:?}");
        }
    }

    #[test]
    fn too_many_symbols_is_a_limit() {
        let spec = json!({"symbols": ["A", "B", "C"]});
        let err = Filter::from_json(Some(spec), 2).unwrap_err();
        assert_eq!(err, FilterError::TooManySymbols { given: 3, max: 2 });
    }
}
