//! Deduplication: one `new` when a (symbol, scan) condition starts, `update` only when it
//! changes materially, `clear` when it ends.
//!
//! A change is material when the condition's key changes. The key is an ahash of the
//! scan, the score rounded down to a multiple of `score_step`, and the price rounded down
//! to a step of `price_pct` percent on a log scale. Each (symbol, scan) keeps one `u64`
//! (0 while the condition is off), so memory is symbols × scans × 8 bytes.

use std::cell::Cell;

use ahash::RandomState;

use crate::event::{EventKind, Scan};

/// What counts as a material change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Materiality {
    /// An update needs the score in another band of this width (0: never on score).
    pub score_step: f64,
    /// An update needs the price in another band of this many percent (0: never on price).
    pub price_pct: f64,
}

impl Default for Materiality {
    fn default() -> Self {
        Materiality {
            score_step: 0.5,
            price_pct: 1.0,
        }
    }
}

/// Keys conditions; the seeds are fixed so a run is reproducible.
#[derive(Debug, Clone)]
pub struct Dedup {
    hasher: RandomState,
    m: Materiality,
    /// `1 / ln(1 + price_pct / 100)`: price bands are this many per unit of log price.
    inv_log_step: f64,
    /// `1 / score_step`.
    inv_score_step: f64,
    /// The last price's band: one symbol's scans ask for the same price eight times.
    last_band: Cell<(u64, i64)>,
}

impl Dedup {
    /// A deduplicator with these thresholds.
    pub fn new(m: Materiality) -> Dedup {
        Dedup {
            hasher: RandomState::with_seeds(0x5ca4, 0x57e4, 0xd0d0, 0xbeef),
            m,
            inv_log_step: 1.0 / (1.0 + m.price_pct / 100.0).ln(),
            inv_score_step: 1.0 / m.score_step,
            last_band: Cell::new((f64::NAN.to_bits(), 0)),
        }
    }

    /// The material key of a firing condition; never 0.
    #[inline]
    pub fn key(&self, scan: Scan, score: f64, price: f64) -> u64 {
        let score_band = if self.m.score_step > 0.0 {
            // Scores of firing scans are positive: truncation is the floor.
            (score * self.inv_score_step) as i64
        } else {
            0
        };
        let price_band = self.price_band(price);
        self.hasher
            .hash_one((scan.code(), score_band, price_band))
            .max(1)
    }

    #[inline]
    fn price_band(&self, price: f64) -> i64 {
        let (bits, band) = self.last_band.get();
        if bits == price.to_bits() {
            return band;
        }
        let band = if self.m.price_pct > 0.0 && price > 0.0 {
            floor(price.ln() * self.inv_log_step)
        } else {
            0
        };
        self.last_band.set((price.to_bits(), band));
        band
    }

    /// Advances one condition's `slot` given whether it fires now (`score`), and says
    /// which event to publish, if any.
    #[inline]
    pub fn step(
        &self,
        slot: &mut u64,
        scan: Scan,
        score: Option<f64>,
        price: f64,
    ) -> Option<EventKind> {
        match (score, *slot) {
            (Some(score), 0) => {
                *slot = self.key(scan, score, price);
                Some(EventKind::New)
            }
            (Some(score), last) => {
                let key = self.key(scan, score, price);
                (key != last).then(|| {
                    *slot = key;
                    EventKind::Update
                })
            }
            (None, 0) => None,
            (None, _) => {
                *slot = 0;
                Some(EventKind::Clear)
            }
        }
    }
}

/// One symbol's conditions, one per scan of a set: the key each last had (0 while off)
/// and the bits of those that are on, so a bar visits only the scans that fire or were
/// on. Scan `i` is bit `i` (a set holds at most 64).
#[derive(Debug, Clone)]
pub struct SymbolConds {
    keys: Box<[u64]>,
    on: u64,
}

impl SymbolConds {
    /// Every condition off, for `scans` scans.
    pub fn new(scans: usize) -> SymbolConds {
        SymbolConds {
            keys: vec![0; scans].into(),
            on: 0,
        }
    }

    /// Takes an earlier run's open condition of scan `i`, keyed as it was published.
    pub fn restore(&mut self, i: usize, key: u64) {
        if let Some(slot) = self.keys.get_mut(i) {
            *slot = key;
            self.on |= 1 << i;
        }
    }

    /// Steps the scans that fire now (the bits of `fired`, each with its score in
    /// `scores`) and those that were on; `emit` gets each event to publish, with its
    /// scan's index, in index order.
    #[inline]
    pub fn step(
        &mut self,
        dedup: &Dedup,
        fired: u64,
        scores: &[Option<f64>],
        scan: impl Fn(usize) -> Scan,
        price: f64,
        mut emit: impl FnMut(usize, EventKind),
    ) {
        let mut todo = fired | self.on;
        while todo != 0 {
            let i = todo.trailing_zeros() as usize;
            todo &= todo - 1;
            let event = dedup.step(&mut self.keys[i], scan(i), scores[i], price);
            let bit = 1u64 << i;
            self.on = if self.keys[i] != 0 {
                self.on | bit
            } else {
                self.on & !bit
            };
            if let Some(event) = event {
                emit(i, event);
            }
        }
    }
}

/// `x.floor() as i64` without the library call that baseline x86-64 makes of `floor`.
#[inline]
fn floor(x: f64) -> i64 {
    let t = x as i64;
    if (t as f64) > x { t - 1 } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_new_quiet_update_clear_new() {
        let d = Dedup::new(Materiality::default());
        let mut slot = 0;
        let scan = Scan::PriceChange;
        // Price bands of 1% sit at 1.01^k: 99.19 to 100.18 is one of them.
        let steps = [
            (Some(1.1), 99.3, Some(EventKind::New)),
            // Persisting, same bands: nothing.
            (Some(1.2), 99.5, None),
            (Some(1.4), 99.9, None),
            // Score into the next band: update.
            (Some(1.6), 99.9, Some(EventKind::Update)),
            (Some(1.6), 100.1, None),
            // Price 2% away: update.
            (Some(1.6), 102.5, Some(EventKind::Update)),
            (None, 102.5, Some(EventKind::Clear)),
            (None, 90.0, None),
            // Re-trigger: new again.
            (Some(1.0), 100.0, Some(EventKind::New)),
        ];
        for (i, (score, price, want)) in steps.into_iter().enumerate() {
            assert_eq!(d.step(&mut slot, scan, score, price), want, "step {i}");
        }
    }

    #[test]
    fn zero_steps_turn_updates_off() {
        let d = Dedup::new(Materiality {
            score_step: 0.0,
            price_pct: 0.0,
        });
        let mut slot = 0;
        assert_eq!(
            d.step(&mut slot, Scan::NewHigh, Some(1.0), 10.0),
            Some(EventKind::New)
        );
        assert_eq!(d.step(&mut slot, Scan::NewHigh, Some(9.0), 90.0), None);
        assert_eq!(
            d.step(&mut slot, Scan::NewHigh, None, 90.0),
            Some(EventKind::Clear)
        );
    }

    #[test]
    fn floor_matches_the_library() {
        for x in [-2.5, -2.0, -0.1, 0.0, 0.1, 1.0, 1.9, 462.8, -462.8] {
            assert_eq!(floor(x), x.floor() as i64, "{x}");
        }
    }

    #[test]
    fn keys_differ_between_scans() {
        let d = Dedup::new(Materiality::default());
        assert_ne!(
            d.key(Scan::NewHigh, 1.0, 10.0),
            d.key(Scan::NewLow, 1.0, 10.0)
        );
    }
}
