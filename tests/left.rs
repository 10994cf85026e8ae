//! Leaving a filter (PROTOCOL.md): an `update` that drops out of a subscription's value
//! filters names it in `left`, live and in a replay, so a table kept from the stream
//! equals a fresh snapshot with the same filters.

mod common;

use std::thread;
use std::time::Duration;

use common::tables::*;
use common::*;
use scanstream::client::{Event, SubscriptionOptions, TableHandle};
use scanstream::protocol::FilterSpec;
use scanstream::{EventKind, Scan, ScanResult};
use serde_json::{Value, json};

/// AAPL's volume spike at `score`, as `event`.
fn spike(event: EventKind, score: f64) -> ScanResult {
    let mut r = result("AAPL", Scan::VolumeSpike, event);
    r.score = score;
    r
}

/// The next `result` data, skipping everything else.
#[track_caller]
fn next_result(ws: &mut Ws) -> Value {
    loop {
        let msg = next_non_status(ws);
        if msg["type"] == "result" {
            return msg["data"].clone();
        }
    }
}

/// `(subscriptions, left)` of a result, `left` empty when absent.
fn lists(data: &Value) -> (Value, Value) {
    let left = data.get("left").cloned().unwrap_or(json!([]));
    (data["subscriptions"].clone(), left)
}

#[test]
fn an_update_below_min_score_names_the_subscription_in_left() {
    let server = TestServer::scripted();
    let mut ws = connect(&server);
    subscribe(
        &mut ws,
        json!({"subscription": "big", "filters": {"min_score": 2}}),
    );
    subscribe(&mut ws, json!({"subscription": "all"}));

    server.push(spike(EventKind::New, 3.0));
    let opened = next_result(&mut ws);
    assert_eq!(lists(&opened), (json!(["big", "all"]), json!([])));

    // Below the filter: `big` held the row and is told it left.
    server.push(spike(EventKind::Update, 1.5));
    let dropped = next_result(&mut ws);
    assert_eq!(
        (dropped["event"].clone(), dropped["score"].clone()),
        (json!("update"), json!(1.5))
    );
    assert_eq!(lists(&dropped), (json!(["all"]), json!(["big"])));

    // Still below: `big` has no row to remove, so it is not named again.
    server.push(spike(EventKind::Update, 1.2));
    assert_eq!(lists(&next_result(&mut ws)), (json!(["all"]), json!([])));

    // Back above: an update `big` has not seen, which a table inserts.
    server.push(spike(EventKind::Update, 2.5));
    assert_eq!(
        lists(&next_result(&mut ws)),
        (json!(["big", "all"]), json!([]))
    );

    // A connection with only the filtered subscription gets the leaving update alone.
    let mut only = connect(&server);
    subscribe(
        &mut only,
        json!({"subscription": "big", "filters": {"min_score": 2}, "snapshot": true}),
    );
    assert_eq!(
        expect_message(&mut only, "snapshot")["data"]["results"][0]["score"],
        2.5
    );
    server.push(spike(EventKind::Update, 0.5));
    let dropped = next_result(&mut only);
    assert_eq!(dropped["score"], 0.5);
    assert_eq!(lists(&dropped), (json!([]), json!(["big"])));
    assert!(snapshot_rows(&server, json!({"min_score": 2})).is_empty());
}

#[test]
fn a_replay_names_left_as_the_live_stream_did() {
    let server = TestServer::scripted();
    let mut live = connect(&server);
    let filtered = json!({"subscription": "big", "filters": {"min_score": 2}});
    let epoch = subscribe(&mut live, filtered.clone())["epoch"].clone();
    for (event, score) in [
        (EventKind::New, 3.0),
        (EventKind::Update, 1.5),
        (EventKind::Update, 2.5),
        (EventKind::Update, 1.0),
    ] {
        server.push(spike(event, score));
    }
    let delivered: Vec<Value> = (0..4).map(|_| next_result(&mut live)).collect();

    let mut resumed = connect(&server);
    let mut data = filtered;
    data["since"] = json!(0);
    data["epoch"] = epoch;
    assert_eq!(subscribe(&mut resumed, data)["replayed"], 4);
    let replayed: Vec<Value> = (0..4).map(|_| next_result(&mut resumed)).collect();
    assert_eq!(replayed, delivered);
    let left: Vec<u64> = replayed
        .iter()
        .filter(|r| r.get("left").is_some())
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(left, [2, 4]);
}

#[test]
fn the_client_table_drops_a_row_that_leaves_and_equals_a_fresh_snapshot() {
    let server = TestServer::scripted();
    let (client, events) = client(&server);
    let filters = FilterSpec {
        min_score: Some(2.0),
        ..FilterSpec::default()
    };
    let table = subscribe_table(&client, "big", filters);
    wait_for(&events, "the snapshot", |ev| {
        matches!(ev, Event::Snapshot { .. }).then_some(())
    });

    server.push(spike(EventKind::New, 3.0));
    server.push(spike(EventKind::Update, 1.5));
    let r = wait_for(&events, "the leaving update", |ev| match ev {
        Event::Result(r) if r.event == EventKind::Update => Some(r.clone()),
        _ => None,
    });
    assert_eq!(
        (r.subscriptions.len(), r.left.as_slice()),
        (0, &["big".to_owned()][..])
    );
    assert!(table.lock().is_empty(), "the row left the table");
    assert_eq!(
        rows_of(&table),
        snapshot_values(&server, json!({"min_score": 2}))
    );
}

/// A table kept from a live sim run with value filters is compared, every few seconds
/// with the scanner stopped, against a fresh snapshot with the same filters.
#[test]
fn filtered_tables_equal_fresh_snapshots_over_a_sim_run() {
    let server = TestServer::with(sim);
    let (client, events) = client(&server);
    // An unfiltered subscription sees every result, so its position says how far the
    // client has read.
    client
        .subscribe("all", FilterSpec::default(), SubscriptionOptions::default())
        .unwrap();
    let specs = [
        json!({"min_score": 1.0}),
        json!({"min_score": 2.0}),
        json!({"min_abs_change_pct": 2.0}),
        json!({"min_volume_ratio": 2.0}),
        json!({"min_price": 100.0, "scans": ["volume_spike", "price_change", "new_high"]}),
        json!({"max_price": 100.0, "min_score": 0.5}),
    ];
    let tables: Vec<(Value, TableHandle)> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let filters = serde_json::from_value(spec.clone()).unwrap();
            (
                spec.clone(),
                subscribe_table(&client, &format!("t{i}"), filters),
            )
        })
        .collect();
    let mut left = 0;
    for round in 0..6 {
        thread::sleep(Duration::from_secs(2));
        let head = stop_and_settle(&server);
        left += read_up_to(&events, head);
        for (i, (spec, table)) in tables.iter().enumerate() {
            let want = snapshot_values(&server, spec.clone());
            assert_eq!(rows_of(table), want, "round {round}, table t{i} {spec}");
        }
        http(server.addr, "POST", "/stream/start", None);
    }
    assert!(
        left > 0,
        "the run never made a row leave a filter: it tests nothing"
    );
}
