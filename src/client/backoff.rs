//! Reconnect delays: exponential backoff with full jitter, and the clock the client waits
//! on (injectable, so tests can run a reconnect schedule without waiting for it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

/// Exponential backoff with full jitter: attempt `n` (from 1) waits a uniformly random
/// time in `[0, min(max, initial × factor^(n-1))]`. Full jitter spreads a crowd of
/// clients that lost the same server over the whole window instead of letting them
/// return in step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The ceiling of the first attempt's delay.
    pub initial: Duration,
    /// Growth of the ceiling per attempt.
    pub factor: f64,
    /// The ceiling's cap.
    pub max: Duration,
}

impl Default for Backoff {
    /// 0.5 s, doubling, capped at 20 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            factor: 2.0,
            max: Duration::from_secs(20),
        }
    }
}

impl Backoff {
    /// The original design's schedule: 1 s, doubling, capped at 60 s.
    pub fn classic() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(60),
        }
    }

    /// The longest delay attempt `attempt` (from 1) may wait.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        // NaN, infinite or beyond what a Duration holds: the cap.
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// A delay for attempt `attempt`, drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut dyn RngCore) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        ceiling.mul_f64(rng.random::<f64>())
    }
}

/// What the client reads the time from and waits by.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;

    /// How long to block in real time so that `d` passes on this clock. The client
    /// blocks on its command channel for that long, so a command still ends the wait.
    fn pass(&self, d: Duration) -> Duration;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn pass(&self, d: Duration) -> Duration {
        d
    }
}

/// A clock that moves only when the client waits: a wait advances it at once by the
/// whole time asked. For tests of reconnect schedules.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Instant>,
    start: Instant,
}

impl Default for ManualClock {
    fn default() -> Self {
        let start = Instant::now();
        ManualClock {
            now: Mutex::new(start),
            start,
        }
    }
}

impl ManualClock {
    /// Time the clock has advanced since it was made.
    pub fn elapsed(&self) -> Duration {
        self.now() - self.start
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pass(&self, d: Duration) -> Duration {
        self.advance(d);
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff::default();
        let secs: Vec<f64> = (1..=9).map(|n| b.ceiling(n).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0]);
        let classic = Backoff::classic();
        assert_eq!(classic.ceiling(1), Duration::from_secs(1));
        assert_eq!(classic.ceiling(7), Duration::from_secs(60));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(20));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads_over_it() {
        let b = Backoff::default();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        for attempt in 1..=8 {
            let ceiling = b.ceiling(attempt);
            let draws: Vec<Duration> = (0..2000).map(|_| b.delay(attempt, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            let mean = draws.iter().map(Duration::as_secs_f64).sum::<f64>() / 2000.0;
            let half = ceiling.as_secs_f64() / 2.0;
            // Uniform on [0, c]: the mean of 2,000 draws is within 5 % of c/2.
            assert!(
                (mean - half).abs() < 0.05 * half,
                "attempt {attempt}: {mean}"
            );
            let low = draws
                .iter()
                .filter(|d| d.as_secs_f64() < 0.1 * 2.0 * half)
                .count();
            assert!(low > 100, "attempt {attempt}: the bottom tenth is reached");
        }
    }
}
