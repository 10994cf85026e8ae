//! A rule's `when`: conditions in the scan language, over the indicators of the symbol
//! whose result is judged and over the result's own fields.
//!
//! The market scanner hands over a [`Frame`] of what the rules read, taken on the bar of
//! the result; a result from a source without bars (a JSONL feed, the benchmark
//! firehose) gets one built from its own fields, in which every other indicator is
//! undefined, so a condition on it does not hold.

use crate::event::ScanEvent;
use crate::expr::{self, Frame, Indicator, MAX_DEPTH, Needs, Program, slot_of};

/// The result's own fields a condition may read by name, in the order of
/// [`vars`]. `rsi` and `volume_ratio` are the result's, over the scanner's configured
/// windows; `abs_change_pct` is `abs(change_pct)`.
pub const VARS: [&str; 4] = ["score", "rsi", "volume_ratio", "abs_change_pct"];
const SCORE: u8 = 0;
const VOLUME_RATIO: u8 = 2;
const ABS_CHANGE_PCT: u8 = 3;

/// The values of [`VARS`] for `ev` (an RSI not yet defined reads NaN).
fn vars(ev: &ScanEvent) -> [f64; VARS.len()] {
    [
        ev.score,
        ev.rsi.unwrap_or(f64::NAN),
        ev.volume_ratio,
        ev.change_pct.abs(),
    ]
}

/// A name a condition read: an indicator (by its slot) or a field of the result.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Named {
    Indicator(Indicator, u16),
    Var(u8),
}

/// Conditions compiled against the rule set's [`Needs`]; all must hold.
#[derive(Debug, Clone)]
pub struct When {
    /// As written.
    pub texts: Vec<String>,
    programs: Box<[Program]>,
    /// What they read, in the order written, each once (an alert's message shows them).
    named: Box<[Named]>,
}

impl When {
    /// Compiles `texts`; an error names the condition (`when[1]: col 9: ...`).
    pub fn compile(texts: &[String], needs: &mut Needs) -> Result<When, String> {
        let mut programs = Vec::with_capacity(texts.len());
        let mut named = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let c =
                expr::condition_with(text, &VARS, needs).map_err(|e| format!("when[{i}], {e}"))?;
            for ind in c.named {
                let slot = needs.indicators.iter().position(|n| *n == ind);
                let slot = slot.map_or(0, |s| s as u16);
                slot_of(&mut named, Named::Indicator(ind, slot));
            }
            for var in c.vars {
                slot_of(&mut named, Named::Var(var));
            }
            programs.push(c.program);
        }
        Ok(When {
            texts: texts.to_vec(),
            programs: programs.into(),
            named: named.into(),
        })
    }

    /// No conditions.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// Does some condition read `change_pct`?
    pub fn reads_change(&self) -> bool {
        self.named.iter().any(|n| {
            matches!(
                n,
                Named::Indicator(Indicator::ChangePct, _) | Named::Var(ABS_CHANGE_PCT)
            )
        })
    }

    /// Does some condition read a volume ratio?
    pub fn reads_volume_ratio(&self) -> bool {
        self.named.iter().any(|n| {
            matches!(
                n,
                Named::Indicator(Indicator::VolumeRatio(_), _) | Named::Var(VOLUME_RATIO)
            )
        })
    }

    /// When every condition holds for `ev` on `frame`: what they read, by name, except
    /// the score (an alert's message gives it anyway).
    pub fn holds(&self, ev: &ScanEvent, frame: &Frame) -> Option<Vec<(String, f64)>> {
        let vars = vars(ev);
        let stack = &mut [0.0; MAX_DEPTH];
        let all = self
            .programs
            .iter()
            .all(|p| p.eval_with(&frame.values, &frame.crosses, &vars, stack) == 1.0);
        if !all {
            return None;
        }
        let seen = self.named.iter().filter_map(|n| match *n {
            Named::Indicator(ind, slot) => {
                let v = frame.values.get(usize::from(slot)).copied();
                Some((ind.to_string(), v.unwrap_or(f64::NAN)))
            }
            Named::Var(SCORE) => None,
            Named::Var(v) => Some((VARS[usize::from(v)].to_owned(), vars[usize::from(v)])),
        });
        Some(seen.collect())
    }
}

/// A frame for `ev` from its own fields, for a result that came without one: its price
/// and change are known, every other indicator is not.
pub fn frame_of(ev: &ScanEvent, needs: &Needs) -> Frame {
    let values = needs.indicators.iter().map(|ind| match ind {
        Indicator::Price | Indicator::Close => ev.price,
        Indicator::ChangePct => ev.change_pct,
        _ => f64::NAN,
    });
    Frame {
        values: values.collect(),
        crosses: crate::expr::cross_states(needs.crosses.len()).into(),
    }
}
