//! The scanner end to end: sim, csv and jsonl sources through a real server to real
//! WebSocket and HTTP clients; ad-hoc requests; stop and start.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use scanstream::SourceSpec;
use scanstream::scanner::ticker;
use serde_json::{Value, json};

/// The next `result` message, skipping everything else.
fn next_result(ws: &mut Ws) -> Value {
    loop {
        let msg = next_message(ws);
        if msg["type"] == "result" {
            return msg;
        }
    }
}

/// Every result until `done` says stop, checking `seq` runs on by one.
fn results_until(ws: &mut Ws, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    while !done(&all) {
        let data = next_result(ws)["data"].clone();
        if let Some(last) = all.last() {
            assert_eq!(
                data["seq"],
                last["seq"].as_u64().unwrap() + 1,
                "contiguous seq"
            );
        }
        all.push(data);
    }
    all
}

#[test]
fn the_sim_streams_opportunities_within_seconds() {
    let server = TestServer::with(sim);
    let mut ws = connect(&server);
    let sub = subscribe(&mut ws, json!({"snapshot": true}));
    assert_eq!(sub["recovered"], true);
    let start = Instant::now();
    let results = results_until(&mut ws, |all| {
        all.iter()
            .map(|r| r["scan"].as_str().unwrap())
            .collect::<BTreeSet<_>>()
            .len()
            >= 4
    });
    assert!(start.elapsed() < TIMEOUT);
    let scans = [
        "price_change",
        "volume_spike",
        "rsi_overbought",
        "rsi_oversold",
        "new_high",
        "new_low",
        "sma_cross_up",
        "sma_cross_down",
    ];
    for r in &results {
        assert!(scans.contains(&r["scan"].as_str().unwrap()), "{r}");
        assert!(
            ["new", "update", "clear"].contains(&r["event"].as_str().unwrap()),
            "{r}"
        );
        let symbol = r["symbol"].as_str().unwrap();
        assert!(
            symbol.len() >= 3 && symbol.bytes().all(|b| b.is_ascii_uppercase()),
            "{r}"
        );
        assert!(r["price"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["source_ts"].is_string(),
            "sim results carry the tick's time: {r}"
        );
        assert_eq!(r["adhoc"], false);
        if r["event"] != "clear" {
            assert!(
                r["score"].as_f64().unwrap() >= 1.0,
                "a firing scan scores 1 or more: {r}"
            );
        }
    }
    // The status says what the scanner does: cycles over the 50 symbols (statuses come
    // at the progress interval, so the first may follow the first results).
    eventually("a status after a whole cycle", || {
        let status = http(server.addr, "GET", "/stream/status", None).json();
        status["total"] == 50 && status["cycle"].as_u64().unwrap() >= 1
    });
    assert!(metric(server.addr, "scanstream_scanner_updates_total") > 0.0);
    assert!(metric(server.addr, "scanstream_scanner_cycles_total") >= 1.0);
}

#[test]
fn a_snapshot_plus_events_keeps_an_exact_table() {
    let server = TestServer::with(sim);
    // Let the first cycles open some conditions.
    eventually("results", || {
        http(server.addr, "GET", "/stream/status", None).json()["results_total"].as_u64() > Some(20)
    });
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({"snapshot": true}));
    let snapshot = expect_message(&mut ws, "snapshot")["data"].clone();
    let mut table: HashMap<(String, String), Value> = HashMap::new();
    for r in snapshot["results"].as_array().unwrap() {
        let key = (
            r["symbol"].as_str().unwrap().to_owned(),
            r["scan"].as_str().unwrap().to_owned(),
        );
        assert!(
            table.insert(key, r.clone()).is_none(),
            "one row per symbol and scan"
        );
    }
    assert!(
        !table.is_empty(),
        "the sim has open opportunities after a few cycles"
    );
    // Every event applies cleanly to the table: no update or clear for an unknown row,
    // no new for a row already there.
    for r in results_until(&mut ws, |all| all.len() >= 150) {
        let key = (
            r["symbol"].as_str().unwrap().to_owned(),
            r["scan"].as_str().unwrap().to_owned(),
        );
        match r["event"].as_str().unwrap() {
            "new" => assert!(
                table.insert(key, r.clone()).is_none(),
                "new for an open row: {r}"
            ),
            "update" => assert!(
                table.insert(key, r.clone()).is_some(),
                "update for no row: {r}"
            ),
            _ => assert!(table.remove(&key).is_some(), "clear for no row: {r}"),
        }
    }
}

#[test]
fn an_adhoc_scan_is_queued_answered_and_reported_to_its_requester() {
    let server = TestServer::with(sim);
    eventually("open opportunities", || {
        metric(server.addr, "scanstream_active_opportunities") >= 5.0
    });
    let mut ws = connect(&server);
    // Symbols with conditions open now, from the snapshot: a scan of them finds some.
    subscribe(&mut ws, json!({"snapshot": true}));
    let snapshot = expect_message(&mut ws, "snapshot")["data"]["results"].clone();
    let symbols: BTreeSet<String> = snapshot
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["symbol"].as_str().unwrap().to_lowercase())
        .collect();
    let symbols: Vec<String> = symbols.into_iter().take(5).collect();
    send(
        &mut ws,
        json!({"type": "scan", "id": "s1", "data": {"symbols": symbols}}),
    );
    let mut adhoc = Vec::new();
    let mut queued = false;
    let done = loop {
        let msg = next_message(&mut ws);
        match (msg["type"].as_str().unwrap(), msg.get("id")) {
            ("status", Some(id)) if msg["data"]["phase"] == "queued" => {
                assert_eq!(id, "s1");
                assert!(!queued && adhoc.is_empty(), "queued comes first");
                queued = true;
            }
            ("status", Some(id)) => {
                assert_eq!(id, "s1");
                break msg["data"].clone();
            }
            ("result", _) if msg["data"]["adhoc"] == true => adhoc.push(msg["data"].clone()),
            _ => {}
        }
    };
    assert!(queued);
    assert!(
        !adhoc.is_empty(),
        "open conditions fire on an ad-hoc scan too"
    );
    assert_eq!(done["phase"], "adhoc");
    assert_eq!(done["symbols"], 5);
    assert_eq!(done["results"].as_u64().unwrap() as usize, adhoc.len());
    let asked: BTreeSet<String> = symbols.iter().map(|s| s.to_uppercase()).collect();
    for r in &adhoc {
        assert!(asked.contains(r["symbol"].as_str().unwrap()), "{r}");
        assert_eq!(r["event"], "new");
    }
}

#[test]
fn unknown_symbols_are_refused_by_name_and_nothing_is_queued() {
    let server = TestServer::with(sim);
    let mut ws = connect(&server);
    send(
        &mut ws,
        json!({"type": "scan", "id": 7, "data": {"symbols": ["AAA", "NOPE1", "nope2"]}}),
    );
    let err = expect_error(&mut ws, "not_found");
    assert_eq!(err["id"], 7);
    let msg = err["data"]["message"].as_str().unwrap();
    assert!(
        msg.contains("NOPE1") && msg.contains("NOPE2") && !msg.contains("AAA"),
        "{msg}"
    );
    let resp = http(
        server.addr,
        "POST",
        "/scan",
        Some(r#"{"symbols":["ZZZZZZ"]}"#),
    );
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["code"], "not_found");
    assert!(resp.json()["message"].as_str().unwrap().contains("ZZZZZZ"));
    assert_eq!(metric(server.addr, "scanstream_adhoc_queue_symbols"), 0.0);
}

#[test]
fn the_queue_is_bounded_in_symbols() {
    let server = TestServer::with(|c| {
        sim(c);
        c.adhoc_queue = 3;
    });
    let four: Vec<String> = (0..4).map(ticker).collect();
    let body = |n: usize| json!({"symbols": four[..n]}).to_string();
    let resp = http(server.addr, "POST", "/scan", Some(&body(4)));
    // Four symbols never fit in a queue of three, whatever is waiting: not a retry.
    assert_eq!(resp.status, 400, "{:?}", resp.json());
    assert_eq!(resp.json()["code"], "limit_exceeded");
    let mut ws = connect(&server);
    send(
        &mut ws,
        json!({"type": "scan", "id": "big", "data": {"symbols": four}}),
    );
    assert_eq!(expect_error(&mut ws, "limit_exceeded")["id"], "big");
    let ok = http(server.addr, "POST", "/scan", Some(&body(3)));
    assert_eq!(ok.status, 202);
    assert_eq!(ok.json(), json!({"queued": 3}));
    // Served: the queue is empty again, so another request of three fits.
    eventually("the queue to drain", || {
        metric(server.addr, "scanstream_adhoc_queue_symbols") == 0.0
    });
    for _ in 0..5 {
        let again = http(server.addr, "POST", "/scan", Some(&body(3)));
        assert_eq!(again.status, 202);
        eventually("the queue to drain", || {
            metric(server.addr, "scanstream_adhoc_queue_symbols") == 0.0
        });
    }
}

#[test]
fn stop_halts_results_and_start_resumes_them() {
    let server = TestServer::with(sim);
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({}));
    next_result(&mut ws);
    assert_eq!(
        http(server.addr, "POST", "/stream/stop", None).json()["state"],
        "stopped"
    );
    // Connections stay and are told: a status saying stopped.
    loop {
        let msg = next_message(&mut ws);
        if msg["type"] == "status" && msg["data"]["state"] == "stopped" {
            break;
        }
    }
    let stopped_at =
        http(server.addr, "GET", "/stream/status", None).json()["results_total"].clone();
    // Several cycles' worth of time: nothing more comes.
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(1200)))
        .unwrap();
    let mut late = Vec::new();
    while let Ok(msg) = ws.read() {
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "result" {
                late.push(v);
            }
        }
    }
    assert!(late.is_empty(), "results while stopped: {late:?}");
    assert_eq!(
        http(server.addr, "GET", "/stream/status", None).json()["results_total"],
        stopped_at
    );
    ws.get_mut().set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(
        http(server.addr, "POST", "/stream/start", None).json()["state"],
        "running"
    );
    let next = next_result(&mut ws);
    assert_eq!(next["data"]["seq"], stopped_at.as_u64().unwrap() + 1);
}

/// Daily bars for one symbol: flat for 30 days, a 12-day climb, then a 6% drop.
fn climb_then_drop() -> String {
    let mut text = String::from("Date,Open,High,Low,Close,Adj Close,Volume\n");
    let mut close = 100.0f64;
    for day in 0..43 {
        let date = format!("2024-{:02}-{:02}", 1 + day / 28, 1 + day % 28);
        let open = close;
        close = match day {
            0..30 => 100.0,
            30..42 => close * 1.01,
            _ => close * 0.94,
        };
        let (high, low) = (open.max(close) + 0.1, open.min(close) - 0.1);
        text += &format!("{date},{open:.2},{high:.2},{low:.2},{close:.2},{close:.2},1000000\n");
    }
    text
}

#[test]
fn a_csv_replay_at_full_speed_finds_what_the_bars_show() {
    let dir = TempDir::new();
    std::fs::write(dir.join("acme.csv"), climb_then_drop()).unwrap();
    // A second symbol, and a bad row that is skipped and counted.
    std::fs::write(
        dir.join("flat.csv"),
        "Date,Open,High,Low,Close,Volume\n2024-01-01,5,5,5,5,100\n2024-01-02,5,5,oops,5,100\n",
    )
    .unwrap();
    let server = TestServer::with(|c| {
        c.source = SourceSpec::Csv {
            path: dir.path().to_owned(),
        };
        c.replay_speed = "max".parse().unwrap();
        c.sma_fast = 5;
        c.sma_slow = 20;
    });
    let mut ws = connect(&server);
    // Everything since the start, from history: the replay may be over already.
    let sub = subscribe(
        &mut ws,
        json!({"since": 0, "filters": {"symbols": ["ACME"]}}),
    );
    assert_eq!(sub["recovered"], true);
    let mut events = Vec::new();
    let has = |events: &[(String, String)], scan: &str, event: &str| {
        events.iter().any(|(s, e)| s == scan && e == event)
    };
    while !(has(&events, "price_change", "new") && has(&events, "new_high", "clear")) {
        let r = next_result(&mut ws)["data"].clone();
        assert_eq!(r["symbol"], "ACME");
        let pair = (
            r["scan"].as_str().unwrap().to_owned(),
            r["event"].as_str().unwrap().to_owned(),
        );
        if pair.0 == "price_change" {
            // Only the drop moves 3% from a previous close.
            assert!(
                (r["change_pct"].as_f64().unwrap() + 6.0).abs() < 0.01,
                "{r}"
            );
        }
        events.push(pair);
    }
    let has = |scan: &str, event: &str| has(&events, scan, event);
    // The climb: new highs, overbought RSI, the fast SMA crossing up.
    assert!(has("new_high", "new"), "{events:?}");
    assert!(has("rsi_overbought", "new"), "{events:?}");
    assert!(has("sma_cross_up", "new"), "{events:?}");
    eventually("the bad row counted", || {
        metric(server.addr, "scanstream_bad_input_total") == 1.0
    });
    assert_eq!(
        http(server.addr, "GET", "/stream/status", None).json()["total"],
        2
    );
}

#[test]
fn a_jsonl_file_is_followed_as_it_grows_and_bad_lines_are_counted() {
    let dir = TempDir::new();
    let path = dir.join("ticks.jsonl");
    let tick = |symbol: &str, price: f64| {
        format!("{{\"symbol\":\"{symbol}\",\"price\":{price},\"volume\":100}}\n")
    };
    let mut text = tick("ACME", 100.0) + "{\"symbol\":\"ACME\"}\nnot json\n";
    text += &tick("ACME", 100.5);
    std::fs::write(&path, &text).unwrap();
    let server = TestServer::with(|c| {
        c.source = SourceSpec::Jsonl { path: path.clone() };
        c.scan_interval.0 = Duration::from_millis(100);
        c.min_scan_interval.0 = Duration::from_millis(100);
    });
    let mut ws = connect(&server);
    subscribe(&mut ws, json!({"filters": {"scans": ["price_change"]}}));
    eventually("two bad lines counted", || {
        metric(server.addr, "scanstream_bad_input_total") == 2.0
    });
    eventually("ACME known", || {
        http(server.addr, "GET", "/stream/status", None).json()["total"] == 1
    });
    // The feed goes on: ACME jumps 5% above its session open.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(tick("ACME", 105.0).as_bytes()).unwrap();
    let r = next_result(&mut ws)["data"].clone();
    assert_eq!(
        (
            r["symbol"].as_str(),
            r["scan"].as_str(),
            r["event"].as_str()
        ),
        (Some("ACME"), Some("price_change"), Some("new"))
    );
    assert!(
        (r["change_pct"].as_f64().unwrap() - 5.0).abs() < 1e-9,
        "{r}"
    );
    // Derived values go out with four decimals.
    assert_eq!(r["score"].as_f64(), Some(1.6667), "{r}");
    // And back: the condition clears.
    f.write_all(tick("ACME", 100.2).as_bytes()).unwrap();
    let r = next_result(&mut ws)["data"].clone();
    assert_eq!(
        (r["scan"].as_str(), r["event"].as_str()),
        (Some("price_change"), Some("clear"))
    );
}

#[test]
fn the_binary_reads_jsonl_from_stdin() {
    let mut server = BinaryServer::start_with(
        &[
            "--source",
            "jsonl:-",
            "--scan-interval",
            "100ms",
            "--min-scan-interval",
            "100ms",
        ],
        |c| {
            c.stdin(Stdio::piped());
        },
    );
    let addr = server.addr;
    let stdin = server.stdin();
    stdin
        .write_all(b"{\"symbol\":\"ACME\",\"price\":10,\"volume\":5}\n")
        .unwrap();
    stdin
        .write_all(b"{\"symbol\":\"ACME\",\"price\":-1,\"volume\":5}\n")
        .unwrap();
    stdin.flush().unwrap();
    eventually("ACME known", || {
        let r = http(addr, "POST", "/scan", Some(r#"{"symbols":["acme"]}"#));
        r.status == 202
    });
    eventually("the bad line counted", || {
        metric(addr, "scanstream_bad_input_total") == 1.0
    });
    stdin
        .write_all(b"{\"symbol\":\"ACME\",\"price\":11,\"volume\":5}\n")
        .unwrap();
    stdin.flush().unwrap();
    eventually("the 10% move found", || {
        metric(addr, "scanstream_events_published_total") >= 1.0
    });
    // Closing stdin ends the feed, not the server.
    server.close_stdin();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(http(addr, "GET", "/healthz", None).status, 200);
    server.terminate();
    assert!(server.exit_within(TIMEOUT).success());
}

#[test]
fn a_replaying_requester_hears_that_its_scan_is_done_after_its_results() {
    let server = TestServer::scripted();
    for i in 0..20_000 {
        let symbol = KNOWN[i % KNOWN.len()];
        server.push(result(
            symbol,
            scanstream::Scan::NewHigh,
            scanstream::EventKind::New,
        ));
    }
    eventually("the history to fill", || {
        http(server.addr, "GET", "/stream/status", None).json()["results_total"] == 20_000
    });
    let mut ws = connect(&server);
    // A long replay, and an ad-hoc request right behind the subscribe.
    send(&mut ws, json!({"type": "subscribe", "data": {"since": 0}}));
    send(
        &mut ws,
        json!({"type": "scan", "id": "q", "data": {"symbols": ["IBM"]}}),
    );
    let mut last_seq = 0;
    let mut adhoc_seen = false;
    loop {
        let msg = next_message(&mut ws);
        match msg["type"].as_str().unwrap() {
            "result" => {
                let seq = msg["data"]["seq"].as_u64().unwrap();
                assert_eq!(seq, last_seq + 1, "in order, none skipped");
                last_seq = seq;
                adhoc_seen |= msg["data"]["adhoc"] == true;
            }
            "status" if msg["id"] == "q" && msg["data"]["phase"] == "adhoc" => break,
            _ => {}
        }
    }
    assert!(adhoc_seen, "the done status came before the ad-hoc result");
    assert_eq!(last_seq, 20_001);
}
