//! How the bus between processes is doing, as its bridge threads see it: the edges read
//! it for `status.health`, `/healthz` and `/metrics`. Atomics, set by a bridge and read by
//! any edge, so no edge waits on a bridge.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What is wrong with the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusProblem {
    /// Redis does not answer.
    Unreachable,
    /// No producer holds the lease: nothing new will come.
    NoProducer,
}

impl BusProblem {
    /// Every problem, in the order of its counters.
    pub const ALL: [BusProblem; 2] = [BusProblem::Unreachable, BusProblem::NoProducer];

    /// As `/metrics` labels it.
    pub fn name(self) -> &'static str {
        match self {
            BusProblem::Unreachable => "unreachable",
            BusProblem::NoProducer => "no_producer",
        }
    }

    /// In words, for `status.reason` and `/healthz`.
    pub fn reason(self) -> &'static str {
        match self {
            BusProblem::Unreachable => "the Redis bus is unreachable",
            BusProblem::NoProducer => "no producer holds the lease",
        }
    }

    fn code(self) -> u8 {
        match self {
            BusProblem::Unreachable => 1,
            BusProblem::NoProducer => 2,
        }
    }
}

/// The bus's state now, how often each problem began, and results the producer dropped.
#[derive(Debug, Default)]
pub struct BusHealth {
    /// 0 while well, else the problem's code.
    state: AtomicU8,
    /// When the problem began, ms since the Unix epoch.
    since_ms: AtomicU64,
    /// Changes of state so far: edges compare it to push a status when it moves.
    changes: AtomicU64,
    began: [AtomicU64; 2],
    dropped: AtomicU64,
}

impl BusHealth {
    /// All is well (again).
    pub fn ok(&self) {
        if self.state.swap(0, Ordering::Relaxed) != 0 {
            self.changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!("the bus is back");
        }
    }

    /// `problem` is the case now.
    pub fn problem(&self, problem: BusProblem) {
        if self.state.swap(problem.code(), Ordering::Relaxed) != problem.code() {
            self.since_ms.store(now_ms(), Ordering::Relaxed);
            self.changes.fetch_add(1, Ordering::Relaxed);
            self.began[usize::from(problem.code() - 1)].fetch_add(1, Ordering::Relaxed);
            tracing::warn!(problem = problem.name(), "{}", problem.reason());
        }
    }

    /// The problem now and how long it has lasted, or `None` while well.
    pub fn current(&self) -> Option<(BusProblem, Duration)> {
        let problem = match self.state.load(Ordering::Relaxed) {
            1 => BusProblem::Unreachable,
            2 => BusProblem::NoProducer,
            _ => return None,
        };
        let since = self.since_ms.load(Ordering::Relaxed);
        Some((
            problem,
            Duration::from_millis(now_ms().saturating_sub(since)),
        ))
    }

    /// Changes of state so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// How many times `problem` began.
    pub fn began(&self, problem: BusProblem) -> u64 {
        self.began[usize::from(problem.code() - 1)].load(Ordering::Relaxed)
    }

    /// Results the producer could not keep while Redis was away.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a result dropped from the producer's backlog.
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_counted_when_they_begin_and_cleared_by_ok() {
        let h = BusHealth::default();
        assert_eq!(h.current(), None);
        h.problem(BusProblem::Unreachable);
        h.problem(BusProblem::Unreachable);
        assert_eq!(h.current().map(|(p, _)| p), Some(BusProblem::Unreachable));
        h.problem(BusProblem::NoProducer);
        h.ok();
        h.ok();
        assert_eq!(h.current(), None);
        assert_eq!(h.began(BusProblem::Unreachable), 1);
        assert_eq!(h.began(BusProblem::NoProducer), 1);
        assert_eq!(h.changes(), 3);
    }
}
