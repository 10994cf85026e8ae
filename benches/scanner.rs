//! Scanner micro-benchmarks: the per-update hot path, a full cycle over 100,000 symbols
//! (with the 8 built-in scans, and with 28), and JSONL ingest. Run with `cargo bench --bench scanner`; figures and targets are in
//! perf/RESULTS.md.
//!
//! Prices follow a seeded, mean-reverting random walk with trends, jumps and volume
//! bursts (the simulator's model), so branches and scan hit rates are realistic rather
//! than a flat or strictly periodic series.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use scanstream::scanner::indicators::{Bar, IndicatorParams, Indicators, Reference};
use scanstream::scanner::{
    Dedup, Definition, Feed, MARKET_SCANS, MarketScanner, Materiality, ScanSet, ScanSettings,
    Source, SymbolConds, SymbolScans, Thresholds, Universe, evaluate, parse_line, ticker,
};
use scanstream::{Scan, ScanResult};

/// Steps in the shared price path; a power of two so indexing is a mask.
const PATH: usize = 4096;
/// Symbols in the cycle benchmark.
const SYMBOLS: usize = 100_000;
/// Bars of history each symbol gets before the cycle benchmark starts.
const WARMUP: usize = 60;
/// Lines in the JSONL buffer.
const LINES: usize = 100_000;
/// Distinct symbols in the JSONL buffer.
const JSONL_SYMBOLS: usize = 500;

/// One step of the path: a price and a volume, both relative to a symbol's own base.
#[derive(Debug, Clone, Copy)]
struct Step {
    price: f64,
    volume: f64,
}

/// A mean-reverting log-price walk of `n` steps around 1.0 with trends that come and go,
/// rare 3-8 % jumps and 3-10x volume bursts (the simulator's parameters).
fn path(n: usize, seed: u64) -> Vec<Step> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let sigma = 0.002;
    let (mut x, mut drift) = (0.0f64, 0.0f64);
    let (mut burst_left, mut burst) = (0u32, 1.0f64);
    (0..n)
        .map(|_| {
            if rng.random::<f64>() < 0.01 {
                drift = match rng.random_range(0..3) {
                    0 => 0.0,
                    1 => sigma * rng.random_range(0.05..0.15),
                    _ => -sigma * rng.random_range(0.05..0.15),
                };
            }
            let z: f64 = rng.sample(StandardNormal);
            x += -0.01 * x + drift + sigma * z;
            if rng.random::<f64>() < 0.002 {
                let size = rng.random_range(0.03..0.08);
                x += if rng.random::<bool>() { size } else { -size };
            }
            if burst_left == 0 && rng.random::<f64>() < 0.004 {
                burst_left = rng.random_range(2..7);
                burst = rng.random_range(3.0..10.0);
            }
            let mut volume = (0.3 * rng.sample::<f64, _>(StandardNormal)).exp();
            if burst_left > 0 {
                burst_left -= 1;
                volume *= burst;
            }
            Step {
                price: x.exp(),
                volume,
            }
        })
        .collect()
}

/// Cents, like a quote.
fn cents(price: f64) -> f64 {
    ((price * 100.0).round() / 100.0).max(0.01)
}

/// Symbol `i`'s base price (5 to 500) and base volume (1e3 to 1e6), seeded.
fn bases(n: usize, seed: u64) -> Vec<(f64, f64, usize)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let price = rng.random_range(5f64.ln()..500f64.ln()).exp();
            let volume = rng.random_range(1e3f64.ln()..1e6f64.ln()).exp();
            (price, volume, rng.random_range(0..PATH))
        })
        .collect()
}

/// A feed of `symbols` symbols that names them and gives each `warmup` bars in `begin`,
/// then gives every symbol one bar per `poll`, whatever the time. Each symbol walks the
/// shared path from its own offset, scaled to its own base, so making a bar costs a few
/// loads and multiplies and the feed's own work is negligible next to the scanner's.
struct BenchFeed {
    path: Vec<Step>,
    /// (id, base price, base volume, path offset).
    symbols: Vec<(u32, f64, f64, usize)>,
    bases: Vec<(f64, f64, usize)>,
    warmup: usize,
    /// Bars given to each symbol so far.
    t: usize,
}

impl BenchFeed {
    fn new(symbols: usize, warmup: usize) -> BenchFeed {
        BenchFeed {
            path: path(PATH, 1),
            symbols: Vec::with_capacity(symbols),
            bases: bases(symbols, 2),
            warmup,
            t: 0,
        }
    }

    /// One bar for every symbol.
    fn step_all(&mut self, universe: &mut Universe) {
        let t = self.t;
        for &(id, price, volume, offset) in &self.symbols {
            let s = self.path[(t + offset) % PATH];
            let bar = Bar::tick(cents(price * s.price), (volume * s.volume) as u64, None);
            universe.update(id, &bar);
        }
        self.t += 1;
    }
}

impl Feed for BenchFeed {
    fn reference(&self) -> Reference {
        Reference::SessionOpen
    }

    fn begin(&mut self, universe: &mut Universe) {
        for (i, &(price, volume, offset)) in self.bases.iter().enumerate() {
            let id = universe.intern(&ticker(i)).expect("the universe has room");
            self.symbols.push((id, price, volume, offset));
        }
        for _ in 0..self.warmup {
            self.step_all(universe);
        }
    }

    fn poll(&mut self, _now: Instant, universe: &mut Universe) {
        self.step_all(universe);
    }
}

/// Polls until the cycle due at `now` is complete; returns the results it produced.
fn run_cycle<S: Source>(scanner: &mut S, now: Instant, out: &mut Vec<ScanResult>) -> usize {
    let mut results = 0;
    loop {
        let next = scanner.poll(now, usize::MAX, out);
        results += out.len();
        out.clear();
        if next > now {
            return results;
        }
    }
}

/// One symbol update on the hot path: indicators, the eight scans, dedup.
fn bench_indicators(c: &mut Criterion) {
    let p = path(PATH, 7);
    let bars: Vec<Bar> = p
        .iter()
        .map(|s| Bar::tick(cents(120.0 * s.price), (10_000.0 * s.volume) as u64, None))
        .collect();
    let thresholds = Thresholds::default();
    let dedup = Dedup::new(Materiality::default());

    // Warm up the indicators over the whole series, and count what the scans do so the
    // run says what it measured.
    let mut ind = Indicators::new(IndicatorParams::default());
    let mut slots = [0u64; 8];
    let (mut fired, mut events) = (0usize, 0usize);
    for bar in &bars {
        ind.update(bar);
        let scores = evaluate(&ind, &thresholds);
        for (k, scan) in MARKET_SCANS.into_iter().enumerate() {
            fired += scores[k].is_some() as usize;
            events += dedup
                .step(&mut slots[k], scan, scores[k], bar.close)
                .is_some() as usize;
        }
    }
    eprintln!(
        "indicators: {PATH} bars; per bar {:.3} scans fire, {:.3} events",
        fired as f64 / PATH as f64,
        events as f64 / PATH as f64
    );

    let mut g = c.benchmark_group("indicators");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    let mut i = 0;
    g.bench_function("update_and_scan", |b| {
        b.iter(|| {
            let bar = &bars[i];
            i = (i + 1) % PATH;
            ind.update(black_box(bar));
            let scores = evaluate(&ind, &thresholds);
            let mut events = 0u32;
            for (k, scan) in MARKET_SCANS.into_iter().enumerate() {
                events += dedup
                    .step(&mut slots[k], scan, scores[k], bar.close)
                    .is_some() as u32;
            }
            events
        })
    });

    let mut ind = Indicators::new(IndicatorParams::default());
    let mut i = 0;
    g.bench_function("update_only", |b| {
        b.iter(|| {
            let bar = &bars[i];
            i = (i + 1) % PATH;
            ind.update(black_box(bar));
            ind.bars
        })
    });
    g.finish();
}

/// A full cycle over 100,000 symbols, and the feed's ingest of their 100,000 bars alone.
fn bench_cycle(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut scanner =
        MarketScanner::new(BenchFeed::new(SYMBOLS, WARMUP), ScanSettings::default(), t0);
    assert_eq!(scanner.universe().len(), SYMBOLS);
    let mut out = Vec::new();
    let mut now = t0;

    // The first cycle, then one checked the hard way: every symbol evaluated once.
    let first = run_cycle(&mut scanner, now, &mut out);
    let before = scanner.progress();
    now += Duration::from_secs(1);
    let second = run_cycle(&mut scanner, now, &mut out);
    let after = scanner.progress();
    assert_eq!(after.cycle, before.cycle + 1, "one poll loop is one cycle");
    assert_eq!(
        after.counters.evaluated - before.counters.evaluated,
        SYMBOLS as u64
    );
    assert!(!after.scanning);
    eprintln!(
        "cycle: {SYMBOLS} symbols; results: {first} in the first cycle, {second} in the next"
    );

    let mut g = c.benchmark_group("cycle");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(8));
    g.warm_up_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(SYMBOLS as u64));

    let (mut cycles, mut results) = (0u64, 0usize);
    // The scanner's own figure for each cycle: its evaluation work, without the feed.
    let mut scan_ms = Vec::new();
    g.bench_function("100k_symbols", |b| {
        b.iter(|| {
            // A second on: every symbol has a new bar and has rested min_scan_interval.
            now += Duration::from_secs(1);
            results += run_cycle(&mut scanner, now, &mut out);
            cycles += 1;
            scan_ms.push(scanner.progress().last_cycle_ms);
        })
    });
    let end = scanner.progress();
    assert_eq!(
        end.cycle - after.cycle,
        cycles,
        "every iteration ran exactly one cycle"
    );
    assert_eq!(
        end.counters.evaluated - after.counters.evaluated,
        cycles * SYMBOLS as u64,
        "every cycle evaluated every symbol"
    );
    if cycles > 0 {
        scan_ms.sort_by(f64::total_cmp);
        eprintln!(
            "cycle: {cycles} cycles run, {:.0} results per cycle; scanner's last_cycle_ms (evaluation only): \
             median {:.2} ms, min {:.2} ms",
            results as f64 / cycles as f64,
            scan_ms[scan_ms.len() / 2],
            scan_ms[0]
        );
    }
    drop(scanner);

    // The same feed into a bare universe: the ingest share of a cycle.
    let mut feed = BenchFeed::new(SYMBOLS, WARMUP);
    let mut universe = Universe::new(
        IndicatorParams {
            reference: Reference::SessionOpen,
            ..IndicatorParams::default()
        },
        SYMBOLS,
    );
    feed.begin(&mut universe);
    g.bench_function("100k_ingest_only", |b| {
        b.iter(|| {
            feed.poll(t0, &mut universe);
            universe.updates
        })
    });
    g.finish();
}

/// JSONL lines: ~500 symbols on their walks, one tick each, every tenth without `ts`
/// (or none with it).
fn jsonl_lines(with_ts: bool) -> Vec<String> {
    let p = path(PATH, 11);
    let bases = bases(JSONL_SYMBOLS, 12);
    let names: Vec<String> = (0..JSONL_SYMBOLS).map(|i| ticker(i * 31 + 7)).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(13);
    let mut t = vec![0usize; JSONL_SYMBOLS];
    (0..LINES)
        .map(|i| {
            let s = rng.random_range(0..JSONL_SYMBOLS);
            let (price, volume, offset) = bases[s];
            let step = p[(t[s] + offset) % PATH];
            t[s] += 1;
            let price = cents(price * step.price);
            let volume = ((volume * step.volume) as u64 / 100).max(1) * 100;
            let ms = 9 * 3_600_000 + 30 * 60_000 + i * 7;
            let (h, m, sec, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
            let name = &names[s];
            if with_ts && i % 10 != 0 {
                format!(
                    r#"{{"symbol":"{name}","price":{price},"volume":{volume},"ts":"2026-11-28T{h:02}:{m:02}:{sec:02}.{frac:03}Z"}}"#
                )
            } else {
                format!(r#"{{"symbol":"{name}","price":{price},"volume":{volume}}}"#)
            }
        })
        .collect()
}

/// Parses every line and applies it; returns the updates taken.
fn ingest(lines: &[String], universe: &mut Universe) -> u64 {
    for line in lines {
        let t = parse_line(line).expect("a good line");
        universe.update_named(&t.symbol, &Bar::tick(t.price, t.volume, t.ts));
    }
    universe.updates
}

/// JSONL ingest: parse a line and apply it to the universe.
fn bench_jsonl(c: &mut Criterion) {
    let mut g = c.benchmark_group("jsonl");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(6));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(LINES as u64));

    for (name, with_ts) in [("ingest", true), ("ingest_no_ts", false)] {
        let lines = jsonl_lines(with_ts);
        let mut universe = Universe::new(
            IndicatorParams {
                reference: Reference::SessionOpen,
                ..IndicatorParams::default()
            },
            100_000,
        );
        // One pass first: every symbol interned, indicators warm, every line good.
        assert_eq!(ingest(&lines, &mut universe), LINES as u64);
        assert_eq!(universe.len(), JSONL_SYMBOLS);
        assert_eq!(universe.refused, 0);
        if with_ts {
            let stamped = lines
                .iter()
                .filter(|l| parse_line(l).unwrap().ts.is_some())
                .count();
            let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
            eprintln!(
                "jsonl: {LINES} lines, {stamped} with ts, {:.1} bytes per line; e.g. {}",
                bytes as f64 / LINES as f64,
                lines[1]
            );
        }
        g.bench_function(name, |b| {
            b.iter(|| ingest(black_box(&lines), &mut universe))
        });
    }

    // Parsing alone, for the split between parse and apply.
    let lines = jsonl_lines(true);
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for line in &lines {
                sum += parse_line(black_box(line)).expect("a good line").price;
            }
            sum
        })
    });
    g.finish();
}

/// Twenty scans a trader might write, over a spread of indicators, for the 28-scan runs.
const CUSTOM: [(&str, &[&str]); 20] = [
    (
        "b_oversold_bounce",
        &[
            "rsi(14) < 35",
            "close > bb_lower(20, 2)",
            "volume_ratio(20) >= 1.5",
        ],
    ),
    (
        "b_macd_up",
        &["crosses_above(macd(12, 26, 9), macd_signal(12, 26, 9))"],
    ),
    ("b_gap_up", &["gap_pct >= 2"]),
    ("b_above_vwap", &["close > vwap", "volume_ratio(20) > 2"]),
    ("b_band_break_up", &["bb_pct(20, 2) > 1"]),
    ("b_band_break_down", &["bb_pct(20, 2) < 0"]),
    ("b_ema_cross_up", &["crosses_above(ema(9), ema(21))"]),
    ("b_ema_cross_down", &["crosses_below(ema(9), ema(21))"]),
    ("b_wide_range", &["atr(14) / close * 100 > 3"]),
    ("b_breakout_55", &["close > highest(55)"]),
    ("b_breakdown_55", &["close < lowest(55)"]),
    ("b_rsi7_high", &["rsi(7) > 80"]),
    ("b_rsi7_low", &["rsi(7) < 20"]),
    (
        "b_volume_move",
        &["change_pct > 1.5", "volume > avg_volume(50) * 2"],
    ),
    ("b_sma200_up", &["crosses_above(close, sma(200))"]),
    ("b_sma200_down", &["crosses_below(close, sma(200))"]),
    ("b_momentum", &["macd_hist(12, 26, 9) > 0", "rsi(14) > 50"]),
    (
        "b_stretched",
        &["abs(change_pct) > 2", "bb_pct(20, 2.5) > 0.9"],
    ),
    (
        "b_trend_pullback",
        &["ema(50) > sma(200)", "crosses_above(close, ema(50), 3)"],
    ),
    ("b_big_bar", &["(high - low) / close * 100 > 4"]),
];

/// The built-in eight and, with `custom`, the twenty above (28 in all).
fn settings(custom: bool) -> ScanSettings {
    let defs: Vec<Definition> = if custom {
        CUSTOM
            .iter()
            .map(|(name, when)| Definition {
                scan: Scan::register(name).expect("a valid name"),
                when: when.iter().map(|w| (*w).to_owned()).collect(),
                score: "1".to_owned(),
            })
            .collect()
    } else {
        Vec::new()
    };
    ScanSettings {
        custom: defs.into(),
        ..ScanSettings::default()
    }
}

/// One symbol's scan set, fed a path bar by bar as the scanner runs it.
struct Lane {
    set: ScanSet,
    sym: SymbolScans,
    scores: Vec<Option<f64>>,
    conds: SymbolConds,
    scans: Vec<Scan>,
    i: usize,
}

impl Lane {
    /// The built-in scans, and the twenty custom ones with `custom`; warmed up over the
    /// path once.
    fn new(custom: bool, bars: &[Bar]) -> Lane {
        let settings = settings(custom);
        let set = settings.scan_set().expect("the scans compile");
        let params = IndicatorParams {
            reference: Reference::SessionOpen,
            ..settings.indicators
        };
        let mut lane = Lane {
            sym: set.symbol(&params),
            scores: vec![None; set.len()],
            conds: SymbolConds::new(set.len()),
            scans: set.scans().collect(),
            set,
            i: 0,
        };
        let mut fired = 0usize;
        for bar in bars {
            lane.set.update(&mut lane.sym, bar);
            lane.set.evaluate(&lane.sym, &mut lane.scores);
            fired += lane.scores.iter().filter(|s| s.is_some()).count();
        }
        eprintln!(
            "scanset: {} scans, {} indicators kept per symbol, {:.3} fire per bar",
            lane.set.len(),
            lane.set.indicators().len(),
            fired as f64 / bars.len() as f64
        );
        lane
    }

    /// The next bar: studies, crosses, every scan evaluated and deduplicated.
    fn step(&mut self, bars: &[Bar], dedup: &Dedup) -> u32 {
        let bar = &bars[self.i];
        self.i = (self.i + 1) % bars.len();
        self.set.update(&mut self.sym, black_box(bar));
        let fired = self.set.evaluate(&self.sym, &mut self.scores);
        let mut events = 0u32;
        let scans = &self.scans;
        self.conds.step(
            dedup,
            fired,
            &self.scores,
            |k| scans[k],
            bar.close,
            |_, _| {
                events += 1;
            },
        );
        events
    }
}

/// Prints the median and quartiles of paired ratios.
fn report_ratio(what: &str, ratios: &mut [f64]) {
    if ratios.is_empty() {
        return;
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{what}: median {:.2}x (quartiles {:.2} to {:.2}, {} pairs)",
        at(0.5),
        at(0.25),
        at(0.75),
        ratios.len()
    );
}

/// One symbol update through the scan set, as the scanner runs it: the result fields'
/// indicators, the scans' studies and crosses, every scan evaluated and deduplicated;
/// with the 8 built-in scans, and with 28.
fn bench_scanset(c: &mut Criterion) {
    let p = path(PATH, 7);
    let bars: Vec<Bar> = p
        .iter()
        .map(|s| {
            let close = cents(120.0 * s.price);
            Bar {
                open: close,
                high: close * 1.004,
                low: close * 0.996,
                close,
                volume: (10_000.0 * s.volume) as u64,
                ts: None,
            }
        })
        .collect();
    let dedup = Dedup::new(Materiality::default());
    let mut lanes = [Lane::new(false, &bars), Lane::new(true, &bars)];
    let mut g = c.benchmark_group("scanset");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    for (name, lane) in ["update_and_scan_8", "update_and_scan_28"]
        .into_iter()
        .zip(lanes.iter_mut())
    {
        g.bench_function(name, |b| b.iter(|| lane.step(&bars, &dedup)));
    }
    // The two one after the other in every sample, so a slow spell of a shared machine
    // weighs on both: the ratio is read from the pairs. Criterion times the 28 scans.
    let mut ratios = Vec::new();
    g.bench_function("update_and_scan_28_paired_with_8", |b| {
        b.iter_custom(|iters| {
            let [eight, twenty_eight] = &mut lanes;
            let t = Instant::now();
            for _ in 0..iters {
                black_box(eight.step(&bars, &dedup));
            }
            let base = t.elapsed();
            let t = Instant::now();
            for _ in 0..iters {
                black_box(twenty_eight.step(&bars, &dedup));
            }
            let more = t.elapsed();
            ratios.push(more.as_secs_f64() / base.as_secs_f64());
            more
        })
    });
    report_ratio("scanset: per update, 28 scans over 8", &mut ratios);
    g.finish();

    // A full cycle over 100,000 symbols with 28 scans.
    let t0 = Instant::now();
    let mut scanner = MarketScanner::new(BenchFeed::new(SYMBOLS, WARMUP), settings(true), t0);
    let mut out = Vec::new();
    let mut now = t0;
    run_cycle(&mut scanner, now, &mut out);
    let mut g = c.benchmark_group("cycle");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.warm_up_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(SYMBOLS as u64));
    let before = scanner.progress();
    let mut cycles = 0u64;
    g.bench_function("100k_symbols_28_scans", |b| {
        b.iter(|| {
            now += Duration::from_secs(1);
            cycles += 1;
            run_cycle(&mut scanner, now, &mut out)
        })
    });
    let after = scanner.progress();
    assert_eq!(
        after.counters.evaluated - before.counters.evaluated,
        cycles * SYMBOLS as u64,
        "every cycle evaluated every symbol"
    );

    // The two scanners cycle one after the other in every sample (as the per-update
    // pairs do); Criterion times the 28 scans.
    let mut eight = MarketScanner::new(BenchFeed::new(SYMBOLS, WARMUP), settings(false), t0);
    run_cycle(&mut eight, now, &mut out);
    let mut ratios = Vec::new();
    // The scanners' own figures: evaluation alone, without the feed's bars.
    let mut evaluation = (Vec::new(), Vec::new());
    g.bench_function("100k_symbols_28_scans_paired_with_8", |b| {
        b.iter_custom(|iters| {
            let (mut base, mut more) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..iters {
                now += Duration::from_secs(1);
                let t = Instant::now();
                black_box(run_cycle(&mut eight, now, &mut out));
                base += t.elapsed();
                evaluation.0.push(eight.progress().last_cycle_ms);
                let t = Instant::now();
                black_box(run_cycle(&mut scanner, now, &mut out));
                more += t.elapsed();
                evaluation.1.push(scanner.progress().last_cycle_ms);
            }
            ratios.push(more.as_secs_f64() / base.as_secs_f64());
            more
        })
    });
    report_ratio("cycle: 100k symbols, 28 scans over 8", &mut ratios);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    eprintln!(
        "cycle: evaluation alone (last_cycle_ms), median: 8 scans {:.1} ms, 28 scans {:.1} ms",
        median(&mut evaluation.0),
        median(&mut evaluation.1)
    );
    g.finish();
}

criterion_group!(
    benches,
    bench_indicators,
    bench_cycle,
    bench_scanset,
    bench_jsonl
);
criterion_main!(benches);
