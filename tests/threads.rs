//! `--threads`: the edges of one process share the port. The kernel spreads connections
//! over them; every edge fans out every result; the status, the connection limit and
//! `/metrics` count the whole process; shutdown closes every edge's WebSockets.
//! (The other integration tests run against two edges as well, as `two_edges::*`.)

mod common;

use common::*;
use scanstream::{EventKind, Scan};
use serde_json::json;

/// Enough connections that all of them landing on one of two edges is out of the question
/// (the kernel hashes each connection's addresses and ports: 2 in 2^32).
const CLIENTS: usize = 32;

/// Open connections on each edge, from `/metrics` (the asking edge counts now, the other
/// as of its last sweep).
fn per_edge(server: &TestServer) -> Vec<f64> {
    let text = String::from_utf8(http(server.addr, "GET", "/metrics", None).body).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("scanstream_edge_connections_open{edge=\""))
        .map(|rest| rest.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

/// `CLIENTS` WebSockets, each subscribed to everything.
fn subscribers(server: &TestServer) -> Vec<Ws> {
    (0..CLIENTS)
        .map(|_| {
            let mut ws = connect(server);
            subscribe(&mut ws, json!({}));
            ws
        })
        .collect()
}

#[test]
fn connections_land_on_both_edges_and_each_edge_fans_out_every_result() {
    let server = TestServer::scripted_with(|c| c.threads = 2);
    let mut clients = subscribers(&server);
    // Both edges hold connections, and together all of them (and the asking one).
    let mut spread = Vec::new();
    eventually("both edges to count their connections", || {
        spread = per_edge(&server);
        spread.iter().sum::<f64>() == (CLIENTS + 1) as f64
    });
    assert_eq!(spread.len(), 2, "{spread:?}");
    assert!(
        spread.iter().all(|&n| n >= 1.0),
        "one edge took all: {spread:?}"
    );

    // The status and the metrics count subscribers over the process.
    let status = http(server.addr, "GET", "/stream/status", None).json();
    assert_eq!(status["subscribers"], CLIENTS, "{status}");
    assert_eq!(
        metric(server.addr, "scanstream_subscribers"),
        CLIENTS as f64
    );

    // One result reaches every client, whichever edge serves it.
    server.push(result("AAPL", Scan::VolumeSpike, EventKind::New));
    for ws in &mut clients {
        let msg = expect_message(ws, "result");
        assert_eq!(msg["data"]["symbol"], "AAPL", "{msg}");
        assert_eq!(msg["data"]["seq"], 1, "{msg}");
    }
    // Each edge received the one result; the deliveries add up over both.
    assert_eq!(
        metric(server.addr, "scanstream_events_published_total"),
        1.0
    );
    assert_eq!(
        metric(server.addr, "scanstream_deliveries_total"),
        CLIENTS as f64
    );
    assert_eq!(
        metric(server.addr, "scanstream_websocket_upgrades_total"),
        CLIENTS as f64
    );
}

#[test]
fn shutdown_closes_every_edges_websockets_with_1001() {
    let server = TestServer::scripted_with(|c| c.threads = 2);
    let mut clients = subscribers(&server);
    eventually("both edges to hold connections", || {
        per_edge(&server).iter().filter(|&&n| n >= 1.0).count() == 2
    });
    let stopper = std::thread::spawn(move || server.stop());
    for ws in &mut clients {
        assert_closed_with(ws, 1001);
    }
    assert!(stopper.join().unwrap().is_ok(), "run ended with an error");
}

#[test]
fn threads_0_runs_one_edge_per_core() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let server = BinaryServer::start(&["--source", "firehose:0", "--threads", "0"]);
    let line = server.wait_for_log("listening");
    assert!(line.contains(&format!(" edges={cores} ")), "{line}");
    let text = String::from_utf8(http(server.addr, "GET", "/metrics", None).body).unwrap();
    let edges = text
        .lines()
        .filter(|l| l.starts_with("scanstream_edge_connections_open{"))
        .count();
    assert_eq!(edges, cores, "{text}");
}
