//! `scanstream client`, the program, against a real server: JSON lines, the readable
//! view, ad-hoc requests and acks, Ctrl-C, a closed stdout, and refused filters.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::{Binary, TIMEOUT, TestServer, eventually, metric, result, scanstream, wait_for};
use crossbeam_channel::Receiver;
use scanstream::{EventKind, Scan};
use serde_json::Value;

fn client(server: &TestServer, args: &[&str]) -> Binary {
    Binary::spawn(
        scanstream(&["client", "--url", &server.url()])
            .args(args)
            .stdout(Stdio::piped()),
    )
}

/// Reads `--json` lines until `want` accepts one.
fn json_until(rx: &Receiver<String>, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    wait_for(rx, what, |line| {
        let v: Value = serde_json::from_str(line).expect("every --json line is JSON");
        want(&v).then_some(v)
    })
}

#[test]
fn json_lines_carry_states_snapshot_results_and_replies() {
    let server = TestServer::scripted();
    server.push(result("AAPL", Scan::NewHigh, EventKind::New));
    thread::sleep(Duration::from_millis(100));
    let mut child = client(
        &server,
        &[
            "--json",
            "--symbols",
            "aapl",
            "--scan",
            "AAPL",
            "--ack",
            "a-9",
        ],
    );
    let rx = child.stdout_lines();
    json_until(&rx, "connected", |v| {
        v["type"] == "state" && v["data"]["state"] == "connected"
    });
    let snapshot = json_until(&rx, "snapshot", |v| v["type"] == "snapshot");
    assert_eq!(snapshot["data"]["results"][0]["symbol"], "AAPL");
    // The ad-hoc request is answered with its id, then runs.
    let queued = json_until(&rx, "queued", |v| v["type"] == "status" && v["id"].is_u64());
    assert_eq!(queued["data"]["phase"], "queued");
    // The scan and the ack both go to the producer, which answers in its own order.
    let (mut refused, mut adhoc) = (None, None);
    while refused.is_none() || adhoc.is_none() {
        let v = json_until(&rx, "ack answer and ad-hoc result", |v| {
            v["type"] == "error" || v["type"] == "result"
        });
        if v["type"] == "error" {
            refused = Some(v);
        } else {
            adhoc = Some(v);
        }
    }
    let (refused, adhoc) = (refused.unwrap_or_default(), adhoc.unwrap_or_default());
    assert_eq!(refused["data"]["code"], "not_found");
    assert_eq!(adhoc["data"]["adhoc"], true);
    assert!(
        adhoc["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // Filters hold: MSFT is not asked for, AAPL is.
    server.push(result("MSFT", Scan::PriceChange, EventKind::New));
    server.push(result("AAPL", Scan::PriceChange, EventKind::New));
    let live = json_until(&rx, "live result", |v| {
        v["type"] == "result" && v["data"]["adhoc"] == false
    });
    assert_eq!(live["data"]["symbol"], "AAPL");
    assert_eq!(
        live["data"]["subscriptions"],
        serde_json::json!(["default"])
    );

    child.interrupt();
    assert!(
        child.exit_within(TIMEOUT).success(),
        "Ctrl-C is a clean end"
    );
}

#[test]
fn the_readable_view_has_aligned_columns_and_no_colour_off_a_terminal() {
    let server = TestServer::scripted();
    let mut child = client(&server, &["--no-snapshot"]);
    let rx = child.stdout_lines();
    wait_for(&rx, "connected", |l| {
        l.contains("connected to").then_some(())
    });
    // Connected comes before the subscription stands; a result pushed between the two
    // would not be the client's to see.
    eventually("the client subscribed", || {
        metric(server.addr, "scanstream_subscribers") >= 1.0
    });
    server.push(result("TSLA", Scan::VolumeSpike, EventKind::New));
    server.push(result("NVDA", Scan::NewHigh, EventKind::Clear));
    let header = wait_for(&rx, "header", |l| {
        l.starts_with("time").then(|| l.to_owned())
    });
    let first = wait_for(&rx, "TSLA row", |l| {
        l.contains("TSLA").then(|| l.to_owned())
    });
    let second = wait_for(&rx, "NVDA row", |l| {
        l.contains("NVDA").then(|| l.to_owned())
    });
    for line in [&header, &first, &second] {
        assert!(!line.contains('\x1b'), "no colour into a pipe: {line:?}");
    }
    // Columns line up under the header.
    for col in ["symbol", "scan", "score"] {
        let at = header.find(col).unwrap();
        let first_at = match col {
            "symbol" => first.find("TSLA"),
            "scan" => first.find("volume_spike"),
            _ => first.find("1.00").map(|i| i + 4 - "score".len()),
        };
        assert_eq!(first_at, Some(at), "{col} in {first:?}");
    }
    assert!(second.contains("clear"));
    child.interrupt();
    assert!(child.exit_within(TIMEOUT).success());
}

#[test]
fn a_row_that_leaves_the_filters_is_shown_leaving() {
    let server = TestServer::scripted();
    let mut child = client(&server, &["--min-score", "2", "--no-snapshot"]);
    let rx = child.stdout_lines();
    eventually("the client subscribed", || {
        metric(server.addr, "scanstream_subscribers") >= 1.0
    });
    let mut r = result("TSLA", Scan::VolumeSpike, EventKind::New);
    r.score = 3.0;
    server.push(r.clone());
    r.event = EventKind::Update;
    r.score = 1.5;
    server.push(r);
    let opened = wait_for(&rx, "TSLA new", |l| {
        l.contains("TSLA").then(|| l.to_owned())
    });
    assert!(opened.contains("new"), "{opened:?}");
    let left = wait_for(&rx, "TSLA leaving", |l| {
        l.contains("TSLA").then(|| l.to_owned())
    });
    assert!(left.contains(" left ") && left.contains("1.50"), "{left:?}");
    child.interrupt();
    assert!(child.exit_within(TIMEOUT).success());
}

#[test]
fn a_closed_stdout_is_a_normal_end() {
    let server = TestServer::scripted();
    let mut child = client(&server, &["--json"]);
    let mut reader = BufReader::new(child.take_stdout());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("\"state\""));
    drop(reader);
    // Writing now fails with a broken pipe, which ends the client without an error.
    let deadline = Instant::now() + TIMEOUT;
    while child.is_running() && Instant::now() < deadline {
        server.push(result("IBM", Scan::PriceChange, EventKind::New));
        thread::sleep(Duration::from_millis(20));
    }
    let status = child.exit_within(Duration::from_secs(1));
    assert!(status.success(), "{status:?}");
}

#[test]
fn filters_the_server_would_refuse_are_refused_at_start() {
    let server = TestServer::scripted();
    let stderr = client(&server, &["--scans", "price_change,nope"]).expect_failure();
    assert!(stderr.contains("unknown scan `nope`"), "{stderr}");
}
