//! Scans written in the config file, end to end: one replayed over IBM's daily bars fires
//! on exactly the bars where its condition starts (recomputed here from the CSV), carries
//! the values that explain it, is listed by `GET /scans`, and `scanstream check-config`
//! prints it or refuses a bad one with its column. An alert rule written in the same
//! language raises alerts on exactly the results whose bars meet it.

mod common;

use std::path::{Path, PathBuf};

use common::alerts::{events, list, rule};
use common::{TempDir, TestServer, connect, eventually, http, next_message, scanstream, subscribe};
use scanstream::SourceSpec;
use scanstream::alerts::{Kind, Severity};
use scanstream::config::{Dur, ScanSpec};
use serde_json::{Value, json};

const NAME: &str = "ibm_volume_cross";

fn ibm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ibm.csv")
}

fn spec() -> ScanSpec {
    ScanSpec {
        name: NAME.into(),
        when: vec![
            "crosses_above(close, sma(20))".into(),
            "volume_ratio(20) >= 1.2".into(),
        ],
        score: "volume_ratio(20)".into(),
    }
}

/// A bar of the file: its date, close and volume.
struct Row {
    date: String,
    close: f64,
    volume: f64,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(ibm()).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Row {
                date: f[0].to_owned(),
                close: f[4].parse().unwrap(),
                volume: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// The bars where the scan's condition starts, and its values there, computed with plain
/// loops over the file: the close crosses above its 20-bar mean while volume is at least
/// 1.2 times the mean of the 20 bars before.
fn expected(rows: &[Row]) -> Vec<(String, f64, f64, f64)> {
    let sma = |t: usize| rows[t + 1 - 20..=t].iter().map(|r| r.close).sum::<f64>() / 20.0;
    let ratio =
        |t: usize| rows[t].volume / (rows[t - 20..t].iter().map(|r| r.volume).sum::<f64>() / 20.0);
    let holds = |t: usize| {
        t >= 20
            && rows[t - 1].close - sma(t - 1) <= 0.0
            && rows[t].close - sma(t) > 0.0
            && ratio(t) >= 1.2
    };
    (1..rows.len())
        .filter(|&t| holds(t) && !holds(t - 1))
        .map(|t| (rows[t].date.clone(), rows[t].close, sma(t), ratio(t)))
        .collect()
}

/// A server replaying IBM's bars at full speed with the scan (and `tweak`).
fn replay(tweak: impl FnOnce(&mut scanstream::Config)) -> TestServer {
    TestServer::with(|c| {
        c.source = SourceSpec::Csv { path: ibm() };
        c.replay_speed = "max".parse().unwrap();
        c.history_size = 100_000;
        c.scans = vec![spec()];
        tweak(c);
    })
}

/// The scan's first `n` `new` results, from the start of the history.
fn new_results(server: &TestServer, n: usize) -> Vec<Value> {
    let mut ws = connect(server);
    // Everything since the start, from history: the replay may be over already.
    subscribe(&mut ws, json!({"since": 0, "filters": {"scans": [NAME]}}));
    let mut got: Vec<Value> = Vec::new();
    while got.len() < n {
        let msg = next_message(&mut ws);
        if msg["type"] != "result" {
            continue;
        }
        let data = msg["data"].clone();
        assert_eq!(data["scan"], NAME, "{data}");
        if data["event"] == "new" {
            got.push(data);
        }
    }
    got
}

fn date(result: &Value) -> &str {
    &result["source_ts"].as_str().unwrap()[..10]
}

#[test]
fn a_custom_scan_fires_on_exactly_the_bars_its_condition_starts_on() {
    let rows = rows();
    let want = expected(&rows);
    assert!(want.len() >= 5, "too few to prove much: {}", want.len());
    let server = replay(|_| {});
    let got = new_results(&server, want.len());
    let dates: Vec<&str> = got.iter().map(date).collect();
    let want_dates: Vec<&str> = want.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(dates, want_dates);
    for (data, (date, close, sma, ratio)) in got.iter().zip(&want) {
        let values = &data["values"];
        let near = |key: &str, want: f64| {
            let v = values[key].as_f64().unwrap_or(f64::NAN);
            assert!(
                (v - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{date} {key}: {v} vs {want}"
            );
        };
        near("close", *close);
        near("sma(20)", *sma);
        near("volume_ratio(20)", *ratio);
        assert_eq!(values.as_object().unwrap().len(), 3, "{values}");
        assert!((data["score"].as_f64().unwrap() - ratio).abs() < 1e-4);
    }
}

/// Where `close > sma(50)` and `sma(3)` crossed above `sma(10)` within the last 5 bars
/// and is still above, recomputed from the file.
fn trend_holds(rows: &[Row], t: usize) -> bool {
    let sma = |n: usize, t: usize| -> Option<f64> {
        (t + 1 >= n).then(|| rows[t + 1 - n..=t].iter().map(|r| r.close).sum::<f64>() / n as f64)
    };
    let diff = |t: usize| Some(sma(3, t)? - sma(10, t)?);
    let Some(above) = sma(50, t).map(|s| rows[t].close > s) else {
        return false;
    };
    let crossed_at = (1..=t)
        .rev()
        .find(|&s| matches!((diff(s - 1), diff(s)), (Some(a), Some(b)) if a <= 0.0 && b > 0.0));
    above && diff(t).is_some_and(|d| d > 0.0) && crossed_at.is_some_and(|s| t - s < 5)
}

#[test]
fn an_alert_rule_in_the_scan_language_fires_on_exactly_the_results_whose_bars_meet_it() {
    let rows = rows();
    let want = expected(&rows);
    let index: std::collections::HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.date.as_str(), i))
        .collect();
    let trend = scanstream::alerts::RuleSpec {
        scans: Some(vec![NAME.into()]),
        events: events(&["new"]),
        throttle: Some(Dur(std::time::Duration::ZERO)),
        ..rule(
            "ibm-trend",
            Kind::Threshold,
            Severity::Warning,
            &["close > sma(50)", "crosses_above(sma(3), sma(10), 5)"],
        )
    };
    let server = replay(|c| c.rules = vec![trend]);
    let results = new_results(&server, want.len());
    let hits: Vec<&Value> = results
        .iter()
        .filter(|r| trend_holds(&rows, index[date(r)]))
        .collect();
    assert!(
        hits.len() >= 2 && hits.len() < results.len(),
        "the rule should pick some results, not all: {} of {}",
        hits.len(),
        results.len()
    );
    let mut alerts = Vec::new();
    eventually("the alerts", || {
        alerts = list(server.addr, "?limit=1000");
        alerts.len() >= hits.len()
    });
    alerts.reverse();
    let seqs: Vec<&Value> = alerts.iter().map(|a| &a["result_seq"]).collect();
    let want_seqs: Vec<&Value> = hits.iter().map(|r| &r["seq"]).collect();
    assert_eq!(seqs, want_seqs);
    let message = alerts[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "IBM close > sma(50) and crosses_above(sma(3), sma(10), 5) (ibm_volume_cross; close "
        ),
        "{message}"
    );
    assert!(message.contains(", sma(50) "), "{message}");
}

#[test]
fn get_scans_lists_every_scan_with_its_definition() {
    let server = TestServer::with(|c| {
        c.source = SourceSpec::Sim;
        c.scans = vec![spec()];
    });
    let body = http(server.addr, "GET", "/scans", None).json();
    let scans = body["scans"].as_array().unwrap();
    assert_eq!(scans.len(), 9);
    assert_eq!(scans[0]["name"], "price_change");
    assert_eq!(scans[0]["builtin"], true);
    assert_eq!(scans[0]["when"], json!(["abs(change_pct) >= 3"]));
    assert_eq!(scans[8]["name"], NAME);
    assert_eq!(scans[8]["builtin"], false);
    assert_eq!(scans[8]["when"], json!(spec().when));
    assert_eq!(scans[8]["score"], "volume_ratio(20)");
    // A subscription may name it; an unknown one is refused.
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({"filters": {"scans": [NAME]}}));
}

fn check_config(text: &str) -> std::process::Output {
    let dir = TempDir::new();
    let path = dir.join("scanstream.toml");
    std::fs::write(&path, text).unwrap();
    scanstream(&["check-config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn check_config_prints_the_scans_and_rules_or_fails_with_the_column() {
    let good = check_config(
        "[[scans]]\nname = \"oversold_bounce\"\n\
         when = [\"rsi(14) < 35\", \"close > bb_lower(20, 2)\"]\n\
         score = \"(35 - rsi(14)) / 5\"\n",
    );
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{out}");
    assert!(out.contains("scans (9):"), "{out}");
    assert!(out.contains("  price_change (built in)\n"), "{out}");
    assert!(
        out.contains("  oversold_bounce\n    when  rsi(14) < 35\n    when  close > bb_lower(20, 2)\n    score (35 - rsi(14)) / 5\n"),
        "{out}"
    );
    assert!(out.contains("alert rules ("), "{out}");

    let bad = check_config(
        "[[scans]]\nname = \"oversold_bounce\"\n\
         when = [\"rsi(14) < 35\", \"close > bb_lowr(20, 2)\"]\n",
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "scan oversold_bounce, when[1], col 9: unknown indicator bb_lowr (did you mean bb_lower?)"
        ),
        "{err}"
    );
    assert!(err.contains("scanstream.toml"), "{err}");

    let bad_rule = check_config(
        "[[rules]]\nname = \"dip\"\nkind = \"threshold\"\nwhen = [\"rsi(14) < 3O\"]\n",
    );
    let err = String::from_utf8_lossy(&bad_rule.stderr);
    assert_eq!(bad_rule.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rule `dip`, field `when`: when[0], col 12: "),
        "{err}"
    );
}

#[test]
fn the_readme_example_scans_load() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("```toml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("[[scans]]"))
        .expect("a [[scans]] example");
    let config = scanstream::Config::from_text(block).unwrap();
    let names: Vec<&str> = config.scans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["oversold_bounce", "macd_turn_up", "gap_and_go"]);
}
