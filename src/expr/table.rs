//! Many conditions evaluated together, each distinct one once, into a bit set: the
//! conditions of the common shapes run in one tight loop per shape, with no dispatch and
//! no branch on their outcome; the others walk their steps. A scan then fires when its
//! conditions' bits are all set.

use super::Error;
use super::lex::CmpOp;
use super::parse::Dir;
use super::program::{MAX_DEPTH, Program, Shape, compare, crossed, in_range, value};

/// The most distinct conditions one table holds.
pub const MAX_CONDITIONS: usize = 64 * WORDS;
/// The bit set's words.
pub const WORDS: usize = 16;

/// Which conditions held, by index.
pub type Held = [u64; WORDS];

/// Distinct conditions, grouped by shape.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    all: Vec<Program>,
    ranges: Vec<(u16, bool, f64, f64, u16)>,
    pairs: Vec<(u16, CmpOp, u16, u16)>,
    crosses: Vec<(u16, Dir, u32, u16)>,
    general: Vec<u16>,
}

impl Conditions {
    /// Takes in `condition` (a compiled condition), or finds it among those taken;
    /// returns its index. `col` is where it was written, for the error when the table
    /// is full.
    pub fn add(&mut self, condition: &Program, col: usize) -> Result<u16, Error> {
        if let Some(at) = self.all.iter().position(|p| p == condition) {
            return Ok(at as u16);
        }
        if self.all.len() == MAX_CONDITIONS {
            return Err(Error::at(
                col,
                format!("more than {MAX_CONDITIONS} distinct conditions in all"),
            ));
        }
        let at = self.all.len() as u16;
        self.all.push(condition.clone());
        match condition.shape() {
            Shape::IndIn(a, abs, lo, hi) => self.ranges.push((a, abs, lo, hi, at)),
            Shape::IndInd(a, op, b) => self.pairs.push((a, op, b, at)),
            Shape::Cross(c, dir, within) => self.crosses.push((c, dir, within, at)),
            _ => self.general.push(at),
        }
        Ok(at)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// None yet.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Sets in `held` the bit of every condition that holds on `values` and `crosses`,
    /// and clears the others.
    #[inline]
    pub fn eval(&self, values: &[f64], crosses: &[f64], held: &mut Held) {
        let words = self.all.len().div_ceil(64);
        held[..words].fill(0);
        let mut set = |at: u16, holds: bool| {
            held[usize::from(at) / 64] |= u64::from(holds) << (at % 64);
        };
        for &(a, abs, lo, hi, at) in self.ranges.iter() {
            set(at, in_range(value(values, a), abs, lo, hi));
        }
        for &(a, op, b, at) in self.pairs.iter() {
            set(at, compare(op, value(values, a), value(values, b)));
        }
        for &(c, dir, within, at) in self.crosses.iter() {
            set(at, crossed(crosses, c, dir, within));
        }
        if !self.general.is_empty() {
            let stack = &mut [0.0; MAX_DEPTH];
            for &at in self.general.iter() {
                let holds = self.all[usize::from(at)].holds_on(values, crosses, stack);
                set(at, holds);
            }
        }
    }
}

/// The bits of a set of condition indices: what a scan needs all of. Most scans' fit in
/// one word, kept inline.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    first: (u8, u64),
    rest: Box<[(u8, u64)]>,
}

impl Mask {
    /// The bits of `indices`, by word.
    pub fn of(indices: &[u16]) -> Mask {
        let mut words: Vec<(u8, u64)> = Vec::new();
        for &i in indices {
            let (w, bit) = ((i / 64) as u8, 1u64 << (i % 64));
            match words.iter_mut().find(|(at, _)| *at == w) {
                Some((_, bits)) => *bits |= bit,
                None => words.push((w, bit)),
            }
        }
        let first = if words.is_empty() {
            (0, 0)
        } else {
            words.remove(0)
        };
        Mask {
            first,
            rest: words.into(),
        }
    }

    /// Every bit is set in `held`.
    #[inline]
    pub fn all_held(&self, held: &Held) -> bool {
        let word = |(w, bits): (u8, u64)| held[usize::from(w) & (WORDS - 1)] & bits == bits;
        word(self.first) && self.rest.iter().all(|&w| word(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{Needs, condition};

    #[test]
    fn each_condition_once_and_its_bit_as_it_evaluates() {
        let texts = [
            "rsi(14) < 30",
            "abs(change_pct) >= 3",
            "close > sma(20)",
            "crosses_above(sma(5), sma(20))",
            "(high - low) / close * 100 > 4",
            "vwap != close",
            "rsi(14) < 30",
        ];
        let mut needs = Needs::default();
        let mut table = Conditions::default();
        let programs: Vec<Program> = texts
            .iter()
            .map(|t| condition(t, &mut needs).unwrap().program)
            .collect();
        let at: Vec<u16> = programs.iter().map(|p| table.add(p, 1).unwrap()).collect();
        assert_eq!(
            at,
            [0, 1, 2, 3, 4, 5, 0],
            "the repeated one shares its index"
        );
        assert_eq!(table.len(), 6);
        let picks = [f64::NAN, -5.0, 0.0, 3.0, 29.0, 31.0, 250.0];
        let mut crosses = crate::expr::cross_states(needs.crosses.len());
        let mut held = [u64::MAX; WORDS];
        for round in 0..200usize {
            let values: Vec<f64> = (0..needs.indicators.len())
                .map(|i| picks[(round * 7 + i * 3 + round / 7) % picks.len()])
                .collect();
            for (c, diff) in needs.crosses.iter().enumerate() {
                crate::expr::push_cross(&mut crosses, c, diff.eval(&values, &[]));
            }
            table.eval(&values, &crosses, &mut held);
            for (i, p) in programs.iter().enumerate() {
                let bit = held[0] >> at[i] & 1 == 1;
                assert_eq!(
                    bit,
                    p.holds(&values, &crosses),
                    "{} in round {round}",
                    texts[i]
                );
            }
            assert_eq!(held[0] >> 6, 0, "no bit past the conditions");
            let m = Mask::of(&[at[0], at[2]]);
            assert_eq!(
                m.all_held(&held),
                programs[0].holds(&values, &crosses) && programs[2].holds(&values, &crosses)
            );
        }
    }

    #[test]
    fn indices_past_the_first_word_mask_and_test_right() {
        let m = Mask::of(&[3, 64, 70, 1023]);
        assert_eq!(m.first, (0, 1 << 3));
        assert_eq!(&*m.rest, &[(1, 1 | 1 << 6), (15, 1 << 63)]);
        let mut held = [0u64; WORDS];
        held[0] = 1 << 3;
        held[1] = 1 | 1 << 6;
        assert!(!m.all_held(&held));
        held[15] = 1 << 63;
        assert!(m.all_held(&held));
        assert!(Mask::of(&[]).all_held(&[0; WORDS]), "no condition: always");
    }
}
