//! Resume with `since` and `epoch`: replay in order before live, nothing lost or
//! duplicated across disconnects, and `recovered: false` when it cannot be so.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use scanstream::{EventKind, Scan, SourceSpec};
use serde_json::{Value, json};

/// The next result's data.
#[track_caller]
fn next_result(ws: &mut Ws) -> Value {
    let msg = next_non_status(ws);
    assert_eq!(msg["type"], "result", "{msg}");
    msg["data"].clone()
}

fn seq(data: &Value) -> u64 {
    data["seq"].as_u64().unwrap()
}

fn push_n(server: &TestServer, n: usize) {
    for i in 0..n {
        server.push(result(
            &format!("S{}", i % 7),
            Scan::NewHigh,
            EventKind::Update,
        ));
    }
}

#[test]
fn replay_comes_in_order_before_live_results() {
    let server = TestServer::scripted();
    let mut watcher = connect(&server);
    let first = subscribe(&mut watcher, json!({}));
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    push_n(&server, 5);
    for want in 1..=5 {
        assert_eq!(seq(&next_result(&mut watcher)), want);
    }

    let mut ws = connect(&server);
    let sub = subscribe(
        &mut ws,
        json!({"subscription": "r", "since": 2, "epoch": epoch}),
    );
    assert_eq!(sub["recovered"], true);
    assert_eq!(sub["replayed"], 3);
    assert_eq!(sub["seq"], 5);
    assert_eq!(sub["epoch"], epoch.as_str());
    server.push(result("LIVE", Scan::NewHigh, EventKind::New));
    let got: Vec<u64> = (0..4).map(|_| seq(&next_result(&mut ws))).collect();
    assert_eq!(got, [3, 4, 5, 6]);
}

#[test]
fn replay_applies_the_subscription_filters() {
    let server = TestServer::scripted();
    let mut watcher = connect(&server);
    let epoch = subscribe(&mut watcher, json!({}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    push_n(&server, 14); // S0..S6 twice
    for _ in 0..14 {
        next_result(&mut watcher);
    }
    let mut ws = connect(&server);
    let sub = subscribe(
        &mut ws,
        json!({"since": 0, "epoch": epoch, "filters": {"symbols": ["s3"]}}),
    );
    assert_eq!(
        (sub["replayed"].as_u64(), sub["recovered"].as_bool()),
        (Some(2), Some(true))
    );
    let a = next_result(&mut ws);
    let b = next_result(&mut ws);
    assert_eq!((seq(&a), seq(&b)), (4, 11));
    assert_eq!(a["symbol"], "S3");
}

#[test]
fn history_too_short_or_another_epoch_is_not_recovered() {
    let server = TestServer::scripted_with(|c| c.history_size = 10);
    let mut watcher = connect(&server);
    let epoch = subscribe(&mut watcher, json!({}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    push_n(&server, 30);
    for _ in 0..30 {
        next_result(&mut watcher);
    }
    let cases = [
        (json!({"since": 5, "epoch": epoch}), false, 10, 21),
        (json!({"since": 19, "epoch": epoch}), false, 10, 21),
        (json!({"since": 20, "epoch": epoch}), true, 10, 21),
        (json!({"since": 25, "epoch": epoch}), true, 5, 26),
        (json!({"since": 25, "epoch": "not-this-run"}), false, 10, 21),
        (json!({"since": 99, "epoch": epoch}), false, 10, 21),
    ];
    for (data, recovered, replayed, first) in cases {
        let mut ws = connect(&server);
        let sub = subscribe(&mut ws, data.clone());
        assert_eq!(sub["recovered"], recovered, "{data}");
        assert_eq!(sub["replayed"], replayed, "{data}");
        assert_eq!(seq(&next_result(&mut ws)), first, "{data}");
    }
}

#[test]
fn a_replay_larger_than_the_out_buffer_cap_is_paced_not_cut() {
    let server = TestServer::scripted_with(|c| {
        c.out_buffer_cap = 32 * 1024;
        c.history_size = 20_000;
    });
    let epoch = subscribe(&mut connect(&server), json!({}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = 5000;
    push_n(&server, n);
    eventually("every result published", || {
        metric(server.addr, "scanstream_events_published_total") == n as f64
    });
    let mut ws = connect(&server);
    let sub = subscribe(&mut ws, json!({"since": 0, "epoch": epoch}));
    assert_eq!(sub["replayed"], n);
    for want in 1..=n as u64 {
        assert_eq!(seq(&next_result(&mut ws)), want);
    }
    assert_eq!(
        metric(server.addr, "scanstream_slow_consumer_closes_total"),
        0.0
    );
}

/// Reads results until one with `seq >= until`, appending their seqs.
fn read_until(ws: &mut Ws, until: u64, seqs: &mut Vec<u64>) {
    loop {
        let s = seq(&next_result(ws));
        seqs.push(s);
        if s >= until {
            return;
        }
    }
}

#[test]
fn resume_across_disconnects_matches_a_client_that_stayed() {
    let server = TestServer::with(|c| c.source = SourceSpec::Firehose { rate: 2000 });
    // Value bounds match `new` and `update`; every `clear` matches: a mix worth checking.
    let filters = json!({"scans": ["firehose"], "min_score": 5});
    let mut stayed = connect(&server);
    let epoch = subscribe(&mut stayed, json!({"filters": filters}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut resumer = connect(&server);
    subscribe(&mut resumer, json!({"filters": filters}));

    let mut got = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..8 {
        // Read a while, then vanish without a close frame and come back.
        let deadline = Instant::now() + Duration::from_millis(50 + rng % 150);
        while Instant::now() < deadline {
            got.push(seq(&next_result(&mut resumer)));
        }
        drop(resumer);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 120));
        resumer = connect(&server);
        let since = *got.last().unwrap();
        let sub = subscribe(
            &mut resumer,
            json!({"filters": filters, "since": since, "epoch": epoch}),
        );
        assert_eq!(sub["recovered"], true);
    }
    let last = *got.last().unwrap();
    read_until(&mut resumer, last + 200, &mut got);

    let mut reference = Vec::new();
    read_until(&mut stayed, *got.last().unwrap(), &mut reference);
    let first = got[0];
    reference.retain(|&s| s >= first);
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "duplicates delivered");
    assert_eq!(
        got, reference,
        "the resumed stream differs from the one that stayed"
    );
    assert!(
        got.len() > 100,
        "too few results to mean anything: {}",
        got.len()
    );
}

#[test]
fn resuming_from_another_epoch_on_a_full_ring_is_not_cut_off() {
    let server = TestServer::with(|c| {
        c.source = SourceSpec::Firehose { rate: 5000 };
        c.history_size = 200;
    });
    eventually("a full ring", || {
        metric(server.addr, "scanstream_history_results") == 200.0
    });
    for _ in 0..10 {
        let mut ws = connect(&server);
        let sub = subscribe(&mut ws, json!({"since": 12345, "epoch": "an-earlier-run"}));
        assert_eq!(sub["recovered"], false);
        let mut last = 0;
        for _ in 0..300 {
            let s = seq(&next_result(&mut ws));
            assert!(s > last, "out of order: {s} after {last}");
            last = s;
        }
    }
    assert_eq!(
        metric(server.addr, "scanstream_slow_consumer_closes_total"),
        0.0
    );
}

#[test]
fn a_slow_reader_after_an_unrecovered_resume_is_closed_not_skipped() {
    let server = TestServer::with(|c| {
        // A ring larger than loopback's buffers hold, so the replay itself stalls on the
        // slow reader and the ring overtakes it.
        c.source = SourceSpec::Firehose { rate: 20_000 };
        c.history_size = 50_000;
        c.out_buffer_cap = 64 * 1024;
        c.close_timeout = scanstream::config::Dur(Duration::from_secs(60));
    });
    eventually("a full ring", || {
        metric(server.addr, "scanstream_history_results") == 50_000.0
    });
    let mut ws = connect(&server);
    let sub = subscribe(&mut ws, json!({"since": 1, "epoch": "an-earlier-run"}));
    assert_eq!(sub["recovered"], false);
    let mut last = None;
    let mut cut = false;
    let mut read = 0u64;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "result" {
                    let s = seq(&v["data"]);
                    assert!(
                        last.is_none_or(|l| s == l + 1),
                        "skipped from {last:?} to {s}"
                    );
                    last = Some(s);
                }
                // At most 200 a second against 20,000, until the server gives up on us;
                // then read what it had queued, up to the close.
                read += 1;
                if !cut {
                    std::thread::sleep(Duration::from_millis(5));
                    cut = read % 50 == 0
                        && metric(server.addr, "scanstream_slow_consumer_closes_total") == 1.0;
                }
            }
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 4008);
                return;
            }
            Ok(_) => {}
            Err(e) => panic!("ended without 4008: {e}"),
        }
    }
}

on_two_edges!(
    replay_comes_in_order_before_live_results,
    replay_applies_the_subscription_filters,
    history_too_short_or_another_epoch_is_not_recovered,
    a_replay_larger_than_the_out_buffer_cap_is_paced_not_cut,
    resume_across_disconnects_matches_a_client_that_stayed,
    resuming_from_another_epoch_on_a_full_ring_is_not_cut_off,
    a_slow_reader_after_an_unrecovered_resume_is_closed_not_skipped,
);
