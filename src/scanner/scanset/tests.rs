use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::*;
use crate::scanner::indicators::{Indicators, Reference};
use crate::scanner::scans::{MARKET_SCANS, evaluate};

/// A random walk with trends, jumps, quiet stretches and volume bursts. Quiet, not flat:
/// over exactly equal closes the fixed SMAs differ by a rounding error where the
/// definitions' are equal, and a cross of 1e-13 % is no opportunity either way.
fn bars(seed: u64, n: usize) -> Vec<Bar> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut price: f64 = 50.0;
    let mut drift = 0.0;
    (0..n)
        .map(|i| {
            if i % 200 == 0 {
                drift = rng.random_range(-0.004..0.004);
            }
            let quiet = (i / 150) % 7 == 3;
            let step = if quiet {
                rng.random_range(-1e-5..1e-5)
            } else if rng.random_bool(0.02) {
                rng.random_range(-0.12..0.12)
            } else {
                drift + rng.random_range(-0.02..0.02)
            };
            let open = price;
            price = (price * (1.0 + step)).max(0.5);
            let high = open.max(price) * (1.0 + rng.random_range(0.0..0.01));
            let low = open.min(price) * (1.0 - rng.random_range(0.0..0.01));
            let volume = if rng.random_bool(0.03) {
                rng.random_range(50_000..200_000)
            } else {
                rng.random_range(1_000..20_000)
            };
            Bar {
                open,
                high,
                low,
                close: price,
                volume,
                ts: None,
            }
        })
        .collect()
}

#[test]
fn the_builtin_definitions_fire_exactly_where_the_fixed_scans_do() {
    for (seed, params, reference) in [
        (1, IndicatorParams::default(), Reference::SessionOpen),
        (
            2,
            IndicatorParams {
                rsi: 3,
                sma_fast: 2,
                sma_slow: 4,
                range: 3,
                volume: 3,
                reference: Reference::PrevClose,
            },
            Reference::PrevClose,
        ),
        (
            3,
            IndicatorParams {
                rsi: 9,
                sma_fast: 5,
                sma_slow: 30,
                range: 55,
                volume: 10,
                reference: Reference::PrevClose,
            },
            Reference::PrevClose,
        ),
    ] {
        let t = Thresholds {
            price_change_pct: 1.5,
            volume_ratio: 2.5,
            rsi_overbought: 65.0,
            rsi_oversold: 35.0,
            cross_bars: 4,
        };
        let params = IndicatorParams {
            reference,
            ..params
        };
        let set = ScanSet::compile(&builtin(&t, &params)).unwrap();
        assert_eq!(set.scans().collect::<Vec<_>>(), MARKET_SCANS);
        let mut old = Indicators::new(params);
        let mut new = set.symbol(&params);
        let mut scores = [None; 8];
        let mut fired = [0usize; 8];
        for (i, bar) in bars(seed, 5000).iter().enumerate() {
            old.update(bar);
            set.update(&mut new, bar);
            set.evaluate(&new, &mut scores);
            // The fields every result carries read as they always did.
            let fields = new.fields();
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
            assert!(
                close(fields.change_pct, old.change_pct),
                "bar {i} change_pct"
            );
            assert!(
                close(fields.volume_ratio, old.volume_ratio),
                "bar {i} volume_ratio"
            );
            match (fields.rsi, old.rsi) {
                (Some(a), Some(b)) => assert!(close(a, b), "bar {i} rsi: {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "bar {i} rsi"),
            }
            assert_eq!(new.last(), old.last.as_ref());
            let want = evaluate(&old, &t);
            for (k, (a, b)) in want.iter().zip(&scores).enumerate() {
                match (a, b) {
                    (Some(a), Some(b)) => {
                        fired[k] += 1;
                        let tol = 1e-9 * a.abs().max(1.0);
                        assert!(
                            (a - b).abs() <= tol,
                            "bar {i} {}: {a} vs {b}",
                            MARKET_SCANS[k]
                        );
                    }
                    (None, None) => {}
                    _ => panic!("bar {i} {}: fixed {a:?}, defined {b:?}", MARKET_SCANS[k]),
                }
            }
        }
        // Every scan fired somewhere, or the comparison proves little.
        assert!(fired.iter().all(|&n| n > 0), "seed {seed}: {fired:?}");
    }
}

#[test]
fn a_definition_error_names_the_scan_the_field_and_the_column() {
    let scan = Scan::register("oversold_bounce").unwrap();
    let def = Definition {
        scan,
        when: vec!["rsi(14) < 35".into(), "close > bb_lowr(20, 2)".into()],
        score: "(35 - rsi(14)) / 5".into(),
    };
    let err = ScanSet::compile(&[def]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "scan oversold_bounce, when[1], col 9: unknown indicator bb_lowr (did you mean bb_lower?)"
    );
}

#[test]
fn a_set_holds_at_most_64_scans() {
    // Whether each fires is one bit of a u64; the registry allows 63 market scans, but
    // the set checks for itself. The same scan repeated is enough to count.
    let def = Definition {
        scan: Scan::PriceChange,
        when: vec!["close > 0".into()],
        score: "1".into(),
    };
    assert!(ScanSet::compile(&vec![def.clone(); 64]).is_ok());
    let err = ScanSet::compile(&vec![def; 65]).unwrap_err();
    assert!(err.to_string().contains("more than 64 scans"), "{err}");
}

#[test]
fn conditions_that_differ_only_by_the_sign_of_zero_stay_apart() {
    let def = |scan, when: &str| Definition {
        scan,
        when: vec![when.into()],
        score: "1".into(),
    };
    let set = ScanSet::compile(&[
        def(Scan::PriceChange, "close / 0 > 1"),
        def(Scan::VolumeSpike, "close / -0 > 1"),
    ])
    .unwrap();
    let params = IndicatorParams::default();
    let mut sym = set.symbol(&params);
    set.update(&mut sym, &bars(3, 1)[0]);
    let mut scores = [None; 2];
    // close / 0 is +inf, close / -0 is -inf.
    assert_eq!(set.evaluate(&sym, &mut scores), 0b01);
}

#[test]
fn values_list_what_a_scan_names_in_the_order_written() {
    let scan = Scan::register("values_order_test").unwrap();
    let mut defs = builtin(&Thresholds::default(), &IndicatorParams::default());
    defs.push(Definition {
        scan,
        when: vec!["rsi(14) < 101".into(), "close > bb_lower(20, 2)".into()],
        score: "(35 - rsi(14)) / 5 + volume_ratio(20)".into(),
    });
    let set = ScanSet::compile(&defs).unwrap();
    let params = IndicatorParams {
        reference: Reference::PrevClose,
        ..IndicatorParams::default()
    };
    let mut sym = set.symbol(&params);
    for bar in bars(9, 40) {
        set.update(&mut sym, &bar);
    }
    let names: Vec<String> = set.values(8, &sym).map(|(i, _)| i.to_string()).collect();
    assert_eq!(
        names,
        ["rsi(14)", "close", "bb_lower(20, 2)", "volume_ratio(20)"]
    );
    assert!(set.values(8, &sym).all(|(_, v)| v.is_finite()));
    // Shared with the built-in ones: rsi(14), close and volume_ratio(20) are kept once.
    let kept: Vec<String> = set.indicators().iter().map(|i| i.to_string()).collect();
    assert_eq!(kept.iter().filter(|k| *k == "rsi(14)").count(), 1);
}
