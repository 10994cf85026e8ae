//! Stream micro-benchmarks: encoding a result frame with its per-connection tail,
//! fanning one result out to 1,000 in-memory connections, the history ring (append and
//! replay), filter matching, and dedup. Run with `cargo bench --bench stream`; figures
//! are in perf/RESULTS.md.
//!
//! "In-memory connections" are out buffers that a simulated write empties: the numbers
//! are the reactor's own work per delivery, without the kernel's.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use scanstream::bench_api::{Delivery, Subscription, Tail, delivery, write_result};
use scanstream::event::FilterValues;
use scanstream::history::History;
use scanstream::protocol::{Filter, json_string};
use scanstream::scanner::{Dedup, Materiality};
use scanstream::{EventKind, Scan, ScanEvent, ScanResult};
use serde_json::{Value, json};

/// Connections in the fan-out benchmark.
const CONNECTIONS: usize = 1000;

fn result(i: u64) -> ScanResult {
    let scans = [
        Scan::PriceChange,
        Scan::VolumeSpike,
        Scan::NewHigh,
        Scan::RsiOverbought,
    ];
    ScanResult {
        values: Vec::new(),
        rule_frame: None,
        symbol: format!("S{:03}", i % 500).into(),
        scan: scans[(i % 4) as usize],
        event: [EventKind::New, EventKind::Update, EventKind::Clear][(i % 3) as usize],
        score: 1.0 + (i % 40) as f64 / 10.0,
        price: 10.0 + (i % 300) as f64,
        change_pct: ((i % 200) as f64 - 100.0) / 10.0,
        volume: 1000 + i % 100_000,
        volume_ratio: 1.0 + (i % 50) as f64 / 10.0,
        rsi: Some((i % 100) as f64),
        source_ts: Some(SystemTime::now()),
        adhoc: false,
    }
}

/// Updates carry the values of the state before them, as the scanner publishes them, so
/// fan-out and replay also work out which subscriptions an update leaves.
fn event(i: u64) -> Arc<ScanEvent> {
    let ev = ScanEvent::publish(&result(i), i, SystemTime::now());
    let prior = (ev.kind == EventKind::Update).then(|| {
        let r = result(i + 7);
        FilterValues {
            score: r.score,
            price: r.price,
            change_pct: r.change_pct,
            volume_ratio: r.volume_ratio,
        }
    });
    Arc::new(ev.with_prior(prior))
}

fn sub(name: &str, filters: Value) -> Subscription {
    Subscription {
        name: name.into(),
        name_json: json_string(name),
        filter: Filter::from_json(Some(filters), 1024).expect("valid filters"),
        start: 0,
    }
}

/// A mix a real deployment might hold: most take everything, some narrow by scan, score
/// or symbols, and some hold two subscriptions.
fn connection_subs(i: usize) -> Vec<Subscription> {
    match i % 5 {
        0 | 1 => vec![sub("default", json!({}))],
        2 => vec![sub(
            "movers",
            json!({"scans": ["price_change", "new_high"]}),
        )],
        3 => vec![sub("strong", json!({"min_score": 2.5}))],
        _ => vec![
            sub(
                "watch",
                json!({"symbols": ["S001", "S002", "S003", "S004"]}),
            ),
            sub("all", json!({})),
        ],
    }
}

fn bench_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    let ev = event(7);
    let subs = vec![sub("default", json!({}))];
    let two = vec![sub("watch", json!({})), sub("all", json!({}))];
    let mut tail = Tail::default();
    let mut out = Vec::with_capacity(1 << 16);
    g.bench_function("encode_spliced", |b| {
        b.iter(|| {
            if out.len() > 60_000 {
                out.clear();
            }
            write_result(&mut out, black_box(&ev), &subs, takes(1), &mut tail);
        })
    });
    // The tail alternates between two subscription sets: rebuilt on every frame.
    let mut tail = Tail::default();
    let mut mask = 1;
    g.bench_function("encode_tail_rebuilt", |b| {
        b.iter(|| {
            if out.len() > 60_000 {
                out.clear();
            }
            mask = if mask == 1 { 3 } else { 1 };
            write_result(&mut out, black_box(&ev), &two, takes(mask), &mut tail);
        })
    });
    // What a design that serialises per connection would pay instead.
    let r = result(7);
    g.bench_function("serialize_per_connection", |b| {
        b.iter(|| {
            let msg = json!({
                "type": "result",
                "timestamp": "2026-11-28T09:30:00.123456789Z",
                "data": {
                    "seq": 7, "event": "new", "symbol": &*r.symbol, "scan": r.scan.name(),
                    "score": r.score, "price": r.price, "change_pct": r.change_pct,
                    "volume": r.volume, "volume_ratio": r.volume_ratio, "rsi": r.rsi,
                    "adhoc": false, "subscriptions": ["default"],
                }
            });
            black_box(serde_json::to_vec(&msg).unwrap_or_default())
        })
    });
    g.finish();
}

/// A delivery to the subscriptions in `mask`, leaving none.
fn takes(mask: u64) -> Delivery {
    Delivery {
        takes: mask,
        left: 0,
    }
}

fn bench_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let conns: Vec<Vec<Subscription>> = (0..CONNECTIONS).map(connection_subs).collect();
    let mut tails: Vec<Tail> = (0..CONNECTIONS).map(|_| Tail::default()).collect();
    let mut outs: Vec<Vec<u8>> = (0..CONNECTIONS)
        .map(|_| Vec::with_capacity(1 << 14))
        .collect();
    let events: Vec<Arc<ScanEvent>> = (1..=256).map(event).collect();
    // How many deliveries one pass makes, for the per-delivery figure.
    let deliveries: usize = events
        .iter()
        .map(|ev| conns.iter().filter(|s| !delivery(s, ev).is_empty()).count())
        .sum::<usize>()
        / events.len();
    eprintln!("fanout: {CONNECTIONS} connections, {deliveries} deliveries per result on average");
    g.throughput(Throughput::Elements(deliveries as u64));
    let mut i = 0;
    g.bench_function("one_result_to_1000", |b| {
        b.iter(|| {
            let ev = &events[i % events.len()];
            i += 1;
            for ((subs, tail), out) in conns.iter().zip(&mut tails).zip(&mut outs) {
                let d = delivery(subs, ev);
                if !d.is_empty() {
                    write_result(out, ev, subs, d, tail);
                }
                // The simulated write: a socket that takes everything every 32 results.
                if out.len() > 32 * 330 {
                    black_box(out.as_slice());
                    out.clear();
                }
            }
        })
    });
    g.finish();
}

fn bench_history(c: &mut Criterion) {
    let mut g = c.benchmark_group("history");
    let events: Vec<Arc<ScanEvent>> = (1..=4096).map(event).collect();
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("append", |b| {
        b.iter_batched_ref(
            || History::new(100_000, "bench".into()),
            |h| {
                for ev in &events {
                    h.push(Arc::clone(ev));
                }
            },
            BatchSize::LargeInput,
        )
    });
    let mut full = History::new(100_000, "bench".into());
    for i in 1..=100_000 {
        full.push(event(i));
    }
    let filter = Filter::from_json(Some(json!({"scans": ["price_change"]})), 16).expect("filter");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("replay_10k_filtered", |b| {
        b.iter(|| {
            let head = full.head();
            let mut out = 0usize;
            for ev in full.range(head - 9_999, head) {
                if filter.matches(ev) {
                    out += ev.message_head().len();
                }
            }
            black_box(out)
        })
    });
    g.finish();
}

fn bench_filter(c: &mut Criterion) {
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(1));
    let events: Vec<Arc<ScanEvent>> = (1..=1024).map(event).collect();
    let cases = [
        ("everything", json!({})),
        ("scans", json!({"scans": ["price_change", "new_high"]})),
        (
            "all_fields",
            json!({"symbols": ["S001", "S100", "S250"], "scans": ["price_change"],
            "min_score": 1.5, "min_price": 20, "max_price": 200, "min_abs_change_pct": 1,
            "min_volume_ratio": 1.2}),
        ),
    ];
    for (name, spec) in cases {
        let filter = Filter::from_json(Some(spec), 1024).expect("filter");
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                filter.matches(&events[i & 1023])
            })
        });
    }
    g.finish();
}

fn bench_dedup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(1));
    let dedup = Dedup::new(Materiality::default());
    let mut slot = 0u64;
    let mut i = 0u64;
    g.bench_function("step", |b| {
        b.iter(|| {
            i += 1;
            // On for 12 steps, off for 4; score and price wander.
            let score = (i % 16 < 12).then_some(1.0 + (i % 7) as f64 * 0.3);
            let price = 100.0 + (i % 13) as f64 * 0.4;
            dedup.step(&mut slot, Scan::PriceChange, black_box(score), price)
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_frame, bench_fanout, bench_history, bench_filter, bench_dedup
}
criterion_main!(benches);
