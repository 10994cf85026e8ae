//! Pacing of queued requests: a token bucket that mirrors the server's per-connection
//! message limit (PROTOCOL.md: 50 messages a second, burst 100), and a hold that grows
//! while the server keeps refusing. Sans-IO: every call takes `now`; it never sleeps
//! and never touches a socket.

use std::time::{Duration, Instant};

use super::backoff::Backoff;

/// Float dust from many refills must not cost a wake-up for a millionth of a token.
const EPSILON: f64 = 1e-9;

/// The client's copy of the server's bucket for one connection.
///
/// Subscription messages go out whenever the subscription manager has them and are
/// [`charge`](Pacing::charge)d to the same bucket, so the requests behind them wait their
/// turn. Requests also leave a tenth of the burst unused: the server reads the time once
/// per loop turn, not per message, so a message sent the instant a token came due can
/// meet a bucket a little emptier than ours; the reserve absorbs that, and lets a few
/// subscription changes go out at any moment without being refused. The server also
/// charges a long resume's replay (a message per 10,000 results), which is not mirrored
/// here: the reserve covers a usual history, and a refused request is sent again.
#[derive(Debug)]
pub(super) struct Pacing {
    /// Tokens a second.
    rate: f64,
    burst: f64,
    /// Tokens requests leave for subscriptions and timing slack.
    reserve: f64,
    /// May go below zero: subscription messages are charged whatever is left.
    tokens: f64,
    /// When `tokens` was counted; in the future while a hold lasts.
    at: Instant,
    /// Refusal rounds since the last answer that was not a refusal.
    refusals: u32,
    /// Counts holds: requests sent since the last one was refused are in this round.
    round: u32,
    /// Ceilings of the holds.
    backoff: Backoff,
}

impl Pacing {
    /// A full bucket at `now`. A rate or burst of 0 is taken as 1 (nothing could ever
    /// be sent otherwise).
    pub fn new(rate: u32, burst: u32, backoff: Backoff, now: Instant) -> Pacing {
        let burst = burst.max(1);
        let reserve = if burst == 1 { 0 } else { (burst / 10).max(1) };
        Pacing {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst),
            reserve: f64::from(reserve),
            tokens: f64::from(burst),
            at: now,
            refusals: 0,
            round: 0,
            backoff,
        }
    }

    /// A new connection: the server gives each one a full bucket, and forgets refusals.
    pub fn connected(&mut self, now: Instant) {
        self.tokens = self.burst;
        self.at = now;
        self.refusals = 0;
        self.round = self.round.wrapping_add(1);
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let elapsed = (now - self.at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            self.at = now;
        }
    }

    /// Takes a token for a queued request, when one is free beyond the reserve.
    pub fn try_send(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens + EPSILON >= 1.0 + self.reserve {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a message that goes out whatever the bucket holds.
    pub fn charge(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    /// When [`try_send`](Pacing::try_send) will next succeed.
    pub fn ready_at(&self) -> Instant {
        let need = 1.0 + self.reserve - self.tokens - EPSILON;
        if need <= 0.0 {
            return self.at;
        }
        // Rounded up to the microsecond, so a wake-up never comes just too early.
        let micros = (need / self.rate * 1e6).ceil();
        self.at + Duration::from_micros(micros as u64)
    }

    /// The round a request sent now belongs to.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// The server refused a message sent in `round`: its bucket is empty. The first
    /// refusal of a round empties ours and holds every request for the next backoff
    /// ceiling, one step longer each round refused in a row; the rest of the round (sent
    /// before the server's answer could arrive) is covered by that hold already.
    pub fn refused(&mut self, round: u32, now: Instant) {
        if round != self.round {
            return;
        }
        self.refill(now);
        self.refusals = self.refusals.saturating_add(1);
        self.round = self.round.wrapping_add(1);
        self.tokens = self.tokens.min(0.0);
        self.at = self.at.max(now) + self.backoff.ceiling(self.refusals);
    }

    /// The server answered a request: the next refusal starts the holds over.
    pub fn answered(&mut self) {
        self.refusals = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff {
            initial: 100 * MS,
            factor: 2.0,
            max: 400 * MS,
        }
    }

    /// How many requests go out at each of `times` (ms after `t0`), greedily.
    fn sends(p: &mut Pacing, t0: Instant, times: &[u64]) -> Vec<usize> {
        times
            .iter()
            .map(|&ms| {
                let now = t0 + Duration::from_millis(ms);
                let mut n = 0;
                while p.try_send(now) {
                    n += 1;
                }
                n
            })
            .collect()
    }

    #[test]
    fn the_burst_less_the_reserve_then_the_rate() {
        let t0 = Instant::now();
        // (rate, burst, times in ms, sends at each)
        let cases: [(u32, u32, &[u64], &[usize]); 5] = [
            // 50/s, burst 100: 90 at once (10 held back), then one every 20 ms.
            (50, 100, &[0, 10, 20, 40, 100, 1000], &[90, 0, 1, 1, 3, 45]),
            // 200/s, burst 20: 18 at once, then one every 5 ms.
            (200, 20, &[0, 4, 5, 10, 50], &[18, 0, 1, 1, 8]),
            // Idle for long: never more than the burst less the reserve.
            (50, 100, &[0, 60_000], &[90, 90]),
            // A burst of 1 has no room for a reserve.
            (10, 1, &[0, 50, 100, 200], &[1, 0, 1, 1]),
            // Zeros are taken as ones.
            (0, 0, &[0, 500, 1000], &[1, 0, 1]),
        ];
        for (rate, burst, times, want) in cases {
            let mut p = Pacing::new(rate, burst, backoff(), t0);
            assert_eq!(sends(&mut p, t0, times), want, "{rate}/s burst {burst}");
        }
    }

    #[test]
    fn ready_at_is_when_the_next_send_succeeds() {
        let t0 = Instant::now();
        let mut p = Pacing::new(200, 20, backoff(), t0);
        assert_eq!(p.ready_at(), t0);
        assert_eq!(sends(&mut p, t0, &[0]), [18]);
        let due = p.ready_at();
        assert_eq!(due, t0 + 5 * MS);
        assert!(!p.try_send(due - Duration::from_micros(1)));
        assert!(p.try_send(due));
        // Many small steps add no drift that would make the wake-up early.
        let mut now = due;
        for _ in 0..1000 {
            now = p.ready_at();
            assert!(p.try_send(now));
        }
        assert_eq!(now, t0 + 5005 * MS);
    }

    #[test]
    fn subscription_messages_are_charged_and_delay_requests() {
        let t0 = Instant::now();
        let mut p = Pacing::new(50, 100, backoff(), t0);
        for _ in 0..64 {
            p.charge(t0);
        }
        assert_eq!(sends(&mut p, t0, &[0]), [26]);
        // Charged into debt: requests wait for the bucket to climb back.
        for _ in 0..20 {
            p.charge(t0);
        }
        assert_eq!(p.ready_at(), t0 + 420 * MS);
        assert_eq!(sends(&mut p, t0, &[419, 420]), [0, 1]);
    }

    #[test]
    fn refusals_hold_sends_longer_each_round_until_an_answer() {
        let t0 = Instant::now();
        let mut p = Pacing::new(200, 20, backoff(), t0);
        assert_eq!(sends(&mut p, t0, &[0]), [18]);
        let first = p.round();
        p.refused(first, t0);
        // Held 100 ms with an empty bucket, then the reserve and a token to refill.
        let resume = t0 + 100 * MS + 15 * MS;
        assert_eq!(p.ready_at(), resume);
        // More refusals of the same round do not lengthen the hold.
        p.refused(first, t0 + MS);
        assert_eq!(p.ready_at(), resume);
        assert!(!p.try_send(resume - MS));
        assert!(p.try_send(resume));
        // Refused again: twice as long, then capped.
        let now = resume + MS;
        p.refused(p.round(), now);
        assert_eq!(p.ready_at(), now + 200 * MS + 15 * MS);
        let now = now + 300 * MS;
        p.refused(p.round(), now);
        let now = now + 500 * MS;
        p.refused(p.round(), now);
        assert_eq!(p.ready_at(), now + 400 * MS + 15 * MS);
        // An answer starts the holds over.
        p.answered();
        let now = now + 500 * MS;
        p.refused(p.round(), now);
        assert_eq!(p.ready_at(), now + 100 * MS + 15 * MS);
    }

    #[test]
    fn a_new_connection_starts_full_and_forgets_the_hold() {
        let t0 = Instant::now();
        let mut p = Pacing::new(50, 100, backoff(), t0);
        assert_eq!(sends(&mut p, t0, &[0]), [90]);
        let old = p.round();
        p.refused(old, t0);
        p.connected(t0 + MS);
        assert_eq!(p.ready_at(), t0 + MS);
        // A refusal from the old connection's round changes nothing.
        p.refused(old, t0 + MS);
        assert_eq!(sends(&mut p, t0, &[1]), [90]);
    }
}
