//! Alerts over real sockets: each rule kind fires when it should and only then,
//! throttling, acknowledgment over WebSocket and HTTP, the `/alerts` listing, the journal
//! across a restart and after a torn write, the webhook against a local HTTP server, and
//! bad rules refused at start.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use scanstream::alerts::{HandlerKind, Kind, RuleSpec, Severity};
use scanstream::config::Dur;
use scanstream::{EventKind, Reactor, Scan, ScanResult};
use serde_json::{Value, json};

/// A rule on every scan and symbol, with the default events, throttle and handlers.
fn rule(name: &str, kind: Kind, severity: Severity, when: &[&str]) -> RuleSpec {
    RuleSpec::new(name, kind, severity, when)
}

/// The rule most tests use: a move of 5% either way is a warning.
fn movers() -> RuleSpec {
    rule(
        "movers",
        Kind::PriceChange,
        Severity::Warning,
        &["abs_change_pct >= 5"],
    )
}

/// A scripted server with `rules` and nothing else changed.
fn with_rules(rules: Vec<RuleSpec>) -> TestServer {
    TestServer::scripted_with(|c| c.rules = rules)
}

fn events(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|s| (*s).to_owned()).collect())
}

/// A result of the price_change scan with `tweak` applied.
fn res(symbol: &str, event: EventKind, tweak: impl FnOnce(&mut ScanResult)) -> ScanResult {
    let mut r = result(symbol, Scan::PriceChange, event);
    tweak(&mut r);
    r
}

/// A connection with one subscription and no filters, so it receives every result and
/// every alert.
fn watcher(server: &TestServer) -> Ws {
    let mut ws = connect(server);
    subscribe(&mut ws, json!({}));
    ws
}

/// The next message that is neither a result nor a status, and the results read on the
/// way to it.
#[track_caller]
fn next_other(ws: &mut Ws) -> (Value, Vec<Value>) {
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
fn expect_alert(ws: &mut Ws) -> (Value, Vec<Value>) {
    let (msg, results) = next_other(ws);
    assert_eq!(msg["type"], "alert", "expected an alert, got {msg}");
    assert!(msg["timestamp"].is_string(), "{msg}");
    (msg["data"].clone(), results)
}

/// The seq of the last result for `symbol` among `results`.
#[track_caller]
fn seq_of(results: &[Value], symbol: &str) -> u64 {
    results
        .iter()
        .rev()
        .find(|r| r["symbol"] == symbol)
        .and_then(|r| r["seq"].as_u64())
        .unwrap_or_else(|| panic!("no result for {symbol} in {results:?}"))
}

/// What every fresh alert must say.
#[track_caller]
fn check_alert(alert: &Value, id: &str, rule: &str, kind: &str, severity: &str, symbol: &str) {
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
fn list(addr: SocketAddr, query: &str) -> Vec<Value> {
    let resp = http(addr, "GET", &format!("/alerts{query}"), None);
    assert_eq!(
        resp.status,
        200,
        "{query}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    resp.json().as_array().expect("an array of alerts").clone()
}

fn ids(alerts: &[Value]) -> Vec<&str> {
    alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap_or("?"))
        .collect()
}

/// Waits until `GET /alerts` holds `n` alerts; returns them.
#[track_caller]
fn wait_for_alerts(addr: SocketAddr, n: usize) -> Vec<Value> {
    let mut last = Vec::new();
    eventually(&format!("{n} alerts"), || {
        last = list(addr, "");
        last.len() >= n
    });
    assert_eq!(last.len(), n, "{last:?}");
    last
}

#[track_caller]
fn assert_400(addr: SocketAddr, path: &str) {
    let resp = http(addr, "GET", path, None);
    assert_eq!(
        resp.status,
        400,
        "{path}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.json()["code"], "bad_request", "{path}");
}

fn ack_msg(id: &str, alert_id: &str) -> Value {
    json!({"type": "ack", "id": id, "data": {"alert_id": alert_id}})
}

/// The journal's lines, each parsed; fails on a line that is not JSON or a missing final
/// newline.
#[track_caller]
fn journal_lines(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("alerts.jsonl")).expect("read the journal");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the journal ends mid-line: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Rule kinds

#[test]
fn price_change_fires_on_a_big_move_either_way_and_not_on_a_small_one() {
    let server = with_rules(vec![rule(
        "big-movers",
        Kind::PriceChange,
        Severity::Warning,
        &["abs_change_pct >= 5"],
    )]);
    let mut ws = watcher(&server);
    server.push(res("AAPL", EventKind::New, |r| r.change_pct = 2.0));
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = -6.0));
    let (alert, results) = expect_alert(&mut ws);
    // The small move was published (and so evaluated) before the alert, and raised none.
    assert!(results.iter().any(|r| r["symbol"] == "AAPL"), "{results:?}");
    check_alert(
        &alert,
        "a-1",
        "big-movers",
        "price_change",
        "warning",
        "TSLA",
    );
    assert_eq!(alert["result_seq"], seq_of(&results, "TSLA"), "{alert}");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("abs_change_pct"),
        "{alert}"
    );

    // An `update` is not watched by a rule with the default events.
    server.push(res("NVDA", EventKind::Update, |r| r.change_pct = 9.0));
    server.push(res("MSFT", EventKind::New, |r| r.change_pct = 5.0));
    let (alert, results) = expect_alert(&mut ws);
    assert!(results.iter().any(|r| r["symbol"] == "NVDA"), "{results:?}");
    check_alert(
        &alert,
        "a-2",
        "big-movers",
        "price_change",
        "warning",
        "MSFT",
    );
    assert_eq!(alert["result_seq"], seq_of(&results, "MSFT"));
    assert_eq!(
        metric(server.addr, "scanstream_alerts_total{severity=\"warning\"}"),
        2.0
    );
    assert_eq!(
        metric(server.addr, "scanstream_alerts_total{severity=\"info\"}"),
        0.0
    );
}

#[test]
fn new_opportunity_fires_on_new_and_not_on_update() {
    let server = with_rules(vec![rule(
        "entries",
        Kind::NewOpportunity,
        Severity::Info,
        &[],
    )]);
    let mut ws = watcher(&server);
    // An ad-hoc scan's `new` is an answer to a request, not an opportunity arriving.
    let resp = http(
        server.addr,
        "POST",
        "/scan",
        Some(r#"{"symbols": ["IBM"]}"#),
    );
    assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
    loop {
        let msg = next_message(&mut ws);
        assert_ne!(msg["type"], "alert", "{msg}");
        if msg["type"] == "result" && msg["data"]["symbol"] == "IBM" {
            assert_eq!(msg["data"]["adhoc"], true, "{msg}");
            break;
        }
    }
    server.push(res("AAPL", EventKind::Update, |_| {}));
    server.push(res("AMZN", EventKind::Clear, |_| {}));
    server.push(res("MSFT", EventKind::New, |r| r.score = 2.5));
    let (alert, results) = expect_alert(&mut ws);
    assert!(results.iter().any(|r| r["symbol"] == "AAPL"), "{results:?}");
    assert!(results.iter().any(|r| r["symbol"] == "AMZN"), "{results:?}");
    check_alert(&alert, "a-1", "entries", "new_opportunity", "info", "MSFT");
    assert_eq!(alert["result_seq"], seq_of(&results, "MSFT"));
    assert_eq!(
        metric(server.addr, "scanstream_alerts_total{severity=\"info\"}"),
        1.0
    );
}

#[test]
fn volume_spike_fires_at_its_ratio() {
    let server = with_rules(vec![rule(
        "volume",
        Kind::VolumeSpike,
        Severity::Critical,
        &["volume_ratio >= 3"],
    )]);
    let mut ws = watcher(&server);
    server.push(res("IBM", EventKind::New, |r| r.volume_ratio = 2.9));
    server.push(res("NVDA", EventKind::New, |r| r.volume_ratio = 4.0));
    let (alert, results) = expect_alert(&mut ws);
    assert!(results.iter().any(|r| r["symbol"] == "IBM"), "{results:?}");
    check_alert(&alert, "a-1", "volume", "volume_spike", "critical", "NVDA");
    assert_eq!(alert["result_seq"], seq_of(&results, "NVDA"));
    assert!(
        alert["message"].as_str().unwrap().contains("volume_ratio"),
        "{alert}"
    );
    assert_eq!(
        metric(
            server.addr,
            "scanstream_alerts_total{severity=\"critical\"}"
        ),
        1.0
    );
}

#[test]
fn threshold_fires_on_new_and_update_when_its_condition_holds() {
    let server = with_rules(vec![RuleSpec {
        events: events(&["new", "update"]),
        ..rule("hot", Kind::Threshold, Severity::Warning, &["rsi >= 80"])
    }]);
    let mut ws = watcher(&server);
    server.push(res("AAPL", EventKind::Update, |r| r.rsi = Some(79.9)));
    // A result without an RSI never matches a condition on it.
    server.push(res("IBM", EventKind::New, |r| r.rsi = None));
    // Clear events are never watched.
    server.push(res("AMZN", EventKind::Clear, |r| r.rsi = Some(95.0)));
    server.push(res("TSLA", EventKind::Update, |r| r.rsi = Some(85.0)));
    let (alert, results) = expect_alert(&mut ws);
    for s in ["AAPL", "IBM", "AMZN"] {
        assert!(results.iter().any(|r| r["symbol"] == s), "{s}: {results:?}");
    }
    check_alert(&alert, "a-1", "hot", "threshold", "warning", "TSLA");
    assert_eq!(alert["result_seq"], seq_of(&results, "TSLA"));

    server.push(res("MSFT", EventKind::New, |r| r.rsi = Some(80.0)));
    let (alert, results) = expect_alert(&mut ws);
    check_alert(&alert, "a-2", "hot", "threshold", "warning", "MSFT");
    assert_eq!(alert["result_seq"], seq_of(&results, "MSFT"));
}

// ---------------------------------------------------------------------------------------
// Throttling

#[test]
fn throttle_holds_back_a_second_alert_per_rule_and_symbol() {
    let server = TestServer::scripted_with(|c| {
        c.alert_throttle = Dur(Duration::from_secs(60));
        c.rules = vec![
            RuleSpec {
                events: events(&["new", "update"]),
                symbols: Some(vec!["TSLA".into(), "NVDA".into()]),
                ..movers()
            },
            // A rule's own throttle wins over the setting.
            RuleSpec {
                events: events(&["new", "update"]),
                symbols: Some(vec!["AMD".into()]),
                throttle: Some(Dur(Duration::from_secs(1))),
                ..rule(
                    "quick",
                    Kind::PriceChange,
                    Severity::Info,
                    &["abs_change_pct >= 5"],
                )
            },
        ];
    });
    let mut ws = watcher(&server);
    assert_eq!(
        metric(server.addr, "scanstream_alerts_throttled_total"),
        0.0
    );
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 6.0));
    server.push(res("TSLA", EventKind::Update, |r| r.change_pct = 8.0));
    server.push(res("NVDA", EventKind::New, |r| r.change_pct = -7.0));
    let (first, mut results) = expect_alert(&mut ws);
    assert_eq!(first["symbol"], "TSLA", "{first}");
    assert_eq!(first["alert_id"], "a-1");
    let (second, more) = expect_alert(&mut ws);
    results.extend(more);
    // Both TSLA results came before it: the second one raised nothing.
    assert_eq!(
        results.iter().filter(|r| r["symbol"] == "TSLA").count(),
        2,
        "{results:?}"
    );
    assert_eq!(second["symbol"], "NVDA", "{second}");
    assert_eq!(second["alert_id"], "a-2");
    assert_eq!(
        metric(server.addr, "scanstream_alerts_throttled_total"),
        1.0
    );

    server.push(res("AMD", EventKind::New, |r| r.change_pct = 5.5));
    server.push(res("AMD", EventKind::Update, |r| r.change_pct = 6.5));
    let (third, _) = expect_alert(&mut ws);
    assert_eq!(third["symbol"], "AMD", "{third}");
    assert_eq!(third["rule"], "quick");
    // Past the rule's own throttle (not the 60 s setting) the symbol alerts again.
    std::thread::sleep(Duration::from_millis(1200));
    server.push(res("AMD", EventKind::Update, |r| r.change_pct = 7.5));
    let (fourth, results) = expect_alert(&mut ws);
    assert_eq!(fourth["symbol"], "AMD", "{fourth}");
    assert_eq!(fourth["alert_id"], "a-4", "{fourth}");
    assert_eq!(fourth["result_seq"], seq_of(&results, "AMD"));
    assert_eq!(
        metric(server.addr, "scanstream_alerts_throttled_total"),
        2.0
    );
    assert_eq!(
        metric(server.addr, "scanstream_alerts_total{severity=\"warning\"}"),
        2.0
    );
    assert_eq!(
        metric(server.addr, "scanstream_alerts_total{severity=\"info\"}"),
        2.0
    );
}

// ---------------------------------------------------------------------------------------
// Acknowledgment

#[test]
fn ack_over_websocket_replies_broadcasts_once_and_is_idempotent() {
    let server = with_rules(vec![movers()]);
    let mut acker = watcher(&server);
    let mut other = watcher(&server);
    // Connected but not subscribed: gets no alerts and no acks.
    let mut bystander = connect(&server);

    server.push(res("AAPL", EventKind::New, |r| r.change_pct = -6.0));
    let (alert, _) = expect_alert(&mut acker);
    assert_eq!(alert["alert_id"], "a-1");
    assert_eq!(expect_alert(&mut other).0, alert);

    send(&mut acker, ack_msg("k1", "a-1"));
    // The acker holds a subscription too: its reply and the broadcast, in either order.
    let (a, _) = next_other(&mut acker);
    let (b, _) = next_other(&mut acker);
    let (reply, broadcast) = if a.get("id").is_some() {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(reply["type"], "acked", "{reply}");
    assert_eq!(reply["id"], "k1", "{reply}");
    let acked = reply["data"].clone();
    assert_eq!(acked["alert_id"], "a-1", "{acked}");
    assert_eq!(acked["acknowledged"], true, "{acked}");
    assert!(acked["acked_at"].is_string(), "{acked}");
    assert_eq!(acked["created"], alert["created"]);
    assert_eq!(acked["result_seq"], alert["result_seq"]);
    assert_eq!(broadcast["type"], "acked", "{broadcast}");
    assert!(broadcast.get("id").is_none(), "{broadcast}");
    assert_eq!(broadcast["data"], acked);

    let (msg, _) = next_other(&mut other);
    assert_eq!(msg["type"], "acked", "{msg}");
    assert!(msg.get("id").is_none(), "a broadcast carries no id: {msg}");
    assert_eq!(msg["data"], acked);

    // Again: the same answer, nothing changes, nothing is broadcast.
    send(&mut acker, ack_msg("k2", "a-1"));
    let (again, _) = next_other(&mut acker);
    assert_eq!(again["type"], "acked", "{again}");
    assert_eq!(again["id"], "k2", "{again}");
    assert_eq!(again["data"], acked);

    send(&mut acker, ack_msg("k3", "a-999"));
    let (err, _) = next_other(&mut acker);
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["data"]["code"], "not_found", "{err}");
    assert_eq!(err["id"], "k3", "{err}");
    send(&mut acker, ack_msg("k4", "bogus"));
    let (err, _) = next_other(&mut acker);
    assert_eq!(err["data"]["code"], "not_found", "{err}");
    assert_eq!(err["id"], "k4", "{err}");

    // Had the second ack been broadcast, it would come before this alert.
    server.push(res("MSFT", EventKind::New, |r| r.change_pct = 7.0));
    let (next, _) = next_other(&mut other);
    assert_eq!(next["type"], "alert", "expected the new alert, got {next}");
    assert_eq!(next["data"]["alert_id"], "a-2", "{next}");
    let (next, _) = next_other(&mut acker);
    assert_eq!(next["type"], "alert", "expected the new alert, got {next}");
    assert_eq!(next["data"]["alert_id"], "a-2", "{next}");

    // Everything above has been broadcast; the bystander's first message is its pong.
    send(&mut bystander, json!({"type": "ping", "id": "p"}));
    let pong = expect_message(&mut bystander, "pong");
    assert_eq!(pong["id"], "p");

    assert_eq!(metric(server.addr, "scanstream_alerts_acked_total"), 1.0);
    assert_eq!(metric(server.addr, "scanstream_alerts_unacked"), 1.0);
}

#[test]
fn an_http_ack_waits_for_the_producer_and_pipelined_requests_keep_their_order() {
    let server = TestServer::scripted_with(|c| {
        c.rules = vec![rule(
            "movers",
            Kind::PriceChange,
            Severity::Warning,
            &["abs_change_pct >= 5"],
        )];
    });
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 9.0));
    wait_for_alerts(server.addr, 1);
    // Three requests in one write: the ack is answered by the producer, the others by the
    // edge at once; the responses still come in the order asked.
    let mut s = raw(server.addr);
    let post = "POST /alerts/a-1/ack HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
    let missing = "POST /alerts/a-9/ack HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
    let health = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    s.write_all(format!("{post}{health}{missing}{health}").as_bytes())
        .unwrap();
    let mut pending = Vec::new();
    let acked = read_response(&mut s, &mut pending);
    assert_eq!(acked.status, 200);
    assert_eq!(acked.json()["alert_id"], "a-1");
    assert_eq!(acked.json()["acknowledged"], true);
    assert_eq!(read_response(&mut s, &mut pending).status, 200);
    let missing = read_response(&mut s, &mut pending);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "no alert `a-9`");
    assert_eq!(read_response(&mut s, &mut pending).body, b"ok");
    // The edge's mirror has the acknowledgment.
    assert_eq!(list(server.addr, "?unacked=true").len(), 0);
}

#[test]
fn ack_and_listing_over_http() {
    let server = with_rules(vec![
        movers(),
        rule(
            "volume",
            Kind::VolumeSpike,
            Severity::Info,
            &["volume_ratio >= 3"],
        ),
    ]);
    let addr = server.addr;
    assert!(list(addr, "").is_empty());
    server.push(res("AAPL", EventKind::New, |r| r.change_pct = -6.0));
    server.push(res("MSFT", EventKind::New, |r| r.volume_ratio = 5.0));
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 9.0));
    let all = wait_for_alerts(addr, 3);
    assert_eq!(ids(&all), ["a-3", "a-2", "a-1"], "newest first");
    assert_eq!(all[2]["symbol"], "AAPL");
    assert_eq!(all[1]["severity"], "info");
    assert_eq!(ids(&list(addr, "?limit=1")), ["a-3"]);
    assert_eq!(ids(&list(addr, "?severity=warning")), ["a-3", "a-1"]);
    assert_eq!(ids(&list(addr, "?symbol=aapl")), ["a-1"]);
    assert_eq!(ids(&list(addr, "?symbol=Msft&severity=info")), ["a-2"]);
    assert!(list(addr, "?symbol=IBM").is_empty());

    let resp = http(addr, "POST", "/alerts/a-1/ack", None);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let acked = resp.json();
    assert_eq!(acked["alert_id"], "a-1", "{acked}");
    assert_eq!(acked["acknowledged"], true, "{acked}");
    let acked_at = acked["acked_at"].as_str().expect("acked_at").to_owned();
    let resp = http(addr, "POST", "/alerts/a-1/ack", None);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json()["acked_at"],
        acked_at.as_str(),
        "a second ack changed it"
    );

    for path in ["/alerts/a-999/ack", "/alerts/nope/ack"] {
        let resp = http(addr, "POST", path, None);
        assert_eq!(resp.status, 404, "{path}");
        assert_eq!(resp.json()["code"], "not_found", "{path}");
    }
    assert_eq!(http(addr, "GET", "/alerts/a-1/ack", None).status, 405);
    assert_eq!(http(addr, "POST", "/alerts", None).status, 405);

    assert_eq!(ids(&list(addr, "?unacked=true")), ["a-3", "a-2"]);
    assert_eq!(ids(&list(addr, "?unacked=true&severity=warning")), ["a-3"]);
    let all = list(addr, "?unacked=false");
    assert_eq!(ids(&all), ["a-3", "a-2", "a-1"]);
    assert_eq!(all[2]["acked_at"], acked_at.as_str());

    for bad in [
        "/alerts?severity=bogus",
        "/alerts?limit=0",
        "/alerts?limit=x",
        "/alerts?unacked=maybe",
        "/alerts?symbol=",
        "/alerts?colour=red",
    ] {
        assert_400(addr, bad);
    }
    assert_eq!(metric(addr, "scanstream_alerts_acked_total"), 1.0);
    assert_eq!(metric(addr, "scanstream_alerts_unacked"), 2.0);
}

// ---------------------------------------------------------------------------------------
// The journal

fn journaled(dir: &Path) -> TestServer {
    let dir = dir.to_owned();
    TestServer::scripted_with(move |c| {
        c.data_dir = Some(dir);
        c.rules = vec![movers()];
    })
}

#[test]
fn alerts_and_acks_survive_a_restart() {
    let dir = TempDir::new();
    let server = journaled(dir.path());
    server.push(res("AAPL", EventKind::New, |r| r.change_pct = -6.0));
    server.push(res("MSFT", EventKind::New, |r| r.change_pct = 8.0));
    wait_for_alerts(server.addr, 2);
    let resp = http(server.addr, "POST", "/alerts/a-1/ack", None);
    assert_eq!(resp.status, 200);
    let acked_at = resp.json()["acked_at"].clone();
    assert!(acked_at.is_string());
    let before = list(server.addr, "");
    server.stop().expect("clean stop");

    let ops: Vec<_> = journal_lines(dir.path())
        .iter()
        .map(|l| l["op"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(ops, ["alert", "alert", "ack"]);

    let server = journaled(dir.path());
    let after = list(server.addr, "");
    assert_eq!(after, before, "the history changed across the restart");
    assert_eq!(ids(&after), ["a-2", "a-1"]);
    assert_eq!(after[1]["acknowledged"], true);
    assert_eq!(after[1]["acked_at"], acked_at);
    assert_eq!(after[0]["acknowledged"], false);
    assert!(after[0]["acked_at"].is_null());
    assert_eq!(ids(&list(server.addr, "?unacked=true")), ["a-2"]);
    // The loaded acknowledgment holds: acking again keeps its time.
    let resp = http(server.addr, "POST", "/alerts/a-1/ack", None);
    assert_eq!(resp.json()["acked_at"], acked_at);

    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 9.0));
    let all = wait_for_alerts(server.addr, 3);
    assert_eq!(all[0]["alert_id"], "a-3", "ids go on: {:?}", ids(&all));
    assert_eq!(all[0]["symbol"], "TSLA");
    server.stop().expect("clean stop");
}

/// A journal line as the server writes it.
fn journal_alert(id: u32, symbol: &str, change: f64) -> String {
    json!({
        "op": "alert",
        "alert_id": format!("a-{id}"),
        "rule": "movers",
        "kind": "price_change",
        "severity": "warning",
        "symbol": symbol,
        "scan": "price_change",
        "message": format!("{symbol} abs_change_pct {change} >= 5 (price_change)"),
        "result_seq": id * 10,
        "created": scanstream::rfc3339(SystemTime::now()),
        "acknowledged": false,
        "acked_at": null,
    })
    .to_string()
}

#[test]
fn a_torn_journal_line_is_skipped_and_cut_off() {
    let dir = TempDir::new();
    let torn = journal_alert(3, "ZZZZ", 12.0);
    let text = format!(
        "{}\n{}\n{}",
        journal_alert(1, "AAPL", 6.0),
        journal_alert(2, "MSFT", 7.0),
        &torn[..torn.len() / 2]
    );
    std::fs::write(dir.join("alerts.jsonl"), text).unwrap();

    let server = journaled(dir.path());
    let loaded = list(server.addr, "");
    assert_eq!(ids(&loaded), ["a-2", "a-1"]);
    assert_eq!(loaded[0]["symbol"], "MSFT");
    assert_eq!(loaded[1]["result_seq"], 10);
    assert_eq!(
        loaded[1]["message"],
        "AAPL abs_change_pct 6 >= 5 (price_change)"
    );

    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 9.0));
    let all = wait_for_alerts(server.addr, 3);
    // The torn a-3 never was: its id goes to the next alert.
    assert_eq!(all[0]["alert_id"], "a-3", "{:?}", ids(&all));
    assert_eq!(all[0]["symbol"], "TSLA");

    let lines = journal_lines(dir.path());
    let ids: Vec<_> = lines.iter().map(|l| l["alert_id"].clone()).collect();
    assert_eq!(ids, [json!("a-1"), json!("a-2"), json!("a-3")], "{lines:?}");
    assert!(lines.iter().all(|l| l["symbol"] != "ZZZZ"), "{lines:?}");
    server.stop().expect("clean stop");
}

// ---------------------------------------------------------------------------------------
// The webhook

/// What the local webhook receiver does with each connection, in turn.
enum Reply {
    Status(u16),
    /// Read the request, then answer nothing until the client gives up.
    Hang,
}

/// A request the receiver got.
#[derive(Debug)]
struct HookRequest {
    line: String,
    content_type: String,
    body: String,
}

/// A one-request-per-connection HTTP server on 127.0.0.1:0 following `script`; returns
/// its URL and the requests it gets, as they arrive.
fn webhook_receiver(script: Vec<Reply>) -> (String, mpsc::Receiver<HookRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for reply in script {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let Some(req) = read_request(&mut s) else {
                continue;
            };
            let _ = tx.send(req);
            match reply {
                Reply::Status(code) => {
                    let head = format!(
                        "HTTP/1.1 {code} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(head.as_bytes());
                }
                Reply::Hang => {
                    let mut sink = [0; 1024];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                }
            }
        }
    });
    (url, rx)
}

/// Reads one request: head and a Content-Length body.
fn read_request(s: &mut TcpStream) -> Option<HookRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().unwrap_or(0);
            if buf.len() >= head + len {
                return Some(HookRequest {
                    line: format!("{} {}", req.method?, req.path?),
                    content_type: header("content-type"),
                    body: String::from_utf8_lossy(&buf[head..head + len]).into_owned(),
                });
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn webhook_server(url: &str, timeout: Duration, retries: u32) -> TestServer {
    let url = url.to_owned();
    TestServer::scripted_with(move |c| {
        c.webhook_url = Some(url);
        c.webhook_timeout = Dur(timeout);
        c.webhook_retries = retries;
        c.rules = vec![RuleSpec {
            handlers: Some(vec![HandlerKind::Webhook]),
            ..movers()
        }];
    })
}

#[track_caller]
fn wait_metric(addr: SocketAddr, name: &str, value: f64) {
    let mut last = f64::NAN;
    let until = Instant::now() + TIMEOUT;
    while Instant::now() < until {
        last = metric(addr, name);
        if last == value {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} stayed at {last}, expected {value}");
}

#[track_caller]
fn next_request(rx: &mpsc::Receiver<HookRequest>) -> HookRequest {
    rx.recv_timeout(TIMEOUT).expect("a webhook request")
}

#[test]
fn webhook_posts_the_alert_json() {
    let (url, requests) = webhook_receiver(vec![Reply::Status(204)]);
    let server = webhook_server(&url, Duration::from_secs(3), 0);
    let mut ws = watcher(&server);
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 6.0));
    let req = next_request(&requests);
    assert_eq!(req.line, "POST /hook");
    assert!(req.content_type.starts_with("application/json"), "{req:?}");
    let body: Value = serde_json::from_str(&req.body).expect("a JSON body");
    assert_eq!(body["alert_id"], "a-1", "{body}");
    assert_eq!(body["rule"], "movers", "{body}");
    assert_eq!(body["symbol"], "TSLA", "{body}");
    assert_eq!(body["kind"], "price_change", "{body}");
    wait_metric(server.addr, "scanstream_webhook_sent_total", 1.0);
    assert_eq!(
        metric(server.addr, "scanstream_webhook_failed_attempts_total"),
        0.0
    );
    assert_eq!(list(server.addr, ""), [body]);
    // The rule names only the webhook: no `alert` reaches WebSocket clients.
    send(&mut ws, json!({"type": "ping", "id": "p"}));
    let (msg, _) = next_other(&mut ws);
    assert_eq!(msg["type"], "pong", "{msg}");
}

#[test]
fn webhook_timeout_gives_up_and_the_server_keeps_serving() {
    let (url, requests) = webhook_receiver(vec![Reply::Hang]);
    let server = webhook_server(&url, Duration::from_millis(300), 0);
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 6.0));
    let req = next_request(&requests);
    assert!(req.body.contains("\"a-1\""), "{req:?}");
    // The reactor does not wait for the webhook.
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
    wait_metric(server.addr, "scanstream_webhook_gave_up_total", 1.0);
    assert_eq!(
        metric(server.addr, "scanstream_webhook_failed_attempts_total"),
        1.0
    );
    assert_eq!(metric(server.addr, "scanstream_webhook_sent_total"), 0.0);
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
    assert_eq!(list(server.addr, "").len(), 1);
}

#[test]
fn webhook_retries_after_a_server_error() {
    let (url, requests) = webhook_receiver(vec![Reply::Status(500), Reply::Status(200)]);
    let server = webhook_server(&url, Duration::from_secs(3), 2);
    server.push(res("TSLA", EventKind::New, |r| r.change_pct = 6.0));
    let first = next_request(&requests);
    let second = next_request(&requests);
    assert_eq!(first.body, second.body, "a retry posts the same alert");
    wait_metric(server.addr, "scanstream_webhook_sent_total", 1.0);
    assert_eq!(
        metric(server.addr, "scanstream_webhook_failed_attempts_total"),
        1.0
    );
    assert_eq!(metric(server.addr, "scanstream_webhook_gave_up_total"), 0.0);
    assert!(requests.try_recv().is_err(), "a third request after a 200");
}

// ---------------------------------------------------------------------------------------
// Bad rules

#[test]
fn a_bad_rule_is_refused_at_start_naming_the_rule_and_field() {
    let dup = rule("twin", Kind::Threshold, Severity::Info, &["score >= 1"]);
    let cases: Vec<(Vec<RuleSpec>, &str, &str)> = vec![
        (
            vec![rule(
                "broken",
                Kind::Threshold,
                Severity::Info,
                &["nope >= 1"],
            )],
            "broken",
            "when",
        ),
        (
            vec![rule(
                "no-move",
                Kind::PriceChange,
                Severity::Info,
                &["score >= 1"],
            )],
            "no-move",
            "when",
        ),
        (
            vec![RuleSpec {
                events: events(&["update"]),
                ..rule("late", Kind::NewOpportunity, Severity::Info, &[])
            }],
            "late",
            "events",
        ),
        (
            vec![RuleSpec {
                handlers: Some(vec![HandlerKind::Webhook]),
                ..rule("hooked", Kind::Threshold, Severity::Info, &["score >= 1"])
            }],
            "hooked",
            "handlers",
        ),
        (vec![dup.clone(), dup], "twin", "name"),
    ];
    for (rules, name, field) in cases {
        let mut config = test_config();
        config.rules = rules;
        let err = match Reactor::bind(config) {
            Ok(_) => panic!("rule `{name}` was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(name), "{err}");
        assert!(err.contains(&format!("`{field}`")), "{err}");
    }
}

#[test]
fn the_binary_refuses_a_config_file_rule_with_an_unknown_scan() {
    let dir = TempDir::new();
    let path = dir.join("scanstream.toml");
    std::fs::write(
        &path,
        r#"listen = "127.0.0.1:0"
source = "firehose:0"

[[rules]]
name = "odd-scan"
kind = "threshold"
scans = ["moonshot"]
when = ["score >= 1"]
"#,
    )
    .unwrap();
    let stderr =
        Binary::spawn(&mut scanstream(&["--config", path.to_str().unwrap()])).expect_failure();
    assert!(stderr.contains("odd-scan"), "{stderr}");
    assert!(stderr.contains("moonshot"), "{stderr}");
}
