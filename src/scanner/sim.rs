//! `sim`: a seeded synthetic market, the default source.
//!
//! Each symbol has its own base price, volatility and volume profile. Its log price
//! wanders around the base (mean-reverting, so the market stays plausible for hours),
//! with trends that come and go, rare jumps of 3 to 8 percent, and volume bursts of 3 to
//! 10 times normal. Updates go round the symbols in a fixed shuffled order at `rate` per
//! second. Before the first live update every symbol gets `warmup` bars of history, so
//! the slow indicators are ready and opportunities stream out within seconds of start.
//!
//! The same seed gives the same market: every random draw depends only on the update's
//! index, never on when the scanner polls.

use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::indicators::{Bar, Reference};
use super::market::{Feed, Universe};

/// Simulator settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimOptions {
    /// Symbols in the market.
    pub symbols: usize,
    /// Updates per second over the whole market.
    pub rate: f64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Bars of history each symbol gets before live updates start.
    pub warmup: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            symbols: 500,
            rate: 1000.0,
            seed: 1,
            warmup: 60,
        }
    }
}

/// Pull of the log price back to its base, per update: a half-life of about 70 updates.
const REVERSION: f64 = 0.01;
/// Chance per update that a jump happens.
const JUMP_CHANCE: f64 = 0.002;
/// Chance per update that a volume burst starts.
const BURST_CHANCE: f64 = 0.004;
/// Updates made in one poll at most.
const MAX_STEPS: u32 = 1 << 20;
/// Chance per update that the trend changes.
const TREND_CHANCE: f64 = 0.01;

#[derive(Debug, Clone)]
struct Walk {
    id: u32,
    base: f64,
    /// Log distance from the base price.
    x: f64,
    sigma: f64,
    drift: f64,
    volume: f64,
    burst_left: u32,
    burst: f64,
}

/// The simulated market.
#[derive(Debug)]
pub struct Sim {
    options: SimOptions,
    rng: Xoshiro256PlusPlus,
    walks: Vec<Walk>,
    /// Round-robin order over `walks`.
    order: Vec<u32>,
    started: bool,
    /// When update 0 of the live schedule is due, and its wall-clock time.
    start: Instant,
    start_wall: SystemTime,
    /// Live updates made.
    made: u64,
    /// `made` when the schedule last started over (after falling far behind).
    base: u64,
}

impl Sim {
    /// A market whose live updates start at `now`.
    pub fn new(options: SimOptions, now: Instant) -> Sim {
        Sim {
            rng: Xoshiro256PlusPlus::seed_from_u64(options.seed),
            options,
            walks: Vec::new(),
            order: Vec::new(),
            started: false,
            start: now,
            start_wall: SystemTime::now(),
            made: 0,
            base: 0,
        }
    }

    /// Seconds between two updates of one symbol.
    fn bar_period(&self) -> f64 {
        self.options.symbols as f64 / self.options.rate.max(f64::MIN_POSITIVE)
    }

    fn warm_up(&mut self, universe: &mut Universe) {
        self.started = true;
        let n = self.options.symbols;
        for i in 0..n {
            let Some(id) = universe.intern(&ticker(i)) else {
                break;
            };
            let rng = &mut self.rng;
            self.walks.push(Walk {
                id,
                base: (rng.random_range(5f64.ln()..500f64.ln())).exp(),
                x: 0.0,
                sigma: rng.random_range(0.001..0.003),
                drift: 0.0,
                volume: (rng.random_range(1e3f64.ln()..1e6f64.ln())).exp(),
                burst_left: 0,
                burst: 1.0,
            });
        }
        self.order = (0..self.walks.len() as u32).collect();
        for i in (1..self.order.len()).rev() {
            let j = self.rng.random_range(0..=i);
            self.order.swap(i, j);
        }
        // History: `warmup` bars each, the last one a bar period before the start.
        let period = self.bar_period();
        for bar in 0..self.options.warmup {
            let back = (self.options.warmup - bar) as f64 * period;
            let ts = Duration::try_from_secs_f64(back)
                .ok()
                .and_then(|back| self.start_wall.checked_sub(back));
            for w in 0..self.walks.len() {
                self.step(w, ts, universe);
            }
        }
    }

    /// One update of walk `w`.
    fn step(&mut self, w: usize, ts: Option<SystemTime>, universe: &mut Universe) {
        let rng = &mut self.rng;
        let walk = &mut self.walks[w];
        if rng.random::<f64>() < TREND_CHANCE {
            walk.drift = match rng.random_range(0..3) {
                0 => 0.0,
                1 => walk.sigma * rng.random_range(0.05..0.15),
                _ => -walk.sigma * rng.random_range(0.05..0.15),
            };
        }
        let z: f64 = rng.sample(StandardNormal);
        walk.x += -REVERSION * walk.x + walk.drift + walk.sigma * z;
        if rng.random::<f64>() < JUMP_CHANCE {
            let size = rng.random_range(0.03..0.08);
            walk.x += if rng.random::<bool>() { size } else { -size };
        }
        if walk.burst_left == 0 && rng.random::<f64>() < BURST_CHANCE {
            walk.burst_left = rng.random_range(2..7);
            walk.burst = rng.random_range(3.0..10.0);
        }
        let mut volume = walk.volume * (0.3 * rng.sample::<f64, _>(StandardNormal)).exp();
        if walk.burst_left > 0 {
            walk.burst_left -= 1;
            volume *= walk.burst;
        }
        // Cents, like a quote; volume in whole shares.
        let price = ((walk.base * walk.x.exp()) * 100.0).round().max(1.0) / 100.0;
        let bar = Bar::tick(price, volume.round() as u64, ts);
        universe.update(walk.id, &bar);
    }

    /// When live update `k` of the schedule is due.
    fn due(&self, k: u64) -> Duration {
        let secs = k as f64 / self.options.rate.max(f64::MIN_POSITIVE);
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

impl Feed for Sim {
    fn reference(&self) -> Reference {
        Reference::SessionOpen
    }

    fn begin(&mut self, universe: &mut Universe) {
        self.warm_up(universe);
    }

    fn poll(&mut self, now: Instant, universe: &mut Universe) {
        if !self.started {
            self.warm_up(universe);
        }
        if self.walks.is_empty() || self.options.rate <= 0.0 {
            return;
        }
        let elapsed = now.saturating_duration_since(self.start);
        let mut steps = 0;
        while self.due(self.made - self.base) <= elapsed {
            let w = self.order[(self.made % self.walks.len() as u64) as usize] as usize;
            let ts = self.start_wall.checked_add(self.due(self.made - self.base));
            self.step(w, ts, universe);
            self.made += 1;
            steps += 1;
            if steps == MAX_STEPS {
                // Far behind (a rate beyond this core, or a long stall): skip ahead
                // rather than never return.
                tracing::warn!(
                    rate = self.options.rate,
                    "the simulator cannot keep up; skipping ahead"
                );
                self.start_wall = self
                    .start_wall
                    .checked_add(elapsed)
                    .unwrap_or(self.start_wall);
                self.start = now;
                self.base = self.made;
                break;
            }
        }
    }

    fn restart(&mut self, _now: Instant) {
        // A live market: it went on while the scanner was stopped.
    }
}

/// A ticker-like name, distinct for every index: three letters for the first 26³,
/// then four, then five.
pub fn ticker(i: usize) -> String {
    let mut len = 3;
    let mut rest = i;
    let mut space = 26usize.pow(3);
    while rest >= space && len < 8 {
        rest -= space;
        len += 1;
        space *= 26;
    }
    // 7919 is prime and not 2 or 13, so it is coprime with 26^len: every name once.
    let mut n = (rest % space) * 7919 % space;
    let mut name = vec![b'A'; len];
    for c in name.iter_mut().rev() {
        *c = b'A' + (n % 26) as u8;
        n /= 26;
    }
    String::from_utf8_lossy(&name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Scan, ScanResult};
    use crate::scanner::Source;
    use crate::scanner::market::{MarketScanner, ScanSettings};
    use std::collections::{BTreeMap, HashSet};

    fn run(seed: u64, seconds: u64) -> Vec<(u64, ScanResult)> {
        let t0 = Instant::now();
        let options = SimOptions {
            seed,
            ..SimOptions::default()
        };
        let mut scanner = MarketScanner::new(Sim::new(options, t0), ScanSettings::default(), t0);
        let mut all = Vec::new();
        let mut out = Vec::new();
        // An injected clock: 100 ms steps, no sleeping.
        for step in 0..=seconds * 10 {
            let now = t0 + Duration::from_millis(step * 100);
            loop {
                let next = scanner.poll(now, 4096, &mut out);
                all.extend(out.drain(..).map(|r| (step, r)));
                if next > now {
                    break;
                }
            }
        }
        all
    }

    #[test]
    fn every_scan_fires_within_the_first_minute() {
        let results = run(1, 60);
        let mut first: BTreeMap<&str, u64> = BTreeMap::new();
        for (step, r) in &results {
            first.entry(r.scan.name()).or_insert(*step);
        }
        for scan in crate::scanner::MARKET_SCANS {
            assert!(
                first.contains_key(scan.name()),
                "{scan} never fired: {first:?}"
            );
        }
        let kinds: HashSet<_> = results.iter().map(|(_, r)| r.event).collect();
        assert_eq!(
            kinds.len(),
            3,
            "new, update and clear all happen: {kinds:?}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_market() {
        let key = |v: Vec<(u64, ScanResult)>| {
            v.into_iter()
                .map(|(step, r)| {
                    (
                        step,
                        r.symbol,
                        r.scan,
                        r.event,
                        r.price.to_bits(),
                        r.score.to_bits(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let a = key(run(7, 20));
        assert!(!a.is_empty());
        assert_eq!(a, key(run(7, 20)));
        assert_ne!(a, key(run(8, 20)));
    }

    #[test]
    fn results_follow_the_dedup_lifecycle() {
        let results = run(3, 60);
        let mut open: HashSet<(smol_str::SmolStr, Scan)> = HashSet::new();
        for (_, r) in results {
            let key = (r.symbol.clone(), r.scan);
            match r.event {
                EventKind::New => assert!(open.insert(key), "new twice for {r:?}"),
                EventKind::Update => assert!(open.contains(&key), "update before new: {r:?}"),
                EventKind::Clear => assert!(open.remove(&key), "clear without new: {r:?}"),
            }
        }
    }

    #[test]
    fn a_rate_beyond_the_machine_skips_ahead_instead_of_hanging() {
        let t0 = Instant::now();
        let options = SimOptions {
            symbols: 10,
            rate: 1e9,
            warmup: 0,
            ..SimOptions::default()
        };
        let mut sim = Sim::new(options, t0);
        let mut u = Universe::new(crate::scanner::indicators::IndicatorParams::default(), 100);
        sim.poll(t0 + Duration::from_secs(10), &mut u);
        assert_eq!(u.updates, u64::from(MAX_STEPS));
        sim.poll(t0 + Duration::from_secs(10), &mut u);
        assert_eq!(
            u.updates,
            u64::from(MAX_STEPS) + 1,
            "the schedule starts over at the skip"
        );
    }

    #[test]
    fn tickers_are_distinct_and_ticker_like() {
        let names: HashSet<String> = (0..100_000).map(ticker).collect();
        assert_eq!(names.len(), 100_000);
        assert!(
            names
                .iter()
                .all(|n| (3..=5).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_uppercase()))
        );
    }
}
