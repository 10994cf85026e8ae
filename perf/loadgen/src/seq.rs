//! `seq` accounting, for the benchmark engine and the soak driver alike: [`Seq`] follows
//! one connection's chain (each result must carry the last `seq` plus one) and says what
//! each value meant; [`Tally`] adds those verdicts up over many connections. Both are plain
//! values: where a chain starts (a connection's first result, a `subscribed` reply) is the
//! caller's business.

/// What one `seq` meant for its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It started the chain.
    First,
    InOrder,
    /// This many values were skipped before it: lost, or (under overload) conflated by
    /// the server, which skips results a later one supersedes.
    Gap(u64),
    /// The last value again.
    Duplicate,
    /// Below the last value: out of order.
    OutOfOrder,
}

/// One chain of `seq` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seq {
    /// The last `seq` seen, or the one the chain was started from. `None`: the next
    /// value starts the chain.
    last: Option<u64>,
}

impl Seq {
    /// A chain whose next value must be `seq + 1`.
    pub fn after(seq: u64) -> Seq {
        Seq { last: Some(seq) }
    }

    /// The last value seen (or started from).
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    #[inline]
    pub fn observe(&mut self, seq: u64) -> Outcome {
        match self.last {
            None => {
                self.last = Some(seq);
                Outcome::First
            }
            // A value at or below the last one never moves the chain back.
            Some(last) if seq == last => Outcome::Duplicate,
            Some(last) if seq < last => Outcome::OutOfOrder,
            Some(last) => {
                self.last = Some(seq);
                if seq == last + 1 {
                    Outcome::InOrder
                } else {
                    Outcome::Gap(seq - last - 1)
                }
            }
        }
    }
}

/// Gaps, duplicates and values out of order, over any number of chains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// `seq` values skipped, summed over all gaps.
    pub lost: u64,
    /// Gaps: jumps of more than one, however many values each skipped.
    pub gaps: u64,
    /// Values at or below the last one of their chain: repeated or out of order.
    pub duplicated: u64,
    /// Those of `duplicated` that were below the last one.
    pub out_of_order: u64,
}

impl Tally {
    #[inline]
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::First | Outcome::InOrder => {}
            Outcome::Gap(n) => {
                self.lost += n;
                self.gaps += 1;
            }
            Outcome::Duplicate => self.duplicated += 1,
            Outcome::OutOfOrder => {
                self.duplicated += 1;
                self.out_of_order += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_duplicates_from_the_first_value() {
        let mut t = Seq::default();
        let got: Vec<_> = [10, 11, 12, 15, 15, 14, 16, 20]
            .map(|s| t.observe(s))
            .to_vec();
        assert_eq!(
            got,
            [
                Outcome::First,
                Outcome::InOrder,
                Outcome::InOrder,
                Outcome::Gap(2),
                Outcome::Duplicate,
                Outcome::OutOfOrder,
                Outcome::InOrder,
                Outcome::Gap(3),
            ]
        );
        let mut tally = Tally::default();
        got.into_iter().for_each(|o| tally.add(o));
        assert_eq!(
            tally,
            Tally {
                lost: 5,
                gaps: 2,
                duplicated: 2,
                out_of_order: 1,
            }
        );
    }

    #[test]
    fn a_chain_started_from_a_value() {
        let mut c = Seq::after(100);
        let got: Vec<Outcome> = [101, 102, 105, 105, 103, 106, 110]
            .iter()
            .map(|&s| c.observe(s))
            .collect();
        assert_eq!(
            got,
            [
                Outcome::InOrder,
                Outcome::InOrder,
                Outcome::Gap(2),
                Outcome::Duplicate,
                Outcome::OutOfOrder,
                Outcome::InOrder,
                Outcome::Gap(3),
            ]
        );
        assert_eq!(c.last(), Some(110));
        // The value it started from is behind it.
        assert_eq!(Seq::after(7).observe(7), Outcome::Duplicate);
        // The top of the range neither wraps nor overflows.
        let mut top = Seq::after(u64::MAX);
        assert_eq!(top.observe(0), Outcome::OutOfOrder);
        assert_eq!(top.observe(u64::MAX), Outcome::Duplicate);
    }
}
