//! The market scanner against scripted feeds: pacing, slices, dedup, ad-hoc scans,
//! restored conditions and bad input.

use super::*;
use crate::event::Scan;
use std::collections::VecDeque;

/// A feed the test scripts: bars handed over when their time comes.
struct Script {
    bars: VecDeque<(Instant, &'static str, f64)>,
}

impl Feed for Script {
    fn reference(&self) -> Reference {
        Reference::SessionOpen
    }
    fn poll(&mut self, now: Instant, universe: &mut Universe) {
        while self.bars.front().is_some_and(|b| b.0 <= now) {
            let (_, name, price) = self.bars.pop_front().unwrap();
            universe.update_named(name, &Bar::tick(price, 100, None));
        }
    }
}

fn scanner(
    bars: Vec<(Instant, &'static str, f64)>,
    settings: ScanSettings,
    t0: Instant,
) -> MarketScanner<Script> {
    MarketScanner::new(Script { bars: bars.into() }, settings, t0)
}

/// Polls at `now` until the scanner asks for a later time.
fn run(s: &mut MarketScanner<Script>, now: Instant) -> Vec<ScanResult> {
    let mut out = Vec::new();
    while s.poll(now, 1024, &mut out) <= now {}
    out
}

#[test]
fn a_symbol_is_evaluated_only_with_new_data_and_at_most_once_per_min_interval() {
    let t0 = Instant::now();
    let s = |n: u64| t0 + Duration::from_secs(n);
    // A bar every second for A; B gets one bar only.
    let mut bars: Vec<_> = (0..10).map(|n| (s(n), "A", 100.0 + n as f64)).collect();
    bars.push((s(0), "B", 50.0));
    bars.sort_by_key(|b| b.0);
    let settings = ScanSettings {
        min_scan_interval: Duration::from_secs(3),
        ..ScanSettings::default()
    };
    let mut sc = scanner(bars, settings, t0);
    let mut evaluated = Vec::new();
    for n in 0..10 {
        let before = sc.progress().counters.evaluated;
        run(&mut sc, s(n));
        evaluated.push(sc.progress().counters.evaluated - before);
    }
    // Cycles at 0..9 s. A is evaluated at 0, 3, 6, 9 (every third cycle though it has
    // data every second); B once, at 0, and never again without new data.
    assert_eq!(evaluated, [2, 0, 0, 1, 0, 0, 1, 0, 0, 1]);
    assert_eq!(sc.progress().cycle, 10);
    // Between cycles the scanner sleeps until the next one.
    let mut out = Vec::new();
    assert_eq!(
        sc.poll(s(9) + Duration::from_millis(1), 1024, &mut out),
        s(10)
    );
}

#[test]
fn late_wake_ups_do_not_skip_evaluations() {
    let t0 = Instant::now();
    let s = |n: u64| t0 + Duration::from_secs(n);
    let bars = (0..10).map(|n| (s(n), "A", 100.0 + n as f64)).collect();
    let mut sc = scanner(bars, ScanSettings::default(), t0);
    // The thread wakes 0 to 300 ms late, differently each time.
    let late = [300, 0, 120, 5, 290, 10, 0, 250, 30, 200];
    let mut evaluated = Vec::new();
    for (n, ms) in late.into_iter().enumerate() {
        let before = sc.progress().counters.evaluated;
        run(&mut sc, s(n as u64) + Duration::from_millis(ms));
        evaluated.push(sc.progress().counters.evaluated - before);
    }
    assert_eq!(
        evaluated, [1; 10],
        "new data every second, a cycle every second"
    );
}

#[test]
fn a_late_poll_skips_missed_cycles_instead_of_bursting() {
    let t0 = Instant::now();
    let mut sc = scanner(Vec::new(), ScanSettings::default(), t0);
    run(&mut sc, t0);
    run(&mut sc, t0 + Duration::from_millis(5_500));
    assert_eq!(sc.progress().cycle, 2);
    let mut out = Vec::new();
    assert_eq!(
        sc.poll(t0 + Duration::from_millis(5_600), 1024, &mut out),
        t0 + Duration::from_millis(6_500)
    );
}

#[test]
fn a_long_cycle_goes_in_slices_and_reports_progress() {
    let t0 = Instant::now();
    let names: Vec<&'static str> = (0..CHUNK * 2 + 10)
        .map(|i| &*Box::leak(format!("S{i}").into_boxed_str()))
        .collect();
    let bars = names.iter().map(|n| (t0, *n, 10.0)).collect();
    let mut sc = scanner(bars, ScanSettings::default(), t0);
    let mut out = Vec::new();
    assert_eq!(sc.poll(t0, usize::MAX, &mut out), t0, "more to do");
    let p = sc.progress();
    assert!(p.scanning);
    assert_eq!((p.scanned, p.total), (CHUNK as u64, names.len() as u64));
    sc.poll(t0, usize::MAX, &mut out);
    assert!(
        sc.poll(t0, usize::MAX, &mut out) > t0,
        "done after the third slice"
    );
    let p = sc.progress();
    assert!(!p.scanning);
    assert_eq!(
        (p.cycle, p.scanned, p.counters.evaluated),
        (1, names.len() as u64, names.len() as u64)
    );
}

#[test]
fn conditions_go_new_update_clear_and_new_again() {
    let t0 = Instant::now();
    let s = |n: u64| t0 + Duration::from_secs(n);
    let prices = [100.0, 104.0, 104.2, 104.1, 107.0, 101.0, 101.0, 95.0];
    let bars = prices
        .iter()
        .enumerate()
        .map(|(n, p)| (s(n as u64), "X", *p))
        .collect();
    let mut sc = scanner(bars, ScanSettings::default(), t0);
    let mut seen = Vec::new();
    for n in 0..prices.len() as u64 + 2 {
        for r in run(&mut sc, s(n)) {
            if r.scan == Scan::PriceChange {
                seen.push((n, r.event));
            }
        }
    }
    use EventKind::*;
    // 4% up: new. Persisting with small moves: nothing. 7%: score 2.33 is a new band,
    // update. Back to 1%: clear. Unchanged data at 6: not evaluated. 5% down: new.
    assert_eq!(seen, [(1, New), (4, Update), (5, Clear), (7, New)]);
}

#[test]
fn an_adhoc_scan_ignores_pacing_and_dedup() {
    let t0 = Instant::now();
    let mut sc = scanner(
        vec![(t0, "X", 100.0), (t0, "X", 110.0)],
        ScanSettings::default(),
        t0,
    );
    let published = run(&mut sc, t0);
    assert_eq!(published.len(), 1, "price_change new");
    let mut out = Vec::new();
    for _ in 0..2 {
        sc.scan(&["x".to_owned(), "unknown".to_owned()], &mut out);
    }
    assert_eq!(out.len(), 2, "answered each time, not deduplicated");
    assert!(
        out.iter()
            .all(|r| r.adhoc && r.event == EventKind::New && r.scan == Scan::PriceChange)
    );
    // And the paced stream's dedup state is untouched.
    assert!(run(&mut sc, t0 + Duration::from_secs(1)).is_empty());
}

#[test]
fn bad_names_and_prices_are_refused_and_the_universe_is_bounded() {
    let mut u = Universe::new(IndicatorParams::default(), 2);
    let bar = Bar::tick(1.0, 1, None);
    assert!(u.update_named("a", &bar));
    assert!(u.update_named("A", &bar), "names are case-insensitive");
    assert!(!u.update_named("", &bar));
    assert!(!u.update_named("A B", &bar));
    assert!(!u.update_named(&"X".repeat(200), &bar));
    assert!(!u.update_named("A", &Bar::tick(f64::NAN, 1, None)));
    assert!(!u.update_named("A", &Bar::tick(-1.0, 1, None)));
    assert!(u.update_named("B", &bar));
    assert!(!u.update_named("C", &bar), "full");
    assert_eq!((u.len(), u.updates, u.refused), (2, 3, 6));
}

#[test]
fn restored_conditions_clear_when_they_end_and_stay_quiet_while_they_hold() {
    let t0 = Instant::now();
    let s = |n: u64| t0 + Duration::from_secs(n);
    // X goes flat (its restored condition ends); Y moves 4 % (its restored one holds).
    let bars = vec![
        (s(0), "X", 100.0),
        (s(0), "Y", 100.0),
        (s(1), "X", 100.5),
        (s(1), "Y", 104.0),
    ];
    let mut sc = scanner(bars, ScanSettings::default(), t0);
    assert!(run(&mut sc, s(0)).is_empty(), "no move yet");
    let open = |symbol: &str, score: f64, price: f64| {
        let r = ScanResult {
            symbol: symbol.into(),
            scan: Scan::PriceChange,
            score,
            price,
            ..crate::event::tests::sample()
        };
        ScanEvent::publish(&r, 1, std::time::SystemTime::now())
    };
    // As an earlier run left them: Y's with the score and price it is about to have.
    let (x, y) = (open("X", 2.0, 106.0), open("Y", 4.0 / 3.0, 104.0));
    sc.restore(&[&x, &y]);
    let events: Vec<(String, EventKind)> = run(&mut sc, s(1))
        .into_iter()
        .filter(|r| r.scan == Scan::PriceChange)
        .map(|r| (r.symbol.to_string(), r.event))
        .collect();
    assert_eq!(events, [("X".to_owned(), EventKind::Clear)]);
}
