//! The WebSocket protocol of PROTOCOL.md over real sockets: subscriptions and filters,
//! error replies, snapshots, close codes, framing edge cases and backpressure.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use scanstream::config::Dur;
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

#[test]
fn protocol_violations_close_with_their_codes() {
    let server = TestServer::scripted_with(|c| c.max_message_bytes = 1024);
    let cases: [(&str, Vec<u8>, u16); 5] = [
        (
            "unmasked frame",
            unmasked_frame(OP_TEXT, br#"{"type":"ping"}"#),
            1002,
        ),
        ("binary message", client_frame(OP_BINARY, b"\x00\x01"), 1003),
        ("invalid UTF-8", client_frame(OP_TEXT, b"\xff\xfe{}"), 1007),
        (
            "message over the limit",
            client_frame(OP_TEXT, &vec![b' '; 2000]),
            1009,
        ),
        ("reserved opcode", client_frame(0x3, b""), 1002),
    ];
    for (what, frame, code) in cases {
        let mut s = raw_ws(server.addr);
        s.write_all(&frame).unwrap();
        assert_eq!(raw_close_code(&mut s), code, "{what}");
        assert!(closed_by_server(&mut s), "{what}: socket left open");
    }
    assert_eq!(
        metric(
            server.addr,
            "scanstream_protocol_errors_total{code=\"1002\"}"
        ),
        2.0
    );
}

#[test]
fn a_frame_written_one_byte_at_a_time_is_understood() {
    let server = TestServer::scripted();
    let mut s = raw_ws(server.addr);
    s.set_nodelay(true).unwrap();
    for b in client_frame(OP_TEXT, br#"{"type":"ping","id":"slow"}"#) {
        s.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(raw_expect(&mut s, "pong")["id"], "slow");
}

#[test]
fn two_messages_in_one_write_get_two_replies_in_order() {
    let server = TestServer::scripted();
    let mut s = raw_ws(server.addr);
    let mut bytes = client_frame(OP_TEXT, br#"{"type":"ping","id":1}"#);
    bytes.extend(client_frame(OP_TEXT, br#"{"type":"ping","id":2}"#));
    s.write_all(&bytes).unwrap();
    assert_eq!(raw_expect(&mut s, "pong")["id"], 1);
    assert_eq!(raw_expect(&mut s, "pong")["id"], 2);
}

#[test]
fn frames_sent_with_the_handshake_are_not_lost() {
    let server = TestServer::scripted();
    let mut s = raw(server.addr);
    let mut bytes = UPGRADE.to_vec();
    bytes.extend(client_frame(OP_TEXT, br#"{"type":"ping","id":"early"}"#));
    s.write_all(&bytes).unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_response(&mut s, &mut pending).status, 101);
    // The pong may have come in the same read as the 101.
    while !String::from_utf8_lossy(&pending).contains(r#""id":"early""#) {
        let mut chunk = [0; 4096];
        let n = std::io::Read::read(&mut s, &mut chunk).unwrap();
        assert!(n > 0, "closed before the pong");
        pending.extend_from_slice(&chunk[..n]);
    }
    let (frame, _) = parse_frame(&pending).expect("a whole frame");
    assert_eq!(frame.json()["type"], "pong");
}

#[test]
fn client_pings_are_answered_and_close_is_echoed() {
    let server = TestServer::scripted();
    let mut s = raw_ws(server.addr);
    s.write_all(&client_frame(OP_PING, b"hi")).unwrap();
    assert_eq!(read_frame(&mut s), Frame::Pong(b"hi".to_vec()));
    s.write_all(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(raw_close_code(&mut s), 1000);
    assert!(closed_by_server(&mut s));
}

#[test]
fn server_pings_and_closes_a_silent_client() {
    let server = TestServer::scripted_with(|c| {
        c.ping_interval = Dur(Duration::from_millis(200));
        c.idle_timeout = Dur(Duration::from_millis(700));
        c.sweep_interval = Dur(Duration::from_millis(50));
    });
    let mut s = raw_ws(server.addr);
    let frame = read_frame(&mut s);
    assert!(
        matches!(frame, Frame::Ping(_)),
        "expected a ping, got {frame:?}"
    );
    // Never answering: closed with 1001 once idle.
    assert_eq!(raw_close_code(&mut s), 1001);
}

#[test]
fn answering_pings_keeps_a_client_open() {
    let server = TestServer::scripted_with(|c| {
        c.ping_interval = Dur(Duration::from_millis(100));
        c.idle_timeout = Dur(Duration::from_millis(400));
        c.sweep_interval = Dur(Duration::from_millis(20));
    });
    let mut ws = connect(&server);
    // tungstenite answers pings inside read(); reading for 1.2 s spans three idle timeouts.
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(1200);
    while std::time::Instant::now() < until {
        match ws.read() {
            Ok(Message::Close(c)) => panic!("closed: {c:?}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        let _ = ws.flush();
    }
    ws.get_mut().set_read_timeout(Some(TIMEOUT)).unwrap();
    send(&mut ws, json!({"type": "ping", "id": "alive"}));
    assert_eq!(expect_message(&mut ws, "pong")["id"], "alive");
}

#[test]
fn message_rate_limit_then_close_4029() {
    let server = TestServer::scripted_with(|c| {
        c.message_rate = 1;
        c.message_burst = 3;
    });
    let mut s = raw_ws(server.addr);
    let mut bytes = Vec::new();
    for i in 0..4 {
        bytes.extend(client_frame(
            OP_TEXT,
            format!(r#"{{"type":"ping","id":{i}}}"#).as_bytes(),
        ));
    }
    s.write_all(&bytes).unwrap();
    for i in 0..3 {
        assert_eq!(raw_expect(&mut s, "pong")["id"], i);
    }
    // The refusal names the request it refuses, so the client knows what to send again.
    let refused = raw_expect(&mut s, "error");
    assert_eq!(refused["data"]["code"], "rate_limited");
    assert_eq!(refused["id"], 3);
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.extend(client_frame(OP_TEXT, br#"{"type":"ping"}"#));
    }
    s.write_all(&flood).unwrap();
    assert_eq!(raw_close_code(&mut s), 4029);
}

#[test]
fn a_reader_that_stalls_is_closed_4008_while_another_gets_everything() {
    let server = TestServer::scripted_with(|c| {
        c.out_buffer_cap = 256 * 1024;
        c.close_timeout = Dur(Duration::from_secs(30));
    });
    let mut stalled = raw_ws(server.addr);
    stalled
        .write_all(&client_frame(OP_TEXT, br#"{"type":"subscribe"}"#))
        .unwrap();
    raw_skip_to(&mut stalled, "subscribed");
    let mut healthy = connect(&server);
    subscribe(&mut healthy, json!({}));
    // About 18 MB in all: more than loopback's socket buffers hold for the stalled reader.
    let total: u64 = 8000;
    let padding = "X".repeat(2000);
    let mut next_seq = None;
    let mut received = 0;
    let mut read_one = |healthy: &mut Ws| {
        let msg = next_non_status(healthy);
        let seq = msg["data"]["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{msg}"));
        assert_eq!(next_seq.unwrap_or(seq), seq, "gap or duplicate");
        next_seq = Some(seq + 1);
    };
    for i in 0..total {
        let mut r = result(
            &format!("S{}{padding}", i % 50),
            Scan::Firehose,
            EventKind::Update,
        );
        r.score = i as f64;
        server.push(r);
        // Keep the healthy reader close behind.
        while received + 5 < i {
            read_one(&mut healthy);
            received += 1;
        }
    }
    while received < total {
        read_one(&mut healthy);
        received += 1;
    }
    eventually("the slow consumer close", || {
        metric(server.addr, "scanstream_slow_consumer_closes_total") == 1.0
    });
    // Reading now: everything queued before the cut, then slow_consumer, then 4008.
    assert_eq!(
        raw_skip_to(&mut stalled, "error")["data"]["code"],
        "slow_consumer"
    );
    assert_eq!(raw_close_code(&mut stalled), 4008);
}

#[test]
fn pongs_to_a_client_that_never_reads_are_capped_with_4008() {
    let server = TestServer::scripted_with(|c| {
        c.out_buffer_cap = 64 * 1024;
        c.message_rate = 1_000_000;
    });
    let mut s = raw_ws(server.addr);
    let mut writer = s.try_clone().unwrap();
    let pinger = std::thread::spawn(move || {
        let ping = client_frame(OP_PING, &[b'p'; 125]);
        let batch: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 256)
            .collect();
        // At most 40 MB, far past loopback's buffers plus the cap; stops when cut off.
        for _ in 0..1200 {
            if writer.write_all(&batch).is_err() {
                return;
            }
        }
    });
    eventually("the slow consumer close", || {
        metric(server.addr, "scanstream_slow_consumer_closes_total") == 1.0
    });
    assert!(metric(server.addr, "scanstream_out_buffer_bytes") < 1024.0 * 1024.0);
    assert_eq!(raw_close_code(&mut s), 4008);
    drop(s);
    pinger.join().unwrap();
}

#[test]
fn a_burst_of_results_does_not_cut_off_a_reader_that_keeps_up() {
    let server = TestServer::scripted_with(|c| c.out_buffer_cap = 64 * 1024);
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({}));
    let n = 5000;
    for i in 0..n {
        server.push(result(
            &format!("B{}", i % 40),
            Scan::NewHigh,
            EventKind::Update,
        ));
    }
    for want in 1..=n {
        let msg = next_non_status(&mut ws);
        assert_eq!(msg["type"], "result", "{msg}");
        assert_eq!(msg["data"]["seq"], want);
    }
    assert_eq!(
        metric(server.addr, "scanstream_slow_consumer_closes_total"),
        0.0
    );
}

#[test]
fn a_result_is_not_sent_twice_while_another_subscription_replays() {
    // A small cap makes the replay take many turns, so live results arrive during it.
    let server = TestServer::scripted_with(|c| c.out_buffer_cap = 64 * 1024);
    let mut ws = connect(&server);
    let epoch = subscribe(&mut ws, json!({"subscription": "a"}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = 2000;
    for i in 0..before {
        server.push(result(
            &format!("R{}", i % 30),
            Scan::NewHigh,
            EventKind::Update,
        ));
    }
    for want in 1..=before {
        assert_eq!(next_non_status(&mut ws)["data"]["seq"], want);
    }
    send(
        &mut ws,
        json!({"type": "subscribe", "data": {"subscription": "b", "since": 0, "epoch": epoch}}),
    );
    let during = 50;
    for i in 0..during {
        server.push(result(&format!("L{i}"), Scan::NewHigh, EventKind::New));
    }
    assert_eq!(
        expect_message(&mut ws, "subscribed")["data"]["replayed"],
        before
    );
    for want in 1..=before + during {
        let msg = next_non_status(&mut ws);
        assert_eq!(msg["data"]["seq"], want, "{msg}");
        let subs = if want <= before {
            json!(["b"])
        } else {
            json!(["a", "b"])
        };
        assert_eq!(msg["data"]["subscriptions"], subs, "{msg}");
    }
}

#[test]
fn replacing_a_subscription_during_a_replay_keeps_its_held_back_results() {
    let server = TestServer::scripted_with(|c| c.out_buffer_cap = 64 * 1024);
    let mut ws = connect(&server);
    let epoch = subscribe(&mut ws, json!({"subscription": "l"}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    // About 11 MB: more than loopback's buffers take while the client does not read.
    let before = 5000;
    let padding = "X".repeat(2000);
    // In steps the reader keeps up with: a burst of 10 MB at a 64 KiB cap would race the
    // reader against the publisher, which is not what this test is about.
    for step in 0..20 {
        for i in step * 250..(step + 1) * 250 {
            let symbol = format!("R{}{padding}", i % 30);
            server.push(result(&symbol, Scan::NewHigh, EventKind::Update));
        }
        for want in step * 250 + 1..=(step + 1) * 250 {
            assert_eq!(next_non_status(&mut ws)["data"]["seq"], want);
        }
    }
    // Not reading from here on stalls the replay, so everything below happens during it.
    send(
        &mut ws,
        json!({"type": "subscribe", "data": {"subscription": "a", "since": 0, "epoch": epoch}}),
    );
    let during = 50;
    for i in 0..during {
        server.push(result(&format!("L{i}"), Scan::NewHigh, EventKind::New));
    }
    eventually("the results published", || {
        metric(server.addr, "scanstream_events_published_total") == (before + during) as f64
    });
    send(
        &mut ws,
        json!({"type": "subscribe", "data": {"subscription": "l"}}),
    );
    let mut replies = Vec::new();
    let mut want = 1;
    while want <= before + during {
        let msg = next_message(&mut ws);
        if msg["type"] != "result" {
            replies.push(msg["type"].as_str().unwrap().to_owned());
            continue;
        }
        assert_eq!(msg["data"]["seq"], want, "{msg}");
        let subs = if want <= before {
            json!(["a"])
        } else {
            json!(["a", "l"])
        };
        assert_eq!(msg["data"]["subscriptions"], subs, "{msg}");
        want += 1;
    }
    // The replacement's status came right after its reply, not after the replay.
    let pos = replies.iter().rposition(|r| r == "subscribed").unwrap();
    assert_eq!(
        replies.get(pos + 1).map(String::as_str),
        Some("status"),
        "{replies:?}"
    );
}

#[test]
fn replacing_the_only_subscription_does_not_count_a_second_subscriber() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    for _ in 0..3 {
        subscribe(&mut ws, json!({"subscription": "a"}));
        assert_eq!(expect_message(&mut ws, "status")["data"]["subscribers"], 1);
    }
}

/// xorshift64: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_frames_never_hurt_the_server() {
    let server = TestServer::scripted_with(|c| c.max_message_bytes = 4096);
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut s = raw_ws(server.addr);
        let mut bytes = Vec::new();
        for _ in 0..(noise.next() % 6) {
            let kind = noise.next() % 4;
            let len = (noise.next() % 300) as usize;
            match kind {
                // A well-formed frame with a random opcode and payload.
                0 => bytes.extend(client_frame((noise.next() % 16) as u8, &noise.bytes(len))),
                // A text frame holding random JSON-ish text.
                1 => {
                    let text: String = noise
                        .bytes(len)
                        .iter()
                        .map(|b| char::from(b' ' + b % 95))
                        .collect();
                    bytes.extend(client_frame(
                        OP_TEXT,
                        format!("{{\"type\":\"{text}\"}}").as_bytes(),
                    ));
                }
                // Raw noise.
                2 => bytes.extend(noise.bytes(len)),
                // A frame cut short.
                _ => {
                    let f = client_frame(OP_TEXT, &noise.bytes(len + 10));
                    bytes.extend_from_slice(&f[..f.len() / 2]);
                }
            }
        }
        let _ = s.write_all(&bytes);
        if round % 2 == 0 {
            // Half of them linger to read what the server says; the rest vanish.
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let _ = std::io::Read::read(&mut s, &mut [0; 4096]);
        }
    }
    assert_eq!(http(server.addr, "GET", "/healthz", None).status, 200);
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({}));
    server.push(result("AFTER", Scan::NewHigh, EventKind::New));
    assert_eq!(next_non_status(&mut ws)["data"]["symbol"], "AFTER");
}

#[test]
fn subscribes_in_one_write_count_the_connection_once() {
    let server = TestServer::scripted();
    let mut s = raw_ws(server.addr);
    let mut bytes = Vec::new();
    for name in ["a", "a", "b"] {
        let msg = format!(r#"{{"type":"subscribe","data":{{"subscription":"{name}"}}}}"#);
        bytes.extend(client_frame(OP_TEXT, msg.as_bytes()));
    }
    bytes.extend(client_frame(
        OP_TEXT,
        br#"{"type":"unsubscribe","data":{"subscription":"a"}}"#,
    ));
    bytes.extend(client_frame(
        OP_TEXT,
        br#"{"type":"unsubscribe","data":{"subscription":"b"}}"#,
    ));
    bytes.extend(client_frame(
        OP_TEXT,
        br#"{"type":"subscribe","data":{"subscription":"c"}}"#,
    ));
    s.write_all(&bytes).unwrap();
    let mut counts = Vec::new();
    while counts.len() < 4 {
        let v = read_frame(&mut s).json();
        if v["type"] == "status" {
            counts.push(v["data"]["subscribers"].as_u64().unwrap());
        }
    }
    assert_eq!(counts, [1, 1, 1, 1]);
}
