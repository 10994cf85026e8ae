//! The scans a scanner runs, as definitions in the scan language: the eight built-in ones
//! (written from the thresholds) and any from the config file, compiled together so each
//! indicator any of them reads is kept once per symbol. One code path evaluates them all.
//!
//! Sans-IO: definitions in, per-symbol state and scores out.

use std::fmt;

use super::indicators::{Bar, IndicatorParams};
use super::scans::Thresholds;
use super::ta::{Fields, Studies};
use crate::event::Scan;
use crate::expr::{
    self, Conditions, Frame, Held, Indicator, MAX_DEPTH, Mask, Needs, Program, WORDS,
};

/// A scan as written: its conditions (all must hold) and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// Which scan.
    pub scan: Scan,
    /// Conditions, each a comparison or a cross.
    pub when: Vec<String>,
    /// A number: how far past its line the scan is.
    pub score: String,
}

/// A definition that does not compile, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// The scan's name.
    pub scan: String,
    /// `when[i]` or `score`.
    pub field: String,
    /// What the expression parser said, with its column.
    pub error: expr::Error,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scan {}, {}, {}", self.scan, self.field, self.error)
    }
}

impl std::error::Error for DefinitionError {}

/// One compiled scan.
#[derive(Debug, Clone)]
struct Compiled {
    scan: Scan,
    /// The bits of its conditions in the set's table: all must be held.
    when: Mask,
    score: Program,
    /// The slots of every indicator its `when` and `score` name, in the order written.
    named: Box<[u16]>,
}

/// Scans compiled together.
#[derive(Debug, Clone)]
pub struct ScanSet {
    scans: Box<[Compiled]>,
    /// Every scan's conditions, each distinct one once.
    conditions: Conditions,
    needs: Needs,
    definitions: Box<[Definition]>,
    /// Where each indicator and cross the alert rules read sits in `needs`: a result's
    /// frame, in the rules' own slot order.
    rule_slots: Box<[u16]>,
    rule_crosses: Box<[u16]>,
}

/// A symbol's side of a scan set: its indicators, and its crosses' states kept beside
/// their values.
#[derive(Debug, Clone)]
pub struct SymbolScans {
    studies: Studies,
}

impl SymbolScans {
    /// The last bar.
    pub fn last(&self) -> Option<&Bar> {
        self.studies.last()
    }

    /// The fields every result carries, on the last bar.
    pub fn fields(&self) -> Fields {
        self.studies.fields()
    }
}

impl ScanSet {
    /// Compiles `definitions`; the first that does not compile is the error.
    pub fn compile(definitions: &[Definition]) -> Result<ScanSet, DefinitionError> {
        // Whether each scan fires is a bit of a u64 (`evaluate`, the scanner's dedup).
        if let Some(def) = definitions.get(64) {
            return Err(DefinitionError {
                scan: def.scan.name().to_owned(),
                field: "name".to_owned(),
                error: expr::Error {
                    col: 1,
                    message: "more than 64 scans in one set".to_owned(),
                },
            });
        }
        let mut needs = Needs::default();
        let mut conditions = Conditions::default();
        let mut scans = Vec::with_capacity(definitions.len());
        for def in definitions {
            let fail = |field: String, error| DefinitionError {
                scan: def.scan.name().to_owned(),
                field,
                error,
            };
            let mut named: Vec<Indicator> = Vec::new();
            let mut when = Vec::with_capacity(def.when.len());
            for (i, text) in def.when.iter().enumerate() {
                let field = || format!("when[{i}]");
                let c = expr::condition(text, &mut needs).map_err(|e| fail(field(), e))?;
                add_new(&mut named, &c.named);
                when.push(
                    conditions
                        .add(&c.program, 1)
                        .map_err(|e| fail(field(), e))?,
                );
            }
            let score =
                expr::number(&def.score, &mut needs).map_err(|e| fail("score".to_owned(), e))?;
            add_new(&mut named, &score.named);
            let named = named
                .iter()
                .filter_map(|n| needs.indicators.iter().position(|i| i == n))
                .map(|at| at as u16)
                .collect();
            scans.push(Compiled {
                scan: def.scan,
                when: Mask::of(&when),
                score: score.program,
                named,
            });
        }
        Ok(ScanSet {
            scans: scans.into(),
            conditions,
            needs,
            definitions: definitions.into(),
            rule_slots: Box::new([]),
            rule_crosses: Box::new([]),
        })
    }

    /// No scans.
    pub fn empty() -> ScanSet {
        ScanSet {
            scans: Box::new([]),
            conditions: Conditions::default(),
            needs: Needs::default(),
            definitions: Box::new([]),
            rule_slots: Box::new([]),
            rule_crosses: Box::new([]),
        }
    }

    /// Also keeps, per symbol, what the alert rules read (`rules`, the rule set's
    /// needs), so each result carries it in a [`Frame`] by the rules' slots.
    pub fn with_rules(mut self, rules: &Needs) -> ScanSet {
        let (slots, crosses) = self.needs.merge(rules);
        self.rule_slots = slots.into();
        self.rule_crosses = crosses.into();
        self
    }

    /// What the alert rules read of the symbol on its last bar; `None` when they read
    /// no indicator.
    pub fn rule_frame(&self, sym: &SymbolScans) -> Option<Frame> {
        if self.rule_slots.is_empty() && self.rule_crosses.is_empty() {
            return None;
        }
        let (values, crosses) = sym.studies.split();
        Some(Frame {
            values: self
                .rule_slots
                .iter()
                .map(|&s| values[usize::from(s)])
                .collect(),
            crosses: self
                .rule_crosses
                .iter()
                .flat_map(|&c| crosses[expr::cross_at(usize::from(c))].iter().copied())
                .collect(),
        })
    }

    /// The scans, in definition order.
    pub fn scans(&self) -> impl Iterator<Item = Scan> + '_ {
        self.scans.iter().map(|c| c.scan)
    }

    /// Scan `i`.
    pub fn scan(&self, i: usize) -> Scan {
        self.scans[i].scan
    }

    /// How many scans.
    pub fn len(&self) -> usize {
        self.scans.len()
    }

    /// No scans at all.
    pub fn is_empty(&self) -> bool {
        self.scans.is_empty()
    }

    /// The definitions, as given.
    pub fn definitions(&self) -> &[Definition] {
        &self.definitions
    }

    /// Every indicator the scans read, each once.
    pub fn indicators(&self) -> &[Indicator] {
        &self.needs.indicators
    }

    /// A new symbol's state: what the scans read, and the fields every result carries
    /// with `params`' RSI period, volume window and reference.
    pub fn symbol(&self, params: &IndicatorParams) -> SymbolScans {
        let period = |n: usize| n.clamp(1, u32::MAX as usize) as u32;
        SymbolScans {
            studies: Studies::with_fields(
                &self.needs.indicators,
                params.reference,
                period(params.rsi),
                period(params.volume),
            )
            .with_beside(&expr::cross_states(self.needs.crosses.len())),
        }
    }

    /// Takes a symbol's bar close: its indicators, then its crosses.
    #[inline]
    pub fn update(&self, sym: &mut SymbolScans, bar: &Bar) {
        sym.studies.update(bar);
        if self.needs.crosses.is_empty() {
            return;
        }
        let (values, crosses) = sym.studies.split_mut();
        let stack = &mut [0.0; MAX_DEPTH];
        for (c, diff) in self.needs.crosses.iter().enumerate() {
            expr::push_cross(crosses, c, diff.eval_on(values, &[], stack));
        }
    }

    /// Each scan's score on the symbol's last bar, `None` where it does not fire (or its
    /// score is not a number), in definition order into `out`; returns the bits (by
    /// scan index) of those that fire, so a caller visits only them and those that were
    /// on.
    #[inline]
    pub fn evaluate(&self, sym: &SymbolScans, out: &mut [Option<f64>]) -> u64 {
        let (values, crosses) = sym.studies.split();
        let stack = &mut [0.0; MAX_DEPTH];
        // Every distinct condition once, each shape in its own loop; then each scan
        // fires when its conditions' bits are all set.
        let held: &mut Held = &mut [0; WORDS];
        self.conditions.eval(values, crosses, held);
        let mut fired = 0;
        for (i, (c, slot)) in self.scans.iter().zip(out.iter_mut()).enumerate() {
            *slot = c
                .when
                .all_held(held)
                .then(|| c.score.eval_on(values, crosses, stack))
                .filter(|s| s.is_finite());
            fired |= u64::from(slot.is_some()) << i;
        }
        fired
    }

    /// The indicators scan `i` names and their values on the symbol's last bar, in the
    /// order written (a result's `values`).
    pub fn values<'a>(
        &'a self,
        i: usize,
        sym: &'a SymbolScans,
    ) -> impl Iterator<Item = (Indicator, f64)> + 'a {
        let values = sym.studies.values();
        self.scans[i].named.iter().map(move |&slot| {
            let slot = usize::from(slot);
            (self.needs.indicators[slot], values[slot])
        })
    }
}

/// Appends what `more` holds that `list` does not.
fn add_new(list: &mut Vec<Indicator>, more: &[Indicator]) {
    for n in more {
        expr::slot_of(list, *n);
    }
}

/// The eight market scans as definitions, with `t`'s thresholds and `p`'s windows.
///
/// | scan | when | score |
/// |---|---|---|
/// | `price_change` | `abs(change_pct) >= T` | `abs(change_pct) / T` |
/// | `volume_spike` | `volume_ratio(V) >= T` | `volume_ratio(V) / T` |
/// | `rsi_overbought` | `rsi(R) >= T` | `1 + (rsi(R) - T) / 10` |
/// | `rsi_oversold` | `rsi(R) <= T` | `1 + (T - rsi(R)) / 10` |
/// | `new_high` | `highest(N) > 0`, `close > highest(N)` | `1 + (close / highest(N) - 1) * 100` |
/// | `new_low` | `lowest(N) > 0`, `close < lowest(N)` | `1 + (1 - close / lowest(N)) * 100` |
/// | `sma_cross_up` | `sma(S) > 0`, `crosses_above(sma(F), sma(S), C)` | `1 + 10 * abs((sma(F) - sma(S)) / sma(S) * 100)` |
/// | `sma_cross_down` | `sma(S) > 0`, `crosses_below(sma(F), sma(S), C)` | the same |
pub fn builtin(t: &Thresholds, p: &IndicatorParams) -> Vec<Definition> {
    let def = |scan, when: &[String], score: String| Definition {
        scan,
        when: when.to_vec(),
        score,
    };
    // `{}` prints the shortest form that reads back as the same f64.
    let (pc, vr, ob, os) = (
        t.price_change_pct,
        t.volume_ratio,
        t.rsi_overbought,
        t.rsi_oversold,
    );
    let (r, v, n, f, s, c) = (
        p.rsi,
        p.volume,
        p.range,
        p.sma_fast,
        p.sma_slow,
        t.cross_bars,
    );
    let gap = format!("1 + 10 * abs((sma({f}) - sma({s})) / sma({s}) * 100)");
    vec![
        def(
            Scan::PriceChange,
            &[format!("abs(change_pct) >= {pc}")],
            format!("abs(change_pct) / {pc}"),
        ),
        def(
            Scan::VolumeSpike,
            &[format!("volume_ratio({v}) >= {vr}")],
            format!("volume_ratio({v}) / {vr}"),
        ),
        def(
            Scan::RsiOverbought,
            &[format!("rsi({r}) >= {ob}")],
            format!("1 + (rsi({r}) - {ob}) / 10"),
        ),
        def(
            Scan::RsiOversold,
            &[format!("rsi({r}) <= {os}")],
            format!("1 + ({os} - rsi({r})) / 10"),
        ),
        def(
            Scan::NewHigh,
            &[format!("highest({n}) > 0"), format!("close > highest({n})")],
            format!("1 + (close / highest({n}) - 1) * 100"),
        ),
        def(
            Scan::NewLow,
            &[format!("lowest({n}) > 0"), format!("close < lowest({n})")],
            format!("1 + (1 - close / lowest({n})) * 100"),
        ),
        def(
            Scan::SmaCrossUp,
            &[
                format!("sma({s}) > 0"),
                format!("crosses_above(sma({f}), sma({s}), {c})"),
            ],
            gap.clone(),
        ),
        def(
            Scan::SmaCrossDown,
            &[
                format!("sma({s}) > 0"),
                format!("crosses_below(sma({f}), sma({s}), {c})"),
            ],
            gap,
        ),
    ]
}

#[cfg(test)]
mod tests;
