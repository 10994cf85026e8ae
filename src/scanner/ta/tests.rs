//! `Studies` against the oracle (plain recomputation from the definitions) over long
//! random series and over real daily bars, the first defined index of each indicator,
//! and TA-Lib's own values on the real bars.

use std::time::{Duration, SystemTime};

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{Studies, oracle};
use crate::expr::{Indicator, Needs, number};
use crate::scanner::indicators::{Bar, Reference};

/// The indicators written in `texts`, parsed as a scan names them.
fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<Indicator> {
    texts
        .into_iter()
        .map(|text| {
            let text = text.trim();
            let mut needs = Needs::default();
            number(text, &mut needs).unwrap();
            assert_eq!(needs.indicators.len(), 1, "{text}");
            needs.indicators[0]
        })
        .collect()
}

/// Sets of indicators computed together, `;`-separated.
const TYPICAL: &str = "sma(20); sma(50); ema(12); ema(26); rsi(14); macd(12, 26, 9);\
    macd_signal(12, 26, 9); macd_hist(12, 26, 9); bb_upper(20, 2); bb_lower(20, 2);\
    bb_pct(20, 2); atr(14); vwap; highest(20); lowest(20); avg_volume(20);\
    volume_ratio(20); change_pct; gap_pct; price; open; high; low; close; volume";
const SHORT: &str = "sma(2); sma(3); ema(2); rsi(2); macd(2, 3, 1); macd_signal(2, 3, 1);\
    macd_hist(2, 3, 1); bb_upper(2, 0.5); bb_lower(2, 0.5); bb_pct(2, 0.5);\
    bb_pct(3, 1); atr(1); highest(1); lowest(1); avg_volume(1); volume_ratio(1)";
const LONG: &str = "sma(500); ema(200); rsi(100); macd(50, 200, 30); macd_signal(50, 200, 30);\
    macd_hist(50, 200, 30); bb_upper(300, 2.5); bb_lower(300, 2.5); bb_pct(300, 2.5);\
    bb_pct(500, 1); atr(250); highest(700); lowest(700); avg_volume(300);\
    volume_ratio(300)";

/// A random walk with short flat runs, a long flat stretch (bars 1500..1900, longer than
/// any window), a stretch of zero volume (2500..2800, whole sessions of it) and
/// scattered zero volumes. Bars are 5 minutes apart, 100 to a UTC day; with `stamped`
/// 3% of them carry no time, without it none does (one session throughout).
fn random_bars(len: usize, seed: u64, stamped: bool) -> Vec<Bar> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_614_609_000); // 2021-03-01 14:30Z
    let mut price = 100.0;
    (0..len)
        .map(|t| {
            let flat = (1500..1900).contains(&t);
            if !flat && rng.random::<f64>() > 0.1 {
                price *= 1.0 + (rng.random::<f64>() - 0.5) * 0.04;
            }
            let (open, high, low) = if flat {
                (price, price, price)
            } else {
                let open = price * (1.0 + (rng.random::<f64>() - 0.5) * 0.01);
                let high = price.max(open) * (1.0 + rng.random::<f64>() * 0.01);
                let low = price.min(open) * (1.0 - rng.random::<f64>() * 0.01);
                (open, high, low)
            };
            let silent = (2500..2800).contains(&t) || rng.random::<f64>() < 0.05;
            let volume = if silent {
                0
            } else {
                rng.random_range(1..1_000_000)
            };
            let at = start + Duration::from_secs((t / 100 * 86_400 + t % 100 * 300) as u64);
            let ts = (stamped && rng.random::<f64>() >= 0.03).then_some(at);
            Bar {
                open,
                high,
                low,
                close: price,
                volume,
                ts,
            }
        })
        .collect()
}

/// Equal within 1e-9 of the expected value (of 1 below it), or both undefined.
#[track_caller]
fn assert_close(got: f64, want: f64, what: &str) {
    if want.is_nan() || got.is_nan() {
        assert!(
            want.is_nan() && got.is_nan(),
            "{what}: {got} against {want}"
        );
    } else {
        let tolerance = 1e-9 * want.abs().max(1.0);
        assert!(
            (got - want).abs() <= tolerance,
            "{what}: {got} against {want}"
        );
    }
}

/// Feeds `bars` to studies of `indicators` and checks every slot at every bar.
#[track_caller]
fn check(indicators: &[Indicator], bars: &[Bar], reference: Reference) {
    let want: Vec<Vec<f64>> = indicators
        .iter()
        .map(|ind| oracle::series(*ind, bars, reference))
        .collect();
    let mut studies = Studies::new(indicators, reference);
    assert!(studies.values().iter().all(|v| v.is_nan()));
    for (t, bar) in bars.iter().enumerate() {
        studies.update(bar);
        for (slot, ind) in indicators.iter().enumerate() {
            let what = format!("{ind} ({reference:?}) at {t}");
            assert_close(studies.values()[slot], want[slot][t], &what);
        }
    }
    assert_eq!(studies.bars(), bars.len() as u64);
}

#[test]
fn every_indicator_matches_the_oracle_over_random_series() {
    for (set, seed, stamped, reference) in [
        (TYPICAL, 1, true, Reference::PrevClose),
        (TYPICAL, 2, false, Reference::SessionOpen),
        (SHORT, 3, true, Reference::PrevClose),
        (SHORT, 4, false, Reference::SessionOpen),
        (LONG, 5, true, Reference::PrevClose),
        (LONG, 6, false, Reference::PrevClose),
    ] {
        check(
            &parse(set.split(';')),
            &random_bars(4_000, seed, stamped),
            reference,
        );
    }
}

#[test]
fn sharing_a_computation_changes_no_value() {
    // Everything at once (sma(20) shares its window with the bands, the MACD outputs
    // their line), against each indicator alone: bit for bit.
    let all = [TYPICAL, SHORT, LONG, "bb_upper(20, 1); sma(20)"].join(";");
    let all = parse(all.split(';'));
    let bars = random_bars(3_000, 9, true);
    let mut together = Studies::new(&all, Reference::PrevClose);
    let mut alone: Vec<Studies> = all
        .iter()
        .map(|ind| Studies::new(&[*ind], Reference::PrevClose))
        .collect();
    for (t, bar) in bars.iter().enumerate() {
        together.update(bar);
        for (slot, studies) in alone.iter_mut().enumerate() {
            studies.update(bar);
            let (a, b) = (together.values()[slot], studies.values()[0]);
            assert!(
                a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan(),
                "{} at {t}",
                all[slot]
            );
        }
    }
}

#[test]
fn each_is_undefined_before_its_first_index() {
    // The index INDICATORS.md gives; the series has neither flat windows nor silent bars.
    let table: &[(&str, usize)] = &[
        ("sma(5)", 4),
        ("ema(10)", 9),
        ("rsi(14)", 14),
        ("rsi(2)", 2),
        ("macd(12, 26, 9)", 33),
        ("macd_signal(12, 26, 9)", 33),
        ("macd_hist(12, 26, 9)", 33),
        ("macd_hist(3, 5, 1)", 4),
        ("bb_upper(20, 2)", 19),
        ("bb_lower(2, 1)", 1),
        ("bb_pct(20, 2)", 19),
        ("atr(14)", 14),
        ("atr(1)", 1),
        ("highest(20)", 20),
        ("lowest(3)", 3),
        ("avg_volume(20)", 20),
        ("volume_ratio(5)", 5),
        ("gap_pct", 1),
        ("vwap", 0),
        ("change_pct", 0),
        ("price", 0),
        ("volume", 0),
    ];
    let mut bars = random_bars(60, 12, true);
    for (t, bar) in bars.iter_mut().enumerate() {
        bar.volume = 1_000 + t as u64;
        bar.close += t as f64 * 1e-3;
        bar.high = bar.high.max(bar.close);
    }
    let texts: Vec<&str> = table.iter().map(|(text, _)| *text).collect();
    let mut studies = Studies::new(&parse(texts), Reference::PrevClose);
    for (t, bar) in bars.iter().enumerate() {
        studies.update(bar);
        for (slot, (text, first)) in table.iter().enumerate() {
            let value = studies.values()[slot];
            assert_eq!(value.is_nan(), t < *first, "{text} at {t}: {value}");
        }
    }
}

#[test]
fn flat_and_silent_bars_read_as_defined() {
    let set = [
        "rsi(3)",
        "bb_upper(4, 2)",
        "bb_lower(4, 2)",
        "bb_pct(4, 2)",
        "sma(4)",
        "volume_ratio(2)",
        "avg_volume(2)",
        "vwap",
        "change_pct",
        "atr(2)",
    ];
    let mut studies = Studies::new(&parse(set), Reference::PrevClose);
    for _ in 0..10 {
        studies.update(&Bar::tick(0.1, 0, None));
    }
    let v = studies.values();
    assert_eq!(&v[..3], [50.0, 0.1, 0.1], "neutral RSI, bands of no width");
    assert!(v[3].is_nan(), "no width, no position within it");
    assert_eq!(v[4], 0.1);
    assert!(v[5].is_nan(), "no volume over no volume is no spike");
    assert_eq!(v[6], 0.0);
    assert!(v[7].is_nan(), "no volume, no VWAP");
    assert_eq!(&v[8..], [0.0, 0.0]);
}

#[test]
fn running_values_do_not_drift_over_a_million_bars() {
    // No timestamps: one session, so the VWAP sums a million bars.
    let set = parse([
        "sma(20)",
        "bb_upper(50, 2)",
        "bb_pct(50, 2)",
        "avg_volume(20)",
        "vwap",
    ]);
    let bars = random_bars(1_000_000, 3, false);
    let mut studies = Studies::new(&set, Reference::PrevClose);
    for bar in &bars {
        studies.update(bar);
    }
    // The windows' last values, from the bars they cover.
    let tail = &bars[bars.len() - 100..];
    for (slot, ind) in set[..4].iter().enumerate() {
        let want = *oracle::series(*ind, tail, Reference::PrevClose)
            .last()
            .unwrap();
        assert_close(studies.values()[slot], want, &ind.to_string());
    }
    let pv: f64 = bars
        .iter()
        .map(|b| (b.high + b.low + b.close) / 3.0 * b.volume as f64)
        .sum();
    let v: f64 = bars.iter().map(|b| b.volume as f64).sum();
    assert_close(studies.values()[4], pv / v, "vwap");
}

/// `tests/data/ibm.csv`: IBM's daily bars, 2008-01-02 to 2013-03-01 (its README says
/// where they come from).
fn ibm() -> Vec<Bar> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ibm.csv");
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (date, open, high, low, close, volume) = (
        column("Date"),
        column("Open"),
        column("High"),
        column("Low"),
        column("Close"),
        column("Volume"),
    );
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            let price = |i: usize| record[i].parse::<f64>().unwrap();
            Bar {
                open: price(open),
                high: price(high),
                low: price(low),
                close: price(close),
                volume: record[volume].parse().unwrap(),
                ts: Some(crate::timefmt::parse_time(&record[date]).unwrap()),
            }
        })
        .collect()
}

#[test]
fn real_daily_bars_match_the_oracle() {
    let bars = ibm();
    assert_eq!(bars.len(), 1_300);
    for reference in [Reference::PrevClose, Reference::SessionOpen] {
        for set in [TYPICAL, SHORT, LONG] {
            check(&parse(set.split(';')), &bars, reference);
        }
    }
}

#[test]
fn real_daily_bars_agree_with_ta_lib() {
    // TA-Lib 0.8.1 (Python TA-Lib 0.8.2) over tests/data/ibm.csv: EMA(close, 12),
    // SMA(close, 20), RSI(close, 14), MACD(close, 12, 26, 9), BBANDS(close, 20, 2, 2, 0)
    // and ATR(high, low, close, 14), at their first index, at 700 and at the last bar.
    let table: &[(&str, usize, f64)] = &[
        ("ema(12)", 11, 100.97916666666667),
        ("ema(12)", 700, 136.9556484563167),
        ("ema(12)", 1299, 200.67263107396153),
        ("sma(20)", 19, 102.53150000000001),
        ("sma(20)", 700, 134.70200000000006),
        ("sma(20)", 1299, 200.8444999999998),
        ("rsi(14)", 14, 52.4693520140105),
        ("rsi(14)", 700, 75.54491894361414),
        ("rsi(14)", 1299, 57.18723617122834),
        ("macd(12, 26, 9)", 33, 1.547142605859321),
        ("macd(12, 26, 9)", 700, 2.818347229137629),
        ("macd(12, 26, 9)", 1299, 0.6385227641170843),
        ("macd_signal(12, 26, 9)", 33, 1.88077075974845),
        ("macd_signal(12, 26, 9)", 700, 2.3844449198686695),
        ("macd_signal(12, 26, 9)", 1299, 0.680155690309428),
        ("macd_hist(12, 26, 9)", 33, -0.33362815388912903),
        ("macd_hist(12, 26, 9)", 700, 0.43390230926895956),
        ("macd_hist(12, 26, 9)", 1299, -0.04163292619234371),
        ("bb_upper(20, 2)", 19, 108.21279659496845),
        ("bb_upper(20, 2)", 700, 141.16142907693867),
        ("bb_upper(20, 2)", 1299, 204.47345839050251),
        ("bb_lower(20, 2)", 19, 96.85020340503156),
        ("bb_lower(20, 2)", 700, 128.24257092306144),
        ("bb_lower(20, 2)", 1299, 197.2155416094971),
        ("atr(14)", 14, 3.975357142857142),
        ("atr(14)", 700, 1.69251635872095),
        ("atr(14)", 1299, 2.563322241899581),
    ];
    let mut studies = Studies::new(&parse(table.iter().map(|row| row.0)), Reference::PrevClose);
    for (t, bar) in ibm().iter().enumerate() {
        studies.update(bar);
        for (slot, &(text, at, want)) in table.iter().enumerate() {
            if t == at {
                assert_close(studies.values()[slot], want, &format!("{text} at {t}"));
            }
        }
    }
}
