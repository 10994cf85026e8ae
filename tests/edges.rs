//! Edges on one producer over real sockets: an edge attached to a running producer gets
//! its cut (history tail, active set, alert history, status) and then every event after
//! it, so it answers snapshots, `GET /alerts` and resumes as the first edge does.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The newest `seq` an edge has, from its status.
fn head(server: &TestServer) -> u64 {
    let status = http(server.addr, "GET", "/stream/status", None).json();
    status["results_total"].as_u64().expect("results_total")
}

/// The results a resume from `since` replays on `server`, and the `subscribed` reply.
fn replay(server: &TestServer, since: u64, epoch: &str) -> (Value, Vec<Value>) {
    let mut ws = connect(server);
    let data = json!({"subscription": "r", "since": since, "epoch": epoch});
    let subscribed = subscribe(&mut ws, data);
    let mut results = Vec::new();
    loop {
        let msg = next_message(&mut ws);
        match msg["type"].as_str() {
            Some("result") => results.push(msg["data"].clone()),
            // PROTOCOL.md: the status follows the replay.
            Some("status") => return (subscribed, results),
            _ => {}
        }
    }
}

#[test]
fn a_late_edge_answers_snapshots_alerts_and_resumes_as_the_first_does() {
    let first = TestServer::with(|c| {
        sim(c);
        c.history_size = 100_000;
    });
    // Ten seconds of the sim: results, opportunities opening and closing, alerts.
    std::thread::sleep(Duration::from_secs(10));
    let at_attach = head(&first);
    assert!(at_attach > 0, "the sim published nothing");
    let late = first.attach_edge(1);
    // Commands from the late edge reach the one producer; both edges then settle on the
    // same newest result.
    assert_eq!(http(late.addr, "POST", "/stream/stop", None).status, 200);
    let mut last = (0, 1);
    eventually("both edges at the same, final seq", || {
        std::thread::sleep(Duration::from_millis(300));
        let now = (head(&first), head(&late));
        let settled = now.0 == now.1 && now == last;
        last = now;
        settled
    });
    let head = last.0;
    assert!(head >= at_attach);

    for filters in [
        json!({}),
        json!({"min_score": 1.5}),
        json!({"scans": ["rsi_overbought"]}),
    ] {
        let a = snapshot_rows(&first, filters.clone());
        let b = snapshot_rows(&late, filters.clone());
        assert_eq!(a, b, "snapshots with {filters}");
    }
    let open = snapshot_rows(&first, json!({}));
    assert!(!open.is_empty(), "no open opportunities to compare");

    let alerts = |s: &TestServer| http(s.addr, "GET", "/alerts?limit=1000", None).json();
    assert_eq!(alerts(&first), alerts(&late));
    assert!(
        !alerts(&first).as_array().is_none_or(Vec::is_empty),
        "no alerts to compare"
    );

    // A resume from before the attach replays the same results on either edge.
    let epoch = replay(&first, head, "")
        .0
        .get("epoch")
        .and_then(Value::as_str)
        .expect("epoch")
        .to_owned();
    let since = at_attach.saturating_sub(200);
    let (sub_a, from_a) = replay(&first, since, &epoch);
    let (sub_b, from_b) = replay(&late, since, &epoch);
    assert_eq!(sub_a, sub_b);
    assert_eq!(sub_a["recovered"], true, "{sub_a}");
    assert_eq!(from_a.len() as u64, head - since);
    assert_eq!(from_a, from_b);
    drop(late);
}
