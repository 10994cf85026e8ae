//! Alerts over real sockets: each rule kind fires when it should and only then,
//! throttling, acknowledgment over WebSocket and HTTP, the `/alerts` listing, and bad
//! rules refused at start. The journal and the webhook are in `alert_persistence.rs`.

mod common;
use common::alerts::*;
use common::*;

use std::io::Write;
use std::time::Duration;

use scanstream::alerts::{HandlerKind, Kind, RuleSpec, Severity};
use scanstream::config::Dur;
use scanstream::{EventKind, Server};
use serde_json::json;
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
        let err = match Server::bind(config) {
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

on_two_edges!(
    price_change_fires_on_a_big_move_either_way_and_not_on_a_small_one,
    new_opportunity_fires_on_new_and_not_on_update,
    volume_spike_fires_at_its_ratio,
    threshold_fires_on_new_and_update_when_its_condition_holds,
    throttle_holds_back_a_second_alert_per_rule_and_symbol,
    ack_over_websocket_replies_broadcasts_once_and_is_idempotent,
    an_http_ack_waits_for_the_producer_and_pipelined_requests_keep_their_order,
    ack_and_listing_over_http,
    a_bad_rule_is_refused_at_start_naming_the_rule_and_field,
    the_binary_refuses_a_config_file_rule_with_an_unknown_scan,
);
