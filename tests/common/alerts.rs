//! Alert helpers shared by the alert tests: rules, results that trip them, and readers
//! of the `alert` messages, the `/alerts` listing and the journal.

use std::net::SocketAddr;
use std::path::Path;

use scanstream::alerts::{Kind, RuleSpec, Severity};
use scanstream::{EventKind, Scan, ScanResult};
use serde_json::{Value, json};

use super::*;

/// A rule on every scan and symbol, with the default events, throttle and handlers.
pub fn rule(name: &str, kind: Kind, severity: Severity, when: &[&str]) -> RuleSpec {
    RuleSpec::new(name, kind, severity, when)
}

/// The rule most tests use: a move of 5% either way is a warning.
pub fn movers() -> RuleSpec {
    rule(
        "movers",
        Kind::PriceChange,
        Severity::Warning,
        &["abs_change_pct >= 5"],
    )
}

/// A scripted server with `rules` and nothing else changed.
pub fn with_rules(rules: Vec<RuleSpec>) -> TestServer {
    TestServer::scripted_with(|c| c.rules = rules)
}

pub fn events(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|s| (*s).to_owned()).collect())
}

/// A result of the price_change scan with `tweak` applied.
pub fn res(symbol: &str, event: EventKind, tweak: impl FnOnce(&mut ScanResult)) -> ScanResult {
    let mut r = result(symbol, Scan::PriceChange, event);
    tweak(&mut r);
    r
}

/// A connection with one subscription and no filters, so it receives every result and
/// every alert.
pub fn watcher(server: &TestServer) -> Ws {
    let mut ws = connect(server);
    subscribe(&mut ws, json!({}));
    ws
}

/// The next message that is neither a result nor a status, and the results read on the
/// way to it.
#[track_caller]
pub fn next_other(ws: &mut Ws) -> (Value, Vec<Value>) {
    let mut results = Vec::new();
    loop {
        let msg = next_message(ws);
        match msg["type"].as_str() {
            Some("result") => results.push(msg["data"].clone()),
            Some("status") => {}
            _ => return (msg, results),
        }
    }
}

/// The next alert's data (results and statuses may come first), and the results passed.
#[track_caller]
pub fn expect_alert(ws: &mut Ws) -> (Value, Vec<Value>) {
    let (msg, results) = next_other(ws);
    assert_eq!(msg["type"], "alert", "expected an alert, got {msg}");
    assert!(msg["timestamp"].is_string(), "{msg}");
    (msg["data"].clone(), results)
}

/// The seq of the last result for `symbol` among `results`.
#[track_caller]
pub fn seq_of(results: &[Value], symbol: &str) -> u64 {
    results
        .iter()
        .rev()
        .find(|r| r["symbol"] == symbol)
        .and_then(|r| r["seq"].as_u64())
        .unwrap_or_else(|| panic!("no result for {symbol} in {results:?}"))
}

/// What every fresh alert must say.
#[track_caller]
pub fn check_alert(alert: &Value, id: &str, rule: &str, kind: &str, severity: &str, symbol: &str) {
    assert_eq!(alert["alert_id"], id, "{alert}");
    assert_eq!(alert["rule"], rule, "{alert}");
    assert_eq!(alert["kind"], kind, "{alert}");
    assert_eq!(alert["severity"], severity, "{alert}");
    assert_eq!(alert["symbol"], symbol, "{alert}");
    assert_eq!(alert["scan"], "price_change", "{alert}");
    assert_eq!(alert["acknowledged"], false, "{alert}");
    assert!(alert["acked_at"].is_null(), "{alert}");
    assert!(
        alert["created"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{alert}"
    );
    let message = alert["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(symbol),
        "message without the symbol: {alert}"
    );
}

/// `GET /alerts?query`, which must answer 200 with an array.
#[track_caller]
pub fn list(addr: SocketAddr, query: &str) -> Vec<Value> {
    let resp = http(addr, "GET", &format!("/alerts{query}"), None);
    assert_eq!(
        resp.status,
        200,
        "{query}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    resp.json().as_array().expect("an array of alerts").clone()
}

pub fn ids(alerts: &[Value]) -> Vec<&str> {
    alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap_or("?"))
        .collect()
}

/// Waits until `GET /alerts` holds `n` alerts; returns them.
#[track_caller]
pub fn wait_for_alerts(addr: SocketAddr, n: usize) -> Vec<Value> {
    let mut last = Vec::new();
    eventually(&format!("{n} alerts"), || {
        last = list(addr, "");
        last.len() >= n
    });
    assert_eq!(last.len(), n, "{last:?}");
    last
}

#[track_caller]
pub fn assert_400(addr: SocketAddr, path: &str) {
    let resp = http(addr, "GET", path, None);
    assert_eq!(
        resp.status,
        400,
        "{path}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.json()["code"], "bad_request", "{path}");
}

pub fn ack_msg(id: &str, alert_id: &str) -> Value {
    json!({"type": "ack", "id": id, "data": {"alert_id": alert_id}})
}

/// The journal's lines, each parsed; fails on a line that is not JSON or a missing final
/// newline.
#[track_caller]
pub fn journal_lines(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("alerts.jsonl")).expect("read the journal");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the journal ends mid-line: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect()
}
