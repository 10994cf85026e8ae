//! Producer and edges as separate programs over a real redis-server: an edge serves what
//! the producer publishes and sends its commands back; a producer killed and started
//! again, or a standby taking over, goes on with the same epoch and the next `seq`, so a
//! client loses nothing and sees no open condition opened twice; Redis restarting loses
//! nothing; edges say when the bus or the producer is away; a client moved between edges
//! resumes on each without loss.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::alerts::ack_msg;
use common::client::{Collected, assert_contiguous, client_config, collect, start_client};
use common::proxy::Proxy;
use common::redis_server::Redis;
use common::*;
use scanstream::client::SubscriptionOptions;
use scanstream::protocol::FilterSpec;
use serde_json::{Value, json};

/// A small, fast simulated market on `redis`'s bus, in role `role`.
fn flags(redis: &Redis, role: &str) -> Vec<String> {
    [
        "--bus",
        &redis.url(),
        "--role",
        role,
        "--source",
        "sim",
        "--sim-symbols",
        "50",
        "--scan-interval",
        "200ms",
        "--min-scan-interval",
        "200ms",
        "--progress-interval",
        "50ms",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn start(redis: &Redis, role: &str) -> BinaryServer {
    let flags = flags(redis, role);
    BinaryServer::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A producer started while another holds the lease: it waits, so it is not listening.
fn spawn_standby(redis: &Redis) -> Binary {
    let mut command = scanstream(&SERVER_ARGS);
    command.args(flags(redis, "producer"));
    Binary::spawn(&mut command)
}

fn status(addr: SocketAddr) -> Value {
    http(addr, "GET", "/stream/status", None).json()
}

/// Stops the producer through `via` and waits until every server in `all` shows the
/// same final `seq`; returns it.
fn stop_and_settle(via: SocketAddr, all: &[SocketAddr]) -> u64 {
    assert_eq!(http(via, "POST", "/stream/stop", None).status, 200);
    let mut last = Vec::new();
    let mut settled = 0;
    eventually("every server at the same, final seq", || {
        std::thread::sleep(Duration::from_millis(300));
        let now: Vec<u64> = all
            .iter()
            .map(|a| status(*a)["results_total"].as_u64().unwrap())
            .collect();
        let same = now.windows(2).all(|w| w[0] == w[1]) && now == last && now[0] > 0;
        last = now;
        settled = last[0];
        same
    });
    settled
}

/// Reads results into `results` until one has `seq` `last`.
fn read_until(ws: &mut Ws, results: &mut Vec<Value>, last: u64) {
    while results.last().map_or(0, |r| r["seq"].as_u64().unwrap()) < last {
        results.push(next_result(ws));
    }
}

/// Each result's `seq` follows the one before it.
#[track_caller]
fn assert_consecutive(results: &[Value]) {
    for pair in results.windows(2) {
        assert_eq!(
            pair[1]["seq"],
            pair[0]["seq"].as_u64().unwrap() + 1,
            "a gap or a repeat"
        );
    }
}

/// The next `result` data on `ws`, skipping everything else.
fn next_result(ws: &mut Ws) -> Value {
    loop {
        let msg = next_message(ws);
        if msg["type"] == "result" {
            return msg["data"].clone();
        }
    }
}

#[test]
fn an_edge_process_serves_what_the_producer_publishes_and_takes_its_commands() {
    let redis = Redis::start();
    let producer = start(&redis, "producer");
    let edge = start(&redis, "edge");

    // Live results on the edge, in the producer's epoch, one after another.
    let mut ws = connect_url(&edge.url(), edge.addr);
    let on_edge = subscribe(&mut ws, json!({}));
    let mut direct = connect_url(&producer.url(), producer.addr);
    let on_producer = subscribe(&mut direct, json!({}));
    assert_eq!(on_edge["epoch"], on_producer["epoch"]);
    let first = next_result(&mut ws)["seq"].as_u64().unwrap();
    for n in 1..20 {
        assert_eq!(next_result(&mut ws)["seq"], first + n);
    }

    // Start and stop from the edge reach the producer; then both hold the same state.
    let head = stop_and_settle(edge.addr, &[producer.addr, edge.addr]);
    assert!(head >= first + 19);
    assert_eq!(status(producer.addr)["state"], "stopped");
    for filters in [json!({}), json!({"min_score": 1.5})] {
        assert_eq!(
            snapshot_rows_at(producer.addr, filters.clone()),
            snapshot_rows_at(edge.addr, filters.clone()),
            "snapshots with {filters}"
        );
    }
    let alerts = |addr| http(addr, "GET", "/alerts?limit=1000", None).json();
    let listed = alerts(edge.addr);
    assert_eq!(listed, alerts(producer.addr));
    let alert_id = listed[0]["alert_id"].as_str().expect("an alert").to_owned();

    // An acknowledgment from the edge's client is answered to that client, by its id.
    let mut acker = connect_url(&edge.url(), edge.addr);
    send(&mut acker, ack_msg("k1", &alert_id));
    let reply = next_message(&mut acker);
    assert_eq!(
        (reply["type"].as_str(), reply["id"].as_str()),
        (Some("acked"), Some("k1"))
    );
    assert_eq!(reply["data"]["alert_id"], alert_id.as_str());
    assert_eq!(reply["data"]["acknowledged"], true);
    eventually("the acknowledgment on the producer too", || {
        alerts(producer.addr)[0]["acknowledged"] == true
    });

    // An ad-hoc scan from the edge: queued, its results, then done, all carrying its id.
    let symbol = listed[0]["symbol"].as_str().unwrap().to_owned();
    send(
        &mut acker,
        json!({"type": "scan", "id": "s1", "data": {"symbols": [symbol]}}),
    );
    let queued = next_message(&mut acker);
    assert_eq!(
        (queued["id"].as_str(), queued["data"]["phase"].as_str()),
        (Some("s1"), Some("queued")),
        "{queued}"
    );
    let done = next_message(&mut acker);
    assert_eq!(
        (done["id"].as_str(), done["data"]["phase"].as_str()),
        (Some("s1"), Some("adhoc")),
        "{done}"
    );
    assert_eq!(done["data"]["symbols"], 1, "{done}");
}

/// What a client of `edge` sees across a producer's end and another's start: every
/// `seq` once and in order, in one epoch, and no `new` for a condition that was open
/// when the first producer died. `replace` kills the first producer and returns the one
/// that goes on.
fn survives_a_producer_change(replace: impl FnOnce(&Redis, BinaryServer) -> BinaryServer) {
    let redis = Redis::start();
    let first = start(&redis, "producer");
    let edge = start(&redis, "edge");
    let mut ws = connect_url(&edge.url(), edge.addr);
    let epoch = subscribe(&mut ws, json!({"snapshot": true}))["epoch"].clone();
    // The open conditions, kept from the snapshot and every result after it.
    let mut table: HashMap<(String, String), Value> = HashMap::new();
    for row in expect_message(&mut ws, "snapshot")["data"]["results"]
        .as_array()
        .unwrap()
    {
        table.insert(key(row), row.clone());
    }
    let mut results = vec![next_result(&mut ws)];
    while results.len() < 30 {
        results.push(next_result(&mut ws));
    }

    let second = replace(&redis, first);
    let line = second.wait_for_log("continuing the deployment's results");
    assert!(
        line.contains(&format!("epoch={} ", epoch.as_str().unwrap())),
        "{line}"
    );
    // Where the second producer took over.
    let head: u64 = line
        .split("head=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no head in {line:?}"));
    read_until(&mut ws, &mut results, head + 40);
    assert_consecutive(&results);
    let (before, after): (Vec<&Value>, Vec<&Value>) = results
        .iter()
        .partition(|r| r["seq"].as_u64().unwrap() <= head);
    for r in before.iter().filter(|r| r["adhoc"] == false) {
        if r["event"] == "clear" {
            table.remove(&key(r));
        } else {
            table.insert(key(r), (*r).clone());
        }
    }
    assert!(!table.is_empty(), "nothing open to check");
    let mut seen = HashSet::new();
    for r in after {
        let k = key(r);
        if seen.insert(k.clone()) {
            assert!(
                !(r["event"] == "new" && table.contains_key(&k)),
                "{k:?} was open when the producer changed and was opened again: {r}"
            );
        }
    }

    // A client that resumes on the edge gets everything since, recovered.
    let last = results.last().unwrap()["seq"].as_u64().unwrap();
    let mut again = connect_url(&edge.url(), edge.addr);
    let since = last - 20;
    let sub = subscribe(&mut again, json!({"since": since, "epoch": epoch}));
    assert_eq!(sub["recovered"], true, "{sub}");
    for n in 1..=20 {
        assert_eq!(next_result(&mut again)["seq"], since + n);
    }
}

fn key(row: &Value) -> (String, String) {
    (
        row["symbol"].as_str().unwrap().to_uppercase(),
        row["scan"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_producer_killed_and_started_again_goes_on_with_the_epoch_and_seq() {
    survives_a_producer_change(|redis, mut first| {
        first.kill();
        start(redis, "producer")
    });
}

#[test]
fn a_producer_stopped_gracefully_writes_what_it_sent_and_hands_over_its_lease() {
    survives_a_producer_change(|redis, mut first| {
        let standby = spawn_standby(redis);
        standby.wait_for_log("standing by");
        first.terminate();
        let exit = first.exit_within(TIMEOUT);
        assert!(exit.success(), "{exit}");
        BinaryServer::listening(standby)
    });
}

#[test]
fn a_standby_takes_over_when_the_producer_dies() {
    survives_a_producer_change(|redis, mut first| {
        let standby = spawn_standby(redis);
        standby.wait_for_log("standing by");
        first.kill();
        BinaryServer::listening(standby)
    });
}

#[test]
fn redis_killed_and_started_again_loses_and_repeats_nothing() {
    let mut redis = Redis::start();
    let producer = start(&redis, "producer");
    let edge = start(&redis, "edge");
    let mut ws = connect_url(&edge.url(), edge.addr);
    let epoch = subscribe(&mut ws, json!({}))["epoch"].clone();
    let mut results = vec![next_result(&mut ws)];
    while results.len() < 20 {
        results.push(next_result(&mut ws));
    }
    // Whatever its append-only file had not synced is gone with it.
    std::thread::sleep(Duration::from_millis(1500));
    redis.kill_losing(16 * 1024);
    redis.restart();
    let target = results.last().unwrap()["seq"].as_u64().unwrap() + 60;
    read_until(&mut ws, &mut results, target);
    assert_consecutive(&results);
    // And the stream has them all again: a resume from the first is recovered in full.
    let since = results[0]["seq"].as_u64().unwrap();
    let mut again = connect_url(&edge.url(), edge.addr);
    let sub = subscribe(&mut again, json!({"since": since, "epoch": epoch}));
    assert_eq!(sub["recovered"], true, "{sub}");
    for r in &results[1..] {
        assert_eq!(next_result(&mut again)["seq"], r["seq"]);
    }
    // The producer saw what Redis had lost and wrote it again: the stream has no hole
    // (ids are seqs from 1, never trimmed here, so its length is its newest seq).
    producer.wait_for_log("writing them again");
    let int = |args: &[&str]| match redis.query(args) {
        Ok(redis::Value::Int(n)) => n as u64,
        other => panic!("{args:?}: {other:?}"),
    };
    assert_eq!(
        http(producer.addr, "POST", "/stream/stop", None).status,
        200
    );
    eventually(
        "the stream complete up to the producer's newest result",
        || {
            let newest = status(producer.addr)["results_total"].as_u64().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            int(&["XLEN", "scanstream:results"]) == newest
        },
    );
}

#[test]
fn edges_say_when_redis_or_the_producer_is_away_and_keep_serving() {
    let mut redis = Redis::start();
    let mut producer = start(&redis, "producer");
    let edge = start(&redis, "edge");
    let mut ws = connect_url(&edge.url(), edge.addr);
    subscribe(&mut ws, json!({}));
    next_result(&mut ws);

    redis.kill();
    // Every subscriber is told, with the reason.
    let degraded = loop {
        let msg = next_message(&mut ws);
        if msg["type"] == "status" && msg["data"]["health"] == "degraded" {
            break msg["data"].clone();
        }
    };
    assert_eq!(
        degraded["reason"], "the Redis bus is unreachable",
        "{degraded}"
    );
    // What the edge holds is still served; `/healthz` turns 503 after the grace period.
    assert!(!snapshot_rows_at(edge.addr, json!({})).is_empty());
    assert_eq!(metric(edge.addr, "scanstream_bus_up"), 0.0);
    eventually("/healthz to say the bus is away", || {
        http(edge.addr, "GET", "/healthz", None).status == 503
    });

    redis.restart();
    // Back, and the producer's lease (expired while Redis was away) renewed.
    eventually("the bus well again", || {
        metric(edge.addr, "scanstream_bus_up") == 1.0
            && http(edge.addr, "GET", "/healthz", None).status == 200
            && status(edge.addr)["health"] == "ok"
    });
    let unreachable = r#"scanstream_bus_problems_total{problem="unreachable"}"#;
    assert!(metric(edge.addr, unreachable) >= 1.0);
    // Results flow again, in order (what waited in Redis past `max_lag` may be
    // conflated, so not necessarily every `seq`).
    let before = next_result(&mut ws)["seq"].as_u64().unwrap();
    assert!(next_result(&mut ws)["seq"].as_u64().unwrap() > before);

    // The producer gone with no standby: its lease runs out, and the edge says so.
    let no_producer = r#"scanstream_bus_problems_total{problem="no_producer"}"#;
    let counted = metric(edge.addr, no_producer);
    producer.kill();
    eventually("the edge to say there is no producer", || {
        status(edge.addr)["reason"] == "no producer holds the lease"
    });
    assert_eq!(metric(edge.addr, no_producer), counted + 1.0);
}

#[test]
fn a_client_moved_between_edges_every_few_seconds_loses_and_repeats_nothing() {
    let redis = Redis::start();
    let _producer = start(&redis, "producer");
    let edges = [start(&redis, "edge"), start(&redis, "edge")];
    let proxy = Proxy::new(edges[0].addr);
    let (client, events) = start_client(client_config(&proxy.url()));
    let table = client
        .subscribe("all", FilterSpec::default(), SubscriptionOptions::table())
        .unwrap()
        .expect("a table");
    let collector = collect(events);

    // A minute, the load balancer moving the client to the other edge every 3 s.
    for n in 1..=20 {
        std::thread::sleep(Duration::from_secs(3));
        proxy.switch_to(edges[n % 2].addr);
    }
    let head = stop_and_settle(edges[0].addr, &[edges[0].addr, edges[1].addr]);
    eventually("the client at the final seq", || table.lock().seq == head);
    let rows: HashMap<(String, String), u64> = table
        .lock()
        .rows()
        .map(|r| ((r.symbol.clone(), r.scan.clone()), r.seq))
        .collect();
    client.close();
    let Collected {
        seqs,
        gaps,
        reconnects,
    } = collector.join().unwrap();

    assert_eq!(gaps, 0, "a resume on the other edge recovered every time");
    assert!(reconnects >= 15, "{reconnects} reconnects for 20 moves");
    assert!(seqs.len() > 100, "only {} results", seqs.len());
    assert_contiguous(&seqs);
    // The live table kept from the stream is what a fresh snapshot says.
    let fresh: HashMap<(String, String), u64> = snapshot_rows_at(edges[1].addr, json!({}))
        .into_iter()
        .map(|(k, v)| (k, v["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, fresh);
}

#[test]
fn an_edge_started_after_ten_seconds_answers_as_the_others_do() {
    let redis = Redis::start();
    let producer = start(&redis, "producer");
    let early = start(&redis, "edge");
    std::thread::sleep(Duration::from_secs(10));
    let late = start(&redis, "edge");
    let all = [producer.addr, early.addr, late.addr];
    let head = stop_and_settle(late.addr, &all);
    let epoch = status_epoch(&producer);
    for filters in [json!({}), json!({"scans": ["new_high", "new_low"]})] {
        let rows = snapshot_rows_at(producer.addr, filters.clone());
        assert!(!rows.is_empty() || filters != json!({}), "nothing open");
        for addr in [early.addr, late.addr] {
            assert_eq!(
                snapshot_rows_at(addr, filters.clone()),
                rows,
                "{filters} on {addr}"
            );
        }
    }
    let alerts = |addr| http(addr, "GET", "/alerts?limit=1000", None).json();
    assert!(
        !alerts(producer.addr).as_array().unwrap().is_empty(),
        "no alerts"
    );
    for addr in [early.addr, late.addr] {
        assert_eq!(alerts(addr), alerts(producer.addr));
    }
    // A resume from before the late edge started replays the same on every server.
    let since = head.saturating_sub(200);
    let replay = |addr: SocketAddr| {
        let mut ws = connect_url(&stream_url(addr), addr);
        let sub = subscribe(&mut ws, json!({"since": since, "epoch": epoch}));
        assert_eq!(sub["recovered"], true, "{sub}");
        (since + 1..=head)
            .map(|_| next_result(&mut ws))
            .collect::<Vec<_>>()
    };
    let expected = replay(producer.addr);
    assert_eq!(replay(early.addr), expected);
    assert_eq!(replay(late.addr), expected);
}

/// The epoch a server's clients see.
fn status_epoch(server: &BinaryServer) -> String {
    let mut ws = connect_url(&server.url(), server.addr);
    subscribe(&mut ws, json!({}))["epoch"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_resume_from_before_the_edges_ring_is_served_from_the_stream() {
    let redis = Redis::start();
    // Rings of 50 results; the stream keeps 100,000.
    let small = |role| {
        let mut flags = flags(&redis, role);
        flags.extend(["--history-size", "50", "--bus-history", "100000"].map(str::to_owned));
        BinaryServer::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let producer = small("producer");
    let edge = small("edge");
    let mut watcher = connect_url(&edge.url(), edge.addr);
    let epoch = subscribe(&mut watcher, json!({}))["epoch"].clone();
    let mut seen = Vec::new();
    read_until(&mut watcher, &mut seen, 300);

    // From 10: 240 results and more before the ring, then the ring. A client that
    // reconnects resumes every subscription at once: the second one waits for the first
    // and replays with it.
    let mut ws = connect_url(&edge.url(), edge.addr);
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "deep", "data": {"since": 10, "epoch": epoch}}),
    );
    let highs = json!({"subscription": "highs", "since": 100, "epoch": epoch,
        "filters": {"scans": ["new_high"]}});
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "highs", "data": highs}),
    );
    let sub = expect_message(&mut ws, "subscribed");
    assert_eq!(sub["id"], "deep");
    assert_eq!(sub["data"]["recovered"], true, "{sub}");
    let head = sub["data"]["seq"].as_u64().unwrap();
    assert_eq!(sub["data"]["replayed"], head - 10, "{sub}");
    let second = expect_message(&mut ws, "subscribed");
    assert_eq!(second["id"], "highs");
    assert_eq!(second["data"]["recovered"], true, "{second}");
    let mut replay = Vec::new();
    read_until(&mut ws, &mut replay, head + 5);
    assert_eq!(replay[0]["seq"], 11);
    assert_consecutive(&replay);
    // What the stream replayed is what a client that stayed saw.
    let first_seen = seen[0]["seq"].as_u64().unwrap();
    assert!(
        first_seen + 50 < head,
        "the watcher saw nothing from before the ring"
    );
    let same: Vec<&Value> = replay
        .iter()
        .filter(|r| r["seq"].as_u64() >= Some(first_seen))
        .collect();
    let without_names = |r: &Value| {
        let mut r = r.clone();
        r.as_object_mut().unwrap().remove("subscriptions");
        r
    };
    for (r, w) in same.iter().zip(&seen) {
        assert_eq!(without_names(r), without_names(w));
    }
    // Each subscription got what it asked for: `highs` the new highs from 101 on.
    for r in &replay {
        let names = r["subscriptions"].as_array().unwrap();
        let seq = r["seq"].as_u64().unwrap();
        let high = r["scan"] == "new_high" && seq > 100;
        assert_eq!(names.contains(&json!("highs")), high, "{r}");
        assert!(names.contains(&json!("default")), "{r}");
    }

    // The producer's own edges serve their ring alone: from 10 is not recovered there.
    let mut direct = connect_url(&producer.url(), producer.addr);
    let sub = subscribe(&mut direct, json!({"since": 10, "epoch": epoch}));
    assert_eq!(sub["recovered"], false, "{sub}");
}

#[test]
fn commands_sent_while_no_producer_runs_are_carried_out_when_one_starts() {
    let redis = Redis::start();
    let mut producer = start(&redis, "producer");
    let edge = start(&redis, "edge");
    producer.kill();
    // The edge takes the command; it waits in Redis, in the producers' consumer group.
    assert_eq!(http(edge.addr, "POST", "/stream/stop", None).status, 200);
    let producer = start(&redis, "producer");
    eventually("the stop carried out by the new producer", || {
        status(producer.addr)["state"] == "stopped" && status(edge.addr)["state"] == "stopped"
    });
}
