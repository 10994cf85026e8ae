//! Scans written in the config file, end to end: one replayed over IBM's daily bars fires
//! on exactly the bars where its condition starts (recomputed here from the CSV), carries
//! the values that explain it, is listed by `GET /scans`, and `scanstream check-config`
//! prints it or refuses a bad one with its column.

mod common;

use std::path::{Path, PathBuf};

use common::{TempDir, TestServer, connect, http, next_message, scanstream, subscribe};
use scanstream::SourceSpec;
use scanstream::config::ScanSpec;
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

#[test]
fn a_custom_scan_fires_on_exactly_the_bars_its_condition_starts_on() {
    let rows = rows();
    let want = expected(&rows);
    assert!(want.len() >= 5, "too few to prove much: {}", want.len());
    let server = TestServer::with(|c| {
        c.source = SourceSpec::Csv { path: ibm() };
        c.replay_speed = "max".parse().unwrap();
        c.history_size = 100_000;
        c.scans = vec![spec()];
    });
    let mut ws = connect(&server);
    // Everything since the start, from history: the replay may be over already.
    subscribe(&mut ws, json!({"since": 0, "filters": {"scans": [NAME]}}));
    let mut got: Vec<Value> = Vec::new();
    while got.len() < want.len() {
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
    let dates: Vec<&str> = got
        .iter()
        .map(|d| &d["source_ts"].as_str().unwrap()[..10])
        .collect();
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
