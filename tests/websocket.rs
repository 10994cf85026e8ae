//! The WebSocket protocol of PROTOCOL.md over real sockets: subscriptions and filters,
//! error replies, limits, snapshots and ad-hoc scans. Framing, pings, the rate limit,
//! backpressure and replays are in `ws_transport.rs`.

mod common;

use common::*;
use scanstream::{EventKind, Scan, ScanResult};
use serde_json::{Value, json};
use tungstenite::Message;

fn valued(symbol: &str, scan: Scan, score: f64, price: f64, change: f64, ratio: f64) -> ScanResult {
    let mut r = result(symbol, scan, EventKind::New);
    r.score = score;
    r.price = price;
    r.change_pct = change;
    r.volume_ratio = ratio;
    r
}

/// Pushes `marker` after the rest and collects result symbols until it arrives.
fn symbols_until_marker(server: &TestServer, ws: &mut Ws) -> Vec<String> {
    server.push(valued("ZZMARK", Scan::Firehose, 99.0, 100.0, 50.0, 99.0));
    let mut seen = Vec::new();
    loop {
        let msg = next_non_status(ws);
        // The default rules alert on big moves; an alert follows the result it is about.
        if msg["type"] == "alert" {
            continue;
        }
        assert_eq!(msg["type"], "result", "{msg}");
        let symbol = msg["data"]["symbol"].as_str().unwrap().to_owned();
        if symbol == "ZZMARK" {
            return seen;
        }
        seen.push(symbol);
    }
}

#[test]
fn every_filter_field_narrows_the_stream() {
    let server = TestServer::scripted();
    let cases = [
        (json!({"symbols": ["aapl", "ZZMARK"]}), vec!["AAPL"]),
        (json!({"scans": ["volume_spike", "firehose"]}), vec!["MSFT"]),
        (json!({"min_score": 5}), vec!["TSLA"]),
        (
            json!({"min_price": 50, "max_price": 150}),
            vec!["AAPL", "TSLA"],
        ),
        (json!({"min_abs_change_pct": 4}), vec!["MSFT"]),
        (json!({"min_volume_ratio": 3}), vec!["MSFT"]),
        (json!({}), vec!["AAPL", "MSFT", "TSLA", "NVDA"]),
    ];
    for (filters, want) in cases {
        let mut ws = connect(&server);
        let mut filters_with_marker = filters.clone();
        if let Some(symbols) = filters_with_marker.get_mut("symbols") {
            symbols.as_array_mut().unwrap().push(json!("ZZMARK"));
        }
        subscribe(&mut ws, json!({"subscription": "f", "filters": filters}));
        expect_message(&mut ws, "status");
        server.push(valued("AAPL", Scan::NewHigh, 1.0, 100.0, 1.0, 1.0));
        server.push(valued("MSFT", Scan::VolumeSpike, 2.0, 400.0, -5.0, 4.0));
        server.push(valued("TSLA", Scan::NewLow, 6.0, 120.0, 2.0, 1.5));
        server.push(valued("NVDA", Scan::RsiOversold, 0.5, 900.0, 0.1, 0.5));
        let mut got = symbols_until_marker(&server, &mut ws);
        got.retain(|s| s != "ZZMARK");
        assert_eq!(got, want, "filters {filters}");
    }
}

#[test]
fn unsubscribe_stops_delivery_and_unknown_names_are_not_found() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    subscribe(
        &mut ws,
        json!({"subscription": "a", "filters": {"symbols": ["AAPL"]}}),
    );
    subscribe(&mut ws, json!({"subscription": "b"}));
    send(
        &mut ws,
        json!({"type": "unsubscribe", "data": {"subscription": "a"}, "id": "u1"}),
    );
    let msg = next_non_status(&mut ws);
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("unsubscribed"), Some("u1"))
    );
    assert_eq!(msg["data"]["subscription"], "a");
    server.push(result("AAPL", Scan::NewHigh, EventKind::New));
    let msg = next_non_status(&mut ws);
    assert_eq!(msg["data"]["subscriptions"], json!(["b"]));
    send(
        &mut ws,
        json!({"type": "unsubscribe", "data": {"subscription": "a"}}),
    );
    expect_error(&mut ws, "not_found");
}

#[test]
fn results_carry_four_decimals_and_filters_judge_what_is_sent() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    subscribe(
        &mut ws,
        json!({"subscription": "two", "filters": {"min_score": 2, "min_volume_ratio": 3.3333}}),
    );
    let mut r = valued(
        "AAPL",
        Scan::VolumeSpike,
        1.999_96,
        191.123_456,
        -2.345_65,
        3.333_33,
    );
    r.rsi = Some(64.123_449);
    server.push(r);
    let data = next_non_status(&mut ws)["data"].clone();
    assert_eq!(data["score"], 2.0, "{data}");
    assert_eq!(data["change_pct"], -2.3457, "{data}");
    assert_eq!(data["volume_ratio"], 3.3333, "{data}");
    assert_eq!(data["rsi"], 64.1234, "{data}");
    // The price is exact.
    assert_eq!(data["price"], 191.123_456, "{data}");
    assert_eq!(data["subscriptions"], json!(["two"]));
    // A snapshot holds the same values.
    let rows = snapshot_rows(&server, json!({"min_score": 2}));
    let row = &rows[&("AAPL".to_owned(), "volume_spike".to_owned())];
    assert_eq!(row["score"], 2.0, "{row}");
}

#[test]
fn a_result_arrives_once_naming_every_matching_subscription() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({"subscription": "all"}));
    subscribe(
        &mut ws,
        json!({"subscription": "aapl", "filters": {"symbols": ["AAPL"]}}),
    );
    subscribe(
        &mut ws,
        json!({"subscription": "lows", "filters": {"scans": ["new_low"]}}),
    );
    server.push(result("AAPL", Scan::NewHigh, EventKind::New));
    server.push(result("MSFT", Scan::NewHigh, EventKind::New));
    let first = next_non_status(&mut ws);
    assert_eq!(first["data"]["symbol"], "AAPL");
    assert_eq!(first["data"]["subscriptions"], json!(["all", "aapl"]));
    let second = next_non_status(&mut ws);
    assert_eq!(second["data"]["symbol"], "MSFT", "AAPL was delivered twice");
    assert_eq!(second["data"]["subscriptions"], json!(["all"]));
    assert_eq!(
        second["data"]["seq"],
        first["data"]["seq"].as_u64().unwrap() + 1
    );
}

#[test]
fn resubscribing_with_the_same_name_replaces_its_filters() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    subscribe(
        &mut ws,
        json!({"subscription": "m", "filters": {"symbols": ["AAPL", "ZZMARK"]}}),
    );
    subscribe(
        &mut ws,
        json!({"subscription": "m", "filters": {"symbols": ["MSFT", "ZZMARK"]}}),
    );
    server.push(result("AAPL", Scan::NewHigh, EventKind::New));
    server.push(result("MSFT", Scan::NewHigh, EventKind::New));
    assert_eq!(symbols_until_marker(&server, &mut ws), ["MSFT"]);
}

#[test]
fn bad_messages_get_errors_and_the_connection_stays() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    let cases = [
        ("{not json", "bad_json", None),
        ("[1,2,3]", "bad_json", None),
        (
            r#"{"type":"teleport","id":"t1"}"#,
            "unknown_type",
            Some("t1"),
        ),
        (r#"{"data":{}}"#, "bad_request", None),
        (
            r#"{"type":"subscribe","id":7,"data":{"since":"yesterday"}}"#,
            "bad_request",
            None,
        ),
        (
            r#"{"type":"subscribe","id":"f1","data":{"filters":{"colour":"red"}}}"#,
            "bad_filter",
            Some("f1"),
        ),
        (
            r#"{"type":"subscribe","data":{"filters":{"scans":["moonshot"]}}}"#,
            "bad_filter",
            None,
        ),
        (
            r#"{"type":"subscribe","data":{"filters":{"min_score":"high"}}}"#,
            "bad_filter",
            None,
        ),
        (
            r#"{"type":"ack","data":{"alert_id":"a-404"}}"#,
            "not_found",
            None,
        ),
    ];
    for (text, code, id) in cases {
        ws.send(Message::text(text)).unwrap();
        let err = expect_error(&mut ws, code);
        assert!(
            err["data"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if let Some(id) = id {
            assert_eq!(err["id"], id, "{text}");
        }
    }
    // A numeric id is echoed as a number.
    ws.send(Message::text(r#"{"type":"ping","id":42}"#))
        .unwrap();
    let pong = expect_message(&mut ws, "pong");
    assert_eq!(pong["id"], 42);
    // Nothing was subscribed by the refused messages.
    server.push(result("AAPL", Scan::NewHigh, EventKind::New));
    send(&mut ws, json!({"type": "ping", "id": "after"}));
    assert_eq!(expect_message(&mut ws, "pong")["id"], "after");
    assert_eq!(
        metric(
            server.addr,
            "scanstream_protocol_errors_total{code=\"bad_filter\"}"
        ),
        3.0
    );
}

#[test]
fn a_bad_filter_leaves_the_old_subscription_in_place() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    subscribe(
        &mut ws,
        json!({"subscription": "m", "filters": {"symbols": ["AAPL", "ZZMARK"]}}),
    );
    send(
        &mut ws,
        json!({"type": "subscribe", "data": {"subscription": "m", "filters": {"symbols": ["MSFT"], "x": 1}}}),
    );
    expect_error(&mut ws, "bad_filter");
    server.push(result("AAPL", Scan::NewHigh, EventKind::New));
    server.push(result("MSFT", Scan::NewHigh, EventKind::New));
    assert_eq!(symbols_until_marker(&server, &mut ws), ["AAPL"]);
}

#[test]
fn subscription_and_symbol_limits() {
    let server = TestServer::scripted_with(|c| {
        c.max_subscriptions = 2;
        c.max_filter_symbols = 3;
    });
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({"subscription": "a"}));
    subscribe(&mut ws, json!({"subscription": "b"}));
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "third", "data": {"subscription": "c"}}),
    );
    assert_eq!(expect_error(&mut ws, "limit_exceeded")["id"], "third");
    // Replacing an existing one is not a new subscription.
    subscribe(
        &mut ws,
        json!({"subscription": "b", "filters": {"symbols": ["A", "B", "C"]}}),
    );
    send(
        &mut ws,
        json!({"type": "subscribe", "id": 4, "data": {"subscription": "b", "filters": {"symbols": ["A", "B", "C", "D"]}}}),
    );
    assert_eq!(expect_error(&mut ws, "limit_exceeded")["id"], 4);
}

#[test]
fn snapshot_holds_exactly_the_open_opportunities_that_match() {
    let server = TestServer::scripted();
    let mut watcher = connect(&server);
    subscribe(&mut watcher, json!({}));
    server.push(result("AAPL", Scan::NewHigh, EventKind::New));
    server.push(result("MSFT", Scan::NewHigh, EventKind::New));
    server.push(result("TSLA", Scan::NewLow, EventKind::New));
    server.push(result("MSFT", Scan::NewHigh, EventKind::Clear));
    let mut update = result("AAPL", Scan::NewHigh, EventKind::Update);
    update.price = 123.5;
    server.push(update);
    let mut adhoc = result("NVDA", Scan::NewHigh, EventKind::New);
    adhoc.adhoc = true;
    server.push(adhoc);
    let mut last_seq = 0;
    for _ in 0..6 {
        last_seq = next_non_status(&mut watcher)["data"]["seq"]
            .as_u64()
            .unwrap();
    }

    let mut ws = connect(&server);
    let sub = subscribe(
        &mut ws,
        json!({"subscription": "s", "snapshot": true, "filters": {"scans": ["new_high"]}}),
    );
    assert_eq!(sub["seq"], last_seq);
    let snap = expect_message(&mut ws, "snapshot");
    assert_eq!(snap["data"]["subscription"], "s");
    assert_eq!(snap["data"]["seq"], last_seq);
    let rows = snap["data"]["results"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{snap}");
    assert_eq!(
        (rows[0]["symbol"].as_str(), rows[0]["event"].as_str()),
        (Some("AAPL"), Some("update"))
    );
    assert_eq!(rows[0]["price"], 123.5);
    expect_message(&mut ws, "status");

    // Live from seq + 1.
    server.push(result("AAPL", Scan::NewHigh, EventKind::Clear));
    let live = next_non_status(&mut ws);
    assert_eq!(live["data"]["seq"], last_seq + 1);
    assert_eq!(live["data"]["event"], "clear");
}

#[test]
fn scan_requests_are_queued_and_answered_with_adhoc_results() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({}));
    send(
        &mut ws,
        json!({"type": "scan", "id": "s1", "data": {"symbols": ["IBM"]}}),
    );
    let queued = next_non_status_or_queued(&mut ws);
    assert_eq!(queued["data"]["phase"], "queued");
    assert_eq!(queued["id"], "s1");
    let res = next_non_status(&mut ws);
    assert_eq!(
        (
            res["data"]["symbol"].as_str(),
            res["data"]["adhoc"].as_bool()
        ),
        (Some("IBM"), Some(true))
    );
}

/// The reply to a scan is a status; skip progress statuses without an id before it.
fn next_non_status_or_queued(ws: &mut Ws) -> Value {
    loop {
        let msg = next_message(ws);
        if msg["type"] != "status" || msg.get("id").is_some() {
            return msg;
        }
    }
}

on_two_edges!(
    every_filter_field_narrows_the_stream,
    unsubscribe_stops_delivery_and_unknown_names_are_not_found,
    results_carry_four_decimals_and_filters_judge_what_is_sent,
    a_result_arrives_once_naming_every_matching_subscription,
    resubscribing_with_the_same_name_replaces_its_filters,
    bad_messages_get_errors_and_the_connection_stays,
    a_bad_filter_leaves_the_old_subscription_in_place,
    subscription_and_symbol_limits,
    snapshot_holds_exactly_the_open_opportunities_that_match,
    scan_requests_are_queued_and_answered_with_adhoc_results,
);
